/*
 * engine/http.c — libmicrohttpd driven by the io_uring loop (see http.h).
 *
 * MHD runs in external-event mode with its own epoll set (MHD_USE_EPOLL, no internal
 * thread). We poll that epoll fd through one loop handle and keep one loop timer for
 * MHD's connection timeouts; each readiness or tick calls MHD_run, which does a
 * non-blocking epoll_wait of its own. The timer ticks at least once a second, so a
 * timeout is never late by more than that.
 *
 * A request's state (struct eng_http_req) lives in MHD's per-request pointer from the
 * first access-handler call to MHD's completion notice. MHD forbids queueing a
 * response while it is handing us upload data, and a deferred request's connection
 * is suspended; in both cases the answer is stored in the request and queued on the
 * next access-handler call (after MHD_resume_connection, MHD calls it again).
 */
#include "engine/http.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "engine/addr.h"
#include "engine/log.h"

#define HTTP_DEF_MAX_CONNS    256
#define HTTP_DEF_MAX_CONNS_IP 32
#define HTTP_DEF_TIMEOUT_S    30
#define HTTP_DEF_MAX_BODY     (16u << 20)
#define HTTP_DEF_MAX_HEADER   (32u << 10)
#define HTTP_TICK_MAX_MS      1000
#define HTTP_MAX_HEADERS      8 /* extra response headers per reply */

struct http_hdr {
    char *name, *value;
};

struct eng_http_req {
    struct eng_http *srv;
    struct MHD_Connection *conn;
    const char *method, *url; /* MHD's, valid for the request's life */
    char *body;
    size_t len, cap;
    size_t discarded; /* body bytes thrown away after the limit was passed */
    bool too_big;
    bool dispatched; /* the handler (or the router) has seen it */
    bool in_handler;
    bool deferred;
    bool answered;
    struct MHD_Response *resp; /* the answer, waiting to be queued */
    unsigned status;
    struct http_hdr hdrs[HTTP_MAX_HEADERS];
    unsigned nhdrs;
    struct eng_http_req *prev, *next; /* the deferred list */
};

struct eng_http {
    struct eng_loop *loop;
    struct MHD_Daemon *d;
    int epfd;
    eng_handle_t poll_h, timer_h;
    unsigned handles; /* loop handles not released yet */
    bool in_run;
    size_t max_body;
    const struct eng_http_route *routes;
    unsigned nroutes;
    void *arg;
    uint16_t port;
    struct eng_http_req *deferred; /* suspended requests, for eng_http_free */
    struct eng_http_stats st;
};

/* ---- driving MHD from the loop ---------------------------------------------------------- */

static void http_arm_timer(struct eng_http *s)
{
    if (!s->timer_h || eng_handle_busy(s->loop, s->timer_h, ENG_OP_TIMER))
        return;
    MHD_UNSIGNED_LONG_LONG t = 0;
    unsigned ms = HTTP_TICK_MAX_MS;
    if (MHD_get_timeout(s->d, &t) == MHD_YES && t < HTTP_TICK_MAX_MS)
        ms = t == 0 ? 1 : (unsigned)t;
    int rc = eng_op_timer(s->loop, s->timer_h, ms);
    if (rc < 0)
        eng_log(ENG_LOG_WARN, "http: cannot arm timer: %s", eng_strerror(rc));
}

static void http_run(struct eng_http *s)
{
    if (s->in_run || !s->d)
        return;
    s->in_run = true;
    MHD_run(s->d);
    s->in_run = false;
    http_arm_timer(s);
}

static void http_arm_poll(struct eng_http *s)
{
    if (!s->poll_h || eng_handle_busy(s->loop, s->poll_h, ENG_OP_POLL))
        return;
    int rc = eng_op_poll(s->loop, s->poll_h, POLLIN, 0);
    if (rc < 0)
        eng_log(ENG_LOG_WARN, "http: cannot poll: %s", eng_strerror(rc));
}

static void http_on_poll(void *ctx, const struct eng_completion *c)
{
    struct eng_http *s = ctx;
    if (c->res == -ECANCELED)
        return;
    http_run(s);
    http_arm_poll(s);
}

static void http_on_timer(void *ctx, const struct eng_completion *c)
{
    struct eng_http *s = ctx;
    if (c->res == -ECANCELED)
        return;
    http_run(s);
}

static void http_on_release(void *ctx)
{
    struct eng_http *s = ctx;
    s->handles--;
}

static const struct eng_handle_ops http_poll_ops = { http_on_poll, http_on_release };
static const struct eng_handle_ops http_timer_ops = { http_on_timer, http_on_release };

