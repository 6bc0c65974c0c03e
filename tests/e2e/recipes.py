"""recipes: the ZooKeeper coordination recipes on corral's HTTP/JSON API (stdlib only).

    client = CorralClient(port, timeout_ms=1000)     # opens a session, starts heartbeat
    lock = Lock(client, "/locks/db")
    with lock:                                       # acquire() ... release()
        ...
    client.close()                                   # closes the session: ephemerals go

One CorralClient is one session. It owns two keep-alive HTTP connections: one for the
operations of the caller (guarded by a lock, so a client may be shared by threads) and
one for its background thread, which long-polls GET /v1/sessions/<id>/events. That poll
is also the heartbeat (it refreshes the session; it asks for timeout/3 ms, well under the
2/3 cap). Watch events reach the client two ways: from that poll, and piggybacked in the
body of any GET /v1/znodes or /v1/children made with the session (they leave the server's
queue then, so request() hands them to the same dispatcher). Waiters take the events they
want with wait_event(); every event is also appended to client.received (for tests).

Session lease: the client remembers when it *sent* the last request the server answered
for its session. The server expires a session `timeout` after it last heard from it, and
it heard it no earlier than that send, so until send + timeout the session is certainly
alive. client.session_alive() is that lease; Lock.held and Election.is_leader use it, so
a holder that stops hearing from the server stops believing it holds the lock no later
than the server gives the lock to the next waiter (same machine clock assumed).

Recipes (each documented on its class): Lock, Election, DoubleBarrier, Queue,
GroupMember + GroupWatcher.
"""

import collections
import http.client
import json
import threading
import time
import urllib.parse

SESSION_HEADER = "Corral-Session"


class CorralError(Exception):
    """An unexpected answer: .status, .code (the error code or None), .body."""

    def __init__(self, method, url, status, body):
        self.status, self.body = status, body
        self.code = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            self.code = body["error"].get("code")
        super().__init__("%s %s -> %d %s" % (method, url, status, json.dumps(body)[:300]))


class SessionExpired(Exception):
    """The client's session is closed or expired; its ephemerals are gone."""


def _url(prefix, path, query=None):
    if not path.startswith("/"):
        raise ValueError("znode paths are absolute: %r" % path)
    url = prefix + urllib.parse.quote(path, safe="/")
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return url


def seq_of(name):
    """The sequence number of a sequential node name ('lock-0000000042' -> 42)."""
    return int(name[-10:])


