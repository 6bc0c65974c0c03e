/* transport_nn.c: transport.h over nanomsg PUSH/PULL sockets, watched by uv_poll on the
 * loop thread (LIBS.md section 2.3), with framing, chunking and reassembly.
 *
 * Frame format, version 1. One nanomsg message carries exactly one frame; integers are
 * little-endian.
 *
 *   OFFSET SIZE DESCRIPTION
 *        0    4 magic: the bytes 'C' 'R' 'T' 'P'
 *        4    1 format version: 1
 *        5    1 channel (enum transport_channel, 1..5)
 *        6    2 flags: none defined in version 1; senders write 0, receivers ignore them
 *        8    8 sender id (must be a configured member other than the receiver)
 *       16    8 message id: per sender, increasing by 1 per message
 *       24    4 chunk index, 0 .. chunk count - 1
 *       28    4 chunk count, >= 1 (an empty message is one chunk of length 0)
 *       32    8 total length of the message, <= TRANSPORT_MESSAGE_MAX
 *       40    4 this chunk's length n: exactly TRANSPORT_CHUNK_SIZE for every chunk but
 *               the last, which holds the remainder; so chunk count, total length and
 *               n always agree, and a receiver checks them without trusting the sender
 *       44    4 CRC-32C (cluster_crc32c from 0) of bytes 0..43, then of the payload
 *       48    n payload: bytes [index * TRANSPORT_CHUNK_SIZE, + n) of the message
 *
 * A frame that is too short, has a foreign magic, another version, a bad CRC,
 * inconsistent lengths, an unknown channel or an unknown sender is dropped and counted
 * in frames_rejected; so is a chunk that does not continue its assembly (below).
 */
#include "transport.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/tcp.h>

#include "crc.h"

#define TRANSPORT_FRAME_VERSION 1
#define TRANSPORT_HEADER_SIZE 48
#define TRANSPORT_CRC_OFFSET 44

/* Chunks stay at 1 MiB: far below NN_RCVMAXSIZE, so nanomsg never drops a connection
 * over one of our frames, and small enough that one big snapshot does not hold a pipe
 * for long before a Raft heartbeat queued behind it goes out. */
#define TRANSPORT_CHUNK_SIZE ((size_t)1 << 20)

/* The largest message transport_send accepts and a receiver reassembles. A bound is
 * needed because the receiver allocates the whole message when the first chunk comes
 * in, on the word of a frame that is checksummed but not authenticated. */
#define TRANSPORT_MESSAGE_MAX ((uint64_t)256 << 20)

/* Memory held by incomplete reassemblies, all senders together. When a new message
 * would exceed it, the oldest incomplete assemblies are dropped first. */
#define TRANSPORT_ASSEMBLY_BUDGET ((size_t)512 << 20)

/* The inbox accepts nanomsg messages up to this size. Our frames are at most
 * TRANSPORT_HEADER_SIZE + TRANSPORT_CHUNK_SIZE; the slack lets an oversized foreign
 * message reach our checks (and be counted) instead of nanomsg silently resetting the
 * connection, which would also lose the good frames queued behind it. Note that in
 * nanomsg -1 means unlimited and 0 means "empty messages only" (LIBS.md 2.2). */
#define TRANSPORT_RCVMAXSIZE (8 << 20)

/* Socket buffers: nanomsg passes NN_SNDBUF/NN_RCVBUF to the kernel's SO_SNDBUF and
 * SO_RCVBUF for TCP (the kernel caps them at net.core.[wr]mem_max). Larger buffers mean
 * more throughput but also more accepted-then-lost messages when a peer dies; 1 MiB
 * holds one chunk. */
#define TRANSPORT_SOCKET_BUFFER (1 << 20)

/* NN_TCP_NODELAY: nanomsg leaves Nagle's algorithm on by default. A follower's answer is
 * a small message sent while the previous one may still be unacknowledged, and Nagle
 * then holds it until the leader's delayed ACK (up to 40 ms on Linux): with 8 writers a
 * 3-member cluster did 1,700 writes/s at p99 43 ms, and 6,900 at p99 10 ms without it.
 * Our frames are whole messages already, so there is nothing for Nagle to coalesce. */
#define TRANSPORT_TCP_NODELAY 1

#define TRANSPORT_RECONNECT_IVL_MS 100
#define TRANSPORT_RECONNECT_IVL_MAX_MS 2000
#define TRANSPORT_DEFAULT_QUEUE_LIMIT ((size_t)64 << 20)

