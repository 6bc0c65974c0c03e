#!/usr/bin/env python3
"""A session survives a leader failover: a client that keeps its session alive through
a follower keeps its ephemeral node while the leader is killed with -9 and a new one is
elected (the new leader gives every session a fresh timeout rather than expiring those
it has not heard from). Once the client falls silent, the new leader expires the session
and its ephemeral is gone on every member."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import run_tests  # noqa: E402
from cluster_harness import Cluster, wait_until_value  # noqa: E402

TIMEOUT_MS = 2000


class SessionFailover(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster("session_failover", 3, ["--tick-ms", "200"])
        self.cluster.start(timeout=60)
        self.addCleanup(self.cluster.cleanup)

    def test_session_and_ephemeral_survive_leader_kill(self):
        cl = self.cluster
        leader = cl.wait_healthy()
        follower = [m for m in cl if m.id != leader.id][0]
        c = follower.client()
        r = c.open_session(TIMEOUT_MS)
        self.assertEqual(r.status, 201, r)
        sid = r.body["id"]
        self.assertEqual(r.body["timeout_ms"], TIMEOUT_MS)
        r = c.create("/owned", "alive", ephemeral=True, session=sid)
        self.assertEqual(r.status, 201, r)

        stop = threading.Event()
        failures = []
        last_ok = [time.monotonic()]

        def heartbeat():
            hc = follower.client()
            while not stop.is_set():
                sent = time.monotonic()
                r = hc.keepalive(sid)
                if r.status == 200:
                    last_ok[0] = sent
                elif r.code == "SESSION_EXPIRED":
                    failures.append(r)
                stop.wait(TIMEOUT_MS / 1000.0 / 4)

        t = threading.Thread(target=heartbeat, daemon=True)
        t.start()
        try:
            time.sleep(TIMEOUT_MS / 1000.0)
            cl.kill9(leader.id)
            new_leader = cl.wait_healthy(members=[m for m in cl if m.id != leader.id],
                                         timeout=30)
            self.assertNotEqual(new_leader.id, leader.id)
            # Well past the timeout under the new leader: still alive, node still there.
            time.sleep(3 * TIMEOUT_MS / 1000.0)
            self.assertEqual(failures, [], "the session expired during the failover")
            for m in cl:
                if m.id == leader.id:
                    continue
                mc = m.client()
                mc.sync("/")
                self.assertEqual(mc.exists("/owned").status, 200, "member %d" % m.id)
                self.assertEqual(mc.session_info(sid).status, 200, "member %d" % m.id)
        finally:
            stop.set()
            t.join(5)
        # Silent now: the new leader expires it, and the node goes everywhere, but not
        # before a timeout has passed since the session was last heard from.

        def gone():
            return all(m.client().exists("/owned").status == 404
                       for m in cl if m.id != leader.id)
        wait_until_value(gone, 3 * TIMEOUT_MS / 1000.0 + 10, interval=0.1,
                         message="the silent session's ephemeral gone on all members")
        self.assertGreaterEqual(time.monotonic() - last_ok[0], TIMEOUT_MS / 1000.0)


if __name__ == "__main__":
    run_tests()
