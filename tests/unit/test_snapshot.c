/* test_snapshot.c: unit tests of snapshot.h: round trip, listing, corruption detection,
 * pruning. Each test works in its own mkdtemp directory under $CORRAL_TEST_DIR. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "snapshot.h"

#define HEADER_SIZE 48

static int setup(void **state)
{
    const char *base = getenv("CORRAL_TEST_DIR");
    if (!base || !*base)
        base = "./testdata";
    mkdir(base, 0755);
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/snapshot-XXXXXX", base);
    if (!mkdtemp(dir)) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    char *dir = *state;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
    free(dir);
    return 0;
}

static void write_file(const char *path, const void *data, size_t length)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (length)
        assert_int_equal(fwrite(data, 1, length, f), length);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_file(const char *path, size_t *length)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc((size_t)n + 1);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *length = (size_t)n;
    return data;
}

static void snap_path(char *out, const char *dir, uint64_t zxid)
{
    snprintf(out, 4096, "%s/snap-%020llu.snap", dir, (unsigned long long)zxid);
}

static void test_snapshot_write__read_round_trip(void **state)
{
    const char *dir = *state;
    uint8_t body[5000];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)(i * 31 + 7);
    assert_int_equal(snapshot_write(dir, 12345, 7, body, sizeof(body)), 0);

    char path[4096];
    snap_path(path, dir, 12345);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, HEADER_SIZE + sizeof(body));
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_not_equal(stat(tmp, &st), 0); /* renamed away */

    uint64_t zxid = 0, term = 0;
    uint8_t *out = NULL;
    size_t length = 0;
    assert_int_equal(snapshot_read(path, &zxid, &term, &out, &length), 0);
    assert_int_equal(zxid, 12345);
    assert_int_equal(term, 7);
    assert_int_equal(length, sizeof(body));
    assert_memory_equal(out, body, sizeof(body));
    free(out);

    /* The header is as snapshot.h says. */
    size_t n;
    uint8_t *raw = read_file(path, &n);
    assert_memory_equal(raw, "CRLSNAP\0", 8);
    assert_int_equal(raw[8], 1);
    assert_int_equal(raw[16], 12345 & 0xff);
    assert_int_equal(raw[17], 12345 >> 8);
    assert_int_equal(raw[24], 7);
    assert_int_equal(raw[32], sizeof(body) & 0xff);
    assert_int_equal(raw[33], sizeof(body) >> 8);
    free(raw);
}

/* A big body goes out in paced chunks (1 MiB each, the last one short): it must read
 * back whole, with every byte where it was. */
static void test_snapshot_write__body_of_several_chunks_reads_back_whole(void **state)
{
    const char *dir = *state;
    size_t size = (3u << 20) + 12345;
    uint8_t *body = malloc(size);
    assert_non_null(body);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        body[i] = (uint8_t)x;
    }
    assert_int_equal(snapshot_write(dir, 77, 3, body, size), 0);
    char path[4096];
    snap_path(path, dir, 77);
    uint64_t zxid = 0, term = 0;
    uint8_t *out = NULL;
    size_t length = 0;
    assert_int_equal(snapshot_read(path, &zxid, &term, &out, &length), 0);
    assert_int_equal(length, size);
    assert_memory_equal(out, body, size);
    free(out);
    free(body);
}

/* A writer fed in pieces of any size (as the forked child encodes its image, 1 MiB at a
 * time) leaves the very file snapshot_write leaves for the whole body; an aborted one
 * leaves nothing. */
