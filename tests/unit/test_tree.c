/* test_tree.c: unit tests of tree.h: ZooKeeper stat rules, sorted children, lookup,
 * paths, the reapable list, the snapshot image, and a memory-per-node figure. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "path.h"
#include "tree.h"

/* Creates the node at path (its parent must exist). */
static struct znode *mk(struct tree *t, const char *path, const void *data, uint32_t length,
                        uint32_t flags, uint64_t owner, uint64_t zxid, int64_t time_ms)
{
    size_t plen = strlen(path);
    assert_int_equal(path_validate(path, plen, false), 0);
    struct znode *parent = tree_lookup(t, path, path_parent_length(path, plen));
    assert_non_null(parent);
    size_t off = path_name_offset(path, plen);
    struct znode *n = tree_node_create(t, parent, path + off, plen - off, data, length, flags,
                                       owner, flags & ZNODE_TTL ? 5000 : 0, zxid, time_ms);
    assert_non_null(n);
    return n;
}

static struct znode *get(struct tree *t, const char *path)
{
    return tree_lookup(t, path, strlen(path));
}

static void assert_children_sorted(const struct znode *n)
{
    for (uint32_t i = 1; i < n->child_count; i++) {
        const struct znode *a = n->children[i - 1], *b = n->children[i];
        size_t min = a->name_length < b->name_length ? a->name_length : b->name_length;
        int c = memcmp(a->name, b->name, min);
        assert_true(c < 0 || (c == 0 && a->name_length < b->name_length));
        assert_ptr_equal(b->parent, n);
    }
}

static void test_tree_create__root_and_zookeeper(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    assert_non_null(t);
    assert_int_equal(tree_node_count(t), 2);
    assert_int_equal(tree_data_bytes(t), 0);
    struct znode *root = tree_root(t);
    assert_ptr_equal(get(t, "/"), root);
    assert_null(root->parent);
    assert_int_equal(root->name_length, 0);
    struct znode *zk = get(t, "/zookeeper");
    assert_non_null(zk);
    assert_ptr_equal(zk->parent, root);
    struct znode_stat st;
    znode_stat_get(zk, &st);
    assert_int_equal(st.czxid, 0);
    assert_int_equal(st.num_children, 0);
    znode_stat_get(root, &st);
    assert_int_equal(st.num_children, 1);
    assert_int_equal(st.cversion, 0);
    assert_int_equal(st.pzxid, 0);
    size_t count = 99;
    tree_reapable(t, &count);
    assert_int_equal(count, 0);
    tree_destroy(t);
}

static void test_tree_node_create__stat_rules(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    struct znode *a = mk(t, "/a", "hello", 5, 0, 0, 5, 1000);
    struct znode_stat st;
    znode_stat_get(a, &st);
    assert_int_equal(st.czxid, 5);
    assert_int_equal(st.mzxid, 5);
    assert_int_equal(st.pzxid, 5);
    assert_int_equal(st.ctime, 1000);
    assert_int_equal(st.mtime, 1000);
    assert_int_equal(st.version, 0);
    assert_int_equal(st.cversion, 0);
    assert_int_equal(st.aversion, 0);
    assert_int_equal(st.ephemeral_owner, 0);
    assert_int_equal(st.data_length, 5);
    assert_int_equal(st.num_children, 0);
    assert_memory_equal(a->data, "hello", 5);

    znode_stat_get(tree_root(t), &st);
    assert_int_equal(st.cversion, 1);
    assert_int_equal(st.pzxid, 5);
    assert_int_equal(st.num_children, 2);
    assert_int_equal(st.mzxid, 0); /* a child does not change the parent's data */
    assert_int_equal(st.version, 0);

    struct znode *e = mk(t, "/a/e", "", 0, ZNODE_EPHEMERAL, 77, 6, 1100);
    assert_null(e->data);
    znode_stat_get(e, &st);
    assert_int_equal(st.ephemeral_owner, 77);
    assert_int_equal(st.data_length, 0);
    znode_stat_get(a, &st);
    assert_int_equal(st.cversion, 1);
    assert_int_equal(st.pzxid, 6);
    assert_int_equal(st.mzxid, 5);
    assert_int_equal(st.mtime, 1000);
    assert_int_equal(st.num_children, 1);
    assert_int_equal(tree_node_count(t), 4);
    assert_int_equal(tree_data_bytes(t), 5);
    tree_destroy(t);
}

