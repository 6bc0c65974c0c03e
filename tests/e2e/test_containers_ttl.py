#!/usr/bin/env python3
"""Container and TTL nodes are reaped as in ZooKeeper (server --container-check-ms 100).

A container is deleted once it has had a child and is empty again. A TTL node is
deleted once it has no children and has not been modified for ttl_ms."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import ServerTestCase, run_tests, wait_until  # noqa: E402

CHECK_MS = 100
REAP_WITHIN_S = 3.0  # generous: several check periods


class ContainersTtlTest(ServerTestCase):
    server_name = "containers_ttl"
    server_args = ("--container-check-ms", str(CHECK_MS))

    def exists(self, path):
        return self.c.exists(path).status == 200

    def wait_reaped(self, path, within=REAP_WITHIN_S):
        wait_until(lambda: not self.exists(path), within, message="%s reaped" % path)

    def assertSurvives(self, path, seconds):
        """path exists throughout `seconds` (checked every 50 ms)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.assertTrue(self.exists(path), "%s was reaped too early" % path)
            time.sleep(0.05)

    # --- containers ---------------------------------------------------------------
    def test_container_create_stat(self):
        p = self.fresh()
        r = self.c.create(p + "/c", "cdata", container=True)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["path"], p + "/c")
        self.assertEqual(r.body["stat"]["ephemeralOwner"], "0")
        self.assertEqual(self.c.data_of(p + "/c"), b"cdata")

    def test_container_survives_while_it_has_children_and_goes_after_the_last(self):
        p = self.fresh()
        self.assertEqual(self.c.create(p + "/c", "", container=True).status, 201)
        self.assertEqual(self.c.create(p + "/c/a", "").status, 201)
        self.assertEqual(self.c.create(p + "/c/b", "").status, 201)
        self.assertSurvives(p + "/c", 5 * CHECK_MS / 1000)
        self.assertEqual(self.c.delete(p + "/c/a").status, 204)
        self.assertSurvives(p + "/c", 5 * CHECK_MS / 1000)  # still has /b
        before = self.c.get(p).body["stat"]
        self.assertEqual(self.c.delete(p + "/c/b").status, 204)
        self.wait_reaped(p + "/c")
        after = self.c.get(p).body["stat"]
        self.assertEqual(after["numChildren"], before["numChildren"] - 1)
        self.assertEqual(after["cversion"], before["cversion"] + 1)
        self.assertEqual(self.c.children(p).body["children"], [])

    def test_container_with_grandchildren_is_kept_until_they_go(self):
        p = self.fresh()
        self.c.create(p + "/c", "", container=True)
        self.c.create(p + "/c/sub", "")
        self.c.create(p + "/c/sub/leaf", "")
        self.assertSurvives(p + "/c", 5 * CHECK_MS / 1000)
        self.c.delete(p + "/c/sub/leaf")
        self.c.delete(p + "/c/sub")
        self.wait_reaped(p + "/c")

    def test_nested_containers_are_reaped_bottom_up(self):
        p = self.fresh()
        self.c.create(p + "/outer", "", container=True)
        self.c.create(p + "/outer/inner", "", container=True)
        self.c.create(p + "/outer/inner/x", "")
        self.c.delete(p + "/outer/inner/x")
        self.wait_reaped(p + "/outer/inner")
        self.wait_reaped(p + "/outer")

    def test_container_used_as_lock_parent_with_ephemeral_sequentials(self):
        p = self.fresh()
        self.c.create(p + "/lock", "", container=True)
        sid = self.c.open_session(10000).body["id"]
        r = self.c.create(p + "/lock/n-", "", ephemeral=True, sequential=True, session=sid)
        self.assertEqual(r.body["path"], p + "/lock/n-0000000000")
        self.assertSurvives(p + "/lock", 3 * CHECK_MS / 1000)
        self.assertEqual(self.c.close_session(sid).status, 204)
        self.wait_reaped(p + "/lock")

    def test_container_invalid_combinations(self):
        p = self.fresh()
        self.assertError(self.c.create(p + "/c", "", container=True, sequential=True),
                         400, "BAD_ARGUMENTS")
        self.assertError(self.c.create(p + "/c", "", container=True, ttl_ms=500),
                         400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.exists(p + "/c").status, 404)

    # --- TTL ----------------------------------------------------------------------
    def test_ttl_node_deleted_after_ttl_when_childless(self):
        p = self.fresh()
        ttl = 600
        r = self.c.create(p + "/t", "x", ttl_ms=ttl)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["ephemeralOwner"], "0")
        created = time.monotonic()
        self.assertSurvives(p + "/t", ttl / 1000 / 3)
        self.wait_reaped(p + "/t", ttl / 1000 + REAP_WITHIN_S)
        self.assertGreaterEqual(time.monotonic() - created, ttl / 1000 * 0.9,
                                "TTL node reaped before its ttl")

    def test_ttl_node_refreshed_by_set(self):
        p = self.fresh()
        ttl = 800
        self.c.create(p + "/t", "0", ttl_ms=ttl)
        deadline = time.monotonic() + 2.5 * ttl / 1000
        i = 0
        while time.monotonic() < deadline:
            i += 1
            r = self.c.set(p + "/t", str(i))
            self.assertEqual(r.status, 200, "TTL node reaped although modified: %r" % (r,))
            time.sleep(ttl / 1000 / 4)
        self.assertEqual(self.c.data_of(p + "/t"), str(i).encode())
        self.wait_reaped(p + "/t", ttl / 1000 + REAP_WITHIN_S)

    def test_ttl_node_with_children_is_kept_then_reaped_after_last_child(self):
        p = self.fresh()
        ttl = 300
        self.c.create(p + "/t", "", ttl_ms=ttl)
        self.c.create(p + "/t/kid", "")
        self.assertSurvives(p + "/t", 3 * ttl / 1000)
        self.c.delete(p + "/t/kid")
        # Its mtime is older than ttl already, so it goes at the next check.
        self.wait_reaped(p + "/t")

    def test_sequential_ttl_node(self):
        p = self.fresh()
        r = self.c.create(p + "/s-", "", ttl_ms=400, sequential=True)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["path"], p + "/s-0000000000")
        self.wait_reaped(p + "/s-0000000000", 0.4 + REAP_WITHIN_S)

    def test_ttl_invalid_combinations(self):
        p = self.fresh()
        sid = self.c.open_session(10000).body["id"]
        self.assertError(self.c.create(p + "/t", "", ttl_ms=500, ephemeral=True, session=sid),
                         400, "BAD_ARGUMENTS")
        self.assertError(self.c.create(p + "/t", "", ttl_ms=-1), 400, "BAD_ARGUMENTS")
        self.c.close_session(sid)
        self.assertEqual(self.c.exists(p + "/t").status, 404)

    def test_persistent_nodes_are_never_reaped(self):
        p = self.fresh()
        self.c.create(p + "/plain", "")
        self.c.create(p + "/had-kid", "")
        self.c.create(p + "/had-kid/k", "")
        self.c.delete(p + "/had-kid/k")
        self.assertSurvives(p + "/had-kid", 6 * CHECK_MS / 1000)
        self.assertTrue(self.exists(p + "/plain"))

    def test_reaping_survives_restart(self):
        p = self.fresh()
        self.c.create(p + "/c", "", container=True)
        self.c.create(p + "/c/k", "")
        self.c.create(p + "/t", "", ttl_ms=500)
        self.assertEqual(self.server.restart(), 0)
        self.assertTrue(self.exists(p + "/c"), "container lost in restart")
        self.c.delete(p + "/c/k")
        self.wait_reaped(p + "/c")
        self.wait_reaped(p + "/t", 0.5 + REAP_WITHIN_S)
        self.assertEqual(self.server.restart(), 0)
        self.assertEqual(self.c.children(p).body["children"], [])


if __name__ == "__main__":
    run_tests()
