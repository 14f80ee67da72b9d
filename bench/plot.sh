#!/usr/bin/env bash
# bench/plot.sh — renders the load scenarios' results (bench/scenarios.sh): prints the
# markdown table (results.md) and draws, with gnuplot, throughput.png (delivered msgs/s
# per run) and latency.png (inject->deliver p50, p90, p99 per run, log scale) from the
# runs' JSON files, in the order they were written.
#
#   bench/plot.sh [RESULTS_DIR]     (default bench/results; BENCH_RESULTS also works)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=${1:-${BENCH_RESULTS:-$ROOT/bench/results}}
command -v gnuplot >/dev/null || { echo "plot: gnuplot is missing (scripts/deps.sh installs gnuplot-nox)" >&2; exit 1; }

DATA=$(mktemp /tmp/floormta-plot.XXXXXX)
trap 'rm -f "$DATA"' EXIT

# One line per run: name, delivered msgs/s, p50, p90, p99 (ms). Runs are the JSON files
# holding a "scenario" key (machine.json is not one), oldest first.
files=()
while IFS= read -r f; do files+=("$f"); done < <(ls -tr "$RESULTS"/*.json 2>/dev/null)
for f in "${files[@]}"; do
    jq -r 'select(type == "object" and has("scenario") and .load != null)
        | [(.scenario | sub("^compare_postfix-"; "vs-pfx ")), (.load.deliver_rate // 0), (.load.latency_ms.p50 // 0),
           (.load.latency_ms.p90 // 0), (.load.latency_ms.p99 // 0)] | @tsv' "$f"
done >"$DATA"
[ -s "$DATA" ] || { echo "plot: no results in $RESULTS (run bench/scenarios.sh)" >&2; exit 1; }

# Wide enough for every run's label (about 60 pixels a run).
WIDTH=$(($(wc -l <"$DATA") * 60 + 300))
[ "$WIDTH" -ge 1100 ] || WIDTH=1100

TITLE="floormta load scenarios ($(jq -r '"\(.cpu), \(.cores) cores"' "$RESULTS/machine.json" 2>/dev/null || echo))"

gnuplot <<GNUPLOT
set terminal pngcairo size $WIDTH,600 font "sans,10" noenhanced
set datafile separator "\t"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set grid ytics
set xtics rotate by -35 left nomirror
set key top right
set bmargin 11
set rmargin 14

set output "$RESULTS/throughput.png"
set title "$TITLE: throughput"
set ylabel "delivered messages/s"
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set style histogram clustered gap 1
unset key
plot "$DATA" using 2:xtic(1) lc rgb "#3a6ea5", \
     "" using 0:2:(sprintf("%.0f", column(2))) with labels offset 0,0.7
set key top right
set offsets 0, 0, 0, 0

set output "$RESULTS/latency.png"
set title "$TITLE: inject -> deliver latency"
set ylabel "ms (log scale)"
set logscale y
set yrange [*:*]
set style histogram clustered gap 1
plot "$DATA" using 3:xtic(1) title "p50" lc rgb "#6aa84f", \
     "" using 4 title "p90" lc rgb "#f1c232", \
     "" using 5 title "p99" lc rgb "#cc4125"
GNUPLOT

cat "$RESULTS/results.md"
echo
echo "plots: $RESULTS/throughput.png $RESULTS/latency.png"
