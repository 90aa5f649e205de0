#!/usr/bin/python3
"""cairn mount with the real binary against a local store (needs /dev/fuse
and root, as in CI; without /dev/fuse the test is skipped, exit 77):
  - the mounted snapshot equals its source tree: names, content, mode,
    owner, mtime (files and directories), xattrs, ACLs, symlinks,
    hardlinks (one inode), a fifo; also for a split archive
  - random ranges of a large file read through the mount equal the source
  - SIGTERM unmounts cleanly (exit 0), and so does fusermount3 -u
  - --daemon returns once mounted
  - a corrupt chunk: EIO for the file it belongs to, a message on stderr,
    and the rest of the mount keeps working
  - through the PBS emulator: the same tree; the server going away gives
    EIO (no hang), and once it is back the mount reads again (a new reader
    session)
Every mount is undone in a finally (fusermount3 -u -z), waits are bounded.
"""
import errno
import hashlib
import os
import random
import signal
import shutil
import stat
import subprocess
import sys
import time

import cairn_test_lib as t

t.require_fuse()

t.setup(sys.argv)
work = t.tmpdir()
# on /dev/shm (t.store_path): making, walking (t.chunk_files) and removing a
# store's 65,536 directories on a busy disk took a large part of this test
store = t.store_path('store')
mounts = []


wait_for = t.wait_for


def mount(snap, mnt, *extra, env=None):
    os.makedirs(mnt, exist_ok=True)
    mounts.append(mnt)
    log = open(mnt + '.log', 'w+')
    where = list(extra) if extra else ['--store', store]
    e = dict(os.environ)
    e.pop('PBS_REPOSITORY', None)
    e.update(env or {})
    p = subprocess.Popen([t.CAIRN, 'mount', snap, 'media.pxar', mnt] + where,
                         stdout=log, stderr=log, env=e)

    def up():
        if p.poll() is not None:
            log.seek(0)
            raise AssertionError('cairn mount exited %d: %s' % (p.returncode, log.read()))
        return os.path.ismount(mnt)
    wait_for(up, 'the mount at ' + mnt)
    return p, log


def unmount_all():
    for mnt in mounts:
        if os.path.ismount(mnt):
            subprocess.run(['fusermount3', '-u', '-z', mnt], capture_output=True)


def backup(src, bid):
    return t.run_json('backup', 'media.pxar:' + src, '--store', store, '--backup-id',
                      bid)['snapshot']


