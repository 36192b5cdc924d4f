// SPDX-License-Identifier: Apache-2.0
/*
 * The per-worker endpoint registry and pick dispatch (see balancer.h): two
 * chained hash tables, services by id (policy instance, candidate list,
 * caps, weights and slow start) and endpoints by (service id, ip, port).
 * Invariant: candidate lists point only at endpoints the current snapshot
 * lists, so they never dangle: only unlisted endpoints are ever freed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/balancer_int.h"

static const struct balancer_policy_ops *policy_ops(enum lb_policy p)
{
	if (p == LB_ROUND_ROBIN)
		return &balancer_round_robin;
	return p == LB_EWMA ? &balancer_ewma : &balancer_least_request;
}

struct balancer_set *balancer_set_new(uint64_t seed, enum lb_policy dflt)
{
	struct balancer_set *bs = calloc(1, sizeof(*bs));

	if (!bs)
		return NULL;
	bs->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
	bs->dflt = dflt;
	bs->params = (struct balancer_params){
	    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
	    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
	    .eject_failures = BALANCER_EJECT_FAILURES,
	    .eject_failure_pct = BALANCER_EJECT_FAILURE_PCT,
	    .eject_base_ms = BALANCER_EJECT_BASE_MS,
	    .max_pending = BALANCER_MAX_PENDING,
	};
	bs->svc_buckets = 64;
	bs->ep_buckets = 256;
	bs->svc_tab = calloc(bs->svc_buckets, sizeof(*bs->svc_tab));
	bs->ep_tab = calloc(bs->ep_buckets, sizeof(*bs->ep_tab));
	if (!bs->svc_tab || !bs->ep_tab) {
		balancer_set_free(bs);
		return NULL;
	}
	return bs;
}

void balancer_set_params(struct balancer_set *bs, const struct balancer_params *p)
{
	bs->params = *p;
	if (!bs->params.ewma_decay_ms)
		bs->params.ewma_decay_ms = 1;
}

static void service_free(struct balancer_set *bs, struct lb_service *ls)
{
	lb_wake_all(bs, ls);
	balancer_policy_free(ls->b);
	free(ls->eps);
	free(ls);
}

void balancer_set_free(struct balancer_set *bs)
{
	if (!bs)
		return;
	for (size_t i = 0; bs->svc_tab && i < bs->svc_buckets; i++) {
		for (struct lb_service *ls = bs->svc_tab[i], *next; ls; ls = next) {
			next = ls->hnext;
			service_free(bs, ls);
		}
	}
	for (size_t i = 0; bs->ep_tab && i < bs->ep_buckets; i++) {
		for (struct lb_endpoint *ep = bs->ep_tab[i], *next; ep; ep = next) {
			next = ep->hnext;
			free(ep);
		}
	}
	free(bs->svc_tab);
	free(bs->ep_tab);
	free(bs->tried);
	free(bs);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static size_t ep_hash(const struct balancer_set *bs, uint32_t id, const struct h2s_ip *ip,
		      uint16_t port)
{
	uint64_t h = 0xcbf29ce484222325ull;

	h = fnv1a(h, &id, sizeof(id));
	h = fnv1a(h, ip->b, sizeof(ip->b));
	h = fnv1a(h, &port, sizeof(port));
	return (size_t)(h & (bs->ep_buckets - 1));
}

static void ep_grow(struct balancer_set *bs)
{
	size_t nb = bs->ep_buckets * 2;
	struct lb_endpoint **tab = calloc(nb, sizeof(*tab)), **old = bs->ep_tab;
	size_t ob = bs->ep_buckets;

	if (!tab)
		return; /* keep the longer chains */
	bs->ep_tab = tab;
	bs->ep_buckets = nb;
	for (size_t i = 0; i < ob; i++) {
		for (struct lb_endpoint *ep = old[i], *next; ep; ep = next) {
			size_t h = ep_hash(bs, ep->pub.service_id, &ep->pub.ip, ep->pub.port);

			next = ep->hnext;
			ep->hnext = tab[h];
			tab[h] = ep;
		}
	}
	free(old);
}

