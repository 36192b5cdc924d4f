// SPDX-License-Identifier: Apache-2.0
/*
 * Loads bpf/h2split.bpf.c through its skeleton, pins maps by name and one
 * cgroup bpf_link per program under the pin root (see bpf_loader.h). The key
 * invariant is restart without a gap: pinned maps are reused and pinned links
 * are pointed at the new programs with bpf_link_update, never detached first.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "base/log.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_loader_int.h"
#include "kernel/cgroup.h"
#include "h2split.skel.h"

/* Where drop_incompatible_pins() sets aside an exclusion map of the earlier
 * layout (one origin byte per cgroup) until its entries are in the new one. */
#define EXCLUDED_V1_PIN "h2s_excluded_cgroups_v1" /* bpffs refuses names with a dot */

static const struct {
	const char *name; /* the program's function name in h2split.bpf.c */
	const char *hook;
	enum bpf_attach_type type;
	bool first; /* must see the address before other programs (see attach_prog()) */
} progs[BPF_LOADER_PROGS] = {
    [BPF_LOADER_CONNECT4] = {"h2s_connect4", "connect4", BPF_CGROUP_INET4_CONNECT, true},
    [BPF_LOADER_CONNECT6] = {"h2s_connect6", "connect6", BPF_CGROUP_INET6_CONNECT, true},
    [BPF_LOADER_SOCKOPS] = {"h2s_sockops", "sock_ops", BPF_CGROUP_SOCK_OPS, false},
    [BPF_LOADER_GETPEER4] = {"h2s_getpeer4", "getpeername4", BPF_CGROUP_INET4_GETPEERNAME, true},
    [BPF_LOADER_GETPEER6] = {"h2s_getpeer6", "getpeername6", BPF_CGROUP_INET6_GETPEERNAME, true},
    [BPF_LOADER_RELEASE] = {"h2s_release", "sock_release", BPF_CGROUP_INET_SOCK_RELEASE, false},
};

/* Attach flags of Linux 6.15+ (uapi of this build's headers may predate them). */
#define H2S_F_BEFORE (1U << 3)
#define H2S_F_PREORDER (1U << 6)

struct h2s_bpf {
	struct h2split *skel; /* owned */
	struct bpf_maps maps; /* fds borrowed from |skel| */
	uint64_t cgroup_id;
	int migrate_fd; /* borrowed from |skel|; -1: the kernel cannot migrate */
};

/* Whether the kernel takes sk_reuseport programs that migrate (5.14+): a
 * two-instruction "return SK_PASS" loaded on its own. */
static bool can_migrate(void)
{
	const struct bpf_insn insns[] = {
	    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = SK_PASS},
	    {.code = BPF_JMP | BPF_EXIT},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts,
		    .expected_attach_type = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE);
	int fd = bpf_prog_load(BPF_PROG_TYPE_SK_REUSEPORT, "h2s_probe", "GPL", insns,
			       sizeof(insns) / sizeof(insns[0]), &opts);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

const char *bpf_loader_prog_name(enum bpf_loader_prog p)
{
	return (unsigned)p < BPF_LOADER_PROGS ? progs[p].name : NULL;
}

const char *bpf_loader_prog_hook(enum bpf_loader_prog p)
{
	return (unsigned)p < BPF_LOADER_PROGS ? progs[p].hook : NULL;
}

const char *bpf_loader_root(const char *pin_root)
{
	return pin_root && pin_root[0] ? pin_root : BPF_LOADER_PIN_ROOT;
}

static int join(char *buf, size_t len, const char *dir, const char *name)
{
	return snprintf(buf, len, "%s/%s", dir, name) >= (int)len ? -ENAMETOOLONG : 0;
}

/* ---- open ---- */

