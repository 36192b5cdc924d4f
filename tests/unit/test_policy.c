// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for the policies behind the policy interface (policy.h), with
 * bare candidates and no balancer_set: the ops tables, skipping marked
 * candidates, round_robin's order, least_request taking the lighter of its
 * pair and taking turns when idle, ewma preferring a clearly faster one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "balancer/policy.h"

static const struct balancer_params params = {
    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
};

static void test_ops_tables(void **state)
{
	uint64_t rng = 1;
	struct balancer_policy *rr = balancer_policy_new(&balancer_round_robin, &rng, &params);
	struct balancer_policy *lr = balancer_policy_new(&balancer_least_request, &rng, &params);
	struct balancer_policy *ew = balancer_policy_new(&balancer_ewma, &rng, &params);
	struct balancer_candidate e[2] = {0};
	struct balancer_candidate *v[2] = {&e[0], &e[1]};
	const char all[2] = {1, 1}, first[2] = {1, 0};

	(void)state;
	assert_string_equal(rr->ops->name, "round_robin");
	assert_string_equal(lr->ops->name, "least_request");
	assert_string_equal(ew->ops->name, "ewma");
	assert_int_equal(ew->ops->pick(ew, v, 2, all), -1);
	assert_int_equal(ew->ops->pick(ew, v, 2, first), 1);
	assert_int_equal(ew->ops->pick(ew, v, 1, NULL), 0);
	assert_int_equal(rr->ops->pick(rr, v, 2, all), -1);
	assert_int_equal(lr->ops->pick(lr, v, 2, all), -1);
	assert_int_equal(rr->ops->pick(rr, v, 2, first), 1);
	assert_int_equal(lr->ops->pick(lr, v, 2, first), 1);
	assert_int_equal(lr->ops->pick(lr, v, 1, NULL), 0);
	free(rr);
	free(lr);
	free(ew);
}

static void test_round_robin_order(void **state)
{
	uint64_t rng = 7;
	struct balancer_policy *rr = balancer_policy_new(&balancer_round_robin, &rng, &params);
	struct balancer_candidate e[3] = {0};
	struct balancer_candidate *v[3] = {&e[0], &e[1], &e[2]};
	int a = rr->ops->pick(rr, v, 3, NULL);

	(void)state;
	for (int i = 1; i < 9; i++)
		assert_int_equal(rr->ops->pick(rr, v, 3, NULL), (a + i) % 3);
	free(rr);
}

/* Idle equal candidates take turns exactly; a busy one loses its pairs. */
static void test_least_request(void **state)
{
	uint64_t rng = 3;
	struct balancer_policy *lr = balancer_policy_new(&balancer_least_request, &rng, &params);
	struct balancer_candidate e[4] = {0};
	struct balancer_candidate *v[4] = {&e[0], &e[1], &e[2], &e[3]};
	int seen[4] = {0};

	(void)state;
	for (int i = 0; i < 400; i++)
		seen[lr->ops->pick(lr, v, 4, NULL)]++;
	for (int i = 0; i < 4; i++)
		assert_int_equal(seen[i], 100);
	e[2].inflight = 5;
	for (int i = 0; i < 400; i++)
		assert_int_not_equal(lr->ops->pick(lr, v, 4, NULL), 2);
	free(lr);
}

/* Measured and clearly slower (beyond the band, the slack and the jitter):
 * ewma sends everything to the faster one. */
static void test_ewma_prefers_faster(void **state)
{
	uint64_t rng = 5;
	struct balancer_policy *ew = balancer_policy_new(&balancer_ewma, &rng, &params);
	struct balancer_candidate e[2] = {0};
	struct balancer_candidate *v[2] = {&e[0], &e[1]};

	(void)state;
	for (int i = 0; i < BALANCER_EWMA_FIRST_ANSWERS; i++) {
		lb_latency_answered(&e[0].lat, 1000, BALANCER_EWMA_DECAY_MS, 1000, 20000, false);
		lb_latency_answered(&e[1].lat, 1000, BALANCER_EWMA_DECAY_MS, 1000, 1000, false);
	}
	ew->now_ms = 1000;
	for (int i = 0; i < 100; i++)
		assert_int_equal(ew->ops->pick(ew, v, 2, NULL), 1);
	free(ew);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ops_tables),
	    cmocka_unit_test(test_round_robin_order),
	    cmocka_unit_test(test_least_request),
	    cmocka_unit_test(test_ewma_prefers_faster),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
