/* watch.c: one-shot watches and per-session event queues (see watch.h).
 *
 * Two hash maps: (kind, path) -> the sessions watching it, and session id -> its
 * registrations and its queue of undelivered events. Each registration is held by
 * both sides, so a trigger finds its watchers in O(watchers) and a session end finds
 * its watches in O(its watches), without scanning everything. */
#include "watch.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

struct watch_path {
    struct watch_path *next; /* hash chain */
    enum watch_kind kind;
    uint64_t *sessions; /* owned */
    uint32_t count;
    uint32_t capacity;
    size_t length;
    char path[]; /* NUL-terminated */
};

struct watch_session {
    struct watch_session *next; /* hash chain */
    uint64_t id;
    struct watch_path **registrations; /* owned array; entries owned by the path map */
    uint32_t registration_count;
    uint32_t registration_capacity;
    struct watch_event *events; /* owned queue, oldest first */
    size_t event_count;
    size_t event_capacity;
};

struct watch_registry {
    struct watch_path **paths;
    size_t path_buckets;
    size_t path_count;
    size_t registration_count;
    struct watch_session **sessions;
    size_t session_buckets;
    size_t session_count;
    watch_pending_fn on_pending;
    void *arg;
};

const char *watch_event_type_name(enum watch_event_type type)
{
    switch (type) {
    case WATCH_EVENT_CREATED:
        return "created";
    case WATCH_EVENT_DELETED:
        return "deleted";
    case WATCH_EVENT_CHANGED:
        return "changed";
    case WATCH_EVENT_CHILDREN:
        return "children";
    }
    return "unknown";
}

static size_t hash_path(enum watch_kind kind, const char *path, size_t length)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)kind; /* FNV-1a */
    for (size_t i = 0; i < length; i++) {
        h ^= (unsigned char)path[i];
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h ^ (h >> 32));
}

static size_t hash_id(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id;
}

struct watch_registry *watch_registry_create(watch_pending_fn on_pending, void *arg)
{
    struct watch_registry *r = calloc(1, sizeof *r); /* owned by the caller */
    if (!r)
        return NULL;
    r->path_buckets = 1024;
    r->session_buckets = 1024;
    r->paths = calloc(r->path_buckets, sizeof *r->paths);
    r->sessions = calloc(r->session_buckets, sizeof *r->sessions);
    if (!r->paths || !r->sessions) {
        free(r->paths);
        free(r->sessions);
        free(r);
        return NULL;
    }
    r->on_pending = on_pending;
    r->arg = arg;
    return r;
}

void watch_events_free(struct watch_event *events, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(events[i].path);
    free(events);
}

void watch_registry_destroy(struct watch_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->path_buckets; i++) {
        struct watch_path *p = r->paths[i];
        while (p) {
            struct watch_path *next = p->next;
            free(p->sessions);
            free(p);
            p = next;
        }
    }
    for (size_t i = 0; i < r->session_buckets; i++) {
        struct watch_session *s = r->sessions[i];
        while (s) {
            struct watch_session *next = s->next;
            free(s->registrations);
            watch_events_free(s->events, s->event_count);
            free(s);
            s = next;
        }
    }
    free(r->paths);
    free(r->sessions);
    free(r);
}

/* ---- the two maps ---- */

static void registry_grow_paths(struct watch_registry *r)
{
    size_t buckets = r->path_buckets * 2;
    struct watch_path **grown = calloc(buckets, sizeof *grown);
    if (!grown)
        return; /* longer chains: slower, not wrong */
    for (size_t i = 0; i < r->path_buckets; i++) {
        struct watch_path *p = r->paths[i];
        while (p) {
            struct watch_path *next = p->next;
            size_t b = hash_path(p->kind, p->path, p->length) & (buckets - 1);
            p->next = grown[b];
            grown[b] = p;
            p = next;
        }
    }
    free(r->paths);
    r->paths = grown;
    r->path_buckets = buckets;
}

static struct watch_path **path_slot(struct watch_registry *r, enum watch_kind kind,
                                     const char *path, size_t length)
{
    struct watch_path **at = &r->paths[hash_path(kind, path, length) & (r->path_buckets - 1)];
    while (*at && !((*at)->kind == kind && (*at)->length == length &&
                    memcmp((*at)->path, path, length) == 0))
        at = &(*at)->next;
    return at;
}

static struct watch_session **session_slot(const struct watch_registry *r, uint64_t id)
{
    struct watch_session **at = &r->sessions[hash_id(id) & (r->session_buckets - 1)];
    while (*at && (*at)->id != id)
        at = &(*at)->next;
    return at;
}

