/* history.c: the ring of recent events (see history.h).
 *
 * A circular array of pointers to individually allocated events. Events are appended
 * in zxid order, so a reader finds its starting point by binary search. */
#include "history.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

struct history {
    struct history_event **ring; /* owned; each event owned */
    uint64_t capacity;           /* slots in ring, a power of two */
    uint64_t head;               /* index of the oldest event */
    uint64_t count;
    uint64_t bytes;
    uint64_t max_events;
    uint64_t max_bytes;
    uint64_t covered_from;
};

static uint64_t event_bytes(const struct history_event *e)
{
    return sizeof *e + e->path_length + 1 + sizeof(void *);
}

struct history *history_create(uint64_t max_events, uint64_t max_bytes, uint64_t covered_from)
{
    struct history *h = calloc(1, sizeof *h); /* owned by the caller */
    if (!h)
        return NULL;
    h->capacity = 1024;
    h->ring = calloc(h->capacity, sizeof *h->ring);
    if (!h->ring) {
        free(h);
        return NULL;
    }
    h->max_events = max_events ? max_events : 1;
    h->max_bytes = max_bytes ? max_bytes : 1;
    h->covered_from = covered_from;
    return h;
}

static struct history_event *at(const struct history *h, uint64_t i)
{
    return h->ring[(h->head + i) & (h->capacity - 1)];
}

static void drop_oldest(struct history *h)
{
    struct history_event *e = h->ring[h->head];
    h->ring[h->head] = NULL;
    h->head = (h->head + 1) & (h->capacity - 1);
    h->count--;
    h->bytes -= event_bytes(e);
    if (e->zxid > h->covered_from)
        h->covered_from = e->zxid;
    free(e);
}

void history_destroy(struct history *h)
{
    if (!h)
        return;
    while (h->count > 0)
        drop_oldest(h);
    free(h->ring);
    free(h);
}

static int grow(struct history *h)
{
    uint64_t capacity = h->capacity * 2;
    struct history_event **ring = calloc(capacity, sizeof *ring);
    if (!ring)
        return CORRAL_E_NO_MEMORY;
    for (uint64_t i = 0; i < h->count; i++)
        ring[i] = at(h, i);
    free(h->ring);
    h->ring = ring;
    h->capacity = capacity;
    h->head = 0;
    return 0;
}

int history_append(struct history *h, uint8_t type, const char *path, size_t length, uint64_t zxid)
{
    struct history_event *e = malloc(sizeof *e + length + 1); /* owned by the ring */
    if (!e || (h->count == h->capacity && h->count < h->max_events && grow(h) != 0)) {
        free(e);
        /* Forget everything up to this zxid rather than pretend to hold it. */
        while (h->count > 0)
            drop_oldest(h);
        if (zxid > h->covered_from)
            h->covered_from = zxid;
        return CORRAL_E_NO_MEMORY;
    }
    e->zxid = zxid;
    e->type = type;
    e->path_length = (uint32_t)length;
    memcpy(e->path, path, length);
    e->path[length] = '\0';
    while (h->count > 0 && (h->count >= h->max_events || h->count == h->capacity ||
                            h->bytes + event_bytes(e) > h->max_bytes))
        drop_oldest(h);
    h->ring[(h->head + h->count) & (h->capacity - 1)] = e;
    h->count++;
    h->bytes += event_bytes(e);
    return 0;
}

uint64_t history_covered_from(const struct history *h)
{
    return h->covered_from;
}

uint64_t history_event_count(const struct history *h)
{
    return h->count;
}

uint64_t history_bytes(const struct history *h)
{
    return h->bytes;
}

uint64_t history_oldest_zxid(const struct history *h)
{
    return h->count ? at(h, 0)->zxid : 0;
}

int history_scan(const struct history *h, uint64_t since,
                 int (*fn)(void *arg, const struct history_event *event), void *arg)
{
    uint64_t low = 0, high = h->count; /* first index with zxid > since */
    while (low < high) {
        uint64_t mid = low + (high - low) / 2;
        if (at(h, mid)->zxid <= since)
            low = mid + 1;
        else
            high = mid;
    }
    for (uint64_t i = low; i < h->count; i++) {
        int rc = fn(arg, at(h, i));
        if (rc != 0)
            return rc;
    }
    return 0;
}
