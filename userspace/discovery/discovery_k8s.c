// SPDX-License-Identifier: Apache-2.0
/*
 * Kubernetes discovery source: one reflector (k8s_reflector.c) per resource
 * (Services, EndpointSlices; Namespaces and this node's Pods for opt-outs)
 * fills the store and pod table; this file turns them into states and
 * exclusions for the daemon, and starts, reloads and stops the reflectors.
 * Everything runs on the main loop (k8s_client.h).
 * Invariant: a state is delivered only once Services and EndpointSlices have
 * both been listed, and then after each burst of changes (coalesced).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/config.h"
#include "base/locality.h"
#include "base/log.h"
#include "discovery/discovery.h"
#include "discovery/k8s_source.h"

/* A change after a quiet spell goes out SETTLE_MS later: the rest of one
 * edit (a Service and its EndpointSlice come on two watches) mostly arrives
 * within it. Within DEBOUNCE_MS of the last state, changes wait for the next
 * one together, so a burst costs one state build per DEBOUNCE_MS. */
#define DEBOUNCE_MS 100
#define SETTLE_MS 20
#define WATCH_IDLE_DEFAULT_S 300
/* client-go's reflector: the first retry after [0.8, 1.6) s, doubling to
 * [30, 60) s, and back to the start once nothing failed for 2 minutes. Our
 * draws are [cur/2, cur], so cur runs 1.6 s -> 60 s for the same spans, and
 * the reset is a watch that stayed up 2 minutes (the server ends healthy
 * ones after 4-6). */
#define BACKOFF_MIN_MS 1600
#define BACKOFF_MAX_MS 60000
#define BACKOFF_HEALTHY_MS 120000
#define EXCLUDE_RETRY_MS 2000

/* Opt-outs hold an exclusion origin of their own (a bit per entry), so syncing
 * them never touches --exclude-cgroup's or h2splitctl exclude's, and no other
 * origin can take theirs off: skipping a sync while the set of opted-out
 * cgroups is unchanged leaves the map right. */
#define K8S_EXCLUDE_ORIGIN H2S_EXCLUDE_K8S

/* ---- opt-outs ---- */

struct excl_scan {
	struct discovery_k8s *dk;
	uint64_t *ids;
	int n, cap;
	int pending; /* opted-out pods whose cgroup is not there (yet) */
};

