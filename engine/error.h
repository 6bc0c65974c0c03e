/* error.h: the one error table of corral.
 *
 * Every module returns these codes as negative ints (0 = success). The table is an
 * X-macro so the code, its name and its message cannot drift apart (libuv's
 * UV_ERRNO_MAP idea). The HTTP status of each code is decided in exactly one switch
 * in api/ (api_error_status), which has no default so a new code without a status
 * does not compile.
 *
 * cluster/ keeps its own small table (cluster/cluster.h) because it must not know
 * this one; the engine maps those codes to NO_QUORUM / TIMEOUT. */
#ifndef CORRAL_ERROR_H
#define CORRAL_ERROR_H

#define CORRAL_ERROR_MAP(X)                                                                        \
    X(NO_NODE, 1, "node does not exist")                                                           \
    X(NODE_EXISTS, 2, "node already exists")                                                       \
    X(BAD_VERSION, 3, "expected version does not match")                                           \
    X(NOT_EMPTY, 4, "node has children")                                                           \
    X(NO_CHILDREN_FOR_EPHEMERALS, 5, "ephemeral nodes cannot have children")                       \
    X(BAD_ARGUMENTS, 6, "bad arguments")                                                           \
    X(SESSION_EXPIRED, 7, "session is unknown, closed or expired")                                 \
    X(NO_AUTH, 8, "not authorized")                                                                \
    X(NO_QUORUM, 9, "no quorum reachable; nothing was applied")                                    \
    X(TIMEOUT, 10, "write not confirmed in time; outcome unknown")                                 \
    X(BEHIND, 11, "server has not reached the requested zxid")                                     \
    X(PAYLOAD_TOO_LARGE, 12, "payload too large")                                                  \
    X(NO_MEMORY, 13, "out of memory")                                                              \
    X(IO, 14, "storage error")                                                                     \
    X(CORRUPT, 15, "corrupt data on disk")                                                         \
    X(SHUTTING_DOWN, 16, "server is shutting down")                                                \
    X(COMPACTED, 17, "requested history has been compacted")                                       \
    X(NOT_LEADER, 18, "this server is not the leader")                                             \
    X(NO_ROUTE, 19, "no such route")                                                               \
    X(METHOD_NOT_ALLOWED, 20, "method not allowed on this route")                                  \
    X(NO_WATCHER, 21, "no such watch")                                                             \
    X(NO_SPACE, 22, "the disk is (nearly) full: writes are refused until space is freed")

enum corral_error {
    CORRAL_OK = 0,
#define CORRAL_ERROR_ENUM(name, number, message) CORRAL_E_##name = -(number),
    CORRAL_ERROR_MAP(CORRAL_ERROR_ENUM)
#undef CORRAL_ERROR_ENUM
};

/* The stable name of a code ("NO_NODE"), as used in the HTTP error body. Returns
 * "UNKNOWN" for a value outside the table. Static storage, never freed. */
const char *corral_error_name(int code);

/* A one-line English description of a code. Static storage, never freed. */
const char *corral_error_message(int code);

#endif
