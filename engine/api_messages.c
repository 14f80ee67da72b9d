/*
 * engine/api_messages.c — POST /api/v1/messages: JSON in, one durable queue message per
 * recipient domain out (see api.h).
 *
 * The request is validated whole before anything is queued, so a 4xx never leaves a
 * message behind. Queue envelopes have one domain each, so the recipients are split by
 * domain and the same content buffer is enqueued once per domain; the request is
 * answered (202 with every id) only when each of those enqueues has reported durable,
 * through its done callback on this loop thread. Until then the HTTP request is
 * deferred and the state below (struct api_pending) owns the content.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api_int.h"
#include "engine/log.h"

struct api_slot {
    struct api_pending *p;
    unsigned i;
};

struct api_pending {
    struct eng_api *api;      /* NULL once detached (the API is gone) */
    struct eng_http_req *req; /* NULL once detached */
    char *content;
    size_t len;
    unsigned nmsgs, waiting, failed;
    int err; /* the first enqueue error */
    queue_id_t *ids;
    struct api_slot *slots;
    char (*domains)[QUEUE_DOMAIN_MAX + 1];
    struct api_pending *prev, *next;
};

static void pending_free(struct api_pending *p)
{
    free(p->content);
    free(p->ids);
    free(p->slots);
    free(p->domains);
    free(p);
}

