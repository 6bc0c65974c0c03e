/* test_wal.c: unit tests of the write-ahead log (wal.h) and CRC-32C, on real files, with
 * pwrite and fdatasync wrapped (--wrap) to count calls and inject short writes and EIO. */
#include <stdarg.h>
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

#include "crc32c.h"
#include "error.h"
#include "wal.h"

/* Fault injection: plain globals, reset by the setup of every test. */
static int fault_pwrite_max;      /* > 0: each pwrite writes at most this many bytes */
static int fault_pwrite_eintr;    /* > 0: that many pwrite calls fail with EINTR first */
static int fault_pwrite_errno;    /* != 0: pwrite fails with this errno */
static int fault_fdatasync_errno; /* != 0: fdatasync fails with this errno */
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
    struct wal_options o = {.dir = f->dir, .segment_bytes = segment_bytes};
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

static void test_crc32c_extend__known_vector(void **state)
{
    (void)state;
    assert_int_equal(crc32c_extend(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c_extend(0, "", 0), 0);
    /* Split input gives the same CRC as one call. */
    uint32_t c = crc32c_extend(0, "1234", 4);
    assert_int_equal(crc32c_extend(c, "56789", 5), 0xE3069283u);
}

static void test_crc32c_extend__matches_bitwise_reference(void **state)
{
    (void)state;
    uint8_t buf[512];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 7);
    /* Every length and misalignment exercises the 8-byte loop and the tail. */
    for (size_t start = 0; start < 9; start++)
        for (size_t len = 0; len + start <= 300; len++)
            assert_int_equal(crc32c_extend(0, buf + start, len), crc32c_bitwise(buf + start, len));
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
    /* The file is exactly header + records: the format is the table in wal.h. */
    uint64_t bytes = 16;
    uint8_t buf[256];
    for (uint64_t i = 7; i <= 56; i++)
        bytes += 28 + payload_make(i, buf, sizeof(buf));
    char p[1024];
    segment_path(f, 7, p, sizeof(p));
    assert_int_equal(file_size(p), bytes);
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
    assert_int_equal(read(fd, b, sizeof(b)), 16 + 28 + 3);
    close(fd);
    static const uint8_t header[16] = {'C', 'R', 'L', 'W', 'A', 'L', 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(b, header, 16);
    const uint8_t *r = b + 16;
    static const uint8_t fields[24] = {3,    0,    0,    0,    1,    1,    0,    0,
                                       0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
                                       0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11};
    assert_memory_equal(r + 4, fields, 24);
    assert_memory_equal(r + 28, "abc", 3);
    uint32_t crc = crc32c_extend(0, r + 4, 24 + 3);
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
    /* One batch at a time. */
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
    /* Every segment but the last passed 4096 bytes before the roll. */
    uint64_t firsts[64];
    int n = segment_firsts(f, firsts, 64);
    assert_int_equal(n, segs);
    assert_int_equal(firsts[0], 1);
    for (int i = 0; i + 1 < n; i++) {
        char p[1024];
        segment_path(f, firsts[i], p, sizeof(p));
        assert_true(file_size(p) >= 4096);
    }
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

static void test_wal_open__torn_tail_cut(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    off_t size = file_size(p);
    assert_int_equal(truncate(p, size - 5), 0);
    uint8_t buf[256];
    uint64_t last_len = 28 + payload_make(10, buf, sizeof(buf));

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 9);
    assert_int_equal(rep.records, 9);
    assert_int_equal(rep.cut_bytes, last_len - 5);
    assert_int_equal(rep.cut_segments, 0);
    assert_non_null(strstr(rep.cut_reason, "wal-00000000000000000001.log"));
    char want[64];
    snprintf(want, sizeof(want), "offset %llu:", (unsigned long long)(size - last_len));
    assert_non_null(strstr(rep.cut_reason, want));
    assert_int_equal(file_size(p), size - (off_t)last_len);
    assert_int_equal(wal_last_index(w), 9);
    assert_int_equal(wal_append(w, 11, 1, "x", 1), CORRAL_E_BAD_ARGUMENTS);
    append_range(w, 10, 12, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);

    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 12);
    assert_int_equal(rep.cut_bytes, 0);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal(replay_count(w, 1, 1), 12);
    wal_close(w);
}

static void test_wal_open__corrupt_payload_cut(void **state)
{
    struct fixture *f = *state;
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 10, 1);
    assert_int_equal(wal_sync_now(w), 0);
    wal_close(w);
    char p[1024];
    segment_path(f, 1, p, sizeof(p));
    off_t size = file_size(p);
    file_flip_byte(p, size - 1);
    uint8_t buf[256];
    uint64_t last_len = 28 + payload_make(10, buf, sizeof(buf));

    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
    assert_int_equal(rep.last_index, 9);
    assert_int_equal(rep.cut_bytes, last_len);
    assert_non_null(strstr(rep.cut_reason, "crc mismatch"));
    assert_int_equal(file_size(p), size - (off_t)last_len);
    assert_int_equal(replay_count(w, 1, 1), 9);
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
    struct wal *w = wal_open_ok(f, 0, NULL);
    append_range(w, 1, 20, 1);
    fault_pwrite_max = 7;
    fault_pwrite_eintr = 2;
    count_pwrite = 0;
    assert_int_equal(wal_sync_now(w), 0);
    fault_pwrite_max = 0;
    /* 16-byte header and a few KB of records, 7 bytes at a time, after 2 EINTRs. */
    assert_true(count_pwrite > 100);
    wal_close(w);
    struct wal_recovery_report rep;
    w = wal_open_ok(f, 0, &rep);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_extend__known_vector),
        cmocka_unit_test(test_crc32c_extend__matches_bitwise_reference),
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        T(test_wal_open__empty_dir),
        T(test_wal_open__creates_missing_dir),
        T(test_wal_sync_now__reopen_replays_all),
        T(test_wal_open__record_format_matches_table),
        T(test_wal_batch_take__group_commit_one_fdatasync),
        T(test_wal_batch_take__appends_during_batch_go_to_next),
        T(test_wal_batch_write__segment_roll),
        T(test_wal_open__torn_tail_cut),
        T(test_wal_open__corrupt_payload_cut),
        T(test_wal_open__corrupt_earlier_segment_cuts_later),
        T(test_wal_open__bad_header_cuts_segment),
        T(test_wal_open__short_only_segment_gives_empty_log),
        T(test_wal_batch_write__short_pwrite_retried),
        T(test_wal_batch_finish__fdatasync_eio_is_fatal),
        T(test_wal_batch_write__pwrite_error_returned),
        T(test_wal_truncate_after__then_append),
        T(test_wal_truncate_after__pending_only),
        T(test_wal_drop_before__removes_old_segments),
        T(test_wal_append__non_contiguous_rejected),
        T(test_wal_replay__callback_stops),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