/* libbpf's messages (the verifier log among them) into our log, whole. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char small[512], *buf = small;
	va_list ap2;
	int n;

	if (level == LIBBPF_DEBUG && log_get_level() > LOG_DEBUG)
		return 0;
	va_copy(ap2, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n >= (int)sizeof(small) && (buf = malloc((size_t)n + 1)))
		vsnprintf(buf, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	if (!buf)
		buf = small;
	n = (int)strlen(buf);
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n > 1500 && level != LIBBPF_DEBUG) {
		/* A verifier log: longer than a log line may be, so verbatim. */
		log_warn("libbpf: verifier log follows on stderr");
		fprintf(stderr, "%s\n", buf);
	} else if (level == LIBBPF_WARN)
		log_warn("%s", buf);
	else if (level == LIBBPF_INFO)
		log_info("%s", buf);
	else
		log_debug("%s", buf);
	if (buf != small)
		free(buf);
	return 0;
}

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1;; p++) {
		bool end = *p == '\0';

		if (*p != '/' && !end)
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		if (end)
			return 0;
		*p = '/';
	}
}

/* The exclusion map as builds before per-origin bits pinned it. */
static bool excluded_v1(const struct bpf_map *map, const struct bpf_map_info *info)
{
	return !strcmp(bpf_map__name(map), bpf_maps_name(BPF_MAPS_EXCLUDED)) &&
	       info->type == BPF_MAP_TYPE_HASH && info->key_size == sizeof(__u64) &&
	       info->value_size == sizeof(__u8);
}

/*
 * libbpf refuses a pinned map whose type, sizes or flags differ from the
 * object's (an upgrade changed a struct). Drop such pins so a new map is
 * created and pinned: its entries are lost, but the daemon rewrites services
 * and its exclusions at start, and the old programs keep the old map until
 * their links are updated. The exclusion map of the earlier layout is set
 * aside instead: it holds `h2splitctl exclude` entries nobody else rewrites,
 * so carry_exclusions() copies them over.
 */
static void drop_incompatible_pins(struct bpf_object *obj, const char *root)
{
	struct bpf_map *map;

	bpf_object__for_each_map(map, obj)
	{
		struct bpf_map_info info = {};
		__u32 len = sizeof(info);
		char path[PATH_MAX], aside[PATH_MAX];
		int fd;

		if (join(path, sizeof(path), root, bpf_map__name(map)))
			continue;
		fd = bpf_obj_get(path);
		if (fd < 0)
			continue;
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
		    (info.type != bpf_map__type(map) || info.key_size != bpf_map__key_size(map) ||
		     info.value_size != bpf_map__value_size(map) ||
		     info.max_entries != bpf_map__max_entries(map) ||
		     info.map_flags != bpf_map__map_flags(map))) {
			if (excluded_v1(map, &info) &&
			    !join(aside, sizeof(aside), root, EXCLUDED_V1_PIN) &&
			    rename(path, aside) == 0) {
				log_warn("pinned map layout changed, converting it map=%s path=%s "
					 "note=\"its entries are carried over\"",
					 bpf_map__name(map), path);
			} else {
				log_warn("pinned map layout changed, replacing it map=%s path=%s "
					 "note=\"its entries are lost\"",
					 bpf_map__name(map), path);
				unlink(path);
			}
		}
		close(fd);
	}
}

static bool link_matches(int fd, enum bpf_attach_type type, uint64_t cgroup_id)
{
	struct bpf_link_info info = {};
	__u32 len = sizeof(info);

	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_CGROUP &&
	       info.cgroup.attach_type == type && info.cgroup.cgroup_id == cgroup_id;
}

static void link_forget(struct bpf_link *l)
{
	if (!l)
		return;
	bpf_link__disconnect(l); /* closing the fd must not detach: the pin keeps it */
	bpf_link__destroy(l);
}

/* The running kernel's release as a number: 6.18.44 -> 61844. */
static unsigned kernel_release(void)
{
	struct utsname u;
	unsigned a = 0, b = 0, c = 0;

	if (uname(&u) == 0)
		sscanf(u.release, "%u.%u.%u", &a, &b, &c);
	return a * 10000 + b * 100 + (c > 99 ? 99 : c);
}

/* Whether to attach the address hooks with BPF_F_PREORDER: cgroup links take
 * it since Linux 6.17 (the mprog API for cgroup programs); an older kernel
 * refuses it and gets the plain attach. H2SPLIT_BPF_PREORDER=0 attaches as
 * before 6.17 (tests use it to show that order). */
