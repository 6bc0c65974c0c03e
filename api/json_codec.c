/* json_codec.c: JSON shapes of the HTTP API (see json_codec.h). */
#include "json_codec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

unsigned api_error_status(int code)
{
    /* No default: adding a code to error.h without deciding its status here breaks
     * the build (-Wswitch with -Werror). */
    switch ((enum corral_error)code) {
    case CORRAL_OK:
        return 200;
    case CORRAL_E_NO_NODE:
        return 404;
    case CORRAL_E_NODE_EXISTS:
    case CORRAL_E_BAD_VERSION:
    case CORRAL_E_NOT_EMPTY:
    case CORRAL_E_NO_CHILDREN_FOR_EPHEMERALS:
        return 409;
    case CORRAL_E_BAD_ARGUMENTS:
        return 400;
    case CORRAL_E_SESSION_EXPIRED:
        return 404;
    case CORRAL_E_NO_AUTH:
        return 403;
    case CORRAL_E_NO_QUORUM:
        return 503;
    case CORRAL_E_TIMEOUT:
        return 504;
    case CORRAL_E_BEHIND:
        return 503;
    case CORRAL_E_PAYLOAD_TOO_LARGE:
        return 413;
    case CORRAL_E_NO_MEMORY:
    case CORRAL_E_IO:
    case CORRAL_E_CORRUPT:
        return 500;
    case CORRAL_E_SHUTTING_DOWN:
        return 503;
    case CORRAL_E_COMPACTED:
        return 410;
    case CORRAL_E_NO_SPACE:
        return 507;
    case CORRAL_E_NOT_LEADER:
        return 503;
    case CORRAL_E_NO_ROUTE:
    case CORRAL_E_NO_WATCHER:
        return 404;
    case CORRAL_E_METHOD_NOT_ALLOWED:
        return 405;
    }
    return 500; /* a value outside the table */
}

bool json_codec_text_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { /* NUL included: it goes out as \u0000, which JSON allows */
            i++;
            continue;
        }
        size_t extra;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            extra = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false; /* continuation byte, 0xc0/0xc1 overlong lead, or > 0xf4 */
        }
        if (n - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (cc & 0x3f);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000))
            return false; /* overlong */
        if (cp >= 0xd800 && cp <= 0xdfff)
            return false; /* surrogate */
        if (cp > 0x10ffff)
            return false;
        i += extra + 1;
    }
    return true;
}

json_t *json_codec_stat(const struct znode_stat *st)
{
    char owner[17] = "0";
    if (st->ephemeral_owner != 0)
        json_codec_session_format(st->ephemeral_owner, owner);
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:i,s:i,s:i,s:s,s:I,s:I}", "czxid", (json_int_t)st->czxid, "mzxid",
        (json_int_t)st->mzxid, "pzxid", (json_int_t)st->pzxid, "ctime", (json_int_t)st->ctime,
        "mtime", (json_int_t)st->mtime, "version", (int)st->version, "cversion", (int)st->cversion,
        "aversion", (int)st->aversion, "ephemeralOwner", owner, "dataLength",
        (json_int_t)st->data_length, "numChildren", (json_int_t)st->num_children);
}

void json_codec_session_format(uint64_t id, char out[17])
{
    snprintf(out, 17, "%016" PRIx64, id);
}

bool json_codec_session_parse(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 16)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    if (v == 0)
        return false;
    *out = v;
    return true;
}

int json_codec_data_set(json_t *obj, const uint8_t *data, size_t length, bool force_base64)
{
    if (data == NULL)
        data = (const uint8_t *)""; /* empty node: json_stringn(NULL, 0) would fail */
    if (!force_base64 && json_codec_text_ok(data, length)) {
        if (json_object_set_new(obj, "data", json_stringn((const char *)data, length)) != 0)
            return -1;
        return json_object_set_new(obj, "encoding", json_string("utf-8"));
    }
    char *text = malloc(b64_encoded_length(length) + 1);
    if (text == NULL)
        return -1;
    size_t n = b64_encode(data, length, text);
    int rc = json_object_set_new(obj, "data", json_stringn(text, n));
    free(text);
    if (rc != 0)
        return -1;
    return json_object_set_new(obj, "encoding", json_string("base64"));
}

