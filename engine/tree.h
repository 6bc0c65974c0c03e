/* tree.h: the znode tree and ZooKeeper's stat rules.
 *
 * The tree is a plain in-memory tree. Each node keeps its children in an array sorted
 * by name (bytewise), which gives path lookup by binary search per segment, sorted
 * children lists for free, and cheap appends for sequential names (they sort last).
 * There is no global path index: a lookup walks the segments, which costs a few
 * comparisons per level and saves a full path copy per node (memory per znode matters:
 * ZooKeeper spends about 400 bytes per small znode and we aim for less).
 *
 * The tree only changes through tree_node_create / tree_node_set_data /
 * tree_node_delete, which apply the stat rules:
 *   create:  node czxid = mzxid = pzxid = zxid, ctime = mtime = time, versions 0;
 *            parent cversion += 1, pzxid = zxid, numChildren += 1.
 *   set:     version += 1, mzxid = zxid, mtime = time.
 *   delete:  parent cversion += 1, pzxid = zxid, numChildren -= 1.
 * These are called only by the engine's apply step, with the zxid and time carried by
 * the txn, so every replica computes the same tree.
 *
 * Nodes are owned by the tree. A `const struct znode *` handed out is borrowed until
 * the next change to the tree (in practice: until the caller returns to the event
 * loop). */
#ifndef CORRAL_TREE_H
#define CORRAL_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"

enum znode_flag {
    ZNODE_EPHEMERAL = 1u << 0,
    ZNODE_CONTAINER = 1u << 1,
    ZNODE_TTL = 1u << 2,
};

/* The stat of ZooKeeper, as clients see it. */
struct znode_stat {
    uint64_t czxid;
    uint64_t mzxid;
    uint64_t pzxid;
    int64_t ctime;
    int64_t mtime;
    int32_t version;
    int32_t cversion;
    int32_t aversion;
    uint64_t ephemeral_owner;
    uint32_t data_length;
    uint32_t num_children;
};

struct znode {
    struct znode *parent;    /* NULL for the root */
    struct znode **children; /* sorted by name; owned */
    uint32_t child_count;
    uint32_t child_capacity;
    uint8_t *data; /* owned, NULL when data_length is 0 */
    uint32_t data_length;
    uint32_t flags; /* enum znode_flag */
    int32_t version;
    int32_t cversion;
    int32_t aversion;
    /* Index in the tree's list of reapable (container and TTL) nodes, or UINT32_MAX. */
    uint32_t reap_index;
    uint64_t czxid;
    uint64_t mzxid;
    uint64_t pzxid;
    int64_t ctime;
    int64_t mtime;
    uint64_t ephemeral_owner; /* session id, 0 if not ephemeral */
    int64_t ttl_ms;           /* TTL nodes only */
    uint32_t name_length;
    char name[]; /* NUL-terminated segment name; "" for the root */
};

struct tree;

/* A new tree holding only the root "/" and the reserved "/zookeeper". Returns NULL
 * when out of memory. Owned by the caller (tree_destroy). */
struct tree *tree_create(void);
void tree_destroy(struct tree *t);

/* Number of nodes, root and /zookeeper included. */
uint64_t tree_node_count(const struct tree *t);
/* Bytes of znode data held, summed. */
uint64_t tree_data_bytes(const struct tree *t);
/* The exact size of tree_encode's image, without encoding it. */
uint64_t tree_image_bytes(const struct tree *t);

struct znode *tree_root(struct tree *t);

/* Finds the node at a valid path, or NULL. */
struct znode *tree_lookup(struct tree *t, const char *path, size_t length);

/* Finds a direct child by name, or NULL. */
struct znode *tree_child_find(const struct znode *parent, const char *name, size_t length);

/* The stat of a node. */
void znode_stat_get(const struct znode *n, struct znode_stat *out);

/* Writes the node's full path into out (NUL-terminated) and returns its length, or
 * the length it needs (without the NUL) when that does not fit in capacity. */
size_t znode_path_get(const struct znode *n, char *out, size_t capacity);

/* Creates the child `name` of parent with a copy of data, applying the stat rules
 * above. flags/owner/ttl as in struct znode. The name must not exist (the engine has
 * checked). Returns the node (owned by the tree) or NULL when out of memory, in which
 * case the tree is unchanged. */
struct znode *tree_node_create(struct tree *t, struct znode *parent, const char *name,
                               size_t name_length, const void *data, uint32_t data_length,
                               uint32_t flags, uint64_t ephemeral_owner, int64_t ttl_ms,
                               uint64_t zxid, int64_t time_ms);

/* Replaces the data (copied) and applies the set rules. Returns 0 or
 * CORRAL_E_NO_MEMORY (node unchanged). */
int tree_node_set_data(struct tree *t, struct znode *n, const void *data, uint32_t data_length,
                       uint64_t zxid, int64_t time_ms);

/* Deletes a childless, non-root node and applies the delete rules. The node is freed. */
void tree_node_delete(struct tree *t, struct znode *n, uint64_t zxid);

/* The reapable nodes (containers and TTL nodes), for the reaper. Borrowed until the
 * next change to the tree. */
struct znode *const *tree_reapable(const struct tree *t, size_t *count);

/* Calls fn for every node in pre-order (a parent before its children, children in
 * name order). Stops and returns fn's value when it returns non-zero. */
int tree_walk(struct tree *t, int (*fn)(void *arg, struct znode *n, uint32_t depth), void *arg);

/* Image of the whole tree for a snapshot: appends to out (see the format in tree.c).
 * Returns 0 or CORRAL_E_NO_MEMORY. */
int tree_encode(struct tree *t, struct bytes *out);
/* The same image in pieces: whenever out holds chunk bytes or more, flush(arg, out)
 * takes them (and empties out) before the next node goes in; the last piece stays in
 * out. Returns 0, CORRAL_E_NO_MEMORY, or flush's first non-zero return. */
int tree_encode_chunked(struct tree *t, struct bytes *out, size_t chunk,
                        int (*flush)(void *arg, struct bytes *out), void *arg);

/* Rebuilds a tree from an image made by tree_encode. Returns 0 with *out a new tree
 * owned by the caller, CORRAL_E_CORRUPT when the image is malformed, or NO_MEMORY. */
int tree_decode(struct bytes_reader *in, struct tree **out);

#endif
