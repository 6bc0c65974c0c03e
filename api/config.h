/* config.h: corrald's command-line options.
 *
 * One table in config.c lists every option with its value kind, default and help
 * text; the parser and --help are both driven by it, so they cannot drift apart. */
#ifndef CORRAL_API_CONFIG_H
#define CORRAL_API_CONFIG_H

#include <stdint.h>
#include <stdio.h>

enum config_log_level {
    CONFIG_LOG_DEBUG = 0,
    CONFIG_LOG_INFO = 1,
    CONFIG_LOG_WARN = 2,
    CONFIG_LOG_ERROR = 3,
};

/* How the server's threads are scheduled (main.c explains the choice). */
enum config_scheduling_policy {
    CONFIG_SCHEDULING_NORMAL = 0,
    CONFIG_SCHEDULING_BATCH = 1,
};

#define CONFIG_MAX_MEMBERS 7

/* One member of a quorum, from --cluster "id=http/peer". */
struct config_member {
    uint64_t id;
    char http[128]; /* ADDR:PORT of its HTTP API */
    char peer[128]; /* ADDR:PORT of its peer (nanomsg) inbox */
};

struct config {
    char listen_host[256]; /* numeric IPv4 or IPv6 address (brackets stripped) */
    uint16_t listen_port;
    char listen[300];     /* "ADDR:PORT" as given, for logs and /v1/cluster */
    const char *data_dir; /* borrowed from argv or static */
    uint32_t tick_ms;
    uint32_t min_session_timeout_ms; /* 0 = engine default */
    uint32_t max_session_timeout_ms; /* 0 = engine default */
    uint32_t max_data_bytes;
    uint64_t max_body_bytes;
    uint64_t snapshot_every;
    uint64_t wal_segment_bytes;
    uint32_t wal_batches_in_flight;
    uint64_t min_free_disk_bytes;
    uint32_t snapshots_keep;
    uint64_t snapshot_inline_bytes;
    uint32_t container_check_ms;
    uint32_t max_connections;
    uint32_t max_poll_ms;      /* cap on a long-poll's timeout_ms */
    uint32_t min_zxid_wait_ms; /* how long Corral-Min-Zxid may wait before BEHIND */
    uint32_t watch_max_events; /* events in one watch answer (more: poll again) */
    uint64_t history_events;   /* events of the resumable watch kept in memory */
    uint64_t history_bytes;    /* and their bytes, at most */
    int log_level;             /* enum config_log_level */
    int scheduling_policy;     /* enum config_scheduling_policy */
    uint64_t id;               /* --id: this member's id in --cluster */
    const char *cluster;       /* --cluster as given; borrowed */
    struct config_member members[CONFIG_MAX_MEMBERS]; /* parsed --cluster */
    uint32_t member_count;                            /* 0 = standalone */
    uint32_t heartbeat_ms;
    uint32_t election_timeout_ms;
    uint32_t request_timeout_ms;
    int listen_given; /* --listen was on the command line */
};

/* Parses --cluster "1=127.0.0.1:8181/127.0.0.1:9181,2=..." into c->members and checks
 * it with --id: ids unique and non-zero, 1 to 7 members, --id among them. When
 * --listen was not given, the member's own HTTP address is used. Returns 0, or -1 with
 * a message in error. */
int config_cluster_resolve(struct config *c, char *error, size_t error_size);

/* Fills c with the defaults. */
void config_defaults(struct config *c);

enum config_parse_result {
    CONFIG_PARSE_OK = 0,
    CONFIG_PARSE_HELP = 1,  /* --help was printed to out: exit 0 */
    CONFIG_PARSE_ERROR = 2, /* a message went to err: exit 2 */
};

/* Parses argv (argv[0] is skipped) into c, which must hold the defaults. Accepts
 * "--opt value" and "--opt=value". Strings in c borrow from argv. */
enum config_parse_result config_parse(struct config *c, int argc, char **argv, FILE *out,
                                      FILE *err);

/* Prints every option with its default. */
void config_help_print(FILE *out, const char *program);

/* Parses "ADDR:PORT" (IPv6 as "[ADDR]:PORT") into c's listen fields. Returns 0 or -1. */
int config_listen_parse(struct config *c, const char *value);

#endif
