// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for h2_stream_ids.c: a HEADERS frame on a client stream id
 * below the highest one used is a connection error only when the client
 * skipped that id (RFC 9113 5.1.1); trailers and late frames on ids it did
 * use pass, and the kept ranges are bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

#include <cmocka.h>

#include "proxy/h2/h2_stream_ids.h"

static void test_in_order(void **state)
{
	struct h2_stream_ids t = {0};

	(void)state;
	for (uint32_t id = 1; id < 200; id += 2)
		assert_int_equal(h2_stream_ids_headers(&t, id), 0);
	assert_int_equal(t.n_gaps, 0);
	/* Every lower id was opened: trailers, or a late HEADERS on a stream
	 * we reset, which must not end the connection. */
	assert_int_equal(h2_stream_ids_headers(&t, 199), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 1), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 101), 0);
}

static void test_skipped_ids(void **state)
{
	struct h2_stream_ids t = {0};

	(void)state;
	/* The h2spec case: 5 first, then 3 (never opened). */
	assert_int_equal(h2_stream_ids_headers(&t, 5), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 3), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 1), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 5), 0);
	/* A gap in the middle: 7 and 9 opened, 11..15 skipped, then 17. */
	assert_int_equal(h2_stream_ids_headers(&t, 7), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 9), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 17), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 13), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 11), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 15), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 9), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 7), 0);
	/* Even ids and 0 are nghttp2's business. */
	assert_int_equal(h2_stream_ids_headers(&t, 4), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 0), 0);
	assert_int_equal(t.max, 17);
}

static void test_last_id(void **state)
{
	struct h2_stream_ids t = {0};

	(void)state;
	/* The stream-ids attack: 2^31-1 first, then a lower id. */
	assert_int_equal(h2_stream_ids_headers(&t, 0x7fffffff), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 5), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 0x7ffffffd), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, 0x7fffffff), 0);
}

static void test_bounded(void **state)
{
	struct h2_stream_ids t = {0};

	(void)state;
	/* Skip one id before each of 1, 5, 9, ...: one range per skip. */
	for (uint32_t id = 3; id < 3 + 4 * (H2_IDS_GAPS + 2); id += 4)
		assert_int_equal(h2_stream_ids_headers(&t, id), 0);
	assert_int_equal(t.n_gaps, H2_IDS_GAPS);
	/* The newest ranges are kept; the oldest are left to nghttp2. */
	assert_int_equal(h2_stream_ids_headers(&t, 1), 0);
	assert_int_equal(h2_stream_ids_headers(&t, 5), 0);
	assert_int_equal(h2_stream_ids_headers(&t, t.max - 2), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, t.max - 2 - 4 * (H2_IDS_GAPS - 1)), -EPROTO);
	assert_int_equal(h2_stream_ids_headers(&t, t.max), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_in_order),
	    cmocka_unit_test(test_skipped_ids),
	    cmocka_unit_test(test_last_id),
	    cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
