#!/usr/bin/env bash
# tests/integration/test_daemon_reload.sh — SIGHUP applies a changed configuration to a
# running `floormta run` without dropping a connection (same private test network as
# test_daemon.sh: dnsmasq, floormta-sink on 127.0.0.2/.3, the test PKI):
#   - a file that does not check changes nothing (tokens, relay networks as before);
#   - a policy line added by SIGHUP (weak.floormta.test: opportunistic) makes the
#     deferred TLS-1.0 message deliverable at its next attempt (a flush), logged with
#     verdict "opportunistic";
#   - a new API token works, a removed one gets 401, the local token still works;
#   - relay_networks changed to exclude 127.0.0.1: a new submission from there gets
#     554 5.7.1;
#   - an SMTP session open across the SIGHUP finishes its transaction (250) and its
#     message is delivered;
#   - the engine log says what was applied; SIGTERM still exits 0.
. "$(dirname "$0")/lib.sh"

need_tools swaks jq curl python3

start_test_network

TOKEN_A=reload-token-a-0123456789
TOKEN_B=reload-token-b-0123456789
TOKEN_C=reload-token-c-0123456789

# write_config TOKENS RELAY POLICY: the common configuration file with those sections.
write_config() {
    write_daemon_config "submission:
  relay_networks: $2
api:
  tokens: $1
  local_token_file: $WORK/run/api.token
policy: $3"
}

api_code() { # TOKEN METHOD PATH [JSON]
    local args=(-s -o /dev/null -w '%{http_code}' -X "$2" -H "Authorization: Bearer $1")
    [ $# -ge 4 ] && args+=(-H 'Content-Type: application/json' --data "$4")
    curl "${args[@]}" "http://127.0.0.1:$HTTP_PORT$3"
}
reloads_logged() { [ "$(grep -c "$1" "$WORK/log/engine.log")" -ge "$2" ]; }
opportunistic_delivered() {
    lines_for weak.floormta.test | jq -e -s >/dev/null \
        'any(.[]; .verdict == "opportunistic" and .result == "delivered")'
}

write_config "[\"$TOKEN_A\", \"$TOKEN_B\"]" '["127.0.0.0/8"]' '{}'
check "check-config accepts the first configuration" "$BIN/floormta" check-config "$WORK/floormta.yaml"
start_daemon

SWAKS=(swaks --server "127.0.0.1:$SUB_PORT" --from sender@example.org --helo client.example.org)
"${SWAKS[@]}" --to bob@weak.floormta.test --header "Subject: weak" >"$WORK/swaks1.out" 2>&1
check "submission from 127.0.0.1 accepted" grep -Eq '<[-~] +250 2\.0\.0' "$WORK/swaks1.out"
wait_for "weak.floormta.test refused by the floor and deferred" 30 \
    results_at_least weak.floormta.test deferred 1

# A session opened now and finished after the reloads: EHLO, MAIL, RCPT before them,
# DATA once $WORK/go exists. Its replies go to $WORK/session.out.
python3 - "$SUB_PORT" "$WORK/go" >"$WORK/session.out" 2>&1 <<'PY' &
import os, socket, sys, time
port, go = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=60)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode().rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            print(" | ".join(lines), flush=True)
            return line[:3]
def cmd(text):
    s.sendall(text.encode() + b"\r\n")
    return reply()
reply()
cmd("EHLO held.example.org")
cmd("MAIL FROM:<held@example.org>")
cmd("RCPT TO:<erin@good.floormta.test>")
print("OPEN", flush=True)
while not os.path.exists(go):
    time.sleep(0.05)
print("DATA", cmd("DATA"), flush=True)
print("END", cmd("Subject: held\r\n\r\nopen across SIGHUP\r\n."), flush=True)
print("QUIT", cmd("QUIT"), flush=True)
PY
SESSION_PID=$!
PIDS+=("$SESSION_PID")
wait_for "a session is open with its recipient accepted" 10 grep -q '^OPEN' "$WORK/session.out"
check "that session's RCPT got 250" grep -q '250 2.1.5' "$WORK/session.out"

