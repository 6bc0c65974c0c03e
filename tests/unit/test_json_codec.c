/* test_json_codec.c: base64 vectors and rejects, UTF-8 detection, stat JSON, error
 * statuses and request-body parsing of api/json_codec.c and api/b64.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "json_codec.h"

static void test_b64_encode__rfc4648_vectors(void **state)
{
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char buf[16];
        size_t n = b64_encode(in[i], strlen(in[i]), buf);
        assert_int_equal(n, strlen(out[i]));
        assert_string_equal(buf, out[i]);
        uint8_t dec[16];
        size_t m;
        assert_true(b64_decode(out[i], strlen(out[i]), dec, &m));
        assert_int_equal(m, strlen(in[i]));
        assert_memory_equal(dec, in[i], m);
    }
}

static void test_b64_decode__rejects_malformed(void **state)
{
    static const char *const bad[] = {"Zg=",  "Zg",   "Z===", "====", "Zg==Zg==", "Zm9v!A==",
                                      "Zh==", "Zm9=", "Zg=a", "Zm 9", "=Zm9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t dec[16];
        size_t m;
        assert_false(b64_decode(bad[i], strlen(bad[i]), dec, &m));
    }
}

static void test_b64__binary_round_trip(void **state)
{
    uint8_t in[256], dec[256];
    char text[b64_encoded_length(256) + 1];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    for (size_t n = 0; n <= 256; n += 17) {
        size_t t = b64_encode(in, n, text);
        size_t m;
        assert_true(b64_decode(text, t, dec, &m));
        assert_int_equal(m, n);
        assert_memory_equal(dec, in, n);
    }
}

static bool text_ok(const char *s, size_t n)
{
    return json_codec_text_ok((const uint8_t *)s, n);
}

static void test_json_codec_text_ok__utf8_rules(void **state)
{
    assert_true(text_ok("", 0));
    assert_true(text_ok("hello", 5));
    assert_true(text_ok("h\xc3\xa9", 3));         /* U+00E9 */
    assert_true(text_ok("\xe2\x82\xac", 3));      /* U+20AC */
    assert_true(text_ok("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
    assert_true(text_ok("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_true(text_ok("a\0b", 3));              /* NUL: valid text, sent as \u0000 */
    assert_false(text_ok("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(text_ok("\xc1\xbf", 2));         /* overlong */
    assert_false(text_ok("\xe0\x80\xaf", 3));     /* overlong 3-byte */
    assert_false(text_ok("\xf0\x80\x80\xaf", 4)); /* overlong 4-byte */
    assert_false(text_ok("\xed\xa0\x80", 3));     /* U+D800 surrogate */
    assert_false(text_ok("\xed\xbf\xbf", 3));     /* U+DFFF surrogate */
    assert_false(text_ok("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(text_ok("\xc3\x28", 2));         /* bad continuation */
    assert_false(text_ok("\xe2\x82", 2));         /* truncated */
    assert_false(text_ok("\x80", 1));             /* lone continuation */
    assert_false(text_ok("\xff", 1));
}

static void test_json_codec_stat__field_names_and_owner(void **state)
{
    struct znode_stat st = {.czxid = 1,
                            .mzxid = 2,
                            .pzxid = 3,
                            .ctime = 4,
                            .mtime = 5,
                            .version = 6,
                            .cversion = 7,
                            .aversion = 8,
                            .ephemeral_owner = 0,
                            .data_length = 9,
                            .num_children = 10};
    json_t *j = json_codec_stat(&st);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "{\"czxid\":1,\"mzxid\":2,\"pzxid\":3,\"ctime\":4,\"mtime\":5,"
                           "\"version\":6,\"cversion\":7,\"aversion\":8,\"ephemeralOwner\":"
                           "\"0\",\"dataLength\":9,\"numChildren\":10}");
    free(s);
    json_decref(j);
    st.ephemeral_owner = 0xabcULL;
    j = json_codec_stat(&st);
    assert_string_equal(json_string_value(json_object_get(j, "ephemeralOwner")),
                        "0000000000000abc");
    json_decref(j);
}

static void test_json_codec_data_set__encoding_choice(void **state)
{
    json_t *o = json_object();
    assert_int_equal(json_codec_data_set(o, (const uint8_t *)"hi", 2, false), 0);
    assert_string_equal(json_string_value(json_object_get(o, "encoding")), "utf-8");
    assert_string_equal(json_string_value(json_object_get(o, "data")), "hi");
    assert_int_equal(json_codec_data_set(o, (const uint8_t *)"hi", 2, true), 0);
    assert_string_equal(json_string_value(json_object_get(o, "encoding")), "base64");
    assert_string_equal(json_string_value(json_object_get(o, "data")), "aGk=");
    assert_int_equal(json_codec_data_set(o, (const uint8_t *)"a\0", 2, false), 0);
    assert_string_equal(json_string_value(json_object_get(o, "encoding")), "utf-8");
    assert_int_equal(json_string_length(json_object_get(o, "data")), 2);
    assert_int_equal(json_codec_data_set(o, NULL, 0, false), 0);
    assert_string_equal(json_string_value(json_object_get(o, "data")), "");
    json_decref(o);
}

static void test_json_codec_session__format_and_parse(void **state)
{
    char hex[17];
    json_codec_session_format(0x1234abcdULL, hex);
    assert_string_equal(hex, "000000001234abcd");
    uint64_t id;
    assert_true(json_codec_session_parse(hex, 16, &id));
    assert_int_equal(id, 0x1234abcdULL);
    assert_true(json_codec_session_parse("FF", 2, &id));
    assert_int_equal(id, 255);
    assert_false(json_codec_session_parse("", 0, &id));
    assert_false(json_codec_session_parse("0", 1, &id));
    assert_false(json_codec_session_parse("xyz", 3, &id));
    assert_false(json_codec_session_parse("00000000000000001", 17, &id));
}

static void test_api_error_status__table(void **state)
{
    assert_int_equal(api_error_status(CORRAL_E_NO_NODE), 404);
    assert_int_equal(api_error_status(CORRAL_E_NODE_EXISTS), 409);
    assert_int_equal(api_error_status(CORRAL_E_BAD_ARGUMENTS), 400);
    assert_int_equal(api_error_status(CORRAL_E_SESSION_EXPIRED), 404);
    assert_int_equal(api_error_status(CORRAL_E_TIMEOUT), 504);
    assert_int_equal(api_error_status(CORRAL_E_PAYLOAD_TOO_LARGE), 413);
    assert_int_equal(api_error_status(CORRAL_E_COMPACTED), 410);
    assert_int_equal(api_error_status(CORRAL_E_METHOD_NOT_ALLOWED), 405);
    assert_int_equal(api_error_status(CORRAL_E_NO_ROUTE), 404);
    assert_int_equal(api_error_status(CORRAL_E_IO), 500);
    json_t *e = json_codec_error(CORRAL_E_NO_NODE, NULL, "/a", 2, 3);
    char *s = json_dumps(e, JSON_COMPACT);
    assert_string_equal(s, "{\"error\":{\"code\":\"NO_NODE\",\"message\":\"node does not "
                           "exist\",\"path\":\"/a\",\"index\":3}}");
    free(s);
    json_decref(e);
}

/* Parses body and fills an op of type; returns the code. */
static int parse_op(const char *body, enum engine_op_type type, struct json_codec_op *op)
{
    char message[JSON_CODEC_MESSAGE_SIZE];
    json_t *doc = NULL;
    int rc = json_codec_body_parse(body, strlen(body), &doc, message);
    memset(op, 0, sizeof *op);
    op->op.type = type;
    if (rc == 0)
        rc = json_codec_op_fields(doc, 16, op, message);
    json_codec_op_release(op);
    json_decref(doc);
    return rc;
}

static void test_json_codec_op_fields__wrong_types(void **state)
{
    struct json_codec_op op;
    assert_int_equal(parse_op("", ENGINE_OP_CREATE, &op), 0);
    assert_int_equal(parse_op("{\"data\":\"x\",\"unknown\":[1]}", ENGINE_OP_CREATE, &op), 0);
    assert_int_equal(op.op.data_length, 1);
    assert_int_equal(parse_op("{\"ephemeral\":true,\"sequential\":true}", ENGINE_OP_CREATE, &op),
                     0);
    assert_int_equal(op.op.create_flags, ENGINE_CREATE_EPHEMERAL | ENGINE_CREATE_SEQUENTIAL);
    int bad = CORRAL_E_BAD_ARGUMENTS;
    assert_int_equal(parse_op("{", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("[]", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"a\":1,\"a\":2}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"data\":5}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"ephemeral\":\"yes\"}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"ttl_ms\":-1}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"ttl_ms\":1.5}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"ttl_ms\":5,\"container\":true}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"container\":true,\"ephemeral\":true}", ENGINE_OP_CREATE, &op),
                     bad);
    assert_int_equal(parse_op("{\"encoding\":\"latin1\"}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"data\":\"Zg=\",\"encoding\":\"base64\"}", ENGINE_OP_CREATE, &op),
                     bad);
    assert_int_equal(parse_op("{\"data\":\"12345678901234567\"}", ENGINE_OP_CREATE, &op), bad);
    assert_int_equal(parse_op("{\"version\":\"1\"}", ENGINE_OP_SET, &op), bad);
    assert_int_equal(parse_op("{\"version\":-2}", ENGINE_OP_SET, &op), bad);
    assert_int_equal(parse_op("{\"version\":2147483648}", ENGINE_OP_DELETE, &op), bad);
    assert_int_equal(parse_op("{\"version\":7}", ENGINE_OP_CHECK, &op), 0);
    assert_int_equal(op.op.version, 7);
}

static void test_json_codec_multi_op__shape(void **state)
{
    char message[JSON_CODEC_MESSAGE_SIZE];
    struct json_codec_op op;
    memset(&op, 0, sizeof op);
    json_t *j = json_loads("{\"op\":\"set\",\"path\":\"/a\",\"data\":\"aGk=\","
                           "\"encoding\":\"base64\",\"version\":3}",
                           0, NULL);
    assert_int_equal(json_codec_multi_op(j, 100, &op, message), 0);
    assert_int_equal(op.op.type, ENGINE_OP_SET);
    assert_int_equal(op.op.path_length, 2);
    assert_int_equal(op.op.data_length, 2);
    assert_memory_equal(op.op.data, "hi", 2);
    assert_int_equal(op.op.version, 3);
    json_codec_op_release(&op);
    json_decref(j);
    j = json_loads("{\"op\":\"frob\",\"path\":\"/a\"}", 0, NULL);
    assert_int_equal(json_codec_multi_op(j, 100, &op, message), CORRAL_E_BAD_ARGUMENTS);
    json_decref(j);
    j = json_loads("{\"op\":\"delete\",\"path\":1}", 0, NULL);
    assert_int_equal(json_codec_multi_op(j, 100, &op, message), CORRAL_E_BAD_ARGUMENTS);
    json_decref(j);
}

static void test_json_codec_version_parse__strict(void **state)
{
    int32_t v;
    assert_true(json_codec_version_parse("0", &v));
    assert_int_equal(v, 0);
    assert_true(json_codec_version_parse("-1", &v));
    assert_int_equal(v, -1);
    assert_true(json_codec_version_parse("2147483647", &v));
    assert_false(json_codec_version_parse("2147483648", &v));
    assert_false(json_codec_version_parse("-2", &v));
    assert_false(json_codec_version_parse("1x", &v));
    assert_false(json_codec_version_parse("", &v));
}

static void test_json_codec_session_open_parse__timeout(void **state)
{
    char message[JSON_CODEC_MESSAGE_SIZE];
    uint32_t t;
    json_t *j = json_loads("{\"timeout_ms\":5000}", 0, NULL);
    assert_int_equal(json_codec_session_open_parse(j, &t, message), 0);
    assert_int_equal(t, 5000);
    json_decref(j);
    j = json_loads("{\"timeout_ms\":0}", 0, NULL);
    assert_int_equal(json_codec_session_open_parse(j, &t, message), CORRAL_E_BAD_ARGUMENTS);
    json_decref(j);
    j = json_loads("{\"timeout_ms\":\"5\"}", 0, NULL);
    assert_int_equal(json_codec_session_open_parse(j, &t, message), CORRAL_E_BAD_ARGUMENTS);
    json_decref(j);
    assert_int_equal(json_codec_session_open_parse(NULL, &t, message), CORRAL_E_BAD_ARGUMENTS);
}

/* The directly rendered read answer equals, once parsed, the one built with jansson. */
static void test_json_codec_read_render__equals_the_jansson_answer(void **state)
{
    (void)state;
    static const struct {
        const char *data;
        size_t length;
        bool base64;
    } cases[] = {
        {"", 0, false},
        {"plain", 5, false},
        {"q\"uote\\back/slash", 17, false},
        {"ctl\b\f\n\r\t\x01\x1f\x7f", 11, false},
        {"nul\0inside", 10, false},
        {"\xc5\xbc\xc3\xb3\xc5\x82w \xe2\x9c\x93 \xf0\x9f\x90\xa2", 16, false},
        {"\xff\xfe binary", 9, false},
        {"forced", 6, true},
    };
    const char *paths[] = {"/", "/a/b", "/we\"ird\\name", "/\xc5\xbc\xc3\xb3\xc5\x82w"};
    struct znode_stat st = {.czxid = 1,
                            .mzxid = UINT64_MAX / 3,
                            .pzxid = 7,
                            .ctime = -5,
                            .mtime = 1795608379989,
                            .version = 2147483647,
                            .cversion = -1,
                            .aversion = 0,
                            .ephemeral_owner = 0x0a5dd7d38514ce1aULL,
                            .data_length = 3,
                            .num_children = 4294967295u};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            st.ephemeral_owner = c % 2 ? 0 : 0x0a5dd7d38514ce1aULL;
            json_t *want = json_pack("{s:s}", "path", paths[p]);
            assert_non_null(want);
            assert_int_equal(json_codec_data_set(want, (const uint8_t *)cases[c].data,
                                                 cases[c].length, cases[c].base64),
                             0);
            json_object_set_new(want, "stat", json_codec_stat(&st));
            size_t length = 0;
            char *text =
                json_codec_read_render(paths[p], strlen(paths[p]), (const uint8_t *)cases[c].data,
                                       cases[c].length, &st, cases[c].base64, &length);
            assert_non_null(text);
            assert_int_equal(length, strlen(text) + (memchr(text, 0, length) ? 0 : 0));
            json_error_t err;
            json_t *got = json_loadb(text, length, JSON_ALLOW_NUL, &err);
            if (!got || !json_equal(got, want))
                fail_msg("case %zu path %zu: %s", c, p, text);
            json_decref(got);
            json_decref(want);
            free(text);
        }
    }
}

/* The directly rendered write answer equals, once parsed, {"path","stat"} from jansson. */
static void test_json_codec_path_stat_render__equals_the_jansson_answer(void **state)
{
    (void)state;
    const char *paths[] = {"/", "/a/b", "/we\"ird\\name\ttab", "/\xc5\xbc\xc3\xb3\xc5\x82w",
                           "/queue/item-0000000042"};
    struct znode_stat st = {.czxid = 9,
                            .mzxid = INT64_MAX,
                            .pzxid = 0,
                            .ctime = 1795608379989,
                            .mtime = -1,
                            .version = -2147483647 - 1,
                            .cversion = 3,
                            .aversion = 1,
                            .data_length = 0,
                            .num_children = 12};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        st.ephemeral_owner = p % 2 ? 0 : 0xffffffffffffffffULL;
        json_t *want = json_pack("{s:s,s:o}", "path", paths[p], "stat", json_codec_stat(&st));
        assert_non_null(want);
        size_t length = 0;
        char *text = json_codec_path_stat_render(paths[p], strlen(paths[p]), &st, &length);
        assert_non_null(text);
        assert_int_equal(length, strlen(text));
        json_error_t err;
        json_t *got = json_loadb(text, length, 0, &err);
        if (!got || !json_equal(got, want))
            fail_msg("path %zu: %s", p, text);
        json_decref(got);
        json_decref(want);
        free(text);
    }
}

/* The pure jansson reading of body, as the fast path's reference. */
static int reference_op(const char *body, size_t length, enum engine_op_type type,
                        struct json_codec_op *op, json_t **doc, char *message)
{
    memset(op, 0, sizeof *op);
    op->op.type = type;
    int rc = json_codec_body_parse(body, length, doc, message);
    if (rc == 0)
        rc = json_codec_op_fields(*doc, 16, op, message);
    return rc;
}

/* json_codec_op_body_parse (flat bodies read in place) agrees with jansson on body:
 * the same code, message and op. Returns whether the body was read in place. */
static bool op_body_agrees(const char *body, size_t length, enum engine_op_type type)
{
    char want_message[JSON_CODEC_MESSAGE_SIZE] = "", got_message[JSON_CODEC_MESSAGE_SIZE] = "";
    struct json_codec_op want, got;
    json_t *want_doc = NULL, *got_doc = NULL;
    int want_rc = reference_op(body, length, type, &want, &want_doc, want_message);
    memset(&got, 0, sizeof got);
    got.op.type = type;
    int got_rc = json_codec_op_body_parse(body, length, 16, &got, &got_doc, got_message);
    if (want_rc != got_rc || (want_rc != 0 && strcmp(want_message, got_message) != 0))
        fail_msg("body %.*s type %d: %d '%s' vs %d '%s'", (int)length, body, type, want_rc,
                 want_message, got_rc, got_message);
    if (want_rc == 0) {
        assert_int_equal(got.op.version, want.op.version);
        assert_int_equal(got.op.create_flags, want.op.create_flags);
        assert_int_equal(got.op.ttl_ms, want.op.ttl_ms);
        assert_int_equal(got.op.data_length, want.op.data_length);
        assert_true(got.op.data_length == 0 ||
                    memcmp(got.op.data, want.op.data, got.op.data_length) == 0);
        assert_true((got.op.data == NULL) == (want.op.data == NULL));
    }
    bool in_place = got_doc == NULL;
    json_codec_op_release(&want);
    json_codec_op_release(&got);
    json_decref(want_doc);
    json_decref(got_doc);
    return in_place;
}

static void test_json_codec_op_body_parse__agrees_with_jansson(void **state)
{
    (void)state;
    static const char *const in_place[] = {
        "",
        "{}",
        " { } \n",
        "{\"data\":\"vvvv\"}",
        "{\"sequential\":true,\"data\":\"item\"}",
        "{ \"data\" : \"x\" , \"version\" : 3 }",
        "{\"data\":\"aGk=\",\"encoding\":\"base64\"}",
        "{\"data\":\"Zg=\",\"encoding\":\"base64\"}",
        "{\"encoding\":\"latin1\"}",
        "{\"data\":\"12345678901234567\"}",
        "{\"ttl_ms\":-1}",
        "{\"ttl_ms\":5,\"container\":true}",
        "{\"container\":true,\"sequential\":true}",
        "{\"ephemeral\":false,\"ttl_ms\":0,\"container\":false}",
        "{\"version\":-2}",
        "{\"version\":2147483648}",
        "{\"version\":-0}",
        "{\"unknown\":null,\"other\":\"s\",\"n\":12,\"data\":\"\"}",
        "{\"data\":\"\xc5\xbc\xc3\xb3\xc5\x82w\"}",
    };
    static const char *const by_jansson[] = {
        "{",
        "[]",
        "5",
        "{\"a\":1,\"a\":2}",
        "{\"data\":5}",
        "{\"data\":null}",
        "{\"ephemeral\":\"yes\"}",
        "{\"ttl_ms\":1.5}",
        "{\"ttl_ms\":1e3}",
        "{\"version\":\"1\"}",
        "{\"version\":01}",
        "{\"version\":12345678901234567890}",
        "{\"data\":\"a\\\"b\"}",
        "{\"data\":\"\\u0000\"}",
        "{\"da\\u0074a\":\"x\"}",
        "{\"unknown\":[1],\"data\":\"x\"}",
        "{\"unknown\":{\"a\":1}}",
        "{\"data\":\"x\"} trailing",
        "{\"data\":\"x\",}",
        "{\"data\":\"\xff\"}",
        "{\"data\":\"tab\tinside\"}",
        "{\"data\" \"x\"}",
        "{\"data\":tru}",
    };
    static const enum engine_op_type types[] = {ENGINE_OP_CREATE, ENGINE_OP_SET, ENGINE_OP_DELETE,
                                                ENGINE_OP_CHECK};
    for (size_t t = 0; t < 4; t++) {
        for (size_t i = 0; i < sizeof in_place / sizeof in_place[0]; i++)
            if (!op_body_agrees(in_place[i], strlen(in_place[i]), types[t]))
                fail_msg("not read in place: %s", in_place[i]);
        for (size_t i = 0; i < sizeof by_jansson / sizeof by_jansson[0]; i++)
            op_body_agrees(by_jansson[i], strlen(by_jansson[i]), types[t]);
    }
    /* Mutations of valid bodies (deterministic): every byte changed, dropped or
     * repeated, whatever comes out must be read the same way by both. */
    static const char *const seeds[] = {
        "{\"data\":\"vv\",\"version\":7,\"ephemeral\":true,\"ttl_ms\":10,\"x\":null}",
        "{\"sequential\":false,\"data\":\"aGk=\",\"encoding\":\"base64\",\"container\":true}",
    };
    static const char alphabet[] = "{}[]\",:\\ 0123456789-.eEtrufalsn\xc3\xa9\x01";
    uint32_t rng = 12345;
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        size_t n = strlen(seeds[k]);
        for (int round = 0; round < 4000; round++) {
            char body[128];
            memcpy(body, seeds[k], n);
            size_t length = n;
            for (int edits = 1 + round % 3; edits > 0; edits--) {
                rng = rng * 1103515245u + 12345u;
                size_t at = (rng >> 8) % length;
                char c = alphabet[(rng >> 20) % (sizeof alphabet - 1)];
                if ((rng & 3) == 0 && length > 1) {
                    memmove(body + at, body + at + 1, length - at - 1);
                    length--;
                } else if ((rng & 3) == 1 && length + 1 < sizeof body) {
                    memmove(body + at + 1, body + at, length - at);
                    body[at] = c;
                    length++;
                } else {
                    body[at] = c;
                }
            }
            op_body_agrees(body, length, types[round % 4]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_encode__rfc4648_vectors),
        cmocka_unit_test(test_b64_decode__rejects_malformed),
        cmocka_unit_test(test_b64__binary_round_trip),
        cmocka_unit_test(test_json_codec_text_ok__utf8_rules),
        cmocka_unit_test(test_json_codec_stat__field_names_and_owner),
        cmocka_unit_test(test_json_codec_data_set__encoding_choice),
        cmocka_unit_test(test_json_codec_session__format_and_parse),
        cmocka_unit_test(test_api_error_status__table),
        cmocka_unit_test(test_json_codec_op_fields__wrong_types),
        cmocka_unit_test(test_json_codec_multi_op__shape),
        cmocka_unit_test(test_json_codec_version_parse__strict),
        cmocka_unit_test(test_json_codec_session_open_parse__timeout),
        cmocka_unit_test(test_json_codec_read_render__equals_the_jansson_answer),
        cmocka_unit_test(test_json_codec_path_stat_render__equals_the_jansson_answer),
        cmocka_unit_test(test_json_codec_op_body_parse__agrees_with_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
