/* main.c: corrald, the wiring of the server: options, logger, the engine's host
 * (clock, randomness, worker pool), the HTTP server, the tick timer and graceful
 * shutdown, all on one libuv loop thread. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>

#include <uv.h>

#include "config.h"
#include "engine.h"
#include "http.h"
#include "transport.h"

/* The engine's channels are the transport's, by number. */
_Static_assert((int)ENGINE_CHANNEL_RAFT == (int)TRANSPORT_CHANNEL_RAFT, "channel numbers");
_Static_assert((int)ENGINE_CHANNEL_SNAPSHOT == (int)TRANSPORT_CHANNEL_SNAPSHOT, "channel numbers");
_Static_assert((int)ENGINE_CHANNEL_FORWARD == (int)TRANSPORT_CHANNEL_FORWARD, "channel numbers");
_Static_assert((int)ENGINE_CHANNEL_REPLY == (int)TRANSPORT_CHANNEL_REPLY, "channel numbers");
_Static_assert((int)ENGINE_CHANNEL_SESSION == (int)TRANSPORT_CHANNEL_SESSION, "channel numbers");

/* The engine's clock granularity: Raft heartbeats are 50 ms by default. */
#define CORRALD_TICK_MS 10
#define CORRALD_SHUTDOWN_POLL_MS 20

/* Everything main owns, passed to callbacks as their context. */
struct corrald {
    uv_loop_t *loop;
    struct config config;
    struct engine *engine;
    struct api_server *server;
    struct transport *transport; /* quorum mode only */
    uv_timer_t tick_timer;
    uv_prepare_t flush_prepare; /* before the loop blocks: start the batched log write */
    uv_check_t flush_check;     /* after the loop's I/O callbacks: the same */
    uv_timer_t shutdown_timer;
    uv_timer_t wake_timer; /* engine_host.wake_soon: after the HTTP layer's sends */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    bool stopping;
    uint64_t shutdown_started_ms;
};

/* ---- logging: "2026-11-25T12:00:00.123Z INFO  message" on stderr ---- */

static void corrald_log(void *data, int level, const char *message)
{
    const struct corrald *d = data;
    if (d != NULL && level < d->config.log_level)
        return;
    static const char *const names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %s %s\n", when, ts.tv_nsec / 1000000,
            names[level < 0   ? 0
                  : level > 3 ? 3
                              : level],
            message);
}

