/*
 * tests/fuzz/fuzz_smtpd.c — what a hostile mail client can send the submission server:
 * bytes through its session state machine (engine/smtpd_int.h), driven the way
 * engine/smtpd_io.c drives it, without sockets, TLS or crypt.
 *
 * Input: 4 header bytes, then the client's bytes.
 *   [0] flags: STARTTLS offered, client in the relay networks, credentials configured,
 *       implicit TLS, 2 bits of client address kind (IPv4, IPv6, v4-mapped, not IP), a
 *       255-byte hostname, STARTTLS handshakes fail;
 *   [1] limits: max_rcpts, max_message_size, max_auth_failures (small ones too);
 *   [2..3] with the client's bytes, the seed of what the I/O side and the owner decide:
 *       a refusal instead of the greeting, read sizes (1 byte to a whole receive
 *       buffer), whether the wire had room for the replies, submit and credential-check
 *       results, a server shutdown while they ran, a timeout or a shutdown between
 *       reads.
 * The client's bytes arrive in reads, each in a buffer of its own size; a read's
 * bytes are offered until taken as smtpd_io.c's pump does: SUBMIT is answered with
 * smtpd_sess_message + smtpd_sess_submitted, AUTH with smtpd_sess_auth_request +
 * smtpd_sess_auth_checked (a result the input chooses: crypt never runs), STARTTLS
 * with smtpd_sess_tls_ready (the rest of the read dropped), PAUSE by taking the
 * replies, CLOSE ends the session.
 *
 * Invariants: *used within what was offered, all of it for MORE; progress (a PAUSE is
 * only for a nearly full reply buffer, and taking the replies lets input in); each
 * action in the state it belongs to; out_len <= SMTPD_OUT_CAP, never a reply dropped
 * for lack of room (the server logs that as an error); replies are whole lines
 * "ddd[ -]text" CRLF with RFC 5321 text (no CR, LF or bytes outside 32..126, the HTAB
 * aside) and a continuation keeps its code; AUTH only over TLS; a message only
 * from a relay network or an authenticated client, with 1..max_rcpts valid
 * recipients, content within max_size + the Received header bound, CRLF line ends
 * only, content lines within 998 octets; state names known.
 */
#define _GNU_SOURCE
#include "tests/fuzz/fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine/log.h"
#include "engine/smtpd_int.h"
#include "queue/queue.h"
#include "tls/tls.h"

#define HDR_LEN 4

/* A SHA-512 crypt(3) hash ("secret"): the credentials file needs a well-formed one,
 * but no check ever runs crypt here, so which password it is does not matter. */
#define CREDS_TEXT                                                                           \
    "# fuzz\nuser:$6$fuzzsalt$iDTMfLlIWXnU0u/ucN8Rvel1jyy/OslJpB.sv1b7aqQg/Na4Y9B47sFqgSiQ4" \
    "wv/4SbFVVCnHAGIJVpklv8Rc.\n"

static struct eng_smtpd_credentials *creds;
static int log_pipe[2] = { -1, -1 };
static char long_host[SMTPD_NAME_MAX + 1];

/* ---- set-up, once ------------------------------------------------------------------ */

/* The credentials: loaded once from an anonymous memory file (no file on disk); if
 * memfd_create is missing, from a temporary file removed right after. */
static void load_creds(void)
{
    char path[64];
    int fd = memfd_create("fuzz-creds", MFD_CLOEXEC);
    if (fd >= 0) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    } else {
        snprintf(path, sizeof(path), "/tmp/floormta-fuzz-creds.XXXXXX");
        fd = mkstemp(path);
        fuzz_check(fd >= 0);
    }
    size_t len = sizeof(CREDS_TEXT) - 1;
    fuzz_check(write(fd, CREDS_TEXT, len) == (ssize_t)len);
    fuzz_check(eng_smtpd_credentials_load(path, &creds) == 0);
    fuzz_check(eng_smtpd_credentials_count(creds) == 1);
    if (strncmp(path, "/proc/", 6) != 0)
        unlink(path);
    close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    load_creds();
    /* Only errors are logged, into a pipe read after every input: the one error the
     * session can log is a reply dropped for lack of room, which must never happen. */
    fuzz_check(pipe2(log_pipe, O_NONBLOCK | O_CLOEXEC) == 0);
    eng_log_set_fd(log_pipe[1]);
    eng_log_set_level(ENG_LOG_ERROR);
    memset(long_host, 'h', SMTPD_NAME_MAX);
    return 0;
}