/* The state of (|id|, |ip|, |port|), created when new (|*created| set). */
static struct lb_endpoint *ep_get(struct balancer_set *bs, uint32_t id, const struct h2s_ip *ip,
				  uint16_t port, bool *created)
{
	size_t h = ep_hash(bs, id, ip, port);
	struct lb_endpoint *ep;

	*created = false;
	for (ep = bs->ep_tab[h]; ep; ep = ep->hnext)
		if (ep->pub.service_id == id && ep->pub.port == port &&
		    !memcmp(&ep->pub.ip, ip, sizeof(*ip)))
			return ep;
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	*created = true;
	ep->set = bs;
	ep->pub.service_id = id;
	ep->pub.ip = *ip;
	ep->pub.port = port;
	ep->hnext = bs->ep_tab[h];
	bs->ep_tab[h] = ep;
	if (++bs->n_eps > bs->ep_buckets * 2)
		ep_grow(bs);
	return ep;
}

static void ep_unlink(struct balancer_set *bs, struct lb_endpoint *ep)
{
	struct lb_endpoint **pp =
	    &bs->ep_tab[ep_hash(bs, ep->pub.service_id, &ep->pub.ip, ep->pub.port)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == ep) {
			*pp = ep->hnext;
			bs->n_eps--;
			return;
		}
	}
}

static void svc_grow(struct balancer_set *bs)
{
	size_t ob = bs->svc_buckets;
	struct lb_service **tab = calloc(ob * 2, sizeof(*tab)), **old = bs->svc_tab;

	if (!tab)
		return;
	bs->svc_tab = tab;
	bs->svc_buckets = ob * 2;
	for (size_t i = 0; i < ob; i++) {
		for (struct lb_service *ls = old[i], *next; ls; ls = next) {
			struct lb_service **pp = lb_service_slot(bs, ls->id);

			next = ls->hnext;
			ls->hnext = NULL;
			*pp = ls;
		}
	}
	free(old);
}

static enum lb_policy resolve(enum lb_policy p, enum lb_policy dflt)
{
	if (p == LB_DEFAULT)
		p = dflt;
	return p == LB_ROUND_ROBIN || p == LB_EWMA ? p : LB_LEAST_REQUEST;
}

/* A service's cap: its own (-1: none) or else the set's. */
static uint32_t cap(int32_t svc_value, uint32_t dflt)
{
	if (svc_value < 0)
		return 0;
	return svc_value ? (uint32_t)svc_value : dflt;
}