def state(root):
    """rel path -> metadata of every entry under root (root included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [''] + dirnames + filenames if dirpath == root else dirnames + filenames:
            p = os.path.join(dirpath, n) if n else root
            st = os.lstat(p)
            e = {'mode': st.st_mode, 'uid': st.st_uid, 'gid': st.st_gid,
                 'mtime_ns': st.st_mtime_ns}
            if stat.S_ISREG(st.st_mode):
                with open(p, 'rb') as f:
                    e['sha'] = hashlib.sha256(f.read()).hexdigest()
                e['size'] = st.st_size
            elif stat.S_ISLNK(st.st_mode):
                e['target'] = os.readlink(p)
            e['xattrs'] = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                 for k in os.listxattr(p, follow_symlinks=False)
                                 if k.startswith(('user.', 'system.posix_acl')))
            out[os.path.relpath(p, root)] = (e, st.st_ino)
    return out


def compare(src, mnt):
    a, b = state(src), state(mnt)
    assert set(a) == set(b), 'entries differ: only in source %s, only in mount %s' % (
        sorted(set(a) - set(b)), sorted(set(b) - set(a)))
    for k in a:
        assert a[k][0] == b[k][0], '%s differs:\n  source %s\n  mount  %s' % (k, a[k][0],
                                                                            b[k][0])
    # hardlinks: the same inode in the source is the same inode in the mount
    groups = {}
    for k, (_, ino) in a.items():
        groups.setdefault(ino, []).append(k)
    linked = [g for g in groups.values() if len(g) > 1]
    assert linked, 'the source tree has no hardlinks to check'
    for g in linked:
        inos = {b[k][1] for k in g}
        assert len(inos) == 1, 'hardlinks %s show inodes %s in the mount' % (g, inos)
    return len(a)


try:
    # ---- a tree with every kind of entry, and a large file ----
    src = os.path.join(work, 'src')
    t.make_tree(src)
    big = os.path.join(src, 'dir', 'large.bin')
    rnd = random.Random(23)
    with open(big, 'wb') as f:
        f.write(rnd.randbytes(24 << 20))
    os.link(big, os.path.join(src, 'large-link.bin'))
    os.chown(os.path.join(src, 'dir', 'sub', 'c.txt'), 1234, 5678)
    os.chmod(os.path.join(src, 'dir', 'sub'), 0o750)
    acl = subprocess.run(['setfacl', '-m', 'u:1234:rx,g:55:r', '-d', '-m', 'g:66:rx',
                          os.path.join(src, 'dir')], capture_output=True)
    have_acl = acl.returncode == 0
    subprocess.run(['setfacl', '-m', 'u:777:r', os.path.join(src, 'a.txt')],
                   capture_output=True)
    os.utime(os.path.join(src, 'dir'), ns=(1_600_000_000_000_000_000, 1_600_000_000_123_000_000))
    snap = backup(src, 'tree')
    mnt = os.path.join(work, 'mnt')
    p, log = mount(snap, mnt)
    try:
        n = compare(src, mnt)
        if have_acl:
            assert os.getxattr(os.path.join(mnt, 'dir'), 'system.posix_acl_default'), \
                'default ACL missing'
        # random ranges of the large file, then one read of all of it;
        # under ASan 100 of them (the same code reads each)
        data = open(big, 'rb').read()
        ranges = 100 if t.sanitized() else 300
        fd = os.open(os.path.join(mnt, 'dir', 'large.bin'), os.O_RDONLY)
        try:
            for _ in range(ranges):
                off = rnd.randrange(0, len(data) + 100)
                ln = rnd.choice([1, 7, 4096, 65536, 131072, 1 << 20, 3 << 20])
                got = os.pread(fd, ln, off)
                assert got == data[off:off + ln], 'range %d+%d differs' % (off, ln)
        finally:
            os.close(fd)
        print('ok: mounted snapshot equals its source (%d entries), %d random ranges' % (n, ranges))
        # SIGTERM unmounts and exits 0
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        log.seek(0)
        assert p.returncode == 0, 'exit %d after SIGTERM: %s' % (p.returncode, log.read())
        assert not os.path.ismount(mnt), 'still mounted after SIGTERM'
        print('ok: SIGTERM unmounts, exit 0')
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)

    # ---- a split archive (media.mpxar + media.ppxar) ----
    ssnap = t.run_json('backup', 'media.pxar:' + src, '--store', store, '--backup-id', 'split',
                       '--change-detection-mode', 'metadata')['snapshot']
    assert os.path.exists(os.path.join(store, ssnap, 'media.ppxar.didx'))
    smnt = os.path.join(work, 'smnt')
    p, log = mount(ssnap, smnt)
    try:
        n = compare(src, smnt)
        with open(os.path.join(smnt, 'dir', 'large.bin'), 'rb') as f:
            f.seek(5 << 20)
            assert f.read(1 << 20) == data[5 << 20:6 << 20]
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        assert p.returncode == 0, p.returncode
        print('ok: a split archive mounts as media.pxar and equals its source (%d entries)' % n)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)

    # ---- fusermount3 -u ends the command cleanly ----
    p, log = mount(snap, mnt)
    try:
        assert open(os.path.join(mnt, 'a.txt'), 'rb').read() == b'hello cairn\n'
        subprocess.run(['fusermount3', '-u', mnt], check=True, timeout=60)
        p.wait(timeout=60)
        log.seek(0)
        assert p.returncode == 0, 'exit %d after fusermount3 -u: %s' % (p.returncode,
                                                                       log.read())
        print('ok: fusermount3 -u ends cairn mount, exit 0')
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)

    # ---- --daemon returns once mounted ----
    r = t.run('mount', snap, 'media.pxar', mnt, '--store', store, '--daemon', check=0,
              timeout=120)
    mounts.append(mnt)
    assert os.path.ismount(mnt), '--daemon returned before the mount was there'
    assert os.path.isfile(os.path.join(mnt, 'dir', 'large.bin'))
    subprocess.run(['fusermount3', '-u', mnt], check=True, timeout=60)
    wait_for(lambda: not os.path.ismount(mnt), 'the daemon mount to go')
    print('ok: --daemon detaches once mounted')

    # ---- bad input: clear errors, no hang ----
    r = t.run('mount', snap, 'nosuch.pxar', mnt, '--store', store, timeout=120)
    assert r.returncode != 0 and 'nosuch' in r.stderr, r.stderr
    assert not os.path.ismount(mnt)
    r = t.run('mount', snap, 'media.pxar', os.path.join(work, 'no-such-dir'), '--store', store,
              timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    r = t.run('mount', snap, 'media.pxar', timeout=60)
    assert r.returncode == 2, r.returncode
    print('ok: missing archive, missing mount point and usage errors fail cleanly')

    # ---- a corrupt chunk: EIO for its file, the rest keeps working ----
    csrc = os.path.join(work, 'csrc')
    os.makedirs(csrc)
    cbig = rnd.randbytes(32 << 20)
    with open(os.path.join(csrc, 'a-photo.jpg'), 'wb') as f:
        f.write(cbig)
    with open(os.path.join(csrc, 'b-note.txt'), 'wb') as f:
        f.write(b'still readable\n')
    before = set(t.chunk_files(store))
    csnap = backup(csrc, 'corrupt')
    didx = open(os.path.join(store, csnap, 'media.pxar.didx'), 'rb').read()[4096:]
    ends = [int.from_bytes(didx[i:i + 8], 'little') for i in range(0, len(didx), 40)]
    digests = [didx[i + 8:i + 40].hex() for i in range(0, len(didx), 40)]
    assert len(ends) >= 3, 'want a file spanning 3+ chunks, got %d chunks' % len(ends)
    k = len(ends) // 2  # inside the photo: neither the first nor the last chunk
    path = [c for c in set(t.chunk_files(store)) - before if c.endswith(digests[k])]
    assert len(path) == 1, 'chunk %s not found' % digests[k]
    with open(path[0], 'r+b') as f:
        f.seek(os.path.getsize(path[0]) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xff]))
    cmnt = os.path.join(work, 'cmnt')
    p, log = mount(csnap, cmnt)
    try:
        photo = os.path.join(cmnt, 'a-photo.jpg')
        fd = os.open(photo, os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 1000) == cbig[1000:5096], 'first chunk unreadable'
            try:
                os.pread(fd, 4096, ends[k - 1] + 10)
                raise AssertionError('a read in the corrupt chunk did not fail')
            except OSError as e:
                assert e.errno == errno.EIO, e
        finally:
            os.close(fd)
        assert open(os.path.join(cmnt, 'b-note.txt'), 'rb').read() == b'still readable\n'
        assert sorted(os.listdir(cmnt)) == ['a-photo.jpg', 'b-note.txt']
        assert os.stat(photo).st_size == len(cbig)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
        log.seek(0)
        msg = log.read()
        assert digests[k] in msg and 'a-photo.jpg' in msg, 'no message naming the chunk ' \
            'and the file: %r' % msg
        assert p.returncode == 0, p.returncode
        print('ok: a corrupt chunk gives EIO for its file only, with a message')
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=60)

    # ---- through a PBS (the emulator serving the same store) ----
    emulator = sys.argv[2]
    certs = os.path.join(work, 'certs')
    os.makedirs(certs)

    def start_emulator(port, cert):
        args = ['/usr/bin/python3', emulator, '--datastore', 'store1=' + store, '--port',
                str(port), '--token', 'root@pam!t1:SECRET']
        args += ['--cert', os.path.join(certs, 'cert.pem'), '--key',
                 os.path.join(certs, 'key.pem')] if cert else ['--cert-out', certs]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        line = proc.stdout.readline().split()
        if not line or line[0] != 'READY':
            proc.kill()
            raise AssertionError('emulator did not start: %r' % line)
        return proc, int(line[1]), line[2]

    def read_in_child(path, off, ln):
        """(errno or 0, bytes) of a pread in another process, which must
        not take long (a hang fails the test instead of stalling it)."""
        code = ('import os,sys\ntry:\n fd=os.open(sys.argv[1],os.O_RDONLY)\n'
                ' sys.stdout.buffer.write(os.pread(fd,int(sys.argv[3]),int(sys.argv[2])))\n'
                'except OSError as e:\n sys.exit(100+e.errno)\n')
        r = subprocess.run(['/usr/bin/python3', '-c', code, path, str(off), str(ln)],
                           capture_output=True, timeout=120)
        return (r.returncode - 100 if r.returncode else 0), r.stdout

    emu, port, fp = start_emulator(0, False)
    try:
        repo = 'root@pam!t1@127.0.0.1:%d:store1' % port
        env = {'PBS_PASSWORD': 'SECRET', 'PBS_FINGERPRINT': fp}
        pmnt = os.path.join(work, 'pmnt')
        p, log = mount(snap, pmnt, '--repository', repo, env=env)
        try:
            assert open(os.path.join(pmnt, 'a.txt'), 'rb').read() == b'hello cairn\n'
            st = os.stat(os.path.join(pmnt, 'dir', 'large.bin'))
            assert st.st_size == len(data)
            emu.kill()
            emu.wait(timeout=60)
            # not read yet: needs the server, which is gone
            off = len(data) // 2
            err, _ = read_in_child(os.path.join(pmnt, 'dir', 'large.bin'), off, 4096)
            log.seek(0)
            assert err == errno.EIO, 'read with the server gone: errno %d, not EIO\n%s' % (
                err, log.read())
            assert p.poll() is None, 'cairn mount ended when the server went away'
            emu, port2, fp2 = start_emulator(port, True)
            assert (port2, fp2) == (port, fp)
            end = time.monotonic() + 90
            while True:
                err, got = read_in_child(os.path.join(pmnt, 'dir', 'large.bin'), off, 4096)
                if err == 0 or time.monotonic() > end:
                    break
                time.sleep(0.5)
            assert err == 0, 'no read after the server came back: errno %d' % err
            assert got == data[off:off + 4096]
            n = compare(src, pmnt)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            log.seek(0)
            msg = log.read()
            assert p.returncode == 0, 'exit %d: %s' % (p.returncode, msg)
            assert 'reopened' in msg, msg
            print('ok: mount through PBS (%d entries); server gone -> EIO, back -> reads '
                  'again' % n)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    finally:
        emu.kill()
        emu.wait(timeout=60)
finally:
    unmount_all()
    if not any(os.path.ismount(m) for m in mounts):
        shutil.rmtree(work, ignore_errors=True)
print('all mount tests passed')
