// SPDX-License-Identifier: Apache-2.0
/*
 * Per-worker labelled series (call_table.h), in a chunk_table.h table (as
 * metrics.c's), so the scraper walks them while the worker writes. Invariant: only the owning
 * worker writes; a key change (insert, removal) happens inside the entry's seqlock window, counter
 * bumps are plain relaxed load + store.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "telemetry/chunk_table.h"
#include "telemetry/call_table.h"
#include "telemetry/metrics_int.h"

#define LABEL_WORDS (CALL_LABEL_MAX / 8)
#define READ_RETRIES 64
#define FIRST_ENTRIES 16

struct centry {
	struct chunk_entry h; /* seq, live */
	_Atomic uint32_t svc;
	_Atomic uint32_t other;
	int32_t named; /* writer-only; `other` entries: labelled entries of the service */
	_Atomic uint64_t label[LABEL_WORDS]; /* NUL-padded */
	_Atomic uint64_t c[CT_N];
};

struct call_table {
	const char *name;
	int max_per_service;
	struct chunk_table ct;
	_Atomic uint64_t overflow;
	bool warned;
};

static inline void cadd(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

struct call_table *call_table_new(const char *name, int max_entries, int max_per_service)
{
	struct call_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->name = name;
	t->max_per_service = max_per_service > 0 ? max_per_service : 1;
	if (chunk_table_init(&t->ct, sizeof(struct centry), FIRST_ENTRIES,
			     max_entries > 0 ? (uint32_t)max_entries : 1)) {
		free(t);
		return NULL;
	}
	return t;
}

void call_table_free(struct call_table *t)
{
	if (!t)
		return;
	chunk_table_destroy(&t->ct);
	free(t);
}

/* Writer side: entry |i|. */
static inline struct centry *entry_at(const struct call_table *t, int i)
{
	return chunk_table_entry(&t->ct, i);
}

/* Over the label's words (NUL-padded), so a lookup costs a few multiplies. */
static uint32_t label_hash(uint32_t svc, bool other, const uint64_t *key, int nw)
{
	uint64_t h = ((uint64_t)svc << 1 | other) * 0x9e3779b97f4a7c15ull;

	for (int w = 0; w < nw; w++) {
		h = (h ^ key[w]) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 31;
	}
	return (uint32_t)(h ^ h >> 32);
}

/* |key|: the label as words, NUL-padded; |nw| words to compare, the last
 * one holding its terminating NUL (so a longer label never matches). */
static bool entry_is(const struct centry *e, uint32_t svc, bool other, const uint64_t *key,
		     int nw)
{
	if (atomic_load_explicit(&e->svc, memory_order_relaxed) != svc ||
	    atomic_load_explicit(&e->other, memory_order_relaxed) != other)
		return false;
	for (int w = 0; w < nw; w++)
		if (atomic_load_explicit(&e->label[w], memory_order_relaxed) != key[w])
			return false;
	return true;
}

static int find(const struct call_table *t, uint32_t h, uint32_t svc, bool other,
		const uint64_t *key, int nw)
{
	for (int32_t i = chunk_table_first(&t->ct, h); i >= 0; i = chunk_table_next(&t->ct, i))
		if (chunk_table_hash(&t->ct, i) == h &&
		    entry_is(entry_at(t, i), svc, other, key, nw))
			return i;
	return -1;
}

/* A new entry for the key, zeroed; -1 when there is no room. */
static int insert(struct call_table *t, uint32_t h, uint32_t svc, bool other, const uint64_t *words)
{
	struct centry *e;
	unsigned seq;
	int32_t i = chunk_table_insert(&t->ct, h);

	if (i < 0) {
		if (!t->warned)
			log_warn("metrics_table_full table=%s entries=%u msg=\"streams of further "
				 "services get no %s series on this worker\"",
				 t->name, t->ct.n_used, t->name);
		t->warned = true;
		return -1;
	}
	e = entry_at(t, i);
	seq = chunk_entry_write_begin(&e->h);
	atomic_store_explicit(&e->svc, svc, memory_order_relaxed);
	atomic_store_explicit(&e->other, other, memory_order_relaxed);
	for (int w = 0; w < LABEL_WORDS; w++)
		atomic_store_explicit(&e->label[w], words[w], memory_order_relaxed);
	for (int j = 0; j < CT_N; j++)
		atomic_store_explicit(&e->c[j], 0, memory_order_relaxed);
	e->named = 0;
	atomic_store_explicit(&e->h.live, 1, memory_order_relaxed);
	chunk_entry_write_end(&e->h, seq);
	return i;
}

/* The entry counting |label| of |svc|: its own, else (no room) the service's
 * `other`; NULL when even that cannot be had. */
static struct centry *series(struct call_table *t, uint32_t svc, const char *s, size_t n)
{
	static const uint64_t none[LABEL_WORDS];
	uint64_t key[LABEL_WORDS];
	int nw = (int)(n / 8) + 1, i = -1, o;
	uint32_t h = 0, ho;

	if (n < CALL_LABEL_MAX) {
		key[nw - 1] = 0;
		memcpy(key, s, n);
		h = label_hash(svc, false, key, nw);
		i = find(t, h, svc, false, key, nw);
		if (i >= 0)
			return entry_at(t, i);
	}
	ho = label_hash(svc, true, none, 1);
	o = find(t, ho, svc, true, none, 1);
	if (o < 0 && (o = insert(t, ho, svc, true, none)) < 0)
		return NULL;
	if (n < CALL_LABEL_MAX && entry_at(t, o)->named < t->max_per_service) {
		memset(key + nw, 0, (size_t)(LABEL_WORDS - nw) * sizeof(*key));
		i = insert(t, h, svc, false, key);
		if (i >= 0) {
			entry_at(t, o)->named++;
			return entry_at(t, i);
		}
	}
	cadd(&t->overflow, 1);
	return entry_at(t, o);
}

/* The first bucket whose bound is >= |ns| (METRICS_N_BUCKETS: +Inf), by bisection. */
static int bucket_of(uint64_t ns)
{
	int lo = 0, hi = METRICS_N_BUCKETS;

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (ns > metrics_buckets[mid].ns)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void call_table_record(struct call_table *t, uint32_t svc, const char *label, size_t len,
		       int grpc_status, uint64_t duration_ns)
{
	struct centry *e = series(t, svc, label, len);
	int g;

	if (!e)
		return;
	if (grpc_status < 0)
		g = METRICS_GRPC_CODES + 1;
	else
		g = grpc_status < METRICS_GRPC_CODES ? grpc_status : METRICS_GRPC_CODES;
	cadd(&e->c[CT_BUCKETS + bucket_of(duration_ns)], 1);
	cadd(&e->c[CT_SUM_US], duration_ns / 1000);
	cadd(&e->c[CT_GRPC + g], 1);
}

static bool prune_one(void *entry, void *arg)
{
	struct centry *e = entry;

	if (state_find_id(arg, atomic_load_explicit(&e->svc, memory_order_relaxed)))
		return false;
	chunk_entry_kill(&e->h);
	return true;
}

void call_table_prune(struct call_table *t, const struct state *st)
{
	if (st)
		chunk_table_prune(&t->ct, prune_one, (void *)st);
}

/* ---- scrape side ---- */

static bool entry_read(struct centry *e, struct call_row *r)
{
	for (int tries = 0; tries < READ_RETRIES; tries++) {
		unsigned s1 = atomic_load_explicit(&e->h.seq, memory_order_acquire);
		bool live;

		if (s1 & 1)
			continue;
		live = atomic_load_explicit(&e->h.live, memory_order_relaxed);
		r->svc = atomic_load_explicit(&e->svc, memory_order_relaxed);
		r->other = atomic_load_explicit(&e->other, memory_order_relaxed);
		for (int w = 0; w < LABEL_WORDS; w++) {
			uint64_t v = atomic_load_explicit(&e->label[w], memory_order_relaxed);

			memcpy(r->label + w * 8, &v, 8);
		}
		for (int j = 0; j < CT_N; j++)
			r->c[j] = atomic_load_explicit(&e->c[j], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->h.seq, memory_order_relaxed) != s1)
			continue;
		r->label[CALL_LABEL_MAX - 1] = 0;
		return live;
	}
	return false;
}

static int cmp_key(const void *a, const void *b)
{
	const struct call_row *x = a, *y = b;

	if (x->svc != y->svc)
		return x->svc < y->svc ? -1 : 1;
	if (x->other != y->other)
		return x->other ? 1 : -1;
	return strcmp(x->label, y->label);
}

uint64_t call_row_count(const struct call_row *r)
{
	uint64_t n = 0;

	for (int b = 0; b <= METRICS_N_BUCKETS; b++)
		n += r->c[CT_BUCKETS + b];
	return n;
}

/* Within one service: most streams first, `other` last. */
static int cmp_busy(const void *a, const void *b)
{
	const struct call_row *x = a, *y = b;
	uint64_t nx = call_row_count(x), ny = call_row_count(y);

	if (x->other != y->other)
		return x->other ? 1 : -1;
	if (nx != ny)
		return nx > ny ? -1 : 1;
	return strcmp(x->label, y->label);
}

static void add_row(struct call_row *dst, const struct call_row *src)
{
	for (int j = 0; j < CT_N; j++)
		dst->c[j] += src->c[j];
}

/* Cap the service rows [|from|, |to|) of |rows| (sorted by key) to |max|
 * labels plus `other`; kept rows are compacted to |*out|. */
static void cap_service(struct call_row *rows, int from, int to, int max, int *out,
			uint64_t *overflow)
{
	struct call_row other = {.svc = rows[from].svc, .other = true};
	int kept = 0;

	qsort(rows + from, (size_t)(to - from), sizeof(*rows), cmp_busy);
	for (int i = from; i < to; i++) {
		if (rows[i].other || kept >= max) {
			if (!rows[i].other)
				*overflow += call_row_count(&rows[i]);
			add_row(&other, &rows[i]);
			continue;
		}
		rows[(*out)++] = rows[i];
		kept++;
	}
	qsort(rows + *out - kept, (size_t)kept, sizeof(*rows), cmp_key);
	if (call_row_count(&other)) /* an idle `other` is no series */
		rows[(*out)++] = other;
}

int call_table_merge(struct call_table *const *ts, int n, int max_per_service,
		     struct call_rows *out)
{
	size_t cap = 0;
	int m = 0, folded = 0, w_out = 0;

	memset(out, 0, sizeof(*out));
	for (int w = 0; w < n; w++)
		if (ts[w])
			cap += chunk_table_readable(&ts[w]->ct);
	out->rows = calloc(cap ? cap : 1, sizeof(*out->rows));
	if (!out->rows)
		return -ENOMEM;
	/* Entries a worker adds meanwhile wait for the next scrape (and cap). */
	for (int w = 0; w < n && (size_t)m < cap; w++) {
		struct call_table *t = ts[w];
		uint32_t avail;

		if (!t)
			continue;
		out->overflow += atomic_load_explicit(&t->overflow, memory_order_relaxed);
		avail = chunk_table_readable(&t->ct);
		for (uint32_t i = 0; i < avail && (size_t)m < cap; i++)
			if (entry_read(chunk_table_at(&t->ct, i), &out->rows[m]))
				m++;
	}
	qsort(out->rows, (size_t)m, sizeof(*out->rows), cmp_key);
	for (int i = 0; i < m; i++) {
		if (folded && !cmp_key(&out->rows[folded - 1], &out->rows[i]))
			add_row(&out->rows[folded - 1], &out->rows[i]);
		else
			out->rows[folded++] = out->rows[i];
	}
	/* Workers each pick their own first labels: cap the union. */
	for (int i = 0; i < folded;) {
		int j = i;

		while (j < folded && out->rows[j].svc == out->rows[i].svc)
			j++;
		cap_service(out->rows, i, j, max_per_service > 0 ? max_per_service : 1, &w_out,
			    &out->overflow);
		i = j;
	}
	out->n = w_out;
	return 0;
}

void call_rows_free(struct call_rows *r)
{
	free(r->rows);
	r->rows = NULL;
	r->n = 0;
}
