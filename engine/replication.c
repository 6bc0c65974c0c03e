/* replication.c: the engine's side of Raft: drives the protocol core (cluster/raft.h)
 * with the WAL, the hard state file, the clock and the messages between members.
 *
 * The core is pure; this file does what its updates ask, in the order raft.h gives:
 *   1. term and vote to disk (synchronously: elections are rare, and nothing that
 *      depends on them may leave before they are durable);
 *   2. log truncation and appends: appends join the WAL's pending buffer and become
 *      durable with the next group-commit batch; when a batch completes the core hears
 *      RAFT_EVENT_PERSISTED. A truncation cannot run while a batch is being written, so
 *      log changes that arrive then wait in a queue (deferred_log) until it completes;
 *   3. messages to members (host->send);
 *   4. committed entries to the state machine (engine_apply_committed);
 *   5. read index answers, snapshot transfers, role changes.
 *
 * A standalone server runs the very same code with one member: it elects itself at
 * once, and an entry commits the moment its own log has it durably.
 *
 * Follower requests. A follower does not prep: it forwards a write (or a session open
 * or close) to the leader, the leader preps, proposes and, once applied there,
 * replies with the result and its zxid; the follower answers its client when it has
 * applied that zxid itself, so the client then reads its own write here. Reads that
 * must be linearizable ask the leader for a read index the same way.
 *
 * Sessions. Any member may hear from a session; followers send the ids they heard
 * from to the leader every few ticks, and only the leader expires sessions (a txn).
 * A new leader gives every session a fresh timeout, so a failover does not expire
 * live clients.
 *
 * Wire formats of the engine's own messages (little endian), each starting with a
 * format version byte (1):
 *   FORWARD  1 version | 1 kind | 8 request id | 8 session id | 4 timeout ms
 *            | 1 is_multi | 4 op count | ops: 1 type, 4 flags, 4 version, 8 ttl,
 *              4+n path, 4+n data
 *   REPLY    1 version | 8 request id | 4 error (signed) | 4 failed index (signed)
 *            | 4+n error path | 4+n message | 8 zxid | 8 session id | 4 timeout ms | 4 op count
 *            | ops: 1 type, 4+n path, stat (8 czxid, 8 mzxid, 8 pzxid, 8 ctime,
 *              8 mtime, 4 version, 4 cversion, 4 aversion, 8 owner, 4 length, 4 children)
 *   SESSION  1 version | 4 count | 8 id * count
 *   SNAPSHOT 1 version | 8 index | 8 term | body (engine_state_encode)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "hardstate.h"
#include "raft.h"
#include "snapshot.h"
#include "wal.h"

#define REPLICATION_FORMAT 1
#define REPLICATION_TRAILING_ENTRIES 10000
#define REPLICATION_TRAILING_BYTES (16u * 1024u * 1024u)
#define REPLICATION_TOUCH_FLUSH_MS 100
/* How long new entries wait for the leader's log write in flight before they go to the
 * followers anyway (replication_appends_flush). */
#define REPLICATION_APPEND_HOLD_MS 5

enum forward_kind {
    FORWARD_OPS = 1,
    FORWARD_SESSION_OPEN = 2,
    FORWARD_SESSION_CLOSE = 3,
    FORWARD_READ_INDEX = 4,
};

/* Log changes that must wait for the WAL batch in flight. */
struct deferred_log {
    struct deferred_log *next;
    uint64_t truncate_after; /* UINT64_MAX = none */
    uint64_t first_index;
    uint64_t count;
    uint64_t *terms;   /* owned */
    uint32_t *lengths; /* owned */
    struct bytes data; /* payloads back to back; owned */
};

/* Follower: a request sent to the leader. */
struct forward {
    struct forward *next;
    uint64_t id;
    enum forward_kind kind;
    engine_done_fn done;
    void *arg;
    struct engine_waiter *read_waiter; /* READ_INDEX: the caller's waiter */
    uint64_t deadline_ms;
    uint64_t leader; /* the member it was sent to */
    /* Once the reply came: the result, kept until this member applied result.zxid. */
    bool replied;
    struct engine_result result;
    struct engine_op_result *ops; /* owned */
    char *paths;                  /* owned: the ops' paths, NUL-separated */
    char *error_path;             /* owned */
    char *message;                /* owned */
    struct engine_waiter *apply_waiter;
};

/* Leader: a read index waiting for its heartbeat round. */
struct pending_read {
    struct pending_read *next;
    uint64_t read_id;
    struct engine_waiter *waiter; /* local read (NULL once it went away) */
    uint64_t from;                /* remote read: the follower, and its request id */
    uint64_t request_id;
};

/* Leader: a forwarded request in progress (the done callback's argument). */
struct forward_origin {
    struct engine *engine;
    uint64_t from;
    uint64_t request_id;
    enum forward_kind kind;
};

static void replication_update_process(struct engine *e, const struct raft_update *u);

