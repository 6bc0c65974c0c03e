/* zkbench: ZooKeeper load driver for tools/bench (native protocol, C client, async API).
 *
 * One thread, one poll loop over all sessions, on libzookeeper_st: on 2 cores the
 * multi-threaded client costs about 60 us of CPU per op and becomes the bottleneck
 * (see shared ANCHORS.md section 7), the single-threaded one about 38 us.
 *
 *   zkbench -H 127.0.0.1:2181 -m get|set|create|mix [-s sessions] [-w window]
 *           [-d seconds] [-r read_pct] [-v value_bytes]
 *   zkbench -H ... -m setup              create /bench, /bench/k0..k999, /queue
 *   zkbench -H ... -m populate -n N      create /mem/p<j>/n<i> (1,000 per parent) with multis
 *   zkbench -H ... -m check -n N         exit 0 once /mem/p<last>/n<last> can be read
 *   zkbench -H ... -m watch -n WATCHERS -R rounds
 *           WATCHERS sessions each keep an exists watch on /bench/w; one more session
 *           sets /bench/w; prints the change-to-notification latency of every watcher
 *
 * Load modes keep `window` requests in flight on each of `sessions` sessions, so
 * concurrency = sessions x window, and print one line:
 *   RESULT ops=N ops_per_s=X p50_ms=.. p99_ms=.. p999_ms=.. errors=N
 * with the latencies corrected for coordinated omission the way wrk corrects those of
 * corral and etcd (samples_correct_like_wrk), so that the three tails compare.
 * The watch mode prints
 *   RESULT watchers=N rounds=R p50_ms=.. p99_ms=.. max_ms=.. ack_p50_ms=.. missed=N
 * where the latencies run from the moment the set was sent to the watch event.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- latency samples ---------------------------------------------------------- */
typedef struct {
    float *v;
    size_t n, cap;
} samples_t;

static void sample_add(samples_t *s, double ms)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort();
    }
    s->v[s->n++] = (float)ms;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* wrk corrects the latencies it reports for coordinated omission (wrk.c, stats_correct):
 * a connection that waited v for an answer could not send the requests it would have
 * sent meanwhile, one every `interval` (the run's mean time per request per connection),
 * so for every sample v of at least 2 x interval it adds samples v - interval,
 * v - 2 x interval, ... while they stay above interval. corral and etcd are driven by wrk,
 * so ZooKeeper's samples get the same treatment, or the tails would not compare: one
 * 6 ms stall of a single client at 0.3 ms per request adds ~18 samples in wrk's
 * percentiles and 1 here. */
static void samples_correct_like_wrk(samples_t *s, double interval_ms)
{
    if (interval_ms <= 0)
        return;
    size_t raw = s->n;
    for (size_t i = 0; i < raw; i++) {
        double v = s->v[i];
        if (v < 2 * interval_ms)
            continue;
        for (double m = v - interval_ms; m > interval_ms; m -= interval_ms)
            sample_add(s, m);
    }
}

static double pct(samples_t *s, double p)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (s->n - 1) + 0.5);
    return s->v[i];
}

/* ---- options and state ---------------------------------------------------------- */
static const char *host = "127.0.0.1:2181";
static const char *mode = "get";
static int nsessions = 8, window = 8, read_pct = 90, value_bytes = 100, rounds = 5;
static double seconds = 10;
static long count = 0;
static char *value;

static zhandle_t **zhs;
static int connected;
static long ops, errors, inflight;
static samples_t lat;
static double t_end;
static int stopping;

typedef struct {
    int session;
    double started;
} req_t;

static void conn_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)path;
    (void)ctx;
    if (type == ZOO_SESSION_EVENT) {
        if (state == ZOO_CONNECTED_STATE)
            connected++;
        else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
            fprintf(stderr, "zkbench: session lost (state %d)\n", state);
            exit(2);
        }
    }
}