static bool preorder_wanted(void)
{
	const char *v = getenv("H2SPLIT_BPF_PREORDER");

	return !(v && !strcmp(v, "0")) && kernel_release() >= 61700;
}

/* bpf_link_update() of a cgroup link put the new program into the wrong slot
 * of the effective arrays while a BPF_F_PREORDER program was anywhere in the
 * hierarchy, until "bpf: Fix effective prog array index with BPF_F_PREORDER"
 * (CVE-2026-72427; fixed in 6.18.40 and 7.1.5). On such a kernel a link of
 * ours is replaced (attach, then detach: the arrays are recomputed) instead. */
static bool link_update_safe(void)
{
	unsigned v = kernel_release();

	return v < 61500 || (v >= 61840 && v < 61900) || v >= 70105;
}

/* Whether |prog| is the first program of the cgroup's effective array for
 * |type|: what tasks in the cgroup (and pods below it) run first. */
static bool runs_first(int cg_fd, enum bpf_attach_type type, const struct bpf_program *prog)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info), ids[64];
	LIBBPF_OPTS(bpf_prog_query_opts, q, .query_flags = BPF_F_QUERY_EFFECTIVE, .prog_ids = ids,
		    .prog_cnt = sizeof(ids) / sizeof(ids[0]));

	if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) ||
	    bpf_prog_query_opts(cg_fd, type, &q) || q.prog_cnt == 0)
		return false;
	return ids[0] == info.id;
}

/* A new link for |prog| in front of every program that does not itself ask
 * for the front: BPF_F_PREORDER runs it before the programs of descendant
 * cgroups and before every program of its own and ancestor cgroups attached
 * without the flag; BPF_F_BEFORE puts it first among its own cgroup's. The fd,
 * or -errno (-EINVAL: the kernel has no such flags for links). */
static int link_create_first(const struct bpf_program *prog, int cg_fd, enum bpf_attach_type type)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = H2S_F_PREORDER | H2S_F_BEFORE);
	int fd = bpf_link_create(bpf_program__fd(prog), cg_fd, type, &opts);

	return fd < 0 ? -errno : fd;
}

/* Swap the pinned link at |path| (|old|, may be NULL) for the new link |fd|,
 * already attached: no connect goes unredirected meanwhile, and a connect
 * seeing both is rewritten once (the second program finds the listener, not a
 * service). Takes |fd| and |old|. */
static int pin_new_link(struct bpf_link *old, int fd, const char *path, const char *name)
{
	int err = 0;

	if (old) {
		bpf_link_detach(bpf_link__fd(old));
		link_forget(old);
	}
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("unlink old link pin failed path=%s err=%s", path, strerror(errno));
	if (bpf_obj_pin(fd, path)) {
		err = -errno;
		log_error("pin bpf link failed path=%s err=%s", path, strerror(-err));
	} else {
		log_info("bpf program attached prog=%s link=%s", name, path);
	}
	close(fd); /* the pin keeps it; unpinned, it detaches rather than leaks */
	return err;
}

/* Attach program |i| to the cgroup, or update the pinned link at |path| in
 * place. An address hook (progs[].first) whose kernel takes BPF_F_PREORDER
 * ends up in front: updated in place only where that is safe and it still
 * runs first, else attached anew in front. */
