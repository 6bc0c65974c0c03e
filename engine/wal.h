/* wal.h: the write-ahead log, a sequence of checksummed records of opaque entries.
 *
 * Each record holds (index, term, payload). The index is the zxid: records are
 * contiguous, index N+1 follows N. The payload is an encoded txn (txn.h), but the WAL
 * never looks inside it, so the same log serves standalone and (later) Raft.
 *
 * Group commit. The loop thread appends records to an in-memory pending buffer
 * (wal_append). To make them durable it takes the pending records as one batch
 * (wal_batch_take), runs wal_batch_write on a worker thread (pwrite + fdatasync, the
 * only blocking part; it touches nothing but the batch), then hands the result back on
 * the loop thread (wal_batch_finish). Records appended meanwhile form the next batch, so
 * N concurrent writers share one fdatasync. Up to max_in_flight batches are written at
 * once (pipelining: the next batch's pwrite and fdatasync need not wait for the previous
 * one's); they may finish in any order, and wal_durable_index advances only over the
 * finished prefix, in index order.
 *
 * Segments. The log is a directory of files "wal-<first index, 20 digits>.log", each
 * starting with a header; a new segment starts once the current one's records pass
 * segment_bytes. Creating a segment (open, header, zero-fill, fdatasync, fsync dir) also
 * happens inside wal_batch_write.
 *
 * Preallocation. Real zero bytes are written ahead of the records, up to 1 MiB at a time
 * (the batch that nears the zeroed end writes the next step first, wal.c), so appends
 * mostly overwrite allocated blocks, the file size stays the same and fdatasync need not
 * journal metadata. A segment therefore ends in a zero tail: its
 * logical end (the end of its last valid record), not its file size, is where the next
 * record goes and where reads stop. No room for the zeros (ENOSPC) is not an error: the
 * segment is truncated back and grows by appending (counted in wal_stats).
 * The format is unchanged (version 1): a zero tail is simply not a record.
 *
 * Recovery. wal_open scans every segment in order, verifies each record's CRC and
 * index continuity, and stops at the first position that is not a valid record. If
 * every byte from there to the end of the file is zero, that is the clean end of a
 * preallocated segment: nothing is cut and the preallocation stays. Otherwise (a torn
 * or corrupt record, garbage) the log is cut there: the segment is truncated there and
 * every later segment is removed. What was cut is reported, never trusted. An fdatasync error is
 * returned to the caller, which must treat it as fatal (after a failed fsync Linux may have dropped
 * the dirty pages).
 *
 * Segment header (16 bytes, little endian):
 *   OFFSET SIZE DESCRIPTION
 *   0      8    magic "CRLWAL\0\0"
 *   8      4    format version (1)
 *   12     4    reserved, zero
 * Record (28-byte header + payload, little endian):
 *   0      4    CRC-32C of bytes 4 .. 28+length
 *   4      4    payload length
 *   8      1    record format version (1)
 *   9      1    record type (1 = entry)
 *   10     2    reserved, zero
 *   12     8    index
 *   20     8    term
 *   28     n    payload
 */
#ifndef CORRAL_WAL_H
#define CORRAL_WAL_H

#include <stddef.h>
#include <stdint.h>

struct wal;
struct wal_batch;

/* Most batches that can be in flight at once. */
#define WAL_MAX_IN_FLIGHT 8

struct wal_options {
    const char *dir;        /* directory of segments; created if missing */
    uint64_t segment_bytes; /* roll to a new segment past this size; 0 = 64 MiB */
    size_t max_in_flight;   /* batches written at once; 0 = 1, at most WAL_MAX_IN_FLIGHT */
};

/* What wal_open found and did. */
struct wal_recovery_report {
    uint64_t first_index;  /* first index on disk (0 if the log is empty) */
    uint64_t last_index;   /* last valid index (0 if the log is empty) */
    uint64_t records;      /* valid records found */
    uint64_t cut_bytes;    /* bytes cut from the tail (torn or corrupt), summed */
    uint32_t cut_segments; /* whole later segments removed */
    char cut_reason[128];  /* "" when nothing was cut, else a human description */
};

/* Opens (or creates) the log in opts->dir and recovers it as described above.
 * On success *out is a new log owned by the caller (free with wal_close) and *report
 * (if not NULL) says what was found. Returns 0, CORRAL_E_IO or CORRAL_E_NO_MEMORY. */
int wal_open(const struct wal_options *opts, struct wal **out, struct wal_recovery_report *report);

/* Closes files and frees the log. Pending records, and batches taken but not finished
 * (no worker may still be writing them), are dropped: they were never acknowledged. */
void wal_close(struct wal *w);

/* First and last index in the log, counting pending records; 0 when empty. */
uint64_t wal_first_index(const struct wal *w);
uint64_t wal_last_index(const struct wal *w);
/* Last index made durable by a finished batch (or found on disk at open). Advances only
 * when every earlier batch has finished too. */
