// SPDX-License-Identifier: Apache-2.0
/*
 * ewma: power of two choices (p2c.c) over peak-EWMA latency (latency.c) x
 * (in flight + 1), per unit of static weight. Latency decides only when the
 * pair's estimates clearly differ; otherwise, and while either is still
 * learning, the in-flight count does, as for least_request, so shares of
 * equal pods stay even. Idle endpoints not measured for a while are probed.
 */
#include <math.h>

#include "balancer/policy.h"

/* Estimates less than this apart (us) are the same: at a few hundred
 * microseconds, scheduling noise alone makes equal pods differ by more than
 * BALANCER_EWMA_BAND, and steering on it would gain less than this per RPC
 * while splitting streams unevenly. */
#define EWMA_SLACK_US 1000.0
/* ... and so are estimates no further apart than this many times the sum of
 * the two endpoints' jitter. On a loaded node the proxy's own scheduling
 * delays land on whichever pods had streams in flight: two such answers in a
 * row make an equal pod look slower by far more than the band. A pod that
 * turns slow by more than about three times that jitter is told apart by its
 * second slow answer (the first moves the jitter by a quarter of the step). */
#define EWMA_NOISE_K 2.0

struct ewma {
	struct p2c_policy p2c;
	uint32_t decay_ms;   /* peak-EWMA time constant */
	uint32_t default_us; /* latency assumed for an endpoint not yet measured */
};

static void ewma_init(struct balancer_policy *p, const struct balancer_params *params)
{
	struct ewma *e = (struct ewma *)p;

	p2c_init(p, params);
	e->decay_ms = params->ewma_decay_ms;
	e->default_us = params->ewma_default_us;
}

/* Slow start acts through the draw alone: dividing by a warming endpoint's
 * 0.1 would shut it out until the ramp ends, since an idle peer costs as
 * little. */
static double cost(const struct balancer_policy *p, const struct balancer_candidate *c, double lat)
{
	return lat * (c->inflight + 1) / (p->uniform ? 1 : c->weight);
}

/* Idle, measured, and neither chosen nor measured for a while: its estimate
 * may be stale (see BALANCER_EWMA_PROBE_MS). Not after a failure, nor after
 * a stream it never answered (a pod that stalls would fail a probe every
 * deadline): ejection and the estimate's decay bring those back. */
static bool probe_due(const struct p2c_policy *p, const struct balancer_candidate *c)
{
	return !c->inflight && c->lat.init && !c->consec_failures && !c->lat.gave_up &&
	       p->base.now_ms >= c->lat.stamp_ms + BALANCER_EWMA_PROBE_MS &&
	       p->picks - c->pick_seq >= BALANCER_EWMA_PROBE_PICKS;
}

/* Joined the service lately (see BALANCER_EWMA_GRACE_MS), or has answered this
 * worker fewer than BALANCER_EWMA_FIRST_ANSWERS streams; not when its last
 * stream failed or went unanswered: that is no warm-up. */
static bool learning(const struct balancer_policy *p, const struct balancer_candidate *c)
{
	uint32_t grace =
	    p->slow_start_ms > BALANCER_EWMA_GRACE_MS ? p->slow_start_ms : BALANCER_EWMA_GRACE_MS;

	if (c->consec_failures || c->lat.gave_up)
		return false;
	return c->lat.answers < BALANCER_EWMA_FIRST_ANSWERS ||
	       (c->warm_start_ms && c->warm_start_ms != BALANCER_WARM_UNSTAMPED &&
		p->now_ms < c->warm_start_ms + grace);
}

/* Estimates |la| of |a| and |lb| of |b| within BALANCER_EWMA_BAND of each
 * other, or EWMA_SLACK_US, or the noise of their answers (EWMA_NOISE_K). */
static bool same_latency(const struct balancer_candidate *a, double la,
			 const struct balancer_candidate *b, double lb)
{
	double noise = EWMA_NOISE_K * (a->lat.jitter_us + b->lat.jitter_us);

	return fabs(la - lb) <= fmax(EWMA_SLACK_US, noise) ||
	       (la <= lb * BALANCER_EWMA_BAND && lb <= la * BALANCER_EWMA_BAND);
}

/* Compared raw (as Linkerd and Finagle do), whichever of equal pods drew a
 * slower sample would be shunned until its estimate decays, and shares would
 * drift apart: hence same_latency() and learning(). */
static int ewma_pick(struct balancer_policy *p, struct balancer_candidate *const *c, size_t n,
		     const char *skip)
{
	struct ewma *e = (struct ewma *)p;
	size_t a = 0, b = 0, m = p2c_pair(&e->p2c, c, skip, n, &a, &b), i;
	double la, lb;

	if (m == 0)
		return -1;
	if (m == 1) {
		i = a;
	} else if (probe_due(&e->p2c, c[a]) || probe_due(&e->p2c, c[b])) {
		i = probe_due(&e->p2c, c[a]) ? a : b;
		c[i]->probed = true;
	} else {
		la = lb_latency_estimate(&c[a]->lat, p->now_ms, e->decay_ms, e->default_us);
		lb = lb_latency_estimate(&c[b]->lat, p->now_ms, e->decay_ms, e->default_us);
		if (same_latency(c[a], la, c[b], lb) || learning(p, c[a]) || learning(p, c[b]))
			i = p2c_lighter(p, c, a, b);
		else
			i = cost(p, c[b], lb) < cost(p, c[a], la) ? b : a;
	}
	p2c_take_turn(&e->p2c, c, a, i);
	return (int)i;
}

const struct balancer_policy_ops balancer_ewma = {
    .name = "ewma",
    .size = sizeof(struct ewma),
    .init = ewma_init,
    .pick = ewma_pick,
    .fini = p2c_fini,
};
