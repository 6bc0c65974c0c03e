/* engine_internal.h: what the engine's own files share and nobody else may see.
 *
 * The engine is split by concern: engine.c (request pipeline: prep, log, commit,
 * apply, recovery), session.c (the session table), overlay.c (the predicted state of
 * paths touched by txns still in flight, which prep validates against). */
#ifndef CORRAL_ENGINE_INTERNAL_H
#define CORRAL_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"
#include "engine.h"
#include "path.h"
#include "tree.h"
#include "txn.h"

struct watch_registry;
struct history;
struct snapshot_job;
struct waiter_index;
struct wal;
struct cluster;

/* ---- sessions (session.c) ----
 * The session table is replicated state (sessions open and close through txns), plus
 * two fields that are local to the member: the deadline (a monotonic time, refreshed
 * by any request of the session) and `closing` (a close txn is in flight; prep state).
 * Each session lists the ephemeral nodes it owns, so that closing it deletes them
 * without scanning the tree. */
struct session {
    uint64_t id;
    uint32_t timeout_ms;
    bool closing;
    uint64_t deadline_ms;
    uint64_t last_write_index; /* this member's last proposal for the session (FIFO) */
    struct znode **ephemerals; /* owned array; the nodes belong to the tree */
    uint32_t ephemeral_count;
    uint32_t ephemeral_capacity;
    struct session *next; /* hash chain */
};

struct session_table {
    struct session **buckets;
    size_t bucket_count; /* power of two */
    size_t count;
};

int session_table_init(struct session_table *t);
void session_table_free(struct session_table *t);
struct session *session_find(const struct session_table *t, uint64_t id);
/* Adds a new session (the id must not exist). Returns it, or NULL when out of memory. */
struct session *session_add(struct session_table *t, uint64_t id, uint32_t timeout_ms);
void session_remove(struct session_table *t, struct session *s);
int session_ephemeral_add(struct session *s, struct znode *n);
void session_ephemeral_remove(struct session *s, const struct znode *n);
/* Calls fn for every session; fn must not add or remove sessions. */
void session_table_each(struct session_table *t, void (*fn)(void *arg, struct session *s),
                        void *arg);

/* ---- overlay (overlay.c) ----
 * Prep validates a request against the state the tree will have once every txn in
 * flight is applied (ZooKeeper's "outstanding changes"). The overlay holds that
 * predicted state for each path touched by an in-flight txn; paths it does not hold
 * are as in the tree. An entry records the index of the last txn that touched it and
 * goes away when that txn is applied (the tree then says the same). */
struct overlay_view {
    bool exists;
    int32_t version;
    int32_t cversion;
    uint32_t child_count;
    uint32_t flags;
    uint64_t ephemeral_owner;
};

struct overlay_entry {
    char *path; /* owned, NUL-terminated */
    size_t path_length;
    struct overlay_view view;
    uint64_t last_index;
    struct overlay_entry *next;
};

struct overlay {
    struct overlay_entry **buckets;
    size_t bucket_count;
    size_t count;
};

/* Saved state for undoing a failed multi: one record per entry changed. */
struct overlay_undo {
    struct overlay_undo_record *records;
    size_t count;
    size_t capacity;
};

int overlay_init(struct overlay *o);
void overlay_free(struct overlay *o);
struct overlay_entry *overlay_find(const struct overlay *o, const char *path, size_t length);
/* Sets the predicted view of a path, recording the previous state in undo. Returns 0 or
 * CORRAL_E_NO_MEMORY. */
int overlay_put(struct overlay *o, const char *path, size_t length, const struct overlay_view *v,
                uint64_t index, struct overlay_undo *undo);
/* Reverts every change recorded in undo (newest first) and empties it. */
void overlay_undo_apply(struct overlay *o, struct overlay_undo *undo);
void overlay_undo_free(struct overlay_undo *undo);
/* Drops the entries whose last change was the txn at index (it has been applied). */
void overlay_forget(struct overlay *o, const char *path, size_t length, uint64_t index);
void overlay_clear(struct overlay *o);
/* Calls fn for each entry. */
void overlay_each(struct overlay *o, void (*fn)(void *arg, struct overlay_entry *e), void *arg);

/* ---- the engine (engine.c; engine_watch.c for watches, history and waiters) ---- */

