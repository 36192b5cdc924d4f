/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Other programs on h2split's hooks: the connect4/6, getpeername4/6 and
 * sock_ops programs attached to the cgroup h2split attaches to, to its
 * ancestors (Cilium's or Calico's socket load balancers, say) and to the
 * cgroups below it (at most 4096 of them per scan), and where each
 * runs relative to h2split's own (docs/architecture.md, "With Cilium or
 * Calico eBPF"). A connect program that runs first sees the ClusterIP before
 * h2split does: when it rewrites it, h2split never gets that connect.
 */
#ifndef H2SPLIT_BPF_COEXIST_H
#define H2SPLIT_BPF_COEXIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bpf_coexist_hook {
	COEXIST_CONNECT4 = 0,
	COEXIST_CONNECT6,
	COEXIST_GETPEER4,
	COEXIST_GETPEER6,
	COEXIST_SOCKOPS,
	COEXIST_HOOKS,
};

enum bpf_coexist_pos {
	COEXIST_BEFORE = 0, /* runs before h2split's program (or h2split has none there) */
	COEXIST_AFTER,	    /* runs after it */
	COEXIST_OVERRIDDEN, /* an ancestor's program attached without BPF_F_ALLOW_MULTI:
			     * h2split's attachment keeps it from running for pods below */
	COEXIST_POSITIONS,
};

#define BPF_COEXIST_MAX 32
#define BPF_COEXIST_PATH_MAX 256

struct bpf_coexist_prog {
	enum bpf_coexist_hook hook;
	enum bpf_coexist_pos pos;
	uint32_t id;			   /* the program's id */
	char name[16];			   /* its name as the kernel has it (BPF_OBJ_NAME_LEN) */
	char cgroup[BPF_COEXIST_PATH_MAX]; /* the cgroup it is attached to ("" unknown) */
};

struct bpf_coexist_report {
	int n;
	bool truncated; /* more than BPF_COEXIST_MAX */
	struct bpf_coexist_prog progs[BPF_COEXIST_MAX];
	int count[COEXIST_HOOKS][COEXIST_POSITIONS];
	/* connect4/6 programs that see the address before h2split (BEFORE):
	 * where they rewrite a ClusterIP, h2split does not get that connect. */
	int n_first;
};

const char *bpf_coexist_hook_name(enum bpf_coexist_hook h); /* "connect4", ... */
const char *bpf_coexist_pos_name(enum bpf_coexist_pos p);   /* "before", ... */

/*
 * Scan |cgroup_dir| (the cgroup h2split's links attach to; NULL or "": the
 * cgroup2 root), its ancestors and the cgroups below it for programs on the
 * five hooks that are not h2split's own (those behind the links pinned under
 * |pin_root|, NULL: the default). The order is the kernel's effective array
 * for |cgroup_dir|, which pods in cgroups below run as well, and for a
 * program attached below it, the effective array of its own cgroup.
 * 0, or -errno when the cgroup cannot be read.
 */
int bpf_coexist_scan(const char *pin_root, const char *cgroup_dir, struct bpf_coexist_report *r);

/* One "warning: ..." line per connect4/6 program of |r| that sees the address
 * before h2split, and per program h2split's attachment overrides, into |buf|
 * (whole lines only; "" when none). The number of lines written. */
int bpf_coexist_warnings(const struct bpf_coexist_report *r, char *buf, size_t len);

/* Whether |a| and |b| list the same programs at the same positions. */
bool bpf_coexist_same(const struct bpf_coexist_report *a, const struct bpf_coexist_report *b);

#endif
