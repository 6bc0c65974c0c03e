#!/usr/bin/env python3
"""Recovery from a damaged data dir: a torn or corrupt WAL tail is cut (and said so on
stderr), a corrupt snapshot is skipped for an older one or the log; afterwards the
server serves writes, durably.

WAL format (engine/wal.h): segments "wal-<20 digits>.log", a 16-byte header, then
records of a 28-byte header (crc32c u32, payload length u32, ...) and the payload,
then zeros up to the segment size (segments are preallocated; a zero tail is not damage).
Snapshots (engine/snapshot.h): "snap-<20 digits>.snap", 48-byte header then body."""

import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import Server, run_tests, wait_until  # noqa: E402

WAL_HEADER = 16
RECORD_HEADER = 28
SNAP_HEADER = 48
# A line saying the log was cut, not a clean start's "log cut 0 bytes" summary.
CUT_RX = r"\bcut\b(?!\s+0\b)"
SNAP_RX = r"snapshot.*(corrupt|skipping)|(corrupt|skipping).*snapshot"


def wal_records(path):
    """[(offset, payload length)] of the complete records of one WAL segment, up to its
    zero tail (a record header is never all zero: its version byte is 1)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < WAL_HEADER or blob[:6] != b"CRLWAL":
        raise AssertionError("%s: not a WAL segment" % path)
    out, off = [], WAL_HEADER
    while off + RECORD_HEADER <= len(blob):
        if not any(blob[off:off + RECORD_HEADER]):
            break
        (length,) = struct.unpack_from("<I", blob, off + 4)
        if off + RECORD_HEADER + length > len(blob):
            break
        out.append((off, length))
        off += RECORD_HEADER + length
    return out


def last_wal_record(server):
    """(segment path, offset, payload length) of the last record in the data dir."""
    for seg in reversed(server.files("wal-", ".log")):
        recs = wal_records(seg)
        if recs:
            return (seg,) + recs[-1]
    raise AssertionError("no WAL record in %s: %s" % (server.data_dir,
                                                      os.listdir(server.data_dir)))


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))
        f.flush()
        os.fsync(f.fileno())


def truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())


def snap_zxid(path):
    return int(os.path.basename(path)[len("snap-"):-len(".snap")])


class RecoveryDamageTest(unittest.TestCase):
    maxDiff = None

    def start(self, name, *args):
        self.server = Server(name, args)
        self.server.start()
        self.c = self.server.client()
        return self.server

    def tearDown(self):
        if getattr(self, "server", None) is not None and self.server.running():
            self.server.kill9()

    def assertLogSays(self, pattern):
        """The latest start logged a line matching pattern, and the first start (on a
        fresh, undamaged data dir) did not: the line is about the damage."""
        self.server.wait_for_log(pattern, timeout=2)
        self.assertEqual(self.server.log_lines(pattern, index=0), [],
                         "an undamaged start already logs %r" % pattern)

    def populate(self, prefix, k):
        """Creates prefix and k children with distinct data; returns {path: data}."""
        self.assertEqual(self.c.create(prefix, "root").status, 201)
        written = {}
        for i in range(k):
            path, data = "%s/n%04d" % (prefix, i), "value-%d-%s" % (i, "x" * (i % 7))
            r = self.c.create(path, data)
            self.assertEqual(r.status, 201, r)
            written[path] = data
        return written

    def assertPresent(self, written, except_last=False):
        paths = sorted(written)
        for path in paths[:-1] if except_last else paths:
            self.assertEqual(self.c.data_of(path), written[path].encode(), path)
        if except_last:
            got = self.c.data_of(paths[-1])
            self.assertIn(got, (None, written[paths[-1]].encode()), paths[-1])

    def assertServesWritesDurably(self, prefix):
        r = self.c.create(prefix + "/after-recovery", "new")
        self.assertEqual(r.status, 201, r)
        r = self.c.set(prefix + "/after-recovery", "newer", version=0)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.server.restart(), 0)
        self.assertEqual(self.c.data_of(prefix + "/after-recovery"), b"newer")

    def damage_wal_tail_and_restart(self, name, damage):
        self.start(name)
        written = self.populate("/r", 30)
        self.server.kill9()  # the WAL is left exactly as written (every write was acked)
        seg, off, length = last_wal_record(self.server)
        damage(seg, off, length)
        self.server.start()
        self.assertLogSays(CUT_RX)
        self.assertPresent(written, except_last=True)
        self.assertEqual(self.c.data_of("/r"), b"root")
        self.assertServesWritesDurably("/r")
        self.assertPresent(written, except_last=True)
        self.assertEqual(self.server.stop(), 0)
        self.server.cleanup()

    def test_torn_last_wal_record_is_cut(self):
        self.damage_wal_tail_and_restart(
            "recovery_wal_torn",
            lambda seg, off, length: truncate(seg, off + (RECORD_HEADER + length) // 2))

    def test_corrupt_last_wal_record_is_cut(self):
        def corrupt(seg, off, length):
            flip_byte(seg, off + RECORD_HEADER + length // 2 if length else off)
        self.damage_wal_tail_and_restart("recovery_wal_flip", corrupt)

    def test_garbage_appended_after_last_record_is_cut(self):
        def garbage(seg, off, length):
            with open(seg, "ab") as f:
                f.write(os.urandom(100))
                os.fsync(f.fileno())
        self.start("recovery_wal_garbage")
        written = self.populate("/g", 10)
        self.server.kill9()
        garbage(*last_wal_record(self.server))
        self.server.start()
        self.assertLogSays(CUT_RX)
        self.assertPresent(written)  # the garbage held no record: nothing is lost
        self.assertServesWritesDurably("/g")
        self.assertEqual(self.server.stop(), 0)
        self.server.cleanup()

    def snapshot_scenario(self, name, damage, forked=False):
        """forked: the snapshots are written by a forked child (an image over
        --snapshot-inline-bytes), else encoded by the server itself (a small image); the
        fallback after the damage reads one written the same way."""
        inline_limit = "0" if forked else "1048576"
        self.start(name, "--snapshot-every", "50", "--snapshot-inline-bytes", inline_limit)
        written = self.populate("/s", 220)
        last_zxid = self.c.health().zxid
        # Snapshots are written in the background, one at a time; one that comes due
        # while another is written is taken when that one ends, not at the next write.
        # So once the writes stop, the newest snapshot is less than --snapshot-every
        # txns behind the last one.
        wait_until(lambda: any(snap_zxid(s) > last_zxid - 50
                               for s in self.server.files("snap-", ".snap")),
                   10, message="a snapshot less than 50 txns behind zxid %d" % last_zxid)
        self.server.wait_for_log(r"snapshot at zxid [0-9]+:", timeout=5)
        taken = self.server.log_lines(r"snapshot at zxid [0-9]+:")
        self.assertTrue(taken, "no snapshot was logged")
        for line in taken:
            self.assertEqual("encoded on the loop" not in line, forked, line)
            self.assertEqual("paused" in line and "to fork" in line, forked, line)
        # What the snapshot cost the server (a fork, or encoding on the loop) is in the
        # stats, as Redis's latest_fork_usec: an operator's first question on a stall.
        stats = self.c.request("GET", "/v1/stats")
        self.assertEqual(stats.status, 200, stats)
        self.assertGreater(stats.body["last_snapshot_pause_us"], 0, stats.body)
        self.assertLess(stats.body["last_snapshot_pause_us"], 5_000_000, stats.body)
        self.assertEqual(self.server.stop(), 0)
        snaps = self.server.files("snap-", ".snap")
        newest = max(snaps, key=snap_zxid)
        damage(newest)
        self.server.start()
        self.assertLogSays(SNAP_RX)
        self.assertPresent(written)
        self.assertGreaterEqual(self.c.health().zxid, last_zxid)
        self.assertServesWritesDurably("/s")
        self.assertPresent(written)
        self.assertEqual(self.server.stop(), 0)
        self.server.cleanup()

    def test_corrupt_newest_snapshot_falls_back(self):
        def corrupt(path):
            size = os.path.getsize(path)
            self.assertGreater(size, SNAP_HEADER + 8, path)
            flip_byte(path, SNAP_HEADER + (size - SNAP_HEADER) // 2)
        self.snapshot_scenario("recovery_snap_flip", corrupt)

    def test_truncated_newest_snapshot_falls_back(self):
        self.snapshot_scenario("recovery_snap_trunc",
                               lambda path: truncate(path, os.path.getsize(path) // 2),
                               forked=True)

    def test_snapshot_with_corrupt_header_falls_back(self):
        self.snapshot_scenario("recovery_snap_header", lambda path: flip_byte(path, 20))


if __name__ == "__main__":
    run_tests()
