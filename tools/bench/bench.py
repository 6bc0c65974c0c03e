#!/usr/bin/env python3
"""Side-by-side benchmark of corral against etcd v2 and ZooKeeper (issue 5).

Run through tools/bench/run.sh, which installs the packages and builds everything:

  tools/bench/run.sh [--quick] [--only W1,W2,...] [--systems corral,etcd,zk]

What it does, in order (each step can be chosen with --only):
  fsync  the disk's floor: 100-byte write + fdatasync (tools/bench/fsyncfloor.c), back to back
         and paced like one client's writes, on the servers' CPU (W1-W5 measures it again
         right before each of corral's W4 write runs, for the W4 target's per-run ratios)
  W1-W5  the three systems standalone, all three running at once, idle ones costing
         nothing; every run is repeated, and the systems take turns (A B C, B C A, ...)
  C      3-member clusters, one system at a time, fresh cluster per pass, passes rotated:
         W1 at 64 in flight, W2 and W3 at 32, 64 and 128, W4 write
  W6     change-to-notification latency with 1, 1,000 and 10,000 watchers
  W7     memory and restart time with 1,000,000 znodes (--quick: 100,000)
and writes tools/bench/results/<date>/ : results.md (the tables, ratios and targets),
raw.json (every run), throughput.png and throughput.dat (the plot and its data).

Servers are pinned to CPU 0 and the load generators to CPU 1 with taskset (--no-pin to
turn that off). Each run records the CPU used by the server(s) and the load generator
(from /proc), the rest of the machine ("foreign"), and the disk flushes, and names what
limited it.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(HERE, "build")
LUA = os.path.join(HERE, "lua", "http.lua")
VALUE = "v" * 100
TICK = os.sysconf("SC_CLK_TCK")
SYSTEMS = ["corral", "etcd", "zk"]
LABEL = {"corral": "corral", "etcd": "etcd 3.4 v2", "zk": "ZooKeeper 3.8"}

ARGS = None
PIN = True
CFG = {}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base, method, path, body=None, form=False, timeout=30):
    headers = {}
    data = None
    if body is not None:
        if form:
            data = body.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


# ---- /proc accounting ------------------------------------------------------------
def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime + stime, and cutime + cstime: the children it has reaped (corrald's
        # snapshot writers) are the server's work too, not "foreign" load.
        return sum(int(x) for x in fields[11:15]) / TICK
    except OSError:
        return 0.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy():
    """Busy CPU seconds of the whole machine (all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK


DISK = None


def disk_flushes():
    """(completed flush requests, milliseconds spent on them) of the disk the data lives on,
    (0, 0) if unknown. The mean per flush over a run says what the disk was like during it:
    on this VM it moves 2x within minutes, and every system's writes move with it."""
    if not DISK:
        return 0, 0
    try:
        with open(f"/sys/block/{DISK}/stat") as f:
            v = f.read().split()
        return (int(v[15]), int(v[16])) if len(v) > 16 else (0, 0)
    except OSError:
        return 0, 0


def find_disk(path):
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/dev") as f:
                if f.read().strip() == f"{major}:{minor}":
                    return name
        except OSError:
            pass
        for part in os.listdir(f"/sys/block/{name}"):
            p = f"/sys/block/{name}/{part}/dev"
            if os.path.exists(p):
                with open(p) as f:
                    if f.read().strip() == f"{major}:{minor}":
                        return name
    return None


def fs_type(path):
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            if path.startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, f"{typ} on {dev}"
    return kind


def pinned(cmd, cpu):
    return ["taskset", "-c", str(cpu)] + cmd if PIN else cmd


# ---- the systems -------------------------------------------------------------------
class System:
    """One standalone server or one 3-member cluster of a system."""

    def __init__(self, kind, members, top):
        self.kind, self.members, self.top = kind, members, top
        self.procs = []
        self.logs = []

    def pids(self):
        return [p.pid for p in self.procs if p.poll() is None]

    def spawn(self, cmd, name):
        logf = open(os.path.join(self.top, f"{name}.log"), "w")
        self.logs.append(logf)
        p = subprocess.Popen(pinned(cmd, 0), stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        for f in self.logs:
            f.close()
        self.logs = []

    def cpu(self):
        return sum(cpu_seconds(pid) for pid in self.pids())


class Corral(System):
    def __init__(self, members, top, binary):
        super().__init__("corral", members, top)
        self.binary = binary
        self.http_ports = [free_port() for _ in range(members)]
        self.peer_ports = [free_port() for _ in range(members)]
        self.leader = 0

    def start(self):
        if self.members == 1:
            self.spawn([self.binary, "--listen", f"127.0.0.1:{self.http_ports[0]}",
                        "--data-dir", os.path.join(self.top, "data")], "corrald")
        else:
            spec = ",".join(f"{i + 1}=127.0.0.1:{h}/127.0.0.1:{p}"
                            for i, (h, p) in enumerate(zip(self.http_ports, self.peer_ports)))
            for i in range(self.members):
                self.spawn([self.binary, "--id", str(i + 1), "--cluster", spec,
                            "--data-dir", os.path.join(self.top, f"data{i + 1}")],
                           f"corrald{i + 1}")
        self.wait_ready()

    def wal_stats(self):
        """The leader's /v1/stats (its log batches), or None."""
        try:
            st, body = http(f"http://127.0.0.1:{self.http_ports[self.leader]}", "GET", "/v1/stats",
                            timeout=5)
            return body if st == 200 else None
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ok = all(http(f"http://127.0.0.1:{p}", "GET", "/health", timeout=2)[0] == 200
                         for p in self.http_ports)
                if ok and self.members > 1:
                    _, c = http(f"http://127.0.0.1:{self.http_ports[0]}", "GET", "/v1/cluster")
                    if c.get("leader") is None:
                        raise RuntimeError("no leader yet")
                    self.leader = [m["id"] for m in c["members"]].index(c["leader"]) \
                        if "members" in c else int(c["leader"]) - 1
                if ok:
                    return
            except Exception:
                pass
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"corrald exited; see {self.top}")
            time.sleep(0.05)
        raise RuntimeError("corral did not become ready")

    @property
    def port(self):
        return self.http_ports[self.leader]

    def populate(self):
        base = f"http://127.0.0.1:{self.port}"
        for p in ("/bench", "/bench/seq"):
            http(base, "POST", "/v1/znodes" + p, {})
        http(base, "POST", "/v1/znodes/bench/w", {"data": VALUE})
        for start in range(0, 1000, 250):
            http(base, "POST", "/v1/multi", {"ops": [
                {"op": "create", "path": f"/bench/k{i}", "data": VALUE}
                for i in range(start, start + 250)]})


class Etcd(System):
    def __init__(self, members, top):
        super().__init__("etcd", members, top)
        self.client_ports = [free_port() for _ in range(members)]
        self.peer_ports = [free_port() for _ in range(members)]
        self.leader = 0

    def start(self):
        initial = ",".join(f"e{i + 1}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        for i in range(self.members):
            c, p = self.client_ports[i], self.peer_ports[i]
            self.spawn(["etcd", "--name", f"e{i + 1}",
                        "--data-dir", os.path.join(self.top, f"data{i + 1}"),
                        "--listen-client-urls", f"http://127.0.0.1:{c}",
                        "--advertise-client-urls", f"http://127.0.0.1:{c}",
                        "--listen-peer-urls", f"http://127.0.0.1:{p}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                        "--initial-cluster", initial, "--initial-cluster-token", "bench",
                        "--initial-cluster-state", "new", "--enable-v2=true",
                        "--logger", "zap", "--log-level", "warn"], f"etcd{i + 1}")
        self.wait_ready()

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [http(f"http://127.0.0.1:{p}", "GET", "/v2/stats/self", timeout=2)[1]["state"]
                          for p in self.client_ports]
                if "StateLeader" in states:
                    self.leader = states.index("StateLeader")
                    http(f"http://127.0.0.1:{self.port}", "GET", "/v2/keys/", timeout=2)
                    return
            except Exception:
                pass
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"etcd exited; see {self.top}")
            time.sleep(0.1)
        raise RuntimeError("etcd did not become ready")

    @property
    def port(self):
        return self.client_ports[self.leader]

    def populate(self):
        base = f"http://127.0.0.1:{self.port}"
        for i in range(1000):
            http(base, "PUT", f"/v2/keys/bench/k{i}", f"value={VALUE}", form=True)
        http(base, "PUT", "/v2/keys/bench/w", f"value={VALUE}", form=True)


class ZooKeeper(System):
    """Started with java directly: Debian's zkEnv.sh hard-codes /etc/zookeeper/conf."""

    def __init__(self, members, top):
        super().__init__("zk", members, top)
        self.client_ports = [free_port() for _ in range(members)]
        self.quorum_ports = [(free_port(), free_port()) for _ in range(members)]
        self.leader = 0

    def start(self):
        for i in range(self.members):
            d = os.path.join(self.top, f"data{i + 1}")
            os.makedirs(d, exist_ok=True)
            cfg = [f"tickTime=2000", f"dataDir={d}", f"clientPort={self.client_ports[i]}",
                   "clientPortAddress=127.0.0.1", "admin.enableServer=false",
                   "maxClientCnxns=20000", "4lw.commands.whitelist=srvr,mntr,ruok"]
            if self.members > 1:
                cfg += ["initLimit=10", "syncLimit=5"]
                cfg += [f"server.{j + 1}=127.0.0.1:{q}:{e}"
                        for j, (q, e) in enumerate(self.quorum_ports)]
                with open(os.path.join(d, "myid"), "w") as f:
                    f.write(f"{i + 1}\n")
            path = os.path.join(self.top, f"zoo{i + 1}.cfg")
            with open(path, "w") as f:
                f.write("\n".join(cfg) + "\n")
            self.spawn(["java", f"-Dzookeeper.log.dir={self.top}",
                        "-cp", "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
                        "org.apache.zookeeper.server.quorum.QuorumPeerMain", path], f"zk{i + 1}")
        self.wait_ready()

    def four(self, port, cmd):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(cmd.encode())
            out = b""
            while True:
                b = s.recv(4096)
                if not b:
                    return out.decode(errors="replace")
                out += b

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                modes = []
                for p in self.client_ports:
                    out = self.four(p, "srvr")
                    modes.append([l.split(":", 1)[1].strip() for l in out.splitlines()
                                  if l.startswith("Mode:")][0])
                if self.members == 1 and modes == ["standalone"]:
                    return
                if "leader" in modes and all(m in ("leader", "follower") for m in modes):
                    self.leader = modes.index("leader")
                    return
            except Exception:
                pass
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"zookeeper exited; see {self.top}")
            time.sleep(0.2)
        raise RuntimeError("zookeeper did not become ready")

    @property
    def port(self):
        return self.client_ports[self.leader]

    def hostport(self):
        return f"127.0.0.1:{self.port}"

    def populate(self):
        subprocess.run([os.path.join(BUILD, "zkbench"), "-H", self.hostport(), "-m", "setup"],
                       check=True, stdout=subprocess.DEVNULL)


