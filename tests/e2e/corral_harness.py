"""corral_harness: start real corrald processes and talk HTTP/JSON to them (stdlib only).

Environment:
  CORRALD            path of the corrald binary (required)
  CORRAL_TEST_DIR    where data dirs and server logs go (default ./testdata; a real disk,
                     never /dev/shm: the crash and recovery tests need real fsync)
  CORRAL_SOURCE_DIR  the source tree (default: two levels above this file)
  CORRAL_KEEP=1      keep data dirs of passing tests (they are always kept on failure)

Every Client response is checked against the envelope the contract promises for *every*
response (Corral-Zxid header, JSON content type, error body shape, no body on 204/HEAD);
a violation raises ContractError, an AssertionError, so it fails the test that made it.
"""

import atexit
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.parse

SOURCE_DIR = os.environ.get(
    "CORRAL_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")))
TEST_DIR = os.path.abspath(os.environ.get("CORRAL_TEST_DIR", "./testdata"))
KEEP = os.environ.get("CORRAL_KEEP") == "1"

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SESSION_HEADER = "Corral-Session"
ZXID_HEADER = "Corral-Zxid"

_live_processes = {}  # pid -> Popen, killed at exit if a test forgot them


@atexit.register
def _kill_leftovers():
    for pid, proc in list(_live_processes.items()):
        if proc.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


class ContractError(AssertionError):
    """A response broke the envelope every corral response must have."""


def corrald_binary():
    path = os.environ.get("CORRALD")
    if not path:
        raise RuntimeError("set CORRALD to the corrald binary (ctest does this)")
    if not os.access(path, os.X_OK):
        raise RuntimeError("CORRALD=%r is not an executable file" % path)
    return path


# Independent of the random module, which tests seed: parallel test processes must not
# draw the same ports.
_PORT_RANDOM = random.SystemRandom()


