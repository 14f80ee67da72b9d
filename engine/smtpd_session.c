/*
 * engine/smtpd_session.c — the submission server's SMTP dialogue as one state machine
 * (RFC 5321; 2920 PIPELINING; 3207 STARTTLS; 4954 AUTH; 1870 SIZE; 6152 8BITMIME; 6531
 * SMTPUTF8; 2034 ENHANCEDSTATUSCODES).
 *
 * Pure: it consumes plaintext the I/O side hands over, queues replies in s->out and
 * returns what the I/O side must do next; no sockets, no loop, so tests drive it with
 * strings. Pipelined commands are answered in order from one buffer; the machine stops
 * at the points where the client must wait for us (STARTTLS, end of data: the 250
 * needs the owner's durability), and the I/O side sends what is queued before it
 * blocks there.
 *
 * Only set_state() writes s->state, and it logs every transition at debug level.
 */
#include "engine/smtpd_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/log.h"
#include "queue/queue.h"

_Static_assert(ENG_SMTPD_ADDR_MAX == QUEUE_ADDR_MAX, "an accepted address must fit the queue");

static const char *const state_names[] = {
#define SMTPD_STATE_NAME(name, str) [name] = str,
    SMTPD_STATES(SMTPD_STATE_NAME)
#undef SMTPD_STATE_NAME
};

const char *smtpd_state_name(enum smtpd_state st)
{
    return (unsigned)st < SMTPD_S__COUNT ? state_names[st] : "unknown";
}

static void set_state(struct smtpd_sess *s, enum smtpd_state next)
{
    if (next != s->state && eng_log_enabled(ENG_LOG_DEBUG))
        eng_log(ENG_LOG_DEBUG, "smtpd: session=%s %s -> %s", s->sid, smtpd_state_name(s->state),
                smtpd_state_name(next));
    s->state = next;
}

void smtpd_sess_reply(struct smtpd_sess *s, const char *text, size_t len)
{
    if (SMTPD_OUT_CAP - s->out_len < len) {
        /* Cannot happen: commands are taken only with SMTPD_REPLY_MAX free, and
         * SMTPD_CLOSE_REPLY_MAX more for a 421 between commands. */
        eng_log(ENG_LOG_ERROR, "smtpd: session=%s reply overflow", s->sid);
        return;
    }
    memcpy(s->out + s->out_len, text, len);
    s->out_len += len;
}

#define REPLY(s, lit) smtpd_sess_reply((s), (lit), sizeof(lit) - 1)

static void replyf(struct smtpd_sess *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void replyf(struct smtpd_sess *s, const char *fmt, ...)
{
    char buf[SMTPD_REPLY_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    smtpd_sess_reply(s, buf, (size_t)n);
}

static void reject(struct smtpd_sess *s, enum eng_smtpd_reject why)
{
    s->sh->stats.rejects[why]++;
}

/* ---- life cycle ---------------------------------------------------------------- */

int smtpd_sess_init(struct smtpd_sess *s, struct smtpd_shared *sh, const struct sockaddr *addr,
                    socklen_t addrlen)
{
    /* The header only: the buffers behind it are written before they are read. */
    memset(s, 0, offsetof(struct smtpd_sess, line));
    s->sh = sh;
    s->state = SMTPD_S_NEW;
    s->id = ++sh->next_id;
    snprintf(s->sid, sizeof(s->sid), "%010llX%06llX",
             (unsigned long long)(sh->id_base & 0xffffffffffull),
             (unsigned long long)(s->id & 0xffffff));
    if (addrlen > sizeof(s->client))
        addrlen = sizeof(s->client);
    memcpy(&s->client, addr, addrlen);
    s->client_len = addrlen;
    if (addr->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6))
            inet_ntop(AF_INET, a6->s6_addr + 12, s->client_ip, sizeof(s->client_ip));
        else
            inet_ntop(AF_INET6, a6, s->client_ip, sizeof(s->client_ip));
    } else if (addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, s->client_ip,
                  sizeof(s->client_ip));
    } else {
        strcpy(s->client_ip, "unknown");
    }
    s->relay_net = eng_smtpd_nets_match(sh->nets, sh->nnets, addr);
    s->lim = sh->lim;
    s->rcpts = calloc(s->lim.max_rcpts, sizeof(*s->rcpts));
    s->rcpt_ptrs = calloc(s->lim.max_rcpts, sizeof(*s->rcpt_ptrs));
    if (s->rcpts == NULL || s->rcpt_ptrs == NULL) {
        smtpd_sess_fini(s);
        return -ENOMEM;
    }
    return 0;
}

