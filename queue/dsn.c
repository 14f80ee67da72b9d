/*
 * queue/dsn.c — composes a delivery status notification (RFC 3461-3464, 6522): a
 * multipart/report with a plain-words explanation, the message/delivery-status fields
 * and the original's headers or whole content, plus the envelope that sends it back to
 * the original sender with the null reverse-path.
 *
 * The three parts are built first, each in its own buffer, so that the boundary can be
 * checked against everything it will enclose before the message is assembled. Every
 * text that came from outside (reply texts, TLS evidence, host names, addresses) goes
 * through queue_dsn_clean or queue_dsn_addr first: the result is 7-bit except for a
 * returned original with 8-bit bytes, which is declared (see dsn_content.c).
 */
#define _GNU_SOURCE /* memmem, memrchr */
#include "queue/dsn_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define DSN_BOUNDARY_TRIES 8

/* ---- which recipients --------------------------------------------------------------- */

/* RFC 3461 4.1: NEVER wins; no NOTIFY means FAILURE, and DELAY (the caller only asks
 * for a delay DSN when its delay warning is on). */
static bool dsn_wanted(const struct queue_dsn_input *in, const struct queue_rcpt *r)
{
    if (r->notify & QUEUE_NOTIFY_NEVER)
        return false;
    if (in->action == QUEUE_DSN_FAILED)
        return r->state == QUEUE_RCPT_BOUNCED &&
               (r->notify == 0 || (r->notify & QUEUE_NOTIFY_FAILURE));
    return (r->state == QUEUE_RCPT_DEFERRED || r->state == QUEUE_RCPT_PENDING) &&
           (r->notify == 0 || (r->notify & QUEUE_NOTIFY_DELAY));
}

/* ---- small pieces --------------------------------------------------------------------- */

/* Our host name as it may appear in fields: letters, digits and ".-_[]:" only. */
static void host_clean(const char *in, char out[QUEUE_DOMAIN_MAX + 1])
{
    size_t o = 0;
    for (size_t i = 0; in && in[i] && o < QUEUE_DOMAIN_MAX; i++) {
        char c = in[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr(".-_[]:", c))
            out[o++] = c;
    }
    out[o] = '\0';
    if (o == 0)
        strcpy(out, "localhost");
}

static void random_bytes(void *p, size_t n, uint64_t salt)
{
    if (getrandom(p, n, GRND_NONBLOCK) == (ssize_t)n)
        return;
    uint64_t x = salt ^ (uint64_t)(uintptr_t)p ^ 0x9e3779b97f4a7c15ull; /* fallback */
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ((unsigned char *)p)[i] = (unsigned char)x;
    }
}

static void hex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool contains(const struct queue_dsn_buf *b, const char *s)
{
    return b->len > 0 && memmem(b->p, b->len, s, strlen(s)) != NULL;
}

/* ---- part 1: the explanation ---------------------------------------------------------- */

/* One recipient's reason in plain words, as one clean line (wrapped by the caller). */
static void human_reason(struct queue_dsn_buf *b, const struct queue_dsn_input *in,
                         const struct queue_rcpt *rc)
{
    const struct queue_result *r = &rc->last;
    char text[QUEUE_TEXT_MAX + 1], remote[sizeof(r->remote) + 1], enh[sizeof(r->enhanced) + 1];
    queue_dsn_clean(r->text, sizeof(r->text), text);
    char server[sizeof(remote) + 32] = "The receiving server";
    if (queue_dsn_clean(r->remote, sizeof(r->remote), remote) > 0)
        snprintf(server, sizeof(server), "The receiving server %s", remote);
    if (!queue_dsn_enhanced_valid(r->enhanced, sizeof(r->enhanced)))
        enh[0] = '\0';
    else
        queue_dsn_clean(r->enhanced, sizeof(r->enhanced), enh);

    switch (r->kind) {
    case QUEUE_RESULT_SMTP:
        queue_dsn_buf_printf(b, "%s %s: %u%s%s %s.", server,
                             r->code >= 500 ? "rejected it permanently"
                                            : "answered with a temporary error",
                             r->code, enh[0] ? " " : "", enh, text);
        break;
    case QUEUE_RESULT_TLS:
        queue_dsn_buf_printf(b,
                             "%s did not offer TLS 1.2 or newer with a valid certificate "
                             "(reason: %s). This system only delivers mail over TLS 1.2 or "
                             "newer with a valid certificate, so the message was never sent "
                             "to that server in a weaker form.",
                             server, text[0] ? text : "unknown");
        break;
    case QUEUE_RESULT_DNS:
        queue_dsn_buf_printf(b,
                             "The recipient's domain could not be resolved to a mail "
                             "server: %s.",
                             text);
        break;
    case QUEUE_RESULT_NETWORK:
        queue_dsn_buf_printf(b, "%s could not be reached: %s.", server, text);
        break;
    case QUEUE_RESULT_LOCAL: queue_dsn_buf_printf(b, "Delivery was given up: %s.", text); break;
    default: queue_dsn_buf_puts(b, "No delivery attempt has been made yet."); break;
    }

    char since[64], took[64];
    queue_dsn_date(in->env->arrival, since);
    queue_dsn_duration(in->now - in->env->arrival, took);
    bool retried = r->kind != QUEUE_RESULT_SMTP || r->code < 500;
    if (in->action == QUEUE_DSN_FAILED && retried && in->env->arrival > 0)
        queue_dsn_buf_printf(b,
                             " It was retried for %s (%u attempts since %s) before being "
                             "given up.",
                             took, rc->attempts, since);
    else if (in->action == QUEUE_DSN_DELAYED && rc->attempts > 0)
        queue_dsn_buf_printf(b, " Attempts so far: %u.", rc->attempts);
}

