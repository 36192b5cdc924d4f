// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for grpc.c: grpc-timeout parsing and formatting (units,
 * rounding up, saturation, bad input), content-type detection, the
 * RST_STREAM and HTTP status mappings of gRPC's PROTOCOL-HTTP2.md, and the
 * Trailers-Only responses the splitter makes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/h2/grpc.h"

static int parse(const char *s, uint64_t *ns)
{
	const char *err = NULL;
	int rv = grpc_timeout_parse((const uint8_t *)s, strlen(s), ns, &err);

	if (rv)
		assert_non_null(err);
	return rv;
}

static void test_timeout_parse(void **state)
{
	uint64_t ns;

	(void)state;
	assert_int_equal(parse("1H", &ns), 0);
	assert_true(ns == 3600ull * 1000000000ull);
	assert_int_equal(parse("2M", &ns), 0);
	assert_true(ns == 120ull * 1000000000ull);
	assert_int_equal(parse("3S", &ns), 0);
	assert_true(ns == 3000000000ull);
	assert_int_equal(parse("250m", &ns), 0);
	assert_true(ns == 250000000ull);
	assert_int_equal(parse("7u", &ns), 0);
	assert_true(ns == 7000ull);
	assert_int_equal(parse("99999999n", &ns), 0);
	assert_true(ns == 99999999ull);
	assert_int_equal(parse("0m", &ns), 0);
	assert_true(ns == 0);
	/* 8 digits of hours overflow nanoseconds: saturate, never wrap. */
	assert_int_equal(parse("99999999H", &ns), 0);
	assert_true(ns == UINT64_MAX);
}

static void test_timeout_parse_bad(void **state)
{
	uint64_t ns;

	(void)state;
	assert_int_equal(parse("", &ns), -EINVAL);
	assert_int_equal(parse("S", &ns), -EINVAL);
	assert_int_equal(parse("10", &ns), -EINVAL);
	assert_int_equal(parse("10s", &ns), -EINVAL);
	assert_int_equal(parse("1 S", &ns), -EINVAL);
	assert_int_equal(parse("-1S", &ns), -EINVAL);
	assert_int_equal(parse("123456789S", &ns), -EINVAL); /* 9 digits */
}

static void test_timeout_format(void **state)
{
	char buf[16];
	uint64_t back;

	(void)state;
	assert_int_equal(grpc_timeout_format(5, buf, sizeof(buf)), 2);
	assert_string_equal(buf, "5n");
	grpc_timeout_format(99999999ull, buf, sizeof(buf));
	assert_string_equal(buf, "99999999n");
	grpc_timeout_format(100000000ull, buf, sizeof(buf));
	assert_string_equal(buf, "100000u");
	/* Rounds up so the deadline never shrinks. */
	grpc_timeout_format(100000001ull, buf, sizeof(buf));
	assert_string_equal(buf, "100001u");
	grpc_timeout_format(3600ull * 1000000000ull * 24, buf, sizeof(buf));
	assert_int_equal(parse(buf, &back), 0);
	assert_true(back >= 3600ull * 1000000000ull * 24);
	grpc_timeout_format(UINT64_MAX, buf, sizeof(buf));
	assert_int_equal(parse(buf, &back), 0);
	assert_true(strlen(buf) <= 9);
}

static int is_ct(const char *s)
{
	return grpc_is_content_type((const uint8_t *)s, strlen(s));
}

static void test_content_type(void **state)
{
	(void)state;
	assert_true(is_ct("application/grpc"));
	assert_true(is_ct("application/grpc+proto"));
	assert_true(is_ct("application/grpc+json"));
	assert_true(is_ct("application/grpc;charset=utf-8"));
	assert_true(is_ct("Application/GRPC"));
	assert_false(is_ct("application/grpc-web"));
	assert_false(is_ct("application/grpcx"));
	assert_false(is_ct("application/json"));
	assert_false(is_ct("application/grp"));
	assert_false(is_ct(""));
}

static void test_rst_mapping(void **state)
{
	(void)state;
	assert_int_equal(grpc_status_from_rst(NGHTTP2_NO_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_PROTOCOL_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_INTERNAL_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_FLOW_CONTROL_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_SETTINGS_TIMEOUT), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_FRAME_SIZE_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_REFUSED_STREAM), GRPC_UNAVAILABLE);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_CANCEL), GRPC_CANCELLED);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_COMPRESSION_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_CONNECT_ERROR), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_ENHANCE_YOUR_CALM), GRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(grpc_status_from_rst(NGHTTP2_INADEQUATE_SECURITY), GRPC_PERMISSION_DENIED);
}

static void test_http_mapping(void **state)
{
	(void)state;
	assert_int_equal(grpc_status_from_http(400), GRPC_INTERNAL);
	assert_int_equal(grpc_status_from_http(401), GRPC_UNAUTHENTICATED);
	assert_int_equal(grpc_status_from_http(403), GRPC_PERMISSION_DENIED);
	assert_int_equal(grpc_status_from_http(404), GRPC_UNIMPLEMENTED);
	assert_int_equal(grpc_status_from_http(429), GRPC_UNAVAILABLE);
	assert_int_equal(grpc_status_from_http(502), GRPC_UNAVAILABLE);
	assert_int_equal(grpc_status_from_http(503), GRPC_UNAVAILABLE);
	assert_int_equal(grpc_status_from_http(504), GRPC_UNAVAILABLE);
	assert_int_equal(grpc_status_from_http(500), GRPC_UNKNOWN);
}

static void assert_nv(const nghttp2_nv *nv, const char *name, const char *value)
{
	assert_int_equal(nv->namelen, strlen(name));
	assert_memory_equal(nv->name, name, nv->namelen);
	assert_int_equal(nv->valuelen, strlen(value));
	assert_memory_equal(nv->value, value, nv->valuelen);
}

static void test_trailers_only(void **state)
{
	struct grpc_trailers_only t;

	(void)state;
	assert_int_equal(
	    grpc_trailers_only_build(&t, GRPC_UNAVAILABLE,
				     "h2split: no ready endpoint for default/echo:grpc"),
	    4);
	assert_nv(&t.nv[0], ":status", "200");
	assert_nv(&t.nv[1], "content-type", "application/grpc");
	assert_nv(&t.nv[2], "grpc-status", "14");
	assert_nv(&t.nv[3], "grpc-message", "h2split: no ready endpoint for default/echo:grpc");
	/* The trailers alone, for a response whose headers went out already. */
	assert_ptr_equal(GRPC_TRAILERS(&t), &t.nv[2]);
	grpc_trailers_only_build(&t, GRPC_DEADLINE_EXCEEDED, NULL);
	assert_nv(&t.nv[2], "grpc-status", "4");
	assert_nv(&t.nv[3], "grpc-message", "");
}

static void test_message_encode(void **state)
{
	char buf[16];

	(void)state;
	grpc_message_encode("a%b\n\xc3\xa9", buf, sizeof(buf));
	assert_string_equal(buf, "a%25b%0A%C3%A9");
	/* Truncation never splits an escape. */
	assert_int_equal(grpc_message_encode("abcdefghijklm%", buf, sizeof(buf)), 13);
	assert_string_equal(buf, "abcdefghijklm");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timeout_parse),  cmocka_unit_test(test_timeout_parse_bad),
	    cmocka_unit_test(test_timeout_format), cmocka_unit_test(test_content_type),
	    cmocka_unit_test(test_rst_mapping),	   cmocka_unit_test(test_http_mapping),
	    cmocka_unit_test(test_trailers_only),  cmocka_unit_test(test_message_encode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
