/* test_wal.c: unit tests of the write-ahead log (wal.h) and CRC-32C, on real files, with
 * pwrite and fdatasync wrapped (--wrap) to count calls and inject short writes, EIO and
 * ENOSPC (also only for the zero-fill of preallocation). */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "crc.h"
#include "error.h"
#include "wal.h"

/* Fault injection: plain globals, reset by the setup of every test. */
static int fault_pwrite_max;      /* > 0: each pwrite writes at most this many bytes */
static int fault_pwrite_eintr;    /* > 0: that many pwrite calls fail with EINTR first */
static int fault_pwrite_errno;    /* != 0: pwrite fails with this errno */
static int fault_fdatasync_errno; /* != 0: fdatasync fails with this errno */
static int fault_zero_errno;      /* != 0: pwrite of an all-zero buffer fails with this... */
static int fault_zero_after;      /* ...after this many such pwrites succeeded */
static int count_pwrite;
static int count_fdatasync;

ssize_t __real_pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off);
int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);

ssize_t __wrap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    count_pwrite++;
    if (fault_pwrite_eintr > 0) {
        fault_pwrite_eintr--;
        errno = EINTR;
        return -1;
    }
    if (fault_pwrite_errno) {
        errno = fault_pwrite_errno;
        return -1;
    }
    if (fault_zero_errno && n > 0) {
        /* Only the zero-fill writes all-zero buffers: a record's version byte is 1. */
        const uint8_t *p = buf;
        size_t k = 0;
        while (k < n && p[k] == 0)
            k++;
        if (k == n) {
            if (fault_zero_after > 0) {
                fault_zero_after--;
            } else {
                errno = fault_zero_errno;
                return -1;
            }
        }
    }
    if (fault_pwrite_max > 0 && n > (size_t)fault_pwrite_max)
        n = (size_t)fault_pwrite_max;
    return __real_pwrite(fd, buf, n, off);
}

int __wrap_fdatasync(int fd)
{
    count_fdatasync++;
    if (fault_fdatasync_errno) {
        errno = fault_fdatasync_errno;
        return -1;
    }
    return __real_fdatasync(fd);
}

struct fixture {
    char dir[512]; /* fresh per test, removed by teardown */
};

static int fixture_setup(void **state)
{
    const char *base = getenv("CORRAL_TEST_DIR");
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    if (!base || !*base)
        base = "./testdata";
    mkdir(base, 0755);
    snprintf(f->dir, sizeof(f->dir), "%.400s/wal-XXXXXX", base);
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    fault_pwrite_max = fault_pwrite_eintr = fault_pwrite_errno = fault_fdatasync_errno = 0;
    fault_zero_errno = fault_zero_after = 0;
    count_pwrite = count_fdatasync = 0;
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char p[1024];
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Payload of record i: deterministic, of varying length (0 included). */
static size_t payload_make(uint64_t i, uint8_t *buf, size_t cap)
{
    size_t len = (size_t)((i * 37) % 200);
    if (len > cap)
        len = cap;
    for (size_t k = 0; k < len; k++)
        buf[k] = (uint8_t)(i * 131 + k * 7);
    return len;
}

static struct wal *wal_open_ok(const struct fixture *f, uint64_t segment_bytes,
                               struct wal_recovery_report *rep)
{
    /* Two batches in flight, so that the pipelining tests have a pipeline. */
    struct wal_options o = {.dir = f->dir, .segment_bytes = segment_bytes, .max_in_flight = 2};
    struct wal *w = NULL;
    assert_int_equal(wal_open(&o, &w, rep), 0);
    assert_non_null(w);
    return w;
}

static void append_range(struct wal *w, uint64_t from, uint64_t to, uint64_t term)
{
    uint8_t buf[256];
    for (uint64_t i = from; i <= to; i++) {
        size_t len = payload_make(i, buf, sizeof(buf));
        assert_int_equal(wal_append(w, i, term, buf, len), 0);
    }
}

/* Replay checker: expects consecutive indexes from next, with payload_make payloads. */
struct replay_check {
    uint64_t next;
    uint64_t count;
    uint64_t term; /* 0 = do not check */
    uint64_t last_term;
};

static int replay_check_fn(void *arg, uint64_t index, uint64_t term, const void *payload,
                           size_t len)
{
    struct replay_check *c = arg;
    uint8_t buf[256];
    size_t want = payload_make(index, buf, sizeof(buf));
    assert_int_equal(index, c->next);
    if (c->term)
        assert_int_equal(term, c->term);
    assert_int_equal(len, want);
    if (len)
        assert_memory_equal(payload, buf, len);
    c->next++;
    c->count++;
    c->last_term = term;
    return 0;
}

static uint64_t replay_count(struct wal *w, uint64_t from, uint64_t expect_first)
{
    struct replay_check c = {.next = expect_first};
    assert_int_equal(wal_replay(w, from, replay_check_fn, &c), 0);
    return c.count;
}

static int segment_count(const struct fixture *f)
{
    int n = 0;
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "wal-", 4) == 0)
            n++;
    closedir(d);
    return n;
}

static void segment_path(const struct fixture *f, uint64_t first, char *out, size_t cap)
{
    snprintf(out, cap, "%s/wal-%020llu.log", f->dir, (unsigned long long)first);
}

/* The first indexes of the segments, sorted; returns how many. */
static int segment_firsts(const struct fixture *f, uint64_t *out, int cap)
{
    int n = 0;
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "wal-", 4) == 0 && n < cap)
            out[n++] = strtoull(e->d_name + 4, NULL, 10);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            uint64_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static uint64_t prealloc_fallbacks(const struct wal *w)
{
    struct wal_stats st;
    wal_stats_get(w, &st);
    return st.prealloc_fallbacks;
}

/* Logical end of a segment holding records first..last: header + their records. */
static off_t records_end(uint64_t first, uint64_t last)
{
    uint8_t buf[256];
    off_t end = 16;
    for (uint64_t i = first; i <= last; i++)
        end += 28 + (off_t)payload_make(i, buf, sizeof(buf));
    return end;
}

