// SPDX-License-Identifier: Apache-2.0
/*
 * Per-client connection counts (conn_limit.h): linear probing in a table of
 * CONN_LIMIT_SLOTS, filled to at most 3/4 so probes stay short; an entry
 * whose count drops to 0 is removed by backward-shift deletion, so no
 * tombstones build up as pods come and go.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "proxy/conn_limit.h"

struct slot {
	uint64_t key; /* 0: empty */
	uint32_t n;
};

struct conn_limit {
	pthread_mutex_t mu;
	uint32_t max;
	uint32_t used;
	struct slot slots[CONN_LIMIT_SLOTS];
};

_Static_assert((CONN_LIMIT_SLOTS & (CONN_LIMIT_SLOTS - 1)) == 0, "power of two");

static uint32_t home(uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return (uint32_t)key & (CONN_LIMIT_SLOTS - 1);
}

/* The slot of |key|, or the empty slot where it would go. Under mu. */
static uint32_t find(const struct conn_limit *cl, uint64_t key)
{
	uint32_t i = home(key);

	while (cl->slots[i].key && cl->slots[i].key != key)
		i = (i + 1) & (CONN_LIMIT_SLOTS - 1);
	return i;
}

struct conn_limit *conn_limit_new(uint32_t max)
{
	struct conn_limit *cl = calloc(1, sizeof(*cl));

	if (!cl)
		return NULL;
	pthread_mutex_init(&cl->mu, NULL);
	cl->max = max;
	return cl;
}

void conn_limit_free(struct conn_limit *cl)
{
	if (!cl)
		return;
	pthread_mutex_destroy(&cl->mu);
	free(cl);
}

int conn_limit_take(struct conn_limit *cl, uint64_t key)
{
	uint32_t i;
	int err = 0;

	pthread_mutex_lock(&cl->mu);
	i = find(cl, key);
	if (cl->slots[i].key) {
		if (cl->slots[i].n >= cl->max)
			err = -EBUSY;
		else
			cl->slots[i].n++;
	} else if (cl->used >= CONN_LIMIT_SLOTS / 4 * 3) {
		err = -ENOSPC;
	} else {
		cl->slots[i] = (struct slot){.key = key, .n = 1};
		cl->used++;
	}
	pthread_mutex_unlock(&cl->mu);
	return err;
}

/* Empty slot |i| and pull later entries of its probe run back into the gap. */
static void remove_at(struct conn_limit *cl, uint32_t i)
{
	uint32_t j = i;

	for (;;) {
		cl->slots[i].key = 0;
		for (;;) {
			uint32_t h;

			j = (j + 1) & (CONN_LIMIT_SLOTS - 1);
			if (!cl->slots[j].key)
				return;
			h = home(cl->slots[j].key);
			/* Stays put if its home lies cyclically in (i, j]. */
			if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
				continue;
			break;
		}
		cl->slots[i] = cl->slots[j];
		i = j;
	}
}

void conn_limit_put(struct conn_limit *cl, uint64_t key)
{
	uint32_t i;

	pthread_mutex_lock(&cl->mu);
	i = find(cl, key);
	if (cl->slots[i].key && --cl->slots[i].n == 0) {
		remove_at(cl, i);
		cl->used--;
	}
	pthread_mutex_unlock(&cl->mu);
}

uint32_t conn_limit_count(struct conn_limit *cl, uint64_t key)
{
	uint32_t i, n;

	pthread_mutex_lock(&cl->mu);
	i = find(cl, key);
	n = cl->slots[i].key ? cl->slots[i].n : 0;
	pthread_mutex_unlock(&cl->mu);
	return n;
}
