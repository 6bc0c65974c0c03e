/* test_transport.c: unit tests of the nanomsg transport (transport.h, transport_nn.c)
 * over real tcp://127.0.0.1 sockets, with 2-3 transports on one libuv loop. Every wait
 * has a deadline, so a broken transport fails a test instead of hanging it. Frames
 * injected through a raw nanomsg PUSH socket are built here from the format table at the
 * top of transport_nn.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <uv.h>

#include "crc.h"
#include "transport.h"

#define MAX_NODES 3
#define DEADLINE_MS 5000
#define HEADER_SIZE 48
#define CHUNK_SIZE ((size_t)1 << 20)

struct received {
    uint64_t from;
    enum transport_channel channel;
    uint8_t *data; /* owned copy */
    size_t length;
};

struct node {
    struct transport_member members[MAX_NODES];
    uint32_t member_count;
    uint64_t id;
    size_t queue_limit;
    struct transport *t;
    bool running;
    int closed_calls;
    bool keep;            /* copy what arrives into msgs (off for the throughput runs) */
    bool stop_on_receive; /* call transport_stop from inside the receive callback */
    struct received *msgs;
    size_t count, cap;
    size_t bytes;
};

static uv_loop_t loop;
static uv_timer_t tick;
static struct node nodes[MAX_NODES];
static int raw_push = -1;

/* ---- helpers ---------------------------------------------------------------------- */

/* A port nobody listens on right now: bind to port 0, read it back, close. Another
 * process could take it before we bind, which is unlikely enough for a test. */
