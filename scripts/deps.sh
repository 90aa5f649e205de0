#!/usr/bin/env bash
# Installs every build dependency of cairn on Debian 12 (as root), and with
# --tests also what only the tests need (the Debian package build and
# lintian, promtool for the alert rules, bash-completion), skipping apt
# entirely when everything is already there.
# Usage: deps.sh [--tests]
set -euo pipefail
PKGS=(
  build-essential meson ninja-build pkg-config clang
  libzstd-dev libssl-dev libxxhash-dev libcurl4-openssl-dev libxml2-dev liblmdb-dev
  libnghttp2-dev libjansson-dev libacl1-dev libinih-dev check libsubunit-dev
  libfuse3-dev fuse3
  python3 python3-h2 python3-cryptography python3-zstandard
  attr acl lmdb-utils openssl ca-certificates util-linux
  systemd scdoc
)
if [ "${1:-}" = --tests ]; then
  # prometheus brings promtool; its own service is not needed by the tests
  PKGS+=(debhelper dpkg-dev lintian man-db bash-completion prometheus)
  # a one-node Ceph cluster with radosgw for the S3 tests, and boto3 to look into buckets
  PKGS+=(ceph-mon ceph-mgr ceph-osd radosgw ceph-common python3-boto3)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi
