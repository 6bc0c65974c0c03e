/* test_engine_watch.c: watches, the event history and parked waiters, through the
 * engine driven by a fake host (the same host as test_engine.c: blocking jobs run
 * only when the test says so, time is a variable).
 *
 * What is checked: the events each kind of txn makes and their order, exact and
 * recursive matching, paging at txn boundaries, reading back from the log when memory
 * does not reach (also across a restart), COMPACTED once the log is gone, and that
 * each kind of waiter is woken by what concerns it and nothing else. */
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

/* ---- engine life ---- */

static char data_dir[512];

static struct engine *open_with(const struct engine_options *overrides)
{
    struct engine_options options = {
        .tick_ms = 100, .snapshot_every = 1000000, .reap_interval_ms = 100};
    if (overrides)
        options = *overrides;
    options.data_dir = data_dir;
    struct engine *e = NULL;
    assert_int_equal(engine_open(&options, &host, &e, NULL), 0);
    run_jobs(); /* the cluster of one logs its term's no-op before it proposes */
    assert_true(engine_ready(e));
    return e;
}

static void close_engine(struct engine *e)
{
    run_jobs();
    assert_true(engine_idle(e));
    engine_close(e);
}

static int setup(void **state)
{
    const char *base = getenv("CORRAL_TEST_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/engine-watch-XXXXXX", base ? base : ".");
    assert_non_null(mkdtemp(data_dir));
    fake_job_count = 0;
    *state = open_with(NULL);
    return 0;
}

static int teardown(void **state)
{
    close_engine(*state);
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", data_dir);
    assert_int_equal(system(command), 0);
    return 0;
}

/* Closes the engine of *state and opens another on the same dir with options. */
static struct engine *reopen(void **state, const struct engine_options *options)
{
    close_engine(*state);
    *state = open_with(options);
    return *state;
}

/* A standalone engine is a Raft cluster of one: every engine_open elects itself and
 * appends its term's no-op, a log entry without events. After setup's open zxid 1 is
 * that no-op and the first write is zxid 2; each reopen appends one more no-op. The
 * tests write the zxids they expect as offsets from the last no-op, which noop_zxid
 * checks is exactly where the test says it is. */
static uint64_t noop_zxid(struct engine *e, uint64_t expected)
{
    assert_int_equal(engine_applied_zxid(e), expected);
    return expected;
}

/* ---- writes ---- */

struct outcome {
    int calls;
    int error;
    uint64_t zxid;
    uint64_t session_id;
};

static void on_done(void *arg, const struct engine_result *r)
{
    struct outcome *o = arg;
    o->calls++;
    o->error = r->error;
    o->zxid = r->zxid;
    o->session_id = r->session_id;
}

static struct engine_op op_create(const char *path, uint32_t flags)
{
    return (struct engine_op){.type = ENGINE_OP_CREATE,
                              .path = path,
                              .path_length = strlen(path),
                              .version = -1,
                              .create_flags = flags};
}

static struct engine_op op_set(const char *path, const char *data)
{
    return (struct engine_op){.type = ENGINE_OP_SET,
                              .path = path,
                              .path_length = strlen(path),
                              .data = data,
                              .data_length = data ? strlen(data) : 0,
                              .version = -1};
}

static struct engine_op op_delete(const char *path)
{
    return (struct engine_op){
        .type = ENGINE_OP_DELETE, .path = path, .path_length = strlen(path), .version = -1};
}

/* Submits ops as one txn (a multi when more than one), applies it, returns its zxid. */
static uint64_t write_ops(struct engine *e, uint64_t session, const struct engine_op *ops,
                          size_t count)
{
    struct outcome o = {0};
    struct engine_result error;
    int rc = engine_submit_ops(e, session, ops, count, count > 1, on_done, &o, &error);
    if (rc != 0)
        fail_msg("submit %s: %s", ops[0].path, corral_error_name(rc));
    run_jobs();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.error, 0);
    return o.zxid;
}

static uint64_t write1(struct engine *e, uint64_t session, struct engine_op op)
{
    return write_ops(e, session, &op, 1);
}

static uint64_t open_session(struct engine *e)
{
    struct outcome o = {0};
    assert_int_equal(engine_session_open(e, 1000, on_done, &o), 0);
    run_jobs();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.error, 0);
    return o.session_id;
}

/* ---- history capture ---- */

#define MAX_EVENTS 4096

struct captured {
    size_t count;
    enum watch_event_type type[MAX_EVENTS];
    uint64_t zxid[MAX_EVENTS];
    char path[MAX_EVENTS][64];
};

static int capture(void *arg, const struct engine_history_event *event)
{
    struct captured *c = arg;
    assert_true(c->count < MAX_EVENTS);
    assert_true(event->path_length < sizeof c->path[0]);
    c->type[c->count] = event->type;
    c->zxid[c->count] = event->zxid;
    memcpy(c->path[c->count], event->path, event->path_length);
    c->path[c->count][event->path_length] = '\0';
    c->count++;
    return 0;
}

static struct captured *captured_new(void)
{
    struct captured *c = calloc(1, sizeof *c);
    assert_non_null(c);
    return c;
}

static int read_history(struct engine *e, const char *path, bool recursive, uint64_t since,
                        size_t max_events, struct captured *c, uint64_t *resume)
{
    return engine_history_read(e, path, strlen(path), recursive, since, max_events, capture, c,
                               resume);
}

