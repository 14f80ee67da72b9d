/*
 * tests/queue/test_sched.c — the scheduler's index: FIFO within a domain, round-robin
 * across domains, pop_domain, promotion exactly when due, removal in every state,
 * lookup by id, flush, domains freed when empty, a randomized test against a simple
 * reference model, and a million entries within the memory budget.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "queue/sched_int.h" /* queue_sched_verify, queue_sched_seed */

#define NOW 1700000000

static struct queue_sched *new_sched(void)
{
    struct queue_sched *s = NULL;
    assert_int_equal(queue_sched_new(NULL, &s), 0);
    assert_non_null(s);
    return s;
}

static struct queue_entry *add(struct queue_sched *s, queue_id_t id, const char *domain,
                               int64_t next_attempt)
{
    struct queue_entry_info info = {
        .id = id,
        .domain = domain,
        .arrival = NOW,
        .next_attempt = next_attempt,
        .nrcpts = 1,
        .content_size = 100 + id,
    };
    struct queue_entry *e = NULL;
    int rc = queue_sched_add(s, &info, NOW, &e);
    if (rc != 0)
        fail_msg("add %llu: %d", (unsigned long long)id, rc);
    return e;
}

static struct queue_sched_stats stats(const struct queue_sched *s)
{
    struct queue_sched_stats st;
    queue_sched_stats(s, &st);
    return st;
}

static queue_id_t pop_id(struct queue_sched *s)
{
    struct queue_entry *e = queue_sched_pop(s);
    return e ? queue_entry_id(e) : 0;
}

static void test_fifo(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    for (queue_id_t id = 1; id <= 5; id++)
        add(s, id, "a.example", 0);
    for (queue_id_t id = 1; id <= 5; id++) {
        struct queue_entry *e = queue_sched_pop(s);
        assert_non_null(e);
        assert_int_equal(queue_entry_id(e), id);
        assert_string_equal(queue_entry_domain(e), "a.example");
        queue_sched_remove(s, e);
    }
    assert_null(queue_sched_pop(s));
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
}

static void test_round_robin(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    for (queue_id_t id = 1; id <= 1000; id++)
        add(s, id, "busy.example", 0);
    add(s, 5000, "quiet.example", 0);
    queue_id_t a = pop_id(s), b = pop_id(s);
    assert_true(a == 5000 || b == 5000);
    /* Once served, quiet.example left the ring: busy.example gets every pop. */
    for (unsigned i = 0; i < 10; i++)
        assert_int_not_equal(pop_id(s), 5000);
    /* A domain becoming ready waits at most one round. */
    add(s, 5001, "quiet.example", 0);
    a = pop_id(s), b = pop_id(s);
    assert_true(a == 5001 || b == 5001);
    queue_sched_free(s);

    /* Three domains alternate, one entry each per round. */
    s = new_sched();
    add(s, 1, "a.example", 0);
    add(s, 2, "a.example", 0);
    add(s, 3, "a.example", 0);
    add(s, 4, "b.example", 0);
    add(s, 5, "b.example", 0);
    add(s, 6, "c.example", 0);
    static const queue_id_t want[] = { 1, 4, 6, 2, 5, 3, 0 };
    for (unsigned i = 0; i < 7; i++)
        assert_int_equal(pop_id(s), want[i]);
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
}

