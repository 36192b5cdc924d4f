// SPDX-License-Identifier: Apache-2.0
/*
 * Per-worker metric tables (metrics.h). One generic table holds keyed entries
 * of N counters in chunks that are allocated on demand and never move, so the
 * scraper can walk them while the worker writes. Invariant: only the owning
 * worker writes an entry; a key change (insert, reuse, removal) happens inside
 * the entry's seqlock window, plain counter bumps do not need one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "telemetry/chunk_table.h"
#include "telemetry/metrics.h"
#include "telemetry/metrics_int.h"
#include "telemetry/tap.h"

/* Entries one worker may track per table: far past any cluster (the tables
 * grow in chunks as entries come); past it, updates are counted in
 * h2split_metrics_overflow_total and dropped. */
#define EP_CAP (1u << 22)
#define SVC_CAP (1u << 20)
#define EP_FIRST 64
#define SVC_FIRST 16
/* A scrape gives up on an entry the worker keeps rewriting (it cannot, in
 * practice: a key changes once per insert or removal). */
#define READ_RETRIES 64

const struct metrics_bucket metrics_buckets[METRICS_N_BUCKETS] = {
    {100000ull, "0.0001"},    {250000ull, "0.00025"}, {500000ull, "0.0005"},
    {1000000ull, "0.001"},    {2500000ull, "0.0025"}, {5000000ull, "0.005"},
    {10000000ull, "0.01"},    {25000000ull, "0.025"}, {50000000ull, "0.05"},
    {100000000ull, "0.1"},    {250000000ull, "0.25"}, {500000000ull, "0.5"},
    {1000000000ull, "1"},     {2500000000ull, "2.5"}, {5000000000ull, "5"},
    {10000000000ull, "10"},   {30000000000ull, "30"}, {60000000000ull, "60"},
    {300000000000ull, "300"},
};

struct entry {
	struct chunk_entry h; /* seq, live */
	_Atomic uint32_t svc;
	_Atomic uint32_t port;
	_Atomic uint64_t ip[2];
	_Atomic uint64_t c[]; /* table.n_counters counters */
};

struct table {
	const char *name; /* static: "endpoints" | "services", for the overflow log */
	int n_counters;
	uint64_t max_merged; /* bit i: counter i is a state, merged by max */
	struct chunk_table ct;
	_Atomic uint64_t overflow; /* updates dropped: table full */
	bool warned;		   /* overflow logged (once per table) */
};

/* Series per worker of the caller and method tables. */
#define CALLER_ENTRIES (1 << 20)
#define METHOD_ENTRIES (1 << 20)

struct metrics {
	struct table eps;
	struct table svcs;
	struct call_table *callers; /* owned; NULL: off */
	struct call_table *methods; /* owned; NULL: off */
	int max_callers, max_methods;
	struct tap *tap; /* not owned; NULL: no tap */
	int tap_ring;
};

/* ---- counters: one writer, so a load and a store (no locked RMW) ---- */

