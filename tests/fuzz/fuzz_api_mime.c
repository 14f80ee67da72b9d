/*
 * tests/fuzz/fuzz_api_mime.c — what a hostile API client can send (with a token or not):
 * the JSON body of POST /api/v1/messages through the real handler (validation, MIME
 * assembly, the split by domain, the enqueues and the answer once they report), the
 * MIME builder and the mailbox check directly, and the queue endpoints' JSON bodies
 * and query arguments.
 *
 * No sockets: the target is linked with engine/http.c's request functions wrapped
 * (ld --wrap, see CMakeLists.txt), so eng_api_new hands its route table to the target
 * and every handler reads the fake request below and answers into it; the daemon's
 * eng_api_ops are fakes that complete enqueues after the handler returned, in an order
 * and with results the input chooses.
 *
 * Input: [0] the mode (2 bits), the Authorization header (3 bits: good, missing or
 * wrong), two options of the fields-as-JSON mode; [1] limits (max_message, max_rcpts)
 * and the queue endpoint; [2..3] with the body, the seed of the fakes' decisions; then
 * the body, by mode:
 *   0  a messages POST's JSON, as it is;
 *   1  fields made into a well-formed messages POST (so that the hostile values meet
 *      the validation, not jansson's parser): from NUL to,to NUL subject NUL text NUL
 *      html (NUL header-name NUL value)*; text goes as "raw" with option 0x20, and a
 *      single recipient as a string with 0x40;
 *   2  the same fields straight into eng_api_mime_build (From and To checked first, as
 *      the handler does), every field also through eng_api_addr_check;
 *   3  a queue endpoint (flush, bounce, delete, messages): a query string
 *      ("id=..&domain=..&limit=..") NUL a JSON body.
 *
 * Invariants: exactly one answer per request, with a documented status and a JSON
 * object body ({"error": string[, "field": string]}, or the ids); a 4xx means nothing
 * was queued; enqueued content is within max_message, NUL-free, CRLF line ends,
 * flagged 8-bit exactly when it is, its envelope one lowercase domain that every
 * recipient has; built MIME is ASCII with CRLF lines of at most 998 octets, one of
 * each generated header, the user's headers in order with their values intact (RFC
 * 2047 words decoded), the boundary only where it delimits, and the bodies decoding
 * back to the input (tests/fuzz/api_mime_check.c); mailbox check results are -EINVAL
 * with a reason or an address within the RFC 5321 lengths and character sets; a queue
 * op gets one message or one lowercase domain, and its result the status it maps to.
 */
#define _GNU_SOURCE
#include "tests/fuzz/fuzz.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "engine/api.h"
#include "engine/http.h"
#include "engine/log.h"
#include "tests/fuzz/api_mime_check.h"

#define HDR_LEN 4
#define TOKEN   "fuzz-token"
#define HOST    "mta.fuzz.test"
#define FIELDS  64

/* ---- the fake HTTP layer (ld --wrap of engine/http.c's functions) ---------------------- */

struct fake_req {
    const char *body; /* NUL-terminated, len bytes before the NUL */
    size_t len;
    const char *auth; /* the Authorization header, NULL = none */
    const char *q_id, *q_domain, *q_limit;
    bool deferred;
    unsigned replies; /* answers given: must end at exactly 1 */
    unsigned status;
    char *reply; /* the answer's body, owned */
    size_t reply_len;
    bool www_authenticate, retry_after;
};

static struct {
    const struct eng_http_route *routes;
    unsigned nroutes;
    void *arg;
    struct fake_req *req; /* the request in flight */
    bool freed;
} srv;

static char srv_handle; /* what eng_http_new returns: never dereferenced */

static struct fake_req *fr(const struct eng_http_req *req)
{
    fuzz_check(srv.req != NULL && (const void *)req == (const void *)srv.req);
    return srv.req;
}

