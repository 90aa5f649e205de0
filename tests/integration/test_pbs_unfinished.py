#!/usr/bin/python3
"""A snapshot a PBS did not complete (the server killed during the upload:
its directory holds indexes but no manifest) is not a backup: listings
leave it out, the group's newest is the last complete one (restore, the
previous snapshot of the next backup), and a sync or catch-up that brings
that snapshot from another store removes the leftover and copies it, so
the server ends up with the same history."""
import json
import os
import shutil
import sys
import time

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
os.makedirs(src)
for i in range(3):
    with open(os.path.join(src, 'photo%d.jpg' % i), 'wb') as f:
        f.write(os.urandom(400000 + i))
ds = os.path.join(work, 'ds')
local = t.store_path('local')
proc, repo, env = t.start_emulator(emulator, ds)
try:
    def backup(*targets):
        p = t.run('backup', 'media.pxar:' + src, *targets, '--backup-id', 'nas',
                  '--output-format', 'json', env=env, check=0)
        time.sleep(1.1)
        return json.loads(p.stdout)['snapshot']

    def pbs_snaps():
        p = t.run('snapshot', 'list', '--repository', repo, '--output-format', 'json', env=env,
                  check=0)
        return [x['snapshot'] for x in json.loads(p.stdout)]

    s1 = backup('--store', local, '--repository', repo)
    with open(os.path.join(src, 'photo9.jpg'), 'wb') as f:
        f.write(os.urandom(300000))
    s2 = backup('--store', local)
    # what a server killed during s2's upload leaves: the directory with
    # its indexes, no manifest
    stub = os.path.join(ds, s2)
    shutil.copytree(os.path.join(ds, s1), stub)
    os.remove(os.path.join(stub, 'index.json.blob'))

    assert pbs_snaps() == [s1], pbs_snaps()
    d = os.path.join(work, 'r1')
    t.run('restore', 'host/nas', 'media.pxar', d, '--repository', repo, env=env, check=0)
    print('listing and the newest skip the unfinished snapshot')

    p = t.run('sync', '--from', local, '--to', repo, 'host/nas', env=env, check=0)
    assert 'removed the unfinished snapshot' in p.stderr, p.stderr
    assert pbs_snaps() == [s1, s2], pbs_snaps()
    d = os.path.join(work, 'r2')
    t.run('restore', s2, 'media.pxar', d, '--repository', repo, env=env, check=0)
    t.compare_trees(src, d)
    print('sync removed the leftover and copied the snapshot; it restores whole')
    print('ok')
finally:
    proc.terminate()
    proc.wait()