static void test_pop_domain(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    add(s, 1, "a.example", 0);
    add(s, 2, "B.Example", 0); /* interned lowercase */
    add(s, 3, "a.example", 0);
    add(s, 4, "b.example", 0);
    struct queue_entry *e = queue_sched_pop_domain(s, "b.EXAMPLE");
    assert_non_null(e);
    assert_int_equal(queue_entry_id(e), 2);
    assert_string_equal(queue_entry_domain(e), "b.example");
    assert_int_equal(queue_entry_id(queue_sched_pop_domain(s, "b.example")), 4);
    assert_null(queue_sched_pop_domain(s, "b.example"));
    assert_null(queue_sched_pop_domain(s, "nowhere.example"));
    assert_null(queue_sched_pop_domain(s, NULL));
    assert_null(queue_sched_pop_domain(s, ""));
    assert_int_equal(stats(s).domains, 2);
    /* Requeue puts it back first in line. */
    struct queue_entry *one = queue_sched_pop_domain(s, "a.example");
    assert_int_equal(queue_entry_id(one), 1);
    queue_sched_requeue(s, one);
    assert_ptr_equal(queue_sched_pop_domain(s, "a.example"), one);
    queue_sched_requeue(s, one);
    assert_ptr_equal(queue_sched_pop(s), one);
    assert_int_equal(queue_entry_id(queue_sched_pop(s)), 3);
    assert_null(queue_sched_pop(s));
    assert_int_equal(stats(s).inflight, 4);
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
}

static void test_promote(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    assert_int_equal(queue_sched_next_due(s, NOW), -1);
    add(s, 1, "a.example", NOW + 100);
    add(s, 3, "a.example", NOW + 200);
    add(s, 2, "b.example", NOW + 200);
    add(s, 4, "a.example", NOW); /* due now: ready at once */
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.ready, 1);
    assert_int_equal(st.deferred, 3);
    assert_int_equal(queue_sched_next_due(s, NOW), 100);
    assert_int_equal(queue_sched_next_due(s, NOW + 99), 1);
    assert_int_equal(queue_sched_promote(s, NOW + 99), 0);
    assert_int_equal(pop_id(s), 4);
    assert_null(queue_sched_pop(s));
    assert_int_equal(queue_sched_promote(s, NOW + 100), 1);
    assert_int_equal(queue_sched_next_due(s, NOW + 100), 100);
    assert_int_equal(queue_sched_next_due(s, NOW + 250), 0); /* overdue */
    assert_int_equal(queue_sched_promote(s, NOW + 199), 0);
    assert_int_equal(queue_sched_promote(s, NOW + 200), 2);
    assert_int_equal(queue_sched_next_due(s, NOW + 200), -1);
    /* Promoted in (time, id) order onto their domains' queues. */
    assert_int_equal(queue_entry_id(queue_sched_pop_domain(s, "a.example")), 1);
    assert_int_equal(queue_entry_id(queue_sched_pop_domain(s, "a.example")), 3);
    assert_int_equal(pop_id(s), 2);
    assert_null(queue_sched_pop(s));
    assert_int_equal(queue_entry_next_attempt(queue_sched_find(s, 3)), NOW + 200);
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
}

static void test_remove_states(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    struct queue_entry *r = add(s, 1, "a.example", 0);
    struct queue_entry *d = add(s, 2, "a.example", NOW + 60);
    struct queue_entry *f = add(s, 3, "a.example", 0);
    add(s, 4, "b.example", NOW + 30);
    add(s, 5, "b.example", NOW + 90);
    assert_ptr_equal(queue_sched_pop(s), r); /* r in flight, f ready */
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.entries, 5);
    assert_int_equal(st.inflight, 1);
    assert_int_equal(st.ready, 1);
    assert_int_equal(st.deferred, 3);
    assert_int_equal(st.bytes, 5 * 100 + 15);

    queue_sched_remove(s, f); /* ready */
    assert_null(queue_sched_find(s, 3));
    assert_null(queue_sched_pop(s));
    queue_sched_remove(s, d); /* deferred */
    assert_null(queue_sched_find(s, 2));
    assert_int_equal(queue_sched_next_due(s, NOW), 30);
    queue_sched_remove(s, r); /* in flight */
    assert_null(queue_sched_find(s, 1));
    st = stats(s);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.ready + st.inflight, 0);
    assert_int_equal(st.deferred, 2);
    assert_int_equal(st.domains, 1); /* a.example is gone */
    assert_int_equal(st.bytes, 209);
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_remove(s, NULL); /* a no-op */
    queue_sched_free(s);
}