static inline void cadd(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t cget(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- the table ---- */

static int table_init(struct table *t, const char *name, uint32_t max_entries, uint32_t first,
		      int n_counters, uint64_t max_merged)
{
	t->name = name;
	t->n_counters = n_counters;
	t->max_merged = max_merged;
	return chunk_table_init(
	    &t->ct, sizeof(struct entry) + (size_t)n_counters * sizeof(_Atomic uint64_t), first,
	    max_entries);
}

static inline struct entry *table_entry(const struct table *t, uint32_t i)
{
	return chunk_table_at(&t->ct, i);
}

static uint32_t key_hash(const struct key *k)
{
	uint64_t a, b, h;

	memcpy(&a, k->ip.b, 8);
	memcpy(&b, k->ip.b + 8, 8);
	h = a ^ (b * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)k->svc << 16 | k->port);
	/* splitmix64 finaliser */
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 31;
	return (uint32_t)h;
}

static bool entry_is(struct entry *e, const struct key *k)
{
	uint64_t ip[2];

	memcpy(ip, k->ip.b, sizeof(ip));
	return atomic_load_explicit(&e->svc, memory_order_relaxed) == k->svc &&
	       atomic_load_explicit(&e->port, memory_order_relaxed) == k->port &&
	       atomic_load_explicit(&e->ip[0], memory_order_relaxed) == ip[0] &&
	       atomic_load_explicit(&e->ip[1], memory_order_relaxed) == ip[1];
}

static struct entry *find_hashed(struct table *t, const struct key *k, uint32_t h)
{
	/* Chains are short (load factor <= 1): the key compare is cheaper than
	 * loading the stored hash first. */
	for (int32_t i = chunk_table_first(&t->ct, h); i >= 0; i = chunk_table_next(&t->ct, i)) {
		struct entry *e = chunk_table_entry(&t->ct, i);

		if (entry_is(e, k))
			return e;
	}
	return NULL;
}

static struct entry *table_find(struct table *t, const struct key *k)
{
	return find_hashed(t, k, key_hash(k));
}

/* A full table (or no memory) drops every update of a key it lacks, and
 * there may be many a second: say so once, where the operator looks first;
 * the counter keeps the count. */
static void table_warn_full(struct table *t, int err)
{
	if (t->warned)
		return;
	t->warned = true;
	log_warn("metrics_table_full table=%s entries=%u error=\"%s\" msg=\"further %s get no "
		 "series of their own on this worker; dropped updates are counted in "
		 "h2split_metrics_overflow_total\"",
		 t->name, t->ct.n_used, strerror(-err), t->name);
}

/* The entry for |k|, created (zeroed) if absent; NULL when it cannot be. */
static struct entry *table_get(struct table *t, const struct key *k)
{
	uint32_t h = key_hash(k);
	struct entry *e = find_hashed(t, k, h);
	uint64_t ip[2];
	unsigned s;
	int32_t i;

	if (e)
		return e;
	i = chunk_table_insert(&t->ct, h);
	if (i < 0) {
		cadd(&t->overflow, 1);
		table_warn_full(t, i);
		return NULL;
	}
	e = chunk_table_entry(&t->ct, i);
	memcpy(ip, k->ip.b, sizeof(ip));
	s = chunk_entry_write_begin(&e->h);
	atomic_store_explicit(&e->svc, k->svc, memory_order_relaxed);
	atomic_store_explicit(&e->port, k->port, memory_order_relaxed);
	atomic_store_explicit(&e->ip[0], ip[0], memory_order_relaxed);
	atomic_store_explicit(&e->ip[1], ip[1], memory_order_relaxed);
	for (int j = 0; j < t->n_counters; j++)
		atomic_store_explicit(&e->c[j], 0, memory_order_relaxed);
	atomic_store_explicit(&e->h.live, 1, memory_order_relaxed);
	chunk_entry_write_end(&e->h, s);
	return e;
}

struct prune_arg {
	bool (*drop)(struct entry *e, const struct state *st);
	const struct state *st;
};

static bool prune_one(void *entry, void *arg)
{
	const struct prune_arg *pa = arg;
	struct entry *e = entry;

	if (!pa->drop(e, pa->st))
		return false;
	chunk_entry_kill(&e->h);
	return true;
}

/* Remove every entry |drop| says so (worker side). */
static void table_prune(struct table *t, bool (*drop)(struct entry *e, const struct state *st),
			const struct state *st)
{
	struct prune_arg pa = {drop, st};

	chunk_table_prune(&t->ct, prune_one, &pa);
}

/* Copy entry |e| into |k| and |c| consistently (scrape side). False when the
 * entry is free or kept changing. */
static bool entry_read(const struct table *t, struct entry *e, struct key *k, uint64_t *c)
{
	for (int tries = 0; tries < READ_RETRIES; tries++) {
		unsigned s1 = atomic_load_explicit(&e->h.seq, memory_order_acquire);
		uint64_t ip[2];
		bool live;

		if (s1 & 1)
			continue;
		live = atomic_load_explicit(&e->h.live, memory_order_relaxed);
		k->svc = atomic_load_explicit(&e->svc, memory_order_relaxed);
		k->port = (uint16_t)atomic_load_explicit(&e->port, memory_order_relaxed);
		ip[0] = atomic_load_explicit(&e->ip[0], memory_order_relaxed);
		ip[1] = atomic_load_explicit(&e->ip[1], memory_order_relaxed);
		for (int j = 0; j < t->n_counters; j++)
			c[j] = atomic_load_explicit(&e->c[j], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->h.seq, memory_order_relaxed) != s1)
			continue;
		memcpy(k->ip.b, ip, sizeof(ip));
		return live;
	}
	return false;
}

