/* crc.h: CRC-32C (Castagnoli), corral's one checksum: every peer frame and consensus
 * message (cluster/), every WAL record, snapshot and hard state file (engine/, which
 * builds on cluster/). Chosen over CRC-32 because x86 has an instruction for it. */
#ifndef CORRAL_CLUSTER_CRC_H
#define CORRAL_CLUSTER_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) with length bytes of data and returns the new CRC; the
 * pre- and post-inversion are inside, so calls chain: crc(crc(0, a), b) = crc(0, a b).
 * cluster_crc32c(0, "123456789", 9) == 0xE3069283. Pure and thread-safe. Uses the CPU's
 * CRC instruction when it has one. */
uint32_t cluster_crc32c(uint32_t crc, const void *data, size_t length);

/* The same result from the portable table code alone, whatever the CPU: for tests that
 * check both paths agree. */
uint32_t cluster_crc32c_portable(uint32_t crc, const void *data, size_t length);

#endif
