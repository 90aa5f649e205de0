#!/usr/bin/env bash
# Sets up and runs the whole cairn test suite on a fresh Debian 12 machine:
# installs dependencies, builds a -Werror release-ish build and an
# ASan/UBSan build, runs every test in both, and prints the total as its
# last line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --tests || exit 1

status=0
for kind in release asan; do
  dir=build-ci-$kind
  opts=(-Dwerror=true -Dbuildtype=debugoptimized)
  [ "$kind" = asan ] && opts+=(-Db_sanitize=address,undefined -Db_lundef=false)
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "${opts[@]}" || exit 1
  else
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null || exit 1
  fi
  ninja -C "$dir" || exit 1
  # UBSan reports are failures, not warnings.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
done
/usr/bin/python3 tests/summarize.py build-ci-release build-ci-asan || status=1
exit $status
