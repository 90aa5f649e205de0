"""verify, prune and gc on an S3 bucket (issue #22), against a one-node
Ceph cluster with radosgw (tests/integration/cairn_ceph.py): one cluster
for the whole program, one bucket per test.

    test_s3_admin.py PATH/TO/cairn
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_ceph  # noqa: E402
import cairn_test_lib as t  # noqa: E402

t.setup(sys.argv)
C = None       # the cluster
XDG = None     # a private cache home: each test starts with an empty cache


def env(**extra):
    e = C.env(**extra)
    e['XDG_CACHE_HOME'] = XDG
    return e


def cairn(*args, check=None, extra_env=None, timeout=300):
    return t.run(*args, check=check, env=env(**(extra_env or {})), timeout=timeout)


def source_tree():
    d = os.path.join(t.tmpdir(), 'src')
    t.make_tree(d)
    return d


def backup(bucket, src, check=0, backup_id='h1', extra=()):
    return cairn('backup', 'root.pxar:' + src, '--store', 's3://' + bucket, '--backup-id',
                 backup_id, *extra, check=check)


def snapshots(bucket):
    out = json.loads(cairn('snapshot', 'list', '--store', 's3://' + bucket, '--output-format',
                           'json', check=0).stdout)
    return sorted(s['snapshot'] if isinstance(s, dict) else s for s in out)


def chunk_keys(bucket):
    return [k for k in C.keys(bucket) if k.startswith('.chunks/')]


def referenced_chunks(bucket):
    """Digests every index in the bucket references (parsed here, not by cairn)."""
    cl = C.client()
    refs = set()
    for k in C.keys(bucket):
        if not (k.endswith('.didx') or k.endswith('.fidx')) or k.startswith('nas/'):
            continue    # nas/: another datastore's
        data = cl.get_object(Bucket=bucket, Key=k)['Body'].read()
        body = data[4096:]
        step = 40 if k.endswith('.didx') else 32
        off = 8 if step == 40 else 0
        for i in range(0, len(body), step):
            refs.add(body[i + off:i + off + 32].hex())
    return refs


def restore_equal(bucket, snap, src):
    dest = os.path.join(t.tmpdir(), 'restored')
    cairn('restore', snap, 'root.pxar', dest, '--store', 's3://' + bucket, check=0)
    t.compare_trees(src, dest)


# ---------------------------------------------------------------------------

def test_verify():
    """verify reads every chunk back: ok, then exit 4 once a chunk object is
    damaged; a missing chunk is damage too."""
    C.create_bucket('verify')
    src = source_tree()
    backup('verify', src)
    p = cairn('verify', '--store', 's3://verify', check=0)
    assert '1 snapshot(s) verified, 0 failed' in p.stdout, p.stdout
    keys = chunk_keys('verify')
    assert len(keys) >= 2, keys
    cl = C.client()
    body = bytearray(cl.get_object(Bucket='verify', Key=keys[0])['Body'].read())
    body[-1] ^= 0xff
    cl.put_object(Bucket='verify', Key=keys[0], Body=bytes(body))
    p = cairn('verify', '--store', 's3://verify', check=4)
    assert 'FAILED' in p.stdout, p.stdout
    cl.put_object(Bucket='verify', Key=keys[0], Body=b'')
    cl.delete_object(Bucket='verify', Key=keys[1])
    cairn('verify', '--store', 's3://verify', check=4)


def test_prune():
    """prune keeps by the PBS rules, never a protected snapshot, and removes a
    snapshot's manifest and every other object of it."""
    C.create_bucket('prune')
    src = source_tree()
    for i in range(4):
        with open(os.path.join(src, 'gen.txt'), 'w') as f:
            f.write('generation %d\n' % i)
        backup('prune', src)
        time.sleep(1.1)
    snaps = snapshots('prune')
    assert len(snaps) == 4, snaps
    # the oldest is protected (an object, as a datastore's file)
    oldest = snaps[0]
    C.client().put_object(Bucket='prune', Key=oldest + '/.protected', Body=b'')
    p = cairn('prune', 'host/h1', '--keep-last', '1', '--dry-run', '--store', 's3://prune',
              check=0)
    assert '2 snapshot(s) would be removed' in p.stdout, p.stdout
    assert snapshots('prune') == snaps
    p = cairn('prune', 'host/h1', '--keep-last', '1', '--store', 's3://prune',
              '--output-format', 'json', check=0)
    marks = {r['snapshot']: r['mark'] for r in json.loads(p.stdout)}
    assert marks[oldest] == 'protected' and marks[snaps[3]] == 'keep', marks
    assert marks[snaps[1]] == 'removed' and marks[snaps[2]] == 'removed', marks
    assert snapshots('prune') == [oldest, snaps[3]]
    keys = C.keys('prune')
    for gone in snaps[1:3]:
        assert not [k for k in keys if k.startswith(gone + '/')], (gone, keys)
    # the kept ones are whole
    restore_equal('prune', snaps[3], src)
    cairn('verify', '--store', 's3://prune', check=0)


