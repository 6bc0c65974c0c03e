/* routes.c: what each URL of the HTTP API does.
 *
 * Reads answer at once from the engine's local state. Writes are submitted to the
 * engine and parked (see http.h); routes_on_done turns the engine's result into the
 * stored response. Only the JSON shape of bodies is checked here; path rules and
 * znode semantics are the engine's (it answers BAD_ARGUMENTS, NO_NODE, ...). */
#include "routes.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_codec.h"
#include "path.h"

#define ROUTES_ALLOW_ZNODE "GET, HEAD, POST, PUT, DELETE"

/* True when path[0..n) is prefix followed by nothing or by '/'; *rest is what follows
 * the prefix (empty or starting with '/'). */
static bool routes_match(const char *path, size_t n, const char *prefix, const char **rest,
                         size_t *rest_length)
{
    size_t p = strlen(prefix);
    if (n < p || memcmp(path, prefix, p) != 0 || (n > p && path[p] != '/'))
        return false;
    *rest = path + p;
    *rest_length = n - p;
    return true;
}

static int routes_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes the URL rest ("" or "/a/b") into r->path as a znode path ("/" for
 * the root). A malformed escape or a NUL byte is refused: the path then could not be
 * passed on unambiguously. Returns 0 or BAD_ARGUMENTS (response stored). */
static int routes_path_decode(struct api_request *r, const char *rest, size_t n)
{
    char *out = malloc(n + 2);
    if (out == NULL) {
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, NULL, NULL, 0, -1);
        return CORRAL_E_NO_MEMORY;
    }
    size_t o = 0;
    if (n == 0)
        out[o++] = '/';
    for (size_t i = 0; i < n; i++) {
        char c = rest[i];
        if (c == '%') {
            int hi = i + 2 < n ? routes_hex(rest[i + 1]) : -1;
            int lo = hi >= 0 ? routes_hex(rest[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS,
                                          hi == 0 && lo == 0 ? "the path contains a NUL byte (%00)"
                                                             : "the path has a malformed %-escape",
                                          NULL, 0, -1);
                return CORRAL_E_BAD_ARGUMENTS;
            }
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    r->path = out;
    r->path_length = o;
    return 0;
}

/* Parses a boolean query argument ("true"/"false"/"1"/"0"; absent = false). */
static bool routes_query_bool(struct api_request *r, const char *name, bool *out)
{
    const char *v = api_request_query(r, name);
    *out = false;
    if (v == NULL || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        return true;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || *v == '\0') {
        *out = true;
        return true;
    }
    char message[JSON_CODEC_MESSAGE_SIZE];
    snprintf(message, sizeof message, "query parameter \"%s\" must be true or false", name);
    api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS, message, NULL, 0, -1);
    return false;
}

static void routes_method_not_allowed(struct api_request *r, const char *allow)
{
    char message[JSON_CODEC_MESSAGE_SIZE];
    snprintf(message, sizeof message, "method %s is not allowed here; allowed: %s", r->method,
             allow);
    api_request_respond_error(r, CORRAL_E_METHOD_NOT_ALLOWED, message, NULL, 0, -1);
    r->allow = allow;
}

static bool routes_method_is(const struct api_request *r, const char *method)
{
    return strcmp(r->method, method) == 0;
}

/* Error about r->path. */
static void routes_path_error(struct api_request *r, int code, const char *message)
{
    if (message == NULL && code == CORRAL_E_BAD_ARGUMENTS && r->path != NULL)
        message = path_problem(r->path, r->path_length, false);
    api_request_respond_error(r, code, message, r->path, r->path_length, -1);
}

/* ---- engine completions ---- */

static void routes_on_done(void *arg, const struct engine_result *res)
{
    struct api_request *r = arg;
    if (r->orphaned) {
        api_request_engine_done(r); /* the client is gone; nothing to answer */
        return;
    }
    if (res->error != 0) {
        const char *path = res->error_path;
        size_t length = path != NULL ? strlen(path) : 0;
        if (path == NULL && r->route != API_ROUTE_MULTI && r->path != NULL) {
            path = r->path;
            length = r->path_length;
        }
        int index = r->route == API_ROUTE_MULTI ? res->failed_index : -1;
        api_request_respond_error(r, res->error, res->message, path, length, index);
        api_request_engine_done(r);
        return;
    }
    char id[17];
    switch (r->route) {
    case API_ROUTE_CREATE:
    case API_ROUTE_SET: {
        const char *path = r->path;
        size_t length = r->path_length;
        struct znode_stat st = {0};
        if (res->op_count > 0) {
            st = res->ops[0].stat;
            if (res->ops[0].path != NULL) {
                path = res->ops[0].path;
                length = strlen(path);
            }
        }
        /* {"path","stat"}, rendered directly (the write hot path) */
        size_t text_length = 0;
        char *text = json_codec_path_stat_render(path, length, &st, &text_length);
        api_request_respond_text(r, r->route == API_ROUTE_CREATE ? 201 : 200, text, text_length);
        break;
    }
    case API_ROUTE_DELETE:
    case API_ROUTE_SESSION_CLOSE:
        api_request_respond(r, 204, NULL);
        break;
    case API_ROUTE_MULTI: {
        json_t *results = json_array();
        for (size_t i = 0; i < res->op_count; i++) {
            const struct engine_op_result *op = &res->ops[i];
            json_t *o = json_pack("{s:s,s:s}", "op", json_codec_op_name(op->type), "path",
                                  op->path != NULL ? op->path : "");
            if (op->type == ENGINE_OP_CREATE || op->type == ENGINE_OP_SET)
                json_object_set_new(o, "stat", json_codec_stat(&op->stat));
            json_array_append_new(results, o);
        }
        api_request_respond(r, 200, json_pack("{s:o}", "results", results));
        break;
    }
    case API_ROUTE_SESSION_OPEN:
        json_codec_session_format(res->session_id, id);
        api_request_respond(
            r, 201, json_pack("{s:s,s:I}", "id", id, "timeout_ms", (json_int_t)res->timeout_ms));
        break;
    case API_ROUTE_NONE:
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, "internal error: unknown route", NULL, 0,
                                  -1);
        break;
    }
    api_request_engine_done(r);
}

