#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# A newcomer's first run, without a newcomer: build a Debian 12 chroot holding
# only what debootstrap's minbase gives plus make, gcc and git, clone one commit
# of this repository into it and run a command there (default `make test`), as
# root with CI=true. Proves `make deps` installs everything the tests and the
# demo need. Not run by `make test`; needs root, debootstrap and a Debian mirror.
#
#   tests/fresh_debian.sh [--refresh] [--reuse] [--ref REF] [--repo DIR] [COMMAND]
#     COMMAND   shell command run in the clone (default: make test)
#     --ref     commit to test (default HEAD; committed work only)
#     --repo    repository to clone (default: the one holding this script)
#     --refresh rebuild the pristine base chroot (else made once and kept)
#     --reuse   run in the previous run's tree (packages make deps installed stay)
#   H2S_FRESH_DIR (/var/tmp/h2s-fresh): base/ is the pristine chroot, run/ a copy
#   of it per run; H2S_FRESH_PREFIX (frs): H2S_TESTBED_PREFIX in the chroot.
#
# Each run gets a private /run (tmpfs): the beds' netns, work dirs and locks
# stay apart from the host's. /proc, /sys (with the cgroup mounts and bpffs) and
# /dev are bound from the host, so the cgroup2 mount and bpffs are the host's
# own: the prefix must differ from any bed running on the host.
set -eu

dir=${H2S_FRESH_DIR:-/var/tmp/h2s-fresh}
prefix=${H2S_FRESH_PREFIX:-frs}
repo=$(cd "$(dirname "$0")" && git rev-parse --show-toplevel)
ref=HEAD
refresh=0
reuse=0
while [ $# -gt 0 ]; do
	case $1 in
	--refresh) refresh=1 ;;
	--reuse) reuse=1 ;;
	--ref) ref=$2; shift ;;
	--repo) repo=$2; shift ;;
	-h | --help) sed -n '3,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "unknown option $1 (--help)" >&2; exit 2 ;;
	*) break ;;
	esac
	shift
done
cmd=${*:-make test}

[ "$(id -u)" = 0 ] || { echo "fresh_debian.sh needs root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null ||
	{ echo "debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}")
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P) # canonical: compared with /proc/PID/root below
base=$dir/base
root=$dir/run

# The host's Debian mirrors: $mirror, $security.
. "$(dirname "$0")/debian_mirror.sh"

in_root() { # run a command in the chroot with a clean environment
	chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
}

make_base() {
	echo "fresh_debian: debootstrap bookworm from $mirror into $base"
	rm -rf "$base.new"
	start=$(date +%s)
	debootstrap --variant=minbase bookworm "$base.new" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$dir/debootstrap.log" >&2; exit 1; }
	cat >"$base.new/etc/apt/sources.list" <<-EOF
		deb $mirror bookworm main
		deb $mirror bookworm-updates main
		deb $security bookworm-security main
	EOF
	cp /etc/resolv.conf "$base.new/etc/resolv.conf"
	chroot "$base.new" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive sh -c \
		'apt-get update -qq && apt-get install -y -qq make gcc git ca-certificates >/dev/null &&
		 apt-get clean' >>"$dir/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$dir/debootstrap.log" >&2; exit 1; }
	mv "$base.new" "$base"
	echo "fresh_debian: base chroot made in $(($(date +%s) - start)) s"
}

mounted=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	if [ -n "$mounted" ]; then
		# Whatever still runs with the chroot as its root was started by this run.
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -9 "${p#/proc/}" 2>/dev/null
		done
		# A bed an interrupted run left (cgroups and pins live in the host's
		# cgroup2 mount and bpffs): the bed's own cleanup, inside the chroot.
		if [ -x "$root/usr/bin/python3" ] && [ -d "$root/root/h2split/tests/testbed" ]; then
			in_root sh -c "cd /root/h2split/tests && python3 -m testbed.cleanup $prefix" \
				>/dev/null 2>&1 || true
		fi
		for m in run dev sys proc; do
			umount -R "$root/$m" 2>/dev/null || umount -R -l "$root/$m" 2>/dev/null || true
		done
		umount -R "$root" 2>/dev/null || umount -R -l "$root" 2>/dev/null || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$refresh" = 1 ] || [ ! -d "$base" ]; then
	rm -rf "$base"
	make_base
fi
if [ "$reuse" = 0 ] || [ ! -d "$root" ]; then
	if grep -qE " $root(/| )" /proc/self/mounts; then
		echo "$root has mounts (a run still going?); not touching it" >&2
		exit 1
	fi
	rm -rf "$root"
	cp -a "$base" "$root"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

mounted=1
# The chroot's / a mount point, as a machine's is: podman's storage remounts /
# while unpacking an image and fails on a plain directory.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"

rm -rf "$root/root/h2split"
git clone -q --no-checkout "$repo" "$root/root/h2split"
git -C "$root/root/h2split" -c advice.detachedHead=false checkout -q --detach "$commit"
echo "fresh_debian: $commit in $root/root/h2split: $cmd"
start=$(date +%s)
set +e
in_root CI=true H2S_TESTBED_PREFIX="$prefix" sh -c "cd /root/h2split && $cmd"
rc=$?
set -e
echo "fresh_debian: '$cmd' exited $rc after $(($(date +%s) - start)) s"
exit "$rc"
