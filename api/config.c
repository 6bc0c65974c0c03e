/* config.c: corrald's option table, parser and --help (see config.h). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum config_kind {
    CONFIG_KIND_FLAG,       /* no value (--help) */
    CONFIG_KIND_U32,        /* unsigned 32-bit at offset */
    CONFIG_KIND_U64,        /* unsigned 64-bit at offset */
    CONFIG_KIND_STRING,     /* const char * at offset */
    CONFIG_KIND_LISTEN,     /* ADDR:PORT */
    CONFIG_KIND_LEVEL,      /* debug|info|warn|error, stored as its index (int) */
    CONFIG_KIND_SCHEDULING, /* batch|normal, stored as its index (int) */
};

struct config_option {
    const char *name;
    enum config_kind kind;
    size_t offset;
    uint64_t min; /* numbers: smallest accepted value */
    const char *metavar;
    const char *help;
};

#define CONFIG_AT(field) offsetof(struct config, field)

/* Indexed by enum config_log_level and enum config_scheduling_policy. */
static const char *const config_level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const config_scheduling_names[] = {"normal", "batch", NULL};

/* The words a choice option accepts, NULL-ended (NULL for other kinds). */
static const char *const *config_choices(enum config_kind kind)
{
    if (kind == CONFIG_KIND_LEVEL)
        return config_level_names;
    if (kind == CONFIG_KIND_SCHEDULING)
        return config_scheduling_names;
    return NULL;
}

