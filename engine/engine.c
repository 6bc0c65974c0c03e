/* engine.c: the request pipeline of the state machine: prep -> log -> commit -> apply.
 *
 * A write goes through four steps, all on the loop thread except the disk sync:
 *
 *   prep    validates the request against the tree plus the overlay (the predicted
 *           effect of txns still in flight) and encodes a fully resolved txn: the
 *           sequential name, the time and session ids are fixed here, once, by the
 *           member that accepts the write (the leader).
 *   log     the cluster assigns the txn its zxid (log index) and the txn is appended
 *           to the WAL's pending buffer. At most one WAL batch (write + fdatasync) runs
 *           at a time on a worker; everything appended meanwhile waits for the next
 *           batch, so concurrent writers share one sync (group commit).
 *   commit  when a batch is durable, the cluster is told; a cluster of one commits at
 *           once, a quorum once a majority has it. This is the only seam between
 *           "appended" and "committed", and the tree code below never sees it.
 *   apply   committed txns are applied in zxid order, the overlay entries they made
 *           are dropped (the tree now says the same), and the request completes.
 *
 * Invariants:
 *   - applied_index <= commit index <= proposed_index, and in-flight txns are exactly
 *     the indices (applied_index, proposed_index], queued in index order.
 *   - No client is answered before its txn is durable (and committed) and applied.
 *   - Apply is a pure function of (state, txn); it never consults the clock, the
 *     overlay or any member-local field except session deadlines, which are not part
 *     of the replicated state.
 *
 * Recovery: newest valid snapshot (a corrupt one is skipped for an older one), then
 * the WAL after it, replayed through the same apply. Restored sessions get a fresh
 * timeout, as ZooKeeper does, so a restart does not expire every client.
 */
#include "engine.h"

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine_internal.h"
#include "raft.h"
#include "path.h"
#include "snapshot.h"
#include "txn.h"
#include "wal.h"

#define ENGINE_DEFAULT_MAX_DATA (1024u * 1024u)
#define ENGINE_DEFAULT_TICK_MS 2000u
#define ENGINE_DEFAULT_SNAPSHOT_EVERY 100000u
#define ENGINE_DEFAULT_SNAPSHOT_LOG_BYTES (64u * 1024u * 1024u)
#define ENGINE_SNAPSHOT_PIECE_BYTES (1u << 20) /* a forked child writes its image in these */
#define ENGINE_DEFAULT_SNAPSHOTS_KEEP 3u
#define ENGINE_DEFAULT_REAP_INTERVAL_MS 60000u
#define ENGINE_SNAPSHOT_BODY_VERSION 1u
/* ZooKeeper's EphemeralType.MAX_TTL: 2^40 - 1 ms. */
#define ENGINE_MAX_TTL_MS ((int64_t)0xFFFFFFFFFF)

/* ------------------------------------------------------------------------------ */
/* small helpers                                                                    */