/* splitmix64 (Steele, Lea and Flood), on the engine's jitter_state. */
static uint32_t replication_random(void *arg)
{
    struct engine *e = arg;
    uint64_t z = (e->jitter_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

uint32_t replication_random_next(struct engine *e)
{
    return replication_random(e);
}

static uint32_t member_count(const struct engine *e)
{
    return e->options.member_count > 1 ? e->options.member_count : 1;
}

bool replication_is_leader(const struct engine *e)
{
    return raft_role(e->raft) == CLUSTER_ROLE_LEADER;
}

static void replication_send(struct engine *e, uint64_t to, enum engine_channel channel,
                             const struct bytes *b)
{
    if (e->host.send && !bytes_failed(b))
        e->host.send(e->host.data, to, channel, b->data, b->length);
}

/* Returns the core's answer (CLUSTER_OK, or a refusal; out of memory is fatal). */
static int replication_step(struct engine *e, const struct raft_event *ev)
{
    struct raft_update u;
    int rc = raft_step(e->raft, ev, &u, NULL);
    if (rc == CLUSTER_E_NO_MEMORY)
        engine_fatal(e, "out of memory in the consensus core");
    if (rc == CLUSTER_OK)
        replication_update_process(e, &u);
    return rc;
}

/* ---- the log ---- */

/* A batch on a worker thread; its timing is the log's own (wal_stats). */
struct wal_job {
    struct engine *engine;
    struct wal_batch *batch;
    int result;
};

static void wal_job_work(void *arg)
{
    struct wal_job *job = arg;
    job->result = wal_batch_write(job->batch);
}

static void deferred_run(struct engine *e);

/* A batch is done. Batches may finish out of order (wal.h, pipelining); the consensus
 * core hears only of the durable prefix, whose end the log tells. */
static void wal_job_done(void *arg)
{
    struct wal_job *job = arg;
    struct engine *e = job->engine;
    int write_result = job->result;
    uint64_t durable_before = wal_durable_index(e->wal);
    int rc = wal_batch_finish(e->wal, job->batch, write_result);
    free(job);
    if (rc != 0) {
        char what[160];
        snprintf(what, sizeof what, "WAL write or fdatasync failed: %s",
                 strerror(write_result < 0 ? -write_result : EIO));
        engine_fatal(e, what);
    }
    if (wal_durable_index(e->wal) != durable_before) {
        struct raft_event ev = {.type = RAFT_EVENT_PERSISTED,
                                .now_ms = engine_now(e),
                                .persisted_index = wal_durable_index(e->wal),
                                .persisted_term = wal_durable_term(e->wal)};
        replication_step(e, &ev);
    }
    deferred_run(e);
    replication_wal_kick(e);
}

/* The leader sends the followers the entries proposed since its last flush
 * (RAFT_EVENT_FLUSH) when its own log takes them into a batch, so that each follower
 * gets one APPEND, and makes one sync, per log batch of the leader's; its answers do
 * not carry newer entries either (raft.c, raft_peer_waits_for_flush). Sent at the end
 * of every loop turn instead, and with the answers, a follower got ~3 APPENDs per
 * batch of the leader's and synced a batch of ~26 sets where the leader synced ~30
 * (3 members on one core, 64 writers, tools/bench, alternated A/B: 20.0-20.2k sets/s
 * against 21.1-23.7k now, a follower's CPU per set 9.2-9.7 us against 6.9-8.4).
 *
 * The wait is bounded: a write commits on a majority, which need not include the
 * leader (Raft lets it write its log in parallel with the followers), so a leader
 * whose disk stalls must not stall the cluster. Entries that have waited
 * REPLICATION_APPEND_HOLD_MS for the leader's log write in flight go out at the end of
 * the host's next loop turn (engine_flush; corrald's loop turns at least every 10 ms,
 * on its tick) and can commit on the followers' answers alone. */
static void replication_appends_flush(struct engine *e)
{
    if (e->raft != NULL && raft_flush_due(e->raft)) {
        struct raft_event ev = {.type = RAFT_EVENT_FLUSH, .now_ms = engine_now(e)};
        replication_step(e, &ev);
    }
}

/* Starts the batched log write at the end of the host's loop turn, so that every write
 * read in that turn shares it. (A longer gathering window, waiting for the writers the
 * previous batch answered, was measured A/B with tools/loadrun-style runs and gave
 * nothing here: batches stayed at half the writers, and the wait delayed the sync
 * thread on a shared core.) */
void engine_flush(struct engine *e)
{
    replication_wal_kick(e);
    /* Nothing in flight (nothing taken: a log change waits in deferred_log), or the
     * write in flight is slow: the followers need not wait for this member's log. */
    if (e->raft != NULL && raft_flush_due(e->raft) &&
        (wal_in_flight_count(e->wal) == 0 ||
         engine_now(e) - e->wal_batch_taken_ms >= REPLICATION_APPEND_HOLD_MS))
        replication_appends_flush(e);
}

void replication_wal_kick(struct engine *e)
{
    struct wal_batch *batch = NULL;
    if (wal_batch_take(e->wal, &batch) != 0)
        engine_fatal(e, "WAL refused a batch after an earlier failure");
    if (!batch)
        return;
    e->wal_batch_taken_ms = engine_now(e);
    replication_appends_flush(e);              /* the batch's entries, to the followers */
    struct wal_job *job = malloc(sizeof *job); /* freed by wal_job_done */
    if (!job)
        engine_fatal(e, "out of memory starting a WAL batch");
    job->engine = e;
    job->batch = batch;
    job->result = 0;
    if (e->host.run_blocking(e->host.data, wal_job_work, wal_job_done, job) != 0)
        engine_fatal(e, "cannot queue the WAL batch on a worker thread");
}

/* Fails leader-local requests whose entries a truncation removed: another leader's
 * entries replace them, so they will never be applied. */
static void inflight_fail_after(struct engine *e, uint64_t index)
{
    struct inflight **at = &e->inflight_head, *last = NULL;
    while (*at) {
        struct inflight *f = *at;
        if (f->index <= index) {
            last = f;
            at = &f->next;
            continue;
        }
        *at = f->next;
        e->inflight_count--;
        if (f->done) {
            struct engine_result result = {.error = CORRAL_E_NO_QUORUM, .failed_index = -1};
            f->done(f->arg, &result);
        }
        bytes_free(&f->payload);
        free(f);
    }
    e->inflight_tail = last;
}

static void log_change(struct engine *e, uint64_t truncate_after, uint64_t first_index,
                       uint64_t count, const struct raft_entry *entries)
{
    if (truncate_after != UINT64_MAX) {
        if (wal_truncate_after(e->wal, truncate_after) != 0)
            engine_fatal(e, "cannot truncate the log");
        inflight_fail_after(e, truncate_after);
        if (e->proposed_index > truncate_after)
            e->proposed_index = truncate_after;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (wal_append(e->wal, first_index + i, entries[i].term, entries[i].data,
                       entries[i].length) != 0)
            engine_fatal(e, "WAL refused a contiguous append");
        e->wal_records++;
        e->log_bytes_since_snapshot += entries[i].length;
    }
}

static void deferred_run(struct engine *e)
{
    while (e->deferred_head && wal_in_flight_count(e->wal) == 0) {
        struct deferred_log *d = e->deferred_head;
        e->deferred_head = d->next;
        if (!e->deferred_head)
            e->deferred_tail = NULL;
        struct raft_entry *entries = calloc(d->count ? d->count : 1, sizeof *entries);
        if (!entries)
            engine_fatal(e, "out of memory replaying a deferred log change");
        size_t offset = 0;
        for (uint64_t i = 0; i < d->count; i++) {
            entries[i] = (struct raft_entry){
                .term = d->terms[i], .data = d->data.data + offset, .length = d->lengths[i]};
            offset += d->lengths[i];
        }
        log_change(e, d->truncate_after, d->first_index, d->count, entries);
        free(entries);
        free(d->terms);
        free(d->lengths);
        bytes_free(&d->data);
        free(d);
    }
}

static void update_log(struct engine *e, const struct raft_update *u)
{
    if (u->truncate_after == UINT64_MAX && u->entry_count == 0)
        return;
    bool must_wait = e->deferred_head != NULL ||
                     (u->truncate_after != UINT64_MAX && wal_in_flight_count(e->wal) > 0);
    if (!must_wait) {
        log_change(e, u->truncate_after, u->first_index, u->entry_count, u->entries);
        return;
    }
    /* Keep a copy: the update's entries live only until the next step. */
    struct deferred_log *d = calloc(1, sizeof *d); /* freed by deferred_run */
    if (!d)
        engine_fatal(e, "out of memory deferring a log change");
    d->truncate_after = u->truncate_after;
    d->first_index = u->first_index;
    d->count = u->entry_count;
    d->terms = calloc(d->count ? d->count : 1, sizeof *d->terms);
    d->lengths = calloc(d->count ? d->count : 1, sizeof *d->lengths);
    if (!d->terms || !d->lengths)
        engine_fatal(e, "out of memory deferring a log change");
    for (uint64_t i = 0; i < d->count; i++) {
        d->terms[i] = u->entries[i].term;
        d->lengths[i] = u->entries[i].length;
        bytes_put(&d->data, u->entries[i].data, u->entries[i].length);
    }
    if (bytes_failed(&d->data))
        engine_fatal(e, "out of memory deferring a log change");
    if (e->deferred_tail)
        e->deferred_tail->next = d;
    else
        e->deferred_head = d;
    e->deferred_tail = d;
}

/* ---- snapshots between members ---- */

struct snapshot_send_job {
    struct engine *engine;
    uint64_t to;
    char dir[4096];
    struct bytes message;
    int result;
};

static void snapshot_send_work(void *arg)
{
    struct snapshot_send_job *job = arg;
    struct snapshot_file *files = NULL;
    size_t count = 0;
    job->result = snapshot_list(job->dir, &files, &count);
    if (job->result != 0 || count == 0) {
        job->result = job->result ? job->result : CORRAL_E_NO_NODE;
        free(files);
        return;
    }
    uint64_t zxid = 0, term = 0;
    uint8_t *body = NULL;
    size_t length = 0;
    job->result = snapshot_read(files[0].path, &zxid, &term, &body, &length);
    free(files);
    if (job->result != 0)
        return;
    bytes_put_u8(&job->message, REPLICATION_FORMAT);
    bytes_put_u64(&job->message, zxid);
    bytes_put_u64(&job->message, term);
    bytes_put(&job->message, body, length);
    free(body);
}

static void snapshot_send_done(void *arg)
{
    struct snapshot_send_job *job = arg;
    struct engine *e = job->engine;
    e->snapshot_send_in_flight = false;
    if (job->result == 0 && !bytes_failed(&job->message)) {
        engine_logf(e, 1, "sending the snapshot (%zu bytes) to member %" PRIu64,
                    job->message.length, job->to);
        replication_send(e, job->to, ENGINE_CHANNEL_SNAPSHOT, &job->message);
    } else {
        engine_logf(e, 2, "cannot send a snapshot to member %" PRIu64 ": %s", job->to,
                    corral_error_name(job->result));
    }
    bytes_free(&job->message);
    free(job);
}

static void snapshot_send(struct engine *e, uint64_t to)
{
    if (e->snapshot_send_in_flight)
        return; /* the core asks again after an election timeout */
    struct snapshot_send_job *job = calloc(1, sizeof *job); /* freed by snapshot_send_done */
    if (!job)
        return;
    job->engine = e;
    job->to = to;
    snprintf(job->dir, sizeof job->dir, "%s", e->options.data_dir);
    e->snapshot_send_in_flight = true;
    if (e->host.run_blocking(e->host.data, snapshot_send_work, snapshot_send_done, job) != 0) {
        e->snapshot_send_in_flight = false;
        free(job);
    }
}

static void snapshot_receive(struct engine *e, const uint8_t *data, size_t length)
{
    struct bytes_reader r;
    bytes_reader_init(&r, data, length);
    if (bytes_get_u8(&r) != REPLICATION_FORMAT)
        return;
    uint64_t index = bytes_get_u64(&r), term = bytes_get_u64(&r);
    if (r.failed || index <= e->applied_index || index <= raft_commit_index(e->raft))
        return; /* old news */
    if (index != e->install_index || term != e->install_term) {
        /* Not the snapshot the core was told to expect (the leader took a newer one
         * meanwhile): the leader announces again and sends the matching bytes. */
        engine_logf(e, 1, "snapshot at %" PRIu64 " is not the one announced (%" PRIu64 ")", index,
                    e->install_index);
        return;
    }
    if (wal_in_flight_count(e->wal) > 0 || e->deferred_head) {
        engine_logf(e, 1,
                    "snapshot at %" PRIu64 " arrived during a log write; the leader "
                    "will send it again",
                    index);
        return;
    }
    int rc = engine_state_decode(e, r.data + r.offset, r.length - r.offset);
    if (rc != 0) {
        engine_logf(e, 2, "snapshot at %" PRIu64 " from the leader is unusable: %s", index,
                    corral_error_name(rc));
        return;
    }
    /* The log before the snapshot is superseded (and may conflict): start it afresh. */
    if (wal_truncate_after(e->wal, 0) != 0 ||
        snapshot_write(e->options.data_dir, index, term, r.data + r.offset, r.length - r.offset) !=
            0)
        engine_fatal(e, "cannot store the snapshot received from the leader");
    inflight_fail_after(e, 0);
    engine_prep_reset(e);
    e->applied_index = e->last_snapshot_index = index;
    e->applied_term = term;
    e->log_bytes_since_snapshot = 0;
    e->last_snapshot_bytes = r.length - r.offset;
    engine_logf(e, 1, "installed the leader's snapshot at zxid %" PRIu64, index);
    e->install_index = e->install_term = 0;
    struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED,
                            .now_ms = engine_now(e),
                            .snapshot_index = index,
                            .snapshot_term = term};
    replication_step(e, &ev);
    engine_waiters_run(e);
}

void replication_snapshot_taken(struct engine *e, uint64_t index, uint64_t term)
{
    /* Entries before the snapshot are kept in memory only so that a follower slightly
     * behind can catch up without a snapshot: a bounded tail, in entries and in bytes.
     * A cluster of one has no follower and keeps none. */
    uint64_t trailing = 0;
    if (member_count(e) > 1) {
        uint64_t bytes = 0;
        while (trailing < REPLICATION_TRAILING_ENTRIES && trailing < index) {
            const struct raft_entry *entry = raft_entry_at(e->raft, index - trailing);
            if (!entry || bytes + entry->length > REPLICATION_TRAILING_BYTES)
                break;
            bytes += entry->length;
            trailing++;
        }
    }
    struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_TAKEN,
                            .now_ms = engine_now(e),
                            .snapshot_index = index,
                            .snapshot_term = term,
                            .trailing = trailing};
    int rc = replication_step(e, &ev);
    if (rc != CLUSTER_OK) {
        engine_logf(e, 2, "the consensus core refused snapshot %" PRIu64 " (term %" PRIu64 "): %d",
                    index, term, rc);
        return;
    }
    engine_logf(e, 0,
                "log in memory now starts after zxid %" PRIu64 " (snapshot %" PRIu64 ", %" PRIu64
                " trailing entries kept)",
                index - trailing, index, trailing);
}

