#!/usr/bin/env bash
# tests/build/test_linkage.sh — floormta's programs link BoringSSL (by RPATH, from the
# android directory) and never OpenSSL, whose symbols clash with it; outside the
# sanitizer build they use jemalloc as their allocator.
set -u
BIN=${FLOORMTA_BIN:?}
passed=0 failed=0
check() { if "${@:2}"; then passed=$((passed + 1)); else echo "FAIL: $1"; failed=$((failed + 1)); fi; }
for prog in floormta floormta-sink floormta-bench; do
    deps=$(ldd "$BIN/$prog")
    check "$prog resolves BoringSSL from the android directory" \
        grep -q 'android/libssl.so' <<<"$deps"
    check "$prog has no OpenSSL libssl/libcrypto" \
        bash -c '! grep -E "lib(ssl|crypto)\.so\.3" <<<"$1"' _ "$deps"
    check "$prog has no unresolved library" bash -c '! grep -q "not found" <<<"$1"' _ "$deps"
    if ! grep -q libasan <<<"$deps"; then
        check "$prog uses jemalloc" grep -q libjemalloc <<<"$deps"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