json_t *json_codec_error(int code, const char *message, const char *path, size_t path_length,
                         int index)
{
    json_t *inner = json_pack("{s:s,s:s}", "code", corral_error_name(code), "message",
                              message != NULL ? message : corral_error_message(code));
    if (inner == NULL)
        return NULL;
    /* json_stringn returns NULL for a path that is not UTF-8: set_new then fails
     * harmlessly and the field is simply left out. */
    if (path != NULL)
        json_object_set_new(inner, "path", json_stringn(path, path_length));
    if (index >= 0)
        json_object_set_new(inner, "index", json_integer(index));
    return json_pack("{s:o}", "error", inner);
}

int json_codec_body_parse(const void *body, size_t length, json_t **out, char *message)
{
    *out = NULL;
    if (length == 0)
        return 0;
    json_error_t err;
    /* JSON_ALLOW_NUL: "\u0000" is valid JSON and valid text data. Every string read
     * from the document is then taken with its length, never as a C string. */
    json_t *doc = json_loadb(body, length, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (doc == NULL) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "malformed JSON body: %.100s (at byte %d)",
                 err.text, err.position);
        return CORRAL_E_BAD_ARGUMENTS;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "the body must be a JSON object");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    *out = doc;
    return 0;
}

void json_codec_op_release(struct json_codec_op *op)
{
    free(op->owned_data);
    op->owned_data = NULL;
}

/* ---- the members of an op body ----
 *
 * An op body is read in two steps: its members are taken out with their JSON types
 * checked (from a jansson tree, or straight from the text, below), then their values
 * are checked and turned into the op (json_codec_members_apply), one implementation of
 * every rule and message for both. */

#define TTL_MIN 0
#define TTL_MAX INT64_MAX
#define VERSION_MIN (-1)
#define VERSION_MAX INT32_MAX

struct json_codec_members {
    const char *data; /* NULL when absent; borrowed from the body or the tree */
    size_t data_length;
    const char *encoding; /* NULL when absent */
    size_t encoding_length;
    bool ephemeral, sequential, container;
    bool has_ttl, has_version;
    json_int_t ttl_ms, version;
};

static int message_not_boolean(const char *key, char *message)
{
    snprintf(message, JSON_CODEC_MESSAGE_SIZE, "\"%s\" must be a boolean", key);
    return CORRAL_E_BAD_ARGUMENTS;
}

static int message_not_integer(const char *key, json_int_t min, json_int_t max, char *message)
{
    snprintf(message, JSON_CODEC_MESSAGE_SIZE,
             "\"%s\" must be an integer from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT,
             key, min, max);
    return CORRAL_E_BAD_ARGUMENTS;
}

/* Reads an optional boolean member. Returns 0 or BAD_ARGUMENTS. */
static int json_codec_bool_get(json_t *obj, const char *key, bool *out, char *message)
{
    json_t *v = obj != NULL ? json_object_get(obj, key) : NULL;
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return message_not_boolean(key, message);
    *out = json_is_true(v);
    return 0;
}

/* Reads an optional integer member (its range is checked later). */
static int json_codec_int_get(json_t *obj, const char *key, json_int_t min, json_int_t max,
                              bool *has, json_int_t *out, char *message)
{
    json_t *v = obj != NULL ? json_object_get(obj, key) : NULL;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return message_not_integer(key, min, max, message);
    *has = true;
    *out = json_integer_value(v);
    return 0;
}

/* Reads an optional string member. */
static int json_codec_string_get(json_t *obj, const char *key, const char **out, size_t *length,
                                 char *message)
{
    json_t *v = obj != NULL ? json_object_get(obj, key) : NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "\"%s\" must be a string", key);
        return CORRAL_E_BAD_ARGUMENTS;
    }
    *out = json_string_value(v);
    *length = json_string_length(v);
    return 0;
}

