// SPDX-License-Identifier: Apache-2.0
/*
 * bpf_loader_preflight() (see bpf_loader.h): what h2splitd checks before it
 * loads anything, so a node that cannot run h2split gets one message that
 * names the fix: capabilities, kernel version, cgroup v2, and a bpffs under
 * the pin root (mounted on /sys/fs/bpf when the pin root is below it and
 * nothing is mounted there yet).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <linux/magic.h>

#include "base/log.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_loader_int.h"
#include "kernel/cgroup.h"

#define BPFFS_DEFAULT_MOUNT "/sys/fs/bpf"
#define CAP_NET_ADMIN_BIT 12
#define CAP_SYS_ADMIN_BIT 21
#define CAP_BPF_BIT 39

static int check_caps(char *err, size_t errlen)
{
	char line[256];
	unsigned long long eff = 0;
	bool found = false;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f) {
		snprintf(err, errlen, "open /proc/self/status: %s", strerror(errno));
		return -errno;
	}
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "CapEff: %llx", &eff) == 1;
	fclose(f);
	if ((eff >> CAP_SYS_ADMIN_BIT) & 1)
		return 0;
	if (((eff >> CAP_BPF_BIT) & 1) && ((eff >> CAP_NET_ADMIN_BIT) & 1))
		return 0;
	snprintf(err, errlen,
		 "missing capabilities: loading cgroup BPF programs needs CAP_BPF and "
		 "CAP_NET_ADMIN (or CAP_SYS_ADMIN): run as root, or add them to the "
		 "container's securityContext.capabilities");
	return -EPERM;
}

static int check_kernel(char *err, size_t errlen)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return 0; /* unknown: let the load say what is missing */
	if (major > 5 || (major == 5 && minor >= 10))
		return 0;
	snprintf(err, errlen,
		 "kernel %s is too old: h2split needs Linux " BPF_LOADER_MIN_KERNEL
		 "+ (cgroup getpeername hooks 5.8, sock_release hook and bpf_link detach "
		 "5.9, SOCKMAP lookup from BPF 5.10): upgrade the node kernel",
		 u.release);
	return -ENOTSUP;
}

static bool on_bpffs(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 && sfs.f_type == BPF_FS_MAGIC;
}

/* The deepest existing directory on the way to |path| (|path| itself if it exists). */
static void existing_ancestor(const char *path, char *buf, size_t len)
{
	struct stat st;
	char *slash;

	snprintf(buf, len, "%s", path);
	while (stat(buf, &st) < 0 && (slash = strrchr(buf, '/'))) {
		if (slash == buf) {
			buf[1] = '\0';
			break;
		}
		*slash = '\0';
	}
}

static int check_bpffs(const char *pin_root, char *err, size_t errlen)
{
	char dir[PATH_MAX];

	existing_ancestor(pin_root, dir, sizeof(dir));
	if (on_bpffs(dir))
		return 0;
	if (strcmp(dir, BPFFS_DEFAULT_MOUNT) == 0) {
		if (mount("bpf", BPFFS_DEFAULT_MOUNT, "bpf", 0, "mode=0700") < 0) {
			int e = errno;

			snprintf(err, errlen,
				 "mount bpffs on " BPFFS_DEFAULT_MOUNT
				 ": %s: mount -t bpf bpf " BPFFS_DEFAULT_MOUNT,
				 strerror(e));
			return -e;
		}
		log_warn("mounted bpffs dir=" BPFFS_DEFAULT_MOUNT
			 " note=\"in a container mount the host's /sys/fs/bpf instead, or pins die "
			 "with the container\"");
		return 0;
	}
	snprintf(err, errlen,
		 "pin root %s is not on a bpf filesystem (%s is not bpffs): mount -t bpf "
		 "bpf " BPFFS_DEFAULT_MOUNT " and use a --bpffs below it",
		 pin_root, dir);
	return -EMEDIUMTYPE;
}

int bpf_loader_preflight(const char *pin_root, char *err, size_t errlen)
{
	char root[PATH_MAX];
	int rc;

	rc = check_caps(err, errlen);
	if (!rc)
		rc = check_kernel(err, errlen);
	if (rc)
		return rc;
	rc = cgroup_v2_root(root, sizeof(root));
	if (rc) {
		snprintf(err, errlen,
			 "cgroup v2 not mounted: mount -t cgroup2 none /sys/fs/cgroup");
		return rc;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK) < 0)
		log_info("no kernel BTF file=/sys/kernel/btf/vmlinux note=\"not needed: the BPF "
			 "object uses UAPI context structs only\"");
	return check_bpffs(bpf_loader_root(pin_root), err, errlen);
}
