/* test_watch.c: the one-shot watch registry against ZooKeeper's documented triggers.
 *
 * The table follows the ZooKeeper Programmer's Guide, "Semantics of Watches": a data
 * watch (getData, exists) fires on created, changed and deleted of its path; a child
 * watch (getChildren) fires on deleted of its path and on a child created or deleted
 * (the "children" event of the parent). Nothing else fires either. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "watch.h"

/* ---- pending callback capture ---- */

struct pending_log {
    int calls;
    uint64_t last_session;
};

static void on_pending(void *arg, uint64_t session_id)
{
    struct pending_log *log = arg;
    log->calls++;
    log->last_session = session_id;
}

static int add(struct watch_registry *r, enum watch_kind kind, const char *path, uint64_t session)
{
    return watch_add(r, kind, path, strlen(path), session);
}

static int trigger(struct watch_registry *r, enum watch_event_type type, const char *path,
                   uint64_t zxid)
{
    return watch_trigger(r, type, path, strlen(path), zxid);
}

/* ---- the ZooKeeper trigger table ---- */

struct trigger_row {
    enum watch_kind kind;
    const char *watched;
    enum watch_event_type type;
    const char *event_path;
    bool expect_fire;
};

static const struct trigger_row trigger_table[] = {
    /* data watches: created (exists on a missing node), changed, deleted of the path */
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_CREATED, "/a", true},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_CHANGED, "/a", true},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_DELETED, "/a", true},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_CHILDREN, "/a", false},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_CREATED, "/a/b", false},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_CHANGED, "/a/b", false},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_DELETED, "/a/b", false},
    {WATCH_KIND_DATA, "/a", WATCH_EVENT_CHANGED, "/ab", false},
    {WATCH_KIND_DATA, "/a/b", WATCH_EVENT_CHANGED, "/a", false},
    {WATCH_KIND_DATA, "/a/b", WATCH_EVENT_CHILDREN, "/a", false},
    {WATCH_KIND_DATA, "/", WATCH_EVENT_CHANGED, "/", true},
    {WATCH_KIND_DATA, "/", WATCH_EVENT_CREATED, "/a", false},
    /* child watches: children of the path, deleted of the path */
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CHILDREN, "/a", true},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_DELETED, "/a", true},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CREATED, "/a", false},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CHANGED, "/a", false},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CHILDREN, "/", false},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CHILDREN, "/a/b", false},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_DELETED, "/a/b", false},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CREATED, "/a/b", false},
    {WATCH_KIND_CHILD, "/a", WATCH_EVENT_CHILDREN, "/ab", false},
    {WATCH_KIND_CHILD, "/a/b", WATCH_EVENT_CHILDREN, "/a", false},
    {WATCH_KIND_CHILD, "/", WATCH_EVENT_CHILDREN, "/", true},
};

static void test_watch_trigger__zookeeper_trigger_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof trigger_table / sizeof trigger_table[0]; i++) {
        const struct trigger_row *row = &trigger_table[i];
        struct pending_log log = {0};
        struct watch_registry *r = watch_registry_create(on_pending, &log);
        assert_non_null(r);
        assert_int_equal(add(r, row->kind, row->watched, 7), 0);
        assert_int_equal(watch_count(r), 1);
        assert_int_equal(trigger(r, row->type, row->event_path, 42), 0);
        if (watch_session_pending(r, 7) != (row->expect_fire ? 1u : 0u))
            fail_msg("row %zu: %s watch on %s, %s of %s: expected %s", i,
                     row->kind == WATCH_KIND_DATA ? "data" : "child", row->watched,
                     watch_event_type_name(row->type), row->event_path,
                     row->expect_fire ? "an event" : "none");
        assert_int_equal(log.calls, row->expect_fire ? 1 : 0);
        /* a fired watch is gone (one-shot); one that did not fire is still there */
        assert_int_equal(watch_count(r), row->expect_fire ? 0u : 1u);
        struct watch_event *events = NULL;
        size_t n = watch_session_take(r, 7, &events);
        if (row->expect_fire) {
            assert_int_equal(n, 1);
            assert_int_equal(events[0].type, row->type);
            assert_int_equal(events[0].zxid, 42);
            assert_string_equal(events[0].path, row->event_path);
            assert_int_equal(events[0].path_length, strlen(row->event_path));
            assert_int_equal(log.last_session, 7);
        } else {
            assert_int_equal(n, 0);
            assert_null(events);
        }
        watch_events_free(events, n);
        watch_registry_destroy(r);
    }
}

