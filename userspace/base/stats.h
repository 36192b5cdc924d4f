/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-worker counters. Each worker increments its own with relaxed atomics
 * (no lock, no shared cache line across workers); the admin endpoint sums
 * them over workers on scrape. Add a counter here and to stats_names in
 * stats.c together.
 */
#ifndef H2SPLIT_STATS_H
#define H2SPLIT_STATS_H

#include <stdatomic.h>
#include <stdint.h>

enum stat_id {
	ST_DOWNSTREAM_CONNS_TOTAL = 0,
	ST_DOWNSTREAM_CONNS_ACTIVE,
	ST_DOWNSTREAM_H2_CONNS_TOTAL,
	ST_L4_CONNS_TOTAL,
	ST_L4_CONNS_ACTIVE,
	ST_L4_CONNECT_FAILURES,
	ST_L4_BYTES_UP,
	ST_L4_BYTES_DOWN,
	ST_ORIGINAL_DST_MISSING,
	ST_ORIGINAL_DST_RECOVERED,
	ST_NETNS_FAILURES,
	ST_ACCEPT_ERRORS,
	ST_STREAMS_TOTAL,
	ST_STREAMS_ACTIVE,
	ST_UPSTREAM_CONNS_TOTAL,
	ST_UPSTREAM_CONNS_ACTIVE,
	ST_UPSTREAM_CONNECT_FAILURES,
	ST_UPSTREAM_RETRIES,
	ST_RESETS_SENT,
	ST_RESETS_RECEIVED,
	ST_GOAWAY_SENT,
	ST_GOAWAY_RECEIVED,
	ST_BYTES_IN,
	ST_BYTES_OUT,
	ST_NO_ENDPOINT,
	ST_DEADLINE_EXCEEDED,
	ST_EJECTIONS,  /* outlier ejections of upstream endpoints */
	ST_FD_PAUSES,  /* accept paused: the process ran out of fds */
	ST_FD_REFUSED, /* connections reset from the accept queue while out of fds */
	ST_UPSTREAM_PING_TIMEOUTS, /* upstream connections closed: no PING ACK in time */
	ST_DOWNSTREAM_RETIRED, /* GOAWAY: the Service left the desired state (opt-out, rename) */
	ST_STREAMS_REFUSED_UNKNOWN, /* REFUSED_STREAM + GOAWAY: the Service is not known at all */
	ST_UNEXPECTED, /* "should not happen" branches of the splitter */
	ST_MAX,
};

/* The hardening limits, circuit-breaker caps and timeouts (config.h has
 * their flags): each time a peer or a stream runs into one,
 * h2split_limit_exceeded_total{limit=NAME} counts it. Add a limit here and
 * to limit_names in stats.c together. */
enum limit_id {
	LIMIT_HEADER_LIST_SIZE = 0,
	LIMIT_HEADERS,
	LIMIT_CONTINUATIONS,
	LIMIT_CONCURRENT_STREAMS,
	LIMIT_CONTROL_FRAME_RATE,
	LIMIT_RESET_RATE,
	LIMIT_OUTBOUND_CONTROL_FRAMES,
	LIMIT_PENDING_BYTES,
	LIMIT_CONNECTIONS_PER_POD,
	LIMIT_IDLE_TIMEOUT,
	LIMIT_HEADER_TIMEOUT,
	LIMIT_INFLIGHT_PER_ENDPOINT,	  /* a new stream found every endpoint at its cap */
	LIMIT_INFLIGHT_PER_SERVICE,	  /* ... or its service at its cap */
	LIMIT_PENDING,			  /* ... and the service's queue full */
	LIMIT_PENDING_TIMEOUT,		  /* a queued stream found no room in time */
	LIMIT_UPSTREAM_KEEPALIVE_TIMEOUT, /* an upstream connection's PING went unanswered */
	LIMIT_MAX,
};

struct worker_stats {
	_Atomic uint64_t v[ST_MAX];
	_Atomic uint64_t limits[LIMIT_MAX];
};

extern const char *const stats_names[ST_MAX];
extern const char *const limit_names[LIMIT_MAX];

static inline void stats_add(struct worker_stats *s, enum stat_id id, uint64_t n)
{
	atomic_fetch_add_explicit(&s->v[id], n, memory_order_relaxed);
}

static inline void stats_inc(struct worker_stats *s, enum stat_id id)
{
	stats_add(s, id, 1);
}

static inline void stats_dec(struct worker_stats *s, enum stat_id id)
{
	atomic_fetch_sub_explicit(&s->v[id], 1, memory_order_relaxed);
}

static inline void stats_limit_inc(struct worker_stats *s, enum limit_id id)
{
	atomic_fetch_add_explicit(&s->limits[id], 1, memory_order_relaxed);
}

static inline uint64_t stats_limit_get(const struct worker_stats *s, enum limit_id id)
{
	return atomic_load_explicit(&s->limits[id], memory_order_relaxed);
}

static inline uint64_t stats_get(const struct worker_stats *s, enum stat_id id)
{
	return atomic_load_explicit(&s->v[id], memory_order_relaxed);
}

#endif
