#!/usr/bin/env bash
# tests/integration/test_smtpd_swaks.sh — the submission server (engine/smtpd) driven by
# clients nobody here wrote: swaks for STARTTLS, AUTH, pipelining and the limits,
# Postfix's smtp-source for concurrent load, openssl s_client for the TLS floor, and a
# raw bash socket for what a well-behaved client cannot send (bare LF, AUTH in
# plaintext, silence). Every refused case checks its reply AND that the harness's spool
# did not grow. Needs swaks, postfix (smtp-source) and openssl: scripts/deps.sh.
. "$(dirname "$0")/lib.sh"

for tool in swaks smtp-source openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/deps.sh"; exit 1; }
done

make_pki
PASS=s3cret
echo "# test users" >"$WORK/creds"
echo "alice:$(openssl passwd -6 "$PASS")" >>"$WORK/creds"
# bob's hash is made slow on purpose (SHA-512 crypt, 4 million rounds: about 2 s of CPU)
# to see the server keep serving while it checks. perl's crypt is libcrypt's.
SLOW_HASH=$(perl -e 'print crypt($ARGV[0], q{$6$rounds=4000000$floormtaslowsalt$})' "$PASS")
echo "bob:$SLOW_HASH" >>"$WORK/creds"

# start_harness NAME ARGS...: sets PORT (STARTTLS) and TLSPORT (implicit TLS).
start_harness() {
    local name=$1
    shift
    mkdir -p "$WORK/$name.spool"
    "$BIN/floormta-smtpd-harness" --pki "$WORK/pki" --spool "$WORK/$name.spool" \
        --ready-file "$WORK/$name.ready" --creds "$WORK/creds" \
        --listen 127.0.0.1:0 --listen-tls 127.0.0.1:0 "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    local i
    for i in $(seq 1 100); do
        [ -s "$WORK/$name.ready" ] && break
        sleep 0.1
    done
    if [ ! -s "$WORK/$name.ready" ]; then
        wait "${PIDS[-1]}"
        [ $? -eq 77 ] && { echo "skip: no io_uring"; exit 77; }
        echo "harness $name did not start:"; cat "$WORK/$name.err"; exit 1
    fi
    PORT=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\) starttls$/\1/p' "$WORK/$name.ready")
    TLSPORT=$(sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\) tls$/\1/p' "$WORK/$name.ready")
}

SPOOL=
queued() { find "$SPOOL" -name 'msg-*.eml' | wc -l; }

# expect DESCRIPTION PATTERN FILE: the file (a client's transcript) matches.
expect() {
    if grep -qE -- "$2" "$3"; then ok "$1"; else not_ok "$1 (no '$2' in $3)"; sed 's/^/    /' "$3"; fi
}

# nothing_queued DESCRIPTION BEFORE
nothing_queued() {
    local now
    now=$(queued)
    if [ "$now" -eq "$2" ]; then ok "$1: nothing queued"; else not_ok "$1: $((now - $2)) queued"; fi
}

# raw PORT FILE BYTES [SLEEP]: connects from bash, sends BYTES (printf format), waits
# SLEEP seconds (default 0) and reads until the server closes (5 s at most).
raw() {
    local port=$1 file=$2 bytes=$3 pause=${4:-0}
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        # shellcheck disable=SC2059
        printf -- "$bytes" >&3
        sleep "$pause"
        timeout 5 cat <&3
    ) >"$file" 2>&1
}

SW=(swaks --server 127.0.0.1 --from alice@example.org --to bob@example.net --timeout 10)

# ---- server A: relay for 127.0.0.1 only; clients from 127.0.0.2 must authenticate ----
start_harness a --relay 127.0.0.1/32 --max-size 20000 --max-rcpts 3 \
    --command-timeout 2000 --data-timeout 2000 --max-per-client 100
SPOOL=$WORK/a.spool

"${SW[@]}" --port "$PORT" >"$WORK/plain.txt" 2>&1
expect "plain send from the relay network is queued" '^<-  250 2\.0\.0 Ok: queued as H' "$WORK/plain.txt"
check "plain send: one message in the spool" [ "$(queued)" -eq 1 ]