def _ephemeral_port_start():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago, below the kernel's ephemeral
    range. A port from bind(0) is an ephemeral one, and until the server binds it any
    outgoing connection may take it as its source port (a peer link of a cluster in a
    test running beside this one): seen in CI as a member whose peer port stayed
    "Address already in use" for the whole test. Ports below the range are only ever
    bound on purpose."""
    start = _ephemeral_port_start()
    if start > 11000:
        for _ in range(100):
            port = _PORT_RANDOM.randrange(10000, start)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_http_request(method, url, body=b"", content_type=None):
    """The bytes of one HTTP/1.1 request, for tests that drive sockets themselves
    (pipelining, many connections at once, clients that vanish)."""
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, url)
    if content_type:
        head += "Content-Type: %s\r\n" % content_type
    head += "Content-Length: %d\r\n\r\n" % len(body)
    return head.encode() + body


def znode_url(path, **query):
    """'/a/b' -> '/v1/znodes/a/b' with every segment percent-encoded as UTF-8."""
    return _route("/v1/znodes", path, query)


def children_url(path, **query):
    return _route("/v1/children", path, query)


def sync_url(path):
    return _route("/v1/sync", path, {})


def _route(prefix, path, query):
    if not path.startswith("/"):
        raise ValueError("znode paths are absolute: %r" % path)
    url = prefix + urllib.parse.quote(path, safe="/")
    q = {k: v for k, v in query.items() if v is not None}
    if q:
        url += "?" + urllib.parse.urlencode(
            {k: ("true" if v is True else "false" if v is False else v) for k, v in q.items()})
    return url


class Response(tuple):
    """(status, headers, body): headers is a dict with lower-case names, body the parsed
    JSON or None. Also .raw (bytes), .zxid (int from Corral-Zxid), .code (error code)."""

    def __new__(cls, status, headers, body, raw, method, url):
        r = tuple.__new__(cls, (status, headers, body))
        r.raw, r.method, r.url = raw, method, url
        return r

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])

    @property
    def zxid(self):
        return int(self.headers[ZXID_HEADER.lower()])

    @property
    def code(self):
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self):
        text = self.raw[:300].decode("utf-8", "replace")
        return "<%s %s -> %d %s>" % (self.method, self.url[:120], self.status, text)


def check_envelope(resp):
    """Raises ContractError unless resp has what every corral response must have."""
    h = resp.headers
    zx = h.get(ZXID_HEADER.lower())
    if zx is None or not re.fullmatch(r"[0-9]+", zx):
        raise ContractError("missing/bad %s header (%r) in %r" % (ZXID_HEADER, zx, resp))
    if resp.method == "HEAD" or resp.status == 204:
        if resp.raw:
            raise ContractError("%r must have no body" % (resp,))
        return
    if not resp.raw:
        raise ContractError("%r has an empty body" % (resp,))
    ctype = h.get("content-type", "").replace(" ", "").lower()
    if ctype != JSON_CONTENT_TYPE.replace(" ", ""):
        raise ContractError("Content-Type %r in %r" % (h.get("content-type"), resp))
    if resp.body is None:
        raise ContractError("body is not JSON in %r" % (resp,))
    if resp.status >= 400:
        err = resp.body.get("error") if isinstance(resp.body, dict) else None
        if (not isinstance(err, dict) or not isinstance(err.get("code"), str)
                or not isinstance(err.get("message"), str)):
            raise ContractError("error body must be {error:{code,message}}: %r" % (resp,))


class Client:
    """A keep-alive HTTP/1.1 client for one server.

    request() never retries a write: if the connection breaks mid-request the exception
    propagates (the outcome is unknown, which the crash test needs to know). GET and
    HEAD are retried once on a fresh connection when a reused one turns out dead."""

    RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                 http.client.BadStatusLine)

    def __init__(self, port, host="127.0.0.1", timeout=30.0, session=None, check=True):
        self.host, self.port, self.timeout = host, port, timeout
        self.session = session
        self.check = check
        self._conn = None
        self._reused = False

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self):
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._reused = False
        else:
            self._reused = True
        return self._conn

    def request(self, method, url, body=None, *, raw=None, headers=None, session=None,
                check=None):
        """body: a JSON value to send; raw: bytes/str sent as they are. session: a
        session id for Corral-Session (default self.session; pass "" for none)."""
        hdrs = {}
        if body is not None:
            raw = json.dumps(body).encode("utf-8")
        elif isinstance(raw, str):
            raw = raw.encode("utf-8")
        if raw is not None:
            hdrs["Content-Type"] = "application/json"
        sess = self.session if session is None else session
        if sess:
            hdrs[SESSION_HEADER] = sess
        hdrs.update(headers or {})
        attempts = 2 if method in ("GET", "HEAD") else 1
        for attempt in range(attempts):
            conn = self._connection()
            try:
                try:
                    conn.request(method, url, body=raw, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError):
                    # The server may answer (e.g. 413) before reading the whole body.
                    pass
                resp = conn.getresponse()
                data = resp.read()
            except self.RETRYABLE:
                self.close()
                if attempt + 1 < attempts and self._reused:
                    continue
                raise
            except Exception:
                self.close()
                raise
            if resp.will_close:
                self.close()
            break
        rh = {}
        for k, v in resp.getheaders():
            k = k.lower()
            rh[k] = v if k not in rh else rh[k] + ", " + v
        parsed = None
        if data:
            try:
                parsed = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                parsed = None
        r = Response(resp.status, rh, parsed, data, method, url)
        if self.check if check is None else check:
            check_envelope(r)
        return r

    # --- znodes -------------------------------------------------------------------
    def create(self, path, data=None, *, encoding=None, ephemeral=None, sequential=None,
               container=None, ttl_ms=None, session=None, **extra):
        body = _fields(data=data, encoding=encoding, ephemeral=ephemeral,
                       sequential=sequential, container=container, ttl_ms=ttl_ms, **extra)
        return self.request("POST", znode_url(path), body, session=session)

    def get(self, path, *, children=None, encoding=None, session=None):
        return self.request("GET", znode_url(path, children=children, encoding=encoding),
                            session=session)

    def exists(self, path, *, session=None):
        return self.request("HEAD", znode_url(path), session=session)

    def children(self, path, *, session=None):
        return self.request("GET", children_url(path), session=session)

    def set(self, path, data, *, version=None, encoding=None, session=None, **extra):
        body = _fields(data=data, version=version, encoding=encoding, **extra)
        return self.request("PUT", znode_url(path), body, session=session)

    def delete(self, path, *, version=None, session=None):
        return self.request("DELETE", znode_url(path, version=version), session=session)

    def multi(self, ops, *, session=None):
        return self.request("POST", "/v1/multi", {"ops": ops}, session=session)

    def sync(self, path="/"):
        return self.request("POST", sync_url(path))

    # --- sessions -----------------------------------------------------------------
    def open_session(self, timeout_ms):
        return self.request("POST", "/v1/sessions", {"timeout_ms": timeout_ms}, session="")

    def keepalive(self, sid):
        return self.request("POST", "/v1/sessions/%s/keepalive" % sid, session="")

    def session_info(self, sid):
        return self.request("GET", "/v1/sessions/%s" % sid, session="")

    def close_session(self, sid):
        return self.request("DELETE", "/v1/sessions/%s" % sid, session="")

    # --- misc ---------------------------------------------------------------------
    def cluster(self):
        return self.request("GET", "/v1/cluster")

    def health(self):
        return self.request("GET", "/health")

    # --- helpers ------------------------------------------------------------------
    def data_of(self, path):
        """The node's data as bytes, or None when it does not exist."""
        r = self.get(path, encoding="base64")
        if r.status == 404:
            return None
        if r.status != 200:
            raise AssertionError("read %s: %r" % (path, r))
        return decode_data(r.body)


