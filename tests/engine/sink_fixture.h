/*
 * tests/engine/sink_fixture.h — floormta-sink for the engine's live tests: started as a
 * child process with listeners on loopback addresses sharing one random port, stopped
 * with SIGTERM and its counters read back, killed at teardown if a test failed first.
 * Also what every such test starts with: a preflight (io_uring and FLOORMTA_BIN), and a
 * scratch directory holding the test PKI with a client context that trusts its root.
 * Header-only (each test is its own executable). Include after <cmocka.h>; needs
 * FLOORMTA_BIN (ctest sets it) to find the sink.
 */
#ifndef FLOORMTA_TESTS_ENGINE_SINK_FIXTURE_H
#define FLOORMTA_TESTS_ENGINE_SINK_FIXTURE_H

#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/loop.h"
#include "tests/pki/testpki.h"
#include "tls/tls.h"

/* The running sink, if any: what sink_kill_leftover() stops after a failed test. */
static pid_t sink_fixture_pid;

struct sink {
    pid_t pid;
    uint16_t port;
    char out[PATH_MAX];
};

struct sink_counters {
    unsigned long long messages, bytes, connections, handshakes, rsets, pipelined, refused;
    unsigned long long accepted;   /* RCPTs answered 250 */
    unsigned long long greylisted; /* tempfail-once-* RCPTs answered 451 */
    unsigned long long resumed;    /* TLS handshakes that resumed a session */
};

#define SINK_FIXTURE_LISTEN_MAX 32

/* Starts one sink with a listener per spec, "ADDR=PROFILE" or "ADDR=PROFILE@PKIDIR" (n of
 * them, at most SINK_FIXTURE_LISTEN_MAX), all on one random port (another one if it is
 * taken), its certificates from the PKI in work (or a listener's own PKIDIR) and its
 * output in work, for the MX name mx_name (its greeting). specs are borrowed. */
__attribute__((unused)) static void sink_start_list(struct sink *k, const char *work,
                                                    const char *mx_name, const char *const *specs,
                                                    unsigned n)
{
    const char *bin = getenv("FLOORMTA_BIN");
    assert_non_null(bin);
    assert_true(n > 0 && n <= SINK_FIXTURE_LISTEN_MAX);
    char exe[PATH_MAX], ready[PATH_MAX], listen[SINK_FIXTURE_LISTEN_MAX][160];
    snprintf(exe, sizeof(exe), "%s/floormta-sink", bin);
    snprintf(ready, sizeof(ready), "%s/sink.ready", work);
    snprintf(k->out, sizeof(k->out), "%s/sink.out", work);
    for (int attempt = 0; attempt < 10; attempt++) {
        k->port = (uint16_t)(20000 + rand() % 40000);
        const char *argv[10 + 2 * SINK_FIXTURE_LISTEN_MAX] = {
            exe, "--pki", work, "--name", mx_name, "--ready-file", ready, "--log-level", "warn"
        };
        unsigned a = 9;
        for (unsigned i = 0; i < n; i++) {
            const char *eq = strchr(specs[i], '=');
            assert_non_null(eq);
            int len = snprintf(listen[i], sizeof(listen[i]), "%.*s:%u%s", (int)(eq - specs[i]),
                               specs[i], (unsigned)k->port, eq);
            assert_true(len > 0 && (size_t)len < sizeof(listen[i]));
            argv[a++] = "--listen";
            argv[a++] = listen[i];
        }
        unlink(ready);
        k->pid = fork();
        assert_true(k->pid >= 0);
        if (k->pid == 0) {
            if (!freopen(k->out, "w", stdout) || !freopen("/dev/null", "w", stderr))
                _exit(127);
            execv(exe, (char *const *)argv);
            _exit(127);
        }
        sink_fixture_pid = k->pid;
        for (int i = 0; i < 200; i++) {
            if (access(ready, F_OK) == 0)
                return;
            if (waitpid(k->pid, NULL, WNOHANG) == k->pid)
                break; /* the port was taken: another one */
            usleep(25 * 1000);
        }
        kill(k->pid, SIGKILL);
        waitpid(k->pid, NULL, 0);
        sink_fixture_pid = 0;
    }
    fail_msg("floormta-sink did not start (%s)", exe);
}

/* Starts one sink with a listener per "ADDR=PROFILE" (NULL-terminated, at most 4); see
 * sink_start_list. */
