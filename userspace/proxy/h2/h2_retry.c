// SPDX-License-Identifier: Apache-2.0
/*
 * Policy retries (see h2_retry.h). The attempt in progress is ended here
 * without giving up the request bytes held for replay, the answer that
 * triggered the retry is dropped unseen, and the stream goes back to
 * h2_route.c's queue after its backoff, avoiding every endpoint it tried.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_endpoint.h"
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

/* A hedging policy covering the method wins over a retry policy. */
static void resolve_hedge(struct h2_retry *rt, const struct rpc_policy *p)
{
	rt->kind = p->kind;
	rt->max_attempts = p->max_attempts;
	rt->codes = p->codes;
	rt->hedging_delay_ms = p->hedging_delay_ms;
	rt->budget_ratio = p->budget_ratio;
	rt->budget_min_per_s = p->budget_min_per_s;
}

void h2_retry_resolve(struct h2_stream *st, const struct state_service *svc)
{
	struct h2_retry *rt = &st->rt;
	const struct rpc_policy *p = &svc->retry;
	const uint8_t *path;
	size_t len;

	if (rt->resolved)
		return;
	rt->resolved = true;
	rt->new_attempt = true;
	rt->pushback_ms = -1;
	rt->service_id = svc->id;
	rt->max_attempts = 1;
	rt->per_try_ms = svc->per_try_timeout_ms > 0 ? (uint32_t)svc->per_try_timeout_ms : 0;
	if (!st->grpc || (p->kind == RPC_POLICY_NONE && svc->hedge.kind == RPC_POLICY_NONE))
		return; /* most Services: no policy, no :path lookup per stream */
	path = h2_hdrs_get(&st->req_hdrs, ":path", &len);
	if (rpc_policy_covers(&svc->hedge, path, len)) {
		resolve_hedge(rt, &svc->hedge);
		return;
	}
	if (!rpc_policy_covers(p, path, len))
		return;
	rt->kind = p->kind;
	rt->max_attempts = p->max_attempts;
	rt->codes = p->codes;
	rt->initial_backoff_ms = rt->backoff_ms = p->initial_backoff_ms;
	rt->max_backoff_ms = p->max_backoff_ms;
	rt->multiplier = p->backoff_multiplier;
	rt->budget_ratio = p->budget_ratio;
	rt->budget_min_per_s = p->budget_min_per_s;
}

size_t h2_retry_add_header(const struct h2_stream *st, nghttp2_nv *nv, size_t n, char *buf)
{
	static const char name[] = "grpc-previous-rpc-attempts";
	unsigned prev = st->rt.attempts - (st->rt.new_attempt ? 0 : 1);
	size_t out = 0;

	if (!st->rt.attempts || !prev)
		return n;
	for (size_t i = 0; i < n; i++) /* the client's own, if any, is replaced */
		if (nv[i].namelen != sizeof(name) - 1 || memcmp(nv[i].name, name, nv[i].namelen))
			nv[out++] = nv[i];
	snprintf(buf, 12, "%u", prev);
	nv[out++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)buf, sizeof(name) - 1, strlen(buf),
				 NGHTTP2_NV_FLAG_NONE};
	return out;
}

static void on_per_try_timeout(struct loop *l, struct loop_timer *t, void *arg);

void h2_retry_submitted(struct h2_stream *st)
{
	struct h2_retry *rt = &st->rt;
	struct splitter *s = S(st);
	uint64_t now = loop_now_ms();

	if (!rt->new_attempt)
		return;
	rt->new_attempt = false;
	rt->attempts++;
	rt->pushback_ms = -1;
	if (rt->attempts == 1 && rt->kind != RPC_POLICY_NONE)
		balancer_retry_deposit(s->lb, rt->service_id, now, rt->budget_ratio,
				       rt->budget_min_per_s);
	if (rt->attempts == 1 && rt->kind == RPC_POLICY_HEDGE && !st->hedge_of)
		h2_hedge_start(st);
	if (!rt->per_try_ms || rt->try_timer)
		return;
	/* Never past the RPC's own deadline: that one answers first. */
	if (st->deadline_ms && st->deadline_ms <= now + rt->per_try_ms)
		return;
	rt->try_timer = loop_timer_add(s->ctx.loop, rt->per_try_ms, on_per_try_timeout, st);
}