static void http_mhd_log(void *arg, const char *fmt, va_list ap)
{
    (void)arg;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    eng_log(ENG_LOG_DEBUG, "http: mhd: %s", line);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void req_unlink(struct eng_http_req *r)
{
    struct eng_http *s = r->srv;
    if (r->prev)
        r->prev->next = r->next;
    else if (s->deferred == r)
        s->deferred = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct eng_http_req *r = *con_cls;
    if (!r)
        return;
    if (r->deferred && !r->answered) {
        req_unlink(r);
        r->srv->st.pending--;
    }
    for (unsigned i = 0; i < r->nhdrs; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
    }
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

/* Queues the stored answer. Only from the access handler, outside upload calls. */
static enum MHD_Result req_queue(struct eng_http_req *r)
{
    struct MHD_Response *resp = r->resp;
    r->resp = NULL;
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static const struct eng_http_route *http_route(struct eng_http *s, const char *method,
                                               const char *path, bool *path_known)
{
    *path_known = false;
    for (unsigned i = 0; i < s->nroutes; i++) {
        const struct eng_http_route *rt = &s->routes[i];
        bool match = rt->prefix ? strncmp(path, rt->path, strlen(rt->path)) == 0
                                : strcmp(path, rt->path) == 0;
        if (!match)
            continue;
        *path_known = true;
        if (!rt->method || strcmp(rt->method, method) == 0)
            return rt;
    }
    return NULL;
}

/* The Allow header of a 405: every method routed for this path. */
static void http_allow(struct eng_http *s, const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    for (unsigned i = 0; i < s->nroutes; i++) {
        const struct eng_http_route *rt = &s->routes[i];
        bool match = rt->prefix ? strncmp(path, rt->path, strlen(rt->path)) == 0
                                : strcmp(path, rt->path) == 0;
        if (match && rt->method && !strstr(out, rt->method)) {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? ", " : "", rt->method);
        }
    }
}

static void req_error(struct eng_http_req *r, unsigned status, const char *msg)
{
    char body[160];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
    eng_http_reply(r, status, "application/json", body, (size_t)n);
}

static void req_dispatch(struct eng_http_req *r)
{
    struct eng_http *s = r->srv;
    r->dispatched = true;
    s->st.requests++;
    if (r->too_big) {
        s->st.too_large++;
        req_error(r, 413, "request body too large");
        return;
    }
    bool known;
    const struct eng_http_route *rt = http_route(s, r->method, r->url, &known);
    if (!rt) {
        if (known) {
            char allow[128];
            http_allow(s, r->url, allow, sizeof allow);
            s->st.bad_method++;
            eng_http_add_header(r, "Allow", allow);
            req_error(r, 405, "method not allowed");
        } else {
            s->st.not_found++;
            req_error(r, 404, "not found");
        }
        return;
    }
    r->in_handler = true;
    rt->fn(s->arg, r);
    r->in_handler = false;
    if (r->answered)
        return;
    if (r->deferred) {
        s->st.deferred++;
        s->st.pending++;
        r->next = s->deferred;
        if (s->deferred)
            s->deferred->prev = r;
        s->deferred = r;
        MHD_suspend_connection(r->conn);
        return;
    }
    eng_log(ENG_LOG_WARN, "http: handler for %s %s did not answer", r->method, r->url);
    req_error(r, 500, "handler did not answer");
}

static bool body_append(struct eng_http_req *r, const char *data, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return false;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return true;
}

static enum MHD_Result http_on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct eng_http *s = cls;
    struct eng_http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = s;
        r->conn = conn;
        r->method = method;
        r->url = url;
        *con_cls = r;
        /* Refuse a declared oversize body before reading any of it. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->max_body) {
            r->too_big = true;
            req_dispatch(r);
            return r->resp ? req_queue(r) : MHD_NO;
        }
        return MHD_YES;
    }
    if (upload_data && *upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (!r->too_big && r->len + n > s->max_body) {
            /* Chunked bodies have no length up front. The answer (413) can only be
             * queued once the upload ends, so keep reading but stop storing; a client
             * that sends another max_body past the limit is cut off. */
            r->too_big = true;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
        }
        if (r->too_big) {
            r->discarded += n;
            return r->discarded > s->max_body ? MHD_NO : MHD_YES;
        }
        return body_append(r, upload_data, n) ? MHD_YES : MHD_NO;
    }
    if (r->resp)
        return req_queue(r);
    if (r->dispatched)
        return MHD_YES; /* deferred and not answered: spurious call */
    req_dispatch(r);
    return r->resp ? req_queue(r) : MHD_YES;
}

/* ---- the request view --------------------------------------------------------------------- */

const char *eng_http_req_method(const struct eng_http_req *req)
{
    return req->method;
}

const char *eng_http_req_path(const struct eng_http_req *req)
{
    return req->url;
}

