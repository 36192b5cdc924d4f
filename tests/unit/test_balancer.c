// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for the balancer_set (balancer/): round_robin order,
 * least_request (P2C) steering away from busy endpoints, which endpoints are candidates (ready, not
 * terminating; terminating-but-serving only as a last resort), retries
 * avoiding tried endpoints, connect-failure backoff, the per-service policy,
 * per-endpoint state surviving snapshot swaps, ewma (peak-EWMA latency P2C:
 * fast endpoints win, failures cost, estimates decay, noise within the band
 * is a tie, shunned pods are probed) and outlier ejection (after N failures
 * in a row or half of the last 20, at most half the endpoints, for a growing
 * time), and
 * circuit breaking (caps per endpoint and service, the bounded FIFO of
 * waiting streams and who gets woken), slow start and static weights (on a
 * fake clock: time is always passed in).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <math.h>

#include "balancer/balancer.h"
#include "balancer/balancer_int.h" /* to check endpoint state the API keeps private */

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

static bool is_ejected(const struct balancer_endpoint *ep, uint64_t now_ms)
{
	return balancer_endpoint_info(ep).ejected_until_ms > now_ms;
}

/* |ep|'s latency estimate at |now_ms|. */
static double latency(const struct balancer_endpoint *ep, uint64_t now_ms, uint32_t decay_ms,
		      uint32_t default_us)
{
	return lb_latency_estimate(&lb_ep(ep)->c.lat, now_ms, decay_ms, default_us);
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
		balancer_stream_start(bs, busy);
	/* P2C never picks the strictly busiest of three: any pair has a better one. */
	for (int i = 0; i < 3000; i++) {
		struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, NULL, 0, 0);

		seen[idx_of(ep)]++;
	}
	assert_int_equal(seen[0], 0);
	assert_true(seen[1] > 1000 && seen[2] > 1000);
	for (int i = 0; i < 10; i++)
		balancer_stream_end(bs, busy);
	assert_int_equal(lb_ep(busy)->c.inflight, 0);
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
		balancer_stream_start(bs, eps[i]);
		seen[idx_of(eps[i])]++;
	}
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] >= 90 && seen[i] <= 110);
	for (int i = 0; i < 300; i++)
		balancer_stream_end(bs, eps[i]);
	/* Idle endpoints (short streams): ties go to the first choice, the
	 * endpoint whose turn it is, so they take turns exactly. */
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 3000; i++)
		seen[idx_of(pick(bs, &st->svcs[0], 1, NULL, 0, 0))]++;
	for (int i = 0; i < 3; i++)
		assert_int_equal(seen[i], 1000);
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
	/* Many streams report the same failure: one backoff step. */
	balancer_endpoint_connect_failed(bad, 1001, 1);
	assert_int_equal(lb_ep(bad)->backoff_step, 1);
	assert_true(balancer_endpoint_info(bad).backoff_until_ms == 1500);
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
	assert_true(balancer_endpoint_info(bad).backoff_until_ms == 2600); /* doubled */
	balancer_endpoint_ok(bad);
	assert_int_equal(balancer_endpoint_info(bad).backoff_until_ms, 0);
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

	(void)state;
	balancer_set_update(bs, st1, 1);
	for (int i = 0; i < 3; i++) {
		ep = pick(bs, &st1->svcs[0], 1, NULL, 0, 0);
		eps[idx_of(ep)] = ep;
		balancer_stream_start(bs, ep);
	}
	assert_int_equal(balancer_set_count(bs), 3);
	balancer_endpoint_report(bs, eps[0], 0, 3000, BALANCER_OK);
	/* 10.0.0.2 leaves with a stream in flight: its state stays until it ends. */
	balancer_set_update(bs, st2, 2);
	assert_int_equal(balancer_set_count(bs), 3);
	for (int i = 0; i < 20; i++) {
		ep = pick(bs, &st2->svcs[0], 2, NULL, 0, 0);
		assert_ptr_not_equal(ep, eps[1]);
		assert_true(ep == eps[0] || ep == eps[2]); /* same objects: state kept */
		balancer_stream_start(bs, ep);
		balancer_stream_end(bs, ep);
	}
	assert_int_equal(balancer_endpoint_info(eps[0]).latency_us, 3000);
	balancer_stream_end(bs, eps[1]); /* freed now */
	assert_int_equal(balancer_set_count(bs), 2);
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

static const struct ep_spec four[] = {
    {"10.0.0.1", 8080, ""},
    {"10.0.0.2", 8080, ""},
    {"10.0.0.3", 8080, ""},
    {"10.0.0.4", 8080, ""},
};

/* Every endpoint of |svc|, by index (picks until each has come up). */
static void all_eps(struct balancer_set *bs, const struct state_service *svc, uint64_t gen,
		    struct balancer_endpoint **eps, int n)
{
	int found = 0;

	memset(eps, 0, (size_t)n * sizeof(*eps));
	for (int i = 0; i < 10000 && found < n; i++) {
		struct balancer_endpoint *ep = pick(bs, svc, gen, NULL, 0, 0);

		if (!eps[idx_of(ep)]) {
			eps[idx_of(ep)] = ep;
			found++;
		}
	}
	assert_int_equal(found, n);
}

/* As if each of |eps| had answered its first streams on this worker (see
 * test_ewma_first_answers): from here on its latency counts. */
static void answered(struct balancer_endpoint **eps, int n)
{
	for (int i = 0; i < n; i++)
		lb_ep(eps[i])->c.lat.answers = BALANCER_EWMA_FIRST_ANSWERS;
}

static void count_picks(struct balancer_set *bs, const struct state_service *svc, uint64_t gen,
			uint64_t now_ms, int times, int *seen)
{
	for (int i = 0; i < times; i++)
		seen[idx_of(pick(bs, svc, gen, NULL, 0, now_ms))]++;
}

static void report_n(struct balancer_set *bs, struct balancer_endpoint *ep, uint64_t now_ms,
		     uint64_t rtt_us, enum balancer_outcome o, int n)
{
	for (int i = 0; i < n; i++)
		assert_false(balancer_endpoint_report(bs, ep, now_ms, rtt_us, o));
}

static const struct ep_spec five[] = {
    {"10.0.0.1", 8080, ""}, {"10.0.0.2", 8080, ""}, {"10.0.0.3", 8080, ""},
    {"10.0.0.4", 8080, ""}, {"10.0.0.5", 8080, ""},
};

/* An open-loop client: streams arrive at random (Poisson, 1 per ms on
 * average) and each takes 1.1-1.8 ms, |slow| (-1: none) 14-23 ms; |seen|
 * counts picks per endpoint of |five|. The busy ones are mostly those chosen
 * last, as under real load. */