int __wrap_eng_http_new(const struct eng_http_config *cfg, struct eng_http **out);
void __wrap_eng_http_free(struct eng_http *s);
const char *__wrap_eng_http_req_header(const struct eng_http_req *req, const char *name);
const char *__wrap_eng_http_req_query(const struct eng_http_req *req, const char *key);
const char *__wrap_eng_http_req_body(const struct eng_http_req *req, size_t *len);
int __wrap_eng_http_add_header(struct eng_http_req *req, const char *name, const char *value);
void __wrap_eng_http_defer(struct eng_http_req *req);
int __wrap_eng_http_reply(struct eng_http_req *req, unsigned status, const char *content_type,
                          const void *body, size_t len);

int __wrap_eng_http_new(const struct eng_http_config *cfg, struct eng_http **out)
{
    srv.routes = cfg->routes;
    srv.nroutes = cfg->nroutes;
    srv.arg = cfg->arg;
    srv.freed = false;
    *out = (struct eng_http *)(void *)&srv_handle;
    return 0;
}

/* As the real one: a deferred request still waiting gets a 503. */
void __wrap_eng_http_free(struct eng_http *s)
{
    fuzz_check((void *)s == (void *)&srv_handle);
    struct fake_req *r = srv.req;
    if (r && r->deferred && r->replies == 0) {
        r->replies++;
        r->status = 503;
    }
    srv.freed = true;
}

const char *__wrap_eng_http_req_header(const struct eng_http_req *req, const char *name)
{
    return strcasecmp(name, "Authorization") == 0 ? fr(req)->auth : NULL;
}

const char *__wrap_eng_http_req_query(const struct eng_http_req *req, const char *key)
{
    struct fake_req *r = fr(req);
    if (strcmp(key, "id") == 0)
        return r->q_id;
    if (strcmp(key, "domain") == 0)
        return r->q_domain;
    if (strcmp(key, "limit") == 0)
        return r->q_limit;
    return NULL;
}

const char *__wrap_eng_http_req_body(const struct eng_http_req *req, size_t *len)
{
    struct fake_req *r = fr(req);
    *len = r->len;
    return r->body;
}

int __wrap_eng_http_add_header(struct eng_http_req *req, const char *name, const char *value)
{
    struct fake_req *r = fr(req);
    fuzz_check(r->replies == 0);
    fuzz_check(*value != '\0');
    if (strcmp(name, "WWW-Authenticate") == 0)
        r->www_authenticate = true;
    else if (strcmp(name, "Retry-After") == 0)
        r->retry_after = true;
    else
        fuzz_check(!"an unexpected response header");
    return 0;
}

void __wrap_eng_http_defer(struct eng_http_req *req)
{
    struct fake_req *r = fr(req);
    fuzz_check(!r->deferred && r->replies == 0);
    r->deferred = true;
}

int __wrap_eng_http_reply(struct eng_http_req *req, unsigned status, const char *content_type,
                          const void *body, size_t len)
{
    struct fake_req *r = fr(req);
    fuzz_check(!srv.freed);
    fuzz_check(r->replies == 0); /* a handler answers once */
    fuzz_check(content_type && strcmp(content_type, "application/json") == 0);
    r->replies++;
    r->status = status;
    r->reply = malloc(len + 1);
    fuzz_check(r->reply != NULL);
    memcpy(r->reply, body, len);
    r->reply[len] = '\0';
    r->reply_len = len;
    return 0;
}

/* ---- decisions ------------------------------------------------------------------------- */

static uint32_t rng_state;

static uint32_t rng(void)
{
    return fuzz_xorshift32(&rng_state);
}

/* ---- the fake daemon (eng_api_ops) ----------------------------------------------------- */

struct enq {
    eng_api_done_fn done;
    void *done_arg;
    const char *content; /* borrowed until done */
    size_t len;
};

