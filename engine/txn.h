/* txn.h: the transaction, the unit of replication.
 *
 * A client request is validated by the engine's prep step against the current state
 * plus the changes still in flight, and turned into a txn that is fully resolved:
 * the sequential name is chosen, the time is fixed, the session id is drawn. Applying
 * a txn is then a pure function of (state, txn): every replica that applies the same
 * txns in the same order holds the same tree and the same sessions. Apply never
 * fails on a txn that prep accepted.
 *
 * Encoding (little endian), the payload of a WAL record and of a replicated entry:
 *   OFFSET SIZE DESCRIPTION
 *   0      1    txn format version (1)
 *   1      1    type (enum txn_type)
 *   2      2    reserved, zero
 *   4      4    op count (TXN_OPS; TXN_SESSION_CLOSE: its ephemerals as deletes), else 0
 *   8      8    time, ms since the epoch, chosen by the leader
 *   16     8    session id (the issuer for TXN_OPS, 0 if none; the subject otherwise)
 *   24     4    session timeout ms (TXN_SESSION_OPEN), else 0
 *   28     4    reserved, zero
 *   32     ...  ops, each:
 *                 1  op type (enum txn_op_type)
 *                 1  reserved
 *                 2  reserved
 *                 4  create flags (enum znode_flag)
 *                 4  expected version (-1 any; CHECK/SET/DELETE)
 *                 4  reserved
 *                 8  ephemeral owner (CREATE)
 *                 8  ttl ms (CREATE of a TTL node)
 *                 4+n path (the resolved path)
 *                 4+n data (CREATE, SET)
 */
#ifndef CORRAL_TXN_H
#define CORRAL_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "bytes.h"

#define TXN_FORMAT_VERSION 1

enum txn_type {
    TXN_NOOP = 1,          /* no state change (a new leader's first entry, sync) */
    TXN_OPS = 2,           /* one or more znode ops, applied all or nothing */
    TXN_SESSION_OPEN = 3,  /* session_id, timeout_ms */
    TXN_SESSION_CLOSE = 4, /* session_id; ops: delete of each of its ephemerals */
};

enum txn_op_type {
    TXN_OP_CREATE = 1,
    TXN_OP_SET = 2,
    TXN_OP_DELETE = 3,
    TXN_OP_CHECK = 4,
};

struct txn_op {
    uint8_t type;    /* enum txn_op_type */
    uint32_t flags;  /* enum znode_flag, CREATE */
    int32_t version; /* expected version, CHECK/SET/DELETE (already verified by prep) */
    uint64_t ephemeral_owner;
    int64_t ttl_ms;
    const char *path; /* resolved; borrowed (from the encoded buffer or the builder) */
    uint32_t path_length;
    const uint8_t *data; /* borrowed */
    uint32_t data_length;
};

struct txn {
    uint8_t type; /* enum txn_type */
    int64_t time_ms;
    uint64_t session_id;
    uint32_t timeout_ms;
    uint32_t op_count;
    struct txn_op *ops; /* TXN_OPS; see txn_decode for ownership */
};

/* Appends the encoding of t to out. Returns 0 or CORRAL_E_NO_MEMORY. */
int txn_encode(const struct txn *t, struct bytes *out);

/* Decodes a txn from buf. Paths and data in the ops point into buf (borrowed: buf must
 * outlive the txn); the ops array is allocated and owned by the caller, freed with
 * txn_free_ops. Returns 0, CORRAL_E_CORRUPT (malformed or unknown version/type) or
 * CORRAL_E_NO_MEMORY. */
int txn_decode(const void *buf, size_t length, struct txn *out);

/* Frees the ops array allocated by txn_decode. */
void txn_free_ops(struct txn *t);

#endif
