#!/usr/bin/python3
"""A backup target that cannot be opened when `cairn backup` starts costs
only itself (issue #20, item 2): a repository on a dead port (listed
before or after the healthy one) and a stopped (SIGSTOP) server are
dropped with a message naming them, the others get the snapshot and the exit code
is 3; the stopped server does not hang the run; when every target fails
the exit code is 1."""
import json
import os
import shutil
import signal
import socket
import sys
import time

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
t.make_tree(src)
ds_a, ds_b = os.path.join(work, 'ds-a'), os.path.join(work, 'ds-b')
proc_a, repo_a, env_a = t.start_emulator(emulator, ds_a)
proc_b, repo_b, env_b = t.start_emulator(emulator, ds_b)
ENV = {'PBS_PASSWORD': 'SECRET', 'XDG_CONFIG_HOME': os.path.join(work, 'config')}
fp_a, fp_b = env_a['PBS_FINGERPRINT'], env_b['PBS_FINGERPRINT']


def dead_repo():
    """A repository on a loopback port nothing listens on."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return 'root@pam!t1@127.0.0.1:%d:store1' % port


def backup(*places, check):
    os.environ.pop('PBS_FINGERPRINT', None)
    time.sleep(1.1)  # a new snapshot time
    p = t.run('backup', 'data.pxar:' + src, '--backup-id', 'two', '--output-format', 'json',
              *places, env=ENV, check=check, timeout=240)
    return p, (json.loads(p.stdout) if check != 1 else None)


def snapshots(ds):
    d = os.path.join(ds, 'host', 'two')
    return sorted(x for x in os.listdir(d) if not x.startswith('.') and
                  os.path.isdir(os.path.join(d, x))) if os.path.isdir(d) else []


try:
    # a dead port beside a healthy server
    dead = dead_repo()
    p, out = backup('--repository', repo_a, '--repository', dead, '--fingerprint', fp_a,
                    '--fingerprint', '', check=3)
    assert out['targets-ok'] == 1 and out['targets-total'] == 2, out
    assert out['targets-unreachable'] == [dead], out
    assert dead in p.stderr and 'going on without it' in p.stderr, p.stderr
    assert snapshots(ds_a) == [out['snapshot'].split('/')[-1]], snapshots(ds_a)
    print('dead port + healthy server: exit 3, the healthy one has the snapshot')

    # the dead one listed first, without a pin; the restore from the other is whole
    p, out = backup('--repository', dead, '--repository', repo_a, '--fingerprint', '',
                    '--fingerprint', fp_a, check=3)
    assert out['targets-ok'] == 1 and out['targets-total'] == 2, out
    d = os.path.join(work, 'restored')
    t.run('restore', out['snapshot'], 'data.pxar', d, '--repository', repo_a, env=dict(
        ENV, PBS_FINGERPRINT=fp_a), check=0)
    t.compare_trees(src, d)
    print('dead repository first + healthy one: exit 3, its snapshot restores whole')

    # a stopped server: the run neither hangs nor loses the healthy one
    os.kill(proc_b.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        p, out = backup('--repository', repo_b, '--repository', repo_a, '--fingerprint', fp_b,
                        '--fingerprint', fp_a, check=3)
        took = time.monotonic() - start
    finally:
        os.kill(proc_b.pid, signal.SIGCONT)
    assert out['targets-ok'] == 1 and out['targets-unreachable'] == [repo_b], out
    # what happened (a timeout: the login's REST call or a session's TLS
    # handshake), not the socket's 'Resource temporarily unavailable'
    assert 'timeout' in p.stderr or 'no answer within' in p.stderr, p.stderr
    assert 'temporarily unavailable' not in p.stderr, p.stderr
    assert len(snapshots(ds_a)) == 3 and snapshots(ds_b) == [], (snapshots(ds_a),
                                                                 snapshots(ds_b))
    assert took < 180, took
    print('stopped server + healthy one: exit 3 after %.0f s, the healthy one has it' % took)

    # every target down: failure, nothing published
    before = snapshots(ds_a)
    p, _ = backup('--repository', dead, '--repository', dead_repo(), check=1)
    assert 'none of the 2 targets' in p.stderr, p.stderr
    proc_a.terminate()
    proc_a.wait()
    p, _ = backup('--repository', repo_a, '--fingerprint', fp_a, check=1)
    assert snapshots(ds_a) == before
    print('every target down: exit 1')
finally:
    for proc in (proc_a, proc_b):
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
shutil.rmtree(work)
print('all ok')
