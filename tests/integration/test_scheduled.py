"""End-to-end tests of scheduled runs: `cairn config check`, `cairn run`,
`cairn status`, `cairn verify --restore-test`, with PBS targets served by
the PBS emulator (tests/pbs_emulator/server.py) and a local datastore.

ZFS: these machines have no ZFS kernel module, so the ZFS snapshot source is
tested against a stand-in `zfs` program put first on PATH (written below):
it keeps its datasets in a JSON file, "snapshots" a dataset by copying its
mountpoint into <mountpoint>/.zfs/snapshot/<name>/, and logs every call.
It checks cairn's side (commands, paths, cleanup), not ZFS itself.

Usage: test_scheduled.py PATH/TO/cairn REPO_ROOT"""
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import ssl

CAIRN = os.path.abspath(sys.argv[1])
ROOT = os.path.abspath(sys.argv[2])
PY = '/usr/bin/python3'
SECRET = 'S3cr3t-token-value-never-in-argv'
# /dev/shm when there is one: making and removing a local datastore's 65536
# chunk directories takes a minute on a loaded CI disk, well under 1 s there.
TMP = tempfile.mkdtemp(prefix='cairn-sched-', dir='/dev/shm' if os.access('/dev/shm', os.W_OK) else None)
EXIT_PARTIAL, EXIT_BUSY, EXIT_CONFIG = 3, 7, 8

ZFS_STANDIN = r'''#!/usr/bin/python3
# Stand-in for zfs(8) used by cairn's tests (no ZFS on CI machines).
import json, os, shutil, sys
state_path = os.environ['ZFS_STANDIN_STATE']
st = json.load(open(state_path))
with open(st['log'], 'a') as f:
    f.write(' '.join(sys.argv[1:]) + '\n')
a = sys.argv[1:]
def snapdir(ds, name):
    return os.path.join(st['datasets'][ds], '.zfs', 'snapshot', name)
if a[:5] == ['get', '-H', '-o', 'value', 'mountpoint']:
    ds = a[5]
    if ds not in st['datasets']:
        sys.exit("cannot open '%s': dataset does not exist" % ds)
    print(st['datasets'][ds]); sys.exit(0)
if a[0] == 'snapshot':
    ds, name = a[1].split('@')
    d = snapdir(ds, name)
    if os.path.exists(d):
        sys.exit("cannot create snapshot '%s': dataset already exists" % a[1])
    shutil.copytree(st['datasets'][ds], d, symlinks=True, ignore=shutil.ignore_patterns('.zfs'))
    sys.exit(0)
if a[0] == 'list':
    ds = a[-1]
    base = os.path.join(st['datasets'][ds], '.zfs', 'snapshot')
    for n in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        print('%s@%s' % (ds, n))
    sys.exit(0)
if a[0] == 'destroy':
    ds, name = a[1].split('@')
    d = snapdir(ds, name)
    if not os.path.isdir(d):
        sys.exit("could not find any snapshots to destroy; check snapshot names.")
    shutil.rmtree(d); sys.exit(0)
sys.exit('zfs stand-in: unsupported: %r' % a)
'''


def run(args, env=None, timeout=120, check=None):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith('PBS_') or k in ('JOURNAL_STREAM', 'CAIRN_CONFIG'):
            del e[k]
    e['PATH'] = os.path.join(TMP, 'bin') + ':' + e['PATH']
    e['ZFS_STANDIN_STATE'] = os.path.join(TMP, 'zfs-state.json')
    e['TMPDIR'] = TMP
    if env:
        e.update(env)
    p = subprocess.run([CAIRN] + args, capture_output=True, text=True, env=e, timeout=timeout)
    if check is not None and p.returncode != check:
        raise AssertionError('cairn %s: exit %d, expected %d\nstdout:%s\nstderr:%s' %
                             (' '.join(args), p.returncode, check, p.stdout, p.stderr))
    return p


def write(path, text, mode=0o644):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)