void engine_logf(struct engine *e, int level, const char *format, ...)
{
    if (!e->host.log)
        return;
    char message[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    e->host.log(e->host.data, level, message);
}

_Noreturn void engine_fatal(struct engine *e, const char *what)
{
    /* The state in memory no longer matches the log, or the log cannot be made durable:
     * answering anything now could acknowledge a lie. Stop, and let recovery rebuild
     * from disk (PostgreSQL does the same on an fsync failure). */
    engine_logf(e, 3, "fatal: %s; stopping so that recovery rebuilds from disk", what);
    abort();
}

uint64_t engine_now(struct engine *e)
{
    return e->host.monotonic_ms(e->host.data);
}

static void engine_error_set(struct engine *e, struct engine_result *error, int code, int index,
                             const char *path, size_t path_length)
{
    if (!error)
        return;
    memset(error, 0, sizeof *error);
    error->error = code;
    error->failed_index = index;
    error->message = code == CORRAL_E_BAD_ARGUMENTS ? e->error_message : NULL;
    e->error_message = NULL;
    if (path) {
        if (path_length >= sizeof e->error_path)
            path_length = sizeof e->error_path - 1;
        memcpy(e->error_path, path, path_length);
        e->error_path[path_length] = '\0';
        error->error_path = e->error_path;
    }
}

/* ------------------------------------------------------------------------------ */
/* prep: the predicted view of a path                                               */

static bool view_get(struct engine *e, const char *path, size_t length, struct overlay_view *out)
{
    struct overlay_entry *entry = overlay_find(&e->overlay, path, length);
    if (entry) {
        *out = entry->view;
        return out->exists;
    }
    struct znode *n = tree_lookup(e->tree, path, length);
    if (!n) {
        memset(out, 0, sizeof *out);
        return false;
    }
    out->exists = true;
    out->version = n->version;
    out->cversion = n->cversion;
    out->child_count = n->child_count;
    out->flags = n->flags;
    out->ephemeral_owner = n->ephemeral_owner;
    return true;
}

static bool session_live(struct engine *e, uint64_t id)
{
    struct session *s = session_find(&e->sessions, id);
    return s && !s->closing;
}

/* Prep of one op. On success fills *op (paths borrowed from the request or from
 * *resolved, which the caller frees) and records the predicted effect in the overlay
 * (with undo). Returns 0 or a negative code. */
/* Refuses an op as BAD_ARGUMENTS, saying why (static text, reported to the client). */
static int prep_refuse(struct engine *e, const char *why)
{
    e->error_message = why;
    return CORRAL_E_BAD_ARGUMENTS;
}

static int prep_one(struct engine *e, uint64_t session_id, const struct engine_op *request,
                    uint64_t index, struct txn_op *op, char **resolved, struct overlay_undo *undo)
{
    const char *path = request->path;
    size_t length = request->path_length;
    bool sequential =
        request->type == ENGINE_OP_CREATE && (request->create_flags & ENGINE_CREATE_SEQUENTIAL);
    const char *problem = path_problem(path, length, sequential);
    if (problem)
        return prep_refuse(e, problem);
    if (path_is_reserved(path, length))
        return prep_refuse(e, "/zookeeper is reserved");
    if ((request->type == ENGINE_OP_CREATE || request->type == ENGINE_OP_SET) &&
        request->data_length > e->options.max_data_bytes)
        return prep_refuse(e, "the data is larger than --max-data-bytes");

    memset(op, 0, sizeof *op);
    op->version = request->version;
    struct overlay_view view;
    int rc;

    switch (request->type) {
    case ENGINE_OP_CREATE: {
        uint32_t cflags = request->create_flags;
        bool ephemeral = cflags & ENGINE_CREATE_EPHEMERAL;
        bool container = cflags & ENGINE_CREATE_CONTAINER;
        if (request->ttl_ms < 0 || request->ttl_ms > ENGINE_MAX_TTL_MS)
            return prep_refuse(e, "ttl_ms must be between 0 and 2^40-1");
        if (container && (ephemeral || sequential || request->ttl_ms > 0))
            return prep_refuse(e, "a container cannot be ephemeral, sequential or have a TTL");
        if (ephemeral && request->ttl_ms > 0)
            return prep_refuse(e, "an ephemeral node cannot have a TTL");
        if (!sequential && length == 1)
            return prep_refuse(e, "the root exists and cannot be created");
        if (ephemeral) {
            if (session_id == 0)
                return prep_refuse(e, "an ephemeral node needs a Corral-Session");
            if (!session_live(e, session_id))
                return CORRAL_E_SESSION_EXPIRED;
        }
        /* The parent is what precedes the last '/', for a sequential prefix too
         * ("/a/" and "/a/lock-" both have the parent "/a"). */
        size_t slash = length - 1;
        while (path[slash] != '/')
            slash--;
        size_t parent_length = slash == 0 ? 1 : slash;
        struct overlay_view parent;
        if (!view_get(e, path, parent_length, &parent))
            return CORRAL_E_NO_NODE;
        if (parent.flags & ZNODE_EPHEMERAL)
            return CORRAL_E_NO_CHILDREN_FOR_EPHEMERALS;
        if (sequential) {
            /* ZooKeeper: the suffix is the parent's cversion before this create. */
            char *full = malloc(length + 16); /* owned by the caller via *resolved */
            if (!full)
                return CORRAL_E_NO_MEMORY;
            memcpy(full, path, length);
            int digits = snprintf(full + length, 16, "%010" PRId32, parent.cversion);
            *resolved = full;
            path = full;
            length += (size_t)digits;
            if (length > PATH_MAX_BYTES)
                return prep_refuse(e, "the path is longer than 4096 bytes");
        }
        if (view_get(e, path, length, &view))
            return CORRAL_E_NODE_EXISTS;
        op->type = TXN_OP_CREATE;
        op->flags = (ephemeral ? ZNODE_EPHEMERAL : 0) | (container ? ZNODE_CONTAINER : 0) |
                    (request->ttl_ms > 0 ? ZNODE_TTL : 0);
        op->ephemeral_owner = ephemeral ? session_id : 0;
        op->ttl_ms = request->ttl_ms;
        op->data = request->data;
        op->data_length = (uint32_t)request->data_length;
        struct overlay_view created = {
            .exists = true, .flags = op->flags, .ephemeral_owner = op->ephemeral_owner};
        if ((rc = overlay_put(&e->overlay, path, length, &created, index, undo)) != 0)
            return rc;
        parent.cversion++;
        parent.child_count++;
        if ((rc = overlay_put(&e->overlay, path, parent_length, &parent, index, undo)) != 0)
            return rc;
        break;
    }
    case ENGINE_OP_SET:
        if (!view_get(e, path, length, &view))
            return CORRAL_E_NO_NODE;
        if (request->version != -1 && request->version != view.version)
            return CORRAL_E_BAD_VERSION;
        op->type = TXN_OP_SET;
        op->data = request->data;
        op->data_length = (uint32_t)request->data_length;
        view.version++;
        if ((rc = overlay_put(&e->overlay, path, length, &view, index, undo)) != 0)
            return rc;
        break;
    case ENGINE_OP_DELETE: {
        if (length == 1)
            return prep_refuse(e, "the root cannot be deleted");
        if (!view_get(e, path, length, &view))
            return CORRAL_E_NO_NODE;
        if (request->version != -1 && request->version != view.version)
            return CORRAL_E_BAD_VERSION;
        if (view.child_count > 0)
            return CORRAL_E_NOT_EMPTY;
        size_t parent_length = path_parent_length(path, length);
        struct overlay_view parent;
        view_get(e, path, parent_length, &parent);
        op->type = TXN_OP_DELETE;
        struct overlay_view deleted = {.exists = false};
        if ((rc = overlay_put(&e->overlay, path, length, &deleted, index, undo)) != 0)
            return rc;
        parent.cversion++;
        parent.child_count--;
        if ((rc = overlay_put(&e->overlay, path, parent_length, &parent, index, undo)) != 0)
            return rc;
        break;
    }
    case ENGINE_OP_CHECK:
        if (!view_get(e, path, length, &view))
            return CORRAL_E_NO_NODE;
        if (request->version != -1 && request->version != view.version)
            return CORRAL_E_BAD_VERSION;
        op->type = TXN_OP_CHECK;
        break;
    default:
        return CORRAL_E_BAD_ARGUMENTS;
    }
    op->path = path;
    op->path_length = (uint32_t)length;
    return 0;
}

/* ------------------------------------------------------------------------------ */
/* log: propose, append, group commit                                               */

/* Puts an encoded txn into the replicated log (this member leads). Takes ownership of
 * *payload (moved into the in-flight record). Returns 0 or a negative code (nothing
 * proposed). */
static int engine_propose(struct engine *e, struct bytes *payload, engine_done_fn done, void *arg)
{
    struct inflight *f = calloc(1, sizeof *f); /* owned by the in-flight queue */
    if (!f)
        return CORRAL_E_NO_MEMORY;
    uint64_t predicted = e->proposed_index + 1;
    uint64_t index = 0, term = 0;
    /* Queue the record first: the update that proposes may already commit it (a
     * cluster of one whose disk is idle cannot, but nothing here relies on that). */
    f->payload = *payload;
    f->done = done;
    f->arg = arg;
    f->proposed_ms = engine_now(e);
    f->index = predicted;
    if (e->inflight_tail)
        e->inflight_tail->next = f;
    else
        e->inflight_head = f;
    e->inflight_tail = f;
    e->inflight_count++;
    memset(payload, 0, sizeof *payload);
    int rc = replication_propose(e, &f->payload, &index, &term);
    if (rc != 0 || index != predicted) {
        if (rc == 0) /* prep predicted the index; the loop thread is the only proposer */
            engine_fatal(e, "log index handed out differs from the one prep predicted");
        /* unqueue: it is the tail */
        struct inflight **at = &e->inflight_head, *prev = NULL;
        while (*at != f) {
            prev = *at;
            at = &(*at)->next;
        }
        *at = NULL;
        e->inflight_tail = prev;
        e->inflight_count--;
        *payload = f->payload;
        free(f);
        return rc;
    }
    f->term = term;
    return 0;
}

/* ------------------------------------------------------------------------------ */
/* apply                                                                            */

struct apply_output {
    struct engine_op_result *ops; /* NULL when the caller does not want results */
    char **paths;                 /* NUL-terminated copies for ops[i].path; owned */
};

static struct znode *apply_parent(struct engine *e, const char *path, size_t length)
{
    return tree_lookup(e->tree, path, path_parent_length(path, length));
}

static void apply_forget(struct engine *e, const char *path, size_t length, uint64_t index)
{
    overlay_forget(&e->overlay, path, length, index);
    if (length > 1)
        overlay_forget(&e->overlay, path, path_parent_length(path, length), index);
}

static void apply_delete_node(struct engine *e, struct znode *n, uint64_t index)
{
    if (n->ephemeral_owner) {
        struct session *owner = session_find(&e->sessions, n->ephemeral_owner);
        if (owner)
            session_ephemeral_remove(owner, n);
    }
    tree_node_delete(e->tree, n, index);
}

static void apply_ops(struct engine *e, uint64_t index, const struct txn *t,
                      struct apply_output *out)
{
    for (uint32_t i = 0; i < t->op_count; i++) {
        const struct txn_op *op = &t->ops[i];
        struct znode *n = NULL;
        switch (op->type) {
        case TXN_OP_CREATE: {
            struct znode *parent = apply_parent(e, op->path, op->path_length);
            size_t name = path_name_offset(op->path, op->path_length);
            if (!parent || tree_child_find(parent, op->path + name, op->path_length - name))
                engine_fatal(e, "log and tree disagree on a create");
            n = tree_node_create(e->tree, parent, op->path + name, op->path_length - name, op->data,
                                 op->data_length, op->flags, op->ephemeral_owner, op->ttl_ms, index,
                                 t->time_ms);
            if (!n)
                engine_fatal(e, "out of memory applying a create");
            if (op->ephemeral_owner) {
                struct session *owner = session_find(&e->sessions, op->ephemeral_owner);
                if (!owner)
                    engine_fatal(e, "ephemeral created for a session that does not exist");
                if (session_ephemeral_add(owner, n) != 0)
                    engine_fatal(e, "out of memory applying a create");
            }
            break;
        }
        case TXN_OP_SET:
            n = tree_lookup(e->tree, op->path, op->path_length);
            if (!n)
                engine_fatal(e, "log and tree disagree on a set");
            if (tree_node_set_data(e->tree, n, op->data, op->data_length, index, t->time_ms) != 0)
                engine_fatal(e, "out of memory applying a set");
            break;
        case TXN_OP_DELETE:
            n = tree_lookup(e->tree, op->path, op->path_length);
            if (!n || n->child_count > 0 || !n->parent)
                engine_fatal(e, "log and tree disagree on a delete");
            apply_delete_node(e, n, index);
            n = NULL;
            break;
        case TXN_OP_CHECK:
            break;
        }
        apply_forget(e, op->path, op->path_length, index);
        engine_events_apply_op(e, op, index);
        if (out && out->ops) {
            struct engine_op_result *r = &out->ops[i];
            r->type = op->type == TXN_OP_CREATE   ? ENGINE_OP_CREATE
                      : op->type == TXN_OP_SET    ? ENGINE_OP_SET
                      : op->type == TXN_OP_DELETE ? ENGINE_OP_DELETE
                                                  : ENGINE_OP_CHECK;
            char *copy = malloc(op->path_length + 1); /* freed after the callback */
            if (copy) {
                memcpy(copy, op->path, op->path_length);
                copy[op->path_length] = '\0';
            }
            out->paths[i] = copy;
            r->path = copy ? copy : "";
            if (n)
                znode_stat_get(n, &r->stat);
            else
                memset(&r->stat, 0, sizeof r->stat);
        }
    }
}

static void apply_session_close(struct engine *e, uint64_t index, const struct txn *t,
                                struct apply_output *out)
{
    struct session *s = session_find(&e->sessions, t->session_id);
    if (!s)
        return; /* already gone: closing twice is harmless */
    /* The txn lists the ephemerals prep predicted; deleting them is an ordinary
     * delete each, so events and results are those of a multi of deletes. */
    apply_ops(e, index, t, out);
    if (s->ephemeral_count > 0)
        engine_fatal(e, "a session close left ephemerals its prep did not predict");
    session_remove(&e->sessions, s);
    engine_watch_session_ended(e, t->session_id);
}

/* Applies one committed txn. Returns 0, or CORRAL_E_CORRUPT when it cannot be decoded
 * (recovery treats that as the end of the valid log; at run time it is fatal). */
static int engine_apply(struct engine *e, uint64_t index, uint64_t term, const void *payload,
                        size_t length, struct apply_output *out, struct txn *decoded)
{
    struct txn t;
    int rc = txn_decode(payload, length, &t);
    if (rc != 0)
        return rc;
    switch (t.type) {
    case TXN_NOOP:
        break;
    case TXN_OPS:
        apply_ops(e, index, &t, out);
        break;
    case TXN_SESSION_OPEN: {
        if (session_find(&e->sessions, t.session_id))
            break; /* ids are drawn unique; a duplicate would be a replay */
        struct session *s = session_add(&e->sessions, t.session_id, t.timeout_ms);
        if (!s)
            engine_fatal(e, "out of memory applying a session open");
        s->deadline_ms = engine_now(e) + t.timeout_ms;
        break;
    }
    case TXN_SESSION_CLOSE:
        apply_session_close(e, index, &t, out);
        break;
    }
    e->applied_index = index;
    e->applied_term = term;
    if (decoded)
        *decoded = t;
    else
        txn_free_ops(&t);
    return 0;
}

static void engine_snapshot_maybe(struct engine *e);

static void engine_apply_one(struct engine *e, uint64_t index, const struct raft_entry *entry)
{
    struct inflight *f = NULL;
    if (e->inflight_head && e->inflight_head->index == index) {
        f = e->inflight_head;
        e->inflight_head = f->next;
        if (!e->inflight_head)
            e->inflight_tail = NULL;
        e->inflight_count--;
        if (f->term != entry->term) {
            /* Another leader's entry took this position: ours was never committed. */
            if (f->done) {
                struct engine_result lost = {.error = CORRAL_E_NO_QUORUM, .failed_index = -1};
                f->done(f->arg, &lost);
            }
            bytes_free(&f->payload);
            free(f);
            f = NULL;
        }
    }
    if (entry->length == 0) { /* a leader's no-op */
        e->applied_index = index;
        e->applied_term = entry->term;
        if (f) {
            bytes_free(&f->payload);
            free(f);
        }
        return;
    }
    struct engine_op_result *ops = NULL;
    char **paths = NULL;
    struct txn t = {0};
    struct apply_output out = {0};
    if (f && f->done) {
        /* sized from the txn header: op count at offset 4 */
        uint32_t op_count = entry->length >= 8 ? bytes_load_u32(entry->data + 4) : 0;
        if (op_count) {
            ops = calloc(op_count, sizeof *ops);     /* freed below */
            paths = calloc(op_count, sizeof *paths); /* freed below */
            if (!ops || !paths)
                engine_fatal(e, "out of memory building a result");
            out.ops = ops;
            out.paths = paths;
        }
    }
    if (engine_apply(e, index, entry->term, entry->data, entry->length, &out, &t) != 0)
        engine_fatal(e, "a committed txn does not decode");
    if (f && f->done) {
        struct engine_result result = {0};
        result.failed_index = -1;
        result.zxid = index;
        result.op_count = t.type == TXN_OPS ? t.op_count : 0;
        result.ops = ops;
        if (t.type == TXN_SESSION_OPEN) {
            result.session_id = t.session_id;
            result.timeout_ms = t.timeout_ms;
        }
        f->done(f->arg, &result);
    }
    if (paths) {
        for (uint32_t i = 0; i < t.op_count; i++)
            free(paths[i]);
    }
    free(paths);
    free(ops);
    txn_free_ops(&t);
    if (f) {
        bytes_free(&f->payload);
        free(f);
    }
}

void engine_apply_committed(struct engine *e, uint64_t commit)
{
    while (e->applied_index < commit) {
        uint64_t index = e->applied_index + 1;
        const struct raft_entry *entry = raft_entry_at(e->raft, index);
        if (!entry)
            break; /* not here yet (a follower behind its commit index) */
        engine_apply_one(e, index, entry);
    }
    if (!e->ready_latch && !replication_is_leader(e) && raft_leader(e->raft) != 0 &&
        e->applied_index >= raft_commit_index(e->raft))
        e->ready_latch = true;
    if (e->host.wake_soon == NULL) {
        engine_waiters_run(e);
    } else if (!e->wake_soon_pending) {
        /* The done callbacks above queued the writers' answers; wake the watchers
         * after those are sent (engine_host.wake_soon). */
        e->wake_soon_pending = true;
        e->host.wake_soon(e->host.data);
    }
    engine_snapshot_maybe(e);
}

void engine_waiters_flush(struct engine *e)
{
    e->wake_soon_pending = false;
    engine_waiters_run(e);
}

void engine_prep_reset(struct engine *e)
{
    overlay_clear(&e->overlay);
    for (size_t b = 0; b < e->sessions.bucket_count; b++)
        for (struct session *s = e->sessions.buckets[b]; s; s = s->next) {
            s->closing = false;
            s->last_write_index = 0;
        }
}

/* ------------------------------------------------------------------------------ */
/* public: writes                                                                   */

int engine_submit_ops(struct engine *e, uint64_t session_id, const struct engine_op *ops,
                      size_t op_count, bool is_multi, engine_done_fn done, void *arg,
                      struct engine_result *error)
{
    if (e->shutting_down) {
        engine_error_set(e, error, CORRAL_E_SHUTTING_DOWN, -1, NULL, 0);
        return CORRAL_E_SHUTTING_DOWN;
    }
    if (op_count > UINT32_MAX / 2) {
        engine_error_set(e, error, CORRAL_E_BAD_ARGUMENTS, -1, NULL, 0);
        return CORRAL_E_BAD_ARGUMENTS;
    }
    int route = replication_can_propose(e);
    if (route == CORRAL_E_NOT_LEADER) {
        /* A follower: the leader preps. Nothing is validated here (this member's state
         * may lag); the result comes back with the leader's reply. */
        int rc = replication_forward_ops(e, session_id, ops, op_count, is_multi, done, arg);
        if (rc != 0)
            engine_error_set(e, error, rc, -1, NULL, 0);
        return rc;
    }
    if (route != 0) {
        engine_error_set(e, error, route, -1, NULL, 0);
        return route;
    }
    if (session_id && !session_live(e, session_id)) {
        engine_error_set(e, error, CORRAL_E_SESSION_EXPIRED, -1, NULL, 0);
        return CORRAL_E_SESSION_EXPIRED;
    }
    uint64_t index = e->proposed_index + 1;
    struct txn_op stack_ops[4];
    char *stack_resolved[4] = {0};
    struct txn_op *txn_ops = op_count <= 4 ? stack_ops : calloc(op_count, sizeof *txn_ops);
    char **resolved = op_count <= 4 ? stack_resolved : calloc(op_count, sizeof *resolved);
    struct overlay_undo undo = {0};
    struct bytes payload = {0};
    int rc = 0;
    size_t failed = 0;
    if (!txn_ops || !resolved) {
        rc = CORRAL_E_NO_MEMORY;
        goto out;
    }
    for (failed = 0; failed < op_count; failed++) {
        rc = prep_one(e, session_id, &ops[failed], index, &txn_ops[failed], &resolved[failed],
                      &undo);
        if (rc != 0)
            break;
    }
    if (rc != 0) {
        overlay_undo_apply(&e->overlay, &undo);
        engine_error_set(e, error, rc, is_multi ? (int)failed : -1, ops[failed].path,
                         ops[failed].path ? ops[failed].path_length : 0);
        goto out;
    }
    struct txn t = {.type = TXN_OPS,
                    .time_ms = e->host.wall_ms(e->host.data),
                    .session_id = session_id,
                    .op_count = (uint32_t)op_count,
                    .ops = txn_ops};
    if (txn_encode(&t, &payload) != 0 || bytes_failed(&payload)) {
        overlay_undo_apply(&e->overlay, &undo);
        rc = CORRAL_E_NO_MEMORY;
        engine_error_set(e, error, rc, -1, NULL, 0);
        goto out;
    }
    rc = engine_propose(e, &payload, done, arg);
    if (rc != 0) {
        overlay_undo_apply(&e->overlay, &undo);
        engine_error_set(e, error, rc, -1, NULL, 0);
    } else if (session_id) {
        /* FIFO: a later read of this session waits for this index to be applied */
        session_find(&e->sessions, session_id)->last_write_index = index;
    }
out:
    for (size_t i = 0; resolved && i < op_count; i++)
        free(resolved[i]);
    if (txn_ops != stack_ops)
        free(txn_ops);
    if (resolved != stack_resolved)
        free(resolved);
    overlay_undo_free(&undo);
    bytes_free(&payload);
    return rc;
}

static int engine_submit_txn(struct engine *e, const struct txn *t, engine_done_fn done, void *arg)
{
    int route = replication_can_propose(e);
    if (route != 0)
        return route;
    struct bytes payload = {0};
    if (txn_encode(t, &payload) != 0 || bytes_failed(&payload)) {
        bytes_free(&payload);
        return CORRAL_E_NO_MEMORY;
    }
    int rc = engine_propose(e, &payload, done, arg);
    bytes_free(&payload);
    return rc;
}

/* ------------------------------------------------------------------------------ */
/* public: sessions                                                                 */

static uint32_t engine_timeout_clamp(const struct engine *e, uint32_t timeout_ms)
{
    if (timeout_ms < e->options.min_session_timeout_ms)
        return e->options.min_session_timeout_ms;
    if (timeout_ms > e->options.max_session_timeout_ms)
        return e->options.max_session_timeout_ms;
    return timeout_ms;
}

int engine_session_open(struct engine *e, uint32_t timeout_ms, engine_done_fn done, void *arg)
{
    if (e->shutting_down)
        return CORRAL_E_SHUTTING_DOWN;
    if (replication_can_propose(e) == CORRAL_E_NOT_LEADER)
        return replication_forward_session_open(e, timeout_ms, done, arg);
    uint64_t id = 0;
    do {
        e->host.random_bytes(e->host.data, &id, sizeof id);
    } while (id == 0 || session_find(&e->sessions, id));
    struct txn t = {.type = TXN_SESSION_OPEN,
                    .time_ms = e->host.wall_ms(e->host.data),
                    .session_id = id,
                    .timeout_ms = engine_timeout_clamp(e, timeout_ms)};
    return engine_submit_txn(e, &t, done, arg);
}

static int path_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Paths collected by a session close's prep; they become the close txn's delete ops,
 * so the log itself says which nodes the close removed (a reader of the log, such as
 * the watch history, needs no tree to know). */
struct close_paths {
    char **paths; /* owned, each malloc'd */
    size_t count;
    size_t capacity;
};

/* Appends a copy of path. Returns 0 or CORRAL_E_NO_MEMORY. */
static int close_paths_push(struct close_paths *c, const char *path)
{
    if (c->count == c->capacity) {
        size_t capacity = c->capacity ? c->capacity * 2 : 8;
        char **grown = realloc(c->paths, capacity * sizeof *grown);
        if (!grown)
            return CORRAL_E_NO_MEMORY;
        c->paths = grown;
        c->capacity = capacity;
    }
    char *copy = strdup(path); /* owned by c: close_paths_free */
    if (!copy)
        return CORRAL_E_NO_MEMORY;
    c->paths[c->count++] = copy;
    return 0;
}

static void close_paths_free(struct close_paths *c)
{
    for (size_t i = 0; i < c->count; i++)
        free(c->paths[i]);
    free(c->paths);
    memset(c, 0, sizeof *c);
}

/* Predicts the deletions a session close will make: the session's ephemerals, as the
 * tree plus the overlay will hold them when the close is applied, and records them in
 * the overlay (with undo) and in *out. */
static int close_prep_ephemerals(struct engine *e, struct session *s, uint64_t index,
                                 struct close_paths *out, struct overlay_undo *undo)
{
    char path[PATH_MAX_BYTES + 1];
    /* Candidates: ephemerals in the tree (creation order), then those whose create is
     * still in flight (only the overlay knows them). */
    for (uint32_t i = 0; i < s->ephemeral_count; i++) {
        size_t length = znode_path_get(s->ephemerals[i], path, sizeof path);
        if (length >= sizeof path)
            continue;
        struct overlay_entry *entry = overlay_find(&e->overlay, path, length);
        if (entry && (!entry->view.exists || entry->view.ephemeral_owner != s->id))
            continue; /* deleted (or deleted and re-created by someone else) in flight */
        if (close_paths_push(out, path) != 0)
            return CORRAL_E_NO_MEMORY;
    }
    size_t from_tree = out->count;
    for (size_t b = 0; b < e->overlay.bucket_count; b++) {
        for (struct overlay_entry *entry = e->overlay.buckets[b]; entry; entry = entry->next) {
            if (!entry->view.exists || entry->view.ephemeral_owner != s->id)
                continue;
            if (tree_lookup(e->tree, entry->path, entry->path_length))
                continue; /* already a candidate from the tree */
            if (close_paths_push(out, entry->path) != 0)
                return CORRAL_E_NO_MEMORY;
        }
    }
    /* In-flight creates were collected in hash order: sort those by path so that the
     * txn does not depend on the overlay's layout. */
    if (out->count - from_tree > 1)
        qsort(out->paths + from_tree, out->count - from_tree, sizeof *out->paths, path_compare);
    for (size_t i = 0; i < out->count; i++) {
        size_t length = strlen(out->paths[i]);
        struct overlay_view parent;
        size_t parent_length = path_parent_length(out->paths[i], length);
        view_get(e, out->paths[i], parent_length, &parent);
        parent.cversion++;
        parent.child_count--;
        struct overlay_view deleted = {.exists = false};
        int rc = overlay_put(&e->overlay, out->paths[i], length, &deleted, index, undo);
        if (rc == 0)
            rc = overlay_put(&e->overlay, out->paths[i], parent_length, &parent, index, undo);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int engine_session_end(struct engine *e, struct session *s, engine_done_fn done, void *arg)
{
    uint64_t index = e->proposed_index + 1;
    struct close_paths paths = {0};
    struct overlay_undo undo = {0};
    struct txn_op *ops = NULL;
    int rc = close_prep_ephemerals(e, s, index, &paths, &undo);
    if (rc == 0 && paths.count > 0) {
        ops = calloc(paths.count, sizeof *ops); /* freed below */
        if (!ops)
            rc = CORRAL_E_NO_MEMORY;
    }
    if (rc == 0) {
        for (size_t i = 0; i < paths.count; i++) {
            ops[i].type = TXN_OP_DELETE;
            ops[i].version = -1;
            ops[i].path = paths.paths[i];
            ops[i].path_length = (uint32_t)strlen(paths.paths[i]);
        }
        struct txn t = {.type = TXN_SESSION_CLOSE,
                        .time_ms = e->host.wall_ms(e->host.data),
                        .session_id = s->id,
                        .op_count = (uint32_t)paths.count,
                        .ops = ops};
        rc = engine_submit_txn(e, &t, done, arg);
    }
    if (rc == 0)
        s->closing = true;
    else
        overlay_undo_apply(&e->overlay, &undo);
    overlay_undo_free(&undo);
    close_paths_free(&paths);
    free(ops);
    return rc;
}

int engine_session_close(struct engine *e, uint64_t session_id, engine_done_fn done, void *arg)
{
    if (e->shutting_down)
        return CORRAL_E_SHUTTING_DOWN;
    struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->closing)
        return CORRAL_E_SESSION_EXPIRED;
    if (replication_can_propose(e) == CORRAL_E_NOT_LEADER)
        return replication_forward_session_close(e, session_id, done, arg);
    return engine_session_end(e, s, done, arg);
}

int engine_session_touch(struct engine *e, uint64_t session_id)
{
    struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->closing)
        return CORRAL_E_SESSION_EXPIRED;
    s->deadline_ms = engine_now(e) + s->timeout_ms;
    replication_session_heard(e, session_id);
    return 0;
}

int engine_session_info_get(struct engine *e, uint64_t session_id, struct engine_session_info *out)
{
    struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->closing)
        return CORRAL_E_SESSION_EXPIRED;
    uint64_t now = engine_now(e);
    out->id = s->id;
    out->timeout_ms = s->timeout_ms;
    out->remaining_ms = s->deadline_ms > now ? s->deadline_ms - now : 0;
    out->ephemeral_count = s->ephemeral_count;
    out->ephemerals = (const struct znode *const *)s->ephemerals;
    return 0;
}