/* A txn between log and apply. */
struct inflight {
    struct inflight *next;
    uint64_t index;
    uint64_t term;
    struct bytes payload; /* the encoded txn; owned */
    engine_done_fn done;  /* NULL for the engine's own txns (expiry, reaping), and once
                             the client was told TIMEOUT */
    void *arg;
    uint64_t proposed_ms;
};

struct engine {
    struct engine_options options;
    struct engine_host host;
    struct tree *tree;
    struct session_table sessions;
    struct overlay overlay;
    struct wal *wal;
    struct raft *raft;
    /* The election timer's jitter: a splitmix64 sequence seeded once from the host's
     * random_bytes. The core asks for a number on every message that resets the timer
     * (each append, each heartbeat), and a getrandom syscall per message was a visible
     * share of a follower's syscalls; the jitter needs spread, not secrecy. */
    uint64_t jitter_state;

    uint64_t proposed_index; /* leader: last index it proposed */
    uint64_t applied_index;
    uint64_t applied_term;
    uint64_t snapshot_term; /* term of the snapshot loaded at start */
    struct inflight *inflight_head;
    struct inflight *inflight_tail;
    uint64_t inflight_count;

    bool snapshot_in_flight;
    int snapshot_pid;                        /* child writing a snapshot, 0 = none */
    struct snapshot_job *snapshot_child_job; /* its job, finished by engine_tick */
    /* The last image encoded on the loop, emptied, kept for the next one: its pages stay
     * mapped, so encoding does not fault them in again. Owned; freed by engine_close. */
    struct bytes snapshot_spare;
    bool shutting_down;
    uint64_t last_snapshot_index;
    uint64_t log_bytes_since_snapshot; /* a few huge multis also call for a snapshot */
    /* This member's draw for its next snapshot, in 1/1024ths of the configured
     * thresholds (512..1535, engine_snapshot_roll); 0 = the configured ones exactly
     * (standalone, and a cluster member until replication_open seeds the draw). */
    uint32_t snapshot_share;
    uint64_t last_snapshot_bytes; /* body length of the newest snapshot (0: none) */
    uint64_t snapshots_written;
    uint64_t last_snapshot_pause_us; /* the newest snapshot's stop of the loop */
    uint64_t wal_records;

    bool disk_low; /* free space under min_free_disk_bytes */
    uint64_t next_disk_check_ms;
    uint64_t next_session_check_ms;
    uint64_t next_reap_ms;
    uint64_t last_tick_ms; /* engine_now at the previous engine_tick (0: none yet) */

    /* Watches, event history and parked waiters (engine_watch.c). */
    struct watch_registry *watches;
    struct history *history; /* NULL during recovery: replayed txns are not news */
    struct waiter_index *waiters;
    struct engine_waiter *zxid_waiters; /* list, any order */
    struct engine_waiter *wake_head;    /* woken, to call back after the apply batch */
    int defer_wakes;        /* > 0 inside a wait call: callbacks wait for the next run */
    bool wake_soon_pending; /* host.wake_soon was asked and has not called back yet */
    struct engine_waiter *wake_tail;

    /* Replication (replication.c). */
    uint64_t term_start_index; /* leader: its term's first entry; it proposes once applied */
    bool ready_latch;          /* follower: caught up once with the current leader */
    struct deferred_log *deferred_head; /* log changes waiting for the batch in flight */
    struct deferred_log *deferred_tail;
    struct forward *forwards; /* follower: requests sent to the leader, awaiting a reply */
    uint64_t next_request_id;
    struct pending_read *reads; /* leader: read-index requests awaiting a majority round */
    uint64_t *touched;          /* follower: sessions heard from, for the leader */
    size_t touched_count;
    size_t touched_capacity;
    uint64_t next_touch_flush_ms;
    uint64_t install_index; /* follower: snapshot the leader announced, awaiting bytes */
    uint64_t install_term;
    bool snapshot_send_in_flight;
    uint64_t next_raft_tick_ms;
    uint64_t wal_batch_taken_ms; /* engine_now when the newest log batch was taken */
    uint64_t member_heard_ms[ENGINE_MAX_MEMBERS]; /* by position in options.members */

    /* Prep's error details for engine_error_set. */
    char error_path[PATH_MAX_BYTES + PATH_SEQUENTIAL_DIGITS + 1];
    const char *error_message; /* why prep refused, for engine_error_set */
};