/* The one table: parser and help both read it. */
static const struct config_option config_options[] = {
    {"--listen", CONFIG_KIND_LISTEN, 0, 0, "ADDR:PORT", "HTTP listen address"},
    {"--data-dir", CONFIG_KIND_STRING, CONFIG_AT(data_dir), 0, "DIR",
     "WAL and snapshot directory (created if missing)"},
    {"--tick-ms", CONFIG_KIND_U32, CONFIG_AT(tick_ms), 1, "N",
     "session tick; timeouts are multiples of it"},
    {"--min-session-timeout-ms", CONFIG_KIND_U32, CONFIG_AT(min_session_timeout_ms), 0, "N",
     "smallest session timeout (0 = 2 x tick)"},
    {"--max-session-timeout-ms", CONFIG_KIND_U32, CONFIG_AT(max_session_timeout_ms), 0, "N",
     "largest session timeout (0 = 20 x tick)"},
    {"--max-data-bytes", CONFIG_KIND_U32, CONFIG_AT(max_data_bytes), 1, "N", "largest znode data"},
    {"--max-body-bytes", CONFIG_KIND_U64, CONFIG_AT(max_body_bytes), 1, "N",
     "largest HTTP request body (413 above)"},
    {"--snapshot-every", CONFIG_KIND_U64, CONFIG_AT(snapshot_every), 1, "N",
     "txns between snapshots (a snapshot over 64 MiB also waits for half its size of log; "
     "in a cluster each member draws 0.5-1.5x of N before each snapshot)"},
    {"--wal-segment-bytes", CONFIG_KIND_U64, CONFIG_AT(wal_segment_bytes), 4096, "N",
     "start a new log segment past this size (old segments are dropped whole)"},
    {"--wal-batches-in-flight", CONFIG_KIND_U32, CONFIG_AT(wal_batches_in_flight), 1, "N",
     "log batches written and fdatasynced at once (pipelined group commit, at most 8)"},
    {"--min-free-disk-bytes", CONFIG_KIND_U64, CONFIG_AT(min_free_disk_bytes), 0, "N",
     "refuse writes (507 NO_SPACE) while the data dir has less free space"},
    {"--snapshots-keep", CONFIG_KIND_U32, CONFIG_AT(snapshots_keep), 1, "N", "snapshot files kept"},
    {"--snapshot-inline-bytes", CONFIG_KIND_U64, CONFIG_AT(snapshot_inline_bytes), 0, "N",
     "snapshots of up to N bytes are encoded in the server; bigger ones by a forked child"},
    {"--container-check-ms", CONFIG_KIND_U32, CONFIG_AT(container_check_ms), 1, "N",
     "interval of the container/TTL reaper"},
    {"--max-connections", CONFIG_KIND_U32, CONFIG_AT(max_connections), 1, "N",
     "concurrent HTTP connections"},
    {"--max-poll-ms", CONFIG_KIND_U32, CONFIG_AT(max_poll_ms), 1, "N",
     "longest timeout_ms of a long-poll (watch, session events)"},
    {"--min-zxid-wait-ms", CONFIG_KIND_U32, CONFIG_AT(min_zxid_wait_ms), 0, "N",
     "how long a request with Corral-Min-Zxid waits before 503 BEHIND"},
    {"--watch-max-events", CONFIG_KIND_U32, CONFIG_AT(watch_max_events), 1, "N",
     "events in one watch answer (a whole txn is never split)"},
    {"--history-events", CONFIG_KIND_U64, CONFIG_AT(history_events), 1, "N",
     "change events kept in memory for /v1/watch (older ones come from the log)"},
    {"--history-bytes", CONFIG_KIND_U64, CONFIG_AT(history_bytes), 1, "N",
     "bytes of change events kept in memory, at most"},
    {"--log-level", CONFIG_KIND_LEVEL, CONFIG_AT(log_level), 0, "LEVEL",
     "debug, info, warn or error"},
    {"--scheduling-policy", CONFIG_KIND_SCHEDULING, CONFIG_AT(scheduling_policy), 0, "POLICY",
     "normal, or batch (a thread that wakes does not preempt a busy one: bigger batches "
     "when only corral runs on a core; much slower beside other busy programs)"},
    {"--id", CONFIG_KIND_U64, CONFIG_AT(id), 1, "N", "this member's id in --cluster"},
    {"--cluster", CONFIG_KIND_STRING, CONFIG_AT(cluster), 0, "SPEC",
     "quorum members \"id=httpaddr:port/peeraddr:port,...\", the same on every member"},
    {"--heartbeat-ms", CONFIG_KIND_U32, CONFIG_AT(heartbeat_ms), 1, "N",
     "quorum: how often the leader sends heartbeats"},
    {"--election-timeout-ms", CONFIG_KIND_U32, CONFIG_AT(election_timeout_ms), 1, "N",
     "quorum: a follower that hears no leader for a random time in [N, 2N) stands"},
    {"--request-timeout-ms", CONFIG_KIND_U32, CONFIG_AT(request_timeout_ms), 1, "N",
     "a write not confirmed by a majority in time gets 504 TIMEOUT (outcome unknown)"},
    {"--help", CONFIG_KIND_FLAG, 0, 0, NULL, "print this help and exit"},
};

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    config_listen_parse(c, "127.0.0.1:8181");
    c->data_dir = "./data";
    c->tick_ms = 2000;
    c->max_data_bytes = 1048576;
    c->max_body_bytes = 4194304;
    c->snapshot_every = 100000;
    c->wal_segment_bytes = 64u * 1024 * 1024;
    c->wal_batches_in_flight = 1;
    c->min_free_disk_bytes = 64u * 1024 * 1024;
    c->snapshots_keep = 3;
    c->snapshot_inline_bytes = 1048576;
    c->container_check_ms = 60000;
    c->max_connections = 16000;
    c->max_poll_ms = 60000;
    c->min_zxid_wait_ms = 2000;
    c->watch_max_events = 10000;
    c->history_events = 250000;
    c->history_bytes = 33554432;
    c->log_level = CONFIG_LOG_INFO;
    c->scheduling_policy = CONFIG_SCHEDULING_NORMAL;
    c->heartbeat_ms = 50;
    c->election_timeout_ms = 300;
    c->request_timeout_ms = 5000;
}

static bool config_number_parse(const char *s, uint64_t min, uint64_t max, uint64_t *out);