/* Reads everything after since in pages of page_size, following resume. */
static void read_paged(struct engine *e, const char *path, bool recursive, uint64_t since,
                       size_t page_size, struct captured *c)
{
    for (int pages = 0;; pages++) {
        assert_true(pages < 10000);
        size_t before = c->count;
        uint64_t resume = 0;
        assert_int_equal(read_history(e, path, recursive, since, page_size, c, &resume), 0);
        assert_true(resume >= since);
        if (resume == since) {
            assert_int_equal(c->count, before);
            return;
        }
        /* a page ends at a txn boundary: every event of the last txn is in it */
        if (c->count > before)
            assert_int_equal(c->zxid[c->count - 1], resume);
        since = resume;
    }
}

struct expected_event {
    uint64_t zxid;
    enum watch_event_type type;
    const char *path;
};

static void assert_events(const struct captured *c, const struct expected_event *want, size_t count)
{
    for (size_t i = 0; i < c->count && i < count; i++) {
        if (c->zxid[i] != want[i].zxid || c->type[i] != want[i].type ||
            strcmp(c->path[i], want[i].path) != 0)
            fail_msg("event %zu: got %llu %s %s, expected %llu %s %s", i,
                     (unsigned long long)c->zxid[i], watch_event_type_name(c->type[i]), c->path[i],
                     (unsigned long long)want[i].zxid, watch_event_type_name(want[i].type),
                     want[i].path);
    }
    assert_int_equal(c->count, count);
}

/* ---- wake capture ---- */

static void on_wake(void *arg)
{
    (*(int *)arg)++;
}

/* ---- history: contents and matching ---- */

