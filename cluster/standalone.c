/* standalone.c: the replicated log of a cluster of one member.
 *
 * The single member is always the leader and is, alone, a majority: an entry is
 * committed exactly when the local log has made it durable. Keeping this behind the
 * same calls as the quorum protocol is what makes standalone "a cluster of one" rather
 * than a second code path in the engine. */
#include "cluster.h"

#include <stdlib.h>

struct cluster {
    uint64_t id;
    uint64_t term;
    uint64_t last_index;   /* last position handed out */
    uint64_t commit_index; /* invariant: commit_index <= last_index */
};

struct cluster *cluster_create_standalone(uint64_t id, uint64_t term, uint64_t last_index)
{
    struct cluster *c = calloc(1, sizeof *c); /* owned by the caller */
    if (!c)
        return NULL;
    c->id = id;
    /* A restarted member starts a new term, as a Raft member would after winning its
     * own election; entries written before keep their old term. */
    c->term = term + 1;
    c->last_index = last_index;
    c->commit_index = last_index;
    return c;
}

void cluster_destroy(struct cluster *c)
{
    free(c);
}

int cluster_propose(struct cluster *c, uint64_t *index, uint64_t *term)
{
    *index = ++c->last_index;
    *term = c->term;
    return CLUSTER_OK;
}

uint64_t cluster_persisted(struct cluster *c, uint64_t index)
{
    if (index > c->last_index)
        index = c->last_index; /* defensive: the host cannot persist what was not proposed */
    if (index > c->commit_index)
        c->commit_index = index;
    return c->commit_index;
}

uint64_t cluster_commit_index(const struct cluster *c)
{
    return c->commit_index;
}

uint64_t cluster_term(const struct cluster *c)
{
    return c->term;
}

uint64_t cluster_self_id(const struct cluster *c)
{
    return c->id;
}

uint64_t cluster_leader_id(const struct cluster *c)
{
    return c->id;
}

enum cluster_role cluster_role_get(const struct cluster *c)
{
    (void)c;
    return CLUSTER_ROLE_STANDALONE;
}

const char *cluster_role_name(enum cluster_role role)
{
    switch (role) {
    case CLUSTER_ROLE_STANDALONE:
        return "standalone";
    case CLUSTER_ROLE_FOLLOWER:
        return "follower";
    case CLUSTER_ROLE_CANDIDATE:
        return "candidate";
    case CLUSTER_ROLE_LEADER:
        return "leader";
    }
    return "unknown";
}
