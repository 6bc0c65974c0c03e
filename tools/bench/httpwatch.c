/* httpwatch: change-to-notification latency of HTTP long-poll watches (W6), for corral
 * and etcd v2, with N watchers each on its own keep-alive connection.
 *
 *   httpwatch -p PORT -s corral|etcd -n WATCHERS [-R rounds] [-S settle_ms]
 *
 * Each round: every watcher sends its long-poll
 *   corral  GET /v1/watch/bench/w?timeout_ms=60000
 *   etcd    GET /v2/keys/bench/w?wait=true
 * then, once they are parked (etcd flushes its response headers as soon as the watch is
 * registered, so we wait for all of them; corral answers only when the change comes, so we
 * wait settle_ms, default 300 + N/20 ms; etcd's round waits out settle_ms too, so that
 * both sets come after the same idle spell), one more connection sets /bench/w to a 100-byte
 * value. A watcher is notified when its whole response has arrived; its latency runs from
 * the moment the set was written to the socket. One epoll thread, plain sockets: the client
 * costs a few microseconds per watcher, so it does not hide the server's cost.
 * Prints
 *   RESULT watchers=N rounds=R p50_ms=.. p99_ms=.. max_ms=.. ack_p50_ms=.. missed=N
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct {
    int fd;
    char buf[8192];
    int len;
    int headers_seen; /* response headers complete (etcd sends them at registration) */
    double done;      /* time the whole response had arrived, 0 = not yet */
} conn_t;

static int port = 2379;
static const char *sys_name = "corral";
static int nwatch = 1, rounds = 5, settle_ms = -1;

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("socket");
        exit(2);
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int tries = 0; connect(fd, (struct sockaddr *)&a, sizeof a) != 0; tries++) {
        if (tries > 50) {
            perror("connect");
            exit(2);
        }
        usleep(20000);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                usleep(100);
                continue;
            }
            perror("write");
            exit(2);
        }
        s += w;
        n -= w;
    }
}

/* Parse what has arrived; returns 1 when a complete response is in the buffer. */
static int complete(conn_t *c)
{
    c->buf[c->len] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return 0;
    c->headers_seen = 1;
    char *body = end + 4;
    int have = c->len - (int)(body - c->buf);
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    if (cl && cl < end)
        return have >= atoi(cl + 17);
    if (strcasestr(c->buf, "\r\ntransfer-encoding: chunked"))
        return have >= 5 && !memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int o;
    while ((o = getopt(argc, argv, "p:s:n:R:S:")) != -1) {
        switch (o) {
        case 'p':
            port = atoi(optarg);
            break;
        case 's':
            sys_name = optarg;
            break;
        case 'n':
            nwatch = atoi(optarg);
            break;
        case 'R':
            rounds = atoi(optarg);
            break;
        case 'S':
            settle_ms = atoi(optarg);
            break;
        default:
            fprintf(stderr, "see the comment at the top of httpwatch.c\n");
            return 2;
        }
    }
    if (settle_ms < 0)
        settle_ms = 300 + nwatch / 20;
    int etcd = !strcmp(sys_name, "etcd");
    char watch_req[256], set_req[512], value[101];
    memset(value, 'v', 100);
    value[100] = 0;
    if (etcd) {
        snprintf(watch_req, sizeof watch_req,
                 "GET /v2/keys/bench/w?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        snprintf(
            set_req, sizeof set_req,
            "PUT /v2/keys/bench/w HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\nvalue=%s",
            6 + 100, value);
    } else {
        snprintf(watch_req, sizeof watch_req,
                 "GET /v1/watch/bench/w?timeout_ms=60000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        snprintf(set_req, sizeof set_req,
                 "PUT /v1/znodes/bench/w HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"data\":\"%s\"}",
                 (int)strlen("{\"data\":\"\"}") + 100, value);
    }
    int ep = epoll_create1(0);
    conn_t *cs = calloc(nwatch + 1, sizeof *cs); /* cs[nwatch] is the writer */
    for (int i = 0; i <= nwatch; i++) {
        cs[i].fd = dial();
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        if (i % 256 == 255)
            usleep(2000); /* let the server accept */
    }
    double *lat = malloc(sizeof(double) * (size_t)nwatch * rounds);
    double *acks = malloc(sizeof(double) * rounds);
    size_t nlat = 0;
    int nack = 0;
    long missed = 0;
    struct epoll_event evs[512];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i <= nwatch; i++) {
            cs[i].len = 0;
            cs[i].done = 0;
            cs[i].headers_seen = 0;
        }
        for (int i = 0; i < nwatch; i++)
            send_all(cs[i].fd, watch_req, strlen(watch_req));
        /* Wait until parked: etcd shows it with early headers, corral does not, so it gets
         * settle time. etcd waits out the same settle time once parked: after an idle
         * spell this VM's first write costs ~1 ms more (a bare write + fdatasync after
         * 20 ms idle: 0.77 ms p50 against 0.17 after 0.3 ms), and a set sent the moment
         * the last header arrived would compare a warm machine with a cold one. */
        double until = now_s() + settle_ms / 1000.0;
        double give_up = now_s() + 30;
        int parked = 0;
        while (now_s() < until || (etcd && parked < nwatch && now_s() < give_up)) {
            int n = epoll_wait(ep, evs, 512, 10);
            for (int k = 0; k < n; k++) {
                conn_t *c = &cs[evs[k].data.u32];
                ssize_t got = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
                if (got <= 0) {
                    fprintf(stderr, "httpwatch: connection closed early\n");
                    exit(2);
                }
                c->len += got;
                int was = c->headers_seen;
                if (complete(c)) {
                    c->done = -1;
                } /* answered before the change: a miss */
                if (!was && c->headers_seen)
                    parked++;
            }
        }
        if (etcd && parked < nwatch)
            fprintf(stderr, "httpwatch: only %d/%d parked\n", parked, nwatch);
        double t_set = now_s();
        send_all(cs[nwatch].fd, set_req, strlen(set_req));
        int pending = nwatch + 1;
        for (int i = 0; i <= nwatch; i++)
            if (cs[i].done)
                pending--;
        double deadline = t_set + 10;
        while (pending > 0 && now_s() < deadline) {
            int n = epoll_wait(ep, evs, 512, 100);
            double t = now_s();
            for (int k = 0; k < n; k++) {
                conn_t *c = &cs[evs[k].data.u32];
                ssize_t got = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
                if (got <= 0) {
                    fprintf(stderr, "httpwatch: connection closed\n");
                    exit(2);
                }
                c->len += got;
                if (!c->done && complete(c)) {
                    c->done = t;
                    pending--;
                }
            }
        }
        for (int i = 0; i < nwatch; i++) {
            if (cs[i].done > 0)
                lat[nlat++] = (cs[i].done - t_set) * 1e3;
            else
                missed++;
        }
        if (cs[nwatch].done > 0)
            acks[nack++] = (cs[nwatch].done - t_set) * 1e3;
        if (pending > 0) {
            fprintf(stderr, "httpwatch: %d responses missing after 10 s\n", pending);
            break;
        }
    }
    qsort(lat, nlat, sizeof *lat, cmp);
    qsort(acks, nack, sizeof *acks, cmp);
    printf("RESULT watchers=%d rounds=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f ack_p50_ms=%.3f "
           "missed=%ld\n",
           nwatch, rounds, nlat ? lat[nlat / 2] : 0, nlat ? lat[(size_t)(nlat * 0.99)] : 0,
           nlat ? lat[nlat - 1] : 0, nack ? acks[nack / 2] : 0, missed);
    return missed ? 1 : 0;
}
