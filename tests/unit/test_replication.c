/* test_replication.c: a leader's replication, driven through the engine with a fake
 * host whose two peers are played by the test: it answers the votes and the APPENDs
 * that the engine sends, and decides when the leader's own log writes complete.
 *
 * What is checked is when the followers get new entries relative to the leader's own
 * log write (engine/replication.c, replication_appends_flush): with the write that
 * takes them, and, when that write is slow, within REPLICATION_APPEND_HOLD_MS anyway,
 * so that a majority of followers can commit while the leader's disk is stuck. A flush
 * goes to one follower of the two at once (with the leader, a majority) and to the
 * other with the next flush (raft.c, appends_quorum_first), unless the leader's own log
 * lags: then to both, which commit alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "raft.h"

#include "fake_host.h"

#define T_ELECTION_MS 300
#define T_HOLD_MS 5 /* REPLICATION_APPEND_HOLD_MS */

/* Every RAFT message the leader sent, decoded; data borrow buf (owned). */
struct sent {
    uint64_t to;
    struct raft_message m;
    uint8_t *buf;
    bool answered;
};

static struct sent sent[512];
static size_t sent_count;

static void capture_send(void *data, uint64_t to, enum engine_channel channel, const void *bytes,
                         size_t length)
{
    (void)data;
    if (channel != ENGINE_CHANNEL_RAFT)
        return;
    assert_true(sent_count < sizeof sent / sizeof sent[0]);
    struct sent *s = &sent[sent_count++];
    s->to = to;
    s->answered = false;
    s->buf = malloc(length);
    assert_non_null(s->buf);
    memcpy(s->buf, bytes, length);
    assert_int_equal(raft_message_decode(s->buf, length, &s->m), CLUSTER_OK);
}

static void sent_free(void)
{
    for (size_t i = 0; i < sent_count; i++) {
        if (sent[i].m.entry_count)
            free((void *)sent[i].m.entries);
        free(sent[i].buf);
    }
    sent_count = 0;
}

/* The peer `s->to` grants what it was asked: a (pre-)vote, or an APPEND (it now has
 * everything up to the APPEND's last entry, durably). */
static void answer(struct engine *e, struct sent *s)
{
    struct raft_message reply = {.from = s->to, .to = 1, .term = s->m.term, .granted = true};
    switch (s->m.type) {
    case RAFT_MSG_PRE_VOTE:
        reply.type = RAFT_MSG_PRE_VOTE_RESPONSE;
        break;
    case RAFT_MSG_VOTE:
        reply.type = RAFT_MSG_VOTE_RESPONSE;
        break;
    case RAFT_MSG_APPEND:
        reply.type = RAFT_MSG_APPEND_RESPONSE;
        reply.match_index = s->m.log_index + s->m.entry_count;
        reply.read_round = s->m.read_round;
        break;
    default:
        return;
    }
    s->answered = true;
    uint8_t *buf = NULL;
    size_t length = 0;
    assert_int_equal(raft_message_encode(&reply, &buf, &length), CLUSTER_OK);
    engine_receive(e, s->to, ENGINE_CHANNEL_RAFT, buf, length);
    free(buf);
}

/* Answers every message not answered yet (and those the answers cause). */
static void answer_all(struct engine *e)
{
    for (size_t i = 0; i < sent_count; i++)
        if (!sent[i].answered)
            answer(e, &sent[i]);
}

/* APPENDs with entries sent from position `from` on: how many, and (if any) the first
 * one's receiver, log_index and entry_count, which must be the same for every follower. */
static size_t appends_since_to(size_t from, uint64_t *to, uint64_t *log_index,
                               uint32_t *entry_count)
{
    size_t n = 0;
    for (size_t i = from; i < sent_count; i++) {
        const struct raft_message *m = &sent[i].m;
        if (m->type != RAFT_MSG_APPEND || m->entry_count == 0)
            continue;
        if (n++ == 0) {
            *to = sent[i].to;
            *log_index = m->log_index;
            *entry_count = m->entry_count;
        } else {
            assert_int_equal(m->log_index, *log_index);
            assert_int_equal(m->entry_count, *entry_count);
        }
    }
    return n;
}

static size_t appends_since(size_t from, uint64_t *log_index, uint32_t *entry_count)
{
    uint64_t to;
    return appends_since_to(from, &to, log_index, entry_count);
}

struct outcome {
    int calls;
    int error;
    uint64_t zxid;
};

static void on_done(void *arg, const struct engine_result *r)
{
    struct outcome *o = arg;
    o->calls++;
    o->error = r->error;
    o->zxid = r->zxid;
}

static int submit_create(struct engine *e, const char *path, struct outcome *o)
{
    struct engine_op op = {.type = ENGINE_OP_CREATE,
                           .path = path,
                           .path_length = strlen(path),
                           .data = "v",
                           .data_length = 1,
                           .version = -1};
    struct engine_result error;
    return engine_submit_ops(e, 0, &op, 1, false, on_done, o, &error);
}

static char data_dir[512];

