/* wal.c: the write-ahead log of wal.h; segment header and record formats are the
 * OFFSET SIZE DESCRIPTION tables at the top of wal.h, encoded byte by byte here.
 *
 * Memory: the log keeps only an index of segments (first index, last index, durable
 * size) and the pending, not yet written records. Records already on disk are read back
 * from the files by wal_replay and wal_truncate_after.
 *
 * Threads: everything but wal_batch_write runs on the loop thread. A batch carries
 * copies of all it needs (fd, offset, segment name, directory fd) so the worker thread
 * never reads struct wal while the loop thread keeps appending.
 *
 * A batch always goes into exactly one segment: the active one, or a new one when the
 * active one had reached segment_bytes at take time. So a segment can overshoot
 * segment_bytes by one batch, and a new segment is only created once every earlier one
 * is durable, which keeps recovery simple (only the last segment can be torn).
 *
 * Pipelining. Up to max_in_flight batches are written at once, each by its own worker
 * (measured here: two concurrent pwrite+fdatasync pairs on one file complete ~1.6x as
 * many syncs per second as one; tools/bench). Batches are taken in index order, each at
 * the offset where the previous one ends (taken_end), and may finish in any order; the
 * log's bookkeeping (segment sizes, durable_index) advances only over the finished
 * prefix of the in-flight queue, so durable_index never passes a record that might not
 * be on disk. A crash with two batches in flight can leave the later batch's records on
 * disk after a gap of zeros where the earlier one should be: recovery cuts at the gap,
 * and nothing it cuts was ever reported durable. A batch that creates a segment is
 * always alone in flight (nothing is taken after it until it is finished: the new
 * segment's fd and offsets are unknown until then).
 *
 * Preallocation goes in steps. Writing a whole segment's zeros (64 MiB by default) at
 * its creation held the batch that rolled to it, and every write queued behind it, for
 * 0.1-0.4 s on this machine's virtual disk, and the burst slowed the syncs after it
 * (tools/bench W2/W3: p99 135-306 ms against ZooKeeper's 12-22 ms, which pads its log
 * sparsely). Now a segment is zeroed at most WAL_PREALLOC_STEP ahead of its logical end:
 * a batch whose records come within half a step of the zeroed end first zeroes one more
 * step (1 MiB, a few ms), then writes its records, and one fdatasync covers both. Such
 * an extending batch is alone at the head of the pipeline: nothing is taken behind it
 * until it is finished, so no later batch writes records into the range it zeroes.
 * Appends then mostly overwrite blocks that are already allocated and written, so the
 * file size does not change and fdatasync does not have to journal metadata: that is
 * the point, a cheaper group commit. posix_fallocate would not do: its unwritten extents
 * still cost a metadata update on first write. When the zeros do not fit (ENOSPC,
 * EDQUOT) the file is truncated back and the batch simply appends; that counts as a
 * warning (wal_stats.prealloc_fallbacks), not an error.
 *
 * The invariant that makes it work: in every segment, everything from the logical end
 * (wal_segment.size, the end of the last valid record) to the end of the file is zero.
 * Appends pwrite at the logical end; readers never read past it; wal_truncate_after
 * zeroes what it removes (or an old record could reappear right after a shorter new
 * one); recovery accepts an all-zero tail as the clean end of a segment and cuts only
 * when a non-zero byte follows the first invalid record. */
#include "wal.h"

#include "bytes.h"
#include "crc.h"
#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define WAL_HEADER_SIZE 16
#define WAL_RECORD_HEADER_SIZE 28
#define WAL_FORMAT_VERSION 1
#define WAL_RECORD_VERSION 1
#define WAL_RECORD_ENTRY 1
/* Larger than any txn we accept; a length beyond it can only be garbage. */
#define WAL_MAX_PAYLOAD (64u * 1024 * 1024)
#define WAL_DEFAULT_SEGMENT_BYTES (64ull * 1024 * 1024)
#define WAL_NAME_SIZE 32 /* "wal-" + 20 digits + ".log" + NUL = 29 */
#define WAL_READ_CHUNK (1u << 20)
#define WAL_ZERO_CHUNK (1u << 20) /* zero-fill and zero-check granularity */
#define WAL_DEFAULT_IN_FLIGHT 1
#define WAL_PREALLOC_STEP (1ull << 20) /* zeros kept ahead of the logical end, at most */

static const uint8_t wal_magic[8] = {'C', 'R', 'L', 'W', 'A', 'L', 0, 0};

struct wal_segment {
    uint64_t first; /* index in the file name = index of its first record */
    uint64_t last;  /* index of its last durable record */
    uint64_t size;  /* logical end: bytes known valid and durable; reads never go past
                       this, appends write here, and the file is zero from here to its
                       end (preallocation) */
};

struct wal_buf {
    uint8_t *data; /* owned */
    size_t len;
    size_t cap;
};