static void test_tree_node_set_data__stat_rules(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    struct znode *a = mk(t, "/a", "hello", 5, 0, 0, 5, 1000);
    mk(t, "/a/b", "x", 1, 0, 0, 6, 1100);
    assert_int_equal(tree_node_set_data(t, a, "a\0b\0c\0", 6, 7, 2000), 0);
    struct znode_stat st;
    znode_stat_get(a, &st);
    assert_int_equal(st.version, 1);
    assert_int_equal(st.mzxid, 7);
    assert_int_equal(st.mtime, 2000);
    assert_int_equal(st.czxid, 5);
    assert_int_equal(st.ctime, 1000);
    assert_int_equal(st.pzxid, 6); /* children changes only */
    assert_int_equal(st.cversion, 1);
    assert_int_equal(st.data_length, 6);
    assert_memory_equal(a->data, "a\0b\0c\0", 6);
    assert_int_equal(tree_data_bytes(t), 7);

    znode_stat_get(tree_root(t), &st);
    assert_int_equal(st.cversion, 1);
    assert_int_equal(st.pzxid, 5);

    assert_int_equal(tree_node_set_data(t, a, NULL, 0, 8, 2100), 0);
    znode_stat_get(a, &st);
    assert_int_equal(st.version, 2);
    assert_int_equal(st.data_length, 0);
    assert_null(a->data);
    assert_int_equal(tree_data_bytes(t), 1);
    tree_destroy(t);
}

static void test_tree_node_delete__stat_rules(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    struct znode *a = mk(t, "/a", "hello", 5, 0, 0, 5, 1000);
    struct znode *b = mk(t, "/a/b", "xyz", 3, 0, 0, 6, 1100);
    mk(t, "/a/c", NULL, 0, 0, 0, 7, 1200);
    assert_int_equal(tree_node_count(t), 5);
    tree_node_delete(t, b, 9);
    struct znode_stat st;
    znode_stat_get(a, &st);
    assert_int_equal(st.cversion, 3);
    assert_int_equal(st.pzxid, 9);
    assert_int_equal(st.num_children, 1);
    assert_int_equal(st.version, 0);
    assert_int_equal(st.mzxid, 5);
    assert_int_equal(st.mtime, 1000);
    assert_null(get(t, "/a/b"));
    assert_non_null(get(t, "/a/c"));
    assert_int_equal(tree_node_count(t), 4);
    assert_int_equal(tree_data_bytes(t), 5);

    tree_node_delete(t, get(t, "/a/c"), 10);
    tree_node_delete(t, a, 11);
    znode_stat_get(tree_root(t), &st);
    assert_int_equal(st.cversion, 2);
    assert_int_equal(st.pzxid, 11);
    assert_int_equal(st.num_children, 1);
    assert_int_equal(tree_node_count(t), 2);
    assert_int_equal(tree_data_bytes(t), 0);
    tree_destroy(t);
}

