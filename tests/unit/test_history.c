/* test_history.c: the in-memory event ring behind the resumable watch.
 *
 * The ring's promise is `covered_from`: it holds every event with zxid >
 * covered_from. These tests check the order, the scan's starting point, both bounds,
 * growth past the initial 1024 slots and that the promise moves with what is dropped. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"
#include "watch.h"

/* ---- scan capture ---- */

#define MAX_SEEN 8192

struct seen {
    size_t count;
    uint64_t zxid[MAX_SEEN];
    uint8_t type[MAX_SEEN];
    char path[MAX_SEEN][128];
    size_t stop_at; /* return non-zero when count reaches this (0: never) */
    int stop_rc;
};

static int collect(void *arg, const struct history_event *event)
{
    struct seen *s = arg;
    assert_true(s->count < MAX_SEEN);
    s->zxid[s->count] = event->zxid;
    s->type[s->count] = event->type;
    assert_true(event->path_length < sizeof s->path[0]);
    assert_int_equal(event->path[event->path_length], '\0');
    memcpy(s->path[s->count], event->path, event->path_length + 1);
    s->count++;
    return s->stop_at && s->count == s->stop_at ? s->stop_rc : 0;
}

static int append(struct history *h, uint8_t type, const char *path, uint64_t zxid)
{
    return history_append(h, type, path, strlen(path), zxid);
}

/* Appends zxids first..last, one "/e<zxid, 5 digits>" changed event each: every
 * event has the same size. */
static void append_range(struct history *h, uint64_t first, uint64_t last)
{
    char path[16];
    for (uint64_t z = first; z <= last; z++) {
        snprintf(path, sizeof path, "/e%05llu", (unsigned long long)z);
        assert_int_equal(append(h, WATCH_EVENT_CHANGED, path, z), 0);
    }
}

/* ---- tests ---- */

static void test_history_create__covered_from_is_the_start_zxid(void **state)
{
    (void)state;
    struct history *h = history_create(100, 1 << 20, 57);
    assert_non_null(h);
    assert_int_equal(history_covered_from(h), 57);
    assert_int_equal(history_event_count(h), 0);
    assert_int_equal(history_bytes(h), 0);
    assert_int_equal(history_oldest_zxid(h), 0);
    struct seen *s = calloc(1, sizeof *s);
    assert_int_equal(history_scan(h, 0, collect, s), 0);
    assert_int_equal(s->count, 0);
    /* appending within the bounds does not move the promise */
    append_range(h, 58, 60);
    assert_int_equal(history_covered_from(h), 57);
    assert_int_equal(history_oldest_zxid(h), 58);
    free(s);
    history_destroy(h);
    history_destroy(NULL);
}

static void test_history_scan__oldest_first_in_append_order(void **state)
{
    (void)state;
    struct history *h = history_create(100, 1 << 20, 0);
    /* one txn of two events (create /a: created /a, children /) then a set */
    assert_int_equal(append(h, WATCH_EVENT_CREATED, "/a", 1), 0);
    assert_int_equal(append(h, WATCH_EVENT_CHILDREN, "/", 1), 0);
    assert_int_equal(append(h, WATCH_EVENT_CHANGED, "/a", 2), 0);
    assert_int_equal(append(h, WATCH_EVENT_DELETED, "/a", 3), 0);
    assert_int_equal(append(h, WATCH_EVENT_CHILDREN, "/", 3), 0);
    assert_int_equal(history_event_count(h), 5);
    struct seen *s = calloc(1, sizeof *s);
    assert_int_equal(history_scan(h, 0, collect, s), 0);
    assert_int_equal(s->count, 5);
    const uint64_t zxid[] = {1, 1, 2, 3, 3};
    const uint8_t type[] = {WATCH_EVENT_CREATED, WATCH_EVENT_CHILDREN, WATCH_EVENT_CHANGED,
                            WATCH_EVENT_DELETED, WATCH_EVENT_CHILDREN};
    const char *path[] = {"/a", "/", "/a", "/a", "/"};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(s->zxid[i], zxid[i]);
        assert_int_equal(s->type[i], type[i]);
        assert_string_equal(s->path[i], path[i]);
    }
    free(s);
    history_destroy(h);
}