static int port_free(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void node_on_closed(void *arg)
{
    struct node *n = arg;
    n->closed_calls++;
}

static void node_on_receive(void *arg, uint64_t from, enum transport_channel channel,
                            const uint8_t *data, size_t length)
{
    struct node *n = arg;
    n->bytes += length;
    if (n->keep) {
        if (n->count == n->cap) {
            n->cap = n->cap ? 2 * n->cap : 64;
            n->msgs = realloc(n->msgs, n->cap * sizeof *n->msgs);
            assert_non_null(n->msgs);
        }
        struct received *r = &n->msgs[n->count];
        r->from = from;
        r->channel = channel;
        r->length = length;
        r->data = malloc(length + 1);
        assert_non_null(r->data);
        if (length > 0)
            memcpy(r->data, data, length);
    }
    n->count++;
    if (n->stop_on_receive && n->running) {
        n->running = false;
        transport_stop(n->t, node_on_closed, n);
    }
}

/* Configures nodes[0..count) as one cluster with ids 1..count on free ports. */
static void cluster_configure(uint32_t count, size_t queue_limit)
{
    struct transport_member members[MAX_NODES];
    memset(members, 0, sizeof members);
    for (uint32_t i = 0; i < count; i++) {
        members[i].id = i + 1;
        snprintf(members[i].address, sizeof members[i].address, "tcp://127.0.0.1:%d", port_free());
    }
    for (uint32_t i = 0; i < count; i++) {
        memcpy(nodes[i].members, members, sizeof members);
        nodes[i].member_count = count;
        nodes[i].id = i + 1;
        nodes[i].queue_limit = queue_limit;
        nodes[i].keep = true;
    }
}

static void node_start(struct node *n)
{
    struct transport_options o;
    memset(&o, 0, sizeof o);
    o.loop = &loop;
    o.self_id = n->id;
    memcpy(o.members, n->members, sizeof n->members);
    o.member_count = n->member_count;
    o.on_receive = node_on_receive;
    o.arg = n;
    o.queue_limit_bytes = n->queue_limit;
    char error[256];
    int rc = transport_start(&o, &n->t, error, sizeof error);
    if (rc != 0)
        fail_msg("transport_start: %d %s", rc, error);
    n->running = true;
}

static void node_stop(struct node *n)
{
    if (n->running) {
        n->running = false;
        transport_stop(n->t, node_on_closed, n);
    }
}

struct wait {
    bool (*done)(void *ctx);
    void *ctx;
    uint64_t deadline;
    bool ok;
};

static void wait_on_tick(uv_timer_t *h)
{
    struct wait *w = h->data;
    if (w->done(w->ctx)) {
        w->ok = true;
        uv_stop(&loop);
    } else if (uv_now(&loop) >= w->deadline) {
        uv_stop(&loop);
    }
}

/* Runs the loop until done(ctx) or timeout_ms; returns whether done. */
static bool run_until(bool (*done)(void *ctx), void *ctx, uint64_t timeout_ms)
{
    uv_update_time(&loop);
    struct wait w = {.done = done, .ctx = ctx, .deadline = uv_now(&loop) + timeout_ms};
    tick.data = &w;
    uv_timer_start(&tick, wait_on_tick, 0, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);
    return w.ok || done(ctx);
}

static bool never(void *ctx)
{
    (void)ctx;
    return false;
}

static void run_for(uint64_t ms)
{
    run_until(never, NULL, ms);
}

struct count_goal {
    struct node *n;
    size_t count;
};

static bool count_reached(void *ctx)
{
    struct count_goal *g = ctx;
    return g->n->count >= g->count;
}

static void wait_count(struct node *n, size_t count)
{
    struct count_goal g = {n, count};
    if (!run_until(count_reached, &g, DEADLINE_MS))
        fail_msg("node %llu: %zu of %zu messages within %d ms", (unsigned long long)n->id, n->count,
                 count, DEADLINE_MS);
}

static bool all_closed(void *ctx)
{
    (void)ctx;
    for (int i = 0; i < MAX_NODES; i++)
        if (nodes[i].t != NULL && nodes[i].closed_calls == 0)
            return false;
    return true;
}

static struct transport_stats stats_of(struct node *n)
{
    struct transport_stats s;
    transport_stats_get(n->t, &s);
    return s;
}

/* ---- raw frames, per the format table in transport_nn.c ---------------------------- */

struct frame_spec {
    uint8_t version;
    uint8_t channel;
    uint64_t sender;
    uint64_t message_id;
    uint32_t index, count;
    uint64_t total;
    const uint8_t *payload;
    uint32_t length;
};

static void put_le(uint8_t *p, uint64_t v, int size)
{
    for (int i = 0; i < size; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Returns a malloc'd frame of *size bytes with a correct CRC. */
static uint8_t *frame_make(const struct frame_spec *f, size_t *size)
{
    uint8_t *b = calloc(1, HEADER_SIZE + f->length);
    assert_non_null(b);
    memcpy(b, "CRTP", 4);
    b[4] = f->version;
    b[5] = f->channel;
    put_le(b + 8, f->sender, 8);
    put_le(b + 16, f->message_id, 8);
    put_le(b + 24, f->index, 4);
    put_le(b + 28, f->count, 4);
    put_le(b + 32, f->total, 8);
    put_le(b + 40, f->length, 4);
    if (f->length > 0)
        memcpy(b + HEADER_SIZE, f->payload, f->length);
    uint32_t crc = cluster_crc32c(0, b, 44);
    crc = cluster_crc32c(crc, b + HEADER_SIZE, f->length);
    put_le(b + 44, crc, 4);
    *size = HEADER_SIZE + f->length;
    return b;
}

static struct frame_spec frame_simple(uint64_t sender, uint64_t message_id, const char *text)
{
    struct frame_spec f = {.version = 1,
                           .channel = TRANSPORT_CHANNEL_RAFT,
                           .sender = sender,
                           .message_id = message_id,
                           .index = 0,
                           .count = 1,
                           .total = strlen(text),
                           .payload = (const uint8_t *)text,
                           .length = (uint32_t)strlen(text)};
    return f;
}

/* Sends bytes through the raw PUSH socket (blocking with a timeout: nanomsg's own thread
 * connects it while our loop is not running). */
static void raw_send(const void *data, size_t size)
{
    assert_int_equal(nn_send(raw_push, data, size, 0), (int)size);
}

static void raw_send_frame(const struct frame_spec *f)
{
    size_t size = 0;
    uint8_t *b = frame_make(f, &size);
    raw_send(b, size);
    free(b);
}

static void raw_connect(const char *address)
{
    raw_push = nn_socket(AF_SP, NN_PUSH);
    assert_true(raw_push >= 0);
    int ms = 3000;
    assert_int_equal(nn_setsockopt(raw_push, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms), 0);
    assert_true(nn_connect(raw_push, address) >= 0);
}

static void assert_text(const struct received *r, uint64_t from, const char *text)
{
    assert_int_equal(r->from, from);
    assert_int_equal(r->length, strlen(text));
    assert_memory_equal(r->data, text, r->length);
}

/* ---- fixture ----------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    memset(nodes, 0, sizeof nodes);
    raw_push = -1;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &tick), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (raw_push >= 0)
        nn_close(raw_push);
    for (int i = 0; i < MAX_NODES; i++)
        node_stop(&nodes[i]);
    assert_true(run_until(all_closed, NULL, DEADLINE_MS));
    for (int i = 0; i < MAX_NODES; i++) {
        if (nodes[i].t != NULL)
            assert_int_equal(nodes[i].closed_calls, 1);
        for (size_t k = 0; k < nodes[i].count && nodes[i].keep; k++)
            free(nodes[i].msgs[k].data);
        free(nodes[i].msgs);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Every handle of every transport is closed, or this is UV_EBUSY. */
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------- */

#define SMALL_COUNT 200

/* Message k from i to j: a numbered text, padded to k % 60 extra bytes (some empty). */
static size_t small_message(char *buf, size_t cap, uint64_t from, uint64_t to, int k)
{
    if (k % 50 == 7)
        return 0;
    int n =
        snprintf(buf, cap, "%llu>%llu:%d|", (unsigned long long)from, (unsigned long long)to, k);
    size_t pad = (size_t)(k % 60);
    memset(buf + n, 'a' + k % 26, pad);
    return (size_t)n + pad;
}

static void test_transport_send__small_both_ways_in_order(void **state)
{
    (void)state;
    cluster_configure(3, 0);
    for (int i = 0; i < 3; i++)
        node_start(&nodes[i]);
    char buf[128];
    /* Sent before any connection exists: nanomsg says EAGAIN and the transport queues. */
    for (int k = 0; k < SMALL_COUNT; k++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                if (i == j)
                    continue;
                size_t len = small_message(buf, sizeof buf, nodes[i].id, nodes[j].id, k);
                assert_int_equal(transport_send(nodes[i].t, nodes[j].id,
                                                (enum transport_channel)(1 + k % 5), buf, len),
                                 0);
            }
    for (int j = 0; j < 3; j++)
        wait_count(&nodes[j], 2 * SMALL_COUNT);

    for (int j = 0; j < 3; j++) {
        int next[MAX_NODES + 1] = {0};
        for (size_t m = 0; m < nodes[j].count; m++) {
            struct received *r = &nodes[j].msgs[m];
            assert_true(r->from >= 1 && r->from <= 3 && r->from != nodes[j].id);
            int k = next[r->from]++;
            size_t len = small_message(buf, sizeof buf, r->from, nodes[j].id, k);
            assert_int_equal(r->channel, 1 + k % 5);
            assert_int_equal(r->length, len);
            assert_memory_equal(r->data, buf, len);
        }
        struct transport_stats s = stats_of(&nodes[j]);
        assert_int_equal(s.frames_received, 2 * SMALL_COUNT);
        assert_int_equal(s.frames_sent, 2 * SMALL_COUNT);
        assert_int_equal(s.frames_rejected, 0);
        assert_int_equal(s.messages_dropped, 0);
        for (int i = 0; i < 3; i++)
            if (i != j)
                assert_true(transport_last_heard(nodes[j].t, nodes[i].id) > 0);
        assert_int_equal(transport_last_heard(nodes[j].t, nodes[j].id), 0);
        assert_int_equal(transport_last_heard(nodes[j].t, 99), 0);
    }
    /* Self, unknown members and unknown channels are refused. */
    assert_int_equal(transport_send(nodes[0].t, 1, TRANSPORT_CHANNEL_RAFT, "x", 1), -EINVAL);
    assert_int_equal(transport_send(nodes[0].t, 99, TRANSPORT_CHANNEL_RAFT, "x", 1), -EINVAL);
    assert_int_equal(transport_send(nodes[0].t, 2, (enum transport_channel)0, "x", 1), -EINVAL);
}

static void test_transport_send__5mib_message_chunked(void **state)
{
    (void)state;
    cluster_configure(2, 0);
    node_start(&nodes[0]);
    node_start(&nodes[1]);
    size_t size = ((size_t)5 << 20) + 123;
    uint8_t *big = malloc(size);
    assert_non_null(big);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big[i] = (uint8_t)x;
    }
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_SNAPSHOT, big, size), 0);
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, "after", 5), 0);
    wait_count(&nodes[1], 2);
    assert_int_equal(nodes[1].msgs[0].channel, TRANSPORT_CHANNEL_SNAPSHOT);
    assert_int_equal(nodes[1].msgs[0].length, size);
    assert_memory_equal(nodes[1].msgs[0].data, big, size);
    assert_text(&nodes[1].msgs[1], 1, "after");
    assert_int_equal(stats_of(&nodes[0]).frames_sent, 6 + 1); /* 5 MiB + 123 B = 6 chunks */
    assert_int_equal(stats_of(&nodes[1]).frames_received, 6 + 1);
    assert_int_equal(stats_of(&nodes[1]).frames_rejected, 0);
    free(big);
}

