#!/usr/bin/env bash
# tests/integration/test_probe.sh — `floormta probe` against `floormta-sink` on
# loopback in every receiver profile: exit codes, reasons and evidence; a stalled
# receiver cut by the timeout; a 10 MB reply line cut with bounded memory.
. "$(dirname "$0")/lib.sh"

make_pki
PROFILES=(none tls1.0-only tls1.1-only tls1.2 tls1.3 self-signed expired not-yet-valid
    wrong-name untrusted-ca weak-key weak-sig starttls-454 stall flood trickle)
start_sink sinks "${PROFILES[@]}"

# probe PROFILE [ARGS...]: runs the probe (bounded by an outer timeout), sets OUT and RC.
probe() {
    local profile=$1
    shift
    local var=PORT_$(echo "$profile" | tr -- '-.' '__')
    OUT=$(timeout 60 "$BIN/floormta" probe "127.0.0.1:${!var}" --name mx.floormta.test \
        --ca "$WORK/pki/ca.crt" --json "$@" 2>"$WORK/probe.err")
    RC=$?
}

has() { grep -q -- "$1" <<<"$OUT"; }

expect_refusal() {
    local profile=$1 reason=$2
    shift 2
    probe "$profile" "$@"
    check "$profile: exit 2" [ "$RC" -eq 2 ]
    check "$profile: reason $reason" has "\"reason\": \"$reason\""
    check "$profile: result refuse" has '"result": "refuse"'
}

# Receivers that meet the floor pass, with the evidence filled in.
probe tls1.2
check "tls1.2: exit 0" [ "$RC" -eq 0 ]
check "tls1.2: negotiated TLSv1.2" has '"version": "TLSv1.2"'
check "tls1.2: ECDHE AEAD suite" grep -Eq '"cipher": "ECDHE-[A-Z]+-(AES(128|256)-GCM|CHACHA20-POLY1305)' <<<"$OUT"
check "tls1.2: certificate subject" has 'mx.floormta.test'
check "tls1.2: fingerprint" grep -Eq '"sha256": "[0-9a-f]{64}"' <<<"$OUT"
check "tls1.2: EHLO over TLS seen" has '"ehlo": "PIPELINING'

probe tls1.3
check "tls1.3: exit 0" [ "$RC" -eq 0 ]
check "tls1.3: negotiated TLSv1.3" has '"version": "TLSv1.3"'
check "tls1.3: result pass" has '"result": "pass"'

# Below the floor: the specific reason. The sink is a modern TLS stack capped at an old
# version, so it reads our supported_versions, finds no overlap and answers with a
# protocol_version alert (a legacy stack would answer with a ServerHello naming its
# version; tests/tls covers that path byte for byte). Either way nothing weaker than the
# floor is ever negotiated.
for p in tls1.0-only tls1.1-only; do
    expect_refusal $p version_below_floor
    check "$p: the receiver's alert is the evidence" has '"detail": "TLSV1_ALERT_PROTOCOL_VERSION'
    check "$p: no version was negotiated" has '"version": null'
done
expect_refusal tls1.2 version_below_floor --floor 1.3
check "floor 1.3 vs tls1.2: the receiver's alert is the evidence" has 'PROTOCOL_VERSION'
probe tls1.3 --floor 1.3
check "floor 1.3 vs tls1.3: exit 0" [ "$RC" -eq 0 ]

expect_refusal none no_starttls
check "none: starttls not offered" has '"starttls_offered": false'
expect_refusal starttls-454 starttls_refused
check "starttls-454: the 454 reply is kept" has '"last_reply": "454 4.7.0'
expect_refusal self-signed cert_self_signed
expect_refusal expired cert_expired
expect_refusal not-yet-valid cert_not_yet_valid
expect_refusal wrong-name hostname_mismatch
expect_refusal untrusted-ca cert_untrusted
expect_refusal weak-key weak_key
expect_refusal weak-sig weak_signature