/* ---- read index ---- */

static void read_forward_reply(struct engine *e, uint64_t to, uint64_t request_id, int error,
                               uint64_t index);

static void reads_complete(struct engine *e, const struct raft_read_state *states, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct pending_read **at = &e->reads;
        while (*at && (*at)->read_id != states[i].read_id)
            at = &(*at)->next;
        struct pending_read *p = *at;
        if (!p)
            continue;
        *at = p->next;
        if (p->from) {
            read_forward_reply(e, p->from, p->request_id, states[i].index ? 0 : CORRAL_E_NO_QUORUM,
                               states[i].index);
        } else if (p->waiter) {
            if (states[i].index)
                engine_waiter_arm(e, p->waiter, states[i].index);
            else
                engine_waiter_fail(e, p->waiter, CORRAL_E_NO_QUORUM);
        }
        free(p);
    }
}

static int read_index_start(struct engine *e, struct engine_waiter *waiter, uint64_t from,
                            uint64_t request_id)
{
    struct pending_read *p = calloc(1, sizeof *p); /* freed when its round completes */
    if (!p)
        return CORRAL_E_NO_MEMORY;
    p->read_id = ++e->next_request_id;
    p->from = from;
    p->request_id = request_id;
    p->next = e->reads;
    e->reads = p;
    if (waiter)
        engine_waiter_owner_set(waiter, &p->waiter);
    struct raft_event ev = {
        .type = RAFT_EVENT_READ_INDEX, .now_ms = engine_now(e), .read_id = p->read_id};
    replication_step(e, &ev);
    return 0;
}

