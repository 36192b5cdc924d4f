// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for locality: locality_resolve() (base/locality.c: which tier
 * each endpoint is in, from trafficDistribution, h2split.io/topology, nodeName,
 * zone and hints as kube-proxy reads them; this node's zone from --zone or its
 * Node) and the balancer's choice of tier per stream (balancer/tiers.c: the
 * near tier first; failover when it is unavailable, full or overloaded; the
 * ramp back; internalTrafficPolicy Local), on a fake clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "balancer/balancer.h"
#include "base/locality.h"

struct ep_spec {
	const char *node, *zone, *for_zones, *for_nodes;
};

/* One service, endpoints 10.0.0.1.. in |specs| order, resolved on node n1. */
static struct state *make(uint8_t topo, bool local_only, const struct ep_spec *specs, int n,
			  const char *zone_flag, const char *node_zone)
{
	struct state_endpoint eps[16];
	struct state_service svc = {.port = 50051,
				    .lb = LB_LEAST_REQUEST,
				    .eps = eps,
				    .n_eps = n,
				    .topology = topo,
				    .local_only = local_only};
	struct state *st = state_new();
	struct state_node node = {.name = "n1"};

	assert_non_null(st);
	snprintf(svc.ns, sizeof(svc.ns), "default");
	snprintf(svc.name, sizeof(svc.name), "echo");
	for (int i = 0; i < n; i++) {
		char ip[32];

		memset(&eps[i], 0, sizeof(eps[i]));
		snprintf(ip, sizeof(ip), "10.0.0.%d", i + 1);
		assert_int_equal(h2s_ip_parse(&eps[i].ip, ip), 0);
		eps[i].port = 8080;
		eps[i].ready = eps[i].serving = true;
		snprintf(eps[i].node, sizeof(eps[i].node), "%s", specs[i].node);
		snprintf(eps[i].zone, sizeof(eps[i].zone), "%s", specs[i].zone);
		snprintf(eps[i].for_zones, sizeof(eps[i].for_zones), "%s",
			 specs[i].for_zones ? specs[i].for_zones : "");
		snprintf(eps[i].for_nodes, sizeof(eps[i].for_nodes), "%s",
			 specs[i].for_nodes ? specs[i].for_nodes : "");
	}
	assert_int_equal(state_add_service(st, &svc), 0);
	if (node_zone) {
		snprintf(node.zone, sizeof(node.zone), "%s", node_zone);
		assert_int_equal(state_add_node(st, &node), 0);
	}
	assert_int_equal(state_finish(st), 0);
	locality_resolve(st, "n1", zone_flag);
	return st;
}

/* n1 is in z1: A on n1, B on n2 (z1), C and D on n3/n4 (z2). */
static const struct ep_spec four[] = {
    {"n1", "z1", NULL, NULL},
    {"n2", "z1", NULL, NULL},
    {"n3", "z2", NULL, NULL},
    {"n4", "z2", NULL, NULL},
};

static void tiers_are(const struct state *st, const char *want)
{
	for (int i = 0; i < st->svcs[0].n_eps; i++)
		assert_int_equal(st->svcs[0].eps[i].tier, want[i] - '0');
}

/* A state sharing another's endpoints (state_add_service_shared, as a
 * source's cache or the daemon's retired services do) resolves without
 * writing them: unchanged tiers keep the block, new ones go to a copy, and
 * the first state's tiers stay as they were. */
static void test_shared_endpoints_are_not_written(void **state)
{
	struct state *a = make(STATE_TOPO_ZONE, false, four, 4, "z1", NULL);
	struct state *b = state_new(), *c = state_new();

	(void)state;
	assert_non_null(b);
	assert_non_null(c);
	assert_int_equal(state_add_service_shared(b, &a->svcs[0]), 0);
	assert_int_equal(state_add_service_shared(c, &a->svcs[0]), 0);
	assert_int_equal(state_finish(b), 0);
	assert_int_equal(state_finish(c), 0);
	assert_ptr_equal(b->svcs[0].eps, a->svcs[0].eps);
	/* Same node and zone: nothing to write, the block stays shared. */
	assert_int_equal(locality_resolve(b, "n1", "z1"), 0);
	assert_ptr_equal(b->svcs[0].eps, a->svcs[0].eps);
	tiers_are(b, "1122");
	/* Another zone: c gets endpoints of its own; a's are untouched. */
	assert_int_equal(locality_resolve(c, "n1", "z2"), 0);
	assert_ptr_not_equal(c->svcs[0].eps, a->svcs[0].eps);
	tiers_are(c, "1211");
	tiers_are(a, "1122");
	/* The block outlives the state that made it. */
	state_free(a);
	tiers_are(b, "1122");
	assert_string_equal(b->svcs[0].eps[3].node, "n4");
	state_free(b);
	state_free(c);
}