static void human_part(struct queue_dsn_buf *h, const struct queue_dsn_input *in, const char *mta,
                       const struct queue_dsn_returned *ret)
{
    const struct queue_envelope *env = in->env;
    char line[512], took[64], until[64];
    snprintf(line, sizeof(line), "This is the mail delivery system at %s.", mta);
    queue_dsn_wrap(h, "", line);
    queue_dsn_buf_puts(h, "\r\n");
    if (in->action == QUEUE_DSN_FAILED) {
        queue_dsn_wrap(h, "",
                       "Your message could not be delivered to the recipients below. "
                       "This is a permanent error; delivery has been given up.");
    } else {
        queue_dsn_wrap(h, "",
                       "This is a warning only: you do not need to resend your "
                       "message.");
        queue_dsn_buf_puts(h, "\r\n");
        snprintf(line, sizeof(line),
                 "Your message has not yet been delivered to the recipients below after "
                 "%s of trying. Delivery will be retried until %s; if it still cannot be "
                 "delivered by then, it will be returned to you.",
                 queue_dsn_duration(in->now - env->arrival, took),
                 queue_dsn_date(in->retry_until, until));
        queue_dsn_wrap(h, "", line);
    }
    for (unsigned i = 0; i < env->nrcpts; i++) {
        const struct queue_rcpt *rc = &env->rcpts[i];
        if (!dsn_wanted(in, rc))
            continue;
        struct queue_dsn_buf t = { 0 };
        /* On a line of its own, unless too long for one: an 8-bit address written as
         * \x{...} escapes can be eight times its length, past a line's 998 octets; then
         * it is wrapped like the text. */
        queue_dsn_buf_puts(&t, "<");
        queue_dsn_addr(&t, NULL, rc->addr, sizeof(rc->addr));
        queue_dsn_buf_put(&t, ">:", 3);
        queue_dsn_buf_puts(h, "\r\n");
        if (t.oom) {
            h->oom = true;
        } else if (t.len - 1 <= QUEUE_DSN_LINE_MAX) {
            queue_dsn_buf_put(h, t.p, t.len - 1);
            queue_dsn_buf_puts(h, "\r\n");
        } else {
            queue_dsn_wrap(h, "", t.p);
        }
        t.len = 0;
        human_reason(&t, in, rc);
        queue_dsn_buf_put(&t, "", 1);
        if (t.oom)
            h->oom = true;
        else
            queue_dsn_wrap(h, "    ", t.p);
        queue_dsn_buf_free(&t);
    }
    static const char *const what[] = {
        [QUEUE_DSN_RETURN_NONE] = NULL,
        [QUEUE_DSN_RETURN_FULL] = "The original message is attached.",
        [QUEUE_DSN_RETURN_HEADERS] = "The header section of the original message is attached.",
        [QUEUE_DSN_RETURN_TOO_BIG] = "The original message was too large to return in full; "
                                     "its header section is attached.",
        [QUEUE_DSN_RETURN_UNCLEAN] = "The original message could not be returned in full as it "
                                     "is (NUL bytes, bare CR or overlong lines); its header "
                                     "section is attached.",
    };
    if (what[ret->how]) {
        queue_dsn_buf_puts(h, "\r\n");
        queue_dsn_wrap(h, "", what[ret->how]);
    }
}

