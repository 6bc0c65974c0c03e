/* engine_watch.c: watches, the event history and parked waiters of the engine.
 *
 * Everything here is per server and outside the replicated state: it is fed by the
 * txns this server applies, in zxid order, and it is rebuilt empty at start (history
 * before the start is read back from the log).
 *
 * Waiters are the engine's side of a parked HTTP request. Resumable-watch waiters are
 * indexed by path, exact and recursive apart, so an event finds the waiters it
 * concerns by looking up its own path and each of its ancestors (O(depth)), however
 * many requests are parked elsewhere: a change under /a does not touch 10,000 waiters
 * parked on /b. Session-events waiters are indexed by session id. A woken waiter is
 * only queued during apply; the callbacks run after the whole batch is applied, so a
 * woken request always reads a state in which its txn is complete.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "history.h"
#include "wal.h"

#define ENGINE_DEFAULT_HISTORY_EVENTS 250000u
#define ENGINE_DEFAULT_HISTORY_BYTES (32u * 1024u * 1024u)

enum waiter_kind {
    WAITER_ZXID,
    WAITER_SESSION_EVENTS,
    WAITER_HISTORY,
};

struct engine_waiter {
    enum waiter_kind kind;
    engine_wake_fn wake;
    void *arg;
    struct engine_waiter *prev; /* in its index list (or the zxid list) */
    struct engine_waiter *next;
    struct waiter_slot *slot;     /* the index entry holding it; NULL for zxid waiters */
    bool queued;                  /* on the wake list */
    bool armed;                   /* WAITER_ZXID: in the zxid list (else waits for a target) */
    uint64_t zxid;                /* WAITER_ZXID: target; WAITER_HISTORY: since */
    int *status;                  /* set before wake, when the caller asked for one */
    struct engine_waiter **owner; /* unarmed: the slot that points at it (cleared on cancel) */
};

/* One key of the waiter index: a path (exact or recursive) or a session id. */
struct waiter_slot {
    struct waiter_slot *next; /* hash chain */
    struct engine_waiter *head;
    uint8_t kind; /* 0 exact path, 1 recursive path, 2 session */
    size_t length;
    char key[]; /* path bytes, or the 8 bytes of a session id */
};

struct waiter_index {
    struct waiter_slot **buckets;
    size_t bucket_count;
    size_t slot_count;
    size_t waiter_count;
};

/* ---- the index ---- */

static size_t slot_hash(uint8_t kind, const void *key, size_t length)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ULL ^ kind;
    for (size_t i = 0; i < length; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h ^ (h >> 31));
}

static struct waiter_slot **slot_find(struct waiter_index *x, uint8_t kind, const void *key,
                                      size_t length)
{
    struct waiter_slot **at = &x->buckets[slot_hash(kind, key, length) & (x->bucket_count - 1)];
    while (*at && !((*at)->kind == kind && (*at)->length == length &&
                    memcmp((*at)->key, key, length) == 0))
        at = &(*at)->next;
    return at;
}

static void index_grow(struct waiter_index *x)
{
    size_t count = x->bucket_count * 2;
    struct waiter_slot **buckets = calloc(count, sizeof *buckets);
    if (!buckets)
        return;
    for (size_t i = 0; i < x->bucket_count; i++) {
        struct waiter_slot *s = x->buckets[i];
        while (s) {
            struct waiter_slot *next = s->next;
            size_t b = slot_hash(s->kind, s->key, s->length) & (count - 1);
            s->next = buckets[b];
            buckets[b] = s;
            s = next;
        }
    }
    free(x->buckets);
    x->buckets = buckets;
    x->bucket_count = count;
}

static int index_add(struct waiter_index *x, uint8_t kind, const void *key, size_t length,
                     struct engine_waiter *w)
{
    struct waiter_slot **at = slot_find(x, kind, key, length);
    struct waiter_slot *s = *at;
    if (!s) {
        s = calloc(1, sizeof *s + length); /* owned by the index while it has waiters */
        if (!s)
            return CORRAL_E_NO_MEMORY;
        s->kind = kind;
        s->length = length;
        memcpy(s->key, key, length);
        *at = s;
        if (++x->slot_count > 2 * x->bucket_count)
            index_grow(x);
    }
    w->slot = s;
    w->prev = NULL;
    w->next = s->head;
    if (s->head)
        s->head->prev = w;
    s->head = w;
    x->waiter_count++;
    return 0;
}