def test_gc():
    """gc removes unreferenced chunks older than the grace and leftovers of
    killed backups; it keeps everything a snapshot references; with the
    default grace (24 h 5 min) it removes nothing that was just written."""
    C.create_bucket('gcbucket')
    src = source_tree()
    backup('gcbucket', src)
    time.sleep(1.1)
    big = os.path.join(src, 'dir', 'sub', 'deeper', 'd.dat')
    os.remove(big)                                   # the next snapshot lacks it
    with open(os.path.join(src, 'other.dat'), 'wb') as f:
        f.write(os.urandom(2 << 20))
    backup('gcbucket', src)
    snaps = snapshots('gcbucket')
    before = set(chunk_keys('gcbucket'))
    # a leftover of a killed backup: an index (the first snapshot's), no
    # manifest, no writer marker
    cl = C.client()
    left = 'host/h1/2020-01-01T00:00:00Z/root.pxar.didx'
    cl.copy_object(Bucket='gcbucket', Key=left,
                   CopySource={'Bucket': 'gcbucket', 'Key': snaps[0] + '/root.pxar.didx'})
    # another datastore's leftover, below a longer prefix: not this one's
    nested = 'nas/host/h1/2020-01-01T00:00:00Z/root.pxar.didx'
    cl.copy_object(Bucket='gcbucket', Key=nested,
                   CopySource={'Bucket': 'gcbucket', 'Key': snaps[0] + '/root.pxar.didx'})
    p = cairn('gc', '--store', 's3://gcbucket', '--output-format', 'json', check=0)
    st = json.loads(p.stdout)
    assert st['removed-chunks'] == 0 and st['missing-chunks'] == 0, st
    assert set(chunk_keys('gcbucket')) == before
    assert left in C.keys('gcbucket')                      # younger than the grace
    # the older snapshot goes: its own chunks become garbage
    cairn('prune', 'host/h1', '--keep-last', '1', '--store', 's3://gcbucket', check=0)
    time.sleep(1.5)                                  # LastModified has seconds
    p = cairn('gc', '--store', 's3://gcbucket', '--grace', '0', '--output-format', 'json', check=0)
    st = json.loads(p.stdout)
    after = set(chunk_keys('gcbucket'))
    refs = referenced_chunks('gcbucket')
    assert st['removed-chunks'] > 0 and st['missing-chunks'] == 0, st
    assert {k.rsplit('/', 1)[1] for k in after} == refs, (len(after), len(refs))
    assert len(after) == len(before) - st['removed-chunks']
    assert left not in C.keys('gcbucket')
    assert nested in C.keys('gcbucket')
    assert snapshots('gcbucket') == [snaps[1]]
    restore_equal('gcbucket', snaps[1], src)
    cairn('verify', '--store', 's3://gcbucket', check=0)
    # a missing referenced chunk is reported (exit 4), nothing else removed
    cl.delete_object(Bucket='gcbucket', Key=sorted(after)[0])
    p = cairn('gc', '--store', 's3://gcbucket', '--grace', '0', check=4)
    assert 'missing' in p.stderr, p.stderr
    assert set(chunk_keys('gcbucket')) == after - {sorted(after)[0]}
    # another gc runs (its state renewed just now): refused, exit 6; one
    # that died (no renewal for over 10 minutes) does not hold it up
    now = int(time.time())
    for updated, code in ((now, 6), (now - 700, 4)):
        state = {'generation': 'x', 'running': True, 'started': now - 7200,
                 'updated': updated, 'finished': 0}
        cl.put_object(Bucket='gcbucket', Key='.cairn/gc-state', Body=json.dumps(state).encode())
        p = cairn('gc', '--store', 's3://gcbucket', check=code)
        assert code != 6 or 'another garbage collection' in p.stderr, p.stderr