static void check_no_error_logged(void)
{
    char buf[512];
    ssize_t n = read(log_pipe[0], buf, sizeof(buf) - 1);
    if (n > 0) {
        buf[n] = '\0';
        fprintf(stderr, "fuzz_smtpd: the server logged an error:\n%s", buf);
    }
    fuzz_check(n <= 0);
}

/* ---- decisions ------------------------------------------------------------------------- */

static uint32_t rng_state;

static uint32_t rng(void)
{
    return fuzz_xorshift32(&rng_state);
}

/* The size of the next read: mostly small, sometimes a whole receive buffer. */
static size_t read_size(size_t left)
{
    uint32_t r = rng();
    size_t n;
    switch (r % 8) {
    case 0:
    case 1: n = 1 + (r >> 8) % 8; break;
    case 2:
    case 3:
    case 4: n = 1 + (r >> 8) % 64; break;
    case 5:
    case 6: n = 1 + (r >> 8) % 1024; break;
    default: n = SMTPD_RBUF_CAP; break;
    }
    return n < left ? n : left;
}

/* ---- checks ------------------------------------------------------------------------------ */

static void check_state(const struct smtpd_sess *s)
{
    fuzz_check((unsigned)s->state < SMTPD_S__COUNT);
    fuzz_check(strcmp(smtpd_state_name(s->state), "unknown") != 0);
    fuzz_check(s->out_len <= SMTPD_OUT_CAP);
    fuzz_check(s->line_len < SMTPD_LINE_MAX);
    fuzz_check(s->nrcpts <= s->lim.max_rcpts);
    fuzz_check(!s->authed || s->tls);
}

/* The queued replies: whole lines, "ddd" then ' ' (last line) or '-', RFC 5321 text. */
static void check_replies(const char *p, size_t n)
{
    bool more = false; /* inside a multiline reply */
    char code[3];
    size_t i = 0;
    while (i < n) {
        const char *l = p + i;
        const char *lf = memchr(l, '\n', n - i);
        fuzz_check(lf != NULL);
        size_t len = (size_t)(lf - l) + 1;
        fuzz_check(len >= 6 && len <= SMTPD_REPLY_MAX);
        fuzz_check(l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' &&
                   l[2] <= '9');
        fuzz_check(l[3] == ' ' || l[3] == '-');
        fuzz_check(l[len - 2] == '\r');
        for (size_t k = 4; k < len - 2; k++) {
            unsigned char c = (unsigned char)l[k];
            fuzz_check(c == '\t' || (c >= 32 && c <= 126));
        }
        if (more)
            fuzz_check(memcmp(code, l, 3) == 0);
        memcpy(code, l, 3);
        more = l[3] == '-';
        i += len;
    }
    fuzz_check(!more);
}

/* The I/O side takes the replies (to the wire, or through TLS). */
static void take_replies(struct smtpd_sess *s)
{
    fuzz_check(s->out_len <= SMTPD_OUT_CAP);
    check_replies(s->out, s->out_len);
    s->out_len = 0;
}

static bool addr_ok(const char *a, bool empty_ok)
{
    size_t n = strnlen(a, ENG_SMTPD_ADDR_MAX + 1);
    if (n > ENG_SMTPD_ADDR_MAX)
        return false;
    if (n == 0)
        return empty_ok;
    const char *at = strrchr(a, '@');
    if (at == NULL || at == a || at[1] == '\0')
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] <= ' ' || a[i] == 0x7f || a[i] == '<' || a[i] == '>')
            return false;
    return true;
}

