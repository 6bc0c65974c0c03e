/* cluster.h: what every part of cluster/ shares: its error codes and the roles.
 *
 * cluster/ replicates opaque entries and says which are committed; it knows nothing of
 * znodes or HTTP. The consensus core (raft.h) is a pure step function: the host (the
 * engine's replication driver) appends entries to its own durable log, tells the core
 * when they are durable, and the core answers with messages to send and the commit
 * index. Standalone mode is the same core with one member: an entry commits as soon
 * as the local log has it durably. The transport (transport.h) carries the messages.
 */
#ifndef CORRAL_CLUSTER_H
#define CORRAL_CLUSTER_H

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

/* "standalone", "follower", "candidate", "leader" (static storage). */
const char *cluster_role_name(enum cluster_role role);

#endif
