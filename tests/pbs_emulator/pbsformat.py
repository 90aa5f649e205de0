"""On-disk and wire formats the PBS emulator needs: DataBlob, .didx/.fidx,
manifest, snapshot time strings.  Written from ../shared/spec (datablob.md,
index-files.md, manifest.md) and upstream pbs-datastore/src/{data_blob.rs,
dynamic_index.rs,fixed_index.rs,manifest.rs}.  Error strings are upstream's.
"""

import hashlib
import json
import os
import struct
import time
import uuid
import zlib

import zstandard


class ApiError(Exception):
    """An error answer: message text and HTTP status (400 unless chosen)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


MAGIC_PLAIN = bytes([66, 171, 56, 7, 190, 131, 112, 161])
MAGIC_ZSTD = bytes([49, 185, 88, 66, 111, 182, 163, 127])
MAGIC_ENCR = bytes([123, 103, 133, 190, 34, 45, 76, 240])
MAGIC_ENCR_ZSTD = bytes([230, 89, 27, 191, 11, 191, 216, 11])
MAGIC_FIDX = bytes([47, 127, 65, 237, 145, 253, 15, 205])
MAGIC_DIDX = bytes([28, 145, 78, 165, 25, 186, 179, 205])

BLOB_HEADER = 12
ENCR_BLOB_HEADER = 44
INDEX_HEADER = 4096
FIXED_CHUNK_SIZE = 4 * 1024 * 1024
MAX_BLOB_PLAIN = 128 * 1024 * 1024


def rust_path(path):
    """Format a path as Rust's {:?} of a PathBuf does (double-quoted)."""
    return json.dumps(str(path))


def io_error_text(err):
    """Format an OSError as Rust's io::Error Display does."""
    return "%s (os error %d)" % (os.strerror(err.errno), err.errno)


def blob_header_len(raw):
    """Validate a raw blob like DataBlob::from_raw; return its header size."""
    if len(raw) < BLOB_HEADER:
        raise ApiError("blob too small (%d bytes)." % len(raw))
    magic = bytes(raw[0:8])
    if magic in (MAGIC_ENCR, MAGIC_ENCR_ZSTD):
        if len(raw) < ENCR_BLOB_HEADER:
            raise ApiError("encrypted blob too small (%d bytes)." % len(raw))
        return ENCR_BLOB_HEADER
    if magic in (MAGIC_PLAIN, MAGIC_ZSTD):
        return BLOB_HEADER
    raise ApiError("unable to parse raw blob - wrong magic")


def blob_is_encrypted(raw):
    return bytes(raw[0:8]) in (MAGIC_ENCR, MAGIC_ENCR_ZSTD)


def blob_compute_crc(raw):
    return zlib.crc32(memoryview(raw)[blob_header_len(raw):]) & 0xFFFFFFFF


def blob_stored_crc(raw):
    return struct.unpack_from("<I", raw, 8)[0]


def blob_verify_crc(raw):
    """DataBlob::load_from_reader: parse and check the CRC."""
    if blob_compute_crc(raw) != blob_stored_crc(raw):
        raise ApiError("Data blob has wrong CRC checksum.")


def blob_set_crc(raw):
    """Return raw (bytearray) with the CRC recomputed, as the server does for chunks."""
    out = bytearray(raw)
    struct.pack_into("<I", out, 8, blob_compute_crc(out))
    return out


def _zstd_decode_all(payload):
    """zstd::stream::decode_all: concatenated frames, no content size needed."""
    dctx = zstandard.ZstdDecompressor()
    out = bytearray()
    reader = dctx.stream_reader(bytes(payload), read_across_frames=True)
    while True:
        piece = reader.read(1 << 20)
        if not piece:
            break
        out += piece
        if len(out) > MAX_BLOB_PLAIN:
            raise ApiError("data blob too large (%d bytes)." % len(out))
    return bytes(out)


def blob_decode_plain(raw, expected_digest=None):
    """DataBlob::decode(None, digest): plain or zstd blob to data."""
    hlen = blob_header_len(raw)
    magic = bytes(raw[0:8])
    if magic == MAGIC_PLAIN:
        data = bytes(raw[hlen:])
    elif magic == MAGIC_ZSTD:
        try:
            data = _zstd_decode_all(memoryview(raw)[hlen:])
        except zstandard.ZstdError as err:
            raise ApiError(str(err))
    else:
        raise ApiError("unable to decrypt blob - missing CryptConfig")
    if expected_digest is not None and hashlib.sha256(data).digest() != expected_digest:
        raise ApiError("detected chunk with wrong digest.")
    return data