static void index_remove(struct waiter_index *x, struct engine_waiter *w)
{
    struct waiter_slot *s = w->slot;
    if (!s)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->slot = NULL;
    w->prev = w->next = NULL;
    x->waiter_count--;
    if (!s->head) {
        struct waiter_slot **at = slot_find(x, s->kind, s->key, s->length);
        *at = s->next;
        x->slot_count--;
        free(s);
    }
}

/* ---- waking ---- */

static void zxid_list_remove(struct engine *e, struct engine_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        e->zxid_waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->armed = false;
}

static void wake_queue(struct engine *e, struct engine_waiter *w)
{
    if (w->queued)
        return;
    if (w->kind == WAITER_ZXID && w->armed) {
        zxid_list_remove(e, w);
    } else if (w->kind != WAITER_ZXID) {
        index_remove(e->waiters, w);
    }
    if (w->owner) {
        *w->owner = NULL;
        w->owner = NULL;
    }
    w->queued = true;
    w->prev = NULL;
    w->next = NULL;
    if (e->wake_tail)
        e->wake_tail->next = w;
    else
        e->wake_head = w;
    e->wake_tail = w;
}

static void wake_slot(struct engine *e, uint8_t kind, const void *key, size_t length, uint64_t zxid)
{
    struct waiter_slot *s = *slot_find(e->waiters, kind, key, length);
    if (!s)
        return;
    struct engine_waiter *w = s->head;
    while (w) {
        /* wake_queue may free the slot when w is its last waiter: read next first */
        struct engine_waiter *next = w->next;
        if (w->kind != WAITER_HISTORY || zxid > w->zxid)
            wake_queue(e, w);
        w = next;
    }
}

/* Takes a woken waiter off the wake list (singly linked, short). */
static void wake_list_remove(struct engine *e, struct engine_waiter *w)
{
    struct engine_waiter **at = &e->wake_head, *prev = NULL;
    while (*at && *at != w) {
        prev = *at;
        at = &(*at)->next;
    }
    if (*at) {
        *at = w->next;
        if (e->wake_tail == w)
            e->wake_tail = prev;
    }
}

bool engine_waiter_take_if_woken(struct engine *e, struct engine_waiter *w)
{
    if (!w->queued)
        return false;
    wake_list_remove(e, w);
    free(w);
    return true;
}

void engine_waiters_run(struct engine *e)
{
    if (e->defer_wakes > 0)
        return; /* inside a wait call: its caller has not parked yet */
    /* Woken watchers must not overtake the writers whose answers were just queued:
     * once host.wake_soon was asked, every wake waits for it (engine_waiters_flush).
     * Other paths call here too (an update that commits nothing, a forwarded write's
     * answer); under load one came between an apply and its wake, and 2,000 watchers
     * heard of a change before its writer did (tests/e2e/test_watch_fanout.py). */
    if (e->wake_soon_pending)
        return;
    for (struct engine_waiter *w = e->zxid_waiters; w;) {
        struct engine_waiter *next = w->next;
        if (w->zxid <= e->applied_index)
            wake_queue(e, w);
        w = next;
    }
    while (e->wake_head) {
        struct engine_waiter *w = e->wake_head;
        e->wake_head = w->next;
        if (!e->wake_head)
            e->wake_tail = NULL;
        w->wake(w->arg);
        free(w);
    }
}

void engine_waiters_wake_all(struct engine *e)
{
    /* pending (unarmed) waiters are held by replication.c, which fails them itself */
    while (e->zxid_waiters)
        wake_queue(e, e->zxid_waiters);
    for (size_t i = 0; i < e->waiters->bucket_count; i++) {
        while (e->waiters->buckets[i])
            wake_queue(e, e->waiters->buckets[i]->head);
    }
    engine_waiters_flush(e); /* now, even with a wake_soon on the way */
}

void engine_waiter_cancel(struct engine *e, struct engine_waiter *w)
{
    if (!w)
        return;
    if (w->queued) {
        wake_list_remove(e, w); /* woken but not yet called back */
    } else if (w->kind == WAITER_ZXID && w->armed) {
        zxid_list_remove(e, w);
    } else if (w->kind != WAITER_ZXID) {
        index_remove(e->waiters, w);
    }
    if (w->owner)
        *w->owner = NULL; /* whoever was to arm it forgets it */
    free(w);
}

static struct engine_waiter *waiter_new(enum waiter_kind kind, engine_wake_fn wake, void *arg)
{
    struct engine_waiter *w = calloc(1, sizeof *w); /* freed by the engine: see engine.h */
    if (!w)
        return NULL;
    w->kind = kind;
    w->wake = wake;
    w->arg = arg;
    return w;
}

