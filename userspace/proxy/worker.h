/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A worker thread: one event loop, its own SO_REUSEPORT listeners, and every
 * downstream connection it accepted together with all upstream work for it
 * (shared nothing). The main thread talks to a worker only through
 * loop_post(): new snapshots, drain, stop. Stats are written by the worker
 * alone and read racily (relaxed atomics) by the admin endpoint.
 */
#ifndef H2SPLIT_WORKER_H
#define H2SPLIT_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer/health.h"
#include "base/loop.h"
#include "base/registry.h"
#include "base/stats.h"
#include "proxy/h2/conn_info.h"
#include "proxy/l4_proxy.h"

struct bpf_maps;
struct config;
struct netns_cache;
struct metrics;
struct splitter;

/* What the daemon shares read-only (or internally synchronised) with workers. */
struct worker_shared {
	const struct config *cfg;
	const struct bpf_maps *maps; /* tuple lookups (thread-safe syscalls) */
	struct netns_cache *netns; /* thread-safe */
	const struct health_table *health; /* active health verdicts (lock-free reads) */
	struct conn_limit *pod_conns; /* thread-safe; NULL: no per-pod limit */
	int migrate_prog_fd; /* for the listeners' reuseport group; -1: none */
	/* Any thread: a worker ran out of fds (|paused|) or has enough again.
	 * NULL: nobody to tell. */
	void (*fd_pressure)(void *arg, bool paused);
	void *fd_pressure_arg;
	/* Worker thread: this worker now routes by snapshot |generation|
	 * (worker.applied_gen says the same). NULL: nobody to tell. */
	void (*applied)(void *arg, uint64_t generation);
	void *applied_arg;
};

struct worker {
	int id;
	pthread_t thread;
	struct loop *loop;               /* owned */
	const struct worker_shared *sh;
	int listen_fds[2];               /* owned; -1 when absent (v4, v6) */
	bool listening;                  /* listen() done: only once a snapshot is in */
	struct snapshot *snap;           /* owned ref; the current desired state */
	_Atomic uint64_t applied_gen;    /* |snap|'s generation; read by the main thread */
	struct splitter *splitter;       /* owned: HTTP/2 sessions and upstream pools */
	struct l4_proxy_ctx l4;          /* what the L4 path gets of this worker */
	struct worker_stats stats;       /* written by this worker only */
	struct metrics *metrics;         /* owned; written by this worker only (metrics.h) */
	int n_conns;                     /* open downstream connections (L4 + h2) */
	uint64_t pod_limit_log_ms;       /* last connections_per_pod log line */
	uint64_t recovered_log_ms;       /* last original_dst_recovered log line */
	int spare_fd;                    /* owned: given up to accept-and-reset when out of fds */
	bool accept_paused;              /* out of fds: listeners off, fd_timer checks */
	uint64_t fd_limit;               /* RLIMIT_NOFILE (soft) */
	struct loop_timer *fd_timer;
	bool draining;
};

int worker_init(struct worker *w, int id, const struct worker_shared *sh);
/* Start the thread. 0 or -errno. */
int worker_start(struct worker *w);
/* Any thread: give the worker a new snapshot (takes one reference). The
 * first one also starts accepting: a worker never takes a connection it
 * cannot route (bound before, so a port conflict shows at start). */
int worker_post_snapshot(struct worker *w, struct snapshot *s);
/* Any thread: stop accepting, GOAWAY every downstream, close when drained. */
int worker_post_drain(struct worker *w);
/* Any thread: stop the loop; then join with worker_join(). */
void worker_stop(struct worker *w);
void worker_join(struct worker *w);
void worker_destroy(struct worker *w);

#endif
