/* snapshot.h: snapshot files, the image of the state at one applied zxid.
 *
 * A snapshot lets the log before it be dropped and makes restart fast: restart loads
 * the newest valid snapshot and replays the log after its zxid. The body (tree and
 * sessions) is encoded by the engine; this module owns the file: naming, the header,
 * the checksum, atomic replacement and retention.
 *
 * File "snap-<zxid, 20 digits>.snap", little endian:
 *   OFFSET SIZE DESCRIPTION
 *   0      8    magic "CRLSNAP\0"
 *   8      4    format version (1)
 *   12     4    reserved, zero
 *   16     8    zxid: the last txn applied in this image
 *   24     8    term of that txn
 *   32     8    body length
 *   40     4    CRC-32C of the body
 *   44     4    CRC-32C of bytes 0..44 (the header itself)
 *   48     n    body
 *
 * Writing is atomic: the file is written as "snap-....snap.tmp", fsynced, renamed,
 * and the directory fsynced, so a crash leaves either the old set of snapshots or the
 * new one, never a half snapshot under a final name. Reading checks both CRCs, so a
 * damaged snapshot is detected and the caller falls back to an older one.
 */
#ifndef CORRAL_SNAPSHOT_H
#define CORRAL_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

struct snapshot_file {
    uint64_t zxid;
    char path[4096];
};

/* Writes a snapshot atomically (see above). Blocking: run it off the loop thread.
 * body is borrowed. Returns 0 or CORRAL_E_IO. */
int snapshot_write(const char *dir, uint64_t zxid, uint64_t term, const void *body, size_t length);

/* The same file written piece by piece, for a writer that encodes as it goes and so
 * never holds the whole body (corrald's forked snapshot child: a big tree's image in
 * one buffer cost a page fault per 4 KiB of it). Open, append the body in pieces of any
 * size, then commit (atomic, as above) or abort (the temporary file is removed). Both
 * free the writer. Blocking: off the loop thread. */
struct snapshot_writer;
/* Returns 0 and *out (owned by the caller until commit or abort), or CORRAL_E_IO /
 * CORRAL_E_NO_MEMORY. */
int snapshot_writer_open(const char *dir, uint64_t zxid, uint64_t term,
                         struct snapshot_writer **out);
/* data is borrowed. Returns 0 or CORRAL_E_IO (the writer must then be aborted). */
int snapshot_writer_append(struct snapshot_writer *w, const void *data, size_t length);
/* Returns 0 once the snapshot is durable under its final name, or CORRAL_E_IO. */
int snapshot_writer_commit(struct snapshot_writer *w);
void snapshot_writer_abort(struct snapshot_writer *w);

/* Lists the snapshot files of dir, newest (highest zxid) first, by name only (not
 * validated). Leftover ".tmp" files are ignored. On success *out is an array owned by
 * the caller (free()) of *count entries. Returns 0, CORRAL_E_IO or CORRAL_E_NO_MEMORY. */
int snapshot_list(const char *dir, struct snapshot_file **out, size_t *count);

/* Reads and validates one snapshot file. On success *body is a malloc'd buffer owned
 * by the caller (free()) of *length bytes. Returns 0, CORRAL_E_IO (cannot read) or
 * CORRAL_E_CORRUPT (bad magic, version, length or checksum). */
int snapshot_read(const char *path, uint64_t *zxid, uint64_t *term, uint8_t **body, size_t *length);

/* The body length of the snapshot of dir at zxid, from its file's size (a snapshot
 * written by another process, whose body the caller never saw). Returns 0 or
 * CORRAL_E_IO. */
int snapshot_body_length(const char *dir, uint64_t zxid, uint64_t *length);

/* Deletes all but the newest `keep` snapshots (and leftover .tmp files). Returns the
 * zxid of the oldest snapshot kept (0 if none), or a negative CORRAL_E_IO. */
int64_t snapshot_prune(const char *dir, uint32_t keep);

#endif
