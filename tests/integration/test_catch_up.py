#!/usr/bin/python3
"""cairn run with `catch-up = yes` on a target (issue #23): target b is down
for two nightly runs while a gets both snapshots; the next run first copies
the two it missed from a, then backs up to both, so a and b hold the same
history; the metrics and the run record say how many were caught up."""
import os
import shutil
import sys
import time

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'media')
os.makedirs(src)
A = t.store_path('a')
B = t.store_path('b')
metrics = os.path.join(work, 'cairn.prom')
conf = os.path.join(work, 'cairn.conf')
with open(conf, 'w') as f:
    f.write('[cairn]\nbackup-id = nas\nstate-dir = %s\n\n'
            '[source media]\npath = %s\narchive = media.pxar\n\n'
            '[target a]\ntype = local\npath = %s\n\n'
            '[target b]\ntype = local\npath = %s\ncatch-up = yes\n' %
            (os.path.join(work, 'state'), src, A, B))
env = {'CAIRN_CONFIG': '', 'JOURNAL_STREAM': ''}


def night(n, check):
    with open(os.path.join(src, 'photo%d.jpg' % n), 'wb') as f:
        f.write(os.urandom(300000))
    p = t.run('run', '--config', conf, '--metrics-file', metrics, check=check, env=env)
    time.sleep(1.1)
    return p


def snaps(store):
    return [x['snapshot'] for x in t.run_json('snapshot', 'list', '--store', store)]


def caught_up():
    with open(metrics) as f:
        for line in f:
            if line.startswith('cairn_target_last_caught_up_snapshots{') and \
                    'target="b"' in line:
                return float(line.split()[-1])
    raise AssertionError('no caught-up metric for b in %s' % metrics)


night(1, 0)
assert snaps(A) == snaps(B) and len(snaps(A)) == 1
assert caught_up() == 0
# b is down for two nights: its path is not a datastore
os.rename(B, B + '.away')
with open(B, 'w') as f:
    f.write('not a store\n')
night(2, 3)
night(3, 3)
os.unlink(B)
os.rename(B + '.away', B)
assert len(snaps(A)) == 3 and len(snaps(B)) == 1
night(4, 0)
assert snaps(A) == snaps(B) and len(snaps(A)) == 4, (snaps(A), snaps(B))
assert caught_up() == 2
t.run('verify', '--store', B, check=0)
d = os.path.join(work, 'restore')
t.run('restore', snaps(B)[2], 'media.pxar', d, '--store', B, check=0)
assert sorted(x for x in os.listdir(d) if x.startswith('photo')) == \
    ['photo1.jpg', 'photo2.jpg', 'photo3.jpg'], os.listdir(d)
night(5, 0)
assert caught_up() == 0 and snaps(A) == snaps(B)
shutil.rmtree(work)
print('catch-up: the two missed snapshots copied before the backup, histories equal; ok')