def make_system(kind, members, work):
    top = tempfile.mkdtemp(prefix=f"{kind}{members}-", dir=work)
    if kind == "corral":
        return Corral(members, top, ARGS.corrald)
    if kind == "etcd":
        return Etcd(members, top)
    return ZooKeeper(members, top)


# ---- one measured run --------------------------------------------------------------
MODES = {"W1": "get", "W2": "set", "W3": "create", "W5": "mix",
         "W4read": "get", "W4write": "set"}


def driver_cmd(sysm, mode, conc, seconds):
    if sysm.kind == "zk":
        sessions = min(conc, 8)
        return [os.path.join(BUILD, "zkbench"), "-H", sysm.hostport(), "-m", mode,
                "-s", str(sessions), "-w", str(max(1, conc // sessions)), "-d", str(seconds)]
    # Reads go to a URL with the node's path: http.lua then leaves the request to wrk's
    # static path (no Lua call per request), which the load generator's core needs to
    # keep up with corral's reads.
    path = ""
    if mode == "get":
        path = "/v2/keys/bench/k0" if sysm.kind == "etcd" else "/v1/znodes/bench/k0"
    return ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "-s", LUA,
            f"http://127.0.0.1:{sysm.port}{path}", "--", sysm.kind, mode]


def run_child(cmd, timeout):
    """Runs the load generator on CPU 1; returns (stdout, its CPU seconds)."""
    p = subprocess.Popen(pinned(cmd, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    # taskset execs the driver in place, so the waited child's rusage (children_cpu) is
    # the driver's own CPU
    return p.returncode, out, err


def parse_result(out):
    line = [l for l in out.splitlines() if l.startswith("RESULT")]
    if not line:
        return None
    res = {}
    for kv in line[-1].split()[1:]:
        k, v = kv.split("=", 1)
        try:
            res[k] = float(v)
        except ValueError:
            res[k] = v
    return res


def children_cpu():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_wait, limit_pct=20.0):
    """Waits (at most max_wait s) until the rest of the machine uses < limit_pct of a core:
    this VM is shared, and other jobs' CPU lands on our cores. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        b0 = machine_busy()
        time.sleep(0.5)
        if 100 * (machine_busy() - b0) / 0.5 < limit_pct:
            break
    return time.monotonic() - t0


def freeze_probe_start():
    """tools/bench/vmfreeze beside a run, on the client's core: this VM's host caps the
    machine's CPU time per 100 ms, its own disk work included, and freezes both virtual
    CPUs when the cap is reached (steal time stays 0 here). The probe sees that as late
    wake-ups of a real-time thread."""
    return subprocess.Popen(pinned([os.path.join(BUILD, "vmfreeze")], 1), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def freeze_probe_stop(probe):
    probe.send_signal(signal.SIGTERM)
    try:
        out, _ = probe.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        probe.kill()
        return {}
    res = parse_result(out) or {}
    if not res.get("seconds"):
        return {}
    return {"vm_frozen_ms_per_s": res["frozen_ms"] / res["seconds"],
            "vm_freezes": int(res["freezes"]), "vm_longest_freeze_ms": res["longest_ms"]}


def measure(sysm, wl, conc, seconds, rep, topo):
    mode = MODES[wl]
    waited = wait_quiet(CFG.get("quiet_wait", 0))
    cmd = driver_cmd(sysm, mode, conc, seconds)
    wal0 = sysm.wal_stats() if hasattr(sysm, "wal_stats") else None
    probe = freeze_probe_start()
    srv0, cli0, busy0, fl0 = sysm.cpu(), children_cpu(), machine_busy(), disk_flushes()
    t0 = time.monotonic()
    rc, out, err = run_child(cmd, seconds + 120)
    el = time.monotonic() - t0
    frozen = freeze_probe_stop(probe)
    srv = sysm.cpu() - srv0
    cli = children_cpu() - cli0
    busy = machine_busy() - busy0
    fl1 = disk_flushes()
    fl, fl_ms = fl1[0] - fl0[0], fl1[1] - fl0[1]
    res = parse_result(out) or {}
    ops_s = res.get("ops_per_s", 0.0)
    rec = {"system": sysm.kind, "topology": topo, "workload": wl, "concurrency": conc,
           "rep": rep, "seconds": seconds, "ops_per_s": ops_s,
           "p50_ms": res.get("p50_ms", 0), "p99_ms": res.get("p99_ms", 0),
           "p999_ms": res.get("p999_ms", 0), "errors": int(res.get("errors", 0)) + (rc != 0),
           "server_cpu_pct": 100 * srv / el, "client_cpu_pct": 100 * cli / el,
           "foreign_cpu_pct": max(0.0, 100 * (busy - srv - cli) / el),
           "server_us_per_op": 1e6 * srv / (ops_s * el) if ops_s else 0,
           "flushes_per_s": fl / el, "disk_ms_per_flush": fl_ms / fl if fl else None,
           "pinned": PIN, "waited_for_quiet_s": round(waited, 1)}
    rec.update(frozen)
    if wal0 is not None:
        rec.update(wal_batch_figures(wal0, sysm.wal_stats()))
    rec["limit"] = limit_of(rec)
    if not res:
        rec["stderr"] = err[-500:]
        log(f"  driver failed: {err.strip()[-300:]}")
    return rec


def wal_batch_figures(before, after):
    """corral's log batches during a run, from two /v1/stats: how many records each
    fdatasync covered, the mean time in pwrite and in fdatasync, the mean cycle (queued to
    done, hand-offs between threads included) and the fdatasync p99 bucket bound. They
    tell whether a write run waited on the disk or on the server."""
    if not after or after.get("wal_batches", 0) <= before.get("wal_batches", 0):
        return {}
    d = {k: after[k] - before[k] for k in ("wal_batches", "wal_records", "wal_pwrite_us",
                                            "wal_fdatasync_us", "wal_sync_us")}
    b = d["wal_batches"]
    counts = [a["count"] - p["count"] for a, p in zip(after["wal_fdatasync_histogram"],
                                                     before["wal_fdatasync_histogram"])]
    bounds = [h["le_us"] for h in after["wal_fdatasync_histogram"]]
    seen, p99 = 0, None
    for c, le in zip(counts, bounds):
        seen += c
        if seen >= 0.99 * b:
            p99 = le
            break
    return {"wal_batches": b, "wal_records_per_batch": d["wal_records"] / b,
            "wal_pwrite_us": d["wal_pwrite_us"] / b, "wal_fdatasync_us": d["wal_fdatasync_us"] / b,
            "wal_cycle_us": d["wal_sync_us"] / b, "wal_fdatasync_p99_le_us": p99}


def limit_of(r):
    """What limited a run, from its CPU figures (one core each when pinned)."""
    srv_cap = 100 if PIN else 200
    if r["server_cpu_pct"] >= 0.85 * srv_cap * (1 if r["topology"] == "standalone" else 1):
        return "server CPU"
    if r["client_cpu_pct"] >= 85:
        return "client CPU"
    if r["foreign_cpu_pct"] >= 25:
        return "foreign load"
    if r.get("vm_frozen_ms_per_s", 0) >= 50:
        return "VM frozen by its host"
    if r["workload"] in ("W2", "W3", "W4write", "W5") and r["flushes_per_s"] > 0:
        return "fsync/latency"
    return "latency (round trips)"


def warmup(sysm, seconds):
    """Not recorded: lets ZooKeeper's JIT compile, and pages every system in."""
    for mode in ("mix", "create"):
        run_child(driver_cmd(sysm, mode, 32, seconds), seconds + 60)


# ---- the phases ----------------------------------------------------------------------
def standalone_phase(cfg, results, floors_beside):
    work = ARGS.work_dir
    systems = {}
    try:
        for kind in ARGS.systems:
            s = make_system(kind, 1, work)
            s.start()
            s.populate()
            systems[kind] = s
            log(f"{kind} standalone up (pids {s.pids()}, data {s.top})")
        for s in systems.values():
            warmup(s, cfg["warmup"])
        plan = []
        for wl in ("W1", "W2", "W3", "W5"):
            plan.append((wl, cfg["conc"], cfg["seconds"], cfg["reps"]))
        for c in cfg["sweep"]:
            for wl in ("W1", "W2", "W3"):
                plan.append((wl, c, cfg["sweep_seconds"], cfg["sweep_reps"]))
        plan.append(("W4read", 1, cfg["seconds"], cfg["reps"]))
        plan.append(("W4write", 1, cfg["seconds"], cfg["reps"]))
        kinds = list(systems)
        for wl, conc, secs, reps in plan:
            for rep in range(reps):
                order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
                for kind in order:
                    if wl == "W4write" and kind == "corral":
                        # W4's target is a ratio to the disk's floor, and this disk's sync
                        # latency drifts by 2x within minutes: measure the floor right
                        # before each corral run, so each ratio compares the same minute.
                        floors_beside.append(floor_beside(cfg, rep))
                    r = measure(systems[kind], wl, conc, secs, rep, "standalone")
                    results.append(r)
                    log(f"  {wl:7} c={conc:<3} {kind:6} {r['ops_per_s']:9.0f}/s p50 {r['p50_ms']:.2f} "
                        f"p99 {r['p99_ms']:.2f} ms  srv {r['server_cpu_pct']:.0f}% cli "
                        f"{r['client_cpu_pct']:.0f}% foreign {r['foreign_cpu_pct']:.0f}% "
                        f"err {r['errors']}  [{r['limit']}]")
    finally:
        for s in systems.values():
            s.stop()
            shutil.rmtree(s.top, ignore_errors=True)


def cluster_phase(cfg, results):
    work = ARGS.work_dir
    kinds = list(ARGS.systems)
    for p in range(cfg["cluster_passes"]):
        order = kinds[p % len(kinds):] + kinds[:p % len(kinds)]
        for kind in order:
            s = make_system(kind, 3, work)
            try:
                s.start()
                s.populate()
                log(f"{kind} 3-member cluster up (leader member {s.leader + 1}, pids {s.pids()})")
                warmup(s, cfg["warmup"])
                # Writes at every cluster concurrency: a member's cost per write is mostly
                # per log batch, and batches hold about half the writers in flight, so the
                # cluster's share of standalone moves with the writer count.
                writes = [(wl, c) for wl in ("W2", "W3") for c in cfg["cluster_concs"]]
                for wl, conc in [("W1", cfg["conc"])] + writes + [("W4write", 1)]:
                    r = measure(s, wl, conc, cfg["seconds"], p, "cluster")
                    results.append(r)
                    log(f"  {wl:7} c={conc:<3} {kind:6} {r['ops_per_s']:9.0f}/s p50 {r['p50_ms']:.2f} "
                        f"p99 {r['p99_ms']:.2f} ms  srv {r['server_cpu_pct']:.0f}% cli "
                        f"{r['client_cpu_pct']:.0f}% foreign {r['foreign_cpu_pct']:.0f}% "
                        f"err {r['errors']}  [{r['limit']}]")
            finally:
                s.stop()
                shutil.rmtree(s.top, ignore_errors=True)


def floor_run(count):
    # On the servers' CPU: on this VM the disk's interrupts go to CPU 1, and a sync that
    # completes on the other core costs a cross-CPU wake-up, as it does for the servers.
    p = subprocess.run(pinned([os.path.join(BUILD, "fsyncfloor"), ARGS.work_dir, str(count)], 0),
                       capture_output=True, text=True, check=True)
    floors = {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT"):
            r = parse_result(line)
            floors[r["way"]] = r
    return floors


def floor_beside(cfg, rep):
    floors = floor_run(cfg["fsync_beside_n"])
    log(f"  fsync floor beside W4write rep {rep}: " +
        ", ".join(f"{w} p50 {r['p50_ms']:.3f} ms" for w, r in floors.items()))
    return {"rep": rep, "floors": floors}


def fsync_phase(cfg, out):
    floors = floor_run(cfg["fsync_n"])
    out["fsync"] = floors
    log(f"fsync floor: {floors}")


def watch_phase(cfg, out):
    work = ARGS.work_dir
    res = []
    for kind in ARGS.systems:
        s = make_system(kind, 1, work)
        try:
            s.start()
            s.populate()
            for n in cfg["watchers"]:
                rounds = cfg["watch_rounds"].get(n, 3)
                srv0 = s.cpu()
                t0 = time.monotonic()
                if kind == "zk":
                    cmd = [os.path.join(BUILD, "zkbench"), "-H", s.hostport(), "-m", "watch",
                           "-n", str(n), "-R", str(rounds)]
                else:
                    cmd = [os.path.join(BUILD, "httpwatch"), "-p", str(s.port), "-s", kind,
                           "-n", str(n), "-R", str(rounds)]
                rc, o, e = run_child(cmd, 600)
                r = parse_result(o) or {"error": e.strip()[-300:]}
                r.update({"system": kind, "n": n, "rounds": rounds, "rc": rc,
                          "server_cpu_s": s.cpu() - srv0, "elapsed_s": time.monotonic() - t0})
                res.append(r)
                log(f"  W6 {kind:6} {n:6} watchers: {r}")
        finally:
            s.stop()
            shutil.rmtree(s.top, ignore_errors=True)
    out["watch"] = res


def main():
    global ARGS, PIN, DISK, CFG
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    ap.add_argument("--corrald", default=os.path.join(ROOT, "build-release", "corrald"))
    ap.add_argument("--only", default="fsync,W1-W5,C,W6,W7")
    ap.add_argument("--systems", default="corral,etcd,zk")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--work-dir", default="/var/tmp/corral-bench")
    ap.add_argument("--out", default=None)
    ARGS = ap.parse_args()
    ARGS.systems = ARGS.systems.split(",")
    ARGS.corrald = os.path.abspath(ARGS.corrald)
    PIN = not ARGS.no_pin
    os.makedirs(ARGS.work_dir, exist_ok=True)
    DISK = find_disk(ARGS.work_dir)
    only = ARGS.only.split(",")
    if ARGS.quick:
        cfg = dict(seconds=3, reps=2, sweep=[8, 128], sweep_seconds=2, sweep_reps=2, conc=64,
                   warmup=2, cluster_passes=1, cluster_concs=[32, 64, 128], fsync_n=1000, fsync_beside_n=300, watchers=[1, 1000, 10000],
                   watch_rounds={1: 20, 1000: 3, 10000: 2}, w7_nodes=100000)
    else:
        cfg = dict(seconds=10, reps=3, sweep=[8, 32, 128], sweep_seconds=10, sweep_reps=3,
                   conc=64, warmup=8, cluster_passes=3, cluster_concs=[32, 64, 128], fsync_n=5000, fsync_beside_n=2000,
                   watchers=[1, 1000, 10000], watch_rounds={1: 200, 1000: 10, 10000: 5},
                   w7_nodes=1000000, quiet_wait=10)
    CFG = cfg
    day = datetime.datetime.now().strftime("%Y-%m-%d")
    outdir = ARGS.out or os.path.join(HERE, "results", day + ("-quick" if ARGS.quick else ""))
    os.makedirs(outdir, exist_ok=True)
    raw_path = os.path.join(outdir, "raw.json")
    raw = {"runs": []}
    if os.path.exists(raw_path):
        with open(raw_path) as f:
            raw = json.load(f)  # a partial re-run (--only) keeps the other phases
    raw["config"] = cfg
    raw["machine"] = machine_info()
    raw["started"] = datetime.datetime.now().isoformat(timespec="seconds")
    log(f"results -> {outdir}; data on {ARGS.work_dir} ({fs_type(ARGS.work_dir)}, disk {DISK}); "
        f"{'pinned: servers CPU 0, load CPU 1' if PIN else 'not pinned'}")

    def save():
        with open(raw_path, "w") as f:
            json.dump(raw, f, indent=1)

    if "fsync" in only:
        fsync_phase(cfg, raw)
        save()
    if "W1-W5" in only:
        raw["runs"] = [r for r in raw["runs"] if r["topology"] != "standalone"]
        raw["fsync_beside_w4"] = []
        standalone_phase(cfg, raw["runs"], raw["fsync_beside_w4"])
        save()
    if "C" in only:
        raw["runs"] = [r for r in raw["runs"] if r["topology"] != "cluster"]
        cluster_phase(cfg, raw["runs"])
        save()
    if "W6" in only:
        watch_phase(cfg, raw)
        save()
    if "W7" in only:
        import w7
        raw["w7"] = w7.run(sys.modules[__name__], cfg, ARGS)
        save()
    import report
    report.write(raw, outdir)
    log(f"wrote {outdir}/results.md")


def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    ver = lambda c: subprocess.run(c, capture_output=True, text=True).stdout.strip().splitlines()[:1]
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_mib": mem, "kernel": platform.release(),
            "etcd": ver(["etcd", "--version"]),
            "java": subprocess.run(["java", "-version"], capture_output=True,
                                   text=True).stderr.splitlines()[:1],
            "zookeeper": ver(["dpkg-query", "-W", "-f", "${Version}", "zookeeper"]),
            "wrk": ver(["dpkg-query", "-W", "-f", "${Version}", "wrk"]),
            "corral_commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True).stdout.strip(),
            "fs": fs_type(ARGS.work_dir)}


def on_signal(signum, frame):
    # run the finally blocks, which stop every server this run started
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    main()
