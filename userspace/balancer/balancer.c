// SPDX-License-Identifier: Apache-2.0
/*
 * Balancer policies and the per-worker endpoint registry (see balancer.h).
 * Two chained hash tables: services by id (policy instance + the current
 * candidate list) and endpoints by (service id, ip, port). Candidate lists
 * point at endpoint states that the current snapshot lists, so they never
 * dangle: only unlisted endpoints are ever freed.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#include "balancer/balancer.h"

uint64_t balancer_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* Index of the |k|-th entry not marked in |tried|. */
static size_t kth_untried(const char *tried, size_t n, size_t k)
{
	if (!tried)
		return k;
	for (size_t i = 0; i < n; i++)
		if (!tried[i] && k-- == 0)
			return i;
	return n; /* not reached: callers count first */
}

static size_t count_untried(const char *tried, size_t n)
{
	size_t m = n;

	if (!tried)
		return n;
	for (size_t i = 0; i < n; i++)
		m -= tried[i] != 0;
	return m;
}

/* The share of new streams |ep| should get relative to a peer of weight 1:
 * its static weight, ramped linearly from BALANCER_SLOW_START_FLOOR up over
 * b->slow_start_ms after it joined (Envoy's slow start, aggression 1). */
double balancer_endpoint_weight(const struct balancer_endpoint *ep, uint64_t now_ms,
				uint32_t slow_start_ms)
{
	double w = ep->weight ? ep->weight : 1;
	uint64_t age;

	if (!slow_start_ms || ep->warm_start_ms == BALANCER_WARM_UNSTAMPED || !ep->warm_start_ms ||
	    now_ms >= ep->warm_start_ms + slow_start_ms)
		return w;
	age = now_ms > ep->warm_start_ms ? now_ms - ep->warm_start_ms : 0;
	if ((double)age / slow_start_ms < BALANCER_SLOW_START_FLOOR)
		return w * BALANCER_SLOW_START_FLOOR;
	return w * (double)age / slow_start_ms;
}

static double weight(const struct balancer *b, const struct balancer_endpoint *ep)
{
	return b->uniform ? 1.0 : balancer_endpoint_weight(ep, b->now_ms, b->slow_start_ms);
}

/* True with probability |p| (0..1). */
static bool chance(struct balancer *b, double p)
{
	return p >= 1.0 || (double)(balancer_rand(b->rng) >> 11) * 0x1.0p-53 < p;
}

/* round_robin: a cursor that walks the list; skips tried endpoints. With
 * weights (or slow start), an endpoint the cursor reaches takes the stream
 * with probability weight / the service's top weight, else the cursor moves
 * on: over a round, streams split by weight. */
struct rr_balancer {
	struct balancer base;
	size_t next;
};

static int rr_select(struct balancer *b, struct balancer_endpoint *const *eps, size_t n,
		     const char *tried)
{
	struct rr_balancer *rr = (struct rr_balancer *)b;
	int first = -1;

	for (size_t k = 0; k < n; k++) {
		size_t i = (rr->next + k) % n;

		if (tried && tried[i])
			continue;
		if (first < 0)
			first = (int)i;
		if (!b->uniform && !chance(b, weight(b, eps[i]) / b->max_weight))
			continue;
		rr->next = i + 1;
		return (int)i;
	}
	if (first >= 0) /* every one declined: the first in line */
		rr->next = (size_t)first + 1;
	return first;
}

static void free_balancer(struct balancer *b)
{
	free(b);
}

static const struct balancer_ops rr_ops = {
    .name = "round_robin",
    .select = rr_select,
    .destroy = free_balancer,
};

/* An untried endpoint other than |skip| (n: none), drawn with probability
 * proportional to its weight; |n| when the weights are all zero. */
static size_t weighted_draw(struct balancer *b, struct balancer_endpoint *const *eps,
			    const char *tried, size_t n, size_t skip)
{
	double sum = 0, x;

	for (size_t i = 0; i < n; i++)
		if (i != skip && !(tried && tried[i]))
			sum += weight(b, eps[i]);
	x = (double)(balancer_rand(b->rng) >> 11) * 0x1.0p-53 * sum;
	for (size_t i = 0; i < n; i++) {
		if (i == skip || (tried && tried[i]))
			continue;
		x -= weight(b, eps[i]);
		if (x < 0)
			return i;
	}
	for (size_t i = n; i-- > 0;) /* rounding: the last candidate */
		if (i != skip && !(tried && tried[i]))
			return i;
	return n;
}

/* Two distinct untried endpoints for the power-of-two-choices policies: the
 * count of untried ones (0: none; 1: only |*a| is set). With weights, both
 * are drawn by weight. Without, only the second is drawn at random; the
 * first is the endpoint that has had the fewest turns as the first choice,
 * of those the one chosen longest ago (see take_turn()). Idle equal
 * endpoints, whose ties go to the first choice, then take turns exactly
 * (two random draws left five equal pods 2-5% apart over 6,000 streams in
 * make bench-balance); the turns of one the policy shuns, or of one that is
 * busy, go to the others evenly, to whichever has waited longest first. */
