// SPDX-License-Identifier: Apache-2.0
/*
 * Where a stream goes (see h2_route.h): the Service its connection dialled,
 * the balancer's pick, submitting it on an upstream connection, retries of
 * attempts surely not processed, the wait for room in a Service
 * (--pending-timeout) or for an endpoint to allow streams again, and each
 * attempt's verdict for outlier detection and latency (ewma).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"
#include "proxy/h2/grpc.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_endpoint.h"
#include "proxy/h2/h2_reply.h"
#include "proxy/h2/h2_retry.h"
#include "proxy/h2/h2_route.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"
#include "telemetry/metrics.h"

static struct splitter *S(const struct h2_stream *st)
{
	return st->ds->s;
}

static const char *svc_str(const struct state_service *svc, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s%s%s", svc->ns, svc->name, svc->port_name[0] ? ":" : "",
		 svc->port_name);
	return buf;
}

/* The family of the VIP the app dialled (an IPv4-mapped one is IPv4). */
static int vip_family(const struct sockaddr_storage *orig)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)orig;

	if (orig->ss_family == AF_INET)
		return AF_INET;
	if (orig->ss_family != AF_INET6)
		return AF_UNSPEC;
	return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) ? AF_INET : AF_INET6;
}

/* Record |o| for |ep| with the balancer; count and log an ejection. */
static void ep_report(struct h2_stream *st, struct balancer_endpoint *ep, uint64_t rtt_us,
		      enum balancer_outcome o)
{
	struct splitter *s = S(st);
	bool ejected = balancer_endpoint_report(s->lb, ep, loop_now_ms(), rtt_us, o);
	struct balancer_endpoint_info bi = balancer_endpoint_info(ep);
	char eps[64];

	h2_endpoint_publish(s->ctx.metrics, ep);
	if (!ejected)
		return;
	stats_inc(s->stats, ST_EJECTIONS);
	log_warn("endpoint_ejected endpoint=%s pod=%s ejections=%u for_ms=%" PRIu64,
		 h2_endpoint_str(ep, eps, sizeof(eps)), ep->pod, bi.ejections,
		 bi.ejected_until_ms - loop_now_ms());
}

/* How the attempt on st->ep went, as outlier detection and ewma see it:
 * UNAVAILABLE (or 502/503/504 without gRPC status), resets and lost
 * connections are failures; the client giving up first is no verdict. So is
 * a TCP connect that failed from the client pod's netns (--upstream-source
 * pod): a NetworkPolicy may deny that pod alone, and the backoff per client
 * netns deals with it; ejecting for everyone would punish the allowed pods.
 * A connection that TCP opened but that never spoke HTTP/2 (no SETTINGS in
 * time, garbage, a failed TLS handshake) is the endpoint's failure. */
static enum balancer_outcome attempt_outcome(const struct h2_stream *st)
{
	int hs = st->resp_status;

	if (st->up_failed)
		return BALANCER_FAILED;
	if (st->up_grpc_status == GRPC_UNAVAILABLE)
		return BALANCER_FAILED;
	if (st->up_grpc_status == GRPC_RESOURCE_EXHAUSTED)
		return BALANCER_OVERLOADED;
	if (!st->resp_hdrs_rcvd)
		return BALANCER_NO_VERDICT;
	if (st->up_grpc_status < 0 && (hs == 502 || hs == 503 || hs == 504))
		return BALANCER_FAILED;
	return st->up_rtt_us ? BALANCER_OK : BALANCER_NO_VERDICT;
}

/* The attempt on st->ep is over (retry or end of stream). */
void h2_route_attempt_done(struct h2_stream *st)
{
	struct splitter *s = st->ds->s;
	enum balancer_outcome o;
	uint64_t rtt_us;

	if (!st->ep)
		return;
	o = attempt_outcome(st);
	rtt_us = o == BALANCER_OK ? st->up_rtt_us : (loop_now_ns() - st->up_start_ns) / 1000;
	if (!st->up_netns_refused)
		ep_report(st, st->ep, rtt_us, o);
	metrics_endpoint_inflight(s->ctx.metrics, st->ep->service_id, &st->ep->ip, st->ep->port,
				  -1);
	balancer_stream_end(s->lb, st->ep);
	st->ep = NULL;
}

