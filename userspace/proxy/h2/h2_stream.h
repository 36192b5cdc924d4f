/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bridge: one h2_stream per downstream stream, carrying a request to
 * an upstream stream of the splitter's choosing and the response back. It is
 * created in the downstream on_begin_headers and freed only by the
 * downstream on_stream_close (or with its connection); the upstream side
 * only ever holds it through nghttp2 stream user data, which is cleared when
 * the bridge lets go, so upstream callbacks see NULL rather than a dangling
 * stream. DATA moves between the two sessions through bounded chains: bytes
 * are consumed on one session only once the other one has taken them.
 */
#ifndef H2SPLIT_H2_STREAM_H
#define H2SPLIT_H2_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "proxy/h2/h2_buf.h"
#include "proxy/h2/h2_headers.h"
#include "proxy/h2/h2_retry.h"
#include "proxy/h2/splitter_int.h"

/* The upstream leg of a stream. */
enum h2_leg {
	H2_LEG_NONE = 0, /* request headers still arriving */
	H2_LEG_QUEUED,	 /* on s->route_q: routed in the flush at the end of the pass */
	H2_LEG_PENDING,	 /* waiting for room in its service (balancer_wait), or for
			  * an endpoint to allow streams again (pending_timer) */
	H2_LEG_OPEN,	 /* submitted on |up| as |up_id| */
	H2_LEG_DONE,	 /* upstream finished, was reset or let go; no retry */
};

struct h2_stream {
	struct h2_downstream *ds; /* borrowed: the owner */
	int32_t ds_id;
	enum h2_leg leg;
	struct h2_upstream *up; /* borrowed; set while linked on up->streams */
	int32_t up_id;
	struct balancer_endpoint *ep;			  /* holds one in-flight count while set */
	struct balancer_endpoint *tried[H2_TRIED_MAX]; /* compared, never dereferenced */
	uint8_t n_tried;
	const char *fail_why;		     /* static: why the last attempt failed */
	struct h2_stream *ds_next, *ds_prev; /* ds->streams */
	struct h2_stream *up_next, *up_prev; /* up->streams */
	struct h2_stream *q_next, *q_prev;   /* s->route_q */
	struct h2_hdrs req_hdrs, req_trl;    /* owned; kept while a retry may need them */
	struct h2_hdrs resp_hdrs, resp_trl;  /* owned; until submitted downstream */
	struct h2_chain req_body;	     /* owned: received downstream, not yet dropped */
	size_t req_sent;	   /* leading bytes of req_body sent and held for a retry */
	struct h2_chain resp_body; /* owned: received upstream, not yet sent downstream */
	size_t up_conn_owed;	   /* ... of which the upstream connection window not yet
				    * given back (counted in ds->up_window_held) */
	char *local_body;	   /* owned: body of a reply the splitter made */
	size_t local_len, local_off;
	struct loop_timer *deadline; /* owned: grpc-timeout */
	uint64_t deadline_ms;		  /* ... when it runs out (loop_now_ms()), 0: none */
	struct h2_retry rt;		  /* its retry policy and where it stands */
	struct h2_stream *hedge_of; /* a hedged attempt of that stream (borrowed), not
				     * a downstream stream of its own; NULL: one */
	struct balancer_waiter wait;	  /* on a balancer wait list while pending or woken */
	struct loop_timer *pending_timer; /* owned: --pending-timeout, from the first wait
					   * for room, or the wait for capacity */
	bool waited;			  /* was queued: keeps its place ahead of new streams */
	bool cap_waited;		  /* waited once for an endpoint allowing streams */
	bool cap_waiting;		  /* ... and is waiting now (leg PENDING) */
	uint64_t start_ns;
	uint64_t up_start_ns;  /* this attempt was submitted upstream */
	uint64_t up_rtt_us;    /* ... and its first body byte or end came after, 0 before */
	int up_grpc_status;    /* grpc-status from upstream on this attempt, -1 before */
	bool up_failed;	       /* reset or lost upstream (a connect failure: see attempt_outcome) */
	bool up_netns_refused; /* ... no: TCP connect failed from the client's netns, no verdict */
	uint64_t req_bytes, resp_bytes;
	int resp_status;	       /* :status sent downstream, 0 before */
	int grpc_status;	       /* grpc-status seen or made, -1 before */
	bool grpc;		       /* content-type application/grpc* */
	bool req_end;		       /* END_STREAM received downstream */
	bool req_dropped;	       /* some request body left irrecoverably: no retry */
	bool retaining;		       /* sent request bytes are kept for a retry */
	bool req_discard;	       /* the response is complete or local: drop request data */
	bool up_deferred, ds_deferred; /* a data provider waits for resume */
	bool up_hdrs_sent;	       /* the upstream HEADERS went to the write buffer */
	bool resp_hdrs_rcvd;	       /* final response headers arrived upstream */
	bool resp_hdrs_sent;	       /* response headers submitted downstream */
	bool resp_end;		       /* nothing more will be added to the response */
	bool rst_after_response;       /* RST_STREAM(NO_ERROR) once the response is out */
};