static void test_tree_node_create__sorted_children_out_of_order(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    struct znode *p = mk(t, "/p", NULL, 0, 0, 0, 1, 0);
    const char *names[] = {"b", "a", "d", "c", "aa", "ab", "B", "\xc5\xbc", "a0", "ba"};
    const char *sorted[] = {"B", "a", "a0", "aa", "ab", "b", "ba", "c", "d", "\xc5\xbc"};
    size_t n = sizeof(names) / sizeof(names[0]);
    for (size_t i = 0; i < n; i++)
        assert_non_null(
            tree_node_create(t, p, names[i], strlen(names[i]), NULL, 0, 0, 0, 0, 2 + i, 0));
    assert_int_equal(p->child_count, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(p->children[i]->name, sorted[i]);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(tree_child_find(p, names[i], strlen(names[i]))->name, names[i]);
    assert_null(tree_child_find(p, "a1", 2));
    assert_null(tree_child_find(p, "", 0));
    assert_null(tree_child_find(p, "e", 1));

    /* Delete first, middle, last. */
    tree_node_delete(t, tree_child_find(p, "B", 1), 20);
    tree_node_delete(t, tree_child_find(p, "ab", 2), 21);
    tree_node_delete(t, tree_child_find(p, "\xc5\xbc", 2), 22);
    const char *left[] = {"a", "a0", "aa", "b", "ba", "c", "d"};
    assert_int_equal(p->child_count, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(p->children[i]->name, left[i]);
    assert_int_equal(p->cversion, (int32_t)n + 3);
    tree_destroy(t);
}

static void test_tree_node_create__many_random_inserts_and_deletes(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    struct znode *p = mk(t, "/p", NULL, 0, 0, 0, 1, 0);
    enum { N = 2000 };
    unsigned order[N];
    for (unsigned i = 0; i < N; i++)
        order[i] = i;
    srand(12345);
    for (unsigned i = N - 1; i > 0; i--) {
        unsigned j = (unsigned)rand() % (i + 1), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    char name[32];
    for (unsigned i = 0; i < N; i++) {
        int len = snprintf(name, sizeof(name), "k%u", order[i] * 7919u % 100003u);
        assert_non_null(tree_node_create(t, p, name, (size_t)len, NULL, 0, 0, 0, 0, 2, 0));
    }
    assert_int_equal(p->child_count, N);
    assert_children_sorted(p);
    for (unsigned i = 0; i < N; i += 2) {
        int len = snprintf(name, sizeof(name), "k%u", order[i] * 7919u % 100003u);
        struct znode *c = tree_child_find(p, name, (size_t)len);
        assert_non_null(c);
        tree_node_delete(t, c, 3);
    }
    assert_int_equal(p->child_count, N / 2);
    assert_children_sorted(p);
    for (unsigned i = 0; i < N; i++) {
        int len = snprintf(name, sizeof(name), "k%u", order[i] * 7919u % 100003u);
        struct znode *c = tree_child_find(p, name, (size_t)len);
        if (i % 2)
            assert_non_null(c);
        else
            assert_null(c);
    }
    /* Shrinking keeps at least the live children and frees the array when empty. */
    for (unsigned i = 1; i < N; i += 2) {
        int len = snprintf(name, sizeof(name), "k%u", order[i] * 7919u % 100003u);
        tree_node_delete(t, tree_child_find(p, name, (size_t)len), 4);
    }
    assert_int_equal(p->child_count, 0);
    assert_null(p->children);
    assert_int_equal(tree_node_count(t), 3);
    tree_destroy(t);
}

static void test_tree_lookup__deep_paths(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    char path[PATH_MAX_BYTES + 1];
    size_t len = 0;
    /* 600 levels: deeper than tree_walk's fixed resume stack (256). */
    for (int d = 0; d < 600; d++) {
        len += (size_t)snprintf(path + len, sizeof(path) - len, "/%c", 'a' + d % 26);
        mk(t, path, NULL, 0, 0, 0, (uint64_t)d + 1, 0);
        if (d % 3 == 0) { /* a sibling at some levels, to make lookups choose */
            char sib[PATH_MAX_BYTES + 1];
            memcpy(sib, path, len);
            memcpy(sib + len, "x", 2);
            mk(t, sib, NULL, 0, 0, 0, (uint64_t)d + 1, 0);
        }
    }
    struct znode *deep = tree_lookup(t, path, len);
    assert_non_null(deep);
    assert_int_equal(deep->child_count, 0);
    char back[PATH_MAX_BYTES + 1];
    assert_int_equal(znode_path_get(deep, back, sizeof(back)), len);
    assert_memory_equal(back, path, len + 1);
    assert_non_null(tree_lookup(t, path, len - 2)); /* the parent */
    assert_ptr_equal(tree_lookup(t, path, len - 2), deep->parent);
    assert_null(tree_lookup(t, "/a/b/c/d/x/y", 12));
    assert_null(tree_lookup(t, "/nope", 5));
    const char *p27 = "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/a";
    assert_non_null(tree_lookup(t, p27, strlen(p27)));
    assert_non_null(tree_lookup(t, "/a/b/c/dx", 9)); /* a sibling at level 4 */
    assert_null(tree_lookup(t, "/a/b/cx/d", 9));
    assert_int_equal(tree_node_count(t), 2 + 600 + 200);
    tree_destroy(t);
}

static void test_znode_path_get__buffer_too_small(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    mk(t, "/a", NULL, 0, 0, 0, 1, 0);
    struct znode *bc = mk(t, "/a/bc", NULL, 0, 0, 0, 2, 0);
    char buf[16];
    memset(buf, '#', sizeof(buf));
    assert_int_equal(znode_path_get(bc, buf, 5), 5); /* needs 6 with the NUL */
    assert_int_equal(buf[0], '#');
    assert_int_equal(znode_path_get(bc, buf, 0), 5);
    assert_int_equal(znode_path_get(bc, buf, 6), 5);
    assert_string_equal(buf, "/a/bc");
    assert_int_equal(znode_path_get(tree_root(t), buf, 1), 1);
    assert_int_equal(znode_path_get(tree_root(t), buf, 2), 1);
    assert_string_equal(buf, "/");
    assert_int_equal(znode_path_get(get(t, "/zookeeper"), buf, sizeof(buf)), 10);
    assert_string_equal(buf, "/zookeeper");
    tree_destroy(t);
}

static void assert_reapable_consistent(struct tree *t, size_t expect)
{
    size_t count;
    struct znode *const *r = tree_reapable(t, &count);
    assert_int_equal(count, expect);
    for (size_t i = 0; i < count; i++) {
        assert_int_equal(r[i]->reap_index, i);
        assert_true(r[i]->flags & (ZNODE_CONTAINER | ZNODE_TTL));
    }
}

static void test_tree_reapable__swap_remove(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    struct znode *c1 = mk(t, "/c1", NULL, 0, ZNODE_CONTAINER, 0, 1, 0);
    struct znode *p = mk(t, "/p", NULL, 0, 0, 0, 2, 0);
    struct znode *c2 = mk(t, "/c2", NULL, 0, ZNODE_CONTAINER, 0, 3, 0);
    struct znode *e = mk(t, "/e", NULL, 0, ZNODE_EPHEMERAL, 9, 4, 0);
    struct znode *t1 = mk(t, "/t1", NULL, 0, ZNODE_TTL, 0, 5, 0);
    struct znode *c3 = mk(t, "/c3", NULL, 0, ZNODE_CONTAINER, 0, 6, 0);
    assert_int_equal(p->reap_index, UINT32_MAX);
    assert_int_equal(e->reap_index, UINT32_MAX);
    assert_int_equal(t1->ttl_ms, 5000);
    assert_reapable_consistent(t, 4);
    size_t count;
    struct znode *const *r = tree_reapable(t, &count);
    assert_ptr_equal(r[0], c1);
    assert_ptr_equal(r[1], c2);
    assert_ptr_equal(r[2], t1);
    assert_ptr_equal(r[3], c3);

    tree_node_delete(t, c1, 7); /* c3, the last, moves to index 0 */
    r = tree_reapable(t, &count);
    assert_int_equal(count, 3);
    assert_ptr_equal(r[0], c3);
    assert_int_equal(c3->reap_index, 0);
    assert_ptr_equal(r[1], c2);
    assert_ptr_equal(r[2], t1);
    assert_reapable_consistent(t, 3);

    tree_node_delete(t, t1, 8); /* the last: nothing moves */
    tree_node_delete(t, p, 9);  /* not reapable: list unchanged */
    tree_node_delete(t, e, 10);
    assert_reapable_consistent(t, 2);
    tree_node_delete(t, c3, 11);
    r = tree_reapable(t, &count);
    assert_int_equal(count, 1);
    assert_ptr_equal(r[0], c2);
    assert_reapable_consistent(t, 1);
    tree_destroy(t);
}

struct walk_log {
    char seen[64][16];
    uint32_t depth[64];
    int n;
    int stop_at;
};

static int walk_record(void *arg, struct znode *n, uint32_t depth)
{
    struct walk_log *log = arg;
    snprintf(log->seen[log->n], sizeof(log->seen[0]), "%s", n->name);
    log->depth[log->n] = depth;
    log->n++;
    return log->n == log->stop_at ? 42 : 0;
}

static void test_tree_walk__preorder_and_stop(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    mk(t, "/b", NULL, 0, 0, 0, 1, 0);
    mk(t, "/a", NULL, 0, 0, 0, 2, 0);
    mk(t, "/b/y", NULL, 0, 0, 0, 3, 0);
    mk(t, "/b/x", NULL, 0, 0, 0, 4, 0);
    mk(t, "/b/x/1", NULL, 0, 0, 0, 5, 0);
    struct walk_log log = {.stop_at = -1};
    assert_int_equal(tree_walk(t, walk_record, &log), 0);
    const char *expect[] = {"", "a", "b", "x", "1", "y", "zookeeper"};
    const uint32_t depths[] = {0, 1, 1, 2, 3, 2, 1};
    assert_int_equal(log.n, 7);
    for (int i = 0; i < 7; i++) {
        assert_string_equal(log.seen[i], expect[i]);
        assert_int_equal(log.depth[i], depths[i]);
    }
    struct walk_log stop = {.stop_at = 4};
    assert_int_equal(tree_walk(t, walk_record, &stop), 42);
    assert_int_equal(stop.n, 4);
    tree_destroy(t);
}

/* Builds a tree of about 1000 nodes with every flag, empty data, data with NULs, set
 * versions, deletes (cversion), containers and TTL nodes. */
static struct tree *build_mixed(void)
{
    struct tree *t = tree_create();
    assert_non_null(t);
    char path[128], data[300];
    uint64_t zxid = 1;
    struct znode *root = tree_root(t);
    for (int i = 0; i < 30; i++) {
        int len = snprintf(path, sizeof(path), "/dir%02d", (i * 17) % 30);
        uint32_t flags = i % 5 == 0 ? ZNODE_CONTAINER : (i % 7 == 0 ? ZNODE_TTL : 0);
        struct znode *d = tree_node_create(t, root, path + 1, (size_t)len - 1, NULL, 0, flags, 0,
                                           flags & ZNODE_TTL ? 1000 + i : 0, zxid++, 100 + i);
        assert_non_null(d);
        for (int j = 0; j < 35; j++) {
            int nlen = snprintf(path, sizeof(path), "n%010d", (j * 13) % 35);
            uint32_t dlen = (uint32_t)((i * 31 + j * 7) % 250);
            for (uint32_t k = 0; k < dlen; k++)
                data[k] = (char)((k * 3 + (uint32_t)j) % 11); /* NULs included */
            uint32_t f = j % 4 == 1 ? ZNODE_EPHEMERAL : (j % 9 == 2 ? ZNODE_TTL : 0);
            struct znode *c = tree_node_create(t, d, path, (size_t)nlen, data, dlen, f,
                                               f & ZNODE_EPHEMERAL ? 1000 + (uint64_t)j : 0,
                                               f & ZNODE_TTL ? 60000 : 0, zxid++, 200 + j);
            assert_non_null(c);
            if (j % 3 == 0)
                assert_int_equal(tree_node_set_data(t, c, "v", 1, zxid++, 300 + j), 0);
            c->aversion = j % 5; /* no ACL ops yet; make sure the field travels */
        }
        /* Deletes bump the parent's cversion and pzxid. */
        struct znode *victim = tree_child_find(d, "n0000000005", 11);
        assert_non_null(victim);
        tree_node_delete(t, victim, zxid++);
    }
    tree_node_set_data(t, root, "root", 4, zxid++, 999);
    return t;
}

struct node_list {
    struct znode **nodes;
    uint32_t *depths;
    size_t n, cap;
};

static int collect(void *arg, struct znode *n, uint32_t depth)
{
    struct node_list *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->nodes = realloc(l->nodes, l->cap * sizeof(*l->nodes));
        l->depths = realloc(l->depths, l->cap * sizeof(*l->depths));
        assert_non_null(l->nodes);
        assert_non_null(l->depths);
    }
    l->nodes[l->n] = n;
    l->depths[l->n++] = depth;
    return 0;
}

static void assert_trees_equal(struct tree *a, struct tree *b)
{
    assert_int_equal(tree_node_count(a), tree_node_count(b));
    assert_int_equal(tree_data_bytes(a), tree_data_bytes(b));
    struct node_list la = {0}, lb = {0};
    assert_int_equal(tree_walk(a, collect, &la), 0);
    assert_int_equal(tree_walk(b, collect, &lb), 0);
    assert_int_equal(la.n, lb.n);
    assert_int_equal(la.n, tree_node_count(a));
    for (size_t i = 0; i < la.n; i++) {
        const struct znode *x = la.nodes[i], *y = lb.nodes[i];
        assert_int_equal(la.depths[i], lb.depths[i]);
        assert_int_equal(x->name_length, y->name_length);
        assert_memory_equal(x->name, y->name, x->name_length + 1);
        assert_int_equal(x->data_length, y->data_length);
        if (x->data_length)
            assert_memory_equal(x->data, y->data, x->data_length);
        else
            assert_null(y->data);
        assert_int_equal(x->child_count, y->child_count);
        assert_int_equal(x->flags, y->flags);
        assert_int_equal(x->version, y->version);
        assert_int_equal(x->cversion, y->cversion);
        assert_int_equal(x->aversion, y->aversion);
        assert_int_equal(x->czxid, y->czxid);
        assert_int_equal(x->mzxid, y->mzxid);
        assert_int_equal(x->pzxid, y->pzxid);
        assert_int_equal(x->ctime, y->ctime);
        assert_int_equal(x->mtime, y->mtime);
        assert_int_equal(x->ephemeral_owner, y->ephemeral_owner);
        assert_int_equal(x->ttl_ms, y->ttl_ms);
        assert_int_equal(x->reap_index == UINT32_MAX, y->reap_index == UINT32_MAX);
        assert_true((x->parent == NULL) == (y->parent == NULL));
        assert_children_sorted(y);
    }
    size_t ra, rb;
    tree_reapable(a, &ra);
    tree_reapable(b, &rb);
    assert_int_equal(ra, rb);
    assert_reapable_consistent(b, rb);
    free(la.nodes);
    free(la.depths);
    free(lb.nodes);
    free(lb.depths);
}

static void test_tree_encode__round_trip_mixed_tree(void **state)
{
    (void)state;
    struct tree *t = build_mixed();
    assert_true(tree_node_count(t) > 1000);
    struct bytes img = {0};
    bytes_put(&img, "prefix", 6); /* the image is appended, not written at 0 */
    assert_int_equal(tree_encode(t, &img), 0);
    bytes_put(&img, "tail", 4); /* and the decoder stops at its end */

    struct bytes_reader r;
    bytes_reader_init(&r, img.data, img.length);
    assert_non_null(bytes_get(&r, 6));
    struct tree *d = NULL;
    assert_int_equal(tree_decode(&r, &d), 0);
    assert_non_null(d);
    assert_int_equal(r.length - r.offset, 4);
    assert_trees_equal(t, d);

    /* The decoded tree encodes to the same bytes, and keeps working. */
    struct bytes again = {0};
    assert_int_equal(tree_encode(d, &again), 0);
    assert_int_equal(again.length, img.length - 10);
    assert_memory_equal(again.data, img.data + 6, again.length);
    assert_non_null(tree_node_create(d, tree_lookup(d, "/dir03", 6), "n0000000005", 11, "z", 1, 0,
                                     0, 0, 100000, 0));
    assert_children_sorted(tree_lookup(d, "/dir03", 6));
    bytes_free(&again);
    bytes_free(&img);
    tree_destroy(d);
    tree_destroy(t);
}

/* The engine sizes a snapshot from tree_image_bytes before encoding it (to choose
 * between encoding on the loop and forking): it must be the image's exact length
 * through creates, sets, deletes and a decode. */
static void test_tree_image_bytes__exact_through_changes_and_decode(void **state)
{
    (void)state;
    struct tree *fresh = tree_create();
    struct bytes img = {0};
    assert_int_equal(tree_encode(fresh, &img), 0);
    assert_int_equal(tree_image_bytes(fresh), img.length);
    bytes_free(&img);
    tree_destroy(fresh);

    struct tree *t = build_mixed(); /* creates, sets (longer and shorter), deletes */
    assert_int_equal(tree_encode(t, &img), 0);
    assert_int_equal(tree_image_bytes(t), img.length);

    struct bytes_reader r;
    bytes_reader_init(&r, img.data, img.length);
    struct tree *d = NULL;
    assert_int_equal(tree_decode(&r, &d), 0);
    assert_int_equal(tree_image_bytes(d), img.length);
    struct znode *dir = tree_lookup(d, "/dir07", 6);
    assert_non_null(dir);
    assert_non_null(tree_node_create(d, dir, "a-longer-name", 13, "data", 4, 0, 0, 0, 90000, 0));
    struct znode *victim = tree_child_find(dir, "n0000000001", 11);
    assert_non_null(victim);
    size_t gone = 88 + victim->name_length + victim->data_length; /* record, name, data */
    tree_node_delete(d, victim, 90001);
    struct bytes again = {0};
    assert_int_equal(tree_encode(d, &again), 0);
    assert_int_equal(tree_image_bytes(d), again.length);
    assert_int_equal(again.length, img.length + (88 + 13 + 4) - gone);
    bytes_free(&again);
    bytes_free(&img);
    tree_destroy(d);
    tree_destroy(t);
}

struct pieces {
    struct bytes joined;
    size_t calls;
    size_t largest;
    int fail_at; /* the flush call that fails (1-based); 0 = none */
};

static int pieces_take(void *arg, struct bytes *out)
{
    struct pieces *p = arg;
    if (++p->calls == (size_t)p->fail_at)
        return CORRAL_E_IO;
    if (out->length > p->largest)
        p->largest = out->length;
    bytes_put(&p->joined, out->data, out->length);
    out->length = 0;
    return 0;
}

/* The forked snapshot child encodes in pieces: joined, they are tree_encode's image, a
 * piece is never much over the chunk, and a failing flush stops the walk with its error. */
static void test_tree_encode_chunked__pieces_join_to_the_image(void **state)
{
    (void)state;
    struct tree *t = build_mixed();
    struct bytes whole = {0};
    assert_int_equal(tree_encode(t, &whole), 0);

    struct pieces p = {0};
    struct bytes buffer = {0};
    assert_int_equal(tree_encode_chunked(t, &buffer, 4096, pieces_take, &p), 0);
    bytes_put(&p.joined, buffer.data, buffer.length); /* the last piece stays in buffer */
    assert_true(p.calls > 10);
    assert_true(p.largest < 4096 + 88 + 11 + 250);
    assert_int_equal(p.joined.length, whole.length);
    assert_memory_equal(p.joined.data, whole.data, whole.length);

    struct pieces failing = {.fail_at = 3};
    buffer.length = 0;
    assert_int_equal(tree_encode_chunked(t, &buffer, 4096, pieces_take, &failing), CORRAL_E_IO);
    assert_int_equal(failing.calls, 3);

    bytes_free(&failing.joined);
    bytes_free(&p.joined);
    bytes_free(&buffer);
    bytes_free(&whole);
    tree_destroy(t);
}

static void test_tree_encode__round_trip_deep_tree(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    char path[PATH_MAX_BYTES + 1];
    size_t len = 0;
    for (int d = 0; d < 700; d++) {
        len += (size_t)snprintf(path + len, sizeof(path) - len, "/%c", 'a' + d % 3);
        mk(t, path, "d", 1, 0, 0, (uint64_t)d + 1, 0);
        if (d % 100 == 0) {
            char sib[PATH_MAX_BYTES + 1];
            memcpy(sib, path, len);
            memcpy(sib + len, "z", 2);
            mk(t, sib, NULL, 0, 0, 0, (uint64_t)d + 1, 0);
        }
    }
    struct bytes img = {0};
    assert_int_equal(tree_encode(t, &img), 0);
    struct bytes_reader r;
    bytes_reader_init(&r, img.data, img.length);
    struct tree *d = NULL;
    assert_int_equal(tree_decode(&r, &d), 0);
    assert_trees_equal(t, d);
    bytes_free(&img);
    tree_destroy(d);
    tree_destroy(t);
}

static int decode_bytes(const uint8_t *p, size_t n)
{
    struct bytes_reader r;
    bytes_reader_init(&r, p, n);
    struct tree *d = NULL;
    int rv = tree_decode(&r, &d);
    if (rv == 0)
        tree_destroy(d);
    return rv;
}

static void test_tree_decode__truncated_image(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    mk(t, "/a", "data", 4, ZNODE_CONTAINER, 0, 1, 0);
    mk(t, "/a/b", "more data", 9, 0, 0, 2, 0);
    mk(t, "/c", NULL, 0, ZNODE_TTL, 0, 3, 0);
    struct bytes img = {0};
    assert_int_equal(tree_encode(t, &img), 0);
    assert_int_equal(decode_bytes(img.data, img.length), 0);
    for (size_t n = 0; n < img.length; n++) {
        /* A copy of exactly n bytes, so ASan catches any read past it. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, img.data, n);
        int rv = decode_bytes(cut, n);
        free(cut);
        if (rv != CORRAL_E_CORRUPT)
            fail_msg("truncated at %zu of %zu: got %d", n, img.length, rv);
    }
    bytes_free(&img);
    tree_destroy(t);

    /* A large image cut in a few places. */
    t = build_mixed();
    assert_int_equal(tree_encode(t, &img), 0);
    for (size_t n = 0; n < img.length; n += img.length / 97 + 1)
        assert_int_equal(decode_bytes(img.data, n), CORRAL_E_CORRUPT);
    bytes_free(&img);
    tree_destroy(t);
}

static void test_tree_decode__malformed_image(void **state)
{
    (void)state;
    struct tree *t = tree_create();
    mk(t, "/a", NULL, 0, 0, 0, 1, 0);
    mk(t, "/b", NULL, 0, 0, 0, 2, 0);
    struct bytes img = {0};
    assert_int_equal(tree_encode(t, &img), 0);
    /* Records (88 bytes + name each): root @16, "a" @104, "b" @193, "zookeeper" @282. */
    enum { REC_A = 104, REC_B = 193, REC_ZK = 282 };
    assert_int_equal(img.length, 16 + 4 * 88 + 0 + 1 + 1 + 9);
    uint8_t *bad = malloc(img.length);

    memcpy(bad, img.data, img.length);
    bad[0] = 2; /* unknown image version */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[REC_B + 88] = 'a'; /* "b" becomes a second "a": not strictly increasing */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[REC_B + 88] = '0'; /* "0" after "a": out of order */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[REC_B] = 3; /* "b" at depth 3 under a depth-1 node: a depth jump */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[REC_A] = 0; /* a second root */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[REC_B + 88] = '/'; /* a '/' inside a name */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[8] = 5; /* node count larger than the records */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[8] = 0xff;
    bad[15] = 0xff; /* absurd node count: refused before any allocation */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    memcpy(bad, img.data, img.length);
    bad[REC_ZK + 12] = 1; /* data length of "zookeeper" past the end */
    assert_int_equal(decode_bytes(bad, img.length), CORRAL_E_CORRUPT);

    /* Control: the untouched copy decodes. */
    memcpy(bad, img.data, img.length);
    assert_int_equal(decode_bytes(bad, img.length), 0);
    free(bad);
    bytes_free(&img);
    tree_destroy(t);
}

static void test_tree_memory__bytes_per_node(void **state)
{
    (void)state;
    enum { PARENTS = 100, PER_PARENT = 1000 };
    uint8_t data[100];
    memset(data, 'v', sizeof(data));
    struct mallinfo2 before = mallinfo2();
    struct tree *t = tree_create();
    char name[32];
    for (int p = 0; p < PARENTS; p++) {
        int len = snprintf(name, sizeof(name), "p%03d", p);
        struct znode *parent =
            tree_node_create(t, tree_root(t), name, (size_t)len, data, 100, 0, 0, 0, 1, 0);
        assert_non_null(parent);
        for (int c = 0; c < PER_PARENT; c++) {
            len = snprintf(name, sizeof(name), "n%010d", c);
            assert_non_null(
                tree_node_create(t, parent, name, (size_t)len, data, 100, 0, 0, 0, 2, 0));
        }
    }
    struct mallinfo2 after = mallinfo2();
    uint64_t nodes = (uint64_t)PARENTS * PER_PARENT + PARENTS;
    /* uordblks counts in-use chunk sizes, malloc's headers and padding included, plus
     * the parents' children arrays. glibc malloc only: under ASan this reads about 0. */
    double used = (double)(after.uordblks - before.uordblks);
    double hblk = (double)(after.hblkhd - before.hblkhd);
    printf("memory: %llu nodes (11-byte names, 100-byte data): %.1f bytes/node "
           "(uordblks %.0f, mmapped %.0f)\n",
           (unsigned long long)nodes, (used + hblk) / (double)nodes, used, hblk);
    printf("memory: struct znode %zu bytes, name inline\n", sizeof(struct znode));
    assert_int_equal(tree_node_count(t), nodes + 2);
    assert_int_equal(tree_data_bytes(t), nodes * 100);
    tree_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_create__root_and_zookeeper),
        cmocka_unit_test(test_tree_node_create__stat_rules),
        cmocka_unit_test(test_tree_node_set_data__stat_rules),
        cmocka_unit_test(test_tree_node_delete__stat_rules),
        cmocka_unit_test(test_tree_node_create__sorted_children_out_of_order),
        cmocka_unit_test(test_tree_node_create__many_random_inserts_and_deletes),
        cmocka_unit_test(test_tree_lookup__deep_paths),
        cmocka_unit_test(test_znode_path_get__buffer_too_small),
        cmocka_unit_test(test_tree_reapable__swap_remove),
        cmocka_unit_test(test_tree_walk__preorder_and_stop),
        cmocka_unit_test(test_tree_encode__round_trip_mixed_tree),
        cmocka_unit_test(test_tree_encode__round_trip_deep_tree),
        cmocka_unit_test(test_tree_image_bytes__exact_through_changes_and_decode),
        cmocka_unit_test(test_tree_encode_chunked__pieces_join_to_the_image),
        cmocka_unit_test(test_tree_decode__truncated_image),
        cmocka_unit_test(test_tree_decode__malformed_image),
        cmocka_unit_test(test_tree_memory__bytes_per_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
