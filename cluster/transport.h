/* transport.h: messages between members, over nanomsg, driven by the libuv loop.
 *
 * Each member binds one PULL socket (its inbox, at its peer address) and connects one
 * PUSH socket to every other member's inbox (LIBS.md section 2: PUSH/PULL is the only
 * nanomsg pattern that fits; nanomsg's sockets are watched through their NN_RCVFD /
 * NN_SNDFD descriptors with uv_poll, so there is no thread of ours). nanomsg
 * reconnects by itself; a message accepted by nn_send may still be lost when a peer
 * dies, so the protocols above retry on their own (Raft does).
 *
 * Every message is framed: a versioned header with the sender, a channel (which upper
 * layer it is for), a length and a CRC-32C, so that a corrupt or foreign frame is
 * dropped and counted rather than handed up. A message larger than one frame (a
 * snapshot, a big batch of entries) is split into chunks and reassembled, because
 * nanomsg drops a whole connection, silently, on a message above NN_RCVMAXSIZE.
 *
 * The transport knows nothing of what it carries.
 */
#ifndef CORRAL_TRANSPORT_H
#define CORRAL_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "raft.h"

/* Which layer a message is for. */
enum transport_channel {
    TRANSPORT_CHANNEL_RAFT = 1,     /* raft_message_encode'd consensus messages */
    TRANSPORT_CHANNEL_SNAPSHOT = 2, /* snapshot bytes for a lagging follower */
    TRANSPORT_CHANNEL_FORWARD = 3,  /* a follower's request to the leader */
    TRANSPORT_CHANNEL_REPLY = 4,    /* the leader's answer to a forwarded request */
    TRANSPORT_CHANNEL_SESSION = 5,  /* session keepalives, batched, to the leader */
};

struct transport_member {
    uint64_t id;
    char address[256]; /* nanomsg address of its inbox, "tcp://127.0.0.1:9181" */
};

/* Called on the loop thread for every complete, verified message. data is borrowed
 * for the duration of the call. */
typedef void (*transport_receive_fn)(void *arg, uint64_t from, enum transport_channel channel,
                                     const uint8_t *data, size_t length);

struct transport_options {
    uv_loop_t *loop;
    uint64_t self_id;
    struct transport_member members[RAFT_MAX_MEMBERS]; /* all members, self included */
    uint32_t member_count;
    transport_receive_fn on_receive;
    void *arg;
    /* Messages queued per peer while its pipe is full or not connected, in bytes;
     * beyond it the oldest queued messages are dropped (the protocols retry). 0 = 64 MiB. */
    size_t queue_limit_bytes;
};

struct transport;

/* Binds the inbox, connects to the peers, starts watching. Returns 0 with *out owned
 * by the caller (transport_stop frees it), or a negative errno (message in error). */
int transport_start(const struct transport_options *options, struct transport **out, char *error,
                    size_t error_size);

/* Queues a message to a member (copied). Returns 0, or -EINVAL (unknown member, self),
 * -ENOMEM. Delivery is not guaranteed. */
int transport_send(struct transport *t, uint64_t to, enum transport_channel channel,
                   const void *data, size_t length);

/* When a message from member id was last received (loop time, ms; 0 = never). */
uint64_t transport_last_heard(const struct transport *t, uint64_t id);

struct transport_stats {
    uint64_t frames_sent;
    uint64_t frames_received;
    uint64_t frames_rejected;  /* bad header, version or checksum */
    uint64_t messages_dropped; /* queue over its limit */
};
void transport_stats_get(const struct transport *t, struct transport_stats *out);

/* Stops watching, closes the uv handles, then the nanomsg sockets; frees t and calls
 * closed(arg) once the loop has run the close callbacks. */
void transport_stop(struct transport *t, void (*closed)(void *arg), void *arg);

#endif
