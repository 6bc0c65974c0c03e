/* history.h: the recent change events, kept in memory for the resumable watch.
 *
 * A ring of events (zxid, type, path) in zxid order, bounded both in number and in
 * bytes; the oldest events are dropped first. `covered_from` is the promise the ring
 * makes: it holds every event with zxid > covered_from. It starts at the zxid the
 * server had applied when it started (older events are only in the log) and moves up
 * as events are dropped. A reader asking for events after `since` is served from the
 * ring when since >= covered_from; otherwise the engine reads the log first. */
#ifndef CORRAL_HISTORY_H
#define CORRAL_HISTORY_H

#include <stddef.h>
#include <stdint.h>

struct history_event {
    uint64_t zxid;
    uint32_t path_length;
    uint8_t type; /* enum watch_event_type */
    char path[];  /* NUL-terminated */
};

struct history;

/* Returns a new ring (owned by the caller: history_destroy) or NULL. */
struct history *history_create(uint64_t max_events, uint64_t max_bytes, uint64_t covered_from);
void history_destroy(struct history *h);

/* Appends an event; zxids must not decrease. Drops the oldest events beyond the
 * bounds. Returns 0 or CORRAL_E_NO_MEMORY (the ring then forgets everything up to
 * zxid, so that its promise still holds). */
int history_append(struct history *h, uint8_t type, const char *path, size_t length, uint64_t zxid);

uint64_t history_covered_from(const struct history *h);
uint64_t history_event_count(const struct history *h);
uint64_t history_bytes(const struct history *h);
/* zxid of the oldest event held, 0 when empty. */
uint64_t history_oldest_zxid(const struct history *h);

/* Calls fn for every event with zxid > since, oldest first, until fn returns non-zero
 * (which is returned). Events are borrowed for the call. */
int history_scan(const struct history *h, uint64_t since,
                 int (*fn)(void *arg, const struct history_event *event), void *arg);

#endif
