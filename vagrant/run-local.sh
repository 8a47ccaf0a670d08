#!/usr/bin/env bash
# `npm run test:vagrant`: the Vagrant path on this machine, offline. Builds the box local-debian12 once
# (vagrant/build-box.sh, cached), starts libvirtd and virtlogd in a network and mount namespace of their own,
# brings up vagrant/Vagrantfile's `debian12` machine on that box under software emulation (1 vCPU, 2 GiB), which
# runs the integration suite in host mode on the VM's systemd, prints the result, and destroys the VM and stops
# every daemon it started, however the run ends (trap; a run that was SIGKILLed is swept by the next one).
#
# Needs root. Installs what is missing with apt-get (vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients
# qemu-system-x86 qemu-utils debootstrap e2fsprogs rsync ...) and runs `npm ci` when the checkout has no
# node_modules or addon, so a fresh clone needs only `npm run test:vagrant`. Nothing touches the host's network:
# libvirt's bridge, NAT rules and dnsmasq live in the private network namespace, libvirt's state (/etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /run/libvirt) is
# bind-mounted from the cache there, and the host's own libvirt files are left as they are.
#
# Environment: SDH_VAGRANT_CACHE (default /var/cache/sd-handoff-vagrant), SDH_TIME_FACTOR (default 10: how
# many times every deadline of the tests is stretched under software emulation),
# SDH_VAGRANT_MEMORY / SDH_VAGRANT_CPUS (default 2048 / 1), SDH_VAGRANT_KEEP=1 (leave the VM and daemons
# running for a look around; prints how to get in and how to stop them). Arguments go to vitest in the VM.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project=$(dirname "$here")
cache=${SDH_VAGRANT_CACHE:-/var/cache/sd-handoff-vagrant}
box=local-debian12
machine=debian12
log() { printf '[vagrant-local] %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

# Processes in the network namespace whose inode is $1: all of them were started by a run of this script (the
# namespace is created by it and nothing else can enter it), so these are the ones to stop.
# The script itself and its own short-lived children (this function's subshell, grep) are left out.
ns_pids() {
  local ino=$1 p ppid
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/ns/net" 2>/dev/null) == "net:[$ino]" ]] || continue
    ppid=$(awk '/^PPid:/ { print $2 }' "$p/status" 2>/dev/null) || continue
    [[ ${p#/proc/} == "$$" || $ppid == "$$" || ${p#/proc/} == "$BASHPID" || $ppid == "$BASHPID" ]] && continue
    echo "${p#/proc/}"
  done
  return 0
}
stop_pids() { # TERM, up to $1 seconds, KILL
  local wait=$1 p
  shift
  (($# == 0)) && return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < wait * 10; i++)); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

if [[ ${1:-} != --in-namespace ]]; then
  # ---- on the host ------------------------------------------------------------------------------------------
  [[ $(id -u) == 0 ]] || die "needs root (libvirtd, namespaces, debootstrap)"
  # The tools, by the Debian package that brings them: a fresh machine gets them installed (as .ci/run does for
  # the container lab); a machine without apt-get is told what is missing.
  declare -A package_of=([vagrant]=vagrant [libvirtd]=libvirt-daemon-system [virtlogd]=libvirt-daemon-system
    [virsh]=libvirt-clients [qemu-system-x86_64]=qemu-system-x86 [qemu-img]=qemu-utils [debootstrap]=debootstrap
    [mkfs.ext4]=e2fsprogs [rsync]=rsync [unshare]=util-linux [nsenter]=util-linux [ssh-keygen]=openssh-client
    [flock]=util-linux)
  missing=()
  for t in "${!package_of[@]}"; do
    command -v "$t" >/dev/null || missing+=("${package_of[$t]}")
  done
  [[ -d /usr/share/vagrant-plugins/plugins.d ]] && grep -qs libvirt /usr/share/vagrant-plugins/plugins.d/*.json || missing+=(vagrant-libvirt)
  if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} (Debian names) and no apt-get to install them"
    log "installing ${missing[*]}"
    # The packages must not start libvirtd or virtlogd on the host (its network would get libvirt's bridge and NAT
    # rules): policy-rc.d says no to every service start during the install (Debian's invoke-rc.d asks it), and
    # run-local.sh runs daemons of its own, in a namespace. An existing policy-rc.d is left as it is.
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\n# sd-handoff vagrant/run-local.sh, during apt-get install only\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      own_policy=1
    fi
    installed=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || installed=$?
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
    ((installed == 0)) || die "apt-get install ${missing[*]} failed"
  fi
  node=$(readlink -f "$(command -v node)")
  [[ $("$node" -p 'process.versions.node.split(".")[0]') == 20 ]] || die "the box carries this machine's node, which must be 20 (it is $("$node" --version))"
  # The VM has no internet: it uses this checkout's node_modules and addon.
  if [[ ! -f $project/build/Release/sd_handoff.node || ! -d $project/node_modules ]]; then
    log "no node_modules or addon in $project yet: npm ci"
    (cd "$project" && npm ci --no-audit --no-fund) || die "npm ci failed in $project"
  fi

  mkdir -p "$cache"
  exec 9>"$cache/lock"
  flock -n 9 || die "another run holds $cache/lock"

  # A run that was SIGKILLed left its daemons (and maybe the VM) in its namespace: stop them now.
  if [[ -f $cache/active-run ]]; then
    read -r old_pid old_ns <"$cache/active-run" || true
    if [[ -n ${old_ns:-} ]] && ! kill -0 "${old_pid:-0}" 2>/dev/null; then
      mapfile -t left < <(ns_pids "$old_ns")
      ((${#left[@]})) && log "stopping ${#left[@]} process(es) left by run $old_pid: ${left[*]}" && stop_pids 10 "${left[@]}"
    fi
    rm -f "$cache/active-run"
  fi
  # A build killed halfway leaves .build-<pid>: unmount (debootstrap's proc/sys) and remove it.
  for d in "$cache"/.build-*; do
    [[ -d $d ]] || continue
    kill -0 "${d##*.build-}" 2>/dev/null && continue
    log "removing half-built $d"
    awk -v r="$d" 'index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
    rm -rf "$d"
  done

  export VAGRANT_HOME=$cache/vagrant.d VAGRANT_CHECKPOINT_DISABLE=1
  want=$("$here/build-box.sh" --stamp "$node")
  have=$(cat "$cache/$box.installed" 2>/dev/null || true)
  if [[ $have != "$want" ]] || ! vagrant box list 2>/dev/null | grep -q "^$box "; then
    [[ -n $have ]] && log "box $box is stale (recipe or node changed): rebuilding"
    t0=$(date +%s)
    rm -f "$cache/$box.installed"
    # A box file of this recipe built by an earlier run that stopped before adding it is used as it is.
    if [[ ! -f $cache/$box.box || $(cat "$cache/$box.stamp" 2>/dev/null) != "$want" ]]; then
      "$here/build-box.sh" "$cache" "$node"
    fi
    vagrant box add --force --name "$box" "$cache/$box.box" >/dev/null
    # libvirt keeps its own copy of the box image, named after box and version: drop the old one with it.
    rm -f "$cache"/libvirt/lib/images/"${box}"_vagrant_box_image_*
    rm -f "$cache/$box.box"
    echo "$want" >"$cache/$box.installed"
    log "box $box built and added in $(($(date +%s) - t0)) s"
  else
    log "box $box: cached ($VAGRANT_HOME)"
  fi

  exec unshare --mount --net --propagation private -- "$0" --in-namespace "$@"
fi

# ---- inside the private network and mount namespace ----------------------------------------------------------
shift
ns=$(readlink /proc/self/ns/net)
ns=${ns#net:[}
ns=${ns%]}
echo "$$ $ns" >"$cache/active-run"
run_dir=$cache/run-$$
export VAGRANT_HOME=$cache/vagrant.d VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_DEFAULT_PROVIDER=libvirt
export VAGRANT_DOTFILE_PATH=$run_dir/.vagrant
export SDH_VAGRANT_BOX=$box SDH_VAGRANT_EXPECT_SYSTEMD=252 SDH_VAGRANT_LIBVIRT_DRIVER=qemu SDH_VAGRANT_SYNC_NODE_MODULES=1
export SDH_TIME_FACTOR=${SDH_TIME_FACTOR:-10}
# This script's arguments go to vitest in the VM (the Vagrantfile hands them to guest/run-suite.sh).
export SDH_VAGRANT_VITEST_ARGS="$*"
export SDH_VAGRANT_CONSOLE_LOG=$run_dir/console.log
mkdir -p "$run_dir"

cleanup() {
  local status=$?
  trap '' INT TERM
  set +e
  if [[ ${SDH_VAGRANT_KEEP:-} == 1 ]]; then
    log "SDH_VAGRANT_KEEP=1: left running in network namespace $ns; get in with: nsenter --net=/proc/$(cat /run/libvirt/libvirtd.pid 2>/dev/null)/ns/net --mount=/proc/$(cat /run/libvirt/libvirtd.pid 2>/dev/null)/ns/mnt env VAGRANT_HOME=$VAGRANT_HOME VAGRANT_DOTFILE_PATH=$VAGRANT_DOTFILE_PATH SDH_VAGRANT_BOX=$box vagrant ssh $machine (from $here); the next run stops it all"
    exit "$status"
  fi
  local t0=$SECONDS
  if [[ -S /run/libvirt/libvirt-sock ]]; then
    (cd "$here" && timeout 300 vagrant destroy -f "$machine" >"$run_dir/destroy.log" 2>&1) || log "vagrant destroy failed: $(tail -n 3 "$run_dir/destroy.log")"
  fi
  mapfile -t pids < <(ns_pids "$ns")
  if ((${#pids[@]})); then
    log "stopping $(for p in "${pids[@]}"; do printf '%s(%s) ' "$(cat /proc/$p/comm 2>/dev/null)" "$p"; done)"
    stop_pids 15 "${pids[@]}"
  fi
  # The VM's own disk (the box's image in the pool stays: it is the cache libvirt boots from).
  find "$cache/libvirt/lib/images" -maxdepth 1 -type f ! -name "${box}_vagrant_box_image_*" -print -delete 2>/dev/null | sed 's/^/[vagrant-local] removed /' >&2
  [[ -s $run_dir/console.log ]] && cp -f "$run_dir/console.log" "$cache/last-console.log"
  rm -rf "$run_dir"
  rm -f "$cache/active-run"
  log "cleaned up in $((SECONDS - t0)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip link set lo up

# libvirt's state, private to this namespace: the host's /etc/libvirt is copied once, then configured for here.
lv=$cache/libvirt
mkdir -p "$lv"/{lib/images,log,cache}
if [[ ! -f $lv/etc/.sdh-seeded ]]; then
  rm -rf "$lv/etc"
  cp -a /etc/libvirt "$lv/etc"
  # vagrant-libvirt brings its own management network: libvirt's `default` one is not needed.
  rm -f "$lv/etc/qemu/networks/autostart/default.xml"
  cat >>"$lv/etc/qemu.conf" <<'EOF'

# sd-handoff vagrant/run-local.sh: libvirtd runs without systemd, in a private namespace.
# "Failed disable mount propagation" otherwise: no per-VM mount namespace.
namespaces = [ ]
# No cgroups of libvirt's own on this host (the container lab owns the cgroup tree here).
cgroup_controllers = [ ]
# The box's kernel and initrd live in the Vagrant cache; qemu runs as root and reads them there.
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
EOF
  touch "$lv/etc/.sdh-seeded"
fi
# A /run of our own: libvirt's sockets, pid files and dnsmasq state never land in the host's /run.
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/libvirt /run/lock
mount --bind "$lv/etc" /etc/libvirt
mount --bind "$lv/lib" /var/lib/libvirt
mkdir -p /var/log/libvirt /var/cache/libvirt
mount --bind "$lv/log" /var/log/libvirt
mount --bind "$lv/cache" /var/cache/libvirt

# Without the lock's fd 9: daemons must not hold the run lock.
virtlogd -d -p /run/libvirt/virtlogd.pid 9>&-
libvirtd -d -p /run/libvirt/libvirtd.pid 9>&-
for ((i = 0; i < 300; i++)); do
  [[ -S /run/libvirt/libvirt-sock ]] && virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.1
done
virsh -c qemu:///system version >/dev/null || die "libvirtd did not come up (see $lv/log)"
if ! virsh -q pool-info default >/dev/null 2>&1; then
  virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
  virsh -q pool-autostart default >/dev/null
fi
virsh -q pool-start default >/dev/null 2>&1 || true
log "libvirtd $(cat /run/libvirt/libvirtd.pid), virtlogd $(cat /run/libvirt/virtlogd.pid) in network namespace $ns"

cd "$here"
t0=$SECONDS
set +e
# (vagrant-libvirt's upload progress is one line per percent point: dropped.)
vagrant up "$machine" --provider=libvirt 2>&1 | sed -u -E 's/(\x1b\[K)?Progress: [0-9]+%//g; /^$/d' | tee "$run_dir/up.log"
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^ *(debian12: )?[0-9]+ passed, [0-9]+ failed' "$run_dir/up.log" | tail -n1 | sed 's/^ *debian12: //')
systemd=$(grep -oE 'systemd [0-9]+ \([^)]*\)' "$run_dir/up.log" | head -n1)
log "vagrant up (boot, sync, suite) took $((SECONDS - t0)) s; ${systemd:-systemd version not seen}; ${summary:-no test summary: the suite did not run}"
[[ -n $summary ]] || status=1
exit "$status"
