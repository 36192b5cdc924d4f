// SPDX-License-Identifier: Apache-2.0
/*
 * The excluded-cgroups map from userspace (see bpf_maps.h): each entry is a
 * bitmask of the origins that exclude the cgroup (the daemon itself,
 * --exclude-cgroup, h2splitctl exclude, Kubernetes opt-outs); each origin sets
 * and clears only its own bit, and the entry goes when no bit is left. h2splitd
 * and h2splitctl both write the map, so every read-modify-write holds an
 * flock() on the pin root. Also reads the earlier one-byte layout (v1).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <bpf/bpf.h>

#include "kernel/bpf_maps.h"
#include "kernel/bpf_maps_int.h"
#include "kernel/cgroup.h"

/* ---- excluded cgroups ---- */

/* Held for a few map syscalls at a time, so a blocking wait is short. */
static int excl_lock(const struct bpf_maps *m)
{
	if (m->lock_fd < 0)
		return 0;
	while (flock(m->lock_fd, LOCK_EX) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static void excl_unlock(const struct bpf_maps *m)
{
	if (m->lock_fd >= 0)
		flock(m->lock_fd, LOCK_UN);
}

/*
 * Under the lock: add |set| to and take |clear| off cgroup |id|'s origins,
 * deleting the entry when none is left. |*had| and |*now| (may be NULL): the
 * origins before and after. An update replaces the value in place, so a
 * connect meanwhile sees the cgroup excluded throughout.
 */
static int excl_change(const struct bpf_maps *m, uint64_t id, uint32_t set, uint32_t clear,
		       uint32_t *had, uint32_t *now)
{
	int fd = m->fd[BPF_MAPS_EXCLUDED];
	struct h2s_exclude_value v = {};
	__u64 key = id;
	uint32_t old;
	bool present;
	int err;

	err = bpf_map_lookup_elem(fd, &key, &v);
	if (err && err != -ENOENT)
		return err;
	present = !err;
	old = present ? v.origins : 0;
	v.origins = (old | set) & ~clear;
	if (had)
		*had = old;
	if (now)
		*now = v.origins;
	if (v.origins)
		return v.origins == old ? 0 : bpf_map_update_elem(fd, &key, &v, BPF_ANY);
	if (!present)
		return 0;
	/* No origin left (or none ever: an entry written by hand, which excludes too). */
	err = bpf_map_delete_elem(fd, &key);
	return err == -ENOENT ? 0 : err;
}

static bool origin_valid(enum h2s_exclude_origin origin)
{
	return origin >= H2S_EXCLUDE_SELF && origin <= H2S_EXCLUDE_ORIGIN_MAX;
}

int bpf_maps_exclude(const struct bpf_maps *m, uint64_t cgroup_id, enum h2s_exclude_origin origin,
		     uint32_t *origins)
{
	int err;

	if (!origin_valid(origin))
		return -EINVAL;
	err = excl_lock(m);
	if (err)
		return err;
	err = excl_change(m, cgroup_id, H2S_EXCLUDE_BIT(origin), 0, NULL, origins);
	excl_unlock(m);
	return err;
}

int bpf_maps_exclude_dir(const struct bpf_maps *m, const char *dir, enum h2s_exclude_origin origin,
			 uint64_t *id, uint32_t *origins)
{
	uint64_t cg;
	int err;

	err = cgroup_id_of(dir, &cg);
	if (err)
		return err;
	if (id)
		*id = cg;
	return bpf_maps_exclude(m, cg, origin, origins);
}

int bpf_maps_include(const struct bpf_maps *m, uint64_t cgroup_id, enum h2s_exclude_origin origin,
		     uint32_t *left)
{
	uint32_t had = 0;
	int err;

	if (!origin_valid(origin))
		return -EINVAL;
	err = excl_lock(m);
	if (err)
		return err;
	err = excl_change(m, cgroup_id, 0, H2S_EXCLUDE_BIT(origin), &had, left);
	excl_unlock(m);
	if (!err && !(had & H2S_EXCLUDE_BIT(origin)))
		err = -ENOENT;
	return err;
}

static int cmp_excluded(const void *a, const void *b)
{
	const struct bpf_maps_excluded *x = a, *y = b;

	return (x->cgroup_id > y->cgroup_id) - (x->cgroup_id < y->cgroup_id);
}

/* The bit of an earlier build's origin byte. A value no build wrote came from
 * someone's hand: it counts as the operator's, so the cgroup stays excluded
 * until they include it. */
static uint32_t v1_origins(__u8 origin)
{
	enum h2s_exclude_origin o = (enum h2s_exclude_origin)origin;

	return H2S_EXCLUDE_BIT(origin_valid(o) ? o : H2S_EXCLUDE_CTL);
}

/* Either layout: |v1| values are one enum h2s_exclude_origin byte. */
static int excluded_dump(int fd, bool v1, struct bpf_maps_excluded **out, int *n)
{
	size_t vsz = v1 ? sizeof(__u8) : sizeof(struct h2s_exclude_value);
	struct bpf_maps_excluded *e;
	void *keys, *vals;
	int err;

	*out = NULL;
	err = bpf_maps_dump(fd, sizeof(__u64), vsz, &keys, &vals, n);
	if (err || *n == 0)
		return err;
	e = calloc((size_t)*n, sizeof(*e));
	for (int i = 0; e && i < *n; i++) {
		memcpy(&e[i].cgroup_id, (char *)keys + i * sizeof(__u64), sizeof(__u64));
		if (v1)
			e[i].origins = v1_origins(((__u8 *)vals)[i]);
		else
			memcpy(&e[i].origins, (char *)vals + i * vsz, sizeof(e[i].origins));
	}
	if (e)
		qsort(e, (size_t)*n, sizeof(*e), cmp_excluded);
	free(keys);
	free(vals);
	if (!e) {
		*n = 0;
		return -ENOMEM;
	}
	*out = e;
	return 0;
}

int bpf_maps_excluded_read(const struct bpf_maps *m, struct bpf_maps_excluded **out, int *n)
{
	return excluded_dump(m->fd[BPF_MAPS_EXCLUDED], false, out, n);
}

int bpf_maps_excluded_read_v1(int fd, struct bpf_maps_excluded **out, int *n)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	int err;

	*out = NULL;
	*n = 0;
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (err)
		return err;
	if (info.type != BPF_MAP_TYPE_HASH || info.key_size != sizeof(__u64) ||
	    info.value_size != sizeof(__u8))
		return -EINVAL;
	return excluded_dump(fd, true, out, n);
}

static bool id_in(const uint64_t *ids, int n, uint64_t id)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

int bpf_maps_excluded_sync(const struct bpf_maps *m, enum h2s_exclude_origin origin,
			   const uint64_t *ids, int n)
{
	struct bpf_maps_excluded *cur = NULL;
	uint32_t bit;
	int n_cur, err;

	if (!origin_valid(origin))
		return -EINVAL;
	bit = H2S_EXCLUDE_BIT(origin);
	err = excl_lock(m);
	if (!err)
		err = bpf_maps_excluded_read(m, &cur, &n_cur);
	for (int i = 0; !err && i < n; i++)
		err = excl_change(m, ids[i], bit, 0, NULL, NULL);
	for (int i = 0; !err && i < n_cur; i++)
		if ((cur[i].origins & bit) && !id_in(ids, n, cur[i].cgroup_id))
			err = excl_change(m, cur[i].cgroup_id, 0, bit, NULL, NULL);
	excl_unlock(m);
	free(cur);
	return err;
}

int bpf_maps_excluded_merge(const struct bpf_maps *m, const struct bpf_maps_excluded *e, int n)
{
	int err = excl_lock(m);

	for (int i = 0; !err && i < n; i++)
		err = excl_change(m, e[i].cgroup_id, e[i].origins, 0, NULL, NULL);
	excl_unlock(m);
	return err;
}

const char *bpf_maps_origin_name(enum h2s_exclude_origin origin)
{
	switch (origin) {
	case H2S_EXCLUDE_SELF:
		return "self";
	case H2S_EXCLUDE_FLAG:
		return "flag";
	case H2S_EXCLUDE_CTL:
		return "ctl";
	case H2S_EXCLUDE_K8S:
		return "k8s";
	}
	return "unknown";
}

const char *bpf_maps_origins_str(uint32_t origins, char *buf, size_t len)
{
	size_t off = 0;

	if (len)
		buf[0] = '\0';
	for (int o = H2S_EXCLUDE_SELF; o <= H2S_EXCLUDE_ORIGIN_MAX; o++) {
		int w;

		if (!(origins & H2S_EXCLUDE_BIT(o)) || off >= len)
			continue;
		w = snprintf(buf + off, len - off, "%s%s", off ? "," : "",
			     bpf_maps_origin_name((enum h2s_exclude_origin)o));
		off += w > 0 ? (size_t)w : 0;
	}
	return buf;
}