int engine_zxid_wait(struct engine *e, uint64_t zxid, engine_wake_fn wake, void *arg,
                     struct engine_waiter **out)
{
    if (zxid <= e->applied_index)
        return 1;
    if (e->shutting_down)
        return CORRAL_E_SHUTTING_DOWN;
    struct engine_waiter *w = waiter_new(WAITER_ZXID, wake, arg);
    if (!w)
        return CORRAL_E_NO_MEMORY;
    engine_waiter_arm(e, w, zxid);
    *out = w;
    return 0;
}

struct engine_waiter *engine_waiter_pending_new(int *status, engine_wake_fn wake, void *arg,
                                                struct engine_waiter **owner)
{
    struct engine_waiter *w = waiter_new(WAITER_ZXID, wake, arg);
    if (!w)
        return NULL;
    w->status = status;
    w->owner = owner;
    if (status)
        *status = 0;
    if (owner)
        *owner = w;
    return w;
}

void engine_waiter_owner_set(struct engine_waiter *w, struct engine_waiter **owner)
{
    w->owner = owner;
    if (owner)
        *owner = w;
}

void engine_waiter_arm(struct engine *e, struct engine_waiter *w, uint64_t zxid)
{
    if (w->owner) {
        *w->owner = NULL;
        w->owner = NULL;
    }
    w->zxid = zxid;
    if (zxid <= e->applied_index) {
        wake_queue(e, w);
        return;
    }
    w->armed = true;
    w->prev = NULL;
    w->next = e->zxid_waiters;
    if (e->zxid_waiters)
        e->zxid_waiters->prev = w;
    e->zxid_waiters = w;
}

void engine_waiter_fail(struct engine *e, struct engine_waiter *w, int status)
{
    if (w->status)
        *w->status = status;
    wake_queue(e, w);
}

uint64_t engine_session_fifo_zxid(const struct engine *e, uint64_t session_id)
{
    const struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->last_write_index <= e->applied_index)
        return 0;
    return s->last_write_index;
}

/* ---- one-shot watches ---- */

static void on_session_pending(void *arg, uint64_t session_id)
{
    struct engine *e = arg;
    wake_slot(e, 2, &session_id, sizeof session_id, 0);
}

int engine_watch_add(struct engine *e, uint64_t session_id, enum watch_kind kind, const char *path,
                     size_t length)
{
    if (path_validate(path, length, false) != 0)
        return CORRAL_E_BAD_ARGUMENTS;
    const struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->closing)
        return CORRAL_E_SESSION_EXPIRED;
    return watch_add(e->watches, kind, path, length, session_id);
}

int engine_watch_remove(struct engine *e, uint64_t session_id, enum watch_kind kind,
                        const char *path, size_t length)
{
    if (path_validate(path, length, false) != 0)
        return CORRAL_E_BAD_ARGUMENTS;
    const struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->closing)
        return CORRAL_E_SESSION_EXPIRED;
    return watch_remove(e->watches, kind, path, length, session_id);
}

size_t engine_session_events_take(struct engine *e, uint64_t session_id,
                                  struct watch_event **events)
{
    return watch_session_take(e->watches, session_id, events);
}

size_t engine_session_events_pending(const struct engine *e, uint64_t session_id)
{
    return watch_session_pending(e->watches, session_id);
}

int engine_session_events_wait(struct engine *e, uint64_t session_id, engine_wake_fn wake,
                               void *arg, struct engine_waiter **out)
{
    const struct session *s = session_find(&e->sessions, session_id);
    if (!s || s->closing || watch_session_pending(e->watches, session_id) > 0)
        return 1;
    if (e->shutting_down)
        return CORRAL_E_SHUTTING_DOWN;
    struct engine_waiter *w = waiter_new(WAITER_SESSION_EVENTS, wake, arg);
    if (!w)
        return CORRAL_E_NO_MEMORY;
    if (index_add(e->waiters, 2, &session_id, sizeof session_id, w) != 0) {
        free(w);
        return CORRAL_E_NO_MEMORY;
    }
    *out = w;
    return 0;
}

void engine_watch_session_ended(struct engine *e, uint64_t session_id)
{
    watch_session_drop(e->watches, session_id);
    wake_slot(e, 2, &session_id, sizeof session_id, 0);
}

/* ---- events of applied txns ---- */

