// SPDX-License-Identifier: Apache-2.0
/*
 * The splitter of one worker (see splitter.h): the registry of its
 * downstream and upstream connections, the shared I/O path (read into one
 * buffer, serialize frames into one buffer, one send() per connection per
 * pass), the end-of-callback flush that also routes queued streams and
 * destroys dead connections, snapshot changes and drain.
 */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"
#include "proxy/h2/splitter.h"

void h2_conn_dirty(struct h2_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->s->dirty;
	c->s->dirty = c;
}

void h2_conn_kill(struct h2_conn *c)
{
	c->dead = true;
	h2_conn_dirty(c);
}

void h2_conn_fini(struct h2_conn *c)
{
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->pend);
	c->pend = NULL;
	c->pend_len = c->pend_off = 0;
}

/* n > 0 bytes read, 0 at EOF, -EAGAIN, or -errno. */
static ssize_t conn_recv(struct h2_conn *c, uint8_t *buf, size_t len)
{
	ssize_t n;
	int e;

	if (!c->ssl) {
		n = recv(c->fd, buf, len, 0);
		if (n < 0)
			return errno == EINTR ? -EAGAIN : -errno;
		return n;
	}
	ERR_clear_error();
	n = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0)
		return n;
	e = SSL_get_error(c->ssl, (int)n);
	if (e == SSL_ERROR_WANT_READ)
		return -EAGAIN;
	if (e == SSL_ERROR_WANT_WRITE) {
		c->want_out = true;
		return -EAGAIN;
	}
	return e == SSL_ERROR_ZERO_RETURN ? 0 : -EPROTO;
}

/* Bytes written (maybe 0 when the socket is full), or -errno. */
static ssize_t conn_send(struct h2_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t n;
	int e;

	if (!c->ssl) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	}
	ERR_clear_error();
	n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0)
		return n;
	e = SSL_get_error(c->ssl, (int)n);
	return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -EPROTO;
}

/* nghttp2 gives up on a session after a fatal receive error (floods, too many
 * CONTINUATIONs) without sending anything: tell the peer why ourselves, best
 * effort, when no partial frame is pending on the socket. */
static void goaway_raw(struct h2_conn *c, int err)
{
	uint32_t code = c->fatal_code ? c->fatal_code
			: err == NGHTTP2_ERR_FLOODED || err == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
			    ? NGHTTP2_ENHANCE_YOUR_CALM
			    : NGHTTP2_PROTOCOL_ERROR;
	int32_t last = nghttp2_session_get_last_proc_stream_id(c->session);
	uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};

	if (c->ssl || c->pend_len || err == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
		return;
	f[9] = (uint8_t)((uint32_t)last >> 24 & 0x7f);
	f[10] = (uint8_t)(last >> 16);
	f[11] = (uint8_t)(last >> 8);
	f[12] = (uint8_t)last;
	f[13] = (uint8_t)(code >> 24);
	f[14] = (uint8_t)(code >> 16);
	f[15] = (uint8_t)(code >> 8);
	f[16] = (uint8_t)code;
	if (send(c->fd, f, sizeof(f), MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof(f))
		stats_inc(c->s->stats, ST_GOAWAY_SENT);
}

int h2_conn_recv(struct h2_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t rv = nghttp2_session_mem_recv(c->session, buf, len);

	if (rv >= 0)
		return 0;
	log_info("h2_protocol_error side=%s err=\"%s\"", c->is_upstream ? "upstream" : "downstream",
		 nghttp2_strerror((int)rv));
	if (!c->is_upstream)
		h2_downstream_recv_failed((struct h2_downstream *)c, (int)rv);
	goaway_raw(c, (int)rv);
	return -EPROTO;
}

int h2_conn_read(struct h2_conn *c)
{
	struct splitter *s = c->s;

	c->want_out = false;
	for (int i = 0; (c->ssl || i < H2_READS_PER_EVENT) && !c->dead; i++) {
		ssize_t n = conn_recv(c, s->rbuf, H2_RBUF_SIZE);
		int rv;

		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return n ? (int)n : -EPIPE;
		if (!c->is_upstream)
			stats_add(s->stats, ST_BYTES_IN, (uint64_t)n);
		rv = h2_conn_recv(c, s->rbuf, (size_t)n);
		if (rv)
			return rv;
		/* A short plain read drained the socket; TLS may hold more records. */
		if (!c->ssl && (size_t)n < H2_RBUF_SIZE)
			return 0;
	}
	return 0;
}

ssize_t h2_conn_send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
			void *user_data)
{
	struct h2_conn *c = user_data;
	struct splitter *s = c->s;
	size_t room = H2_WBUF_SIZE - s->wlen;

	(void)session;
	(void)flags;
	if (!room)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (len > room)
		len = room;
	memcpy(s->wbuf + s->wlen, data, len);
	s->wlen += len;
	return (ssize_t)len;
}

