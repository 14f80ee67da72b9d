#!/usr/bin/env bash
# bench/scenarios.sh — the load scenarios of issue 7, end to end: for each one a fresh
# test network in a scratch folder (test PKI, dnsmasq zone, floormta-sink receivers on
# 127.0.0.x, `floormta run` with its spool on disk), floormta-load injecting over SMTP
# and reading the sinks' stats, the daemon's /metrics and /proc; then
# bench/results/<run>.json (the loader's report, the scenario's parameters, the machine)
# and a row of bench/results/results.md. `make bench` runs it, then bench/plot.sh.
#
#   bench/scenarios.sh [--small] [--sync-fs] [SCENARIO...]
#
# Scenarios (all by default, in this order):
#   one-domain    every message to one domain whose MX meets the floor: the pool-reuse path
#   many-domains  1,000 domains, each its own MX host name, over 4 sink addresses: one
#                 new connection and full handshake per domain
#   mixed         the same 1,000 domains, 30% of them (300) on 30 MX hosts below the
#                 floor (TLS 1.0 only, self-signed, expired certificate: 10 hosts each);
#                 the good 70% are compared with many-domains, then 300 more domains on
#                 the same refused hosts must cost no new connection (capability cache)
#   large         100 KB messages
#   scaling       1 and 2 workers (4 when the machine has 4 cores; BENCH_WORKERS
#                 overrides) x 1K, 10K, 100K messages (BENCH_SCALING_COUNTS overrides)
#   postfix       bench/compare_postfix.sh, when present (see "The Postfix hook")
#
# --small (or BENCH_SCALE=small): a few hundred messages per run, for development.
# --sync-fs (or BENCH_SYNC_FS=1): the spool with `sync_fs: true` (one syncfs per commit
# round) instead of an fdatasync per file; the table's "spool sync" column says which.
# FLOORMTA_BIN: the build folder (default build/). BENCH_RESULTS: the results folder.
# BENCH_SCRATCH: where the scratch folders go (default /var/tmp, a disk).
# On ext4 without a journal (this project's VMs) every new inode scans the free inodes of
# its block group deleted in the last minutes, so removing one scenario's spool would slow
# the next one's new files (`mixed` keeps its refused messages queued: new inodes). So the
# finished scenarios' scratch folders are removed only when the whole run is over, and a
# run that starts within 6 minutes of the previous one's removal there waits that out
# first (BENCH_SETTLE=0: no wait). BENCH_KEEP_WORK=1 keeps the scratch folders.
# BENCH_LOOPFS=1 (root, no BENCH_SCRATCH): the scratch folders on a journaled ext4 made
# for the run in a loop-mounted image under /var/tmp (removed at the end), the kind of
# filesystem a production spool has; Postfix, which creates and removes a queue file per
# message, pays the scan above and floormta (recycled spool files) hardly does, so this
# is the fairer ground for the comparison. The loop device has costs of its own
# (one-domain's fdatasyncs become journal commits through it), so it is not the default.
# The machine line under the table names the filesystem used.
#
# The Postfix hook: if bench/compare_postfix.sh exists it runs last, as
#   bash bench/compare_postfix.sh
# with FLOORMTA_BIN, BENCH_RESULTS, BENCH_SCALE (full|small), BENCH_SYNC_FS, BENCH_SCRATCH and
# BENCH_LIB (this folder's scenario_lib.sh) exported. It writes its runs as
# $BENCH_RESULTS/<run>.json with at least {scenario, params, load} (load: a
# floormta-load report, or the same keys: injected, deliver_rate, latency_ms,
# engine, config.size) and appends their rows with scen_table_row (after sourcing
# $BENCH_LIB), so they join the table and the plots. Its failure is reported, not fatal.
# BENCH_POSTFIX_HOOK names another script in its place (the tests use a fake one).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOORMTA_BIN:-$ROOT/build}
BIN=$(cd "$BIN" && pwd)
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results}
BENCH_SCALE=${BENCH_SCALE:-full}

