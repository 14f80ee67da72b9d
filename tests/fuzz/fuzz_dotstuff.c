/*
 * tests/fuzz/fuzz_dotstuff.c — message content (from whoever submitted it) through the
 * DATA encoder, split into input chunks and output buffers of sizes the input chooses,
 * compared byte for byte with a one-byte-at-a-time reference of RFC 5321 4.5.2 and the
 * line-ending rules smtp_dotstuff.h states. The output must not depend on the split.
 */
#include "tests/fuzz/fuzz.h"

#include <string.h>

#include "engine/smtp_dotstuff.h"

/* The rules, one byte at a time: every CR, LF or CRLF becomes CRLF, a '.' starting a
 * line is doubled, and the end is CRLF "." CRLF (CRLF first unless at a line start). */
static size_t reference(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t n = 0;
    bool bol = true, cr = false;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = in[i];
        if (cr && c == '\n') {
            cr = false;
            continue;
        }
        cr = c == '\r';
        if (c == '\r' || c == '\n') {
            out[n++] = '\r';
            out[n++] = '\n';
            bol = true;
            continue;
        }
        if (bol && c == '.')
            out[n++] = '.';
        out[n++] = c;
        bol = false;
    }
    if (!bol) {
        out[n++] = '\r';
        out[n++] = '\n';
    }
    memcpy(out + n, ".\r\n", 3);
    return n + 3;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t in_chunk = (size_t)data[0] + 1, out_cap = (size_t)data[1] % 64 + 1;
    const uint8_t *in = data + 2;
    size_t len = size - 2;
    uint8_t *want = malloc(2 * len + 8), *got = malloc(2 * len + 8);
    fuzz_check(want && got);
    size_t nwant = reference(in, len, want), ngot = 0;

    struct smtp_dotstuff d;
    smtp_dotstuff_init(&d);
    char *out = malloc(out_cap);
    fuzz_check(out != NULL);
    size_t pos = 0;
    while (pos < len) {
        size_t n = len - pos < in_chunk ? len - pos : in_chunk, used = 0;
        size_t w = smtp_dotstuff_encode(&d, (const char *)in + pos, n, &used, out, out_cap);
        fuzz_check(w <= out_cap && used <= n);
        /* Room for 2 bytes (a line break, a doubled dot) always takes a byte. */
        fuzz_check(used > 0 || out_cap < 2);
        fuzz_check(ngot + w <= nwant);
        memcpy(got + ngot, out, w);
        ngot += w;
        pos += used;
        if (used == 0 && w == 0)
            break; /* out_cap 1 or 2 before a line break: the caller brings more room */
    }
    if (pos == len) {
        size_t w;
        char end[5];
        while ((w = smtp_dotstuff_finish(&d, out_cap >= 5 ? out : end,
                                         out_cap >= 5 ? out_cap : sizeof(end))) > 0) {
            fuzz_check(ngot + w <= nwant);
            memcpy(got + ngot, out_cap >= 5 ? out : end, w);
            ngot += w;
        }
        fuzz_check(d.finished);
        fuzz_check(ngot == nwant && memcmp(got, want, nwant) == 0);
        fuzz_check(smtp_dotstuff_finish(&d, end, sizeof(end)) == 0);
    } else {
        fuzz_check(memcmp(got, want, ngot) == 0);
    }
    free(out);
    free(want);
    free(got);
    return 0;
}
