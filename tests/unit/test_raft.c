/* test_raft.c: the Raft core (cluster/raft.c) and its wire codec, driven by hand.
 *
 * A tiny harness holds up to 5 cores, a message queue (deep copies, since updates are
 * only valid until the next step) and, per member, whether its host makes appended
 * entries durable at once. Time only moves when a test says so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft.h"

#define T_MAX 5
#define T_QUEUE 512
#define HB 10
#define ET 100

struct t_msg {
    struct raft_message m;
    struct raft_entry entries[64];
    uint8_t data[64][16];
};

struct t_cluster {
    uint32_t n;
    struct raft *r[T_MAX];
    bool auto_persist[T_MAX];
    bool cut[T_MAX];      /* member isolated: its messages, both ways, are dropped */
    uint64_t last[T_MAX]; /* host log: last index and term */
    uint64_t last_term[T_MAX];
    struct raft_update u[T_MAX]; /* the last update of each member */
    uint64_t now;
    struct t_msg *q;
    uint32_t qn;
    uint64_t rnd;
    bool appends_on_flush; /* config of every member (set before t_init_with) */
    bool quorum_first;     /* config.appends_quorum_first of every member */
};

static uint32_t t_random(void *arg)
{
    uint64_t *s = arg;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

static void t_config(struct t_cluster *c, uint32_t i, struct raft_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->self_id = i + 1;
    for (uint32_t k = 0; k < c->n; k++)
        cfg->members[k] = k + 1;
    cfg->member_count = c->n;
    cfg->heartbeat_ms = HB;
    cfg->election_timeout_ms = ET;
    cfg->pre_vote = true;
    cfg->appends_on_flush = c->appends_on_flush;
    cfg->appends_quorum_first = c->quorum_first;
    cfg->random = t_random;
    cfg->random_arg = &c->rnd;
}

static void t_init_flushing(struct t_cluster *c, uint32_t n, bool appends_on_flush,
                            bool quorum_first)
{
    memset(c, 0, sizeof *c);
    c->appends_on_flush = appends_on_flush;
    c->quorum_first = quorum_first;
    c->n = n;
    c->rnd = 42;
    c->q = calloc(T_QUEUE, sizeof *c->q);
    assert_non_null(c->q);
    for (uint32_t i = 0; i < n; i++) {
        struct raft_config cfg;
        t_config(c, i, &cfg);
        struct raft_start st = {0};
        c->r[i] = raft_create(&cfg, &st);
        assert_non_null(c->r[i]);
        c->auto_persist[i] = true;
    }
}

static void t_init_with(struct t_cluster *c, uint32_t n, bool appends_on_flush)
{
    t_init_flushing(c, n, appends_on_flush, false);
}

static void t_init(struct t_cluster *c, uint32_t n)
{
    t_init_with(c, n, false);
}

static void t_free(struct t_cluster *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        raft_destroy(c->r[i]);
    free(c->q);
}

static int t_step(struct t_cluster *c, uint32_t i, struct raft_event *ev);

/* What the host does with an update: keep its log position, queue messages, and
 * (if auto_persist) make the entries durable at once. */
static void t_host(struct t_cluster *c, uint32_t i)
{
    struct raft_update *u = &c->u[i];
    if (u->truncate_after != UINT64_MAX) {
        c->last[i] = u->truncate_after;
        c->last_term[i] = 0;
    }
    if (u->entry_count) {
        c->last[i] = u->first_index + u->entry_count - 1;
        c->last_term[i] = u->entries[u->entry_count - 1].term;
    }
    for (uint32_t k = 0; k < u->message_count; k++) {
        const struct raft_message *m = &u->messages[k];
        if (c->cut[i] || c->cut[m->to - 1])
            continue;
        assert_true(c->qn < T_QUEUE);
        struct t_msg *t = &c->q[c->qn++];
        t->m = *m;
        assert_true(m->entry_count <= 64);
        for (uint32_t e = 0; e < m->entry_count; e++) {
            t->entries[e] = m->entries[e];
            assert_true(m->entries[e].length <= 16);
            if (m->entries[e].length)
                memcpy(t->data[e], m->entries[e].data, m->entries[e].length);
            t->entries[e].data = t->data[e];
        }
        t->m.entries = t->entries;
    }
    if (c->auto_persist[i] && (u->entry_count || u->truncate_after != UINT64_MAX)) {
        struct raft_event ev = {.type = RAFT_EVENT_PERSISTED,
                                .now_ms = c->now,
                                .persisted_index = raft_last_index(c->r[i]),
                                .persisted_term = raft_last_term(c->r[i])};
        t_step(c, i, &ev);
    }
}

static int t_step(struct t_cluster *c, uint32_t i, struct raft_event *ev)
{
    ev->now_ms = c->now;
    int rc = raft_step(c->r[i], ev, &c->u[i], NULL);
    t_host(c, i);
    return rc;
}

static void t_persist(struct t_cluster *c, uint32_t i)
{
    struct raft_event ev = {.type = RAFT_EVENT_PERSISTED,
                            .persisted_index = raft_last_index(c->r[i]),
                            .persisted_term = raft_last_term(c->r[i])};
    t_step(c, i, &ev);
}

static void t_tick(struct t_cluster *c, uint32_t i)
{
    struct raft_event ev = {.type = RAFT_EVENT_TICK};
    t_step(c, i, &ev);
}

/* Delivers the oldest queued message; what it causes is queued behind the rest. */
static void t_deliver_one(struct t_cluster *c)
{
    assert_true(c->qn > 0);
    struct t_msg t = c->q[0];
    memmove(c->q, c->q + 1, (c->qn - 1) * sizeof *c->q);
    c->qn--;
    t.m.entries = t.entries; /* the copy moved */
    uint32_t to = (uint32_t)t.m.to - 1;
    if (c->cut[to] || c->cut[t.m.from - 1])
        return;
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &t.m};
    t_step(c, to, &ev);
}

