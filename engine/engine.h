/* engine.h: the replicated state machine behind the HTTP API.
 *
 * The engine holds the znode tree and the session table, turns requests into txns
 * (prep), logs them (WAL, group commit), and applies committed txns to the tree
 * (apply), then completes the request. It takes snapshots and recovers from them.
 *
 * Threading: every call is made on one thread (the event loop). Blocking disk work
 * (WAL sync, snapshot writes) runs through host->run_blocking; its completion comes
 * back on the loop thread. There are no locks around the tree.
 *
 * Time and randomness come from the host, so that the engine can be driven by a
 * simulated clock in tests.
 *
 * The engine knows nothing of HTTP, JSON, libuv or nanomsg.
 */
#ifndef CORRAL_ENGINE_H
#define CORRAL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tree.h"
#include "wal.h"
#include "watch.h"

struct engine;

#define ENGINE_MAX_MEMBERS 7

/* What a message between members is for (the transport's channels carry the same
 * numbers; the engine never sees the transport itself). */
enum engine_channel {
    ENGINE_CHANNEL_RAFT = 1,     /* consensus messages */
    ENGINE_CHANNEL_SNAPSHOT = 2, /* a snapshot for a member too far behind */
    ENGINE_CHANNEL_FORWARD = 3,  /* a follower's request to the leader */
    ENGINE_CHANNEL_REPLY = 4,    /* the leader's answer to it */
    ENGINE_CHANNEL_SESSION = 5,  /* session keepalives, batched, to the leader */
};

struct engine_options {
    const char *data_dir;            /* WAL segments and snapshots; created if missing */
    uint32_t max_data_bytes;         /* per znode; 0 = 1 MiB */
    uint32_t tick_ms;                /* session timeouts are multiples; 0 = 2000 */
    uint32_t min_session_timeout_ms; /* 0 = 2 * tick */
    uint32_t max_session_timeout_ms; /* 0 = 20 * tick */
    uint64_t snapshot_every;         /* txns between snapshots; 0 = 100000 */
    uint64_t snapshot_log_bytes;     /* or log bytes between snapshots; 0 = 64 MiB */
    uint32_t snapshots_keep;         /* snapshot files kept; 0 = 3 */
    uint32_t reap_interval_ms;       /* container/TTL check interval; 0 = 60000 */
    uint64_t wal_segment_bytes;      /* 0 = 64 MiB */
    uint32_t wal_batches_in_flight;  /* log batches written at once; 0 = 1 (wal.h) */
    uint64_t history_events;         /* events kept in memory; 0 = 250,000 */
    uint64_t history_bytes;          /* bytes of events kept in memory; 0 = 32 MiB */
    /* Writes are refused (NO_SPACE) while the data dir's file system has less free
     * space than this, so that a full disk gives clients an answer instead of a failed
     * log write. 0 = 64 MiB. */
    uint64_t min_free_disk_bytes;
    /* Images up to this size are encoded on the loop thread instead of by a forked
     * child (measured here: a pause of 0.2 ms per MiB into the kept buffer, 3 ms per MiB
     * the first time, when its pages fault in); 0 = every snapshot forks when the host
     * can (engine_host.snapshot_fork). */
    uint64_t snapshot_inline_bytes;

    /* Replication. A standalone server is a cluster of one member (member_count 0 or
     * 1): the same Raft code path, in which a durable entry is at once committed. */
    uint64_t member_id;                   /* this member; 0 = 1 */
    uint64_t members[ENGINE_MAX_MEMBERS]; /* every member's id, self included */
    uint32_t member_count;
    uint32_t heartbeat_ms;        /* 0 = 50 */
    uint32_t election_timeout_ms; /* 0 = 300 (randomized in [T, 2T)) */
    uint32_t request_timeout_ms;  /* proposed but not committed in time: TIMEOUT; 0 = 5000 */
};

/* What the engine needs from its host. All callbacks are called on the loop thread
 * except `work` passed to run_blocking. */
