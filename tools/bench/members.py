#!/usr/bin/env python3
"""Where a write's CPU goes, member by member: standalone corral against a 3-member cluster.

The full benchmark (run.sh) gives each system's throughput and the CPU of all its
processes together. This probe answers the question behind the cluster target (a
3-member cluster at 70 % of standalone): what does one write cost the leader, and each
follower, in CPU? It alternates fresh standalone servers and fresh clusters (A B, B A,
...), drives each with the bench's own load generator (wrk and lua/http.lua, on CPU 1),
and prints per run and as medians:

  ops/s, p50/p99      what the client saw
  cpu0 / cpu1 %       how busy each core was (from /proc/stat): with cpu0 near 100 %,
                      the servers' core is the limit and throughput = 1 / CPU per write
  per member          role (S standalone, L leader, F follower) and three figures:
                      microseconds of CPU (utime+stime, threads and reaped children) per
                      write / the writes each of its log's fdatasyncs covered / context
                      switches of all its threads per fdatasync (/proc/PID/task/*/status)

  tools/bench/members.py [--corrald build-release/corrald] [--connections 32]
                         [--seconds 10] [--pairs 3] [--modes set,create]
                         [--placement shared|leader-alone] [--threads]

--threads adds, per member and per log sync, each thread's microseconds of CPU and its
voluntary + involuntary context switches: "loop" is corrald's main thread (HTTP, the
engine, Raft), "worker" libuv's pool (threads named corral-worker: the log's pwrite +
fdatasync, snapshots), "nanomsg" the unnamed thread a cluster member also has (nanomsg's
worker, which reads and writes the peer sockets); each with its thread id's offset.
An involuntary switch is a preemption: another thread on the core woke and took it.

--placement shared (the default) pins every member to CPU 0, as run.sh does.
--placement leader-alone moves the followers to CPU 1, beside the load generator, once
the leader is known: the leader then has a core of its own, as it would in a cluster with
a member per machine. Its followers share CPU 1 with wrk, so this is a bound on what the
leader alone allows, not a deployment. The standalone runs stay on CPU 0 in both.

Data directories are made under --work-dir (a real disk, as for run.sh). Needs
tools/bench/run.sh to have built the drivers once (wrk and corrald in Release).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the systems, the driver command and its result parser)

MODES = ("set", "create")  # wrk modes of lua/http.lua: set over 1,000 nodes, sequential create


def cpu_times():
    """Busy and total jiffies of CPU 0 and CPU 1, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name = line.split()[0]
            if name in ("cpu0", "cpu1"):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                out[name] = (sum(v) - idle, sum(v))
    return out