/* Whether bytes [from, end of file) of path are all zero. */
static bool file_zero_from(const char *path, off_t from)
{
    int fd = open(path, O_RDONLY);
    uint8_t buf[4096];
    ssize_t n;
    bool zero = true;
    assert_true(fd >= 0);
    while (zero && (n = pread(fd, buf, sizeof(buf), from)) > 0) {
        for (ssize_t k = 0; k < n; k++)
            if (buf[k] != 0)
                zero = false;
        from += n;
    }
    close(fd);
    return zero;
}

static void file_write_at(const char *path, off_t off, const void *data, size_t n)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(__real_pwrite(fd, data, n, off), (ssize_t)n);
    close(fd);
}

static void file_flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t c;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, off), 1);
    c ^= 0x5a;
    assert_int_equal(__real_pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void test_crc32c__known_vector(void **state)
{
    (void)state;
    assert_int_equal(cluster_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(cluster_crc32c(0, "", 0), 0);
    assert_int_equal(cluster_crc32c_portable(0, "123456789", 9), 0xE3069283u);
    /* Split input gives the same CRC as one call. */
    uint32_t c = cluster_crc32c(0, "1234", 4);
    assert_int_equal(cluster_crc32c(c, "56789", 5), 0xE3069283u);
}

/* Both the CPU-instruction path (when this CPU has it) and the table path agree with a
 * bit-at-a-time reference, at every length and misalignment (the 8-byte loops and their
 * tails). */
static void test_crc32c__both_paths_match_bitwise_reference(void **state)
{
    (void)state;
    uint8_t buf[512];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 7);
    for (size_t start = 0; start < 9; start++)
        for (size_t len = 0; len + start <= 300; len++) {
            uint32_t expected = crc32c_bitwise(buf + start, len);
            assert_int_equal(cluster_crc32c(0, buf + start, len), expected);
            assert_int_equal(cluster_crc32c_portable(0, buf + start, len), expected);
        }
}

static void test_wal_open__empty_dir(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.first_index, 0);
    assert_int_equal(rep.last_index, 0);
    assert_int_equal(rep.records, 0);
    assert_int_equal(rep.cut_bytes, 0);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(wal_first_index(w), 0);
    assert_int_equal(wal_last_index(w), 0);
    assert_int_equal(wal_durable_index(w), 0);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(replay_count(w, 0, 1), 0);
    wal_close(w);
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 0);
    assert_int_equal(segment_count(f), 0);
    wal_close(w);
}

static void test_wal_open__creates_missing_dir(void **state)
{
    struct fixture *f = *state;
    struct fixture sub;
    int len = snprintf(sub.dir, sizeof(sub.dir), "%.480s/nested", f->dir);
    assert_true(len > 0 && (size_t)len < sizeof(sub.dir));
    struct wal *w = wal_open_ok(&sub, 0, NULL);
    append_range(w, 1, 3, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    assert_int_equal(segment_count(&sub), 1);
    char p[1024];
    segment_path(&sub, 1, p, sizeof(p));
    unlink(p);
    rmdir(sub.dir);
}

static void test_wal_sync_now__reopen_replays_all(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 7, 56, 3);
    assert_int_equal(wal_first_index(w), 7);
    assert_int_equal(wal_last_index(w), 56);
    assert_int_equal(wal_durable_index(w), 0);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(wal_durable_index(w), 56);
    wal_close(w);

    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.first_index, 7);
    assert_int_equal(rep.last_index, 56);
    assert_int_equal(rep.records, 50);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(rep.cut_segments, 0);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(wal_durable_index(w), 56);
    struct replay_check c = {.next = 7, .term = 3};
    assert_int_equal(wal_replay(w, 0, replay_check_fn, &c), 0);
    assert_int_equal(c.count, 50);
    assert_int_equal(replay_count(w, 40, 40), 17);
    /* The file is header + records (the format is the table in wal.h), then zeros up to
     * the first preallocation step of 1 MiB. */
    char p[1024];
    segment_path(f, 7, p, sizeof(p));
    assert_int_equal(file_size(p), 1 << 20);
    assert_true(file_zero_from(p, records_end(7, 56)));
    assert_false(file_zero_from(p, records_end(7, 56) - 1));
    wal_close(w);
}

static void test_wal_open__record_format_matches_table(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    assert_int_equal(wal_append(w, 0x0102030405060708ull, 0x1112131415161718ull, "abc", 3), 0);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    char p[1024];
    uint8_t b[64];
    segment_path(f, 0x0102030405060708ull, p, sizeof(p));
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, b, sizeof(b)), sizeof(b));
    close(fd);
    for (size_t k = 16 + 28 + 3; k < sizeof(b); k++)
        assert_int_equal(b[k], 0); /* the preallocated zero tail */
    static const uint8_t header[16] = {'C', 'R', 'L', 'W', 'A', 'L', 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(b, header, 16);
    const uint8_t *r = b + 16;
    static const uint8_t fields[24] = {3,    0,    0,    0,    1,    1,    0,    0,
                                       0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
                                       0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11};
    assert_memory_equal(r + 4, fields, 24);
    assert_memory_equal(r + 28, "abc", 3);
    uint32_t crc = cluster_crc32c(0, r + 4, 24 + 3);
    assert_int_equal(r[0] | r[1] << 8 | r[2] << 16 | (uint32_t)r[3] << 24, crc);
}

static void test_wal_batch_take__group_commit_one_fdatasync(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    struct wal_batch *b = NULL;
    append_range(w, 1, 100, 1);
    assert_int_equal(wal_batch_take(w, &b), 0);
    assert_non_null(b);
    assert_int_equal(wal_durable_index(w), 0);
    count_fdatasync = 0;
    assert_int_equal(wal_batch_write(b), 0);
    assert_int_equal(count_fdatasync, 1);
    assert_int_equal(wal_durable_index(w), 0);
    assert_int_equal(wal_batch_finish(w, b, 0), 0);
    assert_int_equal(wal_durable_index(w), 100);
    /* Nothing pending: no batch. */
    assert_int_equal(wal_batch_take(w, &b), 0);
    assert_null(b);
    assert_int_equal(replay_count(w, 1, 1), 100);
    wal_close(w);
}