def requests(stderr, method, what='/.chunks/'):
    """How many METHOD requests for keys containing what curl's trace shows."""
    return sum(1 for l in stderr.splitlines() if l.startswith('> %s ' % method) and what in l)


def traced_backup(bucket, src, backup_id, check=0):
    return cairn('backup', 'root.pxar:' + src, '--store', 's3://' + bucket, '--backup-id',
                 backup_id, check=check, extra_env={'CAIRN_S3_TRACE': '1'})


def remove_all(bucket, prefix=''):
    cl = C.client()
    for k in C.keys(bucket, prefix):
        cl.delete_object(Bucket=bucket, Key=k)


def test_gc_batches():
    """gc deletes unreferenced chunks with multi-object deletes (POST
    /?delete, up to 1000 keys each), not one DELETE per chunk; the chunks
    the snapshot references stay and it restores."""
    C.create_bucket('gcbatch')
    src = source_tree()
    backup('gcbatch', src)
    kept = set(chunk_keys('gcbatch'))
    cl = C.client()
    garbage = []
    for i in range(1200):
        digest = os.urandom(32).hex()
        garbage.append('.chunks/%s/%s' % (digest[:4], digest))
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: cl.put_object(Bucket='gcbatch', Key=k, Body=b'x'), garbage))
    time.sleep(1.5)                                  # LastModified has seconds
    p = cairn('gc', '--store', 's3://gcbatch', '--grace', '0', '--output-format', 'json',
              check=0, extra_env={'CAIRN_S3_TRACE': '1'})
    st = json.loads(p.stdout)
    assert st['removed-chunks'] == len(garbage) and st['missing-chunks'] == 0, st
    posts = requests(p.stderr, 'POST', '?delete')
    assert posts == 2, posts                         # 1000 + 200 keys
    assert requests(p.stderr, 'DELETE') == 0, requests(p.stderr, 'DELETE')
    assert set(chunk_keys('gcbatch')) == kept
    restore_equal('gcbatch', snapshots('gcbatch')[0], src)


def test_list_sizes():
    """list and snapshot list show an S3 snapshot's size as a local store
    shows the same snapshot's (the sum of its manifest's file sizes), not
    0 B."""
    C.create_bucket('sizes')
    src = source_tree()
    local = t.store_path('sizes-local')
    cairn('backup', 'root.pxar:' + src, '--store', local, '--store', 's3://sizes',
          '--backup-id', 'h1', check=0)

    def listed(cmd, store):
        out = json.loads(cairn(*cmd, '--store', store, '--output-format', 'json',
                               check=0).stdout)
        return [(r.get('group') or r.get('snapshot'), r['size']) for r in out]
    for cmd in (('list',), ('snapshot', 'list')):
        want = listed(cmd, local)
        assert len(want) == 1 and want[0][1] > 0, want
        assert listed(cmd, 's3://sizes') == want, (cmd, listed(cmd, 's3://sizes'), want)
    text = cairn('list', '--store', 's3://sizes', check=0).stdout
    assert ' 0 B' not in text, text