/* Delivers queued messages (and what they cause) until the queue is empty. */
static void t_deliver_all(struct t_cluster *c)
{
    for (uint32_t guard = 0; c->qn && guard < 10000; guard++)
        t_deliver_one(c);
}

static void t_elect(struct t_cluster *c, uint32_t i)
{
    c->now += 2 * ET;
    t_tick(c, i);
    t_deliver_all(c);
    assert_int_equal(raft_role(c->r[i]), CLUSTER_ROLE_LEADER);
}

static void t_propose(struct t_cluster *c, uint32_t i, uint8_t v, int expect)
{
    struct raft_event ev = {.type = RAFT_EVENT_PROPOSE, .proposal = &v, .proposal_length = 1};
    assert_int_equal(t_step(c, i, &ev), expect);
}

/* Steps FLUSH on member 0, the leader of three, and checks that it sent one APPEND to
 * each follower with the entries after log_index, entry_count of them. */
static void t_flush_expect_appends(struct t_cluster *c, uint64_t log_index, uint32_t entry_count)
{
    uint32_t first = c->qn;
    struct raft_event flush = {.type = RAFT_EVENT_FLUSH};
    assert_int_equal(t_step(c, 0, &flush), CLUSTER_OK);
    assert_int_equal(c->u[0].message_count, 2);
    for (uint32_t k = first; k < first + 2; k++) {
        assert_int_equal(c->q[k].m.type, RAFT_MSG_APPEND);
        assert_int_equal(c->q[k].m.log_index, log_index);
        assert_int_equal(c->q[k].m.entry_count, entry_count);
    }
}

static void test_raft_step__single_member_leads_at_once(void **state)
{
    struct t_cluster c;
    t_init(&c, 1);
    c.auto_persist[0] = false;
    t_tick(&c, 0);
    assert_int_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    assert_true(c.u[0].hard_state_changed);
    assert_int_equal(c.u[0].term, 1);
    assert_int_equal(c.u[0].voted_for, 1);
    assert_true(c.u[0].role_changed);
    assert_int_equal(c.u[0].entry_count, 1); /* the no-op */
    assert_int_equal(c.u[0].entries[0].length, 0);
    assert_int_equal(raft_commit_index(c.r[0]), 0); /* not durable yet */
    t_persist(&c, 0);
    assert_int_equal(c.u[0].commit_index, 1);
    t_propose(&c, 0, 7, CLUSTER_OK);
    t_persist(&c, 0);
    assert_int_equal(c.u[0].commit_index, 2);
    assert_true(raft_has_quorum(c.r[0], c.now));
    t_free(&c);
}

static void test_raft_step__three_members_elect_one_leader(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    assert_int_equal(raft_term(c.r[0]), 1);
    for (uint32_t i = 1; i < 3; i++) {
        assert_int_equal(raft_role(c.r[i]), CLUSTER_ROLE_FOLLOWER);
        assert_int_equal(raft_leader(c.r[i]), 1);
        assert_int_equal(raft_term(c.r[i]), 1);
    }
    assert_true(c.u[0].next_tick_ms > c.now);
    t_free(&c);
}

