#!/usr/bin/env python3
"""Memory per znode and restart time of corrald at a large tree.

Starts a fresh corrald, creates --nodes znodes with --value-bytes of data each (as
/scale/p<j>/n<i>, 1,000 children per parent, 1,000 creates per multi request), reads
the server's resident memory before and after, then restarts it on the same data and
times how long it takes until /health answers and how many nodes are back.

  tools/scale.py --corrald build-release/corrald [--nodes 1000000]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(binary, data, port, extra, log):
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data] + extra,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    while True:
        try:
            call(base, "GET", "/health")
            return proc, base, time.monotonic() - started
        except Exception:
            if proc.poll() is not None:
                sys.exit("corrald exited; see its log")
            time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corrald", required=True)
    ap.add_argument("--nodes", type=int, default=1000000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--work-dir", default=os.path.join(os.getcwd(), "scale-data"))
    ap.add_argument("--extra", default="", help="extra corrald flags")
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    top = tempfile.mkdtemp(dir=args.work_dir)
    data = os.path.join(top, "data")
    binary = os.path.abspath(args.corrald)
    extra = args.extra.split()
    port = free_port()
    log = open(os.path.join(top, "corrald.log"), "w")
    proc, base, _ = start(binary, data, port, extra, log)
    try:
        value = "v" * args.value_bytes
        call(base, "POST", "/v1/znodes/scale", {})
        parents = (args.nodes + 999) // 1000
        for j in range(parents):
            call(base, "POST", f"/v1/znodes/scale/p{j}", {})
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        started = time.monotonic()
        made = 0
        for j in range(parents):
            count = min(1000, args.nodes - made)
            ops = [{"op": "create", "path": f"/scale/p{j}/n{i}", "data": value}
                   for i in range(count)]
            call(base, "POST", "/v1/multi", {"ops": ops})
            made += count
        create_s = time.monotonic() - started
        time.sleep(1)
        after = rss_kib(proc.pid)
        per_node = (after - before) * 1024 / args.nodes
        print(f"created {made} znodes ({args.value_bytes}-byte values) in {create_s:.1f} s "
              f"({made / create_s:.0f}/s via 1,000-op multis)")
        print(f"RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB: "
              f"{per_node:.0f} bytes per znode")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        disk = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
        print(f"data dir {disk / 2**20:.0f} MiB: {sorted(os.listdir(data))}")
        proc, base, restart_s = start(binary, data, port, extra, log)
        n = call(base, "GET", "/v1/znodes/scale/p0")["stat"]["numChildren"]
        print(f"restart: healthy after {restart_s:.2f} s, /scale/p0 has {n} children, "
              f"RSS {rss_kib(proc.pid) / 1024:.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        with open(os.path.join(top, "corrald.log")) as f:
            for line in f:
                if "recover" in line or "snapshot" in line or "replay" in line:
                    print("log:", line.rstrip())
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