static void test_history_scan__starts_after_since(void **state)
{
    (void)state;
    struct history *h = history_create(10000, 1 << 24, 0);
    /* 3000 events with gaps (even zxids only) and a multi-event txn at 1000 */
    for (uint64_t z = 2; z <= 6000; z += 2) {
        assert_int_equal(append(h, WATCH_EVENT_CHANGED, "/x", z), 0);
        if (z == 1000)
            assert_int_equal(append(h, WATCH_EVENT_CHILDREN, "/", z), 0);
    }
    struct seen *s = calloc(1, sizeof *s);
    const uint64_t since[] = {0, 1, 2, 999, 1000, 998, 5998, 5999, 6000, 7000};
    const size_t expect[] = {3001, 3001, 3000, 2502, 2500, 2502, 1, 1, 0, 0};
    for (size_t i = 0; i < sizeof since / sizeof since[0]; i++) {
        memset(s, 0, sizeof *s);
        assert_int_equal(history_scan(h, since[i], collect, s), 0);
        if (s->count != expect[i])
            fail_msg("since %llu: %zu events, expected %zu", (unsigned long long)since[i], s->count,
                     expect[i]);
        if (s->count > 0) {
            assert_true(s->zxid[0] > since[i]);
            /* the first one is the very next zxid held */
            uint64_t next = since[i] % 2 == 0 ? since[i] + 2 : since[i] + 1;
            assert_int_equal(s->zxid[0], next);
            assert_int_equal(s->zxid[s->count - 1], 6000);
        }
    }
    free(s);
    history_destroy(h);
}

static void test_history_scan__stops_on_non_zero(void **state)
{
    (void)state;
    struct history *h = history_create(100, 1 << 20, 0);
    append_range(h, 1, 10);
    struct seen *s = calloc(1, sizeof *s);
    s->stop_at = 3;
    s->stop_rc = 42;
    assert_int_equal(history_scan(h, 4, collect, s), 42);
    assert_int_equal(s->count, 3);
    assert_int_equal(s->zxid[0], 5);
    assert_int_equal(s->zxid[2], 7);
    /* a negative value is returned as is */
    memset(s, 0, sizeof *s);
    s->stop_at = 1;
    s->stop_rc = -7;
    assert_int_equal(history_scan(h, 0, collect, s), -7);
    assert_int_equal(s->count, 1);
    free(s);
    history_destroy(h);
}

static void test_history_append__bounded_by_events(void **state)
{
    (void)state;
    struct history *h = history_create(5, 1 << 20, 0);
    append_range(h, 1, 5);
    assert_int_equal(history_event_count(h), 5);
    assert_int_equal(history_covered_from(h), 0);
    append_range(h, 6, 8);
    assert_int_equal(history_event_count(h), 5);
    assert_int_equal(history_oldest_zxid(h), 4);
    /* the dropped events were 1..3: the ring now promises everything after 3 */
    assert_int_equal(history_covered_from(h), 3);
    struct seen *s = calloc(1, sizeof *s);
    assert_int_equal(history_scan(h, 0, collect, s), 0);
    assert_int_equal(s->count, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(s->zxid[i], 4 + i);
        char expect[16];
        snprintf(expect, sizeof expect, "/e%05zu", 4 + i);
        assert_string_equal(s->path[i], expect);
    }
    free(s);
    history_destroy(h);
}

static void test_history_append__bounded_by_bytes(void **state)
{
    (void)state;
    /* measure what one event costs (same path length throughout) */
    struct history *probe = history_create(100, 1 << 20, 0);
    append_range(probe, 1, 1);
    uint64_t one = history_bytes(probe);
    assert_true(one >= sizeof(struct history_event) + 8);
    append_range(probe, 2, 2);
    assert_int_equal(history_bytes(probe), 2 * one);
    history_destroy(probe);

    struct history *h = history_create(1000, 3 * one, 10);
    append_range(h, 1, 3);
    assert_int_equal(history_event_count(h), 3);
    assert_int_equal(history_bytes(h), 3 * one);
    assert_int_equal(history_covered_from(h), 10); /* nothing dropped: unchanged */
    append_range(h, 11, 12);
    assert_int_equal(history_event_count(h), 3);
    assert_int_equal(history_bytes(h), 3 * one);
    assert_int_equal(history_oldest_zxid(h), 3);
    /* dropped 1 and 2, both below the start promise of 10: it stays */
    assert_int_equal(history_covered_from(h), 10);
    append_range(h, 13, 14);
    assert_int_equal(history_oldest_zxid(h), 12);
    assert_int_equal(history_covered_from(h), 11); /* dropped 3 and 11 */
    assert_true(history_bytes(h) <= 3 * one);

    /* a longer path costs more and pushes out more than one short event */
    assert_int_equal(append(h, WATCH_EVENT_CHANGED, "/a-much-longer-path", 15), 0);
    assert_true(history_bytes(h) <= 3 * one);
    assert_int_equal(history_event_count(h), 2);
    assert_int_equal(history_oldest_zxid(h), 14);
    assert_int_equal(history_covered_from(h), 13);
    history_destroy(h);
}