void smtpd_sess_fini(struct smtpd_sess *s)
{
    smtpd_data_reset(s);
    free(s->rcpts);
    free(s->rcpt_ptrs);
    s->rcpts = NULL;
    s->rcpt_ptrs = NULL;
}

static void reset_transaction(struct smtpd_sess *s)
{
    s->sender[0] = '\0';
    s->size_param = 0;
    s->body_type = ENG_SMTPD_BODY_7BIT;
    s->smtputf8 = false;
    s->nrcpts = 0;
    smtpd_data_reset(s);
}

enum smtpd_action smtpd_sess_start(struct smtpd_sess *s, enum eng_smtpd_reject refuse)
{
    if (refuse == ENG_SMTPD_REJ_CONN_PER_CLIENT || refuse == ENG_SMTPD_REJ_CONN_TOTAL) {
        reject(s, refuse);
        if (refuse == ENG_SMTPD_REJ_CONN_PER_CLIENT)
            replyf(s, "421 4.7.0 %s Error: too many connections from %s\r\n", s->sh->hostname,
                   s->client_ip);
        else
            replyf(s, "421 4.3.2 %s Error: too many connections, try again later\r\n",
                   s->sh->hostname);
        set_state(s, SMTPD_S_CLOSING);
        return SMTPD_ACT_CLOSE;
    }
    replyf(s, "220 %s ESMTP floormta\r\n", s->sh->hostname);
    set_state(s, SMTPD_S_GREETED);
    return SMTPD_ACT_MORE;
}

void smtpd_sess_tls_ready(struct smtpd_sess *s, uint16_t version, const char *cipher)
{
    s->tls = true;
    s->tls_version = version;
    snprintf(s->tls_cipher, sizeof(s->tls_cipher), "%s", cipher ? cipher : "");
    s->sh->stats.tls_handshakes++;
    if (s->state == SMTPD_S_STARTTLS) {
        /* RFC 3207 4.2: forget everything learnt in plaintext; EHLO again. */
        s->esmtp = false;
        s->helo[0] = '\0';
        reset_transaction(s);
        set_state(s, SMTPD_S_GREETED);
    }
}

unsigned smtpd_sess_timeout_ms(const struct smtpd_sess *s)
{
    return s->state == SMTPD_S_DATA ? s->lim.data_timeout_ms : s->lim.command_timeout_ms;
}

bool smtpd_sess_timeout(struct smtpd_sess *s)
{
    bool can_reply = s->state != SMTPD_S_NEW && s->state != SMTPD_S_STARTTLS &&
                     s->state != SMTPD_S_CLOSING && s->state != SMTPD_S_WAIT_DURABLE &&
                     s->state != SMTPD_S_AUTH_CHECK;
    reject(s, ENG_SMTPD_REJ_TIMEOUT);
    if (can_reply)
        replyf(s, "421 4.4.2 %s Error: timeout exceeded\r\n", s->sh->hostname);
    set_state(s, SMTPD_S_CLOSING);
    return can_reply;
}

bool smtpd_sess_shutdown(struct smtpd_sess *s)
{
    bool can_reply = s->state != SMTPD_S_NEW && s->state != SMTPD_S_STARTTLS &&
                     s->state != SMTPD_S_CLOSING && s->state != SMTPD_S_WAIT_DURABLE &&
                     s->state != SMTPD_S_DATA && s->state != SMTPD_S_AUTH_CHECK;
    if (can_reply)
        replyf(s, "421 4.3.2 %s Service shutting down\r\n", s->sh->hostname);
    set_state(s, SMTPD_S_CLOSING);
    return can_reply;
}

/* ---- EHLO, STARTTLS ----------------------------------------------------------------- */

/* The argument after a verb of n letters: "" at the end, NULL if the verb is followed
 * by something other than a space (so "EHLOX" is not EHLO). */
static const char *verb_arg(const char *line, size_t len, size_t n)
{
    if (len == n)
        return "";
    if (line[n] != ' ')
        return NULL;
    return line + n + 1;
}

static bool printable_word(const char *p)
{
    if (*p == '\0')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '(' || *p == ')' ||
            *p == '\\')
            return false;
    return true;
}