static void steady_load(struct balancer_set *bs, const struct state_service *svc, int picks,
			int slow, int *seen)
{
	struct {
		double start_us, end_us;
		struct balancer_endpoint *ep;
	} open[64];
	size_t n_open = 0;
	uint64_t rng = 12345;
	double now_us = 0;

	for (int i = 0; i < picks; i++) {
		struct balancer_endpoint *ep;
		double u = (double)(balancer_rand(&rng) >> 11) * 0x1.0p-53;

		now_us += -log(1.0 - u) * 1000;
		for (size_t k = 0; k < n_open;) {
			if (open[k].end_us > now_us) {
				k++;
				continue;
			}
			balancer_endpoint_report(bs, open[k].ep, (uint64_t)open[k].end_us / 1000,
						 (uint64_t)(open[k].end_us - open[k].start_us),
						 BALANCER_OK);
			balancer_stream_end(bs, open[k].ep);
			open[k] = open[--n_open];
		}
		ep = pick(bs, svc, 1, NULL, 0, (uint64_t)now_us / 1000);
		seen[idx_of(ep)]++;
		balancer_stream_start(bs, ep);
		u = (double)(balancer_rand(&rng) >> 11) * 0x1.0p-53;
		assert_true(n_open < 64);
		open[n_open].start_us = now_us;
		open[n_open].end_us =
		    now_us + (0.8 + 0.5 * u) * (idx_of(ep) == slow ? 14000 : 1400);
		open[n_open++].ep = ep;
	}
	while (n_open)
		balancer_stream_end(bs, open[--n_open].ep);
}

/* Under load, a busy first choice loses its pair to the second, drawn at
 * random. Equal endpoints still get equal shares, since each is the first
 * choice once per round: here within ±10 of 2000 each, where two random
 * draws (and ties to the one chosen longer ago) leave them 1988-2016 apart.
 * With one slow, busy endpoint (which ewma also shuns), the others share
 * what it does not take. */
static void test_p2c_turns(void **state)
{
	static const enum lb_policy policies[] = {LB_LEAST_REQUEST, LB_EWMA};

	(void)state;
	for (size_t p = 0; p < 2; p++) {
		struct state *st = make_state(policies[p], five, 5);
		struct balancer_set *bs = balancer_set_new(3, LB_LEAST_REQUEST);
		int seen[5] = {0}, rest;

		steady_load(bs, &st->svcs[0], 10000, -1, seen);
		for (int i = 0; i < 5; i++)
			assert_true(seen[i] >= 1990 && seen[i] <= 2010);
		balancer_set_free(bs);
		bs = balancer_set_new(5, LB_LEAST_REQUEST);
		memset(seen, 0, sizeof(seen));
		steady_load(bs, &st->svcs[0], 10000, 4, seen);
		assert_true(seen[4] < (policies[p] == LB_EWMA ? 100 : 1500));
		rest = (10000 - seen[4]) / 4;
		for (int i = 0; i < 4; i++)
			assert_true(seen[i] >= rest - 40 && seen[i] <= rest + 40);
		balancer_set_free(bs);
		state_free(st);
	}
}

/* Each balancer starts its scan for the first choice at a random place:
 * with every endpoint at the same turn count, as when a worker starts, one
 * that always started at the first would send every worker's first stream
 * of every service to the same pod. */
static void test_p2c_first_choice_varies(void **state)
{
	struct state *st = make_state(LB_LEAST_REQUEST, five, 5);
	int first[5] = {0}, differ = 0;

	(void)state;
	for (uint64_t seed = 1; seed <= 20; seed++) {
		struct balancer_set *bs = balancer_set_new(seed, LB_LEAST_REQUEST);

		first[idx_of(pick(bs, &st->svcs[0], 1, NULL, 0, 0))]++;
		balancer_set_free(bs);
	}
	for (int i = 0; i < 5; i++)
		differ += first[i] > 0;
	assert_true(differ >= 3); /* 20 starts over 5 endpoints */
	state_free(st);
}

/* An endpoint that was away (ejected, in backoff) for a while has one turn
 * on its return, then its share: it is not flooded to make up for lost
 * turns. */
static void test_p2c_turns_after_absence(void **state)
{
	struct state *st = make_state(LB_LEAST_REQUEST, five, 5);
	struct balancer_set *bs = balancer_set_new(9, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[5], *away;
	int seen[5] = {0};

	(void)state;
	all_eps(bs, &st->svcs[0], 1, eps, 5);
	away = eps[4];
	for (int i = 0; i < 1000; i++)
		assert_ptr_not_equal(pick(bs, &st->svcs[0], 1, &away, 1, 0), away);
	count_picks(bs, &st->svcs[0], 1, 0, 10, seen);
	for (int i = 0; i < 5; i++)
		assert_int_equal(seen[i], 2);
	balancer_set_free(bs);
	state_free(st);
}

/* A service of |n| endpoints 10.1.x.y:8080, all ready, but endpoint |skip|
 * (-1: none) left out. */
static struct state *big_state(enum lb_policy lb, int n, int skip)
{
	struct state_endpoint *eps = calloc((size_t)n, sizeof(*eps));
	struct state_service svc = {.port = 50051, .lb = lb, .eps = eps};
	struct state *st = state_new();

	assert_non_null(eps);
	snprintf(svc.ns, sizeof(svc.ns), "default");
	snprintf(svc.name, sizeof(svc.name), "big");
	for (int i = 0; i < n; i++) {
		struct state_endpoint *e = &eps[svc.n_eps];
		char ip[32];

		if (i == skip)
			continue;
		snprintf(ip, sizeof(ip), "10.1.%d.%d", i / 250, i % 250 + 1);
		assert_int_equal(h2s_ip_parse(&e->ip, ip), 0);
		e->port = 8080;
		e->ready = e->serving = true;
		svc.n_eps++;
	}
	assert_int_equal(state_add_service(st, &svc), 0);
	assert_int_equal(state_finish(st), 0);
	free(eps);
	return st;
}

static int big_idx(const struct balancer_endpoint *ep)
{
	return (ep->ip.b[14] * 250) + ep->ip.b[15] - 1;
}

/* With thousands of endpoints the first choice comes from the turn heap, not
 * a scan: idle endpoints still take turns exactly, round after round, also
 * after picks that had to skip one (the scan's path) and after the list
 * changed under it (a new snapshot without one endpoint). */
static void test_p2c_turns_many_endpoints(void **state)
{
	static const enum lb_policy policies[] = {LB_LEAST_REQUEST, LB_EWMA};
	enum { N = 5000 };

	(void)state;
	for (size_t p = 0; p < 2; p++) {
		struct state *st = big_state(policies[p], N, -1), *st2 = big_state(policies[p], N, 7);
		struct balancer_set *bs = balancer_set_new(p + 11, LB_LEAST_REQUEST);
		struct balancer_endpoint *away = NULL;
		int *seen = calloc(N, sizeof(int));

		assert_non_null(seen);
		for (int round = 1; round <= 2; round++) {
			for (int i = 0; i < N; i++)
				seen[big_idx(pick(bs, &st->svcs[0], 1, NULL, 0, 0))]++;
			for (int i = 0; i < N; i++)
				assert_int_equal(seen[i], round);
		}
		/* The scan's path (one endpoint to skip) keeps the heap in order. */
		for (int i = 0; i < 10; i++) {
			struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, &away, away ? 1 : 0, 0);

			if (!away)
				away = ep;
			else
				assert_ptr_not_equal(ep, away);
			seen[big_idx(ep)]++;
		}
		for (int i = 0; i < N - 10; i++)
			seen[big_idx(pick(bs, &st->svcs[0], 1, NULL, 0, 0))]++;
		for (int i = 0; i < N; i++)
			assert_int_equal(seen[i], 3);
		/* A new list: endpoint 7 is gone, the rest keep taking turns. */
		memset(seen, 0, N * sizeof(int));
		balancer_set_update(bs, st2, 2);
		for (int i = 0; i < N - 1; i++)
			seen[big_idx(pick(bs, &st2->svcs[0], 2, NULL, 0, 0))]++;
		for (int i = 0; i < N; i++)
			assert_int_equal(seen[i], i == 7 ? 0 : 1);
		free(seen);
		balancer_set_free(bs);
		state_free(st);
		state_free(st2);
	}
}

