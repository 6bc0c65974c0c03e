/* raft_codec.c: struct raft_message to bytes and back, for the peer transport.
 *
 * Format version 1. Integers are little-endian; one message is one buffer.
 *
 *   OFFSET SIZE DESCRIPTION
 *        0    4 magic: the bytes 'R' 'F' 'T' 'M'
 *        4    1 format version: 1
 *        5    1 message type (enum raft_message_type, 1..9)
 *        6    2 flags: bit 0 = granted; other bits 0 in version 1 (rejected if set)
 *        8    4 entry count n
 *       12    4 total length of the message in bytes, CRC included
 *       16    8 from
 *       24    8 to
 *       32    8 term
 *       40    8 log_index
 *       48    8 log_term
 *       56    8 commit_index
 *       64    8 match_index
 *       72    8 read_round
 *       80      n entries, each:
 *                 +0   8 term
 *                 +8   4 data length d
 *                 +12  d data
 *  total-4    4 CRC-32C (cluster_crc32c from 0) of bytes 0 .. total-5
 *
 * The decoder trusts nothing: the magic, version, type, flags, the total length against
 * the buffer, the CRC, then each entry's length against what is left, and that the
 * entries end exactly at the CRC. Version 1 readers reject later versions; a later
 * writer that must talk to them writes version 1.
 */
#include "raft.h"

#include <stdlib.h>
#include <string.h>

#include "crc.h"

#define RAFT_CODEC_VERSION 1
#define RAFT_CODEC_HEADER 80
#define RAFT_CODEC_ENTRY_HEADER 12
#define RAFT_CODEC_MAX ((uint64_t)UINT32_MAX)

static void raft_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void raft_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t raft_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t raft_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

int raft_message_encode(const struct raft_message *m, uint8_t **buf, size_t *length)
{
    if (m->type < RAFT_MSG_PRE_VOTE || m->type > RAFT_MSG_TIMEOUT_NOW)
        return CLUSTER_E_INVALID;
    if (m->entry_count && !m->entries)
        return CLUSTER_E_INVALID;
    uint64_t total = RAFT_CODEC_HEADER + 4;
    for (uint32_t i = 0; i < m->entry_count; i++)
        total += RAFT_CODEC_ENTRY_HEADER + (uint64_t)m->entries[i].length;
    if (total > RAFT_CODEC_MAX)
        return CLUSTER_E_INVALID;
    uint8_t *p = malloc(total); /* owned by the caller on success */
    if (!p)
        return CLUSTER_E_NO_MEMORY;
    memcpy(p, "RFTM", 4);
    p[4] = RAFT_CODEC_VERSION;
    p[5] = (uint8_t)m->type;
    p[6] = m->granted ? 1 : 0;
    p[7] = 0;
    raft_put32(p + 8, m->entry_count);
    raft_put32(p + 12, (uint32_t)total);
    raft_put64(p + 16, m->from);
    raft_put64(p + 24, m->to);
    raft_put64(p + 32, m->term);
    raft_put64(p + 40, m->log_index);
    raft_put64(p + 48, m->log_term);
    raft_put64(p + 56, m->commit_index);
    raft_put64(p + 64, m->match_index);
    raft_put64(p + 72, m->read_round);
    uint8_t *q = p + RAFT_CODEC_HEADER;
    for (uint32_t i = 0; i < m->entry_count; i++) {
        const struct raft_entry *e = &m->entries[i];
        raft_put64(q, e->term);
        raft_put32(q + 8, e->length);
        if (e->length)
            memcpy(q + RAFT_CODEC_ENTRY_HEADER, e->data, e->length);
        q += RAFT_CODEC_ENTRY_HEADER + e->length;
    }
    raft_put32(q, cluster_crc32c(0, p, total - 4));
    *buf = p;
    *length = total;
    return CLUSTER_OK;
}

int raft_message_decode(const uint8_t *buf, size_t length, struct raft_message *m)
{
    memset(m, 0, sizeof *m);
    if (!buf || length < RAFT_CODEC_HEADER + 4)
        return CLUSTER_E_INVALID;
    if (memcmp(buf, "RFTM", 4) != 0 || buf[4] != RAFT_CODEC_VERSION)
        return CLUSTER_E_INVALID;
    if (buf[5] < RAFT_MSG_PRE_VOTE || buf[5] > RAFT_MSG_TIMEOUT_NOW)
        return CLUSTER_E_INVALID;
    if ((buf[6] & ~1u) != 0 || buf[7] != 0)
        return CLUSTER_E_INVALID;
    if (raft_get32(buf + 12) != length)
        return CLUSTER_E_INVALID;
    if (raft_get32(buf + length - 4) != cluster_crc32c(0, buf, length - 4))
        return CLUSTER_E_INVALID;
    uint32_t n = raft_get32(buf + 8);
    /* Each entry takes at least its 12-byte header: bound n before allocating. */
    if (n > (length - RAFT_CODEC_HEADER - 4) / RAFT_CODEC_ENTRY_HEADER)
        return CLUSTER_E_INVALID;
    struct raft_entry *entries = NULL; /* owned by the caller on success */
    if (n) {
        entries = calloc(n, sizeof *entries);
        if (!entries)
            return CLUSTER_E_NO_MEMORY;
    }
    const uint8_t *q = buf + RAFT_CODEC_HEADER;
    const uint8_t *end = buf + length - 4;
    for (uint32_t i = 0; i < n; i++) {
        if ((size_t)(end - q) < RAFT_CODEC_ENTRY_HEADER)
            goto invalid;
        entries[i].term = raft_get64(q);
        entries[i].length = raft_get32(q + 8);
        q += RAFT_CODEC_ENTRY_HEADER;
        if ((size_t)(end - q) < entries[i].length)
            goto invalid;
        entries[i].data = entries[i].length ? q : NULL;
        q += entries[i].length;
    }
    if (q != end)
        goto invalid;
    m->type = (enum raft_message_type)buf[5];
    m->granted = buf[6] & 1;
    m->entry_count = n;
    m->entries = entries;
    m->from = raft_get64(buf + 16);
    m->to = raft_get64(buf + 24);
    m->term = raft_get64(buf + 32);
    m->log_index = raft_get64(buf + 40);
    m->log_term = raft_get64(buf + 48);
    m->commit_index = raft_get64(buf + 56);
    m->match_index = raft_get64(buf + 64);
    m->read_round = raft_get64(buf + 72);
    return CLUSTER_OK;
invalid:
    free(entries);
    return CLUSTER_E_INVALID;
}