static void test_transport_send__peer_starting_later_gets_new_messages(void **state)
{
    (void)state;
    cluster_configure(2, 0);
    node_start(&nodes[0]);
    char buf[64];
    for (int k = 0; k < 10; k++) { /* B is down: these may or may not arrive */
        int n = snprintf(buf, sizeof buf, "early %d", k);
        assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, buf, (size_t)n), 0);
    }
    run_for(300);
    node_start(&nodes[1]);
    /* Keep poking until B hears A: then A's pipe to B is up. */
    uint64_t pokes = 0;
    while (nodes[1].count == 0) {
        assert_true(pokes++ < DEADLINE_MS / 20);
        assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, "poke", 4), 0);
        run_for(20);
    }
    size_t before = nodes[1].count;
    for (int k = 0; k < 100; k++) {
        int n = snprintf(buf, sizeof buf, "late %d", k);
        assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, buf, (size_t)n), 0);
    }
    /* Everything sent after the connection arrives, in order, after what came before. */
    int next = 0;
    uv_update_time(&loop);
    uint64_t deadline = uv_now(&loop) + DEADLINE_MS;
    size_t seen = before;
    while (next < 100) {
        assert_true(uv_now(&loop) < deadline);
        run_for(5);
        for (; seen < nodes[1].count; seen++) {
            struct received *r = &nodes[1].msgs[seen];
            if (r->length < 5 || memcmp(r->data, "late ", 5) != 0)
                continue; /* a late poke or early message */
            int n = snprintf(buf, sizeof buf, "late %d", next);
            assert_int_equal(r->length, (size_t)n);
            assert_memory_equal(r->data, buf, (size_t)n);
            next++;
        }
    }
    assert_true(transport_last_heard(nodes[1].t, 1) > 0);
    assert_int_equal(transport_last_heard(nodes[0].t, 2), 0); /* B never sent to A */
}