/* Frames handled per inbox wakeup. NN_RCVFD is level-like (it stays signalled while
 * messages wait), so stopping early loses nothing: the poll fires again on the next
 * loop iteration, after the timers. Without the bound a fast sender could keep us in
 * this callback and starve the Raft election and heartbeat timers. */
#define TRANSPORT_RECEIVE_BATCH 4096

static const uint8_t transport_magic[4] = {'C', 'R', 'T', 'P'};

/* A frame waiting for its peer's pipe. */
struct transport_frame {
    struct transport_frame *next;
    void *msg; /* from nn_allocmsg; owned by the queue until nn_send succeeds with it */
    size_t size;
    uint64_t message_id;
    uint64_t queued_ms; /* uv_now when queued */
    uint8_t channel;
};

/* A queued protocol message older than this is dropped rather than sent: for a member
 * that is down, the queue would otherwise hand it a backlog of stale heartbeats and
 * appends when it comes back, which the protocols resend anyway (and which would keep
 * a far-behind member from being sent the snapshot it needs). Snapshot bytes are never
 * aged out: they are big and slow by nature. */
#define TRANSPORT_STALE_MS 1000

struct transport_peer {
    struct transport *t;
    uint64_t id;
    int push;       /* nanomsg PUSH socket connected to the peer's inbox; -1 = none */
    uv_poll_t poll; /* on NN_SNDFD; started only while the queue is non-empty */
    bool polling;
    struct transport_frame *head, *tail; /* FIFO of frames nanomsg has not accepted */
    size_t queued_bytes;
    uint64_t last_heard; /* uv_now of the last verified frame from this peer; 0 = never */
};

/* A message whose chunks are arriving. Chunks come in order because each sender has
 * one PUSH socket to our inbox, i.e. one TCP connection, so an assembly only ever grows
 * at its end; a gap means a chunk was lost (a reconnect) and the message never
 * completes. */
struct transport_assembly {
    struct transport_assembly *next; /* list in order of creation, oldest first */
    uint64_t sender;
    uint64_t message_id;
    uint8_t channel;
    uint32_t chunk_count;
    uint32_t next_index;
    size_t total;
    size_t received;
    uint8_t *data; /* owned: malloc(total) */
};

struct transport {
    uv_loop_t *loop;
    uint64_t self_id;
    transport_receive_fn on_receive;
    void *arg;
    size_t queue_limit;

    int inbox; /* nanomsg PULL socket bound at our own address; -1 = none */
    uv_poll_t inbox_poll;
    bool inbox_poll_ready;

    struct transport_peer peers[RAFT_MAX_MEMBERS - 1];
    uint32_t peer_count;
    uint32_t peers_poll_ready;

    struct transport_assembly *assemblies;
    size_t assembly_bytes;

    uint64_t next_message_id;
    struct transport_stats stats;

    /* Shutdown: uv handles first, nn sockets only after the last close callback. */
    bool stopping;
    unsigned open_handles;
    void (*closed)(void *arg);
    void *closed_arg;
};

/* ---- encoding ---------------------------------------------------------------------- */

static void transport_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void transport_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void transport_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t transport_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t transport_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static bool transport_channel_valid(uint32_t channel)
{
    return channel >= TRANSPORT_CHANNEL_RAFT && channel <= TRANSPORT_CHANNEL_SESSION;
}

/* Number of chunks a message of `total` bytes is split into (an empty one is one). */
static uint64_t transport_chunk_count(uint64_t total)
{
    return total == 0 ? 1 : (total + TRANSPORT_CHUNK_SIZE - 1) / TRANSPORT_CHUNK_SIZE;
}

/* The only valid length of chunk `index` of a message of `total` bytes. */
static uint64_t transport_chunk_length(uint64_t total, uint64_t index)
{
    uint64_t offset = index * TRANSPORT_CHUNK_SIZE;
    uint64_t rest = total - offset;
    return rest < TRANSPORT_CHUNK_SIZE ? rest : TRANSPORT_CHUNK_SIZE;
}

/* Builds one frame in a new NN_MSG buffer; returns it (the caller owns it: nn_send it or
 * nn_freemsg it), or NULL when out of memory. */
