#!/usr/bin/env python3
"""Catch-up of a member that fell behind, and repair of a member whose log diverged.

1. A follower is killed; 100,000 creates (200 /v1/multi of 500) and then 20,500 single
   writes happen without it, on a cluster run with --snapshot-every 6000 (each member
   draws 3,000-8,999 txns before each snapshot): the leader snapshots past zxid 11,700
   and compacts its log (it keeps 10,000 trailing entries), so the follower's next
   entry is gone and it must install the leader's snapshot. After
   its restart it must report the snapshot install, reach the same zxid, and have the
   same tree (children counts of every parent, a random sample of 1,000 nodes with data
   and stat, the hot keys, and every parent's stat).
2. The leader is cut off from both followers (links black-holed) while clients send it
   writes: it appends them to its log but can never commit them. The majority elects a
   new leader that commits other writes at the same log positions. After healing, the
   old leader must discard its entries: none of those writes was acknowledged, none
   exists on any member, and every member has the same tree.
"""

import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import Client, run_tests  # noqa: E402
from cluster_harness import Cluster, children_of, wait_until_value  # noqa: E402

PARENTS = 100
MULTIS = 200
OPS_PER_MULTI = 500
SINGLE_WRITES = 20500
WRITERS = 6


class Catchup(unittest.TestCase):
    maxDiff = None

    def run(self, result=None):
        self.cluster = None
        failures = len(result.failures) + len(result.errors) if result else 0
        result = super().run(result)
        if self.cluster is not None:
            if result is not None and len(result.failures) + len(result.errors) > failures:
                self.cluster.mark_failed()  # keep its data dirs and logs
            self.cluster.cleanup()
        return result

    def bulk_create(self, c, ops):
        """A multi of creates that must end applied. 503/504 (a busy CI machine can
        change leaders mid-load) leave the outcome unknown: send it again; a multi is
        all or nothing, so NODE_EXISTS on its first op means the earlier try applied."""
        for _ in range(10):
            r = c.multi(ops)
            if r.status == 200:
                return
            if r.status == 409 and r.body["error"]["code"] == "NODE_EXISTS" and \
                    r.body["error"].get("index") == 0:
                return
            self.assertIn(r.status, (503, 504), r)
            time.sleep(0.5)
        self.fail("bulk multi never applied: %r" % (r,))

    def test_member_catches_up_by_snapshot(self):
        # An election timeout of 1 s rather than 300 ms: this test is about catching up,
        # and on a loaded CI machine (other cluster tests beside it, 120,000 writes, a
        # snapshot fork every few thousand txns) a member can miss 300 ms of heartbeats.
        cl = self.cluster = Cluster("cluster_catchup", 3,
                                    ["--snapshot-every", "6000", "--tick-ms", "200", "--request-timeout-ms", "30000"],
                                    election_timeout_ms=1000, request_timeout_ms=20000)
        cl.start(timeout=60)
        leader = cl.wait_leader()
        lagger = [m for m in cl if m.id != leader.id][0]
        lc = leader.client(timeout=60)
        self.assertEqual(lc.create("/cu", "").status, 201)
        r = lc.multi([{"op": "create", "path": "/cu/p%d" % k, "data": ""}
                      for k in range(PARENTS)])
        self.assertEqual(r.status, 200, r)
        cl.barrier()
        lagger_zxid = lagger.info()["zxid"]
        lagger.kill9()
        t0 = time.monotonic()
        per_parent = MULTIS * OPS_PER_MULTI // PARENTS
        for b in range(MULTIS):
            parent = b % PARENTS
            base = (b // PARENTS) * OPS_PER_MULTI
            ops = [{"op": "create", "path": "/cu/p%d/n%d" % (parent, base + i),
                    "data": "d%d-%d" % (parent, base + i)} for i in range(OPS_PER_MULTI)]
            self.bulk_create(lc, ops)
        t1 = time.monotonic()
        errors = []
        retried = []

        def writer(t):
            c = Client(leader.port, timeout=60)
            try:
                self.assertEqual(c.create("/cu/hot%d" % t, "0").status, 201)
                for i in range(SINGLE_WRITES // WRITERS + 1):
                    # As a client would: NO_QUORUM (nothing applied) and TIMEOUT (outcome
                    # unknown; a plain set is safe to repeat) during an election are
                    # retried, a few times.
                    for attempt in range(5):
                        r = c.set("/cu/hot%d" % t, "h%d-%d" % (t, i))
                        if r.status not in (503, 504):
                            break
                        retried.append(r)
                        time.sleep(0.5)
                    if r.status != 200:
                        errors.append(r)
                        return
            finally:
                c.close()
        ths = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(WRITERS)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(600)
        self.assertEqual(errors, [])
        t2 = time.monotonic()
        print("\n100,000 creates in %.1fs (multi), %d single writes in %.1fs (%d retried)"
              % (t1 - t0, SINGLE_WRITES, t2 - t1, len(retried)), flush=True)
        # The leader snapshotted and compacted past the lagger's position: its
        # thresholds are drawn in [3,000, 9,000) and the writes end past zxid 20,700, so
        # one snapshot starts at 11,700 or later, and the 10,000 entries kept behind it
        # no longer reach back to the lagger's next one.
        leader.wait_for_log(r"snapshot at zxid (1[1-9]|[2-9][0-9])[0-9]{3}:", timeout=60)
        leader_zxid = leader.info()["zxid"]
        self.assertGreater(leader_zxid - lagger_zxid, 20000)
        lagger.start()
        cl.wait_healthy(timeout=120)
        zx = cl.wait_same_zxid(timeout=120)
        self.assertGreaterEqual(zx, leader_zxid)
        # Same tree: counts per parent, every parent's stat, hot keys, a random sample.
        clients = {m.id: m.client(timeout=60) for m in cl}
        for k in range(PARENTS):
            counts = {mid: len(children_of(cl[mid].port, "/cu/p%d" % k)) for mid in clients}
            self.assertEqual(set(counts.values()), {per_parent}, "children of /cu/p%d: %s"
                             % (k, counts))
        # Nothing is written any more, so a member can only move past zx by a new
        # leader's empty first entry: an election under load (the election timeout is
        # 300 ms, and CI runs other cluster tests beside this one). That changes no node,
        # so the comparison below still holds; anything else moving is a failure.
        after = cl.wait_same_zxid(timeout=120)
        if after != zx:
            print("zxid moved %d -> %d while checking (an election's empty entry)"
                  % (zx, after), flush=True)
            self.assertLessEqual(after - zx, 3, "members moved with nothing written")

        def node(c, path):
            r = c.get(path)
            self.assertEqual(r.status, 200, r)
            return r.body

        paths = ["/cu"] + ["/cu/p%d" % k for k in range(PARENTS)] + \
            ["/cu/hot%d" % t for t in range(WRITERS)]
        rng = random.Random(1)
        paths += ["/cu/p%d/n%d" % (rng.randrange(PARENTS), rng.randrange(per_parent))
                  for _ in range(1000)]
        ref = {p: node(clients[leader.id], p) for p in paths}
        for mid, c in clients.items():
            for p in paths:
                self.assertEqual(node(c, p), ref[p], "member %d, %s" % (mid, p))
        self.assertEqual(ref["/cu/hot0"]["data"], "h0-%d" % (SINGLE_WRITES // WRITERS))
        installed = lagger.log_lines(r"installed the leader's snapshot")
        print("catch-up path: %s" % installed, flush=True)
        # The leader no longer holds the entries the lagger missed: only a snapshot
        # install can have brought it back.
        self.assertTrue(installed, "the lagging member caught up without a snapshot install")
        # The caught-up member works as a follower afterwards.
        r = clients[lagger.id].create("/cu/after", "x")
        self.assertEqual(r.status, 201, r)
        for m in cl:
            g = m.client().request("GET", "/v1/znodes/cu/after",
                                   headers={"Corral-Min-Zxid": str(r.zxid)})
            self.assertEqual(g.status, 200, (m.id, g))

    def test_catch_up_after_many_snapshots(self):
        # A follower that missed 13,000 entries across about a dozen leader snapshots
        # (--snapshot-every 1000: each member snapshots after a random 500 to 1,499
        # txns, so that members do not all snapshot at once) catches up exactly. Which
        # path it takes is printed: by the code's design (10,000 trailing entries kept
        # after a snapshot) it should be a snapshot install, but we have seen it replay
        # entries the leader should have compacted (see the report: suspected missing
        # log compaction). Not asserted: it varies from run to run.
        cl = self.cluster = Cluster("cluster_snapinstall", 3, ["--snapshot-every", "1000", "--request-timeout-ms", "30000"],
                                    request_timeout_ms=20000)
        cl.start(timeout=60)
        leader = cl.wait_leader()
        lagger = [m for m in cl if m.id != leader.id][0]
        self.assertEqual(leader.client().create("/si", "").status, 201)
        cl.barrier()
        lagger_zxid = lagger.info()["zxid"]
        lagger.kill9()
        errors = []

        def writer(t):
            c = Client(leader.port, timeout=60)
            try:
                c.create("/si/%d" % t, "")
                for i in range(13000 // WRITERS + 1):
                    r = c.set("/si/%d" % t, "x%d" % i)
                    if r.status != 200:
                        errors.append(r)
                        return
            finally:
                c.close()
        ths = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(WRITERS)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(600)
        self.assertEqual(errors, [])
        # The writes end past zxid 13,000 and snapshots come less than 1,500 txns apart,
        # so one lands at 11,000 or later: its log keeps 10,000 entries, which no longer
        # reach back to the follower's next one.
        leader.wait_for_log(r"snapshot at zxid 1[1-9][0-9]{3}", timeout=60)
        # Each member draws its snapshot threshold in [500, 1500) before each snapshot,
        # so that members do not fork at once. With one fixed threshold every interval
        # between a member's snapshots would be 1,000 or more (a snapshot is due only
        # once 1,000 txns were applied since the last); with the draws, about half are
        # under 950. Two members, a dozen intervals each: all 950 or more by chance is
        # ~0.55^24.
        other = [m for m in cl if m.id not in (leader.id, lagger.id)][0]

        def snapshot_intervals(m):
            zxids = sorted(int(line.split("snapshot at zxid ")[1].split(":")[0])
                           for line in m.log_lines(r"snapshot at zxid [0-9]+:"))
            return [b - a for a, b in zip(zxids, zxids[1:])]
        intervals = snapshot_intervals(leader) + snapshot_intervals(other)
        self.assertGreaterEqual(len(intervals), 10, intervals)
        self.assertLess(min(intervals), 950, intervals)
        leader_zxid = leader.info()["zxid"]
        lagger.start()
        cl.wait_healthy(timeout=120)
        # wait_same_zxid also checks the leader's commit; an election meanwhile may add a
        # new leader's empty entry, so the zxid may be past leader_zxid.
        self.assertGreaterEqual(cl.wait_same_zxid(timeout=60), leader_zxid)
        installed = lagger.log_lines(r"installed the leader's snapshot")
        print("\ncatch-up path: %s" % installed, flush=True)
        self.assertTrue(installed, "caught up from entry %d without a snapshot install"
                        % (lagger_zxid + 1))
        for m in cl:
            for t in range(WRITERS):
                self.assertEqual(m.client().get("/si/%d" % t).body["data"],
                                 "x%d" % (13000 // WRITERS), "member %d" % m.id)

    def test_diverged_leader_discards_uncommitted_entries(self):
        cl = self.cluster = Cluster("cluster_diverge", 3, ["--tick-ms", "200"],
                                    election_timeout_ms=1000, request_timeout_ms=4000)
        cl.start(timeout=60)
        old = cl.wait_leader()
        lc = old.client(timeout=30)
        self.assertEqual(lc.create("/dv", "").status, 201)
        self.assertEqual(lc.create("/dv/x", "committed").status, 201)
        cl.barrier()
        base = old.info()["commit_zxid"]
        cl.isolate(old.id, mode="drop")
        answers = {}

        def send(i):
            c = Client(old.port, timeout=30)
            try:
                if i % 2:
                    answers[i] = c.create("/dv/old-%d" % i, "never")
                else:
                    answers[i] = c.set("/dv/x", "never-%d" % i)
            except Exception as exc:  # noqa: BLE001
                answers[i] = exc
            finally:
                c.close()
        ths = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(8)]
        for th in ths:
            th.start()
        # While it still believes it leads, its log grows past its commit index.
        diverged = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            info = old.info()
            if info and info["role"] == "leader":
                me = [m for m in info["members"] if m["id"] == old.id][0]
                if me.get("match_zxid", 0) > info["commit_zxid"]:
                    diverged = (me["match_zxid"], info["commit_zxid"])
                    break
            time.sleep(0.01)
        self.assertIsNotNone(diverged, "the isolated leader never appended the writes")
        others = [m for m in cl if m.id != old.id]
        new = cl.wait_leader(others, timeout=30)
        nc = new.client(timeout=30)
        for i in range(5):
            r = nc.set("/dv/x", "new-%d" % i)
            self.assertEqual(r.status, 200, r)
            r = nc.create("/dv/new-%d" % i, "n")
            self.assertEqual(r.status, 201, r)
        for th in ths:
            th.join(60)
        for i, a in sorted(answers.items()):
            self.assertFalse(not isinstance(a, Exception) and 200 <= a.status < 300,
                             "a write to the isolated leader was acknowledged: %r" % (a,))
            if not isinstance(a, Exception):
                self.assertIn((a.status, a.code), [(504, "TIMEOUT"), (503, "NO_QUORUM")], a)
        cl.heal_all()
        cl.wait_healthy(timeout=60)
        cl.barrier()
        dumps = cl.dumps("/dv", timeout=60)
        for mid, d in dumps.items():
            self.assertEqual(d, dumps[new.id], "member %d differs" % mid)
            names = {p.rsplit("/", 1)[1] for p in d if p != "/dv"}
            self.assertEqual(names, {"x"} | {"new-%d" % i for i in range(5)}, "member %d" % mid)
            self.assertEqual(d["/dv/x"][0], "bmV3LTQ=", "member %d: /dv/x is not new-4" % mid)
        info = old.info()
        self.assertGreater(info["zxid"], diverged[0])
        print("\nold leader %d had log up to %d with commit %d; now at %d as %s"
              % (old.id, diverged[0], diverged[1], info["zxid"], info["role"]), flush=True)


if __name__ == "__main__":
    run_tests()