/* Downstream side (h2_downstream.c's callbacks). */
struct h2_stream *h2_stream_new(struct h2_downstream *ds, int32_t id);
/* 0 or an nghttp2 error to return from on_header. */
int h2_stream_ds_header(struct h2_stream *st, bool trailer, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen, uint8_t flags);
void h2_stream_ds_headers_done(struct h2_stream *st, bool trailer, bool end_stream);
void h2_stream_ds_data(struct h2_stream *st, const uint8_t *data, size_t len);
void h2_stream_ds_end(struct h2_stream *st);
void h2_stream_ds_end_sent(struct h2_stream *st);
/* The downstream stream closed: let go of everything and free |st|. */
void h2_stream_ds_closed(struct h2_stream *st, uint32_t error_code);
/* The downstream connection is going away without callbacks. */
void h2_stream_free_detached(struct h2_stream *st);
int h2_stream_ds_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
			   size_t length, nghttp2_data_source *source, void *user_data);

/* Upstream side (h2_upstream.c's callbacks). */
int h2_stream_us_header(struct h2_stream *st, bool trailer, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen, uint8_t flags);
void h2_stream_us_headers_done(struct h2_stream *st, bool trailer, bool end_stream);
void h2_stream_us_data(struct h2_stream *st, const uint8_t *data, size_t len);
/* Upstream connection window accounting per client (H2_CLIENT_CONN_SHARE):
 * whether |len| response bytes just in may stay counted against the
 * connection window until they leave (else the caller gives it back now);
 * and |n| of those given back. */
bool h2_stream_hold_conn_window(struct h2_stream *st, size_t len);
void h2_stream_conn_window_given_back(struct h2_stream *st, size_t n);
void h2_stream_us_end(struct h2_stream *st);
void h2_stream_us_headers_sent(struct h2_stream *st);
void h2_stream_us_closed(struct h2_stream *st, uint32_t error_code);
/* The upstream connection died under an open stream. |connect_failed|: it
 * never opened (no SETTINGS), so the peer surely never saw the request;
 * |unreachable|: not even TCP connected, which from a client pod's netns may
 * be that pod's NetworkPolicy rather than the endpoint. */
void h2_stream_us_lost(struct h2_stream *st, bool connect_failed, bool unreachable,
		       const char *why);
int h2_stream_us_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
			   size_t length, nghttp2_data_source *source, void *user_data);

/* Whether one more endpoint may be tried for the current attempt (one that
 * surely did not process it). */
static inline bool h2_stream_may_try(const struct h2_stream *st)
{
	return st->n_tried - st->rt.tried_base < H2_MAX_ATTEMPTS && st->n_tried < H2_TRIED_MAX;
}

/* A hedged attempt of |st|: a stream struct of its own with a copy of the
 * complete request, on no downstream list; NULL on ENOMEM. Freed with
 * h2_stream_hedge_free() (which cancels its upstream stream). */
struct h2_stream *h2_stream_hedge_new(struct h2_stream *st);
void h2_stream_hedge_free(struct h2_stream *h);

/* Free the splitter's pool of stream structs (splitter_free()). */
void h2_stream_pool_fini(struct splitter *s);

/* Within the bridge (h2_route.c, h2_reply.c). */
/* The client's netns as pools and backoff know it (0: the daemon's). */
uint64_t h2_stream_client_netns(const struct h2_stream *st);
/* RST_STREAM(|code|) to the client. */
void h2_stream_ds_reset(struct h2_stream *st, uint32_t code);
/* The response has more for the client: resume its data provider. */
void h2_stream_resume_ds(struct h2_stream *st);
/* Stop the upstream stream (RST_STREAM |code|) and stop hearing about it. */
void h2_stream_abandon_upstream(struct h2_stream *st, uint32_t code);
/* The request is of no more use: drop what is buffered and what arrives. */
void h2_stream_discard_request(struct h2_stream *st);
/* An answered stream waits for nothing more: off the route queue and the
 * balancer's wait lists, its upstream abandoned, its request discarded. */
void h2_stream_let_go(struct h2_stream *st);
/* The data providers (NO_COPY: the send_data callbacks copy). */
ssize_t h2_stream_ds_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
			  uint32_t *flags, nghttp2_data_source *src, void *ud);
ssize_t h2_stream_up_read(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
			  uint32_t *flags, nghttp2_data_source *src, void *ud);

#endif
