#!/usr/bin/env python3
"""Coordination recipes (tests/e2e/recipes.py) under concurrency against a real corrald:
lock (mutual exclusion, no herd effect, expiry of the holder), leader election
(at most one leader, handover on session close, resign), double barrier, queue
(exactly-once consumption), group membership (expiry seen by a child watcher).

Each recipe client is a recipes.CorralClient: its own session, its own two keep-alive
connections and its own events/heartbeat thread. The server runs with --tick-ms 100, so
session timeouts are clamped to [200, 2000] ms and expiry is quick."""

import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import ServerTestCase, run_tests, wait_until  # noqa: E402
from recipes import (CorralClient, DoubleBarrier, Election, GroupMember,  # noqa: E402
                     GroupWatcher, Lock, Queue, SessionExpired, seq_of)


class RecipesTest(ServerTestCase):
    server_name = "recipes"
    server_args = ("--tick-ms", "100")

    def client(self, timeout_ms=1000, **kw):
        c = CorralClient(self.server.port, timeout_ms=timeout_ms, **kw)
        self.addCleanup(c.close)
        return c

    def run_threads(self, target, n, timeout=30):
        """Runs target(i) in n threads; re-raises the first exception of any of them."""
        errors = []

        def wrap(i):
            try:
                target(i)
            except BaseException as e:  # noqa: B902 - reported below
                errors.append((i, e))
        threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.assertFalse([t for t in threads if t.is_alive()], "threads still running")
        if errors:
            i, e = errors[0]
            raise AssertionError("thread %d failed: %r" % (i, e)) from e

    def member_nodes(self, path, prefix):
        r = self.c.children(path)
        self.assertEqual(r.status, 200, r)
        return sorted((k for k in r.body["children"] if k.startswith(prefix)), key=seq_of)

    # --- client library basics ----------------------------------------------------
    def test_piggybacked_events_are_dispatched(self):
        """An event taken from the queue by a GET read (not by the events poll) still
        reaches wait_event: without this a lock waiter could sleep forever."""
        p = self.fresh()
        self.assertEqual(self.c.create(p + "/x", "").status, 201)
        c = self.client(timeout_ms=2000, heartbeat=False)
        self.assertTrue(c.exists(p + "/x", watch=True))
        self.assertEqual(self.c.delete(p + "/x").status, 204)
        self.assertIsNotNone(c.get(p))  # the pending event rides on this read
        self.assertEqual([ev["type"] for _, ev in c.received], ["deleted"])
        ev = c.wait_path_event(p + "/x", 0)
        self.assertEqual((ev["type"], ev["path"]), ("deleted", p + "/x"))

    # --- lock ---------------------------------------------------------------------
    def test_lock_mutual_exclusion_and_no_herd(self):
        base = self.fresh()
        path = base + "/lock"
        n_clients, n_acq = 5, 10
        clients = [self.client() for _ in range(n_clients)]
        guard = threading.Lock()
        state = {"inside": None}
        intervals, violations, not_lowest = [], [], []
        start = threading.Barrier(n_clients)

        def worker(i):
            c = clients[i]
            lock = Lock(c, path)
            start.wait()
            for _ in range(n_acq):
                self.assertTrue(lock.acquire(timeout=20), "client %d: acquire timed out" % i)
                with guard:
                    t_enter = time.monotonic()
                    if state["inside"] is not None:
                        violations.append((state["inside"], i, t_enter))
                    state["inside"] = i
                # The server agrees: my node is the lowest lock- child.
                kids = sorted(c.children(path), key=seq_of)
                if kids[0] != lock.node.rsplit("/", 1)[1]:
                    not_lowest.append((i, lock.node, kids))
                self.assertTrue(lock.held)
                time.sleep(0.003)
                with guard:
                    state["inside"] = None
                    intervals.append((t_enter, time.monotonic(), i))
                lock.release()
                self.assertFalse(lock.held)

        t0 = time.monotonic()
        self.run_threads(worker, n_clients, timeout=40)
        elapsed = time.monotonic() - t0

        self.assertEqual(violations, [], "two holders at once")
        self.assertEqual(not_lowest, [], "a holder whose node was not the lowest")
        self.assertEqual(len(intervals), n_clients * n_acq)
        self.assertEqual(collections.Counter(i for _, _, i in intervals),
                         {i: n_acq for i in range(n_clients)})
        intervals.sort()
        for (s1, e1, i1), (s2, e2, i2) in zip(intervals, intervals[1:]):
            self.assertLessEqual(e1, s2, "holders %d and %d overlap" % (i1, i2))
        self.assertEqual(self.member_nodes(path, ""), [], "lock nodes left behind")

        # No herd: the only events are "deleted" of a lock node, and each deleted node
        # (one per release) woke at most one client -- its successor.
        woken = collections.defaultdict(list)
        for i, c in enumerate(clients):
            for _, ev in c.received:
                self.assertEqual(ev["type"], "deleted", ev)
                self.assertTrue(ev["path"].startswith(path + "/lock-"), ev)
                woken[ev["path"]].append(i)
        herd = {p: who for p, who in woken.items() if len(who) > 1}
        self.assertEqual(herd, {}, "a release woke more than one waiter")
        self.assertLessEqual(len(woken), n_clients * n_acq)
        # The test is only meaningful if clients really queued behind each other.
        self.assertGreaterEqual(len(woken), 10, "too little contention to test anything")
        print("\n  lock: %d acquisitions in %.2fs, %d watch wake-ups"
              % (len(intervals), elapsed, len(woken)), file=sys.stderr)

    def test_lock_holder_session_expiry_passes_lock(self):
        path = self.fresh() + "/lock"
        holder = self.client(timeout_ms=600)
        waiter = self.client(timeout_ms=1000)
        lh, lw = Lock(holder, path), Lock(waiter, path)
        self.assertTrue(lh.acquire(timeout=5))
        got = {}

        def wait_for_lock():
            got["ok"] = lw.acquire(timeout=15)
            got["t"] = time.monotonic()
            got["holder_held"] = lh.held  # what the old holder believes at this moment
        t = threading.Thread(target=wait_for_lock, daemon=True)
        t.start()
        # With its heartbeat running the holder keeps the lock well past its timeout.
        time.sleep(2.0)
        self.assertEqual(got, {}, "waiter got the lock while the holder was alive")
        self.assertTrue(lh.held)
        self.assertEqual(self.member_nodes(path, "lock-"),
                         [lh.node.rsplit("/", 1)[1], lw.node.rsplit("/", 1)[1]])
        # Holder goes silent: its session expires, its node goes, the waiter gets it.
        t_pause = time.monotonic()
        holder.pause_heartbeat()
        t.join(10)
        self.assertTrue(got.get("ok"), "waiter never got the lock")
        lag = got["t"] - t_pause
        self.assertLess(lag, 3 * holder.timeout_ms / 1000.0)
        self.assertFalse(got["holder_held"],
                         "old holder still believed it held the lock when the next got it")
        self.assertFalse(lh.held)
        self.assertTrue(lw.held)
        self.assertEqual(self.c.exists(lh.node).status, 404)
        self.assertEqual(self.member_nodes(path, "lock-"), [lw.node.rsplit("/", 1)[1]])
        holder.resume_heartbeat()
        wait_until(lambda: holder.expired, 2, message="holder notices its expiry")
        lh.release()  # harmless on a dead session
        self.assertTrue(lw.held)
        lw.release()
        self.assertEqual(self.member_nodes(path, "lock-"), [])

    # --- election -----------------------------------------------------------------
    def test_election_one_leader_and_handover_on_session_close(self):
        path = self.fresh() + "/election"
        reg = threading.Lock()
        believers, log = set(), []
        gen = [0]
        violations = []

        def callbacks(name):
            def elected():
                with reg:
                    believers.add(name)
                    gen[0] += 1
                    log.append((time.monotonic(), "elected", name))
                    if len(believers) > 1:
                        violations.append(("transition", sorted(believers)))

            def lost():
                with reg:
                    believers.discard(name)
                    gen[0] += 1
                    log.append((time.monotonic(), "lost", name))
            return elected, lost

        names = ["c%d" % i for i in range(5)]
        cands = {}
        for name in names:  # in order: c0 has the lowest node, then c1, ...
            on_elected, on_lost = callbacks(name)
            cands[name] = Election(self.client(), path, name, on_elected, on_lost).start()

        observer = self.client()
        stop = threading.Event()
        samples = [0]

        def sampler():
            while not stop.is_set():
                with reg:
                    g1, b1 = gen[0], set(believers)
                if len(b1) > 1:
                    violations.append(("sample", sorted(b1)))
                try:
                    server = Election.current_leader(observer, path)
                except SessionExpired:
                    return
                with reg:
                    g2 = gen[0]
                # Belief unchanged across the server read: the believer's node existed
                # all along and was the lowest, so the server must name it.
                if g1 == g2 and len(b1) == 1:
                    (who,) = b1
                    if server is None or server[1] != who:
                        violations.append(("server", who, server))
                samples[0] += 1
                time.sleep(0.005)
        st = threading.Thread(target=sampler, daemon=True)
        st.start()

        def settled():
            with reg:
                b = set(believers)
            if len(b) != 1:
                return None
            (who,) = b
            server = Election.current_leader(observer, path)
            return who if server and server[1] == who and cands[who].is_leader else None

        leaders = [wait_until(settled, 2, message="first leader")]
        handovers = []
        for _ in range(4):
            old = leaders[-1]
            t0 = time.monotonic()
            cands[old].close()  # drops its belief, then closes its session
            self.assertFalse(cands[old].is_leader)
            new = wait_until(lambda: (lambda w: w if w and w != old else None)(settled()),
                             2, message="new leader after closing %s" % old)
            handovers.append(time.monotonic() - t0)
            leaders.append(new)
            time.sleep(0.2)  # keep sampling a settled state
        stop.set()
        st.join(5)
        for name in names:
            self.assertIsNone(cands[name].error, name)

        self.assertEqual(violations, [])
        self.assertEqual(leaders, names, "leadership must pass in node order")
        self.assertGreater(samples[0], 20)
        self.assertEqual([n for _, what, n in log if what == "elected"], names)
        self.assertEqual(len(self.member_nodes(path, "n-")), 1)
        print("\n  election: handovers %s s, %d samples"
              % (["%.3f" % h for h in handovers], samples[0]), file=sys.stderr)

    def test_election_resign_passes_leadership(self):
        path = self.fresh() + "/election"
        a = Election(self.client(), path, "a").start()
        self.assertTrue(a.wait_elected(2))
        b = Election(self.client(), path, "b").start()
        time.sleep(0.3)
        self.assertTrue(a.is_leader)
        self.assertFalse(b.is_leader)
        a.resign()
        self.assertFalse(a.is_leader)
        self.assertTrue(b.wait_elected(2))
        a.start()  # volunteers again: now behind b
        time.sleep(0.3)
        self.assertTrue(b.is_leader)
        self.assertFalse(a.is_leader)
        self.assertEqual(Election.current_leader(a.client, path)[1], "b")
        b.resign()
        self.assertTrue(a.wait_elected(2))
        self.assertIsNone(a.error)
        self.assertIsNone(b.error)

    # --- barrier ------------------------------------------------------------------
    def test_double_barrier(self):
        path = self.fresh() + "/barrier"
        n = 5
        clients = [self.client() for _ in range(n)]
        t_join, t_pass, t_leave, t_left = {}, {}, {}, {}

        def participant(i):
            b = DoubleBarrier(clients[i], path, n)
            time.sleep(0.15 * i)              # arrive one by one
            t_join[i] = time.monotonic()      # before my node is created
            self.assertTrue(b.enter(timeout=10), "participant %d: enter timed out" % i)
            t_pass[i] = time.monotonic()
            time.sleep(0.1 * (n - 1 - i))     # work, finishing at different times
            t_leave[i] = time.monotonic()     # before my node is deleted
            self.assertTrue(b.leave(timeout=10), "participant %d: leave timed out" % i)
            t_left[i] = time.monotonic()

        self.run_threads(participant, n, timeout=30)
        self.assertEqual(len(t_pass), n)
        self.assertGreaterEqual(min(t_pass.values()), max(t_join.values()),
                                "someone passed before all %d had joined" % n)
        self.assertEqual(len(t_left), n)
        self.assertGreaterEqual(min(t_left.values()), max(t_leave.values()),
                                "someone left before all had started leaving")
        self.assertEqual(self.member_nodes(path, "m-"), [])
        self.assertEqual(self.c.exists(path + "/ready").status, 200)

    # --- queue --------------------------------------------------------------------
    def test_queue_every_item_consumed_exactly_once(self):
        path = self.fresh() + "/queue"
        n_prod, per_prod, n_cons = 3, 200, 4
        produced = [[] for _ in range(n_prod)]
        consumed = [[] for _ in range(n_cons)]
        producers_done = threading.Event()
        pclients = [self.client() for _ in range(n_prod)]
        cclients = [self.client() for _ in range(n_cons)]

        def producer(i):
            q = Queue(pclients[i], path)
            for k in range(per_prod):
                data = "p%d-%03d" % (i, k)
                self.assertIsNotNone(q.put(data))
                produced[i].append(data)

        def consumer(i):
            q = Queue(cclients[i], path)
            while True:
                done_before = producers_done.is_set()
                data = q.take(timeout=0.5)
                if data is None:
                    if done_before:
                        return  # empty for 0.5 s after the last put: drained
                    continue
                consumed[i].append(data)

        t0 = time.monotonic()
        cons = threading.Thread(target=self.run_threads, args=(consumer, n_cons, 60),
                                daemon=True)
        cons.start()
        self.run_threads(producer, n_prod, timeout=60)
        producers_done.set()
        cons.join(60)
        self.assertFalse(cons.is_alive())
        elapsed = time.monotonic() - t0

        all_produced = [d for p in produced for d in p]
        all_consumed = [d for c in consumed for d in c]
        self.assertEqual(len(all_produced), n_prod * per_prod)
        dups = [d for d, k in collections.Counter(all_consumed).items() if k > 1]
        self.assertEqual(dups, [], "items consumed more than once")
        self.assertEqual(sorted(all_consumed), sorted(all_produced), "lost items")
        self.assertEqual(self.member_nodes(path, ""), [])
        # Each consumer sees one producer's items in the order they were put (FIFO).
        for i, c in enumerate(consumed):
            for p in range(n_prod):
                mine = [d for d in c if d.startswith("p%d-" % p)]
                self.assertEqual(mine, sorted(mine), "consumer %d out of order" % i)
        print("\n  queue: %d items in %.2fs, per consumer %s"
              % (len(all_consumed), elapsed, [len(c) for c in consumed]), file=sys.stderr)

    # --- group membership ---------------------------------------------------------
    def test_group_membership_tracks_joins_and_expiry(self):
        group = self.fresh() + "/group"
        watcher = GroupWatcher(self.client(), group)
        self.addCleanup(watcher.stop)
        names = {"m%d" % i for i in range(5)}
        members = {}
        for name in sorted(names):
            members[name] = GroupMember(self.client(timeout_ms=600), group, name, "host-" + name)
        self.assertEqual(watcher.wait_for(lambda m: m == names, 2), names)

        victim = members["m2"].client
        t0 = time.monotonic()
        victim.pause_heartbeat()
        timeout_s = victim.timeout_ms / 1000.0
        expect = names - {"m2"}
        self.assertEqual(watcher.wait_for(lambda m: m == expect, 3 * timeout_s), expect,
                         "watcher did not see the expired member go")
        gone_after = time.monotonic() - t0
        # It went only after its session could have expired, and nobody else went.
        self.assertGreater(gone_after, timeout_s / 2)
        t_full = max(t for t, m in watcher.history if m == names)
        for t, m in watcher.history:
            if t > t_full:
                self.assertEqual(m, expect)
        victim.resume_heartbeat()
        wait_until(lambda: victim.expired, 2, message="victim notices its expiry")

        # A voluntary leave and a new join are seen too.
        members["m0"].leave()
        expect = expect - {"m0"}
        self.assertEqual(watcher.wait_for(lambda m: m == expect, 2), expect)
        GroupMember(self.client(), group, "m9")
        expect = expect | {"m9"}
        self.assertEqual(watcher.wait_for(lambda m: m == expect, 2), expect)
        self.assertIsNone(watcher.error)
        print("\n  group: expired member seen gone after %.3fs" % gone_after,
              file=sys.stderr)


if __name__ == "__main__":
    run_tests()
