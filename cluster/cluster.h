/* cluster.h: the replicated log, as the engine sees it.
 *
 * cluster/ replicates opaque entries and says which are committed; it knows nothing of
 * znodes or HTTP. The protocol core does no I/O: the host (the engine's pipeline)
 * appends entries to its own durable log, tells the core when they are durable, and
 * the core answers with the commit index. Time and randomness come in as arguments.
 *
 * This header is the seam between "appended" and "committed". Standalone mode is a
 * cluster of one member: an entry commits as soon as the local log has it durably.
 * Quorum mode puts a consensus protocol behind the same calls without the engine's
 * tree code changing.
 */
#ifndef CORRAL_CLUSTER_H
#define CORRAL_CLUSTER_H

#include <stdint.h>

/* cluster/'s own error codes (it must not know the engine's table). */
enum cluster_error {
    CLUSTER_OK = 0,
    CLUSTER_E_NOT_LEADER = -1, /* only the leader proposes */
    CLUSTER_E_NO_QUORUM = -2,  /* a majority is not reachable: nothing was proposed */
    CLUSTER_E_INVALID = -3,    /* a call that breaks the protocol's rules */
    CLUSTER_E_NO_MEMORY = -4,
};

enum cluster_role {
    CLUSTER_ROLE_STANDALONE,
    CLUSTER_ROLE_FOLLOWER,
    CLUSTER_ROLE_CANDIDATE,
    CLUSTER_ROLE_LEADER,
};

struct cluster;

/* A cluster of one member. term and last_index are what the local log holds after
 * recovery (0 when empty); everything in it is committed (it was durable, and this
 * member alone is the majority). Returns NULL when out of memory; owned by the caller
 * (cluster_destroy). */
struct cluster *cluster_create_standalone(uint64_t id, uint64_t term, uint64_t last_index);
void cluster_destroy(struct cluster *c);

/* Assigns the next log position to a new entry. On success *index and *term say where
 * the host must append it. Returns CLUSTER_OK, CLUSTER_E_NOT_LEADER or
 * CLUSTER_E_NO_QUORUM (nothing assigned). */
int cluster_propose(struct cluster *c, uint64_t *index, uint64_t *term);

/* The host's log holds every entry up to index durably. Returns the commit index,
 * which may have advanced. */
uint64_t cluster_persisted(struct cluster *c, uint64_t index);

uint64_t cluster_commit_index(const struct cluster *c);
uint64_t cluster_term(const struct cluster *c);
uint64_t cluster_self_id(const struct cluster *c);
uint64_t cluster_leader_id(const struct cluster *c); /* 0 when unknown */
enum cluster_role cluster_role_get(const struct cluster *c);
const char *cluster_role_name(enum cluster_role role);

#endif
