/*
 * tests/engine/test_api.c — the HTTP API (engine/api.h) over real sockets against a
 * fake eng_api_ops whose enqueues complete later from a loop timer, as the worker's
 * do: tokens (401 + WWW-Authenticate), /healthz, /metrics through promtool, message
 * injection split per domain and answered only once durable, 400s naming the problem,
 * 413, back-pressure 503, queue actions, and freeing the API with an enqueue running.
 * Exits 77 when io_uring is not available.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "engine/api.h"
#include "engine/loop.h"
#include "tests/engine/http_client.h"

#define TOKEN "s3cret-token"
#define MAXQ  8

struct fake {
    struct eng_loop *loop;
    struct eng_api *api;
    uint16_t port;
    eng_handle_t timer;
    int enqueue_rc; /* what enqueue returns */
    unsigned nq;
    struct queue_envelope *env[MAXQ];
    char *content[MAXQ];
    eng_api_done_fn done[MAXQ];
    void *done_arg[MAXQ];
    unsigned ndone;
    enum eng_api_action action;
    queue_id_t action_id;
    char action_domain[64];
};

static int f_enqueue(void *arg, const struct queue_envelope *env, const void *content, size_t len,
                     eng_api_done_fn done, void *done_arg)
{
    struct fake *f = arg;
    if (f->enqueue_rc < 0)
        return f->enqueue_rc;
    assert_true(f->nq < MAXQ);
    f->env[f->nq] = queue_envelope_dup(env);
    f->content[f->nq] = strndup(content, len);
    f->done[f->nq] = done;
    f->done_arg[f->nq] = done_arg;
    f->nq++;
    if (!eng_handle_busy(f->loop, f->timer, ENG_OP_TIMER))
        assert_int_equal(eng_op_timer(f->loop, f->timer, 150), 0);
    return 0;
}

static void f_on_timer(void *ctx, const struct eng_completion *c)
{
    struct fake *f = ctx;
    if (c->res == -ECANCELED)
        return;
    while (f->ndone < f->nq) {
        unsigned i = f->ndone++;
        f->done[i](f->done_arg[i], 0x1000 + i, 0);
    }
}

static const struct eng_handle_ops fake_timer_ops = { f_on_timer, NULL };

static void f_metrics(void *arg, struct eng_metrics *out)
{
    (void)arg;
    out->rcpts_delivered = 42;
    out->refusals[TLS_REASON_CERT_EXPIRED] = 3;
    eng_metrics_observe(&out->handshake, 12000);
}

static int f_summary(void *arg, json_t **out)
{
    (void)arg;
    *out = json_pack("{s:[{s:s,s:i}]}", "domains", "domain", "example.com", "queued", 3);
    return 0;
}

static int f_action(void *arg, enum eng_api_action action, queue_id_t id, const char *domain,
                    json_t **out)
{
    struct fake *f = arg;
    f->action = action;
    f->action_id = id;
    snprintf(f->action_domain, sizeof f->action_domain, "%s", domain ? domain : "");
    if (id == 0xdead)
        return QUEUE_ERR_NOT_FOUND;
    *out = json_pack("{s:i}", "affected", 1);
    return 0;
}

static int f_health(void *arg, json_t **out)
{
    (void)arg;
    *out = json_pack("{s:i}", "workers", 2);
    return 0;
}

static const struct eng_api_ops fake_ops = {
    .enqueue = f_enqueue,
    .metrics = f_metrics,
    .queue_summary = f_summary,
    .queue_action = f_action,
    .health = f_health,
};

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_int_equal(eng_loop_new(NULL, &f->loop), 0);
    assert_int_equal(eng_handle_open(f->loop, -1, &fake_timer_ops, f, &f->timer), 0);
    const char *tokens[] = { "other-token", TOKEN };
    struct eng_api_config cfg = {
        .loop = f->loop,
        .listen = "127.0.0.1:0",
        .tokens = tokens,
        .ntokens = 2,
        .ops = &fake_ops,
        .ops_arg = f,
        .hostname = "mta.test",
        .max_message = 4096,
        .max_rcpts = 5,
    };
    assert_int_equal(eng_api_new(&cfg, &f->api), 0);
    f->port = eng_api_port(f->api);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fake *f = *state;
    eng_api_free(f->api);
    eng_handle_close(f->loop, f->timer);
    eng_loop_free(f->loop);
    for (unsigned i = 0; i < f->nq; i++) {
        queue_envelope_free(f->env[i]);
        free(f->content[i]);
    }
    free(f);
    return 0;
}

