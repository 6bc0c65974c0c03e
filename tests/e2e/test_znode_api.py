#!/usr/bin/env python3
"""Every znode route and error code of the contract, and ZooKeeper's stat rules."""

import base64
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import (ServerTestCase, decode_data, raw_http_request, run_tests,  # noqa: E402
                            znode_url)

STAT_FIELDS = {"czxid", "mzxid", "pzxid", "ctime", "mtime", "version", "cversion",
               "aversion", "ephemeralOwner", "dataLength", "numChildren"}


class ZnodeApiTest(ServerTestCase):
    server_name = "znode_api"

    # --- helpers ------------------------------------------------------------------
    def stat(self, path):
        r = self.c.get(path)
        self.assertEqual(r.status, 200, r)
        return r.body["stat"]

    def assertUnchanged(self, path, before_stat, before_zxid):
        """The node's stat and the server's zxid are what they were."""
        r = self.c.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["stat"], before_stat)
        self.assertEqual(r.zxid, before_zxid, "a refused request advanced the zxid")

    # --- create -------------------------------------------------------------------
    def test_create_persistent_returns_path_and_fresh_stat(self):
        parent = self.fresh()
        t0 = int(time.time() * 1000)
        r = self.c.create(parent + "/a", "hello")
        t1 = int(time.time() * 1000)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["path"], parent + "/a")
        st = r.body["stat"]
        self.assertEqual(set(st), STAT_FIELDS)
        self.assertEqual(st["czxid"], r.zxid, "create's zxid is the one the server applied")
        self.assertEqual(st["mzxid"], st["czxid"])
        self.assertEqual(st["pzxid"], st["czxid"], "ZooKeeper: a new node's pzxid is its czxid")
        self.assertEqual(st["ctime"], st["mtime"])
        self.assertTrue(t0 - 1000 <= st["ctime"] <= t1 + 1000, (t0, st["ctime"], t1))
        self.assertEqual((st["version"], st["cversion"], st["aversion"]), (0, 0, 0))
        self.assertEqual(st["ephemeralOwner"], "0")
        self.assertEqual((st["dataLength"], st["numChildren"]), (5, 0))
        # The read agrees with the create.
        g = self.c.get(parent + "/a")
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.body["path"], parent + "/a")
        self.assertEqual((g.body["data"], g.body["encoding"]), ("hello", "utf-8"))
        self.assertEqual(g.body["stat"], st)

    def test_create_updates_parent_cversion_pzxid_numchildren_not_version(self):
        parent = self.fresh()
        before = self.stat(parent)
        r = self.c.create(parent + "/x", "1")
        self.assertEqual(r.status, 201, r)
        after = self.stat(parent)
        self.assertEqual(after["cversion"], before["cversion"] + 1)
        self.assertEqual(after["numChildren"], before["numChildren"] + 1)
        self.assertEqual(after["pzxid"], r.body["stat"]["czxid"])
        for unchanged in ("version", "mzxid", "mtime", "czxid", "ctime", "dataLength"):
            self.assertEqual(after[unchanged], before[unchanged], unchanged)

    def test_each_write_advances_zxid_by_one(self):
        parent = self.fresh()
        z0 = self.c.create(parent + "/a", "").zxid
        z1 = self.c.set(parent + "/a", "b").zxid
        z2 = self.c.create(parent + "/b", "").zxid
        z3 = self.c.delete(parent + "/b").zxid
        self.assertEqual([z1, z2, z3], [z0 + 1, z0 + 2, z0 + 3])
        # Reads do not advance it.
        self.assertEqual(self.c.get(parent).zxid, z3)
        self.assertEqual(self.c.exists(parent).zxid, z3)

    def test_create_without_body_fields_makes_empty_persistent_node(self):
        parent = self.fresh()
        r = self.c.request("POST", znode_url(parent + "/e"), {})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["dataLength"], 0)
        g = self.c.get(parent + "/e")
        self.assertEqual((g.body["data"], g.body["encoding"]), ("", "utf-8"))

    def test_create_existing_is_node_exists(self):
        parent = self.fresh()
        self.assertEqual(self.c.create(parent + "/a", "1").status, 201)
        before = self.stat(parent + "/a")
        r = self.c.create(parent + "/a", "2")
        self.assertError(r, 409, "NODE_EXISTS", parent + "/a")
        self.assertEqual(self.stat(parent + "/a"), before)
        self.assertEqual(self.c.data_of(parent + "/a"), b"1")

    def test_create_with_missing_parent_is_no_node(self):
        parent = self.fresh()
        r = self.c.create(parent + "/missing/child", "x")
        self.assertError(r, 404, "NO_NODE", parent + "/missing/child")
        self.assertEqual(self.c.exists(parent + "/missing").status, 404)

    def test_create_root_and_reserved_zookeeper_are_bad_arguments(self):
        self.assertError(self.c.request("POST", "/v1/znodes/", {}), 400, "BAD_ARGUMENTS")
        self.assertError(self.c.create("/zookeeper", ""), 400, "BAD_ARGUMENTS")
        self.assertError(self.c.create("/zookeeper/mine", ""), 400, "BAD_ARGUMENTS")

    def test_create_ephemeral_without_session_is_bad_arguments(self):
        parent = self.fresh()
        r = self.c.create(parent + "/e", "", ephemeral=True)
        self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.exists(parent + "/e").status, 404)

    def test_create_under_ephemeral_is_no_children_for_ephemerals(self):
        parent = self.fresh()
        s = self.c.open_session(10000)
        self.assertEqual(s.status, 201, s)
        sid = s.body["id"]
        try:
            r = self.c.create(parent + "/eph", "", ephemeral=True, session=sid)
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.body["stat"]["ephemeralOwner"], sid)
            r = self.c.create(parent + "/eph/child", "")
            self.assertError(r, 409, "NO_CHILDREN_FOR_EPHEMERALS", parent + "/eph/child")
        finally:
            self.assertEqual(self.c.close_session(sid).status, 204)

    def test_invalid_mode_combinations_are_bad_arguments(self):
        parent = self.fresh()
        s = self.c.open_session(10000)
        sid = s.body["id"]
        cases = [
            dict(container=True, ephemeral=True, session=sid),
            dict(container=True, sequential=True),
            dict(container=True, ttl_ms=1000),
            dict(ttl_ms=1000, ephemeral=True, session=sid),
            dict(ttl_ms=-5),
        ]
        for i, kw in enumerate(cases):
            with self.subTest(kw=kw):
                r = self.c.create("%s/m%d" % (parent, i), "", **kw)
                self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.children(parent).body["children"], [])
        self.c.close_session(sid)

    # --- sequential ---------------------------------------------------------------
    def test_sequential_suffix_is_parent_cversion_10_digits(self):
        q = self.fresh()
        names = []
        for _ in range(2):
            r = self.c.create(q + "/item-", "", sequential=True)
            self.assertEqual(r.status, 201, r)
            names.append(r.body["path"])
        self.assertEqual(names, [q + "/item-0000000000", q + "/item-0000000001"])
        self.assertEqual(self.c.create(q + "/plain", "").status, 201)   # cversion 3
        r = self.c.create(q + "/item-", "", sequential=True)
        self.assertEqual(r.body["path"], q + "/item-0000000003")
        self.assertEqual(self.c.delete(q + "/plain").status, 204)       # cversion 5
        r = self.c.create(q + "/x", "", sequential=True)
        self.assertEqual(r.body["path"], q + "/x0000000005")
        self.assertEqual(self.c.exists(q + "/x0000000005").status, 200)
        self.assertEqual(self.c.children(q).body["children"],
                         ["item-0000000000", "item-0000000001", "item-0000000003",
                          "x0000000005"])

    # --- read / exists / children -------------------------------------------------
    def test_read_with_children_lists_them_sorted(self):
        p = self.fresh()
        for name in ["b", "a", "c10", "c9", "B"]:
            self.assertEqual(self.c.create(p + "/" + name, name).status, 201)
        r = self.c.get(p, children=True)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["children"], ["B", "a", "b", "c10", "c9"])
        self.assertEqual(r.body["stat"]["numChildren"], 5)
        c = self.c.children(p)
        self.assertEqual(c.status, 200, c)
        self.assertEqual(c.body["path"], p)
        self.assertEqual(c.body["children"], ["B", "a", "b", "c10", "c9"])
        self.assertEqual(c.body["stat"], r.body["stat"])
        self.assertNotIn("children", self.c.get(p).body)

    def test_read_missing_is_no_node(self):
        r = self.c.get("/no/such/node")
        self.assertError(r, 404, "NO_NODE", "/no/such/node")
        self.assertError(self.c.children("/no-such"), 404, "NO_NODE", "/no-such")

    def test_exists_is_200_or_404_without_body(self):
        p = self.fresh()
        r = self.c.exists(p)
        self.assertEqual((r.status, r.raw), (200, b""))
        r = self.c.exists(p + "/nope")
        self.assertEqual((r.status, r.raw), (404, b""))

    def test_root_is_readable_and_lists_top_level_nodes(self):
        p = self.fresh()
        r = self.c.get("/", children=True)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["path"], "/")
        self.assertIn(p[1:], r.body["children"])
        self.assertEqual(r.body["children"], sorted(r.body["children"]))
        self.assertEqual(self.c.exists("/").status, 200)
        self.assertEqual(self.c.children("/").body["children"], r.body["children"])

    def test_non_ascii_path_round_trips(self):
        p = self.fresh()
        r = self.c.create(p + "/żółw ✓", "x")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["path"], p + "/żółw ✓")
        self.assertEqual(self.c.children(p).body["children"], ["żółw ✓"])
        self.assertEqual(self.c.get(p + "/żółw ✓").body["path"], p + "/żółw ✓")

    # --- bad paths ----------------------------------------------------------------
    def test_bad_paths_are_bad_arguments_on_every_route(self):
        p = self.fresh()
        self.assertEqual(self.c.create(p + "/ok", "").status, 201)
        z = self.c.get(p).zxid
        bad = [p + "//x", p + "/", p + "/./x", p + "/../x", p + "/.", p + "/..",
               p + "/a%01b", p + "/%00", p + "/a%7Fb"]
        for raw in bad:
            url = "/v1/znodes" + raw
            with self.subTest(path=raw):
                self.assertError(self.c.request("GET", url), 400, "BAD_ARGUMENTS")
                self.assertError(self.c.request("POST", url, {"data": ""}), 400,
                                 "BAD_ARGUMENTS")
                self.assertError(self.c.request("PUT", url, {"data": ""}), 400,
                                 "BAD_ARGUMENTS")
                self.assertError(self.c.request("DELETE", url), 400, "BAD_ARGUMENTS")
                self.assertEqual(self.c.request("HEAD", url).status, 400)
                self.assertError(self.c.request("GET", "/v1/children" + raw), 400,
                                 "BAD_ARGUMENTS")
        c = self.c.children(p)
        self.assertEqual(c.body["children"], ["ok"])
        self.assertEqual(c.zxid, z, "a bad path must not write anything")

    # --- set ----------------------------------------------------------------------
    def test_set_bumps_version_mzxid_mtime_and_keeps_the_rest(self):
        p = self.fresh()
        c = self.c.create(p + "/n", "one")
        before = c.body["stat"]
        time.sleep(0.01)
        r = self.c.set(p + "/n", "three")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["path"], p + "/n")
        st = r.body["stat"]
        self.assertEqual(st["version"], 1)
        self.assertEqual(st["mzxid"], r.zxid)
        self.assertGreater(st["mzxid"], before["mzxid"])
        self.assertGreaterEqual(st["mtime"], before["mtime"])
        self.assertEqual(st["dataLength"], 5)
        for same in ("czxid", "ctime", "pzxid", "cversion", "aversion", "numChildren",
                     "ephemeralOwner"):
            self.assertEqual(st[same], before[same], same)
        self.assertEqual(self.c.data_of(p + "/n"), b"three")
        parent_before = self.stat(p)
        self.assertEqual(self.c.set(p + "/n", "four").status, 200)
        self.assertEqual(self.stat(p), parent_before, "a child's set must not touch the parent")

    def test_set_with_right_version_any_version_and_wrong_version(self):
        p = self.fresh()
        self.c.create(p + "/n", "v0")
        self.assertEqual(self.c.set(p + "/n", "v1", version=0).body["stat"]["version"], 1)
        self.assertEqual(self.c.set(p + "/n", "v2", version=-1).body["stat"]["version"], 2)
        self.assertEqual(self.c.set(p + "/n", "v3").body["stat"]["version"], 3)
        before = self.stat(p + "/n")
        r = self.c.set(p + "/n", "stale", version=1)
        self.assertError(r, 409, "BAD_VERSION", p + "/n")
        self.assertEqual(self.stat(p + "/n"), before)
        self.assertEqual(self.c.data_of(p + "/n"), b"v3")

    def test_set_missing_is_no_node(self):
        p = self.fresh()
        self.assertError(self.c.set(p + "/none", "x"), 404, "NO_NODE", p + "/none")
        self.assertEqual(self.c.exists(p + "/none").status, 404)

    # --- delete -------------------------------------------------------------------
    def test_delete_updates_parent_and_node_is_gone(self):
        p = self.fresh()
        self.c.create(p + "/d", "")
        before = self.stat(p)
        r = self.c.delete(p + "/d")
        self.assertEqual((r.status, r.raw), (204, b""))
        after = self.stat(p)
        self.assertEqual(after["cversion"], before["cversion"] + 1)
        self.assertEqual(after["numChildren"], before["numChildren"] - 1)
        self.assertEqual(after["pzxid"], r.zxid)
        self.assertEqual((after["version"], after["mzxid"]), (before["version"], before["mzxid"]))
        self.assertEqual(self.c.exists(p + "/d").status, 404)
        self.assertError(self.c.delete(p + "/d"), 404, "NO_NODE", p + "/d")

    def test_delete_with_versions(self):
        p = self.fresh()
        self.c.create(p + "/d", "")
        self.c.set(p + "/d", "x")  # version 1
        self.assertError(self.c.delete(p + "/d", version=0), 409, "BAD_VERSION", p + "/d")
        self.assertEqual(self.c.exists(p + "/d").status, 200)
        self.assertEqual(self.c.delete(p + "/d", version=1).status, 204)
        self.c.create(p + "/e", "")
        self.assertEqual(self.c.delete(p + "/e", version=-1).status, 204)

    def test_delete_with_children_is_not_empty(self):
        p = self.fresh()
        self.c.create(p + "/a", "")
        self.c.create(p + "/a/b", "")
        self.assertError(self.c.delete(p + "/a"), 409, "NOT_EMPTY", p + "/a")
        self.assertEqual(self.c.exists(p + "/a/b").status, 200)

    def test_delete_root_is_bad_arguments(self):
        self.assertError(self.c.request("DELETE", "/v1/znodes/"), 400, "BAD_ARGUMENTS")

    def test_bad_version_parameter_is_bad_arguments(self):
        p = self.fresh()
        self.c.create(p + "/d", "")
        r = self.c.request("DELETE", znode_url(p + "/d") + "?version=x")
        self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.exists(p + "/d").status, 200)

    # --- sync, cluster, health ----------------------------------------------------
    def test_sync_answers_path_and_current_zxid(self):
        p = self.fresh()
        z = self.c.create(p + "/s", "").zxid
        r = self.c.sync(p)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(r.body), {"path", "zxid"})
        self.assertEqual(r.body["path"], p)
        # At least everything before the call; a server may commit a marker for the sync.
        self.assertGreaterEqual(r.body["zxid"], z)
        self.assertEqual(r.body["zxid"], r.zxid)

    def test_cluster_standalone(self):
        r = self.c.cluster()
        self.assertEqual(r.status, 200, r)
        b = r.body
        self.assertEqual((b["id"], b["role"], b["leader"]), (1, "standalone", 1))
        self.assertEqual(b["zxid"], r.zxid)
        self.assertEqual(b["commit_zxid"], r.zxid)
        self.assertIsInstance(b["epoch"], int)
        self.assertEqual(b["members"], [{"id": 1, "http": self.server.address, "peer": None,
                                         "role": "standalone", "reachable": True}])

    def test_health(self):
        r = self.c.health()
        self.assertEqual((r.status, r.body), (200, {"status": "ok"}))

    # --- routing ------------------------------------------------------------------
    def test_unknown_routes_are_no_route_with_zxid(self):
        for method, url in [("GET", "/"), ("GET", "/v2/znodes/a"), ("GET", "/v1/nothing"),
                            ("POST", "/v1/znodesx/a"), ("GET", "/healthz"),
                            ("GET", "/v1/sessions/0123456789abcdef/nope")]:
            with self.subTest(method=method, url=url):
                r = self.c.request(method, url)
                self.assertError(r, 404, "NO_ROUTE")  # envelope checks Corral-Zxid

    def test_wrong_method_is_405_with_allow(self):
        p = self.fresh()
        cases = [("PATCH", znode_url(p), {"GET", "HEAD", "POST", "PUT", "DELETE"}),
                 ("POST", "/v1/children" + p, {"GET"}),
                 ("GET", "/v1/multi", {"POST"}),
                 ("GET", "/v1/sync" + p, {"POST"}),
                 ("GET", "/v1/sessions", {"POST"}),
                 ("PUT", "/v1/sessions/0123456789abcdef", {"GET", "DELETE"}),
                 ("GET", "/v1/sessions/0123456789abcdef/keepalive", {"POST"}),
                 ("POST", "/v1/cluster", {"GET"}),
                 ("DELETE", "/health", {"GET"})]
        for method, url, allowed in cases:
            with self.subTest(method=method, url=url):
                r = self.c.request(method, url)
                self.assertError(r, 405, "METHOD_NOT_ALLOWED")
                allow = {m.strip().upper() for m in r.headers.get("allow", "").split(",")
                         if m.strip()}
                # HEAD may be listed wherever GET is.
                self.assertEqual(allow - {"HEAD"}, allowed - {"HEAD"}, r.headers)

    # --- malformed requests -------------------------------------------------------
    def test_malformed_create_bodies_are_bad_arguments_and_change_nothing(self):
        p = self.fresh()
        before, z = self.stat(p), self.c.get(p).zxid
        bodies = ['{', '[]', '"x"', '42', 'null', '{"data": 5}', '{"data": ["a"]}',
                  '{"ephemeral": 1}', '{"sequential": "yes"}', '{"container": null}',
                  '{"ttl_ms": "x"}', '{"ttl_ms": 1.5}', '{"encoding": "hex", "data": "00"}',
                  '{"encoding": "base64", "data": "!!!"}', '{"encoding": 7, "data": ""}',
                  '{"data": "a"} trailing']
        for raw in bodies:
            with self.subTest(body=raw):
                r = self.c.request("POST", znode_url(p + "/n"), raw=raw)
                self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.exists(p + "/n").status, 404)
        self.assertUnchanged(p, before, z)

    def test_malformed_set_bodies_are_bad_arguments_and_change_nothing(self):
        p = self.fresh()
        self.c.create(p + "/n", "orig")
        before, z = self.stat(p + "/n"), self.c.get(p).zxid
        for raw in ['{', '[1]', '{"data": 1}', '{"data": "x", "version": "x"}',
                    '{"data": "x", "version": 1.5}', '{"data": "x", "encoding": "rot13"}',
                    '{"data": "***", "encoding": "base64"}']:
            with self.subTest(body=raw):
                r = self.c.request("PUT", znode_url(p + "/n"), raw=raw)
                self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertUnchanged(p + "/n", before, z)
        self.assertEqual(self.c.data_of(p + "/n"), b"orig")

    def test_unknown_fields_are_ignored(self):
        p = self.fresh()
        r = self.c.create(p + "/n", "x", colour="blue", extra={"a": 1})
        self.assertEqual(r.status, 201, r)
        r = self.c.set(p + "/n", "y", whatever=[1, 2])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.c.data_of(p + "/n"), b"y")

    def test_body_over_max_body_bytes_is_413(self):
        p = self.fresh()
        z = self.c.get(p).zxid
        big = "x" * (4 * 1024 * 1024 + 10)  # over the default 4 MiB body limit
        r = self.c.request("POST", znode_url(p + "/big"), {"data": big})
        self.assertError(r, 413, "PAYLOAD_TOO_LARGE")
        self.assertEqual(self.c.exists(p + "/big").status, 404)
        self.assertEqual(self.c.get(p).zxid, z)

    def test_one_mib_data_accepted_with_default_limit_and_one_more_byte_refused(self):
        p = self.fresh()
        mib = 1024 * 1024
        value = bytes((i * 7 + 3) % 251 for i in range(mib))
        r = self.c.create(p + "/big", base64.b64encode(value).decode(), encoding="base64")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["dataLength"], mib)
        g = self.c.get(p + "/big")
        self.assertEqual(decode_data(g.body), value)
        r = self.c.set(p + "/big", "a" * mib)
        self.assertEqual(r.status, 200, r)
        r = self.c.set(p + "/big", "a" * (mib + 1))
        self.assertError(r, 400, "BAD_ARGUMENTS")
        r = self.c.create(p + "/big2", "b" * (mib + 1))
        self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.exists(p + "/big2").status, 404)
        self.assertEqual(self.stat(p + "/big")["version"], 1)

    def test_pipelined_writes_are_answered_in_order_without_waiting_for_the_tick(self):
        """An HTTP/1.1 client may send its next requests before the answers come
        (pipelining). libmicrohttpd reads such a request in the same run that sends the
        previous answer, a run that comes from a timer; its log write used to start only
        after the loop's next poll, which slept until the next 10 ms tick, so 100
        pipelined sets took over a second instead of tens of milliseconds."""
        p = self.fresh()
        self.assertEqual(self.c.create(p + "/n", "0").status, 201)
        n = 100
        body = b'{"data": "%d"}'
        requests = b"".join(
            raw_http_request("PUT", znode_url(p + "/n"), body % i, "application/json")
            for i in range(1, n + 1))
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as s:
            started = time.monotonic()
            s.sendall(requests)
            received, answers = b"", []
            while len(answers) < n:
                head, sep, rest = received.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head) if sep else None
                if length and len(rest) >= int(length.group(1)):
                    answers.append((head, rest[:int(length.group(1))]))
                    received = rest[int(length.group(1)):]
                    continue
                chunk = s.recv(65536)
                self.assertTrue(chunk, "the server closed the connection after %d answers"
                                % len(answers))
                received += chunk
            elapsed = time.monotonic() - started
        for i, (head, answer) in enumerate(answers, start=1):
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
            self.assertEqual(json.loads(answer)["stat"]["version"], i, "answers out of order")
        self.assertEqual(self.c.data_of(p + "/n"), b"%d" % n)
        # Each write waiting for the 10 ms tick would take at least 1 s; a sync per write
        # on a slow disk (a few ms) stays well under it.
        self.assertLess(elapsed, 0.8, "100 pipelined writes took %.2f s" % elapsed)


