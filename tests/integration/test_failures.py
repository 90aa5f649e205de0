#!/usr/bin/python3
"""Bad input and bad luck, with the real cairn binary: each gives a clear
message and the documented exit code, and the store stays consistent.
  - missing source path                      -> 1, names the path
  - unreadable file (run as an unprivileged user) -> 3, snapshot published
  - corrupt or missing chunk in the store    -> restore/verify 4, names the chunk
  - full disk (a small tmpfs when root)      -> 5, nothing that looks finished
  - restore or pxar extract onto a full disk -> 5 at the first file that does
    (the same)                                  not fit, one message
  - file cache on a full disk (the same)     -> 0, a warning that says so
  - SIGKILL in the middle of a backup        -> no snapshot, next backup ok
"""
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
os.chmod(work, 0o755)
src = os.path.join(work, 'src')
store = t.store_path('store')
t.make_tree(src)

# missing source
p = t.run('backup', 'data.pxar:' + os.path.join(work, 'missing'), '--store', store, check=1)
assert 'missing' in p.stderr and 'No such file' in p.stderr, p.stderr
assert t.run_json('snapshot', 'list', '--store', store) == []
print('missing source: exit 1:', p.stderr.strip())

# bad arguments
p = t.run('backup', 'nocolon', '--store', store, check=2)
p = t.run('backup', 'bad name.pxar:' + src, '--store', store, check=2)
p = t.run('restore', 'host/x/notatime', 'data.pxar', work, '--store', store, check=2)

# unreadable file: root reads everything, so run as an unprivileged user
user = None
for name in ('nobody', 'daemon'):
    try:
        user = pwd.getpwnam(name)
        break
    except KeyError:
        pass
if os.geteuid() == 0 and user and shutil.which('setpriv'):
    usrc = os.path.join(work, 'usrc')
    os.makedirs(usrc)
    for n in ('ok1', 'secret', 'ok2'):
        with open(os.path.join(usrc, n), 'w') as f:
            f.write(n * 100)
    os.chmod(os.path.join(usrc, 'secret'), 0)
    ustore = t.store_path('ustore')
    os.makedirs(ustore)
    for d in (usrc, ustore):
        os.chown(d, user.pw_uid, user.pw_gid)
    for n in ('ok1', 'ok2'):
        os.chown(os.path.join(usrc, n), user.pw_uid, user.pw_gid)
    ustore_ds = os.path.join(ustore, 'ds')
    cmd = ['setpriv', '--reuid=%d' % user.pw_uid, '--regid=%d' % user.pw_gid, '--clear-groups',
           t.CAIRN, 'backup', 'u.pxar:' + usrc, '--store', ustore_ds, '--backup-id', 'u']
    p = subprocess.run(cmd, capture_output=True, text=True, env={'PATH': os.environ['PATH'],
                                                              'HOME': ustore})
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert 'secret' in p.stderr, p.stderr
    snaps = t.run_json('snapshot', 'list', '--store', ustore_ds)
    assert len(snaps) == 1, snaps
    d = os.path.join(work, 'urestore')
    t.run('restore', snaps[0]['snapshot'], 'u.pxar', d, '--store', ustore_ds, check=0)
    assert sorted(os.listdir(d)) == ['ok1', 'ok2'], os.listdir(d)
    print('unreadable file: exit 3, the rest backed up')
else:
    print('unreadable file: skipped (needs root and setpriv to run as another user)')

# corrupt chunk: a source of 24 MiB spans at least two chunks (16 MiB max)
csrc = os.path.join(work, 'csrc')
os.makedirs(csrc)
for i in range(3):
    with open(os.path.join(csrc, 'r%d.bin' % i), 'wb') as f:
        f.write(os.urandom(8 << 20))
