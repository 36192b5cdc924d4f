/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bounded per-service series keyed by a label (a caller workload, a gRPC
 * method): a duration histogram and a count per grpc-status each. One writer
 * per table (its worker): no lock and no allocation per stream once a series
 * exists. A service gets at most |max_per_service| labels of its own per
 * worker; the rest share its `other` series and are counted as overflow.
 * The scrape merges every worker's table and keeps the top labels by streams.
 */
#ifndef H2SPLIT_CALL_TABLE_H
#define H2SPLIT_CALL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/state.h"
#include "telemetry/metrics.h"

/* Longest label kept, NUL included; a longer one counts as `other`. */
#define CALL_LABEL_MAX 192

/* Counters of a series. */
enum {
	CT_BUCKETS = 0, /* METRICS_N_BUCKETS + 1 (+Inf), per bucket, not cumulative */
	CT_SUM_US = CT_BUCKETS + METRICS_N_BUCKETS + 1,
	CT_GRPC, /* METRICS_GRPC_CODES, then "other" (any other code), then "none" (not gRPC) */
	CT_N = CT_GRPC + METRICS_GRPC_CODES + 2,
};

struct call_table;

/* |name|: static, for logs ("callers", "methods"). At most |max_entries|
 * series per worker (a power of two), |max_per_service| (>= 1) labels per
 * service. NULL on ENOMEM. */
struct call_table *call_table_new(const char *name, int max_entries, int max_per_service);
/* NULL-safe. No scrape may be running on |t|. */
void call_table_free(struct call_table *t);

/* ---- the owning worker ---- */

/* Count one stream of |svc| under |label| (|len| bytes, not NUL-terminated).
 * |grpc_status| -1: not gRPC. */
void call_table_record(struct call_table *t, uint32_t svc, const char *label, size_t len,
		       int grpc_status, uint64_t duration_ns);
/* Forget the series of services |st| no longer lists. NULL |st|: no-op. */
void call_table_prune(struct call_table *t, const struct state *st);

/* ---- scrape side: any one thread at a time ---- */

struct call_row {
	uint32_t svc;
	bool other; /* the service's `other` series (|label| empty) */
	char label[CALL_LABEL_MAX];
	uint64_t c[CT_N];
};

struct call_rows {
	struct call_row *rows; /* owned; sorted by svc, labels before `other` */
	int n;
	uint64_t overflow; /* streams counted as `other` for want of room */
};

/* Merge the tables |ts| of |n| workers (NULL ones skipped); per service, the
 * |max_per_service| labels with the most streams keep their series and the
 * rest join `other`. 0 or -ENOMEM. */
int call_table_merge(struct call_table *const *ts, int n, int max_per_service,
		     struct call_rows *out);
void call_rows_free(struct call_rows *r);
/* Streams of a row (the histogram's count). */
uint64_t call_row_count(const struct call_row *r);

#endif