/* ---- forwarding: follower side ---- */

static void forward_free(struct forward *f)
{
    if (f->read_waiter) /* it outlives f (the caller cancels it): forget where it was */
        engine_waiter_owner_set(f->read_waiter, NULL);
    free(f->message);
    free(f->ops);
    free(f->paths);
    free(f->error_path);
    free(f);
}

static struct forward *forward_new(struct engine *e, enum forward_kind kind, engine_done_fn done,
                                   void *arg)
{
    struct forward *f = calloc(1, sizeof *f); /* freed when answered or timed out */
    if (!f)
        return NULL;
    f->id = ++e->next_request_id;
    f->kind = kind;
    f->done = done;
    f->arg = arg;
    uint32_t timeout = e->options.request_timeout_ms ? e->options.request_timeout_ms : 5000;
    f->deadline_ms = engine_now(e) + timeout;
    f->next = e->forwards;
    e->forwards = f;
    return f;
}

static void forward_unlink(struct engine *e, struct forward *f)
{
    struct forward **at = &e->forwards;
    while (*at && *at != f)
        at = &(*at)->next;
    if (*at)
        *at = f->next;
}

static int forward_send(struct engine *e, struct forward *f, const struct bytes *b)
{
    uint64_t leader = raft_leader(e->raft);
    if (leader == 0 || leader == e->options.member_id || bytes_failed(b)) {
        forward_unlink(e, f);
        forward_free(f);
        return CORRAL_E_NO_QUORUM;
    }
    f->leader = leader;
    replication_send(e, leader, ENGINE_CHANNEL_FORWARD, b);
    return 0;
}

/* The leader changed: requests forwarded to the old one and not answered will never be
 * answered by it. Their outcome is unknown (the old leader may have logged them and
 * the new one may commit them), so the client hears TIMEOUT now rather than at the
 * request deadline. */
static void forwards_fail_leader_gone(struct engine *e, uint64_t leader)
{
    for (struct forward *f = e->forwards, *next; f; f = next) {
        next = f->next;
        if (f->replied || f->leader == leader)
            continue;
        forward_unlink(e, f);
        if (f->kind == FORWARD_READ_INDEX) {
            if (f->read_waiter)
                engine_waiter_fail(e, f->read_waiter, CORRAL_E_NO_QUORUM);
        } else if (f->done) {
            struct engine_result res = {.error = CORRAL_E_TIMEOUT,
                                        .failed_index = -1,
                                        .message = "the leader changed before it answered; "
                                                   "the write may or may not have happened"};
            f->done(f->arg, &res);
        }
        forward_free(f);
    }
}

static void forward_header(struct bytes *b, enum forward_kind kind, uint64_t id,
                           uint64_t session_id, uint32_t timeout_ms)
{
    bytes_put_u8(b, REPLICATION_FORMAT);
    bytes_put_u8(b, (uint8_t)kind);
    bytes_put_u64(b, id);
    bytes_put_u64(b, session_id);
    bytes_put_u32(b, timeout_ms);
}

