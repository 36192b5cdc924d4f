// SPDX-License-Identifier: Apache-2.0
/*
 * cgroup v2 lookups (see cgroup.h). A cgroup's id is its kernfs node id: the
 * 8-byte file handle name_to_handle_at() returns, and the inode number on
 * 64-bit kernels, which is what the walk fallback compares. Nothing is cached:
 * callers are control paths (start, h2splitctl) or rare fallbacks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "kernel/cgroup.h"

/* include/linux/exportfs.h, not UAPI: the handle type of kernfs (cgroup) files. */
#define FILEID_KERNFS 0xfe
/* Deeper than any real hierarchy (systemd + kubelet use 5-6 levels). */
#define WALK_MAX_DEPTH 32

struct cgroup_fh {
	struct file_handle fh;
	uint64_t id;
};

static int copy_str(char *buf, size_t len, const char *s)
{
	size_t n = strlen(s);

	if (n >= len)
		return -ENAMETOOLONG;
	memcpy(buf, s, n + 1);
	return 0;
}

/* mounts(5) escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

int cgroup_v2_root_from(FILE *mounts, char *buf, size_t len)
{
	char line[4096], first[PATH_MAX] = "";

	while (fgets(line, sizeof(line), mounts)) {
		char *save = NULL;
		char *dev = strtok_r(line, " \t\n", &save);
		char *dir = dev ? strtok_r(NULL, " \t\n", &save) : NULL;
		char *type = dir ? strtok_r(NULL, " \t\n", &save) : NULL;

		if (!type || strcmp(type, "cgroup2") != 0)
			continue;
		unescape_octal(dir);
		if (strcmp(dir, "/sys/fs/cgroup") == 0)
			return copy_str(buf, len, dir);
		if (!first[0] && strlen(dir) < sizeof(first))
			strcpy(first, dir);
	}
	if (!first[0])
		return -ENOENT;
	return copy_str(buf, len, first);
}

int cgroup_v2_root(char *buf, size_t len)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	int err;

	if (!f)
		return -errno;
	err = cgroup_v2_root_from(f, buf, len);
	fclose(f);
	return err;
}

int cgroup_check_dir(const char *dir)
{
	struct statfs sfs;
	struct stat st;

	if (stat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (statfs(dir, &sfs) < 0)
		return -errno;
	return sfs.f_type == CGROUP2_SUPER_MAGIC ? 0 : -EMEDIUMTYPE;
}

int cgroup_id_of(const char *dir, uint64_t *id)
{
	struct cgroup_fh h = {.fh.handle_bytes = sizeof(uint64_t)};
	int mount_id, err;

	err = cgroup_check_dir(dir);
	if (err)
		return err;
	if (name_to_handle_at(AT_FDCWD, dir, &h.fh, &mount_id, 0) < 0)
		return -errno;
	if (h.fh.handle_bytes != sizeof(uint64_t))
		return -EOVERFLOW;
	memcpy(id, h.fh.f_handle, sizeof(*id));
	return 0;
}

int cgroup_self_dir(char *buf, size_t len)
{
	char root[PATH_MAX], line[PATH_MAX + 8];
	FILE *f;
	int err;

	err = cgroup_v2_root(root, sizeof(root));
	if (err)
		return err;
	f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -errno;
	err = -ENOENT;
	while (fgets(line, sizeof(line), f)) {
		/* The cgroup v2 line is "0::/path" (the path is relative to our
		 * cgroup namespace root, which is what the mount shows). */
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (snprintf(buf, len, "%s%s", root, strcmp(line + 3, "/") ? line + 3 : "") >=
		    (int)len)
			err = -ENAMETOOLONG;
		else
			err = 0;
		break;
	}
	fclose(f);
	return err;
}

/* Depth-first search below |path| for a directory whose inode number is |id|. */
static int walk_for_id(char *path, size_t len, uint64_t id, int depth)
{
	size_t base = strlen(path);
	struct dirent *de;
	int err = -ENOENT;
	DIR *d;

	if (depth > WALK_MAX_DEPTH)
		return -ENOENT;
	d = opendir(path);
	if (!d)
		return -ENOENT; /* removed while we walked */
	while (err == -ENOENT && (de = readdir(d))) {
		struct stat st;

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(path + base, len - base, "/%s", de->d_name) >= (int)(len - base)) {
			path[base] = '\0';
			continue;
		}
		if (stat(path, &st) == 0 && (uint64_t)st.st_ino == id) {
			err = 0;
			break;
		}
		err = walk_for_id(path, len, id, depth + 1);
		if (err)
			path[base] = '\0';
	}
	closedir(d);
	return err;
}