/* engine.c */
void engine_logf(struct engine *e, int level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void engine_fatal(struct engine *e, const char *what);
uint64_t engine_now(struct engine *e);
/* Applies committed entries up to commit (those this member has), completes their
 * requests, then runs woken waiters. */
void engine_apply_committed(struct engine *e, uint64_t commit);
int engine_state_encode(struct engine *e, struct bytes *out);
int engine_state_decode(struct engine *e, const uint8_t *body, size_t length);
/* Drops leader-only prep state (overlay, closing marks) when leadership changes. */
void engine_prep_reset(struct engine *e);

/* replication.c */
struct raft_entry;
/* Creates the Raft core from the hard state, the snapshot position and the log
 * entries after it. */
int replication_open(struct engine *e, const struct raft_entry *entries, uint64_t count);
void replication_close(struct engine *e);
/* Proposes an encoded txn (leader). *index receives its position. Returns 0,
 * CORRAL_E_NOT_LEADER, CORRAL_E_NO_QUORUM or CORRAL_E_NO_MEMORY. */
int replication_propose(struct engine *e, const struct bytes *payload, uint64_t *index,
                        uint64_t *term);
/* 0 when this member may propose now; else why not (NOT_LEADER: forward it). */
int replication_can_propose(struct engine *e);
void replication_wal_kick(struct engine *e);
void replication_tick(struct engine *e);
/* The next number of the engine's splitmix64 sequence (jitter_state; seeded by
 * replication_open from the host's random_bytes). */
uint32_t replication_random_next(struct engine *e);
/* The engine took a snapshot at index (the core may forget entries before it). */
void replication_snapshot_taken(struct engine *e, uint64_t index, uint64_t term);
/* Follower side of a write: sends it to the leader; done is called once the result
 * is applied here. Returns 0 or a code (no leader: NO_QUORUM). */
int replication_forward_ops(struct engine *e, uint64_t session_id, const struct engine_op *ops,
                            size_t op_count, bool is_multi, engine_done_fn done, void *arg);
int replication_forward_session_open(struct engine *e, uint32_t timeout_ms, engine_done_fn done,
                                     void *arg);
int replication_forward_session_close(struct engine *e, uint64_t session_id, engine_done_fn done,
                                      void *arg);
/* A session was heard from on this member (a follower tells the leader, batched). */
void replication_session_heard(struct engine *e, uint64_t session_id);
bool replication_is_leader(const struct engine *e);

/* engine_watch.c */
void engine_stats_watch(const struct engine *e, struct engine_stats *out);
int engine_watch_init(struct engine *e);
void engine_watch_free(struct engine *e);
/* Starts the live history at the current applied zxid (after recovery). */
int engine_history_start(struct engine *e);
/* The events one applied op makes, in order, as watch_trigger and history see them. */
void engine_op_events(const struct txn_op *op, uint64_t zxid,
                      void (*emit)(void *arg, uint8_t type, const char *path, size_t length,
                                   uint64_t zxid),
                      void *arg);
/* Feeds one applied op's events to the watches, the history and the parked waiters. */
void engine_events_apply_op(struct engine *e, const struct txn_op *op, uint64_t zxid);
/* A session ended (closed or expired): drop its watches, wake its events poll. */
void engine_watch_session_ended(struct engine *e, uint64_t session_id);
/* Wakes zxid waiters now satisfied, then calls back everything woken. */
void engine_waiters_run(struct engine *e);
/* A zxid waiter whose target is not known yet (a read index on its way). *owner is
 * set to it and cleared when it is cancelled, armed or failed. */
struct engine_waiter *engine_waiter_pending_new(int *status, engine_wake_fn wake, void *arg,
                                                struct engine_waiter **owner);
/* Records the one pointer (outside the waiter lists) that refers to a pending waiter:
 * cancelling, arming or failing the waiter clears it, so that nothing is left holding
 * a freed waiter (the HTTP side cancels on timeout or disconnect). */
void engine_waiter_owner_set(struct engine_waiter *w, struct engine_waiter **owner);
/* Gives a waiter its target zxid (wakes it at once when already applied). */
void engine_waiter_arm(struct engine *e, struct engine_waiter *w, uint64_t zxid);
/* A waiter woken before its wait call returned: unqueues and frees it, true. */
bool engine_waiter_take_if_woken(struct engine *e, struct engine_waiter *w);
/* Wakes a waiter with an error status. */
void engine_waiter_fail(struct engine *e, struct engine_waiter *w, int status);
/* Fails every parked waiter (shutdown). */
void engine_waiters_wake_all(struct engine *e);

#endif