/* One poll over every session; returns after at most timeout_ms. */
static struct pollfd *pfds;
static void pump(int timeout_ms)
{
    int n = 0;
    int map[nsessions + 1];
    for (int i = 0; i < nsessions + 1; i++) {
        if (!zhs[i])
            continue;
        int fd, interest;
        struct timeval tv;
        int rc = zookeeper_interest(zhs[i], &fd, &interest, &tv);
        if (rc != ZOK && rc != ZCONNECTIONLOSS)
            continue;
        if (fd < 0)
            continue;
        int ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
        if (ms < timeout_ms)
            timeout_ms = ms;
        pfds[n].fd = fd;
        pfds[n].events =
            (interest & ZOOKEEPER_READ ? POLLIN : 0) | (interest & ZOOKEEPER_WRITE ? POLLOUT : 0);
        pfds[n].revents = 0;
        map[n++] = i;
    }
    if (timeout_ms < 0)
        timeout_ms = 0;
    poll(pfds, n, timeout_ms);
    for (int k = 0; k < n; k++) {
        int ev = 0;
        if (pfds[k].revents & (POLLIN | POLLERR | POLLHUP))
            ev |= ZOOKEEPER_READ;
        if (pfds[k].revents & POLLOUT)
            ev |= ZOOKEEPER_WRITE;
        zookeeper_process(zhs[map[k]], ev);
    }
}

static void connect_all(int n)
{
    zhs = calloc(n + 1, sizeof *zhs);
    pfds = calloc(n + 1, sizeof *pfds);
    for (int i = 0; i < n; i++) {
        zhs[i] = zookeeper_init(host, conn_watcher, 30000, NULL, NULL, 0);
        if (!zhs[i]) {
            perror("zookeeper_init");
            exit(2);
        }
        /* Do not open thousands of sockets at once: let each batch finish its handshake. */
        if (i % 256 == 255)
            while (connected < i + 1)
                pump(100);
    }
    double deadline = now_s() + 60;
    while (connected < n) {
        pump(100);
        if (now_s() > deadline) {
            fprintf(stderr, "zkbench: only %d/%d connected\n", connected, n);
            exit(2);
        }
    }
}

/* ---- load modes ---------------------------------------------------------- */
static void issue(int session);

static void done_common(int rc, const void *data)
{
    req_t *r = (req_t *)data;
    double t = now_s();
    inflight--;
    if (rc != ZOK)
        errors++;
    else {
        ops++;
        sample_add(&lat, (t - r->started) * 1e3);
    }
    int s = r->session;
    free(r);
    if (!stopping && t < t_end)
        issue(s);
}

static void stat_done(int rc, const struct Stat *stat, const void *data)
{
    (void)stat;
    done_common(rc, data);
}
static void data_done(int rc, const char *v, int len, const struct Stat *stat, const void *data)
{
    (void)v;
    (void)len;
    (void)stat;
    done_common(rc, data);
}
static void string_done(int rc, const char *v, const void *data)
{
    (void)v;
    done_common(rc, data);
}

static void issue(int session)
{
    req_t *r = malloc(sizeof *r);
    r->session = session;
    r->started = now_s();
    zhandle_t *zh = zhs[session];
    const char *m = mode;
    char path[64];
    if (!strcmp(m, "mix"))
        m = (rand() % 100 < read_pct) ? "getr" : "set";
    int rc;
    if (!strcmp(m, "get"))
        rc = zoo_aget(zh, "/bench/k0", 0, data_done, r);
    else if (!strcmp(m, "getr")) {
        snprintf(path, sizeof path, "/bench/k%d", rand() % 1000);
        rc = zoo_aget(zh, path, 0, data_done, r);
    } else if (!strcmp(m, "set")) {
        snprintf(path, sizeof path, "/bench/k%d", rand() % 1000);
        rc = zoo_aset(zh, path, value, value_bytes, -1, stat_done, r);
    } else if (!strcmp(m, "create"))
        rc = zoo_acreate(zh, "/queue/item-", value, value_bytes, &ZOO_OPEN_ACL_UNSAFE,
                         ZOO_PERSISTENT_SEQUENTIAL, string_done, r);
    else {
        fprintf(stderr, "zkbench: unknown mode %s\n", mode);
        exit(2);
    }
    if (rc != ZOK) {
        fprintf(stderr, "zkbench: submit failed %d\n", rc);
        exit(2);
    }
    inflight++;
}