static size_t pick_two(struct balancer *b, struct balancer_endpoint *const *eps, const char *tried,
		       size_t n, size_t *a, size_t *c)
{
	size_t m = count_untried(tried, n), ka = 0, kb;

	if (m == 0)
		return 0;
	if (!b->uniform) {
		*a = weighted_draw(b, eps, tried, n, n);
		if (m > 1)
			*c = weighted_draw(b, eps, tried, n, *a);
		return m;
	}
	*a = n;
	for (size_t j = 0, i = b->offset % n; j < n; j++, i = i + 1 < n ? i + 1 : 0) {
		if (tried && tried[i])
			continue;
		if (*a == n || eps[i]->turns < eps[*a]->turns ||
		    (eps[i]->turns == eps[*a]->turns && eps[i]->pick_seq < eps[*a]->pick_seq))
			*a = i;
	}
	if (m == 1)
		return 1;
	for (size_t i = 0; i < *a; i++) /* its rank among the untried */
		ka += !(tried && tried[i]);
	kb = (size_t)(balancer_rand(b->rng) % (m - 1));
	*c = kth_untried(tried, n, kb >= ka ? kb + 1 : kb);
	return m;
}

/* |i| takes the stream, |a| having been the first choice: |a| has had its
 * turn, won or lost. Only the first choice counts one: a winner drawn second
 * does not lose a turn of its own, or a pod faster than the rest would be
 * the first choice less often the more it wins, and get less than P2C gives
 * it. Never from below the last first choice's count: one that was away
 * (ejected, in backoff, new) has one turn on its return, then its share, not
 * every turn until it has made up for the time away. */
static void take_turn(struct balancer *b, struct balancer_endpoint *const *eps, size_t a, size_t i)
{
	if (eps[a]->turns < b->vtime)
		eps[a]->turns = b->vtime;
	b->vtime = ++eps[a]->turns - 1;
	eps[i]->pick_seq = ++b->picks;
}

/* Of |a| and |c|, the one with fewer streams in flight per unit of weight;
 * ties (idle endpoints, mostly) go to |a|: without weights the endpoint whose
 * turn it is (see pick_two()); with them the first draw, which is by weight,
 * so idle endpoints split streams by weight too. */
static size_t lighter(const struct balancer *b, struct balancer_endpoint *const *eps, size_t a,
		      size_t c)
{
	if (b->uniform)
		return eps[c]->inflight < eps[a]->inflight ? c : a;
	return eps[c]->inflight / weight(b, eps[c]) < eps[a]->inflight / weight(b, eps[a]) ? c : a;
}

/* least_request: power of two choices over in-flight streams per unit of
 * weight. */
static int p2c_select(struct balancer *b, struct balancer_endpoint *const *eps, size_t n,
		      const char *tried)
{
	size_t a = 0, c = 0, m = pick_two(b, eps, tried, n, &a, &c), i;

	if (m == 0)
		return -1;
	i = m > 1 ? lighter(b, eps, a, c) : a;
	take_turn(b, eps, a, i);
	return (int)i;
}

static const struct balancer_ops p2c_ops = {
    .name = "least_request",
    .select = p2c_select,
    .destroy = free_balancer,
};

double balancer_endpoint_latency(const struct balancer_endpoint *ep, uint64_t now_ms,
				 uint32_t decay_ms, uint32_t default_us)
{
	uint64_t dt = now_ms > ep->ewma_stamp_ms ? now_ms - ep->ewma_stamp_ms : 0;

	if (!ep->ewma_init)
		return default_us;
	return ep->ewma_us * exp(-(double)dt / decay_ms);
}

/* Finagle's PeakEwma.observe, fed |rtt_us| (the median of the last three
 * answers: see latency_sample()): above the (decayed) estimate, it replaces
 * it at once; below, it pulls it down by the weight of the time since the
 * last sample. Then |raw_us|, the answer itself, caps the estimate at the
 * band's edge: noise only ever makes an answer slower, so a fast one shows
 * what the pod can do now (after a hiccup, or warmed up). Not lower: the
 * estimate of a pod in use would fall below the older estimates of idle
 * peers by more than the band, and at a low rate they would be shunned. */
static void ewma_observe(struct balancer_endpoint *ep, uint64_t now_ms, uint32_t decay_ms,
			 uint32_t default_us, double rtt_us, double raw_us)
{
	uint64_t dt = ep->ewma_init && now_ms > ep->ewma_stamp_ms ? now_ms - ep->ewma_stamp_ms : 0;
	double w = exp(-(double)dt / decay_ms);
	double est = balancer_endpoint_latency(ep, now_ms, decay_ms, default_us);

	/* The first sample replaces the guess, whatever its side. */
	ep->ewma_us = rtt_us > est || !ep->ewma_init ? rtt_us : est + rtt_us * (1.0 - w);
	if (ep->ewma_us > raw_us * BALANCER_EWMA_BAND)
		ep->ewma_us = raw_us * BALANCER_EWMA_BAND;
	ep->ewma_stamp_ms = now_ms;
	ep->ewma_init = true;
}