static void test_snapshot_writer__pieces_give_the_same_file_and_abort_leaves_none(void **state)
{
    const char *dir = *state;
    size_t size = (2u << 20) + 777;
    uint8_t *body = malloc(size);
    assert_non_null(body);
    for (size_t i = 0; i < size; i++)
        body[i] = (uint8_t)(i * 131 + (i >> 12));
    assert_int_equal(snapshot_write(dir, 500, 4, body, size), 0);

    struct snapshot_writer *w = NULL;
    assert_int_equal(snapshot_writer_open(dir, 600, 4, &w), 0);
    const size_t pieces[] = {0, 1, 3, 4093, (1u << 20) + 5, 1u << 20};
    size_t at = 0;
    for (size_t i = 0; at < size; i = (i + 1) % (sizeof(pieces) / sizeof(pieces[0]))) {
        size_t n = pieces[i] < size - at ? pieces[i] : size - at;
        assert_int_equal(snapshot_writer_append(w, body + at, n), 0);
        at += n;
    }
    assert_int_equal(snapshot_writer_commit(w), 0);

    char whole_path[4096], pieces_path[4096];
    snap_path(whole_path, dir, 500);
    snap_path(pieces_path, dir, 600);
    size_t whole_length, pieces_length;
    uint8_t *whole = read_file(whole_path, &whole_length);
    uint8_t *in_pieces = read_file(pieces_path, &pieces_length);
    assert_int_equal(pieces_length, whole_length);
    /* Byte for byte but the zxid (offset 16) and the header's own CRC (44). */
    assert_memory_equal(in_pieces, whole, 16);
    assert_memory_equal(in_pieces + 24, whole + 24, 20);
    assert_memory_equal(in_pieces + HEADER_SIZE, whole + HEADER_SIZE, size);
    uint64_t zxid = 0, term = 0;
    uint8_t *out = NULL;
    size_t length = 0;
    assert_int_equal(snapshot_read(pieces_path, &zxid, &term, &out, &length), 0);
    assert_int_equal(zxid, 600);
    assert_int_equal(length, size);
    free(out);
    free(whole);
    free(in_pieces);

    assert_int_equal(snapshot_writer_open(dir, 700, 4, &w), 0);
    assert_int_equal(snapshot_writer_append(w, body, 5000), 0);
    snapshot_writer_abort(w);
    struct snapshot_file *files = NULL;
    size_t count = 0;
    assert_int_equal(snapshot_list(dir, &files, &count), 0);
    assert_int_equal(count, 2); /* 500 and 600; no 700 */
    assert_int_equal(files[0].zxid, 600);
    free(files);
    char tmp[4200];
    snap_path(tmp, dir, 700);
    strcat(tmp, ".tmp");
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0);
    free(body);
}

static void test_snapshot_write__empty_body(void **state)
{
    const char *dir = *state;
    assert_int_equal(snapshot_write(dir, 1, 1, "", 0), 0);
    char path[4096];
    snap_path(path, dir, 1);
    uint64_t zxid, term;
    uint8_t *out = NULL;
    size_t length = 99;
    assert_int_equal(snapshot_read(path, &zxid, &term, &out, &length), 0);
    assert_int_equal(length, 0);
    assert_non_null(out);
    free(out);
}

static void test_snapshot_write__missing_dir(void **state)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/does-not-exist", (const char *)*state);
    assert_int_equal(snapshot_write(dir, 1, 1, "x", 1), CORRAL_E_IO);
    uint64_t zxid, term;
    uint8_t *out;
    size_t length;
    assert_int_equal(snapshot_read(dir, &zxid, &term, &out, &length), CORRAL_E_IO);
    struct snapshot_file *files;
    size_t count;
    assert_int_equal(snapshot_list(dir, &files, &count), CORRAL_E_IO);
}

static void test_snapshot_list__newest_first_tmp_ignored(void **state)
{
    const char *dir = *state;
    uint64_t zxids[] = {500, 3, 100000000000ull, 42, 9};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(snapshot_write(dir, zxids[i], 1, "body", 4), 0);
    char other[4200];
    /* Leftovers and strangers are not snapshots. */
    snprintf(other, sizeof(other), "%s/snap-%020llu.snap.tmp", dir, 999999ull);
    write_file(other, "x", 1);
    snprintf(other, sizeof(other), "%s/snap-123.snap", dir);
    write_file(other, "x", 1);
    snprintf(other, sizeof(other), "%s/wal-00000000000000000001.log", dir);
    write_file(other, "x", 1);
    snprintf(other, sizeof(other), "%s/snap-0000000000000000000x.snap", dir);
    write_file(other, "x", 1);

    struct snapshot_file *files = NULL;
    size_t count = 0;
    assert_int_equal(snapshot_list(dir, &files, &count), 0);
    assert_int_equal(count, 5);
    uint64_t expect[] = {100000000000ull, 500, 42, 9, 3};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(files[i].zxid, expect[i]);
        char path[4096];
        snap_path(path, dir, expect[i]);
        assert_string_equal(files[i].path, path);
    }
    free(files);
}