static void unqueue(struct h2_stream *st)
{
	if (st->q_prev)
		st->q_prev->q_next = st->q_next;
	else
		S(st)->route_q = st->q_next;
	if (st->q_next)
		st->q_next->q_prev = st->q_prev;
	else
		S(st)->route_tail = st->q_prev;
	st->q_next = st->q_prev = NULL;
	st->leg = H2_LEG_DONE;
}

void h2_route_queue(struct h2_stream *st)
{
	struct splitter *s = S(st);

	st->leg = H2_LEG_QUEUED;
	st->q_next = NULL;
	st->q_prev = s->route_tail;
	if (s->route_tail)
		s->route_tail->q_next = st;
	else
		s->route_q = st;
	s->route_tail = st;
}

/* Send |st| elsewhere: it was surely not processed where it went. */
void h2_route_retry(struct h2_stream *st, const char *why)
{
	char ep[64];

	log_debug("stream_retry stream=%d endpoint=%s why=\"%s\" attempt=%u", st->ds_id,
		  h2_endpoint_str(st->ep, ep, sizeof(ep)), why, st->n_tried + 1);
	if (st->up) {
		h2_upstream_unlink(st->up, st);
		st->up = NULL;
	}
	h2_endpoint_event(S(st)->ctx.metrics, st->ep, METRICS_EV_RETRY);
	metrics_service_retry(S(st)->ctx.metrics,
			      st->ep ? st->ep->service_id : st->ds->ci.od.service_id,
			      METRICS_RETRY_UNPROCESSED);
	h2_route_attempt_done(st);
	st->ds->retained -= st->req_sent;
	st->req_sent = 0;
	st->up_deferred = false;
	st->up_hdrs_sent = false;
	stats_inc(S(st)->stats, ST_UPSTREAM_RETRIES);
	h2_route_queue(st);
}

static void route(struct h2_stream *st);

/* Take |st| off the balancer's wait lists: false when it was on none. */
static bool unpend(struct h2_stream *st)
{
	struct splitter *s = S(st);

	if (!balancer_unwait(&st->wait))
		return false;
	metrics_service_pending(s->ctx.metrics, st->ds->ci.od.service_id, -1);
	if (st->leg == H2_LEG_PENDING)
		st->leg = H2_LEG_NONE;
	return true;
}

static void wake(struct balancer_waiter *w)
{
	struct h2_stream *st = (struct h2_stream *)((char *)w - offsetof(struct h2_stream, wait));
	struct splitter *s = S(st);

	metrics_service_pending(s->ctx.metrics, st->ds->ci.od.service_id, -1);
	st->waited = true;
	route(st); /* now, ahead of the streams in route_q: it came first */
}

static void cb_reject(struct h2_stream *st, enum metrics_cb_reason why, const char *name,
		      const char *what)
{
	struct splitter *s = S(st);
	char msg[320];

	metrics_circuit_breaker_rejection(s->ctx.metrics, st->ds->ci.od.service_id, why);
	snprintf(msg, sizeof(msg), "h2split: circuit breaker: %s %s", name, what);
	h2_reply_error(st, GRPC_UNAVAILABLE, 503, msg);
}

static void on_pending_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_stream *st = arg;
	struct splitter *s = S(st);
	const struct state_service *svc;
	char name[3 * STATE_NAME_MAX + 4];

	(void)l;
	(void)t;
	st->pending_timer = NULL;
	if (!unpend(st)) /* woken and answered meanwhile (every connect failed) */
		return;
	svc = s->snap ? state_find_id(s->snap->st, st->ds->ci.od.service_id) : NULL;
	if (svc)
		svc_str(svc, name, sizeof(name));
	else
		snprintf(name, sizeof(name), "service id %u", st->ds->ci.od.service_id);
	stats_limit_inc(s->stats, LIMIT_PENDING_TIMEOUT);
	cb_reject(st, METRICS_CB_TIMEOUT, name, "had no room within --pending-timeout");
	h2_conn_kick(&s->io);
}

