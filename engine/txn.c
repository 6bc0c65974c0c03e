/* txn.c: encoding and decoding of txns; the format is the OFFSET SIZE DESCRIPTION
 * table in txn.h.
 *
 * The decoder trusts nothing: the WAL and the network hand it bytes that passed a CRC,
 * but a CRC does not protect against a bug in a peer or a version mismatch. It rejects
 * an unknown format version, txn type or op type, any length that runs past the
 * buffer, ops on a txn type that has none, and trailing bytes, all as CORRAL_E_CORRUPT.
 * Reserved fields are written as zero and ignored on read. */
#include "txn.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

#define TXN_HEADER_SIZE 32
/* An op with an empty path and empty data: the fixed fields and two blob lengths. */
#define TXN_OP_MIN_SIZE 40

static bool txn_type_known(uint8_t type)
{
    return type == TXN_NOOP || type == TXN_OPS || type == TXN_SESSION_OPEN ||
           type == TXN_SESSION_CLOSE;
}

static bool txn_op_type_known(uint8_t type)
{
    return type == TXN_OP_CREATE || type == TXN_OP_SET || type == TXN_OP_DELETE ||
           type == TXN_OP_CHECK;
}

/* A session close lists, as delete ops, the ephemerals it removes. */
static bool txn_type_has_ops(uint8_t type)
{
    return type == TXN_OPS || type == TXN_SESSION_CLOSE;
}

int txn_encode(const struct txn *t, struct bytes *out)
{
    uint32_t op_count = txn_type_has_ops(t->type) ? t->op_count : 0;
    bytes_put_u8(out, TXN_FORMAT_VERSION);
    bytes_put_u8(out, t->type);
    bytes_put_u16(out, 0);
    bytes_put_u32(out, op_count);
    bytes_put_u64(out, (uint64_t)t->time_ms);
    bytes_put_u64(out, t->session_id);
    bytes_put_u32(out, t->type == TXN_SESSION_OPEN ? t->timeout_ms : 0);
    bytes_put_u32(out, 0);
    for (uint32_t i = 0; i < op_count; i++) {
        const struct txn_op *op = &t->ops[i];
        bytes_put_u8(out, op->type);
        bytes_put_u8(out, 0);
        bytes_put_u16(out, 0);
        bytes_put_u32(out, op->flags);
        bytes_put_u32(out, (uint32_t)op->version);
        bytes_put_u32(out, 0);
        bytes_put_u64(out, op->ephemeral_owner);
        bytes_put_u64(out, (uint64_t)op->ttl_ms);
        bytes_put_blob(out, op->path, op->path_length);
        bytes_put_blob(out, op->data, op->data_length);
    }
    return bytes_failed(out) ? CORRAL_E_NO_MEMORY : 0;
}

int txn_decode(const void *buf, size_t length, struct txn *out)
{
    struct bytes_reader r;
    bytes_reader_init(&r, buf, length);
    memset(out, 0, sizeof(*out));

    uint8_t version = bytes_get_u8(&r);
    uint8_t type = bytes_get_u8(&r);
    (void)bytes_get_u16(&r);
    uint32_t op_count = bytes_get_u32(&r);
    int64_t time_ms = (int64_t)bytes_get_u64(&r);
    uint64_t session_id = bytes_get_u64(&r);
    uint32_t timeout_ms = bytes_get_u32(&r);
    (void)bytes_get_u32(&r);
    if (r.failed || version != TXN_FORMAT_VERSION || !txn_type_known(type))
        return CORRAL_E_CORRUPT;
    if (!txn_type_has_ops(type) && op_count != 0)
        return CORRAL_E_CORRUPT;
    /* Bound the allocation by what the buffer can hold before trusting the count. */
    if (op_count > (length - TXN_HEADER_SIZE) / TXN_OP_MIN_SIZE)
        return CORRAL_E_CORRUPT;

    struct txn_op *ops = NULL; /* owned by the caller on success (txn_free_ops) */
    if (op_count > 0) {
        ops = calloc(op_count, sizeof(*ops));
        if (!ops)
            return CORRAL_E_NO_MEMORY;
    }
    for (uint32_t i = 0; i < op_count; i++) {
        struct txn_op *op = &ops[i];
        op->type = bytes_get_u8(&r);
        (void)bytes_get_u8(&r);
        (void)bytes_get_u16(&r);
        op->flags = bytes_get_u32(&r);
        op->version = (int32_t)bytes_get_u32(&r);
        (void)bytes_get_u32(&r);
        op->ephemeral_owner = bytes_get_u64(&r);
        op->ttl_ms = (int64_t)bytes_get_u64(&r);
        op->path = (const char *)bytes_get_blob(&r, &op->path_length);
        op->data = bytes_get_blob(&r, &op->data_length);
        if (r.failed || !txn_op_type_known(op->type))
            goto corrupt;
        if (op->data_length == 0)
            op->data = NULL; /* as a builder would pass empty data */
    }
    if (r.offset != r.length)
        goto corrupt; /* trailing bytes */

    out->type = type;
    out->time_ms = time_ms;
    out->session_id = session_id;
    out->timeout_ms = timeout_ms;
    out->op_count = op_count;
    out->ops = ops;
    return 0;

corrupt:
    free(ops);
    return CORRAL_E_CORRUPT;
}

void txn_free_ops(struct txn *t)
{
    free(t->ops);
    t->ops = NULL;
    t->op_count = 0;
}