/* ------------------------------------------------------------------------------ */
/* time: session expiry and reaping of containers and TTL nodes                     */

struct expiry_scan {
    uint64_t now;
    uint64_t *expired;
    size_t count;
    size_t capacity;
};

static void expiry_scan_session(void *arg, struct session *s)
{
    struct expiry_scan *scan = arg;
    if (s->closing || s->deadline_ms > scan->now)
        return;
    if (scan->count == scan->capacity) {
        size_t capacity = scan->capacity ? scan->capacity * 2 : 16;
        uint64_t *grown = realloc(scan->expired, capacity * sizeof *grown);
        if (!grown)
            return; /* retried on the next tick */
        scan->expired = grown;
        scan->capacity = capacity;
    }
    scan->expired[scan->count++] = s->id;
}

/* The host ticks every 10 ms or so; a longer gap than this between two ticks means the
 * server did not run (stopped, starved by a loaded machine, a VM paused, swapping). */
#define ENGINE_STALL_MS 250

static void session_deadline_postpone(void *arg, struct session *s)
{
    s->deadline_ms += *(const uint64_t *)arg;
}

/* Time the server did not run does not count against sessions. The host steps the
 * tick before it reads its sockets, so without this every session whose timeout fell
 * inside a pause expired at the first tick after it, its keepalives of that time still
 * unread (a SIGSTOP of 8 s expired a session with a 4 s timeout whose client had kept
 * alive every second). Nobody else was served meanwhile, so nobody saw such a session's
 * ephemerals gone: extending it is safe, as a restart's fresh timeouts are. A leader
 * that stalled long enough to be replaced learns of it and stops expiring anything. */