def test_cache():
    """The chunk-listing cache answers has_chunk without a request; it is
    rebuilt by a LIST when deleted, and when a gc ran or the bucket was
    emptied since it was built, so that a stale hit never leaves a snapshot
    referencing a chunk that is gone."""
    C.create_bucket('cachebkt')
    src = source_tree()
    p = traced_backup('cachebkt', src, 'h1')
    uploaded = requests(p.stderr, 'PUT')
    assert uploaded >= 1, p.stderr[-2000:]
    caches = os.listdir(os.path.join(XDG, 'cairn', 's3'))
    assert caches, 'no cache directory'
    # a new group: no previous snapshot, every chunk known from the cache
    p = traced_backup('cachebkt', src, 'h2')
    assert requests(p.stderr, 'HEAD') == 0 and requests(p.stderr, 'PUT') == 0, \
        (requests(p.stderr, 'HEAD'), requests(p.stderr, 'PUT'))
    # deleted: rebuilt from one listing of .chunks/, still no HEAD
    shutil.rmtree(os.path.join(XDG, 'cairn', 's3'))
    p = traced_backup('cachebkt', src, 'h3')
    assert requests(p.stderr, 'GET', 'prefix=.chunks') >= 1, p.stderr[-2000:]
    assert requests(p.stderr, 'HEAD') == 0 and requests(p.stderr, 'PUT') == 0
    # someone else removes every snapshot and collects the garbage (another
    # machine: its own cache); this machine's cache still lists the chunks
    remove_all('cachebkt', 'host/')
    time.sleep(1.5)
    other = t.tmpdir()
    st = json.loads(cairn('gc', '--store', 's3://cachebkt', '--grace', '0', '--output-format',
                          'json', check=0, extra_env={'XDG_CACHE_HOME': other}).stdout)
    assert st['removed-chunks'] == uploaded, (st, uploaded)
    assert not chunk_keys('cachebkt')
    p = traced_backup('cachebkt', src, 'h4')
    assert requests(p.stderr, 'PUT') == uploaded, (requests(p.stderr, 'PUT'), uploaded)
    cairn('verify', '--store', 's3://cachebkt', check=0)
    restore_equal('cachebkt', snapshots('cachebkt')[0], src)
    # the bucket emptied by hand, the gc state with it
    remove_all('cachebkt')
    p = traced_backup('cachebkt', src, 'h5')
    assert requests(p.stderr, 'PUT') == uploaded, (requests(p.stderr, 'PUT'), uploaded)
    cairn('verify', '--store', 's3://cachebkt', check=0)