struct wal {
    int dir_fd;
    int active_fd; /* last segment, open O_RDWR; -1 when there are no segments */
    uint64_t segment_bytes;
    struct wal_segment *segs; /* owned, sorted by first index */
    size_t nsegs;
    size_t segs_cap;
    uint64_t first_index; /* counting pending and in-flight records; 0 when empty */
    uint64_t last_index;
    uint64_t durable_index;
    uint64_t durable_term; /* term of the record at durable_index (0: not known yet) */
    struct wal_buf pending;
    uint64_t pending_first; /* 0 when nothing is pending */
    uint64_t pending_last;
    uint64_t pending_last_term;
    /* Batches taken and not yet finished, oldest first; owned by the log until the
     * finished prefix is retired by wal_batch_finish. */
    struct wal_batch *in_flight[WAL_MAX_IN_FLIGHT];
    size_t in_flight_count;
    size_t max_in_flight;
    uint64_t taken_end;     /* active segment: where the next batch goes while some
                               are in flight (the end of the newest one) */
    bool failed;            /* a batch failed: the log refuses further batches */
    struct wal_stats stats; /* of retired batches */
    uint64_t zero_end;      /* active segment: its file size; zero from the logical
                               end (and from taken_end) to here */
};

struct wal_batch {
    struct wal_buf records; /* owned: the pending buffer swapped in at take time */
    uint64_t first;
    uint64_t last;
    uint64_t last_term;
    bool done;  /* wal_batch_finish was called; waits for older batches to retire */
    int dir_fd; /* borrowed from the log, which outlives the batch */
    int fd;     /* append target; -1 when the batch creates a segment */
    uint64_t offset;
    bool create; /* the batch starts a new segment named new_name */
    /* Zeros to write before the records, [zero_from, zero_to): a new segment's first
     * step, or the next step of the active one (preallocation). zero_to == 0: none. */
    uint64_t zero_from;
    uint64_t zero_to;
    char new_name[WAL_NAME_SIZE];
    int new_fd;           /* created by wal_batch_write; owned by the batch until finish */
    bool prealloc_failed; /* set by wal_batch_write: no room, the segment appends */
    /* For wal_stats: taken_us and finished_us on the loop thread (take, finish), the
     * other two by wal_batch_write. Monotonic microseconds. */
    uint64_t taken_us;
    uint64_t finished_us;
    uint64_t pwrite_us;
    uint64_t fdatasync_us;
};

static uint16_t wal_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static void wal_segment_name(char *name, uint64_t first)
{
    snprintf(name, WAL_NAME_SIZE, "wal-%020llu.log", (unsigned long long)first);
}