class Emulator:
    def __init__(self):
        self.dirs = {'main': os.path.join(TMP, 'pbs-main'), 'replica': os.path.join(TMP, 'pbs-replica')}
        args = [PY, os.path.join(ROOT, 'tests/pbs_emulator/server.py'), '--port', '0',
                '--token', 'root@pam!nas:' + SECRET]
        for n, d in self.dirs.items():
            args += ['--datastore', '%s=%s' % (n, d)]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(os.path.join(TMP, 'emu.log'), 'w'),
                                  text=True)
        line = self.p.stdout.readline().split()
        assert line and line[0] == 'READY', 'emulator did not start: %r' % line
        self.port, self.fp = int(line[1]), line[2]

    def faults(self, body):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request('https://127.0.0.1:%d/api2/json/emulator/faults' % self.port,
                                     data=json.dumps(body).encode(), method='POST',
                                     headers={'Content-Type': 'application/json',
                                              'Authorization': 'PBSAPIToken=root@pam!nas:' + SECRET})
        urllib.request.urlopen(req, context=ctx, timeout=10).read()

    def snapshots(self, store):
        g = os.path.join(self.dirs[store], 'host', 'nas')
        if not os.path.isdir(g):
            return []
        return sorted(n for n in os.listdir(g)
                      if os.path.exists(os.path.join(g, n, 'index.json.blob')))

    def stop(self):
        self.p.terminate()
        self.p.wait()


def make_source(root):
    os.makedirs(os.path.join(root, 'photos', '2024'))
    os.makedirs(os.path.join(root, '.stfolder'))
    os.makedirs(os.path.join(root, '.stversions', 'old'))
    for i in range(12):
        write(os.path.join(root, 'photos', '2024', 'img%02d.jpg' % i), ('photo %d ' % i) * (500 * i + 1))
    write(os.path.join(root, 'notes.txt'), 'hello\n')
    write(os.path.join(root, '.stversions', 'old', 'notes~1.txt'), 'old\n')
    write(os.path.join(root, 'photos', '.syncthing.img99.jpg.tmp'), 'partial')
    write(os.path.join(root, 'photos', '~syncthing~img98.jpg.tmp'), 'partial')
    past = time.time() - 3600
    for dp, dn, fn in os.walk(root):
        for n in fn:
            os.utime(os.path.join(dp, n), (past, past))


def config(name, targets, extra_cairn='', source=None):
    path = os.path.join(TMP, name)
    src = source or ('[source media]\npath = %s\narchive = media.pxar\n' % os.path.join(TMP, 'media'))
    write(path, '[cairn]\nbackup-id = nas\nstate-dir = %s\n%s\n%s\n%s' %
          (os.path.join(TMP, 'state'), extra_cairn, src, targets))
    return path


def pbs_target(emu, name, store, keep, port=None, token=None):
    return ('[target %s]\ntype = pbs\nrepository = root@pam!nas@127.0.0.1:%d:%s\n'
            'fingerprint = %s\ntoken-file = %s\n%s\n' %
            (name, port or emu.port, store, emu.fp, token or os.path.join(TMP, 'token'), keep))


def local_target(name, keep='keep-last = 1', gc=False):
    """A local store target. Its garbage collection walks all 65536 chunk
    directories, so only the test that checks it (test_full_run) has it."""
    return '[target %s]\ntype = local\npath = %s\n%s\n%s' % (
        name, os.path.join(TMP, 'store'), keep, '' if gc else 'gc = no\n')


def history():
    return json.load(open(os.path.join(TMP, 'state', 'history.json')))


