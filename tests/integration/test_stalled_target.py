#!/usr/bin/python3
"""Two PBS repositories (two emulators sharing one certificate), one of
them stopped (SIGSTOP) in the middle of the backup, once during the upload
and once while its backup session is set up: with --stall-timeout 5 the
stopped one is given up within seconds, the other gets its complete
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

    def stop_b_when(run, ready, what):
        """Stops B (SIGSTOP) once ready() while run goes on; lets run end
        (B continued after). (stdout, stderr, seconds from the stop)."""
        deadline = time.monotonic() + 120
        while not ready() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if run.poll() is not None:
            raise AssertionError('cairn ended (%s) before the server could be stopped: %s'
                                 % (run.returncode, run.communicate()[1]))
        assert ready(), what
        pb.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            out, err = run.communicate(timeout=300)
        finally:
            pb.send_signal(signal.SIGCONT)
        return out, err, time.monotonic() - stopped_at

    def stalled_run(ready, what, bid):
        """A backup to both; B stopped (SIGSTOP) once ready(); B given up
        within the stall timeout, A gets its complete snapshot."""
        start_time = time.monotonic()
        run = subprocess.Popen([t.CAIRN, 'backup', 'photos.pxar:' + src, '--repository', repo_a,
                                '--repository', repo_b, '--fingerprint', fp, '--fingerprint', fp,
                                '--backup-id', bid,
                                '--stall-timeout', '5', '--output-format', 'json'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err, after_stop = stop_b_when(run, ready, what)
        took = time.monotonic() - start_time
        assert run.returncode == 3, (run.returncode, out, err)
        res = json.loads(out)
        assert res['targets-ok'] == 1 and res['targets-total'] == 2, res
        assert 'going on without it' in err, err
        # well below the 120 s I/O timeout the run used to wait for
        assert after_stop < 60, (after_stop, err)
        print('%s: stopped server given up after %.1f s; run took %.1f s (exit 3)'
              % (what, after_stop, took))
        snap = res['snapshot']
        d = os.path.join(work, 'restored-' + bid)
        t.run('restore', snap, 'photos.pxar', d, '--repository', repo_a, '--fingerprint', fp,
              env=env, check=0)
        t.compare_trees(src, d)
        assert not os.path.exists(os.path.join(ds_b, snap, 'index.json.blob'))
        return err

    # stopped once its first chunks arrived: the upload's watchdog
    err = stalled_run(lambda: has_chunks(ds_b), 'stopped during the upload', 'family')
    assert 'stalled' in err or 'no data from server for 5 s' in err, err
    # stopped as soon as its backup session made the snapshot directory,
    # while the session is set up (index creation): each request waits no
    # longer than the stall timeout either
    group_b = os.path.join(ds_b, 'host', 'setup')
    stalled_run(lambda: os.path.isdir(group_b) and os.listdir(group_b),
                'stopped while the session is set up', 'setup')
    print('the other repository has the complete snapshot; none published on the stopped one')

    # cairn run: a target given up during the backup is not asked again
    # whether it has the snapshot, nor pruned (each would wait again); its
    # record names the real failure
    token = os.path.join(work, 'token')
    with open(token, 'w') as f:
        f.write('SECRET\n')
    os.chmod(token, 0o600)
    conf = os.path.join(work, 'cairn.conf')
    targets = ''.join('[target %s]\ntype = pbs\nrepository = %s\nfingerprint = %s\n'
                      'token-file = %s\nkeep-last = 5\n\n' % (name, repo, fp, token)
                      for name, repo in (('primary', repo_a), ('replica', repo_b)))
    with open(conf, 'w') as f:
        f.write('[cairn]\nbackup-id = run\nstate-dir = %s\nstall-timeout = 5\n\n'
                '[source media]\npath = %s\narchive = photos.pxar\n\n%s'
                % (os.path.join(work, 'state'), src, targets))
    run = subprocess.Popen([t.CAIRN, 'run', '--config', conf], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    group_b = os.path.join(ds_b, 'host', 'run')
    out, err, after_stop = stop_b_when(run, lambda: os.path.isdir(group_b) and os.listdir(group_b),
                                       'stopped while the run set up its session')
    assert run.returncode == 3, (run.returncode, out, err)
    assert after_stop < 30, (after_stop, err)
    assert 'target replica: not pruned' in err, err
    rec = json.load(open(os.path.join(work, 'state', 'history.json')))[-1]
    replica = [x for x in rec['targets'] if x['name'] == 'replica'][0]
    assert replica['result'] == 'failed', replica
    # (the server makes the snapshot directory before it answers the
    # protocol upgrade: stopped in between, the session is not set up)
    assert any(m in replica['message'] for m in ('no data from server', 'stalled',
                                                'no answer to the protocol upgrade for')), replica
    primary = [x for x in rec['targets'] if x['name'] == 'primary'][0]
    assert primary['result'] == 'ok', primary
    print('cairn run: replica given up after %.1f s, not listed or pruned again' % after_stop)
finally:
    for p in procs:
        p.send_signal(signal.SIGCONT)
        p.terminate()
        p.wait()
shutil.rmtree(work)
print('all ok')