static struct {
    struct enq q[QUEUE_RCPTS_MAX];
    unsigned n;     /* accepted: done pending */
    unsigned calls; /* enqueue calls */
    unsigned rcpts; /* recipients over every call */
    char sender[QUEUE_ADDR_MAX + 1];
    char domains[QUEUE_RCPTS_MAX][QUEUE_DOMAIN_MAX + 1];
    size_t max_message;
    unsigned ops_calls;           /* queue_list / queue_action */
    unsigned op_status;           /* what the op's result must be answered with */
    const struct eng_api_mime *m; /* what a parts POST asked for; NULL for raw */
} fk;

static void check_domain(const char *d)
{
    size_t n = strlen(d);
    fuzz_check(n >= 1 && n <= QUEUE_DOMAIN_MAX);
    for (size_t i = 0; i < n; i++)
        fuzz_check(islower((unsigned char)d[i]) || isdigit((unsigned char)d[i]) || d[i] == '-' ||
                   d[i] == '.');
}

static int f_enqueue(void *arg, const struct queue_envelope *env, const void *content, size_t len,
                     eng_api_done_fn done, void *done_arg)
{
    (void)arg;
    const char *c = content;
    fuzz_check(env->nrcpts >= 1 && env->content_size == len);
    fuzz_check(len <= fk.max_message); /* the documented content limit */
    fuzz_check(strlen(c) == len);      /* NUL-terminated, no NUL inside */
    fuzz_mime_check_crlf(c, len);
    fuzz_check(env->needs_8bit == fuzz_mime_has_8bit(c, len));
    if (fk.m)
        fuzz_mime_check(fk.m, c, len); /* assembled from the parts */
    if (fk.calls == 0)
        memcpy(fk.sender, env->sender, sizeof(fk.sender));
    fuzz_check(strcmp(fk.sender, env->sender) == 0); /* one message, one sender */
    /* One lowercase domain per envelope, every recipient in it, each domain once. */
    check_domain(env->domain);
    for (unsigned i = 0; i < fk.calls; i++)
        fuzz_check(strcmp(fk.domains[i], env->domain) != 0);
    fuzz_check(fk.calls < QUEUE_RCPTS_MAX);
    strcpy(fk.domains[fk.calls], env->domain);
    for (unsigned i = 0; i < env->nrcpts; i++) {
        const char *at = strrchr(env->rcpts[i].addr, '@');
        fuzz_check(at != NULL && strcasecmp(at + 1, env->domain) == 0);
    }
    fk.calls++;
    fk.rcpts += env->nrcpts;
    uint32_t d = rng();
    switch (d % 16) {
    case 0: return -EAGAIN;
    case 1: return QUEUE_ERR_FULL;
    case 2: return QUEUE_ERR_TOO_BIG;
    case 3: return -EIO;
    default: break;
    }
    fk.q[fk.n++] = (struct enq){ done, done_arg, c, len };
    return 0;
}

/* A queue op's result, and the status it must be answered with. */
static int op_result(json_t **out)
{
    static const struct {
        int rc;
        unsigned status;
    } res[] = { { QUEUE_ERR_NOT_FOUND, 404 }, { -EINVAL, 400 }, { -EBUSY, 409 },
                { -ESHUTDOWN, 503 },          { -EIO, 500 },    { 0, 500 } /* no document */ };
    uint32_t d = rng() % 8;
    if (d < sizeof(res) / sizeof(res[0])) {
        fk.op_status = res[d].status;
        return res[d].rc;
    }
    fk.op_status = 200;
    *out = json_pack("{s:i}", "affected", 1);
    return 0;
}

static int f_queue_list(void *arg, const char *domain, unsigned limit, json_t **out)
{
    (void)arg;
    fk.ops_calls++;
    if (domain)
        check_domain(domain);
    fuzz_check(limit >= 1 && limit <= ENG_API_LIST_MAX);
    return op_result(out);
}

static int f_queue_action(void *arg, enum eng_api_action action, queue_id_t id, const char *domain,
                          json_t **out)
{
    (void)arg;
    fk.ops_calls++;
    fuzz_check(strcmp(eng_api_action_name(action), "invalid") != 0);
    fuzz_check((id != 0) != (domain != NULL)); /* one message or one domain */
    if (domain)
        check_domain(domain);
    return op_result(out);
}

