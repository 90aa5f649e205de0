#!/usr/bin/python3
"""A Proxmox Backup Server emulator for cairn's tests.

HTTPS on loopback (ssl), the plain REST calls a backup client uses, and the
HTTP/1.1 upgrade to the HTTP/2 backup and reader protocols (h2 as server),
writing a real datastore in the PBS on-disk layout.  The server-side checks
and their error answers follow upstream proxmox-backup 3.2.4
(src/api2/backup/*.rs, src/api2/reader/mod.rs, src/api2/admin/datastore.rs,
pbs-datastore); see README.md for the list and the CLI.
"""

import argparse
import atexit
import base64
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame


def _short_raw_data_repr(data):
    """h2 calls repr() on every received frame for a no-op trace log, and
    hyperframe hexlifies the whole payload there (a quarter of the server's
    CPU time on 4 MiB chunks); hexlify only what the repr shows."""
    if not data:
        return "None"
    r = bytes(data[:11]).hex()
    return "<hex:" + (r[:20] + "..." if len(data) > 10 else r) + ">"


hyperframe.frame._raw_data_repr = _short_raw_data_repr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbsformat import (  # noqa: E402
    ApiError, FIXED_CHUNK_SIZE, atomic_write, blob_decode_plain, blob_encode,
    blob_header_len, blob_set_crc, blob_verify_crc, blob_verify_unencrypted,
    dynamic_index_bytes, fixed_index_bytes, io_error_text, manifest_canonical_dump,
    parse_index, parse_time_string, rust_path, time_string)

BACKUP_PROTOCOL = "proxmox-backup-protocol-v1"
READER_PROTOCOL = "proxmox-backup-reader-protocol-v1"
MANIFEST = "index.json.blob"
H2_WINDOW = 32 * 1024 * 1024
H2_MAX_FRAME = 4 * 1024 * 1024
CHUNK_MAX = 16 * 1024 * 1024
ENCODED_MAX = CHUNK_MAX + 44
TICKET_LIFETIME = 7200

PRIVS = ("Datastore.Audit", "Datastore.Read", "Datastore.Backup", "Datastore.Modify",
         "Datastore.Prune", "Sys.Audit")
ROLES = {
    "admin": set(PRIVS),
    "backup": {"Datastore.Backup"},
    "powerbackup": {"Datastore.Backup", "Datastore.Prune"},
    "reader": {"Datastore.Read", "Datastore.Audit"},
    "audit": {"Datastore.Audit"},
    "none": set(),
}


def log(msg):
    sys.stderr.write("pbs-emulator: %s\n" % msg)
    sys.stderr.flush()


# ------------------------------------------------------------------ schema

SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$")
DIGEST_RE = re.compile(r"^[a-f0-9]{64}$")
TYPES = ("vm", "ct", "host")


def _int(opt, lo=None, hi=None):
    return ("int", opt, lo, hi)


def _str(opt, regex=None, minlen=None, maxlen=None):
    return ("str", opt, regex, (minlen, maxlen))


def _bool(opt):
    return ("bool", opt, None, None)


def _enum(opt, values):
    return ("enum", opt, values, None)


def _arr(opt, item):
    return ("array", opt, item, None)


STORE = _str(False, SAFE_ID, 3, 32)
NS = _str(True, re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._\-]*(?:/[A-Za-z0-9_][A-Za-z0-9._\-]*){0,6})?$"), None, 256)
BTYPE = _enum(False, TYPES)
BID = _str(False, SAFE_ID)
BTIME = _int(False, 1)
ARCHIVE = _str(False, SAFE_ID)
DIGEST = _str(False, DIGEST_RE)
WID = _int(False, 1, 256)


def _conv(name, kind, value, regex, lim):
    """Check one value like proxmox-schema; return the typed value or raise message."""
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("Expected integer type.")
        try:
            v = int(value)
        except ValueError:
            raise ValueError("value '%s' is not a valid integer" % value) from None
        lo, hi = regex, lim
        if lo is not None and v < lo:
            raise ValueError("value must have a minimum value of %d (got %d)" % (lo, v))
        if hi is not None and v > hi:
            raise ValueError("value must have a maximum value of %d (got %d)" % (hi, v))
        return v
    if kind == "bool":
        if isinstance(value, bool):
            return value
        s = str(value).lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError("Unable to parse boolean option.")
    if kind == "enum":
        if value not in regex:
            raise ValueError("value '%s' is not defined in the enumeration." % value)
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("Expected string value.")
        minlen, maxlen = lim
        if minlen is not None and len(value) < minlen:
            raise ValueError("value must be at least %d characters long" % minlen)
        if maxlen is not None and len(value) > maxlen:
            raise ValueError("value may only be %d characters long" % maxlen)
        if regex is not None and not regex.match(value):
            raise ValueError("value does not match the regex pattern")
        return value
    if kind == "array":
        if not isinstance(value, list):
            value = [value]
        ikind = regex
        return [_conv(name, ikind[0], v, ikind[2], ikind[3]) for v in value]
    raise ValueError("bad schema")


def check_params(params, schema):
    """Validate params (dict: name -> value or list) against schema; typed dict back."""
    errors = []
    out = {}
    for name in params:
        if name not in schema:
            errors.append((name, "schema does not allow additional properties."))
    for name, (kind, opt, regex, lim) in schema.items():
        if name not in params:
            if not opt:
                errors.append((name, "parameter is missing and it is not optional."))
            continue
        value = params[name]
        if kind != "array" and isinstance(value, list):
            if len(value) != 1:
                errors.append((name, "expected a single value"))
                continue
            value = value[0]
        try:
            out[name] = _conv(name, kind, value, regex, lim)
        except ValueError as err:
            errors.append((name, str(err)))
    if errors:
        msg = "parameter verification errors\n\n"
        for name, err in errors:
            msg += "parameter '%s': %s\n" % (name, err)
        raise ApiError(msg)
    return out


def query_params(query):
    """Form-urlencoded query to dict name -> value, or list for repeated keys."""
    out = {}
    for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if k in out:
            if not isinstance(out[k], list):
                out[k] = [out[k]]
            out[k].append(v)
        else:
            out[k] = v
    return out


def json_data(data, **extra):
    obj = {"data": data}
    obj.update(extra)
    return json.dumps(obj).encode()


# ------------------------------------------------------------------ auth