static void test_raft_step__replicates_and_commits(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    t_propose(&c, 1, 5, CLUSTER_E_NOT_LEADER);
    t_propose(&c, 0, 5, CLUSTER_OK);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 2);
    c.now += HB;
    t_tick(&c, 0); /* the heartbeat carries the commit index */
    t_deliver_all(&c);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(raft_commit_index(c.r[i]), 2);
        const struct raft_entry *e = raft_entry_at(c.r[i], 2);
        assert_non_null(e);
        assert_int_equal(e->length, 1);
        assert_int_equal(e->data[0], 5);
    }
    t_free(&c);
}

/* With appends_on_flush, proposals wait for FLUSH, which sends them all in one APPEND
 * per follower (the host's one log write per loop turn, mirrored on the followers). */
static void test_raft_step__appends_on_flush_sends_a_turns_proposals_in_one_append(void **state)
{
    struct t_cluster c;
    t_init_with(&c, 3, true);
    t_elect(&c, 0); /* the new leader's no-op still goes out at once */
    assert_int_equal(raft_commit_index(c.r[0]), 1);
    for (uint8_t v = 1; v <= 3; v++) {
        t_propose(&c, 0, v, CLUSTER_OK);
        assert_int_equal(c.u[0].message_count, 0);
    }
    assert_int_equal(c.qn, 0);
    struct raft_event flush = {.type = RAFT_EVENT_FLUSH};
    t_flush_expect_appends(&c, 1, 3);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 4);
    /* Nothing proposed since: a FLUSH sends nothing, and on a follower it is a no-op. */
    assert_int_equal(t_step(&c, 0, &flush), CLUSTER_OK);
    assert_int_equal(c.u[0].message_count, 0);
    assert_int_equal(t_step(&c, 1, &flush), CLUSTER_OK);
    assert_int_equal(c.u[1].message_count, 0);
    /* A host that never flushes still replicates: the heartbeat carries the entries,
     * and the FLUSH that comes late skips the followers that already have them. */
    t_propose(&c, 0, 9, CLUSTER_OK);
    assert_int_equal(c.qn, 0);
    c.now += HB;
    t_tick(&c, 0);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 5);
    assert_int_equal(t_step(&c, 0, &flush), CLUSTER_OK);
    assert_int_equal(c.u[0].message_count, 0);
    t_free(&c);
}

/* With appends_on_flush, a caught-up follower's answer does not carry the proposals
 * made since the last FLUSH: they wait for the FLUSH (the host's next log batch), so a
 * follower gets one APPEND, and makes one sync, per log batch of the leader's. */
static void test_raft_step__appends_on_flush_answers_leave_new_proposals_to_the_flush(void **state)
{
    struct t_cluster c;
    t_init_with(&c, 3, true);
    t_elect(&c, 0);
    struct raft_event flush = {.type = RAFT_EVENT_FLUSH};
    t_propose(&c, 0, 1, CLUSTER_OK);
    assert_int_equal(t_step(&c, 0, &flush), CLUSTER_OK);
    assert_int_equal(c.qn, 2);
    t_deliver_one(&c); /* the APPENDs of entry 2; the answers wait in the queue */
    t_deliver_one(&c);
    assert_int_equal(c.qn, 2);
    t_propose(&c, 0, 2, CLUSTER_OK);
    t_propose(&c, 0, 3, CLUSTER_OK);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(c.q[0].m.type, RAFT_MSG_APPEND_RESPONSE);
        t_deliver_one(&c);
        assert_int_equal(c.u[0].message_count, 0); /* entries 3 and 4 are not sent */
    }
    assert_int_equal(raft_commit_index(c.r[0]), 2);
    t_flush_expect_appends(&c, 2, 2);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 4);
    /* A follower that missed an APPEND still gets everything, the entry not flushed
     * yet included: the heartbeat's rejection backs the leader up to what it has. */
    c.cut[2] = true;
    t_propose(&c, 0, 4, CLUSTER_OK);
    assert_int_equal(t_step(&c, 0, &flush), CLUSTER_OK);
    t_deliver_all(&c);
    c.cut[2] = false;
    t_propose(&c, 0, 5, CLUSTER_OK); /* not flushed */
    c.now += HB;
    t_tick(&c, 0);
    t_deliver_all(&c);
    assert_int_equal(raft_match_index(c.r[0], 3), 6);
    assert_int_equal(raft_commit_index(c.r[0]), 6);
    t_free(&c);
}