static int attach_prog(struct bpf_program *prog, int i, const char *path, int cg_fd, uint64_t cg_id)
{
	enum bpf_attach_type type = progs[i].type;
	bool first = progs[i].first && preorder_wanted();
	struct bpf_link *old = NULL, *link;
	int err, fd;

	if (access(path, F_OK) == 0) /* else libbpf warns about the missing pin */
		old = bpf_link__open(path);
	if (old && link_matches(bpf_link__fd(old), type, cg_id) && (!first || link_update_safe())) {
		err = bpf_link__update_program(old, prog);
		if (!err && (!first || runs_first(cg_fd, type, prog))) {
			log_info("bpf program updated in place prog=%s link=%s",
				 bpf_program__name(prog), path);
			link_forget(old);
			return 0;
		}
		if (err)
			log_warn("bpf_link_update failed, re-attaching prog=%s link=%s err=%s",
				 bpf_program__name(prog), path, strerror(-err));
		else
			log_info("bpf program updated in place but not first, attaching it in "
				 "front prog=%s link=%s",
				 bpf_program__name(prog), path);
	}
	if (first) {
		fd = link_create_first(prog, cg_fd, type);
		if (fd >= 0)
			return pin_new_link(old, fd, path, bpf_program__name(prog));
		log_info(
		    "bpf_preorder_unsupported prog=%s err=%s note=\"Linux 6.17+ runs it "
		    "before other cgroup programs; here programs of cgroups below --cgroup, and "
		    "those attached before it to --cgroup, see the address first\"",
		    bpf_program__name(prog), strerror(-fd));
	}
	link = bpf_program__attach_cgroup(prog, cg_fd);
	if (!link) {
		err = -errno;
		log_error("attach bpf program failed prog=%s err=%s", bpf_program__name(prog),
			  strerror(-err));
		link_forget(old);
		return err;
	}
	fd = dup(bpf_link__fd(link));
	bpf_link__destroy(link); /* |fd| keeps it attached */
	if (fd < 0) {
		err = -errno;
		link_forget(old);
		return err;
	}
	return pin_new_link(old, fd, path, bpf_program__name(prog));
}

/* The ids of the maps used by the program behind the link pinned at |path|
 * (at most |max|); 0 when nothing is attached there yet. */
static int linked_prog_maps(const char *path, __u32 *ids, __u32 max)
{
	struct bpf_link_info link = {};
	struct bpf_prog_info prog = {};
	__u32 len = sizeof(link);
	int fd, pfd;

	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	pfd = bpf_obj_get_info_by_fd(fd, &link, &len) ? -1 : bpf_prog_get_fd_by_id(link.prog_id);
	close(fd);
	if (pfd < 0)
		return 0;
	len = sizeof(prog);
	prog.nr_map_ids = max;
	prog.map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(pfd, &prog, &len))
		prog.nr_map_ids = 0;
	close(pfd);
	return (int)(prog.nr_map_ids < max ? prog.nr_map_ids : max);
}

/* For map |id| of an attached program: whether it is one of h2split's pinned
 * maps that this load does not use (|ours|); with |clear|, a liveness map
 * (h2s_listeners, ours or not) is emptied instead. */
static bool other_map(__u32 id, const __u32 *ours, int n_ours, bool clear)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	bool other = false;
	int fd = bpf_map_get_fd_by_id(id);

	if (fd < 0)
		return false;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && !strncmp(info.name, "h2s_", 4)) {
		other = true;
		for (int j = 0; j < n_ours; j++)
			other &= id != ours[j];
		if (clear && info.type == BPF_MAP_TYPE_SOCKMAP &&
		    !strcmp(info.name, "h2s_listeners"))
			for (__u32 slot = 0; slot < info.max_entries; slot++)
				bpf_map_delete_elem(fd, &slot);
	}
	close(fd);
	return other;
}

/* Over every program linked under |dir|: how many of their maps are not
 * ours, or (|clear|) empty their liveness maps. */
static int walk_linked_maps(const char *dir, const __u32 *ours, int n_ours, bool clear)
{
	int other = 0;

	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		char path[PATH_MAX];
		__u32 ids[64];
		int n;

		if (join(path, sizeof(path), dir, progs[i].name))
			continue;
		n = linked_prog_maps(path, ids, sizeof(ids) / sizeof(ids[0]));
		for (int j = 0; j < n; j++)
			other += other_map(ids[j], ours, n_ours, clear);
	}
	return other;
}

