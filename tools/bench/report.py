"""Turns tools/bench raw.json into results.md, throughput.dat and throughput.png."""
import collections
import os
import shutil
import statistics
import subprocess

SYSTEMS = ["corral", "etcd", "zk"]
LABEL = {"corral": "corral", "etcd": "etcd 3.4 v2", "zk": "ZooKeeper 3.8"}
TITLE = {
    "W1": "W1 read one node (GET /bench/k0; ZK get)",
    "W2": "W2 set, uniform over 1,000 nodes",
    "W3": "W3 sequential create (corral sequential POST; etcd POST in-order key; ZK PERSISTENT_SEQUENTIAL)",
    "W5": "W5 90% reads (random of 1,000 nodes) / 10% sets",
    "W4read": "W4 read latency: one client, one request at a time",
    "W4write": "W4 write latency: one client, one request at a time",
}


def med(v):
    return statistics.median(v) if v else 0


def group(runs, topo, wl, conc):
    out = collections.OrderedDict()
    for s in SYSTEMS:
        rs = [r for r in runs if r["topology"] == topo and r["workload"] == wl
              and r["concurrency"] == conc and r["system"] == s]
        if rs:
            out[s] = rs
    return out


def summary(rs):
    ops = [r["ops_per_s"] for r in rs]
    limits = collections.Counter(r["limit"] for r in rs).most_common(1)[0][0]
    return {"ops": med(ops), "min": min(ops), "max": max(ops), "n": len(rs),
            "p50": med([r["p50_ms"] for r in rs]), "p99": med([r["p99_ms"] for r in rs]),
            "p999": med([r["p999_ms"] for r in rs]),
            "srv": med([r["server_cpu_pct"] for r in rs]), "cli": med([r["client_cpu_pct"] for r in rs]),
            "us": med([r["server_us_per_op"] for r in rs]), "fl": med([r["flushes_per_s"] for r in rs]),
            "flms": med([r["disk_ms_per_flush"] for r in rs if r.get("disk_ms_per_flush") is not None]) or None,
            "foreign": max(r["foreign_cpu_pct"] for r in rs), "err": sum(r["errors"] for r in rs),
            "frozen": med([r.get("vm_frozen_ms_per_s", 0) for r in rs]),
            "frozen_max": max([r.get("vm_longest_freeze_ms", 0) for r in rs]),
            "limit": limits}