static void *transport_frame_build(const struct transport *t, uint64_t message_id, uint8_t channel,
                                   const uint8_t *data, size_t total, uint32_t index,
                                   uint32_t count, size_t *size_out)
{
    size_t n = (size_t)transport_chunk_length(total, index);
    uint8_t *msg = nn_allocmsg(TRANSPORT_HEADER_SIZE + n, 0);
    if (msg == NULL)
        return NULL;
    memcpy(msg, transport_magic, 4);
    msg[4] = TRANSPORT_FRAME_VERSION;
    msg[5] = channel;
    transport_put_u16(msg + 6, 0);
    transport_put_u64(msg + 8, t->self_id);
    transport_put_u64(msg + 16, message_id);
    transport_put_u32(msg + 24, index);
    transport_put_u32(msg + 28, count);
    transport_put_u64(msg + 32, total);
    transport_put_u32(msg + 40, (uint32_t)n);
    if (n > 0)
        memcpy(msg + TRANSPORT_HEADER_SIZE, data + (size_t)index * TRANSPORT_CHUNK_SIZE, n);
    uint32_t crc = cluster_crc32c(0, msg, TRANSPORT_CRC_OFFSET);
    crc = cluster_crc32c(crc, msg + TRANSPORT_HEADER_SIZE, n);
    transport_put_u32(msg + TRANSPORT_CRC_OFFSET, crc);
    *size_out = TRANSPORT_HEADER_SIZE + n;
    return msg;
}

/* ---- peers and their queues -------------------------------------------------------- */

static struct transport_peer *transport_peer_find(struct transport *t, uint64_t id)
{
    for (uint32_t i = 0; i < t->peer_count; i++)
        if (t->peers[i].id == id)
            return &t->peers[i];
    return NULL;
}

static void transport_frame_free(struct transport_frame *f)
{
    if (f->msg != NULL)
        nn_freemsg(f->msg);
    free(f);
}

/* Drops the oldest queued message: the head frame and the frames of the same message
 * behind it (the rest of a message is useless once one chunk is gone). */
static void transport_queue_drop_oldest(struct transport *t, struct transport_peer *p)
{
    struct transport_frame *f = p->head;
    assert(f != NULL);
    uint64_t message_id = f->message_id;
    while (f != NULL && f->message_id == message_id) {
        struct transport_frame *next = f->next;
        p->queued_bytes -= f->size;
        transport_frame_free(f);
        f = next;
    }
    p->head = f;
    if (f == NULL)
        p->tail = NULL;
    t->stats.messages_dropped++;
}

static void transport_queue_drop_stale(struct transport *t, struct transport_peer *p)
{
    uint64_t now = uv_now(t->loop);
    while (p->head != NULL && p->head->channel != TRANSPORT_CHANNEL_SNAPSHOT &&
           now - p->head->queued_ms > TRANSPORT_STALE_MS)
        transport_queue_drop_oldest(t, p);
}

static void transport_queue_clear(struct transport_peer *p)
{
    while (p->head != NULL) {
        struct transport_frame *next = p->head->next;
        transport_frame_free(p->head);
        p->head = next;
    }
    p->tail = NULL;
    p->queued_bytes = 0;
}

static void transport_peer_on_writable(uv_poll_t *handle, int status, int events);

/* Watch NN_SNDFD exactly while frames wait: it is level-like and reads as "readable"
 * whenever the socket can send, so leaving it on with an empty queue would spin. */
static void transport_peer_watch(struct transport_peer *p)
{
    bool want = p->head != NULL && !p->t->stopping;
    if (want && !p->polling) {
        if (uv_poll_start(&p->poll, UV_READABLE, transport_peer_on_writable) == 0)
            p->polling = true;
    } else if (!want && p->polling) {
        uv_poll_stop(&p->poll);
        p->polling = false;
    }
}

/* Hands queued frames to nanomsg until its pipe is full (EAGAIN) or the queue is empty. */
static void transport_peer_flush(struct transport *t, struct transport_peer *p)
{
    transport_queue_drop_stale(t, p);
    while (p->head != NULL) {
        struct transport_frame *f = p->head;
        if (nn_send(p->push, &f->msg, NN_MSG, NN_DONTWAIT) < 0) {
            int err = nn_errno();
            if (err == EINTR)
                continue;
            /* EAGAIN: not connected or pipe full; wait for NN_SNDFD. Anything else
             * (EBADF, ETERM) means nanomsg is shutting down: the frames stay queued
             * and are freed with the transport. Either way the buffer is still ours. */
            break;
        }
        f->msg = NULL; /* nanomsg owns it now */
        t->stats.frames_sent++;
        p->head = f->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->queued_bytes -= f->size;
        free(f);
    }
    transport_peer_watch(p);
}

