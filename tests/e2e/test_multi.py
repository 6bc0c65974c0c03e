#!/usr/bin/env python3
"""POST /v1/multi: all-or-nothing, one zxid, results shape, index of the failing op."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import ServerTestCase, run_tests  # noqa: E402


def create(path, data="", **kw):
    return dict(op="create", path=path, data=data, **kw)


def set_(path, data, version=-1):
    return dict(op="set", path=path, data=data, version=version)


def delete(path, version=-1):
    return dict(op="delete", path=path, version=version)


def check(path, version):
    return dict(op="check", path=path, version=version)


class MultiTest(ServerTestCase):
    server_name = "multi"

    def snapshot_tree(self, root):
        """{path: (data bytes, stat)} of root's subtree, for before/after comparisons."""
        out = {}
        stack = [root]
        while stack:
            p = stack.pop()
            r = self.c.get(p, children=True, encoding="base64")
            self.assertEqual(r.status, 200, r)
            out[p] = (r.body["data"], r.body["stat"])
            stack.extend(p.rstrip("/") + "/" + ch for ch in r.body["children"])
        return out

    def assertMultiFails(self, ops, status, code, index, path, root):
        """The multi fails with (status, code, index, path) and changes nothing under root."""
        before = self.snapshot_tree(root)
        r = self.c.multi(ops)
        self.assertError(r, status, code, path)
        self.assertEqual(r.body["error"].get("index"), index, r)
        self.assertEqual(self.snapshot_tree(root), before, "a failed multi left a trace")
        return r

    def test_success_results_shape_and_one_zxid(self):
        p = self.fresh()
        self.c.create(p + "/old", "o")
        self.c.create(p + "/gone", "")
        r = self.c.multi([create(p + "/new", "n"), set_(p + "/old", "o2", 0),
                          delete(p + "/gone", 0), check(p + "/old", 1)])
        self.assertEqual(r.status, 200, r)
        res = r.body["results"]
        self.assertEqual([x["op"] for x in res], ["create", "set", "delete", "check"])
        self.assertEqual([x["path"] for x in res],
                         [p + "/new", p + "/old", p + "/gone", p + "/old"])
        self.assertEqual(set(res[2]), {"op", "path"})
        self.assertEqual(set(res[3]), {"op", "path"})
        cst, sst = res[0]["stat"], res[1]["stat"]
        # One transaction: every change carries the same zxid, the one the server reports.
        self.assertEqual(cst["czxid"], r.zxid)
        self.assertEqual(sst["mzxid"], r.zxid)
        self.assertEqual(sst["version"], 1)
        self.assertEqual((cst["version"], cst["dataLength"]), (0, 1))
        self.assertEqual(self.c.data_of(p + "/new"), b"n")
        self.assertEqual(self.c.data_of(p + "/old"), b"o2")
        self.assertEqual(self.c.exists(p + "/gone").status, 404)
        parent = self.c.get(p).body["stat"]
        self.assertEqual(parent["pzxid"], r.zxid)
        self.assertEqual(parent["numChildren"], 2)
        self.assertEqual(parent["cversion"], 4)  # 2 creates before, 1 create + 1 delete

    def test_zxid_advances_by_one_for_a_multi(self):
        p = self.fresh()
        z0 = self.c.get(p).zxid
        r = self.c.multi([create(p + "/a"), create(p + "/b"), create(p + "/c")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.zxid, z0 + 1)

    def test_empty_ops_is_200_with_no_results(self):
        z0 = self.c.health().zxid
        r = self.c.multi([])
        self.assertEqual((r.status, r.body), (200, {"results": []}))
        self.assertEqual(r.zxid, z0, "an empty multi writes nothing")

    def test_failing_check_in_last_op_leaves_no_trace(self):
        p = self.fresh()
        self.c.create(p + "/x", "x0")
        self.c.create(p + "/d", "")
        ops = [create(p + "/a", "a"), create(p + "/a/b", "b"), set_(p + "/x", "x1"),
               delete(p + "/d"), check(p + "/x", 7)]
        self.assertMultiFails(ops, 409, "BAD_VERSION", 4, p + "/x", p)

    def test_failing_version_in_last_op_leaves_no_trace(self):
        p = self.fresh()
        self.c.create(p + "/x", "x0")
        ops = [create(p + "/a", "a"), set_(p + "/x", "x1", 0), set_(p + "/x", "x2", 0)]
        # The second set expects version 0 but the first set (same multi) made it 1.
        self.assertMultiFails(ops, 409, "BAD_VERSION", 2, p + "/x", p)
        self.assertEqual(self.c.data_of(p + "/x"), b"x0")

    def test_index_and_code_of_each_kind_of_failure(self):
        p = self.fresh()
        self.c.create(p + "/x", "")
        self.c.create(p + "/full", "")
        self.c.create(p + "/full/kid", "")
        cases = [
            ([create(p + "/ok1"), create(p + "/x")], 409, "NODE_EXISTS", 1, p + "/x"),
            ([create(p + "/ok1"), create(p + "/ok2"), delete(p + "/full")], 409,
             "NOT_EMPTY", 2, p + "/full"),
            ([delete(p + "/missing")], 404, "NO_NODE", 0, p + "/missing"),
            ([create(p + "/ok1"), set_(p + "/missing", "z")], 404, "NO_NODE", 1,
             p + "/missing"),
            ([create(p + "/ok1"), check(p + "/missing", -1)], 404, "NO_NODE", 1,
             p + "/missing"),
            ([create(p + "/ok1"), create(p + "/nope/child")], 404, "NO_NODE", 1,
             p + "/nope/child"),
            ([check(p + "/x", 0), delete(p + "/x", 3)], 409, "BAD_VERSION", 1, p + "/x"),
        ]
        for ops, status, code, index, path in cases:
            with self.subTest(code=code, index=index):
                self.assertMultiFails(ops, status, code, index, path, p)

    def test_bad_op_is_bad_arguments_with_index(self):
        p = self.fresh()
        cases = [
            [create(p + "/a"), {"op": "frobnicate", "path": p + "/b"}],
            [create(p + "/a"), {"op": "create"}],
            [create(p + "/a"), create(p + "//bad")],
            [create(p + "/a"), {"op": "set", "path": p, "data": 5}],
            [create(p + "/a"), {"op": "check", "path": p, "version": "x"}],
        ]
        for ops in cases:
            with self.subTest(op=ops[1]):
                before = self.snapshot_tree(p)
                r = self.c.multi(ops)
                self.assertError(r, 400, "BAD_ARGUMENTS")
                self.assertEqual(r.body["error"].get("index"), 1, r)
                self.assertEqual(self.snapshot_tree(p), before)

    def test_malformed_multi_bodies_are_bad_arguments(self):
        z0 = self.c.health().zxid
        for raw in ['{', '[]', '{"ops": {}}', '{"ops": [1]}', '{"ops": "x"}', '{}']:
            with self.subTest(body=raw):
                r = self.c.request("POST", "/v1/multi", raw=raw)
                self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.health().zxid, z0)

    def test_create_and_delete_same_path_in_one_multi(self):
        p = self.fresh()
        before = self.c.get(p).body["stat"]
        r = self.c.multi([create(p + "/tmp", "t"), set_(p + "/tmp", "u", 0),
                          check(p + "/tmp", 1), delete(p + "/tmp", 1)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["op"] for x in r.body["results"]],
                         ["create", "set", "check", "delete"])
        self.assertEqual(self.c.exists(p + "/tmp").status, 404)
        after = self.c.get(p).body["stat"]
        self.assertEqual(after["numChildren"], before["numChildren"])
        self.assertEqual(after["cversion"], before["cversion"] + 2)
        self.assertEqual(after["pzxid"], r.zxid)
        # Delete then re-create in one multi is fine too.
        self.c.create(p + "/again", "old")
        r = self.c.multi([delete(p + "/again"), create(p + "/again", "new")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.data_of(p + "/again"), b"new")
        self.assertEqual(self.c.get(p + "/again").body["stat"]["czxid"], r.zxid)

    def test_sequential_creates_in_a_multi_see_each_other(self):
        p = self.fresh()
        r = self.c.multi([create(p + "/s-", sequential=True), create(p + "/s-", sequential=True),
                          create(p + "/plain"), create(p + "/s-", sequential=True)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["path"] for x in r.body["results"]],
                         [p + "/s-0000000000", p + "/s-0000000001", p + "/plain",
                          p + "/s-0000000003"])
        self.assertEqual(self.c.children(p).body["children"],
                         ["plain", "s-0000000000", "s-0000000001", "s-0000000003"])

    def test_failed_multi_does_not_consume_sequence_numbers(self):
        p = self.fresh()
        self.assertMultiFails([create(p + "/s-", sequential=True), check(p, 99)],
                              409, "BAD_VERSION", 1, p, p)
        r = self.c.create(p + "/s-", sequential=True)
        self.assertEqual(r.body["path"], p + "/s-0000000000")

    def test_create_in_multi_under_node_created_earlier_in_same_multi(self):
        p = self.fresh()
        r = self.c.multi([create(p + "/a", "1"), create(p + "/a/b", "2"),
                          create(p + "/a/b/c", "3")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.data_of(p + "/a/b/c"), b"3")
        self.assertEqual(self.c.get(p + "/a").body["stat"]["numChildren"], 1)

    def test_multi_ephemeral_create_needs_session(self):
        p = self.fresh()
        s = self.c.open_session(10000).body["id"]
        try:
            r = self.c.multi([create(p + "/e", ephemeral=True)])
            self.assertError(r, 400, "BAD_ARGUMENTS")
            r = self.c.multi([create(p + "/e", ephemeral=True)], session=s)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body["results"][0]["stat"]["ephemeralOwner"], s)
            r = self.c.multi([create(p + "/ok"), create(p + "/e/kid")])
            self.assertError(r, 409, "NO_CHILDREN_FOR_EPHEMERALS", p + "/e/kid")
            self.assertEqual(r.body["error"]["index"], 1)
            self.assertEqual(self.c.exists(p + "/ok").status, 404)
        finally:
            self.c.close_session(s)
        self.assertEqual(self.c.exists(p + "/e").status, 404)

    def test_multi_data_is_base64_capable(self):
        p = self.fresh()
        r = self.c.multi([create(p + "/b", "AP8=", encoding="base64")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.data_of(p + "/b"), b"\x00\xff")


if __name__ == "__main__":
    run_tests()