static bool has_8bit(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

static void check_message(const struct smtpd_sess *s, const struct eng_smtpd_message *m)
{
    fuzz_check(m->nrcpts >= 1 && m->nrcpts <= s->lim.max_rcpts);
    fuzz_check(addr_ok(m->sender, true));
    bool utf8 = has_8bit(m->sender);
    for (size_t i = 0; i < m->nrcpts; i++) {
        fuzz_check(addr_ok(m->rcpts[i], false));
        utf8 |= has_8bit(m->rcpts[i]);
    }
    fuzz_check(!utf8 || m->smtputf8); /* a UTF-8 address needs MAIL ... SMTPUTF8 */
    /* Never an open relay: an authenticated client, or one in the relay networks. */
    fuzz_check(m->auth_user != NULL || s->relay_net);
    fuzz_check(m->auth_user == NULL || m->tls_version != 0);
    fuzz_check(m->body == ENG_SMTPD_BODY_7BIT || m->body == ENG_SMTPD_BODY_8BITMIME);
    fuzz_check(m->size_param <= s->lim.max_size);
    fuzz_check(m->helo[0] != '\0' && strlen(m->helo) <= SMTPD_NAME_MAX);
    fuzz_check(strlen(m->session_id) < SMTPD_SID_MAX);
    fuzz_check(strlen(m->tls_cipher) < sizeof(s->tls_cipher));

    /* The content: the Received header, then what the client sent, dot-unstuffed. */
    fuzz_check(m->content != NULL);
    fuzz_check(m->content_len <= s->lim.max_size + SMTPD_RECEIVED_MAX);
    static const char rcvd[] = "Received: from ";
    fuzz_check(m->content_len >= sizeof(rcvd) - 1 &&
               memcmp(m->content, rcvd, sizeof(rcvd) - 1) == 0);
    fuzz_check(m->content_len >= 2 && m->content[m->content_len - 2] == '\r' &&
               m->content[m->content_len - 1] == '\n');
    /* The header's lines: from, the TLS comment (with TLS), by, the date. */
    unsigned hdr_lines = s->tls ? 4 : 3;
    size_t hdr = 0, line = 0;
    for (size_t i = 0; i < m->content_len; i++) {
        char c = m->content[i];
        if (c == '\n') {
            fuzz_check(i > 0 && m->content[i - 1] == '\r'); /* never a bare LF */
            if (hdr_lines > 0 && --hdr_lines == 0) {
                hdr = i + 1;
                fuzz_check(hdr < SMTPD_RECEIVED_MAX);
            }
            line = 0;
        } else if (hdr != 0 &&
                   !(c == '\r' && i + 1 < m->content_len && m->content[i + 1] == '\n')) {
            fuzz_check(++line <= SMTPD_TEXT_MAX);
        }
    }
    fuzz_check(hdr != 0);
    fuzz_check(m->content_len - hdr <= s->lim.max_size);
}

/* ---- one session ----------------------------------------------------------------------- */

struct run {
    struct smtpd_shared sh;
    struct smtpd_sess *s;
    bool starttls_fails;
    uint64_t submitted_ok;
    bool closed;
};

static void make_addr(unsigned kind, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (kind == 0) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(40000);
        inet_pton(AF_INET, "127.0.0.1", &a->sin_addr);
        *len = sizeof(*a);
    } else if (kind == 1 || kind == 2) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(40000);
        inet_pton(AF_INET6, kind == 1 ? "::1" : "::ffff:192.0.2.1", &a->sin6_addr);
        *len = sizeof(*a);
    } else {
        struct sockaddr_un *a = (struct sockaddr_un *)ss;
        a->sun_family = AF_UNIX;
        *len = sizeof(sa_family_t);
    }
}

/* The owner's answer to a complete message (smtpd_io.c's submit / submit_done). */
static void do_submit(struct run *r)
{
    struct smtpd_sess *s = r->s;
    fuzz_check(s->state == SMTPD_S_WAIT_DURABLE);
    struct eng_smtpd_message m;
    smtpd_sess_message(s, &m);
    check_message(s, &m);
    /* Input offered while the owner works is left alone. */
    size_t used = 1;
    fuzz_check(smtpd_sess_input(s, "QUIT\r\n", 6, &used) == SMTPD_ACT_PAUSE && used == 0);

    static const char long_id[] = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
                                  "0123456789ABCDEF0123456789ABCDEF";
    uint32_t d = rng();
    int res = 0;
    const char *qid = NULL;
    switch (d % 8) {
    case 0: qid = NULL; break;
    case 1: qid = long_id; break;
    case 2:
    case 3: qid = "00000000DEADBEEF"; break;
    case 4: res = -ENOSPC; break;
    case 5: res = -EFBIG; break;
    case 6: res = -EIO; break;
    default: res = -ENOMEM; break;
    }
    r->submitted_ok += res == 0;
    smtpd_sess_submitted(s, res, qid);
    fuzz_check(s->state == SMTPD_S_READY && s->nrcpts == 0 && s->body == NULL);
    fuzz_check(s->sh->stats.messages == r->submitted_ok);
    if ((d >> 8) % 16 == 0) {
        /* The server stopped meanwhile: the answer, then the 421 (smtpd_io.c resume). */
        fuzz_check(smtpd_sess_shutdown(s));
        r->closed = true;
    }
}

