#!/usr/bin/env python3
"""The resumable watch: GET /v1/watch/<path>?since=Z&recursive=..&timeout_ms=N.

Events per op: create -> created(path) + children(parent); delete -> deleted(path) +
children(parent); set -> changed(path); a multi -> the events of each op in order, all
with its zxid. Polling again from the returned zxid misses nothing and repeats nothing;
an answer never splits a txn; history older than memory and log is 410 COMPACTED; history
from before a restart comes from the log."""

import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import wait_until, ServerTestCase, run_tests  # noqa: E402


def parent_of(path):
    return path.rsplit("/", 1)[0] or "/"


def ev(type_, path, zxid):
    return {"type": type_, "path": path, "zxid": zxid}


class ResumeBase(ServerTestCase):
    def watch(self, path, since=None, recursive=None, timeout_ms=0, client=None, expect=200):
        q = {}
        if since is not None:
            q["since"] = since
        if recursive is not None:
            q["recursive"] = "true" if recursive else "false"
        if timeout_ms is not None:
            q["timeout_ms"] = timeout_ms
        url = "/v1/watch" + urllib.parse.quote(path, safe="/")
        if q:
            url += "?" + urllib.parse.urlencode(q)
        r = (client or self.c).request("GET", url, session="")
        self.assertEqual(r.status, expect, r)
        if expect == 200:
            self.assertEqual(set(r.body), {"events", "zxid"}, r)
        return r

    def current(self):
        return self.c.cluster().body["zxid"]

    # Writes that return the events they cause.
    def create(self, path, data=""):
        r = self.c.create(path, data)
        self.assertEqual(r.status, 201, r)
        z = r.body["stat"]["czxid"]
        return [ev("created", path, z), ev("children", parent_of(path), z)]

    def set(self, path, data="x"):
        r = self.c.set(path, data)
        self.assertEqual(r.status, 200, r)
        return [ev("changed", path, r.body["stat"]["mzxid"])]

    def delete(self, path):
        r = self.c.delete(path)
        self.assertEqual(r.status, 204, r)
        return [ev("deleted", path, r.zxid), ev("children", parent_of(path), r.zxid)]

    def multi(self, ops):
        r = self.c.multi(ops)
        self.assertEqual(r.status, 200, r)
        z = r.zxid
        out = []
        for op, res in zip(ops, r.body["results"]):
            if op["op"] == "create":
                self.assertEqual(res["stat"]["czxid"], z)
                out += [ev("created", op["path"], z), ev("children", parent_of(op["path"]), z)]
            elif op["op"] == "set":
                self.assertEqual(res["stat"]["mzxid"], z)
                out.append(ev("changed", op["path"], z))
            elif op["op"] == "delete":
                out += [ev("deleted", op["path"], z), ev("children", parent_of(op["path"]), z)]
        return out

    def poll_all(self, path, since, recursive, max_answers=1000):
        """Polls (timeout 0) from since until an empty answer; returns (events, answers)."""
        events, answers = [], []
        for _ in range(max_answers):
            r = self.watch(path, since=since, recursive=recursive, timeout_ms=0)
            if not r.body["events"]:
                self.assertGreaterEqual(r.body["zxid"], since)
                return events, answers
            answers.append(r.body["events"])
            events += r.body["events"]
            self.assertGreater(r.body["zxid"], since)
            # R is the last zxid returned when the answer was cut at --watch-max-events,
            # else the current zxid; never before an event it returned.
            self.assertGreaterEqual(r.body["zxid"], r.body["events"][-1]["zxid"])
            self.assertLessEqual(r.body["zxid"], r.zxid)
            since = r.body["zxid"]
        self.fail("did not reach the end of the history")


