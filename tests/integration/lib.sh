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
    if [ -n "${FLOORMTA_KEEP_WORK:-}" ]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
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

# need_tools TOOL...: exits unless each is on the PATH.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/deps.sh installs it)"; exit 1; }
    done
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

# ---- the daemon on a private test network (test_daemon*.sh, test_load.sh) ---------------

# free_port: prints a TCP port nothing listens on.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ! ss -ltn "sport = :$p" | grep -q LISTEN && { echo "$p"; return; }
    done
}

# write_test_zone [ZONE_LINES]: $WORK/zone.conf for start_dnsmasq: good.floormta.test has
# its MX on 127.0.0.3, weak.floormta.test on 127.0.0.2 (the receivers of start_receivers);
# ZONE_LINES (dnsmasq options, one a line) are added after them.
write_test_zone() {
    cat >"$WORK/zone.conf" <<'ZONE'
local-ttl=60
mx-host=good.floormta.test,mx.floormta.test,10
host-record=mx.floormta.test,127.0.0.3
mx-host=weak.floormta.test,mx1.floormta.test,10
host-record=mx1.floormta.test,127.0.0.2
ZONE
    [ -z "${1:-}" ] || printf '%s\n' "$1" >>"$WORK/zone.conf"
}

# start_receivers [ADDRESS=PROFILE...] [-- SINK_OPTION...]: one floormta-sink with a
# listener per ADDRESS=PROFILE, all on one port (the engine's delivery.port): by default
# 127.0.0.2 offering only TLS 1.0 (below the floor) and 127.0.0.3 with a valid wildcard
# certificate. SINK_OPTIONs go to floormta-sink as they are (e.g. --stats-file FILE).
# Sets SMTP_PORT (another one if taken). Needs make_pki.
start_receivers() {
    local listeners=() options=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do listeners+=("$1"); shift; done
    [ $# -gt 0 ] && { shift; options=("$@"); }
    [ ${#listeners[@]} -gt 0 ] || listeners=(127.0.0.2=tls1.0-only 127.0.0.3=wildcard)
    local attempt i pid l args
    for attempt in $(seq 1 10); do
        SMTP_PORT=$((20000 + RANDOM % 40000))
        args=()
        for l in "${listeners[@]}"; do args+=(--listen "${l%%=*}:$SMTP_PORT=${l#*=}"); done
        "$BIN/floormta-sink" --pki "$WORK/pki" --name mx.floormta.test "${args[@]}" \
            ${options[@]+"${options[@]}"} \
            --ready-file "$WORK/sinks.ready" >"$WORK/sinks.out" 2>"$WORK/sinks.err" &
        pid=$!
        for i in $(seq 1 100); do
            [ -s "$WORK/sinks.ready" ] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        [ -s "$WORK/sinks.ready" ] && break
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    [ -s "$WORK/sinks.ready" ] || { echo "the sinks did not start"; cat "$WORK/sinks.err"; exit 1; }
    PIDS+=("$pid")
}

# start_test_network: the PKI, the zone, dnsmasq and the receivers, as they come.
start_test_network() { make_pki; write_test_zone; start_dnsmasq; start_receivers; }

# The API token of write_daemon_config's file.
TOKEN=test-token-0123456789abcdef

# write_daemon_config [EXTRA_YAML]: the common $WORK/floormta.yaml for start_daemon:
# the spool in $WORK, dnsmasq as the resolver, the test PKI's root as the trust store,
# delivery to $SMTP_PORT with short timeouts and the first retry in 1 h (a deferral
# stays put), SMTP with STARTTLS on $SUB_PORT and HTTP on $HTTP_PORT (free ports, chosen
# at the first call), $TOKEN, the logs in $WORK/log, the local token $WORK/run/api.token.
# EXTRA_YAML's top-level sections are appended; one the common file has replaces it.
write_daemon_config() {
    local extra=${1:-} replaced
    : "${SUB_PORT:=$(free_port)}" "${HTTP_PORT:=$(free_port)}"
    replaced=" $(printf '%s\n' "$extra" | sed -n 's/^\([a-z_]*\):.*/\1/p' | tr '\n' ' ')"
    awk -v replaced="$replaced" \
        '/^[a-z_]+:/ { k = $1; sub(/:.*/, "", k); skip = index(replaced, " " k " ") > 0 } !skip' \
        >"$WORK/floormta.yaml" <<EOF
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
    [ -z "$extra" ] || printf '%s\n' "$extra" >>"$WORK/floormta.yaml"
}

# start_daemon: `floormta run --config $WORK/floormta.yaml`, ready once /healthz answers
# on $HTTP_PORT. Sets DAEMON_PID. Its engine log must be $WORK/log/engine.log.
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

# wait_for DESCRIPTION SECONDS COMMAND...: until the command succeeds. It is re-run, so
# it takes names, not values: a $(...) in the arguments would be expanded once.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    for i in $(seq 1 $((secs * 10))); do
        "$@" && { ok "$what"; return 0; }
        sleep 0.1
    done
    not_ok "$what"
}

# spool_messages: how many messages $WORK/spool holds (their state files, *.st, aside).
spool_messages() { find "$WORK/spool/msg" -type f ! -name '*.st' 2>/dev/null | wc -l; }

# The delivery log: lines_for DOMAIN prints its lines for DOMAIN, count_results DOMAIN
# RESULT counts those with that result; results_at_least DOMAIN RESULT N (for wait_for).
lines_for() { jq -c --arg d "$1" 'select(.domain == $d)' "$WORK/log/delivery.log" 2>/dev/null; }
count_results() { lines_for "$1" | jq -r .result | grep -c "^$2\$"; }
results_at_least() { [ "$(count_results "$1" "$2")" -ge "$3" ]; }

# metric NAME: its value on the daemon's /metrics; metric_is NAME VALUE (for wait_for).
metric() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v k="$1" '$1 == k { print $2 }'; }
metric_is() { [ "$(metric "$1")" = "$2" ]; }
