// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for h2_buf.c: chains across block boundaries (append, copy at
 * an offset, partial drops), block reuse through the free list and its cap,
 * the small first block.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/h2/h2_buf.h"

static void fill(uint8_t *p, size_t n, size_t start)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((start + i) * 7);
}

static void test_chain(void **state)
{
	struct h2_blocks fl = {0};
	struct h2_chain c = {0};
	size_t total = 3 * H2_BLOCK_SIZE + 100, off = 0;
	uint8_t *src = malloc(total), *dst = malloc(total);

	(void)state;
	fill(src, total, 0);
	/* Appends of odd sizes that straddle blocks. */
	while (off < total) {
		size_t k = total - off < 5000 ? total - off : 5000;

		assert_int_equal(h2_chain_append(&c, &fl, src + off, k), 0);
		off += k;
	}
	assert_int_equal(c.len, total);
	assert_int_equal(fl.n_live, 4);
	h2_chain_copy(&c, 0, dst, total);
	assert_memory_equal(src, dst, total);
	/* Copy at an offset (a retry resending held bytes starts at 0 again). */
	h2_chain_copy(&c, H2_BLOCK_SIZE - 3, dst, 10);
	assert_memory_equal(src + H2_BLOCK_SIZE - 3, dst, 10);
	/* Drop across a block boundary; the rest stays in order. */
	h2_chain_drop(&c, &fl, H2_BLOCK_SIZE + 17);
	assert_int_equal(c.len, total - H2_BLOCK_SIZE - 17);
	assert_int_equal(fl.n_live, 3);
	assert_int_equal(fl.n_free, 1);
	h2_chain_copy(&c, 0, dst, c.len);
	assert_memory_equal(src + H2_BLOCK_SIZE + 17, dst, c.len);
	/* Freed blocks are reused, not reallocated. */
	assert_int_equal(h2_chain_append(&c, &fl, src, H2_BLOCK_SIZE), 0);
	assert_int_equal(fl.n_free, 0);
	h2_chain_clear(&c, &fl);
	assert_int_equal(c.len, 0);
	assert_null(c.head);
	assert_null(c.tail);
	assert_int_equal(fl.n_live, 0);
	/* Empty again: appends start over cleanly. */
	assert_int_equal(h2_chain_append(&c, &fl, src, 10), 0);
	h2_chain_copy(&c, 0, dst, 10);
	assert_memory_equal(src, dst, 10);
	h2_chain_clear(&c, &fl);
	h2_blocks_fini(&fl);
	free(src);
	free(dst);
}

static void test_free_list_cap(void **state)
{
	struct h2_blocks fl = {0};
	struct h2_chain c = {0};
	size_t n = (H2_BLOCKS_KEEP + 10) * H2_BLOCK_SIZE;
	uint8_t *src = calloc(1, n);

	(void)state;
	assert_int_equal(h2_chain_append(&c, &fl, src, n), 0);
	h2_chain_clear(&c, &fl);
	assert_int_equal(fl.n_free, H2_BLOCKS_KEEP);
	h2_blocks_fini(&fl);
	assert_int_equal(fl.n_free, 0);
	free(src);
}

/* A first append that fits gets a small block; growth goes on in big ones,
 * and each size goes back to its own free list. */
static void test_small_first_block(void **state)
{
	struct h2_blocks fl = {0};
	struct h2_chain c = {0};
	size_t total = H2_SMALL_BLOCK_SIZE + H2_BLOCK_SIZE + 5;
	uint8_t *src = malloc(total), *dst = malloc(total);

	(void)state;
	fill(src, total, 3);
	assert_int_equal(h2_chain_append(&c, &fl, src, 15), 0);
	assert_int_equal(c.head->cap, H2_SMALL_BLOCK_SIZE);
	assert_int_equal(h2_chain_append(&c, &fl, src + 15, total - 15), 0);
	assert_int_equal(fl.n_live, 3);
	assert_int_equal(c.head->len, H2_SMALL_BLOCK_SIZE);
	assert_int_equal(c.tail->cap, H2_BLOCK_SIZE);
	h2_chain_copy(&c, 0, dst, total);
	assert_memory_equal(src, dst, total);
	h2_chain_copy(&c, H2_SMALL_BLOCK_SIZE - 2, dst, 4);
	assert_memory_equal(src + H2_SMALL_BLOCK_SIZE - 2, dst, 4);
	h2_chain_clear(&c, &fl);
	assert_int_equal(fl.n_free_small, 1);
	assert_int_equal(fl.n_free, 2);
	/* Too big for a small block from the start: a big one. */
	assert_int_equal(h2_chain_append(&c, &fl, src, H2_SMALL_BLOCK_SIZE + 1), 0);
	assert_int_equal(c.head->cap, H2_BLOCK_SIZE);
	assert_int_equal(fl.n_free, 1);
	h2_chain_clear(&c, &fl);
	h2_blocks_fini(&fl);
	assert_int_equal(fl.n_free_small, 0);
	free(src);
	free(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_chain),
	    cmocka_unit_test(test_free_list_cap),
	    cmocka_unit_test(test_small_first_block),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
