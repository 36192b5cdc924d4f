/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-stream load balancing, one balancer_set per worker: it picks the
 * endpoint for each new stream by its service's policy, learns from how
 * streams end (latency, failures: outlier ejection, connect backoff) and
 * queues streams that find no room (circuit breaking). Endpoint state lives
 * until no snapshot lists the endpoint and nothing is in flight on it.
 * Worker thread only; time is always passed in (ms, CLOCK_MONOTONIC).
 */
#ifndef H2SPLIT_BALANCER_H
#define H2SPLIT_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "balancer/health.h"
#include "base/state.h"

/* Who an endpoint is: the handle callers get from balancer_set_pick(). What
 * the balancer knows of it is private to balancer/ (balancer_int.h embeds
 * this first) and read through balancer_endpoint_info(). */
struct balancer_endpoint {
	uint32_t service_id;
	struct h2s_ip ip;
	uint16_t port;
	char pod[STATE_NAME_MAX];
	uint8_t locality; /* enum state_locality, as of the last snapshot */
};

/* Tunables of a balancer_set; balancer_set_new() starts with the defaults. */
#define BALANCER_EWMA_DECAY_MS 10000
/* Below any slow endpoint and near a healthy in-cluster unary RPC: a new pod
 * gets streams at once (bounded by the in-flight factor, as least_request
 * would) and is then judged on what it measures, not on a guess. */
#define BALANCER_EWMA_DEFAULT_US 1000
#define BALANCER_EJECT_FAILURES 5
/* Failure-rate ejection: an endpoint whose last BALANCER_EJECT_WINDOW
 * verdicts hold at least params.eject_failure_pct% failures is ejected like
 * one with eject_failures in a row (a pod failing every other RPC rarely
 * fails five in a row). */
#define BALANCER_EJECT_WINDOW 20
#define BALANCER_EJECT_FAILURE_PCT 50
#define BALANCER_EJECT_BASE_MS 30000
#define BALANCER_EJECT_MAX_MS 300000

#define BALANCER_MAX_PENDING 1024

struct balancer_params {
	uint32_t ewma_decay_ms; /* > 0 */
	uint32_t ewma_default_us;
	uint32_t eject_failures;    /* consecutive failures that eject; 0: never */
	uint32_t eject_failure_pct; /* failures in the last BALANCER_EJECT_WINDOW; 0: off */
	uint32_t eject_base_ms;	    /* first ejection; x the number of ejections */
	uint32_t max_inflight_ep;   /* streams per endpoint; 0: no cap (a service may say) */
	uint32_t max_inflight_svc;  /* streams per service; 0: no cap */
	uint32_t max_pending;	    /* waiting streams per service; 0: fail at once */
	uint32_t slow_start_ms;	    /* joining endpoints' ramp; 0: off (a service may say) */
};

/* The circuit-breaker caps (balancer_params.max_inflight_ep, _svc). */
enum balancer_cap {
	BALANCER_CAP_NONE = 0,
	BALANCER_CAP_ENDPOINT, /* every candidate endpoint is at its cap */
	BALANCER_CAP_SERVICE,  /* the service is */
};

/* A stream waiting for room in its service, embedded in the stream. */
struct balancer_waitq;
struct balancer_waiter {
	struct balancer_waiter *next, *prev; /* on |q| */
	struct balancer_waitq *q;	     /* a service's queue, the woken list, or NULL */
};

struct balancer_set;

/* |dflt| is the policy of services that say LB_DEFAULT (--lb-policy). */
struct balancer_set *balancer_set_new(uint64_t seed, enum lb_policy dflt);
void balancer_set_free(struct balancer_set *bs);
/* Applies to policy instances made from now on (set it before the first pick). */
void balancer_set_params(struct balancer_set *bs, const struct balancer_params *p);
/* Who asks, for balancer_set_pick(). */
struct balancer_pick {
	uint64_t now_ms;
	uint64_t netns_id; /* the client's netns (backoff is per client netns) */
	int family;	   /* AF_INET / AF_INET6: the VIP's family; AF_UNSPEC: any */
	struct balancer_endpoint *const *avoid; /* tried already */
	size_t n_avoid;
	const struct health_table *health; /* active health verdicts (NULL: none) */
	bool waited;	/* the stream was queued already: it need not queue behind others */
	bool saturated; /* out: NULL because every candidate is at its cap, or the
			 * service is, or others are queued (balancer_wait()) */
	uint8_t failover; /* out: why a nearer tier was passed over (enum balancer_failover) */
};

/* Why a pick passed over the nearest tier of a Service with locality (tiers.c). */
enum balancer_failover {
	BALANCER_FAILOVER_NONE = 0,
	BALANCER_FAILOVER_UNAVAILABLE, /* no ready, non-ejected, reachable endpoint */
	BALANCER_FAILOVER_FULL,	       /* every one is at its in-flight cap */
	BALANCER_FAILOVER_LOAD,	       /* far busier per endpoint than the rest */
	BALANCER_FAILOVER_RAMP,	       /* back from unavailable: its share ramps up */
	BALANCER_FAILOVER_MAX,
};
const char *balancer_failover_name(enum balancer_failover f);

/* Locality rule (tiers.c, README "Locality"): a tier is passed over when its
 * in flight per healthy endpoint is at least BALANCER_SPILL_MIN and more than
 * BALANCER_SPILL_FACTOR x (that of the rest + 1); after being unavailable it
 * takes 10% of the streams it would, rising to all over BALANCER_RAMP_MS. */
#define BALANCER_SPILL_MIN 8
#define BALANCER_SPILL_FACTOR 4
#define BALANCER_RAMP_MS 2000

