/* overlay.c: predicted state of the paths that in-flight txns touch (see
 * engine_internal.h). Small by construction: it holds only what is between prep and
 * apply, typically a few hundred paths under load. */
#include "engine_internal.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>

struct overlay_undo_record {
    struct overlay_entry *entry; /* the entry changed */
    bool created;                /* the entry did not exist before: remove it on undo */
    struct overlay_view view;    /* the previous view, when it existed */
    uint64_t last_index;
};

static size_t overlay_hash(const char *path, size_t length)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < length; i++) {
        h ^= (unsigned char)path[i];
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h ^ (h >> 29));
}

int overlay_init(struct overlay *o)
{
    o->bucket_count = 256;
    o->count = 0;
    o->buckets = calloc(o->bucket_count, sizeof *o->buckets); /* owned by the overlay */
    return o->buckets ? 0 : CORRAL_E_NO_MEMORY;
}

void overlay_clear(struct overlay *o)
{
    for (size_t i = 0; i < o->bucket_count; i++) {
        struct overlay_entry *e = o->buckets[i];
        while (e) {
            struct overlay_entry *next = e->next;
            free(e->path);
            free(e);
            e = next;
        }
        o->buckets[i] = NULL;
    }
    o->count = 0;
}

void overlay_free(struct overlay *o)
{
    if (!o->buckets)
        return;
    overlay_clear(o);
    free(o->buckets);
    o->buckets = NULL;
}

struct overlay_entry *overlay_find(const struct overlay *o, const char *path, size_t length)
{
    struct overlay_entry *e = o->buckets[overlay_hash(path, length) & (o->bucket_count - 1)];
    while (e && !(e->path_length == length && memcmp(e->path, path, length) == 0))
        e = e->next;
    return e;
}

static void overlay_unlink(struct overlay *o, struct overlay_entry *entry)
{
    struct overlay_entry **at =
        &o->buckets[overlay_hash(entry->path, entry->path_length) & (o->bucket_count - 1)];
    while (*at && *at != entry)
        at = &(*at)->next;
    if (*at) {
        *at = entry->next;
        o->count--;
    }
    free(entry->path);
    free(entry);
}

static int overlay_undo_push(struct overlay_undo *undo, struct overlay_entry *entry, bool created)
{
    if (!undo)
        return 0;
    if (undo->count == undo->capacity) {
        size_t capacity = undo->capacity ? undo->capacity * 2 : 8;
        struct overlay_undo_record *grown = realloc(undo->records, capacity * sizeof *grown);
        if (!grown)
            return CORRAL_E_NO_MEMORY;
        undo->records = grown;
        undo->capacity = capacity;
    }
    struct overlay_undo_record *r = &undo->records[undo->count++];
    r->entry = entry;
    r->created = created;
    r->view = entry->view;
    r->last_index = entry->last_index;
    return 0;
}

int overlay_put(struct overlay *o, const char *path, size_t length, const struct overlay_view *v,
                uint64_t index, struct overlay_undo *undo)
{
    struct overlay_entry *e = overlay_find(o, path, length);
    if (e) {
        if (overlay_undo_push(undo, e, false) != 0)
            return CORRAL_E_NO_MEMORY;
        e->view = *v;
        e->last_index = index;
        return 0;
    }
    e = calloc(1, sizeof *e); /* owned by the overlay until applied or undone */
    if (!e)
        return CORRAL_E_NO_MEMORY;
    e->path = malloc(length + 1);
    if (!e->path) {
        free(e);
        return CORRAL_E_NO_MEMORY;
    }
    memcpy(e->path, path, length);
    e->path[length] = '\0';
    e->path_length = length;
    e->view = *v;
    e->last_index = index;
    if (overlay_undo_push(undo, e, true) != 0) {
        free(e->path);
        free(e);
        return CORRAL_E_NO_MEMORY;
    }
    size_t b = overlay_hash(path, length) & (o->bucket_count - 1);
    e->next = o->buckets[b];
    o->buckets[b] = e;
    o->count++;
    return 0;
}

void overlay_undo_apply(struct overlay *o, struct overlay_undo *undo)
{
    while (undo->count > 0) {
        struct overlay_undo_record *r = &undo->records[--undo->count];
        if (r->created) {
            overlay_unlink(o, r->entry);
        } else {
            r->entry->view = r->view;
            r->entry->last_index = r->last_index;
        }
    }
}

void overlay_undo_free(struct overlay_undo *undo)
{
    free(undo->records);
    undo->records = NULL;
    undo->count = undo->capacity = 0;
}

void overlay_forget(struct overlay *o, const char *path, size_t length, uint64_t index)
{
    struct overlay_entry *e = overlay_find(o, path, length);
    if (e && e->last_index == index)
        overlay_unlink(o, e);
}

void overlay_each(struct overlay *o, void (*fn)(void *arg, struct overlay_entry *e), void *arg)
{
    for (size_t i = 0; i < o->bucket_count; i++)
        for (struct overlay_entry *e = o->buckets[i]; e; e = e->next)
            fn(arg, e);
}
