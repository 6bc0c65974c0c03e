/* crc32c.h: CRC-32C (Castagnoli), the checksum of every WAL record, snapshot and
 * (later) peer message. Chosen over CRC-32 because x86 has an instruction for it. */
#ifndef CORRAL_CRC32C_H
#define CORRAL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) with len bytes of buf; returns the new CRC. Pure. */
uint32_t crc32c_extend(uint32_t crc, const void *buf, size_t len);

#endif