/* Every candidate of |svc| is at its cap: wait for room, or fail fast when
 * the queue is full or the wait already ran out. A stream counts the cap
 * once, when it first finds no room (a woken one that finds none again
 * goes back to the front: the same wait). */
static void pend(struct h2_stream *st, const struct state_service *svc, const char *name)
{
	struct splitter *s = S(st);
	int err;

	if (!st->waited)
		stats_limit_inc(s->stats, balancer_full_cap(s->lb, svc->id) == BALANCER_CAP_SERVICE
					      ? LIMIT_INFLIGHT_PER_SERVICE
					      : LIMIT_INFLIGHT_PER_ENDPOINT);
	err = balancer_wait(s->lb, svc->id, &st->wait, st->waited);
	if (err) {
		stats_limit_inc(s->stats, LIMIT_PENDING);
		cb_reject(st, METRICS_CB_QUEUE_FULL, name,
			  "is at its in-flight limit and its pending queue is full");
		return;
	}
	st->leg = H2_LEG_PENDING;
	metrics_service_pending(s->ctx.metrics, svc->id, +1);
	if (!st->pending_timer)
		st->pending_timer = loop_timer_add(
		    s->ctx.loop, (uint64_t)s->cfg->pending_timeout_ms, on_pending_timeout, st);
	log_debug("stream_pending stream=%d service=%s waiting=%zu", st->ds_id, name,
		  balancer_waiting(s->lb, svc->id));
}

/* Routing. */

/* The connection's Service is unknown here: neither its id nor the VIP:port
 * the app dialled names one (retired long enough ago to be forgotten).
 * Nothing was sent upstream: REFUSED_STREAM says so (gRPC reports it as
 * UNAVAILABLE, which is safe to retry), and the GOAWAY makes the client
 * reconnect where the app aimed. */
static void refuse(struct h2_stream *st)
{
	stats_inc(S(st)->stats, ST_STREAMS_REFUSED_UNKNOWN);
	log_info("stream_refused stream=%d service_id=%u reason=unknown_service action=goaway",
		 st->ds_id, st->ds->ci.od.service_id);
	h2_stream_let_go(st);
	st->leg = H2_LEG_DONE;
	h2_stream_ds_reset(st, NGHTTP2_REFUSED_STREAM);
	h2_downstream_goaway(st->ds);
}

static int submit(struct h2_stream *st, struct balancer_endpoint *ep, const char *tls_host)
{
	struct splitter *s = S(st);
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = h2_stream_up_read};
	bool body = !st->req_end || st->req_body.len || st->req_trl.n;
	struct h2_upstream *uc;
	char prev[12];
	int err = 0;
	int32_t id;
	size_t n;

	uc = h2_upstream_get(s, ep, tls_host, st->ds->ci.netns, &err);
	if (!uc)
		return err;
	n = h2_hdrs_to_nv(&st->req_hdrs, s->nv, H2_HDRS_MAX_FIELDS);
	n = h2_retry_add_header(st, s->nv, n, prev);
	id = nghttp2_submit_request(uc->c.session, NULL, s->nv, n, body ? &prd : NULL, st);
	if (id < 0) {
		log_warn("upstream_submit_failed endpoint=%s err=\"%s\"", uc->name,
			 nghttp2_strerror(id));
		uc->pc.accepting = false; /* e.g. stream ids exhausted */
		return -EIO;
	}
	h2_upstream_link(uc, st, id);
	st->ep = ep;
	st->up_start_ns = loop_now_ns();
	st->up_rtt_us = 0;
	st->up_grpc_status = -1;
	st->up_failed = false;
	st->up_netns_refused = false;
	balancer_stream_start(s->lb, ep);
	metrics_endpoint_inflight(s->ctx.metrics, ep->service_id, &ep->ip, ep->port, +1);
	st->leg = H2_LEG_OPEN;
	st->up_deferred = false;
	h2_retry_submitted(st);
	h2_conn_dirty(&uc->c);
	return 0;
}

