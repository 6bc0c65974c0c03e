/* test_engine.c: the engine's pipeline driven by a fake host.
 *
 * The host runs "blocking" jobs only when the test says so, which lets a test hold
 * writes between prep and apply (in flight) and check that prep validates against the
 * predicted state, that nothing is answered before the WAL batch completes, and that
 * recovery rebuilds exactly what was acknowledged. Time is a variable. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

#include "fake_host.h"

/* ---- completion capture ---- */

struct outcome {
    int calls;
    int error;
    uint64_t zxid;
    uint64_t session_id;
    uint32_t timeout_ms;
    char path[256];
    struct znode_stat stat;
};

static void on_done(void *arg, const struct engine_result *r)
{
    struct outcome *o = arg;
    o->calls++;
    o->error = r->error;
    o->zxid = r->zxid;
    o->session_id = r->session_id;
    o->timeout_ms = r->timeout_ms;
    if (r->op_count > 0) {
        snprintf(o->path, sizeof o->path, "%s", r->ops[r->op_count - 1].path);
        o->stat = r->ops[r->op_count - 1].stat;
    }
}

static char data_dir[512];

static struct engine *open_engine(struct engine_recovery_report *report)
{
    struct engine_options options = {
        .data_dir = data_dir, .tick_ms = 100, .snapshot_every = 1000000, .reap_interval_ms = 100};
    struct engine *e = NULL;
    assert_int_equal(engine_open(&options, &host, &e, report), 0);
    /* A cluster of one elects itself and logs its term's no-op; it proposes once that
     * is applied (so every open takes one zxid). */
    run_jobs();
    assert_true(engine_ready(e));
    return e;
}

static int setup(void **state)
{
    const char *base = getenv("CORRAL_TEST_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/engine-XXXXXX", base ? base : ".");
    assert_non_null(mkdtemp(data_dir));
    fake_job_count = 0;
    *state = open_engine(NULL);
    return 0;
}

static void close_engine(struct engine *e)
{
    run_jobs();
    assert_true(engine_idle(e));
    engine_close(e);
}

static int teardown(void **state)
{
    close_engine(*state);
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", data_dir);
    assert_int_equal(system(command), 0);
    return 0;
}

static struct engine_op op_create(const char *path, const char *data, uint32_t flags)
{
    return (struct engine_op){.type = ENGINE_OP_CREATE,
                              .path = path,
                              .path_length = strlen(path),
                              .data = data,
                              .data_length = data ? strlen(data) : 0,
                              .version = -1,
                              .create_flags = flags};
}

static struct engine_op op_simple(enum engine_op_type type, const char *path, int32_t version)
{
    return (struct engine_op){
        .type = type, .path = path, .path_length = strlen(path), .version = version};
}

static int submit(struct engine *e, uint64_t session, struct engine_op op, struct outcome *o)
{
    struct engine_result error;
    return engine_submit_ops(e, session, &op, 1, false, on_done, o, &error);
}

static uint64_t open_session(struct engine *e, uint32_t timeout)
{
    struct outcome o = {0};
    assert_int_equal(engine_session_open(e, timeout, on_done, &o), 0);
    run_jobs();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.error, 0);
    return o.session_id;
}

/* A session (1 s timeout) holding one ephemeral node at path, already durable. */
static uint64_t session_with_ephemeral(struct engine *e, const char *path)
{
    uint64_t id = open_session(e, 1000);
    struct outcome o = {0};
    assert_int_equal(submit(e, id, op_create(path, NULL, ENGINE_CREATE_EPHEMERAL), &o), 0);
    run_jobs();
    return id;
}

/* ---- tests ---- */

/* `ticks` host ticks, 100 ms apart; before each, the session `touch` (0: none) is heard
 * from, as a keepalive read that turn would. */
static void ticks_pass(struct engine *e, int ticks, uint64_t touch)
{
    for (int i = 0; i < ticks; i++) {
        clock_ms += 100;
        if (touch != 0)
            assert_int_equal(engine_session_touch(e, touch), 0);
        engine_tick(e);
        run_jobs();
    }
}

/* Closes the test's engine and opens the same data dir with these options. */
static struct engine *reopen_with(void **state, const struct engine_options *options)
{
    close_engine(*state);
    struct engine *e = NULL;
    assert_int_equal(engine_open(options, &host, &e, NULL), 0);
    *state = e;
    run_jobs();
    return e;
}

