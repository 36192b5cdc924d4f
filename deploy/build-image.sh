#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# `make image`: build deploy/Dockerfile with docker (a daemon that answers),
# podman or buildah, whichever is here; as root with none of them, install
# podman. Where the Dockerfile's bases (debian:12, debian:12-slim) are neither
# in local storage nor pullable (no registry reachable), make one local Debian
# 12 base from Debian packages (debootstrap from this machine's apt mirror),
# import it under both names and say so. The Dockerfile itself is unchanged.
#   deploy/build-image.sh IMAGE WORKDIR VERSION
# WORKDIR (build/image) keeps the base tarball (cache) and, for podman and
# buildah, the containers.conf this machine needs (CONTAINERS_CONF).
set -eu

IMAGE=$1
WORK=$2
VERSION=$3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASES="docker.io/library/debian:12 docker.io/library/debian:12-slim"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BASE_TAR=$WORK/debian-12-base.tar
# This machine's hard limits: containers may not ask for more. podman lowers
# its own RLIMIT_NPROC to kernel.pid_max, and the runtime cannot raise it back.
NOFILE=$(awk '/^Max open files/ {print $5}' /proc/self/limits)
NPROC=$(awk '/^Max processes/ {print $4}' /proc/self/limits)
PID_MAX=$(cat /proc/sys/kernel/pid_max)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
[ "$NPROC" = unlimited ] || [ "$NPROC" -gt "$PID_MAX" ] && NPROC=$PID_MAX

say() { printf '  %-8s %s\n' "$1" "$2"; }
die() { echo "make image: $*" >&2; exit 1; }

apt_install() {
	[ "$(id -u)" = 0 ] || die "$* missing: run 'make image' as root or apt-get install $*"
	say APT "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
		>/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

pick_tool() {
	if [ -n "${H2SPLIT_IMAGE_TOOL:-}" ]; then
		command -v "$H2SPLIT_IMAGE_TOOL" >/dev/null 2>&1 || case $H2SPLIT_IMAGE_TOOL in
		podman | buildah) apt_install "$H2SPLIT_IMAGE_TOOL" runc >&2 ;;
		esac
		echo "$H2SPLIT_IMAGE_TOOL"
	elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
		echo docker
	elif command -v podman >/dev/null 2>&1; then
		echo podman
	elif command -v buildah >/dev/null 2>&1; then
		echo buildah
	else
		apt_install podman runc >&2
		echo podman
	fi
}

# podman and buildah: runc where cgroup2 is not the only hierarchy (crun
# refuses "cgroups in hybrid mode"), cgroupfs without systemd, and default
# ulimits no higher than this machine's hard limits (podman's defaults exceed
# many, and the container then fails to start). Written here, never into the
# machine's own configuration; the test points CONTAINERS_CONF at it too.
write_containers_conf() {
	conf=$WORK/containers.conf
	runtime=""
	if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
		command -v runc >/dev/null 2>&1 || apt_install runc
		runtime='runtime = "runc"'
	fi
	manager=systemd
	[ -d /run/systemd/system ] || manager=cgroupfs
	cat >"$conf.tmp" <<EOF
# Written by deploy/build-image.sh for this machine; used via CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]

[engine]
$runtime
cgroup_manager = "$manager"
events_logger = "file"
EOF
	mv "$conf.tmp" "$conf"
	export CONTAINERS_CONF="$conf"
}

have_image() {
	case $TOOL in
	docker) docker image inspect "$1" >/dev/null 2>&1 ;;
	podman) podman image exists "$1" ;;
	buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
	esac
}

pull() {
	[ -z "${H2SPLIT_LOCAL_BASE:-}" ] || return 1
	timeout 60 "$TOOL" pull -q "$1" >/dev/null 2>&1
}

# The first Debian mirror this machine's apt uses (deb822 or one-line format).
apt_mirror() {
	m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u !~ /security/ {print u; exit}')
	[ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}')
	echo "${m:-http://deb.debian.org/debian}"
}