static void test_ewma_prefers_fast(void **state)
{
	struct state *st = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(17, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3];
	int seen[3] = {0};

	(void)state;
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	answered(eps, 3);
	report_n(bs, eps[0], 1000, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], 1000, 1200, BALANCER_OK, 1);
	report_n(bs, eps[2], 1000, 50000, BALANCER_OK, 1);
	/* Any pair holds a faster endpoint than the 50 ms one. */
	count_picks(bs, &st->svcs[0], 1, 1000, 3000, seen);
	assert_int_equal(seen[2], 0);
	assert_true(seen[0] > 1000 && seen[1] > 500);
	/* Latency x (in flight + 1): a busy fast endpoint loses to an idle slower one. */
	for (int i = 0; i < 100; i++)
		balancer_stream_start(bs, eps[0]);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000, 300, seen);
	assert_int_equal(seen[0], 0);
	for (int i = 0; i < 100; i++)
		balancer_stream_end(bs, eps[0]);
	balancer_set_free(bs);
	state_free(st);
}

static void test_ewma_failure_penalty(void **state)
{
	struct state *st = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(19, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3];
	int seen[3] = {0};

	(void)state;
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	answered(eps, 3);
	for (int i = 0; i < 3; i++)
		report_n(bs, eps[i], 1000, 1000, BALANCER_OK, 1);
	/* Failing in 100 us must not look fast: penalised to 250 ms. */
	report_n(bs, eps[0], 1000, 100, BALANCER_FAILED, 1);
	assert_true(latency(eps[0], 1000, BALANCER_EWMA_DECAY_MS,
					      BALANCER_EWMA_DEFAULT_US) >=
		    BALANCER_EWMA_PENALTY_US);
	/* RESOURCE_EXHAUSTED costs latency too, but never ejects. */
	report_n(bs, eps[1], 1000, 100, BALANCER_OVERLOADED, 20);
	assert_false(is_ejected(eps[1], 1000));
	assert_true(lb_ep(eps[1])->c.lat.ewma_us >= BALANCER_EWMA_PENALTY_US);
	count_picks(bs, &st->svcs[0], 1, 1000, 300, seen);
	/* It wins every pair it is in: 2 of 3 (200 ± 8). */
	assert_int_equal(seen[2], 300 - seen[0] - seen[1]);
	assert_true(seen[2] >= 175);
	/* The client giving up early says nothing about the endpoint... */
	report_n(bs, eps[2], 1000, 10, BALANCER_NO_VERDICT, 1);
	assert_true(fabs(lb_ep(eps[2])->c.lat.ewma_us - 1000) < 1);
	/* ... unless it waited longer than the estimate: that is a lower bound. */
	report_n(bs, eps[2], 1000, 40000, BALANCER_NO_VERDICT, 1);
	assert_true(fabs(lb_ep(eps[2])->c.lat.ewma_us - 40000) < 1);
	balancer_set_free(bs);
	state_free(st);
}

static void test_ewma_decay(void **state)
{
	struct state *st = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(23, LB_LEAST_REQUEST);
	struct balancer_params bp = {
	    .ewma_decay_ms = 5000,
	    .ewma_default_us = 1000,
	    .eject_failures = 5,
	    .eject_base_ms = 30000,
	};
	struct balancer_endpoint *eps[3];
	double l;
	int seen[3] = {0};

	(void)state;
	balancer_set_params(bs, &bp);
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	answered(eps, 3);
	/* Not measured yet: the default. */
	l = latency(eps[0], 0, 5000, 1000);
	assert_true(fabs(l - 1000) < 1);
	/* The first sample replaces it. One slow answer is a spike, ignored;
	 * two in a row are a peak, which replaces the estimate at once. */
	report_n(bs, eps[0], 0, 400, BALANCER_OK, 1);
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - 400) < 1);
	report_n(bs, eps[0], 0, 10000, BALANCER_OK, 1);
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - 400) < 1);
	report_n(bs, eps[0], 0, 10000, BALANCER_OK, 1);
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - 10000) < 1);
	/* One time constant later it has decayed by e; a lower sample within
	 * the band then weighs 1 - 1/e against the undecayed estimate. */
	l = latency(eps[0], 5000, 5000, 1000);
	assert_true(fabs(l - 10000 * exp(-1)) < 1);
	report_n(bs, eps[0], 5000, 3000, BALANCER_OK, 1);
	l = 10000 * exp(-1) + 3000 * (1 - exp(-1));
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - l) < 1);
	/* One below it by more than the band brings it to the band's edge. */
	report_n(bs, eps[0], 5000, 1000, BALANCER_OK, 1);
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - 1000 * BALANCER_EWMA_BAND) < 1);
	/* A shunned slow endpoint has its turns again once its estimate has
	 * decayed near what its peers keep measuring (5 s time constant here). */
	report_n(bs, eps[2], 5000, 50000, BALANCER_OK, 1);
	report_n(bs, eps[0], 5000, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], 5000, 1000, BALANCER_OK, 1);
	count_picks(bs, &st->svcs[0], 1, 5000, 300, seen);
	assert_int_equal(seen[2], 0);
	report_n(bs, eps[0], 35000, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], 35000, 1000, BALANCER_OK, 1);
	count_picks(bs, &st->svcs[0], 1, 35000, 300, seen);
	assert_true(seen[2] >= 100); /* its turns again, a third of 300 */
	balancer_set_free(bs);
	state_free(st);
}

/* Two estimates a few hundred microseconds apart are the same to ewma,
 * whatever their ratio (scheduling noise). An endpoint's default latency is
 * no reason to shun it, nor are its first answers (a new connection's are
 * often slow): it has its turns until it has answered
 * BALANCER_EWMA_FIRST_ANSWERS streams. */
