#!/usr/bin/python3
"""Independent check of cairn's pxar encoder and catalog writer.

Builds a tree with every entry kind, runs the encoder (tests/tools/
pxar_mkarchive), then re-derives everything from the spec text
(shared/spec/pxar.md, catalog.md) in Python, sharing no code with the C
implementation: SipHash-2-4, the goodbye BST permutation (spec §6
pseudo-code), item layout, Stat fields against os.lstat, file contents,
hardlink offsets, and the catalog. Goodbye tables are rebuilt and compared
byte for byte. Exit 0 = all good, 1 = mismatch, 77 = skipped.
"""
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile

MASK = (1 << 64) - 1
K0, K1 = 0x83ac3f1cfbb450db, 0xaa4f1b6879369fbd
T = dict(ENTRY=0xd5956474e588acef, FILENAME=0x16701121063917b3, SYMLINK=0x27f971e7dbf5dc5f,
         DEVICE=0x9fc9e906586d5ce9, XATTR=0x0dab0229b57dcd03, ACL_USER=0x2ce8540a457d55b8,
         ACL_GROUP=0x136e3eceb04c03ab, ACL_GROUP_OBJ=0x10868031e9582876,
         ACL_DEFAULT=0xbbbb13415a6896f5, ACL_DEFAULT_USER=0xc89357b40532cd1f,
         ACL_DEFAULT_GROUP=0xf90a8a5816038ffe, FCAPS=0x2da9dd9db5f7fb67,
         QUOTA_PROJID=0xe07540e82f7d1cbb, HARDLINK=0x51269c8422bd7275,
         PAYLOAD=0x28147a1b0b7c1a25, GOODBYE=0x2fec4fa642d5731d)
TAIL = 0xef5eed5b753e1555
META = ["XATTR", "ACL_USER", "ACL_GROUP", "ACL_GROUP_OBJ", "ACL_DEFAULT", "ACL_DEFAULT_USER",
        "ACL_DEFAULT_GROUP", "FCAPS", "QUOTA_PROJID"]
NAMES = {v: k for k, v in T.items()}


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK


