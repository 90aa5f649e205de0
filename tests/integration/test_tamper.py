#!/usr/bin/python3
"""Tampered and damaged snapshots in a local store, with the real cairn
binary: every kind of damage is exit 4 (corrupt data), found by restore and
verify, and the message names what is wrong.
  - an older snapshot's files copied into a newer snapshot's directory
    (encrypted and plain)                    -> restore/verify/files 4, both times named
  - the signature removed from an encrypted snapshot's manifest, with
    the key                                  -> restore/verify 4
  - a plain, unsigned snapshot after an encrypted one in the same group
    (a downgrade)                            -> restore warns, verify 4
  - broken manifests (bad JSON, no files, wrong CRC, truncated, empty,
    deep JSON, negative size)                -> verify 4
  - a missing chunk                          -> verify 4, restore 4
  - a flipped GCM tag / ciphertext byte in an encrypted chunk
                                             -> restore 4, verify 4
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib

import cairn_test_lib as t

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                'pbs_emulator'))
import pbsformat  # noqa: E402

t.setup(sys.argv)
work = t.tmpdir()
key = os.path.join(work, 'key.json')
t.run('key', 'create', key, '--kdf', 'none', check=0)
# one store for all (making one is 65,536 mkdirs): every group has its
# own random content, so no chunk is shared between the cases
estore = pstore = t.store_path('store')


def make_src(name, size=64 << 10):
    """A small tree of its own (random content: no chunk shared with
    another group's)."""
    d = os.path.join(work, name)
    os.makedirs(d)
    with open(os.path.join(d, 'photo.jpg'), 'wb') as f:
        f.write(os.urandom(size))
    with open(os.path.join(d, 'note.txt'), 'w') as f:
        f.write('%s %f\n' % (name, time.time()))
    return d


def backup(store, bid, src, enc):
    args = ['backup', 'data.pxar:' + src, '--store', store, '--backup-id', bid]
    if enc:
        args += ['--keyfile', key]
    return t.run_json(*args)['snapshot']


def keyargs(enc):
    return ['--keyfile', key] if enc else []


def snap_time(snap):
    return snap.rsplit('/', 1)[1]


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def manifest_obj(store, snap):
    return json.loads(pbsformat.blob_decode_plain(read(os.path.join(store, snap,
                                                                   'index.json.blob'))))


def manifest_blob(obj):
    """index.json.blob as cairn and upstream write it (pretty, sorted, zstd)."""
    return pbsformat.blob_encode(pbsformat.manifest_canonical_dump(obj).encode())


def archive_chunk(store, snap):
    """Path of the first chunk of the snapshot's data.pxar.didx."""
    didx = read(os.path.join(store, snap, 'data.pxar.didx'))
    digest = didx[4096 + 8:4096 + 40].hex()
    return os.path.join(store, '.chunks', digest[:4], digest)


# 1. swapped snapshot: an older snapshot's files copied into a newer one's
for enc, store in ((True, estore), (False, pstore)):
    bid = 'swap-enc' if enc else 'swap-plain'
    s1 = backup(store, bid, make_src(bid + '1'), enc)
    time.sleep(1.1)
    s2 = backup(store, bid, make_src(bid + '2'), enc)
    d2 = os.path.join(store, s2)
    for n in os.listdir(d2):
        os.unlink(os.path.join(d2, n))
    for n in os.listdir(os.path.join(store, s1)):
        shutil.copy2(os.path.join(store, s1, n), os.path.join(d2, n))
    k = keyargs(enc)
    p = t.run('restore', s2, 'data.pxar', os.path.join(work, bid + '_r'), '--store', store, *k,
              check=4)
    assert snap_time(s1) in p.stderr and snap_time(s2) in p.stderr, p.stderr
    p = t.run('restore', s2, 'data.pxar', '--verify-only', '--store', store, *k, check=4)
    assert snap_time(s1) in p.stderr and snap_time(s2) in p.stderr, p.stderr
    p = t.run('snapshot', 'files', s2, '--store', store, *k, check=4)
    assert snap_time(s1) in p.stderr and snap_time(s2) in p.stderr, p.stderr
    p = t.run('verify', s2, '--store', store, *k, check=4)
    assert snap_time(s1) in p.stderr and snap_time(s2) in p.stderr, p.stderr
    assert 'FAILED' in p.stdout, p.stdout
    if enc:  # without the key too: the identity is checked before the key
        p = t.run('verify', s2, '--store', store, check=4)
        assert snap_time(s1) in p.stderr and snap_time(s2) in p.stderr, p.stderr
    # the older snapshot itself is fine; its archives are listed without
    # the key too (as PBS lists them), their contents need it
    t.run('verify', s1, '--store', store, *k, check=0)
    if enc:
        pf = t.run('snapshot', 'files', s1, '--store', store, '--output-format', 'json', check=0)
        assert 'data.pxar.didx' in pf.stdout, pf.stdout
        t.run('snapshot', 'files', s1, 'data.pxar', '--store', store, check=1)
    print('swapped %s snapshot: exit 4:' % ('encrypted' if enc else 'plain'),
          p.stderr.strip().splitlines()[0][:200])

# 2. signature stripped from an encrypted snapshot's manifest
s = backup(estore, 'strip', make_src('strip'), True)
t.run('restore', s, 'data.pxar', '--verify-only', '--store', estore, '--keyfile', key, check=0)
m = manifest_obj(estore, s)
assert isinstance(m.get('signature'), str), m
for how in ('null', 'removed'):
    mm = dict(m)
    if how == 'null':
        mm['signature'] = None
    else:
        del mm['signature']
    write(os.path.join(estore, s, 'index.json.blob'), manifest_blob(mm))
    p = t.run('restore', s, 'data.pxar', os.path.join(work, 'strip_r_' + how), '--store', estore,
              '--keyfile', key, check=4)
    assert 'signature' in p.stderr, p.stderr
    p = t.run('verify', s, '--store', estore, '--keyfile', key, check=4)
    assert 'signature' in p.stderr, p.stderr
    p = t.run('snapshot', 'files', s, '--store', estore, '--keyfile', key, check=4)
    # also with the key fingerprint gone: the encrypted files still need it
    mm['unprotected'] = {}
    write(os.path.join(estore, s, 'index.json.blob'), manifest_blob(mm))
    p = t.run('restore', s, 'data.pxar', '--verify-only', '--store', estore, '--keyfile', key,
              check=4)
    assert 'signature' in p.stderr, p.stderr
print('signature removed: exit 4:', p.stderr.strip()[:200])

# 3. downgrade: a plain, unsigned snapshot after an encrypted one
s1 = backup(estore, 'down', make_src('down1'), True)
time.sleep(1.1)
s2 = backup(estore, 'down', make_src('down2'), False)
assert not isinstance(manifest_obj(estore, s2).get('signature'), str)
p = t.run('restore', s2, 'data.pxar', os.path.join(work, 'down_r'), '--store', estore, check=0)
assert 'downgrade' in p.stderr and snap_time(s1) in p.stderr, p.stderr
p = t.run('verify', s2, '--store', estore, check=4)
assert 'downgrade' in p.stderr and snap_time(s1) in p.stderr, p.stderr
t.run('verify', s1, '--store', estore, '--keyfile', key, check=0)
print('downgrade: restore warns, verify exit 4:', p.stderr.strip()[:200])

# 4. broken manifests: each kind is exit 4 for verify (and restore)
s = backup(pstore, 'man', make_src('man'), False)
mpath = os.path.join(pstore, s, 'index.json.blob')
good = read(mpath)
m = json.loads(pbsformat.blob_decode_plain(good))
bad_crc = bytearray(good)
struct.pack_into('<I', bad_crc, 8, zlib.crc32(good[12:]) ^ 0x5a5a5a5a)
no_files = dict(m)
del no_files['files']
neg = json.loads(json.dumps(m))
neg['files'][0]['size'] = -5
kinds = {
    'bad JSON': pbsformat.blob_encode(b'{"backup-type": "host", '),
    'no files list': manifest_blob(no_files),
    'wrong CRC': bytes(bad_crc),
    'truncated': good[:len(good) // 2],
    'empty': b'',
    'deep JSON': pbsformat.blob_encode(b'[' * 100000 + b']' * 100000),
    'negative size': manifest_blob(neg),
}
for kind, data in kinds.items():
    write(mpath, data)
    p = t.run('verify', s, '--store', pstore, check=4)
    assert 'FAILED' in p.stdout and 'manifest' in p.stderr, (kind, p.stdout, p.stderr)
    p = t.run('restore', s, 'data.pxar', '--verify-only', '--store', pstore, check=4)
    listed = [x for x in t.run_json('snapshot', 'list', '--store', pstore) if x['snapshot'] == s]
    assert listed and listed[0]['damaged'], (kind, listed)
    print('manifest %s: verify and restore exit 4, listed as damaged' % kind)
write(mpath, good)
t.run('verify', s, '--store', pstore, check=0)

# 5. a missing chunk
s = backup(pstore, 'miss', make_src('miss'), False)
victim = archive_chunk(pstore, s)
os.unlink(victim)
p = t.run('verify', s, '--store', pstore, check=4)
assert os.path.basename(victim) in p.stderr, p.stderr
p = t.run('restore', s, 'data.pxar', os.path.join(work, 'miss_r'), '--store', pstore, check=4)
assert os.path.basename(victim) in p.stderr, p.stderr
print('missing chunk: verify and restore exit 4:', p.stderr.strip()[:200])

# 6. an encrypted chunk with a flipped GCM tag / ciphertext byte (CRC fixed,
# so that only the authentication can tell)
s = backup(estore, 'gcm', make_src('gcm'), True)
victim = archive_chunk(estore, s)
orig = read(victim)
assert pbsformat.blob_is_encrypted(orig)
for what, pos in (('tag', 12 + 16 + 5), ('ciphertext', 44 + (len(orig) - 44) // 2)):
    bad = bytearray(orig)
    bad[pos] ^= 0x01
    write(victim, bytes(pbsformat.blob_set_crc(bad)))
    p = t.run('restore', s, 'data.pxar', os.path.join(work, 'gcm_r_' + what), '--store', estore,
              '--keyfile', key, check=4)
    assert os.path.basename(victim) in p.stderr, p.stderr
    p = t.run('verify', s, '--store', estore, '--keyfile', key, check=4)
    assert os.path.basename(victim) in p.stderr, p.stderr
    # verify quarantined it (<digest>.0.bad): put the good one back
    for n in os.listdir(os.path.dirname(victim)):
        if n.startswith(os.path.basename(victim) + '.'):
            os.unlink(os.path.join(os.path.dirname(victim), n))
    write(victim, orig)
    print('flipped GCM %s: restore and verify exit 4:' % what, p.stderr.strip()[:200])
t.run('verify', s, '--store', estore, '--keyfile', key, check=0)

print('all tamper tests passed')
shutil.rmtree(work)
