/*
 * tests/engine/smtpd_harness.c — floormta-smtpd-harness: the submission server on one
 * loop, for the integration tests that drive it with real clients (swaks,
 * smtp-source, openssl s_client).
 *
 *   floormta-smtpd-harness --pki DIR --spool DIR --ready-file FILE
 *       [--listen ADDR:PORT] [--listen-tls ADDR:PORT] [--creds FILE] [--relay NETS]
 *       [--max-size N] [--max-rcpts N] [--command-timeout MS] [--data-timeout MS]
 *       [--max-per-client N] [--log-level LEVEL]
 *
 * The certificate is <pki>/valid.crt / .key (tests/pki). Every accepted message is
 * written to <spool>/msg-N.eml (content) and msg-N.env (envelope: "from <a>", "rcpt
 * <b>" lines), each fsynced and renamed into place, the directory fsynced, and only
 * then is done called (from a timer, never from inside submit), so a test counts
 * exactly what would have been queued. Once listening, "listening ADDR:PORT MODE" lines
 * go to the ready file. SIGTERM / SIGINT stop it; it then prints
 * "smtpd-harness: sessions=S messages=M" and one "reject NAME=N" per reason.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "engine/log.h"
#include "engine/loop.h"
#include "engine/smtpd.h"
#include "tls/tls.h"

#define PENDING_MAX 4096

struct pending {
    eng_smtpd_submit_done_fn done;
    void *arg;
    int res;
    char qid[32];
};

struct harness {
    struct eng_loop *loop;
    struct eng_smtpd *d;
    const char *spool;
    uint64_t seq;
    eng_handle_t timer;
    struct pending pend[PENDING_MAX];
    size_t npend;
    int sigfd;
    eng_handle_t sigh;
    bool stopping;
};

static int write_file(const char *dir, const char *name, const char *a, size_t alen)
{
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/.tmp-%s", dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < alen) {
        ssize_t n = write(fd, a + off, alen - off);
        if (n < 0) {
            int err = -errno;
            close(fd);
            return err;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return -errno;
    return rename(tmp, dst) == 0 ? 0 : -errno;
}

static int submit(void *arg, const struct eng_smtpd_message *m, eng_smtpd_submit_done_fn done,
                  void *done_arg)
{
    struct harness *hs = arg;
    if (hs->npend == PENDING_MAX)
        return -EAGAIN;
    uint64_t n = ++hs->seq;
    char env[65536];
    size_t elen = (size_t)snprintf(env, sizeof(env), "from <%s>\nauth %s\ntls %s %s\n", m->sender,
                                   m->auth_user ? m->auth_user : "-",
                                   m->tls_version ? tls_version_name(m->tls_version) : "-",
                                   m->tls_cipher[0] ? m->tls_cipher : "-");
    for (size_t i = 0; i < m->nrcpts && elen < sizeof(env) - 400; i++)
        elen += (size_t)snprintf(env + elen, sizeof(env) - elen, "rcpt <%s>\n", m->rcpts[i]);
    char name[64];
    snprintf(name, sizeof(name), "msg-%llu.env", (unsigned long long)n);
    int err = write_file(hs->spool, name, env, elen);
    snprintf(name, sizeof(name), "msg-%llu.eml", (unsigned long long)n);
    if (err == 0)
        err = write_file(hs->spool, name, m->content, m->content_len);
    if (err == 0) {
        int dfd = open(hs->spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    struct pending *p = &hs->pend[hs->npend++];
    p->done = done;
    p->arg = done_arg;
    p->res = err;
    snprintf(p->qid, sizeof(p->qid), "H%llu", (unsigned long long)n);
    if (!eng_handle_busy(hs->loop, hs->timer, ENG_OP_TIMER))
        eng_op_timer(hs->loop, hs->timer, 1);
    return 0;
}

static void timer_complete(void *ctx, const struct eng_completion *comp)
{
    struct harness *hs = ctx;
    (void)comp;
    /* done may submit again (a pipelined next message): take the batch first. */
    size_t n = hs->npend;
    struct pending batch[64];
    while (n > 0) {
        size_t k = n < 64 ? n : 64;
        memcpy(batch, hs->pend, k * sizeof(batch[0]));
        memmove(hs->pend, hs->pend + k, (hs->npend - k) * sizeof(batch[0]));
        hs->npend -= k;
        n -= k;
        for (size_t i = 0; i < k; i++)
            batch[i].done(batch[i].arg, batch[i].res, batch[i].res == 0 ? batch[i].qid : NULL);
    }
    if (hs->npend > 0 && !eng_handle_busy(hs->loop, hs->timer, ENG_OP_TIMER))
        eng_op_timer(hs->loop, hs->timer, 1);
    if (hs->stopping) {
        /* eng_loop_run returns once the server's handles and this one are gone. */
        if (hs->npend == 0 && eng_smtpd_idle(hs->d))
            eng_handle_close(hs->loop, hs->timer);
        else if (!eng_handle_busy(hs->loop, hs->timer, ENG_OP_TIMER))
            eng_op_timer(hs->loop, hs->timer, 10);
    }
}

static const struct eng_handle_ops timer_ops = { .on_complete = timer_complete };

