#!/usr/bin/env bash
# tests/integration/test_daemon.sh — `floormta run` end to end, as an operator runs it:
# a configuration file pointing the engine at a private test network (dnsmasq on
# 127.0.0.1, floormta-sink on 127.0.0.2/.3 in two receiver profiles, the test PKI's
# root as the trust store), mail submitted with swaks (SMTP, STARTTLS) and through the
# HTTP API, then:
#   - good.floormta.test (MX on a receiver with TLS 1.2+ and a valid certificate) is
#     delivered; weak.floormta.test (MX offering only TLS 1.0) is refused by the floor
#     and stays queued, deferred;
#   - the delivery log holds one JSON line per attempt with the evidence; /metrics
#     passes `promtool check metrics` and counts both outcomes;
#   - SIGHUP reloads (logs reopened, trust stores reloaded) without dropping a listener;
#   - SIGTERM drains and exits 0, the refused message still in the spool; a restart
#     recovers it.
. "$(dirname "$0")/lib.sh"

need_tools swaks jq curl promtool

start_test_network

write_daemon_config
check "check-config accepts the test configuration" \
    "$BIN/floormta" check-config "$WORK/floormta.yaml"

start_daemon
check "the daemon listens for SMTP" ss -ltn "sport = :$SUB_PORT" | grep -q LISTEN

# ---- SMTP submission with STARTTLS --------------------------------------------------------
SWAKS=(swaks --server "127.0.0.1:$SUB_PORT" --from sender@example.org --helo client.example.org)
"${SWAKS[@]}" --to alice@good.floormta.test --tls --header "Subject: good" >"$WORK/swaks1.out" 2>&1
check "swaks (STARTTLS): 250 after DATA with a queue id" grep -Eq '<[-~] +250 2\.0\.0 .*[0-9a-f]{16}' "$WORK/swaks1.out"
"${SWAKS[@]}" --to bob@weak.floormta.test --header "Subject: weak" >"$WORK/swaks2.out" 2>&1
check "swaks (plain, relay network): accepted" grep -Eq '<[-~] +250 2\.0\.0' "$WORK/swaks2.out"

wait_for "good.floormta.test delivered" 30 results_at_least good.floormta.test delivered 1
wait_for "weak.floormta.test refused and deferred" 30 results_at_least weak.floormta.test deferred 1
GOOD=$(lines_for good.floormta.test | head -1)
WEAK=$(lines_for weak.floormta.test | head -1)
echo "# $GOOD"
echo "# $WEAK"
check "good: verdict pass over TLS 1.2+, certificate evidence" \
    jq -e >/dev/null '.verdict == "pass" and (.tls.version | test("TLSv1\\.[23]")) and (.tls.fingerprint | length) == 64 and .transport == "tls" and .recipients[0].addr == "alice@good.floormta.test"' <<<"$GOOD"
check "weak: verdict refuse, reason version_below_floor, nothing sent" \
    jq -e >/dev/null '.verdict == "refuse" and .reason == "version_below_floor" and .result == "deferred" and .transport == null' <<<"$WEAK"

# ---- the HTTP API ---------------------------------------------------------------------------
API="http://127.0.0.1:$HTTP_PORT/api/v1/messages"
BODY='{"from":"api@example.org","to":["carol@good.floormta.test"],"subject":"api","text":"hello\n"}'
code=$(curl -s -o "$WORK/api1.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data "$BODY" "$API")
check "API without a token: 401" [ "$code" = 401 ]
code=$(curl -s -o "$WORK/api2.out" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data "$BODY" "$API")
check "API with the token: 202 and a queue id" \
    bash -c "[ '$code' = 202 ] && jq -e '.ids | length == 1' '$WORK/api2.out' >/dev/null"
wait_for "the API's message delivered" 30 results_at_least good.floormta.test delivered 2
check "the local token file: mode 0600, 64 hex digits" \
    bash -c "[ \"\$(stat -c %a '$WORK/run/api.token')\" = 600 ] && grep -Eqx '[0-9a-f]{64}' '$WORK/run/api.token'"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$WORK/run/api.token")" \
    "http://127.0.0.1:$HTTP_PORT/api/v1/queue")
check "the local token is accepted (not 401)" [ "$code" != 401 ]

# ---- metrics ----------------------------------------------------------------------------------
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$WORK/metrics.txt"
check "promtool accepts /metrics" promtool check metrics <"$WORK/metrics.txt"
wait_for "metrics: 2 messages received over SMTP" 5 \
    metric_is 'floormta_messages_received_total{source="smtp"}' 2
wait_for "metrics: 1 received over HTTP" 5 metric_is 'floormta_messages_received_total{source="http"}' 1
wait_for "metrics: 2 deliveries ok" 5 metric_is 'floormta_deliveries_total{result="ok"}' 2
wait_for "metrics: 1 refused by the floor" 5 metric_is 'floormta_deliveries_total{result="refused"}' 1
wait_for "metrics: the refusal's reason" 5 metric_is 'floormta_floor_refusals_total{reason="version_below_floor"}' 1
wait_for "metrics: 1 message deferred in the queue" 5 \
    metric_is 'floormta_queue_messages{state="deferred"}' 1

# ---- SIGHUP -------------------------------------------------------------------------------------
mv "$WORK/log/delivery.log" "$WORK/log/delivery.log.1" # as logrotate does
kill -HUP "$DAEMON_PID"
wait_for "SIGHUP: trust stores and certificate reloaded" 10 \
    grep -q 'reload: certificate .* reloaded' "$WORK/log/engine.log"
check "SIGHUP: the delivery log was reopened" [ -f "$WORK/log/delivery.log" ]
"${SWAKS[@]}" --to dave@good.floormta.test --tls >"$WORK/swaks3.out" 2>&1
check "after SIGHUP: STARTTLS submission still works" grep -Eq '<[-~] +250 2\.0\.0' "$WORK/swaks3.out"
wait_for "after SIGHUP: delivered, logged in the new file" 30 \
    grep -q '"dave@good.floormta.test"' "$WORK/log/delivery.log"

# ---- SIGTERM, restart -------------------------------------------------------------------------
stop_daemon
check "SIGTERM: exit 0" [ "$STOP_RC" = 0 ]
check "SIGTERM: the refused message is still queued" [ "$(spool_messages)" = 1 ]
check "SIGTERM: drained and stopped" grep -q 'run: stopped' "$WORK/log/engine.log"
check "SIGTERM: the local token file is removed" [ ! -e "$WORK/run/api.token" ]
start_daemon
wait_for "restart: the message recovered" 10 grep -q 'recovered messages=1' "$WORK/log/engine.log"
stop_daemon
check "second stop: exit 0" [ "$STOP_RC" = 0 ]

finish