/* An endpoint of |svc| (from the snapshot with generation |gen|) for a new
 * stream: usable ones by |svc->lb|, else fallback ones; of |p->family| when
 * the service has both (dual-stack, as kube-proxy does). Preference: neither
 * tried nor in backoff nor ejected nor unhealthy (active health checks); then
 * in backoff, ejected or unhealthy (never none: all of them rather); then
 * tried but none of those (a refused stream). For a service with locality
 * (state_service.topology_in_force) the nearest tier with room is tried
 * first, fresh endpoints only (see enum balancer_failover); internalTraffic
 * Policy Local services see this node's endpoints only. When more than half of the candidates are
 * ejected (the list shrank since), ejection is ignored: panic, route to all.
 * Endpoints at their in-flight cap are never picked. NULL when there is none
 * (p->saturated says whether caps are why). */
struct balancer_endpoint *balancer_set_pick(struct balancer_set *bs,
					    const struct state_service *svc, uint64_t gen,
					    struct balancer_pick *p);
/* A stream starts on / leaves |ep|. An endpoint no snapshot lists any more is
 * freed with its last stream: do not use |ep| after balancer_stream_end().
 * Both move the first stream waiting for |ep|'s service to the woken list
 * while the service has room. */
void balancer_stream_start(struct balancer_set *bs, struct balancer_endpoint *ep);
void balancer_stream_end(struct balancer_set *bs, struct balancer_endpoint *ep);
/* Queue |w| (not queued) on service |service_id|'s FIFO, at the front when
 * |front| (a woken stream that found no room again: it keeps its place and
 * is not refused). 0, -ENOSPC when max_pending are queued already, -ENOENT
 * when no pick was made for the service. */
int balancer_wait(struct balancer_set *bs, uint32_t service_id, struct balancer_waiter *w,
		  bool front);
/* Take |w| off whatever list it is on; false when it was on none. */
bool balancer_unwait(struct balancer_waiter *w);
/* The next woken waiter (FIFO), taken off the list, or NULL. Its stream should
 * pick again with p->waited set. Services that vanish wake all theirs. */
struct balancer_waiter *balancer_woken(struct balancer_set *bs);
/* Streams queued for service |service_id| (0 when unknown). */
size_t balancer_waiting(struct balancer_set *bs, uint32_t service_id);
/* The cap that made the last saturated pick for |service_id| come back
 * empty: what a stream queued by that pick (or behind others) waits for.
 * BALANCER_CAP_NONE before any. */
enum balancer_cap balancer_full_cap(struct balancer_set *bs, uint32_t service_id);
/* A connection to |ep| from client netns |netns_id| failed: avoid it for
 * streams from there for a while (500 ms doubling up to 30 s) unless nothing
 * else is left. Other pods may well reach it (NetworkPolicy). */
void balancer_endpoint_connect_failed(struct balancer_endpoint *ep, uint64_t now_ms,
				      uint64_t netns_id);
/* |ep| answered: forget its backoff. */
void balancer_endpoint_ok(struct balancer_endpoint *ep);
/* How a stream's attempt on an endpoint went, for ewma and outlier ejection. */
enum balancer_outcome {
	BALANCER_NO_VERDICT, /* cancelled, refused, timed out: |rtt_us| is a lower bound */
	BALANCER_OK,	     /* answered: |rtt_us| until the response headers */
	BALANCER_OVERLOADED, /* RESOURCE_EXHAUSTED: latency penalty, not a failure */
	BALANCER_FAILED,     /* UNAVAILABLE, reset, connection lost or refused */
};

/* Record |o| for |ep| at |now_ms|: feeds its latency estimate (a failure as
 * 250 ms at least) and counts consecutive failures; a success resets
 * the count. The failure that reaches params.eject_failures ejects |ep| for
 * params.eject_base_ms (30 s) x its ejections, at most 5 min (or the base),
 * unless that would eject more than half of its service's endpoints. True
 * when this call ejected |ep|. */
bool balancer_endpoint_report(struct balancer_set *bs, struct balancer_endpoint *ep,
			      uint64_t now_ms, uint64_t rtt_us, enum balancer_outcome o);
/* What the balancer thinks of an endpoint now, for metrics and logs. */
struct balancer_endpoint_info {
	uint64_t ejected_until_ms; /* outlier ejection: no new streams before */
	uint64_t backoff_until_ms; /* after connect failures: no new streams before */
	uint32_t consec_failures;  /* since the last success */
	uint32_t ejections;	   /* so far: sets the length of the next one */
	uint64_t latency_us;	   /* peak-EWMA estimate when last fed (0: none yet) */
	uint64_t jitter_us;	   /* the smoothed change between its answers */
	uint64_t warm_until_ms;	   /* warms up (slow start) until then */
};
struct balancer_endpoint_info balancer_endpoint_info(const struct balancer_endpoint *ep);
/* A new snapshot is current: refresh every cached service from |st| and free
 * endpoint state that |st| no longer lists and that has nothing in flight. */
void balancer_set_update(struct balancer_set *bs, const struct state *st, uint64_t gen);
/* The retry budget of |service_id| in this worker (retry_budget.h: |ratio|
 * of the requests plus |min_per_s|): an RPC that may be retried or hedged
 * starts; a retry or hedge asks for one, false when the budget is exhausted
 * (or no pick was made for the service yet). */
void balancer_retry_deposit(struct balancer_set *bs, uint32_t service_id, uint64_t now_ms,
			    double ratio, double min_per_s);
bool balancer_retry_withdraw(struct balancer_set *bs, uint32_t service_id, uint64_t now_ms,
			     double ratio, double min_per_s);
/* Endpoints the set knows, listed or still draining. */
size_t balancer_set_count(const struct balancer_set *bs);

#endif
