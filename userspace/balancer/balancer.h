/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-stream load balancing. A policy is a base struct plus a const ops table
 * (h2o style): round_robin, least_request = power of two choices over the
 * streams in flight, and ewma = power of two choices over peak-EWMA latency x
 * (in flight + 1) (Finagle, Linkerd). A worker's balancer_set keeps one policy
 * instance per service and one balancer_endpoint per (service id, ip, port);
 * the endpoint state (in-flight count, latency, failures, ejection) survives
 * snapshot swaps and is freed only when no snapshot lists it and nothing is in
 * flight on it. Passive outlier ejection applies to every policy, per worker.
 * Circuit breaking (in-flight caps per endpoint and per service) is per worker
 * too: a stream that finds every candidate at its cap waits in its service's
 * bounded FIFO (balancer_wait) and is handed back through the set's woken list
 * as streams start or end. Worker thread only; time is always passed in (ms,
 * CLOCK_MONOTONIC).
 */
#ifndef H2SPLIT_BALANCER_H
#define H2SPLIT_BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "balancer/health.h"
#include "base/state.h"

struct balancer_endpoint {
	uint32_t service_id;
	struct h2s_ip ip;
	uint16_t port;
	bool usable;   /* as of the last snapshot that listed it */
	bool fallback; /* terminating but serving: used only when nothing is usable */
	uint32_t inflight;
	uint64_t total;
	uint64_t failures;	   /* connect failures and streams lost with a connection */
	uint64_t seen_gen;	   /* last snapshot generation that listed it */
	uint64_t backoff_until_ms; /* after connect failures: no new streams before */
	uint64_t backoff_netns;	   /* ... from this client netns (0: any) */
	uint32_t backoff_step;
	double ewma_us; /* peak-EWMA latency as of ewma_stamp_ms */
	uint64_t ewma_stamp_ms;
	bool ewma_init;	      /* ewma_us holds a value (else: the default RTT) */
	double rtt_prev[2];   /* the last two latency samples, newest first */
	uint32_t n_rtt_prev;  /* ... how many of those hold one */
	double rtt_last_us;   /* ewma: its last answer's time (0: none yet) ... */
	double rtt_jitter_us; /* ... and the smoothed change between answers */
	bool gave_up;	      /* its last stream was abandoned unanswered, past the estimate */
	bool probed;	      /* ewma: its stream in flight is a probe (see probe_due) */
	uint32_t answers;     /* ewma: streams it answered, up to BALANCER_EWMA_FIRST_ANSWERS */
	uint64_t pick_seq;    /* its policy's pick count when P2C last chose it */
	uint64_t turns;	      /* P2C: turns it took or lost as the first choice (see pick_two) */
	uint32_t verdicts;    /* the last outcomes, newest in bit 0: 1 = failed */
	uint32_t n_verdicts;  /* ... how many of those bits hold one (at most 32) */
	uint32_t consec_failures;  /* since the last success */
	uint32_t ejections;	   /* sets the length of the next ejection */
	uint64_t ejected_until_ms; /* outlier: no new streams before, unless in panic */
	uint64_t warm_start_ms;	   /* joined (slow start from then); 0: established */
	uint64_t warm_until_ms;	   /* ... and warms up until then (for display) */
	uint32_t weight;	   /* static (h2split.io/weights), >= 1 */
	char pod[STATE_NAME_MAX];
	struct balancer_endpoint *hnext; /* hash chain, owned by the set */
};

struct balancer;

struct balancer_ops {
	const char *name;
	/* Index into |eps| (|n| > 0) of the endpoint for a new stream, skipping
	 * those with |tried[i]| nonzero (|tried| may be NULL), or -1. */
	int (*select)(struct balancer *b, struct balancer_endpoint *const *eps, size_t n,
		      const char *tried);
	void (*destroy)(struct balancer *b);
};

/* Embedded first in every policy's own struct. */
struct balancer {
	const struct balancer_ops *ops;
	uint64_t *rng;		  /* borrowed: the set's generator */
	uint64_t now_ms;	  /* of the pick being made (the set sets it) */
	uint32_t ewma_decay_ms;	  /* peak-EWMA time constant */
	uint32_t ewma_default_us; /* latency assumed for an endpoint not yet measured */
	uint32_t slow_start_ms;	  /* of the service being picked for */
	uint64_t picks;		  /* made by this instance (P2C: probe pacing) */
	uint64_t vtime;		  /* P2C: the turn count of the last first choice (see take_turn) */
	size_t offset;		  /* P2C: where the first choice's scan starts */
	double max_weight;	  /* ... its top static weight */
	bool uniform;		  /* ... every weight is 1 now: the plain, cheaper paths */
};

/* Tunables of a balancer_set; balancer_set_new() starts with the defaults. */
#define BALANCER_EWMA_DECAY_MS 10000
/* Below any slow endpoint and near a healthy in-cluster unary RPC: a new pod
 * gets streams at once (bounded by the in-flight factor, as least_request
 * would) and is then judged on what it measures, not on a guess. */
#define BALANCER_EWMA_DEFAULT_US 1000
/* Latency fed for a failed stream, unless it took longer: a pod failing fast
 * must not look fast. Decays below healthy peers in about a minute (10 s). */
#define BALANCER_EWMA_PENALTY_US 250000
/* Latency estimates within this ratio of each other are the same to ewma:
 * noise on equal pods, so the in-flight count decides, as for least_request.
 * An answer caps the estimate at this multiple of itself at once: one spike
 * does not shut a pod out for the time constant. */
#define BALANCER_EWMA_BAND 2.0
/* ... and so are estimates less than this apart (us): at a few hundred
 * microseconds, scheduling noise alone makes equal pods differ by more than
 * 2x, and steering on it would gain less than this per RPC while splitting
 * streams unevenly. */
