#!/usr/bin/python3
"""Checks key files created by cairn with an independent reader written
from spec/keyfile.md and upstream's KeyConfig (Python cryptography): JSON
shape and key order, KDF defaults, 32-byte salt, data = IV || TAG || CT,
the recovered key, the fingerprint, the timestamp form.

usage: keyfile_interop.py PATH/TO/keyfile_tool
"""
import base64
import hashlib
import json
import re
import subprocess
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PW = b"interop-password"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


def fingerprint(key):
    id_key = PBKDF2HMAC(hashes.SHA256(), 32, b"_id_key", 10).derive(key)
    fp = hashlib.sha256(hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest() + id_key).digest()
    return ":".join("%02x" % b for b in fp)


def main():
    tool = sys.argv[1]
    for kdf in ("none", "scrypt", "pbkdf2"):
        p = subprocess.run([tool, kdf, PW.decode()], capture_output=True, check=True)
        text, key = p.stdout.decode(), bytes.fromhex(p.stderr.decode().strip())
        assert "\n" not in text and ": " not in text, "not compact"
        obj = json.loads(text)
        assert list(obj) == ["kdf", "created", "modified", "data", "fingerprint"], list(obj)
        assert TIME.match(obj["created"]) and obj["created"] == obj["modified"], obj["created"]
        data = base64.b64decode(obj["data"], validate=True)
        if kdf == "none":
            assert obj["kdf"] is None
            got = data
        else:
            if kdf == "scrypt":
                params = obj["kdf"]["Scrypt"]
                assert list(params) == ["n", "r", "p", "salt"]
                assert (params["n"], params["r"], params["p"]) == (65536, 8, 1)
                salt = base64.b64decode(params["salt"], validate=True)
                dk = Scrypt(salt=salt, length=32, n=65536, r=8, p=1).derive(PW)
            else:
                params = obj["kdf"]["PBKDF2"]
                assert list(params) == ["iter", "salt"] and params["iter"] == 65535
                salt = base64.b64decode(params["salt"], validate=True)
                dk = PBKDF2HMAC(hashes.SHA256(), 32, salt, 65535).derive(PW)
            assert len(salt) == 32 and len(data) == 64
            iv, tag, ct = data[:16], data[16:32], data[32:]
            got = AESGCM(dk).decrypt(iv, ct + tag, b"")
        assert got == key, "recovered key differs"
        assert obj["fingerprint"] == fingerprint(key), "fingerprint"
    print("3 key files (none, scrypt, pbkdf2) read back by an independent implementation")


if __name__ == "__main__":
    main()
