// SPDX-License-Identifier: Apache-2.0
/*
 * Locality tiers (see balancer.h): a tiered service's usable candidates are
 * ordered node tier, zone tier, rest, so each tier plus the ones before it is
 * a prefix of the list. A pick takes the nearest tier that has a fresh
 * endpoint with room, is not far busier than the rest, and is not ramping
 * back; the policy then chooses within it. Invariant: a tier passed over is
 * skipped by the wider pick too, so a spilled stream lands farther out.
 */
#include "balancer/balancer_int.h"
#include "base/log.h"

const char *balancer_failover_name(enum balancer_failover f)
{
	static const char *const names[BALANCER_FAILOVER_MAX] = {"none", "unavailable", "full",
								  "load", "ramp"};

	return f < BALANCER_FAILOVER_MAX ? names[f] : "none";
}

struct tier_look {
	/* Not ejected, failing health checks nor in connect backoff from any
	 * client pod: whether the tier is up, the same for every stream. */
	size_t up;
	size_t healthy;	   /* for this stream: right family, not in its netns' backoff, not tried */
	size_t room;	   /* ... and below their cap */
	uint64_t inflight; /* streams on the healthy ones */
};

static void look(const struct lb_service *ls, struct balancer_candidate *const *c, size_t lo,
		 size_t hi, const struct balancer_pick *p, int family, bool checked,
		 struct tier_look *out)
{
	*out = (struct tier_look){0};
	for (size_t i = lo; i < hi; i++) {
		const struct lb_endpoint *ep = lb_ep_of(c[i]);
		bool tried = false;

		for (size_t j = 0; j < p->n_avoid; j++)
			tried |= &ep->pub == p->avoid[j];
		if (lb_ejected(ep, p->now_ms) ||
		    (checked && health_table_unhealthy(p->health, ep->pub.service_id, &ep->pub.ip,
						       ep->pub.port)))
			continue;
		out->up += ep->backoff_until_ms <= p->now_ms;
		if (tried || lb_wrong_family(ep, family) ||
		    lb_in_backoff(ep, p->now_ms, p->netns_id))
			continue;
		out->healthy++;
		out->room += !lb_at_cap(ls, c[i]);
		out->inflight += c[i]->inflight;
	}
}

/* Whether tier |t| ([lo, hi) of |n|) should be passed over, and why. */
static enum balancer_failover judge(struct lb_service *ls, struct balancer_candidate *const *c,
				    size_t lo, size_t hi, size_t n, struct balancer_pick *p,
				    int family, bool checked, int t)
{
	struct tier_look near, far;
	uint64_t age;

	look(ls, c, lo, hi, p, family, checked, &near);
	/* Down and back are the tier's, not one stream's: a stream's retries
	 * (tried) or one client pod's connect backoff alone do not ramp it. */
	if (!near.up && !ls->tier_down[t]) {
		ls->tier_down[t] = true;
		log_info("locality_failover service_id=%u tier=%s reason=unavailable", ls->id,
			 t ? "zone" : "node");
	} else if (near.up && ls->tier_down[t]) {
		ls->tier_down[t] = false;
		ls->ramp_from_ms[t] = p->now_ms;
		log_info("locality_failback service_id=%u tier=%s ramp_ms=%d", ls->id,
			 t ? "zone" : "node", BALANCER_RAMP_MS);
	}
	if (!near.healthy)
		return BALANCER_FAILOVER_UNAVAILABLE;
	if (!near.room)
		return BALANCER_FAILOVER_FULL;
	/* Spill by choice only to endpoints that can take it at once. */
	look(ls, c, hi, n, p, family, checked, &far);
	if (!far.room)
		return BALANCER_FAILOVER_NONE;
	if (near.inflight >= BALANCER_SPILL_MIN * near.healthy &&
	    near.inflight * far.healthy >
		BALANCER_SPILL_FACTOR * (far.inflight + far.healthy) * near.healthy)
		return BALANCER_FAILOVER_LOAD;
	age = p->now_ms - ls->ramp_from_ms[t];
	if (ls->ramp_from_ms[t] && age < BALANCER_RAMP_MS) {
		double share = 0.1 + 0.9 * (double)age / BALANCER_RAMP_MS;

		if (!lb_chance(ls->b, share))
			return BALANCER_FAILOVER_RAMP;
	}
	return BALANCER_FAILOVER_NONE;
}

int lb_tier_pick(struct balancer_set *bs, struct lb_service *ls, struct balancer_candidate *const *c,
		 size_t n, struct balancer_pick *p, int family, bool checked, size_t *skip)
{
	for (int t = 0; t < 2; t++) {
		size_t lo = *skip, hi = ls->near[t];
		enum balancer_failover why;
		int i;

		if (hi <= lo)
			continue; /* an empty tier is no failover: the Service has none there */
		if (hi >= n)
			return -1; /* the tier is every candidate: the plain pick */
		why = judge(ls, c, lo, hi, n, p, family, checked, t);
		if (why == BALANCER_FAILOVER_NONE) {
			i = ls->b->ops->pick(ls->b, c, hi,
					     lb_mark_tried(bs, ls, c, hi, p, family, true, true,
							   true, checked, lo));
			if (i >= 0)
				return i;
			why = BALANCER_FAILOVER_UNAVAILABLE;
		}
		if (!p->failover)
			p->failover = (uint8_t)why;
		*skip = hi;
	}
	return -1;
}
