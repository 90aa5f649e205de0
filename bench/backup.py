#!/usr/bin/python3
"""bench/backup — the backup benchmark: cairn against borg and restic.

Usage (full size: a 1 GiB corpus and 100,000 small files; several GiB of
disk, tens of minutes on 2 cores):

    bench/backup.py --cairn build/cli/cairn --rounds 3

Quick check of the script itself (a few minutes):

    bench/backup.py --cairn build/cli/cairn --size-mb 64 --small-mb 16 \
                    --small-files 2000 --rounds 1

The first table printed holds the figures of issue 21, per tool (cairn,
borg, restic; medians of the rounds): initial backup into a new store
(wall, CPU, peak RSS), of which creating cairn's store, the same backup
into an existing store, the restore (wall, peak RSS) and a no-change run
over the small-file tree (cairn: --change-detection-mode metadata), its
time relative to restic's and the bytes cairn read. The detailed tables
follow.

What runs, on the same deterministic photo-vault corpus
(bench/gen_corpus.py) and tree of small files, in one run:

  cairn:  initial backup, no-change re-run, full restore, and (as root)
          the restore again with the page cache emptied first, as after a
          disaster; the backup, re-run and restore again encrypted (a key
          file, AES-256-GCM), as restic always encrypts; then with
          --change-detection-mode metadata: initial backup, no-change
          re-run (bytes read by the cairn process from /proc/self/io),
          and a run after a "day of change" (new files, a renamed folder,
          metadata-only changes, in-place edits): new bytes stored vs
          bytes actually changed
  restic: the same backup and restore steps, if `restic` is installed
  borg:   the same backup and restore steps, if `borg` is installed
  all three, in the rounds: the backup into a new repository (cairn's
          store creation also timed alone: an empty backup into a new
          store) and a no-change run over the small-file tree

For each step: wall seconds, throughput (corpus MiB / s), CPU seconds
(user + sys of the tool) and peak RSS; then cairn's ratios to the others.
Also the peak RSS of a cairn backup of a 10x smaller corpus, to show that
memory does not grow with the data set.

    bench/backup.py --cairn build/cli/cairn [--size-mb 2048] [--small-mb 200]
                    [--small-files N] [--corpus DIR] [--workdir DIR]
                    [--rounds N] [--json]
Caches are warm (the corpus is read once, untimed, before each tool's
first step); every tool gets the same conditions. Default sizes: 1024 MiB
corpus, 100 MiB small corpus, 100,000 small files (1-16 KiB each, 100 to
a folder, generated).
With --rounds N (default 1) the tools run N times in turn (cairn,
cairn encrypted, restic, borg; then again, starting one tool later each
round) and each step reports its median round, with every round's wall
time printed: on a shared virtual machine single runs of the same binary
differ by up to 2x (a restore that fills fresh page-cache pages pays for
the host backing them).

Stores, repositories, file caches and the changed copy of the corpus are
moved aside when a step is done with them and deleted only after the last
round: on ext4 without a journal the inode allocator skips, one by one at
every allocation, each inode freed in the last one to six minutes, so
deleting a store (cairn's holds 65,536 directories) would make the next
store's directory creations several times slower than on a disk where
nothing was just deleted. Restored trees are deleted right away: their
few hundred files slow the next 65,536 directory creations by about a
tenth, and keeping every round's would take about ten times the corpus
in free space per round.
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


class Trash:
    """Where the steps put stores and repositories they are done with:
    renamed into one folder of the work directory, deleted with it at the
    end."""
    def __init__(self, work):
        self.dir = os.path.join(work, 'trash')
        self.n = 0

    def put(self, path):
        os.makedirs(self.dir, exist_ok=True)
        self.n += 1
        os.rename(path, os.path.join(self.dir, '%d-%s' % (self.n, os.path.basename(path))))


TRASH = None  # set by main()


def measure(cmd, env=None):
    """Runs cmd; returns (wall s, cpu s, peak RSS MiB). Fails loudly."""
    return measure_out(cmd, env)[:3]


def measure_out(cmd, env=None):
    """Runs cmd; returns (wall s, cpu s, peak RSS MiB, its stdout). The
    page cache is written back first: a step must not pay for the
    write-back the step before left (a restore's gigabytes of files, a
    repository written through the cache), which a tool that syncs the
    file system before it publishes (cairn, as PBS) would otherwise wait
    for, and which competes for the disk with any tool."""
    e = dict(os.environ)
    if env:
        e.update(env)
    os.sync()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    out, err = p.stdout.read(), p.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit('bench: %s failed (%d):\n%s\n%s' % (' '.join(cmd), code, out.decode(),
                                                   err.decode()))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, out


def make_small_files(root, count, seed=11):
    """The many-small-files tree: count files of 1-16 KiB, 100 to a
    folder; half of each file random, half text (compressible), as
    sidecars and thumbnails are. The same seed gives the same bytes."""
    import random
    rng = random.Random(seed)
    for i in range(count):
        d = os.path.join(root, 'd%04d' % (i // 100))
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        n = rng.randint(1 << 10, 16 << 10)
        text = (b'file %d of the small-file tree\n' % i) * (n // 64 + 1)
        with open(os.path.join(d, 'f%03d.dat' % (i % 100)), 'wb') as f:
            f.write(rng.randbytes(n // 2) + text[:n - n // 2])


def mkdir_probe(work, tag, n=4096):
    """Microseconds per mkdir of n directories in one new directory of the
    work file system (kept until the end, as the stores are). A new
    store makes 65,536 of them; on ext4 without a journal they take
    several times longer for minutes after a large deletion, which this
    figure shows beside the results."""
    d = os.path.join(work, 'mkdir-probe-' + tag)
    os.makedirs(d)
    t0 = time.monotonic()
    for i in range(n):
        os.mkdir(os.path.join(d, '%04x' % i))
    us = (time.monotonic() - t0) * 1e6 / n
    TRASH.put(d)
    return us


def du(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total


def corpus_bytes(path):
    seen, total = set(), 0
    for d, _, fs in os.walk(path):
        for f in fs:
            st = os.lstat(os.path.join(d, f))
            if st.st_ino not in seen and not os.path.islink(os.path.join(d, f)):
                seen.add(st.st_ino)
                total += st.st_size
    return total


def warm(path):
    """Reads every file once, untimed, so that the first tool measured
    finds the corpus in the page cache like the ones after it (a corpus
    given with --corpus may have been evicted since it was written)."""
    for d, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                with open(p, 'rb') as fh:
                    while fh.read(1 << 20):
                        pass


def can_drop_caches():
    return os.access('/proc/sys/vm/drop_caches', os.W_OK)


def drop_caches():
    """Empties the page cache (root only), so that the next step reads
    the repository from the disk, as a restore after a disaster does."""
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def restore_cold(cmd, dest, env=None, pre=None):
    """A restore with nothing in the page cache, or None when this
    process may not empty it. dest (of the restore before) is removed
    first."""
    if not can_drop_caches():
        return None
    shutil.rmtree(dest)
    if pre:
        pre()
    drop_caches()
    return measure(cmd, env)


def run_cairn(cairn, corpus, work, tag, keyfile=None, small=None):
    """cairn's backup, re-run and restores; with keyfile, encrypted (as
    restic always is) and without the cold restore. With small (the
    small-file tree), also: the backup into a new store, the store's
    creation alone, and a metadata-mode no-change run over small."""
    store = os.path.join(work, 'cairn-store-' + tag)
    dest = os.path.join(work, 'cairn-restore-' + tag)
    key = ['--keyfile', keyfile] if keyfile else []
    res = {}
    if small:
        # what a new user sees first: the backup creates the store
        fresh = os.path.join(work, 'cairn-store-new-' + tag)
        res['backup-new'] = measure([cairn, 'backup', 'media.pxar:' + corpus, '--store', fresh,
                                     '--backup-id', 'bench'] + key)
        TRASH.put(fresh)
    # create the store first (as restic init / borg init): a PBS-layout
    # store makes its 65536 chunk directories up front; timed as
    # "store creation"
    empty = os.path.join(work, 'empty-' + tag)
    os.makedirs(empty, exist_ok=True)
    res['init'] = measure([cairn, 'backup', 'empty.pxar:' + empty, '--store', store,
                           '--backup-id', 'init'])
    res['backup'] = measure([cairn, 'backup', 'media.pxar:' + corpus, '--store', store,
                             '--backup-id', 'bench'] + key)
    time.sleep(1.1)  # backup times have second resolution
    res['rerun'] = measure([cairn, 'backup', 'media.pxar:' + corpus, '--store', store,
                            '--backup-id', 'bench'] + key)
    cmd = [cairn, 'restore', 'host/bench', 'media.pxar', dest, '--store', store] + key
    res['restore'] = measure(cmd)
    res['restore-cold'] = None if keyfile else restore_cold(cmd, dest)
    res['stored'] = du(store)
    shutil.rmtree(dest)
    if small:
        cache = os.path.join(work, 'cairn-filecache-' + tag)
        md = [cairn, 'backup', 'small.pxar:' + small, '--store', store, '--backup-id',
              'small', '--change-detection-mode', 'metadata', '--file-cache-dir', cache,
              '--output-format', 'json']
        measure(md)
        time.sleep(1.1)
        wall, cpu, rss, out = measure_out(md)
        res['small-nochange'] = (wall, cpu, rss, json.loads(out)['bytes-read'])
        TRASH.put(cache)
    TRASH.put(store)
    return res


def cairn_json(cmd):
    """Runs a cairn backup with --output-format json: (wall s, its JSON)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd + ['--output-format', 'json'], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit('bench: %s failed (%d):\n%s\n%s' % (' '.join(cmd), p.returncode, p.stdout,
                                                   p.stderr))
    return wall, json.loads(p.stdout)