/* ---- worker side ---- */

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	if (table_init(&m->eps, "endpoints", EP_CAP, EP_FIRST, EC_MAX, EC_MAX_MERGED) ||
	    table_init(&m->svcs, "services", SVC_CAP, SVC_FIRST, SC_MAX, 0)) {
		metrics_free(m);
		return NULL;
	}
	if (metrics_set_call_limits(m, METRICS_DEFAULT_MAX_CALLERS, METRICS_DEFAULT_MAX_METHODS)) {
		metrics_free(m);
		return NULL;
	}
	return m;
}

int metrics_set_call_limits(struct metrics *m, int max_callers, int max_methods)
{
	struct call_table *c = NULL, *me = NULL;

	if ((max_callers > 0 && !(c = call_table_new("callers", CALLER_ENTRIES, max_callers))) ||
	    (max_methods > 0 && !(me = call_table_new("methods", METHOD_ENTRIES, max_methods)))) {
		call_table_free(c);
		return -ENOMEM;
	}
	call_table_free(m->callers);
	call_table_free(m->methods);
	m->callers = c;
	m->methods = me;
	m->max_callers = max_callers;
	m->max_methods = max_methods;
	return 0;
}

/* "namespace/kind/name" of the caller into |label|; its length, or
 * CALL_LABEL_MAX when it does not fit (it then counts as `other`). */
static size_t caller_label(const struct state_caller *c, char *label)
{
	size_t nl, wl;

	if (!c) {
		memcpy(label, "unknown/unknown", sizeof("unknown/unknown"));
		return sizeof("unknown/unknown") - 1;
	}
	nl = strnlen(c->ns, sizeof(c->ns));
	wl = strnlen(c->workload, sizeof(c->workload));
	if (nl + 1 + wl >= CALL_LABEL_MAX)
		return CALL_LABEL_MAX;
	memcpy(label, c->ns, nl);
	label[nl] = '/';
	memcpy(label + nl + 1, c->workload, wl);
	label[nl + 1 + wl] = 0;
	return nl + 1 + wl;
}

static void tap_call(struct metrics *m, const struct metrics_call *c, const char *caller,
		     size_t caller_len, const uint8_t *method, size_t method_len)
{
	struct tap_event ev = {
	    .service_id = c->service_id,
	    .ep_port = c->ep_ip ? c->ep_port : 0,
	    .http_status = c->http_status,
	    .grpc_status = c->grpc_status,
	    .duration_us = (c->end_ns - c->start_ns) / 1000,
	    .bytes_in = c->bytes_in,
	    .bytes_out = c->bytes_out,
	};
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ev.unix_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	if (c->ep_ip)
		ev.ep_ip = *c->ep_ip;
	if (caller_len >= sizeof(ev.caller))
		caller_len = sizeof(ev.caller) - 1;
	memcpy(ev.caller, caller, caller_len);
	if (method_len >= sizeof(ev.method))
		method_len = sizeof(ev.method) - 1;
	memcpy(ev.method, method, method_len);
	tap_push(m->tap, m->tap_ring, &ev);
}