def test_config_errors(emu):
    """typo (line number), missing / world-readable token file, the shipped example."""
    good = pbs_target(emu, 'primary', 'main', 'keep-daily = 7')
    typo = config('typo.conf', good.replace('keep-daily = 7', 'keep-daily = 7\nkeep-dialy = 4'))
    lines = open(typo).read().splitlines()
    lineno = lines.index('keep-dialy = 4') + 1
    for cmd in (['config', 'check', '--config', typo], ['run', '--config', typo]):
        p = run(cmd, check=EXIT_CONFIG)
        assert '%s:%d:' % (typo, lineno) in p.stderr and "unknown key 'keep-dialy'" in p.stderr, p.stderr
    bad = config('syntax.conf', good + 'this line has no equals sign\n')
    n = len(open(bad).read().splitlines())
    p = run(['config', 'check', '--config', bad], check=EXIT_CONFIG)
    assert ':%d: syntax error' % n in p.stderr, p.stderr
    p = run(['config', 'check', '--config', config('dup.conf', good + good.replace('primary', 'x').replace('keep-daily = 7', 'keep-daily = 1\nkeep-daily = 2'))], check=EXIT_CONFIG)
    assert "'keep-daily' is given twice" in p.stderr, p.stderr

    # a source not there (yet): a warning, the config itself is valid
    gone = config('gone.conf', good, source='[source media]\npath = /nonexistent/media\n'
                  'archive = media.pxar\n')
    p = run(['config', 'check', '--config', gone], check=0)
    assert "source 'media': /nonexistent/media: No such file" in p.stderr, p.stderr

    missing = config('missing.conf', pbs_target(emu, 'primary', 'main', '', token='/nonexistent/token'))
    p = run(['config', 'check', '--config', missing], check=EXIT_CONFIG)
    assert 'token file /nonexistent/token does not exist' in p.stderr and 'missing.conf:' in p.stderr, p.stderr

    loose = os.path.join(TMP, 'loose-token')
    write(loose, SECRET + '\n', 0o644)
    conf = config('loose.conf', pbs_target(emu, 'primary', 'main', '', token=loose))
    for cmd in (['config', 'check', '--config', conf], ['run', '--config', conf]):
        p = run(cmd, check=EXIT_CONFIG)
        assert 'accessible by other users' in p.stderr and 'chmod o-rwx' in p.stderr, p.stderr
        assert SECRET not in p.stderr + p.stdout

    # the shipped example, with its token files pointed at ours
    ex = open(os.path.join(ROOT, 'contrib', 'cairn.conf.example')).read()
    ex = ex.replace('/etc/cairn/primary.token', os.path.join(TMP, 'token'))
    ex = ex.replace('/etc/cairn/replica.token', os.path.join(TMP, 'token'))
    write(os.path.join(TMP, 'example.conf'), ex)
    p = run(['config', 'check', '--config', os.path.join(TMP, 'example.conf')], check=0)
    assert 'source media: /mnt/media' in p.stdout, p.stdout
    assert 'keep 7 daily, 4 weekly, 6 monthly' in p.stdout, p.stdout
    assert 'keep 30 daily, 8 weekly, 12 monthly, 2 yearly' in p.stdout, p.stdout
    assert p.stdout.count('PBS ') == 2 and 'exclude .stversions' in p.stdout, p.stdout
    print('ok: config errors and the shipped example')


