/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A downstream connection: the client pod's HTTP/2 connection, served by an
 * nghttp2 server session. It owns its streams (h2_stream) and its netns
 * reference. Its limits come from the config (--max-*, --idle-timeout,
 * --header-timeout); each hit is counted and logged once per connection.
 */
#ifndef H2SPLIT_H2_DOWNSTREAM_H
#define H2SPLIT_H2_DOWNSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/h2/conn_info.h"
#include "proxy/h2/h2_stream_ids.h"
#include "proxy/h2/splitter_int.h"

struct h2_downstream {
	struct h2_conn c;		   /* first: its ops cast back */
	struct splitter *s;		   /* borrowed: the owner */
	struct conn_info ci;		   /* ci.netns: owned reference */
	struct h2_stream *streams;	   /* owned list; freed by on_stream_close or destroy */
	struct h2_downstream *next, *prev; /* s->ds_list */
	size_t retained;		   /* request bytes its streams hold for retries */
	size_t up_window_held; /* response bytes held against upstream connection
				* windows (H2_CLIENT_CONN_SHARE at most) */
	double rst_tokens;		   /* RST_STREAM budget (token bucket) */
	uint64_t rst_refill_ms;
	double ctl_tokens; /* control frame budget (token bucket) */
	uint64_t ctl_refill_ms;
	uint32_t n_streams;	      /* on |streams| */
	uint32_t limits_logged;	      /* bit per enum limit_id: logged once */
	uint64_t hdr_since_ms;	      /* preface or header block begun, not complete; 0: none */
	uint64_t idle_since_ms;	      /* no stream since; 0: has streams */
	struct loop_timer *timer;     /* owned: the next header/idle deadline */
	uint64_t timer_at_ms;
	uint64_t retired_ms; /* its Service left the desired state then; 0: not */
	uint64_t hold_until_ms; /* first write held for the first response till then; 0: not */
	size_t hold_queue;	/* outbound frames queued when the hold began */
	struct h2_stream_ids ids; /* stream ids the client skipped (RFC 9113 5.1.1) */
	bool notice_sent, goaway_sent;
	char peer[64]; /* client address, for logs; "" until h2_downstream_peer() */
};

/* The client's address as text, for logs: formatted on first use, not for
 * every connection. */
const char *h2_downstream_peer(struct h2_downstream *ds);
/* See splitter_conn_start(). */
int h2_downstream_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n);
/* Free everything (the flush, or splitter_free()); tells the owner. */
void h2_downstream_destroy(struct h2_downstream *ds);
/* Drain, step one: GOAWAY with the maximum stream id. */
void h2_downstream_shutdown_notice(struct h2_downstream *ds);
/* Drain, step two: GOAWAY with the last stream id processed. */
void h2_downstream_goaway(struct h2_downstream *ds);
/* Its Service is no longer redirected (opted out, renamed, deleted): its
 * streams still route (to the retired Service's last endpoints) while the
 * client is told to reconnect, which now goes where the app aimed. The
 * shutdown notice goes now, the final GOAWAY H2_DRAIN_NOTICE_MS later. */
void h2_downstream_retire(struct h2_downstream *ds);
/* The shared nghttp2 callbacks and options. 0 or -ENOMEM. */
int h2_downstream_setup(struct splitter *s);

#endif
