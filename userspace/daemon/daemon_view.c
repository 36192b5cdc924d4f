// SPDX-License-Identifier: Apache-2.0
/*
 * Read-only views of the daemon for the admin thread (daemon_view.h): the
 * one place that walks d->workers on its behalf and merges what they own.
 * Invariant: nothing here writes to the daemon or blocks a worker.
 */
#include <errno.h>
#include <stdlib.h>

#include "daemon/daemon.h"
#include "daemon/daemon_view.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "telemetry/metrics.h"

void daemon_status(const struct daemon *d, struct daemon_status *out)
{
	struct discovery *disc = __atomic_load_n(&d->disc, __ATOMIC_ACQUIRE);

	out->synced = atomic_load(&d->synced);
	out->redirecting = atomic_load(&d->redirecting);
	out->draining = atomic_load(&d->draining);
	out->ready = out->synced && out->redirecting && !out->draining;
	out->n_workers = d->n_workers;
	out->discovery_errors = disc ? __atomic_load_n(&disc->n_errors, __ATOMIC_RELAXED) : 0;
	out->discovery_relists = disc ? __atomic_load_n(&disc->n_relists, __ATOMIC_RELAXED) : 0;
}

const struct config *daemon_config(const struct daemon *d)
{
	return &d->cfg;
}

const struct health_table *daemon_health(const struct daemon *d)
{
	return d->health;
}

struct snapshot *daemon_snapshot(struct daemon *d)
{
	struct snapshot *s;

	pthread_mutex_lock(&d->snap_lock);
	s = d->snap ? registry_snapshot_ref(d->snap) : NULL;
	pthread_mutex_unlock(&d->snap_lock);
	return s;
}

struct metrics_merged *daemon_metrics(const struct daemon *d)
{
	struct metrics **ms = calloc(d->n_workers > 0 ? (size_t)d->n_workers : 1, sizeof(*ms));
	struct metrics_merged *mm;

	if (!ms)
		return NULL;
	for (int i = 0; i < d->n_workers; i++)
		ms[i] = d->workers[i].metrics;
	mm = metrics_merge(ms, d->n_workers);
	free(ms);
	return mm;
}

struct tap *daemon_tap(const struct daemon *d)
{
	return d->tap;
}

void daemon_stats(const struct daemon *d, struct daemon_stats *out)
{
	for (int id = 0; id < ST_MAX; id++) {
		out->v[id] = 0;
		for (int w = 0; w < d->n_workers; w++)
			out->v[id] += stats_get(&d->workers[w].stats, (enum stat_id)id);
	}
	for (int id = 0; id < LIMIT_MAX; id++) {
		out->limits[id] = 0;
		for (int w = 0; w < d->n_workers; w++)
			out->limits[id] += stats_limit_get(&d->workers[w].stats, (enum limit_id)id);
	}
}

int daemon_bpf_counters(const struct daemon *d, uint64_t out[H2S_CNT_MAX])
{
	if (!d->bpf)
		return -ENODEV;
	return bpf_maps_counters_read(bpf_loader_maps(d->bpf), out);
}

struct coexist *daemon_coexist(const struct daemon *d)
{
	return d->coexist;
}

struct adopter *daemon_adopter(const struct daemon *d)
{
	return d->adopter;
}
