/* sim.c: a deterministic simulation of a whole corral cluster's consensus in one process.
 *
 * N members run the real Raft core (cluster/raft.c) against a simulated clock, network
 * and disk, all driven by one seed. Messages go through the real wire codec. After every
 * step the simulator checks Raft's safety properties against "ghost" state no member can
 * see; at the end it heals everything, checks liveness, and checks the client history
 * for linearizability. See docs in /work/shared/RELIABILITY.md sections 2.4, 3.5, 4.2.
 *
 *   sim [--seed S] [--seeds N] [--steps K] [--members M] [--verbose]
 *
 * Prints the first seed, then "FAIL seed=S <property>: <detail>" for a violation and
 * exits 1. Rerun one seed with --seed S --seeds 1 to reproduce exactly.
 *
 * Model:
 *   - time: a global clock in ms; a min-heap of events keyed by (time, seq);
 *   - network: per directed link up/down; latency random per message (so reordering),
 *     loss, duplication, rare bit flips (the codec's CRC must reject them); partitions:
 *     isolate one, minority/majority split, single links, heal;
 *   - disk per member: hard state written synchronously (the host persists it before
 *     sending, per raft.h); log writes are pending until a sync completes after a random
 *     latency (then PERSISTED is stepped); on a crash a random prefix of the pending
 *     writes survives (torn tail), the rest is lost; snapshots are written atomically;
 *   - crashes and restarts (a new core from the durable image via raft_start), pauses;
 *   - clients: closed loop, unique values; writes go to the member they think leads
 *     and retry elsewhere on NOT_LEADER or timeout; linearizable reads via READ_INDEX;
 *   - state machine: an append-only list: index i holds the value of entry i.
 *
 * Properties checked (the name printed after FAIL):
 *   election-safety      at most one leader per term, ever (ghost term -> leader)
 *   state-machine-safety every apply at index i equals the ghost committed[i]
 *   committed-truncated  a member's host is told, by a leader of the entry's commit term
 *                        or later, to truncate an entry equal to ghost committed (Log
 *                        Matching on committed prefixes)
 *   leader-completeness  a new leader's log holds every ghost committed entry
 *   durability-order     an APPEND/SNAPSHOT ack or vote grant is sent only when the
 *                        member's durable image holds what it acknowledges
 *   hard-state           durable term never decreases; one vote per term
 *   host-log             the host's log and the core's agree on the last index
 *   core-assert          an assertion inside the core fired (SIGABRT)
 *   liveness             after healing: a leader within 10 election timeouts, and all
 *                        members converge on the same applied index (a member still
 *                        catching up gets more time while it advances)
 *   lost-write           an acknowledged write is not in the committed log, or a
 *                        definitely failed one is
 *   linearizability      writes acknowledged before a read was invoked have indexes
 *                        <= the read's index; writes acknowledged before a write was
 *                        invoked have smaller indexes
 *
 * Canaries (build with -DCORRAL_CANARY=N in a separate build dir, or run
 * tests/sim/run_canaries.sh; the sim must FAIL). First seed that caught each with
 * `sim --seeds 2000 --steps 20000` (member counts cycle 3, 5, 4, 7):
 *   1 ack APPEND before durable        seed 1     durability-order (every seed fails)
 *   2 keep a divergent suffix          seed 20    durability-order: a kept suffix entry
 *                                                 with a matching (index, term) made an
 *                                                 older, rewritten entry look durable
 *   3 commit an old term by counting   seed 1428  leader-completeness (Figure 3.7); the
 *                                                 rarest: 2 seeds in 6000
 *   4 read index without a round       seed 2     linearizability (a stale read)
 *
 * Debug aids: SIM_TRACE=1 prints role, term, truncation and crash events to stderr;
 * SIM_PARANOID=1 compares the host log with the core's after every step; SIM_NOFLUSH=1
 * runs every seed with appends_on_flush off (to tell its effect from the seed's).
 *
 * Speed (2-core box): ~9000 seeds/min at 20000 steps optimised; ~750 seeds/min in a
 * Debug ASan+UBSan build.
 */
#include <assert.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raft.h"

/* ---- randomness: splitmix64 seeds xoshiro256** ---------------------------------------- */

struct sim_rng {
    uint64_t s[4];
};

static uint64_t sim_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void sim_rng_seed(struct sim_rng *g, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = sim_splitmix(&seed);
}

static uint64_t sim_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t sim_next(struct sim_rng *g)
{
    uint64_t *s = g->s;
    uint64_t result = sim_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sim_rotl(s[3], 45);
    return result;
}

static uint64_t sim_range(struct sim_rng *g, uint64_t lo, uint64_t hi) /* [lo, hi] */
{
    return lo + sim_next(g) % (hi - lo + 1);
}

static bool sim_chance(struct sim_rng *g, double p)
{
    return (double)(sim_next(g) >> 11) / 9007199254740992.0 < p;
}

static uint32_t sim_raft_random(void *arg)
{
    return (uint32_t)(sim_next(arg) >> 32);
}

/* ---- the world ---------------------------------------------------------------------- */

#define SIM_MAX RAFT_MAX_MEMBERS
#define SIM_CLIENTS 4

enum sim_ev_type {
    EV_DELIVER,
    EV_TICK,
    EV_SYNC,
    EV_CLIENT_NEXT,
    EV_CLIENT_REQ,
    EV_CLIENT_REPLY,
    EV_CLIENT_TIMEOUT,
    EV_NEMESIS,
    EV_RESTART,
    EV_FLUSH, /* config.appends_on_flush: the host's end of a loop turn */
};

struct sim_snap {
    uint64_t index;
    uint64_t term;
    uint64_t *values; /* values[1..index]; owned */
};

struct sim_packet {
    int from, to;
    uint8_t *bytes; /* owned */
    size_t length;
    struct sim_snap *snap; /* attached snapshot bytes, owned, or NULL */
};

struct sim_event {
    uint64_t time, seq;
    enum sim_ev_type type;
    int member;
    uint64_t a, b, c, d;
    struct sim_packet *packet;
};

struct sim_entry {
    uint64_t term;
    uint64_t value; /* 0 = the leader's no-op (empty payload) */
};

/* A log from index base: ents[0] is index base. */
struct sim_log {
    uint64_t base;
    struct sim_entry *ents;
    uint64_t len, cap;
};

struct sim_op {
    bool truncate;
    uint64_t index; /* truncate: after this; append: at this */
    struct sim_entry e;
    uint64_t seq;
};

struct sim_prop {
    uint64_t index, op;
    int client;
};

struct sim_read {
    uint64_t op, index;
    int client;
    bool have_index;
};

struct sim_member {
    uint64_t id;
    bool up, paused;
    uint64_t pause_until;
    struct raft *core;
    uint64_t hard_term, hard_vote;
    struct sim_snap snap;
    struct sim_log dlog; /* durable */
    struct sim_log mlog; /* the host's view, unsynced writes included */
    struct sim_op *ops;
    uint64_t op_count, op_cap, op_seq;
    bool sync_scheduled;
    bool flush_scheduled;
    uint64_t disk_gen;
    uint64_t *sm; /* sm[i] = value applied at index i */
    uint64_t applied, sm_cap;
    uint64_t tick_at, tick_gen;
    struct sim_prop *props;
    uint32_t prop_count, prop_cap;
    struct sim_read *reads;
    uint32_t read_count, read_cap;
};

enum sim_status { ST_PENDING, ST_OK, ST_FAIL, ST_UNKNOWN };

struct sim_hist {
    int client;
    bool write;
    uint64_t value;
    uint64_t t_inv, t_done;
    enum sim_status status;
    uint64_t index;
};

struct sim_client {
    int target;
    uint64_t op; /* history index + 1 of the pending op, 0 = idle */
};