/* Submits ops; on an immediate error stores it (error_path borrows from ops, which
 * are still alive here). */
static void routes_submit(struct api_request *r, uint64_t session, const struct engine_op *ops,
                          size_t count, bool is_multi)
{
    struct engine *e = api_server_engine(r->server);
    struct engine_result err;
    memset(&err, 0, sizeof err);
    err.failed_index = -1;
    int rc = engine_submit_ops(e, session, ops, count, is_multi, routes_on_done, r, &err);
    if (rc == 0) {
        api_request_engine_wait(r);
        return;
    }
    const char *path = err.error_path;
    size_t length = path != NULL ? strlen(path) : 0;
    if (path == NULL && !is_multi) {
        path = r->path;
        length = r->path_length;
    }
    api_request_respond_error(r, rc, err.message, path, length, is_multi ? err.failed_index : -1);
}

/* ---- znodes ---- */

/* ?watch=true needs a session: one-shot watches are delivered to one. Returns false
 * when a response was stored. */
static bool routes_watch_wanted(struct api_request *r, uint64_t session, bool *watch)
{
    if (!routes_query_bool(r, "watch", watch))
        return false;
    if (*watch && session == 0) {
        routes_path_error(r, CORRAL_E_BAD_ARGUMENTS, "watch=true needs a Corral-Session header");
        return false;
    }
    return true;
}

static bool routes_watch_add(struct api_request *r, uint64_t session, enum watch_kind kind)
{
    int rc = engine_watch_add(api_server_engine(r->server), session, kind, r->path, r->path_length);
    if (rc != 0) {
        routes_path_error(r, rc, NULL);
        return false;
    }
    return true;
}

/* [{"type","path","zxid"}...] of one-shot events: new reference; frees events. */
static json_t *routes_events_json(struct watch_event *events, size_t count)
{
    json_t *list = json_array();
    for (size_t i = 0; list != NULL && i < count; i++)
        json_array_append_new(list, json_pack("{s:s,s:s%,s:I}", "type",
                                              watch_event_type_name(events[i].type), "path",
                                              events[i].path, events[i].path_length, "zxid",
                                              (json_int_t)events[i].zxid));
    watch_events_free(events, count);
    return list;
}

/* ZooKeeper's ordering guarantee is that a client sees a watch event before it sees
 * the change that fired it. Over HTTP a session's events travel on its events poll, a
 * different connection; so a read of the session hands over the session's pending
 * events with the data ("events"), and they leave the queue. A client processes a
 * read's events before its data, and nothing can overtake them. */
static void routes_events_piggyback(struct api_request *r, uint64_t session, json_t *o)
{
    if (session == 0 || o == NULL)
        return;
    struct watch_event *events;
    size_t count = engine_session_events_take(api_server_engine(r->server), session, &events);
    if (count > 0)
        json_object_set_new(o, "events", routes_events_json(events, count));
}

static void routes_redispatch(struct api_request *r, bool timed_out);
static bool routes_session_known(struct api_request *r, uint64_t id);

/* FIFO: a read of a session waits until the session's earlier writes are applied, so
 * it sees them (ZooKeeper applies a session's requests in order). Returns true when r
 * was parked (the read runs again once they are). */
static bool routes_session_fifo_wait(struct api_request *r, uint64_t session)
{
    if (session == 0)
        return false;
    struct engine *e = api_server_engine(r->server);
    uint64_t zxid = engine_session_fifo_zxid(e, session);
    if (zxid == 0)
        return false;
    struct engine_waiter *w = NULL;
    int rc = engine_zxid_wait(e, zxid, api_request_on_wake, r, &w);
    if (rc == 1)
        return false;
    if (rc != 0) {
        routes_path_error(r, rc, NULL);
        return true;
    }
    api_request_park(r, w, 0, routes_redispatch);
    return true;
}

static void routes_linearizable_finish(struct api_request *r, bool timed_out)
{
    if (timed_out || r->park_status != 0) {
        api_request_respond_error(r, timed_out ? CORRAL_E_TIMEOUT : r->park_status,
                                  "no linearizable read point: the leader did not confirm it "
                                  "in time",
                                  r->path, r->path_length, -1);
        return;
    }
    r->linearizable_done = true;
    routes_redispatch(r, false);
}

/* ?linearizable=true: the read waits for a read index confirmed by a majority (Raft
 * 6.4), so it sees every write acknowledged before it started, on any member.
 * ZooKeeper offers only sync-then-read. Returns true when r was parked or answered. */
static bool routes_linearizable_wait(struct api_request *r)
{
    bool linearizable;
    if (r->linearizable_done || !routes_query_bool(r, "linearizable", &linearizable))
        return r->has_response;
    if (!linearizable)
        return false;
    struct engine_waiter *w = NULL;
    int rc = engine_linearizable_wait(api_server_engine(r->server), &r->park_status,
                                      api_request_on_wake, r, &w);
    if (rc == 1)
        return false; /* this member is already at the read point */
    if (rc != 0) {
        routes_path_error(r, rc, NULL);
        return true;
    }
    api_request_park(r, w, api_server_config(r->server)->request_timeout_ms,
                     routes_linearizable_finish);
    return true;
}

