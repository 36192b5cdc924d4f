/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy interface: a policy is a struct that embeds struct
 * balancer_policy first, plus a const ops table (h2o's balancer shape). It
 * sees candidates only as struct balancer_candidate, reads them, and writes
 * nothing but its own bookkeeping there (turns, pick_seq, probed). One
 * instance per service per worker. Private to balancer/.
 */
#ifndef H2SPLIT_BALANCER_POLICY_H
#define H2SPLIT_BALANCER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "balancer/balancer.h"
#include "balancer/latency.h"

/* Slow start: a joining endpoint's weight ramps from this share (Envoy's
 * min_weight_percent default) to its full weight. */
#define BALANCER_SLOW_START_FLOOR 0.1
#define BALANCER_WARM_UNSTAMPED UINT64_MAX /* joined; ramp starts at the next pick */

/* What a policy sees of an endpoint; the balancer's endpoint state embeds it. */
struct balancer_candidate {
	uint32_t inflight;	  /* streams on it from this worker */
	uint32_t weight;	  /* static (h2split.io/weights), >= 1 */
	uint32_t consec_failures; /* since its last success (outlier.c) */
	uint64_t warm_start_ms;	  /* joined (slow start from then); 0: established */
	struct lb_latency lat;	  /* its answers' latency (latency.c) */
	uint64_t pick_seq;	  /* its policy's pick count when P2C last chose it */
	uint64_t turns;		  /* P2C: turns it took or lost as the first choice (p2c.c) */
	uint32_t heap_at;	  /* P2C: its place in its policy's turn heap (p2c.c) */
	bool probed;		  /* ewma: its stream in flight is a probe (ewma.c) */
};

struct balancer_policy;

struct balancer_policy_ops {
	const char *name;
	size_t size; /* of the policy's struct */
	/* Set up a zeroed instance whose base is filled in. */
	void (*init)(struct balancer_policy *p, const struct balancer_params *params);
	/* Index into |c| (|n| > 0) of the endpoint for a new stream, skipping
	 * those with |skip[i]| nonzero (|skip| may be NULL), or -1. */
	int (*pick)(struct balancer_policy *p, struct balancer_candidate *const *c, size_t n,
		    const char *skip);
	/* Free what the instance owns (NULL: nothing); balancer_policy_free(). */
	void (*fini)(struct balancer_policy *p);
};

extern const struct balancer_policy_ops balancer_round_robin;
extern const struct balancer_policy_ops balancer_least_request;
extern const struct balancer_policy_ops balancer_ewma;

/* ewma: an idle endpoint it has not chosen for this long, and for this many
 * of the service's picks, takes the next stream it is drawn for: a probe, so
 * a pod shunned for one slow answer is measured again. At most one probe per
 * endpoint per 500 ms per worker, and 1 in 200 of the service's streams. */
#define BALANCER_EWMA_PROBE_MS 500
#define BALANCER_EWMA_PROBE_PICKS 200
/* ewma: a pod that joined a Service this recently (or within its slow start)
 * is compared by streams in flight alone: servers that warm up with traffic
 * (JIT, thread pools) answer slowly at first, and judged on that they would
 * get too little traffic to ever warm up. */
#define BALANCER_EWMA_GRACE_MS 5000

/* Embedded first in every policy's own struct. */
struct balancer_policy {
	const struct balancer_policy_ops *ops;
	uint64_t *rng; /* borrowed: the set's generator */
	/* Of the pick being made (the set sets them before each): */
	uint64_t now_ms;
	uint32_t slow_start_ms; /* the service's (0: off) */
	double max_weight;	/* its top static weight */
	bool uniform;		/* every weight is 1 now: the plain, cheaper paths */
	/* The candidate list's version: the set bumps it whenever it rebuilds
	 * the list, so a policy may keep an index of it (0: no index). */
	uint64_t list_version;
};

/* An instance of |ops| drawing on |rng| (borrowed), or NULL on ENOMEM; free()
 * frees it. */
static inline struct balancer_policy *balancer_policy_new(const struct balancer_policy_ops *ops,
							  uint64_t *rng,
							  const struct balancer_params *params)
{
	struct balancer_policy *p = calloc(1, ops->size);

	if (!p)
		return NULL;
	p->ops = ops;
	p->rng = rng;
	p->uniform = true;
	p->max_weight = 1;
	ops->init(p, params);
	return p;
}

/* NULL-safe. */
static inline void balancer_policy_free(struct balancer_policy *p)
{
	if (p && p->ops->fini)
		p->ops->fini(p);
	free(p);
}

/* xorshift64*: cheap, per worker, good enough for P2C. */
static inline uint64_t balancer_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* True with probability |prob| (0..1). */
static inline bool lb_chance(struct balancer_policy *p, double prob)
{
	return prob >= 1.0 || (double)(balancer_rand(p->rng) >> 11) * 0x1.0p-53 < prob;
}

/* The share of new streams |c| should get relative to a peer of weight 1:
 * its static weight, ramped linearly from BALANCER_SLOW_START_FLOOR up over
 * |slow_start_ms| after it joined (Envoy's slow start, aggression 1). */
static inline double lb_candidate_weight(const struct balancer_candidate *c, uint64_t now_ms,
					 uint32_t slow_start_ms)
{
	double w = c->weight ? c->weight : 1;
	uint64_t age;

	if (!slow_start_ms || c->warm_start_ms == BALANCER_WARM_UNSTAMPED || !c->warm_start_ms ||
	    now_ms >= c->warm_start_ms + slow_start_ms)
		return w;
	age = now_ms > c->warm_start_ms ? now_ms - c->warm_start_ms : 0;
	if ((double)age / slow_start_ms < BALANCER_SLOW_START_FLOOR)
		return w * BALANCER_SLOW_START_FLOOR;
	return w * (double)age / slow_start_ms;
}

/* |c|'s selection weight for the pick being made. */
static inline double lb_weight(const struct balancer_policy *p, const struct balancer_candidate *c)
{
	return p->uniform ? 1.0 : lb_candidate_weight(c, p->now_ms, p->slow_start_ms);
}

/* Power of two choices (p2c.c), shared by least_request and ewma. */
struct p2c_policy {
	struct balancer_policy base;
	uint64_t picks; /* made by this instance (ewma: probe pacing) */
	uint64_t vtime; /* the turn count of the last first choice (see p2c_take_turn) */
	size_t offset;	/* where the first choice's scan starts */
	/* The first choice when nothing is skipped, without a scan: a min-heap
	 * of indices into the list |heap_of| (version |heap_version|, |heap_n|
	 * long) by (turns, pick_seq, place in the scan from |offset|). */
	uint32_t *heap; /* owned, heap_alloc */
	size_t heap_n, heap_alloc;
	struct balancer_candidate *const *heap_of;
	uint64_t heap_version;
};

void p2c_fini(struct balancer_policy *p);

void p2c_init(struct balancer_policy *p, const struct balancer_params *params);
/* Two distinct unskipped candidates: the count of unskipped ones (0: none;
 * 1: only |*a| is set). |*a| is the first choice, whose turn it is. */
size_t p2c_pair(struct p2c_policy *p, struct balancer_candidate *const *c, const char *skip,
		size_t n, size_t *a, size_t *b);
/* |i| takes the stream, |a| having been the first choice. */
void p2c_take_turn(struct p2c_policy *p, struct balancer_candidate *const *c, size_t a, size_t i);
/* Of |a| and |b|, the one with fewer streams in flight per unit of weight;
 * ties go to |a|. */
size_t p2c_lighter(const struct balancer_policy *p, struct balancer_candidate *const *c, size_t a,
		   size_t b);

#endif
