// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for health.c: the shared verdict table (mark, clear, reuse of
 * cleared slots, full table) and the hand-encoded grpc.health.v1 messages
 * (bytes as protoc would write them, and malformed responses refused), the
 * verdict rules, and the checker thread against loopback sockets: endpoints
 * that never answer do not hold up the verdict on one that refuses. The
 * probe's gRPC exchange runs against real grpcio servers in
 * test_balancing.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "balancer/health.h"
#include "base/loop.h"
#include "base/registry.h"

static struct h2s_ip ip(const char *s)
{
	struct h2s_ip a;

	assert_int_equal(h2s_ip_parse(&a, s), 0);
	return a;
}

static void test_table(void **state)
{
	struct health_table *t = health_table_new();
	struct h2s_ip a = ip("10.0.0.1"), b = ip("fd00::2");

	(void)state;
	assert_non_null(t);
	assert_false(health_table_unhealthy(NULL, 1, &a, 80));
	assert_false(health_table_unhealthy(t, 1, &a, 80));
	assert_int_equal(health_table_set(t, 1, &a, 80, true), 0);
	assert_int_equal(health_table_set(t, 1, &a, 80, true), 0); /* idempotent */
	assert_true(health_table_unhealthy(t, 1, &a, 80));
	/* Keyed by service, address and port. */
	assert_false(health_table_unhealthy(t, 2, &a, 80));
	assert_false(health_table_unhealthy(t, 1, &a, 81));
	assert_false(health_table_unhealthy(t, 1, &b, 80));
	assert_int_equal(health_table_set(t, 1, &b, 80, true), 0);
	assert_int_equal(health_table_set(t, 1, &a, 80, false), 0);
	assert_false(health_table_unhealthy(t, 1, &a, 80));
	assert_true(health_table_unhealthy(t, 1, &b, 80));
	assert_int_equal(health_table_set(t, 9, &a, 80, false), 0); /* never marked: fine */
	health_table_free(t);
}

/* Marking and clearing far more endpoints than slots reuses cleared ones;
 * with every slot taken, one more is refused rather than lost. */
static void test_table_bounded(void **state)
{
	struct health_table *t = health_table_new();
	struct h2s_ip a = ip("10.0.0.1");

	(void)state;
	for (uint32_t i = 1; i <= 3 * HEALTH_TABLE_SLOTS; i++) {
		assert_int_equal(health_table_set(t, i, &a, 80, true), 0);
		assert_int_equal(health_table_set(t, i, &a, 80, false), 0);
	}
	for (uint32_t i = 1; i <= HEALTH_TABLE_SLOTS; i++)
		assert_int_equal(health_table_set(t, i, &a, 443, true), 0);
	assert_int_equal(health_table_set(t, 0, &a, 443, true), -ENOSPC);
	assert_true(health_table_unhealthy(t, 77, &a, 443));
	assert_false(health_table_unhealthy(t, 77, &a, 80));
	health_table_free(t);
}

static void test_encode_request(void **state)
{
	uint8_t buf[300];
	char longname[201];

	(void)state;
	/* HealthCheckRequest{} (the server as a whole): an empty message. */
	assert_int_equal(health_encode_request("", buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "\0\0\0\0\0", 5);
	assert_int_equal(health_encode_request(NULL, buf, sizeof(buf)), 5);
	/* {service: "echo"}: field 1, length 4. */
	assert_int_equal(health_encode_request("echo", buf, sizeof(buf)), 11);
	assert_memory_equal(buf,
			    "\0\0\0\0\x06\x0a\x04"
			    "echo",
			    11);
	/* 200 bytes: a two-byte length varint (0xc8 0x01). */
	memset(longname, 'x', 200);
	longname[200] = 0;
	assert_int_equal(health_encode_request(longname, buf, sizeof(buf)), 5 + 3 + 200);
	assert_memory_equal(buf, "\0\0\0\0\xcb\x0a\xc8\x01", 8);
	assert_int_equal(health_encode_request(longname, buf, 100), -ENOSPC);
}

static void test_parse_response(void **state)
{
	(void)state;
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\x02\x08\x01", 7), 1);
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\x02\x08\x02", 7), 2);
	/* Empty message: status absent, UNKNOWN (0) as proto3 says. */
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\0", 5), 0);
	/* Unknown fields of every wire type are skipped. */
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\x0b\x12\x02hi\x08\x01"
								"\x1d\x01\x02\x03\x04",
					       16),
			 1);
	/* Refused: compressed, truncated, bad length, group wire type. */
	assert_int_equal(health_parse_response((const uint8_t *)"\x01\0\0\0\x02\x08\x01", 7),
			 -EINVAL);
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0", 3), -EINVAL);
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\x05\x08\x01", 7),
			 -EINVAL);
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\x02\x08\x81", 7),
			 -EINVAL);
	assert_int_equal(health_parse_response((const uint8_t *)"\0\0\0\0\x02\x0b\x01", 7),
			 -EINVAL);
}

