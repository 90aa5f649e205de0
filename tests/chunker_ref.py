#!/usr/bin/python3
"""Independent reference of the PBS buzhash chunker, for tests.

Written from upstream proxmox-backup pbs-datastore/src/chunker.rs
(Chunker::new, scan, shall_break; commit 4940514b "bump version to 3.2.4-1")
statement by statement, and pbs-client/src/chunk_stream.rs (ChunkStream:
the rest of the buffer after the last boundary is the last chunk).  The
table is not copied here: it is parsed from ../shared/spec/chunker.md or, if
that is absent, from chunker/cn_chunker_table.h, and checked against the
spec's SHA-256 check value, so a corrupt table cannot go unnoticed.

Usage:
  chunker_ref.py boundaries FILE [AVG]   end offsets, one per line
  chunker_ref.py gen KIND SIZE SEED OUT  write a deterministic test file
                                         (KIND: random | runs | text)
  chunker_ref.py vectors                 print boundaries of the spec's
                                         inputs A, B, C as (start, length)

`vectors` re-derives the test vectors pinned in tests/unit/test_chunker.c
(input B takes about a minute in CPython)."""

import hashlib
import os
import re
import struct
import sys

TABLE_SHA256 = "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660"
HERE = os.path.dirname(os.path.abspath(__file__))


def load_table():
    candidates = [
        (os.path.join(HERE, "..", "..", "..", "shared", "spec", "chunker.md"), r"^\s*\d+:((?:\s+0x[0-9a-f]{8})+)\s*$"),
        (os.path.join(HERE, "..", "chunker", "cn_chunker_table.h"), r"^\t((?:X\(0x[0-9a-f]{8}\)\s*)+)\\$"),
    ]
    for path, pat in candidates:
        if not os.path.exists(path):
            continue
        vals = []
        for line in open(path):
            m = re.match(pat, line)
            if m:
                vals += [int(x, 16) for x in re.findall(r"0x[0-9a-f]{8}", m.group(1))]
        if len(vals) == 256:
            break
    else:
        sys.exit("chunker_ref: buzhash table not found")
    digest = hashlib.sha256(b"".join(struct.pack("<I", v) for v in vals)).hexdigest()
    if digest != TABLE_SHA256:
        sys.exit("chunker_ref: table check value mismatch")
    return vals


BUZHASH_TABLE = load_table()
WINDOW = 64


def rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


class Chunker:
    def __init__(self, avg):
        if bin(avg).count("1") != 1:
            raise ValueError("got unexpected chunk size - not a power of two.")
        self.h = 0
        self.window_size = 0
        self.chunk_size = 0
        self.chunk_size_min = avg >> 2
        self.chunk_size_max = avg << 2
        self.break_test_mask = avg * 2 - 1
        self.break_test_minimum = self.break_test_mask - 2
        self.window = bytearray(WINDOW)

    def shall_break(self):
        if self.chunk_size >= self.chunk_size_max:
            return True
        if self.chunk_size < self.chunk_size_min:
            return False
        return (self.h & self.break_test_mask) >= self.break_test_minimum

    def scan(self, data):
        T = BUZHASH_TABLE
        data_len = len(data)
        pos = 0
        if self.window_size < WINDOW:
            need = WINDOW - self.window_size
            copy_len = need if need < data_len else data_len
            for _ in range(copy_len):
                byte = data[pos]
                self.window[self.window_size] = byte
                self.h = rotl(self.h, 1) ^ T[byte]
                pos += 1
                self.window_size += 1
            self.chunk_size += copy_len
            if self.window_size < WINDOW:
                return 0
        idx = self.chunk_size & 0x3F
        # the loop of upstream, with the attributes in locals for speed
        h, cs, window = self.h, self.chunk_size, self.window
        cmin, cmax = self.chunk_size_min, self.chunk_size_max
        mask, minimum = self.break_test_mask, self.break_test_minimum
        while pos < data_len:
            enter = data[pos]
            leave = window[idx]
            h = rotl(h, 1) ^ T[leave] ^ T[enter]
            cs += 1
            pos += 1
            window[idx] = enter
            if cs >= cmax or (cs >= cmin and (h & mask) >= minimum):
                self.h = 0
                self.chunk_size = 0
                self.window_size = 0
                return pos
            idx = cs & 0x3F
        self.h, self.chunk_size = h, cs
        return 0


def boundaries(data, avg):
    """End offsets of the chunks ChunkStream cuts from data (fed at once)."""
    c = Chunker(avg)
    out, pos = [], 0
    while pos < len(data):
        k = c.scan(memoryview(data)[pos:])
        if k == 0:
            break
        pos += k
        out.append(pos)
    if pos < len(data):
        out.append(len(data))
    return out


def splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def generate(kind, size, seed):
    rnd = bytearray(hashlib.shake_256(b"cairn%d" % seed).digest(size))
    if kind == "random":
        return bytes(rnd)
    s = seed
    if kind == "runs":
        pos = 0
        while pos < size:
            s, r = splitmix(s)
            pos += r % (size // 4 + 1)
            run = (r >> 24) % (size // 3 + 1) + 1
            rnd[pos:pos + run] = bytes([(r >> 40) & 0xFF if r & 2 else 0]) * len(rnd[pos:pos + run])
            pos += run
        return bytes(rnd[:size])
    if kind == "text":
        words = [b"the ", b"backup ", b"chunk ", b"proxmox ", b"\n", b"static int ", b"0x%08x "]
        out = bytearray()
        while len(out) < size:
            s, r = splitmix(s)
            w = words[r % len(words)]
            out += (w % (r >> 32)) if b"%" in w else w
            if r % 500 == 0:
                out += rnd[len(out):len(out) + (r >> 20) % 3000]
        return bytes(out[:size])
    raise SystemExit("unknown kind " + kind)


def vectors():
    a = b"".join(struct.pack("<I", i) for i in range(256 * 1024))
    x, words = 1, []
    for _ in range(32 * 1024 * 1024 // 4):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        words.append(x)
    b = struct.pack("<%dI" % len(words), *words)
    c = bytes(20 * 1024 * 1024)
    for name, data, avg in (("A", a, 64 * 1024), ("B", b, 4 << 20), ("C", c, 4 << 20)):
        ends = boundaries(data, avg)
        starts = [0] + ends[:-1]
        print(name + ": " + " ".join("(%d,%d)" % (s, e - s) for s, e in zip(starts, ends)))


def main(argv):
    if len(argv) >= 2 and argv[0] == "boundaries":
        avg = int(argv[2]) if len(argv) > 2 else 4 << 20
        with open(argv[1], "rb") as f:
            data = f.read()
        sys.stdout.write("".join("%d\n" % e for e in boundaries(data, avg)))
    elif len(argv) == 5 and argv[0] == "gen":
        with open(argv[4], "wb") as f:
            f.write(generate(argv[1], int(argv[2]), int(argv[3])))
    elif argv == ["vectors"]:
        vectors()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
