// SPDX-License-Identifier: Apache-2.0
/*
 * Upstream connections (see h2_upstream.h): non-blocking connect from the
 * client pod's netns, optional TLS with ALPN h2, the nghttp2 client session
 * and its callbacks, pools and their retirement. State machine:
 * CONNECTING -> [HANDSHAKING ->] OPEN -> DRAINING (GOAWAY / endpoint gone)
 * -> CLOSING (we sent GOAWAY); any failure destroys the connection, and
 * streams that were surely not processed there are retried elsewhere.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "kernel/netns.h"
#include "proxy/h2/h2_endpoint.h"
#include "proxy/h2/h2_route.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"
#include "telemetry/metrics.h"

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* The one place |accepting| is computed. A killed connection stays in its
 * pool until the splitter's flush destroys it, and streams routed in between
 * (retries queued by the very flush that killed it) must not go there. */
static void set_state(struct h2_upstream *uc, enum h2_up_state state)
{
	uc->state = state;
	if (state == H2_UP_OPEN && !uc->open_ns)
		uc->open_ns = loop_now_ns();
	uc->pc.accepting =
	    !uc->c.dead && state <= H2_UP_OPEN && !(uc->pc.pool && uc->pc.pool->retired);
}

/* Connect failures to a dead endpoint come in bursts: warn at most once a
 * second per worker and say how many were not logged. */
static void warn_connect_failed(struct splitter *s, const char *name, const char *why, int err)
{
	uint64_t now = loop_now_ms();

	if (s->connect_warn_ms && now - s->connect_warn_ms < 1000) {
		s->connect_warn_suppressed++;
		return;
	}
	log_warn("upstream_connect_failed endpoint=%s why=\"%s\" err=\"%s\" suppressed=%u", name,
		 why, err ? strerror(-err) : "-", s->connect_warn_suppressed);
	s->connect_warn_ms = now;
	s->connect_warn_suppressed = 0;
}

/* Mark |uc| failed (|why|: a static string; |err|: -errno or 0): it takes no
 * stream from now on, and h2_upstream_destroy() sorts out its streams. */
static void conn_fail(struct h2_upstream *uc, const char *why, int err)
{
	struct splitter *s = uc->s;

	if (uc->c.dead)
		return;
	/* CLOSING: we said goodbye ourselves (idle, drain) before its SETTINGS
	 * came; that is no connect failure. */
	if (!uc->ever_open && uc->state != H2_UP_CLOSING) {
		stats_inc(s->stats, ST_UPSTREAM_CONNECT_FAILURES);
		warn_connect_failed(s, uc->name, why, err);
	} else if (uc->pc.n_streams || uc->state < H2_UP_DRAINING) {
		log_info("upstream_connection_lost endpoint=%s why=\"%s\" err=\"%s\" streams=%u",
			 uc->name, why, err ? strerror(-err) : "-", uc->pc.n_streams);
	} else { /* after a GOAWAY with nothing in flight: a normal end */
		log_debug("upstream_connection_ended endpoint=%s why=\"%s\"", uc->name, why);
	}
	uc->fail_why = why;
	set_state(uc, H2_UP_CLOSING);
	h2_conn_kill(&uc->c);
}

static struct h2_stream *stream_of(nghttp2_session *session, int32_t id)
{
	return nghttp2_session_get_stream_user_data(session, id);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
	struct h2_stream *st = stream_of(session, frame->hd.stream_id);