static void test_ewma_first_answers(void **state)
{
	struct state *st = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(41, LB_LEAST_REQUEST);
	struct balancer_params bp = {
	    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
	    .ewma_default_us = 5000,
	    .eject_failures = 5,
	    .eject_base_ms = 30000,
	};
	struct balancer_endpoint *eps[3];
	int seen[3] = {0};

	(void)state;
	balancer_set_params(bs, &bp);
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	report_n(bs, eps[0], 1000, 100, BALANCER_OK, BALANCER_EWMA_FIRST_ANSWERS);
	report_n(bs, eps[1], 1000, 400, BALANCER_OK, BALANCER_EWMA_FIRST_ANSWERS);
	assert_false(lb_ep(eps[2])->c.lat.init);
	count_picks(bs, &st->svcs[0], 1, 1000, 300, seen);
	for (int i = 0; i < 3; i++)
		assert_int_equal(seen[i], 100);
	/* Its first answers are 2 ms slower than its 1 ms peers (past the band
	 * and the slack): it still has its turns ... */
	report_n(bs, eps[0], 1000, 1000, BALANCER_OK, 3);
	report_n(bs, eps[1], 1000, 1000, BALANCER_OK, 3);
	report_n(bs, eps[2], 1000, 3000, BALANCER_OK, BALANCER_EWMA_FIRST_ANSWERS - 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000, 300, seen);
	assert_int_equal(seen[2], 100);
	/* ... until one more such answer: then it is shunned. */
	report_n(bs, eps[2], 1000, 3000, BALANCER_OK, 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000, 300, seen);
	assert_int_equal(seen[2], 0);
	balancer_set_free(bs);
	state_free(st);
}

/* Among equal pods one slow sample must not shut a pod out: estimates
 * within the band are a tie that the in-flight count breaks, a spike is
 * forgiven after a few fast answers, and a pod shunned anyway is probed. */
static void test_ewma_band_and_probe(void **state)
{
	struct state *st = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(37, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3];
	static const int busy[] = {0, 0, 1, 2, 2};
	int seen[3] = {0};

	(void)state;
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	answered(eps, 3);
	report_n(bs, eps[0], 1000, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], 1000, 1900, BALANCER_OK, 1);
	report_n(bs, eps[2], 1000, 1400, BALANCER_OK, 1);
	/* Within the band: idle endpoints share evenly, whatever the estimate. */
	count_picks(bs, &st->svcs[0], 1, 1000, 3000, seen);
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] > 800);
	/* ... and the in-flight count decides: eps[1] (1900 us, 1 stream) wins
	 * its pairs, though latency x (in flight + 1) would give eps[0] (1000 us,
	 * 2 streams) the pair the two share. */
	for (int i = 0; i < 5; i++)
		balancer_stream_start(bs, eps[busy[i]]);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000, 600, seen);
	assert_true(seen[1] > 300); /* about 2/3 of 600; by cost, about 1/3 */
	for (int i = 0; i < 5; i++)
		balancer_stream_end(bs, eps[busy[i]]);
	/* One slow answer is noise; a second in a row puts eps[0] out of the
	 * band: shunned ... */
	report_n(bs, eps[0], 1000, 10000, BALANCER_OK, 1);
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - 1000) < 1);
	report_n(bs, eps[0], 1000, 10000, BALANCER_OK, 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000, 300, seen);
	assert_int_equal(seen[0], 0);
	/* ... until one fast answer brings it back (not a time constant). */
	report_n(bs, eps[0], 1000, 1000, BALANCER_OK, 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000, 3000, seen);
	assert_true(seen[0] > 800);
	/* A pod that really is slow stays shunned but for probes: at most one
	 * per BALANCER_EWMA_PROBE_PICKS picks once BALANCER_EWMA_PROBE_MS passed
	 * since it was measured, and none while a stream is on it. */
	report_n(bs, eps[0], 1000, 20000, BALANCER_OK, 2);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000 + BALANCER_EWMA_PROBE_MS - 1, 1000, seen);
	assert_int_equal(seen[0], 0);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000 + BALANCER_EWMA_PROBE_MS, 1000, seen);
	assert_true(seen[0] >= 1 && seen[0] <= 1000 / BALANCER_EWMA_PROBE_PICKS);
	balancer_stream_start(bs, eps[0]);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 1000 + 2 * BALANCER_EWMA_PROBE_MS, 1000, seen);
	assert_int_equal(seen[0], 0);
	balancer_stream_end(bs, eps[0]);
	/* Nor after a failure, nor after a stream it held unanswered past its
	 * estimate (it stalled: a probe would wait for the client's deadline). */
	report_n(bs, eps[0], 2000, 20000, BALANCER_FAILED, 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 2000 + 2 * BALANCER_EWMA_PROBE_MS, 1000, seen);
	assert_int_equal(seen[0], 0);
	report_n(bs, eps[0], 3000, 20000, BALANCER_OK, 2);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 3000 + BALANCER_EWMA_PROBE_MS, 1000, seen);
	assert_true(seen[0] >= 1); /* answering again: probed */
	/* The probe's answer replaces the estimate, so one normal answer
	 * brings the pod back (capped at twice the answer, 2.4 ms, it would
	 * stay out of the band of eps[2]'s 1.4 ms, decayed to 1.09 ms by now). */
	report_n(bs, eps[0], 3000 + BALANCER_EWMA_PROBE_MS, 1200, BALANCER_OK, 1);
	assert_true(fabs(lb_ep(eps[0])->c.lat.ewma_us - 1200) < 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 3000 + BALANCER_EWMA_PROBE_MS, 3000, seen);
	assert_true(seen[0] > 800);
	report_n(bs, eps[0], 4000, 1000000, BALANCER_NO_VERDICT, 1);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 4000 + 2 * BALANCER_EWMA_PROBE_MS, 1000, seen);
	assert_int_equal(seen[0], 0);
	balancer_set_free(bs);
	state_free(st);
}

/* Equal pods on a loaded node: four clients, one RPC at a time each, whose
 * answers take 1.5-2.5 ms, but now and then h2splitd itself is descheduled
 * for 10 ms and every stream in flight answers that late. Two of those on
 * one pod put its estimate past the band and the slack; their jitter shows
 * them for noise, so the shares stay even. (Judged on the estimates alone,
 * one pod ends 365 against 417 and 418, shunned since its last such spell
 * and for seconds more, until its estimate decays.) A pod that turns slow
 * by far more than the jitter is still shunned at its second slow answer. */