struct sim {
    uint64_t seed;
    struct sim_rng rng;
    uint64_t now;
    uint32_t n;
    struct sim_member m[SIM_MAX];
    bool cut[SIM_MAX][SIM_MAX];
    double loss, dup, corrupt;
    uint32_t lat_min, lat_max;
    uint32_t disk_min, disk_max;
    struct raft_config cfg;
    uint32_t snapshot_every; /* take a snapshot about every this many applies; 0 = never */
    uint32_t trailing;
    bool clients_on;
    /* events */
    struct sim_event *heap;
    uint64_t heap_n, heap_cap, seq;
    /* ghost state */
    uint64_t *ghost_term, *ghost_value;
    uint64_t *ghost_commit_term; /* the term of the leader that first committed index i */
    uint64_t ghost_commit_max;
    uint64_t ghost_max, ghost_cap;
    uint64_t *ghost_leader;
    uint64_t ghost_leader_cap;
    /* clients and history */
    struct sim_client clients[SIM_CLIENTS];
    struct sim_hist *hist;
    uint64_t hist_n, hist_cap;
    uint64_t next_value;
    bool failed;
    bool trace, paranoid; /* SIM_TRACE, SIM_PARANOID set in the environment: debug aids */
    uint64_t steps;
    uint64_t elections, crashes, snapshots_sent;
};

static struct sim *sim_current; /* for the SIGABRT handler only */

static void sim_fail(struct sim *s, const char *property, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void sim_fail(struct sim *s, const char *property, const char *fmt, ...)
{
    if (s->failed)
        return;
    s->failed = true;
    printf("FAIL seed=%" PRIu64 " %s: t=%" PRIu64 "ms ", s->seed, property, s->now);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static void sim_on_abort(int sig)
{
    (void)sig;
    char buf[128];
    int n = snprintf(buf, sizeof buf, "FAIL seed=%" PRIu64 " core-assert: t=%" PRIu64 "ms\n",
                     sim_current ? sim_current->seed : 0, sim_current ? sim_current->now : 0);
    if (n > 0)
        (void)!write(1, buf, (size_t)n);
    _exit(1);
}

static void *sim_grow(void *p, uint64_t *cap, uint64_t need, size_t size)
{
    if (need <= *cap)
        return p;
    uint64_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (!q) {
        fprintf(stderr, "sim: out of memory\n");
        exit(2);
    }
    *cap = c;
    return q;
}

/* ---- event heap --------------------------------------------------------------------- */

static bool sim_ev_less(const struct sim_event *a, const struct sim_event *b)
{
    return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void sim_push(struct sim *s, struct sim_event ev)
{
    ev.seq = s->seq++;
    if (ev.time < s->now)
        ev.time = s->now;
    s->heap = sim_grow(s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap);
    uint64_t i = s->heap_n++;
    s->heap[i] = ev;
    while (i > 0) {
        uint64_t p = (i - 1) / 2;
        if (!sim_ev_less(&s->heap[i], &s->heap[p]))
            break;
        struct sim_event t = s->heap[i];
        s->heap[i] = s->heap[p];
        s->heap[p] = t;
        i = p;
    }
}

static struct sim_event sim_pop(struct sim *s)
{
    struct sim_event top = s->heap[0];
    s->heap[0] = s->heap[--s->heap_n];
    uint64_t i = 0;
    for (;;) {
        uint64_t l = 2 * i + 1, r = l + 1, min = i;
        if (l < s->heap_n && sim_ev_less(&s->heap[l], &s->heap[min]))
            min = l;
        if (r < s->heap_n && sim_ev_less(&s->heap[r], &s->heap[min]))
            min = r;
        if (min == i)
            break;
        struct sim_event t = s->heap[i];
        s->heap[i] = s->heap[min];
        s->heap[min] = t;
        i = min;
    }
    return top;
}

/* ---- logs --------------------------------------------------------------------------- */

static uint64_t sim_log_last(const struct sim_log *l)
{
    return l->base + l->len - 1;
}

static struct sim_entry *sim_log_get(struct sim_log *l, uint64_t i)
{
    if (i < l->base || i > sim_log_last(l))
        return NULL;
    return &l->ents[i - l->base];
}

static void sim_log_truncate(struct sim_log *l, uint64_t after)
{
    if (after + 1 < l->base)
        l->len = 0;
    else if (after < sim_log_last(l))
        l->len = after + 1 - l->base;
}

/* Returns false on a gap (the host was told to write past its log's end). */
static bool sim_log_append(struct sim_log *l, uint64_t i, struct sim_entry e)
{
    if (i < l->base)
        return true; /* covered by the snapshot */
    if (i != l->base + l->len)
        return false;
    l->ents = sim_grow(l->ents, &l->cap, l->len + 1, sizeof *l->ents);
    l->ents[l->len++] = e;
    return true;
}

static void sim_log_compact(struct sim_log *l, uint64_t upto)
{
    if (upto < l->base)
        return;
    if (upto >= sim_log_last(l)) {
        l->base = upto + 1;
        l->len = 0;
        return;
    }
    uint64_t drop = upto + 1 - l->base;
    memmove(l->ents, l->ents + drop, (l->len - drop) * sizeof *l->ents);
    l->len -= drop;
    l->base = upto + 1;
}

static void sim_log_copy(struct sim_log *dst, const struct sim_log *src)
{
    dst->base = src->base;
    dst->len = 0;
    dst->ents = sim_grow(dst->ents, &dst->cap, src->len + 1, sizeof *dst->ents);
    if (src->len)
        memcpy(dst->ents, src->ents, src->len * sizeof *src->ents);
    dst->len = src->len;
}

static uint64_t sim_durable_last(struct sim_member *m)
{
    uint64_t last = sim_log_last(&m->dlog);
    return last > m->snap.index ? last : m->snap.index;
}

static uint64_t sim_durable_term(struct sim_member *m, uint64_t i)
{
    struct sim_entry *e = sim_log_get(&m->dlog, i);
    if (e && i > m->snap.index)
        return e->term;
    return i == m->snap.index ? m->snap.term : UINT64_MAX;
}

static struct sim_entry sim_entry_of(const struct raft_entry *e)
{
    struct sim_entry x = {.term = e->term, .value = 0};
    if (e->length == 8)
        memcpy(&x.value, e->data, 8);
    return x;
}

/* ---- ghost state -------------------------------------------------------------------- */

static void sim_ghost_reserve(struct sim *s, uint64_t index)
{
    if (index < s->ghost_cap)
        return;
    uint64_t cap = s->ghost_cap;
    s->ghost_term = sim_grow(s->ghost_term, &cap, index + 1, sizeof *s->ghost_term);
    uint64_t cap2 = s->ghost_cap;
    s->ghost_value = sim_grow(s->ghost_value, &cap2, index + 1, sizeof *s->ghost_value);
    uint64_t cap3 = s->ghost_cap;
    s->ghost_commit_term =
        sim_grow(s->ghost_commit_term, &cap3, index + 1, sizeof *s->ghost_commit_term);
    memset(s->ghost_commit_term + s->ghost_cap, 0,
           (cap - s->ghost_cap) * sizeof *s->ghost_commit_term);
    memset(s->ghost_term + s->ghost_cap, 0, (cap - s->ghost_cap) * sizeof *s->ghost_term);
    memset(s->ghost_value + s->ghost_cap, 0, (cap - s->ghost_cap) * sizeof *s->ghost_value);
    s->ghost_cap = cap;
}

/* State Machine Safety: the first apply of index i defines committed[i]; every later
 * apply, on any member, must agree. */
static void sim_ghost_apply(struct sim *s, struct sim_member *m, uint64_t i, struct sim_entry e)
{
    sim_ghost_reserve(s, i);
    if (s->ghost_term[i] == 0) {
        if (i != s->ghost_max + 1)
            sim_fail(s, "state-machine-safety",
                     "member %" PRIu64 " applied %" PRIu64 " with ghost max %" PRIu64, m->id, i,
                     s->ghost_max);
        s->ghost_term[i] = e.term;
        s->ghost_value[i] = e.value;
        if (i > s->ghost_max)
            s->ghost_max = i;
        return;
    }
    if (s->ghost_term[i] != e.term || s->ghost_value[i] != e.value)
        sim_fail(s, "state-machine-safety",
                 "member %" PRIu64 " applied index %" PRIu64 " = (term %" PRIu64 ", value %" PRIu64
                 "), committed is (term %" PRIu64 ", value %" PRIu64 ")",
                 m->id, i, e.term, e.value, s->ghost_term[i], s->ghost_value[i]);
}

/* ---- clients ------------------------------------------------------------------------ */

static void sim_reply(struct sim *s, int client, uint64_t op, enum sim_status st, uint64_t index,
                      uint64_t hint)
{
    sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 1, 3),
                                   .type = EV_CLIENT_REPLY,
                                   .member = client,
                                   .a = op,
                                   .b = st,
                                   .c = index,
                                   .d = hint});
}

