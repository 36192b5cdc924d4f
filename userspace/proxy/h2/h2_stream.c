// SPDX-License-Identifier: Apache-2.0
/*
 * The per-stream bridge (see h2_stream.h): routing to an endpoint, request
 * and response forwarding with flow control tied across the two sessions,
 * resets both ways, retries of streams that were surely not processed, and
 * the replies the splitter makes itself (Trailers-Only for gRPC).
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"
#include "kernel/netns.h"
#include "proxy/h2/grpc.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"
#include "telemetry/metrics.h"

static struct splitter *S(const struct h2_stream *st)
{
	return st->ds->c.s;
}

static nghttp2_session *ds_session(const struct h2_stream *st)
{
	return st->ds->c.session;
}

static ssize_t ds_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
		       uint32_t *flags, nghttp2_data_source *src, void *ud);
static const char *ep_str(const struct balancer_endpoint *ep, char *buf, size_t len);
static const char *svc_str(const struct state_service *svc, char *buf, size_t len);

/* The client's netns as pools and backoff know it (0: the daemon's). */
static uint64_t client_netns(const struct h2_stream *st)
{
	const struct config *cfg = st->ds->c.s->cfg;

	return !cfg || cfg->upstream_source_pod ? netns_ref_id(st->ds->ci.netns) : 0;
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

static void ep_event(struct h2_stream *st, enum metrics_upstream_event ev)
{
	struct metrics *m = st->ds->c.s->w->metrics;

	if (m && st->ep)
		metrics_upstream_event(m, st->ep->service_id, &st->ep->ip, st->ep->port, ev);
}

/* Show what the balancer now thinks of |ep| on /endpoints and /metrics. */
static void ep_publish(struct splitter *s, const struct balancer_endpoint *ep)
{
	struct balancer_endpoint_info bi = balancer_endpoint_info(ep);
	struct metrics_endpoint_health h = {
	    .ejected_until_ms = bi.ejected_until_ms,
	    .backoff_until_ms = bi.backoff_until_ms,
	    .consec_failures = bi.consec_failures,
	    .ejections = bi.ejections,
	    .ewma_us = bi.latency_us,
	    .jitter_us = bi.jitter_us,
	    .warm_until_ms = bi.warm_until_ms,
	};

	if (s->w->metrics)
		metrics_endpoint_health(s->w->metrics, ep->service_id, &ep->ip, ep->port, &h);
}

/* Record |o| for |ep| with the balancer; count and log an ejection. */
static void ep_report(struct h2_stream *st, struct balancer_endpoint *ep, uint64_t rtt_us,
		      enum balancer_outcome o)
{
	struct splitter *s = S(st);
	bool ejected = balancer_endpoint_report(s->lb, ep, loop_now_ms(), rtt_us, o);
	struct balancer_endpoint_info bi = balancer_endpoint_info(ep);
	char eps[64];

	ep_publish(s, ep);
	if (!ejected)
		return;
	stats_inc(s->stats, ST_EJECTIONS);
	log_warn("endpoint_ejected endpoint=%s pod=%s ejections=%u for_ms=%" PRIu64,
		 ep_str(ep, eps, sizeof(eps)), ep->pod, bi.ejections,
		 bi.ejected_until_ms - loop_now_ms());
}

/* The latency ewma measures: to the first response byte of the body, or the
 * end of the response. Not to the headers: gRPC servers may send those at
 * once (initial metadata) and take their time over the message. From when
 * the request could leave: a stream that waited for its connection to open
 * would charge a pod new to this worker (scale-out) the connect and TLS
 * handshake, and ewma would shun the pod it should fill. */
static void first_answer(struct h2_stream *st)
{
	uint64_t from = st->up_start_ns;

	if (st->up && st->up->open_ns > from)
		from = st->up->open_ns;
	if (!st->up_rtt_us)
		st->up_rtt_us = (loop_now_ns() - from) / 1000 + 1; /* nonzero: came */
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
static void ep_release(struct h2_stream *st)
{
	struct splitter *s = st->ds->c.s;
	enum balancer_outcome o;
	uint64_t rtt_us;

	if (!st->ep)
		return;
	o = attempt_outcome(st);
	rtt_us = o == BALANCER_OK ? st->up_rtt_us : (loop_now_ns() - st->up_start_ns) / 1000;
	if (!st->up_netns_refused)
		ep_report(st, st->ep, rtt_us, o);
	if (s->w->metrics)
		metrics_endpoint_inflight(s->w->metrics, st->ep->service_id, &st->ep->ip,
					  st->ep->port, -1);
	balancer_stream_end(s->lb, st->ep);
	st->ep = NULL;
}

static void ds_consume(struct h2_stream *st, size_t n)
{
	if (!n)
		return;
	nghttp2_session_consume(ds_session(st), st->ds_id, n);
	h2_conn_dirty(&st->ds->c);
}

bool h2_stream_hold_conn_window(struct h2_stream *st, size_t len)
{
	if (st->ds->up_window_held + len > H2_CLIENT_CONN_SHARE)
		return false;
	st->ds->up_window_held += len;
	st->up_conn_owed += len;
	return true;
}

void h2_stream_conn_window_given_back(struct h2_stream *st, size_t n)
{
	st->up_conn_owed -= n;
	st->ds->up_window_held -= n;
}

static void up_consume(struct h2_stream *st, size_t n)
{
	if (n && st->up)
		h2_upstream_consume(st->up, st, n);
}

static void ds_reset(struct h2_stream *st, uint32_t code)
{
	nghttp2_submit_rst_stream(ds_session(st), NGHTTP2_FLAG_NONE, st->ds_id, code);
	stats_inc(S(st)->stats, ST_RESETS_SENT);
	h2_conn_dirty(&st->ds->c);
}

static void resume_up(struct h2_stream *st)
{
	if (st->leg != H2_LEG_OPEN || !st->up_deferred)
		return;
	st->up_deferred = false;
	nghttp2_session_resume_data(st->up->c.session, st->up_id);
	h2_conn_dirty(&st->up->c);
}

static void resume_ds(struct h2_stream *st)
{
	if (!st->ds_deferred)
		return;
	st->ds_deferred = false;
	nghttp2_session_resume_data(ds_session(st), st->ds_id);
	h2_conn_dirty(&st->ds->c);
}

/* Drop the request bytes held for a retry: from now on the request cannot be
 * sent again, and the client gets its window back. */
static void release_retention(struct h2_stream *st)
{
	st->retaining = false;
	if (!st->req_sent)
		return;
	h2_chain_drop(&st->req_body, &S(st)->blocks, st->req_sent);
	ds_consume(st, st->req_sent);
	st->ds->retained -= st->req_sent;
	st->req_sent = 0;
	st->req_dropped = true;
}

/* The request is of no more use (the response is complete or made up here):
 * drop what is buffered and whatever still arrives. */
static void discard_request(struct h2_stream *st)
{
	release_retention(st);
	ds_consume(st, st->req_body.len);
	h2_chain_clear(&st->req_body, &S(st)->blocks);
	st->req_discard = true;
}

static bool retryable(const struct h2_stream *st)
{
	return !st->req_dropped && !st->req_discard && !st->resp_hdrs_rcvd &&
	       st->n_tried < H2_MAX_ATTEMPTS;
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

/* Stop the upstream stream (RST_STREAM |code|) and stop hearing about it:
 * its user data goes NULL, so later upstream callbacks see no stream. */
static void abandon_upstream(struct h2_stream *st, uint32_t code)
{
	if (st->leg != H2_LEG_OPEN)
		return;
	nghttp2_submit_rst_stream(st->up->c.session, NGHTTP2_FLAG_NONE, st->up_id, code);
	nghttp2_session_set_stream_user_data(st->up->c.session, st->up_id, NULL);
	stats_inc(S(st)->stats, ST_RESETS_SENT);
	ep_event(st, METRICS_EV_RESET_SENT);
	h2_conn_dirty(&st->up->c);
	st->leg = H2_LEG_DONE;
	release_retention(st);
}

static const char *ep_str(const struct balancer_endpoint *ep, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (!ep) {
		snprintf(buf, len, "-");
		return buf;
	}
	h2s_ip_str(&ep->ip, ip, sizeof(ip));
	snprintf(buf, len, h2s_ip_is_v4(&ep->ip) ? "%s:%u" : "[%s]:%u", ip, ep->port);
	return buf;
}

static int submit_local_http(struct h2_stream *st, int http_status, const char *msg)
{
	static const char ct[] = "text/plain; charset=utf-8";
	nghttp2_data_provider prd;
	char status[8], clen[24];
	nghttp2_nv nv[3];
	int n;

	n = asprintf(&st->local_body, "%s\n", msg);
	if (n < 0) {
		st->local_body = NULL;
		return -ENOMEM;
	}
	st->local_len = (size_t)n;
	snprintf(status, sizeof(status), "%d", http_status);
	snprintf(clen, sizeof(clen), "%d", n);
	nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), 0};
	nv[1] = (nghttp2_nv){(uint8_t *)"content-type", (uint8_t *)ct, 12, sizeof(ct) - 1, 0};
	nv[2] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)clen, 14, strlen(clen), 0};
	prd.source.ptr = st;
	prd.read_callback = ds_read;
	return nghttp2_submit_response(ds_session(st), st->ds_id, nv, 3, &prd);
}