/* ewma: power of two choices over peak-EWMA latency x (in flight + 1), per
 * unit of static weight. Slow start acts through the draw alone: dividing
 * by a warming endpoint's 0.1 would shut it out until the ramp ends, since an
 * idle peer costs as little. */
static double ewma_cost(const struct balancer *b, const struct balancer_endpoint *ep, double lat)
{
	return lat * (ep->inflight + 1) / (b->uniform ? 1 : ep->weight);
}

/* Idle, measured, and neither chosen nor measured for a while: its estimate
 * may be stale (see BALANCER_EWMA_PROBE_MS). Not after a failure, nor after
 * a stream it never answered (a pod that stalls would fail a probe every
 * deadline): ejection and the estimate's decay bring those back. */
static bool probe_due(const struct balancer *b, const struct balancer_endpoint *ep)
{
	return !ep->inflight && ep->ewma_init && !ep->consec_failures && !ep->gave_up &&
	       b->now_ms >= ep->ewma_stamp_ms + BALANCER_EWMA_PROBE_MS &&
	       b->picks - ep->pick_seq >= BALANCER_EWMA_PROBE_PICKS;
}

/* Joined the service lately (see BALANCER_EWMA_GRACE_MS), or has answered
 * this worker fewer than BALANCER_EWMA_FIRST_ANSWERS streams; not when its
 * last stream failed or went unanswered: that is no warm-up. */
static bool learning(const struct balancer *b, const struct balancer_endpoint *ep)
{
	uint32_t grace =
	    b->slow_start_ms > BALANCER_EWMA_GRACE_MS ? b->slow_start_ms : BALANCER_EWMA_GRACE_MS;

	if (ep->consec_failures || ep->gave_up)
		return false;
	return ep->answers < BALANCER_EWMA_FIRST_ANSWERS ||
	       (ep->warm_start_ms && ep->warm_start_ms != BALANCER_WARM_UNSTAMPED &&
		b->now_ms < ep->warm_start_ms + grace);
}

/* Estimates |la| of |a| and |lc| of |c| within BALANCER_EWMA_BAND of each
 * other, or BALANCER_EWMA_SLACK_US, or the noise of their answers (see
 * BALANCER_EWMA_NOISE_K). */
static bool same_latency(const struct balancer_endpoint *a, double la,
			 const struct balancer_endpoint *c, double lc)
{
	double noise = BALANCER_EWMA_NOISE_K * (a->rtt_jitter_us + c->rtt_jitter_us);

	return fabs(la - lc) <= fmax(BALANCER_EWMA_SLACK_US, noise) ||
	       (la <= lc * BALANCER_EWMA_BAND && lc <= la * BALANCER_EWMA_BAND);
}

/* Latency decides only when the two estimates differ by more than the band
 * and the slack (see same_latency(); Linkerd and Finagle compare them raw:
 * among equal pods, whichever drew a slower sample is shunned until its
 * estimate decays, and shares drift apart); otherwise the in-flight count
 * does, as it does for a pod still learning (see BALANCER_EWMA_FIRST_ANSWERS). */
static int ewma_select(struct balancer *b, struct balancer_endpoint *const *eps, size_t n,
		       const char *tried)
{
	size_t a = 0, c = 0, m = pick_two(b, eps, tried, n, &a, &c), i;
	double la, lc;

	if (m == 0)
		return -1;
	if (m == 1) {
		i = a;
	} else if (probe_due(b, eps[a]) || probe_due(b, eps[c])) {
		i = probe_due(b, eps[a]) ? a : c;
		eps[i]->probed = true;
	} else {
		la = balancer_endpoint_latency(eps[a], b->now_ms, b->ewma_decay_ms,
					       b->ewma_default_us);
		lc = balancer_endpoint_latency(eps[c], b->now_ms, b->ewma_decay_ms,
					       b->ewma_default_us);
		if (same_latency(eps[a], la, eps[c], lc) || learning(b, eps[a]) ||
		    learning(b, eps[c]))
			i = lighter(b, eps, a, c);
		else
			i = ewma_cost(b, eps[c], lc) < ewma_cost(b, eps[a], la) ? c : a;
	}
	take_turn(b, eps, a, i);
	return (int)i;
}

static const struct balancer_ops ewma_ops = {
    .name = "ewma",
    .select = ewma_select,
    .destroy = free_balancer,
};

struct balancer *balancer_new(enum lb_policy policy, uint64_t *rng)
{
	struct balancer base = {
	    .rng = rng,
	    .uniform = true,
	    .max_weight = 1,
	    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
	    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
	};
	struct balancer *p;