/* With appends_on_flush, a heartbeat that carried some of the unflushed proposals must
 * not leave the later ones stranded: the answer to it holds them for the FLUSH (the
 * follower is past flush_from), so the FLUSH has to send them, not skip the follower
 * for having moved past flush_from. Otherwise they wait for the next heartbeat. */
static void test_raft_step__appends_on_flush_sends_what_a_heartbeat_left(void **state)
{
    struct t_cluster c;
    t_init_with(&c, 3, true);
    t_elect(&c, 0);
    t_propose(&c, 0, 1, CLUSTER_OK); /* entry 2, not flushed */
    c.now += HB;
    t_tick(&c, 0); /* the heartbeat carries entry 2 */
    assert_int_equal(c.qn, 2);
    assert_int_equal(c.q[0].m.entry_count, 1);
    t_propose(&c, 0, 2, CLUSTER_OK); /* entry 3, after the heartbeat */
    t_deliver_all(&c);               /* entry 2 acknowledged; entry 3 waits for the flush */
    assert_int_equal(raft_commit_index(c.r[0]), 2);
    t_flush_expect_appends(&c, 2, 1);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 3);
    t_free(&c);
}

/* Flushes the leader (member 1) and checks that exactly the members in `to` (ids) were
 * sent an APPEND, each carrying entry_count entries. */
static void t_flush_expect_appends_to(struct t_cluster *c, const uint64_t *to, uint32_t to_count,
                                      uint32_t entry_count)
{
    uint32_t first = c->qn;
    struct raft_event flush = {.type = RAFT_EVENT_FLUSH};
    assert_int_equal(t_step(c, 0, &flush), CLUSTER_OK);
    assert_int_equal(c->qn - first, to_count);
    for (uint32_t k = 0; k < to_count; k++) {
        bool listed = false;
        for (uint32_t j = first; j < c->qn; j++)
            listed = listed || c->q[j].m.to == to[k];
        assert_true(listed);
    }
    for (uint32_t j = first; j < c->qn; j++) {
        assert_int_equal(c->q[j].m.type, RAFT_MSG_APPEND);
        assert_int_equal(c->q[j].m.entry_count, entry_count);
    }
}

/* A 3-member cluster with appends_quorum_first, member 1 elected, entry 2 proposed and
 * flushed: exactly one follower (*chosen) was sent it, at c->q[*first]. */
static void t_quorum_first_flush_one(struct t_cluster *c, uint32_t *first, uint64_t *chosen,
                                     uint64_t *other)
{
    t_init_flushing(c, 3, true, true);
    t_elect(c, 0);
    assert_int_equal(raft_commit_index(c->r[0]), 1);
    assert_false(raft_flush_due(c->r[0]));
    t_propose(c, 0, 1, CLUSTER_OK); /* entry 2 */
    *first = c->qn;
    struct raft_event flush = {.type = RAFT_EVENT_FLUSH};
    assert_int_equal(t_step(c, 0, &flush), CLUSTER_OK);
    assert_int_equal(c->qn - *first, 1);
    assert_int_equal(c->q[*first].m.entry_count, 1);
    *chosen = c->q[*first].m.to;
    *other = *chosen == 2 ? 3 : 2;
}

/* appends_quorum_first: a flush goes to one follower of two (with the leader, a
 * majority), and the one left out gets those entries with the next flush, in one
 * APPEND with that flush's own; the followers take turns, each commit still comes on
 * the first flush, and a flush with nothing new sends what was left out. */
static void
test_raft_step__quorum_first_flush_sends_to_a_majority_and_the_rest_next_time(void **state)
{
    struct t_cluster c;
    uint32_t first;
    uint64_t chosen, other;
    t_quorum_first_flush_one(&c, &first, &chosen, &other);
    assert_true(raft_flush_due(c.r[0])); /* the other follower waits for a flush */
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 2);
    assert_int_equal(raft_match_index(c.r[0], other), 1);
    /* The next flush: the follower left out first, with entries 2 and 3. */
    t_propose(&c, 0, 2, CLUSTER_OK); /* entry 3 */
    t_flush_expect_appends_to(&c, &other, 1, 2);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 3);
    assert_int_equal(raft_match_index(c.r[0], other), 3);
    assert_int_equal(raft_match_index(c.r[0], chosen), 2);
    /* Its answer did not send entry 3 to the follower left out this time... */
    assert_true(raft_flush_due(c.r[0]));
    /* ...a flush with nothing new does. */
    t_flush_expect_appends_to(&c, &chosen, 1, 1);
    t_deliver_all(&c);
    assert_int_equal(raft_match_index(c.r[0], chosen), 3);
    assert_false(raft_flush_due(c.r[0]));
    t_free(&c);
}