static void transport_peer_on_writable(uv_poll_t *handle, int status, int events)
{
    (void)status;
    (void)events;
    struct transport_peer *p = handle->data;
    if (p->t->stopping)
        return;
    transport_peer_flush(p->t, p);
}

/* Appends the frames of one message (list first..last, `bytes` in all) to the peer's
 * queue; takes ownership of them. Oldest messages go first when over the limit. */
static void transport_queue_append(struct transport *t, struct transport_peer *p,
                                   struct transport_frame *first, struct transport_frame *last,
                                   size_t bytes)
{
    if (bytes > t->queue_limit) {
        /* The message alone is over the limit: dropping everything older would not make
         * room, so this one is the message dropped. */
        while (first != NULL) {
            struct transport_frame *next = first->next;
            transport_frame_free(first);
            first = next;
        }
        t->stats.messages_dropped++;
        return;
    }
    transport_queue_drop_stale(t, p);
    while (p->head != NULL && p->queued_bytes + bytes > t->queue_limit)
        transport_queue_drop_oldest(t, p);
    uint64_t now = uv_now(t->loop);
    for (struct transport_frame *f = first; f != NULL; f = f->next)
        f->queued_ms = now;
    if (p->tail != NULL)
        p->tail->next = first;
    else
        p->head = first;
    p->tail = last;
    p->queued_bytes += bytes;
}

/* ---- receiving --------------------------------------------------------------------- */

static void transport_assembly_unlink(struct transport *t, struct transport_assembly *a)
{
    struct transport_assembly **pp = &t->assemblies;
    while (*pp != a)
        pp = &(*pp)->next;
    *pp = a->next;
    t->assembly_bytes -= a->total;
}

static void transport_assembly_free(struct transport_assembly *a)
{
    free(a->data);
    free(a);
}

static void transport_assembly_drop(struct transport *t, struct transport_assembly *a)
{
    transport_assembly_unlink(t, a);
    transport_assembly_free(a);
}

static struct transport_assembly *transport_assembly_find(struct transport *t, uint64_t sender,
                                                          uint64_t message_id)
{
    for (struct transport_assembly *a = t->assemblies; a != NULL; a = a->next)
        if (a->sender == sender && a->message_id == message_id)
            return a;
    return NULL;
}

/* A message from `sender` completed: its older incomplete messages can no longer
 * complete (chunks arrive in order on one connection), so free them now rather than
 * waiting for the memory budget to push them out. */
static void transport_assembly_drop_older(struct transport *t, uint64_t sender, uint64_t message_id)
{
    struct transport_assembly *a = t->assemblies;
    while (a != NULL) {
        struct transport_assembly *next = a->next;
        if (a->sender == sender && a->message_id < message_id)
            transport_assembly_drop(t, a);
        a = next;
    }
}

static void transport_deliver(struct transport *t, uint64_t from, uint8_t channel,
                              const uint8_t *data, size_t length)
{
    t->on_receive(t->arg, from, (enum transport_channel)channel, data, length);
}

/* Starts an assembly for chunk 0 of a multi-chunk message; false when it cannot be
 * kept (over the budget, out of memory). */
static bool transport_assembly_start(struct transport *t, uint64_t sender, uint64_t message_id,
                                     uint8_t channel, uint32_t count, size_t total,
                                     const uint8_t *payload, size_t n)
{
    struct transport_assembly *old = transport_assembly_find(t, sender, message_id);
    if (old != NULL) /* a restart of the same message: the new copy wins */
        transport_assembly_drop(t, old);
    if (total > TRANSPORT_ASSEMBLY_BUDGET)
        return false;
    while (t->assemblies != NULL && t->assembly_bytes + total > TRANSPORT_ASSEMBLY_BUDGET)
        transport_assembly_drop(t, t->assemblies);

    struct transport_assembly *a = calloc(1, sizeof *a); /* owned by t->assemblies */
    if (a == NULL)
        return false;
    a->data = malloc(total); /* owned by a */
    if (a->data == NULL) {
        free(a);
        return false;
    }
    a->sender = sender;
    a->message_id = message_id;
    a->channel = channel;
    a->chunk_count = count;
    a->next_index = 1;
    a->total = total;
    a->received = n;
    memcpy(a->data, payload, n);

    struct transport_assembly **pp = &t->assemblies; /* append: the list is oldest first */
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = a;
    t->assembly_bytes += total;
    return true;
}

