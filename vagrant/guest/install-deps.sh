#!/bin/sh
# Vagrant provisioner `deps` (root, in the VM): the project's node_modules and native addon. When they came with
# the sync (SDH_VAGRANT_SYNC_NODE_MODULES=1: a VM without internet, same node major as the host) and the addon
# loads here, nothing is done; otherwise `npm ci`, which builds the addon with node-gyp (compiler, make, python3).
set -eu
cd /project
export PATH=/usr/local/bin:$PATH

if [ -f node_modules/.package-lock.json ] && node -e 'require("./build/Release/sd_handoff.node")' 2>/dev/null; then
  echo "[deps] node_modules and build/Release/sd_handoff.node load with $(node --version): kept"
  exit 0
fi

if ! command -v make >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
  echo "[deps] installing a compiler for the addon"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends build-essential python3 >/dev/null
fi
# node-gyp 10 (npm 10) wants Python >= 3.8; Ubuntu 18.04's python3 is 3.6 and it ships python3.8 beside it.
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
  if ! command -v python3.8 >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends python3.8 >/dev/null
  fi
  export npm_config_python=/usr/bin/python3.8
fi
npm ci --no-audit --no-fund
node -e 'require("./build/Release/sd_handoff.node")'
echo "[deps] addon built: $(objdump -T build/Release/sd_handoff.node 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)"
