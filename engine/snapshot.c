/* snapshot.c: snapshot files of snapshot.h; the file format is the OFFSET SIZE
 * DESCRIPTION table there, encoded byte by byte here.
 *
 * Validation order on read: the header CRC first (so no field of a damaged header is
 * trusted, not even the body length), then magic and version, then the body length
 * against the file size (a truncated or extended file is corrupt), then the body CRC.
 *
 * snapshot_prune deletes leftover ".tmp" files, so it must not run while a
 * snapshot_write is in progress in the same directory; the engine serialises them. */
#include "snapshot.h"

#include "crc.h"
#include "error.h"
#include "bytes.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAPSHOT_HEADER_SIZE 48
#define SNAPSHOT_HEADER_CRC_OFFSET 44
#define SNAPSHOT_FORMAT_VERSION 1
#define SNAPSHOT_WRITE_CHUNK ((size_t)1 << 20) /* write-back pacing (snapshot_write_paced) */
#define SNAPSHOT_PREFIX "snap-"
#define SNAPSHOT_SUFFIX ".snap"
#define SNAPSHOT_TMP_SUFFIX ".tmp"
#define SNAPSHOT_DIGITS 20
/* "snap-" + 20 digits + ".snap" */
#define SNAPSHOT_NAME_LENGTH (5 + SNAPSHOT_DIGITS + 5)

static const uint8_t snapshot_magic[8] = {'C', 'R', 'L', 'S', 'N', 'A', 'P', 0};

static int snapshot_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return CORRAL_E_IO; /* n == 0: no progress, retrying would spin */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int snapshot_read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return CORRAL_E_IO;
        if (n == 0)
            return CORRAL_E_CORRUPT; /* shorter than fstat said: truncated under us */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int snapshot_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return CORRAL_E_IO;
    int rv = fsync(fd) == 0 ? 0 : CORRAL_E_IO;
    close(fd);
    return rv;
}

/* "<dir>/snap-<zxid>.snap" (+ suffix). Returns 0, or CORRAL_E_IO when it does not fit. */
static int snapshot_path(char *out, size_t capacity, const char *dir, uint64_t zxid,
                         const char *suffix)
{
    int n = snprintf(out, capacity, "%s/" SNAPSHOT_PREFIX "%020" PRIu64 SNAPSHOT_SUFFIX "%s", dir,
                     zxid, suffix);
    return n < 0 || (size_t)n >= capacity ? CORRAL_E_IO : 0;
}

/* Parses "snap-<20 digits>.snap" exactly; anything else in the directory is not a
 * snapshot (".tmp" leftovers included). */
static bool snapshot_name_parse(const char *name, uint64_t *zxid)
{
    if (strlen(name) != SNAPSHOT_NAME_LENGTH || memcmp(name, SNAPSHOT_PREFIX, 5) != 0 ||
        strcmp(name + 5 + SNAPSHOT_DIGITS, SNAPSHOT_SUFFIX) != 0)
        return false;
    uint64_t v = 0;
    for (int i = 5; i < 5 + SNAPSHOT_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *zxid = v;
    return true;
}

static bool snapshot_name_is_tmp(const char *name)
{
    size_t len = strlen(name);
    size_t tmp_len = SNAPSHOT_NAME_LENGTH + sizeof(SNAPSHOT_TMP_SUFFIX) - 1;
    return len == tmp_len && memcmp(name, SNAPSHOT_PREFIX, 5) == 0 &&
           strcmp(name + SNAPSHOT_NAME_LENGTH, SNAPSHOT_TMP_SUFFIX) == 0;
}

struct snapshot_writer {
    int fd;
    uint64_t zxid;
    uint64_t term;
    uint64_t length;      /* body bytes appended */
    uint32_t crc;         /* CRC-32C of the body so far */
    off_t paced_to;       /* write-back started for the file up to here */
    off_t previous_chunk; /* start of the chunk whose write-back is waited for next; -1 */
    bool pace;
    char dir[4096];
    char tmp[4096];
    char final[4096];
};

int snapshot_writer_open(const char *dir, uint64_t zxid, uint64_t term,
                         struct snapshot_writer **out)
{
    struct snapshot_writer *w = calloc(1, sizeof(*w)); /* freed by commit or abort */
    if (!w)
        return CORRAL_E_NO_MEMORY;
    if (snprintf(w->dir, sizeof(w->dir), "%s", dir) >= (int)sizeof(w->dir) ||
        snapshot_path(w->tmp, sizeof(w->tmp), dir, zxid, SNAPSHOT_TMP_SUFFIX) != 0 ||
        snapshot_path(w->final, sizeof(w->final), dir, zxid, "") != 0) {
        free(w);
        return CORRAL_E_IO;
    }
    w->zxid = zxid;
    w->term = term;
    w->paced_to = SNAPSHOT_HEADER_SIZE;
    w->previous_chunk = -1;
    w->pace = true;
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        free(w);
        return CORRAL_E_IO;
    }
    /* The header's length and CRCs are known at commit; until then, zeros (which fail
     * the header CRC, should this file ever be read). */
    uint8_t zeros[SNAPSHOT_HEADER_SIZE] = {0};
    if (snapshot_write_all(w->fd, zeros, sizeof(zeros)) != 0) {
        snapshot_writer_abort(w);
        return CORRAL_E_IO;
    }
    *out = w;
    return 0;
}