static void engine_sessions_discount_stall(struct engine *e, uint64_t now)
{
    uint64_t gap = e->last_tick_ms != 0 && now > e->last_tick_ms ? now - e->last_tick_ms : 0;
    e->last_tick_ms = now;
    if (gap <= ENGINE_STALL_MS)
        return;
    session_table_each(&e->sessions, session_deadline_postpone, &gap);
    engine_logf(e, 2,
                "the server did not run for %" PRIu64 " ms; session deadlines moved "
                "by as much",
                gap);
}

static void engine_sessions_expire(struct engine *e, uint64_t now)
{
    /* Only the member that proposes (standalone, or the leader) expires sessions; the
     * expiry is a txn, so every replica deletes the same ephemerals at the same zxid. */
    struct expiry_scan scan = {.now = now};
    session_table_each(&e->sessions, expiry_scan_session, &scan);
    for (size_t i = 0; i < scan.count; i++) {
        struct session *s = session_find(&e->sessions, scan.expired[i]);
        if (!s)
            continue;
        engine_logf(e, 1, "session %016" PRIx64 " expired (timeout %" PRIu32 " ms)", s->id,
                    s->timeout_ms);
        int rc = replication_can_propose(e) == CORRAL_E_NOT_LEADER
                     ? replication_forward_session_close(e, s->id, NULL, NULL)
                     : engine_session_end(e, s, NULL, NULL);
        if (rc != 0)
            engine_logf(e, 2, "session %016" PRIx64 " expiry could not be logged; retrying", s->id);
    }
    free(scan.expired);
}

