# SPDX-License-Identifier: Apache-2.0
# Sourced by tests/fresh_debian.sh and tests/kernels/kernels.sh (POSIX sh):
# the Debian mirrors this host's apt uses, so a chroot or VM image is built
# from the same place the host installs from (no other host is reachable).
# Sets $mirror and $security (deb.debian.org when the host names none).

mirror_for() { # $1: suite; prints each URI apt uses for it, first the deb822 ones
	cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$1" '
		/^URIs:/ { u = $2 } /^$/ { u = "" }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s && u != "") print u }'
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}//p' | awk -v s="$1" '$2 == s { print $1 }'
}
mirror=$(mirror_for bookworm | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
security=$(mirror_for bookworm-security | head -n1)
security=${security:-http://deb.debian.org/debian-security}
