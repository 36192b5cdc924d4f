// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for state.c: the desired state's ordering, stable ids (including
 * a real FNV-1a collision), VIP and id lookups, deep copies, endpoint
 * usability and the address helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/state.h"

static uint32_t fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

static struct state_service svc_make(const char *ns, const char *name, const char *port_name,
				     uint16_t port, const char *vip)
{
	struct state_service s = {.port = port};

	snprintf(s.ns, sizeof(s.ns), "%s", ns);
	snprintf(s.name, sizeof(s.name), "%s", name);
	snprintf(s.port_name, sizeof(s.port_name), "%s", port_name);
	if (vip) {
		assert_int_equal(h2s_ip_parse(&s.vips[0], vip), 0);
		s.n_vips = 1;
	}
	return s;
}

static void test_sorted_and_ids(void **unused)
{
	struct state *st = state_new();
	struct state_service a = svc_make("shop", "checkout", "grpc", 9000, "10.96.5.5");
	struct state_service b = svc_make("default", "greeter", "", 50051, "10.96.0.10");
	struct state_service c = svc_make("shop", "checkout", "admin", 9001, "10.96.5.5");

	(void)unused;
	assert_int_equal(state_add_service(st, &a), 0);
	assert_int_equal(state_add_service(st, &b), 0);
	assert_int_equal(state_add_service(st, &c), 0);
	assert_int_equal(state_finish(st), 0);
	assert_int_equal(st->n_svcs, 3);
	assert_string_equal(st->svcs[0].name, "greeter");
	assert_string_equal(st->svcs[1].port_name, "admin");
	assert_string_equal(st->svcs[2].port_name, "grpc");
	assert_int_equal(st->svcs[0].id, fnv1a("default/greeter:"));
	assert_int_equal(st->svcs[2].id, fnv1a("shop/checkout:grpc"));
	assert_ptr_equal(state_find_id(st, fnv1a("shop/checkout:admin")), &st->svcs[1]);
	assert_null(state_find_id(st, 12345));
	state_free(st);
}

/* Service names scrambled so that FNV-1a collides among a few 100k of them
 * (runs of decimal suffixes happen not to). */
static void name_of(char *buf, size_t len, int n)
{
	snprintf(buf, len, "svc-%u", (unsigned)n * 2654435761u);
}

/* Find two keys "default/NAME:" with the same 32-bit FNV-1a (birthday search). */
struct keyed {
	uint32_t h;
	int n;
};

static int cmp_keyed(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;

	return x->h < y->h ? -1 : x->h > y->h;
}

static void find_collision(int *n1, int *n2)
{
	enum { N = 300000 };
	struct keyed *k = malloc(N * sizeof(*k));
	char key[64], name[32];

	assert_non_null(k);
	for (int i = 0; i < N; i++) {
		name_of(name, sizeof(name), i);
		snprintf(key, sizeof(key), "default/%s:", name);
		k[i] = (struct keyed){.h = fnv1a(key), .n = i};
	}
	qsort(k, N, sizeof(*k), cmp_keyed);
	for (int i = 1; i < N; i++) {
		if (k[i].h == k[i - 1].h && k[i].h != UINT32_MAX) {
			*n1 = k[i - 1].n;
			*n2 = k[i].n;
			free(k);
			return;
		}
	}
	free(k);
	fail_msg("no FNV-1a collision among %d names", N);
}

static void add_named(struct state *st, int n)
{
	char name[32];
	struct state_service s;

	name_of(name, sizeof(name), n);
	s = svc_make("default", name, "", 80, NULL);
	assert_int_equal(state_add_service(st, &s), 0);
}

static uint32_t id_of(const struct state *st, int n)
{
	char name[32];

	name_of(name, sizeof(name), n);
	for (int i = 0; i < st->n_svcs; i++) {
		if (!strcmp(st->svcs[i].name, name))
			return st->svcs[i].id;
	}
	fail_msg("%s not found", name);
	return 0;
}