__attribute__((unused, sentinel)) static void sink_start(struct sink *k, const char *work,
                                                         const char *mx_name, ...)
{
    const char *specs[4];
    unsigned n = 0;
    va_list ap;
    va_start(ap, mx_name);
    for (const char *s; n < 4 && (s = va_arg(ap, const char *)) != NULL;)
        specs[n++] = s;
    va_end(ap);
    sink_start_list(k, work, mx_name, specs, n);
}

/* Stops the sink with SIGTERM (it must exit 0) and reads its closing counters. */
__attribute__((unused)) static void sink_stop(struct sink *k, struct sink_counters *c)
{
    kill(k->pid, SIGTERM);
    int status = 0;
    assert_int_equal(waitpid(k->pid, &status, 0), k->pid);
    sink_fixture_pid = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    FILE *f = fopen(k->out, "r");
    assert_non_null(f);
    char line[512];
    bool found = false;
    c->accepted = c->greylisted = c->resumed = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line,
                   "sink: messages=%llu bytes=%llu connections=%llu tls_handshakes=%llu "
                   "rsets=%llu pipelined=%llu rcpts_refused=%llu rcpts_accepted=%llu "
                   "greylisted=%llu tls_resumed=%llu",
                   &c->messages, &c->bytes, &c->connections, &c->handshakes, &c->rsets,
                   &c->pipelined, &c->refused, &c->accepted, &c->greylisted, &c->resumed) >= 7)
            found = true;
    fclose(f);
    assert_true(found);
}

/* After sink_stop: the closing counters of the listener on addr ("127.0.0.5", without the
 * port). Fails the test if the sink did not report that listener. */
__attribute__((unused)) static void sink_listener_counters(const struct sink *k, const char *addr,
                                                           unsigned long long *connections,
                                                           unsigned long long *messages)
{
    FILE *f = fopen(k->out, "r");
    assert_non_null(f);
    char line[512], want[96];
    snprintf(want, sizeof(want), "sink: listener %s:%u ", addr, (unsigned)k->port);
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        const char *p =
                strncmp(line, want, strlen(want)) == 0 ? strstr(line, " connections=") : NULL;
        if (p && sscanf(p, " connections=%llu messages=%llu", connections, messages) == 2)
            found = true;
    }
    fclose(f);
    if (!found)
        fail_msg("the sink reported no counters for %s", want);
}

/* Teardown: a sink a failed test left running is killed. */
__attribute__((unused)) static void sink_kill_leftover(void)
{
    if (sink_fixture_pid > 0) {
        kill(sink_fixture_pid, SIGKILL);
        waitpid(sink_fixture_pid, NULL, 0);
        sink_fixture_pid = 0;
    }
}

/* cmocka teardown for each test that may leave a sink running. */
__attribute__((unused)) static int sink_teardown(void **state)
{
    (void)state;
    sink_kill_leftover();
    return 0;
}

/* 0 when the live tests can run here; 77 (skip, with the reason on stderr) without
 * io_uring or outside ctest. Also ignores SIGPIPE: a sink may hang up mid-send. */
__attribute__((unused)) static int live_preflight(void)
{
    struct eng_loop *probe = NULL;
    if (eng_loop_new(NULL, &probe) == ENG_ERR_URING) {
        fprintf(stderr, "io_uring is not available: skipped\n");
        return 77;
    }
    eng_loop_free(probe);
    if (getenv("FLOORMTA_BIN") == NULL) {
        fprintf(stderr, "FLOORMTA_BIN is not set (run through ctest): skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Makes the scratch directory work (a mkdtemp template, rewritten), the test PKI in it for
 * mx_name, and *tls, a client context (the floor) trusting its root. Returns 0 or -1. */
__attribute__((unused)) static int live_pki_setup(char *work, const char *mx_name,
                                                  struct tls_ctx **tls)
{
    if (mkdtemp(work) == NULL || testpki_generate(work, mx_name) != 0)
        return -1;
    char ca[PATH_MAX];
    snprintf(ca, sizeof(ca), "%s/ca.crt", work);
    struct tls_client_config cfg = { .ca_file = ca };
    return tls_ctx_new_client(&cfg, tls) == 0 ? 0 : -1;
}

/* Frees tls and removes work with everything in it. Returns 0 or -1. */
__attribute__((unused)) static int live_pki_teardown(const char *work, struct tls_ctx *tls)
{
    tls_ctx_free(tls);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", work);
    return system(cmd) == 0 ? 0 : -1;
}

#endif /* FLOORMTA_TESTS_ENGINE_SINK_FIXTURE_H */