static void corrald_logf(struct corrald *d, int level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void corrald_logf(struct corrald *d, int level, const char *format, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    corrald_log(d, level, message);
}

/* ---- the engine's host ---- */

static int64_t corrald_wall_ms(void *data)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t corrald_monotonic_ms(void *data)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void corrald_random_bytes(void *data, void *buf, size_t length)
{
    uint8_t *p = buf;
    while (length > 0) {
        ssize_t n = getrandom(p, length, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* getrandom cannot fail on Linux >= 3.17 once the pool is seeded; a
             * session id from a broken generator would be worse than stopping. */
            corrald_log(data, 3, "getrandom failed; aborting");
            abort();
        }
        p += n;
        length -= (size_t)n;
    }
}

/* A run_blocking job; allocated per call, freed in the after-work callback. */
struct corrald_job {
    uv_work_t req;
    void (*work)(void *arg);
    void (*done)(void *arg);
    void *arg;
};

/* Names each of libuv's pool threads once, on its first job, so that `top -H` and
 * /proc/PID/task/TID/comm tell the log's writers and the snapshot writer ("corral-worker")
 * from the event loop, which keeps the process's name. libuv creates the pool and has no
 * hook of its own for it. */
static _Thread_local bool corrald_worker_named;

static void corrald_job_work(uv_work_t *req)
{
    struct corrald_job *job = req->data;
    if (!corrald_worker_named) {
        corrald_worker_named = true;
        (void)pthread_setname_np(pthread_self(), "corral-worker"); /* cosmetic: may fail */
    }
    job->work(job->arg);
}

static void corrald_job_after(uv_work_t *req, int status)
{
    struct corrald_job *job = req->data;
    /* status is UV_ECANCELED only for uv_cancel, which we never call. */
    void (*done)(void *) = job->done;
    void *arg = job->arg;
    free(job);
    done(arg);
}

static int corrald_run_blocking(void *data, void (*work)(void *arg), void (*done)(void *arg),
                                void *arg)
{
    struct corrald *d = data;
    struct corrald_job *job = malloc(sizeof *job);
    if (job == NULL)
        return -ENOMEM;
    job->work = work;
    job->done = done;
    job->arg = arg;
    job->req.data = job;
    int rc = uv_queue_work(d->loop, &job->req, corrald_job_work, corrald_job_after);
    if (rc != 0) {
        free(job);
        return rc; /* libuv errors are negative errno values */
    }
    return 0;
}

/* ---- quorum mode: the transport between members ---- */

static void corrald_peer_stats(void *data, struct api_peer_stats *out)
{
    struct corrald *d = data;
    if (d->transport == NULL)
        return; /* not started yet, or stopped: the counters stay 0 */
    struct transport_stats ts;
    transport_stats_get(d->transport, &ts);
    out->frames_sent = ts.frames_sent;
    out->frames_received = ts.frames_received;
    out->frames_rejected = ts.frames_rejected;
    out->messages_dropped = ts.messages_dropped;
}

static void corrald_send(void *data, uint64_t to, enum engine_channel channel, const void *bytes,
                         size_t length)
{
    struct corrald *d = data;
    if (d->transport != NULL)
        transport_send(d->transport, to, (enum transport_channel)channel, bytes, length);
}

static void corrald_on_peer_message(void *arg, uint64_t from, enum transport_channel channel,
                                    const uint8_t *data, size_t length)
{
    struct corrald *d = arg;
    if (d->engine != NULL)
        engine_receive(d->engine, from, (enum engine_channel)channel, data, length);
}

static int corrald_transport_start(struct corrald *d, char *error, size_t error_size)
{
    struct transport_options to = {
        .loop = d->loop,
        .self_id = d->config.id,
        .member_count = d->config.member_count,
        .on_receive = corrald_on_peer_message,
        .arg = d,
        /* A snapshot for a lagging member travels as one message: the queue must hold
         * it whole while the pipe drains (1,000,000 small znodes make ~165 MB). Raft's
         * own messages are small and resent, so stale ones queued for a member that is
         * down cost memory, not correctness. */
        .queue_limit_bytes = (size_t)512 * 1024 * 1024,
    };
    for (uint32_t i = 0; i < d->config.member_count; i++) {
        to.members[i].id = d->config.members[i].id;
        snprintf(to.members[i].address, sizeof to.members[i].address, "tcp://%s",
                 d->config.members[i].peer);
    }
    return transport_start(&to, &d->transport, error, error_size);
}

static void corrald_on_transport_closed(void *arg)
{
    struct corrald *d = arg;
    d->transport = NULL;
}

/* ---- timers, signals, shutdown ---- */

static void corrald_on_tick(uv_timer_t *t)
{
    struct corrald *d = t->data;
    engine_tick(d->engine);
}

static void corrald_on_wake(uv_timer_t *t)
{
    struct corrald *d = t->data;
    if (d->engine != NULL)
        engine_waiters_flush(d->engine);
}

/* A zero-delay timer started now runs after the ones already due, among them the HTTP
 * layer's run that sends the answers just queued (timers due at the same time run in
 * the order they were started). */
static void corrald_wake_soon(void *data)
{
    struct corrald *d = data;
    uv_timer_start(&d->wake_timer, corrald_on_wake, 0, 0);
}

/* The log write of a loop turn's requests (and, in a quorum, the APPEND to each
 * follower, which goes with the log write that takes them) starts in engine_flush,
 * called at two points of every libuv loop turn:
 * - check, right after the poll's I/O callbacks, for requests read there;
 * - prepare, right before the poll blocks, for requests read in a timer callback: the
 *   HTTP layer's runs after a resume are timers, and libmicrohttpd reads a connection's
 *   next request in the same run that sends the previous answer (always so for a
 *   pipelined request). With the check alone such a request sat in memory while the
 *   poll slept until the next event, often the 10 ms tick: 100 pipelined sets on one
 *   connection took 1.0 s instead of ~50 ms (strace: epoll_wait(.., 9) right after the
 *   recvfrom of the PUT).
 * engine_flush with nothing pending does nothing, so the second call costs nothing. */
static void corrald_flush(struct corrald *d)
{
    if (d->engine != NULL)
        engine_flush(d->engine);
}

static void corrald_on_flush_check(uv_check_t *c)
{
    corrald_flush(c->data);
}

static void corrald_on_flush_prepare(uv_prepare_t *p)
{
    corrald_flush(p->data);
}

static void corrald_on_server_closed(void *arg)
{
    struct corrald *d = arg;
    d->server = NULL;
    engine_close(d->engine);
    d->engine = NULL;
    if (d->transport != NULL)
        transport_stop(d->transport, corrald_on_transport_closed, d);
    uv_close((uv_handle_t *)&d->tick_timer, NULL);
    uv_close((uv_handle_t *)&d->flush_check, NULL);
    uv_close((uv_handle_t *)&d->flush_prepare, NULL);
    uv_close((uv_handle_t *)&d->shutdown_timer, NULL);
    uv_close((uv_handle_t *)&d->wake_timer, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    corrald_log(d, 1, "corrald stopped");
}

/* Polls until the engine has nothing in flight and no request waits for it; only
 * then can the HTTP daemon stop (no parked connections) and the engine close. */
static void corrald_on_shutdown_poll(uv_timer_t *t)
{
    struct corrald *d = t->data;
    if (engine_idle(d->engine) && api_server_idle(d->server)) {
        uv_timer_stop(t);
        api_server_stop(d->server, corrald_on_server_closed, d);
        return;
    }
    uint64_t waited = uv_now(d->loop) - d->shutdown_started_ms;
    if (waited > 0 && waited % 5000 < CORRALD_SHUTDOWN_POLL_MS)
        corrald_log(d, 2, "shutdown: still waiting for writes in flight");
}

static void corrald_on_signal(uv_signal_t *s, int signum)
{
    struct corrald *d = s->data;
    if (d->stopping)
        return;
    d->stopping = true;
    corrald_logf(d, 1, "signal %d: shutting down", signum);
    engine_shutdown_begin(d->engine);
    api_server_shutdown_begin(d->server);
    d->shutdown_started_ms = uv_now(d->loop);
    uv_timer_start(&d->shutdown_timer, corrald_on_shutdown_poll, 0, CORRALD_SHUTDOWN_POLL_MS);
}

/* Many keep-alive connections need many fds: lift the soft limit to the hard one. */
static void corrald_nofile_raise(struct corrald *d)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            corrald_logf(d, 2, "cannot raise RLIMIT_NOFILE: %s", strerror(errno));
    }
    if (rl.rlim_cur < (rlim_t)d->config.max_connections + 64)
        corrald_logf(d, 2, "open file limit %llu is below --max-connections %" PRIu32 " + 64",
                     (unsigned long long)rl.rlim_cur, d->config.max_connections);
}

