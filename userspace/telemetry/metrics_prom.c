// SPDX-License-Identifier: Apache-2.0
/*
 * The per-service and per-endpoint Prometheus families of a merged scrape
 * (metrics_write_prometheus in metrics.h): labels resolved in the state in
 * force, rows sorted by service then address, written through prom.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/metrics.h"
#include "telemetry/metrics_int.h"
#include "telemetry/prom.h"

static const char *const http_class_names[HTTP_CLASSES] = {"none", "1xx", "2xx",
							   "3xx",  "4xx", "5xx"};

static const char *const endpoint_event_families[METRICS_EV_MAX][2] = {
    [METRICS_EV_RETRY] = {"h2split_endpoint_retries_total",
			  "Stream attempts on the endpoint retried on another one."},
    [METRICS_EV_RESET_SENT] = {"h2split_endpoint_resets_sent_total",
			       "RST_STREAM frames sent to the endpoint."},
    [METRICS_EV_RESET_RECEIVED] = {"h2split_endpoint_resets_received_total",
				   "RST_STREAM frames received from the endpoint."},
    [METRICS_EV_CONNECT_FAILURE] = {"h2split_endpoint_connect_failures_total",
				    "Failed connection attempts to the endpoint."},
};

/* A merged row with its labels resolved, for sorting and printing. */
struct labeled {
	char service[STATE_NAME_MAX * 2 + 16];
	char endpoint[INET6_ADDRSTRLEN + 10];
	const char *pod;
	const struct row *r;
};

static void service_label(const struct state *st, uint32_t id, char *buf, size_t len)
{
	const struct state_service *svc = st ? state_find_id(st, id) : NULL;

	if (svc)
		snprintf(buf, len, "%s/%s:%u", svc->ns, svc->name, svc->port);
	else
		snprintf(buf, len, "id:%" PRIu32, id);
}

static void endpoint_label(const struct key *k, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	h2s_ip_str(&k->ip, ip, sizeof(ip));
	snprintf(buf, len, h2s_ip_is_v4(&k->ip) ? "%s:%u" : "[%s]:%u", ip, k->port);
}

static int cmp_labeled(const void *a, const void *b)
{
	const struct labeled *x = a, *y = b;
	int c = strcmp(x->service, y->service);

	if (c)
		return c;
	c = memcmp(&x->r->k.ip, &y->r->k.ip, sizeof(x->r->k.ip));
	return c ? c : (int)x->r->k.port - (int)y->r->k.port;
}

/* Resolve labels of every row of |mt|, sorted by service label then address. */
static struct labeled *label_rows(const struct mtable *mt, const struct state *st)
{
	struct labeled *l = calloc(mt->n ? (size_t)mt->n : 1, sizeof(*l));

	if (!l)
		return NULL;
	for (int i = 0; i < mt->n; i++) {
		const struct key *k = &mt->rows[i].k;
		const struct state_service *svc = st ? state_find_id(st, k->svc) : NULL;
		const struct state_endpoint *ep = svc ? metrics_find_state_ep(svc, k) : NULL;

		l[i].r = &mt->rows[i];
		service_label(st, k->svc, l[i].service, sizeof(l[i].service));
		endpoint_label(k, l[i].endpoint, sizeof(l[i].endpoint));
		l[i].pod = ep ? ep->pod : "";
	}
	qsort(l, (size_t)mt->n, sizeof(*l), cmp_labeled);
	return l;
}

/* The labels of |l|'s series: service, then endpoint and pod; |extra| (may
 * be NULL) goes last. Returns how many of |out|'s four were set. */
static int service_labels(const struct labeled *l, struct prom_label out[4],
			  const struct prom_label *extra)
{
	out[0] = (struct prom_label){"service", l->service};
	if (extra)
		out[1] = *extra;
	return extra ? 2 : 1;
}

static int endpoint_labels(const struct labeled *l, struct prom_label out[4])
{
	out[0] = (struct prom_label){"service", l->service};
	out[1] = (struct prom_label){"endpoint", l->endpoint};
	out[2] = (struct prom_label){"pod", l->pod};
	return 3;
}