/* Parses "wal-<20 digits>.log"; anything else in the directory is not ours. */
static bool wal_segment_name_parse(const char *name, uint64_t *first)
{
    if (strlen(name) != 28 || memcmp(name, "wal-", 4) != 0 || strcmp(name + 24, ".log") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 4; i < 24; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *first = v;
    return true;
}

static void wal_header_encode(uint8_t *h)
{
    memcpy(h, wal_magic, 8);
    bytes_store_u32(h + 8, WAL_FORMAT_VERSION);
    bytes_store_u32(h + 12, 0);
}

static bool wal_header_valid(const uint8_t *h)
{
    return memcmp(h, wal_magic, 8) == 0 && bytes_load_u32(h + 8) == WAL_FORMAT_VERSION &&
           bytes_load_u32(h + 12) == 0;
}

static int wal_buf_reserve(struct wal_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return CORRAL_E_NO_MEMORY;
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (!data)
        return CORRAL_E_NO_MEMORY;
    b->data = data;
    b->cap = cap;
    return 0;
}

static void wal_buf_free(struct wal_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Frees a batch and what it still owns (a created segment's fd it did not hand over). */
static void wal_batch_free(struct wal_batch *b)
{
    if (b->new_fd >= 0)
        close(b->new_fd);
    wal_buf_free(&b->records);
    free(b);
}

static int wal_pread_all(int fd, void *buf, size_t len, uint64_t offset)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* callers only read below a size they know */
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int wal_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* no progress: retrying would spin forever */
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int wal_fsync_dir(struct wal *w)
{
    return fsync(w->dir_fd) == 0 ? 0 : CORRAL_E_IO;
}

/* The source of every zero fill, shared by the worker threads; never written (not const
 * only so that it lives in .bss, not as 1 MiB of zeros in the binary's .rodata). A
 * fresh calloc'd buffer per fill cost more than the write itself: its pages were not
 * mapped, so the kernel's copy into the page cache came up short on every page, zeroed
 * the new blocks, faulted the page in and copied again (perf, a follower at 20k writes/s:
 * ~10 % of its CPU in those faults and zeroing). This one is mapped once, on first use,
 * and stays mapped. */
static uint8_t wal_zeros[WAL_ZERO_CHUNK];

/* Writes zero bytes over [from, to) of fd, 1 MiB per pwrite. Does not sync.
 * Returns 0 or a negative errno. */
static int wal_zero_fill(int fd, uint64_t from, uint64_t to)
{
    int rc = 0;
    for (uint64_t off = from; off < to && rc == 0;) {
        size_t n = to - off < WAL_ZERO_CHUNK ? (size_t)(to - off) : WAL_ZERO_CHUNK;
        rc = wal_pwrite_all(fd, wal_zeros, n, off);
        off += n;
    }
    return rc;
}

/* Extends fd, whose size is size, to target with real zero bytes (not synced). Returns 0
 * when done, 1 when there was no room (ENOSPC, EDQUOT): the file is truncated back to
 * size and the caller appends instead; or a negative errno. */
static int wal_preallocate(int fd, uint64_t size, uint64_t target)
{
    int rc = wal_zero_fill(fd, size, target);
    if (rc == -ENOSPC || rc == -EDQUOT) {
        if (ftruncate(fd, (off_t)size) != 0)
            return -errno;
        return 1;
    }
    return rc;
}

/* Sets *zero to whether bytes [from, to) of fd are all zero: reads 1 MiB at a time and
 * stops at the first non-zero byte. Returns 0, CORRAL_E_IO or CORRAL_E_NO_MEMORY. */
static int wal_all_zero(int fd, uint64_t from, uint64_t to, bool *zero)
{
    *zero = true;
    if (from >= to)
        return 0;
    size_t chunk = to - from < WAL_ZERO_CHUNK ? (size_t)(to - from) : WAL_ZERO_CHUNK;
    uint8_t *buf = malloc(chunk); /* owned */
    if (!buf)
        return CORRAL_E_NO_MEMORY;
    int rc = 0;
    for (uint64_t off = from; off < to;) {
        size_t n = to - off < chunk ? (size_t)(to - off) : chunk;
        if (wal_pread_all(fd, buf, n, off) != 0) {
            rc = CORRAL_E_IO;
            break;
        }
        /* buf is zero iff its first byte is and every byte equals the next one. */
        if (buf[0] != 0 || (n > 1 && memcmp(buf, buf + 1, n - 1) != 0)) {
            *zero = false;
            break;
        }
        off += n;
    }
    free(buf);
    return rc;
}

/* Sequential reader over [start, limit) of one segment file. Records are usually small,
 * so it reads in 1 MiB chunks and hands out pointers into its buffer; a record larger
 * than the buffer grows it. */
struct wal_reader {
    int fd;
    uint64_t limit;
    struct wal_buf buf; /* owned; bytes [base, base + buf.len) of the file */
    uint64_t base;
};

/* Makes bytes [off, off + n) available; the caller has checked off + n <= limit.
 * Returns a pointer valid until the next call, or NULL with *err set. */
static const uint8_t *wal_reader_get(struct wal_reader *r, uint64_t off, size_t n, int *err)
{
    if (off >= r->base && off + n <= r->base + r->buf.len)
        return r->buf.data + (off - r->base);
    size_t want = n > WAL_READ_CHUNK ? n : WAL_READ_CHUNK;
    if (want > r->limit - off)
        want = (size_t)(r->limit - off);
    r->buf.len = 0;
    if (wal_buf_reserve(&r->buf, want) != 0) {
        *err = CORRAL_E_NO_MEMORY;
        return NULL;
    }
    if (wal_pread_all(r->fd, r->buf.data, want, off) != 0) {
        *err = CORRAL_E_IO;
        return NULL;
    }
    r->base = off;
    r->buf.len = want;
    return r->buf.data;
}

/* A decoded record; payload points into the reader's buffer. */
struct wal_record {
    uint64_t index;
    uint64_t term;
    const uint8_t *payload;
    uint32_t len;
};

/* Decodes and verifies the record at off. Returns 0, CORRAL_E_CORRUPT with *why set to
 * a short description, or CORRAL_E_IO / CORRAL_E_NO_MEMORY. */
static int wal_record_read(struct wal_reader *r, uint64_t off, bool check_crc,
                           struct wal_record *rec, const char **why)
{
    int err = 0;
    if (r->limit - off < WAL_RECORD_HEADER_SIZE) {
        *why = "torn record header";
        return CORRAL_E_CORRUPT;
    }
    const uint8_t *h = wal_reader_get(r, off, WAL_RECORD_HEADER_SIZE, &err);
    if (!h)
        return err;
    uint32_t len = bytes_load_u32(h + 4);
    if (len > WAL_MAX_PAYLOAD) {
        *why = "implausible record length";
        return CORRAL_E_CORRUPT;
    }
    if (r->limit - off - WAL_RECORD_HEADER_SIZE < len) {
        *why = "torn record (length past end of file)";
        return CORRAL_E_CORRUPT;
    }
    h = wal_reader_get(r, off, WAL_RECORD_HEADER_SIZE + (size_t)len, &err);
    if (!h)
        return err;
    if (check_crc &&
        cluster_crc32c(0, h + 4, WAL_RECORD_HEADER_SIZE - 4 + (size_t)len) != bytes_load_u32(h)) {
        *why = "crc mismatch";
        return CORRAL_E_CORRUPT;
    }
    if (h[8] != WAL_RECORD_VERSION) {
        *why = "unknown record version";
        return CORRAL_E_CORRUPT;
    }
    if (h[9] != WAL_RECORD_ENTRY) {
        *why = "unknown record type";
        return CORRAL_E_CORRUPT;
    }
    if (wal_get_le16(h + 10) != 0) {
        *why = "reserved field not zero";
        return CORRAL_E_CORRUPT;
    }
    rec->index = bytes_load_u64(h + 12);
    rec->term = bytes_load_u64(h + 20);
    rec->payload = h + WAL_RECORD_HEADER_SIZE;
    rec->len = len;
    return 0;
}

static int wal_segs_push(struct wal *w, const struct wal_segment *s)
{
    if (w->nsegs == w->segs_cap) {
        size_t cap = w->segs_cap ? w->segs_cap * 2 : 8;
        struct wal_segment *segs = realloc(w->segs, cap * sizeof(*segs));
        if (!segs)
            return CORRAL_E_NO_MEMORY;
        w->segs = segs;
        w->segs_cap = cap;
    }
    w->segs[w->nsegs++] = *s;
    return 0;
}

/* Opens the last segment for appending, closing the previous active fd. */
static int wal_active_reopen(struct wal *w)
{
    if (w->active_fd >= 0)
        close(w->active_fd);
    w->active_fd = -1;
    if (w->nsegs == 0)
        return 0;
    char name[WAL_NAME_SIZE];
    wal_segment_name(name, w->segs[w->nsegs - 1].first);
    w->active_fd = openat(w->dir_fd, name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (w->active_fd < 0 || fstat(w->active_fd, &st) != 0)
        return CORRAL_E_IO;
    /* Past the logical end the file is zero (recovery and truncation keep it so): the
     * preallocation to build on. */
    w->zero_end = (uint64_t)st.st_size;
    return 0;
}

static int wal_mkdir_p(const char *dir)
{
    char *path = strdup(dir); /* owned, freed below */
    int rc = 0;
    if (!path)
        return CORRAL_E_NO_MEMORY;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            rc = CORRAL_E_IO;
            goto out;
        }
        *p = c;
        if (c == '\0')
            break;
    }
out:
    free(path);
    return rc;
}

static int wal_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Lists the first indexes of the segment files, sorted. *out is owned by the caller. */
static int wal_dir_list(int dir_fd, uint64_t **out, size_t *count)
{
    int fd = dup(dir_fd);
    if (fd < 0)
        return CORRAL_E_IO;
    DIR *d = fdopendir(fd); /* owns fd from here */
    if (!d) {
        close(fd);
        return CORRAL_E_IO;
    }
    rewinddir(d);
    uint64_t *v = NULL; /* owned; handed to *out on success */
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t first;
        if (!wal_segment_name_parse(e->d_name, &first))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *nv = realloc(v, cap * sizeof(*nv));
            if (!nv) {
                rc = CORRAL_E_NO_MEMORY;
                goto out;
            }
            v = nv;
        }
        v[n++] = first;
    }
    if (n > 0)
        qsort(v, n, sizeof(*v), wal_u64_cmp);
    *out = v;
    *count = n;
    v = NULL;
out:
    free(v);
    closedir(d);
    return rc;
}