static const struct eng_api_ops ops = {
    .enqueue = f_enqueue,
    .queue_list = f_queue_list,
    .queue_action = f_queue_action,
};

/* ---- answers ---------------------------------------------------------------------------- */

static bool status_in(unsigned status, const unsigned *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == status)
            return true;
    return false;
}

/* The answer's body: a JSON object; an error names it (and maybe the field). */
static json_t *check_answer(const struct fake_req *r)
{
    fuzz_check(r->replies == 1);
    if (r->reply == NULL) {
        fuzz_check(r->status == 503); /* from eng_http_free */
        return NULL;
    }
    fuzz_check(strlen(r->reply) == r->reply_len);
    json_error_t jerr;
    json_t *doc = json_loads(r->reply, 0, &jerr);
    fuzz_check(json_is_object(doc));
    json_t *err = json_object_get(doc, "error");
    if (r->status >= 300) {
        fuzz_check(json_is_string(err) && json_string_length(err) > 0);
        json_t *field = json_object_get(doc, "field");
        fuzz_check(field == NULL || json_is_string(field));
    } else {
        fuzz_check(err == NULL);
    }
    fuzz_check(r->status != 401 || r->www_authenticate);
    fuzz_check(r->status != 503 || r->retry_after);
    return doc;
}

/* ---- the input ------------------------------------------------------------------------------ */

/* The body split at NULs: from, to-list (','), subject, text, html, then name / value
 * pairs; "" past the end. */
struct fields {
    char *buf; /* owned */
    const char *f[FIELDS];
    size_t n;
};

static void fields_split(struct fields *fs, const char *rest, size_t n)
{
    fs->buf = malloc(n + 1);
    fuzz_check(fs->buf != NULL);
    memcpy(fs->buf, rest, n);
    fs->buf[n] = '\0';
    fs->n = 0;
    for (char *p = fs->buf; fs->n < FIELDS;) {
        fs->f[fs->n++] = p;
        char *z = memchr(p, '\0', (size_t)(fs->buf + n - p));
        if (z == NULL || z == fs->buf + n)
            break;
        p = z + 1;
    }
    while (fs->n < 5)
        fs->f[fs->n++] = "";
}

/* MIME fields straight into eng_api_mime_build, From and To checked first as the
 * handler checks them; every field through the mailbox check too. */