/* Endpoints that allow no streams now (SETTINGS_MAX_CONCURRENT_STREAMS 0)
 * that one routing of a stream passed over; they cost it no attempt. */
#define H2_BUSY_MAX 8

struct route_ctx {
	const struct state_service *svc;
	const char *tls_host; /* NULL: cleartext */
	struct balancer_endpoint *avoid[H2_TRIED_MAX + H2_BUSY_MAX];
	struct balancer_endpoint *busy[H2_BUSY_MAX];
	uint8_t n_busy;
};

static bool was_busy(const struct route_ctx *rc, const struct balancer_endpoint *ep)
{
	for (uint8_t i = 0; i < rc->n_busy; i++)
		if (rc->busy[i] == ep)
			return true;
	return false;
}

/* The next endpoint to try: neither tried nor found busy, unless nothing else
 * is left (the balancer's order); NULL when there is none, or when the only
 * ones left were found busy. */
static struct balancer_endpoint *route_pick(struct h2_stream *st, struct route_ctx *rc,
					    bool *saturated)
{
	struct splitter *s = S(st);
	struct balancer_pick p = {
	    .now_ms = loop_now_ms(),
	    .netns_id = h2_stream_client_netns(st),
	    .family = vip_family(&st->ds->ci.orig),
	    .avoid = rc->avoid,
	    .n_avoid = st->n_tried + rc->n_busy,
	    .waited = st->waited,
	    .health = s->ctx.health,
	};
	struct balancer_endpoint *ep;

	memcpy(rc->avoid, st->tried, st->n_tried * sizeof(rc->avoid[0]));
	memcpy(rc->avoid + st->n_tried, rc->busy, rc->n_busy * sizeof(rc->avoid[0]));
	ep = balancer_set_pick(s->lb, rc->svc, s->snap->generation, &p);
	*saturated = p.saturated;
	if (ep)
		metrics_service_routed(s->ctx.metrics, ep->service_id, ep->locality, p.failover);
	return ep && !was_busy(rc, ep) ? ep : NULL;
}

/* |ep| allows no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0). Nothing was
 * sent, so another endpoint may take the stream at no cost of an attempt;
 * but |ep| counts a failure, so that outlier ejection takes it out of the
 * picks rather than every stream finding it full first. */
static void found_busy(struct h2_stream *st, struct route_ctx *rc, struct balancer_endpoint *ep)
{
	char eps[64];

	rc->busy[rc->n_busy++] = ep;
	ep_report(st, ep, 0, BALANCER_FAILED);
	log_debug("stream_no_capacity stream=%d endpoint=%s", st->ds_id,
		  h2_endpoint_str(ep, eps, sizeof(eps)));
}

/* A connect to |ep| failed (|err|). */
static void connect_failed(struct h2_stream *st, struct balancer_endpoint *ep, int err)
{
	struct splitter *s = S(st);
	char eps[64];

	balancer_endpoint_connect_failed(ep, loop_now_ms(), h2_stream_client_netns(st));
	if (!h2_stream_client_netns(st)) /* else: the per-netns backoff's business */
		ep_report(st, ep, 0, BALANCER_FAILED);
	else
		h2_endpoint_publish(s->ctx.metrics, ep);
	h2_endpoint_event(s->ctx.metrics, ep, METRICS_EV_CONNECT_FAILURE);
	st->fail_why = "connect failed";
	log_debug("stream_connect_failed stream=%d endpoint=%s err=%d", st->ds_id,
		  h2_endpoint_str(ep, eps, sizeof(eps)), err);
}

static void on_capacity_wait(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_stream *st = arg;

	(void)l;
	(void)t;
	st->pending_timer = NULL;
	if (st->leg != H2_LEG_PENDING || !st->cap_waiting) /* answered meanwhile */
		return;
	st->cap_waiting = false;
	h2_route_queue(st);
	h2_conn_kick(&S(st)->io);
}