int replication_forward_ops(struct engine *e, uint64_t session_id, const struct engine_op *ops,
                            size_t op_count, bool is_multi, engine_done_fn done, void *arg)
{
    if (raft_leader(e->raft) == 0)
        return CORRAL_E_NO_QUORUM;
    struct forward *f = forward_new(e, FORWARD_OPS, done, arg);
    if (!f)
        return CORRAL_E_NO_MEMORY;
    struct bytes b = {0};
    forward_header(&b, FORWARD_OPS, f->id, session_id, 0);
    bytes_put_u8(&b, is_multi);
    bytes_put_u32(&b, (uint32_t)op_count);
    for (size_t i = 0; i < op_count; i++) {
        bytes_put_u8(&b, (uint8_t)ops[i].type);
        bytes_put_u32(&b, ops[i].create_flags);
        bytes_put_u32(&b, (uint32_t)ops[i].version);
        bytes_put_u64(&b, (uint64_t)ops[i].ttl_ms);
        bytes_put_blob(&b, ops[i].path, (uint32_t)ops[i].path_length);
        bytes_put_blob(&b, ops[i].data, (uint32_t)ops[i].data_length);
    }
    int rc = forward_send(e, f, &b);
    bytes_free(&b);
    return rc;
}

int replication_forward_session_open(struct engine *e, uint32_t timeout_ms, engine_done_fn done,
                                     void *arg)
{
    if (raft_leader(e->raft) == 0)
        return CORRAL_E_NO_QUORUM;
    struct forward *f = forward_new(e, FORWARD_SESSION_OPEN, done, arg);
    if (!f)
        return CORRAL_E_NO_MEMORY;
    struct bytes b = {0};
    forward_header(&b, FORWARD_SESSION_OPEN, f->id, 0, timeout_ms);
    int rc = forward_send(e, f, &b);
    bytes_free(&b);
    return rc;
}

int replication_forward_session_close(struct engine *e, uint64_t session_id, engine_done_fn done,
                                      void *arg)
{
    if (raft_leader(e->raft) == 0)
        return CORRAL_E_NO_QUORUM;
    struct forward *f = forward_new(e, FORWARD_SESSION_CLOSE, done, arg);
    if (!f)
        return CORRAL_E_NO_MEMORY;
    struct bytes b = {0};
    forward_header(&b, FORWARD_SESSION_CLOSE, f->id, session_id, 0);
    int rc = forward_send(e, f, &b);
    bytes_free(&b);
    return rc;
}

static void forward_finish(void *arg)
{
    /* The reply's zxid is applied here: answer with the leader's result. */
    struct forward *f = arg;
    f->apply_waiter = NULL;
    if (f->done)
        f->done(f->arg, &f->result);
    forward_free(f);
}

static void forward_reply_receive(struct engine *e, const uint8_t *data, size_t length)
{
    struct bytes_reader r;
    bytes_reader_init(&r, data, length);
    if (bytes_get_u8(&r) != REPLICATION_FORMAT)
        return;
    uint64_t id = bytes_get_u64(&r);
    struct forward *f = e->forwards;
    while (f && f->id != id)
        f = f->next;
    if (!f)
        return; /* timed out already */
    struct engine_result *res = &f->result;
    res->error = (int32_t)bytes_get_u32(&r);
    res->failed_index = (int32_t)bytes_get_u32(&r);
    uint32_t path_length, message_length;
    const uint8_t *path = bytes_get_blob(&r, &path_length);
    const uint8_t *message = bytes_get_blob(&r, &message_length);
    res->zxid = bytes_get_u64(&r);
    res->session_id = bytes_get_u64(&r);
    res->timeout_ms = bytes_get_u32(&r);
    uint32_t op_count = bytes_get_u32(&r);
    if (r.failed || op_count > length / 8)
        return; /* malformed: the request times out */
    forward_unlink(e, f);
    if (path && path_length) {
        f->error_path = strndup((const char *)path, path_length);
        res->error_path = f->error_path;
    }
    if (message && message_length) {
        f->message = strndup((const char *)message, message_length);
        res->message = f->message;
    }
    f->ops = calloc(op_count ? op_count : 1, sizeof *f->ops);
    f->paths = malloc(length + 1); /* the paths cannot be longer than the message */
    size_t used = 0;
    for (uint32_t i = 0; f->ops && f->paths && i < op_count; i++) {
        struct engine_op_result *op = &f->ops[i];
        op->type = bytes_get_u8(&r);
        uint32_t n;
        const uint8_t *p = bytes_get_blob(&r, &n);
        memcpy(f->paths + used, p ? p : (const uint8_t *)"", n);
        f->paths[used + n] = '\0';
        op->path = f->paths + used;
        used += n + 1;
        op->stat.czxid = bytes_get_u64(&r);
        op->stat.mzxid = bytes_get_u64(&r);
        op->stat.pzxid = bytes_get_u64(&r);
        op->stat.ctime = (int64_t)bytes_get_u64(&r);
        op->stat.mtime = (int64_t)bytes_get_u64(&r);
        op->stat.version = (int32_t)bytes_get_u32(&r);
        op->stat.cversion = (int32_t)bytes_get_u32(&r);
        op->stat.aversion = (int32_t)bytes_get_u32(&r);
        op->stat.ephemeral_owner = bytes_get_u64(&r);
        op->stat.data_length = bytes_get_u32(&r);
        op->stat.num_children = bytes_get_u32(&r);
    }
    if (!f->ops || !f->paths || r.failed) {
        res->error = res->error ? res->error : CORRAL_E_NO_MEMORY;
        op_count = 0;
    }
    res->ops = f->ops;
    res->op_count = op_count;
    if (f->kind == FORWARD_READ_INDEX) {
        struct engine_waiter *w = f->read_waiter;
        f->read_waiter = NULL;
        if (w) {
            if (res->error)
                engine_waiter_fail(e, w, res->error);
            else
                engine_waiter_arm(e, w, res->zxid);
        }
        forward_free(f);
        engine_waiters_run(e);
        return;
    }
    if (res->error != 0 || res->zxid <= e->applied_index) {
        if (f->done)
            f->done(f->arg, res);
        forward_free(f);
        return;
    }
    f->replied = true;
    if (engine_zxid_wait(e, res->zxid, forward_finish, f, &f->apply_waiter) != 0)
        forward_finish(f);
}

/* ---- forwarding: leader side ---- */

