/*
 * engine/api.c — the API's routes, bearer tokens, /metrics, /healthz and the queue
 * admin endpoints (see api.h); message injection is in api_messages.c.
 *
 * The route table is static: the API is small, and a reader sees every endpoint and
 * its method in one place. Authentication is checked first thing by every /api/
 * handler, so a route cannot forget it without it being visible in its first line.
 */
#include "engine/api.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/api_int.h"
#include "engine/http.h"
#include "engine/log.h"

#define API_DEF_MAX_MESSAGE (10u << 20)
/* JSON escaping can take a raw message up to 6x (\u00XX), but real clients send UTF-8
 * and escape only quotes, backslashes and control characters: allow twice the content
 * plus room for the envelope. The content limit proper is checked after parsing. */
#define API_BODY_FACTOR 2
#define API_BODY_SLACK  (256u << 10)

static const char *const action_names[] = {
#define ACTION_NAME(name, str) str,
    ENG_API_ACTIONS(ACTION_NAME)
#undef ACTION_NAME
};

const char *eng_api_action_name(enum eng_api_action a)
{
    if ((unsigned)a >= sizeof action_names / sizeof action_names[0])
        return "invalid";
    return action_names[a];
}

/* ---- replies ------------------------------------------------------------------------------ */

void eng_api_reply_json(struct eng_http_req *req, unsigned status, const json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    if (!s) {
        eng_http_reply(req, 500, "application/json", "{\"error\":\"out of memory\"}\n", 26);
        return;
    }
    size_t n = strlen(s);
    char *b = realloc(s, n + 2);
    if (b) {
        s = b;
        s[n++] = '\n';
        s[n] = '\0';
    }
    eng_http_reply(req, status, "application/json", s, n);
    free(s);
}

void eng_api_reply_error(struct eng_http_req *req, unsigned status, const char *msg,
                         const char *field)
{
    json_t *doc = json_pack("{s:s}", "error", msg);
    if (doc && field)
        json_object_set_new(doc, "field", json_string(field));
    if (doc)
        eng_api_reply_json(req, status, doc);
    else
        eng_http_reply(req, 500, "application/json", "{\"error\":\"out of memory\"}\n", 26);
    json_decref(doc);
}

/* ---- authentication ------------------------------------------------------------------------- */

/* Equal in time that depends on the token's length only, never on where the presented
 * value first differs. */
static bool ct_equal(const char *given, size_t glen, const char *token, size_t tlen)
{
    unsigned char d = glen != tlen;
    for (size_t i = 0; i < tlen; i++)
        d |= (unsigned char)token[i] ^ (unsigned char)(i < glen ? given[i] : 0);
    return d == 0;
}

bool eng_api_authorized(struct eng_api *api, struct eng_http_req *req)
{
    const char *h = eng_http_req_header(req, "Authorization");
    bool ok = false;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        while (*t == ' ')
            t++;
        size_t tl = strlen(t);
        /* Every token is compared: no early exit that tells which one came close. */
        for (unsigned i = 0; i < api->ntokens; i++)
            ok |= ct_equal(t, tl, api->tokens[i], strlen(api->tokens[i]));
    }
    if (ok)
        return true;
    eng_http_add_header(req, "WWW-Authenticate",
                        h ? "Bearer realm=\"floormta\", error=\"invalid_token\""
                          : "Bearer realm=\"floormta\"");
    eng_api_reply_error(req, 401, h ? "invalid bearer token" : "missing bearer token",
                        "Authorization");
    return false;
}

/* ---- unauthenticated endpoints -------------------------------------------------------------- */

