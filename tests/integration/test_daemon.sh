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

for tool in swaks jq curl promtool; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/deps.sh installs it)"; exit 1; }
done

make_pki

cat >"$WORK/zone.conf" <<'EOF'
local-ttl=60
mx-host=good.floormta.test,mx.floormta.test,10
host-record=mx.floormta.test,127.0.0.3
mx-host=weak.floormta.test,mx1.floormta.test,10
host-record=mx1.floormta.test,127.0.0.2
EOF
start_dnsmasq

# The receivers: both on one port (the engine's delivery.port), each on its address.
for attempt in $(seq 1 10); do
    SMTP_PORT=$((20000 + RANDOM % 40000))
    "$BIN/floormta-sink" --pki "$WORK/pki" --name mx.floormta.test \
        --listen "127.0.0.2:$SMTP_PORT=tls1.0-only" --listen "127.0.0.3:$SMTP_PORT=wildcard" \
        --ready-file "$WORK/sinks.ready" >"$WORK/sinks.out" 2>"$WORK/sinks.err" &
    SINK_PID=$!
    for i in $(seq 1 100); do
        [ -s "$WORK/sinks.ready" ] && break
        kill -0 "$SINK_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$WORK/sinks.ready" ] && break
    kill "$SINK_PID" 2>/dev/null
    wait "$SINK_PID" 2>/dev/null
done
[ -s "$WORK/sinks.ready" ] || { echo "the sinks did not start"; cat "$WORK/sinks.err"; exit 1; }
PIDS+=("$SINK_PID")

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ! ss -ltn "sport = :$p" | grep -q LISTEN && { echo "$p"; return; }
    done
}
SUB_PORT=$(free_port)
HTTP_PORT=$(free_port)
TOKEN=test-token-0123456789abcdef

cat >"$WORK/floormta.yaml" <<EOF
workers: 2
spool:
  dir: $WORK/spool
dns:
  servers: ["127.0.0.1:$DNS_PORT"]
tls:
  ca_file: $WORK/pki/ca.crt
delivery:
  helo_name: client.floormta.test
  port: $SMTP_PORT
  connect_timeout: 5s
  reply_timeout: 10s
  retry:
    first: 1h
listen:
  smtp:
    - address: 127.0.0.1:$SUB_PORT
      mode: starttls
  http: 127.0.0.1:$HTTP_PORT
  tls:
    cert_file: $WORK/pki/valid.crt
    key_file: $WORK/pki/valid.key
api:
  tokens: ["$TOKEN"]
  local_token_file: $WORK/run/api.token
log:
  delivery: $WORK/log/delivery.log
  engine: $WORK/log/engine.log
EOF
check "check-config accepts the test configuration" \
    "$BIN/floormta" check-config "$WORK/floormta.yaml"

DAEMON_PID=
start_daemon() {
    "$BIN/floormta" run --config "$WORK/floormta.yaml" >"$WORK/run.out" 2>&1 &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    local i
    for i in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the daemon did not start:"; cat "$WORK/run.out" "$WORK/log/engine.log" 2>/dev/null
    exit 1
}

# stop_daemon: SIGTERM, then the exit status in STOP_RC (124 if it did not exit in 30 s).
stop_daemon() {
    kill -TERM "$DAEMON_PID"
    local i hung=0
    for i in $(seq 1 300); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        hung=1
        kill -KILL "$DAEMON_PID"
    fi
    wait "$DAEMON_PID"
    STOP_RC=$?
    [ "$hung" = 0 ] || STOP_RC=124
}

# wait_for DESCRIPTION SECONDS COMMAND...: until the command succeeds.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    for i in $(seq 1 $((secs * 10))); do
        "$@" && { ok "$what"; return 0; }
        sleep 0.1
    done
    not_ok "$what"
}

lines_for() { jq -c --arg d "$1" 'select(.domain == $d)' "$WORK/log/delivery.log" 2>/dev/null; }
count_results() { lines_for "$1" | jq -r .result | grep -c "^$2\$"; }
spool_messages() { find "$WORK/spool/msg" -type f ! -name '*.st' 2>/dev/null | wc -l; }
metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
# The checks below are re-run by wait_for, so they take names, not values: a $(...) in
# wait_for's arguments would be expanded once, before the first try.
metric_is() { [ "$(metric "$1")" = "$2" ]; }
results_at_least() { [ "$(count_results "$1" "$2")" -ge "$3" ]; }

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