static int collect_pod(void *arg, const struct k8s_pod_ref *pod)
{
	struct excl_scan *sc = arg;
	char dir[CONFIG_PATH_MAX * 2];
	uint64_t id;
	uint64_t *n;

	if (k8s_pod_cgroup_find(sc->dk->cgroup_root, pod->qos, pod->cgroup_uid, dir, sizeof(dir)) ||
	    sc->dk->cg->id_of(dir, &id)) {
		log_debug("kube_opt_out_pending pod=%s/%s uid=%s reason=\"no cgroup yet\"", pod->ns,
			  pod->name, pod->cgroup_uid);
		sc->pending++;
		return 0;
	}
	if (sc->n == sc->cap) {
		int cap = sc->cap ? sc->cap * 2 : 16;

		n = realloc(sc->ids, (size_t)cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		sc->ids = n;
		sc->cap = cap;
	}
	sc->ids[sc->n++] = id;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void exclude_retry_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct discovery_k8s *dk = arg;

	(void)l;
	(void)t;
	dk->exclude_retry = NULL;
	dk->dirty_excl = true;
	k8s_source_deliver_soon(dk);
}

/* Have the daemon make the BPF exclusion map hold exactly the opted-out pods' cgroups. */
static void sync_exclusions(struct discovery_k8s *dk)
{
	struct excl_scan sc = {.dk = dk};
	struct discovery_exclusions ex = {.origin = K8S_EXCLUDE_ORIGIN};
	int err, n_pods, n_ns;

	dk->dirty_excl = false;
	if (!dk->cgroup_root[0])
		return;
	err = k8s_pods_foreach_excluded(dk->pods, collect_pod, &sc);
	if (err) {
		free(sc.ids);
		return;
	}
	if (sc.n)
		qsort(sc.ids, (size_t)sc.n, sizeof(*sc.ids), cmp_u64);
	if (dk->excl_synced && sc.n == dk->n_excl &&
	    (!sc.n || !memcmp(sc.ids, dk->excl_ids, (size_t)sc.n * sizeof(*sc.ids)))) {
		free(sc.ids);
	} else {
		ex.ids = sc.ids;
		ex.n = sc.n;
		err = dk->base.on_update(dk->base.arg, NULL, &ex);
		k8s_pods_counts(dk->pods, &n_pods, &n_ns);
		if (err) {
			log_error("kube_opt_outs_sync_failed error=\"%s\"", strerror(-err));
			dk->base.n_errors++;
			free(sc.ids);
		} else {
			log_info("kube_opt_outs_synced excluded_pods=%d pending=%d pods=%d "
				 "opted_out_namespaces=%d",
				 sc.n, sc.pending, n_pods, n_ns);
			free(dk->excl_ids);
			dk->excl_ids = sc.ids;
			dk->n_excl = sc.n;
			dk->excl_synced = true;
		}
	}
	if (sc.pending && !dk->exclude_retry)
		dk->exclude_retry =
		    loop_timer_add(dk->loop, EXCLUDE_RETRY_MS, exclude_retry_cb, dk);
}

/* ---- delivering states ---- */

/* Who calls from which cgroup: this node's pods. Without them every caller
 * is "unknown"; nothing else depends on it. */
static void add_callers(struct discovery_k8s *dk, struct state *st)
{
	struct state_caller *c = NULL;
	int n = 0;

	if (!dk->cgroup_root[0])
		return;
	if (k8s_pods_callers(dk->pods, dk->cgroup_root, dk->cg->id_of, &c, &n)) {
		log_warn("kube_callers_failed error=\"out of memory\" action=\"callers unknown\"");
		return;
	}
	state_set_callers(st, c, n);
}

static bool gates_open(const struct discovery_k8s *dk)
{
	for (int i = 0; i < RES_COUNT; i++)
		if (dk->r[i].phase != PH_OFF && !dk->r[i].gate_open)
			return false;
	return true;
}

/* The state's version: the newer resourceVersion of the Services and
 * EndpointSlices it was built from. resourceVersions are opaque, but the API
 * server's are etcd revisions, so the larger number is the later change;
 * one that is not a number is reported as it is. */
static void state_version(const struct discovery_k8s *dk, char *out, size_t len)
{
	const char *best = NULL;
	unsigned long long best_n = 0;

	for (int i = RES_SERVICES; i <= RES_SLICES; i++) {
		const char *rv = dk->r[i].rv;
		char *end;
		unsigned long long n;

		if (!rv)
			continue;
		errno = 0;
		n = strtoull(rv, &end, 10);
		if (errno || *end || end == rv) {
			best = rv;
			break;
		}
		if (!best || n > best_n) {
			best = rv;
			best_n = n;
		}
	}
	snprintf(out, len, "%s", best ? best : "");
}

static void deliver_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct discovery_k8s *dk = arg;
	struct state *st;
	int n_eps = 0, reused, built;

	(void)l;
	(void)t;
	dk->deliver = NULL;
	if (!gates_open(dk))
		return; /* list_done() of the last kind schedules us again */
	if (dk->dirty_excl)
		sync_exclusions(dk);
	if (!dk->dirty_state)
		return;
	dk->last_deliver_ms = loop_now_ms();
	st = k8s_store_build_cached(dk->store, dk->cache);
	if (!st) {
		log_error("kube_state_build_failed error=\"out of memory\" action=retry");
		k8s_source_deliver_soon(dk);
		return;
	}
	dk->dirty_state = false;
	add_callers(dk, st);
	state_version(dk, st->version, sizeof(st->version));
	/* The daemon resolves locality too, with the same inputs: endpoints the
	 * cache keeps are then final, and the next state shares them as they are. */
	if (!locality_resolve(st, dk->cfg->node_name, dk->cfg->zone))
		k8s_build_cache_commit(dk->cache, st);
	k8s_build_cache_counts(dk->cache, &reused, &built);
	for (int i = 0; i < st->n_svcs; i++)
		n_eps += st->svcs[i].n_eps;
	log_info("kube_state services=%d endpoints=%d callers=%d first=%s reused=%d built=%d",
		 st->n_svcs, n_eps, st->n_callers, dk->base.synced ? "false" : "true", reused,
		 built);
	dk->base.synced = true;
	dk->base.on_update(dk->base.arg, st, NULL);
}

/* Coalesce: the first change arms the timer, the rest ride along; a lone
 * change waits SETTLE_MS, one soon after the last state its debounce. */
void k8s_source_deliver_soon(struct discovery_k8s *dk)
{
	uint64_t now, at;

	if (dk->deliver || !dk->loop)
		return;
	now = loop_now_ms();
	at = dk->last_deliver_ms + DEBOUNCE_MS;
	dk->deliver =
	    loop_timer_add(dk->loop, at > now + SETTLE_MS ? at - now : SETTLE_MS, deliver_cb, dk);
}

/* ---- the source ---- */

static uint32_t watch_idle_ms(void)
{
	const char *v = getenv("H2SPLIT_KUBE_WATCH_IDLE");
	char *end;
	long s;

	if (!v || !*v)
		return WATCH_IDLE_DEFAULT_S * 1000;
	s = strtol(v, &end, 10);
	if (*end || s < 1 || s > 3600) {
		log_warn("setting_ignored name=H2SPLIT_KUBE_WATCH_IDLE value=\"%s\" "
			 "expected=\"seconds, 1-3600\"",
			 v);
		return WATCH_IDLE_DEFAULT_S * 1000;
	}
	return (uint32_t)s * 1000;
}