/* ---- part 2: message/delivery-status -------------------------------------------------- */

/* Folds "name: <value built in v>" and empties v. */
static void field(struct queue_dsn_buf *s, const char *name, struct queue_dsn_buf *v)
{
    queue_dsn_buf_put(v, "", 1);
    if (v->oom)
        s->oom = true;
    else
        queue_dsn_fold(s, name, v->p);
    v->len = 0;
}

/* RFC 3461 4.2 ORCPT, stored "type;address" (decoded): kept as given when printable,
 * else its address in RFC 6533 utf-8 form. */
static void orcpt_value(struct queue_dsn_buf *v, const char *orcpt, size_t cap)
{
    size_t n = strnlen(orcpt, cap);
    const char *semi = memchr(orcpt, ';', n);
    size_t tlen = semi ? (size_t)(semi - orcpt) : 0;
    bool type_ok = tlen > 0 && tlen <= 32;
    for (size_t i = 0; i < tlen && type_ok; i++) {
        char c = orcpt[i];
        type_ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-';
    }
    if (type_ok && queue_dsn_is_printable(orcpt, n) && !memchr(orcpt, ' ', n)) {
        queue_dsn_buf_put(v, orcpt, n); /* as given */
        return;
    }
    const char *addr = type_ok ? semi + 1 : orcpt;
    size_t alen = type_ok ? n - tlen - 1 : n;
    char type[40] = "rfc822";
    if (type_ok)
        snprintf(type, sizeof(type), "%.*s", (int)tlen, orcpt);
    queue_dsn_addr(v, type, addr, alen);
}

static void status_recipient(struct queue_dsn_buf *s, struct queue_dsn_buf *v,
                             const struct queue_dsn_input *in, const struct queue_rcpt *rc)
{
    const struct queue_result *r = &rc->last;
    char text[QUEUE_TEXT_MAX + 1], remote[sizeof(r->remote) + 1], date[64], status[16];

    queue_dsn_buf_puts(s, "\r\n");
    if (strnlen(rc->orcpt, sizeof(rc->orcpt)) > 0) {
        orcpt_value(v, rc->orcpt, sizeof(rc->orcpt));
        field(s, "Original-Recipient", v);
    }
    queue_dsn_addr(v, "rfc822", rc->addr, sizeof(rc->addr));
    field(s, "Final-Recipient", v);
    queue_dsn_buf_printf(s, "Action: %s\r\n",
                         in->action == QUEUE_DSN_FAILED ? "failed" : "delayed");
    queue_dsn_status(in->action, r, status);
    queue_dsn_buf_printf(s, "Status: %s\r\n", status);
    if (queue_dsn_clean(r->remote, sizeof(r->remote), remote) > 0) {
        remote[strcspn(remote, " ")] = '\0'; /* the host name, not "[address]" */
        queue_dsn_buf_printf(v, "dns; %s", remote);
        field(s, "Remote-MTA", v);
    }
    queue_dsn_clean(r->text, sizeof(r->text), text);
    if (r->kind == QUEUE_RESULT_SMTP) {
        queue_dsn_buf_printf(v, "smtp; %u", r->code);
        if (queue_dsn_enhanced_valid(r->enhanced, sizeof(r->enhanced)))
            queue_dsn_buf_printf(v, " %s", r->enhanced);
        queue_dsn_buf_printf(v, " %s", text);
        field(s, "Diagnostic-Code", v);
    } else if (r->kind != QUEUE_RESULT_NONE) {
        queue_dsn_buf_printf(v, "X-floormta; %s: %s", queue_result_kind_name(r->kind), text);
        field(s, "Diagnostic-Code", v);
    }
    if (r->when > 0)
        queue_dsn_buf_printf(s, "Last-Attempt-Date: %s\r\n", queue_dsn_date(r->when, date));
    if (in->action == QUEUE_DSN_DELAYED && in->retry_until > 0)
        queue_dsn_buf_printf(s, "Will-Retry-Until: %s\r\n", queue_dsn_date(in->retry_until, date));
}

