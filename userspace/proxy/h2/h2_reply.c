// SPDX-License-Identifier: Apache-2.0
/*
 * The replies the splitter makes itself (see h2_reply.h): Trailers-Only for
 * gRPC, a short text/plain body otherwise, trailers or a reset once headers
 * went out; and the grpc-timeout deadline (DEADLINE_EXCEEDED). A stream
 * answered here waits for nothing more (h2_stream_let_go()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/loop.h"
#include "proxy/h2/grpc.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_reply.h"
#include "proxy/h2/h2_stream.h"

static struct splitter *S(const struct h2_stream *st)
{
	return st->ds->s;
}

static nghttp2_session *ds_session(const struct h2_stream *st)
{
	return st->ds->c.session;
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
	prd.read_callback = h2_stream_ds_read;
	return nghttp2_submit_response(ds_session(st), st->ds_id, nv, 3, &prd);
}

void h2_reply_error(struct h2_stream *st, enum grpc_status grpc_status, int http_status,
		    const char *msg)
{
	struct grpc_trailers_only t;
	int rv = 0;

	h2_stream_let_go(st);
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
			h2_stream_ds_reset(st, NGHTTP2_INTERNAL_ERROR);
		}
		h2_conn_dirty(&st->ds->c);
		return;
	}
	if (!st->grpc) {
		h2_stream_ds_reset(st, NGHTTP2_INTERNAL_ERROR);
		return;
	}
	/* Headers are out: end the body with gRPC trailers instead. */
	grpc_trailers_only_build(&t, grpc_status, msg);
	h2_hdrs_reset(&st->resp_trl);
	for (int i = 0; i < GRPC_TRAILERS_LEN; i++) {
		const nghttp2_nv *nv = &GRPC_TRAILERS(&t)[i];

		if (h2_hdrs_add(&st->resp_trl, nv->name, nv->namelen, nv->value, nv->valuelen, 0)) {
			h2_stream_ds_reset(st, NGHTTP2_INTERNAL_ERROR);
			return;
		}
	}
	st->grpc_status = (int)grpc_status;
	st->resp_end = true;
	h2_stream_resume_ds(st);
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
		h2_reply_error(st, GRPC_DEADLINE_EXCEEDED, 504, "h2split: deadline exceeded");
	}
	h2_conn_kick(&s->io);
}

void h2_reply_start_deadline(struct h2_stream *st)
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
	st->deadline_ms = loop_now_ms() + ms;
	st->deadline = loop_timer_add(S(st)->ctx.loop, ms, on_deadline, st);
}