static void engine_reap(struct engine *e)
{
    /* ZooKeeper's ContainerManager: a container that has had children (cversion > 0)
     * and has none is deleted; a TTL node without children that was not modified for
     * ttl_ms is deleted. Candidates are collected first because each delete changes
     * the tree's list. The delete carries the version seen here, so a set racing with
     * the reaper wins and the node stays. */
    size_t count = 0;
    struct znode *const *reapable = tree_reapable(e->tree, &count);
    if (count == 0)
        return;
    int64_t now = e->host.wall_ms(e->host.data);
    char path[PATH_MAX_BYTES + 1];
    struct {
        char *path;
        int32_t version;
    } *victims = calloc(count, sizeof *victims); /* freed below */
    if (!victims)
        return;
    size_t victim_count = 0;
    for (size_t i = 0; i < count; i++) {
        const struct znode *n = reapable[i];
        if (n->child_count > 0)
            continue;
        bool expired = (n->flags & ZNODE_CONTAINER) ? n->cversion > 0 : now - n->mtime > n->ttl_ms;
        if (!expired)
            continue;
        size_t length = znode_path_get(n, path, sizeof path);
        if (length >= sizeof path)
            continue;
        victims[victim_count].path = strdup(path);
        victims[victim_count].version = n->version;
        if (victims[victim_count].path)
            victim_count++;
    }
    for (size_t i = 0; i < victim_count; i++) {
        struct engine_op op = {.type = ENGINE_OP_DELETE,
                               .path = victims[i].path,
                               .path_length = strlen(victims[i].path),
                               .version = victims[i].version};
        if (engine_submit_ops(e, 0, &op, 1, false, NULL, NULL, NULL) == 0)
            engine_logf(e, 0, "reaping %s", victims[i].path);
        free(victims[i].path);
    }
    free(victims);
}

/* Free space in the data dir, checked about once a second: a log write that fails for
 * lack of space is fatal (the server stops rather than guess), so writes are refused
 * with a clear answer before that point. Reads go on. */
static void engine_disk_check(struct engine *e, uint64_t now)
{
    if (now < e->next_disk_check_ms)
        return;
    e->next_disk_check_ms = now + 1000;
    struct statvfs st;
    if (statvfs(e->options.data_dir, &st) != 0)
        return;
    bool low = (uint64_t)st.f_bavail * st.f_frsize < e->options.min_free_disk_bytes;
    if (low != e->disk_low)
        engine_logf(e, low ? 2 : 1, "%s: %llu MiB free in %s",
                    low ? "disk nearly full, refusing writes" : "disk space back, accepting writes",
                    (unsigned long long)((uint64_t)st.f_bavail * st.f_frsize >> 20),
                    e->options.data_dir);
    e->disk_low = low;
}

static void engine_snapshot_reap(struct engine *e);

void engine_tick(struct engine *e)
{
    engine_snapshot_reap(e);
    replication_tick(e);
    if (e->shutting_down)
        return;
    uint64_t now = engine_now(e);
    engine_sessions_discount_stall(e, now);
    engine_disk_check(e, now);
    /* Only the member that proposes expires sessions and reaps nodes: the leader, once
     * it can propose. Followers' clocks decide nothing (a follower that has not heard
     * from a client does not know that no other member has). */
#if CORRAL_CANARY != 5
    if (replication_can_propose(e) != 0)
        return;
#endif
    if (now >= e->next_session_check_ms) {
        engine_sessions_expire(e, now);
        uint32_t step = e->options.tick_ms / 4;
        e->next_session_check_ms = now + (step < 10 ? 10 : step > 250 ? 250 : step);
    }
    if (now >= e->next_reap_ms) {
        engine_reap(e);
        e->next_reap_ms = now + e->options.reap_interval_ms;
    }
}

/* ------------------------------------------------------------------------------ */
/* snapshots                                                                        */

/* Snapshot body (inside the file format of snapshot.h), little endian:
 *   OFFSET SIZE DESCRIPTION
 *   0      4    body format version (1)
 *   4      4    reserved, zero
 *   8      8    session count S
 *   16     12*S sessions: id (8), timeout ms (4)
 *   ...         tree image (tree_encode)
 * Ephemeral lists are not stored: they are rebuilt from the nodes' owners. */
struct session_encode {
    struct bytes *out;
};

static void session_encode_one(void *arg, struct session *s)
{
    struct session_encode *encode = arg;
    bytes_put_u64(encode->out, s->id);
    bytes_put_u32(encode->out, s->timeout_ms);
}

/* Monotonic microseconds, for the snapshot log line. */
static uint64_t engine_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The exact size of engine_state_encode's body, without encoding it. */
static uint64_t engine_state_encoded_bytes(const struct engine *e)
{
    return 16 + (uint64_t)e->sessions.count * 12 + tree_image_bytes(e->tree);
}

/* engine_state_encode in pieces (tree_encode_chunked): the last piece stays in out.
 * out gets its room first (the whole image, or two pieces: a piece ends with the record
 * that passes chunk), so it neither grows by doubling (copies, and fresh pages touched
 * three times the image's size) nor faults in page by page. */
static int engine_state_encode_chunked(struct engine *e, struct bytes *out, size_t chunk,
                                       int (*flush)(void *arg, struct bytes *out), void *arg)
{
    uint64_t room = engine_state_encoded_bytes(e);
    if (flush != NULL && room / 2 > chunk)
        room = 2 * (uint64_t)chunk;
    if (room > SIZE_MAX || !bytes_reserve(out, (size_t)room))
        return CORRAL_E_NO_MEMORY;
    bytes_put_u32(out, ENGINE_SNAPSHOT_BODY_VERSION);
    bytes_put_u32(out, 0);
    bytes_put_u64(out, e->sessions.count);
    struct session_encode encode = {.out = out};
    session_table_each(&e->sessions, session_encode_one, &encode);
    if (bytes_failed(out))
        return CORRAL_E_NO_MEMORY;
    int rc = tree_encode_chunked(e->tree, out, chunk, flush, arg);
    if (rc == 0 && bytes_failed(out))
        rc = CORRAL_E_NO_MEMORY;
    return rc;
}

int engine_state_encode(struct engine *e, struct bytes *out)
{
    return engine_state_encode_chunked(e, out, SIZE_MAX, NULL, NULL);
}

/* The forked child's flush: the piece goes to the file, the buffer is reused. */
static int engine_snapshot_piece_write(void *arg, struct bytes *out)
{
    int rc = snapshot_writer_append(arg, out->data, out->length);
    out->length = 0;
    return rc;
}

static int ephemeral_rebuild(void *arg, struct znode *n, uint32_t depth)
{
    struct engine *e = arg;
    (void)depth;
    if (!n->ephemeral_owner)
        return 0;
    struct session *s = session_find(&e->sessions, n->ephemeral_owner);
    if (!s)
        return CORRAL_E_CORRUPT;
    return session_ephemeral_add(s, n);
}