/* Writes the body a chunk at a time, starting each chunk's write-back as soon as it is
 * written and waiting for the chunk before it, so that at most two chunks of the file
 * are on their way to the disk at once (Redis's rdb-save-incremental-fsync does the
 * same for the same reason). Written whole and fsynced at the end, a snapshot of a big
 * tree reached the disk as one burst of a hundred megabytes, and every log sync of the
 * server, queued behind it in the device, took that long: the writers stalled for up to
 * a second at each snapshot. sync_file_range makes nothing durable (the fsync that
 * follows does); it only paces the write-back, so where it is refused (a file system
 * without it) the write goes on unpaced. */
int snapshot_writer_append(struct snapshot_writer *w, const void *data, size_t length)
{
    const uint8_t *p = data;
    while (length > 0) {
        size_t n = length < SNAPSHOT_WRITE_CHUNK ? length : SNAPSHOT_WRITE_CHUNK;
        if (snapshot_write_all(w->fd, p, n) != 0)
            return CORRAL_E_IO;
        w->crc = cluster_crc32c(w->crc, p, n);
        w->length += n;
        p += n;
        length -= n;
        /* Pace whole chunks only; the fsync at commit takes the rest. */
        off_t end = SNAPSHOT_HEADER_SIZE + (off_t)w->length;
        while (w->pace && end - w->paced_to >= (off_t)SNAPSHOT_WRITE_CHUNK) {
            if (sync_file_range(w->fd, w->paced_to, SNAPSHOT_WRITE_CHUNK, SYNC_FILE_RANGE_WRITE) !=
                0)
                w->pace = false;
            if (w->pace && w->previous_chunk >= 0 &&
                sync_file_range(w->fd, w->previous_chunk, SNAPSHOT_WRITE_CHUNK,
                                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                    SYNC_FILE_RANGE_WAIT_AFTER) != 0)
                w->pace = false;
            w->previous_chunk = w->paced_to;
            w->paced_to += (off_t)SNAPSHOT_WRITE_CHUNK;
        }
    }
    return 0;
}

int snapshot_writer_commit(struct snapshot_writer *w)
{
    uint8_t h[SNAPSHOT_HEADER_SIZE];
    memcpy(h, snapshot_magic, 8);
    bytes_store_u32(h + 8, SNAPSHOT_FORMAT_VERSION);
    bytes_store_u32(h + 12, 0);
    bytes_store_u64(h + 16, w->zxid);
    bytes_store_u64(h + 24, w->term);
    bytes_store_u64(h + 32, w->length);
    bytes_store_u32(h + 40, w->crc);
    bytes_store_u32(h + 44, cluster_crc32c(0, h, SNAPSHOT_HEADER_CRC_OFFSET));
    int rv = 0;
    if (pwrite(w->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
        rv = CORRAL_E_IO;
    if (rv == 0 && fsync(w->fd) != 0)
        rv = CORRAL_E_IO;
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0 && rv == 0)
        rv = CORRAL_E_IO;
    /* Only a complete, durable file gets the final name. */
    if (rv == 0 && rename(w->tmp, w->final) != 0)
        rv = CORRAL_E_IO;
    if (rv != 0) {
        snapshot_writer_abort(w);
        return rv;
    }
    /* The rename itself must be durable before anyone drops log on its account. */
    rv = snapshot_fsync_dir(w->dir);
    free(w);
    return rv;
}

void snapshot_writer_abort(struct snapshot_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    unlink(w->tmp);
    free(w);
}

int snapshot_write(const char *dir, uint64_t zxid, uint64_t term, const void *body, size_t length)
{
    struct snapshot_writer *w = NULL;
    int rv = snapshot_writer_open(dir, zxid, term, &w);
    if (rv != 0)
        return rv == CORRAL_E_NO_MEMORY ? CORRAL_E_IO : rv;
    if (snapshot_writer_append(w, body, length) != 0) {
        snapshot_writer_abort(w);
        return CORRAL_E_IO;
    }
    return snapshot_writer_commit(w);
}

static int snapshot_file_cmp(const void *a, const void *b)
{
    uint64_t za = ((const struct snapshot_file *)a)->zxid;
    uint64_t zb = ((const struct snapshot_file *)b)->zxid;
    return za < zb ? 1 : (za > zb ? -1 : 0); /* newest first */
}

int snapshot_list(const char *dir, struct snapshot_file **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return CORRAL_E_IO;
    struct snapshot_file *files = NULL; /* owned here until handed to *out */
    size_t n = 0, capacity = 0;
    int rv = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        uint64_t zxid;
        if (!snapshot_name_parse(e->d_name, &zxid))
            continue;
        if (n == capacity) {
            size_t cap = capacity ? capacity * 2 : 8;
            struct snapshot_file *grown = realloc(files, cap * sizeof(*grown));
            if (!grown) {
                rv = CORRAL_E_NO_MEMORY;
                goto out;
            }
            files = grown;
            capacity = cap;
        }
        files[n].zxid = zxid;
        if (snapshot_path(files[n].path, sizeof(files[n].path), dir, zxid, "") != 0) {
            rv = CORRAL_E_IO;
            goto out;
        }
        n++;
        errno = 0;
    }
    if (errno != 0)
        rv = CORRAL_E_IO;
out:
    closedir(d);
    if (rv != 0) {
        free(files);
        return rv;
    }
    if (n > 1)
        qsort(files, n, sizeof(*files), snapshot_file_cmp);
    *out = files;
    *count = n;
    return 0;
}

