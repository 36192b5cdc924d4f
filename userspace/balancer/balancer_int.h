/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The balancer's private state, shared by its files (balancer.c, outlier.c,
 * wait_queue.c): an endpoint's full state, a service's candidate list and
 * caps, the set. Candidate lists point only at endpoints the current
 * snapshot lists, so they never dangle: only unlisted endpoints are freed.
 * Private to balancer/ (tests/check_layers.py).
 */
#ifndef H2SPLIT_BALANCER_INT_H
#define H2SPLIT_BALANCER_INT_H

#include <stddef.h>
#include <sys/socket.h>

#include "balancer/balancer.h"
#include "balancer/policy.h"
#include "balancer/retry_budget.h"

struct lb_endpoint {
	struct balancer_endpoint pub; /* first: the callers' handle */
	struct balancer_candidate c;  /* what its policy sees */
	bool usable;		      /* as of the last snapshot that listed it */
	bool fallback;		   /* terminating but serving: used only when nothing is usable */
	uint64_t seen_gen;	   /* last snapshot generation that listed it */
	uint64_t backoff_until_ms; /* after connect failures: no new streams before */
	uint64_t backoff_netns;	   /* ... from this client netns (0: any) */
	uint32_t backoff_step;
	uint32_t verdicts;	   /* the last outcomes, newest in bit 0: 1 = failed */
	uint32_t n_verdicts;	   /* ... how many of those bits hold one (at most 32) */
	uint32_t ejections;	   /* sets the length of the next ejection */
	uint64_t ejected_until_ms; /* outlier: no new streams before, unless in panic */
	uint64_t warm_until_ms;	   /* warms up until then (for display) */
	uint8_t tier;		   /* enum state_tier in force (STATE_TIER_REST: untiered) */
	struct lb_endpoint *hnext; /* hash chain, owned by the set */
	struct balancer_set *set;  /* the set that owns it */
};

static inline struct lb_endpoint *lb_ep(const struct balancer_endpoint *pub)
{
	return (struct lb_endpoint *)((char *)pub - offsetof(struct lb_endpoint, pub));
}

static inline struct lb_endpoint *lb_ep_of(const struct balancer_candidate *c)
{
	return (struct lb_endpoint *)((char *)c - offsetof(struct lb_endpoint, c));
}

static inline bool lb_ejected(const struct lb_endpoint *ep, uint64_t now_ms)
{
	return ep->ejected_until_ms > now_ms;
}

static inline bool lb_wrong_family(const struct lb_endpoint *ep, int family)
{
	return family != AF_UNSPEC && h2s_ip_is_v4(&ep->pub.ip) != (family == AF_INET);
}

/* A FIFO of waiters (borrowed: each is embedded in its stream). */
struct balancer_waitq {
	struct balancer_waiter *head, *tail;
	size_t n;
};

struct lb_service {
	uint32_t id;
	uint64_t gen;
	enum lb_policy policy;
	struct balancer_policy *b;	 /* owned */
	struct balancer_candidate **eps; /* owned array: usable then fallback */
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
	uint64_t list_version;	       /* bumped at every rebuild of eps (policy.h) */
	/* No listed endpoint is in connect backoff (from any client netns) or
	 * ejected from these on: a pick then skips nothing without a scan. */
	uint64_t backoff_max_ms, eject_max_ms;
	/* Locality (tiers.c): usable candidates are ordered node tier, zone
	 * tier, rest; near[t] is the end of tier t's prefix (0: no tiers). */
	bool tiered;
	size_t near[2];
	bool tier_down[2];	   /* the tier was last found unavailable */
	uint64_t ramp_from_ms[2];  /* ... and came back then (ramp) */
	struct retry_budget budget; /* retries and hedges of its RPCs in this worker */
	struct lb_service *hnext;
};

struct balancer_set {
	uint64_t rng;
	enum lb_policy dflt;
	struct balancer_params params;
	uint64_t gen;
	struct lb_service **svc_tab; /* owned chains */
	size_t svc_buckets, n_svcs;
	struct lb_endpoint **ep_tab; /* owned chains */
	size_t ep_buckets, n_eps;
	char *tried; /* owned scratch, tried_alloc bytes */
	size_t tried_alloc;
	struct balancer_waitq woken; /* waiters handed back, for balancer_woken() */
};

static inline struct lb_service **lb_service_slot(struct balancer_set *bs, uint32_t id)
{
	struct lb_service **pp = &bs->svc_tab[(id * 2654435761u) & (bs->svc_buckets - 1)];

	while (*pp && (*pp)->id != id)
		pp = &(*pp)->hnext;
	return pp;
}

/* The service's current candidates: usable ones, else fallback ones. */
static inline struct balancer_candidate *const *lb_candidates(const struct lb_service *ls,
							      size_t *n)
{
	*n = ls->n_usable ? ls->n_usable : ls->n_fallback;
	return ls->n_usable ? ls->eps : ls->eps + ls->n_usable;
}

static inline bool lb_at_cap(const struct lb_service *ls, const struct balancer_candidate *c)
{
	return ls->max_ep && c->inflight >= ls->max_ep;
}

/* tiers.c */
/* Pick by tier for a tiered |ls| with usable candidates |c|[0, |n|): an index,
 * or -1 to leave the pick to the whole list with [0, |*skip|) skipped (none
 * left: not even that). Sets p->failover. */
int lb_tier_pick(struct balancer_set *bs, struct lb_service *ls, struct balancer_candidate *const *c,
		 size_t n, struct balancer_pick *p, int family, bool checked, size_t *skip);
/* bs->tried for |c|[0, |n|) as balancer.c's mark_tried() (NULL: none marked),
 * with [0, |skip|) marked too. */
const char *lb_mark_tried(struct balancer_set *bs, const struct lb_service *ls,
			  struct balancer_candidate *const *c, size_t n,
			  const struct balancer_pick *p, int family, bool use_avoid, bool backoff,
			  bool eject, bool checked, size_t skip);

/* Keep |ls|'s horizons (backoff_max_ms, eject_max_ms) past |ep|'s. */
static inline void lb_note_backoff(struct lb_service *ls, const struct lb_endpoint *ep)
{
	if (ls->backoff_max_ms < ep->backoff_until_ms)
		ls->backoff_max_ms = ep->backoff_until_ms;
	if (ls->eject_max_ms < ep->ejected_until_ms)
		ls->eject_max_ms = ep->ejected_until_ms;
}

/* outlier.c */
size_t lb_count_ejected(struct balancer_candidate *const *c, size_t n, uint64_t now_ms);
bool lb_in_backoff(const struct lb_endpoint *ep, uint64_t now_ms, uint64_t netns_id);

/* wait_queue.c */
/* Whether a new pick for |ls| must wait (p->saturated set): the service is at
 * its cap, or streams are queued before it. */
bool lb_must_wait(struct lb_service *ls, struct balancer_pick *p);
/* Some candidate of |family| is at its cap: a pick that found none waits. */
bool lb_any_at_cap(const struct lb_service *ls, struct balancer_candidate *const *c, size_t n,
		   int family);
/* Wake |ls|'s first waiter when it has room; all of them when it is going away. */
void lb_maybe_wake(struct balancer_set *bs, struct lb_service *ls);
void lb_wake_all(struct balancer_set *bs, struct lb_service *ls);

#endif