static void run_mime(const char *rest, size_t n)
{
    struct fields fs;
    fields_split(&fs, rest, n);
    const char **f = fs.f;
    for (size_t i = 0; i < fs.n; i++)
        fuzz_mime_addr_valid(f[i]);
    const char *to[16];
    unsigned nto = 0;
    char *tl = strdup(f[1]);
    fuzz_check(tl != NULL);
    for (char *save = NULL, *t = strtok_r(tl, ",", &save); t && nto < 16;
         t = strtok_r(NULL, ",", &save))
        if (fuzz_mime_addr_valid(t))
            to[nto++] = t;
    const char *names[FIELDS], *values[FIELDS];
    unsigned nh = 0;
    for (size_t i = 5; i + 1 < fs.n; i += 2) {
        names[nh] = f[i];
        values[nh++] = f[i + 1];
    }
    struct eng_api_mime m = {
        .from = f[0],
        .to = to,
        .nto = nto,
        .subject = *f[2] ? f[2] : NULL,
        .text = f[3],
        .html = f[4],
        .hdr_names = names,
        .hdr_values = values,
        .nhdrs = nh,
        .hostname = HOST,
        .now = rng() % 2 ? 1767225600 : 0,
    };
    if (fuzz_mime_addr_valid(f[0])) {
        char *out = NULL;
        size_t len = 0;
        const char *why = NULL, *field = NULL;
        int rc = eng_api_mime_build(&m, &out, &len, &why, &field);
        fuzz_check(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
        if (rc == 0) {
            fuzz_check(why == NULL && field == NULL);
            fuzz_mime_check(&m, out, len);
            free(out);
        } else if (rc == -EINVAL) {
            fuzz_check(why != NULL && field != NULL);
            fuzz_check(!strcmp(field, "from") || !strcmp(field, "text") ||
                       !strcmp(field, "subject") || !strcmp(field, "headers"));
        }
    }
    free(tl);
    free(fs.buf);
}

/* A string member from a field; left out when empty or not UTF-8. */
static void set_str(json_t *obj, const char *key, const char *v)
{
    json_t *s = *v ? json_string(v) : NULL;
    if (s)
        json_object_set_new(obj, key, s);
}

/* The same fields as a messages POST's JSON (well-formed, so that the handler's
 * validation is what meets the hostile values): text as "raw" instead when raw is set,
 * a lone recipient as a string when one_to is. Returns the body (free() it). */
static char *fields_json(const char *rest, size_t n, bool raw, bool one_to)
{
    struct fields fs;
    fields_split(&fs, rest, n);
    const char **f = fs.f;
    json_t *doc = json_object();
    set_str(doc, "from", f[0]);
    json_t *to = json_array();
    char *tl = strdup(f[1]);
    fuzz_check(doc && to && tl);
    for (char *save = NULL, *t = strtok_r(tl, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(to, json_string(t));
    if (one_to && json_array_size(to) == 1)
        json_object_set(doc, "to", json_array_get(to, 0));
    else
        json_object_set(doc, "to", to);
    json_decref(to);
    set_str(doc, "subject", f[2]);
    set_str(doc, raw ? "raw" : "text", f[3]);
    set_str(doc, "html", f[4]);
    if (fs.n > 5) {
        json_t *h = json_object();
        for (size_t i = 5; i + 1 < fs.n; i += 2)
            set_str(h, f[i], f[i + 1]);
        json_object_set_new(doc, "headers", h);
    }
    char *body = json_dumps(doc, JSON_COMPACT);
    fuzz_check(body != NULL);
    json_decref(doc);
    free(tl);
    free(fs.buf);
    return body;
}

/* The recipients of a messages POST as the client gave them. */
static size_t count_to(const char *body, size_t len)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *to = json_object_get(doc, "to");
    size_t n = json_is_string(to) ? 1 : json_array_size(to);
    json_decref(doc);
    return n;
}

/* The parts of a messages POST, as the client gave them, for checking the MIME that
 * is enqueued (only a request that passed validation gets that far). */
struct parts {
    json_t *doc;
    struct eng_api_mime m;
    const char **to, **names, **values;
};

static const char *json_str(json_t *doc, const char *key)
{
    return json_string_value(json_object_get(doc, key)); /* NULL unless a string */
}

static bool parts_load(struct parts *pt, const char *body, size_t len)
{
    memset(pt, 0, sizeof(*pt));
    json_error_t jerr;
    pt->doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(pt->doc) || json_object_get(pt->doc, "raw"))
        return false;
    json_t *to = json_object_get(pt->doc, "to");
    json_t *hdrs = json_object_get(pt->doc, "headers");
    size_t nto = json_is_string(to) ? 1 : json_array_size(to);
    size_t nh = json_object_size(hdrs);
    pt->to = calloc(nto + 1, sizeof(*pt->to));
    pt->names = calloc(nh + 1, sizeof(*pt->names));
    pt->values = calloc(nh + 1, sizeof(*pt->values));
    fuzz_check(pt->to && pt->names && pt->values);
    for (size_t i = 0; i < nto; i++)
        pt->to[i] = json_is_string(to) ? json_string_value(to)
                                       : json_string_value(json_array_get(to, i));
    const char *key;
    json_t *v;
    size_t k = 0;
    json_object_foreach(hdrs, key, v)
    {
        pt->names[k] = key;
        pt->values[k++] = json_string_value(v);
    }
    pt->m = (struct eng_api_mime){
        .from = json_str(pt->doc, "from"),
        .to = pt->to,
        .nto = (unsigned)nto,
        .subject = json_str(pt->doc, "subject"),
        .text = json_str(pt->doc, "text"),
        .html = json_str(pt->doc, "html"),
        .hdr_names = pt->names,
        .hdr_values = pt->values,
        .nhdrs = (unsigned)nh,
    };
    return true;
}

static void parts_free(struct parts *pt)
{
    free(pt->to);
    free(pt->names);
    free(pt->values);
    json_decref(pt->doc);
}

/* ---- requests ------------------------------------------------------------------------------ */

static const struct eng_http_route *route(const char *method, const char *path)
{
    for (unsigned i = 0; i < srv.nroutes; i++)
        if (srv.routes[i].method && strcmp(srv.routes[i].method, method) == 0 &&
            strcmp(srv.routes[i].path, path) == 0)
            return &srv.routes[i];
    fuzz_check(!"route missing");
    return NULL;
}

/* "id=..&domain=..&limit=.." (values to the next '&'; no decoding: MHD did that). */
static void parse_query(char *q, struct fake_req *r)
{
    for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        const char *v = eq ? eq + 1 : "";
        if (eq)
            *eq = '\0';
        if (strcmp(kv, "id") == 0 && !r->q_id)
            r->q_id = v;
        else if (strcmp(kv, "domain") == 0 && !r->q_domain)
            r->q_domain = v;
        else if (strcmp(kv, "limit") == 0 && !r->q_limit)
            r->q_limit = v;
    }
}