def test_full_run(emu):
    """every source to PBS main + replica + a local store; prune; history; status; hook; metrics."""
    metrics = os.path.join(TMP, 'metrics', 'cairn.prom')
    os.makedirs(os.path.dirname(metrics))
    hook = os.path.join(TMP, 'hook')
    conf = config('full.conf',
                  pbs_target(emu, 'primary', 'main', 'keep-daily = 7') +
                  pbs_target(emu, 'replica', 'replica', 'keep-last = 1') + local_target('usb', gc=True),
                  extra_cairn='metrics-file = %s\non-success = env > %s.env; cat > %s.json\n'
                              'restore-test-sample = 4\n' % (metrics, hook, hook))
    p = run(['run', '--config', conf], check=0)
    assert len(emu.snapshots('main')) == 1 and len(emu.snapshots('replica')) == 1, p.stderr
    rec = json.load(open(hook + '.json'))
    assert rec['result'] == 'ok' and rec['exit-code'] == 0, rec
    assert [t['result'] for t in rec['targets']] == ['ok'] * 3, rec
    # 16 files, of which .stversions/old/notes~1.txt and the two Syncthing temp files are left out
    assert rec['sources'][0]['files'] in (13, 14), rec['sources'][0]
    assert all(t['restore-test']['sampled'] == 4 and t['restore-test']['failed'] == 0
               for t in rec['targets']), rec
    env = open(hook + '.env').read()
    assert SECRET not in env and SECRET not in json.dumps(rec), 'secret leaked to the hook'
    listing = run(['snapshot', 'files', '--store', os.path.join(TMP, 'store'),
                   'host/nas/' + emu.snapshots('main')[0], 'media.pxar'], check=0).stdout
    assert '/photos/2024/img03.jpg' in listing and '.stfolder' not in listing, listing
    assert 'syncthing' not in listing and '.stversions' not in listing, listing

    time.sleep(1.1)  # a new snapshot needs a newer second
    run(['run', '--config', conf], check=0)
    # keep-daily 7 keeps the newest snapshot of each day: both are from today
    assert len(emu.snapshots('main')) == 1, emu.snapshots('main')
    assert len(emu.snapshots('replica')) == 1, 'replica keep-last 1 not applied'
    recs = [r for r in history() if r['config'] == conf]
    last = recs[-1]
    assert [t.get('pruned') for t in last['targets']] == [1, 1, 1], last['targets']
    assert [('gc-removed-chunks' in t) for t in last['targets']] == [False, False, True], last['targets']
    assert 'restore-test' not in last['targets'][0], 'restore test ran again within 7 days'
    st = json.loads(run(['status', '--config', conf, '--output-format', 'json'], check=0).stdout)
    assert set(st) == {'primary', 'replica', 'usb'} and len(st['usb']['runs']) == 2, st
    assert st['primary']['runs'][0]['result'] == 'ok' and st['primary']['runs'][0]['snapshots'], st
    text = run(['status', '--config', conf], check=0).stdout
    assert 'target replica:' in text and 'host/nas/' in text, text
    m = open(metrics).read()
    for name in ['cairn_run_last_success{', 'cairn_target_last_success_timestamp_seconds{',
                 'cairn_source_last_bytes_read{', 'cairn_target_last_restore_test_failures{']:
        assert name in m, name
    assert 'cairn_run_last_success{config="%s"} 1' % conf in m, m
    p = run(['verify', '--restore-test', '--sample', '3', '--config', conf], check=0)
    assert p.stdout.count('3 sampled') == 3, p.stdout
    print('ok: full run, prune, history, status, hook, metrics, restore test')
    return conf


def test_target_down(emu):
    down = pbs_target(emu, 'gone', 'main', 'keep-last = 3', port=1)
    conf = config('down.conf', down + local_target('usb'))
    p = run(['run', '--config', conf], check=EXIT_PARTIAL)
    assert 'target gone' in p.stderr and 'cannot open target' in p.stderr, p.stderr
    last = history()[-1]
    assert last['result'] == 'partial' and last['targets'][0]['result'] == 'failed', last
    assert last['targets'][1]['result'] == 'ok', last
    failed = os.path.join(TMP, 'failed.json')
    conf = config('alldown.conf', down, extra_cairn='on-success = touch %s.ok\non-failure = cat > %s\n'
                  % (failed, failed))
    p = run(['run', '--config', conf], check=1)
    assert history()[-1]['result'] == 'failed'
    rec = json.load(open(failed))  # the on-failure hook got the record
    assert rec['result'] == 'failed' and rec['exit-code'] == 1 and not os.path.exists(failed + '.ok'), rec
    assert 'cannot open target' in rec['targets'][0]['message'], rec
    print('ok: target down -> 3 (others go on), all down -> 1')


