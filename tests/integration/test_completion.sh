#!/usr/bin/env bash
# The bash completion (contrib/bash-completion/cairn) under bash-completion:
# commands, subcommands, options of each command (from its --help), option
# values, and groups, snapshot ids and archive names of a real local store.
#
# Usage: test_completion.sh CAIRN_BINARY SOURCE_ROOT
# Skipped (77) without Debian's bash-completion package (scripts/deps.sh --tests).
set -uo pipefail
cairn=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(cd "$2" && pwd)
bc=/usr/share/bash-completion/bash_completion
[ -r "$bc" ] || { echo "SKIP: bash-completion not installed"; exit 77; }
# on tmpfs when there is one: a store's 65,536 directories are slow on a busy disk
shm=/dev/shm; [ -d "$shm" ] && [ -w "$shm" ] || shm=/tmp
tmp=$(mktemp -d "$shm/cairn-completion.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/src/photos"
ln -s "$cairn" "$tmp/bin/cairn"
export PATH="$tmp/bin:$PATH"
echo hello >"$tmp/src/photos/a.jpg"
store=$tmp/store
cairn backup media.pxar:"$tmp/src" docs.pxar:"$tmp/src/photos" --store "$store" --backup-id nas \
  >/dev/null || { echo "FAIL: backup"; exit 1; }
snap=$(cd "$store" && ls -d host/nas/*T*Z)
[ -n "$snap" ] || { echo "FAIL: no snapshot in the store"; exit 1; }

# shellcheck disable=SC1090
source "$bc"
source "$root/contrib/bash-completion/cairn"

# complete WORD... : the candidates for the last word, one per line
complete_words() {
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _cairn cairn "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
  printf '%s\n' "${COMPREPLY[@]}"
}

fails=0
# expect DESCRIPTION WANT... -- WORD... : every WANT is a candidate
expect() {
  local what=$1 want=() got
  shift
  while [ "$1" != -- ]; do want+=("$1"); shift; done
  shift
  got=$(complete_words "$@")
  for w in "${want[@]}"; do
    if ! grep -qxF -- "$w" <<<"$got"; then
      echo "FAIL: $what: '$w' not offered for '$*' (got: $(echo $got))"
      fails=$((fails + 1))
    fi
  done
}
# refuse DESCRIPTION NOT... -- WORD... : no NOT is a candidate
refuse() {
  local what=$1 bad=() got
  shift
  while [ "$1" != -- ]; do bad+=("$1"); shift; done
  shift
  got=$(complete_words "$@")
  for w in "${bad[@]}"; do
    if grep -qxF -- "$w" <<<"$got"; then
      echo "FAIL: $what: '$w' offered for '$*'"
      fails=$((fails + 1))
    fi
  done
}

expect commands backup restore snapshot status version run -- cairn ''
expect 'command prefix' restore -- cairn res
expect 'global options' --version --verbose -- cairn --v
expect 'backup options' --change-detection-mode --fingerprint --exclude -- cairn backup --
expect 'option values' legacy data metadata -- cairn backup --change-detection-mode ''
expect 'output formats' json text -- cairn status --output-format ''
expect subcommands create extract list -- cairn pxar ''
expect 'pxar extract options' --payload-input --overwrite -- cairn pxar extract --
expect 'restore-test options' --sample --config -- cairn verify --restore-test --
refuse 'restore-test options' --threads -- cairn verify --restore-test --
expect 'snapshot ids' host/nas "$snap" -- cairn restore --store "$store" ''
expect 'archive names' media.pxar docs.pxar -- cairn restore --store "$store" "$snap" ''
expect 'archives of the newest' media.pxar -- cairn restore --store "$store" host/nas ''
expect 'snapshot files' "$snap" -- cairn snapshot files --store "$store" ''
expect 'snapshot files archive' media.pxar -- cairn snapshot files --store "$store" "$snap" ''
expect 'prune groups' host/nas -- cairn prune --store "$store" ''
refuse 'prune groups' "$snap" -- cairn prune --store "$store" ''
# every option of every command's --help is offered
for cmd in backup restore list verify prune gc run status benchmark version "snapshot list" \
           "pxar create" "key create" "config check"; do
  # shellcheck disable=SC2086
  opts=$(cairn $cmd --help | grep -oE -- '^ *(-[a-z], )?--[a-z][a-z-]*' | grep -oE -- '--[a-z-]+')
  for o in $opts; do
    # shellcheck disable=SC2086
    expect "$cmd options" "$o" -- cairn $cmd --
  done
done
if [ "$fails" -gt 0 ]; then
  echo "$fails completion checks failed"
  exit 1
fi
echo "ok: commands, options, values, snapshots and archives complete"
