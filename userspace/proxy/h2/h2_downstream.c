// SPDX-License-Identifier: Apache-2.0
/*
 * Downstream connections (see h2_downstream.h): the nghttp2 server session
 * for a client pod's connection, its limits, and the callbacks that hand
 * each stream to the bridge. Streams are attached in on_begin_headers and
 * freed only in on_stream_close (or with the connection). Every limit a
 * client runs into is counted (h2split_limit_exceeded_total) and logged once
 * per connection, here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "kernel/netns.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_stream.h"

static struct h2_stream *stream_of(nghttp2_session *session, int32_t id)
{
	return nghttp2_session_get_stream_user_data(session, id);
}

/* The client ran into limit |id|: count it; log it once per connection. */
static void limit_hit(struct h2_downstream *ds, enum limit_id id)
{
	enum log_level lvl = id == LIMIT_IDLE_TIMEOUT ? LOG_INFO : LOG_WARN;

	stats_limit_inc(ds->s->stats, id);
	if (ds->limits_logged & (1u << id))
		return;
	ds->limits_logged |= 1u << id;
	log_msg(lvl, "limit_exceeded limit=%s client=%s cgroup_id=%llu", limit_names[id],
		h2_downstream_peer(ds), (unsigned long long)ds->ci.od.cgroup_id);
}

/* Token bucket: |rate| tokens a second, at most |burst|. False: empty. */
static bool bucket_take(double *tokens, uint64_t *refill_ms, double rate, double burst)
{
	uint64_t now = loop_now_ms();

	*tokens += (double)(now - *refill_ms) * rate / 1000.0;
	if (*tokens > burst)
		*tokens = burst;
	*refill_ms = now;
	*tokens -= 1.0;
	return *tokens >= 0;
}

static bool expired(uint64_t since_ms, int timeout_s, uint64_t now)
{
	return since_ms && timeout_s && now >= since_ms + (uint64_t)timeout_s * 1000;
}

static void on_timer(struct loop *l, struct loop_timer *t, void *arg);

/* (Re)arm the timer for the earlier of the header and idle deadlines. A
 * timer already due no later is kept: it re-arms itself when it fires. */
static void arm_timer(struct h2_downstream *ds)
{
	const struct config *cfg = ds->s->cfg;
	struct loop *l = ds->s->ctx.loop;
	uint64_t at = UINT64_MAX, now = loop_now_ms();

	if (ds->hdr_since_ms && cfg->header_timeout_s)
		at = ds->hdr_since_ms + (uint64_t)cfg->header_timeout_s * 1000;
	if (ds->idle_since_ms && cfg->idle_timeout_s &&
	    ds->idle_since_ms + (uint64_t)cfg->idle_timeout_s * 1000 < at)
		at = ds->idle_since_ms + (uint64_t)cfg->idle_timeout_s * 1000;
	if (ds->hold_until_ms && ds->hold_until_ms < at)
		at = ds->hold_until_ms;
	if (at == UINT64_MAX || (ds->timer && ds->timer_at_ms <= at) || ds->c.dead)
		return;
	if (ds->timer)
		loop_timer_move(l, ds->timer, at > now ? at - now : 0);
	else
		ds->timer = loop_timer_add(l, at > now ? at - now : 0, on_timer, ds);
	ds->timer_at_ms = at;
	if (!ds->timer)
		stats_inc(ds->s->stats, ST_UNEXPECTED);
}

/* GOAWAY(|code|) with the last stream processed; closed once it is out. */
static void terminate(struct h2_downstream *ds, uint32_t code)
{
	if (nghttp2_session_terminate_session(ds->c.session, code))
		h2_conn_kill(&ds->c);
	h2_conn_dirty(&ds->c);
}