def test_concurrent_and_stale_lock(emu):
    started = os.path.join(TMP, 'hook-started')
    conf = config('slow.conf', local_target('usb'),
                  extra_cairn='on-success = touch %s; sleep 4\n' % started)
    e = dict(os.environ, TMPDIR=TMP)
    # the last test's runs may have published a snapshot to usb this second
    time.sleep(1.1)
    first = subprocess.Popen([CAIRN, 'run', '--config', conf], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=e)
    t0 = time.time()
    while not os.path.exists(started):
        if first.poll() is not None:
            raise AssertionError('first run ended (exit %d) before its hook: %s'
                                 % (first.returncode, first.stderr.read().decode()))
        assert time.time() - t0 < 60, 'first run did not reach its hook'
        time.sleep(0.05)
    t1 = time.time()
    p = run(['run', '--config', conf], check=EXIT_BUSY)
    assert time.time() - t1 < 3, 'second run waited instead of exiting'
    assert 'another run' in p.stderr, p.stderr
    first.kill()  # SIGKILL: the lock must not outlive it
    first.wait()
    os.unlink(started)
    conf2 = config('fast.conf', local_target('usb'))
    # same lock? no: the lock is per config; take the slow config's own lock again
    write(conf, open(conf).read().replace('on-success = touch %s; sleep 4\n' % started, ''))
    time.sleep(1.1)  # the killed run may have published a snapshot this second
    run(['run', '--config', conf], check=0)
    time.sleep(1.1)
    run(['run', '--config', conf2], check=0)
    print('ok: second run exits 7 at once; a killed run leaves no lock behind')


def test_metadata_mode(emu):
    """change-detection-mode = metadata in a source: the second nightly run
    to a PBS target and a local store reads nothing and reuses every file;
    the file caches live in state-dir/filecache."""
    src = ('[source media]\npath = %s\narchive = media.pxar\nbackup-id = nas-md\n'
           'change-detection-mode = metadata\n' % os.path.join(TMP, 'media'))
    conf = config('md.conf', pbs_target(emu, 'primary', 'main', '') +
                  local_target('usb', 'keep-last = 5'), source=src)
    run(['run', '--config', conf], check=0)
    first = history()[-1]['sources'][0]
    assert first['bytes-read'] > 0 and first['files-reused'] == 0, first
    assert len(os.listdir(os.path.join(TMP, 'state', 'filecache'))) == 2  # one per target
    time.sleep(1.1)
    run(['run', '--config', conf], check=0)
    second = history()[-1]['sources'][0]
    assert second['bytes-read'] == 0 and second['files-reused'] == first['files'], second
    # the local store lost every chunk: the next run notices before it
    # reuses them, copies what the previous snapshot needs from the PBS
    # target (reading nothing) and ends partial (exit 3) saying so
    store = os.path.join(TMP, 'store')
    for d, _, fs in os.walk(os.path.join(store, '.chunks')):
        for f in fs:
            os.remove(os.path.join(d, f))
    time.sleep(1.1)
    run(['run', '--config', conf], check=3)
    third = history()[-1]['sources'][0]
    assert third['chunks-missing'] > 0 and third['bytes-read'] == 0, third
    assert third['result'] == 'partial' and 'lacked' in third['message'], third
    run(['verify', '--store', store, third['snapshot']], check=0)
    dest = os.path.join(TMP, 'md-restore')
    run(['restore', 'host/nas-md', 'media.pxar', dest, '--store', os.path.join(TMP, 'store')], check=0)
    for rel in ('photos/2024/img03.jpg', 'notes.txt'):
        assert open(os.path.join(dest, rel), 'rb').read() == \
            open(os.path.join(TMP, 'media', rel), 'rb').read(), rel
    print('ok: metadata change detection in scheduled runs')


