#!/usr/bin/env python3
"""Read-your-writes: Corral-Min-Zxid (wait, then 503 BEHIND), session FIFO (a read in a
session waits for the session's earlier writes), and sync."""

import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import (ServerTestCase, check_envelope, children_url,  # noqa: E402
                            run_tests, znode_url, Response)

MIN_ZXID = "Corral-Min-Zxid"


class MinZxidBehindTest(ServerTestCase):
    server_name = "ryw_behind"
    server_args = ("--min-zxid-wait-ms", "300")

    def test_min_zxid_reached_answers_at_once(self):
        p = self.fresh()
        z = self.c.set(p, "v").zxid
        for mz in (0, 1, z):
            with self.subTest(min_zxid=mz):
                t0 = time.monotonic()
                r = self.c.request("GET", znode_url(p), headers={MIN_ZXID: str(mz)})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body["data"], "v")
                self.assertGreaterEqual(r.zxid, mz)
                self.assertLess(time.monotonic() - t0, 0.25)

    def test_min_zxid_ahead_waits_then_behind(self):
        p = self.fresh()
        cur = self.c.cluster().zxid
        for method, url in [("GET", znode_url(p)), ("GET", children_url(p)),
                            ("HEAD", znode_url(p))]:
            with self.subTest(method=method, url=url):
                t0 = time.monotonic()
                r = self.c.request(method, url, headers={MIN_ZXID: str(cur + 5)})
                el = time.monotonic() - t0
                self.assertEqual(r.status, 503, r)
                if method != "HEAD":
                    self.assertError(r, 503, "BEHIND")
                self.assertEqual(r.zxid, cur)
                self.assertGreaterEqual(el, 0.25)
                self.assertLess(el, 2.0)

    def test_bad_min_zxid_header(self):
        p = self.fresh()
        for v in ("x", "-1", "1.5"):
            with self.subTest(value=v):
                r = self.c.request("GET", znode_url(p), headers={MIN_ZXID: v})
                self.assertError(r, 400, "BAD_ARGUMENTS")


class MinZxidReleaseTest(ServerTestCase):
    server_name = "ryw_release"
    server_args = ("--min-zxid-wait-ms", "5000")

    def test_waiting_read_is_released_by_other_writes(self):
        p = self.fresh()
        target = self.c.cluster().zxid + 3
        other = self.server.client()
        out = {}

        def read():
            out["r"] = other.request("GET", znode_url(p), headers={MIN_ZXID: str(target)})
            out["at"] = time.monotonic()
        t = threading.Thread(target=read)
        t.start()
        time.sleep(0.3)
        self.assertEqual(self.c.set(p, "1").status, 200)
        self.assertEqual(self.c.set(p, "2").status, 200)
        time.sleep(0.3)
        self.assertNotIn("r", out, "answered before Corral-Min-Zxid was reached")
        r = self.c.set(p, "3")
        self.assertEqual((r.status, r.zxid), (200, target))
        written = time.monotonic()
        t.join(10)
        self.assertFalse(t.is_alive())
        r = out["r"]
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["data"], "3")
        self.assertEqual(r.body["stat"]["mzxid"], target)
        self.assertGreaterEqual(r.zxid, target)
        self.assertLess(out["at"] - written, 1.0)


class FifoAndSyncTest(ServerTestCase):
    server_name = "ryw_fifo"

    def send(self, conn, method, url, sid, body=None):
        hdrs = {"Corral-Session": sid}
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, url, body=raw, headers=hdrs)

    def receive(self, conn, method, url):
        resp = conn.getresponse()
        data = resp.read()
        h = {k.lower(): v for k, v in resp.getheaders()}
        r = Response(resp.status, h, json.loads(data) if data else None, data, method, url)
        check_envelope(r)
        return r

    def test_session_read_sees_the_sessions_earlier_write(self):
        p = self.fresh()
        sid = self.c.open_session(20000).body["id"]
        wconn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        rconn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            for i in range(50):
                path = "%s/n%02d" % (p, i)
                # The create goes out first on one connection, the read right after on
                # another; neither waits for the other's answer.
                self.send(wconn, "POST", znode_url(path), sid, {"data": "v%d" % i})
                time.sleep(0.002)
                self.send(rconn, "GET", znode_url(path), sid)
                rr = self.receive(rconn, "GET", znode_url(path))
                wr = self.receive(wconn, "POST", znode_url(path))
                self.assertEqual(wr.status, 201, wr)
                self.assertEqual(rr.status, 200, "read %d overtook the session's create: %r"
                                 % (i, rr))
                self.assertEqual(rr.body["data"], "v%d" % i)
                self.assertEqual(rr.body["stat"]["czxid"], wr.body["stat"]["czxid"])
                # and a children read of the parent, after a delete in the same session
                self.send(wconn, "DELETE", znode_url(path), sid)
                time.sleep(0.002)
                self.send(rconn, "GET", children_url(p), sid)
                cr = self.receive(rconn, "GET", children_url(p))
                dr = self.receive(wconn, "DELETE", znode_url(path))
                self.assertEqual(dr.status, 204, dr)
                self.assertEqual(cr.body["children"], [], "read %d overtook the delete" % i)
        finally:
            wconn.close()
            rconn.close()
            self.c.close_session(sid)

    def test_sync_returns_the_applied_zxid(self):
        p = self.fresh()
        last = self.c.set(p, "v").zxid
        r = self.c.sync(p)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"path": p, "zxid": r.zxid})
        self.assertGreaterEqual(r.body["zxid"], last)
        self.assertEqual(r.body["zxid"], last)   # nothing else written since
        # The node need not exist.
        r = self.c.sync(p + "/missing")
        self.assertEqual((r.status, r.body), (200, {"path": p + "/missing", "zxid": last}))

    def test_sync_after_concurrent_writes(self):
        p = self.fresh()
        acked = []
        lock = threading.Lock()

        def writer(k):
            c = self.server.client()
            for i in range(20):
                r = c.create("%s/w%d-%d" % (p, k, i), "")
                assert r.status == 201, r
                with lock:
                    acked.append(r.body["stat"]["czxid"])
        ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        r = self.c.sync("/")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["zxid"], r.zxid)
        self.assertEqual(r.body["zxid"], max(acked))
        self.assertEqual(len(set(acked)), 80)
        self.assertEqual(self.c.get(p).body["stat"]["numChildren"], 80)


if __name__ == "__main__":
    run_tests()