static enum smtpd_action cmd_ehlo(struct smtpd_sess *s, const char *arg, bool extended)
{
    if (strlen(arg) > SMTPD_NAME_MAX || !printable_word(arg)) {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        replyf(s, "501 5.5.4 Syntax: %s hostname\r\n", extended ? "EHLO" : "HELO");
        return SMTPD_ACT_MORE;
    }
    /* EHLO may come at any time outside DATA and resets the transaction. */
    reset_transaction(s);
    strcpy(s->helo, arg);
    s->esmtp = extended;
    set_state(s, SMTPD_S_READY);
    if (!extended) {
        replyf(s, "250 %s\r\n", s->sh->hostname);
        return SMTPD_ACT_MORE;
    }
    replyf(s, "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n", s->sh->hostname,
           (unsigned long long)s->lim.max_size);
    if (s->sh->tls_available && !s->tls)
        REPLY(s, "250-STARTTLS\r\n");
    /* AUTH only over TLS (RFC 4954 4: PLAIN and LOGIN send the password in clear). */
    if (s->tls && s->sh->creds && !s->authed)
        REPLY(s, "250-AUTH PLAIN LOGIN\r\n");
    REPLY(s, "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n");
    return SMTPD_ACT_MORE;
}

static enum smtpd_action cmd_starttls(struct smtpd_sess *s, const char *arg)
{
    if (!s->sh->tls_available) {
        REPLY(s, "502 5.5.1 Error: command not implemented\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->tls) {
        REPLY(s, "554 5.5.1 Error: TLS already active\r\n");
        return SMTPD_ACT_MORE;
    }
    if (*arg != '\0') {
        REPLY(s, "501 5.5.4 Syntax: STARTTLS\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT) {
        REPLY(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
        return SMTPD_ACT_MORE;
    }
    REPLY(s, "220 2.0.0 Ready to start TLS\r\n");
    set_state(s, SMTPD_S_STARTTLS);
    return SMTPD_ACT_STARTTLS;
}

/* ---- AUTH ------------------------------------------------------------------------ */

/* Hands user / pass (borrowed) to the I/O side's checker: crypt takes milliseconds
 * (yescrypt: tens), which must not stall the loop's other sessions and deliveries. */
static enum smtpd_action auth_check(struct smtpd_sess *s, const char *user, const char *pass)
{
    size_t ulen = strlen(user), plen = strlen(pass);
    if (ulen >= sizeof(s->login_user) || plen >= sizeof(s->auth_pass)) {
        /* No stored user has such a name; a decoded line cannot hold such a password. */
        set_state(s, SMTPD_S_AUTH_CHECK);
        return smtpd_sess_auth_checked(s, -EACCES);
    }
    if (user != s->login_user)
        memcpy(s->login_user, user, ulen + 1);
    memcpy(s->auth_pass, pass, plen + 1);
    set_state(s, SMTPD_S_AUTH_CHECK);
    return SMTPD_ACT_AUTH;
}

void smtpd_sess_auth_request(const struct smtpd_sess *s, const char **user, const char **pass)
{
    *user = s->login_user;
    *pass = s->auth_pass;
}

enum smtpd_action smtpd_sess_auth_checked(struct smtpd_sess *s, int res)
{
    explicit_bzero(s->auth_pass, sizeof(s->auth_pass));
    if (s->state == SMTPD_S_AUTH_CHECK)
        set_state(s, SMTPD_S_READY);
    if (res == 0) {
        s->authed = true;
        snprintf(s->auth_user, sizeof(s->auth_user), "%s", s->login_user);
        s->sh->stats.auth_ok++;
        eng_log(ENG_LOG_INFO, "smtpd: session=%s client=%s auth ok user=%s", s->sid, s->client_ip,
                s->auth_user);
        REPLY(s, "235 2.7.0 Authentication successful\r\n");
        return SMTPD_ACT_MORE;
    }
    if (res != -EACCES) {
        reject(s, ENG_SMTPD_REJ_NO_MEMORY);
        eng_log(ENG_LOG_WARN, "smtpd: session=%s client=%s auth check failed: %s", s->sid,
                s->client_ip, strerror(-res));
        REPLY(s, "454 4.7.0 Temporary authentication failure\r\n");
        return SMTPD_ACT_MORE;
    }
    reject(s, ENG_SMTPD_REJ_AUTH_FAILED);
    s->auth_failures++;
    eng_log(ENG_LOG_WARN, "smtpd: session=%s client=%s auth failed failures=%u", s->sid,
            s->client_ip, s->auth_failures);
    if (s->auth_failures >= s->lim.max_auth_failures) {
        replyf(s, "421 4.7.0 %s Error: too many authentication failures\r\n", s->sh->hostname);
        set_state(s, SMTPD_S_CLOSING);
        return SMTPD_ACT_CLOSE;
    }
    REPLY(s, "535 5.7.8 Error: authentication failed\r\n");
    return SMTPD_ACT_MORE;
}

static enum smtpd_action bad_response(struct smtpd_sess *s)
{
    reject(s, ENG_SMTPD_REJ_SYNTAX);
    set_state(s, SMTPD_S_READY);
    REPLY(s, "501 5.5.2 Error: cannot decode the response\r\n");
    return SMTPD_ACT_MORE;
}

/* The PLAIN response "authzid NUL authcid NUL password" (RFC 4616), base64. */
static enum smtpd_action auth_plain(struct smtpd_sess *s, const char *text, size_t len)
{
    char buf[SMTPD_LINE_MAX];
    int n = smtpd_b64_decode(text, len, buf, sizeof(buf), true);
    if (n < 0)
        return bad_response(s);
    char *authz = buf;
    char *user = memchr(buf, '\0', (size_t)n);
    char *pass = user ? memchr(user + 1, '\0', (size_t)(buf + n - (user + 1))) : NULL;
    if (user == NULL || pass == NULL || memchr(pass + 1, '\0', (size_t)(buf + n - (pass + 1))))
        return bad_response(s);
    user++;
    pass++;
    /* Acting for another identity is not offered. */
    enum smtpd_action act;
    if (*authz != '\0' && strcmp(authz, user) != 0)
        act = auth_check(s, "", "");
    else
        act = auth_check(s, user, pass);
    explicit_bzero(buf, sizeof(buf));
    return act;
}

static enum smtpd_action auth_login_user(struct smtpd_sess *s, const char *text, size_t len)
{
    if (smtpd_b64_decode(text, len, s->login_user, sizeof(s->login_user), false) < 0)
        return bad_response(s);
    REPLY(s, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
    set_state(s, SMTPD_S_AUTH_LOGIN_PASS);
    return SMTPD_ACT_MORE;
}

static enum smtpd_action auth_login_pass(struct smtpd_sess *s, const char *text, size_t len)
{
    char pass[SMTPD_LINE_MAX];
    if (smtpd_b64_decode(text, len, pass, sizeof(pass), false) < 0)
        return bad_response(s);
    enum smtpd_action act = auth_check(s, s->login_user, pass);
    explicit_bzero(pass, sizeof(pass));
    return act;
}

/* A line answering a 334 challenge. */
static enum smtpd_action auth_response(struct smtpd_sess *s, const char *line, size_t len)
{
    if (len == 1 && line[0] == '*') {
        set_state(s, SMTPD_S_READY);
        REPLY(s, "501 5.7.0 Authentication aborted\r\n");
        return SMTPD_ACT_MORE;
    }
    switch (s->state) {
    case SMTPD_S_AUTH_PLAIN: return auth_plain(s, line, len);
    case SMTPD_S_AUTH_LOGIN_USER: return auth_login_user(s, line, len);
    default: return auth_login_pass(s, line, len);
    }
}

static enum smtpd_action cmd_auth(struct smtpd_sess *s, const char *arg)
{
    if (s->sh->creds == NULL) {
        REPLY(s, "503 5.5.1 Error: authentication not enabled\r\n");
        return SMTPD_ACT_MORE;
    }
    if (!s->tls) {
        reject(s, ENG_SMTPD_REJ_TLS_REQUIRED);
        REPLY(s, "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->state == SMTPD_S_GREETED) {
        REPLY(s, "503 5.5.1 Error: send EHLO first\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->authed) {
        REPLY(s, "503 5.5.1 Error: already authenticated\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->state != SMTPD_S_READY) {
        REPLY(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
        return SMTPD_ACT_MORE;
    }
    const char *sp = strchr(arg, ' ');
    size_t mlen = sp ? (size_t)(sp - arg) : strlen(arg);
    const char *ir = sp ? sp + 1 : NULL;
    if (mlen == 5 && strncasecmp(arg, "PLAIN", 5) == 0) {
        if (ir == NULL) {
            REPLY(s, "334 \r\n");
            set_state(s, SMTPD_S_AUTH_PLAIN);
            return SMTPD_ACT_MORE;
        }
        set_state(s, SMTPD_S_AUTH_PLAIN);
        /* RFC 4954 4: "=" is an empty initial response. */
        return auth_plain(s, ir, strcmp(ir, "=") == 0 ? 0 : strlen(ir));
    }
    if (mlen == 5 && strncasecmp(arg, "LOGIN", 5) == 0) {
        set_state(s, SMTPD_S_AUTH_LOGIN_USER);
        if (ir != NULL)
            return auth_login_user(s, ir, strlen(ir));
        REPLY(s, "334 VXNlcm5hbWU6\r\n"); /* "Username:" */
        return SMTPD_ACT_MORE;
    }
    REPLY(s, "504 5.5.4 Error: unsupported authentication mechanism\r\n");
    return SMTPD_ACT_MORE;
}

/* ---- MAIL, RCPT, DATA ------------------------------------------------------------------ */

/* 555 naming the parameter p[0, tok) (at most 64 bytes of it). The name is the
 * client's: reply text carries only HT and 32..126 (RFC 5321 4.2; never a lone CR),
 * and a parameter has no blanks, so any byte outside 33..126 is shown as '?'. */
static void reply_unsupported(struct smtpd_sess *s, const char *p, size_t tok)
{
    char name[65];
    size_t n = tok < sizeof(name) - 1 ? tok : sizeof(name) - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        name[i] = c > ' ' && c < 0x7f ? (char)c : '?';
    }
    name[n] = '\0';
    replyf(s, "555 5.5.4 Unsupported option: %s\r\n", name);
}

static enum smtpd_action cmd_mail(struct smtpd_sess *s, const char *line, size_t len)
{
    if (s->state == SMTPD_S_GREETED) {
        REPLY(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->state != SMTPD_S_READY) {
        REPLY(s, "503 5.5.1 Error: nested MAIL command\r\n");
        return SMTPD_ACT_MORE;
    }
    const char *params;
    bool utf8;
    int err = len >= 10 && strncasecmp(line, "MAIL FROM:", 10) == 0
                      ? smtpd_parse_path(line + 10, s->sender, &params, &utf8)
                      : -EINVAL;
    if (err != 0) {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        if (err == -E2BIG)
            REPLY(s, "501 5.1.7 Error: sender address too long\r\n");
        else
            REPLY(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
        s->sender[0] = '\0';
        return SMTPD_ACT_MORE;
    }
    s->size_param = 0;
    s->body_type = ENG_SMTPD_BODY_7BIT;
    s->smtputf8 = false;
    for (const char *p = params; *p;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        size_t tok = strcspn(p, " ");
        const char *eq = memchr(p, '=', tok);
        size_t klen = eq ? (size_t)(eq - p) : tok;
        err = smtpd_mail_param(s, p, klen, eq ? eq + 1 : NULL);
        if (err != 0) {
            reject(s, ENG_SMTPD_REJ_SYNTAX);
            if (err == -ENOTSUP)
                reply_unsupported(s, p, tok);
            else
                REPLY(s, "501 5.5.4 Bad parameter value\r\n");
            return SMTPD_ACT_MORE;
        }
        p += tok;
    }
    if (utf8 && !s->smtputf8) {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        REPLY(s, "553 5.6.7 Must declare SMTPUTF8 to send a UTF-8 address\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->size_param > s->lim.max_size) {
        reject(s, ENG_SMTPD_REJ_TOO_BIG);
        REPLY(s, "552 5.3.4 Error: message size exceeds fixed limit\r\n");
        return SMTPD_ACT_MORE;
    }
    s->nrcpts = 0;
    REPLY(s, "250 2.1.0 Ok\r\n");
    set_state(s, SMTPD_S_MAIL);
    return SMTPD_ACT_MORE;
}

static enum smtpd_action cmd_rcpt(struct smtpd_sess *s, const char *line, size_t len)
{
    if (s->state != SMTPD_S_MAIL && s->state != SMTPD_S_RCPT) {
        REPLY(s, "503 5.5.1 Error: need MAIL command\r\n");
        return SMTPD_ACT_MORE;
    }
    char addr[ENG_SMTPD_ADDR_MAX + 1];
    const char *params;
    bool utf8;
    int err = len >= 8 && strncasecmp(line, "RCPT TO:", 8) == 0
                      ? smtpd_parse_path(line + 8, addr, &params, &utf8)
                      : -EINVAL;
    if (err == 0 && addr[0] == '\0')
        err = -EINVAL;
    if (err != 0) {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        REPLY(s, "501 5.1.3 Error: bad recipient address syntax\r\n");
        return SMTPD_ACT_MORE;
    }
    while (*params == ' ')
        params++;
    if (*params != '\0') {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        REPLY(s, "555 5.5.4 Unsupported option\r\n");
        return SMTPD_ACT_MORE;
    }
    if (utf8 && !s->smtputf8) {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        REPLY(s, "553 5.6.7 Must declare SMTPUTF8 to send a UTF-8 address\r\n");
        return SMTPD_ACT_MORE;
    }
    /* Never an open relay: every recipient of a submission server is relayed. */
    if (!s->authed && !s->relay_net) {
        reject(s, ENG_SMTPD_REJ_RELAY_DENIED);
        eng_log(ENG_LOG_INFO, "smtpd: session=%s client=%s relay denied rcpt=<%s>", s->sid,
                s->client_ip, addr);
        REPLY(s, "554 5.7.1 Error: relay access denied\r\n");
        return SMTPD_ACT_MORE;
    }
    if (s->nrcpts >= s->lim.max_rcpts) {
        reject(s, ENG_SMTPD_REJ_TOO_MANY_RCPTS);
        REPLY(s, "452 4.5.3 Error: too many recipients\r\n");
        return SMTPD_ACT_MORE;
    }
    strcpy(s->rcpts[s->nrcpts++], addr);
    REPLY(s, "250 2.1.5 Ok\r\n");
    set_state(s, SMTPD_S_RCPT);
    return SMTPD_ACT_MORE;
}

static enum smtpd_action cmd_data(struct smtpd_sess *s, const char *arg)
{
    if (s->state != SMTPD_S_RCPT) {
        if (s->state == SMTPD_S_MAIL)
            REPLY(s, "554 5.5.1 Error: no valid recipients\r\n");
        else
            REPLY(s, "503 5.5.1 Error: need RCPT command\r\n");
        return SMTPD_ACT_MORE;
    }
    if (*arg != '\0') {
        REPLY(s, "501 5.5.4 Syntax: DATA\r\n");
        return SMTPD_ACT_MORE;
    }
    /* A failed allocation is reported after the dot (452), like every content
     * problem, so the client's pipeline stays in step. */
    (void)smtpd_data_begin(s);
    REPLY(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
    set_state(s, SMTPD_S_DATA);
    return SMTPD_ACT_MORE;
}

/* The final dot arrived: refuse what broke a limit, or hand the message over. */
static enum smtpd_action data_end(struct smtpd_sess *s)
{
    const char *text = NULL;
    enum eng_smtpd_reject why = ENG_SMTPD_REJ__COUNT;
    if (s->bare_lf) {
        text = "550 5.6.2 Error: bare <LF> received\r\n";
        why = ENG_SMTPD_REJ_BARE_LF;
    } else if (s->too_big) {
        text = "552 5.3.4 Error: message file too big\r\n";
        why = ENG_SMTPD_REJ_TOO_BIG;
    } else if (s->long_line) {
        text = "550 5.6.0 Error: message line longer than 998 characters\r\n";
        why = ENG_SMTPD_REJ_LINE_TOO_LONG;
    } else if (s->no_memory) {
        text = "452 4.3.1 Error: insufficient system storage\r\n";
        why = ENG_SMTPD_REJ_NO_MEMORY;
    }
    if (text) {
        reject(s, why);
        eng_log(ENG_LOG_INFO, "smtpd: session=%s client=%s message refused: %s", s->sid,
                s->client_ip, eng_smtpd_reject_name(why));
        smtpd_sess_reply(s, text, strlen(text));
        reset_transaction(s);
        set_state(s, SMTPD_S_READY);
        return SMTPD_ACT_MORE;
    }
    set_state(s, SMTPD_S_WAIT_DURABLE);
    return SMTPD_ACT_SUBMIT;
}

void smtpd_sess_message(struct smtpd_sess *s, struct eng_smtpd_message *m)
{
    for (unsigned i = 0; i < s->nrcpts; i++)
        s->rcpt_ptrs[i] = s->rcpts[i];
    *m = (struct eng_smtpd_message){
        .sender = s->sender,
        .rcpts = s->rcpt_ptrs,
        .nrcpts = s->nrcpts,
        .size_param = s->size_param,
        .body = s->body_type,
        .smtputf8 = s->smtputf8,
        .content = s->body,
        .content_len = s->body_len,
        .client = (const struct sockaddr *)&s->client,
        .client_len = s->client_len,
        .client_ip = s->client_ip,
        .helo = s->helo,
        .auth_user = s->authed ? s->auth_user : NULL,
        .tls_version = s->tls ? s->tls_version : 0,
        .tls_cipher = s->tls_cipher,
        .session_id = s->sid,
    };
}

void smtpd_sess_submitted(struct smtpd_sess *s, int res, const char *queue_id)
{
    if (res == 0) {
        s->sh->stats.messages++;
        s->sh->stats.bytes += s->body_len;
        eng_log(ENG_LOG_INFO,
                "smtpd: session=%s client=%s accepted queue_id=%s from=<%s> rcpts=%u size=%zu",
                s->sid, s->client_ip, queue_id ? queue_id : "-", s->sender, s->nrcpts, s->body_len);
        replyf(s, "250 2.0.0 Ok: queued as %.64s\r\n", queue_id ? queue_id : s->sid);
    } else {
        reject(s, ENG_SMTPD_REJ_SUBMIT_FAILED);
        eng_log(ENG_LOG_WARN, "smtpd: session=%s client=%s submit failed: %d", s->sid, s->client_ip,
                res);
        if (res == -ENOSPC)
            REPLY(s, "452 4.3.1 Error: insufficient system storage\r\n");
        else if (res == -EFBIG)
            REPLY(s, "552 5.3.4 Error: message file too big\r\n");
        else
            REPLY(s, "451 4.3.0 Error: queue file write error\r\n");
    }
    reset_transaction(s);
    if (s->state == SMTPD_S_WAIT_DURABLE)
        set_state(s, SMTPD_S_READY);
}

static enum smtpd_action cmd_rset(struct smtpd_sess *s)
{
    reset_transaction(s);
    REPLY(s, "250 2.0.0 Ok\r\n");
    if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT)
        set_state(s, SMTPD_S_READY);
    return SMTPD_ACT_MORE;
}

/* One command line without its line ending. */
static enum smtpd_action command(struct smtpd_sess *s, const char *line, size_t len)
{
    const char *arg;
    if (s->state >= SMTPD_S_AUTH_PLAIN && s->state <= SMTPD_S_AUTH_LOGIN_PASS)
        return auth_response(s, line, len);
    if (memchr(line, '\0', len)) {
        reject(s, ENG_SMTPD_REJ_SYNTAX);
        REPLY(s, "500 5.5.2 Error: NUL in command\r\n");
        return SMTPD_ACT_MORE;
    }
    if (len >= 4) {
        if (strncasecmp(line, "EHLO", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_ehlo(s, arg, true);
        if (strncasecmp(line, "HELO", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_ehlo(s, arg, false);
        if (strncasecmp(line, "MAIL", 4) == 0 && verb_arg(line, len, 4))
            return cmd_mail(s, line, len);
        if (strncasecmp(line, "RCPT", 4) == 0 && verb_arg(line, len, 4))
            return cmd_rcpt(s, line, len);
        if (strncasecmp(line, "DATA", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_data(s, arg);
        if (strncasecmp(line, "AUTH", 4) == 0 && (arg = verb_arg(line, len, 4)))
            return cmd_auth(s, arg);
        if (strncasecmp(line, "RSET", 4) == 0 && verb_arg(line, len, 4))
            return cmd_rset(s);
        if (strncasecmp(line, "NOOP", 4) == 0 && verb_arg(line, len, 4)) {
            REPLY(s, "250 2.0.0 Ok\r\n");
            return SMTPD_ACT_MORE;
        }
        if (strncasecmp(line, "VRFY", 4) == 0 && verb_arg(line, len, 4)) {
            REPLY(s, "252 2.5.2 Cannot VRFY user\r\n");
            return SMTPD_ACT_MORE;
        }
        if (strncasecmp(line, "QUIT", 4) == 0 && verb_arg(line, len, 4)) {
            REPLY(s, "221 2.0.0 Bye\r\n");
            set_state(s, SMTPD_S_CLOSING);
            return SMTPD_ACT_CLOSE;
        }
    }
    if (len >= 8 && strncasecmp(line, "STARTTLS", 8) == 0 && (arg = verb_arg(line, len, 8)))
        return cmd_starttls(s, arg);
    reject(s, ENG_SMTPD_REJ_SYNTAX);
    REPLY(s, "500 5.5.2 Error: command not recognized\r\n");
    return SMTPD_ACT_MORE;
}

/* ---- input ------------------------------------------------------------------------ */

/* A complete line (data[0, len), len includes the LF). */
static enum smtpd_action line_done(struct smtpd_sess *s, char *data, size_t len)
{
    len--;
    if (len == 0 || data[len - 1] != '\r') {
        /* RFC 5321 2.3.8: lines end with CRLF. A bare LF is how SMTP smuggling starts;
         * answer like Postfix's smtpd_forbid_bare_newline. */
        reject(s, ENG_SMTPD_REJ_BARE_LF);
        REPLY(s, "500 5.5.2 Error: bare <LF> received\r\n");
        if (s->state >= SMTPD_S_AUTH_PLAIN && s->state <= SMTPD_S_AUTH_LOGIN_PASS)
            set_state(s, SMTPD_S_READY);
        return SMTPD_ACT_MORE;
    }
    data[len - 1] = '\0';
    return command(s, data, len - 1);
}

/* Command bytes from data[0, len): at most one line. *used = bytes taken. */
static enum smtpd_action take_line(struct smtpd_sess *s, const char *data, size_t len, size_t *used)
{
    const char *nl = memchr(data, '\n', len);
    size_t seg = nl ? (size_t)(nl - data) + 1 : len;
    *used = seg;
    if (s->discarding) {
        /* The rest of a line already answered with 500 5.5.6. */
        if (nl)
            s->discarding = false;
        return SMTPD_ACT_MORE;
    }
    /* Without the LF, the line may still grow to SMTPD_LINE_MAX - 1 bytes (text + CR). */
    if (s->line_len + seg > (nl ? SMTPD_LINE_MAX : SMTPD_LINE_MAX - 1)) {
        reject(s, ENG_SMTPD_REJ_LINE_TOO_LONG);
        REPLY(s, "500 5.5.6 Error: line too long\r\n");
        s->line_len = 0;
        s->discarding = nl == NULL;
        if (s->state >= SMTPD_S_AUTH_PLAIN && s->state <= SMTPD_S_AUTH_LOGIN_PASS)
            set_state(s, SMTPD_S_READY);
        return SMTPD_ACT_MORE;
    }
    /* Copied, NUL-terminated, so the commands can use string functions. */
    memcpy(s->line + s->line_len, data, seg);
    s->line_len += seg;
    if (!nl)
        return SMTPD_ACT_MORE;
    size_t n = s->line_len;
    s->line_len = 0;
    return line_done(s, s->line, n);
}

enum smtpd_action smtpd_sess_input(struct smtpd_sess *s, const char *data, size_t len, size_t *used)
{
    size_t pos = 0;
    enum smtpd_action act = SMTPD_ACT_MORE;
    while (pos < len && act == SMTPD_ACT_MORE) {
        if (s->state == SMTPD_S_NEW || s->state == SMTPD_S_STARTTLS ||
            s->state == SMTPD_S_CLOSING) {
            pos = len; /* not commands: dropped */
            break;
        }
        if (s->state == SMTPD_S_WAIT_DURABLE || s->state == SMTPD_S_AUTH_CHECK) {
            /* The I/O side does not offer input before done; keep it for later. */
            *used = pos;
            return SMTPD_ACT_PAUSE;
        }
        /* Take a command only when its reply fits, and a closing 421 after it: a
         * client pipelining without reading meets back-pressure, not our memory
         * growing, and a reply is never dropped. */
        if (SMTPD_OUT_CAP - s->out_len < SMTPD_REPLY_MAX + SMTPD_CLOSE_REPLY_MAX) {
            *used = pos;
            return SMTPD_ACT_PAUSE;
        }
        size_t n = 0;
        if (s->state == SMTPD_S_DATA) {
            if (smtpd_data_take(s, data + pos, len - pos, &n))
                act = data_end(s);
        } else {
            act = take_line(s, data + pos, len - pos, &n);
        }
        pos += n;
    }
    *used = pos;
    if (act == SMTPD_ACT_STARTTLS) {
        /* Whatever followed STARTTLS in plaintext must never be taken as commands
         * (CVE-2011-0411): forget a partial line too. The caller drops the rest. */
        s->line_len = 0;
        s->discarding = false;
    }
    return act;
}