static void test_ewma_jitter(void **state)
{
	struct state *st = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(43, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3], *on[4];
	uint64_t rng = 4242;
	double now_us = 0;
	int seen[3] = {0}, stalls = 0;

	(void)state;
	for (int round = 0; round < 300; round++) {
		bool stall = balancer_rand(&rng) % 100 < 8;
		uint64_t now_ms = (uint64_t)now_us / 1000;

		for (int k = 0; k < 4; k++) {
			on[k] = pick(bs, &st->svcs[0], 1, NULL, 0, now_ms);
			seen[idx_of(on[k])]++;
			balancer_stream_start(bs, on[k]);
		}
		for (int k = 0; k < 4; k++) {
			uint64_t rtt = 1500 + balancer_rand(&rng) % 1000 + (stall ? 10000 : 0);

			balancer_endpoint_report(bs, on[k], now_ms + rtt / 1000, rtt, BALANCER_OK);
			balancer_stream_end(bs, on[k]);
		}
		now_us += 2500 + (stall ? 10000 : 0);
		stalls += stall;
	}
	assert_true(stalls >= 15); /* the noise did happen */
	for (int i = 0; i < 3; i++)
		assert_true(seen[i] >= 380 && seen[i] <= 420); /* 400 ± 5% */
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	report_n(bs, eps[0], (uint64_t)now_us / 1000, 30000, BALANCER_OK, 2);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, (uint64_t)now_us / 1000, 300, seen);
	assert_int_equal(seen[0], 0);
	balancer_set_free(bs);
	state_free(st);
}

/* A pod failing every other RPC never fails five in a row for long, but
 * half of its last 20 verdicts failing ejects it; fewer do not. */
static void test_eject_failure_rate(void **state)
{
	struct state *st = make_state(LB_ROUND_ROBIN, three, 3);
	struct balancer_set *bs = balancer_set_new(41, LB_LEAST_REQUEST);
	struct balancer_params bp = {
	    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
	    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
	    .eject_failures = 5,
	    .eject_failure_pct = 50,
	    .eject_base_ms = 30000,
	};
	struct balancer_endpoint *eps[3];
	bool ejected = false;
	int n = 0;

	(void)state;
	balancer_set_params(bs, &bp);
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	/* 1 in 5 failing: never. */
	for (int i = 0; i < 200; i++)
		assert_false(balancer_endpoint_report(bs, eps[1], 1000, 500,
						      i % 5 ? BALANCER_OK : BALANCER_FAILED));
	/* RESOURCE_EXHAUSTED and no-verdicts are not failures. */
	for (int i = 0; i < 100; i++)
		assert_false(balancer_endpoint_report(
		    bs, eps[1], 1000, 500, i % 2 ? BALANCER_OVERLOADED : BALANCER_NO_VERDICT));
	/* Every other one failing: the tenth failure is the 20th verdict. */
	while (!ejected && n < 100)
		ejected = balancer_endpoint_report(bs, eps[0], 1000, 500,
						   n++ % 2 ? BALANCER_FAILED : BALANCER_OK);
	assert_true(ejected);
	assert_int_equal(n, 20);
	assert_true(is_ejected(eps[0], 1000));
	/* Back after its time, it is judged afresh: one failure is not enough. */
	assert_false(balancer_endpoint_report(bs, eps[0], 31000, 500, BALANCER_FAILED));
	/* Off: only failures in a row eject. */
	bp.eject_failure_pct = 0;
	balancer_set_params(bs, &bp);
	for (int i = 0; i < 100; i++)
		assert_false(balancer_endpoint_report(bs, eps[2], 1000, 500,
						      i % 2 ? BALANCER_FAILED : BALANCER_OK));
	balancer_set_free(bs);
	state_free(st);
}

static void test_eject_after_failures(void **state)
{
	struct state *st = make_state(LB_ROUND_ROBIN, three, 3);
	struct balancer_set *bs = balancer_set_new(29, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3];
	int seen[3] = {0};

	(void)state;
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	/* A success resets the count. */
	report_n(bs, eps[1], 1000, 0, BALANCER_FAILED, 4);
	report_n(bs, eps[1], 1000, 500, BALANCER_OK, 1);
	report_n(bs, eps[1], 1000, 0, BALANCER_FAILED, 4);
	assert_false(is_ejected(eps[1], 1000));
	report_n(bs, eps[1], 1000, 500, BALANCER_OK, 1);
	/* The fifth failure in a row ejects, for 30 s. */
	report_n(bs, eps[0], 1000, 0, BALANCER_FAILED, 4);
	assert_true(balancer_endpoint_report(bs, eps[0], 1000, 0, BALANCER_FAILED));
	assert_true(is_ejected(eps[0], 1000));
	assert_int_equal(balancer_endpoint_info(eps[0]).ejected_until_ms, 31000);
	/* Streams that were in flight failing too do not extend it. */
	report_n(bs, eps[0], 1001, 0, BALANCER_FAILED, 10);
	assert_int_equal(balancer_endpoint_info(eps[0]).ejected_until_ms, 31000);
	count_picks(bs, &st->svcs[0], 1, 30999, 300, seen);
	assert_int_equal(seen[0], 0);
	assert_int_equal(seen[1], 150);
	/* A retry whose other options are spent may still land on it. */
	{
		struct balancer_endpoint *tried[2] = {eps[1], eps[2]};

		assert_ptr_equal(pick(bs, &st->svcs[0], 1, tried, 2, 30999), eps[0]);
	}
	/* Back after its time. */
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st->svcs[0], 1, 31000, 300, seen);
	assert_int_equal(seen[0], 100);
	balancer_set_free(bs);
	state_free(st);
}

static void test_eject_time_grows(void **state)
{
	struct state *st = make_state(LB_LEAST_REQUEST, three, 3);
	struct balancer_set *bs = balancer_set_new(31, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3];
	uint64_t now = 1000;

	(void)state;
	all_eps(bs, &st->svcs[0], 1, eps, 3);
	/* 30 s x the number of ejections, capped at 5 min. */
	for (uint64_t k = 1; k <= 12; k++) {
		uint64_t want = 30000 * k < 300000 ? 30000 * k : 300000;

		report_n(bs, eps[0], now, 0, BALANCER_FAILED, 4);
		assert_true(balancer_endpoint_report(bs, eps[0], now, 0, BALANCER_FAILED));
		assert_int_equal(balancer_endpoint_info(eps[0]).ejected_until_ms - now, want);
		now = balancer_endpoint_info(eps[0]).ejected_until_ms;
	}
	/* Well behaved for longer than the longest ejection: back to 30 s. */
	now += 300001;
	report_n(bs, eps[0], now, 0, BALANCER_FAILED, 4);
	assert_true(balancer_endpoint_report(bs, eps[0], now, 0, BALANCER_FAILED));
	assert_int_equal(balancer_endpoint_info(eps[0]).ejected_until_ms - now, 30000);
	/* Ejection applies to every policy, and not with ejection off. */
	{
		struct balancer_params bp = {
		    .ewma_decay_ms = 10000,
		    .ewma_default_us = 1000,
		    .eject_failures = 0,
		    .eject_base_ms = 30000,
		};

		balancer_set_params(bs, &bp);
		report_n(bs, eps[1], now, 0, BALANCER_FAILED, 50);
		assert_false(is_ejected(eps[1], now));
		/* --outlier-failures 2 --outlier-ejection 2000, once eps[0] is back
		 * (two of three out would be more than half). */
		now = balancer_endpoint_info(eps[0]).ejected_until_ms;
		bp.eject_failures = 2;
		bp.eject_base_ms = 2000;
		balancer_set_params(bs, &bp);
		report_n(bs, eps[2], now, 0, BALANCER_FAILED, 1);
		assert_true(balancer_endpoint_report(bs, eps[2], now, 0, BALANCER_FAILED));
		assert_int_equal(balancer_endpoint_info(eps[2]).ejected_until_ms - now, 2000);
	}
	balancer_set_free(bs);
	state_free(st);
}