static void sim_client_done(struct sim *s, int c, enum sim_status st, uint64_t index, uint64_t hint)
{
    struct sim_client *cl = &s->clients[c];
    struct sim_hist *h = &s->hist[cl->op - 1];
    h->status = st;
    h->index = index;
    h->t_done = s->now;
    cl->op = 0;
    if (st == ST_UNKNOWN || (st == ST_FAIL && hint == 0))
        cl->target = (int)sim_range(&s->rng, 0, s->n - 1);
    else if (hint)
        cl->target = (int)hint - 1;
    if (s->clients_on)
        sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 0, 5),
                                       .type = EV_CLIENT_NEXT,
                                       .member = c});
}

/* ---- member host: the update contract of raft.h ------------------------------------- */

static void sim_member_step(struct sim *s, struct sim_member *m, const struct raft_event *ev,
                            const struct sim_snap *attach, int *rc_out, uint64_t *proposed);

static void sim_send(struct sim *s, struct sim_member *m, const struct raft_message *msg,
                     const struct raft_update *u)
{
    int to = (int)msg->to - 1;
    /* durability-order: what a message acknowledges must already be durable (3.8). */
    if ((msg->type == RAFT_MSG_APPEND_RESPONSE || msg->type == RAFT_MSG_SNAPSHOT_RESPONSE) &&
        msg->granted) {
        uint64_t i = msg->match_index;
        uint64_t t = sim_durable_term(m, i);
        const struct raft_entry *ce = raft_entry_at(m->core, i);
        if (i > sim_durable_last(m) || (ce && t != ce->term && i > m->snap.index))
            sim_fail(s, "durability-order",
                     "member %" PRIu64 " acknowledges index %" PRIu64
                     " but its durable log ends at %" PRIu64,
                     m->id, i, sim_durable_last(m));
    }
    if ((msg->type == RAFT_MSG_VOTE_RESPONSE && msg->granted) &&
        (m->hard_term != msg->term || m->hard_vote != msg->to))
        sim_fail(s, "durability-order", "member %" PRIu64 " grants a vote not durable", m->id);
    if (s->cut[m->id - 1][to] || sim_chance(&s->rng, s->loss))
        return;
    int copies = sim_chance(&s->rng, s->dup) ? 2 : 1;
    for (int k = 0; k < copies; k++) {
        struct sim_packet *p = calloc(1, sizeof *p); /* owned by the event, then delivery */
        if (!p || raft_message_encode(msg, &p->bytes, &p->length) != CLUSTER_OK) {
            sim_fail(s, "codec", "encode failed");
            free(p);
            return;
        }
        p->from = (int)m->id - 1;
        p->to = to;
        if (msg->type == RAFT_MSG_SNAPSHOT && u->snapshot_needed && u->snapshot_to == msg->to) {
            /* The host sends its latest snapshot's bytes along (raft.h action 5). */
            if (m->snap.index != msg->log_index)
                sim_fail(s, "host-log", "snapshot announced %" PRIu64 ", host has %" PRIu64,
                         msg->log_index, m->snap.index);
            p->snap = calloc(1, sizeof *p->snap);
            p->snap->index = m->snap.index;
            p->snap->term = m->snap.term;
            p->snap->values = malloc((m->snap.index + 1) * sizeof(uint64_t));
            memcpy(p->snap->values, m->snap.values, (m->snap.index + 1) * sizeof(uint64_t));
            s->snapshots_sent++;
        }
        if (sim_chance(&s->rng, s->corrupt))
            p->bytes[sim_range(&s->rng, 0, p->length - 1)] ^=
                (uint8_t)(1u << sim_range(&s->rng, 0, 7));
        sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, s->lat_min, s->lat_max),
                                       .type = EV_DELIVER,
                                       .member = to,
                                       .packet = p});
    }
}

static void sim_schedule_sync(struct sim *s, struct sim_member *m)
{
    if (m->sync_scheduled || m->op_count == 0)
        return;
    m->sync_scheduled = true;
    sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, s->disk_min, s->disk_max),
                                   .type = EV_SYNC,
                                   .member = (int)m->id - 1,
                                   .a = m->disk_gen,
                                   .b = m->op_seq});
}

static void sim_serve_reads(struct sim *s, struct sim_member *m)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < m->read_count; i++) {
        struct sim_read *r = &m->reads[i];
        if (r->have_index && m->applied >= r->index)
            sim_reply(s, r->client, r->op, ST_OK, r->index, 0);
        else
            m->reads[k++] = *r;
    }
    m->read_count = k;
}

static void sim_apply(struct sim *s, struct sim_member *m, uint64_t commit)
{
    while (m->applied < commit && !s->failed) {
        uint64_t i = m->applied + 1;
        struct sim_entry *e = sim_log_get(&m->mlog, i);
        if (!e) {
            sim_fail(s, "host-log", "member %" PRIu64 " must apply %" PRIu64 " but lacks it", m->id,
                     i);
            return;
        }
        sim_ghost_apply(s, m, i, *e);
        m->sm = sim_grow(m->sm, &m->sm_cap, i + 1, sizeof *m->sm);
        m->sm[i] = e->value;
        m->applied = i;
        uint32_t k = 0;
        for (uint32_t p = 0; p < m->prop_count; p++) {
            struct sim_prop *q = &m->props[p];
            if (q->index != i) {
                m->props[k++] = *q;
                continue;
            }
            bool mine = e->value == s->hist[q->op - 1].value;
            sim_reply(s, q->client, q->op, mine ? ST_OK : ST_FAIL, i, 0);
        }
        m->prop_count = k;
    }
    sim_serve_reads(s, m);
}

static void sim_install(struct sim *s, struct sim_member *m, const struct sim_snap *snap)
{
    /* Every value in the snapshot must be what was committed there. */
    for (uint64_t i = 1; i <= snap->index && i <= s->ghost_max; i++)
        if (s->ghost_value[i] != snap->values[i])
            sim_fail(s, "state-machine-safety",
                     "snapshot for member %" PRIu64 " differs at %" PRIu64, m->id, i);
    free(m->snap.values);
    m->snap.index = snap->index;
    m->snap.term = snap->term;
    m->snap.values = malloc((snap->index + 1) * sizeof(uint64_t));
    memcpy(m->snap.values, snap->values, (snap->index + 1) * sizeof(uint64_t));
    /* The host replaces its whole log by the snapshot, durably and at once. */
    m->dlog.base = m->mlog.base = snap->index + 1;
    m->dlog.len = m->mlog.len = 0;
    m->op_count = 0;
    m->sm = sim_grow(m->sm, &m->sm_cap, snap->index + 1, sizeof *m->sm);
    memcpy(m->sm, snap->values, (snap->index + 1) * sizeof(uint64_t));
    m->applied = snap->index;
    if (snap->index > s->ghost_max)
        sim_fail(s, "state-machine-safety", "snapshot at %" PRIu64 " beyond anything applied",
                 snap->index);
}