def blob_verify_unencrypted(raw, size, digest):
    """DataBlob::verify_unencrypted: digest and length of plain chunks only."""
    if blob_is_encrypted(raw):
        return
    data = blob_decode_plain(raw, digest)
    if size != len(data):
        raise ApiError("detected chunk with wrong length (%d != %d)" % (size, len(data)))


def blob_encode(data, compress=True):
    """Encode an unencrypted blob as DataBlob::encode(data, None, compress)."""
    if compress:
        comp = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(data)
        if len(comp) < len(data):
            return MAGIC_ZSTD + struct.pack("<I", zlib.crc32(comp) & 0xFFFFFFFF) + comp
    return MAGIC_PLAIN + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF) + data


# ---------------------------------------------------------------- indexes

def _index_bytes(magic, body, ctime, extra):
    """Header (magic, v4 uuid, ctime, csum, kind-specific extra at 64) + entries."""
    csum = hashlib.sha256(body).digest()
    head = bytearray(INDEX_HEADER)
    head[0:8] = magic
    head[8:24] = uuid.uuid4().bytes
    struct.pack_into("<q", head, 24, int(ctime if ctime is not None else time.time()))
    head[32:64] = csum
    head[64:64 + len(extra)] = extra
    return bytes(head) + body, csum


def dynamic_index_bytes(entries, ctime=None):
    """entries: list of (end, digest).  Returns (file bytes, csum)."""
    body = b"".join(struct.pack("<Q", end) + dig for end, dig in entries)
    return _index_bytes(MAGIC_DIDX, body, ctime, b"")


def fixed_index_bytes(digests, size, chunk_size, ctime=None):
    """digests: one per slot (None = unset slot, written as zeros)."""
    body = b"".join(d if d is not None else bytes(32) for d in digests)
    return _index_bytes(MAGIC_FIDX, body, ctime, struct.pack("<QQ", size, chunk_size))


class Index:
    """A parsed .didx/.fidx: kind, size, chunk_size, entries [(start, end, digest)]."""

    def __init__(self, kind, size, chunk_size, entries, raw):
        self.kind = kind
        self.size = size
        self.chunk_size = chunk_size
        self.entries = entries
        self.raw = raw

    def csum(self):
        return hashlib.sha256(self.raw[INDEX_HEADER:]).digest()


def parse_index(raw, what):
    """Parse an index file's bytes (what: path text for messages)."""
    if len(raw) < INDEX_HEADER:
        raise ApiError("index too small (%d bytes)" % len(raw))
    magic = bytes(raw[0:8])
    entries = []
    if magic == MAGIC_DIDX:
        if (len(raw) - INDEX_HEADER) % 40:
            raise ApiError("got unexpected file size for %s" % what)
        start = 0
        for off in range(INDEX_HEADER, len(raw), 40):
            end = struct.unpack_from("<Q", raw, off)[0]
            if end < start:
                raise ApiError("dynamic index %s has non-monotonic offsets" % what)
            entries.append((start, end, bytes(raw[off + 8:off + 40])))
            start = end
        return Index("dynamic", start, 0, entries, raw)
    if magic == MAGIC_FIDX:
        size, chunk_size = struct.unpack_from("<QQ", raw, 64)
        if chunk_size == 0 or chunk_size & (chunk_size - 1):
            raise ApiError("fixed index %s has bad chunk size %d" % (what, chunk_size))
        count = (size + chunk_size - 1) // chunk_size
        if len(raw) - INDEX_HEADER != count * 32:
            raise ApiError("got unexpected file size for %s" % what)
        for i in range(count):
            off = INDEX_HEADER + 32 * i
            entries.append((i * chunk_size, min((i + 1) * chunk_size, size), bytes(raw[off:off + 32])))
        return Index("fixed", size, chunk_size, entries, raw)
    raise ApiError("got unknown magic number for %s" % what)


# ---------------------------------------------------------------- names, time

def time_string(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_time_string(text):
    import calendar
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def manifest_canonical_dump(obj):
    """serde_json::to_string_pretty of an untyped (key-sorted) value."""
    return json.dumps(obj, indent=2, sort_keys=True, separators=(",", ": "), ensure_ascii=False)


def atomic_write(path, data):
    tmp = "%s.tmp_%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)