static struct watch_session *session_get(struct watch_registry *r, uint64_t id, bool create)
{
    struct watch_session **at = session_slot(r, id);
    if (*at || !create)
        return *at;
    struct watch_session *s = calloc(1, sizeof *s); /* owned by the registry */
    if (!s)
        return NULL;
    s->id = id;
    *at = s;
    r->session_count++;
    return s;
}

static void session_release_if_empty(struct watch_registry *r, struct watch_session *s)
{
    if (s->registration_count > 0 || s->event_count > 0)
        return;
    struct watch_session **at = session_slot(r, s->id);
    *at = s->next;
    r->session_count--;
    free(s->registrations);
    free(s->events);
    free(s);
}

static void session_registration_remove(struct watch_session *s, const struct watch_path *p)
{
    for (uint32_t i = 0; i < s->registration_count; i++) {
        if (s->registrations[i] == p) {
            s->registrations[i] = s->registrations[--s->registration_count];
            return;
        }
    }
}

/* ---- registration ---- */

int watch_add(struct watch_registry *r, enum watch_kind kind, const char *path, size_t length,
              uint64_t session_id)
{
    struct watch_session *s = session_get(r, session_id, true);
    if (!s)
        return CORRAL_E_NO_MEMORY;
    struct watch_path **at = path_slot(r, kind, path, length);
    struct watch_path *p = *at;
    if (p) {
        for (uint32_t i = 0; i < s->registration_count; i++)
            if (s->registrations[i] == p)
                return 0; /* already watching: one watch */
    }
    if (s->registration_count == s->registration_capacity) {
        uint32_t capacity = s->registration_capacity ? s->registration_capacity * 2 : 4;
        struct watch_path **grown = realloc(s->registrations, capacity * sizeof *grown);
        if (!grown)
            goto no_memory;
        s->registrations = grown;
        s->registration_capacity = capacity;
    }
    if (!p) {
        p = calloc(1, sizeof *p + length + 1); /* owned by the path map until triggered */
        if (!p)
            goto no_memory;
        p->kind = kind;
        p->length = length;
        memcpy(p->path, path, length);
        p->path[length] = '\0';
        *at = p;
        if (++r->path_count > 2 * r->path_buckets)
            registry_grow_paths(r);
    }
    if (p->count == p->capacity) {
        uint32_t capacity = p->capacity ? p->capacity * 2 : 2;
        uint64_t *grown = realloc(p->sessions, capacity * sizeof *grown);
        if (!grown) {
            if (p->count == 0) { /* just made: unmake it */
                *path_slot(r, kind, path, length) = p->next;
                r->path_count--;
                free(p);
            }
            goto no_memory;
        }
        p->sessions = grown;
        p->capacity = capacity;
    }
    p->sessions[p->count++] = session_id;
    s->registrations[s->registration_count++] = p;
    r->registration_count++;
    return 0;
no_memory:
    session_release_if_empty(r, s);
    return CORRAL_E_NO_MEMORY;
}

static void path_free(struct watch_registry *r, struct watch_path *p)
{
    struct watch_path **at = path_slot(r, p->kind, p->path, p->length);
    if (*at == p)
        *at = p->next;
    r->path_count--;
    free(p->sessions);
    free(p);
}

int watch_remove(struct watch_registry *r, enum watch_kind kind, const char *path, size_t length,
                 uint64_t session_id)
{
    struct watch_path *p = *path_slot(r, kind, path, length);
    struct watch_session *s = session_get(r, session_id, false);
    if (!p || !s)
        return CORRAL_E_NO_NODE;
    for (uint32_t i = 0; i < p->count; i++) {
        if (p->sessions[i] != session_id)
            continue;
        p->sessions[i] = p->sessions[--p->count];
        r->registration_count--;
        session_registration_remove(s, p);
        if (p->count == 0)
            path_free(r, p);
        session_release_if_empty(r, s);
        return 0;
    }
    return CORRAL_E_NO_NODE;
}

void watch_session_drop(struct watch_registry *r, uint64_t session_id)
{
    struct watch_session *s = session_get(r, session_id, false);
    if (!s)
        return;
    for (uint32_t i = 0; i < s->registration_count; i++) {
        struct watch_path *p = s->registrations[i];
        for (uint32_t j = 0; j < p->count; j++) {
            if (p->sessions[j] == session_id) {
                p->sessions[j] = p->sessions[--p->count];
                r->registration_count--;
                break;
            }
        }
        if (p->count == 0)
            path_free(r, p);
    }
    s->registration_count = 0;
    watch_events_free(s->events, s->event_count);
    s->events = NULL;
    s->event_count = s->event_capacity = 0;
    session_release_if_empty(r, s);
}