def _fields(**kw):
    return {k: v for k, v in kw.items() if v is not None}


def decode_data(body):
    """bytes of a read response body ({data, encoding})."""
    import base64
    if body["encoding"] == "base64":
        return base64.b64decode(body["data"], validate=True)
    if body["encoding"] == "utf-8":
        return body["data"].encode("utf-8")
    raise AssertionError("unknown encoding %r" % body["encoding"])


class Server:
    """One corrald process with its own data dir under CORRAL_TEST_DIR/<name>.

    The port is chosen once and kept across restarts, so clients can reconnect. Each
    start writes its stderr to a new file (logs[i]); log() returns the latest one."""

    def __init__(self, name, args=(), *, binary=None, port=None, fresh=True):
        self.name = name
        self.binary = binary or corrald_binary()
        self.args = [str(a) for a in args]
        self.root = os.path.join(TEST_DIR, name)
        if os.path.realpath(self.root).startswith("/dev/shm"):
            raise RuntimeError("CORRAL_TEST_DIR must be on a real disk, not /dev/shm")
        if fresh and os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.makedirs(self.root, exist_ok=True)
        self.data_dir = os.path.join(self.root, "data")
        self.port = port or free_port()
        self.proc = None
        self.logs = []
        self.returncodes = []
        self._clients = []

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def command(self, extra_args=()):
        return [self.binary, "--listen", self.address, "--data-dir", self.data_dir,
                *self.args, *[str(a) for a in extra_args]]

    def start(self, extra_args=(), wait=True, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server %s already running" % self.name)
        log_path = os.path.join(self.root, "stderr-%d.log" % len(self.logs))
        self.logs.append(log_path)
        with open(log_path, "wb") as logf:
            self.proc = subprocess.Popen(self.command(extra_args), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, start_new_session=True)
        _live_processes[self.proc.pid] = self.proc
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        """Polls GET /health until 200; fails (with the log tail) if the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("corrald exited with %s during start-up; log:\n%s"
                                     % (self.proc.returncode, self.log()[-4000:]))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                conn.request("GET", "/health")
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("corrald not healthy within %.1fs; log:\n%s"
                                     % (timeout, self.log()[-4000:]))
            time.sleep(0.05)

    def _forget(self):
        for c in self._clients:
            c.close()
        if self.proc is not None:
            _live_processes.pop(self.proc.pid, None)
            self.returncodes.append(self.proc.returncode)

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after `timeout` s. Returns the exit status (as Popen
        reports it: negative for a signal)."""
        if self.proc is None or self.proc.poll() is not None:
            rc = self.proc.returncode if self.proc else None
            self._forget()
            return rc
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._forget()
        return self.proc.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._forget()

    def restart(self, extra_args=(), kill=False):
        """Stops (SIGTERM, or SIGKILL with kill=True) and starts again, same data dir and
        port. Returns the exit status of the stopped process."""
        if kill:
            self.kill9()
            rc = self.proc.returncode
        else:
            rc = self.stop()
        self.start(extra_args)
        return rc

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kw):
        c = Client(self.port, **kw)
        self._clients.append(c)
        return c

    # --- logs ---------------------------------------------------------------------
    def log(self, index=-1):
        """Text of the stderr of start number `index` (default: the latest)."""
        if not self.logs:
            return ""
        with open(self.logs[index], "rb") as f:
            return f.read().decode("utf-8", "replace")

    def all_logs(self):
        return "".join(self.log(i) for i in range(len(self.logs)))

    def wait_for_log(self, pattern, timeout=5.0, flags=re.IGNORECASE):
        """Waits until the latest log has a line matching `pattern`; returns the line."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, flags)
        while True:
            for line in self.log().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError("no log line matching %r; log:\n%s"
                                     % (pattern, self.log()[-4000:]))
            time.sleep(0.05)

    def log_lines(self, pattern, index=-1, flags=re.IGNORECASE):
        rx = re.compile(pattern, flags)
        return [l for l in self.log(index).splitlines() if rx.search(l)]

    # --- data dir -----------------------------------------------------------------
    def files(self, prefix, suffix):
        """Sorted full paths of data-dir files like wal-*.log / snap-*.snap."""
        if not os.path.isdir(self.data_dir):
            return []
        return sorted(os.path.join(self.data_dir, f) for f in os.listdir(self.data_dir)
                      if f.startswith(prefix) and f.endswith(suffix))

    def cleanup(self):
        if self.running():
            self.kill9()
        if not KEEP:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.running():
            self.stop()
        return False


def wait_until(predicate, timeout, interval=0.05, message="condition"):
    """Polls predicate() until it returns a truthy value (returned) or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.2fs" % (message, timeout))
        time.sleep(interval)


