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
import sys
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
        cmd = [PY, SERVER, "--datastore", "store1=" + self.ds, "--port", "0",
               "--cert-out", self.certdir, "--user", "root@pam:rootpw", "--user", "backup@pbs:pw",
               "--user", "other@pbs:pw2", "--user", "reader@pbs:pw3",
               "--token", TOKEN + ":" + SECRET, "--acl", "backup@pbs=backup",
               "--acl", TOKEN + "=backup", "--acl", "other@pbs=backup", "--acl", "reader@pbs=reader",
               "--lazy-chunk-dirs"] + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if os.environ.get("EMU_VERBOSE") else open(os.path.join(root, "server.log"), "ab"))
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            raise RuntimeError("emulator did not start: %r" % line)
        _, port, self.fingerprint = line.split()
        self.port = int(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.proc.stdout.close()

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

    def rest(self, method, path, params=None, auth=None, headers=None, body=None):
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

    def __init__(self, server, protocol, path, params, auth=None):
        self.sock = server.tls()
        auth = auth or "Authorization: PBSAPIToken %s:%s\r\n" % (TOKEN, urllib.parse.quote(SECRET))
        req = ("GET %s?%s HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: %s\r\n%s\r\n"
               % (path, urllib.parse.urlencode(params), protocol, auth))
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
            self.sock.close()
            raise UpgradeRefused(status, rest.decode())
        assert (b"Upgrade: " + protocol.encode()) in head
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 2})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2 ** 31 - 2 - 65535)
        self.sock.sendall(self.conn.data_to_send())
        self.done = {}
        self.partial = {}
        self.closed = False
        if rest:
            self._events(self.conn.receive_data(rest))

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

    def start(self, method, path, params=None, body=b"", ctype="application/x-www-form-urlencoded"):
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


if __name__ == "__main__":
    unittest.main(verbosity=2)
