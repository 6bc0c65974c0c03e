/* http.h: the HTTP server: libmicrohttpd driven from the libuv loop, one thread.
 *
 * MHD runs in external mode with MHD_USE_EPOLL: its one epoll fd sits in a uv_poll_t,
 * and a uv_timer_t is re-armed from MHD_get_timeout() after every MHD_run(). Writes
 * park their connection (MHD_suspend_connection) until the engine's done callback
 * stores the answer; the callback resumes the connection and schedules MHD_run() on
 * the next loop turn (a 0-ms "kick" timer), because it may run while MHD is on the
 * stack and MHD_run() must never be re-entered.
 *
 * This header is shared by http.c (transport), routes.c (what each URL does) and
 * main.c (start/stop). The server context is passed explicitly; nothing is global. */
#ifndef CORRAL_API_HTTP_H
#define CORRAL_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>

#include "config.h"
#include "engine.h"

/* Same shape and levels as engine_host.log: 0 debug, 1 info, 2 warn, 3 error. */
typedef void (*api_log_fn)(void *data, int level, const char *message);

struct api_server;

/* What routes.c remembers between submitting a write and its done callback. */
enum api_route {
    API_ROUTE_NONE = 0,
    API_ROUTE_CREATE,
    API_ROUTE_SET,
    API_ROUTE_DELETE,
    API_ROUTE_MULTI,
    API_ROUTE_SESSION_OPEN,
    API_ROUTE_SESSION_CLOSE,
};

/* One HTTP request. Allocated by http.c when the request line arrives, freed when
 * MHD reports the request finished (or, if the engine still holds it then, by the
 * engine's done callback). routes.c reads it and fills the response through
 * api_request_respond*. */
struct api_request {
    struct api_server *server;
    struct MHD_Connection *conn;
    char *uri;          /* raw request target, not percent-decoded; owned */
    const char *method; /* MHD's, valid for the request */
    uint8_t *body;      /* accumulated request body; owned */
    size_t body_length;
    size_t body_capacity;
    bool body_too_big;   /* over max_body_bytes: drained and answered 413 */
    bool started;        /* the first (headers-only) handler call happened */
    bool dispatched;     /* routes_dispatch ran */
    bool suspended;      /* MHD connection is suspended (parked) */
    bool held;           /* waits for the engine without being suspended */
    bool engine_pending; /* an engine done callback will still come */
    bool orphaned;       /* MHD is done with it; the done callback frees it */
    bool response_queued;

    /* The response, built before queueing so that a parked request can store it. */
    bool has_response;
    unsigned status;
    char *response_body; /* JSON text, owned (NULL = no body) */
    size_t response_length;
    const char *allow;     /* Allow header for 405; static */
    size_t events_pending; /* > 0: Corral-Events-Pending header (a body-less answer) */

    /* routes.c's state across an engine call. */
    enum api_route route;
    char *path; /* decoded znode path; owned */
    size_t path_length;

    struct api_request *prev, *next; /* the server's list of parked requests */

    /* A long-poll parked on an engine waiter (api_request_park). */
    struct engine_waiter *waiter; /* owned by the engine; NULL once woken or cancelled */
    struct http_park *park;       /* timer + disconnect watch; owned by http.c */
    void (*park_finish)(struct api_request *r, bool timed_out);
    uint64_t park_since;      /* routes.c's memory across a park (e.g. the watch's since) */
    int park_status;          /* set by the engine before it wakes a linearizable wait */
    bool linearizable_done;   /* the read index was reached: read now */
    bool session_revalidated; /* caught up with the leader to look for its session */
    uint64_t park_deadline_ms;
};

/* The peer transport's counters since start, for /v1/stats (in the spirit of
 * ZooKeeper's packets sent and received): frames are the transport's units on the
 * wire (a message over its chunk size travels as several); rejected frames failed the
 * header, length or checksum checks or came from a non-member; dropped messages were
 * given up unsent (a member's queue full, or stale). */
struct api_peer_stats {
    uint64_t frames_sent;
    uint64_t frames_received;
    uint64_t frames_rejected;
    uint64_t messages_dropped;
};