static int run_load(void)
{
    connect_all(nsessions);
    double t0 = now_s();
    t_end = t0 + seconds;
    for (int s = 0; s < nsessions; s++)
        for (int w = 0; w < window; w++)
            issue(s);
    while (now_s() < t_end)
        pump(10);
    double t1 = now_s();
    stopping = 1;
    long done_ops = ops;
    while (inflight > 0)
        pump(10);
    long slots = (long)nsessions * window;
    if (done_ops / slots > 0)
        samples_correct_like_wrk(&lat, (t1 - t0) * 1e3 / (double)(done_ops / slots));
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_float);
    printf("RESULT ops=%ld ops_per_s=%.0f p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f errors=%ld\n",
           done_ops, done_ops / (t1 - t0), pct(&lat, 50), pct(&lat, 99), pct(&lat, 99.9), errors);
    for (int s = 0; s < nsessions; s++)
        zookeeper_close(zhs[s]);
    return 0;
}

/* ---- setup / populate / check ---------------------------------------------------- */
static long sync_pending;
static int sync_rc_bad;
static void sync_string_done(int rc, const char *v, const void *d)
{
    (void)v;
    (void)d;
    sync_pending--;
    if (rc != ZOK && rc != ZNODEEXISTS) {
        fprintf(stderr, "zkbench: create rc %d\n", rc);
        sync_rc_bad++;
    }
}
static void sync_multi_done(int rc, const void *d)
{
    free((void *)d);
    sync_pending--;
    if (rc != ZOK) {
        fprintf(stderr, "zkbench: multi rc %d\n", rc);
        sync_rc_bad++;
    }
}

static void acreate(const char *path, const char *data, int len)
{
    sync_pending++;
    zoo_acreate(zhs[0], path, data, len, &ZOO_OPEN_ACL_UNSAFE, 0, sync_string_done, NULL);
}

static void drain(long max_pending)
{
    while (sync_pending > max_pending)
        pump(100);
    if (sync_rc_bad)
        exit(2);
}

static int run_setup(void)
{
    nsessions = 1;
    connect_all(1);
    char path[64];
    acreate("/bench", "", 0);
    acreate("/queue", "", 0);
    acreate("/mem", "", 0);
    drain(0);
    acreate("/bench/w", value, value_bytes);
    for (int i = 0; i < 1000; i++) {
        snprintf(path, sizeof path, "/bench/k%d", i);
        acreate(path, value, value_bytes);
        drain(256);
    }
    drain(0);
    zookeeper_close(zhs[0]);
    return 0;
}

/* Creates count znodes /mem/p<j>/n<i>, 1,000 per parent, as multis of 1,000 creates
 * with up to 8 multis in flight: the same shape as corral's W7 load. */
static int run_populate(void)
{
    nsessions = 1;
    connect_all(1);
    long parents = (count + 999) / 1000;
    char path[64];
    acreate("/mem", "", 0);
    drain(0);
    for (long j = 0; j < parents; j++) {
        snprintf(path, sizeof path, "/mem/p%ld", j);
        acreate(path, "", 0);
        drain(64);
    }
    drain(0);
    long made = 0;
    for (long j = 0; j < parents; j++) {
        int n = count - made < 1000 ? (int)(count - made) : 1000;
        /* one allocation holds the ops, their results and their paths */
        size_t sz = n * (sizeof(zoo_op_t) + sizeof(zoo_op_result_t) + 32 + 32);
        char *mem = calloc(1, sz);
        zoo_op_t *opsv = (zoo_op_t *)mem;
        zoo_op_result_t *res = (zoo_op_result_t *)(opsv + n);
        char *paths = (char *)(res + n);
        char *outbuf = paths + n * 32;
        for (int i = 0; i < n; i++) {
            snprintf(paths + i * 32, 32, "/mem/p%ld/n%d", j, i);
            zoo_create_op_init(&opsv[i], paths + i * 32, value, value_bytes, &ZOO_OPEN_ACL_UNSAFE,
                               0, outbuf + i * 32, 32);
        }
        sync_pending++;
        int rc = zoo_amulti(zhs[0], n, opsv, res, sync_multi_done, mem);
        if (rc != ZOK) {
            fprintf(stderr, "zkbench: amulti %d\n", rc);
            exit(2);
        }
        made += n;
        drain(8);
    }
    drain(0);
    printf("RESULT created=%ld\n", made);
    zookeeper_close(zhs[0]);
    return 0;
}

static int check_rc = -1;
static void check_done(int rc, const char *v, int len, const struct Stat *st, const void *d)
{
    (void)v;
    (void)len;
    (void)st;
    (void)d;
    check_rc = rc;
}