static void api_metrics(void *arg, struct eng_http_req *req)
{
    struct eng_api *api = arg;
    struct eng_metrics *m = calloc(1, sizeof *m);
    if (!m) {
        eng_api_reply_error(req, 500, "out of memory", NULL);
        return;
    }
    if (api->ops->metrics)
        api->ops->metrics(api->ops_arg, m);
    m->received[ENG_METRIC_SRC_HTTP] += api->accepted;
    char *text;
    size_t len;
    if (eng_metrics_render(m, &text, &len) < 0) {
        eng_api_reply_error(req, 500, "out of memory", NULL);
    } else {
        eng_http_reply(req, 200, ENG_METRICS_CONTENT_TYPE, text, len);
        free(text);
    }
    free(m);
}

static void api_healthz(void *arg, struct eng_http_req *req)
{
    struct eng_api *api = arg;
    json_t *detail = NULL;
    int rc = api->ops->health ? api->ops->health(api->ops_arg, &detail) : 0;
    json_t *doc = json_pack("{s:s}", "status", rc == 0 ? "ok" : "unhealthy");
    if (doc && detail)
        json_object_set(doc, "detail", detail);
    json_decref(detail);
    if (!doc) {
        eng_api_reply_error(req, 500, "out of memory", NULL);
        return;
    }
    eng_api_reply_json(req, rc == 0 ? 200 : 503, doc);
    json_decref(doc);
}

/* ---- queue administration ------------------------------------------------------------------- */

/* Answers a JSON-producing op: its document, 501 if missing, 500 if it fails. */
static void api_answer_op(struct eng_http_req *req, int rc, json_t *doc)
{
    if (rc == QUEUE_ERR_NOT_FOUND) {
        eng_api_reply_error(req, 404, "no such message", "id");
    } else if (rc == -EINVAL) {
        eng_api_reply_error(req, 400, "invalid request", NULL);
    } else if (rc == -EBUSY) {
        eng_http_add_header(req, "Retry-After", "1");
        eng_api_reply_error(req, 409, "the message is in flight: try again", "id");
    } else if (rc == -ESHUTDOWN) {
        eng_http_add_header(req, "Retry-After", "5");
        eng_api_reply_error(req, 503, "shutting down", NULL);
    } else if (rc < 0 || !doc)
        eng_api_reply_error(req, 500, rc < 0 ? queue_strerror(rc) : "no answer", NULL);
    else
        eng_api_reply_json(req, 200, doc);
    json_decref(doc);
}

static void api_queue(void *arg, struct eng_http_req *req)
{
    struct eng_api *api = arg;
    if (!eng_api_authorized(api, req))
        return;
    if (!api->ops->queue_summary) {
        eng_api_reply_error(req, 501, "this server does not offer it", NULL);
        return;
    }
    json_t *doc = NULL;
    int rc = api->ops->queue_summary(api->ops_arg, &doc);
    api_answer_op(req, rc, doc);
}

/* Checks a domain given by the operator (as a mailbox's domain) and lower-cases it into
 * out. Returns false after replying 400. */
static bool api_domain(struct eng_http_req *req, const char *domain, char out[QUEUE_DOMAIN_MAX + 1])
{
    const char *why;
    char probe[QUEUE_DOMAIN_MAX + 3];
    if (strlen(domain) > QUEUE_DOMAIN_MAX) {
        eng_api_reply_error(req, 400, "domain too long", "domain");
        return false;
    }
    /* The mailbox check knows domains: check "x@<domain>". */
    snprintf(probe, sizeof probe, "x@%s", domain);
    if (eng_api_addr_check(probe, &why) < 0) {
        eng_api_reply_error(req, 400, why, "domain");
        return false;
    }
    size_t i = 0;
    for (; domain[i]; i++)
        out[i] = (char)tolower((unsigned char)domain[i]);
    out[i] = '\0';
    return true;
}