/* Answer the stream ourselves: Trailers-Only |grpc_status| for gRPC, HTTP
 * |http_status| otherwise; trailers or a reset when headers already went out. */
static bool unpend(struct h2_stream *st);

/* An answered stream waits for nothing more: not for the end of the pass
 * (route_q), not for a free endpoint (the balancer's queue), not for its
 * upstream; the request bytes it held go back to the client's window. */
static void let_go(struct h2_stream *st)
{
	if (st->leg == H2_LEG_QUEUED)
		unqueue(st);
	unpend(st);
	abandon_upstream(st, NGHTTP2_CANCEL);
	discard_request(st);
}

static void reply_error(struct h2_stream *st, enum grpc_status grpc_status, int http_status,
			const char *msg)
{
	struct grpc_trailers_only t;
	int rv = 0;

	let_go(st);
	st->leg = H2_LEG_DONE;
	log_debug("stream_reply stream=%d grpc=%d status=%d msg=\"%s\"", st->ds_id, st->grpc,
		  st->grpc ? (int)grpc_status : http_status, msg);
	if (st->resp_end && st->resp_hdrs_sent)
		return; /* the whole response is here already: let it finish */
	if (!st->resp_hdrs_sent) {
		st->resp_hdrs_sent = true;
		st->resp_end = true;
		if (st->grpc) {
			size_t n = grpc_trailers_only_build(&t, grpc_status, msg);

			st->resp_status = 200;
			st->grpc_status = (int)grpc_status;
			rv = nghttp2_submit_response(ds_session(st), st->ds_id, t.nv, n, NULL);
		} else {
			st->resp_status = http_status;
			rv = submit_local_http(st, http_status, msg);
		}
		if (rv) {
			stats_inc(S(st)->stats, ST_UNEXPECTED);
			ds_reset(st, NGHTTP2_INTERNAL_ERROR);
		}
		h2_conn_dirty(&st->ds->c);
		return;
	}
	if (!st->grpc) {
		ds_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	/* Headers are out: end the body with gRPC trailers instead. */
	grpc_trailers_only_build(&t, grpc_status, msg);
	h2_hdrs_reset(&st->resp_trl);
	for (int i = 0; i < GRPC_TRAILERS_LEN; i++) {
		const nghttp2_nv *nv = &GRPC_TRAILERS(&t)[i];

		if (h2_hdrs_add(&st->resp_trl, nv->name, nv->namelen, nv->value, nv->valuelen, 0)) {
			ds_reset(st, NGHTTP2_INTERNAL_ERROR);
			return;
		}
	}
	st->grpc_status = (int)grpc_status;
	st->resp_end = true;
	resume_ds(st);
}

static void queue_route(struct h2_stream *st)
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
static void retry(struct h2_stream *st, const char *why)
{
	char ep[64];

	log_debug("stream_retry stream=%d endpoint=%s why=\"%s\" attempt=%u", st->ds_id,
		  ep_str(st->ep, ep, sizeof(ep)), why, st->n_tried + 1);
	if (st->up) {
		h2_upstream_unlink(st->up, st);
		st->up = NULL;
	}
	ep_event(st, METRICS_EV_RETRY);
	ep_release(st);
	st->ds->retained -= st->req_sent;
	st->req_sent = 0;
	st->up_deferred = false;
	st->up_hdrs_sent = false;
	stats_inc(S(st)->stats, ST_UPSTREAM_RETRIES);
	queue_route(st);
}

/* Take |st| off the balancer's wait lists: false when it was on none. */
static bool unpend(struct h2_stream *st)
{
	struct splitter *s = S(st);

	if (!balancer_unwait(&st->wait))
		return false;
	if (s->w->metrics)
		metrics_service_pending(s->w->metrics, st->ds->ci.od.service_id, -1);
	if (st->leg == H2_LEG_PENDING)
		st->leg = H2_LEG_NONE;
	return true;
}

void h2_stream_wake(struct balancer_waiter *w)
{
	struct h2_stream *st = (struct h2_stream *)((char *)w - offsetof(struct h2_stream, wait));
	struct splitter *s = S(st);

	if (s->w->metrics)
		metrics_service_pending(s->w->metrics, st->ds->ci.od.service_id, -1);
	st->waited = true;
	h2_stream_route(st); /* now, ahead of the streams in route_q: it came first */
}

static void cb_reject(struct h2_stream *st, enum metrics_cb_reason why, const char *name,
		      const char *what)
{
	struct splitter *s = S(st);
	char msg[320];

	if (s->w->metrics)
		metrics_circuit_breaker_rejection(s->w->metrics, st->ds->ci.od.service_id, why);
	snprintf(msg, sizeof(msg), "h2split: circuit breaker: %s %s", name, what);
	reply_error(st, GRPC_UNAVAILABLE, 503, msg);
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
	svc = s->w->snap ? state_find_id(s->w->snap->st, st->ds->ci.od.service_id) : NULL;
	if (svc)
		svc_str(svc, name, sizeof(name));
	else
		snprintf(name, sizeof(name), "service id %u", st->ds->ci.od.service_id);
	stats_limit_inc(s->stats, LIMIT_PENDING_TIMEOUT);
	cb_reject(st, METRICS_CB_TIMEOUT, name, "had no room within --pending-timeout");
	splitter_kick(s);
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
	if (s->w->metrics)
		metrics_service_pending(s->w->metrics, svc->id, +1);
	if (!st->pending_timer)
		st->pending_timer =
		    loop_timer_add(s->w->loop, s->cfg ? (uint64_t)s->cfg->pending_timeout_ms : 1000,
				   on_pending_timeout, st);
	log_debug("stream_pending stream=%d service=%s waiting=%zu", st->ds_id, name,
		  balancer_waiting(s->lb, svc->id));
}

static void on_deadline(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_stream *st = arg;
	struct splitter *s = S(st);

	(void)l;
	(void)t;
	st->deadline = NULL;
	if (!st->resp_end) {
		stats_inc(s->stats, ST_DEADLINE_EXCEEDED);
		reply_error(st, GRPC_DEADLINE_EXCEEDED, 504, "h2split: deadline exceeded");
	}
	splitter_kick(s);
}

static void start_deadline(struct h2_stream *st)
{
	const char *err = NULL;
	uint64_t ns, ms;
	size_t vl;
	const uint8_t *v = h2_hdrs_get(&st->req_hdrs, "grpc-timeout", &vl);

	if (!v)
		return;
	if (grpc_timeout_parse(v, vl, &ns, &err)) {
		log_debug("stream_bad_grpc_timeout stream=%d err=\"%s\"", st->ds_id, err);
		return;
	}
	ms = ns / 1000000 + (ns % 1000000 != 0);
	if (ms > 366ull * 24 * 3600 * 1000) /* no deadline worth a timer */
		return;
	st->deadline = loop_timer_add(S(st)->w->loop, ms, on_deadline, st);
}

/* A zeroed stream, from the pool when it has one: its header blocks keep
 * their (small) arenas, so a typical stream allocates nothing here. */
static struct h2_stream *stream_get(struct splitter *s)
{
	struct h2_stream *st = s->stream_pool;
	struct h2_hdrs rh, rt, sh, sd;

	if (!st)
		return calloc(1, sizeof(*st));
	s->stream_pool = st->ds_next;
	s->n_stream_pool--;
	rh = st->req_hdrs;
	rt = st->req_trl;
	sh = st->resp_hdrs;
	sd = st->resp_trl;
	memset(st, 0, sizeof(*st));
	st->req_hdrs = rh;
	st->req_trl = rt;
	st->resp_hdrs = sh;
	st->resp_trl = sd;
	return st;
}

/* Under ASan nothing is pooled, so a stale pointer to a freed stream is
 * caught rather than quietly pointing at the next one. */
#if defined(__SANITIZE_ADDRESS__)
#define POOL_STREAMS 0
#else
#define POOL_STREAMS 1
#endif

static void stream_put(struct splitter *s, struct h2_stream *st)
{
	if (!POOL_STREAMS || s->n_stream_pool >= H2_STREAMS_KEEP) {
		h2_hdrs_clear(&st->req_hdrs);
		h2_hdrs_clear(&st->req_trl);
		h2_hdrs_clear(&st->resp_hdrs);
		h2_hdrs_clear(&st->resp_trl);
		free(st);
		return;
	}
	h2_hdrs_reset(&st->req_hdrs);
	h2_hdrs_reset(&st->req_trl);
	h2_hdrs_reset(&st->resp_hdrs);
	h2_hdrs_reset(&st->resp_trl);
	st->ds_next = s->stream_pool;
	s->stream_pool = st;
	s->n_stream_pool++;
}

void h2_stream_pool_fini(struct splitter *s)
{
	s->n_stream_pool = 0; /* stream_put() frees from here on */
	while (s->stream_pool) {
		struct h2_stream *st = s->stream_pool;

		s->stream_pool = st->ds_next;
		stream_put(s, st);
	}
}

struct h2_stream *h2_stream_new(struct h2_downstream *ds, int32_t id)
{
	struct h2_stream *st = stream_get(ds->c.s);

	if (!st)
		return NULL;
	st->ds = ds;
	st->ds_id = id;
	st->grpc_status = -1;
	st->up_grpc_status = -1;
	st->retaining = true;
	st->start_ns = loop_now_ns();
	st->ds_next = ds->streams;
	if (ds->streams)
		ds->streams->ds_prev = st;
	ds->streams = st;
	stats_inc(ds->c.s->stats, ST_STREAMS_TOTAL);
	stats_inc(ds->c.s->stats, ST_STREAMS_ACTIVE);
	return st;
}

int h2_stream_ds_header(struct h2_stream *st, bool trailer, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen, uint8_t flags)
{
	if (h2_header_is_hop_by_hop(name, nlen, value, vlen))
		return 0;
	if (!trailer && nlen == 12 && !memcmp(name, "content-type", 12))
		st->grpc = grpc_is_content_type(value, vlen);
	if (h2_hdrs_add(trailer ? &st->req_trl : &st->req_hdrs, name, nlen, value, vlen, flags))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

void h2_stream_ds_headers_done(struct h2_stream *st, bool trailer, bool end_stream)
{
	if (trailer) {
		h2_stream_ds_end(st);
		return;
	}
	st->req_end = end_stream;
	start_deadline(st);
	/* Routed at the end of the pass: a stream reset within the same read
	 * (rapid reset) never costs an upstream stream, and DATA that came with
	 * the HEADERS is there to go out with them. */
	queue_route(st);
}

void h2_stream_ds_data(struct h2_stream *st, const uint8_t *data, size_t len)
{
	if (st->req_discard) {
		ds_consume(st, len);
		return;
	}
	if (h2_chain_append(&st->req_body, &S(st)->blocks, data, len)) {
		ds_consume(st, len);
		reply_error(st, GRPC_UNAVAILABLE, 503, "h2split: out of memory");
		return;
	}
	st->req_bytes += len;
	resume_up(st);
}

void h2_stream_ds_end(struct h2_stream *st)
{
	st->req_end = true;
	resume_up(st);
}

void h2_stream_ds_end_sent(struct h2_stream *st)
{
	/* RFC 9113 8.1: a complete response may cut an unfinished request short. */
	if (st->req_discard && !st->req_end) {
		nghttp2_submit_rst_stream(ds_session(st), NGHTTP2_FLAG_NONE, st->ds_id,
					  NGHTTP2_NO_ERROR);
		h2_conn_dirty(&st->ds->c);
	}
}

static void access_log(struct h2_stream *st, uint32_t code)
{
	const uint8_t *m, *p, *a;
	size_t ml, pl, al;
	char ep[64];

	m = h2_hdrs_get(&st->req_hdrs, ":method", &ml);
	p = h2_hdrs_get(&st->req_hdrs, ":path", &pl);
	a = h2_hdrs_get(&st->req_hdrs, ":authority", &al);
	log_info("access_log client=%s method=%.*s authority=%.*s path=%.*s endpoint=%s status=%d "
		 "grpc_status=%d reset=%u attempts=%u req_bytes=%" PRIu64 " resp_bytes=%" PRIu64
		 " duration_us=%" PRIu64,
		 st->ds->peer, (int)ml, m ? (const char *)m : "", (int)al, a ? (const char *)a : "",
		 (int)pl, p ? (const char *)p : "",
		 ep_str(st->ep ? st->ep : (st->n_tried ? st->tried[st->n_tried - 1] : NULL), ep,
			sizeof(ep)),
		 st->resp_status, st->grpc_status, code, st->n_tried, st->req_bytes, st->resp_bytes,
		 (loop_now_ns() - st->start_ns) / 1000);
}

/* Let go of everything; |ds_alive|: the downstream session goes on. */
static void stream_free(struct h2_stream *st, bool ds_alive, uint32_t code)
{
	struct splitter *s = S(st);
	struct h2_downstream *ds = st->ds;

	if (s->cfg && s->cfg->access_log)
		access_log(st, code);
	loop_timer_cancel(s->w->loop, st->deadline);
	loop_timer_cancel(s->w->loop, st->pending_timer);
	if (st->leg == H2_LEG_QUEUED)
		unqueue(st);
	unpend(st);
	abandon_upstream(st, NGHTTP2_CANCEL);
	if (st->up) {
		up_consume(st, st->resp_body.len);
		h2_upstream_unlink(st->up, st);
	}
	if (ds_alive)
		ds_consume(st, st->req_body.len);
	ds->retained -= st->req_sent;
	if (s->w->metrics)
		metrics_stream_done(s->w->metrics, ds->ci.od.service_id,
				    st->ep ? &st->ep->ip : NULL, st->ep ? st->ep->port : 0,
				    st->grpc ? st->grpc_status : -1, st->resp_status,
				    loop_now_ns() - st->start_ns, st->req_bytes, st->resp_bytes);
	if (s->w->metrics) {
		struct metrics_call mc = {
		    .cgroup_id = ds->ci.od.cgroup_id,
		    .service_id = ds->ci.od.service_id,
		    .ep_ip = st->ep ? &st->ep->ip : NULL,
		    .ep_port = st->ep ? st->ep->port : 0,
		    .grpc_status = st->grpc ? st->grpc_status : -1,
		    .http_status = st->resp_status,
		    .start_ns = st->start_ns,
		    .end_ns = loop_now_ns(),
		    .bytes_in = st->req_bytes,
		    .bytes_out = st->resp_bytes,
		};

		mc.path = h2_hdrs_get(&st->req_hdrs, ":path", &mc.path_len);
		metrics_call_done(s->w->metrics, s->w->snap ? s->w->snap->st : NULL, &mc);
	}
	ep_release(st);
	h2_chain_clear(&st->req_body, &s->blocks);
	h2_chain_clear(&st->resp_body, &s->blocks);
	free(st->local_body);
	if (st->ds_prev)
		st->ds_prev->ds_next = st->ds_next;
	else
		ds->streams = st->ds_next;
	if (st->ds_next)
		st->ds_next->ds_prev = st->ds_prev;
	stats_dec(s->stats, ST_STREAMS_ACTIVE);
	stream_put(s, st);
}

void h2_stream_ds_closed(struct h2_stream *st, uint32_t error_code)
{
	log_debug("stream_closed stream=%d code=%u status=%d grpc_status=%d", st->ds_id, error_code,
		  st->resp_status, st->grpc_status);
	stream_free(st, true, error_code);
}

void h2_stream_free_detached(struct h2_stream *st)
{
	stream_free(st, false, NGHTTP2_CANCEL);
}

/* Data providers. Both hand out bytes with NO_COPY: the send_data callbacks
 * copy them straight from the chain into the write buffer, then drop them
 * and consume them on the session they came from. */
static ssize_t ds_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
		       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
	size_t avail, n;

	(void)buf;
	(void)src;
	(void)ud;
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	avail = st->local_body ? st->local_len - st->local_off : st->resp_body.len;
	if (!avail && !st->resp_end) {
		st->ds_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	n = avail < length ? avail : length;
	if (n)
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == avail && st->resp_end) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (st->resp_trl.n) {
			size_t k = h2_hdrs_to_nv(&st->resp_trl, S(st)->nv, H2_HDRS_MAX_FIELDS);

			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (nghttp2_submit_trailer(session, id, S(st)->nv, k))
				stats_inc(S(st)->stats, ST_UNEXPECTED);
			h2_hdrs_reset(&st->resp_trl);
		}
	}
	return (ssize_t)n;
}

