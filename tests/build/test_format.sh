#!/usr/bin/env bash
# tests/build/test_format.sh — every C/C++ source is formatted with the committed
# .clang-format (fix with `make format`).
set -u
cd "${FLOORMTA_SRC:?}" || exit 1
command -v clang-format >/dev/null || { echo "clang-format is not installed"; exit 1; }
mapfile -t files < <(find engine dns tls queue bench tests -name '*.c' -o -name '*.h' -o -name '*.cc' | sort)
bad=0
for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f"
        bad=$((bad + 1))
    fi
done
echo "$(( ${#files[@]} - bad )) passed, $bad failed"
[ "$bad" -eq 0 ]
