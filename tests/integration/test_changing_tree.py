#!/usr/bin/python3
"""A source tree that changes under a running backup, and FIFOs where an
archive is expected, with the real cairn binary:
  - pxar list/extract, catalog list given a FIFO (or a directory) as the
    archive -> exit 1 at once with "not a regular file", no hang
  - cairn backup while a helper thread keeps swapping entries between file,
    directory, symlink and FIFO (.pxarexclude files included) -> every run
    exits 0 or 3 (never 1, never hangs), and every snapshot verifies,
    restores, and holds the entries that were left alone intact
Each cairn run is bounded by a generous timeout: a hang is a failure.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import cairn_test_lib as t

t.setup(sys.argv)
# on tmpfs when there is one: a store's 65536 chunk directories cost
# minutes to create and remove on a busy disk
work = (tempfile.mkdtemp(prefix='cairn_it_', dir='/dev/shm') if os.access('/dev/shm', os.W_OK)
        else t.tmpdir())
RUN_TIMEOUT = 180  # seconds; a run takes about one on a loaded machine


def run_bounded(*args):
    try:
        return t.run(*args, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError('cairn %s did not finish in %d s (blocked?)' %
                             (' '.join(map(str, args)), RUN_TIMEOUT))


# ---- a FIFO or a directory given where an archive file is expected ----
fifo = os.path.join(work, 'archive.pxar')
os.mkfifo(fifo)
adir = os.path.join(work, 'dir.pxar')
os.mkdir(adir)
for bad in (fifo, adir):
    for args in (('pxar', 'list', bad), ('pxar', 'extract', bad, os.path.join(work, 'x')),
                 ('catalog', 'list', bad)):
        p = run_bounded(*args)
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert 'not a regular file' in p.stderr, (args, p.stderr)
    print('%s as archive: exit 1, "not a regular file"' % ('fifo' if bad == fifo else 'directory'))
assert not os.path.exists(os.path.join(work, 'x')) or not os.listdir(os.path.join(work, 'x'))

# a FIFO as the payload stream, next to a real archive
src0 = os.path.join(work, 'src0')
os.makedirs(src0)
with open(os.path.join(src0, 'f'), 'w') as f:
    f.write('data')
real = os.path.join(work, 'real.pxar')
p = run_bounded('pxar', 'create', real, src0)
assert p.returncode == 0, p.stderr
p = run_bounded('pxar', 'list', real, '--payload-input', fifo)
assert p.returncode == 1 and 'not a regular file' in p.stderr, (p.returncode, p.stderr)
print('fifo as payload input: exit 1')

# ---- backups of a tree that keeps changing ----
src = os.path.join(work, 'src')
staging = os.path.join(work, 'staging')  # same file system, outside the source
os.makedirs(staging)
many = os.path.join(src, 'many')
os.makedirs(many)
static = {}
for i in range(600):
    rel = 'many/f%04d' % i
    data = (b'%d ' % i) * (1 + i % 50)
    with open(os.path.join(src, rel), 'wb') as f:
        f.write(data)
    static[rel] = data
for d in ('a', 'b'):
    os.makedirs(os.path.join(src, 'sub' + d))
    with open(os.path.join(src, 'sub' + d, 'keep'), 'wb') as f:
        f.write(b'kept')
    static['sub%s/keep' % d] = b'kept'
# the swapped paths: spread over the sorted listing of many/, and the
# .pxarexclude files read when the walker enters a directory
swapped = ['many/f%04d_s' % i for i in range(0, 600, 40)]
swapped += ['many/.pxarexclude', 'suba/.pxarexclude', 'subb/.pxarexclude']
KINDS = ('file', 'dir', 'symlink', 'fifo')


def make(path, kind, n, name):
    if kind == 'file':
        with open(path, 'wb') as f:
            f.write(b'*.nothing\n' if name == '.pxarexclude' else b'swap %d\n' % n)
    elif kind == 'dir':
        os.mkdir(path)
        with open(os.path.join(path, 'inner'), 'wb') as f:
            f.write(b'inner')
    elif kind == 'symlink':
        os.symlink('f0000' if n % 2 else name, path)  # or a loop, once in place
    else:
        os.mkfifo(path)


def remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


stop = threading.Event()
swaps = [0]


def swapper():
    n = 0
    while not stop.is_set():
        for i, rel in enumerate(swapped):
            path = os.path.join(src, rel)
            old = KINDS[(n + i) % 4]
            new = KINDS[(n + i + 1) % 4]
            tmp = os.path.join(staging, 't%d' % i)
            remove(tmp)
            make(tmp, new, n, os.path.basename(rel))
            if old == 'dir' or new == 'dir':
                remove(path)   # rename cannot put a directory over a file or back
            os.rename(tmp, path)  # else atomic: the name never vanishes
            swaps[0] += 1
        n += 1
        time.sleep(0.005)  # leave the machine to cairn between rounds


for i, rel in enumerate(swapped):
    make(os.path.join(src, rel), KINDS[i % 4], 0, os.path.basename(rel))
th = threading.Thread(target=swapper, daemon=True)
th.start()
store = os.path.join(work, 'store')
snaps = []
codes = []
try:
    for r in range(5):
        t0 = time.monotonic()
        p = run_bounded('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'race%d' % r,
                        '--output-format', 'json')
        codes.append(p.returncode)
        assert p.returncode in (0, 3), 'run %d: exit %d\n%s' % (r, p.returncode, p.stderr)
        out = json.loads(p.stdout)
        assert (p.returncode == 3) == (out['skipped'] > 0), (p.returncode, out)
        snaps.append(out['snapshot'])
        print('run %d: exit %d, %d skipped, %.1f s' % (r, p.returncode, out['skipped'], time.monotonic() - t0))
finally:
    stop.set()
    th.join(timeout=60)
assert swaps[0] > 0
print('backups while %d swaps ran: exit codes %s' % (swaps[0], codes))

t0 = time.monotonic()
p = run_bounded('verify', '--store', store)
assert p.returncode == 0, p.stderr
for snap in snaps:
    p = run_bounded('restore', snap, 'data.pxar', '--verify-only', '--store', store)
    assert p.returncode == 0, (snap, p.stderr)
    dest = os.path.join(work, 'restore-' + snap.replace('/', '_'))
    p = run_bounded('restore', snap, 'data.pxar', dest, '--store', store)
    assert p.returncode == 0, (snap, p.stderr)
    for rel, data in static.items():
        with open(os.path.join(dest, rel), 'rb') as f:
            assert f.read() == data, (snap, rel)
    # what was stored of a swapped path is one whole object: a file with
    # one of the contents it had, a directory with its file, a symlink
    for rel in swapped:
        q = os.path.join(dest, rel)
        if os.path.islink(q):
            assert os.readlink(q) in ('f0000', os.path.basename(rel)), (snap, rel)
        elif os.path.isdir(q):
            assert os.listdir(q) in ([], ['inner']), (snap, rel, os.listdir(q))
        elif os.path.isfile(q):
            with open(q, 'rb') as f:
                c = f.read()
            assert c == b'*.nothing\n' or (c.startswith(b'swap ') and c.endswith(b'\n')), (snap, rel, c)
print('%d snapshots verify and restore (%.1f s)' % (len(snaps), time.monotonic() - t0))
shutil.rmtree(work)
print('OK')