def test_encrypted(emu):
    """keyfile + keyfile-password-file: a nightly run to PBS and a local
    store writes encrypted snapshots, the restore test reads them with the
    key; a wrong password is a config error (exit 8) before anything runs."""
    key = os.path.join(TMP, 'enc-key.json')
    pwfile = os.path.join(TMP, 'enc-key.pw')
    write(pwfile, 'correct horse\n', 0o600)
    e = dict(os.environ, PBS_ENCRYPTION_PASSWORD='correct horse')
    run(['key', 'create', '--kdf', 'pbkdf2', key], env=e, check=0)
    os.chmod(key, 0o600)
    src = ('[source media]\npath = %s\narchive = media.pxar\nbackup-id = nas-enc\n'
           % os.path.join(TMP, 'media'))
    extra = 'keyfile = %s\nkeyfile-password-file = %s\nrestore-test-sample = 3\n' % (key, pwfile)
    conf = config('enc.conf', pbs_target(emu, 'primary', 'main', '') +
                  local_target('usb', 'keep-last = 5'), extra_cairn=extra, source=src)
    run(['run', '--restore-test', '--config', conf], check=0)
    rec = history()[-1]
    assert all(t['restore-test']['sampled'] == 3 and t['restore-test']['failed'] == 0
               for t in rec['targets']), rec
    store = os.path.join(TMP, 'store')
    dest = os.path.join(TMP, 'enc-restore')
    p = run(['restore', 'host/nas-enc', 'media.pxar', dest, '--store', store], check=None)
    assert p.returncode != 0 and 'key' in p.stderr, ('restored without the key?', p.stderr)
    run(['restore', 'host/nas-enc', 'media.pxar', dest, '--store', store, '--keyfile', key],
        env=e, check=0)
    assert open(os.path.join(dest, 'notes.txt')).read() == 'hello\n'
    write(pwfile, 'wrong\n', 0o600)
    p = run(['run', '--config', conf], check=EXIT_CONFIG)
    assert 'enc-key.json' in p.stderr, p.stderr
    write(pwfile, 'correct horse\n', 0o644)  # readable by others: refused
    p = run(['config', 'check', '--config', conf], check=EXIT_CONFIG)
    assert 'key password file' in p.stderr and 'other users' in p.stderr, p.stderr
    print('ok: encrypted scheduled runs')


def test_zfs(emu):
    bindir = os.path.join(TMP, 'bin')
    os.makedirs(bindir, exist_ok=True)
    write(os.path.join(bindir, 'zfs'), ZFS_STANDIN, 0o755)
    mnt = os.path.join(TMP, 'mnt-media')
    make_source(mnt)
    zlog = os.path.join(TMP, 'zfs.log')
    json.dump({'log': zlog, 'datasets': {'rpool/media': mnt}}, open(os.path.join(TMP, 'zfs-state.json'), 'w'))
    snapdir = os.path.join(mnt, '.zfs', 'snapshot')
    # a snapshot left by a killed run
    os.makedirs(os.path.join(snapdir, 'cairn-19990101T000000Z'))
    src = '[source media]\nzfs-dataset = rpool/media\n'
    conf = config('zfs.conf', local_target('usb', 'keep-last = 5'), source=src)
    run(['run', '--config', conf], check=0)
    rec = history()[-1]
    s = rec['sources'][0]
    assert s['path'] == mnt and s['read-from'].startswith(snapdir + '/cairn-'), s
    assert os.listdir(snapdir) == [], 'snapshots left: %r' % os.listdir(snapdir)
    calls = open(zlog).read()
    assert 'destroy rpool/media@cairn-19990101T000000Z' in calls, calls

    # failed run (the only target is down): the snapshot still goes
    open(zlog, 'w').close()
    conf = config('zfsfail.conf', pbs_target(emu, 'gone', 'main', '', port=1), source=src)
    run(['run', '--config', conf], check=1)
    calls = open(zlog).read().splitlines()
    made = [c for c in calls if c.startswith('snapshot ')]
    assert len(made) == 1 and ('destroy ' + made[0].split()[1]) in calls, calls
    assert os.listdir(snapdir) == []

    # interrupted by SIGTERM (systemd stop) in the middle of the upload
    open(zlog, 'w').close()
    conf = config('zfsterm.conf', pbs_target(emu, 'primary', 'main', ''), source=src)
    emu.faults({'delay': 1.5})
    e = dict(os.environ, PATH=bindir + ':' + os.environ['PATH'], TMPDIR=TMP,
             ZFS_STANDIN_STATE=os.path.join(TMP, 'zfs-state.json'))
    p = subprocess.Popen([CAIRN, 'run', '--config', conf], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e, text=True)
    t0 = time.time()
    while not (os.path.isdir(snapdir) and os.listdir(snapdir)):
        assert time.time() - t0 < 30 and p.poll() is None, 'no snapshot made'
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    emu.faults({})
    assert p.returncode == 1, (p.returncode, err)
    assert os.listdir(snapdir) == [], 'snapshot left after SIGTERM'
    assert history()[-1]['result'] == 'interrupted', history()[-1]
    print('ok: zfs snapshot read, recorded with the real path, destroyed after success, '
          'failure, SIGTERM, and leftovers of killed runs')


