#!/usr/bin/env bash
# tests/integration/test_daemon_load.sh — `floormta run` under load, and `floormta send`,
# on the private test network of test_daemon.sh (lib.sh: dnsmasq, floormta-sink on
# 127.0.0.2 offering only TLS 1.0, on 127.0.0.3 a valid receiver):
#   - `floormta send` from a file and from stdin: exit 0, the queue id printed, the
#     message delivered to good.floormta.test under that id; from 127.0.0.2, outside
#     relay_networks, the recipient is refused: exit 2; no server: exit 1;
#   - SIGHUP under load drops no connection: Postfix's smtp-source (20 sessions) to
#     weak.floormta.test while the daemon takes SIGHUP after SIGHUP: smtp-source exits
#     0 and every message was acknowledged;
#   - SIGTERM under load loses no acknowledged message: smtp-source again, SIGTERM in
#     the middle, exit 0; every queue id smtp-source got in a 250 after DATA is in the
#     spool (weak.floormta.test is below the floor, so nothing leaves it), and a
#     restart recovers everything the spool holds.
. "$(dirname "$0")/lib.sh"

need_tools smtp-source jq curl

start_test_network

SUB_PORT=$(free_port)
HTTP_PORT=$(free_port)
# No STARTTLS (no certificate), no API token; only 127.0.0.1 may relay, so that a client
# on 127.0.0.2 is refused.
write_daemon_config "listen:
  smtp:
    - address: 127.0.0.1:$SUB_PORT
  http: 127.0.0.1:$HTTP_PORT
