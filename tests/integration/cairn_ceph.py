"""A single-node Ceph cluster with radosgw for the S3 tests.

One monitor, one manager, one bluestore OSD on a sparse file and one radosgw
on 127.0.0.1, every daemon started by hand (no systemd), all state under a
temporary directory, ports chosen free at run time. One cluster per test
program: start it once, give each test its own bucket, stop it in a
finally. Missing ceph binaries are an error, not a skip: the tests need
them (scripts/deps.sh --tests installs them).

Bringing a cluster up costs 45-60 s, mostly the OSD's mkfs. So that a whole
test run pays it once, scripts/test.sh serves one cluster for every S3 test
program of both builds (`cairn_ceph.py --serve DIR`, started beside the
builds) and exports CAIRN_TEST_CEPH=DIR. A Cluster then attaches instead of
starting its own: it waits until the served cluster is up, starts a radosgw
of its own on a free port (so that stopping or pausing it touches no other
program), and at stop stops that radosgw, leaving the monitor, the OSD and
its buckets to the server. Programs that run at the same time must use
distinct bucket names; a bucket left by an earlier attachment (the other
build's run of the same program) is renamed aside when it is created again.

    with cairn_ceph.Cluster() as c:
        c.create_bucket('b1')
        c.env()          # AWS_* variables for cairn
        c.stop_rgw(); c.start_rgw(); c.pause_rgw(); c.resume_rgw()
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

ACCESS_KEY = 'CAIRNTESTACCESSKEY01'
SECRET_KEY = 'cairnTestSecretKey0000000000000000000001'
SHARED_ENV = 'CAIRN_TEST_CEPH'
BINARIES = ('ceph-authtool', 'monmaptool', 'ceph-mon', 'ceph-mgr', 'ceph-osd',
            'radosgw', 'radosgw-admin', 'ceph')


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# radosgw's beast frontend leaves Nagle's algorithm on unless told
# (tcp_nodelay=1): a small response (a listing, a manifest, an index) then
# waits for the client's delayed ACK, about 40 ms a request, as no
# production object store makes its clients wait.
CONF = """[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:127.0.0.1:{mon2},v1:127.0.0.1:{mon1}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {base}/$cluster.$name.keyring
run dir = {base}/run
admin socket = {base}/run/$cluster-$name.asok
pid file = {base}/run/$cluster-$name.pid
log file = {base}/log/$cluster-$name.log
crash dir = {base}/crash
exporter sock dir = {base}/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mgr initial modules = iostat
ms bind port min = {msmin}
ms bind port max = {msmax}

[mon]
keyring = {base}/mon/$cluster-$id/keyring
mon data = {base}/mon/$cluster-$id
mon cluster log file = {base}/log/$cluster.log

[mgr]
mgr data = {base}/mgr/$cluster-$id

[osd]
osd data = {base}/osd/$cluster-$id
osd objectstore = bluestore
osd memory target = 1073741824
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false

[client.rgw.a]
rgw data = {base}/rgw/$cluster-$id
rgw frontends = beast endpoint=127.0.0.1:{rgw} tcp_nodelay=1
rgw dns name = localhost
"""


def process_start():
    """When this process started (wall clock seconds), from /proc."""
    with open('/proc/self/stat') as f:
        ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
        up = float(f.read().split()[0])
    return time.time() - up + ticks / os.sysconf('SC_CLK_TCK')


class Cluster:
    """The cluster; every daemon is stopped by PID in stop()."""

    def __init__(self, base=None):
        missing = [b for b in BINARIES if not shutil.which(b)]
        if missing:
            raise RuntimeError('ceph binaries missing (%s): run scripts/deps.sh --tests'
                               % ', '.join(missing))
        # attached: a served cluster's directory (module docstring)
        self.shared = None if base is not None else os.environ.get(SHARED_ENV) or None
        self.own_base = base is None and not self.shared
        self.base = base or self.shared or tempfile.mkdtemp(prefix='cairn-ceph-')
        self.conf = os.path.join(self.base, 'ceph.conf')
        self.rgw_port = free_port()
        self.endpoint = 'http://127.0.0.1:%d' % self.rgw_port
        self.pids = {}
        self.rgw_proc = None
        # the radosgw this object starts and stops: its own when attached
        self.rgw_name = 'rgw.a' if not self.shared else 'rgw.t%s' % uuid.uuid4().hex[:10]
        self.cache_home = tempfile.mkdtemp(prefix='cairn-s3-cache-')

    # -- helpers -----------------------------------------------------------

    def _env(self):
        e = dict(os.environ)
        e['CEPH_CONF'] = self.conf
        return e

    def _run(self, *args, timeout=120, check=True):
        p = subprocess.run(list(args), env=self._env(), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError('%s: exit %d\n%s%s\n%s' % (' '.join(args), p.returncode,
                                                         p.stdout, p.stderr, self.log_tails()))
        return p

    def _wait(self, what, ok, limit=180):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if ok():
                return
            time.sleep(0.5)
        raise RuntimeError('ceph: %s did not come up within %d s\n%s'
                           % (what, limit, self.log_tails()))

    def _pidfile(self, name):
        return os.path.join(self.base, 'run', 'ceph-%s.pid' % name)

    def _record_pid(self, name):
        def ok():
            try:
                with open(self._pidfile(name)) as f:
                    self.pids[name] = int(f.read().strip())
                return True
            except (OSError, ValueError):
                return False
        self._wait('pid file of ' + name, ok, 60)

    def log_tails(self):
        out = []
        d = os.path.join(self.base, 'log')
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, n), errors='replace') as f:
                out.append('== %s\n%s' % (n, ''.join(f.readlines()[-15:])))
        return '\n'.join(out)

    # -- bring-up ----------------------------------------------------------

    def start(self):
        # a SIGTERM (a test timeout) must still stop the daemons: as an
        # exception it runs the caller's finally
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        if self.shared:
            return self._attach()
        b = self.base
        for d in ('run', 'log', 'mon', 'mgr', 'osd', 'rgw', 'crash'):
            os.makedirs(os.path.join(b, d), exist_ok=True)
        msmin = 20000 + (os.getpid() * 7) % 30000
        with open(self.conf, 'w') as f:
            f.write(CONF.format(fsid=open('/proc/sys/kernel/random/uuid').read().strip(),
                                base=b, mon1=free_port(), mon2=free_port(),
                                rgw=self.rgw_port, msmin=msmin, msmax=msmin + 200))
        monkr = os.path.join(b, 'mon.keyring')
        admkr = os.path.join(b, 'ceph.client.admin.keyring')
        self._run('ceph-authtool', '--create-keyring', monkr, '--gen-key', '-n', 'mon.',
                  '--cap', 'mon', 'allow *')
        self._run('ceph-authtool', '--create-keyring', admkr, '--gen-key', '-n',
                  'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *',
                  '--cap', 'mds', 'allow *', '--cap', 'mgr', 'allow *')
        self._run('ceph-authtool', monkr, '--import-keyring', admkr)
        with open(self.conf) as f:
            host = [l for l in f if l.startswith('mon host')][0].split('=', 1)[1].strip()
        fsid = [l for l in open(self.conf) if l.startswith('fsid')][0].split('=')[1].strip()
        self._run('monmaptool', '--create', '--addv', 'a', host, '--fsid', fsid,
                  os.path.join(b, 'monmap'))
        self._run('ceph-mon', '--mkfs', '-i', 'a', '--monmap', os.path.join(b, 'monmap'),
                  '--keyring', monkr)
        self._run('ceph-mon', '-i', 'a')
        self._record_pid('mon.a')
        self._wait('monitor', lambda: self._run('ceph', '-s', '--connect-timeout', '5',
                                                check=False).returncode == 0)
        mgrdir = os.path.join(b, 'mgr', 'ceph-x')
        os.makedirs(mgrdir, exist_ok=True)
        self._run('ceph', 'auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr',
                  'osd', 'allow *', 'mds', 'allow *', '-o', os.path.join(mgrdir, 'keyring'))
        self._run('ceph-mgr', '-i', 'x', '--keyring', os.path.join(mgrdir, 'keyring'))
        self._record_pid('mgr.x')
        uuid = open('/proc/sys/kernel/random/uuid').read().strip()
        osd = self._run('ceph', 'osd', 'new', uuid).stdout.strip()
        osddir = os.path.join(b, 'osd', 'ceph-' + osd)
        os.makedirs(osddir, exist_ok=True)
        kr = os.path.join(osddir, 'keyring')
        self._run('ceph', 'auth', 'get-or-create', 'osd.' + osd, 'mon', 'allow profile osd',
                  'mgr', 'allow profile osd', 'osd', 'allow *', '-o', kr)
        self._run('ceph-osd', '-i', osd, '--mkfs', '--osd-uuid', uuid, '--keyring', kr,
                  timeout=300)
        self._run('ceph-osd', '-i', osd, '--keyring', kr)
        self._record_pid('osd.' + osd)

        def osd_up():
            p = self._run('ceph', 'osd', 'stat', '-f', 'json', check=False)
            try:
                return p.returncode == 0 and json.loads(p.stdout)['num_up_osds'] == 1
            except (ValueError, KeyError):
                return False
        self._wait('osd', osd_up)
        os.makedirs(os.path.join(b, 'rgw', 'ceph-rgw.a'), exist_ok=True)
        self._run('ceph', 'auth', 'get-or-create', 'client.rgw.a', 'mon', 'allow rw', 'osd',
                  'allow rwx', 'mgr', 'allow rw', '-o',
                  os.path.join(b, 'ceph.client.rgw.a.keyring'))
        self.start_rgw()
        self._run('radosgw-admin', 'user', 'create', '--uid=tester',
                  '--display-name=cairn tests', '--access-key=' + ACCESS_KEY,
                  '--secret-key=' + SECRET_KEY)
        # radosgw makes its data pools at the first write: do it here, so
        # that the tests' first backup does not pay for it
        cl = self.client()
        cl.create_bucket(Bucket='cairn-warmup')
        cl.put_object(Bucket='cairn-warmup', Key='x', Body=b'x')
        cl.delete_object(Bucket='cairn-warmup', Key='x')
        cl.delete_bucket(Bucket='cairn-warmup')
        return self

    def _attach(self):
        """Uses the served cluster in self.base (CAIRN_TEST_CEPH): waits for
        it to be up, then starts a radosgw of this object's own."""
        ready = os.path.join(self.base, 'ready')
        failed = os.path.join(self.base, 'failed')
        end = time.monotonic() + 420
        while not os.path.exists(ready):
            if os.path.exists(failed):
                with open(failed) as f:
                    raise RuntimeError('the served ceph cluster (%s=%s) failed to come up:\n%s'
                                       % (SHARED_ENV, self.base, f.read()))
            if time.monotonic() > end:
                raise RuntimeError('the served ceph cluster (%s=%s) was not up within 420 s'
                                   % (SHARED_ENV, self.base))
            time.sleep(0.5)
        self._run('ceph', 'auth', 'get-or-create', 'client.' + self.rgw_name, 'mon', 'allow rw',
                  'osd', 'allow rwx', 'mgr', 'allow rw', '-o',
                  os.path.join(self.base, 'ceph.client.%s.keyring' % self.rgw_name))
        self.start_rgw()
        return self

    def _detach(self):
        """Removes this object's radosgw's key; its buckets stay until the
        served cluster goes, or until an attachment creates one again."""
        self._run('ceph', 'auth', 'del', 'client.' + self.rgw_name, check=False)
        try:
            os.unlink(os.path.join(self.base, 'ceph.client.%s.keyring' % self.rgw_name))
        except OSError:
            pass

    def _rgw_answers(self):
        try:
            urllib.request.urlopen(self.endpoint + '/', timeout=5)
            return True
        except urllib.error.HTTPError:
            return True       # any HTTP answer means it serves
        except OSError:
            return False

    def start_rgw(self):
        """Starts radosgw in the foreground of a child process (its PID is ours
        to signal) and waits until it answers HTTP."""
        log = open(os.path.join(self.base, 'log', '%s-stdout.log' % self.rgw_name), 'ab')
        cmd = ['radosgw', '-f', '-n', 'client.' + self.rgw_name]
        if self.rgw_name != 'rgw.a':
            data = os.path.join(self.base, 'rgw', 'ceph-' + self.rgw_name)
            os.makedirs(data, exist_ok=True)
            cmd += ['--rgw-data', data, '--rgw-dns-name', 'localhost',
                    '--rgw-frontends', 'beast endpoint=127.0.0.1:%d tcp_nodelay=1' % self.rgw_port]
        self.rgw_proc = subprocess.Popen(cmd, env=self._env(), stdout=log, stderr=log)
        log.close()
        self._wait('radosgw', self._rgw_answers)

    def stop_rgw(self):
        """Stops radosgw (SIGKILL: connections drop as on a crash)."""
        p = self.rgw_proc
        if p and p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(timeout=60)
        self.rgw_proc = None

    def pause_rgw(self):
        """SIGSTOP: the endpoint accepts TCP connections but never answers."""
        self.rgw_proc.send_signal(signal.SIGSTOP)

    def resume_rgw(self):
        self.rgw_proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.stop_rgw()
        shutil.rmtree(self.cache_home, ignore_errors=True)
        if self.shared:
            self._detach()
            return
        for name, pid in reversed(list(self.pids.items())):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.monotonic() + 15
            while time.monotonic() < end:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids = {}
        if self.own_base and not os.environ.get('CAIRN_KEEP_CEPH'):
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        t0 = time.monotonic()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        print('ceph: %s, radosgw answering, after %.1f s (%.1f s after the program started)'
              % ('attached' if self.shared else 'up', time.monotonic() - t0,
                 time.time() - process_start()), flush=True)
        return self

    def __exit__(self, *exc):
        t0 = time.monotonic()
        self.stop()
        print('ceph: stopped in %.1f s' % (time.monotonic() - t0), flush=True)

    # -- S3 ----------------------------------------------------------------

    def env(self, **extra):
        """The environment cairn needs to reach the cluster's radosgw."""
        e = {'AWS_ENDPOINT_URL': self.endpoint, 'AWS_ACCESS_KEY_ID': ACCESS_KEY,
             'AWS_SECRET_ACCESS_KEY': SECRET_KEY, 'AWS_REGION': 'us-east-1',
             # the chunk-listing cache: this cluster's, not the user's
             'XDG_CACHE_HOME': self.cache_home}
        e.update(extra)
        return e

    def client(self):
        """A boto3 S3 client (Debian's python3-boto3)."""
        import boto3
        from botocore.config import Config
        return boto3.client('s3', endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name='us-east-1',
                            config=Config(s3={'addressing_style': 'path'}))

    def create_bucket(self, name):
        cl = self.client()
        if self.shared and name in [b['Name'] for b in cl.list_buckets()['Buckets']]:
            # an earlier attachment's (the other build's run): renamed
            # aside, which is instant, where emptying it takes seconds
            self._run('radosgw-admin', 'bucket', 'link', '--bucket=' + name,
                      '--bucket-new-name=%s-old-%s' % (name, uuid.uuid4().hex[:8]),
                      '--uid=tester')
        cl.create_bucket(Bucket=name)

    def keys(self, bucket, prefix=''):
        """Every object key under prefix, sorted."""
        out = []
        for page in self.client().get_paginator('list_objects_v2').paginate(Bucket=bucket,
                                                                             Prefix=prefix):
            out += [o['Key'] for o in page.get('Contents', [])]
        return sorted(out)

    def download(self, bucket, prefix, dest):
        """Copies every object under prefix into dest as files (the bucket
        as a directory tree)."""
        c = self.client()
        for k in self.keys(bucket, prefix):
            rel = k[len(prefix):].lstrip('/')
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            c.download_file(bucket, k, path)


def serve(base):
    """Serves a cluster in base for CAIRN_TEST_CEPH until SIGTERM or SIGINT:
    writes base/ready once it is up, base/failed with the reason if it
    cannot come up. The radosgw of the bring-up is stopped again: each
    attached Cluster starts its own."""
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    c = Cluster(base=base)
    try:
        try:
            c.start()
            c.stop_rgw()
        except Exception as e:   # noqa: BLE001  (reported to the attachers)
            with open(os.path.join(base, 'failed.tmp'), 'w') as f:
                f.write('%s\n' % e)
            os.rename(os.path.join(base, 'failed.tmp'), os.path.join(base, 'failed'))
            raise
        with open(os.path.join(base, 'ready'), 'w') as f:
            f.write('%d\n' % os.getpid())
        while True:
            time.sleep(3600)
    finally:
        c.stop()


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--serve':
        serve(sys.argv[2])
        sys.exit(0)
    # Manual use: bring a cluster up, print its endpoint, wait for Ctrl-C or
    # SIGTERM (also when started in the background, where SIGINT is ignored).
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    with Cluster() as c:
        print(c.endpoint, c.base, flush=True)
        while True:
            time.sleep(3600)