/* The messages POST's answer, once every enqueue reported. */
static void check_post(const struct fake_req *r, json_t *doc, bool auth_ok)
{
    static const unsigned ok[] = { 202, 400, 401, 413, 500, 503, 507 };
    fuzz_check(status_in(r->status, ok, sizeof(ok) / sizeof(ok[0])));
    fuzz_check((r->status == 401) == !auth_ok);
    /* Validated whole first: a 4xx from the input queues nothing. */
    if (r->status == 400 || r->status == 401)
        fuzz_check(fk.calls == 0);
    if (fk.calls > 0)
        fuzz_check(fk.rcpts == count_to(r->body, r->len)); /* every recipient, once */
    json_t *ids = json_object_get(doc, "ids");
    if (r->status == 202)
        fuzz_check(json_array_size(ids) == fk.calls);
    else if (fk.calls > 0)
        fuzz_check(json_array_size(ids) + json_array_size(json_object_get(doc, "failed_domains")) ==
                   fk.calls);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const char *id = json_string_value(json_array_get(ids, i));
        fuzz_check(id && strlen(id) == QUEUE_ID_HEX - 1);
    }
}

/* One request to one of the API's routes: POST /api/v1/messages (queue == -1) or a
 * queue endpoint (0..3). body is borrowed, NUL-terminated; query is modified. */