static void routes_znode_get(struct api_request *r, uint64_t session, bool head)
{
    struct engine *e = api_server_engine(r->server);
    bool watch;
    if (!routes_watch_wanted(r, session, &watch) || routes_session_fifo_wait(r, session) ||
        routes_linearizable_wait(r))
        return;
    const struct znode *n;
    int rc = engine_lookup(e, r->path, r->path_length, &n);
    if (head) {
        /* exists: the watch is set whether or not the node exists (it fires on create) */
        if (watch && rc != CORRAL_E_BAD_ARGUMENTS && !routes_watch_add(r, session, WATCH_KIND_DATA))
            return;
        /* HEAD: status only, never a body. It cannot carry the session's pending events
         * as a GET does, so it says that there are some: a client reads them (events
         * poll) before it acts on this answer, and the ordering guarantee holds. */
        if (session != 0)
            r->events_pending = engine_session_events_pending(e, session);
        api_request_respond(r, rc == 0 ? 200 : api_error_status(rc), NULL);
        return;
    }
    if (rc != 0) {
        routes_path_error(r, rc, NULL);
        return;
    }
    bool children, force_base64 = false;
    if (!routes_query_bool(r, "children", &children))
        return;
    const char *enc = api_request_query(r, "encoding");
    if (enc != NULL) {
        if (strcmp(enc, "base64") == 0) {
            force_base64 = true;
        } else if (strcmp(enc, "utf-8") != 0) {
            api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS,
                                      "query parameter \"encoding\" must be utf-8 or base64", NULL,
                                      0, -1);
            return;
        }
    }
    struct znode_stat st;
    znode_stat_get(n, &st);
    if (!children && (session == 0 || engine_session_events_pending(e, session) == 0)) {
        /* The common read: rendered directly, without a jansson tree. */
        if (watch && !routes_watch_add(r, session, WATCH_KIND_DATA))
            return;
        size_t length = 0;
        char *text = json_codec_read_render(r->path, r->path_length, n->data, n->data_length, &st,
                                            force_base64, &length);
        api_request_respond_text(r, 200, text, length);
        return;
    }
    json_t *o = json_pack("{s:s%}", "path", r->path, r->path_length);
    if (o == NULL || json_codec_data_set(o, n->data, n->data_length, force_base64) != 0) {
        json_decref(o);
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, NULL, NULL, 0, -1);
        return;
    }
    json_object_set_new(o, "stat", json_codec_stat(&st));
    if (children) {
        json_t *list = json_array();
        for (uint32_t i = 0; i < n->child_count; i++)
            json_array_append_new(list,
                                  json_stringn(n->children[i]->name, n->children[i]->name_length));
        json_object_set_new(o, "children", list);
    }
    if (watch && !routes_watch_add(r, session, WATCH_KIND_DATA)) {
        json_decref(o);
        return;
    }
    routes_events_piggyback(r, session, o);
    api_request_respond(r, 200, o);
}

static void routes_children_get(struct api_request *r, uint64_t session)
{
    struct engine *e = api_server_engine(r->server);
    bool watch;
    if (!routes_watch_wanted(r, session, &watch) || routes_session_fifo_wait(r, session) ||
        routes_linearizable_wait(r))
        return;
    const struct znode *n;
    int rc = engine_lookup(e, r->path, r->path_length, &n);
    if (rc != 0) {
        routes_path_error(r, rc, NULL);
        return;
    }
    if (watch && !routes_watch_add(r, session, WATCH_KIND_CHILD))
        return;
    struct znode_stat st;
    znode_stat_get(n, &st);
    json_t *list = json_array();
    for (uint32_t i = 0; i < n->child_count; i++)
        json_array_append_new(list,
                              json_stringn(n->children[i]->name, n->children[i]->name_length));
    json_t *o = json_pack("{s:s%,s:o,s:o}", "path", r->path, r->path_length, "children", list,
                          "stat", json_codec_stat(&st));
    routes_events_piggyback(r, session, o);
    api_request_respond(r, 200, o);
}

/* Create (POST) and set (PUT): body fields into one op. */
static void routes_znode_write(struct api_request *r, uint64_t session, enum engine_op_type type)
{
    struct engine *e = api_server_engine(r->server);
    char message[JSON_CODEC_MESSAGE_SIZE];
    json_t *doc = NULL;
    struct json_codec_op op;
    memset(&op, 0, sizeof op);
    op.op.type = type;
    op.op.path = r->path;
    op.op.path_length = r->path_length;
    int rc = json_codec_op_body_parse(r->body, r->body_length, engine_max_data_bytes(e), &op, &doc,
                                      message);
    if (rc != 0) {
        routes_path_error(r, rc, message);
    } else if ((op.op.create_flags & ENGINE_CREATE_EPHEMERAL) && session == 0) {
        routes_path_error(r, CORRAL_E_BAD_ARGUMENTS,
                          "an ephemeral node needs a Corral-Session header");
    } else {
        r->route = type == ENGINE_OP_CREATE ? API_ROUTE_CREATE : API_ROUTE_SET;
        routes_submit(r, session, &op.op, 1, false);
    }
    json_codec_op_release(&op);
    json_decref(doc);
}

static void routes_znode_delete(struct api_request *r, uint64_t session)
{
    struct engine_op op;
    memset(&op, 0, sizeof op);
    op.type = ENGINE_OP_DELETE;
    op.path = r->path;
    op.path_length = r->path_length;
    op.version = -1;
    const char *v = api_request_query(r, "version");
    if (v != NULL && !json_codec_version_parse(v, &op.version)) {
        routes_path_error(r, CORRAL_E_BAD_ARGUMENTS,
                          "query parameter \"version\" must be an integer from -1 to 2147483647");
        return;
    }
    r->route = API_ROUTE_DELETE;
    routes_submit(r, session, &op, 1, false);
}

static void routes_znode(struct api_request *r, uint64_t session)
{
    if (routes_method_is(r, "GET"))
        routes_znode_get(r, session, false);
    else if (routes_method_is(r, "HEAD"))
        routes_znode_get(r, session, true);
    else if (routes_method_is(r, "POST"))
        routes_znode_write(r, session, ENGINE_OP_CREATE);
    else if (routes_method_is(r, "PUT"))
        routes_znode_write(r, session, ENGINE_OP_SET);
    else if (routes_method_is(r, "DELETE"))
        routes_znode_delete(r, session);
    else
        routes_method_not_allowed(r, ROUTES_ALLOW_ZNODE);
}