static ssize_t up_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
		       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct h2_stream *st = nghttp2_session_get_stream_user_data(session, id);
	size_t avail, n;

	(void)buf;
	(void)src;
	(void)ud;
	if (!st) /* let go of: an RST_STREAM is queued */
		return NGHTTP2_ERR_DEFERRED;
	avail = st->req_body.len - st->req_sent;
	if (!avail && !st->req_end) {
		st->up_deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	n = avail < length ? avail : length;
	if (n)
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	if (n == avail && st->req_end) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (st->req_trl.n) { /* kept: a retry sends them again */
			size_t k = h2_hdrs_to_nv(&st->req_trl, S(st)->nv, H2_HDRS_MAX_FIELDS);

			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (nghttp2_submit_trailer(session, id, S(st)->nv, k))
				stats_inc(S(st)->stats, ST_UNEXPECTED);
		}
	}
	return (ssize_t)n;
}

/* Frame room for a DATA frame, padding included; NULL: would block. */
static uint8_t *frame_start(struct splitter *s, const nghttp2_frame *frame, const uint8_t *framehd,
			    size_t length, size_t *total)
{
	size_t pad = frame->data.padlen;
	uint8_t *p;

	*total = 9 + length + pad;
	p = h2_conn_frame_room(s, length + pad);
	if (!p)
		return NULL;
	memcpy(p, framehd, 9);
	p += 9;
	if (pad)
		*p++ = (uint8_t)(pad - 1);
	return p;
}