/* GET /api/v1/queue/messages?domain=example.com&limit=100 */
static void api_queue_messages(void *arg, struct eng_http_req *req)
{
    struct eng_api *api = arg;
    if (!eng_api_authorized(api, req))
        return;
    if (!api->ops->queue_list) {
        eng_api_reply_error(req, 501, "this server does not offer it", NULL);
        return;
    }
    const char *domain = eng_http_req_query(req, "domain");
    const char *limit_text = eng_http_req_query(req, "limit");
    char dom[QUEUE_DOMAIN_MAX + 1];
    if (domain && *domain == '\0')
        domain = NULL; /* ?domain= : every domain */
    if (domain && !api_domain(req, domain, dom))
        return;
    unsigned long limit = ENG_API_LIST_DEFAULT;
    if (limit_text) {
        char *end;
        errno = 0;
        limit = strtoul(limit_text, &end, 10);
        if (!isdigit((unsigned char)*limit_text) || *end || errno || limit == 0 ||
            limit > ENG_API_LIST_MAX) {
            char msg[64];
            snprintf(msg, sizeof msg, "limit is 1 to %u", ENG_API_LIST_MAX);
            eng_api_reply_error(req, 400, msg, "limit");
            return;
        }
    }
    json_t *doc = NULL;
    int rc = api->ops->queue_list(api->ops_arg, domain ? dom : NULL, (unsigned)limit, &doc);
    api_answer_op(req, rc, doc);
}

static void api_destinations(void *arg, struct eng_http_req *req)
{
    struct eng_api *api = arg;
    if (!eng_api_authorized(api, req))
        return;
    if (!api->ops->destinations) {
        eng_api_reply_error(req, 501, "this server does not offer it", NULL);
        return;
    }
    json_t *doc = NULL;
    int rc = api->ops->destinations(api->ops_arg, &doc);
    api_answer_op(req, rc, doc);
}

/* {"id":"<16 hex>"} or {"domain":"example.com"} in the body, or ?id= / ?domain=. */
static void api_action(struct eng_api *api, struct eng_http_req *req, enum eng_api_action action)
{
    if (!eng_api_authorized(api, req))
        return;
    if (!api->ops->queue_action) {
        eng_api_reply_error(req, 501, "this server does not offer it", NULL);
        return;
    }
    const char *id_text = eng_http_req_query(req, "id");
    const char *domain = eng_http_req_query(req, "domain");
    size_t len;
    const char *body = eng_http_req_body(req, &len);
    json_t *in = NULL;
    if (len > 0) {
        json_error_t jerr;
        in = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(in)) {
            char msg[256];
            snprintf(msg, sizeof msg, "malformed JSON: %s (line %d, column %d)",
                     in ? "not an object" : jerr.text, jerr.line, jerr.column);
            eng_api_reply_error(req, 400, msg, NULL);
            json_decref(in);
            return;
        }
        json_t *v;
        if ((v = json_object_get(in, "id")))
            id_text = json_string_value(v) ? json_string_value(v) : "";
        if ((v = json_object_get(in, "domain")))
            domain = json_string_value(v) ? json_string_value(v) : "";
    }
    queue_id_t id = 0;
    char dom[QUEUE_DOMAIN_MAX + 1];
    if ((id_text != NULL) == (domain != NULL)) {
        eng_api_reply_error(req, 400, "give exactly one of id and domain", NULL);
    } else if (id_text && queue_id_parse(id_text, &id) < 0) {
        eng_api_reply_error(req, 400, "a queue id is 16 hex digits", "id");
    } else if (!domain || api_domain(req, domain, dom)) {
        json_t *doc = NULL;
        int rc = api->ops->queue_action(api->ops_arg, action, id, domain ? dom : NULL, &doc);
        eng_log(ENG_LOG_INFO, "api: queue %s %s=%s rc=%d", eng_api_action_name(action),
                domain ? "domain" : "id", domain ? dom : id_text, rc);
        api_answer_op(req, rc, doc);
    }
    json_decref(in);
}

static void api_flush(void *arg, struct eng_http_req *req)
{
    api_action(arg, req, ENG_API_ACTION_FLUSH);
}