void metrics_call_done(struct metrics *m, const struct state *st, const struct metrics_call *c)
{
	const uint8_t *path = c->path;
	size_t path_len = c->path_len, caller_len = 0;
	uint64_t duration_ns = c->end_ns - c->start_ns;
	bool tapped = m->tap && tap_wanted(m->tap, c->end_ns / 1000000);
	char caller[CALL_LABEL_MAX];

	if (!m->callers && !m->methods && !tapped)
		return;
	if (path && path_len && path[0] == '/') {
		path++;
		path_len--;
	}
	if (!path || !path_len) {
		path = (const uint8_t *)"unknown";
		path_len = 7;
	}
	if (m->callers || tapped)
		caller_len = caller_label(state_find_caller(st, c->cgroup_id), caller);
	if (m->callers)
		call_table_record(m->callers, c->service_id, caller, caller_len, c->grpc_status,
				  duration_ns);
	if (m->methods)
		call_table_record(m->methods, c->service_id, (const char *)path, path_len,
				  c->grpc_status, duration_ns);
	if (tapped)
		tap_call(m, c, caller_len < CALL_LABEL_MAX ? caller : "other",
			 caller_len < CALL_LABEL_MAX ? caller_len : 5, path, path_len);
}

void metrics_set_tap(struct metrics *m, struct tap *tap, int ring)
{
	m->tap = tap;
	m->tap_ring = ring;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	call_table_free(m->callers);
	call_table_free(m->methods);
	chunk_table_destroy(&m->eps.ct);
	chunk_table_destroy(&m->svcs.ct);
	free(m);
}

static struct entry *endpoint_entry(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
				    uint16_t port)
{
	struct key k = {.svc = service_id, .port = port, .ip = *ip};

	return table_get(&m->eps, &k);
}

void metrics_endpoint_inflight(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
			       uint16_t port, int delta)
{
	struct key k = {.svc = service_id, .port = port, .ip = *ip};
	struct entry *e;
	int64_t active;

	if (delta > 0) {
		e = table_get(&m->eps, &k);
		if (!e)
			return;
		cadd(&e->c[EC_ACTIVE], (uint64_t)delta);
		cadd(&e->c[EC_REQUESTS], (uint64_t)delta);
		return;
	}
	/* Never below zero: the matching +1 may have been dropped on overflow. */
	e = table_find(&m->eps, &k);
	if (!e)
		return;
	active = (int64_t)cget(&e->c[EC_ACTIVE]) + delta;
	atomic_store_explicit(&e->c[EC_ACTIVE], (uint64_t)(active > 0 ? active : 0),
			      memory_order_relaxed);
}

void metrics_upstream_event(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
			    uint16_t port, enum metrics_upstream_event ev)
{
	struct entry *e;

	if ((unsigned)ev >= METRICS_EV_MAX)
		return;
	e = endpoint_entry(m, service_id, ip, port);
	if (e)
		cadd(&e->c[EC_EVENTS + ev], 1);
}

void metrics_endpoint_health(struct metrics *m, uint32_t service_id, const struct h2s_ip *ip,
			     uint16_t port, const struct metrics_endpoint_health *h)
{
	struct entry *e = endpoint_entry(m, service_id, ip, port);

	if (!e)
		return;
	atomic_store_explicit(&e->c[EC_EJECTED_UNTIL], h->ejected_until_ms, memory_order_relaxed);
	atomic_store_explicit(&e->c[EC_BACKOFF_UNTIL], h->backoff_until_ms, memory_order_relaxed);
	atomic_store_explicit(&e->c[EC_CONSEC_FAILURES], h->consec_failures, memory_order_relaxed);
	atomic_store_explicit(&e->c[EC_EJECTIONS], h->ejections, memory_order_relaxed);
	atomic_store_explicit(&e->c[EC_EWMA_US], h->ewma_us, memory_order_relaxed);
	atomic_store_explicit(&e->c[EC_JITTER_US], h->jitter_us, memory_order_relaxed);
	atomic_store_explicit(&e->c[EC_WARM_UNTIL], h->warm_until_ms, memory_order_relaxed);
}

static bool is_failure(int grpc_status, int http_status)
{
	return http_status <= 0 || http_status >= 500 || grpc_status == 2 || grpc_status == 13 ||
	       grpc_status == 14 || grpc_status == 15;
}

static int bucket_of(uint64_t duration_ns)
{
	int i = 0;

	while (i < METRICS_N_BUCKETS && duration_ns > metrics_buckets[i].ns)
		i++;
	return i; /* METRICS_N_BUCKETS: +Inf */
}

