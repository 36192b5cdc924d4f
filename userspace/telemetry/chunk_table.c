// SPDX-License-Identifier: Apache-2.0
/*
 * The growable chunked table (chunk_table.h). Invariant: a chunk, once
 * published (its pointer stored, then n_alloc raised with release order), is
 * never moved or freed before chunk_table_destroy(); only the writer-private
 * index arrays are reallocated as the table grows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/chunk_table.h"

/* The index of a table nothing was inserted in: one empty bucket, so a
 * lookup needs no test for "no index yet". Never written, never freed. */
static int32_t no_buckets[1] = {-1};

int chunk_table_init(struct chunk_table *t, size_t entry_size, uint32_t first, uint32_t max_entries)
{
	memset(t, 0, sizeof(*t));
	if (!first || (first & (first - 1)) || !entry_size)
		return -EINVAL;
	t->head = no_buckets;
	t->entry_size = entry_size;
	t->first_shift = (uint32_t)__builtin_ctz(first);
	t->max_entries = max_entries;
	return 0;
}

void chunk_table_destroy(struct chunk_table *t)
{
	for (int i = 0; i < CHUNK_TABLE_CHUNKS; i++)
		free(atomic_load_explicit(&t->chunks[i], memory_order_relaxed));
	if (t->head != no_buckets)
		free(t->head);
	free(t->next);
	free(t->addr);
	free(t->hash);
	free(t->free_stack);
	memset(t, 0, sizeof(*t));
}

/* Double the buckets (load factor 1) and rechain every used entry. */
static int rehash(struct chunk_table *t, uint32_t buckets)
{
	int32_t *head = malloc((size_t)buckets * sizeof(*head)), *old = t->head;
	uint32_t ob = t->head != no_buckets ? t->hash_mask + 1 : 0;

	if (!head)
		return -ENOMEM;
	for (uint32_t b = 0; b < buckets; b++)
		head[b] = -1;
	for (uint32_t b = 0; b < ob; b++) {
		for (int32_t i = old[b], nx; i >= 0; i = nx) {
			uint32_t nb = t->hash[i] & (buckets - 1);

			nx = t->next[i];
			t->next[i] = head[nb];
			head[nb] = i;
		}
	}
	if (old != no_buckets)
		free(old);
	t->head = head;
	t->hash_mask = buckets - 1;
	return 0;
}

static int grow_array(void *pp, uint32_t n, size_t size)
{
	void *v = realloc(*(void **)pp, (size_t)n * size);

	if (!v)
		return -ENOMEM;
	*(void **)pp = v;
	return 0;
}

/* Publish the next chunk and put its entries on the free stack. */
static int grow(struct chunk_table *t)
{
	uint32_t n = atomic_load_explicit(&t->n_alloc, memory_order_relaxed), c = 0, size;
	unsigned char *chunk;

	while (c < CHUNK_TABLE_CHUNKS && atomic_load_explicit(&t->chunks[c], memory_order_relaxed))
		c++;
	size = 1u << (t->first_shift + c);
	if (c >= CHUNK_TABLE_CHUNKS || n >= t->max_entries || n + size < n)
		return -ENOSPC;
	if (grow_array(&t->next, n + size, sizeof(*t->next)) ||
	    grow_array(&t->addr, n + size, sizeof(*t->addr)) ||
	    grow_array(&t->hash, n + size, sizeof(*t->hash)) ||
	    grow_array(&t->free_stack, n + size, sizeof(*t->free_stack)))
		return -ENOMEM;
	chunk = calloc(size, t->entry_size);
	if (!chunk)
		return -ENOMEM;
	atomic_store_explicit(&t->chunks[c], chunk, memory_order_relaxed);
	for (uint32_t i = size; i-- > 0;) {
		t->addr[n + i] = chunk + (size_t)i * t->entry_size;
		t->free_stack[t->n_free++] = (int32_t)(n + i);
	}
	atomic_store_explicit(&t->n_alloc, n + size, memory_order_release);
	return 0;
}

int32_t chunk_table_insert(struct chunk_table *t, uint32_t hash)
{
	int32_t i;
	int err;

	if (t->n_used >= t->max_entries)
		return -ENOSPC;
	if (!t->n_free && (err = grow(t)))
		return err;
	if (t->head == no_buckets) {
		if ((err = rehash(t, 1u << t->first_shift)))
			return err;
	} else if (t->n_used + 1 > t->hash_mask + 1) {
		rehash(t, (t->hash_mask + 1) * 2); /* failed: keep the longer chains */
	}
	i = t->free_stack[--t->n_free];
	t->hash[i] = hash;
	t->next[i] = t->head[hash & t->hash_mask];
	t->head[hash & t->hash_mask] = i;
	t->n_used++;
	return i;
}

void chunk_table_prune(struct chunk_table *t, bool (*drop)(void *entry, void *arg), void *arg)
{
	for (uint32_t b = 0; t->head != no_buckets && b <= t->hash_mask; b++) {
		int32_t *link = &t->head[b];

		while (*link >= 0) {
			int32_t i = *link;

			if (!drop(chunk_table_entry(t, i), arg)) {
				link = &t->next[i];
				continue;
			}
			*link = t->next[i];
			t->free_stack[t->n_free++] = i;
			t->n_used--;
		}
	}
}