int snapshot_read(const char *path, uint64_t *zxid, uint64_t *term, uint8_t **body, size_t *length)
{
    *body = NULL;
    *length = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CORRAL_E_IO;
    uint8_t *data = NULL; /* owned here until handed to *body */
    int rv;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rv = CORRAL_E_IO;
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;
    uint8_t h[SNAPSHOT_HEADER_SIZE];
    rv = CORRAL_E_CORRUPT;
    if (size < SNAPSHOT_HEADER_SIZE)
        goto out;
    rv = snapshot_read_all(fd, h, sizeof(h));
    if (rv != 0)
        goto out;
    rv = CORRAL_E_CORRUPT;
    if (bytes_load_u32(h + 44) != cluster_crc32c(0, h, SNAPSHOT_HEADER_CRC_OFFSET) ||
        memcmp(h, snapshot_magic, 8) != 0 || bytes_load_u32(h + 8) != SNAPSHOT_FORMAT_VERSION)
        goto out;
    uint64_t body_length = bytes_load_u64(h + 32);
    if (body_length != size - SNAPSHOT_HEADER_SIZE || body_length > SIZE_MAX)
        goto out;

    rv = CORRAL_E_NO_MEMORY;
    data = malloc(body_length ? (size_t)body_length : 1);
    if (!data)
        goto out;
    rv = snapshot_read_all(fd, data, (size_t)body_length);
    if (rv != 0)
        goto out;
    rv = CORRAL_E_CORRUPT;
    if (bytes_load_u32(h + 40) != cluster_crc32c(0, data, (size_t)body_length))
        goto out;

    *zxid = bytes_load_u64(h + 16);
    *term = bytes_load_u64(h + 24);
    *body = data;
    *length = (size_t)body_length;
    data = NULL;
    rv = 0;
out:
    free(data);
    close(fd);
    return rv;
}

int snapshot_body_length(const char *dir, uint64_t zxid, uint64_t *length)
{
    char path[4096];
    struct stat st;
    if (snapshot_path(path, sizeof(path), dir, zxid, "") != 0 || stat(path, &st) != 0 ||
        st.st_size < SNAPSHOT_HEADER_SIZE)
        return CORRAL_E_IO;
    *length = (uint64_t)st.st_size - SNAPSHOT_HEADER_SIZE;
    return 0;
}

int64_t snapshot_prune(const char *dir, uint32_t keep)
{
    struct snapshot_file *files = NULL;
    size_t count = 0;
    int rv = snapshot_list(dir, &files, &count);
    if (rv != 0)
        return rv;
    int64_t oldest_kept = 0;
    for (size_t i = 0; i < count; i++) {
        if (i < keep) {
            oldest_kept = (int64_t)files[i].zxid;
            continue;
        }
        if (unlink(files[i].path) != 0 && errno != ENOENT) {
            free(files);
            return CORRAL_E_IO;
        }
    }
    free(files);

    /* Leftovers of writes cut short by a crash. */
    DIR *d = opendir(dir);
    if (!d)
        return CORRAL_E_IO;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!snapshot_name_is_tmp(e->d_name))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
            closedir(d);
            return CORRAL_E_IO;
        }
    }
    closedir(d);
    /* No directory fsync: a deletion lost in a crash only leaves an extra file, which
     * the next prune removes. */
    return oldest_kept;
}