/* Rebuild |ls|'s candidates from |svc|. -ENOMEM leaves it empty. */
static int service_refresh(struct balancer_set *bs, struct lb_service *ls,
			   const struct state_service *svc, uint64_t gen)
{
	enum lb_policy p = resolve(svc->lb, bs->dflt);
	size_t nu = 0, nf = 0, n4 = 0, nt[3] = {0}, at[3];
	bool tiered = svc->topology_in_force == STATE_TOPO_ZONE ||
		      svc->topology_in_force == STATE_TOPO_NODE;

	ls->gen = gen;
	ls->n_usable = ls->n_fallback = 0;
	ls->max_ep = cap(svc->max_inflight_ep, bs->params.max_inflight_ep);
	ls->max_svc = cap(svc->max_inflight, bs->params.max_inflight_svc);
	ls->max_pending = cap(svc->max_pending, bs->params.max_pending);
	ls->slow_start_ms = cap(svc->slow_start_ms, bs->params.slow_start_ms);
	ls->weighted = false;
	ls->max_weight = 1;
	ls->backoff_max_ms = ls->eject_max_ms = 0;
	ls->list_version++;
	if (!ls->b || ls->policy != p) {
		balancer_policy_free(ls->b);
		ls->b = balancer_policy_new(policy_ops(p), &bs->rng, &bs->params);
		ls->policy = p;
		if (!ls->b)
			return -ENOMEM;
	}
	if ((size_t)svc->n_eps > ls->n_alloc) {
		struct balancer_candidate **v = realloc(ls->eps, (size_t)svc->n_eps * sizeof(*v));

		if (!v)
			return -ENOMEM;
		ls->eps = v;
		ls->n_alloc = (size_t)svc->n_eps;
	}
	for (int i = 0; i < svc->n_eps; i++) {
		const struct state_endpoint *se = &svc->eps[i];
		bool created;
		struct lb_endpoint *ep = ep_get(bs, svc->id, &se->ip, se->port, &created);

		if (!ep)
			return -ENOMEM;
		/* Endpoints there when the worker first routes to the service are
		 * established (Envoy: no slow start in a new cluster). */
		if (created && ls->seeded)
			ep->c.warm_start_ms = BALANCER_WARM_UNSTAMPED;
		/* Its ramp starts once it is a candidate (ready), at a pick. */
		ls->unstamped |= ep->c.warm_start_ms == BALANCER_WARM_UNSTAMPED;
		ep->c.weight = se->weight ? se->weight : 1;
		if (i && ep->c.weight != ls->max_weight)
			ls->weighted = true;
		if (!i || ep->c.weight > ls->max_weight)
			ls->max_weight = ep->c.weight;
		ep->seen_gen = gen;
		lb_note_backoff(ls, ep);
		/* internalTrafficPolicy: Local: other nodes' endpoints are no candidates. */
		ep->usable = state_endpoint_usable(se) &&
			     (!svc->local_only || se->locality == STATE_LOC_NODE);
		ep->fallback = !ep->usable && state_endpoint_fallback(se) &&
			       (!svc->local_only || se->locality == STATE_LOC_NODE);
		ep->pub.locality = se->locality;
		ep->tier = tiered ? se->tier : STATE_TIER_REST;
		nt[ep->tier] += ep->usable;
		memcpy(ep->pub.pod, se->pod, sizeof(ep->pub.pod));
		ep->pub.pod[sizeof(ep->pub.pod) - 1] = '\0';
		nu += ep->usable;
		nf += ep->fallback;
		n4 += h2s_ip_is_v4(&se->ip);
	}
	ls->mixed = n4 && n4 < (size_t)svc->n_eps;
	/* Usable first (by tier: node, zone, rest), then fallback, each in
	 * snapshot order. */
	at[0] = 0;
	at[1] = nt[0];
	at[2] = nt[0] + nt[1];
	for (int i = 0, f = 0; i < svc->n_eps; i++) {
		const struct state_endpoint *se = &svc->eps[i];
		bool created;
		struct lb_endpoint *ep = ep_get(bs, svc->id, &se->ip, se->port, &created);

		if (ep->usable)
			ls->eps[at[ep->tier]++] = &ep->c;
		else if (ep->fallback)
			ls->eps[nu + (size_t)f++] = &ep->c;
	}
	ls->n_usable = nu;
	ls->n_fallback = nf;
	ls->tiered = tiered;
	ls->near[0] = nt[0];
	ls->near[1] = nt[0] + nt[1];
	ls->seeded = true;
	return 0;
}

/* Start the warm-up of endpoints that joined since the last pick: now. */
static void stamp_warmup(struct lb_service *ls, uint64_t now_ms)
{
	ls->unstamped = false;
	for (size_t i = 0; i < ls->n_usable + ls->n_fallback; i++) {
		struct lb_endpoint *ep = lb_ep_of(ls->eps[i]);

		if (ep->c.warm_start_ms != BALANCER_WARM_UNSTAMPED)
			continue;
		ep->c.warm_start_ms = now_ms ? now_ms : 1; /* 0 means established */
		ep->warm_until_ms = now_ms + ls->slow_start_ms;
		if (ls->warm_until_ms < now_ms + ls->slow_start_ms)
			ls->warm_until_ms = now_ms + ls->slow_start_ms;
	}
}

/* Mark the candidates to skip in bs->tried: the first |skip|, at their cap,
 * of the wrong family (|family|), in backoff or, when |eject|, ejected (all
 * of them when |backoff|, else only tried ones) and, when |use_avoid|, tried
 * ones. NULL when nothing is marked. */