static void test_engine_history_read__events_of_creates_sets_deletes_and_multi(void **state)
{
    struct engine *e = *state;
    const uint64_t b = noop_zxid(e, 1); /* the open's no-op makes no event either */
    assert_int_equal(write1(e, 0, op_create("/a", 0)), b + 1);
    assert_int_equal(write1(e, 0, op_set("/a", "v")), b + 2);
    struct engine_op multi[] = {op_create("/a/b", 0), op_create("/c", 0), op_set("/c", "w")};
    assert_int_equal(write_ops(e, 0, multi, 3), b + 3);
    assert_int_equal(write1(e, 0, op_delete("/a/b")), b + 4);
    struct engine_op check = {
        .type = ENGINE_OP_CHECK, .path = "/a", .path_length = 2, .version = -1};
    assert_int_equal(write1(e, 0, check), b + 5); /* a check makes no event */

    const struct expected_event want[] = {
        {b + 1, WATCH_EVENT_CREATED, "/a"},   {b + 1, WATCH_EVENT_CHILDREN, "/"},
        {b + 2, WATCH_EVENT_CHANGED, "/a"},   {b + 3, WATCH_EVENT_CREATED, "/a/b"},
        {b + 3, WATCH_EVENT_CHILDREN, "/a"},  {b + 3, WATCH_EVENT_CREATED, "/c"},
        {b + 3, WATCH_EVENT_CHILDREN, "/"},   {b + 3, WATCH_EVENT_CHANGED, "/c"},
        {b + 4, WATCH_EVENT_DELETED, "/a/b"}, {b + 4, WATCH_EVENT_CHILDREN, "/a"},
    };
    struct captured *c = captured_new();
    uint64_t resume = 0;
    assert_int_equal(read_history(e, "/", true, 0, 1000, c, &resume), 0);
    assert_events(c, want, 10);
    assert_int_equal(resume, b + 5);

    /* since is exclusive */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", true, b + 2, 1000, c, &resume), 0);
    assert_events(c, want + 3, 7);
    assert_int_equal(resume, b + 5);

    /* nothing after the applied zxid */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", true, b + 5, 1000, c, &resume), 0);
    assert_int_equal(c->count, 0);
    assert_int_equal(resume, b + 5);
    assert_int_equal(read_history(e, "a", true, 0, 1000, c, &resume), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(read_history(e, "/a/", false, 0, 1000, c, &resume), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(c->count, 0);
    free(c);
}

static void test_engine_history_read__exact_and_recursive_matching(void **state)
{
    struct engine *e = *state;
    const uint64_t b = noop_zxid(e, 1);
    assert_int_equal(write1(e, 0, op_create("/a", 0)), b + 1);
    assert_int_equal(write1(e, 0, op_create("/ab", 0)), b + 2);
    assert_int_equal(write1(e, 0, op_create("/a/b", 0)), b + 3);
    assert_int_equal(write1(e, 0, op_create("/a/b/c", 0)), b + 4);
    assert_int_equal(write1(e, 0, op_set("/a", "x")), b + 5);
    assert_int_equal(write1(e, 0, op_set("/a/b/c", "y")), b + 6);
    assert_int_equal(write1(e, 0, op_delete("/a/b/c")), b + 7);
    assert_int_equal(write1(e, 0, op_delete("/ab")), b + 8);
    assert_int_equal(write1(e, 0, op_delete("/a/b")), b + 9);
    assert_int_equal(write1(e, 0, op_delete("/a")), b + 10);
    struct captured *c = captured_new();
    uint64_t resume;

    const struct expected_event exact[] = {
        {b + 1, WATCH_EVENT_CREATED, "/a"},  {b + 3, WATCH_EVENT_CHILDREN, "/a"},
        {b + 5, WATCH_EVENT_CHANGED, "/a"},  {b + 9, WATCH_EVENT_CHILDREN, "/a"},
        {b + 10, WATCH_EVENT_DELETED, "/a"},
    };
    assert_int_equal(read_history(e, "/a", false, 0, 1000, c, &resume), 0);
    assert_events(c, exact, 5);
    assert_int_equal(resume, b + 10);

    const struct expected_event recursive[] = {
        {b + 1, WATCH_EVENT_CREATED, "/a"},     {b + 3, WATCH_EVENT_CREATED, "/a/b"},
        {b + 3, WATCH_EVENT_CHILDREN, "/a"},    {b + 4, WATCH_EVENT_CREATED, "/a/b/c"},
        {b + 4, WATCH_EVENT_CHILDREN, "/a/b"},  {b + 5, WATCH_EVENT_CHANGED, "/a"},
        {b + 6, WATCH_EVENT_CHANGED, "/a/b/c"}, {b + 7, WATCH_EVENT_DELETED, "/a/b/c"},
        {b + 7, WATCH_EVENT_CHILDREN, "/a/b"},  {b + 9, WATCH_EVENT_DELETED, "/a/b"},
        {b + 9, WATCH_EVENT_CHILDREN, "/a"},    {b + 10, WATCH_EVENT_DELETED, "/a"},
    };
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/a", true, 0, 1000, c, &resume), 0);
    assert_events(c, recursive, 12); /* and nothing of /ab */

    const struct expected_event ab[] = {
        {b + 2, WATCH_EVENT_CREATED, "/ab"},
        {b + 8, WATCH_EVENT_DELETED, "/ab"},
    };
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/ab", true, 0, 1000, c, &resume), 0);
    assert_events(c, ab, 2);

    /* exact "/" sees only the root's children events; recursive "/" sees all 18 */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", false, 0, 1000, c, &resume), 0);
    assert_int_equal(c->count, 4); /* create /a, /ab; delete /ab, /a */
    for (size_t i = 0; i < c->count; i++) {
        assert_int_equal(c->type[i], WATCH_EVENT_CHILDREN);
        assert_string_equal(c->path[i], "/");
    }
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", true, 0, 1000, c, &resume), 0);
    assert_int_equal(c->count, 18); /* 4 creates and 4 deletes: 2 each; 2 sets */
    /* a path nobody touched: no events, but the reader has looked at everything */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/zzz", true, 0, 1000, c, &resume), 0);
    assert_int_equal(c->count, 0);
    assert_int_equal(resume, b + 10);
    free(c);
}

static void test_engine_history_read__max_events_never_splits_a_txn(void **state)
{
    struct engine *e = *state;
    const uint64_t b = noop_zxid(e, 1);
    struct engine_op multi[] = {op_create("/m1", 0), op_create("/m2", 0), op_create("/m3", 0)};
    assert_int_equal(write_ops(e, 0, multi, 3), b + 1); /* 6 events */
    assert_int_equal(write1(e, 0, op_set("/m1", "a")), b + 2);
    assert_int_equal(write1(e, 0, op_set("/m2", "b")), b + 3);
    struct captured *c = captured_new();
    uint64_t resume = 0;
    /* the page reads past the no-op (no event) and takes the whole multi after it */
    assert_int_equal(read_history(e, "/", true, 0, 1, c, &resume), 0);
    assert_int_equal(c->count, 6); /* the whole multi, although max is 1 */
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(c->zxid[i], b + 1);
    assert_int_equal(resume, b + 1);
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", true, resume, 1, c, &resume), 0);
    assert_int_equal(c->count, 1);
    assert_string_equal(c->path[0], "/m1");
    assert_int_equal(c->type[0], WATCH_EVENT_CHANGED);
    assert_int_equal(resume, b + 2);
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", true, resume, 1, c, &resume), 0);
    assert_int_equal(c->count, 1);
    assert_string_equal(c->path[0], "/m2");
    assert_int_equal(resume, b + 3);
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/", true, resume, 1, c, &resume), 0);
    assert_int_equal(c->count, 0);
    assert_int_equal(resume, b + 3);

    /* an exact reader of /m2: the page holds the txn of its one event, no more */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/m2", false, 0, 1, c, &resume), 0);
    assert_int_equal(c->count, 1);
    assert_int_equal(c->type[0], WATCH_EVENT_CREATED);
    assert_int_equal(resume, b + 1);
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/m2", false, resume, 1, c, &resume), 0);
    assert_int_equal(c->count, 1);
    assert_int_equal(c->type[0], WATCH_EVENT_CHANGED);
    assert_int_equal(c->zxid[0], b + 3);
    assert_int_equal(resume, b + 3);

    /* pages of every size put together are the whole history, once each */
    struct captured *all = captured_new();
    assert_int_equal(read_history(e, "/", true, 0, 1000, all, &resume), 0);
    for (size_t page = 1; page <= 9; page++) {
        memset(c, 0, sizeof *c);
        read_paged(e, "/", true, 0, page, c);
        assert_int_equal(c->count, all->count);
        assert_memory_equal(c->zxid, all->zxid, all->count * sizeof all->zxid[0]);
        assert_memory_equal(c->path, all->path, all->count * sizeof all->path[0]);
    }
    free(all);
    free(c);
}

/* ---- history: from the log ---- */

/* 100 txns after zxid b: create /w, then 99 sets of /w. Events: 2 at zxid b + 1, then
 * one per zxid up to b + 100. */
static void write_hundred(struct engine *e, uint64_t b)
{
    assert_int_equal(write1(e, 0, op_create("/w", 0)), b + 1);
    for (uint64_t i = 2; i <= 100; i++)
        assert_int_equal(write1(e, 0, op_set("/w", "x")), b + i);
}

/* The first 101 events are those of write_hundred(e, b), in order, once each. */
static void assert_hundred(const struct captured *c, uint64_t b)
{
    const size_t count = 101;
    assert_true(c->count >= count);
    assert_int_equal(c->zxid[0], b + 1);
    assert_int_equal(c->type[0], WATCH_EVENT_CREATED);
    assert_int_equal(c->zxid[1], b + 1);
    assert_int_equal(c->type[1], WATCH_EVENT_CHILDREN);
    for (size_t i = 2; i < count; i++) {
        if (c->zxid[i] != b + i || c->type[i] != WATCH_EVENT_CHANGED ||
            strcmp(c->path[i], "/w") != 0)
            fail_msg("event %zu: %llu %s %s", i, (unsigned long long)c->zxid[i],
                     watch_event_type_name(c->type[i]), c->path[i]);
    }
}

static void test_engine_history_read__from_the_log_when_memory_does_not_reach(void **state)
{
    struct engine_options options = {
        .tick_ms = 100, .snapshot_every = 1000000, .history_events = 10};
    struct engine *e = reopen(state, &options);
    const uint64_t b = noop_zxid(e, 2); /* setup's no-op and the reopen's */
    write_hundred(e, b);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.history_events, 10);
    assert_int_equal(stats.history_covered_from, b + 90); /* memory holds b+91..b+100 */
    assert_int_equal(stats.log_first_zxid, 1);            /* setup's no-op */

    struct captured *c = captured_new();
    uint64_t resume = 0;
    assert_int_equal(read_history(e, "/", true, 0, 1000, c, &resume), 0);
    assert_int_equal(c->count, 101);
    assert_hundred(c, b);
    assert_int_equal(resume, b + 100);

    /* paged: pages end inside the log, at its edge and inside memory */
    for (size_t page = 1; page <= 13; page += 4) {
        memset(c, 0, sizeof *c);
        read_paged(e, "/", true, 0, page, c);
        assert_int_equal(c->count, 101);
        assert_hundred(c, b);
    }
    /* from the middle of the log */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/w", false, b + 50, 1000, c, &resume), 0);
    assert_int_equal(c->count, 50);
    assert_int_equal(c->zxid[0], b + 51);
    assert_int_equal(c->zxid[49], b + 100);
    /* right at the edge: all from memory */
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/w", false, b + 90, 1000, c, &resume), 0);
    assert_int_equal(c->count, 10);
    assert_int_equal(c->zxid[0], b + 91);
    free(c);
}

static void test_engine_history_read__memory_edge_inside_a_txn(void **state)
{
    /* 30 multis of 3 creates: 6 events a txn. Memory keeps 10 events, so its edge
     * falls inside txn 29 (covered_from = 29, 4 of its events still in memory): the
     * reader must take txn 29 whole from the log and not again from memory. */
    struct engine_options options = {
        .tick_ms = 100, .snapshot_every = 1000000, .history_events = 10};
    struct engine *e = reopen(state, &options);
    const uint64_t b = noop_zxid(e, 2); /* txn t is zxid b + t */
    char names[3][16];
    for (int t = 1; t <= 30; t++) {
        struct engine_op ops[3];
        for (int k = 0; k < 3; k++) {
            snprintf(names[k], sizeof names[k], "/t%02d%c", t, 'a' + k);
            ops[k] = op_create(names[k], 0);
        }
        assert_int_equal(write_ops(e, 0, ops, 3), b + (uint64_t)t);
    }
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.history_covered_from, b + 29);
    assert_int_equal(stats.history_events, 10);

    struct captured *c = captured_new();
    for (size_t page = 0; page <= 8; page++) {
        memset(c, 0, sizeof *c);
        if (page == 0) {
            uint64_t resume;
            assert_int_equal(read_history(e, "/", true, 0, 1000, c, &resume), 0);
            assert_int_equal(resume, b + 30);
        } else {
            read_paged(e, "/", true, 0, page, c);
        }
        assert_int_equal(c->count, 180);
        for (size_t i = 0; i < c->count; i++) {
            char want[32];
            unsigned t = (unsigned)(i / 6 + 1);
            if (i % 2 == 0)
                snprintf(want, sizeof want, "/t%02u%c", t % 100, (char)('a' + (i % 6) / 2));
            else
                snprintf(want, sizeof want, "/");
            if (c->zxid[i] != b + t || strcmp(c->path[i], want) != 0 ||
                c->type[i] != (i % 2 == 0 ? WATCH_EVENT_CREATED : WATCH_EVENT_CHILDREN))
                fail_msg("page %zu, event %zu: %llu %s %s, expected %llu %s", page, i,
                         (unsigned long long)c->zxid[i], watch_event_type_name(c->type[i]),
                         c->path[i], (unsigned long long)(b + t), want);
        }
    }
    /* an exact reader of one path of txn 29: one event, from the log */
    memset(c, 0, sizeof *c);
    uint64_t resume;
    assert_int_equal(read_history(e, "/t29c", false, 0, 1, c, &resume), 0);
    assert_int_equal(c->count, 1);
    assert_int_equal(c->zxid[0], b + 29);
    assert_int_equal(resume, b + 29);
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/t29c", false, resume, 1, c, &resume), 0);
    assert_int_equal(c->count, 0);
    assert_int_equal(resume, b + 30);
    free(c);
}

