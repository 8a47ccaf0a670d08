#!/usr/bin/env bash
# Builds the offline Vagrant box `local-debian12` for the libvirt provider, without network access from the VM and
# without a bootloader: debootstrap bookworm with a kernel, systemd, sshd and what the integration suite runs
# (curl, iproute2, procps, python3), the host's node at /usr/local/bin/node, a vagrant user with a key generated
# here, then `mkfs.ext4 -d` -> qcow2 -> box.img + metadata.json + a box Vagrantfile that boots the kernel directly
# (lv.kernel / lv.initrd / lv.cmd_line; the files ship inside the box).
#
#   vagrant/build-box.sh OUT_DIR NODE_BINARY
#
# Writes OUT_DIR/local-debian12.box and OUT_DIR/local-debian12.stamp (the recipe hash, printed by --stamp), building
# in OUT_DIR/.build-<pid> which is removed on every exit. The mirror is the one apt on this host uses
# (SDH_VAGRANT_MIRROR overrides), like the container lab.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
box=local-debian12
suite=bookworm

# The recipe: this script and the node binary baked into the box. A change in either means a rebuild.
stamp() {
  { sha256sum "$here/build-box.sh" | cut -d' ' -f1; "$1" --version; sha256sum "$1" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1
}
if [[ ${1:-} == --stamp ]]; then
  stamp "$2"
  exit 0
fi

out=${1:?usage: build-box.sh OUT_DIR NODE_BINARY}
node=$(readlink -f "${2:?usage: build-box.sh OUT_DIR NODE_BINARY}")
mkdir -p "$out"
work="$out/.build-$$"
root="$work/rootfs"

cleanup() {
  # debootstrap mounts proc/sys inside the target; unmount before removing so nothing of the host goes with it.
  if [[ -d $root ]]; then
    for m in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r); do umount -l "$m" || true; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mirror=${SDH_VAGRANT_MIRROR:-}
if [[ -z $mirror ]]; then
  # The same mirror the container lab uses (test/integration/lab/rootfs.ts reads apt's sources, comments skipped).
  mirror=$(cd "$here/.." && "$node" --import tsx -e 'import("./test/integration/lab/rootfs.ts").then((m) => console.log(m.aptMirror()))' 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

t0=$(date +%s)
echo "[box] debootstrap $suite from $mirror"
mkdir -p "$root"
debootstrap --variant=minbase \
  --include=linux-image-amd64,initramfs-tools,systemd,systemd-sysv,udev,dbus,libsystemd0,kmod,openssh-server,sudo,rsync,iproute2,procps,curl,python3,libstdc++6,ca-certificates,less \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  grep -E '^E:' "$work/debootstrap.log" || tail -n 20 "$work/debootstrap.log"
  exit 1
}
echo "[box] debootstrap took $(($(date +%s) - t0)) s"

# Configuration, all of it in files: no service is started in the chroot.
echo "sdh-$box" >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 sdh-%s\n' "$box" >"$root/etc/hosts"
: >"$root/etc/machine-id" # generated at first boot of each VM
# The root filesystem is the whole of /dev/vda (no partition table). The kernel mounts it read-write (cmd_line `rw`)
# and this entry keeps it so: see the README on the fstab step.
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
mkdir -p "$root/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$root/etc/systemd/network/50-dhcp.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$root/etc/systemd/system/sockets.target.wants"
ln -sf /lib/systemd/system/systemd-networkd.socket "$root/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
# Nothing that would wait for a network that has no way out, or wake up the disk during a test run.
for u in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
  dpkg-db-backup.timer man-db.timer systemd-timesyncd.service getty@tty1.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
# The unpredictable name eth0 matches either way; sshd without DNS lookups (there is no resolver).
mkdir -p "$root/etc/ssh/sshd_config.d"
printf 'UseDNS no\nPasswordAuthentication no\n' >"$root/etc/ssh/sshd_config.d/sdh.conf"
# Host keys are generated at first boot of each VM, not shared through the box.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/sdh-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/sdh-ssh-hostkeys.service "$root/etc/systemd/system/multi-user.target.wants/sdh-ssh-hostkeys.service"

# The vagrant user: a key generated for this box, sudo without a password and without a tty.
chroot "$root" /usr/sbin/useradd -m -s /bin/bash -G sudo vagrant
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
mkdir -p "$work/box"
ssh-keygen -q -t ed25519 -N '' -C "sdh-$box" -f "$work/box/vagrant_key"
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$work/box/vagrant_key.pub" "$root/home/vagrant/.ssh/authorized_keys"

# The host's node: the VM has no internet, and the addon in node_modules is built for this node's ABI.
install -m 0755 "$node" "$root/usr/local/bin/node"
chroot "$root" /usr/local/bin/node -e 'process.exit(0)'

# The kernel boots directly (no bootloader in the image); the initrd brings virtio_blk and ext4.
cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)" "$work/box/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)" "$work/box/initrd.img"
chmod 0644 "$work/box/vmlinuz" "$work/box/initrd.img"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb

echo "[box] image"
size_gb=8
mkfs.ext4 -q -F -L sdh-root -d "$root" "$work/root.ext4" "${size_gb}G" >/dev/null
qemu-img convert -O qcow2 "$work/root.ext4" "$work/box/box.img"
rm -f "$work/root.ext4"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%d}\n' "$size_gb" >"$work/box/metadata.json"
cat >"$work/box/Vagrantfile" <<'EOF'
# Box Vagrantfile of local-debian12 (vagrant/build-box.sh): no bootloader in the image, so libvirt boots the kernel
# and initrd that ship in this box directly; the key is the one generated for this box.
Vagrant.configure("2") do |config|
  config.ssh.private_key_path = File.join(__dir__, "vagrant_key")
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(__dir__, "vmlinuz")
    lv.initrd = File.join(__dir__, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
  end
end
EOF
tar -C "$work/box" -cf "$work/$box.box" .
mv -f "$work/$box.box" "$out/$box.box"
stamp "$node" >"$out/$box.stamp"
echo "[box] $out/$box.box built in $(($(date +%s) - t0)) s ($(du -h "$out/$box.box" | cut -f1))"