static int http_class(int http_status)
{
	return http_status >= 100 && http_status <= 599 ? http_status / 100 : 0;
}

void metrics_stream_done(struct metrics *m, uint32_t service_id, const struct h2s_ip *ep_ip,
			 uint16_t ep_port, int grpc_status, int http_status, uint64_t duration_ns,
			 uint64_t bytes_in, uint64_t bytes_out)
{
	struct key k = {.svc = service_id};
	struct entry *e = table_get(&m->svcs, &k);

	if (e) {
		cadd(&e->c[SC_BUCKETS + bucket_of(duration_ns)], 1);
		cadd(&e->c[SC_SUM_US], duration_ns / 1000);
		if (grpc_status >= 0)
			cadd(&e->c[SC_GRPC + (grpc_status < METRICS_GRPC_CODES
						  ? grpc_status
						  : METRICS_GRPC_CODES)],
			     1);
		cadd(&e->c[SC_HTTP + http_class(http_status)], 1);
		cadd(&e->c[SC_REQ_BYTES], bytes_in);
		cadd(&e->c[SC_RESP_BYTES], bytes_out);
	}
	if (!ep_ip || !is_failure(grpc_status, http_status))
		return;
	e = endpoint_entry(m, service_id, ep_ip, ep_port);
	if (e)
		cadd(&e->c[EC_FAILURES], 1);
}

void metrics_service_pending(struct metrics *m, uint32_t service_id, int delta)
{
	struct key k = {.svc = service_id};
	struct entry *e = table_get(&m->svcs, &k);
	int64_t n;

	if (!e)
		return;
	n = (int64_t)cget(&e->c[SC_PENDING]) + delta;
	atomic_store_explicit(&e->c[SC_PENDING], (uint64_t)(n > 0 ? n : 0), memory_order_relaxed);
}

void metrics_circuit_breaker_rejection(struct metrics *m, uint32_t service_id,
				       enum metrics_cb_reason why)
{
	struct key k = {.svc = service_id};
	struct entry *e;

	if ((unsigned)why >= METRICS_CB_MAX)
		return;
	e = table_get(&m->svcs, &k);
	if (e)
		cadd(&e->c[SC_CB_REJECT + why], 1);
}

static void service_add(struct metrics *m, uint32_t service_id, int idx)
{
	struct key k = {.svc = service_id};
	struct entry *e = table_get(&m->svcs, &k);

	if (e)
		cadd(&e->c[idx], 1);
}

void metrics_service_retry(struct metrics *m, uint32_t service_id, enum metrics_retry_reason why)
{
	if ((unsigned)why < METRICS_RETRY_MAX)
		service_add(m, service_id, SC_RETRIES + (int)why);
}

void metrics_service_hedge(struct metrics *m, uint32_t service_id)
{
	service_add(m, service_id, SC_HEDGES);
}

void metrics_service_retry_budget_exhausted(struct metrics *m, uint32_t service_id)
{
	service_add(m, service_id, SC_BUDGET_EXHAUSTED);
}

void metrics_service_routed(struct metrics *m, uint32_t service_id, int locality, int failover)
{
	struct key k = {.svc = service_id};
	struct entry *e;

	if (locality < 0 || locality > STATE_LOC_NODE || failover < 0 ||
	    failover >= METRICS_FAILOVER_MAX)
		return;
	e = table_get(&m->svcs, &k);
	if (!e)
		return;
	cadd(&e->c[SC_LOCALITY + locality], 1);
	if (failover)
		cadd(&e->c[SC_FAILOVER + failover], 1);
}

static int cmp_state_ep(const void *key, const void *elem)
{
	const struct key *k = key;
	const struct state_endpoint *ep = elem;
	int c = memcmp(&k->ip, &ep->ip, sizeof(k->ip));

	return c ? c : (int)k->port - (int)ep->port;
}

const struct state_endpoint *metrics_find_state_ep(const struct state_service *svc,
						   const struct key *k)
{
	if (!svc->n_eps) /* eps is NULL then, which bsearch must not see */
		return NULL;
	return bsearch(k, svc->eps, (size_t)svc->n_eps, sizeof(*svc->eps), cmp_state_ep);
}