static void test_find_and_errors(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    struct queue_entry *e = add(s, 0x123456789abcdefULL, "a.example", 0);
    assert_ptr_equal(queue_sched_find(s, 0x123456789abcdefULL), e);
    assert_null(queue_sched_find(s, 0x123456789abcdeeULL));
    assert_null(queue_sched_find(s, 0));

    struct queue_entry_info info = { .id = 0x123456789abcdefULL, .domain = "b.example" };
    struct queue_entry *out = (struct queue_entry *)1;
    assert_int_equal(queue_sched_add(s, &info, NOW, &out), -EEXIST);
    assert_ptr_equal(out, (struct queue_entry *)1);
    info.id = 0;
    assert_int_equal(queue_sched_add(s, &info, NOW, &out), -EINVAL);
    info.id = 7;
    info.domain = NULL;
    assert_int_equal(queue_sched_add(s, &info, NOW, &out), -EINVAL);
    info.domain = "";
    assert_int_equal(queue_sched_add(s, &info, NOW, &out), -EINVAL);
    char longname[QUEUE_DOMAIN_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    info.domain = longname;
    assert_int_equal(queue_sched_add(s, &info, NOW, &out), -EINVAL);
    longname[QUEUE_DOMAIN_MAX] = '\0'; /* exactly the limit is fine */
    assert_int_equal(queue_sched_add(s, &info, NOW, &out), 0);
    assert_string_equal(queue_entry_domain(out), longname);
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.domains, 2);

    /* Many ids: every one found, absent ones not. */
    for (queue_id_t id = 1000; id < 21000; id++)
        add(s, id << 24, "c.example", id % 3 ? 0 : NOW + (int64_t)id);
    for (queue_id_t id = 1000; id < 21000; id++) {
        struct queue_entry *f = queue_sched_find(s, id << 24);
        assert_non_null(f);
        assert_int_equal(queue_entry_id(f), id << 24);
        assert_null(queue_sched_find(s, (id << 24) + 1));
    }
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
}

static void test_flush(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    add(s, 5, "a.example", NOW + 500);
    add(s, 1, "a.example", NOW + 900);
    add(s, 2, "b.example", NOW + 100);
    add(s, 3, "b.example", NOW + 50);
    add(s, 4, "a.example", 0);
    assert_int_equal(queue_sched_flush(s, "nowhere.example", NOW), 0);
    assert_int_equal(queue_sched_flush(s, "A.example", NOW + 10), 2);
    assert_int_equal(queue_entry_next_attempt(queue_sched_find(s, 1)), NOW + 10);
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.ready, 3);
    assert_int_equal(st.deferred, 2);
    assert_int_equal(queue_sched_next_due(s, NOW + 10), 40);
    /* Flushed ones are queued after the ready one, in id order. */
    assert_int_equal(queue_entry_id(queue_sched_pop_domain(s, "a.example")), 4);
    assert_int_equal(queue_entry_id(queue_sched_pop_domain(s, "a.example")), 1);
    assert_int_equal(queue_entry_id(queue_sched_pop_domain(s, "a.example")), 5);
    assert_int_equal(queue_sched_flush(s, "a.example", NOW + 10), 0);
    assert_int_equal(queue_sched_flush(s, NULL, NOW + 20), 2);
    assert_int_equal(queue_sched_next_due(s, NOW + 20), -1);
    assert_int_equal(pop_id(s), 2);
    assert_int_equal(pop_id(s), 3);
    assert_int_equal(queue_sched_flush(s, NULL, NOW + 20), 0);

    /* A big flush keeps the heap consistent for the entries left. */
    for (queue_id_t id = 100; id < 3100; id++)
        add(s, id, id % 2 ? "odd.example" : "even.example", NOW + 1 + (int64_t)(id * 7919 % 1000));
    assert_int_equal(queue_sched_flush(s, "odd.example", NOW), 1500);
    assert_int_equal(queue_sched_verify(s), 0);
    queue_id_t prev = 0;
    for (unsigned i = 0; i < 1500; i++) {
        queue_id_t id = queue_entry_id(queue_sched_pop_domain(s, "odd.example"));
        assert_true(id > prev && id % 2 == 1);
        prev = id;
    }
    assert_int_equal(queue_sched_promote(s, NOW + 1000), 1500);
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
}