def siphash24(k0, k1, data):
    v0, v1 = k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d
    v2, v3 = k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573

    def rnd(v0, v1, v2, v3):
        v0 = (v0 + v1) & MASK; v1 = rotl(v1, 13) ^ v0; v0 = rotl(v0, 32)
        v2 = (v2 + v3) & MASK; v3 = rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & MASK; v3 = rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & MASK; v1 = rotl(v1, 17) ^ v2; v2 = rotl(v2, 32)
        return v0, v1, v2, v3
    n = len(data)
    tail = data[n - n % 8:] + bytes(7 - n % 8) + bytes([n & 0xff])
    blocks = data[:n - n % 8] + tail
    for i in range(0, len(blocks), 8):
        m = struct.unpack_from("<Q", blocks, i)[0]
        v3 ^= m
        v0, v1, v2, v3 = rnd(*rnd(v0, v1, v2, v3))
        v0 ^= m
    v2 ^= 0xff
    for _ in range(4):
        v0, v1, v2, v3 = rnd(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def permutation(n):
    slots = [None] * n

    def place(n, o, e, i):
        p = 1 << e
        t = p + p // 2 - 1
        m = p - 1 if n > t else p - 1 - (t - n)
        slots[i] = o + m
        if m > 0:
            place(m, o, e - 1, 2 * i + 1)
        if m + 1 < n:
            place(n - m - 1, o + m + 1, e - 1, 2 * i + 2)
    if n:
        place(n, 0, n.bit_length() - 1, 0)
    return slots


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class Archive:
    def __init__(self, data, root):
        self.a = data
        self.root = root
        self.entries = []   # (relpath bytes, kind char, extra)
        self.fn_pos = {}    # relpath -> FILENAME position
        self.goodbyes = 0

    def hdr(self, pos):
        check(pos + 16 <= len(self.a), "header beyond end at %d" % pos)
        t, size = struct.unpack_from("<QQ", self.a, pos)
        check(16 <= size and pos + size <= len(self.a), "bad size at %d" % pos)
        return t, size

    def entry(self, pos, rel, fn_pos):
        t, size = self.hdr(pos)
        check(t == T["ENTRY"] and size == 56, "no ENTRY at %d" % pos)
        mode, flags, uid, gid, secs, nanos, pad = struct.unpack_from("<QQIIqII", self.a, pos + 16)
        check(pad == 0, "stat padding")
        entry_pos = pos
        pos += size
        path = os.path.join(self.root, rel) if rel else self.root
        if rel == b".pxarexclude-cli":
            st = None
            check((mode, flags, uid, gid, secs, nanos) == (0o100600, 0, 0, 0, 0, 0), "pxarexclude-cli stat")
        else:
            st = os.lstat(path)
            check(mode == st.st_mode, "%r: mode %o != %o" % (rel, mode, st.st_mode))
            check(uid == st.st_uid and gid == st.st_gid, "%r: owner" % rel)
            ns = st.st_mtime_ns
            check((secs, nanos) == (ns // 10**9, ns % 10**9), "%r: mtime %d.%09d vs %d" % (rel, secs, nanos, ns))
        stage = 0
        xattrs = []
        while True:
            t, size = self.hdr(pos)
            name = NAMES.get(t)
            if name not in META:
                break
            check(META.index(name) >= stage, "%r: metadata order" % rel)
            stage = META.index(name)
            if name == "XATTR":
                body = self.a[pos + 16:pos + size]
                k = body.index(b"\0")
                xattrs.append((body[:k], body[k + 1:]))
            pos += size
        if st is not None:
            want = []
            if not stat.S_ISLNK(mode) and (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                try:
                    names = os.listxattr(path, follow_symlinks=False)
                except OSError:
                    names = []
                for n in names:
                    nb = n.encode()
                    if nb.startswith(b"user.") or nb.startswith(b"trusted.") or nb == b"security.NTACL":
                        want.append((nb, os.getxattr(path, n, follow_symlinks=False)))
            check(xattrs == want, "%r: xattrs %r != %r" % (rel, xattrs, want))
        fmt = stat.S_IFMT(mode)
        if fmt == stat.S_IFREG:
            check(t == T["PAYLOAD"], "%r: no PAYLOAD" % rel)
            data = self.a[pos + 16:pos + size]
            if st is not None:
                with open(path, "rb") as f:
                    check(f.read() == data, "%r: content" % rel)
                self.entries.append((rel, "f", (st.st_size, st.st_mtime_ns // 10**9)))
            else:
                self.entries.append((rel, "f", (len(data), 0)))
                self.cli = data
            return pos + size
        if fmt == stat.S_IFLNK:
            check(t == T["SYMLINK"], "%r: no SYMLINK" % rel)
            check(self.a[pos + 16:pos + size] == os.fsencode(os.readlink(path)) + b"\0", "%r: target" % rel)
            self.entries.append((rel, "l", None))
            return pos + size
        if fmt in (stat.S_IFCHR, stat.S_IFBLK):
            check(t == T["DEVICE"] and size == 32, "%r: DEVICE" % rel)
            ma, mi = struct.unpack_from("<QQ", self.a, pos + 16)
            check((ma, mi) == (os.major(st.st_rdev), os.minor(st.st_rdev)), "%r: device numbers" % rel)
            self.entries.append((rel, "c" if fmt == stat.S_IFCHR else "b", None))
            return pos + size
        if fmt in (stat.S_IFIFO, stat.S_IFSOCK):
            self.entries.append((rel, "p" if fmt == stat.S_IFIFO else "s", None))
            return pos
        check(fmt == stat.S_IFDIR, "%r: odd mode" % rel)
        return self.directory(pos, rel, entry_pos, fn_pos)

    def directory(self, pos, rel, entry_pos, fn_pos):
        children = []
        self.entries.append((rel, "d", None)) if rel else None
        while True:
            t, size = self.hdr(pos)
            if t == T["GOODBYE"]:
                break
            check(t == T["FILENAME"], "FILENAME expected at %d" % pos)
            name = self.a[pos + 16:pos + size - 1]
            check(self.a[pos + size - 1] == 0 and b"\0" not in name and b"/" not in name, "bad name")
            crel = rel + b"/" + name if rel else name
            start = pos
            self.fn_pos[crel] = start
            t2, size2 = self.hdr(pos + size)
            if t2 == T["HARDLINK"]:
                off = struct.unpack_from("<Q", self.a, pos + size + 16)[0]
                target = self.a[pos + size + 24:pos + size + size2 - 1]
                check(self.a[pos + size + size2 - 1] == 0, "hardlink NUL")
                check(self.fn_pos.get(target) == start - off, "%r: hardlink offset/target" % crel)
                a = os.lstat(os.path.join(self.root, crel))
                b = os.lstat(os.path.join(self.root, target))
                check((a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), "%r: not the same inode" % crel)
                end = pos + size + size2
                self.entries.append((crel, "h", None))
            else:
                end = self.entry(pos + size, crel, start)
            children.append((name, start, end))
            pos = end
        names = [c[0] for c in children]
        real = [n for n in names if not (rel == b"" and n == b".pxarexclude-cli")]
        check(real == sorted(real), "%r: children not sorted bytewise" % rel)
        if b".pxarexclude-cli" in names and rel == b"":
            check(names[-1] == b".pxarexclude-cli", ".pxarexclude-cli not last")
        # rebuild the goodbye table from the spec and compare bytes
        gb = pos
        items = sorted(((siphash24(K0, K1, n), gb - s, e - s) for n, s, e in children), key=lambda x: x[0])
        perm = permutation(len(items))
        want = b"".join(struct.pack("<QQQ", *items[perm[i]]) for i in range(len(items)))
        want += struct.pack("<QQQ", TAIL, gb - (0 if fn_pos is None else entry_pos), 16 + 24 * (len(items) + 1))
        t, size = self.hdr(gb)
        check(size == 16 + len(want), "%r: goodbye size" % rel)
        check(self.a[gb + 16:gb + size] == want, "%r: goodbye table bytes differ" % rel)
        self.goodbyes += 1
        return gb + size


def varint(c, pos):
    v, sh = 0, 0
    while True:
        b = c[pos]
        pos += 1
        v |= (b & 0x7f) << sh
        sh += 7
        if b < 0x80:
            return v, pos


def ivarint(c, pos):
    v, sh = 0, 0
    while True:
        b = c[pos]
        pos += 1
        if b == 0 and sh:
            return -v, pos
        v |= (b & 0x7f) << sh
        sh += 7
        if b < 0x80:
            return v, pos


def catalog(c):
    check(c[:8] == bytes.fromhex("91fd60f9c46758d5"), "catalog magic")
    root = struct.unpack_from("<Q", c, len(c) - 8)[0]
    out = []

    def table(start, prefix):
        tl, pos = varint(c, start)
        end = pos + tl
        n, pos = varint(c, pos)
        for _ in range(n):
            typ = chr(c[pos])
            nl, pos = varint(c, pos + 1)
            name = c[pos:pos + nl]
            pos += nl
            rel = prefix + b"/" + name if prefix else name
            if typ == "d":
                d, pos = varint(c, pos)
                check(start - d < start, "child table after parent")
                out.append((rel, "d", None))
                table(start - d, rel)
            elif typ == "f":
                size, pos = varint(c, pos)
                mtime, pos = ivarint(c, pos)
                out.append((rel, "f", (size, mtime)))
            else:
                out.append((rel, typ, None))
        check(pos == end, "catalog table length")
        return end
    check(table(root, b"") == len(c) - 8, "root table end")
    return out


def build(root):
    def put(rel, data, mode=0o644, mtime_ns=None):
        p = os.path.join(root, rel)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        if mtime_ns is not None:
            os.utime(p, ns=(mtime_ns, mtime_ns))
    os.makedirs(os.path.join(root, "a/b/c"))
    put("a/b/page", b"x" * 4096, 0o640, 1_700_000_000_123_456_789)
    os.link(os.path.join(root, "a/b/page"), os.path.join(root, "a/b/page.hardlink"))
    os.link(os.path.join(root, "a/b/page"), os.path.join(root, "zz-link"))
    put("empty", b"")
    put("one", b"1")
    put("big", os.urandom(3 << 20) , 0o600)
    put("old", b"before 1970", 0o644, -1_500_000_000)
    put("x.skip", b"excluded")
    put("new\nline", b"nl")
    put("\u00fcn\u00efc\u00f8d\u00e9-\u540d\u524d", b"utf8")
    put("L" * 255, b"long")
    os.symlink("a/b/page", os.path.join(root, "sym"))
    os.symlink("/nonexistent/dangling", os.path.join(root, "dangling"))
    os.mkfifo(os.path.join(root, "fifo"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(root, "sock"))
    s.close()
    try:
        os.mknod(os.path.join(root, "null"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(os.path.join(root, "blk"), 0o600 | stat.S_IFBLK, os.makedev(259, 1 << 12))
    except PermissionError:
        print("pxar_check: no mknod permission, device entries not checked")
    many = os.path.join(root, "many")
    os.mkdir(many)
    for i in range(101):
        put(os.path.join("many", "m%d" % (i * 37 % 101)), b"%d" % i)
    try:
        os.setxattr(os.path.join(root, "one"), "user.zz", b"last?")
        os.setxattr(os.path.join(root, "one"), "user.aa", b"first?")
        os.setxattr(os.path.join(root, "a"), "user.dir", b"")
    except OSError as e:
        print("pxar_check: user xattrs unsupported (%s), xattrs not checked" % e)
    os.utime(os.path.join(root, "a"), ns=(1, 2))


def main():
    tool = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "tree")
        os.mkdir(root)
        build(root)
        arch, cat = os.path.join(tmp, "out.pxar"), os.path.join(tmp, "out.pcat1")
        r = subprocess.run([tool, root, arch, cat, "--exclude", "*.skip"], capture_output=True, text=True)
        if r.returncode != 0:
            print("encoder failed:", r.stderr)
            return 1
        data = open(arch, "rb").read()
        a = Archive(data, root.encode())
        try:
            end = a.entry(0, b"", None)
            check(end == len(data), "trailing bytes after the root goodbye")
            check(a.cli == b"*.skip\n", ".pxarexclude-cli content")
            check(not any(e[0] == b"x.skip" for e in a.entries), "excluded file archived")
            cat_entries = catalog(open(cat, "rb").read())
            check(cat_entries[0] == (b"root.pxar.didx", "d", None), "catalog archive dir")
            got = [(e[0][len(b"root.pxar.didx/"):], e[1], e[2]) for e in cat_entries[1:]]
            # the catalog adds a directory when it is closed: compare as sets
            # of (path, kind, size/mtime) and per-directory order separately
            check(sorted(got) == sorted(a.entries), "catalog entries differ from the archive:\n%r\n%r"
                  % (sorted(got), sorted(a.entries)))
        except Fail as e:
            print("MISMATCH:", e)
            return 1
        print("pxar_check: %d bytes, %d entries, %d goodbye tables rebuilt byte for byte; %s"
              % (len(data), len(a.entries), a.goodbyes, r.stdout.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
