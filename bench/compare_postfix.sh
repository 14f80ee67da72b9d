#!/usr/bin/env bash
# bench/compare_postfix.sh — floormta against Postfix (Debian's package) on the same load
# (issue 7): the same floormta-load injection, the same sinks, the same CA and the same
# MX names, run through floormta and through a private Postfix instance alternately
# (floormta, Postfix, floormta, Postfix, ...), for two workloads:
#   one-domain   every recipient in d0000.one.floormta.test (MX mx.floormta.test, 127.0.0.3)
#   many-domains DOMAINS domains dNNNN.many.floormta.test, each with its own MX name
#                mxNNNN.floormta.test on its own address 127.0.1.(NNNN+1)
# Both MTAs verify the sink's certificate (*.floormta.test, the test PKI's root) against
# the MX name of each destination and refuse below TLS 1.2; both keep at most 10
# connections per destination and reuse connections and TLS sessions.
#
# Reports msgs/s (floormta-load's deliver rate: from the first injection to the last
# message counted by the sink) and CPU milliseconds per message of the MTA (floormta:
# the daemon's utime+stime; Postfix: the master's utime+stime+cutime+cstime plus the
# utime+stime(+cutime+cstime) of its live children), sampled before the injection and
# after the MTA's queue is empty again; then the ratios floormta/Postfix.
#
# Writes to OUTDIR (BENCH_RESULTS, default bench/results):
#   compare_postfix.json                  every run, the means and the ratios
#   compare_postfix-WORKLOAD-MTA-ROUND.json  one per run, {scenario, params, spool, load}
#                                         like bench/scenarios.sh's (load = floormta-load's
#                                         report, its engine CPU replaced by the above)
#   results.md                            a row per run in bench/scenarios.sh's table
#                                         (its header first if the file is new), then a
#                                         "floormta vs Postfix" table of means and ratios
#
# Usage (as root: Postfix's daemons drop to the postfix user):
#   bench/compare_postfix.sh [-n MESSAGES] [-r ROUNDS] [-d DOMAINS] [-c CONNS] [-s SIZE]
#                            [-p PER_DESTINATION] [-o OUTDIR]
# defaults: 3000 messages (300 with BENCH_SCALE=small), 2 rounds, 20 domains for
# many-domains, 8 injecting connections, 10240-byte messages, 10 delivery connections
# per destination (floormta's limits.connections_per_host, Postfix's
# smtp_destination_concurrency_limit).
# Environment (bench/scenarios.sh's hook sets them): FLOORMTA_BIN (default build/),
# BENCH_RESULTS, BENCH_SCALE (full|small), BENCH_SYNC_FS (1: floormta's spool with
# sync_fs; Postfix has no such mode), BENCH_LIB (scenario_lib.sh: its scen_table_row
# writes the rows), BENCH_SCRATCH (parent of the scratch folder, default /var/tmp),
# FLOORMTA_KEEP_WORK=1 keeps the scratch folder. POSTFIX_TLS_REUSE=no: Postfix without
# smtp_tls_connection_reuse (a new TLS connection per delivery, resumed sessions only).
# Nothing outside the scratch folder and OUTDIR is written; /etc/postfix is only read.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOORMTA_BIN:-$ROOT/build}
BENCH_SCALE=${BENCH_SCALE:-full}
BENCH_SYNC_FS=${BENCH_SYNC_FS:-0}
PFX_TLS_REUSE=${POSTFIX_TLS_REUSE:-yes}
N=3000
[ "$BENCH_SCALE" = small ] && N=300
ROUNDS=2
DOMAINS=20
CONNS=8
SIZE=10240
PER_DEST=10
OUT=${BENCH_RESULTS:-$ROOT/bench/results}

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-1}"; }
while getopts "n:r:d:c:s:p:o:h" opt; do
    case $opt in
    n) N=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    d) DOMAINS=$OPTARG ;;
    c) CONNS=$OPTARG ;;
    s) SIZE=$OPTARG ;;
    p) PER_DEST=$OPTARG ;;
    o) OUT=$OPTARG ;;
    h) usage 0 ;;
    *) usage 1 ;;
    esac
