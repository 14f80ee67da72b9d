/*
 * engine/api.h — floormta's HTTP API and /metrics, on engine/http.h.
 *
 * Endpoints (JSON in and out; see the README, "HTTP API and metrics"):
 *   GET  /metrics                 Prometheus text (no token)
 *   GET  /healthz                 200 {"status":"ok"} or 503 (no token)
 *   POST /api/v1/messages         inject a message; 202 {"ids":[...]} once durable
 *   GET  /api/v1/queue            summary per domain
 *   GET  /api/v1/queue/messages   messages with their recipients' states (?domain= &limit=)
 *   GET  /api/v1/destinations     the capability cache
 *   POST /api/v1/queue/flush      {"id":"..."} or {"domain":"..."}
 *   POST /api/v1/queue/bounce     same
 *   POST /api/v1/queue/delete     same
 * Everything under /api/ needs "Authorization: Bearer <token>" (401 otherwise).
 * Errors are 4xx/5xx with {"error":"what is wrong","field":"which input"} (field
 * only when one input is to blame).
 *
 * The API knows nothing of workers: the daemon implements struct eng_api_ops over its
 * worker group. Everything runs on the loop thread of eng_api_config.loop.
 */
#ifndef FLOORMTA_ENGINE_API_H
#define FLOORMTA_ENGINE_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine/loop.h"
#include "engine/metrics.h"
#include "queue/queue.h"

struct eng_api;

#define ENG_API_LIST_DEFAULT 100  /* GET /api/v1/queue/messages without ?limit= */
#define ENG_API_LIST_MAX     1000 /* ... the most it lists */

#define ENG_API_ACTIONS(X)             \
    X(ENG_API_ACTION_FLUSH, "flush")   \
    X(ENG_API_ACTION_BOUNCE, "bounce") \
    X(ENG_API_ACTION_DELETE, "delete")

enum eng_api_action {
#define ENG_API_ACTION_ENUM(name, str) name,
    ENG_API_ACTIONS(ENG_API_ACTION_ENUM)
#undef ENG_API_ACTION_ENUM
};

/* Static string; "invalid" out of range. */
const char *eng_api_action_name(enum eng_api_action a);

/* An enqueue's outcome: res 0 and the new id once the message is durable, or res < 0
 * (nothing queued). Must run on the API's loop thread, never from inside enqueue. */
typedef void (*eng_api_done_fn)(void *done_arg, queue_id_t id, int res);

/* What the daemon provides. arg is eng_api_config.ops_arg. Any pointer may be NULL
 * except enqueue; a missing one answers 501. JSON results are new references the API
 * takes (it decrefs them). Calls come from the loop thread. */
struct eng_api_ops {
    /* Queues one message (one domain: env->domain; recipients PENDING). env is borrowed
     * for the call (copy it); content is borrowed until done runs. Returns 0 (done will
     * run later), or < 0 (done will not run): -EAGAIN (back-pressure: 503),
     * QUEUE_ERR_FULL (507), QUEUE_ERR_TOO_BIG (413), other (500). */
    int (*enqueue)(void *arg, const struct queue_envelope *env, const void *content, size_t len,
                   eng_api_done_fn done, void *done_arg);
    /* Fills a snapshot (out is zeroed by the caller). received[HTTP] is the API's own:
     * leave it 0. */
    void (*metrics)(void *arg, struct eng_metrics *out);
    /* {"domains":[{"domain":..,"messages":..,"ready":..,"deferred":..,...},...],
     * "total":{...}}: 0 or < 0 (500). */
    int (*queue_summary)(void *arg, json_t **out);
    /* {"total":n,"messages":[...]}: up to limit (1..ENG_API_LIST_MAX) messages of domain
     * (borrowed; lowercase; NULL = every domain), oldest first. 0 or < 0 (500). */
    int (*queue_list)(void *arg, const char *domain, unsigned limit, json_t **out);
    /* {"destinations":[{host, port, verdict, ...}]}: 0 or < 0. */
    int (*destinations)(void *arg, json_t **out);
    /* Acts on one message (id != 0) or on every message of a domain (domain != NULL).
     * domain is borrowed for the call. Returns 0 and *out (e.g. {"affected":n}),
     * QUEUE_ERR_NOT_FOUND (404), -EINVAL (400), -EBUSY (409: in flight, try again),
     * -ESHUTDOWN (503), other (500). */
    int (*queue_action)(void *arg, enum eng_api_action action, queue_id_t id, const char *domain,
                        json_t **out);
    /* 0: healthy, < 0: not (503). *out may get details (or stay NULL). */
    int (*health)(void *arg, json_t **out);
};

