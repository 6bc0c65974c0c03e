/* watch.h: ZooKeeper's one-shot watches and the per-session event queues.
 *
 * Watch state is per server and not replicated: a session sets watches on the server
 * it talks to, and the events come from the txns this server applies, in zxid order.
 * Two tables, as in ZooKeeper's server (DataTree's dataWatches and childWatches):
 *   data watches  set by a read (node exists) or by exists (whether or not it exists);
 *                 fire on created, changed and deleted of the path.
 *   child watches set by a children read; fire on children (a child created or
 *                 deleted) and on deleted of the path.
 * A watch fires once: a trigger removes every registration of the path in that table.
 * A session gets one event per (path, trigger) even when it had both a data and a
 * child watch on a deleted node. Events wait in the session's queue until the session
 * takes them (its events long-poll, or a read that piggybacks them).
 */
#ifndef CORRAL_WATCH_H
#define CORRAL_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum watch_event_type {
    WATCH_EVENT_CREATED = 1,
    WATCH_EVENT_DELETED = 2,
    WATCH_EVENT_CHANGED = 3,
    WATCH_EVENT_CHILDREN = 4,
};

enum watch_kind {
    WATCH_KIND_DATA = 0,
    WATCH_KIND_CHILD = 1,
};

/* An event as delivered to a client. */
struct watch_event {
    enum watch_event_type type;
    uint64_t zxid;
    char *path; /* NUL-terminated; owned by whoever holds the event */
    size_t path_length;
};

/* The stable lower-case name of an event type ("created", ...), as in the API. */
const char *watch_event_type_name(enum watch_event_type type);

struct watch_registry;

/* Called when a session's queue goes from empty to non-empty. */
typedef void (*watch_pending_fn)(void *arg, uint64_t session_id);

/* Returns a new registry (owned by the caller: watch_registry_destroy), or NULL. */
struct watch_registry *watch_registry_create(watch_pending_fn on_pending, void *arg);
void watch_registry_destroy(struct watch_registry *r);

/* Registers a one-shot watch of session_id on path. Registering twice is one watch.
 * Returns 0 or CORRAL_E_NO_MEMORY. */
int watch_add(struct watch_registry *r, enum watch_kind kind, const char *path, size_t length,
              uint64_t session_id);

/* Removes a session's watch (ZooKeeper 3.5 removeWatches). Returns 0, or
 * CORRAL_E_NO_NODE when the session had no such watch (ZooKeeper: NoWatcher). */
int watch_remove(struct watch_registry *r, enum watch_kind kind, const char *path, size_t length,
                 uint64_t session_id);

/* The session ended: drops its watches and its undelivered events. */
void watch_session_drop(struct watch_registry *r, uint64_t session_id);

/* Fires the watches an applied change triggers (the ZooKeeper rules above). Call it
 * for every event in zxid order. Returns 0 or CORRAL_E_NO_MEMORY (events lost for
 * some session: the caller should log it). */
int watch_trigger(struct watch_registry *r, enum watch_event_type type, const char *path,
                  size_t length, uint64_t zxid);

/* Number of events waiting for the session. */
size_t watch_session_pending(const struct watch_registry *r, uint64_t session_id);

/* Moves the session's waiting events (oldest first) to the caller: *events is an array
 * owned by the caller, freed with watch_events_free. Returns the count (0: *events is
 * NULL). */
size_t watch_session_take(struct watch_registry *r, uint64_t session_id,
                          struct watch_event **events);
void watch_events_free(struct watch_event *events, size_t count);

/* Number of registrations (for statistics and tests). */
size_t watch_count(const struct watch_registry *r);

#endif
