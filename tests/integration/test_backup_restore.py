#!/usr/bin/python3
"""End to end with the real cairn binary: back up generated trees into a
local datastore, restore (all, a subtree, one file), compare contents and
metadata; re-run without changes (nothing new stored); several archives,
two stores in one run, encryption; list, snapshot list/files, verify,
--verify-only, prune."""
import os
import random
import shutil
import stat
import subprocess
import sys
import time

import cairn_test_lib as t

gen_corpus = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
store = t.store_path('store')
t.make_tree(src)

# 1. backup and full restore
out = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'it')
assert out['files'] >= 8 and out['new-chunks'] >= 1, out
assert out['targets-ok'] == 1 and out['skipped'] == 0, out
snap = out['snapshot']
assert snap.startswith('host/it/'), snap
snaps = t.run_json('snapshot', 'list', '--store', store)
assert [s['snapshot'] for s in snaps] == [snap], snaps
groups = t.run_json('list', '--store', store)
assert groups[0]['group'] == 'host/it' and groups[0]['count'] == 1, groups
files = {f['filename'] for f in t.run_json('snapshot', 'files', snap, '--store', store)}
assert files == {'data.pxar.didx', 'catalog.pcat1.didx'}, files
dest = os.path.join(work, 'restore')
t.run('restore', snap, 'data.pxar', dest, '--store', store, check=0)
n = t.compare_trees(src, dest)
print('full restore: %d entries identical' % n)
# a target whose parents are missing: made as mkdir -p does
deep = os.path.join(work, 'deep', 'er', 'target')
t.run('restore', snap, 'data.pxar', deep, '--store', store, check=0)
t.compare_trees(src, deep)
# a path restore's new target: a new directory's mode, not 0700
sub_target = os.path.join(work, 'subtarget')
t.run('restore', snap, 'data.pxar', sub_target, '--path', 'dir/sub', '--store', store, check=0)
umask = os.umask(0)
os.umask(umask)
assert stat.S_IMODE(os.stat(sub_target).st_mode) == 0o777 & ~umask, \
    oct(os.stat(sub_target).st_mode)

# restored again over itself (--overwrite): the same, also below a
# directory whose default ACL the first restore set: its new files would
# inherit ACL entries they do not have in the archive
acl_src = os.path.join(work, 'aclsrc')
os.makedirs(os.path.join(acl_src, 'docs'))
for name in ('a.txt', 'b.txt'):
    with open(os.path.join(acl_src, 'docs', name), 'w') as f:
        f.write(name)
subprocess.run(['setfacl', '-d', '-m', 'u:1234:rx', os.path.join(acl_src, 'docs')], check=True)
acl_store = t.store_path('acl')
acl_snap = t.run_json('backup', 'acl.pxar:' + acl_src, '--store', acl_store,
                      '--backup-id', 'acl')['snapshot']
acl_dest = os.path.join(work, 'acl-restore')
for extra in ([], ['--overwrite']):
    t.run('restore', acl_snap, 'acl.pxar', acl_dest, '--store', acl_store, *extra, check=0)
    t.compare_trees(acl_src, acl_dest)
    for name in ('a.txt', 'b.txt'):
        assert 'system.posix_acl_access' not in os.listxattr(os.path.join(acl_dest, 'docs', name)), \
            (extra, name, subprocess.run(['getfacl', os.path.join(acl_dest, 'docs', name)],
                                         capture_output=True, text=True).stdout)
    assert 'system.posix_acl_default' in os.listxattr(os.path.join(acl_dest, 'docs'))
print('restore --overwrite over itself: the same, no inherited ACLs')

# as another user than root: --no-owner restores everything as that user
if os.geteuid() == 0 and shutil.which('setpriv'):
    mine = os.path.join(work, 'nobody')
    os.chmod(work, 0o711)  # (mkdtemp's 0700: the other user passes through)
    shutil.copytree(acl_store, os.path.join(mine, 'store'), symlinks=True)
    for d, ds, fs in os.walk(mine):
        for n in ds + fs + ['.']:
            os.lchown(os.path.join(d, n), 65534, 65534)
    as_nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', t.CAIRN,
                 'restore', acl_snap, 'acl.pxar', os.path.join(mine, 'out'), '--store',
                 os.path.join(mine, 'store')]
    p = subprocess.run(as_nobody + ['--no-owner'], capture_output=True, text=True)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert os.stat(os.path.join(mine, 'out', 'docs', 'a.txt')).st_uid == 65534
    print('restore --no-owner as another user: exit 0, files of that user')

# the snapshot on disk has exactly what the official client writes
sdir = os.path.join(store, snap)
assert sorted(os.listdir(sdir)) == sorted(files | {'index.json.blob'}), os.listdir(sdir)

# ... and, as a PBS server's finish adds to it, what the backup stored
# (outside the signature): every chunk new, the blobs' bytes in size
m = t.manifest(store, snap)
up = m['unprotected']['chunk_upload_stats']
chunks = t.chunk_files(store)
assert up['count'] == out['new-chunks'] == len(chunks) and up['duplicates'] == 0, (up, out)
assert up['compressed_size'] == sum(os.path.getsize(c) for c in chunks), up
archives = sum(f['size'] for f in m['files'])
assert archives + 100 < up['size'] < archives + 4096, (up, m['files'])  # + the manifest