/* A non-negative integer asks to wait that long; anything else (negative,
 * garbled) says not to retry at all (gRFC A6). */
void h2_retry_pushback(struct h2_stream *st, const uint8_t *v, size_t len)
{
	int64_t ms = 0;

	if (!len || len > 9) {
		st->rt.stopped = true;
		return;
	}
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9') {
			st->rt.stopped = true;
			return;
		}
		ms = ms * 10 + (v[i] - '0');
	}
	st->rt.pushback_ms = (int32_t)ms;
}

void h2_retry_answered(struct h2_stream *st)
{
	loop_timer_cancel(S(st)->ctx.loop, st->rt.try_timer);
	st->rt.try_timer = NULL;
}

void h2_retry_cancel(struct h2_stream *st)
{
	struct loop *l = S(st)->ctx.loop;

	loop_timer_cancel(l, st->rt.try_timer);
	loop_timer_cancel(l, st->rt.backoff_timer);
	st->rt.try_timer = st->rt.backoff_timer = NULL;
	h2_hedge_cancel(st);
}

static uint64_t rand_below(struct splitter *s, uint64_t n)
{
	uint64_t x = s->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	s->rng = x;
	return n ? x % n : 0;
}

/* Whether |st| may go to another attempt at all (the budget aside). */
static bool may_retry(const struct h2_stream *st, uint64_t now)
{
	const struct h2_retry *rt = &st->rt;

	return rt->kind == RPC_POLICY_RETRY && !rt->stopped && rt->attempts < rt->max_attempts &&
	       st->retaining && !st->req_dropped && !st->req_discard && !st->resp_hdrs_sent &&
	       !st->ds->c.dead && st->n_tried < H2_TRIED_MAX &&
	       (!st->deadline_ms || st->deadline_ms > now);
}

/* The wait before the next attempt: the pushback, else random(0, backoff)
 * with the backoff growing by the multiplier up to its ceiling (gRFC A6). */
static uint64_t next_delay(struct h2_stream *st)
{
	struct h2_retry *rt = &st->rt;
	double next;
	uint64_t d;

	if (rt->pushback_ms >= 0) {
		rt->backoff_ms = rt->initial_backoff_ms;
		return (uint64_t)rt->pushback_ms;
	}
	d = rand_below(S(st), rt->backoff_ms);
	next = rt->backoff_ms * rt->multiplier;
	rt->backoff_ms = next > rt->max_backoff_ms ? rt->max_backoff_ms
			 : next < 1		   ? 1
						   : (uint32_t)next;
	return d;
}

/* End the attempt in progress but keep the request for the next one: the
 * upstream stream is cancelled (unless already closed both ways) and
 * forgotten, its endpoint gets its verdict, the answer is dropped. */
void h2_retry_end_attempt(struct h2_stream *st)
{
	struct splitter *s = S(st);

	if (st->leg == H2_LEG_OPEN) {
		nghttp2_session *us = st->up->c.session;

		/* Not yet closed both ways (an answer still to come, or request
		 * bytes still to go): the upstream must hear it is cancelled. */
		if (nghttp2_session_get_stream_local_close(us, st->up_id) != 1 ||
		    nghttp2_session_get_stream_remote_close(us, st->up_id) != 1) {
			nghttp2_submit_rst_stream(us, NGHTTP2_FLAG_NONE, st->up_id, NGHTTP2_CANCEL);
			stats_inc(s->stats, ST_RESETS_SENT);
			h2_endpoint_event(s->ctx.metrics, st->ep, METRICS_EV_RESET_SENT);
		}
		nghttp2_session_set_stream_user_data(us, st->up_id, NULL);
		h2_conn_dirty(&st->up->c);
	} else {
		h2_route_forget(st);
		loop_timer_cancel(s->ctx.loop, st->pending_timer);
		st->pending_timer = NULL;
	}
	if (st->up)
		h2_upstream_unlink(st->up, st);
	h2_route_attempt_done(st);
	st->ds->retained -= st->req_sent;
	st->req_sent = 0;
	st->up_deferred = false;
	st->up_hdrs_sent = false;
	h2_hdrs_reset(&st->resp_hdrs);
	h2_hdrs_reset(&st->resp_trl);
	st->resp_hdrs_rcvd = false;
	st->resp_end = false;
	st->grpc_status = -1;
	st->resp_status = 0;
	st->leg = H2_LEG_NONE;
}

