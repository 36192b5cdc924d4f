// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for balancer.c: round_robin order, least_request (P2C) steering
 * away from busy endpoints, which endpoints are candidates (ready, not
 * terminating; terminating-but-serving only as a last resort), retries
 * avoiding tried endpoints, connect-failure backoff, the per-service policy,
 * and per-endpoint state surviving snapshot swaps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "balancer.h"

struct ep_spec {
	const char *ip;
	uint16_t port;
	const char *flags; /* "n": not ready, "t": terminating, "s": serving */
};

/* A state with one service default/echo:grpc and |n| endpoints. */
static struct state *make_state(enum lb_policy lb, const struct ep_spec *specs, int n)
{
	struct state_endpoint eps[16];
	struct state_service svc = {.port = 50051, .lb = lb, .eps = eps, .n_eps = n};
	struct state *st = state_new();

	snprintf(svc.ns, sizeof(svc.ns), "default");
	snprintf(svc.name, sizeof(svc.name), "echo");
	snprintf(svc.port_name, sizeof(svc.port_name), "grpc");
	for (int i = 0; i < n; i++) {
		memset(&eps[i], 0, sizeof(eps[i]));
		assert_int_equal(h2s_ip_parse(&eps[i].ip, specs[i].ip), 0);
		eps[i].port = specs[i].port;
		eps[i].ready = !strchr(specs[i].flags, 'n');
		eps[i].terminating = strchr(specs[i].flags, 't') != NULL;
		eps[i].serving = strchr(specs[i].flags, 's') != NULL || eps[i].ready;
		snprintf(eps[i].pod, sizeof(eps[i].pod), "pod-%d", i);
	}
	assert_non_null(st);
	assert_int_equal(state_add_service(st, &svc), 0);
	assert_int_equal(state_finish(st), 0);
	return st;
}

static const struct ep_spec three[] = {
    {"10.0.0.1", 8080, ""},
    {"10.0.0.2", 8080, ""},
    {"10.0.0.3", 8080, ""},
};

static struct balancer_endpoint *pick(struct balancer_set *bs, const struct state_service *svc,
				      uint64_t gen, struct balancer_endpoint *const *avoid,
				      size_t n_avoid, uint64_t now_ms)
{
	struct balancer_pick p = {.now_ms = now_ms,
				  .netns_id = 1,
				  .family = AF_UNSPEC,
				  .avoid = avoid,
				  .n_avoid = n_avoid};

	return balancer_set_pick(bs, svc, gen, &p);
}

static int idx_of(const struct balancer_endpoint *ep)
{
	return ep->ip.b[15] - 1; /* 10.0.0.N -> N-1 */
}

static void test_round_robin(void **state)
{
	struct state *st = make_state(LB_ROUND_ROBIN, three, 3);
	struct balancer_set *bs = balancer_set_new(42, LB_LEAST_REQUEST);
	int first, seen[3] = {0};

	(void)state;
	first = idx_of(pick(bs, &st->svcs[0], 1, NULL, 0, 0));
	seen[first]++;
	for (int i = 1; i < 30; i++) {
		struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, NULL, 0, 0);

		assert_int_equal(idx_of(ep), (first + i) % 3);
		seen[idx_of(ep)]++;
	}
	assert_int_equal(seen[0], 10);
	assert_int_equal(seen[1], 10);
	assert_int_equal(seen[2], 10);
	balancer_set_free(bs);
	state_free(st);
}

static void test_least_request_avoids_busy(void **state)
{
	struct state *st = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	struct balancer_endpoint *busy = NULL;
	int seen[3] = {0};

	(void)state;
	/* Find endpoint 0 and give it 10 streams in flight. */
	while (!busy) {
		struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, NULL, 0, 0);

		if (idx_of(ep) == 0)
			busy = ep;
	}
	for (int i = 0; i < 10; i++)
		balancer_stream_start(busy);
	/* P2C never picks the strictly busiest of three: any pair has a better one. */
	for (int i = 0; i < 3000; i++) {
		struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, NULL, 0, 0);

		seen[idx_of(ep)]++;
	}
	assert_int_equal(seen[0], 0);
	assert_true(seen[1] > 1000 && seen[2] > 1000);
	for (int i = 0; i < 10; i++)
		balancer_stream_end(bs, busy);
	assert_int_equal(busy->inflight, 0);
	assert_int_equal(busy->total, 10);
	balancer_set_free(bs);
	state_free(st);
}