static void routes_multi(struct api_request *r, uint64_t session)
{
    struct engine *e = api_server_engine(r->server);
    char message[JSON_CODEC_MESSAGE_SIZE];
    json_t *doc = NULL;
    int rc = json_codec_body_parse(r->body, r->body_length, &doc, message);
    if (rc != 0) {
        api_request_respond_error(r, rc, message, NULL, 0, -1);
        return;
    }
    json_t *list = doc != NULL ? json_object_get(doc, "ops") : NULL;
    if (!json_is_array(list)) {
        json_decref(doc);
        api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS, "the body must be {\"ops\": [...]}",
                                  NULL, 0, -1);
        return;
    }
    size_t count = json_array_size(list);
    if (count == 0) {
        /* Nothing to do: answered here, the engine is not asked. */
        json_decref(doc);
        api_request_respond(r, 200, json_pack("{s:[]}", "results"));
        return;
    }
    if (count > JSON_CODEC_MULTI_MAX_OPS) {
        json_decref(doc);
        snprintf(message, sizeof message, "a multi carries at most %d ops",
                 JSON_CODEC_MULTI_MAX_OPS);
        api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS, message, NULL, 0, -1);
        return;
    }
    struct json_codec_op *ops = calloc(count, sizeof *ops);
    struct engine_op *plain = calloc(count, sizeof *plain);
    if (ops == NULL || plain == NULL) {
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, NULL, NULL, 0, -1);
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        rc = json_codec_multi_op(json_array_get(list, i), engine_max_data_bytes(e), &ops[i],
                                 message);
        if (rc == 0 && (ops[i].op.create_flags & ENGINE_CREATE_EPHEMERAL) && session == 0) {
            rc = CORRAL_E_BAD_ARGUMENTS;
            snprintf(message, sizeof message, "an ephemeral node needs a Corral-Session header");
        }
        if (rc != 0) {
            api_request_respond_error(r, rc, message, ops[i].op.path,
                                      ops[i].op.path != NULL ? ops[i].op.path_length : 0, (int)i);
            goto out;
        }
        plain[i] = ops[i].op;
    }
    r->route = API_ROUTE_MULTI;
    routes_submit(r, session, plain, count, true);
out:
    if (ops != NULL) {
        for (size_t i = 0; i < count; i++)
            json_codec_op_release(&ops[i]);
    }
    free(ops);
    free(plain);
    json_decref(doc);
}

static void routes_sync_answer(struct api_request *r)
{
    api_request_respond(r, 200,
                        json_pack("{s:s%,s:I}", "path", r->path, r->path_length, "zxid",
                                  (json_int_t)engine_applied_zxid(api_server_engine(r->server))));
}

static void routes_sync_finish(struct api_request *r, bool timed_out)
{
    if (timed_out)
        api_request_respond_error(r, CORRAL_E_TIMEOUT, "sync did not complete in time", r->path,
                                  r->path_length, -1);
    else if (r->park_status != 0)
        routes_path_error(r, r->park_status, NULL);
    else
        routes_sync_answer(r);
}

/* sync: answers once this server has applied everything the leader had committed when
 * the call arrived, confirmed by a majority (a read index). The node need not exist,
 * as in ZooKeeper; the path is only checked for syntax. */
static void routes_sync(struct api_request *r)
{
    struct engine *e = api_server_engine(r->server);
    const struct znode *n;
    int rc = engine_lookup(e, r->path, r->path_length, &n);
    if (rc != 0 && rc != CORRAL_E_NO_NODE) {
        routes_path_error(r, rc, NULL);
        return;
    }
    struct engine_waiter *w = NULL;
    rc = engine_linearizable_wait(e, &r->park_status, api_request_on_wake, r, &w);
    if (rc == 1)
        routes_sync_answer(r);
    else if (rc != 0)
        routes_path_error(r, rc, NULL);
    else
        api_request_park(r, w, api_server_config(r->server)->request_timeout_ms,
                         routes_sync_finish);
}

/* ---- sessions ---- */

static void routes_session_open(struct api_request *r)
{
    struct engine *e = api_server_engine(r->server);
    char message[JSON_CODEC_MESSAGE_SIZE];
    json_t *doc = NULL;
    uint32_t timeout_ms = 0;
    int rc = json_codec_body_parse(r->body, r->body_length, &doc, message);
    if (rc == 0)
        rc = json_codec_session_open_parse(doc, &timeout_ms, message);
    json_decref(doc);
    if (rc != 0) {
        api_request_respond_error(r, rc, message, NULL, 0, -1);
        return;
    }
    r->route = API_ROUTE_SESSION_OPEN;
    rc = engine_session_open(e, timeout_ms, routes_on_done, r);
    if (rc != 0)
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
    else
        api_request_engine_wait(r);
}

static int routes_path_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void routes_session_info(struct api_request *r, uint64_t id, bool full)
{
    struct engine *e = api_server_engine(r->server);
    struct engine_session_info info;
    int rc = engine_session_info_get(e, id, &info);
    if (rc != 0) {
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        return;
    }
    char hex[17];
    json_codec_session_format(info.id, hex);
    json_t *o = json_pack("{s:s,s:I}", "id", hex, "timeout_ms", (json_int_t)info.timeout_ms);
    if (!full || o == NULL) {
        api_request_respond(r, 200, o);
        return;
    }
    json_object_set_new(o, "remaining_ms", json_integer((json_int_t)info.remaining_ms));
    char **paths = calloc(info.ephemeral_count + 1, sizeof *paths);
    json_t *list = json_array();
    bool ok = paths != NULL && list != NULL;
    for (size_t i = 0; ok && i < info.ephemeral_count; i++) {
        size_t need = znode_path_get(info.ephemerals[i], NULL, 0);
        paths[i] = malloc(need + 1);
        ok = paths[i] != NULL;
        if (ok)
            znode_path_get(info.ephemerals[i], paths[i], need + 1);
    }
    if (ok) {
        qsort(paths, info.ephemeral_count, sizeof *paths, routes_path_compare);
        for (size_t i = 0; i < info.ephemeral_count; i++)
            json_array_append_new(list, json_string(paths[i]));
    }
    for (size_t i = 0; paths != NULL && i < info.ephemeral_count; i++)
        free(paths[i]);
    free(paths);
    if (!ok) {
        json_decref(list);
        json_decref(o);
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, NULL, NULL, 0, -1);
        return;
    }
    json_object_set_new(o, "ephemerals", list);
    api_request_respond(r, 200, o);
}