static void test_transport_receive__corrupt_frames_rejected(void **state)
{
    (void)state;
    cluster_configure(2, 0);
    node_start(&nodes[0]);
    node_start(&nodes[1]);
    raw_connect(nodes[0].members[0].address);

    struct frame_spec ok1 = frame_simple(2, 100, "raw ok 1");
    raw_send_frame(&ok1); /* accepted: the builder above matches the format */

    size_t size = 0;
    uint8_t *b = frame_make(&ok1, &size);
    b[HEADER_SIZE + 2] ^= 0x40; /* payload bit flip: CRC mismatch */
    raw_send(b, size);
    b[HEADER_SIZE + 2] ^= 0x40;
    b[30] ^= 1; /* header bit flip (chunk count): CRC or length check */
    raw_send(b, size);
    free(b);

    struct frame_spec magic = frame_simple(2, 101, "bad magic");
    b = frame_make(&magic, &size);
    memcpy(b, "XRTP", 4);
    uint32_t crc = cluster_crc32c(cluster_crc32c(0, b, 44), b + HEADER_SIZE, size - HEADER_SIZE);
    put_le(b + 44, crc, 4); /* a consistent CRC: it is the magic that is wrong */
    raw_send(b, size);
    free(b);

    raw_send("short", 5); /* shorter than a header */
    raw_send("", 0);      /* empty */
    struct frame_spec lying = frame_simple(2, 102, "length lies");
    lying.total = 100; /* total says 100, the payload has 11 */
    raw_send_frame(&lying);
    struct frame_spec stranger = frame_simple(77, 103, "who am I"); /* not a member */
    raw_send_frame(&stranger);
    struct frame_spec self = frame_simple(1, 104, "from myself"); /* the receiver's id */
    raw_send_frame(&self);
    struct frame_spec channel = frame_simple(2, 105, "channel 9");
    channel.channel = 9;
    raw_send_frame(&channel);

    struct frame_spec ok2 = frame_simple(2, 106, "raw ok 2");
    raw_send_frame(&ok2);

    wait_count(&nodes[0], 2); /* the raw socket is FIFO: everything before ok2 was seen */
    assert_text(&nodes[0].msgs[0], 2, "raw ok 1");
    assert_text(&nodes[0].msgs[1], 2, "raw ok 2");
    struct transport_stats s = stats_of(&nodes[0]);
    assert_int_equal(s.frames_rejected, 9);
    assert_int_equal(s.frames_received, 2);

    /* Good traffic goes on, both ways. */
    assert_int_equal(transport_send(nodes[1].t, 1, TRANSPORT_CHANNEL_FORWARD, "real", 4), 0);
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_REPLY, "back", 4), 0);
    wait_count(&nodes[0], 3);
    wait_count(&nodes[1], 1);
    assert_text(&nodes[0].msgs[2], 2, "real");
    assert_int_equal(nodes[0].msgs[2].channel, TRANSPORT_CHANNEL_FORWARD);
    assert_text(&nodes[1].msgs[0], 1, "back");
    assert_int_equal(stats_of(&nodes[0]).frames_rejected, 9);
}

