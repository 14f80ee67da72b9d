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
# after the MTA's queue is empty again; then the ratios floormta/Postfix. Writes
# $OUT/compare_postfix.json and appends a table to $OUT/results.md.
#
# Usage (as root: Postfix's daemons drop to the postfix user):
#   bench/compare_postfix.sh [-n MESSAGES] [-r ROUNDS] [-d DOMAINS] [-c CONNS] [-s SIZE] [-o OUTDIR]
# Environment: FLOORMTA_BIN (default ./build), FLOORMTA_KEEP_WORK=1 keeps the scratch folder.
# Nothing outside the scratch folder and OUTDIR is written; /etc/postfix is only read.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOORMTA_BIN:-$ROOT/build}
N=2000
ROUNDS=2
DOMAINS=20
CONNS=8
SIZE=10240
OUT=$ROOT/bench/results

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-1}"; }
while getopts "n:r:d:c:s:o:h" opt; do
    case $opt in
    n) N=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    d) DOMAINS=$OPTARG ;;
    c) CONNS=$OPTARG ;;
    s) SIZE=$OPTARG ;;
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

WORK=$(mktemp -d /tmp/floormta-cmp.XXXXXX)
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
    if [ -n "${FLOORMTA_KEEP_WORK:-}" ]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
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
  connections_per_host: 10
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
smtp_tls_connection_reuse = yes
smtp_connection_reuse_count_limit = 100

# Concurrency: 10 connections per destination, like floormta's connections_per_host.
smtp_destination_concurrency_limit = 10
default_process_limit = 250
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
    local tag="$wl-$mta-$round"
    c0=$(cpu_$mta)
    "$BIN/floormta-load" --smtp "127.0.0.1:$port" --count "$N" --conns "$CONNS" \
        --domains "$domains" --suffix "$suffix" --size "$SIZE" --stats-file "$STATS" \
        --wait 120 --quiet --json "$WORK/$tag.json" >"$WORK/$tag.out" 2>"$WORK/$tag.err"
    rc=$?
    # What the MTA still does once the sink has everything (queue file removal, logging)
    # belongs to the message too: sample when its queue is empty.
    for i in $(seq 1 100); do queue_empty_$mta && break; sleep 0.1; done
    c1=$(cpu_$mta)
    [ "$rc" = 0 ] || log "floormta-load exit $rc for $tag: $(tail -3 "$WORK/$tag.err")"
    jq -c --arg mta "$mta" --arg wl "$wl" --argjson round "$round" --argjson rc "$rc" \
        --argjson ticks "$((c1 - c0))" --argjson hz "$HZ" '{
            workload: $wl, mta: $mta, round: $round, exit: $rc,
            injected, delivered, delivered_all,
            msgs_per_s: .deliver_rate, inject_per_s: .inject_rate, seconds: .deliver_seconds,
            cpu_s: ($ticks / $hz),
            cpu_ms_per_msg: (if (.delivered // 0) > 0 then $ticks / $hz * 1000 / .delivered else null end),
            latency_p50_ms: .latency_ms.p50, latency_p99_ms: .latency_ms.p99
        }' "$WORK/$tag.json" || echo "{\"workload\":\"$wl\",\"mta\":\"$mta\",\"round\":$round,\"exit\":$rc}"
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
mkdir -p "$OUT"
CPU_MODEL=$(sed -n 's/^model name[ \t]*: //p' /proc/cpuinfo | head -1)
jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg host "$(uname -r)" --arg cpu "$CPU_MODEL" \
    --argjson ncpu "$(nproc)" --arg postfix "$(/usr/sbin/postconf -d -h mail_version 2>/dev/null)" \
    --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)" \
    --argjson n "$N" --argjson rounds "$ROUNDS" --argjson domains "$DOMAINS" \
    --argjson conns "$CONNS" --arg size "$SIZE" --arg pfx_tls "$PFX_TLS" '
    def mean(f): (map(f) | add) / length;
    {
      scenario: "compare_postfix",
      description: "The same floormta-load injection through floormta and through Postfix, alternating; msgs/s = deliver rate (first injection to last message at the sink), CPU ms/msg = the MTA process tree utime+stime per delivered message; ratio = floormta / Postfix (throughput: >1 means floormta is faster; CPU: <1 means floormta uses less)",
      date: $date, commit: $commit, kernel: $host, cpu: $cpu, cpus: $ncpu, postfix_version: $postfix,
      config: {messages: $n, rounds: $rounds, many_domains: $domains, conns: $conns, size: $size},
      postfix_first_tls: $pfx_tls,
      runs: .,
      summary: (group_by(.workload) | map({
        workload: .[0].workload,
        floormta: (map(select(.mta == "floormta")) | {msgs_per_s: mean(.msgs_per_s), cpu_ms_per_msg: mean(.cpu_ms_per_msg)}),
        postfix: (map(select(.mta == "postfix")) | {msgs_per_s: mean(.msgs_per_s), cpu_ms_per_msg: mean(.cpu_ms_per_msg)})
      } | . + {
        throughput_ratio: (.floormta.msgs_per_s / .postfix.msgs_per_s),
        cpu_per_msg_ratio: (.floormta.cpu_ms_per_msg / .postfix.cpu_ms_per_msg)
      }) | sort_by(.workload) | reverse)
    }' "$ROWS" >"$OUT/compare_postfix.json" || die "cannot write $OUT/compare_postfix.json"

TABLE=$(jq -r '
    def f1: . * 10 | round / 10 | tostring;
    def f3: . * 1000 | round / 1000 | tostring;
    def f2: . * 100 | round / 100 | tostring;
    "### floormta vs Postfix \(.postfix_version) (bench/compare_postfix.sh, \(.date), \(.commit), \(.cpus) CPUs)",
    "",
    "\(.config.messages) messages x \(.config.rounds) rounds each, \(.config.size)-byte, \(.config.conns) injecting connections; many-domains = \(.config.many_domains) domains. Means over the rounds; ratio = floormta / Postfix.",
    "",
    "| scenario | floormta msgs/s | Postfix msgs/s | throughput ratio | floormta CPU ms/msg | Postfix CPU ms/msg | CPU/msg ratio |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    (.summary[] | "| compare_postfix \(.workload) | \(.floormta.msgs_per_s | f1) | \(.postfix.msgs_per_s | f1) | \(.throughput_ratio | f2) | \(.floormta.cpu_ms_per_msg | f3) | \(.postfix.cpu_ms_per_msg | f3) | \(.cpu_per_msg_ratio | f2) |")
    ' "$OUT/compare_postfix.json")
{ echo; echo "$TABLE"; } >>"$OUT/results.md"
echo "$TABLE"
echo
echo "runs:"
jq -r '.runs[] | "  \(.workload) \(.mta) #\(.round): \(.msgs_per_s * 10 | round / 10) msgs/s, \(.cpu_ms_per_msg * 1000 | round / 1000) ms CPU/msg, p50 \(.latency_p50_ms) ms, p99 \(.latency_p99_ms) ms, delivered \(.delivered)/\(.injected)"' "$OUT/compare_postfix.json"
echo "wrote $OUT/compare_postfix.json, appended to $OUT/results.md"
bad=$(jq '[.runs[] | select(.exit != 0 or .delivered_all != true)] | length' "$OUT/compare_postfix.json")
[ "$bad" = 0 ] || { echo "compare_postfix: $bad run(s) did not deliver everything"; exit 2; }