void h2_route_capacity_raised(struct splitter *s)
{
	for (struct h2_downstream *ds = s->ds_list; ds; ds = ds->next) {
		for (struct h2_stream *st = ds->streams; st; st = st->ds_next) {
			if (st->leg != H2_LEG_PENDING || !st->cap_waiting)
				continue;
			loop_timer_cancel(s->ctx.loop, st->pending_timer);
			st->pending_timer = NULL;
			st->cap_waiting = false;
			h2_route_queue(st);
		}
	}
}

/* Every endpoint left allows no streams now. RFC 9113 6.5.2 has servers say
 * 0 for short durations only: route once more when one raises its limit, or
 * after --pending-timeout (the longest wait for room), then give up. */
static bool wait_capacity(struct h2_stream *st)
{
	struct splitter *s = S(st);

	if (st->cap_waited)
		return false;
	/* A wait for room in the service (pend) that woke it is over. */
	loop_timer_cancel(s->ctx.loop, st->pending_timer);
	st->pending_timer =
	    loop_timer_add(s->ctx.loop, (uint64_t)s->cfg->pending_timeout_ms, on_capacity_wait, st);
	if (!st->pending_timer)
		return false;
	st->cap_waited = st->cap_waiting = true;
	st->leg = H2_LEG_PENDING;
	log_debug("stream_waits_for_capacity stream=%d", st->ds_id);
	return true;
}

/* No attempt of this routing succeeded: wait for capacity, or answer
 * UNAVAILABLE saying why. */
static void route_failed(struct h2_stream *st, struct route_ctx *rc)
{
	struct splitter *s = S(st);
	char name[3 * STATE_NAME_MAX + 4], msg[320], eps[64];

	if (rc->n_busy && wait_capacity(st))
		return;
	svc_str(rc->svc, name, sizeof(name));
	if (rc->n_busy) {
		snprintf(msg, sizeof(msg),
			 "h2split: no endpoint of %s has room (%s: it allows no streams, "
			 "SETTINGS_MAX_CONCURRENT_STREAMS 0)",
			 name, h2_endpoint_str(rc->busy[rc->n_busy - 1], eps, sizeof(eps)));
		h2_reply_error(st, GRPC_UNAVAILABLE, 503, msg);
		return;
	}
	if (!st->n_tried) {
		stats_inc(s->stats, ST_NO_ENDPOINT);
		snprintf(msg, sizeof(msg), "h2split: no ready endpoint for %s%s", name,
			 rc->svc->local_only ? " on this node (internalTrafficPolicy: Local)" : "");
		h2_reply_error(st, GRPC_UNAVAILABLE, 503, msg);
		return;
	}
	snprintf(msg, sizeof(msg),
		 "h2split: no endpoint of %s reachable after %u attempts (%s: %s)", name,
		 st->n_tried, h2_endpoint_str(st->tried[st->n_tried - 1], eps, sizeof(eps)),
		 st->fail_why ? st->fail_why : "failed");
	h2_reply_error(st, GRPC_UNAVAILABLE, 502, msg);
}

/* TLS upstreams are verified as the Service's own DNS name; NULL: plain. */
static const char *tls_host(const struct state_service *svc, char *buf, size_t len)
{
	if (!svc->upstream_tls)
		return NULL;
	snprintf(buf, len, "%s.%s.svc", svc->name, svc->ns);
	return buf;
}

