// SPDX-License-Identifier: Apache-2.0
/*
 * Finds other programs on h2split's cgroup hooks and where they run (see
 * bpf_coexist.h). Read-only: BPF_PROG_QUERY on the attach cgroup (effective
 * array: the order the kernel runs) and on each ancestor (attached programs:
 * where each one sits, and those the effective array leaves out), then on
 * the cgroups below it (a program of a pod's own cgroup, ordered by that
 * cgroup's effective array).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>

#include "kernel/bpf_coexist.h"
#include "kernel/bpf_loader.h"
#include "kernel/cgroup.h"

#define QUERY_MAX 64   /* BPF_CGROUP_MAX_PROGS per cgroup */
#define BELOW_MAX 4096 /* cgroups below the attach cgroup looked at per scan */
#define BELOW_DEPTH 16

static const struct {
	const char *name;
	enum bpf_attach_type type;
} hooks[COEXIST_HOOKS] = {
    [COEXIST_CONNECT4] = {"connect4", BPF_CGROUP_INET4_CONNECT},
    [COEXIST_CONNECT6] = {"connect6", BPF_CGROUP_INET6_CONNECT},
    [COEXIST_GETPEER4] = {"getpeername4", BPF_CGROUP_INET4_GETPEERNAME},
    [COEXIST_GETPEER6] = {"getpeername6", BPF_CGROUP_INET6_GETPEERNAME},
    [COEXIST_SOCKOPS] = {"sock_ops", BPF_CGROUP_SOCK_OPS},
};

static const char *const pos_names[COEXIST_POSITIONS] = {"before", "after", "overridden"};

const char *bpf_coexist_hook_name(enum bpf_coexist_hook h)
{
	return (unsigned)h < COEXIST_HOOKS ? hooks[h].name : "?";
}

const char *bpf_coexist_pos_name(enum bpf_coexist_pos p)
{
	return (unsigned)p < COEXIST_POSITIONS ? pos_names[p] : "?";
}

struct own_ids {
	uint32_t id[BPF_LOADER_PROGS];
};

static bool is_own(const struct own_ids *own, uint32_t id)
{
	for (int i = 0; i < BPF_LOADER_PROGS; i++)
		if (own->id[i] && own->id[i] == id)
			return true;
	return false;
}

/* Program ids on |type| at |dir|: effective (run order) or attached there. */
static int query(const char *dir, enum bpf_attach_type type, bool effective, uint32_t *ids,
		 uint32_t *n)
{
	LIBBPF_OPTS(bpf_prog_query_opts, q, .query_flags = effective ? BPF_F_QUERY_EFFECTIVE : 0,
		    .prog_ids = ids, .prog_cnt = QUERY_MAX);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err;

	*n = 0;
	if (fd < 0)
		return -errno;
	err = bpf_prog_query_opts(fd, type, &q) ? -errno : 0;
	close(fd);
	if (!err)
		*n = q.prog_cnt < QUERY_MAX ? q.prog_cnt : QUERY_MAX;
	return err;
}

static void prog_name(uint32_t id, char *buf, size_t len)
{
	struct bpf_prog_info info = {};
	__u32 ilen = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id);

	snprintf(buf, len, "?");
	if (fd < 0)
		return;
	if (bpf_obj_get_info_by_fd(fd, &info, &ilen) == 0 && info.name[0])
		snprintf(buf, len, "%s", info.name);
	close(fd);
}

static struct bpf_coexist_prog *add(struct bpf_coexist_report *r, enum bpf_coexist_hook h,
				    enum bpf_coexist_pos pos, uint32_t id, const char *cgroup)
{
	struct bpf_coexist_prog *p;

	r->count[h][pos]++;
	if (h <= COEXIST_CONNECT6 && pos == COEXIST_BEFORE)
		r->n_first++;
	if (r->n == BPF_COEXIST_MAX) {
		r->truncated = true;
		return NULL;
	}
	p = &r->progs[r->n++];
	*p = (struct bpf_coexist_prog){.hook = h, .pos = pos, .id = id};
	prog_name(id, p->name, sizeof(p->name));
	snprintf(p->cgroup, sizeof(p->cgroup), "%.*s", (int)sizeof(p->cgroup) - 1, cgroup);
	return p;
}

static struct bpf_coexist_prog *find(struct bpf_coexist_report *r, enum bpf_coexist_hook h,
				     uint32_t id)
{
	for (int i = 0; i < r->n; i++)
		if (r->progs[i].hook == h && r->progs[i].id == id)
			return &r->progs[i];
	return NULL;
}

/* |dir|'s parent into |dir|; false at (or above) the cgroup2 root. */
static bool up(char *dir, const char *root)
{
	char *slash = strrchr(dir, '/');

	if (strlen(dir) <= strlen(root) || !slash || slash == dir)
		return false;
	*slash = '\0';
	return strlen(dir) >= strlen(root);
}

/* One hook: the effective array orders the programs; then each level from
 * |dir| up says where they are attached, and which it has that the effective
 * array leaves out. */
