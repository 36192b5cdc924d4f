/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-service and per-endpoint figures for /metrics and /endpoints. Each
 * worker owns one struct metrics and is its only writer: no lock, no atomic
 * read-modify-write and no allocation on the data path once an entry exists.
 * The admin thread merges every worker's tables on scrape, reading entries
 * under a per-entry seqlock, so a scrape never blocks a worker.
 */
#ifndef H2SPLIT_METRICS_H
#define H2SPLIT_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/state.h"

/* The tables grow with the distinct services and endpoints a worker sees
 * (telemetry/chunk_table.c), with no cap a cluster reaches (4 Mi endpoints,
 * 1 Mi services per worker). An update that finds no room (out of memory,
 * or past that) is counted in h2split_metrics_overflow_total{table=...} and
 * dropped, and the first drop of each table is logged (metrics_table_full). */
/* Labels of their own per service (--max-callers-per-service,
 * --max-methods-per-service); the rest share an `other` series. */
#define METRICS_DEFAULT_MAX_CALLERS 100
#define METRICS_DEFAULT_MAX_METHODS 50

/* Request duration buckets (seconds, Prometheus "le"), +Inf implied. */
#define METRICS_N_BUCKETS 19
/* grpc_status 0..16 are the gRPC codes; anything else is counted as "other". */
#define METRICS_GRPC_CODES 17

enum metrics_upstream_event {
	METRICS_EV_RETRY = 0,	    /* a stream attempt on this endpoint is retried elsewhere */
	METRICS_EV_RESET_SENT,	    /* we sent RST_STREAM to this endpoint */
	METRICS_EV_RESET_RECEIVED,  /* this endpoint sent RST_STREAM */
	METRICS_EV_CONNECT_FAILURE, /* connecting (or the TLS/h2 handshake) to it failed */
	METRICS_EV_MAX,
};

struct metrics;

/* ---- worker side: call from the owning worker thread only ---- */

/* NULL on ENOMEM. Memory grows in chunks with the number of distinct entries. */
struct metrics *metrics_new(void);
/* NULL-safe. No scrape may be running on |m|. */
void metrics_free(struct metrics *m);

/* A stream attempt was assigned to endpoint |ip|:|port| of |service_id|
 * (delta +1; also counts h2split_endpoint_requests_total) or ended (delta -1).
 * Call +1 for every attempt, retries included, and -1 exactly once for each. */
void metrics_endpoint_inflight(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
			       uint16_t port, int delta);

/* What the worker's balancer thinks of an endpoint, as of its last change.
 * Times are CLOCK_MONOTONIC ms (loop_now_ms()); across workers each field
 * merges to its maximum (any worker that ejected it, the worst latency). */
struct metrics_endpoint_health {
	uint64_t ejected_until_ms; /* outlier ejection ends; 0: never ejected */
	uint64_t backoff_until_ms; /* connect backoff ends (from some client netns) */
	uint32_t consec_failures;
	uint32_t ejections; /* sets the length of the next ejection */
	uint64_t ewma_us;   /* peak-EWMA latency at the last observation; 0: none yet */
	uint64_t jitter_us; /* ... and its answers' jitter (balancer/ewma.c: EWMA_NOISE_K) */
	uint64_t warm_until_ms; /* slow start ends */
};

void metrics_endpoint_health(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
			     uint16_t port, const struct metrics_endpoint_health *h);

/* Streams of |service_id| waiting for room (circuit breaking) changed by |delta|. */
void metrics_service_pending(struct metrics *m, uint32_t service_id, int delta);

enum metrics_cb_reason {
	METRICS_CB_QUEUE_FULL = 0, /* the pending queue was full */
	METRICS_CB_TIMEOUT,	   /* waited --pending-timeout for room */
	METRICS_CB_MAX,
};

/* Why a pick passed over a nearer locality tier: balancer.h's enum
 * balancer_failover, whose values 1..4 these mirror (0: it did not). */
#define METRICS_FAILOVER_MAX 5

/* A stream attempt of |service_id| was routed to an endpoint of |locality|
 * (enum state_locality), passing over a nearer tier for |failover| (0: none). */
void metrics_service_routed(struct metrics *m, uint32_t service_id, int locality, int failover);

/* Why a stream of a Service went to another attempt
 * (h2split_service_retries_total{reason}). */
enum metrics_retry_reason {
	METRICS_RETRY_UNPROCESSED = 0, /* surely not processed (refused, no connection) */
	METRICS_RETRY_STATUS,	       /* a retryable grpc-status, Trailers-Only */
	METRICS_RETRY_RESET,	       /* reset or connection lost before any response */
	METRICS_RETRY_PER_TRY_TIMEOUT, /* h2split.io/per-try-timeout ran out */
	METRICS_RETRY_MAX,
};

/* A stream of |service_id| is retried for |why|. */
void metrics_service_retry(struct metrics *m, uint32_t service_id, enum metrics_retry_reason why);
/* A stream of |service_id| sent a hedged attempt. */
void metrics_service_hedge(struct metrics *m, uint32_t service_id);
/* A retry or hedge of |service_id| was not made: its retry budget was spent. */
void metrics_service_retry_budget_exhausted(struct metrics *m, uint32_t service_id);