/* Checks one received frame and hands a completed message up; returns false when the
 * frame is rejected. frame is borrowed. */
static bool transport_frame_accept(struct transport *t, const uint8_t *frame, size_t size)
{
    if (size < TRANSPORT_HEADER_SIZE || memcmp(frame, transport_magic, 4) != 0 ||
        frame[4] != TRANSPORT_FRAME_VERSION)
        return false;
    uint8_t channel = frame[5];
    uint64_t sender = transport_get_u64(frame + 8);
    uint64_t message_id = transport_get_u64(frame + 16);
    uint32_t index = transport_get_u32(frame + 24);
    uint32_t count = transport_get_u32(frame + 28);
    uint64_t total = transport_get_u64(frame + 32);
    uint32_t n = transport_get_u32(frame + 40);
    uint32_t crc = transport_get_u32(frame + TRANSPORT_CRC_OFFSET);
    const uint8_t *payload = frame + TRANSPORT_HEADER_SIZE;

    /* Lengths before the CRC, so the CRC is only computed over bytes we have. */
    if (n != size - TRANSPORT_HEADER_SIZE || total > TRANSPORT_MESSAGE_MAX ||
        count != transport_chunk_count(total) || index >= count ||
        n != transport_chunk_length(total, index))
        return false;
    uint32_t actual = cluster_crc32c(0, frame, TRANSPORT_CRC_OFFSET);
    actual = cluster_crc32c(actual, payload, n);
    if (actual != crc)
        return false;
    struct transport_peer *p = transport_peer_find(t, sender);
    if (p == NULL || !transport_channel_valid(channel))
        return false;

    /* Verified: the peer is alive, whatever becomes of the message. uv_now is never 0
     * in practice, but 0 means "never" to the caller. */
    uint64_t now = uv_now(t->loop);
    p->last_heard = now > 0 ? now : 1;

    if (count == 1) {
        /* The common case (Raft messages): no copy, straight from nanomsg's buffer. */
        transport_assembly_drop_older(t, sender, message_id);
        transport_deliver(t, sender, channel, payload, n);
        return true;
    }
    if (index == 0)
        return transport_assembly_start(t, sender, message_id, channel, count, (size_t)total,
                                        payload, n);

    struct transport_assembly *a = transport_assembly_find(t, sender, message_id);
    if (a == NULL)
        return false; /* its start was lost, rejected or dropped */
    if (a->next_index != index || a->chunk_count != count || a->total != total ||
        a->channel != channel) {
        transport_assembly_drop(t, a); /* a gap: this message can never complete */
        return false;
    }
    memcpy(a->data + a->received, payload, n);
    a->received += n;
    a->next_index++;
    if (a->next_index < a->chunk_count)
        return true;

    assert(a->received == a->total); /* follows from the per-chunk length check */
    /* Unlink before the callback: it may send, or stop the transport. */
    transport_assembly_unlink(t, a);
    transport_assembly_drop_older(t, sender, message_id);
    transport_deliver(t, sender, a->channel, a->data, a->total);
    transport_assembly_free(a);
    return true;
}

static void transport_inbox_on_readable(uv_poll_t *handle, int status, int events)
{
    (void)status; /* on an error the read below simply returns EAGAIN or EBADF */
    (void)events;
    struct transport *t = handle->data;
    for (int i = 0; i < TRANSPORT_RECEIVE_BATCH && !t->stopping; i++) {
        void *msg = NULL;
        int n = nn_recv(t->inbox, &msg, NN_MSG, NN_DONTWAIT);
        if (n < 0) {
            if (nn_errno() == EINTR)
                continue;
            break; /* EAGAIN: drained; EBADF/ETERM: shutting down */
        }
        /* msg is ours until nn_freemsg, on every path. */
        if (transport_frame_accept(t, msg, (size_t)n))
            t->stats.frames_received++;
        else
            t->stats.frames_rejected++;
        nn_freemsg(msg);
    }
}

/* ---- lifecycle --------------------------------------------------------------------- */

static void transport_set_error(char *error, size_t error_size, const char *what,
                                const char *address, int err)
{
    if (error != NULL && error_size > 0)
        snprintf(error, error_size, "%s %s: %s", what, address, nn_strerror(err));
}

