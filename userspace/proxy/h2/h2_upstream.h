/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Upstream connections: nghttp2 client sessions to endpoints, opened
 * non-blocking from inside the client pod's netns (netns_socket), cleartext
 * or TLS with ALPN h2, pooled per (client netns, endpoint). A connection
 * takes streams up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 before
 * its SETTINGS arrive); after a GOAWAY, or once its endpoint left the
 * snapshot, it takes none and closes when its last stream is done. A peer
 * that allows 0 streams gets no further connection from the pool.
 */
#ifndef H2SPLIT_H2_UPSTREAM_H
#define H2SPLIT_H2_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/h2/splitter_int.h"

enum h2_up_state {
	H2_UP_CONNECTING = 0, /* non-blocking connect in progress */
	H2_UP_HANDSHAKING,    /* TLS handshake in progress */
	H2_UP_OPEN,	      /* takes streams while it has capacity */
	H2_UP_DRAINING,	      /* GOAWAY received or endpoint gone: no new streams */
	H2_UP_CLOSING,	      /* we sent GOAWAY; closes once written */
};

struct h2_upstream {
	struct h2_conn c;   /* first: its ops cast back */
	struct splitter *s; /* borrowed: the owner */
	struct upstream_pool_conn pc;
	enum h2_up_state state;
	struct loop_timer *connect_timer; /* owned */
	struct h2_stream *streams;	  /* borrowed: streams linked to it (open or draining) */
	struct h2_upstream *next, *prev;  /* s->us_list */
	uint64_t idle_since_ms;		  /* when n_streams last dropped to 0 */
	uint64_t open_ns;		  /* connected (and TLS done): streams go out from then */
	uint64_t last_rx_ms;		  /* last frame received */
	uint64_t ping_sent_ms;		  /* keepalive PING outstanding since; 0: none */
	bool may_ping;			  /* HEADERS or DATA arrived since the last PING */
	bool tcp_up;			  /* TCP connected (failures since are the endpoint's) */
	bool ever_open;			  /* got the peer's SETTINGS */
	const char *fail_why;		  /* static string: why it is being destroyed */
	char name[64];			  /* ip:port, for logs and messages */
};

/* A connection to |ep| with room for one more stream (opening one if need
 * be), in the pool of |netns| (a borrowed ref; NULL: the daemon's netns).
 * |tls_host|: TLS, verifying the peer as that name; NULL: cleartext h2c.
 * NULL with -errno in |*err| when no socket could be made or connected, and
 * with -EBUSY when the endpoint allows no streams on the connection it has
 * (SETTINGS_MAX_CONCURRENT_STREAMS 0): no other one is opened then. */
struct h2_upstream *h2_upstream_get(struct splitter *s, const struct balancer_endpoint *ep,
				    const char *tls_host, struct netns_ref *netns, int *err);
/* Link |st| (just submitted as |id|) to |uc|, counting it against capacity. */
void h2_upstream_link(struct h2_upstream *uc, struct h2_stream *st, int32_t id);
void h2_upstream_unlink(struct h2_upstream *uc, struct h2_stream *st);
/* |to| takes |from|'s place on |uc| (a hedged attempt adopted by its RPC's
 * stream): the list entry and the stream's user data; |from| is let go. */
void h2_upstream_relink(struct h2_upstream *uc, struct h2_stream *from, struct h2_stream *to);
/* |n| bytes of |st|'s response left it (sent downstream or dropped): give
 * the stream window back, and the connection window for those not given back
 * on arrival (H2_CLIENT_CONN_SHARE). */
void h2_upstream_consume(struct h2_upstream *uc, struct h2_stream *st, size_t n);
/* Free everything (the flush, or splitter_free()); open streams are lost or
 * retried. */
void h2_upstream_destroy(struct h2_upstream *uc);
/* Retire connections to endpoints |st| no longer lists. */
void h2_upstream_snapshot_changed(struct splitter *s, const struct state *st);
/* Close connections idle for longer than H2_UPSTREAM_IDLE_MS (all idle ones
 * when |all_idle|). */
void h2_upstream_sweep(struct splitter *s, bool all_idle);
/* Liveness (splitter's keepalive timer): PING connections with streams that
 * have been silent for --upstream-keepalive-time; close those whose PING
 * went unanswered for --upstream-keepalive-timeout (their streams fail
 * UNAVAILABLE unless surely unprocessed, and count against the endpoint). */
void h2_upstream_keepalive(struct splitter *s);
/* The shared nghttp2 callbacks and options. 0 or -ENOMEM. */
int h2_upstream_setup(struct splitter *s);

#endif
