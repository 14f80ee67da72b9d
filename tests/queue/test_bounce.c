/*
 * tests/queue/test_bounce.c — a bounce goes through the same queue: a message whose
 * recipients fail permanently (one by a 550, one by the TLS floor at expiry) gets its
 * state persisted, its DSN enqueued with queue_port_enqueue_dsn, and after a restart
 * the spool holds the DSN as a message of its own (null sender, to the original sender,
 * a multipart/report naming both failures), while the finished original is gone. A DSN
 * is never bounced in turn.
 */
#define _GNU_SOURCE /* nftw, in spool_helpers.h */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "queue/queue.h"
#include "tests/queue/spool_helpers.h"

static char dir[128];

struct found {
    unsigned n;
    queue_id_t ids[8];
    bool dsn[8];
};

static int on_recovered(void *arg, const struct queue_envelope *env)
{
    struct found *f = arg;
    if (f->n < 8) {
        f->ids[f->n] = env->id;
        f->dsn[f->n] = env->is_dsn;
    }
    f->n++;
    return 0;
}

static struct queue_envelope *original(void)
{
    struct queue_envelope *env = queue_envelope_alloc(2);
    assert_non_null(env);
    strcpy(env->sender, "bounces@esp.example");
    strcpy(env->domain, "example.com");
    strcpy(env->envid, "campaign-42");
    env->arrival = time(NULL) - 5 * 86400;
    strcpy(env->rcpts[0].addr, "gone@example.com");
    strcpy(env->rcpts[1].addr, "weak@example.com");
    return env;
}

static void test_bounce_through_the_queue(void **state)
{
    (void)state;
    static const char content[] = "From: a@esp.example\r\nTo: gone@example.com\r\n"
                                  "Subject: statement\r\n\r\nbody\r\n";
    struct queue_spool_config cfg = { .dir = dir, .min_free_bytes = 1 };
    struct queue_spool *sp;
    struct queue_port *port;
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    assert_int_equal(queue_port_new(sp, &port), 0);

    struct queue_envelope *env = original();
    queue_id_t id = 0;
    assert_int_equal(enqueue_sync(port, env, content, sizeof(content) - 1, &id), 0);
    env->id = id;

    /* The attempt's results: persisted before anything is acted on. */
    int64_t now = time(NULL);
    env->rcpts[0].state = QUEUE_RCPT_BOUNCED;
    env->rcpts[0].last =
            (struct queue_result){ .kind = QUEUE_RESULT_SMTP,
                                   .code = 550,
                                   .enhanced = "5.1.1",
                                   .remote = "mx1.example.com[192.0.2.1]",
                                   .when = now,
                                   .text = "550 5.1.1 <gone@example.com>: no such user" };
    env->rcpts[1].state = QUEUE_RCPT_BOUNCED;
    env->rcpts[1].last = (struct queue_result){
        .kind = QUEUE_RESULT_TLS,
        .code = 554,
        .remote = "mx1.example.com[192.0.2.1]",
        .when = now,
        .text = "version_below_floor: receiver's TLS version is below the floor (TLSv1)",
    };
    assert_int_equal(update_sync(port, env), 0);

    struct queue_dsn_input in = {
        .reporting_mta = "mta.esp.example",
        .env = env,
        .action = QUEUE_DSN_FAILED,
        .content = content,
        .content_len = sizeof(content) - 1,
        .now = now,
    };
    struct sync_done d = { 0 };
    assert_int_equal(queue_port_enqueue_dsn(port, &in, sync_done_cb, &d), 0);
    assert_int_equal(port_wait(port, &d, 1), 0);
    assert_int_equal(d.res, 0);
    queue_id_t dsn_id = d.id;
    assert_true(dsn_id != 0 && dsn_id != id);

    /* The original is finished: removed once its DSN is durable. */
    assert_int_equal(remove_sync(port, id), 0);
    queue_port_free(port);
    queue_spool_close(sp);

    /* After a restart: only the DSN, as a queued message of its own. */
    assert_int_equal(queue_spool_open(&cfg, &sp), 0);
    struct found f = { 0 };
    struct queue_recover_stats rs;
    assert_int_equal(queue_spool_recover(sp, on_recovered, &f, &rs), 0);
    assert_int_equal(f.n, 1);
    assert_true(f.ids[0] == dsn_id);
    assert_true(f.dsn[0]);
    assert_int_equal(rs.quarantined, 0);

    struct queue_envelope *denv = NULL;
    void *body = NULL;
    size_t len = 0;
    assert_int_equal(queue_spool_read(sp, dsn_id, &denv, &body, &len), 0);
    assert_string_equal(denv->sender, "");
    assert_int_equal(denv->nrcpts, 1);
    assert_string_equal(denv->rcpts[0].addr, "bounces@esp.example");
    assert_string_equal(denv->domain, "esp.example");
    assert_int_equal(denv->rcpts[0].state, QUEUE_RCPT_PENDING);
    char *text = calloc(1, len + 1);
    assert_non_null(text);
    memcpy(text, body, len);
    assert_non_null(strstr(text, "report-type=delivery-status"));
    assert_non_null(strstr(text, "Original-Envelope-Id: campaign-42"));
    assert_non_null(strstr(text, "Final-Recipient: rfc822; gone@example.com"));
    assert_non_null(strstr(text, "Diagnostic-Code: smtp; 550 5.1.1"));
    assert_non_null(strstr(text, "Final-Recipient: rfc822; weak@example.com"));
    assert_non_null(strstr(text, "version_below_floor"));
    assert_non_null(strstr(text, "Subject: statement"));

    /* The DSN itself fails: no DSN about a DSN. */
    denv->rcpts[0].state = QUEUE_RCPT_BOUNCED;
    denv->rcpts[0].last.kind = QUEUE_RESULT_SMTP;
    denv->rcpts[0].last.code = 550;
    struct queue_dsn_input again = {
        .reporting_mta = "mta.esp.example",
        .env = denv,
        .action = QUEUE_DSN_FAILED,
        .content = body,
        .content_len = len,
        .now = now,
    };
    assert_int_equal(queue_port_new(sp, &port), 0);
    struct sync_done d2 = { 0 };
    assert_int_equal(queue_port_enqueue_dsn(port, &again, sync_done_cb, &d2), -ENOENT);
    assert_int_equal(d2.calls, 0);

    free(text);
    free(body);
    queue_envelope_free(denv);
    queue_envelope_free(env);
    queue_port_free(port);
    queue_spool_close(sp);
}

int main(void)
{
    scratch_dir(dir, sizeof(dir), "bounce");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounce_through_the_queue),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rm_rf(dir);
    return rc;
}
