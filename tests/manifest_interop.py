#!/usr/bin/python3
"""Checks manifests written by cairn with an independent implementation of
spec/manifest.md (Python json/hmac): the text equals serde_json's pretty
form with sorted keys, and the signature is HMAC-SHA256(id_key, canonical
JSON) also for names with quotes, backslashes, control characters and
non-ASCII text.

usage: manifest_interop.py PATH/TO/manifest_tool
"""
import hashlib
import hmac
import json
import subprocess
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

KEY = bytes(range(7, 39))


def fingerprint(id_key):
    fp = hashlib.sha256(hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest() + id_key).digest()
    return ":".join("%02x" % b for b in fp)


def main():
    tool = sys.argv[1]
    files = [
        ("root.pxar.didx", "123456789012", "encrypt"),
        ('we"ird\\na\tme \u00e9\u4e2d/x.blob'.replace("/", "_"), "7", "sign-only"),
        ("ctl\x01\x1f\x7f.fidx", "0", "none"),
        ("catalog.pcat1.didx", "99", "encrypt"),
    ]
    args = [tool, KEY.hex(), "host", "my-host_1.x", "1700000000"]
    for f in files:
        args += list(f)
    env = {"NOTES": "line1\nline2 \u00fc \"q\""}
    text = subprocess.run(args, capture_output=True, check=True, env=env).stdout.decode()
    obj = json.loads(text)
    pretty = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    assert text == pretty, "not serde_json's pretty form:\n" + text + "\n---\n" + pretty
    assert [f["filename"] for f in obj["files"]] == [f[0] for f in files]
    assert [f["size"] for f in obj["files"]] == [int(f[1]) for f in files]
    for f in obj["files"]:
        assert f["csum"] == hashlib.sha256(f["filename"].encode()).hexdigest()
    signed = {k: v for k, v in obj.items() if k not in ("signature", "unprotected")}
    canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    id_key = PBKDF2HMAC(hashes.SHA256(), 32, b"_id_key", 10).derive(KEY)
    want = hmac.new(id_key, canonical, hashlib.sha256).hexdigest()
    assert obj["signature"] == want, "signature"
    assert obj["unprotected"]["key-fingerprint"] == fingerprint(id_key)
    assert obj["unprotected"]["notes"] == env["NOTES"]
    # unsigned: signature null, no fingerprint
    args[1] = "-"
    obj = json.loads(subprocess.run(args, capture_output=True, check=True).stdout)
    assert obj["signature"] is None and obj["unprotected"] == {}
    print("signed and unsigned manifests verified by an independent implementation")


if __name__ == "__main__":
    main()