static void test_domains_freed(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    size_t empty = stats(s).index_bytes;
    struct queue_entry **es = calloc(20000, sizeof(*es));
    assert_non_null(es);
    for (unsigned i = 0; i < 20000; i++) {
        char name[64];
        snprintf(name, sizeof(name), "d%u.example", i % 5000);
        es[i] = add(s, i + 1, name, i % 2 ? 0 : NOW + 10);
    }
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.domains, 5000);
    assert_int_equal(st.entries, 20000);
    assert_true(st.index_bytes > empty);
    /* Remove in an order unlike insertion, in every state. */
    for (unsigned i = 0; i < 3000; i++)
        queue_sched_pop(s);
    for (unsigned i = 0; i < 20000; i++)
        queue_sched_remove(s, es[(i * 7919) % 20000]);
    st = stats(s);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.domains, 0);
    assert_int_equal(st.ready + st.deferred + st.inflight, 0);
    assert_int_equal(st.bytes, 0);
    /* The index shrank back: no more than the minimal tables and one spare slab. */
    assert_true(st.index_bytes < empty + 80 * 1024);
    assert_null(queue_sched_pop(s));
    assert_int_equal(queue_sched_next_due(s, NOW), -1);
    assert_int_equal(queue_sched_verify(s), 0);
    free(es);
    queue_sched_free(s);
}

/* ---- the hash table under collisions -------------------------------------------------------- */

struct titem {
    _Alignas(16) uint64_t key;
    uint64_t hash;
};

static uint64_t titem_hash(const void *item)
{
    return ((const struct titem *)item)->hash;
}

static bool titem_eq(const void *item, const void *key)
{
    return ((const struct titem *)item)->key == *(const uint64_t *)key;
}

/* Long clusters: items sharing a home (distances past the 4 bits kept in a slot) and
 * clusters wrapping around the end of the array. */
/* The fresh flag: set only when the owner says so, cleared by a state update and never
 * set again, whatever else happens to the entry. */
static void test_fresh(void **state)
{
    (void)state;
    struct queue_sched *s = new_sched();
    struct queue_entry *old = add(s, 1, "a.example", NOW);
    assert_false(queue_entry_fresh(old));
    struct queue_entry_info info = {
        .id = 2, .domain = "a.example", .arrival = NOW, .nrcpts = 1, .fresh = true
    };
    struct queue_entry *e = NULL;
    assert_int_equal(queue_sched_add(s, &info, NOW, &e), 0);
    assert_true(queue_entry_fresh(e));
    assert_int_equal(pop_id(s), 1);
    assert_int_equal(pop_id(s), 2);
    queue_entry_mark_updated(e);
    assert_false(queue_entry_fresh(e));
    queue_sched_defer(s, e, NOW, NULL);
    assert_int_equal(queue_sched_flush(s, NULL, NOW), 1);
    assert_int_equal(pop_id(s), 2);
    assert_false(queue_entry_fresh(e));
    queue_sched_free(s);
}

static void test_table_collisions(void **state)
{
    (void)state;
    enum { N = 40 };
    static struct titem items[N];
    struct sched_table t = { .hash_of = titem_hash };
    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = 0; i < N; i++) {
            items[i].key = i + 1;
            /* Round 0: all in slot 5, plus a few at 7. Round 1: near the end (wraps). */
            items[i].hash = round == 0 ? (i % 8 == 0 ? 7 : 5) : (uint64_t)(60 + i % 3);
            assert_int_equal(queue_sched_table_reserve(&t), 0);
            queue_sched_table_insert(&t, items[i].hash, &items[i]);
        }
        for (unsigned i = 0; i < N; i++)
            assert_ptr_equal(queue_sched_table_find(&t, items[i].hash, titem_eq, &items[i].key),
                             &items[i]);
        uint64_t absent = 999;
        assert_null(queue_sched_table_find(&t, 5, titem_eq, &absent));
        assert_null(queue_sched_table_find(&t, 61, titem_eq, &absent));
        for (unsigned k = 0; k < N; k++) {
            unsigned i = (k * 17) % N; /* 17 is coprime with 40 */
            queue_sched_table_delete(&t, items[i].hash, &items[i]);
            assert_null(queue_sched_table_find(&t, items[i].hash, titem_eq, &items[i].key));
            for (unsigned k2 = k + 1; k2 < N; k2++) {
                unsigned j = (k2 * 17) % N;
                assert_ptr_equal(queue_sched_table_find(&t, items[j].hash, titem_eq, &items[j].key),
                                 &items[j]);
            }
        }
        assert_int_equal(t.count, 0);
    }
    queue_sched_table_destroy(&t);
}