	if (policy == LB_ROUND_ROBIN) {
		struct rr_balancer *rr = calloc(1, sizeof(*rr));

		if (!rr)
			return NULL;
		rr->base = base;
		rr->base.ops = &rr_ops;
		/* Start workers (and services) at different places in the list. */
		rr->next = (size_t)(balancer_rand(rng) >> 33);
		return &rr->base;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	*p = base;
	/* Workers (and services) break ties in different orders. */
	p->offset = (size_t)(balancer_rand(rng) >> 33);
	p->ops = policy == LB_EWMA ? &ewma_ops : &p2c_ops;
	return p;
}

/* A FIFO of waiters (borrowed: each is embedded in its stream). */
struct balancer_waitq {
	struct balancer_waiter *head, *tail;
	size_t n;
};

static void waitq_push(struct balancer_waitq *q, struct balancer_waiter *w, bool front)
{
	w->q = q;
	if (front) {
		w->prev = NULL;
		w->next = q->head;
		if (q->head)
			q->head->prev = w;
		else
			q->tail = w;
		q->head = w;
	} else {
		w->next = NULL;
		w->prev = q->tail;
		if (q->tail)
			q->tail->next = w;
		else
			q->head = w;
		q->tail = w;
	}
	q->n++;
}

bool balancer_unwait(struct balancer_waiter *w)
{
	struct balancer_waitq *q = w->q;

	if (!q)
		return false;
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	q->n--;
	w->next = w->prev = NULL;
	w->q = NULL;
	return true;
}

/* The set. */
struct lb_service {
	uint32_t id;
	uint64_t gen;
	enum lb_policy policy;
	struct balancer *b;		/* owned */
	struct balancer_endpoint **eps; /* owned array: usable then fallback */
	size_t n_usable, n_fallback, n_alloc;
	bool mixed;			       /* both IPv4 and IPv6 endpoints: filter by family */
	uint32_t max_ep, max_svc, max_pending; /* caps in force (0: none) */
	uint32_t slow_start_ms;		       /* in force (0: off) */
	bool seeded;		       /* refreshed once: endpoints that join later warm up */
	bool unstamped;		       /* some endpoint waits for its warm-up start time */
	bool weighted;		       /* static weights differ */
	double max_weight;	       /* the top static weight */
	uint64_t warm_until_ms;	       /* some endpoint warms up until then */
	uint32_t inflight;	       /* streams on its endpoints, as counted here */
	enum balancer_cap full;	       /* the cap that last left it without room */
	struct balancer_waitq waiting; /* streams waiting for room */
	struct lb_service *hnext;
};

struct balancer_set {
	uint64_t rng;
	enum lb_policy dflt;
	struct balancer_params params;
	uint64_t gen;
	struct lb_service **svc_tab; /* owned chains */
	size_t svc_buckets, n_svcs;
	struct balancer_endpoint **ep_tab; /* owned chains */
	size_t ep_buckets, n_eps;
	char *tried; /* owned scratch, tried_alloc bytes */
	size_t tried_alloc;
	struct balancer_waitq woken; /* waiters handed back, for balancer_woken() */
};

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

/* Move the first waiter of |ls| to the woken list. */
static void wake_one(struct balancer_set *bs, struct lb_service *ls)
{
	struct balancer_waiter *w = ls->waiting.head;

	if (!w)
		return;
	balancer_unwait(w);
	waitq_push(&bs->woken, w, false);
}

struct balancer_waiter *balancer_woken(struct balancer_set *bs)
{
	struct balancer_waiter *w = bs->woken.head;

	if (w)
		balancer_unwait(w);
	return w;
}

static void service_free(struct balancer_set *bs, struct lb_service *ls)
{
	while (ls->waiting.head) /* they learn that the service is gone */
		wake_one(bs, ls);
	balancer_destroy(ls->b);
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
		for (struct balancer_endpoint *ep = bs->ep_tab[i], *next; ep; ep = next) {
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
	struct balancer_endpoint **tab = calloc(nb, sizeof(*tab)), **old = bs->ep_tab;
	size_t ob = bs->ep_buckets;

	if (!tab)
		return; /* keep the longer chains */
	bs->ep_tab = tab;
	bs->ep_buckets = nb;
	for (size_t i = 0; i < ob; i++) {
		for (struct balancer_endpoint *ep = old[i], *next; ep; ep = next) {
			size_t h = ep_hash(bs, ep->service_id, &ep->ip, ep->port);

			next = ep->hnext;
			ep->hnext = tab[h];
			tab[h] = ep;
		}
	}
	free(old);
}

/* The state of (|id|, |ip|, |port|), created when new (|*created| set). */
static struct balancer_endpoint *ep_get(struct balancer_set *bs, uint32_t id,
					const struct h2s_ip *ip, uint16_t port, bool *created)
{
	size_t h = ep_hash(bs, id, ip, port);
	struct balancer_endpoint *ep;

	*created = false;
	for (ep = bs->ep_tab[h]; ep; ep = ep->hnext)
		if (ep->service_id == id && ep->port == port && !memcmp(&ep->ip, ip, sizeof(*ip)))
			return ep;
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	*created = true;
	ep->service_id = id;
	ep->ip = *ip;
	ep->port = port;
	ep->hnext = bs->ep_tab[h];
	bs->ep_tab[h] = ep;
	if (++bs->n_eps > bs->ep_buckets * 2)
		ep_grow(bs);
	return ep;
}

static void ep_unlink(struct balancer_set *bs, struct balancer_endpoint *ep)
{
	struct balancer_endpoint **pp = &bs->ep_tab[ep_hash(bs, ep->service_id, &ep->ip, ep->port)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == ep) {
			*pp = ep->hnext;
			bs->n_eps--;
			return;
		}
	}
}

static struct lb_service **svc_slot(struct balancer_set *bs, uint32_t id)
{
	struct lb_service **pp = &bs->svc_tab[(id * 2654435761u) & (bs->svc_buckets - 1)];