/*
 * An upgrade that changed a map's layout gets new maps (see
 * drop_incompatible_pins()) while the attached programs, and the daemon that
 * may still run beside us, use the old ones. Updating the links one at a time
 * would mix them: the new connect4 redirecting to the old daemon, which looks
 * for tuple records in a map the new sockops no longer writes. So first the
 * liveness map the old programs read is emptied: redirection stops (fail
 * open, connects go where the app aimed) and the old daemon gets nothing new.
 * Then a moment for connect() calls already past the old connect4 to reach
 * its sockops (both run inside the one syscall), and then the links are
 * updated. This daemon takes the liveness slot once it is ready; h2s_migrate
 * then gives it every new connect.
 */
static void pause_old_programs(struct h2s_bpf *b, const char *dir)
{
	__u32 ours[BPF_MAPS_COUNT];
	int other;

	for (int i = 0; i < BPF_MAPS_COUNT; i++) {
		struct bpf_map_info info = {};
		__u32 len = sizeof(info);

		ours[i] = bpf_obj_get_info_by_fd(b->maps.fd[i], &info, &len) ? 0 : info.id;
	}
	other = walk_linked_maps(dir, ours, BPF_MAPS_COUNT, false);
	if (!other)
		return;
	walk_linked_maps(dir, ours, BPF_MAPS_COUNT, true);
	log_warn("bpf_map_layout_switch maps=%d note=\"the attached programs use maps of another "
		 "layout: redirection is off until this daemon is ready, connects go direct\"",
		 other);
	nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
}

static int attach_all(struct h2s_bpf *b, const char *root, int cg_fd)
{
	char dir[PATH_MAX], path[PATH_MAX];
	int err;

	err = join(dir, sizeof(dir), root, "links");
	if (!err)
		err = mkdir_p(dir);
	if (!err)
		pause_old_programs(b, dir);
	for (int i = 0; !err && i < BPF_LOADER_PROGS; i++) {
		struct bpf_program *prog =
		    bpf_object__find_program_by_name(b->skel->obj, progs[i].name);

		if (!prog)
			return -ENOENT;
		err = join(path, sizeof(path), dir, progs[i].name);
		if (!err)
			err = attach_prog(prog, i, path, cg_fd, b->cgroup_id);
	}
	return err;
}

/*
 * The entries of an exclusion map of the earlier layout, set aside by
 * drop_incompatible_pins() (or by a start that died before this step), into
 * the new map, before any program uses it: an operator's exclusions survive
 * the upgrade, and opted-out pods stay excluded until the Kubernetes source
 * has synced. The old pin goes only once they are in.
 */
static int carry_exclusions(struct h2s_bpf *b, const char *root)
{
	struct bpf_maps_excluded *e = NULL;
	char path[PATH_MAX];
	int fd, n = 0, err;

	if (join(path, sizeof(path), root, EXCLUDED_V1_PIN))
		return -ENAMETOOLONG;
	if (access(path, F_OK) < 0)
		return 0;
	fd = bpf_obj_get(path);
	err = fd < 0 ? fd : bpf_maps_excluded_read_v1(fd, &e, &n);
	if (!err)
		err = bpf_maps_excluded_merge(&b->maps, e, n);
	if (fd >= 0)
		close(fd);
	free(e);
	if (err) {
		log_error("carry exclusions over failed path=%s err=%s note=\"the old map stays "
			  "pinned there; the next start retries\"",
			  path, strerror(-err));
		return err;
	}
	log_info("bpf exclusions carried over from the earlier map layout entries=%d", n);
	if (unlink(path) < 0)
		log_warn("unpin failed path=%s err=%s", path, strerror(errno));
	return 0;
}

/* The tracking maps' sizes (--max-redirected-sockets); before pins are
 * compared, so a changed size is a layout change. 0: the object's. */
static int size_maps(struct h2s_bpf *b, int max_sockets)
{
	int err;

	if (max_sockets <= 0)
		return 0;
	err = bpf_map__set_max_entries(b->skel->maps.h2s_sock_origdst, (__u32)max_sockets);
	if (!err)
		err = bpf_map__set_max_entries(b->skel->maps.h2s_conn_origdst,
					       (__u32)max_sockets / 4);
	if (err)
		log_error("size BPF maps failed max_sockets=%d err=%s", max_sockets,
			  strerror(-err));
	return err;
}