static void test_history_append__grows_past_initial_capacity(void **state)
{
    (void)state;
    struct history *h = history_create(5000, 1 << 24, 0);
    append_range(h, 1, 3000); /* initial ring is 1024 slots */
    assert_int_equal(history_event_count(h), 3000);
    assert_int_equal(history_covered_from(h), 0);
    assert_int_equal(history_oldest_zxid(h), 1);
    struct seen *s = calloc(1, sizeof *s);
    assert_int_equal(history_scan(h, 0, collect, s), 0);
    assert_int_equal(s->count, 3000);
    for (size_t i = 0; i < 3000; i++)
        if (s->zxid[i] != i + 1)
            fail_msg("event %zu has zxid %llu", i, (unsigned long long)s->zxid[i]);
    memset(s, 0, sizeof *s);
    assert_int_equal(history_scan(h, 2500, collect, s), 0);
    assert_int_equal(s->count, 500);
    assert_int_equal(s->zxid[0], 2501);
    free(s);
    history_destroy(h);
}

static void test_history_append__wraps_then_grows(void **state)
{
    (void)state;
    /* bounded at 1000 so the ring wraps inside its first 1024 slots, then a bigger
     * ring would have to copy in ring order: check with a ring that wraps first */
    struct history *h = history_create(1000, 1 << 24, 0);
    append_range(h, 1, 2500);
    assert_int_equal(history_event_count(h), 1000);
    assert_int_equal(history_oldest_zxid(h), 1501);
    assert_int_equal(history_covered_from(h), 1500);
    struct seen *s = calloc(1, sizeof *s);
    assert_int_equal(history_scan(h, 1999, collect, s), 0);
    assert_int_equal(s->count, 501);
    for (size_t i = 0; i < s->count; i++)
        assert_int_equal(s->zxid[i], 2000 + i);
    free(s);
    history_destroy(h);

    /* A ring whose head has moved (bytes dropped its oldest, long events) and that
     * then fills its 1024 slots with short ones must grow keeping the order. */
    char long_path[101];
    long_path[0] = '/';
    memset(long_path + 1, 'l', 99);
    long_path[100] = '\0';
    struct history *probe = history_create(100, 1 << 20, 0);
    append_range(probe, 1, 1);
    uint64_t short_cost = history_bytes(probe);
    assert_int_equal(append(probe, WATCH_EVENT_CHANGED, long_path, 2), 0);
    uint64_t long_cost = history_bytes(probe) - short_cost;
    history_destroy(probe);
    assert_true(100 * long_cost < 1100 * short_cost);
    h = history_create(5000, 1100 * short_cost, 0);
    for (uint64_t z = 1; z <= 100; z++)
        assert_int_equal(append(h, WATCH_EVENT_CHANGED, long_path, z), 0);
    append_range(h, 101, 1300);
    assert_int_equal(history_event_count(h), 1100);
    assert_int_equal(history_bytes(h), 1100 * short_cost);
    assert_int_equal(history_oldest_zxid(h), 201);
    assert_int_equal(history_covered_from(h), 200);
    s = calloc(1, sizeof *s);
    assert_int_equal(history_scan(h, 0, collect, s), 0);
    assert_int_equal(s->count, 1100);
    for (size_t i = 0; i < s->count; i++)
        if (s->zxid[i] != i + 201)
            fail_msg("event %zu has zxid %llu", i, (unsigned long long)s->zxid[i]);
    memset(s, 0, sizeof *s);
    assert_int_equal(history_scan(h, 1250, collect, s), 0);
    assert_int_equal(s->count, 50);
    assert_int_equal(s->zxid[0], 1251);
    free(s);
    history_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_history_create__covered_from_is_the_start_zxid),
        cmocka_unit_test(test_history_scan__oldest_first_in_append_order),
        cmocka_unit_test(test_history_scan__starts_after_since),
        cmocka_unit_test(test_history_scan__stops_on_non_zero),
        cmocka_unit_test(test_history_append__bounded_by_events),
        cmocka_unit_test(test_history_append__bounded_by_bytes),
        cmocka_unit_test(test_history_append__grows_past_initial_capacity),
        cmocka_unit_test(test_history_append__wraps_then_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