void engine_op_events(const struct txn_op *op, uint64_t zxid,
                      void (*emit)(void *arg, uint8_t type, const char *path, size_t length,
                                   uint64_t zxid),
                      void *arg)
{
    size_t parent = op->path_length > 1 ? path_parent_length(op->path, op->path_length) : 0;
    switch (op->type) {
    case TXN_OP_CREATE:
        emit(arg, WATCH_EVENT_CREATED, op->path, op->path_length, zxid);
        emit(arg, WATCH_EVENT_CHILDREN, op->path, parent, zxid);
        break;
    case TXN_OP_DELETE:
        emit(arg, WATCH_EVENT_DELETED, op->path, op->path_length, zxid);
        emit(arg, WATCH_EVENT_CHILDREN, op->path, parent, zxid);
        break;
    case TXN_OP_SET:
        emit(arg, WATCH_EVENT_CHANGED, op->path, op->path_length, zxid);
        break;
    default:
        break;
    }
}

static void emit_live(void *arg, uint8_t type, const char *path, size_t length, uint64_t zxid)
{
    struct engine *e = arg;
    if (watch_trigger(e->watches, type, path, length, zxid) != 0)
        engine_logf(e, 2, "out of memory queueing watch events; some were lost");
    if (!e->history)
        return;
    if (history_append(e->history, type, path, length, zxid) != 0)
        engine_logf(e, 2, "out of memory keeping event history; the log serves it");
    if (e->waiters->waiter_count == 0)
        return;
    /* exact waiters on the path, recursive ones on the path and every ancestor */
    wake_slot(e, 0, path, length, zxid);
    size_t at = length;
    for (;;) {
        wake_slot(e, 1, path, at, zxid);
        if (at == 1)
            break;
        at = path_parent_length(path, at);
    }
}

void engine_events_apply_op(struct engine *e, const struct txn_op *op, uint64_t zxid)
{
    engine_op_events(op, zxid, emit_live, e);
}

/* ---- the resumable watch ---- */

static bool event_matches(const char *want, size_t want_length, bool recursive, const char *path,
                          size_t length)
{
    if (length == want_length && memcmp(path, want, length) == 0)
        return true;
    if (!recursive || length < want_length)
        return false;
    if (want_length == 1)
        return true; /* everything is under the root */
    return memcmp(path, want, want_length) == 0 && path[want_length] == '/';
}

struct history_reader {
    const char *path;
    size_t length;
    bool recursive;
    engine_history_fn fn;
    void *arg;
    size_t max_events;
    size_t delivered;
    uint64_t last_zxid;  /* zxid of the last event looked at */
    uint64_t stop_after; /* set once max_events is reached: finish this txn, then stop */
    int rc;
};

#define READER_STOP 1

static int reader_take(struct history_reader *r, uint8_t type, const char *path, size_t length,
                       uint64_t zxid)
{
    if (r->stop_after && zxid > r->stop_after)
        return READER_STOP;
    r->last_zxid = zxid;
    if (!event_matches(r->path, r->length, r->recursive, path, length))
        return 0;
    struct engine_history_event ev = {
        .type = type, .zxid = zxid, .path = path, .path_length = length};
    int rc = r->fn(r->arg, &ev);
    if (rc != 0) {
        r->rc = rc;
        return READER_STOP;
    }
    if (++r->delivered >= r->max_events && !r->stop_after)
        r->stop_after = zxid;
    return 0;
}

static int reader_memory(void *arg, const struct history_event *event)
{
    return reader_take(arg, event->type, event->path, event->path_length, event->zxid);
}

struct log_reader {
    struct history_reader *reader;
    uint64_t until; /* memory holds everything after this */
    int stopped;
};

static void reader_log_emit(void *arg, uint8_t type, const char *path, size_t length, uint64_t zxid)
{
    struct log_reader *l = arg;
    if (!l->stopped)
        l->stopped = reader_take(l->reader, type, path, length, zxid);
}

static int reader_log(void *arg, uint64_t index, uint64_t term, const void *payload, size_t length)
{
    (void)term;
    struct log_reader *l = arg;
    if (index > l->until)
        return READER_STOP;
    if (length == 0) { /* a leader's no-op: no events */
        l->reader->last_zxid = index;
        return 0;
    }
    struct txn t;
    if (txn_decode(payload, length, &t) != 0)
        return CORRAL_E_CORRUPT;
    for (uint32_t i = 0; i < t.op_count && !l->stopped; i++)
        engine_op_events(&t.ops[i], index, reader_log_emit, l);
    txn_free_ops(&t);
    if (!l->stopped)
        l->reader->last_zxid = index; /* a txn without matching events still counts */
    return l->stopped ? READER_STOP : 0;
}