const char *eng_http_req_query(const struct eng_http_req *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *eng_http_req_header(const struct eng_http_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *eng_http_req_body(const struct eng_http_req *req, size_t *len)
{
    *len = req->len;
    return req->body ? req->body : "";
}

/* ---- answering ---------------------------------------------------------------------------- */

int eng_http_add_header(struct eng_http_req *req, const char *name, const char *value)
{
    if (req->answered)
        return -EALREADY;
    if (req->nhdrs == HTTP_MAX_HEADERS)
        return -ENOMEM;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -ENOMEM;
    }
    req->hdrs[req->nhdrs].name = n;
    req->hdrs[req->nhdrs].value = v;
    req->nhdrs++;
    return 0;
}

void eng_http_defer(struct eng_http_req *req)
{
    if (req->in_handler)
        req->deferred = true;
}

int eng_http_reply(struct eng_http_req *req, unsigned status, const char *content_type,
                   const void *body, size_t len)
{
    if (req->answered)
        return -EALREADY;
    struct eng_http *s = req->srv;
    int rc = 0;
    struct MHD_Response *resp =
            MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        rc = -ENOMEM;
        status = 500;
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return -ENOMEM;
    } else {
        if (content_type)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        for (unsigned i = 0; i < req->nhdrs; i++)
            MHD_add_response_header(resp, req->hdrs[i].name, req->hdrs[i].value);
    }
    req->resp = resp;
    req->status = status;
    req->answered = true;
    if (req->deferred && !req->in_handler) {
        req_unlink(req);
        s->st.pending--;
        MHD_resume_connection(req->conn);
        /* From outside MHD_run (an enqueue's done callback): run MHD now so the answer
         * goes out in this loop iteration. req may be freed by this call. */
        http_run(s);
    }
    return rc;
}

void eng_http_stats(const struct eng_http *s, struct eng_http_stats *out)
{
    *out = s->st;
}

uint16_t eng_http_port(const struct eng_http *s)
{
    return s->port;
}

/* ---- life cycle --------------------------------------------------------------------------- */

static int http_listen(const char *text, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (!text || eng_addr_parse(text, 0, &ss, &sl) < 0)
        return -EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int eng_http_new(const struct eng_http_config *cfg, struct eng_http **out)
{
    if (!cfg || !cfg->loop || !cfg->routes || cfg->nroutes == 0 || !out)
        return -EINVAL;
    struct eng_http *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = cfg->loop;
    s->routes = cfg->routes;
    s->nroutes = cfg->nroutes;
    s->arg = cfg->arg;
    s->max_body = cfg->max_body ? cfg->max_body : HTTP_DEF_MAX_BODY;
    int lfd = http_listen(cfg->listen, &s->port);
    if (lfd < 0) {
        free(s);
        return lfd;
    }
    /* MHD takes the listening socket (it closes it in MHD_stop_daemon). */
    s->d = MHD_start_daemon(
            MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL,
            http_on_access, s, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)lfd,
            MHD_OPTION_CONNECTION_LIMIT,
            (unsigned)(cfg->max_conns ? cfg->max_conns : HTTP_DEF_MAX_CONNS),
            MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            (unsigned)(cfg->max_conns_ip ? cfg->max_conns_ip : HTTP_DEF_MAX_CONNS_IP),
            MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)(cfg->timeout_s ? cfg->timeout_s : HTTP_DEF_TIMEOUT_S),
            MHD_OPTION_CONNECTION_MEMORY_LIMIT,
            (size_t)(cfg->max_header ? cfg->max_header : HTTP_DEF_MAX_HEADER),
            MHD_OPTION_NOTIFY_COMPLETED, http_on_completed, s, MHD_OPTION_EXTERNAL_LOGGER,
            http_mhd_log, s, MHD_OPTION_END);
    if (!s->d) {
        close(lfd);
        free(s);
        return -ENOMEM;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
    s->epfd = di ? di->epoll_fd : -1;
    int rc = s->epfd < 0 ? -EINVAL
                         : eng_handle_open(s->loop, s->epfd, &http_poll_ops, s, &s->poll_h);
    if (rc == 0) {
        s->handles++;
        rc = eng_handle_open(s->loop, -1, &http_timer_ops, s, &s->timer_h);
        if (rc == 0)
            s->handles++;
    }
    if (rc < 0) {
        eng_http_free(s);
        return rc;
    }
    http_arm_poll(s);
    http_arm_timer(s);
    *out = s;
    return 0;
}

void eng_http_free(struct eng_http *s)
{
    if (!s)
        return;
    /* Answer what is still deferred, and give MHD one run to send those answers. */
    while (s->deferred) {
        struct eng_http_req *r = s->deferred;
        eng_http_reply(r, 503, "application/json", "{\"error\":\"shutting down\"}\n", 26);
    }
    if (s->d)
        MHD_run(s->d);
    /* The poll op watches MHD's epoll fd: release it before MHD closes that fd. */
    if (s->poll_h)
        eng_handle_close(s->loop, s->poll_h);
    if (s->timer_h)
        eng_handle_close(s->loop, s->timer_h);
    while (s->handles > 0)
        if (eng_loop_run_once(s->loop, 100) < 0)
            break;
    if (s->d)
        MHD_stop_daemon(s->d);
    free(s);
}
