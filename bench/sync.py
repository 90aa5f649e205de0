#!/usr/bin/python3
"""bench/sync — `cairn sync` of a snapshot whose chunks are ~98 % present at
the destination, against the goal of issue #23: the bytes that travel are at
most 1.05x the encoded bytes of the chunks the destination lacks.

The situation is the nightly one: store A holds yesterday's snapshot of a
photo tree and today's, which adds new photos worth --changed-pct of the
data; the destination already holds yesterday's snapshot (synced earlier).
Two destinations are measured:

  pbs    the PBS emulator (tests/pbs_emulator/server.py): bytes of the chunk
         uploads the server received (its own counters, GET
         /api2/json/emulator/stats), for the second sync only;
  local  a local store: the growth of its chunk files, and cairn's JSON
         bytes-sent.

"missing" is the sum of the encoded sizes (chunk files in A) of the chunks
A holds and the destination does not, taken just before the second sync.
The ratio printed is transferred / missing; --max-ratio R makes the script
exit 1 when a ratio is above R (the integration test `sync_transfer` runs it
small with --max-ratio 1.05). Times are shown but not judged. The work
directory (the tree, two stores and the emulator's datastore: about 4x
--size-mb) is made in /dev/shm when it is writable, else in $TMPDIR.

    bench/sync.py --cairn build/cli/cairn [--size-mb 256] [--changed-pct 2]
                  [--emulator tests/pbs_emulator/server.py] [--workdir DIR]
                  [--json] [--max-ratio R] [--seed S]

The photos' bytes come from a generator seeded with S (default 23).
"""
import argparse
import json
import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cairn, *args, env=None):
    e = dict(os.environ)
    e.pop('PBS_REPOSITORY', None)
    e.update(env or {})
    p = subprocess.run([cairn] + [str(a) for a in args], capture_output=True, text=True, env=e)
    if p.returncode != 0:
        raise SystemExit('cairn %s: exit %d\n%s%s' % (' '.join(map(str, args)), p.returncode,
                                                      p.stdout, p.stderr))
    return p.stdout


