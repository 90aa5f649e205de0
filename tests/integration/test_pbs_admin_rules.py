#!/usr/bin/python3
"""The PBS emulator's protected/notes/delete endpoints follow upstream's
rules (proxmox-backup 3.2.4, src/api2/admin/datastore.rs set_protection,
get_protection, get_notes, set_notes, delete_snapshot; pbs-datastore
DataStore::update_protection, BackupDir::destroy and update_manifest), and
cairn's snapshot commands behave on them:
 - deleting takes the snapshot lock first, then the manifest lock, and only
   then refuses a protected snapshot; a missing snapshot fails at its lock;
 - marking a missing snapshot protected: "snapshot ... does not exist!";
 - reading the flag of a missing snapshot answers false (cairn still says
   the snapshot is not there);
 - notes are written under the manifest lock only, so they change while
   the snapshot directory is locked (a reader, a verify, a backup session
   that has not yet seen its connection end); a missing snapshot fails in
   load_manifest with "unable to update manifest blob - ...".

Usage: test_pbs_admin_rules.py CAIRN_BINARY PBS_EMULATOR"""
import calendar
import fcntl
import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src')
os.makedirs(src)
with open(os.path.join(src, 'photo.jpg'), 'wb') as f:
    f.write(os.urandom(100000))
ds = os.path.join(work, 'pbs-ds')
proc, repo, env = t.start_emulator(emulator, ds)
port = repo.split(':')[-2]
CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE  # loopback only; cairn's own calls pin the certificate


def rest(method, what, params):
    """One REST call as root@pam!t1; returns (HTTP status, decoded JSON body)."""
    url = 'https://127.0.0.1:%s/api2/json/admin/datastore/store1/%s' % (port, what)
    body = None
    headers = {'Authorization': 'PBSAPIToken=root@pam!t1:SECRET'}
    if method in ('GET', 'DELETE'):
        url += '?' + urllib.parse.urlencode(params)
    else:
        body = json.dumps(params).encode()
        headers['Content-Type'] = 'application/json'
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=60) as r:
            return r.status, json.loads(r.read() or b'null')
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors='replace')
        try:
            return err.code, json.loads(text)
        except ValueError:
            return err.code, text


def expect_error(status_body, text):
    status, body = status_body
    assert status == 400, (status, body)
    assert text in json.dumps(body), (text, body)


class DirFlock:
    """An exclusive flock on a snapshot directory, as a backup session or a
    delete holds it on the server."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self):
        os.close(self.fd)


def manage(*args, check=0):
    p = t.run('snapshot', *args, '--repository', repo, '--output-format', 'json', check=check,
              env=env)
    return json.loads(p.stdout) if check == 0 else p


try:
    snap = t.run('backup', 'data.pxar:' + src, '--repository', repo, '--backup-id', 'fam',
                 '--output-format', 'json', env=env, check=0)
    snap = json.loads(snap.stdout)['snapshot']
    btype, bid, btime = snap.split('/')
    sdir = os.path.join(ds, snap)
    q = {'backup-type': btype, 'backup-id': bid,
         'backup-time': calendar.timegm(time.strptime(btime, '%Y-%m-%dT%H:%M:%SZ'))}
    missing = dict(q, **{'backup-time': q['backup-time'] - 3600})

    # protected flag of a missing snapshot
    expect_error(rest('PUT', 'protected', dict(missing, protected=True)), 'does not exist!')
    assert rest('GET', 'protected', missing) == (200, {'data': False})
    p = manage('protected', 'host/fam/2001-01-01T00:00:00Z', 'show', check=1)
    assert 'not found' in p.stderr or 'does not exist' in p.stderr, p.stderr
    p = manage('protected', 'host/fam/2001-01-01T00:00:00Z', 'on', check=1)
    assert 'does not exist' in p.stderr, p.stderr

    # delete: the locks come before the protected check
    assert rest('PUT', 'protected', dict(q, protected=True)) == (200, {'data': None})
    lock = DirFlock(sdir)
    try:
        expect_error(rest('DELETE', 'snapshots', q), 'possibly running or in use')
        # notes take only the manifest lock
        assert rest('PUT', 'notes', dict(q, notes='album 2026')) == (200, {'data': None})
    finally:
        lock.release()
    assert rest('GET', 'notes', q) == (200, {'data': 'album 2026'})
    assert manage('notes', snap, 'show')['notes'] == 'album 2026'
    expect_error(rest('DELETE', 'snapshots', q), 'cannot remove protected snapshot')
    p = manage('forget', snap, check=1)
    assert 'protected' in p.stderr, p.stderr
    assert os.path.isdir(sdir)

    # missing snapshots
    expect_error(rest('DELETE', 'snapshots', missing), 'unable to open snapshot directory')
    expect_error(rest('PUT', 'notes', dict(missing, notes='x')),
                 'unable to update manifest blob - unable to load blob')
    expect_error(rest('GET', 'notes', missing), 'unable to load blob')
    p = manage('forget', 'host/fam/2001-01-01T00:00:00Z', check=1)
    p = manage('notes', 'host/fam/2001-01-01T00:00:00Z', 'update', 'x', check=1)

    # and the normal way out
    assert manage('protected', snap, 'off')['protected'] is False
    manage('forget', snap)
    assert not os.path.exists(sdir)
    print('emulator: protected/notes/delete as upstream; cairn snapshot commands on them')
finally:
    proc.terminate()
    proc.wait()
shutil.rmtree(work)
print('all ok')