/* appends_quorum_first relies on a follower only if it has answered everything sent to
 * it: when the chosen follower has gone silent, commits wait at most one flush, and
 * from then on every flush goes to both followers. */
static void
test_raft_step__quorum_first_flush_goes_to_all_when_a_chosen_follower_is_silent(void **state)
{
    struct t_cluster c;
    uint32_t first;
    uint64_t chosen, other;
    t_quorum_first_flush_one(&c, &first, &chosen, &other);
    struct raft_event flush = {.type = RAFT_EVENT_FLUSH};
    c.cut[chosen - 1] = true; /* it dies with entry 2 on its way */
    c.qn = first;
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 1); /* waits for one flush */
    for (uint8_t v = 2; v <= 5; v++) {
        t_propose(&c, 0, v, CLUSTER_OK);
        assert_int_equal(t_step(&c, 0, &flush), CLUSTER_OK);
        t_deliver_all(&c);
        assert_int_equal(raft_match_index(c.r[0], other), v + 1);
        assert_int_equal(raft_commit_index(c.r[0]), v + 1);
    }
    assert_int_equal(raft_match_index(c.r[0], chosen), 1); /* silent since the no-op */
    t_free(&c);
}

static void test_raft_step__leader_counts_itself_only_when_persisted(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    c.cut[2] = true;
    c.auto_persist[0] = false;
    t_propose(&c, 0, 9, CLUSTER_OK);
    t_deliver_all(&c);
    assert_int_equal(raft_match_index(c.r[0], 2), 2);
    assert_int_equal(raft_commit_index(c.r[0]), 1); /* only member 2 has entry 2 durably */
    t_persist(&c, 0);
    assert_int_equal(raft_commit_index(c.r[0]), 2);
    t_free(&c);
}

static void test_raft_step__follower_acks_only_when_persisted(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    c.auto_persist[1] = false;
    c.cut[2] = true;
    t_propose(&c, 0, 3, CLUSTER_OK);
    assert_int_equal(c.qn, 1);
    struct t_msg t = c.q[0];
    c.qn = 0;
    t.m.entries = t.entries;
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &t.m};
    t_step(&c, 1, &ev);
    assert_int_equal(c.u[1].entry_count, 1);
    assert_int_equal(c.u[1].message_count, 0); /* no ack before durable */
    assert_int_equal(c.qn, 0);
    t_persist(&c, 1);
    assert_int_equal(c.u[1].message_count, 1);
    assert_int_equal(c.u[1].messages[0].type, RAFT_MSG_APPEND_RESPONSE);
    assert_true(c.u[1].messages[0].granted);
    assert_int_equal(c.u[1].messages[0].match_index, 2);
    t_free(&c);
}

static struct raft *t_create_with_log(struct t_cluster *c, uint32_t i, uint64_t term,
                                      const uint64_t *terms, uint64_t n)
{
    struct raft_entry e[8];
    for (uint64_t k = 0; k < n; k++)
        e[k] = (struct raft_entry){.term = terms[k]};
    struct raft_config cfg;
    t_config(c, i, &cfg);
    struct raft_start st = {.term = term, .entries = e, .entry_count = n, .now_ms = c->now};
    raft_destroy(c->r[i]);
    c->r[i] = raft_create(&cfg, &st);
    assert_non_null(c->r[i]);
    c->last[i] = n;
    c->last_term[i] = n ? terms[n - 1] : 0;
    return c->r[i];
}

static void test_raft_step__conflicting_suffix_truncated(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    uint64_t old[] = {1, 1, 1};
    t_create_with_log(&c, 1, 1, old, 3);
    struct raft_entry e = {.term = 2};
    struct raft_message m = {.type = RAFT_MSG_APPEND,
                             .from = 1,
                             .to = 2,
                             .term = 2,
                             .log_index = 1,
                             .log_term = 1,
                             .entries = &e,
                             .entry_count = 1};
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &m};
    c.auto_persist[1] = false;
    assert_int_equal(t_step(&c, 1, &ev), CLUSTER_OK);
    assert_int_equal(c.u[1].truncate_after, 1);
    assert_int_equal(c.u[1].first_index, 2);
    assert_int_equal(c.u[1].entry_count, 1);
    assert_int_equal(raft_last_index(c.r[1]), 2);
    assert_int_equal(raft_last_term(c.r[1]), 2);
    /* A duplicate of the same APPEND changes nothing. */
    t_step(&c, 1, &ev);
    assert_int_equal(c.u[1].truncate_after, UINT64_MAX);
    assert_int_equal(c.u[1].entry_count, 0);
    /* A mismatch is refused with a hint at the follower's last index. */
    struct raft_message bad = m;
    bad.log_index = 5;
    bad.entry_count = 0;
    ev.message = &bad;
    c.qn = 0;
    t_step(&c, 1, &ev);
    assert_int_equal(c.u[1].message_count, 1);
    assert_false(c.u[1].messages[0].granted);
    assert_int_equal(c.u[1].messages[0].match_index, 2);
    t_free(&c);
}