static void test_resolve_by_distribution(void **state)
{
	struct state *st;

	(void)state;
	st = make(STATE_TOPO_ZONE, false, four, 4, "z1", NULL);
	assert_string_equal(st->node_zone, "z1");
	assert_int_equal(st->svcs[0].topology_in_force, STATE_TOPO_ZONE);
	tiers_are(st, "1122");
	assert_int_equal(st->svcs[0].eps[0].locality, STATE_LOC_NODE);
	assert_int_equal(st->svcs[0].eps[1].locality, STATE_LOC_ZONE);
	assert_int_equal(st->svcs[0].eps[2].locality, STATE_LOC_OTHER);
	state_free(st);
	/* The zone from the Node object when no --zone is given. */
	st = make(STATE_TOPO_NODE, false, four, 4, "", "z1");
	assert_string_equal(st->node_zone, "z1");
	tiers_are(st, "0122");
	state_free(st);
	/* --zone wins over the label (this node's own endpoint is in its zone). */
	st = make(STATE_TOPO_ZONE, false, four, 4, "z2", "z1");
	tiers_are(st, "1211");
	state_free(st);
	/* Neither field nor hints: no tiers, as without locality. */
	st = make(STATE_TOPO_DEFAULT, false, four, 4, "z1", NULL);
	assert_int_equal(st->svcs[0].topology_in_force, STATE_TOPO_OFF);
	tiers_are(st, "2222");
	state_free(st);
}

static void test_resolve_without_zone(void **state)
{
	struct state *st;

	(void)state;
	st = make(STATE_TOPO_ZONE, false, four, 4, "", NULL);
	assert_string_equal(st->node_zone, "");
	tiers_are(st, "2222"); /* exactly as today */
	state_free(st);
	st = make(STATE_TOPO_NODE, false, four, 4, "", NULL);
	tiers_are(st, "0222"); /* the node is still known */
	state_free(st);
}

static void test_resolve_hints(void **state)
{
	/* The zone controller hinted C (in z2) to z1 and B (in z1) to z2. */
	const struct ep_spec hinted[] = {
	    {"n1", "z1", "z1,", NULL},
	    {"n2", "z1", "z2,", NULL},
	    {"n3", "z2", "z1,z3,", NULL},
	    {"n4", "z2", "z2,", NULL},
	};
	struct ep_spec partial[4];
	struct state *st;

	(void)state;
	st = make(STATE_TOPO_DEFAULT, false, hinted, 4, "z1", NULL);
	assert_int_equal(st->svcs[0].topology_in_force, STATE_TOPO_ZONE);
	tiers_are(st, "1212");
	state_free(st);
	/* Hints decide the zone set under PreferClose too. */
	st = make(STATE_TOPO_ZONE, false, hinted, 4, "z1", NULL);
	tiers_are(st, "1212");
	state_free(st);
	/* h2split.io/topology: off ignores them. */
	st = make(STATE_TOPO_OFF, false, hinted, 4, "z1", NULL);
	tiers_are(st, "2222");
	state_free(st);
	/* One ready endpoint without hints: kube-proxy ignores them all. */
	memcpy(partial, hinted, sizeof(partial));
	partial[3].for_zones = NULL;
	st = make(STATE_TOPO_DEFAULT, false, partial, 4, "z1", NULL);
	tiers_are(st, "2222");
	state_free(st);
	/* No hint names this zone: ignored as well. */
	st = make(STATE_TOPO_DEFAULT, false, hinted, 4, "z9", NULL);
	tiers_are(st, "2222");
	state_free(st);
	/* forNodes hints decide the node tier. */
	memcpy(partial, hinted, sizeof(partial));
	partial[0].for_nodes = "n9,";
	partial[1].for_nodes = "n1,";
	partial[2].for_nodes = "n3,";
	partial[3].for_nodes = "n4,";
	st = make(STATE_TOPO_DEFAULT, false, partial, 4, "z1", NULL);
	assert_int_equal(st->svcs[0].topology_in_force, STATE_TOPO_NODE);
	tiers_are(st, "1012");
	state_free(st);
	assert_true(locality_list_has("a,bb,", "bb"));
	assert_false(locality_list_has("a,bb,", "b"));
	assert_false(locality_list_has("", ""));
}

/* ---- the balancer's choice ---- */

static struct balancer_endpoint *pick_at(struct balancer_set *bs, const struct state *st,
					 uint64_t now_ms, uint8_t *failover)
{
	struct balancer_pick p = {.now_ms = now_ms, .netns_id = 1, .family = AF_UNSPEC};
	struct balancer_endpoint *ep = balancer_set_pick(bs, &st->svcs[0], 1, &p);

	if (failover)
		*failover = p.failover;
	return ep;
}

