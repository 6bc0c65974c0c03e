/* session.c: the session table, a chained hash map keyed by session id.
 *
 * Session ids are drawn at random by the leader, so the low bits are already well
 * spread; they are still mixed (splitmix64 finaliser) in case an operator restores ids
 * that are not. */
#include "engine_internal.h"
#include "error.h"

#include <stdlib.h>

static size_t session_hash(uint64_t id)
{
    id ^= id >> 30;
    id *= 0xbf58476d1ce4e5b9ULL;
    id ^= id >> 27;
    id *= 0x94d049bb133111ebULL;
    id ^= id >> 31;
    return (size_t)id;
}

int session_table_init(struct session_table *t)
{
    t->bucket_count = 64;
    t->count = 0;
    t->buckets = calloc(t->bucket_count, sizeof *t->buckets); /* owned by the table */
    return t->buckets ? 0 : CORRAL_E_NO_MEMORY;
}

void session_table_free(struct session_table *t)
{
    for (size_t i = 0; i < t->bucket_count; i++) {
        struct session *s = t->buckets[i];
        while (s) {
            struct session *next = s->next;
            free(s->ephemerals);
            free(s);
            s = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->bucket_count = t->count = 0;
}

struct session *session_find(const struct session_table *t, uint64_t id)
{
    struct session *s = t->buckets[session_hash(id) & (t->bucket_count - 1)];
    while (s && s->id != id)
        s = s->next;
    return s;
}

static void session_table_grow(struct session_table *t)
{
    size_t count = t->bucket_count * 2;
    struct session **buckets = calloc(count, sizeof *buckets);
    if (!buckets)
        return; /* a longer chain is slower, not wrong */
    for (size_t i = 0; i < t->bucket_count; i++) {
        struct session *s = t->buckets[i];
        while (s) {
            struct session *next = s->next;
            size_t b = session_hash(s->id) & (count - 1);
            s->next = buckets[b];
            buckets[b] = s;
            s = next;
        }
    }
    free(t->buckets);
    t->buckets = buckets;
    t->bucket_count = count;
}

struct session *session_add(struct session_table *t, uint64_t id, uint32_t timeout_ms)
{
    struct session *s = calloc(1, sizeof *s); /* owned by the table until session_remove */
    if (!s)
        return NULL;
    s->id = id;
    s->timeout_ms = timeout_ms;
    size_t b = session_hash(id) & (t->bucket_count - 1);
    s->next = t->buckets[b];
    t->buckets[b] = s;
    if (++t->count > t->bucket_count)
        session_table_grow(t);
    return s;
}

void session_remove(struct session_table *t, struct session *s)
{
    struct session **at = &t->buckets[session_hash(s->id) & (t->bucket_count - 1)];
    while (*at && *at != s)
        at = &(*at)->next;
    if (*at) {
        *at = s->next;
        t->count--;
    }
    free(s->ephemerals);
    free(s);
}

int session_ephemeral_add(struct session *s, struct znode *n)
{
    if (s->ephemeral_count == s->ephemeral_capacity) {
        uint32_t capacity = s->ephemeral_capacity ? s->ephemeral_capacity * 2 : 4;
        struct znode **grown = realloc(s->ephemerals, capacity * sizeof *grown);
        if (!grown)
            return CORRAL_E_NO_MEMORY;
        s->ephemerals = grown;
        s->ephemeral_capacity = capacity;
    }
    s->ephemerals[s->ephemeral_count++] = n;
    return 0;
}

void session_ephemeral_remove(struct session *s, const struct znode *n)
{
    /* Order is kept (not swap-remove) so that a session close deletes its ephemerals
     * in creation order on every replica, which keeps event order deterministic. */
    for (uint32_t i = 0; i < s->ephemeral_count; i++) {
        if (s->ephemerals[i] == n) {
            for (uint32_t j = i + 1; j < s->ephemeral_count; j++)
                s->ephemerals[j - 1] = s->ephemerals[j];
            s->ephemeral_count--;
            return;
        }
    }
}

void session_table_each(struct session_table *t, void (*fn)(void *arg, struct session *s),
                        void *arg)
{
    for (size_t i = 0; i < t->bucket_count; i++)
        for (struct session *s = t->buckets[i]; s; s = s->next)
            fn(arg, s);
}
