#!/usr/bin/python3
"""Checks cairn's DataBlob encoder with an independent decoder (Python's
zlib, zstandard and cryptography, written from spec/datablob.md): every
variant, several data kinds; magic, CRC over the right bytes, IV/tag
layout, zstd frame flags as the official client writes them, keyed digest.

usage: blob_interop.py PATH/TO/blob_tool
"""
import hashlib
import os
import random
import subprocess
import sys
import zlib

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

MAGIC = {
    "plain": bytes([66, 171, 56, 7, 190, 131, 112, 161]),
    "zstd": bytes([49, 185, 88, 66, 111, 182, 163, 127]),
    "enc": bytes([123, 103, 133, 190, 34, 45, 76, 240]),
    "enczstd": bytes([230, 89, 27, 191, 11, 191, 216, 11]),
}
KEY = bytes(range(100, 132))


def unzstd(frame):
    out = zstandard.ZstdDecompressor().decompressobj().decompress(frame)
    return out


def frame_flags(frame):
    assert frame[:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
    fhd = frame[4]
    single_segment = bool(fhd & 0x20)
    fcs_flag = fhd >> 6
    has_size = single_segment or fcs_flag != 0
    return fhd, has_size


def check(tool, data, key, compress):
    args = [tool, "-c", str(compress)]
    if key:
        args += ["-k", key.hex()]
    p = subprocess.run(args, input=data, capture_output=True, check=True)
    blob, digest = p.stdout, p.stderr.decode().strip()
    magic = blob[:8]
    kind = [k for k, v in MAGIC.items() if v == magic]
    assert kind, "unknown magic"
    kind = kind[0]
    assert (kind in ("enc", "enczstd")) == bool(key), kind
    hdr = 44 if key else 12
    crc = int.from_bytes(blob[8:12], "little")
    assert crc == zlib.crc32(blob[hdr:]), "CRC does not cover exactly the payload"
    payload = blob[hdr:]
    if key:
        iv, tag = blob[12:28], blob[28:44]
        payload = AESGCM(KEY).decrypt(iv, payload + tag, b"")
    if kind in ("zstd", "enczstd"):
        fhd, has_size = frame_flags(payload)
        # plain path: streaming frame without content size (descriptor 0x00);
        # encrypted path: one-shot frame with content size
        assert has_size == (kind == "enczstd"), (kind, hex(fhd))
        if kind == "zstd":
            assert fhd == 0, hex(fhd)
        assert len(payload) < len(data), "kept a compressed form that is not shorter"
        plain = unzstd(payload)
    else:
        plain = payload
    assert plain == data, "content differs"
    # the keep-compressed rule and the frames, against the reference zstd
    if compress == 2 and len(data) > 1:
        if key:
            ref = zstandard.ZstdCompressor(level=1).compress(data)
        else:
            o = zstandard.ZstdCompressor(level=1).compressobj()
            ref = o.compress(data) + o.flush()
        if kind in ("zstd", "enczstd"):
            assert len(ref) < len(data)
            zpayload = blob[hdr:] if not key else AESGCM(KEY).decrypt(blob[12:28], blob[44:] + blob[28:44], b"")
            assert zpayload == ref, "zstd frame differs from the reference encoder"
        else:
            assert len(ref) >= len(data), "upstream would have kept the zstd form"
    if key:
        id_key = PBKDF2HMAC(hashes.SHA256(), 32, b"_id_key", 10).derive(KEY)
        want = hashlib.sha256(data + id_key).hexdigest()
    else:
        want = hashlib.sha256(data).hexdigest()
    assert digest == want, "digest"
    return kind


def main():
    tool = sys.argv[1]
    rnd = random.Random(1)
    text = b"".join(b"%d the quick brown fox jumps over the lazy dog\n" % (i % 97) for i in range(20000))
    sets = {
        "empty": b"",
        "one": b"x",
        "hello": b"hello",
        "text": text,
        "random": bytes(rnd.getrandbits(8) for _ in range(300000)),
        "zeros": bytes(1 << 20),
    }
    seen = set()
    n = 0
    for name, data in sets.items():
        for key in (None, KEY):
            for compress in (0, 1, 2):
                kind = check(tool, data, key, compress)
                seen.add(kind)
                n += 1
    assert seen == set(MAGIC), seen
    print(f"{n} blobs checked with an independent decoder; variants: {sorted(seen)}")


if __name__ == "__main__":
    main()
