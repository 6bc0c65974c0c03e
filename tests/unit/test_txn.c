/* test_txn.c: unit tests of txn.h: round trips of every txn type and every op type,
 * and rejection of corrupt encodings. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tree.h"
#include "txn.h"

static struct bytes encode(const struct txn *t)
{
    struct bytes b = {0};
    assert_int_equal(txn_encode(t, &b), 0);
    return b;
}

static void assert_txn_equal(const struct txn *a, const struct txn *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->time_ms, b->time_ms);
    assert_int_equal(a->session_id, b->session_id);
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->op_count, b->op_count);
    for (uint32_t i = 0; i < a->op_count; i++) {
        const struct txn_op *x = &a->ops[i], *y = &b->ops[i];
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->flags, y->flags);
        assert_int_equal(x->version, y->version);
        assert_int_equal(x->ephemeral_owner, y->ephemeral_owner);
        assert_int_equal(x->ttl_ms, y->ttl_ms);
        assert_int_equal(x->path_length, y->path_length);
        assert_memory_equal(x->path, y->path, x->path_length);
        assert_int_equal(x->data_length, y->data_length);
        if (x->data_length)
            assert_memory_equal(x->data, y->data, x->data_length);
    }
}

static void round_trip(const struct txn *t)
{
    struct bytes b = encode(t);
    struct txn d;
    assert_int_equal(txn_decode(b.data, b.length, &d), 0);
    assert_txn_equal(t, &d);
    /* Borrowed pointers point into the buffer. */
    for (uint32_t i = 0; i < d.op_count; i++) {
        assert_true((const uint8_t *)d.ops[i].path >= b.data);
        assert_true((const uint8_t *)d.ops[i].path + d.ops[i].path_length <= b.data + b.length);
    }
    txn_free_ops(&d);
    assert_null(d.ops);
    bytes_free(&b);
}

static const uint8_t nul_data[] = {0, 'a', 0, 0, 'b', 0};

static struct txn_op multi_ops[] = {
    {.type = TXN_OP_CHECK, .version = 3, .path = "/a", .path_length = 2},
    {.type = TXN_OP_CREATE,
     .flags = ZNODE_EPHEMERAL,
     .version = -1,
     .ephemeral_owner = 0x1122334455667788ull,
     .path = "/a/lock-0000000007",
     .path_length = 18,
     .data = nul_data,
     .data_length = sizeof(nul_data)},
    {.type = TXN_OP_CREATE,
     .flags = ZNODE_TTL,
     .version = -1,
     .ttl_ms = 86400000,
     .path = "/ttl",
     .path_length = 4,
     .data = NULL,
     .data_length = 0},
    {.type = TXN_OP_CREATE,
     .flags = ZNODE_CONTAINER,
     .version = -1,
     .path = "/c",
     .path_length = 2},
    {.type = TXN_OP_SET,
     .version = 7,
     .path = "/a",
     .path_length = 2,
     .data = (const uint8_t *)"new",
     .data_length = 3},
    {.type = TXN_OP_SET, .version = -1, .path = "/b", .path_length = 2, .data_length = 0},
    {.type = TXN_OP_DELETE, .version = 2, .path = "/a/b", .path_length = 4},
};

static struct txn multi_txn(void)
{
    struct txn t = {.type = TXN_OPS,
                    .time_ms = 1700000000123,
                    .session_id = 0xdeadbeefcafef00dull,
                    .op_count = sizeof(multi_ops) / sizeof(multi_ops[0]),
                    .ops = multi_ops};
    return t;
}

static void test_txn_encode__round_trip_noop(void **state)
{
    (void)state;
    struct txn t = {.type = TXN_NOOP, .time_ms = 42};
    round_trip(&t);
    struct bytes b = encode(&t);
    assert_int_equal(b.length, 32);
    assert_int_equal(b.data[0], TXN_FORMAT_VERSION);
    assert_int_equal(b.data[1], TXN_NOOP);
    assert_int_equal(b.data[8], 42);
    bytes_free(&b);
}

static void test_txn_encode__round_trip_session_open_close(void **state)
{
    (void)state;
    struct txn open = {.type = TXN_SESSION_OPEN,
                       .time_ms = -5, /* negative times survive the u64 field */
                       .session_id = 0x0102030405060708ull,
                       .timeout_ms = 30000};
    round_trip(&open);
    struct bytes b = encode(&open);
    assert_int_equal(b.length, 32);
    assert_int_equal(b.data[16], 0x08); /* little endian */
    assert_int_equal(b.data[23], 0x01);
    assert_int_equal(b.data[24], 30000 & 0xff);
    bytes_free(&b);

    struct txn close = {.type = TXN_SESSION_CLOSE, .time_ms = 9, .session_id = 77};
    round_trip(&close);
}