/* ---- the randomized model test ---------------------------------------------------------- */

/* The reference: plain arrays and linear scans, the same policy stated naively.
 * Ready queues are arrays of slots; the ring an array of domains with a cursor index;
 * promotion sorts the due entries by (time, id); flush takes them in id order. */
#define M_SLOTS   512
#define M_DOMAINS 12

enum { M_FREE, M_READY, M_DEFERRED, M_INFLIGHT };

struct m_entry {
    int state;
    queue_id_t id;
    int dom;
    int64_t next, arrival;
    unsigned attempts;
    bool warned;
    uint64_t size;
    struct queue_entry *e;
};

struct model {
    struct m_entry ent[M_SLOTS];
    int fifo[M_DOMAINS][M_SLOTS];
    int nfifo[M_DOMAINS];
    int ring[M_DOMAINS], nring, cur;
    queue_id_t serial;
    int64_t now;
    struct queue_retry_config cfg;
};

static char m_names[M_DOMAINS][32];

static void ring_remove_at(struct model *m, int p)
{
    memmove(&m->ring[p], &m->ring[p + 1], (size_t)(m->nring - p - 1) * sizeof(int));
    m->nring--;
    if (p < m->cur)
        m->cur--;
    if (m->cur >= m->nring)
        m->cur = 0;
}

static void ring_remove(struct model *m, int d)
{
    for (int p = 0; p < m->nring; p++) {
        if (m->ring[p] == d) {
            ring_remove_at(m, p);
            return;
        }
    }
    fail_msg("domain %d not on the ring", d);
}

static void m_ready(struct model *m, int slot, bool front)
{
    struct m_entry *x = &m->ent[slot];
    int d = x->dom;
    x->state = M_READY;
    if (m->nfifo[d] == 0) {
        /* Joins just before the cursor: the end of the current round. */
        memmove(&m->ring[m->cur + 1], &m->ring[m->cur], (size_t)(m->nring - m->cur) * sizeof(int));
        m->ring[m->cur] = d;
        m->nring++;
        if (m->nring > 1)
            m->cur++;
    }
    if (front) {
        memmove(&m->fifo[d][1], &m->fifo[d][0], (size_t)m->nfifo[d] * sizeof(int));
        m->fifo[d][0] = slot;
    } else {
        m->fifo[d][m->nfifo[d]] = slot;
    }
    m->nfifo[d]++;
}

/* Takes slot off its domain's FIFO (it is READY). */
static void m_unready(struct model *m, int slot)
{
    int d = m->ent[slot].dom;
    for (int i = 0; i < m->nfifo[d]; i++) {
        if (m->fifo[d][i] == slot) {
            memmove(&m->fifo[d][i], &m->fifo[d][i + 1],
                    (size_t)(m->nfifo[d] - i - 1) * sizeof(int));
            if (--m->nfifo[d] == 0)
                ring_remove(m, d);
            return;
        }
    }
    fail_msg("slot %d not on its FIFO", slot);
}

static int m_pop(struct model *m)
{
    if (m->nring == 0)
        return -1;
    int d = m->ring[m->cur];
    int slot = m->fifo[d][0];
    memmove(&m->fifo[d][0], &m->fifo[d][1], (size_t)(m->nfifo[d] - 1) * sizeof(int));
    if (--m->nfifo[d] == 0)
        ring_remove_at(m, m->cur);
    else
        m->cur = (m->cur + 1) % m->nring;
    m->ent[slot].state = M_INFLIGHT;
    return slot;
}

