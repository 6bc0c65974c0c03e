/* raft.h: the consensus protocol core: Raft as in Ongaro's dissertation (2014).
 *
 * The core is a pure, deterministic state machine: raft_step(core, event, update)
 * takes one event (a tick with the current time, a message received, entries made
 * durable, a proposal) and fills an update with the actions the host must take
 * (persist term and vote, persist or truncate entries, send messages, apply committed
 * entries). It does no I/O, reads no clock and draws no random number of its own:
 * time comes in the events, randomness from config.random. That is what lets
 * tests/sim run a whole cluster in one process, deterministically, from a seed.
 *
 * What it implements (dissertation sections):
 *   3.4  leader election with randomized timeouts; 9.6 pre-vote (a member that cannot
 *        win does not disturb the cluster by raising its term);
 *   3.5  log replication, the log matching property, conflicting suffixes truncated;
 *   3.6.2 a leader commits only entries of its own term by counting replicas (earlier
 *        terms' entries commit indirectly); a new leader appends a no-op entry;
 *   3.8  persistent state: term and vote are durable before any message that depends
 *        on them is sent; a follower acknowledges entries only once they are durable;
 *        the leader counts itself only once its own log has them durably;
 *   5    log compaction: the core keeps entries after the last snapshot; a follower
 *        that needs older entries is sent the snapshot (the host transfers the bytes);
 *   6.4  read index for linearizable reads: the leader records its commit index, then
 *        confirms it is still leader with a heartbeat round answered by a majority.
 *
 * Entries are opaque bytes (the engine's txns). The index of an entry is the zxid;
 * the term is corral's "epoch".
 *
 * Refinements of this contract made with the implementation (raft.c):
 *   - PRE_VOTE carries term = the candidate's term + 1 and changes nobody's term; a
 *     granted PRE_VOTE_RESPONSE echoes that term. A pre-vote is granted only to an
 *     up-to-date log by a member that has not heard from a leader within T (9.6).
 *   - role_changed is set when the role or leader_id changed; role, leader_id, term and
 *     voted_for are always filled in.
 *   - A cluster of one becomes leader on its first step of any kind.
 *   - PERSISTED whose (persisted_index, persisted_term) no longer matches the core's log
 *     (entries since truncated) is ignored as stale.
 *   - Snapshots: a follower that already holds the announced (index, term) is not asked
 *     to install (5.1: its later entries may be acknowledged, hence committed); it
 *     answers SNAPSHOT_RESPONSE once that much is durable. install_snapshot is asked
 *     only for an index above the follower's commit index; the host then replaces its
 *     whole log by the snapshot and steps SNAPSHOT_INSTALLED (CLUSTER_E_INVALID if the
 *     index is not above the commit index), and the core answers the leader. While an
 *     install is pending (at most 4 election timeouts), APPENDs are not processed.
 *   - SNAPSHOT_TAKEN must not exceed the commit index (CLUSTER_E_INVALID).
 *   - Check-quorum (6.2): a leader steps down after an election timeout without hearing
 *     from a majority; raft_has_quorum says whether it currently has. The host steps a
 *     leader at least every heartbeat (next_tick_ms); after a step gap longer than a
 *     heartbeat plus half an election timeout (the host was not running it) the check is
 *     put off by one election timeout instead of judging by answers it could not read.
 *
 * Ownership: the core copies what it keeps. Everything an update points to is owned by
 * the core and valid until the next raft_step call on the same core.
 */
#ifndef CORRAL_RAFT_H
#define CORRAL_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"

#define RAFT_MAX_MEMBERS 7

enum raft_message_type {
    RAFT_MSG_PRE_VOTE = 1,
    RAFT_MSG_PRE_VOTE_RESPONSE = 2,
    RAFT_MSG_VOTE = 3,
    RAFT_MSG_VOTE_RESPONSE = 4,
    RAFT_MSG_APPEND = 5, /* AppendEntries, also the heartbeat */
    RAFT_MSG_APPEND_RESPONSE = 6,
    RAFT_MSG_SNAPSHOT = 7, /* "you need the snapshot at (index, term)": the
                              host transfers the bytes, see raft_update */
    RAFT_MSG_SNAPSHOT_RESPONSE = 8,
    RAFT_MSG_TIMEOUT_NOW = 9, /* leadership transfer (3.10), optional */
};

struct raft_entry {
    uint64_t term;
    const uint8_t *data; /* borrowed as described at the top */
    uint32_t length;
};