/* The members an op of type reads from obj (NULL = none), types checked. */
static int json_codec_members_from_json(json_t *obj, enum engine_op_type type,
                                        struct json_codec_members *m, char *message)
{
    int rc = 0;
    memset(m, 0, sizeof *m);
    if (type == ENGINE_OP_CREATE || type == ENGINE_OP_SET) {
        if ((rc = json_codec_string_get(obj, "encoding", &m->encoding, &m->encoding_length,
                                        message)) != 0 ||
            (rc = json_codec_string_get(obj, "data", &m->data, &m->data_length, message)) != 0)
            return rc;
    }
    if (type == ENGINE_OP_CREATE) {
        if ((rc = json_codec_bool_get(obj, "ephemeral", &m->ephemeral, message)) != 0 ||
            (rc = json_codec_bool_get(obj, "sequential", &m->sequential, message)) != 0 ||
            (rc = json_codec_bool_get(obj, "container", &m->container, message)) != 0 ||
            (rc = json_codec_int_get(obj, "ttl_ms", TTL_MIN, TTL_MAX, &m->has_ttl, &m->ttl_ms,
                                     message)) != 0)
            return rc;
    } else {
        rc = json_codec_int_get(obj, "version", VERSION_MIN, VERSION_MAX, &m->has_version,
                                &m->version, message);
    }
    return rc;
}

/* Puts "data" with its "encoding" into out->op.data. */
static int json_codec_data_apply(const struct json_codec_members *m, uint32_t max_data_bytes,
                                 struct json_codec_op *out, char *message)
{
    bool base64 = false;
    if (m->encoding != NULL) {
        if (m->encoding_length == 6 && memcmp(m->encoding, "base64", 6) == 0) {
            base64 = true;
        } else if (m->encoding_length != 5 || memcmp(m->encoding, "utf-8", 5) != 0) {
            snprintf(message, JSON_CODEC_MESSAGE_SIZE,
                     "unknown \"encoding\": use \"utf-8\" or \"base64\"");
            return CORRAL_E_BAD_ARGUMENTS;
        }
    }
    if (m->data == NULL)
        return 0;
    if (!base64) {
        if (m->data_length > max_data_bytes)
            goto too_big;
        out->op.data = m->data;
        out->op.data_length = m->data_length;
        return 0;
    }
    /* +1: malloc(0) may return NULL, which would look like a failure. */
    uint8_t *bytes = malloc(b64_decoded_max(m->data_length) + 1); /* owned by out */
    if (bytes == NULL) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "out of memory");
        return CORRAL_E_NO_MEMORY;
    }
    size_t n;
    if (!b64_decode(m->data, m->data_length, bytes, &n)) {
        free(bytes);
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "\"data\" is not valid base64");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    out->owned_data = bytes;
    if (n > max_data_bytes)
        goto too_big;
    out->op.data = bytes;
    out->op.data_length = n;
    return 0;
too_big:
    snprintf(message, JSON_CODEC_MESSAGE_SIZE, "\"data\" is larger than %" PRIu32 " bytes",
             max_data_bytes);
    return CORRAL_E_BAD_ARGUMENTS;
}

/* Checks the members' values and fills out->op (its type is set). */
static int json_codec_members_apply(const struct json_codec_members *m, uint32_t max_data_bytes,
                                    struct json_codec_op *out, char *message)
{
    int rc;
    out->op.version = -1;
    out->op.create_flags = 0;
    out->op.ttl_ms = 0;
    out->op.data = NULL;
    out->op.data_length = 0;
    switch (out->op.type) {
    case ENGINE_OP_CREATE:
        if ((rc = json_codec_data_apply(m, max_data_bytes, out, message)) != 0)
            return rc;
        if (m->has_ttl && (m->ttl_ms < TTL_MIN || m->ttl_ms > TTL_MAX))
            return message_not_integer("ttl_ms", TTL_MIN, TTL_MAX, message);
        if (m->ttl_ms > 0 && (m->ephemeral || m->container)) {
            snprintf(message, JSON_CODEC_MESSAGE_SIZE,
                     "\"ttl_ms\" cannot be combined with \"ephemeral\" or \"container\"");
            return CORRAL_E_BAD_ARGUMENTS;
        }
        if (m->container && (m->ephemeral || m->sequential)) {
            snprintf(message, JSON_CODEC_MESSAGE_SIZE,
                     "\"container\" cannot be combined with \"ephemeral\" or \"sequential\"");
            return CORRAL_E_BAD_ARGUMENTS;
        }
        out->op.create_flags = (m->ephemeral ? ENGINE_CREATE_EPHEMERAL : 0u) |
                               (m->sequential ? ENGINE_CREATE_SEQUENTIAL : 0u) |
                               (m->container ? ENGINE_CREATE_CONTAINER : 0u);
        out->op.ttl_ms = m->ttl_ms;
        return 0;
    case ENGINE_OP_SET:
    case ENGINE_OP_DELETE:
    case ENGINE_OP_CHECK:
        if (out->op.type == ENGINE_OP_SET &&
            (rc = json_codec_data_apply(m, max_data_bytes, out, message)) != 0)
            return rc;
        if (m->has_version && (m->version < VERSION_MIN || m->version > VERSION_MAX))
            return message_not_integer("version", VERSION_MIN, VERSION_MAX, message);
        if (m->has_version)
            out->op.version = (int32_t)m->version;
        return 0;
    }
    snprintf(message, JSON_CODEC_MESSAGE_SIZE, "unknown op");
    return CORRAL_E_BAD_ARGUMENTS;
}