	(void)ud;
	if (!st || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	return h2_stream_us_header(st, st->resp_hdrs_rcvd, name, nlen, value, vlen, flags);
}

/* The peer allows no streams on |uc| now (SETTINGS_MAX_CONCURRENT_STREAMS 0,
 * which RFC 9113 6.5.2 wants for short durations only). The pool opens no
 * other connection while it stays (upstream_pool_refusing()), so streams go
 * to other endpoints or wait a while; |uc| stays, in case the peer raises its
 * limit. |other|: another connection of the pool in that state already
 * (both opened before either one's SETTINGS came): |uc| is let go, so there
 * is one such connection per pool. */
static void no_capacity(struct h2_upstream *uc, const struct upstream_pool_conn *other)
{
	log_warn("upstream_no_capacity endpoint=%s max_concurrent_streams=0 streams=%u action=%s",
		 uc->name, uc->pc.n_streams, other ? "close" : "keep");
	if (!other)
		return;
	set_state(uc, H2_UP_DRAINING);
	h2_conn_dirty(&uc->c); /* closes once its streams are done */
}

static void on_settings(struct h2_upstream *uc, nghttp2_session *session)
{
	struct upstream_pool_conn *zero = uc->pc.pool ? upstream_pool_refusing(uc->pc.pool) : NULL;

	uc->pc.settings_rcvd = true;
	uc->pc.peer_max =
	    nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	if (uc->pc.pool)
		uc->pc.pool->peer_max_hint = uc->pc.peer_max ? uc->pc.peer_max : 1;
	if (!uc->pc.peer_max && zero != &uc->pc && uc->pc.accepting) {
		no_capacity(uc, zero);
	} else if (uc->pc.peer_max && zero == &uc->pc) {
		log_info("upstream_capacity_back endpoint=%s max_concurrent_streams=%u", uc->name,
			 uc->pc.peer_max);
		h2_route_capacity_raised(uc->s);
	}
	if (uc->ever_open)
		return;
	uc->ever_open = true;
	loop_timer_cancel(uc->s->ctx.loop, uc->connect_timer);
	uc->connect_timer = NULL;
	log_debug("upstream_ready endpoint=%s max_streams=%u", uc->name, uc->pc.peer_max);
}

/* Any frame is a sign of life (a PING ACK included). One PING per silence
 * at most, though: gRPC servers count PINGs that come while they send no
 * data as abuse (GOAWAY "too_many_pings"), so another one waits for a
 * HEADERS or DATA frame; a stream silent for longer is left to TCP keepalive. */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *ud)
{
	struct h2_upstream *uc = ud;

	(void)session;
	uc->last_rx_ms = loop_now_ms();
	uc->ping_sent_ms = 0;
	if (hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_DATA)
		uc->may_ping = true;
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2_upstream *uc = ud;
	struct h2_stream *st;
	bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		st = stream_of(session, frame->hd.stream_id);
		if (st)
			h2_stream_us_headers_done(st, st->resp_hdrs_rcvd, end);
		break;
	case NGHTTP2_DATA:
		st = stream_of(session, frame->hd.stream_id);
		if (st && end)
			h2_stream_us_end(st);
		break;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
			on_settings(uc, session);
		break;
	case NGHTTP2_RST_STREAM:
		stats_inc(uc->s->stats, ST_RESETS_RECEIVED);
		st = stream_of(session, frame->hd.stream_id);
		if (st)
			h2_endpoint_event(uc->s->ctx.metrics, st->ep, METRICS_EV_RESET_RECEIVED);
		break;
	case NGHTTP2_GOAWAY:
		stats_inc(uc->s->stats, ST_GOAWAY_RECEIVED);
		log_info("upstream_goaway endpoint=%s last_stream_id=%d code=%u streams=%u",
			 uc->name, frame->goaway.last_stream_id, frame->goaway.error_code,
			 uc->pc.n_streams);
		if (uc->state < H2_UP_DRAINING)
			set_state(uc, H2_UP_DRAINING);
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
	if (!st) { /* let go of: give the window back */
		nghttp2_session_consume(session, id, len);
		return 0;
	}
	if (!h2_stream_hold_conn_window(st, len)) {
		nghttp2_session_consume_connection(session, len);
		h2_conn_dirty(&st->up->c);
	}
	h2_stream_us_data(st, data, len);
	return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud)
{
	struct h2_upstream *uc = ud;
	struct h2_stream *st;

	if (frame->hd.type == NGHTTP2_GOAWAY) {
		stats_inc(uc->s->stats, ST_GOAWAY_SENT);
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = stream_of(session, frame->hd.stream_id);
	if (st)
		h2_stream_us_headers_sent(st);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t code, void *ud)
{
	struct h2_upstream *uc = ud;
	struct h2_stream *st = stream_of(session, id);

	if (uc->pc.n_streams)
		uc->pc.n_streams--;
	else
		stats_inc(uc->s->stats, ST_UNEXPECTED);
	if (!uc->pc.n_streams)
		uc->idle_since_ms = loop_now_ms();
	h2_conn_dirty(&uc->c); /* after_flush() may close it now */
	if (st) {
		nghttp2_session_set_stream_user_data(session, id, NULL);
		h2_stream_us_closed(st, code);
	}
	return 0;
}

static int on_error(nghttp2_session *session, int code, const char *msg, size_t len, void *ud)
{
	struct h2_upstream *uc = ud;

	(void)session;
	log_debug("upstream_protocol_error endpoint=%s code=%d msg=\"%.*s\"", uc->name, code,
		  (int)len, msg);
	return 0;
}

int h2_upstream_setup(struct splitter *s)
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
	nghttp2_session_callbacks_set_send_data_callback(cb, h2_stream_us_send_data);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cb, on_error);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(opt, UPSTREAM_PRE_SETTINGS_STREAMS);
	nghttp2_option_set_max_continuations(opt, (size_t)s->cfg->max_continuations);
	/* Closed streams only feed the priority tree, which nobody uses here. */
	nghttp2_option_set_no_closed_streams(opt, 1);
	s->us_cbs = cb;
	s->us_opt = opt;
	return 0;
}

