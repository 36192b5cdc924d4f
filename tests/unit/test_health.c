// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for health.c: the shared verdict table (mark, clear, reuse of
 * cleared slots, full table) and the hand-encoded grpc.health.v1 messages
 * (bytes as protoc would write them, and malformed responses refused). The
 * probe itself runs against real grpcio servers in test_balancing.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>

#include <cmocka.h>

#include "health.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_table_bounded),
	    cmocka_unit_test(test_encode_request),
	    cmocka_unit_test(test_parse_response),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
