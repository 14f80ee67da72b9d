#!/usr/bin/env bash
# tests/integration/test_load.sh — floormta-load against a real `floormta run`: dnsmasq
# on 127.0.0.1 answering MX for d0000..d0019.load.floormta.test, one floormta-sink
# (valid TLS, --stats-file) on 127.0.0.3, the daemon submitting over SMTP on
# 127.0.0.1. Checks the JSON report of
#   - a counted run (500 messages, 8 connections, 20 domains, 10 KB): everything
#     injected is delivered, latency quantiles are present and ordered, the daemon's
#     TLS handshakes, CPU and peak RSS are reported;
#   - a rate-limited run (200/s for 2 s): about 400 injected (within 20%);
#   - an HTTP API run (--http, 200 messages, 4 keep-alive connections): everything
#     injected over POST /api/v1/messages is delivered; a wrong token is a 401 refusal
#     and exit 1;
#   - the sink's stats file format that floormta-load reads.
# The setup follows test_daemon.sh (lib.sh).
. "$(dirname "$0")/lib.sh"

need_tools jq curl

make_pki

DOMAINS=20
write_test_zone "$(for i in $(seq 0 $((DOMAINS - 1))); do
    printf 'mx-host=d%04d.load.floormta.test,mx.floormta.test,10\n' "$i"
done)"
start_dnsmasq

# The receiver, valid, on 127.0.0.3 only; the engine's delivery port.
STATS="$WORK/sink.stats"
start_receivers 127.0.0.3=wildcard -- --stats-file "$STATS"

write_daemon_config

start_daemon

LOAD=("$BIN/floormta-load" --smtp "127.0.0.1:$SUB_PORT" --stats-file "$STATS"
    --metrics "http://127.0.0.1:$HTTP_PORT/metrics" --pid "$DAEMON_PID" --wait 40)

# ---- the sink's stats file ------------------------------------------------------------------
check "sink: the stats file exists with its header" grep -qx 'floormta-sink-stats 1' "$STATS"
check "sink: load_messages starts at 0" grep -qx 'load_messages 0' "$STATS"

# ---- a counted run ----------------------------------------------------------------------------
"${LOAD[@]}" --count 500 --conns 8 --domains "$DOMAINS" --size 10240 \
    --json "$WORK/count.json" >"$WORK/count.out" 2>"$WORK/count.err"
rc=$?
sed 's/^/# /' "$WORK/count.out"
check "count run: exit 0 (everything delivered)" [ "$rc" = 0 ]
j() { jq -e "$1" "$WORK/$2.json" >/dev/null 2>&1; }
check "count run: injected 500, none refused or lost" \
    j '.injected == 500 and .started == 500 and .refused == 0 and .lost == 0' count
check "count run: delivered 500 (counted by the sink)" j '.delivered == 500 and .delivered_all' count
check "count run: latency p50 <= p90 <= p99 <= max, 500 samples" \
    j '.latency_ms.p50 > 0 and .latency_ms.p50 <= .latency_ms.p90 and .latency_ms.p90 <= .latency_ms.p99 and .latency_ms.p99 <= .latency_ms.max and .latency_ms.samples == 500' count
check "count run: injection latency quantiles ordered" \
    j '.inject_latency_ms.p50 <= .inject_latency_ms.p90 and .inject_latency_ms.p90 <= .inject_latency_ms.p99' count
check "count run: rates positive" j '.inject_rate > 0 and .deliver_rate > 0' count
check "count run: TLS handshakes (full + resumed) > 0 from /metrics" \
    j '(.tls_handshakes.full + .tls_handshakes.resumed) > 0' count
check "count run: the sink saw TLS handshakes too" j '.sink_tls_handshakes.total > 0' count
check "count run: no floor refusal" j '([.floor_refusals[]] | add // 0) == 0' count
check "count run: 500 received over SMTP by the daemon" j '.received.smtp == 500' count
check "count run: /metrics counts 500 successful deliveries" j '.deliveries.ok == 500' count
check "count run: engine CPU seconds and peak RSS" \
    j '.engine.cpu_seconds > 0 and .engine.peak_rss_kb > 0' count