static void api_bounce(void *arg, struct eng_http_req *req)
{
    api_action(arg, req, ENG_API_ACTION_BOUNCE);
}

static void api_delete(void *arg, struct eng_http_req *req)
{
    api_action(arg, req, ENG_API_ACTION_DELETE);
}

static const struct eng_http_route api_routes[] = {
    { "GET", "/metrics", false, api_metrics },
    { "GET", "/healthz", false, api_healthz },
    { "POST", "/api/v1/messages", false, eng_api_messages_post },
    { "GET", "/api/v1/queue", false, api_queue },
    { "GET", "/api/v1/queue/messages", false, api_queue_messages },
    { "GET", "/api/v1/destinations", false, api_destinations },
    { "POST", "/api/v1/queue/flush", false, api_flush },
    { "POST", "/api/v1/queue/bounce", false, api_bounce },
    { "POST", "/api/v1/queue/delete", false, api_delete },
};

/* ---- life cycle ----------------------------------------------------------------------------- */

int eng_api_new(const struct eng_api_config *cfg, struct eng_api **out)
{
    if (!cfg || !cfg->loop || !cfg->ops || !cfg->ops->enqueue || !out)
        return -EINVAL;
    struct eng_api *api = calloc(1, sizeof *api);
    if (!api)
        return -ENOMEM;
    api->loop = cfg->loop;
    api->ops = cfg->ops;
    api->ops_arg = cfg->ops_arg;
    api->max_message = cfg->max_message ? cfg->max_message : API_DEF_MAX_MESSAGE;
    api->max_rcpts =
            cfg->max_rcpts && cfg->max_rcpts < QUEUE_RCPTS_MAX ? cfg->max_rcpts : QUEUE_RCPTS_MAX;
    api->hostname = strdup(cfg->hostname ? cfg->hostname : "localhost");
    int rc = api->hostname ? eng_api_set_tokens(api, cfg->tokens, cfg->ntokens) : -ENOMEM;
    if (rc == 0) {
        struct eng_http_config hc = {
            .loop = cfg->loop,
            .listen = cfg->listen,
            .max_conns = cfg->max_conns,
            .timeout_s = cfg->timeout_s,
            .max_body = api->max_message * API_BODY_FACTOR + API_BODY_SLACK,
            .routes = api_routes,
            .nroutes = sizeof api_routes / sizeof api_routes[0],
            .arg = api,
        };
        rc = eng_http_new(&hc, &api->http);
    }
    if (rc < 0) {
        eng_api_free(api);
        return rc;
    }
    *out = api;
    return 0;
}

static void free_tokens(char **tokens, unsigned n)
{
    for (unsigned i = 0; tokens && i < n; i++)
        free(tokens[i]);
    free(tokens);
}

int eng_api_set_tokens(struct eng_api *api, const char *const *tokens, unsigned ntokens)
{
    if (!api || (ntokens && !tokens))
        return -EINVAL;
    /* The whole new list first: a failure leaves the old one in force. */
    char **v = calloc(ntokens + 1, sizeof *v);
    unsigned n = 0;
    int rc = v ? 0 : -ENOMEM;
    for (unsigned i = 0; rc == 0 && i < ntokens; i++) {
        if (!tokens[i] || !*tokens[i])
            continue; /* an empty token would let an empty header in */
        if (!(v[n++] = strdup(tokens[i])))
            rc = -ENOMEM;
    }
    if (rc != 0) {
        free_tokens(v, n);
        return rc;
    }
    free_tokens(api->tokens, api->ntokens);
    api->tokens = v;
    api->ntokens = n;
    return 0;
}

uint16_t eng_api_port(const struct eng_api *api)
{
    return eng_http_port(api->http);
}

void eng_api_free(struct eng_api *api)
{
    if (!api)
        return;
    eng_api_messages_detach(api);
    eng_http_free(api->http);
    free_tokens(api->tokens, api->ntokens);
    free(api->hostname);
    free(api);
}