	while (*pp && (*pp)->id != id)
		pp = &(*pp)->hnext;
	return pp;
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
			struct lb_service **pp = svc_slot(bs, ls->id);

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
	size_t nu = 0, nf = 0, n4 = 0;

	ls->gen = gen;
	ls->n_usable = ls->n_fallback = 0;
	ls->max_ep = cap(svc->max_inflight_ep, bs->params.max_inflight_ep);
	ls->max_svc = cap(svc->max_inflight, bs->params.max_inflight_svc);
	ls->max_pending = cap(svc->max_pending, bs->params.max_pending);
	ls->slow_start_ms = cap(svc->slow_start_ms, bs->params.slow_start_ms);
	ls->weighted = false;
	ls->max_weight = 1;
	if (!ls->b || ls->policy != p) {
		balancer_destroy(ls->b);
		ls->b = balancer_new(p, &bs->rng);
		ls->policy = p;
		if (!ls->b)
			return -ENOMEM;
		ls->b->ewma_decay_ms = bs->params.ewma_decay_ms;
		ls->b->ewma_default_us = bs->params.ewma_default_us;
	}
	if ((size_t)svc->n_eps > ls->n_alloc) {
		struct balancer_endpoint **v = realloc(ls->eps, (size_t)svc->n_eps * sizeof(*v));

		if (!v)
			return -ENOMEM;
		ls->eps = v;
		ls->n_alloc = (size_t)svc->n_eps;
	}
	for (int i = 0; i < svc->n_eps; i++) {
		const struct state_endpoint *se = &svc->eps[i];
		bool created;
		struct balancer_endpoint *ep = ep_get(bs, svc->id, &se->ip, se->port, &created);

		if (!ep)
			return -ENOMEM;
		/* Endpoints there when the worker first routes to the service are
		 * established (Envoy: no slow start in a new cluster). */
		if (created && ls->seeded)
			ep->warm_start_ms = BALANCER_WARM_UNSTAMPED;
		/* Its ramp starts once it is a candidate (ready), at a pick. */
		ls->unstamped |= ep->warm_start_ms == BALANCER_WARM_UNSTAMPED;
		ep->weight = se->weight ? se->weight : 1;
		if (i && ep->weight != ls->max_weight)
			ls->weighted = true;
		if (!i || ep->weight > ls->max_weight)
			ls->max_weight = ep->weight;
		ep->seen_gen = gen;
		ep->usable = state_endpoint_usable(se);
		ep->fallback = !ep->usable && state_endpoint_fallback(se);
		memcpy(ep->pod, se->pod, sizeof(ep->pod));
		ep->pod[sizeof(ep->pod) - 1] = '\0';
		nu += ep->usable;
		nf += ep->fallback;
		n4 += h2s_ip_is_v4(&se->ip);
	}
	ls->mixed = n4 && n4 < (size_t)svc->n_eps;
	/* Usable first, then fallback, each in snapshot order. */
	for (int i = 0, u = 0, f = 0; i < svc->n_eps; i++) {
		const struct state_endpoint *se = &svc->eps[i];
		bool created;
		struct balancer_endpoint *ep = ep_get(bs, svc->id, &se->ip, se->port, &created);

		if (ep->usable)
			ls->eps[u++] = ep;
		else if (ep->fallback)
			ls->eps[nu + (size_t)f++] = ep;
	}
	ls->n_usable = nu;
	ls->n_fallback = nf;
	ls->seeded = true;
	return 0;
}

/* Start the warm-up of endpoints that joined since the last pick: now. */
static void stamp_warmup(struct lb_service *ls, uint64_t now_ms)
{
	ls->unstamped = false;
	for (size_t i = 0; i < ls->n_usable + ls->n_fallback; i++) {
		struct balancer_endpoint *ep = ls->eps[i];

		if (ep->warm_start_ms != BALANCER_WARM_UNSTAMPED)
			continue;
		ep->warm_start_ms = now_ms ? now_ms : 1; /* 0 means established */
		ep->warm_until_ms = now_ms + ls->slow_start_ms;
		if (ls->warm_until_ms < now_ms + ls->slow_start_ms)
			ls->warm_until_ms = now_ms + ls->slow_start_ms;
	}
}

static bool in_backoff(const struct balancer_endpoint *ep, const struct balancer_pick *p)
{
	return ep->backoff_until_ms > p->now_ms &&
	       (!ep->backoff_netns || ep->backoff_netns == p->netns_id);
}

/* Ejected endpoints among |eps|. */
static size_t count_ejected(struct balancer_endpoint *const *eps, size_t n, uint64_t now_ms)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += balancer_endpoint_ejected(eps[i], now_ms);
	return k;
}