struct raft_message {
    enum raft_message_type type;
    uint64_t from;
    uint64_t to;
    uint64_t term;
    /* PRE_VOTE, VOTE: candidate's last log position. APPEND: the entry before
     * `entries`. SNAPSHOT: the snapshot's last included position. */
    uint64_t log_index;
    uint64_t log_term;
    /* APPEND: leader's commit index. */
    uint64_t commit_index;
    /* APPEND: entries following log_index. */
    const struct raft_entry *entries;
    uint32_t entry_count;
    /* *_RESPONSE: granted (votes) / success (append, snapshot). */
    bool granted;
    /* APPEND_RESPONSE: on success, the last index now matching the leader's log; on
     * failure, a hint: the follower's last index (so the leader can skip back fast). */
    uint64_t match_index;
    /* APPEND and APPEND_RESPONSE: the read-index round this heartbeat belongs to (0 =
     * none); echoed back, so the leader knows which reads a majority confirmed. */
    uint64_t read_round;
};

struct raft_config {
    uint64_t self_id;
    uint64_t members[RAFT_MAX_MEMBERS]; /* ids of all voting members, self included */
    uint32_t member_count;              /* 1..7; odd or even (majority = n/2 + 1) */
    uint32_t heartbeat_ms;              /* leader sends APPEND at least this often */
    uint32_t election_timeout_ms;       /* followers wait a random time in [T, 2T) */
    bool pre_vote;
    uint32_t max_entries_per_message; /* batching bound for APPEND; 0 = 1024 */
    uint32_t max_bytes_per_message;   /* and in bytes; 0 = 1 MiB */
    /* false: each PROPOSE sends its entry at once to the followers that are caught up.
     * true: it waits for RAFT_EVENT_FLUSH, which sends all entries proposed since the
     * last flush in one APPEND per follower (a caught-up follower's answer does not
     * send them either). A host that gathers proposals into one log write sets it and
     * steps FLUSH when that write starts; the followers then get one message and one
     * sync per log write of the leader's instead of one per entry. */
    bool appends_on_flush;
    /* With appends_on_flush: a FLUSH sends its entries at once only to as many caught-up
     * followers as a commit needs besides the leader (majority - 1), taking turns; the
     * others get them with a later flush, in one APPEND with the entries of that flush
     * (raft.c, raft_flush). Each follower then receives, syncs and answers once per two
     * log writes of the leader's in a 3-member cluster. Only members known to keep up
     * are relied on: if one of the chosen followers has not answered everything sent to
     * it, or the leader's own log lags behind the flush's entries, the flush goes to
     * every follower. */
    bool appends_quorum_first;
    /* The only source of randomness: returns a uniformly random 32-bit value. */
    uint32_t (*random)(void *arg);
    void *random_arg;
};

/* What the host recovered from disk at start. */
struct raft_start {
    uint64_t term;           /* persisted current term */
    uint64_t voted_for;      /* persisted vote in that term (0 = none) */
    uint64_t snapshot_index; /* last index in the snapshot loaded (0 = none) */
    uint64_t snapshot_term;
    /* Entries after the snapshot, as found in the durable log: index snapshot_index+1
     * onwards. Copied by raft_create. */
    const struct raft_entry *entries;
    uint64_t entry_count;
    uint64_t now_ms;
};

enum raft_event_type {
    RAFT_EVENT_TICK = 1,               /* time passed: now_ms */
    RAFT_EVENT_RECEIVE = 2,            /* message */
    RAFT_EVENT_PERSISTED = 3,          /* the host's log holds entries up to persisted_index
                                          (with persisted_term) durably, and the hard state asked
                                          for so far is durable */
    RAFT_EVENT_PROPOSE = 4,            /* append `proposal` as a new entry (leader only) */
    RAFT_EVENT_SNAPSHOT_TAKEN = 5,     /* the host's state machine made a snapshot up to
                                          snapshot_index/term: the core may forget entries
                                          before it (keeping `trailing` entries) */
    RAFT_EVENT_SNAPSHOT_INSTALLED = 6, /* the host received and installed the snapshot
                                          the leader announced (snapshot_index/term) */
    RAFT_EVENT_READ_INDEX = 7,         /* a linearizable read wants a read index; the
                                          answer comes in an update (read_states) */
    RAFT_EVENT_TRANSFER = 8,           /* leader: hand leadership to transfer_to */
    RAFT_EVENT_FLUSH = 9,              /* leader, with config.appends_on_flush: send the
                                          entries proposed since the last FLUSH */
};

struct raft_event {
    enum raft_event_type type;
    uint64_t now_ms; /* every event carries the time */
    const struct raft_message *message;
    uint64_t persisted_index;
    uint64_t persisted_term;
    const uint8_t *proposal;
    uint32_t proposal_length;
    uint64_t snapshot_index;
    uint64_t snapshot_term;
    uint64_t trailing;    /* SNAPSHOT_TAKEN: entries to keep before the snapshot */
    uint64_t read_id;     /* READ_INDEX: the host's id for the read */
    uint64_t transfer_to; /* TRANSFER */
};

