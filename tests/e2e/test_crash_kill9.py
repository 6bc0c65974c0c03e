#!/usr/bin/env python3
"""kill -9 mid-stream: every acknowledged write survives, every refused one is absent.

Each round: WRITERS threads, each on its own keep-alive connection and its own keys,
run create / set(version) / refused set(stale version) / refused create(existing)
cycles. After 2-3 s the server is killed with SIGKILL; on restart (same data dir) the
state must contain every acknowledged (2xx) write, with its data and at least its
version, and none of the refused (4xx) ones. A write whose answer never arrived is
uncertain: either outcome is allowed, nothing else."""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import Client, Server, decode_data, run_tests  # noqa: E402
import unittest  # noqa: E402

WRITERS = 4
ROUNDS = 3


class Writer(threading.Thread):
    """Writes /crash/r<round>/w<i>/k<n> until the connection breaks.

    acked[path]     = (data, version, mzxid) of the last acknowledged write
    uncertain[path] = set of data values whose write got no answer
    refused         = [(path, data)] of writes answered 4xx
    errors          = unexpected answers (fail the test)"""

    def __init__(self, port, base, seed):
        super().__init__(daemon=True)
        self.client = Client(port, timeout=10)
        self.base = base
        self.rng = random.Random(seed)
        self.acked, self.uncertain, self.refused, self.errors = {}, {}, [], []
        self.max_zxid = 0

    def _call(self, fn, path, data, *args, **kw):
        try:
            r = fn(path, data, *args, **kw)
        except Exception:  # connection refused/reset: outcome unknown
            self.uncertain.setdefault(path, set()).add(data)
            raise
        self.max_zxid = max(self.max_zxid, r.zxid)
        return r

    def run(self):
        n = 0
        try:
            while True:
                path = "%s/k%d" % (self.base, n)
                d0 = "c%d-%d" % (n, self.rng.randrange(10**6))
                r = self._call(self.client.create, path, d0)
                if r.status != 201:
                    self.errors.append(r)
                    return
                self.acked[path] = (d0, 0, r.body["stat"]["mzxid"])
                for v in range(self.rng.randrange(1, 4)):
                    d = "s%d-%d-%d" % (n, v, self.rng.randrange(10**6))
                    r = self._call(self.client.set, path, d, version=v)
                    if r.status != 200:
                        self.errors.append(r)
                        return
                    self.acked[path] = (d, v + 1, r.body["stat"]["mzxid"])
                bad = "stale%d" % n
                r = self._call(self.client.set, path, bad, version=0)
                if r.status != 409:
                    self.errors.append(r)
                    return
                self.refused.append((path, bad))
                dup = "dup%d" % n
                r = self._call(self.client.create, path, dup)
                if r.status != 409:
                    self.errors.append(r)
                    return
                self.refused.append((path, dup))
                n += 1
        except Exception:
            pass
        finally:
            self.client.close()


class CrashKill9Test(unittest.TestCase):
    server_name = "crash_kill9"
    server_args = ()

    def setUp(self):
        self.server = Server(self.server_name, self.server_args)
        self.server.start()
        self.c = self.server.client()

    def tearDown(self):
        self.server.stop()  # data dir kept: the test removes it only when it passed

    def check_round(self, writers):
        total_acked = 0
        for w in writers:
            self.assertEqual(w.errors, [], "unexpected answers before the kill")
            for path, (data, version, mzxid) in w.acked.items():
                total_acked += 1
                r = self.c.get(path, encoding="base64")
                allowed = {data} | w.uncertain.get(path, set())
                self.assertEqual(r.status, 200, "acknowledged write lost: %s %r" % (path, r))
                got = decode_data(r.body).decode()
                self.assertIn(got, allowed, "acknowledged data of %s lost" % path)
                self.assertGreaterEqual(r.body["stat"]["version"], version, path)
                self.assertGreaterEqual(r.body["stat"]["mzxid"], mzxid, path)
            for path, values in w.uncertain.items():
                if path in w.acked:
                    continue
                # Only the create was in flight: absent, or present with its data.
                got = self.c.data_of(path)
                if got is not None:
                    self.assertIn(got.decode(), values, path)
            for path, data in w.refused:
                got = self.c.data_of(path)
                self.assertNotEqual(got, data.encode(), "refused write %s applied" % path)
            # Nothing beyond what was attempted exists.
            kids = self.c.children(w.base).body["children"]
            attempted = {p.rsplit("/", 1)[1] for p in set(w.acked) | set(w.uncertain)}
            self.assertLessEqual(set(kids), attempted)
        return total_acked

    def test_acknowledged_writes_survive_kill9(self):
        rng = random.Random(int(os.environ.get("CORRAL_SEED", "0")) or None)
        self.assertEqual(self.c.create("/crash", "").status, 201)
        for rnd in range(ROUNDS):
            with self.subTest(round=rnd):
                base = "/crash/r%d" % rnd
                self.assertEqual(self.c.create(base, "").status, 201)
                writers = []
                for i in range(WRITERS):
                    r = self.c.create("%s/w%d" % (base, i), "")
                    self.assertEqual(r.status, 201, r)
                    writers.append(Writer(self.server.port, "%s/w%d" % (base, i),
                                          rng.randrange(2**32)))
                for w in writers:
                    w.start()
                time.sleep(rng.uniform(2.0, 3.0))
                self.server.kill9()
                for w in writers:
                    w.join(15)
                    self.assertFalse(w.is_alive(), "writer hangs after kill -9")
                self.server.start()
                acked = self.check_round(writers)
                self.assertGreater(acked, WRITERS * 5, "too few writes to mean anything")
                max_acked_zxid = max(w.max_zxid for w in writers)
                r = self.c.health()
                self.assertGreaterEqual(r.zxid, max_acked_zxid,
                                        "server restarted behind an acknowledged zxid")
                # And it serves writes again, durably across a clean restart.
                self.assertEqual(self.c.create(base + "/after", "ok").status, 201)
                # Earlier rounds are all still there.
                for prev in range(rnd):
                    self.assertEqual(self.c.exists("/crash/r%d/after" % prev).status, 200)
        self.assertEqual(self.server.restart(), 0)
        for rnd in range(ROUNDS):
            self.assertEqual(self.c.data_of("/crash/r%d/after" % rnd), b"ok")
        self.assertEqual(self.server.stop(), 0)
        self.server.cleanup()



class CrashKill9PipelinedTest(CrashKill9Test):
    """The same with two log batches written at once: a kill can leave the later batch on
    disk behind a gap where the earlier one should be; recovery must cut it, and still
    lose nothing acknowledged."""
    server_name = "crash_kill9_pipelined"
    server_args = ("--wal-batches-in-flight", "2")


if __name__ == "__main__":
    run_tests()
