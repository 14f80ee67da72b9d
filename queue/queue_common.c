/*
 * queue/queue_common.c — what every part of queue/ shares: error strings, the names of
 * recipient states and result kinds (from queue.h's X-macros), message ids, and the
 * envelope's allocation.
 */
#define _GNU_SOURCE /* strerrordesc_np */
#include "queue/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *queue_strerror(int err)
{
    switch (err) {
#define QUEUE_ERR_CASE(name, code, text) \
    case name: return text;
        QUEUE_ERRORS(QUEUE_ERR_CASE)
#undef QUEUE_ERR_CASE
    default: break;
    }
    const char *s = err < 0 ? strerrordesc_np(-err) : NULL;
    return s ? s : "unknown error";
}

const char *queue_rcpt_state_name(enum queue_rcpt_state s)
{
    static const char *const names[] = {
#define QUEUE_RCPT_NAME(name, str) [name] = str,
        QUEUE_RCPT_STATES(QUEUE_RCPT_NAME)
#undef QUEUE_RCPT_NAME
    };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

const char *queue_result_kind_name(enum queue_result_kind k)
{
    static const char *const names[] = {
#define QUEUE_RESULT_NAME(name, str) [name] = str,
        QUEUE_RESULT_KINDS(QUEUE_RESULT_NAME)
#undef QUEUE_RESULT_NAME
    };
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "unknown";
}

char *queue_id_format(queue_id_t id, char out[QUEUE_ID_HEX])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = QUEUE_ID_HEX - 2; i >= 0; i--) {
        out[i] = hex[id & 0xf];
        id >>= 4;
    }
    out[QUEUE_ID_HEX - 1] = '\0';
    return out;
}

int queue_id_parse(const char *text, queue_id_t *out)
{
    queue_id_t id = 0;
    for (int i = 0; i < QUEUE_ID_HEX - 1; i++) {
        char c = text[i];
        unsigned v;
        if (c >= '0' && c <= '9')
            v = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v = (unsigned)(c - 'A' + 10);
        else
            return -EINVAL;
        id = id << 4 | v;
    }
    if (text[QUEUE_ID_HEX - 1] != '\0' || id == 0)
        return -EINVAL;
    *out = id;
    return 0;
}

/* One allocation: the envelope, then its recipients, so that a free cannot miss half
 * of it and a copy is one memcpy plus a pointer fix. */
struct queue_envelope *queue_envelope_alloc(unsigned nrcpts)
{
    if (nrcpts == 0 || nrcpts > QUEUE_RCPTS_MAX)
        return NULL;
    struct queue_envelope *env =
            calloc(1, sizeof(*env) + (size_t)nrcpts * sizeof(struct queue_rcpt));
    if (env == NULL)
        return NULL;
    env->nrcpts = (uint16_t)nrcpts;
    env->rcpts = (struct queue_rcpt *)(env + 1);
    return env;
}

void queue_envelope_free(struct queue_envelope *env)
{
    free(env);
}

struct queue_envelope *queue_envelope_dup(const struct queue_envelope *env)
{
    struct queue_envelope *copy = queue_envelope_alloc(env->nrcpts);
    if (copy == NULL)
        return NULL;
    struct queue_rcpt *rcpts = copy->rcpts;
    *copy = *env;
    copy->rcpts = rcpts;
    memcpy(rcpts, env->rcpts, (size_t)env->nrcpts * sizeof(*rcpts));
    return copy;
}

bool queue_envelope_finished(const struct queue_envelope *env)
{
    for (unsigned i = 0; i < env->nrcpts; i++) {
        enum queue_rcpt_state s = env->rcpts[i].state;
        if (s != QUEUE_RCPT_DELIVERED && s != QUEUE_RCPT_BOUNCED)
            return false;
    }
    return true;
}