# 2. a single file and a subtree; a missing path
one = os.path.join(work, 'one')
t.run('restore', snap, 'data.pxar', one, '--path', 'dir/sub/deeper/d.dat', '--store', store,
      check=0)
with open(os.path.join(one, 'dir/sub/deeper/d.dat'), 'rb') as f, \
        open(os.path.join(src, 'dir/sub/deeper/d.dat'), 'rb') as g:
    assert f.read() == g.read()
restored = [os.path.relpath(os.path.join(d, x), one) for d, _, fs in os.walk(one) for x in fs]
assert restored == ['dir/sub/deeper/d.dat'], restored
sub = os.path.join(work, 'subtree')
t.run('restore', snap, 'data.pxar', sub, '--path', 'dir/sub', '--store', store, check=0)
assert sorted(os.listdir(os.path.join(sub, 'dir', 'sub'))) == ['c.txt', 'deeper']
# several paths and an exclusion: the last --path/--exclude matching decides
sel = os.path.join(work, 'selected')
t.run('restore', snap, 'data.pxar', sel, '--path', 'dir/sub', '--exclude', '*.dat',
      '--path', 'dir/sub/deeper/d.dat', '--path', 'a.txt', '--store', store, check=0)
got = sorted(os.path.relpath(os.path.join(d, x), sel) for d, _, fs in os.walk(sel) for x in fs)
assert got == ['a.txt', 'dir/sub/c.txt', 'dir/sub/deeper/d.dat'], got
ex = os.path.join(work, 'excluded')
t.run('restore', snap, 'data.pxar', ex, '--exclude', 'dir/sub/', '--store', store, check=0)
assert os.path.isdir(os.path.join(ex, 'dir')) and not os.path.exists(os.path.join(ex, 'dir/sub'))
assert os.path.exists(os.path.join(ex, 'a.txt'))
p = t.run('restore', snap, 'data.pxar', os.path.join(work, 'bad'), '--exclude', 'x[',
          '--store', store, check=2)
assert "'x['" in p.stderr, p.stderr
p = t.run('restore', snap, 'data.pxar', os.path.join(work, 'nope'), '--path', 'no/such',
          '--store', store, check=1)
assert 'no/such' in p.stderr, p.stderr
print('single file and subtree restore ok')

# 3. catalog listing with a path filter
cat = t.run_json('snapshot', 'files', snap, 'data.pxar', 'dir/sub', '--store', store)
paths = {e['path'] for e in cat}
assert '/dir/sub/c.txt' in paths and '/dir/sub/deeper/d.dat' in paths, paths
assert not any(x.startswith('/a.txt') for x in paths), paths
sizes = {e['path']: e.get('size') for e in cat}
assert sizes['/dir/sub/c.txt'] == len(b'compressible ' * 50000)

# 4. no-change re-run: nothing new; then a change: a little new
time.sleep(1.1)
out2 = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'it')
assert out2['new-chunks'] == 0 and out2['new-bytes'] == 0, out2
assert out2['snapshot'] != snap
up = t.manifest(store, out2['snapshot'])['unprotected']['chunk_upload_stats']
assert up['count'] == up['compressed_size'] == 0 and 100 < up['size'] < 4096, up
with open(os.path.join(src, 'dir', 'added.txt'), 'wb') as f:
    f.write(b'new file\n')
time.sleep(1.1)
out3 = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'it')
assert 0 < out3['new-chunks'] < out['new-chunks'] + 3, (out, out3)
print('dedup: re-run stored %d new chunks; after a change %d' % (out2['new-chunks'],
                                                                  out3['new-chunks']))

# 5. verify all, and --verify-only restore
v = t.run_json('verify', '--store', store)
assert len(v) == 3 and all(x['state'] == 'ok' for x in v), v
vo = t.run_json('restore', out3['snapshot'], 'data.pxar', '--verify-only', '--store', store)
assert vo['chunks'] >= 1 and vo['files'] >= 9, vo
# --verify-only walks the archive once: each chunk of the index is fetched
# exactly once, also when the archive has more chunks than the read-ahead
# cache holds (7 slots with one thread; ~11 chunks here, with file headers
# in the early ones, which a read-all-then-list pass fetched again)
bigsrc = os.path.join(work, 'bigsrc')
os.makedirs(bigsrc)
rng = random.Random(5)
for i in range(4):
    with open(os.path.join(bigsrc, 'v%d.bin' % i), 'wb') as f:
        f.write(rng.randbytes(11 << 20))
bigstore = t.store_path('bigstore')
ob = t.run_json('backup', 'big.pxar:' + bigsrc, '--store', bigstore, '--backup-id', 'big')
with open(os.path.join(bigstore, ob['snapshot'], 'big.pxar.didx'), 'rb') as f:
    entries = (len(f.read()) - 4096) // 40
assert entries > 8, entries
vb = t.run_json('restore', ob['snapshot'], 'big.pxar', '--verify-only', '--threads', '1',
                '--store', bigstore)