static bool config_address_ok(const char *s, size_t n)
{
    /* ADDR:PORT with a numeric port; the address itself is checked when used. */
    const char *colon = memrchr(s, ':', n);
    if (colon == NULL || colon == s || colon == s + n - 1)
        return false;
    for (const char *p = colon + 1; p < s + n; p++)
        if (*p < '0' || *p > '9')
            return false;
    return n < 128;
}

int config_cluster_resolve(struct config *c, char *error, size_t error_size)
{
    c->member_count = 0;
    if (c->cluster == NULL) {
        if (c->id > 1) {
            snprintf(error, error_size, "--id needs --cluster");
            return -1;
        }
        return 0;
    }
    const char *p = c->cluster;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n), *slash = memchr(p, '/', n);
        if (c->member_count == CONFIG_MAX_MEMBERS) {
            snprintf(error, error_size, "--cluster: at most %d members", CONFIG_MAX_MEMBERS);
            return -1;
        }
        struct config_member *m = &c->members[c->member_count];
        char id_text[32];
        if (!eq || !slash || slash < eq || (size_t)(eq - p) >= sizeof id_text ||
            !config_address_ok(eq + 1, (size_t)(slash - eq - 1)) ||
            !config_address_ok(slash + 1, (size_t)(p + n - slash - 1))) {
            snprintf(error, error_size, "--cluster: bad member \"%.*s\" (want id=http/peer)",
                     (int)n, p);
            return -1;
        }
        memcpy(id_text, p, (size_t)(eq - p));
        id_text[eq - p] = '\0';
        uint64_t id;
        if (!config_number_parse(id_text, 1, UINT64_MAX, &id)) {
            snprintf(error, error_size, "--cluster: bad member id \"%s\"", id_text);
            return -1;
        }
        for (uint32_t i = 0; i < c->member_count; i++) {
            if (c->members[i].id == id) {
                snprintf(error, error_size, "--cluster: member id %" PRIu64 " twice", id);
                return -1;
            }
        }
        m->id = id;
        snprintf(m->http, sizeof m->http, "%.*s", (int)(slash - eq - 1), eq + 1);
        snprintf(m->peer, sizeof m->peer, "%.*s", (int)(p + n - slash - 1), slash + 1);
        c->member_count++;
        p += n;
        if (*p == ',')
            p++;
    }
    const struct config_member *self = NULL;
    for (uint32_t i = 0; i < c->member_count; i++)
        if (c->members[i].id == c->id)
            self = &c->members[i];
    if (self == NULL) {
        snprintf(error, error_size, "--id %" PRIu64 " is not a member of --cluster", c->id);
        return -1;
    }
    if (!c->listen_given && config_listen_parse(c, self->http) != 0) {
        snprintf(error, error_size, "--cluster: bad HTTP address %s", self->http);
        return -1;
    }
    return 0;
}

int config_listen_parse(struct config *c, const char *value)
{
    const char *colon = strrchr(value, ':');
    if (colon == NULL || colon == value)
        return -1;
    const char *host = value;
    size_t host_length = (size_t)(colon - value);
    if (host[0] == '[') {
        if (host_length < 3 || host[host_length - 1] != ']')
            return -1;
        host++;
        host_length -= 2;
    }
    if (host_length >= sizeof c->listen_host || strlen(value) >= sizeof c->listen)
        return -1;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || colon[1] == '-' || port > 65535)
        return -1;
    memcpy(c->listen_host, host, host_length);
    c->listen_host[host_length] = '\0';
    c->listen_port = (uint16_t)port;
    strcpy(c->listen, value);
    return 0;
}