static void signal_complete(void *ctx, const struct eng_completion *comp)
{
    struct harness *hs = ctx;
    if (comp->res == -ECANCELED)
        return;
    struct signalfd_siginfo si;
    if (comp->res > 0 && read(hs->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        hs->stopping = true;
        eng_smtpd_shutdown(hs->d);
        eng_handle_close(hs->loop, hs->sigh);
        if (!eng_handle_busy(hs->loop, hs->timer, ENG_OP_TIMER))
            eng_op_timer(hs->loop, hs->timer, 1);
        return;
    }
    eng_op_poll(hs->loop, hs->sigh, POLLIN, 0);
}

static const struct eng_handle_ops signal_ops = { .on_complete = signal_complete };

static int usage(void)
{
    fprintf(stderr, "usage: floormta-smtpd-harness --pki DIR --spool DIR --ready-file FILE "
                    "[--listen ADDR] [--listen-tls ADDR] [--creds FILE] [--relay NETS] "
                    "[--max-size N] [--max-rcpts N] [--command-timeout MS] "
                    "[--data-timeout MS] [--max-per-client N] [--log-level LEVEL]\n");
    return 2;
}

int main(int argc, char **argv)
{
    static struct harness hs;
    struct eng_smtpd_config cfg = { .hostname = "mx.floormta.test" };
    const char *pki = NULL, *ready = NULL, *creds_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        i++;
        if (strcmp(a, "--pki") == 0)
            pki = v;
        else if (strcmp(a, "--spool") == 0)
            hs.spool = v;
        else if (strcmp(a, "--ready-file") == 0)
            ready = v;
        else if (strcmp(a, "--creds") == 0)
            creds_file = v;
        else if (strcmp(a, "--relay") == 0)
            cfg.relay_networks = v;
        else if (strcmp(a, "--listen") == 0 || strcmp(a, "--listen-tls") == 0) {
            if (cfg.nlisten == ENG_SMTPD_LISTEN_MAX)
                return usage();
            cfg.listen[cfg.nlisten].addr = v;
            cfg.listen[cfg.nlisten++].mode = strcmp(a, "--listen") == 0
                                                     ? ENG_SMTPD_MODE_STARTTLS
                                                     : ENG_SMTPD_MODE_IMPLICIT_TLS;
        } else if (strcmp(a, "--max-size") == 0)
            cfg.max_message_size = strtoull(v, NULL, 10);
        else if (strcmp(a, "--max-rcpts") == 0)
            cfg.max_rcpts = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--command-timeout") == 0)
            cfg.command_timeout_ms = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--data-timeout") == 0)
            cfg.data_timeout_ms = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--max-per-client") == 0)
            cfg.max_per_client = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--log-level") == 0) {
            enum eng_log_level lvl;
            if (eng_log_level_parse(v, &lvl) != 0)
                return usage();
            eng_log_set_level(lvl);
        } else
            return usage();
    }
    if (pki == NULL || hs.spool == NULL || ready == NULL || cfg.nlisten == 0)
        return usage();

    char crt[PATH_MAX], key[PATH_MAX];
    snprintf(crt, sizeof(crt), "%s/valid.crt", pki);
    snprintf(key, sizeof(key), "%s/valid.key", pki);
    struct tls_server_config tcfg = { .cert_file = crt, .key_file = key };
    struct tls_ctx *tls = NULL;
    int err = tls_ctx_new_server(&tcfg, &tls);
    if (err != 0) {
        fprintf(stderr, "smtpd-harness: %s: %s\n", crt, tls_strerror(err));
        return 1;
    }
    struct eng_smtpd_credentials *creds = NULL;
    if (creds_file && (err = eng_smtpd_credentials_load(creds_file, &creds)) != 0) {
        fprintf(stderr, "smtpd-harness: %s: %s\n", creds_file, strerror(-err));
        return 1;
    }
    cfg.tls = tls;
    cfg.creds = creds;
    cfg.submit = submit;
    cfg.submit_arg = &hs;

    err = eng_loop_new(NULL, &hs.loop);
    if (err == ENG_ERR_URING) {
        fprintf(stderr, "smtpd-harness: io_uring is not available\n");
        return 77;
    }
    if (err != 0 || eng_handle_open(hs.loop, -1, &timer_ops, &hs, &hs.timer) != 0)
        return 1;
    err = eng_smtpd_new(hs.loop, &cfg, &hs.d);
    if (err != 0) {
        fprintf(stderr, "smtpd-harness: cannot start: %s\n", eng_strerror(err));
        return 1;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    hs.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (hs.sigfd < 0 || eng_handle_open(hs.loop, hs.sigfd, &signal_ops, &hs, &hs.sigh) != 0 ||
        eng_op_poll(hs.loop, hs.sigh, POLLIN, 0) != 0)
        return 1;

    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp", ready);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return 1;
    for (size_t i = 0; i < cfg.nlisten; i++) {
        char addr[64];
        eng_smtpd_listen_address(hs.d, i, addr, sizeof(addr));
        fprintf(f, "listening %s %s\n", addr,
                cfg.listen[i].mode == ENG_SMTPD_MODE_IMPLICIT_TLS ? "tls" : "starttls");
    }
    fclose(f);
    rename(tmp, ready);

    err = eng_loop_run(hs.loop);
    struct eng_smtpd_stats st;
    eng_smtpd_stats(hs.d, &st);
    printf("smtpd-harness: sessions=%llu messages=%llu tls=%llu auth=%llu\n",
           (unsigned long long)st.sessions, (unsigned long long)st.messages,
           (unsigned long long)st.tls_handshakes, (unsigned long long)st.auth_ok);
    for (int i = 0; i < ENG_SMTPD_REJ__COUNT; i++)
        printf("reject %s=%llu\n", eng_smtpd_reject_name((enum eng_smtpd_reject)i),
               (unsigned long long)st.rejects[i]);
    eng_loop_free(hs.loop);
    eng_smtpd_free(hs.d);
    eng_smtpd_credentials_free(creds);
    tls_ctx_free(tls);
    close(hs.sigfd);
    return err == 0 ? 0 : 1;
}