static void test_eject_cap_and_panic(void **state)
{
	struct state *st4 = make_state(LB_ROUND_ROBIN, four, 4);
	struct state *st3 = make_state(LB_ROUND_ROBIN, four, 3);
	struct state *st1 = make_state(LB_ROUND_ROBIN, four, 1);
	struct balancer_set *bs = balancer_set_new(37, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[4];
	int seen[4] = {0};

	(void)state;
	all_eps(bs, &st4->svcs[0], 1, eps, 4);
	/* Two of four may go; the third would be more than half. */
	report_n(bs, eps[0], 1000, 0, BALANCER_FAILED, 4);
	assert_true(balancer_endpoint_report(bs, eps[0], 1000, 0, BALANCER_FAILED));
	report_n(bs, eps[1], 1000, 0, BALANCER_FAILED, 4);
	assert_true(balancer_endpoint_report(bs, eps[1], 1000, 0, BALANCER_FAILED));
	report_n(bs, eps[2], 1000, 0, BALANCER_FAILED, 10);
	assert_false(is_ejected(eps[2], 1000));
	count_picks(bs, &st4->svcs[0], 1, 2000, 100, seen);
	assert_int_equal(seen[0] + seen[1], 0);
	/* The list shrinks to three: two ejected is more than half, panic: all. */
	balancer_set_update(bs, st3, 2);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st3->svcs[0], 2, 2000, 300, seen);
	assert_int_equal(seen[0], 100);
	assert_int_equal(seen[1], 100);
	assert_int_equal(seen[2], 100);
	/* A lone endpoint is never ejected. */
	balancer_set_update(bs, st1, 3);
	report_n(bs, eps[0], 40000, 0, BALANCER_FAILED, 20);
	assert_false(is_ejected(eps[0], 40000));
	assert_ptr_equal(pick(bs, &st1->svcs[0], 3, NULL, 0, 40000), eps[0]);
	balancer_set_free(bs);
	state_free(st4);
	state_free(st3);
	state_free(st1);
}

static struct balancer_set *capped_set(uint32_t max_ep, uint32_t max_svc, uint32_t max_pending)
{
	struct balancer_set *bs = balancer_set_new(5, LB_LEAST_REQUEST);
	struct balancer_params pa = {
	    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
	    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
	    .max_inflight_ep = max_ep,
	    .max_inflight_svc = max_svc,
	    .max_pending = max_pending,
	};

	assert_non_null(bs);
	balancer_set_params(bs, &pa);
	return bs;
}

/* A pick that reports saturation, as the splitter sees it. */
static struct balancer_endpoint *pick_cb(struct balancer_set *bs, const struct state_service *svc,
					 bool waited, bool *saturated)
{
	struct balancer_pick p = {.family = AF_UNSPEC, .waited = waited};
	struct balancer_endpoint *ep = balancer_set_pick(bs, svc, 1, &p);

	*saturated = p.saturated;
	return ep;
}

static void test_cap_per_endpoint(void **state)
{
	struct state *st = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = capped_set(2, 0, 4);
	struct balancer_endpoint *eps[6];
	struct balancer_waiter w1 = {0}, w2 = {0};
	int per[3] = {0};
	bool sat;

	(void)state;
	/* Two per endpoint: six streams fit, on every endpoint twice. */
	for (int i = 0; i < 6; i++) {
		eps[i] = pick_cb(bs, &st->svcs[0], false, &sat);
		assert_non_null(eps[i]);
		assert_false(sat);
		balancer_stream_start(bs, eps[i]);
		per[idx_of(eps[i])]++;
	}
	assert_int_equal(per[0], 2);
	assert_int_equal(per[1], 2);
	assert_int_equal(per[2], 2);
	/* The seventh finds no room and waits, so does the eighth: behind it. */
	assert_int_equal(balancer_full_cap(bs, st->svcs[0].id), BALANCER_CAP_NONE);
	assert_null(pick_cb(bs, &st->svcs[0], false, &sat));
	assert_true(sat);
	assert_int_equal(balancer_full_cap(bs, st->svcs[0].id), BALANCER_CAP_ENDPOINT);
	assert_int_equal(balancer_wait(bs, st->svcs[0].id, &w1, false), 0);
	assert_int_equal(balancer_wait(bs, st->svcs[0].id, &w2, false), 0);
	assert_int_equal(balancer_waiting(bs, st->svcs[0].id), 2);
	assert_null(balancer_woken(bs));
	/* A stream ends: the first waiter is woken, gets that endpoint; a new
	 * stream would not jump the queue even with room. */
	balancer_stream_end(bs, eps[4]);
	assert_ptr_equal(balancer_woken(bs), &w1);
	assert_null(balancer_woken(bs));
	assert_null(pick_cb(bs, &st->svcs[0], false, &sat));
	assert_true(sat);
	assert_ptr_equal(pick_cb(bs, &st->svcs[0], true, &sat), eps[4]);
	balancer_stream_start(bs, eps[4]);
	assert_null(balancer_woken(bs)); /* still full: w2 waits on */
	assert_int_equal(balancer_waiting(bs, st->svcs[0].id), 1);
	/* Cancelled while queued: off the queue. */
	assert_true(balancer_unwait(&w2));
	assert_false(balancer_unwait(&w2));
	assert_int_equal(balancer_waiting(bs, st->svcs[0].id), 0);
	balancer_set_free(bs);
	state_free(st);
}