static void write_endpoint_counter(FILE *f, const struct labeled *l, int n, int idx,
				   const char *name, const char *help)
{
	struct prom_label lb[4];

	prom_family(f, name, "counter", help);
	for (int i = 0; i < n; i++)
		prom_u64(f, name, lb, endpoint_labels(&l[i], lb), l[i].r->c[idx]);
}

static void write_endpoints(FILE *f, const struct labeled *l, int n, uint64_t now_ms)
{
	static const char active[] = "h2split_endpoint_requests_active";
	static const char ejected[] = "h2split_endpoint_ejected";
	static const char ewma[] = "h2split_endpoint_latency_ewma_seconds";
	struct prom_label lb[4];

	write_endpoint_counter(f, l, n, EC_REQUESTS, "h2split_endpoint_requests_total",
			       "Stream attempts sent to the endpoint, retries included.");
	prom_family(f, active, "gauge", "Stream attempts in flight on the endpoint.");
	for (int i = 0; i < n; i++)
		prom_i64(f, active, lb, endpoint_labels(&l[i], lb), (int64_t)l[i].r->c[EC_ACTIVE]);
	write_endpoint_counter(f, l, n, EC_FAILURES, "h2split_endpoint_failures_total",
			       "Streams that failed on the endpoint: no response, HTTP 5xx, or "
			       "grpc-status UNKNOWN, INTERNAL, UNAVAILABLE or DATA_LOSS.");
	for (int ev = 0; ev < METRICS_EV_MAX; ev++)
		write_endpoint_counter(f, l, n, EC_EVENTS + ev, endpoint_event_families[ev][0],
				       endpoint_event_families[ev][1]);
	prom_family(
	    f, ejected, "gauge",
	    "1 while outlier detection keeps new streams off the endpoint (on any worker).");
	for (int i = 0; i < n; i++)
		prom_u64(f, ejected, lb, endpoint_labels(&l[i], lb),
			 l[i].r->c[EC_EJECTED_UNTIL] > now_ms);
	prom_family(f, ewma, "gauge",
		    "The balancer's peak-EWMA latency estimate of the endpoint (the highest of "
		    "any worker), as of its last answer; 0 before one.");
	for (int i = 0; i < n; i++)
		prom_seconds(f, ewma, lb, endpoint_labels(&l[i], lb), l[i].r->c[EC_EWMA_US]);
}

static void write_histogram(FILE *f, const struct labeled *l, int n)
{
	static const char name[] = "h2split_service_request_duration_seconds";
	struct prom_label lb[4];

	prom_family(f, name, "histogram",
		    "Duration of downstream streams, from first headers to close.");
	for (int i = 0; i < n; i++) {
		const uint64_t *c = l[i].r->c;
		uint64_t cum = 0;

		for (int b = 0; b <= METRICS_N_BUCKETS; b++) {
			struct prom_label le = {"le", b < METRICS_N_BUCKETS ? metrics_buckets[b].le
									    : "+Inf"};

			cum += c[SC_BUCKETS + b];
			prom_u64(f, "h2split_service_request_duration_seconds_bucket", lb,
				 service_labels(&l[i], lb, &le), cum);
		}
		prom_seconds(f, "h2split_service_request_duration_seconds_sum", lb,
			     service_labels(&l[i], lb, NULL), c[SC_SUM_US]);
		prom_u64(f, "h2split_service_request_duration_seconds_count", lb,
			 service_labels(&l[i], lb, NULL), cum);
	}
}

static void write_service_counter(FILE *f, const struct labeled *l, int n, int idx,
				  const char *name, const char *help)
{
	struct prom_label lb[4];

	prom_family(f, name, "counter", help);
	for (int i = 0; i < n; i++)
		prom_u64(f, name, lb, service_labels(&l[i], lb, NULL), l[i].r->c[idx]);
}