static void test_watch_event_type_name__stable_names(void **state)
{
    (void)state;
    assert_string_equal(watch_event_type_name(WATCH_EVENT_CREATED), "created");
    assert_string_equal(watch_event_type_name(WATCH_EVENT_DELETED), "deleted");
    assert_string_equal(watch_event_type_name(WATCH_EVENT_CHANGED), "changed");
    assert_string_equal(watch_event_type_name(WATCH_EVENT_CHILDREN), "children");
}

/* ---- one-shot, dedup, both tables ---- */

static void test_watch_trigger__fires_once(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 10), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 11), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_DELETED, "/a", 12), 0);
    struct watch_event *events;
    size_t n = watch_session_take(r, 1, &events);
    assert_int_equal(n, 1);
    assert_int_equal(events[0].zxid, 10);
    assert_int_equal(events[0].type, WATCH_EVENT_CHANGED);
    watch_events_free(events, n);
    /* registering again arms it again */
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_DELETED, "/a", 13), 0);
    n = watch_session_take(r, 1, &events);
    assert_int_equal(n, 1);
    assert_int_equal(events[0].zxid, 13);
    assert_int_equal(events[0].type, WATCH_EVENT_DELETED);
    watch_events_free(events, n);
    watch_registry_destroy(r);
}

static void test_watch_add__twice_is_one_watch(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(watch_count(r), 1);
    /* a child watch on the same path is a different watch, as is another session's */
    assert_int_equal(add(r, WATCH_KIND_CHILD, "/a", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 2), 0);
    assert_int_equal(watch_count(r), 3);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 5), 0);
    assert_int_equal(watch_session_pending(r, 1), 1);
    assert_int_equal(watch_session_pending(r, 2), 1);
    assert_int_equal(watch_count(r), 1); /* the child watch is left */
    /* one removal removes the one registration */
    assert_int_equal(watch_remove(r, WATCH_KIND_CHILD, "/a", 2, 1), 0);
    assert_int_equal(watch_count(r), 0);
    watch_registry_destroy(r);
}

static void test_watch_trigger__deleted_with_data_and_child_watch_is_one_event(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/n", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_CHILD, "/n", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_CHILD, "/n", 2), 0); /* child only */
    assert_int_equal(add(r, WATCH_KIND_DATA, "/n", 3), 0);  /* data only */
    assert_int_equal(watch_count(r), 4);
    assert_int_equal(trigger(r, WATCH_EVENT_DELETED, "/n", 9), 0);
    assert_int_equal(watch_count(r), 0);
    for (uint64_t s = 1; s <= 3; s++) {
        struct watch_event *events;
        size_t n = watch_session_take(r, s, &events);
        assert_int_equal(n, 1);
        assert_int_equal(events[0].type, WATCH_EVENT_DELETED);
        assert_string_equal(events[0].path, "/n");
        assert_int_equal(events[0].zxid, 9);
        watch_events_free(events, n);
    }
    watch_registry_destroy(r);
}

static void test_watch_trigger__events_queue_in_order(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/x", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_CHILD, "/", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/y", 1), 0);
    /* create /x: created /x, children / ; then set /y */
    assert_int_equal(trigger(r, WATCH_EVENT_CREATED, "/x", 3), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHILDREN, "/", 3), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/y", 4), 0);
    struct watch_event *events;
    size_t n = watch_session_take(r, 1, &events);
    assert_int_equal(n, 3);
    assert_int_equal(events[0].type, WATCH_EVENT_CREATED);
    assert_string_equal(events[0].path, "/x");
    assert_int_equal(events[1].type, WATCH_EVENT_CHILDREN);
    assert_string_equal(events[1].path, "/");
    assert_int_equal(events[1].zxid, 3);
    assert_int_equal(events[2].type, WATCH_EVENT_CHANGED);
    assert_string_equal(events[2].path, "/y");
    assert_int_equal(events[2].zxid, 4);
    watch_events_free(events, n);
    watch_registry_destroy(r);
}

/* ---- removal, session end ---- */

