/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Adoption of established connections: TCP connections that pods opened to
 * an opted-in Service before h2splitd ran (or before the Service opted in)
 * are closed while idle, paced, so the app reconnects through the redirect.
 * One thread of its own runs the passes; the main thread and the admin API
 * only queue work and read the status. Never a connection to anything but an
 * opted-in VIP:port, from an excluded cgroup, or in the node's own netns.
 */
#ifndef H2SPLIT_ADOPT_H
#define H2SPLIT_ADOPT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/config.h"
#include "base/registry.h"
#include "base/state.h"

struct adopter;
struct bpf_maps;
struct netns_cache;

/* What became of a connection a pass found (h2split_adopted_connections_total). */
enum adopt_result {
	ADOPT_R_IDLE = 0,    /* closed while idle */
	ADOPT_R_FORCED,	     /* --adopt-existing all: closed busy after --adopt-max-wait */
	ADOPT_R_NOT_IDLE,    /* never idle within --adopt-max-wait: left alone */
	ADOPT_R_GONE,	     /* closed by the app meanwhile */
	ADOPT_R_FAILED,	     /* SOCK_DESTROY failed (logged) */
	ADOPT_R_UNSUPPORTED, /* the kernel cannot destroy sockets (logged once) */
	ADOPT_R_COUNT,
};

struct adopt_params {
	enum adopt_mode mode;
	int max_wait_ms;
	const char *cgroup_dir; /* where the programs attach; "": the cgroup2 root */
	struct netns_cache *netns;
	const struct bpf_maps *maps; /* for the excluded cgroups */
	/* The newest applied state, referenced (registry_snapshot_unref), or NULL. */
	struct snapshot *(*snapshot)(void *arg);
	void *snapshot_arg;
	const atomic_bool *redirecting; /* passes run only while redirecting */
};

#define ADOPT_TRIGGER_MAX 32

struct adopt_pass_info {
	uint64_t id;			 /* 1, 2, ... */
	char trigger[ADOPT_TRIGGER_MAX]; /* "start", "opt_in", "ctl", joined by ',' */
	int targets;			 /* opted-in VIP:ports looked for */
	int pods;			 /* client netns searched */
	int found;			 /* connections to adopt */
	uint64_t looks;			 /* re-reads of a pod's sockets while waiting for idle */
	uint64_t results[ADOPT_R_COUNT];
	uint64_t ms; /* how long it took (done) or runs (running) */
	uint64_t started_ms;
};

struct adopt_status {
	enum adopt_mode mode;
	int max_wait_ms;
	bool unsupported; /* SOCK_DESTROY answered EOPNOTSUPP */
	bool running;
	uint64_t passes_done;
	uint64_t queued;	     /* the id of a pass waiting to run, 0: none */
	struct adopt_pass_info cur;  /* valid while |running| */
	struct adopt_pass_info last; /* id 0: none yet */
	uint64_t total[ADOPT_R_COUNT];
};

/* Start the adoption thread (copies |p|). NULL on error (logged). */
struct adopter *adopter_start(const struct adopt_params *p);
void adopter_stop(struct adopter *a);
/* Main thread, after a state is applied and redirection is on: a pass for
 * the VIP:ports it opts in that the last applied state did not (all of them
 * the first time: h2splitd started). Nothing with --adopt-existing off. */
void adopter_on_applied(struct adopter *a, const struct state *st);
/* On demand (h2splitctl adopt), also with --adopt-existing off (then as
 * idle): a pass over Service |service| ("ns/name", every port) or, NULL,
 * every opted-in Service. 0 with the pass's id in |*pass|; -ENOENT when no
 * opted-in Service has that name, -EINVAL when it is not "ns/name". */
int adopter_request(struct adopter *a, const char *service, uint64_t *pass);
void adopter_status(struct adopter *a, struct adopt_status *out);
const char *adopter_result_name(enum adopt_result r);
const char *adopter_mode_name(enum adopt_mode m);
/* h2split_adopted_connections_total{result} and h2split_adopt_* gauges. */
void adopter_write_prometheus(struct adopter *a, FILE *f);

#endif