static void test_least_request_spreads_load(void **state)
{
	struct state *st = make_state(LB_LEAST_REQUEST, three, 3);
	struct balancer_set *bs = balancer_set_new(99, LB_ROUND_ROBIN);
	struct balancer_endpoint *eps[300];
	int seen[3] = {0};

	(void)state;
	/* Streams that stay open: in-flight counts stay within a small spread. */
	for (int i = 0; i < 300; i++) {
		eps[i] = pick(bs, &st->svcs[0], 1, NULL, 0, 0);
		balancer_stream_start(eps[i]);
		seen[idx_of(eps[i])]++;
	}
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] >= 90 && seen[i] <= 110);
	for (int i = 0; i < 300; i++)
		balancer_stream_end(bs, eps[i]);
	balancer_set_free(bs);
	state_free(st);
}

static void test_candidates(void **state)
{
	static const struct ep_spec mixed[] = {
	    {"10.0.0.1", 8080, "n"},  /* not ready */
	    {"10.0.0.2", 8080, "ts"}, /* terminating, still serving */
	    {"10.0.0.3", 8080, ""},   /* the only usable one */
	};
	static const struct ep_spec draining[] = {
	    {"10.0.0.1", 8080, "n"},
	    {"10.0.0.2", 8080, "tsn"},
	};
	struct state *st = make_state(LB_DEFAULT, mixed, 3);
	struct state *st2 = make_state(LB_DEFAULT, draining, 2);
	struct state *st3 = make_state(LB_DEFAULT, NULL, 0);
	struct balancer_set *bs = balancer_set_new(1, LB_LEAST_REQUEST);

	(void)state;
	for (int i = 0; i < 50; i++)
		assert_int_equal(idx_of(pick(bs, &st->svcs[0], 1, NULL, 0, 0)), 2);
	/* Nothing usable: kube-proxy's rule, terminating but serving ones. */
	balancer_set_update(bs, st2, 2);
	for (int i = 0; i < 10; i++)
		assert_int_equal(idx_of(pick(bs, &st2->svcs[0], 2, NULL, 0, 0)), 1);
	balancer_set_update(bs, st3, 3);
	assert_null(pick(bs, &st3->svcs[0], 3, NULL, 0, 0));
	balancer_set_free(bs);
	state_free(st);
	state_free(st2);
	state_free(st3);
}

static void test_retry_avoids_tried(void **state)
{
	struct state *st = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = balancer_set_new(5, LB_LEAST_REQUEST);
	struct balancer_endpoint *tried[2];

	(void)state;
	tried[0] = pick(bs, &st->svcs[0], 1, NULL, 0, 0);
	for (int i = 0; i < 100; i++) {
		struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, tried, 1, 0);

		assert_ptr_not_equal(ep, tried[0]);
	}
	tried[1] = pick(bs, &st->svcs[0], 1, tried, 1, 0);
	for (int i = 0; i < 20; i++) {
		struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, tried, 2, 0);

		assert_ptr_not_equal(ep, tried[0]);
		assert_ptr_not_equal(ep, tried[1]);
	}
	balancer_set_free(bs);
	state_free(st);
}

static void test_backoff(void **state)
{
	struct state *st = make_state(LB_ROUND_ROBIN, three, 3);
	struct state *one = make_state(LB_ROUND_ROBIN, three, 1);
	struct balancer_set *bs = balancer_set_new(3, LB_LEAST_REQUEST);
	struct balancer_endpoint *bad = pick(bs, &st->svcs[0], 1, NULL, 0, 1000);

	(void)state;
	balancer_endpoint_connect_failed(bad, 1000, 1);
	assert_int_equal(bad->failures, 1);
	/* Many streams report the same failure: one backoff step. */
	balancer_endpoint_connect_failed(bad, 1001, 1);
	assert_int_equal(bad->backoff_step, 1);
	assert_true(bad->backoff_until_ms == 1500);
	for (int i = 0; i < 30; i++)
		assert_ptr_not_equal(pick(bs, &st->svcs[0], 1, NULL, 0, 1200), bad);
	/* After the window it is a candidate again. */
	{
		int hits = 0;

		for (int i = 0; i < 30; i++)
			hits += pick(bs, &st->svcs[0], 1, NULL, 0, 1600) == bad;
		assert_int_equal(hits, 10);
	}
	balancer_endpoint_connect_failed(bad, 1600, 1);
	assert_true(bad->backoff_until_ms == 2600); /* doubled */
	balancer_endpoint_ok(bad);
	assert_int_equal(bad->backoff_until_ms, 0);
	/* Alone and in backoff: still tried for a new stream, but not for the
	 * retry of a stream it just failed. */
	balancer_set_update(bs, one, 2);
	bad = pick(bs, &one->svcs[0], 2, NULL, 0, 5000);
	balancer_endpoint_connect_failed(bad, 5000, 1);
	assert_ptr_equal(pick(bs, &one->svcs[0], 2, NULL, 0, 5001), bad);
	assert_null(pick(bs, &one->svcs[0], 2, &bad, 1, 5001));
	/* Tried but not failing (a refused stream): it may take the retry. */
	balancer_endpoint_ok(bad);
	assert_ptr_equal(pick(bs, &one->svcs[0], 2, &bad, 1, 5001), bad);
	balancer_set_free(bs);
	state_free(st);
	state_free(one);
}