static int cmp_time_id(const void *a, const void *b, const struct model *m)
{
    const struct m_entry *x = &m->ent[*(const int *)a], *y = &m->ent[*(const int *)b];
    if (x->next != y->next)
        return x->next < y->next ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static const struct model *sort_model;

static int by_time_id(const void *a, const void *b)
{
    return cmp_time_id(a, b, sort_model);
}

static int by_id(const void *a, const void *b)
{
    queue_id_t x = sort_model->ent[*(const int *)a].id, y = sort_model->ent[*(const int *)b].id;
    return x < y ? -1 : x > y;
}

/* Deferred slots matching (domain d, or all with -1, due by `due` unless flushing). */
static int m_collect(struct model *m, int *out, int d, bool flush, int64_t due)
{
    int n = 0;
    for (int i = 0; i < M_SLOTS; i++) {
        struct m_entry *x = &m->ent[i];
        if (x->state == M_DEFERRED && (flush ? (d < 0 || x->dom == d) : x->next <= due))
            out[n++] = i;
    }
    sort_model = m;
    qsort(out, (size_t)n, sizeof(int), flush ? by_id : by_time_id);
    return n;
}

static int random_slot(struct model *m, int state)
{
    int start = rand() % M_SLOTS;
    for (int k = 0; k < M_SLOTS; k++) {
        int i = (start + k) % M_SLOTS;
        if (m->ent[i].state == state || (state < 0 && m->ent[i].state != M_FREE))
            return i;
    }
    return -1;
}

static void m_check(struct model *m, struct queue_sched *s)
{
    uint64_t cnt[4] = { 0 }, bytes = 0;
    int64_t due = -1;
    bool live[M_DOMAINS] = { false };
    for (int i = 0; i < M_SLOTS; i++) {
        struct m_entry *x = &m->ent[i];
        cnt[x->state]++;
        if (x->state == M_FREE)
            continue;
        bytes += x->size;
        live[x->dom] = true;
        if (x->state == M_DEFERRED) {
            int64_t d = x->next <= m->now ? 0 : x->next - m->now;
            if (due < 0 || d < due)
                due = d;
        }
    }
    uint64_t ndom = 0;
    for (int d = 0; d < M_DOMAINS; d++)
        ndom += live[d];
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.ready, cnt[M_READY]);
    assert_int_equal(st.deferred, cnt[M_DEFERRED]);
    assert_int_equal(st.inflight, cnt[M_INFLIGHT]);
    assert_int_equal(st.entries, cnt[M_READY] + cnt[M_DEFERRED] + cnt[M_INFLIGHT]);
    assert_int_equal(st.bytes, bytes);
    assert_int_equal(st.domains, ndom);
    assert_int_equal(queue_sched_next_due(s, m->now), due);
}

static void m_add(struct model *m, struct queue_sched *s)
{
    int slot = random_slot(m, M_FREE);
    if (slot < 0)
        return;
    struct m_entry *x = &m->ent[slot];
    x->id = (++m->serial << 16) | (queue_id_t)(rand() & 0xffff);
    x->dom = rand() % M_DOMAINS;
    x->next = rand() % 3 ? m->now + rand() % 60 - 10 : 0;
    x->arrival = m->now - rand() % 100;
    x->attempts = (unsigned)(rand() % 3);
    x->warned = rand() % 4 == 0;
    x->size = (uint64_t)(rand() % 100000);
    struct queue_entry_info info = {
        .id = x->id,
        .domain = m_names[x->dom],
        .arrival = x->arrival,
        .next_attempt = x->next,
        .attempts = (uint16_t)x->attempts,
        .nrcpts = 1,
        .content_size = x->size,
        .delay_warned = x->warned,
    };
    assert_int_equal(queue_sched_add(s, &info, m->now, &x->e), 0);
    if (x->next <= m->now)
        m_ready(m, slot, false);
    else
        x->state = M_DEFERRED;
    /* A duplicate id is refused and changes nothing. */
    if (rand() % 8 == 0) {
        struct queue_entry *dup = NULL;
        info.domain = m_names[(x->dom + 1) % M_DOMAINS];
        assert_int_equal(queue_sched_add(s, &info, m->now, &dup), -EEXIST);
        assert_null(dup);
    }
}