static void test_collision_probed_and_stable(void **unused)
{
	struct state *st1 = state_new(), *st2 = state_new();
	char key[64], name1[32], name2[32];
	int n1 = -1, n2 = -1, lo, hi;
	uint32_t h;

	(void)unused;
	find_collision(&n1, &n2);
	name_of(name1, sizeof(name1), n1);
	name_of(name2, sizeof(name2), n2);
	snprintf(key, sizeof(key), "default/%s:", name1);
	h = fnv1a(key);
	/* The name that sorts first keeps the hash; the other probes to hash + 1. */
	lo = strcmp(name1, name2) < 0 ? n1 : n2;
	hi = lo == n1 ? n2 : n1;
	add_named(st1, n1);
	add_named(st1, n2);
	add_named(st2, n2); /* other insertion order, same set: same ids */
	add_named(st2, 7);
	add_named(st2, n1);
	assert_int_equal(state_finish(st1), 0);
	assert_int_equal(state_finish(st2), 0);
	assert_int_equal(id_of(st1, lo), h);
	assert_int_equal(id_of(st1, hi), h + 1);
	assert_int_equal(id_of(st2, lo), h);
	assert_int_equal(id_of(st2, hi), h + 1);
	assert_string_equal(state_find_id(st2, h + 1)->name, lo == n1 ? name2 : name1);
	state_free(st1);
	state_free(st2);
}

static void test_find_vip(void **unused)
{
	struct state *st = state_new();
	struct state_service a = svc_make("shop", "checkout", "grpc", 9000, "10.96.5.5");
	struct state_service b = svc_make("default", "greeter", "", 50051, "10.96.0.10");
	struct h2s_ip ip;

	(void)unused;
	assert_int_equal(h2s_ip_parse(&a.vips[1], "fd00:10:96::5"), 0);
	a.n_vips = 2;
	assert_int_equal(state_add_service(st, &a), 0);
	assert_int_equal(state_add_service(st, &b), 0);
	assert_int_equal(state_finish(st), 0);

	assert_int_equal(h2s_ip_parse(&ip, "10.96.5.5"), 0);
	assert_string_equal(state_find_vip(st, &ip, 9000)->name, "checkout");
	assert_null(state_find_vip(st, &ip, 9001));
	assert_int_equal(h2s_ip_parse(&ip, "fd00:10:96::5"), 0);
	assert_string_equal(state_find_vip(st, &ip, 9000)->name, "checkout");
	assert_int_equal(h2s_ip_parse(&ip, "10.96.0.10"), 0);
	assert_string_equal(state_find_vip(st, &ip, 50051)->name, "greeter");
	assert_int_equal(h2s_ip_parse(&ip, "10.96.0.11"), 0);
	assert_null(state_find_vip(st, &ip, 50051));
	state_free(st);
}

static void test_empty_state(void **unused)
{
	struct state *st = state_new();
	struct h2s_ip ip;

	(void)unused;
	assert_int_equal(state_finish(st), 0);
	assert_int_equal(h2s_ip_parse(&ip, "10.0.0.1"), 0);
	assert_null(state_find_vip(st, &ip, 80));
	assert_null(state_find_id(st, 1));
	state_free(st);
	state_free(NULL);
}

