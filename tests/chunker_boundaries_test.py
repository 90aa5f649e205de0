#!/usr/bin/python3
"""Integration test: `bench/chunker --boundaries FILE --avg-size N` prints
exactly the boundaries of the independent Python reference
(tests/chunker_ref.py) on generated files, and handles edge cases.

Usage: chunker_boundaries_test.py PATH_TO_CHUNKER_BINARY"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chunker_ref  # noqa: E402

exe = sys.argv[1]
failures = 0


def run(path, avg=None):
    cmd = [exe, "--boundaries", path] + (["--avg-size", str(avg)] if avg else [])
    return subprocess.run(cmd, capture_output=True)


def check(name, cond, detail=""):
    global failures
    if not cond:
        failures += 1
        print("FAIL %s %s" % (name, detail))
    else:
        print("ok   %s" % name)


with tempfile.TemporaryDirectory() as d:
    cases = [("random", 2_500_000, 65536), ("runs", 3_000_000, 65536),
             ("text", 2_000_000, 131072), ("random", 1_200_000, 262144)]
    for i, (kind, size, avg) in enumerate(cases):
        path = os.path.join(d, "%s%d.bin" % (kind, i))
        data = chunker_ref.generate(kind, size, 100 + i)
        with open(path, "wb") as f:
            f.write(data)
        want = "".join("%d\n" % e for e in chunker_ref.boundaries(data, avg))
        r = run(path, avg)
        check("%s %d avg %d (%d chunks)" % (kind, size, avg, want.count("\n")),
              r.returncode == 0 and r.stdout.decode() == want,
              "rc=%d stderr=%r" % (r.returncode, r.stderr[:200]))
    # spec input A (upstream's own test pattern): the reference and the
    # binary both give the spec's vector, derived by running upstream's code
    a = os.path.join(d, "input_a")
    with open(a, "wb") as f:
        f.write(b"".join(i.to_bytes(4, "little") for i in range(256 * 1024)))
    spec_a = "143377\n405521\n667665\n929809\n1048576\n"
    with open(a, "rb") as f:
        ref_a = "".join("%d\n" % e for e in chunker_ref.boundaries(f.read(), 65536))
    check("input A: python reference = spec", ref_a == spec_a, repr(ref_a))
    r = run(a, 65536)
    check("input A: binary = spec", r.stdout.decode() == spec_a, repr(r.stdout))
    # default average (4 MiB): a 20 MiB run of zeros cuts at 16 MiB (spec input C)
    zeros = os.path.join(d, "zeros")
    with open(zeros, "wb") as f:
        f.truncate(20 * 1024 * 1024)
    r = run(zeros)
    check("zeros default avg", r.stdout == b"16777216\n20971520\n", repr(r.stdout))
    empty = os.path.join(d, "empty")
    open(empty, "wb").close()
    r = run(empty)
    check("empty file: no chunks", r.returncode == 0 and r.stdout == b"", repr(r.stdout))
    one = os.path.join(d, "one")
    with open(one, "wb") as f:
        f.write(b"x")
    r = run(one, 65536)
    check("1-byte file", r.returncode == 0 and r.stdout == b"1\n", repr(r.stdout))
    for bad in (1000, 65537, 8 << 20):
        r = run(one, bad)
        check("avg %d refused" % bad, r.returncode != 0 and r.stdout == b"" and b"average" in r.stderr,
              repr(r.stderr))
    r = run(os.path.join(d, "missing"))
    check("missing file", r.returncode != 0 and r.stdout == b"")

print("%d failures" % failures)
sys.exit(1 if failures else 0)