/* Per-service series by gRPC status and by HTTP status class; zeros skipped. */
static void write_responses(FILE *f, const struct labeled *l, int n)
{
	static const char grpc[] = "h2split_service_grpc_responses_total";
	static const char http[] = "h2split_service_http_responses_total";
	struct prom_label lb[4];
	char code[16];

	prom_family(f, grpc, "counter", "gRPC streams by the grpc-status the client got.");
	for (int i = 0; i < n; i++) {
		for (int s = 0; s <= METRICS_GRPC_CODES; s++) {
			struct prom_label st = {"grpc_status", code};
			uint64_t v = l[i].r->c[SC_GRPC + s];

			if (!v)
				continue;
			if (s < METRICS_GRPC_CODES)
				snprintf(code, sizeof(code), "%d", s);
			else
				snprintf(code, sizeof(code), "other");
			prom_u64(f, grpc, lb, service_labels(&l[i], lb, &st), v);
		}
	}
	prom_family(f, http, "counter", "Streams by the class of the HTTP status the client got.");
	for (int i = 0; i < n; i++) {
		for (int s = 0; s < HTTP_CLASSES; s++) {
			struct prom_label cl = {"code_class", http_class_names[s]};
			uint64_t v = l[i].r->c[SC_HTTP + s];

			if (v)
				prom_u64(f, http, lb, service_labels(&l[i], lb, &cl), v);
		}
	}
}

/* Attempts by the locality of their endpoint, and locality failovers. */
static void write_locality(FILE *f, const struct labeled *l, int n)
{
	static const char req[] = "h2split_service_requests_total";
	static const char fo[] = "h2split_locality_failovers_total";
	static const char *const locs[] = {"unknown", "other", "zone", "node"};
	static const char *const why[METRICS_FAILOVER_MAX] = {"", "unavailable", "full", "load",
							     "ramp"};
	struct prom_label lb[4];

	prom_family(f, req, "counter",
		    "Stream attempts by where their endpoint runs: this node, this node's zone, "
		    "or other (unknown: no nodeName or zone to tell).");
	for (int i = 0; i < n; i++) {
		for (int k = STATE_LOC_NODE; k >= STATE_LOC_UNKNOWN; k--) {
			struct prom_label loc = {"locality", locs[k]};
			uint64_t v = l[i].r->c[SC_LOCALITY + k];

			if (v || k != STATE_LOC_UNKNOWN)
				prom_u64(f, req, lb, service_labels(&l[i], lb, &loc), v);
		}
	}
	prom_family(f, fo, "counter",
		    "Streams that passed over a nearer locality tier: it had no usable endpoint, "
		    "was full, was far busier than the rest, or was ramping back.");
	for (int i = 0; i < n; i++) {
		for (int r = 1; r < METRICS_FAILOVER_MAX; r++) {
			struct prom_label re = {"reason", why[r]};

			prom_u64(f, fo, lb, service_labels(&l[i], lb, &re),
				 l[i].r->c[SC_FAILOVER + r]);
		}
	}
}

static void write_retries(FILE *f, const struct labeled *l, int n)
{
	static const char rt[] = "h2split_service_retries_total";
	static const char *const why[METRICS_RETRY_MAX] = {"unprocessed", "status", "reset",
							   "per_try_timeout"};
	struct prom_label lb[4];

	prom_family(f, rt, "counter",
		    "Streams sent to another attempt: surely not processed (unprocessed), a "
		    "retryable grpc-status (status), a reset before any response (reset), "
		    "h2split.io/per-try-timeout (per_try_timeout).");
	for (int i = 0; i < n; i++) {
		for (int r = 0; r < METRICS_RETRY_MAX; r++) {
			struct prom_label re = {"reason", why[r]};

			prom_u64(f, rt, lb, service_labels(&l[i], lb, &re),
				 l[i].r->c[SC_RETRIES + r]);
		}
	}
	write_service_counter(f, l, n, SC_HEDGES, "h2split_service_hedges_total",
			      "Hedged attempts sent (h2split.io/hedging-policy).");
	write_service_counter(
	    f, l, n, SC_BUDGET_EXHAUSTED, "h2split_service_retry_budget_exhausted_total",
	    "Retries and hedges not made: the Service's retry budget was spent, so "
	    "the failure went to the client.");
}

