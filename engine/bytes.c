/* bytes.c: growable buffer and bounds-checked little-endian reader (see bytes.h). */
#include "bytes.h"

#include <stdlib.h>
#include <string.h>

void bytes_free(struct bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->length = b->capacity = 0;
    b->failed = false;
}

bool bytes_failed(const struct bytes *b)
{
    return b->failed;
}

uint8_t *bytes_extend(struct bytes *b, size_t n)
{
    if (b->failed)
        return NULL;
    if (b->capacity - b->length < n) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (capacity - b->length < n) {
            if (capacity > SIZE_MAX / 2) {
                b->failed = true;
                return NULL;
            }
            capacity *= 2;
        }
        uint8_t *grown = realloc(b->data, capacity);
        if (!grown) {
            b->failed = true;
            return NULL;
        }
        b->data = grown;
        b->capacity = capacity;
    }
    uint8_t *at = b->data + b->length;
    b->length += n;
    return at;
}

bool bytes_reserve(struct bytes *b, size_t n)
{
    if (bytes_extend(b, n) == NULL)
        return false;
    b->length -= n;
    return true;
}

void bytes_put(struct bytes *b, const void *src, size_t n)
{
    uint8_t *at = bytes_extend(b, n);
    if (at && n)
        memcpy(at, src, n);
}

void bytes_put_u8(struct bytes *b, uint8_t v)
{
    uint8_t *at = bytes_extend(b, 1);
    if (at)
        *at = v;
}

void bytes_put_u16(struct bytes *b, uint16_t v)
{
    uint8_t *at = bytes_extend(b, 2);
    if (at) {
        at[0] = (uint8_t)v;
        at[1] = (uint8_t)(v >> 8);
    }
}

void bytes_put_u32(struct bytes *b, uint32_t v)
{
    uint8_t *at = bytes_extend(b, 4);
    if (at)
        bytes_store_u32(at, v);
}

void bytes_put_u64(struct bytes *b, uint64_t v)
{
    uint8_t *at = bytes_extend(b, 8);
    if (at)
        bytes_store_u64(at, v);
}

void bytes_put_blob(struct bytes *b, const void *src, uint32_t n)
{
    bytes_put_u32(b, n);
    bytes_put(b, src, n);
}

void bytes_reader_init(struct bytes_reader *r, const void *data, size_t length)
{
    r->data = data;
    r->length = length;
    r->offset = 0;
    r->failed = false;
}

const uint8_t *bytes_get(struct bytes_reader *r, size_t n)
{
    if (r->failed || r->length - r->offset < n) {
        r->failed = true;
        return NULL;
    }
    const uint8_t *at = r->data + r->offset;
    r->offset += n;
    return at;
}

uint8_t bytes_get_u8(struct bytes_reader *r)
{
    const uint8_t *p = bytes_get(r, 1);
    return p ? p[0] : 0;
}

uint16_t bytes_get_u16(struct bytes_reader *r)
{
    const uint8_t *p = bytes_get(r, 2);
    return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

uint32_t bytes_get_u32(struct bytes_reader *r)
{
    const uint8_t *p = bytes_get(r, 4);
    return p ? bytes_load_u32(p) : 0;
}

uint64_t bytes_get_u64(struct bytes_reader *r)
{
    const uint8_t *p = bytes_get(r, 8);
    return p ? bytes_load_u64(p) : 0;
}

const uint8_t *bytes_get_blob(struct bytes_reader *r, uint32_t *n)
{
    *n = bytes_get_u32(r);
    const uint8_t *p = bytes_get(r, *n);
    if (!p)
        *n = 0;
    return p;
}