int engine_history_read(struct engine *e, const char *path, size_t length, bool recursive,
                        uint64_t since, size_t max_events, engine_history_fn fn, void *arg,
                        uint64_t *resume)
{
    if (path_validate(path, length, false) != 0)
        return CORRAL_E_BAD_ARGUMENTS;
    *resume = e->applied_index;
    if (since >= e->applied_index)
        return 0;
    struct history_reader r = {.path = path,
                               .length = length,
                               .recursive = recursive,
                               .fn = fn,
                               .arg = arg,
                               .max_events = max_events ? max_events : 1,
                               .last_zxid = since};
    uint64_t covered = history_covered_from(e->history);
    if (since < covered) {
        /* Memory does not reach back: read the log for (since, covered]. Only durable
         * and applied txns are read (the log may hold more in a cluster). */
        uint64_t first = wal_first_index(e->wal);
        if (first == 0 || since + 1 < first)
            return CORRAL_E_COMPACTED;
        struct log_reader l = {.reader = &r, .until = covered};
        int rc = wal_replay(e->wal, since + 1, reader_log, &l);
        if (rc < 0)
            return rc == CORRAL_E_CORRUPT ? CORRAL_E_IO : rc;
        if (r.rc)
            return r.rc;
        if (l.stopped && r.stop_after) {
            *resume = r.stop_after;
            return 0;
        }
        r.last_zxid = covered;
    }
    int rc = history_scan(e->history, r.last_zxid, reader_memory, &r);
    if (r.rc)
        return r.rc;
    /* Stopped early: resume after the last complete txn. Otherwise everything up to
     * the applied zxid has been looked at. */
    *resume = (rc == READER_STOP && r.stop_after) ? r.stop_after : e->applied_index;
    return 0;
}

int engine_history_wait(struct engine *e, const char *path, size_t length, bool recursive,
                        uint64_t since, engine_wake_fn wake, void *arg, struct engine_waiter **out)
{
    if (path_validate(path, length, false) != 0)
        return CORRAL_E_BAD_ARGUMENTS;
    if (e->shutting_down)
        return CORRAL_E_SHUTTING_DOWN;
    struct engine_waiter *w = waiter_new(WAITER_HISTORY, wake, arg);
    if (!w)
        return CORRAL_E_NO_MEMORY;
    w->zxid = since;
    if (index_add(e->waiters, recursive ? 1 : 0, path, length, w) != 0) {
        free(w);
        return CORRAL_E_NO_MEMORY;
    }
    *out = w;
    return 0;
}

/* ---- life cycle ---- */

int engine_watch_init(struct engine *e)
{
    e->watches = watch_registry_create(on_session_pending, e);
    e->waiters = calloc(1, sizeof *e->waiters); /* owned by the engine */
    if (e->waiters) {
        e->waiters->bucket_count = 1024;
        e->waiters->buckets = calloc(e->waiters->bucket_count, sizeof *e->waiters->buckets);
    }
    if (!e->watches || !e->waiters || !e->waiters->buckets)
        return CORRAL_E_NO_MEMORY;
    return 0;
}

int engine_history_start(struct engine *e)
{
    uint64_t events =
        e->options.history_events ? e->options.history_events : ENGINE_DEFAULT_HISTORY_EVENTS;
    uint64_t bytes =
        e->options.history_bytes ? e->options.history_bytes : ENGINE_DEFAULT_HISTORY_BYTES;
    e->history = history_create(events, bytes, e->applied_index);
    return e->history ? 0 : CORRAL_E_NO_MEMORY;
}

void engine_watch_free(struct engine *e)
{
    if (e->waiters) {
        if (e->waiters->buckets) {
            for (size_t i = 0; i < e->waiters->bucket_count; i++) {
                while (e->waiters->buckets[i]) {
                    struct engine_waiter *w = e->waiters->buckets[i]->head;
                    index_remove(e->waiters, w);
                    free(w);
                }
            }
        }
        free(e->waiters->buckets);
        free(e->waiters);
        e->waiters = NULL;
    }
    while (e->zxid_waiters) {
        struct engine_waiter *w = e->zxid_waiters;
        e->zxid_waiters = w->next;
        free(w);
    }
    watch_registry_destroy(e->watches);
    e->watches = NULL;
    history_destroy(e->history);
    e->history = NULL;
}

void engine_stats_watch(const struct engine *e, struct engine_stats *out)
{
    out->watches = e->watches ? watch_count(e->watches) : 0;
    out->waiters = e->waiters ? e->waiters->waiter_count : 0;
    if (e->history) {
        out->history_events = history_event_count(e->history);
        out->history_bytes = history_bytes(e->history);
        out->history_covered_from = history_covered_from(e->history);
    }
    out->log_first_zxid = wal_first_index(e->wal);
}
