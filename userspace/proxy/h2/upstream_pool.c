// SPDX-License-Identifier: Apache-2.0
/*
 * Upstream pool bookkeeping (see upstream_pool.h): capacity per connection,
 * the choice of connection, and a chained hash table of pools. No I/O and no
 * nghttp2, so the capacity rules are unit-tested on their own.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/h2/upstream_pool.h"

uint32_t upstream_pool_capacity(const struct upstream_pool_conn *c)
{
	uint32_t max = UPSTREAM_PRE_SETTINGS_STREAMS;

	if (c->settings_rcvd)
		max = c->peer_max;
	else if (c->pool && c->pool->peer_max_hint && c->pool->peer_max_hint < max)
		max = c->pool->peer_max_hint;
	if (!c->accepting)
		return 0;
	if (max > UPSTREAM_MAX_STREAMS)
		max = UPSTREAM_MAX_STREAMS;
	return c->n_streams >= max ? 0 : max - c->n_streams;
}

struct upstream_pool_conn *upstream_pool_choose(const struct upstream_pool *p)
{
	for (struct upstream_pool_conn *c = p->conns; c; c = c->next)
		if (upstream_pool_capacity(c))
			return c;
	return NULL;
}

struct upstream_pool_conn *upstream_pool_refusing(const struct upstream_pool *p)
{
	for (struct upstream_pool_conn *c = p->conns; c; c = c->next)
		if (c->accepting && c->settings_rcvd && !c->peer_max)
			return c;
	return NULL;
}

void upstream_pool_link(struct upstream_pool *p, struct upstream_pool_conn *c)
{
	struct upstream_pool_conn **pp = &p->conns, *prev = NULL;

	while (*pp) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	*pp = c;
	c->prev = prev;
	c->next = NULL;
	c->pool = p;
	p->n_conns++;
}

void upstream_pool_unlink(struct upstream_pool_conn *c)
{
	struct upstream_pool *p = c->pool;

	if (!p)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	c->pool = NULL;
	p->n_conns--;
}

static size_t key_hash(const struct upstream_pools *t, const struct upstream_pool_key *k)
{
	uint64_t h = 0xcbf29ce484222325ull ^ k->netns_id;

	for (size_t i = 0; i < sizeof(k->ip.b); i++)
		h = (h ^ k->ip.b[i]) * 0x100000001b3ull;
	h = (h ^ k->port) * 0x100000001b3ull;
	h = (h ^ k->tls) * 0x100000001b3ull;
	return (size_t)(h ^ (h >> 29)) & (t->buckets - 1);
}

static bool key_eq(const struct upstream_pool_key *a, const struct upstream_pool_key *b)
{
	return a->netns_id == b->netns_id && a->port == b->port && a->tls == b->tls &&
	       !memcmp(&a->ip, &b->ip, sizeof(a->ip));
}

int upstream_pools_init(struct upstream_pools *t)
{
	t->buckets = 64;
	t->n = 0;
	t->tab = calloc(t->buckets, sizeof(*t->tab));
	return t->tab ? 0 : -ENOMEM;
}

void upstream_pools_fini(struct upstream_pools *t)
{
	for (size_t i = 0; t->tab && i < t->buckets; i++) {
		for (struct upstream_pool *p = t->tab[i], *next; p; p = next) {
			next = p->hnext;
			free(p);
		}
	}
	free(t->tab);
	t->tab = NULL;
	t->n = 0;
}

static void grow(struct upstream_pools *t)
{
	size_t ob = t->buckets;
	struct upstream_pool **old = t->tab, **tab = calloc(ob * 2, sizeof(*tab));

	if (!tab)
		return;
	t->tab = tab;
	t->buckets = ob * 2;
	for (size_t i = 0; i < ob; i++) {
		for (struct upstream_pool *p = old[i], *next; p; p = next) {
			size_t h = key_hash(t, &p->key);

			next = p->hnext;
			p->hnext = tab[h];
			tab[h] = p;
		}
	}
	free(old);
}

struct upstream_pool *upstream_pools_get(struct upstream_pools *t,
					 const struct upstream_pool_key *key, bool create)
{
	size_t h = key_hash(t, key);
	struct upstream_pool *p;

	for (p = t->tab[h]; p; p = p->hnext)
		if (key_eq(&p->key, key))
			return p;
	if (!create)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->key = *key;
	p->hnext = t->tab[h];
	t->tab[h] = p;
	if (++t->n > t->buckets * 2)
		grow(t);
	return p;
}

void upstream_pools_remove(struct upstream_pools *t, struct upstream_pool *p)
{
	struct upstream_pool **pp = &t->tab[key_hash(t, &p->key)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == p) {
			*pp = p->hnext;
			t->n--;
			free(p);
			return;
		}
	}
}

void upstream_pools_foreach(struct upstream_pools *t,
			    void (*cb)(struct upstream_pool *p, void *arg), void *arg)
{
	for (size_t i = 0; i < t->buckets; i++) {
		for (struct upstream_pool *p = t->tab[i], *next; p; p = next) {
			next = p->hnext;
			cb(p, arg);
		}
	}
}
