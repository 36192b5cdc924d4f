// SPDX-License-Identifier: Apache-2.0
/*
 * round_robin: a cursor that walks the candidate list, skipping marked ones.
 * With weights (or slow start), the candidate the cursor reaches takes the
 * stream with probability weight / the service's top weight, else the
 * cursor moves on: over a round, streams split by weight.
 */
#include "balancer/policy.h"

struct round_robin {
	struct balancer_policy base;
	size_t next; /* where the cursor stands (taken modulo the list's length) */
};

static void rr_init(struct balancer_policy *p, const struct balancer_params *params)
{
	(void)params;
	/* Start workers (and services) at different places in the list. */
	((struct round_robin *)p)->next = (size_t)(balancer_rand(p->rng) >> 33);
}

static int rr_pick(struct balancer_policy *p, struct balancer_candidate *const *c, size_t n,
		   const char *skip)
{
	struct round_robin *rr = (struct round_robin *)p;
	int first = -1;

	for (size_t k = 0; k < n; k++) {
		size_t i = (rr->next + k) % n;

		if (skip && skip[i])
			continue;
		if (first < 0)
			first = (int)i;
		if (!p->uniform && !lb_chance(p, lb_weight(p, c[i]) / p->max_weight))
			continue;
		rr->next = i + 1;
		return (int)i;
	}
	if (first >= 0) /* every one declined: the first in line */
		rr->next = (size_t)first + 1;
	return first;
}

const struct balancer_policy_ops balancer_round_robin = {
    .name = "round_robin",
    .size = sizeof(struct round_robin),
    .init = rr_init,
    .pick = rr_pick,
};
