/* fake_host.h: an engine host for unit tests, header-only (each test is one file).
 *
 * "Blocking" jobs (WAL batches, snapshot writes) run only when the test calls
 * fake_host_run_jobs(), which lets a test hold writes between prep and apply, and check
 * that nothing is answered before its batch completes. Time is two variables the test
 * moves by hand; randomness is a fixed-seed LCG. Include after cmocka.h. */
#ifndef CORRAL_TEST_FAKE_HOST_H
#define CORRAL_TEST_FAKE_HOST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct fake_job {
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
};

static struct fake_job fake_jobs[64];
static size_t fake_job_count;
static uint64_t clock_ms = 1000000;  /* the monotonic clock */
static int64_t wall = 1700000000000; /* the wall clock (ctime, mtime) */
static uint64_t fake_random_state = 42;

static int64_t fake_wall(void *d)
{
    (void)d;
    return wall;
}

static uint64_t fake_monotonic(void *d)
{
    (void)d;
    return clock_ms;
}

static void fake_random(void *d, void *buf, size_t n)
{
    (void)d;
    for (size_t i = 0; i < n; i++) {
        fake_random_state = fake_random_state * 6364136223846793005ULL + 1442695040888963407ULL;
        ((uint8_t *)buf)[i] = (uint8_t)(fake_random_state >> 56);
    }
}

static int fake_run(void *d, void (*work)(void *), void (*done)(void *), void *arg)
{
    (void)d;
    assert_true(fake_job_count < 64);
    fake_jobs[fake_job_count++] = (struct fake_job){work, done, arg};
    return 0;
}

static void fake_log(void *d, int level, const char *message)
{
    (void)d;
    if (getenv("TEST_ENGINE_LOG"))
        fprintf(stderr, "[%d] %s\n", level, message);
}

/* Runs only the queued job at position `at`, leaving the others queued (in order): a
 * test can hold one job (a snapshot) while later ones (log batches) complete. */
static void run_job_at(size_t at)
{
    assert_true(at < fake_job_count);
    struct fake_job j = fake_jobs[at];
    memmove(fake_jobs + at, fake_jobs + at + 1, (--fake_job_count - at) * sizeof fake_jobs[0]);
    j.work(j.arg);
    j.done(j.arg);
}

/* Runs queued jobs (and those they queue) until none is left. */
static void run_jobs(void)
{
    while (fake_job_count > 0)
        run_job_at(0);
}

static const struct engine_host host = {
    .wall_ms = fake_wall,
    .monotonic_ms = fake_monotonic,
    .random_bytes = fake_random,
    .run_blocking = fake_run,
    .log = fake_log,
};

#endif
