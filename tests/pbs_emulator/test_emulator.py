#!/usr/bin/python3
"""Tests of the PBS emulator itself, with a small independent h2 client.

Runs the emulator on loopback and drives it through a full backup and
restore, an incremental backup that reuses chunks via `previous`, the REST
calls, and every server-side refusal the emulator implements, checking the
upstream error texts and status codes.  Standalone: does not import the
emulator's modules (its own blob/index encoding), so a bug in the
emulator's format code cannot hide in a shared helper.

Usage: /usr/bin/python3 tests/pbs_emulator/test_emulator.py
"""

import fcntl
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import zlib

import h2.config
import h2.connection
import h2.events
import h2.settings
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "server.py")
PY = "/usr/bin/python3"

MAGIC_PLAIN = bytes([66, 171, 56, 7, 190, 131, 112, 161])
MAGIC_ZSTD = bytes([49, 185, 88, 66, 111, 182, 163, 127])
MAGIC_ENCR = bytes([123, 103, 133, 190, 34, 45, 76, 240])
MAGIC_DIDX = bytes([28, 145, 78, 165, 25, 186, 179, 205])
MAGIC_FIDX = bytes([47, 127, 65, 237, 145, 253, 15, 205])
TOKEN = "backup@pbs!t1"
SECRET = "s3cr3t/+x"
MIB4 = 4 * 1024 * 1024


def blob(data, compress=True):
    if compress:
        comp = zstandard.ZstdCompressor(level=1).compress(data)
        if len(comp) < len(data):
            return MAGIC_ZSTD + struct.pack("<I", zlib.crc32(comp)) + comp
    return MAGIC_PLAIN + struct.pack("<I", zlib.crc32(data)) + data


def unblob(raw):
    crc = struct.unpack_from("<I", raw, 8)[0]
    assert zlib.crc32(raw[12:]) == crc, "bad CRC"
    if raw[:8] == MAGIC_ZSTD:
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw[12:])
    assert raw[:8] == MAGIC_PLAIN
    return raw[12:]


def sha(data):
    return hashlib.sha256(data).digest()


def didx_csum(chunks):
    h = hashlib.sha256()
    end = 0
    for c in chunks:
        end += len(c)
        h.update(struct.pack("<Q", end) + sha(c))
    return h.hexdigest()


def parse_didx(raw):
    assert raw[:8] == MAGIC_DIDX
    out = []
    for off in range(4096, len(raw), 40):
        out.append((struct.unpack_from("<Q", raw, off)[0], raw[off + 8:off + 40]))
    return out


class Server:
    """One emulator process."""

    def __init__(self, root, *extra):
        self.root = root
        self.ds = os.path.join(root, "ds")
        self.certdir = os.path.join(root, "cert")
        self.log = open(os.path.join(root, "server.log"), "ab")
        cmd = [PY, SERVER, "--datastore", "store1=" + self.ds, "--port", "0",
               "--cert-out", self.certdir, "--user", "root@pam:rootpw", "--user", "backup@pbs:pw",
               "--user", "other@pbs:pw2", "--user", "reader@pbs:pw3",
               "--token", TOKEN + ":" + SECRET, "--acl", "backup@pbs=backup",
               "--acl", TOKEN + "=backup", "--acl", "other@pbs=backup", "--acl", "reader@pbs=reader"]
        cmd += list(extra)
        env = dict(os.environ, TZ="UTC")  # prune's keep-daily works on local days
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, stderr=None if os.environ.get("EMU_VERBOSE") else self.log)
        self.before_ready = []
        line = self.proc.stdout.readline().decode()
        while line and not line.startswith("READY "):
            self.before_ready.append(line.strip())
            line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError("emulator did not start: %r" % self.before_ready)
        _, port, self.fingerprint = line.split()
        self.port = int(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def tls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = socket.create_connection(("127.0.0.1", self.port))
        tls = ctx.wrap_socket(sock)
        der = tls.getpeercert(binary_form=True)
        fp = ":".join("%02x" % b for b in hashlib.sha256(der).digest())
        assert fp == self.fingerprint, "fingerprint mismatch"
        return tls

    def rest(self, method, path, params=None, auth=None, headers=None, body=None, chunked=False):
        """One REST call; returns (status, parsed json or text)."""
        auth = auth or {"Authorization": "PBSAPIToken=%s:%s" % (TOKEN, urllib.parse.quote(SECRET))}
        ctx = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)
        hdrs = dict(auth)
        hdrs.update(headers or {})
        if method == "POST" and body is None:
            body = json.dumps(params or {}).encode()
            hdrs["Content-Type"] = "application/json"
        elif params:
            path += "?" + urllib.parse.urlencode(params, doseq=True)
        if chunked:
            conn.request(method, path, body=iter([body[:5], body[5:]]), headers=hdrs, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data.decode("utf-8", "replace")

    def stats(self):
        status, body = self.rest("GET", "/api2/json/emulator/stats",
                                 auth={"Cookie": "PBSAuthCookie=" + self.ticket("root@pam", "rootpw")[0]})
        assert status == 200, body
        return body["data"]

    def ticket(self, user, password):
        status, body = self.rest("POST", "/api2/json/access/ticket", {"username": user, "password": password},
                                 auth={"X": "y"})
        assert status == 200, body
        return urllib.parse.quote(body["data"]["ticket"], safe=":/+=!@"), body["data"]["CSRFPreventionToken"]


class UpgradeRefused(Exception):
    def __init__(self, status, text):
        super().__init__("%d %s" % (status, text))
        self.status = status
        self.text = text


class Session:
    """An upgraded HTTP/2 session (client side, h2 library)."""

    def __init__(self, server, protocol, path, params, auth=None, window=2 ** 31 - 2):
        self.sock = server.tls()
        auth = auth or "Authorization: PBSAPIToken %s:%s\r\n" % (TOKEN, urllib.parse.quote(SECRET))
        req = ("GET %s?%s HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: %s\r\n%s\r\n"
               % (path, urllib.parse.urlencode(params), protocol, auth))
        try:
            rest = self._upgrade(req, protocol)
        except BaseException:
            self.sock.close()
            raise
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        if window > 65535:
            self.conn.increment_flow_control_window(window - 65535)
        self.sock.sendall(self.conn.data_to_send())
        self.done = {}
        self.partial = {}
        self.closed = False
        if rest:
            self._events(self.conn.receive_data(rest))

    def _upgrade(self, req, protocol):
        """Send the upgrade request; returns bytes read past the 101 answer."""
        self.sock.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(65536)
            if not d:
                raise UpgradeRefused(0, "connection closed: %r" % buf)
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status != 101:
            n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            while len(rest) < n:
                rest += self.sock.recv(65536)
            raise UpgradeRefused(status, rest.decode())
        assert (b"Upgrade: " + protocol.encode()) in head
        return rest

    def _events(self, events):
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                self.partial[ev.stream_id] = [int(dict(ev.headers)[":status"]), bytearray()]
            elif isinstance(ev, h2.events.DataReceived):
                self.partial[ev.stream_id][1] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st, body = self.partial.pop(ev.stream_id)
                self.done[ev.stream_id] = (st, bytes(body))
            elif isinstance(ev, h2.events.StreamReset):
                self.done[ev.stream_id] = ("reset", b"")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
        self.sock.sendall(self.conn.data_to_send())

    def start(self, method, path, params=None, body=b"", ctype="application/x-www-form-urlencoded", send=True):
        if params:
            path += "?" + urllib.parse.urlencode(params, doseq=True)
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", method), (":scheme", "https"), (":authority", "localhost:8007"),
                                     (":path", "/" + path), ("content-type", ctype)], end_stream=not body)
        off = 0
        while off < len(body):
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(body) - off)
            if n <= 0:
                self.sock.sendall(self.conn.data_to_send())
                self._read()
                continue
            self.conn.send_data(sid, body[off:off + n], end_stream=off + n == len(body))
            off += n
        if send:
            self.sock.sendall(self.conn.data_to_send())
        return sid

    def _read(self):
        d = self.sock.recv(1 << 20)
        if not d:
            raise ConnectionError("server closed the connection")
        self._events(self.conn.receive_data(d))

    def wait(self, sid):
        while sid not in self.done:
            if self.closed:
                raise ConnectionError("server sent GOAWAY")
            self._read()
        return self.done.pop(sid)

    def call(self, method, path, params=None, body=b"", ctype="application/x-www-form-urlencoded"):
        """Returns (status, data) with data = json 'data' on success, text or bytes otherwise."""
        st, out = self.wait(self.start(method, path, params, body, ctype))
        if st == 200 and not out.startswith(b'{"data"'):
            return st, out
        if st == 200:
            return st, json.loads(out)["data"]
        return st, out.decode("utf-8", "replace")

    def put_json(self, path, obj):
        return self.call("PUT", path, body=json.dumps(obj).encode(), ctype="application/json")

    def close(self):
        try:
            self.conn.close_connection()
            self.sock.sendall(self.conn.data_to_send())
        except OSError:
            pass
        self.sock.close()