n=$(queued)
"${SW[@]}" --port "$PORT" --local-interface 127.0.0.2 >"$WORK/relay.txt" 2>&1
expect "relay without AUTH is refused" '^<\*\* 554 5\.7\.1' "$WORK/relay.txt"
nothing_queued "relay without AUTH" "$n"

n=$(queued)
"${SW[@]}" --port "$PORT" --local-interface 127.0.0.2 --tls >"$WORK/tlsonly.txt" 2>&1
expect "TLS without AUTH is still no relay" '^<~\* 554 5\.7\.1' "$WORK/tlsonly.txt"
nothing_queued "TLS without AUTH" "$n"

"${SW[@]}" --port "$PORT" --local-interface 127.0.0.2 --tls \
    --auth PLAIN --auth-user alice --auth-password "$PASS" >"$WORK/plainauth.txt" 2>&1
expect "STARTTLS + AUTH PLAIN: 235" '^<~  235 2\.7\.0' "$WORK/plainauth.txt"
expect "STARTTLS + AUTH PLAIN: relayed and queued" '^<~  250 2\.0\.0 Ok: queued as H' "$WORK/plainauth.txt"
expect "AUTH only offered after STARTTLS" '^<~  250-AUTH PLAIN LOGIN' "$WORK/plainauth.txt"
check "AUTH not offered in plaintext" bash -c "! grep -q '^<-  250-AUTH' '$WORK/plainauth.txt'"
last=$(ls -t "$SPOOL"/msg-*.eml | head -1)
check "Received header names ESMTPSA and the TLS version" \
    grep -qE '^	\(version=TLSv1\.[23] cipher=[A-Z0-9_-]+\)' "$last"
check "Received header: with ESMTPSA" grep -q 'by mx.floormta.test (floormta) with ESMTPSA id' "$last"
check "envelope records the user" grep -qx 'auth alice' "${last%.eml}.env"

"${SW[@]}" --port "$PORT" --local-interface 127.0.0.2 --tls \
    --auth LOGIN --auth-user alice --auth-password "$PASS" >"$WORK/login.txt" 2>&1
expect "STARTTLS + AUTH LOGIN: 235" '^<~  235 2\.7\.0' "$WORK/login.txt"
expect "STARTTLS + AUTH LOGIN: queued" '^<~  250 2\.0\.0 Ok: queued as H' "$WORK/login.txt"

n=$(queued)
"${SW[@]}" --port "$PORT" --local-interface 127.0.0.2 --tls \
    --auth PLAIN --auth-user alice --auth-password wrong >"$WORK/badpw.txt" 2>&1
expect "bad password: 535 5.7.8" '^<~\* 535 5\.7\.8' "$WORK/badpw.txt"
nothing_queued "bad password" "$n"

n=$(queued)
raw "$PORT" "$WORK/auth-plaintext.txt" 'EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\nQUIT\r\n'
expect "AUTH before TLS: 538 5.7.11" '^538 5\.7\.11' "$WORK/auth-plaintext.txt"
check "AUTH before TLS: not authenticated" bash -c "! grep -q '^235' '$WORK/auth-plaintext.txt'"
nothing_queued "AUTH before TLS" "$n"

n=$(queued)
body=$(head -c 30000 /dev/zero | tr '\0' 'x' | fold -w 76)
"${SW[@]}" --port "$PORT" --body "$body" >"$WORK/big.txt" 2>&1
expect "oversize content: 552 5.3.4 after the dot" '^<\*\* 552 5\.3\.4' "$WORK/big.txt"
raw "$PORT" "$WORK/bigsize.txt" 'EHLO c.test\r\nMAIL FROM:<a@example.org> SIZE=30000\r\nQUIT\r\n'
expect "SIZE= above the limit: 552 5.3.4 at MAIL" '^552 5\.3\.4' "$WORK/bigsize.txt"
expect "EHLO advertises SIZE 20000" '^250-SIZE 20000' "$WORK/bigsize.txt"
nothing_queued "oversize" "$n"