class _Http:
    """One keep-alive HTTP/1.1 connection. Reads are retried once on a stale socket."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, url, body=None, headers=None):
        raw = json.dumps(body).encode() if body is not None else None
        hdrs = dict(headers or {})
        if raw is not None:
            hdrs["Content-Type"] = "application/json"
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout)
            try:
                self.conn.request(method, url, body=raw, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine):
                self.close()
                if attempt == 0 and not fresh and method in ("GET", "HEAD"):
                    continue
                raise
            except Exception:
                self.close()
                raise
            if resp.will_close:
                self.close()
            parsed = json.loads(data.decode("utf-8")) if data else None
            return resp.status, parsed


class CorralClient:
    """One corral session with a heartbeat/events thread. See the module docstring."""

    MAX_KEPT_EVENTS = 10000

    def __init__(self, port, host="127.0.0.1", timeout_ms=1000, heartbeat=True,
                 http_timeout=10.0):
        self._http = _Http(host, port, http_timeout)
        self._poll_http = _Http(host, port, http_timeout)
        self._op_lock = threading.Lock()
        self._cond = threading.Condition()
        self._events = collections.deque()
        self.received = []           # (monotonic time, event) of every event delivered
        self.expired = False
        self._closed = False
        self._listeners = []
        sent = time.monotonic()
        status, body = self._http.request("POST", "/v1/sessions", {"timeout_ms": timeout_ms})
        if status != 201:
            raise CorralError("POST", "/v1/sessions", status, body)
        self.session_id = body["id"]
        self.timeout_ms = body["timeout_ms"]
        self._last_heard = sent
        self._heartbeat_on = threading.Event()
        if heartbeat:
            self._heartbeat_on.set()
        self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                        name="corral-events-%s" % self.session_id)
        self._thread.start()

    # --- session ------------------------------------------------------------------
    def session_alive(self):
        """True while the session is certainly alive on the server (the lease)."""
        return (not self.expired and not self._closed
                and time.monotonic() < self._last_heard + self.timeout_ms / 1000.0)

    def pause_heartbeat(self):
        """Stops the events poll (tests use this to let the session expire)."""
        self._heartbeat_on.clear()

    def resume_heartbeat(self):
        self._heartbeat_on.set()

    def add_expiry_listener(self, fn):
        """fn() is called (once, from some client thread) when the session is found dead."""
        self._listeners.append(fn)

    def close(self):
        """Closes the session (its ephemerals are deleted at once) and the connections."""
        if self._closed:
            return
        self._mark_dead()
        self._closed = True
        try:
            with self._op_lock:
                self._http.request("DELETE", "/v1/sessions/%s" % self.session_id)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            self._heartbeat_on.set()  # let the poll thread see _closed and leave
            self._http.close()

    def _mark_dead(self):
        with self._cond:
            if self.expired:
                return
            self.expired = True
            self._cond.notify_all()
        for fn in list(self._listeners):
            fn()

    def _heard(self, sent):
        if sent > self._last_heard:
            self._last_heard = sent

    @staticmethod
    def _is_expired_answer(status, body):
        return (status == 404 and isinstance(body, dict)
                and isinstance(body.get("error"), dict)
                and body["error"].get("code") == "SESSION_EXPIRED")

    def _poll_loop(self):
        poll_ms = max(50, self.timeout_ms // 3)
        url = "/v1/sessions/%s/events?timeout_ms=%d" % (self.session_id, poll_ms)
        while not self._closed and not self.expired:
            self._heartbeat_on.wait()
            if self._closed or self.expired:
                break
            sent = time.monotonic()
            try:
                status, body = self._poll_http.request("GET", url)
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
                continue
            if self._is_expired_answer(status, body):
                self._mark_dead()
                break
            if status == 200:
                self._heard(sent)
                self._deliver(body.get("events", []))
            else:
                time.sleep(0.05)
        self._poll_http.close()

    # --- events -------------------------------------------------------------------
    def _deliver(self, events):
        if not events:
            return
        now = time.monotonic()
        with self._cond:
            for ev in events:
                self.received.append((now, ev))
                self._events.append(ev)
            while len(self._events) > self.MAX_KEPT_EVENTS:
                self._events.popleft()
            self._cond.notify_all()

    def wait_event(self, match, timeout):
        """Removes and returns the first delivered event for which match(event) is true,
        waiting up to `timeout` s (None: forever); None on timeout. Raises SessionExpired."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self._events:
                    if match(ev):
                        self._events.remove(ev)
                        return ev
                if self.expired:
                    raise SessionExpired(self.session_id)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    # --- requests -----------------------------------------------------------------
    def request(self, method, url, body=None):
        """(status, parsed body) of a request made within the session. Raises
        SessionExpired on SESSION_EXPIRED; hands piggybacked events to the dispatcher."""
        if self.expired:
            raise SessionExpired(self.session_id)
        sent = time.monotonic()
        with self._op_lock:
            status, parsed = self._http.request(method, url, body,
                                                {SESSION_HEADER: self.session_id})
        if self._is_expired_answer(status, parsed):
            self._mark_dead()
            raise SessionExpired(self.session_id)
        self._heard(sent)
        if (method == "GET" and isinstance(parsed, dict) and "events" in parsed
                and (url.startswith("/v1/znodes") or url.startswith("/v1/children"))):
            self._deliver(parsed["events"])
        return status, parsed

    def _fail(self, method, url, status, body):
        raise CorralError(method, url, status, body)

    def create(self, path, data="", ephemeral=False, sequential=False):
        """The actual path created; None if it already exists (NODE_EXISTS).
        Raises CorralError on anything else (e.g. NO_NODE for a missing parent)."""
        url = _url("/v1/znodes", path)
        st, body = self.request("POST", url, {"data": data, "ephemeral": ephemeral,
                                              "sequential": sequential})
        if st == 201:
            return body["path"]
        if st == 409 and body["error"]["code"] == "NODE_EXISTS":
            return None
        self._fail("POST", url, st, body)

    def ensure_path(self, path):
        """Creates `path` and its missing ancestors as persistent nodes."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.create("/" + "/".join(parts[:i]))

    def get(self, path, watch=False):
        """(data, stat), or None if the node does not exist."""
        url = _url("/v1/znodes", path, {"watch": "true"} if watch else None)
        st, body = self.request("GET", url)
        if st == 200:
            return body["data"], body["stat"]
        if st == 404:
            return None
        self._fail("GET", url, st, body)

    def exists(self, path, watch=False):
        """HEAD: True/False. With watch=True an exists watch is set either way."""
        url = _url("/v1/znodes", path, {"watch": "true"} if watch else None)
        st, body = self.request("HEAD", url)
        if st in (200, 404):
            return st == 200
        self._fail("HEAD", url, st, body)

    def children(self, path, watch=False):
        """Sorted child names, or None if the node does not exist."""
        url = _url("/v1/children", path, {"watch": "true"} if watch else None)
        st, body = self.request("GET", url)
        if st == 200:
            return body["children"]
        if st == 404:
            return None
        self._fail("GET", url, st, body)

    def delete(self, path, version=None):
        """True if this call deleted the node; False on NO_NODE or BAD_VERSION."""
        url = _url("/v1/znodes", path, {"version": version} if version is not None else None)
        st, body = self.request("DELETE", url)
        if st == 204:
            return True
        if st == 404 or (st == 409 and body["error"]["code"] == "BAD_VERSION"):
            return False
        self._fail("DELETE", url, st, body)

    def wait_path_event(self, path, timeout, types=None):
        """wait_event for an event on `path` (of one of `types`, if given)."""
        return self.wait_event(
            lambda ev: ev["path"] == path and (types is None or ev["type"] in types), timeout)


# --- lock / election ------------------------------------------------------------------

class _Sequencer:
    """Shared by Lock and Election: my ephemeral-sequential node under `path`, and the
    wait until it is the lowest, watching only the next lower node (no herd effect)."""

    def __init__(self, client, path, prefix, data=""):
        self.client, self.path, self.prefix, self.data = client, path, prefix, data
        self.node = None  # full path of my node

    def _mine(self, kids):
        return sorted((k for k in kids if k.startswith(self.prefix)), key=seq_of)

    def join(self):
        if self.node is None:
            self.node = self.client.create(self.path + "/" + self.prefix, self.data,
                                           ephemeral=True, sequential=True)
        return self.node

    def wait_lowest(self, deadline, stop=None):
        """True once my node is the lowest; False on deadline or stop.is_set().
        Raises SessionExpired if my node vanished with my session."""
        me = self.node.rsplit("/", 1)[1]
        while True:
            if stop is not None and stop.is_set():
                return False
            kids = self._mine(self.client.children(self.path) or [])
            if me not in kids:
                # Only the session's end (or someone deleting it) removes my node.
                raise SessionExpired("%s is gone" % self.node)
            i = kids.index(me)
            if i == 0:
                return True
            pred = self.path + "/" + kids[i - 1]
            if not self.client.exists(pred, watch=True):
                continue  # it went before the watch was set: re-check at once
            while True:  # wait for an event on pred (wake every 0.2 s to see `stop`)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                step = left if stop is None else min(0.2, left if left else 0.2)
                if self.client.wait_path_event(pred, step) is not None:
                    break  # deleted (or changed): re-check the children
                if stop is not None and stop.is_set():
                    return False

    def leave(self):
        node, self.node = self.node, None
        if node is not None:
            try:
                self.client.delete(node)
            except SessionExpired:
                pass  # the node went with the session


class Lock:
    """Exclusive lock: `<path>/lock-N` ephemeral+sequential; the lowest holds it; every
    other contender watches (HEAD ?watch=true) only the next lower node and re-checks
    when it is deleted. release() deletes my node. If the session dies, the server deletes
    the node and the next contender gets the lock; `held` turns False by then (lease)."""

    def __init__(self, client, path, prefix="lock-"):
        self.client = client
        self.path = path
        self._seq = _Sequencer(client, path, prefix)
        self._acquired = False
        client.ensure_path(path)

    @property
    def node(self):
        return self._seq.node

    @property
    def held(self):
        return self._acquired and self.client.session_alive()

    def acquire(self, timeout=None):
        """True once held; False after `timeout` s (my node is then withdrawn)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._seq.join()
        try:
            ok = self._seq.wait_lowest(deadline)
        except BaseException:
            self._seq.leave()
            raise
        if not ok:
            self._seq.leave()
            return False
        self._acquired = True
        return True

    def release(self):
        self._acquired = False
        self._seq.leave()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class Election:
    """Leader election: `<path>/n-N` ephemeral+sequential (data = the candidate's name);
    the lowest leads; the others watch their predecessor only. start() runs the
    candidacy in a thread; on_elected()/on_lost() are called on each change of belief.
    resign() and close() drop the belief *before* deleting the node, so the next leader
    cannot be chosen while this one still believes it leads."""

    def __init__(self, client, path, name="", on_elected=None, on_lost=None):
        self.client, self.path, self.name = client, path, name
        self.on_elected = on_elected or (lambda: None)
        self.on_lost = on_lost or (lambda: None)
        self._seq = _Sequencer(client, path, "n-", name)
        self._state = threading.Lock()
        self._leader = False
        self._stop = threading.Event()
        self._elected = threading.Event()
        self._thread = None
        self.error = None
        client.ensure_path(path)
        client.add_expiry_listener(self._lost)

    @property
    def is_leader(self):
        return self._leader and self.client.session_alive()

    @property
    def node(self):
        return self._seq.node

    def start(self):
        self._stop.clear()
        self._elected.clear()
        self._seq.join()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="election-%s" % self.name)
        self._thread.start()
        return self

    def _run(self):
        try:
            if self._seq.wait_lowest(None, stop=self._stop):
                with self._state:
                    if not self._stop.is_set() and self.client.session_alive():
                        self._leader = True
                        self.on_elected()
                        self._elected.set()
        except SessionExpired:
            self._lost()
        except Exception as e:  # surfaced to the test through .error
            self.error = e

    def wait_elected(self, timeout):
        return self._elected.wait(timeout)

    def _lost(self):
        with self._state:
            if self._leader:
                self._leader = False
                self.on_lost()

    def resign(self):
        """Stop leading (or stop waiting): drop the belief, then delete my node."""
        self._stop.set()
        self._lost()
        if self._thread is not None:
            self._thread.join()
        self._seq.leave()

    def close(self):
        """Leave for good: drop the belief, then close the whole session."""
        self._stop.set()
        self._lost()
        self.client.close()
        if self._thread is not None:
            self._thread.join()

    @staticmethod
    def current_leader(client, path):
        """(node name, data) of the lowest candidate per the server, or None."""
        kids = sorted((k for k in client.children(path) or [] if k.startswith("n-")),
                      key=seq_of)
        for k in kids:
            got = client.get(path + "/" + k)
            if got is not None:
                return k, got[0]
        return None


