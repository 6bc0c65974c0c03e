#!/usr/bin/env python3
"""Data encoding: UTF-8 text as text, other bytes as base64, ?encoding=base64 forcing."""

import base64
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corral_harness import ServerTestCase, run_tests  # noqa: E402


def b64(data):
    return base64.b64encode(data).decode("ascii")


class DataEncodingTest(ServerTestCase):
    server_name = "data_encoding"

    def read(self, path, **kw):
        r = self.c.get(path, **kw)
        self.assertEqual(r.status, 200, r)
        return r.body

    def assertReadsAs(self, path, data, encoding, length):
        body = self.read(path)
        self.assertEqual((body["data"], body["encoding"]), (data, encoding))
        self.assertEqual(body["stat"]["dataLength"], length)

    def test_utf8_text_round_trips_as_text(self):
        p = self.fresh()
        for i, text in enumerate(["plain ascii", "żółw ✓ 🐢", "tab\tnewline\n\"quote\" \\",
                                  "\u0000nul inside", "日本語テキスト"]):
            with self.subTest(text=text):
                path = "%s/t%d" % (p, i)
                r = self.c.create(path, text)
                self.assertEqual(r.status, 201, r)
                n = len(text.encode("utf-8"))
                self.assertEqual(r.body["stat"]["dataLength"], n)
                self.assertReadsAs(path, text, "utf-8", n)

    def test_explicit_utf8_encoding_is_text(self):
        p = self.fresh()
        r = self.c.create(p + "/u", "żółw", encoding="utf-8")
        self.assertEqual(r.status, 201, r)
        self.assertReadsAs(p + "/u", "żółw", "utf-8", 7)

    def test_base64_input_that_is_valid_utf8_comes_back_as_text(self):
        p = self.fresh()
        raw = "żółw ✓ 🐢".encode("utf-8")
        self.assertEqual(self.c.create(p + "/n", b64(raw), encoding="base64").status, 201)
        self.assertReadsAs(p + "/n", "żółw ✓ 🐢", "utf-8", len(raw))

    def test_invalid_utf8_bytes_come_back_base64(self):
        p = self.fresh()
        cases = [b"\xff\xfe\x00\x01", b"abc\x80", b"\xc3\x28", b"\xed\xa0\x80",  # surrogate
                 b"\xf4\x90\x80\x80", b"\xc0\xaf", bytes(range(256))]
        for i, raw in enumerate(cases):
            with self.subTest(raw=raw[:8]):
                path = "%s/b%d" % (p, i)
                r = self.c.create(path, b64(raw), encoding="base64")
                self.assertEqual(r.status, 201, r)
                self.assertEqual(r.body["stat"]["dataLength"], len(raw))
                self.assertReadsAs(path, b64(raw), "base64", len(raw))

    def test_set_with_base64_replaces_text(self):
        p = self.fresh()
        self.c.create(p + "/n", "text")
        r = self.c.set(p + "/n", b64(b"\x00\xff"), encoding="base64")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["stat"]["dataLength"], 2)
        self.assertReadsAs(p + "/n", "AP8=", "base64", 2)
        self.c.set(p + "/n", "back to text")
        self.assertReadsAs(p + "/n", "back to text", "utf-8", 12)

    def test_query_encoding_base64_forces_base64(self):
        p = self.fresh()
        self.c.create(p + "/n", "żółw")
        body = self.read(p + "/n", encoding="base64")
        self.assertEqual((body["data"], body["encoding"]), (b64("żółw".encode()), "base64"))
        body = self.read(p + "/n", encoding="base64", children=True)
        self.assertEqual(body["encoding"], "base64")
        self.assertEqual(body["children"], [])

    def test_unknown_query_encoding_is_bad_arguments(self):
        p = self.fresh()
        self.c.create(p + "/n", "x")
        self.assertError(self.c.get(p + "/n", encoding="hex"), 400, "BAD_ARGUMENTS")

    def test_empty_data(self):
        p = self.fresh()
        self.c.create(p + "/a", "")
        self.assertReadsAs(p + "/a", "", "utf-8", 0)
        self.c.create(p + "/b", "", encoding="base64")
        self.assertReadsAs(p + "/b", "", "utf-8", 0)
        body = self.read(p + "/b", encoding="base64")
        self.assertEqual((body["data"], body["encoding"]), ("", "base64"))
        self.c.create(p + "/c")  # no data field at all
        self.assertReadsAs(p + "/c", "", "utf-8", 0)
        self.c.set(p + "/c", "x")
        self.c.set(p + "/c", "")
        self.assertReadsAs(p + "/c", "", "utf-8", 0)

    def test_bad_base64_is_bad_arguments(self):
        p = self.fresh()
        for i, bad in enumerate(["!!!!", "abc", "a===", "YW Jj", "QR=="]):
            with self.subTest(data=bad):
                r = self.c.create("%s/x%d" % (p, i), bad, encoding="base64")
                self.assertError(r, 400, "BAD_ARGUMENTS")
        self.assertEqual(self.c.children(p).body["children"], [])

    def test_one_mib_random_binary_round_trips(self):
        p = self.fresh()
        raw = random.Random(1234).randbytes(1024 * 1024)
        r = self.c.create(p + "/big", b64(raw), encoding="base64")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["dataLength"], len(raw))
        body = self.read(p + "/big")
        self.assertEqual(body["encoding"], "base64")
        self.assertEqual(base64.b64decode(body["data"]), raw)
        raw2 = random.Random(99).randbytes(1024 * 1024)
        self.assertEqual(self.c.set(p + "/big", b64(raw2), encoding="base64").status, 200)
        self.assertEqual(self.c.data_of(p + "/big"), raw2)

    def test_large_utf8_text_round_trips(self):
        p = self.fresh()
        text = "🐢" * (1024 * 1024 // 4)   # exactly 1 MiB of 4-byte characters
        r = self.c.create(p + "/t", text)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["stat"]["dataLength"], 1024 * 1024)
        self.assertReadsAs(p + "/t", text, "utf-8", 1024 * 1024)


if __name__ == "__main__":
    run_tests()
