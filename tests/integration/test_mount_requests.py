#!/usr/bin/python3
"""cairn mount asks the kernel for few round trips (needs /dev/fuse and
root, as in CI; without /dev/fuse the test is skipped, exit 77). Counted
in libfuse's request trace (--debug):
  - find + stat of a tree: one OPENDIR at most (the kernel then opens
    directories itself), no RELEASEDIR, no LOOKUP (readdirplus gave every
    name its attributes), and a second find sends no READDIR (the kernel
    keeps the listings)
  - the first find of a tree with a directory too large for one listing
    reply: two requests per directory (its listing, then the empty reply
    that ends it) plus the large directory's further replies, all
    READDIRPLUS: no LOOKUP, no GETATTR; then a lookup after the listing's
    end, and (as root) a walk after the kernel forgot the mount's inodes
  - a sequential read of an 8 MiB file comes in 1 MiB READ requests (the
    mount's read-ahead raised from the kernel's 128 KiB; root only), the
    bytes equal the source, and opening a second file sends no OPEN
Every mount is undone in a finally (fusermount3 -u -z), waits are bounded.
"""
import os
import re
import shutil
import subprocess
import sys

import cairn_test_lib as t

t.require_fuse()

t.setup(sys.argv)
work = t.tmpdir()
store = t.store_path('mount_requests')
mnt = os.path.join(work, 'mnt')
FMT = '%p %s %m %U %G %T@\n'


class Traced:
    """A mount with libfuse's request trace in a log file."""

    def __init__(self, snap):
        os.makedirs(mnt, exist_ok=True)
        self.log = open(os.path.join(work, 'trace.log'), 'w+')
        self.p = subprocess.Popen([t.CAIRN, 'mount', snap, 'media.pxar', mnt, '--store', store,
                                   '--debug'], stdout=self.log, stderr=self.log)

        def up():
            if self.p.poll() is not None:
                raise AssertionError('cairn mount exited %d: %s' % (self.p.returncode,
                                                                    self.text()))
            return os.path.ismount(mnt)
        t.wait_for(up, 'the mount at ' + mnt)
        self.mark = 0

    def text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def since(self):
        """opcode -> count of the requests since the last call."""
        txt = self.text()
        part, self.mark = txt[self.mark:], len(txt)
        counts = {}
        for op in re.findall(r'opcode: ([A-Z_]+)', part):
            counts[op] = counts.get(op, 0) + 1
        return counts, part

    def close(self):
        subprocess.run(['fusermount3', '-u', mnt], capture_output=True)
        self.p.wait(timeout=60)
        self.log.close()
        assert self.p.returncode == 0, 'cairn mount exited %d' % self.p.returncode


def write(path, text):
    with open(path, 'w') as fh:
        fh.write(text)


def backup(src, bid):
    return t.run_json('backup', 'media.pxar:' + src, '--store', store, '--backup-id',
                      bid)['snapshot']


def find(root):
    return subprocess.run(['find', root, '-printf', FMT], check=True, capture_output=True,
                          text=True).stdout