static void test_transport_receive__wrong_version_rejected(void **state)
{
    (void)state;
    cluster_configure(2, 0);
    node_start(&nodes[0]);
    node_start(&nodes[1]);
    raw_connect(nodes[0].members[0].address);
    struct frame_spec v2 = frame_simple(2, 200, "version two");
    v2.version = 2; /* a correct CRC over a header of a version we do not speak */
    raw_send_frame(&v2);
    struct frame_spec v0 = frame_simple(2, 201, "version zero");
    v0.version = 0;
    raw_send_frame(&v0);
    struct frame_spec v1 = frame_simple(2, 202, "version one");
    raw_send_frame(&v1);
    wait_count(&nodes[0], 1);
    assert_text(&nodes[0].msgs[0], 2, "version one");
    assert_int_equal(stats_of(&nodes[0]).frames_rejected, 2);
    assert_int_equal(stats_of(&nodes[0]).frames_received, 1);
}

static void test_transport_receive__reassembly_drops_stale_and_gaps(void **state)
{
    (void)state;
    cluster_configure(2, 0);
    node_start(&nodes[0]);
    node_start(&nodes[1]);
    raw_connect(nodes[0].members[0].address);
    size_t total = CHUNK_SIZE + 10;
    uint8_t *data = malloc(total);
    assert_non_null(data);
    for (size_t i = 0; i < total; i++)
        data[i] = (uint8_t)(i * 13);
    struct frame_spec c0 = {.version = 1,
                            .channel = TRANSPORT_CHANNEL_SNAPSHOT,
                            .sender = 2,
                            .message_id = 300,
                            .index = 0,
                            .count = 2,
                            .total = total,
                            .payload = data,
                            .length = (uint32_t)CHUNK_SIZE};
    struct frame_spec c1 = c0;
    c1.index = 1;
    c1.payload = data + CHUNK_SIZE;
    c1.length = 10;

    raw_send_frame(&c0); /* 300 starts ... */
    struct frame_spec fresh = frame_simple(2, 301, "newer");
    raw_send_frame(&fresh); /* ... 301 completes: 300 is dropped */
    raw_send_frame(&c1);    /* so its last chunk is rejected */

    c0.message_id = c1.message_id = 302;
    raw_send_frame(&c1); /* a last chunk without its start */
    raw_send_frame(&c0);
    raw_send_frame(&c0); /* a gap (index 0 again): restart */
    raw_send_frame(&c1); /* completes the restarted copy */

    struct frame_spec wrong = c1; /* chunk length not what total implies */
    wrong.message_id = 303;
    wrong.length = 9;
    raw_send_frame(&wrong);
    raw_send_frame(&fresh); /* an old id, whole: delivered */

    wait_count(&nodes[0], 3);
    assert_text(&nodes[0].msgs[0], 2, "newer");
    assert_int_equal(nodes[0].msgs[1].length, total);
    assert_int_equal(nodes[0].msgs[1].channel, TRANSPORT_CHANNEL_SNAPSHOT);
    assert_memory_equal(nodes[0].msgs[1].data, data, total);
    assert_text(&nodes[0].msgs[2], 2, "newer");
    assert_int_equal(stats_of(&nodes[0]).frames_rejected, 3);
    free(data);
}

