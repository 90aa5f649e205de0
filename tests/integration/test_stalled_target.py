#!/usr/bin/python3
"""Two PBS repositories (two emulators sharing one certificate), one of
them stopped (SIGSTOP) in the middle of the backup: with --stall-timeout 3
the stopped one is given up after about 3 s, the other gets its complete
snapshot, the run exits 3, and it does not wait for the network's 120 s
I/O timeout."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()


def start(ds, *extra):
    """An emulator on a free port; returns (process, repository, fingerprint)."""
    proc = subprocess.Popen(['/usr/bin/python3', emulator, '--datastore', 'store1=' + ds,
                             '--port', '0', '--token', 'root@pam!t1:SECRET', *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().split()
    if not line or line[0] != 'READY':
        proc.terminate()
        raise AssertionError('emulator did not start: %r' % line)
    return proc, 'root@pam!t1@127.0.0.1:%s:store1' % line[1], line[2]


def has_chunks(ds):
    for _root, _dirs, files in os.walk(os.path.join(ds, '.chunks')):
        if files:
            return True
    return False


src = os.path.join(work, 'src')
os.makedirs(src)
for i in range(16):
    with open(os.path.join(src, 'photo%02d.jpg' % i), 'wb') as f:
        f.write(os.urandom(5 << 20))
ds_a, ds_b, certs = (os.path.join(work, d) for d in ('ds-a', 'ds-b', 'certs'))
os.makedirs(certs)
procs = []
try:
    pa, repo_a, fp = start(ds_a, '--cert-out', certs)
    procs.append(pa)
    pb, repo_b, fp_b = start(ds_b, '--cert', os.path.join(certs, 'cert.pem'),
                             '--key', os.path.join(certs, 'key.pem'))
    procs.append(pb)
    assert fp == fp_b, (fp, fp_b)
    # one pin per repository (PBS_FINGERPRINT serves a single repository)
    env = dict(os.environ, PBS_PASSWORD='SECRET')
    env.pop('PBS_REPOSITORY', None)
    env.pop('PBS_FINGERPRINT', None)

    start_time = time.monotonic()
    run = subprocess.Popen([t.CAIRN, 'backup', 'photos.pxar:' + src, '--repository', repo_a,
                            '--repository', repo_b, '--fingerprint', fp, '--fingerprint', fp,
                            '--backup-id', 'family',
                            '--stall-timeout', '3', '--output-format', 'json'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # stop B once its first chunks arrived (bounded wait)
    deadline = time.monotonic() + 120
    while not has_chunks(ds_b) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if run.poll() is not None:
        raise AssertionError('the backup ended (%s) before the server could be stopped: %s'
                             % (run.returncode, run.communicate()[1]))
    assert has_chunks(ds_b), 'no chunk reached server B'
    pb.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        out, err = run.communicate(timeout=300)
    finally:
        pb.send_signal(signal.SIGCONT)
    took = time.monotonic() - start_time
    after_stop = time.monotonic() - stopped_at
    assert run.returncode == 3, (run.returncode, out, err)
    res = json.loads(out)
    assert res['targets-ok'] == 1 and res['targets-total'] == 2, res
    assert 'stalled' in err and 'going on without it' in err, err
    # well below the 120 s I/O timeout the run used to wait for
    assert after_stop < 60, (after_stop, err)
    print('stopped server given up after %.1f s; run took %.1f s (exit 3)' % (after_stop, took))

    snap = res['snapshot']
    d = os.path.join(work, 'restored')
    t.run('restore', snap, 'photos.pxar', d, '--repository', repo_a, '--fingerprint', fp, env=env, check=0)
    t.compare_trees(src, d)
    assert not os.path.exists(os.path.join(ds_b, snap, 'index.json.blob'))
    print('the other repository has the complete snapshot; none published on the stopped one')
finally:
    for p in procs:
        p.send_signal(signal.SIGCONT)
        p.terminate()
        p.wait()
shutil.rmtree(work)
print('all ok')
