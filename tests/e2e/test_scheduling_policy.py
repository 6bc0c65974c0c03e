#!/usr/bin/env python3
"""corrald's threads run under the scheduling policy --scheduling-policy names: normal
(SCHED_OTHER, the default) or batch (SCHED_BATCH).

What an operator would check: by default the server runs under the normal policy (batch
makes it much slower beside other busy programs, main.c); with batch, every thread of
the running server (the loop, libuv's pool that writes the log, and in a cluster
nanomsg's thread) has it, because a thread that kept the normal policy would still
preempt the others on wake-up; a bad value is refused at start with a message that
names the option; --help shows the default. And `top -H` tells the threads apart: the
pool's threads, which write the log, are named corral-worker, while the main thread keeps
the name the process is known by."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_harness import Cluster  # noqa: E402
from corral_harness import Server, corrald_binary, run_tests  # noqa: E402


def thread_policies(pid):
    """{thread id: policy} of every thread of process pid, from the kernel."""
    tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
    return {tid: os.sched_getscheduler(tid) for tid in tids}


def thread_names(pid):
    """{thread id: name} of every thread of process pid (/proc/PID/task/TID/comm)."""
    names = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            names[int(tid)] = f.read().strip()
    return names


class SchedulingPolicyTest(unittest.TestCase):
    def write_then_check_threads(self, client, pids, want, least_threads):
        # Writes start the log's worker threads: the policy must reach them too.
        for i in range(20):
            self.assertEqual(client.create("/n%d" % i, "x").status, 201)
        for pid in pids:
            policies = thread_policies(pid)
            self.assertGreaterEqual(len(policies), least_threads, policies)
            self.assertEqual(set(policies.values()), {want}, policies)

    def check_running_server(self, name, extra_args, want):
        server = Server(name, extra_args)
        server.start()
        try:
            # the loop and at least one log worker
            self.write_then_check_threads(server.client(), [server.pid], want, 2)
        finally:
            self.assertEqual(server.stop(), 0)
        server.cleanup()

    def test_log_workers_are_named_and_the_process_keeps_its_name(self):
        server = Server("thread_names", ())
        server.start()
        try:
            for i in range(20):
                self.assertEqual(server.client().create("/t%d" % i, "x").status, 201)
            names = thread_names(server.pid)
            self.assertEqual(names[server.pid], "corrald", names)  # what ps and pgrep show
            self.assertIn("corral-worker", names.values(), names)
        finally:
            self.assertEqual(server.stop(), 0)
        server.cleanup()

    def test_default_is_normal_on_every_thread(self):
        self.check_running_server("sched_default", (), os.SCHED_OTHER)

    def test_batch_reaches_every_thread(self):
        self.check_running_server("sched_batch", ("--scheduling-policy", "batch"),
                                  os.SCHED_BATCH)

    def test_cluster_members_run_batch_including_the_network_thread(self):
        cluster = Cluster("sched_cluster", 3, ("--scheduling-policy", "batch"),
                          proxies=False)
        try:
            leader = cluster.start().wait_leader()
            # the loop, nanomsg's worker and at least one log worker in each member
            self.write_then_check_threads(leader.client(), [m.pid for m in cluster],
                                          os.SCHED_BATCH, 3)
        except BaseException:
            cluster.mark_failed()
            raise
        finally:
            cluster.cleanup()

    def test_bad_value_is_refused_with_the_option_named(self):
        r = subprocess.run([corrald_binary(), "--scheduling-policy", "fast"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("bad value 'fast' for --scheduling-policy", r.stderr)

    def test_help_shows_the_choices_and_default(self):
        r = subprocess.run([corrald_binary(), "--help"], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(r.returncode, 0, r)
        line = [ln for ln in r.stdout.splitlines() if "--scheduling-policy" in ln]
        self.assertEqual(len(line), 1, r.stdout)
        self.assertIn("(default: normal)", line[0])
        self.assertIn("batch", line[0])


if __name__ == "__main__":
    run_tests()
