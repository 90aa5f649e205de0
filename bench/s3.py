#!/usr/bin/python3
"""bench/s3 — backup and restore against S3 (a one-node Ceph radosgw on
loopback, started with the test harness tests/integration/cairn_ceph.py),
on the same deterministic corpus (bench/gen_corpus.py), in one run:

  cairn-s3:    cairn backup --store s3://BUCKET, then cairn restore from it
  cairn-local: the same into a local datastore (the memory reference)
  restic:      restic 0.14's S3 backend (restic -r s3:http://127.0.0.1:PORT/BUCKET)

cairn runs encrypted (a key file, AES-256-GCM), as restic always encrypts
and as an offsite copy should be. Every round gives each tool a fresh
bucket or store and fresh caches; the order of the tools rotates from round
to round, and each step reports its median round. Before each step the
page cache is written back and the cluster's daemons are let go idle, so
that no step pays for the writes of the one before it. Printed: wall seconds,
MiB/s, CPU seconds and peak RSS per step, and the ratios the issue sets
goals for: backup to S3 vs restic (goal >= 1.5x), restore from S3 vs
restic (goal >= 2x), peak RSS of the S3 backup vs the local-store backup
(goal <= 1.2x).

    /usr/bin/python3 bench/s3.py --cairn build/cli/cairn [--size-mb 512]
                                 [--rounds 3] [--workdir DIR] [--json]
Needs Debian's ceph daemons and python3-boto3 (scripts/deps.sh --tests) and
restic; run it with /usr/bin/python3.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))
sys.path.insert(0, HERE)
import cairn_ceph  # noqa: E402
from backup import corpus_bytes, measure  # noqa: E402  (bench/backup.py)

MIB = 1 << 20


class Tool:
    def __init__(self, name):
        self.name = name
        self.steps = {}    # step -> list of (wall, cpu, rss)

    def record(self, step, m):
        self.steps.setdefault(step, []).append(m)

    def median(self, step):
        rounds = self.steps[step]
        walls = sorted(r[0] for r in rounds)
        mid = walls[len(walls) // 2]
        r = [x for x in rounds if x[0] == mid][0]
        return r


def daemon_cpu(pid):
    """User + system CPU seconds of a running process, from /proc."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            v = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(v[11]) + int(v[12])) / os.sysconf('SC_CLK_TCK')


def settle(cluster, limit=60.0):
    """Waits until the page cache is written back and the cluster's
    daemons are idle (under 5 % of a core over half a second), so that no
    step pays for the writes of the one before it: radosgw and the OSD go
    on flushing and compacting for seconds after a backup's last PUT."""
    os.sync()
    pids = list(cluster.pids.values())
    if cluster.rgw_proc is not None:
        pids.append(cluster.rgw_proc.pid)
    t0 = time.monotonic()
    prev = sum(daemon_cpu(p) for p in pids)
    while time.monotonic() - t0 < limit:
        time.sleep(0.5)
        cur = sum(daemon_cpu(p) for p in pids)
        if cur - prev < 0.025:
            break
        prev = cur
    return time.monotonic() - t0


def run_cairn(tool, args, work, rnd, corpus, cluster, key, s3):
    tag = '%s-%d' % (tool.name, rnd)
    env = {'XDG_CACHE_HOME': os.path.join(work, tag + '-cache')}
    if s3:
        bucket = 'bench-' + tag
        cluster.create_bucket(bucket)
        env.update(cluster.env())
        store = 's3://' + bucket
    else:
        store = os.path.join(work, tag + '-store')
    settle(cluster)
    tool.record('backup', measure([args.cairn, 'backup', 'photos.pxar:' + corpus, '--store',
                                   store, '--keyfile', key, '--backup-id', 'bench'], env))
    settle(cluster)
    dest = os.path.join(work, tag + '-restore')
    tool.record('restore', measure([args.cairn, 'restore', 'host/bench', 'photos.pxar', dest,
                                    '--store', store, '--keyfile', key], env))
    shutil.rmtree(dest)
    if not s3:
        # deleted with the work directory at the end: on ext4 without a
        # journal, inodes freed in the last minutes are skipped by the
        # allocator, which would slow the next store's 65,536 mkdirs
        os.rename(store, os.path.join(work, 'trash-' + tag))