static void write_services(FILE *f, const struct labeled *l, int n)
{
	static const char pending[] = "h2split_service_pending";
	static const char cb[] = "h2split_circuit_breaker_rejections_total";
	static const char *const cb_reasons[METRICS_CB_MAX] = {"queue_full", "timeout"};
	struct prom_label lb[4];

	write_histogram(f, l, n);
	write_responses(f, l, n);
	write_locality(f, l, n);
	write_retries(f, l, n);
	write_service_counter(f, l, n, SC_REQ_BYTES, "h2split_service_request_bytes_total",
			      "Request body bytes received from clients.");
	write_service_counter(f, l, n, SC_RESP_BYTES, "h2split_service_response_bytes_total",
			      "Response body bytes sent to clients.");
	prom_family(f, pending, "gauge",
		    "Streams waiting for room under the service's in-flight caps.");
	for (int i = 0; i < n; i++)
		prom_i64(f, pending, lb, service_labels(&l[i], lb, NULL),
			 (int64_t)l[i].r->c[SC_PENDING]);
	prom_family(f, cb, "counter",
		    "Streams failed fast by circuit breaking: the pending queue was full, or the "
		    "wait timed out.");
	for (int i = 0; i < n; i++) {
		for (int r = 0; r < METRICS_CB_MAX; r++) {
			struct prom_label why = {"reason", cb_reasons[r]};

			prom_u64(f, cb, lb, service_labels(&l[i], lb, &why),
				 l[i].r->c[SC_CB_REJECT + r]);
		}
	}
}

/* Endpoint counts of every service in |st|, in state order. */
static void write_state(FILE *f, const struct state *st)
{
	static const char all[] = "h2split_service_endpoints";
	static const char usable[] = "h2split_service_endpoints_usable";
	struct labeled l;
	struct prom_label lb[4];

	prom_family(f, all, "gauge", "Endpoints of the service in the state in force.");
	for (int i = 0; st && i < st->n_svcs; i++) {
		if (st->svcs[i].retired_ms)
			continue;
		service_label(st, st->svcs[i].id, l.service, sizeof(l.service));
		prom_u64(f, all, lb, service_labels(&l, lb, NULL), (uint64_t)st->svcs[i].n_eps);
	}
	prom_family(f, usable, "gauge",
		    "Endpoints that may take new streams (ready, not terminating).");
	for (int i = 0; st && i < st->n_svcs; i++) {
		uint64_t n = 0;

		if (st->svcs[i].retired_ms)
			continue;
		for (int j = 0; j < st->svcs[i].n_eps; j++)
			n += state_endpoint_usable(&st->svcs[i].eps[j]);
		service_label(st, st->svcs[i].id, l.service, sizeof(l.service));
		prom_u64(f, usable, lb, service_labels(&l, lb, NULL), n);
	}
}

/* Labels of a call row: [0] service, then the caller's namespace and
 * workload, or the method; |extra| last. Returns the count. */
static int call_labels(const struct call_row *r, bool caller, const char *service, char *ns,
		       size_t ns_len, struct prom_label *lb, const struct prom_label *extra)
{
	int n = 0;

	if (caller) {
		const char *slash = r->other ? NULL : strchr(r->label, '/');

		snprintf(ns, ns_len, "%.*s", slash ? (int)(slash - r->label) : 5,
			 slash ? r->label : "other");
		lb[n++] = (struct prom_label){"caller_namespace", ns};
		lb[n++] = (struct prom_label){"caller_workload", slash ? slash + 1 : "other"};
		lb[n++] = (struct prom_label){"service", service};
	} else {
		lb[n++] = (struct prom_label){"service", service};
		lb[n++] = (struct prom_label){"method", r->other ? "other" : r->label};
	}
	if (extra)
		lb[n++] = *extra;
	return n;
}