/* Figure 3.7: a leader of term 3 holds an entry of term 2 that reaches a majority; it
 * must not count that as committed until an entry of term 3 is on a majority too. */
static void test_raft_step__old_term_entry_not_committed_by_counting(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    uint64_t l1[] = {1, 2};
    uint64_t l2[] = {1};
    struct raft_config cfg;
    t_config(&c, 0, &cfg);
    t_create_with_log(&c, 0, 2, l1, 2);
    t_create_with_log(&c, 1, 2, l2, 1);
    t_create_with_log(&c, 2, 2, l2, 1);
    c.cut[2] = true;
    c.auto_persist[1] = false; /* member 2 acknowledges only what the test says */
    c.now += 2 * ET;
    t_tick(&c, 0);
    t_deliver_all(&c);
    assert_int_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    assert_int_equal(raft_term(c.r[0]), 3);
    /* Deliver member 2's acks by hand: first a success that covers only index 2. */
    struct raft_message ack = {.type = RAFT_MSG_APPEND_RESPONSE,
                               .from = 2,
                               .to = 1,
                               .term = 3,
                               .granted = true,
                               .match_index = 2};
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &ack};
    c.qn = 0;
    t_step(&c, 0, &ev);
    assert_int_equal(raft_match_index(c.r[0], 2), 2);
    assert_int_equal(raft_commit_index(c.r[0]), 0); /* index 2 is of term 2: not by counting */
    ack.match_index = 3;                            /* the no-op of term 3 */
    t_step(&c, 0, &ev);
    assert_int_equal(raft_commit_index(c.r[0]), 3);
    t_free(&c);
}

static void test_raft_step__pre_vote_stops_term_inflation(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    uint64_t term = raft_term(c.r[0]);
    c.cut[2] = true;
    for (int k = 0; k < 100; k++) {
        c.now += HB;
        t_tick(&c, 2);
        t_tick(&c, 0); /* the leader heartbeats the member still reachable */
        t_tick(&c, 1);
        t_deliver_all(&c);
    }
    assert_int_equal(raft_term(c.r[2]), term); /* pre-votes never raised it */
    /* Heal: its pre-vote reaches members that hear from the leader: refused. */
    c.cut[2] = false;
    for (int k = 0; k < 30; k++) {
        c.now += HB;
        t_tick(&c, 0);
        t_tick(&c, 1);
        t_tick(&c, 2);
        t_deliver_all(&c);
    }
    assert_int_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    assert_int_equal(raft_term(c.r[0]), term);
    assert_int_equal(raft_leader(c.r[2]), 1);
    t_free(&c);
}

static void test_raft_step__leader_steps_down_without_quorum(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    assert_true(raft_has_quorum(c.r[0], c.now));
    c.cut[0] = true;
    for (int k = 0; k < 25; k++) {
        c.now += HB;
        t_tick(&c, 0);
    }
    assert_int_not_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    assert_false(raft_has_quorum(c.r[0], c.now));
    t_propose(&c, 0, 1, CLUSTER_E_NOT_LEADER);
    t_free(&c);
}

/* The leader's host did not run it for longer than an election timeout (a loaded machine
 * descheduled it); its followers answered, but the answers are still unread when the
 * host steps the tick. It must not step down for answers it could not read, and it must
 * still step down when the majority is really gone. */