def backup_params(btime, bid="pc1", btype="host"):
    return {"store": "store1", "backup-type": btype, "backup-id": bid, "backup-time": btime}


def manifest_blob(btime, files, bid="pc1"):
    m = {"backup-type": "host", "backup-id": bid, "backup-time": btime, "files": files,
         "signature": None, "unprotected": {}}
    return blob(json.dumps(m).encode())


def upload_archive(s, name, chunks, known=()):
    """Dynamic index upload as the official client does; returns (manifest entry, uploaded count)."""
    st, wid = s.call("POST", "dynamic_index", {"archive-name": name})
    assert st == 200, wid
    sids, offsets, digests, off, uploaded = [], [], [], 0, 0
    for c in chunks:
        d = sha(c)
        if d not in known:
            enc = blob(c)
            sids.append(s.start("POST", "dynamic_chunk", {"wid": wid, "digest": d.hex(), "size": len(c),
                                                          "encoded-size": len(enc)}, enc, "application/octet-stream"))
            uploaded += 1
        offsets.append(off)
        digests.append(d.hex())
        off += len(c)
    for sid in sids:  # pipelined uploads
        st, out = s.wait(sid)
        assert st == 200, out
    st, out = s.put_json("dynamic_index", {"wid": wid, "digest-list": digests, "offset-list": offsets})
    assert st == 200, out
    csum = didx_csum(chunks)
    st, out = s.call("POST", "dynamic_close", {"wid": wid, "chunk-count": len(chunks), "size": off, "csum": csum})
    assert st == 200, out
    return {"filename": name, "crypt-mode": "none", "size": off, "csum": csum}, uploaded


def rand(n, seed):
    return random.Random(seed).randbytes(n)


class EmulatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pbs-emu-test-")
        cls.srv = Server(cls.tmp)
        cls.t0 = 1700000000

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def backup(self, btime, archives, bid="pc1", known_from_previous=True):
        """Full backup of {name: [chunks]}; returns uploaded chunk count."""
        s = Session(self.srv, "proxmox-backup-protocol-v1", "/api2/json/backup", backup_params(btime, bid))
        try:
            st, prev = s.call("GET", "previous_backup_time")
            self.assertEqual(st, 200)
            files, total = [], 0
            for name, chunks in archives.items():
                known = set()
                if prev is not None and known_from_previous:
                    st, raw = s.call("GET", "previous", {"archive-name": name})
                    if st == 200:
                        known = {d for _, d in parse_didx(raw)}
                entry, n = upload_archive(s, name, chunks, known)
                files.append(entry)
                total += n
            conf = blob(b"config file\n" * 10)
            st, out = s.call("POST", "blob", {"file-name": "pc.conf.blob", "encoded-size": len(conf)}, conf)
            self.assertEqual(st, 200, out)
            files.append({"filename": "pc.conf.blob", "crypt-mode": "none", "size": len(conf),
                          "csum": sha(conf).hex()})
            mb = manifest_blob(btime, files, bid)
            st, out = s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(mb)}, mb)
            self.assertEqual(st, 200, out)
            st, out = s.call("POST", "finish")
            self.assertEqual(st, 200, out)
            return total
        finally:
            s.close()
            # the server keeps the snapshot's shared lock until it sees the
            # connection end: a prune or delete right after would skip it
            for _ in range(100):
                if self.unlocked(self.snap_dir(bid, btime)):
                    break
                time.sleep(0.05)

    def restore(self, btime, name, bid="pc1"):
        s = Session(self.srv, "proxmox-backup-reader-protocol-v1", "/api2/json/reader", backup_params(btime, bid))
        try:
            st, mraw = s.call("GET", "download", {"file-name": "index.json.blob"})
            self.assertEqual(st, 200)
            manifest = json.loads(unblob(mraw))
            entry = [f for f in manifest["files"] if f["filename"] == name][0]
            st, iraw = s.call("GET", "download", {"file-name": name})
            self.assertEqual(st, 200)
            self.assertEqual(hashlib.sha256(iraw[4096:]).hexdigest(), entry["csum"])
            out = bytearray()
            sids = [(s.start("GET", "chunk", {"digest": d.hex()}), d) for _, d in parse_didx(iraw)]
            for sid, d in sids:
                st, raw = s.wait(sid)
                self.assertEqual(st, 200)
                data = unblob(raw)
                self.assertEqual(sha(data), d)
                out += data
            self.assertEqual(len(out), entry["size"])
            return bytes(out), manifest
        finally:
            s.close()

    def test_01_backup_restore_incremental(self):
        a = [rand(100000, i) for i in range(6)] + [rand(5000000, 99)]
        n1 = self.backup(self.t0, {"root.pxar.didx": a})
        self.assertEqual(n1, 7)
        data, manifest = self.restore(self.t0, "root.pxar.didx")
        self.assertEqual(data, b"".join(a))
        self.assertIn("chunk_upload_stats", manifest["unprotected"])
        self.assertEqual(manifest["unprotected"]["chunk_upload_stats"]["count"], 7)
        # on-disk layout
        snap = os.path.join(self.srv.ds, "host", "pc1", "2023-11-14T22:13:20Z")
        self.assertEqual(sorted(os.listdir(snap)), ["index.json.blob", "pc.conf.blob", "root.pxar.didx"])
        with open(os.path.join(self.srv.ds, "host", "pc1", "owner")) as f:
            self.assertEqual(f.read(), TOKEN + "\n")
        d = sha(a[0]).hex()
        self.assertTrue(os.path.isfile(os.path.join(self.srv.ds, ".chunks", d[:4], d)))
        # second backup: two changed chunks, the rest known through `previous`
        b = list(a)
        b[2] = rand(100000, 1002)
        b.append(rand(1234, 1003))
        before = self.srv.stats()["totals"]["chunks_uploaded"]
        n2 = self.backup(self.t0 + 3600, {"root.pxar.didx": b})
        self.assertEqual(n2, 2)
        stats = self.srv.stats()
        self.assertEqual(stats["totals"]["chunks_uploaded"] - before, 2)
        last = [x for x in stats["sessions"] if x["protocol"] == "backup"][-1]
        self.assertEqual(last["chunks_registered"], 7)
        self.assertEqual(last["state"], "finished")
        with open(os.path.join(self.srv.ds, ".emulator-stats.json")) as f:
            self.assertEqual(json.load(f)["totals"]["chunks_uploaded"], stats["totals"]["chunks_uploaded"])
        data, _ = self.restore(self.t0 + 3600, "root.pxar.didx")
        self.assertEqual(data, b"".join(b))
        # the same data into a new group: uploaded again, stored once
        self.assertEqual(self.backup(self.t0, {"root.pxar.didx": a}, bid="pc1copy"), 7)
        last = [x for x in self.srv.stats()["sessions"] if x["protocol"] == "backup"][-1]
        self.assertEqual((last["chunks_uploaded"], last["chunks_new"], last["chunks_duplicate"]), (7, 0, 7))

    # ---------------------------------------------------------------- helpers

    def open_backup(self, bid, btime, auth=None, btype="host"):
        return Session(self.srv, "proxmox-backup-protocol-v1", "/api2/json/backup",
                       backup_params(btime, bid, btype), auth)

    def open_reader(self, bid, btime, auth=None, window=2 ** 31 - 2, ns=None):
        params = backup_params(btime, bid)
        if ns:
            params["ns"] = ns
        return Session(self.srv, "proxmox-backup-reader-protocol-v1", "/api2/json/reader", params, auth, window)

    def expect(self, result, status, text):
        st, out = result
        self.assertEqual(st, status, out)
        self.assertEqual(out, text)

    def refused(self, fn, status, text):
        with self.assertRaises(UpgradeRefused) as cm:
            fn()
        self.assertEqual((cm.exception.status, cm.exception.text), (status, text))

    def chunk(self, s, wid, data, digest=None, size=None, enc=None, kind="dynamic"):
        enc = blob(data) if enc is None else enc
        return s.call("POST", kind + "_chunk", {"wid": wid, "digest": (digest or sha(data)).hex(),
                                                "size": len(data) if size is None else size,
                                                "encoded-size": len(enc)}, enc, "application/octet-stream")

    def wait_gone(self, path):
        """The server removes an unfinished snapshot, then lets go of its
        group's lock, when it sees the connection end (as upstream does):
        waits for both, so that the next backup of the group is not refused
        as running."""
        for _ in range(100):
            if not os.path.exists(path) and self.unlocked(os.path.dirname(path)):
                return
            time.sleep(0.05)
        self.fail("aborted snapshot %s was kept, or its group stayed locked" % path)

    @staticmethod
    def unlocked(path):
        """Whether nothing holds a lock on the directory path (or it is gone)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def snap_dir(self, bid, btime):
        return os.path.join(self.srv.ds, "host", bid,
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(btime)))

    # ---------------------------------------------------------------- refusals

    def test_02_append_unknown_digest(self):
        s = self.open_backup("unk", self.t0)
        st, wid = s.call("POST", "dynamic_index", {"archive-name": "a.pxar.didx"})
        d = sha(b"never uploaded").hex()
        self.expect(s.put_json("dynamic_index", {"wid": wid, "digest-list": [d], "offset-list": [0]}),
                    400, "no such chunk " + d)
        self.expect(s.put_json("dynamic_index", {"wid": wid, "digest-list": [d], "offset-list": []}),
                    400, "offset list has wrong length (0 != 1)")
        s.close()
        # a chunk of the previous snapshot is only known after GET previous
        self.backup(self.t0, {"a.pxar.didx": [b"x" * 1000]}, bid="prev")
        s = self.open_backup("prev", self.t0 + 10)
        st, wid = s.call("POST", "dynamic_index", {"archive-name": "a.pxar.didx"})
        d = sha(b"x" * 1000).hex()
        self.expect(s.put_json("dynamic_index", {"wid": wid, "digest-list": [d], "offset-list": [0]}),
                    400, "no such chunk " + d)
        st, _ = s.call("GET", "previous", {"archive-name": "a.pxar.didx"})
        self.assertEqual(st, 200)
        self.expect(s.put_json("dynamic_index", {"wid": wid, "digest-list": [d], "offset-list": [0]}), 200, None)
        self.expect(s.call("GET", "previous", {"archive-name": "b.pxar.didx"}), 400,
                    'Unable to open dynamic index "%s" - No such file or directory (os error 2)'
                    % os.path.join(self.snap_dir("prev", self.t0), "b.pxar.didx"))
        self.expect(s.call("GET", "previous", {"archive-name": "b.txt"}), 400, 'unknown archive type: "b.txt"')
        self.expect(s.call("GET", "previous_backup_time"), 200, self.t0)
        s.close()
        self.wait_gone(self.snap_dir("prev", self.t0 + 10))
        # a snapshot whose verification failed is no base: previous is refused
        mpath = os.path.join(self.snap_dir("prev", self.t0), "index.json.blob")
        with open(mpath, "rb") as f:
            m = json.loads(unblob(f.read()))
        m["unprotected"]["verify_state"] = {"state": "failed", "upid": "UPID:x"}
        with open(mpath, "wb") as f:
            f.write(blob(json.dumps(m).encode()))
        self.refused(lambda: self.open_backup("prev", self.t0), 400, "backup directory already exists.")
        s = self.open_backup("prev", self.t0 + 20)
        self.expect(s.call("GET", "previous_backup_time"), 200, None)
        self.expect(s.call("GET", "previous", {"archive-name": "a.pxar.didx"}), 400, "no valid previous backup")
        s.close()
        # host/benchmark: needs the flag, and its data is discarded
        self.refused(lambda: self.open_backup("benchmark", self.t0), 400,
                     "unable to run benchmark without --benchmark flags")
        self.refused(lambda: Session(self.srv, "proxmox-backup-protocol-v1", "/api2/json/backup",
                                     dict(backup_params(self.t0, "prev2"), benchmark="true")), 400,
                     "benchmark flags is only allowed on 'host/benchmark'")
        s = Session(self.srv, "proxmox-backup-protocol-v1", "/api2/json/backup",
                    dict(backup_params(self.t0, "benchmark"), benchmark="true"))
        files = [upload_archive(s, "a.pxar.didx", [b"bench" * 100])[0]]
        mb = manifest_blob(self.t0, files, "benchmark")
        self.assertEqual(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(mb)}, mb)[0], 200)
        self.expect(s.call("POST", "finish"), 200, None)
        s.close()
        self.wait_gone(self.snap_dir("benchmark", self.t0))
        s = self.open_backup("prev2", self.t0)
        self.expect(s.call("GET", "previous", {"archive-name": "a.pxar.didx"}), 400, "no valid previous backup")
        self.expect(s.call("GET", "previous_backup_time"), 200, None)
        s.close()

    def test_03_bad_chunks(self):
        s = self.open_backup("chunks", self.t0)
        st, wid = s.call("POST", "dynamic_index", {"archive-name": "a.pxar.didx"})
        data = rand(5000, 3)
        self.expect(self.chunk(s, wid, data, digest=sha(b"other")), 400, "detected chunk with wrong digest.")
        self.expect(self.chunk(s, wid, data, size=4999), 400, "detected chunk with wrong length (4999 != 5000)")
        enc = blob(data)
        st, out = s.call("POST", "dynamic_chunk", {"wid": wid, "digest": sha(data).hex(), "size": 5000,
                                                   "encoded-size": len(enc) + 1}, enc)
        self.expect((st, out), 400, "uploaded chunk has unexpected size.")
        st, out = s.call("POST", "dynamic_chunk", {"wid": wid, "digest": sha(data).hex(), "size": 5000,
                                                   "encoded-size": len(enc) - 1}, enc)
        self.expect((st, out), 400, "uploaded chunk is larger than announced.")
        self.expect(self.chunk(s, wid, data, enc=b"\x01" * 8 + enc[8:]), 400, "unable to parse raw blob - wrong magic")
        st, out = self.chunk(s, wid, data, size=0)
        self.assertEqual(st, 400)
        self.assertEqual(out, "parameter verification errors\n\nparameter 'size': value must have a minimum "
                              "value of 1 (got 0)\n")
        st, out = s.call("POST", "dynamic_chunk", {"wid": 300, "digest": "zz", "size": 1, "encoded-size": 20,
                                                   "bogus": 1}, b"x" * 20)
        self.assertEqual(st, 400)
        self.assertIn("parameter 'bogus': schema does not allow additional properties.", out)
        self.assertIn("parameter 'wid': value must have a maximum value of 256 (got 300)", out)
        self.assertIn("parameter 'digest': value does not match the regex pattern", out)
        # a wrong CRC is not checked but rewritten; the chunk is stored before the wid check
        bad_crc = bytearray(blob(data))
        bad_crc[8:12] = b"\0\0\0\0"
        self.expect(self.chunk(s, 7, data, enc=bytes(bad_crc)), 400, "dynamic writer '7' not registered")
        with open(os.path.join(self.srv.ds, ".chunks", sha(data).hex()[:4], sha(data).hex()), "rb") as f:
            self.assertEqual(unblob(f.read()), data)
        # encrypted chunks are not decoded: any digest is accepted
        enc = MAGIC_ENCR + b"\0" * 36 + rand(100, 4)
        self.expect(self.chunk(s, wid, b"\0" * 100, digest=sha(b"enc"), enc=enc), 200, sha(b"enc").hex())
        # an append sent together with (not after the answer to) its chunk's upload
        fresh = rand(700, 5)
        enc = blob(fresh)
        up = s.start("POST", "dynamic_chunk", {"wid": wid, "digest": sha(fresh).hex(), "size": 700,
                                               "encoded-size": len(enc)}, enc, "application/octet-stream", send=False)
        body = json.dumps({"wid": wid, "digest-list": [sha(fresh).hex()], "offset-list": [0]}).encode()
        put = s.start("PUT", "dynamic_index", body=body, ctype="application/json")
        self.assertEqual(s.wait(put), (400, ("no such chunk " + sha(fresh).hex()).encode()))
        self.assertEqual(s.wait(up)[0], 200)
        self.expect(self.chunk(s, wid, data), 200, sha(data).hex())
        d = sha(data).hex()
        self.expect(s.put_json("dynamic_index", {"wid": wid, "digest-list": [d], "offset-list": [5]}), 400,
                    "dynamic writer 'a.pxar.didx' append chunk failed - got strange chunk offset (0 != 5)")
        self.expect(s.call("POST", "dynamic_index", {"archive-name": "a.pxar"}), 400,
                    "wrong archive extension: 'a.pxar'")
        self.expect(s.call("POST", "dynamic_index", {"archive-name": "../a.didx"}), 400,
                    "parameter verification errors\n\nparameter 'archive-name': value does not match the "
                    "regex pattern\n")
        s.close()
        self.wait_gone(self.snap_dir("chunks", self.t0))

    def test_04_close_checks(self):
        s = self.open_backup("close", self.t0)
        chunks = [rand(3000, 10), rand(4000, 11)]
        digests = [sha(c).hex() for c in chunks]

        def writer():
            st, wid = s.call("POST", "dynamic_index", {"archive-name": "c.pxar.didx"})
            for c in chunks:
                self.assertEqual(self.chunk(s, wid, c)[0], 200)
            self.assertEqual(s.put_json("dynamic_index", {"wid": wid, "digest-list": digests,
                                                          "offset-list": [0, 3000]})[0], 200)
            return wid
        csum = didx_csum(chunks)
        wid = writer()
        self.expect(s.call("POST", "dynamic_close", {"wid": wid, "chunk-count": 3, "size": 7000, "csum": csum}),
                    400, "dynamic writer 'c.pxar.didx' close failed - unexpected chunk count (2 != 3)")
        self.expect(s.call("POST", "dynamic_close", {"wid": wid, "chunk-count": 2, "size": 7000, "csum": csum}),
                    400, "dynamic writer '%d' not registered" % wid)
        wid = writer()
        self.expect(s.call("POST", "dynamic_close", {"wid": wid, "chunk-count": 2, "size": 7001, "csum": csum}),
                    400, "dynamic writer 'c.pxar.didx' close failed - unexpected file size (7000 != 7001)")
        wid = writer()
        self.expect(s.call("POST", "dynamic_close", {"wid": wid, "chunk-count": 2, "size": 7000, "csum": "00" * 32}),
                    400, "dynamic writer 'c.pxar.didx' close failed - got unexpected checksum")
        self.expect(s.call("POST", "finish"), 400, "backup does not contain valid files (file count == 0)")
        self.expect(s.call("POST", "finish", body=b"x", ctype="application/octet-stream"), 400,
                    'unsupported content type Ok("application/octet-stream")')
        self.expect(s.call("POST", "finish", {"x": 1}), 400, "parameter verification errors\n\nparameter 'x': "
                    "schema does not allow additional properties.\n")
        wid = writer()
        self.expect(s.call("POST", "finish"), 400, "found open index writer - unable to finish backup")
        self.expect(s.call("POST", "dynamic_close", {"wid": wid, "chunk-count": 2, "size": 7000, "csum": csum}),
                    200, None)
        self.assertTrue(os.path.isfile(os.path.join(self.snap_dir("close", self.t0), "c.pxar.didx")))
        st, out = s.call("POST", "finish")
        self.assertEqual(st, 400)
        self.assertEqual(out, "unable to update manifest blob - unable to load blob '\"%s\"' - No such file or "
                              "directory (os error 2)" % os.path.join(self.snap_dir("close", self.t0), "index.json.blob"))
        bad = bytearray(manifest_blob(self.t0, [], "close"))
        self.expect(s.call("POST", "blob", {"file-name": "index.json", "encoded-size": len(bad)}, bytes(bad)),
                    400, "wrong blob file extension: 'index.json'")
        self.expect(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(bad) + 1},
                           bytes(bad)), 400, "got blob with unexpected length (%d != %d)" % (len(bad) + 1, len(bad)))
        bad[-1] ^= 0xFF
        self.expect(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(bad)}, bytes(bad)),
                    400, "Data blob has wrong CRC checksum.")
        good = manifest_blob(self.t0, [{"filename": "c.pxar.didx", "size": 7000, "csum": csum}], "close")
        self.expect(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(good)}, good),
                    200, None)
        self.expect(s.call("POST", "finish"), 200, None)
        self.expect(s.call("POST", "finish"), 400, "backup already marked as finished.")
        self.expect(s.call("POST", "dynamic_index", {"archive-name": "x.didx"}), 400,
                    "backup already marked as finished.")
        s.close()
        with open(os.path.join(self.snap_dir("close", self.t0), "index.json.blob"), "rb") as f:
            m = json.loads(unblob(f.read()))
        self.assertEqual(m["files"][0]["crypt-mode"], "none")
        # upstream sums the statistics of successfully closed writers only
        self.assertEqual(m["unprotected"]["chunk_upload_stats"]["count"], 2)

    def test_05_upgrade_refusals(self):
        self.backup(self.t0, {"a.pxar.didx": [b"y" * 100]}, bid="own")
        for t in (self.t0, self.t0 - 1):
            self.refused(lambda: self.open_backup("own", t), 400, "backup timestamp is older than last backup.")
        other = "Authorization: PBSAPIToken other@pbs:pw2\r\n"
        self.refused(lambda: self.open_backup("own", self.t0 + 1, auth=other), 401,
                     "authentication failed - invalid API token")
        tick, _ = self.srv.ticket("other@pbs", "pw2")
        self.refused(lambda: self.open_backup("own", self.t0 + 1, auth="Cookie: PBSAuthCookie=%s\r\n" % tick),
                     400, "backup owner check failed (other@pbs != %s)" % TOKEN)
        # the user owning the token may add snapshots to the token's group
        tick, _ = self.srv.ticket("backup@pbs", "pw")
        s = self.open_backup("own", self.t0 + 1, auth="Cookie: PBSAuthCookie=%s\r\n" % tick)
        # only one backup per group at a time
        gdir = os.path.join(self.srv.ds, "host", "own")
        self.refused(lambda: self.open_backup("own", self.t0 + 2), 400,
                     'unable to acquire lock on backup group directory "%s" - another backup is already running'
                     % gdir)
        # reading a snapshot that is being written is refused as well
        self.refused(lambda: self.open_reader("own", self.t0 + 1), 400,
                     'unable to acquire lock on snapshot directory "%s" - locked by another operation'
                     % self.snap_dir("own", self.t0 + 1))
        s.close()
        self.wait_gone(self.snap_dir("own", self.t0 + 1))
        tick, _ = self.srv.ticket("reader@pbs", "pw3")
        self.refused(lambda: self.open_backup("own", self.t0 + 5, auth="Cookie: PBSAuthCookie=%s\r\n" % tick),
                     403, "missing permissions 'Datastore.Backup' on '/datastore/store1'")
        bad = "Authorization: PBSAPIToken=%s:wrong\r\n" % TOKEN
        self.refused(lambda: self.open_backup("own", self.t0 + 5, auth=bad), 401,
                     "authentication failed - invalid credentials")
        self.refused(lambda: Session(self.srv, "proxmox-backup-protocol-v2", "/api2/json/backup",
                                     backup_params(self.t0 + 5, "own")), 400, "invalid protocol name")
        self.refused(lambda: self.open_backup("own", self.t0 + 5, btype="pc"), 400,
                     "parameter verification errors\n\nparameter 'backup-type': value 'pc' is not defined in "
                     "the enumeration.\n")
        self.refused(lambda: self.open_reader("own", self.t0 + 5), 400,
                     "snapshot host/own/%s does not exist." % time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                          time.gmtime(self.t0 + 5)))
        self.refused(lambda: self.open_reader("own", self.t0, auth=other), 401,
                     "authentication failed - invalid API token")
        tick, _ = self.srv.ticket("other@pbs", "pw2")
        self.refused(lambda: self.open_reader("own", self.t0, auth="Cookie: PBSAuthCookie=%s\r\n" % tick), 400,
                     "backup owner check failed!")
        tick, _ = self.srv.ticket("reader@pbs", "pw3")
        r = self.open_reader("own", self.t0, auth="Cookie: PBSAuthCookie=%s\r\n" % tick)
        # the reader's shared lock does not stop a new backup using it as base
        s = self.open_backup("own", self.t0 + 6)
        self.expect(s.call("GET", "previous_backup_time"), 200, self.t0)
        s.close()
        r.close()

    def test_06_fixed_index(self):
        s = self.open_backup("img", self.t0)
        size = MIB4 + 1000
        self.expect(s.call("POST", "fixed_index", {"archive-name": "d.img.didx", "size": size}), 400,
                    "wrong archive extension: 'd.img.didx'")
        st, wid = s.call("POST", "fixed_index", {"archive-name": "d.img.fidx", "size": size})
        self.assertEqual(st, 200)
        big, small = rand(MIB4, 20), rand(1000, 21)
        self.expect(self.chunk(s, wid, rand(MIB4 + 1, 22), kind="fixed"), 400,
                    "fixed writer 'd.img.fidx' - got large chunk (%d > %d" % (MIB4 + 1, MIB4))
        self.expect(self.chunk(s, wid, small, kind="fixed"), 200, sha(small).hex())
        self.expect(self.chunk(s, wid, rand(999, 23), kind="fixed"), 400,
                    "fixed writer '%d' - detected multiple end chunks (chunk size too small)" % wid)
        self.expect(self.chunk(s, wid, big, kind="fixed"), 200, sha(big).hex())
        put = lambda d, o: s.put_json("fixed_index", {"wid": wid, "digest-list": [d.hex()], "offset-list": [o]})
        self.expect(put(sha(small), 0), 400, "chunk with unexpected length (1000 != %d" % MIB4)
        self.expect(put(sha(big), MIB4), 400, "chunk data exceeds size (%d >= %d)" % (2 * MIB4, size))
        self.expect(put(sha(small), MIB4), 200, None)   # appends may come in any order
        self.expect(put(sha(big), 0), 200, None)
        csum = hashlib.sha256(sha(big) + sha(small)).hexdigest()
        self.expect(s.call("POST", "fixed_close", {"wid": wid, "chunk-count": 3, "size": size, "csum": csum}), 400,
                    "fixed writer 'd.img.fidx' close failed - received wrong number of chunk (2 != 3)")
        st, wid = s.call("POST", "fixed_index", {"archive-name": "d.img.fidx", "size": size})
        for d, o in ((sha(big), 0), (sha(small), MIB4)):
            self.assertEqual(put(d, o)[0], 200)
        self.expect(s.call("POST", "fixed_close", {"wid": wid, "chunk-count": 2, "size": size - 1, "csum": csum}),
                    400, "fixed writer 'd.img.fidx' close failed - unexpected file size (%d != %d)" % (size, size - 1))
        st, wid = s.call("POST", "fixed_index", {"archive-name": "d.img.fidx", "size": size})
        self.assertEqual(put(sha(big), 0)[0], 200)
        self.expect(s.call("POST", "fixed_close", {"wid": wid, "chunk-count": 1, "size": size, "csum": csum}),
                    400, "fixed writer 'd.img.fidx' close failed - unexpected chunk count (2 != 1)")
        st, wid = s.call("POST", "fixed_index", {"archive-name": "d.img.fidx", "size": size})
        for d, o in ((sha(small), MIB4), (sha(big), 0)):
            self.assertEqual(put(d, o)[0], 200)
        self.expect(s.call("POST", "fixed_close", {"wid": wid, "chunk-count": 2, "size": size, "csum": csum}),
                    200, None)
        mb = manifest_blob(self.t0, [{"filename": "d.img.fidx", "crypt-mode": "none", "size": size, "csum": csum}],
                           "img")
        self.assertEqual(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(mb)}, mb)[0], 200)
        self.expect(s.call("POST", "finish"), 200, None)
        s.close()
        # restore through the reader and the index on disk
        r = self.open_reader("img", self.t0)
        st, raw = r.call("GET", "download", {"file-name": "d.img.fidx"})
        self.assertEqual(raw[:8], MAGIC_FIDX)
        self.assertEqual(struct.unpack_from("<QQ", raw, 64), (size, MIB4))
        self.assertEqual(hashlib.sha256(raw[4096:]).hexdigest(), csum)
        out = b"".join(unblob(r.call("GET", "chunk", {"digest": raw[o:o + 32].hex()})[1]) for o in (4096, 4128))
        self.assertEqual(out, big + small)
        r.close()
        # incremental image backup: reuse-csum copies the old slots
        s = self.open_backup("img", self.t0 + 1)
        self.expect(s.call("POST", "fixed_index", {"archive-name": "d.img.fidx", "size": size, "reuse-csum": "00" * 32}),
                    400, "expected csum (%s) doesn't match last backup's (%s), cannot do incremental backup"
                    % ("00" * 32, csum))
        st, wid = s.call("POST", "fixed_index", {"archive-name": "d.img.fidx", "size": size, "reuse-csum": csum})
        small2 = rand(1000, 24)
        self.assertEqual(self.chunk(s, wid, small2, kind="fixed")[0], 200)
        self.assertEqual(put(sha(small2), MIB4)[0], 200)
        csum2 = hashlib.sha256(sha(big) + sha(small2)).hexdigest()
        self.expect(s.call("POST", "fixed_close", {"wid": wid, "chunk-count": 1, "size": 0, "csum": csum2}), 200, None)
        s.close()

    def test_07_reader_refusals(self):
        self.backup(self.t0, {"r.pxar.didx": [rand(2000, 30), rand(3000, 31)]}, bid="rd")
        self.backup(self.t0, {"r.pxar.didx": [rand(2000, 32)]}, bid="rd2")
        r = self.open_reader("rd", self.t0)
        d_other = sha(rand(2000, 32)).hex()
        d_own = sha(rand(2000, 30)).hex()
        self.expect(r.call("GET", "chunk", {"digest": d_own}), 401, "download chunk %s not allowed" % d_own)
        st, _ = r.call("GET", "download", {"file-name": "r.pxar.didx"})
        self.assertEqual(st, 200)
        self.assertEqual(r.call("GET", "chunk", {"digest": d_own})[0], 200)
        self.expect(r.call("GET", "chunk", {"digest": d_other}), 401, "download chunk %s not allowed" % d_other)
        self.expect(r.call("GET", "download", {"file-name": "x.blob"}), 404, 'open file "%s" failed - not found'
                    % os.path.join(self.snap_dir("rd", self.t0), "x.blob"))
        self.expect(r.call("GET", "download", {"file-name": "x.pxar.didx"}), 400,
                    'Unable to open dynamic index "%s" - No such file or directory (os error 2)'
                    % os.path.join(self.snap_dir("rd", self.t0), "x.pxar.didx"))
        st, out = r.call("GET", "speedtest")
        self.assertEqual((st, len(out)), (200, 1024 * 1024))
        r.close()
        # the server honours a small client window (65535, h2's default) on a 5 MB answer
        big = rand(5000000, 99)
        r = self.open_reader("pc1", self.t0, window=65535)
        self.assertEqual(r.call("GET", "download", {"file-name": "root.pxar.didx"})[0], 200)
        st, raw = r.call("GET", "chunk", {"digest": sha(big).hex()})
        self.assertEqual((st, unblob(raw)), (200, big))
        r.close()

    def test_07b_namespace(self):
        self.refused(lambda: Session(self.srv, "proxmox-backup-protocol-v1", "/api2/json/backup",
                                     dict(backup_params(self.t0, "nsb"), ns="a/b")), 404, "namespace not found")
        os.makedirs(os.path.join(self.srv.ds, "ns", "a", "ns", "b"))
        s = Session(self.srv, "proxmox-backup-protocol-v1", "/api2/json/backup", dict(backup_params(self.t0, "nsb"),
                                                                                    ns="a/b"))
        files = [upload_archive(s, "n.pxar.didx", [b"ns" * 50])[0]]
        mb = manifest_blob(self.t0, files, "nsb")
        self.assertEqual(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(mb)}, mb)[0], 200)
        self.expect(s.call("POST", "finish"), 200, None)
        s.close()
        self.assertTrue(os.path.isfile(os.path.join(self.srv.ds, "ns", "a", "ns", "b", "host", "nsb", "owner")))
        r = self.open_reader("nsb", self.t0, ns="a/b")
        self.assertEqual(r.call("GET", "download", {"file-name": "n.pxar.didx"})[0], 200)
        r.close()
        st, snaps = self.srv.rest("GET", "/api2/json/admin/datastore/store1/snapshots", {"ns": "a/b"})
        self.assertEqual([x["backup-id"] for x in snaps["data"]], ["nsb"])

    # ---------------------------------------------------------------- REST

    def test_08_rest(self):
        self.backup(self.t0, {"a.pxar.didx": [b"1" * 100]}, bid="rest")
        self.backup(self.t0 + 86400, {"a.pxar.didx": [b"2" * 100]}, bid="rest")
        self.backup(self.t0 + 86400 + 60, {"a.pxar.didx": [b"3" * 100]}, bid="rest")
        srv = self.srv
        self.assertEqual(srv.rest("GET", "/api2/json/version"),
                         (200, {"data": {"version": "3.2", "release": "4", "repoid": "cairn-pbs-emulator"}}))
        self.assertEqual(srv.rest("GET", "/api2/json/version", auth={"X": "y"}),
                         (401, "authentication failed - no authentication credentials provided."))
        self.assertEqual(srv.rest("POST", "/api2/json/access/ticket", {"username": "root@pam", "password": "x"},
                                  auth={"X": "y"}), (401, "permission check failed."))
        tick, csrf = srv.ticket("backup@pbs", "pw")
        cookie = {"Cookie": "PBSAuthCookie=" + tick}
        # libcurl's Expect: 100-continue, chunked bodies, form-encoded bodies
        login = {"username": "backup@pbs", "password": "pw"}
        self.assertEqual(srv.rest("POST", "/api2/json/access/ticket", login, auth={"X": "y"},
                                  headers={"Expect": "100-continue"})[0], 200)
        self.assertEqual(srv.rest("POST", "/api2/json/access/ticket", login, auth={"X": "y"}, chunked=True,
                                  body=json.dumps(login).encode(), headers={"Content-Type": "application/json"})[0], 200)
        self.assertEqual(srv.rest("POST", "/api2/json/access/ticket", auth={"X": "y"},
                                  body=urllib.parse.urlencode(login).encode(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})[0], 200)
        self.assertEqual(srv.rest("GET", "/api2/json/version", auth=cookie)[0], 200)
        # renewal: the ticket as password
        self.assertEqual(srv.rest("POST", "/api2/json/access/ticket",
                                  {"username": "backup@pbs", "password": urllib.parse.unquote(tick)},
                                  auth={"X": "y"})[0], 200)
        params = {"backup-type": "host", "backup-id": "rest", "backup-time": self.t0}
        base = "/api2/json/admin/datastore/store1/"
        self.assertEqual(srv.rest("DELETE", base + "snapshots", params, auth=cookie),
                         (401, "authentication failed - missing CSRF prevention token"))
        st, groups = srv.rest("GET", base + "groups")
        self.assertEqual(st, 200)
        g = [x for x in groups["data"] if x["backup-id"] == "rest"][0]
        self.assertEqual(g, {"backup-type": "host", "backup-id": "rest", "last-backup": self.t0 + 86460,
                             "backup-count": 3, "owner": TOKEN,
                             "files": ["a.pxar.didx", "pc.conf.blob", "index.json.blob"]})
        st, snaps = srv.rest("GET", base + "snapshots", {"backup-id": "rest"})
        self.assertEqual([x["backup-time"] for x in snaps["data"]], [self.t0, self.t0 + 86400, self.t0 + 86460])
        item = snaps["data"][0]
        self.assertEqual(item["files"][0], {"filename": "a.pxar.didx", "crypt-mode": "none", "size": 100})
        self.assertEqual(item["files"][2]["filename"], "index.json.blob")
        self.assertEqual(item["size"], sum(f["size"] for f in item["files"]))
        self.assertFalse(item["protected"])
        log = blob(b"client log\n" * 20)
        logp = dict(params, store="store1")
        self.assertEqual(srv.rest("POST", base + "upload-backup-log?" + urllib.parse.urlencode(logp), body=log,
                                  headers={"Content-Type": "application/octet-stream"}), (200, {"data": None}))
        self.assertEqual(srv.rest("POST", base + "upload-backup-log?" + urllib.parse.urlencode(logp), body=log,
                                  headers={"Content-Type": "application/octet-stream"}),
                         (400, "backup already contains a log."))
        with open(os.path.join(self.snap_dir("rest", self.t0), "client.log.blob"), "rb") as f:
            self.assertEqual(f.read(), log)
        st, snaps = srv.rest("GET", base + "snapshots", {"backup-id": "rest"})
        item = snaps["data"][0]
        self.assertEqual(item["files"][-1], {"filename": "client.log.blob"})
        st, files = srv.rest("GET", base + "files", params)
        self.assertEqual(files["data"], item["files"])
        st, status = srv.rest("GET", base + "status")
        self.assertTrue(status["data"]["total"] >= status["data"]["avail"] > 0)
        # other@pbs (backup role) sees nothing of the token's groups and cannot delete
        otick, ocsrf = srv.ticket("other@pbs", "pw2")
        ocookie = {"Cookie": "PBSAuthCookie=" + otick, "CSRFPreventionToken": ocsrf}
        self.assertEqual(srv.rest("GET", base + "groups", auth=ocookie), (200, {"data": []}))
        self.assertEqual(srv.rest("DELETE", base + "snapshots", params, auth=ocookie),
                         (403, "permission check failed"))
        # prune needs Datastore.Prune (owner) or Modify: the token's backup role has neither
        prune = {"backup-type": "host", "backup-id": "rest", "keep-last": 1, "dry-run": True}
        self.assertEqual(srv.rest("POST", base + "prune", prune), (403, "permission check failed"))
        rtick, rcsrf = srv.ticket("root@pam", "rootpw")
        root = {"Cookie": "PBSAuthCookie=" + rtick, "CSRFPreventionToken": rcsrf}
        st, pr = srv.rest("POST", base + "prune", prune, auth=root)
        self.assertEqual([(x["backup-time"], x["keep"]) for x in pr["data"]],
                         [(self.t0 + 86460, True), (self.t0 + 86400, False), (self.t0, False)])
        self.assertEqual(len(os.listdir(os.path.join(srv.ds, "host", "rest"))), 4)
        # keep-daily keeps the newest of each (local) day
        st, pr = srv.rest("POST", base + "prune", {"backup-type": "host", "backup-id": "rest", "keep-daily": 5},
                          auth=root)
        self.assertEqual([(x["backup-time"], x["keep"]) for x in pr["data"]],
                         [(self.t0 + 86460, True), (self.t0 + 86400, False), (self.t0, True)])
        self.assertFalse(os.path.exists(self.snap_dir("rest", self.t0 + 86400)))
        self.assertEqual(srv.rest("DELETE", base + "snapshots", params,
                                  auth={"Cookie": "PBSAuthCookie=" + tick, "CSRFPreventionToken": csrf}),
                         (403, "permission check failed"))
        self.assertEqual(srv.rest("DELETE", base + "snapshots", params, auth=root), (200, {"data": None}))
        self.assertFalse(os.path.exists(self.snap_dir("rest", self.t0)))
        st, snaps = srv.rest("GET", base + "snapshots", {"backup-id": "rest"})
        self.assertEqual([x["backup-time"] for x in snaps["data"]], [self.t0 + 86460])
        st, out = srv.rest("GET", base + "snapshots", {"backup-id": "rest", "junk": 1})
        self.assertEqual((st, out), (400, "parameter verification errors\n\nparameter 'junk': schema does not "
                                          "allow additional properties.\n"))
        self.assertEqual(srv.rest("GET", "/api2/json/admin/datastore/nope/groups"),
                         (400, "datastore 'nope' does not exist."))
        self.assertEqual(srv.rest("GET", "/api2/json/emulator/stats")[0], 403)
        self.assertEqual(srv.rest("DELETE", base + "groups", {"backup-type": "host", "backup-id": "rest"}, auth=root),
                         (200, {"data": None}))
        self.assertFalse(os.path.exists(os.path.join(srv.ds, "host", "rest")))

    # ---------------------------------------------------------------- faults

    def faults(self, **values):
        if not hasattr(self, "root_auth"):  # before garbage-rest garbles the ticket call
            tick, csrf = self.srv.ticket("root@pam", "rootpw")
            self.root_auth = {"Cookie": "PBSAuthCookie=" + tick, "CSRFPreventionToken": csrf}
        st, out = self.srv.rest("POST", "/api2/json/emulator/faults", values, auth=self.root_auth)
        self.assertEqual(st, 200, out)

    def upload_until_failure(self, bid, n=4):
        """Open a backup and upload n chunks one by one; returns the exception and the index reached."""
        s = self.open_backup(bid, self.t0)
        st, wid = s.call("POST", "dynamic_index", {"archive-name": "f.pxar.didx"})
        try:
            for i in range(n):
                st, out = self.chunk(s, wid, rand(1000, 100 + i))
                if st != 200:
                    return (st, out), i
            return None, n
        except Exception as err:  # what a client sees when the server misbehaves
            return err, i
        finally:
            s.sock.close()

    def test_09_faults(self):
        try:
            self.faults(**{"die-after-chunks": 2})
            err, i = self.upload_until_failure("die")
            self.assertIsInstance(err, (ConnectionError, ssl.SSLError, OSError))
            self.assertEqual(i, 2)
            self.wait_gone(self.snap_dir("die", self.t0))
            rec = [x for x in self.srv.stats()["sessions"] if x["snapshot"].startswith("host/die/")][0]
            self.assertEqual((rec["state"], rec["chunks_uploaded"]), ("aborted", 2))

            self.faults(**{"goaway-after-chunks": 1})
            err, i = self.upload_until_failure("goaway")
            self.assertIsInstance(err, ConnectionError)
            self.assertEqual(i, 1)

            self.faults(**{"garbage-after-chunks": 0})
            err, i = self.upload_until_failure("garbage")
            self.assertIsInstance(err, Exception)
            self.assertEqual(i, 0)

            # a reset stream: only that request fails, the session goes on
            self.faults(**{"reset-after-chunks": 1})
            s = self.open_backup("reset", self.t0)
            st, wid = s.call("POST", "dynamic_index", {"archive-name": "f.pxar.didx"})
            self.assertEqual(self.chunk(s, wid, b"a" * 100)[0], 200)
            self.assertEqual(self.chunk(s, wid, b"b" * 100), ("reset", ""))
            self.assertEqual(self.chunk(s, wid, b"c" * 100)[0], 200)
            s.close()

            self.faults(**{"garbage-on-upgrade": True})
            with self.assertRaises(Exception):
                self.open_backup("gup", self.t0)
            self.wait_gone(self.snap_dir("gup", self.t0))

            self.faults(**{"delay": 0.3})
            s = self.open_backup("delay", self.t0)
            t = time.monotonic()
            self.assertEqual(s.call("GET", "previous_backup_time"), (200, None))
            self.assertGreaterEqual(time.monotonic() - t, 0.3)
            s.close()

            self.faults(**{"fail-finish": True})
            s = self.open_backup("ff", self.t0)
            upload_archive(s, "a.pxar.didx", [b"z" * 10])
            mb = manifest_blob(self.t0, [], "ff")
            self.assertEqual(s.call("POST", "blob", {"file-name": "index.json.blob", "encoded-size": len(mb)}, mb)[0],
                             200)
            self.expect(s.call("POST", "finish"), 400, "emulator: finish refused by fault injection")
            s.close()
            self.wait_gone(self.snap_dir("ff", self.t0))

            self.faults(**{"garbage-rest": True})
            st, out = self.srv.rest("GET", "/api2/json/version")
            self.assertEqual(st, 200)
            self.assertIsInstance(out, str)
        finally:
            self.faults()
        self.assertEqual(self.srv.rest("GET", "/api2/json/version")[0], 200)

    def test_10_exit(self):
        root = os.path.join(self.tmp, "exit")
        os.mkdir(root)
        cfg = os.path.join(root, "auth.json")
        with open(cfg, "w") as f:
            json.dump({"tokens": {"x@pbs!y": "zz"}, "acl": {"x@pbs!y": "reader"}}, f)
        ready = os.path.join(root, "ready.json")
        cert = os.path.join(self.srv.certdir, "cert.pem")
        srv = Server(root, "--exit-after-chunks", "1", "--cert", cert, "--key",
                     os.path.join(self.srv.certdir, "key.pem"), "--auth-config", cfg, "--ready-file", ready,
                     "--print-fingerprint", "--error-delay", "0.3")
        try:
            self.assertEqual(sorted(os.listdir(srv.ds)), [".chunks", ".lock"])
            self.assertEqual(srv.fingerprint, self.srv.fingerprint)  # same certificate
            self.assertEqual(srv.before_ready, [srv.fingerprint])
            with open(ready) as f:
                self.assertEqual(json.load(f), {"port": srv.port, "fingerprint": srv.fingerprint,
                                                "pid": srv.proc.pid, "cert": cert})
            t = time.monotonic()
            self.assertEqual(srv.rest("GET", "/api2/json/version", auth={"Authorization": "PBSAPIToken x@pbs!y:z"}),
                             (401, "authentication failed - invalid credentials"))
            self.assertGreaterEqual(time.monotonic() - t, 0.3)
            self.assertEqual(srv.rest("GET", "/api2/json/version", auth={"Authorization": "PBSAPIToken x@pbs!y:zz"})[0],
                             200)
            self.refused(lambda: Session(srv, "proxmox-backup-protocol-v1", "/api2/json/backup",
                                         backup_params(self.t0, "exit"), "Authorization: PBSAPIToken x@pbs!y:zz\r\n"),
                         403, "missing permissions 'Datastore.Backup' on '/datastore/store1'")
            saved, self.srv = self.srv, srv
            err, i = self.upload_until_failure("exit")
            self.assertEqual(i, 1)
            self.assertEqual(srv.proc.wait(10), 17)
            # a killed server leaves an unfinished snapshot: no manifest, listed without sizes
            snap = os.path.join(srv.ds, "host", "exit", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t0)))
            self.assertEqual(os.listdir(snap), [])
            srv.stop()
            srv = Server(root, "--datastore", "store2=" + os.path.join(root, "ds2"))
            self.assertEqual(srv.rest("GET", "/api2/json/admin/datastore")[1],
                             {"data": [{"store": "store1"}, {"store": "store2"}]})
            st, snaps = srv.rest("GET", "/api2/json/admin/datastore/store1/snapshots")
            self.assertEqual(snaps["data"], [{"backup-type": "host", "backup-id": "exit", "backup-time": self.t0,
                                              "files": [], "owner": TOKEN, "protected": False}])
            self.refused(lambda: Session(srv, "proxmox-backup-protocol-v1", "/api2/json/backup",
                                         backup_params(self.t0, "exit")), 400, "backup directory already exists.")
        finally:
            self.srv = saved
            srv.stop()

    def test_11_client_garbage(self):
        """A misbehaving client costs its connection (and snapshot), never the server."""
        rng = random.Random(7)
        for n in (0, 10, 5000):
            sock = self.srv.tls()
            sock.sendall(rng.randbytes(n) + b"\r\n\r\n" if n else b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except (OSError, ssl.SSLError):
                pass
            sock.close()
        s = self.open_backup("garb", self.t0)
        s.sock.sendall(b"\x00\x00\x08\x00\x01\x00\x00\x00\x63" + rng.randbytes(64))
        s.sock.settimeout(10)
        try:
            while s.sock.recv(65536):
                pass
        except (OSError, ssl.SSLError):
            pass
        s.sock.close()
        self.wait_gone(self.snap_dir("garb", self.t0))
        self.assertEqual(self.srv.rest("GET", "/api2/json/version")[0], 200)
        self.assertIsNone(self.srv.proc.poll())


if __name__ == "__main__":
    unittest.main(verbosity=2)
