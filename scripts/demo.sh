#!/usr/bin/env bash
# scripts/demo.sh BUILD_DIR — the TLS floor at a glance: starts
# floormta-sink on loopback with one listener per receiver profile, probes each with
# `floormta probe`, and prints the table of verdicts: what floormta refuses, and why.
set -u
BIN=${1:-build}
WORK=$(mktemp -d /tmp/floormta-demo.XXXXXX)
SINK_PID=
cleanup() {
    [ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

NAME=mx.floormta.test
PROFILES=(tls1.3 tls1.2 tls1.1-only tls1.0-only none starttls-454 self-signed expired
    not-yet-valid wrong-name untrusted-ca weak-key weak-sig stall flood)

"$BIN/floormta-testpki" "$WORK/pki" "$NAME" || exit 1
args=()
for p in "${PROFILES[@]}"; do args+=(--listen "127.0.0.1:0=$p"); done
"$BIN/floormta-sink" --pki "$WORK/pki" --name "$NAME" "${args[@]}" \
    --ready-file "$WORK/ready" >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/ready" ] && break; sleep 0.1; done
[ -s "$WORK/ready" ] || { echo "the sink did not start:"; cat "$WORK/sink.err"; exit 1; }

# field NAME JSON: the first string value of NAME in the probe's indented JSON, "" for null.
field() { sed -n "s/^ *\"$1\": \"\([^\"]*\)\",\{0,1\}$/\1/p" <<<"$2" | head -n 1; }

echo "floormta probe against floormta-sink (certificates for $NAME from a test root,"
echo "floor TLS 1.2, every receiver on 127.0.0.1):"
echo
printf '%-14s %-6s %-4s %-20s %-8s %s\n' PROFILE RESULT EXIT REASON VERSION "CIPHER / EVIDENCE / ERROR"
printf '%-14s %-6s %-4s %-20s %-8s %s\n' ------- ------ ---- ------ ------- --------------
while read -r line; do
    addr=$(sed -n 's/^listening \([^ ]*\) profile=.*/\1/p' <<<"$line")
    profile=${line##*profile=}
    out=$("$BIN/floormta" probe "$addr" --name "$NAME" --ca "$WORK/pki/ca.crt" --json \
        --timeout 3 2>/dev/null)
    rc=$?
    result=$(field result "$out")
    reason=$(field reason "$out")
    version=$(field version "$out")
    extra=$(field cipher "$out")
    [ -z "$extra" ] && extra=$(field detail "$out")
    [ -z "$extra" ] && extra=$(field last_reply "$out")
    [ "$result" = error ] && extra="$(field error "$out") (during $(field error_state "$out"))"
    printf '%-14s %-6s %-4s %-20s %-8s %s\n' "$profile" "$result" "$rc" "${reason:--}" \
        "${version:--}" "${extra:--}"
done <"$WORK/ready"
echo
echo "exit status: 0 meets the floor, 2 refused by the floor, 1 error."
echo "Try one yourself:  $BIN/floormta probe HOST:PORT --name MXNAME [--ca FILE] [--json]"