static const char wal_no_record[] = "segment holds no record";

/* Scans one segment and appends it to w->segs when it holds valid records. When all is
 * valid *why stays NULL; otherwise *why says what is wrong at file offset *bad (0 for
 * the header). *has_records is false when not a single record is valid, in which case
 * the whole segment must go. The scan stops at the first position that is not a valid
 * record; when every byte from there to the end of the file is zero, that is the clean
 * end of a preallocated segment, not damage: the segment's logical end is set there. */
static int wal_segment_scan(struct wal *w, uint64_t first, uint64_t *file_size, uint64_t *bad,
                            bool *has_records, const char **why, uint64_t *records)
{
    char name[WAL_NAME_SIZE];
    struct wal_reader r = {.fd = -1};
    struct wal_segment seg = {.first = first, .last = 0, .size = WAL_HEADER_SIZE};
    int rc = 0;
    struct stat st;
    uint64_t off = 0;

    *why = NULL;
    *has_records = false;
    wal_segment_name(name, first);
    r.fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0 || fstat(r.fd, &st) != 0) {
        rc = CORRAL_E_IO;
        goto out;
    }
    *file_size = (uint64_t)st.st_size;
    r.limit = (uint64_t)st.st_size;
    if (r.limit < WAL_HEADER_SIZE) {
        *why = "short segment header";
        goto out;
    }
    const uint8_t *h = wal_reader_get(&r, 0, WAL_HEADER_SIZE, &rc);
    if (!h)
        goto out;
    if (!wal_header_valid(h)) {
        *why = "bad segment header";
        goto out;
    }
    if (w->nsegs > 0 && w->segs[w->nsegs - 1].last + 1 != first) {
        *why = "segment does not follow the previous one";
        goto out;
    }
    uint64_t expect = first;
    for (off = WAL_HEADER_SIZE; off < r.limit;) {
        struct wal_record rec;
        rc = wal_record_read(&r, off, true, &rec, why);
        if (rc == CORRAL_E_CORRUPT) {
            rc = 0;
            break;
        }
        if (rc != 0)
            goto out;
        if (rec.index != expect) {
            *why = "index not contiguous";
            break;
        }
        seg.last = rec.index;
        expect++;
        (*records)++;
        off += WAL_RECORD_HEADER_SIZE + (uint64_t)rec.len;
    }
    if (*why) {
        bool zero;
        rc = wal_all_zero(r.fd, off, r.limit, &zero);
        if (rc != 0)
            goto out;
        if (zero)
            *why = NULL; /* the zero tail of a preallocated segment */
    }
    if (seg.last == 0) {
        /* Header only, e.g. a roll that crashed before its first record was durable. */
        if (!*why)
            *why = wal_no_record;
        goto out;
    }
    *has_records = true;
    seg.size = off;
    rc = wal_segs_push(w, &seg);
out:
    *bad = off;
    if (r.fd >= 0)
        close(r.fd);
    wal_buf_free(&r.buf);
    return rc;
}