uint8_t *h2_conn_frame_room(struct splitter *s, size_t len)
{
	if (s->wlen + 9 + len > H2_WBUF_SIZE)
		return NULL;
	return s->wbuf + s->wlen;
}

/* Write |buf|; keep what the socket does not take. 1: all written, 0: some
 * is pending now, -errno. */
static int write_or_keep(struct h2_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t n = conn_send(c, buf, len);

	if (n < 0)
		return (int)n;
	if (!c->is_upstream)
		stats_add(c->s->stats, ST_BYTES_OUT, (uint64_t)n);
	if ((size_t)n == len)
		return 1;
	c->pend = malloc(len - (size_t)n);
	if (!c->pend)
		return -ENOMEM;
	memcpy(c->pend, buf + n, len - (size_t)n);
	c->pend_len = len - (size_t)n;
	c->pend_off = 0;
	return 0;
}

int h2_conn_write(struct h2_conn *c)
{
	struct splitter *s = c->s;
	int rv;

	if (!c->io_ready)
		return 0;
	if (c->pend_len) {
		ssize_t n = conn_send(c, c->pend + c->pend_off, c->pend_len);

		if (n < 0)
			return (int)n;
		if (!c->is_upstream)
			stats_add(s->stats, ST_BYTES_OUT, (uint64_t)n);
		c->pend_off += (size_t)n;
		c->pend_len -= (size_t)n;
		if (c->pend_len)
			return 0; /* still full: nothing new is serialized */
		free(c->pend);
		c->pend = NULL;
		c->pend_off = 0;
	}
	for (;;) {
		s->wlen = 0;
		rv = nghttp2_session_send(c->session);
		if (rv) {
			log_info("h2_send_error side=%s err=\"%s\"",
				 c->is_upstream ? "upstream" : "downstream", nghttp2_strerror(rv));
			s->wlen = 0;
			return -EPROTO;
		}
		if (!s->wlen)
			return 0;
		rv = write_or_keep(c, s->wbuf, s->wlen);
		s->wlen = 0;
		if (rv <= 0)
			return rv;
	}
}

static void conn_destroy(struct h2_conn *c)
{
	if (c->is_upstream)
		h2_upstream_destroy((struct h2_upstream *)c);
	else
		h2_downstream_destroy((struct h2_downstream *)c);
}

/* An upstream connection goes through h2_upstream_fail(), so that it takes
 * no stream between now and its destruction in this same flush. */
static void conn_end(struct h2_conn *c, const char *why, int err)
{
	if (c->is_upstream)
		h2_upstream_fail((struct h2_upstream *)c, why, err);
	else
		h2_conn_kill(c);
}

static void conn_flush(struct h2_conn *c)
{
	int err = h2_conn_write(c);

	if (err) {
		log_debug("h2_write_failed side=%s err=%d",
			  c->is_upstream ? "upstream" : "downstream", err);
		conn_end(c, "write failed", err);
		return;
	}
	if (!c->io_ready)
		return;
	if (!c->pend_len && !nghttp2_session_want_read(c->session) &&
	    !nghttp2_session_want_write(c->session)) {
		/* Both sides are done: GOAWAY and no streams left, or nghttp2
		 * ended the session after a connection error of the peer's. */
		conn_end(c, "connection closed", 0);
		return;
	}
	if (loop_set_events(c->s->w->loop, c->fd,
			    EPOLLIN | (c->pend_len || c->want_out ? EPOLLOUT : 0)) == 0)
		c->events = EPOLLIN | (c->pend_len || c->want_out ? EPOLLOUT : 0);
	if (c->is_upstream)
		h2_upstream_after_flush((struct h2_upstream *)c);
}

