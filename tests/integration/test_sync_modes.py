#!/usr/bin/python3
"""cairn sync --dry-run and --remove-vanished (issue #23), to a local store
and to the PBS emulator:
 - --dry-run lists what would be copied or removed (JSON and text) and
   changes nothing: no snapshot, no chunk, no store created, no backup
   session opened at a PBS;
 - --remove-vanished is off by default; with it, DST snapshots of the
   selected groups (every group when none is named; nothing for a single
   snapshot named) that SRC no longer has are removed, but never a protected
   one (upstream's pull: "don't delete vanished snapshot ... (protected)",
   only logged), and keeping one is not a warning (exit 0).

Usage: test_sync_modes.py CAIRN_BINARY PBS_EMULATOR"""
import json
import os
import shutil
import ssl
import sys
import time
import urllib.request

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
os.makedirs(src)


def backup(store, gid):
    with open(os.path.join(src, 'photo.jpg'), 'wb') as f:
        f.write(os.urandom(150000))
    snap = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', gid)['snapshot']
    time.sleep(1.1)  # the next snapshot of the group gets a later time
    return snap


def sync(*args, check=0, env=None):
    p = t.run('sync', *args, '--output-format', 'json', check=check, env=env)
    return json.loads(p.stdout)


def actions(out):
    return {x['snapshot']: x['action'] for x in out['snapshots']}


def snaps(where, env=None):
    opt = '--store' if '/' in where else '--repository'
    p = t.run('snapshot', 'list', opt, where, '--output-format', 'json', env=env, check=0)
    return sorted(x['snapshot'] for x in json.loads(p.stdout))


def place_state(disk):
    """Every file below a store directory with its size (no lock files)."""
    out = {}
    for d, _, files in os.walk(disk):
        for f in files:
            if not f.endswith('.lck') and f != '.lock':
                p = os.path.join(d, f)
                out[os.path.relpath(p, disk)] = os.path.getsize(p)
    return out


def forget(store, snap):
    t.run('snapshot', 'forget', snap, '--store', store, check=0)


A = t.store_path('A')
B = t.store_path('B')
s1, s2, s3 = backup(A, 'g1'), backup(A, 'g1'), backup(A, 'g1')
t1 = backup(A, 'g3')

# dry run to a store that does not exist yet: everything would be copied
out = sync('--from', A, '--to', B, '--dry-run')
assert out['dry-run'] is True and out['copied'] == 4 and out['chunks-sent'] == 0, out
assert actions(out) == {s: 'would-copy' for s in (s1, s2, s3, t1)}, out
assert not os.path.exists(B), 'a dry run created the destination store'
p = t.run('sync', '--from', A, '--to', B, '--dry-run', check=0)
assert 'would-copy      %s' % s1 in p.stdout and 'nothing changed' in p.stdout, p.stdout
assert not os.path.exists(B)

out = sync('--from', A, '--to', B)
assert out['copied'] == 4 and out['dry-run'] is False, out
t.run('snapshot', 'protected', s2, 'on', '--store', B, check=0)
forget(A, s1)
forget(A, s2)
forget(A, t1)  # group g3 vanishes from A altogether
s4 = backup(A, 'g1')
print('dry run to a missing store: lists all, creates nothing')

# dry run with remove-vanished: reports, changes nothing
before = place_state(B)
out = sync('--from', A, '--to', B, '--dry-run', '--remove-vanished')
assert actions(out) == {s3: 'present', s4: 'would-copy', s1: 'would-remove',
                        s2: 'kept-protected', t1: 'would-remove'}, out
assert out['removed'] == 2 and out['kept-protected'] == 1 and out['copied'] == 1, out
assert place_state(B) == before, 'a dry run changed the destination'

# default: nothing is removed
out = sync('--from', A, '--to', B)
assert actions(out) == {s3: 'present', s4: 'copied'}, out
assert snaps(B) == sorted([s1, s2, s3, s4, t1]), snaps(B)

# a single snapshot named: nothing of its group is removed
out = sync('--from', A, '--to', B, '--remove-vanished', s3)
assert out['removed'] == 0 and out['kept-protected'] == 0, out
assert snaps(B) == sorted([s1, s2, s3, s4, t1]), snaps(B)

# one group named: its vanished snapshots go, the protected one stays (exit 0)
out = sync('--from', A, '--to', B, '--remove-vanished', 'host/g1')
assert actions(out) == {s3: 'present', s4: 'present', s1: 'removed', s2: 'kept-protected'}, out
assert snaps(B) == sorted([s2, s3, s4, t1]), snaps(B)
# no group named: the vanished group goes too
out = sync('--from', A, '--to', B, '--remove-vanished')
assert actions(out) == {s3: 'present', s4: 'present', s2: 'kept-protected', t1: 'removed'}, out
assert snaps(B) == sorted([s2, s3, s4]), snaps(B)
assert os.path.exists(os.path.join(B, s2, '.protected'))
t.run('verify', '--store', B, check=0)
d = os.path.join(work, 'restored')
t.run('restore', s2, 'data.pxar', d, '--store', B, check=0)
print('local: remove-vanished off by default, per selection, protected kept; store valid')

# the same against a PBS
ds = os.path.join(work, 'pbs-ds')
proc, repo, env = t.start_emulator(emulator, ds)
port = repo.split(':')[-2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # loopback only


def sessions():
    req = urllib.request.Request('https://127.0.0.1:%s/api2/json/emulator/stats' % port,
                                 headers={'Authorization': 'PBSAPIToken=root@pam!t1:SECRET'})
    with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
        return len(json.loads(r.read())['data']['sessions'])


try:
    out = sync('--from', A, '--to', repo, '--dry-run', env=env)
    assert actions(out) == {s3: 'would-copy', s4: 'would-copy'}, out
    assert snaps(repo, env) == [] and sessions() == 0, (snaps(repo, env), sessions())
    out = sync('--from', A, '--to', repo, env=env)
    assert out['copied'] == 2, out
    t.run('snapshot', 'protected', s3, 'on', '--repository', repo, env=env, check=0)
    s5 = backup(A, 'g1')
    forget(A, s3)
    forget(A, s4)
    n = sessions()
    before = place_state(ds)
    out = sync('--from', A, '--to', repo, '--dry-run', '--remove-vanished', env=env)
    assert actions(out) == {s5: 'would-copy', s3: 'kept-protected', s4: 'would-remove'}, out
    assert place_state(ds) == before and sessions() == n, 'a dry run changed the PBS'
    out = sync('--from', A, '--to', repo, '--remove-vanished', env=env)
    assert actions(out) == {s5: 'copied', s3: 'kept-protected', s4: 'removed'}, out
    assert snaps(repo, env) == sorted([s3, s5]), snaps(repo, env)
    print('PBS: dry run opens no session and changes nothing; remove-vanished keeps protected')
finally:
    proc.terminate()
    proc.wait()
shutil.rmtree(work)
print('all ok')
