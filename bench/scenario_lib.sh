# bench/scenario_lib.sh — helpers of the load scenarios (bench/scenarios.sh; issue 7),
# sourced, never run. A scenario builds a private test network in a scratch folder on
# disk: the test PKI, dnsmasq on 127.0.0.1 serving a generated zone, floormta-sink
# processes on 127.0.0.x (one SMTP port for all: the engine's delivery.port), then
# `floormta run` with its spool in that folder; floormta-load drives it over SMTP. Every
# process started here is stopped by its PID (scen_teardown, and the EXIT trap).
#
# The caller sets, before sourcing:
#   BIN      the build folder (floormta, floormta-sink, floormta-load, floormta-testpki);
#            default $FLOORMTA_BIN
#   RESULTS  where the JSON files and results.md go; default $BENCH_RESULTS
# and may set BENCH_SCRATCH (parent of the scratch folders; default /var/tmp: a disk,
# not a tmpfs), BENCH_SYNC_FS (1: spool.sync_fs true), BENCH_KEEP_WORK (1: keep them),
# BENCH_TRASH (a folder a finished scenario's scratch folder is moved into instead of being
# removed; bench/scenarios.sh empties it at its end: see scen_discard).
#
# bench/compare_postfix.sh may source this file too: scen_table_row and scen_result
# give its rows the same shape (see "The Postfix hook" in bench/scenarios.sh).

BIN=${BIN:-${FLOORMTA_BIN:?BIN or FLOORMTA_BIN must name the build folder}}
RESULTS=${RESULTS:-${BENCH_RESULTS:?RESULTS or BENCH_RESULTS must name the results folder}}
BENCH_SCRATCH=${BENCH_SCRATCH:-/var/tmp}
BENCH_SYNC_FS=${BENCH_SYNC_FS:-0}
DNSMASQ=/usr/sbin/dnsmasq
SCEN_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
API_TOKEN=bench-token-0123456789abcdef

SCEN_PIDS=()
WORK=

# rand_port: a port below the kernel's ephemeral range (32768-60999 by default), so
# that no connection's source port, ours or another program's, can already hold it.
rand_port() { echo $((20000 + RANDOM % 12000)); }

# scen_discard DIR: a finished scratch folder out of the way: kept (BENCH_KEEP_WORK=1),
# moved into $BENCH_TRASH when there is one, else removed. Why not removed at once: on
# ext4 without a journal every new inode scans the free inodes of its block group that
# were deleted in the last minute (six while that part of the inode table is dirty, which
# the next scenario's own allocations keep it), so removing one scenario's spool would
# bill the next scenario's spool for it, which `mixed` (its refused messages stay queued:
# new inodes) showed as half its throughput. A rename deletes nothing.
scen_discard() {
    local dir=$1
    if [ "${BENCH_KEEP_WORK:-0}" = 1 ]; then
        echo "# kept $dir"
    elif [ -n "${BENCH_TRASH:-}" ] && [ -d "$BENCH_TRASH" ] && mv "$dir" "$BENCH_TRASH/"; then
        :
    else
        rm -rf "$dir"
    fi
}

# scen_journal_less DIR: true when DIR is on ext4 without a journal (no jbd2 entry for
# its device), where removing files slows the next creations (scen_discard).
scen_journal_less() {
    local src fstype dev
    read -r src fstype < <(findmnt -no SOURCE,FSTYPE --target "$1") || return 1
    [ "$fstype" = ext4 ] || return 1
    dev=$(basename "$(readlink -f "$src")")
    ! ls /proc/fs/jbd2/ 2>/dev/null | grep -q "^$dev-"
}