static int wal_recover(struct wal *w, struct wal_recovery_report *rep)
{
    uint64_t *firsts = NULL; /* owned */
    size_t n = 0;
    int rc = wal_dir_list(w->dir_fd, &firsts, &n);
    if (rc != 0)
        return rc;
    size_t i;
    bool cut = false;
    for (i = 0; i < n; i++) {
        uint64_t size = 0, bad = 0;
        bool has_records;
        const char *why = NULL;
        char name[WAL_NAME_SIZE];
        rc = wal_segment_scan(w, firsts[i], &size, &bad, &has_records, &why, &rep->records);
        if (rc != 0)
            goto out;
        if (!why)
            continue;
        wal_segment_name(name, firsts[i]);
        /* A header-only last segment lost nothing that was ever acknowledged: removing it
         * is tidying, not a cut. */
        bool tidy = why == wal_no_record && i + 1 == n;
        if (!tidy) {
            cut = true;
            snprintf(rep->cut_reason, sizeof(rep->cut_reason), "segment %s offset %llu: %s", name,
                     (unsigned long long)bad, why);
        }
        if (!has_records) {
            if (unlinkat(w->dir_fd, name, 0) != 0) {
                rc = CORRAL_E_IO;
                goto out;
            }
            if (!tidy) {
                rep->cut_segments++;
                rep->cut_bytes += size;
            }
        } else {
            int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC);
            if (fd < 0 || ftruncate(fd, (off_t)bad) != 0 || fsync(fd) != 0) {
                if (fd >= 0)
                    close(fd);
                rc = CORRAL_E_IO;
                goto out;
            }
            close(fd);
            rep->cut_bytes += size - bad;
        }
        i++;
        break;
    }
    /* Everything after the cut point depends on what was cut, so none of it is trusted. */
    for (; i < n; i++) {
        char name[WAL_NAME_SIZE];
        struct stat st;
        wal_segment_name(name, firsts[i]);
        if (fstatat(w->dir_fd, name, &st, 0) == 0)
            rep->cut_bytes += (uint64_t)st.st_size;
        if (unlinkat(w->dir_fd, name, 0) != 0) {
            rc = CORRAL_E_IO;
            goto out;
        }
        rep->cut_segments++;
        cut = true;
    }
    if (w->nsegs < n)
        rc = wal_fsync_dir(w);
    if (cut)
        fprintf(stderr, "wal: cut %s (%llu bytes, %u whole segments)\n", rep->cut_reason,
                (unsigned long long)rep->cut_bytes, rep->cut_segments);
out:
    free(firsts);
    return rc;
}

int wal_open(const struct wal_options *opts, struct wal **out, struct wal_recovery_report *report)
{
    struct wal_recovery_report rep;
    struct wal *w = NULL; /* owned until handed to *out */
    int rc;

    memset(&rep, 0, sizeof(rep));
    *out = NULL;
    if (!opts || !opts->dir)
        return CORRAL_E_BAD_ARGUMENTS;
    rc = wal_mkdir_p(opts->dir);
    if (rc != 0)
        return rc;
    w = calloc(1, sizeof(*w));
    if (!w)
        return CORRAL_E_NO_MEMORY;
    w->active_fd = -1;
    w->segment_bytes = opts->segment_bytes ? opts->segment_bytes : WAL_DEFAULT_SEGMENT_BYTES;
    w->max_in_flight = opts->max_in_flight ? opts->max_in_flight : WAL_DEFAULT_IN_FLIGHT;
    if (w->max_in_flight > WAL_MAX_IN_FLIGHT)
        w->max_in_flight = WAL_MAX_IN_FLIGHT;
    w->dir_fd = open(opts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dir_fd < 0) {
        rc = CORRAL_E_IO;
        goto out;
    }
    rc = wal_recover(w, &rep);
    if (rc != 0)
        goto out;
    rc = wal_active_reopen(w);
    if (rc != 0)
        goto out;
    if (w->nsegs > 0) {
        w->first_index = w->segs[0].first;
        w->last_index = w->segs[w->nsegs - 1].last;
        w->durable_index = w->last_index;
    }
    rep.first_index = w->first_index;
    rep.last_index = w->last_index;
    *out = w;
    w = NULL;
out:
    if (w)
        wal_close(w);
    if (report)
        *report = rep;
    return rc;
}

void wal_close(struct wal *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->in_flight_count; i++)
        wal_batch_free(w->in_flight[i]);
    if (w->active_fd >= 0)
        close(w->active_fd);
    if (w->dir_fd >= 0)
        close(w->dir_fd);
    wal_buf_free(&w->pending);
    free(w->segs);
    free(w);
}

uint64_t wal_first_index(const struct wal *w)
{
    return w->first_index;
}

uint64_t wal_last_index(const struct wal *w)
{
    return w->last_index;
}

uint64_t wal_durable_index(const struct wal *w)
{
    return w->durable_index;
}

uint64_t wal_durable_term(const struct wal *w)
{
    return w->durable_term;
}

size_t wal_in_flight_count(const struct wal *w)
{
    return w->in_flight_count;
}

void wal_stats_get(const struct wal *w, struct wal_stats *out)
{
    *out = w->stats;
}

static uint64_t wal_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Counts a retired batch in the log's statistics. */
static void wal_stats_count(struct wal_stats *st, const struct wal_batch *b)
{
    st->batches++;
    st->cycle_us += b->finished_us - b->taken_us;
    st->record_bytes += b->records.len;
    if (b->zero_to != 0 && !b->prealloc_failed)
        st->zero_bytes += b->zero_to - b->zero_from;
    st->pwrite_us += b->pwrite_us;
    st->fdatasync_us += b->fdatasync_us;
    if (b->fdatasync_us > st->fdatasync_max_us)
        st->fdatasync_max_us = b->fdatasync_us;
    size_t bucket = 0;
    while (bucket < WAL_SYNC_BUCKETS - 1 &&
           b->fdatasync_us >= ((uint64_t)WAL_SYNC_BUCKET_FIRST_US << bucket))
        bucket++;
    st->fdatasync_histogram[bucket]++;
}