static void sim_take_snapshot(struct sim *s, struct sim_member *m)
{
    uint64_t i = m->applied;
    if (i <= m->snap.index)
        return;
    struct sim_entry *e = sim_log_get(&m->mlog, i);
    if (!e)
        return;
    uint64_t term = e->term; /* e moves when the log is compacted below */
    free(m->snap.values);
    m->snap.index = i;
    m->snap.term = term;
    m->snap.values = malloc((i + 1) * sizeof(uint64_t));
    memcpy(m->snap.values, m->sm, (i + 1) * sizeof(uint64_t));
    sim_log_compact(&m->dlog, i);
    sim_log_compact(&m->mlog, i);
    struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_TAKEN,
                            .now_ms = s->now,
                            .snapshot_index = i,
                            .snapshot_term = term,
                            .trailing = s->trailing};
    int rc;
    sim_member_step(s, m, &ev, NULL, &rc, NULL);
    if (rc != CLUSTER_OK)
        sim_fail(s, "host-log",
                 "member %" PRIu64 " SNAPSHOT_TAKEN at %" PRIu64 " term %" PRIu64
                 " refused: %d (core commit %" PRIu64 ", term there %" PRIu64 ")",
                 m->id, i, term, rc, raft_commit_index(m->core),
                 raft_entry_at(m->core, i) ? raft_entry_at(m->core, i)->term : 0);
}

static void sim_host(struct sim *s, struct sim_member *m, const struct raft_update *u,
                     const struct sim_snap *attach)
{
    if (s->trace && (u->truncate_after != UINT64_MAX || u->role_changed || u->install_snapshot ||
                     u->hard_state_changed))
        fprintf(stderr,
                "t=%" PRIu64 " m%" PRIu64 " term=%" PRIu64 " vote=%" PRIu64
                " role=%d leader=%" PRIu64 " trunc=%" PRIu64 " first=%" PRIu64 " n=%" PRIu64
                " commit=%" PRIu64 " last=%" PRIu64 " install=%d/%" PRIu64 " durable=%" PRIu64 "\n",
                s->now, m->id, u->term, u->voted_for, u->role, u->leader_id, u->truncate_after,
                u->first_index, u->entry_count, u->commit_index, raft_last_index(m->core),
                u->install_snapshot, u->install_index, sim_durable_last(m));
    /* 1. hard state, synchronously durable before anything is sent. */
    if (u->hard_state_changed) {
        if (u->term < m->hard_term ||
            (u->term == m->hard_term && m->hard_vote && u->voted_for != m->hard_vote))
            sim_fail(s, "hard-state",
                     "member %" PRIu64 ": (%" PRIu64 ", %" PRIu64 ") after (%" PRIu64 ", %" PRIu64
                     ")",
                     m->id, u->term, u->voted_for, m->hard_term, m->hard_vote);
        m->hard_term = u->term;
        m->hard_vote = u->voted_for;
    }
    /* 2. truncate, then append: pending until a sync. */
    if (u->truncate_after != UINT64_MAX) {
        for (uint64_t i = u->truncate_after + 1; i <= s->ghost_max && i <= sim_log_last(&m->mlog);
             i++) {
            struct sim_entry *e = sim_log_get(&m->mlog, i);
            /* Only a leader of the commit's term or later must hold the entry (Figure
             * 3.2); one of an older term, heard late by a member still in that term, may
             * overwrite it there (seen: a term-12 leader's delayed APPEND replaced an
             * entry that the term-13 leader had committed, on a member paused in term
             * 11). The entry is safe on the majority that moved on. */
            bool must_hold = i > s->ghost_commit_max || s->ghost_commit_term[i] == 0 ||
                             u->term >= s->ghost_commit_term[i];
            if (e && must_hold && e->term == s->ghost_term[i] && e->value == s->ghost_value[i]) {
                sim_fail(s, "committed-truncated",
                         "member %" PRIu64 " told to truncate committed index %" PRIu64, m->id, i);
                break;
            }
        }
        sim_log_truncate(&m->mlog, u->truncate_after);
        m->ops = sim_grow(m->ops, &m->op_cap, m->op_count + 1, sizeof *m->ops);
        m->ops[m->op_count++] =
            (struct sim_op){.truncate = true, .index = u->truncate_after, .seq = ++m->op_seq};
    }
    for (uint64_t k = 0; k < u->entry_count; k++) {
        struct sim_entry e = sim_entry_of(&u->entries[k]);
        if (!sim_log_append(&m->mlog, u->first_index + k, e))
            sim_fail(s, "host-log", "member %" PRIu64 ": append at %" PRIu64 " past end %" PRIu64,
                     m->id, u->first_index + k, sim_log_last(&m->mlog));
        m->ops = sim_grow(m->ops, &m->op_cap, m->op_count + 1, sizeof *m->ops);
        m->ops[m->op_count++] =
            (struct sim_op){.index = u->first_index + k, .e = e, .seq = ++m->op_seq};
    }
    sim_schedule_sync(s, m);
    if (sim_log_last(&m->mlog) != raft_last_index(m->core))
        sim_fail(s, "host-log",
                 "member %" PRIu64 ": host log ends at %" PRIu64 ", core at %" PRIu64, m->id,
                 sim_log_last(&m->mlog), raft_last_index(m->core));

    if (s->paranoid)
        for (uint64_t i = m->mlog.base; i <= sim_log_last(&m->mlog); i++) {
            const struct raft_entry *ce = raft_entry_at(m->core, i);
            if (ce && ce->term != sim_log_get(&m->mlog, i)->term) {
                sim_fail(s, "host-log",
                         "member %" PRIu64 " index %" PRIu64 " core term %" PRIu64 " host %" PRIu64
                         " trunc %" PRIu64 " first %" PRIu64 " n %" PRIu64,
                         m->id, i, ce->term, sim_log_get(&m->mlog, i)->term, u->truncate_after,
                         u->first_index, u->entry_count);
                break;
            }
        }

    /* election-safety and leader-completeness. */
    if (u->role == CLUSTER_ROLE_LEADER && u->commit_index > s->ghost_commit_max) {
        sim_ghost_reserve(s, u->commit_index);
        for (uint64_t i = s->ghost_commit_max + 1; i <= u->commit_index; i++)
            s->ghost_commit_term[i] = u->term;
        s->ghost_commit_max = u->commit_index;
    }
    if (u->role == CLUSTER_ROLE_LEADER) {
        uint64_t t = u->term;
        if (t >= s->ghost_leader_cap) {
            uint64_t old = s->ghost_leader_cap;
            s->ghost_leader =
                sim_grow(s->ghost_leader, &s->ghost_leader_cap, t + 1, sizeof *s->ghost_leader);
            memset(s->ghost_leader + old, 0, (s->ghost_leader_cap - old) * sizeof *s->ghost_leader);
        }
        if (s->ghost_leader[t] && s->ghost_leader[t] != m->id)
            sim_fail(s, "election-safety", "members %" PRIu64 " and %" PRIu64 " lead term %" PRIu64,
                     s->ghost_leader[t], m->id, t);
        if (!s->ghost_leader[t]) {
            s->ghost_leader[t] = m->id;
            s->elections++;
            /* Figure 3.2: an entry committed in term c is in the log of every leader of
             * a term > c (a leader of an older term may still win a late election). */
            for (uint64_t i = 1; i <= s->ghost_max && i <= s->ghost_commit_max; i++) {
                if (s->ghost_commit_term[i] >= t)
                    break; /* commit terms never decrease along the log */
                const struct raft_entry *ce = raft_entry_at(m->core, i);
                if (!ce) {
                    if (i > raft_last_index(m->core))
                        sim_fail(s, "leader-completeness",
                                 "leader %" PRIu64 " of term %" PRIu64 " lacks committed %" PRIu64,
                                 m->id, t, i);
                    continue;
                }
                struct sim_entry x = sim_entry_of(ce);
                if (x.term != s->ghost_term[i] || x.value != s->ghost_value[i]) {
                    sim_fail(s, "leader-completeness",
                             "leader %" PRIu64 " of term %" PRIu64 " has another entry at %" PRIu64,
                             m->id, t, i);
                    break;
                }
            }
        }
    }

    /* 3. messages. */
    for (uint32_t k = 0; k < u->message_count; k++)
        sim_send(s, m, &u->messages[k], u);

    /* 4. apply, answer proposals. */
    sim_apply(s, m, u->commit_index);

    /* read states */
    for (uint32_t k = 0; k < u->read_state_count; k++) {
        const struct raft_read_state *rs = &u->read_states[k];
        for (uint32_t i = 0; i < m->read_count; i++) {
            struct sim_read *r = &m->reads[i];
            if (r->op != rs->read_id || r->have_index)
                continue;
            if (rs->index == 0) {
                sim_reply(s, r->client, r->op, ST_FAIL, 0, raft_leader(m->core));
                m->reads[i] = m->reads[--m->read_count];
            } else {
                r->index = rs->index;
                r->have_index = true;
            }
            break;
        }
    }
    sim_serve_reads(s, m);

    /* ticks */
    if (u->next_tick_ms != m->tick_at) {
        m->tick_at = u->next_tick_ms;
        m->tick_gen++;
        sim_push(s, (struct sim_event){.time = u->next_tick_ms,
                                       .type = EV_TICK,
                                       .member = (int)m->id - 1,
                                       .a = m->tick_gen});
    }

    /* 5. a snapshot to install (the follower's side). */
    if (u->install_snapshot && attach && attach->index == u->install_index &&
        attach->term == u->install_term) {
        sim_install(s, m, attach);
        struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED,
                                .now_ms = s->now,
                                .snapshot_index = attach->index,
                                .snapshot_term = attach->term};
        int rc;
        sim_member_step(s, m, &ev, NULL, &rc, NULL);
        if (rc != CLUSTER_OK)
            sim_fail(s, "host-log", "SNAPSHOT_INSTALLED refused: %d", rc);
    }
}

