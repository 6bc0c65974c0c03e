/* http.c: libmicrohttpd in external epoll mode inside the libuv loop (see http.h). */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "json_codec.h"
#include "routes.h"

/* Per-connection memory pool of MHD: request line, headers and I/O buffers. Bodies do
 * not go there (we copy them into our own buffer), so 16 KiB is plenty and keeps the
 * RSS of thousands of idle keep-alive connections small (LIBS.md 1.5). */
#define HTTP_CONNECTION_MEMORY ((size_t)16 * 1024)
#define HTTP_IDLE_TIMEOUT_S 60u
#define HTTP_LISTEN_BACKLOG 4096
/* Held requests (see http_on_access): at most this many at once, the rest suspend,
 * which bounds what a run spends asking them again. */
#define HTTP_HELD_MAX 256
/* While requests are held, a run that only asked them again is followed by the next
 * one after 1 ms, then 2, 4, ... up to this. */
#define HTTP_HELD_RECHECK_MAX_MS 64

struct api_server {
    uv_loop_t *loop;
    struct engine *engine;
    const struct config *config;
    api_log_fn log;
    void *log_data;
    void (*peer_stats)(void *data, struct api_peer_stats *out);
    void *peer_stats_data;

    struct MHD_Daemon *mhd;
    int listen_fd;
    bool quiesced;
    bool shutting_down;
    uv_poll_t mhd_poll;    /* readable MHD epoll fd -> MHD_run */
    uv_timer_t mhd_timer;  /* MHD_get_timeout -> MHD_run */
    uv_timer_t kick_timer; /* deferred MHD_run after a resume */
    bool kick_pending;
    int handles_open; /* uv handles not yet closed (stop) */
    void (*closed)(void *arg);
    void *closed_arg;

    struct api_request *parked; /* suspended requests, doubly linked */
    size_t engine_pending;      /* requests whose done callback is still due */
    size_t held;                /* requests held (not suspended) for the engine */
    size_t held_max;            /* HTTP_HELD_MAX, or 0: see api_server_start */
    bool run_progress;          /* this MHD_run did more than ask held requests */
    uint64_t held_recheck_ms;   /* the last back-off delay; 0 after progress */
    bool stopping;              /* api_server_stop: held requests get 503 now */
};

/* ---- logging ---- */

