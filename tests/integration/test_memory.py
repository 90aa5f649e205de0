#!/usr/bin/python3
"""Peak resident memory of a backup and a restore of 256 MiB of photos
(bench/gen_corpus.py), to one store and to two at once: bounded by what
the pipeline's queues and buffer pools hold (engine/cn_pipeline.c,
engine/cn_chunk_reader.c), not by the data. The bounds are generous
(sized as now: 48-66 MiB for a backup, 73-78 MiB for a restore; the
backup took 80-106 MiB with two more jobs, two chunks queued per target
and its buffers mapped whole from the start, the restore 101-108 MiB
before its read-ahead was sized by workers); they fail when queues or
pools grow by a few chunks. Release builds only: ASan's shadow memory
and quarantine inflate the figures."""
import os
import resource
import subprocess
import sys

import cairn_test_lib as t

BACKUP_MAX_MIB = 88
RESTORE_MAX_MIB = 90


def peak(args):
    """Runs cairn with args; (exit code, peak RSS in MiB, stderr)."""
    # (meson sets MALLOC_PERTURB_, with which glibc fills every buffer
    # malloc hands out: every page of a chunk-sized buffer then counts)
    env = {k: v for k, v in os.environ.items() if k != 'MALLOC_PERTURB_'}
    p = subprocess.Popen([t.CAIRN] + [str(a) for a in args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), ru.ru_maxrss / 1024.0, err.decode()


def check(what, args, bound):
    code, rss, err = peak(args)
    assert code == 0, '%s: exit %d\n%s' % (what, code, err)
    print('%s: peak RSS %.1f MiB (bound %d)' % (what, rss, bound))
    assert rss <= bound, '%s: peak RSS %.1f MiB above %d MiB' % (what, rss, bound)


def main():
    gen = t.setup(sys.argv)
    if t.sanitized():
        print('SKIP: peak RSS is not measured in a sanitized build')
        sys.exit(77)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    work = t.tmpdir()
    src = os.path.join(work, 'photos')
    subprocess.run([sys.executable, gen, src, '--size-mb', '256', '--seed', '5'], check=True,
                   stdout=subprocess.DEVNULL)
    s1, s2 = t.store_path('one'), t.store_path('two')
    check('backup, one store', ['backup', 'p.pxar:' + src, '--store', s1, '--backup-id', 'm'],
          BACKUP_MAX_MIB)
    check('backup, two stores', ['backup', 'p.pxar:' + src, '--store', os.path.join(s2, 'a'),
                                 '--store', os.path.join(s2, 'b'), '--backup-id', 'm'],
          BACKUP_MAX_MIB)
    dest = os.path.join(work, 'restored')
    check('restore', ['restore', 'host/m', 'p.pxar', dest, '--store', s1], RESTORE_MAX_MIB)
    subprocess.run(['rm', '-rf', '--', work])
    print('ok')


if __name__ == '__main__':
    main()