/* TLS: one client context per worker, made on first use. */
static SSL_CTX *tls_ctx(struct splitter *s)
{
	const char *ca = s->cfg->upstream_ca_file[0] ? s->cfg->upstream_ca_file : NULL;

	if (s->ssl_ctx || s->ssl_ctx_failed)
		return s->ssl_ctx;
	s->ssl_ctx = h2_conn_tls_ctx_new(ca);
	s->ssl_ctx_failed = !s->ssl_ctx;
	return s->ssl_ctx;
}

static int tls_init(struct h2_upstream *uc, const char *host)
{
	SSL_CTX *ctx = tls_ctx(uc->s);

	return ctx ? h2_conn_tls_start(&uc->c, ctx, host) : -EPROTO;
}

static void tls_handshake(struct h2_upstream *uc)
{
	const char *why = NULL;
	int rv = h2_conn_tls_handshake(&uc->c, uc->name, &why);

	if (rv < 0) {
		conn_fail(uc, why, 0);
		return;
	}
	if (rv == 0)
		return;
	set_state(uc, H2_UP_OPEN);
	uc->c.io_ready = true;
	h2_conn_dirty(&uc->c);
}

static void on_connected(struct h2_upstream *uc)
{
	uc->tcp_up = true;
	if (uc->c.ssl) {
		set_state(uc, H2_UP_HANDSHAKING);
		tls_handshake(uc);
		return;
	}
	set_state(uc, H2_UP_OPEN);
	uc->c.io_ready = true;
	loop_set_events(uc->s->ctx.loop, uc->c.fd, EPOLLIN);
	uc->c.events = EPOLLIN;
	h2_conn_dirty(&uc->c);
}

static void us_io(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct h2_upstream *uc = arg;
	socklen_t len = sizeof(int);
	int err = 0;

	(void)l;
	if (uc->c.dead)
		return;
	if (uc->state == H2_UP_CONNECTING) {
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
			conn_fail(uc, "connect", -(err ? err : errno));
			goto out;
		}
		on_connected(uc);
	} else if (uc->state == H2_UP_HANDSHAKING) {
		tls_handshake(uc);
	} else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		err = h2_conn_read(&uc->c);
		if (err)
			conn_fail(uc, err == -EPIPE ? "closed by peer" : "read",
				  err == -EPIPE ? 0 : err);
	}
	h2_conn_dirty(&uc->c);