static void test_backoff_is_per_client_netns(void **state)
{
	struct state *st = make_state(LB_ROUND_ROBIN, three, 3);
	struct balancer_set *bs = balancer_set_new(3, LB_LEAST_REQUEST);
	struct balancer_endpoint *bad = pick(bs, &st->svcs[0], 1, NULL, 0, 1000);
	struct balancer_pick other = {.now_ms = 1100, .netns_id = 2, .family = AF_UNSPEC};
	int hits = 0;

	(void)state;
	/* Pod 1 cannot reach it (a NetworkPolicy, say): pod 2 still may. */
	balancer_endpoint_connect_failed(bad, 1000, 1);
	for (int i = 0; i < 30; i++)
		assert_ptr_not_equal(pick(bs, &st->svcs[0], 1, NULL, 0, 1100), bad);
	for (int i = 0; i < 30; i++)
		hits += balancer_set_pick(bs, &st->svcs[0], 1, &other) == bad;
	assert_int_equal(hits, 10);
	balancer_set_free(bs);
	state_free(st);
}

static void test_dual_stack_keeps_family(void **state)
{
	static const struct ep_spec dual[] = {
	    {"10.0.0.1", 8080, ""},
	    {"fd00::2", 8080, ""},
	    {"10.0.0.3", 8080, ""},
	    {"fd00::4", 8080, ""},
	};
	struct state *st = make_state(LB_DEFAULT, dual, 4);
	struct balancer_set *bs = balancer_set_new(21, LB_LEAST_REQUEST);
	struct balancer_pick v4 = {.family = AF_INET}, v6 = {.family = AF_INET6};
	struct balancer_pick any = {.family = AF_UNSPEC};
	int n4 = 0, n6 = 0;

	(void)state;
	for (int i = 0; i < 100; i++) {
		assert_true(h2s_ip_is_v4(&balancer_set_pick(bs, &st->svcs[0], 1, &v4)->ip));
		assert_false(h2s_ip_is_v4(&balancer_set_pick(bs, &st->svcs[0], 1, &v6)->ip));
		if (h2s_ip_is_v4(&balancer_set_pick(bs, &st->svcs[0], 1, &any)->ip))
			n4++;
		else
			n6++;
	}
	assert_true(n4 > 20 && n6 > 20);
	balancer_set_free(bs);
	state_free(st);
}

static void count_cb(const struct balancer_endpoint *ep, void *arg)
{
	(void)ep;
	(*(int *)arg)++;
}