static void sim_member_step(struct sim *s, struct sim_member *m, const struct raft_event *ev,
                            const struct sim_snap *attach, int *rc_out, uint64_t *proposed)
{
    struct raft_update u;
    int rc = raft_step(m->core, ev, &u, proposed);
    if (rc_out)
        *rc_out = rc;
    sim_host(s, m, &u, attach);
    if (s->snapshot_every && !s->failed && m->applied >= m->snap.index + s->snapshot_every &&
        sim_chance(&s->rng, 0.3))
        sim_take_snapshot(s, m);
}

/* ---- crash and restart -------------------------------------------------------------- */

static void sim_disk_apply(struct sim_member *m, const struct sim_op *op)
{
    if (op->truncate)
        sim_log_truncate(&m->dlog, op->index);
    else
        (void)sim_log_append(&m->dlog, op->index, op->e);
}

static void sim_crash(struct sim *s, struct sim_member *m)
{
    if (!m->up)
        return;
    s->crashes++;
    if (s->trace)
        fprintf(stderr, "t=%" PRIu64 " m%" PRIu64 " CRASH ops=%" PRIu64 " durable=%" PRIu64 "\n",
                s->now, m->id, m->op_count, sim_durable_last(m));
    /* A random prefix of the unsynced writes reached the disk (a torn tail). */
    uint64_t keep = sim_range(&s->rng, 0, m->op_count);
    for (uint64_t i = 0; i < keep; i++)
        sim_disk_apply(m, &m->ops[i]);
    m->op_count = 0;
    m->sync_scheduled = false;
    m->disk_gen++;
    m->tick_gen++;
    raft_destroy(m->core);
    m->core = NULL;
    m->up = false;
    m->paused = false;
    m->prop_count = 0;
    m->read_count = 0;
}

static void sim_restart(struct sim *s, struct sim_member *m)
{
    if (m->up)
        return;
    struct raft_config cfg = s->cfg;
    cfg.self_id = m->id;
    uint64_t first = m->snap.index + 1;
    uint64_t last = sim_log_last(&m->dlog);
    assert(m->dlog.base <= first);
    uint64_t n = last >= first ? last - first + 1 : 0;
    struct raft_entry *e = calloc(n + 1, sizeof *e);
    uint64_t *vals = calloc(n + 1, sizeof *vals);
    for (uint64_t k = 0; k < n; k++) {
        struct sim_entry *x = sim_log_get(&m->dlog, first + k);
        vals[k] = x->value;
        e[k].term = x->term;
        e[k].data = x->value ? (const uint8_t *)&vals[k] : NULL;
        e[k].length = x->value ? 8 : 0;
    }
    struct raft_start st = {.term = m->hard_term,
                            .voted_for = m->hard_vote,
                            .snapshot_index = m->snap.index,
                            .snapshot_term = m->snap.term,
                            .entries = e,
                            .entry_count = n,
                            .now_ms = s->now};
    m->core = raft_create(&cfg, &st);
    free(e);
    free(vals);
    if (!m->core) {
        sim_fail(s, "host-log", "raft_create failed for member %" PRIu64, m->id);
        return;
    }
    m->up = true;
    sim_log_copy(&m->mlog, &m->dlog);
    sim_log_compact(&m->mlog, m->snap.index);
    sim_log_compact(&m->dlog, m->snap.index);
    m->sm = sim_grow(m->sm, &m->sm_cap, m->snap.index + 1, sizeof *m->sm);
    memcpy(m->sm, m->snap.values, (m->snap.index + 1) * sizeof(uint64_t));
    m->applied = m->snap.index;
    m->tick_at = 0;
    struct raft_event ev = {.type = RAFT_EVENT_TICK, .now_ms = s->now};
    sim_member_step(s, m, &ev, NULL, NULL, NULL);
}

/* ---- nemesis ------------------------------------------------------------------------ */

static void sim_heal(struct sim *s)
{
    memset(s->cut, 0, sizeof s->cut);
}

static void sim_isolate(struct sim *s, uint32_t i)
{
    for (uint32_t j = 0; j < s->n; j++)
        if (j != i)
            s->cut[i][j] = s->cut[j][i] = true;
}

static int sim_find_leader(struct sim *s)
{
    int best = -1;
    for (uint32_t i = 0; i < s->n; i++)
        if (s->m[i].up && raft_role(s->m[i].core) == CLUSTER_ROLE_LEADER &&
            (best < 0 || raft_term(s->m[i].core) > raft_term(s->m[best].core)))
            best = (int)i;
    return best;
}

