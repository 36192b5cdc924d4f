#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The kernel matrix (`make test-kernels`): boot Debian's own kernel packages
# under qemu (TCG works where nested KVM does not), each on one small Debian 12
# root image, run tests/kernels/smoke.py inside on a simulated node (the test
# bed's netns pods), and print one table: kernel x check, seconds.
#
#   tests/kernels/kernels.sh [KERNEL...]     (default: $KERNELS or "5.10 6.1 6.12")
#     KERNEL  5.10: bullseye's linux-image-5.10.0-N-amd64; 6.1: bookworm's
#             linux-image-6.1.0-N-amd64; 6.12: bookworm's linux-image-6.12.N+deb12-amd64
#             (the newest N the mirror has, each)
#   H2S_KERNELS_CACHE (/var/cache/h2split-kernels): private apt lists, the kernel
#     packages, the root file system and its image, kept between runs.
#   H2SPLIT_BUILD (./build): h2splitd and h2splitctl to test (built by make).
#   H2S_KERNELS_OUT ($H2SPLIT_BUILD/kernels): per kernel the console log, the
#     smoke's results and the test bed's process logs; results.md: the table.
#   H2S_KERNELS_REFRESH=1: rebuild the root file system (and look for newer kernels).
#
# Nothing of the machine's own apt configuration is changed: apt reads a private
# sources list and keeps its lists under the cache. Needs root (debootstrap, chroot).
set -eu

here=$(cd "$(dirname "$0")" && pwd -P)
top=$(cd "$here/../.." && pwd -P)
cache=${H2S_KERNELS_CACHE:-/var/cache/h2split-kernels}
build=$(cd "${H2SPLIT_BUILD:-$top/build}" && pwd -P)
out=${H2S_KERNELS_OUT:-$build/kernels}
kernels=${*:-${KERNELS:-5.10 6.1 6.12}}
vm_mem=${H2S_KERNELS_MEM:-1536}
vm_timeout=${H2S_KERNELS_TIMEOUT:-900}
# What the smoke needs in the VM: the test bed (python3, grpcio, iproute2,
# iptables, nsenter), bpftool, curl, h2splitd's libraries, and what installs a
# kernel package (kmod, initramfs-tools).
rootfs_pkgs="kmod initramfs-tools linux-base busybox iproute2 iptables util-linux procps psmisc
	curl bpftool nghttp2-client python3 python3-grpcio
	libbpf1 libelf1 zlib1g libnghttp2-14 libssl3 libjson-c5 libmicrohttpd12"