static void test_state_survives_swaps(void **state)
{
	static const struct ep_spec two[] = {
	    {"10.0.0.1", 8080, ""},
	    {"10.0.0.3", 8080, ""},
	};
	static const struct ep_spec two_term[] = {
	    {"10.0.0.1", 8080, ""},
	    {"10.0.0.3", 8080, "t"},
	};
	struct state *st1 = make_state(LB_ROUND_ROBIN, three, 3);
	struct state *st2 = make_state(LB_ROUND_ROBIN, two, 2);
	struct state *st3 = make_state(LB_ROUND_ROBIN, two_term, 2);
	struct balancer_set *bs = balancer_set_new(11, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3] = {0}, *ep;
	int n = 0;

	(void)state;
	balancer_set_update(bs, st1, 1);
	for (int i = 0; i < 3; i++) {
		ep = pick(bs, &st1->svcs[0], 1, NULL, 0, 0);
		eps[idx_of(ep)] = ep;
		balancer_stream_start(ep);
	}
	assert_int_equal(balancer_set_count(bs), 3);
	/* 10.0.0.2 leaves with a stream in flight: its state stays until it ends. */
	balancer_set_update(bs, st2, 2);
	assert_int_equal(balancer_set_count(bs), 3);
	for (int i = 0; i < 20; i++) {
		ep = pick(bs, &st2->svcs[0], 2, NULL, 0, 0);
		assert_ptr_not_equal(ep, eps[1]);
		assert_true(ep == eps[0] || ep == eps[2]); /* same objects: counters kept */
		balancer_stream_start(ep);
		balancer_stream_end(bs, ep);
	}
	assert_true(eps[0]->total + eps[2]->total == 22);
	balancer_stream_end(bs, eps[1]); /* freed now */
	assert_int_equal(balancer_set_count(bs), 2);
	balancer_set_foreach(bs, count_cb, &n);
	assert_int_equal(n, 2);
	/* Terminating: no new streams, state kept (still listed). */
	balancer_set_update(bs, st3, 3);
	for (int i = 0; i < 10; i++)
		assert_ptr_equal(pick(bs, &st3->svcs[0], 3, NULL, 0, 0), eps[0]);
	assert_int_equal(balancer_set_count(bs), 2);
	balancer_stream_end(bs, eps[0]);
	balancer_stream_end(bs, eps[2]);
	/* The service goes away entirely: nothing in flight, nothing kept. */
	balancer_set_update(bs, NULL, 4);
	assert_int_equal(balancer_set_count(bs), 0);
	balancer_set_free(bs);
	state_free(st1);
	state_free(st2);
	state_free(st3);
}

static void test_policy_per_service(void **state)
{
	struct state *rr = make_state(LB_ROUND_ROBIN, three, 3);
	struct state *dflt = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = balancer_set_new(13, LB_ROUND_ROBIN);
	int a, b;

	(void)state;
	/* LB_DEFAULT follows the daemon's --lb-policy (round_robin here). */
	a = idx_of(pick(bs, &dflt->svcs[0], 1, NULL, 0, 0));
	b = idx_of(pick(bs, &dflt->svcs[0], 1, NULL, 0, 0));
	assert_int_equal(b, (a + 1) % 3);
	balancer_set_update(bs, rr, 2);
	a = idx_of(pick(bs, &rr->svcs[0], 2, NULL, 0, 0));
	b = idx_of(pick(bs, &rr->svcs[0], 2, NULL, 0, 0));
	assert_int_equal(b, (a + 1) % 3);
	balancer_set_free(bs);
	state_free(rr);
	state_free(dflt);
}

static void test_ops_tables(void **state)
{
	uint64_t rng = 1;
	struct balancer *rr = balancer_new(LB_ROUND_ROBIN, &rng);
	struct balancer *lr = balancer_new(LB_LEAST_REQUEST, &rng);
	struct balancer_endpoint e[2] = {0};
	struct balancer_endpoint *v[2] = {&e[0], &e[1]};
	const char all[2] = {1, 1}, first[2] = {1, 0};

	(void)state;
	assert_string_equal(rr->ops->name, "round_robin");
	assert_string_equal(lr->ops->name, "least_request");
	assert_int_equal(rr->ops->select(rr, v, 2, all), -1);
	assert_int_equal(lr->ops->select(lr, v, 2, all), -1);
	assert_int_equal(rr->ops->select(rr, v, 2, first), 1);
	assert_int_equal(lr->ops->select(lr, v, 2, first), 1);
	assert_int_equal(lr->ops->select(lr, v, 1, NULL), 0);
	balancer_destroy(rr);
	balancer_destroy(lr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_robin),
	    cmocka_unit_test(test_least_request_avoids_busy),
	    cmocka_unit_test(test_least_request_spreads_load),
	    cmocka_unit_test(test_candidates),
	    cmocka_unit_test(test_retry_avoids_tried),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_backoff_is_per_client_netns),
	    cmocka_unit_test(test_dual_stack_keeps_family),
	    cmocka_unit_test(test_state_survives_swaps),
	    cmocka_unit_test(test_policy_per_service),
	    cmocka_unit_test(test_ops_tables),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