/* The checker's answer to a credential check (smtpd_io.c's auth_start / auth_done). */
static void do_auth(struct run *r)
{
    struct smtpd_sess *s = r->s;
    fuzz_check(s->state == SMTPD_S_AUTH_CHECK);
    fuzz_check(s->tls && s->sh->creds != NULL && !s->authed);
    const char *user, *pass;
    smtpd_sess_auth_request(s, &user, &pass);
    fuzz_check(strnlen(user, SMTPD_NAME_MAX + 1) <= SMTPD_NAME_MAX);
    fuzz_check(strnlen(pass, SMTPD_LINE_MAX) < SMTPD_LINE_MAX);
    size_t used = 1;
    fuzz_check(smtpd_sess_input(s, "NOOP\r\n", 6, &used) == SMTPD_ACT_PAUSE && used == 0);

    uint32_t d = rng();
    int res = d % 4 == 0 ? 0 : d % 4 == 3 ? -ENOMEM : -EACCES;
    unsigned failures = s->auth_failures;
    enum smtpd_action act = smtpd_sess_auth_checked(s, res);
    fuzz_check(s->auth_pass[0] == '\0');
    if (act == SMTPD_ACT_CLOSE) {
        fuzz_check(res == -EACCES && s->state == SMTPD_S_CLOSING);
        fuzz_check(s->auth_failures >= s->lim.max_auth_failures);
        r->closed = true;
        return;
    }
    fuzz_check(act == SMTPD_ACT_MORE && s->state == SMTPD_S_READY);
    fuzz_check(s->authed == (res == 0));
    fuzz_check(s->auth_failures == failures + (res == -EACCES));
    if ((d >> 8) % 16 == 0) {
        fuzz_check(smtpd_sess_shutdown(s));
        r->closed = true;
    }
}

/* The TLS handshake after STARTTLS's 220 (smtpd_io.c's start_tls / handshake). */
static void do_starttls(struct run *r)
{
    struct smtpd_sess *s = r->s;
    fuzz_check(s->state == SMTPD_S_STARTTLS && s->sh->tls_available && !s->tls);
    if (r->starttls_fails) {
        r->closed = true;
        return;
    }
    static const char *const ciphers[] = {
        "TLS_AES_128_GCM_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "A-CIPHER-NAME-LONGER-THAN-THE-SESSION-KEEPS-OF-IT-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        NULL,
    };
    uint32_t d = rng();
    smtpd_sess_tls_ready(s, d & 1 ? TLS_VERSION_1_3 : TLS_VERSION_1_2, ciphers[(d >> 1) % 4]);
    fuzz_check(s->state == SMTPD_S_GREETED && s->tls && !s->esmtp && s->helo[0] == '\0');
    fuzz_check(s->nrcpts == 0 && s->sender[0] == '\0' && s->body == NULL);
}

