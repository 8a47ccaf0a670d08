#!/bin/sh
# Vagrant provisioner `suite` (root, in the VM): the integration suite in host mode (SDH_LAB_TARGET=host, see
# test/integration/lab/host.ts) against this VM's systemd, with vagrant/vitest.config.ts. Prints vitest's report
# and the closing line `N passed, N failed` (scripts/summary.mjs); exits non-zero when any test failed or none ran.
set -u
cd /project
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
export SDH_LAB_TARGET=host
echo "[suite] $(. /etc/os-release && echo "$PRETTY_NAME"), $(systemctl --version | head -n1), kernel $(uname -r), node $(node --version)"
report=/tmp/sdh-vagrant-results.json
rm -f "$report"
start=$(date +%s)
node node_modules/vitest/vitest.mjs run --config vagrant/vitest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$report" "$@"
status=$?
echo "[suite] vitest exited $status after $(($(date +%s) - start)) s"
node scripts/summary.mjs "$report" || status=1
exit $status
