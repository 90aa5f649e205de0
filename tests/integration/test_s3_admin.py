"""verify, prune and gc on an S3 bucket (issue #22), against a one-node
Ceph cluster with radosgw (tests/integration/cairn_ceph.py): one cluster
for the whole program, one bucket per test.

    test_s3_admin.py PATH/TO/cairn
"""
import json
import os
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
        if not (k.endswith('.didx') or k.endswith('.fidx')):
            continue
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
    assert len(keys) >= 3, keys
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
    assert snapshots('gcbucket') == [snaps[1]]
    restore_equal('gcbucket', snaps[1], src)
    cairn('verify', '--store', 's3://gcbucket', check=0)
    # a missing referenced chunk is reported (exit 4), nothing else removed
    cl.delete_object(Bucket='gcbucket', Key=sorted(after)[0])
    p = cairn('gc', '--store', 's3://gcbucket', '--grace', '0', check=4)
    assert 'missing' in p.stderr, p.stderr
    assert set(chunk_keys('gcbucket')) == after - {sorted(after)[0]}


TESTS = [test_verify, test_prune, test_gc]


def main():
    global C, XDG
    only = os.environ.get('CAIRN_S3_TESTS', '').split(',')
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