static void on_timer(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_downstream *ds = arg;
	const struct config *cfg = ds->s->cfg;
	uint64_t now = loop_now_ms();

	(void)l;
	(void)t;
	ds->timer = NULL;
	if (ds->c.dead)
		return;
	if (ds->hold_until_ms && now >= ds->hold_until_ms) {
		ds->hold_until_ms = 0; /* no response in time: SETTINGS go alone */
		h2_conn_dirty(&ds->c);
	}
	if (expired(ds->hdr_since_ms, cfg->header_timeout_s, now)) {
		limit_hit(ds, LIMIT_HEADER_TIMEOUT);
		ds->hdr_since_ms = ds->idle_since_ms = 0;
		terminate(ds, NGHTTP2_ENHANCE_YOUR_CALM);
	} else if (expired(ds->idle_since_ms, cfg->idle_timeout_s, now)) {
		limit_hit(ds, LIMIT_IDLE_TIMEOUT);
		ds->hdr_since_ms = ds->idle_since_ms = 0;
		terminate(ds, NGHTTP2_NO_ERROR);
	} else {
		arm_timer(ds);
	}
	h2_conn_kick(ds->c.io);
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
	ds->n_streams++;
	ds->idle_since_ms = 0;
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
	struct h2_downstream *ds = ud;
	struct h2_stream *st = stream_of(session, frame->hd.stream_id);
	const struct config *cfg = ds->s->cfg;
	const struct h2_hdrs *h;

	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	/* A stream error (RST_STREAM): the connection and its HPACK context go on. */
	h = frame->headers.cat == NGHTTP2_HCAT_HEADERS ? &st->req_trl : &st->req_hdrs;
	if (h->n >= (uint32_t)cfg->max_headers) {
		limit_hit(ds, LIMIT_HEADERS);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (h->list_size + nlen + vlen + 32 > (size_t)cfg->max_header_list_size) {
		limit_hit(ds, LIMIT_HEADER_LIST_SIZE);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
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
	return !bucket_take(&ds->rst_tokens, &ds->rst_refill_ms, H2_DS_RESET_RATE,
			    H2_DS_RESET_BURST);
}

/* A HEADERS frame on a stream id the client skipped (RFC 9113 5.1.1): a
 * connection error PROTOCOL_ERROR, raised here because nghttp2 would ignore
 * the frame (it comes before nghttp2 looks at the stream). */
static int check_stream_id(struct h2_downstream *ds, int32_t id)
{
	if (!h2_stream_ids_headers(&ds->ids, (uint32_t)id))
		return 0;
	log_info("downstream_protocol_error client=%s why=\"HEADERS on stream %d, lower than %u "
		 "and never opened\"",
		 h2_downstream_peer(ds), id, ds->ids.max);
	ds->c.fatal_code = NGHTTP2_PROTOCOL_ERROR;
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* Every frame header: control frames draw on the connection's budget
 * (counted before nghttp2 decides to ignore a frame, so floods of ignored
 * frames cost their budget too); a header block starts the header timeout,
 * any frame but a CONTINUATION ends it (a block is contiguous). */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *ud)
{
	struct h2_downstream *ds = ud;
	double rate = ds->s->cfg->max_control_frame_rate;

	(void)session;
	switch (hd->type) {
	case NGHTTP2_HEADERS:
		ds->hdr_since_ms = loop_now_ms();
		arm_timer(ds);
		return check_stream_id(ds, hd->stream_id);
	case NGHTTP2_CONTINUATION:
		return 0;
	case NGHTTP2_SETTINGS:
	case NGHTTP2_PING:
	case NGHTTP2_RST_STREAM:
	case NGHTTP2_PRIORITY:
	case NGHTTP2_WINDOW_UPDATE:
		ds->hdr_since_ms = 0;
		if (!bucket_take(&ds->ctl_tokens, &ds->ctl_refill_ms, rate, rate)) {
			limit_hit(ds, LIMIT_CONTROL_FRAME_RATE);
			ds->c.fatal_code = NGHTTP2_ENHANCE_YOUR_CALM;
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		return 0;
	default:
		ds->hdr_since_ms = 0;
		return 0;
	}
}

/* nghttp2 refused a frame; the one case that is a limit of ours is a
 * HEADERS past SETTINGS_MAX_CONCURRENT_STREAMS. */
static int on_invalid_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
				 int lib_error_code, void *ud)
{
	struct h2_downstream *ds = ud;

	(void)session;
	(void)lib_error_code;
	if (frame->hd.type == NGHTTP2_HEADERS &&
	    ds->n_streams >= (uint32_t)ds->s->cfg->max_concurrent_streams)
		limit_hit(ds, LIMIT_CONCURRENT_STREAMS);
	return 0;
}

/* nghttp2_session_mem_recv() failed with |rv|: count the limit it stands for. */
static void recv_failed(struct h2_conn *c, int rv)
{
	struct h2_downstream *ds = (struct h2_downstream *)c;

	if (rv == NGHTTP2_ERR_FLOODED)
		limit_hit(ds, LIMIT_OUTBOUND_CONTROL_FRAMES);
	else if (rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
		limit_hit(ds, LIMIT_CONTINUATIONS);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2_downstream *ds = ud;
	struct h2_stream *st;
	bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		ds->hdr_since_ms = 0;
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
		stats_inc(ds->s->stats, ST_RESETS_RECEIVED);
		if (reset_budget_exceeded(ds)) {
			limit_hit(ds, LIMIT_RESET_RATE);
			ds->c.fatal_code = NGHTTP2_ENHANCE_YOUR_CALM;
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		break;
	case NGHTTP2_GOAWAY:
		stats_inc(ds->s->stats, ST_GOAWAY_RECEIVED);
		log_debug("downstream_goaway_received client=%s code=%u", h2_downstream_peer(ds),
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

	/* FLOW_CONTROL_ERROR from us: the client sent past a window, i.e. more
	 * than --max-pending-bytes on a stream (or the connection window). */
	if ((frame->hd.type == NGHTTP2_GOAWAY &&
	     frame->goaway.error_code == NGHTTP2_FLOW_CONTROL_ERROR) ||
	    (frame->hd.type == NGHTTP2_RST_STREAM &&
	     frame->rst_stream.error_code == NGHTTP2_FLOW_CONTROL_ERROR))
		limit_hit(ds, LIMIT_PENDING_BYTES);
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		stats_inc(ds->s->stats, ST_GOAWAY_SENT);
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
	struct h2_downstream *ds = ud;
	struct h2_stream *st = stream_of(session, id);

	if (st) {
		nghttp2_session_set_stream_user_data(session, id, NULL);
		h2_stream_ds_closed(st, code);
		if (--ds->n_streams == 0) {
			ds->idle_since_ms = loop_now_ms();
			arm_timer(ds);
		}
	}
	return 0;
}

static int on_error(nghttp2_session *session, int code, const char *msg, size_t len, void *ud)
{
	struct h2_downstream *ds = ud;

	(void)session;
	log_debug("downstream_protocol_error client=%s code=%d msg=\"%.*s\"",
		  h2_downstream_peer(ds), code, (int)len, msg);
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
	nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame_recv);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cb, on_error);
	/* The hardening knobs nghttp2 enforces itself, all here. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_stream_reset_rate_limit(opt, H2_DS_RESET_BURST, H2_DS_RESET_RATE);
	nghttp2_option_set_max_continuations(opt, (size_t)s->cfg->max_continuations);
	nghttp2_option_set_max_outbound_ack(opt, (size_t)s->cfg->max_outbound_control_frames);
	/* Closed streams only feed the priority tree; frames for them are
	 * still told from idle ones by stream id (RFC 9113 5.1). */
	nghttp2_option_set_no_closed_streams(opt, 1);
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
			log_debug("downstream_eof client=%s err=%d", h2_downstream_peer(ds), err);
			h2_conn_kill(&ds->c);
		}
	}
	h2_conn_dirty(&ds->c);
	h2_conn_kick(ds->c.io);
}

const char *h2_downstream_peer(struct h2_downstream *ds)
{
	if (!ds->peer[0])
		config_addr_str(&ds->ci.client, ds->peer, sizeof(ds->peer));
	return ds->peer;
}

static int session_init(struct h2_downstream *ds)
{
	struct splitter *s = ds->s;
	const nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)s->cfg->max_concurrent_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)s->cfg->max_pending_bytes},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)s->cfg->max_header_list_size},
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