static int scan_hook(struct bpf_coexist_report *r, enum bpf_coexist_hook h, const char *dir,
		     const char *root, const struct own_ids *own)
{
	uint32_t ids[QUERY_MAX], n, ours = UINT32_MAX;
	char level[PATH_MAX];
	int err = query(dir, hooks[h].type, true, ids, &n);

	if (err)
		return err;
	for (uint32_t i = 0; i < n && ours == UINT32_MAX; i++)
		if (is_own(own, ids[i]))
			ours = i;
	for (uint32_t i = 0; i < n; i++)
		if (!is_own(own, ids[i]))
			add(r, h, i < ours ? COEXIST_BEFORE : COEXIST_AFTER, ids[i], "");
	snprintf(level, sizeof(level), "%s", dir);
	do {
		if (query(level, hooks[h].type, false, ids, &n))
			continue;
		for (uint32_t i = 0; i < n; i++) {
			struct bpf_coexist_prog *p = find(r, h, ids[i]);

			if (is_own(own, ids[i]))
				continue;
			if (!p)
				add(r, h, COEXIST_OVERRIDDEN, ids[i], level);
			else if (!p->cgroup[0])
				snprintf(p->cgroup, sizeof(p->cgroup), "%.*s",
					 (int)sizeof(p->cgroup) - 1, level);
		}
	} while (up(level, root));
	return 0;
}

/* Programs attached to |dir|, a cgroup below the attach cgroup, ordered by
 * |dir|'s own effective array: before h2split's for the pods at and below it,
 * or after. A program already reported for the hook is not counted again. */
static void scan_below_one(struct bpf_coexist_report *r, const char *dir, const struct own_ids *own)
{
	for (int h = 0; h < COEXIST_HOOKS; h++) {
		uint32_t ids[QUERY_MAX], eff[QUERY_MAX], n, n_eff = 0, ours = UINT32_MAX;
		bool have_eff = false;

		if (query(dir, hooks[h].type, false, ids, &n))
			continue;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t at = UINT32_MAX;

			if (is_own(own, ids[i]) || find(r, (enum bpf_coexist_hook)h, ids[i]))
				continue;
			if (!have_eff) {
				have_eff = true;
				if (query(dir, hooks[h].type, true, eff, &n_eff))
					n_eff = 0;
				for (uint32_t j = 0; j < n_eff && ours == UINT32_MAX; j++)
					if (is_own(own, eff[j]))
						ours = j;
			}
			for (uint32_t j = 0; j < n_eff && at == UINT32_MAX; j++)
				if (eff[j] == ids[i])
					at = j;
			add(r, (enum bpf_coexist_hook)h, at < ours ? COEXIST_BEFORE : COEXIST_AFTER,
			    ids[i], dir);
		}
	}
}

/* Every cgroup below |path| (a buffer of |len| it extends and restores),
 * depth first, at most BELOW_MAX of them. */
static void scan_below(struct bpf_coexist_report *r, char *path, size_t len,
		       const struct own_ids *own, int depth, int *visited)
{
	size_t base = strlen(path);
	struct dirent *e;
	DIR *d;

	if (depth > BELOW_DEPTH || !(d = opendir(path)))
		return;
	while ((e = readdir(d)) && *visited < BELOW_MAX) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.' ||
		    base + 1 + strlen(e->d_name) >= len)
			continue;
		path[base] = '/';
		strcpy(path + base + 1, e->d_name);
		(*visited)++;
		scan_below_one(r, path, own);
		scan_below(r, path, len, own, depth + 1, visited);
		path[base] = '\0';
	}
	closedir(d);
}

int bpf_coexist_scan(const char *pin_root, const char *cgroup_dir, struct bpf_coexist_report *r)
{
	struct bpf_loader_status st;
	struct own_ids own = {};
	char root[PATH_MAX], below[PATH_MAX];
	int err, visited = 0;

	memset(r, 0, sizeof(*r));
	err = cgroup_v2_root(root, sizeof(root));
	if (err)
		return err;
	if (!cgroup_dir || !cgroup_dir[0])
		cgroup_dir = root;
	if (bpf_loader_status(pin_root, &st) == 0)
		for (int i = 0; i < BPF_LOADER_PROGS; i++)
			own.id[i] = st.links[i].prog_id;
	for (int h = 0; h < COEXIST_HOOKS; h++) {
		err = scan_hook(r, (enum bpf_coexist_hook)h, cgroup_dir, root, &own);
		if (err)
			return err;
	}
	snprintf(below, sizeof(below), "%s", cgroup_dir);
	scan_below(r, below, sizeof(below), &own, 0, &visited);
	return 0;
}

int bpf_coexist_warnings(const struct bpf_coexist_report *r, char *buf, size_t len)
{
	size_t off = 0;
	int lines = 0;

	if (len)
		buf[0] = '\0';
	for (int i = 0; i < r->n && off < len; i++) {
		const struct bpf_coexist_prog *p = &r->progs[i];
		const char *what;
		int n;

		if (p->pos == COEXIST_OVERRIDDEN)
			what = "is overridden: h2split's attachment keeps it from running for pods "
			       "below its cgroup";
		else if (p->pos == COEXIST_BEFORE && p->hook <= COEXIST_CONNECT6)
			what = "runs before h2split: connects it rewrites are not redirected";
		else
			continue;
		n = snprintf(buf + off, len - off, "warning: %s program %u (%s, at %s) %s\n",
			     bpf_coexist_hook_name(p->hook), p->id, p->name,
			     p->cgroup[0] ? p->cgroup : "?", what);
		if (n < 0 || (size_t)n >= len - off) {
			buf[off] = '\0'; /* whole lines only */
			break;
		}
		off += (size_t)n;
		lines++;
	}
	return lines;
}

bool bpf_coexist_same(const struct bpf_coexist_report *a, const struct bpf_coexist_report *b)
{
	if (a->n != b->n || a->truncated != b->truncated)
		return false;
	for (int i = 0; i < a->n; i++)
		if (a->progs[i].hook != b->progs[i].hook || a->progs[i].pos != b->progs[i].pos ||
		    a->progs[i].id != b->progs[i].id ||
		    strcmp(a->progs[i].cgroup, b->progs[i].cgroup))
			return false;
	return true;
}