static void status_part(struct queue_dsn_buf *s, const struct queue_dsn_input *in, const char *mta)
{
    const struct queue_envelope *env = in->env;
    struct queue_dsn_buf v = { 0 };
    char date[64], id[QUEUE_ID_HEX];
    queue_dsn_buf_printf(s, "Reporting-MTA: dns; %s\r\n", mta);
    if (env->id != 0)
        queue_dsn_buf_printf(s, "X-floormta-Queue-ID: %s\r\n", queue_id_format(env->id, id));
    size_t n = strnlen(env->envid, sizeof(env->envid));
    if (n > 0) {
        /* printable as is; anything else xtext-encoded (RFC 3461 4), never raw */
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)env->envid[i];
            if (c > 0x20 && c < 0x7f && c != '+' && c != '=')
                queue_dsn_buf_put(&v, &env->envid[i], 1);
            else
                queue_dsn_buf_printf(&v, "+%02X", c);
        }
        field(s, "Original-Envelope-Id", &v);
    }
    if (env->arrival > 0)
        queue_dsn_buf_printf(s, "Arrival-Date: %s\r\n", queue_dsn_date(env->arrival, date));
    for (unsigned i = 0; i < env->nrcpts; i++)
        if (dsn_wanted(in, &env->rcpts[i]))
            status_recipient(s, &v, in, &env->rcpts[i]);
    if (v.oom)
        s->oom = true;
    queue_dsn_buf_free(&v);
}

/* ---- the message ---------------------------------------------------------------------- */