/* ---- long-polls: session events and the resumable watch ---- */

/* A non-negative decimal with nothing around it (no sign, no spaces, no overflow). */
static bool routes_u64_parse(const char *v, uint64_t *out)
{
    if (*v < '0' || *v > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = n;
    return true;
}

/* timeout_ms of a long-poll: absent = the cap; above the cap = the cap. Returns false
 * when a response was stored. */
static bool routes_timeout_parse(struct api_request *r, uint64_t cap, uint64_t *out)
{
    const char *v = api_request_query(r, "timeout_ms");
    *out = cap;
    if (v == NULL)
        return true;
    uint64_t t;
    if (!routes_u64_parse(v, &t)) {
        api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS,
                                  "query parameter \"timeout_ms\" must be a non-negative integer",
                                  NULL, 0, -1);
        return false;
    }
    if (t < cap)
        *out = t;
    return true;
}

static void routes_session_events_answer(struct api_request *r, uint64_t id)
{
    struct engine *e = api_server_engine(r->server);
    /* Answering keeps the session alive: the poll is the client's heartbeat. */
    int rc = engine_session_touch(e, id);
    struct watch_event *events;
    size_t count = engine_session_events_take(e, id, &events);
    if (rc != 0 && count == 0) {
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        return;
    }
    api_request_respond(r, 200, json_pack("{s:o}", "events", routes_events_json(events, count)));
}

static void routes_session_events_finish(struct api_request *r, bool timed_out)
{
    routes_session_events_answer(r, r->park_since);
}

/* GET /v1/sessions/<id>/events?timeout_ms=N: the session's one-shot watch events, as
 * soon as there is one, else none after N ms. The wait is capped below the session
 * timeout (two thirds of it, as ZooKeeper clients ping at a third), so that the answer,
 * which refreshes the session, comes before the session could expire. */
static void routes_session_events(struct api_request *r, uint64_t id)
{
    struct engine *e = api_server_engine(r->server);
    struct engine_session_info info;
    int rc = engine_session_info_get(e, id, &info);
    if (rc != 0) {
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        return;
    }
    uint64_t cap = api_server_config(r->server)->max_poll_ms;
    if (cap > (uint64_t)info.timeout_ms * 2 / 3)
        cap = (uint64_t)info.timeout_ms * 2 / 3;
    uint64_t timeout;
    if (!routes_timeout_parse(r, cap, &timeout))
        return;
    engine_session_touch(e, id);
    struct engine_waiter *w = NULL;
    rc = timeout == 0 ? 1 : engine_session_events_wait(e, id, api_request_on_wake, r, &w);
    if (rc < 0) {
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        return;
    }
    if (rc == 1) {
        routes_session_events_answer(r, id);
        return;
    }
    r->park_since = id;
    api_request_park(r, w, timeout, routes_session_events_finish);
}

/* DELETE /v1/sessions/<id>/watches?path=P&type=data|children|any: ZooKeeper 3.5's
 * removeWatches. 404 NO_WATCHER when the session had no such watch. */
static void routes_watches_remove(struct api_request *r, uint64_t id)
{
    struct engine *e = api_server_engine(r->server);
    const char *path = api_request_query(r, "path");
    const char *type = api_request_query(r, "type");
    if (path == NULL) {
        api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS, "query parameter \"path\" is required",
                                  NULL, 0, -1);
        return;
    }
    bool data = type == NULL || strcmp(type, "any") == 0 || strcmp(type, "data") == 0;
    bool child = type == NULL || strcmp(type, "any") == 0 || strcmp(type, "children") == 0;
    if (!data && !child) {
        api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS,
                                  "query parameter \"type\" must be data, children or any", NULL, 0,
                                  -1);
        return;
    }
    size_t length = strlen(path);
    int rc_data =
        data ? engine_watch_remove(e, id, WATCH_KIND_DATA, path, length) : CORRAL_E_NO_WATCHER;
    int rc_child =
        child ? engine_watch_remove(e, id, WATCH_KIND_CHILD, path, length) : CORRAL_E_NO_WATCHER;
    if (rc_data == 0 || rc_child == 0) {
        api_request_respond(r, 204, NULL);
        return;
    }
    int rc = rc_data != CORRAL_E_NO_WATCHER ? rc_data : rc_child;
    if (rc == CORRAL_E_NO_NODE)
        rc = CORRAL_E_NO_WATCHER;
    api_request_respond_error(r, rc, NULL, path, length, -1);
}

struct routes_history_collect {
    json_t *events;
};

static int routes_history_collect_one(void *arg, const struct engine_history_event *ev)
{
    struct routes_history_collect *c = arg;
    json_t *o = json_pack("{s:s,s:s%,s:I}", "type", watch_event_type_name(ev->type), "path",
                          ev->path, ev->path_length, "zxid", (json_int_t)ev->zxid);
    return json_array_append_new(c->events, o) == 0 ? 0 : CORRAL_E_NO_MEMORY;
}

/* Reads the events after since; stores the answer (events found, COMPACTED, error) and
 * returns true, or returns false with *resume set when there is nothing yet. */
