/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which upstream HTTP/2 connection a new stream goes to. Pools are keyed by
 * (client netns, endpoint ip:port, tls): with --upstream-source pod every
 * client pod has its own connections, as a sidecar would. A stream goes to
 * the oldest connection with free stream capacity; when none has any, the
 * caller opens another one rather than queueing behind a full one, unless
 * the peer said it takes no streams at all (MAX_CONCURRENT_STREAMS 0).
 * Pure bookkeeping, no I/O: the connections embed upstream_pool_conn.
 */
#ifndef H2SPLIT_UPSTREAM_POOL_H
#define H2SPLIT_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/state.h"

/* Streams a connection takes before the peer's SETTINGS arrive. */
#define UPSTREAM_PRE_SETTINGS_STREAMS 100u
/* Streams a connection takes at most, whatever the peer allows. */
#define UPSTREAM_MAX_STREAMS 1000u

struct upstream_pool_key {
	uint64_t netns_id; /* 0: the daemon's own netns (--upstream-source node) */
	struct h2s_ip ip;
	uint16_t port;
	bool tls;
};

struct upstream_pool;

/* Embedded in every upstream connection; all fields are the owner's to set. */
struct upstream_pool_conn {
	struct upstream_pool *pool; /* NULL when not in a pool */
	struct upstream_pool_conn *next, *prev;
	bool accepting;	    /* false after GOAWAY, errors, or when closing */
	bool settings_rcvd; /* peer_max is meaningful */
	uint32_t peer_max;  /* the peer's SETTINGS_MAX_CONCURRENT_STREAMS */
	uint32_t n_streams; /* streams submitted and not yet closed */
};

struct upstream_pool {
	struct upstream_pool_key key;
	struct upstream_pool_conn *conns; /* borrowed list, oldest first */
	uint32_t n_conns;
	uint32_t peer_max_hint;	     /* last SETTINGS_MAX_CONCURRENT_STREAMS seen; 0: none */
	bool retired;		     /* the endpoint left the snapshot */
	struct netns_ref *netns;     /* owned by the connection module, opaque here */
	struct upstream_pool *hnext; /* hash chain, owned by the table */
};

/* How many more streams |c| may take now: the peer's limit once its SETTINGS
 * came, before that what another connection of the pool learned (a backend
 * allowing one stream must not get a burst of 100 on every new connection),
 * else UPSTREAM_PRE_SETTINGS_STREAMS. */
uint32_t upstream_pool_capacity(const struct upstream_pool_conn *c);
/* The connection a new stream should use, or NULL to open another (unless
 * upstream_pool_refusing()). */
struct upstream_pool_conn *upstream_pool_choose(const struct upstream_pool *p);
/* A connection of |p| still taking streams whose peer allows none now
 * (SETTINGS_MAX_CONCURRENT_STREAMS 0), or NULL. While there is one, the pool
 * opens no other connection: the peer would only say 0 there too, and a
 * connection per stream, each stuck, is how one bad pod exhausts the fds. */
struct upstream_pool_conn *upstream_pool_refusing(const struct upstream_pool *p);
void upstream_pool_link(struct upstream_pool *p, struct upstream_pool_conn *c);
void upstream_pool_unlink(struct upstream_pool_conn *c);

struct upstream_pools {
	struct upstream_pool **tab; /* owned */
	size_t buckets, n;
};

int upstream_pools_init(struct upstream_pools *t);
/* Frees the table and every pool; connections must be gone already. */
void upstream_pools_fini(struct upstream_pools *t);
/* The pool for |key|, created (empty, netns NULL) when |create|. NULL: none / ENOMEM. */
struct upstream_pool *upstream_pools_get(struct upstream_pools *t,
					 const struct upstream_pool_key *key, bool create);
/* Remove and free |p|, which must have no connections. */
void upstream_pools_remove(struct upstream_pools *t, struct upstream_pool *p);
/* Call |cb| for every pool; |cb| may remove the pool it is given. */
void upstream_pools_foreach(struct upstream_pools *t,
			    void (*cb)(struct upstream_pool *p, void *arg), void *arg);

#endif
