#!/usr/bin/python3
"""Certificate trust of the cairn command with two PBS servers that have
different self-signed certificates (issue #20, item 1): one --fingerprint
per --repository, a wrong pin costing only its own server, the terminal
prompt (answered n and y, on a pseudo-terminal), the remembered
fingerprints file used by later runs, and clear refusals without a
terminal."""
import json
import os
import pty
import select
import shutil
import stat
import subprocess
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
cfg = os.path.join(work, 'config')
fp_file = os.path.join(cfg, 'cairn', 'fingerprints')
# no PBS_FINGERPRINT unless a case sets it; remembered pins go to cfg
ENV = {'PBS_PASSWORD': 'SECRET', 'XDG_CONFIG_HOME': cfg}


def cairn(*args, check=None, env=None):
    e = dict(ENV)
    e.update(env or {})
    os.environ.pop('PBS_FINGERPRINT', None)
    return t.run(*args, env=e, check=check)


def snapshots(ds):
    d = os.path.join(ds, 'host', 'two')
    return sorted(x for x in os.listdir(d) if not x.startswith('.') and
                  os.path.isdir(os.path.join(d, x))) if os.path.isdir(d) else []


def hostport(repo):
    return '127.0.0.1:' + repo.split(':')[1]


def run_pty(args, answer):
    """Runs cairn on a pseudo-terminal (stdin, stdout, stderr), answers the
    certificate question with answer; returns (exit code, output)."""
    e = dict(os.environ)
    e.pop('PBS_FINGERPRINT', None)
    e.pop('PBS_REPOSITORY', None)
    e.update(ENV)
    master, slave = pty.openpty()
    p = subprocess.Popen([t.CAIRN] + args, stdin=slave, stdout=slave, stderr=slave, env=e,
                         start_new_session=True)
    os.close(slave)
    out, answered = b'', False
    deadline = time.monotonic() + 300
    try:
        while True:
            left = deadline - time.monotonic()
            ready = select.select([master], [], [], max(left, 0))[0]
            if not ready:
                raise AssertionError('cairn on a terminal did not finish: %r' % out)
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            out += data
            if not answered and b'(y/n)' in out:
                os.write(master, answer)
                answered = True
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return rc, out.decode(errors='replace')