#define BALANCER_EWMA_SLACK_US 1000.0
/* ... and so are estimates no further apart than this many times the sum of
 * the two endpoints' jitter (the smoothed change from one answer to the next,
 * as RTP smooths interarrival jitter). On a loaded node the proxy's own
 * scheduling delays land on whichever pods had streams in flight: two such
 * answers in a row make an equal pod look slower by far more than the band,
 * and at a low request rate it would be shunned until its estimate decays.
 * A pod that turns slow by more than about three times that jitter is told
 * apart by its second slow answer (the first moves the jitter by
 * a quarter of the step). */
#define BALANCER_EWMA_NOISE_K 2.0
/* An idle endpoint ewma has not chosen for this long, and for this many of
 * the service's picks, takes the next stream it is drawn for: a probe, so
 * a pod shunned for one slow answer is measured again (and the answer
 * replaces its estimate outright). At most one probe per endpoint per 500 ms
 * per worker, and 1 in 200 of the service's streams. */
#define BALANCER_EWMA_PROBE_MS 500
#define BALANCER_EWMA_PROBE_PICKS 200
/* A pod that joined a Service this recently (or within its slow start) is
 * compared by streams in flight alone: servers that warm up with traffic
 * (JIT, thread pools) answer slowly at first, and judged on that they would
 * get too little traffic to ever warm up. */
#define BALANCER_EWMA_GRACE_MS 5000
/* ... and so is every endpoint, new or not, until it has answered this many
 * streams on this worker. Its default latency is a guess (peers measured
 * far faster would shun it for good: never measured, it is never probed
 * either), and a server's first answers on a new connection
 * (after an h2splitd restart, say) are often several times slower than the
 * rest: judged on them, it would be shunned while its peers warm up. */
#define BALANCER_EWMA_FIRST_ANSWERS 4
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
/* Slow start: a joining endpoint's weight ramps from this share (Envoy's
 * min_weight_percent default) to its full weight. */
#define BALANCER_SLOW_START_FLOOR 0.1
#define BALANCER_WARM_UNSTAMPED UINT64_MAX /* joined; ramp starts at the next pick */

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

/* A policy instance; |rng| is borrowed and must outlive it. NULL on ENOMEM. */
struct balancer *balancer_new(enum lb_policy policy, uint64_t *rng);
static inline void balancer_destroy(struct balancer *b)
{
	if (b)
		b->ops->destroy(b);
}
/* xorshift64*: cheap, per worker, good enough for P2C. */
uint64_t balancer_rand(uint64_t *state);

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
};

/* An endpoint of |svc| (from the snapshot with generation |gen|) for a new
 * stream: usable ones by |svc->lb|, else fallback ones; of |p->family| when
 * the service has both (dual-stack, as kube-proxy does). Preference: neither
 * tried nor in backoff nor ejected nor unhealthy (active health checks); then
 * in backoff, ejected or unhealthy (never none: all of them rather); then
 * tried but none of those (a refused stream). When more than half of the candidates are
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
static inline void balancer_endpoint_ok(struct balancer_endpoint *ep)
{
	ep->backoff_step = 0;
	ep->backoff_until_ms = 0;
}
/* How a stream's attempt on an endpoint went, for ewma and outlier ejection. */
enum balancer_outcome {
	BALANCER_NO_VERDICT, /* cancelled, refused, timed out: |rtt_us| is a lower bound */
	BALANCER_OK,	     /* answered: |rtt_us| until the response headers */
	BALANCER_OVERLOADED, /* RESOURCE_EXHAUSTED: latency penalty, not a failure */
	BALANCER_FAILED,     /* UNAVAILABLE, reset, connection lost or refused */
};

/* Record |o| for |ep| at |now_ms|: feeds the peak-EWMA (a failure as at least
 * BALANCER_EWMA_PENALTY_US) and counts consecutive failures; a success resets
 * the count. The failure that reaches params.eject_failures ejects |ep| for
 * params.eject_base_ms (30 s) x its ejections, at most 5 min (or the base),
 * unless that would eject more than half of its service's endpoints. True
 * when this call ejected |ep|. */
bool balancer_endpoint_report(struct balancer_set *bs, struct balancer_endpoint *ep,
			      uint64_t now_ms, uint64_t rtt_us, enum balancer_outcome o);
/* Peak-EWMA latency of |ep| at |now_ms| in microseconds: decays toward zero
 * while nothing is observed, so a shunned endpoint is probed again. */
double balancer_endpoint_latency(const struct balancer_endpoint *ep, uint64_t now_ms,
				 uint32_t decay_ms, uint32_t default_us);
/* The selection weight of |ep| at |now_ms|: its static weight, scaled down
 * while it warms up (slow start over |slow_start_ms|, 0: off). */
double balancer_endpoint_weight(const struct balancer_endpoint *ep, uint64_t now_ms,
				uint32_t slow_start_ms);
static inline bool balancer_endpoint_ejected(const struct balancer_endpoint *ep, uint64_t now_ms)
{
	return ep->ejected_until_ms > now_ms;
}
/* A new snapshot is current: refresh every cached service from |st| and free
 * endpoint state that |st| no longer lists and that has nothing in flight. */
void balancer_set_update(struct balancer_set *bs, const struct state *st, uint64_t gen);
/* Every endpoint the set knows, listed or still draining. */
void balancer_set_foreach(struct balancer_set *bs,
			  void (*cb)(const struct balancer_endpoint *ep, void *arg), void *arg);
size_t balancer_set_count(const struct balancer_set *bs);

#endif
