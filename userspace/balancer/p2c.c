// SPDX-License-Identifier: Apache-2.0
/*
 * Power of two choices, the part least_request and ewma share: drawing the
 * pair and keeping turns. Without weights the first choice goes by turns
 * (fewest turns as first choice, then chosen longest ago), so idle equal
 * endpoints take turns exactly; only the second is drawn at random. With
 * nothing to skip (most picks), the turn order is a heap over the list, so a
 * pick costs the same with 3 endpoints or 5,000.
 */
#include <stdlib.h>

#include "balancer/policy.h"

void p2c_init(struct balancer_policy *p, const struct balancer_params *params)
{
	struct p2c_policy *pp = (struct p2c_policy *)p;

	(void)params;
	/* Workers (and services) break ties in different orders. */
	pp->offset = (size_t)(balancer_rand(p->rng) >> 33);
}

void p2c_fini(struct balancer_policy *p)
{
	free(((struct p2c_policy *)p)->heap);
}

/* ---- the turn heap ---- */

/* Whose turn comes first of |i| and |j|: fewer turns, then chosen longer
 * ago, then earlier in the scan from p->offset (the scan's own order). */
static bool turn_before(const struct p2c_policy *p, struct balancer_candidate *const *c, size_t n,
			size_t i, size_t j)
{
	size_t o = p->offset % n;

	if (c[i]->turns != c[j]->turns)
		return c[i]->turns < c[j]->turns;
	if (c[i]->pick_seq != c[j]->pick_seq)
		return c[i]->pick_seq < c[j]->pick_seq;
	return (i + n - o) % n < (j + n - o) % n;
}

static void heap_set(struct p2c_policy *p, struct balancer_candidate *const *c, size_t k,
		     uint32_t i)
{
	p->heap[k] = i;
	c[i]->heap_at = (uint32_t)k;
}

/* Keys only grow (p2c_take_turn()), so an entry only ever moves down. */
static void sift_down(struct p2c_policy *p, struct balancer_candidate *const *c, size_t k)
{
	size_t n = p->heap_n;
	uint32_t x = p->heap[k];

	for (;;) {
		size_t l = 2 * k + 1, m = l;

		if (l >= n)
			break;
		if (l + 1 < n && turn_before(p, c, n, p->heap[l + 1], p->heap[l]))
			m = l + 1;
		if (!turn_before(p, c, n, p->heap[m], x))
			break;
		heap_set(p, c, k, p->heap[m]);
		k = m;
	}
	heap_set(p, c, k, x);
}

/* The heap of list |c| (|n| long) as of now, rebuilt when the list changed;
 * false when there is none (no list version, or no memory). */
static bool heap_ready(struct p2c_policy *p, struct balancer_candidate *const *c, size_t n)
{
	if (!p->base.list_version || n > UINT32_MAX)
		return false;
	if (p->heap_of == c && p->heap_n == n && p->heap_version == p->base.list_version)
		return true;
	if (n > p->heap_alloc) {
		uint32_t *h = realloc(p->heap, n * sizeof(*h));

		if (!h)
			return false;
		p->heap = h;
		p->heap_alloc = n;
	}
	p->heap_of = c;
	p->heap_n = n;
	p->heap_version = p->base.list_version;
	for (size_t k = 0; k < n; k++)
		heap_set(p, c, k, (uint32_t)k);
	for (size_t k = n / 2; k-- > 0;)
		sift_down(p, c, k);
	return true;
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
	if (!skip && heap_ready(p, c, n)) {
		*a = p->heap[0];
		if (n == 1)
			return 1;
		kb = (size_t)(balancer_rand(p->base.rng) % (n - 1));
		*b = kb >= *a ? kb + 1 : kb;
		return n;
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
	bool indexed = p->heap_of == c && p->heap_version == p->base.list_version &&
		       p->base.list_version && a < p->heap_n && i < p->heap_n;

	if (c[a]->turns < p->vtime)
		c[a]->turns = p->vtime;
	p->vtime = ++c[a]->turns - 1;
	c[i]->pick_seq = ++p->picks;
	if (!indexed)
		return;
	sift_down(p, c, c[a]->heap_at);
	if (i != a)
		sift_down(p, c, c[i]->heap_at);
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