int json_codec_op_fields(json_t *obj, uint32_t max_data_bytes, struct json_codec_op *out,
                         char *message)
{
    struct json_codec_members m;
    int rc = json_codec_members_from_json(obj, out->op.type, &m, message);
    if (rc != 0)
        return rc;
    return json_codec_members_apply(&m, max_data_bytes, out, message);
}

/* ---- a flat op body, read straight from its text ----
 *
 * Create and set bodies are small flat objects, {"data":"...","version":3}. Parsing one
 * with jansson costs about 20,000 instructions and 15 allocations (a hash table, string
 * buffers), the largest user-space cost of a write after the answer (callgrind over
 * tools/bench W2). This reads the common shape in place: members whose keys and string
 * values hold no escape, integers without fraction or exponent, true, false and null.
 * It judges nothing: anything else (an escape, a nested value, another number, a
 * duplicate key, a member of the wrong type, text that is not JSON) makes it give up,
 * and the caller parses the body with jansson instead, so every error and edge case
 * has exactly one implementation. What it accepts, jansson accepts with the same
 * meaning (tests/unit/test_json_codec.c compares the two on many bodies). */

#define FLAT_MEMBERS_MAX 16

struct flat_reader {
    const char *p;
    const char *end;
};

enum flat_kind { FLAT_STRING, FLAT_INTEGER, FLAT_TRUE, FLAT_FALSE, FLAT_NULL };

struct flat_value {
    enum flat_kind kind;
    const char *text; /* FLAT_STRING: the characters between the quotes */
    size_t length;
    json_int_t integer;
};