class SmallLimitsTest(ServerTestCase):
    """--max-data-bytes 4096 --max-body-bytes 16384: exact boundaries."""
    server_name = "znode_api_limits"
    server_args = ("--max-data-bytes", "4096", "--max-body-bytes", "16384")

    def test_data_exactly_at_limit_accepted_one_over_refused(self):
        p = self.fresh()
        r = self.c.create(p + "/a", "a" * 4096)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["dataLength"], 4096)
        self.assertError(self.c.create(p + "/b", "b" * 4097), 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.exists(p + "/b").status, 404)
        self.assertError(self.c.set(p + "/a", "c" * 4097), 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.data_of(p + "/a"), b"a" * 4096)

    def test_limit_counts_bytes_not_characters(self):
        p = self.fresh()
        # "ż" is 2 bytes in UTF-8: 2048 of them is exactly 4096 bytes.
        self.assertEqual(self.c.create(p + "/u", "ż" * 2048).status, 201)
        self.assertError(self.c.create(p + "/v", "ż" * 2048 + "x"), 400, "BAD_ARGUMENTS")
        # base64 is counted decoded: 4096 bytes encode to 5464 characters.
        enc = base64.b64encode(b"\xff" * 4096).decode()
        self.assertEqual(self.c.create(p + "/w", enc, encoding="base64").status, 201)
        enc = base64.b64encode(b"\xff" * 4097).decode()
        self.assertError(self.c.create(p + "/x", enc, encoding="base64"), 400, "BAD_ARGUMENTS")

    def test_body_over_limit_is_413_and_at_limit_is_not(self):
        p = self.fresh()
        z = self.c.get(p).zxid
        r = self.c.request("POST", znode_url(p + "/big"), raw=b'{"data": "' + b"x" * 17000 + b'"}')
        self.assertError(r, 413, "PAYLOAD_TOO_LARGE")
        self.assertEqual(self.c.exists(p + "/big").status, 404)
        self.assertEqual(self.c.get(p).zxid, z)
        # A body of exactly 16384 bytes is within the limit (its data is over the data
        # limit, so 400, not 413).
        body = b'{"data": "' + b"y" * (16384 - 12) + b'"}'
        self.assertEqual(len(body), 16384)
        self.assertError(self.c.request("POST", znode_url(p + "/big"), raw=body), 400,
                         "BAD_ARGUMENTS")
        self.assertEqual(self.c.health().status, 200, "server still serves after a 413")


if __name__ == "__main__":
    run_tests()
