#!/usr/bin/env python3
"""Load run for corrald: requests per second of get, set and create with wrk.

Starts a fresh corrald (the binary given by --corrald) on a free port with its data
on a real disk, creates /bench/k0..k999 and /bench/seq, then runs each workload
--runs times with --connections keep-alive connections and prints the median, the
min..max, latency, and the server's CPU use during the run (utime+stime from /proc).

  tools/loadrun.py --corrald build-release/corrald [--connections 32] [--seconds 10]

Optionally pins the server and wrk to different cores (--pin), which on a 2-core
machine keeps the load generator from stealing the server's CPU.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def start_server(binary, data_dir, port, extra, pin):
    cmd = [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir] + extra
    if pin:
        cmd = ["taskset", "-c", "0"] + cmd
    log = open(os.path.join(os.path.dirname(data_dir), "corrald.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            request(base, "GET", "/health")
            return proc, base
        except Exception:
            time.sleep(0.05)
    proc.kill()
    sys.exit("corrald did not become healthy")


def populate(base):
    request(base, "POST", "/v1/znodes/bench", {})
    request(base, "POST", "/v1/znodes/bench/seq", {})
    value = "v" * 100
    for start in range(0, 1000, 250):
        ops = [{"op": "create", "path": f"/bench/k{i}", "data": value}
               for i in range(start, start + 250)]
        request(base, "POST", "/v1/multi", {"ops": ops})


def run_wrk(base, mode, connections, seconds, pid, pin):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s",
           os.path.join(HERE, "load", "workload.lua"), base, "--", mode]
    if pin:
        cmd = ["taskset", "-c", "1"] + cmd
    before = cpu_seconds(pid)
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - started
    used = cpu_seconds(pid) - before
    line = [l for l in out.splitlines() if l.startswith("RESULT")][0]
    result = dict(kv.split("=") for kv in line.split()[1:])
    rps = float(result["requests_per_s"])
    return {"rps": rps, "p50": float(result["p50_ms"]), "p99": float(result["p99_ms"]),
            "non2xx": int(result["non2xx"]), "cpu_pct": 100 * used / elapsed,
            "cpu_us_per_op": 1e6 * used / (rps * elapsed) if rps else 0}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corrald", required=True)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workloads", default="get,set,create")
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, wrk on CPU 1")
    ap.add_argument("--work-dir", default=os.path.join(os.getcwd(), "loadrun-data"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    os.makedirs(args.work_dir, exist_ok=True)
    top = tempfile.mkdtemp(dir=args.work_dir)
    port = free_port()
    proc, base = start_server(os.path.abspath(args.corrald), os.path.join(top, "data"), port,
                              [], args.pin)
    try:
        populate(base)
        print(f"corrald pid {proc.pid}, {args.connections} connections, "
              f"{args.seconds}s x {args.runs} runs{' (pinned)' if args.pin else ''}")
        print(f"{'workload':8} {'req/s median':>12} {'min..max':>17} {'p50 ms':>7} "
              f"{'p99 ms':>7} {'srv CPU%':>8} {'srv us/op':>9} {'non2xx':>6}")
        for mode in args.workloads.split(","):
            runs = [run_wrk(base, mode, args.connections, args.seconds, proc.pid, args.pin)
                    for _ in range(args.runs)]
            med = lambda k: statistics.median(r[k] for r in runs)
            lo = min(r["rps"] for r in runs)
            hi = max(r["rps"] for r in runs)
            print(f"{mode:8} {med('rps'):12.0f} {lo:8.0f}..{hi:<8.0f} {med('p50'):7.2f} "
                  f"{med('p99'):7.2f} {med('cpu_pct'):8.0f} {med('cpu_us_per_op'):9.1f} "
                  f"{sum(r['non2xx'] for r in runs):6d}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
