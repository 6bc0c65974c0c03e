/* fsyncfloor: the latency floor of one durable 100-byte write on this disk.
 *
 *   fsyncfloor DIR [count] [bytes] [pause_us]
 *
 * Writes `bytes` (100) with write(2) and then fdatasync(2)s, `count` (5,000) times, in
 * two ways, in a file in DIR (put it on the disk the servers use):
 *   append     each write extends the file: what a log that is not preallocated does
 *   overwrite  the file was preallocated and synced first: only data blocks change
 *   paced      overwrite, after a pause of `pause_us` (300) before each write, as a single
 *              client's writes come (a round trip apart) rather than back to back; the
 *              pause is not counted. On this VM the idle core and disk make each sync
 *              slower than back to back, and that is what a one-client server sees.
 * and prints one line per way:
 *   RESULT way=append n=5000 p50_ms=.. p99_ms=.. p999_ms=.. per_s=..
 * A server's single-client write latency (W4) cannot beat this floor; the issue's
 * target is to stay within 1.5x of it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run(const char *dir, const char *way, int count, int bytes, int pause_us)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/fsyncfloor.%d", dir, getpid());
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    char *buf = malloc(bytes);
    memset(buf, 'v', bytes);
    int overwrite = strcmp(way, "append") != 0;
    if (overwrite) {
        /* real blocks, not a hole: write zeros over the whole span, then sync */
        char *zero = calloc(1, 1 << 20);
        long total = (long)count * bytes;
        for (long off = 0; off < total; off += 1 << 20)
            if (write(fd, zero, 1 << 20) < 0) {
                perror("write");
                exit(1);
            }
        fsync(fd);
        lseek(fd, 0, SEEK_SET);
        free(zero);
    }
    double *lat = malloc(count * sizeof *lat);
    double t0 = now_s();
    for (int i = 0; i < count; i++) {
        if (pause_us > 0)
            usleep((useconds_t)pause_us);
        double s = now_s();
        if (write(fd, buf, bytes) != bytes) {
            perror("write");
            exit(1);
        }
        if (fdatasync(fd) != 0) {
            perror("fdatasync");
            exit(1);
        }
        lat[i] = (now_s() - s) * 1e3;
    }
    double el = now_s() - t0;
    qsort(lat, count, sizeof *lat, cmp);
    printf("RESULT way=%s n=%d p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f per_s=%.0f\n", way, count,
           lat[count / 2], lat[(int)(count * 0.99)], lat[(int)(count * 0.999)], count / el);
    close(fd);
    unlink(path);
    free(lat);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fsyncfloor DIR [count] [bytes] [pause_us]\n");
        return 2;
    }
    int count = argc > 2 ? atoi(argv[2]) : 5000;
    int bytes = argc > 3 ? atoi(argv[3]) : 100;
    int pause_us = argc > 4 ? atoi(argv[4]) : 300;
    run(argv[1], "append", count, bytes, 0);
    run(argv[1], "overwrite", count, bytes, 0);
    run(argv[1], "paced", count, bytes, pause_us);
    return 0;
}
