#!/usr/bin/python3
"""The cairn command against the PBS emulator: one backup run to a local
store and a PBS repository at once (one read of the source), restore from
the repository, and a repository that fails mid-run while the local store
goes on (exit 3, the local snapshot complete, nothing finished on the
server)."""
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
t.make_tree(src)
ds = os.path.join(work, 'pbs-ds')
proc, repo, env = t.start_emulator(emulator, ds)
try:
    port = repo.split(':')[1]
    local = t.store_path('local')

    def cairn(*args, check=0):
        return t.run(*args, env=env, check=check)

    p = cairn('backup', 'data.pxar:' + src, '--store', local, '--repository', repo,
              '--backup-id', 'both', '--output-format', 'json')
    out = json.loads(p.stdout)
    assert out['targets-ok'] == 2, out
    snap = out['snapshot']
    for place in (['--store', local], ['--repository', repo]):
        d = os.path.join(work, 'r_' + place[0].strip('-'))
        cairn('restore', snap, 'data.pxar', d, *place)
        t.compare_trees(src, d)
    # the server holds the same snapshot files as the local store
    assert sorted(os.listdir(os.path.join(ds, snap))) == \
        sorted(os.listdir(os.path.join(local, snap))), os.listdir(os.path.join(ds, snap))
    lst = json.loads(cairn('snapshot', 'list', '--repository', repo, '--output-format',
                           'json').stdout)
    assert [x['snapshot'] for x in lst] == [snap], lst
    print('local + PBS in one run, restore from both: ok')

    # the repository dies after 2 chunks: the local target goes on
    big = os.path.join(work, 'big')
    os.makedirs(big)
    for i in range(4):
        with open(os.path.join(big, 'f%d' % i), 'wb') as f:
            f.write(os.urandom(5 << 20))
    req = urllib.request.Request('https://127.0.0.1:%s/api2/json/emulator/faults' % port,
                                 data=b'{"die-after-chunks": 2}', method='POST', headers={
                                     'Authorization': 'PBSAPIToken=root@pam!t1:SECRET',
                                     'Content-Type': 'application/json'})
    urllib.request.urlopen(req, context=ssl._create_unverified_context()).read()
    time.sleep(1.1)
    p = cairn('backup', 'big.pxar:' + big, '--store', local, '--repository', repo,
              '--backup-id', 'both', '--output-format', 'json', check=3)
    out = json.loads(p.stdout)
    assert out['targets-ok'] == 1 and out['targets-total'] == 2, out
    assert 'going on without it' in p.stderr, p.stderr
    d = os.path.join(work, 'r_big')
    cairn('restore', out['snapshot'], 'big.pxar', d, '--store', local)
    t.compare_trees(big, d)
    assert not os.path.exists(os.path.join(ds, out['snapshot'], 'index.json.blob'))
    print('PBS target failing mid-run: dropped, local snapshot complete (exit 3)')
finally:
    proc.terminate()
    proc.wait()
shutil.rmtree(work)
print('all ok')
