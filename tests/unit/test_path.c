/* test_path.c: unit tests of path.h (validation tables, reserved paths, offsets). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "path.h"

struct path_case {
    const char *path;
    size_t length; /* 0: strlen(path) */
};

static int path_check(const struct path_case *c, bool sequential)
{
    size_t length = c->length ? c->length : strlen(c->path);
    return path_validate(c->path, length, sequential);
}

static const struct path_case path_valid[] = {
    {"/", 0},
    {"/a", 0},
    {"/a/b/c", 0},
    {"/zookeeper", 0},
    {"/a/...", 0},
    {"/a/.b", 0},
    {"/a/b.", 0},
    {"/a/..b", 0},
    {"/.../x", 0},
    {"/a b/c-d_e:f@g", 0},
    {"/\xc5\xbc\xc3\xb3\xc5\x82w", 0}, /* "/żółw" */
    {"/\xe4\xb8\xad\xe6\x96\x87", 0},  /* CJK, 3-byte sequences */
    {"/\xc2\xa0", 0},                  /* U+00A0, just above the C1 range */
    {"/\xef\xa4\x80", 0},              /* U+F900, just above private use */
    {"/\xef\xbf\xaf", 0},              /* U+FFEF, just below U+FFF0 */
    {"/~", 0},                         /* U+007E, just below DEL */
};

static const struct path_case path_invalid[] = {
    {"", 0},
    {"a", 0},
    {"a/b", 0},
    {"//", 0},
    {"/a//b", 0},
    {"/a/", 0},
    {"/a/.", 0},
    {"/a/..", 0},
    {"/./a", 0},
    {"/../a", 0},
    {"/.", 0},
    {"/..", 0},
    {"/a\x01", 0},
    {"/a\x1f", 0},
    {"/a\x7f", 0},
    {"/\xc2\x80", 0},             /* U+0080, C1 control */
    {"/\xc2\x9f", 0},             /* U+009F, C1 control */
    {"/\xc3\x28", 0},             /* lead byte followed by ASCII */
    {"/\xc3", 0},                 /* truncated sequence */
    {"/\xe4\xb8", 0},             /* truncated 3-byte sequence */
    {"/\x80", 0},                 /* stray continuation byte */
    {"/\xc0\xaf", 0},             /* overlong '/' */
    {"/\xc1\xbf", 0},             /* overlong */
    {"/\xe0\x80\xaf", 0},         /* overlong 3-byte '/' */
    {"/\xed\xa0\x80", 0},         /* surrogate U+D800 */
    {"/\xed\xbf\xbf", 0},         /* surrogate U+DFFF */
    {"/\xee\x80\x80", 0},         /* U+E000, private use */
    {"/\xef\xa3\xbf", 0},         /* U+F8FF */
    {"/\xef\xbf\xb0", 0},         /* U+FFF0 */
    {"/\xef\xbf\xbf", 0},         /* U+FFFF */
    {"/\xf0\x9f\x98\x80", 0},     /* U+1F600 emoji: supplementary */
    {"/\xf4\x8f\xbf\xbf", 0},     /* U+10FFFF */
    {"/\xf8\x88\x80\x80\x80", 0}, /* 5-byte form */
    {"/\xff", 0},
    {"/a\0b", 4}, /* embedded NUL */
};

static void test_path_validate__valid_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(path_valid) / sizeof(path_valid[0]); i++) {
        int rv = path_check(&path_valid[i], false);
        if (rv != 0)
            fail_msg("expected valid: case %zu \"%s\"", i, path_valid[i].path);
    }
}

static void test_path_validate__invalid_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(path_invalid) / sizeof(path_invalid[0]); i++) {
        int rv = path_check(&path_invalid[i], false);
        if (rv != CORRAL_E_BAD_ARGUMENTS)
            fail_msg("expected invalid: case %zu \"%s\" got %d", i, path_invalid[i].path, rv);
    }
}

static void test_path_validate__sequential_prefix(void **state)
{
    (void)state;
    /* ZooKeeper validates prefix + "1". */
    assert_int_equal(path_validate("/a/", 3, true), 0);
    assert_int_equal(path_validate("/", 1, true), 0);
    assert_int_equal(path_validate("/a/b-", 5, true), 0);
    assert_int_equal(path_validate("/a/.", 4, true), 0); /* becomes "/a/.0000000001" */
    assert_int_equal(path_validate("/a//", 4, true), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(path_validate("/a/./", 5, true), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(path_validate("", 0, true), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(path_validate("a/", 2, true), CORRAL_E_BAD_ARGUMENTS);
    assert_int_equal(path_validate("/\x01/", 3, true), CORRAL_E_BAD_ARGUMENTS);
}

static void test_path_validate__length_limit(void **state)
{
    (void)state;
    char *p = malloc(PATH_MAX_BYTES + 2);
    assert_non_null(p);
    p[0] = '/';
    memset(p + 1, 'x', PATH_MAX_BYTES + 1);
    assert_int_equal(path_validate(p, PATH_MAX_BYTES, false), 0);
    assert_int_equal(path_validate(p, PATH_MAX_BYTES + 1, false), CORRAL_E_BAD_ARGUMENTS);
    /* A sequential prefix leaves room for the counter. */
    assert_int_equal(path_validate(p, PATH_MAX_BYTES - PATH_SEQUENTIAL_DIGITS, true), 0);
    assert_int_equal(path_validate(p, PATH_MAX_BYTES - PATH_SEQUENTIAL_DIGITS + 1, true),
                     CORRAL_E_BAD_ARGUMENTS);
    free(p);
}

static void test_path_is_reserved__zookeeper_subtree(void **state)
{
    (void)state;
    assert_true(path_is_reserved("/zookeeper", 10));
    assert_true(path_is_reserved("/zookeeper/quota", 16));
    assert_false(path_is_reserved("/zookeeperx", 11));
    assert_false(path_is_reserved("/zoo", 4));
    assert_false(path_is_reserved("/", 1));
    assert_false(path_is_reserved("/a/zookeeper", 12));
}

static void test_path_parent_length__levels(void **state)
{
    (void)state;
    assert_int_equal(path_parent_length("/a", 2), 1);
    assert_int_equal(path_parent_length("/a/b", 4), 2);
    assert_int_equal(path_parent_length("/abc/def/g", 10), 8);
    assert_int_equal(path_parent_length("/a/b/", 5), 4); /* a sequential prefix */
}

static void test_path_name_offset__levels(void **state)
{
    (void)state;
    assert_int_equal(path_name_offset("/a", 2), 1);
    assert_int_equal(path_name_offset("/a/b", 4), 3);
    assert_int_equal(path_name_offset("/abc/def/ghij", 13), 9);
    assert_int_equal(path_name_offset("/a/", 3), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_validate__valid_table),
        cmocka_unit_test(test_path_validate__invalid_table),
        cmocka_unit_test(test_path_validate__sequential_prefix),
        cmocka_unit_test(test_path_validate__length_limit),
        cmocka_unit_test(test_path_is_reserved__zookeeper_subtree),
        cmocka_unit_test(test_path_parent_length__levels),
        cmocka_unit_test(test_path_name_offset__levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
