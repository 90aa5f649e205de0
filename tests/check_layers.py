#!/usr/bin/env python3
"""Keeps the house as it is drawn (README, Architecture).

Fails when a source file of the library or the command includes a header
of a layer above its own, or when a source file grows past MAX_LINES.
Prints one line per finding and "N passed, N failed" at the end: one
check per file.

Usage: check_layers.py SOURCE_ROOT
"""
import os
import re
import sys

MAX_LINES = 1500

# Which layers each layer may include, besides its own. net/ implements
# the engine's target/source and object-store interfaces, so it may
# include exactly those headers of engine/ and nothing else of it; its S3 target stores index
# files as a datastore does, so it writes them with store/'s index writer
# (a layer below engine/) rather than with a second copy of it.
ALLOWED = {
    'common': set(),
    'chunker': {'common'},
    'pxar': {'common'},
    'store': {'common', 'chunker'},
    'engine': {'common', 'chunker', 'pxar', 'store'},
    'net': {'common'},
    'cli': {'common', 'chunker', 'pxar', 'store', 'engine', 'net'},
}
ALLOWED_HEADERS = {
    'net': {'engine/cn_target.h', 'engine/cn_objstore.h', 'store/cn_index.h'},
}
# Directories whose files only have the size limit (they are not layers).
SIZE_ONLY = ('bench', 'tests')

INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z0-9_]+)/([^"]+)"')


def check_file(root, rel):
    """Returns the list of problems of one file."""
    problems = []
    layer = rel.split('/', 1)[0]
    with open(os.path.join(root, rel), encoding='utf-8', errors='replace') as f:
        lines = f.readlines()
    if len(lines) > MAX_LINES:
        problems.append('%s: %d lines, over %d: split it by concern'
                        % (rel, len(lines), MAX_LINES))
    if layer in ALLOWED:
        for no, line in enumerate(lines, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            target = m.group(1)
            header = target + '/' + m.group(2)
            if target == layer or target in ALLOWED[layer]:
                continue
            if header in ALLOWED_HEADERS.get(layer, set()):
                continue
            if target in ALLOWED or target in SIZE_ONLY:
                problems.append('%s:%d: %s/ may not include %s (layers point down only)'
                                % (rel, no, layer, header))
    return problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    files = []
    for top in list(ALLOWED) + list(SIZE_ONLY):
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in ('corpus',)]
            for name in filenames:
                if name.endswith((".c", ".h")):
                    files.append(os.path.relpath(os.path.join(dirpath, name), root))
    if not files:
        print('no source files under %s' % root)
        print('0 passed, 1 failed')
        return 1
    passed = failed = 0
    for rel in sorted(files):
        problems = check_file(root, rel)
        if problems:
            failed += 1
            for p in problems:
                print('FAIL ' + p)
        else:
            passed += 1
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