int wal_append(struct wal *w, uint64_t index, uint64_t term, const void *payload, size_t len)
{
    /* Index 0 means "empty" in this API, so it can never name a record. */
    if (index == 0 || (w->last_index != 0 && index != w->last_index + 1))
        return CORRAL_E_BAD_ARGUMENTS;
    if (len > WAL_MAX_PAYLOAD || (len > 0 && !payload))
        return CORRAL_E_BAD_ARGUMENTS;
    int rc = wal_buf_reserve(&w->pending, WAL_RECORD_HEADER_SIZE + len);
    if (rc != 0)
        return rc;
    uint8_t *h = w->pending.data + w->pending.len;
    bytes_store_u32(h + 4, (uint32_t)len);
    h[8] = WAL_RECORD_VERSION;
    h[9] = WAL_RECORD_ENTRY;
    h[10] = h[11] = 0;
    bytes_store_u64(h + 12, index);
    bytes_store_u64(h + 20, term);
    if (len > 0)
        memcpy(h + WAL_RECORD_HEADER_SIZE, payload, len);
    bytes_store_u32(h, cluster_crc32c(0, h + 4, WAL_RECORD_HEADER_SIZE - 4 + len));
    w->pending.len += WAL_RECORD_HEADER_SIZE + len;
    if (w->pending_first == 0)
        w->pending_first = index;
    w->pending_last = index;
    w->pending_last_term = term;
    if (w->first_index == 0)
        w->first_index = index;
    w->last_index = index;
    return 0;
}

int wal_batch_take(struct wal *w, struct wal_batch **out)
{
    *out = NULL;
    if (w->failed)
        return CORRAL_E_IO;
    if (w->pending_first == 0 || w->in_flight_count >= w->max_in_flight)
        return 0;
    bool busy = w->in_flight_count > 0;
    struct wal_batch *newest = busy ? w->in_flight[w->in_flight_count - 1] : NULL;
    if (newest && (newest->create || newest->zero_to != 0))
        return 0; /* the range it zeroes (a new segment's fd) is not settled until it is done */
    uint64_t active_end = busy ? w->taken_end : (w->nsegs ? w->segs[w->nsegs - 1].size : 0);
    bool roll = w->nsegs == 0 || active_end >= w->segment_bytes;
    if (roll && busy)
        return 0; /* a segment is created only once every earlier record is durable */
    struct wal_batch *b = calloc(1, sizeof(*b)); /* owned by the log until retired */
    if (!b)
        return CORRAL_E_NO_MEMORY;
    b->records = w->pending; /* the batch takes the buffer; appends start a new one */
    memset(&w->pending, 0, sizeof(w->pending));
    b->first = w->pending_first;
    b->last = w->pending_last;
    b->last_term = w->pending_last_term;
    w->pending_first = w->pending_last = w->pending_last_term = 0;
    b->dir_fd = w->dir_fd;
    b->new_fd = -1;
    b->taken_us = wal_clock_us();
    uint64_t step = w->segment_bytes < WAL_PREALLOC_STEP ? w->segment_bytes : WAL_PREALLOC_STEP;
    uint64_t zero_end = w->zero_end;
    if (roll) {
        b->create = true;
        b->fd = -1;
        b->offset = WAL_HEADER_SIZE;
        wal_segment_name(b->new_name, b->first);
        zero_end = WAL_HEADER_SIZE;
    } else {
        b->fd = w->active_fd;
        b->offset = active_end;
    }
    /* Keep at least half a step of zeros past these records (a new segment: a step). */
    uint64_t end = b->offset + b->records.len;
    if (b->create || end + step / 2 > zero_end) {
        b->zero_from = zero_end;
        b->zero_to = (end + step / 2 + step - 1) / step * step;
        if (b->zero_to < step)
            b->zero_to = step;
        w->zero_end = b->zero_to;
    }
    w->taken_end = b->offset + b->records.len;
    w->in_flight[w->in_flight_count++] = b;
    *out = b;
    return 0;
}