submission:
  relay_networks: [\"127.0.0.1/32\"]
api:
  local_token_file: $WORK/run/api.token"
start_daemon

# ---- floormta send --------------------------------------------------------------------------
SEND=("$BIN/floormta" send --config "$WORK/floormta.yaml" --from sender@example.org)
printf 'Subject: from a file\n\n.a line that starts with a dot\nbody\n' >"$WORK/msg.txt"
# rc_and_id RC ID: exit 0 and one queue id (16 hex digits) printed.
rc_and_id() { [ "$1" -eq 0 ] && [[ "$2" =~ ^[0-9a-f]{16}$ ]]; }
ID_FILE=$("${SEND[@]}" --to alice@good.floormta.test "$WORK/msg.txt" 2>"$WORK/send1.err")
check "send FILE: exit 0, a queue id" rc_and_id $? "$ID_FILE"
ID_STDIN=$(printf 'Subject: from stdin\r\n\r\nbody\r\n' |
    "${SEND[@]}" --to bob@good.floormta.test --to carol@good.floormta.test - 2>"$WORK/send2.err")
check "send -: exit 0, a queue id" rc_and_id $? "$ID_STDIN"
# (jq -e would judge only the log's last line.)
delivered() {
    jq -r --arg id "$1" 'select(.queue_id == $id and .result == "delivered") | .queue_id' \
        "$WORK/log/delivery.log" 2>/dev/null | grep -q .
}
wait_for "send FILE: delivered to good.floormta.test under its id" 20 delivered "$ID_FILE"
wait_for "send -: delivered to both recipients under its id" 20 delivered "$ID_STDIN"
both_recipients() {
    jq -r --arg id "$ID_STDIN" 'select(.queue_id == $id) | .recipients[].addr' \
        "$WORK/log/delivery.log" | sort | tr '\n' ' ' | grep -qx 'bob@good.floormta.test carol@good.floormta.test '
}
check "send -: both recipients in the delivery" both_recipients

"${SEND[@]}" --source 127.0.0.2 --to dave@good.floormta.test "$WORK/msg.txt" \
    >/dev/null 2>"$WORK/send3.err"
check "send from outside relay_networks: exit 2 (refused)" [ $? -eq 2 ]
check "send from outside relay_networks: the 554 is shown" grep -q '554 5.7.1' "$WORK/send3.err"
"${SEND[@]}" --server "127.0.0.1:$(free_port)" --to dave@good.floormta.test "$WORK/msg.txt" \
    >/dev/null 2>"$WORK/send4.err"
check "send to a port nobody listens on: exit 1" [ $? -eq 1 ]

# ---- SIGHUP under load ------------------------------------------------------------------------
acked() { grep -c '<<< 250 2.0.0 Ok: queued as' "$1"; }
acked_at_least() { [ "$(acked "$1")" -ge "$2" ]; }
BEFORE=$(spool_messages)
timeout 60 smtp-source -v -s 20 -m 1000 -l 2000 -f load@example.org -t x@weak.floormta.test \
    "127.0.0.1:$SUB_PORT" >"$WORK/hup.out" 2>&1 &
SRC_PID=$!
HUPS=0
while kill -0 "$SRC_PID" 2>/dev/null && [ "$HUPS" -lt 5 ]; do
    if acked_at_least "$WORK/hup.out" $((HUPS * 150 + 50)); then
        kill -HUP "$DAEMON_PID"
        HUPS=$((HUPS + 1))
    fi
    sleep 0.02
done
wait "$SRC_PID"
SRC_RC=$?
echo "# SIGHUP sent $HUPS times during the run"
check "SIGHUP under load: sent at least 3 times while smtp-source ran" [ "$HUPS" -ge 3 ]
check "SIGHUP under load: smtp-source exits 0" [ "$SRC_RC" -eq 0 ]
check "SIGHUP under load: no error from smtp-source" bash -c "! grep -Eq 'fatal|warning|lost connection' '$WORK/hup.out'"
check "SIGHUP under load: all 1000 messages acknowledged" [ "$(acked "$WORK/hup.out")" -eq 1000 ]
wait_for "SIGHUP under load: every reload logged" 10 \
    bash -c "[ \$(grep -c 'reload: SIGHUP' '$WORK/log/engine.log') -ge $HUPS ]"
wait_for "SIGHUP under load: the 1000 messages in the spool" 10 \
    bash -c "[ \$(find '$WORK/spool/msg' -type f ! -name '*.st' | wc -l) -eq $((BEFORE + 1000)) ]"

# ---- SIGTERM under load -----------------------------------------------------------------------
timeout 60 smtp-source -v -s 20 -m 5000 -l 2000 -f load@example.org -t y@weak.floormta.test \
    "127.0.0.1:$SUB_PORT" >"$WORK/term.out" 2>&1 &
SRC_PID=$!
for i in $(seq 1 200); do
    acked_at_least "$WORK/term.out" 300 && break
    sleep 0.05
done
check "SIGTERM under load: smtp-source got going (300 acknowledged)" acked_at_least "$WORK/term.out" 300
stop_daemon
wait "$SRC_PID"
ACKED=$(acked "$WORK/term.out")
echo "# smtp-source: $ACKED of 5000 acknowledged before SIGTERM ended the run"
check "SIGTERM under load: exit 0" [ "$STOP_RC" = 0 ]
check "SIGTERM under load: stopped in the middle" [ "$ACKED" -lt 5000 ]
grep -o '<<< 250 2.0.0 Ok: queued as [0-9a-f]*' "$WORK/term.out" | awk '{ print $NF }' |
    sort >"$WORK/acked.ids"
find "$WORK/spool/msg" -type f ! -name '*.st' -printf '%f\n' | sort >"$WORK/spool.ids"
MISSING=$(comm -23 "$WORK/acked.ids" "$WORK/spool.ids" | wc -l)
check "SIGTERM under load: every acknowledged message is in the spool ($MISSING missing)" \
    [ "$MISSING" -eq 0 -a "$(wc -l <"$WORK/acked.ids")" -eq "$ACKED" ]
IN_SPOOL=$(spool_messages)
# At least what was acknowledged. The drain answers a session whose message is being
# made durable (its 250, then 421) rather than cutting it; but smtp-source opens a new
# connection per message and exits at the first refused connect (the listeners close
# first), abandoning its other sessions before they read their 250: those messages are
# queued and the client may send them again (a duplicate, never a loss).
echo "# spool: $IN_SPOOL messages: $((BEFORE + 1000)) before, $ACKED acknowledged," \
    "$((IN_SPOOL - BEFORE - 1000 - ACKED)) durable, answered after smtp-source gave up"
check "SIGTERM under load: spool >= everything acknowledged" \
    [ "$IN_SPOOL" -ge $((BEFORE + 1000 + ACKED)) ]
check "SIGTERM: the local token file is removed" [ ! -e "$WORK/run/api.token" ]

start_daemon
wait_for "restart: recovers all $IN_SPOOL messages" 15 \
    grep -q "recovered messages=$IN_SPOOL " "$WORK/log/engine.log"
stop_daemon
check "second stop: exit 0" [ "$STOP_RC" = 0 ]

finish