# Without --ca the system bundle does not know the test root: untrusted.
OUT=$(timeout 60 "$BIN/floormta" probe "127.0.0.1:$PORT_tls1_2" --name mx.floormta.test --json)
RC=$?
check "system trust store: test root untrusted (exit 2)" [ "$RC" -eq 2 ]
check "system trust store: reason cert_untrusted" has '"reason": "cert_untrusted"'

# A receiver that never speaks is cut by the timeout.
probe stall --timeout 2
check "stall: exit 1" [ "$RC" -eq 1 ]
check "stall: timed out" has '"error": "Connection timed out"'
check "stall: during greeting" has '"error_state": "greeting"'

# A receiver that trickles its greeting a byte every 200 ms (about 8 s in all) is cut by
# the reply deadline, not kept alive by each byte: the error comes during the greeting.
probe trickle --timeout 2
check "trickle: exit 1" [ "$RC" -eq 1 ]
check "trickle: timed out" has '"error": "Connection timed out"'
check "trickle: cut during the greeting" has '"error_state": "greeting"'

# A 10 MB reply line is cut at the line bound, without buffering it: the probe's peak
# RSS stays within a few MB of a normal probe's.
rss_of() { # prints the peak RSS in KiB of the probe run with the given profile
    local var=PORT_$(echo "$1" | tr -- '-.' '__')
    /usr/bin/time -f '%M' -o "$WORK/rss" timeout 60 "$BIN/floormta" probe "127.0.0.1:${!var}" \
        --name mx.floormta.test --ca "$WORK/pki/ca.crt" --json >"$WORK/rss.out" 2>/dev/null
    RC=$?
    tail -n 1 "$WORK/rss"
}
base_rss=$(rss_of tls1.3)
flood_rss=$(rss_of flood)
OUT=$(cat "$WORK/rss.out")
check "flood: exit 1" [ "$RC" -eq 1 ]
check "flood: reply line too long" has '"error": "reply line too long"'
check "flood: peak RSS ${flood_rss} KiB within 4 MiB of a normal probe's ${base_rss} KiB" \
    [ $((flood_rss - base_rss)) -lt 4096 ]

# Unreachable: a privileged port nobody listens on.
OUT=$(timeout 30 "$BIN/floormta" probe "127.0.0.1:1" --name mx.floormta.test --json)
RC=$?
check "closed port: exit 1" [ "$RC" -eq 1 ]
check "closed port: connection refused" has '"error": "Connection refused"'

# Human output names the reason too.
OUT=$(timeout 60 "$BIN/floormta" probe "127.0.0.1:$PORT_expired" --name mx.floormta.test \
    --ca "$WORK/pki/ca.crt")
check "human output: REFUSE cert_expired" has 'REFUSE cert_expired'

# Bad command lines: a clear error and exit 1.
"$BIN/floormta" probe 127.0.0.1:25 >/dev/null 2>"$WORK/e1"
check "missing --name: exit 1" [ $? -eq 1 ]
check "missing --name: says so" grep -q -- '--name' "$WORK/e1"
"$BIN/floormta" probe not-an-address --name x >/dev/null 2>&1
check "bad address: exit 1" [ $? -eq 1 ]
"$BIN/floormta" probe 127.0.0.1:25 --name x --floor 1.1 >/dev/null 2>&1
check "floor 1.1 rejected: exit 1" [ $? -eq 1 ]
"$BIN/floormta" probe 127.0.0.1:25 --name x --ca /nonexistent >/dev/null 2>"$WORK/e2"
check "unreadable CA file: exit 1" [ $? -eq 1 ]

# The sink saw the connections and stops cleanly on SIGTERM.
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}"
check "sink exits 0 on SIGTERM" [ $? -eq 0 ]
check "sink reports its counters" grep -q '^sink: messages=' "$WORK/sinks.out"
PIDS=()

finish