static void test_engine_history_read__before_a_restart_comes_from_the_log(void **state)
{
    struct engine *e = *state;
    const uint64_t b = noop_zxid(e, 1);
    write_hundred(e, b);
    e = reopen(state, NULL);
    const uint64_t reopened = noop_zxid(e, b + 101); /* the reopen's no-op follows them */
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.history_events, 0); /* replayed txns are not news */
    /* memory starts where the replay ended; the no-op after it has no event to keep */
    assert_int_equal(stats.history_covered_from, b + 100);
    assert_int_equal(write1(e, 0, op_set("/w", "after")), reopened + 1);

    struct captured *c = captured_new();
    uint64_t resume = 0;
    assert_int_equal(read_history(e, "/", true, 0, 1000, c, &resume), 0);
    assert_int_equal(c->count, 102);
    assert_hundred(c, b);
    assert_int_equal(c->zxid[101], reopened + 1);
    assert_int_equal(resume, reopened + 1);
    memset(c, 0, sizeof *c);
    read_paged(e, "/w", false, 0, 3, c);
    assert_int_equal(c->count, 101); /* without the children event of / */
    assert_int_equal(c->zxid[0], b + 1);
    assert_int_equal(c->zxid[100], reopened + 1);
    free(c);
}

static void test_engine_history_read__compacted_once_the_log_is_dropped(void **state)
{
    struct engine_options options = {.tick_ms = 100,
                                     .snapshot_every = 20,
                                     .snapshots_keep = 1,
                                     .wal_segment_bytes = 4096,
                                     .history_events = 2};
    struct engine *e = reopen(state, &options);
    const uint64_t b = noop_zxid(e, 2); /* create /k is b + 1, the sets b + 2 .. b + 301 */
    char data[200];
    memset(data, 'd', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    assert_int_equal(write1(e, 0, op_create("/k", 0)), b + 1);
    for (uint64_t i = 0; i < 300; i++)
        assert_int_equal(write1(e, 0, op_set("/k", data)), b + 2 + i);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_true(stats.snapshots_written > 0);
    assert_true(stats.log_first_zxid > b + 2); /* old segments went */
    /* memory (the last 2 events) does not reach back to the log's start either */
    assert_true(stats.history_covered_from > stats.log_first_zxid);

    struct captured *c = captured_new();
    uint64_t resume = 0;
    assert_int_equal(read_history(e, "/", true, b + 1, 1000, c, &resume), CORRAL_E_COMPACTED);
    assert_int_equal(c->count, 0);
    assert_int_equal(resume, engine_applied_zxid(e));
    assert_int_equal(resume, b + 301);
    /* from where the log starts, everything is there */
    uint64_t since = stats.log_first_zxid - 1;
    assert_int_equal(read_history(e, "/k", false, since, 1000, c, &resume), 0);
    assert_int_equal(c->count, b + 301 - since);
    for (size_t i = 0; i < c->count; i++)
        assert_int_equal(c->zxid[i], since + 1 + i);
    assert_int_equal(resume, b + 301);
    memset(c, 0, sizeof *c);
    assert_int_equal(read_history(e, "/k", false, since - 1, 1000, c, &resume), CORRAL_E_COMPACTED);
    free(c);
}

/* ---- waiters ---- */

static void test_engine_history_wait__woken_by_a_matching_change_only(void **state)
{
    struct engine *e = *state;
    write1(e, 0, op_create("/a", 0));
    write1(e, 0, op_create("/b", 0));
    uint64_t since = engine_applied_zxid(e);
    int exact = 0, recursive = 0, other = 0;
    struct engine_waiter *we = NULL, *wr = NULL, *wo = NULL;
    assert_int_equal(engine_history_wait(e, "/a", 2, false, since, on_wake, &exact, &we), 0);
    assert_int_equal(engine_history_wait(e, "/a", 2, true, since, on_wake, &recursive, &wr), 0);
    assert_int_equal(engine_history_wait(e, "/c", 2, true, since, on_wake, &other, &wo), 0);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 3);

    write1(e, 0, op_set("/b", "x"));   /* elsewhere */
    write1(e, 0, op_create("/ab", 0)); /* a sibling with the same prefix */
    assert_int_equal(exact + recursive + other, 0);

    write1(e, 0, op_create("/a/x", 0)); /* under /a: created /a/x, children /a */
    assert_int_equal(recursive, 1);
    assert_int_equal(exact, 1); /* the children event is on /a itself */
    assert_int_equal(other, 0);

    /* a grandchild wakes a recursive waiter only */
    int exact2 = 0, recursive2 = 0;
    since = engine_applied_zxid(e);
    assert_int_equal(engine_history_wait(e, "/a", 2, false, since, on_wake, &exact2, &we), 0);
    assert_int_equal(engine_history_wait(e, "/a", 2, true, since, on_wake, &recursive2, &wr), 0);
    write1(e, 0, op_create("/a/x/y", 0));
    assert_int_equal(recursive2, 1);
    assert_int_equal(exact2, 0);
    write1(e, 0, op_set("/a", "z"));
    assert_int_equal(exact2, 1);
    /* each waiter was called once and then freed */
    write1(e, 0, op_set("/a", "w"));
    assert_int_equal(exact + recursive + exact2 + recursive2, 4);
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 1); /* /c */
    engine_waiter_cancel(e, wo);
    assert_int_equal(other, 0);
}

