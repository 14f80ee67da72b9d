/*
 * tests/fuzz/fuzz_config.c — the operator's configuration file through eng_config_parse
 * (libyaml, then the schema checks floormta adds) and, when it is accepted, through what
 * the daemon builds from it first (the policy table, the module configurations).
 *
 * Invariants: success and failure are exclusive (0 with a configuration and no error;
 * -EINVAL with no configuration and at least one error), every error points inside the
 * text (line 0 only for "the whole file"), with its strings NUL-terminated, and the
 * errors print; nothing leaks. The policy table is left out: building it reads the CA
 * files the text names, and a fuzzer must not open whatever path it makes up.
 */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "engine/config.h"
#include "engine/group.h"
#include "engine/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The parser's warnings are not findings. */
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd >= 0)
        eng_log_set_fd(fd);
    return 0;
}

/* Lines as YAML counts them: LF, CR, CRLF, and NEL, LS, PS in UTF-8 each end one. */
static unsigned count_lines(const uint8_t *data, size_t size)
{
    unsigned n = 1;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n' || (data[i] == '\r' && (i + 1 == size || data[i + 1] != '\n')))
            n++;
        else if (data[i] == 0xc2 && i + 1 < size && data[i + 1] == 0x85)
            n++;
        else if (data[i] == 0xe2 && i + 2 < size && data[i + 1] == 0x80 &&
                 (data[i + 2] == 0xa8 || data[i + 2] == 0xa9))
            n++;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eng_config *cfg = NULL;
    struct eng_config_errors errs;
    eng_config_errors_init(&errs);
    int rc = eng_config_parse((const char *)data, size, "fuzz.yaml", &cfg, &errs);
    fuzz_check(rc == 0 || rc == -EINVAL);
    fuzz_check((rc == 0) == (cfg != NULL));
    fuzz_check(rc != 0 || errs.n == 0);
    fuzz_check(rc == 0 || errs.n > 0);
    unsigned lines = count_lines(data, size);
    for (size_t i = 0; i < errs.n; i++) {
        const struct eng_config_error *e = &errs.v[i];
        fuzz_check(e->file && e->key && e->message);
        fuzz_check(strchr(e->message, '\n') == NULL);
        /* An error in the operator's text points into it; the embedded default's own
         * lines are named "<default>". */
        if (strcmp(e->file, "fuzz.yaml") == 0)
            fuzz_check(e->line <= lines + 1);
    }
    FILE *sink = fopen("/dev/null", "w");
    fuzz_check(sink != NULL);
    eng_config_errors_print(&errs, sink);
    fclose(sink);
    eng_config_errors_free(&errs);
    if (cfg) {
        struct eng_group_config gc;
        eng_config_group_config(cfg, &gc);
        struct queue_spool_config sc;
        eng_config_spool_config(cfg, &sc);
        struct tls_client_config tc;
        eng_config_tls_client_config(cfg, &tc);
        eng_config_free(cfg);
    }
    return 0;
}