static bool wrong_family(const struct balancer_endpoint *ep, int family)
{
	return family != AF_UNSPEC && h2s_ip_is_v4(&ep->ip) != (family == AF_INET);
}

static bool at_cap(const struct lb_service *ls, const struct balancer_endpoint *ep)
{
	return ls->max_ep && ep->inflight >= ls->max_ep;
}

/* Mark the candidates to skip in bs->tried: at their cap, of the wrong family
 * (|family|), in backoff or, when |eject|, ejected (all of them when
 * |backoff|, else only tried ones) and, when |use_avoid|, tried ones. NULL
 * when nothing is marked. */
static const char *mark_tried(struct balancer_set *bs, const struct lb_service *ls,
			      struct balancer_endpoint *const *eps, size_t n,
			      const struct balancer_pick *p, int family, bool use_avoid,
			      bool backoff, bool eject, bool checked)
{
	bool any = false;

	if (!family && !p->n_avoid && !backoff && !ls->max_ep)
		return NULL;
	if (n > bs->tried_alloc) {
		char *t = realloc(bs->tried, n);

		if (!t)
			return NULL; /* a retry may land on a tried endpoint: harmless */
		bs->tried = t;
		bs->tried_alloc = n;
	}
	for (size_t i = 0; i < n; i++) {
		bool boff = in_backoff(eps[i], p) ||
			    (eject && balancer_endpoint_ejected(eps[i], p->now_ms)) ||
			    (checked && health_table_unhealthy(p->health, eps[i]->service_id,
							       &eps[i]->ip, eps[i]->port)),
		     avoided = false;

		for (size_t j = 0; j < p->n_avoid; j++)
			avoided |= eps[i] == p->avoid[j];
		bs->tried[i] = (char)(wrong_family(eps[i], family) || (use_avoid && avoided) ||
				      (boff && (backoff || avoided)) || at_cap(ls, eps[i]));
		any |= bs->tried[i];
	}
	return any ? bs->tried : NULL;
}

/* Some candidate of the right family is at its cap. */
static bool any_at_cap(const struct lb_service *ls, struct balancer_endpoint *const *eps, size_t n,
		       int family)
{
	for (size_t i = 0; ls->max_ep && i < n; i++)
		if (!wrong_family(eps[i], family) && at_cap(ls, eps[i]))
			return true;
	return false;
}

struct balancer_endpoint *balancer_set_pick(struct balancer_set *bs,
					    const struct state_service *svc, uint64_t gen,
					    struct balancer_pick *p)
{
	struct lb_service **pp = svc_slot(bs, svc->id), *ls = *pp;
	struct balancer_endpoint *const *list;
	struct balancer *b;
	int i, family;
	bool eject, checked;
	size_t n;

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
	if (ls->gen != gen && service_refresh(bs, ls, svc, gen))
		return NULL;
	if (ls->max_svc && ls->inflight >= ls->max_svc) {
		ls->full = BALANCER_CAP_SERVICE;
		p->saturated = true;
		return NULL;
	}
	/* First come, first served: a new stream queues behind waiting ones,
	 * for the cap they wait for (ls->full stays). */
	if (ls->waiting.n && !p->waited) {
		p->saturated = true;
		return NULL;
	}
	list = ls->eps;
	n = ls->n_usable;
	if (!n) {
		list = ls->eps + ls->n_usable;
		n = ls->n_fallback;
	}
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
	/* Panic: past the cap (the list shrank since), ejection is ignored. */
	eject = count_ejected(list, n, p->now_ms) * 2 <= n;
	/* Preference: fresh endpoints, then fresh ones in backoff or ejected,
	 * then ones tried already but not failing (a refused stream). */
	checked = svc->health_check && p->health;
	i = b->ops->select(b, list, n,
			   mark_tried(bs, ls, list, n, p, family, true, true, eject, checked));
	if (i < 0)
		i = b->ops->select(
		    b, list, n,
		    mark_tried(bs, ls, list, n, p, family, true, false, eject, checked));
	if (i < 0 && p->n_avoid)
		i = b->ops->select(
		    b, list, n,
		    mark_tried(bs, ls, list, n, p, family, false, true, eject, checked));
	if (i < 0 && any_at_cap(ls, list, n, family)) {
		ls->full = BALANCER_CAP_ENDPOINT;
		p->saturated = true;
	}
	return i < 0 ? NULL : list[i];
}

void balancer_endpoint_connect_failed(struct balancer_endpoint *ep, uint64_t now_ms,
				      uint64_t netns_id)
{
	ep->failures++;
	ep->probed = false;
	/* Many streams learn of one failure at once: step once per window. */
	if (ep->backoff_until_ms > now_ms && ep->backoff_netns == netns_id)
		return;
	if (ep->backoff_netns != netns_id)
		ep->backoff_step = 0; /* another client pod: start over */
	ep->backoff_netns = netns_id;
	if (ep->backoff_step < 6)
		ep->backoff_step++;
	ep->backoff_until_ms = now_ms + (500ull << (ep->backoff_step - 1));
	if (ep->backoff_until_ms > now_ms + 30000)
		ep->backoff_until_ms = now_ms + 30000;
}