static bool routes_watch_read(struct api_request *r, bool recursive, uint64_t since,
                              bool answer_empty, uint64_t *resume)
{
    struct engine *e = api_server_engine(r->server);
    struct routes_history_collect c = {.events = json_array()};
    int rc = c.events == NULL ? CORRAL_E_NO_MEMORY
                              : engine_history_read(e, r->path, r->path_length, recursive, since,
                                                    api_server_config(r->server)->watch_max_events,
                                                    routes_history_collect_one, &c, resume);
    if (rc == CORRAL_E_COMPACTED) {
        json_decref(c.events);
        json_t *o = json_codec_error(rc,
                                     "the history before this zxid is gone: read the "
                                     "current state and watch again from the zxid given",
                                     r->path, r->path_length, -1);
        json_object_set_new(json_object_get(o, "error"), "zxid",
                            json_integer((json_int_t)engine_applied_zxid(e)));
        api_request_respond(r, api_error_status(rc), o);
        return true;
    }
    if (rc != 0) {
        json_decref(c.events);
        routes_path_error(r, rc, NULL);
        return true;
    }
    if (json_array_size(c.events) == 0 && !answer_empty) {
        json_decref(c.events);
        return false;
    }
    api_request_respond(r, 200,
                        json_pack("{s:o,s:I}", "events", c.events, "zxid", (json_int_t)*resume));
    return true;
}

static void routes_watch_finish(struct api_request *r, bool timed_out)
{
    bool recursive = false;
    routes_query_bool(r, "recursive", &recursive);
    uint64_t resume;
    routes_watch_read(r, recursive, r->park_since, true, &resume);
}

/* GET /v1/watch/<path>?since=Z&recursive=true&timeout_ms=N: every change after Z to the
 * node (or its subtree), as soon as there is one, and the zxid to resume from. Nothing
 * is kept per watcher between polls: the history (memory, then the log) is the state,
 * which is why a client that polls again from the returned zxid misses nothing. */
static void routes_watch(struct api_request *r)
{
    struct engine *e = api_server_engine(r->server);
    bool recursive;
    if (!routes_query_bool(r, "recursive", &recursive))
        return;
    uint64_t since = engine_applied_zxid(e);
    const char *v = api_request_query(r, "since");
    if (v != NULL) {
        if (!routes_u64_parse(v, &since)) {
            api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS,
                                      "query parameter \"since\" must be a zxid", NULL, 0, -1);
            return;
        }
    }
    uint64_t timeout;
    if (!routes_timeout_parse(r, api_server_config(r->server)->max_poll_ms, &timeout))
        return;
    uint64_t resume;
    if (routes_watch_read(r, recursive, since, timeout == 0, &resume))
        return;
    /* A since beyond what this server has applied (a client that talked to a member
     * further ahead) waits for events after since itself. */
    if (since > resume)
        resume = since;
    struct engine_waiter *w = NULL;
    int rc = engine_history_wait(e, r->path, r->path_length, recursive, resume, api_request_on_wake,
                                 r, &w);
    if (rc != 0) {
        routes_path_error(r, rc, NULL);
        return;
    }
    r->park_since = resume;
    api_request_park(r, w, timeout, routes_watch_finish);
}

/* /v1/sessions[/<id>[/keepalive]]; rest is what follows "/v1/sessions". */
static void routes_sessions(struct api_request *r, const char *rest, size_t n)
{
    struct engine *e = api_server_engine(r->server);
    if (n == 0 || (n == 1 && rest[0] == '/')) {
        if (routes_method_is(r, "POST"))
            routes_session_open(r);
        else
            routes_method_not_allowed(r, "POST");
        return;
    }
    rest++; /* skip '/' */
    n--;
    const char *slash = memchr(rest, '/', n);
    size_t id_length = slash != NULL ? (size_t)(slash - rest) : n;
    const char *tail = slash != NULL ? slash : rest + n;
    size_t tail_length = n - id_length;
    const char *allow;
    enum { SESSION, KEEPALIVE, EVENTS, WATCHES } what;
    if (tail_length == 0) {
        what = SESSION;
        allow = "GET, DELETE";
    } else if (tail_length == 10 && memcmp(tail, "/keepalive", 10) == 0) {
        what = KEEPALIVE;
        allow = "POST";
    } else if (tail_length == 7 && memcmp(tail, "/events", 7) == 0) {
        what = EVENTS;
        allow = "GET";
    } else if (tail_length == 8 && memcmp(tail, "/watches", 8) == 0) {
        what = WATCHES;
        allow = "DELETE";
    } else {
        api_request_respond_error(r, CORRAL_E_NO_ROUTE, NULL, NULL, 0, -1);
        return;
    }
    bool allowed = what == SESSION     ? routes_method_is(r, "GET") || routes_method_is(r, "DELETE")
                   : what == KEEPALIVE ? routes_method_is(r, "POST")
                   : what == EVENTS    ? routes_method_is(r, "GET")
                                       : routes_method_is(r, "DELETE");
    if (!allowed) {
        routes_method_not_allowed(r, allow);
        return;
    }
    uint64_t id;
    if (!json_codec_session_parse(rest, id_length, &id)) {
        api_request_respond_error(r, CORRAL_E_SESSION_EXPIRED,
                                  "not a session id (1 to 16 hex digits)", NULL, 0, -1);
        return;
    }
    if (!routes_session_known(r, id))
        return;
    if (what == KEEPALIVE) {
        int rc = engine_session_touch(e, id);
        if (rc != 0)
            api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        else
            routes_session_info(r, id, false);
    } else if (what == EVENTS) {
        routes_session_events(r, id);
    } else if (what == WATCHES) {
        routes_watches_remove(r, id);
    } else if (routes_method_is(r, "GET")) {
        routes_session_info(r, id, true);
    } else {
        r->route = API_ROUTE_SESSION_CLOSE;
        int rc = engine_session_close(e, id, routes_on_done, r);
        if (rc != 0)
            api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        else
            api_request_engine_wait(r);
    }
}

/* ---- cluster and health ---- */