/* POST path with a JSON body (and the token unless auth is NULL). */
static int post(struct fake *f, const char *path, const char *auth, const char *json,
                struct hc_conn *c)
{
    char *req;
    char authline[128] = "";
    if (auth)
        snprintf(authline, sizeof authline, "Authorization: Bearer %s\r\n", auth);
    assert_true(asprintf(&req,
                         "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         path, authline, strlen(json), json) > 0);
    int st = hc_request(f->loop, f->port, req, c);
    free(req);
    return st;
}

static int get(struct fake *f, const char *path, const char *auth, struct hc_conn *c)
{
    char req[512];
    char authline[128] = "";
    if (auth)
        snprintf(authline, sizeof authline, "Authorization: Bearer %s\r\n", auth);
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n", path,
             authline);
    return hc_request(f->loop, f->port, req, c);
}

/* The body of c as JSON (decref it). */
static json_t *body_json(const struct hc_conn *c)
{
    json_error_t e;
    json_t *j = json_loads(hc_body(c), 0, &e);
    if (!j)
        fail_msg("not JSON: %s", hc_body(c));
    return j;
}

static void assert_error(const struct hc_conn *c, const char *contains, const char *field)
{
    json_t *j = body_json(c);
    const char *err = json_string_value(json_object_get(j, "error"));
    assert_non_null(err);
    if (contains && !strstr(err, contains))
        fail_msg("error \"%s\" does not mention \"%s\"", err, contains);
    if (field)
        assert_string_equal(json_string_value(json_object_get(j, "field")), field);
    json_decref(j);
}

static void test_auth(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    assert_int_equal(get(f, "/api/v1/queue", NULL, &c), 401);
    assert_non_null(strstr(c.buf, "WWW-Authenticate: Bearer realm=\"floormta\"\r\n"));
    assert_error(&c, "missing", "Authorization");
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/queue", "s3cret-tokeN", &c), 401);
    assert_non_null(strstr(c.buf, "error=\"invalid_token\""));
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/queue", "s3cret-token-longer", &c), 401);
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", NULL, "{}", &c), 401);
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/queue", TOKEN, &c), 200);
    json_t *j = body_json(&c);
    assert_string_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(j, "domains"), 0), "domain")),
                        "example.com");
    json_decref(j);
    hc_close(&c);
    /* An op the daemon does not provide. */
    assert_int_equal(get(f, "/api/v1/destinations", "other-token", &c), 501);
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/nothing", TOKEN, &c), 404);
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/messages", TOKEN, &c), 405);
    hc_close(&c);
}

/* A reload's new token list: the new token works, the removed one gets 401. */
static void test_set_tokens(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    const char *next[] = { "", "fresh-token" };
    assert_int_equal(eng_api_set_tokens(f->api, next, 2), 0);
    assert_int_equal(get(f, "/api/v1/queue", TOKEN, &c), 401);
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/queue", "other-token", &c), 401);
    hc_close(&c);
    assert_int_equal(get(f, "/api/v1/queue", "fresh-token", &c), 200);
    hc_close(&c);
    assert_int_equal(eng_api_set_tokens(f->api, NULL, 1), -EINVAL);
    assert_int_equal(get(f, "/api/v1/queue", "fresh-token", &c), 200);
    hc_close(&c);
    assert_int_equal(eng_api_set_tokens(f->api, NULL, 0), 0);
    assert_int_equal(get(f, "/api/v1/queue", "fresh-token", &c), 401);
    hc_close(&c);
}

