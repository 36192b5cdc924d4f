// SPDX-License-Identifier: Apache-2.0
/*
 * Hedged attempts of a stream (see h2_hedge.h). Each is a stream struct of
 * its own (h2_stream_hedge_new(): a copy of the complete request) owned by
 * the RPC's stream in rt.hedges; the upstream only ever knows it through its
 * stream user data. The winner's upstream stream is handed to the RPC's
 * stream (h2_upstream_relink()), so forwarding the response is the one path
 * every stream takes; the losers are cancelled and freed.
 */
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_hedge.h"
#include "proxy/h2/h2_reply.h"
#include "proxy/h2/h2_retry.h"
#include "proxy/h2/h2_route.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"

static struct splitter *S(const struct h2_stream *st)
{
	return st->ds->s;
}

static void on_hedge_timer(struct loop *l, struct loop_timer *t, void *arg);

static void arm(struct h2_stream *st, uint64_t ms)
{
	loop_timer_cancel(S(st)->ctx.loop, st->rt.hedge_timer);
	st->rt.hedge_timer = loop_timer_add(S(st)->ctx.loop, ms, on_hedge_timer, st);
}

void h2_hedge_start(struct h2_stream *st)
{
	if (st->rt.attempts < st->rt.max_attempts)
		arm(st, st->rt.hedging_delay_ms);
}

/* Whether another attempt may still answer: one in flight, or one to come. */
static bool others_left(const struct h2_stream *st, const struct h2_stream *but)
{
	if (st != but && st->leg != H2_LEG_NONE && st->leg != H2_LEG_DONE)
		return true;
	for (uint8_t i = 0; i < st->rt.n_hedges; i++)
		if (st->rt.hedges[i] != but)
			return true;
	return st->rt.hedge_timer && st->rt.attempts < st->rt.max_attempts;
}

static void forget(struct h2_stream *st, struct h2_stream *h)
{
	for (uint8_t i = 0; i < st->rt.n_hedges; i++) {
		if (st->rt.hedges[i] != h)
			continue;
		st->rt.hedges[i] = st->rt.hedges[--st->rt.n_hedges];
		return;
	}
}

void h2_hedge_cancel(struct h2_stream *st)
{
	loop_timer_cancel(S(st)->ctx.loop, st->rt.hedge_timer);
	st->rt.hedge_timer = NULL;
	while (st->rt.n_hedges)
		h2_stream_hedge_free(st->rt.hedges[--st->rt.n_hedges]);
}

/* Whether |st| may send another attempt now: nothing answered, the whole
 * request is here and held. */
static bool may_hedge(const struct h2_stream *st)
{
	return !st->rt.committed && st->rt.attempts < st->rt.max_attempts && st->req_end &&
	       st->retaining && !st->req_dropped && !st->req_discard && !st->resp_hdrs_sent &&
	       !st->ds->c.dead && st->req_body.len <= (size_t)S(st)->cfg->retry_buffer_bytes &&
	       st->rt.n_hedges < RPC_POLICY_MAX_ATTEMPTS;
}

/* Send one hedged attempt of |st|, avoiding the endpoints its attempts use. */
static void send_hedge(struct h2_stream *st)
{
	struct splitter *s = S(st);
	struct balancer_endpoint *avoid[H2_TRIED_MAX + RPC_POLICY_MAX_ATTEMPTS];
	size_t n = st->n_tried;
	struct h2_stream *h;

	if (!balancer_retry_withdraw(s->lb, st->rt.service_id, loop_now_ms(), st->rt.budget_ratio,
				     st->rt.budget_min_per_s)) {
		metrics_service_retry_budget_exhausted(s->ctx.metrics, st->rt.service_id);
		st->rt.attempts = st->rt.max_attempts; /* no more: the budget said so */
		return;
	}
	memcpy(avoid, st->tried, n * sizeof(avoid[0]));
	for (uint8_t i = 0; i < st->rt.n_hedges; i++)
		if (st->rt.hedges[i]->ep)
			avoid[n++] = st->rt.hedges[i]->ep;
	h = h2_stream_hedge_new(st);
	if (!h)
		return;
	if (h2_route_hedge(h, avoid, n)) {
		h2_stream_hedge_free(h);
		return;
	}
	st->rt.hedges[st->rt.n_hedges++] = h;
	st->rt.attempts++;
	metrics_service_hedge(s->ctx.metrics, st->rt.service_id);
}