static void test_deep_copy_and_endpoint_order(void **unused)
{
	struct state *st = state_new();
	struct state_service s = svc_make("default", "greeter", "", 50051, "10.96.0.10");
	struct state_endpoint eps[3] = {0};

	(void)unused;
	assert_int_equal(h2s_ip_parse(&eps[0].ip, "10.244.2.7"), 0);
	assert_int_equal(h2s_ip_parse(&eps[1].ip, "fd00::7"), 0);
	assert_int_equal(h2s_ip_parse(&eps[2].ip, "10.244.1.5"), 0);
	for (int i = 0; i < 3; i++)
		eps[i].port = 8080;
	s.eps = eps;
	s.n_eps = 3;
	assert_int_equal(state_add_service(st, &s), 0);
	memset(eps, 0xff, sizeof(eps)); /* the caller's copy is not the state's */
	assert_int_equal(state_finish(st), 0);
	assert_int_equal(st->svcs[0].n_eps, 3);
	{
		char buf[INET6_ADDRSTRLEN];

		assert_string_equal(h2s_ip_str(&st->svcs[0].eps[0].ip, buf, sizeof(buf)),
				    "10.244.1.5");
		assert_string_equal(h2s_ip_str(&st->svcs[0].eps[1].ip, buf, sizeof(buf)),
				    "10.244.2.7");
		assert_string_equal(h2s_ip_str(&st->svcs[0].eps[2].ip, buf, sizeof(buf)),
				    "fd00::7");
	}
	assert_int_equal(st->svcs[0].eps[0].port, 8080);
	state_free(st);
}

static void test_endpoint_usable(void **unused)
{
	struct state_endpoint ready = {.ready = true, .serving = true};
	struct state_endpoint draining = {.ready = false, .serving = true, .terminating = true};
	struct state_endpoint gone = {.ready = false, .serving = false, .terminating = true};
	struct state_endpoint not_ready = {.ready = false, .serving = false};
	/* publishNotReadyAddresses: ready stays true while terminating. */
	struct state_endpoint forced = {.ready = true, .serving = true, .terminating = true};

	(void)unused;
	assert_true(state_endpoint_usable(&ready));
	assert_false(state_endpoint_usable(&draining));
	assert_false(state_endpoint_usable(&gone));
	assert_false(state_endpoint_usable(&not_ready));
	assert_false(state_endpoint_usable(&forced));
	assert_true(state_endpoint_fallback(&draining));
	assert_false(state_endpoint_fallback(&gone));
	assert_false(state_endpoint_fallback(&ready));
}

/* A Service that leaves the desired state stays, retired, under the id its
 * connections carry: found by id, never by VIP, until |keep_ms| have passed. */
static void test_carry_retired(void **unused)
{
	struct state *prev = state_new(), *next = state_new(), *later = state_new();
	struct state_service a = svc_make("default", "greeter", "grpc", 50051, "10.96.0.10");
	struct state_service b = svc_make("shop", "checkout", "grpc", 9000, "10.96.5.5");
	struct h2s_ip vip;
	const struct state_service *r;
	uint32_t id_b;

	(void)unused;
	assert_int_equal(state_add_service(prev, &a), 0);
	assert_int_equal(state_add_service(prev, &b), 0);
	assert_int_equal(state_finish(prev), 0);
	id_b = state_find_vip(prev, &b.vips[0], 9000)->id;

	/* checkout opted out: only greeter is desired; checkout retires at 1000. */
	assert_int_equal(state_add_service(next, &a), 0);
	assert_int_equal(state_finish(next), 0);
	assert_int_equal(state_carry_retired(next, prev, 1000, 30000), 1);
	assert_int_equal(next->n_svcs, 2);
	assert_int_equal(next->n_retired, 1);
	r = state_find_id(next, id_b);
	assert_non_null(r);
	assert_int_equal(r->retired_ms, 1000);
	assert_string_equal(r->name, "checkout");
	assert_int_equal(h2s_ip_parse(&vip, "10.96.5.5"), 0);
	assert_null(state_find_vip(next, &vip, 9000));
	assert_int_equal(state_oldest_retired(next), 1000);

	/* Carried on while younger than keep_ms, with the time it retired. */
	assert_int_equal(state_add_service(later, &a), 0);
	assert_int_equal(state_finish(later), 0);
	assert_int_equal(state_carry_retired(later, next, 30999, 30000), 1);
	assert_int_equal(state_find_id(later, id_b)->retired_ms, 1000);
	state_free(later);
	later = state_new();
	assert_int_equal(state_add_service(later, &a), 0);
	assert_int_equal(state_finish(later), 0);
	assert_int_equal(state_carry_retired(later, next, 31000, 30000), 0);
	assert_null(state_find_id(later, id_b));
	assert_int_equal(state_oldest_retired(later), 0);
	state_free(later);

	/* Back in: desired again under its own id, nothing retired. */
	later = state_new();
	assert_int_equal(state_add_service(later, &a), 0);
	assert_int_equal(state_add_service(later, &b), 0);
	assert_int_equal(state_finish(later), 0);
	assert_int_equal(state_carry_retired(later, next, 2000, 30000), 0);
	assert_int_equal(state_find_id(later, id_b)->retired_ms, 0);
	assert_int_equal(later->n_retired, 0);

	state_free(prev);
	state_free(next);
	state_free(later);
}