static void frame_end(struct splitter *s, uint8_t *p, const nghttp2_frame *frame, size_t total)
{
	if (frame->data.padlen > 1)
		memset(p, 0, frame->data.padlen - 1);
	s->wlen += total;
}

int h2_stream_ds_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
			   size_t length, nghttp2_data_source *source, void *user_data)
{
	struct h2_conn *c = user_data;
	struct h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	size_t total;
	uint8_t *p;

	(void)source;
	if (!st) {
		stats_inc(c->s->stats, ST_UNEXPECTED);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	p = frame_start(c->s, frame, framehd, length, &total);
	if (!p)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (st->local_body) {
		memcpy(p, st->local_body + st->local_off, length);
		st->local_off += length;
	} else {
		h2_chain_copy(&st->resp_body, 0, p, length);
		h2_chain_drop(&st->resp_body, &c->s->blocks, length);
		up_consume(st, length);
	}
	frame_end(c->s, p + length, frame, total);
	return 0;
}

int h2_stream_us_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
			   size_t length, nghttp2_data_source *source, void *user_data)
{
	struct h2_conn *c = user_data;
	struct h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	size_t total;
	uint8_t *p;

	(void)source;
	if (!st) /* let go of while this frame waited for room */
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	p = frame_start(c->s, frame, framehd, length, &total);
	if (!p)
		return NGHTTP2_ERR_WOULDBLOCK;
	h2_chain_copy(&st->req_body, st->req_sent, p, length);
	frame_end(c->s, p + length, frame, total);
	if (st->retaining) {
		st->req_sent += length;
		st->ds->retained += length;
		if (st->req_sent > H2_RETAIN_MAX || st->ds->retained > H2_RETAIN_CONN_MAX)
			release_retention(st);
	} else {
		h2_chain_drop(&st->req_body, &c->s->blocks, length);
		ds_consume(st, length);
		st->req_dropped = true;
	}
	return 0;
}

