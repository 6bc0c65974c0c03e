#!/usr/bin/env python3
"""Sessions: negotiated timeout, keepalive, refresh by any request, expiry and close
delete ephemerals, unknown sessions, survival across a restart.

The server runs with --tick-ms 100, so timeouts are clamped to [200, 2000] ms."""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import ServerTestCase, run_tests, wait_until  # noqa: E402

MIN_MS, MAX_MS = 200, 2000
UNKNOWN = "00000000deadbeef"


class SessionsTest(ServerTestCase):
    server_name = "sessions"
    server_args = ("--tick-ms", "100")

    # --- helpers ------------------------------------------------------------------
    def open(self, timeout_ms):
        r = self.c.open_session(timeout_ms)
        self.assertEqual(r.status, 201, r)
        self.assertRegex(r.body["id"], r"^[0-9a-f]{16}$")
        return r.body["id"], r.body["timeout_ms"]

    def ephemeral(self, path, sid, data=""):
        r = self.c.create(path, data, ephemeral=True, session=sid)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["ephemeralOwner"], sid)
        return r.body["path"]

    def keep_alive_for(self, seconds, action):
        """Calls action() every 80 ms (< MIN_MS / 2) for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            action()
            time.sleep(0.08)

    def wait_gone(self, path, within_s):
        wait_until(lambda: self.c.exists(path).status == 404, within_s,
                   message="ephemeral %s deleted" % path)

    def assertAlive(self, sid):
        r = self.c.session_info(sid)
        self.assertEqual(r.status, 200, r)
        return r.body

    def assertInfo(self, info, sid, timeout_ms, ephemerals):
        """Session info has these values (extra fields, e.g. remaining_ms, are allowed)."""
        self.assertEqual({k: info.get(k) for k in ("id", "timeout_ms", "ephemerals")},
                         {"id": sid, "timeout_ms": timeout_ms, "ephemerals": ephemerals})

    def assertExpired(self, resp):
        self.assertError(resp, 404, "SESSION_EXPIRED")

    # --- open ---------------------------------------------------------------------
    def test_open_negotiates_timeout_into_min_max(self):
        for asked, got in [(50, MIN_MS), (MIN_MS, MIN_MS), (1000, 1000), (MAX_MS, MAX_MS),
                           (100000, MAX_MS)]:
            with self.subTest(asked=asked):
                sid, t = self.open(asked)
                self.assertEqual(t, got)
                info = self.assertAlive(sid)
                self.assertInfo(info, sid, got, [])
                self.assertEqual(self.c.close_session(sid).status, 204)

    def test_session_ids_are_distinct(self):
        ids = [self.open(1000)[0] for _ in range(5)]
        self.assertEqual(len(set(ids)), 5)
        for sid in ids:
            self.c.close_session(sid)

    def test_open_with_bad_body_is_bad_arguments(self):
        for raw in ['{', '[]', '{"timeout_ms": "x"}', '{"timeout_ms": 1.5}']:
            with self.subTest(body=raw):
                r = self.c.request("POST", "/v1/sessions", raw=raw, session="")
                self.assertError(r, 400, "BAD_ARGUMENTS")

    # --- keepalive / refresh ------------------------------------------------------
    def test_keepalive_keeps_session_past_its_timeout(self):
        p = self.fresh()
        sid, t = self.open(400)
        e = self.ephemeral(p + "/e", sid)

        def ka():
            r = self.c.keepalive(sid)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, {"id": sid, "timeout_ms": 400})
        self.keep_alive_for(4 * t / 1000, ka)
        self.assertEqual(self.c.exists(e).status, 200)
        self.assertEqual(self.assertAlive(sid)["ephemerals"], [e])
        # Left alone, it expires and its ephemeral goes.
        self.wait_gone(e, 3 * t / 1000)
        self.assertExpired(self.c.keepalive(sid))
        self.assertExpired(self.c.session_info(sid))

    def test_any_request_with_session_header_refreshes(self):
        p = self.fresh()
        sid, t = self.open(400)
        e = self.ephemeral(p + "/e", sid)
        self.keep_alive_for(4 * t / 1000,
                            lambda: self.assertEqual(self.c.get(p, session=sid).status, 200))
        self.assertEqual(self.c.exists(e).status, 200)
        # A request that fails (NO_NODE) still counts as hearing from the client.
        self.keep_alive_for(4 * t / 1000, lambda: self.assertError(
            self.c.get(p + "/missing", session=sid), 404, "NO_NODE"))
        self.assertEqual(self.c.exists(e).status, 200)
        self.assertEqual(self.c.close_session(sid).status, 204)

    # --- expiry -------------------------------------------------------------------
    def test_expiry_removes_ephemerals_and_updates_parent(self):
        p = self.fresh()
        sid, t = self.open(600)
        e1 = self.ephemeral(p + "/e1", sid)
        r = self.c.create(p + "/q-", "", ephemeral=True, sequential=True, session=sid)
        self.assertEqual(r.status, 201, r)
        e2 = r.body["path"]
        self.assertEqual(e2, p + "/q-0000000001")
        info = self.assertAlive(sid)
        self.assertEqual(info["ephemerals"], sorted([e1, e2]))
        time.sleep(t / 1000 / 3)
        self.assertEqual(self.c.exists(e1).status, 200, "expired far too early")
        self.wait_gone(e1, 3 * t / 1000)
        self.assertEqual(self.c.exists(e2).status, 404, "all ephemerals go in one txn")
        st = self.c.get(p).body["stat"]
        self.assertEqual((st["numChildren"], st["cversion"]), (0, 4))
        self.assertExpired(self.c.session_info(sid))

    def test_expired_session_cannot_create_ephemerals(self):
        p = self.fresh()
        sid, t = self.open(MIN_MS)
        wait_until(lambda: self.c.session_info(sid).status == 404, 3 * t / 1000 + 1,
                   message="session expired")
        r = self.c.create(p + "/e", "", ephemeral=True, session=sid)
        self.assertExpired(r)
        self.assertEqual(self.c.exists(p + "/e").status, 404)
        # Expired stays expired: the header does not resurrect it.
        self.assertExpired(self.c.get(p, session=sid))
        self.assertExpired(self.c.keepalive(sid))

    # --- close --------------------------------------------------------------------
    def test_close_removes_ephemerals_at_once(self):
        p = self.fresh()
        sid, _ = self.open(MAX_MS)
        e = self.ephemeral(p + "/e", sid)
        self.c.create(p + "/persistent", "", session=sid)
        r = self.c.close_session(sid)
        self.assertEqual((r.status, r.raw), (204, b""))
        self.assertEqual(self.c.exists(e).status, 404)
        self.assertEqual(self.c.exists(p + "/persistent").status, 200)
        self.assertEqual(self.c.get(p + "/persistent").body["stat"]["ephemeralOwner"], "0")
        self.assertExpired(self.c.session_info(sid))
        self.assertExpired(self.c.close_session(sid))
        self.assertExpired(self.c.keepalive(sid))
        self.assertExpired(self.c.create(p + "/e2", "", ephemeral=True, session=sid))

    def test_info_lists_ephemerals_sorted(self):
        p = self.fresh()
        sid, _ = self.open(MAX_MS)
        paths = [self.ephemeral(p + "/" + n, sid) for n in ["zeta", "alpha", "mid"]]
        other, _ = self.open(MAX_MS)
        self.ephemeral(p + "/others", other)
        self.assertEqual(self.assertAlive(sid)["ephemerals"], sorted(paths))
        self.assertEqual(self.assertAlive(other)["ephemerals"], [p + "/others"])
        self.c.delete(p + "/mid")
        self.assertEqual(self.assertAlive(sid)["ephemerals"], [p + "/alpha", p + "/zeta"])
        self.c.close_session(sid)
        self.c.close_session(other)

    # --- unknown ------------------------------------------------------------------
    def test_unknown_session_is_session_expired_everywhere(self):
        p = self.fresh()
        self.assertExpired(self.c.keepalive(UNKNOWN))
        self.assertExpired(self.c.session_info(UNKNOWN))
        self.assertExpired(self.c.close_session(UNKNOWN))
        self.assertExpired(self.c.get(p, session=UNKNOWN))
        self.assertExpired(self.c.create(p + "/x", "", session=UNKNOWN))
        self.assertExpired(self.c.create(p + "/e", "", ephemeral=True, session=UNKNOWN))
        self.assertEqual(self.c.children(p).body["children"], [])

    def test_session_survives_restart_then_expires_if_not_kept_alive(self):
        p = self.fresh()
        kept, t_kept = self.open(MAX_MS)
        left, t_left = self.open(1000)
        e_kept = self.ephemeral(p + "/kept", kept, "k")
        e_left = self.ephemeral(p + "/left", left, "l")
        owner = self.c.get(e_kept).body["stat"]["ephemeralOwner"]
        rc = self.server.restart()
        self.assertEqual(rc, 0, "SIGTERM must be a clean shutdown")
        restarted = time.monotonic()
        # Right after the restart both sessions and their ephemerals are there.
        self.assertInfo(self.assertAlive(kept), kept, t_kept, [e_kept])
        self.assertEqual(self.assertAlive(left)["ephemerals"], [e_left])
        self.assertEqual(self.c.get(e_kept).body["stat"]["ephemeralOwner"], owner)
        self.assertEqual(self.c.data_of(e_left), b"l")
        # `kept` is kept alive, `left` is not: it expires within 3 timeouts of restart.
        def ka():
            self.assertEqual(self.c.keepalive(kept).status, 200)
        deadline = restarted + 3 * t_left / 1000
        while self.c.exists(e_left).status != 404:
            self.assertLess(time.monotonic(), deadline, "ephemeral of a dead session kept")
            ka()
            time.sleep(0.08)
        self.assertExpired(self.c.session_info(left))
        self.keep_alive_for(1.5 * t_kept / 1000, ka)
        self.assertEqual(self.c.exists(e_kept).status, 200)
        # The expiry is durable too: after another restart `left` is still gone and
        # `kept` still alive.
        self.assertEqual(self.server.restart(), 0)
        self.assertExpired(self.c.session_info(left))
        self.assertEqual(self.c.exists(e_left).status, 404)
        self.assertAlive(kept)
        self.assertEqual(self.c.close_session(kept).status, 204)
        self.assertEqual(self.c.exists(e_kept).status, 404)

    def test_a_stopped_server_does_not_expire_sessions_kept_alive_through_the_stop(self):
        # A server that does not run (SIGSTOP here; a VM pause, a swap storm or a starved
        # process alike) cannot read the keepalives sent meanwhile. On waking it must not
        # expire the sessions whose keepalives wait in its sockets, and a session that
        # really went quiet must still expire.
        p = self.fresh()
        kept, t_kept = self.open(1000)
        quiet, t_quiet = self.open(1000)
        e_kept = self.ephemeral(p + "/kept", kept)
        e_quiet = self.ephemeral(p + "/quiet", quiet)
        stop = threading.Event()
        answers = []

        def keep_alive():
            c = self.server.client(timeout=30)
            while not stop.is_set():
                answers.append(c.keepalive(kept).status)
                time.sleep(0.08)
            c.close()

        th = threading.Thread(target=keep_alive)
        th.start()
        try:
            time.sleep(0.3)
            os.kill(self.server.pid, signal.SIGSTOP)
            try:
                time.sleep(3 * t_kept / 1000)
            finally:
                os.kill(self.server.pid, signal.SIGCONT)
            resumed = time.monotonic()
            self.wait_gone(e_quiet, 3 * t_quiet / 1000)
            self.assertLess(time.monotonic() - resumed, 3 * t_quiet / 1000)
            self.assertExpired(self.c.session_info(quiet))
            time.sleep(2 * t_kept / 1000)
        finally:
            stop.set()
            th.join(30)
        self.assertEqual(set(answers), {200}, answers)
        self.assertEqual(self.c.exists(e_kept).status, 200)
        self.assertEqual(self.assertAlive(kept)["ephemerals"], [e_kept])
        self.assertEqual(self.c.close_session(kept).status, 204)

    def test_session_ids_are_not_reused_after_restart(self):
        before = {self.open(MAX_MS)[0] for _ in range(3)}
        self.assertEqual(self.server.restart(), 0)
        after = {self.open(MAX_MS)[0] for _ in range(3)}
        self.assertEqual(before & after, set())
        for sid in before | after:
            self.assertEqual(self.c.close_session(sid).status, 204)


if __name__ == "__main__":
    run_tests()