static void routes_cluster(struct api_request *r)
{
    struct engine *e = api_server_engine(r->server);
    const struct config *c = api_server_config(r->server);
    const char *role = engine_role_name(e);
    uint64_t id = engine_member_id(e);
    uint64_t leader = engine_leader_id(e);
    json_t *members = json_array();
    if (c->member_count <= 1) {
        json_array_append_new(members,
                              json_pack("{s:I,s:s,s:n,s:s,s:b}", "id", (json_int_t)id, "http",
                                        c->listen, "peer", "role", role, "reachable", 1));
    }
    for (uint32_t i = 0; c->member_count > 1 && i < c->member_count; i++) {
        const struct config_member *m = &c->members[i];
        struct engine_member_info info;
        engine_member_info_get(e, m->id, &info);
        /* What this member knows: the leader knows every follower; a follower knows
         * the leader (followers do not talk to each other). */
        const char *member_role = m->id == id                      ? role
                                  : m->id == leader                ? "leader"
                                  : !info.heard                    ? "unknown"
                                  : info.reachable && leader == id ? "follower"
                                                                   : "unknown";
        json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:o}", "id", (json_int_t)m->id, "http", m->http,
                              "peer", m->peer, "role", member_role, "reachable",
                              m->id == id  ? json_true()
                              : info.heard ? json_boolean(info.reachable)
                                           : json_null());
        if (o != NULL && strcmp(role, "leader") == 0)
            json_object_set_new(o, "match_zxid", json_integer((json_int_t)info.match_index));
        json_array_append_new(members, o);
    }
    json_t *o =
        json_pack("{s:I,s:s,s:o,s:I,s:I,s:I,s:o}", "id", (json_int_t)id, "role", role, "leader",
                  leader != 0 ? json_integer((json_int_t)leader) : json_null(), "epoch",
                  (json_int_t)engine_epoch(e), "zxid", (json_int_t)engine_applied_zxid(e),
                  "commit_zxid", (json_int_t)engine_commit_zxid(e), "members", members);
    api_request_respond(r, 200, o);
}

/* GET /v1/stats: the server's counters, in the spirit of ZooKeeper's `mntr`. */
static void routes_stats(struct api_request *r)
{
    struct engine_stats st;
    engine_stats_get(api_server_engine(r->server), &st);
    /* The fdatasync histogram: one {le_us, count} per bucket, le_us null for the last
     * (slower than every bound). Counts are per bucket, not cumulative. */
    json_t *histogram = json_array();
    for (size_t i = 0; histogram && i < WAL_SYNC_BUCKETS; i++) {
        json_t *bound = i + 1 < WAL_SYNC_BUCKETS
                            ? json_integer((json_int_t)WAL_SYNC_BUCKET_FIRST_US << i)
                            : json_null();
        json_array_append_new(histogram, json_pack("{s:o,s:I}", "le_us", bound, "count",
                                                   (json_int_t)st.wal.fdatasync_histogram[i]));
    }
    /* The peer counters come from the transport (through main.c), not the engine. */
    struct api_peer_stats peers;
    api_server_peer_stats(r->server, &peers);
    /* One pack; jansson takes the histogram's reference even when it fails (NULL: out
     * of memory). */
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
        "s:I,s:I,s:o,s:I,s:I,s:I,s:I}",
        "nodes", (json_int_t)st.nodes, "wal_sync_us", (json_int_t)st.wal.cycle_us, "wal_write_us",
        (json_int_t)(st.wal.pwrite_us + st.wal.fdatasync_us), "sessions", (json_int_t)st.sessions,
        "data_bytes", (json_int_t)st.data_bytes, "wal_batches", (json_int_t)st.wal.batches,
        "wal_records", (json_int_t)st.wal_records, "snapshots_written",
        (json_int_t)st.snapshots_written, "last_snapshot_zxid", (json_int_t)st.last_snapshot_zxid,
        "last_snapshot_pause_us", (json_int_t)st.last_snapshot_pause_us, "writes_in_flight",
        (json_int_t)st.writes_in_flight, "watches", (json_int_t)st.watches, "parked_waiters",
        (json_int_t)st.waiters, "history_events", (json_int_t)st.history_events, "history_bytes",
        (json_int_t)st.history_bytes, "history_covered_from", (json_int_t)st.history_covered_from,
        "log_first_zxid", (json_int_t)st.log_first_zxid, "wal_prealloc_fallbacks",
        (json_int_t)st.wal.prealloc_fallbacks, "wal_record_bytes", (json_int_t)st.wal.record_bytes,
        "wal_zero_bytes", (json_int_t)st.wal.zero_bytes, "wal_pwrite_us",
        (json_int_t)st.wal.pwrite_us, "wal_fdatasync_us", (json_int_t)st.wal.fdatasync_us,
        "wal_fdatasync_max_us", (json_int_t)st.wal.fdatasync_max_us, "wal_fdatasync_histogram",
        histogram, "peer_frames_sent", (json_int_t)peers.frames_sent, "peer_frames_received",
        (json_int_t)peers.frames_received, "peer_frames_rejected",
        (json_int_t)peers.frames_rejected, "peer_messages_dropped",
        (json_int_t)peers.messages_dropped);
    if (!o) {
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, NULL, NULL, 0, -1);
        return;
    }
    api_request_respond(r, 200, o);
}

