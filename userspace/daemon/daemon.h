/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one daemon struct: everything h2splitd owns, driven by the main
 * thread's loop (signals, discovery, drain, admin). Workers never see it;
 * they get struct worker_shared. The admin endpoint reads it only through
 * daemon_view.h (readiness, merged worker stats and tables).
 */
#ifndef H2SPLIT_DAEMON_H
#define H2SPLIT_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "balancer/health.h"
#include "base/config.h"
#include "base/loop.h"
#include "base/registry.h"
#include "discovery/discovery.h"
#include "proxy/worker.h"

struct admin;
struct coexist;
struct adopter;

struct daemon {
	struct config cfg;
	struct loop *loop;        /* owned: the main thread's */
	struct h2s_bpf *bpf;      /* owned */
	struct netns_cache *netns; /* owned */
	struct worker_shared sh;
	struct worker *workers;   /* owned array */
	int n_workers;
	struct discovery *disc;   /* owned */
	struct admin *admin;      /* owned */
	struct coexist *coexist;  /* owned: other programs on our hooks (daemon/coexist.h) */
	struct adopter *adopter;  /* owned: adopts connections opened before us */
	struct tap *tap;          /* owned: one ring per worker (telemetry/tap.h) */
	struct health_table *health;   /* owned: written by |checker|, read by all */
	struct health_checker *checker; /* owned */
	pthread_mutex_t snap_lock; /* guards |snap| against the admin thread */
	struct snapshot *snap;    /* owned ref: the newest state every worker applied */
	struct snapshot *posted;  /* owned ref, main thread: the newest state posted */
	uint64_t generation;      /* main thread: of |posted| */
	struct loop_timer *retired_timer; /* main thread: forgets expired retired services */
	atomic_bool synced;       /* discovery delivered a full state */
	atomic_bool redirecting;  /* listeners are in the liveness map */
	atomic_bool draining;
	bool zone_logged;	  /* main thread: this node's zone was logged ... */
	char zone[STATE_NAME_MAX]; /* ... as this ("": unknown) */
	int fd_paused; /* main thread: workers out of fds (redirection off while > 0) */
	int sig_fd;
	uint64_t drain_deadline_ms;
	int exit_code;
};

#endif
