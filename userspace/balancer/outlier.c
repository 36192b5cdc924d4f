// SPDX-License-Identifier: Apache-2.0
/*
 * What a worker learns from failures: connect backoff per client netns, and
 * passive outlier ejection (N failures in a row, or a failure rate over the
 * last BALANCER_EJECT_WINDOW verdicts), for every policy. Invariant: an
 * ejection never puts more than half of a service's candidates out.
 */
#include "balancer/balancer_int.h"

size_t lb_count_ejected(struct balancer_candidate *const *c, size_t n, uint64_t now_ms)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		k += lb_ejected(lb_ep_of(c[i]), now_ms);
	return k;
}

bool lb_in_backoff(const struct lb_endpoint *ep, uint64_t now_ms, uint64_t netns_id)
{
	return ep->backoff_until_ms > now_ms &&
	       (!ep->backoff_netns || ep->backoff_netns == netns_id);
}

void balancer_endpoint_connect_failed(struct balancer_endpoint *pub, uint64_t now_ms,
				      uint64_t netns_id)
{
	struct lb_endpoint *ep = lb_ep(pub);
	struct lb_service *ls;

	ep->c.probed = false;
	/* Many streams learn of one failure at once: step once per window. */
	if (ep->backoff_until_ms > now_ms && ep->backoff_netns == netns_id)
		return;
	if (ep->backoff_netns != netns_id)
		ep->backoff_step = 0; /* another client pod: start over */
	ep->backoff_netns = netns_id;
	if (ep->backoff_step < 6)
		ep->backoff_step++;
	ep->backoff_until_ms = now_ms + (500ull << (ep->backoff_step - 1));
	if (ep->backoff_until_ms > now_ms + 30000)
		ep->backoff_until_ms = now_ms + 30000;
	ls = *lb_service_slot(ep->set, ep->pub.service_id);
	if (ls)
		lb_note_backoff(ls, ep);
}

void balancer_endpoint_ok(struct balancer_endpoint *pub)
{
	struct lb_endpoint *ep = lb_ep(pub);

	ep->backoff_step = 0;
	ep->backoff_until_ms = 0;
}

/* Eject |ep| unless that would put more than half of its service's current
 * candidates out. */
static bool try_eject(struct balancer_set *bs, struct lb_endpoint *ep, uint64_t now_ms)
{
	struct lb_service *ls = *lb_service_slot(bs, ep->pub.service_id);
	struct balancer_candidate *const *list;
	uint64_t ms, max = BALANCER_EJECT_MAX_MS;
	size_t n;

	if (!ls)
		return false;
	list = lb_candidates(ls, &n);
	if ((lb_count_ejected(list, n, now_ms) + 1) * 2 > n)
		return false;
	/* Well behaved for as long as the longest ejection: start over. */
	if (ep->ejected_until_ms + BALANCER_EJECT_MAX_MS < now_ms)
		ep->ejections = 0;
	ep->ejections++;
	if (max < bs->params.eject_base_ms)
		max = bs->params.eject_base_ms;
	ms = (uint64_t)bs->params.eject_base_ms * ep->ejections;
	ep->ejected_until_ms = now_ms + (ms < max ? ms : max);
	lb_note_backoff(ls, ep);
	ep->c.consec_failures = 0;
	ep->verdicts = 0; /* judged afresh when it is back */
	ep->n_verdicts = 0;
	return true;
}

/* Remember one verdict of |ep|; true when the failures among its last
 * BALANCER_EJECT_WINDOW reach |pct| percent (0: never). */
static bool note_verdict(struct lb_endpoint *ep, bool failed, uint32_t pct)
{
	uint32_t window = (1u << BALANCER_EJECT_WINDOW) - 1;

	ep->verdicts = ep->verdicts << 1 | failed;
	if (ep->n_verdicts < 32)
		ep->n_verdicts++;
	return pct && ep->n_verdicts >= BALANCER_EJECT_WINDOW &&
	       (uint32_t)__builtin_popcount(ep->verdicts & window) * 100 >=
		   pct * BALANCER_EJECT_WINDOW;
}

bool balancer_endpoint_report(struct balancer_set *bs, struct balancer_endpoint *pub,
			      uint64_t now_ms, uint64_t rtt_us, enum balancer_outcome o)
{
	const struct balancer_params *pa = &bs->params;
	struct lb_endpoint *ep = lb_ep(pub);
	struct lb_latency *lat = &ep->c.lat;
	bool rate, probe = ep->c.probed;

	ep->c.probed = false;
	switch (o) {
	case BALANCER_NO_VERDICT:
		lb_latency_unanswered(lat, now_ms, pa->ewma_decay_ms, pa->ewma_default_us,
				      (double)rtt_us);
		return false;
	case BALANCER_OK:
		lb_latency_answered(lat, now_ms, pa->ewma_decay_ms, pa->ewma_default_us,
				    (double)rtt_us, probe);
		ep->c.consec_failures = 0;
		note_verdict(ep, false, 0);
		return false;
	case BALANCER_OVERLOADED:
	case BALANCER_FAILED:
		break;
	}
	lb_latency_failed(lat, now_ms, pa->ewma_decay_ms, pa->ewma_default_us, (double)rtt_us);
	if (o != BALANCER_FAILED)
		return false;
	rate = note_verdict(ep, true, pa->eject_failure_pct);
	ep->c.consec_failures++;
	/* An ejected endpoint still finishing streams does not extend its time. */
	if (lb_ejected(ep, now_ms))
		return false;
	if (!rate && !(pa->eject_failures && ep->c.consec_failures >= pa->eject_failures))
		return false;
	return try_eject(bs, ep, now_ms);
}