out:
	h2_conn_kick(uc->c.io);
}

static void on_connect_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct h2_upstream *uc = arg;

	(void)l;
	(void)t;
	uc->connect_timer = NULL;
	conn_fail(uc, uc->state == H2_UP_CONNECTING ? "connect timeout" : "no SETTINGS in time", 0);
	h2_conn_kick(uc->c.io);
}

static void release_pool(struct splitter *s, struct upstream_pool *p)
{
	if (p->n_conns)
		return;
	netns_ref_put(s->ctx.netns, p->netns);
	upstream_pools_remove(&s->pools, p);
}

static int session_init(struct h2_upstream *uc)
{
	struct splitter *s = uc->s;
	const nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)s->cfg->max_pending_bytes},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST},
	    /* No RFC 7540 priority tree to keep per stream (RFC 9218 2.1);
	     * the downstream keeps it: RFC 9113 5.3.1 errors are checked there. */
	    {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
	};

	if (nghttp2_session_client_new3(&uc->c.session, s->us_cbs, uc, s->us_opt, &s->mem.mem))
		return -ENOMEM;
	if (nghttp2_submit_settings(uc->c.session, NGHTTP2_FLAG_NONE, iv,
				    sizeof(iv) / sizeof(iv[0])) ||
	    nghttp2_session_set_local_window_size(uc->c.session, NGHTTP2_FLAG_NONE, 0,
						  H2_CONN_WINDOW))
		return -ENOMEM;
	return 0;
}

/* The kernel's half of liveness: TCP keepalive probes on idle pooled
 * connections (which get no PING), and TCP_USER_TIMEOUT, so data the peer
 * never acknowledges ends the connection too.
 *
 * The user timeout is the backstop, not the first detector: a busy
 * connection that goes silent is found by h2_upstream_keepalive() within
 * time + timeout + two checks (1.5 x timeout at most), and that path names
 * the cause (limit=upstream_keepalive_timeout, "no PING ACK in time"). The
 * kernel's clock starts at the first unacknowledged segment, about when the
 * PING path's starts, so it gets time + 3 x timeout: it ends only
 * connections the PING path cannot judge (one PING per silence). */
static void set_keepalive(int fd, const struct config *cfg)
{
	int one = 1, t = cfg->upstream_keepalive_time_s, to = cfg->upstream_keepalive_timeout_s;
	int cnt = 3;
	unsigned int user_ms = (unsigned int)(t + 3 * to) * 1000;

	if (!t)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &t, sizeof(t)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &to, sizeof(to)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof(user_ms)))
		log_debug("setsockopt_failed opt=keepalive err=\"%s\"", strerror(errno));
}

static int sock_connect(struct upstream_pool *p, const struct config *cfg, int *fdp)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	int one = 1, fd;

	if (h2s_ip_is_v4(&p->key.ip)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(p->key.port);
		memcpy(&sin->sin_addr, p->key.ip.b + 12, 4);
		sl = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(p->key.port);
		memcpy(&sin6->sin6_addr, p->key.ip.b, 16);
		sl = sizeof(*sin6);
	}
	fd = netns_socket(p->netns, ss.ss_family, SOCK_STREAM);
	if (fd < 0)
		return fd;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		log_debug("setsockopt_failed opt=TCP_NODELAY err=\"%s\"", strerror(errno));
	set_keepalive(fd, cfg);
	*fdp = fd;
	if (connect(fd, (struct sockaddr *)&ss, sl) == 0)
		return 1;
	return errno == EINPROGRESS ? 0 : -errno;
}

static void ep_name(const struct upstream_pool_key *k, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	h2s_ip_str(&k->ip, ip, sizeof(ip));
	snprintf(buf, len, h2s_ip_is_v4(&k->ip) ? "%s:%u" : "[%s]:%u", ip, k->port);
}

