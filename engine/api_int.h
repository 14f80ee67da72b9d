/*
 * engine/api_int.h — what api.c and api_messages.c share (private to engine/api*).
 */
#ifndef FLOORMTA_ENGINE_API_INT_H
#define FLOORMTA_ENGINE_API_INT_H

#include "engine/api.h"
#include "engine/http.h"

struct api_pending; /* a POST /api/v1/messages waiting for its enqueues */

struct eng_api {
    struct eng_loop *loop;
    struct eng_http *http;
    const struct eng_api_ops *ops;
    void *ops_arg;
    char **tokens;
    unsigned ntokens;
    char *hostname;
    size_t max_message;
    unsigned max_rcpts;
    uint64_t accepted;           /* messages made durable through the API */
    struct api_pending *pending; /* list, for eng_api_free */
};

/* Checks the request's bearer token; false: a 401 has been sent. */
bool eng_api_authorized(struct eng_api *api, struct eng_http_req *req);

/* Replies with {"error": msg, "field": field} (field NULL = left out). */
void eng_api_reply_error(struct eng_http_req *req, unsigned status, const char *msg,
                         const char *field);

/* Replies with a JSON document (borrowed; the caller keeps its reference). */
void eng_api_reply_json(struct eng_http_req *req, unsigned status, const json_t *doc);

/* The handler of POST /api/v1/messages (api_messages.c); arg is the eng_api. */
void eng_api_messages_post(void *arg, struct eng_http_req *req);

/* eng_api_free's part for the pending posts: detaches them from their requests. */
void eng_api_messages_detach(struct eng_api *api);

#endif /* FLOORMTA_ENGINE_API_INT_H */
