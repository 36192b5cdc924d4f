// SPDX-License-Identifier: Apache-2.0
/*
 * Downstream connections (see h2_downstream.h): the nghttp2 server session
 * for a client pod's connection, its limits, and the callbacks that hand
 * each stream to the bridge. Streams are attached in on_begin_headers and
 * freed only in on_stream_close (or with the connection).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "h2_downstream.h"
#include "h2_stream.h"
#include "log.h"
#include "loop.h"
#include "netns.h"

static struct h2_stream *stream_of(nghttp2_session *session, int32_t id)
{
	return nghttp2_session_get_stream_user_data(session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2_downstream *ds = ud;
	struct h2_stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = h2_stream_new(ds, frame->hd.stream_id);
	if (!st)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
	struct h2_stream *st = stream_of(session, frame->hd.stream_id);

	(void)ud;
	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	return h2_stream_ds_header(st, frame->headers.cat == NGHTTP2_HCAT_HEADERS, name, nlen,
				   value, vlen, flags);
}

/* Rapid reset (CVE-2023-44487): nghttp2's own reset rate limit only queues a
 * GOAWAY, and streams keep being accepted until that GOAWAY is written, which
 * can be thousands of HEADERS+RST pairs later within one read. Counting the
 * client's resets here stops the connection at the very frame that exceeds
 * the budget. */
static bool reset_budget_exceeded(struct h2_downstream *ds)
{
	uint64_t now = loop_now_ms();

	ds->rst_tokens += (double)(now - ds->rst_refill_ms) * H2_DS_RESET_RATE / 1000.0;
	if (ds->rst_tokens > H2_DS_RESET_BURST)
		ds->rst_tokens = H2_DS_RESET_BURST;
	ds->rst_refill_ms = now;
	ds->rst_tokens -= 1.0;
	return ds->rst_tokens < 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2_downstream *ds = ud;
	struct h2_stream *st;
	bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		st = stream_of(session, frame->hd.stream_id);
		if (st)
			h2_stream_ds_headers_done(st, frame->headers.cat == NGHTTP2_HCAT_HEADERS,
						  end);
		break;
	case NGHTTP2_DATA:
		st = stream_of(session, frame->hd.stream_id);
		if (st && end)
			h2_stream_ds_end(st);
		break;
	case NGHTTP2_RST_STREAM:
		stats_inc(ds->c.s->stats, ST_RESETS_RECEIVED);
		if (reset_budget_exceeded(ds)) {
			log_warn("downstream_reset_flood client=%s", ds->peer);
			ds->c.fatal_code = NGHTTP2_ENHANCE_YOUR_CALM;
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		break;
	case NGHTTP2_GOAWAY:
		stats_inc(ds->c.s->stats, ST_GOAWAY_RECEIVED);
		log_debug("downstream_goaway_received client=%s code=%u", ds->peer,
			  frame->goaway.error_code);
		break;
	default:
		break;
	}
	return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t id,
			      const uint8_t *data, size_t len, void *ud)
{
	struct h2_stream *st = stream_of(session, id);

	(void)flags;
	(void)ud;
	if (!st) { /* closed under us: give the window back */
		nghttp2_session_consume(session, id, len);
		return 0;
	}
	h2_stream_ds_data(st, data, len);
	return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2_downstream *ds = ud;
	struct h2_stream *st;

	if (frame->hd.type == NGHTTP2_GOAWAY) {
		stats_inc(ds->c.s->stats, ST_GOAWAY_SENT);
		return 0;
	}
	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = stream_of(session, frame->hd.stream_id);
	if (st)
		h2_stream_ds_end_sent(st);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *ud)
{
	struct h2_stream *st = stream_of(session, id);

	(void)ud;
	if (st) {
		nghttp2_session_set_stream_user_data(session, id, NULL);
		h2_stream_ds_closed(st, code);
	}
	return 0;
}

static int on_error(nghttp2_session *session, int code, const char *msg, size_t len, void *ud)
{
	struct h2_downstream *ds = ud;

	(void)session;
	log_debug("downstream_protocol_error client=%s code=%d msg=\"%.*s\"", ds->peer, code,
		  (int)len, msg);
	return 0;
}

