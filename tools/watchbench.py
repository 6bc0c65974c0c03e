#!/usr/bin/env python3
"""Long-polls at scale: parks N watchers on corrald and times one change reaching them.

For each N in --watchers (default 1,1000,10000): opens N keep-alive connections, each
parking `GET /v1/watch/<path>?since=Z&timeout_ms=...` (the resumable watch) or, with
--mode events, a session's `GET /v1/sessions/<id>/events` after a one-shot data watch.
Once all are parked it measures the server's resident memory, makes one change (PUT),
and records for every watcher the time from just before the PUT was sent to the moment
its answer arrived. Prints p50/p99/max latency, how many were notified, and the memory
per parked long-poll. Repeats --runs times and reports medians.

  tools/watchbench.py --corrald build-release/corrald [--watchers 1,1000,10000]

The client is Python asyncio on one core, so at 10,000 watchers the figure includes the
client's own time to read 10,000 answers; the server's share is bounded by it.
"""
import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def read_response(reader):
    """Reads one HTTP/1.1 response with Content-Length; returns the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length) if length else b""


async def park(port, request, parked, done_times, index):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    parked[index] = True
    body = await read_response(reader)
    done_times[index] = time.perf_counter()
    writer.close()
    return body


async def one_run(port, base, pid, n, mode, path, settle_s):
    since = call(base, "GET", "/v1/cluster")["zxid"]
    requests = []
    if mode == "watch":
        req = (f"GET /v1/watch{path}?since={since}&timeout_ms=60000 HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\n\r\n").encode()
        requests = [req] * n
    else:
        for _ in range(n):
            sid = call(base, "POST", "/v1/sessions", {"timeout_ms": 120000})["id"]
            call(base, "HEAD" if False else "GET", f"/v1/znodes{path}?watch=true",
                 headers={"Corral-Session": sid})
            requests.append((f"GET /v1/sessions/{sid}/events?timeout_ms=60000 HTTP/1.1\r\n"
                             f"Host: 127.0.0.1\r\n\r\n").encode())
    parked = [False] * n
    done_times = [None] * n
    before = rss_kib(pid)
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(park(port, requests[i], parked, done_times, i)))
        if i % 500 == 499:
            await asyncio.sleep(0)  # let connections open in waves
    while not all(parked):
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle_s)  # the last requests reach the server and park
    parked_rss = rss_kib(pid)
    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: call(base, "PUT", f"/v1/znodes{path}", {"data": str(time.time())}))
    bodies = await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    notified = sum(1 for b in bodies if json.loads(b).get("events"))
    lat = sorted((t - started) * 1000 for t in done_times)
    return {"p50": statistics.median(lat), "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max": lat[-1], "notified": notified,
            "kib_per_poll": (parked_rss - before) / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corrald", required=True)
    ap.add_argument("--watchers", default="1,1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", choices=["watch", "events"], default="watch")
    ap.add_argument("--work-dir", default=os.path.join(os.getcwd(), "watchbench-data"))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(args.work_dir, exist_ok=True)
    top = tempfile.mkdtemp(dir=args.work_dir)
    port = free_port()
    log = open(os.path.join(top, "corrald.log"), "w")
    proc = subprocess.Popen([os.path.abspath(args.corrald), "--listen", f"127.0.0.1:{port}",
                             "--data-dir", os.path.join(top, "data"), "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                call(base, "GET", "/health")
                break
            except Exception:
                time.sleep(0.05)
        call(base, "POST", "/v1/znodes/w", {"data": "0"})
        print(f"mode {args.mode}; server pid {proc.pid}; client: python asyncio, one core")
        print(f"{'watchers':>8} {'notified':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'KiB/poll':>8}")
        for n in [int(x) for x in args.watchers.split(",")]:
            runs = [asyncio.run(one_run(port, base, proc.pid, n, args.mode, "/w",
                                        0.5 + n / 5000)) for _ in range(args.runs)]
            med = lambda k: statistics.median(r[k] for r in runs)
            print(f"{n:8d} {int(med('notified')):8d} {med('p50'):8.2f} {med('p99'):8.2f} "
                  f"{med('max'):8.2f} {med('kib_per_poll'):8.2f}", flush=True)
            if any(r["notified"] != n for r in runs):
                print(f"  NOT ALL NOTIFIED: {[r['notified'] for r in runs]}")
                sys.exit(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