/* Member 1 of {1, 2, 3}, elected with member 2's votes, its no-op committed. */
static struct engine *open_leader(void)
{
    const char *base = getenv("CORRAL_TEST_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/replication-XXXXXX", base ? base : ".");
    assert_non_null(mkdtemp(data_dir));
    fake_job_count = 0;
    sent_count = 0;
    struct engine_options options = {.data_dir = data_dir,
                                     .tick_ms = 100,
                                     .snapshot_every = 1000000,
                                     .reap_interval_ms = 100000,
                                     .member_id = 1,
                                     .members = {1, 2, 3},
                                     .member_count = 3,
                                     .election_timeout_ms = T_ELECTION_MS};
    /* fake_host.h's host, with peers and corrald's flush at the end of a loop turn
     * (the engine keeps a copy). */
    struct engine_host cluster_host = host;
    cluster_host.send = capture_send;
    cluster_host.flush_at_loop_end = true;
    struct engine *e = NULL;
    assert_int_equal(engine_open(&options, &cluster_host, &e, NULL), 0);
    run_jobs();
    clock_ms += 2 * T_ELECTION_MS;
    engine_tick(e);
    /* Member 2 grants the pre-vote, then the vote that its grant brings (appended to
     * sent[] while the loop runs, so the same loop reaches it). */
    for (size_t i = 0; i < sent_count; i++)
        if (!sent[i].answered && sent[i].to == 2)
            answer(e, &sent[i]);
    engine_flush(e);
    run_jobs();
    answer_all(e);
    engine_flush(e);
    run_jobs();
    assert_true(engine_ready(e));
    return e;
}

static void close_leader(struct engine *e)
{
    answer_all(e);
    run_jobs();
    assert_true(engine_idle(e));
    engine_close(e);
    sent_free();
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", data_dir);
    assert_int_equal(system(command), 0);
}

/* A write goes to one follower with the leader's log write that takes it, and to the
 * other with the next flush; one written meanwhile waits for the next such write, not
 * longer than the hold, and then commits on the followers' answers alone while the
 * leader's own write is still stuck. */
static void test_leader__sends_entries_with_its_log_write_and_not_later_than_the_hold(void **state)
{
    (void)state;
    struct engine *e = open_leader();
    struct outcome a = {0}, b = {0};
    uint64_t log_index = 0, first_to = 0;
    uint32_t entry_count = 0;

    size_t mark = sent_count;
    assert_int_equal(submit_create(e, "/a", &a), 0);
    assert_int_equal(appends_since(mark, &log_index, &entry_count), 0); /* not before it */
    engine_flush(e); /* the end of the loop turn: the log takes /a */
    assert_int_equal(fake_job_count, 1);
    assert_int_equal(appends_since_to(mark, &first_to, &log_index, &entry_count), 1);
    assert_int_equal(entry_count, 1);
    uint64_t index_a = log_index + 1;

    /* /a's log write is stuck; /b waits for it, but only for the hold. Then, the
     * leader's own log lagging, both followers get what they lack at once: the one
     * left out /a and /b, the other /b. */
    mark = sent_count;
    assert_int_equal(submit_create(e, "/b", &b), 0);
    engine_flush(e);
    clock_ms += T_HOLD_MS - 1;
    engine_flush(e);
    assert_int_equal(appends_since(mark, &log_index, &entry_count), 0);
    clock_ms += 1;
    engine_flush(e);
    size_t appends = 0;
    for (size_t i = mark; i < sent_count; i++) {
        const struct raft_message *m = &sent[i].m;
        if (m->type != RAFT_MSG_APPEND || m->entry_count == 0)
            continue;
        appends++;
        bool left_out = sent[i].to != first_to;
        assert_int_equal(m->log_index, left_out ? index_a - 1 : index_a);
        assert_int_equal(m->entry_count, left_out ? 2 : 1);
    }
    assert_int_equal(appends, 2);

    /* The followers answer: /a and /b commit on their answers, without the leader's. */
    answer_all(e);
    assert_int_equal(fake_job_count, 1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.error, 0);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.error, 0);
    assert_true(b.zxid > a.zxid);
    const struct znode *node = NULL;
    assert_int_equal(engine_lookup(e, "/b", 2, &node), 0);
    close_leader(e);
}

/* When the leader's log is idle, a follower gets a write at the end of the loop turn
 * that read it, with the write's own log batch: nothing is held back then; the other
 * follower gets it at the end of the turn that finds the leader's log idle again. */
static void test_leader__idle_log_sends_at_once(void **state)
{
    (void)state;
    struct engine *e = open_leader();
    struct outcome a = {0};
    uint64_t log_index = 0;
    uint32_t entry_count = 0;
    size_t mark = sent_count;
    assert_int_equal(submit_create(e, "/a", &a), 0);
    engine_flush(e);
    assert_int_equal(appends_since(mark, &log_index, &entry_count), 1);
    run_jobs();                   /* the leader's own write completes */
    assert_int_equal(a.calls, 0); /* one member of three is not a majority */
    answer_all(e);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.error, 0);
    engine_flush(e);
    assert_int_equal(appends_since(mark, &log_index, &entry_count), 2);
    close_leader(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leader__sends_entries_with_its_log_write_and_not_later_than_the_hold),
        cmocka_unit_test(test_leader__idle_log_sends_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
