#!/usr/bin/python3
"""--change-detection-mode end to end through the cairn command, to a local
store and the PBS emulator at once: split archives (NAME.mpxar.didx +
NAME.ppxar.didx), a no-change run that reads nothing, an in-place edit
with the mtime put back that is read again (once to compare, once to
store), a chmod and a renamed folder that store nothing new, targets
whose previous snapshots differ (nothing read; the chunks the PBS target
lacks are copied from the local store), a deleted file cache (every
file read once), data mode, chunks of the previous
snapshot lost from a store (noticed before they are reused, stored
again: copied from the other target, or read), a previous snapshot made
from another tree (every file read), and byte-identical restores from
both targets every time."""
import json
import os
import shutil
import sys
import time

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
# files of at least the payload chunker's minimum chunk size (1 MiB), so
# that chunks start at file starts and reuse around an edit wastes little
# (smaller files share chunks; a run of them next to a changed file may be
# read again when reusing would store too much padding, as upstream)
for sub in ('a', 'b/c', 'd'):
    os.makedirs(os.path.join(src, sub))
for i in range(24):
    with open(os.path.join(src, ('a', 'b/c', 'd')[i % 3], 'f%02d.bin' % i), 'wb') as f:
        f.write(os.urandom((1200 << 10) + 20011 * i))
os.symlink('a/f00.bin', os.path.join(src, 'link'))
with open(os.path.join(src, 'small.txt'), 'w') as f:
    f.write('small\n')
inodes = {}
for d, _, fs in os.walk(src):
    for name in fs:
        st = os.lstat(os.path.join(d, name))
        if os.path.stat.S_ISREG(st.st_mode):
            inodes[st.st_ino] = st.st_size