static struct key entry_key(struct entry *e)
{
	struct key k = {
	    .svc = atomic_load_explicit(&e->svc, memory_order_relaxed),
	    .port = (uint16_t)atomic_load_explicit(&e->port, memory_order_relaxed),
	};
	uint64_t ip[2] = {atomic_load_explicit(&e->ip[0], memory_order_relaxed),
			  atomic_load_explicit(&e->ip[1], memory_order_relaxed)};

	memcpy(k.ip.b, ip, sizeof(ip));
	return k;
}

static bool drop_endpoint(struct entry *e, const struct state *st)
{
	struct key k;
	const struct state_service *svc;

	if (cget(&e->c[EC_ACTIVE]) != 0)
		return false;
	k = entry_key(e);
	svc = state_find_id(st, k.svc);
	return !svc || !metrics_find_state_ep(svc, &k);
}

static bool drop_service(struct entry *e, const struct state *st)
{
	return !state_find_id(st, atomic_load_explicit(&e->svc, memory_order_relaxed));
}

void metrics_prune(struct metrics *m, const struct state *st)
{
	if (!st)
		return;
	table_prune(&m->eps, drop_endpoint, st);
	table_prune(&m->svcs, drop_service, st);
	if (m->callers)
		call_table_prune(m->callers, st);
	if (m->methods)
		call_table_prune(m->methods, st);
}

/* ---- scrape side ---- */

static int cmp_key(const struct key *a, const struct key *b)
{
	int c;

	if (a->svc != b->svc)
		return a->svc < b->svc ? -1 : 1;
	c = memcmp(&a->ip, &b->ip, sizeof(a->ip));
	return c ? c : (int)a->port - (int)b->port;
}

static int cmp_row(const void *a, const void *b)
{
	return cmp_key(&((const struct row *)a)->k, &((const struct row *)b)->k);
}

/* Fold rows with equal keys (sorted, so adjacent) into the first of them. */
static void fold_rows(struct mtable *mt, int n_rows)
{
	mt->n = 0;
	for (int i = 0; i < n_rows; i++) {
		struct row *dst = mt->n ? &mt->rows[mt->n - 1] : NULL;

		if (dst && !cmp_key(&dst->k, &mt->rows[i].k)) {
			for (int j = 0; j < mt->n_counters; j++) {
				uint64_t v = mt->rows[i].c[j];

				if (j >= 64 || !(mt->max_merged >> j & 1))
					dst->c[j] += v;
				else if (v > dst->c[j])
					dst->c[j] = v;
			}
			continue;
		}
		mt->rows[mt->n++] = mt->rows[i];
	}
}

static struct table *table_of(struct metrics *m, size_t which)
{
	return (struct table *)((char *)m + which);
}

/* Sum table |which| (offset of a struct table in struct metrics) of every
 * worker. Chunks a worker adds meanwhile wait for the next scrape. */
static int mtable_merge(struct mtable *mt, struct metrics *const *ms, int n, size_t which)
{
	uint32_t *avail = calloc(n > 0 ? (size_t)n : 1, sizeof(*avail));
	size_t cap = 0;
	int out = 0;

	if (!avail)
		return -ENOMEM;
	for (int w = 0; w < n; w++) {
		if (!ms[w])
			continue;
		mt->n_counters = table_of(ms[w], which)->n_counters;
		mt->max_merged = table_of(ms[w], which)->max_merged;
		avail[w] = chunk_table_readable(&table_of(ms[w], which)->ct);
		cap += avail[w];
	}
	mt->rows = calloc(cap ? cap : 1, sizeof(*mt->rows));
	mt->vals = calloc(cap ? cap * (size_t)mt->n_counters : 1, sizeof(uint64_t));
	for (int w = 0; w < n && mt->rows && mt->vals; w++) {
		struct table *t;

		if (!ms[w])
			continue;
		t = table_of(ms[w], which);
		mt->overflow += cget(&t->overflow);
		for (uint32_t i = 0; i < avail[w]; i++) {
			struct row *r = &mt->rows[out];

			r->c = mt->vals + (size_t)out * (size_t)mt->n_counters;
			if (entry_read(t, table_entry(t, i), &r->k, r->c))
				out++;
		}
	}
	free(avail);
	if (!mt->rows || !mt->vals)
		return -ENOMEM;
	qsort(mt->rows, (size_t)out, sizeof(*mt->rows), cmp_row);
	fold_rows(mt, out);
	return 0;
}