/* --scheduling-policy batch, and why it is not the default. A write is handed between
 * threads: the loop thread parses it and appends it to the log's pending batch, a worker
 * thread writes and syncs the batch, the loop answers; in a cluster, nanomsg's thread
 * also carries each APPEND and its answer. Under the normal policy a thread that wakes
 * (a worker whose batch is synced, nanomsg's thread with a message, another member on
 * the same core) preempts the busy loop thread, so the loop stops midway through the
 * requests at hand and batches come out smaller. SCHED_BATCH (sched(7)) is the same
 * fair scheduler without that wake-up preemption: the woken thread runs when the busy
 * one blocks or its slice ends. Measured with three members on one core, 64 writers:
 * 24,000 sets/s against 19,900 (medians of 6 runs; followers 4-5 us per set against
 * 7-8); standalone, the same throughput. But a SCHED_BATCH thread does not preempt
 * anyone else's either: beside a busy program on the same core, every wake-up waited
 * for the scheduler's tick, and one client's reads took 4.0 ms instead of 0.06 (250
 * against 8,300 per second), its sets 13.8 ms instead of 0.24-0.34. A coordination
 * service must not fall 60x behind because a neighbour is busy, so normal is the
 * default and batch is for cores that run nothing but corral.
 * Threads created later (libuv's pool, nanomsg's worker) inherit the policy, so it is
 * set before any of them exists; the snapshot child sets its own (SCHED_IDLE in
 * engine.c: a SCHED_BATCH waker preempts only such a task). */
static void corrald_scheduling_apply(struct corrald *d)
{
    if (d->config.scheduling_policy != CONFIG_SCHEDULING_BATCH)
        return;
    struct sched_param param = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_BATCH, &param) != 0)
        corrald_logf(d, 2, "cannot set scheduling policy batch (running as normal): %s",
                     strerror(errno));
}

