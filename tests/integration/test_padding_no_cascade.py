#!/usr/bin/python3
"""Metadata mode, the padding rule: a range of unchanged files that
re-references a chunk full of bytes no current file uses (a large sparse
file grew: its old zeros fill a maximum-size chunk that the small files
before it share) leaves the archive above the 10 % padding budget for
good. Reading later files again cannot remove that padding, so it must
not make them read: the run after the change reads the changed file
only, and a no-change run reads nothing, night after night."""
import os
import random
import sys
import time

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
# a photo library's shape: photos with sidecars and thumbnails, a docs
# folder of small files, hardlinks and symlinks before a 20 MB sparse
# image, a folder of small sidecars
rng = random.Random(1)
for y in (2022, 2023):
    for m in (1, 2, 3):
        d = os.path.join(src, 'photos', str(y), '%02d' % m)
        os.makedirs(os.path.join(d, '.thumbs'))
        for i in range(4):
            n = 'IMG_%d%02d_%03d' % (y, m, i)
            sz = rng.randint(100_000, 1_500_000) if rng.random() < .8 else \
                rng.randint(2_000_000, 5_000_000)
            with open(os.path.join(d, n + '.jpg'), 'wb') as f:
                f.write(b'\xff\xd8\xff\xe0' + rng.randbytes(sz - 4))
            for ext in ('.xmp', '.json'):
                with open(os.path.join(d, n + '.jpg' + ext), 'w') as f:
                    f.write(('<x:xmpmeta id="%s" rating="%d"/>\n' % (n, rng.randint(0, 5)))
                            * rng.randint(20, 400))
            with open(os.path.join(d, '.thumbs', n + '.jpg'), 'wb') as f:
                f.write(rng.randbytes(rng.randint(3000, 16000)))
docs = os.path.join(src, 'docs')
os.makedirs(os.path.join(docs, 'sub'))
with open(os.path.join(docs, 'sub', 'a.txt'), 'w') as f:
    f.write('aaa\n')
for i in range(3):
    open(os.path.join(docs, 'empty%d' % i), 'w').close()
sparse = os.path.join(docs, 'sparse.img')
with open(sparse, 'wb') as f:
    f.seek(20_000_000)
    f.write(b'END')
    f.seek(0)
    f.write(b'BEGIN')
os.link(os.path.join(src, 'photos/2022/01/IMG_202201_000.jpg'), os.path.join(docs, 'hl_a.jpg'))
with open(os.path.join(docs, 'hlpair1.txt'), 'w') as f:
    f.write('hardlink pair content\n' * 50)
os.link(os.path.join(docs, 'hlpair1.txt'), os.path.join(docs, 'hlpair2.txt'))
os.symlink('../photos/2022/01', os.path.join(docs, 'link_jan'))
os.makedirs(os.path.join(src, 'sidecars'))
for i in range(300):
    with open(os.path.join(src, 'sidecars', 's%04d.json' % i), 'w') as f:
        f.write('{"i": %d, "pad": "%s"}\n' % (i, 'x' * rng.randint(1000, 16000)))

store = t.store_path('store')
cache = os.path.join(work, 'cache')


def backup():
    o = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'pad',
                   '--change-detection-mode', 'metadata', '--file-cache-dir', cache)
    time.sleep(1.1)
    return o


backup()
photo = os.path.join(src, 'photos', '2022', '01', 'IMG_202201_003.jpg')
os.truncate(photo, 100)
o = backup()
assert o['bytes-read'] == 100, o
# the sparse file grows: its zeros were maximum-size chunks that the
# small files before it share
with open(sparse, 'r+b') as f:
    f.truncate(30_000_000)
    f.seek(0, 2)
    f.write(b'TAIL')
grown = os.path.getsize(sparse)
o = backup()
assert o['bytes-read'] == grown, (o, grown)
for night in range(2):
    o = backup()
    assert o['bytes-read'] == 0 and o['files-reused'] == o['files'], o
d = os.path.join(work, 'restored')
t.run('restore', o['snapshot'], 'data.pxar', d, '--store', store, check=0)
t.compare_trees(src, d)
print('ok: after the change only the changed file read; no-change runs read nothing')