static void test_cap_per_service_and_queue_bound(void **state)
{
	struct state *st = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = capped_set(0, 2, 2);
	struct balancer_endpoint *a, *b;
	struct balancer_waiter w[4] = {{0}};
	uint32_t id = st->svcs[0].id;
	bool sat;

	(void)state;
	assert_int_equal(balancer_wait(bs, id, &w[0], false), -ENOENT); /* no pick yet */
	a = pick_cb(bs, &st->svcs[0], false, &sat);
	balancer_stream_start(bs, a);
	b = pick_cb(bs, &st->svcs[0], false, &sat);
	balancer_stream_start(bs, b);
	assert_null(pick_cb(bs, &st->svcs[0], false, &sat));
	assert_true(sat);
	assert_int_equal(balancer_full_cap(bs, id), BALANCER_CAP_SERVICE);
	assert_int_equal(balancer_wait(bs, id, &w[0], false), 0);
	assert_int_equal(balancer_wait(bs, id, &w[1], false), 0);
	assert_int_equal(balancer_wait(bs, id, &w[2], false), -ENOSPC); /* 2 queued: full */
	/* A woken stream that lost the race goes back to the front, cap or not. */
	balancer_stream_end(bs, a);
	assert_ptr_equal(balancer_woken(bs), &w[0]);
	assert_int_equal(balancer_wait(bs, id, &w[3], false), 0);
	assert_int_equal(balancer_wait(bs, id, &w[0], true), 0);
	assert_int_equal(balancer_waiting(bs, id), 3);
	/* Room again: each start or end with room wakes the next, in order. */
	balancer_stream_end(bs, b);
	assert_ptr_equal(balancer_woken(bs), &w[0]);
	assert_null(balancer_woken(bs));
	/* The service goes away: its waiters are all handed back. */
	balancer_set_update(bs, NULL, 2);
	assert_ptr_equal(balancer_woken(bs), &w[1]);
	assert_ptr_equal(balancer_woken(bs), &w[3]);
	assert_null(balancer_woken(bs));
	balancer_set_free(bs);
	state_free(st);
}

/* A new stream that queues behind waiting ones (which stops a stream from
 * jumping the queue, even with room) waits for the cap they wait for, as
 * the splitter counts it (h2split_limit_exceeded_total): the endpoint cap
 * here, though the service has room and the woken endpoint too. */
static void test_full_cap_behind_waiters(void **state)
{
	struct state *st = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = capped_set(1, 10, 4);
	struct balancer_endpoint *eps[3];
	struct balancer_waiter w = {0};
	uint32_t id = st->svcs[0].id;
	bool sat;

	(void)state;
	for (int i = 0; i < 3; i++) {
		eps[i] = pick_cb(bs, &st->svcs[0], false, &sat);
		assert_non_null(eps[i]);
		balancer_stream_start(bs, eps[i]);
	}
	assert_null(pick_cb(bs, &st->svcs[0], false, &sat));
	assert_true(sat);
	assert_int_equal(balancer_wait(bs, id, &w, false), 0);
	balancer_stream_end(bs, eps[0]); /* room: w is woken, not yet picked again */
	assert_ptr_equal(balancer_woken(bs), &w);
	assert_int_equal(balancer_wait(bs, id, &w, true), 0); /* back in front, say */
	assert_null(pick_cb(bs, &st->svcs[0], false, &sat));
	assert_true(sat);
	assert_int_equal(balancer_full_cap(bs, id), BALANCER_CAP_ENDPOINT);
	assert_int_equal(balancer_full_cap(bs, id + 1000), BALANCER_CAP_NONE); /* unknown */
	assert_true(balancer_unwait(&w));
	balancer_set_free(bs);
	state_free(st);
}

/* A Service's annotations override the daemon's caps: -1 lifts them. */
static void test_cap_service_override(void **state)
{
	struct state *st = make_state(LB_DEFAULT, three, 3);
	struct balancer_set *bs = capped_set(1, 1, 0);
	struct balancer_waiter w = {0};
	bool sat;

	(void)state;
	st->svcs[0].max_inflight_ep = -1;
	st->svcs[0].max_inflight = 5;
	for (int i = 0; i < 5; i++) {
		struct balancer_endpoint *ep = pick_cb(bs, &st->svcs[0], false, &sat);

		assert_non_null(ep);
		balancer_stream_start(bs, ep);
	}
	assert_null(pick_cb(bs, &st->svcs[0], false, &sat));
	assert_true(sat);
	/* --max-pending 0: no queue at all. */
	assert_int_equal(balancer_wait(bs, st->svcs[0].id, &w, false), -ENOSPC);
	balancer_set_free(bs);
	state_free(st);
}

static struct balancer_set *slow_set(enum lb_policy dflt, uint32_t slow_start_ms)
{
	struct balancer_set *bs = balancer_set_new(17, dflt);
	struct balancer_params pa = {
	    .ewma_decay_ms = BALANCER_EWMA_DECAY_MS,
	    .ewma_default_us = BALANCER_EWMA_DEFAULT_US,
	    .max_pending = BALANCER_MAX_PENDING,
	    .slow_start_ms = slow_start_ms,
	};

	assert_non_null(bs);
	balancer_set_params(bs, &pa);
	return bs;
}

/* Streams of 3000 picks at |now_ms| (none left in flight) per endpoint index. */
static void share(struct balancer_set *bs, const struct state_service *svc, uint64_t gen,
		  uint64_t now_ms, int out[3])
{
	out[0] = out[1] = out[2] = 0;
	for (int i = 0; i < 3000; i++)
		out[idx_of(pick(bs, svc, gen, NULL, 0, now_ms))]++;
}

/* Endpoints of the first routing are established; one that joins later ramps
 * from 10 % to full over --slow-start, under every policy. */
static void test_slow_start(void **state)
{
	static const struct ep_spec two[] = {{"10.0.0.1", 8080, ""}, {"10.0.0.2", 8080, ""}};
	static const enum lb_policy policies[] = {LB_LEAST_REQUEST, LB_ROUND_ROBIN, LB_EWMA};

	(void)state;
	for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
		struct state *st1 = make_state(policies[k], two, 2);
		struct state *st2 = make_state(policies[k], three, 3);
		struct balancer_set *bs = slow_set(LB_LEAST_REQUEST, 10000);
		struct balancer_endpoint *a = pick(bs, &st1->svcs[0], 1, NULL, 0, 5000), *c;
		int n[3];

		assert_int_equal(lb_candidate_weight(&lb_ep(a)->c, 5000, 10000), 1.0);
		/* 10.0.0.3 joins at t=20 s; its ramp starts at the next pick. */
		balancer_set_update(bs, st2, 2);
		share(bs, &st2->svcs[0], 2, 20000, n);
		c = pick(bs, &st2->svcs[0], 2, NULL, 0, 20000);
		for (int i = 0; i < 10000 && idx_of(c) != 2; i++)
			c = pick(bs, &st2->svcs[0], 2, NULL, 0, 20000);
		assert_int_equal(idx_of(c), 2);
		assert_int_equal(lb_ep(c)->c.warm_start_ms, 20000);
		assert_int_equal(balancer_endpoint_info(c).warm_until_ms, 30000);
		assert_true(fabs(lb_candidate_weight(&lb_ep(c)->c, 20000, 10000) - 0.1) < 1e-9);
		assert_true(fabs(lb_candidate_weight(&lb_ep(c)->c, 25000, 10000) - 0.5) < 1e-9);
		assert_true(fabs(lb_candidate_weight(&lb_ep(c)->c, 30000, 10000) - 1.0) < 1e-9);
		/* Share 0.1 / 2.1 (4.8 %) at first ... */
		assert_true(n[2] > 40 && n[2] < 300);
		assert_true(n[0] > 1200 && n[1] > 1200);
		/* ... 0.5 / 2.5 (20 %) half way ... */
		share(bs, &st2->svcs[0], 2, 25000, n);
		assert_true(n[2] > 450 && n[2] < 750);
		/* ... and a third once warm. */
		share(bs, &st2->svcs[0], 2, 30000, n);
		assert_true(n[2] > 850 && n[2] < 1150);
		balancer_set_free(bs);
		state_free(st1);
		state_free(st2);
	}
}