struct engine_host {
    void *data;
    /* Wall clock, ms since the epoch: znode ctime/mtime. */
    int64_t (*wall_ms)(void *data);
    /* Monotonic clock, ms: session deadlines, reaper. */
    uint64_t (*monotonic_ms)(void *data);
    /* Fills buf with unpredictable bytes (session ids). */
    void (*random_bytes)(void *data, void *buf, size_t length);
    /* Runs work(arg) on a worker thread, then done(arg, status) on the loop thread.
     * Returns 0, or a negative errno when the job could not be queued. */
    int (*run_blocking)(void *data, void (*work)(void *arg), void (*done)(void *arg), void *arg);
    /* Severity: 0 debug, 1 info, 2 warn, 3 error. */
    void (*log)(void *data, int level, const char *message);
    /* Sends a message to another member (copied; delivery not guaranteed: the
     * protocols retry). NULL for a standalone server. */
    void (*send)(void *data, uint64_t to, enum engine_channel channel, const void *bytes,
                 size_t length);
    /* When true, the engine starts a log write only from engine_flush, which the host
     * calls once at the end of every loop turn (libuv's check phase): all writes that
     * arrived in that turn then share one fdatasync (or the next one, when a write is
     * in flight), and the followers get them when that write starts. When false
     * (tests), it starts one as soon as something is appended. */
    bool flush_at_loop_end;
    /* When true, a snapshot bigger than options.snapshot_inline_bytes is written by a
     * forked child from a copy-on-write image, so the loop never pauses to encode a big
     * tree (the host must not mind a short-lived child process; its SIGCHLD must not be
     * ignored). Otherwise, and when false, the image is encoded on the loop thread and
     * written by run_blocking. */
    bool snapshot_fork;
    /* Asks the host to call engine_waiters_flush soon on the loop thread, once the
     * answers already queued (the writers') have gone out; corrald uses a zero-delay
     * timer, which runs after the HTTP layer's own. Waking thousands of parked
     * long-polls takes a while (each renders its answer), and without this the writer
     * whose change woke them would hear last. NULL (tests): the engine wakes them at
     * once. */
    void (*wake_soon)(void *data);
};

/* Starts the next log write if one is due (see engine_host.flush_at_loop_end). */
void engine_flush(struct engine *e);

/* Wakes the parked requests that applied changes are due to wake (engine_host.wake_soon). */
void engine_waiters_flush(struct engine *e);

/* What recovery found, for the operator. */
struct engine_recovery_report {
    uint64_t snapshot_zxid;     /* 0 when no snapshot was loaded */
    uint32_t snapshots_skipped; /* corrupt snapshots passed over */
    uint64_t replayed;          /* txns replayed from the log */
    uint64_t zxid;              /* last applied after recovery */
    uint64_t wal_cut_bytes;
    uint32_t wal_cut_segments;
    uint64_t nodes;
    uint64_t sessions;
    uint64_t elapsed_ms;
};

/* Opens the data dir, loads the newest valid snapshot, replays the log after it (a
 * torn or corrupt tail is cut and reported), and gives every restored session a fresh
 * timeout. options and host are copied (host->data is borrowed for the engine's
 * life). On success *out is owned by the caller (engine_close). Returns 0,
 * CORRAL_E_IO, CORRAL_E_CORRUPT (the log contradicts itself) or CORRAL_E_NO_MEMORY. */
int engine_open(const struct engine_options *options, const struct engine_host *host,
                struct engine **out, struct engine_recovery_report *report);

/* Stops accepting writes: pending ones that were never logged fail with
 * CORRAL_E_SHUTTING_DOWN. Writes already in the log complete normally. */
void engine_shutdown_begin(struct engine *e);
/* True when nothing is in flight (no WAL batch, no snapshot write): safe to close. */
bool engine_idle(const struct engine *e);
/* Frees everything. engine_idle must be true. */
void engine_close(struct engine *e);

/* Drives time: elections and heartbeats, session expiry, container/TTL reaping,
 * request timeouts. Call it every 10 ms or so. */
void engine_tick(struct engine *e);

/* A message from another member (bytes borrowed for the call). */
void engine_receive(struct engine *e, uint64_t from, enum engine_channel channel, const void *bytes,
                    size_t length);

/* True when this member can serve: it has a leader (or is one) and has applied what
 * was committed when it learned of it. /health answers 503 otherwise. */
bool engine_ready(const struct engine *e);

/* The leader's id as this member knows it (0 = none); whether the leader can reach a
 * majority. */
uint64_t engine_leader_id(const struct engine *e);

/* This member's view of another: its log's last index known to match the leader's (a
 * leader knows; 0 otherwise), and when it was last heard from (0 = never;
 * monotonic ms). */
struct engine_member_info {
    uint64_t id;
    uint64_t match_index;
    bool heard;     /* this member has ever heard from it (followers do not talk to
                       each other: a follower knows only about the leader) */
    bool reachable; /* heard from within two election timeouts */
};
void engine_member_info_get(const struct engine *e, uint64_t id, struct engine_member_info *out);

/* ---- reads (local state, never wait) ---- */

uint64_t engine_applied_zxid(const struct engine *e);
uint64_t engine_commit_zxid(const struct engine *e);
uint64_t engine_epoch(const struct engine *e);
const char *engine_role_name(const struct engine *e);
uint64_t engine_member_id(const struct engine *e);
uint32_t engine_max_data_bytes(const struct engine *e);

