/* hardstate.c: durable term and vote (format in hardstate.h). */
#include "hardstate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "crc.h"
#include "error.h"

#define HARDSTATE_SIZE 36
static const char hardstate_magic[8] = {'C', 'R', 'L', 'H', 'A', 'R', 'D', 0};

int hardstate_read(const char *dir, uint64_t *term, uint64_t *voted_for)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/hardstate", dir);
    *term = 0;
    *voted_for = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : CORRAL_E_IO;
    uint8_t buf[HARDSTATE_SIZE + 1];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0)
        return CORRAL_E_IO;
    if (n != HARDSTATE_SIZE || memcmp(buf, hardstate_magic, 8) != 0 ||
        bytes_load_u32(buf + 8) != 1 || bytes_load_u32(buf + 32) != cluster_crc32c(0, buf, 32))
        return CORRAL_E_CORRUPT;
    *term = bytes_load_u64(buf + 16);
    *voted_for = bytes_load_u64(buf + 24);
    return 0;
}

int hardstate_write(const char *dir, uint64_t term, uint64_t voted_for)
{
    char path[4200], tmp[4210];
    snprintf(path, sizeof path, "%s/hardstate", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    uint8_t buf[HARDSTATE_SIZE] = {0};
    memcpy(buf, hardstate_magic, 8);
    bytes_store_u32(buf + 8, 1);
    bytes_store_u64(buf + 16, term);
    bytes_store_u64(buf + 24, voted_for);
    bytes_store_u32(buf + 32, cluster_crc32c(0, buf, 32));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return CORRAL_E_IO;
    bool ok = write(fd, buf, sizeof buf) == (ssize_t)sizeof buf && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        return CORRAL_E_IO;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return CORRAL_E_IO;
    ok = fsync(dfd) == 0;
    close(dfd);
    return ok ? 0 : CORRAL_E_IO;
}
