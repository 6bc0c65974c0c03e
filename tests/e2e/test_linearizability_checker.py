#!/usr/bin/env python3
"""Self-tests of linearizability.py: it accepts linearizable register histories and
rejects the anomalies a replicated store can produce (stale read, a value never
written, a lost acknowledged write, a failed write that took effect, versions going
back). Also a randomized cross-check against a brute-force checker."""

import itertools
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linearizability import (INF, Op, check_history, check_register,  # noqa: E402
                             ops_from_events, summarize)


class H:
    """Tiny history builder: h.w(p, value, inv, ret, typ) / h.r(p, value, inv, ret)."""

    def __init__(self, key="/k"):
        self.key, self.events = key, []

    def w(self, p, value, inv, ret, typ="ok", ver=None):
        self.events.append({"p": p, "type": "invoke", "f": "write", "key": self.key,
                            "arg": value, "t": inv})
        if ret is not None:
            e = {"p": p, "type": typ, "f": "write", "key": self.key, "t": ret}
            if ver is not None:
                e["ver"] = ver
            self.events.append(e)
        return self

    def r(self, p, value, inv, ret, typ="ok", ver=None):
        self.events.append({"p": p, "type": "invoke", "f": "read", "key": self.key, "t": inv})
        e = {"p": p, "type": typ, "f": "read", "key": self.key, "t": ret, "out": value}
        if ver is not None:
            e["ver"] = ver
        self.events.append(e)
        return self

    def check(self, init=None, init_version=None):
        res = check_history(self.events, init=init, init_version=init_version)
        bad, unknown = summarize(res)
        assert not unknown
        return not bad


