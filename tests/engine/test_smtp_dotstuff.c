/*
 * tests/engine/test_smtp_dotstuff.c — the DATA encoder: leading dots, every mix of
 * CRLF / LF / CR, the end marker with and without a final line break, the empty body,
 * identical output at every input split point and with tiny output buffers, and 1 MB of
 * random bytes round-tripped through a reference de-stuffer written here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_dotstuff.h"

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Encodes in, fed in input pieces of at most `piece` bytes into output chunks of at
 * most `room` bytes, then the end marker. The result is malloc'd in *out. */
static void encode(const char *in, size_t len, size_t piece, size_t room, struct buf *out)
{
    struct smtp_dotstuff d;
    smtp_dotstuff_init(&d);
    char chunk[64 * 1024];
    assert_true(room <= sizeof(chunk));
    memset(out, 0, sizeof(*out));
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece;
        size_t done = 0;
        while (done < n) {
            size_t used = 0;
            size_t w = smtp_dotstuff_encode(&d, in + off + done, n - done, &used, chunk, room);
            assert_true(w <= room);
            assert_true(w > 0 || used > 0 || room < 2); /* progress whenever room allows */
            buf_put(out, chunk, w);
            done += used;
            if (w == 0 && used == 0)
                room = 2; /* the caller gives more room, as the session does */
        }
        off += n;
    }
    for (;;) {
        size_t w = smtp_dotstuff_finish(&d, chunk, room);
        if (w > 0) {
            buf_put(out, chunk, w);
            break;
        }
        assert_false(d.finished);
        room++;
    }
    assert_true(d.finished);
    assert_int_equal(smtp_dotstuff_finish(&d, chunk, sizeof(chunk)), 0);
}

static void expect(const char *in, const char *want)
{
    struct buf out;
    encode(in, strlen(in), strlen(in) + 1, 64 * 1024, &out);
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.p, want, out.len);
    free(out.p);
}

static void leading_dots(void **state)
{
    (void)state;
    expect(".hidden\r\n", "..hidden\r\n.\r\n");
    expect("a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n.\r\n");
    expect("x.y\r\n", "x.y\r\n.\r\n"); /* only at a line start */
    expect("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n");
    expect(".", "..\r\n.\r\n");
    expect("..", "...\r\n.\r\n");
    expect(".\r\n", "..\r\n.\r\n");
}

static void line_endings(void **state)
{
    (void)state;
    expect("a\nb\n", "a\r\nb\r\n.\r\n");
    expect("a\rb\r", "a\r\nb\r\n.\r\n");
    expect("a\r\nb\r\n", "a\r\nb\r\n.\r\n");
    expect("a\n\rb", "a\r\n\r\nb\r\n.\r\n");   /* LF then a bare CR: two breaks */
    expect("a\r\r\nb", "a\r\n\r\nb\r\n.\r\n"); /* bare CR then CRLF */
    expect("\n.x\r.y\r\n.z", "\r\n..x\r\n..y\r\n..z\r\n.\r\n");
    expect("\r\n\r\n", "\r\n\r\n.\r\n");
}

static void ends(void **state)
{
    (void)state;
    expect("", ".\r\n");
    expect("no newline", "no newline\r\n.\r\n");
    expect("ends with cr\r", "ends with cr\r\n.\r\n");
    expect("ends with lf\n", "ends with lf\r\n.\r\n");
}

