/* raft.c: the Raft protocol core, a pure step function (see raft.h for the contract).
 *
 * No syscalls, no clock, no random number generator of its own, no globals: everything
 * comes in through raft_step's event and leaves through the update. Section numbers in
 * the comments refer to Ongaro's dissertation, "Consensus: Bridging Theory and
 * Practice" (2014).
 *
 * Canaries: building with -DCORRAL_CANARY=N plants one known bug, so that tests/sim can
 * show it catches it (see the top of tests/sim/sim.c for which seed and property did):
 *   1  a follower acknowledges APPEND on receipt, before the entries are durable;
 *   2  a follower keeps a divergent suffix: a conflicting entry is overwritten in place
 *      and the entries after it are not truncated;
 *   3  a leader commits an entry of an earlier term by counting replicas (Figure 3.7);
 *   4  a leader serves a read index without confirming its leadership (no quorum round);
 *   5  reserved for engine/: followers expiring sessions on their own clock.
 * 0 (the default) plants nothing.
 */
#include "raft.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#ifndef CORRAL_CANARY
#define CORRAL_CANARY 0
#endif

#define RAFT_NO_TRUNCATE UINT64_MAX
#define RAFT_OUT_MAX (8 * RAFT_MAX_MEMBERS) /* messages one step can produce, bounded */
#define RAFT_PIPELINE 4                     /* APPENDs sent at once to a catching-up peer */

/* The leader's view of one other member (3.5: nextIndex and matchIndex). */
struct raft_peer {
    uint64_t id;
    uint64_t next_index;  /* next entry to send; optimistic (pipelined) */
    uint64_t match_index; /* highest index known durable and matching on the peer */
    uint64_t last_heard_ms;
    uint64_t acked_round;  /* highest read round this peer answered in this term */
    bool vote_granted;     /* this election (pre-vote or vote); dedups duplicates */
    bool snapshot_pending; /* a snapshot was announced and not yet answered */
    /* config.appends_quorum_first: a flush left this caught-up follower's entries to a
     * later flush (raft_flush); until then its answers do not send them either. */
    bool flush_deferred;
    uint64_t snapshot_sent_ms;
};

struct raft_pending_read {
    uint64_t read_id;
    uint64_t index; /* commit index when the read arrived, 0 = take it when served */
    uint64_t round; /* the heartbeat round that must reach a majority */
};

/* Entry data freed per raft_step from what compaction forgot (struct raft.graveyard). */
#define RAFT_FREE_PER_STEP 64

struct raft {
    struct raft_config config;
    uint32_t majority;

    /* Persistent state (3.8), mirrored by the host through hard_state_changed. */
    uint64_t term;
    uint64_t voted_for;

    /* The log held in memory: entries log_offset+1 .. log_offset+log_count. Each entry's
     * data is a malloc'd copy owned by the core. log_offset <= snapshot_index <=
     * commit_index: what is not in memory is covered by a snapshot. */
    struct raft_entry *log;
    uint64_t log_count;
    uint64_t log_cap;
    uint64_t log_offset;
    uint64_t log_offset_term;
    uint64_t snapshot_index;
    uint64_t snapshot_term;
    /* Data of entries compaction forgot, not freed yet. Freeing the ~100,000 entries of
     * a snapshot interval at once held the host's loop for 100-130 ms (measured: every
     * write waited, p99 over 100 ms); raft_step frees at most RAFT_FREE_PER_STEP of them
     * per call instead, so the work is spread over the steps that follow. */
    const uint8_t **graveyard;
    uint64_t graveyard_count;
    uint64_t graveyard_cap;

    uint64_t persisted_index; /* the host's log is durable up to here (PERSISTED) */
    /* Leader with config.appends_on_flush: the first entry proposed since the last
     * FLUSH, not yet sent to the followers that were caught up before it (0 = none). */
    uint64_t flush_from;
    uint32_t flush_turn; /* appends_quorum_first: whose turn it is to be sent first */
    uint64_t commit_index;

    enum cluster_role role;
    bool pre_candidate; /* role CANDIDATE, still in the pre-vote phase (9.6) */
    uint64_t leader_id;
    uint32_t votes;

    uint64_t now_ms;
    uint64_t election_deadline_ms; /* follower and candidate */
    uint64_t leader_heard_ms;      /* last APPEND/SNAPSHOT from a current leader */
    bool leader_heard;
    uint64_t heartbeat_due_ms; /* leader */
    uint64_t quorum_check_ms;  /* leader: next check-quorum (6.2) */

    struct raft_peer peers[RAFT_MAX_MEMBERS - 1];
    uint32_t peer_count;

    /* Follower: an APPEND accepted but not yet durable; answered on PERSISTED (3.8). */
    bool ack_pending;
    uint64_t ack_to;
    uint64_t ack_match;
    uint64_t ack_round;

    /* Follower: install_snapshot was asked for; APPENDs wait until it is done. */
    bool install_pending;
    uint64_t install_index;
    uint64_t install_from;
    uint64_t install_deadline_ms;

    /* Leader: reads waiting for their heartbeat round (6.4). */
    struct raft_pending_read *reads;
    uint32_t read_count;
    uint32_t read_cap;
    uint64_t read_round; /* last round started; never reset, so old acks never match */

    /* The update being built (valid during raft_step). Messages' entries are resolved
     * into pointers at the end of the step, after the log stops moving. */
    struct raft_update *update;
    struct raft_message out[RAFT_OUT_MAX];
    uint64_t out_first[RAFT_OUT_MAX];
    uint32_t out_count;
    struct raft_read_state *read_out;
    uint32_t read_out_count;
    uint32_t read_out_cap;
    uint64_t update_first; /* first index the host must (re)write this step, 0 = none */
    bool hard_state_changed;
    bool no_memory;
};

/* ---- log ---------------------------------------------------------------------------- */

static uint64_t raft_log_last(const struct raft *r)
{
    return r->log_offset + r->log_count;
}

/* The term of the entry at index, or UINT64_MAX when the core does not know it (before
 * log_offset, or beyond the log). Index 0 has term 0. */
static uint64_t raft_log_term(const struct raft *r, uint64_t index)
{
    if (index == r->log_offset)
        return r->log_offset_term;
    if (index < r->log_offset || index > raft_log_last(r))
        return UINT64_MAX;
    return r->log[index - r->log_offset - 1].term;
}

static int raft_log_append(struct raft *r, uint64_t term, const uint8_t *data, uint32_t length)
{
    if (r->log_count == r->log_cap) {
        uint64_t cap = r->log_cap ? r->log_cap * 2 : 64;
        struct raft_entry *log = realloc(r->log, cap * sizeof *log);
        if (!log)
            return CLUSTER_E_NO_MEMORY;
        r->log = log;
        r->log_cap = cap;
    }
    uint8_t *copy = NULL; /* owned by the log entry, freed by raft_log_truncate/compact */
    if (length) {
        copy = malloc(length);
        if (!copy)
            return CLUSTER_E_NO_MEMORY;
        memcpy(copy, data, length);
    }
    r->log[r->log_count++] = (struct raft_entry){.term = term, .data = copy, .length = length};
    if (r->update_first == 0)
        r->update_first = raft_log_last(r);
    return CLUSTER_OK;
}