static void sim_nemesis(struct sim *s)
{
    uint64_t et = s->cfg.election_timeout_ms;
    uint64_t r = sim_range(&s->rng, 0, 99);
    if (r < 20) { /* partitions */
        sim_heal(s);
        uint64_t kind = sim_range(&s->rng, 0, 2);
        if (kind == 0) {
            int l = sim_find_leader(s);
            sim_isolate(s, l >= 0 && sim_chance(&s->rng, 0.6)
                               ? (uint32_t)l
                               : (uint32_t)sim_range(&s->rng, 0, s->n - 1));
        } else if (kind == 1) { /* minority / majority split */
            uint32_t k = (uint32_t)sim_range(&s->rng, 1, s->n / 2);
            bool side[SIM_MAX] = {0};
            for (uint32_t c = 0; c < k; c++)
                side[sim_range(&s->rng, 0, s->n - 1)] = true;
            for (uint32_t i = 0; i < s->n; i++)
                for (uint32_t j = 0; j < s->n; j++)
                    if (side[i] != side[j])
                        s->cut[i][j] = true;
        } else { /* a few single directed links */
            for (int c = 0; c < 3; c++) {
                uint32_t i = (uint32_t)sim_range(&s->rng, 0, s->n - 1);
                uint32_t j = (uint32_t)sim_range(&s->rng, 0, s->n - 1);
                if (i != j)
                    s->cut[i][j] = true;
            }
        }
    } else if (r < 38) {
        sim_heal(s);
    } else if (r < 52) { /* crash someone, the leader more often */
        int l = sim_find_leader(s);
        uint32_t i = l >= 0 && sim_chance(&s->rng, 0.5) ? (uint32_t)l
                                                        : (uint32_t)sim_range(&s->rng, 0, s->n - 1);
        sim_crash(s, &s->m[i]);
        sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 1, 4 * et),
                                       .type = EV_RESTART,
                                       .member = (int)i});
    } else if (r < 60) { /* crash right after writes, before they sync */
        for (uint32_t i = 0; i < s->n; i++)
            if (s->m[i].up && s->m[i].op_count && sim_chance(&s->rng, 0.5)) {
                sim_crash(s, &s->m[i]);
                sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 1, 2 * et),
                                               .type = EV_RESTART,
                                               .member = (int)i});
            }
    } else if (r < 70) { /* pause, the leader more often */
        int l = sim_find_leader(s);
        uint32_t i = l >= 0 && sim_chance(&s->rng, 0.6) ? (uint32_t)l
                                                        : (uint32_t)sim_range(&s->rng, 0, s->n - 1);
        if (s->m[i].up && !s->m[i].paused) {
            s->m[i].paused = true;
            s->m[i].pause_until = s->now + sim_range(&s->rng, et / 2, 3 * et);
        }
    } else if (r < 80) {
        s->loss = sim_chance(&s->rng, 0.5) ? 0 : (double)sim_range(&s->rng, 0, 20) / 100.0;
        s->dup = (double)sim_range(&s->rng, 0, 10) / 100.0;
        s->lat_max = s->lat_min + (uint32_t)sim_range(&s->rng, 0, 30);
    } else if (r < 85) { /* leadership transfer */
        int l = sim_find_leader(s);
        if (l >= 0) {
            struct raft_event ev = {.type = RAFT_EVENT_TRANSFER,
                                    .now_ms = s->now,
                                    .transfer_to = sim_range(&s->rng, 1, s->n)};
            if (ev.transfer_to != s->m[l].id && !s->m[l].paused)
                sim_member_step(s, &s->m[l], &ev, NULL, NULL, NULL);
        }
    }
    sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, et / 4, 3 * et),
                                   .type = EV_NEMESIS});
}

/* ---- the event loop ----------------------------------------------------------------- */

/* A paused member receives nothing until it resumes; then it gets all at once. */
static bool sim_defer_if_paused(struct sim *s, struct sim_event *ev, struct sim_member *m)
{
    if (!m->paused)
        return false;
    if (s->now >= m->pause_until) {
        m->paused = false;
        return false;
    }
    ev->time = m->pause_until;
    sim_push(s, *ev);
    return true;
}

static void sim_client_invoke(struct sim *s, int c)
{
    struct sim_client *cl = &s->clients[c];
    if (cl->op || !s->clients_on)
        return;
    s->hist = sim_grow(s->hist, &s->hist_cap, s->hist_n + 1, sizeof *s->hist);
    struct sim_hist *h = &s->hist[s->hist_n++];
    *h = (struct sim_hist){.client = c, .write = sim_chance(&s->rng, 0.7), .t_inv = s->now};
    if (h->write)
        h->value = ++s->next_value;
    cl->op = s->hist_n;
    sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 1, 3),
                                   .type = EV_CLIENT_REQ,
                                   .member = cl->target,
                                   .a = cl->op,
                                   .b = (uint64_t)c});
    sim_push(s, (struct sim_event){.time = s->now + 5ull * s->cfg.election_timeout_ms,
                                   .type = EV_CLIENT_TIMEOUT,
                                   .member = c,
                                   .a = cl->op});
}

static void sim_client_request(struct sim *s, struct sim_event *ev)
{
    struct sim_member *m = &s->m[ev->member];
    if (!m->up)
        return; /* lost: the client times out */
    if (sim_defer_if_paused(s, ev, m))
        return;
    struct sim_hist *h = &s->hist[ev->a - 1];
    int c = (int)ev->b;
    if (h->write) {
        uint64_t v = h->value;
        struct raft_event rev = {.type = RAFT_EVENT_PROPOSE,
                                 .now_ms = s->now,
                                 .proposal = (const uint8_t *)&v,
                                 .proposal_length = 8};
        uint64_t index = 0;
        int rc;
        /* Register first: the proposal may commit within this very step (one member). */
        uint64_t cap = m->prop_cap;
        m->props = sim_grow(m->props, &cap, m->prop_count + 1, sizeof *m->props);
        m->prop_cap = (uint32_t)cap;
        uint32_t slot = m->prop_count++;
        m->props[slot] = (struct sim_prop){.index = UINT64_MAX, .op = ev->a, .client = c};
        struct raft_update u;
        rc = raft_step(m->core, &rev, &u, &index);
        if (rc == CLUSTER_OK)
            m->props[slot].index = index;
        else
            m->props[slot] = m->props[--m->prop_count];
        /* With appends_on_flush the entry waits for the end of the host's turn: a few
         * ms here, so that several proposals share one APPEND. */
        if (rc == CLUSTER_OK && s->cfg.appends_on_flush && !m->flush_scheduled) {
            m->flush_scheduled = true;
            sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 0, 3),
                                           .type = EV_FLUSH,
                                           .member = ev->member});
        }
        sim_host(s, m, &u, NULL);
        if (rc == CLUSTER_E_NOT_LEADER)
            sim_reply(s, c, ev->a, ST_FAIL, 0, raft_leader(m->core));
    } else {
        uint64_t cap = m->read_cap;
        m->reads = sim_grow(m->reads, &cap, m->read_count + 1, sizeof *m->reads);
        m->read_cap = (uint32_t)cap;
        m->reads[m->read_count++] = (struct sim_read){.op = ev->a, .client = c};
        struct raft_event rev = {.type = RAFT_EVENT_READ_INDEX, .now_ms = s->now, .read_id = ev->a};
        sim_member_step(s, m, &rev, NULL, NULL, NULL);
    }
}

static void sim_deliver(struct sim *s, struct sim_event *ev)
{
    struct sim_packet *p = ev->packet;
    struct sim_member *m = &s->m[p->to];
    if (m->up && sim_defer_if_paused(s, ev, m))
        return;
    if (m->up && !s->cut[p->from][p->to]) {
        struct raft_message msg;
        int rc = raft_message_decode(p->bytes, p->length, &msg);
        if (rc == CLUSTER_OK) {
            struct raft_event rev = {.type = RAFT_EVENT_RECEIVE, .now_ms = s->now, .message = &msg};
            sim_member_step(s, m, &rev, p->snap, &rc, NULL);
            if (rc != CLUSTER_OK)
                sim_fail(s, "election-safety", "member %" PRIu64 " refused message type %d: %d",
                         m->id, msg.type, rc);
            free((void *)msg.entries);
        }
    }
    if (p->snap)
        free(p->snap->values);
    free(p->snap);
    free(p->bytes);
    free(p);
}

static void sim_sync(struct sim *s, struct sim_event *ev)
{
    struct sim_member *m = &s->m[ev->member];
    if (!m->up || ev->a != m->disk_gen)
        return;
    if (sim_defer_if_paused(s, ev, m))
        return;
    uint64_t k = 0;
    while (k < m->op_count && m->ops[k].seq <= ev->b)
        sim_disk_apply(m, &m->ops[k++]);
    memmove(m->ops, m->ops + k, (m->op_count - k) * sizeof *m->ops);
    m->op_count -= k;
    m->sync_scheduled = false;
    sim_schedule_sync(s, m);
    uint64_t last = sim_durable_last(m);
    struct raft_event rev = {.type = RAFT_EVENT_PERSISTED,
                             .now_ms = s->now,
                             .persisted_index = last,
                             .persisted_term = sim_durable_term(m, last)};
    sim_member_step(s, m, &rev, NULL, NULL, NULL);
}

