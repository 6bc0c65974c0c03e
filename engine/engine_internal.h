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
    engine_done_fn done;  /* NULL for the engine's own txns (expiry, reaping) */
    void *arg;
    bool is_multi;
};

struct engine {
    struct engine_options options;
    struct engine_host host;
    struct tree *tree;
    struct session_table sessions;
    struct overlay overlay;
    struct wal *wal;
    struct cluster *cluster;

    uint64_t proposed_index; /* last index handed out */
    uint64_t applied_index;
    uint64_t applied_term;
    struct inflight *inflight_head;
    struct inflight *inflight_tail;
    uint64_t inflight_count;

    bool wal_batch_outstanding;
    bool snapshot_in_flight;
    bool shutting_down;
    uint64_t last_snapshot_index;
    uint64_t log_bytes_since_snapshot; /* a few huge multis also call for a snapshot */
    uint64_t snapshots_written;
    uint64_t wal_batches;
    uint64_t wal_records;

    uint64_t next_session_check_ms;
    uint64_t next_reap_ms;

    /* Watches, event history and parked waiters (engine_watch.c). */
    struct watch_registry *watches;
    struct history *history; /* NULL during recovery: replayed txns are not news */
    struct waiter_index *waiters;
    struct engine_waiter *zxid_waiters; /* list, any order */
    struct engine_waiter *wake_head;    /* woken, to call back after the apply batch */
    struct engine_waiter *wake_tail;

    /* Scratch buffers reused by prep, to keep allocation off the request path. */
    struct bytes scratch_payload;
    char error_path[PATH_MAX_BYTES + PATH_SEQUENTIAL_DIGITS + 1];
};

/* engine.c */
void engine_log_message(struct engine *e, int level, const char *message);

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
/* Fails every parked waiter (shutdown). */
void engine_waiters_wake_all(struct engine *e);

#endif