static void test_wal_batch_take__appends_during_batch_go_to_next(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    struct wal_batch *b1 = NULL, *b2 = NULL;
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_batch_take(w, &b1), 0);
    assert_non_null(b1);
    append_range(w, 11, 20, 1);
    assert_int_equal(wal_last_index(w), 20);
    /* The first batch creates the first segment, so it is alone in flight. */
    assert_int_equal(wal_batch_take(w, &b2), 0);
    assert_null(b2);
    count_fdatasync = 0;
    assert_int_equal(wal_batch_write(b1), 0);
    assert_int_equal(wal_batch_finish(w, b1, 0), 0);
    assert_int_equal(wal_durable_index(w), 10);
    /* Replay sees only durable records. */
    assert_int_equal(replay_count(w, 1, 1), 10);
    assert_int_equal(wal_batch_take(w, &b2), 0);
    assert_non_null(b2);
    append_range(w, 21, 25, 1);
    assert_int_equal(wal_batch_write(b2), 0);
    assert_int_equal(wal_batch_finish(w, b2, 0), 0);
    assert_int_equal(count_fdatasync, 2);
    assert_int_equal(wal_durable_index(w), 20);
    assert_int_equal(wal_last_index(w), 25);
    wal_close(w); /* 21..25 were never written */

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 20);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(replay_count(w, 1, 1), 20);
    wal_close(w);
}

static void test_wal_batch_write__segment_roll(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    for (uint64_t i = 1; i <= 300; i += 10) {
        append_range(w, i, i + 9, 2);
        assert_int_equal(wal_sync_now(w), 0);
    }
    int segs = segment_count(f);
    assert_true(segs >= 5);
    /* Every segment but the last passed 4096 bytes before the roll; every segment is
     * preallocated in steps of 4096 bytes (the step is at most the segment size), so each
     * is a whole number of steps, zero after its records. */
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_int_equal(n, segs);
    assert_int_equal(firsts[0], 1);
    for (int i = 0; i + 1 < n; i++) {
        char p[1024];
        segment_path(f, firsts[i], p, sizeof(p));
        assert_true(file_size(p) >= 4096);
        assert_int_equal(file_size(p) % 4096, 0);
        assert_true(file_zero_from(p, records_end(firsts[i], firsts[i + 1] - 1)));
    }
    char last[1024];
    segment_path(f, firsts[n - 1], last, sizeof(last));
    off_t last_end = records_end(firsts[n - 1], 300);
    assert_true(file_size(last) >= last_end);
    assert_int_equal(file_size(last) % 4096, 0);
    assert_true(file_zero_from(last, last_end));
    assert_int_equal(replay_count(w, 1, 1), 300);
    wal_close(w);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.records, 300);
    assert_int_equal(rep.last_index, 300);
    assert_int_equal(rep.cut_segments, 0);
    struct replay_check c = {.next = 1, .term = 2};
    assert_int_equal(wal_replay(w, 1, replay_check_fn, &c), 0);
    assert_int_equal(c.count, 300);
    /* Starting in the middle of a later segment. */
    assert_int_equal(replay_count(w, firsts[n - 2] + 1, firsts[n - 2] + 1), 300 - firsts[n - 2]);
    assert_int_equal(replay_count(w, 301, 301), 0);
    wal_close(w);
}

/* A torn append at the end of a segment that was not preallocated (written before
 * preallocation, or without room for it): the file ends inside the last record. */
static void test_wal_open__torn_tail_cut(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    off_t size = records_end(1, 10);
    assert_int_equal(truncate(p, size - 5), 0);
    uint8_t buf[256];
    uint64_t last_len = 28 + payload_make(10, buf, sizeof(buf));

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, 9);
    assert_int_equal(rep.records, 9);
    assert_int_equal(rep.cut_bytes, last_len - 5);
    assert_int_equal(rep.cut_segments, 0);
    assert_non_null(strstr(rep.cut_reason, "wal-00000000000000000001.log"));
    char want[64];
    snprintf(want, sizeof(want), "offset %llu:", (unsigned long long)(size - last_len));
    assert_non_null(strstr(rep.cut_reason, want));
    /* Cut at the record; the next batch preallocates again. */
    assert_int_equal(file_size(p), size - (off_t)last_len);
    assert_int_equal(wal_last_index(w), 9);
    assert_int_equal(wal_append(w, 11, 1, "x", 1), CORRAL_E_BAD_ARGUMENTS);
    append_range(w, 10, 12, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);

    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, 12);
    assert_int_equal(rep.cut_bytes, 0);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(replay_count(w, 1, 1), 12);
    wal_close(w);
}

/* (c) A corrupt byte in the middle of the last record of a preallocated segment: the
 * record is cut although only zeros follow it. */
static void test_wal_open__corrupt_payload_cut(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    off_t end = records_end(1, 10);
    uint8_t buf[256];
    uint64_t last_len = 28 + payload_make(10, buf, sizeof(buf));
    off_t size = file_size(p);
    assert_int_equal(size, 1 << 20);
    file_flip_byte(p, end - (off_t)last_len + 28 + (off_t)(last_len - 28) / 2);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 9);
    assert_int_equal(rep.cut_bytes, size - (end - (off_t)last_len));
    assert_non_null(strstr(rep.cut_reason, "crc mismatch"));
    assert_true(file_zero_from(p, end - (off_t)last_len));
    assert_int_equal(replay_count(w, 1, 1), 9);
    append_range(w, 10, 11, 2);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 11);
    assert_string_equal(rep.cut_reason, "");
    wal_close(w);
}