/* A failed write, or nghttp2 done with the session: through conn_fail(), so
 * that it takes no stream between now and its destruction in this flush. */
static void end(struct h2_conn *c, const char *why, int err)
{
	conn_fail((struct h2_upstream *)c, why, err);
}

static void destroy(struct h2_conn *c)
{
	h2_upstream_destroy((struct h2_upstream *)c);
}

static void flushed(struct h2_conn *c);

static const struct h2_conn_ops us_ops = {
    .side = "upstream",
    .end = end,
    .flushed = flushed,
    .destroy = destroy,
};

static struct h2_upstream *conn_open(struct splitter *s, struct upstream_pool *p,
				     const char *tls_host, int *err)
{
	struct h2_upstream *uc = calloc(1, sizeof(*uc));
	int fd = -1, rv;

	if (!uc) {
		*err = -ENOMEM;
		return NULL;
	}
	ep_name(&p->key, uc->name, sizeof(uc->name));
	rv = sock_connect(p, s->cfg, &fd);
	if (rv < 0) {
		stats_inc(s->stats, ST_UPSTREAM_CONNECT_FAILURES);
		warn_connect_failed(s, uc->name, "socket", rv);
		if (fd >= 0)
			close(fd);
		free(uc);
		*err = rv;
		return NULL;
	}
	uc->s = s;
	uc->c.fd = fd;
	uc->c.ops = &us_ops;
	uc->c.io = &s->io;
	*err = session_init(uc);
	if (!*err && tls_host)
		*err = tls_init(uc, tls_host);
	if (!*err)
		*err = loop_add_fd(s->ctx.loop, fd, EPOLLOUT, us_io, uc);
	if (!*err && !(uc->connect_timer = loop_timer_add(s->ctx.loop, H2_CONNECT_TIMEOUT_MS,
							  on_connect_timeout, uc)))
		*err = -ENOMEM;
	if (*err) {
		loop_del_fd(s->ctx.loop, fd);
		SSL_free(uc->c.ssl);
		nghttp2_session_del(uc->c.session);
		close(fd);
		free(uc);
		return NULL;
	}
	uc->c.events = EPOLLOUT;
	upstream_pool_link(p, &uc->pc);
	set_state(uc, H2_UP_CONNECTING);
	uc->idle_since_ms = uc->last_rx_ms = loop_now_ms();
	uc->may_ping = true;
	uc->next = s->us_list;
	if (s->us_list)
		s->us_list->prev = uc;
	s->us_list = uc;
	stats_inc(s->stats, ST_UPSTREAM_CONNS_TOTAL);
	stats_inc(s->stats, ST_UPSTREAM_CONNS_ACTIVE);
	log_debug("upstream_connecting endpoint=%s netns=%llu tls=%d", uc->name,
		  (unsigned long long)p->key.netns_id, !!tls_host);
	if (rv == 1)
		on_connected(uc);
	return uc;
}

struct h2_upstream *h2_upstream_get(struct splitter *s, const struct balancer_endpoint *ep,
				    const char *tls_host, struct netns_ref *netns, int *err)
{
	bool pod = !s->cfg || s->cfg->upstream_source_pod;
	struct upstream_pool_key key = {
	    .netns_id = pod ? netns_ref_id(netns) : 0,
	    .ip = ep->ip,
	    .port = ep->port,
	    .tls = tls_host != NULL,
	};
	struct upstream_pool *p = upstream_pools_get(&s->pools, &key, true);
	struct upstream_pool_conn *pc;
	struct h2_upstream *uc;

	if (!p) {
		*err = -ENOMEM;
		return NULL;
	}
	pc = upstream_pool_choose(p);
	if (pc)
		return container_of(pc, struct h2_upstream, pc);
	if (upstream_pool_refusing(p)) {
		*err = -EBUSY;
		return NULL;
	}
	if (!p->n_conns && !p->netns && key.netns_id)
		p->netns = netns_ref_get(netns);
	uc = conn_open(s, p, tls_host, err);
	if (!uc)
		release_pool(s, p);
	return uc;
}