/* The last step of a stop: no uv handle refers to the sockets any more, so they can be
 * closed (LIBS.md 2.3: uv handles before nn_close). Frees t. */
static void transport_release(struct transport *t)
{
    if (t->inbox >= 0)
        nn_close(t->inbox);
    for (uint32_t i = 0; i < t->peer_count; i++) {
        struct transport_peer *p = &t->peers[i];
        if (p->push >= 0)
            nn_close(p->push);
        transport_queue_clear(p);
    }
    while (t->assemblies != NULL)
        transport_assembly_drop(t, t->assemblies);
    void (*closed)(void *) = t->closed;
    void *arg = t->closed_arg;
    free(t);
    if (closed != NULL)
        closed(arg);
}

/* Close callbacks run in an order of libuv's choosing (LIFO in practice), so count them
 * and release only after the last one. */
static void transport_handle_closed(struct transport *t)
{
    assert(t->open_handles > 0);
    if (--t->open_handles == 0)
        transport_release(t);
}

static void transport_inbox_on_closed(uv_handle_t *handle)
{
    transport_handle_closed(handle->data);
}

static void transport_peer_on_closed(uv_handle_t *handle)
{
    struct transport_peer *p = handle->data;
    transport_handle_closed(p->t);
}

void transport_stop(struct transport *t, void (*closed)(void *arg), void *arg)
{
    assert(!t->stopping);
    t->stopping = true;
    t->closed = closed;
    t->closed_arg = arg;
    if (t->open_handles == 0) {
        transport_release(t); /* only from a transport_start that failed early */
        return;
    }
    if (t->inbox_poll_ready)
        uv_close((uv_handle_t *)&t->inbox_poll, transport_inbox_on_closed);
    for (uint32_t i = 0; i < t->peers_poll_ready; i++)
        uv_close((uv_handle_t *)&t->peers[i].poll, transport_peer_on_closed);
}

static int transport_set_int(int s, int level, int option, int value)
{
    return nn_setsockopt(s, level, option, &value, sizeof value);
}

static int transport_get_fd(int s, int option, int *fd)
{
    size_t size = sizeof *fd;
    return nn_getsockopt(s, NN_SOL_SOCKET, option, fd, &size);
}

/* The address our inbox binds. nanomsg's tcp bind takes only "*" or a numeric IPv4/IPv6
 * literal as its host (1.1.5 answers ENODEV to a DNS name, and even to an interface
 * name), while connect resolves names. So when our own peer address names a host
 * ("tcp://corral1:9181", as in docker compose, where every member is given the same
 * --cluster of service names) we bind every interface on its port instead: the peers
 * still connect to the name. A numeric address is bound as it is. */
static void transport_bind_address(const char *address, char *out, size_t size)
{
    const char *prefix = "tcp://";
    size_t prefix_length = strlen(prefix);
    const char *colon = strrchr(address, ':');
    snprintf(out, size, "%s", address);
    if (strncmp(address, prefix, prefix_length) != 0 || colon == NULL ||
        colon < address + prefix_length)
        return; /* not tcp, or no port: let nanomsg judge it */
    const char *host = address + prefix_length;
    size_t host_length = (size_t)(colon - host);
    if (host_length >= 2 && host[0] == '[' && host[host_length - 1] == ']') {
        host++;
        host_length -= 2;
    }
    char literal[64];
    if (host_length == 0 || host_length >= sizeof literal)
        return;
    memcpy(literal, host, host_length);
    literal[host_length] = '\0';
    struct in6_addr ip;
    if (strcmp(literal, "*") == 0 || inet_pton(AF_INET, literal, &ip) == 1 ||
        inet_pton(AF_INET6, literal, &ip) == 1)
        return;
    snprintf(out, size, "%s*%s", prefix, colon);
}

/* Fails start: frees t now if no uv handle exists yet, else once their close callbacks
 * have run (closed = NULL: the caller never saw t). */
static int transport_start_fail(struct transport *t, int err)
{
    transport_stop(t, NULL, NULL);
    return err;
}