/* (a) The zero tail of a preallocated segment is its clean end: nothing is cut, the file
 * keeps its size, and appends after reopening go to the logical end. */
static void test_wal_open__clean_zero_tail_not_cut(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 1 << 20, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    assert_int_equal(file_size(p), 1 << 20);

    w = wal_open_ok(f, 1 << 20, &rep);
    assert_int_equal(rep.last_index, 10);
    assert_int_equal(rep.records, 10);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(rep.cut_segments, 0);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(file_size(p), 1 << 20);
    count_fdatasync = 0;
    append_range(w, 11, 15, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(count_fdatasync, 1);
    assert_int_equal(file_size(p), 1 << 20); /* overwritten, not grown */
    assert_int_equal(prealloc_fallbacks(w), 0);
    assert_true(file_zero_from(p, records_end(1, 15)));
    assert_false(file_zero_from(p, records_end(1, 15) - 1));
    wal_close(w);

    w = wal_open_ok(f, 1 << 20, &rep);
    assert_int_equal(rep.last_index, 15);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(replay_count(w, 1, 1), 15);
    assert_int_equal(segment_count(f), 1);
    wal_close(w);
}

/* (b) A torn write into the preallocated region: a record header reached the disk, its
 * payload did not (zeros). It is non-zero, so it is cut; what precedes it is intact. */
static void test_wal_open__torn_record_in_preallocated_segment_cut(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 1 << 20, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    /* Record 11's header, encoded by a scratch log elsewhere... */
    struct fixture other;
    snprintf(other.dir, sizeof(other.dir), "%.480s/other", f->dir);
    struct wal *o = wal_open_ok(&other, 4096, NULL);
    append_range(o, 11, 11, 1);
    assert_int_equal(wal_sync_now(o), 0);
    wal_close(o);
    char q[1024];
    uint8_t header[28];
    segment_path(&other, 11, q, sizeof(q));
    int fd = open(q, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, header, sizeof(header), 16), sizeof(header));
    close(fd);
    unlink(q);
    rmdir(other.dir);
    uint8_t buf[256];
    assert_true(payload_make(11, buf, sizeof(buf)) > 0);
    /* ...written at the logical end, with only zeros after it. */
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    off_t end = records_end(1, 10);
    file_write_at(p, end, header, sizeof(header));

    w = wal_open_ok(f, 1 << 20, &rep);
    assert_int_equal(rep.last_index, 10);
    assert_int_equal(rep.records, 10);
    assert_int_equal(rep.cut_bytes, (1 << 20) - end);
    assert_int_equal(rep.cut_segments, 0);
    assert_non_null(strstr(rep.cut_reason, "crc mismatch"));
    char want[64];
    snprintf(want, sizeof(want), "offset %llu:", (unsigned long long)end);
    assert_non_null(strstr(rep.cut_reason, want));
    assert_int_equal(replay_count(w, 1, 1), 10);
    assert_int_equal(file_size(p), end); /* cut there */
    append_range(w, 11, 12, 2);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(file_size(p), 1 << 20); /* preallocated again by the next batch */
    assert_true(file_zero_from(p, records_end(1, 12)));
    wal_close(w);

    /* A single stray byte far beyond the logical end is damage too. */
    file_write_at(p, (1 << 20) - 1, "\x01", 1);
    w = wal_open_ok(f, 1 << 20, &rep);
    assert_int_equal(rep.last_index, 12);
    assert_int_equal(rep.cut_bytes, (1 << 20) - records_end(1, 12));
    assert_true(rep.cut_reason[0] != '\0');
    assert_true(file_zero_from(p, records_end(1, 12)));
    assert_int_equal(replay_count(w, 1, 1), 12);
    wal_close(w);
    w = wal_open_ok(f, 1 << 20, &rep);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(rep.last_index, 12);
    wal_close(w);
}

/* (e) Replay across segments whose files end in zero tails: the first segment was
 * preallocated to 64 KiB, then the log was reopened with 512-byte segments, then with
 * 64 KiB again (open extends the active segment). */
static void test_wal_replay__across_segments_with_zero_tails(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 64 << 10, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 512, NULL);
    for (uint64_t i = 11; i <= 60; i += 2) {
        append_range(w, i, i + 1, 1);
        assert_int_equal(wal_sync_now(w), 0);
    }
    wal_close(w);
    w = wal_open_ok(f, 64 << 10, NULL);
    append_range(w, 61, 70, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_true(n >= 3);
    int tails = 0;
    for (int i = 0; i < n; i++) {
        char p[1024];
        uint64_t last = i + 1 < n ? firsts[i + 1] - 1 : 70;
        segment_path(f, firsts[i], p, sizeof(p));
        if (file_size(p) > records_end(firsts[i], last))
            tails++;
        assert_true(file_zero_from(p, records_end(firsts[i], last)));
    }
    assert_true(tails >= 2); /* the first segment, and at least the last */

    w = wal_open_ok(f, 64 << 10, &rep);
    assert_int_equal(rep.records, 70);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(rep.cut_segments, 0);
    assert_string_equal(rep.cut_reason, "");
    struct replay_check c = {.next = 1, .term = 1};
    assert_int_equal(wal_replay(w, 1, replay_check_fn, &c), 0);
    assert_int_equal(c.count, 70);
    assert_int_equal(replay_count(w, 9, 9), 62);
    assert_int_equal(replay_count(w, firsts[n - 1], firsts[n - 1]), 71 - firsts[n - 1]);
    wal_close(w);
}