static int load(struct h2s_bpf *b, const char *root, int max_sockets)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = root);
	int err;

	b->skel = h2split__open_opts(&opts);
	if (!b->skel) {
		err = -errno;
		log_error("open BPF object failed err=%s", strerror(-err));
		return err;
	}
	err = size_maps(b, max_sockets);
	if (err)
		return err;
	drop_incompatible_pins(b->skel->obj, root);
	if (!can_migrate()) {
		log_info("reuseport_migration_unsupported note=\"Linux 5.14+: a closing "
			 "listener's queue moves to the next daemon's\"");
		bpf_program__set_autoload(b->skel->progs.h2s_migrate, false);
	}
	err = h2split__load(b->skel);
	if (err) {
		log_error("load BPF programs failed err=%s note=\"h2split needs Linux %s+ with "
			  "cgroup v2; the libbpf lines above name the refused program\"",
			  strerror(-err), BPF_LOADER_MIN_KERNEL);
		return err;
	}
	for (int i = 0; i < BPF_MAPS_COUNT; i++) {
		struct bpf_map *map =
		    bpf_object__find_map_by_name(b->skel->obj, bpf_maps_name((enum bpf_maps_id)i));

		if (!map)
			return -ENOENT;
		b->maps.fd[i] = bpf_map__fd(map);
	}
	bpf_maps_probe(&b->maps);
	b->migrate_fd = bpf_program__autoload(b->skel->progs.h2s_migrate)
			    ? bpf_program__fd(b->skel->progs.h2s_migrate)
			    : -1;
	b->maps.lock_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->maps.lock_fd < 0) {
		err = -errno;
		log_error("open pin root failed dir=%s err=%s", root, strerror(-err));
		return err;
	}
	return carry_exclusions(b, root);
}

int bpf_loader_migrate_fd(const struct h2s_bpf *b)
{
	return b ? b->migrate_fd : -1;
}

int bpf_loader_open(const char *pin_root, const char *cgroup_dir, int max_sockets,
		    struct h2s_bpf **out)
{
	const char *root = bpf_loader_root(pin_root);
	char cg_root[PATH_MAX];
	struct h2s_bpf *b;
	int cg_fd = -1, err;