static void route(struct h2_stream *st)
{
	struct splitter *s = S(st);
	const struct snapshot *snap = s->snap;
	struct route_ctx rc = {.svc = h2_route_service_of(snap, &st->ds->ci.od)};
	char name[3 * STATE_NAME_MAX + 4], eps[64], host[2 * STATE_NAME_MAX + 8];
	struct balancer_endpoint *ep;
	bool saturated;
	int err;

	st->leg = H2_LEG_NONE;
	st->cap_waiting = false;
	if (st->ds->c.dead) /* going away with its connection */
		return;
	if (!rc.svc) {
		refuse(st);
		return;
	}
	if (rc.svc->retired_ms || rc.svc->id != st->ds->ci.od.service_id)
		h2_downstream_retire(st->ds); /* reconnect: direct, or under its id */
	rc.tls_host = tls_host(rc.svc, host, sizeof(host));
	h2_retry_resolve(st, rc.svc);
	while (h2_stream_may_try(st) && rc.n_busy < H2_BUSY_MAX) {
		ep = route_pick(st, &rc, &saturated);
		if (!ep && saturated) {
			svc_str(rc.svc, name, sizeof(name));
			pend(st, rc.svc, name);
			return;
		}
		if (!ep)
			break;
		err = submit(st, ep, rc.tls_host);
		if (err == -EBUSY) {
			found_busy(st, &rc, ep);
			continue;
		}
		st->tried[st->n_tried++] = ep;
		if (!err) {
			loop_timer_cancel(s->ctx.loop, st->pending_timer);
			st->pending_timer = NULL;
			log_debug("stream_routed stream=%d endpoint=%s attempt=%u", st->ds_id,
				  h2_endpoint_str(ep, eps, sizeof(eps)), st->n_tried);
			return;
		}
		connect_failed(st, ep, err);
	}
	route_failed(st, &rc);
}

int h2_route_hedge(struct h2_stream *h, struct balancer_endpoint *const *avoid, size_t n_avoid)
{
	struct splitter *s = S(h);
	struct route_ctx rc = {.svc = h2_route_service_of(s->snap, &h->ds->ci.od)};
	char host[2 * STATE_NAME_MAX + 8], eps[64];
	struct balancer_endpoint *ep;
	bool saturated;
	int err;

	if (!rc.svc || rc.svc->retired_ms)
		return -ENOENT;
	rc.tls_host = tls_host(rc.svc, host, sizeof(host));
	h->n_tried = (uint8_t)(n_avoid < H2_TRIED_MAX ? n_avoid : H2_TRIED_MAX);
	memcpy(h->tried, avoid, h->n_tried * sizeof(h->tried[0]));
	h->waited = true; /* it does not queue behind new streams: it never waits */
	ep = route_pick(h, &rc, &saturated);
	if (!ep)
		return saturated ? -EBUSY : -ENOENT;
	err = submit(h, ep, rc.tls_host);
	if (err) {
		if (err != -EBUSY)
			connect_failed(h, ep, err);
		return err;
	}
	log_debug("stream_hedged stream=%d endpoint=%s attempt=%u", h->ds_id,
		  h2_endpoint_str(ep, eps, sizeof(eps)), h->rt.attempts);
	return 0;
}

/* Whether |svc| is still the Service the app dialled: an id is a hash, and
 * another Service may hold it now (a collision probed in another order), or
 * the Service may have been recreated with another ClusterIP. */
static bool dialled(const struct state_service *svc, const struct h2s_origdst *od)
{
	if (ntohs(od->port) != svc->port)
		return false;
	for (int i = 0; i < svc->n_vips && i < STATE_MAX_VIPS; i++)
		if (!memcmp(svc->vips[i].b, od->addr, sizeof(od->addr)))
			return true;
	return false;
}
const struct state_service *h2_route_service_of(const struct snapshot *snap,
						const struct h2s_origdst *od)
{
	const struct state_service *svc;
	struct h2s_ip vip;

	if (!snap)
		return NULL;
	svc = state_find_id(snap->st, od->service_id);
	if (svc && dialled(svc, od))
		return svc;
	memcpy(vip.b, od->addr, sizeof(vip.b));
	return state_find_vip(snap->st, &vip, ntohs(od->port));
}

void h2_route_forget(struct h2_stream *st)
{
	if (st->leg == H2_LEG_QUEUED)
		unqueue(st);
	unpend(st);
}

bool h2_route_step(struct splitter *s)
{
	struct balancer_waiter *w = balancer_woken(s->lb);
	struct h2_stream *st = s->route_q;

	if (w) { /* first come: before the new streams in route_q */
		wake(w);
		return true;
	}
	if (!st)
		return false;
	s->route_q = st->q_next;
	if (s->route_q)
		s->route_q->q_prev = NULL;
	else
		s->route_tail = NULL;
	st->q_next = NULL;
	route(st);
	return true;
}