/* Replaces the engine's tree and sessions with a snapshot body. */
int engine_state_decode(struct engine *e, const uint8_t *body, size_t length)
{
    struct bytes_reader r;
    bytes_reader_init(&r, body, length);
    if (bytes_get_u32(&r) != ENGINE_SNAPSHOT_BODY_VERSION)
        return CORRAL_E_CORRUPT;
    (void)bytes_get_u32(&r);
    uint64_t count = bytes_get_u64(&r);
    if (r.failed || count > (length - r.offset) / 12)
        return CORRAL_E_CORRUPT;
    struct session_table sessions;
    if (session_table_init(&sessions) != 0)
        return CORRAL_E_NO_MEMORY;
    int rc = 0;
    for (uint64_t i = 0; i < count && rc == 0; i++) {
        uint64_t id = bytes_get_u64(&r);
        uint32_t timeout = bytes_get_u32(&r);
        if (r.failed || id == 0 || session_find(&sessions, id))
            rc = CORRAL_E_CORRUPT;
        else if (!session_add(&sessions, id, timeout))
            rc = CORRAL_E_NO_MEMORY;
    }
    struct tree *tree = NULL;
    if (rc == 0)
        rc = tree_decode(&r, &tree);
    if (rc == 0 && r.offset != r.length)
        rc = CORRAL_E_CORRUPT;
    if (rc != 0) {
        if (tree)
            tree_destroy(tree);
        session_table_free(&sessions);
        return rc;
    }
    tree_destroy(e->tree);
    session_table_free(&e->sessions);
    e->tree = tree;
    e->sessions = sessions;
    rc = tree_walk(e->tree, ephemeral_rebuild, e);
    return rc;
}

struct snapshot_job {
    struct engine *engine;
    struct bytes body;
    uint64_t zxid;
    uint64_t term;
    char dir[4096];
    uint32_t keep;
    int result;
    int64_t oldest_kept;
    uint64_t started_ms;
    uint64_t length; /* of the written body: body.length, or the child's file's */
    bool forked;     /* a child encoded and wrote it */
    /* How long the loop stood still for it: the fork() call (copying the page tables
     * grows with the heap: 9 ms at 100,000 znodes, 27 ms at 900,000 here), or encoding
     * the image on the loop. */
    uint64_t pause_us;
};

static void snapshot_job_work(void *arg)
{
    struct snapshot_job *job = arg;
    job->result = snapshot_write(job->dir, job->zxid, job->term, job->body.data, job->body.length);
    job->length = job->body.length;
    job->oldest_kept = job->result == 0 ? snapshot_prune(job->dir, job->keep) : 0;
}

static void snapshot_job_done(void *arg)
{
    struct snapshot_job *job = arg;
    struct engine *e = job->engine;
    e->snapshot_in_flight = false;
    if (job->result != 0) {
        engine_logf(e, 2, "snapshot at zxid %" PRIu64 " failed (%s); the log is kept", job->zxid,
                    corral_error_name(job->result));
    } else {
        e->snapshots_written++;
        e->last_snapshot_index = job->zxid;
        e->last_snapshot_bytes = job->length;
        replication_snapshot_taken(e, job->zxid, job->term);
        e->last_snapshot_pause_us = job->pause_us;
        char how[64];
        snprintf(how, sizeof how,
                 job->forked ? " (the loop paused %" PRIu64 " us to fork)"
                             : " (encoded on the loop in %" PRIu64 " us)",
                 job->pause_us);
        engine_logf(e, 1, "snapshot at zxid %" PRIu64 ": %" PRIu64 " bytes in %" PRIu64 " ms%s",
                    job->zxid, job->length, engine_now(e) - job->started_ms, how);
        /* Keep the log back to the oldest snapshot kept, so that falling back to it
         * (when a newer one is found corrupt) still finds every txn after it. */
        if (job->oldest_kept > 0 && wal_drop_before(e->wal, (uint64_t)job->oldest_kept + 1) != 0)
            engine_logf(e, 2, "could not drop old log segments");
    }
    if (e->snapshot_spare.data == NULL && !job->body.failed &&
        job->body.capacity <= 2 * e->options.snapshot_inline_bytes) {
        e->snapshot_spare = job->body;
        e->snapshot_spare.length = 0;
    } else {
        bytes_free(&job->body);
    }
    bool written = job->result == 0;
    free(job);
    /* One snapshot is written at a time, and whether the next is due is asked after
     * each apply. A snapshot that came due while this one was written is taken now: a
     * burst of writes that ended meanwhile would otherwise wait for the next write.
     * Not after a failure, which would retry on every tick (a full disk); the next
     * apply asks again. */
    if (written)
        engine_snapshot_maybe(e);
}

static bool engine_snapshot_fork(struct engine *e, struct snapshot_job *job);

/* A configured snapshot threshold scaled by this member's draw (engine_snapshot_roll):
 * share / 1024 of it, computed without overflow for any value; at least 1. */
static uint64_t engine_snapshot_threshold(const struct engine *e, uint64_t configured)
{
    if (e->snapshot_share == 0)
        return configured; /* standalone, or not drawn yet */
    uint64_t scaled =
        configured / 1024 * e->snapshot_share + configured % 1024 * e->snapshot_share / 1024;
    return scaled ? scaled : 1;
}

/* A snapshot is due after snapshot_every txns or snapshot_log_bytes of log (each scaled
 * by the member's draw in a cluster). On a big tree it is also held back until the log
 * since the last one is half that snapshot's size (Redis rewrites its AOF on the same
 * kind of rule): the cost of a snapshot grows
 * with the tree, not with the txns, so a fixed interval makes a big tree snapshot all
 * the time. Measured (W3, 64 writers, server pinned, tree growing to 1.4M znodes): with
 * a snapshot every 100,000 txns a child was encoding 5-20 s of every ~7 s, and the
 * server's CPU per create rose from 26 to 41-48 us (copy-on-write faults, cache); with
 * no snapshots it stayed at 26-36 us. Replay at start stays bounded by half an image
 * of log. Small trees (an image under snapshot_log_bytes) are not held back. */
static bool engine_snapshot_due(const struct engine *e)
{
    if (e->applied_index - e->last_snapshot_index <
            engine_snapshot_threshold(e, e->options.snapshot_every) &&
        e->log_bytes_since_snapshot < engine_snapshot_threshold(e, e->options.snapshot_log_bytes))
        return false;
    if (e->last_snapshot_bytes > e->options.snapshot_log_bytes &&
        e->log_bytes_since_snapshot < e->last_snapshot_bytes / 2)
        return false;
    return true;
}

/* The members of a cluster apply the same txns, so with one threshold they would all
 * take a snapshot at the same index, at the same moment: on a shared core, three forks
 * (9-27 ms each) and three children encoding while the next write waits for a majority.
 * ZooKeeper draws each server's threshold at random for this reason (snapCount / 2 plus
 * a random roll, SyncRequestProcessor). Here each member draws its thresholds in
 * [T/2, 3T/2) of the configured T before each snapshot, so that the mean interval stays
 * T. A standalone server keeps T exactly. Called at open (after replication_open has
 * seeded the sequence) and whenever a snapshot starts. */
static void engine_snapshot_roll(struct engine *e)
{
    if (e->options.member_count > 1)
        e->snapshot_share = 512 + replication_random_next(e) % 1024;
}

static void engine_snapshot_maybe(struct engine *e)
{
    if (e->snapshot_in_flight || e->shutting_down || e->applied_index == e->last_snapshot_index)
        return;
    if (!engine_snapshot_due(e))
        return;
    e->log_bytes_since_snapshot = 0;
    engine_snapshot_roll(e);
    struct snapshot_job *job = calloc(1, sizeof *job); /* freed by snapshot_job_done */
    if (!job)
        return;
    job->engine = e;
    job->zxid = e->applied_index;
    job->term = e->applied_term;
    job->keep = e->options.snapshots_keep;
    job->started_ms = engine_now(e);
    snprintf(job->dir, sizeof job->dir, "%s", e->options.data_dir);
    /* A small image is encoded here, on the loop thread, so that it is exactly the state
     * at applied_index; only the write and fsync go to a worker. The pause grows with
     * the tree, so a bigger one goes to a forked child. Why not always fork: after a
     * fork every page of the server's heap is write-protected, and the first write to
     * each one after it faults, child gone or not (the raft log, the history, the
     * buffers: thousands of pages, each fault ~10 us on this machine's virtual CPU).
     * Measured on 3 members, W2 set at 64 writers, a snapshot every ~5 s of a 190 KB
     * image: 73 against 41 page faults per 1,000 writes, 40 against 37-39 us of CPU
     * per write in all; sequential creates 49-53 against 44-46 us. */
    bool small = engine_state_encoded_bytes(e) <= e->options.snapshot_inline_bytes;
    if (e->host.snapshot_fork && !small && engine_snapshot_fork(e, job))
        return;
    uint64_t encode_start_us = engine_clock_us();
    job->body = e->snapshot_spare; /* the job owns it until snapshot_job_done */
    e->snapshot_spare = (struct bytes){0};
    if (engine_state_encode(e, &job->body) != 0) {
        engine_logf(e, 2, "snapshot skipped: out of memory encoding the state");
        bytes_free(&job->body);
        free(job);
        e->last_snapshot_index = e->applied_index; /* do not retry on every apply */
        return;
    }
    job->pause_us = engine_clock_us() - encode_start_us;
    e->snapshot_in_flight = true;
    if (e->host.run_blocking(e->host.data, snapshot_job_work, snapshot_job_done, job) != 0) {
        e->snapshot_in_flight = false;
        bytes_free(&job->body);
        free(job);
    }
}