static void flat_space_skip(struct flat_reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

/* A string without escapes or control characters, valid UTF-8. */
static bool flat_string_read(struct flat_reader *r, const char **text, size_t *length)
{
    if (r->p >= r->end || *r->p != '"')
        return false;
    const char *start = ++r->p;
    while (r->p < r->end && *r->p != '"') {
        unsigned char c = (unsigned char)*r->p;
        if (c == '\\' || c < 0x20)
            return false;
        r->p++;
    }
    if (r->p >= r->end)
        return false;
    *text = start;
    *length = (size_t)(r->p - start);
    r->p++;
    return json_codec_text_ok((const uint8_t *)start, *length);
}

static bool flat_literal_read(struct flat_reader *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return false;
    r->p += n;
    return true;
}

static bool flat_value_read(struct flat_reader *r, struct flat_value *v)
{
    if (r->p >= r->end)
        return false;
    char c = *r->p;
    if (c == '"') {
        v->kind = FLAT_STRING;
        return flat_string_read(r, &v->text, &v->length);
    }
    if (c == 't') {
        v->kind = FLAT_TRUE;
        return flat_literal_read(r, "true", 4);
    }
    if (c == 'f') {
        v->kind = FLAT_FALSE;
        return flat_literal_read(r, "false", 5);
    }
    if (c == 'n') {
        v->kind = FLAT_NULL;
        return flat_literal_read(r, "null", 4);
    }
    /* -?(0|[1-9][0-9]*), at most 18 digits (no overflow), then no fraction or exponent. */
    bool negative = c == '-';
    if (negative)
        r->p++;
    const char *digits = r->p;
    json_int_t value = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        if (r->p - digits < 18) /* past 18 digits it gives up below; no overflow here */
            value = value * 10 + (*r->p - '0');
        r->p++;
    }
    size_t n = (size_t)(r->p - digits);
    if (n == 0 || n > 18 || (n > 1 && digits[0] == '0'))
        return false;
    if (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E'))
        return false;
    v->kind = FLAT_INTEGER;
    v->integer = negative ? -value : value;
    return true;
}

static bool flat_key_is(const char *key, size_t length, const char *name)
{
    return strlen(name) == length && memcmp(key, name, length) == 0;
}

/* Takes one member into m when type reads it. Returns false when its value has the
 * wrong type for it (jansson then says which). */
static bool flat_member_take(enum engine_op_type type, const char *key, size_t key_length,
                             const struct flat_value *v, struct json_codec_members *m)
{
    bool data_op = type == ENGINE_OP_CREATE || type == ENGINE_OP_SET;
    if (data_op && flat_key_is(key, key_length, "data")) {
        if (v->kind != FLAT_STRING)
            return false;
        m->data = v->text;
        m->data_length = v->length;
        return true;
    }
    if (data_op && flat_key_is(key, key_length, "encoding")) {
        if (v->kind != FLAT_STRING)
            return false;
        m->encoding = v->text;
        m->encoding_length = v->length;
        return true;
    }
    if (type == ENGINE_OP_CREATE) {
        bool *flag = flat_key_is(key, key_length, "ephemeral")    ? &m->ephemeral
                     : flat_key_is(key, key_length, "sequential") ? &m->sequential
                     : flat_key_is(key, key_length, "container")  ? &m->container
                                                                  : NULL;
        if (flag != NULL) {
            *flag = v->kind == FLAT_TRUE;
            return v->kind == FLAT_TRUE || v->kind == FLAT_FALSE;
        }
        if (flat_key_is(key, key_length, "ttl_ms")) {
            if (v->kind != FLAT_INTEGER)
                return false;
            m->has_ttl = true;
            m->ttl_ms = v->integer;
            return true;
        }
    } else if (flat_key_is(key, key_length, "version")) {
        if (v->kind != FLAT_INTEGER)
            return false;
        m->has_version = true;
        m->version = v->integer;
        return true;
    }
    return true; /* a member this op does not read: ignored, as with jansson */
}

/* Reads body into m. Returns false when it gives up (see above). */
static bool json_codec_members_from_text(const char *body, size_t length, enum engine_op_type type,
                                         struct json_codec_members *m)
{
    struct flat_reader r = {.p = body, .end = body + length};
    const char *keys[FLAT_MEMBERS_MAX];
    size_t key_lengths[FLAT_MEMBERS_MAX];
    size_t count = 0;
    memset(m, 0, sizeof *m);
    if (length == 0)
        return true; /* no body: every member takes its default */
    flat_space_skip(&r);
    if (r.p >= r.end || *r.p++ != '{')
        return false;
    flat_space_skip(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            const char *key;
            size_t key_length;
            struct flat_value v = {.kind = FLAT_NULL};
            flat_space_skip(&r);
            if (count == FLAT_MEMBERS_MAX || !flat_string_read(&r, &key, &key_length))
                return false;
            for (size_t i = 0; i < count; i++)
                if (key_lengths[i] == key_length && memcmp(keys[i], key, key_length) == 0)
                    return false; /* a duplicate: jansson rejects it */
            keys[count] = key;
            key_lengths[count++] = key_length;
            flat_space_skip(&r);
            if (r.p >= r.end || *r.p++ != ':')
                return false;
            flat_space_skip(&r);
            if (!flat_value_read(&r, &v) || !flat_member_take(type, key, key_length, &v, m))
                return false;
            flat_space_skip(&r);
            if (r.p < r.end && *r.p == ',') {
                r.p++;
                continue;
            }
            if (r.p < r.end && *r.p == '}') {
                r.p++;
                break;
            }
            return false;
        }
    }
    flat_space_skip(&r);
    return r.p == r.end;
}