say() { echo "kernels: $*"; }
die() { echo "kernels: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] ||
	die "needs root (debootstrap, chroot, the smoke's BPF): sudo make test-kernels"
for b in h2splitd h2splitctl; do
	[ -x "$build/$b" ] || die "$build/$b missing: make all"
done

# ---- host tools: installed when missing ------------------------------------
need=""
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v mkfs.ext4 >/dev/null || need="$need e2fsprogs"
if [ -n "$need" ]; then
	say "installing:$need"
	# shellcheck disable=SC2086 # one word per package
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need \
		>/dev/null || die "apt-get install$need failed"
fi

# ---- private apt: bookworm (+ security, backports) and bullseye -------------
. "$here/../debian_mirror.sh" # $mirror, $security: the host's Debian mirrors

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -n 9 || { say "another run holds $cache/.lock; waiting for it"; flock 9; }

apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/prefs" "$cache/debs"
cat >"$apt_dir/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
deb $mirror bookworm-backports main
deb $mirror bullseye main
deb $mirror bullseye-updates main
deb $security bullseye-security main
EOF
apt_priv() {
	"$@" -o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=- \
		-o Dir::Etc::preferencesparts="$apt_dir/prefs" -o Dir::State::Lists="$apt_dir/lists" \
		-o Dir::Cache="$apt_dir" -o Dir::Cache::archives="$apt_dir/archives" \
		-o Dir::State::status=/dev/null -o Debug::NoLocking=1 -o APT::Sandbox::User=root
}
if [ "${H2S_KERNELS_REFRESH:-0}" = 1 ] || ! ls "$apt_dir/lists/"*_InRelease >/dev/null 2>&1; then
	say "apt lists for bookworm(-backports) and bullseye from $mirror (private: $apt_dir)"
	apt_priv apt-get update -qq >"$cache/apt-update.log" 2>&1 ||
		{ tail -n 20 "$cache/apt-update.log" >&2; die "apt-get update (private lists) failed"; }
fi

# The package of kernel series $1: the newest linux-image-$1.0-N-amd64 (5.10, 6.1)
# or linux-image-$1.N+debNN-amd64 (6.12) the lists name.
kernel_pkg() {
	re=$(printf '%s' "$1" | sed 's/\./\\./g')
	apt_priv apt-cache pkgnames "linux-image-$1" 2>/dev/null |
		grep -E "^linux-image-$re(\.0-[0-9]+|\.[0-9]+\+deb[0-9]+)-amd64\$" | sort -V | tail -n1
}

deb_of() { find "$cache/debs" -name "${1}_*.deb" | sort -V | tail -n1; }

# ---- kernel packages ---------------------------------------------------------
pkgs=""
for k in $kernels; do
	p=$(kernel_pkg "$k")
	[ -n "$p" ] || die "no kernel package for $k on $mirror (tried linux-image-$k.*-amd64)"
	pkgs="$pkgs $p"
	if [ -z "$(deb_of "$p")" ]; then
		size=$(apt_priv apt-cache show "$p" | sed -n 's/^Size: //p' | head -n1)
		say "downloading $p ($((size / 1048576)) MiB)"
		(cd "$cache/debs" && apt_priv apt-get download -qq "$p") ||
			die "apt-get download $p failed"
	fi
done

# ---- the root file system: debootstrap once, kernels installed into it ------
rootfs=$cache/rootfs
stamp=$(printf '%s\n' "$rootfs_pkgs" "$(cat "$here/vm-init")" | sha256sum | cut -c1-16)
pkg_list=$(echo "$rootfs_pkgs" | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//')
if [ "${H2S_KERNELS_REFRESH:-0}" = 1 ] ||
	[ "$(cat "$rootfs/.h2s-stamp" 2>/dev/null)" != "$stamp" ]; then
	say "debootstrap bookworm (minbase + $pkg_list) from $mirror into $rootfs"
	rm -rf "$rootfs" "$rootfs.new"
	t0=$(date +%s)
	debootstrap --variant=minbase --include="$(echo "$pkg_list" | tr ' ' ,)" bookworm \
		"$rootfs.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed ($cache/debootstrap.log)"; }
	# A small initrd that finds the virtio root disk; no network, no udev rules needed.
	printf 'MODULES=list\nCOMPRESS=gzip\n' >"$rootfs.new/etc/initramfs-tools/conf.d/h2s"
	printf 'virtio_pci\nvirtio_blk\next4\n' >>"$rootfs.new/etc/initramfs-tools/modules"
	install -m 0755 "$here/vm-init" "$rootfs.new/sbin/h2s-init"
	echo h2s-vm >"$rootfs.new/etc/hostname"
	rm -rf "$rootfs.new/var/cache/apt/archives/"*.deb
	echo "$stamp" >"$rootfs.new/.h2s-stamp"
	mv "$rootfs.new" "$rootfs"
	say "root file system made in $(($(date +%s) - t0)) s"
fi

# Install each wanted kernel not there yet; dpkg's hook makes its initrd.
changed=0
for p in $pkgs; do
	kver=${p#linux-image-}
	[ -f "$rootfs/boot/vmlinuz-$kver" ] && [ -f "$rootfs/boot/initrd.img-$kver" ] && continue
	say "installing $p into the root file system (initrd made there)"
	cp "$(deb_of "$p")" "$rootfs/tmp/k.deb"
	# No /proc or /dev needed (so no mounts to undo, and it runs in a chroot too).
	chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/k.deb >"$cache/install-$kver.log" 2>&1 ||
		{ tail -n 20 "$cache/install-$kver.log" >&2; die "dpkg -i $p failed"; }
	rm -f "$rootfs/tmp/k.deb"
	[ -f "$rootfs/boot/initrd.img-$kver" ] || die "no initrd for $kver ($cache/install-$kver.log)"
	changed=1
done

# One raw ext4 image of it; qemu opens it with snapshot=on, so runs never change it.
img=$cache/root.img
img_stamp="$stamp $(ls "$rootfs/boot")"
if [ "$changed" = 1 ] || [ ! -f "$img" ] ||
	[ "$(cat "$img.stamp" 2>/dev/null)" != "$img_stamp" ]; then
	mb=$(($(du -sm "$rootfs" | cut -f1) * 5 / 4 + 256))
	say "making $img ($mb MiB)"
	rm -f "$img"
	mkfs.ext4 -q -F -L h2sroot -d "$rootfs" "$img" "${mb}M" >/dev/null || die "mkfs.ext4 -d failed"
	echo "$img_stamp" >"$img.stamp"
fi

# ---- the payload (9p share): the binaries under test and the smoke ----------
mkdir -p "$out"
share=$out/share
rm -rf "$share"
mkdir -p "$share/bin" "$share/tests" "$share/results"
cp "$build/h2splitd" "$build/h2splitctl" "$share/bin/"
cp -r "$top/tests/testbed" "$top/tests/kernels" "$share/tests/"
find "$share/tests" -name __pycache__ -prune -exec rm -rf {} +

# ---- boot each kernel --------------------------------------------------------
# init: tests/kernels/vm-init; random.trust_cpu: no wait for entropy (grpcio).
cmdline="console=ttyS0 root=/dev/vda rw init=/sbin/h2s-init panic=-1 random.trust_cpu=on"
cmdline="$cmdline mitigations=off net.ifnames=0"
for p in $pkgs; do
	kver=${p#linux-image-}
	log=$out/console-$kver.log
	mkdir -p "$share/results/$kver"
	dpkg-deb -f "$(deb_of "$p")" Version >"$share/results/$kver/package"
	say "booting $kver under qemu (TCG, 2 vCPUs, $vm_mem MiB); console: $log"
	t0=$(date +%s)
	rc=0
	timeout "$vm_timeout" qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max \
		-smp 2 -m "$vm_mem" -display none -monitor none -serial "file:$log" -no-reboot \
		-nic none -device virtio-rng-pci \
		-kernel "$rootfs/boot/vmlinuz-$kver" -initrd "$rootfs/boot/initrd.img-$kver" \
		-append "$cmdline h2s.kernel=$kver" \
		-drive "file=$img,if=virtio,format=raw,snapshot=on" \
		-virtfs "local,path=$share,mount_tag=h2s,security_model=none,id=h2s" || rc=$?
	echo "$(($(date +%s) - t0))" >"$share/results/$kver/vm_seconds"
	[ "$rc" = 0 ] || say "qemu for $kver exited with $rc (124: timed out after $vm_timeout s)"
done

# ---- one table ---------------------------------------------------------------
rc=0
# shellcheck disable=SC2086 # one argument per package
/usr/bin/python3 "$here/table.py" "$share/results" $pkgs >"$out/results.md" || rc=$?
cat "$out/results.md"
exit "$rc"