/* Failures take an endpoint out at once, NOT_SERVING too; only
 * HEALTH_OK_THRESHOLD SERVING answers in a row bring it back. */
static void test_verdict(void **state)
{
	bool bad = false;
	uint32_t oks = 0;

	(void)state;
	assert_int_equal(health_verdict(&bad, &oks, 1), HEALTH_SAME);
	assert_false(bad);
	assert_int_equal(health_verdict(&bad, &oks, 2), HEALTH_TURNED_UNHEALTHY); /* NOT_SERVING */
	assert_true(bad);
	assert_int_equal(health_verdict(&bad, &oks, -ETIMEDOUT), HEALTH_SAME);
	for (int i = 1; i < HEALTH_OK_THRESHOLD; i++)
		assert_int_equal(health_verdict(&bad, &oks, 1), HEALTH_SAME);
	assert_true(bad);
	/* A failure in between starts the count again. */
	assert_int_equal(health_verdict(&bad, &oks, 0), HEALTH_SAME); /* UNKNOWN */
	for (int i = 1; i < HEALTH_OK_THRESHOLD; i++)
		assert_int_equal(health_verdict(&bad, &oks, 1), HEALTH_SAME);
	assert_int_equal(health_verdict(&bad, &oks, 1), HEALTH_TURNED_HEALTHY);
	assert_false(bad);
	assert_int_equal(oks, 0);
	assert_int_equal(health_verdict(&bad, &oks, -ECONNREFUSED), HEALTH_TURNED_UNHEALTHY);
}

/* ---- the checker thread on loopback ---- */

#define HOLES 8

static struct snapshot *the_snapshot(void *arg)
{
	return registry_snapshot_ref(arg);
}

/* A listener on 127.0.0.1 that never accepts: the kernel completes the
 * handshake, nobody answers the probe, it runs into its timeout. */
static int hole(uint16_t *port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* The ms until |t| says |ip|:|port| of service |id| is unhealthy. */
static uint64_t wait_unhealthy(struct health_table *t, uint32_t id, const struct h2s_ip *a,
			       uint16_t port, uint64_t since_ms)
{
	const struct timespec poll_gap = {.tv_nsec = 5000000};
	uint64_t deadline = since_ms + 30000;

	while (!health_table_unhealthy(t, id, a, port)) {
		assert_true(loop_now_ms() < deadline);
		nanosleep(&poll_gap, NULL);
	}
	return loop_now_ms() - since_ms;
}

/* HOLES endpoints that never answer sort before one that refuses. Probed
 * one after another, the refusing one would wait for HOLES timeouts; run
 * at once, its verdict comes first, and every hole's within about one
 * timeout of the start, not HOLES of them. */
static void test_checker_runs_probes_at_once(void **state)
{
	struct health_table *t = health_table_new();
	struct state_endpoint eps[HOLES + 1] = {0};
	struct state_service svc = {.ns = "default", .name = "checked", .health_check = true};
	struct state *st = state_new();
	struct health_checker *hc;
	struct snapshot *snap;
	int fds[HOLES];
	uint64_t start, refused_ms, holes_ms = 0;

	(void)state;
	assert_non_null(t);
	assert_non_null(st);
	for (int i = 0; i < HOLES; i++) {
		fds[i] = hole(&eps[i].port);
		eps[i].ip = ip("127.0.0.1");
	}
	eps[HOLES].ip = ip("127.0.0.2"); /* sorts last; nothing listens there */
	eps[HOLES].port = eps[0].port;
	svc.eps = eps;
	svc.n_eps = HOLES + 1;
	assert_int_equal(state_add_service(st, &svc), 0);
	assert_int_equal(state_finish(st), 0);
	snap = registry_snapshot_new(st, 1);
	assert_non_null(snap);
	svc.id = snap->st->svcs[0].id;

	start = loop_now_ms();
	hc = health_checker_start(t, the_snapshot, snap);
	assert_non_null(hc);
	refused_ms = wait_unhealthy(t, svc.id, &eps[HOLES].ip, eps[HOLES].port, start);
	for (int i = 0; i < HOLES; i++) {
		uint64_t ms = wait_unhealthy(t, svc.id, &eps[i].ip, eps[i].port, start);

		holes_ms = ms > holes_ms ? ms : holes_ms;
	}
	/* One after another, the last hole could not be judged before HOLES
	 * timeouts had passed, nor the refusing endpoint behind it. */
	assert_true(refused_ms < (uint64_t)HOLES * HEALTH_TIMEOUT_MS);
	assert_true(holes_ms < (uint64_t)HOLES * HEALTH_TIMEOUT_MS);
	/* Stopping with probes of the holes in flight ends them. */
	health_checker_stop(hc);
	registry_snapshot_unref(snap);
	for (int i = 0; i < HOLES; i++)
		close(fds[i]);
	health_table_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_table_bounded),
	    cmocka_unit_test(test_encode_request),
	    cmocka_unit_test(test_parse_response),
	    cmocka_unit_test(test_verdict),
	    cmocka_unit_test(test_checker_runs_probes_at_once),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
