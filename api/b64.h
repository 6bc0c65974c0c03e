/* b64.h: RFC 4648 base64 (standard alphabet, with padding), strict decoding.
 *
 * znode data is arbitrary bytes but JSON strings must be UTF-8, so binary data goes
 * over the API as base64. Decoding is strict on purpose: a client that sends a
 * malformed string gets 400 instead of silently different bytes. */
#ifndef CORRAL_API_B64_H
#define CORRAL_API_B64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Characters needed to encode n bytes (without a terminating NUL). */
static inline size_t b64_encoded_length(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Upper bound of the bytes a string of n characters decodes to. */
static inline size_t b64_decoded_max(size_t n)
{
    return n / 4 * 3;
}

/* Encodes in[0..n) into out, which must hold b64_encoded_length(n) + 1 characters;
 * writes a terminating NUL. Returns the number of characters written (without NUL). */
size_t b64_encode(const void *in, size_t n, char *out);

/* Decodes in[0..n) into out, which must hold b64_decoded_max(n) bytes. Rejects a
 * length that is not a multiple of 4, characters outside the alphabet, misplaced or
 * excess padding, and non-canonical trailing bits ("QR==" for "QQ=="). Returns true
 * with *out_length set, or false (out contents unspecified). */
bool b64_decode(const char *in, size_t n, uint8_t *out, size_t *out_length);

#endif
