/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cgroup v2 lookups: where the hierarchy is mounted, the kernel's id of a
 * cgroup directory (the same number bpf_get_current_cgroup_id() returns for
 * its tasks), and the way back from an id to a path or to a live process.
 * Stateless and thread-safe; every function returns 0 (or a pid) or -errno.
 */
#ifndef H2SPLIT_CGROUP_H
#define H2SPLIT_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* The cgroup2 mount point, from /proc/self/mounts ("/sys/fs/cgroup" on a
 * unified host, "/sys/fs/cgroup/unified" on a hybrid one). -ENOENT when no
 * cgroup2 is mounted, -ENAMETOOLONG when |len| is too small. */
int cgroup_v2_root(char *buf, size_t len);
/* The same from a mounts(5)-format stream. Prefers /sys/fs/cgroup when
 * several cgroup2 mounts exist, else the first. */
int cgroup_v2_root_from(FILE *mounts, char *buf, size_t len);

/* 0 when |dir| is a directory of a cgroup2 filesystem; -ENOENT, -ENOTDIR,
 * or -EMEDIUMTYPE when it is something else (a cgroup v1 dir, a plain dir). */
int cgroup_check_dir(const char *dir);
/* True when |dir| is the cgroup2 mount root itself (excluding it would
 * exclude every process on the node). */
bool cgroup_is_root(const char *dir);
/* The kernel's id of cgroup |dir| (its kernfs file handle). */
int cgroup_id_of(const char *dir, uint64_t *id);
/* The path of the calling process's own cgroup, under the cgroup2 mount (from
 * /proc/self/cgroup). The daemon excludes it so it never redirects itself. */
int cgroup_self_dir(char *buf, size_t len);

/* The path of cgroup |id| below the cgroup2 mount |root|: open_by_handle_at
 * when allowed (CAP_DAC_READ_SEARCH), else a walk of the tree. -ENOENT when
 * the cgroup is gone. */
int cgroup_path_of_id(const char *root, uint64_t id, char *buf, size_t len);
/* A process in cgroup |id|, or, when it has none, in a cgroup below it (a pod
 * cgroup holds its processes in per-container children). The pid (> 0),
 * -ESRCH when the cgroup is empty, -ENOENT when it is gone. Uses the cgroup2
 * mount found by cgroup_v2_root(). */
int cgroup_find_pid(uint64_t id);
int cgroup_find_pid_at(const char *root, uint64_t id);
/* Whether the process whose /proc/PID directory is open as |proc_dfd| is in
 * cgroup |id| or below it, by its cgroup2 path (/proc/PID/cgroup, read in the
 * daemon's cgroup namespace) under the mount |root|. A /proc/PID fd stays
 * bound to its process, so a pid reused since cannot pass for it. */
bool cgroup_proc_in(const char *root, int proc_dfd, uint64_t id);

#endif