/* Parses an unsigned decimal in [min, max]. */
static bool config_number_parse(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Stores value into the option's field. Returns false when the value is bad. */
static bool config_option_apply(struct config *c, const struct config_option *o, const char *value)
{
    char *base = (char *)c;
    uint64_t v;
    switch (o->kind) {
    case CONFIG_KIND_FLAG:
        return true;
    case CONFIG_KIND_U32:
        if (!config_number_parse(value, o->min, UINT32_MAX, &v))
            return false;
        *(uint32_t *)(base + o->offset) = (uint32_t)v;
        return true;
    case CONFIG_KIND_U64:
        if (!config_number_parse(value, o->min, UINT64_MAX, &v))
            return false;
        *(uint64_t *)(base + o->offset) = v;
        return true;
    case CONFIG_KIND_STRING:
        if (*value == '\0')
            return false;
        *(const char **)(base + o->offset) = value;
        return true;
    case CONFIG_KIND_LISTEN:
        c->listen_given = 1;
        return config_listen_parse(c, value) == 0;
    case CONFIG_KIND_LEVEL:
    case CONFIG_KIND_SCHEDULING: {
        const char *const *choices = config_choices(o->kind);
        for (int i = 0; choices[i] != NULL; i++) {
            if (strcmp(value, choices[i]) == 0) {
                *(int *)(base + o->offset) = i;
                return true;
            }
        }
        return false;
    }
    }
    return false;
}

/* The default of an option, as text, for --help. */
static void config_default_format(const struct config *d, const struct config_option *o, char *out,
                                  size_t size)
{
    const char *base = (const char *)d;
    switch (o->kind) {
    case CONFIG_KIND_FLAG:
        out[0] = '\0';
        return;
    case CONFIG_KIND_U32:
        snprintf(out, size, "%" PRIu32, *(const uint32_t *)(base + o->offset));
        return;
    case CONFIG_KIND_U64:
        snprintf(out, size, "%" PRIu64, *(const uint64_t *)(base + o->offset));
        return;
    case CONFIG_KIND_STRING: {
        const char *s = *(const char *const *)(base + o->offset);
        snprintf(out, size, "%s", s != NULL ? s : "none");
        return;
    }
    case CONFIG_KIND_LISTEN:
        snprintf(out, size, "%s", d->listen);
        return;
    case CONFIG_KIND_LEVEL:
    case CONFIG_KIND_SCHEDULING:
        snprintf(out, size, "%s", config_choices(o->kind)[*(const int *)(base + o->offset)]);
        return;
    }
}

void config_help_print(FILE *out, const char *program)
{
    struct config d;
    config_defaults(&d);
    fprintf(out, "usage: %s [options]\n\ncorral: a coordination service over HTTP/JSON.\n\n",
            program);
    for (size_t i = 0; i < sizeof config_options / sizeof config_options[0]; i++) {
        const struct config_option *o = &config_options[i];
        char left[64], def[300];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        config_default_format(&d, o, def, sizeof def);
        if (def[0] != '\0')
            fprintf(out, "  %-32s %s (default: %s)\n", left, o->help, def);
        else
            fprintf(out, "  %-32s %s\n", left, o->help);
    }
}

enum config_parse_result config_parse(struct config *c, int argc, char **argv, FILE *out, FILE *err)
{
    const char *program = argc > 0 ? argv[0] : "corrald";
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq = strchr(arg, '=');
        size_t name_length = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        const struct config_option *o = NULL;
        for (size_t k = 0; k < sizeof config_options / sizeof config_options[0]; k++) {
            if (strlen(config_options[k].name) == name_length &&
                strncmp(config_options[k].name, arg, name_length) == 0)
                o = &config_options[k];
        }
        if (o == NULL) {
            fprintf(err, "%s: unknown option '%s' (see --help)\n", program, arg);
            return CONFIG_PARSE_ERROR;
        }
        if (o->kind == CONFIG_KIND_FLAG) {
            if (eq != NULL) {
                fprintf(err, "%s: %s takes no value\n", program, o->name);
                return CONFIG_PARSE_ERROR;
            }
            config_help_print(out, program);
            return CONFIG_PARSE_HELP;
        }
        const char *value;
        if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(err, "%s: %s needs a value %s\n", program, o->name, o->metavar);
            return CONFIG_PARSE_ERROR;
        }
        if (!config_option_apply(c, o, value)) {
            fprintf(err, "%s: bad value '%s' for %s %s (%s)\n", program, value, o->name, o->metavar,
                    o->help);
            return CONFIG_PARSE_ERROR;
        }
    }
    return CONFIG_PARSE_OK;
}