out = t.run_json('backup', 'data.pxar:' + csrc, '--store', store, '--backup-id', 'c')
chunks = t.chunk_files(store)
assert chunks
# corrupt the archive's second chunk (file content: the extractor skips the
# file and goes on, the result must still say "corrupt"), keeping its size
with open(os.path.join(store, out['snapshot'], 'data.pxar.didx'), 'rb') as f:
    didx = f.read()
assert len(didx) >= 4096 + 2 * 40, 'the archive should span several chunks'
second = didx[4096 + 40 + 8:4096 + 80].hex()
victim = [c for c in chunks if os.path.basename(c) == second][0]
with open(victim, 'r+b') as f:
    f.seek(os.path.getsize(victim) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0xff]))
digest = os.path.basename(victim)
p = t.run('restore', out['snapshot'], 'data.pxar', os.path.join(work, 'r1'), '--store', store,
          check=4)
assert digest in p.stderr, p.stderr
print('corrupt chunk: restore exit 4:', p.stderr.strip()[:200])
p = t.run('restore', out['snapshot'], 'data.pxar', '--verify-only', '--store', store, check=4)
assert digest in p.stderr, p.stderr
p = t.run('verify', '--store', store, check=4)
assert digest in p.stderr and 'FAILED' in p.stdout, (p.stdout, p.stderr)
# verify quarantined it: now it is missing
assert not os.path.exists(victim) and os.path.exists(victim + '.0.bad')
p = t.run('restore', out['snapshot'], 'data.pxar', os.path.join(work, 'r2'), '--store', store,
          check=4)
assert digest in p.stderr, p.stderr
print('missing chunk: restore exit 4:', p.stderr.strip()[:200])
# the next backup of the same data stores the chunk again: healed
time.sleep(1.1)
out = t.run_json('backup', 'data.pxar:' + csrc, '--store', store, '--backup-id', 'c')
assert os.path.exists(victim)
t.run('restore', out['snapshot'], 'data.pxar', os.path.join(work, 'r3'), '--store', store,
      check=0)
t.compare_trees(csrc, os.path.join(work, 'r3'))
print('next backup healed the store')
shutil.rmtree(store)

# full disk: a datastore on a small tmpfs
with t.small_tmpfs(os.path.join(work, 'tmpfs'), '16m') as mounted:
    if mounted:
        mnt = os.path.join(work, 'tmpfs')
        big = os.path.join(work, 'big')
        os.makedirs(big)
        for i in range(3):  # 24 MiB of data for 16 MiB (4 MiB taken by the empty store)
            with open(os.path.join(big, 'random%d.bin' % i), 'wb') as f:
                f.write(os.urandom(8 << 20))
        fstore = os.path.join(mnt, 'store')
        p = t.run('backup', 'big.pxar:' + big, '--store', fstore, '--backup-id', 'full',
                  check=5)
        assert 'No space left' in p.stderr, p.stderr
        assert t.run_json('snapshot', 'list', '--store', fstore) == []
        leftovers = [x for x in os.listdir(os.path.join(fstore, 'host', 'full'))
                     if not x.startswith('.') and x != 'owner']
        assert leftovers == [], leftovers
        print('full disk: exit 5:', p.stderr.strip()[:200])
        # restored onto it: every file after the first that does not fit
        # would fail the same way
        bstore = t.store_path('bigstore')
        out = t.run_json('backup', 'big.pxar:' + big, '--store', bstore, '--backup-id', 'big')
        shutil.rmtree(fstore)
        p = t.run('restore', out['snapshot'], 'big.pxar', os.path.join(mnt, 'r'), '--store',
                  bstore, check=5)
        assert 'No space left' in p.stderr, p.stderr
        assert p.stderr.count('No space left') == 1, p.stderr
        print('restore onto a full disk: exit 5:', p.stderr.strip()[:200])
        # the same from a standalone archive
        shutil.rmtree(os.path.join(mnt, 'r'))
        archive = os.path.join(work, 'big.pxar')
        t.run('pxar', 'create', archive, big, check=0)
        p = t.run('pxar', 'extract', archive, os.path.join(mnt, 'x'), check=5)
        assert p.stderr.count('No space left') == 1, p.stderr
        print('pxar extract onto a full disk: exit 5')