static void on_hedge_timer(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_stream *st = arg;

	(void)l;
	(void)t;
	st->rt.hedge_timer = NULL;
	if (!may_hedge(st))
		return;
	send_hedge(st);
	if (st->rt.attempts < st->rt.max_attempts)
		arm(st, st->rt.hedging_delay_ms);
	h2_conn_kick(&S(st)->io);
}

/* |h|'s upstream stream becomes |st|'s: its leg, endpoint, request progress
 * and the response headers it received. |st|'s own attempt, if any, and the
 * other hedges are cancelled first. |h| is freed. */
static void adopt(struct h2_stream *st, struct h2_stream *h)
{
	struct h2_hdrs tmp;

	forget(st, h);
	h2_retry_end_attempt(st); /* open, queued for a retry, or waiting: over */
	h2_hedge_cancel(st);
	h2_upstream_relink(h->up, h, st);
	st->up_id = h->up_id;
	st->ep = h->ep;
	h->ep = NULL;
	if (st->n_tried < H2_TRIED_MAX)
		st->tried[st->n_tried++] = st->ep;
	st->leg = H2_LEG_OPEN;
	st->up_start_ns = h->up_start_ns;
	st->up_rtt_us = h->up_rtt_us;
	st->up_grpc_status = h->up_grpc_status;
	st->grpc_status = h->grpc_status;
	st->up_failed = false;
	st->up_netns_refused = false;
	st->up_hdrs_sent = h->up_hdrs_sent;
	st->up_deferred = h->up_deferred;
	/* The same bytes went out from |h|'s copy: |st| goes on from there. */
	st->ds->retained += h->req_sent - st->req_sent;
	st->req_sent = h->req_sent;
	h->ds->retained -= h->req_sent;
	h->req_sent = 0;
	tmp = st->resp_hdrs;
	st->resp_hdrs = h->resp_hdrs;
	h->resp_hdrs = tmp;
	h->leg = H2_LEG_DONE; /* its upstream stream is |st|'s now */
	h2_stream_hedge_free(h);
}

/* The answer of |st| or of its hedge |h| was a non-fatal failure while
 * others may still answer: drop it. */
static void drop(struct h2_stream *st, struct h2_stream *h)
{
	if (h) {
		forget(st, h);
		h2_stream_hedge_free(h);
	} else {
		h2_retry_end_attempt(st);
	}
	/* gRFC A6: after a non-fatal failure the next hedge goes at once. */
	if (st->rt.attempts < st->rt.max_attempts && !st->rt.committed)
		arm(st, 0);
}

bool h2_hedge_on_headers(struct h2_stream *h, bool end_stream)
{
	struct h2_stream *st = h->hedge_of ? h->hedge_of : h;
	int code = h->up_grpc_status;
	bool non_fatal = end_stream && h->grpc && code >= 0 && code < RPC_POLICY_GRPC_CODES &&
			 (st->rt.codes & 1u << code);

	if (st->rt.kind != RPC_POLICY_HEDGE || st->rt.committed)
		return false;
	if (non_fatal && others_left(st, h)) {
		drop(st, h == st ? NULL : h);
		return true;
	}
	st->rt.committed = true;
	if (h == st) {
		h2_hedge_cancel(st);
		return false;
	}
	adopt(st, h);
	h2_stream_us_headers_done(st, false, end_stream);
	return true;
}

bool h2_hedge_on_failure(struct h2_stream *h)
{
	struct h2_stream *st = h->hedge_of ? h->hedge_of : h;

	if (st->rt.kind != RPC_POLICY_HEDGE || st->rt.committed || h->resp_hdrs_rcvd)
		return false;
	if (others_left(st, h)) {
		drop(st, h == st ? NULL : h);
		return true;
	}
	if (h == st)
		return false; /* the last attempt: its failure is the RPC's */
	forget(st, h);
	h2_stream_hedge_free(h);
	h2_reply_error(st, GRPC_UNAVAILABLE, 502, "h2split: every hedged attempt failed");
	return true;
}