void h2_upstream_link(struct h2_upstream *uc, struct h2_stream *st, int32_t id)
{
	st->up = uc;
	st->up_id = id;
	st->up_prev = NULL;
	st->up_next = uc->streams;
	if (uc->streams)
		uc->streams->up_prev = st;
	uc->streams = st;
	uc->pc.n_streams++;
}

static void release_owed(struct h2_upstream *uc, struct h2_stream *st, size_t n)
{
	if (!n)
		return;
	if (uc->c.session)
		nghttp2_session_consume_connection(uc->c.session, n);
	h2_stream_conn_window_given_back(st, n);
}

void h2_upstream_consume(struct h2_upstream *uc, struct h2_stream *st, size_t n)
{
	/* A closed upstream stream is fine: nghttp2 ignores its id. */
	nghttp2_session_consume_stream(uc->c.session, st->up_id, n);
	release_owed(uc, st, n < st->up_conn_owed ? n : st->up_conn_owed);
	h2_conn_dirty(&uc->c);
}

void h2_upstream_unlink(struct h2_upstream *uc, struct h2_stream *st)
{
	release_owed(uc, st, st->up_conn_owed);
	if (st->up_prev)
		st->up_prev->up_next = st->up_next;
	else
		uc->streams = st->up_next;
	if (st->up_next)
		st->up_next->up_prev = st->up_prev;
	st->up_next = st->up_prev = NULL;
	st->up = NULL;
}

void h2_upstream_relink(struct h2_upstream *uc, struct h2_stream *from, struct h2_stream *to)
{
	int32_t id = from->up_id;

	h2_upstream_unlink(uc, from);
	h2_upstream_link(uc, to, id);
	uc->pc.n_streams--; /* the same upstream stream: counted once already */
	if (uc->c.session)
		nghttp2_session_set_stream_user_data(uc->c.session, id, to);
}

static void close_gracefully(struct h2_upstream *uc)
{
	if (uc->c.dead || uc->state == H2_UP_CLOSING)
		return;
	set_state(uc, H2_UP_CLOSING);
	if (!uc->c.io_ready) { /* nothing to say goodbye on */
		h2_conn_kill(&uc->c);
		return;
	}
	log_debug("upstream_closing endpoint=%s", uc->name);
	nghttp2_session_terminate_session(uc->c.session, NGHTTP2_NO_ERROR);
	h2_conn_dirty(&uc->c);
}

/* After a flush: close it if idle and not wanted any more. */
static void flushed(struct h2_conn *c)
{
	struct h2_upstream *uc = (struct h2_upstream *)c;

	if (uc->c.dead || uc->pc.n_streams || uc->pc.accepting)
		return;
	close_gracefully(uc);
}

void h2_upstream_destroy(struct h2_upstream *uc)
{
	struct splitter *s = uc->s;
	struct upstream_pool *p = uc->pc.pool;
	const char *why = uc->fail_why ? uc->fail_why : "connection closed";
	bool connect_failed = !uc->ever_open;

	uc->c.dirty = true; /* never queued again */
	loop_timer_cancel(s->ctx.loop, uc->connect_timer);
	upstream_pool_unlink(&uc->pc);
	if (p)
		release_pool(s, p);
	while (uc->streams) {
		struct h2_stream *st = uc->streams;

		h2_upstream_unlink(uc, st);
		if (st->leg == H2_LEG_OPEN)
			h2_stream_us_lost(st, connect_failed, !uc->tcp_up, why);
	}
	nghttp2_session_del(uc->c.session);
	loop_del_fd(s->ctx.loop, uc->c.fd);
	h2_conn_fini(&uc->c);
	if (uc->prev)
		uc->prev->next = uc->next;
	else
		s->us_list = uc->next;
	if (uc->next)
		uc->next->prev = uc->prev;
	stats_dec(s->stats, ST_UPSTREAM_CONNS_ACTIVE);
	log_debug("upstream_closed endpoint=%s", uc->name);
	free(uc);
}

