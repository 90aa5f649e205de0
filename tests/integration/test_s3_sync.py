#!/usr/bin/python3
"""cairn sync and catch-up with S3 buckets (issues #22/#23), against a
one-node Ceph cluster with radosgw (tests/integration/cairn_ceph.py): one
cluster for the program, one bucket per case.

- local store <-> bucket with different histories: one sync each way, the
  same snapshots on both, each restorable from both; protected flag and
  notes carried; a second sync copies nothing (no PUT in CAIRN_S3_TRACE);
  --dry-run changes nothing; --remove-vanished removes the manifest first
  and keeps a protected snapshot;
- encrypted snapshots copied local -> S3 -> S3 without the key, restorable
  with it; a corrupt source chunk fails its snapshot (exit 4) and the next
  group still copies through the same target;
- kill -9 mid-sync to S3: nothing half visible, the next sync completes and
  `verify --store s3://` passes;
- `cairn run` with catch-up = yes: an S3 target down for a night (wrong
  endpoint port) catches up from the local target, and a local target that
  was down catches up from the S3 one; the run record and the metrics count
  them;
- addressing = virtual against http://localhost:PORT: backup and restore
  test through `cairn run`, every request to BUCKET.localhost.

    test_s3_sync.py PATH/TO/cairn
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                'pbs_emulator'))
import cairn_ceph  # noqa: E402
import cairn_test_lib as t  # noqa: E402
import pbsformat  # noqa: E402  (independent readers of the PBS formats)

t.setup(sys.argv)
C = None                 # the cluster
WORK = t.tmpdir()
XDG = os.path.join(WORK, 'cache')   # a private chunk-listing cache


def env(**extra):
    e = C.env(**extra)
    e['XDG_CACHE_HOME'] = XDG
    e['CAIRN_CONFIG'] = ''
    e['JOURNAL_STREAM'] = ''
    return e


def cairn(*args, check=None, extra_env=None, timeout=300):
    return t.run(*args, check=check, env=env(**(extra_env or {})), timeout=timeout)


def sync(*args, check=0, extra_env=None):
    p = cairn('sync', *args, '--output-format', 'json', check=check, extra_env=extra_env)
    return json.loads(p.stdout), p


def snaps(store):
    out = json.loads(cairn('snapshot', 'list', '--store', store, '--output-format', 'json',
                           check=0).stdout)
    return sorted(x['snapshot'] for x in out)


def listing(store):
    out = json.loads(cairn('snapshot', 'list', '--store', store, '--output-format', 'json',
                           check=0).stdout)
    return {x['snapshot']: x for x in out}


def tree(name, extra_mib=0):
    d = os.path.join(WORK, name)
    t.make_tree(d)
    with open(os.path.join(d, 'only-%s.bin' % name), 'wb') as f:
        f.write(os.urandom((extra_mib << 20) + 12345))
    return d


def backup(store, src, backup_id, *extra):
    p = cairn('backup', 'root.pxar:' + src, '--store', store, '--backup-id', backup_id,
              '--output-format', 'json', *extra, check=0)
    time.sleep(1.1)  # the next backup gets a new time (second precision)
    return json.loads(p.stdout)['snapshot']


RESTORES = [0]


def restore_equal(store, snap, src, *extra):
    RESTORES[0] += 1
    dest = os.path.join(WORK, 'restored-%d' % RESTORES[0])
    cairn('restore', '--store', store, *extra, snap, 'root.pxar', dest, check=0)
    t.compare_trees(src, dest)


def puts(stderr, what=''):
    return sum(1 for l in stderr.splitlines() if l.startswith('> PUT ') and what in l)


def s3_object(bucket, key):
    return C.client().get_object(Bucket=bucket, Key=key)['Body'].read()


def referenced(store, snap):
    """The chunk digests every index of a local snapshot references."""
    out = set()
    d = os.path.join(store, snap)
    for n in os.listdir(d):
        if n.endswith(('.didx', '.fidx')):
            with open(os.path.join(d, n), 'rb') as f:
                out |= {e[2].hex() for e in pbsformat.parse_index(f.read(), n).entries}
    return out


def manifests(bucket):
    return [k for k in C.keys(bucket) if k.endswith('/index.json.blob')]


# ---------------------------------------------------------------------------

def case_both_ways():
    """Different histories on a local store and a bucket; one sync each
    way; the same snapshots on both, every one restorable from both."""
    C.create_bucket('mirror')
    L = t.store_path('mirror-local')
    src = {}
    a1 = backup(L, tree('g1-a'), 'g1')
    src[a1] = os.path.join(WORK, 'g1-a')
    a2 = backup(L, tree('g1-b'), 'g1')
    src[a2] = os.path.join(WORK, 'g1-b')
    b1 = backup('s3://mirror', tree('g2-a'), 'g2')
    src[b1] = os.path.join(WORK, 'g2-a')
    cairn('snapshot', 'protected', a1, 'on', '--store', L, check=0)
    cairn('snapshot', 'notes', a2, 'update', 'album of the summer', '--store', L, check=0)

    # a dry run reports and changes nothing
    out, _ = sync('--from', L, '--to', 's3://mirror', '--dry-run')
    assert out['copied'] == 2 and out['dry-run'], out
    assert [s['action'] for s in out['snapshots']] == ['would-copy'] * 2, out
    assert len(manifests('mirror')) == 1

    out, _ = sync('--from', L, '--to', 's3://mirror')
    assert out['copied'] == 2 and out['failed'] == 0 and out['chunks-sent'] > 0, out
    out, _ = sync('--from', 's3://mirror', '--to', L)
    assert out['copied'] == 1 and out['present'] == 2 and out['failed'] == 0, out
    assert snaps(L) == snaps('s3://mirror') == sorted([a1, a2, b1]), (snaps(L),
                                                                     snaps('s3://mirror'))
    # protected flag and notes came along; the manifest is the source's
    lst = listing('s3://mirror')
    assert lst[a1]['protected'] and not lst[a2]['protected'], lst
    assert 'host/g1/%s/.protected' % a1.split('/')[-1] in C.keys('mirror')
    with open(os.path.join(L, a2, 'index.json.blob'), 'rb') as f:
        local_manifest = f.read()
    remote = s3_object('mirror', a2 + '/index.json.blob')
    assert remote == local_manifest
    assert json.loads(pbsformat.blob_decode_plain(remote))['unprotected']['notes'] == \
        'album of the summer'
    cairn('verify', '--store', 's3://mirror', check=0)
    # every copy restores (the originals are what restores are tested on
    # elsewhere)
    for snap in (a1, a2):
        restore_equal('s3://mirror', snap, src[snap])
    restore_equal(L, b1, src[b1])

    # a second sync copies nothing: no PUT to the bucket at all
    out, p = sync('--from', L, '--to', 's3://mirror', extra_env={'CAIRN_S3_TRACE': '1'})
    assert out['copied'] == 0 and out['present'] == 3 and out['chunks-sent'] == 0, out
    assert puts(p.stderr) == 0, p.stderr[-3000:]
    out, _ = sync('--from', 's3://mirror', '--to', L)
    assert out['copied'] == 0 and out['present'] == 3, out

    # a new snapshot that shares most chunks: only the missing ones travel
    with open(os.path.join(src[a2], 'new.jpg'), 'wb') as f:
        f.write(os.urandom(400000))
    a3 = backup(L, src[a2], 'g1')
    src[a3] = src[a2]
    stored = {k.rsplit('/', 1)[1] for k in C.keys('mirror', '.chunks/')}
    missing = referenced(L, a3) - stored
    out, p = sync('--from', L, '--to', 's3://mirror', 'host/g1',
                  extra_env={'CAIRN_S3_TRACE': '1'})
    assert out['copied'] == 1 and out['chunks-sent'] == len(missing), (out, len(missing))
    assert 0 < puts(p.stderr, '/.chunks/') == len(missing), (puts(p.stderr, '/.chunks/'),
                                                             len(missing))
    restore_equal('s3://mirror', a3, src[a3])
    # the same tree as a new group: every chunk is in the bucket already,
    # known from the chunk-listing cache: no PUT and no HEAD of a chunk
    g3 = backup(L, src[a3], 'g3')
    assert referenced(L, g3) <= {k.rsplit('/', 1)[1] for k in C.keys('mirror', '.chunks/')}
    out, p = sync('--from', L, '--to', 's3://mirror', 'host/g3',
                  extra_env={'CAIRN_S3_TRACE': '1'})
    assert out['copied'] == 1 and out['chunks-sent'] == 0 and out['chunks-reused'] > 0, out
    assert puts(p.stderr, '/.chunks/') == 0 and not [
        l for l in p.stderr.splitlines() if l.startswith('> HEAD ') and '/.chunks/' in l]

    # --remove-vanished: a1, forgotten locally and unprotected in the
    # bucket, goes from the bucket (dry run first: nothing changes); b1,
    # protected in the bucket, stays although the local store no longer
    # has it
    cairn('snapshot', 'protected', a1, 'off', '--store', L, check=0)
    cairn('snapshot', 'forget', a1, '--store', L, check=0)
    cairn('snapshot', 'forget', b1, '--store', L, check=0)
    C.client().delete_object(Bucket='mirror', Key=a1 + '/.protected')
    C.client().put_object(Bucket='mirror', Key=b1 + '/.protected', Body=b'')
    out, _ = sync('--from', L, '--to', 's3://mirror', '--remove-vanished', '--dry-run')
    acts = {s['snapshot']: s['action'] for s in out['snapshots']}
    assert acts[a1] == 'would-remove' and acts[b1] == 'kept-protected', out
    assert len(manifests('mirror')) == 5
    out, p = sync('--from', L, '--to', 's3://mirror', '--remove-vanished',
                  extra_env={'CAIRN_S3_TRACE': '1'})
    acts = {s['snapshot']: s['action'] for s in out['snapshots']}
    assert acts[a1] == 'removed' and acts[b1] == 'kept-protected', out
    assert out['removed'] == 1 and out['kept-protected'] == 1, out
    assert snaps('s3://mirror') == sorted([a2, a3, b1, g3]), snaps('s3://mirror')
    assert not [k for k in C.keys('mirror', a1 + '/')], C.keys('mirror', a1 + '/')
    # the manifest went first
    deletes = [urllib.parse.unquote(l.split()[2]) for l in p.stderr.splitlines()
               if l.startswith('> DELETE ')]
    deletes = [d for d in deletes if a1 in d]
    assert len(deletes) > 2 and deletes[0].endswith(a1 + '/index.json.blob'), deletes
    # and back: b1 comes again from the bucket, protected there and here
    out, _ = sync('--from', 's3://mirror', '--to', L, 'host/g2')
    assert out['copied'] == 1, out
    assert listing(L)[b1]['protected'], listing(L)
    print('local <-> S3: one sync each way, same snapshots, all restorable; protected and '
          'notes carried; a second sync sends nothing; dry run and remove-vanished ok')


def case_encrypted():
    """Encrypted snapshots travel local -> S3 -> S3 without the key; a
    corrupt source chunk fails its snapshot and the next group still goes."""
    C.create_bucket('enc1')
    C.create_bucket('enc2')
    key = os.path.join(WORK, 'key.json')
    cairn('key', 'create', key, '--kdf', 'none', check=0)
    L = t.store_path('enc-local')
    s = tree('enc-src')
    snap = backup(L, s, 'enc', '--keyfile', key)
    out, _ = sync('--from', L, '--to', 's3://enc1')
    assert out['copied'] == 1, out
    out, _ = sync('--from', 's3://enc1', '--to', 's3://enc2/copy')
    assert out['copied'] == 1, out
    chunks = C.keys('enc2', 'copy/.chunks/')
    assert chunks
    for k in chunks:
        assert pbsformat.blob_is_encrypted(s3_object('enc2', k)), k
    restore_equal('s3://enc2/copy', snap, s, '--keyfile', key)
    p = cairn('restore', '--store', 's3://enc2/copy', snap, 'root.pxar',
              os.path.join(WORK, 'enc-nokey'))
    assert p.returncode != 0, p.stdout

    # group aa has a damaged chunk, bb does not: aa fails with exit 4, bb
    # is copied after it through the same S3 target
    C.create_bucket('corrupt')
    L2 = t.store_path('corrupt-local')
    sa = tree('aa-src')
    sb = tree('bb-src')
    snap_a = backup(L2, sa, 'aa')
    snap_b = backup(L2, sb, 'bb')

    def digests(snap):
        with open(os.path.join(L2, snap, 'root.pxar.didx'), 'rb') as f:
            return [e[2].hex() for e in pbsformat.parse_index(f.read(), 'didx').entries]
    victim = [d for d in digests(snap_a) if d not in digests(snap_b)][0]
    vpath = os.path.join(L2, '.chunks', victim[:4], victim)
    with open(vpath, 'rb') as f:
        good = f.read()
    with open(vpath, 'wb') as f:
        f.write(good[:len(good) // 2] + bytes([good[len(good) // 2] ^ 0xff]) +
                good[len(good) // 2 + 1:])
    out, p = sync('--from', L2, '--to', 's3://corrupt', check=4)
    acts = {x['snapshot']: x['action'] for x in out['snapshots']}
    assert acts == {snap_a: 'failed', snap_b: 'copied'}, (out, p.stderr)
    assert victim in p.stderr, p.stderr
    assert snaps('s3://corrupt') == [snap_b]
    assert not [k for k in C.keys('corrupt') if k.endswith(victim)], 'corrupt chunk stored'
    restore_equal('s3://corrupt', snap_b, sb)
    print('encrypted: local -> S3 -> S3 without the key, restored with it; a corrupt source '
          'chunk fails its snapshot (exit 4), the next group is copied')


def case_killed():
    """kill -9 in the middle of a sync to S3, then a sync that completes."""
    C.create_bucket('killed')
    L = t.store_path('killed-local')
    big = os.path.join(WORK, 'big')
    os.makedirs(big)
    for i in range(16):
        with open(os.path.join(big, 'photo%02d.jpg' % i), 'wb') as f:
            f.write(os.urandom(3 << 20))
    snap = backup(L, big, 'big')
    proc = subprocess.Popen([t.CAIRN, 'sync', '--from', L, '--to', 's3://killed'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(
                                os.environ, **env()))
    try:
        deadline = time.monotonic() + 120
        while (proc.poll() is None and time.monotonic() < deadline
               and not C.keys('killed', '.chunks/')):
            time.sleep(0.05)
        assert proc.poll() is None, 'the sync ended before it could be killed'
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert manifests('killed') == [], manifests('killed')
    assert snaps('s3://killed') == []
    out, _ = sync('--from', L, '--to', 's3://killed')
    assert out['copied'] == 1 and out['failed'] == 0, out
    assert snaps('s3://killed') == [snap]
    assert not C.keys('killed', '.cairn/writers/'), C.keys('killed', '.cairn/writers/')
    cairn('verify', '--store', 's3://killed', check=0)
    restore_equal('s3://killed', snap, big)
    print('kill -9 mid-sync to S3: nothing visible, the next sync completes, verify ok')


def run_conf(name, targets):
    conf = os.path.join(WORK, name + '.conf')
    src = os.path.join(WORK, name + '-src')
    if not os.path.isdir(src):
        os.makedirs(src)
    with open(conf, 'w') as f:
        f.write('[cairn]\nbackup-id = nas\nstate-dir = %s\n\n'
                '[source media]\npath = %s\narchive = media.pxar\n\n%s'
                % (os.path.join(WORK, name + '-state'), src, targets))
    return conf, src


def last_record(name):
    with open(os.path.join(WORK, name + '-state', 'history.json')) as f:
        rec = json.load(f)[-1]
    return {x['name']: x for x in rec['targets']}


def caught_up_metric(metrics, target):
    with open(metrics) as f:
        for line in f:
            if line.startswith('cairn_target_last_caught_up_snapshots{') and \
                    'target="%s"' % target in line:
                return float(line.split()[-1])
    raise AssertionError('no caught-up metric for %s in %s' % (target, metrics))


def case_catch_up():
    """An S3 target down for a night catches up from the local one, and a
    local target down for a night catches up from the S3 one."""
    C.create_bucket('nightly')
    L = t.store_path('nightly-local')
    metrics = os.path.join(WORK, 'nightly.prom')

    def night(n, port, local_path, check):
        conf, src = run_conf('nightly', (
            '[target home]\ntype = local\npath = %s\ncatch-up = yes\n\n'
            '[target offsite]\ntype = s3\nbucket = nightly\nendpoint = http://127.0.0.1:%d\n'
            'catch-up = yes\n' % (local_path, port)))
        with open(os.path.join(src, 'photo%d.jpg' % n), 'wb') as f:
            f.write(os.urandom(200000))
        p = cairn('run', '--config', conf, '--metrics-file', metrics, check=check)
        time.sleep(1.1)
        return p

    night(1, C.rgw_port, L, 0)
    assert snaps(L) == snaps('s3://nightly') and len(snaps(L)) == 1
    # the bucket is unreachable for a night: a port nothing listens on
    night(2, cairn_ceph.free_port(), L, 3)
    rec = last_record('nightly')
    assert rec['offsite']['result'] == 'failed' and rec['home']['result'] == 'ok', rec
    assert len(snaps(L)) == 2 and len(snaps('s3://nightly')) == 1
    night(3, C.rgw_port, L, 0)
    rec = last_record('nightly')
    assert rec['offsite']['caught-up'] == 1 and rec['offsite']['caught-up-from'] == 'home', rec
    assert rec['home']['caught-up'] == 0, rec
    assert caught_up_metric(metrics, 'offsite') == 1
    assert snaps(L) == snaps('s3://nightly') and len(snaps(L)) == 3, (snaps(L),
                                                                     snaps('s3://nightly'))
    # now the local store is away for a night (its path is no datastore)
    os.rename(L, L + '.away')
    with open(L, 'w') as f:
        f.write('not a store\n')
    night(4, C.rgw_port, L, 3)
    os.unlink(L)
    os.rename(L + '.away', L)
    assert len(snaps(L)) == 3 and len(snaps('s3://nightly')) == 4
    night(5, C.rgw_port, L, 0)
    rec = last_record('nightly')
    assert rec['home']['caught-up'] == 1 and rec['home']['caught-up-from'] == 'offsite', rec
    assert caught_up_metric(metrics, 'home') == 1
    assert caught_up_metric(metrics, 'offsite') == 0
    assert snaps(L) == snaps('s3://nightly') and len(snaps(L)) == 5
    cairn('verify', '--store', 's3://nightly', check=0)
    # the snapshot of night 4 that home caught up from the bucket restores
    night4 = snaps(L)[3]
    dest = os.path.join(WORK, 'night4')
    cairn('restore', '--store', L, night4, 'media.pxar', dest, check=0)
    assert sorted(x for x in os.listdir(dest) if x.startswith('photo')) == \
        ['photo%d.jpg' % i for i in range(1, 5)], os.listdir(dest)
    print('catch-up: S3 target down a night caught up from local, local down a night caught '
          'up from S3; run record and metrics count them')


def case_virtual_hosted():
    """addressing = virtual against http://localhost:PORT: the bucket in
    the host name (radosgw's rgw dns name is localhost; curl resolves
    *.localhost to the loopback itself)."""
    C.create_bucket('vhost')
    host = 'vhost.localhost:%d' % C.rgw_port
    conf, src = run_conf('vhost', (
        '[target offsite]\ntype = s3\nbucket = vhost\nendpoint = http://localhost:%d\n'
        'addressing = virtual\n' % C.rgw_port))
    t.make_tree(os.path.join(src, 'tree'))
    p = cairn('run', '--config', conf, '--restore-test', check=0,
              extra_env={'CAIRN_S3_TRACE': '1', 'AWS_ENDPOINT_URL': ''})
    rec = last_record('vhost')['offsite']
    assert rec['result'] == 'ok', rec
    rt = rec['restore-test']
    assert rt['sampled'] > 0 and rt['failed'] == 0, rt
    hosts = [l.split(None, 2)[2] for l in p.stderr.splitlines() if l.startswith('> Host: ')]
    reqs = [l for l in p.stderr.splitlines()
            if l.startswith(('> GET ', '> PUT ', '> HEAD ', '> DELETE '))]
    assert hosts and set(hosts) == {host}, set(hosts)
    assert len(reqs) == len(hosts), (len(reqs), len(hosts))
    assert not [r for r in reqs if r.split()[2].startswith('/vhost/')], reqs[:5]
    assert puts(p.stderr, '/.chunks/') > 0 and any(r.startswith('> GET /.chunks/')
                                                  for r in reqs), reqs[:20]
    # the same bucket read path-style: what the virtual-hosted requests stored
    snap = snaps('s3://vhost')
    assert len(snap) == 1, snap
    dest = os.path.join(WORK, 'vhost-restored')
    cairn('restore', '--store', 's3://vhost', snap[0], 'media.pxar', dest, check=0)
    t.compare_trees(os.path.join(src, 'tree'), os.path.join(dest, 'tree'))
    print('virtual-hosted addressing: %d requests, all to %s; backup and restore test ok'
          % (len(reqs), host))


started = time.monotonic()
C = cairn_ceph.Cluster()
try:
    C.start()
    print('ceph up in %.1f s at %s' % (time.monotonic() - started, C.endpoint))
    for case in (case_both_ways, case_encrypted, case_killed, case_catch_up,
                 case_virtual_hosted):
        t0 = time.monotonic()
        case()
        print('  (%.1f s)' % (time.monotonic() - t0))
finally:
    C.stop()
    subprocess.run(['rm', '-rf', WORK])
print('all ok in %.1f s' % (time.monotonic() - started))