check "count run: 8 connections, no errors" j '.connections == 8 and .connection_errors == 0' count
check "count run: text report names the latency" grep -q 'inject->deliver .*p50' "$WORK/count.out"
check "sink: 500 load messages in the stats file" \
    bash -c "sleep 0.3; grep -qx 'load_messages 500' '$STATS'"

# ---- a rate-limited run -----------------------------------------------------------------------
"${LOAD[@]}" --rate 200 --duration 2 --conns 8 --domains "$DOMAINS" --no-pipelining \
    --json "$WORK/rate.json" >"$WORK/rate.out" 2>"$WORK/rate.err"
rc=$?
sed 's/^/# /' "$WORK/rate.out"
check "rate run: exit 0" [ "$rc" = 0 ]
# The limiter's cap holds on any machine; how close a run comes to 400 depends on how fast
# the daemon under test is (a sanitizer build on a busy machine gets far fewer): that is
# the benchmarks' business, not a test's.
check "rate run: at most the rate allows (400 + the bucket), at least one" \
    j '.injected >= 1 and .injected <= 480' rate
check "rate run: all delivered, counted apart from the first run" \
    j '.delivered == .injected and .latency_ms.samples == .injected and .deliveries.ok == .injected' rate

# ---- an HTTP API run ---------------------------------------------------------------------------
HLOAD=("$BIN/floormta-load" --http "http://127.0.0.1:$HTTP_PORT" --stats-file "$STATS"
    --metrics "http://127.0.0.1:$HTTP_PORT/metrics" --wait 40 --domains "$DOMAINS" --quiet)
"${HLOAD[@]}" --token "$TOKEN" --count 200 --conns 4 --json "$WORK/http.json" \
    >"$WORK/http.out" 2>"$WORK/http.err"
rc=$?
sed 's/^/# /' "$WORK/http.out" "$WORK/http.err"
check "http run: exit 0" [ "$rc" = 0 ]
check "http run: injected 200, none refused or lost" \
    j '.injected == 200 and .started == 200 and .refused == 0 and .lost == 0' http
check "http run: delivered 200 with latency samples" \
    j '.delivered == 200 and .delivered_all and .latency_ms.samples == 200' http
check "http run: 4 keep-alive connections, no errors" \
    j '.connections == 4 and .connection_errors == 0' http
check "http run: 200 received over HTTP by the daemon" j '.received.http == 200' http

"${HLOAD[@]}" --token wrong-token --count 50 --conns 4 --json "$WORK/http401.json" \
    >"$WORK/http401.out" 2>"$WORK/http401.err"
rc=$?
sed 's/^/# /' "$WORK/http401.out" "$WORK/http401.err"
check "http wrong token: exit 1 (gives up)" \
    bash -c "[ $rc = 1 ] && grep -q '401' '$WORK/http401.err'"
check "http wrong token: refusals counted as 401, nothing injected" \
    j '.injected == 0 and .refused >= 1 and .refusals["http 401"] == .refused' http401
"$BIN/floormta-load" --http "http://127.0.0.1:$HTTP_PORT" --count 5 >/dev/null 2>&1
check "--http without --token: exit 1" [ $? = 1 ]

# ---- bad arguments ----------------------------------------------------------------------------
"$BIN/floormta-load" --count 5 >/dev/null 2>&1
check "neither --smtp nor --http: exit 1" [ $? = 1 ]
"$BIN/floormta-load" --smtp 127.0.0.1:1 >/dev/null 2>&1
check "neither --count nor --duration: exit 1" [ $? = 1 ]

"$BIN/floormta-load" --smtp 127.0.0.1:1 --count 5 --conns 2 --quiet --log-level error \
    >"$WORK/down.out" 2>&1
check "nobody listening: gives up with exit 1" \
    bash -c "[ $? = 1 ] && grep -q 'giving up' '$WORK/down.out'"

finish