static int idx(const struct balancer_endpoint *ep)
{
	return ep->ip.b[15] - 1;
}

static void test_near_tier_first(void **state)
{
	struct state *st = make(STATE_TOPO_ZONE, false, four, 4, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	int seen[4] = {0};

	(void)state;
	for (int i = 0; i < 1000; i++) {
		struct balancer_endpoint *ep = pick_at(bs, st, 1000 + (uint64_t)i, NULL);

		seen[idx(ep)]++;
		balancer_stream_start(bs, ep);
		balancer_stream_end(bs, ep);
	}
	assert_int_equal(seen[2] + seen[3], 0);
	assert_true(seen[0] > 300 && seen[1] > 300);
	balancer_set_free(bs);
	state_free(st);
}

static void test_prefer_same_node(void **state)
{
	struct state *st = make(STATE_TOPO_NODE, false, four, 4, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_ROUND_ROBIN);
	uint8_t why;

	(void)state;
	for (int i = 0; i < 50; i++)
		assert_int_equal(idx(pick_at(bs, st, 1000, NULL)), 0);
	/* The node's endpoint fails to connect: the zone's takes over. */
	balancer_endpoint_connect_failed(pick_at(bs, st, 1000, NULL), 1000, 1);
	assert_int_equal(idx(pick_at(bs, st, 1001, &why)), 1);
	assert_int_equal(why, BALANCER_FAILOVER_UNAVAILABLE);
	balancer_set_free(bs);
	state_free(st);
}

static void test_failover_and_ramp_back(void **state)
{
	struct state *st = make(STATE_TOPO_ZONE, false, four, 4, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	struct balancer_endpoint *a, *b;
	int near = 0, early = 0, late = 0;
	uint8_t why;

	(void)state;
	a = pick_at(bs, st, 1000, NULL);
	b = pick_at(bs, st, 1000, NULL);
	assert_int_not_equal(idx(a), idx(b));
	/* Both near pods killed: connects fail, the far pods take the streams. */
	balancer_endpoint_connect_failed(a, 1000, 1);
	balancer_endpoint_connect_failed(b, 1000, 1);
	for (int i = 0; i < 100; i++) {
		struct balancer_endpoint *ep = pick_at(bs, st, 1100, &why);

		assert_true(idx(ep) >= 2);
		assert_int_equal(why, BALANCER_FAILOVER_UNAVAILABLE);
	}
	/* Back (their backoff over, 500 ms): a ramp, not all at once. */
	balancer_endpoint_ok(a);
	balancer_endpoint_ok(b);
	for (int i = 0; i < 1000; i++)
		early += idx(pick_at(bs, st, 1600, NULL)) < 2;
	for (int i = 0; i < 1000; i++)
		near += idx(pick_at(bs, st, 1600 + BALANCER_RAMP_MS / 2, NULL)) < 2;
	for (int i = 0; i < 1000; i++)
		late += idx(pick_at(bs, st, 1600 + BALANCER_RAMP_MS, NULL)) < 2;
	assert_true(early > 50 && early < 250);	 /* about 10% */
	assert_true(near > 450 && near < 650);	 /* about 55% */
	assert_int_equal(late, 1000);
	balancer_set_free(bs);
	state_free(st);
}

static void test_one_stream_or_client_does_not_ramp_a_tier(void **state)
{
	struct state *st = make(STATE_TOPO_ZONE, false, four, 4, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	struct balancer_endpoint *near[2];
	struct balancer_pick p = {.now_ms = 1000, .netns_id = 1, .avoid = near, .n_avoid = 2};
	int n = 0;

	(void)state;
	near[0] = pick_at(bs, st, 1000, NULL);
	near[1] = pick_at(bs, st, 1000, NULL);
	/* A stream that tried both near pods (refused) goes far... */
	assert_true(idx(balancer_set_pick(bs, &st->svcs[0], 1, &p)) >= 2);
	assert_int_equal(p.failover, BALANCER_FAILOVER_UNAVAILABLE);
	/* ... and the next one near, at full share: no ramp. */
	for (int i = 0; i < 200; i++)
		n += idx(pick_at(bs, st, 1001, NULL)) < 2;
	assert_int_equal(n, 200);
	/* Another client pod cannot connect to them: this one still can. */
	balancer_endpoint_connect_failed(near[0], 1001, 2);
	balancer_endpoint_connect_failed(near[1], 1001, 2);
	n = 0;
	for (int i = 0; i < 200; i++)
		n += idx(pick_at(bs, st, 1002, NULL)) < 2;
	assert_int_equal(n, 200);
	balancer_set_free(bs);
	state_free(st);
}

static void test_spill_past_cap(void **state)
{
	/* One near pod and 6 far, 3 streams per endpoint. */
	const struct ep_spec specs[] = {
	    {"n1", "z1", NULL, NULL}, {"n3", "z2", NULL, NULL}, {"n3", "z2", NULL, NULL},
	    {"n4", "z2", NULL, NULL}, {"n4", "z2", NULL, NULL}, {"n5", "z3", NULL, NULL},
	    {"n5", "z3", NULL, NULL},
	};
	struct state *st = make(STATE_TOPO_ZONE, false, specs, 7, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	struct balancer_params prm;
	int near = 0, full = 0;
	uint8_t why;

	(void)state;
	prm = (struct balancer_params){.ewma_decay_ms = 10000, .max_inflight_ep = 3};
	balancer_set_params(bs, &prm);
	for (int i = 0; i < 15; i++) {
		struct balancer_endpoint *ep = pick_at(bs, st, 1000, &why);

		assert_non_null(ep);
		near += idx(ep) == 0;
		full += why == BALANCER_FAILOVER_FULL;
		balancer_stream_start(bs, ep);
	}
	assert_int_equal(near, 3);
	assert_int_equal(full, 12);
	balancer_set_free(bs);
	state_free(st);
}

static void test_spill_on_load(void **state)
{
	const struct ep_spec specs[] = {
	    {"n1", "z1", NULL, NULL}, {"n3", "z2", NULL, NULL}, {"n3", "z2", NULL, NULL},
	    {"n4", "z2", NULL, NULL},
	};
	struct state *st = make(STATE_TOPO_ZONE, false, specs, 4, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	int near = 0, load = 0;
	uint8_t why;

	(void)state;
	/* No caps: 200 streams held open. The near pod takes them until it runs
	 * BALANCER_SPILL_FACTOR x busier than the rest (+1), then shares. */
	for (int i = 0; i < 200; i++) {
		struct balancer_endpoint *ep = pick_at(bs, st, 1000, &why);

		near += idx(ep) == 0;
		load += why == BALANCER_FAILOVER_LOAD;
		balancer_stream_start(bs, ep);
	}
	assert_true(near >= BALANCER_SPILL_MIN);
	/* far: (200 - near) / 3 each; near <= 4 x (far + 1) + 1 */
	assert_true(near <= BALANCER_SPILL_FACTOR * ((200 - near) / 3 + 1) + 1);
	assert_true(near > 200 / 4); /* still far more than an even share */
	assert_int_equal(load, 200 - near);
	balancer_set_free(bs);
	state_free(st);
}

static void test_local_only(void **state)
{
	struct state *st = make(STATE_TOPO_DEFAULT, true, four, 4, "z1", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_LEAST_REQUEST);
	struct balancer_pick p = {.now_ms = 1000, .netns_id = 1};
	struct balancer_endpoint *ep;

	(void)state;
	for (int i = 0; i < 20; i++) {
		ep = pick_at(bs, st, 1000, NULL);
		assert_int_equal(idx(ep), 0);
	}
	/* It fails to connect: still never another node's. */
	balancer_endpoint_connect_failed(ep, 1000, 1);
	assert_int_equal(idx(pick_at(bs, st, 1000, NULL)), 0);
	state_free(st);
	/* No endpoint on this node: nothing, and not for want of room. */
	st = make(STATE_TOPO_DEFAULT, true, four + 1, 3, "z1", NULL);
	assert_null(balancer_set_pick(bs, &st->svcs[0], 2, &p));
	assert_false(p.saturated);
	balancer_set_free(bs);
	state_free(st);
}

static void test_no_locality_unchanged(void **state)
{
	/* Without tiers the order is the snapshot's: round robin as before. */
	struct state *st = make(STATE_TOPO_DEFAULT, false, four, 4, "z2", NULL);
	struct balancer_set *bs = balancer_set_new(7, LB_ROUND_ROBIN);
	int first = idx(pick_at(bs, st, 1000, NULL));

	(void)state;
	for (int i = 1; i < 12; i++)
		assert_int_equal(idx(pick_at(bs, st, 1000, NULL)), (first + i) % 4);
	balancer_set_free(bs);
	state_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resolve_by_distribution),
	    cmocka_unit_test(test_resolve_without_zone),
	    cmocka_unit_test(test_resolve_hints),
	    cmocka_unit_test(test_near_tier_first),
	    cmocka_unit_test(test_prefer_same_node),
	    cmocka_unit_test(test_failover_and_ramp_back),
	    cmocka_unit_test(test_one_stream_or_client_does_not_ramp_a_tier),
	    cmocka_unit_test(test_spill_past_cap),
	    cmocka_unit_test(test_spill_on_load),
	    cmocka_unit_test(test_local_only),
	    cmocka_unit_test(test_no_locality_unchanged),
	    cmocka_unit_test(test_shared_endpoints_are_not_written),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
