#!/usr/bin/python3
"""bench/mount — cairn mount against its goals (issue #23), on one local
store (needs root and /dev/fuse):

  1. sequential read of one large file through the mount vs
     `cairn restore --path` of the same file: goal ratio >= 0.8
     (mount throughput / restore throughput);
  2. `find -exec stat` (one stat per entry, via `find -printf` of stat
     fields) of a many-file snapshot through the mount vs the same `find`
     of the source tree: goal ratio <= 2 (mount time / source time).

    bench/mount.py --cairn build/cli/cairn [--file-mb 1024] [--files 100000]
                   [--runs N] [--workdir DIR] [--json]
The large file is random (incompressible, as photos are); the many small
files are tiny text files in 100 per directory. Each mount is fresh (its
chunk cache and the kernel's caches of it empty: the first walk, as a
user's first find through a new mount); the source tree is warm (its
dentries and inodes cached by an untimed find first, as a tree in use
is) and the store is in the page cache, so the comparison is of cairn's
own work. With --runs N each timing is taken N times (the
source find and the mount find in turn, each mount fresh) and the
medians are reported, which matters on a shared machine. Defaults are
the issue's sizes; small sizes (--file-mb 64 --files 5000) show that the
script works.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          **kw)


def wait_mounted(mnt, proc, limit=120):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit('cairn mount exited %d: %s' % (proc.returncode,
                                                             proc.stderr.read()))
        if os.path.ismount(mnt):
            return
        time.sleep(0.02)
    raise SystemExit('mount did not appear at ' + mnt)


class Mount:
    def __init__(self, cairn, store, snap, mnt):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([cairn, 'mount', snap, 'media.pxar', mnt, '--store', store],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_mounted(mnt, self.proc)
        self.open_seconds = time.monotonic() - self.t0

    def cpu(self):
        """CPU seconds cairn mount has used so far (all its threads)."""
        with open('/proc/%d/stat' % self.proc.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def close(self):
        subprocess.run(['fusermount3', '-u', self.mnt], capture_output=True)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            subprocess.run(['fusermount3', '-u', '-z', self.mnt], capture_output=True)


def backup(cairn, store, src, bid):
    out = run(cairn, 'backup', 'media.pxar:' + src, '--store', store, '--backup-id', bid,
              '--output-format', 'json')
    return json.loads(out.stdout)['snapshot']


def child_cpu():
    """CPU seconds of the waited-for children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def read_all(path):
    with open(path, 'rb') as f:
        while f.read(1 << 20):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cairn', required=True)
    ap.add_argument('--file-mb', type=int, default=1024)
    ap.add_argument('--files', type=int, default=100000)
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--workdir')
    ap.add_argument('--json', action='store_true')
    a = ap.parse_args()
    if not os.path.exists('/dev/fuse'):
        raise SystemExit('/dev/fuse is absent: cannot mount')
    cairn = os.path.abspath(a.cairn)
    work = tempfile.mkdtemp(prefix='cairn_bench_mount_', dir=a.workdir)
    res = {}
    try:
        store = os.path.join(work, 'store')
        # 1. one large file
        big = os.path.join(work, 'big')
        os.makedirs(big)
        with open(os.path.join(big, 'video.mkv'), 'wb') as f:
            for _ in range(a.file_mb):
                f.write(os.urandom(1 << 20))
        snap = backup(cairn, store, big, 'bigfile')
        size = a.file_mb << 20
        out = os.path.join(work, 'restored')
        restores, reads, opens = [], [], []
        for _ in range(a.runs):
            t0 = time.monotonic()
            run(cairn, 'restore', snap, 'media.pxar', out, '--store', store, '--path',
                'video.mkv')
            restores.append(time.monotonic() - t0)
            shutil.rmtree(out)
            m = Mount(cairn, store, snap, os.path.join(work, 'mnt1'))
            try:
                t0 = time.monotonic()
                read_all(os.path.join(m.mnt, 'video.mkv'))
                reads.append(time.monotonic() - t0)
                opens.append(m.open_seconds)
            finally:
                m.close()
        t_restore, t_mount = statistics.median(restores), statistics.median(reads)
        res['open_seconds_bigfile'] = statistics.median(opens)
        res['restore_runs_s'], res['mount_read_runs_s'] = restores, reads
        res['restore_mib_s'] = size / t_restore / (1 << 20)
        res['mount_read_mib_s'] = size / t_mount / (1 << 20)
        res['read_ratio'] = t_restore / t_mount
        # 2. many files
        many = os.path.join(work, 'many')
        for i in range(a.files):
            d = os.path.join(many, 'd%04d' % (i // 100))
            if i % 100 == 0:
                os.makedirs(d)
            with open(os.path.join(d, 'f%06d.txt' % i), 'w') as f:
                f.write('file %d\n' % i)
        snap = backup(cairn, store, many, 'manyfiles')
        fmt = '%p %s %m %U %G %T@\n'
        run('find', many, '-printf', fmt)  # warm
        srcs, mnts, opens, cpu_srcs, cpu_mnts = [], [], [], [], []
        for _ in range(a.runs):
            c0, t0 = child_cpu(), time.monotonic()
            run('find', many, '-printf', fmt)
            srcs.append(time.monotonic() - t0)
            cpu_srcs.append(child_cpu() - c0)
            m = Mount(cairn, store, snap, os.path.join(work, 'mnt2'))
            try:
                m0, c0, t0 = m.cpu(), child_cpu(), time.monotonic()
                run('find', m.mnt, '-printf', fmt)
                mnts.append(time.monotonic() - t0)
                # find's CPU (with the kernel's FUSE work) plus cairn's
                cpu_mnts.append(child_cpu() - c0 + m.cpu() - m0)
                opens.append(m.open_seconds)
            finally:
                m.close()
        t_src, t_mnt = statistics.median(srcs), statistics.median(mnts)
        res['open_seconds_manyfiles'] = statistics.median(opens)
        res['find_source_runs_s'], res['find_mount_runs_s'] = srcs, mnts
        res['find_source_s'] = t_src
        res['find_mount_s'] = t_mnt
        res['find_ratio'] = t_mnt / t_src
        # CPU seconds are what the machine's load does not inflate
        res['find_cpu_source_s'] = statistics.median(cpu_srcs)
        res['find_cpu_mount_s'] = statistics.median(cpu_mnts)
        res['find_cpu_ratio'] = res['find_cpu_mount_s'] / res['find_cpu_source_s']
    finally:
        for d in ('mnt1', 'mnt2'):
            p = os.path.join(work, d)
            if os.path.ismount(p):
                subprocess.run(['fusermount3', '-u', '-z', p], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=1))
        return
    if a.runs > 1:
        print('medians of %d runs' % a.runs)
    print('sequential read of a %d MiB file: restore %.0f MiB/s, mount %.0f MiB/s, '
          'ratio %.2f (goal >= 0.8)' % (a.file_mb, res['restore_mib_s'],
                                        res['mount_read_mib_s'], res['read_ratio']))
    print('find + stat of %d files (source warm, each mount fresh): source %.2fs, '
          'mount %.2fs, ratio %.2f (goal <= 2)' % (
        a.files, res['find_source_s'], res['find_mount_s'], res['find_ratio']))
    print('  CPU (find, plus cairn for the mount): source %.2fs, mount %.2fs, ratio %.2f' % (
        res['find_cpu_source_s'], res['find_cpu_mount_s'], res['find_cpu_ratio']))
    print('mount ready after %.2fs / %.2fs (large file / many files)' % (
        res['open_seconds_bigfile'], res['open_seconds_manyfiles']))


if __name__ == '__main__':
    sys.exit(main())
