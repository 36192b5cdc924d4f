/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the admin thread may read of the daemon: its flags, the settings, the
 * newest snapshot, and worker figures merged over every worker. Readers get
 * values and merged copies, never struct worker; every call is safe from any
 * thread while the daemon runs (relaxed atomics, racy by design).
 */
#ifndef H2SPLIT_DAEMON_VIEW_H
#define H2SPLIT_DAEMON_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"
#include "base/registry.h"
#include "base/stats.h"
#include "h2split_bpf.h"

struct daemon;
struct coexist;
struct health_table;
struct metrics_merged;
struct tap;
struct adopter;

struct daemon_status {
	bool synced;	  /* discovery delivered a full state */
	bool redirecting; /* listeners are in the BPF liveness map */
	bool draining;
	bool ready; /* synced, redirecting and not draining (/readyz) */
	int n_workers;
	unsigned long discovery_errors;	 /* struct discovery's n_errors; 0 without one */
	unsigned long discovery_relists; /* ... and n_relists */
};

/* Per-worker counters (stats.h) summed over every worker. */
struct daemon_stats {
	uint64_t v[ST_MAX];
	uint64_t limits[LIMIT_MAX];
};

void daemon_status(const struct daemon *d, struct daemon_status *out);
/* The settings, fixed once the daemon runs. */
const struct config *daemon_config(const struct daemon *d);
/* The active health checks' verdicts (read lock-free), NULL when none. */
const struct health_table *daemon_health(const struct daemon *d);
/* The newest state every worker applied, referenced (registry_snapshot_unref);
 * NULL before the first discovery sync. */
struct snapshot *daemon_snapshot(struct daemon *d);
/* Every worker's per-endpoint and per-service tables, merged
 * (metrics_merged_free); NULL on ENOMEM. */
struct metrics_merged *daemon_metrics(const struct daemon *d);
/* The live request feed (telemetry/tap.h); lives as long as the daemon. */
struct tap *daemon_tap(const struct daemon *d);
/* Adoption of connections opened before h2splitd (daemon/adopt.h). */
struct adopter *daemon_adopter(const struct daemon *d);
void daemon_stats(const struct daemon *d, struct daemon_stats *out);
/* The BPF decision counters summed over CPUs: 0, -ENODEV without BPF, or the
 * map read's -errno. */
int daemon_bpf_counters(const struct daemon *d, uint64_t out[H2S_CNT_MAX]);

/* Other programs on h2split's cgroup hooks (daemon/coexist.h); NULL before BPF
 * is loaded. */
struct coexist *daemon_coexist(const struct daemon *d);

#endif
