// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for upstream_pool.c: stream capacity of a connection (100
 * before the peer's SETTINGS, then its MAX_CONCURRENT_STREAMS, capped; none
 * after GOAWAY), the choice of connection (oldest with room, else open a new
 * one rather than queue, but not while a peer allows no streams at all), and
 * the pool table keyed by (netns, ip, port, tls).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/h2/upstream_pool.h"

static struct upstream_pool_conn conn(bool settings, uint32_t peer_max, uint32_t n)
{
	return (struct upstream_pool_conn){
	    .accepting = true, .settings_rcvd = settings, .peer_max = peer_max, .n_streams = n};
}

static void test_capacity(void **state)
{
	struct upstream_pool_conn c;

	(void)state;
	c = conn(false, 0, 0);
	assert_int_equal(upstream_pool_capacity(&c), UPSTREAM_PRE_SETTINGS_STREAMS);
	c = conn(false, 0, 99);
	assert_int_equal(upstream_pool_capacity(&c), 1);
	c = conn(false, 0, 100);
	assert_int_equal(upstream_pool_capacity(&c), 0);
	/* The peer's SETTINGS decide from then on, both ways. */
	c = conn(true, 10, 3);
	assert_int_equal(upstream_pool_capacity(&c), 7);
	c = conn(true, 500, 100);
	assert_int_equal(upstream_pool_capacity(&c), 400);
	/* More streams than a lowered limit: none, never a wrapped number. */
	c = conn(true, 5, 8);
	assert_int_equal(upstream_pool_capacity(&c), 0);
	c = conn(true, 0, 0);
	assert_int_equal(upstream_pool_capacity(&c), 0);
	/* "Unlimited" is capped. */
	c = conn(true, UINT32_MAX, 0);
	assert_int_equal(upstream_pool_capacity(&c), UPSTREAM_MAX_STREAMS);
	/* GOAWAY received, failing, or endpoint gone. */
	c = conn(true, 100, 0);
	c.accepting = false;
	assert_int_equal(upstream_pool_capacity(&c), 0);
}

static void test_pre_settings_hint(void **state)
{
	struct upstream_pool p = {0};
	struct upstream_pool_conn a = conn(true, 1, 1), b = conn(false, 0, 0);

	(void)state;
	upstream_pool_link(&p, &a);
	upstream_pool_link(&p, &b);
	/* Nothing learned yet: the default burst. */
	assert_int_equal(upstream_pool_capacity(&b), UPSTREAM_PRE_SETTINGS_STREAMS);
	/* A connection of the pool learned the backend takes one stream. */
	p.peer_max_hint = 1;
	assert_int_equal(upstream_pool_capacity(&b), 1);
	/* A larger hint never raises the pre-SETTINGS cap. */
	p.peer_max_hint = 5000;
	assert_int_equal(upstream_pool_capacity(&b), UPSTREAM_PRE_SETTINGS_STREAMS);
	/* Once b has its own SETTINGS, they decide. */
	b.settings_rcvd = true;
	b.peer_max = 7;
	p.peer_max_hint = 1;
	assert_int_equal(upstream_pool_capacity(&b), 7);
}

static void test_choose(void **state)
{
	struct upstream_pool p = {0};
	struct upstream_pool_conn a = conn(true, 2, 0), b = conn(false, 0, 0), c = conn(true, 1, 0);

	(void)state;
	assert_null(upstream_pool_choose(&p)); /* empty: open one */
	upstream_pool_link(&p, &a);
	upstream_pool_link(&p, &b);
	upstream_pool_link(&p, &c);
	assert_int_equal(p.n_conns, 3);
	/* Oldest with room first, so streams pack and idle connections expire. */
	assert_ptr_equal(upstream_pool_choose(&p), &a);
	a.n_streams = 2;
	assert_ptr_equal(upstream_pool_choose(&p), &b);
	b.accepting = false; /* GOAWAY */
	assert_ptr_equal(upstream_pool_choose(&p), &c);
	c.n_streams = 1;
	assert_null(upstream_pool_choose(&p)); /* all full: a new connection, no queue */
	a.n_streams = 1;
	assert_ptr_equal(upstream_pool_choose(&p), &a);
	upstream_pool_unlink(&a);
	assert_null(a.pool);
	assert_ptr_equal(p.conns, &b);
	upstream_pool_unlink(&c);
	assert_ptr_equal(p.conns, &b);
	assert_null(b.next);
	upstream_pool_unlink(&b);
	assert_null(p.conns);
	assert_int_equal(p.n_conns, 0);
	upstream_pool_unlink(&b); /* not in a pool: no-op */
}