def write_random(path, size, rng):
    """size incompressible bytes from rng (seeded: the same tree, and so
    the same chunk boundaries, in every run)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n


def chunk_sizes(store):
    """{digest: encoded size} of every chunk file of a datastore."""
    out = {}
    base = os.path.join(store, '.chunks')
    if not os.path.isdir(base):
        return out
    for d in os.scandir(base):
        if d.is_dir():
            for c in os.scandir(d.path):
                if len(c.name) == 64:
                    out[c.name] = c.stat().st_size
    return out


class Emulator:
    def __init__(self, script, ds):
        self.proc = subprocess.Popen(['/usr/bin/python3', script, '--datastore', 'store1=' + ds,
                                      '--port', '0', '--token', 'root@pam!t1:SECRET'],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != 'READY':
            self.proc.terminate()
            raise SystemExit('emulator did not start: %r' % line)
        self.port = line[1]
        self.repo = 'root@pam!t1@127.0.0.1:%s:store1' % self.port
        self.env = {'PBS_PASSWORD': 'SECRET', 'PBS_FINGERPRINT': line[2]}
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE  # loopback only

    def uploaded(self):
        """Bytes of chunk uploads the server has received so far."""
        req = urllib.request.Request(
            'https://127.0.0.1:%s/api2/json/emulator/stats' % self.port,
            headers={'Authorization': 'PBSAPIToken=root@pam!t1:SECRET'})
        with urllib.request.urlopen(req, context=self.ctx, timeout=120) as r:
            return json.loads(r.read())['data']['totals']['bytes_uploaded']

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def sync(cairn, src, dst, env=None):
    t0 = time.monotonic()
    out = json.loads(run(cairn, 'sync', '--from', src, '--to', dst, '--output-format', 'json',
                         env=env))
    return out, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cairn', required=True)
    ap.add_argument('--emulator', default=os.path.join(HERE, '..', 'tests', 'pbs_emulator',
                                                        'server.py'))
    ap.add_argument('--size-mb', type=int, default=256)
    ap.add_argument('--changed-pct', type=float, default=2.0)
    ap.add_argument('--workdir')
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--max-ratio', type=float)
    ap.add_argument('--seed', type=int, default=23)
    a = ap.parse_args()
    cairn = os.path.abspath(a.cairn)
    # a datastore has 65536 chunk directories: on a busy disk making and
    # removing them takes minutes, on /dev/shm a second
    base = a.workdir
    if base is None and os.access('/dev/shm', os.W_OK | os.X_OK):
        base = '/dev/shm'
    work = tempfile.mkdtemp(prefix='cairn_bench_sync_', dir=base)
    emu = None
    try:
        tree = os.path.join(work, 'photos')
        total = a.size_mb << 20
        photo = 3 << 20 if total >= 64 << 20 else 256 << 10  # photo-sized files
        rng = random.Random(a.seed)
        for i in range(max(1, total // photo)):
            write_random(os.path.join(tree, '2025', 'img_%05d.jpg' % i), photo, rng)
        A, B = os.path.join(work, 'A'), os.path.join(work, 'B')
        run(cairn, 'backup', 'photos.pxar:' + tree, '--store', A, '--backup-id', 'photos')
        emu = Emulator(os.path.abspath(a.emulator), os.path.join(work, 'pbs'))
        sync(cairn, A, emu.repo, env=emu.env)  # yesterday's snapshot is at both
        sync(cairn, A, B)
        time.sleep(1.1)  # today's snapshot gets a later second
        # today: new photos worth changed_pct of the data
        new = int(total * a.changed_pct / 100)
        i = 0
        while new > 0:
            n = min(new, photo)
            write_random(os.path.join(tree, '2026', 'new_%05d.jpg' % i), n, rng)
            new -= n
            i += 1
        run(cairn, 'backup', 'photos.pxar:' + tree, '--store', A, '--backup-id', 'photos')
        have_a = chunk_sizes(A)
        result = {'size-mb': a.size_mb, 'changed-pct': a.changed_pct, 'chunks': len(have_a)}
        ok = True
        for name in ('pbs', 'local'):
            have = chunk_sizes(os.path.join(work, 'pbs') if name == 'pbs' else B)
            missing = sum(v for k, v in have_a.items() if k not in have)
            present = sum(v for k, v in have_a.items() if k in have)
            if name == 'pbs':
                before = emu.uploaded()
                out, secs = sync(cairn, A, emu.repo, env=emu.env)
                sent = emu.uploaded() - before
            else:
                out, secs = sync(cairn, A, B)
                after = chunk_sizes(B)
                sent = sum(v for k, v in after.items() if k not in have)
            if out['copied'] != 1 or out['failed']:
                raise SystemExit('%s: the second sync did not copy one snapshot: %r' % (name, out))
            ratio = sent / missing if missing else float('inf')
            r = {'missing-bytes': missing, 'present-pct': round(100.0 * present /
                                                                  (present + missing), 2),
                 'transferred-bytes': sent, 'cairn-bytes-sent': out['bytes-sent'],
                 'chunks-sent': out['chunks-sent'], 'chunks-reused': out['chunks-reused'],
                 'ratio': round(ratio, 4), 'seconds': round(secs, 2)}
            result[name] = r
            if a.max_ratio is not None and not ratio <= a.max_ratio:
                ok = False
            if not a.json:
                print('%-5s: %.2f %% present, %d bytes missing, %d transferred (cairn: %d sent, '
                      '%d chunks sent, %d reused): ratio %.3f (goal <= 1.05), %.1f s'
                      % (name, r['present-pct'], missing, sent, out['bytes-sent'],
                         out['chunks-sent'], out['chunks-reused'], ratio, secs))
        if a.json:
            print(json.dumps(result, indent=1))
        if not ok:
            print('ratio above %.3f' % a.max_ratio, file=sys.stderr)
            sys.exit(1)
    finally:
        if emu:
            emu.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
