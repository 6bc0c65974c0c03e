/* tree.c: the znode tree of tree.h, its stat rules, and its snapshot image.
 *
 * Image format (little endian), appended by tree_encode to a snapshot body:
 *   OFFSET SIZE DESCRIPTION
 *   0      4    image format version (1)
 *   4      4    reserved, zero
 *   8      8    node count N (root and /zookeeper included)
 *   16     ...  N node records in pre-order (a parent before its children, children in
 *               strictly increasing bytewise name order), each:
 *                 0   4  depth: 0 for the root (first record, and only it), else
 *                        1 <= depth <= depth of the previous record + 1; the parent
 *                        is the last record seen at depth - 1
 *                 4   4  name length (0 for the root only; no '/' or NUL inside)
 *                 8   4  flags (enum znode_flag)
 *                 12  4  data length
 *                 16  4  version
 *                 20  4  cversion
 *                 24  4  aversion
 *                 28  4  reserved, zero
 *                 32  8  czxid
 *                 40  8  mzxid
 *                 48  8  pzxid
 *                 56  8  ctime (ms)
 *                 64  8  mtime (ms)
 *                 72  8  ephemeral owner
 *                 80  8  ttl ms
 *                 88  n  name
 *                 88+n m data
 * numChildren and dataLength are not stored: they follow from the records. The
 * reapable list is rebuilt from the flags.
 *
 * Why pre-order with depth: the decoder keeps only the last node per depth, appends
 * each node to its parent's children array (the names arrive sorted, so no search and
 * no memmove), and checks the order with one comparison against the previous sibling.
 * That makes decoding linear: about one pass and two mallocs per node.
 *
 * Memory per node (x86-64, glibc): the struct is 116 bytes + the name + NUL in one
 * malloc, the data in a second malloc only when non-empty, and 8 bytes in the parent's
 * children array (plus up to 2x slack from geometric growth). Leaves have no children
 * array at all. Measured with glibc (test_tree): 264 bytes per node for 11-byte names and
 * 100-byte data, malloc overhead included (node chunk 144 + data chunk 112 + 8). */
#include "tree.h"

#include "error.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define TREE_IMAGE_VERSION 1
#define TREE_RECORD_SIZE 88
#define TREE_CHILDREN_INITIAL 4
#define TREE_WALK_STACK 256

struct tree {
    struct znode *root; /* owned, with the whole tree under it */
    uint64_t node_count;
    uint64_t data_bytes;
    uint64_t name_bytes; /* names summed: with the two above, the image's exact size */
    /* Container and TTL nodes, in no particular order; node->reap_index is the
     * position of node in this array. Owned array, borrowed nodes. */
    struct znode **reapable;
    uint32_t reap_count;
    uint32_t reap_capacity;
};

/* Bytewise name order: memcmp on the common length, then the shorter first. */
static int tree_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t min = alen < blen ? alen : blen;
    int c = min ? memcmp(a, b, min) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* Binary search among parent's children. Returns true when found, with *index its
 * position; otherwise *index is where it would be inserted. */