# the file cache of a metadata-mode run on a disk that fills up: the
# snapshot is fine, the warning says why the next run reads every file
with t.small_tmpfs(os.path.join(work, 'fctmpfs'), '512k') as mounted:
    if mounted:
        mnt = os.path.join(work, 'fctmpfs')
        many = os.path.join(work, 'many')
        os.makedirs(many)
        for i in range(3000):  # about 300 KB of cache records
            open(os.path.join(many, 'f%04d' % i), 'w').close()
        with open(os.path.join(mnt, 'fill'), 'wb') as f:
            f.write(b'\0' * (448 << 10))  # 64 KiB left: the cache starts, then fills it
        p = t.run('backup', 'm.pxar:' + many, '--store', t.store_path('fcstore'),
                  '--backup-id', 'fc', '--change-detection-mode', 'metadata',
                  '--file-cache-dir', os.path.join(mnt, 'fc'), check=0)
        assert 'file cache' in p.stderr and 'no space left on the disk of ' + \
            os.path.join(mnt, 'fc') in p.stderr, p.stderr
        print('file cache on a full disk: exit 0,', p.stderr.strip().splitlines()[-1][:160])

# SIGKILL in the middle of a backup
big = os.path.join(work, 'bigsrc')
os.makedirs(big)
for i in range(24):
    with open(os.path.join(big, 'f%02d' % i), 'wb') as f:
        f.write(os.urandom(8 << 20))
kstore = t.store_path('kstore')
t.run('backup', 'small.pxar:' + src, '--store', kstore, '--backup-id', 'k', check=0)
before = t.run_json('snapshot', 'list', '--store', kstore)
group = os.path.join(kstore, 'host', 'k')
env = dict(os.environ)
env.pop('PBS_REPOSITORY', None)


def kill_mid_run(delay):
    """Starts a backup and, `delay` s after its snapshot directory under
    construction appears, stops it (SIGSTOP) and looks: if it has not
    published yet, kills it (SIGKILL) and returns True. A finished or
    published run is let go, its snapshot removed, and False returned, so
    the caller tries sooner. Stopping first makes the check and the kill
    one instant: a backup that published between a check and a kill
    would look like one that survived SIGKILL."""
    proc = subprocess.Popen([t.CAIRN, 'backup', 'big.pxar:' + big, '--store', kstore,
                             '--backup-id', 'k', '--threads', '1'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not [x for x in os.listdir(group) if x.startswith('.tmp')] and \
            time.time() < deadline and proc.poll() is None:
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(signal.SIGSTOP)
    old = [s['snapshot'].split('/')[-1] for s in before]
    published = [x for x in os.listdir(group)
                 if not x.startswith('.') and x != 'owner' and x not in old]
    running = proc.poll() is None and not published
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not running:  # it got that far: remove that snapshot and try sooner
        for x in os.listdir(group):
            if not x.startswith('.') and x != 'owner' and x not in old:
                shutil.rmtree(os.path.join(group, x))
        time.sleep(1.1)
    return running


killed_mid_run = any(kill_mid_run(d) for d in (0.2, 0.05, 0.0))
assert killed_mid_run, 'backup finished before it could be killed'
after = t.run_json('snapshot', 'list', '--store', kstore)
assert after == before, (before, after)
v = t.run_json('verify', '--store', kstore)
assert all(x['state'] == 'ok' for x in v), v
time.sleep(1.1)
out = t.run_json('backup', 'big.pxar:' + big, '--store', kstore, '--backup-id', 'k')
d = os.path.join(work, 'krestore')
t.run('restore', out['snapshot'], 'big.pxar', d, '--store', kstore, check=0)
t.compare_trees(big, d)
print('SIGKILL mid-backup: store consistent, next backup ok')

shutil.rmtree(work)
print('all ok')