total = sum(inodes.values())  # hardlinks are read once
ds = os.path.join(work, 'pbs-ds')
proc, repo, env = t.start_emulator(emulator, ds)
try:
    env['XDG_CACHE_HOME'] = os.path.join(work, 'cache')
    local = t.store_path('local')
    both = ['--store', local, '--repository', repo]
    n = [0]

    def backup(mode, targets):
        time.sleep(1.1)  # one snapshot per second
        p = t.run('backup', 'data.pxar:' + src, *targets, '--backup-id', 'cd',
                  '--change-detection-mode', mode, '--output-format', 'json', env=env, check=0)
        out = json.loads(p.stdout)
        assert out['targets-ok'] == out['targets-total'], out
        return out

    def restore_all(snap, asan=False, pbs=True):
        """Restores snap from both targets and compares it with the source.
        Under ASan only where asan is set (the first, the renamed folder,
        data mode): the restore's C path is the same each time, and a
        restore through the emulator takes seconds there; the release build
        restores every snapshot from the local store, and from the PBS
        target unless pbs is unset (the snapshots whose PBS copy was made
        just like the local one, by a backup to both that read nothing)."""
        if t.sanitized() and not asan:
            return
        places = [('--store', local)] + ([('--repository', repo)] if pbs else [])
        for place in places:
            n[0] += 1
            d = os.path.join(work, 'r%d' % n[0])
            t.run('restore', snap, 'data.pxar', d, *place, env=env, check=0)
            t.compare_trees(src, d)
            shutil.rmtree(d)

    o1 = backup('metadata', both)
    assert o1['bytes-read'] == total and o1['files-reused'] == 0, o1
    snapdir = os.path.join(local, o1['snapshot'])
    assert sorted(os.listdir(snapdir)) == ['catalog.pcat1.didx', 'data.mpxar.didx',
                                           'data.ppxar.didx', 'index.json.blob'], os.listdir(snapdir)
    restore_all(o1['snapshot'], asan=True)
    # the archive's name lists a split snapshot's catalog, as restore takes it
    p = t.run('snapshot', 'files', o1['snapshot'], 'data.pxar', '--store', local, env=env, check=0)
    assert '/a/f00.bin' in p.stdout, p.stdout

    # nothing changed: nothing read, every payload chunk re-referenced
    o2 = backup('metadata', both)
    assert o2['bytes-read'] == 0, o2
    assert o2['files-reused'] == o1['files'], (o1, o2)
    assert o2['chunks-reused'] > 0 and o2['new-bytes'] < 64 * 1024, o2
    restore_all(o2['snapshot'], pbs=False)

    # edited in place, same size, mtime put back: only ctime and content differ
    victim = os.path.join(src, 'b/c', 'f07.bin')
    st = os.stat(victim)
    with open(victim, 'r+b') as f:
        f.seek(100)
        f.write(b'changed!')
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    o3 = backup('metadata', both)
    assert o3['bytes-read'] == 2 * st.st_size and o3['files-compared'] == 0, (o3, st.st_size)
    assert o3['files-reused'] == o1['files'] - 1, o3
    restore_all(o3['snapshot'], pbs=False)

    # metadata only (chmod) and a renamed folder: the chmod'ed file is
    # read to compare and its data reused, the moved ones are found by
    # inode and not read; nothing new is stored but the metadata archive
    os.chmod(os.path.join(src, 'a', 'f03.bin'), 0o600)
    os.rename(os.path.join(src, 'b'), os.path.join(src, 'b-renamed'))
    o4 = backup('metadata', both)
    assert o4['files-compared'] == 1, o4
    # (a neighbour may be read again when reusing its chunks would carry
    # too much padding, upstream's rule; its chunks are the same anyway)
    assert o4['files-reused'] >= o1['files'] - 2, o4
    assert o4['bytes-read'] < total // 4, o4
    assert o4['new-bytes'] < 64 * 1024, o4
    restore_all(o4['snapshot'], asan=True)

    def reused_all_but_padding(o, reused):
        """Nothing read, except that upstream's padding rule may re-read
        one older file whose chunks straddle the file re-encoded above
        (f07): then exactly that file's bytes are read."""
        older = {os.path.getsize(os.path.join(d, f))
                 for d, _, fs in os.walk(src) for f in fs if not os.path.islink(os.path.join(d, f))}
        neighbour = o['bytes-read'] != 0
        assert not neighbour or o['bytes-read'] in older, (o, sorted(older))
        assert o['files-reused'] == reused - neighbour, o

    def one_target_ahead(name, size, ahead, reused):
        """A new file backed up to one target only, then to both: the
        targets' previous snapshots differ; the newest (the one ahead) is
        the reference, and the chunks of the new file that the other
        target lacks are copied to it from there: the new file is not read."""
        with open(os.path.join(src, 'd', name), 'wb') as f:
            f.write(os.urandom(size))
        backup('metadata', ahead)
        o = backup('metadata', both)
        assert o['bytes-read'] != size, o
        reused_all_but_padding(o, reused)
        assert size <= o['new-bytes'] < size + 64 * 1024, o
        restore_all(o['snapshot'])
        return size

    # the local store ahead (the PBS target copies from it), then the PBS
    # target ahead (its reader session supplies the local store)
    total += one_target_ahead('new.bin', 300000, ['--store', local], o1['files'] + 1)
    total += one_target_ahead('new2.bin', 200000, ['--repository', repo], o1['files'] + 2)

    # the file cache is only an accelerator: without it every file is
    # read once (the previous metadata archive alone cannot show a file
    # unchanged: no inode, no ctime); its chunks are mostly known (the
    # chunks cut around files the runs before re-referenced are new)
    shutil.rmtree(os.path.join(work, 'cache'))
    o6 = backup('metadata', both)
    assert o6['bytes-read'] == total and o6['files-reused'] == 0, o6
    assert o6['new-bytes'] < total // 8, o6
    o7 = backup('metadata', both)
    reused_all_but_padding(o7, o1['files'] + 2)
    restore_all(o7['snapshot'], pbs=False)

    # data mode: split archive, every file read, same chunks
    o8 = backup('data', both)
    assert o8['bytes-read'] == total and o8['files-reused'] == 0, o8
    restore_all(o8['snapshot'], asan=True)
    t.run('verify', '--store', local, env=env, check=0)

    # payload chunks of the previous snapshot lost from the local store
    # (a damaged store): a metadata run notices before it reuses them,
    # warns (exit 3) and stores them again, so that the new snapshot and
    # the previous one (made the same way: older ones cut the payload
    # elsewhere and stay damaged) verify. With the PBS target beside it,
    # they are copied from there and nothing is read; alone, every file
    # is read. Metadata mode then reuses as before.
    def payload_chunks(snapshot):
        """The digests of the snapshot's payload index, in order."""
        with open(os.path.join(local, snapshot, 'data.ppxar.didx'), 'rb') as f:
            d = f.read()[4096:]  # entries: end offset (u64), digest
        return [d[i + 8:i + 40].hex() for i in range(0, len(d), 40)]

    chunks = os.path.join(local, '.chunks')

    def lose_chunks(prev):
        """Removes the chunk files over 1 MiB; returns how many entries
        of prev's payload index lost their chunk."""
        gone = {f for d, _, fs in os.walk(chunks) for f in fs
                if os.path.getsize(os.path.join(d, f)) > (1 << 20)}
        for f in gone:
            os.remove(os.path.join(chunks, f[:4], f))
        lost = sum(h in gone for h in payload_chunks(prev))
        assert lost
        return lost

    def healing_run(targets, prev):
        lost = lose_chunks(prev)
        time.sleep(1.1)
        p = t.run('backup', 'data.pxar:' + src, *targets, '--backup-id', 'cd',
                  '--change-detection-mode', 'metadata', '--output-format', 'json',
                  env=env, check=3)
        o = json.loads(p.stdout)
        assert o['targets-ok'] == o['targets-total'], o
        assert o['chunks-missing'] == lost, (o, lost)
        assert ('local:%s: %d of the %d chunks of the previous data.ppxar.didx are missing'
                % (local, lost, len(payload_chunks(prev)))) in p.stderr, p.stderr
        assert 'cairn verify' in p.stderr, p.stderr
        for snap in (prev, o['snapshot']):
            assert all(os.path.exists(os.path.join(chunks, h[:4], h)) for h in payload_chunks(snap))
            t.run('verify', '--store', local, snap, env=env, check=0)
        return o

    # after a data-mode run the cache describes an older snapshot: the
    # next metadata run reads every file once
    o8b = backup('metadata', both)
    assert o8b['bytes-read'] == total and o8b['files-reused'] == 0, o8b
    o9 = healing_run(both, o8b['snapshot'])
    reused_all_but_padding(o9, o1['files'] + 2)
    o9b = healing_run(['--store', local], o9['snapshot'])
    assert o9b['bytes-read'] == total and o9b['files-reused'] == 0, o9b
    o10 = backup('metadata', ['--store', local])
    reused_all_but_padding(o10, o1['files'] + 2)
    t.run('verify', '--store', local, o10['snapshot'], env=env, check=0)
    restore_all(o10['snapshot'], asan=True, pbs=False)

    # the group's previous snapshot made from another tree (another
    # machine with the same backup id, or a job pointed at a copy): a file
    # with the same path, size, mtime and metadata but other content, last
    # changed before that snapshot was made, must be read, not reused
    other = os.path.join(work, 'other')
    shutil.copytree(src, other, symlinks=True)
    edited = os.path.join(other, 'a', 'f00.bin')
    st = os.stat(edited)
    with open(edited, 'r+b') as f:
        f.write(b'other machine')
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    time.sleep(2.1)  # its ctime well before the next snapshot
    o11 = backup('metadata', ['--store', local])
    reused_all_but_padding(o11, o1['files'] + 2)
    env_other = dict(env, XDG_CACHE_HOME=os.path.join(work, 'cache-other'))
    time.sleep(1.1)
    p = t.run('backup', 'data.pxar:' + other, '--store', local, '--backup-id', 'cd',
              '--change-detection-mode', 'metadata', '--output-format', 'json',
              env=env_other, check=0)
    o12 = json.loads(p.stdout)
    assert o12['bytes-read'] == total and o12['files-reused'] == 0, o12
    d = os.path.join(work, 'r-other')
    t.run('restore', o12['snapshot'], 'data.pxar', d, '--store', local, env=env, check=0)
    t.compare_trees(other, d)
    # back on the first machine: its cache describes o11, not o12
    o13 = backup('metadata', ['--store', local])
    assert o13['bytes-read'] == total and o13['files-reused'] == 0, o13
    print('ok')
finally:
    proc.terminate()
    proc.wait()
    shutil.rmtree(work, ignore_errors=True)