# ---- a file that does not check changes nothing -------------------------------------------
cp "$WORK/floormta.yaml" "$WORK/good.yaml"
write_config "[\"$TOKEN_C\"]" '["192.0.2.0/24"]' '{weak.floormta.test: "opportunistic floor=1.3"}'
kill -HUP "$DAEMON_PID"
wait_for "bad file: the reload says nothing changed" 10 \
    grep -q 'reload: the configuration does not check; nothing changed' "$WORK/log/engine.log"
check "bad file: the old token B still works" [ "$(api_code "$TOKEN_B" GET /api/v1/queue)" = 200 ]
check "bad file: the new token C does not" [ "$(api_code "$TOKEN_C" GET /api/v1/queue)" = 401 ]
"${SWAKS[@]}" --to frank@good.floormta.test >"$WORK/swaks2.out" 2>&1
check "bad file: 127.0.0.1 still relays" grep -Eq '<[-~] +250 2\.0\.0' "$WORK/swaks2.out"
check "bad file: nothing was applied" bash -c "! grep -q 'reload: applied' '$WORK/log/engine.log'"

# ---- the new configuration ------------------------------------------------------------------
write_config "[\"$TOKEN_A\", \"$TOKEN_C\"]" '["192.0.2.0/24"]' '{weak.floormta.test: opportunistic}'
check "check-config accepts the new configuration" "$BIN/floormta" check-config "$WORK/floormta.yaml"
kill -HUP "$DAEMON_PID"
wait_for "SIGHUP: the reload logs what it applied" 10 \
    grep -q 'reload: applied: policy (1 line(s), floor TLS 1.2, new table), api tokens (2), submission (relay_networks 192.0.2.0/24' \
    "$WORK/log/engine.log"
grep 'reload:' "$WORK/log/engine.log" | sed 's/^/# /'
check "the daemon still runs" kill -0 "$DAEMON_PID"
check "the listener is still there" bash -c "ss -ltn 'sport = :$SUB_PORT' | grep -q LISTEN"

# (b) tokens
check "token C (added) works" [ "$(api_code "$TOKEN_C" GET /api/v1/queue)" = 200 ]
check "token B (removed) gets 401" [ "$(api_code "$TOKEN_B" GET /api/v1/queue)" = 401 ]
check "token A (kept) works" [ "$(api_code "$TOKEN_A" GET /api/v1/queue)" = 200 ]
check "the local token still works" \
    [ "$(api_code "$(cat "$WORK/run/api.token")" GET /api/v1/queue)" = 200 ]

# (c) relay networks
"${SWAKS[@]}" --to gina@good.floormta.test >"$WORK/swaks3.out" 2>&1
check "127.0.0.1 no longer relays: 554 5.7.1" grep -Eq '<(\*\*|[-~]) +554 5\.7\.1' "$WORK/swaks3.out"

# (a) the policy line: the deferred message goes out at its next attempt
check "flush weak.floormta.test: 200" \
    [ "$(api_code "$TOKEN_A" POST /api/v1/queue/flush '{"domain":"weak.floormta.test"}')" = 200 ]
wait_for "weak.floormta.test delivered under the opportunistic policy" 30 opportunistic_delivered
lines_for weak.floormta.test | tail -1 | sed 's/^/# /'

# (d) the session open across both SIGHUPs
touch "$WORK/go"
wait_for "the held session finished" 10 grep -q '^QUIT' "$WORK/session.out"
sed 's/^/# /' "$WORK/session.out"
check "held session: 354 after DATA" grep -q '^DATA 354' "$WORK/session.out"
check "held session: 250 after the final dot" grep -q '^END 250' "$WORK/session.out"
wait_for "the held session's message delivered" 30 \
    grep -q '"erin@good.floormta.test"' "$WORK/log/delivery.log"

# A second SIGHUP with the same file: the table is kept (trust stores reloaded in place).
kill -HUP "$DAEMON_PID"
wait_for "same file again: the table is kept" 10 \
    grep -q 'reload: applied: policy (1 line(s), floor TLS 1.2, unchanged, trust stores reloaded)' \
    "$WORK/log/engine.log"
check "same file again: token C still works" [ "$(api_code "$TOKEN_C" GET /api/v1/queue)" = 200 ]

stop_daemon
check "SIGTERM after the reloads: exit 0" [ "$STOP_RC" = 0 ]
check "no error in the engine log" bash -c "! grep -E 'did not take|kept some old' '$WORK/log/engine.log'"

finish