static int merge_calls(struct metrics_merged *mm, struct metrics *const *ms, int n)
{
	struct call_table **c = calloc(n > 0 ? (size_t)n : 1, sizeof(*c));
	struct call_table **me = calloc(n > 0 ? (size_t)n : 1, sizeof(*me));
	int max_c = 0, max_m = 0, rc = -ENOMEM;

	if (!c || !me)
		goto out;
	for (int w = 0; w < n; w++) {
		if (!ms[w])
			continue;
		c[w] = ms[w]->callers;
		me[w] = ms[w]->methods;
		max_c = ms[w]->max_callers;
		max_m = ms[w]->max_methods;
	}
	mm->callers_on = max_c > 0;
	mm->methods_on = max_m > 0;
	rc = call_table_merge(c, n, max_c, &mm->callers);
	if (!rc)
		rc = call_table_merge(me, n, max_m, &mm->methods);
out:
	free(c);
	free(me);
	return rc;
}

struct metrics_merged *metrics_merge(struct metrics *const *ms, int n)
{
	struct metrics_merged *mm = calloc(1, sizeof(*mm));

	if (!mm)
		return NULL;
	if (mtable_merge(&mm->eps, ms, n, offsetof(struct metrics, eps)) ||
	    mtable_merge(&mm->svcs, ms, n, offsetof(struct metrics, svcs)) ||
	    merge_calls(mm, ms, n)) {
		metrics_merged_free(mm);
		return NULL;
	}
	return mm;
}

void metrics_merged_free(struct metrics_merged *mm)
{
	if (!mm)
		return;
	free(mm->eps.rows);
	free(mm->eps.vals);
	free(mm->svcs.rows);
	free(mm->svcs.vals);
	call_rows_free(&mm->callers);
	call_rows_free(&mm->methods);
	free(mm);
}

uint64_t metrics_buckets_ns(int i)
{
	return metrics_buckets[i].ns;
}

const struct call_rows *metrics_merged_calls(const struct metrics_merged *mm, bool callers)
{
	if (callers)
		return mm->callers_on ? &mm->callers : NULL;
	return mm->methods_on ? &mm->methods : NULL;
}

int metrics_merged_endpoint(const struct metrics_merged *mm, uint32_t service_id,
			    const struct h2s_ip *ip, uint16_t port,
			    struct metrics_endpoint_totals *out)
{
	struct row key = {.k = {.svc = service_id, .port = port, .ip = *ip}};
	const struct row *r;

	memset(out, 0, sizeof(*out));
	r = mm->eps.n ? bsearch(&key, mm->eps.rows, (size_t)mm->eps.n, sizeof(*r), cmp_row) : NULL;
	if (!r)
		return -ENOENT;
	out->active = (int64_t)r->c[EC_ACTIVE];
	out->requests = r->c[EC_REQUESTS];
	out->failures = r->c[EC_FAILURES];
	for (int i = 0; i < METRICS_EV_MAX; i++)
		out->events[i] = r->c[EC_EVENTS + i];
	out->health.ejected_until_ms = r->c[EC_EJECTED_UNTIL];
	out->health.backoff_until_ms = r->c[EC_BACKOFF_UNTIL];
	out->health.consec_failures = (uint32_t)r->c[EC_CONSEC_FAILURES];
	out->health.ejections = (uint32_t)r->c[EC_EJECTIONS];
	out->health.ewma_us = r->c[EC_EWMA_US];
	out->health.jitter_us = r->c[EC_JITTER_US];
	out->health.warm_until_ms = r->c[EC_WARM_UNTIL];
	return 0;
}