static void m_expect_pop(struct model *m, struct queue_entry *got, int slot)
{
    if (slot < 0) {
        assert_null(got);
        return;
    }
    assert_ptr_equal(got, m->ent[slot].e);
}

static uint64_t m_count(const struct model *m, int state)
{
    uint64_t n = 0;
    for (int i = 0; i < M_SLOTS; i++)
        n += m->ent[i].state == state;
    return n;
}

static void m_defer(struct model *m, struct queue_sched *s)
{
    int slot = random_slot(m, M_INFLIGHT);
    if (slot < 0)
        return;
    struct m_entry *x = &m->ent[slot];
    x->attempts++;
    int64_t next = 0, deadline = x->arrival + m->cfg.max_age;
    enum queue_defer_verdict v = queue_sched_defer(s, x->e, m->now, &next);
    assert_int_equal(queue_entry_attempts(x->e), x->attempts);
    if (m->now >= deadline) {
        assert_int_equal(v, QUEUE_DEFER_EXPIRE);
        /* It stays in flight; the engine bounces it and removes it. */
        assert_int_equal(stats(s).inflight, m_count(m, M_INFLIGHT));
        queue_sched_remove(s, x->e);
        x->state = M_FREE;
        return;
    }
    bool warn = !x->warned && m->now >= x->arrival + m->cfg.delay_warning;
    assert_int_equal(v, warn ? QUEUE_DEFER_WARN : QUEUE_DEFER_RETRY);
    x->warned = x->warned || warn;
    int64_t iv = queue_retry_interval(&m->cfg, x->attempts);
    int64_t spread = iv * m->cfg.jitter_pct / 100;
    int64_t lo = m->now + (iv - spread < 1 ? 1 : iv - spread), hi = m->now + iv + spread;
    lo = lo < deadline ? lo : deadline;
    hi = hi < deadline ? hi : deadline;
    assert_in_range(next, lo, hi);
    assert_int_equal(queue_entry_next_attempt(x->e), next);
    x->next = next;
    x->state = M_DEFERRED;
}

static void m_step(struct model *m, struct queue_sched *s)
{
    int op = rand() % 100, slot, d, list[M_SLOTS], n;
    if (op < 15) {
        m_add(m, s);
    } else if (op < 33) {
        slot = m_pop(m);
        m_expect_pop(m, queue_sched_pop(s), slot);
    } else if (op < 40) {
        d = rand() % M_DOMAINS;
        slot = -1;
        if (m->nfifo[d] > 0) {
            slot = m->fifo[d][0];
            m_unready(m, slot);
            m->ent[slot].state = M_INFLIGHT;
        }
        m_expect_pop(m, queue_sched_pop_domain(s, m_names[d]), slot);
    } else if (op < 55) {
        m_defer(m, s);
    } else if (op < 59) {
        if ((slot = random_slot(m, M_INFLIGHT)) >= 0) {
            queue_sched_requeue(s, m->ent[slot].e);
            m_ready(m, slot, true);
        }
    } else if (op < 72) {
        if ((slot = random_slot(m, -1)) >= 0) {
            if (m->ent[slot].state == M_READY)
                m_unready(m, slot);
            queue_sched_remove(s, m->ent[slot].e);
            m->ent[slot].state = M_FREE;
        }
    } else if (op < 88) {
        m->now += rand() % 8;
        n = m_collect(m, list, -1, false, m->now);
        for (int i = 0; i < n; i++)
            m_ready(m, list[i], false);
        assert_int_equal(queue_sched_promote(s, m->now), n);
    } else if (op < 91) {
        d = rand() % (M_DOMAINS + 1) - 1;
        n = m_collect(m, list, d, true, 0);
        for (int i = 0; i < n; i++) {
            m->ent[list[i]].next = m->now;
            m_ready(m, list[i], false);
        }
        assert_int_equal(queue_sched_flush(s, d < 0 ? NULL : m_names[d], m->now), n);
    } else {
        if ((slot = random_slot(m, -1)) >= 0)
            assert_ptr_equal(queue_sched_find(s, m->ent[slot].id), m->ent[slot].e);
        assert_null(queue_sched_find(s, ((m->serial + 1) << 16) | 1));
    }
}