/*
 * The first write of a new connection whose first bytes held a whole
 * request waits for the response (at most H2_DS_SETTINGS_HOLD_MS), so our
 * SETTINGS, the ACK of the client's, the connection WINDOW_UPDATE and the
 * response go out in one write and one packet: one send() fewer per new
 * connection, one wakeup fewer for the client. The client needs none of
 * them to get its response: it has sent the request already. Anything
 * else queued (a response, RST_STREAM, GOAWAY) ends the hold.
 */
static bool ds_hold(struct h2_conn *c)
{
	struct h2_downstream *ds = (struct h2_downstream *)c;

	if (!ds->hold_until_ms)
		return false;
	if (loop_now_ms() < ds->hold_until_ms &&
	    nghttp2_session_get_outbound_queue_size(c->session) == ds->hold_queue)
		return true;
	ds->hold_until_ms = 0;
	return false;
}

/* Hold the first write (ds_hold()) when the first bytes held a request the
 * client has finished sending, and nothing but the connection's setup is
 * queued. */
static void hold_first_write(struct h2_downstream *ds)
{
	int32_t id = nghttp2_session_get_last_proc_stream_id(ds->c.session);
	const struct h2_stream *st = id > 0 ? stream_of(ds->c.session, id) : NULL;

	if (ds->c.dead || ds->s->draining || !st || !st->req_end || st->resp_hdrs_sent ||
	    st->resp_end)
		return;
	ds->hold_queue = nghttp2_session_get_outbound_queue_size(ds->c.session);
	ds->hold_until_ms = loop_now_ms() + H2_DS_SETTINGS_HOLD_MS;
	arm_timer(ds);
}