/* Upstream side. */
int h2_stream_us_header(struct h2_stream *st, bool trailer, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen, uint8_t flags)
{
	if (h2_header_is_hop_by_hop(name, nlen, value, vlen))
		return 0;
	if (nlen == 11 && !memcmp(name, "grpc-status", 11) && vlen && vlen < 4) {
		st->grpc_status = atoi((const char *)value) * (value[0] >= '0' && value[0] <= '9');
		st->up_grpc_status = st->grpc_status;
	}
	if (h2_hdrs_add(trailer ? &st->resp_trl : &st->resp_hdrs, name, nlen, value, vlen, flags))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

void h2_stream_us_headers_done(struct h2_stream *st, bool trailer, bool end_stream)
{
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = ds_read};
	const uint8_t *status;
	size_t sl, n;

	if (trailer) {
		h2_stream_us_end(st);
		return;
	}
	status = h2_hdrs_get(&st->resp_hdrs, ":status", &sl);
	if (status && sl == 3 && status[0] == '1') {
		/* Interim (100 Continue, 103 Early Hints): forwarded as it came. */
		n = h2_hdrs_to_nv(&st->resp_hdrs, S(st)->nv, H2_HDRS_MAX_FIELDS);
		if (!st->resp_hdrs_sent &&
		    nghttp2_submit_headers(ds_session(st), NGHTTP2_FLAG_NONE, st->ds_id, NULL,
					   S(st)->nv, n, NULL) < 0)
			stats_inc(S(st)->stats, ST_UNEXPECTED);
		h2_hdrs_reset(&st->resp_hdrs);
		h2_conn_dirty(&st->ds->c);
		return;
	}
	st->resp_hdrs_rcvd = true;
	if (end_stream)
		first_answer(st);
	if (st->ep)
		balancer_endpoint_ok(st->ep);
	release_retention(st);
	st->resp_end = end_stream;
	st->resp_status = status && sl == 3 ? atoi((const char *)status) % 1000 : 0;
	n = h2_hdrs_to_nv(&st->resp_hdrs, S(st)->nv, H2_HDRS_MAX_FIELDS);
	if (nghttp2_submit_response(ds_session(st), st->ds_id, S(st)->nv, n,
				    end_stream ? NULL : &prd)) {
		stats_inc(S(st)->stats, ST_UNEXPECTED);
		abandon_upstream(st, NGHTTP2_INTERNAL_ERROR);
		ds_reset(st, NGHTTP2_INTERNAL_ERROR);
	}
	st->resp_hdrs_sent = true;
	h2_hdrs_reset(&st->resp_hdrs);
	h2_conn_dirty(&st->ds->c);
}