static void test_wal_open__corrupt_earlier_segment_cuts_later(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    for (uint64_t i = 1; i <= 200; i += 10) {
        append_range(w, i, i + 9, 1);
        assert_int_equal(wal_sync_now(w), 0);
    }
    wal_close(w);
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_true(n >= 3);
    /* Corrupt the index field of record firsts[0] + 2 in the first segment. */
    char p[1024];
    uint8_t buf[256];
    segment_path(f, firsts[0], p, sizeof(p));
    off_t off = 16;
    for (uint64_t i = firsts[0]; i < firsts[0] + 2; i++)
        off += 28 + (off_t)payload_make(i, buf, sizeof(buf));
    off_t size0 = file_size(p);
    file_flip_byte(p, off + 12);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, firsts[0] + 1);
    assert_int_equal(rep.records, 2);
    assert_int_equal(rep.cut_segments, n - 1);
    assert_true(rep.cut_bytes > (uint64_t)(size0 - off));
    assert_non_null(strstr(rep.cut_reason, "crc mismatch"));
    assert_int_equal(segment_count(f), 1);
    assert_int_equal(replay_count(w, 1, 1), 2);
    append_range(w, 3, 5, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, 5);
    assert_string_equal(rep.cut_reason, "");
    wal_close(w);
}

static void test_wal_open__bad_header_cuts_segment(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    for (uint64_t i = 1; i <= 200; i += 10) {
        append_range(w, i, i + 9, 1);
        assert_int_equal(wal_sync_now(w), 0);
    }
    wal_close(w);
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_true(n >= 3);
    char p[1024];
    segment_path(f, firsts[1], p, sizeof(p));
    file_flip_byte(p, 0);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, firsts[1] - 1);
    assert_int_equal(rep.cut_segments, n - 1);
    assert_non_null(strstr(rep.cut_reason, "header"));
    assert_int_equal(segment_count(f), 1);
    assert_int_equal(replay_count(w, 1, 1), firsts[1] - 1);
    wal_close(w);
}

static void test_wal_open__short_only_segment_gives_empty_log(void **state)
{
    struct fixture *f = *state;
    char p[1024];
    segment_path(f, 5, p, sizeof(p));
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "CRLWAL", 6), 6);
    close(fd);
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 0);
    assert_int_equal(rep.cut_segments, 1);
    assert_int_equal(rep.cut_bytes, 6);
    assert_non_null(strstr(rep.cut_reason, "header"));
    assert_int_equal(segment_count(f), 0);
    append_range(w, 42, 43, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(wal_first_index(w), 42);
    wal_close(w);
}

static void test_wal_batch_write__short_pwrite_retried(void **state)
{
    struct fixture *f = *state;
    /* Small segments: the zero-fill goes 7 bytes at a time too. */
    struct wal *w = wal_open_ok(f, 4096, NULL);
    append_range(w, 1, 20, 1);
    fault_pwrite_max = 7;
    fault_pwrite_eintr = 2;
    count_pwrite = 0;
    assert_int_equal(wal_sync_now(w), 0);
    fault_pwrite_max = 0;
    /* 16-byte header, zeros and a few KB of records, 7 bytes at a time, after 2 EINTRs. */
    assert_true(count_pwrite > 100);
    wal_close(w);
    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, 20);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(replay_count(w, 1, 1), 20);
    wal_close(w);
}

static void test_wal_batch_finish__fdatasync_eio_is_fatal(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    struct wal_batch *b = NULL;
    append_range(w, 1, 5, 1);
    assert_int_equal(wal_sync_now(w), 0);
    append_range(w, 6, 8, 1);
    assert_int_equal(wal_batch_take(w, &b), 0);
    assert_non_null(b);
    fault_fdatasync_errno = EIO;
    int wr = wal_batch_write(b);
    assert_int_equal(wr, -EIO);
    assert_int_equal(wal_batch_finish(w, b, wr), CORRAL_E_IO);
    assert_int_equal(wal_durable_index(w), 5);
    /* The log refuses to go on. */
    append_range(w, 9, 9, 1);
    assert_int_equal(wal_batch_take(w, &b), CORRAL_E_IO);
    assert_null(b);
    assert_int_equal(wal_sync_now(w), CORRAL_E_IO);
    wal_close(w);
}

static void test_wal_batch_write__pwrite_error_returned(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    struct wal_batch *b = NULL;
    append_range(w, 1, 5, 1);
    assert_int_equal(wal_batch_take(w, &b), 0);
    assert_non_null(b);
    fault_pwrite_errno = ENOSPC;
    count_fdatasync = 0;
    int wr = wal_batch_write(b);
    assert_int_equal(wr, -ENOSPC);
    assert_int_equal(count_fdatasync, 0);
    assert_int_equal(wal_batch_finish(w, b, wr), CORRAL_E_IO);
    assert_int_equal(wal_durable_index(w), 0);
    wal_close(w);
}

static void test_wal_truncate_after__then_append(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    for (uint64_t i = 1; i <= 100; i += 10) {
        append_range(w, i, i + 9, 1);
        assert_int_equal(wal_sync_now(w), 0);
    }
    append_range(w, 101, 105, 1); /* pending, dropped too */
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_true(n >= 3);
    uint64_t cut = firsts[1] + 3; /* inside the second segment */
    assert_int_equal(wal_truncate_after(w, cut), 0);
    assert_int_equal(wal_last_index(w), cut);
    assert_int_equal(wal_durable_index(w), cut);
    assert_int_equal(segment_count(f), 2);
    assert_int_equal(wal_append(w, cut + 2, 2, "x", 1), CORRAL_E_BAD_ARGUMENTS);
    append_range(w, cut + 1, cut + 1, 2);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.last_index, cut + 1);
    assert_string_equal(rep.cut_reason, "");
    struct replay_check c = {.next = cut};
    assert_int_equal(wal_replay(w, cut, replay_check_fn, &c), 0);
    assert_int_equal(c.count, 2);
    assert_int_equal(c.last_term, 2);

    /* Truncating exactly at a segment boundary removes the later segment whole. */
    assert_int_equal(wal_truncate_after(w, firsts[1] - 1), 0);
    assert_int_equal(segment_count(f), 1);
    assert_int_equal(wal_last_index(w), firsts[1] - 1);
    assert_int_equal(replay_count(w, 1, 1), firsts[1] - 1);

    /* Below the first index: the log is empty and may restart anywhere. */
    assert_int_equal(wal_truncate_after(w, 0), 0);
    assert_int_equal(wal_first_index(w), 0);
    assert_int_equal(wal_last_index(w), 0);
    assert_int_equal(segment_count(f), 0);
    append_range(w, 500, 502, 3);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.first_index, 500);
    assert_int_equal(rep.last_index, 502);
    wal_close(w);
}

