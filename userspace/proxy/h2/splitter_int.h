/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the splitter's own modules share (splitter.c, h2_downstream.c,
 * h2_upstream.c and the bridge: h2_stream.c, h2_route.c, h2_reply.c): the
 * limits and struct splitter, not part of the owner's interface. Every
 * object lives on ctx.loop. Invariant: nothing is freed inside an nghttp2
 * callback; connections are killed (marked) there and destroyed by the
 * flush at the end of every loop pass.
 */
#ifndef H2SPLIT_SPLITTER_INT_H
#define H2SPLIT_SPLITTER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "balancer/balancer.h"
#include "base/stats.h"
#include "proxy/h2/h2_buf.h"
#include "proxy/h2/h2_conn.h"
#include "proxy/h2/h2_headers.h"
#include "proxy/h2/h2_mem.h"
#include "proxy/h2/splitter.h"
#include "proxy/h2/upstream_pool.h"

/* Flow control, both sides: the windows are the memory bound per stream
 * (--max-pending-bytes) and per connection (bytes are consumed only once the
 * other side took them). */
#define H2_CONN_WINDOW (16 * 1024 * 1024)
/* An upstream connection may carry several clients' streams (--upstream-source
 * node, hostNetwork pods). Of its window, one client's undelivered bytes may
 * hold this much; past it their connection window is given back on arrival
 * (the stream window still bounds them), so a client that stops reading
 * cannot stall the others' streams on the connection. */
#define H2_CLIENT_CONN_SHARE (H2_CONN_WINDOW / 4)
/* The other downstream limits are flags (config.h); these stay fixed. What
 * an upstream may send in one header block is the most a block can hold. */
#define H2_MAX_HEADER_LIST H2_HDRS_MAX_BYTES
#define H2_DS_RESET_BURST 1000
#define H2_DS_RESET_RATE 33
/* A new connection whose first bytes held a whole request: our SETTINGS
 * (and the ACK of the client's) wait this long for the response, so both
 * go out in one write (h2_downstream.c, ds_hold()). */
#define H2_DS_SETTINGS_HOLD_MS 2
/* Retries: one attempt (of a retry or hedging policy, or the only one) tries
 * at most H2_MAX_ATTEMPTS endpoints that surely did not process it; a stream
 * at most H2_TRIED_MAX in all. A request body is held for a retry only up to
 * --retry-buffer-bytes per stream and H2_RETAIN_CONN_MAX per downstream
 * connection (well below its window). */
#define H2_MAX_ATTEMPTS 3
#define H2_TRIED_MAX 8
#define H2_RETAIN_CONN_MAX (8 * 1024 * 1024)
/* Stream structs (with their header arenas) a worker keeps for reuse. */
#define H2_STREAMS_KEEP 1024
/* Upstream connections. */
#define H2_CONNECT_TIMEOUT_MS 3000
#define H2_UPSTREAM_IDLE_MS 60000
#define H2_SWEEP_MS 5000
/* Closed downstream connections that make a sweep hand free heap pages back. */
#define H2_TRIM_AFTER_CLOSED 256
/* Drain: shutdown notice, then the final GOAWAY one "round trip" later. */
#define H2_DRAIN_NOTICE_MS 1000

struct h2_stream;
struct h2_downstream;
struct h2_upstream;

struct splitter {
	struct splitter_ctx ctx;	 /* the owner's: everything in it is borrowed */
	const struct config *cfg;	 /* ctx.cfg */
	struct worker_stats *stats;	 /* ctx.stats */
	const struct snapshot *snap;	 /* borrowed from the owner: the current one */
	struct h2_conn_io io;		 /* shared buffers, connections to flush */
	struct balancer_set *lb; /* owned */
	struct upstream_pools pools;
	struct h2_downstream *ds_list;		/* owned, all downstream connections */
	struct h2_upstream *us_list;		/* owned, all upstream connections */
	struct h2_stream *route_q, *route_tail; /* borrowed: streams to (re)route, FIFO */
	struct h2_blocks blocks;
	struct h2_mem mem; /* nghttp2's allocator for every session of this worker */
	nghttp2_session_callbacks *ds_cbs, *us_cbs; /* owned */
	nghttp2_option *ds_opt, *us_opt;	    /* owned */
	nghttp2_nv *nv;				    /* owned scratch */
	struct loop_timer *sweep_timer;
	struct loop_timer *keepalive_timer; /* NULL: upstream keepalive off */
	struct loop_timer *drain_timer;
	struct loop_timer *retire_timer; /* final GOAWAYs of retired downstreams */
	SSL_CTX *ssl_ctx; /* owned, made on first TLS upstream */
	bool ssl_ctx_failed;
	bool draining, drain_final;
	bool flushing;
	bool pass_hook; /* the flush runs at the end of every loop pass */
	struct h2_stream *stream_pool; /* owned: freed streams kept for reuse (h2_stream.c) */
	size_t n_stream_pool;
	uint64_t n_ds;
	uint64_t rng;		    /* xorshift state: retry backoff jitter */
	uint64_t trimmed_at_closed; /* downstream connections closed as of the last malloc_trim() */
	uint64_t connect_warn_ms; /* rate limit for upstream_connect_failed */
	uint32_t connect_warn_suppressed;
};

#endif
