// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for h2_headers.c: which fields a proxy must not forward
 * (hop-by-hop; te only as "trailers"), and header blocks: order, NO_INDEX
 * kept, lookups, nv export, and the field and byte limits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/h2/h2_headers.h"

static bool hop(const char *n, const char *v)
{
	return h2_header_is_hop_by_hop((const uint8_t *)n, strlen(n), (const uint8_t *)v,
				       strlen(v));
}

static void test_hop_by_hop(void **state)
{
	(void)state;
	assert_true(hop("connection", "close"));
	assert_true(hop("keep-alive", "timeout=5"));
	assert_true(hop("proxy-connection", "keep-alive"));
	assert_true(hop("transfer-encoding", "chunked"));
	assert_true(hop("upgrade", "h2c"));
	assert_true(hop("te", "gzip"));
	assert_true(hop("te", "trailers, gzip"));
	assert_false(hop("te", "trailers"));
	/* What gRPC needs goes through untouched. */
	assert_false(hop(":path", "/echo.Echo/Unary"));
	assert_false(hop(":authority", "echo.default.svc:50051"));
	assert_false(hop("content-type", "application/grpc"));
	assert_false(hop("grpc-timeout", "1S"));
	assert_false(hop("grpc-status", "0"));
	assert_false(hop("x-connection", "1"));
	assert_false(hop("host", "example"));
	assert_false(hop("content-length", "5"));
}

static int add(struct h2_hdrs *h, const char *n, const char *v, uint8_t flags)
{
	return h2_hdrs_add(h, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v), flags);
}

static void test_block(void **state)
{
	struct h2_hdrs h;
	nghttp2_nv nv[8];
	const uint8_t *v;
	size_t vl;

	(void)state;
	h2_hdrs_init(&h);
	assert_int_equal(add(&h, ":method", "POST", 0), 0);
	assert_int_equal(add(&h, ":path", "/echo.Echo/Unary", 0), 0);
	assert_int_equal(add(&h, "authorization", "secret", NGHTTP2_NV_FLAG_NO_INDEX), 0);
	assert_int_equal(add(&h, "x-empty", "", 0), 0);
	assert_int_equal(h.n, 4);
	v = h2_hdrs_get(&h, ":path", &vl);
	assert_non_null(v);
	assert_memory_equal(v, "/echo.Echo/Unary", vl);
	assert_null(h2_hdrs_get(&h, "missing", &vl));
	assert_int_equal(h2_hdrs_to_nv(&h, nv, 3), 0); /* too small */
	assert_int_equal(h2_hdrs_to_nv(&h, nv, 8), 4);
	assert_memory_equal(nv[0].name, ":method", nv[0].namelen);
	assert_memory_equal(nv[2].value, "secret", nv[2].valuelen);
	assert_int_equal(nv[2].flags, NGHTTP2_NV_FLAG_NO_INDEX);
	assert_int_equal(nv[1].flags, 0);
	assert_int_equal(nv[3].valuelen, 0);
	h2_hdrs_clear(&h);
	assert_int_equal(h.n, 0);
	assert_int_equal(add(&h, "a", "b", 0), 0); /* reusable */
	h2_hdrs_clear(&h);
}

/* Reset keeps a small arena (a pooled stream reuses it) and frees a big one;
 * the limits count from zero again either way. */
static void test_reset(void **state)
{
	static char big[4096];
	struct h2_hdrs h;
	const char *buf;
	size_t vl;

	(void)state;
	h2_hdrs_init(&h);
	assert_int_equal(add(&h, ":path", "/a", 0), 0);
	buf = h.buf;
	h2_hdrs_reset(&h);
	assert_int_equal(h.n, 0);
	assert_int_equal(h.list_size, 0);
	assert_ptr_equal(h.buf, buf);
	assert_null(h2_hdrs_get(&h, ":path", &vl));
	assert_int_equal(add(&h, ":path", "/b", 0), 0);
	assert_memory_equal(h2_hdrs_get(&h, ":path", &vl), "/b", 2);
	memset(big, 'x', sizeof(big) - 1);
	assert_int_equal(add(&h, "big", big, 0), 0);
	h2_hdrs_reset(&h);
	assert_null(h.buf);
	assert_null(h.ents);
	h2_hdrs_clear(&h);
}

static void test_limits(void **state)
{
	static char big[H2_HDRS_MAX_BYTES];
	struct h2_hdrs h;
	char name[16];

	(void)state;
	h2_hdrs_init(&h);
	for (int i = 0; i < H2_HDRS_MAX_FIELDS; i++) {
		snprintf(name, sizeof(name), "x-%d", i);
		assert_int_equal(add(&h, name, "v", 0), 0);
	}
	assert_int_equal(add(&h, "one-more", "v", 0), -E2BIG);
	h2_hdrs_clear(&h);
	memset(big, 'a', sizeof(big) - 1);
	big[H2_HDRS_MAX_BYTES - 64] = '\0';
	assert_int_equal(add(&h, "big", big, 0), 0);
	assert_int_equal(add(&h, "more", "0123456789012345678901234567890123456789", 0), -E2BIG);
	h2_hdrs_clear(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hop_by_hop),
	    cmocka_unit_test(test_block),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