#if CORRAL_CANARY != 2
/* Removes entries after index (3.5: a conflicting suffix). Never a committed entry:
 * that would break State Machine Safety, so it is an assertion, not a branch. */
static void raft_log_truncate(struct raft *r, uint64_t index)
{
    assert(index >= r->commit_index);
    assert(index >= r->log_offset);
    while (raft_log_last(r) > index)
        free((void *)r->log[--r->log_count].data);
    if (r->persisted_index > index)
        r->persisted_index = index;
    struct raft_update *u = r->update;
    if (u->truncate_after == RAFT_NO_TRUNCATE || index < u->truncate_after)
        u->truncate_after = index;
    if (r->update_first > index + 1)
        r->update_first = index + 1;
}
#endif

/* Forgets entries up to index (5: log compaction), which a snapshot now covers. */
static void raft_log_compact(struct raft *r, uint64_t index)
{
    if (index <= r->log_offset)
        return;
    if (index > raft_log_last(r))
        index = raft_log_last(r);
    uint64_t drop = index - r->log_offset;
    uint64_t term = raft_log_term(r, index);
    if (r->graveyard_count + drop > r->graveyard_cap) {
        uint64_t cap = r->graveyard_cap ? r->graveyard_cap : 1024;
        while (cap < r->graveyard_count + drop)
            cap *= 2;
        const uint8_t **grown = realloc(r->graveyard, cap * sizeof *grown);
        if (grown) {
            r->graveyard = grown;
            r->graveyard_cap = cap;
        }
    }
    for (uint64_t i = 0; i < drop; i++) {
        if (r->graveyard_count < r->graveyard_cap)
            r->graveyard[r->graveyard_count++] = r->log[i].data;
        else
            free((void *)r->log[i].data); /* no room to defer it: free it now */
    }
    memmove(r->log, r->log + drop, (r->log_count - drop) * sizeof *r->log);
    r->log_count -= drop;
    r->log_offset = index;
    r->log_offset_term = term;
}

static void raft_log_clear(struct raft *r, uint64_t index, uint64_t term)
{
    while (r->log_count)
        free((void *)r->log[--r->log_count].data);
    r->log_offset = index;
    r->log_offset_term = term;
}

/* ---- output ------------------------------------------------------------------------- */

static struct raft_message *raft_message_push(struct raft *r, enum raft_message_type type,
                                              uint64_t to)
{
    /* RAFT_OUT_MAX bounds what one event can cause (a broadcast plus a few replies);
     * reaching it is a bug in this file. */
    assert(r->out_count < RAFT_OUT_MAX);
    if (r->out_count == RAFT_OUT_MAX)
        return NULL; /* defensive: drop; Raft tolerates lost messages */
    struct raft_message *m = &r->out[r->out_count];
    *m = (struct raft_message){.type = type, .from = r->config.self_id, .to = to, .term = r->term};
    r->out_first[r->out_count] = 0;
    r->out_count++;
    return m;
}

static void raft_read_state_push(struct raft *r, uint64_t read_id, uint64_t index)
{
    if (r->read_out_count == r->read_out_cap) {
        uint32_t cap = r->read_out_cap ? r->read_out_cap * 2 : 16;
        struct raft_read_state *p = realloc(r->read_out, cap * sizeof *p);
        if (!p) {
            r->no_memory = true;
            return;
        }
        r->read_out = p;
        r->read_out_cap = cap;
    }
    r->read_out[r->read_out_count++] = (struct raft_read_state){read_id, index};
}

static void raft_hard_state_set(struct raft *r, uint64_t term, uint64_t voted_for)
{
    if (r->term == term && r->voted_for == voted_for)
        return;
    assert(term >= r->term);
    r->term = term;
    r->voted_for = voted_for;
    r->hard_state_changed = true;
}

/* ---- timers ------------------------------------------------------------------------- */

/* 3.4: each member waits a random time in [T, 2T), so that split votes are rare. */
static void raft_election_timer_reset(struct raft *r)
{
    uint32_t t = r->config.election_timeout_ms;
    r->election_deadline_ms = r->now_ms + t + r->config.random(r->config.random_arg) % t;
}

/* ---- roles -------------------------------------------------------------------------- */

static struct raft_peer *raft_peer_find(struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->peer_count; i++)
        if (r->peers[i].id == id)
            return &r->peers[i];
    return NULL;
}

static void raft_reads_fail(struct raft *r)
{
    for (uint32_t i = 0; i < r->read_count; i++)
        raft_read_state_push(r, r->reads[i].read_id, 0);
    r->read_count = 0;
}

/* 3.3: a member that learns of a higher term, or of the leader of its own term,
 * becomes a follower. leader may be 0 (unknown). */
static void raft_become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    if (term > r->term) {
        raft_hard_state_set(r, term, 0);
        r->ack_pending = false;
        r->install_pending = false;
    }
    if (r->role == CLUSTER_ROLE_LEADER)
        raft_reads_fail(r);
    if (r->role != CLUSTER_ROLE_FOLLOWER || r->pre_candidate)
        raft_election_timer_reset(r);
    r->role = CLUSTER_ROLE_FOLLOWER;
    r->pre_candidate = false;
    r->leader_id = leader;
}

static void raft_send_append(struct raft *r, struct raft_peer *p);

/* A snapshot announcement holds back entries for one election timeout at most: the
 * announcement or its answer may be lost, and then it is sent again. */
static bool raft_snapshot_busy(const struct raft *r, const struct raft_peer *p)
{
    return p->snapshot_pending && r->now_ms < p->snapshot_sent_ms + r->config.election_timeout_ms;
}

static void raft_broadcast_append(struct raft *r)
{
    for (uint32_t i = 0; i < r->peer_count; i++)
        raft_send_append(r, &r->peers[i]);
    r->heartbeat_due_ms = r->now_ms + r->config.heartbeat_ms;
}

/* 3.4 and 3.6.2: a new leader initialises nextIndex to its last index + 1, and appends a
 * no-op entry of its term, so that entries of earlier terms commit (indirectly) as soon
 * as possible and read index (6.4) has a current-term commit to wait for. */
