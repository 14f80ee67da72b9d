/*
 * engine/http.h — a small HTTP/1.1 server on floormta's io_uring loop (metrics, admin API).
 *
 * libmicrohttpd does the HTTP framing in its external-event mode: no thread of its
 * own; its epoll fd is polled through a loop handle and MHD_run is called when that
 * fd is readable and on a loop timer, so every handler runs on the loop thread and
 * nothing here takes a lock.
 *
 * Requests are dispatched through a route table. A handler answers now
 * (eng_http_reply inside the call) or later: it calls eng_http_defer, keeps the
 * request, and calls eng_http_reply once the answer is known (the connection is
 * suspended meanwhile; this is how POST /api/v1/messages answers only once its
 * message is durable).
 *
 * Everything a client can make the server hold is bounded: connections overall and
 * per IP, the idle/slow-connection timeout, the header block (MHD's per-connection
 * memory) and the body (max_body, checked against Content-Length up front and while
 * the body is accumulated).
 */
#ifndef FLOORMTA_ENGINE_HTTP_H
#define FLOORMTA_ENGINE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/loop.h"

struct eng_http;
struct eng_http_req;

/* A handler. req is valid until the reply is sent: within this call unless the handler
 * calls eng_http_defer, then until its eng_http_reply. A handler that neither replies
 * nor defers gets a 500 sent for it. arg is eng_http_config.arg. */
typedef void (*eng_http_handler_fn)(void *arg, struct eng_http_req *req);

struct eng_http_route {
    const char *method; /* "GET", "POST", ...; NULL = any method */
    const char *path;   /* exact path, or a prefix when prefix is set */
    bool prefix;
    eng_http_handler_fn fn;
};

struct eng_http_config {
    struct eng_loop *loop; /* borrowed; outlives the server */
    const char *listen;    /* "127.0.0.1:9025", "[::1]:0" (port 0 = ephemeral); copied */
    unsigned max_conns;    /* 0 = 256 */
    unsigned max_conns_ip; /* per client IP; 0 = 32 */
    unsigned timeout_s;    /* a connection idle or trickling this long is closed; 0 = 30 */
    size_t max_body;       /* request body bytes; 0 = 16 MiB */
    size_t max_header;     /* per-connection memory for the request line and headers;
                            * 0 = 32 KiB */
    const struct eng_http_route *routes; /* borrowed until eng_http_free; first match wins */
    unsigned nroutes;
    void *arg; /* borrowed; passed to every handler */
};

/* Creates the listening socket, starts libmicrohttpd in external-event mode and
 * watches its epoll fd on cfg->loop. cfg is borrowed for the call (routes and arg until
 * eng_http_free). Returns 0 and *out (free with eng_http_free), -EINVAL (no loop, bad
 * listen address, no routes), -errno (socket, bind, listen), -ENOMEM, ENG_ERR_FULL. */
int eng_http_new(const struct eng_http_config *cfg, struct eng_http **out);

/* The port actually bound (for listen ports of 0). */
uint16_t eng_http_port(const struct eng_http *s);

/* Stops accepting, answers 503 to every deferred request (its handler's later
 * eng_http_reply must not happen: whoever deferred must forget req first), closes every
 * connection and frees the server. Call from the loop thread but never from inside a
 * handler. Drives the loop until the server's handles are released. NULL is a no-op. */
void eng_http_free(struct eng_http *s);

/* ---- the request view (all borrowed from req, valid while req is) ----------------- */

const char *eng_http_req_method(const struct eng_http_req *req);
const char *eng_http_req_path(const struct eng_http_req *req); /* without the query */
/* A query argument ("?domain=x"), a request header (case-insensitive name), or NULL. */
const char *eng_http_req_query(const struct eng_http_req *req, const char *key);
const char *eng_http_req_header(const struct eng_http_req *req, const char *name);
/* The body (NUL-terminated for convenience; len excludes the NUL). */
const char *eng_http_req_body(const struct eng_http_req *req, size_t *len);

/* ---- answering ---------------------------------------------------------------------- */

/* Adds a response header to the coming reply (name and value copied). Returns 0,
 * -ENOMEM, -EALREADY (already replied). */
int eng_http_add_header(struct eng_http_req *req, const char *name, const char *value);

/* The handler will answer later: req stays valid until eng_http_reply. Call from inside
 * the handler only. */
void eng_http_defer(struct eng_http_req *req);

/* Sends the answer: status, content type (NULL = none) and body (copied; len 0 = empty).
 * From inside the handler, or afterwards for a deferred request (on the loop thread;
 * the connection resumes and req is gone once this returns). Returns 0, -EALREADY
 * (already answered: nothing sent), -ENOMEM (a 500 is sent instead if at all possible). */
int eng_http_reply(struct eng_http_req *req, unsigned status, const char *content_type,
                   const void *body, size_t len);

struct eng_http_stats {
    uint64_t requests;   /* requests dispatched to a handler or answered by the router */
    uint64_t deferred;   /* ... deferred by their handler */
    uint64_t too_large;  /* 413s */
    uint64_t not_found;  /* 404s from the router */
    uint64_t bad_method; /* 405s from the router */
    unsigned pending;    /* deferred requests not answered yet */
};

void eng_http_stats(const struct eng_http *s, struct eng_http_stats *out);

#endif /* FLOORMTA_ENGINE_HTTP_H */