static void test_engine_history_wait__woken_at_the_root_and_by_recursive_root(void **state)
{
    struct engine *e = *state;
    int root_exact = 0, root_recursive = 0;
    struct engine_waiter *w1, *w2;
    assert_int_equal(engine_history_wait(e, "/", 1, false, 0, on_wake, &root_exact, &w1), 0);
    assert_int_equal(engine_history_wait(e, "/", 1, true, 0, on_wake, &root_recursive, &w2), 0);
    write1(e, 0, op_create("/top", 0)); /* children of / */
    assert_int_equal(root_exact, 1);
    assert_int_equal(root_recursive, 1);
    root_exact = 0;
    assert_int_equal(engine_history_wait(e, "/", 1, false, 1, on_wake, &root_exact, &w1), 0);
    write1(e, 0, op_set("/top", "x")); /* not a child change */
    assert_int_equal(root_exact, 0);
    engine_waiter_cancel(e, w1);

    /* since is exclusive even ahead of the applied zxid: an event at since wakes nobody */
    int ahead = 0;
    uint64_t applied = engine_applied_zxid(e);
    assert_int_equal(engine_history_wait(e, "/top", 4, false, applied + 1, on_wake, &ahead, &w1),
                     0);
    write1(e, 0, op_set("/top", "y")); /* zxid applied + 1 */
    assert_int_equal(ahead, 0);
    write1(e, 0, op_set("/top", "z")); /* zxid applied + 2 */
    assert_int_equal(ahead, 1);
}