static void test_txn_encode__round_trip_single_ops(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(multi_ops) / sizeof(multi_ops[0]); i++) {
        struct txn t = {.type = TXN_OPS, .time_ms = 1, .session_id = 2, .op_count = 1};
        t.ops = &multi_ops[i];
        round_trip(&t);
    }
}

static void test_txn_encode__round_trip_multi_all_op_types(void **state)
{
    (void)state;
    struct txn t = multi_txn();
    round_trip(&t);
    struct bytes b = encode(&t);
    struct txn d;
    assert_int_equal(txn_decode(b.data, b.length, &d), 0);
    /* Data with NULs comes back whole, empty data as NULL/0. */
    assert_int_equal(d.ops[1].data_length, 6);
    assert_memory_equal(d.ops[1].data, nul_data, 6);
    assert_int_equal(d.ops[2].data_length, 0);
    assert_null(d.ops[2].data);
    assert_int_equal(d.ops[0].version, 3);
    assert_int_equal(d.ops[1].version, -1);
    assert_int_equal(d.ops[2].ttl_ms, 86400000);
    txn_free_ops(&d);
    bytes_free(&b);
}

static void test_txn_encode__appends(void **state)
{
    (void)state;
    struct bytes b = {0};
    bytes_put(&b, "xyz", 3);
    struct txn t = {.type = TXN_NOOP};
    assert_int_equal(txn_encode(&t, &b), 0);
    assert_int_equal(b.length, 35);
    assert_memory_equal(b.data, "xyz", 3);
    assert_int_equal(b.data[3], TXN_FORMAT_VERSION);
    bytes_free(&b);
}

static void test_txn_decode__truncated_at_every_length(void **state)
{
    (void)state;
    struct txn t = multi_txn();
    struct bytes b = encode(&t);
    for (size_t n = 0; n < b.length; n++) {
        /* An exact-size copy, so ASan catches a read past the end. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, b.data, n);
        struct txn d;
        int rv = txn_decode(cut, n, &d);
        free(cut);
        if (rv != CORRAL_E_CORRUPT)
            fail_msg("truncated at %zu of %zu: got %d", n, b.length, rv);
    }
    bytes_free(&b);
}

static void test_txn_decode__bad_version_type_op_type(void **state)
{
    (void)state;
    struct txn t = multi_txn();
    struct bytes b = encode(&t);
    struct txn d;
    uint8_t saved;

    saved = b.data[0];
    b.data[0] = TXN_FORMAT_VERSION + 1;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[0] = 0;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[0] = saved;

    saved = b.data[1];
    b.data[1] = 0;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[1] = 5;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[1] = TXN_NOOP; /* a known type that carries no ops, with ops */
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[1] = saved;

    saved = b.data[32]; /* first op's type */
    b.data[32] = 0;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[32] = 5;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[32] = saved;

    /* Op count beyond what the buffer can hold. */
    b.data[4] = 0xff;
    b.data[7] = 0x7f;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[4] = (uint8_t)t.op_count;
    b.data[7] = 0;

    /* A path length running past the end. */
    b.data[32 + 32 + 3] = 0x10;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    b.data[32 + 32 + 3] = 0;

    /* Control: restored, it decodes. */
    assert_int_equal(txn_decode(b.data, b.length, &d), 0);
    txn_free_ops(&d);
    bytes_free(&b);
}

static void test_txn_decode__trailing_garbage(void **state)
{
    (void)state;
    struct txn t = multi_txn();
    struct bytes b = encode(&t);
    bytes_put_u8(&b, 0);
    struct txn d;
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    bytes_free(&b);

    struct txn noop = {.type = TXN_NOOP};
    b = encode(&noop);
    bytes_put(&b, "junk", 4);
    assert_int_equal(txn_decode(b.data, b.length, &d), CORRAL_E_CORRUPT);
    assert_int_equal(txn_decode(b.data, b.length - 4, &d), 0);
    txn_free_ops(&d);
    bytes_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txn_encode__round_trip_noop),
        cmocka_unit_test(test_txn_encode__round_trip_session_open_close),
        cmocka_unit_test(test_txn_encode__round_trip_single_ops),
        cmocka_unit_test(test_txn_encode__round_trip_multi_all_op_types),
        cmocka_unit_test(test_txn_encode__appends),
        cmocka_unit_test(test_txn_decode__truncated_at_every_length),
        cmocka_unit_test(test_txn_decode__bad_version_type_op_type),
        cmocka_unit_test(test_txn_decode__trailing_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