const char *lb_mark_tried(struct balancer_set *bs, const struct lb_service *ls,
			  struct balancer_candidate *const *c, size_t n,
			  const struct balancer_pick *p, int family, bool use_avoid, bool backoff,
			  bool eject, bool checked, size_t skip)
{
	bool any = false;

	if (!family && !p->n_avoid && !ls->max_ep && !skip &&
	    (!backoff || (!checked && ls->backoff_max_ms <= p->now_ms &&
			  (!eject || ls->eject_max_ms <= p->now_ms))))
		return NULL; /* nothing to mark: no scan */
	if (n > bs->tried_alloc) {
		char *t = realloc(bs->tried, n);

		if (!t)
			return NULL; /* a retry may land on a tried endpoint: harmless */
		bs->tried = t;
		bs->tried_alloc = n;
	}
	for (size_t i = 0; i < n; i++) {
		const struct lb_endpoint *ep = lb_ep_of(c[i]);
		bool boff = lb_in_backoff(ep, p->now_ms, p->netns_id) ||
			    (eject && lb_ejected(ep, p->now_ms)) ||
			    (checked && health_table_unhealthy(p->health, ep->pub.service_id,
							       &ep->pub.ip, ep->pub.port)),
		     avoided = false;

		for (size_t j = 0; j < p->n_avoid; j++)
			avoided |= &ep->pub == p->avoid[j];
		bs->tried[i] = (char)(i < skip || lb_wrong_family(ep, family) ||
				      (use_avoid && avoided) ||
				      (boff && (backoff || avoided)) || lb_at_cap(ls, c[i]));
		any |= bs->tried[i];
	}
	return any ? bs->tried : NULL;
}

/* Preference: fresh endpoints, then fresh ones in backoff or ejected, then
 * ones tried already but not failing (a refused stream); the first |skip|
 * never. An index into |list|, or -1. */
static int pick_passes(struct balancer_set *bs, struct lb_service *ls,
		       struct balancer_candidate *const *list, size_t n, struct balancer_pick *p,
		       int family, bool eject, bool checked, size_t skip)
{
	struct balancer_policy *b = ls->b;
	int i;

	i = b->ops->pick(b, list, n,
			 lb_mark_tried(bs, ls, list, n, p, family, true, true, eject, checked, skip));
	if (i < 0)
		i = b->ops->pick(
		    b, list, n,
		    lb_mark_tried(bs, ls, list, n, p, family, true, false, eject, checked, skip));
	if (i < 0 && p->n_avoid)
		i = b->ops->pick(
		    b, list, n,
		    lb_mark_tried(bs, ls, list, n, p, family, false, true, eject, checked, skip));
	return i;
}

/* A dispatcher: find or make the service's state, refresh it for a new
 * snapshot, let circuit breaking hold the stream back, then ask the policy,
 * relaxing what it must skip step by step. */
struct balancer_endpoint *balancer_set_pick(struct balancer_set *bs,
					    const struct state_service *svc, uint64_t gen,
					    struct balancer_pick *p)
{
	struct lb_service **pp = lb_service_slot(bs, svc->id), *ls = *pp;
	struct balancer_candidate *const *list;
	struct balancer_policy *b;
	int i, family;
	bool eject, checked;
	size_t n, skip = 0;