int main(int argc, char **argv)
{
    static struct corrald corrald; /* static only for its size; passed by pointer */
    struct corrald *d = &corrald;
    config_defaults(&d->config);
    enum config_parse_result parsed = config_parse(&d->config, argc, argv, stdout, stderr);
    if (parsed == CONFIG_PARSE_HELP)
        return 0;
    if (parsed == CONFIG_PARSE_ERROR)
        return 2;
    char error[256];
    if (config_cluster_resolve(&d->config, error, sizeof error) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], error);
        return 2;
    }

    corrald_scheduling_apply(d);
    /* The libuv pool is global and created on first use: size it before any uv work. */
    setenv("UV_THREADPOOL_SIZE", "4", 1);
    /* External MHD mode does not block SIGPIPE; a write to a closed socket must fail
     * with EPIPE, not kill the server. */
    signal(SIGPIPE, SIG_IGN);
    corrald_nofile_raise(d);
    d->loop = uv_default_loop();

    struct engine_options eo = {
        .data_dir = d->config.data_dir,
        .max_data_bytes = d->config.max_data_bytes,
        .tick_ms = d->config.tick_ms,
        .min_session_timeout_ms = d->config.min_session_timeout_ms,
        .max_session_timeout_ms = d->config.max_session_timeout_ms,
        .snapshot_every = d->config.snapshot_every,
        .snapshots_keep = d->config.snapshots_keep,
        .snapshot_inline_bytes = d->config.snapshot_inline_bytes,
        .reap_interval_ms = d->config.container_check_ms,
        .wal_segment_bytes = d->config.wal_segment_bytes,
        .wal_batches_in_flight = d->config.wal_batches_in_flight,
        .min_free_disk_bytes = d->config.min_free_disk_bytes,
        .history_events = d->config.history_events,
        .history_bytes = d->config.history_bytes,
        .member_id = d->config.id ? d->config.id : 1,
        .member_count = d->config.member_count,
        .heartbeat_ms = d->config.heartbeat_ms,
        .election_timeout_ms = d->config.election_timeout_ms,
        .request_timeout_ms = d->config.request_timeout_ms,
    };
    for (uint32_t i = 0; i < d->config.member_count; i++)
        eo.members[i] = d->config.members[i].id;
    struct engine_host host = {
        .data = d,
        .wall_ms = corrald_wall_ms,
        .monotonic_ms = corrald_monotonic_ms,
        .random_bytes = corrald_random_bytes,
        .run_blocking = corrald_run_blocking,
        .log = corrald_log,
        .send = d->config.member_count > 1 ? corrald_send : NULL,
        .flush_at_loop_end = true,
        .snapshot_fork = true,
        .wake_soon = corrald_wake_soon,
    };
    /* Before engine_open: recovery's replay may already ask for a wake-up. */
    uv_timer_init(d->loop, &d->wake_timer);
    d->wake_timer.data = d;
    if (d->config.member_count > 1 && corrald_transport_start(d, error, sizeof error) != 0) {
        corrald_log(d, 3, error);
        return 1;
    }
    struct engine_recovery_report report;
    memset(&report, 0, sizeof report);
    int rc = engine_open(&eo, &host, &d->engine, &report);
    if (rc != 0) {
        corrald_logf(d, 3, "cannot open the data directory %s: %s", d->config.data_dir,
                     corral_error_message(rc));
        return 1;
    }
    corrald_logf(d, 1,
                 "recovered %s: snapshot zxid %" PRIu64 ", %" PRIu32 " snapshots skipped, %" PRIu64
                 " txns replayed, zxid %" PRIu64 ", log cut %" PRIu64 " bytes in %" PRIu32
                 " segments, %" PRIu64 " nodes, %" PRIu64 " sessions, %" PRIu64 " ms",
                 d->config.data_dir, report.snapshot_zxid, report.snapshots_skipped,
                 report.replayed, report.zxid, report.wal_cut_bytes, report.wal_cut_segments,
                 report.nodes, report.sessions, report.elapsed_ms);

    struct api_server_options so = {
        .loop = d->loop,
        .engine = d->engine,
        .config = &d->config,
        .log = corrald_log,
        .log_data = d,
        .peer_stats = d->config.member_count > 1 ? corrald_peer_stats : NULL,
        .peer_stats_data = d,
    };
    if (api_server_start(&so, &d->server, error, sizeof error) != 0) {
        corrald_log(d, 3, error);
        engine_shutdown_begin(d->engine);
        /* Nothing was submitted, so the engine is idle unless recovery left work. */
        while (!engine_idle(d->engine))
            uv_run(d->loop, UV_RUN_ONCE);
        engine_close(d->engine);
        return 1;
    }

    uv_check_init(d->loop, &d->flush_check);
    d->flush_check.data = d;
    uv_check_start(&d->flush_check, corrald_on_flush_check);
    uv_prepare_init(d->loop, &d->flush_prepare);
    d->flush_prepare.data = d;
    uv_prepare_start(&d->flush_prepare, corrald_on_flush_prepare);
    uv_timer_init(d->loop, &d->tick_timer);
    d->tick_timer.data = d;
    uv_timer_start(&d->tick_timer, corrald_on_tick, CORRALD_TICK_MS, CORRALD_TICK_MS);
    uv_timer_init(d->loop, &d->shutdown_timer);
    d->shutdown_timer.data = d;
    uv_signal_init(d->loop, &d->sigterm);
    d->sigterm.data = d;
    uv_signal_start(&d->sigterm, corrald_on_signal, SIGTERM);
    uv_signal_init(d->loop, &d->sigint);
    d->sigint.data = d;
    uv_signal_start(&d->sigint, corrald_on_signal, SIGINT);

    corrald_logf(d, 1, "corrald listening on http://%s", d->config.listen);
    uv_run(d->loop, UV_RUN_DEFAULT);
    int closed = uv_loop_close(d->loop);
    if (closed != 0)
        corrald_logf(d, 2, "loop closed with handles still open: %s", uv_strerror(closed));
    return 0;
}
