#!/usr/bin/python3
"""Deterministic photo-vault-like corpus for benchmarks and tests.

    gen_corpus.py DIR [--size-mb N] [--seed S]

Writes below DIR (created; must be empty or absent), about N MiB in total:
  photos/YYYY/MM/IMG_NNNN.jpg   1-12 MB incompressible files (~80 % of bytes)
  photos/YYYY/MM/IMG_NNNN.xmp   small compressible sidecars (XML text)
  videos/VID_NNNN.mp4           a few large incompressible files (~15 %)
  albums/...                    ~5 % of the photos again as duplicate copies,
                                symlinks to photos, one hardlink
  notes/*.txt                   compressible text
Same arguments, same bytes, names and mtimes (the tree is reproducible), so
runs of different tools and different machines compare.
"""
import argparse
import os
import random
import sys

MIB = 1 << 20
BASE_TIME = 1_600_000_000


def write(path, data, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    os.utime(path, (mtime, mtime))


def sidecar(rng, name):
    lines = ['<?xml version="1.0"?>', '<x:xmpmeta xmlns:x="adobe:ns:meta/">']
    for k in range(rng.randint(20, 60)):
        lines.append('  <rdf:Description tag="%s" rating="%d" camera="Model-%d"/>' %
                     (name, rng.randint(0, 5), rng.randint(1, 9)))
    lines.append('</x:xmpmeta>')
    return ('\n'.join(lines) + '\n').encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('dir')
    ap.add_argument('--size-mb', type=int, default=200)
    ap.add_argument('--seed', type=int, default=1)
    a = ap.parse_args()
    if os.path.exists(a.dir) and os.listdir(a.dir):
        sys.exit('gen_corpus: %s is not empty' % a.dir)
    rng = random.Random(a.seed)
    total = a.size_mb * MIB
    video_budget = total * 15 // 100
    photo_budget = total * 80 // 100
    photos = []
    made = 0
    n = 0
    while made < photo_budget:
        size = min(rng.randint(1 * MIB, 12 * MIB), max(photo_budget - made, 64 << 10))
        year = 2015 + n // 400
        month = 1 + (n // 40) % 12
        name = 'IMG_%04d' % n
        path = os.path.join(a.dir, 'photos', str(year), '%02d' % month, name + '.jpg')
        mtime = BASE_TIME + n * 3600
        write(path, rng.randbytes(size), mtime)
        write(path[:-4] + '.xmp', sidecar(rng, name), mtime)
        photos.append(path)
        made += size
        n += 1
    nv = 0
    while video_budget > 0:
        size = min(video_budget, max(video_budget // 2, 40 * MIB))
        write(os.path.join(a.dir, 'videos', 'VID_%04d.mp4' % nv), rng.randbytes(size),
              BASE_TIME + nv * 86400)
        video_budget -= size
        nv += 1
    # ~5 % duplicates: whole files copied into albums
    dup_budget = total * 5 // 100
    albums = os.path.join(a.dir, 'albums')
    os.makedirs(albums, exist_ok=True)
    for p in rng.sample(photos, len(photos)):
        if dup_budget <= 0:
            break
        with open(p, 'rb') as f:
            data = f.read()
        write(os.path.join(albums, 'best-of', os.path.basename(p)), data, os.stat(p).st_mtime)
        dup_budget -= len(data)
    # symlinks and one hardlink
    for i, p in enumerate(photos[:5]):
        os.symlink(os.path.relpath(p, albums), os.path.join(albums, 'link_%d.jpg' % i))
    os.link(photos[0], os.path.join(albums, 'hardlink.jpg'))
    notes = os.path.join(a.dir, 'notes')
    for i in range(20):
        text = ''.join('note %d line %d: %s\n' % (i, k, 'lorem ipsum ' * rng.randint(1, 8))
                       for k in range(200))
        write(os.path.join(notes, 'note_%02d.txt' % i), text.encode(), BASE_TIME + i)
    for root, dirs, _ in os.walk(a.dir):
        for d in dirs:
            os.utime(os.path.join(root, d), (BASE_TIME, BASE_TIME))
    os.utime(a.dir, (BASE_TIME, BASE_TIME))
    print('%s: %d photos, %d videos, %.1f MiB' % (a.dir, len(photos), nv, total / MIB))


if __name__ == '__main__':
    main()
