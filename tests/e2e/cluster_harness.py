"""cluster_harness: run an N-member corrald quorum (3 by default; 5, 7, even 4 work) on
127.0.0.1, with fault injection: kill -9, SIGSTOP/SIGCONT, restart, and network
partitions by directed link.

Topology (proxies=True, the default)
------------------------------------
Every member i has an HTTP port H_i and a real peer port P_i (its nanomsg PULL socket).
Member i sends to member j over a nanomsg PUSH socket that connects to the address it
finds for j in *its own* --cluster spec. So each member gets its own spec:

    member i's --cluster:  i=127.0.0.1:H_i/127.0.0.1:P_i             (its real addresses)
                           j=127.0.0.1:H_j/127.0.0.1:X_ij  for j != i (X_ij: proxy port)

and the harness runs one TCP proxy per directed link i->j: it listens on 127.0.0.1:X_ij
and forwards (both directions of the TCP stream, so the nanomsg handshake works) to
127.0.0.1:P_j. Everything i sends to j crosses proxy i->j and nothing else does, so
cutting link i->j drops exactly the messages from i to j:

         +---------+  X_12 -> P_2   +---------+
         |    1    | -------------> |    2    |
         |  P_1    | <------------- |  P_2    |
         +---------+   X_21 -> P_1  +---------+
              ^ |                      | ^
        X_31  | | X_13           X_23  | | X_32
              | v                      v |
                  +---------+
                  |    3    |   (6 proxies for 3 members, n*(n-1) in general)
                  +---------+

cut(i, j) closes the live connections of proxy i->j and, while cut, accepts new ones
and closes them at once (mode "reset"), or keeps them open and silently discards
everything in both directions (mode "drop", a black hole). heal(i, j) lets new
connections through again (nanomsg reconnects by itself). isolate(i) cuts i->j and
j->i for every j. HTTP ports are not proxied: clients always reach every running member.

Members are harness Servers (same logs, data dirs under CORRAL_TEST_DIR/<name>/m<i>),
so their ports and data dirs survive restarts. Processes are signalled by PID only.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
import unittest

from corral_harness import (KEEP, TEST_DIR, Client, Server, free_port, znode_url,
                            children_url)

__all__ = ["Cluster", "ClusterTestCase", "Member", "LinkProxy", "wait_until_value"]


def wait_until_value(fn, timeout, interval=0.05, message="condition"):
    """Polls fn() (exceptions count as falsy) until truthy; returns it or raises."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as exc:  # noqa: BLE001 - polling through faults
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.1fs (last error: %r)"
                                 % (message, timeout, last_exc))
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# TCP proxy for one directed peer link
# --------------------------------------------------------------------------------------
class LinkProxy:
    """Listens on 127.0.0.1:<port>, forwards each connection to 127.0.0.1:<target>."""

    def __init__(self, name, target_port, port=None):
        self.name = name
        self.target_port = target_port
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", port or 0))
        self.port = self._lsock.getsockname()[1]
        self._lsock.listen(16)
        self._lock = threading.Lock()
        self._conns = []  # [(client_sock, upstream_sock)]
        self.mode = None  # None = passing; "reset" or "drop" = cut
        self.closed = False
        self.bytes_forwarded = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="proxy-%s" % name)
        self._thread.start()

    @property
    def cut_mode(self):
        return self.mode

    def _accept_loop(self):
        while not self.closed:
            try:
                cs, _ = self._lsock.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
            if self.closed or mode == "reset":
                _close(cs)
                continue
            if mode == "drop":
                # A black hole: hold the connection, read and discard.
                with self._lock:
                    self._conns.append((cs, None))
                threading.Thread(target=self._pump, args=(cs, None), daemon=True).start()
                continue
            try:
                us = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                us.settimeout(None)
            except OSError:
                _close(cs)  # the target is down: the sender sees a refused/reset link
                continue
            for s in (cs, us):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self.mode is not None or self.closed:
                    _close(cs)
                    _close(us)
                    continue
                self._conns.append((cs, us))
            threading.Thread(target=self._pump, args=(cs, us), daemon=True).start()
            threading.Thread(target=self._pump, args=(us, cs), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if dst is None or self.mode is not None:
                    continue  # cut (drop mode): discard
                dst.sendall(data)
                self.bytes_forwarded += len(data)
        except OSError:
            pass
        finally:
            _close(src)
            if dst is not None:
                _close(dst)

    def cut(self, mode="reset"):
        """Stops forwarding. reset: close live connections and refuse new ones;
        drop: keep connections open but discard everything (in both directions)."""
        if mode not in ("reset", "drop"):
            raise ValueError(mode)
        with self._lock:
            self.mode = mode
            conns, self._conns = self._conns, []
        if mode == "reset":
            for cs, us in conns:
                _close(cs)
                if us is not None:
                    _close(us)
        else:
            with self._lock:
                self._conns.extend(conns)

    def heal(self):
        with self._lock:
            was = self.mode
            self.mode = None
            conns, self._conns = self._conns, []
        if was == "drop":
            # Connections that were black-holed lost an unknown part of the stream: a real
            # network would eventually time them out; we reset them so nanomsg reconnects.
            for cs, us in conns:
                _close(cs)
                if us is not None:
                    _close(us)
        else:
            with self._lock:
                self._conns.extend(conns)

    def close(self):
        self.closed = True
        _close(self._lsock)
        with self._lock:
            conns, self._conns = self._conns, []
        for cs, us in conns:
            _close(cs)
            if us is not None:
                _close(us)


def _close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --------------------------------------------------------------------------------------
# Members and the cluster
# --------------------------------------------------------------------------------------
class Member(Server):
    """One corrald quorum member. .id, .port (HTTP), .peer_port (real PULL port)."""

    def __init__(self, cluster, member_id, args, http_port, peer_port):
        self.cluster = cluster
        self.id = member_id
        self.peer_port = peer_port
        self.paused = False
        self.spec = None  # filled in by the cluster once every port is known
        super().__init__("%s/m%d" % (cluster.name, member_id), args, port=http_port,
                         fresh=False)

    def command(self, extra_args=()):
        return [self.binary, "--id", str(self.id), "--cluster", self.spec,
                "--data-dir", self.data_dir, *self.args, *[str(a) for a in extra_args]]

    def start(self, extra_args=(), wait=False, timeout=30.0):
        self.paused = False
        return super().start(extra_args, wait=wait, timeout=timeout)

    def healthy(self):
        try:
            return _quick(self.port, "GET", "/health", timeout=1.0)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def info(self, timeout=1.0):
        """GET /v1/cluster as a dict, or None when the member does not answer."""
        try:
            st, body, _ = _quick(self.port, "GET", "/v1/cluster", timeout=timeout)
        except (OSError, http.client.HTTPException):
            return None
        return body if st == 200 else None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill9(self):
        if self.paused and self.running():
            # SIGKILL works on a stopped process too; no SIGCONT needed.
            self.paused = False
        super().kill9()

    def client(self, **kw):
        kw.setdefault("timeout", 10.0)
        return super().client(**kw)


def _quick(port, method, url, body=None, headers=None, timeout=2.0):
    """One request on a fresh connection: (status, parsed body or None, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, url, body=raw, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        parsed = None
        if data:
            try:
                parsed = json.loads(data.decode())
            except ValueError:
                parsed = None
        return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class Cluster:
    """An N-member cluster. Members are numbered 1..n; cluster[i] is member i."""

    def __init__(self, name, n=3, args=(), *, proxies=True, heartbeat_ms=50,
                 election_timeout_ms=300, request_timeout_ms=None, fresh=True):
        self.name = name
        self.n = n
        self.root = os.path.join(TEST_DIR, name)
        if fresh and os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.makedirs(self.root, exist_ok=True)
        args = list(args) + ["--heartbeat-ms", heartbeat_ms,
                             "--election-timeout-ms", election_timeout_ms]
        if request_timeout_ms is not None:
            args += ["--request-timeout-ms", request_timeout_ms]
        self.election_timeout_ms = election_timeout_ms
        ids = list(range(1, n + 1))
        self.members = {}
        for i in ids:
            self.members[i] = Member(self, i, args, free_port(), free_port())
        self.proxies = {}
        if proxies:
            for i in ids:
                for j in ids:
                    if i != j:
                        self.proxies[(i, j)] = LinkProxy("%d->%d" % (i, j),
                                                         self.members[j].peer_port)
        for i in ids:
            parts = []
            for j in ids:
                m = self.members[j]
                peer = m.peer_port if (i == j or not proxies) else self.proxies[(i, j)].port
                parts.append("%d=127.0.0.1:%d/127.0.0.1:%d" % (j, m.port, peer))
            self.members[i].spec = ",".join(parts)
        self._failed = False

    # --- access ---------------------------------------------------------------------
    def __getitem__(self, i):
        return self.members[i]

    def __iter__(self):
        return iter(self.members.values())

    @property
    def ids(self):
        return list(self.members)

    def running(self):
        return [m for m in self if m.running() and not m.paused]

    # --- lifecycle ------------------------------------------------------------------
    def start(self, wait=True, timeout=60.0):
        for m in self:
            m.start()
        if wait:
            self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, members=None, timeout=60.0):
        """Waits until every given (default: every running) member answers /health 200
        and they all agree on one leader. Returns the leader Member."""
        members = members if members is not None else self.running()
        wait_until_value(lambda: all(m.healthy() for m in members), timeout,
                         message="/health 200 on members %s" % [m.id for m in members])
        return self.wait_leader(members, timeout=timeout)

    def leader_view(self, members=None):
        """The leader id every given member agrees on and which says it is leader, or None."""
        members = members if members is not None else self.running()
        infos = {m.id: m.info() for m in members}
        if any(v is None for v in infos.values()):
            return None
        leaders = {v.get("leader") for v in infos.values()}
        if len(leaders) != 1:
            return None
        lid = leaders.pop()
        if lid is None or lid not in infos or infos[lid].get("role") != "leader":
            return None
        if sum(1 for v in infos.values() if v.get("role") == "leader") > 1:
            return None
        return self.members[lid]

    def wait_leader(self, members=None, timeout=30.0):
        return wait_until_value(lambda: self.leader_view(members), timeout,
                                message="one agreed leader")

    def leader(self):
        """The member that currently says it is leader with the highest epoch (or None)."""
        best = None
        for m in self.running():
            info = m.info()
            if info and info.get("role") == "leader":
                if best is None or info.get("epoch", 0) > best[0]:
                    best = (info.get("epoch", 0), m)
        return best[1] if best else None

    def followers(self, leader=None):
        leader = leader or self.wait_leader()
        return [m for m in self if m.id != leader.id]

    def kill9(self, i):
        self.members[i].kill9()

    def pause(self, i):
        self.members[i].pause()

    def resume(self, i):
        self.members[i].resume()

    def restart(self, i, kill=True):
        m = self.members[i]
        if m.running():
            if m.paused:
                m.resume()
            if kill:
                m.kill9()
            else:
                m.stop()
        m.start()
        return m

    def kill_all(self):
        for m in self:
            if m.running():
                os.kill(m.pid, signal.SIGKILL)
        for m in self:
            m.kill9()

    def ensure_all_running(self):
        """Resumes paused members and starts dead ones (used after a fault)."""
        for m in self:
            if m.running() and m.paused:
                m.resume()
        for m in self:
            if not m.running():
                m.start()

    def stop(self):
        """SIGTERM to every member (resuming paused ones first). Returns exit codes."""
        rcs = {}
        for m in self:
            if m.running() and m.paused:
                m.resume()
        for m in self:
            rcs[m.id] = m.stop()
        return rcs

    def close(self):
        for m in self:
            if m.running():
                if m.paused:
                    m.resume()
                m.kill9()
        for p in self.proxies.values():
            p.close()

    def cleanup(self):
        self.close()
        if not KEEP and not self._failed:
            shutil.rmtree(self.root, ignore_errors=True)

    def mark_failed(self):
        self._failed = True

    # --- partitions -----------------------------------------------------------------
    def cut(self, i, j, mode="reset"):
        """Cuts the directed link i->j (messages from i to j are lost)."""
        self.proxies[(i, j)].cut(mode)

    def heal(self, i, j):
        self.proxies[(i, j)].heal()

    def cut_both(self, i, j, mode="reset"):
        self.cut(i, j, mode)
        self.cut(j, i, mode)

    def isolate(self, i, mode="reset"):
        for j in self.ids:
            if j != i:
                self.cut_both(i, j, mode)

    def partition(self, *groups, mode="reset"):
        """Cuts every link between members of different groups (lists of ids)."""
        where = {}
        for g, ids in enumerate(groups):
            for i in ids:
                where[i] = g
        for (i, j) in self.proxies:
            if where.get(i, -1) != where.get(j, -2):
                self.cut(i, j, mode)

    def heal_all(self):
        for p in self.proxies.values():
            p.heal()

    # --- state ------------------------------------------------------------------------
    def barrier(self, timeout=60.0, path="/"):
        """Waits for a leader, then makes every running member apply everything committed
        so far (POST /v1/sync on each); returns the max zxid seen."""
        self.wait_healthy(timeout=timeout)
        zx = 0

        def synced(m):
            st, _, h = _quick(m.port, "POST", "/v1/sync" + path, timeout=10)
            return (st == 200 and int(h["corral-zxid"])) or None

        for m in self.running():
            zx = max(zx, wait_until_value(lambda m=m: synced(m), timeout,
                                          message="sync on member %d" % m.id))
        return zx

    def wait_same_zxid(self, timeout=60.0):
        """Waits until every running member reports the same applied zxid (and it equals
        the leader's commit zxid); returns it."""
        def same():
            infos = [m.info() for m in self.running()]
            if any(i is None for i in infos):
                return None
            zx = {i["zxid"] for i in infos}
            lead = [i for i in infos if i["role"] == "leader"]
            if len(zx) == 1 and len(lead) == 1 and lead[0]["commit_zxid"] == next(iter(zx)):
                return next(iter(zx)) or -1
            return None
        return wait_until_value(same, timeout, interval=0.1, message="same zxid everywhere")

    def dump(self, i, root="/"):
        """{path: (data, stat)} of the subtree at root on member i; the member must not
        change while dumping (returns None if its zxid moved; call again)."""
        m = self.members[i]
        c = Client(m.port, timeout=30)
        try:
            out = {}
            z0 = c.request("GET", "/health").zxid
            stack = [root]
            while stack:
                p = stack.pop()
                r = c.request("GET", znode_url(p, children="true", encoding="base64"))
                if r.status == 404:
                    continue
                if r.status != 200:
                    raise AssertionError("dump %s on member %d: %r" % (p, i, r))
                b = r.body
                out[p] = (b["data"], b["stat"])
                for ch in b.get("children", []):
                    stack.append((p.rstrip("/") + "/" + ch) if p != "/" else "/" + ch)
            z1 = c.request("GET", "/health").zxid
            return out if z0 == z1 else None
        finally:
            c.close()

    def dumps(self, root="/", timeout=60.0):
        """Consistent dumps of every running member at one common zxid: {id: dump}."""
        def attempt():
            zx = self.wait_same_zxid(timeout)
            res = {}
            for m in self.running():
                d = self.dump(m.id, root)
                if d is None:
                    return None
                res[m.id] = d
            return res if self.wait_same_zxid(timeout) == zx else None
        return wait_until_value(attempt, timeout, interval=0.2, message="consistent dumps")


def children_of(port, path):
    st, body, _ = _quick(port, "GET", children_url(path), timeout=30)
    if st != 200:
        raise AssertionError("children %s: %s %r" % (path, st, body))
    return body["children"]


class ClusterTestCase(unittest.TestCase):
    """Starts one cluster per TestCase class, shared by its tests, and keeps its data
    dirs when a test failed. Subclasses set n, cluster_args and cluster_options (keyword
    arguments of Cluster); with stop_checks_exit, tearDown stops the members by SIGTERM
    and fails unless each exits 0 (a sanitizer report makes the exit non-zero)."""

    n = 3
    cluster_args = ()
    cluster_options = {}
    stop_checks_exit = False
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(cls.__name__, cls.n, cls.cluster_args, **cls.cluster_options)
        try:
            cls.cluster.start(timeout=60)
        except Exception:
            cls.cluster.mark_failed()
            cls.cluster.close()
            raise
        cls._failed = False

    @classmethod
    def tearDownClass(cls):
        if cls._failed:
            cls.cluster.mark_failed()
        rcs = cls.cluster.stop() if cls.stop_checks_exit else {}
        cls.cluster.cleanup()
        if any(rc != 0 for rc in rcs.values()):
            raise AssertionError("members exited %s on SIGTERM (want 0)" % rcs)

    def run(self, result=None):
        result = super().run(result)
        if result is not None and not result.wasSuccessful():
            type(self)._failed = True
        return result