	if (gen != bs->gen)
		bs->gen = gen;
	if (!ls) {
		ls = calloc(1, sizeof(*ls));
		if (!ls)
			return NULL;
		ls->id = svc->id;
		*pp = ls;
		if (++bs->n_svcs > bs->svc_buckets * 2)
			svc_grow(bs);
	}
	p->saturated = false;
	p->failover = BALANCER_FAILOVER_NONE;
	if (ls->gen != gen && service_refresh(bs, ls, svc, gen))
		return NULL;
	if (lb_must_wait(ls, p))
		return NULL;
	list = lb_candidates(ls, &n);
	if (!n)
		return NULL;
	if (ls->unstamped)
		stamp_warmup(ls, p->now_ms);
	b = ls->b;
	b->now_ms = p->now_ms;
	b->slow_start_ms = ls->slow_start_ms;
	b->max_weight = ls->max_weight;
	b->uniform = !ls->weighted && (!ls->slow_start_ms || p->now_ms >= ls->warm_until_ms);
	family = ls->mixed ? p->family : AF_UNSPEC;
	b->list_version = ls->list_version;
	/* Panic: past the cap (the list shrank since), ejection is ignored. */
	eject = ls->eject_max_ms <= p->now_ms || lb_count_ejected(list, n, p->now_ms) * 2 <= n;
	checked = svc->health_check && p->health;
	i = ls->tiered && list == ls->eps
		? lb_tier_pick(bs, ls, list, n, p, family, checked, &skip)
		: -1;
	if (i < 0)
		i = pick_passes(bs, ls, list, n, p, family, eject, checked, skip);
	if (i < 0 && skip)
		i = pick_passes(bs, ls, list, n, p, family, eject, checked, 0);
	if (i < 0 && lb_any_at_cap(ls, list, n, family)) {
		ls->full = BALANCER_CAP_ENDPOINT;
		p->saturated = true;
	}
	return i < 0 ? NULL : &lb_ep_of(list[i])->pub;
}

void balancer_stream_start(struct balancer_set *bs, struct balancer_endpoint *pub)
{
	struct lb_endpoint *ep = lb_ep(pub);
	struct lb_service *ls = *lb_service_slot(bs, pub->service_id);

	ep->c.inflight++;
	if (!ls)
		return;
	ls->inflight++;
	lb_maybe_wake(bs, ls);
}

void balancer_stream_end(struct balancer_set *bs, struct balancer_endpoint *pub)
{
	struct lb_endpoint *ep = lb_ep(pub);
	struct lb_service *ls = *lb_service_slot(bs, pub->service_id);

	if (ep->c.inflight)
		ep->c.inflight--;
	if (ls) {
		if (ls->inflight)
			ls->inflight--;
		lb_maybe_wake(bs, ls);
	}
	if (ep->c.inflight || ep->seen_gen == bs->gen)
		return;
	ep_unlink(bs, ep);
	free(ep);
}

void balancer_set_update(struct balancer_set *bs, const struct state *st, uint64_t gen)
{
	bs->gen = gen;
	for (size_t i = 0; i < bs->svc_buckets; i++) {
		struct lb_service **pp = &bs->svc_tab[i];

		while (*pp) {
			struct lb_service *ls = *pp;
			const struct state_service *svc = st ? state_find_id(st, ls->id) : NULL;

			if (svc) {
				if (service_refresh(bs, ls, svc, gen))
					ls->gen = 0;   /* retried on the next pick */
				lb_maybe_wake(bs, ls); /* endpoints or caps may have changed */
				pp = &ls->hnext;
				continue;
			}
			*pp = ls->hnext;
			bs->n_svcs--;
			service_free(bs, ls);
		}
	}
	for (size_t i = 0; i < bs->ep_buckets; i++) {
		struct lb_endpoint **pp = &bs->ep_tab[i];

		while (*pp) {
			struct lb_endpoint *ep = *pp;

			if (ep->seen_gen == gen || ep->c.inflight) {
				pp = &ep->hnext;
				continue;
			}
			*pp = ep->hnext;
			bs->n_eps--;
			free(ep);
		}
	}
}

struct balancer_endpoint_info balancer_endpoint_info(const struct balancer_endpoint *pub)
{
	const struct lb_endpoint *ep = lb_ep(pub);

	return (struct balancer_endpoint_info){
	    .ejected_until_ms = ep->ejected_until_ms,
	    .backoff_until_ms = ep->backoff_until_ms,
	    .consec_failures = ep->c.consec_failures,
	    .ejections = ep->ejections,
	    .latency_us = ep->c.lat.init ? (uint64_t)ep->c.lat.ewma_us : 0,
	    .jitter_us = (uint64_t)ep->c.lat.jitter_us,
	    .warm_until_ms = ep->warm_until_ms,
	};
}

size_t balancer_set_count(const struct balancer_set *bs)
{
	return bs->n_eps;
}
