// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for conn_limit.c: the per-key limit, release, keys that collide
 * in the table staying findable across removals, and failing open when the
 * table is full.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#include <cmocka.h>

#include "proxy/conn_limit.h"

static void test_limit_and_release(void **state)
{
	struct conn_limit *cl = conn_limit_new(3);

	(void)state;
	assert_non_null(cl);
	for (int i = 0; i < 3; i++)
		assert_int_equal(conn_limit_take(cl, 42), 0);
	assert_int_equal(conn_limit_take(cl, 42), -EBUSY);
	assert_int_equal(conn_limit_count(cl, 42), 3);
	assert_int_equal(conn_limit_take(cl, 43), 0); /* another client is not affected */
	conn_limit_put(cl, 42);
	assert_int_equal(conn_limit_take(cl, 42), 0);
	for (int i = 0; i < 3; i++)
		conn_limit_put(cl, 42);
	assert_int_equal(conn_limit_count(cl, 42), 0);
	assert_int_equal(conn_limit_count(cl, 43), 1);
	conn_limit_free(cl);
}

/* Many keys, removed in an order that shifts probe runs: every remaining key
 * keeps its count. */
static void test_removal_keeps_others(void **state)
{
	struct conn_limit *cl = conn_limit_new(2);
	const uint64_t n = 5000;

	(void)state;
	for (uint64_t k = 1; k <= n; k++)
		assert_int_equal(conn_limit_take(cl, k), 0);
	for (uint64_t k = 1; k <= n; k += 3)
		conn_limit_put(cl, k);
	for (uint64_t k = 1; k <= n; k++)
		assert_int_equal(conn_limit_count(cl, k), (k - 1) % 3 ? 1 : 0);
	for (uint64_t k = 2; k <= n; k += 3)
		assert_int_equal(conn_limit_take(cl, k), 0);
	for (uint64_t k = 2; k <= n; k += 3)
		assert_int_equal(conn_limit_take(cl, k), -EBUSY);
	conn_limit_free(cl);
}

static void test_full_table_fails_open(void **state)
{
	struct conn_limit *cl = conn_limit_new(1);
	uint64_t k = 1;

	(void)state;
	while (conn_limit_take(cl, k) == 0)
		k++;
	assert_int_equal(conn_limit_take(cl, k), -ENOSPC);
	assert_int_equal(k - 1, CONN_LIMIT_SLOTS / 4 * 3);
	conn_limit_put(cl, 1);
	assert_int_equal(conn_limit_take(cl, k), 0); /* room again */
	assert_int_equal(conn_limit_take(cl, 2), -EBUSY);
	conn_limit_free(cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limit_and_release),
		cmocka_unit_test(test_removal_keeps_others),
		cmocka_unit_test(test_full_table_fails_open),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
