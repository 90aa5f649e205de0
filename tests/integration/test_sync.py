#!/usr/bin/python3
"""cairn sync (issue #23): two local stores with different histories end up
with the same snapshots, each valid and restorable, and a second sync copies
nothing; an encrypted snapshot is copied without its key and restores with
it; protected flags come along; only missing chunks travel; a corrupt
source chunk is caught on the way (exit 4, nothing published); kill -9 in
the middle leaves no half snapshot and the next sync completes; a full
destination is exit 5; and the same against the PBS emulator (local -> PBS
-> local, a refused login)."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()


def sync(*args, check=0, env=None):
    p = t.run('sync', *args, '--output-format', 'json', check=check, env=env)
    return json.loads(p.stdout) if check == 0 else p


def snaps(where, env=None):
    opt = '--store' if '/' in where else '--repository'
    return [x['snapshot'] for x in t.run_json('snapshot', 'list', opt, where)] if env is None \
        else [x['snapshot'] for x in json.loads(t.run('snapshot', 'list', opt, where,
                                                      '--output-format', 'json', env=env,
                                                      check=0).stdout)]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def chunk_sizes(store):
    return {os.path.basename(c): os.path.getsize(c) for c in t.chunk_files(store)}


A = t.store_path('A')
B = t.store_path('B')
src = os.path.join(work, 'src')
t.make_tree(src)
# A: two snapshots of host/g1 and one encrypted of host/enc; B: host/g2
t.run('backup', 'data.pxar:' + src, '--store', A, '--backup-id', 'g1', check=0)
time.sleep(1.1)
write(os.path.join(src, 'new.bin'), os.urandom(300000))
t.run('backup', 'data.pxar:' + src, '--store', A, '--backup-id', 'g1', check=0)
key = os.path.join(work, 'key.json')
t.run('key', 'create', key, '--kdf', 'none', check=0)
enc = t.run_json('backup', 'data.pxar:' + src, '--store', A, '--backup-id', 'enc',
                 '--keyfile', key)['snapshot']
src2 = os.path.join(work, 'src2')
write(os.path.join(src2, 'x'), os.urandom(500000))
t.run('backup', 'data.pxar:' + src2, '--store', B, '--backup-id', 'g2', check=0)
g1 = [s for s in snaps(A) if '/g1/' in s]
open(os.path.join(A, g1[0], '.protected'), 'w').close()

out = sync('--from', A, '--to', B)
assert out['copied'] == 3 and out['failed'] == 0, out
out = sync('--from', B, '--to', A)
assert out['copied'] == 1 and out['present'] == 3, out
assert snaps(A) == snaps(B) and len(snaps(A)) == 4, (snaps(A), snaps(B))
for s in (A, B):
    t.run('verify', '--store', s, check=0)
# the signed, encrypted manifest is the source's: restore with the key
d = os.path.join(work, 'r_enc')
t.run('restore', enc, 'data.pxar', d, '--store', B, '--keyfile', key, check=0)
t.compare_trees(src, d)
d = os.path.join(work, 'r_g2')
g2 = [s for s in snaps(A) if '/g2/' in s][0]
t.run('restore', g2, 'data.pxar', d, '--store', A, check=0)
t.compare_trees(src2, d)
assert os.path.exists(os.path.join(B, g1[0], '.protected'))
assert not os.path.exists(os.path.join(B, g1[1], '.protected'))
for s in snaps(A):  # the manifest travels as it is (signature too)
    ma, mb = t.manifest(A, s), t.manifest(B, s)
    for m in (ma, mb):  # written by the upload and by verify
        m['unprotected'].pop('chunk_upload_stats', None)
        m['unprotected'].pop('verify_state', None)
    assert ma == mb, (s, ma, mb)
out = sync('--from', A, '--to', B)
assert out['copied'] == 0 and out['chunks-sent'] == 0 and out['present'] == 4, out
print('two histories, one sync each way: same snapshots, valid, restorable; again: nothing')

# only missing chunks travel: ~98 % of the next snapshot is at B already
big = os.path.join(work, 'big')
# seeded: with random bytes the chunker found no boundary before the
# appended file in about one run in a hundred, and the new root entry at
# the archive's start changed every chunk
rng = random.Random(7)
for i in range(49):
    write(os.path.join(big, 'f%02d' % i), rng.randbytes(400000))
t.run('backup', 'big.pxar:' + big, '--store', A, '--backup-id', 'big', check=0)
sync('--from', A, '--to', B)
time.sleep(1.1)
write(os.path.join(big, 'zz_new'), rng.randbytes(400000))
t.run('backup', 'big.pxar:' + big, '--store', A, '--backup-id', 'big', check=0)
have = chunk_sizes(B)
missing = sum(v for k, v in chunk_sizes(A).items() if k not in have)
out = sync('--from', A, '--to', B, 'host/big')
assert out['copied'] == 1, out
assert missing > 0 and out['bytes-sent'] <= 1.05 * missing, (out, missing)
assert out['chunks-reused'] > 0, out
print('incremental: %d bytes sent for %d missing' % (out['bytes-sent'], missing))

# a corrupt chunk at the source is caught on the way: exit 4, nothing published
C = t.store_path('C')
# (one listing of A's chunks: each walks its 65,536 prefix directories)
sizes_a = chunk_sizes(A)
victim = max(sizes_a, key=sizes_a.get)
vpath = [c for c in t.chunk_files(A) if c.endswith(victim)][0]
with open(vpath, 'rb') as f:
    good = f.read()
bad = bytearray(good)
bad[len(bad) // 2] ^= 0xff
write(vpath, bytes(bad))
p = sync('--from', A, '--to', C, check=4)
assert victim in p.stderr, p.stderr
assert all(victim not in s for s in chunk_sizes(C)), 'corrupt chunk stored'
write(vpath, good)
print('corrupt source chunk: exit 4:', p.stderr.strip().splitlines()[-1][:160])

# kill -9 in the middle, then a sync that completes. D on /dev/shm as the
# others: the kill comes before the first snapshot is whole there too, and
# making and removing its 65,536 directories on a busy disk took minutes
D = t.store_path('D')
t.run('gc', '--store', C, check=None)
e = dict(os.environ)
e.pop('PBS_REPOSITORY', None)
proc = subprocess.Popen([t.CAIRN, 'sync', '--from', A, '--to', D],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
# kill once the first snapshot's copy has begun (its group directory
# exists): a cheap check, where walking the 65,536 chunk directories
# took longer than the whole sync
deadline = time.time() + 120
while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(D) and any(not n.startswith('.') for n in os.listdir(D)):
        break
    time.sleep(0.002)
assert proc.poll() is None, 'sync ended before it could be killed'
proc.send_signal(signal.SIGKILL)
proc.wait()
listed = snaps(D)
if listed:  # whatever is listed is whole
    t.run('verify', '--store', D, check=0)
out = sync('--from', A, '--to', D)
assert out['failed'] == 0 and out['copied'] + out['present'] == len(snaps(A)), out
assert snaps(D) == snaps(A), (snaps(D), snaps(A))
t.run('verify', '--store', D, check=0)
for g in os.listdir(os.path.join(D, 'host')):
    leftovers = [x for x in os.listdir(os.path.join(D, 'host', g)) if x.startswith('.tmp')]
    assert leftovers == [], leftovers
print('kill -9 mid-sync (%d listed then), second sync completes, store valid' % len(listed))

# a full destination: exit 5, nothing half there
with t.small_tmpfs(os.path.join(work, 'tmpfs'), '12m') as mounted:
    if mounted:
        full = os.path.join(work, 'tmpfs', 'store')
        p = sync('--from', A, '--to', full, 'host/big', check=5)
        assert 'No space left' in p.stderr, p.stderr
        assert snaps(full) == [], snaps(full)
        print('full destination: exit 5')

# PBS: local -> PBS -> another local store; a refused login
ds = os.path.join(work, 'pbs-ds')
proc, repo, env = t.start_emulator(emulator, ds)
try:
    out = sync('--from', A, '--to', repo, 'host/g1', 'host/enc', env=env)
    assert out['copied'] == 3 and out['failed'] == 0, out
    pbs_snaps = snaps(repo, env)
    assert pbs_snaps == [s for s in snaps(A) if '/g1/' in s or '/enc/' in s], pbs_snaps
    lst = json.loads(t.run('snapshot', 'list', '--repository', repo, '--output-format', 'json',
                           env=env, check=0).stdout)
    assert [x['protected'] for x in lst if '/g1/' in x['snapshot']] == [True, False], lst
    E = t.store_path('E')
    out = sync('--from', repo, '--to', E, env=env)
    assert out['copied'] == 3, out
    t.run('verify', '--store', E, check=0)
    d = os.path.join(work, 'r_pbs_enc')
    t.run('restore', enc, 'data.pxar', d, '--store', E, '--keyfile', key, check=0)
    t.compare_trees(src, d)
    out = sync('--from', A, '--to', repo, 'host/g1', 'host/enc', env=env)
    assert out['copied'] == 0 and out['chunks-sent'] == 0, out
    pw = os.path.join(work, 'wrong-pw')
    write(pw, b'WRONG\n')
    p = sync('--from', A, '--to', repo, '--to-password-file', pw, 'host/g2', env=env, check=1)
    assert 'host/g2' not in ' '.join(snaps(repo, env)), p.stderr
    print('local -> PBS -> local: same snapshots, restorable; wrong password refused:',
          p.stderr.strip().splitlines()[-1][:120])
finally:
    proc.terminate()
    proc.wait()
shutil.rmtree(work)
print('all ok')