int transport_start(const struct transport_options *options, struct transport **out, char *error,
                    size_t error_size)
{
    *out = NULL;
    if (error != NULL && error_size > 0)
        error[0] = '\0';
    if (options->loop == NULL || options->on_receive == NULL || options->member_count == 0 ||
        options->member_count > RAFT_MAX_MEMBERS) {
        if (error != NULL && error_size > 0)
            snprintf(error, error_size, "transport: bad options");
        return -EINVAL;
    }
    const struct transport_member *self = NULL;
    for (uint32_t i = 0; i < options->member_count; i++) {
        const struct transport_member *m = &options->members[i];
        bool duplicate = false;
        for (uint32_t j = 0; j < i; j++)
            duplicate = duplicate || options->members[j].id == m->id;
        if (duplicate || memchr(m->address, '\0', sizeof m->address) == NULL ||
            m->address[0] == '\0') {
            if (error != NULL && error_size > 0)
                snprintf(error, error_size, "transport: member %llu: duplicate id or bad address",
                         (unsigned long long)m->id);
            return -EINVAL;
        }
        if (m->id == options->self_id)
            self = m;
    }
    if (self == NULL) {
        if (error != NULL && error_size > 0)
            snprintf(error, error_size, "transport: self %llu is not a member",
                     (unsigned long long)options->self_id);
        return -EINVAL;
    }

    struct transport *t = calloc(1, sizeof *t); /* owned by the caller via *out */
    if (t == NULL)
        return -ENOMEM;
    t->loop = options->loop;
    t->self_id = options->self_id;
    t->on_receive = options->on_receive;
    t->arg = options->arg;
    t->queue_limit =
        options->queue_limit_bytes > 0 ? options->queue_limit_bytes : TRANSPORT_DEFAULT_QUEUE_LIMIT;
    t->inbox = -1;
    /* Message ids start at the wall clock in ns so that a restarted sender's ids are
     * (almost always) above those it used before, and a receiver's "a newer message
     * completed" clean-up keeps working across restarts. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->next_message_id = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;

    for (uint32_t i = 0; i < options->member_count; i++) {
        if (options->members[i].id == t->self_id)
            continue;
        struct transport_peer *p = &t->peers[t->peer_count++];
        p->t = t;
        p->id = options->members[i].id;
        p->push = -1;
    }

    /* nanomsg sockets first: until a uv handle exists, failing is synchronous. */
    int err = 0;
    char bind_address[sizeof self->address];
    transport_bind_address(self->address, bind_address, sizeof bind_address);
    t->inbox = nn_socket(AF_SP, NN_PULL);
    if (t->inbox < 0 ||
        transport_set_int(t->inbox, NN_SOL_SOCKET, NN_RCVMAXSIZE, TRANSPORT_RCVMAXSIZE) < 0 ||
        transport_set_int(t->inbox, NN_SOL_SOCKET, NN_RCVBUF, TRANSPORT_SOCKET_BUFFER) < 0 ||
        transport_set_int(t->inbox, NN_TCP, NN_TCP_NODELAY, TRANSPORT_TCP_NODELAY) < 0 ||
        nn_bind(t->inbox, bind_address) < 0) {
        err = nn_errno();
        transport_set_error(error, error_size, "transport: bind", bind_address, err);
        return transport_start_fail(t, -err);
    }
    uint32_t peer = 0;
    for (uint32_t i = 0; i < options->member_count; i++) {
        const struct transport_member *m = &options->members[i];
        if (m->id == t->self_id)
            continue;
        struct transport_peer *p = &t->peers[peer++];
        p->push = nn_socket(AF_SP, NN_PUSH);
        if (p->push < 0 ||
            transport_set_int(p->push, NN_SOL_SOCKET, NN_SNDBUF, TRANSPORT_SOCKET_BUFFER) < 0 ||
            transport_set_int(p->push, NN_TCP, NN_TCP_NODELAY, TRANSPORT_TCP_NODELAY) < 0 ||
            transport_set_int(p->push, NN_SOL_SOCKET, NN_RECONNECT_IVL,
                              TRANSPORT_RECONNECT_IVL_MS) < 0 ||
            transport_set_int(p->push, NN_SOL_SOCKET, NN_RECONNECT_IVL_MAX,
                              TRANSPORT_RECONNECT_IVL_MAX_MS) < 0 ||
            nn_connect(p->push, m->address) < 0) {
            err = nn_errno();
            transport_set_error(error, error_size, "transport: connect", m->address, err);
            return transport_start_fail(t, -err);
        }
    }

    /* Then the uv handles, on nanomsg's eventfds (never read, written or closed by us). */
    int fd = -1;
    if (transport_get_fd(t->inbox, NN_RCVFD, &fd) < 0) {
        err = nn_errno();
        transport_set_error(error, error_size, "transport: NN_RCVFD", self->address, err);
        return transport_start_fail(t, -err);
    }
    err = uv_poll_init(t->loop, &t->inbox_poll, fd);
    if (err < 0)
        goto uv_failed;
    t->inbox_poll.data = t;
    t->inbox_poll_ready = true;
    t->open_handles++;
    for (uint32_t i = 0; i < t->peer_count; i++) {
        struct transport_peer *p = &t->peers[i];
        if (transport_get_fd(p->push, NN_SNDFD, &fd) < 0) {
            err = nn_errno();
            transport_set_error(error, error_size, "transport: NN_SNDFD", self->address, err);
            return transport_start_fail(t, -err);
        }
        err = uv_poll_init(t->loop, &p->poll, fd);
        if (err < 0)
            goto uv_failed;
        p->poll.data = p;
        t->peers_poll_ready++;
        t->open_handles++;
    }
    err = uv_poll_start(&t->inbox_poll, UV_READABLE, transport_inbox_on_readable);
    if (err < 0)
        goto uv_failed;
    *out = t;
    return 0;

uv_failed: /* libuv errors are already negative errno values */
    if (error != NULL && error_size > 0)
        snprintf(error, error_size, "transport: uv_poll: %s", uv_strerror(err));
    return transport_start_fail(t, err);
}

