/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the splitter's own modules share (splitter.c, h2_downstream.c,
 * h2_upstream.c, h2_stream.c), not part of the worker's interface. Every
 * object lives on one worker loop. Invariant: nothing is freed inside an
 * nghttp2 callback; connections are killed (marked) there and destroyed by
 * splitter_flush(), which runs at the end of every loop pass.
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
#include "proxy/h2/h2_headers.h"
#include "proxy/h2/h2_mem.h"
#include "proxy/h2/upstream_pool.h"
#include "proxy/worker.h"

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
/* Output: frames are serialized into one worker buffer and written with one
 * send() per connection per pass; what a send leaves is kept per connection
 * and nothing more is serialized until it is gone. */
#define H2_WBUF_SIZE (128 * 1024)
#define H2_RBUF_SIZE (128 * 1024)
#define H2_READS_PER_EVENT 4
/* Retries: a stream goes to at most this many endpoints. A request body is
 * held for a retry only up to H2_RETAIN_MAX bytes per stream and
 * H2_RETAIN_CONN_MAX per downstream connection (well below its window). */
#define H2_MAX_ATTEMPTS 3
#define H2_RETAIN_MAX (64 * 1024)
#define H2_RETAIN_CONN_MAX (1024 * 1024)
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

/* The I/O half shared by downstream and upstream connections. */
struct h2_conn {
	struct splitter *s;
	int fd;			  /* owned */
	nghttp2_session *session; /* owned */
	SSL *ssl;		  /* owned; NULL: cleartext */
	uint8_t *pend;		  /* owned: bytes the last send() left */
	size_t pend_len, pend_off;
	uint32_t events; /* the epoll mask we asked for */
	bool io_ready;	 /* connected (and TLS done): may read and write */
	bool want_out;	 /* TLS needs the socket writable to go on */
	bool dirty;	 /* on s->dirty */
	bool dead;	 /* to be destroyed by splitter_flush() */
	bool is_upstream;
	uint32_t fatal_code; /* GOAWAY code for a receive error we raised (0: derive) */
	struct h2_conn *dirty_next;
};

struct splitter {
	struct worker *w;	  /* borrowed: the owner */
	const struct config *cfg; /* borrowed */
	struct worker_stats *stats;
	struct balancer_set *lb; /* owned */
	struct upstream_pools pools;
	struct h2_downstream *ds_list;		/* owned, all downstream connections */
	struct h2_upstream *us_list;		/* owned, all upstream connections */
	struct h2_conn *dirty;			/* borrowed: to flush (or destroy) */
	struct h2_stream *route_q, *route_tail; /* borrowed: streams to (re)route, FIFO */
	struct h2_blocks blocks;
	struct h2_mem mem; /* nghttp2's allocator for every session of this worker */
	uint8_t *rbuf, *wbuf; /* owned scratch */
	size_t wlen;
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
	bool pass_hook; /* splitter_flush() runs at the end of every loop pass */
	struct h2_stream *stream_pool; /* owned: freed streams kept for reuse (h2_stream.c) */
	size_t n_stream_pool;
	uint64_t n_ds;
	uint64_t trimmed_at_closed; /* downstream connections closed as of the last malloc_trim() */
	uint64_t connect_warn_ms; /* rate limit for upstream_connect_failed */
	uint32_t connect_warn_suppressed;
};

/* The Service a connection's streams go to: the one its recorded id names
 * if that is still the VIP:port the app dialled, else the desired one at
 * that VIP:port now (an id taken over, a port renamed), else NULL. A retired
 * one is found by id only. */
const struct state_service *splitter_service_of(const struct snapshot *snap,
						const struct h2s_origdst *od);

/* A downstream connection began retiring: its final GOAWAY follows
 * H2_DRAIN_NOTICE_MS after its shutdown notice. */
void splitter_retire_arm(struct splitter *s);

/* Flush (or destroy) |c| in the next splitter_flush(). */
void h2_conn_dirty(struct h2_conn *c);
/* Destroy |c| in the next splitter_flush(); its callbacks do nothing more. */
void h2_conn_kill(struct h2_conn *c);
/* Feed |len| received bytes to the session. On a protocol error: log, count
 * (downstream limits), GOAWAY (best effort) and -EPROTO; else 0. */
int h2_conn_recv(struct h2_conn *c, const uint8_t *buf, size_t len);
/* Read what the socket has into the session. 0, or -errno (EOF: -EPIPE). */
int h2_conn_read(struct h2_conn *c);
/* Write what is pending and what the session has to send, until the socket
 * is full. 0, or -errno on a write error. */
int h2_conn_write(struct h2_conn *c);
/* Free the I/O half (not the session). */
void h2_conn_fini(struct h2_conn *c);
/* nghttp2 send callback for both sides (user_data: the h2_conn). */
ssize_t h2_conn_send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
			void *user_data);
/* Room for a whole DATA frame of |len| payload bytes in the write buffer:
 * NULL means NGHTTP2_ERR_WOULDBLOCK. The caller appends exactly 9 + len. */
uint8_t *h2_conn_frame_room(struct splitter *s, size_t len);
/* Routes queued streams, flushes dirty connections and destroys killed ones,
 * until nothing is left to do. Runs once per loop pass (a pass hook), so the
 * output of every event in the pass goes out with one send() per connection. */
void splitter_flush(struct splitter *s);
/* The end of a loop callback of ours: flush now unless the pass hook will. */
static inline void splitter_kick(struct splitter *s)
{
	if (!s->pass_hook)
		splitter_flush(s);
}

#endif