static void test_watch_remove__then_no_watch(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 2), 0);
    assert_int_equal(watch_remove(r, WATCH_KIND_DATA, "/a", 2, 1), 0);
    assert_int_equal(watch_count(r), 1);
    assert_int_equal(watch_remove(r, WATCH_KIND_DATA, "/a", 2, 1), CORRAL_E_NO_NODE);
    /* wrong kind, wrong path, unknown session: no such watch */
    assert_int_equal(watch_remove(r, WATCH_KIND_CHILD, "/a", 2, 2), CORRAL_E_NO_NODE);
    assert_int_equal(watch_remove(r, WATCH_KIND_DATA, "/b", 2, 2), CORRAL_E_NO_NODE);
    assert_int_equal(watch_remove(r, WATCH_KIND_DATA, "/a", 2, 99), CORRAL_E_NO_NODE);
    assert_int_equal(watch_count(r), 1);
    /* the removed watch does not fire; the other does */
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 4), 0);
    assert_int_equal(watch_session_pending(r, 1), 0);
    assert_int_equal(watch_session_pending(r, 2), 1);
    assert_int_equal(watch_remove(r, WATCH_KIND_DATA, "/a", 2, 2), CORRAL_E_NO_NODE);
    watch_registry_destroy(r);
}

static void test_watch_session_drop__removes_watches_and_pending_events(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_CHILD, "/b", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/c", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 2), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/c", 3), 0);
    assert_int_equal(watch_session_pending(r, 1), 1);
    assert_int_equal(watch_count(r), 3);
    watch_session_drop(r, 1);
    assert_int_equal(watch_session_pending(r, 1), 0);
    assert_int_equal(watch_count(r), 1);
    struct watch_event *events = (struct watch_event *)&events; /* must be reset to NULL */
    assert_int_equal(watch_session_take(r, 1, &events), 0);
    assert_null(events);
    /* its watches no longer fire; the other session's does */
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 4), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_DELETED, "/b", 5), 0);
    assert_int_equal(watch_session_pending(r, 1), 0);
    assert_int_equal(watch_session_pending(r, 2), 1);
    assert_int_equal(watch_count(r), 0);
    watch_session_drop(r, 1);  /* twice: harmless */
    watch_session_drop(r, 77); /* unknown: harmless */
    assert_int_equal(watch_remove(r, WATCH_KIND_CHILD, "/b", 2, 1), CORRAL_E_NO_NODE);
    watch_registry_destroy(r);
}

/* ---- pending callback, take ---- */

static void test_watch_trigger__pending_callback_only_on_empty_to_non_empty(void **state)
{
    (void)state;
    struct pending_log log = {0};
    struct watch_registry *r = watch_registry_create(on_pending, &log);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 5), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/b", 5), 0);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/c", 5), 0);
    assert_int_equal(log.calls, 0); /* registering is not an event */
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 1), 0);
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.last_session, 5);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/b", 2), 0);
    assert_int_equal(log.calls, 1); /* already non-empty */
    assert_int_equal(watch_session_pending(r, 5), 2);
    struct watch_event *events;
    size_t n = watch_session_take(r, 5, &events);
    assert_int_equal(n, 2);
    watch_events_free(events, n);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/c", 3), 0);
    assert_int_equal(log.calls, 2); /* empty again, then non-empty */
    /* a trigger nobody watches calls nothing */
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/zzz", 4), 0);
    assert_int_equal(log.calls, 2);
    n = watch_session_take(r, 5, &events);
    watch_events_free(events, n);
    watch_registry_destroy(r);
}

static void test_watch_session_take__transfers_ownership_and_empties(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(add(r, WATCH_KIND_DATA, "/a", 1), 0);
    assert_int_equal(add(r, WATCH_KIND_CHILD, "/a", 1), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 1), 0);
    assert_int_equal(trigger(r, WATCH_EVENT_CHILDREN, "/a", 2), 0);
    struct watch_event *events;
    size_t n = watch_session_take(r, 1, &events);
    assert_int_equal(n, 2);
    assert_int_equal(watch_session_pending(r, 1), 0);
    struct watch_event *again = (struct watch_event *)&again;
    assert_int_equal(watch_session_take(r, 1, &again), 0);
    assert_null(again);
    /* the events outlive the registry: they are the caller's */
    watch_registry_destroy(r);
    assert_string_equal(events[0].path, "/a");
    assert_int_equal(events[0].type, WATCH_EVENT_CHANGED);
    assert_int_equal(events[1].type, WATCH_EVENT_CHILDREN);
    assert_int_equal(events[1].zxid, 2);
    watch_events_free(events, n);
}

