/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading and writing h2split's BPF maps by fd, whether the daemon loaded
 * them (bpf_loader_maps()) or h2splitctl opened the pins while the daemon is
 * down. Writes never flush a map: a live connect sees the old entry or the
 * new one, never a gap. All functions are thread-safe (plain bpf syscalls on
 * fds nobody closes meanwhile) and return 0 or -errno unless stated.
 */
#ifndef H2SPLIT_BPF_MAPS_H
#define H2SPLIT_BPF_MAPS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "h2split_bpf.h"
#include "base/state.h"

/* The maps, in pin-name order. */
enum bpf_maps_id {
	BPF_MAPS_SERVICES = 0, /* h2s_services */
	BPF_MAPS_EXCLUDED,     /* h2s_excluded_cgroups */
	BPF_MAPS_LISTENERS,    /* h2s_listeners */
	BPF_MAPS_WORKERS,      /* h2s_workers */
	BPF_MAPS_CONFIG,       /* h2s_config */
	BPF_MAPS_SOCK_ORIGDST, /* h2s_sock_origdst */
	BPF_MAPS_CONN_ORIGDST, /* h2s_conn_origdst */
	BPF_MAPS_COUNTERS,     /* h2s_counters */
	BPF_MAPS_COUNT,
};

struct bpf_maps {
	int fd[BPF_MAPS_COUNT]; /* -1 when not open; ownership: see the opener */
	/* The pin root directory, flock()ed around each read-modify-write of
	 * h2s_excluded_cgroups: h2splitd and h2splitctl both update entries, and
	 * an origin bit set by one between the other's lookup and update would
	 * be lost. -1: no lock (the caller is the map's only writer). Owned like
	 * the fds. */
	int lock_fd;
	/* BPF_MAP_LOOKUP_AND_DELETE_ELEM works on hash maps (Linux 5.14+);
	 * else bpf_maps_take_origdst() does a lookup then a delete. */
	bool lookup_and_delete;
};

/* The map's name, which is also its pin file name under the pin root. */
const char *bpf_maps_name(enum bpf_maps_id id);

/* Open every map pinned under |pin_root|, and the pin root as |m|'s lock; |m|
 * owns the fds (bpf_maps_close). Not logged (the caller knows what each case
 * means to it): -ENOENT when h2split is not installed there, -EPROTO when a
 * pinned map's key or value size is not this build's (a daemon of another
 * version pinned it); |bad| (may be NULL) then names that map. */
int bpf_maps_open_pinned(const char *pin_root, struct bpf_maps *m, const char **bad);
/* Close fds opened by bpf_maps_open_pinned(); safe after a failed open. */
void bpf_maps_close(struct bpf_maps *m);
/* Probe the kernel for lookup_and_delete (called by both openers). */
void bpf_maps_probe(struct bpf_maps *m);

/* ---- services (h2s_services) ---- */

struct bpf_maps_svc_entry {
	struct h2s_svc_key key;
	struct h2s_svc_value value;
};

enum bpf_maps_op_kind { BPF_MAPS_OP_ADD = 0, BPF_MAPS_OP_CHANGE, BPF_MAPS_OP_REMOVE };

struct bpf_maps_svc_op {
	enum bpf_maps_op_kind kind;
	struct bpf_maps_svc_entry e; /* REMOVE: only the key matters */
};

struct bpf_maps_sync_stats {
	int added, changed, removed, unchanged;
	int duplicates; /* desired VIP:port claimed by more than one service */
};

/* The entries |st| wants: one per (VIP, port) of every service, flags
 * H2S_SVC_F_ENABLED, sorted by key. A VIP:port claimed twice keeps the lower
 * service id (counted in |*dups| when not NULL). |*out| is malloc'd (NULL
 * when |*n| is 0); the caller frees it. */
int bpf_maps_services_from_state(const struct state *st, struct bpf_maps_svc_entry **out, int *n,
				 int *dups);
/* What turns |cur| (any order; sorted in place) into |want| (sorted, as
 * bpf_maps_services_from_state() makes it): adds and changes first, then
 * removes, so no VIP is ever missing in between. |*ops| is malloc'd. */
int bpf_maps_services_diff(const struct bpf_maps_svc_entry *want, int n_want,
			   struct bpf_maps_svc_entry *cur, int n_cur, struct bpf_maps_svc_op **ops,
			   int *n_ops);
/* Every entry of h2s_services; |*out| malloc'd (NULL when |*n| is 0). */
int bpf_maps_services_read(const struct bpf_maps *m, struct bpf_maps_svc_entry **out, int *n);
/* Make h2s_services hold exactly |st|'s desired (not retired) services,
 * touching only what differs; with |removals_only|, only delete the entries
 * |st| no longer wants (an opt-out must stop redirecting before the workers
 * forget the service, an opt-in may start only after they all know it). On
 * error the map holds a mix of old and new entries, each of them valid; the
 * next sync converges. |stats| may be NULL. */
int bpf_maps_sync_services(const struct bpf_maps *m, const struct state *st,
			   bool removals_only, struct bpf_maps_sync_stats *stats);

/* ---- excluded cgroups (h2s_excluded_cgroups) ---- */

struct bpf_maps_excluded {
	uint64_t cgroup_id;
	uint32_t origins; /* H2S_EXCLUDE_BIT() of every origin excluding it */
};

/* Add |origin| to those excluding cgroup |id| (and every cgroup below it); 0
 * also when it was one already. |*origins| (may be NULL): all of them now. */
int bpf_maps_exclude(const struct bpf_maps *m, uint64_t cgroup_id, enum h2s_exclude_origin origin,
		     uint32_t *origins);
