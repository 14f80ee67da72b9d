/*
 * tests/engine/test_json_out.c — the hot-path JSON writer (engine/json_out.h): what it
 * writes parses back with jansson to the same values, whatever bytes the strings hold.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "engine/json_out.h"

static json_t *parse(const struct eng_json_out *w)
{
    const char *text = eng_json_out_text(w);
    assert_non_null(text);
    json_error_t err;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (!j)
        fail_msg("not JSON (%s): %s", err.text, text);
    return j;
}

static void test_structure(void **state)
{
    (void)state;
    struct eng_json_out w = { 0 };
    eng_json_out_reset(&w);
    eng_json_out_open(&w, NULL, false);
    eng_json_out_str(&w, "a", "x");
    eng_json_out_int(&w, "n", -42);
    eng_json_out_int(&w, "big", INT64_MAX);
    eng_json_out_null(&w, "z");
    eng_json_out_str_or_null(&w, "e", "");
    eng_json_out_open(&w, "list", true);
    eng_json_out_int(&w, NULL, 1);
    eng_json_out_open(&w, NULL, false);
    eng_json_out_str(&w, "k", "v");
    eng_json_out_close(&w, false);
    eng_json_out_open(&w, NULL, true);
    eng_json_out_close(&w, true);
    eng_json_out_close(&w, true);
    eng_json_out_close(&w, false);
    assert_string_equal(eng_json_out_text(&w),
                        "{\"a\":\"x\",\"n\":-42,\"big\":9223372036854775807,"
                        "\"z\":null,\"e\":null,\"list\":[1,{\"k\":\"v\"},[]]}");
    json_t *j = parse(&w);
    assert_int_equal(json_integer_value(json_object_get(j, "big")), INT64_MAX);
    json_decref(j);

    /* The buffer is reused: a second document replaces the first. */
    eng_json_out_reset(&w);
    eng_json_out_open(&w, NULL, true);
    eng_json_out_close(&w, true);
    assert_string_equal(eng_json_out_text(&w), "[]");
    eng_json_out_free(&w);
}

static void test_escaping(void **state)
{
    (void)state;
    /* Every byte 1..255 alone, then runs mixing them: the value must come back equal
     * (valid UTF-8 kept as is, each invalid byte as U+FFFD). */
    char s[600];
    size_t n = 0;
    for (unsigned c = 1; c < 256; c++)
        s[n++] = (char)c;
    static const char tail[] = "\"\\\r\n\t\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 "
                               "\xed\xa0\x80 \xc0\xaf";
    memcpy(s + n, tail, sizeof(tail) - 1);
    n += sizeof(tail) - 1;
    s[n] = '\0';
    struct eng_json_out w = { 0 };
    eng_json_out_reset(&w);
    eng_json_out_open(&w, NULL, false);
    eng_json_out_str(&w, "key \"q\"", s);
    eng_json_out_close(&w, false);
    json_t *j = parse(&w);
    const char *back = json_string_value(json_object_get(j, "key \"q\""));
    assert_non_null(back);
    /* ASCII comes back byte for byte; the valid sequences too; invalid ones are U+FFFD. */
    assert_memory_equal(back, s, 127);
    assert_non_null(strstr(back, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7 "));
    assert_null(strstr(back, "\xed\xa0\x80")); /* a surrogate is not valid UTF-8 */
    assert_null(strstr(back, "\xc0\xaf"));     /* nor an overlong form */
    assert_non_null(strstr(back, "\xef\xbf\xbd"));
    json_decref(j);
    eng_json_out_free(&w);
}

static void test_growth_and_bounds(void **state)
{
    (void)state;
    struct eng_json_out w = { 0 };
    eng_json_out_reset(&w);
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    eng_json_out_open(&w, NULL, true);
    for (int i = 0; i < 100; i++)
        eng_json_out_str(&w, NULL, big);
    eng_json_out_close(&w, true);
    json_t *j = parse(&w);
    assert_int_equal(json_array_size(j), 100);
    json_decref(j);

    /* Over its bound the document fails as a whole, never truncated into bad JSON. */
    eng_json_out_free(&w);
    w.max = 4096;
    eng_json_out_reset(&w);
    eng_json_out_open(&w, NULL, true);
    eng_json_out_str(&w, NULL, big);
    eng_json_out_close(&w, true);
    assert_null(eng_json_out_text(&w));
    /* ... and the writer works again after a reset. */
    eng_json_out_reset(&w);
    eng_json_out_str(&w, NULL, "ok");
    assert_string_equal(eng_json_out_text(&w), "\"ok\"");

    /* Too deep, or closing more than was opened, fails too. */
    eng_json_out_reset(&w);
    for (int i = 0; i < ENG_JSON_MAX_DEPTH + 1; i++)
        eng_json_out_open(&w, NULL, true);
    assert_null(eng_json_out_text(&w));
    eng_json_out_reset(&w);
    eng_json_out_close(&w, false);
    assert_null(eng_json_out_text(&w));
    eng_json_out_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_growth_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