int h2_downstream_setup(struct splitter *s)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;

	if (nghttp2_session_callbacks_new(&cb))
		return -ENOMEM;
	if (nghttp2_option_new(&opt)) {
		nghttp2_session_callbacks_del(cb);
		return -ENOMEM;
	}
	nghttp2_session_callbacks_set_send_callback(cb, h2_conn_send_cb);
	nghttp2_session_callbacks_set_send_data_callback(cb, h2_stream_ds_send_data);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cb, on_error);
	/* The hardening knobs, all here. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_stream_reset_rate_limit(opt, H2_DS_RESET_BURST, H2_DS_RESET_RATE);
	nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS);
	s->ds_cbs = cb;
	s->ds_opt = opt;
	return 0;
}

static void ds_io(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct h2_downstream *ds = arg;
	int err;

	(void)l;
	(void)fd;
	if (ds->c.dead)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		err = h2_conn_read(&ds->c);
		if (err) {
			log_debug("downstream_eof client=%s err=%d", ds->peer, err);
			h2_conn_kill(&ds->c);
		}
	}
	h2_conn_dirty(&ds->c);
	splitter_kick(ds->c.s);
}

static void peer_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char tmp[64];

	config_addr_str(ss, tmp, sizeof(tmp));
	snprintf(buf, len, "%s", tmp);
}

static int session_init(struct h2_downstream *ds)
{
	struct splitter *s = ds->c.s;
	const nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_DS_MAX_STREAMS},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST},
	};

	if (nghttp2_session_server_new3(&ds->c.session, s->ds_cbs, ds, s->ds_opt, &s->mem.mem))
		return -ENOMEM;
	if (nghttp2_submit_settings(ds->c.session, NGHTTP2_FLAG_NONE, iv,
				    sizeof(iv) / sizeof(iv[0])) ||
	    nghttp2_session_set_local_window_size(ds->c.session, NGHTTP2_FLAG_NONE, 0,
						  H2_CONN_WINDOW))
		return -ENOMEM;
	return 0;
}

int h2_downstream_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n)
{
	struct h2_downstream *ds = calloc(1, sizeof(*ds));
	ssize_t rv;
	int err;

	if (!ds) {
		err = -ENOMEM;
		goto fail;
	}
	ds->c.s = s;
	ds->c.fd = fd;
	ds->ci = *ci;
	ds->rst_tokens = H2_DS_RESET_BURST;
	ds->rst_refill_ms = loop_now_ms();
	peer_str(&ci->client, ds->peer, sizeof(ds->peer));
	err = session_init(ds);
	if (!err)
		err = loop_add_fd(s->w->loop, fd, EPOLLIN, ds_io, ds);
	if (err) {
		nghttp2_session_del(ds->c.session);
		free(ds);
		goto fail;
	}
	ds->c.events = EPOLLIN;
	ds->c.io_ready = true;
	ds->next = s->ds_list;
	if (s->ds_list)
		s->ds_list->prev = ds;
	s->ds_list = ds;
	s->n_ds++;
	log_debug("downstream_open client=%s service_id=%u", ds->peer, ci->od.service_id);
	if (s->draining)
		h2_downstream_shutdown_notice(ds);
	if (s->drain_final)
		h2_downstream_goaway(ds);
	rv = nghttp2_session_mem_recv(ds->c.session, pre, n);
	if (rv < 0) {
		log_info("downstream_bad_preface client=%s err=\"%s\"", ds->peer,
			 nghttp2_strerror((int)rv));
		h2_conn_kill(&ds->c);
	} else {
		stats_add(s->stats, ST_BYTES_IN, n);
	}
	h2_conn_dirty(&ds->c);
	splitter_kick(s);
	return 0;
fail:
	log_warn("downstream_setup_failed err=%d", err);
	close(fd);
	netns_ref_put(s->w->sh ? s->w->sh->netns : NULL, ci->netns);
	worker_conn_closed(s->w);
	return err;
}

void h2_downstream_destroy(struct h2_downstream *ds)
{
	struct splitter *s = ds->c.s;

	ds->c.dirty = true; /* never queued again */
	while (ds->streams)
		h2_stream_free_detached(ds->streams);
	nghttp2_session_del(ds->c.session);
	loop_del_fd(s->w->loop, ds->c.fd);
	h2_conn_fini(&ds->c);
	netns_ref_put(s->w->sh ? s->w->sh->netns : NULL, ds->ci.netns);
	if (ds->prev)
		ds->prev->next = ds->next;
	else
		s->ds_list = ds->next;
	if (ds->next)
		ds->next->prev = ds->prev;
	s->n_ds--;
	log_debug("downstream_closed client=%s", ds->peer);
	worker_conn_closed(s->w);
	free(ds);
}

void h2_downstream_shutdown_notice(struct h2_downstream *ds)
{
	if (ds->notice_sent || ds->c.dead)
		return;
	ds->notice_sent = true;
	if (nghttp2_submit_shutdown_notice(ds->c.session))
		stats_inc(ds->c.s->stats, ST_UNEXPECTED);
	h2_conn_dirty(&ds->c);
}

void h2_downstream_goaway(struct h2_downstream *ds)
{
	if (ds->goaway_sent || ds->c.dead)
		return;
	ds->goaway_sent = true;
	if (nghttp2_submit_goaway(ds->c.session, NGHTTP2_FLAG_NONE,
				  nghttp2_session_get_last_proc_stream_id(ds->c.session),
				  NGHTTP2_NO_ERROR, NULL, 0))
		stats_inc(ds->c.s->stats, ST_UNEXPECTED);
	h2_conn_dirty(&ds->c);
}