/* ---- triggering ---- */

static int session_enqueue(struct watch_registry *r, struct watch_session *s,
                           enum watch_event_type type, const char *path, size_t length,
                           uint64_t zxid)
{
    if (s->event_count == s->event_capacity) {
        size_t capacity = s->event_capacity ? s->event_capacity * 2 : 4;
        struct watch_event *grown = realloc(s->events, capacity * sizeof *grown);
        if (!grown)
            return CORRAL_E_NO_MEMORY;
        s->events = grown;
        s->event_capacity = capacity;
    }
    char *copy = malloc(length + 1); /* owned by the event */
    if (!copy)
        return CORRAL_E_NO_MEMORY;
    memcpy(copy, path, length);
    copy[length] = '\0';
    s->events[s->event_count++] =
        (struct watch_event){.type = type, .zxid = zxid, .path = copy, .path_length = length};
    if (s->event_count == 1 && r->on_pending)
        r->on_pending(r->arg, s->id);
    return 0;
}

static int id_compare(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Fires and removes the watches of one (kind, path). `notified` (sorted) lists the
 * sessions that already got this event from the other table. */
static int trigger_table(struct watch_registry *r, enum watch_kind kind, enum watch_event_type type,
                         const char *path, size_t length, uint64_t zxid, const uint64_t *notified,
                         size_t notified_count)
{
    struct watch_path *p = *path_slot(r, kind, path, length);
    if (!p)
        return 0;
    int rc = 0;
    for (uint32_t i = 0; i < p->count; i++) {
        uint64_t id = p->sessions[i];
        struct watch_session *s = session_get(r, id, false);
        if (!s)
            continue;
        session_registration_remove(s, p);
        r->registration_count--;
        if (!(notified && bsearch(&id, notified, notified_count, sizeof id, id_compare)) &&
            session_enqueue(r, s, type, path, length, zxid) != 0)
            rc = CORRAL_E_NO_MEMORY;
        session_release_if_empty(r, s);
    }
    path_free(r, p);
    return rc;
}

int watch_trigger(struct watch_registry *r, enum watch_event_type type, const char *path,
                  size_t length, uint64_t zxid)
{
    /* A watch_path exists only while a session holds it (count > 0), so with no
     * registrations there is nothing to look up: the common case, a write nobody watches,
     * skips hashing the path (and its parent's, for a create or delete). */
    if (r->registration_count == 0)
        return 0;
    switch (type) {
    case WATCH_EVENT_CREATED:
    case WATCH_EVENT_CHANGED:
        return trigger_table(r, WATCH_KIND_DATA, type, path, length, zxid, NULL, 0);
    case WATCH_EVENT_CHILDREN:
        return trigger_table(r, WATCH_KIND_CHILD, type, path, length, zxid, NULL, 0);
    case WATCH_EVENT_DELETED: {
        /* Both tables fire NodeDeleted; a session watching both hears it once. */
        struct watch_path *data = *path_slot(r, WATCH_KIND_DATA, path, length);
        uint64_t *notified = NULL;
        size_t notified_count = 0;
        if (data && data->count > 0 && *path_slot(r, WATCH_KIND_CHILD, path, length)) {
            notified = malloc(data->count * sizeof *notified); /* freed below */
            if (notified) {
                notified_count = data->count;
                memcpy(notified, data->sessions, notified_count * sizeof *notified);
                qsort(notified, notified_count, sizeof *notified, id_compare);
            }
        }
        int rc = trigger_table(r, WATCH_KIND_DATA, type, path, length, zxid, NULL, 0);
        int rc2 =
            trigger_table(r, WATCH_KIND_CHILD, type, path, length, zxid, notified, notified_count);
        free(notified);
        return rc ? rc : rc2;
    }
    }
    return 0;
}

size_t watch_session_pending(const struct watch_registry *r, uint64_t session_id)
{
    struct watch_session *s = *session_slot(r, session_id);
    return s ? s->event_count : 0;
}

size_t watch_session_take(struct watch_registry *r, uint64_t session_id,
                          struct watch_event **events)
{
    *events = NULL;
    struct watch_session *s = session_get(r, session_id, false);
    if (!s || s->event_count == 0)
        return 0;
    size_t count = s->event_count;
    *events = s->events; /* ownership moves to the caller */
    s->events = NULL;
    s->event_count = s->event_capacity = 0;
    session_release_if_empty(r, s);
    return count;
}

size_t watch_count(const struct watch_registry *r)
{
    return r->registration_count;
}