"${SW[@]}" --port "$PORT" --to r1@example.net,r2@example.net,r3@example.net,r4@example.net \
    >"$WORK/rcpts.txt" 2>&1
expect "4th recipient: 452 4.5.3" '^<\*\* 452 4\.5\.3' "$WORK/rcpts.txt"
check "the refused recipient is in no envelope" bash -c "! cat '$SPOOL'/*.env | grep -q 'r4@example.net'"

n=$(queued)
raw "$PORT" "$WORK/barelf.txt" \
    'EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: x\r\n\r\nline\n.\nMAIL FROM:<evil@example.org>\r\n.\r\nQUIT\r\n'
expect "bare LF in content: 550 5.6.2 after the real end" '^550 5\.6\.2' "$WORK/barelf.txt"
check "bare LF: the smuggled MAIL was content, not a command" \
    bash -c "[ \$(grep -c '^250 2\.1\.0' '$WORK/barelf.txt') -eq 1 ]"
raw "$PORT" "$WORK/barelf-cmd.txt" 'EHLO c.test\nQUIT\r\n'
expect "bare LF in a command: 500 5.5.2" '^500 5\.5\.2' "$WORK/barelf-cmd.txt"
nothing_queued "bare LF" "$n"

n=$(queued)
"${SW[@]}" --port "$PORT" --pipeline >"$WORK/pipe.txt" 2>&1
expect "pipelined transaction is queued" '^<-  250 2\.0\.0 Ok: queued as H' "$WORK/pipe.txt"
check "pipelined: one more message" [ "$(queued)" -eq $((n + 1)) ]
# Everything in one write, two messages: replies in order, both queued.
raw "$PORT" "$WORK/pipe2.txt" \
    'EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.net>\r\nDATA\r\ny\r\n.\r\nQUIT\r\n'
check "one write, two messages: two 250 queued, then 221" \
    bash -c "[ \$(grep -c '^250 2\.0\.0 Ok: queued' '$WORK/pipe2.txt') -eq 2 ] && tail -1 '$WORK/pipe2.txt' | grep -q '^221'"
check "one write, two messages: both in the spool" [ "$(queued)" -eq $((n + 3)) ]

n=$(queued)
raw "$PORT" "$WORK/slowcmd.txt" 'EHLO c.test\r\n' 3
expect "silent client: 421 4.4.2 after the command timeout" '^421 4\.4\.2' "$WORK/slowcmd.txt"
raw "$PORT" "$WORK/slowdata.txt" \
    'EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nSubject: slow\r\n' 3
expect "stalled content: 421 4.4.2 after the data timeout" '^421 4\.4\.2' "$WORK/slowdata.txt"
nothing_queued "slow clients" "$n"

"${SW[@]}" --port "$TLSPORT" --tls-on-connect --local-interface 127.0.0.2 \
    --auth PLAIN --auth-user alice --auth-password "$PASS" >"$WORK/implicit.txt" 2>&1
expect "implicit TLS (RFC 8314) + AUTH: queued" '^<~  250 2\.0\.0 Ok: queued as H' "$WORK/implicit.txt"

for v in tls1 tls1_1; do
    echo QUIT | timeout 10 openssl s_client -connect "127.0.0.1:$TLSPORT" -"$v" \
        -cipher 'DEFAULT@SECLEVEL=0' >"$WORK/sclient-$v.txt" 2>&1
    expect "openssl s_client -$v (implicit): refused" 'alert protocol version' "$WORK/sclient-$v.txt"
    echo QUIT | timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -starttls smtp -"$v" \
        -cipher 'DEFAULT@SECLEVEL=0' >"$WORK/sclient-st-$v.txt" 2>&1
    expect "openssl s_client -starttls -$v: refused" 'alert protocol version' "$WORK/sclient-st-$v.txt"
done
echo QUIT | timeout 10 openssl s_client -connect "127.0.0.1:$TLSPORT" -tls1_2 \
    >"$WORK/sclient-12.txt" 2>&1