/* Two or more leave at once: each lookup of the next id happens while the
 * state already holds the ones carried so far (past its index). */
static void test_carry_retired_several(void **unused)
{
	struct state *prev = state_new(), *next = state_new();
	struct state_service s[4] = {
	    svc_make("default", "greeter", "grpc", 50051, "10.96.0.10"),
	    svc_make("shop", "checkout", "grpc", 9000, "10.96.5.5"),
	    svc_make("shop", "cart", "grpc", 9001, "10.96.5.6"),
	    svc_make("shop", "pay", "grpc", 9002, "10.96.5.7"),
	};
	uint32_t ids[4];

	(void)unused;
	for (int i = 0; i < 4; i++)
		assert_int_equal(state_add_service(prev, &s[i]), 0);
	assert_int_equal(state_finish(prev), 0);
	for (int i = 0; i < 4; i++)
		ids[i] = state_find_vip(prev, &s[i].vips[0], s[i].port)->id;
	assert_int_equal(state_add_service(next, &s[0]), 0);
	assert_int_equal(state_finish(next), 0);
	assert_int_equal(state_carry_retired(next, prev, 1000, 30000), 3);
	assert_int_equal(next->n_svcs, 4);
	assert_int_equal(next->n_retired, 3);
	assert_int_equal(state_find_id(next, ids[0])->retired_ms, 0);
	for (int i = 1; i < 4; i++)
		assert_int_equal(state_find_id(next, ids[i])->retired_ms, 1000);
	state_free(prev);
	state_free(next);
}

static void test_ip_helpers(void **unused)
{
	char buf[INET6_ADDRSTRLEN];
	struct h2s_ip ip, ip2;
	struct in_addr a = {.s_addr = htonl(0x0a000001)};

	(void)unused;
	assert_int_equal(h2s_ip_parse(&ip, "10.0.0.1"), 0);
	assert_true(h2s_ip_is_v4(&ip));
	h2s_ip_from_v4(&ip2, a);
	assert_memory_equal(&ip, &ip2, sizeof(ip));
	assert_string_equal(h2s_ip_str(&ip, buf, sizeof(buf)), "10.0.0.1");
	assert_int_equal(h2s_ip_parse(&ip, "::ffff:10.0.0.1"), 0);
	assert_memory_equal(&ip, &ip2, sizeof(ip));
	assert_int_equal(h2s_ip_parse(&ip, "fd00:10:96::5"), 0);
	assert_false(h2s_ip_is_v4(&ip));
	assert_string_equal(h2s_ip_str(&ip, buf, sizeof(buf)), "fd00:10:96::5");
	assert_int_equal(h2s_ip_parse(&ip, "10.0.0.256"), -EINVAL);
	assert_int_equal(h2s_ip_parse(&ip, "None"), -EINVAL);
	assert_int_equal(h2s_ip_parse(&ip, ""), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sorted_and_ids),
	    cmocka_unit_test(test_collision_probed_and_stable),
	    cmocka_unit_test(test_find_vip),
	    cmocka_unit_test(test_empty_state),
	    cmocka_unit_test(test_deep_copy_and_endpoint_order),
	    cmocka_unit_test(test_endpoint_usable),
	    cmocka_unit_test(test_carry_retired),
	    cmocka_unit_test(test_carry_retired_several),
	    cmocka_unit_test(test_ip_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