/* Endpoints (ip, port) a state lists, sorted for bsearch. */
struct ep_key {
	struct h2s_ip ip;
	uint16_t port;
};

static int ep_cmp(const void *a, const void *b)
{
	const struct ep_key *x = a, *y = b;
	int c = memcmp(&x->ip, &y->ip, sizeof(x->ip));

	return c ? c : (int)x->port - (int)y->port;
}

struct retire_ctx {
	struct ep_key *v;
	size_t n;
	bool all; /* no state: everything is gone */
};

static void retire_pool(struct upstream_pool *p, void *arg)
{
	struct retire_ctx *rc = arg;
	struct ep_key k = {.ip = p->key.ip, .port = p->key.port};

	p->retired = rc->all || !rc->n || !bsearch(&k, rc->v, rc->n, sizeof(k), ep_cmp);
	for (struct upstream_pool_conn *pc = p->conns; pc; pc = pc->next) {
		struct h2_upstream *uc = container_of(pc, struct h2_upstream, pc);

		set_state(uc, uc->state);
		h2_conn_dirty(&uc->c);
	}
}

void h2_upstream_snapshot_changed(struct splitter *s, const struct state *st)
{
	struct retire_ctx rc = {.all = !st};
	size_t n = 0;

	if (!s->pools.n)
		return; /* nothing to retire: skip sorting every endpoint of the state */
	for (int i = 0; st && i < st->n_svcs; i++)
		n += (size_t)st->svcs[i].n_eps;
	if (n && !(rc.v = malloc(n * sizeof(*rc.v))))
		return; /* keep pools as they are until the next snapshot */
	for (int i = 0; st && i < st->n_svcs; i++)
		for (int j = 0; j < st->svcs[i].n_eps; j++)
			rc.v[rc.n++] =
			    (struct ep_key){st->svcs[i].eps[j].ip, st->svcs[i].eps[j].port};
	if (rc.n)
		qsort(rc.v, rc.n, sizeof(*rc.v), ep_cmp);
	upstream_pools_foreach(&s->pools, retire_pool, &rc);
	free(rc.v);
}

void h2_upstream_keepalive(struct splitter *s)
{
	uint64_t now = loop_now_ms();
	uint64_t time_ms = (uint64_t)s->cfg->upstream_keepalive_time_s * 1000;
	uint64_t timeout_ms = (uint64_t)s->cfg->upstream_keepalive_timeout_s * 1000;

	for (struct h2_upstream *uc = s->us_list; uc; uc = uc->next) {
		if (uc->c.dead || !uc->ever_open || !uc->pc.n_streams)
			continue;
		if (uc->ping_sent_ms) {
			if (now - uc->ping_sent_ms < timeout_ms)
				continue;
			stats_inc(s->stats, ST_UPSTREAM_PING_TIMEOUTS);
			stats_limit_inc(s->stats, LIMIT_UPSTREAM_KEEPALIVE_TIMEOUT);
			conn_fail(uc, "no PING ACK in time", -ETIMEDOUT);
			continue;
		}
		if (!time_ms || !uc->may_ping || now - uc->last_rx_ms < time_ms)
			continue;
		if (nghttp2_submit_ping(uc->c.session, NGHTTP2_FLAG_NONE, NULL)) {
			stats_inc(s->stats, ST_UNEXPECTED);
			continue;
		}
		uc->ping_sent_ms = now;
		uc->may_ping = false;
		h2_conn_dirty(&uc->c);
	}
}

void h2_upstream_sweep(struct splitter *s, bool all_idle)
{
	uint64_t now = loop_now_ms();

	for (struct h2_upstream *uc = s->us_list; uc; uc = uc->next) {
		if (uc->pc.n_streams || uc->c.dead)
			continue;
		if (all_idle || now - uc->idle_since_ms > H2_UPSTREAM_IDLE_MS)
			close_gracefully(uc);
	}
}