# --- barrier --------------------------------------------------------------------------

class DoubleBarrier:
    """ZooKeeper's double barrier for `size` participants under `path`.

    enter(): set an exists watch on `<path>/ready`, create my ephemeral-sequential
    `<path>/m-N`, list the members; with fewer than `size`, wait for ready's "created"
    event; else create `ready` (NODE_EXISTS is fine). leave(): delete my node and wait
    until all members are gone: the lowest member waits for the highest, every other
    member deletes its own node and waits for the lowest. A barrier path is single-use
    (ready stays)."""

    def __init__(self, client, path, size):
        self.client, self.path, self.size = client, path, size
        self.ready = path + "/ready"
        self.node = None
        client.ensure_path(path)

    def _members(self):
        return sorted((k for k in self.client.children(self.path) or []
                       if k.startswith("m-")), key=seq_of)

    def enter(self, timeout=None):
        """True once `size` participants have entered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ready = self.client.exists(self.ready, watch=True)
        self.node = self.client.create(self.path + "/m-", "", ephemeral=True,
                                       sequential=True)
        if ready:
            return True
        if len(self._members()) >= self.size:
            self.client.create(self.ready)
            return True
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            ev = self.client.wait_path_event(self.ready, left)
            if ev is not None and self.client.exists(self.ready):
                return True

    def leave(self, timeout=None):
        """True once every participant has left; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = self.node.rsplit("/", 1)[1]
        while True:
            kids = self._members()
            if not kids:
                return True
            if kids == [me]:
                self.client.delete(self.node)
                return True
            if kids[0] == me:
                target = kids[-1]           # lowest waits for the highest
            else:
                self.client.delete(self.node)  # no-op (False) once it is gone
                target = kids[0]            # the others wait for the lowest
            path = self.path + "/" + target
            if not self.client.exists(path, watch=True):
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.client.wait_path_event(path, left)