done
[ "$DOMAINS" -ge 1 ] && [ "$DOMAINS" -le 250 ] || { echo "compare_postfix: -d takes 1..250"; exit 1; }

die() { echo "compare_postfix: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (a private Postfix instance runs its daemons as postfix)"
for tool in jq curl ss /usr/sbin/postfix /usr/sbin/dnsmasq; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
for b in floormta floormta-sink floormta-load floormta-testpki; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build first, or set FLOORMTA_BIN)"
done
id postfix >/dev/null 2>&1 && getent group postdrop >/dev/null || die "no postfix user / postdrop group"

WORK=$(mktemp -d "${BENCH_SCRATCH:-/var/tmp}/floormta-cmp.XXXXXX")
chmod 755 "$WORK" # Postfix's daemons (user postfix) reach their folders through it
PIDS=()
PFX=$WORK/postfix
PFX_STARTED=0

cleanup() {
    [ "$PFX_STARTED" = 1 ] && /usr/sbin/postfix -c "$PFX/conf" stop >/dev/null 2>&1
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    # postfix stop returns at once; the master exits within a second or so.
    if [ "$PFX_STARTED" = 1 ] && [ -n "${PFX_MASTER:-}" ]; then
        for _ in $(seq 1 50); do kill -0 "$PFX_MASTER" 2>/dev/null || break; sleep 0.1; done
    fi
    # Under bench/scenarios.sh the folder joins the run's trash (removed at its end: on a
    # journal-less ext4 a removal slows the next file creations; scen_discard).
    if [ -n "${FLOORMTA_KEEP_WORK:-}" ]; then
        echo "# kept $WORK"
    elif [ -n "${BENCH_TRASH:-}" ] && [ -d "$BENCH_TRASH" ] && mv "$WORK" "$BENCH_TRASH/"; then
        :
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ! ss -ltn "sport = :$p" | grep -q LISTEN && { echo "$p"; return; }
    done
}

# ---- the test network: PKI, DNS, sinks -------------------------------------------------------
"$BIN/floormta-testpki" "$WORK/pki" mx.floormta.test >/dev/null || die "cannot make the PKI"

many_addr() { echo "127.0.1.$(($1 + 1))"; }
many_mx() { printf 'mx%04d.floormta.test' "$1"; }
{
    echo "local-ttl=60"
    echo "mx-host=d0000.one.floormta.test,mx.floormta.test,10"
    echo "host-record=mx.floormta.test,127.0.0.3"
    for i in $(seq 0 $((DOMAINS - 1))); do
        printf 'mx-host=d%04d.many.floormta.test,%s,10\n' "$i" "$(many_mx "$i")"
        printf 'host-record=%s,%s\n' "$(many_mx "$i")" "$(many_addr "$i")"
    done
} >"$WORK/zone.conf"

for attempt in $(seq 1 10); do
    DNS_PORT=$((20000 + RANDOM % 40000))
    : >"$WORK/dnsmasq.log"
    /usr/sbin/dnsmasq --keep-in-foreground --conf-file="$WORK/zone.conf" --no-resolv --no-hosts \
        --no-poll --bind-interfaces --listen-address=127.0.0.1 --port="$DNS_PORT" \
        --pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log" \
        --local=/test/ 2>"$WORK/dnsmasq.err" &
    pid=$!
    for i in $(seq 1 100); do
        grep -q 'started, version' "$WORK/dnsmasq.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null && grep -q 'started, version' "$WORK/dnsmasq.log"; then
        PIDS+=("$pid")
        break
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    DNS_PORT=
done
[ -n "$DNS_PORT" ] || die "dnsmasq did not start: $(cat "$WORK/dnsmasq.err")"