/* ioprio_set(2) has no glibc wrapper or header: IOPRIO_WHO_PROCESS, and the idle class
 * (3) shifted by IOPRIO_CLASS_SHIFT (13), from linux/ioprio.h. */
#define ENGINE_IOPRIO_WHO_PROCESS 1
#define ENGINE_IOPRIO_IDLE (3 << 13)

/* A snapshot written by a child process (Redis's way): fork() gives the child a
 * copy-on-write image of the state exactly at applied_index, so the child encodes and
 * writes it while the loop thread goes on serving, and the pause is the fork itself
 * (page tables: milliseconds) instead of encoding the whole tree. The child touches no
 * socket and leaves with _exit, so the parent's threads and libraries are not
 * disturbed; glibc's fork keeps malloc usable in the child. The parent learns of the
 * end from engine_tick (waitpid, no signal handler). Returns false when it could not
 * fork (the caller then encodes on the loop as before). */
static bool engine_snapshot_fork(struct engine *e, struct snapshot_job *job)
{
    pid_t parent = getpid();
    uint64_t fork_start_us = engine_clock_us();
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        /* Die with the server: a child outliving a killed server would keep writing
         * into a data dir that a restarted server now owns. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(1); /* (the server died before the line above took effect) */
        /* Serving comes first: the child yields the CPU (nice 19) and the disk (idle I/O
         * class, honoured by mq-deadline and bfq) to the server. Without this, a
         * snapshot of a few hundred thousand znodes took half the server's core and
         * slowed its log syncs for up to a second (W3 throughput fell from 19k/s to
         * 7.6k/s as the tree grew to 400,000 nodes). Best effort: failures are ignored.
         * The CPU policy is SCHED_IDLE as well: corrald's threads may run under
         * SCHED_BATCH, whose wake-ups preempt no running task but one of SCHED_IDLE, so
         * without it a request that wakes the loop waited for the child's slice (creates
         * at 64 writers, standalone: p99 12-13 ms during snapshots against 7). */
        (void)setpriority(PRIO_PROCESS, 0, 19);
        struct sched_param idle_param = {.sched_priority = 0};
        (void)sched_setscheduler(0, SCHED_IDLE, &idle_param);
        (void)syscall(SYS_ioprio_set, ENGINE_IOPRIO_WHO_PROCESS, 0, ENGINE_IOPRIO_IDLE);
        /* The image goes to the file 1 MiB at a time through one small buffer: every
         * page the child writes is a fresh one (its own allocations, or a copy of the
         * parent's), and a buffer of the whole image (35-41 MB for the bench's ~200,000
         * znodes) cost 82-87 page faults per 1,000 of the server's writes during a
         * 64-writer load, 154-243 when it also grew by doubling. */
        struct snapshot_writer *writer = NULL;
        struct bytes piece = {0}; /* the child's exit frees it */
        int rc = snapshot_writer_open(job->dir, job->zxid, job->term, &writer);
        if (rc == 0)
            rc = engine_state_encode_chunked(e, &piece, ENGINE_SNAPSHOT_PIECE_BYTES,
                                             engine_snapshot_piece_write, writer);
        if (rc == 0)
            rc = engine_snapshot_piece_write(writer, &piece);
        if (rc == 0)
            rc = snapshot_writer_commit(writer);
        else if (writer != NULL)
            snapshot_writer_abort(writer);
        /* Prune at once, so that the files on disk go from N to N snapshots (the
         * parent's prune after the reap then finds nothing to do and says what is
         * kept). */
        if (rc == 0 && snapshot_prune(job->dir, job->keep) < 0)
            rc = CORRAL_E_IO;
        _exit(rc == 0 ? 0 : 1);
    }
    job->forked = true;
    job->pause_us = engine_clock_us() - fork_start_us;
    e->snapshot_pid = pid;
    e->snapshot_child_job = job;
    e->snapshot_in_flight = true;
    return true;
}

/* engine_tick: has the snapshot child finished? */
static void engine_snapshot_reap(struct engine *e)
{
    if (e->snapshot_pid <= 0)
        return;
    int status = 0;
    pid_t pid = waitpid(e->snapshot_pid, &status, WNOHANG);
    if (pid == 0)
        return; /* still writing */
    struct snapshot_job *job = e->snapshot_child_job;
    e->snapshot_pid = 0;
    e->snapshot_child_job = NULL;
    bool ok = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    job->result = ok ? 0 : CORRAL_E_IO;
    job->oldest_kept = ok ? snapshot_prune(job->dir, job->keep) : 0;
    /* The child's body never reached this process: its size is the file's. Unknown
     * (0), the next snapshot is simply not held back (engine_snapshot_due). */
    if (ok && snapshot_body_length(job->dir, job->zxid, &job->length) != 0)
        job->length = 0;
    snapshot_job_done(job);
}

/* ------------------------------------------------------------------------------ */
/* open, recovery, close                                                            */

/* The log after the snapshot, read back at start: handed to the consensus core, and
 * applied at once when this member alone is the cluster (then durable = committed). */
struct replay {
    struct engine *engine;
    bool apply;
    uint64_t next_index;
    struct raft_entry *entries; /* data fields hold offsets into payloads until done */
    uint64_t count;
    uint64_t capacity;
    struct bytes payloads;
};

static int replay_one(void *arg, uint64_t index, uint64_t term, const void *payload, size_t length)
{
    struct replay *r = arg;
    struct engine *e = r->engine;
    if (index != r->next_index)
        return CORRAL_E_CORRUPT;
    r->next_index++;
    if (r->count == r->capacity) {
        uint64_t capacity = r->capacity ? r->capacity * 2 : 1024;
        struct raft_entry *grown = realloc(r->entries, capacity * sizeof *grown);
        if (!grown)
            return CORRAL_E_NO_MEMORY;
        r->entries = grown;
        r->capacity = capacity;
    }
    r->entries[r->count++] =
        (struct raft_entry){.term = term,
                            .data = (const uint8_t *)(uintptr_t)r->payloads.length,
                            .length = (uint32_t)length};
    bytes_put(&r->payloads, payload, length);
    if (bytes_failed(&r->payloads))
        return CORRAL_E_NO_MEMORY;
    if (!r->apply)
        return 0;
    if (length == 0) { /* a leader's no-op */
        e->applied_index = index;
        e->applied_term = term;
        return 0;
    }
    return engine_apply(e, index, term, payload, length, NULL, NULL);
}

static void recovery_fresh_timeouts(void *arg, struct session *s)
{
    struct engine *e = arg;
    s->deadline_ms = engine_now(e) + s->timeout_ms;
}

static int engine_load_snapshot(struct engine *e, struct engine_recovery_report *report)
{
    struct snapshot_file *files = NULL;
    size_t count = 0;
    int rc = snapshot_list(e->options.data_dir, &files, &count);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < count; i++) {
        uint64_t zxid = 0, term = 0;
        uint8_t *body = NULL;
        size_t length = 0;
        rc = snapshot_read(files[i].path, &zxid, &term, &body, &length);
        if (rc == 0)
            rc = engine_state_decode(e, body, length);
        free(body);
        if (rc == 0) {
            e->applied_index = e->last_snapshot_index = zxid;
            e->applied_term = e->snapshot_term = term;
            e->last_snapshot_bytes = length;
            report->snapshot_zxid = zxid;
            break;
        }
        if (rc == CORRAL_E_NO_MEMORY)
            break;
        report->snapshots_skipped++;
        engine_logf(e, 2, "snapshot %s is corrupt (%s): skipping it for an older one",
                    files[i].path, corral_error_name(rc));
        rc = 0;
    }
    free(files);
    return rc;
}

