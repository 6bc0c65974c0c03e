/* crc.h: CRC-32C (Castagnoli) for cluster/, which must not reach into engine/'s copy.
 * It checks every peer frame (transport_nn.c). */
#ifndef CORRAL_CLUSTER_CRC_H
#define CORRAL_CLUSTER_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) with length bytes of data and returns the new CRC; the
 * pre- and post-inversion are inside, so calls chain: crc(crc(0, a), b) = crc(0, a b).
 * cluster_crc32c(0, "123456789", 9) == 0xE3069283. Pure and thread-safe. */
uint32_t cluster_crc32c(uint32_t crc, const void *data, size_t length);

#endif