static void raft_become_leader(struct raft *r)
{
    r->role = CLUSTER_ROLE_LEADER;
    r->pre_candidate = false;
    r->leader_id = r->config.self_id;
    r->ack_pending = false;
    r->install_pending = false;
    for (uint32_t i = 0; i < r->peer_count; i++) {
        struct raft_peer *p = &r->peers[i];
        p->next_index = raft_log_last(r) + 1;
        p->match_index = 0;
        p->last_heard_ms = r->now_ms; /* a grace period for check-quorum */
        p->acked_round = 0;
        p->snapshot_pending = false;
        p->flush_deferred = false;
    }
    r->quorum_check_ms = r->now_ms + r->config.election_timeout_ms;
    r->flush_from = 0;
    if (raft_log_append(r, r->term, NULL, 0) != CLUSTER_OK)
        r->no_memory = true;
    raft_broadcast_append(r);
}

static void raft_maybe_commit(struct raft *r);

/* 3.4 (and 9.6 when pre is set): start an election. A pre-vote asks "would you vote for
 * me in term+1?" without changing anyone's term, so a member cut off from the cluster
 * cannot inflate terms and depose a healthy leader when it comes back. */
static void raft_campaign(struct raft *r, bool pre)
{
    r->role = CLUSTER_ROLE_CANDIDATE;
    r->pre_candidate = pre;
    r->leader_id = 0;
    r->votes = 1; /* its own */
    for (uint32_t i = 0; i < r->peer_count; i++)
        r->peers[i].vote_granted = false;
    raft_election_timer_reset(r);
    if (!pre)
        raft_hard_state_set(r, r->term + 1, r->config.self_id);
    if (r->votes >= r->majority) {
        if (pre) {
            raft_campaign(r, false);
        } else {
            raft_become_leader(r);
            raft_maybe_commit(r);
        }
        return;
    }
    for (uint32_t i = 0; i < r->peer_count; i++) {
        struct raft_message *m =
            raft_message_push(r, pre ? RAFT_MSG_PRE_VOTE : RAFT_MSG_VOTE, r->peers[i].id);
        if (!m)
            continue;
        if (pre)
            m->term = r->term + 1; /* the term it would campaign in */
        m->log_index = raft_log_last(r);
        m->log_term = raft_log_term(r, m->log_index);
    }
}

/* ---- replication (leader) ----------------------------------------------------------- */

/* 3.5: AppendEntries from nextIndex, batched by the configured bounds; doubles as the
 * heartbeat (3.4) and carries the current read round (6.4). Chapter 5: a follower that
 * needs entries the core no longer holds is sent the snapshot instead, at most once per
 * election timeout. */
static void raft_send_append(struct raft *r, struct raft_peer *p)
{
    uint64_t prev = p->next_index - 1;
    if (prev < r->log_offset) {
        if (!raft_snapshot_busy(r, p) && !r->update->snapshot_needed) {
            struct raft_message *m = raft_message_push(r, RAFT_MSG_SNAPSHOT, p->id);
            if (m) {
                m->log_index = r->snapshot_index;
                m->log_term = r->snapshot_term;
                r->update->snapshot_needed = true;
                r->update->snapshot_to = p->id;
                p->snapshot_pending = true;
                p->snapshot_sent_ms = r->now_ms;
            }
            return;
        }
        /* A snapshot is on its way: an empty APPEND at the oldest position the core
         * knows keeps the follower from starting elections meanwhile. */
        prev = r->log_offset;
    }
    struct raft_message *m = raft_message_push(r, RAFT_MSG_APPEND, p->id);
    if (!m)
        return;
    m->log_index = prev;
    m->log_term = raft_log_term(r, prev);
    m->commit_index = r->commit_index;
    m->read_round = r->read_round;
    if (prev + 1 > raft_log_last(r))
        p->flush_deferred = false; /* it has been sent everything */
    if (raft_snapshot_busy(r, p) || prev + 1 > raft_log_last(r))
        return;
    uint32_t max_n = r->config.max_entries_per_message ? r->config.max_entries_per_message : 1024;
    uint64_t max_b = r->config.max_bytes_per_message ? r->config.max_bytes_per_message : 1 << 20;
    uint64_t bytes = 0;
    uint32_t n = 0;
    for (uint64_t i = prev + 1; i <= raft_log_last(r) && n < max_n; i++) {
        uint64_t len = r->log[i - r->log_offset - 1].length;
        if (n > 0 && bytes + len > max_b)
            break; /* at least one entry, however large */
        bytes += len;
        n++;
    }
    r->out_first[r->out_count - 1] = prev + 1;
    m->entry_count = n;
    p->next_index = prev + 1 + n; /* optimistic: a rejection moves it back */
    if (p->next_index > raft_log_last(r))
        p->flush_deferred = false;
}

/* 3.6.2: the leader commits the highest index stored on a majority, but only if that
 * entry is of its current term (Figure 3.7: counting replicas of an older term's entry
 * is not enough). The leader counts itself only for what it has durably (3.8). */
