#!/usr/bin/python3
"""File names and symlink targets with terminal escapes, newlines, a raw
C1 control (0x9b, CSI on 8-bit terminals) and invalid UTF-8 reach no
terminal raw: pxar list (plain and -v), snapshot files and the messages
of an extraction that fails on them print them escaped, one line each."""
import os
import shutil
import subprocess
import sys

import cairn_test_lib as t

t.setup(sys.argv)
work = t.tmpdir()
src = os.path.join(work, 'src').encode()
os.makedirs(src)
NAMES = [b'evil\x1b[2J\x1b]0;pwned\x07name', b'fake\nline', b'c1\x9b31m', b'bad\xff\xfeutf8',
         'ünïcödé'.encode()]
for n in NAMES:
    with open(os.path.join(src, n), 'wb') as f:
        f.write(b'x')
os.symlink(b'\x1b[31mred\r', os.path.join(src, b'lnk'))
ENTRIES = len(NAMES) + 2  # the root and the symlink
BAD = [b'\x1b', b'\x07', b'\r', b'\x9b', b'\xff', b'\xfe']


def cairn(*args, check=0):
    p = subprocess.run([t.CAIRN] + [a if isinstance(a, bytes) else str(a) for a in args],
                       capture_output=True, timeout=500)
    assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


def clean(out, what):
    for b in BAD:
        assert b not in out, (what, b, out)


archive = os.path.join(work, 'a.pxar')
cairn('pxar', 'create', archive, src)
for opts in ([], ['-v']):
    out = cairn('pxar', 'list', *opts, archive).stdout
    clean(out, opts)
    lines = out.splitlines()
    assert len(lines) == ENTRIES, lines  # no name fakes a line
    assert any(b'\\x1b[2J' in ln for ln in lines), lines
    assert any(b'fake\\nline' in ln for ln in lines), lines
    assert any('ünïcödé'.encode() in ln for ln in lines), lines  # valid UTF-8 kept
    if opts:
        assert any(b'-> "\\x1b[31mred\\x0d"' in ln for ln in lines), lines

# extraction errors name the path: logged escaped
dest = os.path.join(work, 'dest').encode()
os.makedirs(dest)
for n in NAMES:
    os.mkdir(os.path.join(dest, n))  # in the way: each file fails to extract
p = cairn('pxar', 'extract', '--allow-existing-dirs', archive, dest, check=3)
clean(p.stderr, 'extract stderr')
assert b'evil\\x1b[2J' in p.stderr, p.stderr

# snapshot files: the catalog's names
store = t.store_path('store')
out = t.run_json('backup', 'data.pxar:' + src.decode('utf-8', 'surrogateescape'),
                 '--store', store, '--backup-id', 'esc')
out = cairn('snapshot', 'files', out['snapshot'], 'data.pxar', '--store', store).stdout
clean(out, 'snapshot files')
assert len(out.splitlines()) == ENTRIES, out
assert b'evil\\x1b[2J' in out, out

shutil.rmtree(work)
print('ok')
