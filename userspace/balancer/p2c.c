// SPDX-License-Identifier: Apache-2.0
/*
 * Power of two choices, the part least_request and ewma share: drawing the
 * pair and keeping turns. Without weights the first choice goes by turns
 * (fewest turns as first choice, then chosen longest ago), so idle equal
 * endpoints take turns exactly; only the second is drawn at random.
 */
#include "balancer/policy.h"

void p2c_init(struct balancer_policy *p, const struct balancer_params *params)
{
	struct p2c_policy *pp = (struct p2c_policy *)p;

	(void)params;
	/* Workers (and services) break ties in different orders. */
	pp->offset = (size_t)(balancer_rand(p->rng) >> 33);
}

/* Index of the |k|-th entry not marked in |skip|. */
static size_t kth_unskipped(const char *skip, size_t n, size_t k)
{
	if (!skip)
		return k;
	for (size_t i = 0; i < n; i++)
		if (!skip[i] && k-- == 0)
			return i;
	return n; /* not reached: callers count first */
}

static size_t count_unskipped(const char *skip, size_t n)
{
	size_t m = n;

	if (!skip)
		return n;
	for (size_t i = 0; i < n; i++)
		m -= skip[i] != 0;
	return m;
}

/* An unskipped candidate other than |other| (n: none), drawn with
 * probability proportional to its weight; |n| when the weights are all zero. */
static size_t weighted_draw(struct balancer_policy *p, struct balancer_candidate *const *c,
			    const char *skip, size_t n, size_t other)
{
	double sum = 0, x;

	for (size_t i = 0; i < n; i++)
		if (i != other && !(skip && skip[i]))
			sum += lb_weight(p, c[i]);
	x = (double)(balancer_rand(p->rng) >> 11) * 0x1.0p-53 * sum;
	for (size_t i = 0; i < n; i++) {
		if (i == other || (skip && skip[i]))
			continue;
		x -= lb_weight(p, c[i]);
		if (x < 0)
			return i;
	}
	for (size_t i = n; i-- > 0;) /* rounding: the last candidate */
		if (i != other && !(skip && skip[i]))
			return i;
	return n;
}

/* With weights, both are drawn by weight. Without, the first is the
 * candidate whose turn it is (see p2c_take_turn()): the turns of one the
 * policy shuns, or of one that is busy, go to the others evenly, to
 * whichever has waited longest first. */
size_t p2c_pair(struct p2c_policy *p, struct balancer_candidate *const *c, const char *skip,
		size_t n, size_t *a, size_t *b)
{
	size_t m = count_unskipped(skip, n), ka = 0, kb;

	if (m == 0)
		return 0;
	if (!p->base.uniform) {
		*a = weighted_draw(&p->base, c, skip, n, n);
		if (m > 1)
			*b = weighted_draw(&p->base, c, skip, n, *a);
		return m;
	}
	*a = n;
	for (size_t j = 0, i = p->offset % n; j < n; j++, i = i + 1 < n ? i + 1 : 0) {
		if (skip && skip[i])
			continue;
		if (*a == n || c[i]->turns < c[*a]->turns ||
		    (c[i]->turns == c[*a]->turns && c[i]->pick_seq < c[*a]->pick_seq))
			*a = i;
	}
	if (m == 1)
		return 1;
	for (size_t i = 0; i < *a; i++) /* its rank among the unskipped */
		ka += !(skip && skip[i]);
	kb = (size_t)(balancer_rand(p->base.rng) % (m - 1));
	*b = kth_unskipped(skip, n, kb >= ka ? kb + 1 : kb);
	return m;
}

/* |a| has had its turn, won or lost. Only the first choice counts one: a
 * winner drawn second does not lose a turn of its own, or a pod faster than
 * the rest would be the first choice less often the more it wins, and get
 * less than P2C gives it. Never from below the last first choice's count:
 * one that was away (ejected, in backoff, new) has one turn on its return,
 * then its share, not every turn until it has made up for the time away. */
void p2c_take_turn(struct p2c_policy *p, struct balancer_candidate *const *c, size_t a, size_t i)
{
	if (c[a]->turns < p->vtime)
		c[a]->turns = p->vtime;
	p->vtime = ++c[a]->turns - 1;
	c[i]->pick_seq = ++p->picks;
}

/* Ties (idle endpoints, mostly) go to |a|: without weights the endpoint whose
 * turn it is; with them the first draw, which is by weight, so idle
 * endpoints split streams by weight too. */
size_t p2c_lighter(const struct balancer_policy *p, struct balancer_candidate *const *c, size_t a,
		   size_t b)
{
	if (p->uniform)
		return c[b]->inflight < c[a]->inflight ? b : a;
	return c[b]->inflight / lb_weight(p, c[b]) < c[a]->inflight / lb_weight(p, c[a]) ? b : a;
}