static void raft_maybe_commit(struct raft *r)
{
    if (r->role != CLUSTER_ROLE_LEADER)
        return;
    uint64_t match[RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    match[n++] = r->persisted_index;
    for (uint32_t i = 0; i < r->peer_count; i++)
        match[n++] = r->peers[i].match_index;
    for (uint32_t i = 1; i < n; i++) /* insertion sort, descending */
        for (uint32_t j = i; j > 0 && match[j] > match[j - 1]; j--) {
            uint64_t t = match[j];
            match[j] = match[j - 1];
            match[j - 1] = t;
        }
    uint64_t index = match[r->majority - 1];
    if (index <= r->commit_index)
        return;
#if CORRAL_CANARY == 3
    r->commit_index = index; /* canary 3: an older term's entry commits by counting */
#else
    if (raft_log_term(r, index) == r->term)
        r->commit_index = index;
#endif
}

/* 6.4: serve the reads whose heartbeat round a majority answered, once the leader has
 * committed an entry of its own term (before that it does not know the commit index). */
static void raft_reads_check(struct raft *r)
{
    if (r->role != CLUSTER_ROLE_LEADER || r->read_count == 0)
        return;
    if (raft_log_term(r, r->commit_index) != r->term)
        return;
    uint32_t served = 0;
    for (; served < r->read_count; served++) {
        struct raft_pending_read *q = &r->reads[served];
        uint32_t acks = 1;
        for (uint32_t i = 0; i < r->peer_count; i++)
            if (r->peers[i].acked_round >= q->round)
                acks++;
        if (acks < r->majority)
            break; /* rounds increase along the array: later reads wait too */
        raft_read_state_push(r, q->read_id, q->index ? q->index : r->commit_index);
    }
    memmove(r->reads, r->reads + served, (r->read_count - served) * sizeof *r->reads);
    r->read_count -= served;
}

static int raft_read_index(struct raft *r, uint64_t read_id)
{
    if (r->role != CLUSTER_ROLE_LEADER) {
        raft_read_state_push(r, read_id, 0); /* the host forwards it to the leader */
        return CLUSTER_OK;
    }
#if CORRAL_CANARY == 4
    raft_read_state_push(r, read_id, r->commit_index); /* canary 4: no quorum round */
    return CLUSTER_OK;
#endif
    if (r->read_count == r->read_cap) {
        uint32_t cap = r->read_cap ? r->read_cap * 2 : 16;
        struct raft_pending_read *p = realloc(r->reads, cap * sizeof *p);
        if (!p)
            return CLUSTER_E_NO_MEMORY;
        r->reads = p;
        r->read_cap = cap;
    }
    bool term_committed = raft_log_term(r, r->commit_index) == r->term;
    r->reads[r->read_count++] =
        (struct raft_pending_read){.read_id = read_id,
                                   .index = term_committed ? r->commit_index : 0,
                                   .round = ++r->read_round};
    /* A fresh heartbeat round: acks of it prove no other leader had been elected when
     * the read arrived. A cluster of one is its own majority. */
    raft_broadcast_append(r);
    raft_reads_check(r);
    return CLUSTER_OK;
}

/* ---- message handlers --------------------------------------------------------------- */

/* 3.6.1: a voter denies its vote to a candidate whose log is less up to date: compare
 * the last entries' terms, then the lengths. */
static bool raft_log_up_to_date(const struct raft *r, const struct raft_message *m)
{
    uint64_t last = raft_log_last(r);
    uint64_t last_term = raft_log_term(r, last);
    return m->log_term > last_term || (m->log_term == last_term && m->log_index >= last);
}

static void raft_on_pre_vote(struct raft *r, const struct raft_message *m)
{
    /* 9.6: grant only if the candidate's log is up to date and this member has not heard
     * from a leader within the election timeout (a leader counts itself as heard). */
    bool heard =
        r->role == CLUSTER_ROLE_LEADER ||
        (r->leader_heard && r->now_ms < r->leader_heard_ms + r->config.election_timeout_ms);
    bool grant = m->term > r->term && !heard && raft_log_up_to_date(r, m);
    struct raft_message *out = raft_message_push(r, RAFT_MSG_PRE_VOTE_RESPONSE, m->from);
    if (!out)
        return;
    out->granted = grant;
    out->term = grant ? m->term : r->term;
}

static void raft_on_vote(struct raft *r, const struct raft_message *m)
{
    /* 3.4: one vote per term, first come first served, to an up-to-date log (3.6.1). The
     * grant reaches the host in the same update as hard_state_changed, and the host
     * persists the vote before sending (3.8). */
    bool grant = r->role != CLUSTER_ROLE_LEADER && (r->voted_for == 0 || r->voted_for == m->from) &&
                 raft_log_up_to_date(r, m);
    if (grant) {
        if (r->role != CLUSTER_ROLE_FOLLOWER)
            raft_become_follower(r, r->term, 0); /* a pre-candidate gives up */
        raft_hard_state_set(r, r->term, m->from);
        raft_election_timer_reset(r);
    }
    struct raft_message *out = raft_message_push(r, RAFT_MSG_VOTE_RESPONSE, m->from);
    if (out)
        out->granted = grant;
}

static void raft_on_vote_response(struct raft *r, const struct raft_message *m, bool pre)
{
    if (r->role != CLUSTER_ROLE_CANDIDATE || r->pre_candidate != pre || !m->granted)
        return;
    if (m->term != (pre ? r->term + 1 : r->term))
        return;
    struct raft_peer *p = raft_peer_find(r, m->from);
    if (p->vote_granted)
        return; /* a duplicate */
    p->vote_granted = true;
    if (++r->votes < r->majority)
        return;
    if (pre) {
        raft_campaign(r, false);
    } else {
        raft_become_leader(r);
        raft_maybe_commit(r);
    }
}

static void raft_append_respond(struct raft *r, uint64_t to, bool success, uint64_t match,
                                uint64_t round)
{
    struct raft_message *out = raft_message_push(r, RAFT_MSG_APPEND_RESPONSE, to);
    if (!out)
        return;
    out->granted = success;
    out->match_index = match;
    out->read_round = round;
}

/* The leader of this term was heard from: follow it and restart the election timer. */
static void raft_leader_heard(struct raft *r, uint64_t leader)
{
    if (r->role != CLUSTER_ROLE_FOLLOWER || r->leader_id != leader)
        raft_become_follower(r, r->term, leader);
    r->leader_heard = true;
    r->leader_heard_ms = r->now_ms;
    raft_election_timer_reset(r);
}

static int raft_on_append(struct raft *r, const struct raft_message *m)
{
    if (r->role == CLUSTER_ROLE_LEADER)
        return CLUSTER_E_INVALID; /* two leaders in one term: Election Safety broken */
    raft_leader_heard(r, m->from);
    if (r->install_pending && r->now_ms < r->install_deadline_ms)
        return CLUSTER_OK; /* the snapshot comes first; the leader will retry */
    r->install_pending = false;

    /* 3.5 consistency check: the entry before the new ones must match. Positions at or
     * before log_offset are committed (covered by a snapshot), hence match. */
    uint64_t prev = m->log_index;
    if (prev > raft_log_last(r) ||
        (prev > r->log_offset && raft_log_term(r, prev) != m->log_term)) {
        /* Fast backtracking: the hint lets the leader skip to our last index at once. */
        uint64_t hint = prev - 1 < raft_log_last(r) ? prev - 1 : raft_log_last(r);
        raft_append_respond(r, m->from, false, hint, m->read_round);
        return CLUSTER_OK;
    }
    for (uint32_t k = 0; k < m->entry_count; k++) {
        const struct raft_entry *e = &m->entries[k];
        uint64_t index = prev + 1 + k;
        if (index <= r->log_offset)
            continue;
        if (index <= raft_log_last(r)) {
            if (raft_log_term(r, index) == e->term)
                continue; /* already have it (a duplicate or reordered APPEND) */
                          /* 3.5: a conflict: delete the existing entry and all that follow it. */
#if CORRAL_CANARY == 2
            /* canary 2: overwrite in place and keep the divergent suffix. The host is told
             * to rewrite from here on, so its log mirrors the core's. */
            assert(index > r->commit_index);
            struct raft_entry *slot = &r->log[index - r->log_offset - 1];
            uint8_t *copy = e->length ? malloc(e->length) : NULL;
            if (e->length && !copy)
                return CLUSTER_E_NO_MEMORY;
            if (copy)
                memcpy(copy, e->data, e->length);
            free((void *)slot->data);
            *slot = (struct raft_entry){.term = e->term, .data = copy, .length = e->length};
            if (r->update->truncate_after == RAFT_NO_TRUNCATE ||
                r->update->truncate_after > index - 1)
                r->update->truncate_after = index - 1;
            if (r->persisted_index > index - 1)
                r->persisted_index = index - 1;
            if (r->update_first == 0 || r->update_first > index)
                r->update_first = index;
            continue;
#else
            raft_log_truncate(r, index - 1);
#endif
        }
        int rc = raft_log_append(r, e->term, e->data, e->length);
        if (rc != CLUSTER_OK)
            return rc;
    }
    uint64_t match = prev + m->entry_count;
    if (match < r->log_offset)
        match = r->log_offset;
    /* 3.5: the follower's commit index follows the leader's, but never beyond what this
     * APPEND verified to match. */
    uint64_t commit = m->commit_index < match ? m->commit_index : match;
    if (commit > r->commit_index)
        r->commit_index = commit;

#if CORRAL_CANARY == 1
    raft_append_respond(r, m->from, true, match, m->read_round); /* canary 1: not durable */
    return CLUSTER_OK;
#endif
    /* 3.8: acknowledge only what is durable. If this APPEND added nothing new, the answer
     * goes at once; otherwise it waits for the PERSISTED event that covers it. */
    if (r->persisted_index >= match) {
        raft_append_respond(r, m->from, true, match, m->read_round);
    } else {
        if (!r->ack_pending || r->ack_to != m->from) {
            r->ack_match = 0;
            r->ack_round = 0;
        }
        r->ack_pending = true;
        r->ack_to = m->from;
        if (match > r->ack_match)
            r->ack_match = match;
        if (m->read_round > r->ack_round)
            r->ack_round = m->read_round;
    }
    return CLUSTER_OK;
}

/* With config.appends_on_flush, a follower that has been sent everything before the
 * unflushed proposals gets them with the next FLUSH, not with the answer to its last
 * APPEND: the host's flush is what gathers a whole log batch into one message. */
static bool raft_peer_waits_for_flush(const struct raft *r, const struct raft_peer *p)
{
    return p->flush_deferred ||
           (r->config.appends_on_flush && r->flush_from != 0 && p->next_index >= r->flush_from);
}

static void raft_on_append_response(struct raft *r, const struct raft_message *m)
{
    if (r->role != CLUSTER_ROLE_LEADER)
        return;
    struct raft_peer *p = raft_peer_find(r, m->from);
    p->last_heard_ms = r->now_ms;
    if (m->read_round > p->acked_round)
        p->acked_round = m->read_round;
    if (m->granted) {
        if (m->match_index > raft_log_last(r))
            return; /* cannot be: defensive against a confused peer */
        if (m->match_index > p->match_index) {
            p->match_index = m->match_index;
            raft_maybe_commit(r);
        }
        if (p->match_index >= r->log_offset)
            p->snapshot_pending = false; /* it has what the snapshot would bring */
        if (p->next_index <= p->match_index)
            p->next_index = p->match_index + 1;
        /* A follower catching up gets a small window of batches in flight, not one
         * batch per round trip (and disk sync). */
        for (int k = 0; k < RAFT_PIPELINE && p->next_index <= raft_log_last(r) &&
                        !raft_snapshot_busy(r, p) && !raft_peer_waits_for_flush(r, p);
             k++)
            raft_send_append(r, p);
    } else if (!raft_snapshot_busy(r, p)) {
        /* Back up, using the follower's hint, but never below what is known to match. */
        uint64_t next = p->next_index - 1;
        if (m->match_index + 1 < next)
            next = m->match_index + 1;
        if (next < p->match_index + 1)
            next = p->match_index + 1;
        p->next_index = next;
        raft_send_append(r, p);
    }
    raft_reads_check(r);
}

static void raft_on_snapshot(struct raft *r, const struct raft_message *m)
{
    if (r->role == CLUSTER_ROLE_LEADER)
        return;
    raft_leader_heard(r, m->from);
    /* Chapter 5 (5.1, InstallSnapshot step 6): a follower whose log already holds the
     * snapshot's last entry keeps its log: the entries after it may be ones it has
     * acknowledged, and so counted towards a commit; discarding them would lose
     * committed entries. Past the commit index, the same holds. */
    if (m->log_index <= r->commit_index ||
        (m->log_index > r->log_offset && raft_log_term(r, m->log_index) == m->log_term)) {
        /* Already has it. If that much is durable here, say so, so the leader moves on;
         * otherwise the leader asks again later. */
        if (m->log_index <= r->persisted_index) {
            struct raft_message *out = raft_message_push(r, RAFT_MSG_SNAPSHOT_RESPONSE, m->from);
            if (out) {
                out->granted = true;
                out->match_index = m->log_index;
            }
        }
        return;
    }
    r->install_pending = true;
    r->install_index = m->log_index;
    r->install_from = m->from;
    r->install_deadline_ms = r->now_ms + 4ull * r->config.election_timeout_ms;
    r->update->install_snapshot = true;
    r->update->install_index = m->log_index;
    r->update->install_term = m->log_term;
}

static void raft_on_snapshot_response(struct raft *r, const struct raft_message *m)
{
    if (r->role != CLUSTER_ROLE_LEADER)
        return;
    struct raft_peer *p = raft_peer_find(r, m->from);
    p->last_heard_ms = r->now_ms;
    p->snapshot_pending = false;
    if (m->granted && m->match_index <= raft_log_last(r)) {
        if (m->match_index > p->match_index) {
            p->match_index = m->match_index;
            raft_maybe_commit(r);
        }
        p->next_index = p->match_index + 1;
        raft_send_append(r, p);
    }
    raft_reads_check(r);
}

static bool raft_message_valid(const struct raft *r, const struct raft_message *m)
{
    if (!m || m->to != r->config.self_id || m->from == r->config.self_id)
        return false;
    if (m->type < RAFT_MSG_PRE_VOTE || m->type > RAFT_MSG_TIMEOUT_NOW)
        return false;
    if (m->entry_count && (!m->entries || m->type != RAFT_MSG_APPEND))
        return false;
    for (uint32_t i = 0; i < r->peer_count; i++)
        if (r->peers[i].id == m->from)
            return true;
    return false;
}

static int raft_receive(struct raft *r, const struct raft_message *m)
{
    if (!raft_message_valid(r, m))
        return CLUSTER_E_INVALID;
    if (m->term > r->term) {
        /* 3.3: a higher term makes anyone a follower, except a pre-vote (9.6), which
         * changes no term, and its grant, which carries the term to be. */
        bool pre =
            m->type == RAFT_MSG_PRE_VOTE || (m->type == RAFT_MSG_PRE_VOTE_RESPONSE && m->granted);
        if (!pre) {
            bool from_leader = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT ||
                               m->type == RAFT_MSG_TIMEOUT_NOW;
            raft_become_follower(r, m->term, from_leader ? m->from : 0);
        }
    } else if (m->term < r->term) {
        /* A stale sender. Answer those that would otherwise keep trying, with our term,
         * so a deposed leader or candidate steps down. */
        struct raft_message *out = NULL;
        if (m->type == RAFT_MSG_APPEND)
            out = raft_message_push(r, RAFT_MSG_APPEND_RESPONSE, m->from);
        else if (m->type == RAFT_MSG_SNAPSHOT)
            out = raft_message_push(r, RAFT_MSG_SNAPSHOT_RESPONSE, m->from);
        else if (m->type == RAFT_MSG_PRE_VOTE)
            out = raft_message_push(r, RAFT_MSG_PRE_VOTE_RESPONSE, m->from);
        else if (m->type == RAFT_MSG_VOTE)
            out = raft_message_push(r, RAFT_MSG_VOTE_RESPONSE, m->from);
        if (out)
            out->match_index = raft_log_last(r);
        return CLUSTER_OK;
    }
    switch (m->type) {
    case RAFT_MSG_PRE_VOTE:
        raft_on_pre_vote(r, m);
        break;
    case RAFT_MSG_PRE_VOTE_RESPONSE:
        raft_on_vote_response(r, m, true);
        break;
    case RAFT_MSG_VOTE:
        raft_on_vote(r, m);
        break;
    case RAFT_MSG_VOTE_RESPONSE:
        raft_on_vote_response(r, m, false);
        break;
    case RAFT_MSG_APPEND:
        return raft_on_append(r, m);
    case RAFT_MSG_APPEND_RESPONSE:
        raft_on_append_response(r, m);
        break;
    case RAFT_MSG_SNAPSHOT:
        raft_on_snapshot(r, m);
        break;
    case RAFT_MSG_SNAPSHOT_RESPONSE:
        raft_on_snapshot_response(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        /* 3.10: the leader hands over: campaign at once, skipping pre-vote (the leader
         * asked for it, so there is nothing to protect it from). */
        if (r->role == CLUSTER_ROLE_FOLLOWER && m->from == r->leader_id)
            raft_campaign(r, false);
        break;
    }
    return CLUSTER_OK;
}

/* ---- events ------------------------------------------------------------------------- */

static void raft_tick(struct raft *r)
{
    if (r->role == CLUSTER_ROLE_LEADER) {
        /* 6.2 check-quorum: a leader that has not heard from a majority within an
         * election timeout steps down, so a partitioned leader stops taking writes and
         * its followers' pre-votes can succeed elsewhere. */
        if (r->now_ms >= r->quorum_check_ms) {
            if (!raft_has_quorum(r, r->now_ms)) {
                raft_become_follower(r, r->term, 0);
                return;
            }
            r->quorum_check_ms = r->now_ms + r->config.election_timeout_ms;
        }
        if (r->now_ms >= r->heartbeat_due_ms)
            raft_broadcast_append(r);
        return;
    }
    if (r->install_pending && r->now_ms >= r->install_deadline_ms)
        r->install_pending = false;
    if (r->now_ms >= r->election_deadline_ms)
        raft_campaign(r, r->config.pre_vote);
}

static void raft_on_persisted(struct raft *r, const struct raft_event *ev)
{
    uint64_t index = ev->persisted_index;
    if (index > raft_log_last(r))
        return; /* about entries since truncated */
    if (index > r->log_offset && raft_log_term(r, index) != ev->persisted_term)
        return; /* a stale report about entries since replaced */
    if (index > r->persisted_index)
        r->persisted_index = index;
    /* 3.8: the leader now counts itself for these; a follower may now acknowledge. */
    raft_maybe_commit(r);
    if (r->ack_pending && r->persisted_index >= r->ack_match) {
        if (r->role == CLUSTER_ROLE_FOLLOWER && r->leader_id == r->ack_to)
            raft_append_respond(r, r->ack_to, true, r->ack_match, r->ack_round);
        r->ack_pending = false;
    }
}

static int raft_on_snapshot_taken(struct raft *r, const struct raft_event *ev)
{
    uint64_t index = ev->snapshot_index;
    if (index > r->commit_index)
        return CLUSTER_E_INVALID; /* a snapshot holds applied, hence committed, state */
    if (index <= r->snapshot_index)
        return CLUSTER_OK;
    uint64_t term = raft_log_term(r, index);
    if (term != UINT64_MAX && term != ev->snapshot_term)
        return CLUSTER_E_INVALID;
    r->snapshot_index = index;
    r->snapshot_term = ev->snapshot_term;
    raft_log_compact(r, index > ev->trailing ? index - ev->trailing : 0);
    return CLUSTER_OK;
}

static int raft_on_snapshot_installed(struct raft *r, const struct raft_event *ev)
{
    uint64_t index = ev->snapshot_index;
    if (index <= r->commit_index) {
        r->install_pending = false;
        return CLUSTER_E_INVALID; /* would move the state machine backwards */
    }
    /* Chapter 5: the snapshot replaces the whole log (the host discarded its log too). */
    raft_log_clear(r, index, ev->snapshot_term);
    r->snapshot_index = index;
    r->snapshot_term = ev->snapshot_term;
    r->commit_index = index;
    r->persisted_index = index;
    r->ack_pending = false;
    if (r->install_pending && r->install_index == index && r->role == CLUSTER_ROLE_FOLLOWER &&
        r->leader_id == r->install_from) {
        struct raft_message *out = raft_message_push(r, RAFT_MSG_SNAPSHOT_RESPONSE, r->leader_id);
        if (out) {
            out->granted = true;
            out->match_index = index;
        }
    }
    r->install_pending = false;
    return CLUSTER_OK;
}

/* The proposals since the last flush, in one APPEND to each follower that had been sent
 * everything before them (pipelined: only to peers that are caught up), from where that
 * follower stands: a heartbeat may have carried the first of them already, and the
 * answer to it left the rest to this flush (raft_peer_waits_for_flush), so a follower
 * past flush_from is sent what it lacks, not skipped. A follower sent everything has
 * nothing to get; one behind flush_from is served by its answers.
 *
 * With config.appends_quorum_first, only majority - 1 of those followers get the
 * entries now: with the leader's own log that is a majority. (The price: a commit
 * waits for the chosen follower's sync, not for the faster of two; a slow sync there
 * delays it until the next flush reaches the others.) The others are left to a later
 * flush (flush_deferred), which sends them two flushes' entries in one APPEND; a flush
 * with nothing new (the host's, when its log is idle or a bounded wait has passed:
 * raft_flush_due) sends only what was left. The followers left out first are sent
 * first the next time, so they take turns: in a 3-member cluster each follower gets
 * one APPEND, makes one sync and sends one answer per two log batches of the
 * leader's, and the leader sends and hears half as many messages. Why: on one shared
 * core (tools/bench, 3 members on CPU 0) a follower's cost is mostly per message and
 * per sync (context switches in nanomsg's threads and the log worker), not per entry;
 * alternated A/B at 32 writers, followers synced 24-27 sets per batch instead of 16
 * and cost 10.1-11.6 us of CPU per set instead of 13.8-14.6.
 *
 * Durability and safety are untouched: a commit still needs a majority's durable
 * copies, and when entries are sent is the leader's to choose (3.5). Only liveness
 * depends on the chosen followers answering, so a follower is chosen to carry a
 * commit only if it has answered everything sent to it; otherwise the flush goes to
 * every caught-up follower. A follower that has just died thus costs at most one flush
 * of delay (until its silence shows) before the others get every flush at once. The
 * same holds for the leader itself: while its own log write lags (fdatasync stalls of
 * 60-100 ms occur on this VM's disk), every flush goes to all followers, which then
 * commit alone; otherwise each batch during such a stall would wait for the host's
 * bounded wait and next loop turn before its second follower got it. */
static bool raft_peer_keeps_up(const struct raft_peer *p)
{
    return p->match_index + 1 >= p->next_index;
}

static void raft_flush(struct raft *r)
{
    uint64_t from = r->flush_from;
    r->flush_from = 0;
    if (r->role != CLUSTER_ROLE_LEADER)
        return;
    uint64_t last = raft_log_last(r);
    if (from > last)
        from = 0;
    /* The followers this flush is for, in turn order from flush_turn, the ones a
     * previous flush left out first. */
    struct raft_peer *due[RAFT_MAX_MEMBERS - 1];
    uint32_t due_count = 0, left_out_count = 0;
    for (uint32_t k = 0; k < r->peer_count; k++) {
        struct raft_peer *p = &r->peers[(k + r->flush_turn) % r->peer_count];
        bool waits = p->flush_deferred || (from != 0 && p->next_index >= from);
        if (!waits || p->next_index > last || raft_snapshot_busy(r, p)) {
            p->flush_deferred = false; /* caught up, or served by its answers */
            continue;
        }
        if (p->flush_deferred) {
            memmove(due + left_out_count + 1, due + left_out_count,
                    (due_count - left_out_count) * sizeof *due);
            due[left_out_count++] = p;
        } else {
            due[due_count] = p;
        }
        due_count++;
    }
    uint32_t now_count = due_count;
    uint32_t needed = r->majority - 1;
    /* The leader keeps up if everything before this flush's entries is durable here
     * (see above raft_peer_keeps_up). */
    bool leader_keeps_up = r->persisted_index + 1 >= from;
    if (r->config.appends_quorum_first && from != 0 && due_count > needed && leader_keeps_up) {
        bool chosen_keep_up = true;
        for (uint32_t k = 0; k < needed; k++)
            chosen_keep_up = chosen_keep_up && raft_peer_keeps_up(due[k]);
        if (chosen_keep_up)
            now_count = needed;
        r->flush_turn++;
    }
    for (uint32_t k = 0; k < due_count; k++) {
        if (k < now_count)
            raft_send_append(r, due[k]);
        else
            due[k]->flush_deferred = true;
    }
}

static int raft_propose(struct raft *r, const struct raft_event *ev, uint64_t *proposed_index)
{
    if (r->role != CLUSTER_ROLE_LEADER)
        return CLUSTER_E_NOT_LEADER;
    if (ev->proposal_length && !ev->proposal)
        return CLUSTER_E_INVALID;
    int rc = raft_log_append(r, r->term, ev->proposal, ev->proposal_length);
    if (rc != CLUSTER_OK)
        return rc;
    if (proposed_index)
        *proposed_index = raft_log_last(r);
    if (r->flush_from == 0)
        r->flush_from = raft_log_last(r);
    if (!r->config.appends_on_flush)
        raft_flush(r); /* each entry on its own, at once */
    return CLUSTER_OK;
}

static int raft_transfer(struct raft *r, uint64_t to)
{
    if (r->role != CLUSTER_ROLE_LEADER)
        return CLUSTER_E_NOT_LEADER;
    if (!raft_peer_find(r, to))
        return CLUSTER_E_INVALID;
    raft_message_push(r, RAFT_MSG_TIMEOUT_NOW, to);
    return CLUSTER_OK;
}

/* Fills the update from the core's state once the event has been handled. */
static void raft_update_finish(struct raft *r, enum cluster_role role0, uint64_t leader0)
{
    struct raft_update *u = r->update;
    u->hard_state_changed = r->hard_state_changed;
    u->term = r->term;
    u->voted_for = r->voted_for;
    if (r->update_first && r->update_first <= raft_log_last(r)) {
        assert(r->update_first > r->log_offset);
        u->first_index = r->update_first;
        u->entries = &r->log[r->update_first - r->log_offset - 1];
        u->entry_count = raft_log_last(r) - r->update_first + 1;
    } else {
        u->first_index =
            u->truncate_after != RAFT_NO_TRUNCATE ? u->truncate_after + 1 : raft_log_last(r) + 1;
    }
    for (uint32_t i = 0; i < r->out_count; i++) {
        struct raft_message *m = &r->out[i];
        if (m->entry_count) {
            assert(r->out_first[i] > r->log_offset);
            assert(r->out_first[i] + m->entry_count - 1 <= raft_log_last(r));
            m->entries = &r->log[r->out_first[i] - r->log_offset - 1];
        }
    }
    u->messages = r->out;
    u->message_count = r->out_count;
    u->commit_index = r->commit_index;
    u->read_states = r->read_out;
    u->read_state_count = r->read_out_count;
    u->role = r->role;
    u->leader_id = r->leader_id;
    u->role_changed = r->role != role0 || r->leader_id != leader0;
    if (r->role == CLUSTER_ROLE_LEADER)
        u->next_tick_ms = r->heartbeat_due_ms < r->quorum_check_ms || r->config.member_count == 1
                              ? r->heartbeat_due_ms
                              : r->quorum_check_ms;
    else
        u->next_tick_ms = r->install_pending && r->install_deadline_ms < r->election_deadline_ms
                              ? r->install_deadline_ms
                              : r->election_deadline_ms;
    if (u->next_tick_ms <= r->now_ms)
        u->next_tick_ms = r->now_ms + 1;
}

int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *u,
              uint64_t *proposed_index)
{
    for (int i = 0; i < RAFT_FREE_PER_STEP && r->graveyard_count > 0; i++)
        free((void *)r->graveyard[--r->graveyard_count]);
    memset(u, 0, sizeof *u);
    u->truncate_after = RAFT_NO_TRUNCATE;
    r->update = u;
    r->out_count = 0;
    r->read_out_count = 0;
    r->update_first = 0;
    r->hard_state_changed = false;
    r->no_memory = false;
    uint64_t gap_ms = ev->now_ms > r->now_ms ? ev->now_ms - r->now_ms : 0;
    if (ev->now_ms > r->now_ms)
        r->now_ms = ev->now_ms; /* time never runs backwards here */
    /* The host steps a leader at least every heartbeat; a much longer gap means it did
     * not run the leader (descheduled by a loaded machine, stopped, swapping). The
     * followers' answers of that time are unread (a host may step the tick, or one
     * peer's message, before the rest), so their last_heard says nothing: check-quorum
     * judges one election timeout from now, when the heartbeats sent now have had their
     * chance. Bounded: an unreachable majority still deposes it then, and followers that
     * timed out meanwhile elect a leader whose higher term deposes it sooner. */
    if (r->role == CLUSTER_ROLE_LEADER &&
        gap_ms > r->config.heartbeat_ms + r->config.election_timeout_ms / 2)
        r->quorum_check_ms = r->now_ms + r->config.election_timeout_ms;
    enum cluster_role role0 = r->role;
    uint64_t leader0 = r->leader_id;

    /* A cluster of one is its own majority: it wins its election at once. */
    if (r->config.member_count == 1 && r->role != CLUSTER_ROLE_LEADER)
        raft_campaign(r, false);

    int rc = CLUSTER_OK;
    switch (ev->type) {
    case RAFT_EVENT_TICK:
        raft_tick(r);
        break;
    case RAFT_EVENT_RECEIVE:
        rc = raft_receive(r, ev->message);
        break;
    case RAFT_EVENT_PERSISTED:
        raft_on_persisted(r, ev);
        break;
    case RAFT_EVENT_PROPOSE:
        rc = raft_propose(r, ev, proposed_index);
        break;
    case RAFT_EVENT_SNAPSHOT_TAKEN:
        rc = raft_on_snapshot_taken(r, ev);
        break;
    case RAFT_EVENT_SNAPSHOT_INSTALLED:
        rc = raft_on_snapshot_installed(r, ev);
        break;
    case RAFT_EVENT_READ_INDEX:
        rc = raft_read_index(r, ev->read_id);
        break;
    case RAFT_EVENT_TRANSFER:
        rc = raft_transfer(r, ev->transfer_to);
        break;
    case RAFT_EVENT_FLUSH:
        raft_flush(r);
        break;
    default:
        rc = CLUSTER_E_INVALID;
    }
    raft_reads_check(r);
    raft_update_finish(r, role0, leader0);
    if (rc == CLUSTER_OK && r->no_memory)
        rc = CLUSTER_E_NO_MEMORY;
    return rc;
}

/* ---- life cycle and views ----------------------------------------------------------- */

struct raft *raft_create(const struct raft_config *config, const struct raft_start *start)
{
    if (!config || !start || config->member_count < 1 || config->member_count > RAFT_MAX_MEMBERS ||
        config->self_id == 0 || config->heartbeat_ms == 0 || config->election_timeout_ms == 0 ||
        !config->random)
        return NULL;
    if (start->entry_count && !start->entries)
        return NULL;
    struct raft *r = calloc(1, sizeof *r); /* owned by the caller: raft_destroy */
    if (!r)
        return NULL;
    r->config = *config;
    r->majority = config->member_count / 2 + 1;
    bool self_found = false;
    for (uint32_t i = 0; i < config->member_count; i++) {
        uint64_t id = config->members[i];
        for (uint32_t j = 0; j < i; j++)
            if (config->members[j] == id)
                goto fail;
        if (id == 0)
            goto fail;
        if (id == config->self_id)
            self_found = true;
        else
            r->peers[r->peer_count++].id = id;
    }
    if (!self_found)
        goto fail;
    r->term = start->term;
    r->voted_for = start->voted_for;
    r->log_offset = start->snapshot_index;
    r->log_offset_term = start->snapshot_term;
    r->snapshot_index = start->snapshot_index;
    r->snapshot_term = start->snapshot_term;
    r->commit_index = start->snapshot_index;
    for (uint64_t i = 0; i < start->entry_count; i++)
        if (raft_log_append(r, start->entries[i].term, start->entries[i].data,
                            start->entries[i].length) != CLUSTER_OK)
            goto fail;
    r->update_first = 0;
    r->persisted_index = raft_log_last(r); /* what the host recovered is durable */
    r->role = CLUSTER_ROLE_FOLLOWER;
    r->now_ms = start->now_ms;
    raft_election_timer_reset(r);
    return r;
fail:
    raft_destroy(r);
    return NULL;
}

void raft_destroy(struct raft *r)
{
    if (!r)
        return;
    for (uint64_t i = 0; i < r->log_count; i++)
        free((void *)r->log[i].data);
    while (r->graveyard_count > 0)
        free((void *)r->graveyard[--r->graveyard_count]);
    free(r->graveyard);
    free(r->log);
    free(r->reads);
    free(r->read_out);
    free(r);
}

enum cluster_role raft_role(const struct raft *r)
{
    return r->role;
}

uint64_t raft_term(const struct raft *r)
{
    return r->term;
}

uint64_t raft_leader(const struct raft *r)
{
    return r->leader_id;
}

bool raft_flush_due(const struct raft *r)
{
    if (r->flush_from != 0)
        return true;
    if (r->role != CLUSTER_ROLE_LEADER)
        return false;
    for (uint32_t i = 0; i < r->peer_count; i++)
        if (r->peers[i].flush_deferred)
            return true;
    return false;
}

uint64_t raft_commit_index(const struct raft *r)
{
    return r->commit_index;
}

uint64_t raft_last_index(const struct raft *r)
{
    return raft_log_last(r);
}

uint64_t raft_last_term(const struct raft *r)
{
    return raft_log_term(r, raft_log_last(r));
}

const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index)
{
    if (index <= r->log_offset || index > raft_log_last(r))
        return NULL;
    return &r->log[index - r->log_offset - 1];
}

uint64_t raft_match_index(const struct raft *r, uint64_t member)
{
    if (member == r->config.self_id)
        return r->persisted_index;
    for (uint32_t i = 0; i < r->peer_count; i++)
        if (r->peers[i].id == member)
            return r->role == CLUSTER_ROLE_LEADER ? r->peers[i].match_index : 0;
    return 0;
}

bool raft_member_recently_active(const struct raft *r, uint64_t member, uint64_t now_ms)
{
    if (member == r->config.self_id)
        return true;
    for (uint32_t i = 0; i < r->peer_count; i++)
        if (r->peers[i].id == member)
            return r->role == CLUSTER_ROLE_LEADER &&
                   now_ms < r->peers[i].last_heard_ms + r->config.election_timeout_ms;
    return false;
}

bool raft_has_quorum(const struct raft *r, uint64_t now_ms)
{
    if (r->role != CLUSTER_ROLE_LEADER)
        return false;
    uint32_t active = 1;
    for (uint32_t i = 0; i < r->peer_count; i++)
        if (raft_member_recently_active(r, r->peers[i].id, now_ms))
            active++;
    return active >= r->majority;
}