static void test_raft_step__leader_that_was_not_running_does_not_step_down_on_waking(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    c.now += HB;
    t_tick(&c, 0);
    t_deliver_all(&c);
    assert_true(raft_has_quorum(c.r[0], c.now));

    c.now += 3 * ET; /* the stall: nothing stepped */
    t_tick(&c, 0);
    assert_int_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    t_deliver_all(&c); /* the heartbeats just sent are answered */
    for (int k = 0; k < 25; k++) {
        c.now += HB;
        t_tick(&c, 0);
        t_deliver_all(&c);
        assert_int_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    }
    assert_true(raft_has_quorum(c.r[0], c.now));

    /* The same stall with the followers really gone: deposed one check later. */
    c.cut[0] = true;
    c.now += 3 * ET;
    t_tick(&c, 0);
    assert_int_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    for (int k = 0; k < 2 * ET / HB + 1; k++) {
        c.now += HB;
        t_tick(&c, 0);
    }
    assert_int_not_equal(raft_role(c.r[0]), CLUSTER_ROLE_LEADER);
    t_free(&c);
}

static void test_raft_step__read_index_needs_a_majority_round(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    t_elect(&c, 0);
    assert_int_equal(raft_commit_index(c.r[0]), 1);
    c.qn = 0;
    struct raft_event ev = {.type = RAFT_EVENT_READ_INDEX, .read_id = 77};
    t_step(&c, 0, &ev);
    assert_int_equal(c.u[0].read_state_count, 0); /* leadership not confirmed yet */
    assert_int_equal(c.qn, 2);
    assert_true(c.q[0].m.read_round > 0);
    /* Only member 2's answer: self plus one is a majority of three. */
    c.cut[2] = true;
    t_deliver_all(&c);
    /* the read states came out of the step that handled member 2's response */
    assert_int_equal(c.u[0].read_state_count, 1);
    assert_int_equal(c.u[0].read_states[0].read_id, 77);
    assert_int_equal(c.u[0].read_states[0].index, 1);
    /* On a follower, the answer is "not here" at once. */
    ev.read_id = 78;
    t_step(&c, 1, &ev);
    assert_int_equal(c.u[1].read_state_count, 1);
    assert_int_equal(c.u[1].read_states[0].index, 0);
    t_free(&c);
}

static void test_raft_step__snapshot_for_lagging_follower(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    c.cut[2] = true;
    t_elect(&c, 0);
    for (uint8_t v = 0; v < 5; v++)
        t_propose(&c, 0, v, CLUSTER_OK);
    t_deliver_all(&c);
    assert_int_equal(raft_commit_index(c.r[0]), 6);
    struct raft_event snap = {
        .type = RAFT_EVENT_SNAPSHOT_TAKEN, .snapshot_index = 6, .snapshot_term = 1, .trailing = 1};
    assert_int_equal(t_step(&c, 0, &snap), CLUSTER_OK);
    assert_null(raft_entry_at(c.r[0], 4));
    assert_non_null(raft_entry_at(c.r[0], 6));
    c.cut[2] = false;
    c.now += HB;
    t_tick(&c, 0);
    /* Member 3 refuses the APPEND (empty log); the leader then announces the snapshot. */
    bool announced = false;
    for (uint32_t guard = 0; c.qn && guard < 100; guard++) {
        struct t_msg t = c.q[0];
        memmove(c.q, c.q + 1, (c.qn - 1) * sizeof *c.q);
        c.qn--;
        t.m.entries = t.entries;
        uint32_t to = (uint32_t)t.m.to - 1;
        struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .message = &t.m};
        t_step(&c, to, &ev);
        if (to == 0 && c.u[0].snapshot_needed) {
            assert_int_equal(c.u[0].snapshot_to, 3);
            announced = true;
        }
        if (to == 2 && c.u[2].install_snapshot) {
            assert_int_equal(c.u[2].install_index, 6);
            assert_int_equal(c.u[2].install_term, 1);
            struct raft_event inst = {
                .type = RAFT_EVENT_SNAPSHOT_INSTALLED, .snapshot_index = 6, .snapshot_term = 1};
            t_step(&c, 2, &inst);
            assert_int_equal(c.u[2].message_count, 1);
            assert_int_equal(c.u[2].messages[0].type, RAFT_MSG_SNAPSHOT_RESPONSE);
            assert_int_equal(c.u[2].messages[0].match_index, 6);
        }
    }
    assert_true(announced);
    assert_int_equal(raft_match_index(c.r[0], 3), 6);
    assert_int_equal(raft_commit_index(c.r[2]), 6);
    /* Replication goes on from index 7. */
    t_propose(&c, 0, 42, CLUSTER_OK);
    t_deliver_all(&c);
    assert_int_equal(raft_match_index(c.r[0], 3), 7);
    t_free(&c);
}