static void run_http(int queue, uint8_t limits, const char *body, size_t len, char *query,
                     const char *auth, bool auth_ok)
{
    static const size_t max_messages[4] = { 0, 64, 300, 2000 };
    static const unsigned max_rcpts[4] = { 0, 1, 2, 3 };
    struct eng_api_config cfg = {
        .loop = (struct eng_loop *)(void *)&srv_handle, /* kept, never used here */
        .listen = "127.0.0.1:0",
        .tokens = (const char *const[]){ TOKEN, "" },
        .ntokens = 2,
        .ops = &ops,
        .hostname = HOST,
        .max_message = max_messages[limits & 3],
        .max_rcpts = max_rcpts[(limits >> 2) & 3],
    };
    /* The fakes' state (not the big tables: only their first calls entries are read). */
    fk.n = fk.calls = fk.rcpts = fk.ops_calls = fk.op_status = 0;
    fk.m = NULL;
    fk.max_message = cfg.max_message ? cfg.max_message : 10u << 20;
    struct eng_api *api = NULL;
    fuzz_check(eng_api_new(&cfg, &api) == 0);

    struct fake_req r = { .body = body, .len = len, .auth = auth };
    struct parts pt = { 0 };
    const struct eng_http_route *rt;
    if (queue < 0) {
        rt = route("POST", "/api/v1/messages");
        if (parts_load(&pt, body, len))
            fk.m = &pt.m;
    } else {
        static const char *const paths[4] = { "/api/v1/queue/flush", "/api/v1/queue/bounce",
                                              "/api/v1/queue/delete", "/api/v1/queue/messages" };
        rt = route(queue == 3 ? "GET" : "POST", paths[queue]);
        parse_query(query, &r);
    }
    srv.req = &r;
    rt->fn(srv.arg, (struct eng_http_req *)(void *)&r);
    fuzz_check(r.deferred != (r.replies == 1));

    /* The enqueues report, in an order the input chooses; or the API goes first. */
    bool free_first = r.deferred && rng() % 16 == 0;
    if (free_first) {
        eng_api_free(api);
        api = NULL;
        fuzz_check(r.replies == 1 && r.status == 503 && r.reply == NULL);
    }
    while (fk.n > 0) {
        unsigned i = rng() % fk.n;
        struct enq e = fk.q[i];
        fk.q[i] = fk.q[--fk.n];
        fuzz_check(strlen(e.content) == e.len); /* still the caller's until done */
        uint32_t d = rng();
        int res = d % 8 == 0 ? QUEUE_ERR_FULL : d % 8 == 1 ? -EIO : 0;
        e.done(e.done_arg, res == 0 ? 0x1000 + i : 0, res);
    }
    json_t *doc = check_answer(&r);
    if (queue < 0 && !free_first) {
        check_post(&r, doc, auth_ok);
    } else if (queue >= 0) {
        static const unsigned ok[] = { 200, 400, 401, 404, 409, 500, 501, 503 };
        fuzz_check(status_in(r.status, ok, sizeof(ok) / sizeof(ok[0])));
        fuzz_check((r.status == 401) == !auth_ok);
        fuzz_check(fk.ops_calls <= 1);
        fuzz_check(fk.ops_calls == 0 || r.status == fk.op_status);
    }
    json_decref(doc);
    parts_free(&pt);
    eng_api_free(api);
    srv.req = NULL;
    free(r.reply);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    eng_log_set_level(ENG_LOG_ERROR); /* the fakes' refusals are logged as warnings */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HDR_LEN)
        return 0;
    const char *rest = (const char *)data + HDR_LEN;
    size_t n = size - HDR_LEN;
    /* The decisions' seed: bytes 2..3 and the body, so that every input gets its own. */
    uint32_t h = 2166136261u ^ ((uint32_t)data[2] << 8 | data[3]);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)rest[i]) * 16777619u;
    rng_state = h ? h : 1;
    static const char *const auths[8] = {
        "Bearer " TOKEN, "Bearer " TOKEN, "Bearer    " TOKEN,   "bearer " TOKEN, NULL,
        "Bearer wrong",  "Bearer ",       "Basic Zm9vOmJhcg==",
    };
    unsigned a = (data[0] >> 2) & 7;
    bool auth_ok = a < 4;
    /* Each mode's body, NUL-terminated, in a buffer of its own. */
    char *copy = malloc(n + 1);
    fuzz_check(copy != NULL);
    memcpy(copy, rest, n);
    copy[n] = '\0';
    switch (data[0] & 3) {
    case 0: run_http(-1, data[1], copy, n, NULL, auths[a], auth_ok); break;
    case 1: {
        char *body = fields_json(rest, n, data[0] & 0x20, data[0] & 0x40);
        run_http(-1, data[1], body, strlen(body), NULL, auths[a], auth_ok);
        free(body);
        break;
    }
    case 2: run_mime(rest, n); break;
    default: {
        /* A queue endpoint: query NUL JSON body. */
        char *z = memchr(copy, '\0', n);
        const char *body = z ? z + 1 : copy + n;
        run_http((data[1] >> 4) & 3, data[1], body, n - (size_t)(body - copy), copy, auths[a],
                 auth_ok);
        break;
    }
    }
    free(copy);
    return 0;
}