static void test_health_and_metrics(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    assert_int_equal(get(f, "/healthz", NULL, &c), 200);
    json_t *j = body_json(&c);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    hc_close(&c);

    assert_int_equal(get(f, "/metrics", NULL, &c), 200);
    assert_non_null(strstr(c.buf, "Content-Type: text/plain; version=0.0.4"));
    const char *body = hc_body(&c);
    assert_non_null(strstr(body, "floormta_recipients_delivered_total 42\n"));
    assert_non_null(strstr(body, "floormta_floor_refusals_total{reason=\"cert_expired\"} 3\n"));
    if (system("command -v promtool >/dev/null 2>&1") == 0) {
        FILE *p = popen("promtool check metrics >/dev/null 2>&1", "w");
        assert_non_null(p);
        fwrite(body, 1, strlen(body), p);
        int st = pclose(p);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    hc_close(&c);
}

static void test_post_raw_split(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    hc_open(&c, f->port);
    const char *json = "{\"from\":\"sender@example.com\",\"to\":[\"a@Example.NET\","
                       "\"b@example.org\",\"c@example.net\"],"
                       "\"raw\":\"Subject: hi\\n\\nbody\\n\"}";
    char req[1024];
    snprintf(req, sizeof req,
             "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(json), json);
    hc_send(&c, req, strlen(req));
    /* Not answered until the enqueues report durable. */
    assert_false(hc_wait(f->loop, &c, 1, 60));
    assert_int_equal(c.len, 0);
    assert_int_equal(f->nq, 2);
    assert_true(hc_wait(f->loop, &c, 1, 3000));
    assert_int_equal(hc_status(&c), 202);
    json_t *j = body_json(&c);
    json_t *ids = json_object_get(j, "ids");
    assert_int_equal(json_array_size(ids), 2);
    assert_string_equal(json_string_value(json_array_get(ids, 0)), "0000000000001000");
    assert_string_equal(json_string_value(json_array_get(ids, 1)), "0000000000001001");
    json_decref(j);
    hc_close(&c);

    assert_string_equal(f->env[0]->domain, "example.net");
    assert_string_equal(f->env[0]->sender, "sender@example.com");
    assert_int_equal(f->env[0]->nrcpts, 2);
    assert_string_equal(f->env[0]->rcpts[0].addr, "a@Example.NET");
    assert_string_equal(f->env[0]->rcpts[1].addr, "c@example.net");
    assert_string_equal(f->env[1]->domain, "example.org");
    assert_int_equal(f->env[1]->nrcpts, 1);
    assert_string_equal(f->content[0], "Subject: hi\r\n\r\nbody\r\n");
    assert_string_equal(f->content[1], f->content[0]);

    /* Counted as received over HTTP. */
    assert_int_equal(get(f, "/metrics", NULL, &c), 200);
    assert_non_null(strstr(hc_body(&c), "floormta_messages_received_total{source=\"http\"} 2\n"));
    hc_close(&c);
}

static void test_post_parts(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"s@example.com\",\"to\":\"r@example.com\","
                          "\"subject\":\"Grüße\",\"text\":\"hi\",\"html\":\"<b>hi</b>\","
                          "\"headers\":{\"X-Tag\":\"t\"}}",
                          &c),
                     202);
    hc_close(&c);
    assert_int_equal(f->nq, 1);
    assert_non_null(strstr(f->content[0], "multipart/alternative"));
    assert_non_null(strstr(f->content[0], "X-Tag: t\r\n"));
    assert_non_null(strstr(f->content[0], "To: r@example.com\r\n"));
    assert_non_null(strstr(f->content[0], "@mta.test>"));
    assert_false(f->env[0]->needs_8bit);
}