int transport_send(struct transport *t, uint64_t to, enum transport_channel channel,
                   const void *data, size_t length)
{
    struct transport_peer *p = t->stopping ? NULL : transport_peer_find(t, to);
    if (p == NULL || !transport_channel_valid(channel) || length > TRANSPORT_MESSAGE_MAX ||
        (length > 0 && data == NULL))
        return -EINVAL;
    uint64_t message_id = t->next_message_id++;
    uint32_t count = (uint32_t)transport_chunk_count(length);

    if (count == 1 && p->head == NULL) {
        /* Fast path: one frame, nothing queued ahead of it, so try nanomsg right away
         * and allocate a queue entry only if its pipe is full. */
        size_t size = 0;
        void *msg =
            transport_frame_build(t, message_id, (uint8_t)channel, data, length, 0, 1, &size);
        if (msg == NULL)
            return -ENOMEM;
        for (;;) {
            if (nn_send(p->push, &msg, NN_MSG, NN_DONTWAIT) >= 0) {
                t->stats.frames_sent++; /* nanomsg owns msg now */
                return 0;
            }
            if (nn_errno() != EINTR)
                break;
        }
        struct transport_frame *f = calloc(1, sizeof *f); /* owned by p's queue */
        if (f == NULL) {
            nn_freemsg(msg); /* a failed nn_send leaves the buffer with us */
            return -ENOMEM;
        }
        f->msg = msg;
        f->size = size;
        f->message_id = message_id;
        f->channel = (uint8_t)channel;
        transport_queue_append(t, p, f, f, size);
        transport_peer_watch(p);
        return 0;
    }

    /* Build every frame before queueing any, so that -ENOMEM leaves nothing half sent. */
    struct transport_frame *first = NULL, *last = NULL;
    size_t bytes = 0;
    for (uint32_t i = 0; i < count; i++) {
        struct transport_frame *f = calloc(1, sizeof *f); /* owned by the list, then p */
        if (f != NULL)
            f->msg = transport_frame_build(t, message_id, (uint8_t)channel, data, length, i, count,
                                           &f->size);
        if (f == NULL || f->msg == NULL) {
            free(f);
            while (first != NULL) {
                struct transport_frame *next = first->next;
                transport_frame_free(first);
                first = next;
            }
            return -ENOMEM;
        }
        f->message_id = message_id;
        f->channel = (uint8_t)channel;
        if (last != NULL)
            last->next = f;
        else
            first = f;
        last = f;
        bytes += f->size;
    }
    transport_queue_append(t, p, first, last, bytes);
    transport_peer_flush(t, p);
    return 0;
}

uint64_t transport_last_heard(const struct transport *t, uint64_t id)
{
    for (uint32_t i = 0; i < t->peer_count; i++)
        if (t->peers[i].id == id)
            return t->peers[i].last_heard;
    return 0;
}

void transport_stats_get(const struct transport *t, struct transport_stats *out)
{
    *out = t->stats;
}
