#!/usr/bin/env python3
"""A (nearly) full disk: writes get 507 NO_SPACE with a JSON error and change nothing,
reads go on, and writes come back once there is room again.

A real full disk cannot be made safely on a shared machine, so the server is told that
it needs more free space than the file system has (--min-free-disk-bytes): from the
server's point of view that is exactly a full disk. Restarting with the default bound
is "space was freed"."""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import Server, ServerTestCase, run_tests, TEST_DIR  # noqa: E402


class DiskFullTest(ServerTestCase):
    server_name = "disk_full"

    def test_writes_refused_reads_served_then_writes_again(self):
        r = self.c.create("/kept", "before")
        self.assertEqual(r.status, 201, r)
        self.server.stop()
        free = shutil.disk_usage(TEST_DIR).free
        self.server.start(extra_args=("--min-free-disk-bytes", str(free * 4 + 2**40)))
        c = self.server.client()
        zxid = c.cluster().body["zxid"]
        for resp in (c.create("/new", "x"), c.set("/kept", "after"), c.delete("/kept"),
                     c.multi([{"op": "create", "path": "/m"}]), c.open_session(5000)):
            self.assertError(resp, 507, "NO_SPACE")
            self.assertIn("full", resp.body["error"]["message"])
        # nothing changed, reads still work
        self.assertEqual(c.cluster().body["zxid"], zxid)
        self.assertEqual(c.data_of("/kept"), b"before")
        self.assertEqual(c.get("/new").status, 404)
        self.assertIn("disk nearly full", self.server.log())
        # space is back
        self.server.stop()
        self.server.start()
        c = self.server.client()
        r = c.create("/new", "x")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(c.data_of("/kept"), b"before")


if __name__ == "__main__":
    run_tests()
