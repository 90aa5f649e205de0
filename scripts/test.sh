#!/usr/bin/env bash
# Sets up and runs the whole cairn test suite on a fresh Debian 12 machine:
# installs dependencies, builds a -Werror release-ish build, an
# ASan/UBSan build and a ThreadSanitizer build, runs the tests in them,
# and prints the total as its last line: "N passed, N failed".
#
# Which tests run where (suites in tests/meson.build):
#  - release build: every test but those in suite 'sanitized_only' (below).
#  - ASan/UBSan build: the unit and fuzz-replay tests and the integration
#    tests, but not those in suite 'release_only': tests of Python, shell,
#    documentation and the bash completion whose cairn runs, if any, are
#    ones other integration tests make under the sanitizers (pbs_emulator,
#    layers, systemd_units, docs_options, monitoring, bash_completion), and
#    chunker_boundaries, whose C code the chunker unit test runs there,
#    and memory and s3_memory, which measure peak RSS (no measure under the
#    sanitizers). debian_package (suite 'package') builds its own binary:
#    not defined in a sanitized build; it runs after the S3 programs,
#    beside the release tests.
#  - suite 'sanitized_only' runs in the ASan/UBSan build only: the S3
#    programs against Ceph (also suite 's3': s3, s3_admin, s3_admin_faults,
#    s3_restore_damage, s3_sync), whose time is mostly radosgw's and the
#    waits of their fault cases, and the integration tests of fault
#    handling, sync, scheduled
#    runs, mount and snapshot management (failures, tamper, pbs_unreachable,
#    stalled_target, pbs_trust, pbs_client, sync, sync_modes, sync_transfer,
#    catch_up, scheduled, snapshot_manage, mount): the same C code, checked
#    there under the sanitizers on the error and cleanup paths these tests
#    are about; a release run of them repeated that at 170 s of test time.
#    The release build keeps the unit tests and the end-to-end backup and
#    restore, change detection, interop, concurrency and memory tests.
#  - ThreadSanitizer build: suite 'threads', the tests whose code runs on
#    several threads (pipeline, fanout and targets, the walker's helpers,
#    the store's layout thread and locks, S3 uploads); s3_admin_faults
#    among them runs beside the release tests, after the ASan S3 programs.
#    A kernel whose address layout TSan cannot use (it fails to start)
#    skips this build's tests with a line saying so.
#  - Sanitized tests use smaller inputs or fewer rounds where that is not
#    what they check (CAIRN_TEST_SANITIZED=1 for the integration tests,
#    CN_TEST_SANITIZED in tests/unit/cn_test.h); release runs them in full.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --tests || exit 1

# One test per core. One more would use the time the integration tests
# spend waiting, but the disk-bound ones (datastore_*, on a shared disk)
# then slowed each other towards their timeouts in a loaded run.
jobs=$(nproc)
status=0

# One Ceph cluster (tests/integration/cairn_ceph.py) for the S3 test
# programs of both builds: its bring-up, 45-60 s, runs beside the builds
# instead of once in each program. Each program still starts a radosgw of
# its own against it. Without ceph the S3 tests fail, as they should.
if [ -z "${CAIRN_TEST_CEPH:-}" ] && command -v ceph-osd >/dev/null \
   && command -v radosgw >/dev/null; then
  ceph_dir=$(mktemp -d "${TMPDIR:-/tmp}/cairn-ceph-shared.XXXXXX") || exit 1
  /usr/bin/python3 tests/integration/cairn_ceph.py --serve "$ceph_dir" \
    >"$ceph_dir.log" 2>&1 &
  ceph_pid=$!
  trap 'kill "$ceph_pid" 2>/dev/null; wait "$ceph_pid"; rm -rf "$ceph_dir" "$ceph_dir.log"' EXIT
  export CAIRN_TEST_CEPH=$ceph_dir
fi

declare -A build_s
for kind in release asan tsan; do
  dir=build-ci-$kind
  opts=(-Dwerror=true -Dbuildtype=debugoptimized)
  if [ "$kind" = asan ]; then
    opts+=(-Db_sanitize=address,undefined -Db_lundef=false)
  elif [ "$kind" = tsan ]; then
    opts+=(-Db_sanitize=thread -Db_lundef=false)
  fi
  start=$SECONDS
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "${opts[@]}" || exit 1
  else
    meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null || exit 1
  fi
  ninja -C "$dir" || exit 1
  build_s[$kind]=$((SECONDS - start))
