// SPDX-License-Identifier: Apache-2.0
/*
 * The per-stream bridge (see h2_stream.h): the stream pool, request and
 * response forwarding with flow control tied across the two sessions (bytes
 * are consumed on one session only once the other took them), the request
 * bytes held for a retry, resets both ways, and the access log line. Where a
 * stream goes is h2_route.c's business; replies made here, h2_reply.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "kernel/netns.h"
#include "proxy/h2/grpc.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_endpoint.h"
#include "proxy/h2/h2_hedge.h"
#include "proxy/h2/h2_reply.h"
#include "proxy/h2/h2_route.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"
#include "telemetry/metrics.h"

static struct splitter *S(const struct h2_stream *st)
{
	return st->ds->s;
}

static nghttp2_session *ds_session(const struct h2_stream *st)
{
	return st->ds->c.session;
}

/* The client's netns as pools and backoff know it (0: the daemon's). */
uint64_t h2_stream_client_netns(const struct h2_stream *st)
{
	const struct config *cfg = st->ds->s->cfg;

	return cfg->upstream_source_pod ? netns_ref_id(st->ds->ci.netns) : 0;
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

static void ds_consume(struct h2_stream *st, size_t n)
{
	if (!n || st->hedge_of) /* a hedge's bytes are a copy: its stream consumes */
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

void h2_stream_ds_reset(struct h2_stream *st, uint32_t code)
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

void h2_stream_resume_ds(struct h2_stream *st)
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
void h2_stream_discard_request(struct h2_stream *st)
{
	release_retention(st);
	ds_consume(st, st->req_body.len);
	h2_chain_clear(&st->req_body, &S(st)->blocks);
	st->req_discard = true;
}

static bool retryable(const struct h2_stream *st)
{
	return !st->req_dropped && !st->req_discard && !st->resp_hdrs_rcvd && h2_stream_may_try(st);
}

/* Stop the upstream stream (RST_STREAM |code|) and stop hearing about it:
 * its user data goes NULL, so later upstream callbacks see no stream. */
void h2_stream_abandon_upstream(struct h2_stream *st, uint32_t code)
{
	if (st->leg != H2_LEG_OPEN)
		return;
	nghttp2_submit_rst_stream(st->up->c.session, NGHTTP2_FLAG_NONE, st->up_id, code);
	nghttp2_session_set_stream_user_data(st->up->c.session, st->up_id, NULL);
	stats_inc(S(st)->stats, ST_RESETS_SENT);
	h2_endpoint_event(S(st)->ctx.metrics, st->ep, METRICS_EV_RESET_SENT);
	h2_conn_dirty(&st->up->c);
	st->leg = H2_LEG_DONE;
	release_retention(st);
}

/* An answered stream waits for nothing more: not for the end of the pass
 * (route_q), not for a free endpoint (the balancer's queue), not for its
 * upstream; the request bytes it held go back to the client's window. */
void h2_stream_let_go(struct h2_stream *st)
{
	h2_retry_cancel(st);
	h2_route_forget(st);
	h2_stream_abandon_upstream(st, NGHTTP2_CANCEL);
	h2_stream_discard_request(st);
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

static int hdrs_copy(struct h2_hdrs *dst, const struct h2_hdrs *src)
{
	for (uint32_t i = 0; i < src->n; i++) {
		const struct h2_hdr_ent *e = &src->ents[i];

		if (h2_hdrs_add(dst, (const uint8_t *)src->buf + e->name_off, e->name_len,
				(const uint8_t *)src->buf + e->value_off, e->value_len, e->flags))
			return -ENOMEM;
	}
	return 0;
}

struct h2_stream *h2_stream_hedge_new(struct h2_stream *st)
{
	struct splitter *s = S(st);
	struct h2_stream *h = stream_get(s);
	uint8_t *tmp = NULL;
	size_t len = st->req_body.len;

	if (!h)
		return NULL;
	h->ds = st->ds;
	h->ds_id = st->ds_id;
	h->hedge_of = st;
	h->grpc = st->grpc;
	h->req_end = true;
	h->retaining = true;
	h->grpc_status = h->up_grpc_status = -1;
	h->start_ns = loop_now_ns();
	h->rt = (struct h2_retry){.kind = st->rt.kind,
				  .resolved = true,
				  .new_attempt = true,
				  .pushback_ms = -1,
				  .service_id = st->rt.service_id,
				  .max_attempts = st->rt.max_attempts,
				  .attempts = st->rt.attempts};
	if (len && !(tmp = malloc(len)))
		goto fail;
	if (len)
		h2_chain_copy(&st->req_body, 0, tmp, len);
	if (hdrs_copy(&h->req_hdrs, &st->req_hdrs) || hdrs_copy(&h->req_trl, &st->req_trl) ||
	    (len && h2_chain_append(&h->req_body, &s->blocks, tmp, len)))
		goto fail;
	free(tmp);
	return h;
fail:
	free(tmp);
	h2_chain_clear(&h->req_body, &s->blocks);
	stream_put(s, h);
	return NULL;
}

void h2_stream_hedge_free(struct h2_stream *h)
{
	struct splitter *s = S(h);

	h2_stream_abandon_upstream(h, NGHTTP2_CANCEL);
	if (h->up) {
		up_consume(h, h->resp_body.len);
		h2_upstream_unlink(h->up, h);
	}
	h->ds->retained -= h->req_sent;
	h2_route_attempt_done(h);
	h2_chain_clear(&h->req_body, &s->blocks);
	h2_chain_clear(&h->resp_body, &s->blocks);
	stream_put(s, h);
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
	struct h2_stream *st = stream_get(ds->s);

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
	stats_inc(ds->s->stats, ST_STREAMS_TOTAL);
	stats_inc(ds->s->stats, ST_STREAMS_ACTIVE);
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
	h2_reply_start_deadline(st);
	/* Routed at the end of the pass: a stream reset within the same read
	 * (rapid reset) never costs an upstream stream, and DATA that came with
	 * the HEADERS is there to go out with them. */
	h2_route_queue(st);
}

void h2_stream_ds_data(struct h2_stream *st, const uint8_t *data, size_t len)
{
	if (st->req_discard) {
		ds_consume(st, len);
		return;
	}
	if (h2_chain_append(&st->req_body, &S(st)->blocks, data, len)) {
		ds_consume(st, len);
		h2_reply_error(st, GRPC_UNAVAILABLE, 503, "h2split: out of memory");
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
	log_info(
	    "access_log client=%s method=%.*s authority=%.*s path=%.*s endpoint=%s status=%d "
	    "grpc_status=%d reset=%u attempts=%u req_bytes=%" PRIu64 " resp_bytes=%" PRIu64
	    " duration_us=%" PRIu64,
	    h2_downstream_peer(st->ds), (int)ml, m ? (const char *)m : "", (int)al,
	    a ? (const char *)a : "", (int)pl, p ? (const char *)p : "",
	    h2_endpoint_str(st->ep ? st->ep : (st->n_tried ? st->tried[st->n_tried - 1] : NULL), ep,
			    sizeof(ep)),
	    st->resp_status, st->grpc_status, code, st->n_tried, st->req_bytes, st->resp_bytes,
	    (loop_now_ns() - st->start_ns) / 1000);
}

/* Count the ended stream per caller and method (and show it to a tap). */
static void call_done(struct h2_stream *st)
{
	struct splitter *s = S(st);
	struct metrics_call mc = {
	    .cgroup_id = st->ds->ci.od.cgroup_id,
	    .service_id = st->ds->ci.od.service_id,
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
	metrics_call_done(s->ctx.metrics, s->snap ? s->snap->st : NULL, &mc);
}

/* Let go of everything; |ds_alive|: the downstream session goes on. */
static void stream_free(struct h2_stream *st, bool ds_alive, uint32_t code)
{
	struct splitter *s = S(st);
	struct h2_downstream *ds = st->ds;

	if (s->cfg->access_log)
		access_log(st, code);
	loop_timer_cancel(s->ctx.loop, st->deadline);
	loop_timer_cancel(s->ctx.loop, st->pending_timer);
	h2_retry_cancel(st);
	h2_route_forget(st);
	h2_stream_abandon_upstream(st, NGHTTP2_CANCEL);
	if (st->up) {
		up_consume(st, st->resp_body.len);
		h2_upstream_unlink(st->up, st);
	}
	if (ds_alive)
		ds_consume(st, st->req_body.len);
	ds->retained -= st->req_sent;
	metrics_stream_done(s->ctx.metrics, ds->ci.od.service_id, st->ep ? &st->ep->ip : NULL,
			    st->ep ? st->ep->port : 0, st->grpc ? st->grpc_status : -1,
			    st->resp_status, loop_now_ns() - st->start_ns, st->req_bytes,
			    st->resp_bytes);
	call_done(st);
	h2_route_attempt_done(st);
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
ssize_t h2_stream_ds_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
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

ssize_t h2_stream_up_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
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
static uint8_t *frame_start(struct h2_conn_io *io, const nghttp2_frame *frame,
			    const uint8_t *framehd, size_t length, size_t *total)
{
	size_t pad = frame->data.padlen;
	uint8_t *p;

	*total = 9 + length + pad;
	p = h2_conn_frame_room(io, length + pad);
	if (!p)
		return NULL;
	memcpy(p, framehd, 9);
	p += 9;
	if (pad)
		*p++ = (uint8_t)(pad - 1);
	return p;
}

static void frame_end(struct h2_conn_io *io, uint8_t *p, const nghttp2_frame *frame, size_t total)
{
	if (frame->data.padlen > 1)
		memset(p, 0, frame->data.padlen - 1);
	h2_conn_commit(io, total);
}

static int count_piece(void *arg, const uint8_t *p, size_t len)
{
	(void)p;
	(void)len;
	++*(unsigned *)arg;
	return 0;
}

static int ref_piece(void *arg, const uint8_t *p, size_t len)
{
	h2_conn_ref(arg, p, len);
	return 0;
}

/* The DATA frame of |length| bytes starting |off| bytes into |chain|: a big
 * payload of a plain connection is written in place from the chain's blocks
 * (held until the write is done, so dropping them at once is safe), a small
 * one is copied into wbuf. 0, or NGHTTP2_ERR_WOULDBLOCK (nothing done). */
static int frame_from_chain(struct h2_conn *c, const nghttp2_frame *frame, const uint8_t *framehd,
			    const struct h2_chain *chain, size_t off, size_t length)
{
	struct h2_conn_io *io = c->io;
	size_t pad = frame->data.padlen, total;
	unsigned pieces = 0;
	uint8_t *p;

	if (length >= H2_REF_MIN && !c->ssl) {
		h2_chain_pieces(chain, off, length, count_piece, &pieces);
		if (!h2_conn_ref_room(io, 9 + pad, length, pieces))
			return NGHTTP2_ERR_WOULDBLOCK;
		memcpy(io->wbuf + io->wlen, framehd, 9);
		if (pad)
			io->wbuf[io->wlen + 9] = (uint8_t)(pad - 1);
		h2_conn_commit(io, 9 + (pad ? 1 : 0));
		h2_chain_pieces(chain, off, length, ref_piece, io);
		if (pad > 1) {
			memset(io->wbuf + io->wlen, 0, pad - 1);
			h2_conn_commit(io, pad - 1);
		}
		return 0;
	}
	p = frame_start(io, frame, framehd, length, &total);
	if (!p)
		return NGHTTP2_ERR_WOULDBLOCK;
	h2_chain_copy(chain, off, p, length);
	frame_end(io, p + length, frame, total);
	return 0;
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
		stats_inc(c->io->stats, ST_UNEXPECTED);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (st->local_body) { /* freed when the stream closes, maybe before the write */
		p = frame_start(c->io, frame, framehd, length, &total);
		if (!p)
			return NGHTTP2_ERR_WOULDBLOCK;
		memcpy(p, st->local_body + st->local_off, length);
		st->local_off += length;
		frame_end(c->io, p + length, frame, total);
		return 0;
	}
	if (frame_from_chain(c, frame, framehd, &st->resp_body, 0, length))
		return NGHTTP2_ERR_WOULDBLOCK;
	h2_chain_drop(&st->resp_body, &S(st)->blocks, length);
	up_consume(st, length);
	return 0;
}

int h2_stream_us_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
			   size_t length, nghttp2_data_source *source, void *user_data)
{
	struct h2_conn *c = user_data;
	struct h2_stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

	(void)source;
	if (!st) /* let go of while this frame waited for room */
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (frame_from_chain(c, frame, framehd, &st->req_body, st->req_sent, length))
		return NGHTTP2_ERR_WOULDBLOCK;
	if (st->retaining) {
		st->req_sent += length;
		st->ds->retained += length;
		/* A hedge holds a copy of a request within the buffer: kept whole. */
		if (!st->hedge_of && (st->req_sent > (size_t)S(st)->cfg->retry_buffer_bytes ||
				      st->ds->retained > H2_RETAIN_CONN_MAX))
			release_retention(st);
	} else {
		h2_chain_drop(&st->req_body, &S(st)->blocks, length);
		ds_consume(st, length);
		st->req_dropped = true;
	}
	return 0;
}

/* Upstream side. */

/* The number the leading decimal digits of |v| (|n| bytes, n < 10) spell: 0
 * when there are none (as atoi(), without its locale and NUL scan). */
static int leading_uint(const uint8_t *v, size_t n)
{
	int x = 0;

	for (size_t i = 0; i < n && v[i] >= '0' && v[i] <= '9'; i++)
		x = x * 10 + (v[i] - '0');
	return x;
}

int h2_stream_us_header(struct h2_stream *st, bool trailer, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen, uint8_t flags)
{
	if (h2_header_is_hop_by_hop(name, nlen, value, vlen))
		return 0;
	if (nlen == 11 && !memcmp(name, "grpc-status", 11) && vlen && vlen < 4) {
		st->grpc_status = leading_uint(value, vlen);
		st->up_grpc_status = st->grpc_status;
	}
	if (!trailer && nlen == 22 && !memcmp(name, "grpc-retry-pushback-ms", 22))
		h2_retry_pushback(st, value, vlen);
	if (h2_hdrs_add(trailer ? &st->resp_trl : &st->resp_hdrs, name, nlen, value, vlen, flags))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

void h2_stream_us_headers_done(struct h2_stream *st, bool trailer, bool end_stream)
{
	nghttp2_data_provider prd = {.source.ptr = st, .read_callback = h2_stream_ds_read};
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
	if (h2_hedge_on_headers(st, end_stream))
		return; /* a hedge's answer: dropped, or adopted and forwarded */
	if (end_stream && h2_retry_on_answer(st))
		return; /* Trailers-Only with a retryable status: not forwarded */
	st->resp_hdrs_rcvd = true;
	h2_retry_answered(st);
	if (end_stream)
		first_answer(st);
	if (st->ep)
		balancer_endpoint_ok(st->ep);
	release_retention(st);
	st->resp_end = end_stream;
	st->resp_status = status && sl == 3 ? leading_uint(status, sl) : 0;
	n = h2_hdrs_to_nv(&st->resp_hdrs, S(st)->nv, H2_HDRS_MAX_FIELDS);
	if (nghttp2_submit_response(ds_session(st), st->ds_id, S(st)->nv, n,
				    end_stream ? NULL : &prd)) {
		stats_inc(S(st)->stats, ST_UNEXPECTED);
		h2_stream_abandon_upstream(st, NGHTTP2_INTERNAL_ERROR);
		h2_stream_ds_reset(st, NGHTTP2_INTERNAL_ERROR);
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
		h2_stream_abandon_upstream(st, NGHTTP2_INTERNAL_ERROR);
		h2_stream_ds_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	st->resp_bytes += len;
	h2_stream_resume_ds(st);
}

void h2_stream_us_end(struct h2_stream *st)
{
	first_answer(st);
	st->resp_end = true;
	h2_stream_resume_ds(st);
}

void h2_stream_us_headers_sent(struct h2_stream *st)
{
	st->up_hdrs_sent = true;
}

void h2_stream_us_closed(struct h2_stream *st, uint32_t error_code)
{
	char ep[64];

	st->leg = H2_LEG_DONE;
	if (!st->resp_end && h2_hedge_on_failure(st))
		return;
	if (st->resp_end) {
		/* Done upstream; the rest of the request, if any, is not wanted. */
		if (!st->req_end || st->req_body.len > st->req_sent)
			h2_stream_discard_request(st);
		else
			release_retention(st);
		return;
	}
	if (error_code == NGHTTP2_REFUSED_STREAM && retryable(st)) {
		st->fail_why = "refused stream";
		h2_route_retry(st, st->fail_why);
		return;
	}
	log_debug("stream_reset_by_upstream stream=%d endpoint=%s code=%u", st->ds_id,
		  h2_endpoint_str(st->ep, ep, sizeof(ep)), error_code);
	st->up_failed = true;
	if (h2_retry_on_failure(st, grpc_status_from_rst(error_code)))
		return;
	h2_stream_discard_request(st);
	h2_stream_ds_reset(st,
			   error_code == NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : error_code);
}

void h2_stream_us_lost(struct h2_stream *st, bool connect_failed, bool unreachable, const char *why)
{
	bool unprocessed = connect_failed || !st->up_hdrs_sent;
	char msg[160], ep[64];

	st->leg = H2_LEG_DONE;
	st->fail_why = why;
	st->up_failed = !unreachable || !h2_stream_client_netns(st);
	st->up_netns_refused = !st->up_failed;
	if (st->ep && connect_failed) {
		balancer_endpoint_connect_failed(st->ep, loop_now_ms(), h2_stream_client_netns(st));
		h2_endpoint_event(S(st)->ctx.metrics, st->ep, METRICS_EV_CONNECT_FAILURE);
	}
	if (h2_hedge_on_failure(st))
		return;
	if (unprocessed && retryable(st)) {
		h2_route_retry(st, why);
		return;
	}
	if (h2_retry_on_failure(st, GRPC_UNAVAILABLE))
		return;
	snprintf(msg, sizeof(msg), "h2split: upstream %s: %s",
		 h2_endpoint_str(st->ep, ep, sizeof(ep)), why);
	h2_reply_error(st, GRPC_UNAVAILABLE, 502, msg);
}