static void test_transport_stop__clean_with_queued_frames_and_assembly(void **state)
{
    (void)state;
    cluster_configure(3, 0);
    node_start(&nodes[0]); /* A; B receives and stops itself from the callback; C is down */
    nodes[1].stop_on_receive = true;
    node_start(&nodes[1]);
    /* Frames queued for C, which never starts, including a multi-chunk message. */
    uint8_t *big = calloc(1, 3 * CHUNK_SIZE);
    assert_non_null(big);
    assert_int_equal(transport_send(nodes[0].t, 3, TRANSPORT_CHANNEL_SNAPSHOT, big, 3 * CHUNK_SIZE),
                     0);
    assert_int_equal(transport_send(nodes[0].t, 3, TRANSPORT_CHANNEL_RAFT, "queued", 6), 0);
    free(big);
    /* An assembly left half done in A. */
    raw_connect(nodes[0].members[0].address);
    uint8_t *first = calloc(1, CHUNK_SIZE);
    assert_non_null(first);
    struct frame_spec c0 = {.version = 1,
                            .channel = TRANSPORT_CHANNEL_SNAPSHOT,
                            .sender = 2,
                            .message_id = 400,
                            .index = 0,
                            .count = 2,
                            .total = CHUNK_SIZE + 64,
                            .payload = first,
                            .length = (uint32_t)CHUNK_SIZE};
    raw_send_frame(&c0);
    free(first);
    /* B stops inside its receive callback; later frames to it must not crash anything. */
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, "stop", 4), 0);
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, "more", 4), 0);

    struct count_goal g = {&nodes[1], 1};
    assert_true(run_until(count_reached, &g, DEADLINE_MS));
    uv_update_time(&loop);
    uint64_t deadline = uv_now(&loop) + DEADLINE_MS;
    while (stats_of(&nodes[0]).frames_received < 1) {
        assert_true(uv_now(&loop) < deadline);
        run_for(5);
    }
    assert_int_equal(nodes[1].closed_calls, 1); /* already closed, from inside a callback */
    assert_int_equal(nodes[1].count, 1);
    assert_true(stats_of(&nodes[0]).messages_dropped == 0);
    node_stop(&nodes[0]);
    assert_int_equal(nodes[0].closed_calls, 0); /* only once the loop ran the closes */
    assert_true(run_until(all_closed, NULL, DEADLINE_MS));
    assert_int_equal(nodes[0].closed_calls, 1);
    /* The teardown checks uv_loop_close; ASan's leak check runs at exit. */
}

static void test_transport_send__queue_limit_drops_oldest(void **state)
{
    (void)state;
    size_t frame = HEADER_SIZE + 100;
    cluster_configure(2, 10 * frame);
    node_start(&nodes[0]); /* B is down: nanomsg refuses every send (EAGAIN) */
    char buf[100];
    for (int k = 0; k < 25; k++) {
        memset(buf, '.', sizeof buf);
        snprintf(buf, sizeof buf, "%03d", k);
        assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, buf, sizeof buf), 0);
    }
    struct transport_stats s = stats_of(&nodes[0]);
    assert_int_equal(s.messages_dropped, 15);
    assert_int_equal(s.frames_sent, 0);
    /* A message larger than the whole queue is the one dropped; the queue stays. */
    char huge[2000] = {0};
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, huge, sizeof huge), 0);
    assert_int_equal(stats_of(&nodes[0]).messages_dropped, 16);

    node_start(&nodes[1]);
    wait_count(&nodes[1], 10);
    run_for(50); /* nothing more comes */
    assert_int_equal(nodes[1].count, 10);
    for (int k = 0; k < 10; k++) {
        snprintf(buf, sizeof buf, "%03d", 15 + k);
        assert_memory_equal(nodes[1].msgs[k].data, buf, 4);
    }
    assert_int_equal(stats_of(&nodes[0]).frames_sent, 10);
}

