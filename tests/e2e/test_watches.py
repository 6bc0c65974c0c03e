#!/usr/bin/env python3
"""One-shot ZooKeeper watches: set by a read with ?watch=true and a Corral-Session,
delivered through GET /v1/sessions/<id>/events (or piggybacked on the session's next
read), removed by DELETE /v1/sessions/<id>/watches.

Triggers are ZooKeeper's (ZooKeeper Programmer's Guide, "Semantics of Watches"):
  data watch (getData) and exists watch: created / changed (setData) / deleted
  child watch (getChildren): children (a child created or deleted; path = the parent)
                             and deleted (the node itself)
A child's data change and grandchildren do not fire a parent's watches.

"No event" is checked exactly with a sentinel: after the change under test the test
sets a watch on a sentinel node and changes it; events are delivered in zxid order, so
the events that arrive up to the sentinel's are exactly the ones the change fired."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import (ServerTestCase, children_url, run_tests,  # noqa: E402
                            wait_until, znode_url)

# --tick-ms 500: session timeouts in [1000, 10000] ms.
SESSION_MS = 9000          # events poll cap = 2/3 of it = 6000 ms
SHORT_SESSION_MS = 1500    # cap 1000 ms


class WatchTestBase(ServerTestCase):
    # --- helpers ------------------------------------------------------------------
    def open(self, timeout_ms=SESSION_MS):
        r = self.c.open_session(timeout_ms)
        self.assertEqual(r.status, 201, r)
        return r.body["id"]

    def watch_get(self, path, sid, expect=200):
        r = self.c.request("GET", znode_url(path, watch=True), session=sid)
        self.assertEqual(r.status, expect, r)
        return r

    def watch_exists(self, path, sid, expect=200):
        r = self.c.request("HEAD", znode_url(path, watch=True), session=sid)
        self.assertEqual(r.status, expect, r)
        return r

    def watch_children(self, path, sid, expect=200):
        r = self.c.request("GET", children_url(path, watch=True), session=sid)
        self.assertEqual(r.status, expect, r)
        return r

    def events(self, sid, timeout_ms=0, client=None):
        r = (client or self.c).request(
            "GET", "/v1/sessions/%s/events?timeout_ms=%d" % (sid, timeout_ms), session="")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(r.body), {"events"}, r)
        return r.body["events"]

    def remove_watches(self, sid, path, type_=None):
        url = "/v1/sessions/%s/watches?path=%s" % (sid, path)
        if type_ is not None:
            url += "&type=" + type_
        return self.c.request("DELETE", url, session="")

    def w(self):
        """A client with no session, as 'another client' that makes the changes."""
        return self.c

    def set_z(self, path, data="x"):
        r = self.w().set(path, data, session="")
        self.assertEqual(r.status, 200, r)
        return r.body["stat"]["mzxid"]

    def create_z(self, path, data=""):
        r = self.w().create(path, data, session="")
        self.assertEqual(r.status, 201, r)
        return r.body["stat"]["czxid"]

    def delete_z(self, path):
        r = self.w().delete(path, session="")
        self.assertEqual(r.status, 204, r)
        return r.zxid

    def sentinel(self, sid):
        """Sets an exists watch on a new node, changes it; returns the event expected."""
        p = self.fresh("sentinel")
        self.watch_exists(p, sid)
        z = self.set_z(p, "s")
        return {"type": "changed", "path": p, "zxid": z}

    def drain_until(self, sid, last, timeout=5.0):
        """All events delivered to sid up to and including `last`."""
        got = []
        deadline = time.monotonic() + timeout
        while last not in got:
            self.assertLess(time.monotonic(), deadline, "event %r never came; got %r"
                            % (last, got))
            got += self.events(sid, 1000)
        self.assertEqual(got[-1], last, got)
        return got

    def assertEventsThen(self, sid, expected):
        """Exactly `expected` (list) was delivered, nothing else: checked with a sentinel."""
        s = self.sentinel(sid)
        self.assertEqual(self.drain_until(sid, s), expected + [s])


class WatchTest(WatchTestBase):
    server_name = "watches"
    server_args = ("--tick-ms", "500")

    # --- the trigger table ----------------------------------------------------------
    # kind: how the watch is set on N (= P/n); change: what another client does.
    # expected: None, or (type, which path: "N" or "P"... always N here).
    TABLE = [
        # (kind,            change,            expected event type or None)
        ("data",            "set",             "changed"),
        ("data",            "delete",          "deleted"),
        ("data",            "create_child",    None),
        ("data",            "delete_child",    None),
        ("data",            "set_child",       None),
        ("data",            "set_parent",      None),
        ("exists",          "set",             "changed"),
        ("exists",          "delete",          "deleted"),
        ("exists",          "create_child",    None),
        ("exists",          "delete_child",    None),
        ("exists",          "set_child",       None),
        ("children",        "set",             None),
        ("children",        "delete",          "deleted"),
        ("children",        "create_child",    "children"),
        ("children",        "delete_child",    "children"),
        ("children",        "set_child",       None),
        ("children",        "create_grandchild", None),
        ("children",        "set_parent",      None),
        ("exists_missing",  "create",          "created"),
        ("exists_missing",  "create_sibling",  None),
    ]

    def run_case(self, kind, change):
        """Returns (events delivered before the sentinel, zxid of the change, N)."""
        p = self.fresh("%s_%s" % (kind, change))
        n = p + "/n"
        sid = self.open()
        if kind != "exists_missing":
            self.create_z(n, "d")
            if change in ("delete_child", "set_child", "create_grandchild"):
                self.create_z(n + "/c", "")
        if kind == "data":
            self.watch_get(n, sid)
        elif kind == "exists":
            self.watch_exists(n, sid)
        elif kind == "children":
            self.watch_children(n, sid)
        elif kind == "exists_missing":
            self.watch_exists(n, sid, expect=404)
        z = {
            "set": lambda: self.set_z(n, "new"),
            "delete": lambda: self.delete_z(n),
            "create_child": lambda: self.create_z(n + "/c"),
            "delete_child": lambda: self.delete_z(n + "/c"),
            "set_child": lambda: self.set_z(n + "/c", "new"),
            "set_parent": lambda: self.set_z(p, "new"),
            "create_grandchild": lambda: self.create_z(n + "/c/g"),
            "create": lambda: self.create_z(n),
            "create_sibling": lambda: self.create_z(p + "/sibling"),
        }[change]()
        s = self.sentinel(sid)
        got = self.drain_until(sid, s)[:-1]
        self.assertEqual(self.c.close_session(sid).status, 204)
        return got, z, n

    def test_trigger_table(self):
        for kind, change, expected in self.TABLE:
            with self.subTest(kind=kind, change=change):
                got, z, n = self.run_case(kind, change)
                want = [] if expected is None else [{"type": expected, "path": n, "zxid": z}]
                self.assertEqual(got, want)

    def test_exists_watch_on_missing_node_fires_created_with_create_zxid(self):
        p = self.fresh()
        sid = self.open()
        self.watch_exists(p + "/later", sid, expect=404)
        z = self.create_z(p + "/later", "v")
        self.assertEqual(self.events(sid, 2000),
                         [{"type": "created", "path": p + "/later", "zxid": z}])

    def test_data_watch_on_missing_node_is_not_set(self):
        p = self.fresh()
        sid = self.open()
        r = self.watch_get(p + "/missing", sid, expect=404)
        self.assertEqual(r.code, "NO_NODE")
        r = self.watch_children(p + "/missing", sid, expect=404)
        self.assertEqual(r.code, "NO_NODE")
        self.create_z(p + "/missing")
        self.create_z(p + "/missing/kid")
        self.assertEventsThen(sid, [])

    def test_one_shot(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        z1 = self.set_z(p, "1")
        self.set_z(p, "2")
        self.delete_z(p)
        self.assertEventsThen(sid, [{"type": "changed", "path": p, "zxid": z1}])
        # Set again by another read, it fires again (once).
        q = self.fresh()
        self.watch_children(q, sid)
        z2 = self.create_z(q + "/a")
        self.create_z(q + "/b")
        self.assertEventsThen(sid, [{"type": "children", "path": q, "zxid": z2}])
        self.watch_children(q, sid)
        z3 = self.delete_z(q + "/a")
        self.assertEventsThen(sid, [{"type": "children", "path": q, "zxid": z3}])

    def test_same_watch_twice_gives_one_event(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        self.watch_get(p, sid)
        self.watch_exists(p, sid)    # exists and getData watches are the same kind
        z = self.set_z(p, "v")
        self.assertEventsThen(sid, [{"type": "changed", "path": p, "zxid": z}])
        self.watch_children(p, sid)
        self.watch_children(p, sid)
        z = self.create_z(p + "/k")
        self.assertEventsThen(sid, [{"type": "children", "path": p, "zxid": z}])

    def test_data_and_child_watch_on_deleted_node_give_one_deleted(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        self.watch_children(p, sid)
        z = self.delete_z(p)
        self.assertEventsThen(sid, [{"type": "deleted", "path": p, "zxid": z}])

    def test_two_sessions_each_get_the_event(self):
        p = self.fresh()
        s1, s2 = self.open(), self.open()
        self.watch_get(p, s1)
        self.watch_exists(p, s2)
        z = self.set_z(p, "v")
        ev = [{"type": "changed", "path": p, "zxid": z}]
        self.assertEqual(self.events(s1), ev)
        self.assertEqual(self.events(s2), ev)

    def test_multi_fires_each_watch_with_the_multi_zxid(self):
        p = self.fresh()
        sid = self.open()
        self.create_z(p + "/x", "")
        self.watch_get(p + "/x", sid)
        self.watch_children(p, sid)
        r = self.c.multi([{"op": "set", "path": p + "/x", "data": "m"},
                          {"op": "create", "path": p + "/y", "data": ""}], session="")
        self.assertEqual(r.status, 200, r)
        z = r.body["results"][0]["stat"]["mzxid"]
        self.assertEqual(r.body["results"][1]["stat"]["czxid"], z)
        self.assertEventsThen(sid, [{"type": "changed", "path": p + "/x", "zxid": z},
                                    {"type": "children", "path": p, "zxid": z}])

    def test_events_in_zxid_order_across_paths(self):
        p = self.fresh()
        sid = self.open()
        names = ["a", "b", "c", "d"]
        for n in names:
            self.create_z(p + "/" + n)
            self.watch_get(p + "/" + n, sid)
        self.watch_children(p, sid)
        expected = []
        for n in ["c", "a", "d"]:
            expected.append({"type": "changed", "path": p + "/" + n,
                             "zxid": self.set_z(p + "/" + n)})
        z = self.delete_z(p + "/b")
        expected += [{"type": "deleted", "path": p + "/b", "zxid": z},
                     {"type": "children", "path": p, "zxid": z}]
        got = self.events(sid, 2000)
        self.assertEqual(got, expected)
        self.assertEqual([e["zxid"] for e in got], sorted(e["zxid"] for e in got))
        self.assertEqual(self.events(sid), [])

    def test_ephemeral_deleted_by_session_close_fires_other_sessions_watches(self):
        p = self.fresh()
        owner, watcher = self.open(), self.open()
        e = p + "/eph"
        r = self.c.create(e, "", ephemeral=True, session=owner)
        self.assertEqual(r.status, 201, r)
        self.watch_get(e, watcher)
        self.watch_children(p, watcher)
        r = self.c.close_session(owner)
        self.assertEqual(r.status, 204)
        self.assertEventsThen(watcher, [{"type": "deleted", "path": e, "zxid": r.zxid},
                                        {"type": "children", "path": p, "zxid": r.zxid}])

    def test_exists_watch_fires_for_create_inside_a_multi(self):
        p = self.fresh()
        sid = self.open()
        self.watch_exists(p + "/m", sid, expect=404)
        r = self.c.multi([{"op": "create", "path": p + "/m"},
                          {"op": "set", "path": p + "/m", "data": "x"}], session="")
        self.assertEqual(r.status, 200, r)
        # One-shot: the create fires it; the set in the same multi finds it gone.
        self.assertEventsThen(sid, [{"type": "created", "path": p + "/m", "zxid": r.zxid}])

    # --- the events long-poll -------------------------------------------------------
    def test_events_poll_answers_at_once_when_pending(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        z = self.set_z(p)
        t0 = time.monotonic()
        self.assertEqual(self.events(sid, 5000), [{"type": "changed", "path": p, "zxid": z}])
        self.assertLess(time.monotonic() - t0, 1.0)

    def test_events_poll_times_out_with_no_events(self):
        sid = self.open()
        for n in (0, 300, 1500):
            with self.subTest(timeout_ms=n):
                t0 = time.monotonic()
                self.assertEqual(self.events(sid, n), [])
                el = time.monotonic() - t0
                self.assertGreaterEqual(el, 0.8 * n / 1000)
                self.assertLess(el, n / 1000 + 2)

    def test_events_poll_timeout_defaults_to_and_is_capped_at_two_thirds_of_session(self):
        sid = self.open(SHORT_SESSION_MS)       # cap = 1000 ms
        cap = SHORT_SESSION_MS * 2 // 3
        for url in ("/v1/sessions/%s/events" % sid,
                    "/v1/sessions/%s/events?timeout_ms=8000" % sid):
            with self.subTest(url=url):
                t0 = time.monotonic()
                r = self.c.request("GET", url, session="")
                el = time.monotonic() - t0
                self.assertEqual((r.status, r.body), (200, {"events": []}), r)
                self.assertGreaterEqual(el, 0.8 * cap / 1000)
                self.assertLess(el, cap / 1000 + 2)

    def test_events_poll_keeps_the_session_alive(self):
        p = self.fresh()
        sid = self.open(SHORT_SESSION_MS)
        e = p + "/eph"
        self.assertEqual(self.c.create(e, "", ephemeral=True, session=sid).status, 201)
        deadline = time.monotonic() + 3 * SHORT_SESSION_MS / 1000
        while time.monotonic() < deadline:
            self.assertEqual(self.events(sid, 5000), [])   # capped at 1000 ms
        self.assertEqual(self.c.exists(e).status, 200)
        self.assertEqual(self.c.session_info(sid).status, 200)

    def test_parked_events_poll_wakes_on_change(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        other = self.server.client()
        out = {}

        def poll():
            out["events"] = self.events(sid, 5000, client=other)
            out["at"] = time.monotonic()
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.5)
        self.assertNotIn("events", out, "answered with nothing pending")
        changed_at = time.monotonic()
        z = self.set_z(p, "wake")
        t.join(10)
        self.assertFalse(t.is_alive())
        self.assertEqual(out["events"], [{"type": "changed", "path": p, "zxid": z}])
        self.assertLess(out["at"] - changed_at, 1.0)

    def test_events_poll_unknown_session(self):
        r = self.c.request("GET", "/v1/sessions/00000000deadbeef/events?timeout_ms=0",
                           session="")
        self.assertError(r, 404, "SESSION_EXPIRED")

    def test_events_poll_bad_timeout(self):
        sid = self.open()
        for v in ("x", "-1", "1.5"):
            with self.subTest(timeout_ms=v):
                r = self.c.request("GET", "/v1/sessions/%s/events?timeout_ms=%s" % (sid, v),
                                   session="")
                self.assertError(r, 400, "BAD_ARGUMENTS")

    # --- ordering guarantee: piggyback on reads -------------------------------------
    def test_pending_events_ride_on_the_next_read(self):
        p = self.fresh()
        q = self.fresh()
        sid = self.open()
        r = self.watch_get(p, sid)
        self.assertNotIn("events", r.body)
        z = self.set_z(p, "new")
        ev = [{"type": "changed", "path": p, "zxid": z}]
        r = self.c.get(p, session=sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["events"], ev)
        self.assertEqual(r.body["data"], "new")
        # They left the queue: the poll and the next read do not repeat them.
        self.assertEqual(self.events(sid), [])
        self.assertNotIn("events", self.c.get(p, session=sid).body)
        # Children reads carry them too; a read without the session does not take them.
        self.watch_children(q, sid)
        z = self.create_z(q + "/k")
        self.assertNotIn("events", self.c.children(q, session="").body)
        self.assertNotIn("events", self.c.get(q, session="").body)
        r = self.c.children(q, session=sid)
        self.assertEqual(r.body["events"], [{"type": "children", "path": q, "zxid": z}])
        self.assertEqual(r.body["children"], ["k"])
        self.assertEqual(self.events(sid), [])

    def test_exists_says_events_are_pending(self):
        # HEAD has no body to carry the events: it says how many wait, so the client
        # reads them before it acts on the answer (ZooKeeper's ordering guarantee).
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        r = self.c.exists(p, session=sid)
        self.assertIsNone(r.headers.get("corral-events-pending"))
        self.set_z(p, "new")
        r = self.c.exists(p, session=sid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("corral-events-pending"), "1")
        self.assertEqual(len(self.events(sid)), 1)
        self.assertIsNone(self.c.exists(p, session=sid).headers.get("corral-events-pending"))

    # --- removeWatches ----------------------------------------------------------------
    def test_remove_watches(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        r = self.remove_watches(sid, p, "data")
        self.assertEqual((r.status, r.raw), (204, b""), r)
        self.set_z(p)
        self.assertEventsThen(sid, [])
        self.assertError(self.remove_watches(sid, p, "data"), 404, "NO_WATCHER")
        self.assertError(self.remove_watches(sid, p), 404, "NO_WATCHER")
        # type=children leaves the data watch; the data watch still fires.
        self.watch_get(p, sid)
        self.watch_children(p, sid)
        self.assertEqual(self.remove_watches(sid, p, "children").status, 204)
        self.assertError(self.remove_watches(sid, p, "children"), 404, "NO_WATCHER")
        self.create_z(p + "/k")
        z = self.set_z(p)
        self.assertEventsThen(sid, [{"type": "changed", "path": p, "zxid": z}])
        # type=any (the default) removes both kinds.
        self.watch_get(p, sid)
        self.watch_children(p, sid)
        self.assertEqual(self.remove_watches(sid, p).status, 204)
        self.delete_z(p + "/k")
        self.set_z(p)
        self.assertEventsThen(sid, [])
        # Only a child watch: type=data is NO_WATCHER, type=any removes it.
        self.watch_children(p, sid)
        self.assertError(self.remove_watches(sid, p, "data"), 404, "NO_WATCHER")
        self.assertEqual(self.remove_watches(sid, p, "any").status, 204)
        self.create_z(p + "/k2")
        self.assertEventsThen(sid, [])
        # An exists watch on a missing node can be removed too.
        self.watch_exists(p + "/nope", sid, expect=404)
        self.assertEqual(self.remove_watches(sid, p + "/nope", "data").status, 204)
        self.create_z(p + "/nope")
        self.assertEventsThen(sid, [])

    def test_remove_watches_errors(self):
        sid = self.open()
        p = self.fresh()
        self.assertError(self.remove_watches(sid, p + "/never"), 404, "NO_WATCHER")
        self.assertError(self.remove_watches(sid, p, "bogus"), 400, "BAD_ARGUMENTS")
        r = self.c.request("DELETE", "/v1/sessions/%s/watches" % sid, session="")
        self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertError(self.remove_watches("00000000deadbeef", p), 404, "SESSION_EXPIRED")

    # --- watch=true needs a session -----------------------------------------------------
    def test_watch_without_session_is_bad_arguments(self):
        p = self.fresh()
        r = self.c.request("GET", znode_url(p, watch=True), session="")
        self.assertError(r, 400, "BAD_ARGUMENTS")
        r = self.c.request("GET", children_url(p, watch=True), session="")
        self.assertError(r, 400, "BAD_ARGUMENTS")
        r = self.c.request("HEAD", znode_url(p, watch=True), session="")
        self.assertEqual(r.status, 400, r)
        r = self.c.request("GET", znode_url(p, watch="maybe"), session=self.open())
        self.assertError(r, 400, "BAD_ARGUMENTS")

    # --- sessions end, watches end ------------------------------------------------------
    def test_close_ends_watches_and_wakes_a_parked_poll(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        other = self.server.client()
        out = {}

        def poll():
            out["r"] = other.request("GET", "/v1/sessions/%s/events?timeout_ms=5000" % sid,
                                     session="")
            out["at"] = time.monotonic()
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.4)
        closed_at = time.monotonic()
        self.assertEqual(self.c.close_session(sid).status, 204)
        t.join(10)
        self.assertError(out["r"], 404, "SESSION_EXPIRED")
        self.assertLess(out["at"] - closed_at, 1.0)
        self.set_z(p)
        self.assertError(self.c.request("GET", "/v1/sessions/%s/events?timeout_ms=0" % sid,
                                        session=""), 404, "SESSION_EXPIRED")
        self.assertError(self.remove_watches(sid, p), 404, "SESSION_EXPIRED")
        # A new session sees only its own watches.
        s2 = self.open()
        self.watch_get(p, s2)
        z = self.set_z(p)
        self.assertEqual(self.events(s2), [{"type": "changed", "path": p, "zxid": z}])

    # --- clients that go away while parked ----------------------------------------------
    def raw_disconnect(self, request_line):
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        s.sendall(("%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % request_line).encode())
        time.sleep(0.3)
        s.close()

    def test_client_disconnecting_while_parked_leaves_server_healthy(self):
        p = self.fresh()
        sid = self.open()
        self.watch_get(p, sid)
        for _ in range(3):
            self.raw_disconnect("GET /v1/sessions/%s/events?timeout_ms=5000" % sid)
            self.raw_disconnect("GET /v1/watch%s?recursive=true&timeout_ms=5000" % p)
        time.sleep(0.3)
        self.assertEqual(self.c.health().status, 200)
        # The watch was not consumed by the vanished polls; a change still works.
        z = self.set_z(p)
        self.assertEqual(self.events(sid, 2000), [{"type": "changed", "path": p, "zxid": z}])
        r = self.c.request("GET", "/v1/watch%s?since=%d&timeout_ms=0" % (p, z - 1))
        self.assertEqual(r.body["events"], [{"type": "changed", "path": p, "zxid": z}])
        # Disconnect again, then a change while nobody is connected, then a fresh poll.
        self.watch_get(p, sid)
        self.raw_disconnect("GET /v1/sessions/%s/events?timeout_ms=5000" % sid)
        z = self.set_z(p)
        time.sleep(0.2)
        self.assertEqual(self.events(sid, 2000), [{"type": "changed", "path": p, "zxid": z}])
        self.assertTrue(self.server.running())
        bad = self.server.log_lines(r"\b(ERROR|WARN)\b|assert|sanitizer|leak", flags=0)
        self.assertEqual(bad, [])


class WatchExpiryTest(WatchTestBase):
    server_name = "watches_expiry"
    server_args = ("--tick-ms", "100")

    def test_expiry_ends_watches(self):
        p = self.fresh()
        sid = self.open(400)
        keeper = self.open(2000)
        self.watch_get(p, sid)
        self.watch_children(p, sid)
        self.watch_get(p, keeper)
        wait_until(lambda: self.c.session_info(sid).status == 404, 3,
                   message="session expired")
        z = self.set_z(p)
        self.create_z(p + "/k")
        self.assertError(self.c.request("GET", "/v1/sessions/%s/events?timeout_ms=0" % sid,
                                        session=""), 404, "SESSION_EXPIRED")
        self.assertError(self.remove_watches(sid, p), 404, "SESSION_EXPIRED")
        # The live session's watch is unaffected.
        self.assertEqual(self.events(keeper, 1000),
                         [{"type": "changed", "path": p, "zxid": z}])


if __name__ == "__main__":
    run_tests()
