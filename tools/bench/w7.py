"""W7: memory per znode and restart time with many znodes (1,000,000; --quick 100,000).

For each system, a fresh standalone server (pinned to CPU 0 like the rest):
  1. resident memory (VmRSS) when idle,
  2. N znodes /mem/p<j>/n<i>, 1,000 per parent, 100-byte values: corral and ZooKeeper
     with multis of 1,000 creates, etcd v2 (which has no multi) with wrk, 64 in flight,
  3. VmRSS after; for ZooKeeper also the live heap after a full GC (jcmd GC.run), the
     kindest figure for a garbage-collected server,
  4. SIGTERM, then restart on the same data: seconds until the last znode can be read.
"""
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time


def dir_mib(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total / 2**20


def corral_fill(port, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    value = "v" * 100

    def call(method, path, body):
        c.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status}")

    call("POST", "/v1/znodes/mem", {})
    parents = (n + 999) // 1000
    for j in range(parents):
        call("POST", f"/v1/znodes/mem/p{j}", {})
    made = 0
    for j in range(parents):
        k = min(1000, n - made)
        call("POST", "/v1/multi", {"ops": [{"op": "create", "path": f"/mem/p{j}/n{i}", "data": value}
                                           for i in range(k)]})
        made += k


def corral_ready(port, n):
    last = n - 1
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", f"/v1/znodes/mem/p{last // 1000}/n{last % 1000}")
        return c.getresponse().status == 200
    except OSError:
        return False


def etcd_ready(port, n):
    # etcd serves nothing before it has replayed its whole log, and a few indexes of
    # etcdfill.lua may be missing, so any key tells it is back
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/v2/keys/mem/p1")
        return c.getresponse().status == 200
    except OSError:
        return False


def jcmd_heap_used_kib(pid):
    subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, timeout=300)
    out = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True,
                         timeout=60).stdout
    # one "total NK, used MK" line per generation (Serial: new + tenured; G1: one heap)
    used = [int(u) for _, u in re.findall(r"total (\d+)K, used (\d+)K", out)]
    return sum(used) if used else None


def run(B, cfg, args):
    n = cfg["w7_nodes"]
    out = []
    for kind in args.systems:
        s = B.make_system(kind, 1, args.work_dir)
        rec = {"system": kind, "nodes": n}
        try:
            s.start()
            time.sleep(2)
            pid = s.pids()[0]
            heap0 = jcmd_heap_used_kib(pid) if kind == "zk" else None
            rec["rss_before_kib"] = B.rss_kib(pid)
            t0 = time.monotonic()
            if kind == "corral":
                corral_fill(s.port, n)
            elif kind == "zk":
                subprocess.run(B.pinned([os.path.join(B.BUILD, "zkbench"), "-H", s.hostport(),
                                         "-m", "populate", "-n", str(n)], 1),
                               check=True, stdout=subprocess.DEVNULL, timeout=3600)
            else:
                p = subprocess.run(B.pinned(["wrk", "-t1", "-c64", "-d3600s", "--timeout", "30s", "-s",
                                             os.path.join(B.HERE, "lua", "etcdfill.lua"),
                                             f"http://127.0.0.1:{s.port}", "--", str(n)], 1),
                                   capture_output=True, text=True, timeout=4000)
                r = B.parse_result(p.stdout) or {}
                if r.get("created", 0) < n:
                    raise RuntimeError(f"etcd fill: {p.stdout[-300:]} {p.stderr[-300:]}")
            rec["load_s"] = time.monotonic() - t0
            time.sleep(2)
            rec["rss_after_kib"] = B.rss_kib(pid)
            rec["bytes_per_node"] = (rec["rss_after_kib"] - rec["rss_before_kib"]) * 1024 / n
            if kind == "zk":
                heap1 = jcmd_heap_used_kib(pid)
                rec["heap_before_kib"], rec["heap_after_kib"] = heap0, heap1
                rec["rss_after_gc_kib"] = B.rss_kib(pid)
                if heap0 is not None and heap1 is not None:
                    rec["heap_bytes_per_node"] = (heap1 - heap0) * 1024 / n
            B.log(f"  W7 {kind}: {n} znodes in {rec['load_s']:.1f} s, RSS "
                  f"{rec['rss_before_kib'] // 1024} -> {rec['rss_after_kib'] // 1024} MiB")
            s.stop()
            rec["disk_mib"] = dir_mib(s.top)
            # restart on the same data; time until the last znode can be read
            t0 = time.monotonic()
            if kind == "corral":
                s.spawn([s.binary, "--listen", f"127.0.0.1:{s.http_ports[0]}",
                         "--data-dir", os.path.join(s.top, "data")], "corrald-restart")
                ready = lambda: corral_ready(s.port, n)
            elif kind == "etcd":
                s.start()
                ready = lambda: etcd_ready(s.port, n)
            else:
                s.start()
                check = [os.path.join(B.BUILD, "zkbench"), "-H", s.hostport(), "-m", "check", "-n", str(n)]
                ready = lambda: subprocess.run(check, capture_output=True, timeout=60).returncode == 0
            while not ready():
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("no restart within 600 s")
                if any(p.poll() is not None for p in s.procs):
                    raise RuntimeError("server exited on restart")
                time.sleep(0.02)
            rec["restart_s"] = time.monotonic() - t0
            time.sleep(1)
            rec["rss_restart_kib"] = B.rss_kib(s.pids()[0])
            B.log(f"  W7 {kind}: restart {rec['restart_s']:.2f} s, disk {rec['disk_mib']:.0f} MiB, "
                  f"RSS after restart {rec['rss_restart_kib'] // 1024} MiB")
        except Exception as e:  # keep the other systems' figures
            rec["error"] = str(e)
            B.log(f"  W7 {kind} failed: {e}")
        finally:
            s.stop()
            shutil.rmtree(s.top, ignore_errors=True)
        out.append(rec)
    return out