static int path_by_handle(const char *root, uint64_t id, char *buf, size_t len)
{
	struct cgroup_fh h = {.fh.handle_bytes = sizeof(uint64_t), .fh.handle_type = FILEID_KERNFS};
	char link[64], target[PATH_MAX];
	int mfd, fd, err = 0;
	ssize_t n;

	memcpy(h.fh.f_handle, &id, sizeof(id));
	mfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		return -errno;
	fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	err = fd < 0 ? -errno : 0;
	close(mfd);
	if (err)
		return err == -ESTALE ? -ENOENT : err;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	err = n < 0 ? -errno : 0;
	close(fd);
	if (err)
		return err;
	target[n] = '\0';
	/* Outside our mount (another cgroup namespace) the link is not a path. */
	if (strncmp(target, root, strlen(root)) != 0)
		return -EXDEV;
	return copy_str(buf, len, target);
}

int cgroup_path_of_id(const char *root, uint64_t id, char *buf, size_t len)
{
	struct stat st;
	int err;

	err = path_by_handle(root, id, buf, len);
	if (err != -EPERM && err != -EXDEV && err != -EOPNOTSUPP)
		return err;
	if (len < 2 || copy_str(buf, len, root))
		return -ENAMETOOLONG;
	if (stat(root, &st) == 0 && (uint64_t)st.st_ino == id)
		return 0;
	return walk_for_id(buf, len, id, 0);
}

/* The first pid in |dir|/cgroup.procs, 0 when empty. */
static int first_pid(const char *dir)
{
	char path[PATH_MAX];
	FILE *f;
	int pid = 0;

	if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

static int find_pid_below(char *path, size_t len, int depth)
{
	size_t base = strlen(path);
	struct dirent *de;
	int pid;
	DIR *d;

	pid = first_pid(path);
	if (pid != 0 || depth > WALK_MAX_DEPTH)
		return pid;
	d = opendir(path);
	if (!d)
		return -errno;
	pid = -ESRCH;
	while (pid <= 0 && (de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(path + base, len - base, "/%s", de->d_name) >= (int)(len - base))
			continue;
		pid = find_pid_below(path, len, depth + 1);
		if (pid <= 0)
			pid = -ESRCH; /* empty, or removed while we looked */
		path[base] = '\0';
	}
	closedir(d);
	return pid;
}

int cgroup_find_pid_at(const char *root, uint64_t id)
{
	char path[PATH_MAX];
	int err;

	err = cgroup_path_of_id(root, id, path, sizeof(path));
	if (err)
		return err;
	return find_pid_below(path, sizeof(path), 0);
}

int cgroup_find_pid(uint64_t id)
{
	char root[PATH_MAX];
	int err;

	err = cgroup_v2_root(root, sizeof(root));
	if (err)
		return err;
	return cgroup_find_pid_at(root, id);
}

/* The "0::/path" line of /proc/PID/cgroup (cgroup v2), as |root|/path. */
static int proc_cgroup_dir(const char *root, int proc_dfd, char *buf, size_t len)
{
	char line[PATH_MAX + 8];
	int fd = openat(proc_dfd, "cgroup", O_RDONLY | O_CLOEXEC), err = -ENOENT;
	FILE *f;

	if (fd < 0)
		return -errno;
	f = fdopen(fd, "re");
	if (!f) {
		close(fd);
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		const char *rel = line + 3;

		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (!strcmp(rel, "/"))
			rel = "";
		err = (size_t)snprintf(buf, len, "%s%s", root, rel) < len ? 0 : -ENAMETOOLONG;
		break;
	}
	fclose(f);
	return err;
}

bool cgroup_proc_in(const char *root, int proc_dfd, uint64_t id)
{
	size_t root_len = strlen(root);
	char path[PATH_MAX];

	if (proc_cgroup_dir(root, proc_dfd, path, sizeof(path)))
		return false;
	for (;;) {
		uint64_t cur;
		char *slash;

		if (cgroup_id_of(path, &cur) == 0 && cur == id)
			return true;
		slash = strrchr(path, '/');
		if (!slash || (size_t)(slash - path) < root_len)
			return false;
		*slash = '\0';
	}
}

bool cgroup_is_root(const char *dir)
{
	char root[PATH_MAX];
	struct stat a, b;

	if (cgroup_v2_root(root, sizeof(root)) || stat(root, &a) || stat(dir, &b))
		return false;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}
