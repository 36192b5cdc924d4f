/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The ABI between bpf/h2split.bpf.c and userspace: map key/value structs,
 * the counter enum and fixed map slots. Everything here is read by
 * `bpftool map dump`, so fields carry names that read like documentation.
 * Invariant: addresses are 16 bytes, IPv4 stored IPv4-mapped (::ffff:a.b.c.d),
 * so one key shape serves connect4, connect6 and IPv4-mapped IPv6 connects.
 */
#ifndef H2SPLIT_BPF_H
#define H2SPLIT_BPF_H

#include <linux/types.h>

#define H2S_MAX_SERVICES 65536
#define H2S_MAX_EXCLUDED 4096
/* Defaults; h2splitd --max-redirected-sockets N sizes both (N, N / 4) at load. */
#define H2S_MAX_SOCKETS 262144 /* h2s_sock_origdst: live redirected sockets */
/* h2s_conn_origdst: connects not yet accepted by the daemon (entries live
 * from the SYN to accept(), so this is a backlog, not a connection count). */
#define H2S_MAX_PENDING 65536
/* Ancestor levels checked against h2s_excluded_cgroups (pod -> container nesting). */
#define H2S_MAX_CGROUP_DEPTH 16

/* h2s_listeners slots: the daemon's live listening sockets (liveness). */
enum h2s_listener_slot {
	H2S_LISTENER_V4 = 0,
	H2S_LISTENER_V6 = 1,
	H2S_LISTENER_SLOTS = 2,
};

/* h2s_workers: per listener slot, H2S_WORKER_KEYS keys holding the listeners
 * of the daemon that owns the liveness slot, worker i at keys i, i + n, ...
 * (n workers), so hash % H2S_WORKER_KEYS spreads connects over its workers.
 * At least h2splitd's --workers maximum. */
#define H2S_WORKER_KEYS 256

/* Who excludes a cgroup. Each origin syncs only its own exclusions (the
 * daemon at start, the Kubernetes source on every pod change, the operator by
 * hand), so one cgroup may be excluded by several at once. */
enum h2s_exclude_origin {
	H2S_EXCLUDE_SELF = 1, /* the daemon's own cgroup (loop safety) */
	H2S_EXCLUDE_FLAG = 2, /* h2splitd --exclude-cgroup */
	H2S_EXCLUDE_CTL = 3,  /* h2splitctl exclude */
	H2S_EXCLUDE_K8S = 4,  /* a pod or namespace opted out (h2split.io/enabled: "false") */
	H2S_EXCLUDE_ORIGIN_MAX = 4,
};

/* The bit of |origin| in h2s_exclude_value.origins: self 1, flag 2, ctl 4, k8s 8. */
#define H2S_EXCLUDE_BIT(origin) (1u << ((origin)-1))

/* h2s_excluded_cgroups value: every origin excluding the cgroup, one bit each.
 * An origin sets and clears only its own bit and the entry is deleted when no
 * bit is left, so `h2splitctl include` cannot undo a pod's opt-out, nor a pod
 * losing its annotation undo an operator's exclude. BPF checks presence only.
 * Earlier builds stored a single origin byte; the loader carries such a pin's
 * entries over when it replaces it (bpf_loader.c). */
struct h2s_exclude_value {
	__u32 origins; /* H2S_EXCLUDE_BIT() of each origin, OR'ed; never 0 in the map */
};

/* A service frontend: ClusterIP (v4-mapped or v6) and port. */
struct h2s_svc_key {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u16 pad;
};

#define H2S_SVC_F_ENABLED (1u << 0)

struct h2s_svc_value {
	__u32 service_id; /* registry id, matches /services and metrics */
	__u32 flags;	  /* H2S_SVC_F_* */
};

/* h2s_config, single slot: where to redirect. Written by the daemon at start. */
struct h2s_config {
	__u8 listen_v4[16];   /* v4-mapped; all-zero: no v4 listener */
	__u8 listen_v6[16];   /* all-zero: no v6 listener */
	__u16 listen_v4_port; /* network byte order */
	__u16 listen_v6_port; /* network byte order */
	__u32 flags;
};

/* What connect4/6 saw, keyed by socket cookie (h2s_sock_origdst). */
struct h2s_origdst {
	__u8 addr[16]; /* original destination: the VIP the app dialled */
	__u16 port;    /* network byte order */
	__u16 family;  /* AF_INET or AF_INET6 as the app used it */
	__u32 service_id;
	__u64 cgroup_id; /* the connecting task's cgroup v2 id */
	__u32 pid;	 /* the connecting task's tgid: finds the pod's netns */
	__u32 pad;
};

/* Tuple key of h2s_conn_origdst: the accepted connection as the daemon sees it. */
struct h2s_tuple {
	__u8 client_addr[16]; /* the pod's address (v4-mapped for IPv4) */
	__u8 proxy_addr[16];  /* the splitter's listen address */
	__u16 client_port;    /* host byte order */
	__u16 proxy_port;     /* host byte order */
	__u32 pad;
};

/* Per-CPU counters (h2s_counters), one slot per decision: the one list.
 * X(ENUM, "name", "help") makes enum h2s_counter here and the names and help
 * texts userspace exports (kernel/bpf_maps.c). Append only: the enum values
 * are the pinned map's indices (an ABI), and the names are metric labels. */
#define H2S_COUNTERS(X)                                                                          \
	X(REDIRECTED, "redirected", "connects sent to the splitter")                              \
	X(BYPASS_NO_LISTENER, "bypass_no_listener",                                               \
	  "service connects left alone: no live splitter listener")                               \
	X(BYPASS_EXCLUDED, "bypass_excluded",                                                     \
	  "service connects left alone: caller's cgroup excluded")                                \
	X(NOT_A_SERVICE, "not_a_service", "TCP connects to a destination not opted in")           \
	X(SERVICE_DISABLED, "service_disabled", "service connects left alone: service disabled")  \
	X(MAP_FULL, "map_full", "connects left alone (or tuples lost): a map was full")           \
	X(ORIGINAL_DST_MISSING, "original_dst_missing",                                           \
	  "redirected connects without a recorded destination")                                   \
	X(TUPLE_RECORDED, "tuple_recorded",                                                       \
	  "redirected connects whose tuple was handed to the splitter")                           \
	X(GETPEERNAME_REWRITTEN, "getpeername_rewritten",                                         \
	  "getpeername calls answered with the original VIP")                                     \
	X(NOT_TCP, "not_tcp", "connects left alone: not TCP (UDP, MPTCP...)")                     \
	X(NO_LISTEN_ADDR, "no_listen_addr",                                                       \
	  "service connects left alone: no listen address for the family")                        \
	/* a map update failed for another reason than full */                                    \
	X(MAP_ERROR, "map_error", "connects left alone: a map update failed")

#define H2S_COUNTER_ENUM_(id, name, help) H2S_CNT_##id,
enum h2s_counter {
	H2S_COUNTERS(H2S_COUNTER_ENUM_)
	H2S_CNT_MAX,
};
#undef H2S_COUNTER_ENUM_

#endif