def day_of_change(corpus, seed=7):
    """A realistic day: ~2 % new photos, one month folder renamed, a few
    files with only new permissions, a few edited in place (sidecars).
    Returns the bytes actually changed (new files + edited files)."""
    import random
    rng = random.Random(seed)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(corpus) for f in fs
                   if not os.path.islink(os.path.join(d, f)))
    size = corpus_bytes(corpus)
    changed = 0
    newdir = os.path.join(corpus, 'photos', 'today')
    os.makedirs(newdir, exist_ok=True)
    i = 0
    while changed < size // 50:
        n = rng.randint(1 << 20, 6 << 20)
        with open(os.path.join(newdir, 'IMG_NEW_%04d.jpg' % i), 'wb') as f:
            f.write(rng.randbytes(n))
        changed += n
        i += 1
    months = sorted(os.path.join(d, x) for d, ds, _ in os.walk(os.path.join(corpus, 'photos'))
                    for x in ds if len(x) == 2)
    if months:
        m = months[len(months) // 2]
        os.rename(m, m + '-renamed')
        files = [f.replace(m + '/', m + '-renamed/') for f in files]
    for f in rng.sample(files, min(5, len(files))):
        os.chmod(f, 0o600)
    edits = [f for f in files if f.endswith('.xmp') or f.endswith('.txt')]
    for f in rng.sample(edits, min(5, len(edits))):
        with open(f, 'r+b') as fh:
            fh.seek(0)
            fh.write(b'<!-- edited -->')
        changed += os.path.getsize(f)
    return changed


def run_cairn_metadata(cairn, corpus, work):
    """Metadata change detection: initial, no-change re-run, day of change
    (on a copy of the corpus, which is changed)."""
    store = os.path.join(work, 'cairn-store-md')
    src = os.path.join(work, 'md-corpus')
    shutil.copytree(corpus, src, symlinks=True)
    cache = os.path.join(work, 'md-cache')
    base = [cairn, 'backup', 'media.pxar:' + src, '--store', store, '--backup-id', 'md',
            '--change-detection-mode', 'metadata', '--file-cache-dir', cache]
    # the store is created first, untimed (as in run_cairn)
    empty = os.path.join(work, 'md-empty')
    os.makedirs(empty)
    measure([cairn, 'backup', 'empty.pxar:' + empty, '--store', store, '--backup-id', 'init'])
    res = {}
    res['initial'] = cairn_json(base)
    time.sleep(1.1)
    res['nochange'] = cairn_json(base)
    res['changed_bytes'] = day_of_change(src)
    time.sleep(1.1)
    before = du(store)
    res['day'] = cairn_json(base)
    res['day_stored'] = du(store) - before
    dest = os.path.join(work, 'md-restore')
    subprocess.run([cairn, 'restore', 'host/md', 'media.pxar', dest, '--store', store],
                   check=True, stdout=subprocess.DEVNULL)
    res['identical'] = subprocess.run(['diff', '-r', '--no-dereference', src, dest],
                                      stdout=subprocess.DEVNULL).returncode == 0
    shutil.rmtree(dest)
    TRASH.put(src)
    TRASH.put(store)
    return res


def new_store(init, backup):
    """A backup into a new repository: init then backup, one step (wall
    and CPU added, the larger peak RSS)."""
    return (init[0] + backup[0], init[1] + backup[1], max(init[2], backup[2]))


def run_restic(corpus, work, small=None):
    repo = os.path.join(work, 'restic-repo')
    dest = os.path.join(work, 'restic-restore')
    env = {'RESTIC_PASSWORD': 'bench', 'RESTIC_REPOSITORY': repo}
    res = {}
    res['init'] = measure(['restic', 'init'], env)
    res['backup'] = measure(['restic', 'backup', '--no-scan', corpus], env) \
        if restic_has_no_scan() else measure(['restic', 'backup', corpus], env)
    res['backup-new'] = new_store(res['init'], res['backup'])
    res['rerun'] = measure(['restic', 'backup', corpus], env)
    cmd = ['restic', 'restore', 'latest', '--target', dest]
    res['restore'] = measure(cmd, env)
    res['restore-cold'] = restore_cold(cmd, dest, env)
    res['stored'] = du(repo)
    shutil.rmtree(dest)
    if small:
        measure(['restic', 'backup', small], env)
        res['small-nochange'] = measure(['restic', 'backup', small], env)
    TRASH.put(repo)
    return res


def median_result(runs):
    """One result from several rounds of a tool: for each step the round
    with the median wall time (the lower one of an even count; a real
    run, not a blend); stored bytes of the first round."""
    out = {'stored': runs[0]['stored']}
    for step in runs[0]:
        if step == 'stored':
            continue
        got = sorted((r[step] for r in runs if r.get(step)), key=lambda m: m[0])
        out[step] = got[(len(got) - 1) // 2] if len(got) == len(runs) else None
    return out


def restic_has_no_scan():
    p = subprocess.run(['restic', 'backup', '--help'], capture_output=True, text=True)
    return '--no-scan' in p.stdout


def run_borg(corpus, work, small=None):
    repo = os.path.join(work, 'borg-repo')
    dest = os.path.join(work, 'borg-restore')
    env = {'BORG_PASSPHRASE': 'bench', 'BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK': 'yes'}
    res = {}
    res['init'] = measure(['borg', 'init', '--encryption=none', repo], env)
    res['backup'] = measure(['borg', 'create', repo + '::a', corpus], env)
    res['backup-new'] = new_store(res['init'], res['backup'])
    res['rerun'] = measure(['borg', 'create', repo + '::b', corpus], env)
    os.makedirs(dest)
    cmd = ['sh', '-c', 'cd "$0" && borg extract "$1"::b', dest, repo]
    res['restore'] = measure(cmd, env)
    res['restore-cold'] = restore_cold(cmd, dest, env, lambda: os.makedirs(dest))
    res['stored'] = du(repo)
    shutil.rmtree(dest)
    if small:
        measure(['borg', 'create', repo + '::s1', small], env)
        res['small-nochange'] = measure(['borg', 'create', repo + '::s2', small], env)
    TRASH.put(repo)
    return res


def issue_table(results, mib, tree_files):
    """The figures of issue 21 in one table, a column per tool, and the
    same as a dict for --json."""
    tools = [t for t in ('cairn', 'borg', 'restic') if t in results]
    rows, table = [], {}

    def cell(tool, step, fmt):
        m = results[tool].get(step)
        return fmt(m) if m else ''

    def row(label, step, fmt):
        rows.append([label] + [cell(t, step, fmt) for t in tools])
        table[step] = {t: list(results[t][step]) for t in tools if results[t].get(step)}

    row('initial backup into a new store: wall, CPU, peak RSS', 'backup-new',
        lambda m: '%.2f s, %.2f CPU-s, %.0f MiB' % m[:3])
    row('  of which creating the store (cairn), init (others)', 'init',
        lambda m: '%.2f s (%.2f CPU-s)' % m[:2])
    row('backup into an existing store: wall, CPU, peak RSS', 'backup',
        lambda m: '%.2f s, %.2f CPU-s, %.0f MiB' % m[:3])
    row('  CPU-s per GB of data', 'backup', lambda m: '%.2f' % (m[1] / (mib * 1.048576 / 1000)))
    row('restore: wall, peak RSS', 'restore', lambda m: '%.2f s, %.0f MiB' % (m[0], m[2]))
    rs = results.get('restic', {}).get('small-nochange')
    row('no-change run, %d small files (cairn: metadata mode)' % tree_files, 'small-nochange',
        lambda m: '%.2f s%s' % (m[0], ' (%.2fx restic)' % (m[0] / rs[0]) if rs else ''))
    cn = results['cairn'].get('small-nochange')
    if cn:
        rows.append(['  bytes read by cairn', '%d' % cn[3]] + [''] * (len(tools) - 1))
    widths = [max(len(r[i]) for r in rows + [['step'] + tools]) for i in range(len(tools) + 1)]
    lines = ['| ' + ' | '.join(c.ljust(w) for c, w in zip(['step'] + tools, widths)) + ' |',
             '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    lines += ['| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |' for r in rows]
    return '\n'.join(lines), table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cairn', required=True)
    ap.add_argument('--size-mb', type=int, default=1024)
    ap.add_argument('--small-mb', type=int, default=100)
    ap.add_argument('--small-files', type=int, default=100000,
                    help='files in the many-small-files tree (default 100000)')
    ap.add_argument('--corpus')
    ap.add_argument('--workdir')
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--rounds', type=int, default=1)
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error('--rounds takes 1 or more')
    if a.small_files < 1:
        ap.error('--small-files takes 1 or more')
    work = tempfile.mkdtemp(prefix='cairn-bench-', dir=a.workdir)
    global TRASH
    TRASH = Trash(work)
    try:
        corpus = a.corpus
        if not corpus:
            corpus = os.path.join(work, 'corpus')
            subprocess.run([sys.executable, os.path.join(HERE, 'gen_corpus.py'), corpus,
                            '--size-mb', str(a.size_mb)], check=True, stdout=subprocess.DEVNULL)
        small = os.path.join(work, 'small')
        subprocess.run([sys.executable, os.path.join(HERE, 'gen_corpus.py'), small,
                        '--size-mb', str(a.small_mb), '--seed', '2'], check=True,
                       stdout=subprocess.DEVNULL)
        tree = os.path.join(work, 'small-files')
        make_small_files(tree, a.small_files)
        size = corpus_bytes(corpus)
        mib = size / (1 << 20)
        # encrypted, as restic always is (AES-256-GCM; a key without a
        # password, so no key derivation is timed)
        keyfile = os.path.join(work, 'bench-key.json')
        subprocess.run([os.path.abspath(a.cairn), 'key', 'create', '--kdf', 'none', keyfile],
                       check=True, stdout=subprocess.DEVNULL)
        runners = [('cairn', lambda: run_cairn(os.path.abspath(a.cairn), corpus, work, 'big',
                                               small=tree)),
                   ('cairn-enc', lambda: run_cairn(os.path.abspath(a.cairn), corpus, work, 'enc',
                                                   keyfile))]
        if shutil.which('restic'):
            runners.append(('restic', lambda: run_restic(corpus, work, tree)))
        if shutil.which('borg'):
            runners.append(('borg', lambda: run_borg(corpus, work, tree)))
        # Rounds take the tools in turn, so that a machine that drifts
        # (shared, virtual) treats them alike; each step's median counts.
        # Each round starts with the next tool: whoever goes first after a
        # pause fills page-cache pages the host has taken back meanwhile.
        rounds = {tool: [] for tool, _ in runners}
        os.sync()
        probe = [mkdir_probe(work, 'before')]
        for k in range(a.rounds):
            first = k % len(runners)
            for tool, run in runners[first:] + runners[:first]:
                warm(corpus)  # (a cold restore emptied the page cache)
                warm(tree)
                rounds[tool].append(run())
        probe.append(mkdir_probe(work, 'after'))
        results = {tool: median_result(rs) for tool, rs in rounds.items()}
        encrypted = results.pop('cairn-enc')
        small_res = run_cairn(os.path.abspath(a.cairn), small, work, 'small')
        steps = ['backup', 'rerun', 'restore']
        if all(r['restore-cold'] for r in results.values()):
            steps.append('restore-cold')
        results['cairn-enc'] = encrypted
        report = {'corpus_mib': mib, 'cpus': os.cpu_count(), 'tools': {},
                  'small_files': a.small_files, 'rounds_run': a.rounds,
                  'mkdir_us_before_after': probe}
        text, report['issue21'] = issue_table(results, mib, a.small_files)
        if not a.json:
            print('corpus: %.0f MiB (%s), %d small files, %d CPUs, median of %d round(s)'
                  % (mib, corpus, a.small_files, os.cpu_count(), a.rounds))
            print('mkdir on the work file system: %.0f us each before the rounds, %.0f us '
                  'after (a new store makes 65,536)' % (probe[0], probe[1]))
            print(text)
            print()
            print('%-9s %-12s %8s %9s %8s %9s' % ('tool', 'step', 'wall s', 'MiB/s', 'CPU s',
                                                 'RSS MiB'))
        for tool, r in results.items():
            report['tools'][tool] = {'stored_mib': r['stored'] / (1 << 20)}
            for step in steps:
                if not r[step]:
                    continue
                wall, cpu, rss = r[step]
                report['tools'][tool][step] = {'wall': wall, 'mibs': mib / wall, 'cpu': cpu,
                                               'rss_mib': rss}
                if not a.json:
                    print('%-9s %-12s %8.2f %9.1f %8.2f %9.1f' % (tool, step, wall, mib / wall,
                                                                cpu, rss))
        big_rss = results['cairn']['backup'][2]
        small_rss = small_res['backup'][2]
        report['rss_ratio_big_small'] = big_rss / small_rss
        if not a.json:
            print('cairn backup peak RSS: %.1f MiB for %.0f MiB, %.1f MiB for %d MiB: ratio %.2f'
                  % (big_rss, mib, small_rss, a.small_mb, big_rss / small_rss))
        for other in ('restic', 'borg'):
            if other in results:
                ratios = {s: results[other][s][0] / results['cairn'][s][0] for s in steps}
                enc = {s: results[other][s][0] / encrypted[s][0]
                       for s in ('backup', 'restore')}
                report['speedup_vs_' + other + '_encrypted'] = enc
                report['speedup_vs_' + other] = ratios
                if not a.json:
                    print('cairn vs %s (speed-up, wall time): backup %.2fx, re-run %.2fx, '
                          'restore %.2fx%s' % (other, ratios['backup'], ratios['rerun'],
                                               ratios['restore'],
                                               ', restore from a cold cache %.2fx'
                                               % ratios['restore-cold']
                                               if 'restore-cold' in ratios else ''))
                    print('cairn encrypted vs %s: backup %.2fx, restore %.2fx'
                          % (other, enc['backup'], enc['restore']))
        if a.rounds > 1:
            report['rounds'] = {tool: [{st: r[st][0] for st in steps if r.get(st)} for r in rs]
                                for tool, rs in rounds.items()}
            if not a.json:
                print('median of %d rounds; wall seconds of each round:' % a.rounds)
                for tool, rs in rounds.items():
                    print('  %-9s %s' % (tool, '  '.join(
                        '%s %s' % (st, '/'.join('%.2f' % r[st][0] for r in rs))
                        for st in steps if all(r.get(st) for r in rs))))
        if 'restore-cold' not in steps and not a.json:
            print('(no restore from a cold cache: emptying the page cache needs root)')
        warm(corpus)
        md = run_cairn_metadata(os.path.abspath(a.cairn), corpus, work)
        size = corpus_bytes(corpus)
        nc_wall, nc = md['nochange']
        day_wall, day = md['day']
        report['metadata_mode'] = {
            'initial_wall': md['initial'][0], 'nochange_wall': nc_wall,
            'nochange_bytes_read': nc['bytes-read'], 'nochange_proc_rchar': nc['proc-io-rchar'],
            'nochange_read_fraction': nc['proc-io-rchar'] / size,
            'day_wall': day_wall, 'day_changed_bytes': md['changed_bytes'],
            'day_new_bytes': day['new-bytes'], 'day_stored_bytes': md['day_stored'],
            'day_files_reused': day['files-reused'], 'day_bytes_read': day['bytes-read'],
            'day_files_compared': day['files-compared'],
            'day_new_vs_changed': day['new-bytes'] / max(1, md['changed_bytes']),
            'restore_identical': md['identical'],
        }
        if 'restic' in results:
            report['metadata_mode']['nochange_vs_restic_rerun'] = \
                nc_wall / results['restic']['rerun'][0]
        if not a.json:
            r = report['metadata_mode']
            print('cairn metadata mode: initial %.2fs; no-change re-run %.2fs, read %d bytes '
                  '(/proc/self/io rchar %d = %.3f %% of the corpus)'
                  % (r['initial_wall'], nc_wall, nc['bytes-read'], nc['proc-io-rchar'],
                     100.0 * r['nochange_read_fraction']))
            if 'nochange_vs_restic_rerun' in r:
                print('  no-change re-run / restic re-run (wall): %.2f'
                      % r['nochange_vs_restic_rerun'])
            print('  day of change: %.1f MiB changed; run %.2fs, read %.1f MiB, %d files reused '
                  '(%d read to compare), new data %.1f MiB (%.2fx the changed bytes), store grew '
                  '%.1f MiB; restore identical: %s'
                  % (md['changed_bytes'] / (1 << 20), day_wall, day['bytes-read'] / (1 << 20),
                     day['files-reused'], day['files-compared'], day['new-bytes'] / (1 << 20),
                     r['day_new_vs_changed'], md['day_stored'] / (1 << 20), md['identical']))
        if a.json:
            print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