int wal_batch_write(struct wal_batch *b)
{
    int fd = b->fd;
    int rc;
    uint64_t started_us = wal_clock_us();
    if (b->create) {
        uint8_t h[WAL_HEADER_SIZE];
        b->new_fd = openat(b->dir_fd, b->new_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (b->new_fd < 0)
            return -errno;
        fd = b->new_fd;
        wal_header_encode(h);
        rc = wal_pwrite_all(fd, h, sizeof(h), 0);
        if (rc != 0)
            return rc;
    }
    if (b->zero_to != 0) {
        /* Preallocate the next step: real zeros, so that later batches overwrite
         * instead of growing the file. Without room, the segment appends. */
        rc = wal_preallocate(fd, b->zero_from, b->zero_to);
        if (rc < 0)
            return rc;
        b->prealloc_failed = rc == 1;
    }
    rc = wal_pwrite_all(fd, b->records.data, b->records.len, b->offset);
    if (rc != 0)
        return rc;
    uint64_t written_us = wal_clock_us();
    b->pwrite_us = written_us - started_us;
    /* One fdatasync for the whole batch (and a new segment's header and zeros): this is
     * the group commit. */
    if (fdatasync(fd) != 0)
        return -errno;
    /* The new name must be durable too, or a crash could lose the whole segment. */
    if (b->create && fsync(b->dir_fd) != 0)
        return -errno;
    b->fdatasync_us = wal_clock_us() - written_us;
    return 0;
}

/* Applies the oldest in-flight batch, finished without error, to the log's bookkeeping
 * (a new segment's fd moves to the log). Returns 0 or CORRAL_E_NO_MEMORY. */
static int wal_batch_retire(struct wal *w, struct wal_batch *b)
{
    int rc = 0;
    if (b->prealloc_failed) {
        w->stats.prealloc_fallbacks++;
        w->zero_end = b->offset + b->records.len; /* the zeros were taken back */
        fprintf(stderr, "wal: no room to preallocate log space: appending\n");
    }
    if (b->create) {
        struct wal_segment seg = {
            .first = b->first, .last = b->last, .size = WAL_HEADER_SIZE + (uint64_t)b->records.len};
        rc = wal_segs_push(w, &seg);
        if (rc == 0) {
            if (w->active_fd >= 0)
                close(w->active_fd);
            w->active_fd = b->new_fd;
            b->new_fd = -1;
        }
    } else {
        w->segs[w->nsegs - 1].last = b->last;
        w->segs[w->nsegs - 1].size += b->records.len;
    }
    if (rc == 0) {
        w->durable_index = b->last;
        w->durable_term = b->last_term;
        wal_stats_count(&w->stats, b);
    }
    return rc;
}

int wal_batch_finish(struct wal *w, struct wal_batch *b, int write_result)
{
    size_t at = 0;
    while (at < w->in_flight_count && w->in_flight[at] != b)
        at++;
    if (!b || at == w->in_flight_count || b->done)
        return CORRAL_E_BAD_ARGUMENTS;
    b->done = true;
    b->finished_us = wal_clock_us();
    if (write_result != 0) {
        /* No retry: after a failed fdatasync the kernel may have dropped the pages, so
         * what is on disk is unknown. The log refuses further batches. */
        w->failed = true;
    }
    /* Retire the finished prefix, oldest first; a batch finished early waits here. */
    while (w->in_flight_count > 0 && w->in_flight[0]->done) {
        struct wal_batch *head = w->in_flight[0];
        w->in_flight_count--;
        memmove(w->in_flight, w->in_flight + 1, w->in_flight_count * sizeof(*w->in_flight));
        if (!w->failed && wal_batch_retire(w, head) != 0)
            w->failed = true;
        wal_batch_free(head);
    }
    return w->failed ? CORRAL_E_IO : 0;
}

int wal_sync_now(struct wal *w)
{
    if (w->in_flight_count > 0)
        return CORRAL_E_BAD_ARGUMENTS; /* cannot wait for a batch another thread owns */
    for (;;) {
        struct wal_batch *b;
        int rc = wal_batch_take(w, &b);
        if (rc != 0 || !b)
            return rc;
        rc = wal_batch_finish(w, b, wal_batch_write(b));
        if (rc != 0)
            return rc;
    }
}

/* Replays one segment's records with from <= index <= upto, reading at most size bytes. */
static int wal_replay_segment(struct wal *w, const struct wal_segment *seg, uint64_t from,
                              uint64_t upto, wal_replay_fn fn, void *arg)
{
    char name[WAL_NAME_SIZE];
    struct wal_reader r = {.fd = -1, .limit = seg->size};
    int rc = 0;

    wal_segment_name(name, seg->first);
    r.fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0) {
        rc = CORRAL_E_IO;
        goto out;
    }
    uint64_t expect = seg->first;
    for (uint64_t off = WAL_HEADER_SIZE; off < r.limit && expect <= upto; expect++) {
        struct wal_record rec;
        const char *why;
        /* Records before from are only skipped, so their CRC is not worth computing. */
        rc = wal_record_read(&r, off, expect >= from, &rec, &why);
        if (rc != 0)
            goto out;
        if (rec.index != expect) {
            rc = CORRAL_E_CORRUPT;
            goto out;
        }
        if (rec.index >= from) {
            rc = fn(arg, rec.index, rec.term, rec.payload, rec.len);
            if (rc != 0)
                goto out;
        }
        off += WAL_RECORD_HEADER_SIZE + (uint64_t)rec.len;
    }
out:
    if (r.fd >= 0)
        close(r.fd);
    wal_buf_free(&r.buf);
    return rc;
}

int wal_replay(struct wal *w, uint64_t from_index, wal_replay_fn fn, void *arg)
{
    /* A copy: the callback may append, and finish or drop_before may change w->segs. */
    uint64_t upto = w->durable_index;
    size_t n = w->nsegs;
    struct wal_segment *segs = NULL; /* owned */
    int rc = 0;

    if (n == 0 || upto == 0)
        return 0;
    segs = malloc(n * sizeof(*segs));
    if (!segs)
        return CORRAL_E_NO_MEMORY;
    memcpy(segs, w->segs, n * sizeof(*segs));
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (segs[i].last < from_index || segs[i].first > upto)
            continue;
        rc = wal_replay_segment(w, &segs[i], from_index, upto, fn, arg);
    }
    free(segs);
    return rc;
}