try:
    fp_a, fp_b = env_a['PBS_FINGERPRINT'], env_b['PBS_FINGERPRINT']
    assert fp_a != fp_b, 'the two emulators must have different certificates'

    # one pin per repository: both servers get the snapshot
    p = cairn('backup', 'data.pxar:' + src, '--backup-id', 'two', '--repository', repo_a,
              '--repository', repo_b, '--fingerprint', fp_a, '--fingerprint', fp_b,
              '--output-format', 'json', check=0)
    out = json.loads(p.stdout)
    assert out['targets-ok'] == 2, out
    snap = out['snapshot'].split('/')[-1]
    assert snapshots(ds_a) == [snap] and snapshots(ds_b) == [snap], (snapshots(ds_a),
                                                                     snapshots(ds_b))
    print('two servers, two pins: both have the snapshot')

    # a wrong pin for B fails B only
    time.sleep(1.1)
    p = cairn('backup', 'data.pxar:' + src, '--backup-id', 'two', '--repository', repo_a,
              '--repository', repo_b, '--fingerprint', fp_a, '--fingerprint', fp_a,
              '--output-format', 'json', check=3)
    out = json.loads(p.stdout)
    assert out['targets-ok'] == 1 and out['targets-total'] == 2, out
    assert 'mismatch' in p.stderr and fp_b in p.stderr, p.stderr
    assert len(snapshots(ds_a)) == 2 and len(snapshots(ds_b)) == 1, (snapshots(ds_a),
                                                                     snapshots(ds_b))
    print('wrong pin on one server: that one dropped, the other backed up (exit 3)')

    # counts must match; a bad fingerprint is a usage error
    p = cairn('backup', 'data.pxar:' + src, '--repository', repo_a, '--repository', repo_b,
              '--fingerprint', fp_a, check=2)
    assert 'one per --repository' in p.stderr, p.stderr
    cairn('snapshot', 'list', '--repository', repo_a, '--fingerprint', 'zz:11', check=2)
    # other commands taking --repository take --fingerprint too
    lst = json.loads(cairn('snapshot', 'list', '--repository', repo_b, '--fingerprint', fp_b,
                           '--output-format', 'json', check=0).stdout)
    assert len(lst) == 1, lst
    # PBS_FINGERPRINT still pins a single repository
    cairn('snapshot', 'list', '--repository', repo_a, env={'PBS_FINGERPRINT': fp_a}, check=0)

    # no pin, no terminal: refused with host:port, the fingerprint and the way to pin it
    p = cairn('snapshot', 'list', '--repository', repo_a, check=1)
    assert hostport(repo_a) in p.stderr and fp_a in p.stderr and '--fingerprint' in p.stderr, \
        p.stderr
    assert not os.path.exists(fp_file)
    print('unknown certificate without a terminal: refused, fingerprint and pin shown')

    # on a terminal: shown and asked; n refuses and remembers nothing
    rc, text = run_pty(['snapshot', 'list', '--repository', repo_a], b'n\n')
    assert rc == 1, (rc, text)
    assert fp_a in text and 'Are you sure you want to continue connecting? (y/n)' in text, text
    assert not os.path.exists(fp_file)
    # y connects and remembers host:port with the fingerprint, mode 0600
    rc, text = run_pty(['snapshot', 'list', '--repository', repo_a], b'y\n')
    assert rc == 0, (rc, text)
    with open(fp_file) as f:
        assert f.read() == '%s %s\n' % (hostport(repo_a), fp_a)
    assert stat.S_IMODE(os.stat(fp_file).st_mode) == 0o600, oct(os.stat(fp_file).st_mode)
    print('terminal prompt: n refuses, y connects and remembers (0600)')

    # the next run uses the remembered fingerprint, without a terminal;
    # '' leaves A without a --fingerprint so that the remembered one applies
    time.sleep(1.1)
    p = cairn('backup', 'data.pxar:' + src, '--backup-id', 'two', '--repository', repo_a,
              '--repository', repo_b, '--fingerprint', '', '--fingerprint', fp_b,
              '--output-format', 'json', check=0)
    assert json.loads(p.stdout)['targets-ok'] == 2, p.stdout
    assert len(snapshots(ds_a)) == 3 and len(snapshots(ds_b)) == 2
    # B is remembered beside A
    rc, text = run_pty(['snapshot', 'list', '--repository', repo_b], b'y\n')
    assert rc == 0, (rc, text)
    with open(fp_file) as f:
        lines = sorted(f.read().splitlines())
    assert lines == sorted(['%s %s' % (hostport(repo_a), fp_a),
                            '%s %s' % (hostport(repo_b), fp_b)]), lines
    time.sleep(1.1)
    cairn('backup', 'data.pxar:' + src, '--backup-id', 'two', '--repository', repo_a,
          '--repository', repo_b, check=0)
    assert len(snapshots(ds_a)) == 4 and len(snapshots(ds_b)) == 3
    print('remembered fingerprints used by later runs, one per host:port')

    # a remembered fingerprint that no longer matches: refused without a terminal
    with open(fp_file, 'w') as f:
        f.write('%s %s\n' % (hostport(repo_a), fp_b))
    p = cairn('snapshot', 'list', '--repository', repo_a, check=1)
    assert 'changed' in p.stderr and fp_a in p.stderr and fp_file in p.stderr, p.stderr
    print('changed certificate without a terminal: refused')
finally:
    for proc in (proc_a, proc_b):
        proc.terminate()
        proc.wait()
shutil.rmtree(work)
print('all ok')