/* Offers one read's bytes until they are taken or the session ends. */
static void pump(struct run *r, const char *buf, size_t n)
{
    struct smtpd_sess *s = r->s;
    size_t pos = 0;
    bool paused = false; /* the last call paused and the replies were taken since */
    while (pos < n && !r->closed) {
        size_t used = SIZE_MAX;
        enum smtpd_action act = smtpd_sess_input(s, buf + pos, n - pos, &used);
        fuzz_check(used <= n - pos);
        check_state(s);
        pos += used;
        /* Most of the time the wire has room and the replies leave at once. */
        bool take = act != SMTPD_ACT_MORE || rng() % 8 != 0;
        switch (act) {
        case SMTPD_ACT_MORE:
            fuzz_check(pos == n);
            fuzz_check(s->state != SMTPD_S_WAIT_DURABLE && s->state != SMTPD_S_AUTH_CHECK &&
                       s->state != SMTPD_S_STARTTLS);
            break;
        case SMTPD_ACT_PAUSE:
            /* Only for a full reply buffer, and taking the replies must let input in. */
            fuzz_check(SMTPD_OUT_CAP - s->out_len < SMTPD_REPLY_MAX + SMTPD_CLOSE_REPLY_MAX);
            fuzz_check(!(paused && used == 0));
            break;
        case SMTPD_ACT_STARTTLS:
            take_replies(s);
            do_starttls(r);
            pos = n; /* plaintext pipelined behind STARTTLS is dropped (CVE-2011-0411) */
            break;
        case SMTPD_ACT_SUBMIT:
            fuzz_check(used > 0);
            take_replies(s);
            do_submit(r);
            break;
        case SMTPD_ACT_AUTH:
            fuzz_check(used > 0);
            take_replies(s);
            do_auth(r);
            break;
        case SMTPD_ACT_CLOSE:
            fuzz_check(s->state == SMTPD_S_CLOSING);
            r->closed = true;
            break;
        default: fuzz_check(!"unknown action");
        }
        paused = act == SMTPD_ACT_PAUSE;
        check_state(s);
        if (take)
            take_replies(s);
    }
    check_no_error_logged();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HDR_LEN)
        return 0;
    uint8_t flags = data[0], limits = data[1];
    /* The decisions' seed: bytes 2..3 and the client's bytes, so that every input gets
     * its own reads and results. */
    uint32_t h = 2166136261u ^ ((uint32_t)data[2] << 8 | data[3]);
    for (size_t i = HDR_LEN; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    rng_state = h ? h : 1;

    static const unsigned rcpts[8] = { 0, 1, 2, 3, 5, 8, 0, QUEUE_RCPTS_MAX };
    static const uint64_t sizes[8] = { 0, 1, 64, 512, 4096, 20000, 70000, 1u << 20 };
    static const unsigned failures[4] = { 0, 1, 2, 5 };
    struct eng_smtpd_config cfg = {
        .hostname = flags & 0x40 ? long_host : "mx.fuzz.test",
        .max_rcpts = rcpts[limits & 7],
        .max_message_size = sizes[(limits >> 3) & 7],
        .max_auth_failures = failures[(limits >> 6) & 3],
        .relay_networks = flags & 0x02 ? "127.0.0.0/8 ::1/128 192.0.2.0/24" : "198.51.100.0/24",
        .creds = flags & 0x04 ? creds : NULL,
        .tls = flags & 0x01 ? (struct tls_ctx *)1 : NULL, /* only "TLS available" is seen */
    };
    bool implicit_tls = flags & 0x08;
    struct run r = { .starttls_fails = flags & 0x80 };
    fuzz_check(smtpd_shared_init(&r.sh, &cfg) == 0);
    struct sockaddr_storage ss;
    socklen_t sslen;
    make_addr((flags >> 4) & 3, &ss, &sslen);

    r.s = malloc(sizeof(*r.s));
    fuzz_check(r.s != NULL);
    struct smtpd_sess *s = r.s;
    fuzz_check(smtpd_sess_init(s, &r.sh, (struct sockaddr *)&ss, sslen) == 0);
    fuzz_check(s->relay_net == (((flags >> 4) & 3) != 3 && (flags & 0x02)));
    fuzz_check(s->state == SMTPD_S_NEW);
    if (implicit_tls) {
        smtpd_sess_tls_ready(s, TLS_VERSION_1_3, "TLS_AES_256_GCM_SHA384");
        fuzz_check(s->state == SMTPD_S_NEW && s->tls);
    }
    uint32_t d = rng();
    enum eng_smtpd_reject refuse = d % 64 == 0   ? ENG_SMTPD_REJ_CONN_PER_CLIENT
                                   : d % 64 == 1 ? ENG_SMTPD_REJ_CONN_TOTAL
                                                 : ENG_SMTPD_REJ__COUNT;
    enum smtpd_action act = smtpd_sess_start(s, refuse);
    fuzz_check(act == (refuse == ENG_SMTPD_REJ__COUNT ? SMTPD_ACT_MORE : SMTPD_ACT_CLOSE));
    take_replies(s);
    r.closed = act == SMTPD_ACT_CLOSE;

    const uint8_t *p = data + HDR_LEN;
    size_t left = size - HDR_LEN;
    while (left > 0 && !r.closed) {
        /* One read, in a buffer of exactly its size: an overread is seen. */
        size_t n = read_size(left);
        char *buf = malloc(n);
        fuzz_check(buf != NULL);
        memcpy(buf, p, n);
        pump(&r, buf, n);
        free(buf);
        p += n;
        left -= n;
        if (r.closed)
            break;
        fuzz_check(smtpd_sess_timeout_ms(s) ==
                   (s->state == SMTPD_S_DATA ? s->lim.data_timeout_ms : s->lim.command_timeout_ms));
        d = rng();
        if (d % 128 == 0) {
            /* The client went silent. */
            size_t before = s->out_len;
            bool replied = smtpd_sess_timeout(s);
            fuzz_check(replied == (s->out_len > before));
            r.closed = true;
        } else if (d % 128 == 1) {
            /* The server stops (smtpd_conn_close_all). */
            smtpd_sess_shutdown(s);
            r.closed = true;
        }
        check_state(s);
    }
    if (r.closed && s->state == SMTPD_S_CLOSING && left > 0) {
        /* The I/O side reads no more, but a closing session would drop it all anyway. */
        size_t used = 0, before = s->out_len;
        fuzz_check(smtpd_sess_input(s, (const char *)p, left, &used) == SMTPD_ACT_MORE);
        fuzz_check(used == left && s->out_len == before);
    }
    if (r.closed)
        fuzz_check(s->state == SMTPD_S_CLOSING || r.starttls_fails);
    take_replies(s);
    check_no_error_logged();
    smtpd_sess_fini(s);
    free(s);
    return 0;
}