def start_paused_backup(bucket, src, backup_id, extra=()):
    """Starts a backup, and stops it (SIGSTOP) once it has stored a chunk
    the bucket lacked (so it has begun, and passed the chunks that come
    before in stream order), before its manifest. Returns the process."""
    def manifests():
        return [k for k in C.keys(bucket, 'host/' + backup_id + '/')
                if k.endswith('/index.json.blob')]
    before = manifests()
    chunks = len(chunk_keys(bucket))
    e = dict(os.environ)
    e.update(env())
    proc = subprocess.Popen([t.CAIRN, 'backup', 'root.pxar:' + src, '--store', 's3://' + bucket,
                             '--backup-id', backup_id] + list(extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    marker = '.cairn/writers/host/' + backup_id + '/'
    end = time.monotonic() + 120
    while time.monotonic() < end and proc.poll() is None:
        if C.keys(bucket, marker) and len(chunk_keys(bucket)) > chunks:
            proc.send_signal(signal.SIGSTOP)
            break
        time.sleep(0.02)
    assert proc.poll() is None, 'the backup ended before it could be paused'
    assert manifests() == before, 'paused too late'
    return proc


def resume(proc):
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


def big_source(shared, mib=64):
    """shared's files under a_shared/, then mib MiB of random data after it in
    walk order, so that a backup is still running when it is paused."""
    d = os.path.join(t.tmpdir(), 'src2')
    shutil.copytree(shared, os.path.join(d, 'a_shared'), symlinks=True)
    with open(os.path.join(d, 'z_big'), 'wb') as f:
        for _ in range(mib if not t.sanitized() else mib // 2):
            f.write(os.urandom(1 << 20))
    return d


def test_gc_during_backup():
    """gc while a backup runs: with the default grace nothing the backup
    needs goes and its snapshot restores and verifies; with --grace 0 the
    chunks it reused from a pruned snapshot may go, and then it withdraws its
    snapshot instead of publishing one with holes; the next run is whole."""
    C.create_bucket('gcrun')
    shared = os.path.join(t.tmpdir(), 'shared')
    os.makedirs(shared)
    with open(os.path.join(shared, 'photos.bin'), 'wb') as f:
        f.write(os.urandom(24 << 20))   # interior chunks shared whatever comes before
    backup('gcrun', shared, backup_id='g1')          # the shared chunks, in the cache too
    time.sleep(1.1)
    other = os.path.join(t.tmpdir(), 'other')
    os.makedirs(other)
    with open(os.path.join(other, 'x.txt'), 'w') as f:
        f.write('other\n')
    backup('gcrun', other, backup_id='g1')
    cairn('prune', 'host/g1', '--keep-last', '1', '--store', 's3://gcrun', check=0)
    src2 = big_source(shared)
    time.sleep(1.5)                                  # shared chunks older than the next start
    proc = start_paused_backup('gcrun', src2, 'g2')
    try:
        st = json.loads(cairn('gc', '--store', 's3://gcrun', '--output-format', 'json',
                              check=0).stdout)
        assert st['removed-chunks'] == 0, st
        st = json.loads(cairn('gc', '--store', 's3://gcrun', '--grace', '0',
                              '--output-format', 'json', check=0).stdout)
        assert st['removed-chunks'] > 0, st
    finally:
        code, err = resume(proc)
    assert code == 1 and 'withdrawn' in err, (code, err[-3000:])
    assert not [s for s in snapshots('gcrun') if '/g2/' in s]
    cairn('verify', '--store', 's3://gcrun', check=0)
    backup('gcrun', src2, backup_id='g2')            # the next run is whole
    cairn('verify', '--store', 's3://gcrun', check=0)
    g2 = [s for s in snapshots('gcrun') if '/g2/' in s]
    restore_equal('gcrun', g2[0], src2)
    # default grace beside a running backup: it publishes, whole
    time.sleep(1.1)
    with open(os.path.join(src2, 'a_shared', 'new.txt'), 'w') as f:
        f.write('new\n')
    proc = start_paused_backup('gcrun', src2, 'g2')
    try:
        st = json.loads(cairn('gc', '--store', 's3://gcrun', '--output-format', 'json',
                              check=0).stdout)
        assert st['removed-chunks'] == 0 and st['missing-chunks'] == 0, st
    finally:
        code, err = resume(proc)
    assert code == 0, (code, err[-3000:])
    cairn('verify', '--store', 's3://gcrun', check=0)
    g2 = [s for s in snapshots('gcrun') if '/g2/' in s]
    assert len(g2) == 2, g2
    restore_equal('gcrun', g2[1], src2)


def test_stalled_endpoint():
    """radosgw stopped (SIGSTOP) mid-backup to a local store and the bucket:
    the bucket is given up after --stall-timeout (bounded), the local
    snapshot is published, exit 3; resumed, the next run completes."""
    C.create_bucket('stall')
    shared = os.path.join(t.tmpdir(), 'shared')
    os.makedirs(shared)
    with open(os.path.join(shared, 'a.bin'), 'wb') as f:
        f.write(os.urandom(1 << 20))
    src = big_source(shared, 48)
    local = t.store_path('stall-local')
    e = dict(os.environ)
    e.update(env())
    proc = subprocess.Popen([t.CAIRN, 'backup', 'root.pxar:' + src, '--store', local,
                             '--store', 's3://stall', '--backup-id', 'st',
                             '--stall-timeout', '5'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    end = time.monotonic() + 120
    while time.monotonic() < end and not C.keys('stall', '.cairn/writers/'):
        time.sleep(0.02)
    C.pause_rgw()
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=240)
        took = time.monotonic() - t0
    finally:
        C.resume_rgw()
    assert proc.returncode == 3, (proc.returncode, err[-3000:])
    # the bound in docs/s3.md: the stall timeout plus the abort of the calls
    print('stalled bucket given up after %.1f s' % took, flush=True)
    assert took < 5 + 60, took
    assert 's3://stall' in err, err[-2000:]
    assert len(json.loads(t.run('snapshot', 'list', '--store', local, '--output-format', 'json',
                                check=0).stdout)) == 1
    assert not snapshots('stall')
    cairn('backup', 'root.pxar:' + src, '--store', local, '--store', 's3://stall',
          '--backup-id', 'st', check=0)
    assert len(snapshots('stall')) == 1
    cairn('verify', '--store', 's3://stall', check=0)


TESTS = [test_verify, test_prune, test_gc, test_gc_batches, test_list_sizes, test_cache, test_gc_during_backup,
         test_stalled_endpoint]


def main():
    global C, XDG
    only = os.environ.get('CAIRN_S3_TESTS', '').split(',')
    unknown = set(only) - {fn.__name__ for fn in TESTS} - {''}
    if unknown:
        sys.exit('CAIRN_S3_TESTS names no test: %s' % ', '.join(sorted(unknown)))
    XDG = t.tmpdir()
    with cairn_ceph.Cluster() as c:
        C = c
        for fn in TESTS:
            if only != [''] and fn.__name__ not in only:
                continue
            t0 = time.monotonic()
            fn()
            print('ok %s (%.1f s)' % (fn.__name__, time.monotonic() - t0), flush=True)


if __name__ == '__main__':
    main()