void h2_stream_us_data(struct h2_stream *st, const uint8_t *data, size_t len)
{
	first_answer(st);
	if (h2_chain_append(&st->resp_body, &S(st)->blocks, data, len)) {
		up_consume(st, len);
		abandon_upstream(st, NGHTTP2_INTERNAL_ERROR);
		ds_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	st->resp_bytes += len;
	resume_ds(st);
}

void h2_stream_us_end(struct h2_stream *st)
{
	first_answer(st);
	st->resp_end = true;
	resume_ds(st);
}

void h2_stream_us_headers_sent(struct h2_stream *st)
{
	st->up_hdrs_sent = true;
}

void h2_stream_us_closed(struct h2_stream *st, uint32_t error_code)
{
	char ep[64];

	st->leg = H2_LEG_DONE;
	if (st->resp_end) {
		/* Done upstream; the rest of the request, if any, is not wanted. */
		if (!st->req_end || st->req_body.len > st->req_sent)
			discard_request(st);
		else
			release_retention(st);
		return;
	}
	if (error_code == NGHTTP2_REFUSED_STREAM && retryable(st)) {
		st->fail_why = "refused stream";
		retry(st, st->fail_why);
		return;
	}
	log_debug("stream_reset_by_upstream stream=%d endpoint=%s code=%u", st->ds_id,
		  ep_str(st->ep, ep, sizeof(ep)), error_code);
	st->up_failed = true;
	discard_request(st);
	ds_reset(st, error_code == NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : error_code);
}

void h2_stream_us_lost(struct h2_stream *st, bool connect_failed, bool unreachable, const char *why)
{
	bool unprocessed = connect_failed || !st->up_hdrs_sent;
	char msg[160], ep[64];

	st->leg = H2_LEG_DONE;
	st->fail_why = why;
	st->up_failed = !unreachable || !client_netns(st);
	st->up_netns_refused = !st->up_failed;
	if (st->ep && connect_failed) {
		balancer_endpoint_connect_failed(st->ep, loop_now_ms(), client_netns(st));
		ep_event(st, METRICS_EV_CONNECT_FAILURE);
	}
	if (unprocessed && retryable(st)) {
		retry(st, why);
		return;
	}
	snprintf(msg, sizeof(msg), "h2split: upstream %s: %s", ep_str(st->ep, ep, sizeof(ep)), why);
	reply_error(st, GRPC_UNAVAILABLE, 502, msg);
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
	let_go(st);
	st->leg = H2_LEG_DONE;
	ds_reset(st, NGHTTP2_REFUSED_STREAM);
	h2_downstream_goaway(st->ds);
}

static const char *svc_str(const struct state_service *svc, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s%s%s", svc->ns, svc->name, svc->port_name[0] ? ":" : "",
		 svc->port_name);
	return buf;
}