/* The output must not depend on where the input or the output is cut. */
static void every_split_point(void **state)
{
    (void)state;
    static const char tricky[] = ".a\r\n.\r\n..\r.b\n\r\n.\rc\r\r\n\n.d.\r\n.";
    size_t len = sizeof(tricky) - 1;
    struct buf ref;
    encode(tricky, len, len, 64 * 1024, &ref);
    for (size_t piece = 1; piece <= len; piece++) {
        for (size_t room = 2; room <= 12; room++) {
            struct buf out;
            encode(tricky, len, piece, room, &out);
            assert_int_equal(out.len, ref.len);
            assert_memory_equal(out.p, ref.p, ref.len);
            free(out.p);
        }
    }
    /* And two arbitrary cuts into three input pieces. */
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b++) {
            struct smtp_dotstuff d;
            smtp_dotstuff_init(&d);
            char out[256];
            size_t o = 0, used;
            o += smtp_dotstuff_encode(&d, tricky, a, &used, out + o, sizeof(out) - o);
            assert_int_equal(used, a);
            o += smtp_dotstuff_encode(&d, tricky + a, b - a, &used, out + o, sizeof(out) - o);
            assert_int_equal(used, b - a);
            o += smtp_dotstuff_encode(&d, tricky + b, len - b, &used, out + o, sizeof(out) - o);
            assert_int_equal(used, len - b);
            o += smtp_dotstuff_finish(&d, out + o, sizeof(out) - o);
            assert_int_equal(o, ref.len);
            assert_memory_equal(out, ref.p, ref.len);
        }
    }
    free(ref.p);
}

/* The receiver's view (RFC 5321 4.5.2): lines end in CRLF; the data ends at a line
 * that is only "."; a leading dot of any other line is removed. Returns the content
 * with CRLF line ends, or fails the test on anything a receiver would choke on. */
static void destuff(const char *in, size_t len, struct buf *out)
{
    memset(out, 0, sizeof(*out));
    size_t i = 0;
    bool ended = false;
    while (i < len) {
        const char *cr = memchr(in + i, '\r', len - i);
        assert_non_null(cr);
        size_t n = (size_t)(cr - (in + i));
        assert_true(n + 1 < len - i);
        assert_int_equal(cr[1], '\n');        /* no bare CR */
        assert_null(memchr(in + i, '\n', n)); /* no bare LF */
        const char *line = in + i;
        i += n + 2;
        if (n == 1 && line[0] == '.') {
            ended = true;
            break;
        }
        if (n > 0 && line[0] == '.') {
            line++;
            n--;
            assert_true(n > 0 && line[0] == '.'); /* a leading dot was always doubled */
        }
        buf_put(out, line, n);
        buf_put(out, "\r\n", 2);
    }
    assert_true(ended);
    assert_int_equal(i, len); /* nothing after the end marker */
}

/* What the content means once its line ends are CRLF (the reference conversion). */
static void normalise(const char *in, size_t len, struct buf *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            buf_put(out, "\r\n", 2);
            if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
                i++;
        } else {
            buf_put(out, in + i, 1);
        }
    }
    if (out->len > 0 &&
        !(out->len >= 2 && out->p[out->len - 2] == '\r' && out->p[out->len - 1] == '\n'))
        buf_put(out, "\r\n", 2);
}

static void random_megabyte_round_trip(void **state)
{
    (void)state;
    size_t len = 1u << 20;
    char *in = malloc(len);
    assert_non_null(in);
    uint32_t x = 0x9e3779b9u;
    /* Mostly text with many line breaks and dots, some arbitrary bytes. */
    static const char alphabet[] = "....\r\r\n\n\n\nabcdefghij klmnop\t";
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        in[i] = (x & 0x300) ? alphabet[x % (sizeof(alphabet) - 1)] : (char)(x >> 24);
    }
    struct buf want, enc, got;
    normalise(in, len, &want);
    static const size_t pieces[] = { 1u << 20, 16384, 4093, 77 };
    for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
        encode(in, len, pieces[k], k == 3 ? 1000 : 16384, &enc);
        destuff(enc.p, enc.len, &got);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.p, want.p, want.len);
        free(enc.p);
        free(got.p);
    }
    free(want.p);
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(leading_dots),
        cmocka_unit_test(line_endings),
        cmocka_unit_test(ends),
        cmocka_unit_test(every_split_point),
        cmocka_unit_test(random_megabyte_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
