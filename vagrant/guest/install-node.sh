#!/bin/sh
# Vagrant provisioner `node` (runs as root in the VM): Node 20 at /usr/local/bin/node (the path the tests' unit
# files use) and the commands the integration tests call. A node 20 already there (the offline box ships the
# host's) is kept; otherwise the official tarball from nodejs.org, checked against its SHASUMS256.txt, or on a
# glibc older than 2.28 (Ubuntu 18.04: official Node >= 18 binaries need 2.28) the glibc-2.17 build from
# unofficial-builds.nodejs.org. SDH_NODE_VERSION pins a version (default: the latest 20.x).
set -eu

missing=""
for c in curl ip pgrep ss python3 journalctl systemd-run; do
  command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
if [ -n "$missing" ]; then
  echo "[node] installing what provides:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ca-certificates curl iproute2 procps python3 >/dev/null
fi

if [ -x /usr/local/bin/node ] && /usr/local/bin/node -p 'process.versions.node' | grep -q '^20\.'; then
  echo "[node] /usr/local/bin/node is $(/usr/local/bin/node --version): kept"
  exit 0
fi

glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
if [ "$(printf '%s\n2.28\n' "$glibc" | sort -V | head -n1)" = "2.28" ]; then
  base=https://nodejs.org/dist
  flavour=linux-x64
else
  base=https://unofficial-builds.nodejs.org/download/release
  flavour=linux-x64-glibc-217
fi
version=${SDH_NODE_VERSION:-}
if [ -z "$version" ]; then
  version=$(curl -fsSL https://nodejs.org/dist/latest-v20.x/SHASUMS256.txt | grep -o 'node-v20\.[0-9.]*-linux-x64\.tar\.xz' | head -n1 | sed 's/^node-\(v[0-9.]*\)-.*/\1/')
fi
case $version in v*) ;; *) version=v$version ;; esac
file=node-$version-$flavour.tar.xz
echo "[node] glibc $glibc: $base/$version/$file"
command -v xz >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends xz-utils >/dev/null; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL -o "$tmp/$file" "$base/$version/$file"
curl -fsSL -o "$tmp/SHASUMS256.txt" "$base/$version/SHASUMS256.txt"
(cd "$tmp" && grep " $file\$" SHASUMS256.txt | sha256sum -c -)
tar -xJf "$tmp/$file" -C /usr/local --strip-components=1 --no-same-owner \
  "node-$version-$flavour/bin" "node-$version-$flavour/lib" "node-$version-$flavour/include" "node-$version-$flavour/share"
/usr/local/bin/node --version
