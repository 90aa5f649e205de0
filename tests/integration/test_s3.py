#!/usr/bin/python3
"""S3 targets and sources against a real Ceph radosgw (tests/integration/
cairn_ceph.py: one cluster for this program, one bucket per case).

- round trip: one `cairn backup` to a local store and a bucket, restore from
  the bucket, trees equal in content and metadata; a second run through
  `cairn run`'s config (type = s3, credentials file) stores only new chunks;
- the same encrypted (--keyfile): chunk objects are encrypted blobs;
- the bucket copied to disk with boto3 is a datastore: an independent check
  (pbsformat.py: manifest, index checksums, every chunk's digest), `cairn
  verify --store DIR` and `cairn restore --store DIR`; and a local datastore
  uploaded with boto3 restores with --store s3://;
- wrong secret: a clear error naming endpoint and access key id, never the
  secret; a missing bucket: a clear error;
- radosgw killed mid-upload: the S3 target is dropped, the local one gets
  its snapshot, exit 3, no snapshot with a manifest in the bucket; the next
  run completes.
The ceph binaries are required: missing, the test fails (scripts/deps.sh
--tests installs them)."""
import json
import os
import random
import subprocess
import sys
import time

import cairn_test_lib as t
import cairn_ceph

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                'pbs_emulator'))
import pbsformat  # noqa: E402  (independent readers of the PBS formats)

t.setup(sys.argv)
work = t.tmpdir()
EXIT_PARTIAL = 3


def s3run(cluster, *args, check=None, env=None):
    e = cluster.env()
    if env:
        e.update(env)
    return t.run(*args, env=e, check=check)


def compare(src, restored):
    """Trees equal; a snapshot made by `cairn run` also holds its default
    excludes (.pxarexclude-cli), which the source does not have."""
    extra = os.path.join(restored, '.pxarexclude-cli')
    if os.path.exists(extra) and not os.path.exists(os.path.join(src, '.pxarexclude-cli')):
        os.unlink(extra)
    t.compare_trees(src, restored)


def check_datastore(root):
    """Checks a datastore directory independently of cairn: every snapshot's
    manifest decodes, its indexes match the manifest's size and checksum,
    every chunk they reference exists and (unencrypted) has its digest.
    Returns the number of snapshots."""
    snaps = 0
    for dirpath, _dirs, files in os.walk(root):
        if 'index.json.blob' not in files:
            continue
        snaps += 1
        with open(os.path.join(dirpath, 'index.json.blob'), 'rb') as f:
            man = json.loads(pbsformat.blob_decode_plain(f.read()))
        for fe in man['files']:
            with open(os.path.join(dirpath, fe['filename']), 'rb') as f:
                raw = f.read()
            if not fe['filename'].endswith(('.didx', '.fidx')):
                continue
            idx = pbsformat.parse_index(raw, fe['filename'])
            assert idx.csum().hex() == fe['csum'], (dirpath, fe)
            assert idx.size == fe['size'], (dirpath, fe, idx.size)
            for e in idx.entries:
                digest = e[2]
                h = digest.hex()
                with open(os.path.join(root, '.chunks', h[:4], h), 'rb') as f:
                    chunk = f.read()
                if fe['crypt-mode'] == 'none':
                    pbsformat.blob_decode_plain(chunk, digest)
                else:
                    assert pbsformat.blob_is_encrypted(chunk), h
    return snaps


def manifests(cluster, bucket, prefix=''):
    return [k for k in cluster.keys(bucket, prefix) if k.endswith('/index.json.blob')]