want=()
while [ $# -gt 0 ]; do
    case $1 in
    --small) BENCH_SCALE=small ;;
    --sync-fs) BENCH_SYNC_FS=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    -*) echo "scenarios: unknown option $1" >&2; exit 1 ;;
    *) want+=("$1") ;;
    esac
    shift
done
[ ${#want[@]} -gt 0 ] || want=(one-domain many-domains mixed large scaling postfix)
export BENCH_SYNC_FS=${BENCH_SYNC_FS:-0}

for tool in jq curl ss; do
    command -v "$tool" >/dev/null || { echo "scenarios: $tool is missing (scripts/deps.sh)" >&2; exit 1; }
done
for prog in floormta floormta-sink floormta-load floormta-testpki; do
    [ -x "$BIN/$prog" ] || { echo "scenarios: $BIN/$prog is missing (make build)" >&2; exit 1; }
done

mkdir -p "$RESULTS"

LOOP_IMG= LOOP_MNT=
if [ -z "${BENCH_SCRATCH:-}" ] && [ "${BENCH_LOOPFS:-0}" = 1 ] && [ "$(id -u)" = 0 ]; then
    LOOP_IMG=$(mktemp /var/tmp/floormta-bench-fs.XXXXXX.img)
    LOOP_MNT=$(mktemp -d /var/tmp/floormta-bench-fs.XXXXXX)
    if truncate -s 8G "$LOOP_IMG" && mkfs.ext4 -q -F "$LOOP_IMG" &&
        mount -o loop "$LOOP_IMG" "$LOOP_MNT" 2>/dev/null; then
        chmod 755 "$LOOP_MNT" # Postfix's daemons (bench/compare_postfix.sh) read it too
        export BENCH_SCRATCH=$LOOP_MNT
        echo "scenarios: scratch on a journaled ext4 loop mount ($LOOP_MNT)"
    else
        echo "scenarios: no loop mount here; the scratch folders stay in /var/tmp" >&2
        rmdir "$LOOP_MNT"
        rm -f "$LOOP_IMG"
        LOOP_IMG= LOOP_MNT=
    fi
fi
loop_cleanup() {
    [ -n "$LOOP_MNT" ] || return 0
    umount "$LOOP_MNT" 2>/dev/null && rmdir "$LOOP_MNT"
    rm -f "$LOOP_IMG"
}

# Finished scenarios' scratch folders wait in one trash folder until the run is over
# (scen_discard says why); the stamp file records when a run last removed them, so that
# the next run on a journal-less ext4 can wait until those inodes no longer count as
# recently deleted (6 minutes; BENCH_SETTLE=0 skips the wait).
SCRATCH_ROOT=${BENCH_SCRATCH:-/var/tmp}
BENCH_TRASH=$(mktemp -d "$SCRATCH_ROOT/floormta-bench-trash.XXXXXX")
export BENCH_TRASH
DELETED_STAMP=$RESULTS/.scratch-deleted-at
trash_cleanup() {
    [ -n "${BENCH_TRASH:-}" ] && [ -d "$BENCH_TRASH" ] || return 0
    if [ -n "$(ls -A "$BENCH_TRASH")" ]; then
        echo "$(date +%s) $(findmnt -no SOURCE --target "$SCRATCH_ROOT")" >"$DELETED_STAMP" 2>/dev/null || true
    fi
    rm -rf "$BENCH_TRASH"
}
settle_scratch() {
    [ "${BENCH_SETTLE:-1}" != 0 ] && [ -r "$DELETED_STAMP" ] || return 0
    local when dev age
    read -r when dev <"$DELETED_STAMP" || return 0
    [ "$dev" = "$(findmnt -no SOURCE --target "$SCRATCH_ROOT")" ] && scen_journal_less "$SCRATCH_ROOT" || return 0
    age=$(($(date +%s) - when))
    if [ "$age" -ge 0 ] && [ "$age" -lt 370 ]; then
        echo "scenarios: the last run removed its scratch folders ${age} s ago on this journal-less ext4 ($dev);" \
            "waiting $((370 - age)) s until their inodes stop slowing new files (BENCH_SETTLE=0: do not wait)"
        sleep $((370 - age))
    fi
}

. "$ROOT/bench/scenario_lib.sh"
trap 'scen_teardown; trash_cleanup; loop_cleanup' EXIT
settle_scratch

GOOD=(127.0.0.10 127.0.0.11 127.0.0.12 127.0.0.13) # valid wildcard certificate (*.floormta.test)
WAIT=300                                           # floormta-load --wait: generous, 100K runs queue up

# Scale: full for `make bench`, small for development.
if [ "$BENCH_SCALE" = small ]; then
    N_ONE=500 N_MANY=600 D_MANY=200 N_LARGE=100 D_LARGE=10
    SCALING_COUNTS=${BENCH_SCALING_COUNTS:-"100 400"}
else
    N_ONE=20000 N_MANY=10000 D_MANY=1000 N_LARGE=3000 D_LARGE=10
    SCALING_COUNTS=${BENCH_SCALING_COUNTS:-"1000 10000 100000"}
fi
if [ -n "${BENCH_WORKERS:-}" ]; then
    SCALING_WORKERS=$BENCH_WORKERS
elif [ "$(nproc)" -ge 4 ]; then
    SCALING_WORKERS="1 2 4"
else
    SCALING_WORKERS="1 2"
fi

# The connections the daemon opened and reused during a run, from two scrapes.
conn_extra() {
    local a=$1 b=$2
    jq -n --argjson o "$(($(scen_metric "$b" floormta_connections_opened_total) - $(scen_metric "$a" floormta_connections_opened_total)))" \
        --argjson r "$(($(scen_metric "$b" floormta_connections_reused_total) - $(scen_metric "$a" floormta_connections_reused_total)))" \
        '{connections_opened: $o, connections_reused: $r}'
}

# run_simple RUN WORKERS COUNT SIZE DOMAINS HOSTS CONNS DESCRIPTION: DOMAINS domains over
# HOSTS MX names (0: one per domain) on the good sink addresses, COUNT messages.
run_simple() {
    local run=$1 workers=$2 count=$3 size=$4 domains=$5 hosts=$6 conns=$7 desc=$8
    echo "== $run: $desc"
    scen_setup "$run"
    : >"$WORK/zone.conf"
    if [ "$hosts" = 1 ]; then
        scen_zone_domains load.floormta.test "$domains" mx.floormta.test 1 "${GOOD[0]}"
    else
        scen_zone_domains load.floormta.test "$domains" 'm%04d.floormta.test' "$hosts" "${GOOD[@]}"
    fi
    scen_start_dnsmasq
    local specs=() a
    for a in "${GOOD[@]}"; do specs+=("$a=wildcard"); done
    scen_start_sink good "${specs[@]}"
    scen_start_daemon "$workers"
    scen_scrape "$WORK/m0.prom"
    scen_load "$run" --count "$count" --conns "$conns" --domains "$domains" --size "$size" \
        --stats-file "$WORK/good.stats" --wait "$WAIT"
    scen_scrape "$WORK/m1.prom"
    local params extra
    params=$(jq -n --arg d "$desc" --argjson w "$workers" --argjson n "$count" --arg s "$size" \
        --argjson k "$domains" --argjson h "$hosts" --argjson c "$conns" \
        '{description: $d, workers: $w, count: $n, size: $s, domains: $k,
          mx_hosts: (if $h == 0 then $k else $h end), conns: $c, sink_addresses: 4}')
    extra=$(conn_extra "$WORK/m0.prom" "$WORK/m1.prom" | jq --argjson rc "$LOAD_RC" '. + {load_exit: $rc}')
    scen_result "$run" "$params" "$WORK/$run.json" "$extra"
    local note
    note=$(jq -r '"\(.extra.connections_opened) new conns, \(.extra.connections_reused) reused"
        + (if .load.delivered_all then "" else "; MISSING deliveries" end)' "$RESULTS/$run.json")
    scen_table_row "$run" "${RUN_NOTE:-}${RUN_NOTE:+; }$note"
    scen_teardown
}

scenario_one_domain() {
    run_simple one-domain 2 "$N_ONE" 10k 1 1 8 "every message to one domain (one MX host): the pool-reuse path"
}

scenario_many_domains() {
    run_simple many-domains 2 "$N_MANY" 10k "$D_MANY" 0 10 \
        "$D_MANY domains, each its own MX host name, over 4 sink addresses: a handshake per domain"
}

scenario_large() {
    run_simple large 2 "$N_LARGE" 100k "$D_LARGE" 0 8 "100 KB messages over $D_LARGE domains"
}

scenario_scaling() {
    local w n label
    for w in $SCALING_WORKERS; do
        for n in $SCALING_COUNTS; do
            label=$n
            [ $((n % 1000)) -eq 0 ] && label=$((n / 1000))k
            run_simple "scaling-w$w-$label" "$w" "$n" 10k 100 0 8 \
                "$w worker(s), $n messages over 100 domains"
        done
    done
}

# mixed: 70% of the domains (good.floormta.test) as in many-domains, 30%
# (weak.floormta.test) on 30 MX hosts below the floor, both loaded at once in
# proportion; then phase 2: 300 new domains (weak2.floormta.test) on the same 30 hosts.
scenario_mixed() {
    local run=mixed total=$N_MANY domains=$D_MANY
    local good_d=$((domains * 7 / 10)) bad_d=$((domains - domains * 7 / 10))
    local good_n=$((total * 7 / 10)) bad_n=$((total - total * 7 / 10))
    local bad_hosts=30 bad_n2=$((total / 10))
    echo "== mixed: $domains domains, $bad_d of them on $bad_hosts MX hosts below the floor"
    scen_setup "$run"
    : >"$WORK/zone.conf"
    scen_zone_domains good.floormta.test "$good_d" 'm%04d.floormta.test' 0 "${GOOD[@]}"
    # b00 -> .20 tls1.0-only, b01 -> .21 self-signed, b02 -> .22 expired, b03 -> .20 ...
    scen_zone_domains weak.floormta.test "$bad_d" 'b%02d.floormta.test' "$bad_hosts" \
        127.0.0.20 127.0.0.21 127.0.0.22
    scen_zone_domains weak2.floormta.test "$bad_d" 'b%02d.floormta.test' "$bad_hosts"
    scen_start_dnsmasq
    local specs=() a
    for a in "${GOOD[@]}"; do specs+=("$a=wildcard"); done
    scen_start_sink good "${specs[@]}"
    scen_start_sink bad 127.0.0.20=tls1.0-only 127.0.0.21=self-signed 127.0.0.22=expired
    scen_start_daemon 2
    scen_scrape "$WORK/m0.prom"

    # Phase 1: both loads at once, 7 + 3 connections (many-domains has 10).
    scen_load mixed-bad --count "$bad_n" --conns 3 --domains "$bad_d" --suffix weak.floormta.test \
        --wait 5 >"$WORK/mixed-bad.txt" &
    local bad_pid=$!
    scen_load "$run" --count "$good_n" --conns 7 --domains "$good_d" --suffix good.floormta.test \
        --stats-file "$WORK/good.stats" --wait "$WAIT"
    local good_rc=$LOAD_RC
    wait "$bad_pid" || die "mixed: the load on refused domains failed"
    cat "$WORK/mixed-bad.txt"
    # The refused messages are deferred (retry in 5 minutes): wait until every one has
    # had its attempt, i.e. the deferred gauge holds them all.
    local i deferred=0
    for i in $(seq 1 100); do
        scen_scrape "$WORK/m1.prom"
        deferred=$(scen_metric "$WORK/m1.prom" floormta_queue_messages 'state="deferred"')
        [ "$deferred" -ge "$bad_n" ] && break
        sleep 0.2
    done
    local conns1 refuse_entries
    sleep 0.5 # the sink's stats file is rewritten every 200 ms
    conns1=$(scen_sink_stat bad connections)

    # Phase 2: new domains on the same hosts: only the capability cache stands between
    # their messages and a new connection to a refused host.
    echo "   phase 2: $bad_n2 messages to $bad_d new domains on the same $bad_hosts refused hosts"
    scen_load mixed-bad2 --count "$bad_n2" --conns 3 --domains "$bad_d" --suffix weak2.floormta.test \
        --wait 5 >/dev/null
    for i in $(seq 1 100); do
        scen_scrape "$WORK/m2.prom"
        deferred=$(scen_metric "$WORK/m2.prom" floormta_queue_messages 'state="deferred"')
        [ "$deferred" -ge $((bad_n + bad_n2)) ] && break
        sleep 0.2
    done
    sleep 0.5 # the sink's stats file is rewritten every 200 ms
    local conns2
    conns2=$(scen_sink_stat bad connections)
    refuse_entries=$(scen_metric "$WORK/m2.prom" floormta_capcache_entries 'verdict="refuse"')
    local skipped
    skipped=$(jq -s '[.[] | select(.skipped_cached != null) | .skipped_cached] | add // 0' \
        "$WORK/log/delivery.log" 2>/dev/null || echo null)

    local params extra
    params=$(jq -n --argjson n "$total" --argjson k "$domains" --argjson gd "$good_d" --argjson bd "$bad_d" \
        --argjson gn "$good_n" --argjson bn "$bad_n" --argjson bh "$bad_hosts" --argjson bn2 "$bad_n2" \
        '{description: "\($k) domains, \($bd) of them on \($bh) MX hosts below the floor (TLS 1.0 only, self-signed, expired); good figures only",
          workers: 2, count: $n, size: "10k", domains: $k, good_domains: $gd, good_messages: $gn,
          refused_domains: $bd, refused_messages: $bn, refused_mx_hosts: $bh,
          phase2_messages: $bn2, conns: 10, sink_addresses: 7}')
    local many=null
    [ -s "$RESULTS/many-domains.json" ] && many=$(jq '.load' "$RESULTS/many-domains.json")
    extra=$(jq -n --slurpfile bad "$WORK/mixed-bad.json" --slurpfile bad2 "$WORK/mixed-bad2.json" \
        --slurpfile good "$WORK/$run.json" --argjson many "$many" \
        --argjson c1 "$conns1" --argjson c2 "$conns2" --argjson re "$refuse_entries" \
        --argjson dfr "$deferred" --argjson sk "$skipped" --argjson rc "$good_rc" \
        --argjson r0 "$(scen_metric "$WORK/m0.prom" floormta_deliveries_total 'result="refused"')" \
        --argjson r1 "$(scen_metric "$WORK/m1.prom" floormta_deliveries_total 'result="refused"')" \
        --argjson r2 "$(scen_metric "$WORK/m2.prom" floormta_deliveries_total 'result="refused"')" \
        '$good[0] as $g |
         {load_exit: $rc, refused_load: $bad[0], phase2_load: $bad2[0],
          refused_hosts_connections: $c1, phase2_new_connections: ($c2 - $c1),
          capcache_refuse_entries: $re, deferred_at_end: $dfr,
          refused_results: ($r1 - $r0), phase2_refused_results: ($r2 - $r1),
          hosts_skipped_on_cached_refusal: $sk,
          vs_many_domains: (if $many == null then null else
            {deliver_rate: ($g.deliver_rate / $many.deliver_rate),
             intake_rate: (($g.injected + $bad[0].injected) / ([$g.inject_seconds, $bad[0].inject_seconds] | max)
                           / $many.inject_rate),
             p50: ($g.latency_ms.p50 / $many.latency_ms.p50),
             p99: ($g.latency_ms.p99 / $many.latency_ms.p99)} end)}')
    scen_result "$run" "$params" "$WORK/$run.json" "$extra"
    local note
    note=$(jq -r '.extra as $e | def r(x): (x * 100 | round / 100 | tostring);
        "good domains only; \($e.refused_load.injected) refused-domain msgs: \($e.refused_hosts_connections) connections to the \(.params.refused_mx_hosts) refused hosts, "
        + "then \(.params.phase2_messages) msgs to new domains on them: \($e.phase2_new_connections) new connections"
        + (if $e.vs_many_domains == null then "" else
           "; vs many-domains: good msgs/s x\(r($e.vs_many_domains.deliver_rate)) (all msgs in x\(r($e.vs_many_domains.intake_rate)); 0.7 would be the same intake split 70/30), p50 x\(r($e.vs_many_domains.p50)), p99 x\(r($e.vs_many_domains.p99))" end)
        + (if .load.delivered_all then "" else "; MISSING deliveries" end)' "$RESULTS/$run.json")
    scen_table_row "$run" "$note"
    echo "   refused hosts: $conns1 connections in phase 1, $((conns2 - conns1)) new in phase 2;" \
        "capcache refuse entries $refuse_entries; hosts skipped on a cached refusal: $skipped"
    scen_teardown
}

run_postfix() {
    local hook=${BENCH_POSTFIX_HOOK:-$ROOT/bench/compare_postfix.sh}
    if [ ! -f "$hook" ]; then
        echo "== postfix: bench/compare_postfix.sh is not there: skipped"
        return 0
    fi
    echo "== postfix: bench/compare_postfix.sh"
    FLOORMTA_BIN=$BIN BENCH_RESULTS=$RESULTS BENCH_SCALE=$BENCH_SCALE BENCH_SYNC_FS=$BENCH_SYNC_FS \
        BENCH_SCRATCH=$BENCH_SCRATCH \
        BENCH_LIB=$ROOT/bench/scenario_lib.sh bash "$hook" ||
        echo "| postfix | | | | | | | | | | compare_postfix.sh failed (exit $?) |" >>"$RESULTS/results.md"
}

START=$(date +%s)
scen_machine_json "$BENCH_SCRATCH" >"$RESULTS/machine.json"
{
    echo "<!-- bench/scenarios.sh ($BENCH_SCALE scale), $(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) -->"
    scen_table_header
} >"$RESULTS/results.md"

for s in "${want[@]}"; do
    case $s in
    one-domain) scenario_one_domain ;;
    many-domains) scenario_many_domains ;;
    mixed) scenario_mixed ;;
    large) scenario_large ;;
    scaling) scenario_scaling ;;
    postfix) run_postfix ;;
    *) echo "scenarios: unknown scenario $s" >&2; exit 1 ;;
    esac
done

jq -r '"\nMachine: \(.cpu), \(.cores) cores, \(.memory_gib) GiB, \(.os), kernel \(.kernel); "
    + "spools on \(.disk.device) (\(.disk.model)), \(.disk.filesystem)\(if .disk.journal == false then " without a journal" else "" end) \(.disk.mount_options)"' \
    "$RESULTS/machine.json" >>"$RESULTS/results.md"
echo "Spool sync: $([ "$BENCH_SYNC_FS" = 1 ] && echo 'sync_fs: true (one syncfs per commit round)' || echo 'an fdatasync per file (the default)'). Total $(($(date +%s) - START)) s." >>"$RESULTS/results.md"
