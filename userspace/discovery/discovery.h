/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A discovery source: produces desired states (state.h) and hands each new
 * one to the daemon through a callback on the main loop. Sources embed
 * struct discovery and provide a const ops table, like h2o's balancers.
 */
#ifndef H2SPLIT_DISCOVERY_H
#define H2SPLIT_DISCOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "base/loop.h"
#include "base/state.h"
#include "h2split_bpf.h"

/* The cgroups a source wants left out of redirection (Kubernetes: the
 * opted-out pods on this node), complete each time: the daemon makes the BPF
 * exclusion map hold exactly |ids| for |origin|, leaving other origins' bits. */
struct discovery_exclusions {
	enum h2s_exclude_origin origin;
	const uint64_t *ids; /* not owned: sorted ascending, NULL when |n| is 0 */
	int n;
};

/* Called on the main loop with a new desired state and/or new exclusions
 * (either NULL: unchanged); the callee applies |ex| before |st| and owns
 * |st|. Returns 0, or -errno when |ex| could not be applied (the source
 * offers it again). */
typedef int discovery_update_cb(void *arg, struct state *st, const struct discovery_exclusions *ex);

/* How a source finds cgroups, handed down by the daemon (kernel/cgroup.h) so
 * discovery stays below kernel/. Both return 0 or -errno. */
struct discovery_cgroup_ops {
	int (*root)(char *buf, size_t len);	     /* the cgroup2 mount point */
	int (*id_of)(const char *dir, uint64_t *id); /* a cgroup directory's id */
};

struct discovery;

struct discovery_ops {
	const char *name;
	/* Start producing states on |l|; the first full state should follow soon. */
	int (*start)(struct discovery *d, struct loop *l);
	/* Re-read now (SIGHUP). */
	void (*reload)(struct discovery *d);
	void (*destroy)(struct discovery *d);
};

struct discovery {
	const struct discovery_ops *ops;
	discovery_update_cb *on_update;
	void *arg;
	bool synced;		/* a full state was delivered at least once */
	unsigned long n_errors; /* loads that failed (source unreadable or invalid); for metrics */
	/* Full relists the source itself decided on (Kubernetes: 410 Gone, the
	 * watch's resourceVersion too old); for metrics. */
	unsigned long n_relists;
};

/* File source: |path| holds a kubectl-shaped List of Services and EndpointSlices,
 * and Pods: those whose cgroups exist (found through |cg|; NULL: none) are the
 * state's callers (state.h).
 * start() fails if |path|'s directory cannot be watched; a missing or invalid
 * file is only logged and counted, and the last good state stays in force.
 * An unchanged file delivers no new state, except on reload(). NULL on ENOMEM. */
struct discovery *discovery_file_new(const char *path, const struct discovery_cgroup_ops *cg,
				     discovery_update_cb *cb, void *arg);

struct config;

/* Kubernetes source: list+watch Services and EndpointSlices on the API server
 * of |cfg| (kube_api, kube_token_file, kube_ca_file; in-cluster defaults),
 * and this node's (node_name) Pods and Namespaces for opt-outs, whose cgroup
 * ids (found through |cg|; NULL: opt-outs off) it hands to |cb| as
 * exclusions of origin H2S_EXCLUDE_K8S. |cfg| and |cg| must outlive the
 * source. start() fails only on a bad setting;
 * an unreachable API server is retried with backoff, and the first state
 * follows the first complete list of Services and EndpointSlices.
 * NULL on ENOMEM. */
struct discovery *discovery_kubernetes_new(const struct config *cfg,
					   const struct discovery_cgroup_ops *cg,
					   discovery_update_cb *cb, void *arg);

#endif