static void test_engine_zxid_wait__returns_1_when_reached_else_wakes_after_apply(void **state)
{
    struct engine *e = *state;
    const uint64_t b = noop_zxid(e, 1);
    assert_int_equal(write1(e, 0, op_create("/z", 0)), b + 1);
    struct engine_waiter *w = NULL;
    int woken = 0;
    assert_int_equal(engine_zxid_wait(e, 0, on_wake, &woken, &w), 1);
    assert_int_equal(engine_zxid_wait(e, b, on_wake, &woken, &w), 1);
    assert_int_equal(engine_zxid_wait(e, b + 1, on_wake, &woken, &w), 1);
    assert_null(w);
    int next = 0, later = 0;
    struct engine_waiter *w_next = NULL, *w_later = NULL;
    assert_int_equal(engine_zxid_wait(e, b + 2, on_wake, &next, &w_next), 0);
    assert_int_equal(engine_zxid_wait(e, b + 3, on_wake, &later, &w_later), 0);
    assert_non_null(w_next);
    assert_non_null(w_later);

    struct outcome o = {0};
    struct engine_result error;
    struct engine_op op = op_set("/z", "1");
    assert_int_equal(engine_submit_ops(e, 0, &op, 1, false, on_done, &o, &error), 0);
    assert_int_equal(next, 0); /* logged, not applied */
    run_jobs();
    assert_int_equal(o.calls, 1);
    assert_int_equal(next, 1);
    assert_int_equal(later, 0);
    write1(e, 0, op_set("/z", "2"));
    assert_int_equal(next, 1);
    assert_int_equal(later, 1);
    assert_int_equal(woken, 0);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 0);
}

static void test_engine_session_events_wait__woken_by_a_watch_trigger(void **state)
{
    struct engine *e = *state;
    uint64_t s = open_session(e);
    uint64_t other = open_session(e);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_DATA, "/a", 2), 0);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_CHILD, "/", 1), 0);
    assert_int_equal(engine_watch_add(e, other, WATCH_KIND_DATA, "/b", 2), 0);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.watches, 3);

    int woken = 0, other_woken = 0;
    struct engine_waiter *w = NULL, *wo = NULL;
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &woken, &w), 0);
    assert_int_equal(engine_session_events_wait(e, other, on_wake, &other_woken, &wo), 0);
    write1(e, 0, op_create("/zz", 0)); /* children of /: s's child watch */
    assert_int_equal(woken, 1);
    assert_int_equal(other_woken, 0);
    /* events are pending now: nothing to wait for */
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &woken, &w), 1);
    struct watch_event *events;
    size_t n = engine_session_events_take(e, s, &events);
    assert_int_equal(n, 1);
    assert_int_equal(events[0].type, WATCH_EVENT_CHILDREN);
    assert_string_equal(events[0].path, "/");
    assert_int_equal(events[0].zxid, engine_applied_zxid(e));
    watch_events_free(events, n);

    woken = 0;
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &woken, &w), 0);
    uint64_t z = write1(e, 0, op_create("/a", 0)); /* created /a: s's data watch (exists) */
    assert_int_equal(woken, 1);
    n = engine_session_events_take(e, s, &events);
    assert_int_equal(n, 1);
    assert_int_equal(events[0].type, WATCH_EVENT_CREATED);
    assert_string_equal(events[0].path, "/a");
    assert_int_equal(events[0].zxid, z);
    watch_events_free(events, n);
    /* one-shot: a second change of /a does not queue anything */
    write1(e, 0, op_set("/a", "x"));
    assert_int_equal(engine_session_events_take(e, s, &events), 0);
    assert_int_equal(other_woken, 0);
    engine_waiter_cancel(e, wo);

    /* watch_add for an unknown session, a bad path */
    assert_int_equal(engine_watch_add(e, 999, WATCH_KIND_DATA, "/a", 2), CORRAL_E_SESSION_EXPIRED);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_DATA, "a", 1), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(engine_watch_remove(e, s, WATCH_KIND_DATA, "/a", 2), CORRAL_E_NO_NODE);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_DATA, "/a", 2), 0);
    assert_int_equal(engine_watch_remove(e, s, WATCH_KIND_DATA, "/a", 2), 0);
}

