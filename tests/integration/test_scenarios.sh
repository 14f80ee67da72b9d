#!/usr/bin/env bash
# tests/integration/test_scenarios.sh — bench/scenarios.sh at its small scale: the
# one-domain and mixed scenarios end to end (their JSON, the table's rows, the
# capability cache's "no new connection to a refused host"), the Postfix hook's
# contract with a fake hook, and bench/plot.sh's PNGs when gnuplot is there.
. "$(dirname "$0")/lib.sh"

SRC=${FLOORMTA_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
RES=$WORK/results

# A stand-in for bench/compare_postfix.sh: one row shaped like the real runs'.
cat >"$WORK/fake_postfix.sh" <<'HOOK'
set -euo pipefail
. "$BENCH_LIB" # BIN and RESULTS from FLOORMTA_BIN and BENCH_RESULTS
jq '.scenario = "postfix-fake"' "$BENCH_RESULTS/one-domain.json" >"$BENCH_RESULTS/postfix-fake.json"
scen_table_row postfix-fake "fake hook, scale $BENCH_SCALE"
HOOK

BENCH_RESULTS=$RES BENCH_SCRATCH=$WORK BENCH_POSTFIX_HOOK=$WORK/fake_postfix.sh \
    bash "$SRC/bench/scenarios.sh" --small one-domain mixed postfix >"$WORK/scen.out" 2>&1
rc=$?
sed 's/^/# /' "$WORK/scen.out"
check "scenarios.sh --small one-domain mixed postfix: exit 0" [ "$rc" = 0 ]

j() { jq -e "$1" "$RES/$2.json" >/dev/null 2>&1; }
check "one-domain: 500 injected and all delivered" \
    j '.load.injected == 500 and .load.delivered_all and ([.load.floor_refusals[]] | add // 0) == 0' one-domain
check "one-domain: parameters, spool mode and machine recorded" \
    j '.params.domains == 1 and .spool.sync_fs == false and .machine.cores > 0 and (.machine.disk.filesystem | length) > 0' one-domain
check "mixed: the good domains' 420 messages all delivered" \
    j '.load.injected == 420 and .load.delivered_all' mixed
check "mixed: 180 refused-domain messages refused, none delivered" \
    j '.extra.refused_load.injected == 180 and .extra.refused_results == 180 and .load.deliveries.ok == 420' mixed
check "mixed: the refused hosts got fewer connections than messages" \
    j '.extra.refused_hosts_connections > 0 and .extra.refused_hosts_connections < 180' mixed
check "mixed: phase 2 (new domains, same refused hosts): no new connection" \
    j '.extra.phase2_new_connections == 0 and .extra.phase2_refused_results == 60' mixed
check "mixed: the capability cache holds the refused hosts" j '.extra.capcache_refuse_entries >= 30' mixed
check "mixed: compared with nothing (many-domains did not run)" j '.extra.vs_many_domains == null' mixed
check "results.md: a row per run, the hook's included" \
    bash -c "[ \$(grep -c '^| \(one-domain\|mixed\|postfix-fake\) |' '$RES/results.md') = 3 ]"
check "the removal's stamp names the scratch folder's device" \
    grep -q " $(findmnt -no SOURCE --target "$WORK")\$" "$RES/.scratch-deleted-at"
check "machine: whether the scratch filesystem has a journal (ext4) or null" \
    j '.machine.disk | has("journal") and (.journal == null or (.journal | type) == "boolean")' one-domain
check "results.md: the machine and the spool's sync mode" \
    bash -c "grep -q '^Machine: ' '$RES/results.md' && grep -q '^Spool sync: an fdatasync per file' '$RES/results.md'"
check "no scratch folder left behind, nor the trash they waited in" \
    bash -c "! ls -d '$WORK'/floormta-scen-* '$WORK'/floormta-bench-trash.* 2>/dev/null"

if command -v gnuplot >/dev/null; then
    bash "$SRC/bench/plot.sh" "$RES" >"$WORK/plot.out" 2>&1
    check "plot.sh: exit 0" [ $? = 0 ]
    check "plot.sh: throughput.png and latency.png" \
        bash -c "file '$RES/throughput.png' '$RES/latency.png' | grep -c 'PNG image' | grep -qx 2"
    check "plot.sh: prints the table" grep -q '^| mixed |' "$WORK/plot.out"
else
    echo "# gnuplot missing: plot.sh not checked (scripts/deps.sh installs gnuplot-nox)"
fi

finish