struct api_server_options {
    uv_loop_t *loop;
    struct engine *engine;       /* borrowed; outlives the server */
    const struct config *config; /* borrowed; outlives the server */
    api_log_fn log;
    void *log_data;
    /* Quorum mode: fills the peer counters (on the loop thread). NULL when standalone:
     * the counters then read 0. */
    void (*peer_stats)(void *data, struct api_peer_stats *out);
    void *peer_stats_data;
};

/* Binds the listen socket and starts serving on the loop. Returns 0 with *out owned
 * by the caller (api_server_stop frees it), or -1 with a message in error (e.g. the
 * address is in use). */
int api_server_start(const struct api_server_options *options, struct api_server **out, char *error,
                     size_t error_size);

/* Shutdown, step 1: /health answers 503 and no new connections are accepted
 * (MHD_quiesce_daemon). Open connections keep being served. */
void api_server_shutdown_begin(struct api_server *s);

/* True when no request waits for an engine callback. */
bool api_server_idle(const struct api_server *s);

/* Shutdown, step 2: resumes every parked request (answered 503 unless its answer is
 * ready), lets MHD flush, stops the daemon and closes the uv handles. s is freed once
 * the handles are closed (uv_run must keep running), then closed(arg) is called. */
void api_server_stop(struct api_server *s, void (*closed)(void *arg), void *arg);

/* ---- for routes.c ---- */

struct engine *api_server_engine(const struct api_server *s);
const struct config *api_server_config(const struct api_server *s);
bool api_server_shutting_down(const struct api_server *s);
/* The peer transport's counters, all 0 for a standalone server. */
void api_server_peer_stats(const struct api_server *s, struct api_peer_stats *out);

/* Logs through the server's logger (printf-style). */
void api_server_log(const struct api_server *s, int level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Stores the response: status and body (json_t stolen; NULL = no body). Ignored
 * once a response has been queued. */
void api_request_respond(struct api_request *r, unsigned status, json_t *body);

/* Stores a response whose body is JSON text already rendered (malloc'd; taken over and
 * freed by the request). body NULL means the rendering ran out of memory: the answer is
 * then 500 NO_MEMORY. Ignored (and freed) once a response has been queued. */
void api_request_respond_text(struct api_request *r, unsigned status, char *body, size_t length);

/* Stores an error response for code (status from api_error_status). message NULL =
 * the table's message; path NULL = none; index < 0 = none. */
void api_request_respond_error(struct api_request *r, int code, const char *message,
                               const char *path, size_t path_length, int index);

/* The request was accepted by the engine: park it after dispatch, and keep it alive
 * until api_request_engine_done. */
void api_request_engine_wait(struct api_request *r);

/* Called by the done callback after it stored the response: resumes the parked
 * connection (deferred MHD_run) or frees an orphaned request. r may be freed. */
void api_request_engine_done(struct api_request *r);

/* Long-polls. A route that must wait registers an engine waiter with
 * api_request_on_wake as the wake function and r as its argument, then parks r with
 * it. Exactly one of three things ends the park: the engine wakes it, timeout_ms
 * passes (0 = no timeout), or the client goes away (its socket closes while parked:
 * MHD would not notice, LIBS.md 1.4). The waiter is then gone (woken or cancelled) and
 * finish(r, timed_out) runs; it stores a response, or parks again, or submits a write.
 * Parking costs no thread: a suspended connection, a uv timer and a uv poll. */
void api_request_park(struct api_request *r, struct engine_waiter *waiter, uint64_t timeout_ms,
                      void (*finish)(struct api_request *r, bool timed_out));
/* The engine_wake_fn for api_request_park (arg is the request). */
void api_request_on_wake(void *arg);

/* Value of a request header or query argument (MHD_HEADER_KIND /
 * MHD_GET_ARGUMENT_KIND), borrowed for the request, or NULL. */
const char *api_request_header(const struct api_request *r, const char *name);
const char *api_request_query(const struct api_request *r, const char *name);

#endif
