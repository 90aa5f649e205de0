"""Helpers for the end-to-end tests of the cairn command: running it,
making source trees, comparing trees with their metadata."""
import atexit
import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

CAIRN = None


def setup(argv):
    global CAIRN
    if len(argv) < 2:
        sys.exit('usage: %s PATH/TO/cairn [PATH/TO/gen_corpus.py]' % argv[0])
    CAIRN = os.path.abspath(argv[1])
    return argv[2] if len(argv) > 2 else None


def run(*args, check=None, env=None, timeout=600):
    """Runs cairn with args; check = expected exit code (None: any)."""
    e = dict(os.environ)
    e.pop('PBS_REPOSITORY', None)
    if env:
        e.update(env)
    p = subprocess.run([CAIRN] + [str(a) for a in args], capture_output=True, text=True,
                       env=e, timeout=timeout)
    if check is not None and p.returncode != check:
        raise AssertionError('cairn %s: exit %d, expected %d\nstdout: %s\nstderr: %s' %
                             (' '.join(map(str, args)), p.returncode, check, p.stdout, p.stderr))
    return p


def run_json(*args, check=0):
    p = run(*args, '--output-format', 'json', check=check)
    return json.loads(p.stdout)


def make_tree(root):
    """A small tree with every common kind of entry and metadata."""
    os.makedirs(root)
    os.makedirs(os.path.join(root, 'dir', 'sub', 'deeper'))
    os.makedirs(os.path.join(root, 'empty_dir'))
    files = {
        'a.txt': b'hello cairn\n',
        'empty': b'',
        'dir/b.bin': bytes(range(256)) * 4000,
        'dir/sub/c.txt': b'compressible ' * 50000,
        'dir/sub/deeper/d.dat': os.urandom(3 << 20),
        'dir/sparse': b'\0' * (1 << 20) + b'end',
        'name with spaces.txt': b'spaces\n',
        'ünïcödé.txt': 'unicode'.encode(),
    }
    for rel, data in files.items():
        with open(os.path.join(root, rel), 'wb') as f:
            f.write(data)
    os.chmod(os.path.join(root, 'a.txt'), 0o640)
    os.chmod(os.path.join(root, 'dir', 'b.bin'), 0o755)
    os.symlink('dir/sub/c.txt', os.path.join(root, 'link'))
    os.symlink('/nonexistent/target', os.path.join(root, 'dangling'))
    os.link(os.path.join(root, 'a.txt'), os.path.join(root, 'dir', 'hardlink_to_a'))
    try:
        os.setxattr(os.path.join(root, 'a.txt'), 'user.cairn', b'xattr value')
    except OSError:
        pass
    os.mkfifo(os.path.join(root, 'fifo'))
    t = 1_650_000_000
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            p = os.path.join(dirpath, n)
            os.utime(p, ns=(t * 10**9, t * 10**9 + 123456789), follow_symlinks=False)
            t += 7
    os.utime(root, (t, t))


def tree_state(root):
    """Path -> comparable metadata (+ content digest) for every entry."""
    state = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            e = {'mode': st.st_mode, 'uid': st.st_uid, 'gid': st.st_gid}
            if not stat.S_ISDIR(st.st_mode):
                e['mtime_ns'] = st.st_mtime_ns
            if stat.S_ISREG(st.st_mode):
                with open(p, 'rb') as f:
                    e['sha'] = hashlib.sha256(f.read()).hexdigest()
                e['size'] = st.st_size
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                e['target'] = os.readlink(p)
            try:
                e['xattrs'] = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                                     for k in os.listxattr(p, follow_symlinks=False)
                                     if k.startswith('user.'))
            except OSError:
                pass
            state[rel] = e
    links = sorted(sorted(v) for v in inodes.values())
    return state, links


def compare_trees(a, b):
    sa, la = tree_state(a)
    sb, lb = tree_state(b)
    if set(sa) != set(sb):
        raise AssertionError('entries differ: only in source %s, only in restore %s' %
                             (sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))))
    for k in sa:
        if sa[k] != sb[k]:
            raise AssertionError('%s differs:\n  source  %s\n  restore %s' % (k, sa[k], sb[k]))
    if la != lb:
        raise AssertionError('hardlinks differ: %s vs %s' % (la, lb))
    # directory mtimes (set after their contents)
    for dirpath, dirnames, _ in os.walk(a):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            q = os.path.join(b, os.path.relpath(p, a))
            if os.lstat(p).st_mtime_ns != os.lstat(q).st_mtime_ns:
                raise AssertionError('directory mtime of %s differs' % p)
    return len(sa)


def chunk_files(store):
    """Every chunk file of a local store. One scandir per prefix directory,
    not os.walk, which also lstats each of the 65536."""
    out = []
    with os.scandir(os.path.join(store, '.chunks')) as prefixes:
        for d in prefixes:
            if d.is_dir(follow_symlinks=False):
                with os.scandir(d.path) as names:
                    out.extend(c.path for c in names if len(c.name) == 64)
    return sorted(out)