struct eng_api_config {
    struct eng_loop *loop;         /* borrowed; outlives the API */
    const char *listen;            /* "127.0.0.1:9025"; copied */
    const char *const *tokens;     /* bearer tokens accepted under /api/; copied */
    unsigned ntokens;              /* 0 = /api/ always answers 401 */
    const struct eng_api_ops *ops; /* borrowed; outlives the API */
    void *ops_arg;
    const char *hostname; /* the right side of generated Message-IDs; copied; NULL =
                           * "localhost" */
    size_t max_message;   /* content bytes of one message; 0 = 10 MiB */
    unsigned max_rcpts;   /* recipients of one POST; 0 = QUEUE_RCPTS_MAX */
    unsigned max_conns;   /* as eng_http_config; 0 = its default */
    unsigned timeout_s;   /* as eng_http_config; 0 = its default */
};

/* Starts the API's HTTP server. cfg is borrowed for the call. Returns 0 and *out (free
 * with eng_api_free), -EINVAL (no loop, no ops or no enqueue), -ENOMEM, or what
 * eng_http_new returns. */
int eng_api_new(const struct eng_api_config *cfg, struct eng_api **out);

/* Replaces the bearer tokens accepted under /api/ (a configuration reload): tokens
 * (ntokens of them, borrowed, copied; empty ones skipped; 0 = /api/ answers 401) hold
 * from the next request on. All or nothing: returns 0, or -ENOMEM / -EINVAL with the
 * old list still in force. Loop thread. */
int eng_api_set_tokens(struct eng_api *api, const char *const *tokens, unsigned ntokens);

/* The port the server listens on. */
uint16_t eng_api_port(const struct eng_api *api);

/* Stops the server (requests still waiting for an enqueue get 503) and frees it.
 * Enqueues still running keep their done callbacks valid: they run later, find their
 * request gone and only free their state. Loop thread, never from a callback. NULL is a
 * no-op. */
void eng_api_free(struct eng_api *api);

/* ---- MIME assembly (engine/api_mime.c) -------------------------------------------- */

struct eng_api_mime {
    const char *from;      /* From: header; required */
    const char *const *to; /* To: header addresses; may be empty */
    unsigned nto;
    const char *subject;           /* NULL = none; UTF-8 allowed (RFC 2047 encoded) */
    const char *text, *html;       /* UTF-8; at least one; both = multipart/alternative */
    const char *const *hdr_names;  /* extra headers; a From/To/Subject/Date/Message-ID */
    const char *const *hdr_values; /* here replaces the generated one; Content-* and */
    unsigned nhdrs;                /* MIME-Version are refused */
    const char *hostname;          /* Message-ID right side; NULL = "localhost" */
    int64_t now;                   /* Date: unix seconds; 0 = the current time */
};

/* Builds an RFC 5322 / MIME message with CRLF line ends, Date, Message-ID and
 * MIME-Version, bodies in 7bit or quoted-printable (UTF-8), headers with RFC 2047
 * encoded words where needed. All inputs are borrowed. Returns 0 and *out (free()
 * it), *len; or -EINVAL with *why (a static string naming the problem, and *field the
 * input it concerns: "subject", "headers", ...), -ENOMEM. */
int eng_api_mime_build(const struct eng_api_mime *m, char **out, size_t *len, const char **why,
                       const char **field);

/* Checks an RFC 5321 Mailbox (Local-part "@" Domain; no address literals, no source
 * routes), its lengths (local part 64, domain QUEUE_DOMAIN_MAX, whole QUEUE_ADDR_MAX).
 * Returns 0, or -EINVAL with *why (a static string). addr is borrowed. */
int eng_api_addr_check(const char *addr, const char **why);

#endif /* FLOORMTA_ENGINE_API_H */