static void reply_encode(struct bytes *b, uint64_t request_id, const struct engine_result *res)
{
    bytes_put_u8(b, REPLICATION_FORMAT);
    bytes_put_u64(b, request_id);
    bytes_put_u32(b, (uint32_t)res->error);
    bytes_put_u32(b, (uint32_t)res->failed_index);
    const char *path = res->error_path ? res->error_path : "";
    bytes_put_blob(b, path, (uint32_t)strlen(path));
    const char *message = res->message ? res->message : "";
    bytes_put_blob(b, message, (uint32_t)strlen(message));
    bytes_put_u64(b, res->zxid);
    bytes_put_u64(b, res->session_id);
    bytes_put_u32(b, res->timeout_ms);
    bytes_put_u32(b, (uint32_t)res->op_count);
    for (size_t i = 0; i < res->op_count; i++) {
        const struct engine_op_result *op = &res->ops[i];
        bytes_put_u8(b, (uint8_t)op->type);
        const char *p = op->path ? op->path : "";
        bytes_put_blob(b, p, (uint32_t)strlen(p));
        bytes_put_u64(b, op->stat.czxid);
        bytes_put_u64(b, op->stat.mzxid);
        bytes_put_u64(b, op->stat.pzxid);
        bytes_put_u64(b, (uint64_t)op->stat.ctime);
        bytes_put_u64(b, (uint64_t)op->stat.mtime);
        bytes_put_u32(b, (uint32_t)op->stat.version);
        bytes_put_u32(b, (uint32_t)op->stat.cversion);
        bytes_put_u32(b, (uint32_t)op->stat.aversion);
        bytes_put_u64(b, op->stat.ephemeral_owner);
        bytes_put_u32(b, op->stat.data_length);
        bytes_put_u32(b, op->stat.num_children);
    }
}

static void reply_send(struct engine *e, uint64_t to, uint64_t request_id,
                       const struct engine_result *res)
{
    struct bytes b = {0};
    reply_encode(&b, request_id, res);
    replication_send(e, to, ENGINE_CHANNEL_REPLY, &b);
    bytes_free(&b);
}

static void read_forward_reply(struct engine *e, uint64_t to, uint64_t request_id, int error,
                               uint64_t index)
{
    struct engine_result res = {.error = error, .failed_index = -1, .zxid = index};
    reply_send(e, to, request_id, &res);
}

static void forward_origin_done(void *arg, const struct engine_result *result)
{
    struct forward_origin *o = arg;
    reply_send(o->engine, o->from, o->request_id, result);
    free(o);
}

static void forward_receive(struct engine *e, uint64_t from, const uint8_t *data, size_t length)
{
    struct bytes_reader r;
    bytes_reader_init(&r, data, length);
    if (bytes_get_u8(&r) != REPLICATION_FORMAT)
        return;
    enum forward_kind kind = bytes_get_u8(&r);
    uint64_t request_id = bytes_get_u64(&r);
    uint64_t session_id = bytes_get_u64(&r);
    uint32_t timeout_ms = bytes_get_u32(&r);
    if (r.failed)
        return;
    struct engine_result error = {.failed_index = -1};
    if (!replication_is_leader(e)) {
        error.error = CORRAL_E_NO_QUORUM; /* the follower retries once it knows the leader */
        reply_send(e, from, request_id, &error);
        return;
    }
    if (kind == FORWARD_READ_INDEX) {
        if (read_index_start(e, NULL, from, request_id) != 0)
            read_forward_reply(e, from, request_id, CORRAL_E_NO_MEMORY, 0);
        return;
    }
    struct forward_origin *o = malloc(sizeof *o); /* freed by forward_origin_done */
    if (!o)
        return;
    *o = (struct forward_origin){.engine = e, .from = from, .request_id = request_id, .kind = kind};
    int rc;
    if (kind == FORWARD_SESSION_OPEN) {
        rc = engine_session_open(e, timeout_ms, forward_origin_done, o);
        error.error = rc;
    } else if (kind == FORWARD_SESSION_CLOSE) {
        rc = engine_session_close(e, session_id, forward_origin_done, o);
        error.error = rc;
    } else if (kind == FORWARD_OPS) {
        bool is_multi = bytes_get_u8(&r);
        uint32_t count = bytes_get_u32(&r);
        if (r.failed || count > length / 16) {
            free(o);
            return;
        }
        struct engine_op *ops = calloc(count ? count : 1, sizeof *ops);
        if (!ops) {
            free(o);
            return;
        }
        for (uint32_t i = 0; i < count; i++) {
            ops[i].type = bytes_get_u8(&r);
            ops[i].create_flags = bytes_get_u32(&r);
            ops[i].version = (int32_t)bytes_get_u32(&r);
            ops[i].ttl_ms = (int64_t)bytes_get_u64(&r);
            uint32_t n;
            ops[i].path = (const char *)bytes_get_blob(&r, &n);
            ops[i].path_length = n;
            ops[i].data = bytes_get_blob(&r, &n);
            ops[i].data_length = n;
        }
        if (r.failed) {
            free(ops);
            free(o);
            return;
        }
        rc = engine_submit_ops(e, session_id, ops, count, is_multi, forward_origin_done, o, &error);
        free(ops);
    } else {
        free(o);
        return;
    }
    if (rc != 0) {
        error.error = rc;
        reply_send(e, from, request_id, &error);
        free(o);
    }
}

/* ---- sessions ---- */

void replication_session_heard(struct engine *e, uint64_t session_id)
{
    if (replication_is_leader(e))
        return;
    if (e->touched_count == e->touched_capacity) {
        size_t capacity = e->touched_capacity ? e->touched_capacity * 2 : 64;
        uint64_t *grown = realloc(e->touched, capacity * sizeof *grown);
        if (!grown)
            return; /* the next request of the session will try again */
        e->touched = grown;
        e->touched_capacity = capacity;
    }
    e->touched[e->touched_count++] = session_id;
}

static void sessions_flush(struct engine *e, uint64_t now)
{
    if (now < e->next_touch_flush_ms)
        return;
    e->next_touch_flush_ms = now + REPLICATION_TOUCH_FLUSH_MS;
    uint64_t leader = raft_leader(e->raft);
    if (e->touched_count == 0 || leader == 0 || replication_is_leader(e))
        return;
    struct bytes b = {0};
    bytes_put_u8(&b, REPLICATION_FORMAT);
    bytes_put_u32(&b, (uint32_t)e->touched_count);
    for (size_t i = 0; i < e->touched_count; i++)
        bytes_put_u64(&b, e->touched[i]);
    replication_send(e, leader, ENGINE_CHANNEL_SESSION, &b);
    bytes_free(&b);
    e->touched_count = 0;
}

