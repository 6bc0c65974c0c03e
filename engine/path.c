/* path.c: znode path validation with ZooKeeper's PathUtils.validatePath semantics (see
 * path.h), applied to strictly decoded UTF-8.
 *
 * ZooKeeper validates a sequential prefix by validating prefix + "1" (the counter that
 * will follow). We do the same without copying: the scan runs over a virtual string
 * whose byte at `length` is '1'. So "/a/" and "/" are valid prefixes, "/a/." too (it
 * becomes "/a/.0000000001"), but "/a//" is not. */
#include "path.h"

#include "error.h"

#include <stdint.h>
#include <string.h>

#define PATH_RESERVED "/zookeeper"
#define PATH_RESERVED_LENGTH (sizeof(PATH_RESERVED) - 1)

/* The refused code points of path.h. Supplementary ones (> U+FFFF) are refused by the
 * decoder before they get here. */
static int path_code_point_refused(uint32_t c)
{
    return c <= 0x1f || (c >= 0x7f && c <= 0x9f) || (c >= 0xd800 && c <= 0xf8ff) ||
           (c >= 0xfff0 && c <= 0xffff);
}

/* Decodes one UTF-8 sequence of 2 or 3 bytes starting at p[0] (a lead byte >= 0x80),
 * strictly: no stray continuation byte, no overlong form, no surrogate; 4-byte forms
 * (U+10000 and up) are refused outright since ZooKeeper refuses those characters.
 * Returns the sequence length, 0 when invalid; *cp receives the code point. */
static size_t path_utf8_decode(const unsigned char *p, size_t avail, uint32_t *cp)
{
    unsigned char b0 = p[0];
    if (b0 >= 0xc2 && b0 <= 0xdf) { /* 0xc0, 0xc1 only start overlong forms */
        if (avail < 2 || (p[1] & 0xc0) != 0x80)
            return 0;
        *cp = (uint32_t)(b0 & 0x1f) << 6 | (uint32_t)(p[1] & 0x3f);
        return 2;
    }
    if (b0 >= 0xe0 && b0 <= 0xef) {
        if (avail < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        uint32_t c =
            (uint32_t)(b0 & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 | (uint32_t)(p[2] & 0x3f);
        if (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))
            return 0; /* overlong, or a UTF-16 surrogate encoded as UTF-8 */
        *cp = c;
        return 3;
    }
    return 0; /* continuation byte, 0xc0/0xc1, or a 4-byte (or longer) lead */
}

const char *path_problem(const char *path, size_t length, bool sequential)
{
    const unsigned char *p = (const unsigned char *)path;
    /* The virtual string: path followed by '1' when sequential. */
    size_t n = length + (sequential ? 1 : 0);
    size_t final_length = length + (sequential ? PATH_SEQUENTIAL_DIGITS : 0);

    if (path == NULL || length == 0)
        return "the path is empty";
    if (p[0] != '/')
        return "the path must start with /";
    /* The bound holds for the path the node will have, counter included. */
    if (final_length > PATH_MAX_BYTES)
        return "the path is longer than 4096 bytes";
    if (n == 1)
        return NULL; /* "/" */
    if (!sequential && p[length - 1] == '/')
        return "the path must not end with / (except the root)";

#define PATH_AT(i) ((i) < length ? p[(i)] : (unsigned char)'1')
    for (size_t i = 1; i < n;) {
        unsigned char c = PATH_AT(i);
        if (c == '/') {
            if (PATH_AT(i - 1) == '/')
                return "the path has an empty segment (//)";
            i++;
            continue;
        }
        if (c == '.' && PATH_AT(i - 1) == '/') {
            /* "." or ".." as a whole segment; "..." and ".a" are ordinary names. */
            size_t end = i + 1;
            if (end < n && PATH_AT(end) == '.')
                end++;
            if (end == n || PATH_AT(end) == '/')
                return "the path has a . or .. segment";
        }
        if (c < 0x80) {
            if (path_code_point_refused(c))
                return "the path contains a control character";
            i++;
            continue;
        }
        /* i < length here: the virtual byte is ASCII. */
        uint32_t cp = 0;
        size_t used = path_utf8_decode(p + i, length - i, &cp);
        if (used == 0)
            return "the path is not valid UTF-8, or has a character above U+FFFF";
        if (path_code_point_refused(cp))
            return "the path contains a character ZooKeeper refuses (control, surrogate, "
                   "private use or U+FFF0..U+FFFF)";
        i += used;
    }
#undef PATH_AT
    return NULL;
}

int path_validate(const char *path, size_t length, bool sequential)
{
    return path_problem(path, length, sequential) ? CORRAL_E_BAD_ARGUMENTS : 0;
}

bool path_is_reserved(const char *path, size_t length)
{
    return length >= PATH_RESERVED_LENGTH &&
           memcmp(path, PATH_RESERVED, PATH_RESERVED_LENGTH) == 0 &&
           (length == PATH_RESERVED_LENGTH || path[PATH_RESERVED_LENGTH] == '/');
}

size_t path_parent_length(const char *path, size_t length)
{
    size_t slash = path_name_offset(path, length) - 1;
    return slash == 0 ? 1 : slash;
}

size_t path_name_offset(const char *path, size_t length)
{
    /* A valid non-root path has a '/' at 0, so the scan always stops. */
    size_t i = length;
    while (i > 0 && path[i - 1] != '/')
        i--;
    return i;
}