# scen_teardown: stops what this scenario started (newest first: the daemon before its
# sinks and DNS), each by its PID, and puts the scratch folder away (scen_discard).
scen_teardown() {
    local i pid
    for ((i = ${#SCEN_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${SCEN_PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SCEN_PIDS=()
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        scen_discard "$WORK"
    fi
    WORK=
}
trap scen_teardown EXIT

die() {
    echo "scenarios: $*" >&2
    exit 1
}

# scen_setup NAME: a fresh scratch folder ($WORK) with its own test PKI.
scen_setup() {
    WORK=$(mktemp -d "$BENCH_SCRATCH/floormta-scen-$1.XXXXXX")
    mkdir -p "$WORK/log"
    "$BIN/floormta-testpki" "$WORK/pki" mx.floormta.test >/dev/null || die "cannot make the PKI"
}

# ---- the machine -----------------------------------------------------------------------

# scen_machine_json DIR: what the figures were measured on, as JSON; DIR is the folder
# whose filesystem holds the spools.
scen_machine_json() {
    local dir=$1 cpu mem src fstype opts dev model
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    read -r src fstype opts < <(findmnt -no SOURCE,FSTYPE,OPTIONS --target "$dir")
    dev=$(basename "$src")
    model=$(cat "/sys/block/$dev/device/model" 2>/dev/null | sed 's/[[:space:]]*$//' || true)
    [ -n "$model" ] || model=$( [ -e "/sys/block/$dev/device/driver" ] &&
        basename "$(readlink "/sys/block/$dev/device/driver")" || echo unknown)
    jq -n --arg cpu "$cpu" --argjson cores "$(nproc)" --argjson mem_kb "$mem" \
        --arg kernel "$(uname -r)" --arg os "Debian $(cat /etc/debian_version 2>/dev/null)" \
        --arg src "$src" --arg fs "$fstype" --arg opts "$opts" \
        --arg model "$model" --arg dir "$dir" \
        --argjson journal "$(if [ "$fstype" != ext4 ]; then echo null; elif scen_journal_less "$dir"; then echo false; else echo true; fi)" \
        '{cpu: $cpu, cores: $cores, memory_gib: (($mem_kb / 1048576 * 10 | round) / 10),
          kernel: $kernel, os: $os,
          disk: {scratch: $dir, device: $src, model: $model,
                 filesystem: $fs, journal: $journal, mount_options: $opts}}'
}

# ---- DNS -------------------------------------------------------------------------------

# scen_zone_domains SUFFIX COUNT MXFMT HOSTS [ADDRS...]: appends to $WORK/zone.conf MX
# records for dNNNN.SUFFIX, NNNN in 0..COUNT-1 (floormta-load's recipient domains):
# domain i's MX is printf(MXFMT, i % HOSTS), or printf(MXFMT, i) when HOSTS is 0. Each
# MX name gets an A record, the ADDRS dealt out round robin (none without ADDRS: names
# an earlier call gave addresses).
scen_zone_domains() {
    local suffix=$1 count=$2 fmt=$3 hosts=$4
    shift 4
    awk -v suffix="$suffix" -v n="$count" -v fmt="$fmt" -v hosts="$hosts" -v addrs="$*" '
        BEGIN {
            na = split(addrs, a, " ")
            for (i = 0; i < n; i++) {
                mx = sprintf(fmt, hosts > 0 ? i % hosts : i)
                printf "mx-host=d%04d.%s,%s,10\n", i, suffix, mx
                if (na > 0 && !(mx in seen)) {
                    seen[mx] = 1
                    printf "host-record=%s,%s\n", mx, a[k++ % na + 1]
                }
            }
        }' >>"$WORK/zone.conf"
}

# scen_start_dnsmasq: dnsmasq on 127.0.0.1 (a random port, another if taken) serving
# $WORK/zone.conf, no cache, no query log (it would cost as much as the answers). Sets
# DNS_PORT.
scen_start_dnsmasq() {
    [ -x "$DNSMASQ" ] || die "dnsmasq is missing (scripts/deps.sh installs dnsmasq-base)"
    sed -i '1i local-ttl=3600' "$WORK/zone.conf"
    local attempt i pid
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        DNS_PORT=$(rand_port)
        "$DNSMASQ" --keep-in-foreground --conf-file="$WORK/zone.conf" --no-resolv --no-hosts \
            --no-poll --bind-interfaces --listen-address=127.0.0.1 --port="$DNS_PORT" \
            --pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log" \
            --local=/test/ --cache-size=0 2>"$WORK/dnsmasq.err" &
        pid=$!
        for i in $(seq 1 100); do
            grep -q 'started, version' "$WORK/dnsmasq.log" 2>/dev/null && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null && grep -q 'started, version' "$WORK/dnsmasq.log"; then
            SCEN_PIDS+=("$pid")
            return 0
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    cat "$WORK/dnsmasq.err" >&2
    die "dnsmasq did not start"
}

# ---- receivers -------------------------------------------------------------------------

SMTP_PORT=

# scen_start_sink NAME ADDR=PROFILE...: one floormta-sink with a listener per argument,
# all on $SMTP_PORT (chosen by the first sink started: another one if taken), counting
# into $WORK/NAME.stats.
scen_start_sink() {
    local name=$1
    shift
    local attempt i pid spec args fixed=$SMTP_PORT
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        [ -n "$fixed" ] || SMTP_PORT=$(rand_port)
        args=()
        for spec in "$@"; do args+=(--listen "${spec%%=*}:$SMTP_PORT=${spec#*=}"); done
        rm -f "$WORK/$name.ready"
        "$BIN/floormta-sink" --pki "$WORK/pki" --name mx.floormta.test "${args[@]}" \
            --log-level error --stats-file "$WORK/$name.stats" \
            --ready-file "$WORK/$name.ready" >"$WORK/$name.out" 2>"$WORK/$name.err" &
        pid=$!
        for i in $(seq 1 100); do
            [ -s "$WORK/$name.ready" ] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if [ -s "$WORK/$name.ready" ]; then
            SCEN_PIDS+=("$pid")
            return 0
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        [ -z "$fixed" ] || break # the port is the one the first sink took
    done
    cat "$WORK/$name.err" >&2
    die "sink $name did not start"
}

# scen_sink_stat NAME KEY: a counter of $WORK/NAME.stats (connections, messages, ...).
scen_sink_stat() { awk -v k="$2" '$1 == k { print $2 }' "$WORK/$1.stats"; }

# ---- the daemon ------------------------------------------------------------------------

free_port() {
    local p
    while :; do
        p=$(rand_port)
        ! ss -ltn "sport = :$p" | grep -q LISTEN && { echo "$p"; return; }
    done
}

# scen_start_daemon WORKERS: writes $WORK/floormta.yaml (spool in $WORK/spool on disk,
# sync_fs from BENCH_SYNC_FS, the scenario's DNS and delivery port, the test CA) and
# starts `floormta run`, ready once /healthz answers; other ports if it cannot listen
# (another program may have taken one since free_port looked). Sets DAEMON_PID,
# SUB_PORT, METRICS_URL.
scen_start_daemon() {
    local attempt
    for attempt in 1 2 3 4 5; do
        start_daemon_once "$1" && return 0
        grep -q 'Address already in use' "$WORK/run.out" "$WORK/log/engine.log" 2>/dev/null || break
        echo "   (daemon: a port was taken, trying others)"
    done
    cat "$WORK/run.out" "$WORK/log/engine.log" >&2 2>/dev/null || true
    die "the daemon did not start"
}

start_daemon_once() {
    local workers=$1 sync=false i
    [ "$BENCH_SYNC_FS" = 1 ] && sync=true
    SUB_PORT=$(free_port)
    HTTP_PORT=$(free_port)
    while [ "$HTTP_PORT" = "$SUB_PORT" ]; do HTTP_PORT=$(free_port); done
    cat >"$WORK/floormta.yaml" <<EOF
workers: $workers
spool:
  dir: $WORK/spool
  sync_fs: $sync
dns:
  servers: ["127.0.0.1:$DNS_PORT"]
tls:
  ca_file: $WORK/pki/ca.crt
delivery:
  helo_name: client.floormta.test
  port: $SMTP_PORT
  connect_timeout: 5s
  reply_timeout: 10s
listen:
  smtp:
    - address: 127.0.0.1:$SUB_PORT
      mode: starttls
  http: 127.0.0.1:$HTTP_PORT
  tls:
    cert_file: $WORK/pki/valid.crt
    key_file: $WORK/pki/valid.key
api:
  tokens: ["$API_TOKEN"]
  local_token_file: $WORK/api.token
log:
  delivery: $WORK/log/delivery.log
  engine: $WORK/log/engine.log
EOF
    rm -rf "$WORK/spool" "$WORK/log" && mkdir -p "$WORK/log"
    "$BIN/floormta" run --config "$WORK/floormta.yaml" >"$WORK/run.out" 2>&1 &
    DAEMON_PID=$!
    METRICS_URL="http://127.0.0.1:$HTTP_PORT/metrics"
    for i in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1; then
            SCEN_PIDS+=("$DAEMON_PID")
            return 0
        fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    return 1
}

# scen_scrape FILE: the daemon's /metrics into FILE.
scen_scrape() { curl -sf -o "$1" "$METRICS_URL" || die "cannot scrape $METRICS_URL"; }

# scen_metric FILE NAME [LABELS]: the sum of NAME's samples in a scrape whose labels
# contain LABELS (e.g. 'verdict="refuse"'); 0 when there are none.
scen_metric() {
    awk -v name="$2" -v lab="${3:-}" '
        /^#/ { next }
        { key = $1; base = key; sub(/\{.*/, "", base) }
        base == name && (lab == "" || index(key, lab) > 0) { s += $2 }
        END { printf "%d\n", s }' "$1"
}

# ---- the load and the results ----------------------------------------------------------

# scen_load RUN ARGS...: floormta-load against the daemon (--metrics, --pid set here;
# the caller gives --stats-file), its report as $WORK/RUN.json and its text report on
# stdout (indented). Sets LOAD_RC (0 all delivered, 2 some missing after --wait).
scen_load() {
    local run=$1
    shift
    LOAD_RC=0
    "$BIN/floormta-load" --smtp "127.0.0.1:$SUB_PORT" --metrics "$METRICS_URL" \
        --pid "$DAEMON_PID" --quiet --json "$WORK/$run.json" "$@" \
        >"$WORK/$run.out" 2>"$WORK/$run.err" || LOAD_RC=$?
    sed 's/^/    /' "$WORK/$run.out"
    [ -s "$WORK/$run.json" ] || { cat "$WORK/$run.err" >&2; die "$run: floormta-load wrote no report"; }
}

# scen_result NAME PARAMS_JSON LOAD_JSON_FILE [EXTRA_JSON]: writes $RESULTS/NAME.json:
# {scenario, params, machine, spool, load (floormta-load's report), extra}.
scen_result() {
    local name=$1 params=$2 load=$3 extra=${4:-null}
    jq -n --arg name "$name" --argjson params "$params" --slurpfile load "$load" \
        --slurpfile machine "$RESULTS/machine.json" --argjson extra "$extra" \
        --argjson sync "$([ "$BENCH_SYNC_FS" = 1 ] && echo true || echo false)" \
        --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$(git -C "$SCEN_LIB_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        '{scenario: $name, date: $date, commit: $commit, params: $params,
          spool: {sync_fs: $sync, on: $machine[0].disk.filesystem},
          machine: $machine[0], load: $load[0], extra: $extra}' >"$RESULTS/$name.json"
}

# scen_table_header: the first lines of results.md.
scen_table_header() {
    cat <<'EOF'
| run | workers | messages | size | domains | spool sync | delivered msgs/s | inject->deliver p50 / p99 ms | engine CPU ms/msg | peak RSS MB | notes |
| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |
EOF
}

# scen_table_row NAME [NOTE]: appends the row of $RESULTS/NAME.json to results.md.
scen_table_row() {
    local name=$1 note=${2:-}
    jq -r --arg note "$note" '
        def n(x): if x == null then "-" else x end;
        def r(x; d): if x == null then "-" else ((x * pow(10; d) | round) / pow(10; d) | tostring) end;
        def sz(b): if b >= 1024 and (b % 1024) == 0 then "\(b / 1024) KB" else "\(b) B" end;
        .load as $l |
        "| \(.scenario) | \(n(.params.workers)) | \(n($l.injected)) | \(sz($l.config.size)) | \(n(.params.domains // $l.config.domains))"
        + " | \(if .spool.sync_fs then "syncfs" else "fdatasync" end)"
        + " | \(r($l.deliver_rate; 0)) | \(r($l.latency_ms.p50; 1)) / \(r($l.latency_ms.p99; 1))"
        + " | \(r($l.engine.cpu_ms_per_message; 3)) | \(r(($l.engine.peak_rss_kb // null) | if . == null then null else . / 1024 end; 1))"
        + " | \($note) |"' "$RESULTS/$name.json" >>"$RESULTS/results.md"
}