class WatchResumeTest(ResumeBase):
    server_name = "watch_resume"

    def test_basic_since_and_resume(self):
        p = self.fresh()
        z0 = self.current()
        want = self.set(p, "1") + self.create(p + "/a") + self.set(p + "/a")
        r = self.watch(p, since=z0)
        # Non-recursive: the node's own events, including its "children" events.
        self.assertEqual(r.body["events"], [want[0], want[2]])
        # Not cut short: R is the current zxid (nothing after it to miss).
        self.assertEqual(r.body["zxid"], want[3]["zxid"])
        self.assertEqual(r.body["zxid"], r.zxid)
        # From the returned zxid: nothing new, nothing repeated.
        r2 = self.watch(p, since=r.body["zxid"])
        self.assertEqual(r2.body["events"], [])
        self.assertGreaterEqual(r2.body["zxid"], r.body["zxid"])
        more = self.delete(p + "/a")
        r3 = self.watch(p, since=r2.body["zxid"])
        self.assertEqual(r3.body["events"], [more[1]])
        # Recursive from z0: everything, in order.
        r4 = self.watch(p, since=z0, recursive=True)
        self.assertEqual(r4.body["events"], want + more)
        self.assertEqual(r4.body["zxid"], more[0]["zxid"])

    def test_recursive_vs_not(self):
        r_ = self.fresh("rec")
        for n in ("/a", "/a/b"):
            self.create(r_ + n)
        self.create(r_ + "x")          # a sibling whose name starts with the same text
        z0 = self.current()
        e1 = self.set(r_ + "/a/b")
        e2 = self.create(r_ + "/c")
        e3 = self.set(r_)
        e4 = self.create(r_ + "/a/b/d")
        e5 = self.set(r_ + "x") + self.create(r_ + "x/k")
        e6 = self.delete(r_ + "/c")
        self.assertEqual(self.watch(r_, since=z0, recursive=False).body["events"],
                         [e2[1], e3[0], e6[1]])
        self.assertEqual(self.watch(r_, since=z0, recursive=True).body["events"],
                         e1 + e2 + e3 + e4 + e6)
        self.assertEqual(self.watch(r_ + "/a", since=z0, recursive=False).body["events"], [])
        self.assertEqual(self.watch(r_ + "/a", since=z0, recursive=True).body["events"],
                         e1 + e4)
        self.assertEqual(self.watch(r_ + "/a/b", since=z0).body["events"], e1 + [e4[1]])
        self.assertEqual(self.watch(r_ + "x", since=z0, recursive=True).body["events"], e5)
        # recursive on the root sees everything after z0.
        self.assertEqual(self.watch("/", since=z0, recursive=True).body["events"],
                         e1 + e2 + e3 + e4 + e5 + e6)

    def test_without_since_starts_now(self):
        p = self.fresh()
        self.set(p)
        r = self.watch(p, recursive=True)
        self.assertEqual(r.body["events"], [])
        self.assertEqual(r.body["zxid"], r.zxid)
        self.assertEqual(r.body["zxid"], self.current())
        want = self.set(p, "after")
        self.assertEqual(self.watch(p, since=r.body["zxid"]).body["events"], want)
        # Parked without since: woken by the next change only.
        out = {}
        other = self.server.client()
        t = threading.Thread(target=lambda: out.setdefault(
            "r", self.watch(p, timeout_ms=5000, client=other)))
        t.start()
        time.sleep(0.4)
        self.assertNotIn("r", out)
        want = self.set(p, "later")
        t.join(10)
        self.assertEqual(out["r"].body, {"events": want, "zxid": want[0]["zxid"]})

    def test_timeout(self):
        p = self.fresh()
        for n in (0, 600):
            with self.subTest(timeout_ms=n):
                t0 = time.monotonic()
                r = self.watch(p, since=self.current(), timeout_ms=n)
                el = time.monotonic() - t0
                self.assertEqual(r.body["events"], [])
                self.assertGreaterEqual(el, 0.8 * n / 1000)
                self.assertLess(el, n / 1000 + 2 if n else 0.5)

    def test_bad_arguments(self):
        p = self.fresh()
        for q in ("since=x", "since=-1", "timeout_ms=x", "recursive=maybe"):
            with self.subTest(query=q):
                r = self.c.request("GET", "/v1/watch%s?%s" % (p, q))
                self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertError(self.c.request("GET", "/v1/watch/a//b?timeout_ms=0"), 400,
                         "BAD_ARGUMENTS")

    def test_missing_path_can_be_watched(self):
        p = self.fresh()
        z0 = self.current()
        want = self.create(p + "/later")
        self.assertEqual(self.watch(p + "/later", since=z0).body["events"], [want[0]])

    def test_parked_watch_wakes_only_for_its_subtree(self):
        a, b = self.fresh("a"), self.fresh("b")
        self.create(a + "/x")
        for recursive, elsewhere, inside in [
                (True, [b, a + "x"], a + "/x/new"),
                (False, [b, a + "/x"], a)]:
            with self.subTest(recursive=recursive):
                other = self.server.client()
                since = self.current()
                out = {}

                def poll():
                    out["r"] = self.watch(a, since=since, recursive=recursive,
                                          timeout_ms=8000, client=other)
                    out["at"] = time.monotonic()
                t = threading.Thread(target=poll)
                t.start()
                for e in elsewhere:
                    if e == a + "x":
                        self.create(e)
                    else:
                        self.set(e)
                time.sleep(0.5)
                self.assertNotIn("r", out, "woken by a change outside the watched path")
                t0 = time.monotonic()
                want = self.create(inside) if recursive else self.set(inside)
                t.join(10)
                self.assertFalse(t.is_alive())
                self.assertLess(out["at"] - t0, 1.0)
                self.assertEqual(out["r"].body["events"], want)
                self.assertEqual(out["r"].body["zxid"], want[0]["zxid"])

    def test_ten_thousand_changes_between_two_polls(self):
        p = self.fresh("bulk")
        r0 = self.watch(p, recursive=True)
        since = r0.body["zxid"]
        want = []
        names = ["%s/n%05d" % (p, i) for i in range(5000)]
        for i in range(0, 5000, 500):
            want += self.multi([{"op": "create", "path": n, "data": ""}
                                for n in names[i:i + 500]])
        for i in range(0, 4800, 500):
            want += self.multi([{"op": "set", "path": n, "data": "s"}
                                for n in names[i:min(i + 500, 4800)]])
        for n in names[4800:5000]:
            want += self.set(n, "single")
        self.assertEqual(len(want), 5000 * 2 + 5000)
        got, answers = self.poll_all(p, since, True)
        self.assertEqual(len(got), len(want))
        self.assertEqual(got, want)
        self.assertGreaterEqual(len(answers), 2)
        # No answer splits a txn: a zxid lives in exactly one answer.
        owners = {}
        for i, a in enumerate(answers):
            self.assertLessEqual(len(a), 10000 + 999)
            for e in a:
                self.assertEqual(owners.setdefault(e["zxid"], i), i)
        # Non-recursive view of the same window: the parent's children events only.
        got, _ = self.poll_all(p, since, False)
        self.assertEqual(got, [e for e in want if e["path"] == p])