static void end(struct h2_conn *c, const char *why, int err)
{
	(void)why;
	(void)err;
	h2_conn_kill(c);
}

static void destroy(struct h2_conn *c)
{
	h2_downstream_destroy((struct h2_downstream *)c);
}

static const struct h2_conn_ops ds_ops = {
    .side = "downstream",
    .counts_bytes = true,
    .recv_failed = recv_failed,
    .end = end,
    .hold = ds_hold,
    .destroy = destroy,
};

int h2_downstream_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n)
{
	struct h2_downstream *ds = calloc(1, sizeof(*ds));
	int err;

	if (!ds) {
		err = -ENOMEM;
		goto fail;
	}
	ds->s = s;
	ds->c.ops = &ds_ops;
	ds->c.io = &s->io;
	ds->c.fd = fd;
	ds->ci = *ci;
	ds->rst_tokens = H2_DS_RESET_BURST;
	ds->rst_refill_ms = ds->ctl_refill_ms = loop_now_ms();
	ds->ctl_tokens = s->cfg->max_control_frame_rate;
	/* The preface counts as a header block until the client's SETTINGS. */
	ds->hdr_since_ms = ds->idle_since_ms = loop_now_ms();
	err = session_init(ds);
	if (!err)
		err = loop_add_fd(s->ctx.loop, fd, EPOLLIN, ds_io, ds);
	if (err) {
		nghttp2_session_del(ds->c.session);
		free(ds);
		goto fail;
	}
	ds->c.events = EPOLLIN;
	ds->c.io_ready = true;
	arm_timer(ds);
	ds->next = s->ds_list;
	if (s->ds_list)
		s->ds_list->prev = ds;
	s->ds_list = ds;
	s->n_ds++;
	log_debug("downstream_open client=%s service_id=%u", h2_downstream_peer(ds),
		  ci->od.service_id);
	if (s->draining)
		h2_downstream_shutdown_notice(ds);
	if (s->drain_final)
		h2_downstream_goaway(ds);
	stats_add(s->stats, ST_BYTES_IN, n);
	if (h2_conn_recv(&ds->c, pre, n))
		h2_conn_kill(&ds->c);
	else
		hold_first_write(ds);
	h2_conn_dirty(&ds->c);
	h2_conn_kick(&s->io);
	return 0;
fail:
	log_warn("downstream_setup_failed err=%d", err);
	close(fd);
	netns_ref_put(s->ctx.netns, ci->netns);
	conn_owner_closed(&s->ctx.owner, ci->pod_key);
	return err;
}

