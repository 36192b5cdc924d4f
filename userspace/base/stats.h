/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-worker counters. Each worker increments its own with relaxed atomics
 * (no lock, no shared cache line across workers); the admin endpoint sums
 * them over workers on scrape. STATS_COUNTERS and STATS_LIMITS are the one
 * list of each: X(ENUM, "name") makes the enum here and the name table in
 * stats.c. Names are exported metric names: append, never rename.
 */
#ifndef H2SPLIT_STATS_H
#define H2SPLIT_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#define STATS_COUNTERS(X)                                                                 \
	X(DOWNSTREAM_CONNS_TOTAL, "downstream_connections_total")                         \
	X(DOWNSTREAM_CONNS_ACTIVE, "downstream_connections_active")                       \
	X(DOWNSTREAM_H2_CONNS_TOTAL, "downstream_h2_connections_total")                   \
	X(L4_CONNS_TOTAL, "l4_connections_total")                                         \
	X(L4_CONNS_ACTIVE, "l4_connections_active")                                       \
	X(L4_CONNECT_FAILURES, "l4_connect_failures_total")                               \
	X(L4_BYTES_UP, "l4_bytes_upstream_total")                                         \
	X(L4_BYTES_DOWN, "l4_bytes_downstream_total")                                     \
	X(ORIGINAL_DST_MISSING, "original_dst_missing_total")                             \
	X(ORIGINAL_DST_RECOVERED, "original_dst_recovered_total")                         \
	X(NETNS_FAILURES, "netns_failures_total")                                         \
	X(ACCEPT_ERRORS, "accept_errors_total")                                           \
	X(STREAMS_TOTAL, "downstream_streams_total")                                      \
	X(STREAMS_ACTIVE, "downstream_streams_active")                                    \
	X(UPSTREAM_CONNS_TOTAL, "upstream_connections_total")                             \
	X(UPSTREAM_CONNS_ACTIVE, "upstream_connections_active")                           \
	X(UPSTREAM_CONNECT_FAILURES, "upstream_connect_failures_total")                   \
	X(UPSTREAM_RETRIES, "upstream_retries_total")                                     \
	X(RESETS_SENT, "resets_sent_total")                                               \
	X(RESETS_RECEIVED, "resets_received_total")                                       \
	X(GOAWAY_SENT, "goaway_sent_total")                                               \
	X(GOAWAY_RECEIVED, "goaway_received_total")                                       \
	X(BYTES_IN, "bytes_received_total")                                               \
	X(BYTES_OUT, "bytes_sent_total")                                                  \
	X(NO_ENDPOINT, "no_endpoint_total")                                               \
	X(DEADLINE_EXCEEDED, "deadline_exceeded_total")                                   \
	/* outlier ejections of upstream endpoints */                                     \
	X(EJECTIONS, "outlier_ejections_total")                                           \
	/* accept paused: the process ran out of fds */                                   \
	X(FD_PAUSES, "fd_exhaustion_pauses_total")                                        \
	/* connections reset from the accept queue while out of fds */                    \
	X(FD_REFUSED, "fd_exhaustion_refused_total")                                      \
	/* upstream connections closed: no PING ACK in time */                            \
	X(UPSTREAM_PING_TIMEOUTS, "upstream_keepalive_timeouts_total")                    \
	/* GOAWAY: the Service left the desired state (opt-out, rename) */                \
	X(DOWNSTREAM_RETIRED, "downstream_retired_total")                                 \
	/* REFUSED_STREAM + GOAWAY: the Service is not known at all */                    \
	X(STREAMS_REFUSED_UNKNOWN, "streams_refused_unknown_service_total")               \
	/* "should not happen" branches of the splitter */                                \
	X(UNEXPECTED, "splitter_unexpected_total")

#define STATS_COUNTERS_ENUM_(id, name) ST_##id,
enum stat_id {
	STATS_COUNTERS(STATS_COUNTERS_ENUM_)
	ST_MAX,
};
#undef STATS_COUNTERS_ENUM_

/* The hardening limits, circuit-breaker caps and timeouts (config.h has
 * their flags): each time a peer or a stream runs into one,
 * h2split_limit_exceeded_total{limit=NAME} counts it. */
#define STATS_LIMITS(X)                                                                   \
	X(HEADER_LIST_SIZE, "header_list_size")                                           \
	X(HEADERS, "headers")                                                             \
	X(CONTINUATIONS, "continuations")                                                 \
	X(CONCURRENT_STREAMS, "concurrent_streams")                                       \
	X(CONTROL_FRAME_RATE, "control_frame_rate")                                       \
	X(RESET_RATE, "reset_rate")                                                       \
	X(OUTBOUND_CONTROL_FRAMES, "outbound_control_frames")                             \
	X(PENDING_BYTES, "pending_bytes")                                                 \
	X(CONNECTIONS_PER_POD, "connections_per_pod")                                     \
	X(IDLE_TIMEOUT, "idle_timeout")                                                   \
	X(HEADER_TIMEOUT, "header_timeout")                                               \
	/* a new stream found every endpoint at its cap */                                \
	X(INFLIGHT_PER_ENDPOINT, "inflight_per_endpoint")                                 \
	/* ... or its service at its cap */                                               \
	X(INFLIGHT_PER_SERVICE, "inflight_per_service")                                   \
	/* ... and the service's queue full */                                            \
	X(PENDING, "pending")                                                             \
	/* a queued stream found no room in time */                                       \
	X(PENDING_TIMEOUT, "pending_timeout")                                             \
	/* an upstream connection's PING went unanswered */                               \
	X(UPSTREAM_KEEPALIVE_TIMEOUT, "upstream_keepalive_timeout")

#define STATS_LIMITS_ENUM_(id, name) LIMIT_##id,
enum limit_id {
	STATS_LIMITS(STATS_LIMITS_ENUM_)
	LIMIT_MAX,
};
#undef STATS_LIMITS_ENUM_

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