static void test_engine_submit_ops__answered_only_after_the_batch_is_durable(void **state)
{
    struct engine *e = *state;
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/a", "x", 0), &o), 0);
    assert_int_equal(o.calls, 0);
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/a", 2, &n), CORRAL_E_NO_NODE); /* not applied yet */
    run_jobs();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.error, 0);
    assert_string_equal(o.path, "/a");
    assert_int_equal(o.zxid, 2); /* 1 is the leader's no-op */
    assert_int_equal(engine_lookup(e, "/a", 2, &n), 0);
    assert_int_equal(n->czxid, 2);
    assert_int_equal(n->ctime, wall);
}

static void test_engine_submit_ops__prep_sees_writes_in_flight(void **state)
{
    struct engine *e = *state;
    struct outcome a = {0}, b = {0}, c = {0};
    assert_int_equal(submit(e, 0, op_create("/p", NULL, 0), &a), 0);
    /* the parent exists only in flight: the child create must be accepted */
    assert_int_equal(submit(e, 0, op_create("/p/c", NULL, 0), &b), 0);
    /* and a second create of /p must be refused although the tree has no /p yet */
    assert_int_equal(submit(e, 0, op_create("/p", NULL, 0), &c), CORRAL_E_NODE_EXISTS);
    /* deleting /p is refused: it will have a child */
    assert_int_equal(submit(e, 0, op_simple(ENGINE_OP_DELETE, "/p", -1), &c), CORRAL_E_NOT_EMPTY);
    run_jobs();
    assert_int_equal(a.error, 0);
    assert_int_equal(b.error, 0);
    assert_int_equal(c.calls, 0);
    const struct znode *p;
    assert_int_equal(engine_lookup(e, "/p", 2, &p), 0);
    assert_int_equal(p->child_count, 1);
    assert_int_equal(p->cversion, 1);
    assert_int_equal(p->pzxid, 3);
}

static void test_engine_submit_ops__sequential_names_count_in_flight_creates(void **state)
{
    struct engine *e = *state;
    struct outcome o[3] = {0};
    assert_int_equal(submit(e, 0, op_create("/q", NULL, 0), &o[0]), 0);
    run_jobs();
    struct outcome s[3] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(e, 0, op_create("/q/item-", NULL, ENGINE_CREATE_SEQUENTIAL), &s[i]),
                         0);
    run_jobs();
    assert_string_equal(s[0].path, "/q/item-0000000000");
    assert_string_equal(s[1].path, "/q/item-0000000001");
    assert_string_equal(s[2].path, "/q/item-0000000002");
}

static void test_engine_submit_ops__multi_is_all_or_nothing(void **state)
{
    struct engine *e = *state;
    struct engine_op ops[3] = {op_create("/m1", NULL, 0), op_create("/m2", NULL, 0),
                               op_simple(ENGINE_OP_CHECK, "/m1", 5)};
    struct engine_result error;
    struct outcome o = {0};
    assert_int_equal(engine_submit_ops(e, 0, ops, 3, true, on_done, &o, &error),
                     CORRAL_E_BAD_VERSION);
    assert_int_equal(error.failed_index, 2);
    assert_string_equal(error.error_path, "/m1");
    /* the overlay was rolled back: /m1 can be created now */
    assert_int_equal(submit(e, 0, op_create("/m1", NULL, 0), &o), 0);
    run_jobs();
    assert_int_equal(o.error, 0);
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/m2", 3, &n), CORRAL_E_NO_NODE);
    assert_int_equal(engine_applied_zxid(e), 2);
}

static void test_engine_submit_ops__version_checks(void **state)
{
    struct engine *e = *state;
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/v", "1", 0), &o), 0);
    struct engine_op set = op_simple(ENGINE_OP_SET, "/v", 0);
    set.data = "2";
    set.data_length = 1;
    assert_int_equal(submit(e, 0, set, &o), 0);
    /* in flight the version is now 1: expecting 0 again fails */
    assert_int_equal(submit(e, 0, set, &o), CORRAL_E_BAD_VERSION);
    run_jobs();
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/v", 2, &n), 0);
    assert_int_equal(n->version, 1);
    assert_int_equal(n->data_length, 1);
    assert_memory_equal(n->data, "2", 1);
    assert_int_equal(submit(e, 0, op_simple(ENGINE_OP_DELETE, "/v", 0), &o), CORRAL_E_BAD_VERSION);
    assert_int_equal(submit(e, 0, op_simple(ENGINE_OP_DELETE, "/v", 1), &o), 0);
    run_jobs();
    assert_int_equal(engine_lookup(e, "/v", 2, &n), CORRAL_E_NO_NODE);
}