try:
    # ---- many directories: find + stat ----
    src = os.path.join(work, 'tree')
    for d in range(40):
        os.makedirs(os.path.join(src, 'd%02d' % d, 'sub'))
        for f in range(10):
            write(os.path.join(src, 'd%02d' % d, 'f%d.txt' % f), '%d %d\n' % (d, f))
    snap = backup(src, 'tree')
    m = Traced(snap)
    try:
        m.since()
        out = find(mnt)
        want = find(src).replace(src, mnt)
        # (directory sizes differ between tmpfs and the archive)
        strip = lambda s: sorted(re.sub(r' \d+ (\d+ \d+ \d+ \S+)$', r' \1', x)
                                 for x in s.splitlines() if not x.startswith(mnt + ' '))
        assert strip(out) == strip(want), 'find through the mount differs from the source'
        c, _ = m.since()
        assert c.get('READDIRPLUS', 0) >= 81, c
        assert c.get('OPENDIR', 0) <= 1, 'OPENDIR per directory: %s' % c
        assert c.get('RELEASEDIR', 0) == 0, c
        assert c.get('LOOKUP', 0) == 0, 'lookups despite readdirplus: %s' % c
        find(mnt)
        c, _ = m.since()
        assert not c.get('READDIR') and not c.get('READDIRPLUS'), \
            'listings not kept by the kernel: %s' % c
        print('ok: find + stat of %d dirs: %s' % (81, c))
    finally:
        m.close()

    # ---- the first walk: requests per directory ----
    # 60 small directories and one of 3000 entries, more than one listing
    # reply holds. Every directory costs its listing (as many READDIRPLUS
    # replies as it fills) and the empty reply that ends it, and nothing
    # else: no READDIR without attributes, no LOOKUP, no GETATTR.
    wide = os.path.join(work, 'wide')
    for d in range(60):
        os.makedirs(os.path.join(wide, 'd%02d' % d))
        for f in range(5):
            write(os.path.join(wide, 'd%02d' % d, 'f%d' % f), '%d\n' % f)
    os.makedirs(os.path.join(wide, 'big'))
    for f in range(3000):
        write(os.path.join(wide, 'big', 'file-%04d.jpg' % f), '%d\n' % f)
    ndirs = 62
    snap = backup(wide, 'wide')
    m = Traced(snap)
    try:
        m.since()
        out = find(mnt)
        assert len(out.splitlines()) == 1 + ndirs - 1 + 60 * 5 + 3000, 'find missed entries'
        c, _ = m.since()
        served = sum(v for op, v in c.items() if op not in ('FORGET', 'BATCH_FORGET'))
        assert c.get('READDIR', 0) == 0, 'listings without attributes: %s' % c
        assert c.get('LOOKUP', 0) == 0 and c.get('GETATTR', 0) <= 1, c
        # the large directory fills a few replies (each up to find's
        # buffer of 128 KiB, about 700 entries)
        assert served <= 2 * ndirs + 8, '%d requests for %d directories: %s' % (
            served, ndirs, c)
        print('ok: first walk of %d directories in %d requests: %s' % (ndirs, served, c))
        # a listing's end lets cairn drop its list of the directory: a
        # lookup there afterwards reads it again and answers right
        assert not os.path.exists(os.path.join(mnt, 'big', 'file-3000.jpg'))
        with open(os.path.join(mnt, 'big', 'file-2999.jpg')) as fh:
            assert fh.read() == '2999\n'
        c, _ = m.since()
        assert c.get('LOOKUP', 0) == 1, 'the missing name: one LOOKUP: %s' % c
        # the kernel forgets the mount's inodes (root: drop the dentry and
        # inode caches); cairn frees their nodes, makes them anew from its
        # free lists, and the next walk shows the same tree
        if os.geteuid() == 0:
            with open('/proc/sys/vm/drop_caches', 'w') as fh:
                fh.write('2\n')
            again = find(mnt)
            c, _ = m.since()
            assert sorted(again.splitlines()) == sorted(out.splitlines()), \
                'the walk after the kernel forgot the inodes differs'
            forgot = c.get('FORGET', 0) + c.get('BATCH_FORGET', 0)
            print('ok: walk after the kernel forgot the mount\'s inodes (%d forget requests)'
                  % forgot)
    finally:
        m.close()

    # ---- sequential read ----
    data = os.urandom(8 << 20)
    big = os.path.join(work, 'big')
    os.makedirs(big)
    for name in ('a.bin', 'b.bin'):
        with open(os.path.join(big, name), 'wb') as f:
            f.write(data)
    snap = backup(big, 'big')
    m = Traced(snap)
    try:
        os.listdir(mnt)
        m.since()
        with open(os.path.join(mnt, 'a.bin'), 'rb') as f:
            got = b''.join(iter(lambda: f.read(1 << 20), b''))
        assert got == data, 'a.bin read through the mount differs'
        c, txt = m.since()
        sizes = [int(x) - 16 for x in re.findall(r'success, outsize: (\d+)', txt)]
        reads = c.get('READ', 0)
        if os.geteuid() == 0:
            # 8 at 1 MiB; 64 at the kernel's default 128 KiB
            assert reads <= 16, '%d READ requests for 8 MiB (sizes %s)' % (reads,
                                                                         sorted(set(sizes)))
        with open(os.path.join(mnt, 'b.bin'), 'rb') as f:
            assert f.read() == data
        c2, _ = m.since()
        assert c.get('OPEN', 0) + c2.get('OPEN', 0) <= 1, (c, c2)
        print('ok: 8 MiB read in %d READ requests; opens: %s, then %s' % (
            reads, c.get('OPEN', 0), c2.get('OPEN', 0)))
    finally:
        m.close()
finally:
    if os.path.ismount(mnt):
        subprocess.run(['fusermount3', '-u', '-z', mnt], capture_output=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
print('all mount request tests passed')
