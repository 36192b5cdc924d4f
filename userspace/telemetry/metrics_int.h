/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What metrics.c (the per-worker tables and their merge) shares with
 * metrics_prom.c (their Prometheus families), and no one else: the counter
 * layout of an entry, the merged rows, the histogram buckets. Private to
 * telemetry/.
 */
#ifndef H2SPLIT_METRICS_INT_H
#define H2SPLIT_METRICS_INT_H

#include <stdint.h>

#include "base/state.h"
#include "telemetry/call_table.h"
#include "telemetry/metrics.h"

/* Endpoint entry counters. */
enum {
	EC_ACTIVE = 0, /* int64 stored as uint64: sums wrap back to the signed value */
	EC_REQUESTS,
	EC_FAILURES,
	EC_EVENTS,
	/* Balancer state (metrics_endpoint_health): merged by max, not summed. */
	EC_EJECTED_UNTIL = EC_EVENTS + METRICS_EV_MAX,
	EC_BACKOFF_UNTIL,
	EC_CONSEC_FAILURES,
	EC_EJECTIONS,
	EC_EWMA_US,
	EC_JITTER_US,
	EC_WARM_UNTIL,
	EC_MAX,
};
#define EC_MAX_MERGED                                                                              \
	(1ull << EC_EJECTED_UNTIL | 1ull << EC_BACKOFF_UNTIL | 1ull << EC_CONSEC_FAILURES |        \
	 1ull << EC_EJECTIONS | 1ull << EC_EWMA_US | 1ull << EC_JITTER_US | 1ull << EC_WARM_UNTIL)
/* max_merged is a 64-bit mask: a table whose counters past the 64th are all
 * sums (the services table has more) needs no bit for them. */
_Static_assert(EC_MAX <= 64, "endpoint counters merged by max need a bit each");

/* HTTP status classes: "none" (no status), then 1xx..5xx. */
#define HTTP_CLASSES 6

/* Service entry counters. */
enum {
	SC_BUCKETS = 0, /* METRICS_N_BUCKETS + 1 (+Inf), per bucket, not cumulative */
	SC_SUM_US = SC_BUCKETS + METRICS_N_BUCKETS + 1,
	SC_GRPC,				    /* METRICS_GRPC_CODES + 1 ("other") */
	SC_HTTP = SC_GRPC + METRICS_GRPC_CODES + 1, /* HTTP_CLASSES */
	SC_REQ_BYTES = SC_HTTP + HTTP_CLASSES,
	SC_RESP_BYTES,
	SC_PENDING,   /* int64 stored as uint64, as EC_ACTIVE */
	SC_CB_REJECT, /* METRICS_CB_MAX */
	SC_LOCALITY = SC_CB_REJECT + METRICS_CB_MAX, /* STATE_LOC_NODE + 1, by locality */
	SC_FAILOVER = SC_LOCALITY + STATE_LOC_NODE + 1, /* METRICS_FAILOVER_MAX */
	SC_RETRIES = SC_FAILOVER + METRICS_FAILOVER_MAX, /* METRICS_RETRY_MAX, by reason */
	SC_HEDGES = SC_RETRIES + METRICS_RETRY_MAX,
	SC_BUDGET_EXHAUSTED,
	SC_MAX,
};

struct metrics_bucket {
	uint64_t ns;
	const char *le; /* the "le" label */
};

extern const struct metrics_bucket metrics_buckets[METRICS_N_BUCKETS];

/* A table key: service id alone for service entries (ip, port zero). */
struct key {
	uint32_t svc;
	uint16_t port;
	struct h2s_ip ip;
};

/* A merged entry: its key and its counters (in metrics_merged.vals). */
struct row {
	struct key k;
	uint64_t *c;
};

struct mtable {
	struct row *rows; /* owned, sorted by key, unique */
	int n;
	uint64_t *vals; /* owned, n_counters per row */
	int n_counters;
	uint64_t max_merged; /* as table.max_merged */
	uint64_t overflow;
};

struct metrics_merged {
	struct mtable eps;
	struct mtable svcs;
	struct call_rows callers; /* label "namespace/kind/name" */
	struct call_rows methods;
	bool callers_on, methods_on; /* the families are exported */
};

/* The endpoint |k| in |svc| (sorted by address), NULL when absent. */
const struct state_endpoint *metrics_find_state_ep(const struct state_service *svc,
						   const struct key *k);

#endif