static void test_post_errors(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    assert_int_equal(post(f, "/api/v1/messages", TOKEN, "{\"from\": \"a@b.c\", ", &c), 400);
    assert_error(&c, "malformed JSON", NULL);
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN, "[1,2]", &c), 400);
    assert_error(&c, "object", NULL);
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"a@example.com\",\"to\":[\"ok@example.com\","
                          "\"bad..dot@example.com\"],\"raw\":\"x\"}",
                          &c),
                     400);
    assert_error(&c, "atom", "to[1]");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"nope\",\"to\":[\"ok@example.com\"],\"raw\":\"x\"}", &c),
                     400);
    assert_error(&c, "@", "from");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"a@example.com\",\"to\":[],\"raw\":\"x\"}", &c),
                     400);
    assert_error(&c, NULL, "to");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"a@example.com\",\"to\":[\"a@x.com\",\"b@x.com\","
                          "\"c@x.com\",\"d@x.com\",\"e@x.com\",\"f@x.com\"],\"raw\":\"x\"}",
                          &c),
                     400);
    assert_error(&c, "too many", "to");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"a@example.com\",\"to\":[\"a@x.com\"],\"raw\":\"x\","
                          "\"text\":\"y\"}",
                          &c),
                     400);
    assert_error(&c, "not both", "raw");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"a@example.com\",\"to\":[\"a@x.com\"],\"text\":\"y\","
                          "\"headers\":{\"X-A\":\"v\\r\\nBcc: e@x.com\"}}",
                          &c),
                     400);
    assert_error(&c, "line break", "headers");
    hc_close(&c);
    /* Content over max_message (4096) but a body under the HTTP limit: 413 naming raw. */
    char *json = malloc(8192);
    int n = snprintf(json, 8192, "{\"from\":\"a@example.com\",\"to\":[\"a@x.com\"],\"raw\":\"");
    memset(json + n, 'r', 5000);
    n += 5000;
    snprintf(json + n, 8192 - (size_t)n, "\"}");
    assert_int_equal(post(f, "/api/v1/messages", TOKEN, json, &c), 413);
    assert_error(&c, "larger", "raw");
    hc_close(&c);
    /* Raw content under the limit as given but over it once its bare LFs are CRLF: the
     * limit is the queued content's (found by tests/fuzz/fuzz_api_mime). */
    n = snprintf(json, 8192, "{\"from\":\"a@example.com\",\"to\":[\"a@x.com\"],\"raw\":\"");
    for (int i = 0; i < 1500; i++)
        n += snprintf(json + n, 8192 - (size_t)n, "x\\n");
    snprintf(json + n, 8192 - (size_t)n, "\"}");
    assert_int_equal(post(f, "/api/v1/messages", TOKEN, json, &c), 413);
    assert_error(&c, "larger", "raw");
    hc_close(&c);
    free(json);
    /* A body over the HTTP limit (2 x 4096 + 256 KiB): 413 before parsing. */
    assert_int_equal(hc_request(f->loop, f->port,
                                "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                "Bearer " TOKEN "\r\nContent-Length: 10000000\r\n"
                                "Connection: close\r\n\r\n",
                                &c),
                     413);
    hc_close(&c);
    assert_int_equal(f->nq, 0); /* nothing was queued by any of them */

    /* Back-pressure from the queue: 503 with Retry-After. */
    f->enqueue_rc = -EAGAIN;
    assert_int_equal(post(f, "/api/v1/messages", TOKEN,
                          "{\"from\":\"a@example.com\",\"to\":[\"a@x.com\"],\"raw\":\"x\"}", &c),
                     503);
    assert_non_null(strstr(c.buf, "Retry-After: 5"));
    hc_close(&c);
}

static void test_actions(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    assert_int_equal(post(f, "/api/v1/queue/flush", TOKEN, "{\"domain\":\"Example.COM\"}", &c),
                     200);
    assert_int_equal(f->action, ENG_API_ACTION_FLUSH);
    assert_string_equal(f->action_domain, "example.com");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/queue/bounce", TOKEN, "{\"id\":\"00000000000000ab\"}", &c),
                     200);
    assert_int_equal(f->action, ENG_API_ACTION_BOUNCE);
    assert_int_equal(f->action_id, 0xab);
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/queue/delete?id=000000000000dead", TOKEN, "", &c), 404);
    assert_int_equal(f->action, ENG_API_ACTION_DELETE);
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/queue/delete", TOKEN, "{\"id\":\"xyz\"}", &c), 400);
    assert_error(&c, "hex", "id");
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/queue/delete", TOKEN,
                          "{\"id\":\"00000000000000ab\",\"domain\":\"x.com\"}", &c),
                     400);
    hc_close(&c);
    assert_int_equal(post(f, "/api/v1/queue/flush", TOKEN, "{\"domain\":\"bad_domain\"}", &c), 400);
    assert_error(&c, NULL, "domain");
    hc_close(&c);
}

/* The API goes away while an enqueue runs: the client gets 503, the late done is
 * harmless. */
static void test_free_pending(void **state)
{
    struct fake *f = *state;
    struct hc_conn c;
    hc_open(&c, f->port);
    const char *json = "{\"from\":\"s@example.com\",\"to\":[\"a@example.net\"],\"raw\":\"x\"}";
    char req[512];
    snprintf(req, sizeof req,
             "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(json), json);
    hc_send(&c, req, strlen(req));
    assert_false(hc_wait(f->loop, &c, 1, 50));
    assert_int_equal(f->nq, 1);
    eng_api_free(f->api);
    f->api = NULL;
    hc_poll(&c);
    if (c.len > 0)
        assert_int_equal(hc_status(&c), 503);
    hc_close(&c);
    /* The timer fires and calls done on the detached state. */
    uint64_t end = hc_now_ms() + 1000;
    while (f->ndone < f->nq && hc_now_ms() < end)
        eng_loop_run_once(f->loop, 50);
    assert_int_equal(f->ndone, 1);
}

int main(void)
{
    struct eng_loop *probe;
    if (eng_loop_new(NULL, &probe) < 0) {
        fprintf(stderr, "io_uring not available: skipping\n");
        return 77;
    }
    eng_loop_free(probe);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_and_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_raw_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
