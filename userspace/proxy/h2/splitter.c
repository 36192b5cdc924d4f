// SPDX-License-Identifier: Apache-2.0
/*
 * The splitter of one worker (see splitter.h), the top of proxy/h2: it
 * owns the downstream and upstream connections, the shared I/O buffers and
 * the balancer set, and runs the flush at the end of every loop pass: route
 * woken and queued streams, then flush (or destroy) dirty connections,
 * until nothing is left. Also its timers, snapshot changes and drain.
 */
#include <malloc.h>
#include <stdlib.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"
#include "proxy/h2/h2_downstream.h"
#include "proxy/h2/h2_route.h"
#include "proxy/h2/h2_stream.h"
#include "proxy/h2/h2_upstream.h"
#include "proxy/h2/splitter.h"

/* Routes woken and queued streams, flushes dirty connections and destroys
 * killed ones, until nothing is left to do. Runs once per loop pass (a pass
 * hook), so the output of every event in the pass goes out with one send()
 * per connection. */
static void flush(struct splitter *s)
{
	bool swept = false;

	if (s->flushing)
		return;
	s->flushing = true;
	for (;;) {
		struct h2_conn *c;

		if (h2_route_step(s))
			continue;
		c = h2_conn_next_dirty(&s->io);
		if (!c && s->draining && !s->ds_list && !swept) {
			/* Drained: upstream connections are of no more use. */
			swept = true;
			h2_upstream_sweep(s, true);
			continue;
		}
		if (!c)
			break;
		h2_conn_flush(c);
	}
	s->flushing = false;
}

static void flush_cb(void *arg)
{
	flush(arg);
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
	h2_conn_kick(&s->io);
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
	h2_conn_kick(&s->io);
}

static void on_pass_end(struct loop *l, void *arg)
{
	(void)l;
	flush(arg);
}

struct splitter *splitter_new(const struct splitter_ctx *ctx)
{
	struct splitter *s;

	if (!ctx->loop || !ctx->cfg || !ctx->stats || !ctx->metrics || !ctx->owner.closed)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->ctx = *ctx;
	s->cfg = ctx->cfg;
	s->stats = ctx->stats;
	h2_mem_init(&s->mem);
	s->lb = balancer_set_new(loop_now_ns() ^ ((uint64_t)(ctx->worker_id + 1) << 40),
				 s->cfg->lb_policy);
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
	s->rng = (loop_now_ns() ^ ((uint64_t)(ctx->worker_id + 1) << 32)) | 1;
	s->nv = calloc(H2_HDRS_MAX_FIELDS + 4, sizeof(*s->nv));
	if (h2_conn_io_init(&s->io, ctx->loop, ctx->stats) || !s->lb || !s->nv ||
	    upstream_pools_init(&s->pools) || h2_downstream_setup(s) || h2_upstream_setup(s) ||
	    !(s->sweep_timer = loop_timer_add(ctx->loop, H2_SWEEP_MS, on_sweep, s)) ||
	    (s->cfg->upstream_keepalive_time_s &&
	     !(s->keepalive_timer =
		   loop_timer_add(ctx->loop, keepalive_tick_ms(s->cfg), on_keepalive, s)))) {
		splitter_free(s);
		return NULL;
	}
	s->io.blocks = &s->blocks;
	/* Without the hook (no free slot) every callback flushes on its own. */
	s->pass_hook = !loop_add_pass_hook(ctx->loop, on_pass_end, s);
	if (!s->pass_hook) {
		s->io.flush = flush_cb;
		s->io.flush_arg = s;
	}
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
	if (s->pass_hook)
		loop_del_pass_hook(s->ctx.loop, on_pass_end, s);
	loop_timer_cancel(s->ctx.loop, s->sweep_timer);
	loop_timer_cancel(s->ctx.loop, s->keepalive_timer);
	loop_timer_cancel(s->ctx.loop, s->drain_timer);
	loop_timer_cancel(s->ctx.loop, s->retire_timer);
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
	h2_conn_io_fini(&s->io);
	free(s->nv);
	free(s);
}

int splitter_conn_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n)
{
	return h2_downstream_start(s, fd, ci, pre, n);
}

void splitter_snapshot_changed(struct splitter *s, const struct snapshot *snap)
{
	s->snap = snap;

	balancer_set_update(s->lb, snap ? snap->st : NULL, snap ? snap->generation : 0);
	h2_upstream_snapshot_changed(s, snap ? snap->st : NULL);
	/* Connections to a Service that is no longer redirected: told to go. */
	for (struct h2_downstream *ds = s->ds_list; snap && ds; ds = ds->next) {
		const struct state_service *svc = h2_route_service_of(snap, &ds->ci.od);

		if (!svc || svc->retired_ms || svc->id != ds->ci.od.service_id)
			h2_downstream_retire(ds);
	}
	h2_conn_kick(&s->io);
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
	h2_conn_kick(&s->io);
}

void splitter_drain(struct splitter *s)
{
	if (s->draining)
		return;
	s->draining = true;
	log_info("splitter_draining worker=%d downstream_connections=%llu", s->ctx.worker_id,
		 (unsigned long long)s->n_ds);
	for (struct h2_downstream *ds = s->ds_list; ds; ds = ds->next)
		h2_downstream_shutdown_notice(ds);
	s->drain_timer = loop_timer_add(s->ctx.loop, H2_DRAIN_NOTICE_MS, on_drain_final, s);
	if (!s->drain_timer)
		on_drain_final(s->ctx.loop, NULL, s);
	h2_conn_kick(&s->io);
}