/* Same by cgroup v2 directory; the id is stored in |*id| when not NULL.
 * -EMEDIUMTYPE when |dir| is not a cgroup v2 directory. */
int bpf_maps_exclude_dir(const struct bpf_maps *m, const char *dir, enum h2s_exclude_origin origin,
			 uint64_t *id, uint32_t *origins);
/* Take |origin| off cgroup |id|: its connects are redirected again once no
 * origin excludes it. -ENOENT when |origin| did not exclude it. |*left| (may
 * be NULL): the origins still excluding it, 0 when none. */
int bpf_maps_include(const struct bpf_maps *m, uint64_t cgroup_id, enum h2s_exclude_origin origin,
		     uint32_t *left);
/* Every entry, sorted by id; |*out| malloc'd (NULL when |*n| is 0). */
int bpf_maps_excluded_read(const struct bpf_maps *m, struct bpf_maps_excluded **out, int *n);
/* Make |origin| exclude exactly |ids| (other origins untouched): the daemon
 * calls it at start with its own cgroup and --exclude-cgroup ids, so flags
 * dropped since the last run stop excluding, and the Kubernetes source with
 * the opted-out pods' cgroups. */
int bpf_maps_excluded_sync(const struct bpf_maps *m, enum h2s_exclude_origin origin,
			   const uint64_t *ids, int n);
/* Add the origins of each entry of |e| (the loader carrying entries over). */
int bpf_maps_excluded_merge(const struct bpf_maps *m, const struct bpf_maps_excluded *e, int n);
/* The entries of h2s_excluded_cgroups map |fd| of the earlier layout (value:
 * one enum h2s_exclude_origin byte), as origin bits; -EINVAL for another
 * layout. |*out| malloc'd (NULL when |*n| is 0). */
int bpf_maps_excluded_read_v1(int fd, struct bpf_maps_excluded **out, int *n);
/* "self" | "flag" | "ctl" | "k8s" | "unknown". */
const char *bpf_maps_origin_name(enum h2s_exclude_origin origin);
/* The names of |origins| joined by ',' ("ctl,k8s"; "" for none) in |buf|,
 * which is returned. */
const char *bpf_maps_origins_str(uint32_t origins, char *buf, size_t len);

/* ---- listeners and config (h2s_listeners, h2s_config) ---- */

/* Where connect4/6 send redirected connects: |v4| an AF_INET address, |v6| an
 * AF_INET6 one; NULL or ss_family 0 for none. Unspecified addresses
 * (0.0.0.0, ::) and port 0 are -EINVAL: a redirect needs a concrete target. */
int bpf_maps_set_listen(const struct bpf_maps *m, const struct sockaddr_storage *v4,
			const struct sockaddr_storage *v6);
int bpf_maps_get_config(const struct bpf_maps *m, struct h2s_config *out);
/* Put listening socket |fd| in |slot|: from now on connects are redirected
 * (while it stays open and listening). Set the listen address first. */
int bpf_maps_add_listener(const struct bpf_maps *m, enum h2s_listener_slot slot, int fd);
/* Empty |slot|: connects go direct at once. 0 also when it was empty. */
int bpf_maps_del_listener(const struct bpf_maps *m, enum h2s_listener_slot slot);
/* The socket cookie of the listener in |slot|; -ENOENT when the slot is empty
 * (no daemon listening: connects go direct). */
int bpf_maps_listener_cookie(const struct bpf_maps *m, enum h2s_listener_slot slot,
			     uint64_t *cookie);

/* Point every h2s_workers key of |slot| at |fds|, the listeners of this
 * daemon's |n| workers (worker i at keys i, i + n, ...): the kernel hands the
 * group's new connects, and a closing listener's queue, to these (h2s_migrate).
 * Set before taking the liveness slot. */
int bpf_maps_set_workers(const struct bpf_maps *m, enum h2s_listener_slot slot, const int *fds,
			 int n);
/* Empty the keys of |slot| that hold one of |fds| (compared by socket
 * cookie), leaving a newer daemon's alone. */
int bpf_maps_clear_workers(const struct bpf_maps *m, enum h2s_listener_slot slot, const int *fds,
			   int n);

/* ---- original destinations (h2s_conn_origdst) ---- */

/* The h2s_conn_origdst key of an accepted connection: |peer| from accept()
 * or getpeername() (the client), |local| from getsockname() (the listen
 * address it arrived on). AF_INET addresses are stored IPv4-mapped, so a dual-
 * stack listener's ::ffff:a.b.c.d peers give the same key. -EAFNOSUPPORT for
 * other families. */
int bpf_maps_tuple_from_addrs(const struct sockaddr *peer, const struct sockaddr *local,
			      struct h2s_tuple *t);
/* Look up and delete the original destination of an accepted connection.
 * -ENOENT when BPF recorded none (not redirected by h2split, or evicted under
 * pressure). One syscall on 5.14+, two before; no allocation; call it from
 * any worker thread. */
int bpf_maps_take_origdst(const struct bpf_maps *m, const struct sockaddr *peer,
			  const struct sockaddr *local, struct h2s_origdst *out);

/* ---- counters (h2s_counters) ---- */

/* snake_case name ("redirected", "bypass_no_listener"...), NULL when out of
 * range. Metric names are h2split_bpf_<name>_total. */
const char *bpf_maps_counter_name(enum h2s_counter c);
/* One-line description, for metric HELP and h2splitctl. */
const char *bpf_maps_counter_help(enum h2s_counter c);
/* Sum each counter over all CPUs into |out|. */
int bpf_maps_counters_read(const struct bpf_maps *m, uint64_t out[H2S_CNT_MAX]);

#endif