/* Eject |ep| unless that would put more than half of its service's current
 * candidates (usable ones, else fallback ones) out. */
static bool try_eject(struct balancer_set *bs, struct balancer_endpoint *ep, uint64_t now_ms)
{
	struct lb_service *ls = *svc_slot(bs, ep->service_id);
	struct balancer_endpoint *const *list;
	uint64_t ms, max = BALANCER_EJECT_MAX_MS;
	size_t n;

	if (!ls)
		return false;
	list = ls->eps;
	n = ls->n_usable;
	if (!n) {
		list = ls->eps + ls->n_usable;
		n = ls->n_fallback;
	}
	if ((count_ejected(list, n, now_ms) + 1) * 2 > n)
		return false;
	/* Well behaved for as long as the longest ejection: start over. */
	if (ep->ejected_until_ms + BALANCER_EJECT_MAX_MS < now_ms)
		ep->ejections = 0;
	ep->ejections++;
	if (max < bs->params.eject_base_ms)
		max = bs->params.eject_base_ms;
	ms = (uint64_t)bs->params.eject_base_ms * ep->ejections;
	ep->ejected_until_ms = now_ms + (ms < max ? ms : max);
	ep->consec_failures = 0;
	ep->verdicts = 0; /* judged afresh when it is back */
	ep->n_verdicts = 0;
	return true;
}

/* Remember one verdict of |ep|; true when the failures among its last
 * BALANCER_EJECT_WINDOW reach |pct| percent (0: never). */
static bool note_verdict(struct balancer_endpoint *ep, bool failed, uint32_t pct)
{
	uint32_t window = (1u << BALANCER_EJECT_WINDOW) - 1;

	ep->verdicts = ep->verdicts << 1 | failed;
	if (ep->n_verdicts < 32)
		ep->n_verdicts++;
	return pct && ep->n_verdicts >= BALANCER_EJECT_WINDOW &&
	       (uint32_t)__builtin_popcount(ep->verdicts & window) * 100 >=
		   pct * BALANCER_EJECT_WINDOW;
}

/* The latency sample to feed for the answer |rtt_us|: the lower of it and
 * the median of it and the two answers before. Noise on a shared node makes
 * answers slower, never faster, and comes as single spikes: one slow answer
 * must not count as a slow pod, two in a row do, and a fast one counts at
 * once. */
static double latency_sample(struct balancer_endpoint *ep, double rtt_us)
{
	double a = ep->rtt_prev[0], b = ep->rtt_prev[1], m;

	if (ep->n_rtt_prev == 0)
		m = rtt_us;
	else if (ep->n_rtt_prev == 1)
		m = fmin(rtt_us, a);
	else
		m = fmin(rtt_us, fmax(fmin(a, b), fmin(fmax(a, b), rtt_us)));
	ep->rtt_prev[1] = a;
	ep->rtt_prev[0] = rtt_us;
	if (ep->n_rtt_prev < 2)
		ep->n_rtt_prev++;
	return m;
}

/* The jitter of |ep|'s answers, |rtt_us| the newest: RFC 3550's estimate
 * (the mean change between consecutive answers), with a gain of 1/4 so a
 * quiet spell after noise counts within a few answers. Answers only: a
 * failure's penalty or a deadline is no jitter, and counted as such it would
 * hide a failing or stalled pod in its own noise. The first answer sets no
 * jitter; BALANCER_EWMA_FIRST_ANSWERS keeps the first few from deciding
 * anything anyway. */
static void note_jitter(struct balancer_endpoint *ep, double rtt_us)
{
	if (ep->rtt_last_us > 0)
		ep->rtt_jitter_us += (fabs(rtt_us - ep->rtt_last_us) - ep->rtt_jitter_us) / 4;
	ep->rtt_last_us = rtt_us > 0 ? rtt_us : 1;
}