static void sim_event_run(struct sim *s, struct sim_event *ev)
{
    switch (ev->type) {
    case EV_DELIVER:
        sim_deliver(s, ev);
        break;
    case EV_TICK: {
        struct sim_member *m = &s->m[ev->member];
        if (!m->up || ev->a != m->tick_gen)
            break;
        if (sim_defer_if_paused(s, ev, m))
            break;
        struct raft_event rev = {.type = RAFT_EVENT_TICK, .now_ms = s->now};
        m->tick_at = 0;
        sim_member_step(s, m, &rev, NULL, NULL, NULL);
        break;
    }
    case EV_SYNC:
        sim_sync(s, ev);
        break;
    case EV_FLUSH: {
        struct sim_member *m = &s->m[ev->member];
        if (!m->up) {
            m->flush_scheduled = false;
            break;
        }
        if (sim_defer_if_paused(s, ev, m))
            break;
        m->flush_scheduled = false;
        struct raft_event rev = {.type = RAFT_EVENT_FLUSH, .now_ms = s->now};
        sim_member_step(s, m, &rev, NULL, NULL, NULL);
        /* appends_quorum_first: followers a flush left out get their entries with the
         * host's next flush, which comes within a bounded wait even if nothing new is
         * proposed (engine_flush). */
        if (m->up && raft_flush_due(m->core) && !m->flush_scheduled) {
            m->flush_scheduled = true;
            sim_push(s, (struct sim_event){.time = s->now + sim_range(&s->rng, 1, 5),
                                           .type = EV_FLUSH,
                                           .member = ev->member});
        }
        break;
    }
    case EV_CLIENT_NEXT:
        sim_client_invoke(s, ev->member);
        break;
    case EV_CLIENT_REQ:
        sim_client_request(s, ev);
        break;
    case EV_CLIENT_REPLY:
        if (s->clients[ev->member].op == ev->a)
            sim_client_done(s, ev->member, (enum sim_status)ev->b, ev->c, ev->d);
        break;
    case EV_CLIENT_TIMEOUT:
        if (s->clients[ev->member].op == ev->a)
            sim_client_done(s, ev->member, ST_UNKNOWN, 0, 0);
        break;
    case EV_NEMESIS:
        if (s->clients_on)
            sim_nemesis(s);
        break;
    case EV_RESTART:
        if (s->clients_on)
            sim_restart(s, &s->m[ev->member]);
        break;
    }
}

/* ---- end-of-run checks -------------------------------------------------------------- */

static int sim_cmp_done(const void *a, const void *b)
{
    const struct sim_hist *x = *(const struct sim_hist *const *)a;
    const struct sim_hist *y = *(const struct sim_hist *const *)b;
    return x->t_done < y->t_done ? -1 : x->t_done > y->t_done;
}

/* Linearizability on the log: every write acknowledged at index i is committed at i,
 * every definitely failed write is committed nowhere, and real time is respected:
 * a read invoked after a write was acknowledged saw it (read index >= its index), and a
 * write invoked after another was acknowledged went after it. */
static void sim_check_history(struct sim *s)
{
    uint64_t *where = calloc(s->next_value + 1, sizeof *where); /* value -> index */
    for (uint64_t i = 1; i <= s->ghost_max; i++)
        if (s->ghost_value[i] && s->ghost_value[i] <= s->next_value)
            where[s->ghost_value[i]] = i;
    struct sim_hist **w = calloc(s->hist_n + 1, sizeof *w);
    uint64_t wn = 0;
    for (uint64_t k = 0; k < s->hist_n && !s->failed; k++) {
        struct sim_hist *h = &s->hist[k];
        if (!h->write)
            continue;
        if (h->status == ST_OK) {
            if (where[h->value] != h->index)
                sim_fail(s, "lost-write",
                         "value %" PRIu64 " acknowledged at %" PRIu64 " is committed at %" PRIu64,
                         h->value, h->index, where[h->value]);
            w[wn++] = h;
        } else if (h->status == ST_FAIL && where[h->value]) {
            sim_fail(s, "lost-write", "value %" PRIu64 " failed but is committed at %" PRIu64,
                     h->value, where[h->value]);
        }
    }
    qsort(w, wn, sizeof *w, sim_cmp_done);
    uint64_t *prefix_max = calloc(wn + 1, sizeof *prefix_max);
    for (uint64_t k = 0; k < wn; k++)
        prefix_max[k + 1] = prefix_max[k] > w[k]->index ? prefix_max[k] : w[k]->index;
    for (uint64_t k = 0; k < s->hist_n && !s->failed; k++) {
        struct sim_hist *h = &s->hist[k];
        if (h->status != ST_OK)
            continue;
        /* writes acknowledged strictly before h was invoked */
        uint64_t lo = 0, hi = wn;
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (w[mid]->t_done < h->t_inv)
                lo = mid + 1;
            else
                hi = mid;
        }
        uint64_t before = prefix_max[lo];
        if (!h->write && h->index < before)
            sim_fail(s, "linearizability",
                     "read by client %d invoked at %" PRIu64 " returned index %" PRIu64
                     ", but a write acknowledged earlier is at %" PRIu64,
                     h->client, h->t_inv, h->index, before);
        if (h->write && h->index <= before)
            sim_fail(s, "linearizability",
                     "write invoked at %" PRIu64 " is at %" PRIu64
                     ", not after one acknowledged earlier at %" PRIu64,
                     h->t_inv, h->index, before);
    }
    free(prefix_max);
    free(w);
    free(where);
}

static uint64_t sim_applied_sum(const struct sim *s)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < s->n; i++)
        sum += s->m[i].applied;
    return sum;
}

static bool sim_converged(struct sim *s)
{
    int l = sim_find_leader(s);
    if (l < 0)
        return false;
    uint64_t target = raft_last_index(s->m[l].core);
    for (uint32_t i = 0; i < s->n; i++)
        if (s->m[i].applied != target || raft_commit_index(s->m[i].core) != target)
            return false;
    return true;
}

static void sim_run_until(struct sim *s, uint64_t end)
{
    while (s->heap_n && !s->failed && s->heap[0].time <= end) {
        struct sim_event ev = sim_pop(s);
        s->now = ev.time;
        sim_event_run(s, &ev);
    }
}

static void sim_liveness(struct sim *s)
{
    /* Stop faults, heal, restart and resume everyone; then 10 election timeouts. A member
     * that was cut off for long may still be catching up then, one small APPEND per round
     * trip and sync (max_entries_per_message can be 1): that is progress, not a stall, so
     * the wait goes on while the members' applied indexes grow within every 2 election
     * timeouts, up to 200 in all. A member that stops advancing short of the leader's
     * last index fails. */
    s->clients_on = false;
    sim_heal(s);
    s->loss = s->dup = s->corrupt = 0;
    s->lat_max = s->lat_min + 5;
    for (uint32_t i = 0; i < s->n; i++) {
        s->m[i].paused = false;
        sim_restart(s, &s->m[i]);
    }
    uint64_t et = s->cfg.election_timeout_ms;
    uint64_t end = s->now + 10 * et;
    uint64_t give_up = s->now + 200 * et;
    sim_run_until(s, end);
    if (s->failed)
        return;
    while (sim_find_leader(s) >= 0 && !sim_converged(s) && end < give_up) {
        uint64_t before = sim_applied_sum(s);
        end += 2 * et;
        sim_run_until(s, end);
        if (s->failed)
            return;
        if (sim_applied_sum(s) == before)
            break;
    }
    s->now = end;
    int l = sim_find_leader(s);
    if (l < 0) {
        sim_fail(s, "liveness", "no leader 10 election timeouts after healing");
        return;
    }
    uint64_t target = raft_last_index(s->m[l].core);
    for (uint32_t i = 0; i < s->n; i++) {
        struct sim_member *m = &s->m[i];
        if (m->applied != target || raft_commit_index(m->core) != target) {
            sim_fail(s, "liveness",
                     "member %" PRIu64 " applied %" PRIu64 " (commit %" PRIu64
                     "), leader %d's last is %" PRIu64 " commit %" PRIu64 " match %" PRIu64
                     " role %d term %" PRIu64 " leader term %" PRIu64,
                     m->id, m->applied, raft_commit_index(m->core), l + 1, target,
                     raft_commit_index(s->m[l].core), raft_match_index(s->m[l].core, m->id),
                     raft_role(m->core), raft_term(m->core), raft_term(s->m[l].core));
            return;
        }
        for (uint64_t k = m->snap.index + 1; k <= m->applied; k++)
            if (m->sm[k] != s->ghost_value[k]) {
                sim_fail(s, "state-machine-safety", "member %" PRIu64 " differs at %" PRIu64, m->id,
                         k);
                return;
            }
    }
}

