#!/usr/bin/env bash
# tests/integration/test_probe_mx.sh — `floormta probe DOMAIN`: a real dnsmasq on
# 127.0.0.1 serves MX records for floormta.test, and floormta-sink listens on several
# loopback addresses (127.0.0.2, .3, ...) on one port in different receiver profiles.
# Checks a row per MX host address with the right verdict, the exit codes (0 one
# passes, 2 none does, 1 DNS failure with its reason), implicit MX and the JSON shape.
. "$(dirname "$0")/lib.sh"

command -v jq >/dev/null || { echo "jq is missing (install jq)"; exit 1; }

make_pki

# The sinks: one process, one listener per address, all on one port (MX hosts are
# reached on the probe's --port). Another random port if that one is taken.
start_mx_sinks() {
    local attempt
    for attempt in $(seq 1 10); do
        SMTP_PORT=$((20000 + RANDOM % 40000))
        "$BIN/floormta-sink" --pki "$WORK/pki" --name mx.floormta.test \
            --listen "127.0.0.2:$SMTP_PORT=tls1.0-only" \
            --listen "127.0.0.3:$SMTP_PORT=wildcard" \
            --listen "127.0.0.4:$SMTP_PORT=tls1.1-only" \
            --listen "127.0.0.5:$SMTP_PORT=tls1.2" \
            --listen "127.0.0.6:$SMTP_PORT=wrong-name" \
            --ready-file "$WORK/sinks.ready" >"$WORK/sinks.out" 2>"$WORK/sinks.err" &
        local pid=$! i
        for i in $(seq 1 100); do
            [ -s "$WORK/sinks.ready" ] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if [ -s "$WORK/sinks.ready" ]; then
            PIDS+=("$pid")
            return 0
        fi
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    echo "the sinks did not start:"; cat "$WORK/sinks.err"; exit 1
}

cat >"$WORK/zone.conf" <<'EOF'
local-ttl=60
# mixed: the primary offers only TLS 1.0, the secondary TLS 1.2+ with a *.floormta.test
# certificate.
mx-host=mixed.floormta.test,mx1.floormta.test,10
mx-host=mixed.floormta.test,mx3.floormta.test,20
host-record=mx1.floormta.test,127.0.0.2
host-record=mx3.floormta.test,127.0.0.3
# old: every MX host is below the floor (TLS 1.0, TLS 1.1).
mx-host=old.floormta.test,mx1.floormta.test,10
mx-host=old.floormta.test,mx4.floormta.test,20
host-record=mx4.floormta.test,127.0.0.4
# wrong: one MX host whose certificate names someone else, one with two addresses.
mx-host=wrong.floormta.test,mx6.floormta.test,5
host-record=mx6.floormta.test,127.0.0.6
mx-host=wrong.floormta.test,mx24.floormta.test,10
host-record=mx24.floormta.test,127.0.0.2
host-record=mx24.floormta.test,127.0.0.4
# mx.floormta.test has no MX, only an address: implicit MX, with its own name.
host-record=mx.floormta.test,127.0.0.5
# null MX: accepts no mail.
dns-rr=null.floormta.test,15,000000
host-record=null.floormta.test,127.0.0.5
# an MX host without any address.
mx-host=noaddr.floormta.test,nothing.floormta.test,10
EOF

start_mx_sinks
start_dnsmasq

# probe DOMAIN [ARGS...]: runs the probe (bounded by an outer timeout), sets OUT and RC.
probe() {
    local domain=$1
    shift
    OUT=$(timeout 60 "$BIN/floormta" probe "$domain" --dns "127.0.0.1:$DNS_PORT" \
        --port "$SMTP_PORT" --ca "$WORK/pki/ca.crt" "$@" 2>"$WORK/probe.err")
    RC=$?
}

has() { grep -q -- "$1" <<<"$OUT"; }
# jqok [ARGS...] FILTER: the JSON in OUT satisfies the filter.
jqok() { jq -e "$@" <<<"$OUT" >/dev/null; }
# row MX ADDRESS VERDICT [REASON]: the human table has that row.
row() {
    grep -Eq "^ +[0-9]+ +$1 +$2:$SMTP_PORT +$3 +${4:-}" <<<"$OUT"
}

# A domain whose primary is below the floor and whose secondary meets it: exit 0.
probe mixed.floormta.test
sed "s/^/# /" <<<"$OUT" # the table, for the test log
check "mixed: exit 0" [ "$RC" -eq 0 ]
check "mixed: mx1 refused, version below floor" row mx1.floormta.test 127.0.0.2 refuse version_below_floor
check "mixed: mx3 passes with TLS 1.2+" row mx3.floormta.test 127.0.0.3 pass
check "mixed: mx3 row names the version" grep -Eq 'mx3\.floormta\.test .* TLSv1\.[23] +(TLS_|ECDHE-)' <<<"$OUT"
check "mixed: preference 10 before 20" \
    [ "$(grep -n 'mx1\.floormta' <<<"$OUT" | cut -d: -f1)" -lt "$(grep -n 'mx3\.floormta' <<<"$OUT" | cut -d: -f1)" ]