/* A stream of |service_id| was failed fast by circuit breaking. */
void metrics_circuit_breaker_rejection(struct metrics *m, uint32_t service_id,
				       enum metrics_cb_reason why);

/* A downstream stream ended. |ep_ip| is the endpoint that served its last
 * attempt, NULL when none did (no endpoint, every attempt failed): then only
 * the service's series change. |grpc_status| is -1 when the stream was not
 * gRPC (or no grpc-status arrived); |http_status| is 0 when no response
 * status was received. |bytes_in|: request body bytes from the client;
 * |bytes_out|: response body bytes to the client. A failure for the endpoint
 * is: no status, :status >= 500, or grpc-status UNKNOWN(2), INTERNAL(13),
 * UNAVAILABLE(14) or DATA_LOSS(15). */
void metrics_stream_done(struct metrics *m, uint32_t service_id, const struct h2s_ip *ep_ip,
			 uint16_t ep_port, int grpc_status, int http_status, uint64_t duration_ns,
			 uint64_t bytes_in, uint64_t bytes_out);

/* Per-caller and per-method series (h2split_caller_*, h2split_method_*):
 * at most |max_callers| caller workloads and |max_methods| methods of their
 * own per service (the rest: `other`); 0 turns that family off. Call before
 * the first stream. 0 or -ENOMEM. */
int metrics_set_call_limits(struct metrics *m, int max_callers, int max_methods);

/* A downstream stream ended, as metrics_call_done() needs it. */
struct metrics_call {
	uint64_t cgroup_id; /* who connected (BPF's record): the caller in the state */
	uint32_t service_id;
	const uint8_t *path; /* :path, NULL: none; not NUL-terminated */
	size_t path_len;
	const struct h2s_ip *ep_ip; /* the endpoint of its last attempt, NULL: none */
	uint16_t ep_port;
	int grpc_status;	   /* -1: not gRPC */
	int http_status;	   /* 0: none */
	uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC (loop_now_ns()) */
	uint64_t bytes_in, bytes_out;
};

/* Count a stream (next to metrics_stream_done()) in the caller and method
 * series: its caller is who connects from |c->cgroup_id| in |st| ("unknown"
 * when |st| has no such caller), its method the request's :path without the
 * leading '/'. Also hands it to the tap while someone taps. */
void metrics_call_done(struct metrics *m, const struct state *st, const struct metrics_call *c);

struct tap;
/* Feed ring |ring| of |tap| (tap.h) with this worker's streams; NULL: none.
 * Call before the first stream. */
void metrics_set_tap(struct metrics *m, struct tap *tap, int ring);

/* An upstream event on endpoint |ip|:|port|. |service_id| 0 when unknown. */
void metrics_upstream_event(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
			    uint16_t port, enum metrics_upstream_event ev);

/* The snapshot changed to |st|: forget idle endpoints (no stream in flight)
 * that are no longer in it, and services no longer in it, so pod churn does
 * not fill the tables. NULL |st| is a no-op. */
void metrics_prune(struct metrics *m, const struct state *st);

/* ---- scrape side: any one thread at a time ---- */

struct metrics_endpoint_totals {
	int64_t active;	   /* attempts in flight */
	uint64_t requests; /* attempts started */
	uint64_t failures; /* streams that ended in failure (see above) */
	uint64_t events[METRICS_EV_MAX];
	struct metrics_endpoint_health health;
};

struct metrics_merged;

/* Sum the tables of |n| workers (NULL entries skipped). NULL on ENOMEM. */
struct metrics_merged *metrics_merge(struct metrics *const *ms, int n);
void metrics_merged_free(struct metrics_merged *mm);
/* The merged figures of one endpoint: 0, or -ENOENT (|out| zeroed) when no
 * worker has seen it. */
int metrics_merged_endpoint(const struct metrics_merged *mm, uint32_t service_id,
			    const struct h2s_ip *ip, uint16_t port,
			    struct metrics_endpoint_totals *out);

/* The upper bound of request duration bucket |i| (0..METRICS_N_BUCKETS-1). */
uint64_t metrics_buckets_ns(int i);

struct call_rows;
/* The merged caller (|callers|) or method series of |mm| (call_table.h:
 * caller labels are "namespace/kind/name"), NULL when that family is off. */
const struct call_rows *metrics_merged_calls(const struct metrics_merged *mm, bool callers);

/* Write the per-service and per-endpoint families (Prometheus text format
 * 0.0.4) to |f|, and the endpoint counts of every service in |st| (may be
 * NULL). Labels are resolved in |st|: service="namespace/name:port",
 * endpoint="ip:port" ("[v6]:port"), pod="name" ("" when unknown); an id |st|
 * does not know prints as service="id:<id>". |now_ms| (CLOCK_MONOTONIC, as
 * loop_now_ms()) decides which endpoints are ejected at present.
 * 0, -ENOMEM, or -EIO when |f| failed. */
int metrics_write_prometheus(FILE *f, const struct metrics_merged *mm, const struct state *st,
			     uint64_t now_ms);

#endif