static void test_engine_submit_ops__refuses_bad_requests(void **state)
{
    struct engine *e = *state;
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/x/y", NULL, 0), &o), CORRAL_E_NO_NODE);
    assert_int_equal(submit(e, 0, op_create("bad", NULL, 0), &o), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(submit(e, 0, op_create("/zookeeper/x", NULL, 0), &o), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(submit(e, 0, op_create("/", NULL, 0), &o), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(submit(e, 0, op_create("/e", NULL, ENGINE_CREATE_EPHEMERAL), &o),
                     CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(submit(e, 12345, op_create("/e", NULL, ENGINE_CREATE_EPHEMERAL), &o),
                     CORRAL_E_SESSION_EXPIRED);
    struct engine_op container = op_create("/c", NULL, ENGINE_CREATE_CONTAINER);
    container.ttl_ms = 10;
    assert_int_equal(submit(e, 0, container, &o), CORRAL_E_BAD_ARGUMENTS);
    char *big = calloc(1, 1024 * 1024 + 2);
    memset(big, 'a', 1024 * 1024 + 1);
    assert_int_equal(submit(e, 0, op_create("/big", big, 0), &o), CORRAL_E_BAD_ARGUMENTS);
    big[1024 * 1024] = '\0';
    assert_int_equal(submit(e, 0, op_create("/big", big, 0), &o), 0);
    free(big);
    run_jobs();
    assert_int_equal(o.error, 0);
    assert_int_equal(engine_applied_zxid(e), 2); /* only the accepted one was logged */
}

static void test_engine_session__close_deletes_ephemerals_in_one_txn(void **state)
{
    struct engine *e = *state;
    uint64_t id = session_with_ephemeral(e, "/e1");
    struct outcome o = {0};
    /* e2's create is still in flight when the close is prepped */
    assert_int_equal(submit(e, id, op_create("/e2", NULL, ENGINE_CREATE_EPHEMERAL), &o), 0);
    assert_int_equal(submit(e, id, op_create("/e2/child", NULL, 0), &o),
                     CORRAL_E_NO_CHILDREN_FOR_EPHEMERALS);
    struct outcome closed = {0};
    assert_int_equal(engine_session_close(e, id, on_done, &closed), 0);
    /* once the close is in flight, the paths are predicted free */
    struct outcome again = {0};
    assert_int_equal(submit(e, 0, op_create("/e1", NULL, 0), &again), 0);
    assert_int_equal(engine_session_touch(e, id), CORRAL_E_SESSION_EXPIRED);
    uint64_t before = engine_applied_zxid(e);
    run_jobs();
    assert_int_equal(closed.error, 0);
    assert_int_equal(closed.zxid, before + 2);
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/e1", 3, &n), 0);
    assert_int_equal(n->ephemeral_owner, 0);
    assert_int_equal(engine_lookup(e, "/e2", 3, &n), CORRAL_E_NO_NODE);
    struct engine_session_info info;
    assert_int_equal(engine_session_info_get(e, id, &info), CORRAL_E_SESSION_EXPIRED);
}

static void test_engine_tick__expires_silent_sessions_only(void **state)
{
    struct engine *e = *state;
    uint64_t quiet = session_with_ephemeral(e, "/q");
    uint64_t chatty = open_session(e, 1000);
    ticks_pass(e, 12, chatty);
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/q", 2, &n), CORRAL_E_NO_NODE);
    assert_int_equal(engine_session_touch(e, quiet), CORRAL_E_SESSION_EXPIRED);
    assert_int_equal(engine_session_touch(e, chatty), 0);
}

/* The server did not run for 3 s (stopped, starved): its keepalives of that time would
 * sit unread when the host ticks. The session must survive the first tick after the
 * stall, and still expire once its client really goes quiet. */
static void test_engine_tick__a_stall_does_not_count_against_sessions(void **state)
{
    struct engine *e = *state;
    uint64_t id = session_with_ephemeral(e, "/s");
    ticks_pass(e, 5, id);
    clock_ms += 3000;
    engine_tick(e);
    run_jobs();
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/s", 2, &n), 0);
    assert_int_equal(engine_session_touch(e, id), 0); /* the keepalive read after the tick */
    ticks_pass(e, 12, 0);
    assert_int_equal(engine_lookup(e, "/s", 2, &n), CORRAL_E_NO_NODE);
    assert_int_equal(engine_session_touch(e, id), CORRAL_E_SESSION_EXPIRED);
}

static void test_engine_session_open__timeout_is_clamped(void **state)
{
    struct engine *e = *state;
    struct outcome o = {0};
    assert_int_equal(engine_session_open(e, 1, on_done, &o), 0);
    run_jobs();
    assert_int_equal(o.timeout_ms, 200); /* 2 x tick */
    assert_int_equal(engine_session_open(e, 100000, on_done, &o), 0);
    run_jobs();
    assert_int_equal(o.timeout_ms, 2000); /* 20 x tick */
}

static void test_engine_tick__reaps_containers_and_ttl_nodes(void **state)
{
    struct engine *e = *state;
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/box", NULL, ENGINE_CREATE_CONTAINER), &o), 0);
    assert_int_equal(submit(e, 0, op_create("/box/x", NULL, 0), &o), 0);
    struct engine_op ttl = op_create("/ttl", NULL, 0);
    ttl.ttl_ms = 500;
    assert_int_equal(submit(e, 0, ttl, &o), 0);
    run_jobs();
    clock_ms += 200;
    engine_tick(e);
    run_jobs();
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/box", 4, &n), 0); /* it has a child */
    assert_int_equal(engine_lookup(e, "/ttl", 4, &n), 0); /* not old enough */
    assert_int_equal(submit(e, 0, op_simple(ENGINE_OP_DELETE, "/box/x", -1), &o), 0);
    run_jobs();
    wall += 1000;
    clock_ms += 200;
    engine_tick(e);
    run_jobs();
    assert_int_equal(engine_lookup(e, "/box", 4, &n), CORRAL_E_NO_NODE);
    assert_int_equal(engine_lookup(e, "/ttl", 4, &n), CORRAL_E_NO_NODE);
}

static void test_engine_open__recovers_acknowledged_state(void **state)
{
    struct engine *e = *state;
    uint64_t id = open_session(e, 1000);
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/r", "root", 0), &o), 0);
    assert_int_equal(submit(e, id, op_create("/r/eph", NULL, ENGINE_CREATE_EPHEMERAL), &o), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(submit(e, 0, op_create("/r/s-", "v", ENGINE_CREATE_SEQUENTIAL), &o), 0);
    run_jobs();
    uint64_t zxid = engine_applied_zxid(e);
    close_engine(e);

    struct engine_recovery_report report;
    e = open_engine(&report);
    *state = e;
    assert_int_equal(report.zxid, zxid);
    assert_int_equal(report.replayed, zxid);
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/r", 2, &n), 0);
    assert_int_equal(n->child_count, 51);
    assert_int_equal(n->cversion, 51);
    assert_int_equal(engine_lookup(e, "/r/eph", 6, &n), 0);
    assert_int_equal(n->ephemeral_owner, id);
    struct engine_session_info info;
    assert_int_equal(engine_session_info_get(e, id, &info), 0);
    assert_int_equal(info.ephemeral_count, 1);
    assert_int_equal(info.remaining_ms, 1000); /* a fresh timeout from the restart */
    /* new writes continue the zxid sequence */
    assert_int_equal(submit(e, 0, op_create("/after", NULL, 0), &o), 0);
    run_jobs();
    assert_int_equal(o.zxid, zxid + 2); /* after the restart's no-op */
}

static void test_engine_open__recovers_from_snapshot_and_log(void **state)
{
    struct engine_options options = {.data_dir = data_dir, .tick_ms = 100, .snapshot_every = 10};
    struct engine *e = reopen_with(state, &options); /* no-op 2 (1 was the first open's) */
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/s", NULL, 0), &o), 0);
    run_jobs();
    for (int i = 0; i < 34; i++) {
        assert_int_equal(submit(e, 0, op_create("/s/n-", "d", ENGINE_CREATE_SEQUENTIAL), &o), 0);
        run_jobs(); /* one txn per batch: snapshots at 10, 20, 30 */
    }
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_true(stats.snapshots_written >= 3);
    close_engine(e);

    struct engine_recovery_report report;
    assert_int_equal(engine_open(&options, &host, &e, &report), 0);
    run_jobs();
    *state = e;
    assert_int_equal(report.snapshot_zxid, 30);
    assert_int_equal(report.replayed, 7); /* 31..37 */
    const struct znode *n;
    assert_int_equal(engine_lookup(e, "/s", 2, &n), 0);
    assert_int_equal(n->child_count, 34);
}

/* On a tree whose snapshot is bigger than snapshot_log_bytes, the next snapshot waits
 * for half an image of log, however many txns come (engine_snapshot_due). */
static void test_engine_snapshot__big_tree_waits_for_half_an_image_of_log(void **state)
{
    struct engine_options options = {
        .data_dir = data_dir, .tick_ms = 100, .snapshot_every = 10, .snapshot_log_bytes = 2000};
    struct engine *e = reopen_with(state, &options);
    char value[301];
    memset(value, 'v', 300);
    value[300] = 0;
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/big", NULL, 0), &o), 0);
    run_jobs();
    for (int i = 0; i < 10; i++) {
        assert_int_equal(submit(e, 0, op_create("/big/n-", value, ENGINE_CREATE_SEQUENTIAL), &o),
                         0);
        run_jobs();
    }
    /* Small txns from here. The first snapshot after the big creates holds them (an
     * image of more than 3,000 bytes, over snapshot_log_bytes); from it, count the
     * small txns until the next. Without the rule it would come after 10 (by count). */
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_true(stats.snapshots_written >= 1);
    uint64_t written = stats.snapshots_written;
    int small = 0;
    for (int round = 0; round < 2; round++) {
        small = 0;
        while (stats.snapshots_written == written && small < 500) {
            assert_int_equal(submit(e, 0, op_create("/big/t-", NULL, ENGINE_CREATE_SEQUENTIAL), &o),
                             0);
            run_jobs();
            small++;
            engine_stats_get(e, &stats);
        }
        assert_int_equal(stats.snapshots_written, written + 1);
        written = stats.snapshots_written;
    }
    assert_true(small > 10);  /* held back past snapshot_every */
    assert_true(small < 500); /* but it does come, once the log is there */
}

/* One snapshot is written at a time. Writes that make the next one due while one is
 * being written must not have to wait for yet another write: when the one in flight
 * ends, the due one starts (a burst that ended meanwhile would otherwise leave its txns
 * only in the log, however long the server then stays idle). */
static void test_engine_snapshot__one_due_while_another_is_written_starts_when_it_ends(void **state)
{
    struct engine_options options = {.data_dir = data_dir, .tick_ms = 100, .snapshot_every = 10};
    struct engine *e = reopen_with(state, &options);
    struct outcome o = {0};
    assert_int_equal(submit(e, 0, op_create("/q", NULL, 0), &o), 0);
    run_jobs();
    /* Write, one batch at a time, until a snapshot job is queued, and hold it there. */
    while (fake_job_count == 0) {
        assert_int_equal(submit(e, 0, op_create("/q/n-", "d", ENGINE_CREATE_SEQUENTIAL), &o), 0);
        assert_int_equal(fake_job_count, 1);
        run_job_at(0); /* the log batch; applying it may queue the snapshot */
    }
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    uint64_t written = stats.snapshots_written;
    /* 15 more txns while it is held: another snapshot is due by count. */
    for (int i = 0; i < 15; i++) {
        assert_int_equal(submit(e, 0, op_create("/q/n-", "d", ENGINE_CREATE_SEQUENTIAL), &o), 0);
        assert_int_equal(fake_job_count, 2);
        run_job_at(1); /* the log batch, behind the held snapshot */
        assert_int_equal(fake_job_count, 1);
    }
    uint64_t last_zxid = o.zxid;
    run_job_at(0);                       /* the held snapshot ends... */
    assert_int_equal(fake_job_count, 1); /* ...and the due one starts, with no new write */
    run_jobs();
    engine_stats_get(e, &stats);
    assert_int_equal(stats.snapshots_written, written + 2);
    assert_int_equal(stats.last_snapshot_zxid, last_zxid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_engine_submit_ops__answered_only_after_the_batch_is_durable),
        T(test_engine_submit_ops__prep_sees_writes_in_flight),
        T(test_engine_submit_ops__sequential_names_count_in_flight_creates),
        T(test_engine_submit_ops__multi_is_all_or_nothing),
        T(test_engine_submit_ops__version_checks),
        T(test_engine_submit_ops__refuses_bad_requests),
        T(test_engine_session__close_deletes_ephemerals_in_one_txn),
        T(test_engine_tick__expires_silent_sessions_only),
        T(test_engine_tick__a_stall_does_not_count_against_sessions),
        T(test_engine_session_open__timeout_is_clamped),
        T(test_engine_tick__reaps_containers_and_ttl_nodes),
        T(test_engine_open__recovers_acknowledged_state),
        T(test_engine_open__recovers_from_snapshot_and_log),
        T(test_engine_snapshot__big_tree_waits_for_half_an_image_of_log),
        T(test_engine_snapshot__one_due_while_another_is_written_starts_when_it_ends),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
