/*
 * tests/engine/test_log.c — the engine log's line discipline: one entry is one line,
 * whatever its values hold (a hostile client's or MX's CR, LF or other control bytes
 * become '?'), and an entry too long for a line is cut and marked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/log.h"

/* Logs through a pipe and returns what came out (NUL-terminated, static). */
static const char *logged(const char *value)
{
    static char buf[16384];
    int p[2];
    assert_int_equal(pipe(p), 0);
    eng_log_set_fd(p[1]);
    eng_log(ENG_LOG_ERROR, "client said %s.", value);
    eng_log_set_fd(2);
    close(p[1]);
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    close(p[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    return buf;
}

static void control_bytes_cannot_forge_lines(void **state)
{
    (void)state;
    const char *out = logged("alice\r\n2026-01-01T00:00:00.000Z info forged\x01\x7f\t");
    assert_non_null(strstr(out, " error client said alice??2026-01-01T00:00:00.000Z info "
                                "forged???.\n"));
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void long_entry_cut_and_marked(void **state)
{
    (void)state;
    char big[9000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *out = logged(big);
    size_t n = strlen(out);
    assert_true(n < sizeof(big));
    assert_memory_equal(out + n - 4, "...\n", 4);
    assert_ptr_equal(strchr(out, '\n'), out + n - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(control_bytes_cannot_forge_lines),
        cmocka_unit_test(long_entry_cut_and_marked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