void splitter_flush(struct splitter *s)
{
	bool swept = false;

	if (s->flushing)
		return;
	s->flushing = true;
	for (;;) {
		struct balancer_waiter *w = balancer_woken(s->lb);
		struct h2_conn *c;

		if (w) { /* first come: before the new streams in route_q */
			h2_stream_wake(w);
			continue;
		}
		if (s->route_q) {
			struct h2_stream *st = s->route_q;

			s->route_q = st->q_next;
			if (s->route_q)
				s->route_q->q_prev = NULL;
			else
				s->route_tail = NULL;
			st->q_next = NULL;
			h2_stream_route(st);
			continue;
		}
		c = s->dirty;
		if (!c && s->draining && !s->ds_list && !swept) {
			/* Drained: upstream connections are of no more use. */
			swept = true;
			h2_upstream_sweep(s, true);
			continue;
		}
		if (!c)
			break;
		s->dirty = c->dirty_next;
		c->dirty = false;
		if (c->dead)
			conn_destroy(c);
		else
			conn_flush(c);
	}
	s->flushing = false;
}

/* Upstream keepalive checks, four per --upstream-keepalive-timeout (at
 * least every 100 ms), so a dead connection is found within about
 * keepalive time + timeout. */
static uint64_t keepalive_tick_ms(const struct config *cfg)
{
	uint64_t ms = (uint64_t)cfg->upstream_keepalive_timeout_s * 1000 / 4;

	return ms < 100 ? 100 : ms;
}

static void on_keepalive(struct loop *l, struct loop_timer *t, void *arg)
{
	struct splitter *s = arg;

	(void)t;
	s->keepalive_timer = loop_timer_add(l, keepalive_tick_ms(s->cfg), on_keepalive, s);
	h2_upstream_keepalive(s);
	splitter_kick(s);
}

/* glibc keeps the heap that a burst of connections freed (over 100 MiB after
 * 8,000 idle ones), so RSS would stay at the peak for good: once enough
 * connections have closed since the last time, hand whole free pages back. */
static void trim_after_closes(struct splitter *s)
{
	uint64_t closed = stats_get(s->stats, ST_DOWNSTREAM_CONNS_TOTAL) -
			  stats_get(s->stats, ST_DOWNSTREAM_CONNS_ACTIVE);

	if (closed - s->trimmed_at_closed < H2_TRIM_AFTER_CLOSED)
		return;
	s->trimmed_at_closed = closed;
	malloc_trim(0);
}

static void on_sweep(struct loop *l, struct loop_timer *t, void *arg)
{
	struct splitter *s = arg;

	(void)t;
	s->sweep_timer = loop_timer_add(l, H2_SWEEP_MS, on_sweep, s);
	h2_upstream_sweep(s, s->draining && !s->ds_list);
	trim_after_closes(s);
	splitter_kick(s);
}

static void on_pass_end(struct loop *l, void *arg)
{
	(void)l;
	splitter_flush(arg);
}

struct splitter *splitter_new(struct worker *w)
{
	struct splitter *s = calloc(1, sizeof(*s));
	enum lb_policy dflt;

	if (!s)
		return NULL;
	if (!w->sh || !w->sh->cfg) { /* the limits come from the config */
		free(s);
		return NULL;
	}
	s->w = w;
	h2_mem_init(&s->mem);
	s->cfg = w->sh->cfg;
	s->stats = &w->stats;
	dflt = s->cfg->lb_policy;
	s->lb = balancer_set_new(loop_now_ns() ^ ((uint64_t)(w->id + 1) << 40), dflt);
	if (s->lb) {
		struct balancer_params bp = {
		    .ewma_decay_ms = (uint32_t)s->cfg->lb_ewma_decay_ms,
		    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
		    .eject_failures = (uint32_t)s->cfg->outlier_failures,
		    .eject_failure_pct = (uint32_t)s->cfg->outlier_failure_pct,
		    .eject_base_ms = (uint32_t)s->cfg->outlier_ejection_ms,
		    .max_inflight_ep = (uint32_t)s->cfg->max_inflight_per_endpoint,
		    .max_inflight_svc = (uint32_t)s->cfg->max_inflight_per_service,
		    .max_pending = (uint32_t)s->cfg->max_pending,
		    .slow_start_ms = (uint32_t)s->cfg->slow_start_ms,
		};

		balancer_set_params(s->lb, &bp);
	}
	s->rbuf = malloc(H2_RBUF_SIZE);
	s->wbuf = malloc(H2_WBUF_SIZE);
	s->nv = calloc(H2_HDRS_MAX_FIELDS + 4, sizeof(*s->nv));
	if (!s->lb || !s->rbuf || !s->wbuf || !s->nv || upstream_pools_init(&s->pools) ||
	    h2_downstream_setup(s) || h2_upstream_setup(s) ||
	    !(s->sweep_timer = loop_timer_add(w->loop, H2_SWEEP_MS, on_sweep, s)) ||
	    (s->cfg->upstream_keepalive_time_s &&
	     !(s->keepalive_timer = loop_timer_add(w->loop, keepalive_tick_ms(s->cfg),
						   on_keepalive, s)))) {
		splitter_free(s);
		return NULL;
	}
	/* Without the hook (no free slot) every callback flushes on its own. */
	s->pass_hook = !loop_add_pass_hook(w->loop, on_pass_end, s);
	return s;
}

