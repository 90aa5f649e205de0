#!/usr/bin/python3
"""Metadata mode: a run in which no file changed keeps the previous file
cache (copied, with the new snapshot's name in its header) instead of
writing every entry again (issue #21), and the cache stays right around
changes, failed runs and killed runs:

 - a no-change run says so (-v: "previous cache kept"), reads nothing
   and opens no plain file; the next no-change run does it again;
 - after a change (content rewritten, a chmod, a file added, one
   deleted) the cache is written entry by entry and the snapshot holds
   every change;
 - a run that fails, or that is killed once its new cache was begun,
   leaves a cache that the next run uses only where it is right: that
   run's snapshot holds the change made before the failed/killed run."""
import glob
import os
import signal
import subprocess
import sys
import time

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
store = t.store_path('fckeep')
cache = os.path.join(work, 'filecache')
KEPT = 'previous cache kept'


def write(rel, data):
    p = os.path.join(src, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, 'wb') as f:
        f.write(data)


n = 0
for d in range(6):
    for i in range(50):
        write('d%d/f%03d.txt' % (d, i), (b'file %d/%d\n' % (d, i)) * (20 + 7 * i))
        n += 1
write('big/photo.jpg', os.urandom(2 << 20))
n += 1


def backup(*extra, check=0):
    p = t.run('-v', 'backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'k',
              '--change-detection-mode', 'metadata', '--file-cache-dir', cache,
              '--output-format', 'json', *extra, check=check)
    time.sleep(1.1)  # backup times have second resolution
    if check != 0:
        return None, p.stderr
    import json
    return json.loads(p.stdout), p.stderr


def restore_same(o):
    d = os.path.join(work, 'r-' + o['snapshot'].replace('/', '_').replace(':', '_'))
    t.run('restore', '--store', store, o['snapshot'], 'data.pxar', d, check=0)
    t.compare_trees(src, d)


o1, err = backup()
assert o1['files'] == n and o1['files-reused'] == 0, o1
assert KEPT not in err, err
restore_same(o1)

# nothing changed, twice: the cache is kept each time
for _ in range(2):
    o, err = backup()
    assert KEPT in err, err
    assert o['bytes-read'] == 0 and o['files-reused'] == n and o['files-unopened'] == n, o
    restore_same(o)

# changes: the cache is written entry by entry, every change stored
write('d0/f001.txt', b'rewritten\n' * 300)
os.chmod(os.path.join(src, 'd1', 'f002.txt'), 0o600)
write('d2/new.txt', b'a new file\n' * 50)
os.unlink(os.path.join(src, 'd3', 'f003.txt'))
o, err = backup()
assert KEPT not in err, err
assert o['files'] == n and o['files-reused'] >= n - 3, o
restore_same(o)
o, err = backup()
assert KEPT in err, err
assert o['bytes-read'] == 0 and o['files-unopened'] == n, o
restore_same(o)

# a failed run (the second archive is missing) after a change
write('d4/f004.txt', b'changed before a failed run\n' * 40)
_, err = backup('gone.pxar:' + os.path.join(work, 'no-such-dir'), check=1)
o, err = backup()
assert KEPT not in err, err
restore_same(o)

# a run killed once its new cache was begun, after a change
write('d5/f005.txt', b'changed before a killed run\n' * 40)
for old in glob.glob(os.path.join(cache, '*.new')):
    os.unlink(old)
p = subprocess.Popen([t.CAIRN, 'backup', 'data.pxar:' + src, '--store', store, '--backup-id', 'k',
                      '--change-detection-mode', 'metadata', '--file-cache-dir', cache],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 120
while p.poll() is None and not glob.glob(os.path.join(cache, '*.new')) and \
        time.monotonic() < deadline:
    time.sleep(0.001)
killed = p.poll() is None
if killed:
    p.send_signal(signal.SIGKILL)
p.wait(timeout=120)
time.sleep(1.1)
o, err = backup()
restore_same(o)
o, err = backup()
assert KEPT in err, err
assert o['bytes-read'] == 0 and o['files-unopened'] == n, o
restore_same(o)
print('ok: no-change runs keep the cache; changes, a failed run and a killed run '
      '(killed while running: %s) stored right' % killed)
