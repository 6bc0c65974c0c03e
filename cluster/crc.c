/* crc.c: CRC-32C in software, slice-by-8 over a table built once; no CPU-specific code,
 * so cluster/ stays portable and free of engine/ (which has the SSE4.2 variant). */
#include "crc.h"

#include <pthread.h>

#define CLUSTER_CRC32C_POLY 0x82F63B78u /* Castagnoli, reflected */

/* Written once under crc_once, read-only afterwards: concurrent callers need no lock. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_build(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CLUSTER_CRC32C_POLY : c >> 1;
        crc_table[0][i] = c;
    }
    /* crc_table[k][i]: the CRC of byte i followed by k zero bytes, which lets the loop
     * below fold 8 input bytes per step. */
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xFF];
}

uint32_t cluster_crc32c(uint32_t crc, const void *data, size_t length)
{
    pthread_once(&crc_once, crc_table_build);
    const uint8_t *p = data;
    crc = ~crc;
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
    return ~crc;
}