class CheckerTest(unittest.TestCase):
    def test_empty_and_trivial(self):
        self.assertTrue(H().check())
        self.assertTrue(H().r(1, None, 0, 1).check())
        self.assertTrue(H().r(1, "a", 0, 1).check(init="a"))

    def test_linearizable_concurrent(self):
        h = (H().w(1, "a", 0, 10).w(2, "b", 5, 15)
             .r(3, "b", 11, 12)      # b linearized inside [5,12]
             .r(3, "b", 16, 17)
             .w(1, "c", 20, 30).r(2, "b", 21, 22).r(2, "c", 23, 24).r(3, "c", 31, 32))
        self.assertTrue(h.check())

    def test_stale_read_after_completed_write(self):
        h = H().w(1, "a", 0, 10).w(1, "b", 11, 20).r(2, "a", 21, 22)
        self.assertFalse(h.check())

    def test_stale_read_on_other_process_concurrent_is_fine(self):
        h = H().w(1, "a", 0, 10).w(1, "b", 11, 20).r(2, "a", 15, 22)
        self.assertTrue(h.check())

    def test_read_of_value_never_written(self):
        self.assertFalse(H().w(1, "a", 0, 10).r(2, "zzz", 11, 12).check())

    def test_lost_acknowledged_write(self):
        # b acknowledged, then reads see the older value a forever.
        h = H().w(1, "a", 0, 1).w(2, "b", 2, 3).r(3, "a", 4, 5).r(3, "a", 6, 7)
        self.assertFalse(h.check())
        # ... or the initial value after a write was acknowledged.
        self.assertFalse(H().w(1, "a", 0, 1).r(2, None, 2, 3).check())

    def test_failed_write_must_not_take_effect(self):
        h = H().w(1, "a", 0, 1).w(2, "x", 2, 3, typ="fail").r(3, "x", 4, 5)
        self.assertFalse(h.check())

    def test_info_write_may_take_effect_late_or_never(self):
        h = H().w(1, "a", 0, 1).w(2, "x", 2, 3, typ="info").r(3, "a", 4, 5).r(3, "x", 100, 101)
        self.assertTrue(h.check())
        h = H().w(1, "a", 0, 1).w(2, "x", 2, 3, typ="info").r(3, "a", 4, 5)
        self.assertTrue(h.check())
        # An invoke without completion is info too.
        h = H().w(1, "a", 0, 1).w(2, "x", 2, None).r(3, "x", 9, 10)
        self.assertTrue(h.check())
        # But not before its invocation.
        h = H().w(1, "a", 0, 1).r(3, "x", 2, 3).w(2, "x", 4, 5, typ="info")
        self.assertFalse(h.check())

    def test_info_write_cannot_reappear_after_being_overwritten(self):
        # x took effect (read), then a overwrote it; x cannot be read again (unique values).
        h = (H().w(2, "x", 0, 1, typ="info").r(3, "x", 2, 3).w(1, "a", 4, 5)
             .r(3, "a", 6, 7).r(3, "x", 8, 9))
        self.assertFalse(h.check())

    def test_many_unread_info_writes_are_cheap(self):
        h = H().w(1, "a", 0, 1, ver=1)
        for i in range(60):
            h.w(100 + i, "lost-%d" % i, 2 + i, 3 + i, typ="info")
        h.w(2, "b", 100, 101, ver=40).r(3, "b", 102, 103, ver=40)
        h.r(4, "lost-7", 104, 105, ver=41)  # one of them took effect, late
        res = check_history(h.events, init="init", init_version=0, timeout_per_key=10)
        self.assertTrue(res["/k"].valid, res)
        h.r(4, "b", 106, 107, ver=40)  # and then b again: impossible
        res = check_history(h.events, init="init", init_version=0, timeout_per_key=10)
        self.assertFalse(res["/k"].valid, res)

    def test_info_read_dropped(self):
        self.assertTrue(H().w(1, "a", 0, 1).r(2, "zzz", 2, 3, typ="info").check())

    def test_versions(self):
        ok = H().w(1, "a", 0, 1, ver=1).r(2, "a", 2, 3, ver=1).w(1, "b", 4, 5, ver=2)
        self.assertTrue(ok.check(init="init", init_version=0))
        # Version went back (a write applied twice would also show up here).
        bad = H().w(1, "a", 0, 1, ver=2).w(1, "b", 4, 5, ver=1)
        self.assertFalse(bad.check(init="init", init_version=0))
        bad = H().w(1, "a", 0, 1, ver=1).w(1, "b", 4, 5, ver=1)
        self.assertFalse(bad.check(init="init", init_version=0))
        # Two acknowledged writes with the same version: one of them was lost.
        bad = H().w(1, "a", 0, 10, ver=1).w(2, "b", 0, 10, ver=1)
        self.assertFalse(bad.check(init="init", init_version=0))
        # An info write read with a version older than an acknowledged one it follows.
        bad = (H().w(1, "a", 0, 1, ver=1).w(2, "q", 2, 3, typ="info")
               .r(3, "q", 4, 5, ver=1))
        self.assertFalse(bad.check(init="init", init_version=0))
        bad = H().w(1, "a", 0, 1, ver=1).r(2, "a", 2, 3, ver=2)
        self.assertFalse(bad.check(init="init", init_version=0))
        # An info write in between accounts for a version jump.
        ok = H().w(1, "a", 0, 1, ver=1).w(3, "q", 1, 2, typ="info").w(1, "b", 4, 5, ver=3)
        self.assertTrue(ok.check(init="init", init_version=0))

    def test_keys_are_independent(self):
        ev = H("/a").w(1, "a1", 0, 1).r(2, "a1", 2, 3).events + \
            H("/b").w(3, "b1", 0, 1).r(4, None, 2, 3).events
        res = check_history(ev)
        self.assertTrue(res["/a"].valid)
        self.assertFalse(res["/b"].valid)
        self.assertIn("NOT linearizable", res["/b"].explain())

    def test_event_pairing_errors(self):
        with self.assertRaises(ValueError):
            ops_from_events([{"p": 1, "type": "ok", "f": "read", "key": "/k", "t": 1}])
        with self.assertRaises(ValueError):
            ops_from_events([{"p": 1, "type": "invoke", "f": "read", "key": "/k", "t": 1},
                             {"p": 1, "type": "invoke", "f": "read", "key": "/k", "t": 2}])

    # ---- randomized cross-check ----------------------------------------------------
    def test_random_histories_match_brute_force(self):
        rng = random.Random(12345)
        agree = {True: 0, False: 0}
        for _ in range(400):
            ops = random_history(rng, nops=rng.randrange(2, 7))
            want = brute_force(ops)
            got = check_register([copy(o) for o in ops]).valid
            self.assertEqual(got, want, ops)
            agree[want] += 1
        self.assertGreater(agree[True], 50)
        self.assertGreater(agree[False], 50)

    def test_large_valid_history_is_fast(self):
        rng = random.Random(7)
        ops = simulate_register(rng, procs=4, nops=600, info_rate=0.02)
        res = check_register(ops, init=None, timeout=30)
        self.assertTrue(res.valid, res)
        self.assertLess(res.seconds, 20)
        # Corrupt one late read: now it must be rejected.
        reads = [o for o in ops if o.f == "read" and o.value is not None]
        reads[-1].value = "never-written"
        self.assertFalse(check_register([copy(o) for o in ops], timeout=60).valid)


