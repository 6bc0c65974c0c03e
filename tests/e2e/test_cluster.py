#!/usr/bin/env python3
"""Quorum mode, functional: a 3-member cluster replicates writes made through any member,
serves (sequentially consistent and linearizable) reads on followers, shares sessions
across members, expires them on the leader only, and shows itself in /v1/cluster. A
5-member cluster elects and commits; a 4-member cluster commits with 3 members up and
not with 2."""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import run_tests  # noqa: E402
from cluster_harness import ClusterTestCase, wait_until_value  # noqa: E402

MIN_ZXID = "Corral-Min-Zxid"
ARGS = ["--tick-ms", "200", "--request-timeout-ms", "3000"]
NN_PUSH = 80  # nanomsg's protocol number of a PUSH socket, sent in the SP header


class ClusterCase(ClusterTestCase):
    cluster_args = ARGS

    def leader_and_followers(self):
        leader = self.cluster.wait_healthy()
        return leader, [m for m in self.cluster if m.id != leader.id]


class ThreeMembers(ClusterCase):
    n = 3

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        leader = cls.cluster.wait_leader()
        r = leader.client().create("/fn", "")
        assert r.status == 201, r

    def test_writes_via_each_member_are_visible_on_all(self):
        zx = {}
        for m in self.cluster:
            r = m.client().create("/fn/w%d" % m.id, "from-%d" % m.id)
            self.assertEqual(r.status, 201, r)
            zx[m.id] = r.zxid
            self.assertEqual(r.body["stat"]["czxid"], r.zxid, r)
        self.assertEqual(len(set(zx.values())), 3, "each write has its own zxid: %s" % zx)
        for reader in self.cluster:
            c = reader.client()
            for writer_id, z in zx.items():
                r = c.request("GET", "/v1/znodes/fn/w%d" % writer_id,
                              headers={MIN_ZXID: str(z)})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body["data"], "from-%d" % writer_id)
                self.assertGreaterEqual(r.zxid, z)
        # Updates through a follower, with version checks, go through the leader.
        leader, followers = self.leader_and_followers()
        f = followers[0].client()
        r = f.set("/fn/w%d" % leader.id, "v1", version=0)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["stat"]["version"], 1)
        r = f.set("/fn/w%d" % leader.id, "stale", version=0)
        self.assertEqual((r.status, r.code), (409, "BAD_VERSION"), r)
        r = followers[1].client().request("GET", "/v1/znodes/fn/w%d" % leader.id,
                                          headers={MIN_ZXID: str(r.zxid)})
        self.assertEqual((r.body["data"], r.body["stat"]["version"]), ("v1", 1), r)

    def test_reads_on_followers_after_sync(self):
        leader, followers = self.leader_and_followers()
        r = leader.client().create("/fn/sync", "s")
        self.assertEqual(r.status, 201, r)
        for f in followers:
            c = f.client()
            s = c.sync("/fn/sync")
            self.assertEqual(s.status, 200, s)
            self.assertGreaterEqual(s.zxid, r.zxid, "sync returned before the write applied")
            g = c.get("/fn/sync")
            self.assertEqual((g.status, g.body["data"]), (200, "s"), g)
            self.assertEqual(g.body["stat"], r.body["stat"])

    def test_linearizable_read_on_follower_sees_acknowledged_write(self):
        leader, followers = self.leader_and_followers()
        members = list(self.cluster)
        self.assertEqual(members[0].client().create("/fn/lin", "0").status, 201)
        clients = {m.id: m.client() for m in members}
        for i in range(60):
            w = members[i % 3]
            rd = members[(i + 1 + (i // 3) % 2) % 3]  # every other member, in turn
            if rd.id == w.id:
                rd = members[(i + 2) % 3]
            val = "v%d" % i
            r = clients[w.id].set("/fn/lin", val)
            self.assertEqual(r.status, 200, r)
            g = clients[rd.id].request("GET", "/v1/znodes/fn/lin?linearizable=true")
            self.assertEqual(g.status, 200, g)
            self.assertEqual(g.body["data"], val,
                             "linearizable read on member %d missed the write acknowledged "
                             "by member %d (zxid %d, read at %d)" % (rd.id, w.id, r.zxid,
                                                                     g.zxid))
            self.assertGreaterEqual(g.zxid, r.zxid)

    def test_session_used_across_members(self):
        leader, (f1, f2) = self.leader_and_followers()
        c1, c2 = f1.client(), f2.client()
        r = c1.open_session(1000)
        self.assertEqual(r.status, 201, r)
        sid, tmo = r.body["id"], r.body["timeout_ms"]
        self.assertLessEqual(tmo, 1000)
        # Ephemeral through the other follower, with the session opened on the first.
        r = c2.create("/fn/eph-across", "e", ephemeral=True, session=sid)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["ephemeralOwner"], sid)
        # Keepalives through follower 1 only, for 4 x the timeout.
        end = time.monotonic() + 4 * tmo / 1000.0
        while time.monotonic() < end:
            k = c1.keepalive(sid)
            self.assertEqual(k.status, 200, "session died while kept alive via a follower: %r"
                             % (k,))
            time.sleep(tmo / 4000.0)
        for m in self.cluster:
            c = m.client()
            c.sync("/")
            self.assertEqual(c.session_info(sid).status, 200, "member %d" % m.id)
            self.assertEqual(c.exists("/fn/eph-across").status, 200, "member %d" % m.id)
        # Close through the leader: gone everywhere.
        self.assertEqual(leader.client().close_session(sid).status, 204)
        for m in self.cluster:
            c = m.client()
            c.sync("/")
            self.assertEqual(c.exists("/fn/eph-across").status, 404, "member %d" % m.id)
            self.assertEqual(c.session_info(sid).code, "SESSION_EXPIRED", "member %d" % m.id)

    def test_abandoned_session_is_expired_everywhere(self):
        leader, (f1, f2) = self.leader_and_followers()
        c = f1.client()
        r = c.open_session(800)
        self.assertEqual(r.status, 201, r)
        sid, tmo = r.body["id"], r.body["timeout_ms"]
        for k in range(3):
            r = f2.client().create("/fn/eph-gone-%d" % k, "x", ephemeral=True, session=sid)
            self.assertEqual(r.status, 201, r)
        t0 = time.monotonic()

        def gone_everywhere():
            for m in self.cluster:
                cc = m.client()
                if any(cc.exists("/fn/eph-gone-%d" % k).status != 404 for k in range(3)):
                    return False
            return True
        wait_until_value(gone_everywhere, tmo / 1000.0 + 20, interval=0.1,
                         message="ephemerals of the abandoned session gone on all members")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, tmo / 1000.0 * 0.9,
                                "session expired before its timeout (%.2fs < %dms)"
                                % (elapsed, tmo))
        for m in self.cluster:
            cc = m.client()
            self.assertEqual(cc.session_info(sid).code, "SESSION_EXPIRED", "member %d" % m.id)
            r = cc.create("/fn/eph-late-%d" % m.id, "x", ephemeral=True, session=sid)
            self.assertEqual(r.code, "SESSION_EXPIRED", r)

    def test_cluster_view(self):
        leader, followers = self.leader_and_followers()
        infos = {m.id: m.client().cluster().body for m in self.cluster}
        self.assertEqual([i["id"] for i in infos.values()], [1, 2, 3])
        self.assertEqual(sorted(i["role"] for i in infos.values()),
                         ["follower", "follower", "leader"])
        self.assertEqual({i["leader"] for i in infos.values()}, {leader.id})
        self.assertEqual(len({i["epoch"] for i in infos.values()}), 1)
        for i in infos.values():
            self.assertEqual([m["id"] for m in i["members"]], [1, 2, 3])
            self.assertEqual([m["http"] for m in i["members"]],
                             [self.cluster[k].address for k in (1, 2, 3)])
            roles = {m["id"]: m["role"] for m in i["members"]}
            self.assertEqual(roles[leader.id], "leader", i)
        lv = infos[leader.id]
        self.assertTrue(all(m["reachable"] for m in lv["members"]), lv)
        self.assertTrue(all("match_zxid" in m for m in lv["members"]), lv)
        for i in infos.values():
            self.assertLessEqual(i["commit_zxid"], lv["commit_zxid"] + 0)

    def test_follower_sees_its_leader_reachable(self):
        # A follower hears the leader's heartbeats: the leader is reachable from it.
        leader, followers = self.leader_and_followers()
        for f in followers:
            info = f.client().cluster().body
            lead = [m for m in info["members"] if m["id"] == leader.id][0]
            self.assertTrue(lead["reachable"], info)

    def test_stats_count_the_frames_between_members(self):
        # /v1/stats carries the peer transport's counters (ZooKeeper's mntr has its
        # packets sent and received): writes through the leader go to both followers and
        # are answered, and healthy members reject nothing from one another.
        leader, followers = self.leader_and_followers()
        before = {m.id: m.client().request("GET", "/v1/stats").body for m in self.cluster}
        for i in range(10):
            self.assertEqual(leader.client().create("/peerstats%d" % i, "x").status, 201)
        for m in self.cluster:
            after = m.client().request("GET", "/v1/stats").body
            for key in ("peer_frames_sent", "peer_frames_received"):
                self.assertGreater(after[key], before[m.id][key], (m.id, key, after))
            self.assertEqual(after["peer_frames_rejected"],
                             before[m.id]["peer_frames_rejected"], (m.id, after))

    def test_a_stranger_on_the_peer_port_is_counted_not_heard(self):
        # Someone who is not a member speaks nanomsg's wire protocol to a follower's
        # peer port (the SP header of a PUSH socket, then length-prefixed messages) and
        # sends frames that are not the transport's: each is counted as rejected, none
        # reaches Raft, and the cluster goes on committing.
        leader, followers = self.leader_and_followers()
        target = followers[0]
        before = target.client().request("GET", "/v1/stats").body["peer_frames_rejected"]

        def rejected_since():
            return target.client().request("GET", "/v1/stats").body[
                "peer_frames_rejected"] - before

        junk = [b"not a frame", b"\x00" * 64, bytes(range(256)) * 4]
        with socket.create_connection(("127.0.0.1", target.peer_port), timeout=5) as s:
            s.sendall(b"\x00SP\x00" + struct.pack(">H", NN_PUSH) + b"\x00\x00")
            header = b""
            while len(header) < 8:
                chunk = s.recv(8 - len(header))
                self.assertTrue(chunk, "the peer port closed during the SP handshake")
                header += chunk
            self.assertEqual(header[:4], b"\x00SP\x00", header)
            for message in junk:
                s.sendall(struct.pack(">Q", len(message)) + message)
            wait_until_value(lambda: rejected_since() >= len(junk), 10.0,
                             message="the junk frames counted as rejected")
        self.assertEqual(rejected_since(), len(junk))
        r = leader.client().create("/afterjunk", "ok")
        self.assertEqual(r.status, 201, r)
        got = target.client().request("GET", "/v1/znodes/afterjunk",
                                      headers={MIN_ZXID: str(r.zxid)})
        self.assertEqual(got.status, 200, got)
        self.assertEqual(target.client().cluster().body["leader"], leader.id)


def set_as_a_client_would(member, path, value, timeout=30.0):
    """A set without a version, retried on 503/504 as a client would retry it: on a loaded
    machine a member can miss heartbeats and the leader change under the write (504
    TIMEOUT, outcome unknown; 503 while nobody leads). Retrying an unversioned set is
    safe. Returns the first other answer (or the last one at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        r = member.client(timeout=20).set(path, value)
        if r.status not in (503, 504) or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


class FiveMembers(ClusterCase):
    n = 5

    def test_elects_commits_and_tolerates_two_failures(self):
        leader, followers = self.leader_and_followers()
        r = followers[0].client().create("/five", "x")
        self.assertEqual(r.status, 201, r)
        for m in self.cluster:
            g = m.client().request("GET", "/v1/znodes/five", headers={MIN_ZXID: str(r.zxid)})
            self.assertEqual(g.status, 200, (m.id, g))
        # Two followers down: 3 of 5 still commit.
        down = followers[:2]
        for m in down:
            m.kill9()
        up = [m for m in self.cluster if m.running()]
        r = set_as_a_client_would(up[-1], "/five", "with-3")
        self.assertEqual(r.status, 200, r)
        # A third one down: nothing commits; the answer is NO_QUORUM or TIMEOUT.
        third = [m for m in up if m.id != leader.id][0]
        third.kill9()
        up = [m for m in self.cluster if m.running()]
        r = up[0].client(timeout=20).set("/five", "with-2")
        self.assertIn((r.status, r.code), [(503, "NO_QUORUM"), (504, "TIMEOUT")], r)
        for m in down + [third]:
            m.start()
        leader = self.cluster.wait_healthy(timeout=60)
        g = leader.client().request("GET", "/v1/znodes/five?linearizable=true")
        self.assertIn(g.body["data"], ("with-3", "with-2"), g)
        if r.status == 503:
            self.assertEqual(g.body["data"], "with-3", "a NO_QUORUM write was applied")


class FourMembers(ClusterCase):
    n = 4

    def test_commits_with_three_not_with_two(self):
        leader, followers = self.leader_and_followers()
        self.assertEqual(leader.client().create("/four", "0").status, 201)
        followers[0].kill9()
        r = set_as_a_client_would(followers[1], "/four", "three-up")
        self.assertEqual(r.status, 200, r)
        followers[1].kill9()
        # 2 of 4 is not a majority: the leader must not commit (even after a re-election).
        for m in (leader, followers[2]):
            r = m.client(timeout=20).set("/four", "two-up")
            self.assertIn((r.status, r.code), [(503, "NO_QUORUM"), (504, "TIMEOUT")], r)
        # It also steps down (check-quorum) and nobody becomes leader.
        wait_until_value(lambda: all((m.info() or {}).get("role") != "leader"
                                     for m in (leader, followers[2])), 10,
                         message="leader of a minority stepped down")
        time.sleep(1.0)
        self.assertTrue(all((m.info() or {}).get("role") != "leader"
                            for m in (leader, followers[2])))
        followers[0].start()
        followers[1].start()
        leader = self.cluster.wait_healthy(timeout=60)
        g = leader.client().request("GET", "/v1/znodes/four?linearizable=true")
        self.assertEqual(g.status, 200, g)
        self.assertIn(g.body["data"], ("three-up", "two-up"), g)


if __name__ == "__main__":
    run_tests()
