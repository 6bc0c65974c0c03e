/* path.h: znode path rules, as ZooKeeper's PathUtils.validatePath.
 *
 * A path is absolute ("/" or "/a/b"), has no empty segment, no trailing "/" except
 * the root, no "." or ".." segment, is valid UTF-8 and contains none of the characters
 * ZooKeeper refuses: U+0000..U+001F, U+007F..U+009F, U+D800..U+F8FF (ZooKeeper sees
 * supplementary characters as surrogates, so they are refused too), U+FFF0..U+FFFF.
 * Paths are bounded by PATH_MAX_BYTES so that one request cannot make the server
 * build unbounded keys. */
#ifndef CORRAL_PATH_H
#define CORRAL_PATH_H

#include <stdbool.h>
#include <stddef.h>

#define PATH_MAX_BYTES 4096
/* The sequential suffix: 10 zero-padded digits of the parent's cversion. */
#define PATH_SEQUENTIAL_DIGITS 10

/* Returns 0 when path[0..length) is a valid znode path, else CORRAL_E_BAD_ARGUMENTS.
 * With sequential, the path is a prefix to which the server appends the counter, so
 * a trailing "/" is allowed (ZooKeeper: create("/a/", SEQUENTIAL) -> "/a/0000000001"). */
int path_validate(const char *path, size_t length, bool sequential);

/* Why a path is invalid, in words for the client (static storage), or NULL when it
 * is valid (path_validate's verdict). */
const char *path_problem(const char *path, size_t length, bool sequential);

/* True for "/zookeeper" and everything under it: reserved, clients cannot change it. */
bool path_is_reserved(const char *path, size_t length);

/* Length of the parent's path ("/a/b" -> 2 for "/a", "/a" -> 1 for "/"). The path must
 * be valid and not the root. */
size_t path_parent_length(const char *path, size_t length);

/* Offset of the last segment's name ("/a/b" -> 3). The path must not be the root. */
size_t path_name_offset(const char *path, size_t length);

#endif