class Auth:
    """Users (password), API tokens (secret) and one role per auth id."""

    def __init__(self, users, tokens, acl):
        self.users = users
        self.tokens = tokens
        self.acl = acl
        self.key = os.urandom(32)

    def _sign(self, text):
        return base64.b64encode(hmac.new(self.key, text.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    def make_ticket(self, userid, now=None):
        stamp = "%08X" % int(now if now is not None else time.time())
        data = "PBS:%s:%s" % (userid, stamp)
        return data + "::" + self._sign(data)

    def make_csrf(self, userid, now=None):
        stamp = "%08X" % int(now if now is not None else time.time())
        return stamp + ":" + self._sign(stamp + ":" + userid)

    def verify_ticket(self, ticket):
        """Return the user id of a valid ticket, else raise 401."""
        data, sep, sig = ticket.rpartition("::")
        parts = data.split(":")
        if not sep or len(parts) != 3 or parts[0] != "PBS":
            raise ApiError("authentication failed - invalid ticket", 401)
        if not hmac.compare_digest(sig, self._sign(data)):
            raise ApiError("authentication failed - ticket with invalid signature", 401)
        try:
            age = time.time() - int(parts[2], 16)
        except ValueError:
            raise ApiError("authentication failed - invalid ticket", 401) from None
        if age > TICKET_LIFETIME or age < -300:
            raise ApiError("authentication failed - ticket expired", 401)
        if parts[1] not in self.users:
            raise ApiError("authentication failed - user '%s' does not exist." % parts[1], 401)
        return parts[1]

    def verify_csrf(self, userid, token):
        stamp, _, sig = token.partition(":")
        if not sig or not hmac.compare_digest(sig, self._sign(stamp + ":" + userid)):
            raise ApiError("authentication failed - invalid csrf token", 401)

    def login(self, username, password):
        if username in self.users:
            if password is not None and hmac.compare_digest(password.encode(), self.users[username].encode()):
                return
            if password is not None and password.startswith("PBS:"):
                try:
                    if self.verify_ticket(password) == username:
                        return
                except ApiError:
                    pass
        raise ApiError("permission check failed.", 401)

    def check_request(self, method, headers):
        """Authenticate one HTTP/1 request; return the auth id (str)."""
        cookie = headers.get("cookie", "")
        ticket = None
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "PBSAuthCookie":
                ticket = urllib.parse.unquote(value)
        if ticket:
            userid = self.verify_ticket(ticket)
            if method != "GET":
                token = headers.get("csrfpreventiontoken")
                if token is None:
                    raise ApiError("authentication failed - missing CSRF prevention token", 401)
                self.verify_csrf(userid, token)
            return userid
        authz = headers.get("authorization")
        if authz is not None:
            if not authz.startswith("PBSAPIToken") or len(authz) < 12 or authz[11] not in " =":
                raise ApiError("authentication failed - invalid authorization header", 401)
            tokenid, sep, secret = authz[12:].partition(":")
            if not sep or "!" not in tokenid:
                raise ApiError("authentication failed - invalid API token", 401)
            secret = urllib.parse.unquote(secret)
            if tokenid not in self.tokens:
                raise ApiError("authentication failed - invalid API token", 401)
            if not hmac.compare_digest(secret.encode(), self.tokens[tokenid].encode()):
                raise ApiError("authentication failed - invalid credentials", 401)
            return tokenid
        raise ApiError("authentication failed - no authentication credentials provided.", 401)

    def privs(self, authid):
        return ROLES[self.acl.get(authid, "admin")]

    def require(self, authid, priv, store):
        if priv not in self.privs(authid):
            raise ApiError("missing permissions '%s' on '/datastore/%s'" % (priv, store), 403)


def owner_ok(owner, authid):
    """check_backup_owner: same id, or the token's user owning a group."""
    if owner == authid:
        return True
    return "!" in owner and owner.split("!", 1)[0] == authid


# ------------------------------------------------------------------ datastore

class DirLock:
    """flock(2) on a directory, as upstream's lock_dir_noblock{,_shared}."""

    def __init__(self, path, what, msg, shared=False):
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            self.fd = -1
            raise ApiError("unable to open %s directory %s for locking - %s: %s" % (
                what, rust_path(path), errno.errorcode.get(err.errno, "UnknownErrno"),
                os.strerror(err.errno))) from None
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = -1
            raise ApiError("unable to acquire lock on %s directory %s - %s" % (what, rust_path(path), msg))

    def downgrade(self):
        """Exclusive to shared, keeping the lock all along."""
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ManifestLock:
    """BackupDir::lock_manifest: an exclusive flock on the snapshot's manifest
    lock file, waiting at most 5 s. Upstream keeps it under
    /run/proxmox-backup/locks/<store>/; the emulator keeps it as
    .index.json.lck in the snapshot directory (upstream's older place, and
    where cairn's local store takes it). It is not the snapshot directory
    lock: notes can change while a reader or verify holds that."""

    def __init__(self, snap_path):
        path = os.path.join(snap_path, ".index.json.lck")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ApiError("unable to acquire manifest lock %s - %s" % (
                rust_path(path), io_error_text(err))) from None
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    self.fd = -1
                    raise ApiError("unable to acquire manifest lock %s - got timeout" % rust_path(path)) from None
                time.sleep(0.05)

    def release(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load_manifest(snap_path):
    """Decode index.json.blob of a snapshot; returns (manifest dict, blob size)."""
    path = os.path.join(snap_path, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        blob_header_len(raw)
        blob_verify_crc(raw)
        data = blob_decode_plain(raw)
    except OSError as err:
        raise ApiError("unable to load blob '%s' - %s" % (rust_path(path), io_error_text(err)))
    except ApiError as err:
        raise ApiError("unable to load blob '%s' - %s" % (rust_path(path), err.message))
    try:
        manifest = json.loads(data)
    except ValueError as err:
        raise ApiError("unable to parse manifest - %s" % err)
    return manifest, len(raw)


class Datastore:
    """One datastore in the PBS directory layout."""

    def __init__(self, name, root, full_chunk_dirs=False):
        self.name = name
        self.root = os.path.abspath(root)
        os.makedirs(os.path.join(self.root, ".chunks"), exist_ok=True)
        # Upstream creates all 65536 .chunks/XXXX directories up front; that
        # costs tens of seconds on a slow disk, so by default they are made
        # when the first chunk of each prefix arrives.
        if full_chunk_dirs and not os.path.isdir(os.path.join(self.root, ".chunks", "ffff")):
            for i in range(65536):
                os.makedirs(os.path.join(self.root, ".chunks", "%04x" % i), exist_ok=True)
        open(os.path.join(self.root, ".lock"), "a").close()

    def ns_path(self, ns):
        path = self.root
        for comp in (ns.split("/") if ns else []):
            path = os.path.join(path, "ns", comp)
        return path

    def group_path(self, ns, btype, bid):
        return os.path.join(self.ns_path(ns), btype, bid)

    def snapshot_path(self, ns, btype, bid, btime):
        return os.path.join(self.group_path(ns, btype, bid), time_string(btime))

    def chunk_path(self, digest_hex):
        return os.path.join(self.root, ".chunks", digest_hex[:4], digest_hex)

    def insert_chunk(self, digest_hex, raw):
        """chunk_store.insert_chunk: returns (is_duplicate, encoded size)."""
        path = self.chunk_path(digest_hex)
        try:
            st = os.stat(path)
            if st.st_size > 0:
                os.utime(path)
                return True, len(raw)
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.tmp_%d_%d" % (path, os.getpid(), threading.get_ident())
        with open(tmp, "wb") as f:
            f.write(raw)
        os.rename(tmp, path)
        return False, len(raw)

    def get_owner(self, ns, btype, bid):
        path = os.path.join(self.group_path(ns, btype, bid), "owner")
        with open(path) as f:
            return f.readline().rstrip("\n")

    def list_groups(self, ns):
        out = []
        base = self.ns_path(ns)
        for btype in TYPES:
            tdir = os.path.join(base, btype)
            if not os.path.isdir(tdir):
                continue
            for bid in sorted(os.listdir(tdir)):
                if SAFE_ID.match(bid) and os.path.isdir(os.path.join(tdir, bid)):
                    out.append((btype, bid))
        return out

    def list_snapshots(self, ns, btype, bid):
        """[(epoch, path, finished)] sorted by time."""
        gdir = self.group_path(ns, btype, bid)
        out = []
        if not os.path.isdir(gdir):
            return out
        for name in os.listdir(gdir):
            t = parse_time_string(name)
            path = os.path.join(gdir, name)
            if t is not None and os.path.isdir(path):
                out.append((t, path, os.path.exists(os.path.join(path, MANIFEST))))
        out.sort()
        return out

    def load_manifest(self, snap_path):
        """Decode index.json.blob of a snapshot; returns (manifest dict, blob size)."""
        return load_manifest(snap_path)

    def last_backup(self, ns, btype, bid):
        """Newest finished snapshot, or None (backup_group.last_backup(true))."""
        for t, path, finished in reversed(self.list_snapshots(ns, btype, bid)):
            if finished:
                return t, path
        return None

    def usage(self):
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        return total, total - st.f_bfree * st.f_frsize, avail


# ------------------------------------------------------------------ faults, stats

class Faults:
    """Fault injection switches; the chunk counter is server-wide."""

    KEYS = ("die-after-chunks", "exit-after-chunks", "garbage-after-chunks",
            "reset-after-chunks", "goaway-after-chunks", "garbage-on-upgrade",
            "garbage-rest", "delay", "fail-finish")

    def __init__(self, args):
        self.lock = threading.Lock()
        self.values = {}
        for key in self.KEYS:
            v = getattr(args, key.replace("-", "_"), None)
            if v not in (None, False):
                self.values[key] = v
        self.chunks = 0

    def set(self, values):
        """Replace all switches (runtime control); restarts the chunk counter."""
        for k in values:
            if k not in self.KEYS:
                raise ApiError("unknown fault '%s'" % k)
        with self.lock:
            self.values = {k: v for k, v in values.items() if v is not None and v is not False}
            self.chunks = 0

    def get(self, key):
        with self.lock:
            return self.values.get(key)

    def on_chunk(self):
        """Called for each chunk upload request; returns the fault to apply or None."""
        with self.lock:
            n = self.chunks
            self.chunks += 1
            for key in ("exit-after-chunks", "die-after-chunks", "garbage-after-chunks",
                        "goaway-after-chunks"):
                if key in self.values and n >= int(self.values[key]):
                    return key
            if "reset-after-chunks" in self.values and n == int(self.values["reset-after-chunks"]):
                return "reset-after-chunks"
        return None


class Stats:
    """Per-session counters, kept in memory and in <datastore>/.emulator-stats.json."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sessions = {}
        self.next_id = 1

    def new(self, store, **fields):
        with self.lock:
            rec = {"id": self.next_id, "store": store.name, "state": "running",
                   "chunks_uploaded": 0, "chunks_new": 0, "chunks_duplicate": 0,
                   "bytes_uploaded": 0, "chunks_registered": 0, "chunks_downloaded": 0,
                   "files_downloaded": [], "files_written": [], "errors": []}
            rec.update(fields)
            self.sessions[self.next_id] = rec
            self.next_id += 1
            return rec

    def snapshot(self, store_name=None):
        with self.lock:
            sessions = [{k: list(v) if isinstance(v, list) else v for k, v in s.items()}
                        for s in self.sessions.values() if store_name is None or s["store"] == store_name]
        totals = {}
        for k in ("chunks_uploaded", "chunks_new", "chunks_duplicate", "bytes_uploaded",
                  "chunks_downloaded"):
            totals[k] = sum(s[k] for s in sessions)
        return {"sessions": sessions, "totals": totals}

    def save(self, store):
        data = json.dumps(self.snapshot(store.name), indent=1).encode()
        with self.lock:
            atomic_write(os.path.join(store.root, ".emulator-stats.json"), data)


# ------------------------------------------------------------------ HTTP/2 server side

class ConnectionKilled(Exception):
    """Raised by a fault that ends the connection without an answer."""


class H2Service:
    """Serves one upgraded connection with h2; handler(method, path, query,
    headers, body, sid) -> (status, content_type, body) or raises ApiError."""

    def __init__(self, sock, leftover, handler, emu):
        self.sock = sock
        self.leftover = leftover
        self.handler = handler
        self.emu = emu
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.requests = {}
        self.ready = []
        self.pending = {}

    def send(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        conn = self.conn
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: H2_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: H2_MAX_FRAME,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
        })
        # Settings given as initial values count as in force at once, so h2
        # does not raise its inbound frame limit on the peer's ACK: do it here.
        conn.max_inbound_frame_size = H2_MAX_FRAME
        conn.initiate_connection()
        conn.increment_flow_control_window(H2_WINDOW - 65535)
        self.send()
        data = self.leftover
        while True:
            if data:
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as err:
                    log("h2 protocol error: %s" % err)
                    self.send()
                    return
                terminated = False
                for ev in events:
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        terminated = True
                        break
                    self.event(ev)
                # Upstream runs requests concurrently, so an append sent
                # before its chunk's upload answer arrived may find the chunk
                # unknown. Emulate that for what arrived together: chunk
                # uploads of a batch are handled after everything else in it.
                ready = [sid for sid in self.ready if sid in self.requests]  # not reset meanwhile
                self.ready = []
                ready.sort(key=self.is_chunk_upload)
                for sid in ready:
                    self.dispatch(sid)
                self.flush()
                self.send()
                if terminated:
                    return
            try:
                data = self.read_batch()
            except (OSError, ssl.SSLError):
                return
            if not data:
                return

    def read_batch(self):
        """Block for some bytes, then take whatever else TLS has ready (up to
        1 MiB): SSL recv returns one 16 KiB record per call, and feeding h2
        record by record costs more than the framing itself."""
        data = self.sock.recv(1 << 20)
        if not data:
            return data
        parts = [data]
        size = len(data)
        self.sock.setblocking(False)
        try:
            while size < (1 << 20):
                more = self.sock.recv(1 << 20)
                if not more:
                    break
                parts.append(more)
                size += len(more)
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        finally:
            self.sock.setblocking(True)
        return b"".join(parts)

    def event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            self.requests[ev.stream_id] = [dict(ev.headers), bytearray()]
        elif isinstance(ev, h2.events.DataReceived):
            req = self.requests.get(ev.stream_id)
            if req is not None:
                req[1] += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):  # h2 reports it apart from the request/data too
            if ev.stream_id in self.requests:
                self.ready.append(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            self.requests.pop(ev.stream_id, None)
            self.pending.pop(ev.stream_id, None)

    def is_chunk_upload(self, sid):
        path = self.requests[sid][0].get(":path", "")
        return path.startswith(("/dynamic_chunk", "/fixed_chunk"))

    def dispatch(self, sid):
        headers, body = self.requests.pop(sid)
        method = headers.get(":method", "GET")
        path, _, query = headers.get(":path", "/").partition("?")
        delay = self.emu.faults.get("delay")
        if delay:
            time.sleep(float(delay))
        try:
            status, ctype, out = self.handler(method, path.lstrip("/"), query, headers, bytes(body), sid)
        except ApiError as err:
            status, ctype, out = err.status, "application/json;charset=UTF-8", err.message.encode()
        except ConnectionKilled:
            raise
        except Exception as err:  # a bug in the emulator: answer 500, keep serving
            traceback.print_exc()
            status, ctype, out = 500, "text/plain", ("internal error: %s" % err).encode()
        if status is None:
            return
        try:
            self.conn.send_headers(sid, [(":status", str(status)), ("content-type", ctype),
                                         ("content-length", str(len(out)))], end_stream=not out)
        except h2.exceptions.StreamClosedError:
            return
        if out:
            self.pending[sid] = [memoryview(out), 0]

    def flush(self):
        for sid in list(self.pending):
            buf, off = self.pending[sid]
            try:
                while off < len(buf):
                    n = min(self.conn.local_flow_control_window(sid),
                            self.conn.max_outbound_frame_size, len(buf) - off)
                    if n <= 0:
                        break
                    self.conn.send_data(sid, buf[off:off + n].tobytes(), end_stream=off + n == len(buf))
                    off += n
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                del self.pending[sid]
                continue
            if off >= len(buf):
                del self.pending[sid]
            else:
                self.pending[sid][1] = off

    def reset(self, sid):
        self.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)


def request_params(query, headers, body):
    """Parameters of a Sync/Async API call, as proxmox-rest-server's
    get_request_parameters: a JSON body replaces the URL query; otherwise
    the form-urlencoded body and the query both count."""
    ctype = headers.get("content-type")
    is_json = False
    if ctype is not None:
        base = ctype.split(";")[0]
        if base == "application/json":
            is_json = True
        elif base != "application/x-www-form-urlencoded":
            raise ApiError("unsupported content type Ok(%s)" % json.dumps(ctype))
    if len(body) >= 64 * 1024:
        raise ApiError("Request body too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError("Request body not uft8: %s" % err) from None
    if is_json:
        try:
            params = json.loads(text) if text else {}
        except ValueError as err:
            raise ApiError(str(err)) from None
        if not isinstance(params, dict):
            raise ApiError("parameter verification errors\n\nparameter '': Expected object - got "
                           "scalar value.\n")
        return params
    params = query_params(text)
    for k, v in query_params(query).items():
        if k == "_dc":
            continue
        if k in params:
            old = params[k] if isinstance(params[k], list) else [params[k]]
            params[k] = old + (v if isinstance(v, list) else [v])
        else:
            params[k] = v
    return params


# ------------------------------------------------------------------ backup session

class BackupSession:
    """State of one backup (writer) session: environment.rs's SharedBackupState."""

    def __init__(self, emu, store, authid, ns, btype, bid, btime, group_lock):
        self.emu = emu
        self.store = store
        self.authid = authid
        self.ns, self.btype, self.bid, self.btime = ns, btype, bid, btime
        self.group_lock = group_lock
        self.snap_lock = None
        self.last_lock = None
        self.last = None
        self.path = store.snapshot_path(ns, btype, bid, btime)
        self.finished = False
        self.uid = 0
        self.file_counter = 0
        self.dynamic = {}
        self.fixed = {}
        self.known = {}
        self.stat = {"count": 0, "size": 0, "compressed_size": 0, "duplicates": 0}
        self.rec = None
        self.h2 = None
        self.benchmark = False

    def ensure_unfinished(self):
        if self.finished:
            raise ApiError("backup already marked as finished.")

    def next_uid(self):
        self.uid += 1
        return self.uid

    # -- handlers
    def handle(self, method, path, query, headers, body, sid):
        routes = {
            ("GET", "previous_backup_time"): self.previous_backup_time,
            ("GET", "previous"): self.previous,
            ("POST", "dynamic_index"): self.create_dynamic,
            ("PUT", "dynamic_index"): self.append_dynamic,
            ("POST", "fixed_index"): self.create_fixed,
            ("PUT", "fixed_index"): self.append_fixed,
            ("POST", "dynamic_chunk"): self.upload_dynamic_chunk,
            ("POST", "fixed_chunk"): self.upload_fixed_chunk,
            ("POST", "dynamic_close"): self.close_dynamic,
            ("POST", "fixed_close"): self.close_fixed,
            ("POST", "blob"): self.upload_blob,
            ("POST", "finish"): self.finish,
            ("POST", "speedtest"): self.speedtest,
        }
        fn = routes.get((method, path))
        if fn is None:
            if any(p == path for _, p in routes):
                raise ApiError("Method not allowed", 405)
            raise ApiError("Path '/%s' not found." % path, 404)
        if path in ("dynamic_chunk", "fixed_chunk", "blob", "speedtest", "previous"):
            params = query_params(query)  # AsyncHttp handlers: URL query only
        else:
            params = request_params(query, headers, body)
        try:
            return fn(params, body, sid)
        except ApiError as err:
            self.rec["errors"].append("%s %s: %s" % (method, path, err.message))
            raise

    def ok(self, value):
        return 200, "application/json;charset=UTF-8", json_data(value)

    def previous_backup_time(self, params, body, sid):
        check_params(params, {})
        return self.ok(self.last[0] if self.last else None)

    def previous(self, params, body, sid):
        p = check_params(params, {"archive-name": ARCHIVE})
        name = p["archive-name"]
        if self.last is None:
            raise ApiError("no valid previous backup")
        path = os.path.join(self.last[1], name)
        kind = archive_type(name)
        if kind in ("fixed", "dynamic"):
            idx = open_index(path, kind)
            for start, end, digest in idx.entries:
                self.ensure_unfinished()
                self.known[digest] = end - start
            self.rec["chunks_registered"] += len(idx.entries)
        return download_response(path)

    def create_dynamic(self, params, body, sid):
        p = check_params(params, {"archive-name": ARCHIVE})
        name = p["archive-name"]
        if not name.endswith(".didx"):
            raise ApiError("wrong archive extension: '%s'" % name)
        self.ensure_unfinished()
        wid = self.next_uid()
        self.dynamic[wid] = {"name": name, "offset": 0, "count": 0, "entries": [],
                             "stat": dict.fromkeys(self.stat, 0)}
        return self.ok(wid)

    def create_fixed(self, params, body, sid):
        p = check_params(params, {"archive-name": ARCHIVE, "size": _int(False, 1),
                                  "reuse-csum": _str(True)})
        name, size = p["archive-name"], p["size"]
        if not name.endswith(".fidx"):
            raise ApiError("wrong archive extension: '%s'" % name)
        chunk_size = FIXED_CHUNK_SIZE
        slots = [None] * ((size + chunk_size - 1) // chunk_size)
        incremental = False
        if "reuse-csum" in p:
            incremental = True
            if self.last is None:
                raise ApiError("cannot reuse index - no valid previous backup exists")
            try:
                old = open_index(os.path.join(self.last[1], name), "fixed")
            except ApiError:
                raise ApiError("cannot reuse index - no previous backup exists for archive") from None
            old_csum = old.csum().hex()
            if old_csum != p["reuse-csum"]:
                raise ApiError("expected csum (%s) doesn't match last backup's (%s), cannot do "
                               "incremental backup" % (p["reuse-csum"], old_csum))
            if old.size != size:
                raise ApiError("fixed writer '%s' - cannot clone data: image size mismatch (%d != %d)"
                               % (name, old.size, size))
            slots = [e[2] for e in old.entries]
        self.ensure_unfinished()
        wid = self.next_uid()
        self.fixed[wid] = {"name": name, "size": size, "chunk_size": chunk_size, "count": 0,
                           "small": 0, "slots": slots, "incremental": incremental,
                           "stat": dict.fromkeys(self.stat, 0)}
        return self.ok(wid)

    def _append(self, params, kind, add):
        """dynamic_append / fixed_append: every digest must be known to this
        session; add(writer, offset, size, digest) does the kind's checks."""
        p = check_params(params, {"wid": WID, "digest-list": _arr(False, DIGEST),
                                  "offset-list": _arr(False, _int(False, 0))})
        if len(p["offset-list"]) != len(p["digest-list"]):
            raise ApiError("offset list has wrong length (%d != %d)"
                           % (len(p["offset-list"]), len(p["digest-list"])))
        wid = p["wid"]
        writers = self.fixed if kind == "fixed" else self.dynamic
        for dhex, offset in zip(p["digest-list"], p["offset-list"]):
            digest = bytes.fromhex(dhex)
            size = self.known.get(digest)
            if size is None:
                raise ApiError("no such chunk %s" % dhex)
            self.ensure_unfinished()
            w = writers.get(wid)
            if w is None:
                raise ApiError("%s writer '%d' not registered" % (kind, wid))
            add(w, offset, size, digest)
            w["count"] += 1
        return self.ok(None)

    def append_dynamic(self, params, body, sid):
        def add(w, offset, size, digest):
            if w["offset"] != offset:
                raise ApiError("dynamic writer '%s' append chunk failed - got strange chunk offset "
                               "(%d != %d)" % (w["name"], w["offset"], offset))
            w["offset"] += size
            w["entries"].append((w["offset"], digest))
        return self._append(params, "dynamic", add)

    def append_fixed(self, params, body, sid):
        def add(w, offset, size, digest):
            end = offset + size
            cs = w["chunk_size"]
            # fixed_index.rs check_chunk_alignment, messages verbatim
            if end < size:
                raise ApiError("got chunk with small offset (%d < %d" % (end, size))
            pos = end - size
            if end > w["size"]:
                raise ApiError("chunk data exceeds size (%d >= %d)" % (end, w["size"]))
            if (end != w["size"] and size != cs) or size > cs or size == 0:
                raise ApiError("chunk with unexpected length (%d != %d" % (size, cs))
            if pos & (cs - 1):
                raise ApiError("got unaligned chunk (pos = %d)" % pos)
            w["slots"][pos // cs] = digest
        return self._append(params, "fixed", add)

    def _upload_chunk(self, params, body, sid, kind):
        fault = self.emu.faults.on_chunk()
        if fault:
            self.emu.apply_connection_fault(fault, self.h2, sid)
            if fault == "reset-after-chunks":
                return None, None, None
        p = check_params(params, {"wid": WID, "digest": DIGEST, "size": _int(False, 1, CHUNK_MAX),
                                  "encoded-size": _int(False, 13, ENCODED_MAX)})
        wid, size, enc = p["wid"], p["size"], p["encoded-size"]
        digest = bytes.fromhex(p["digest"])
        if len(body) > enc:
            raise ApiError("uploaded chunk is larger than announced.")
        if len(body) != enc:
            raise ApiError("uploaded chunk has unexpected size.")
        blob_header_len(body)
        blob_verify_unencrypted(body, size, digest)
        raw = blob_set_crc(body)
        dup, comp = self.store.insert_chunk(p["digest"], raw)
        self.rec["chunks_uploaded"] += 1
        self.rec["bytes_uploaded"] += len(body)
        self.rec["chunks_duplicate" if dup else "chunks_new"] += 1
        # register_{fixed,dynamic}_chunk: after the chunk is stored
        self.ensure_unfinished()
        writers = self.fixed if kind == "fixed" else self.dynamic
        w = writers.get(wid)
        if w is None:
            raise ApiError("%s writer '%d' not registered" % (kind, wid))
        if kind == "fixed":
            if size > w["chunk_size"]:
                raise ApiError("fixed writer '%s' - got large chunk (%d > %d" % (w["name"], size, w["chunk_size"]))
            if size < w["chunk_size"]:
                w["small"] += 1
                if w["small"] > 1:
                    raise ApiError("fixed writer '%d' - detected multiple end chunks (chunk size too small)" % wid)
        w["stat"]["count"] += 1
        w["stat"]["size"] += size
        w["stat"]["compressed_size"] += comp
        if dup:
            w["stat"]["duplicates"] += 1
        self.known[digest] = size
        return self.ok(p["digest"])

    def upload_dynamic_chunk(self, params, body, sid):
        return self._upload_chunk(params, body, sid, "dynamic")

    def upload_fixed_chunk(self, params, body, sid):
        return self._upload_chunk(params, body, sid, "fixed")

    def _close(self, params, kind, check):
        """{dynamic,fixed}_writer_close: the writer is unregistered first (a
        failed close cannot be retried); check(w, p) -> (index bytes, csum)."""
        minimum = 1 if kind == "dynamic" else 0
        p = check_params(params, {"wid": WID, "chunk-count": _int(False, minimum),
                                  "size": _int(False, minimum), "csum": _str(False)})
        csum = parse_hex32(p["csum"])
        self.ensure_unfinished()
        wid = p["wid"]
        w = (self.fixed if kind == "fixed" else self.dynamic).pop(wid, None)
        if w is None:
            raise ApiError("%s writer '%d' not registered" % (kind, wid))
        data, expected = check(w, p)
        if csum != expected:
            raise ApiError("%s writer '%s' close failed - got unexpected checksum" % (kind, w["name"]))
        atomic_write(os.path.join(self.path, w["name"]), data)
        self.rec["files_written"].append(w["name"])
        self.file_counter += 1
        for k in self.stat:
            self.stat[k] += w["stat"][k]
        return self.ok(None)

    def close_dynamic(self, params, body, sid):
        def check(w, p):
            if w["count"] != p["chunk-count"]:
                raise ApiError("dynamic writer '%s' close failed - unexpected chunk count (%d != %d)"
                               % (w["name"], w["count"], p["chunk-count"]))
            if w["offset"] != p["size"]:
                raise ApiError("dynamic writer '%s' close failed - unexpected file size (%d != %d)"
                               % (w["name"], w["offset"], p["size"]))
            return dynamic_index_bytes(w["entries"])
        return self._close(params, "dynamic", check)

    def close_fixed(self, params, body, sid):
        def check(w, p):
            if w["count"] != p["chunk-count"]:
                raise ApiError("fixed writer '%s' close failed - received wrong number of chunk "
                               "(%d != %d)" % (w["name"], w["count"], p["chunk-count"]))
            if not w["incremental"]:
                if p["chunk-count"] != len(w["slots"]):
                    raise ApiError("fixed writer '%s' close failed - unexpected chunk count (%d != %d)"
                                   % (w["name"], len(w["slots"]), p["chunk-count"]))
                if p["size"] != w["size"]:
                    raise ApiError("fixed writer '%s' close failed - unexpected file size (%d != %d)"
                                   % (w["name"], w["size"], p["size"]))
            return fixed_index_bytes(w["slots"], w["size"], w["chunk_size"])
        return self._close(params, "fixed", check)

    def upload_blob(self, params, body, sid):
        p = check_params(params, {"file-name": ARCHIVE, "encoded-size": _int(False, 12, ENCODED_MAX)})
        name = p["file-name"]
        if not name.endswith(".blob"):
            raise ApiError("wrong blob file extension: '%s'" % name)
        if p["encoded-size"] != len(body):
            raise ApiError("got blob with unexpected length (%d != %d)" % (p["encoded-size"], len(body)))
        blob_header_len(body)
        blob_verify_crc(body)
        atomic_write(os.path.join(self.path, name), body)
        self.rec["files_written"].append(name)
        self.file_counter += 1
        self.stat["size"] += len(body)
        return self.ok(None)

    def finish(self, params, body, sid):
        check_params(params, {})
        self.ensure_unfinished()
        if self.dynamic or self.fixed:
            raise ApiError("found open index writer - unable to finish backup")
        if self.file_counter == 0:
            raise ApiError("backup does not contain valid files (file count == 0)")
        try:
            manifest, _ = self.store.load_manifest(self.path)
            manifest = normalize_manifest(manifest)
            manifest["unprotected"]["chunk_upload_stats"] = dict(self.stat)
            atomic_write(os.path.join(self.path, MANIFEST),
                         blob_encode(manifest_canonical_dump(manifest).encode(), True))
        except ApiError as err:
            raise ApiError("unable to update manifest blob - %s" % err.message) from None
        if self.last is not None and not os.path.isdir(self.last[1]):
            raise ApiError("base snapshot %s was removed during backup, cannot finish as chunks "
                           "might be missing" % os.path.relpath(self.last[1], self.store.ns_path(self.ns)))
        if self.emu.faults.get("fail-finish"):
            raise ApiError("emulator: finish refused by fault injection")
        self.finished = True
        self.rec["state"] = "finished"
        # Deviation: upstream keeps both locks until it sees the connection
        # end; a client that restores or backs up again right after its
        # finish would race that, so a finished snapshot is readable and the
        # group free at once (nothing but blob uploads is accepted now).
        self.snap_lock.downgrade()
        self.group_lock.release()
        self.emu.stats.save(self.store)
        return self.ok(None)

    def speedtest(self, params, body, sid):
        return self.ok(None)

    def end(self):
        """Session over (connection closed): keep a finished snapshot, else remove it."""
        if not self.finished or self.benchmark:  # benchmark data is never kept
            shutil.rmtree(self.path, ignore_errors=True)
            self.rec["state"] = "benchmark" if self.finished else "aborted"
        for lock in (self.snap_lock, self.last_lock, self.group_lock):
            if lock is not None:
                lock.release()
        self.emu.stats.save(self.store)


def parse_hex32(text):
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ApiError("Invalid character '%s' at position 0" % text[:1]) from None
    if len(raw) != 32:
        raise ApiError("Invalid string length")
    return raw


def normalize_manifest(m):
    """BackupManifest deserialise + serialise: known keys only, crypt-mode filled."""
    try:
        out = {"backup-type": m["backup-type"], "backup-id": m["backup-id"],
               "backup-time": int(m["backup-time"]), "files": [],
               "signature": m.get("signature"), "unprotected": dict(m.get("unprotected") or {})}
        for f in m["files"]:
            out["files"].append({"filename": f["filename"], "crypt-mode": f.get("crypt-mode", "none"),
                                 "size": int(f["size"]), "csum": f["csum"]})
    except (KeyError, TypeError, ValueError) as err:
        raise ApiError("missing field %s" % err) from None
    return out


def archive_type(name):
    if name.endswith(".didx"):
        return "dynamic"
    if name.endswith(".fidx"):
        return "fixed"
    if name.endswith(".blob"):
        return "blob"
    raise ApiError("unknown archive type: %s" % json.dumps(name))


def open_index(path, kind):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ApiError("Unable to open %s index %s - %s" % (kind, rust_path(path), io_error_text(err)))
    idx = parse_index(raw, rust_path(path))
    if idx.kind != kind:
        raise ApiError("Unable to open %s index %s - wrong magic" % (kind, rust_path(path)))
    return idx


def download_response(path):
    """helpers::create_download_response."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ApiError("open file %s failed - not found" % rust_path(path), 404) from None
    except OSError as err:
        raise ApiError("open file %s failed: %s" % (rust_path(path), io_error_text(err)))
    return 200, "application/octet-stream", data


# ------------------------------------------------------------------ reader session

class ReaderSession:
    def __init__(self, emu, store, path, snap_lock):
        self.emu = emu
        self.store = store
        self.path = path
        self.snap_lock = snap_lock
        self.allowed = set()
        self.rec = None
        self.h2 = None

    def handle(self, method, path, query, headers, body, sid):
        routes = {"download": self.download, "chunk": self.chunk, "speedtest": self.speedtest}
        fn = routes.get(path)
        if fn is None:
            raise ApiError("Path '/%s' not found." % path, 404)
        if method != "GET":
            raise ApiError("Method not allowed", 405)
        try:
            return fn(query_params(query))  # all AsyncHttp handlers: URL query only
        except ApiError as err:
            self.rec["errors"].append("%s %s: %s" % (method, path, err.message))
            raise

    def download(self, params):
        p = check_params(params, {"file-name": ARCHIVE})
        name = p["file-name"]
        path = os.path.join(self.path, name)
        kind = archive_type(name)
        if kind in ("fixed", "dynamic"):
            idx = open_index(path, kind)
            for _, _, digest in idx.entries:
                self.allowed.add(digest)
        out = download_response(path)
        self.rec["files_downloaded"].append(name)
        return out

    def chunk(self, params):
        p = check_params(params, {"digest": DIGEST})
        digest = bytes.fromhex(p["digest"])
        if digest not in self.allowed:
            time.sleep(self.emu.error_delay)
            raise ApiError("download chunk %s not allowed" % p["digest"], 401)
        path = self.store.chunk_path(p["digest"])
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise ApiError("reading file %s failed: %s" % (rust_path(path), io_error_text(err)))
        self.rec["chunks_downloaded"] += 1
        return 200, "application/octet-stream", data

    def speedtest(self, params):
        return 200, "application/octet-stream", b"A" * (1024 * 1024)

    def end(self):
        self.snap_lock.release()
        self.rec["state"] = "closed"
        self.emu.stats.save(self.store)


# ------------------------------------------------------------------ HTTP/1 + REST

class Request:
    def __init__(self, method, target, version, headers, body):
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers
        self.body = body


class Http1Connection:
    def __init__(self, emu, sock):
        self.emu = emu
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError
        self.buf += data

    def read_request(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise EOFError
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise EOFError
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if headers.get("expect", "").lower() == "100-continue":  # libcurl, bodies > 1 KiB
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                line, _, rest = bytes(self.buf).partition(b"\r\n")
                self.buf = bytearray(rest)
                n = int(line.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    self._fill()
                body += self.buf[:n]
                self.buf = self.buf[n + 2:]
                if n == 0:
                    break
            body = bytes(body)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill()
            body = bytes(self.buf[:n])
            self.buf = self.buf[n:]
        return Request(parts[0], parts[1], parts[2], headers, body)

    def respond(self, status, body, ctype="application/json;charset=UTF-8", extra=None, close=False):
        reason = {101: "Switching Protocols", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
                  403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                  500: "Internal Server Error"}.get(status, "Status")
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        if status != 101:
            lines.append("Content-Type: %s" % ctype)
            lines.append("Content-Length: %d" % len(body))
        for k, v in (extra or []):
            lines.append("%s: %s" % (k, v))
        if close:
            lines.append("Connection: close")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def serve(self):
        try:
            while True:
                try:
                    req = self.read_request()
                except (EOFError, ValueError, OSError, ssl.SSLError):
                    return
                if self.emu.faults.get("garbage-rest") and req.path != "/api2/json/emulator/faults":
                    self.respond(200, b"\x00garbage{not json", ctype="application/json;charset=UTF-8")
                    continue
                if req.headers.get("upgrade") is not None or req.path in ("/api2/json/backup", "/api2/json/reader"):
                    self.upgrade(req)
                    return
                try:
                    data = self.emu.rest(req)
                    self.respond(200, data)
                except ApiError as err:
                    if err.status == 401:
                        time.sleep(self.emu.error_delay)
                    self.respond(err.status, err.message.encode())
                except Exception as err:  # an emulator bug: say so, keep the connection
                    traceback.print_exc()
                    self.respond(500, ("internal error: %s" % err).encode())
                if req.headers.get("connection", "").lower() == "close":
                    return
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def upgrade(self, req):
        emu = self.emu
        session = None
        try:
            authid = emu.auth.check_request(req.method, req.headers)
            if req.method != "GET":
                raise ApiError("Method not allowed", 405)
            if req.path == "/api2/json/backup":
                session = emu.start_backup(authid, req)
            elif req.path == "/api2/json/reader":
                session = emu.start_reader(authid, req)
            else:
                raise ApiError("Path '%s' not found." % req.path, 404)
        except ApiError as err:
            if err.status == 401:
                time.sleep(emu.error_delay)
            self.respond(err.status, err.message.encode(), close=True)
            return
        except Exception as err:
            traceback.print_exc()
            self.respond(500, ("internal error: %s" % err).encode(), close=True)
            return
        if emu.faults.get("garbage-on-upgrade"):
            self.sock.sendall(b"HTTP/1.1 garbage\r\n\x00\xff\xfe" + os.urandom(64))
            session.end()
            return
        proto = BACKUP_PROTOCOL if isinstance(session, BackupSession) else READER_PROTOCOL
        try:
            self.respond(101, b"", extra=[("Connection", "upgrade"), ("Upgrade", proto)])
            svc = H2Service(self.sock, bytes(self.buf), session.handle, emu)
            session.h2 = svc
            svc.run()
        except ConnectionKilled:
            pass
        except (OSError, ssl.SSLError) as err:
            log("session connection error: %s" % err)
        finally:
            session.end()


def check_upgrade(req, protocol):
    """The Upgrade header and HTTP version checks of both upgrade handlers."""
    proto = req.headers.get("upgrade")
    if proto is None:
        raise ApiError("missing Upgrade header")
    if proto != protocol:
        raise ApiError("invalid protocol name")
    if not req.version.startswith("HTTP/1"):
        raise ApiError("unexpected http version '%s' (expected version < 2)" % req.version)


def session_query(req, extra):
    """Query parameters of an upgrade request, checked against the common schema."""
    schema = {"store": STORE, "ns": NS, "backup-type": BTYPE, "backup-id": BID,
              "backup-time": BTIME, "debug": _bool(True)}
    schema.update(extra)
    return check_params(query_params(req.query), schema)


class Emulator:
    def __init__(self, args, stores, auth):
        self.args = args
        self.stores = stores
        self.auth = auth
        self.faults = Faults(args)
        self.stats = Stats()
        self.error_delay = args.error_delay
        self.lock = threading.Lock()

    # -- faults that end a connection
    def apply_connection_fault(self, fault, svc, sid):
        log("fault injection: %s" % fault)
        if fault == "exit-after-chunks":
            os._exit(17)
        if fault == "reset-after-chunks":
            svc.reset(sid)
            return
        if fault == "goaway-after-chunks":
            svc.conn.close_connection(h2.errors.ErrorCodes.INTERNAL_ERROR)
            svc.send()
            raise ConnectionKilled()
        if fault == "garbage-after-chunks":
            svc.send()
            svc.sock.sendall(b"\x00\x00\x10\x07garbage" + os.urandom(48))
        try:
            svc.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise ConnectionKilled()

    def store(self, name):
        st = self.stores.get(name)
        if st is None:
            raise ApiError("datastore '%s' does not exist." % name)
        return st

    # -- upgrade checks (src/api2/backup/mod.rs, src/api2/reader/mod.rs)
    def start_backup(self, authid, req):
        p = session_query(req, {"benchmark": _bool(True)})
        self.auth.require(authid, "Datastore.Backup", p["store"])
        store = self.store(p["store"])
        check_upgrade(req, BACKUP_PROTOCOL)
        ns = p.get("ns", "")
        if not os.path.isdir(store.ns_path(ns)):
            raise ApiError("namespace not found", 404)
        btype, bid, btime = p["backup-type"], p["backup-id"], p["backup-time"]
        benchmark = p.get("benchmark", False)
        if btype == "host" and bid == "benchmark":
            if not benchmark:
                raise ApiError("unable to run benchmark without --benchmark flags")
        elif benchmark:
            raise ApiError("benchmark flags is only allowed on 'host/benchmark'")
        with self.lock:
            gpath = store.group_path(ns, btype, bid)
            os.makedirs(os.path.dirname(gpath), exist_ok=True)
            created = False
            try:
                os.mkdir(gpath)
                created = True
            except FileExistsError:
                pass
            glock = DirLock(gpath, "backup group", "another backup is already running")
            try:
                if created:
                    with open(os.path.join(gpath, "owner"), "x") as f:
                        f.write(authid + "\n")
                owner = store.get_owner(ns, btype, bid)
                if not owner_ok(owner, authid) and not benchmark:
                    raise ApiError("backup owner check failed (%s != %s)" % (authid, owner))
                last = store.last_backup(ns, btype, bid)
                if last is not None:
                    manifest, _ = store.load_manifest(last[1])
                    vs = (manifest.get("unprotected") or {}).get("verify_state")
                    if isinstance(vs, dict) and vs.get("state") == "failed":
                        last = None
                session = BackupSession(self, store, authid, ns, btype, bid, btime, glock)
                session.benchmark = benchmark
                if last is not None:
                    if btime <= last[0]:
                        raise ApiError("backup timestamp is older than last backup.")
                    session.last_lock = DirLock(last[1], "snapshot",
                                                "base snapshot is already locked by another operation",
                                                shared=True)
                    session.last = last
                try:
                    os.mkdir(session.path)
                    is_new = True
                except FileExistsError:
                    is_new = False
                session.snap_lock = DirLock(session.path, "snapshot",
                                            "internal error - tried creating snapshot that's already in use")
                if not is_new:
                    session.snap_lock.release()
                    if session.last_lock:
                        session.last_lock.release()
                    raise ApiError("backup directory already exists.")
            except BaseException:
                glock.release()
                raise
        session.rec = self.stats.new(store, protocol="backup", auth_id=authid,
                                     snapshot="%s/%s/%s" % (btype, bid, time_string(btime)),
                                     ns=ns, previous=time_string(session.last[0]) if session.last else None)
        return session

    def start_reader(self, authid, req):
        p = session_query(req, {})
        privs = self.auth.privs(authid)
        priv_read = "Datastore.Read" in privs
        if not priv_read and "Datastore.Backup" not in privs:
            raise ApiError("no permissions on /datastore/%s" % p["store"])
        store = self.store(p["store"])
        check_upgrade(req, READER_PROTOCOL)
        ns = p.get("ns", "")
        btype, bid, btime = p["backup-type"], p["backup-id"], p["backup-time"]
        if not priv_read:
            try:
                owner = store.get_owner(ns, btype, bid)
            except OSError as err:
                raise ApiError(io_error_text(err)) from None
            if not owner_ok(owner, authid):
                raise ApiError("backup owner check failed!")
        path = store.snapshot_path(ns, btype, bid, btime)
        if not os.path.isdir(path):
            raise ApiError("snapshot %s/%s/%s does not exist." % (btype, bid, time_string(btime)))
        lock = DirLock(path, "snapshot", "locked by another operation", shared=True)
        session = ReaderSession(self, store, path, lock)
        session.rec = self.stats.new(store, protocol="reader", auth_id=authid,
                                     snapshot="%s/%s/%s" % (btype, bid, time_string(btime)), ns=ns)
        return session

    # -- REST
    def rest(self, req):
        path = req.path
        if req.method == "POST" and path == "/api2/json/access/ticket":
            params = request_params(req.query, req.headers, req.body)
            username = params.get("username")
            password = params.get("password")
            if not isinstance(username, str):
                raise ApiError("parameter verification errors\n\nparameter 'username': parameter is "
                               "missing and it is not optional.\n")
            self.auth.login(username, password)
            return json_data({"username": username, "ticket": self.auth.make_ticket(username),
                              "CSRFPreventionToken": self.auth.make_csrf(username)})
        authid = self.auth.check_request(req.method, req.headers)
        if req.method == "GET" and path == "/api2/json/version":
            return json_data({"version": "3.2", "release": "4", "repoid": "cairn-pbs-emulator"})
        if path.startswith("/api2/json/emulator/"):
            if "Sys.Audit" not in self.auth.privs(authid):
                raise ApiError("permission check failed", 403)
            what = path[len("/api2/json/emulator/"):]
            if req.method == "GET" and what == "stats":
                return json_data(self.stats.snapshot())
            if req.method == "POST" and what == "faults":
                self.faults.set(request_params(req.query, req.headers, req.body))
                return json_data(None)
            raise ApiError("Path '%s' not found." % path, 404)
        if req.method == "GET" and path == "/api2/json/admin/datastore":
            return json_data([{"store": n} for n in sorted(self.stores)])
        m = re.match(r"^/api2/json/admin/datastore/([^/]+)/([a-z\-]+)$", path)
        if not m:
            raise ApiError("Path '%s' not found." % path, 404)
        store = self.store(urllib.parse.unquote(m.group(1)))
        what = m.group(2)
        if (req.method, what) == ("POST", "upload-backup-log"):  # AsyncHttp: query + raw blob body
            with self.lock:
                return self.upload_backup_log(store, authid, query_params(req.query), req.body)
        params = request_params(req.query, req.headers, req.body)
        handlers = {("GET", "groups"): self.list_groups, ("DELETE", "groups"): self.delete_group,
                    ("GET", "snapshots"): self.list_snapshots, ("DELETE", "snapshots"): self.delete_snapshot,
                    ("GET", "files"): self.list_files, ("POST", "prune"): self.prune,
                    ("GET", "protected"): self.get_protection, ("PUT", "protected"): self.update_protection,
                    ("GET", "notes"): self.get_notes, ("PUT", "notes"): self.update_notes,
                    ("GET", "status"): self.status}
        fn = handlers.get((req.method, what))
        if fn is None:
            raise ApiError("Path '%s' not found." % path, 404)
        with self.lock:
            return fn(store, authid, params)

    def _list_all(self, authid, store):
        """Audit lists everything; Backup only owned groups; else 403."""
        privs = self.auth.privs(authid)
        if "Datastore.Audit" in privs:
            return True
        if "Datastore.Backup" in privs:
            return False
        raise ApiError("permission check failed", 403)

    def _group_access(self, store, authid, ns, btype, bid, full, partial):
        privs = self.auth.privs(authid)
        if full & privs:
            return
        if partial & privs:
            try:
                owner = store.get_owner(ns, btype, bid)
            except OSError:
                raise ApiError("permission check failed", 403) from None
            if owner_ok(owner, authid):
                return
        raise ApiError("permission check failed", 403)

    def _snapshot_files(self, path):
        manifest, msize = None, 0
        files = []
        try:
            manifest, msize = load_manifest(path)
            for f in manifest.get("files", []):
                files.append({"filename": f["filename"], "crypt-mode": f.get("crypt-mode", "none"),
                              "size": f["size"]})
            files.append({"filename": MANIFEST,
                          "crypt-mode": "sign-only" if manifest.get("signature") else "none",
                          "size": msize})
        except (ApiError, KeyError, TypeError):
            manifest = None
        seen = {f["filename"] for f in files}
        for name in sorted(os.listdir(path)):
            if name not in seen and name.endswith((".blob", ".didx", ".fidx")):
                files.append({"filename": name})
        return manifest, files

    def list_groups(self, store, authid, params):
        p = check_params(params, {"ns": NS})
        ns = p.get("ns", "")
        list_all = self._list_all(authid, store)
        out = []
        for btype, bid in store.list_groups(ns):
            try:
                owner = store.get_owner(ns, btype, bid)
            except OSError:
                continue
            if not list_all and not owner_ok(owner, authid):
                continue
            snaps = store.list_snapshots(ns, btype, bid)
            if not snaps:
                continue
            finished = [s for s in snaps if s[2]]
            last = finished[-1] if finished else snaps[-1]
            _, files = self._snapshot_files(last[1])
            out.append({"backup-type": btype, "backup-id": bid, "last-backup": last[0],
                        "backup-count": len(snaps), "files": [f["filename"] for f in files],
                        "owner": owner})
        return json_data(out)

    def list_snapshots(self, store, authid, params):
        p = check_params(params, {"ns": NS, "backup-type": _enum(True, TYPES), "backup-id": _str(True, SAFE_ID)})
        ns = p.get("ns", "")
        list_all = self._list_all(authid, store)
        out = []
        for btype, bid in store.list_groups(ns):
            if p.get("backup-type", btype) != btype or p.get("backup-id", bid) != bid:
                continue
            try:
                owner = store.get_owner(ns, btype, bid)
            except OSError:
                continue
            if not list_all and not owner_ok(owner, authid):
                continue
            for t, path, _ in store.list_snapshots(ns, btype, bid):
                manifest, files = self._snapshot_files(path)
                item = {"backup-type": btype, "backup-id": bid, "backup-time": t, "files": files,
                        "owner": owner, "protected": os.path.exists(os.path.join(path, ".protected"))}
                if manifest is not None:
                    item["size"] = sum(f.get("size", 0) for f in files)
                    unp = manifest.get("unprotected") or {}
                    if isinstance(unp.get("notes"), str):
                        item["comment"] = unp["notes"].split("\n")[0]
                    if unp.get("key-fingerprint"):
                        item["fingerprint"] = unp["key-fingerprint"]
                    if isinstance(unp.get("verify_state"), dict):
                        item["verification"] = unp["verify_state"]
                out.append(item)
        return json_data(out)

    def list_files(self, store, authid, params):
        p = check_params(params, {"ns": NS, "backup-type": BTYPE, "backup-id": BID, "backup-time": BTIME})
        ns = p.get("ns", "")
        self._group_access(store, authid, ns, p["backup-type"], p["backup-id"],
                           {"Datastore.Audit", "Datastore.Read"}, {"Datastore.Backup"})
        path = store.snapshot_path(ns, p["backup-type"], p["backup-id"], p["backup-time"])
        manifest, size = store.load_manifest(path)
        _, files = self._snapshot_files(path)
        return json_data(files)

    def upload_backup_log(self, store, authid, params, body):
        """Store client.log.blob in a snapshot (owner with Datastore.Backup only)."""
        p = check_params(params, {"store": STORE, "ns": NS, "backup-type": BTYPE, "backup-id": BID,
                                  "backup-time": BTIME})
        ns = p.get("ns", "")
        self._group_access(store, authid, ns, p["backup-type"], p["backup-id"], set(), {"Datastore.Backup"})
        path = os.path.join(store.snapshot_path(ns, p["backup-type"], p["backup-id"], p["backup-time"]),
                            "client.log.blob")
        if os.path.exists(path):
            raise ApiError("backup already contains a log.")
        blob_header_len(body)
        blob_verify_crc(body)
        try:
            atomic_write(path, body)
        except OSError as err:
            raise ApiError(io_error_text(err)) from None
        return json_data(None)

    def _destroy_snapshot(self, path):
        """BackupDir::destroy(false): the snapshot lock, the manifest lock,
        and only then the protected check."""
        lock = DirLock(path, "snapshot", "possibly running or in use")
        mlock = None
        try:
            mlock = ManifestLock(path)
            if os.path.exists(os.path.join(path, ".protected")):
                raise ApiError("cannot remove protected snapshot")
            try:
                shutil.rmtree(path)
            except OSError as err:
                raise ApiError("removing backup snapshot %s failed - %s" % (
                    rust_path(path), io_error_text(err))) from None
        finally:
            if mlock:
                mlock.release()
            lock.release()

    def delete_snapshot(self, store, authid, params):
        p = check_params(params, {"ns": NS, "backup-type": BTYPE, "backup-id": BID, "backup-time": BTIME})
        ns = p.get("ns", "")
        self._group_access(store, authid, ns, p["backup-type"], p["backup-id"],
                           {"Datastore.Modify"}, {"Datastore.Prune"})
        path = store.snapshot_path(ns, p["backup-type"], p["backup-id"], p["backup-time"])
        self._destroy_snapshot(path)  # a missing one fails at its lock, as upstream
        return json_data(None)

    # protected / notes (src/api2/admin/datastore.rs get_protection,
    # update_protection, get_notes, update_notes): read with Datastore.Audit
    # or as the group's owner with Datastore.Backup; change with
    # Datastore.Modify or as the owner with Datastore.Backup.
    def _snapshot_arg(self, store, authid, params, full, extra=None):
        schema = {"ns": NS, "backup-type": BTYPE, "backup-id": BID, "backup-time": BTIME}
        schema.update(extra or {})
        p = check_params(params, schema)
        ns = p.get("ns", "")
        self._group_access(store, authid, ns, p["backup-type"], p["backup-id"], full,
                           {"Datastore.Backup"})
        return p, store.snapshot_path(ns, p["backup-type"], p["backup-id"], p["backup-time"])

    def get_protection(self, store, authid, params):
        # upstream only looks for the file: a missing snapshot is "false"
        _, path = self._snapshot_arg(store, authid, params, {"Datastore.Audit"})
        return json_data(os.path.exists(os.path.join(path, ".protected")))

    def update_protection(self, store, authid, params):
        # DataStore::update_protection: the snapshot must exist, then its
        # directory lock (refused while a backup or a reader holds it)
        p, path = self._snapshot_arg(store, authid, params, {"Datastore.Modify"},
                                     {"protected": _bool(False)})
        if not os.path.exists(path):
            raise ApiError("snapshot %s/%s/%s does not exist!" % (
                p["backup-type"], p["backup-id"], time_string(p["backup-time"])))
        lock = DirLock(path, "snapshot", "possibly running or in use")
        try:
            marker = os.path.join(path, ".protected")
            if p["protected"]:
                open(marker, "a").close()
            elif os.path.exists(marker):
                os.unlink(marker)
        finally:
            lock.release()
        return json_data(None)

    def get_notes(self, store, authid, params):
        _, path = self._snapshot_arg(store, authid, params, {"Datastore.Audit"})
        manifest, _ = load_manifest(path)
        notes = (manifest.get("unprotected") or {}).get("notes")
        return json_data(notes if isinstance(notes, str) else "")

    def update_notes(self, store, authid, params):
        # BackupDir::update_manifest: only the manifest lock (upstream
        # creates its lock directory, so a missing snapshot fails at
        # load_manifest), every error prefixed as set_notes does
        _, path = self._snapshot_arg(store, authid, params, {"Datastore.Modify"},
                                     {"notes": _str(False)})
        lock = None
        try:
            if not os.path.isdir(path):
                load_manifest(path)  # raises upstream's "unable to load blob" error
            lock = ManifestLock(path)
            manifest, _ = load_manifest(path)
            manifest = normalize_manifest(manifest)
            manifest["unprotected"]["notes"] = params["notes"]
            atomic_write(os.path.join(path, MANIFEST),
                         blob_encode(manifest_canonical_dump(manifest).encode(), True))
        except ApiError as err:
            raise ApiError("unable to update manifest blob - %s" % err.message) from None
        finally:
            if lock:
                lock.release()
        return json_data(None)

    def delete_group(self, store, authid, params):
        p = check_params(params, {"ns": NS, "backup-type": BTYPE, "backup-id": BID})
        ns = p.get("ns", "")
        self._group_access(store, authid, ns, p["backup-type"], p["backup-id"],
                           {"Datastore.Modify"}, {"Datastore.Prune"})
        gpath = store.group_path(ns, p["backup-type"], p["backup-id"])
        glock = DirLock(gpath, "backup group", "possible running backup")
        try:
            protected = False
            for _, path, _ in store.list_snapshots(ns, p["backup-type"], p["backup-id"]):
                if os.path.exists(os.path.join(path, ".protected")):
                    protected = True
                    continue
                self._destroy_snapshot(path)
            if protected:
                raise ApiError("group only partially deleted due to protected snapshots")
            shutil.rmtree(gpath)
        finally:
            glock.release()
        return json_data(None)

    def prune(self, store, authid, params):
        keys = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
        schema = {"ns": NS, "backup-type": BTYPE, "backup-id": BID, "dry-run": _bool(True),
                  "use-task": _bool(True)}
        for k in keys:
            schema[k] = _int(True, 1)
        p = check_params(params, schema)
        ns = p.get("ns", "")
        btype, bid = p["backup-type"], p["backup-id"]
        self._group_access(store, authid, ns, btype, bid, {"Datastore.Modify"}, {"Datastore.Prune"})
        snaps = store.list_snapshots(ns, btype, bid)
        marks = compute_prune(snaps, {k: p[k] for k in keys if k in p})
        out = []
        for (t, path, _), mark in zip(snaps, marks):
            out.append({"backup-type": btype, "backup-id": bid, "backup-time": t,
                        "keep": mark != "remove", "protected": mark == "protected"})
        if not p.get("dry-run", False):
            for (t, path, _), mark in zip(snaps, marks):
                if mark == "remove":
                    try:
                        self._destroy_snapshot(path)
                    except ApiError as err:
                        log("prune: %s" % err.message)
        out.sort(key=lambda x: -x["backup-time"])
        return json_data(out)

    def status(self, store, authid, params):
        check_params(params, {"verbose": _bool(True)})
        privs = self.auth.privs(authid)
        if not privs & {"Datastore.Audit", "Datastore.Backup"}:
            raise ApiError("permission check failed", 403)
        total, used, avail = store.usage()
        return json_data({"total": total, "used": used, "avail": avail})


def compute_prune(snaps, opts):
    """pbs-datastore/src/prune.rs compute_prune_info; snaps sorted oldest first.
    Returns one mark per snapshot: keep, keep-partial, protected, remove."""
    order = list(range(len(snaps)))[::-1]  # newest first
    mark = {}
    protected = {i: os.path.exists(os.path.join(snaps[i][1], ".protected")) for i in order}
    if not opts:
        return ["protected" if protected[i] else "keep" for i in range(len(snaps))]
    keep_unfinished = True
    for i in order:
        if snaps[i][2]:
            keep_unfinished = False
        else:
            mark[i] = "keep-partial" if keep_unfinished else "remove"
            keep_unfinished = False

    def local(fmt):
        return lambda i: time.strftime(fmt, time.localtime(snaps[i][0]))

    selectors = [("keep-last", lambda i: time_string(snaps[i][0])),
                 ("keep-hourly", local("%Y/%m/%d/%H")), ("keep-daily", local("%Y/%m/%d")),
                 ("keep-weekly", local("%G/%V")), ("keep-monthly", local("%Y/%m")),
                 ("keep-yearly", local("%Y"))]
    for key, sel in selectors:
        if key not in opts:
            continue
        keep = opts[key]
        include, already = set(), set()
        for i in order:
            if mark.get(i) == "keep":
                already.add(sel(i))
        for i in order:
            if i in mark:
                continue
            if protected[i]:
                mark[i] = "protected"
                continue
            sid = sel(i)
            if sid in already:
                continue
            if sid not in include:
                if len(include) >= keep:
                    break
                include.add(sid)
                mark[i] = "keep"
            else:
                mark[i] = "remove"
    return ["protected" if protected[i] else mark.get(i, "remove") for i in range(len(snaps))]


# ------------------------------------------------------------------ main

def make_self_signed(directory):
    """Generate an EC P-256 self-signed certificate for 127.0.0.1/localhost."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def cert_fingerprint(cert_path):
    with open(cert_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return ":".join("%02x" % b for b in hashlib.sha256(der).digest())


def parse_args(argv):
    ap = argparse.ArgumentParser(description="PBS emulator for cairn tests (see README.md)")
    ap.add_argument("--datastore", action="append", required=True, metavar="[NAME=]DIR",
                    help="datastore directory (repeatable); NAME defaults to 'store'")
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one)")
    ap.add_argument("--cert", help="PEM certificate (default: generate a self-signed one)")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--cert-out", metavar="DIR", help="write the generated cert.pem/key.pem here")
    ap.add_argument("--print-fingerprint", action="store_true",
                    help="print the certificate's SHA-256 fingerprint as a line of its own "
                         "before the READY line")
    ap.add_argument("--ready-file", help="write {port, fingerprint, pid} JSON here when listening")
    ap.add_argument("--user", action="append", default=[], metavar="USER@REALM:PASSWORD")
    ap.add_argument("--token", action="append", default=[], metavar="USER@REALM!NAME:SECRET")
    ap.add_argument("--acl", action="append", default=[], metavar="AUTHID=ROLE",
                    help="role of an auth id: " + ", ".join(sorted(ROLES)) + " (default admin)")
    ap.add_argument("--auth-config", help='JSON {"users":{id:pw},"tokens":{id:secret},"acl":{id:role}}')
    ap.add_argument("--full-chunk-dirs", action="store_true",
                    help="pre-create all 65536 .chunks/XXXX directories as upstream does")
    ap.add_argument("--error-delay", type=float, default=0.0,
                    help="seconds to wait before 401 answers (upstream: 3)")
    g = ap.add_argument_group("fault injection (chunk counts are server-wide)")
    g.add_argument("--die-after-chunks", type=int, metavar="N",
                   help="after N chunk uploads, close the socket on the next one")
    g.add_argument("--exit-after-chunks", type=int, metavar="N", help="after N chunk uploads, exit(17)")
    g.add_argument("--garbage-after-chunks", type=int, metavar="N",
                   help="after N chunk uploads, write non-HTTP/2 bytes and close")
    g.add_argument("--reset-after-chunks", type=int, metavar="N",
                   help="reset (RST_STREAM) the stream of chunk upload number N+1 only")
    g.add_argument("--goaway-after-chunks", type=int, metavar="N",
                   help="after N chunk uploads, send GOAWAY(INTERNAL_ERROR) and close")
    g.add_argument("--garbage-on-upgrade", action="store_true",
                   help="answer the protocol upgrade with garbage bytes")
    g.add_argument("--garbage-rest", action="store_true", help="answer REST calls with 200 and a non-JSON body")
    g.add_argument("--delay", type=float, metavar="SECONDS", help="sleep before each HTTP/2 answer")
    g.add_argument("--fail-finish", action="store_true", help="refuse POST finish (400)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # SIGTERM ends the server like ^C, so the generated certificate's
    # temporary directory is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if args.cert:
        cert, key = args.cert, args.key or args.cert
    elif args.cert_out:
        os.makedirs(args.cert_out, exist_ok=True)
        cert, key = make_self_signed(args.cert_out)
    else:
        tmpdir = tempfile.mkdtemp(prefix="pbs-emu-cert-")
        atexit.register(shutil.rmtree, tmpdir, True)
        cert, key = make_self_signed(tmpdir)
    fingerprint = cert_fingerprint(cert)

    users, tokens, acl = {}, {}, {}
    if args.auth_config:
        with open(args.auth_config) as f:
            cfg = json.load(f)
        users.update(cfg.get("users", {}))
        tokens.update(cfg.get("tokens", {}))
        acl.update(cfg.get("acl", {}))
    for u in args.user:
        name, _, pw = u.partition(":")
        users[name] = pw
    for t in args.token:
        name, _, secret = t.partition(":")
        tokens[name] = secret
    for a in args.acl:
        name, _, role = a.rpartition("=")
        if role not in ROLES:
            sys.exit("unknown role '%s'" % role)
        acl[name] = role
    if not users and not tokens:
        users["root@pam"] = "root"

    stores = {}
    for spec in args.datastore:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "store", spec
        stores[name] = Datastore(name, path, args.full_chunk_dirs)

    emu = Emulator(args, stores, Auth(users, tokens, acl))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    lsock = socket.socket(socket.AF_INET6 if ":" in args.listen else socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.listen, args.port))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    if args.ready_file:
        atomic_write(args.ready_file, json.dumps({"port": port, "fingerprint": fingerprint,
                                                  "pid": os.getpid(), "cert": cert}).encode())
    if args.print_fingerprint:
        print(fingerprint, flush=True)
    print("READY %d %s" % (port, fingerprint), flush=True)

    def serve(conn):
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(None)
            tls = ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as err:
            log("TLS handshake failed: %s" % err)
            conn.close()
            return
        Http1Connection(emu, tls).serve()

    try:
        while True:
            conn, _ = lsock.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
