#!/usr/bin/python3
"""cairn version --repository (issue #23): the server's version from
GET /api2/json/version, in text and JSON, after the same login as a backup
(a wrong secret is exit 1, nothing on stdout in JSON); the emulator's
endpoint wants an authenticated caller as upstream's (Permission::Anybody).

Usage: test_version_server.py CAIRN_BINARY PBS_EMULATOR"""
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

import cairn_test_lib as t

emulator = t.setup(sys.argv)
work = t.tmpdir()
proc, repo, env = t.start_emulator(emulator, os.path.join(work, 'ds'))
port = repo.split(':')[-2]
try:
    p = t.run('version', '--repository', repo, env=env, check=0)
    lines = p.stdout.splitlines()
    assert lines[0].startswith('cairn '), p.stdout
    # (the emulator's port is not PBS's 8007: the name carries it)
    assert lines[-1] == ('server pbs:127.0.0.1:%s:store1: Proxmox Backup Server 3.2-4, '
                         'repoid cairn-pbs-emulator' % port), p.stdout
    out = json.loads(t.run('version', '--repository', repo, '--output-format', 'json', env=env,
                           check=0).stdout)
    assert out['server'] == {'repository': 'pbs:127.0.0.1:%s:store1' % port, 'version': '3.2',
                             'release': '4', 'repoid': 'cairn-pbs-emulator'}, out
    assert out['version'] and 'libraries' in out, out
    # without --repository nothing is asked (PBS_REPOSITORY is not used here)
    out = json.loads(t.run('version', '--output-format', 'json',
                           env=dict(env, PBS_REPOSITORY=repo), check=0).stdout)
    assert 'server' not in out, out
    # a refused login: exit 1, the reason on stderr
    p = t.run('version', '--repository', repo, '--output-format', 'json',
              env=dict(env, PBS_PASSWORD='wrong'), check=1)
    assert p.stdout == '' and 'invalid credentials' in p.stderr, (p.stdout, p.stderr)
    p = t.run('version', '--repository', repo, env=dict(env, PBS_PASSWORD='wrong'), check=1)
    assert p.stdout.startswith('cairn ') and 'server' not in p.stdout, p.stdout
    # bad usage
    t.run('version', '--fingerprint', env['PBS_FINGERPRINT'], check=2)
    # the endpoint itself: 401 without credentials
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback only
    try:
        urllib.request.urlopen('https://127.0.0.1:%s/api2/json/version' % port, context=ctx,
                               timeout=60)
        raise AssertionError('version answered without authentication')
    except urllib.error.HTTPError as err:
        assert err.code == 401, err.code
    print('version --repository: text and JSON, refused login exit 1, endpoint needs auth')
finally:
    proc.terminate()
    proc.wait()
print('all ok')