static void assemble(struct queue_dsn_buf *m, const struct queue_dsn_input *in, const char *mta,
                     const char *boundary, const struct queue_dsn_buf *h,
                     const struct queue_dsn_buf *s, const struct queue_dsn_returned *ret)
{
    static unsigned counter;
    unsigned seq = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    const struct queue_envelope *env = in->env;
    char date[64], id[QUEUE_ID_HEX];
    unsigned char rnd[4];
    char rhex[9];
    random_bytes(rnd, sizeof(rnd), (uint64_t)in->now ^ env->id ^ seq);
    hex(rnd, sizeof(rnd), rhex);
    bool failed = in->action == QUEUE_DSN_FAILED;

    queue_dsn_buf_printf(m, "Date: %s\r\n", queue_dsn_date(in->now, date));
    queue_dsn_buf_printf(m, "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\r\n", mta);
    queue_dsn_buf_printf(m, "To: <%s>\r\n", env->sender);
    queue_dsn_buf_printf(m, "Subject: %s\r\n",
                         failed ? "Undelivered Mail Returned to Sender"
                                : "Delayed Mail (still being retried)");
    queue_dsn_buf_printf(m, "Message-ID: <dsn.%lld.%s.%u.%s@%s>\r\n", (long long)in->now,
                         queue_id_format(env->id, id), seq, rhex, mta);
    queue_dsn_buf_puts(m, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
    queue_dsn_buf_printf(m,
                         "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                         " boundary=\"%s\"\r\n",
                         boundary);
    queue_dsn_buf_printf(m, "Content-Transfer-Encoding: %s\r\n", ret->eightbit ? "8bit" : "7bit");
    queue_dsn_buf_puts(m, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    queue_dsn_buf_printf(m,
                         "--%s\r\nContent-Description: Notification\r\n"
                         "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                         boundary);
    queue_dsn_buf_put(m, h->p, h->len);
    queue_dsn_buf_printf(m,
                         "\r\n--%s\r\nContent-Description: Delivery report\r\n"
                         "Content-Type: message/delivery-status\r\n\r\n",
                         boundary);
    queue_dsn_buf_put(m, s->p, s->len);
    if (ret->how != QUEUE_DSN_RETURN_NONE) {
        bool full = ret->how == QUEUE_DSN_RETURN_FULL;
        queue_dsn_buf_printf(m, "\r\n--%s\r\nContent-Description: %s%s\r\nContent-Type: %s\r\n",
                             boundary, failed ? "Undelivered Message" : "Delayed Message",
                             full ? "" : " Headers",
                             full ? "message/rfc822" : "text/rfc822-headers");
        if (ret->eightbit)
            queue_dsn_buf_puts(m, "Content-Transfer-Encoding: 8bit\r\n");
        queue_dsn_buf_puts(m, "\r\n");
        queue_dsn_buf_put(m, ret->data, ret->len); /* the delimiter's CRLF follows it */
    }
    queue_dsn_buf_printf(m, "\r\n--%s--\r\n", boundary);
}

/* The DSN's own envelope: from the null sender to the original sender. */
static struct queue_envelope *dsn_envelope(const struct queue_dsn_input *in, const char *domain,
                                           size_t len, bool eightbit)
{
    const struct queue_envelope *env = in->env;
    struct queue_envelope *d = queue_envelope_alloc(1);
    if (d == NULL)
        return NULL;
    size_t slen = strnlen(env->sender, sizeof(env->sender));
    d->nrcpts = 1;
    d->sender[0] = '\0';
    d->is_dsn = true;
    d->ret = QUEUE_RET_DEFAULT;
    d->needs_8bit = eightbit;
    d->needs_smtputf8 = !queue_dsn_is_printable(env->sender, slen);
    d->arrival = in->now;
    d->content_size = len;
    for (size_t i = 0; domain[i]; i++)
        d->domain[i] =
                domain[i] >= 'A' && domain[i] <= 'Z' ? (char)(domain[i] - 'A' + 'a') : domain[i];
    memcpy(d->rcpts[0].addr, env->sender, slen);
    d->rcpts[0].state = QUEUE_RCPT_PENDING;
    return d;
}

int queue_dsn_build(const struct queue_dsn_input *in, void **out, size_t *len,
                    struct queue_envelope **dsn_env)
{
    if (in == NULL || in->env == NULL || out == NULL || len == NULL || dsn_env == NULL)
        return -EINVAL;
    *out = NULL;
    *len = 0;
    *dsn_env = NULL;
    const struct queue_envelope *env = in->env;
    if (env->nrcpts > 0 && env->rcpts == NULL)
        return -EINVAL;
    size_t slen = strnlen(env->sender, sizeof(env->sender));
    if (slen == 0 || slen > QUEUE_ADDR_MAX || env->is_dsn)
        return -ENOENT; /* a DSN is never bounced */
    unsigned wanted = 0;
    for (unsigned i = 0; i < env->nrcpts; i++)
        wanted += dsn_wanted(in, &env->rcpts[i]);
    if (wanted == 0)
        return -ENOENT;
    /* The sender must be a routable address we can put in To: unchanged. */
    const char *at = memrchr(env->sender, '@', slen);
    if (at == NULL || slen - (size_t)(at + 1 - env->sender) == 0 ||
        slen - (size_t)(at + 1 - env->sender) > QUEUE_DOMAIN_MAX)
        return -EINVAL;
    for (size_t i = 0; i < slen; i++)
        if ((unsigned char)env->sender[i] < 0x20 || env->sender[i] == 0x7f ||
            env->sender[i] == '<' || env->sender[i] == '>')
            return -EINVAL;
    char domain[QUEUE_DOMAIN_MAX + 1], mta[QUEUE_DOMAIN_MAX + 1];
    snprintf(domain, sizeof(domain), "%.*s", (int)(slen - (size_t)(at + 1 - env->sender)), at + 1);
    host_clean(in->reporting_mta, mta);

    struct queue_dsn_returned ret;
    int err = queue_dsn_returned_make(in, &ret);
    if (err < 0)
        return err;
    struct queue_dsn_buf h = { 0 }, s = { 0 }, m = { 0 };
    human_part(&h, in, mta, &ret);
    status_part(&s, in, mta);

    /* A random boundary, checked against all it encloses (a hostile original could
     * contain one it guessed; it cannot contain this one). */
    char boundary[64];
    err = -EIO;
    for (int t = 0; t < DSN_BOUNDARY_TRIES && !h.oom && !s.oom; t++) {
        unsigned char rnd[12];
        char rhex[25];
        random_bytes(rnd, sizeof(rnd), (uint64_t)in->now ^ env->id ^ (uint64_t)t << 32);
        hex(rnd, sizeof(rnd), rhex);
        snprintf(boundary, sizeof(boundary), "=_floormta_%s", rhex);
        struct queue_dsn_buf r = { .p = (char *)ret.data, .len = ret.len };
        if (!contains(&h, boundary) && !contains(&s, boundary) && !contains(&r, boundary)) {
            err = 0;
            break;
        }
    }
    if (h.oom || s.oom)
        err = -ENOMEM;
    if (err == 0) {
        assemble(&m, in, mta, boundary, &h, &s, &ret);
        if (m.oom)
            err = -ENOMEM;
    }
    if (err == 0 && (*dsn_env = dsn_envelope(in, domain, m.len, ret.eightbit)) == NULL)
        err = -ENOMEM;
    if (err == 0) {
        *out = m.p;
        *len = m.len;
    } else {
        queue_dsn_buf_free(&m);
    }
    queue_dsn_buf_free(&h);
    queue_dsn_buf_free(&s);
    queue_dsn_returned_free(&ret);
    return err;
}