int json_codec_op_body_parse(const void *body, size_t length, uint32_t max_data_bytes,
                             struct json_codec_op *out, json_t **doc, char *message)
{
    struct json_codec_members m;
    *doc = NULL;
    if (json_codec_members_from_text(body, length, out->op.type, &m))
        return json_codec_members_apply(&m, max_data_bytes, out, message);
    int rc = json_codec_body_parse(body, length, doc, message);
    if (rc != 0)
        return rc;
    return json_codec_op_fields(*doc, max_data_bytes, out, message);
}

const char *json_codec_op_name(enum engine_op_type type)
{
    switch (type) {
    case ENGINE_OP_CREATE:
        return "create";
    case ENGINE_OP_SET:
        return "set";
    case ENGINE_OP_DELETE:
        return "delete";
    case ENGINE_OP_CHECK:
        return "check";
    }
    return "unknown";
}

int json_codec_multi_op(json_t *obj, uint32_t max_data_bytes, struct json_codec_op *out,
                        char *message)
{
    if (!json_is_object(obj)) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "each op must be a JSON object");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    json_t *op = json_object_get(obj, "op");
    if (!json_is_string(op)) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "\"op\" must be a string");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    static const enum engine_op_type types[] = {ENGINE_OP_CREATE, ENGINE_OP_SET, ENGINE_OP_DELETE,
                                                ENGINE_OP_CHECK};
    bool found = false;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *name = json_codec_op_name(types[i]);
        if (json_string_length(op) == strlen(name) && strcmp(json_string_value(op), name) == 0) {
            out->op.type = types[i];
            found = true;
        }
    }
    if (!found) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE,
                 "\"op\" must be \"create\", \"set\", \"delete\" or \"check\"");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    json_t *path = json_object_get(obj, "path");
    if (!json_is_string(path)) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE, "\"path\" must be a string");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    out->op.path = json_string_value(path);
    out->op.path_length = json_string_length(path);
    return json_codec_op_fields(obj, max_data_bytes, out, message);
}

bool json_codec_version_parse(const char *s, int32_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    if (strcmp(s, "-1") == 0) {
        *out = -1;
        return true;
    }
    long long v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
        if (v > INT32_MAX)
            return false;
    }
    *out = (int32_t)v;
    return true;
}

int json_codec_session_open_parse(json_t *obj, uint32_t *timeout_ms, char *message)
{
    json_t *v = obj != NULL ? json_object_get(obj, "timeout_ms") : NULL;
    if (v == NULL || !json_is_integer(v) || json_integer_value(v) <= 0 ||
        json_integer_value(v) > UINT32_MAX) {
        snprintf(message, JSON_CODEC_MESSAGE_SIZE,
                 "\"timeout_ms\" is required: a positive integer of milliseconds");
        return CORRAL_E_BAD_ARGUMENTS;
    }
    *timeout_ms = (uint32_t)json_integer_value(v);
    return 0;
}

/* ---- the read answer, rendered directly ----
 *
 * GET of a znode is the most frequent request by far. Building it as a jansson tree
 * costs a dozen allocations and printf-formatted numbers per answer, which the profile
 * showed as about a third of the server's user time on reads. This renders the same
 * JSON straight into one buffer. The output is exactly what the jansson path produces
 * for the same fields (the tests compare parsed answers either way). */

struct json_codec_out {
    char *p;
};

static void out_raw(struct json_codec_out *o, const char *s, size_t n)
{
    memcpy(o->p, s, n);
    o->p += n;
}

#define OUT_LITERAL(o, s) out_raw((o), (s), sizeof(s) - 1)

static void out_u64(struct json_codec_out *o, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *o->p++ = digits[--n];
}

static void out_i64(struct json_codec_out *o, int64_t v)
{
    if (v < 0) {
        *o->p++ = '-';
        out_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        out_u64(o, (uint64_t)v);
    }
}

/* Bytes needed for s as a JSON string body (without quotes); s is valid UTF-8. */
static size_t escaped_length(const uint8_t *s, size_t n)
{
    size_t length = n;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
            length += 1;
        else if (c < 0x20)
            length += 5;
    }
    return length;
}

