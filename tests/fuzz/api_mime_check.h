/*
 * tests/fuzz/api_mime_check.h — checks of engine/api_mime.c's results for the fuzz
 * targets (tests/fuzz/api_mime_check.c). Each aborts through fuzz_check on a miss.
 */
#ifndef FLOORMTA_TESTS_FUZZ_API_MIME_CHECK_H
#define FLOORMTA_TESTS_FUZZ_API_MIME_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/api.h"

/* Runs eng_api_addr_check on a (borrowed) and checks its verdict: -EINVAL with a
 * reason, or an address within RFC 5321's lengths and character sets. Returns whether
 * it was accepted. */
bool fuzz_mime_addr_valid(const char *a);

/* Checks out[0, len), built by eng_api_mime_build from m (both borrowed), against m. */
void fuzz_mime_check(const struct eng_api_mime *m, const char *out, size_t len);

/* CRLF line ends only in p[0, n): every LF after a CR, and a final CRLF. */
void fuzz_mime_check_crlf(const char *p, size_t n);

/* Whether p[0, n) has a byte above 127. */
bool fuzz_mime_has_8bit(const char *p, size_t n);

#endif /* FLOORMTA_TESTS_FUZZ_API_MIME_CHECK_H */