class WatchMaxEventsTest(ResumeBase):
    server_name = "watch_max_events"
    server_args = ("--watch-max-events", "100")

    def test_an_answer_never_splits_a_multi(self):
        p = self.fresh()
        since = self.current()
        big = self.multi([{"op": "create", "path": "%s/m%03d" % (p, i)} for i in range(250)])
        after = self.create(p + "/after")
        r = self.watch(p, since=since, recursive=True)
        self.assertEqual(len(r.body["events"]), 500)
        self.assertEqual(r.body["events"], big)
        self.assertEqual(r.body["zxid"], big[0]["zxid"])
        r = self.watch(p, since=r.body["zxid"], recursive=True)
        self.assertEqual(r.body, {"events": after, "zxid": after[0]["zxid"]})

    def test_answers_hold_at_most_max_events(self):
        p = self.fresh()
        since = self.current()
        want = []
        for i in range(60):
            want += self.create("%s/c%02d" % (p, i))
        got, answers = self.poll_all(p, since, True)
        self.assertEqual(got, want)
        self.assertEqual([len(a) for a in answers], [100, 20])


class WatchCompactionTest(ResumeBase):
    server_name = "watch_compaction"
    server_args = ("--history-events", "100", "--snapshot-every", "50",
                   "--snapshots-keep", "1", "--wal-segment-bytes", "4096")

    def test_compacted_then_in_memory(self):
        p = self.fresh()
        self.create(p + "/k")
        want = []
        for i in range(600):
            want += self.set(p + "/k", "v%d" % i)
        r = self.watch(p, since=1, recursive=True, expect=410)
        self.assertError(r, 410, "COMPACTED", path=p)
        self.assertEqual(r.body["error"]["zxid"], r.zxid)
        self.assertEqual(r.body["error"]["zxid"], want[-1]["zxid"])
        self.assertIsInstance(r.body["error"]["message"], str)
        r = self.watch(p, since=0, recursive=True, expect=410)
        self.assertEqual(r.code, "COMPACTED")
        # The log before the retained snapshot is gone (whole 4 KiB segments). Snapshots
        # are written by a child process and old files go when it is done, so the count
        # settles within moments rather than at once.
        wait_until(lambda: len(self.server.files("snap-", ".snap")) == 1
                   and len(self.server.files("wal-", ".log")) < 5, 10,
                   message="one snapshot kept and the log before it dropped")
        # Recent history (in memory) is there, exactly.
        since = want[-30]["zxid"] - 1
        r = self.watch(p, since=since, recursive=True)
        self.assertEqual(r.body, {"events": want[-30:], "zxid": want[-1]["zxid"]})
        # After a restart old history is still COMPACTED, new history still works.
        self.assertEqual(self.server.restart(), 0)
        r = self.watch(p, since=1, recursive=True, expect=410)
        self.assertEqual((r.code, r.body["error"]["zxid"]), ("COMPACTED", r.zxid))
        more = self.set(p + "/k", "after restart")
        r = self.watch(p, since=want[-1]["zxid"], recursive=True)
        self.assertEqual(r.body, {"events": more, "zxid": more[0]["zxid"]})