static void out_escaped(struct json_codec_out *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        switch (c) {
        case '"':
            OUT_LITERAL(o, "\\\"");
            break;
        case '\\':
            OUT_LITERAL(o, "\\\\");
            break;
        case '\b':
            OUT_LITERAL(o, "\\b");
            break;
        case '\f':
            OUT_LITERAL(o, "\\f");
            break;
        case '\n':
            OUT_LITERAL(o, "\\n");
            break;
        case '\r':
            OUT_LITERAL(o, "\\r");
            break;
        case '\t':
            OUT_LITERAL(o, "\\t");
            break;
        default:
            if (c < 0x20) {
                OUT_LITERAL(o, "\\u00");
                *o->p++ = hex[c >> 4];
                *o->p++ = hex[c & 15];
            } else {
                *o->p++ = (char)c;
            }
        }
    }
}

/* Writes the stat object's members (after its opening brace "czxid": ... to the last
 * number), the same fields in the same order as json_codec_stat. At most 300 bytes. */
static void out_stat_members(struct json_codec_out *o, const struct znode_stat *st)
{
    OUT_LITERAL(o, "\"czxid\":");
    out_u64(o, st->czxid);
    OUT_LITERAL(o, ",\"mzxid\":");
    out_u64(o, st->mzxid);
    OUT_LITERAL(o, ",\"pzxid\":");
    out_u64(o, st->pzxid);
    OUT_LITERAL(o, ",\"ctime\":");
    out_i64(o, st->ctime);
    OUT_LITERAL(o, ",\"mtime\":");
    out_i64(o, st->mtime);
    OUT_LITERAL(o, ",\"version\":");
    out_i64(o, st->version);
    OUT_LITERAL(o, ",\"cversion\":");
    out_i64(o, st->cversion);
    OUT_LITERAL(o, ",\"aversion\":");
    out_i64(o, st->aversion);
    OUT_LITERAL(o, ",\"ephemeralOwner\":\"");
    if (st->ephemeral_owner) {
        char id[17];
        json_codec_session_format(st->ephemeral_owner, id);
        out_raw(o, id, 16);
    } else {
        *o->p++ = '0';
    }
    OUT_LITERAL(o, "\",\"dataLength\":");
    out_u64(o, st->data_length);
    OUT_LITERAL(o, ",\"numChildren\":");
    out_u64(o, st->num_children);
}

char *json_codec_read_render(const char *path, size_t path_length, const uint8_t *data,
                             size_t data_length, const struct znode_stat *st, bool force_base64,
                             size_t *length)
{
    if (data == NULL)
        data = (const uint8_t *)"";
    bool text = !force_base64 && json_codec_text_ok(data, data_length);
    size_t data_chars = text ? escaped_length(data, data_length) : b64_encoded_length(data_length);
    /* The fixed envelope and eleven numbers of at most 20 digits and a sign. */
    size_t capacity = escaped_length((const uint8_t *)path, path_length) + data_chars + 512;
    char *buffer = malloc(capacity); /* owned by the caller (free) */
    if (buffer == NULL)
        return NULL;
    struct json_codec_out o = {.p = buffer};
    OUT_LITERAL(&o, "{\"path\":\"");
    out_escaped(&o, (const uint8_t *)path, path_length);
    OUT_LITERAL(&o, "\",\"data\":\"");
    if (text)
        out_escaped(&o, data, data_length);
    else
        o.p += b64_encode(data, data_length, o.p);
    if (text)
        OUT_LITERAL(&o, "\",\"encoding\":\"utf-8\",\"stat\":{");
    else
        OUT_LITERAL(&o, "\",\"encoding\":\"base64\",\"stat\":{");
    out_stat_members(&o, st);
    OUT_LITERAL(&o, "}}");
    *o.p = '\0';
    *length = (size_t)(o.p - buffer);
    return buffer;
}

char *json_codec_path_stat_render(const char *path, size_t path_length, const struct znode_stat *st,
                                  size_t *length)
{
    size_t capacity = escaped_length((const uint8_t *)path, path_length) + 512;
    char *buffer = malloc(capacity); /* owned by the caller (free) */
    if (buffer == NULL)
        return NULL;
    struct json_codec_out o = {.p = buffer};
    OUT_LITERAL(&o, "{\"path\":\"");
    out_escaped(&o, (const uint8_t *)path, path_length);
    OUT_LITERAL(&o, "\",\"stat\":{");
    out_stat_members(&o, st);
    OUT_LITERAL(&o, "}}");
    *o.p = '\0';
    *length = (size_t)(o.p - buffer);
    return buffer;
}