class ServerTestCase(unittest.TestCase):
    """Starts one server per TestCase class (server_args), shared by its tests."""

    server_args = ()
    server_name = None
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(cls.server_name or cls.__name__, cls.server_args)
        cls.server.start()
        cls.c = cls.server.client()
        cls._failed = False

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        if not cls._failed:
            cls.server.cleanup()
        if rc != 0:
            raise AssertionError("corrald exited %s on SIGTERM (want 0); log tail:\n%s"
                                 % (rc, cls.server.log()[-2000:]))

    def run(self, result=None):
        result = super().run(result)
        if result is not None and not result.wasSuccessful():
            type(self)._failed = True
        return result

    _counter = 0

    def fresh(self, label=None):
        """Creates a new empty persistent node for this test and returns its path."""
        type(self)._counter += 1
        label = label or self._testMethodName
        path = "/%s-%d" % (re.sub(r"[^A-Za-z0-9_]", "_", label)[:60], type(self)._counter)
        r = self.c.create(path, "")
        self.assertEqual(r.status, 201, r)
        return path

    def assertError(self, resp, status, code, path=None):
        """resp is an error with this status and code (and error.path, if given)."""
        self.assertEqual((resp.status, resp.code), (status, code), resp)
        if path is not None:
            self.assertEqual(resp.body["error"].get("path"), path, resp)

    def assertStatus(self, resp, status):
        self.assertEqual(resp.status, status, resp)
        return resp.body


def run_tests():
    """unittest.main for `python3 tests/e2e/test_x.py`: exits non-zero on failure."""
    unittest.main(verbosity=2)