struct raft_read_state {
    uint64_t read_id;
    uint64_t index; /* serve the read once applied >= index; 0 = failed (not leader) */
};

/* Actions for the host, in this order:
 *   1. if hard_state_changed: persist term and voted_for durably;
 *   2. if truncate_after != UINT64_MAX: remove entries after that index from the log;
 *      then append `entries` (first_index = truncate_after+1 or the log's next index)
 *      to the log; when they (and 1.) are durable, step RAFT_EVENT_PERSISTED;
 *   3. send `messages` — but only after 1. is durable. (Messages never depend on 2.:
 *      a follower's append response is emitted only on the PERSISTED event.)
 *   4. apply committed entries up to commit_index (the host reads them from its log);
 *   5. if snapshot_needed: the leader wants snapshot_to to receive the host's latest
 *      snapshot; the receiving host installs it, then steps SNAPSHOT_INSTALLED.
 */
struct raft_update {
    bool hard_state_changed;
    uint64_t term;
    uint64_t voted_for;

    uint64_t truncate_after; /* UINT64_MAX = nothing to truncate */
    uint64_t first_index;    /* index of entries[0] */
    const struct raft_entry *entries;
    uint64_t entry_count;

    const struct raft_message *messages;
    uint32_t message_count;

    uint64_t commit_index; /* may be unchanged */

    const struct raft_read_state *read_states;
    uint32_t read_state_count;

    bool snapshot_needed; /* leader: send the latest snapshot to snapshot_to */
    uint64_t snapshot_to;
    bool install_snapshot; /* follower: the leader says to install (index, term) */
    uint64_t install_index;
    uint64_t install_term;

    bool role_changed;
    enum cluster_role role;
    uint64_t leader_id; /* 0 = unknown */

    /* When the host should step RAFT_EVENT_TICK next at the latest. */
    uint64_t next_tick_ms;
};

struct raft;

/* Creates a core. Returns NULL on bad config or out of memory. Owned by the caller
 * (raft_destroy). config is copied. */
struct raft *raft_create(const struct raft_config *config, const struct raft_start *start);
void raft_destroy(struct raft *r);

/* Processes one event. update is overwritten. Returns CLUSTER_OK, or
 * CLUSTER_E_NOT_LEADER (PROPOSE/TRANSFER on a non-leader; nothing else changed),
 * CLUSTER_E_INVALID (malformed message, ignored), CLUSTER_E_NO_MEMORY. On a
 * successful PROPOSE, *proposed_index (if not NULL) receives the new entry's index. */
int raft_step(struct raft *r, const struct raft_event *event, struct raft_update *update,
              uint64_t *proposed_index);

/* Read-only views. */
enum cluster_role raft_role(const struct raft *r);
/* With config.appends_on_flush: entries were proposed since the last RAFT_EVENT_FLUSH, or
 * (appends_quorum_first) a follower still waits for entries a flush left to a later one. */
bool raft_flush_due(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_leader(const struct raft *r);
uint64_t raft_commit_index(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
uint64_t raft_last_term(const struct raft *r);
/* The entry at index if the core still holds it (borrowed until the next step),
 * else NULL (before the snapshot, or beyond the log). */
const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index);
/* Leader's view of a member: last index known to match (0 if unknown); whether it
 * answered within the last election timeout. */
uint64_t raft_match_index(const struct raft *r, uint64_t member);
bool raft_member_recently_active(const struct raft *r, uint64_t member, uint64_t now_ms);
/* True when this leader heard from a majority within the last election timeout:
 * a write proposed now may commit. A leader that cannot reach a majority answers
 * NO_QUORUM at once instead of accepting writes it cannot commit. */
bool raft_has_quorum(const struct raft *r, uint64_t now_ms);

/* Wire format of struct raft_message (raft_codec.c has the table): versioned,
 * little-endian, CRC-32C protected.
 *
 * raft_message_encode: on CLUSTER_OK, *buf is a malloc'd buffer of *length bytes owned
 * by the caller (free()). Returns CLUSTER_E_INVALID (bad type, entries NULL with a count)
 * or CLUSTER_E_NO_MEMORY.
 *
 * raft_message_decode: parses length bytes at buf into *m. Returns CLUSTER_E_INVALID for
 * anything malformed (short, unknown version or type, bad CRC, lengths that do not add
 * up), CLUSTER_E_NO_MEMORY. On CLUSTER_OK, when m->entry_count > 0, m->entries is a
 * malloc'd array owned by the caller (free((void *)m->entries)) whose entries' data
 * borrow buf: keep buf alive while they are used. */
int raft_message_encode(const struct raft_message *m, uint8_t **buf, size_t *length);
int raft_message_decode(const uint8_t *buf, size_t length, struct raft_message *m);

#endif