/* The node at path (validated here: CORRAL_E_BAD_ARGUMENTS for a bad path). Returns 0
 * with *out borrowed until control returns to the loop, or CORRAL_E_NO_NODE. */
int engine_lookup(struct engine *e, const char *path, size_t length, const struct znode **out);

/* ---- writes ---- */

enum engine_op_type {
    ENGINE_OP_CREATE = 1,
    ENGINE_OP_SET = 2,
    ENGINE_OP_DELETE = 3,
    ENGINE_OP_CHECK = 4,
};

enum engine_create_flag {
    ENGINE_CREATE_EPHEMERAL = 1u << 0,
    ENGINE_CREATE_SEQUENTIAL = 1u << 1,
    ENGINE_CREATE_CONTAINER = 1u << 2,
};

/* One znode operation of a request. Everything is borrowed for the duration of the
 * submit call only: the engine copies what it keeps. */
struct engine_op {
    enum engine_op_type type;
    const char *path;
    size_t path_length;
    const void *data; /* CREATE, SET */
    size_t data_length;
    int32_t version; /* SET, DELETE, CHECK: expected version, -1 = any */
    uint32_t create_flags;
    int64_t ttl_ms; /* CREATE: > 0 makes a TTL node */
};

/* The outcome of one op once applied. */
struct engine_op_result {
    enum engine_op_type type;
    const char *path;       /* the actual path (sequential resolved); borrowed */
    struct znode_stat stat; /* after the op (CREATE, SET); zero for DELETE, CHECK */
};

/* The outcome of a request. Borrowed for the duration of the callback. */
struct engine_result {
    int error;              /* 0 or a negative CORRAL_E_* */
    int failed_index;       /* index of the failing op of a multi, else -1 */
    const char *error_path; /* the path the error is about, or NULL */
    const char *message;    /* why, in words (static storage), or NULL: the table's */
    uint64_t zxid;          /* the txn's zxid; the applied zxid for sync */
    size_t op_count;
    const struct engine_op_result *ops;
    uint64_t session_id; /* session open */
    uint32_t timeout_ms; /* session open: negotiated */
};

/* Called exactly once per request accepted by a submit call (which returned 0), on the
 * loop thread, after the txn is applied (or failed: IO, SHUTTING_DOWN). */
typedef void (*engine_done_fn)(void *arg, const struct engine_result *result);

/* Validates ops against the current state plus the changes in flight, logs them as
 * one txn and completes through done once applied. A multi (is_multi) is all or
 * nothing; a single op is a multi of one reported without index. session_id is the
 * issuing session (0 = none; ephemerals need one).
 * Returns 0 when accepted (done will be called), or a negative code right away with
 * *error filled (failed_index, error_path borrowed from ops), nothing changed. */
int engine_submit_ops(struct engine *e, uint64_t session_id, const struct engine_op *ops,
                      size_t op_count, bool is_multi, engine_done_fn done, void *arg,
                      struct engine_result *error);

/* ---- sessions ---- */

/* Opens a session; the timeout is clamped to [min, max]. done gets session_id and
 * timeout_ms. Returns 0 or a negative code (SHUTTING_DOWN). */
int engine_session_open(struct engine *e, uint32_t timeout_ms, engine_done_fn done, void *arg);

/* Closes a session and deletes its ephemerals in one txn. Returns 0, or
 * CORRAL_E_SESSION_EXPIRED when it is unknown, closed or closing. */
int engine_session_close(struct engine *e, uint64_t session_id, engine_done_fn done, void *arg);

/* Refreshes a live session's deadline. Returns 0 or CORRAL_E_SESSION_EXPIRED. */
int engine_session_touch(struct engine *e, uint64_t session_id);

struct engine_session_info {
    uint64_t id;
    uint32_t timeout_ms;
    uint64_t remaining_ms; /* until expiry if not heard from */
    size_t ephemeral_count;
    const struct znode *const *ephemerals; /* borrowed until control returns to the loop */
};

/* Returns 0 with *out filled, or CORRAL_E_SESSION_EXPIRED. */
int engine_session_info_get(struct engine *e, uint64_t session_id, struct engine_session_info *out);

/* ---- waiting: watches, events, zxids ----
 *
 * A waiter is a parked request. The engine calls wake(arg) exactly once, on the loop
 * thread, after the apply batch that satisfies it (or when it can never be satisfied:
 * session ended, shutdown); the waiter is freed by the engine right after wake returns,
 * so the caller forgets the handle then. engine_waiter_cancel (timeout, client gone)
 * frees it without a call. A wait function returns 1 when there is nothing to wait for
 * (no waiter made), 0 with *out set, or a negative code. */