assert vb['chunks'] == entries and vb['files'] == 4, (vb, entries)
# with --path, what restoring that path reads: one 11 MiB file of four
# fetches a few of the chunks; a glob selects as the restore does
vp = t.run_json('restore', ob['snapshot'], 'big.pxar', '--verify-only', '--threads', '1',
                '--path', 'v2.bin', '--store', bigstore)
assert vp['files'] == 1 and vp['bytes'] == 11 << 20 and 1 <= vp['chunks'] < entries - 3, \
    (vp, entries)
vg = t.run_json('restore', ob['snapshot'], 'big.pxar', '--verify-only', '--path', 'v[13].bin',
                '--store', bigstore)
assert vg['files'] == 2 and vg['bytes'] == 22 << 20, vg
vx = t.run_json('restore', ob['snapshot'], 'big.pxar', '--verify-only', '--exclude', 'v[13].bin',
                '--store', bigstore)
assert vx['files'] == 2 and vx['bytes'] == 22 << 20, vx

# 6. prune keeps the newest; dry run first
pr = t.run_json('prune', 'host/it', '--keep-last', '1', '--dry-run', '--store', store)
assert sum(1 for x in pr if x['mark'] == 'would remove') == 2, pr
assert len(t.run_json('snapshot', 'list', '--store', store)) == 3
t.run('prune', 'host/it', '--keep-last', '1', '--store', store, check=0)
assert [s['snapshot'] for s in t.run_json('snapshot', 'list', '--store', store)] == \
    [out3['snapshot']]
t.run('gc', '--store', store, check=0)

# 7. several archives, two stores in one run
other = os.path.join(work, 'other')
os.makedirs(os.path.join(other, 'x'))
with open(os.path.join(other, 'x', 'y'), 'w') as f:
    f.write('y' * 1000)
store2 = t.store_path('store2')
out = t.run_json('backup', 'one.pxar:' + src, 'two.pxar:' + other, '--store', store,
                 '--store', store2, '--backup-id', 'multi')
assert out['targets-ok'] == 2, out
for s in (store, store2):
    d = os.path.join(work, 'multi_' + os.path.basename(s))
    t.run('restore', 'host/multi', 'two.pxar', d, '--store', s, check=0)
    t.compare_trees(other, d)
    d1 = os.path.join(work, 'multi1_' + os.path.basename(s))
    t.run('restore', 'host/multi', 'one.pxar', d1, '--store', s, check=0)
    t.compare_trees(src, d1)
print('two archives into two stores ok')

# 8. encryption with a key file
key = os.path.join(work, 'key.json')
t.run('key', 'create', key, '--kdf', 'none', check=0)
fp = t.run('key', 'show-fingerprint', key, check=0).stdout.strip()
assert len(fp) == 95, fp
store3 = t.store_path('store3')
out = t.run_json('backup', 'data.pxar:' + src, '--store', store3, '--keyfile', key,
                 '--backup-id', 'enc')
files = t.run_json('snapshot', 'files', out['snapshot'], '--store', store3, '--keyfile', key)
assert files and all(f['crypt-mode'] == 'encrypt' for f in files), files
p = t.run('restore', out['snapshot'], 'data.pxar', os.path.join(work, 'nokey'), '--store',
          store3, check=1)
assert 'keyfile' in p.stderr, p.stderr
d = os.path.join(work, 'enc_restore')
t.run('restore', out['snapshot'], 'data.pxar', d, '--store', store3, '--keyfile', key, check=0)
t.compare_trees(src, d)
# nothing of the plain data is visible in the encrypted chunks
with open(os.path.join(src, 'dir/sub/c.txt'), 'rb') as f:
    needle = f.read()[:64]
for c in t.chunk_files(store3):
    with open(c, 'rb') as f:
        assert needle not in f.read()
print('encrypted backup and restore ok')

# 9. the photo-vault corpus (if the generator was given); 40 MB, 8 MB
# under ASan: its variety of files is what counts here, not its size
if gen_corpus:
    corpus = os.path.join(work, 'corpus')
    import subprocess
    subprocess.run(['/usr/bin/python3', gen_corpus, corpus, '--size-mb',
                    '8' if t.sanitized() else '40'], check=True, capture_output=True)
    out = t.run_json('backup', 'media.pxar:' + corpus, '--store', store, '--backup-id', 'media')
    d = os.path.join(work, 'corpus_restore')
    t.run('restore', out['snapshot'], 'media.pxar', d, '--store', store, check=0)
    t.compare_trees(corpus, d)
    print('corpus: %d files, dedup ratio %.2f' % (out['files'], out['dedup-ratio']))

# help everywhere
for cmd in ('backup', 'restore', 'list', 'snapshot', 'verify', 'prune', 'gc', 'key',
            'benchmark'):
    h = t.run(cmd, '--help', check=0)
    assert 'Usage: cairn ' + cmd in h.stdout, (cmd, h.stdout)
assert 'Exit codes' in t.run('--help', check=0).stdout

shutil.rmtree(work)
print('all ok')