static int submit(struct h2_stream *st, struct balancer_endpoint *ep, const char *tls_host)
{
	struct splitter *s = S(st);
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = up_read};
	bool body = !st->req_end || st->req_body.len || st->req_trl.n;
	struct h2_upstream *uc;
	int err = 0;
	int32_t id;
	size_t n;

	uc = h2_upstream_get(s, ep, tls_host, st->ds->ci.netns, &err);
	if (!uc)
		return err;
	n = h2_hdrs_to_nv(&st->req_hdrs, s->nv, H2_HDRS_MAX_FIELDS);
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
	if (s->w->metrics)
		metrics_endpoint_inflight(s->w->metrics, ep->service_id, &ep->ip, ep->port, +1);
	st->leg = H2_LEG_OPEN;
	st->up_deferred = false;
	h2_conn_dirty(&uc->c);
	return 0;
}

/* Endpoints that allow no streams now (SETTINGS_MAX_CONCURRENT_STREAMS 0)
 * that one routing of a stream passed over; they cost it no attempt. */
#define H2_BUSY_MAX 8

struct route_ctx {
	const struct state_service *svc;
	const char *tls_host; /* NULL: cleartext */
	struct balancer_endpoint *avoid[H2_MAX_ATTEMPTS + H2_BUSY_MAX];
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
	    .netns_id = client_netns(st),
	    .family = vip_family(&st->ds->ci.orig),
	    .avoid = rc->avoid,
	    .n_avoid = st->n_tried + rc->n_busy,
	    .waited = st->waited,
	    .health = s->w->sh ? s->w->sh->health : NULL,
	};
	struct balancer_endpoint *ep;

	memcpy(rc->avoid, st->tried, st->n_tried * sizeof(rc->avoid[0]));
	memcpy(rc->avoid + st->n_tried, rc->busy, rc->n_busy * sizeof(rc->avoid[0]));
	ep = balancer_set_pick(s->lb, rc->svc, s->w->snap->generation, &p);
	*saturated = p.saturated;
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
		  ep_str(ep, eps, sizeof(eps)));
}

