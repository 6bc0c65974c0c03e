/* cluster.c: names of the roles (cluster.h). */
#include "cluster.h"

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