static void routes_health(struct api_request *r)
{
    if (api_server_shutting_down(r->server))
        api_request_respond(r, 503, json_pack("{s:s}", "status", "shutting_down"));
    else if (!engine_ready(api_server_engine(r->server)))
        /* no leader, or not caught up with it yet: reads here could be stale */
        api_request_respond(r, 503, json_pack("{s:s}", "status", "not_ready"));
    else
        api_request_respond(r, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- dispatch ---- */

static void routes_min_zxid_finish(struct api_request *r, bool timed_out)
{
    if (timed_out)
        api_request_respond_error(r, CORRAL_E_BEHIND, NULL, NULL, 0, -1);
    else
        routes_redispatch(r, false);
}

/* Corral-Min-Zxid: a client that has seen zxid N never reads older state. A server
 * that has not applied N yet waits up to --min-zxid-wait-ms for it, then answers 503
 * BEHIND (the client tries another member). Returns false when r was answered or
 * parked. */
static bool routes_min_zxid_check(struct api_request *r)
{
    const char *v = api_request_header(r, "Corral-Min-Zxid");
    if (v == NULL)
        return true;
    uint64_t want;
    if (!routes_u64_parse(v, &want)) {
        api_request_respond_error(r, CORRAL_E_BAD_ARGUMENTS,
                                  "Corral-Min-Zxid must be a non-negative integer", NULL, 0, -1);
        return false;
    }
    struct engine *e = api_server_engine(r->server);
    uint32_t wait_ms = api_server_config(r->server)->min_zxid_wait_ms;
    if (want <= engine_applied_zxid(e))
        return true;
    struct engine_waiter *w = NULL;
    int rc = wait_ms == 0 ? CORRAL_E_BEHIND : engine_zxid_wait(e, want, api_request_on_wake, r, &w);
    if (rc == 1)
        return true;
    if (rc != 0) {
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        return false;
    }
    api_request_park(r, w, wait_ms, routes_min_zxid_finish);
    return false;
}

/* Runs the request again from the start, after a wait that made it possible. */
static void routes_redispatch(struct api_request *r, bool timed_out)
{
    if (timed_out) {
        api_request_respond_error(r, CORRAL_E_TIMEOUT, "the request waited too long", NULL, 0, -1);
        return;
    }
    free(r->path);
    r->path = NULL;
    r->path_length = 0;
    r->route = API_ROUTE_NONE;
    routes_dispatch(r);
}

static void routes_session_revalidated(struct api_request *r, bool timed_out)
{
    r->session_revalidated = true; /* once: after this, unknown means unknown */
    routes_redispatch(r, timed_out);
}

/* A session this member does not know may be one that was just opened through another
 * member, whose txn has not reached this one yet (a client may move its session to
 * any member). Before saying SESSION_EXPIRED, a member that does not lead catches up
 * with the leader's commit (a read index) and looks again, as ZooKeeper revalidates a
 * session that reconnects to another server. Returns false when r was parked. */
static bool routes_session_known(struct api_request *r, uint64_t id)
{
    struct engine *e = api_server_engine(r->server);
    struct engine_session_info info;
    if (r->session_revalidated || engine_session_info_get(e, id, &info) == 0 ||
        engine_leader_id(e) == engine_member_id(e) || engine_leader_id(e) == 0)
        return true;
    struct engine_waiter *w = NULL;
    int rc = engine_linearizable_wait(e, &r->park_status, api_request_on_wake, r, &w);
    if (rc != 0) /* 1: already at the read point; <0: the check below answers */
        return true;
    api_request_park(r, w, api_server_config(r->server)->request_timeout_ms,
                     routes_session_revalidated);
    return false;
}

/* Corral-Session: an unknown session stops the request before anything happens;
 * a known one is touched (any request keeps its session alive). */
static bool routes_session_header(struct api_request *r, uint64_t *session)
{
    *session = 0;
    const char *v = api_request_header(r, "Corral-Session");
    if (v == NULL)
        return true;
    uint64_t id;
    if (!json_codec_session_parse(v, strlen(v), &id)) {
        api_request_respond_error(r, CORRAL_E_SESSION_EXPIRED, "Corral-Session is not a session id",
                                  NULL, 0, -1);
        return false;
    }
    if (!routes_session_known(r, id))
        return false;
    int rc = engine_session_touch(api_server_engine(r->server), id);
    if (rc != 0) {
        api_request_respond_error(r, rc, NULL, NULL, 0, -1);
        return false;
    }
    *session = id;
    return true;
}

void routes_dispatch(struct api_request *r)
{
    const char *url = r->uri;
    size_t n = strcspn(url, "?#");
    const char *rest;
    size_t rest_length;
    uint64_t session;

    if (!routes_min_zxid_check(r) || !routes_session_header(r, &session))
        return;

    if (n == strlen("/v1/stats") && memcmp(url, "/v1/stats", n) == 0) {
        if (routes_method_is(r, "GET"))
            routes_stats(r);
        else
            routes_method_not_allowed(r, "GET");
    } else if (n == strlen("/health") && memcmp(url, "/health", n) == 0) {
        if (routes_method_is(r, "GET"))
            routes_health(r);
        else
            routes_method_not_allowed(r, "GET");
    } else if (n == strlen("/v1/cluster") && memcmp(url, "/v1/cluster", n) == 0) {
        if (routes_method_is(r, "GET"))
            routes_cluster(r);
        else
            routes_method_not_allowed(r, "GET");
    } else if (n == strlen("/v1/multi") && memcmp(url, "/v1/multi", n) == 0) {
        if (routes_method_is(r, "POST"))
            routes_multi(r, session);
        else
            routes_method_not_allowed(r, "POST");
    } else if (routes_match(url, n, "/v1/znodes", &rest, &rest_length)) {
        if (routes_path_decode(r, rest, rest_length) == 0)
            routes_znode(r, session);
    } else if (routes_match(url, n, "/v1/children", &rest, &rest_length)) {
        if (!routes_method_is(r, "GET"))
            routes_method_not_allowed(r, "GET");
        else if (routes_path_decode(r, rest, rest_length) == 0)
            routes_children_get(r, session);
    } else if (routes_match(url, n, "/v1/sync", &rest, &rest_length)) {
        if (!routes_method_is(r, "POST"))
            routes_method_not_allowed(r, "POST");
        else if (routes_path_decode(r, rest, rest_length) == 0)
            routes_sync(r);
    } else if (routes_match(url, n, "/v1/watch", &rest, &rest_length)) {
        if (!routes_method_is(r, "GET"))
            routes_method_not_allowed(r, "GET");
        else if (routes_path_decode(r, rest, rest_length) == 0)
            routes_watch(r);
    } else if (routes_match(url, n, "/v1/sessions", &rest, &rest_length)) {
        routes_sessions(r, rest, rest_length);
    } else {
        api_request_respond_error(r, CORRAL_E_NO_ROUTE, NULL, NULL, 0, -1);
    }
}
