#!/usr/bin/python3
"""Peak resident memory of a backup into an S3 bucket and of a restore from
it, against the same backup and restore with a local datastore (issue 22:
at most 1.2x). Both take 128 MiB of photos (bench/gen_corpus.py), on a
one-node Ceph radosgw (tests/integration/cairn_ceph.py).

What the S3 target adds to a backup are the chunks whose uploads are in
flight: each holds its (shared, pooled) buffer until its PUT is answered.
With 2 uploads and 1 more chunk queued per target on top of the fan-out
lane's own chunks, the S3 backup peaked at 1.30x the local one; with one
upload in the sender's own call and one on an upload thread, at 1.13x.
The server is slower than the producer on a shared machine, so the
uploads run full whenever the bound matters. Release builds only: ASan's
shadow memory and quarantine inflate the figures."""
import os
import resource
import subprocess
import sys
import time

import cairn_test_lib as t
import cairn_ceph
from test_memory import peak  # (runs cairn, reads its peak RSS)

MAX_RATIO = 1.2


def measure(what, args):
    code, rss, err = peak(args)
    assert code == 0, '%s: exit %d\n%s' % (what, code, err)
    print('%s: peak RSS %.1f MiB' % (what, rss))
    return rss


def compare(what, s3, local):
    ratio = s3 / local
    print('%s: S3 vs local store %.2fx (at most %.1fx)' % (what, ratio, MAX_RATIO))
    assert ratio <= MAX_RATIO, '%s: S3 peak RSS %.1f MiB is %.2fx the local store\'s %.1f MiB' % (
        what, s3, ratio, local)


def main():
    gen = t.setup(sys.argv)
    if t.sanitized():
        print('SKIP: peak RSS is not measured in a sanitized build')
        sys.exit(77)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    work = t.tmpdir()
    started = time.monotonic()
    cluster = cairn_ceph.Cluster()
    try:
        src = os.path.join(work, 'photos')
        subprocess.run([sys.executable, gen, src, '--size-mb', '128', '--seed', '5'],
                       check=True, stdout=subprocess.DEVNULL)
        cluster.start()
        print('ceph up in %.1f s at %s' % (time.monotonic() - started, cluster.endpoint))
        cluster.create_bucket('mem')
        os.environ.update(cluster.env(XDG_CACHE_HOME=os.path.join(work, 'cache')))
        # Three first backups of each, alternating, into new stores and
        # bucket prefixes; the highest peak of each counts. A single pair
        # measured the local store at 85.3 MiB in one run and 93.3 in
        # another (the S3 backup at 102.5-102.7): how many buffers a
        # backup holds at its peak depends on how its threads were timed.
        local_b, s3_b = [], []
        for i in range(3):
            local_b.append(measure('backup %d, local store' % i,
                                   ['backup', 'p.pxar:' + src, '--store',
                                    t.store_path('local%d' % i), '--backup-id', 'm']))
            s3_b.append(measure('backup %d, S3' % i,
                                ['backup', 'p.pxar:' + src, '--store', 's3://mem/r%d' % i,
                                 '--backup-id', 'm']))
        store = t.store_path('local0')
        local_b, s3_b = max(local_b), max(s3_b)
        local_r = measure('restore, local store',
                          ['restore', 'host/m', 'p.pxar', os.path.join(work, 'r1'), '--store',
                           store])
        s3_r = measure('restore, S3',
                       ['restore', 'host/m', 'p.pxar', os.path.join(work, 'r2'), '--store',
                        's3://mem/r0'])
        t.compare_trees(src, os.path.join(work, 'r2'))
        compare('backup', s3_b, local_b)
        compare('restore', s3_r, local_r)
    finally:
        cluster.stop()
        subprocess.run(['rm', '-rf', '--', work])
    print('ok in %.1f s' % (time.monotonic() - started))


if __name__ == '__main__':
    main()