def run_restic(tool, args, work, rnd, corpus, cluster):
    tag = 'restic-%d' % rnd
    bucket = 'bench-' + tag
    cluster.create_bucket(bucket)
    env = cluster.env()
    env.update({'RESTIC_PASSWORD': 'bench', 'RESTIC_CACHE_DIR': os.path.join(work, tag + '-cache'),
                'RESTIC_REPOSITORY': 's3:%s/%s' % (cluster.endpoint, bucket)})
    measure(['restic', 'init'], env)
    settle(cluster)
    tool.record('backup', measure(['restic', 'backup', '--host', 'bench', corpus], env))
    settle(cluster)
    dest = os.path.join(work, tag + '-restore')
    tool.record('restore', measure(['restic', 'restore', 'latest', '--target', dest], env))
    shutil.rmtree(dest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cairn', required=True)
    ap.add_argument('--size-mb', type=int, default=512)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--workdir')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    args.cairn = os.path.abspath(args.cairn)
    if not shutil.which('restic'):
        sys.exit('bench: restic is not installed')
    work = tempfile.mkdtemp(prefix='cairn-bench-s3-', dir=args.workdir)
    try:
        corpus = os.path.join(work, 'corpus')
        subprocess.run([sys.executable, os.path.join(HERE, 'gen_corpus.py'), corpus,
                        '--size-mb', str(args.size_mb)], check=True, stdout=subprocess.DEVNULL)
        size = corpus_bytes(corpus)
        key = os.path.join(work, 'key.json')
        subprocess.run([args.cairn, 'key', 'create', '--kdf', 'none', key], check=True,
                       capture_output=True)
        tools = [Tool('cairn-s3'), Tool('cairn-local'), Tool('restic')]
        with cairn_ceph.Cluster(base=None) as cluster:
            for rnd in range(args.rounds):
                order = tools[rnd % 3:] + tools[:rnd % 3]
                for tool in order:
                    if tool.name == 'restic':
                        run_restic(tool, args, work, rnd, corpus, cluster)
                    else:
                        run_cairn(tool, args, work, rnd, corpus, cluster, key,
                                  tool.name == 'cairn-s3')
                    print('round %d %-12s backup %6.1f s  restore %6.1f s' %
                          (rnd + 1, tool.name, tool.steps['backup'][-1][0],
                           tool.steps['restore'][-1][0]), file=sys.stderr, flush=True)
        res = {'corpus-mib': round(size / MIB, 1), 'rounds': args.rounds, 'tools': {}}
        for tool in tools:
            res['tools'][tool.name] = {}
            for step in ('backup', 'restore'):
                w, c, r = tool.median(step)
                res['tools'][tool.name][step] = {
                    'wall-s': round(w, 2), 'mib-per-s': round(size / MIB / w, 1),
                    'cpu-s': round(c, 2), 'peak-rss-mib': round(r, 1),
                    'rounds-wall-s': [round(x[0], 2) for x in tool.steps[step]]}
        t = res['tools']
        res['ratios'] = {
            'backup-s3-vs-restic': round(t['restic']['backup']['wall-s'] /
                                         t['cairn-s3']['backup']['wall-s'], 2),
            'restore-s3-vs-restic': round(t['restic']['restore']['wall-s'] /
                                          t['cairn-s3']['restore']['wall-s'], 2),
            'rss-backup-s3-vs-local': round(t['cairn-s3']['backup']['peak-rss-mib'] /
                                            t['cairn-local']['backup']['peak-rss-mib'], 2),
            'rss-restore-s3-vs-local': round(t['cairn-s3']['restore']['peak-rss-mib'] /
                                             t['cairn-local']['restore']['peak-rss-mib'], 2),
        }
        if args.json:
            print(json.dumps(res, indent=2))
            return
        print('corpus %.0f MiB, median of %d rounds (tools in rotated order)' %
              (size / MIB, args.rounds))
        print('%-12s %-8s %8s %8s %8s %10s' % ('tool', 'step', 'wall s', 'MiB/s', 'CPU s',
                                               'RSS MiB'))
        for name, steps in t.items():
            for step, m in steps.items():
                print('%-12s %-8s %8.1f %8.1f %8.1f %10.1f' % (name, step, m['wall-s'],
                                                               m['mib-per-s'], m['cpu-s'],
                                                               m['peak-rss-mib']))
        r = res['ratios']
        print('backup to S3 vs restic:    %.2fx (goal >= 1.5x)' % r['backup-s3-vs-restic'])
        print('restore from S3 vs restic: %.2fx (goal >= 2x)' % r['restore-s3-vs-restic'])
        print('peak RSS, S3 vs local store: backup %.2fx, restore %.2fx (goal <= 1.2x)' %
              (r['rss-backup-s3-vs-local'], r['rss-restore-s3-vs-local']))
    finally:
        subprocess.run(['rm', '-rf', '--', work])


if __name__ == '__main__':
    main()