/* A connect to |ep| failed (|err|). */
static void connect_failed(struct h2_stream *st, struct balancer_endpoint *ep, int err)
{
	struct splitter *s = S(st);
	char eps[64];

	balancer_endpoint_connect_failed(ep, loop_now_ms(), client_netns(st));
	if (!client_netns(st)) /* else: the per-netns backoff's business */
		ep_report(st, ep, 0, BALANCER_FAILED);
	else
		ep_publish(s, ep);
	if (s->w->metrics)
		metrics_upstream_event(s->w->metrics, ep->service_id, &ep->ip, ep->port,
				       METRICS_EV_CONNECT_FAILURE);
	st->fail_why = "connect failed";
	log_debug("stream_connect_failed stream=%d endpoint=%s err=%d", st->ds_id,
		  ep_str(ep, eps, sizeof(eps)), err);
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
	queue_route(st);
	splitter_kick(S(st));
}

void h2_stream_capacity_raised(struct splitter *s)
{
	for (struct h2_downstream *ds = s->ds_list; ds; ds = ds->next) {
		for (struct h2_stream *st = ds->streams; st; st = st->ds_next) {
			if (st->leg != H2_LEG_PENDING || !st->cap_waiting)
				continue;
			loop_timer_cancel(s->w->loop, st->pending_timer);
			st->pending_timer = NULL;
			st->cap_waiting = false;
			queue_route(st);
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
	loop_timer_cancel(s->w->loop, st->pending_timer);
	st->pending_timer = loop_timer_add(
	    s->w->loop, s->cfg ? (uint64_t)s->cfg->pending_timeout_ms : 1000, on_capacity_wait, st);
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
			 name, ep_str(rc->busy[rc->n_busy - 1], eps, sizeof(eps)));
		reply_error(st, GRPC_UNAVAILABLE, 503, msg);
		return;
	}
	if (!st->n_tried) {
		stats_inc(s->stats, ST_NO_ENDPOINT);
		snprintf(msg, sizeof(msg), "h2split: no ready endpoint for %s", name);
		reply_error(st, GRPC_UNAVAILABLE, 503, msg);
		return;
	}
	snprintf(msg, sizeof(msg),
		 "h2split: no endpoint of %s reachable after %u attempts (%s: %s)", name,
		 st->n_tried, ep_str(st->tried[st->n_tried - 1], eps, sizeof(eps)),
		 st->fail_why ? st->fail_why : "failed");
	reply_error(st, GRPC_UNAVAILABLE, 502, msg);
}

void h2_stream_route(struct h2_stream *st)
{
	struct splitter *s = S(st);
	const struct snapshot *snap = s->w->snap;
	struct route_ctx rc = {.svc = splitter_service_of(snap, &st->ds->ci.od)};
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
	/* TLS upstreams are verified as the Service's own DNS name. */
	snprintf(host, sizeof(host), "%s.%s.svc", rc.svc->name, rc.svc->ns);
	rc.tls_host = rc.svc->upstream_tls ? host : NULL;
	while (st->n_tried < H2_MAX_ATTEMPTS && rc.n_busy < H2_BUSY_MAX) {
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
			loop_timer_cancel(s->w->loop, st->pending_timer);
			st->pending_timer = NULL;
			log_debug("stream_routed stream=%d endpoint=%s attempt=%u", st->ds_id,
				  ep_str(ep, eps, sizeof(eps)), st->n_tried);
			return;
		}
		connect_failed(st, ep, err);
	}
	route_failed(st, &rc);
}