/* (f) Truncating inside a preallocated segment zeroes what it removes. The new record 11
 * has the length of the old one, so the old record 12 would follow it exactly and, were it
 * left in place, come back at recovery with index continuity intact. */
static void test_wal_truncate_after__removed_records_do_not_come_back(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 1 << 20, NULL);
    for (uint64_t i = 1; i <= 20; i += 5) {
        append_range(w, i, i + 4, 1);
        assert_int_equal(wal_sync_now(w), 0);
    }
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    assert_int_equal(wal_truncate_after(w, 15), 0);
    assert_int_equal(file_size(p), 1 << 20); /* the preallocation stays */
    assert_true(file_zero_from(p, records_end(1, 15)));
    wal_close(w);
    w = wal_open_ok(f, 1 << 20, &rep);
    assert_int_equal(rep.last_index, 15);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(replay_count(w, 1, 1), 15);

    assert_int_equal(wal_truncate_after(w, 10), 0);
    append_range(w, 11, 11, 2); /* same payload and length as the old 11, new term */
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 1 << 20, &rep);
    assert_int_equal(rep.last_index, 11);
    assert_int_equal(rep.records, 11);
    assert_int_equal(rep.cut_bytes, 0);
    assert_string_equal(rep.cut_reason, "");
    struct replay_check c = {.next = 1};
    assert_int_equal(wal_replay(w, 1, replay_check_fn, &c), 0);
    assert_int_equal(c.count, 11);
    assert_int_equal(c.last_term, 2);
    wal_close(w);
}

/* (g) No room for the zeros: the zero-fill fails with ENOSPC, the segment is truncated
 * back and the batch appends, which counts as a warning, not an error; every later
 * batch that needs zeros tries again. */