/* mkdir -p: the data dir and any missing parent. */
static int engine_dir_make(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static void engine_options_defaults(struct engine_options *o)
{
    if (!o->max_data_bytes)
        o->max_data_bytes = ENGINE_DEFAULT_MAX_DATA;
    if (!o->tick_ms)
        o->tick_ms = ENGINE_DEFAULT_TICK_MS;
    if (!o->min_session_timeout_ms)
        o->min_session_timeout_ms = 2 * o->tick_ms;
    if (!o->max_session_timeout_ms)
        o->max_session_timeout_ms = 20 * o->tick_ms;
    if (o->max_session_timeout_ms < o->min_session_timeout_ms)
        o->max_session_timeout_ms = o->min_session_timeout_ms;
    if (!o->snapshot_every)
        o->snapshot_every = ENGINE_DEFAULT_SNAPSHOT_EVERY;
    if (!o->member_id)
        o->member_id = 1;
    if (!o->min_free_disk_bytes)
        o->min_free_disk_bytes = 64u * 1024u * 1024u;
    if (!o->snapshot_log_bytes)
        o->snapshot_log_bytes = ENGINE_DEFAULT_SNAPSHOT_LOG_BYTES;
    if (!o->snapshots_keep)
        o->snapshots_keep = ENGINE_DEFAULT_SNAPSHOTS_KEEP;
    if (!o->reap_interval_ms)
        o->reap_interval_ms = ENGINE_DEFAULT_REAP_INTERVAL_MS;
}

int engine_open(const struct engine_options *options, const struct engine_host *host,
                struct engine **out, struct engine_recovery_report *report)
{
    struct engine_recovery_report scratch;
    if (!report)
        report = &scratch;
    memset(report, 0, sizeof *report);
    struct replay replay = {0};
    struct engine *e = calloc(1, sizeof *e); /* owned by the caller: engine_close */
    if (!e)
        return CORRAL_E_NO_MEMORY;
    e->options = *options;
    e->host = *host;
    engine_options_defaults(&e->options);
    uint64_t started = engine_now(e);
    int rc = 0;
    if (engine_dir_make(e->options.data_dir) != 0) {
        engine_logf(e, 3, "cannot create data dir %s: %s", e->options.data_dir, strerror(errno));
        rc = CORRAL_E_IO;
        goto fail;
    }
    e->tree = tree_create();
    if (!e->tree || session_table_init(&e->sessions) != 0 || overlay_init(&e->overlay) != 0 ||
        engine_watch_init(e) != 0) {
        rc = CORRAL_E_NO_MEMORY;
        goto fail;
    }
    if ((rc = engine_load_snapshot(e, report)) != 0)
        goto fail;
    replay.engine = e;
    replay.apply = e->options.member_count <= 1;

    struct wal_options wal_options = {.dir = e->options.data_dir,
                                      .segment_bytes = e->options.wal_segment_bytes,
                                      .max_in_flight = e->options.wal_batches_in_flight};
    struct wal_recovery_report wal_report;
    if ((rc = wal_open(&wal_options, &e->wal, &wal_report)) != 0)
        goto fail;
    report->wal_cut_bytes = wal_report.cut_bytes;
    report->wal_cut_segments = wal_report.cut_segments;
    if (wal_report.cut_reason[0])
        engine_logf(e, 2, "log tail cut: %s (%" PRIu64 " bytes, %" PRIu32 " segments removed)",
                    wal_report.cut_reason, wal_report.cut_bytes, wal_report.cut_segments);

    uint64_t first = wal_first_index(e->wal), last = wal_last_index(e->wal);
    if (last != 0 && last <= e->applied_index) {
        /* Everything in the log is in the snapshot: start the log afresh after it. */
        if ((rc = wal_truncate_after(e->wal, 0)) != 0)
            goto fail;
    } else if (last != 0) {
        if (first > e->applied_index + 1) {
            engine_logf(e, 3,
                        "the log starts at zxid %" PRIu64 " but the state is at %" PRIu64
                        ": txns in between are missing",
                        first, e->applied_index);
            rc = CORRAL_E_CORRUPT;
            goto fail;
        }
        uint64_t before = e->applied_index;
        replay.next_index = e->applied_index + 1;
        rc = wal_replay(e->wal, e->applied_index + 1, replay_one, &replay);
        if (rc != 0) {
            engine_logf(e, 3, "replay stopped at zxid %" PRIu64 ": %s", replay.next_index,
                        corral_error_name(rc));
            goto fail;
        }
        report->replayed = e->applied_index - before;
        for (uint64_t i = 0; i < replay.count; i++)
            replay.entries[i].data = replay.payloads.data + (uintptr_t)replay.entries[i].data;
    }
    e->proposed_index = e->applied_index;
    if ((rc = engine_history_start(e)) != 0)
        goto fail;
    if ((rc = replication_open(e, replay.entries, replay.count)) != 0)
        goto fail;
    engine_snapshot_roll(e);
    free(replay.entries);
    bytes_free(&replay.payloads);
    session_table_each(&e->sessions, recovery_fresh_timeouts, e);
    engine_disk_check(e, engine_now(e));
    e->next_session_check_ms = engine_now(e);
    e->next_reap_ms = engine_now(e) + e->options.reap_interval_ms;
    report->zxid = e->applied_index;
    report->nodes = tree_node_count(e->tree);
    report->sessions = e->sessions.count;
    report->elapsed_ms = engine_now(e) - started;
    *out = e;
    return 0;
fail:
    free(replay.entries);
    bytes_free(&replay.payloads);
    if (e->raft)
        replication_close(e);
    engine_watch_free(e);
    if (e->wal)
        wal_close(e->wal);
    if (e->tree)
        tree_destroy(e->tree);
    if (e->sessions.buckets)
        session_table_free(&e->sessions);
    overlay_free(&e->overlay);
    free(e);
    return rc;
}

void engine_shutdown_begin(struct engine *e)
{
    e->shutting_down = true;
    engine_waiters_wake_all(e); /* parked requests answer now rather than at their timeout */
}

bool engine_idle(const struct engine *e)
{
    return wal_in_flight_count(e->wal) == 0 && !e->snapshot_in_flight && e->inflight_head == NULL;
}

void engine_close(struct engine *e)
{
    if (!e)
        return;
    /* Callers wait for engine_idle; anything still queued was never durable. */
    struct inflight *f = e->inflight_head;
    while (f) {
        struct inflight *next = f->next;
        if (f->done) {
            struct engine_result result = {.error = CORRAL_E_SHUTTING_DOWN, .failed_index = -1};
            f->done(f->arg, &result);
        }
        bytes_free(&f->payload);
        free(f);
        f = next;
    }
    replication_close(e);
    engine_watch_free(e);
    bytes_free(&e->snapshot_spare);
    wal_close(e->wal);
    tree_destroy(e->tree);
    session_table_free(&e->sessions);
    overlay_free(&e->overlay);
    free(e);
}

/* ------------------------------------------------------------------------------ */
/* reads and statistics                                                             */

uint64_t engine_applied_zxid(const struct engine *e)
{
    return e->applied_index;
}

uint64_t engine_commit_zxid(const struct engine *e)
{
    return raft_commit_index(e->raft);
}

uint64_t engine_epoch(const struct engine *e)
{
    return raft_term(e->raft);
}

const char *engine_role_name(const struct engine *e)
{
    if (e->options.member_count <= 1)
        return "standalone";
    return cluster_role_name(raft_role(e->raft));
}

uint64_t engine_member_id(const struct engine *e)
{
    return e->options.member_id;
}

uint64_t engine_leader_id(const struct engine *e)
{
    return raft_leader(e->raft);
}

bool engine_ready(const struct engine *e)
{
    if (e->shutting_down)
        return false;
    if (replication_is_leader(e))
        return e->applied_index >= e->term_start_index;
    return raft_leader(e->raft) != 0 && e->ready_latch;
}

void engine_member_info_get(const struct engine *e, uint64_t id, struct engine_member_info *out)
{
    memset(out, 0, sizeof *out);
    out->id = id;
    if (id == e->options.member_id) {
        out->match_index = raft_last_index(e->raft);
        out->reachable = true;
        return;
    }
    out->match_index = raft_match_index(e->raft, id);
    uint64_t heard = 0;
    for (uint32_t i = 0; i < e->options.member_count && i < ENGINE_MAX_MEMBERS; i++)
        if (e->options.members[i] == id)
            heard = e->member_heard_ms[i];
    uint64_t window =
        2 * (uint64_t)(e->options.election_timeout_ms ? e->options.election_timeout_ms : 300);
    out->heard = heard != 0;
    out->reachable = heard != 0 && e->host.monotonic_ms(e->host.data) - heard < window;
}

uint32_t engine_max_data_bytes(const struct engine *e)
{
    return e->options.max_data_bytes;
}

int engine_lookup(struct engine *e, const char *path, size_t length, const struct znode **out)
{
    if (!path || path_validate(path, length, false) != 0)
        return CORRAL_E_BAD_ARGUMENTS;
    struct znode *n = tree_lookup(e->tree, path, length);
    if (!n)
        return CORRAL_E_NO_NODE;
    *out = n;
    return 0;
}

void engine_stats_get(const struct engine *e, struct engine_stats *out)
{
    memset(out, 0, sizeof *out);
    out->nodes = tree_node_count(e->tree);
    out->sessions = e->sessions.count;
    out->data_bytes = tree_data_bytes(e->tree);
    out->wal_records = e->wal_records;
    wal_stats_get(e->wal, &out->wal);
    out->snapshots_written = e->snapshots_written;
    out->last_snapshot_zxid = e->last_snapshot_index;
    out->last_snapshot_pause_us = e->last_snapshot_pause_us;
    out->writes_in_flight = e->inflight_count;
    engine_stats_watch(e, out);
}
