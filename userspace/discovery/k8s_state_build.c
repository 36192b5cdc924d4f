// SPDX-License-Identifier: Apache-2.0
/*
 * k8s_store_build(): joins the store's Services and EndpointSlices into the
 * desired state. Slices are sorted by (namespace, service) so each Service
 * finds its own with a binary search; endpoints are mapped by port name as
 * kube-proxy does and deduplicated by address and port. With a build cache,
 * a Service whose objects are unchanged (same revisions, same number of
 * slices) shares the endpoints it had in the last state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "discovery/k8s_objects_int.h"

static int cmp_slice(const void *a, const void *b)
{
	const struct obj *x = *(const struct obj *const *)a, *y = *(const struct obj *const *)b;
	int c = strcmp(x->ns, y->ns);

	if (!c)
		c = strcmp(x->slice.service, y->slice.service);
	return c ? c : strcmp(x->name, y->name);
}

/* Endpoints of one service port before deduplication. */
struct cand {
	struct state_endpoint ep;
	int rank; /* 0 usable, 1 fallback, 2 neither: the best copy of a duplicate wins */
	int seq;  /* then the first in slice-name order */
};

struct scratch {
	struct cand *c; /* owned */
	int n, cap;
	struct state_endpoint *eps; /* owned */
	int eps_cap;
};

/* One service port's endpoints as built, and what they were built from. */
struct cache_ent {
	char ns[STATE_NAME_MAX];
	char name[STATE_NAME_MAX];
	char port_name[STATE_NAME_MAX];
	uint64_t rev; /* the highest revision of the Service and its slices */
	int n_slices;
	struct state_endpoint *eps; /* a reference (state_eps_ref), NULL none */
	int n_eps;
	bool kept; /* eps is that of the committed state's service */
};

struct k8s_build_cache {
	struct cache_ent *ents; /* owned, sorted by key: the last commit */
	int n;
	struct cache_ent *pending; /* owned: the last build's, committed next */
	int n_pending, cap_pending;
	int reused, built;
};

static int cmp_ent(const void *a, const void *b)
{
	const struct cache_ent *x = a, *y = b;
	int c = strcmp(x->ns, y->ns);

	if (!c)
		c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->port_name, y->port_name);
}

static void drop_ents(struct cache_ent *v, int n)
{
	for (int i = 0; i < n; i++)
		state_eps_unref(v[i].eps);
	free(v);
}

struct k8s_build_cache *k8s_build_cache_new(void)
{
	return calloc(1, sizeof(struct k8s_build_cache));
}

void k8s_build_cache_free(struct k8s_build_cache *c)
{
	if (!c)
		return;
	drop_ents(c->ents, c->n);
	free(c->pending);
	free(c);
}

void k8s_build_cache_counts(const struct k8s_build_cache *c, int *reused, int *built)
{
	*reused = c->reused;
	*built = c->built;
}

static void key_of(struct cache_ent *key, const struct state_service *svc)
{
	memcpy(key->ns, svc->ns, sizeof(key->ns));
	memcpy(key->name, svc->name, sizeof(key->name));
	memcpy(key->port_name, svc->port_name, sizeof(key->port_name));
}

void k8s_build_cache_commit(struct k8s_build_cache *c, const struct state *st)
{
	struct cache_ent *v = c->pending;
	int n = c->n_pending;

	c->pending = NULL;
	c->n_pending = c->cap_pending = 0;
	if (n > 1)
		qsort(v, (size_t)n, sizeof(*v), cmp_ent);
	for (int i = 0; i < st->n_svcs; i++) {
		const struct state_service *svc = &st->svcs[i];
		struct cache_ent key, *e;

		if (svc->retired_ms)
			continue;
		key_of(&key, svc);
		e = n ? bsearch(&key, v, (size_t)n, sizeof(*v), cmp_ent) : NULL;
		if (!e || e->kept)
			continue;
		e->eps = svc->eps;
		e->n_eps = svc->n_eps;
		e->kept = true;
		state_eps_ref(e->eps);
	}
	drop_ents(c->ents, c->n);
	c->ents = v;
	c->n = n;
}

/* |c|'s endpoints of |svc| built from |rev| and |n_slices|, or NULL. */
static const struct cache_ent *cache_hit(const struct k8s_build_cache *c,
					 const struct state_service *svc, uint64_t rev,
					 int n_slices)
{
	const struct cache_ent *e;
	struct cache_ent key;

	if (!c || !c->n)
		return NULL;
	key_of(&key, svc);
	e = bsearch(&key, c->ents, (size_t)c->n, sizeof(*e), cmp_ent);
	if (!e || !e->kept || e->rev != rev || e->n_slices != n_slices)
		return NULL;
	return e;
}

