/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A growable table of fixed-size entries with one writer (a worker) and
 * readers on other threads (the scrape): entries live in chunks that double
 * in size, are allocated on demand and never move, so a reader walks them
 * while the writer adds more. The writer finds entries through a private
 * hash index (chains of entry indices) that it rehashes as it grows. Both
 * metrics.c's tables and call_table.c's series live in one.
 */
#ifndef H2SPLIT_CHUNK_TABLE_H
#define H2SPLIT_CHUNK_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Chunk c holds first << c entries: 24 chunks hold first * (2^24 - 1). */
#define CHUNK_TABLE_CHUNKS 24

struct chunk_table {
	size_t entry_size;
	uint32_t first_shift; /* chunk 0 holds 1 << first_shift entries */
	uint32_t max_entries; /* a cap: inserts past it fail with -ENOSPC */
	_Atomic(unsigned char *) chunks[CHUNK_TABLE_CHUNKS]; /* owned; NULL past the last */
	_Atomic uint32_t n_alloc; /* entries in published chunks (readers' bound) */
	/* Writer-private: hash chains (-1 ends one), one hash and link per entry. */
	int32_t *head;	      /* owned, hash_mask + 1 buckets; a static empty one at first */
	int32_t *next;	      /* owned, n_alloc */
	unsigned char **addr; /* owned, n_alloc: where entry i is (cheaper than computing it) */
	uint32_t *hash;	      /* owned, n_alloc */
	int32_t *free_stack;  /* owned, n_alloc */
	uint32_t hash_mask;
	uint32_t n_free, n_used;
};

/* Entries of |entry_size| bytes, zeroed when their chunk is made; the first
 * chunk holds |first| (a power of two) of them; at most |max_entries|.
 * Nothing is allocated before the first insert. 0 or -ENOMEM. */
int chunk_table_init(struct chunk_table *t, size_t entry_size, uint32_t first,
		     uint32_t max_entries);
/* Frees every chunk. No reader may be walking |t|. */
void chunk_table_destroy(struct chunk_table *t);

/* Entry |i| (< n_alloc as the caller last read it). */
static inline void *chunk_table_at(const struct chunk_table *t, uint32_t i)
{
	uint32_t q = (i >> t->first_shift) + 1, c = 31 - (uint32_t)__builtin_clz(q);
	unsigned char *chunk =
	    atomic_load_explicit(&((struct chunk_table *)t)->chunks[c], memory_order_relaxed);

	return chunk + (size_t)(i - (((1u << c) - 1) << t->first_shift)) * t->entry_size;
}

/* ---- the writer ---- */

/* Entry |i| (< n_alloc), for the writer only: one load, no arithmetic. */
static inline void *chunk_table_entry(const struct chunk_table *t, int32_t i)
{
	return t->addr[i];
}

/* The first entry index chained under |hash|, -1 when none; then
 * chunk_table_next(). Compare chunk_table_hash() first: it is cheap. */
static inline int32_t chunk_table_first(const struct chunk_table *t, uint32_t hash)
{
	return t->head[hash & t->hash_mask];
}

static inline int32_t chunk_table_next(const struct chunk_table *t, int32_t i)
{
	return t->next[i];
}

static inline uint32_t chunk_table_hash(const struct chunk_table *t, int32_t i)
{
	return t->hash[i];
}

/* A free entry, chained under |hash|: its index, -ENOSPC past max_entries,
 * or -ENOMEM. Its contents are what the last user left (zero when new): the
 * caller sets its key inside its seqlock window. */
int32_t chunk_table_insert(struct chunk_table *t, uint32_t hash);

/* Take every entry |drop| returns true for out of the index and onto the
 * free list. |drop| sees each chained entry once and, when it returns true,
 * has already marked the entry dead for readers. */
void chunk_table_prune(struct chunk_table *t, bool (*drop)(void *entry, void *arg), void *arg);

/* ---- readers: any thread ---- */

/* How many entries a reader may walk (0 .. n - 1 with chunk_table_at()). */
static inline uint32_t chunk_table_readable(const struct chunk_table *t)
{
	return atomic_load_explicit(&((struct chunk_table *)t)->n_alloc, memory_order_acquire);
}

/* ---- the per-entry seqlock both users put first in an entry ---- */

struct chunk_entry {
	atomic_uint seq; /* odd while the writer changes the key or liveness */
	_Atomic uint32_t live;
};

static inline unsigned chunk_entry_write_begin(struct chunk_entry *e)
{
	unsigned s = atomic_load_explicit(&e->seq, memory_order_relaxed);

	atomic_store_explicit(&e->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	return s;
}

static inline void chunk_entry_write_end(struct chunk_entry *e, unsigned s)
{
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

/* Mark |e| free for readers (the writer then calls its prune's |drop| true). */
static inline void chunk_entry_kill(struct chunk_entry *e)
{
	unsigned s = chunk_entry_write_begin(e);

	atomic_store_explicit(&e->live, 0, memory_order_relaxed);
	chunk_entry_write_end(e, s);
}

#endif