uint64_t wal_durable_index(const struct wal *w);
/* Term of the record at wal_durable_index, as set by the last batch that advanced it;
 * 0 when no batch has finished since wal_open or wal_truncate_after. */
uint64_t wal_durable_term(const struct wal *w);
/* Batches taken and not yet retired (0: no worker owns one, the log may be truncated). */
size_t wal_in_flight_count(const struct wal *w);

/* Buckets of the fdatasync histogram: bucket i counts syncs that took less than
 * (WAL_SYNC_BUCKET_FIRST_US << i) microseconds and at least the previous bound; the
 * last bucket counts everything slower. 125 us .. 128 ms, then above. */
#define WAL_SYNC_BUCKETS 12
#define WAL_SYNC_BUCKET_FIRST_US 125

/* What the log's batches cost since open, counted when a batch retires (a failed batch
 * is not counted). They tell whether a slow commit is this process or the disk: the
 * time in pwrite (records and preallocation zeros) and in fdatasync, per batch, against
 * the bytes each batch wrote and the whole cycle. */
struct wal_stats {
    uint64_t batches;
    uint64_t cycle_us;           /* summed time from wal_batch_take to wal_batch_finish:
                                    pwrite + fdatasync + the hand-offs between threads */
    uint64_t record_bytes;       /* record bytes written (headers included) */
    uint64_t zero_bytes;         /* preallocation zeros written ahead of the records */
    uint64_t pwrite_us;          /* summed time in pwrite, zeros included */
    uint64_t fdatasync_us;       /* summed time in fdatasync (and the directory fsync) */
    uint64_t fdatasync_max_us;   /* the slowest single batch's sync */
    uint64_t prealloc_fallbacks; /* preallocation steps that found no room and appended
                                    instead: a warning, not an error (only fdatasync
                                    costs more) */
    uint64_t fdatasync_histogram[WAL_SYNC_BUCKETS];
};

/* Copies the counters into *out. */
void wal_stats_get(const struct wal *w, struct wal_stats *out);

/* Appends a record to the pending buffer (copies payload). index must be
 * wal_last_index()+1, or any index when the log is empty (the first record after a
 * snapshot). Returns 0, CORRAL_E_BAD_ARGUMENTS (index not contiguous) or NO_MEMORY. */
int wal_append(struct wal *w, uint64_t index, uint64_t term, const void *payload, size_t len);

/* Loop thread. Takes all pending records as one batch. Returns 0 with *out = NULL when
 * nothing is pending, max_in_flight batches are already out, or the batch would start a
 * new segment while others are in flight (or follow one that does); 0 with *out set
 * otherwise. The batch is owned by the log; pass it to wal_batch_write then
 * wal_batch_finish. */
int wal_batch_take(struct wal *w, struct wal_batch **out);

/* Any thread. Writes the batch (creating segments as needed) and fdatasyncs it.
 * Touches only the batch. Returns 0 or a negative errno. */
int wal_batch_write(struct wal_batch *b);

/* Loop thread. Finishes a batch with the result of wal_batch_write; the log frees it
 * (b must not be used after). On success its records are durable, and wal_durable_index
 * advances over them once every older batch has finished as well. Returns 0, or
 * CORRAL_E_IO when this or an earlier batch's write failed (the caller must stop:
 * fatal). */
int wal_batch_finish(struct wal *w, struct wal_batch *b, int write_result);

/* Convenience for tests and start-up: take, write and finish synchronously. */
int wal_sync_now(struct wal *w);

/* Called for each record by wal_replay, in index order. Return 0 to go on, anything
 * else stops the replay and is returned by wal_replay. payload is borrowed for the
 * duration of the call. */
typedef int (*wal_replay_fn)(void *arg, uint64_t index, uint64_t term, const void *payload,
                             size_t len);

/* Reads durable records with index >= from_index from disk, in order. Blocking.
 * Returns 0, the callback's non-zero value, or CORRAL_E_IO / CORRAL_E_CORRUPT. */
int wal_replay(struct wal *w, uint64_t from_index, wal_replay_fn fn, void *arg);

/* Removes every record with index > index (Raft: a conflicting suffix). Synchronous,
 * durable on return. No batch may be in flight. The removed bytes of the segment that
 * keeps index are overwritten with zeros (the preallocation stays), so no removed record
 * can come back at the next recovery. Returns 0 or CORRAL_E_IO. */
int wal_truncate_after(struct wal *w, uint64_t index);

/* Deletes whole segments whose records all have index < index (after a snapshot).
 * Never deletes the segment being written. Returns 0 or CORRAL_E_IO. */
int wal_drop_before(struct wal *w, uint64_t index);

#endif
