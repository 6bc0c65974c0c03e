#!/usr/bin/env python3
"""A change that wakes many parked watches: every watcher hears it, and the writer whose
change it was hears first.

Waking thousands of long-polls takes the server a while (each renders its answer); the
writer's own answer is sent before any of them is woken (engine_host.wake_soon), so a
lock holder's release or a leader's write is not held up by its own audience."""

import os
import resource
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import (ServerTestCase, raw_http_request, run_tests,  # noqa: E402
                            wait_until)

WATCHERS = 2000


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class WatchFanout(ServerTestCase):
    def test_writer_answered_before_its_watchers(self):
        if raise_nofile(WATCHERS + 200) < WATCHERS + 100:
            self.skipTest("not enough file descriptors for %d watchers" % WATCHERS)
        path = self.fresh("fan")
        port = self.server.port
        watchers = []
        try:
            for _ in range(WATCHERS):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(raw_http_request("GET", "/v1/watch%s?timeout_ms=60000" % path))
                watchers.append(s)
            # All parked: the server says so.
            wait_until(lambda: self.c.request("GET", "/v1/stats").body["parked_waiters"]
                       >= WATCHERS, timeout=60, message="%d parked watches" % WATCHERS)

            writer = socket.create_connection(("127.0.0.1", port))
            writer.sendall(raw_http_request("PUT", "/v1/znodes" + path, b'{"data":"now"}',
                                        "application/json"))
            # Record in which poll round each answer starts to arrive. Within one round
            # the client cannot tell which came first, and on a busy machine it may
            # wake only after every answer is in: so the check is that no watcher's
            # answer was seen in a round before the writer's. TCP over loopback puts
            # sent bytes in the peer's socket before send returns, so a server that
            # answers the writer first always passes; one that wakes the watchers
            # first fails unless this client sleeps through the whole fan-out.
            pending = {s.fileno(): s for s in [writer] + watchers}
            data = {fd: b"" for fd in pending}
            first_round = {}
            poller = select.poll()
            for fd in pending:
                poller.register(fd, select.POLLIN)
            deadline = time.monotonic() + 60
            rounds = 0
            while pending and time.monotonic() < deadline:
                ready = poller.poll(1000)
                rounds += 1
                for fd, _ in ready:
                    chunk = pending[fd].recv(65536)
                    if not data[fd]:
                        first_round[fd] = rounds
                    data[fd] += chunk
                    if not chunk or (b"\r\n\r\n" in data[fd] and data[fd].endswith(b"}")):
                        poller.unregister(fd)
                        del pending[fd]
            self.assertEqual(pending, {}, "answers missing from %d connections" % len(pending))
            for fd, raw in data.items():
                self.assertTrue(raw.startswith(b"HTTP/1.1 200"), raw[:200])
                if fd != writer.fileno():
                    self.assertIn(b'"changed"', raw, raw[-300:])
            writer_round = first_round[writer.fileno()]
            earlier = sum(1 for r in first_round.values() if r < writer_round)
            self.assertEqual(earlier, 0, "%d watchers were answered in poll rounds before the "
                             "writer (round %d of %d)" % (earlier, writer_round, rounds))
            writer.close()
        finally:
            for s in watchers:
                s.close()


if __name__ == "__main__":
    run_tests()