def copy(o):
    return Op(o.f, o.value, o.inv, o.ret, ver=o.ver, p=o.p)


def random_history(rng, nops):
    ops = []
    vals = ["a", "b", "c"]
    for i in range(nops):
        inv = rng.randrange(0, 20)
        ret = inv + rng.randrange(1, 8)
        if rng.random() < 0.5:
            r = INF if rng.random() < 0.2 else ret
            ops.append(Op("write", "w%d" % i, inv, r))
        else:
            choice = rng.choice(vals + [None] + ["w%d" % j for j in range(nops)])
            ops.append(Op("read", choice, inv, ret))
    return ops


def brute_force(ops):
    """Tries every order of every subset of info writes plus all ok ops."""
    ok_ops = [o for o in ops if o.ret != INF]
    info = [o for o in ops if o.ret == INF]
    for k in range(len(info) + 1):
        for sub in itertools.combinations(info, k):
            chosen = ok_ops + list(sub)
            for perm in itertools.permutations(chosen):
                if respects_real_time(perm) and legal(perm):
                    return True
    return False


def respects_real_time(seq):
    for i, a in enumerate(seq):
        for b in seq[i + 1:]:
            if b.ret < a.inv:  # b returned before a was invoked, but comes after a
                return False
    return True


def legal(seq):
    v = None
    for o in seq:
        if o.f == "write":
            v = o.value
        elif o.value != v:
            return False
    return True


def simulate_register(rng, procs, nops, info_rate):
    """A true linearizable register with closed-loop processes; returns ops."""
    t = 0
    value = None
    busy = {}  # p -> (op, linearize_at, ret)
    ops = []
    seq = 0
    while len(ops) < nops or busy:
        t += 1
        for p in range(procs):
            if p not in busy and len(ops) < nops:
                inv = t
                lin = t + rng.randrange(0, 5)
                ret = lin + rng.randrange(0, 5)
                if rng.random() < 0.5:
                    seq += 1
                    op = Op("write", "v%d" % seq, inv, ret, p=p)
                else:
                    op = Op("read", None, inv, ret, p=p)
                ops.append(op)
                busy[p] = [op, lin, ret, False]
        for p, b in list(busy.items()):
            op, lin, ret, done = b
            if not done and t >= lin:
                if op.f == "write":
                    if rng.random() < info_rate / 2:
                        op.ret = INF  # an info write that never took effect
                    else:
                        value = op.value
                else:
                    op.value = value
                b[3] = True
            if t >= ret and b[3]:
                if op.f == "write" and rng.random() < info_rate / 2:
                    op.ret = INF  # took effect, but the client never heard
                del busy[p]
    return ops


if __name__ == "__main__":
    unittest.main(verbosity=2)