# --- queue ----------------------------------------------------------------------------

class Queue:
    """Distributed FIFO queue. put(): a persistent-sequential `<path>/item-N` holding the
    data. take(): list the items (lowest first), for each read its data and version, then
    DELETE ?version=: 204 means this consumer owns the item; 404 (someone took it) or 409
    means try the next one. An empty queue sets a child watch and waits for "children"."""

    def __init__(self, client, path, prefix="item-"):
        self.client, self.path, self.prefix = client, path, prefix
        self._pending = collections.deque()  # names from the last listing, lowest first
        client.ensure_path(path)

    def put(self, data):
        return self.client.create(self.path + "/" + self.prefix, data, sequential=True)

    def _list(self, watch):
        kids = self.client.children(self.path, watch=watch) or []
        return sorted((k for k in kids if k.startswith(self.prefix)), key=seq_of)

    def take(self, timeout=None):
        """The data of the item this consumer removed, or None after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._pending:
                node = self.path + "/" + self._pending.popleft()
                got = self.client.get(node)
                if got is None:
                    continue
                data, stat = got
                if self.client.delete(node, version=stat["version"]):
                    return data
            items = self._list(watch=False)
            if not items:
                items = self._list(watch=True)  # set the watch with the read
                if not items:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self.client.wait_path_event(self.path, left)
                    continue
            self._pending.extend(items)


# --- group membership -----------------------------------------------------------------

class GroupMember:
    """A member of `<group>`: an ephemeral `<group>/<name>`; it leaves when it deletes
    the node or when its session ends."""

    def __init__(self, client, group, name, data=""):
        self.client, self.group = client, group
        client.ensure_path(group)
        self.node = client.create(group + "/" + name, data, ephemeral=True)
        if self.node is None:
            raise CorralError("POST", group + "/" + name, 409, {"error": {
                "code": "NODE_EXISTS", "message": "member name taken"}})

    def leave(self):
        self.client.delete(self.node)


class GroupWatcher:
    """Keeps `members` (a frozenset of names) up to date: GET /v1/children ?watch=true,
    and again after each "children" (or "deleted") event. Runs in its own thread."""

    def __init__(self, client, group):
        self.client, self.group = client, group
        self.members = frozenset()
        self.history = []           # (monotonic time, members) at every change
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.error = None
        client.ensure_path(group)
        self._refresh()
        self._thread = threading.Thread(target=self._run, daemon=True, name="group-watcher")
        self._thread.start()

    def _refresh(self):
        kids = self.client.children(self.group, watch=True)
        members = frozenset(kids or [])
        with self._cond:
            if members != self.members:
                self.members = members
                self.history.append((time.monotonic(), members))
                self._cond.notify_all()

    def _run(self):
        try:
            while not self._stop.is_set():
                if self.client.wait_path_event(self.group, 0.2) is not None:
                    self._refresh()
        except SessionExpired:
            pass
        except Exception as e:
            self.error = e

    def wait_for(self, predicate, timeout):
        """The member set once predicate(members) holds; None after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.members):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.members

    def stop(self):
        self._stop.set()
        self._thread.join()
