/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Installing h2split's BPF programs: checks, load, pin, attach, uninstall.
 * Everything lives under one pin root: the maps (<root>/h2s_*) and one
 * cgroup bpf_link per program (<root>/links/<program>). Pins outlive the
 * daemon, so redirection keeps working across a restart (and stops within a
 * connect of the daemon's death, through the listener liveness check); only
 * bpf_loader_uninstall() removes them. Map data is read and written through
 * bpf_maps.h, on the fds bpf_loader_maps() returns.
 */
#ifndef H2SPLIT_BPF_LOADER_H
#define H2SPLIT_BPF_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/bpf_maps.h"

#define BPF_LOADER_PIN_ROOT "/sys/fs/bpf/h2split"
/* The oldest kernel with every hook and helper the programs use. */
#define BPF_LOADER_MIN_KERNEL "5.10"

/* The programs, one bpf_link each, in attach order. */
enum bpf_loader_prog {
	BPF_LOADER_CONNECT4 = 0, /* h2s_connect4, cgroup/connect4 */
	BPF_LOADER_CONNECT6,	 /* h2s_connect6, cgroup/connect6 */
	BPF_LOADER_SOCKOPS,	 /* h2s_sockops, sockops */
	BPF_LOADER_GETPEER4,	 /* h2s_getpeer4, cgroup/getpeername4 */
	BPF_LOADER_GETPEER6,	 /* h2s_getpeer6, cgroup/getpeername6 */
	BPF_LOADER_RELEASE,	 /* h2s_release, cgroup/sock_release */
	BPF_LOADER_PROGS,
};

struct h2s_bpf; /* a loaded object: opaque, owns the skeleton and map fds */

/* Program name (also its link's pin name under <pin_root>/links/). */
const char *bpf_loader_prog_name(enum bpf_loader_prog p);
/* The hook as `bpftool cgroup show` prints it ("connect4", "sock_ops"...). */
const char *bpf_loader_prog_hook(enum bpf_loader_prog p);

/*
 * Everything that must hold before bpf_loader_open(), each failure naming the
 * fix in |err| (e.g. "cgroup v2 not mounted: mount -t cgroup2 none
 * /sys/fs/cgroup"): capabilities (CAP_BPF + CAP_NET_ADMIN, or CAP_SYS_ADMIN),
 * kernel >= BPF_LOADER_MIN_KERNEL, a cgroup2 mount, and |pin_root| (NULL: the
 * default) on a bpf filesystem. When /sys/fs/bpf is not mounted and the pin
 * root is below it, bpffs is mounted there (logged: in a container, pins in a
 * private bpffs die with the container, so mount the host's). A missing
 * /sys/kernel/btf/vmlinux is only logged: the object needs no kernel BTF.
 * 0, or -errno with |err| set.
 */
int bpf_loader_preflight(const char *pin_root, char *err, size_t errlen);

/*
 * Load the programs, pin maps under |pin_root| (NULL: the default) and attach
 * every program to cgroup v2 directory |cgroup_dir| (NULL or "": the cgroup2
 * mount root). Restart-safe: maps already pinned are reused with their
 * entries (a pinned map whose layout no longer matches is replaced, logged);
 * a pinned link on the same cgroup and hook is switched to the new program
 * with bpf_link_update, so redirection never lapses; a pinned link elsewhere
 * is replaced (new one attached first). Listener slots are left as found:
 * the daemon fills them when it listens. 0 with |*out| set, or -errno
 * (logged); on error nothing that was already pinned is removed.
 */
int bpf_loader_open(const char *pin_root, const char *cgroup_dir, int max_sockets,
		    struct h2s_bpf **out);
/* The map fds of |b| (owned by |b|, valid until bpf_loader_close()). */
const struct bpf_maps *bpf_loader_maps(const struct h2s_bpf *b);
/* Shorthands for the daemon, same as the bpf_maps_* call on bpf_loader_maps(b):
 * bpf_maps_set_listen(), bpf_maps_add_listener(), bpf_maps_del_listener(). */
int bpf_loader_set_listen(struct h2s_bpf *b, const struct sockaddr_storage *v4,
			  const struct sockaddr_storage *v6);
int bpf_loader_add_listener(struct h2s_bpf *b, enum h2s_listener_slot slot, int listen_fd);
int bpf_loader_del_listener(struct h2s_bpf *b, enum h2s_listener_slot slot);
/* The id of the cgroup the programs are attached to. */
uint64_t bpf_loader_cgroup_id(const struct h2s_bpf *b);
/* The sk_reuseport program for the listeners' SO_REUSEPORT group
 * (SO_ATTACH_REUSEPORT_EBPF): a listener that closes hands its queue to
 * another daemon's. -1 where the kernel cannot migrate (before 5.14). */
int bpf_loader_migrate_fd(const struct h2s_bpf *b);
/* Free |b| and close its fds. Pins and links stay: redirection outlives the
 * daemon, and fails open once its listeners close. NULL is fine. */
void bpf_loader_close(struct h2s_bpf *b);

/*
 * Detach every pinned link, unpin every map and remove |pin_root| (NULL: the
 * default). Idempotent: 0 when nothing was installed. A daemon still running
 * keeps serving accepted connections but gets no new ones.
 */
int bpf_loader_uninstall(const char *pin_root);

/* What is installed under a pin root, for h2splitctl status. */
struct bpf_loader_link_status {
	bool pinned;	    /* <pin_root>/links/<name> exists */
	bool attached;	    /* the link is attached to a live cgroup */
	uint32_t prog_id;   /* the program the link runs */
	uint64_t cgroup_id; /* 0 when detached (cgroup removed, or link detached) */
};

struct bpf_loader_status {
	bool map_pinned[BPF_MAPS_COUNT];
	struct bpf_loader_link_status links[BPF_LOADER_PROGS];
};

/* Inspect |pin_root| without changing anything. 0 (even when nothing is
 * pinned: see the fields), or -errno when the pins cannot be read. */
int bpf_loader_status(const char *pin_root, struct bpf_loader_status *st);

#endif