check "mixed: 1 of 2 pass" has 'PASS: 1 of 2'
check "mixed: one MX query" [ "$(grep -c 'query\[MX\] mixed.floormta.test ' "$WORK/dnsmasq.log")" -eq 1 ]

# JSON: the object with dns and one host per address, single-host evidence included.
probe mixed.floormta.test --json
check "mixed json: exit 0" [ "$RC" -eq 0 ]
check "mixed json: parses" jqok .
check "mixed json: domain" jqok '.domain == "mixed.floormta.test"'
check "mixed json: dns ok, not implicit" \
    jqok '.dns.outcome == "ok" and .dns.implicit_mx == false and .dns.ttl == 60'
check "mixed json: two hosts in preference order" \
    jqok '[.hosts[].pref] == [10, 20] and [.hosts[].mx] == ["mx1.floormta.test", "mx3.floormta.test"]'
check "mixed json: verdicts" \
    jqok '[.hosts[].result] == ["refuse", "pass"] and .hosts[0].reason == "version_below_floor"'
check "mixed json: addresses with the port" \
    jqok --arg a "127.0.0.3:$SMTP_PORT" '.hosts[1].address == $a'
check "mixed json: TLS evidence of the passing host" \
    jqok '.hosts[1].tls.version != null and .hosts[1].tls.certificate.sans == "*.floormta.test"'
check "mixed json: passed 1, result pass" jqok '.passed == 1 and .result == "pass"'

# Every MX host below the floor: exit 2.
probe old.floormta.test
check "old: exit 2" [ "$RC" -eq 2 ]
check "old: mx1 refused" row mx1.floormta.test 127.0.0.2 refuse version_below_floor
check "old: mx4 refused" row mx4.floormta.test 127.0.0.4 refuse version_below_floor
check "old: REFUSE 0 of 2" has 'REFUSE: 0 of 2'

# One row per address of a multi-address host; a name mismatch is a refusal.
probe wrong.floormta.test --json
check "wrong: exit 2" [ "$RC" -eq 2 ]
check "wrong: three rows (1 + 2 addresses)" jqok '.hosts | length == 3'
check "wrong: mx6 hostname_mismatch" \
    jqok '.hosts[0].mx == "mx6.floormta.test" and .hosts[0].reason == "hostname_mismatch"'
check "wrong: mx24 on both addresses" \
    jqok '[.hosts[1:][].mx] == ["mx24.floormta.test", "mx24.floormta.test"]'

# Implicit MX: the domain's own address, preference 0, its own name on the certificate.
probe mx.floormta.test
check "implicit: exit 0" [ "$RC" -eq 0 ]
check "implicit: said so" has 'implicit MX'
check "implicit: the domain itself, pref 0" grep -Eq "^ +0 +mx\.floormta\.test +127\.0\.0\.5:$SMTP_PORT +pass" <<<"$OUT"

# DNS failures: exit 1 with the reason, and no connection attempted.
probe null.floormta.test
check "null MX: exit 1" [ "$RC" -eq 1 ]
check "null MX: reason null_mx" has 'nullmx null_mx'
check "null MX: no address query" [ "$(grep -c 'query\[A\] null.floormta.test' "$WORK/dnsmasq.log")" -eq 0 ]
probe null.floormta.test --json
check "null MX json: exit 1" [ "$RC" -eq 1 ]
check "null MX json: dns outcome and reason, no hosts" \
    jqok '.dns.outcome == "nullmx" and .dns.reason == "null_mx" and .hosts == [] and .result == "dns_failure"'

probe nothere.floormta.test
check "nxdomain: exit 1" [ "$RC" -eq 1 ]
check "nxdomain: reason" has 'permfail nxdomain'
probe noaddr.floormta.test --json
check "no address: exit 1" [ "$RC" -eq 1 ]
check "no address: reason no_address" jqok '.dns.reason == "no_address"'

# A DNS server port nobody listens on: port unreachable at once, exit 1.
OUT=$(timeout 30 "$BIN/floormta" probe mixed.floormta.test --dns 127.0.0.1:9 --json)
RC=$?
check "closed DNS port: exit 1" [ "$RC" -eq 1 ]
check "closed DNS port: tempfail unreachable" \
    jqok '.dns.outcome == "tempfail" and .dns.reason == "unreachable" and .hosts == []'
# Two servers, the first one dead: the second answers (--dns repeated and with commas).
OUT=$(timeout 30 "$BIN/floormta" probe mixed.floormta.test --dns 127.0.0.1:9 \
    --dns "127.0.0.1:$DNS_PORT,127.0.0.1:9" --port "$SMTP_PORT" --ca "$WORK/pki/ca.crt" --json)
RC=$?
check "second DNS server answers: exit 0" [ "$RC" -eq 0 ]

# Bad command lines.
"$BIN/floormta" probe mixed.floormta.test --dns not-an-ip --json >"$WORK/o" 2>&1
check "bad --dns: exit 1" [ $? -eq 1 ]
"$BIN/floormta" probe mixed.floormta.test --port 0 >/dev/null 2>&1
check "bad --port: exit 1" [ $? -eq 1 ]

finish
