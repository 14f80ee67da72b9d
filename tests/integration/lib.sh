# tests/integration/lib.sh — shared helpers for the integration tests: a scratch
# directory, the test PKI, sinks started on loopback and stopped by PID, assertions
# that count into the plain "N passed, N failed" closing line.
set -u

BIN=${FLOORMTA_BIN:?FLOORMTA_BIN must point at the build directory}
WORK=$(mktemp -d /tmp/floormta-it.XXXXXX)
PASSED=0
FAILED=0
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }

# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

make_pki() {
    "$BIN/floormta-testpki" "$WORK/pki" mx.floormta.test || { echo "cannot make the PKI"; exit 1; }
}

# start_sink NAME PROFILE...: starts one sink with a listener per profile on
# 127.0.0.1 (kernel-chosen ports) and waits until it is ready. Sets PORT_<profile>
# (profile with '-' and '.' as '_') for each listener.
start_sink() {
    local name=$1
    shift
    local args=() p
    for p in "$@"; do args+=(--listen "127.0.0.1:0=$p"); done
    "$BIN/floormta-sink" --pki "$WORK/pki" --name mx.floormta.test "${args[@]}" \
        --ready-file "$WORK/$name.ready" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    local i
    for i in $(seq 1 100); do
        [ -s "$WORK/$name.ready" ] && break
        sleep 0.1
    done
    if [ ! -s "$WORK/$name.ready" ]; then
        echo "sink $name did not start:"; cat "$WORK/$name.err"; exit 1
    fi
    local line port profile var
    while read -r line; do
        port=$(echo "$line" | sed -n 's/^listening 127\.0\.0\.1:\([0-9]*\) profile=.*/\1/p')
        profile=${line##*profile=}
        var=PORT_$(echo "$profile" | tr -- '-.' '__')
        printf -v "$var" '%s' "$port"
    done <"$WORK/$name.ready"
}

DNSMASQ=/usr/sbin/dnsmasq

# start_dnsmasq: a real dnsmasq serving $WORK/zone.conf on 127.0.0.1 at a random port
# (another one if taken); sets DNS_PORT. Queries are logged to $WORK/dnsmasq.log.
start_dnsmasq() {
    [ -x "$DNSMASQ" ] || { echo "dnsmasq is missing (install dnsmasq-base)"; exit 1; }
    local attempt
    for attempt in $(seq 1 10); do
        DNS_PORT=$((20000 + RANDOM % 40000))
        : >"$WORK/dnsmasq.log"
        "$DNSMASQ" --keep-in-foreground --conf-file="$WORK/zone.conf" --no-resolv --no-hosts \
            --no-poll --bind-interfaces --listen-address=127.0.0.1 --port="$DNS_PORT" \
            --pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log" --log-queries \
            --local=/test/ --cache-size=0 2>"$WORK/dnsmasq.err" &
        local pid=$! i
        for i in $(seq 1 100); do
            grep -q 'started, version' "$WORK/dnsmasq.log" 2>/dev/null && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null && grep -q 'started, version' "$WORK/dnsmasq.log"; then
            PIDS+=("$pid")
            return 0
        fi
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    echo "dnsmasq did not start:"; cat "$WORK/dnsmasq.err"; exit 1
}