static void on_backoff_done(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_stream *st = arg;

	(void)l;
	(void)t;
	st->rt.backoff_timer = NULL;
	h2_route_queue(st);
	h2_conn_kick(&S(st)->io);
}

static const char *const reason_names[METRICS_RETRY_MAX] = {"unprocessed", "status", "reset",
							    "per_try_timeout"};

/* Send |st| to another attempt for |why|, if the policy, the deadline and
 * the budget allow. */
static bool retry(struct h2_stream *st, enum metrics_retry_reason why)
{
	struct splitter *s = S(st);
	struct h2_retry *rt = &st->rt;
	uint64_t now = loop_now_ms(), delay;
	char ep[64];

	if (!may_retry(st, now))
		return false;
	if (!balancer_retry_withdraw(s->lb, rt->service_id, now, rt->budget_ratio,
				     rt->budget_min_per_s)) {
		metrics_service_retry_budget_exhausted(s->ctx.metrics, rt->service_id);
		log_debug("stream_retry_budget_exhausted stream=%d service_id=%u", st->ds_id,
			  rt->service_id);
		return false;
	}
	delay = next_delay(st);
	if (st->deadline_ms && now + delay >= st->deadline_ms)
		return false; /* the RPC would be over before the retry left */
	log_debug("stream_retry stream=%d endpoint=%s reason=%s grpc_status=%d attempt=%u "
		  "delay_ms=%" PRIu64,
		  st->ds_id, h2_endpoint_str(st->ep, ep, sizeof(ep)), reason_names[why],
		  st->up_grpc_status, rt->attempts + 1, delay);
	loop_timer_cancel(s->ctx.loop, rt->try_timer);
	rt->try_timer = NULL;
	h2_endpoint_event(s->ctx.metrics, st->ep, METRICS_EV_RETRY);
	h2_retry_end_attempt(st);
	metrics_service_retry(s->ctx.metrics, rt->service_id, why);
	stats_inc(s->stats, ST_UPSTREAM_RETRIES);
	rt->tried_base = st->n_tried;
	rt->new_attempt = true;
	if (!delay) {
		h2_route_queue(st);
		return true;
	}
	rt->backoff_timer = loop_timer_add(s->ctx.loop, delay, on_backoff_done, st);
	if (!rt->backoff_timer)
		h2_route_queue(st);
	return true;
}

bool h2_retry_on_answer(struct h2_stream *st)
{
	int code = st->up_grpc_status;

	if (!st->grpc || code < 0 || code >= RPC_POLICY_GRPC_CODES || !(st->rt.codes & 1u << code))
		return false;
	return retry(st, METRICS_RETRY_STATUS);
}

bool h2_retry_on_failure(struct h2_stream *st, enum grpc_status status)
{
	if ((unsigned)status >= RPC_POLICY_GRPC_CODES || !(st->rt.codes & 1u << status) ||
	    st->resp_hdrs_rcvd)
		return false;
	return retry(st, METRICS_RETRY_RESET);
}

static void on_per_try_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_stream *st = arg;

	(void)l;
	(void)t;
	st->rt.try_timer = NULL;
	if (st->resp_hdrs_sent || st->rt.backoff_timer)
		return;
	if (h2_hedge_on_failure(st)) { /* hedged attempts go on without this one */
		h2_conn_kick(&S(st)->io);
		return;
	}
	if (!retry(st, METRICS_RETRY_PER_TRY_TIMEOUT)) {
		stats_inc(S(st)->stats, ST_DEADLINE_EXCEEDED);
		h2_reply_error(st, GRPC_DEADLINE_EXCEEDED, 504, "h2split: per-try timeout");
	}
	h2_conn_kick(&S(st)->io);
}
