#!/usr/bin/env bash
# tests/queue/test_crash.sh — SIGKILL the spool mid-write, again and again, on the same
# spool: floormta-crash-driver enqueues, updates and removes as fast as it can and prints
# each acknowledgement; after each kill, `verify` recovers the spool and checks that
# every acknowledged message is there exactly once with its content and its acknowledged
# state, that acknowledged removals stayed removed, and that nothing was quarantined.
set -u
BIN=${FLOORMTA_BIN:?FLOORMTA_BIN must point at the build directory}
DRIVER=$BIN/floormta-crash-driver
ROUNDS=${CRASH_ROUNDS:-30}
[ -x "$DRIVER" ] || { echo "missing $DRIVER (build target floormta-crash-driver)"; exit 1; }

# On disk (/tmp is the root filesystem here), so the syncs are real.
WORK=$(mktemp -d /tmp/floormta-crash.XXXXXX)
PID=
cleanup() {
    [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    [ -n "${CRASH_KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

SPOOL=$WORK/spool
ACKS=$WORK/acks
: >"$ACKS"
start=$SECONDS
failed=0
leftovers=0
for round in $(seq 1 "$ROUNDS"); do
    out=$WORK/out.$round
    "$DRIVER" run "$SPOOL" "$round" >"$out" 2>"$WORK/err" &
    PID=$!
    # A random moment between 50 and 500 ms.
    sleep "$(printf '0.%03d' $((50 + RANDOM % 451)))"
    if ! kill -KILL "$PID" 2>/dev/null; then
        echo "round $round: the driver was not running any more:"; cat "$WORK/err"; exit 1
    fi
    wait "$PID" 2>/dev/null
    PID=
    # A line cut by the kill was never a whole acknowledgement.
    if [ -s "$out" ] && [ -n "$(tail -c1 "$out")" ]; then
        sed -i '$d' "$out"
    fi
    cat "$out" >>"$ACKS"
    if ! report=$("$DRIVER" verify "$SPOOL" "$ACKS" 2>&1); then
        echo "round $round: FAILED"
        echo "$report" | head -30
        failed=1
        break
    fi
    echo "round $round: $(wc -l <"$out") acks; $(echo "$report" | tail -1)"
    n=$(echo "$report" | sed -n 's/.* \([0-9]*\) leftovers.*/\1/p' | tail -1)
    leftovers=$((leftovers + ${n:-0}))
done

enq=$(grep -c '^E' "$ACKS")
upd=$(grep -c '^U' "$ACKS")
rem=$(grep -c '^R' "$ACKS")
echo "$ROUNDS rounds in $((SECONDS - start)) s: $enq enqueues, $upd updates, $rem removals acknowledged"
echo "$leftovers unacknowledged writes found in tmp/ after the kills"
# The test must have tested something: acknowledgements of each kind, and kills that
# landed in the middle of writes.
if [ "$failed" -eq 0 ] && { [ "$enq" -lt 100 ] || [ "$upd" -lt 10 ] || [ "$rem" -lt 10 ] ||
    [ "$leftovers" -eq 0 ]; }; then
    echo "too few acknowledgements or interrupted writes to mean anything"
    failed=1
fi
[ "$failed" -eq 0 ] && echo "1 passed, 0 failed" || echo "0 passed, 1 failed"
exit "$failed"
