#!/usr/bin/python3
"""Metadata change detection takes a file's metadata from the previous
snapshot without opening it when its stat (inode, ctime, size, mtime)
says it did not change and it had nothing beyond stat (no xattrs, ACLs,
file capabilities, attribute flags or project id) then (issue #21).

 - a no-change run opens none of those files ("files-unopened" counts
   them), reads nothing, and opens the files with xattrs or an ACL as
   before;
 - a change that moves only the ctime shows up in the next snapshot:
   an xattr set, an ACL set (setfacl), a chmod, an attribute flag
   (chattr +A, where the file system keeps it), and a file replaced by
   another of the same size and mtime; restores carry each of them;
 - a file found unchanged without opening it that the padding rule reads
   again after all (its payload chunk is mostly a deleted file's) is
   opened by its path then, and restored with its content."""
import os
import shutil
import stat
import subprocess
import sys
import time

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
store = t.store_path('unopened')
cache = os.path.join(work, 'filecache')
os.makedirs(os.path.join(src, 'plain'))
os.makedirs(os.path.join(src, 'big'))


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


n_plain = 60
for i in range(n_plain):
    write(os.path.join(src, 'plain', 'f%03d.txt' % i), (b'plain file %d\n' % i) * (50 + i))
# files with metadata beyond stat: always opened
write(os.path.join(src, 'xa.txt'), b'has an xattr\n' * 40)
os.setxattr(os.path.join(src, 'xa.txt'), 'user.comment', b'kept')
have_acl = shutil.which('setfacl') is not None and shutil.which('getfacl') is not None
if have_acl:
    write(os.path.join(src, 'acl.txt'), b'has an ACL\n' * 40)
    subprocess.run(['setfacl', '-m', 'u:65534:r', os.path.join(src, 'acl.txt')], check=True)
# a large file and a small neighbour sharing its payload chunk
write(os.path.join(src, 'big', 'a.bin'), os.urandom(3 << 20))
write(os.path.join(src, 'big', 'b.txt'), b'neighbour of a large file\n' * 100)
extra = 1 + (1 if have_acl else 0)
n_files = n_plain + extra + 2


def backup():
    o = t.run_json('backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'u',
                   '--change-detection-mode', 'metadata', '--file-cache-dir', cache)
    time.sleep(1.1)  # backup times have second resolution
    return o


def restore(o):
    d = os.path.join(work, 'r-' + o['snapshot'].replace('/', '_'))
    t.run('restore', '--store', store, o['snapshot'], 'data.pxar', d, check=0)
    return d


def acl_of(path):
    return subprocess.run(['getfacl', '--omit-header', '--numeric', path], check=True,
                          capture_output=True, text=True).stdout


def lsattr_of(path):
    return subprocess.run(['lsattr', '-d', path], check=True, capture_output=True,
                          text=True).stdout.split()[0]


o1 = backup()
assert o1['files'] == n_files and o1['files-reused'] == 0, o1
t.compare_trees(src, restore(o1))

# no change: every file reused, nothing read, the plain ones not opened
o2 = backup()
assert o2['bytes-read'] == 0, o2
assert o2['files-reused'] == n_files, o2
assert o2['files-unopened'] == n_files - extra, o2
t.compare_trees(src, restore(o2))

# changes that move only the ctime (content, size and mtime stay)
p = lambda i: os.path.join(src, 'plain', 'f%03d.txt' % i)  # noqa: E731
os.setxattr(p(1), 'user.note', b'new xattr')
os.chmod(p(2), 0o600)
if have_acl:
    subprocess.run(['setfacl', '-m', 'u:65534:rw', p(3)], check=True)
chattr_ok = subprocess.run(['chattr', '+A', p(4)], capture_output=True).returncode == 0 and \
    'A' in lsattr_of(p(4))
# replaced by another file of the same size and mtime
st5 = os.stat(p(5))
old5 = open(p(5), 'rb').read()
new5 = bytes(b ^ 0x20 for b in old5)
write(p(5) + '.tmp', new5)
os.utime(p(5) + '.tmp', ns=(st5.st_atime_ns, st5.st_mtime_ns))
os.rename(p(5) + '.tmp', p(5))
assert os.stat(p(5)).st_size == st5.st_size and os.stat(p(5)).st_mtime_ns == st5.st_mtime_ns
# the neighbour's chunk now holds mostly a deleted file
os.unlink(os.path.join(src, 'big', 'a.bin'))

o3 = backup()
changed = 3 + (1 if have_acl else 0) + (1 if chattr_ok else 0)
# the changed files are opened (the plain ones and big/b.txt may not be)
assert o3['files-unopened'] <= n_plain + 1 - changed, o3
r3 = restore(o3)
t.compare_trees(src, r3)  # contents, modes, user xattrs
rp = lambda i: os.path.join(r3, 'plain', 'f%03d.txt' % i)  # noqa: E731
assert os.getxattr(rp(1), 'user.note') == b'new xattr'
assert stat.S_IMODE(os.stat(rp(2)).st_mode) == 0o600
if have_acl:
    assert 'user:65534:rw-' in acl_of(rp(3)), acl_of(rp(3))
    assert acl_of(rp(3)) == acl_of(p(3))
    assert acl_of(os.path.join(r3, 'acl.txt')) == acl_of(os.path.join(src, 'acl.txt'))
if chattr_ok:
    assert 'A' in lsattr_of(rp(4)), lsattr_of(rp(4))
assert open(rp(5), 'rb').read() == new5
assert open(os.path.join(r3, 'big', 'b.txt'), 'rb').read() == \
    open(os.path.join(src, 'big', 'b.txt'), 'rb').read()
assert not os.path.exists(os.path.join(r3, 'big', 'a.bin'))

# and the next run's snapshot is right too (in a tree this small the
# padding rule reads the files of the re-read chunk once more)
o4 = backup()
assert o4['files'] == o3['files'], o4
t.compare_trees(src, restore(o4))
if chattr_ok:
    subprocess.run(['chattr', '-A', p(4)], check=False)
print('ok: %d files, %d not opened in a no-change run; ctime-only changes kept '
      '(acl %s, chattr %s)' % (n_files, o2['files-unopened'], have_acl, chattr_ok))