static void sessions_receive(struct engine *e, const uint8_t *data, size_t length)
{
    struct bytes_reader r;
    bytes_reader_init(&r, data, length);
    if (bytes_get_u8(&r) != REPLICATION_FORMAT || !replication_is_leader(e))
        return;
    uint32_t count = bytes_get_u32(&r);
    for (uint32_t i = 0; i < count && !r.failed; i++) {
        uint64_t id = bytes_get_u64(&r);
        if (!r.failed)
            engine_session_touch(e, id);
    }
}

/* ---- updates ---- */

static void replication_role_changed(struct engine *e, const struct raft_update *u)
{
    forwards_fail_leader_gone(e, u->leader_id);
    engine_prep_reset(e);
    e->ready_latch = false;
    if (u->role == CLUSTER_ROLE_LEADER) {
        /* It may propose once its term's first entry (just appended) is applied: by
         * then every entry of earlier terms in its log is applied too, so prep sees the
         * whole state (3.6.2: that entry commits them). */
        e->term_start_index = raft_last_index(e->raft);
        e->proposed_index = raft_last_index(e->raft);
        /* A new leader gives every session a fresh timeout: it cannot know when the
         * old leader last heard from them, and must not expire live clients. */
        uint64_t now = engine_now(e);
        for (size_t b = 0; b < e->sessions.bucket_count; b++)
            for (struct session *s = e->sessions.buckets[b]; s; s = s->next)
                s->deadline_ms = now + s->timeout_ms;
        if (member_count(e) > 1)
            engine_logf(e, 1, "leader of term %" PRIu64, raft_term(e->raft));
    } else if (member_count(e) > 1) {
        engine_logf(e, 1, "%s in term %" PRIu64 ", leader %" PRIu64, cluster_role_name(u->role),
                    raft_term(e->raft), u->leader_id);
    }
}

static void replication_update_process(struct engine *e, const struct raft_update *u)
{
    if (u->hard_state_changed && hardstate_write(e->options.data_dir, u->term, u->voted_for) != 0)
        engine_fatal(e, "cannot make the term and vote durable");
    update_log(e, u);
    for (uint32_t i = 0; i < u->message_count; i++) {
        struct bytes b = {0};
        if (raft_message_encode(&u->messages[i], &b.data, &b.length) == CLUSTER_OK) {
            b.capacity = b.length;
            replication_send(e, u->messages[i].to, ENGINE_CHANNEL_RAFT, &b);
        }
        free(b.data);
    }
    if (u->role_changed)
        replication_role_changed(e, u);
    if (u->read_state_count)
        reads_complete(e, u->read_states, u->read_state_count);
    if (u->snapshot_needed)
        snapshot_send(e, u->snapshot_to);
    if (u->install_snapshot) {
        e->install_index = u->install_index;
        e->install_term = u->install_term;
    }
    e->next_raft_tick_ms = u->next_tick_ms;
    /* With a host that flushes at the end of each loop turn, the batch waits for it:
     * every write read in this turn then shares the batch's one fdatasync. */
    if (!e->host.flush_at_loop_end)
        replication_wal_kick(e);
    if (u->commit_index > e->applied_index)
        engine_apply_committed(e, u->commit_index);
    else
        engine_waiters_run(e);
    /* A follower that learns of a leader when it already holds everything committed
     * is caught up at once. */
    if (!e->ready_latch && !replication_is_leader(e) && raft_leader(e->raft) != 0 &&
        e->applied_index >= raft_commit_index(e->raft))
        e->ready_latch = true;
}

/* ---- public entry points ---- */

void engine_receive(struct engine *e, uint64_t from, enum engine_channel channel, const void *bytes,
                    size_t length)
{
    for (uint32_t i = 0; i < e->options.member_count && i < ENGINE_MAX_MEMBERS; i++)
        if (e->options.members[i] == from)
            e->member_heard_ms[i] = engine_now(e);
    switch (channel) {
    case ENGINE_CHANNEL_RAFT: {
        struct raft_message m;
        if (raft_message_decode(bytes, length, &m) != CLUSTER_OK)
            return;
        struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .now_ms = engine_now(e), .message = &m};
        replication_step(e, &ev);
        if (m.entry_count > 0)
            free((void *)m.entries);
        break;
    }
    case ENGINE_CHANNEL_SNAPSHOT:
        snapshot_receive(e, bytes, length);
        break;
    case ENGINE_CHANNEL_FORWARD:
        forward_receive(e, from, bytes, length);
        break;
    case ENGINE_CHANNEL_REPLY:
        forward_reply_receive(e, bytes, length);
        break;
    case ENGINE_CHANNEL_SESSION:
        sessions_receive(e, bytes, length);
        break;
    }
}

int engine_linearizable_wait(struct engine *e, int *status, engine_wake_fn wake, void *arg,
                             struct engine_waiter **out)
{
    if (e->shutting_down)
        return CORRAL_E_SHUTTING_DOWN;
    if (raft_leader(e->raft) == 0)
        return CORRAL_E_NO_QUORUM;
    struct engine_waiter *w = engine_waiter_pending_new(status, wake, arg, NULL);
    if (!w)
        return CORRAL_E_NO_MEMORY;
    int rc = 0;
    /* A cluster of one answers a read index at once, inside this call: hold the wake
     * callbacks back, and tell the caller there is nothing to wait for. */
    e->defer_wakes++;
    if (replication_is_leader(e)) {
        rc = read_index_start(e, w, 0, 0);
    } else {
        struct forward *f = forward_new(e, FORWARD_READ_INDEX, NULL, NULL);
        if (!f) {
            rc = CORRAL_E_NO_MEMORY;
        } else {
            engine_waiter_owner_set(w, &f->read_waiter);
            struct bytes b = {0};
            forward_header(&b, FORWARD_READ_INDEX, f->id, 0, 0);
            rc = forward_send(e, f, &b);
            bytes_free(&b);
        }
    }
    e->defer_wakes--;
    if (rc != 0) {
        engine_waiter_cancel(e, w);
        return rc;
    }
    if (engine_waiter_take_if_woken(e, w))
        return *status != 0 ? *status : 1;
    *out = w;
    return 0;
}