/* One table's requests counter (by grpc_status, zeros skipped) and histogram. */
static void write_calls(FILE *f, const struct call_rows *rows, const struct state *st, bool caller)
{
	const char *req =
	    caller ? "h2split_caller_requests_total" : "h2split_method_requests_total";
	const char *hist = caller ? "h2split_caller_request_duration_seconds"
				  : "h2split_method_request_duration_seconds";
	char name[96], service[STATE_NAME_MAX * 2 + 16], ns[STATE_NAME_MAX], code[16];
	struct prom_label lb[5];

	prom_family(f, req, "counter",
		    caller ? "Downstream streams by calling workload, Service and grpc-status "
			     "(\"none\": not gRPC)."
			   : "Downstream streams by Service, gRPC method and grpc-status "
			     "(\"none\": not gRPC).");
	for (int i = 0; i < rows->n; i++) {
		const struct call_row *r = &rows->rows[i];

		service_label(st, r->svc, service, sizeof(service));
		for (int g = 0; g < METRICS_GRPC_CODES + 2; g++) {
			struct prom_label gs = {"grpc_status", code};

			if (!r->c[CT_GRPC + g])
				continue;
			if (g < METRICS_GRPC_CODES)
				snprintf(code, sizeof(code), "%d", g);
			else
				snprintf(code, sizeof(code),
					 g == METRICS_GRPC_CODES ? "other" : "none");
			prom_u64(f, req, lb,
				 call_labels(r, caller, service, ns, sizeof(ns), lb, &gs),
				 r->c[CT_GRPC + g]);
		}
	}
	prom_family(f, hist, "histogram",
		    caller ? "Duration of downstream streams by calling workload and Service."
			   : "Duration of downstream streams by Service and gRPC method.");
	for (int i = 0; i < rows->n; i++) {
		const struct call_row *r = &rows->rows[i];
		uint64_t cum = 0;

		service_label(st, r->svc, service, sizeof(service));
		snprintf(name, sizeof(name), "%s_bucket", hist);
		for (int b = 0; b <= METRICS_N_BUCKETS; b++) {
			struct prom_label le = {"le", b < METRICS_N_BUCKETS ? metrics_buckets[b].le
									    : "+Inf"};

			cum += r->c[CT_BUCKETS + b];
			prom_u64(f, name, lb,
				 call_labels(r, caller, service, ns, sizeof(ns), lb, &le), cum);
		}
		snprintf(name, sizeof(name), "%s_sum", hist);
		prom_seconds(f, name, lb, call_labels(r, caller, service, ns, sizeof(ns), lb, NULL),
			     r->c[CT_SUM_US]);
		snprintf(name, sizeof(name), "%s_count", hist);
		prom_u64(f, name, lb, call_labels(r, caller, service, ns, sizeof(ns), lb, NULL),
			 cum);
	}
}

int metrics_write_prometheus(FILE *f, const struct metrics_merged *mm, const struct state *st,
			     uint64_t now_ms)
{
	static const char overflow[] = "h2split_metrics_overflow_total";
	struct labeled *eps = label_rows(&mm->eps, st);
	struct labeled *svcs = label_rows(&mm->svcs, st);

	if (!eps || !svcs) {
		free(eps);
		free(svcs);
		return -ENOMEM;
	}
	write_endpoints(f, eps, mm->eps.n, now_ms);
	write_services(f, svcs, mm->svcs.n);
	write_state(f, st);
	prom_family(f, overflow, "counter",
		    "Metric updates dropped because a worker's table was full.");
	prom_u64(f, overflow, &(struct prom_label){"table", "endpoints"}, 1, mm->eps.overflow);
	prom_u64(f, overflow, &(struct prom_label){"table", "services"}, 1, mm->svcs.overflow);
	if (mm->callers_on)
		write_calls(f, &mm->callers, st, true);
	if (mm->methods_on)
		write_calls(f, &mm->methods, st, false);
	if (mm->callers_on || mm->methods_on) {
		static const char series[] = "h2split_series_overflow_total";

		prom_family(f, series, "counter",
			    "Streams counted in their Service's \"other\" caller or method series: "
			    "the Service had --max-callers-per-service / "
			    "--max-methods-per-service labels already.");
		if (mm->callers_on)
			prom_u64(f, series, &(struct prom_label){"table", "callers"}, 1,
				 mm->callers.overflow);
		if (mm->methods_on)
			prom_u64(f, series, &(struct prom_label){"table", "methods"}, 1,
				 mm->methods.overflow);
	}
	free(eps);
	free(svcs);
	return ferror(f) ? -EIO : 0;
}