/* Finds the file offset of record index inside segment seg. */
static int wal_segment_find(struct wal *w, const struct wal_segment *seg, uint64_t index,
                            uint64_t *offset)
{
    char name[WAL_NAME_SIZE];
    struct wal_reader r = {.fd = -1, .limit = seg->size};
    int rc = 0;
    uint64_t off = WAL_HEADER_SIZE;

    wal_segment_name(name, seg->first);
    r.fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0) {
        rc = CORRAL_E_IO;
        goto out;
    }
    for (uint64_t i = seg->first; i < index; i++) {
        struct wal_record rec;
        const char *why;
        rc = wal_record_read(&r, off, false, &rec, &why);
        if (rc != 0)
            goto out;
        if (rec.index != i) {
            rc = CORRAL_E_CORRUPT;
            goto out;
        }
        off += WAL_RECORD_HEADER_SIZE + (uint64_t)rec.len;
    }
    *offset = off;
out:
    if (r.fd >= 0)
        close(r.fd);
    wal_buf_free(&r.buf);
    return rc;
}

/* Drops pending records with index > index; they were never written. */
static void wal_pending_truncate(struct wal *w, uint64_t index)
{
    if (w->pending_first == 0 || index >= w->pending_last)
        return;
    if (index < w->pending_first) {
        w->pending.len = 0;
        w->pending_first = w->pending_last = 0;
        return;
    }
    size_t off = 0;
    for (uint64_t i = w->pending_first; i <= index; i++)
        off += WAL_RECORD_HEADER_SIZE + bytes_load_u32(w->pending.data + off + 4);
    w->pending.len = off;
    w->pending_last = index;
}

static int wal_unlink_from(struct wal *w, size_t from)
{
    for (size_t i = w->nsegs; i > from; i--) {
        char name[WAL_NAME_SIZE];
        wal_segment_name(name, w->segs[i - 1].first);
        /* Newest first, so a crash in between never leaves a gap in the sequence. */
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT)
            return CORRAL_E_IO;
        w->nsegs = i - 1;
    }
    return 0;
}

int wal_truncate_after(struct wal *w, uint64_t index)
{
    int rc = 0;
    if (w->in_flight_count > 0)
        return CORRAL_E_BAD_ARGUMENTS;
    if (w->last_index == 0 || index >= w->last_index)
        return 0;
    wal_pending_truncate(w, index);
    if (index < w->durable_index) {
        size_t i = 0;
        while (i < w->nsegs && w->segs[i].last < index + 1)
            i++;
        /* i is the segment holding index + 1 (it exists: index + 1 <= durable). */
        size_t keep = i;
        if (w->segs[i].first <= index) {
            uint64_t off;
            rc = wal_segment_find(w, &w->segs[i], index + 1, &off);
            if (rc != 0)
                return rc == CORRAL_E_NO_MEMORY ? rc : CORRAL_E_IO;
            char name[WAL_NAME_SIZE];
            wal_segment_name(name, w->segs[i].first);
            int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                return CORRAL_E_IO;
            /* Zero the removed records, keeping the preallocation: left in place, an old
             * record could follow a shorter new one exactly and come back at recovery.
             * Past the old logical end the file is zero already. Should the overwrite
             * fail, truncating the file is just as correct. */
            bool ok = wal_zero_fill(fd, off, w->segs[i].size) == 0 && fdatasync(fd) == 0;
            if (!ok)
                ok = ftruncate(fd, (off_t)off) == 0 && fsync(fd) == 0;
            close(fd);
            if (!ok)
                return CORRAL_E_IO;
            w->segs[i].size = off;
            w->segs[i].last = index;
            keep = i + 1;
        }
        /* A segment starting at index + 1 or later goes whole: no header-only files. */
        rc = wal_unlink_from(w, keep);
        if (rc == 0)
            rc = wal_fsync_dir(w);
        if (rc == 0)
            rc = wal_active_reopen(w);
        if (rc != 0)
            return rc;
        w->durable_index = w->nsegs ? w->segs[w->nsegs - 1].last : 0;
        w->durable_term = 0;
    }
    if (index < w->first_index) {
        w->first_index = w->last_index = w->durable_index = w->durable_term = 0;
        w->pending.len = 0;
        w->pending_first = w->pending_last = 0;
    } else {
        w->last_index = index;
    }
    return 0;
}

int wal_drop_before(struct wal *w, uint64_t index)
{
    size_t drop = 0;
    /* The last segment is (or is about to be) written to, so it always stays. */
    while (drop + 1 < w->nsegs && w->segs[drop].last < index)
        drop++;
    if (drop == 0)
        return 0;
    for (size_t i = 0; i < drop; i++) {
        char name[WAL_NAME_SIZE];
        wal_segment_name(name, w->segs[i].first);
        /* Oldest first, so a crash leaves a contiguous suffix of the log. */
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT) {
            memmove(w->segs, w->segs + i, (w->nsegs - i) * sizeof(*w->segs));
            w->nsegs -= i;
            w->first_index = w->segs[0].first;
            return CORRAL_E_IO;
        }
    }
    memmove(w->segs, w->segs + drop, (w->nsegs - drop) * sizeof(*w->segs));
    w->nsegs -= drop;
    w->first_index = w->segs[0].first;
    return wal_fsync_dir(w);
}