done

# meson test in build-ci-KIND with the sanitizer options (UBSan reports are
# failures, not warnings); LOGBASE names its log, so that two runs in one
# build directory keep both.
# TSan: a race report fails the test (exit code 66 at the end, all
# reports printed); its deadlock detector is off, as it cannot follow
# more than 64 locks held at once (the store's rescan takes one per
# prefix directory of a batch, in ascending order).
run_tests() {
  local kind=$1 logbase=$2
  shift 2
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  TSAN_OPTIONS=halt_on_error=0:exitcode=66:detect_deadlocks=0 \
    meson test -C "build-ci-$kind" --no-rebuild --print-errorlogs --logbase "$logbase" "$@"
}

# Whether a TSan binary starts here (some kernels' address layouts are
# beyond gcc 12's TSan: it then fails before main).
tsan_runs() {
  TSAN_OPTIONS=exitcode=66 build-ci-tsan/cli/cairn --version >/dev/null 2>&1
}
tsan_logs=()

# The S3 programs (ASan build) spend most of their time waiting on radosgw
# and on their fault cases' timeouts: they run one at a time beside the
# release tests, their output kept until the end, rather than after them.
rm -f build-ci-*/meson-logs/testlog*.json
start=$SECONDS
# Beside the release tests, one at a time: the S3 programs (ASan build),
# then the Debian package (suite 'package'; it compiles its own binary,
# so which build directory runs it does not matter). Both wait more than
# they compute (radosgw, fault-case timeouts, lintian, apt), and the
# package test must run alone among the tests of its build (is_parallel).
# The S3 programs start once the shared cluster is up (or has failed, or
# 420 s passed; the first program then reports why): its bring-up, beside
# the builds, is then not charged to the first program's timeout.
{
  if [ -n "${ceph_dir:-}" ]; then
    ceph_wait=$SECONDS
    while [ ! -e "$ceph_dir/ready" ] && [ ! -e "$ceph_dir/failed" ] \
          && [ $((SECONDS - ceph_wait)) -lt 420 ]; do
      sleep 1
    done
    echo "the shared Ceph cluster: waited $((SECONDS - ceph_wait)) s after the builds"
  fi
  run_tests asan testlog-s3 --suite s3 --num-processes 1
  s3_status=$?
  if tsan_runs; then
    run_tests tsan testlog-s3 --num-processes 1 s3_admin_faults || s3_status=1
  fi
  run_tests release testlog-pkg --suite package --num-processes 1 && exit "$s3_status"
} >build-ci-asan/meson-logs/s3-run.txt 2>&1 &
s3_pid=$!
run_tests release testlog --no-suite sanitized_only --no-suite package \
  --num-processes "$jobs" || status=1
echo "release: build ${build_s[release]} s, tests $((SECONDS - start)) s"
start=$SECONDS
run_tests asan testlog --no-suite release_only --no-suite s3 \
  --num-processes "$jobs" || status=1
echo "asan: build ${build_s[asan]} s, tests $((SECONDS - start)) s"
start=$SECONDS
if tsan_runs; then
  run_tests tsan testlog --suite threads --no-suite s3 --num-processes "$jobs" || status=1
  tsan_logs=(build-ci-tsan/meson-logs/testlog.json build-ci-tsan/meson-logs/testlog-s3.json)
  echo "tsan: build ${build_s[tsan]} s, tests $((SECONDS - start)) s"
else
  echo "tsan: build ${build_s[tsan]} s; its binaries do not start on this kernel" \
       "($(uname -r)): the suite 'threads' is not run under ThreadSanitizer"
fi
wait "$s3_pid" || status=1
echo "asan, S3 programs, and the Debian package (beside the release tests):"
cat build-ci-asan/meson-logs/s3-run.txt
/usr/bin/python3 tests/summarize.py build-ci-release/meson-logs/testlog.json \
  build-ci-release/meson-logs/testlog-pkg.json build-ci-asan/meson-logs/testlog.json \
  build-ci-asan/meson-logs/testlog-s3.json "${tsan_logs[@]}" || status=1
exit $status