static bool tree_child_search(const struct znode *parent, const char *name, size_t length,
                              uint32_t *index)
{
    uint32_t lo = 0, hi = parent->child_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const struct znode *c = parent->children[mid];
        int cmp = tree_name_cmp(c->name, c->name_length, name, length);
        if (cmp == 0) {
            *index = mid;
            return true;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *index = lo;
    return false;
}

/* Allocates a detached node with its name inline (one malloc, owned by the caller until
 * attached) and zeroed fields. Data is not set. */
static struct znode *tree_node_alloc(const char *name, size_t name_length)
{
    if (name_length > UINT32_MAX)
        return NULL;
    /* At least sizeof(struct znode): a shorter block (the root: 117 bytes) would hold
     * every member, but accessing it through a struct pointer is not strictly valid C,
     * and GCC's -Warray-bounds says so. Names of 3+ bytes are unaffected. */
    size_t size = offsetof(struct znode, name) + name_length + 1;
    if (size < sizeof(struct znode))
        size = sizeof(struct znode);
    struct znode *n = malloc(size);
    if (!n)
        return NULL;
    memset(n, 0, offsetof(struct znode, name));
    if (name_length)
        memcpy(n->name, name, name_length);
    n->name[name_length] = '\0';
    n->name_length = (uint32_t)name_length;
    n->reap_index = UINT32_MAX;
    return n;
}

static void tree_node_free(struct znode *n)
{
    free(n->children);
    free(n->data);
    free(n);
}

/* Makes room for one more child. Returns 0 or CORRAL_E_NO_MEMORY (node unchanged). */
static int tree_children_reserve(struct znode *parent)
{
    if (parent->child_count < parent->child_capacity)
        return 0;
    if (parent->child_capacity > UINT32_MAX / 2)
        return CORRAL_E_NO_MEMORY;
    uint32_t cap = parent->child_capacity ? parent->child_capacity * 2 : TREE_CHILDREN_INITIAL;
    struct znode **grown = realloc(parent->children, (size_t)cap * sizeof(*grown));
    if (!grown)
        return CORRAL_E_NO_MEMORY;
    parent->children = grown;
    parent->child_capacity = cap;
    return 0;
}

/* Gives memory back after many deletes: at a quarter full, halve; empty, free. Shrinking
 * is an optimisation, so a failed realloc just keeps the larger array. */
static void tree_children_shrink(struct znode *parent)
{
    if (parent->child_count == 0) {
        free(parent->children);
        parent->children = NULL;
        parent->child_capacity = 0;
        return;
    }
    if (parent->child_capacity <= TREE_CHILDREN_INITIAL ||
        parent->child_count > parent->child_capacity / 4)
        return;
    uint32_t cap = parent->child_capacity / 2;
    struct znode **shrunk = realloc(parent->children, (size_t)cap * sizeof(*shrunk));
    if (shrunk) {
        parent->children = shrunk;
        parent->child_capacity = cap;
    }
}

static int tree_reapable_reserve(struct tree *t)
{
    if (t->reap_count < t->reap_capacity)
        return 0;
    if (t->reap_capacity > UINT32_MAX / 4)
        return CORRAL_E_NO_MEMORY;
    uint32_t cap = t->reap_capacity ? t->reap_capacity * 2 : 16;
    struct znode **grown = realloc(t->reapable, (size_t)cap * sizeof(*grown));
    if (!grown)
        return CORRAL_E_NO_MEMORY;
    t->reapable = grown;
    t->reap_capacity = cap;
    return 0;
}

static bool tree_flags_reapable(uint32_t flags)
{
    return (flags & (ZNODE_CONTAINER | ZNODE_TTL)) != 0;
}

/* Room must have been reserved (tree_reapable_reserve). */
static void tree_reapable_add(struct tree *t, struct znode *n)
{
    assert(t->reap_count < t->reap_capacity);
    n->reap_index = t->reap_count;
    t->reapable[t->reap_count++] = n;
}

/* Swap-remove: the last entry takes n's place, and learns its new index. */
static void tree_reapable_remove(struct tree *t, struct znode *n)
{
    uint32_t i = n->reap_index;
    assert(i < t->reap_count && t->reapable[i] == n);
    struct znode *last = t->reapable[--t->reap_count];
    t->reapable[i] = last;
    last->reap_index = i;
    n->reap_index = UINT32_MAX;
}

/* Wrapping increment: ZooKeeper's int versions wrap too, and signed overflow is UB. */
static int32_t tree_inc32(int32_t v)
{
    return (int32_t)((uint32_t)v + 1u);
}

struct tree *tree_create(void)
{
    struct tree *t = calloc(1, sizeof(*t)); /* owned by the caller: tree_destroy */
    if (!t)
        return NULL;
    t->root = tree_node_alloc("", 0);
    struct znode *zk = tree_node_alloc("zookeeper", 9);
    if (!t->root || !zk || tree_children_reserve(t->root) != 0) {
        free(zk);
        tree_destroy(t);
        return NULL;
    }
    /* /zookeeper is attached directly, as ZooKeeper's DataTree does: it exists from
     * zxid 0, before any txn, so it leaves the root's cversion and pzxid at 0. */
    zk->parent = t->root;
    t->root->children[t->root->child_count++] = zk;
    t->node_count = 2;
    t->name_bytes = zk->name_length;
    return t;
}

void tree_destroy(struct tree *t)
{
    if (!t)
        return;
    /* Post-order without a stack: descend to a last child, free it, climb to its parent
     * and repeat. child_count is consumed on the way, which is fine: all goes. */
    struct znode *n = t->root;
    while (n) {
        if (n->child_count > 0) {
            n = n->children[n->child_count - 1];
            continue;
        }
        struct znode *parent = n->parent;
        tree_node_free(n);
        if (parent)
            parent->child_count--;
        n = parent;
    }
    free(t->reapable);
    free(t);
}

uint64_t tree_node_count(const struct tree *t)
{
    return t->node_count;
}

uint64_t tree_data_bytes(const struct tree *t)
{
    return t->data_bytes;
}

uint64_t tree_image_bytes(const struct tree *t)
{
    return 16 + t->node_count * TREE_RECORD_SIZE + t->name_bytes + t->data_bytes;
}

struct znode *tree_root(struct tree *t)
{
    return t->root;
}

struct znode *tree_child_find(const struct znode *parent, const char *name, size_t length)
{
    uint32_t i;
    return tree_child_search(parent, name, length, &i) ? parent->children[i] : NULL;
}

struct znode *tree_lookup(struct tree *t, const char *path, size_t length)
{
    struct znode *n = t->root;
    size_t i = 1; /* path[0] is '/'; "/" alone is the root */
    while (n && i < length) {
        const char *seg = path + i;
        const char *slash = memchr(seg, '/', length - i);
        size_t seg_len = slash ? (size_t)(slash - seg) : length - i;
        n = tree_child_find(n, seg, seg_len);
        i += seg_len + 1;
    }
    return n;
}

void znode_stat_get(const struct znode *n, struct znode_stat *out)
{
    out->czxid = n->czxid;
    out->mzxid = n->mzxid;
    out->pzxid = n->pzxid;
    out->ctime = n->ctime;
    out->mtime = n->mtime;
    out->version = n->version;
    out->cversion = n->cversion;
    out->aversion = n->aversion;
    out->ephemeral_owner = n->ephemeral_owner;
    out->data_length = n->data_length;
    out->num_children = n->child_count;
}

size_t znode_path_get(const struct znode *n, char *out, size_t capacity)
{
    if (!n->parent) {
        if (capacity >= 2)
            memcpy(out, "/", 2);
        return 1;
    }
    size_t length = 0;
    for (const struct znode *p = n; p->parent; p = p->parent)
        length += (size_t)p->name_length + 1;
    if (length + 1 > capacity)
        return length;
    /* Written from the end: each name, then the '/' before it. */
    size_t at = length;
    out[at] = '\0';
    for (const struct znode *p = n; p->parent; p = p->parent) {
        at -= p->name_length;
        memcpy(out + at, p->name, p->name_length);
        out[--at] = '/';
    }
    assert(at == 0);
    return length;
}

struct znode *tree_node_create(struct tree *t, struct znode *parent, const char *name,
                               size_t name_length, const void *data, uint32_t data_length,
                               uint32_t flags, uint64_t ephemeral_owner, int64_t ttl_ms,
                               uint64_t zxid, int64_t time_ms)
{
    uint32_t index;
    bool exists;
    /* Fast path: sequential names (and most bulk loads) sort after the last child. */
    if (parent->child_count == 0) {
        index = 0;
        exists = false;
    } else {
        const struct znode *last = parent->children[parent->child_count - 1];
        int cmp = tree_name_cmp(last->name, last->name_length, name, name_length);
        if (cmp < 0) {
            index = parent->child_count;
            exists = false;
        } else {
            exists = tree_child_search(parent, name, name_length, &index);
        }
    }
    assert(!exists && "the engine checks that the name is free");
    (void)exists;

    /* Every allocation first, so a failure leaves the tree unchanged (growing an array
     * does not change the tree). */
    struct znode *n = tree_node_alloc(name, name_length);
    uint8_t *copy = NULL;
    if (!n)
        return NULL;
    if (data_length > 0) {
        copy = malloc(data_length); /* owned by n */
        if (!copy)
            goto fail;
        memcpy(copy, data, data_length);
    }
    if (tree_children_reserve(parent) != 0)
        goto fail;
    if (tree_flags_reapable(flags) && tree_reapable_reserve(t) != 0)
        goto fail;

    n->parent = parent;
    n->data = copy;
    n->data_length = data_length;
    n->flags = flags;
    n->ephemeral_owner = ephemeral_owner;
    n->ttl_ms = ttl_ms;
    n->czxid = n->mzxid = n->pzxid = zxid;
    n->ctime = n->mtime = time_ms;

    if (index < parent->child_count)
        memmove(parent->children + index + 1, parent->children + index,
                (size_t)(parent->child_count - index) * sizeof(*parent->children));
    parent->children[index] = n;
    parent->child_count++;
    parent->cversion = tree_inc32(parent->cversion);
    parent->pzxid = zxid;

    if (tree_flags_reapable(flags))
        tree_reapable_add(t, n);
    t->node_count++;
    t->data_bytes += data_length;
    t->name_bytes += name_length;
    return n;

fail:
    free(copy);
    free(n);
    return NULL;
}

int tree_node_set_data(struct tree *t, struct znode *n, const void *data, uint32_t data_length,
                       uint64_t zxid, int64_t time_ms)
{
    uint8_t *copy = NULL;
    if (data_length > 0) {
        copy = malloc(data_length); /* owned by n */
        if (!copy)
            return CORRAL_E_NO_MEMORY;
        memcpy(copy, data, data_length);
    }
    t->data_bytes = t->data_bytes - n->data_length + data_length;
    free(n->data);
    n->data = copy;
    n->data_length = data_length;
    n->version = tree_inc32(n->version);
    n->mzxid = zxid;
    n->mtime = time_ms;
    return 0;
}

void tree_node_delete(struct tree *t, struct znode *n, uint64_t zxid)
{
    assert(n->parent != NULL && "the root cannot be deleted");
    assert(n->child_count == 0 && "the engine checks NOT_EMPTY");
    struct znode *parent = n->parent;
    uint32_t index;
    bool found = tree_child_search(parent, n->name, n->name_length, &index);
    assert(found && parent->children[index] == n);
    (void)found;
    memmove(parent->children + index, parent->children + index + 1,
            (size_t)(parent->child_count - index - 1) * sizeof(*parent->children));
    parent->child_count--;
    tree_children_shrink(parent);
    parent->cversion = tree_inc32(parent->cversion);
    parent->pzxid = zxid;

    if (n->reap_index != UINT32_MAX)
        tree_reapable_remove(t, n);
    t->node_count--;
    t->data_bytes -= n->data_length;
    t->name_bytes -= n->name_length;
    tree_node_free(n);
}

struct znode *const *tree_reapable(const struct tree *t, size_t *count)
{
    *count = t->reap_count;
    return t->reapable;
}

int tree_walk(struct tree *t, int (*fn)(void *arg, struct znode *n, uint32_t depth), void *arg)
{
    /* Iterative, so deep trees cannot overflow the C stack, and allocation-free, so a
     * walk cannot fail on its own. next[d] remembers where to resume among the children
     * of the ancestor at depth d. Deeper than TREE_WALK_STACK levels (possible only with
     * names under 15 bytes, as paths are bounded by PATH_MAX_BYTES) the position is
     * recovered by a binary search in the parent instead. fn must not change the tree. */
    uint32_t next[TREE_WALK_STACK];
    struct znode *n = t->root;
    uint32_t depth = 0;
    uint32_t i = 0; /* next child of n to visit */
    int rv = fn(arg, n, 0);
    if (rv != 0)
        return rv;
    for (;;) {
        if (i < n->child_count) {
            if (depth < TREE_WALK_STACK)
                next[depth] = i + 1;
            n = n->children[i];
            depth++;
            i = 0;
            rv = fn(arg, n, depth);
            if (rv != 0)
                return rv;
        } else {
            if (depth == 0)
                return 0;
            const struct znode *done = n;
            n = n->parent;
            depth--;
            if (depth < TREE_WALK_STACK) {
                i = next[depth];
            } else {
                bool found = tree_child_search(n, done->name, done->name_length, &i);
                assert(found);
                (void)found;
                i++;
            }
        }
    }
}

/* tree_encode_chunked's walk: the buffer, and where full chunks go. */
struct tree_encoding {
    struct bytes *out;
    size_t chunk;
    int (*flush)(void *arg, struct bytes *out);
    void *arg;
};

static int tree_encode_node(void *arg, struct znode *n, uint32_t depth)
{
    struct tree_encoding *encoding = arg;
    struct bytes *out = encoding->out;
    if (encoding->flush && out->length >= encoding->chunk) {
        int rc = encoding->flush(encoding->arg, out);
        if (rc != 0)
            return rc;
    }
    uint8_t *p = bytes_extend(out, TREE_RECORD_SIZE + (size_t)n->name_length + n->data_length);
    if (!p)
        return CORRAL_E_NO_MEMORY;
    bytes_store_u32(p + 0, depth);
    bytes_store_u32(p + 4, n->name_length);
    bytes_store_u32(p + 8, n->flags);
    bytes_store_u32(p + 12, n->data_length);
    bytes_store_u32(p + 16, (uint32_t)n->version);
    bytes_store_u32(p + 20, (uint32_t)n->cversion);
    bytes_store_u32(p + 24, (uint32_t)n->aversion);
    bytes_store_u32(p + 28, 0);
    bytes_store_u64(p + 32, n->czxid);
    bytes_store_u64(p + 40, n->mzxid);
    bytes_store_u64(p + 48, n->pzxid);
    bytes_store_u64(p + 56, (uint64_t)n->ctime);
    bytes_store_u64(p + 64, (uint64_t)n->mtime);
    bytes_store_u64(p + 72, n->ephemeral_owner);
    bytes_store_u64(p + 80, (uint64_t)n->ttl_ms);
    memcpy(p + TREE_RECORD_SIZE, n->name, n->name_length);
    if (n->data_length)
        memcpy(p + TREE_RECORD_SIZE + n->name_length, n->data, n->data_length);
    return 0;
}

int tree_encode_chunked(struct tree *t, struct bytes *out, size_t chunk,
                        int (*flush)(void *arg, struct bytes *out), void *arg)
{
    bytes_put_u32(out, TREE_IMAGE_VERSION);
    bytes_put_u32(out, 0);
    bytes_put_u64(out, t->node_count);
    if (bytes_failed(out))
        return CORRAL_E_NO_MEMORY;
    struct tree_encoding encoding = {.out = out, .chunk = chunk, .flush = flush, .arg = arg};
    return tree_walk(t, tree_encode_node, &encoding);
}

int tree_encode(struct tree *t, struct bytes *out)
{
    return tree_encode_chunked(t, out, SIZE_MAX, NULL, NULL);
}

/* Fills a decoded node's fields from its record (name and data are handled by the
 * caller). */
static void tree_decode_fields(struct znode *n, const uint8_t *p)
{
    n->flags = bytes_load_u32(p + 8);
    n->version = (int32_t)bytes_load_u32(p + 16);
    n->cversion = (int32_t)bytes_load_u32(p + 20);
    n->aversion = (int32_t)bytes_load_u32(p + 24);
    n->czxid = bytes_load_u64(p + 32);
    n->mzxid = bytes_load_u64(p + 40);
    n->pzxid = bytes_load_u64(p + 48);
    n->ctime = (int64_t)bytes_load_u64(p + 56);
    n->mtime = (int64_t)bytes_load_u64(p + 64);
    n->ephemeral_owner = bytes_load_u64(p + 72);
    n->ttl_ms = (int64_t)bytes_load_u64(p + 80);
}

int tree_decode(struct bytes_reader *in, struct tree **out)
{
    struct tree *t = NULL;      /* owned here until handed to *out */
    struct znode **last = NULL; /* last[d]: the last node decoded at depth d; owned */
    size_t last_capacity = 0;
    int rv = CORRAL_E_CORRUPT;

    uint32_t version = bytes_get_u32(in);
    (void)bytes_get_u32(in); /* reserved */
    uint64_t count = bytes_get_u64(in);
    if (in->failed || version != TREE_IMAGE_VERSION || count < 1)
        goto out;
    /* Each record takes at least TREE_RECORD_SIZE bytes: a larger count is a lie. */
    if (count > (in->length - in->offset) / TREE_RECORD_SIZE)
        goto out;

    rv = CORRAL_E_NO_MEMORY;
    t = calloc(1, sizeof(*t));
    last_capacity = 64;
    last = malloc(last_capacity * sizeof(*last));
    if (!t || !last)
        goto out;

    uint32_t top = 0; /* depth of the previous record */
    for (uint64_t i = 0; i < count; i++) {
        rv = CORRAL_E_CORRUPT;
        const uint8_t *p = bytes_get(in, TREE_RECORD_SIZE);
        if (!p)
            goto out;
        uint32_t depth = bytes_load_u32(p);
        uint32_t name_length = bytes_load_u32(p + 4);
        uint32_t data_length = bytes_load_u32(p + 12);
        const uint8_t *name = bytes_get(in, name_length);
        const uint8_t *data = bytes_get(in, data_length);
        if (!name || !data)
            goto out;
        /* The root first and only first; then each node at most one level deeper. */
        if ((i == 0) != (depth == 0) || (i == 0) != (name_length == 0) ||
            (i > 0 && depth > top + 1))
            goto out;
        if (name_length && (memchr(name, '/', name_length) || memchr(name, '\0', name_length)))
            goto out;

        struct znode *parent = depth ? last[depth - 1] : NULL;
        if (parent && parent->child_count > 0) {
            const struct znode *prev = parent->children[parent->child_count - 1];
            if (tree_name_cmp(prev->name, prev->name_length, (const char *)name, name_length) >= 0)
                goto out; /* children must come strictly increasing */
        }

        rv = CORRAL_E_NO_MEMORY;
        if (depth >= last_capacity) {
            struct znode **grown = realloc(last, last_capacity * 2 * sizeof(*grown));
            if (!grown)
                goto out;
            last = grown;
            last_capacity *= 2;
        }
        struct znode *n = tree_node_alloc((const char *)name, name_length);
        if (!n)
            goto out;
        if (data_length) {
            n->data = malloc(data_length); /* owned by n */
            if (!n->data) {
                free(n);
                goto out;
            }
            memcpy(n->data, data, data_length);
        }
        n->data_length = data_length;
        tree_decode_fields(n, p);
        if (tree_flags_reapable(n->flags) && tree_reapable_reserve(t) != 0) {
            tree_node_free(n);
            goto out;
        }
        if (parent) {
            if (tree_children_reserve(parent) != 0) {
                tree_node_free(n);
                goto out;
            }
            n->parent = parent;
            parent->children[parent->child_count++] = n;
        } else {
            t->root = n;
        }
        /* Attached from here on: tree_destroy frees it on a later failure. */
        if (tree_flags_reapable(n->flags))
            tree_reapable_add(t, n);
        t->node_count++;
        t->data_bytes += data_length;
        t->name_bytes += name_length;
        last[depth] = n;
        top = depth;
    }
    rv = 0;
out:
    free(last);
    if (rv != 0) {
        tree_destroy(t);
        return rv;
    }
    *out = t;
    return 0;
}