/* Remember what |svc| is built from, for the next commit. */
static int cache_note(struct k8s_build_cache *c, const struct state_service *svc, uint64_t rev,
		      int n_slices)
{
	struct cache_ent *e;

	if (!c)
		return 0;
	if (c->n_pending == c->cap_pending) {
		int cap = c->cap_pending ? c->cap_pending * 2 : 256;

		e = realloc(c->pending, (size_t)cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		c->pending = e;
		c->cap_pending = cap;
	}
	e = &c->pending[c->n_pending++];
	key_of(e, svc);
	e->rev = rev;
	e->n_slices = n_slices;
	e->eps = NULL;
	e->n_eps = 0;
	e->kept = false;
	return 0;
}

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int c = memcmp(&x->ep.ip, &y->ep.ip, sizeof(x->ep.ip));

	if (!c)
		c = (int)x->ep.port - (int)y->ep.port;
	if (!c)
		c = x->rank - y->rank;
	return c ? c : x->seq - y->seq;
}

static int push_cand(struct scratch *sc, const struct state_endpoint *ep, uint16_t port)
{
	struct cand *c;

	if (sc->n == sc->cap) {
		int cap = sc->cap ? sc->cap * 2 : 64;

		c = realloc(sc->c, (size_t)cap * sizeof(*c));
		if (!c)
			return -ENOMEM;
		sc->c = c;
		sc->cap = cap;
	}
	c = &sc->c[sc->n];
	c->ep = *ep;
	c->ep.port = port;
	c->rank = state_endpoint_usable(ep) ? 0 : state_endpoint_fallback(ep) ? 1 : 2;
	c->seq = sc->n++;
	return 0;
}

/* Kube-proxy's mapping: the slice port whose name equals the service port's. */
static uint16_t slice_port_for(const struct slice *sl, const char *port_name)
{
	for (int i = 0; i < sl->n_ports; i++) {
		if (sl->ports[i].tcp && sl->ports[i].port && !strcmp(sl->ports[i].name, port_name))
			return sl->ports[i].port;
	}
	return 0;
}

/* Fill svc->eps from the slices [first, last) of its service, deduplicated. */
static int gather_endpoints(struct scratch *sc, struct obj *const *first, struct obj *const *last,
			    struct state_service *svc)
{
	sc->n = 0;
	for (struct obj *const *p = first; p < last; p++) {
		const struct slice *sl = &(*p)->slice;
		uint16_t port = slice_port_for(sl, svc->port_name);

		for (int i = 0; port && i < sl->n_eps; i++) {
			if (push_cand(sc, &sl->eps[i], port))
				return -ENOMEM;
		}
	}
	if (sc->n == 0) {
		svc->eps = NULL;
		svc->n_eps = 0;
		return 0;
	}
	qsort(sc->c, (size_t)sc->n, sizeof(*sc->c), cmp_cand);
	if (sc->n > sc->eps_cap) {
		struct state_endpoint *e = realloc(sc->eps, (size_t)sc->n * sizeof(*e));

		if (!e)
			return -ENOMEM;
		sc->eps = e;
		sc->eps_cap = sc->n;
	}
	svc->eps = sc->eps;
	svc->n_eps = 0;
	for (int i = 0; i < sc->n; i++) {
		const struct state_endpoint *prev = svc->n_eps ? &sc->eps[svc->n_eps - 1] : NULL;

		if (prev && !memcmp(&prev->ip, &sc->c[i].ep.ip, sizeof(prev->ip)) &&
		    prev->port == sc->c[i].ep.port)
			continue;
		sc->eps[svc->n_eps++] = sc->c[i].ep;
	}
	return 0;
}

/* First slice of (ns, service) in the sorted array, and one past its last. */
static void slice_range(struct obj **slices, size_t n, const struct obj *svc, struct obj ***first,
			struct obj ***last)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(slices[mid]->ns, svc->ns);

		if (!c)
			c = strcmp(slices[mid]->slice.service, svc->name);
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = slices + lo;
	while (lo < n && !strcmp(slices[lo]->ns, svc->ns) &&
	       !strcmp(slices[lo]->slice.service, svc->name))
		lo++;
	*last = slices + lo;
}

