/* json_codec.h: the JSON shapes of the HTTP API, built and parsed with jansson.
 *
 * Everything that turns engine values into JSON (stat, data, errors) or JSON request
 * bodies into engine ops lives here, so the shapes are defined once and unit-testable
 * without a server. json_t never leaves api/. Functions returning json_t * return a
 * NEW reference (the caller owns it, or hands it on with a *_new / "o" call). */
#ifndef CORRAL_API_JSON_CODEC_H
#define CORRAL_API_JSON_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine.h"

/* Size of the message buffers the parsers below fill on failure. */
#define JSON_CODEC_MESSAGE_SIZE 160

/* Most ops a multi may carry. */
#define JSON_CODEC_MULTI_MAX_OPS 1000

/* The HTTP status of an error code (one switch over the whole table, no default). */
unsigned api_error_status(int code);

/* True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, nothing above
 * U+10FFFF) and contains no NUL byte, i.e. can go out as a JSON string as it is. */
bool json_codec_text_ok(const uint8_t *s, size_t n);

/* {"czxid",...,"ephemeralOwner","dataLength","numChildren"}; new reference or NULL. */
json_t *json_codec_stat(const struct znode_stat *st);

/* Formats a session id as 16 lowercase hex digits into out (17 bytes). */
void json_codec_session_format(uint64_t id, char out[17]);

/* Parses 1..16 hex digits (no sign, no prefix) into a non-zero id. */
bool json_codec_session_parse(const char *s, size_t n, uint64_t *out);

/* Sets "data" and "encoding" on obj: "utf-8" when the bytes pass json_codec_text_ok
 * and force_base64 is false, else "base64". Returns 0 or -1 (out of memory). */
int json_codec_data_set(json_t *obj, const uint8_t *data, size_t length, bool force_base64);

/* {"error": {"code", "message", "path"?, "index"?}}. path may be NULL (omitted; also
 * omitted when it is not valid UTF-8); index < 0 is omitted. New reference or NULL. */
json_t *json_codec_error(int code, const char *message, const char *path, size_t path_length,
                         int index);

/* Parses a request body that must be a JSON object (duplicate keys rejected). An
 * empty body gives *out = NULL and 0 (callers decide whether that is allowed).
 * Returns 0 with *out a new reference, or CORRAL_E_BAD_ARGUMENTS with message set. */
int json_codec_body_parse(const void *body, size_t length, json_t **out, char *message);

/* An op decoded from JSON. op.path and op.data borrow from the json_t it came from
 * or from owned_data; both must outlive the use of op. Release with
 * json_codec_op_release. */
struct json_codec_op {
    struct engine_op op;
    uint8_t *owned_data; /* decoded base64, malloc'd, or NULL */
};

void json_codec_op_release(struct json_codec_op *op);

/* Fills out->op's fields other than type and path from obj (may be NULL = all
 * defaults) for an op of out->op.type:
 *   CREATE: data, encoding, ephemeral, sequential, container, ttl_ms
 *   SET: data, encoding, version       DELETE, CHECK: version
 * Checks JSON types, the encoding, base64, data size (<= max_data_bytes) and the
 * flag combinations (ttl_ms > 0 excludes ephemeral/container; container excludes
 * ephemeral/sequential). Unknown fields are ignored. Returns 0 or
 * CORRAL_E_BAD_ARGUMENTS with message set (out needs json_codec_op_release either
 * way). */
int json_codec_op_fields(json_t *obj, uint32_t max_data_bytes, struct json_codec_op *out,
                         char *message);

/* Reads a create, set, delete or check body (length 0 = no body, all defaults) into
 * out (out->op.type set by the caller) with the rules of json_codec_op_fields. A flat
 * body is read in place; any other is parsed with jansson into *doc (a new reference
 * the caller must json_decref, NULL when none), from which op.data may borrow. So op
 * borrows from body or *doc, and both must outlive its use. Returns 0, or
 * CORRAL_E_BAD_ARGUMENTS / CORRAL_E_NO_MEMORY with message set (out needs
 * json_codec_op_release either way). */
int json_codec_op_body_parse(const void *body, size_t length, uint32_t max_data_bytes,
                             struct json_codec_op *out, json_t **doc, char *message);

/* Decodes one element of a multi's "ops": {"op": "create"|"set"|"delete"|"check",
 * "path": "...", ...fields}. Returns 0 or CORRAL_E_BAD_ARGUMENTS with message set. */
int json_codec_multi_op(json_t *obj, uint32_t max_data_bytes, struct json_codec_op *out,
                        char *message);

/* Parses a version given as a query parameter: an integer in [-1, INT32_MAX]. */
bool json_codec_version_parse(const char *s, int32_t *out);

/* Parses {"timeout_ms": N}, N a positive integer that fits in 32 bits. */
int json_codec_session_open_parse(json_t *obj, uint32_t *timeout_ms, char *message);

/* The name of an op type in results ("create", ...). */
const char *json_codec_op_name(enum engine_op_type type);

/* The answer to a read, {"path","data","encoding","stat"}, rendered straight to text
 * (the hot path; equal to what the jansson path builds). Returns a malloc'd,
 * NUL-terminated string owned by the caller (free), *length its length, or NULL when
 * out of memory. */
char *json_codec_read_render(const char *path, size_t path_length, const uint8_t *data,
                             size_t data_length, const struct znode_stat *st, bool force_base64,
                             size_t *length);

/* The answer to a create or set, {"path","stat"}, rendered the same way. Returns a
 * malloc'd, NUL-terminated string owned by the caller (free), or NULL when out of
 * memory. */
char *json_codec_path_stat_render(const char *path, size_t path_length, const struct znode_stat *st,
                                  size_t *length);

#endif