# One sink process, one listener per MX address, all on one port (floormta's delivery.port).
STATS=$WORK/sink.stats
for attempt in $(seq 1 10); do
    SMTP_PORT=$(free_port)
    args=(--listen "127.0.0.3:$SMTP_PORT=wildcard")
    for i in $(seq 0 $((DOMAINS - 1))); do args+=(--listen "$(many_addr "$i"):$SMTP_PORT=wildcard"); done
    rm -f "$WORK/sink.ready"
    "$BIN/floormta-sink" --pki "$WORK/pki" --name mx.floormta.test "${args[@]}" --log-level error \
        --stats-file "$STATS" --ready-file "$WORK/sink.ready" >"$WORK/sink.out" 2>"$WORK/sink.err" &
    pid=$!
    for i in $(seq 1 100); do
        [ -s "$WORK/sink.ready" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$WORK/sink.ready" ] && { PIDS+=("$pid"); break; }
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
done
[ -s "$WORK/sink.ready" ] || die "the sink did not start: $(cat "$WORK/sink.err")"

# ---- floormta ------------------------------------------------------------------------------------
FMTA_PORT=$(free_port)
HTTP_PORT=$(free_port)
cat >"$WORK/floormta.yaml" <<EOF
workers: 2
spool:
  dir: $WORK/spool
  sync_fs: $([ "$BENCH_SYNC_FS" = 1 ] && echo true || echo false)
dns:
  servers: ["127.0.0.1:$DNS_PORT"]
tls:
  floor: "1.2"
  ca_file: $WORK/pki/ca.crt
delivery:
  helo_name: client.floormta.test
  port: $SMTP_PORT
  connect_timeout: 5s
  reply_timeout: 30s
limits:
  connections_per_host: $PER_DEST
listen:
  smtp:
    - address: 127.0.0.1:$FMTA_PORT
      mode: starttls
  http: 127.0.0.1:$HTTP_PORT
api:
  tokens: ["compare-token-0123456789abcdef"]
  local_token_file: ""
log:
  delivery: $WORK/floormta-log/delivery.log
  engine: $WORK/floormta-log/engine.log
EOF
"$BIN/floormta" run --config "$WORK/floormta.yaml" >"$WORK/floormta.out" 2>&1 &
FMTA_PID=$!
PIDS+=("$FMTA_PID")
for i in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$FMTA_PID" 2>/dev/null || break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 ||
    die "floormta did not start: $(cat "$WORK/floormta.out" "$WORK/floormta-log/engine.log" 2>/dev/null)"

# ---- a private Postfix instance ------------------------------------------------------------------
PFX_PORT=$(free_port)
mkdir -p "$PFX/conf" "$PFX/queue" "$PFX/data"
cp /etc/postfix/dynamicmaps.cf "$PFX/conf/"
[ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$PFX/conf/"
# master.cf: Debian's, with no chroot (column 5), smtpd on a loopback port only, tlsproxy
# enabled (smtp_tls_connection_reuse needs it).
awk -v port="$PFX_PORT" '
    /^smtp[ \t]+inet[ \t]/ { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
    /^#tlsproxy[ \t]/ { sub(/^#/, "") }
    /^[a-zA-Z0-9]/ && NF >= 8 { $5 = "n" }
    { print }' /etc/postfix/master.cf >"$PFX/conf/master.cf"

# Routing: Postfix resolves through /etc/resolv.conf (port 53), so dnsmasq's zone is
# repeated as a transport table (the same addresses, no DNS lookup) and the MX name each
# destination must present as a TLS policy table (the same name floormta verifies).
{
    echo "d0000.one.floormta.test smtp:[127.0.0.3]:$SMTP_PORT"
    for i in $(seq 0 $((DOMAINS - 1))); do
        printf 'd%04d.many.floormta.test smtp:[%s]:%s\n' "$i" "$(many_addr "$i")" "$SMTP_PORT"
    done
} >"$PFX/conf/transport"
{
    echo "[127.0.0.3]:$SMTP_PORT verify match=mx.floormta.test"
    for i in $(seq 0 $((DOMAINS - 1))); do
        printf '[%s]:%s verify match=%s\n' "$(many_addr "$i")" "$SMTP_PORT" "$(many_mx "$i")"
    done
} >"$PFX/conf/tls_policy"

# Enough smtp(8) processes for every destination at its limit (and smtpd, cleanup, tlsproxy).
PROC_LIMIT=$((PER_DEST * (DOMAINS + 1) + 50))
[ "$PROC_LIMIT" -ge 250 ] || PROC_LIMIT=250
cat >"$PFX/conf/main.cf" <<EOF
# A private instance for bench/compare_postfix.sh (not the system's /etc/postfix).
compatibility_level = 3.6
config_directory = $PFX/conf
queue_directory = $PFX/queue
data_directory = $PFX/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = client.floormta.test
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file = $PFX/maillog
maillog_file_prefixes = $PFX
biff = no

# Routing (instead of DNS MX lookups) and the name each destination must prove.
transport_maps = texthash:$PFX/conf/transport
smtp_tls_policy_maps = texthash:$PFX/conf/tls_policy
smtp_helo_name = client.floormta.test

# TLS: verified, at least TLS 1.2, the test PKI's root only, sessions cached.
smtp_tls_security_level = verify
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_protocols = >=TLSv1.2
smtp_tls_CAfile = $WORK/pki/ca.crt
smtp_tls_session_cache_database = btree:$PFX/data/smtp_scache
smtp_tls_loglevel = 1

# Connection reuse (floormta: messages_per_connection 100, idle_timeout 10s); with TLS
# Postfix reuses connections only through tlsproxy.
smtp_connection_cache_on_demand = yes
smtp_tls_connection_reuse = $PFX_TLS_REUSE
smtp_connection_reuse_count_limit = 100

# Concurrency: connections per destination, like floormta's connections_per_host.
smtp_destination_concurrency_limit = $PER_DEST
default_process_limit = $PROC_LIMIT
EOF
chown postfix "$PFX/data"
chmod 644 "$PFX/conf/"*

/usr/sbin/postfix -c "$PFX/conf" check >"$WORK/postfix-check.out" 2>&1 ||
    die "postfix check failed: $(cat "$WORK/postfix-check.out")"
PFX_STARTED=1
/usr/sbin/postfix -c "$PFX/conf" start >"$WORK/postfix-start.out" 2>&1 ||
    die "postfix did not start: $(cat "$WORK/postfix-start.out" "$PFX/maillog" 2>/dev/null)"
PFX_MASTER=
for i in $(seq 1 100); do
    PFX_MASTER=$(cat "$PFX/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
    [ -n "$PFX_MASTER" ] && ss -ltn "sport = :$PFX_PORT" | grep -q LISTEN && break
    sleep 0.1
done
[ -n "$PFX_MASTER" ] && ss -ltn "sport = :$PFX_PORT" | grep -q LISTEN ||
    die "postfix is not listening on 127.0.0.1:$PFX_PORT: $(cat "$PFX/maillog" 2>/dev/null)"

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
PFX_VERSION=$(/usr/sbin/postconf -d -h mail_version 2>/dev/null)
mkdir -p "$OUT" || die "cannot make $OUT"

# ---- measurement ---------------------------------------------------------------------------------
HZ=$(getconf CLK_TCK)

# stat_fields PID: "utime stime cutime cstime" in ticks (fields 14-17 of /proc/PID/stat;
# the command name may hold spaces, so count from its closing parenthesis).
stat_fields() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0 0 0"; return; }
    s=${s##*) }
    set -- $s
    echo "${12} ${13} ${14} ${15}"
}

# cpu_floormta: the daemon's ticks (threads included; it has no children).
cpu_floormta() {
    local f
    f=($(stat_fields "$FMTA_PID"))
    echo $((f[0] + f[1] + f[2] + f[3]))
}

# cpu_postfix: the master's own and reaped children's ticks, plus those of the children
# alive now (qmgr, smtpd, cleanup, smtp, tlsproxy, tlsmgr, ... all children of master).
cpu_postfix() {
    local f total c
    f=($(stat_fields "$PFX_MASTER"))
    total=$((f[0] + f[1] + f[2] + f[3]))
    for c in $(ps -o pid= --ppid "$PFX_MASTER"); do
        f=($(stat_fields "$c"))
        total=$((total + f[0] + f[1] + f[2] + f[3]))
    done
    echo "$total"
}

# queue_empty_floormta / queue_empty_postfix: nothing left to deliver.
queue_empty_floormta() {
    [ "$(find "$WORK/spool/msg" -type f ! -name '*.st' 2>/dev/null | wc -l)" = 0 ]
}
queue_empty_postfix() {
    [ "$(find "$PFX/queue/maildrop" "$PFX/queue/incoming" "$PFX/queue/active" \
        "$PFX/queue/deferred" -type f 2>/dev/null | wc -l)" = 0 ]
}

# run_one MTA WORKLOAD ROUND: one floormta-load injection; prints a JSON row.
run_one() {
    local mta=$1 wl=$2 round=$3 port domains suffix c0 c1 rc i
    case $mta in floormta) port=$FMTA_PORT ;; postfix) port=$PFX_PORT ;; esac
    case $wl in
    one-domain) domains=1 suffix=one.floormta.test ;;
    many-domains) domains=$DOMAINS suffix=many.floormta.test ;;
    esac
    local tag="$wl-$mta-$round" pid=()
    # floormta's peak RSS comes from floormta-load (--pid); Postfix has no single process.
    [ "$mta" = floormta ] && pid=(--pid "$FMTA_PID")
    local load0
    load0=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_$mta)
    "$BIN/floormta-load" --smtp "127.0.0.1:$port" --count "$N" --conns "$CONNS" \
        --domains "$domains" --suffix "$suffix" --size "$SIZE" --stats-file "$STATS" "${pid[@]}" \
        --wait 120 --quiet --json "$WORK/$tag.json" >"$WORK/$tag.out" 2>"$WORK/$tag.err"
    rc=$?
    # What the MTA still does once the sink has everything (queue file removal, logging)
    # belongs to the message too: sample when its queue is empty.
    for i in $(seq 1 100); do queue_empty_$mta && break; sleep 0.1; done
    c1=$(cpu_$mta)
    [ "$rc" = 0 ] || log "floormta-load exit $rc for $tag: $(tail -3 "$WORK/$tag.err")"
    jq -c --arg mta "$mta" --arg wl "$wl" --argjson round "$round" --argjson rc "$rc" \
        --argjson ticks "$((c1 - c0))" --argjson hz "$HZ" --argjson load0 "$load0" '{
            workload: $wl, mta: $mta, round: $round, exit: $rc, loadavg_1m_before: $load0,
            injected, delivered, delivered_all,
            msgs_per_s: .deliver_rate, inject_per_s: .inject_rate, seconds: .deliver_seconds,
            cpu_s: ($ticks / $hz),
            cpu_ms_per_msg: (if (.delivered // 0) > 0 then $ticks / $hz * 1000 / .delivered else null end),
            latency_p50_ms: .latency_ms.p50, latency_p99_ms: .latency_ms.p99
        }' "$WORK/$tag.json" || echo "{\"workload\":\"$wl\",\"mta\":\"$mta\",\"round\":$round,\"exit\":$rc}"
    [ "$round" = 0 ] && return
    # The run in bench/scenarios.sh's shape: its table row reads this file.
    jq --arg name "compare_postfix-$tag" --arg mta "$mta" --arg wl "$wl" --argjson round "$round" \
        --argjson ticks "$((c1 - c0))" --argjson hz "$HZ" --argjson domains "$domains" \
        --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT" \
        --argjson sync "$([ "$BENCH_SYNC_FS" = 1 ] && [ "$mta" = floormta ] && echo true || echo false)" \
        --arg pfxver "$PFX_VERSION" '
        {scenario: $name, date: $date, commit: $commit,
         params: {description: (if $mta == "floormta" then "floormta, 2 workers" else "Postfix \($pfxver) (private instance)" end),
                  mta: $mta, workload: $wl, round: $round,
                  workers: (if $mta == "floormta" then 2 else null end), domains: $domains},
         spool: {sync_fs: $sync},
         load: (. + {engine: {
             what: (if $mta == "floormta" then "the daemon: utime+stime"
                    else "the Postfix master and its children: utime+stime+cutime+cstime" end),
             cpu_seconds: ($ticks / $hz),
             cpu_ms_per_message: (if (.delivered // 0) > 0 then $ticks / $hz * 1000 / .delivered else null end),
             peak_rss_kb: (.engine.peak_rss_kb // null)}})}' \
        "$WORK/$tag.json" >"$OUT/compare_postfix-$tag.json"
}

# ---- check the TLS of each MTA once before measuring --------------------------------------------
log "warm-up: a few messages through each MTA, and each one's TLS checked"
for mta in floormta postfix; do
    for wl in one-domain many-domains; do
        N_SAVE=$N
        N=$((DOMAINS * 2))
        run_one "$mta" "$wl" 0 >"$WORK/warmup-$mta-$wl.row"
        N=$N_SAVE
        jq -e '.delivered_all == true' "$WORK/warmup-$mta-$wl.row" >/dev/null ||
            die "warm-up through $mta ($wl) did not deliver everything: $(cat "$WORK/warmup-$mta-$wl.row") $(tail -5 "$PFX/maillog")"
    done
done
PFX_TLS=$(grep -m1 'Verified TLS connection established' "$PFX/maillog")
echo "$PFX_TLS" | grep -q 'TLSv1.3' || die "Postfix's first delivery is not verified TLS 1.3: $PFX_TLS"
log "postfix: ${PFX_TLS#*]: }"
FMTA_TLS=$(head -1 "$WORK/floormta-log/delivery.log" | jq -r '"\(.result) to \(.mx) \(.address): \(.tls.version) \(.tls.cipher), verdict \(.verdict), certificate \(.tls.subject)"')
echo "$FMTA_TLS" | grep -q '^delivered .*TLSv1.3 .*verdict pass' || die "floormta's first delivery is not TLS 1.3 with a passing verdict: $FMTA_TLS"
log "floormta: $FMTA_TLS"

# ---- the measured runs: alternating ---------------------------------------------------------------
ROWS=$WORK/rows.jsonl
: >"$ROWS"
for wl in one-domain many-domains; do
    for round in $(seq 1 "$ROUNDS"); do
        for mta in floormta postfix; do
            row=$(run_one "$mta" "$wl" "$round")
            echo "$row" >>"$ROWS"
            log "$(echo "$row" | jq -r '"\(.workload) \(.mta) #\(.round): \(.delivered)/\(.injected) delivered, \(.msgs_per_s | floor) msgs/s, \(.cpu_ms_per_msg * 1000 | round / 1000) ms CPU/msg"')"
        done
    done
done

# ---- the report ------------------------------------------------------------------------------------
# table_header / table_row NAME NOTE: bench/scenarios.sh's table (its scen_table_row when
# BENCH_LIB names scenario_lib.sh; the same format otherwise).
table_header() {
    cat <<'EOF'
| run | workers | messages | size | domains | spool sync | delivered msgs/s | inject->deliver p50 / p99 ms | engine CPU ms/msg | peak RSS MB | notes |
| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |
EOF
}
table_row() {
    if [ -n "${BENCH_LIB:-}" ] && [ -r "$BENCH_LIB" ]; then
        # A subshell: the library sets its own EXIT trap and variables.
        (BIN=$BIN RESULTS=$OUT && . "$BENCH_LIB" && scen_table_row "$1" "$2") && return
    fi
    jq -r --arg note "$2" '
        def n(x): if x == null then "-" else x end;
        def r(x; d): if x == null then "-" else ((x * pow(10; d) | round) / pow(10; d) | tostring) end;
        def sz(b): if b >= 1024 and (b % 1024) == 0 then "\(b / 1024) KB" else "\(b) B" end;
        .load as $l |
        "| \(.scenario) | \(n(.params.workers)) | \(n($l.injected)) | \(sz($l.config.size)) | \(n(.params.domains // $l.config.domains))"
        + " | \(if .spool.sync_fs then "syncfs" else "fdatasync" end)"
        + " | \(r($l.deliver_rate; 0)) | \(r($l.latency_ms.p50; 1)) / \(r($l.latency_ms.p99; 1))"
        + " | \(r($l.engine.cpu_ms_per_message; 3)) | \(r(($l.engine.peak_rss_kb // null) | if . == null then null else . / 1024 end; 1))"
        + " | \($note) |"' "$OUT/$1.json" >>"$OUT/results.md"
}

CPU_MODEL=$(sed -n 's/^model name[ \t]*: //p' /proc/cpuinfo | head -1)
jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg kernel "$(uname -r)" --arg cpu "$CPU_MODEL" \
    --argjson ncpu "$(nproc)" --arg postfix "$PFX_VERSION" --arg commit "$COMMIT" \
    --argjson n "$N" --argjson rounds "$ROUNDS" --argjson domains "$DOMAINS" \
    --argjson conns "$CONNS" --arg size "$SIZE" --arg pfx_tls "$PFX_TLS" --arg fmta_tls "$FMTA_TLS" \
    --argjson sync "$([ "$BENCH_SYNC_FS" = 1 ] && echo true || echo false)" --arg reuse "$PFX_TLS_REUSE" --argjson perdest "$PER_DEST" '
    def mean(f): (map(f) | add) / length;
    {
      scenario: "compare_postfix",
      description: "The same floormta-load injection through floormta and through Postfix, alternating. msgs_per_s: floormta-load deliver rate (first injection to the last message counted by the sink); cpu_ms_per_msg: the MTA process tree utime+stime per delivered message (Postfix: master + reaped and live children), from before the injection until its queue is empty; ratio = floormta / Postfix (throughput > 1: floormta faster; CPU < 1: floormta uses less).",
      date: $date, commit: $commit, kernel: $kernel, cpu: $cpu, cpus: $ncpu, postfix_version: $postfix,
      config: {messages: $n, rounds: $rounds, many_domains: $domains, conns: $conns, size: $size,
               floormta_workers: 2, floormta_spool_sync_fs: $sync, connections_per_destination: $perdest,
               postfix_tls_connection_reuse: $reuse},
      first_tls: {floormta: $fmta_tls, postfix: $pfx_tls},
      runs: .,
      summary: (group_by(.workload) | map({
        workload: .[0].workload,
        floormta: (map(select(.mta == "floormta")) | {msgs_per_s: mean(.msgs_per_s), cpu_ms_per_msg: mean(.cpu_ms_per_msg), latency_p50_ms: mean(.latency_p50_ms)}),
        postfix: (map(select(.mta == "postfix")) | {msgs_per_s: mean(.msgs_per_s), cpu_ms_per_msg: mean(.cpu_ms_per_msg), latency_p50_ms: mean(.latency_p50_ms)})
      } | . + {
        throughput_ratio: (.floormta.msgs_per_s / .postfix.msgs_per_s),
        cpu_per_msg_ratio: (.floormta.cpu_ms_per_msg / .postfix.cpu_ms_per_msg)
      }) | sort_by(.workload) | reverse)
    }' "$ROWS" >"$OUT/compare_postfix.json" || die "cannot write $OUT/compare_postfix.json"

[ -s "$OUT/results.md" ] || table_header >"$OUT/results.md"
while read -r row; do
    wl=$(jq -r .workload <<<"$row")
    mta=$(jq -r .mta <<<"$row")
    round=$(jq -r .round <<<"$row")
    if [ "$mta" = floormta ]; then
        note="floormta vs Postfix, $wl, round $round (the same load as the next row)"
    else
        note=$(jq -r --arg wl "$wl" --argjson round "$round" --arg v "$PFX_VERSION" '
            def r(x): if x == null then "-" else (x * 100 | round / 100 | tostring) end;
            (.runs | map(select(.workload == $wl and .round == $round)) | INDEX(.mta)) as $p
            | "Postfix \($v), \($wl), round \($round); floormta/Postfix: msgs/s x\(r($p.floormta.msgs_per_s / $p.postfix.msgs_per_s)), CPU/msg x\(r($p.floormta.cpu_ms_per_msg / $p.postfix.cpu_ms_per_msg))"
            + (if $p.postfix.delivered_all and $p.floormta.delivered_all then "" else "; MISSING deliveries" end)' \
            "$OUT/compare_postfix.json")
    fi
    table_row "compare_postfix-$wl-$mta-$round" "$note"
done <"$ROWS"

TABLE=$(jq -r '
    def r(x; d): if x == null then "-" else ((x * pow(10; d) | round) / pow(10; d) | tostring) end;
    "",
    "#### floormta vs Postfix \(.postfix_version): means of \(.config.rounds) alternating rounds (bench/compare_postfix.sh, \(.date), \(.commit), \(.cpus) CPUs)",
    "",
    "\(.config.messages) messages of \(.config.size) bytes per run over \(.config.conns) SMTP connections; one-domain = 1 domain, many-domains = \(.config.many_domains) domains each with its own MX name and address; \(.config.connections_per_destination) connections per destination, verified TLS >= 1.2 for both; Postfix smtp_tls_connection_reuse = \(.config.postfix_tls_connection_reuse). Ratio = floormta / Postfix.",
    "",
    "| workload | floormta msgs/s | Postfix msgs/s | msgs/s ratio | floormta CPU ms/msg | Postfix CPU ms/msg | CPU/msg ratio |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    (.summary[] | "| \(.workload) | \(r(.floormta.msgs_per_s; 0)) | \(r(.postfix.msgs_per_s; 0)) | \(r(.throughput_ratio; 2)) | \(r(.floormta.cpu_ms_per_msg; 3)) | \(r(.postfix.cpu_ms_per_msg; 3)) | \(r(.cpu_per_msg_ratio; 2)) |"),
    ""' "$OUT/compare_postfix.json")
echo "$TABLE" >>"$OUT/results.md"
echo "$TABLE"
echo "runs:"
jq -r 'def r(x; d): if x == null then "-" else ((x * pow(10; d) | round) / pow(10; d) | tostring) end;
    .runs[] | "  \(.workload) \(.mta) #\(.round): \(r(.msgs_per_s; 1)) msgs/s, \(r(.cpu_ms_per_msg; 3)) ms CPU/msg, inject->deliver p50 \(r(.latency_p50_ms; 1)) ms p99 \(r(.latency_p99_ms; 1)) ms, delivered \(.delivered)/\(.injected)"' \
    "$OUT/compare_postfix.json"
echo "wrote $OUT/compare_postfix.json and compare_postfix-*.json, appended to $OUT/results.md"
bad=$(jq '[.runs[] | select(.exit != 0 or .delivered_all != true)] | length' "$OUT/compare_postfix.json")
[ "$bad" = 0 ] || { echo "compare_postfix: $bad run(s) did not deliver everything"; exit 2; }