static void test_watch_registry_destroy__frees_undelivered_events(void **state)
{
    (void)state;
    /* ASan's leak check is the assertion here */
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    for (uint64_t s = 1; s <= 50; s++) {
        assert_int_equal(add(r, WATCH_KIND_DATA, "/a", s), 0);
        assert_int_equal(add(r, WATCH_KIND_CHILD, "/b", s), 0);
    }
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/a", 1), 0);
    assert_int_equal(watch_count(r), 50);
    watch_registry_destroy(r);
    watch_registry_destroy(NULL);
}

/* ---- scale, counts ---- */

static void test_watch_trigger__ten_thousand_sessions_on_one_path(void **state)
{
    (void)state;
    struct pending_log log = {0};
    struct watch_registry *r = watch_registry_create(on_pending, &log);
    enum { SESSIONS = 10000 };
    for (uint64_t s = 1; s <= SESSIONS; s++)
        assert_int_equal(add(r, WATCH_KIND_DATA, "/hot", s), 0);
    assert_int_equal(watch_count(r), SESSIONS);
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/hot", 77), 0);
    assert_int_equal(watch_count(r), 0);
    assert_int_equal(log.calls, SESSIONS);
    for (uint64_t s = 1; s <= SESSIONS; s++) {
        struct watch_event *events;
        size_t n = watch_session_take(r, s, &events);
        if (n != 1 || events[0].zxid != 77 || events[0].type != WATCH_EVENT_CHANGED ||
            strcmp(events[0].path, "/hot") != 0)
            fail_msg("session %" PRIu64 " got %zu events", s, n);
        watch_events_free(events, n);
    }
    assert_int_equal(trigger(r, WATCH_EVENT_CHANGED, "/hot", 78), 0);
    assert_int_equal(watch_session_pending(r, 1), 0);
    watch_registry_destroy(r);
}

static void test_watch_count__counts_registrations(void **state)
{
    (void)state;
    struct watch_registry *r = watch_registry_create(NULL, NULL);
    assert_int_equal(watch_count(r), 0);
    char path[32];
    for (int i = 0; i < 3000; i++) { /* past the initial 1024 buckets: the map grows */
        snprintf(path, sizeof path, "/n%d", i);
        assert_int_equal(add(r, WATCH_KIND_DATA, path, (uint64_t)(i % 7) + 1), 0);
        assert_int_equal(add(r, WATCH_KIND_CHILD, path, (uint64_t)(i % 5) + 1), 0);
    }
    assert_int_equal(watch_count(r), 6000);
    for (int i = 0; i < 3000; i += 2) {
        snprintf(path, sizeof path, "/n%d", i);
        assert_int_equal(trigger(r, WATCH_EVENT_DELETED, path, (uint64_t)i + 1), 0);
    }
    assert_int_equal(watch_count(r), 3000);
    /* every odd path still fires for its session after the growth */
    for (int i = 1; i < 3000; i += 2) {
        snprintf(path, sizeof path, "/n%d", i);
        assert_int_equal(
            watch_remove(r, WATCH_KIND_DATA, path, strlen(path), (uint64_t)(i % 7) + 1), 0);
    }
    assert_int_equal(watch_count(r), 1500);
    size_t pending = 0;
    for (uint64_t s = 1; s <= 7; s++)
        pending += watch_session_pending(r, s);
    /* 1500 deletes; a session with both watches on a path hears it once */
    size_t expected = 0;
    for (int i = 0; i < 3000; i += 2)
        expected += (i % 7) + 1 == (i % 5) + 1 ? 1 : 2;
    assert_int_equal(pending, expected);
    watch_registry_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watch_trigger__zookeeper_trigger_table),
        cmocka_unit_test(test_watch_event_type_name__stable_names),
        cmocka_unit_test(test_watch_trigger__fires_once),
        cmocka_unit_test(test_watch_add__twice_is_one_watch),
        cmocka_unit_test(test_watch_trigger__deleted_with_data_and_child_watch_is_one_event),
        cmocka_unit_test(test_watch_trigger__events_queue_in_order),
        cmocka_unit_test(test_watch_remove__then_no_watch),
        cmocka_unit_test(test_watch_session_drop__removes_watches_and_pending_events),
        cmocka_unit_test(test_watch_trigger__pending_callback_only_on_empty_to_non_empty),
        cmocka_unit_test(test_watch_session_take__transfers_ownership_and_empties),
        cmocka_unit_test(test_watch_registry_destroy__frees_undelivered_events),
        cmocka_unit_test(test_watch_trigger__ten_thousand_sessions_on_one_path),
        cmocka_unit_test(test_watch_count__counts_registrations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