def manifest(store, snap):
    """The parsed index.json.blob of snapshot snap in a local store."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                    'pbs_emulator'))
    import pbsformat
    with open(os.path.join(store, snap, 'index.json.blob'), 'rb') as f:
        return json.loads(pbsformat.blob_decode_plain(f.read()))


def sanitized():
    """Whether cairn is an ASan/UBSan build (set by tests/meson.build):
    inputs whose size is not what a test checks may then be smaller."""
    return os.environ.get('CAIRN_TEST_SANITIZED') == '1'


_tmpdirs = []


def _remove_tmpdirs():
    if _tmpdirs and not os.environ.get('CAIRN_TEST_KEEP'):
        t0 = time.monotonic()
        subprocess.run(['rm', '-rf', '--'] + _tmpdirs)
        if time.monotonic() - t0 > 2:  # a slow disk, told apart from the test
            print('removing the temporary directories took %.1f s' % (time.monotonic() - t0),
                  flush=True)


def tmpdir():
    """A new temporary directory, removed when the process exits (also on
    SIGTERM); CAIRN_TEST_KEEP=1 keeps it."""
    d = tempfile.mkdtemp(prefix='cairn_it_')
    if not _tmpdirs:
        atexit.register(_remove_tmpdirs)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    _tmpdirs.append(d)
    return d


_stores = None
_stores_mounted = False


def _remove_stores():
    if not _stores or os.environ.get('CAIRN_TEST_KEEP'):
        return
    if _stores_mounted:
        # lazy: a child that still holds a file there does not keep it
        if subprocess.run(['umount', '-l', _stores]).returncode == 0:
            os.rmdir(_stores)
            return
    # rm -rf: half the time of shutil.rmtree for 65536 directories
    subprocess.run(['rm', '-rf', '--', _stores])


def _own_tmpfs(path):
    """Mounts a tmpfs of the process's own on path (root only; False if
    that cannot be done). Removing a store's 65536 directories one by one
    cost 1.4 CPU seconds, mostly system calls; unmounting its tmpfs frees
    them in 0.1 s."""
    if os.geteuid() != 0 or os.environ.get('CAIRN_TEST_KEEP'):
        return False
    return subprocess.run(['mount', '-t', 'tmpfs', '-o', 'mode=0755,size=50%',
                           'cairn-test-stores', path], capture_output=True).returncode == 0


@contextlib.contextmanager
def small_tmpfs(path, size):
    """Mounts a tmpfs of size (mount's syntax: '16m') on path (made) for
    the with-block, which gets True; False when not root or the mount is
    refused (the reason printed), so that the caller skips its case."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        print('(needs root for a small tmpfs: case skipped)')
        yield False
        return
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs', path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print('(tmpfs mount refused: %s: case skipped)' % r.stderr.strip())
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(['umount', path])


def store_path(name):
    """Path (not yet made) for a local datastore called name. A datastore
    has 65536 prefix directories: making, walking and removing them on a
    busy ext4 disk took minutes per store (rmtree alone 200 s), on a tmpfs
    a second. So the stores of a test process live in one directory on
    /dev/shm when that is a writable directory (else in the temporary
    directory), removed when the process exits, also on SIGTERM (a meson
    timeout); CAIRN_TEST_KEEP=1 keeps them. Run as root, that directory is
    a tmpfs of the process's own, unmounted at exit (_own_tmpfs). Source
    trees and restores stay in tmpdir(): the user xattrs they compare need
    a disk file system on kernels before 6.6. The directory is 0755 for
    runs as another user."""
    global _stores, _stores_mounted
    if _stores is None:
        shm = '/dev/shm'
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None
        _stores = tempfile.mkdtemp(prefix='cairn_it_stores_', dir=base)
        os.chmod(_stores, 0o755)
        _stores_mounted = _own_tmpfs(_stores)
        atexit.register(_remove_stores)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    return os.path.join(_stores, name)


def start_emulator(emulator, ds):
    """Starts the PBS emulator on a free port with datastore store1 = ds and
    token root@pam!t1 (secret SECRET). Returns (process, repository, env
    with PBS_PASSWORD and PBS_FINGERPRINT); the caller terminates it."""
    proc = subprocess.Popen(['/usr/bin/python3', emulator, '--datastore', 'store1=' + ds,
                             '--port', '0', '--token', 'root@pam!t1:SECRET'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().split()
    if not line or line[0] != 'READY':
        proc.terminate()
        raise AssertionError('emulator did not start: %r' % line)
    repo = 'root@pam!t1@127.0.0.1:%s:store1' % line[1]
    return proc, repo, {'PBS_PASSWORD': 'SECRET', 'PBS_FINGERPRINT': line[2]}


def require_fuse():
    """Exits 77 (meson's skip) with the reason when cairn mount cannot be
    tested here: no /dev/fuse, or no fusermount3."""
    import shutil
    if not os.path.exists('/dev/fuse'):
        print('SKIP: /dev/fuse is absent, cannot test cairn mount')
        sys.exit(77)
    if not shutil.which('fusermount3'):
        print('SKIP: fusermount3 (fuse3) is not installed, cannot test cairn mount')
        sys.exit(77)


def wait_for(cond, what, limit=60):
    """Polls cond() until it is true; AssertionError after limit seconds."""
    import time
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError('timed out waiting for ' + what)