/* A pod that joins and answers slowly at first (warming up) keeps getting
 * streams by in-flight count for BALANCER_EWMA_GRACE_MS; only then does its
 * latency count. Pods there from the start get no grace. */
static void test_ewma_grace_for_joining_pod(void **state)
{
	static const struct ep_spec two[] = {{"10.0.0.1", 8080, ""}, {"10.0.0.2", 8080, ""}};
	struct state *st1 = make_state(LB_EWMA, two, 2);
	struct state *st2 = make_state(LB_EWMA, three, 3);
	struct balancer_set *bs = balancer_set_new(43, LB_LEAST_REQUEST);
	struct balancer_endpoint *eps[3] = {0};
	uint64_t t = 20000;
	int seen[3] = {0};

	(void)state;
	all_eps(bs, &st1->svcs[0], 1, eps, 2);
	answered(eps, 2);
	/* An established pod answering slowly twice is shunned at once. */
	report_n(bs, eps[0], 1000, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], 1000, 20000, BALANCER_OK, 2);
	count_picks(bs, &st1->svcs[0], 1, 1000, 300, seen);
	assert_int_equal(seen[1], 0);
	report_n(bs, eps[1], 1000, 1000, BALANCER_OK, 1);
	/* 10.0.0.3 joins; its first answers are slow. */
	balancer_set_update(bs, st2, 2);
	for (int i = 0; i < 10000 && !eps[2]; i++) {
		struct balancer_endpoint *ep = pick(bs, &st2->svcs[0], 2, NULL, 0, t);

		if (idx_of(ep) == 2)
			eps[2] = ep;
	}
	assert_non_null(eps[2]);
	answered(eps + 2, 1);
	report_n(bs, eps[0], t, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], t, 1000, BALANCER_OK, 1);
	report_n(bs, eps[2], t, 20000, BALANCER_OK, 2);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st2->svcs[0], 2, t + BALANCER_EWMA_GRACE_MS - 1, 3000, seen);
	assert_true(seen[2] > 800); /* a third, give or take */
	/* Grace over, still slow: shunned (probes aside). */
	report_n(bs, eps[0], t + BALANCER_EWMA_GRACE_MS, 1000, BALANCER_OK, 1);
	report_n(bs, eps[1], t + BALANCER_EWMA_GRACE_MS, 1000, BALANCER_OK, 1);
	report_n(bs, eps[2], t + BALANCER_EWMA_GRACE_MS, 20000, BALANCER_OK, 2);
	memset(seen, 0, sizeof(seen));
	count_picks(bs, &st2->svcs[0], 2, t + BALANCER_EWMA_GRACE_MS, 3000, seen);
	assert_int_equal(seen[2], 0);
	balancer_set_free(bs);
	state_free(st1);
	state_free(st2);
}

/* Static weights split idle endpoints' streams by weight; least_request
 * keeps in flight per unit of weight even. */
static void test_static_weights(void **state)
{
	static const enum lb_policy policies[] = {LB_LEAST_REQUEST, LB_ROUND_ROBIN};

	(void)state;
	for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
		struct state *st = make_state(policies[k], three, 3);
		struct balancer_set *bs = slow_set(LB_LEAST_REQUEST, 0);
		int n[3];

		st->svcs[0].eps[0].weight = 3; /* 3 : 1 : 1 */
		share(bs, &st->svcs[0], 1, 0, n);
		assert_true(n[0] > 1650 && n[0] < 1950); /* 60 % */
		assert_true(n[1] > 450 && n[1] < 750);
		assert_true(n[2] > 450 && n[2] < 750);
		balancer_set_free(bs);
		state_free(st);
	}
	/* Under load: 50 streams held spread 30 : 10 : 10. */
	{
		struct state *st = make_state(LB_LEAST_REQUEST, three, 3);
		struct balancer_set *bs = slow_set(LB_LEAST_REQUEST, 0);
		int n[3] = {0};

		st->svcs[0].eps[0].weight = 3;
		for (int i = 0; i < 50; i++) {
			struct balancer_endpoint *ep = pick(bs, &st->svcs[0], 1, NULL, 0, 0);

			balancer_stream_start(bs, ep);
			n[idx_of(ep)]++;
		}
		assert_true(n[0] >= 26 && n[0] <= 34);
		assert_true(n[1] >= 6 && n[2] >= 6);
		balancer_set_free(bs);
		state_free(st);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_robin),
	    cmocka_unit_test(test_least_request_avoids_busy),
	    cmocka_unit_test(test_least_request_spreads_load),
	    cmocka_unit_test(test_p2c_turns),
	    cmocka_unit_test(test_p2c_turns_after_absence),
	    cmocka_unit_test(test_p2c_turns_many_endpoints),
	    cmocka_unit_test(test_p2c_first_choice_varies),
	    cmocka_unit_test(test_candidates),
	    cmocka_unit_test(test_retry_avoids_tried),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_backoff_is_per_client_netns),
	    cmocka_unit_test(test_dual_stack_keeps_family),
	    cmocka_unit_test(test_state_survives_swaps),
	    cmocka_unit_test(test_policy_per_service),
	    cmocka_unit_test(test_ewma_prefers_fast),
	    cmocka_unit_test(test_ewma_failure_penalty),
	    cmocka_unit_test(test_ewma_decay),
	    cmocka_unit_test(test_ewma_first_answers),
	    cmocka_unit_test(test_ewma_band_and_probe),
	    cmocka_unit_test(test_ewma_jitter),
	    cmocka_unit_test(test_ewma_grace_for_joining_pod),
	    cmocka_unit_test(test_eject_failure_rate),
	    cmocka_unit_test(test_eject_after_failures),
	    cmocka_unit_test(test_eject_time_grows),
	    cmocka_unit_test(test_eject_cap_and_panic),
	    cmocka_unit_test(test_cap_per_endpoint),
	    cmocka_unit_test(test_cap_per_service_and_queue_bound),
	    cmocka_unit_test(test_full_cap_behind_waiters),
	    cmocka_unit_test(test_cap_service_override),
	    cmocka_unit_test(test_slow_start),
	    cmocka_unit_test(test_static_weights),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