def thread_counters(pid):
    """{tid: [CPU seconds, voluntary, involuntary context switches, name]} of every
    thread of pid (/proc/PID/task/*/stat, status and comm). A thread that ends during a
    run drops out."""
    out = {}
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            # Not bench.cpu_seconds: a thread's stat repeats its process's reaped
            # children (cutime, cstime), which belong to no one thread.
            with open(f"{task_dir}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"{task_dir}/{tid}/comm") as f:
                name = f.read().strip()
            counters = [(int(fields[11]) + int(fields[12])) / bench.TICK, 0, 0, name]
            with open(f"{task_dir}/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        counters[1] = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        counters[2] = int(line.split()[1])
            out[int(tid)] = counters
        except FileNotFoundError:
            pass  # a thread that ended between listdir and open
    return out


def thread_figures(pid, before, after, syncs):
    """Per thread, per log sync: [name, us of CPU, voluntary, involuntary switches]; the
    main thread (corrald's loop) first, then the others by thread id."""
    rows = []
    for tid in sorted(after, key=lambda t: (t != pid, t)):
        b = before.get(tid, [0.0, 0, 0, ""])
        a = after[tid]
        if tid == pid:
            name = "loop"
        elif a[3] == "corral-worker":
            name = f"worker+{tid - pid}"
        else:
            name = f"{'nanomsg' if a[3] == after[pid][3] else a[3]}+{tid - pid}"
        rows.append([name, 1e6 * (a[0] - b[0]) / syncs, (a[1] - b[1]) / syncs,
                     (a[2] - b[2]) / syncs])
    return [r for r in rows if r[1] or r[2] or r[3]]


def busy_pct(before, after, name):
    busy = after[name][0] - before[name][0]
    total = after[name][1] - before[name][1]
    return 100.0 * busy / total if total else 0.0


def stats(system, i):
    status, body = bench.http(f"http://127.0.0.1:{system.http_ports[i]}", "GET", "/v1/stats")
    if status != 200:
        raise RuntimeError(f"member {i + 1}: /v1/stats answered {status}")
    return body


def place_followers(system):
    """Moves every thread of each follower to CPU 1 (taskset -a)."""
    for i, proc in enumerate(system.procs):
        if i != system.leader:
            subprocess.run(["taskset", "-a", "-p", "-c", "1", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL)


def one_run(binary, members, mode, args):
    """Starts a fresh standalone server or cluster, loads it, measures one run of mode,
    stops it. Returns a dict of figures."""
    top = tempfile.mkdtemp(dir=args.work_dir)
    system = bench.Corral(members, top, binary)
    try:
        system.start()
        system.populate()
        if members > 1 and args.placement == "leader-alone":
            place_followers(system)
        # warm-up, not recorded: the first seconds allocate the tree and the log's segment
        rc, out, err = bench.run_child(bench.driver_cmd(system, "set", args.connections, 2), 60)
        cpu0 = [bench.cpu_seconds(p.pid) for p in system.procs]
        threads0 = [thread_counters(p.pid) for p in system.procs]
        st0 = [stats(system, i) for i in range(members)]
        core0 = cpu_times()
        rc, out, err = bench.run_child(
            bench.driver_cmd(system, mode, args.connections, args.seconds),
            args.seconds + 60)
        core1 = cpu_times()
        cpu1 = [bench.cpu_seconds(p.pid) for p in system.procs]
        threads1 = [thread_counters(p.pid) for p in system.procs]
        st1 = [stats(system, i) for i in range(members)]
        result = bench.parse_result(out)
        if rc != 0 or not result:
            raise RuntimeError(f"driver failed ({rc}): {err.strip()[-300:]}")
        ops = result["ops_per_s"] * args.seconds
        per_member = []
        for i in range(members):
            batches = st1[i]["wal_batches"] - st0[i]["wal_batches"]
            records = st1[i]["wal_records"] - st0[i]["wal_records"]
            role = "S" if members == 1 else ("L" if i == system.leader else "F")
            threads = thread_figures(system.procs[i].pid, threads0[i], threads1[i],
                                     max(1, batches))
            per_member.append({"role": role, "us_per_op": 1e6 * (cpu1[i] - cpu0[i]) / ops,
                               "records_per_sync": records / batches if batches else 0.0,
                               "switches_per_sync": sum(t[2] + t[3] for t in threads),
                               "threads": threads})
        return {"members": members, "mode": mode, "ops_per_s": result["ops_per_s"],
                "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                "errors": int(result.get("errors", 0)),
                "cpu0_pct": busy_pct(core0, core1, "cpu0"),
                "cpu1_pct": busy_pct(core0, core1, "cpu1"), "per_member": per_member}
    finally:
        system.stop()
        shutil.rmtree(top, ignore_errors=True)


def show_threads(run):
    for m in run["per_member"]:
        print(f"    {m['role']}: " + ", ".join(
            f"{name} {us:.0f} us {vol:.1f}+{invol:.1f}" for name, us, vol, invol in m["threads"]))


def show(run):
    members = " ".join(f"{m['role']} {m['us_per_op']:5.1f} us/{m['records_per_sync']:4.1f}"
                       f"/{m['switches_per_sync']:4.1f}" for m in run["per_member"])
    label = "standalone" if run["members"] == 1 else f"cluster-{run['members']}"
    print(f"{label:10} {run['mode']:6} {run['ops_per_s']:8.0f}/s  p50 {run['p50_ms']:5.2f} "
          f"p99 {run['p99_ms']:6.2f} ms  cpu0 {run['cpu0_pct']:3.0f}% cpu1 {run['cpu1_pct']:3.0f}%"
          f"  {members}" + (f"  errors {run['errors']}" if run["errors"] else ""), flush=True)


def median_range(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def summary(runs, modes):
    print("\nmedians (min-max) per member: us of CPU per write; context switches per log sync")
    for mode in modes:
        alone = [r for r in runs if r["mode"] == mode and r["members"] == 1]
        cluster = [r for r in runs if r["mode"] == mode and r["members"] > 1]
        if not alone or not cluster:
            continue
        a = statistics.median(r["ops_per_s"] for r in alone)
        c = statistics.median(r["ops_per_s"] for r in cluster)
        cost, switches = {}, {}
        for r in alone + cluster:
            for m in r["per_member"]:
                cost.setdefault(m["role"], []).append(m["us_per_op"])
                switches.setdefault(m["role"], []).append(m["switches_per_sync"])
        whole = [sum(m["us_per_op"] for m in r["per_member"]) for r in cluster]
        print(f"{mode}: standalone {a:.0f}/s, cluster {c:.0f}/s = {100 * c / a:.0f} %")
        for role, name in (("S", "standalone"), ("L", "leader"), ("F", "follower")):
            if role in cost:
                print(f"  {name:10} {median_range(cost[role])} us, "
                      f"{median_range(switches[role])} switches")
        print(f"  the cluster's members together {median_range(whole)} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corrald", default=os.path.join(bench.ROOT, "build-release", "corrald"))
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--modes", default="set,create")
    ap.add_argument("--placement", choices=["shared", "leader-alone"], default="shared")
    ap.add_argument("--threads", action="store_true",
                    help="also each thread's CPU and switches per log sync")
    ap.add_argument("--work-dir", default="/var/tmp/corral-bench")
    args = ap.parse_args()
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            ap.error(f"unknown mode {mode} (set, create)")
    if os.cpu_count() < 2:
        ap.error("needs two CPUs: the servers on CPU 0, the load generator on CPU 1")
    os.makedirs(args.work_dir, exist_ok=True)
    binary = os.path.abspath(args.corrald)
    print(f"corrald {binary}; {args.connections} connections, {args.seconds} s runs, "
          f"{args.pairs} pairs, placement {args.placement}; data in {args.work_dir} "
          f"({bench.fs_type(args.work_dir)})", flush=True)
    runs = []
    for pair in range(args.pairs):
        for mode in modes:
            order = [1, args.members] if pair % 2 == 0 else [args.members, 1]
            for members in order:
                run = one_run(binary, members, mode, args)
                show(run)
                if args.threads:
                    show_threads(run)
                runs.append(run)
    summary(runs, modes)


if __name__ == "__main__":
    main()