static int add_service_ports(struct state *st, struct scratch *sc, struct k8s_build_cache *c,
			     const struct obj *o, struct obj **slices, size_t n_slices)
{
	struct obj **first, **last;
	uint64_t rev = o->rev;

	slice_range(slices, n_slices, o, &first, &last);
	for (struct obj **p = first; p < last; p++)
		if ((*p)->rev > rev)
			rev = (*p)->rev;
	for (int i = 0; i < o->svc.n_ports; i++) {
		const struct svc_port *sp = &o->svc.ports[i];
		const struct cache_ent *hit;
		struct state_service svc = {
		    .port = sp->port,
		    .n_vips = o->svc.n_vips,
		    .lb = o->svc.lb,
		    .upstream_tls = o->svc.upstream_tls,
		    .max_inflight_ep = o->svc.max_inflight_ep,
		    .max_inflight = o->svc.max_inflight,
		    .max_pending = o->svc.max_pending,
		    .slow_start_ms = o->svc.slow_start_ms,
		    .health_check = o->svc.health_check,
		    .health_interval_ms = o->svc.health_interval_ms,
		    .retry = o->svc.retry,
		    .hedge = o->svc.hedge,
		    .per_try_timeout_ms = o->svc.per_try_timeout_ms,
		    .topology = o->svc.topology,
		    .local_only = o->svc.local_only,
		};

		if (!sp->opted)
			continue;
		/* Names were length-checked when the objects were applied. */
		memcpy(svc.ns, o->ns, sizeof(svc.ns));
		memcpy(svc.name, o->name, sizeof(svc.name));
		memcpy(svc.port_name, sp->name, sizeof(svc.port_name));
		memcpy(svc.vips, o->svc.vips, sizeof(svc.vips));
		memcpy(svc.health_service, o->svc.health_service, sizeof(svc.health_service));
		if (cache_note(c, &svc, rev, (int)(last - first)))
			return -ENOMEM;
		hit = cache_hit(c, &svc, rev, (int)(last - first));
		if (hit) {
			svc.eps = hit->eps;
			svc.n_eps = hit->n_eps;
			c->reused++;
			if (state_add_service_shared(st, &svc))
				return -ENOMEM;
			continue;
		}
		if (gather_endpoints(sc, first, last, &svc))
			return -ENOMEM;
		for (int j = 0; j < svc.n_eps; j++)
			svc.eps[j].weight = k8s_service_weight(&o->svc, svc.eps[j].pod);
		if (c)
			c->built++;
		if (state_add_service(st, &svc))
			return -ENOMEM;
	}
	return 0;
}

static struct obj **collect_slices(const struct k8s_store *s, size_t *n)
{
	struct obj **v = malloc((s->n_objs ? s->n_objs : 1) * sizeof(*v));

	*n = 0;
	if (!v)
		return NULL;
	for (size_t b = 0; b < s->n_buckets; b++) {
		for (struct obj *o = s->buckets[b]; o; o = o->next) {
			if (o->kind == OBJ_SLICE && o->slice.ip && o->slice.service[0])
				v[(*n)++] = o;
		}
	}
	qsort(v, *n, sizeof(*v), cmp_slice);
	return v;
}

struct state *k8s_store_build(const struct k8s_store *s)
{
	return k8s_store_build_cached(s, NULL);
}

struct state *k8s_store_build_cached(const struct k8s_store *s, struct k8s_build_cache *c)
{
	struct scratch sc = {0};
	struct state *st = state_new();
	struct obj **slices = NULL;
	size_t n_slices;
	int rc = -ENOMEM;

	if (c) {
		c->n_pending = 0;
		c->reused = c->built = 0;
	}
	if (!st || !(slices = collect_slices(s, &n_slices)))
		goto out;
	for (size_t b = 0; b < s->n_buckets; b++) {
		for (struct obj *o = s->buckets[b]; o; o = o->next) {
			if (o->kind == OBJ_NODE && state_add_node(st, &o->node))
				goto out;
			if (o->kind != OBJ_SERVICE || !o->svc.routable)
				continue;
			if (add_service_ports(st, &sc, c, o, slices, n_slices))
				goto out;
		}
	}
	rc = state_finish(st);
out:
	free(slices);
	free(sc.c);
	free(sc.eps);
	if (rc) {
		if (c)
			c->n_pending = 0; /* nothing to commit */
		state_free(st);
		return NULL;
	}
	return st;
}
