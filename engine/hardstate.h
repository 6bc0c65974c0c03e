/* hardstate.h: the member's durable Raft state: current term and vote.
 *
 * Raft (dissertation 3.8) requires both to be on stable storage before the member
 * acts on them (sends a vote, accepts a leader): a member that voted, crashed and
 * forgot could vote twice in one term. The file is tiny and rewritten only when the
 * term or the vote changes (elections), atomically: tmp file, fsync, rename, fsync dir.
 *
 * File "hardstate", little endian:
 *   OFFSET SIZE DESCRIPTION
 *   0      8    magic "CRLHARD\0"
 *   8      4    format version (1)
 *   12     4    reserved, zero
 *   16     8    current term
 *   24     8    voted for (member id, 0 = none)
 *   32     4    CRC-32C of bytes 0..32
 */
#ifndef CORRAL_HARDSTATE_H
#define CORRAL_HARDSTATE_H

#include <stdint.h>

/* Reads the hard state of dir. A missing file is term 0, no vote. Returns 0,
 * CORRAL_E_IO or CORRAL_E_CORRUPT (a damaged file is never guessed at). */
int hardstate_read(const char *dir, uint64_t *term, uint64_t *voted_for);

/* Writes it durably (blocking, a few ms). Returns 0 or CORRAL_E_IO. */
int hardstate_write(const char *dir, uint64_t term, uint64_t voted_for);

#endif