static void test_transport_start__errors(void **state)
{
    (void)state;
    cluster_configure(2, 0);
    node_start(&nodes[0]);
    struct transport_options o;
    memset(&o, 0, sizeof o);
    o.loop = &loop;
    o.self_id = 1; /* the same inbox address as the running node 1 */
    memcpy(o.members, nodes[0].members, sizeof nodes[0].members);
    o.member_count = 2;
    o.on_receive = node_on_receive;
    struct transport *t = NULL;
    char error[256];
    assert_int_equal(transport_start(&o, &t, error, sizeof error), -EADDRINUSE);
    assert_null(t);
    assert_non_null(strstr(error, nodes[0].members[0].address));
    o.self_id = 42; /* not a member */
    assert_int_equal(transport_start(&o, &t, error, sizeof error), -EINVAL);
    o.self_id = 2;
    o.members[1].id = 1; /* duplicate id */
    assert_int_equal(transport_start(&o, &t, error, sizeof error), -EINVAL);
    o.members[1].id = 2;
    snprintf(o.members[0].address, sizeof o.members[0].address, "bogus://nowhere");
    assert_true(transport_start(&o, &t, error, sizeof error) < 0); /* connect refuses it */
    assert_null(t);
}

static size_t env_size(const char *name, size_t fallback)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? (size_t)strtoull(v, NULL, 10) : fallback;
}

/* Not a pass/fail test: prints the one-way rate between two transports in one process.
 * CORRAL_BENCH_SMALL / CORRAL_BENCH_BIG set the message counts. */
static void test_transport_throughput(void **state)
{
    (void)state;
    size_t small = env_size("CORRAL_BENCH_SMALL", 20000);
    size_t big = env_size("CORRAL_BENCH_BIG", 32);
    cluster_configure(2, (size_t)1 << 30);
    node_start(&nodes[0]);
    node_start(&nodes[1]);
    nodes[1].keep = false;
    /* Connected first, so that the timing is of the transfer only. */
    assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, "hello", 5), 0);
    wait_count(&nodes[1], 1);

    uint8_t msg[200];
    memset(msg, 0x5A, sizeof msg);
    size_t base = nodes[1].count;
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < small; i++)
        assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_RAFT, msg, sizeof msg), 0);
    struct count_goal g = {&nodes[1], base + small};
    assert_true(run_until(count_reached, &g, 60000));
    double s1 = (double)(uv_hrtime() - t0) / 1e9;

    uint8_t *mib = calloc(1, CHUNK_SIZE);
    assert_non_null(mib);
    base = nodes[1].count;
    t0 = uv_hrtime();
    for (size_t i = 0; i < big; i++)
        assert_int_equal(transport_send(nodes[0].t, 2, TRANSPORT_CHANNEL_SNAPSHOT, mib, CHUNK_SIZE),
                         0);
    g.count = base + big;
    assert_true(run_until(count_reached, &g, 60000));
    double s2 = (double)(uv_hrtime() - t0) / 1e9;
    free(mib);
    assert_int_equal(stats_of(&nodes[1]).frames_rejected, 0);
    print_message("throughput: %zu x 200 B in %.3f s = %.0f msg/s; %zu x 1 MiB in %.3f s = "
                  "%.1f MB/s\n",
                  small, s1, (double)small / s1, big, s2, (double)big * CHUNK_SIZE / 1e6 / s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_transport_send__small_both_ways_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_send__5mib_message_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_send__peer_starting_later_gets_new_messages,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_receive__corrupt_frames_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_receive__wrong_version_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_receive__reassembly_drops_stale_and_gaps,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_stop__clean_with_queued_frames_and_assembly,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_send__queue_limit_drops_oldest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transport_start__errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transport_throughput, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nn_term();
    return failed;
}
