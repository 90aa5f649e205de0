#!/usr/bin/python3
"""cairn snapshot forget|protected|notes (issue #23) on a local store and on
the PBS emulator: the PBS on-disk form (.protected, notes in the manifest's
unprotected section with the signature untouched), forget refusing a
protected snapshot, and notes and the protected flag following a sync."""
import json
import os
import shutil
import sys

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
os.makedirs(src)
with open(os.path.join(src, 'photo.jpg'), 'wb') as f:
    f.write(os.urandom(200000))
store = t.store_path('store')
key = os.path.join(work, 'key.json')
t.run('key', 'create', key, '--kdf', 'none', check=0)
snap = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'fam',
                  '--keyfile', key)['snapshot']


def manage(where, *args, check=0, env=None):
    opt = '--store' if '/' in where else '--repository'
    p = t.run('snapshot', *args, opt, where, '--output-format', 'json', check=check, env=env)
    return json.loads(p.stdout) if check == 0 else p


def check_place(where, disk, env=None):
    """disk: the directory holding the store's files (local store or PBS datastore)."""
    sdir = os.path.join(disk, snap)
    before = t.manifest(disk, snap)
    assert manage(where, 'protected', snap, 'show', env=env)['protected'] is False
    assert manage(where, 'protected', snap, 'on', env=env)['protected'] is True
    assert os.path.exists(os.path.join(sdir, '.protected'))
    assert manage(where, 'protected', snap, 'show', env=env)['protected'] is True
    p = manage(where, 'forget', snap, check=1, env=env)
    assert 'protected' in p.stderr, p.stderr
    assert os.path.isdir(sdir)
    text = 'Summer 2024 \u2013 beach\nsecond line'
    assert manage(where, 'notes', snap, 'update', text, env=env)['notes'] == text
    assert manage(where, 'notes', snap, 'show', env=env)['notes'] == text
    after = t.manifest(disk, snap)
    assert after['unprotected']['notes'] == text, after
    assert after['signature'] == before['signature'] and after['files'] == before['files']
    # the signed manifest still verifies with the key, and restores
    d = os.path.join(work, 'r_' + os.path.basename(disk))
    opt = '--store' if '/' in where else '--repository'
    t.run('restore', snap, 'data.pxar', d, opt, where, '--keyfile', key, check=0, env=env)
    t.compare_trees(src, d)
    return text


text = check_place(store, store)
print('local: protected on/show, forget refused, notes in the manifest, signature kept')

# bad input: clear usage errors, nothing changed
p = t.run('snapshot', 'protected', snap, 'maybe', '--store', store, check=2)
p = t.run('snapshot', 'notes', snap, 'update', '--store', store, check=2)
p = t.run('snapshot', 'forget', 'host/fam/2001-01-01T00:00:00Z', '--store', store, check=1)
assert 'not found' in p.stderr, p.stderr

ds = os.path.join(work, 'pbs-ds')
proc, repo, env = t.start_emulator(emulator, ds)
try:
    # sync carries the protected flag and the notes along
    out = json.loads(t.run('sync', '--from', store, '--to', repo, '--output-format', 'json',
                           env=env, check=0).stdout)
    assert out['copied'] == 1, out
    assert manage(repo, 'protected', snap, 'show', env=env)['protected'] is True
    assert manage(repo, 'notes', snap, 'show', env=env)['notes'] == text
    p = manage(repo, 'forget', snap, check=1, env=env)
    assert 'protected' in p.stderr, p.stderr
    assert manage(repo, 'protected', snap, 'off', env=env)['protected'] is False
    assert not os.path.exists(os.path.join(ds, snap, '.protected'))
    check_place(repo, ds, env=env)
    manage(repo, 'protected', snap, 'off', env=env)
    manage(repo, 'forget', snap, env=env)
    assert not os.path.exists(os.path.join(ds, snap))
    p = manage(repo, 'notes', snap, 'show', check=1, env=env)
    print('PBS: the same through the REST endpoints; sync carried flag and notes')
finally:
    proc.terminate()
    proc.wait()

# An empty chunk index is rebuilt from the 65536 chunk directories by the
# commands that ask it whether a chunk is stored (backup, a sync's
# destination), not by those that never do.
for f in os.listdir(os.path.join(store, '.cairn')):
    if f.startswith('chunkindex.mdb'):
        os.unlink(os.path.join(store, '.cairn', f))
for args in (['list'], ['snapshot', 'list'], ['snapshot', 'files', snap, 'data.pxar', '--keyfile', key],
             ['verify', '--keyfile', key], ['prune', 'host/fam', '--keep-last', '5'], ['gc'],
             ['sync', '--from', store, '--to', t.store_path('copy')]):
    where = [] if args[0] == 'sync' else ['--store', store]
    p = t.run('-v', *args, *where, check=0)
    assert 'chunk index rebuilt' not in p.stderr, (args, p.stderr)
p = t.run('-v', 'backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'fam2',
          '--keyfile', key, check=0)
assert 'chunk index rebuilt' in p.stderr, p.stderr
print('an empty chunk index is rebuilt by a backup, not by list, verify, prune, gc or a sync source')

manage(store, 'protected', snap, 'off')
manage(store, 'forget', snap)
assert not os.path.exists(os.path.join(store, snap))
shutil.rmtree(work)
print('all ok')