void h2_downstream_destroy(struct h2_downstream *ds)
{
	struct splitter *s = ds->s;

	ds->c.dirty = true; /* never queued again */
	loop_timer_cancel(s->ctx.loop, ds->timer);
	while (ds->streams)
		h2_stream_free_detached(ds->streams);
	nghttp2_session_del(ds->c.session);
	loop_forget_fd(s->ctx.loop, ds->c.fd); /* closed next, ours alone: no EPOLL_CTL_DEL */
	h2_conn_fini(&ds->c);
	netns_ref_put(s->ctx.netns, ds->ci.netns);
	if (ds->prev)
		ds->prev->next = ds->next;
	else
		s->ds_list = ds->next;
	if (ds->next)
		ds->next->prev = ds->prev;
	s->n_ds--;
	log_debug("downstream_closed client=%s", h2_downstream_peer(ds));
	conn_owner_closed(&s->ctx.owner, ds->ci.pod_key);
	free(ds);
}

void h2_downstream_shutdown_notice(struct h2_downstream *ds)
{
	if (ds->notice_sent || ds->c.dead)
		return;
	ds->notice_sent = true;
	if (nghttp2_submit_shutdown_notice(ds->c.session))
		stats_inc(ds->s->stats, ST_UNEXPECTED);
	h2_conn_dirty(&ds->c);
}

static void retire_arm(struct splitter *s);

/* The final GOAWAY of every retired connection whose notice has had its
 * H2_DRAIN_NOTICE_MS. */
static void on_retire_tick(struct loop *l, struct loop_timer *t, void *arg)
{
	struct splitter *s = arg;
	uint64_t now = loop_now_ms();
	bool more = false;

	(void)l;
	(void)t;
	s->retire_timer = NULL;
	for (struct h2_downstream *ds = s->ds_list; ds; ds = ds->next) {
		if (!ds->retired_ms || ds->goaway_sent)
			continue;
		if (now - ds->retired_ms >= H2_DRAIN_NOTICE_MS)
			h2_downstream_goaway(ds);
		else
			more = true;
	}
	if (more)
		retire_arm(s);
	h2_conn_kick(&s->io);
}

static void retire_arm(struct splitter *s)
{
	if (s->retire_timer)
		return;
	s->retire_timer = loop_timer_add(s->ctx.loop, H2_DRAIN_NOTICE_MS / 4, on_retire_tick, s);
	if (!s->retire_timer)
		stats_inc(s->stats, ST_UNEXPECTED); /* the drain's GOAWAY still comes */
}

void h2_downstream_retire(struct h2_downstream *ds)
{
	if (ds->retired_ms || ds->c.dead)
		return;
	ds->retired_ms = loop_now_ms();
	stats_inc(ds->s->stats, ST_DOWNSTREAM_RETIRED);
	log_info("downstream_retired client=%s service_id=%u action=goaway", h2_downstream_peer(ds),
		 ds->ci.od.service_id);
	h2_downstream_shutdown_notice(ds);
	retire_arm(ds->s);
}

void h2_downstream_goaway(struct h2_downstream *ds)
{
	if (ds->goaway_sent || ds->c.dead)
		return;
	ds->goaway_sent = true;
	if (nghttp2_submit_goaway(ds->c.session, NGHTTP2_FLAG_NONE,
				  nghttp2_session_get_last_proc_stream_id(ds->c.session),
				  NGHTTP2_NO_ERROR, NULL, 0))
		stats_inc(ds->s->stats, ST_UNEXPECTED);
	h2_conn_dirty(&ds->c);
}