static void test_engine_session_events_wait__woken_by_the_sessions_close(void **state)
{
    struct engine *e = *state;
    uint64_t s = open_session(e);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_DATA, "/q", 2), 0);
    int woken = 0;
    struct engine_waiter *w = NULL;
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &woken, &w), 0);
    struct outcome closed = {0};
    assert_int_equal(engine_session_close(e, s, on_done, &closed), 0);
    assert_int_equal(woken, 0); /* not before the close is applied */
    run_jobs();
    assert_int_equal(closed.calls, 1);
    assert_int_equal(woken, 1);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.watches, 0); /* its watch went with it */
    assert_int_equal(stats.waiters, 0);
    /* an ended session has nothing to wait for */
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &woken, &w), 1);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_DATA, "/q", 2), CORRAL_E_SESSION_EXPIRED);
    write1(e, 0, op_create("/q", 0));
    assert_int_equal(woken, 1);
}

static void test_engine_session_events_wait__woken_by_expiry(void **state)
{
    struct engine *e = *state;
    uint64_t s = open_session(e);
    int woken = 0;
    struct engine_waiter *w = NULL;
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &woken, &w), 0);
    for (int i = 0; i < 30 && woken == 0; i++) {
        clock_ms += 100;
        engine_tick(e);
        run_jobs();
    }
    assert_int_equal(woken, 1);
    assert_int_equal(engine_session_touch(e, s), CORRAL_E_SESSION_EXPIRED);
}

static void test_engine_waiter_cancel__frees_without_a_callback(void **state)
{
    struct engine *e = *state;
    uint64_t s = open_session(e);
    int calls = 0;
    struct engine_waiter *wz = NULL, *wh = NULL, *wr = NULL, *ws = NULL, *wh2 = NULL;
    uint64_t applied = engine_applied_zxid(e);
    assert_int_equal(engine_zxid_wait(e, applied + 1, on_wake, &calls, &wz), 0);
    assert_int_equal(engine_history_wait(e, "/a", 2, false, applied, on_wake, &calls, &wh), 0);
    assert_int_equal(engine_history_wait(e, "/a", 2, false, applied, on_wake, &calls, &wh2), 0);
    assert_int_equal(engine_history_wait(e, "/", 1, true, applied, on_wake, &calls, &wr), 0);
    assert_int_equal(engine_watch_add(e, s, WATCH_KIND_DATA, "/a", 2), 0);
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &calls, &ws), 0);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 4); /* zxid waiters are not indexed */
    engine_waiter_cancel(e, wz);
    engine_waiter_cancel(e, wh); /* one of two on the same path: the other stays */
    engine_waiter_cancel(e, wr);
    engine_waiter_cancel(e, ws);
    engine_waiter_cancel(e, NULL);
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 1);
    write1(e, 0, op_create("/a", 0));
    assert_int_equal(calls, 1); /* wh2 only */
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 0);
    /* the session's event is there for the taking, nobody was called for it */
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &calls, &ws), 1);
}

static void test_engine_shutdown_begin__wakes_every_waiter(void **state)
{
    struct engine *e = *state;
    uint64_t s = open_session(e);
    uint64_t applied = engine_applied_zxid(e);
    int zxid_calls = 0, history_calls = 0, recursive_calls = 0, session_calls = 0;
    struct engine_waiter *w;
    assert_int_equal(engine_zxid_wait(e, applied + 5, on_wake, &zxid_calls, &w), 0);
    assert_int_equal(engine_zxid_wait(e, applied + 9, on_wake, &zxid_calls, &w), 0);
    char path[32];
    for (int i = 0; i < 2000; i++) { /* enough to grow the waiter index */
        snprintf(path, sizeof path, "/p%d", i);
        assert_int_equal(
            engine_history_wait(e, path, strlen(path), false, applied, on_wake, &history_calls, &w),
            0);
    }
    assert_int_equal(engine_history_wait(e, "/", 1, true, applied, on_wake, &recursive_calls, &w),
                     0);
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &session_calls, &w), 0);
    engine_shutdown_begin(e);
    assert_int_equal(zxid_calls, 2);
    assert_int_equal(history_calls, 2000);
    assert_int_equal(recursive_calls, 1);
    assert_int_equal(session_calls, 1);
    struct engine_stats stats;
    engine_stats_get(e, &stats);
    assert_int_equal(stats.waiters, 0);
    /* after the start of the shutdown nothing parks */
    assert_int_equal(engine_zxid_wait(e, applied + 1, on_wake, &zxid_calls, &w),
                     CORRAL_E_SHUTTING_DOWN);
    assert_int_equal(engine_history_wait(e, "/", 1, true, applied, on_wake, &zxid_calls, &w),
                     CORRAL_E_SHUTTING_DOWN);
    assert_int_equal(engine_session_events_wait(e, s, on_wake, &zxid_calls, &w),
                     CORRAL_E_SHUTTING_DOWN);
    assert_int_equal(zxid_calls, 2);
}