void api_server_log(const struct api_server *s, int level, const char *format, ...)
{
    /* Filtered before formatting: the per-request debug line would otherwise cost a
     * vsnprintf on every request (callgrind: ~1,500 instructions per write). */
    if (s->log == NULL || level < s->config->log_level)
        return;
    char message[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    s->log(s->log_data, level, message);
}

static void http_mhd_log(void *cls, const char *format, va_list ap)
{
    struct api_server *s = cls;
    char message[512];
    vsnprintf(message, sizeof message, format, ap);
    size_t n = strlen(message);
    while (n > 0 && message[n - 1] == '\n')
        message[--n] = '\0';
    if (s->log != NULL)
        s->log(s->log_data, 2, message);
}

/* ---- driving MHD from the loop ---- */

static void http_mhd_run(struct api_server *s);

static void http_on_mhd_timer(uv_timer_t *t)
{
    http_mhd_run(t->data);
}

/* MHD_run never blocks (epoll_wait with timeout 0). After EVERY run the timer is
 * re-armed from MHD_get_timeout: 0 means connections sit on MHD's edge-triggered
 * ready list and need another run now, even though the epoll fd will not wake us. */
static void http_mhd_run(struct api_server *s)
{
    if (s->mhd == NULL)
        return;
    s->run_progress = false;
    MHD_run(s->mhd);
    MHD_UNSIGNED_LONG_LONG timeout;
    if (MHD_get_timeout(s->mhd, &timeout) == MHD_YES) {
        /* A held request sits on MHD's ready list for as long as it waits, so while
         * any is held a 0 only means work if this run did some (see http_on_access).
         * Work we cannot see (a header read that filled the buffer) still gets a run
         * within the back-off, and every epoll event and answer runs MHD at once. */
        if (timeout == 0 && s->held > 0 && !s->run_progress) {
            s->held_recheck_ms = s->held_recheck_ms == 0 ? 1 : s->held_recheck_ms * 2;
            if (s->held_recheck_ms > HTTP_HELD_RECHECK_MAX_MS)
                s->held_recheck_ms = HTTP_HELD_RECHECK_MAX_MS;
            timeout = s->held_recheck_ms;
        } else {
            s->held_recheck_ms = 0;
        }
        uv_timer_start(&s->mhd_timer, http_on_mhd_timer, (uint64_t)timeout, 0);
    } else
        uv_timer_stop(&s->mhd_timer);
}

static void http_on_mhd_poll(uv_poll_t *p, int status, int events)
{
    http_mhd_run(p->data);
}

static void http_on_kick(uv_timer_t *t)
{
    struct api_server *s = t->data;
    s->kick_pending = false;
    http_mhd_run(s);
}

/* After MHD_resume_connection: in external mode MHD has no wake-up channel, and the
 * resume may happen while an MHD callback is on the stack, so run MHD on the next
 * loop turn instead of now. */
static void http_mhd_kick_later(struct api_server *s)
{
    if (!s->kick_pending && s->mhd != NULL) {
        s->kick_pending = true;
        uv_timer_start(&s->kick_timer, http_on_kick, 0, 0);
    }
}

/* ---- requests ---- */

/* The uv handles of a parked long-poll. Allocated by api_request_park, freed after
 * both handles' close callbacks (they run later, LIFO: libuv's rule). */
struct http_park {
    uv_timer_t timer;
    uv_poll_t poll;
    struct api_request *r; /* NULL once unparked */
    int handles_open;
    bool polling;
};

static void http_request_free(struct api_request *r)
{
    free(r->uri);
    free(r->body);
    free(r->response_body);
    free(r->path);
    free(r);
}

/* MHD_OPTION_URI_LOG_CALLBACK: runs with the raw request target before MHD
 * percent-decodes it in place. We keep a copy, so routes.c decodes the path itself
 * with explicit lengths: MHD's decoded url is a C string, in which "%00" would
 * silently truncate the path. The return value becomes *con_cls. */
static void *http_on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct api_server *s = cls;
    s->run_progress = true;
    struct api_request *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->server = s;
    r->conn = conn;
    r->uri = strdup(uri);
    if (r->uri == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

static void http_parked_remove(struct api_server *s, struct api_request *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        s->parked = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void http_parked_add(struct api_server *s, struct api_request *r)
{
    r->prev = NULL;
    r->next = s->parked;
    if (s->parked != NULL)
        s->parked->prev = r;
    s->parked = r;
}

static void http_park_release(struct api_request *r);

static void http_request_resume(struct api_request *r)
{
    struct api_server *s = r->server;
    http_park_release(r);
    http_parked_remove(s, r);
    r->suspended = false;
    MHD_resume_connection(r->conn);
    http_mhd_kick_later(s);
}

/* Replaces the stored response (body: malloc'd text, taken over, or NULL for none).
 * Ignored, and body freed, once a response has been queued. */
static void http_response_store(struct api_request *r, unsigned status, char *body, size_t length)
{
    if (r->response_queued) {
        free(body);
        return;
    }
    free(r->response_body);
    r->status = status;
    r->has_response = true;
    r->response_body = body;
    r->response_length = length;
}

void api_request_respond(struct api_request *r, unsigned status, json_t *body)
{
    if (body == NULL) { /* no body (204, HEAD) */
        http_response_store(r, status, NULL, 0);
        return;
    }
    char *text = r->response_queued ? NULL : json_dumps(body, JSON_COMPACT);
    json_decref(body);
    api_request_respond_text(r, status, text, text != NULL ? strlen(text) : 0);
}

void api_request_respond_text(struct api_request *r, unsigned status, char *body, size_t length)
{
    if (body == NULL) {
        /* Out of memory while rendering: answer 500 with a static body. */
        static const char oom[] = "{\"error\":{\"code\":\"NO_MEMORY\",\"message\":\"out of "
                                  "memory\"}}";
        status = 500;
        body = strdup(oom);
        length = body != NULL ? strlen(body) : 0;
    }
    http_response_store(r, status, body, length);
}

void api_request_respond_error(struct api_request *r, int code, const char *message,
                               const char *path, size_t path_length, int index)
{
    api_request_respond(r, api_error_status(code),
                        json_codec_error(code, message, path, path_length, index));
}

void api_request_engine_wait(struct api_request *r)
{
    if (r->engine_pending)
        return;
    r->engine_pending = true;
    r->server->engine_pending++;
}

/* ---- long-poll parking ---- */

static void http_park_on_closed(uv_handle_t *h)
{
    struct http_park *p = h->data;
    if (--p->handles_open == 0)
        free(p);
}

static void http_park_release(struct api_request *r)
{
    struct http_park *p = r->park;
    if (p == NULL)
        return;
    r->park = NULL;
    p->r = NULL;
    /* Stop watching the socket before MHD takes it back (LIBS.md 1.4). */
    if (p->polling)
        uv_poll_stop(&p->poll);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, http_park_on_closed);
    if (p->handles_open == 2)
        uv_close((uv_handle_t *)&p->poll, http_park_on_closed);
}

enum http_unpark_reason {
    HTTP_UNPARK_WOKEN,
    HTTP_UNPARK_TIMEOUT,
    HTTP_UNPARK_GONE,
};

static void http_unpark(struct api_request *r, enum http_unpark_reason reason)
{
    struct api_server *s = r->server;
    if (reason != HTTP_UNPARK_WOKEN && r->waiter != NULL)
        engine_waiter_cancel(s->engine, r->waiter);
    r->waiter = NULL;
    http_park_release(r);
    void (*finish)(struct api_request *, bool) = r->park_finish;
    r->park_finish = NULL;
    /* The park's claim on r ends here; finish may make a new one (park again, or
     * submit a write), in which case whoever holds it answers later. */
    r->engine_pending = false;
    s->engine_pending--;
    if (finish != NULL)
        finish(r, reason != HTTP_UNPARK_WOKEN);
    if (r->engine_pending)
        return;
    if (!r->has_response)
        api_request_respond_error(r, CORRAL_E_NO_MEMORY, "internal error: no response", NULL, 0,
                                  -1);
    if (r->suspended)
        http_request_resume(r);
}

void api_request_on_wake(void *arg)
{
    http_unpark(arg, HTTP_UNPARK_WOKEN);
}

static void http_park_on_timeout(uv_timer_t *t)
{
    struct http_park *p = t->data;
    if (p->r != NULL)
        http_unpark(p->r, HTTP_UNPARK_TIMEOUT);
}

static void http_park_on_socket(uv_poll_t *h, int status, int events)
{
    struct http_park *p = h->data;
    if (p->r == NULL)
        return;
    char byte;
    ssize_t n =
        recv(MHD_get_connection_info(p->r->conn, MHD_CONNECTION_INFO_CONNECTION_FD)->connect_fd,
             &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) {
        /* Pipelined bytes of the next request: not a disconnect. Stop watching; the
         * deadline still bounds the park. */
        if (status == 0 && n > 0) {
            uv_poll_stop(&p->poll);
            p->polling = false;
        }
        return;
    }
    http_unpark(p->r, HTTP_UNPARK_GONE); /* EOF or error: the client is gone */
}

void api_request_park(struct api_request *r, struct engine_waiter *waiter, uint64_t timeout_ms,
                      void (*finish)(struct api_request *r, bool timed_out))
{
    struct api_server *s = r->server;
    api_request_engine_wait(r);
    r->waiter = waiter;
    r->park_finish = finish;
    struct http_park *p = calloc(1, sizeof *p); /* freed after its handles close */
    if (p == NULL) {
        return; /* no deadline and no disconnect watch: the waiter alone ends it */
    }
    p->r = r;
    r->park = p;
    uv_timer_init(s->loop, &p->timer);
    p->timer.data = p;
    p->handles_open = 1;
    if (timeout_ms > 0)
        uv_timer_start(&p->timer, http_park_on_timeout, timeout_ms, 0);
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info != NULL && uv_poll_init_socket(s->loop, &p->poll, info->connect_fd) == 0) {
        p->poll.data = p;
        p->handles_open = 2;
        if (uv_poll_start(&p->poll, UV_READABLE | UV_DISCONNECT, http_park_on_socket) == 0)
            p->polling = true;
    }
}

void api_request_engine_done(struct api_request *r)
{
    struct api_server *s = r->server;
    r->engine_pending = false;
    s->engine_pending--;
    if (r->orphaned) {
        http_request_free(r);
        return;
    }
    if (r->held) {
        r->held = false;
        s->held--;
        http_mhd_kick_later(s); /* MHD asks again and queues the answer */
        return;
    }
    /* Not suspended yet cannot happen (done is never called inside submit), and a
     * request resumed by shutdown already got its 503: nothing more to do then. */
    if (r->suspended)
        http_request_resume(r);
}

const char *api_request_header(const struct api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *api_request_query(const struct api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* Queues the stored response. Every response carries Corral-Zxid. */
static enum MHD_Result http_response_queue(struct api_request *r)
{
    struct api_server *s = r->server;
    struct MHD_Response *resp;
    if (r->response_body != NULL) {
        resp = MHD_create_response_from_buffer(r->response_length, r->response_body,
                                               MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            return MHD_NO;       /* the buffer stays ours and is freed with r */
        r->response_body = NULL; /* MHD frees it now */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json; charset=utf-8");
    } else {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (resp == NULL)
            return MHD_NO;
    }
    char zxid[24];
    snprintf(zxid, sizeof zxid, "%" PRIu64, engine_applied_zxid(s->engine));
    MHD_add_response_header(resp, "Corral-Zxid", zxid);
    if (r->allow != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->events_pending > 0) {
        char pending[24];
        snprintf(pending, sizeof pending, "%zu", r->events_pending);
        MHD_add_response_header(resp, "Corral-Events-Pending", pending);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp); /* refcounted: MHD keeps its own reference */
    r->response_queued = true;
    return ret;
}

/* Appends a body chunk to r's own buffer (not MHD's pool), up to max_body_bytes. */
static void http_body_append(struct api_request *r, const char *data, size_t n)
{
    uint64_t cap = r->server->config->max_body_bytes;
    if (r->body_too_big)
        return;
    if (r->body_length + n > cap) {
        /* Keep draining so the connection stays usable; answer 413 at the end. */
        r->body_too_big = true;
        free(r->body);
        r->body = NULL;
        r->body_length = r->body_capacity = 0;
        return;
    }
    if (r->body_length + n > r->body_capacity) {
        /* Small bodies (most writes: ~100 bytes) get a small buffer: a first allocation
         * of 1 KiB or more is a large-bin request for malloc, which consolidates its
         * fast bins each time (perf: malloc_consolidate and _int_malloc were ~9% of a
         * write's CPU with a 4 KiB start). */
        size_t want = r->body_capacity != 0 ? r->body_capacity : 256;
        while (want < r->body_length + n)
            want *= 2;
        if (want > cap)
            want = (size_t)cap;
        uint8_t *grown = realloc(r->body, want);
        if (grown == NULL) {
            r->body_too_big = true; /* answered as 413; better than crashing */
            return;
        }
        r->body = grown;
        r->body_capacity = want;
    }
    memcpy(r->body + r->body_length, data, n);
    r->body_length += n;
}

/* The access handler. MHD calls it several times per request:
 *   1. after the headers (started == false): we only note that and return. Queueing
 *      or suspending here would make MHD answer with "Connection: close" (it has not
 *      read the body yet and discards it), killing keep-alive (LIBS.md 1.3). The one
 *      exception is the deliberate early 413 on an oversized Content-Length, where
 *      closing the connection is exactly what we want.
 *   2. once per body chunk: copied into r->body, marked consumed.
 *   3. with *upload_data_size == 0: dispatch; answer now, hold the request, or
 *      suspend (park) the connection.
 *   4. while held, again on every MHD run: MHD keeps a connection whose handler queued
 *      nothing on its ready list; after the engine's answer or a resume: queue it.
 *
 * Held, not suspended: a write waits for its log sync, a millisecond or so. Suspending
 * it cost three of a write's five system calls on the loop: MHD takes the socket out of
 * its epoll set (epoll_ctl DEL), puts it back on resume (ADD) and reads it once to find
 * it empty (recv: EAGAIN), ~1 us each on this VM. A held connection stays in the epoll
 * set; MHD asks the handler again on each run (a few instructions, no system call), and
 * http_mhd_run keeps that from turning into a busy loop. tools/bench, 64 writers on one
 * core, three alternated pairs: 20-27 us of CPU per set against 22-36, 32-45k sets/s
 * against 25-39k. Long-polls (parks: they wait up to minutes) and writes beyond
 * HTTP_HELD_MAX still suspend, since each held request costs a call on every run. */
static enum MHD_Result http_on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    struct api_server *s = cls;
    struct api_request *r = *con_cls;
    if (r == NULL) {
        /* The URI callback failed to allocate; nothing sensible to answer with. */
        return MHD_NO;
    }
    if (r->held && !s->stopping)
        return MHD_YES; /* still waiting for the engine: the one call that is no progress */
    s->run_progress = true;
    if (!r->started) {
        r->started = true;
        r->conn = conn;
        r->method = method;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > s->config->max_body_bytes) {
            api_request_respond_error(r, CORRAL_E_PAYLOAD_TOO_LARGE,
                                      "request body is larger than --max-body-bytes", NULL, 0, -1);
            return http_response_queue(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        http_body_append(r, upload_data, *upload_data_size);
        *upload_data_size = 0; /* all consumed */
        return MHD_YES;
    }
    if (r->response_queued)
        return MHD_YES;
    if (r->has_response)
        return http_response_queue(r);
    if (r->dispatched) {
        /* Resumed without an answer: only shutdown does that. */
        api_request_respond_error(r, CORRAL_E_SHUTTING_DOWN, NULL, NULL, 0, -1);
        return http_response_queue(r);
    }
    r->dispatched = true;
    if (r->body_too_big) {
        api_request_respond_error(r, CORRAL_E_PAYLOAD_TOO_LARGE,
                                  "request body is larger than --max-body-bytes", NULL, 0, -1);
        return http_response_queue(r);
    }
    routes_dispatch(r);
    if (r->has_response)
        return http_response_queue(r);
    if (r->engine_pending && r->park_finish == NULL && s->held < s->held_max) {
        /* A write: hold it (above). The done callback runs MHD again. */
        r->held = true;
        s->held++;
        return MHD_YES;
    }
    if (r->engine_pending) {
        /* Suspend first, then it is visible in the parked list; the done callback
         * cannot run before we return to the loop. */
        MHD_suspend_connection(conn);
        r->suspended = true;
        http_parked_add(s, r);
        return MHD_YES;
    }
    api_request_respond_error(r, CORRAL_E_NO_MEMORY, "internal error: no response", NULL, 0, -1);
    return http_response_queue(r);
}

static void http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct api_server *s = cls;
    struct api_request *r = *con_cls;
    if (r == NULL)
        return;
    *con_cls = NULL;
    api_server_log(s, 0, "%s %s -> %u%s", r->method != NULL ? r->method : "?", r->uri, r->status,
                   toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (aborted)");
    s->run_progress = true;
    if (r->suspended)
        http_parked_remove(s, r); /* defensive: MHD does not end suspended requests */
    r->suspended = false;
    if (r->held) {
        r->held = false; /* MHD ended it (the client went away, or stop) */
        s->held--;
    }
    if (r->engine_pending) {
        r->orphaned = true; /* the engine still holds r as its callback argument */
        return;
    }
    http_request_free(r);
}

/* ---- start / stop ---- */

/* Binds and listens ourselves (then hands the socket to MHD) so that a failure comes
 * with its errno, e.g. "Address already in use". */
static int http_listen_open(const struct config *c, char *error, size_t error_size)
{
    struct sockaddr_storage addr;
    socklen_t addr_length;
    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, c->listen_host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(c->listen_port);
        addr_length = sizeof *v4;
    } else if (inet_pton(AF_INET6, c->listen_host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(c->listen_port);
        addr_length = sizeof *v6;
    } else {
        snprintf(error, error_size, "cannot listen on %s: not a numeric IP address", c->listen);
        return -1;
    }
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(error, error_size, "cannot listen on %s: socket: %s", c->listen, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, addr_length) != 0 ||
        listen(fd, HTTP_LISTEN_BACKLOG) != 0) {
        snprintf(error, error_size, "cannot listen on %s: %s", c->listen, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int api_server_start(const struct api_server_options *options, struct api_server **out, char *error,
                     size_t error_size)
{
    struct api_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(error, error_size, "out of memory");
        return -1;
    }
    s->loop = options->loop;
    s->engine = options->engine;
    s->config = options->config;
    s->log = options->log;
    s->log_data = options->log_data;
    s->peer_stats = options->peer_stats;
    s->peer_stats_data = options->peer_stats_data;
    /* MHD's idle timeout applies to a held connection (not to a suspended one), so a
     * request timeout that reaches it means suspending every write. */
    s->held_max = s->config->request_timeout_ms < HTTP_IDLE_TIMEOUT_S * 1000 ? HTTP_HELD_MAX : 0;
    s->listen_fd = http_listen_open(s->config, error, error_size);
    if (s->listen_fd < 0) {
        free(s);
        return -1;
    }
    /* Options are C varargs: the casts give each value exactly the documented type. The
     * logger comes first so that MHD reports errors in the other options through it. */
    s->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, http_on_access,
        s, MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, s, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)s->listen_fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)s->config->max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        HTTP_CONNECTION_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_URI_LOG_CALLBACK, http_on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, http_on_completed,
        s, MHD_OPTION_SIGPIPE_HANDLED_BY_APP, (int)1, MHD_OPTION_END);
    if (s->mhd == NULL) {
        snprintf(error, error_size, "cannot start the HTTP server on %s", s->config->listen);
        close(s->listen_fd);
        free(s);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    uv_poll_init(s->loop, &s->mhd_poll, info->epoll_fd);
    s->mhd_poll.data = s;
    uv_poll_start(&s->mhd_poll, UV_READABLE, http_on_mhd_poll);
    uv_timer_init(s->loop, &s->mhd_timer);
    s->mhd_timer.data = s;
    uv_timer_init(s->loop, &s->kick_timer);
    s->kick_timer.data = s;
    s->handles_open = 3;
    http_mhd_run(s);
    *out = s;
    return 0;
}

void api_server_shutdown_begin(struct api_server *s)
{
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    if (s->mhd != NULL && MHD_quiesce_daemon(s->mhd) != MHD_INVALID_SOCKET)
        s->quiesced = true; /* the listen socket is ours to close after stop */
}

bool api_server_idle(const struct api_server *s)
{
    return s->engine_pending == 0;
}

static void http_on_handle_closed(uv_handle_t *h)
{
    struct api_server *s = h->data;
    /* Close callbacks run LIFO; free only after the last of the embedded handles. */
    if (--s->handles_open > 0)
        return;
    void (*closed)(void *) = s->closed;
    void *arg = s->closed_arg;
    free(s);
    if (closed != NULL)
        closed(arg);
}

void api_server_stop(struct api_server *s, void (*closed)(void *arg), void *arg)
{
    s->shutting_down = true;
    s->stopping = true;
    s->closed = closed;
    s->closed_arg = arg;
    /* MHD_stop_daemon with suspended connections is an API violation: resume them
     * all and let MHD answer them (503 unless the answer is ready) and flush. */
    while (s->parked != NULL)
        http_request_resume(s->parked);
    for (int i = 0; i < 4; i++)
        MHD_run(s->mhd);
    uv_poll_stop(&s->mhd_poll);
    uv_timer_stop(&s->mhd_timer);
    uv_timer_stop(&s->kick_timer);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    if (s->quiesced)
        close(s->listen_fd);
    uv_close((uv_handle_t *)&s->mhd_poll, http_on_handle_closed);
    uv_close((uv_handle_t *)&s->mhd_timer, http_on_handle_closed);
    uv_close((uv_handle_t *)&s->kick_timer, http_on_handle_closed);
}

struct engine *api_server_engine(const struct api_server *s)
{
    return s->engine;
}

void api_server_peer_stats(const struct api_server *s, struct api_peer_stats *out)
{
    *out = (struct api_peer_stats){0};
    if (s->peer_stats != NULL)
        s->peer_stats(s->peer_stats_data, out);
}

const struct config *api_server_config(const struct api_server *s)
{
    return s->config;
}

bool api_server_shutting_down(const struct api_server *s)
{
    return s->shutting_down;
}