class WatchHistoryRestartTest(ResumeBase):
    server_name = "watch_history_restart"

    def test_history_from_before_a_restart_comes_from_the_log(self):
        p = self.fresh("h")
        zp = self.c.get(p).body["stat"]["czxid"]
        z0 = self.current()
        want = self.create(p + "/a", "1")
        want += self.set(p + "/a", "2")
        want += self.multi([{"op": "create", "path": p + "/b"},
                            {"op": "set", "path": p + "/a", "data": "3"},
                            {"op": "delete", "path": p + "/b"}])
        want += self.delete(p + "/a")
        sid = self.c.open_session(20000).body["id"]
        r = self.c.create(p + "/e", "", ephemeral=True, session=sid)
        self.assertEqual(r.status, 201, r)
        ze = r.body["stat"]["czxid"]
        r = self.c.close_session(sid)
        self.assertEqual(r.status, 204)
        want += [{"type": "created", "path": p + "/e", "zxid": ze},
                 {"type": "children", "path": p, "zxid": ze},
                 {"type": "deleted", "path": p + "/e", "zxid": r.zxid},
                 {"type": "children", "path": p, "zxid": r.zxid}]
        before = self.watch(p, since=z0, recursive=True).body
        self.assertEqual(before["events"], want)
        for kill in (False, True):
            with self.subTest(kill=kill):
                self.server.restart(kill=kill)
                # The same events; the resume zxid is the current one, which a restart
                # moves on by its leader's no-op (a txn without events).
                after = self.watch(p, since=z0, recursive=True).body
                self.assertEqual(after["events"], before["events"])
                self.assertEqual(after["zxid"], self.current())
                self.assertGreater(after["zxid"], before["zxid"])
                self.assertEqual(self.watch(p, since=0, recursive=True).body["events"],
                                 [ev("created", p, zp)] + want)
                mid = want[3]["zxid"]
                self.assertEqual(self.watch(p, since=mid, recursive=True).body["events"],
                                 [e for e in want if e["zxid"] > mid])
                self.assertEqual(self.watch(p, since=z0, recursive=False).body["events"],
                                 [e for e in want if e["path"] == p])
        # And new changes continue the same history.
        more = self.set(p, "new")
        r = self.watch(p, since=before["zxid"], recursive=True)
        self.assertEqual(r.body, {"events": more, "zxid": more[0]["zxid"]})


if __name__ == "__main__":
    run_tests()
