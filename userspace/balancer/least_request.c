// SPDX-License-Identifier: Apache-2.0
/*
 * least_request: power of two choices (p2c.c) over the streams in flight per
 * unit of weight. The pair's first choice is the candidate whose turn it is
 * and wins ties, so idle equal endpoints take turns exactly.
 */
#include "balancer/policy.h"

static int lr_pick(struct balancer_policy *p, struct balancer_candidate *const *c, size_t n,
		   const char *skip)
{
	struct p2c_policy *pp = (struct p2c_policy *)p;
	size_t a = 0, b = 0, m = p2c_pair(pp, c, skip, n, &a, &b), i;

	if (m == 0)
		return -1;
	i = m > 1 ? p2c_lighter(p, c, a, b) : a;
	p2c_take_turn(pp, c, a, i);
	return (int)i;
}

const struct balancer_policy_ops balancer_least_request = {
    .name = "least_request",
    .size = sizeof(struct p2c_policy),
    .init = p2c_init,
    .pick = lr_pick,
    .fini = p2c_fini,
};