/* ---- one seed ----------------------------------------------------------------------- */

static void sim_free(struct sim *s)
{
    for (uint32_t i = 0; i < s->n; i++) {
        struct sim_member *m = &s->m[i];
        raft_destroy(m->core);
        free(m->snap.values);
        free(m->dlog.ents);
        free(m->mlog.ents);
        free(m->ops);
        free(m->sm);
        free(m->props);
        free(m->reads);
    }
    for (uint64_t i = 0; i < s->heap_n; i++)
        if (s->heap[i].packet) {
            if (s->heap[i].packet->snap)
                free(s->heap[i].packet->snap->values);
            free(s->heap[i].packet->snap);
            free(s->heap[i].packet->bytes);
            free(s->heap[i].packet);
        }
    free(s->heap);
    free(s->ghost_term);
    free(s->ghost_value);
    free(s->ghost_commit_term);
    free(s->ghost_leader);
    free(s->hist);
}

static bool sim_run(uint64_t seed, uint64_t steps, uint32_t members, bool verbose)
{
    struct sim *s = calloc(1, sizeof *s);
    sim_current = s;
    s->seed = seed;
    s->trace = getenv("SIM_TRACE") != NULL;
    s->paranoid = getenv("SIM_PARANOID") != NULL;
    sim_rng_seed(&s->rng, seed);
    static const uint32_t sizes[] = {3, 5, 4, 7, 3, 5};
    s->n = members ? members : sizes[seed % 6];
    s->cfg.member_count = s->n;
    for (uint32_t i = 0; i < s->n; i++)
        s->cfg.members[i] = i + 1;
    s->cfg.heartbeat_ms = (uint32_t)sim_range(&s->rng, 5, 20);
    s->cfg.election_timeout_ms = s->cfg.heartbeat_ms * (uint32_t)sim_range(&s->rng, 5, 10);
    if (s->cfg.election_timeout_ms < 60) /* well above a round trip plus a disk sync */
        s->cfg.election_timeout_ms = 60;
    s->cfg.pre_vote = sim_chance(&s->rng, 0.75);
    s->cfg.appends_on_flush = sim_chance(&s->rng, 0.5) && getenv("SIM_NOFLUSH") == NULL;
    /* Half of the flushing seeds send to a quorum first; from the seed's number, not the
     * generator, so every other seed's run stays what it was before the option. */
    s->cfg.appends_quorum_first = s->cfg.appends_on_flush && (seed / 6) % 2 == 1;
    s->cfg.max_entries_per_message =
        sim_chance(&s->rng, 0.5) ? (uint32_t)sim_range(&s->rng, 1, 3) : 0;
    s->cfg.random = sim_raft_random;
    s->cfg.random_arg = &s->rng;
    s->lat_min = (uint32_t)sim_range(&s->rng, 1, 3);
    s->lat_max = s->lat_min + (uint32_t)sim_range(&s->rng, 0, 15);
    s->disk_min = (uint32_t)sim_range(&s->rng, 1, 3);
    s->disk_max = s->disk_min + (uint32_t)sim_range(&s->rng, 0, 20);
    s->loss = (double)sim_range(&s->rng, 0, 5) / 100.0;
    s->dup = (double)sim_range(&s->rng, 0, 5) / 100.0;
    s->corrupt = 0.002;
    s->snapshot_every = sim_chance(&s->rng, 0.6) ? (uint32_t)sim_range(&s->rng, 5, 40) : 0;
    s->trailing = (uint32_t)sim_range(&s->rng, 0, 4);
    s->clients_on = true;
    for (uint32_t i = 0; i < s->n; i++) {
        struct sim_member *m = &s->m[i];
        m->id = i + 1;
        m->dlog.base = m->mlog.base = 1;
        m->snap.values = calloc(1, sizeof(uint64_t));
        sim_restart(s, m);
    }
    for (int c = 0; c < SIM_CLIENTS; c++) {
        s->clients[c].target = (int)sim_range(&s->rng, 0, s->n - 1);
        sim_push(s, (struct sim_event){
                        .time = sim_range(&s->rng, 0, 50), .type = EV_CLIENT_NEXT, .member = c});
    }
    sim_push(s, (struct sim_event){.time = s->cfg.election_timeout_ms * 3ull, .type = EV_NEMESIS});
    while (s->heap_n && !s->failed && s->steps < steps) {
        struct sim_event ev = sim_pop(s);
        s->now = ev.time;
        sim_event_run(s, &ev);
        s->steps++;
    }
    if (!s->failed)
        sim_liveness(s);
    if (!s->failed)
        sim_check_history(s);
    if (verbose) {
        uint64_t ok = 0;
        for (uint64_t k = 0; k < s->hist_n; k++)
            ok += s->hist[k].status == ST_OK;
        printf("seed=%" PRIu64
               " members=%u hb=%u et=%u pre_vote=%d flush=%d quorum_first=%d t=%" PRIu64
               "ms committed=%" PRIu64 " ops=%" PRIu64 " ok=%" PRIu64 " leaders=%" PRIu64
               " crashes=%" PRIu64 " snapshots_sent=%" PRIu64 " %s\n",
               seed, s->n, s->cfg.heartbeat_ms, s->cfg.election_timeout_ms, s->cfg.pre_vote,
               s->cfg.appends_on_flush, s->cfg.appends_quorum_first, s->now, s->ghost_max,
               s->hist_n, ok, s->elections, s->crashes, s->snapshots_sent,
               s->failed ? "FAIL" : "ok");
    }
    bool ok = !s->failed;
    sim_free(s);
    free(s);
    sim_current = NULL;
    return ok;
}

int main(int argc, char **argv)
{
    uint64_t seed = 1, seeds = 1, steps = 20000;
    uint32_t members = 0;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            seeds = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--members") && i + 1 < argc)
            members = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--verbose"))
            verbose = true;
        else {
            fprintf(stderr,
                    "usage: sim [--seed S] [--seeds N] [--steps K] [--members M] [--verbose]\n");
            return 2;
        }
    }
    if (members > SIM_MAX) {
        fprintf(stderr, "sim: at most %d members\n", SIM_MAX);
        return 2;
    }
    signal(SIGABRT, sim_on_abort);
    printf("sim: seed=%" PRIu64 " seeds=%" PRIu64 " steps=%" PRIu64 " members=%u\n", seed, seeds,
           steps, members);
    fflush(stdout);
    uint64_t failures = 0;
    for (uint64_t k = 0; k < seeds; k++)
        if (!sim_run(seed + k, steps, members, verbose))
            failures++;
    printf("sim: %" PRIu64 " seeds, %" PRIu64 " failed\n", seeds, failures);
    return failures ? 1 : 0;
}