static void setup_opt_outs(struct discovery_k8s *dk)
{
	int err;

	if (!dk->cg) {
		log_warn("kube_opt_outs_disabled reason=\"no cgroup access\"");
		return;
	}
	if (!dk->cfg->node_name[0]) {
		log_warn("kube_opt_outs_disabled reason=\"no node name\" "
			 "fix=\"set H2SPLIT_NODE_NAME from spec.nodeName (or --node-name)\"");
		return;
	}
	err = dk->cg->root(dk->cgroup_root, sizeof(dk->cgroup_root));
	if (err) {
		dk->cgroup_root[0] = 0;
		log_warn("kube_opt_outs_disabled reason=\"cgroup v2 root not found: %s\" "
			 "fix=\"mount the host's cgroup2 at /sys/fs/cgroup\"",
			 strerror(-err));
		return;
	}
	dk->r[RES_NAMESPACES].phase = PH_WAIT;
	dk->r[RES_PODS].phase = PH_WAIT;
}

static int k8s_start(struct discovery *d, struct loop *l)
{
	struct discovery_k8s *dk = (struct discovery_k8s *)d;
	char err[1024];
	int rc;

	rc = k8s_target_init(&dk->target, dk->cfg->kube_api, dk->cfg->kube_token_file,
			     dk->cfg->kube_ca_file, err, sizeof(err));
	if (rc) {
		log_error("kube_config_invalid error=\"%s\"", err);
		return rc;
	}
	dk->loop = l;
	dk->watch_idle_ms = watch_idle_ms();
	dk->r[RES_SERVICES].phase = PH_WAIT;
	dk->r[RES_SLICES].phase = PH_WAIT;
	/* This Node's zone label (locality), unless --zone says it. */
	if (dk->cfg->node_name[0] && !dk->cfg->zone[0])
		dk->r[RES_NODES].phase = PH_WAIT;
	setup_opt_outs(dk);
	log_info("kube_source_starting api=%s node=%s token_file=%s ca_file=%s watch_idle_s=%u",
		 dk->target.url_str, dk->cfg->node_name[0] ? dk->cfg->node_name : "-",
		 dk->target.token_file, dk->target.ca_file, dk->watch_idle_ms / 1000);
	for (int i = 0; i < RES_COUNT; i++)
		if (dk->r[i].phase != PH_OFF)
			k8s_reflector_restart(&dk->r[i], true, 0);
	return 0;
}

static void k8s_reload(struct discovery *d)
{
	struct discovery_k8s *dk = (struct discovery_k8s *)d;

	log_info("kube_relist reason=reload");
	for (int i = 0; i < RES_COUNT; i++) {
		struct reflector *r = &dk->r[i];

		if (r->phase == PH_OFF)
			continue;
		k8s_reflector_stop(r);
		k8s_backoff_reset(&r->bo);
		r->consistent = true;
		k8s_reflector_restart(r, true, 0);
	}
}

static void k8s_destroy(struct discovery *d)
{
	struct discovery_k8s *dk = (struct discovery_k8s *)d;

	if (!dk)
		return;
	for (int i = 0; i < RES_COUNT; i++) {
		struct reflector *r = &dk->r[i];

		if (dk->loop)
			k8s_reflector_stop(r);
		else
			k8s_reflector_reset_paging(r);
		free(r->rv);
		json_object_put(r->keys);
		k8s_lines_free(&r->lines);
	}
	if (dk->loop) {
		loop_timer_cancel(dk->loop, dk->deliver);
		loop_timer_cancel(dk->loop, dk->exclude_retry);
	}
	k8s_store_free(dk->store);
	k8s_build_cache_free(dk->cache);
	k8s_pods_free(dk->pods);
	free(dk->excl_ids);
	free(dk);
}

static const struct discovery_ops k8s_ops = {
    .name = "kubernetes",
    .start = k8s_start,
    .reload = k8s_reload,
    .destroy = k8s_destroy,
};

struct discovery *discovery_kubernetes_new(const struct config *cfg,
					   const struct discovery_cgroup_ops *cg,
					   discovery_update_cb *cb, void *arg)
{
	struct discovery_k8s *dk = calloc(1, sizeof(*dk));
	uint64_t seed = loop_now_ns() ^ ((uint64_t)getpid() << 32);

	if (!dk)
		return NULL;
	dk->base = (struct discovery){.ops = &k8s_ops, .on_update = cb, .arg = arg};
	dk->cfg = cfg;
	dk->cg = cg;
	dk->dirty_state = true; /* the first state goes out even when empty */
	dk->store = k8s_store_new();
	dk->cache = k8s_build_cache_new();
	dk->pods = k8s_pods_new();
	for (int i = 0; i < RES_COUNT; i++) {
		struct reflector *r = &dk->r[i];

		r->dk = dk;
		r->res = (enum res)i;
		r->lines.max = 64u << 20; /* one event: a big EndpointSlice is well below */
		k8s_backoff_init(&r->bo, BACKOFF_MIN_MS, BACKOFF_MAX_MS, BACKOFF_HEALTHY_MS,
				 seed + (uint64_t)i * 7919);
		if (k8s_res_info[i].store && !(r->keys = json_object_new_object()))
			goto fail;
	}
	if (!dk->store || !dk->cache || !dk->pods)
		goto fail;
	return &dk->base;
fail:
	k8s_destroy(&dk->base);
	return NULL;
}