def case_round_trip(c):
    t0 = time.monotonic()
    c.create_bucket('trip')
    src = os.path.join(work, 'trip-src')
    t.make_tree(src)
    # Seeded, so that the chunk boundaries in the photos are the same in
    # every run, and enough of them that the next night's upload (checked
    # below: the chunks at the archive's start, whose root directory's
    # mtime changes, and at its end, where the new file goes) is well
    # under half of what the bucket then holds: with 4 photos, 12.5 MB of
    # 28.3 in one run, and random data failed that check.
    rng = random.Random(22)
    for i in range(12):
        with open(os.path.join(src, 'dir', 'photo%d.jpg' % i), 'wb') as f:
            f.write(rng.randbytes(3 << 20))
    local = t.store_path('trip-local')
    p = s3run(c, 'backup', '--store', local, '--store', 's3://trip/nas', '--backup-id', 'family',
              'photos.pxar:' + src, '--output-format', 'json', check=0)
    res = json.loads(p.stdout)
    assert res['targets-ok'] == 2, res
    assert 'unencrypted' in p.stderr, p.stderr
    snap = res['snapshot']
    keys = c.keys('trip')
    assert 'nas/host/family/owner' in keys, keys
    assert 'nas/%s/index.json.blob' % snap in keys, keys
    assert 'nas/%s/photos.pxar.didx' % snap in keys, keys
    assert any(k.startswith('nas/.chunks/') for k in keys), keys
    assert not any('.cairn/writers' in k for k in keys), keys  # removed at finish
    out = os.path.join(work, 'trip-restored')
    s3run(c, 'restore', '--store', 's3://trip/nas', snap, 'photos.pxar', out, check=0)
    compare(src, out)
    p = s3run(c, 'snapshot', 'list', '--store', 's3://trip/nas', check=0)
    assert snap in p.stdout, p.stdout
    p = s3run(c, 'list', '--store', 's3://trip/nas', check=0)
    assert 'host/family' in p.stdout, p.stdout
    p = s3run(c, 'snapshot', 'files', '--store', 's3://trip/nas', snap, check=0)
    assert 'photos.pxar' in p.stdout, p.stdout

    # the next night through cairn run's config: credentials from a file, no
    # AWS_* variables; only the changed file's chunks are uploaded
    with open(os.path.join(src, 'new.jpg'), 'wb') as f:
        f.write(rng.randbytes(300000))
    creds = os.path.join(work, 'credentials')
    with open(creds, 'w') as f:
        f.write('[nightly]\naws_access_key_id = %s\naws_secret_access_key = %s\n'
                % (cairn_ceph.ACCESS_KEY, cairn_ceph.SECRET_KEY))
    os.chmod(creds, 0o600)
    conf = os.path.join(work, 'trip.conf')
    with open(conf, 'w') as f:
        f.write('[cairn]\nbackup-id = family\nstate-dir = %s\n\n'
                '[source photos]\npath = %s\narchive = photos.pxar\n\n'
                '[target home]\ntype = local\npath = %s\n\n'
                '[target offsite]\ntype = s3\nbucket = trip\nprefix = nas\nendpoint = %s\n'
                'credentials-file = %s\nprofile = nightly\naddressing = path\n'
                % (os.path.join(work, 'state'), src, local, c.endpoint, creds))
    p = t.run('config', 'check', '--config', conf, check=0)
    assert 'S3 bucket trip/nas' in p.stdout and 'unencrypted' in p.stderr, (p.stdout, p.stderr)
    time.sleep(1.1)  # a new backup time (second precision)
    env = {k: '' for k in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_ENDPOINT_URL')}
    t.run('run', '--config', conf, env=env, check=0)
    assert len(manifests(c, 'trip', 'nas/')) == 2
    with open(os.path.join(work, 'state', 'history.json')) as f:
        rec = json.load(f)[-1]
    offsite = [x for x in rec['targets'] if x['name'] == 'offsite'][0]
    assert offsite['kind'] == 's3' and offsite['result'] == 'ok', offsite
    stored = sum(o['Size'] for page in c.client().get_paginator('list_objects_v2').paginate(
        Bucket='trip', Prefix='nas/.chunks/') for o in page.get('Contents', []))
    assert 0 < offsite['bytes-uploaded'] < stored / 2, (offsite, stored)
    print('next night: %d bytes uploaded, %d stored in all' % (offsite['bytes-uploaded'], stored))
    out2 = os.path.join(work, 'trip-restored2')
    s3run(c, 'restore', '--store', 's3://trip/nas', 'host/family', 'photos.pxar', out2, check=0)
    compare(src, out2)
    print('round trip: local + S3 in one backup, restore from S3, run with an s3 target ok '
          '(%.1f s)' % (time.monotonic() - t0))
    return src


def case_encrypted(c, src):
    c.create_bucket('enc')
    key = os.path.join(work, 'key.json')
    t.run('key', 'create', key, '--kdf', 'none', check=0)
    p = s3run(c, 'backup', '--store', 's3://enc', '--keyfile', key, '--backup-id', 'family',
              'photos.pxar:' + src, '--output-format', 'json', check=0)
    assert 'unencrypted' not in p.stderr, p.stderr
    snap = json.loads(p.stdout)['snapshot']
    chunks = c.keys('enc', '.chunks/')
    assert chunks
    cl = c.client()
    for k in chunks[:5]:
        raw = cl.get_object(Bucket='enc', Key=k)['Body'].read()
        assert pbsformat.blob_is_encrypted(raw), k
    out = os.path.join(work, 'enc-restored')
    s3run(c, 'restore', '--store', 's3://enc', '--keyfile', key, snap, 'photos.pxar', out,
          check=0)
    compare(src, out)
    p = s3run(c, 'restore', '--store', 's3://enc', snap, 'photos.pxar',
              os.path.join(work, 'enc-nokey'))
    assert p.returncode != 0, p.stdout
    print('encrypted round trip ok; chunk objects are encrypted blobs')


def case_bucket_is_datastore(c, src):
    disk = t.store_path('trip-copy')
    c.download('trip', 'nas/', disk)
    assert check_datastore(disk) == 2
    t.run('verify', '--store', disk, check=0)
    out = os.path.join(work, 'copy-restored')
    t.run('restore', '--store', disk, 'host/family', 'photos.pxar', out, check=0)
    compare(src, out)
    # and the other way: a datastore uploaded with an S3 tool is a bucket
    c.create_bucket('upload')
    cl = c.client()
    local = t.store_path('trip-local')
    for dirpath, _dirs, files in os.walk(local):
        rel = os.path.relpath(dirpath, local)
        if rel.split(os.sep)[0] == '.cairn' or rel == '.':
            continue
        for n in files:
            k = os.path.join(rel, n)
            if n.startswith('.') and n != '.protected':
                continue
            cl.upload_file(os.path.join(dirpath, n), 'upload', 'store/' + k)
    out = os.path.join(work, 'upload-restored')
    s3run(c, 'restore', '--store', 's3://upload/store', 'host/family', 'photos.pxar', out,
          check=0)
    compare(src, out)
    print('bucket copied to disk is a valid datastore; an uploaded datastore restores')


def case_bad_credentials(c, src):
    wrong = 'WrongSecretKeyWrongSecretKeyWrongSecret1'
    for args in (['list', '--store', 's3://trip/nas'],
                 ['backup', '--store', 's3://trip/nas', '--backup-id', 'x',
                  'photos.pxar:' + src, '--output-format', 'json']):
        p = s3run(c, *args, env={'AWS_SECRET_ACCESS_KEY': wrong})
        assert p.returncode == 1, (args, p.returncode, p.stdout, p.stderr)
        both = p.stdout + p.stderr
        assert c.endpoint in p.stderr and cairn_ceph.ACCESS_KEY in p.stderr, p.stderr
        assert 'SignatureDoesNotMatch' in p.stderr or 'secret' in p.stderr, p.stderr
        assert wrong not in both and cairn_ceph.SECRET_KEY not in both, both
    p = s3run(c, 'list', '--store', 's3://nosuchbucket', check=1)
    assert 'nosuchbucket' in p.stderr and 'does not exist' in p.stderr, p.stderr
    p = t.run('list', '--store', 's3://trip', env={'AWS_ACCESS_KEY_ID': '',
                                                  'AWS_SECRET_ACCESS_KEY': '',
                                                  'HOME': work}, check=1)
    assert 'no S3 credentials' in p.stderr, p.stderr
    p = s3run(c, 'snapshot', 'forget', 'host/h/2026-01-01T00:00:00Z', '--store', 's3://trip',
              check=2)
    assert 'not supported' in p.stderr, p.stderr
    print('wrong secret, missing bucket, no credentials, unsupported command: clear errors')


def case_rgw_killed(c):
    c.create_bucket('drop')
    src = os.path.join(work, 'drop-src')
    os.makedirs(src)
    for i in range(24):
        with open(os.path.join(src, 'photo%02d.jpg' % i), 'wb') as f:
            f.write(os.urandom(3 << 20))
    local = t.store_path('drop-local')
    args = ['backup', '--store', local, '--store', 's3://drop', '--backup-id', 'family',
            'photos.pxar:' + src, '--output-format', 'json', '--threads', '2']
    run = subprocess.Popen([t.CAIRN] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=dict(os.environ, **c.env()))
    try:
        deadline = time.monotonic() + 120
        while (run.poll() is None and time.monotonic() < deadline
               and not c.keys('drop', '.chunks/')):
            time.sleep(0.05)
        keys = c.keys('drop')
        assert run.poll() is None, ('the backup ended before radosgw could be stopped',
                                    run.communicate())
        assert any(k.startswith('.chunks/') for k in keys), 'no chunk reached the bucket'
        # while it runs: its writer marker is there, its manifest is not
        assert any(k.startswith('.cairn/writers/host/family/') for k in keys), keys
        assert not any(k.endswith('/index.json.blob') for k in keys), keys
        c.stop_rgw()
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if c.rgw_proc is None:
            c.start_rgw()
    assert run.returncode == EXIT_PARTIAL, (run.returncode, out, err)
    res = json.loads(out)
    assert res['targets-ok'] == 1 and res['targets-total'] == 2, res
    snap = res['snapshot']
    assert manifests(c, 'drop') == [], manifests(c, 'drop')
    p = s3run(c, 'snapshot', 'list', '--store', 's3://drop', check=0)
    assert 'family' not in p.stdout, p.stdout
    restored = os.path.join(work, 'drop-restored')
    t.run('restore', '--store', local, snap, 'photos.pxar', restored, check=0)
    compare(src, restored)
    # the next run completes on both
    time.sleep(1.1)
    res = json.loads(s3run(c, *args, check=0).stdout)
    assert res['targets-ok'] == 2, res
    assert len(manifests(c, 'drop')) == 1
    restored2 = os.path.join(work, 'drop-restored2')
    s3run(c, 'restore', '--store', 's3://drop', res['snapshot'], 'photos.pxar', restored2,
          check=0)
    compare(src, restored2)
    print('radosgw killed mid-upload: S3 dropped (exit 3), local complete, nothing visible '
          'in the bucket; the next run completes')


started = time.monotonic()
cluster = cairn_ceph.Cluster()
try:
    cluster.start()
    print('ceph up in %.1f s at %s' % (time.monotonic() - started, cluster.endpoint))
    tree = case_round_trip(cluster)
    for case in (case_encrypted, case_bucket_is_datastore, case_bad_credentials):
        t0 = time.monotonic()
        case(cluster, tree)
        print('  (%.1f s)' % (time.monotonic() - t0))
    case_rgw_killed(cluster)
finally:
    cluster.stop()
    subprocess.run(['rm', '-rf', work])
print('all ok in %.1f s' % (time.monotonic() - started))
