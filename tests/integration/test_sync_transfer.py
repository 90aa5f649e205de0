#!/usr/bin/python3
"""The speed goal of issue #23 in counts, not time: a sync of a snapshot
whose chunks are mostly present at a PBS (the group's previous snapshot is
there) makes the server receive at most 1.05x the encoded bytes of the
chunks it lacks, as the emulator counts the chunk uploads. Runs
bench/sync.py small (the same measurement also to a local store).

Usage: test_sync_transfer.py CAIRN_BINARY BENCH_SYNC_PY PBS_EMULATOR"""
import json
import subprocess
import sys

cairn, bench, emulator = sys.argv[1:4]
p = subprocess.run(['/usr/bin/python3', bench, '--cairn', cairn, '--emulator', emulator,
                    '--size-mb', '24', '--changed-pct', '2', '--json', '--max-ratio', '1.05'],
                   capture_output=True, text=True, timeout=1200)
print(p.stdout, p.stderr)
assert p.returncode == 0, 'bench/sync.py: exit %d' % p.returncode
out = json.loads(p.stdout)
for name in ('pbs', 'local'):
    r = out[name]
    # most of the snapshot is there: the previous snapshot's chunks were reused
    assert r['present-pct'] >= 60 and r['chunks-reused'] > 0, (name, r)
    assert 0 < r['missing-bytes'] <= r['transferred-bytes'] <= 1.05 * r['missing-bytes'], (name, r)
    assert r['cairn-bytes-sent'] == r['transferred-bytes'], (name, r)
print('all ok: pbs ratio %.3f, local ratio %.3f' % (out['pbs']['ratio'], out['local']['ratio']))
