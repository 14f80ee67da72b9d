#!/usr/bin/env bash
# tests/fuzz/run_libfuzzer.sh BUILD SECONDS — `make fuzz`: every libFuzzer target in BUILD
# (FLOORMTA_LIBFUZZER=ON) for SECONDS each, one after the other. Each grows its corpus in
# BUILD/corpus/<target> (kept between runs) from the committed seeds in
# tests/fuzz/corpus/<target>, which it only reads; a crash leaves its input as
# BUILD/crash-<target>-<hash>. Exits 1 if any target failed.
set -uo pipefail
BUILD=${1:?usage: run_libfuzzer.sh BUILD SECONDS}
SECONDS_EACH=${2:-60}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
failed=()
for bin in "$BUILD"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    target=${name#fuzz_}
    mkdir -p "$BUILD/corpus/$target"
    echo "== $name: $SECONDS_EACH s"
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -artifact_prefix="$BUILD/crash-$target-" \
        "$BUILD/corpus/$target" "$SRC/tests/fuzz/corpus/$target" 2>"$BUILD/$name.log"; then
        failed+=("$name")
        tail -40 "$BUILD/$name.log"
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$BUILD/$name.log" | sed 's/^/   /'
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in $BUILD/crash-*)"
    exit 1
fi
echo "fuzz: every target ran $SECONDS_EACH s without a failure"