/* ---- session close: ephemerals are deletes ---- */

static int path_compare(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_engine_session_close__ephemeral_deletes_show_in_history(void **state)
{
    struct engine *e = *state;
    uint64_t s = open_session(e);
    uint64_t watcher = open_session(e);
    write1(e, 0, op_create("/p", 0));
    write1(e, s, op_create("/p/e1", ENGINE_CREATE_EPHEMERAL));
    write1(e, s, op_create("/p/e2", ENGINE_CREATE_EPHEMERAL));
    write1(e, s, op_create("/solo", ENGINE_CREATE_EPHEMERAL));
    assert_int_equal(engine_watch_add(e, watcher, WATCH_KIND_DATA, "/p/e1", 5), 0);
    assert_int_equal(engine_watch_add(e, watcher, WATCH_KIND_CHILD, "/p", 2), 0);
    uint64_t since = engine_applied_zxid(e);
    int woken = 0;
    struct engine_waiter *w;
    assert_int_equal(engine_history_wait(e, "/p", 2, true, since, on_wake, &woken, &w), 0);

    struct outcome closed = {0};
    assert_int_equal(engine_session_close(e, s, on_done, &closed), 0);
    run_jobs();
    assert_int_equal(closed.error, 0);
    assert_int_equal(closed.zxid, since + 1);
    assert_int_equal(woken, 1);

    struct captured *c = captured_new();
    uint64_t resume;
    assert_int_equal(read_history(e, "/", true, since, 1000, c, &resume), 0);
    assert_int_equal(resume, closed.zxid);
    assert_int_equal(c->count, 6); /* deleted + children of the parent, for each */
    char deleted[3][64];
    size_t nd = 0, children_p = 0, children_root = 0;
    for (size_t i = 0; i < c->count; i++) {
        assert_int_equal(c->zxid[i], closed.zxid);
        if (c->type[i] == WATCH_EVENT_DELETED) {
            assert_true(nd < 3);
            snprintf(deleted[nd++], sizeof deleted[0], "%s", c->path[i]);
            /* each deleted is followed by the children event of its parent */
            assert_true(i + 1 < c->count);
            assert_int_equal(c->type[i + 1], WATCH_EVENT_CHILDREN);
        } else {
            assert_int_equal(c->type[i], WATCH_EVENT_CHILDREN);
            if (strcmp(c->path[i], "/p") == 0)
                children_p++;
            else if (strcmp(c->path[i], "/") == 0)
                children_root++;
        }
    }
    assert_int_equal(nd, 3);
    qsort(deleted, nd, sizeof deleted[0], path_compare);
    assert_string_equal(deleted[0], "/p/e1");
    assert_string_equal(deleted[1], "/p/e2");
    assert_string_equal(deleted[2], "/solo");
    assert_int_equal(children_p, 2);
    assert_int_equal(children_root, 1);

    /* the other session's one-shot watches fired: deleted /p/e1, children /p (once) */
    struct watch_event *events;
    size_t n = engine_session_events_take(e, watcher, &events);
    assert_int_equal(n, 2);
    size_t got_deleted = 0, got_children = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(events[i].zxid, closed.zxid);
        if (events[i].type == WATCH_EVENT_DELETED && strcmp(events[i].path, "/p/e1") == 0)
            got_deleted++;
        if (events[i].type == WATCH_EVENT_CHILDREN && strcmp(events[i].path, "/p") == 0)
            got_children++;
    }
    assert_int_equal(got_deleted, 1);
    assert_int_equal(got_children, 1);
    watch_events_free(events, n);

    /* the same events come back from the log after a restart */
    e = reopen(state, NULL);
    struct captured *again = captured_new();
    assert_int_equal(read_history(e, "/", true, since, 1000, again, &resume), 0);
    assert_int_equal(again->count, c->count);
    assert_memory_equal(again->path, c->path, c->count * sizeof c->path[0]);
    assert_memory_equal(again->type, c->type, c->count * sizeof c->type[0]);
    free(again);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_engine_history_read__events_of_creates_sets_deletes_and_multi),
        T(test_engine_history_read__exact_and_recursive_matching),
        T(test_engine_history_read__max_events_never_splits_a_txn),
        T(test_engine_history_read__from_the_log_when_memory_does_not_reach),
        T(test_engine_history_read__memory_edge_inside_a_txn),
        T(test_engine_history_read__before_a_restart_comes_from_the_log),
        T(test_engine_history_read__compacted_once_the_log_is_dropped),
        T(test_engine_history_wait__woken_by_a_matching_change_only),
        T(test_engine_history_wait__woken_at_the_root_and_by_recursive_root),
        T(test_engine_zxid_wait__returns_1_when_reached_else_wakes_after_apply),
        T(test_engine_session_events_wait__woken_by_a_watch_trigger),
        T(test_engine_session_events_wait__woken_by_the_sessions_close),
        T(test_engine_session_events_wait__woken_by_expiry),
        T(test_engine_waiter_cancel__frees_without_a_callback),
        T(test_engine_shutdown_begin__wakes_every_waiter),
        T(test_engine_session_close__ephemeral_deletes_show_in_history),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
