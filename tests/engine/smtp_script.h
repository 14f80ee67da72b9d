/*
 * tests/engine/smtp_script.h — drives the SMTP client state machine with scripted
 * replies and events, for the client's unit tests (header only: each test is its own
 * executable). Include after <cmocka.h>.
 */
#ifndef FLOORMTA_TESTS_ENGINE_SMTP_SCRIPT_H
#define FLOORMTA_TESTS_ENGINE_SMTP_SCRIPT_H

#include <string.h>

#include "engine/smtp_client.h"

/* One complete reply parsed from s (which must hold exactly one). */
static inline struct smtp_reply script_parse(const char *s)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    smtp_reply_reset(&p, &r);
    size_t used;
    bool done = false;
    assert_int_equal(smtp_reply_parse(&p, &r, s, strlen(s), &used, &done), 0);
    assert_true(done);
    return r;
}

/* Feeds the reply in s to the client; returns its action. */
static inline enum smtpc_action script_reply(struct smtp_client *c, const char *s)
{
    struct smtp_reply r = script_parse(s);
    struct smtpc_event ev = { .kind = SMTPC_EV_REPLY, .reply = &r };
    return smtp_client_step(c, &ev);
}

/* Feeds an event without a reply or verdict (connected, error). */
static inline enum smtpc_action script_event(struct smtp_client *c, enum smtpc_event_kind kind,
                                             int err)
{
    struct smtpc_event ev = { .kind = kind, .err = err };
    return smtp_client_step(c, &ev);
}

#endif /* FLOORMTA_TESTS_ENGINE_SMTP_SCRIPT_H */