static void pending_unlink(struct api_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else if (p->api && p->api->pending == p)
        p->api->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

void eng_api_messages_detach(struct eng_api *api)
{
    while (api->pending) {
        struct api_pending *p = api->pending;
        pending_unlink(p);
        p->api = NULL;
        p->req = NULL; /* eng_http_free answers it with a 503 */
    }
}

/* HTTP status of an enqueue error (see eng_api_ops.enqueue). */
static unsigned status_of(int err)
{
    switch (err) {
    case -EAGAIN: return 503;
    case QUEUE_ERR_FULL: return 507;
    case QUEUE_ERR_TOO_BIG: return 413;
    case QUEUE_ERR_CLOSING: return 503;
    default: return 500;
    }
}

/* Every enqueue has reported: answer, then free. */
static void pending_finish(struct api_pending *p)
{
    char hex[QUEUE_ID_HEX];
    if (p->api)
        p->api->accepted += p->nmsgs - p->failed;
    if (p->req) {
        json_t *ids = json_array(), *failed = json_array();
        for (unsigned i = 0; i < p->nmsgs; i++) {
            if (p->ids[i])
                json_array_append_new(ids, json_string(queue_id_format(p->ids[i], hex)));
            else
                json_array_append_new(failed, json_string(p->domains[i]));
        }
        json_t *doc;
        unsigned status = 202;
        if (p->failed == 0) {
            doc = json_pack("{s:o}", "ids", ids);
            json_decref(failed);
        } else {
            /* Some domains may be queued already: say which, so a retry can leave them
             * out instead of sending twice. */
            status = status_of(p->err);
            doc = json_pack("{s:s,s:o,s:o}", "error", queue_strerror(p->err), "ids", ids,
                            "failed_domains", failed);
        }
        if (status == 503)
            eng_http_add_header(p->req, "Retry-After", "5");
        if (doc)
            eng_api_reply_json(p->req, status, doc);
        else
            eng_api_reply_error(p->req, 500, "out of memory", NULL);
        json_decref(doc);
    }
    pending_unlink(p);
    pending_free(p);
}

static void on_enqueued(void *arg, queue_id_t id, int res)
{
    struct api_slot *s = arg;
    struct api_pending *p = s->p;
    if (res < 0) {
        if (p->failed++ == 0)
            p->err = res;
        eng_log(ENG_LOG_WARN, "api: enqueue for %s failed: %s", p->domains[s->i],
                queue_strerror(res));
    } else {
        p->ids[s->i] = id;
    }
    if (--p->waiting == 0)
        pending_finish(p);
}

/* ---- input ------------------------------------------------------------------------------- */

/* Bare LFs become CRLF (SMTP content is CRLF-delimited); returns a new buffer. */
static char *crlf_copy(const char *s, size_t n, size_t *out_len)
{
    size_t extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += s[i] == '\n' && (i == 0 || s[i - 1] != '\r');
    char *d = malloc(n + extra + 3);
    if (!d)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            d[j++] = '\r';
        d[j++] = s[i];
    }
    if (j < 2 || d[j - 2] != '\r' || d[j - 1] != '\n') {
        d[j++] = '\r';
        d[j++] = '\n';
    }
    d[j] = '\0';
    *out_len = j;
    return d;
}

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* An optional string member: NULL if absent; *bad if present and not a string. */
static const char *opt_string(json_t *doc, const char *key, bool *bad)
{
    json_t *v = json_object_get(doc, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

struct msg_input {
    const char *from;
    const char **to;
    unsigned nto;
    char *content;
    size_t len;
};

/* Validates the document and builds the content. Replies (4xx/5xx) and returns false on
 * any problem. */
static bool parse_input(struct eng_api *api, struct eng_http_req *req, json_t *doc,
                        struct msg_input *in)
{
    const char *why;
    char field[32];
    bool bad = false;
    in->from = opt_string(doc, "from", &bad);
    if (bad || !in->from) {
        eng_api_reply_error(req, 400, "from: a string is required", "from");
        return false;
    }
    if (eng_api_addr_check(in->from, &why) < 0) {
        eng_api_reply_error(req, 400, why, "from");
        return false;
    }
    json_t *to = json_object_get(doc, "to");
    if (json_is_string(to)) {
        in->nto = 1;
    } else if (json_is_array(to) && json_array_size(to) > 0) {
        in->nto = (unsigned)json_array_size(to) > api->max_rcpts + 1
                          ? api->max_rcpts + 1
                          : (unsigned)json_array_size(to);
    } else {
        eng_api_reply_error(req, 400, "to: a non-empty array of addresses is required", "to");
        return false;
    }
    if (in->nto > api->max_rcpts) {
        eng_api_reply_error(req, 400, "too many recipients", "to");
        return false;
    }
    in->to = calloc(in->nto, sizeof *in->to);
    if (!in->to) {
        eng_api_reply_error(req, 500, "out of memory", NULL);
        return false;
    }
    for (unsigned i = 0; i < in->nto; i++) {
        json_t *v = json_is_string(to) ? to : json_array_get(to, i);
        snprintf(field, sizeof field, "to[%u]", i);
        if (!json_is_string(v)) {
            eng_api_reply_error(req, 400, "not a string", field);
            return false;
        }
        in->to[i] = json_string_value(v);
        if (eng_api_addr_check(in->to[i], &why) < 0) {
            eng_api_reply_error(req, 400, why, field);
            return false;
        }
    }

    const char *raw = opt_string(doc, "raw", &bad);
    if (bad) {
        eng_api_reply_error(req, 400, "raw: must be a string without NUL", "raw");
        return false;
    }
    const char *subject = opt_string(doc, "subject", &bad);
    const char *text = bad ? NULL : opt_string(doc, "text", &bad);
    const char *html = bad ? NULL : opt_string(doc, "html", &bad);
    json_t *headers = json_object_get(doc, "headers");
    if (bad) {
        eng_api_reply_error(req, 400, "subject, text and html must be strings without NUL", NULL);
        return false;
    }
    if (raw && (subject || text || html || headers)) {
        eng_api_reply_error(req, 400, "give raw, or subject/text/html/headers, not both", "raw");
        return false;
    }
    if (raw) {
        size_t n = strlen(raw);
        if (n == 0) {
            eng_api_reply_error(req, 400, "raw is empty", "raw");
            return false;
        }
        if (n > api->max_message) {
            eng_api_reply_error(req, 413, "message larger than the limit", "raw");
            return false;
        }
        in->content = crlf_copy(raw, n, &in->len);
        /* The limit is the queued content's: bare LFs made CRLF may take it over. */
        if (in->content && in->len > api->max_message) {
            eng_api_reply_error(req, 413, "message larger than the limit", "raw");
            return false;
        }
    } else {
        if (headers && !json_is_object(headers)) {
            eng_api_reply_error(req, 400, "headers: an object of strings is required", "headers");
            return false;
        }
        size_t nh = headers ? json_object_size(headers) : 0;
        const char **names = calloc(nh + 1, sizeof *names);
        const char **values = calloc(nh + 1, sizeof *values);
        const char *key;
        json_t *v;
        size_t k = 0;
        int rc = names && values ? 0 : -ENOMEM;
        const char *mfield = "headers";
        why = "out of memory";
        if (headers)
            json_object_foreach(headers, key, v)
            {
                if (!json_is_string(v)) {
                    why = "headers: values must be strings";
                    rc = -EINVAL;
                    break;
                }
                names[k] = key;
                values[k++] = json_string_value(v);
            }
        if (rc == 0) {
            struct eng_api_mime m = {
                .from = in->from,
                .to = in->to,
                .nto = in->nto,
                .subject = subject,
                .text = text,
                .html = html,
                .hdr_names = names,
                .hdr_values = values,
                .nhdrs = (unsigned)k,
                .hostname = api->hostname,
            };
            rc = eng_api_mime_build(&m, &in->content, &in->len, &why, &mfield);
        }
        free(names);
        free(values);
        if (rc < 0) {
            eng_api_reply_error(req, rc == -EINVAL ? 400 : 500, why, rc == -EINVAL ? mfield : NULL);
            return false;
        }
        if (in->len > api->max_message) {
            eng_api_reply_error(req, 413, "message larger than the limit", text ? "text" : "html");
            return false;
        }
    }
    if (!in->content) {
        eng_api_reply_error(req, 500, "out of memory", NULL);
        return false;
    }
    return true;
}

/* ---- the handler ------------------------------------------------------------------------------
 */

static void lower_domain(const char *addr, char *out)
{
    const char *d = strrchr(addr, '@') + 1;
    size_t i = 0;
    for (; d[i] && i < QUEUE_DOMAIN_MAX; i++)
        out[i] = (char)tolower((unsigned char)d[i]);
    out[i] = '\0';
}

/* Splits the recipients by domain and enqueues one message per domain. */
static void enqueue_all(struct eng_api *api, struct eng_http_req *req, struct msg_input *in)
{
    struct api_pending *p = calloc(1, sizeof *p);
    char(*rd)[QUEUE_DOMAIN_MAX + 1] = calloc(in->nto, sizeof *rd);
    if (!p || !rd || !(p->domains = calloc(in->nto, sizeof *p->domains)) ||
        !(p->ids = calloc(in->nto, sizeof *p->ids)) ||
        !(p->slots = calloc(in->nto, sizeof *p->slots))) {
        if (p)
            pending_free(p);
        free(rd);
        eng_api_reply_error(req, 500, "out of memory", NULL);
        return;
    }
    p->api = api;
    p->req = req;
    p->content = in->content;
    p->len = in->len;
    in->content = NULL;
    for (unsigned i = 0; i < in->nto; i++) {
        lower_domain(in->to[i], rd[i]);
        unsigned d = 0;
        while (d < p->nmsgs && strcmp(p->domains[d], rd[i]) != 0)
            d++;
        if (d == p->nmsgs)
            strcpy(p->domains[p->nmsgs++], rd[i]);
    }
    bool eightbit = has_8bit(p->content, p->len);
    p->waiting = p->nmsgs;
    /* Done callbacks never run inside enqueue, so waiting only drops below here. */
    for (unsigned d = 0; d < p->nmsgs; d++) {
        unsigned n = 0;
        for (unsigned i = 0; i < in->nto; i++)
            n += strcmp(rd[i], p->domains[d]) == 0;
        struct queue_envelope *env = queue_envelope_alloc(n);
        int rc = -ENOMEM;
        if (env) {
            snprintf(env->sender, sizeof env->sender, "%s", in->from);
            snprintf(env->domain, sizeof env->domain, "%s", p->domains[d]);
            env->needs_8bit = eightbit;
            env->content_size = p->len;
            unsigned k = 0;
            for (unsigned i = 0; i < in->nto; i++)
                if (strcmp(rd[i], p->domains[d]) == 0)
                    snprintf(env->rcpts[k++].addr, sizeof env->rcpts[0].addr, "%s", in->to[i]);
            p->slots[d] = (struct api_slot){ p, d };
            rc = api->ops->enqueue(api->ops_arg, env, p->content, p->len, on_enqueued,
                                   &p->slots[d]);
            queue_envelope_free(env);
        }
        if (rc < 0) {
            if (p->failed++ == 0)
                p->err = rc;
            p->waiting--;
        }
    }
    free(rd);
    if (p->waiting == 0) {
        pending_finish(p); /* every enqueue refused at once: answer now */
        return;
    }
    eng_http_defer(req);
    p->next = api->pending;
    if (api->pending)
        api->pending->prev = p;
    api->pending = p;
}

void eng_api_messages_post(void *arg, struct eng_http_req *req)
{
    struct eng_api *api = arg;
    if (!eng_api_authorized(api, req))
        return;
    size_t len;
    const char *body = eng_http_req_body(req, &len);
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                 jerr.column);
        eng_api_reply_error(req, 400, msg, NULL);
        return;
    }
    if (!json_is_object(doc)) {
        eng_api_reply_error(req, 400, "malformed JSON: the body must be an object", NULL);
        json_decref(doc);
        return;
    }
    struct msg_input in = { 0 };
    if (parse_input(api, req, doc, &in))
        enqueue_all(api, req, &in);
    free(in.content);
    free(in.to);
    json_decref(doc);
}
