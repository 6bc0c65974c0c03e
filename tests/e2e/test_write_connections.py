#!/usr/bin/env python3
"""Writes that wait for their quorum on many keep-alive connections at once.

A write is answered only after a majority has it on disk, so its connection waits. The
HTTP layer holds up to 256 such connections without suspending them in libmicrohttpd
(which saves three system calls per write) and suspends the rest. These tests stop both
followers of a 3-member cluster so that writes wait for as long as the test wants, and
check what a client would: 300 writers at once (held and suspended ones) each get their
own answer on a connection that stays usable, the server does not spin while they wait
and still answers reads at once, and clients that hang up while their write waits leave
the leader healthy, with their writes committed (ZooKeeper's rule: a write whose client
went away may still apply)."""

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import raw_http_request, run_tests, znode_url  # noqa: E402
from cluster_harness import ClusterTestCase, _quick  # noqa: E402

WRITERS = 300  # more than the 256 the HTTP layer holds: the rest are suspended


def json_request(method, url, body):
    return raw_http_request(method, url, json.dumps(body).encode(), "application/json")


def read_response(sock, timeout):
    """One HTTP/1.1 response with a Content-Length: (status, parsed body or None)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        rest += chunk
    return status, (json.loads(rest[:length]) if length else None)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WritesWaitingForQuorum(ClusterTestCase):
    # The followers are stopped for up to ~2 s at a time; a longer election timeout
    # keeps the leader from stepping down (check-quorum) and the followers from calling
    # an election when they come back, so the waiting writes commit.
    cluster_args = ["--request-timeout-ms", "30000"]
    cluster_options = {"proxies": False, "heartbeat_ms": 100, "election_timeout_ms": 4000}
    stop_checks_exit = True

    def setUp(self):
        self.leader = self.cluster.wait_leader()

    def pause_followers(self):
        followers = [m for m in self.cluster if m.id != self.leader.id]
        for m in followers:
            m.pause()
        return followers

    def connect(self, count):
        socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", self.leader.port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        return socks

    def test_300_writers_waiting_for_quorum_each_get_their_answer(self):
        st, _, _ = _quick(self.leader.port, "POST", znode_url("/w300"), {"data": ""})
        self.assertEqual(st, 201)
        socks = self.connect(WRITERS)
        followers = self.pause_followers()
        try:
            for i, s in enumerate(socks):
                s.sendall(json_request("POST", znode_url("/w300/n%03d" % i),
                                       {"data": "value-%d" % i}))
            time.sleep(0.3)  # the leader has read them all and waits for a follower
            # Waiting writes cost no CPU: held ones must not make the loop spin.
            before = cpu_seconds(self.leader.pid)
            time.sleep(1.0)
            used = cpu_seconds(self.leader.pid) - before
            print("leader CPU while %d writes waited: %.3f s in 1 s" % (WRITERS, used))
            self.assertLess(used, 0.3, "leader used %.2f s of CPU in 1 s while writes "
                            "waited for a quorum" % used)
            # Reads do not wait behind them.
            for _ in range(5):
                t0 = time.monotonic()
                st, body, _ = _quick(self.leader.port, "GET", znode_url("/w300"))
                elapsed = time.monotonic() - t0
                self.assertEqual(st, 200, body)
                self.assertLess(elapsed, 0.5, "a read waited %.3f s" % elapsed)
            # Nothing is answered before a majority has it.
            socks[0].settimeout(0.2)
            with self.assertRaises(socket.timeout):
                socks[0].recv(1)
        finally:
            for m in followers:
                m.resume()
        for i, s in enumerate(socks):
            st, body = read_response(s, 30)
            self.assertEqual(st, 201, body)
            self.assertEqual(body["path"], "/w300/n%03d" % i)
        # Each connection is still a working keep-alive connection.
        for i, s in enumerate(socks):
            s.sendall(json_request("PUT", znode_url("/w300/n%03d" % i),
                                   {"data": "again-%d" % i}))
        for i, s in enumerate(socks):
            st, body = read_response(s, 30)
            self.assertEqual(st, 200, body)
            self.assertEqual((body["path"], body["stat"]["version"]), ("/w300/n%03d" % i, 1))
            s.close()
        st, body, _ = _quick(self.leader.port, "GET", znode_url("/w300/n299"))
        self.assertEqual((st, body["data"]), (200, "again-299"))

    def test_clients_gone_while_their_writes_wait_leave_the_leader_healthy(self):
        st, _, _ = _quick(self.leader.port, "POST", znode_url("/gone"), {"data": ""})
        self.assertEqual(st, 201)
        socks = self.connect(40)
        followers = self.pause_followers()
        try:
            for i, s in enumerate(socks):
                s.sendall(json_request("POST", znode_url("/gone/n%02d" % i), {"data": "x"}))
            time.sleep(0.3)
            for i, s in enumerate(socks):
                if i % 2 == 0:  # half reset the connection, half close it politely
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                s.close()
            time.sleep(0.3)
        finally:
            for m in followers:
                m.resume()
        def all_there():
            st, body, _ = _quick(self.leader.port, "GET", "/v1/children/gone")
            return st == 200 and len(body["children"]) == 40
        deadline = time.monotonic() + 20
        while not all_there():
            self.assertLess(time.monotonic(), deadline, "the gone clients' writes never applied")
            time.sleep(0.1)
        st, body, _ = _quick(self.leader.port, "PUT", znode_url("/gone/n00"), {"data": "y"})
        self.assertEqual((st, body["stat"]["version"]), (200, 1), body)


if __name__ == "__main__":
    run_tests()