struct engine_waiter;
typedef void (*engine_wake_fn)(void *arg);
void engine_waiter_cancel(struct engine *e, struct engine_waiter *w);

/* Waits until this server has applied zxid (Corral-Min-Zxid, sync, session FIFO). */
int engine_zxid_wait(struct engine *e, uint64_t zxid, engine_wake_fn wake, void *arg,
                     struct engine_waiter **out);

/* A linearizable point: wakes once this member has applied everything the leader had
 * committed when the call was made, confirmed by a heartbeat round with a majority
 * (Raft's read index, dissertation 6.4). Serves `sync` and ?linearizable=true reads.
 * *status is set before wake: 0, CORRAL_E_NO_QUORUM (no leader / no majority) or
 * CORRAL_E_TIMEOUT. status must stay valid until wake or cancel. */
int engine_linearizable_wait(struct engine *e, int *status, engine_wake_fn wake, void *arg,
                             struct engine_waiter **out);

/* The zxid a read of this session must wait for, so that it sees the session's own
 * earlier writes (FIFO): the session's last write still in flight, or 0. */
uint64_t engine_session_fifo_zxid(const struct engine *e, uint64_t session_id);

/* Registers a one-shot watch (ZooKeeper semantics, see watch.h) for a live session.
 * Returns 0, CORRAL_E_SESSION_EXPIRED, CORRAL_E_BAD_ARGUMENTS (path) or NO_MEMORY. */
int engine_watch_add(struct engine *e, uint64_t session_id, enum watch_kind kind, const char *path,
                     size_t length);
/* removeWatches: 0, CORRAL_E_NO_NODE (no such watch), SESSION_EXPIRED, BAD_ARGUMENTS. */
int engine_watch_remove(struct engine *e, uint64_t session_id, enum watch_kind kind,
                        const char *path, size_t length);

/* Moves the session's pending one-shot events to the caller (see watch_session_take). */
size_t engine_session_events_take(struct engine *e, uint64_t session_id,
                                  struct watch_event **events);
/* Number of one-shot events waiting for the session. */
size_t engine_session_events_pending(const struct engine *e, uint64_t session_id);
/* Waits until the session has pending events or ends. */
int engine_session_events_wait(struct engine *e, uint64_t session_id, engine_wake_fn wake,
                               void *arg, struct engine_waiter **out);

/* One event of the resumable watch; borrowed for the duration of the callback. */
struct engine_history_event {
    enum watch_event_type type;
    uint64_t zxid;
    const char *path;
    size_t path_length;
};
typedef int (*engine_history_fn)(void *arg, const struct engine_history_event *event);

/* Calls fn for every event with zxid > since on path (or, recursive, in its subtree),
 * oldest first: from memory, or from the log when memory does not reach back. Stops
 * after max_events, but only at a txn boundary, so that *resume (the zxid to pass as
 * `since` next time) never splits a txn. Returns 0, CORRAL_E_COMPACTED (neither memory
 * nor log reaches back to since; *resume is the current zxid), CORRAL_E_BAD_ARGUMENTS,
 * or CORRAL_E_IO. */
int engine_history_read(struct engine *e, const char *path, size_t length, bool recursive,
                        uint64_t since, size_t max_events, engine_history_fn fn, void *arg,
                        uint64_t *resume);

/* Waits until an event with zxid > since matches path (recursive: its subtree). */
int engine_history_wait(struct engine *e, const char *path, size_t length, bool recursive,
                        uint64_t since, engine_wake_fn wake, void *arg, struct engine_waiter **out);

/* ---- statistics ---- */

struct engine_stats {
    uint64_t nodes;
    uint64_t sessions;
    uint64_t data_bytes;
    uint64_t wal_records;
    struct wal_stats wal; /* the log's batches: count, cycle, pwrite, fdatasync, bytes */
    uint64_t snapshots_written;
    uint64_t last_snapshot_zxid;
    /* How long the newest snapshot stopped the loop: its fork(), or its encoding on the
     * loop for a small image (Redis's latest_fork_usec). 0 = none yet. */
    uint64_t last_snapshot_pause_us;
    uint64_t writes_in_flight;
    uint64_t watches;
    uint64_t waiters;
    uint64_t history_events;
    uint64_t history_bytes;
    uint64_t history_covered_from; /* memory holds every event after this zxid */
    uint64_t log_first_zxid;       /* the log on disk reaches back to here */
};
void engine_stats_get(const struct engine *e, struct engine_stats *out);

#endif