def table(runs, topo, wl, conc, name=None):
    g = group(runs, topo, wl, conc)
    if not g:
        return [], {}
    lines = [f"### {name or TITLE[wl]}, {conc} in flight ({topo})", "",
             "| system | ops/s median | min..max | p50 ms | p99 ms | p99.9 ms | server CPU % | client CPU % "
             "| server µs/op | disk flushes/s | disk ms/flush | foreign CPU % (max) | VM frozen ms/s (longest) "
             "| errors | limited by |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    sums = {}
    for s, rs in g.items():
        m = sums[s] = summary(rs)
        flms = f"{m['flms']:.2f}" if m["flms"] else "-"
        lines.append(f"| {LABEL[s]} (n={m['n']}) | {m['ops']:,.0f} | {m['min']:,.0f}..{m['max']:,.0f} | "
                     f"{m['p50']:.2f} | {m['p99']:.2f} | {m['p999']:.2f} | {m['srv']:.0f} | {m['cli']:.0f} | "
                     f"{m['us']:.0f} | {m['fl']:,.0f} | {flms} | {m['foreign']:.0f} | "
                     f"{m['frozen']:.1f} ({m['frozen_max']:.1f}) | {m['err']} | {m['limit']} |")
    if "corral" in sums:
        rat = []
        for o in ("etcd", "zk"):
            if o in sums and sums[o]["ops"]:
                if wl.startswith("W4"):
                    rat.append(f"corral/{LABEL[o]}: throughput {sums['corral']['ops'] / sums[o]['ops']:.2f}x, "
                               f"p50 latency {sums['corral']['p50'] / sums[o]['p50']:.2f}x")
                else:
                    rat.append(f"corral/{LABEL[o]} {sums['corral']['ops'] / sums[o]['ops']:.2f}x")
        lines += ["", "Ratios (median ops/s): " + "; ".join(rat)]
    return lines + [""], sums


def wal_table(runs):
    """corral's own account of its log batches in each write run (/v1/stats before and
    after): the disk's share (pwrite, fdatasync) against the whole cycle, queued to done."""
    keys = sorted({(r["topology"], r["workload"], r["concurrency"]) for r in runs
                   if r["system"] == "corral" and r.get("wal_batches")},
                  key=lambda k: (k[0] != "standalone", k[1], k[2]))
    if not keys:
        return []
    lines = ["### corral's log batches in the write runs (medians; from /v1/stats)", "",
             "| topology | workload | clients | records per fdatasync | pwrite µs | fdatasync µs "
             "| fdatasync p99 under µs | cycle µs (queued to done) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for topo, wl, conc in keys:
        rs = [r for r in runs if r["system"] == "corral" and r["topology"] == topo
              and r["workload"] == wl and r["concurrency"] == conc and r.get("wal_batches")]
        p99 = [r["wal_fdatasync_p99_le_us"] for r in rs if r.get("wal_fdatasync_p99_le_us")]
        p99_cell = f"{med(p99):,.0f}" if p99 else "> 128,000"
        lines.append(f"| {topo} | {wl} | {conc} | {med([r['wal_records_per_batch'] for r in rs]):.1f} | "
                     f"{med([r['wal_pwrite_us'] for r in rs]):.0f} | "
                     f"{med([r['wal_fdatasync_us'] for r in rs]):.0f} | {p99_cell} | "
                     f"{med([r['wal_cycle_us'] for r in rs]):.0f} |")
    return lines + ["", "The cycle minus pwrite and fdatasync is the hand-off between the loop "
                    "and the log's worker thread, and the wait for the loop to take the answer.", ""]


def verdict(ok):
    return "**yes**" if ok else "**NO**"


def write(raw, outdir):
    runs = raw.get("runs", [])
    cfg = raw.get("config", {})
    m = raw.get("machine", {})
    md = ["# corral vs etcd v2 vs ZooKeeper", "",
          f"Run started {raw.get('started')}; corral commit {m.get('corral_commit')}. Machine: "
          f"{m.get('cpus')} vCPU {m.get('cpu')}, {m.get('mem_mib', 0) // 1024} GiB RAM, kernel {m.get('kernel')}, "
          f"data on {m.get('fs')}. etcd {' '.join(m.get('etcd', []))} (`--enable-v2`), "
          f"ZooKeeper {' '.join(m.get('zookeeper', []))} on {' '.join(m.get('java', []))}, wrk {' '.join(m.get('wrk', []))}.",
          "",
          "Servers pinned to CPU 0 and the load generator to CPU 1 with `taskset` "
          "(so the JVM and the Go runtime each see one CPU). fsync on everywhere (each system's default). "
          "100-byte values. corral and etcd over HTTP/1.1 keep-alive with wrk (one thread, one "
          "request in flight per connection); ZooKeeper with its C client (libzookeeper_st, async API, "
          "one poll loop, up to 8 sessions x window). Latency percentiles are wrk's, corrected for "
          "coordinated omission (a request that waited v stands also for the ones its connection "
          "could not send meanwhile, one per mean interval); the ZooKeeper driver applies the same "
          "correction to its samples, so the tails compare (before 2026-12-07 it did not, and "
          "ZooKeeper's p99 read low beside the others). "
          f"Each run lasts {cfg.get('seconds')} s ({cfg.get('sweep_seconds')} s in the concurrency sweep), "
          f"after a warm-up that is not recorded; {cfg.get('reps')} runs per figure ({cfg.get('sweep_reps')} in the sweep), "
          "systems taking turns (A B C, B C A, ...). Figures are medians with min..max. "
          "CPU % is of one core, from /proc (utime+stime); 'foreign' is the rest of the machine's busy CPU "
          "(other jobs on this shared VM). 'VM frozen' is time in which the host ran neither of the "
          "VM's CPUs (tools/bench/vmfreeze: late wake-ups of a real-time thread; this host caps the "
          "VM's CPU time per 100 ms, its own disk work included, and steal time reads 0), median ms per "
          "second with the longest freeze in any run: a run's p99 cannot be below its freezes when "
          "they hit 1% of its requests. 'limited by' is the server's core being >= 85% busy, "
          "else the client's, else foreign load, else the VM frozen >= 5% of the time, else fsync "
          "(writes) or round trips.", ""]
    all_sums = {}
    md += ["## Standalone", ""]
    conc = cfg.get("conc", 64)
    for wl in ("W1", "W2", "W3", "W5"):
        lines, sums = table(runs, "standalone", wl, conc)
        md += lines
        all_sums[("standalone", wl, conc)] = sums
    for wl in ("W4read", "W4write"):
        lines, sums = table(runs, "standalone", wl, 1)
        md += lines
        all_sums[("standalone", wl, 1)] = sums
    fs = raw.get("fsync", {})
    if fs:
        md += ["### Disk floor: one 100-byte write + fdatasync (tools/bench/fsyncfloor.c, "
               "on the servers' CPU when pinned; 'paced': 0.3 ms pause before each write, as one client's writes come)", "",
               "| way | p50 ms | p99 ms | p99.9 ms | per s |", "|---|---:|---:|---:|---:|"]
        for way, r in fs.items():
            md.append(f"| {way} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p999_ms']:.3f} | {r['per_s']:,.0f} |")
        md.append("")
    md += floor_beside_table(raw)

    md += wal_table(runs)

    # concurrency sweep + plot data
    concs = sorted({r["concurrency"] for r in runs if r["topology"] == "standalone"})
    md += ["### Throughput against concurrency (standalone, median ops/s)", "",
           "| workload | system | " + " | ".join(f"c={c}" for c in concs) + " |",
           "|---|---|" + "---:|" * len(concs)]
    dat = []
    for wl in ("W1", "W2", "W3"):
        for s in SYSTEMS:
            row = []
            for c in concs:
                w = wl if c != 1 else {"W1": "W4read", "W2": "W4write"}.get(wl)
                rs = [r["ops_per_s"] for r in runs if r["topology"] == "standalone" and r["workload"] == w
                      and r["concurrency"] == c and r["system"] == s]
                row.append(med(rs) if rs else None)
                if rs:
                    all_sums.setdefault(("sweep", wl, c), {})[s] = {"ops": med(rs)}
            if any(v is not None for v in row):
                md.append(f"| {wl} | {LABEL[s]} | " + " | ".join(f"{v:,.0f}" if v is not None else "-" for v in row) + " |")
        for c in concs:
            vals = [all_sums.get(("sweep", wl, c), {}).get(s, {}).get("ops") for s in SYSTEMS]
            dat.append((wl, c, vals))
    md += ["", "![throughput against concurrency](throughput.png)", ""]
    plot(dat, outdir)

    md += ["## 3-member clusters (load sent to the leader; all 3 members pinned to CPU 0)", ""]
    cluster_concs = sorted({r["concurrency"] for r in runs if r["topology"] == "cluster"
                            and r["workload"] in ("W2", "W3")})
    for wl, c in ([("W1", conc)] + [(w, k) for w in ("W2", "W3") for k in cluster_concs]
                  + [("W4write", 1)]):
        lines, sums = table(runs, "cluster", wl, c)
        md += lines
        all_sums[("cluster", wl, c)] = sums

    w6 = raw.get("watch", [])
    if w6:
        md += ["## W6 change-to-notification latency", "",
               "From the moment the set is written to the socket until a watcher has its whole notification. "
               "corral: `GET /v1/watch/bench/w` long-polls, etcd: `GET /v2/keys/bench/w?wait=true`, one keep-alive "
               "connection per watcher; ZooKeeper: one session per watcher, each with an exists watch. "
               "'ack' is the set's own reply.", "",
               "| system | watchers | rounds | p50 ms | p99 ms | max ms | set ack p50 ms | missed | server CPU s |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in w6:
            if "p50_ms" in r:
                md.append(f"| {LABEL[r['system']]} | {r['n']:,} | {r['rounds']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                          f"{r['max_ms']:.2f} | {r['ack_p50_ms']:.2f} | {int(r['missed'])} | {r['server_cpu_s']:.2f} |")
            else:
                md.append(f"| {LABEL[r['system']]} | {r['n']:,} | - | failed: {r.get('error', '')[:120]} | | | | | |")
        md.append("")

    w7 = raw.get("w7", [])
    if w7:
        md += ["## W7 memory and restart", "",
               "| system | znodes | load time s | RSS before MiB | RSS after MiB | bytes/znode (RSS) | "
               "ZK live heap after full GC: bytes/znode | data dir MiB | restart s | RSS after restart MiB |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in w7:
            if "error" in r:
                md.append(f"| {LABEL[r['system']]} | {r.get('nodes', 0):,} | failed: {r['error'][:120]} | | | | | | | |")
                continue
            heap = f"{r['heap_bytes_per_node']:.0f}" if r.get("heap_bytes_per_node") else "-"
            md.append(f"| {LABEL[r['system']]} | {r['nodes']:,} | {r['load_s']:.1f} | {r['rss_before_kib'] / 1024:.0f} | "
                      f"{r['rss_after_kib'] / 1024:.0f} | {r['bytes_per_node']:.0f} | {heap} | {r['disk_mib']:.0f} | "
                      f"{r['restart_s']:.2f} | {r['rss_restart_kib'] / 1024:.0f} |")
        md.append("")

    md += targets(all_sums, raw)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def floor_pairs(raw):
    """(rep, floor append p50, floor paced p50, corral W4write p50) for each repetition
    whose floor was measured right before corral's W4 write run."""
    pairs = []
    for f in raw.get("fsync_beside_w4", []):
        rs = [r for r in raw.get("runs", []) if r["topology"] == "standalone" and
              r["workload"] == "W4write" and r["system"] == "corral" and r["rep"] == f["rep"]]
        if rs and "append" in f["floors"]:
            pairs.append((f["rep"], f["floors"]["append"]["p50_ms"],
                          f["floors"].get("paced", {}).get("p50_ms"), rs[0]["p50_ms"]))
    return pairs


def floor_beside_table(raw):
    pairs = floor_pairs(raw)
    if not pairs:
        return []
    md = ["### W4 write beside the disk floor (the floor measured right before each corral W4 write run)", "",
          "| rep | append floor p50 ms | paced floor p50 ms | corral W4 write p50 ms | / append | / paced |",
          "|---:|---:|---:|---:|---:|---:|"]
    for rep, fa, fp, w in pairs:
        md.append(f"| {rep} | {fa:.3f} | {fp:.3f} | {w:.3f} | {w / fa:.2f}x | {w / fp:.2f}x |" if fp else
                  f"| {rep} | {fa:.3f} | - | {w:.3f} | {w / fa:.2f}x | - |")
    return md + [""]


def targets(S, raw):
    out = ["## Targets of issue 5", "", "| target | measured | holds |", "|---|---|---|"]
    cfgc = raw.get("config", {}).get("conc", 64)

    def ratio(key, o):
        g = S.get(key, {})
        if "corral" in g and o in g and g[o]["ops"]:
            return g["corral"]["ops"] / g[o]["ops"]
        return None

    r1 = [ratio(("standalone", "W1", cfgc), o) for o in ("etcd", "zk")]
    if all(r is not None for r in r1):
        out.append(f"| W1 reads >= 2x etcd and 2x ZooKeeper ({cfgc} in flight) | {r1[0]:.2f}x etcd, {r1[1]:.2f}x ZK | "
                   f"{verdict(min(r1) >= 2)} |")
    for wl in ("W2", "W3"):
        parts, ok, any_ = [], True, False
        for key in sorted(k for k in S if k[0] in ("standalone", "sweep") and k[1] == wl and k[2] >= 32):
            rr = [ratio(key, o) for o in ("etcd", "zk")]
            if all(r is not None for r in rr) and not (key[0] == "sweep" and key[2] == cfgc):
                any_ = True
                parts.append(f"c={key[2]}: {rr[0]:.2f}x etcd, {rr[1]:.2f}x ZK")
                ok = ok and min(rr) >= 2
        if any_:
            out.append(f"| {wl} fsynced writes >= 2x both at 32+ clients | {'; '.join(parts)} | {verdict(ok)} |")
    fs = raw.get("fsync", {}).get("append")
    w4 = S.get(("standalone", "W4write", 1), {}).get("corral")
    pairs = floor_pairs(raw)
    if pairs:
        ratios = [w / fa for _, fa, _, w in pairs]
        paced = [w / fp for _, _, fp, w in pairs if fp]
        out.append(f"| W4 single-client write p50 within 1.5x of write+fdatasync (append floor measured right "
                   f"before each of corral's {len(pairs)} W4 write runs) | median of the per-run ratios "
                   f"{med(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
                   + (f"; against the paced floor {med(paced):.2f}x" if paced else "")
                   + f" | {verdict(med(ratios) <= 1.5)} |")
    elif fs and w4:
        over = raw["fsync"].get("overwrite", fs)
        out.append(f"| W4 single-client write p50 within 1.5x of write+fdatasync (append floor p50 {fs['p50_ms']:.3f} ms; "
                   f"overwrite {over['p50_ms']:.3f} ms) | corral p50 {w4['p50']:.3f} ms = {w4['p50'] / fs['p50_ms']:.2f}x "
                   f"(p99 {w4['p99']:.2f} ms vs floor p99 {fs['p99_ms']:.2f} ms = {w4['p99'] / fs['p99_ms']:.2f}x)"
                   + (f"; against the paced floor (p50 {raw['fsync']['paced']['p50_ms']:.3f} ms): "
                      f"{w4['p50'] / raw['fsync']['paced']['p50_ms']:.2f}x" if "paced" in raw["fsync"] else "")
                   + " | "
                   f"{verdict(w4['p50'] <= 1.5 * fs['p50_ms'])} |")
    # Against standalone's median at the same writer count (the sweep's entries cover
    # every count, the main pass's included). Holds only if it holds at every count.
    parts, ok, any_ = [], True, False
    for wl in ("W2", "W3"):
        for key in sorted(k for k in S if k[0] == "cluster" and k[1] == wl):
            c = S[key].get("corral")
            s = S.get(("sweep", wl, key[2]), {}).get("corral")
            if c and s and s["ops"]:
                any_ = True
                parts.append(f"{wl} c={key[2]}: {c['ops']:,.0f} vs {s['ops']:,.0f}/s = "
                             f"{100 * c['ops'] / s['ops']:.0f}%")
                ok = ok and c["ops"] >= 0.7 * s["ops"]
    if any_:
        out.append(f"| 3-member cluster writes >= 70% of standalone corral | {'; '.join(parts)} | {verdict(ok)} |")
    for r in raw.get("watch", []):
        if r["system"] == "corral" and r["n"] == 10000:
            if "p99_ms" in r:
                out.append(f"| W6 10,000 watchers notified within 1 s, p99 | p99 {r['p99_ms']:.0f} ms "
                           f"(max {r['max_ms']:.0f} ms, missed {int(r['missed'])}) | "
                           f"{verdict(r['p99_ms'] <= 1000 and not r['missed'])} |")
            else:
                out.append("| W6 10,000 watchers notified within 1 s, p99 | driver failed | **NO** |")
    w7 = {r["system"]: r for r in raw.get("w7", []) if "error" not in r}
    if "corral" in w7:
        c = w7["corral"]
        if "zk" in w7:
            z = w7["zk"]
            zmin = min(x for x in (z["bytes_per_node"], z.get("heap_bytes_per_node") or z["bytes_per_node"]))
            out.append(f"| W7 memory per znode below ZooKeeper's ({c['nodes']:,} znodes) | corral {c['bytes_per_node']:.0f} B "
                       f"(RSS); ZK {z['bytes_per_node']:.0f} B (RSS), {z.get('heap_bytes_per_node') or 0:.0f} B (live heap after full GC) | "
                       f"{verdict(c['bytes_per_node'] < zmin)} |")
        out.append(f"| W7 restart at {c['nodes']:,} znodes under 5 s | {c['restart_s']:.2f} s | "
                   f"{verdict(c['restart_s'] < 5 and c['nodes'] >= 1000000)}"
                   f"{'' if c['nodes'] >= 1000000 else ' (only ' + format(c['nodes'], ',') + ' znodes: quick run)'} |")
    return out + [""]


def plot(dat, outdir):
    path = os.path.join(outdir, "throughput.dat")
    with open(path, "w") as f:
        for wl in ("W1", "W2", "W3"):
            f.write(f"# {wl}: concurrency corral etcd zk (ops/s, median; '-' = not measured)\n")
            for w, c, vals in dat:
                if w == wl:
                    f.write(f"{c} " + " ".join(f"{v:.0f}" if v else "-" for v in vals) + "\n")
            f.write("\n\n")
    if not shutil.which("gnuplot") or not any(v for _, _, vals in dat for v in vals):
        return
    script = f"""
set terminal pngcairo size 1500,480 font ",10"
set output '{os.path.join(outdir, "throughput.png")}'
set datafile missing '-'
set multiplot layout 1,3 title "Throughput against concurrency (standalone, servers on CPU 0, load on CPU 1)"
set logscale x 2
set xlabel "requests in flight"
set ylabel "ops/s (median)"
set key top left
set grid
do for [i=0:2] {{
  set title (i == 0 ? "W1 read one node" : i == 1 ? "W2 set over 1,000 nodes" : "W3 sequential create") noenhanced
  plot '{path}' index i using 1:2 with linespoints lw 2 title 'corral', \\
       '' index i using 1:3 with linespoints lw 2 title 'etcd v2', \\
       '' index i using 1:4 with linespoints lw 2 title 'ZooKeeper'
}}
unset multiplot
"""
    p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if p.returncode:
        print("gnuplot:", p.stderr[-500:])