static void test_refusing(void **state)
{
	struct upstream_pool p = {0};
	struct upstream_pool_conn a = conn(true, 0, 1), b = conn(false, 0, 0);

	(void)state;
	assert_null(upstream_pool_refusing(&p));
	/* Before its SETTINGS nothing is known: b may take streams. */
	upstream_pool_link(&p, &b);
	assert_null(upstream_pool_refusing(&p));
	/* a's peer said MAX_CONCURRENT_STREAMS 0: no capacity, and no new
	 * connection either while a stays. */
	upstream_pool_link(&p, &a);
	assert_ptr_equal(upstream_pool_refusing(&p), &a);
	b.n_streams = UPSTREAM_PRE_SETTINGS_STREAMS;
	assert_null(upstream_pool_choose(&p));
	/* A connection with room is still used. */
	b.n_streams = 0;
	assert_ptr_equal(upstream_pool_choose(&p), &b);
	/* The peer raised its limit. */
	a.peer_max = 10;
	assert_null(upstream_pool_refusing(&p));
	assert_ptr_equal(upstream_pool_choose(&p), &b);
	b.n_streams = UPSTREAM_PRE_SETTINGS_STREAMS;
	assert_ptr_equal(upstream_pool_choose(&p), &a);
	/* A connection going away (GOAWAY, killed) says nothing any more. */
	a.peer_max = 0;
	a.accepting = false;
	assert_null(upstream_pool_refusing(&p));
	upstream_pool_unlink(&a);
	upstream_pool_unlink(&b);
}

static struct upstream_pool_key key(uint64_t ns, uint8_t last, uint16_t port, bool tls)
{
	struct upstream_pool_key k = {.netns_id = ns, .port = port, .tls = tls};

	k.ip.b[10] = k.ip.b[11] = 0xff;
	k.ip.b[12] = 10;
	k.ip.b[15] = last;
	return k;
}

static void count(struct upstream_pool *p, void *arg)
{
	(void)p;
	(*(int *)arg)++;
}

static void remove_all(struct upstream_pool *p, void *arg)
{
	upstream_pools_remove(arg, p);
}

static void test_table(void **state)
{
	struct upstream_pools t;
	struct upstream_pool_key k1 = key(1, 5, 8080, false);
	struct upstream_pool *p1, *p;
	int n = 0;

	(void)state;
	assert_int_equal(upstream_pools_init(&t), 0);
	assert_null(upstream_pools_get(&t, &k1, false));
	p1 = upstream_pools_get(&t, &k1, true);
	assert_non_null(p1);
	assert_ptr_equal(upstream_pools_get(&t, &k1, true), p1);
	/* Every part of the key separates pools: per client pod, as a sidecar. */
	{
		struct upstream_pool_key ks[] = {key(2, 5, 8080, false), key(1, 6, 8080, false),
						 key(1, 5, 8081, false), key(1, 5, 8080, true)};

		for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
			p = upstream_pools_get(&t, &ks[i], true);
			assert_non_null(p);
			assert_ptr_not_equal(p, p1);
		}
	}
	/* Enough pools to grow the table; all still found. */
	for (int i = 0; i < 500; i++) {
		struct upstream_pool_key k = key(100 + (uint64_t)i, 1, 80, false);

		assert_non_null(upstream_pools_get(&t, &k, true));
	}
	for (int i = 0; i < 500; i++) {
		struct upstream_pool_key k = key(100 + (uint64_t)i, 1, 80, false);

		p = upstream_pools_get(&t, &k, false);
		assert_non_null(p);
		assert_true(p->key.netns_id == 100 + (uint64_t)i);
	}
	assert_ptr_equal(upstream_pools_get(&t, &k1, false), p1);
	upstream_pools_foreach(&t, count, &n);
	assert_int_equal(n, 505);
	upstream_pools_remove(&t, p1);
	assert_null(upstream_pools_get(&t, &k1, false));
	upstream_pools_foreach(&t, remove_all, &t);
	assert_int_equal(t.n, 0);
	upstream_pools_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_capacity),
	    cmocka_unit_test(test_pre_settings_hint),
	    cmocka_unit_test(test_choose),
	    cmocka_unit_test(test_refusing),
	    cmocka_unit_test(test_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
