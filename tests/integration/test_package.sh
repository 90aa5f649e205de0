#!/usr/bin/env bash
# The Debian package: dpkg-buildpackage -us -uc -b builds cairn_<version>_<arch>.deb
# from a copy of the source tree (nothing is written into the tree), lintian
# finds no errors, the package holds the binary, man pages, completion,
# systemd units and examples, installs with apt-get, enables no service,
# `cairn --version` and `man -w cairn` work, and it removes cleanly.
#
# Usage: test_package.sh SOURCE_ROOT
# Skipped (77) when not root or when dpkg-buildpackage, dh or lintian are
# missing (scripts/deps.sh installs them).
set -euo pipefail
root=$(cd "$1" && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: installing the package needs root"; exit 77
fi
for tool in dpkg-buildpackage dh lintian apt-get; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done
if dpkg-query -W -f='${Status}' cairn 2>/dev/null | grep -q 'install ok installed'; then
  echo "SKIP: a cairn package is already installed here; not replacing it"; exit 77
fi

tmp=$(mktemp -d /tmp/cairn-package.XXXXXX)
installed=0
cleanup() {
  if [ "$installed" = 1 ]; then
    apt-get -o DPkg::Lock::Timeout=300 purge -y cairn >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# A copy of the tracked and new (not ignored) files: no build dirs, no .git.
mkdir "$tmp/src"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -xf - -C "$tmp/src"
else
  tar -C "$root" --exclude='./build*' -cf - . | tar -xf - -C "$tmp/src"
fi
# untracked and ignored paths of the tree, outside meson's build dirs
litter() {
  git -C "$root" ls-files --others --directory 2>/dev/null | grep -v '^build' | sort || true
}
litter_before=$(litter)

version=$(sed -n '1s/^cairn (\([^)]*\)).*/\1/p' "$root/debian/changelog")
arch=$(dpkg --print-architecture)
deb="$tmp/cairn_${version}_${arch}.deb"
echo "building $deb"
(cd "$tmp/src" && DEB_BUILD_OPTIONS="parallel=2 nocheck" \
   dpkg-buildpackage -us -uc -b >"$tmp/build.log" 2>&1) || {
  tail -n 60 "$tmp/build.log"; echo "FAIL: dpkg-buildpackage"; exit 1; }
[ -f "$deb" ] || { ls "$tmp"; echo "FAIL: no $deb"; exit 1; }
litter_after=$(litter)
[ "$litter_before" = "$litter_after" ] || {
  diff <(echo "$litter_before") <(echo "$litter_after")
  echo "FAIL: the build left files in the source tree"; exit 1; }

lintian --fail-on error --suppress-tags bad-distribution-in-changes-file "$deb" >"$tmp/lintian.log" 2>&1 || {
  cat "$tmp/lintian.log"; echo "FAIL: lintian errors"; exit 1; }
grep -E '^E: ' "$tmp/lintian.log" && { echo "FAIL: lintian errors"; exit 1; }
echo "lintian: $(grep -c '^W: ' "$tmp/lintian.log" || true) warnings, no errors"
grep '^W: ' "$tmp/lintian.log" || true

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for want in ./usr/bin/cairn ./usr/share/man/man1/cairn.1.gz ./usr/share/man/man5/cairn.conf.5.gz \
            ./usr/share/bash-completion/completions/cairn \
            ./lib/systemd/system/cairn-backup.service ./lib/systemd/system/cairn-backup.timer \
            ./usr/share/doc/cairn/examples/cairn.conf.example \
            ./usr/share/doc/cairn/examples/cairn-dashboard.json \
            ./usr/share/doc/cairn/examples/cairn-alerts.yml; do
  grep -qxF "$want" <<<"$contents" || grep -qxF "$want.gz" <<<"$contents" || {
    echo "$contents"; echo "FAIL: the package lacks $want"; exit 1; }
done

apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "$deb" >"$tmp/apt.log" 2>&1 || {
  cat "$tmp/apt.log"; echo "FAIL: apt-get install"; exit 1; }
installed=1
/usr/bin/cairn --version | tee "$tmp/version"
grep -q "^cairn ${version%-*}" "$tmp/version" || { echo "FAIL: --version is not ${version%-*}"; exit 1; }
man -w cairn | grep -q '/usr/share/man/man1/cairn.1' || { echo "FAIL: man -w cairn"; exit 1; }
man -w 5 cairn.conf | grep -q 'cairn.conf.5' || { echo "FAIL: man -w 5 cairn.conf"; exit 1; }
for unit in cairn-backup.timer cairn-backup.service; do
  if ls /etc/systemd/system/*.wants/"$unit" >/dev/null 2>&1; then
    echo "FAIL: $unit enabled by the package"; exit 1
  fi
done
apt-get -o DPkg::Lock::Timeout=300 purge -y cairn >"$tmp/apt.log" 2>&1 || {
  cat "$tmp/apt.log"; echo "FAIL: apt-get purge"; exit 1; }
installed=0
[ ! -e /usr/bin/cairn ] || { echo "FAIL: /usr/bin/cairn left after purge"; exit 1; }
echo "ok: package built, lintian clean, installed, --version and man work, removed"
