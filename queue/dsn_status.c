/*
 * queue/dsn_status.c — the Status a DSN reports for a recipient (RFC 3464 2.3.4, codes
 * from RFC 3463 and the IANA enhanced status code registry).
 *
 * The class always matches the Action: 5.x.x for "failed", 4.x.x for "delayed". Then:
 *
 *   1. the result's own enhanced code, if it is well formed and of that class (a 550
 *      5.1.1 from the receiver is reported as 5.1.1);
 *   2. otherwise by the kind of the last result (C = 5 or 4 as above):
 *      TLS     C.7.4 "security features not supported" when the receiver offered no
 *              STARTTLS or refused it (no_starttls, starttls_refused); C.7.5
 *              "cryptographic failure" for every other floor refusal (version or cipher
 *              below the floor, handshake, certificate). Not X.7.10 (registered for
 *              authentication that needs encryption, RFC 4954) and not X.7.30 (the
 *              REQUIRETLS extension, RFC 8689), which mean something else.
 *      DNS     C.1.10 null MX (RFC 7505), C.1.2 NXDOMAIN, C.4.3 a resolver failure
 *              (servfail, refused, timeout, unreachable, malformed), else C.4.4
 *              "unable to route";
 *      NETWORK C.4.2 "bad connection" when the connection was lost or reset, else C.4.1
 *              "no answer from host";
 *      LOCAL   5.4.7 "delivery time expired" when failed (expiry, too many attempts);
 *              4.0.0 when delayed;
 *      SMTP    when failed after a temporary reply (4xx, or a 4.x.x code: the queue
 *              only bounces those on expiry) 5.4.7; else C.0.0;
 *      NONE    C.0.0.
 */
#include "queue/dsn_int.h"

#include <stdio.h>
#include <string.h>

bool queue_dsn_enhanced_valid(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    if (n == cap || n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    size_t i = 2, digits = 0;
    for (int part = 0; part < 2; part++, i++) {
        for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
        if (digits < 1 || digits > 3)
            return false;
        if (part == 0 && (i >= n || s[i] != '.'))
            return false;
    }
    return i == n + 1;
}

/* True if word occurs in the (cleaned, bounded) text as a whole word. */
static bool has_word(const char *text, const char *word)
{
    size_t w = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        bool start = p == text || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z'));
        char e = p[w];
        if (start && !(e == '_' || (e >= 'a' && e <= 'z')))
            return true;
    }
    return false;
}

static void status_by_kind(enum queue_dsn_action action, const struct queue_result *r,
                           const char *text, char out[16])
{
    char c = action == QUEUE_DSN_FAILED ? '5' : '4';
    const char *rest = "0.0";
    switch (r->kind) {
    case QUEUE_RESULT_TLS:
        rest = has_word(text, "no_starttls") || has_word(text, "starttls_refused") ? "7.4" : "7.5";
        break;
    case QUEUE_RESULT_DNS:
        if (has_word(text, "null_mx") || has_word(text, "nullmx"))
            rest = "1.10";
        else if (has_word(text, "nxdomain"))
            rest = "1.2";
        else if (has_word(text, "servfail") || has_word(text, "refused") ||
                 has_word(text, "timeout") || has_word(text, "unreachable") ||
                 has_word(text, "malformed"))
            rest = "4.3";
        else
            rest = "4.4";
        break;
    case QUEUE_RESULT_NETWORK:
        rest = has_word(text, "lost") || has_word(text, "reset") ? "4.2" : "4.1";
        break;
    case QUEUE_RESULT_LOCAL: rest = action == QUEUE_DSN_FAILED ? "4.7" : "0.0"; break;
    case QUEUE_RESULT_SMTP:
        if (action == QUEUE_DSN_FAILED &&
            ((r->code >= 400 && r->code < 500) || (r->enhanced[0] == '4' && r->enhanced[1] == '.')))
            rest = "4.7";
        break;
    default: break;
    }
    snprintf(out, 16, "%c.%s", c, rest);
}

void queue_dsn_status(enum queue_dsn_action action, const struct queue_result *r, char out[16])
{
    char want = action == QUEUE_DSN_FAILED ? '5' : '4';
    if (queue_dsn_enhanced_valid(r->enhanced, sizeof(r->enhanced)) && r->enhanced[0] == want) {
        memcpy(out, r->enhanced, strnlen(r->enhanced, sizeof(r->enhanced)) + 1);
        return;
    }
    /* The reason words are matched case-insensitively on a cleaned copy. */
    char text[QUEUE_TEXT_MAX + 1];
    size_t n = queue_dsn_clean(r->text, sizeof(r->text), text);
    for (size_t i = 0; i < n; i++)
        if (text[i] >= 'A' && text[i] <= 'Z')
            text[i] = (char)(text[i] - 'A' + 'a');
    status_by_kind(action, r, text, out);
}