static int run_check(void)
{
    nsessions = 1;
    connect_all(1);
    char path[64];
    long last = count - 1;
    snprintf(path, sizeof path, "/mem/p%ld/n%ld", last / 1000, last % 1000);
    zoo_aget(zhs[0], path, 0, check_done, NULL);
    while (check_rc == -1)
        pump(100);
    printf("RESULT check=%s rc=%d\n", path, check_rc);
    zookeeper_close(zhs[0]);
    return check_rc == ZOK ? 0 : 1;
}

/* ---- watch mode ---------------------------------------------------------- */
static double t_set, t_ack;
static double *notified; /* per watcher, time of its event in this round, 0 = none yet */
static long armed, got;

static void watch_fired(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    (void)zh;
    (void)state;
    (void)path;
    if (type == ZOO_SESSION_EVENT)
        return conn_watcher(zh, type, state, path, ctx);
    long i = (long)(intptr_t)ctx;
    if (notified[i] == 0) {
        notified[i] = now_s();
        got++;
    }
}

static void armed_done(int rc, const struct Stat *st, const void *d)
{
    (void)st;
    (void)d;
    if (rc != ZOK) {
        fprintf(stderr, "zkbench: wexists rc %d\n", rc);
        exit(2);
    }
    armed++;
}

static void set_done(int rc, const struct Stat *st, const void *d)
{
    (void)st;
    (void)d;
    if (rc != ZOK) {
        fprintf(stderr, "zkbench: set rc %d\n", rc);
        exit(2);
    }
    t_ack = now_s();
}

static int run_watch(void)
{
    int n = (int)count;
    nsessions = n + 1; /* the last session is the writer */
    connect_all(n + 1);
    notified = calloc(n, sizeof *notified);
    samples_t acks = {0};
    long missed = 0;
    for (int r = 0; r < rounds; r++) {
        armed = got = 0;
        for (int i = 0; i < n; i++) {
            notified[i] = 0;
            zoo_awexists(zhs[i], "/bench/w", watch_fired, (void *)(intptr_t)i, armed_done, NULL);
            if (i % 512 == 511)
                pump(0);
        }
        while (armed < n)
            pump(50);
        /* every exists call has been answered, so every watch is registered */
        double settle = now_s() + 0.2;
        while (now_s() < settle)
            pump(20);
        t_ack = 0;
        t_set = now_s();
        zoo_aset(zhs[n], "/bench/w", value, value_bytes, -1, set_done, NULL);
        double deadline = t_set + 10;
        while ((got < n || t_ack == 0) && now_s() < deadline)
            pump(5);
        for (int i = 0; i < n; i++) {
            if (notified[i])
                sample_add(&lat, (notified[i] - t_set) * 1e3);
            else
                missed++;
        }
        if (t_ack)
            sample_add(&acks, (t_ack - t_set) * 1e3);
    }
    qsort(lat.v, lat.n, sizeof *lat.v, cmp_float);
    qsort(acks.v, acks.n, sizeof *acks.v, cmp_float);
    printf("RESULT watchers=%d rounds=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f ack_p50_ms=%.3f "
           "missed=%ld\n",
           n, rounds, pct(&lat, 50), pct(&lat, 99), lat.n ? lat.v[lat.n - 1] : 0, pct(&acks, 50),
           missed);
    return 0;
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "H:m:s:w:d:r:v:n:R:")) != -1) {
        switch (c) {
        case 'H':
            host = optarg;
            break;
        case 'm':
            mode = optarg;
            break;
        case 's':
            nsessions = atoi(optarg);
            break;
        case 'w':
            window = atoi(optarg);
            break;
        case 'd':
            seconds = atof(optarg);
            break;
        case 'r':
            read_pct = atoi(optarg);
            break;
        case 'v':
            value_bytes = atoi(optarg);
            break;
        case 'n':
            count = atol(optarg);
            break;
        case 'R':
            rounds = atoi(optarg);
            break;
        default:
            fprintf(stderr, "see the comment at the top of zkbench.c\n");
            return 2;
        }
    }
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    value = malloc(value_bytes + 1);
    memset(value, 'v', value_bytes);
    srand(getpid());
    if (!strcmp(mode, "setup"))
        return run_setup();
    if (!strcmp(mode, "populate"))
        return run_populate();
    if (!strcmp(mode, "check"))
        return run_check();
    if (!strcmp(mode, "watch"))
        return run_watch();
    return run_load();
}