static void test_snapshot_list__empty_dir(void **state)
{
    struct snapshot_file *files = (void *)1;
    size_t count = 7;
    assert_int_equal(snapshot_list(*state, &files, &count), 0);
    assert_int_equal(count, 0);
    free(files);
}

static int read_status(const char *path)
{
    uint64_t zxid, term;
    uint8_t *out = NULL;
    size_t length;
    int rv = snapshot_read(path, &zxid, &term, &out, &length);
    free(out);
    return rv;
}

static void test_snapshot_read__any_flipped_byte_is_corrupt(void **state)
{
    const char *dir = *state;
    uint8_t body[300];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (uint8_t)i;
    assert_int_equal(snapshot_write(dir, 77, 3, body, sizeof(body)), 0);
    char path[4096];
    snap_path(path, dir, 77);
    size_t n;
    uint8_t *good = read_file(path, &n);
    assert_int_equal(n, HEADER_SIZE + sizeof(body));
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit += 7) { /* lowest and highest bit */
            good[i] ^= (uint8_t)(1u << bit);
            write_file(path, good, n);
            int rv = read_status(path);
            good[i] ^= (uint8_t)(1u << bit);
            if (rv != CORRAL_E_CORRUPT)
                fail_msg("flipping bit %d of byte %zu: got %d", bit, i, rv);
        }
    }
    write_file(path, good, n);
    assert_int_equal(read_status(path), 0);
    free(good);
}

static void test_snapshot_read__truncated_or_extended_is_corrupt(void **state)
{
    const char *dir = *state;
    assert_int_equal(snapshot_write(dir, 5, 1, "0123456789", 10), 0);
    char path[4096];
    snap_path(path, dir, 5);
    size_t n;
    uint8_t *good = read_file(path, &n);
    for (size_t cut = 0; cut < n; cut++) {
        write_file(path, good, cut);
        int rv = read_status(path);
        if (rv != CORRAL_E_CORRUPT)
            fail_msg("truncated at %zu of %zu: got %d", cut, n, rv);
    }
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, good, n);
    longer[n] = 0;
    write_file(path, longer, n + 1);
    assert_int_equal(read_status(path), CORRAL_E_CORRUPT);
    free(longer);
    free(good);
}

static void test_snapshot_prune__keeps_newest(void **state)
{
    const char *dir = *state;
    uint64_t zxids[] = {10, 40, 20, 50, 30};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(snapshot_write(dir, zxids[i], 1, "b", 1), 0);
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s/snap-%020llu.snap.tmp", dir, 60ull);
    write_file(tmp, "partial", 7);
    char keep_me[4200];
    snprintf(keep_me, sizeof(keep_me), "%s/unrelated.txt", dir);
    write_file(keep_me, "x", 1);

    assert_int_equal(snapshot_prune(dir, 3), 30);
    struct snapshot_file *files = NULL;
    size_t count = 0;
    assert_int_equal(snapshot_list(dir, &files, &count), 0);
    assert_int_equal(count, 3);
    assert_int_equal(files[0].zxid, 50);
    assert_int_equal(files[1].zxid, 40);
    assert_int_equal(files[2].zxid, 30);
    free(files);
    struct stat st;
    assert_int_not_equal(stat(tmp, &st), 0); /* leftover .tmp removed */
    assert_int_equal(stat(keep_me, &st), 0); /* strangers untouched */

    assert_int_equal(snapshot_prune(dir, 10), 30); /* fewer than keep: all stay */
    assert_int_equal(snapshot_prune(dir, 1), 50);
    assert_int_equal(snapshot_list(dir, &files, &count), 0);
    assert_int_equal(count, 1);
    free(files);
    assert_int_equal(snapshot_prune(dir, 0), 0);
    assert_int_equal(snapshot_list(dir, &files, &count), 0);
    assert_int_equal(count, 0);
    free(files);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_write__read_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_snapshot_write__body_of_several_chunks_reads_back_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_snapshot_writer__pieces_give_the_same_file_and_abort_leaves_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_write__empty_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_write__missing_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_list__newest_first_tmp_ignored, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_list__empty_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_read__any_flipped_byte_is_corrupt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_read__truncated_or_extended_is_corrupt, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_prune__keeps_newest, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