static void test_wal_batch_write__prealloc_enospc_falls_back_to_append(void **state)
{
    struct fixture *f = *state;
    struct wal_recovery_report rep;
    struct wal *w = wal_open_ok(f, 3 << 20, NULL);
    struct wal_batch *b = NULL;
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_batch_take(w, &b), 0);
    assert_non_null(b);
    fault_zero_errno = ENOSPC;
    fault_zero_after = 0;
    count_fdatasync = 0;
    assert_int_equal(wal_batch_write(b), 0);
    assert_int_equal(wal_batch_finish(w, b, 0), 0);
    assert_int_equal(count_fdatasync, 1);
    assert_int_equal(wal_durable_index(w), 10);
    assert_int_equal(prealloc_fallbacks(w), 1);
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    assert_int_equal(file_size(p), records_end(1, 10));
    append_range(w, 11, 20, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(file_size(p), records_end(1, 20)); /* appending */
    assert_int_equal(prealloc_fallbacks(w), 2);
    wal_close(w);

    /* Still no room after a restart: the segment appends. */
    w = wal_open_ok(f, 3 << 20, &rep);
    assert_int_equal(rep.last_index, 20);
    assert_string_equal(rep.cut_reason, "");
    append_range(w, 21, 22, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(file_size(p), records_end(1, 22));
    wal_close(w);

    /* Room again: the next batch preallocates a step, later ones overwrite its zeros. */
    fault_zero_errno = 0;
    w = wal_open_ok(f, 3 << 20, &rep);
    assert_int_equal(rep.last_index, 22);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(prealloc_fallbacks(w), 0);
    append_range(w, 23, 30, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(file_size(p), 1 << 20);
    append_range(w, 31, 32, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(file_size(p), 1 << 20);
    assert_true(file_zero_from(p, records_end(1, 32)));
    assert_int_equal(replay_count(w, 1, 1), 32);
    wal_close(w);
}

static void test_wal_truncate_after__pending_only(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 5, 1);
    assert_int_equal(wal_sync_now(w), 0);
    append_range(w, 6, 10, 1);
    assert_int_equal(wal_truncate_after(w, 7), 0);
    assert_int_equal(wal_last_index(w), 7);
    assert_int_equal(wal_durable_index(w), 5);
    append_range(w, 8, 8, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(replay_count(w, 1, 1), 8);
    wal_close(w);
}

static void test_wal_drop_before__removes_old_segments(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    for (uint64_t i = 1; i <= 200; i += 10) {
        append_range(w, i, i + 9, 1);
        assert_int_equal(wal_sync_now(w), 0);
    }
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_true(n >= 4);
    assert_int_equal(wal_drop_before(w, 150), 0);
    uint64_t after[64];
    int m = segment_firsts(f, after, 64);
    assert_true(m < n);
    assert_true(after[0] <= 150);
    assert_true(after[0] > 1);
    assert_int_equal(wal_first_index(w), after[0]);
    assert_int_equal(replay_count(w, 150, 150), 51);
    assert_int_equal(replay_count(w, 0, after[0]), 201 - after[0]);
    /* The last segment stays even when everything is older. */
    assert_int_equal(wal_drop_before(w, 1000), 0);
    assert_int_equal(segment_count(f), 1);
    assert_int_equal(wal_first_index(w), firsts[n - 1]);
    append_range(w, 201, 210, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 4096, &rep);
    assert_int_equal(rep.first_index, firsts[n - 1]);
    assert_int_equal(rep.last_index, 210);
    assert_int_equal(rep.cut_segments, 0);
    assert_int_equal(replay_count(w, 0, firsts[n - 1]), 211 - firsts[n - 1]);
    wal_close(w);
}

static void test_wal_append__non_contiguous_rejected(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    assert_int_equal(wal_append(w, 0, 1, "a", 1), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(wal_append(w, 10, 1, "a", 1), 0);
    assert_int_equal(wal_append(w, 12, 1, "a", 1), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(wal_append(w, 10, 1, "a", 1), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(wal_append(w, 9, 1, "a", 1), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(wal_append(w, 11, 1, "b", 1), 0);
    assert_int_equal(wal_first_index(w), 10);
    assert_int_equal(wal_last_index(w), 11);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 0, NULL);
    assert_int_equal(wal_append(w, 13, 1, "a", 1), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(wal_append(w, 12, 1, "a", 1), 0);
    wal_close(w);
}

static int replay_stop_fn(void *arg, uint64_t index, uint64_t term, const void *payload, size_t len)
{
    (void)term;
    (void)payload;
    (void)len;
    uint64_t *seen = arg;
    *seen = index;
    return index == 4 ? 77 : 0;
}

static void test_wal_replay__callback_stops(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    uint64_t seen = 0;
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(wal_replay(w, 2, replay_stop_fn, &seen), 77);
    assert_int_equal(seen, 4);
    wal_close(w);
}

/* A log with records 1..10 durable and two batches in flight: b1 holds 11..20 (term
 * term1), b2 holds 21..30 (term term2). */
static struct wal *two_batches_in_flight(const struct fixture *f, uint64_t term1, uint64_t term2,
                                         struct wal_batch **b1, struct wal_batch **b2)
{
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    append_range(w, 11, 20, term1);
    assert_int_equal(wal_batch_take(w, b1), 0);
    assert_non_null(*b1);
    append_range(w, 21, 30, term2);
    assert_int_equal(wal_batch_take(w, b2), 0);
    assert_non_null(*b2);
    return w;
}

/* Pipelining: two batches in flight, the later one finished first. The durable index
 * waits for the earlier one, then jumps over both. */
static void test_wal_batch_finish__out_of_order_retires_in_index_order(void **state)
{
    struct fixture *f = *state;
    struct wal_batch *b1 = NULL, *b2 = NULL, *b3 = NULL;
    struct wal *w = two_batches_in_flight(f, 2, 3, &b1, &b2);
    append_range(w, 31, 35, 3);
    /* Two in flight (wal_open_ok's setting) is the limit. */
    assert_int_equal(wal_batch_take(w, &b3), 0);
    assert_null(b3);
    assert_int_equal(wal_batch_write(b2), 0);
    assert_int_equal(wal_batch_finish(w, b2, 0), 0);
    assert_int_equal(wal_durable_index(w), 10);
    assert_int_equal(replay_count(w, 1, 1), 10);
    assert_int_equal(wal_batch_write(b1), 0);
    assert_int_equal(wal_batch_finish(w, b1, 0), 0);
    assert_int_equal(wal_durable_index(w), 30);
    assert_int_equal(wal_durable_term(w), 3);
    assert_int_equal(replay_count(w, 1, 1), 30);
    assert_int_equal(wal_batch_take(w, &b3), 0);
    assert_non_null(b3);
    assert_int_equal(wal_batch_finish(w, b3, wal_batch_write(b3)), 0);
    assert_int_equal(wal_durable_index(w), 35);
    wal_close(w);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 35);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(replay_count(w, 1, 1), 35);
    wal_close(w);
}

/* A crash with two batches in flight after only the later one reached the disk: its
 * records sit behind a gap of zeros. Recovery cuts at the gap; nothing it cuts was ever
 * reported durable, and the log goes on from the last durable record. */
static void test_wal_open__later_batch_behind_a_gap_is_cut(void **state)
{
    struct fixture *f = *state;
    struct wal_batch *b1 = NULL, *b2 = NULL;
    struct wal *w = two_batches_in_flight(f, 1, 1, &b1, &b2);
    assert_int_equal(wal_batch_write(b2), 0);
    assert_int_equal(wal_durable_index(w), 10);
    wal_close(w); /* the crash: b1 never written */

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 10);
    assert_true(rep.cut_bytes > 0);
    assert_true(rep.cut_reason[0] != '\0');
    assert_int_equal(replay_count(w, 1, 1), 10);
    append_range(w, 11, 40, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 40);
    assert_int_equal(rep.cut_bytes, 0);
    assert_int_equal(replay_count(w, 1, 1), 40);
    wal_close(w);
}

/* A new segment is created only once every earlier record is durable, and nothing is
 * taken behind the batch that creates it. */
static void test_wal_batch_take__roll_waits_for_batches_in_flight(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4096, NULL);
    struct wal_batch *b1 = NULL, *b2 = NULL, *b3 = NULL;
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    append_range(w, 11, 60, 1); /* well past 4096 bytes */
    assert_int_equal(wal_batch_take(w, &b1), 0);
    assert_non_null(b1);
    append_range(w, 61, 70, 1);
    assert_int_equal(wal_batch_take(w, &b2), 0);
    assert_null(b2); /* it would start a new segment while b1 is in flight */
    assert_int_equal(wal_batch_finish(w, b1, wal_batch_write(b1)), 0);
    assert_int_equal(segment_count(f), 1);
    assert_int_equal(wal_batch_take(w, &b2), 0);
    assert_non_null(b2);
    append_range(w, 71, 80, 1);
    assert_int_equal(wal_batch_take(w, &b3), 0);
    assert_null(b3); /* behind a segment creation */
    assert_int_equal(wal_batch_finish(w, b2, wal_batch_write(b2)), 0);
    assert_int_equal(segment_count(f), 2);
    assert_int_equal(wal_batch_take(w, &b3), 0);
    assert_non_null(b3);
    assert_int_equal(wal_batch_finish(w, b3, wal_batch_write(b3)), 0);
    assert_int_equal(wal_durable_index(w), 80);
    assert_int_equal(replay_count(w, 1, 1), 80);
    wal_close(w);
}

/* The later batch is durable but the earlier one failed: nothing past the failure is
 * reported durable, and the log refuses further batches. */
static void test_wal_batch_finish__earlier_failure_stops_later_batch(void **state)
{
    struct fixture *f = *state;
    struct wal_batch *b1 = NULL, *b2 = NULL;
    struct wal *w = two_batches_in_flight(f, 1, 1, &b1, &b2);
    assert_int_equal(wal_batch_finish(w, b2, wal_batch_write(b2)), 0);
    assert_int_equal(wal_batch_finish(w, b1, -EIO), CORRAL_E_IO);
    assert_int_equal(wal_durable_index(w), 10);
    append_range(w, 31, 31, 1);
    struct wal_batch *b3 = NULL;
    assert_int_equal(wal_batch_take(w, &b3), CORRAL_E_IO);
    assert_null(b3);
    wal_close(w);
}

/* Zeros are written at most a step (1 MiB) ahead: a new segment gets one step, the
 * batch that comes within half a step of the zeroed end writes the next one, and the
 * batches in between write nothing but their records. */
static void test_wal_batch_write__preallocates_in_steps(void **state)
{
    struct fixture *f = *state;
    const off_t step = 1 << 20;
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    char seg[1024];
    segment_path(f, 1, seg, sizeof seg);
    assert_int_equal(file_size(seg), step);
    uint64_t next = 11;
    while (records_end(1, next - 1) + step / 2 <= step - 4096) {
        append_range(w, next, next + 49, 1);
        next += 50;
        count_pwrite = 0;
        assert_int_equal(wal_sync_now(w), 0);
        assert_int_equal(count_pwrite, 1); /* the records only */
        assert_int_equal(file_size(seg), step);
    }
    /* The batch that nears the zeroed end extends it first, and is alone in flight. */
    struct wal_batch *b1 = NULL, *b2 = NULL;
    append_range(w, next, next + 99, 1);
    next += 100;
    assert_int_equal(wal_batch_take(w, &b1), 0);
    assert_non_null(b1);
    append_range(w, next, next + 9, 1);
    next += 10;
    assert_int_equal(wal_batch_take(w, &b2), 0);
    assert_null(b2);
    assert_int_equal(wal_batch_finish(w, b1, wal_batch_write(b1)), 0);
    assert_int_equal(file_size(seg), 2 * step);
    assert_int_equal(wal_sync_now(w), 0);
    assert_true(file_zero_from(seg, records_end(1, next - 1)));
    wal_close(w);

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, next - 1);
    assert_int_equal(rep.cut_bytes, 0);
    append_range(w, next, next + 4, 1);
    next += 5;
    count_pwrite = 0;
    assert_int_equal(wal_sync_now(w), 0);
    assert_int_equal(count_pwrite, 1); /* built on the zeros found at open */
    assert_int_equal(replay_count(w, 1, 1), next - 1);
    wal_close(w);
}

/* The statistics count each retired batch once: its record bytes, the preallocation
 * zeros it wrote, and its fdatasync in exactly one histogram bucket. */
static void test_wal_stats__count_each_retired_batch(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 4 << 20, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    append_range(w, 11, 12, 1);
    assert_int_equal(wal_sync_now(w), 0);
    append_range(w, 13, 40, 1);
    assert_int_equal(wal_sync_now(w), 0);
    struct wal_stats st;
    wal_stats_get(w, &st);
    assert_int_equal(st.batches, 3);
    assert_int_equal(st.record_bytes, records_end(1, 40) - 16);
    /* The new segment's first step (its header is written separately). */
    assert_int_equal(st.zero_bytes, (1 << 20) - 16);
    uint64_t counted = 0;
    for (size_t i = 0; i < WAL_SYNC_BUCKETS; i++)
        counted += st.fdatasync_histogram[i];
    assert_int_equal(counted, 3);
    assert_true(st.fdatasync_max_us <= st.fdatasync_us);
    assert_int_equal(st.prealloc_fallbacks, 0);
    wal_close(w);

    /* Counters start again at open: they describe this process's batches. */
    w = wal_open_ok(f, 4 << 20, NULL);
    wal_stats_get(w, &st);
    assert_int_equal(st.batches, 0);
    assert_int_equal(st.record_bytes, 0);
    wal_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c__known_vector),
        cmocka_unit_test(test_crc32c__both_paths_match_bitwise_reference),
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_wal_stats__count_each_retired_batch),
        T(test_wal_open__empty_dir),
        T(test_wal_open__creates_missing_dir),
        T(test_wal_sync_now__reopen_replays_all),
        T(test_wal_open__record_format_matches_table),
        T(test_wal_batch_take__group_commit_one_fdatasync),
        T(test_wal_batch_take__appends_during_batch_go_to_next),
        T(test_wal_batch_write__segment_roll),
        T(test_wal_open__torn_tail_cut),
        T(test_wal_open__corrupt_payload_cut),
        T(test_wal_open__clean_zero_tail_not_cut),
        T(test_wal_open__torn_record_in_preallocated_segment_cut),
        T(test_wal_replay__across_segments_with_zero_tails),
        T(test_wal_open__corrupt_earlier_segment_cuts_later),
        T(test_wal_open__bad_header_cuts_segment),
        T(test_wal_open__short_only_segment_gives_empty_log),
        T(test_wal_batch_write__short_pwrite_retried),
        T(test_wal_batch_finish__fdatasync_eio_is_fatal),
        T(test_wal_batch_write__pwrite_error_returned),
        T(test_wal_truncate_after__then_append),
        T(test_wal_truncate_after__removed_records_do_not_come_back),
        T(test_wal_batch_write__prealloc_enospc_falls_back_to_append),
        T(test_wal_truncate_after__pending_only),
        T(test_wal_drop_before__removes_old_segments),
        T(test_wal_append__non_contiguous_rejected),
        T(test_wal_replay__callback_stops),
        T(test_wal_batch_finish__out_of_order_retires_in_index_order),
        T(test_wal_open__later_batch_behind_a_gap_is_cut),
        T(test_wal_batch_take__roll_waits_for_batches_in_flight),
        T(test_wal_batch_finish__earlier_failure_stops_later_batch),
        T(test_wal_batch_write__preallocates_in_steps),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