void splitter_free(struct splitter *s)
{
	if (!s)
		return;
	s->flushing = true; /* destroy below, no flush */
	while (s->ds_list)
		h2_downstream_destroy(s->ds_list);
	while (s->us_list)
		h2_upstream_destroy(s->us_list);
	h2_stream_pool_fini(s);
	s->route_q = s->route_tail = NULL;
	s->dirty = NULL;
	if (s->w && s->w->loop) {
		if (s->pass_hook)
			loop_del_pass_hook(s->w->loop, on_pass_end, s);
		loop_timer_cancel(s->w->loop, s->sweep_timer);
		loop_timer_cancel(s->w->loop, s->keepalive_timer);
		loop_timer_cancel(s->w->loop, s->drain_timer);
		loop_timer_cancel(s->w->loop, s->retire_timer);
	}
	if (s->pools.tab)
		upstream_pools_fini(&s->pools);
	balancer_set_free(s->lb);
	h2_blocks_fini(&s->blocks);
	h2_mem_fini(&s->mem);
	if (s->ds_cbs)
		nghttp2_session_callbacks_del(s->ds_cbs);
	if (s->us_cbs)
		nghttp2_session_callbacks_del(s->us_cbs);
	if (s->ds_opt)
		nghttp2_option_del(s->ds_opt);
	if (s->us_opt)
		nghttp2_option_del(s->us_opt);
	SSL_CTX_free(s->ssl_ctx);
	free(s->rbuf);
	free(s->wbuf);
	free(s->nv);
	free(s);
}

int splitter_conn_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n)
{
	return h2_downstream_start(s, fd, ci, pre, n);
}

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
		splitter_retire_arm(s);
	splitter_kick(s);
}

void splitter_retire_arm(struct splitter *s)
{
	if (s->retire_timer)
		return;
	s->retire_timer = loop_timer_add(s->w->loop, H2_DRAIN_NOTICE_MS / 4, on_retire_tick, s);
	if (!s->retire_timer)
		stats_inc(s->stats, ST_UNEXPECTED); /* the drain's GOAWAY still comes */
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

const struct state_service *splitter_service_of(const struct snapshot *snap,
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

void splitter_snapshot_changed(struct splitter *s)
{
	const struct snapshot *snap = s->w->snap;

	balancer_set_update(s->lb, snap ? snap->st : NULL, snap ? snap->generation : 0);
	h2_upstream_snapshot_changed(s, snap ? snap->st : NULL);
	/* Connections to a Service that is no longer redirected: told to go. */
	for (struct h2_downstream *ds = s->ds_list; snap && ds; ds = ds->next) {
		const struct state_service *svc = splitter_service_of(snap, &ds->ci.od);

		if (!svc || svc->retired_ms || svc->id != ds->ci.od.service_id)
			h2_downstream_retire(ds);
	}
	splitter_kick(s);
}

static void on_drain_final(struct loop *l, struct loop_timer *t, void *arg)
{
	struct splitter *s = arg;

	(void)l;
	(void)t;
	s->drain_timer = NULL;
	s->drain_final = true;
	for (struct h2_downstream *ds = s->ds_list; ds; ds = ds->next)
		h2_downstream_goaway(ds);
	splitter_kick(s);
}

void splitter_drain(struct splitter *s)
{
	if (s->draining)
		return;
	s->draining = true;
	log_info("splitter_draining worker=%d downstream_connections=%llu", s->w->id,
		 (unsigned long long)s->n_ds);
	for (struct h2_downstream *ds = s->ds_list; ds; ds = ds->next)
		h2_downstream_shutdown_notice(ds);
	s->drain_timer = loop_timer_add(s->w->loop, H2_DRAIN_NOTICE_MS, on_drain_final, s);
	if (!s->drain_timer)
		on_drain_final(s->w->loop, NULL, s);
	splitter_kick(s);
}