def test_metrics_atomic(conf):
    """A reader polling the metrics file never sees a part of it."""
    metrics = os.path.join(TMP, 'metrics', 'cairn.prom')
    seen, stop, bad = set(), threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                data = open(metrics).read()
            except FileNotFoundError:
                continue
            if not data.endswith('\n') or 'cairn_target_last_restore_test_timestamp_seconds{' not in data:
                bad.append(data)
            seen.add(os.stat(metrics).st_ino)
    th = threading.Thread(target=reader)
    th.start()
    inode = os.stat(metrics).st_ino
    try:
        for _ in range(2):
            time.sleep(1.1)
            run(['run', '--config', conf, '--no-restore-test'], check=0)
    finally:
        stop.set()
        th.join()
    assert not bad, 'half-written metrics seen: %r' % bad[0][-200:]
    assert os.stat(metrics).st_ino != inode, 'metrics file rewritten in place'
    left = [n for n in os.listdir(os.path.dirname(metrics)) if n != 'cairn.prom']
    assert not left, 'temp files left: %r' % left
    print('ok: metrics replaced atomically (%d versions seen)' % len(seen))


def test_journal_and_dry_run(conf):
    err = open(os.path.join(TMP, 'journal-stderr'), 'w+')
    st = os.fstat(err.fileno())
    e = dict(os.environ, JOURNAL_STREAM='%d:%d' % (st.st_dev, st.st_ino), TMPDIR=TMP)
    p = subprocess.run([CAIRN, 'run', '--dry-run', '--config', conf], stdout=subprocess.PIPE,
                       stderr=err, env=e, text=True, timeout=120)
    err.seek(0)
    lines = err.read().splitlines()
    assert p.returncode == 0, lines
    assert lines and all(l[:1] == '<' and l[2:3] == '>' for l in lines), lines
    assert any(l.startswith('<5>run of') for l in lines), lines
    out = json.loads(p.stdout)
    assert out['dry-run'] is True and 'would-prune' in out['targets'][0], out
    # without the journal: plain lines
    p = run(['run', '--dry-run', '--config', conf], check=0)
    assert p.stderr.startswith('run of'), p.stderr
    print('ok: journal priority prefixes, dry run')


def main():
    t0 = time.time()
    write(os.path.join(TMP, 'token'), SECRET + '\n', 0o600)
    make_source(os.path.join(TMP, 'media'))
    emu = Emulator()
    try:
        test_config_errors(emu)
        conf = test_full_run(emu)
        test_target_down(emu)
        test_concurrent_and_stale_lock(emu)
        test_metrics_atomic(conf)
        test_journal_and_dry_run(conf)
        test_metadata_mode(emu)
        test_encrypted(emu)
        test_zfs(emu)
    finally:
        emu.stop()
        subprocess.run(['rm', '-rf', TMP])
    print('all scheduled-run tests passed in %.1fs' % (time.time() - t0))


if __name__ == '__main__':
    main()