expect "openssl s_client -tls1_2: accepted" 'New, TLSv1\.2, Cipher is ECDHE-' "$WORK/sclient-12.txt"

n=$(queued)
timeout 60 smtp-source -c -s 20 -m 500 -f a@example.org -t b@example.net "127.0.0.1:$PORT" \
    >"$WORK/smtp-source.txt" 2>&1
check "smtp-source -s 20 -m 500 exits 0" [ $? -eq 0 ]
check "smtp-source: exactly 500 messages landed" [ "$(queued)" -eq $((n + 500)) ]

# ---- server B: at most 2 connections per client address ------------------------------
start_harness b --relay 127.0.0.1/32 --max-per-client 2
exec 4<>"/dev/tcp/127.0.0.1/$PORT" 5<>"/dev/tcp/127.0.0.1/$PORT"
read -r -t 5 line <&4
read -r -t 5 line <&5
raw "$PORT" "$WORK/perclient.txt" ''
expect "third connection from one address: 421 4.7.0" '^421 4\.7\.0' "$WORK/perclient.txt"
exec 4>&- 5>&-

# ---- server C: AUTH's crypt runs off the loop ------------------------------------------
start_harness c --relay 127.0.0.1/32 --log-level debug
SPOOL=$WORK/c.spool
n=$(queued)
# wait_checks N: until the harness's log shows N AUTH checks begun (10 s at most).
wait_checks() {
    local i
    for i in $(seq 1 100); do
        [ "$(grep -c -- '-> auth-check' "$WORK/c.err")" -ge "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
"${SW[@]}" --port "$PORT" --tls --auth PLAIN --auth-user bob --auth-password "$PASS" \
    --quit-after AUTH >"$WORK/slowauth.txt" 2>&1 &
SLOW=$!
check "bob's AUTH is being checked" wait_checks 1
# A whole session on the same server and loop while bob's hash is computed.
"${SW[@]}" --port "$PORT" >"$WORK/during.txt" 2>&1
expect "a message submitted while an AUTH is checked: 250" '^<-  250 2\.0\.0 Ok: queued as' "$WORK/during.txt"
check "... before the AUTH's answer (the check does not stall the loop)" \
    bash -c "! grep -q 'auth ok user=bob' '$WORK/c.err'"
wait "$SLOW"
expect "the slow AUTH then succeeds: 235" '^<~  235 2\.7\.0' "$WORK/slowauth.txt"
check "one message queued by server C" [ "$(queued)" -eq $((n + 1)) ]
# SIGTERM in the middle of a check: the client gets its answer, then the 421, and the
# server exits 0 once the checker thread is done (under ASan: no leak).
"${SW[@]}" --port "$PORT" --tls --auth PLAIN --auth-user bob --auth-password "$PASS" \
    --quit-after AUTH >"$WORK/slowauth2.txt" 2>&1 &
SLOW=$!
check "a second AUTH is being checked" wait_checks 2
kill -TERM "${PIDS[2]}"
wait "${PIDS[2]}"
rc=$?
check "server C stops cleanly with a check in flight (exit $rc)" [ "$rc" -eq 0 ]
wait "$SLOW"
expect "the check in flight at SIGTERM is answered: 235" '^<~  235 2\.7\.0' "$WORK/slowauth2.txt"

# The harness's own counters agree.
# Both stop on SIGTERM and exit 0 (under ASan: no error, no leak).
for i in 0 1; do
    kill -TERM "${PIDS[$i]}"
    wait "${PIDS[$i]}"
    rc=$?
    check "server $i stops cleanly (exit $rc)" [ "$rc" -eq 0 ]
done
check "server A counted the refusals" \
    bash -c "grep -q '^reject relay_denied=[1-9]' '$WORK/a.out' && grep -q '^reject bare_lf=[1-9]' '$WORK/a.out' && grep -q '^reject auth_failed=1$' '$WORK/a.out' && grep -q '^reject timeout=2$' '$WORK/a.out'"

finish
