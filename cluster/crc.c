/* crc.c: CRC-32C with the SSE4.2 instruction when the CPU has it (chosen at run time) and
 * a portable slice-by-8 table otherwise, so cluster/ builds and runs anywhere. This is
 * corral's only CRC: cluster/ is the lowest layer, and engine/ checks its WAL records,
 * snapshots and hard state with it too.
 *
 * Why the instruction matters here: every peer message is checked twice on each side
 * (the consensus codec's CRC and the transport frame's), so a 3-member write load ran
 * the table version over ~20 MB/s; perf put it at 1.4 % of the leader's CPU and 3.3-3.8 %
 * of each follower's. */
#include "crc.h"

#include <pthread.h>
#include <string.h>

#define CLUSTER_CRC32C_POLY 0x82F63B78u /* Castagnoli, reflected */

typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t *p, size_t length);

/* Written once under crc_once, read-only afterwards: concurrent callers need no lock. */
static uint32_t crc_table[8][256];
static crc_fn crc_impl;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* crc is taken and returned without the pre- and post-inversion. */
static uint32_t crc_table_update(uint32_t crc, const uint8_t *p, size_t length)
{
    while (length >= 8) {
        /* Byte by byte, so the result does not depend on host endianness. */
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
              crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
              crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        length -= 8;
    }
    while (length-- > 0)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define CLUSTER_CRC_HAVE_SSE42 1
__attribute__((target("sse4.2"))) static uint32_t crc_sse42_update(uint32_t crc, const uint8_t *p,
                                                                   size_t length)
{
    unsigned long long c = crc;
    while (length >= 8) {
        unsigned long long v;
        memcpy(&v, p, sizeof v); /* x86 is little endian and tolerates unaligned loads */
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (length-- > 0)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CLUSTER_CRC32C_POLY : c >> 1;
        crc_table[0][i] = c;
    }
    /* crc_table[k][i]: the CRC of byte i followed by k zero bytes, which lets the table
     * loop fold 8 input bytes per step. */
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xFF];
    crc_impl = crc_table_update;
#ifdef CLUSTER_CRC_HAVE_SSE42
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        crc_impl = crc_sse42_update;
#endif
}

uint32_t cluster_crc32c(uint32_t crc, const void *data, size_t length)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_impl(~crc, data, length);
}

uint32_t cluster_crc32c_portable(uint32_t crc, const void *data, size_t length)
{
    pthread_once(&crc_once, crc_init);
    return ~crc_table_update(~crc, data, length);
}