int replication_can_propose(struct engine *e)
{
    if (!replication_is_leader(e))
        return CORRAL_E_NOT_LEADER;
    if (e->disk_low)
        return CORRAL_E_NO_SPACE;
    if (e->applied_index < e->term_start_index || !raft_has_quorum(e->raft, engine_now(e)))
        return CORRAL_E_NO_QUORUM;
    return 0;
}

int replication_propose(struct engine *e, const struct bytes *payload, uint64_t *index,
                        uint64_t *term)
{
    struct raft_event ev = {.type = RAFT_EVENT_PROPOSE,
                            .now_ms = engine_now(e),
                            .proposal = payload->data,
                            .proposal_length = (uint32_t)payload->length};
    struct raft_update u;
    int rc = raft_step(e->raft, &ev, &u, index);
    if (rc == CLUSTER_E_NOT_LEADER)
        return CORRAL_E_NOT_LEADER;
    if (rc == CLUSTER_E_NO_MEMORY)
        return CORRAL_E_NO_MEMORY;
    if (rc != CLUSTER_OK)
        return CORRAL_E_NO_QUORUM;
    *term = raft_term(e->raft);
    e->proposed_index = *index;
    replication_update_process(e, &u);
    return 0;
}

void replication_tick(struct engine *e)
{
    uint64_t now = engine_now(e);
    if (now >= e->next_raft_tick_ms) {
        struct raft_event ev = {.type = RAFT_EVENT_TICK, .now_ms = now};
        replication_step(e, &ev);
    }
    sessions_flush(e, now);
    /* Forwarded requests without an answer in time: the outcome is unknown. */
    for (struct forward *f = e->forwards, *next; f; f = next) {
        next = f->next;
        if (now < f->deadline_ms)
            continue;
        forward_unlink(e, f);
        struct engine_result res = {.error = CORRAL_E_TIMEOUT, .failed_index = -1};
        if (f->kind == FORWARD_READ_INDEX) {
            if (f->read_waiter)
                engine_waiter_fail(e, f->read_waiter, CORRAL_E_TIMEOUT);
        } else if (f->done) {
            f->done(f->arg, &res);
        }
        forward_free(f);
    }
    /* Proposals of this leader not committed in time: the outcome is unknown (the
     * entry may still commit), so the client hears TIMEOUT; the record stays, without
     * its callback, so that apply can still check it. */
    uint32_t timeout = e->options.request_timeout_ms ? e->options.request_timeout_ms : 5000;
    for (struct inflight *f = e->inflight_head; f; f = f->next) {
        if (f->done && now >= f->proposed_ms + timeout) {
            struct engine_result res = {.error = CORRAL_E_TIMEOUT, .failed_index = -1};
            engine_done_fn done = f->done;
            f->done = NULL;
            done(f->arg, &res);
        }
    }
    engine_waiters_run(e);
}

int replication_open(struct engine *e, const struct raft_entry *entries, uint64_t count)
{
    uint64_t term = 0, voted_for = 0;
    int rc = hardstate_read(e->options.data_dir, &term, &voted_for);
    if (rc != 0) {
        engine_logf(e, 3, "the hard state file (term and vote) is unreadable: %s",
                    corral_error_name(rc));
        return rc;
    }
    e->host.random_bytes(e->host.data, &e->jitter_state, sizeof e->jitter_state);
    struct raft_config config = {
        .self_id = e->options.member_id,
        .member_count = member_count(e),
        .heartbeat_ms = e->options.heartbeat_ms ? e->options.heartbeat_ms : 50,
        .election_timeout_ms =
            e->options.election_timeout_ms ? e->options.election_timeout_ms : 500,
        .pre_vote = true,
        /* One APPEND per follower per log batch of the leader's (engine_flush,
         * replication_appends_flush). Sent per proposal, the followers of a 64-writer
         * load got ~5 entries per message and synced 7x as often as the leader, which
         * cost each of them as much CPU per write as the leader's HTTP. */
        .appends_on_flush = e->host.flush_at_loop_end,
        /* Each follower receives, syncs and answers once per two log batches of the
         * leader's (3 members), the other half's entries coming with the next batch;
         * commits still wait for a majority (raft.c, raft_flush). */
        .appends_quorum_first = e->host.flush_at_loop_end,
        .random = replication_random,
        .random_arg = e,
    };
    if (e->options.member_count > 1)
        memcpy(config.members, e->options.members, sizeof config.members);
    else
        config.members[0] = e->options.member_id;
    struct raft_start start = {.term = term,
                               .voted_for = voted_for,
                               .snapshot_index = e->last_snapshot_index,
                               .snapshot_term = e->snapshot_term,
                               .entries = entries,
                               .entry_count = count,
                               .now_ms = engine_now(e)};
    e->raft = raft_create(&config, &start);
    if (!e->raft)
        return CORRAL_E_NO_MEMORY;
    struct raft_event ev = {.type = RAFT_EVENT_TICK, .now_ms = engine_now(e)};
    replication_step(e, &ev);
    return 0;
}

void replication_close(struct engine *e)
{
    while (e->forwards) {
        struct forward *f = e->forwards;
        e->forwards = f->next;
        if (f->apply_waiter)
            engine_waiter_cancel(e, f->apply_waiter);
        if (f->read_waiter)
            engine_waiter_cancel(e, f->read_waiter);
        if (f->done) {
            struct engine_result res = {.error = CORRAL_E_SHUTTING_DOWN, .failed_index = -1};
            f->done(f->arg, &res);
        }
        forward_free(f);
    }
    while (e->reads) {
        struct pending_read *p = e->reads;
        e->reads = p->next;
        if (p->waiter)
            engine_waiter_cancel(e, p->waiter);
        free(p);
    }
    while (e->deferred_head) {
        struct deferred_log *d = e->deferred_head;
        e->deferred_head = d->next;
        free(d->terms);
        free(d->lengths);
        bytes_free(&d->data);
        free(d);
    }
    free(e->touched);
    e->touched = NULL;
    raft_destroy(e->raft);
    e->raft = NULL;
}
