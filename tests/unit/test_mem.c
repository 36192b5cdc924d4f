// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for h2_mem.c: nghttp2's allocator hands chunks back from its
 * size-class lists (not under ASan, which sees every free), keeps contents
 * across realloc, zeroes calloc, sends big sizes to malloc (ending the ones
 * with a long untouched tail on a page boundary), and an nghttp2
 * session runs on it from creation to deletion with nothing left live.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/h2/h2_mem.h"

static void *m_alloc(struct h2_mem *m, size_t n)
{
	return m->mem.malloc(n, m->mem.mem_user_data);
}

static void m_free(struct h2_mem *m, void *p)
{
	m->mem.free(p, m->mem.mem_user_data);
}

static void test_classes(void **state)
{
	struct h2_mem m;
	uint8_t *a, *b, *big;

	(void)state;
	h2_mem_init(&m);
	a = m_alloc(&m, 100);
	assert_non_null(a);
	memset(a, 0xab, 100);
	m_free(&m, a);
	b = m_alloc(&m, 120); /* same 64-byte class as 100 */
#if !defined(__SANITIZE_ADDRESS__)
	assert_ptr_equal(a, b);
	assert_int_equal(m.n_free[1], 0);
#endif
	/* realloc within the class stays put; past it, the bytes move along. */
	memset(b, 0x5a, 120);
	assert_ptr_equal(m.mem.realloc(b, 128, &m), b);
	b = m.mem.realloc(b, 3000, &m);
	assert_non_null(b);
	for (int i = 0; i < 120; i++)
		assert_int_equal(b[i], 0x5a);
	big = m_alloc(&m, 64 * 1024);
	assert_non_null(big);
	memset(big, 1, 64 * 1024);
	m_free(&m, big);
	m_free(&m, b);
	a = m.mem.calloc(10, 30, &m);
	for (int i = 0; i < 300; i++)
		assert_int_equal(a[i], 0);
	m_free(&m, a);
	m_free(&m, NULL);
	assert_int_equal(m.n_live, 0);
	h2_mem_fini(&m);
	for (int i = 0; i < H2_MEM_CLASSES; i++)
		assert_int_equal(m.n_free[i], 0);
}

/* A list keeps at most H2_MEM_KEEP_BYTES; the rest goes back to malloc. */
static void test_keep_cap(void **state)
{
	enum { N = H2_MEM_KEEP_BYTES / H2_MEM_CLASS_SIZE + 10 };
	static void *p[N];
	struct h2_mem m;

	(void)state;
	h2_mem_init(&m);
	for (int i = 0; i < N; i++)
		p[i] = m_alloc(&m, 10);
	for (int i = 0; i < N; i++)
		m_free(&m, p[i]);
	assert_true(m.n_free[0] <= H2_MEM_KEEP_BYTES / H2_MEM_CLASS_SIZE);
	assert_int_equal(m.n_live, 0);
	h2_mem_fini(&m);
}

/* A big chunk (a session's frame buffer) ends on the first page boundary at
 * or past its last byte, so its untouched tail shares no page with the next
 * allocation; it is whole and its bytes move along on realloc. */
static void test_big_page_end(void **state)
{
	const size_t sizes[] = {H2_MEM_PAGE_END_MIN, 16394, 16384 + 4096 - 7, 100000};
	struct h2_mem m;

	(void)state;
	h2_mem_init(&m);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t *p = m_alloc(&m, sizes[i]), *q;

		assert_non_null(p);
		memset(p, (int)i + 1, sizes[i]);
#if !defined(__SANITIZE_ADDRESS__)
		{
			uintptr_t end = (uintptr_t)p + sizes[i];
			uintptr_t page_end =
			    (end + H2_MEM_PAGE_SIZE - 1) & ~(uintptr_t)(H2_MEM_PAGE_SIZE - 1);
			uint8_t *chunk = p - 16; /* h2_mem's chunk header */
			uintptr_t usable_end = (uintptr_t)chunk + malloc_usable_size(chunk);

			assert_true(usable_end >= end);
			assert_true(usable_end + 16 >= page_end);
			assert_true(usable_end <= page_end + 16);
		}
#endif
		q = m.mem.realloc(p, sizes[i] + 5000, &m);
		assert_non_null(q);
		for (size_t k = 0; k < sizes[i]; k += 97)
			assert_int_equal(q[k], (int)i + 1);
		m_free(&m, q);
	}
	assert_int_equal(m.n_live, 0);
	h2_mem_fini(&m);
}

static ssize_t sink(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *ud)
{
	(void)s;
	(void)d;
	(void)f;
	(void)ud;
	return (ssize_t)n;
}

/* A real session: requests submitted and serialized, then the session goes. */
static void test_session(void **state)
{
	const nghttp2_nv nv[] = {
	    {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
	    {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
	    {(uint8_t *)":path", (uint8_t *)"/echo.Echo/Unary", 5, 16, 0},
	    {(uint8_t *)":authority", (uint8_t *)"svc", 10, 3, 0},
	};
	nghttp2_session_callbacks *cb;
	nghttp2_session *s;
	struct h2_mem m;

	(void)state;
	h2_mem_init(&m);
	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_send_callback(cb, sink);
	assert_int_equal(nghttp2_session_client_new3(&s, cb, NULL, NULL, &m.mem), 0);
	for (int i = 0; i < 200; i++)
		assert_true(nghttp2_submit_request(s, NULL, nv, 4, NULL, NULL) > 0);
	assert_int_equal(nghttp2_session_send(s), 0);
	assert_true(m.n_live > 0);
	nghttp2_session_del(s);
	nghttp2_session_callbacks_del(cb);
	assert_int_equal(m.n_live, 0);
	h2_mem_fini(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_classes),
	    cmocka_unit_test(test_keep_cap),
	    cmocka_unit_test(test_big_page_end),
	    cmocka_unit_test(test_session),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