static void test_raft_message_codec__round_trip_and_corruption(void **state)
{
    uint8_t d1[] = {1, 2, 3};
    struct raft_entry e[2] = {{.term = 4, .data = d1, .length = 3}, {.term = 5}};
    struct raft_message m = {.type = RAFT_MSG_APPEND,
                             .from = 1,
                             .to = 3,
                             .term = 5,
                             .log_index = 10,
                             .log_term = 4,
                             .commit_index = 9,
                             .entries = e,
                             .entry_count = 2,
                             .granted = true,
                             .match_index = 11,
                             .read_round = 12};
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(raft_message_encode(&m, &buf, &len), CLUSTER_OK);
    struct raft_message out;
    assert_int_equal(raft_message_decode(buf, len, &out), CLUSTER_OK);
    assert_int_equal(out.type, m.type);
    assert_int_equal(out.from, 1);
    assert_int_equal(out.to, 3);
    assert_int_equal(out.term, 5);
    assert_int_equal(out.log_index, 10);
    assert_int_equal(out.log_term, 4);
    assert_int_equal(out.commit_index, 9);
    assert_int_equal(out.match_index, 11);
    assert_int_equal(out.read_round, 12);
    assert_true(out.granted);
    assert_int_equal(out.entry_count, 2);
    assert_int_equal(out.entries[0].term, 4);
    assert_int_equal(out.entries[0].length, 3);
    assert_memory_equal(out.entries[0].data, d1, 3);
    assert_int_equal(out.entries[1].length, 0);
    free((void *)out.entries);
    /* Every single-bit flip and every truncation is rejected. */
    for (size_t i = 0; i < len; i++) {
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1u << b);
            assert_int_equal(raft_message_decode(buf, len, &out), CLUSTER_E_INVALID);
            buf[i] ^= (uint8_t)(1u << b);
        }
    }
    for (size_t l = 0; l < len; l++)
        assert_int_equal(raft_message_decode(buf, l, &out), CLUSTER_E_INVALID);
    free(buf);
    /* An empty message (a vote) round-trips too. */
    struct raft_message v = {.type = RAFT_MSG_VOTE, .from = 2, .to = 1, .term = 7};
    assert_int_equal(raft_message_encode(&v, &buf, &len), CLUSTER_OK);
    assert_int_equal(raft_message_decode(buf, len, &out), CLUSTER_OK);
    assert_int_equal(out.type, RAFT_MSG_VOTE);
    assert_null(out.entries);
    free(buf);
}

static void test_raft_create__bad_config(void **state)
{
    struct t_cluster c;
    t_init(&c, 3);
    struct raft_config cfg;
    t_config(&c, 0, &cfg);
    struct raft_start st = {0};
    cfg.self_id = 9;
    assert_null(raft_create(&cfg, &st));
    t_config(&c, 0, &cfg);
    cfg.members[1] = 1;
    assert_null(raft_create(&cfg, &st));
    t_config(&c, 0, &cfg);
    cfg.random = NULL;
    assert_null(raft_create(&cfg, &st));
    t_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_step__single_member_leads_at_once),
        cmocka_unit_test(test_raft_step__three_members_elect_one_leader),
        cmocka_unit_test(test_raft_step__replicates_and_commits),
        cmocka_unit_test(test_raft_step__appends_on_flush_sends_a_turns_proposals_in_one_append),
        cmocka_unit_test(test_raft_step__appends_on_flush_answers_leave_new_proposals_to_the_flush),
        cmocka_unit_test(test_raft_step__appends_on_flush_sends_what_a_heartbeat_left),
        cmocka_unit_test(
            test_raft_step__quorum_first_flush_sends_to_a_majority_and_the_rest_next_time),
        cmocka_unit_test(
            test_raft_step__quorum_first_flush_goes_to_all_when_a_chosen_follower_is_silent),
        cmocka_unit_test(test_raft_step__leader_counts_itself_only_when_persisted),
        cmocka_unit_test(test_raft_step__follower_acks_only_when_persisted),
        cmocka_unit_test(test_raft_step__conflicting_suffix_truncated),
        cmocka_unit_test(test_raft_step__old_term_entry_not_committed_by_counting),
        cmocka_unit_test(test_raft_step__pre_vote_stops_term_inflation),
        cmocka_unit_test(test_raft_step__leader_steps_down_without_quorum),
        cmocka_unit_test(test_raft_step__leader_that_was_not_running_does_not_step_down_on_waking),
        cmocka_unit_test(test_raft_step__read_index_needs_a_majority_round),
        cmocka_unit_test(test_raft_step__snapshot_for_lagging_follower),
        cmocka_unit_test(test_raft_message_codec__round_trip_and_corruption),
        cmocka_unit_test(test_raft_create__bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