	libbpf_set_print(libbpf_log);
	if (!cgroup_dir || !cgroup_dir[0]) {
		err = cgroup_v2_root(cg_root, sizeof(cg_root));
		if (err) {
			log_error("cgroup v2 not mounted: mount -t cgroup2 none /sys/fs/cgroup");
			return err;
		}
		cgroup_dir = cg_root;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		b->maps.fd[i] = -1;
	b->migrate_fd = -1;
	b->maps.lock_fd = -1;
	err = cgroup_id_of(cgroup_dir, &b->cgroup_id);
	if (err) {
		log_error("not a cgroup v2 directory dir=%s err=%s: pass --cgroup a directory "
			  "under the cgroup2 mount",
			  cgroup_dir, strerror(-err));
		goto fail;
	}
	cg_fd = open(cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0) {
		err = -errno;
		log_error("open cgroup failed dir=%s err=%s", cgroup_dir, strerror(-err));
		goto fail;
	}
	err = mkdir_p(root);
	if (err) {
		log_error("create pin root failed dir=%s err=%s", root, strerror(-err));
		goto fail;
	}
	err = load(b, root, max_sockets);
	if (!err)
		err = attach_all(b, root, cg_fd);
	if (err)
		goto fail;
	close(cg_fd);
	log_info("bpf installed pin_root=%s cgroup=%s cgroup_id=%llu", root, cgroup_dir,
		 (unsigned long long)b->cgroup_id);
	*out = b;
	return 0;
fail:
	if (cg_fd >= 0)
		close(cg_fd);
	bpf_loader_close(b);
	return err;
}

const struct bpf_maps *bpf_loader_maps(const struct h2s_bpf *b)
{
	return &b->maps;
}

int bpf_loader_set_listen(struct h2s_bpf *b, const struct sockaddr_storage *v4,
			  const struct sockaddr_storage *v6)
{
	return bpf_maps_set_listen(&b->maps, v4, v6);
}

int bpf_loader_add_listener(struct h2s_bpf *b, enum h2s_listener_slot slot, int listen_fd)
{
	return bpf_maps_add_listener(&b->maps, slot, listen_fd);
}

int bpf_loader_del_listener(struct h2s_bpf *b, enum h2s_listener_slot slot)
{
	return bpf_maps_del_listener(&b->maps, slot);
}

uint64_t bpf_loader_cgroup_id(const struct h2s_bpf *b)
{
	return b->cgroup_id;
}

void bpf_loader_close(struct h2s_bpf *b)
{
	if (!b)
		return;
	h2split__destroy(b->skel); /* links were disconnected: pins keep them */
	if (b->maps.lock_fd >= 0)
		close(b->maps.lock_fd);
	free(b);
}

/* ---- uninstall and status ---- */

/* Only our own names are removed: a --bpffs pointing at a shared directory
 * (or at the bpffs root) must not lose anyone else's pins. */
static int remove_pin(const char *path, bool is_link)
{
	if (is_link) {
		int fd = bpf_obj_get(path);

		if (fd >= 0) {
			int err = bpf_link_detach(fd);

			if (err && err != -EINVAL && err != -ENOLINK)
				log_warn("detach bpf link failed path=%s err=%s", path,
					 strerror(-err));
			close(fd);
		}
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		log_error("unpin failed path=%s err=%s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

int bpf_loader_uninstall(const char *pin_root)
{
	const char *root = bpf_loader_root(pin_root);
	char links[PATH_MAX], path[PATH_MAX];
	int err = 0, e;

	if (join(links, sizeof(links), root, "links"))
		return -ENAMETOOLONG;
	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		e = join(path, sizeof(path), links, progs[i].name);
		if (!e)
			e = remove_pin(path, true);
		err = err ? err : e;
	}
	for (int i = 0; i <= BPF_MAPS_COUNT; i++) {
		/* One past the maps: an exclusion map an upgrade set aside. */
		e = join(path, sizeof(path), root,
			 i < BPF_MAPS_COUNT ? bpf_maps_name((enum bpf_maps_id)i) : EXCLUDED_V1_PIN);
		if (!e)
			e = remove_pin(path, false);
		err = err ? err : e;
	}
	if (rmdir(links) < 0 && errno != ENOENT)
		log_warn("pin dir not removed dir=%s err=%s", links, strerror(errno));
	if (rmdir(root) < 0 && errno != ENOENT)
		log_warn("pin root not removed dir=%s err=%s", root, strerror(errno));
	if (!err)
		log_info("bpf uninstalled pin_root=%s", root);
	return err;
}

int bpf_loader_status(const char *pin_root, struct bpf_loader_status *st)
{
	const char *root = bpf_loader_root(pin_root);
	char path[PATH_MAX];

	memset(st, 0, sizeof(*st));
	for (int i = 0; i < BPF_MAPS_COUNT; i++) {
		if (join(path, sizeof(path), root, bpf_maps_name((enum bpf_maps_id)i)))
			return -ENAMETOOLONG;
		st->map_pinned[i] = access(path, F_OK) == 0;
	}
	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		struct bpf_loader_link_status *ls = &st->links[i];
		struct bpf_link_info info = {};
		__u32 len = sizeof(info);
		int fd;

		if (snprintf(path, sizeof(path), "%s/links/%s", root, progs[i].name) >=
		    (int)sizeof(path))
			return -ENAMETOOLONG;
		fd = bpf_obj_get(path);
		if (fd < 0) {
			if (fd != -ENOENT)
				return fd;
			continue;
		}
		ls->pinned = true;
		if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
		    info.type == BPF_LINK_TYPE_CGROUP) {
			ls->prog_id = info.prog_id;
			ls->cgroup_id = info.cgroup.cgroup_id;
			ls->attached = info.cgroup.cgroup_id != 0;
		}
		close(fd);
	}
	return 0;
}