# A minimal Debian 12 tree, trimmed as debian:12-slim is (no docs, man pages
# or locales), with the apt sources of the official image.
make_base_tar() {
	command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
	mirror=$(apt_mirror)
	rootfs=$WORK/rootfs
	rm -rf "$rootfs"
	say BASE "debootstrap bookworm from $mirror (once; cached in $BASE_TAR)"
	debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
	security=$(echo "$mirror" | sed 's#/debian/*$#/debian-security#')
	rm -f "$rootfs/etc/apt/sources.list"
	cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<EOF
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
	# As the official images do: apt keeps no .debs and no package caches.
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
	echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
	find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
	find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/usr/share/locale" \
		"$rootfs/var/cache/apt/"*.bin "$rootfs/var/cache/apt/archives/"*.deb \
		"$rootfs/var/lib/apt/lists/"* "$rootfs/var/log/"*.log "$rootfs/var/log/apt/"*
	tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.tmp" .
	mv "$BASE_TAR.tmp" "$BASE_TAR"
	rm -rf "$rootfs"
}

import_base() {
	path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	case $TOOL in
	docker | podman)
		"$TOOL" import --change "ENV PATH=$path" --change 'CMD ["bash"]' \
			--change 'LABEL io.h2split.base=debootstrap' "$BASE_TAR" "$1" >"$WORK/import.log" 2>&1 ||
			{ cat "$WORK/import.log" >&2; die "$TOOL import $BASE_TAR failed"; }
		;;
	buildah)
		c=$(buildah from scratch)
		buildah add "$c" "$BASE_TAR" / >/dev/null
		buildah config --env "PATH=$path" --cmd bash --label io.h2split.base=debootstrap "$c"
		buildah commit -q "$c" "$1" >/dev/null
		buildah rm "$c" >/dev/null
		;;
	esac
}

ensure_bases() {
	first=""
	for b in $BASES; do
		have_image "$b" && continue
		# One base that cannot be pulled is enough to know: no registry.
		[ -z "$first" ] && pull "$b" && continue
		if [ -z "$first" ]; then
			say BASE "$b cannot be pulled (no registry reachable?): using a local Debian 12 base"
			[ -s "$BASE_TAR" ] || make_base_tar
			import_base "$b"
			first=$b
		else
			"$TOOL" tag "$first" "$b"
		fi
		say BASE "$b = local Debian 12 (debootstrap --variant=minbase, $(du -h "$BASE_TAR" | cut -f1))"
	done
	for b in $BASES; do
		[ "$(label_of "$b")" = debootstrap ] &&
			say BASE "$b: the local Debian 12 base (debootstrap), not the registry's"
	done
	return 0
}

label_of() {
	case $TOOL in
	docker | podman) "$TOOL" image inspect -f '{{index .Config.Labels "io.h2split.base"}}' "$1" ;;
	buildah) buildah inspect -f '{{index .OCIv1.Config.Labels "io.h2split.base"}}' --type image "$1" ;;
	esac 2>/dev/null || true
}

TOOL=$(pick_tool)
case $TOOL in
podman | buildah) [ -n "${CONTAINERS_CONF:-}" ] || write_containers_conf ;;
docker) ;;
*) die "H2SPLIT_IMAGE_TOOL=$TOOL: want docker, podman or buildah" ;;
esac
ensure_bases

say IMAGE "$IMAGE ($TOOL build -f deploy/Dockerfile, log: $WORK/build.log)"
start=$(date +%s)
set -- -f "$ROOT/deploy/Dockerfile" -t "$IMAGE" --build-arg "H2SPLIT_VERSION=$VERSION"
case $TOOL in
docker) DOCKER_BUILDKIT=1 docker build -q "$@" "$ROOT" >"$WORK/build.log" 2>&1 ;;
podman | buildah)
	[ "$TOOL" = podman ] && set -- build "$@" || set -- bud "$@"
	# Host network: apt reaches the mirror without a container network set up.
	# ensure_bases left both bases in local storage: never reach for a registry.
	# RUN steps take their ulimits from here, not from containers.conf.
	set -- "$@" --pull=never --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC"
	"$TOOL" "$@" --network host --layers --ignorefile "$ROOT/deploy/Dockerfile.dockerignore" \
		"$ROOT" >"$WORK/build.log" 2>&1
	;;
esac || { tail -n 40 "$WORK/build.log" >&2; die "$TOOL build failed (log: $WORK/build.log)"; }
end=$(date +%s)
case $TOOL in
docker | podman) size="$(($("$TOOL" image inspect -f '{{.Size}}' "$IMAGE") / 1048576)) MiB" ;;
buildah) size=$(buildah images --format '{{.Size}}' "$IMAGE") ;;
esac
say IMAGE "$IMAGE built in $((end - start)) s, $size"
