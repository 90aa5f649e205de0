#!/usr/bin/python3
"""Metadata change detection over a tree of many small files (issue #21):
a few thousand files of 1-16 KiB in folders of 100, next to a few "photos"
of several MiB with small sidecars and thumbnails beside them, as a photo
library looks. Hundreds of small files share one payload chunk, so the
reuse decision sees chunks that start and end mid-range everywhere.

Counts, not time:
 - no-change runs (the second, the third, and one after a day of change)
   reuse >= 99 % of the files and read < 1 % of the bytes, the third one
   nothing at all (no file re-read every night for its padding);
 - a day of change (1 % of the small files rewritten, a sidecar edited,
   a few added, a few deleted) stores at most 1.1x the changed bytes as
   new payload chunks;
 - every split archive keeps upstream's sequential decoder's rules
   (checked here independently of cairn: the payload stream starts with
   its start marker, each PAYLOAD_REF points at a PAYLOAD header of its
   size, after the end of the previous one), and restores equal the
   source."""
import os
import random
import shutil
import struct
import sys
import time

import cairn_test_lib as t

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'pbs_emulator'))
import pbsformat  # noqa: E402

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
rng = random.Random(21)
n_small = 1500 if t.sanitized() else 3000
for i in range(n_small):
    d = os.path.join(src, 'small', 'd%03d' % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'f%05d.dat' % i), 'wb') as f:
        f.write(rng.randbytes(rng.randint(1 << 10, 16 << 10)))
for i in range(12):
    d = os.path.join(src, 'photos', '2024-%02d' % (i // 4 + 1))
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, 'IMG_%04d' % i)
    with open(base + '.jpg', 'wb') as f:
        f.write(rng.randbytes(rng.randint(2 << 20, 4 << 20)))
    with open(base + '.xmp', 'wb') as f:
        f.write(rng.randbytes(rng.randint(2 << 10, 6 << 10)))
    with open(base + '.thumb.jpg', 'wb') as f:
        f.write(rng.randbytes(rng.randint(8 << 10, 16 << 10)))

store = t.store_path('small')
env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, 'cache'))

HDR = 16
PAYLOAD = 0x28147a1b0b7c1a25
PAYLOAD_REF = 0x419d3d6bc4ba977e
START_MARKER = 0x834c68c2194a4ed2


def tree_files():
    out = {}
    for d, _, fs in os.walk(src):
        for name in fs:
            p = os.path.join(d, name)
            out[p] = os.path.getsize(p)
    return out


def backup():
    time.sleep(1.1)  # one snapshot per second
    p = t.run('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'sf',
              '--change-detection-mode', 'metadata', '--output-format', 'json', env=env, check=0)
    import json
    return json.loads(p.stdout)


def index(snap, name):
    with open(os.path.join(store, snap, name), 'rb') as f:
        return pbsformat.parse_index(f.read(), name)


def stream(snap, name):
    out = bytearray()
    for _, _, digest in index(snap, name).entries:
        h = digest.hex()
        with open(os.path.join(store, '.chunks', h[:4], h), 'rb') as f:
            out += pbsformat.blob_decode_plain(f.read(), digest)
    return bytes(out)


def check_split_archive(snap):
    """The rules of upstream's sequential decoder over NAME.mpxar +
    NAME.ppxar: returns the number of payload references."""
    meta, payload = stream(snap, 'data.mpxar.didx'), stream(snap, 'data.ppxar.didx')
    assert struct.unpack_from('<Q', payload, 0)[0] == START_MARKER, 'no payload start marker'
    pos, consumed, refs = 0, HDR, 0
    while pos < len(meta):
        typ, size = struct.unpack_from('<QQ', meta, pos)
        assert size >= HDR and pos + size <= len(meta), (pos, typ, size)
        if typ == PAYLOAD_REF:
            off, fsize = struct.unpack_from('<QQ', meta, pos + HDR)
            assert off >= consumed, 'payload offset %d before %d' % (off, consumed)
            ptyp, psize = struct.unpack_from('<QQ', payload, off)
            assert ptyp == PAYLOAD and psize == fsize + HDR, (off, ptyp, psize, fsize)
            consumed = off + HDR + fsize
            refs += 1
        # a directory's GOODBYE and every other item: header + content
        pos += size
    return refs


def restore_and_compare(snap):
    d = os.path.join(work, 'restore')
    t.run('restore', snap, 'data.pxar', d, '--store', store, env=env, check=0)
    t.compare_trees(src, d)
    shutil.rmtree(d)


def no_change_run(label, expect_zero):
    files = tree_files()
    total = sum(files.values())
    o = backup()
    assert o['files'] == len(files), (label, o)
    assert o['files-reused'] * 100 >= 99 * o['files'], (label, o)
    assert o['bytes-read'] * 100 < total, (label, o, total)
    if expect_zero:
        assert o['bytes-read'] == 0 and o['files-reused'] == o['files'], (label, o)
    assert check_split_archive(o['snapshot']) == len(files), label
    return o


o1 = backup()
files1 = tree_files()
assert o1['files-reused'] == 0 and o1['bytes-read'] == sum(files1.values()), o1
assert check_split_archive(o1['snapshot']) == len(files1)

o2 = no_change_run('second run', False)
o3 = no_change_run('third run', True)
restore_and_compare(o3['snapshot'])

# a day of change: 1 % of the small files rewritten (new content, new
# size), a sidecar edited, a few files added, a few deleted
small = sorted(p for p in files1 if '/small/' in p)
picked = rng.sample(small, len(small) // 100 + 5)
modified, deleted = picked[:len(small) // 100], picked[len(small) // 100:]
changed = 0
for p in modified:
    data = rng.randbytes(rng.randint(1 << 10, 16 << 10))
    with open(p, 'wb') as f:
        f.write(data)
    changed += len(data)
xmp = os.path.join(src, 'photos', '2024-02', 'IMG_0005.xmp')
with open(xmp, 'ab') as f:
    f.write(b'<rating>5</rating>')
changed += os.path.getsize(xmp)
for i in range(5):
    data = rng.randbytes(rng.randint(1 << 10, 16 << 10))
    with open(os.path.join(src, 'small', 'd%03d' % (7 * i % (n_small // 100)), 'new%d.dat' % i),
              'wb') as f:
        f.write(data)
    changed += len(data)
for p in deleted:
    os.unlink(p)
n_changed = len(modified) + 1 + 5

known = {os.path.basename(p) for p in t.chunk_files(store)}
o4 = backup()
files4 = tree_files()
assert o4['files'] == len(files4), o4
assert o4['files-reused'] >= len(files4) - n_changed, (o4, n_changed)
assert o4['bytes-read'] <= changed, (o4, changed)
new_payload = 0
for s, e, digest in index(o4['snapshot'], 'data.ppxar.didx').entries:
    if digest.hex() not in known:
        known.add(digest.hex())
        new_payload += e - s
assert new_payload >= changed, (new_payload, changed)
assert new_payload * 10 <= changed * 11, 'stored %d new payload bytes for %d changed' % (new_payload, changed)
assert check_split_archive(o4['snapshot']) == len(files4)
restore_and_compare(o4['snapshot'])

# and the night after: nothing read again
o5 = no_change_run('after the day of change', True)
restore_and_compare(o5['snapshot'])
print('small files: run 2 reused %d/%d read %d; run 3 read %d; day of change: %d changed, '
      '%d new payload bytes; run 5 read %d' % (o2['files-reused'], o2['files'], o2['bytes-read'],
                                               o3['bytes-read'], changed, new_payload, o5['bytes-read']))
