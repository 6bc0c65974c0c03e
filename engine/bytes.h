/* bytes.h: a growable byte buffer and little-endian field helpers, shared by the
 * on-disk and on-wire formats of the engine (txn, tree image, snapshot). Every format
 * is written field by field in little endian, never by dumping structs, so files are
 * portable and a format version can change one field at a time. */
#ifndef CORRAL_BYTES_H
#define CORRAL_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable buffer. Zero-initialise, append, then either take data (caller frees it
 * with free()) or bytes_free(). After an allocation failure the buffer is marked
 * failed, further appends are no-ops and bytes_failed() tells. */
struct bytes {
    uint8_t *data;
    size_t length;
    size_t capacity;
    bool failed;
};

void bytes_free(struct bytes *b);
bool bytes_failed(const struct bytes *b);
/* Makes room for n more bytes; returns a pointer to write them at (length is advanced
 * by n), or NULL after an allocation failure. */
uint8_t *bytes_extend(struct bytes *b, size_t n);
/* Makes room for n more bytes without appending them, so that appends up to that much
 * neither copy nor fault pages in piecemeal. Returns false after an allocation
 * failure (and marks the buffer failed). */
bool bytes_reserve(struct bytes *b, size_t n);
void bytes_put(struct bytes *b, const void *src, size_t n);
void bytes_put_u8(struct bytes *b, uint8_t v);
void bytes_put_u16(struct bytes *b, uint16_t v);
void bytes_put_u32(struct bytes *b, uint32_t v);
void bytes_put_u64(struct bytes *b, uint64_t v);
/* A u32 length followed by the bytes. */
void bytes_put_blob(struct bytes *b, const void *src, uint32_t n);

/* A bounds-checked reader over borrowed bytes. Reads past the end set failed and
 * return zeros, so a decoder checks once at the end (or wherever it must stop). */
struct bytes_reader {
    const uint8_t *data;
    size_t length;
    size_t offset;
    bool failed;
};

void bytes_reader_init(struct bytes_reader *r, const void *data, size_t length);
uint8_t bytes_get_u8(struct bytes_reader *r);
uint16_t bytes_get_u16(struct bytes_reader *r);
uint32_t bytes_get_u32(struct bytes_reader *r);
uint64_t bytes_get_u64(struct bytes_reader *r);
/* Returns a pointer into the reader's data (borrowed) to n bytes, or NULL. */
const uint8_t *bytes_get(struct bytes_reader *r, size_t n);
/* Reads a u32 length and returns the blob (borrowed); *n receives its length. */
const uint8_t *bytes_get_blob(struct bytes_reader *r, uint32_t *n);

/* Little-endian stores and loads on raw memory. */
static inline void bytes_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void bytes_store_u64(uint8_t *p, uint64_t v)
{
    bytes_store_u32(p, (uint32_t)v);
    bytes_store_u32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t bytes_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t bytes_load_u64(const uint8_t *p)
{
    return (uint64_t)bytes_load_u32(p) | (uint64_t)bytes_load_u32(p + 4) << 32;
}

#endif
