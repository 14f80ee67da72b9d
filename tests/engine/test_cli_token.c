/*
 * tests/engine/test_cli_token.c — eng_cli_token, the token a command presents to the
 * API: --token, then FLOORMTA_TOKEN, then the daemon's api.local_token_file; and what
 * the user is told when there is none.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/cli.h"
#include "engine/config.h"

static char dir[] = "/tmp/floormta-cli-token-XXXXXX";
static char token_path[PATH_MAX];

static struct eng_config *config_with(const char *local_token_file)
{
    char text[PATH_MAX + 64];
    snprintf(text, sizeof(text), "api: {local_token_file: \"%s\"}\n", local_token_file);
    struct eng_config *c = NULL;
    assert_int_equal(eng_config_parse(text, strlen(text), "t.yaml", &c, NULL), 0);
    return c;
}

static void write_token(const char *content)
{
    FILE *f = fopen(token_path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static void test_order(void **state)
{
    (void)state;
    struct eng_config *c = config_with(token_path);
    char *tok = NULL, err[256];
    write_token("from-the-file\n");
    setenv("FLOORMTA_TOKEN", "from-the-environment", 1);

    assert_int_equal(eng_cli_token("from-the-option", c, &tok, err, sizeof(err)), 0);
    assert_string_equal(tok, "from-the-option");
    free(tok);

    assert_int_equal(eng_cli_token(NULL, c, &tok, err, sizeof(err)), 0);
    assert_string_equal(tok, "from-the-environment");
    free(tok);

    /* An empty variable is no token: the file is next. */
    setenv("FLOORMTA_TOKEN", "", 1);
    assert_int_equal(eng_cli_token("", c, &tok, err, sizeof(err)), 0);
    assert_string_equal(tok, "from-the-file");
    free(tok);

    unsetenv("FLOORMTA_TOKEN");
    write_token("crlf-token\r\nsecond line\n");
    assert_int_equal(eng_cli_token(NULL, c, &tok, err, sizeof(err)), 0);
    assert_string_equal(tok, "crlf-token");
    free(tok);
    eng_config_free(c);
    unlink(token_path);
}

static void test_none(void **state)
{
    (void)state;
    unsetenv("FLOORMTA_TOKEN");
    char *tok = NULL, err[256];

    /* The daemon is not running: the file is missing, and the message names it. */
    struct eng_config *c = config_with(token_path);
    unlink(token_path);
    assert_int_equal(eng_cli_token(NULL, c, &tok, err, sizeof(err)), -ENOENT);
    assert_null(tok);
    assert_non_null(strstr(err, token_path));
    assert_non_null(strstr(err, "--token"));

    write_token("");
    assert_int_equal(eng_cli_token(NULL, c, &tok, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "empty"));
    unlink(token_path);
    eng_config_free(c);

    /* "" = no file configured. */
    c = config_with("");
    assert_null(c->api.local_token_file);
    assert_int_equal(eng_cli_token(NULL, c, &tok, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "api.local_token_file"));
    eng_config_free(c);
}

static void test_default_config(void **state)
{
    (void)state;
    unsetenv("FLOORMTA_TOKEN");
    char *tok = NULL, err[256];
    /* NULL = the embedded default's file, relative to the current folder. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(eng_cli_token(NULL, NULL, &tok, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "./var/api.token"));
    assert_int_equal(mkdir("var", 0700), 0);
    FILE *f = fopen("var/api.token", "w");
    assert_non_null(f);
    fputs("0123456789abcdef\n", f);
    fclose(f);
    assert_int_equal(eng_cli_token(NULL, NULL, &tok, err, sizeof(err)), 0);
    assert_string_equal(tok, "0123456789abcdef");
    free(tok);
    unlink("var/api.token");
    rmdir("var");
    assert_int_equal(chdir(cwd), 0);
}

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(token_path, sizeof(token_path), "%s/api.token", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_default_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
