#!/usr/bin/python3
"""A restore from a store with one damaged chunk: the files whose content
or entry it holds are left out (nothing of them stays, never a file cut
short), every other file is restored, exit 4; restored over an earlier
good restore (--overwrite), the files it cannot restore are kept as they
were; cairn mount lists every directory and reads the files the damaged
chunk does not hold."""
import errno
import os
import random
import shutil
import subprocess
import sys

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
os.makedirs(os.path.join(src, 'a'))
os.makedirs(os.path.join(src, 'b'))
# seeded: the chunk boundaries (and so which chunk is damaged) are the
# same in every run
rng = random.Random(21)
for i in range(1, 9):
    with open(os.path.join(src, 'a', 'f%d.bin' % i), 'wb') as f:
        f.write(rng.randbytes(3_000_000 + 1000 * i))
for i in range(1, 41):
    with open(os.path.join(src, 'b', 's%02d.txt' % i), 'w') as f:
        f.write('small file %d\n' % i * (i * 50))
os.utime(os.path.join(src, 'a'), (1_600_000_000, 1_600_000_000))

store = t.store_path('store')
t.run('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'dmg', check=0)
snap = t.run_json('snapshot', 'list', '--store', store)[0]['snapshot']

sources = {}
for d, _, fs in os.walk(src):
    for n in fs:
        p = os.path.join(d, n)
        with open(p, 'rb') as f:
            sources[os.path.relpath(p, src)] = f.read()


def didx_digests(path):
    with open(path, 'rb') as f:
        d = f.read()[4096:]
    return [d[i + 8:i + 40].hex() for i in range(0, len(d), 40)]


def damage(digest):
    p = os.path.join(store, '.chunks', digest[:4], digest)
    size = os.path.getsize(p)
    with open(p, 'r+b') as f:
        f.seek(size // 2)
        b = f.read(4)
        f.seek(size // 2)
        f.write(bytes(x ^ 0xff for x in b))


def check_left_out(dest):
    """Every file of the source restored whole or absent; the missing."""
    missing = []
    for rel, data in sources.items():
        p = os.path.join(dest, rel)
        if not os.path.exists(p):
            missing.append(rel)
            continue
        with open(p, 'rb') as f:
            assert f.read() == data, rel + ' restored with other content'
    leftovers = [n for d, _, fs in os.walk(dest) for n in fs if n.startswith('.cairn-restore-')]
    assert not leftovers, leftovers
    return missing


digests = didx_digests(os.path.join(store, snap, 'data.pxar.didx'))
assert len(digests) >= 3, digests
# a chunk in the middle of the large files: holds the end of one, the
# start (entry and data) of the next
damage(digests[len(digests) // 2])

# a tree as an earlier good restore left it
good = os.path.join(work, 'good')
subprocess.run(['cp', '-a', src, good], check=True)

dest = os.path.join(work, 'r1')
p = t.run('restore', snap, 'data.pxar', dest, '--store', store, check=4)
missing = check_left_out(dest)
assert missing, 'the damaged chunk cost no file?'
assert all(m.startswith('a/') for m in missing), missing
assert all(os.path.exists(os.path.join(dest, rel)) for rel in sources if rel.startswith('b/')), \
    sorted(os.listdir(os.path.join(dest, 'b')) if os.path.isdir(os.path.join(dest, 'b')) else [])
print('restore: %d file(s) left out, the others restored' % len(missing))

# over a good tree: what cannot be restored stays as it was, in content
# and metadata; the rest is replaced by the archive's (the same)
p = t.run('restore', snap, 'data.pxar', good, '--store', store, '--overwrite', check=4)
t.compare_trees(src, good)
assert not [n for d, _, fs in os.walk(good) for n in fs if n.startswith('.cairn-restore-')]
print('restore --overwrite: the existing files it could not restore are kept')

# a single damaged file selected by path: left out, exit 4
one = os.path.join(work, 'r2')
p = t.run('restore', snap, 'data.pxar', one, '--store', store, '--path', missing[0], check=4)
assert sorted(check_left_out(one)) == sorted(sources), check_left_out(one)
print('restore --path of a damaged file: left out, exit 4')

# cairn mount: every directory lists (entries in damaged data are not
# shown), files the damaged chunk does not hold read whole, the others
# fail with EIO
if os.path.exists('/dev/fuse') and shutil.which('fusermount3'):
    mnt = os.path.join(work, 'mnt')
    os.makedirs(mnt)
    t.run('mount', snap, 'data.pxar', mnt, '--store', store, '--daemon', check=0, timeout=120)
    try:
        shown = {os.path.relpath(os.path.join(d, n), mnt)
                 for d, _, fs in os.walk(mnt) for n in fs}
        assert {rel for rel in sources if rel.startswith('b/')} <= shown, sorted(shown)
        readable = 0
        for rel in sorted(shown):
            try:
                with open(os.path.join(mnt, rel), 'rb') as f:
                    data = f.read()
            except OSError as e:
                assert e.errno == errno.EIO, (rel, e)
                assert rel in missing, rel
                continue
            assert data == sources[rel], rel
            readable += 1
        assert readable == len(sources) - len(missing), (readable, missing)
    finally:
        subprocess.run(['fusermount3', '-u', '-z', mnt], capture_output=True, timeout=60)
    print('mount: every directory lists, %d files read whole' % readable)
else:
    print('mount: skipped (no /dev/fuse or fusermount3)')
print('ok')