bool balancer_endpoint_report(struct balancer_set *bs, struct balancer_endpoint *ep,
			      uint64_t now_ms, uint64_t rtt_us, enum balancer_outcome o)
{
	const struct balancer_params *pa = &bs->params;
	double est = balancer_endpoint_latency(ep, now_ms, pa->ewma_decay_ms, pa->ewma_default_us);
	double rtt = (double)rtt_us, sample;
	bool rate, probe = ep->probed;

	ep->probed = false;
	switch (o) {
	case BALANCER_NO_VERDICT:
		/* At least this slow. Unfiltered: a stream the client gave up on
		 * (a deadline, mostly) waited far longer than noise lasts. */
		if (rtt > est) {
			ep->gave_up = true;
			latency_sample(ep, rtt);
			ewma_observe(ep, now_ms, pa->ewma_decay_ms, pa->ewma_default_us, rtt, rtt);
		}
		return false;
	case BALANCER_OK:
		note_jitter(ep, rtt);
		sample = latency_sample(ep, rtt);
		ewma_observe(ep, now_ms, pa->ewma_decay_ms, pa->ewma_default_us, sample, rtt);
		/* A probe's answer replaces the estimate: the one fresh measure
		 * of a pod shunned on old ones. Else one normal answer would
		 * only cap it at twice its latency, often still out of the
		 * band, and the pod would wait for the next probe. */
		if (probe)
			ep->ewma_us = sample;
		ep->consec_failures = 0;
		ep->gave_up = false;
		if (ep->answers < BALANCER_EWMA_FIRST_ANSWERS)
			ep->answers++;
		note_verdict(ep, false, 0);
		return false;
	case BALANCER_OVERLOADED:
	case BALANCER_FAILED:
		break;
	}
	if (rtt < BALANCER_EWMA_PENALTY_US)
		rtt = BALANCER_EWMA_PENALTY_US;
	ewma_observe(ep, now_ms, pa->ewma_decay_ms, pa->ewma_default_us, rtt, rtt);
	if (o != BALANCER_FAILED)
		return false;
	rate = note_verdict(ep, true, pa->eject_failure_pct);
	ep->consec_failures++;
	/* An ejected endpoint still finishing streams does not extend its time. */
	if (balancer_endpoint_ejected(ep, now_ms))
		return false;
	if (!rate && !(pa->eject_failures && ep->consec_failures >= pa->eject_failures))
		return false;
	return try_eject(bs, ep, now_ms);
}

/* Wake the first waiter of |ls| when it has room: the woken stream picks
 * again and, should it find none after all, goes back to the front. */
static void maybe_wake(struct balancer_set *bs, struct lb_service *ls)
{
	size_t n = ls->n_usable ? ls->n_usable : ls->n_fallback;
	struct balancer_endpoint *const *list = ls->n_usable ? ls->eps : ls->eps + ls->n_usable;
	bool room = !ls->max_ep;

	if (!ls->waiting.n || (ls->max_svc && ls->inflight >= ls->max_svc))
		return;
	for (size_t i = 0; !room && i < n; i++) /* only with waiters: rare */
		room = !at_cap(ls, list[i]);
	if (room)
		wake_one(bs, ls);
}

void balancer_stream_start(struct balancer_set *bs, struct balancer_endpoint *ep)
{
	struct lb_service *ls = *svc_slot(bs, ep->service_id);

	ep->inflight++;
	ep->total++;
	if (!ls)
		return;
	ls->inflight++;
	maybe_wake(bs, ls);
}

void balancer_stream_end(struct balancer_set *bs, struct balancer_endpoint *ep)
{
	struct lb_service *ls = *svc_slot(bs, ep->service_id);

	if (ep->inflight)
		ep->inflight--;
	if (ls) {
		if (ls->inflight)
			ls->inflight--;
		maybe_wake(bs, ls);
	}
	if (ep->inflight || ep->seen_gen == bs->gen)
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
					ls->gen = 0; /* retried on the next pick */
				maybe_wake(bs, ls);  /* endpoints or caps may have changed */
				pp = &ls->hnext;
				continue;
			}
			*pp = ls->hnext;
			bs->n_svcs--;
			service_free(bs, ls);
		}
	}
	for (size_t i = 0; i < bs->ep_buckets; i++) {
		struct balancer_endpoint **pp = &bs->ep_tab[i];

		while (*pp) {
			struct balancer_endpoint *ep = *pp;

			if (ep->seen_gen == gen || ep->inflight) {
				pp = &ep->hnext;
				continue;
			}
			*pp = ep->hnext;
			bs->n_eps--;
			free(ep);
		}
	}
}

void balancer_set_foreach(struct balancer_set *bs,
			  void (*cb)(const struct balancer_endpoint *ep, void *arg), void *arg)
{
	for (size_t i = 0; i < bs->ep_buckets; i++)
		for (struct balancer_endpoint *ep = bs->ep_tab[i]; ep; ep = ep->hnext)
			cb(ep, arg);
}

int balancer_wait(struct balancer_set *bs, uint32_t service_id, struct balancer_waiter *w,
		  bool front)
{
	struct lb_service *ls = *svc_slot(bs, service_id);

	if (!ls)
		return -ENOENT;
	if (!front && ls->waiting.n >= ls->max_pending)
		return -ENOSPC;
	waitq_push(&ls->waiting, w, front);
	return 0;
}

size_t balancer_waiting(struct balancer_set *bs, uint32_t service_id)
{
	struct lb_service *ls = *svc_slot(bs, service_id);

	return ls ? ls->waiting.n : 0;
}

enum balancer_cap balancer_full_cap(struct balancer_set *bs, uint32_t service_id)
{
	struct lb_service *ls = *svc_slot(bs, service_id);

	return ls ? ls->full : BALANCER_CAP_NONE;
}

size_t balancer_set_count(const struct balancer_set *bs)
{
	return bs->n_eps;
}
