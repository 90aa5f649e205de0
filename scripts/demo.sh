#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine, as root or a user:
#   bash scripts/demo.sh [FOLDER]
# Installs the dependencies if missing, builds cairn, backs FOLDER (or a
# generated ~200 MB photo-vault-like sample tree) up into a local datastore,
# lists the snapshot, restores it to a temporary folder and compares the
# restore with the source: contents (diff -r) and metadata (type, mode,
# owner, mtime, size, symlink target of every entry).
# Environment: CAIRN_DEMO_STORE=DIR keeps the datastore there (default: a
# temporary one, removed at the end with the rest); CAIRN_DEMO_SIZE_MB sets
# the sample size.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

bash scripts/deps.sh
if [ ! -d build-demo ]; then
  meson setup build-demo -Dbuildtype=release -Dtests=false >/dev/null
fi
ninja -C build-demo cli/cairn >/dev/null
cairn=$top/build-demo/cli/cairn

work=$(mktemp -d /tmp/cairn-demo.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

src=${1:-}
if [ -z "$src" ]; then
  src=$work/sample
  echo "== generating a sample tree in $src"
  /usr/bin/python3 bench/gen_corpus.py "$src" --size-mb "${CAIRN_DEMO_SIZE_MB:-200}"
fi
src=$(cd "$src" && pwd)
store=${CAIRN_DEMO_STORE:-$work/store}

echo "== cairn backup demo.pxar:$src --store $store --backup-id demo"
"$cairn" backup "demo.pxar:$src" --store "$store" --backup-id demo
echo "== cairn snapshot list --store $store"
"$cairn" snapshot list --store "$store"
echo "== cairn restore host/demo demo.pxar $work/restore --store $store"
"$cairn" restore host/demo demo.pxar "$work/restore" --store "$store"

echo "== comparing"
diff -r --no-dereference "$src" "$work/restore"
meta() { (cd "$1" && find . -mindepth 1 -printf '%P|%y|%m|%U|%G|%s|%l|' \
  -a \( -type d -printf '\n' -o -printf '%T@\n' \) | LC_ALL=C sort); }
if ! diff <(meta "$src") <(meta "$work/restore") >"$work/meta.diff"; then
  echo "RESULT: metadata differs:"; head -20 "$work/meta.diff"; exit 1
fi
n=$(meta "$src" | wc -l)
echo "RESULT: OK: $n entries restored identical in content and metadata"
