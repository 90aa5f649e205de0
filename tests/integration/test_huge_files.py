#!/usr/bin/python3
"""Memory from one number: a sparse 1 GiB index.json.blob and sparse
oversized or inconsistent indexes in a local store's snapshot make list,
snapshot list, verify and restore neither read them whole nor grow: verify
and restore fail with exit 4 and a message naming the file, the listings
go on without the damaged snapshot's size, and the peak RSS of every
cairn run stays below 200 MiB (a memory bound, not a timing one)."""
import os
import resource
import shutil
import subprocess
import sys

import cairn_test_lib as t

RSS_LIMIT_KIB = 200 * 1024

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
store = t.store_path('store')
os.makedirs(src)
with open(os.path.join(src, 'photo.jpg'), 'wb') as f:
    f.write(os.urandom(200000))
out = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'huge')
snap = out['snapshot']
sdir = os.path.join(store, *snap.split('/'))
assert os.path.isfile(os.path.join(sdir, 'index.json.blob')), os.listdir(sdir)


# meson sets MALLOC_PERTURB_, which fills every allocation and so makes
# reserved but unused buffers (the restore's chunk cache) count as RSS:
# the bound is on what cairn really touches.
ENV = {k: v for k, v in os.environ.items() if k != 'MALLOC_PERTURB_'}


def cairn(*args, check):
    p = subprocess.run([t.CAIRN] + list(args), capture_output=True, text=True, timeout=500,
                       env=ENV)
    assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, max over runs
    assert peak < RSS_LIMIT_KIB, (args, peak, p.stderr)
    return p


def damaged(name, size):
    """Replaces the snapshot file name by a sparse copy grown or cut to
    size (its first bytes kept); returns a function that restores it."""
    path = os.path.join(sdir, name)
    keep = path + '.orig'
    shutil.copy2(path, keep)
    os.truncate(path, size)

    def undo():
        os.replace(keep, path)
    return undo


def restore_and_verify(name, what):
    dest = os.path.join(work, 'r-' + what)
    p = cairn('restore', snap, 'data.pxar', dest, '--store', store, check=4)
    assert name in p.stderr, p.stderr
    p = cairn('verify', snap, '--store', store, check=4)
    assert name in p.stdout + p.stderr, (p.stdout, p.stderr)


def gc_refuses(name):
    """gc cannot mark through a damaged index, so it stops (sweeping
    nothing) without reading the index whole."""
    p = cairn('gc', '--store', store, check=4)
    assert name in p.stdout + p.stderr, (p.stdout, p.stderr)


# 1. a sparse 1 GiB manifest
undo = damaged('index.json.blob', 1 << 30)
cairn('list', '--store', store, check=0)
cairn('snapshot', 'list', '--store', store, check=0)
restore_and_verify('index.json.blob', 'manifest')
undo()

# 2. a sparse 1.5 GiB dynamic index (its header intact)
undo = damaged('data.pxar.didx', 3 << 29)
restore_and_verify('data.pxar.didx', 'big-index')
gc_refuses('data.pxar.didx')
undo()

# 3. under the size limit, but not what its header allows (not 4096 + n*40)
undo = damaged('data.pxar.didx', (900 << 20) + 1)
restore_and_verify('data.pxar.didx', 'odd-index')
gc_refuses('data.pxar.didx')
undo()

# the undamaged snapshot still restores
cairn('restore', snap, 'data.pxar', os.path.join(work, 'ok'), '--store', store, check=0)
with open(os.path.join(work, 'ok', 'photo.jpg'), 'rb') as f, \
        open(os.path.join(src, 'photo.jpg'), 'rb') as g:
    assert f.read() == g.read()
shutil.rmtree(work)
print('ok')