static void test_model(void **state)
{
    (void)state;
    for (int d = 0; d < M_DOMAINS; d++)
        snprintf(m_names[d], sizeof(m_names[d]), "m%d.example", d);
    struct model *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    m->cfg = (struct queue_retry_config){
        .first = 5, .max = 40, .max_age = 1500, .delay_warning = 300
    };
    struct queue_sched *s = NULL;
    assert_int_equal(queue_sched_new(&m->cfg, &s), 0);
    queue_sched_retry_defaults(&m->cfg, &m->cfg);
    srand(20240611);
    queue_sched_seed(s, 7);
    m->now = 1000000;
    for (int step = 0; step < 60000; step++) {
        m_step(m, s);
        m_check(m, s);
        if (step % 97 == 0) {
            int rc = queue_sched_verify(s);
            if (rc != 0)
                fail_msg("step %d: invariant at sched_verify.c line %d", step, -rc);
        }
    }
    assert_int_equal(queue_sched_verify(s), 0);
    queue_sched_free(s);
    free(m);
}

/* ---- a million entries -------------------------------------------------------------------- */

static void test_million(void **state)
{
    (void)state;
    enum { N = 1000000, DOMAINS = 10000 };
    struct queue_sched *s = new_sched();
    static char names[DOMAINS][24];
    for (unsigned d = 0; d < DOMAINS; d++)
        snprintf(names[d], sizeof(names[d]), "d%05u.example.net", d);
    for (unsigned i = 0; i < N; i++) {
        struct queue_entry_info info = {
            .id = ((queue_id_t)(NOW + i / 1000) << 24) | (i % 1000),
            .domain = names[i % DOMAINS],
            .arrival = NOW,
            .next_attempt = i % 4 ? 0 : NOW + 1 + i % 3600,
            .nrcpts = 1,
            .content_size = 5000,
        };
        assert_int_equal(queue_sched_add(s, &info, NOW, NULL), 0);
    }
    struct queue_sched_stats st = stats(s);
    assert_int_equal(st.entries, N);
    assert_int_equal(st.domains, DOMAINS);
    assert_int_equal(st.ready, N / 4 * 3);
    assert_int_equal(st.deferred, N / 4);
    double per = (double)st.index_bytes / (double)st.entries;
    print_message("sizeof(struct queue_entry) = %zu; index %zu bytes for %llu entries = %.1f "
                  "bytes/entry\n",
                  sizeof(struct queue_entry), st.index_bytes, (unsigned long long)st.entries, per);
    assert_true(per < 512);
    assert_true(per < 128); /* the design figure: 64 + 16 heap + ~16 id slot + domains */
    assert_int_equal(queue_sched_verify(s), 0);

    assert_int_equal(queue_sched_promote(s, NOW + 3600), N / 4);
    unsigned popped = 0;
    struct queue_entry *e;
    while ((e = queue_sched_pop(s)) != NULL) {
        queue_sched_remove(s, e);
        popped++;
    }
    assert_int_equal(popped, N);
    st = stats(s);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.domains, 0);
    assert_true(st.index_bytes < 128 * 1024);
    queue_sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo),          cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_pop_domain),    cmocka_unit_test(test_promote),
        cmocka_unit_test(test_remove_states), cmocka_unit_test(test_find_and_errors),
        cmocka_unit_test(test_flush),         cmocka_unit_test(test_domains_freed),
        cmocka_unit_test(test_fresh),         cmocka_unit_test(test_table_collisions),
        cmocka_unit_test(test_model),         cmocka_unit_test(test_million),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
