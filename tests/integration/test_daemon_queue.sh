#!/usr/bin/env bash
# tests/integration/test_daemon_queue.sh — the operator's queue tools against a running
# daemon (`floormta queue`, `floormta destinations`, the /api/v1/queue* endpoints), with
# the set-up of test_daemon.sh:
# dnsmasq, floormta-sink as a good receiver (mx.floormta.test, 127.0.0.3) and a TLS
# 1.0-only one (mx1.floormta.test, 127.0.0.2) so that mail for weak.floormta.test stays
# deferred (version_below_floor). Then: list and summary show it with its recipient's
# state and reason; flush makes a second attempt now; bounce --id sends a DSN to the
# sender's domain (good.floormta.test: delivered) and the message leaves the queue;
# delete --domain empties it without a DSN; destinations shows the refused host;
# unknown ids and bad input get 404 and 400.
. "$(dirname "$0")/lib.sh"

need_tools swaks jq curl promtool

start_test_network

write_daemon_config "api:
  tokens: [\"$TOKEN\"]
  local_token_file: \"\"      # no token file: the \"no token\" case below gets the API's 401"
check "check-config accepts the test configuration" \
    "$BIN/floormta" check-config "$WORK/floormta.yaml"

API_URL="http://127.0.0.1:$HTTP_PORT"
FQ=("$BIN/floormta" queue --api "$API_URL" --token "$TOKEN")
# The checks below are re-run by wait_for, so they take names, not values: a $(...) in
# wait_for's arguments would be expanded once, before the first try.
queue_json() { "${FQ[@]}" list --json; }
queue_total() { [ "$(queue_json | jq '.total')" = "$1" ]; }
deferred_total() { [ "$("${FQ[@]}" summary --json | jq '.total.deferred')" = "$1" ]; }
# http_code METHOD PATH [BODY]: the status of one API request with the token.
http_code() {
    curl -s -o "$WORK/http.out" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $TOKEN" \
        ${3:+-H 'Content-Type: application/json' --data "$3"} "$API_URL$2"
}
dsn_delivered() {
    lines_for good.floormta.test | jq -e >/dev/null -s \
        'map(select(.result == "delivered" and .recipients[0].addr == "sender@good.floormta.test")) | length == '"$1"
}

start_daemon
SWAKS=(swaks --server "127.0.0.1:$SUB_PORT" --from sender@good.floormta.test --helo client.example.org)
"${SWAKS[@]}" --to bob@weak.floormta.test --header "Subject: weak" >"$WORK/swaks1.out" 2>&1
check "swaks: accepted" grep -Eq '<[-~] +250 2\.0\.0' "$WORK/swaks1.out"
wait_for "weak.floormta.test refused and deferred" 30 results_at_least weak.floormta.test deferred 1

# ---- list and summary -------------------------------------------------------------------------
"${FQ[@]}" list >"$WORK/list.txt" 2>&1
cat "$WORK/list.txt" | sed 's/^/# /'
check "queue list: the message, its recipient deferred with the floor's reason" \
    bash -c "grep -q 'weak.floormta.test' '$WORK/list.txt' && grep -q 'bob@weak.floormta.test.*deferred.*version_below_floor' '$WORK/list.txt'"
queue_json >"$WORK/list.json"
ID=$(jq -r '.messages[0].id' "$WORK/list.json")
check "queue list --json: one message, sender, state, recipient's last result" \
    jq -e >/dev/null '.total == 1 and (.messages | length) == 1 and .messages[0].sender == "sender@good.floormta.test" and .messages[0].state == "deferred" and .messages[0].attempts == 1 and .messages[0].recipients[0].state == "deferred" and .messages[0].recipients[0].last.kind == "tls" and (.messages[0].recipients[0].last.text | test("version_below_floor"))' "$WORK/list.json"
check "queue list --domain: filtered" \
    bash -c "'${FQ[0]}' queue --api '$API_URL' --token '$TOKEN' list --domain good.floormta.test --json | jq -e '.total == 0' >/dev/null"
"${FQ[@]}" summary >"$WORK/summary.txt" 2>&1
cat "$WORK/summary.txt" | sed 's/^/# /'
check "queue summary: weak.floormta.test, 1 deferred" grep -Eq '^weak\.floormta\.test +1 +0 +1 +0' "$WORK/summary.txt"
check "queue summary --json: totals" \
    bash -c "'${FQ[0]}' queue --api '$API_URL' --token '$TOKEN' summary --json | jq -e '.total.messages == 1 and .total.deferred == 1 and .domains[0].domain == \"weak.floormta.test\" and .domains[0].oldest_arrival != null' >/dev/null"
check "the token from FLOORMTA_TOKEN" \
    bash -c "FLOORMTA_TOKEN='$TOKEN' '$BIN/floormta' queue summary --api '$API_URL' --json >/dev/null"
echo "$TOKEN" >"$WORK/token"
check "the token from --token-file" \
    bash -c "'$BIN/floormta' queue summary --api '$API_URL' --token-file '$WORK/token' --json >/dev/null"
check "no token: exit 1" bash -c "! env -u FLOORMTA_TOKEN '$BIN/floormta' queue --api '$API_URL' 2>'$WORK/notoken.err'"
check "no token: the API's 401 on stderr" grep -q '401' "$WORK/notoken.err"

# ---- destinations (the floor refused the handshake itself: no TLS version was agreed) -----------------------------------------------------------------------------
"$BIN/floormta" destinations --api "$API_URL" --token "$TOKEN" >"$WORK/dest.txt" 2>&1
cat "$WORK/dest.txt" | sed 's/^/# /'
check "destinations: the refused MX host with its reason" \
    grep -Eq '^mx1\.floormta\.test +[0-9]+ +refuse +version_below_floor ' "$WORK/dest.txt"
check "destinations --json: verdict, reason, TLS version, STARTTLS, times" \
    bash -c "'$BIN/floormta' destinations --api '$API_URL' --token '$TOKEN' --json | jq -e '[.destinations[] | select(.host == \"mx1.floormta.test\")][0] | .verdict == \"refuse\" and .reason == \"version_below_floor\" and has(\"tls_version\") and .starttls_offered == true and .checked_at != null and .expires_at != null' >/dev/null"

# ---- flush --------------------------------------------------------------------------------------
"${FQ[@]}" flush --id "$ID" >"$WORK/flush.txt" 2>&1
check "queue flush --id: 1 affected" grep -q 'flush id=.*: 1 of 1 message(s) affected' "$WORK/flush.txt"
wait_for "flush: a second attempt in the delivery log" 15 results_at_least weak.floormta.test deferred 2
check "flush --domain: answers" bash -c "'${FQ[0]}' queue --api '$API_URL' --token '$TOKEN' flush --domain weak.floormta.test >/dev/null"

# ---- bounce -------------------------------------------------------------------------------------
bounce_id() { "${FQ[@]}" bounce --id "$ID" >"$WORK/bounce.txt" 2>&1; }
wait_for "queue bounce --id: accepted (not in flight)" 10 bounce_id
check "queue bounce: 1 affected" grep -q 'bounce id=.*: 1 of 1' "$WORK/bounce.txt"
wait_for "bounce: the message left the queue (and its DSN was delivered)" 15 queue_total 0
wait_for "bounce: the DSN delivered to the sender at good.floormta.test" 15 dsn_delivered 1
check "bounce: the message's files are gone from the spool" [ "$(spool_messages)" = 0 ]
check "bounce: logged as the operator's" grep -q 'bounced by the operator' "$WORK/log/engine.log"

# ---- delete ------------------------------------------------------------------------------------
"${SWAKS[@]}" --to carol@weak.floormta.test >"$WORK/swaks2.out" 2>&1
"${SWAKS[@]}" --to dave@weak.floormta.test >"$WORK/swaks3.out" 2>&1
wait_for "two more messages deferred" 20 deferred_total 2
"${FQ[@]}" delete --domain weak.floormta.test >"$WORK/delete.txt" 2>&1
cat "$WORK/delete.txt" | sed 's/^/# /'
check "queue delete --domain: 2 affected" grep -q 'delete domain=weak.floormta.test: 2 of 2' "$WORK/delete.txt"
wait_for "delete: the queue is empty" 10 queue_total 0
sleep 1
check "delete: no DSN (still the one from the bounce)" dsn_delivered 1
check "delete: the spool is empty" [ "$(spool_messages)" = 0 ]

# ---- unknown ids and bad input -------------------------------------------------------------------
check "bounce an unknown id: exit 1" bash -c "! '${FQ[0]}' queue --api '$API_URL' --token '$TOKEN' bounce --id 0000000000000001 2>'$WORK/unknown.err'"
check "bounce an unknown id: 404 on stderr" grep -q '404 no such message' "$WORK/unknown.err"
check "POST bounce, unknown id: 404" [ "$(http_code POST /api/v1/queue/bounce '{"id":"0000000000000001"}')" = 404 ]
check "POST delete, bad id: 400" [ "$(http_code POST /api/v1/queue/delete '{"id":"xyz"}')" = 400 ]
check "POST flush, id and domain: 400" \
    [ "$(http_code POST /api/v1/queue/flush '{"id":"0000000000000001","domain":"a.example"}')" = 400 ]
check "POST flush, bad domain: 400" [ "$(http_code POST /api/v1/queue/flush '{"domain":"bad..example"}')" = 400 ]
check "GET messages, limit 0: 400" [ "$(http_code GET '/api/v1/queue/messages?limit=0')" = 400 ]
check "GET messages, limit abc: 400" [ "$(http_code GET '/api/v1/queue/messages?limit=abc')" = 400 ]
check "GET messages, bad domain: 400" [ "$(http_code GET '/api/v1/queue/messages?domain=-x-')" = 400 ]
check "GET messages, no token: 401" \
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$API_URL/api/v1/queue/messages")" = 401 ]
check "queue flush without --id or --domain: exit 1" bash -c "! '${FQ[0]}' queue --api '$API_URL' flush 2>/dev/null"

stop_daemon
check "SIGTERM: exit 0" [ "$STOP_RC" = 0 ]

finish
