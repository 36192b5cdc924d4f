// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for h2_buf.c: chains across block boundaries (append, copy at
 * an offset, partial drops), block reuse through the free list and its cap,
 * the small first block, walking a range piece by piece, holding dropped
 * blocks while a write points into them.
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
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 1);
	h2_chain_copy(&c, 0, dst, c.len);
	assert_memory_equal(src + H2_BLOCK_SIZE + 17, dst, c.len);
	/* Freed blocks are reused, not reallocated. */
	assert_int_equal(h2_chain_append(&c, &fl, src, H2_BLOCK_SIZE), 0);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 0);
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
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], H2_BLOCKS_KEEP);
	h2_blocks_fini(&fl);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 0);
	free(src);
}

/* A first append gets the smallest block that holds it; growth goes on one
 * size up per block, and each size goes back to its own free list. */
static void test_first_block_grows(void **state)
{
	struct h2_blocks fl = {0};
	struct h2_chain c = {0};
	size_t total = H2_TINY_BLOCK_SIZE + H2_SMALL_BLOCK_SIZE + 2 * H2_BLOCK_SIZE + 5;
	uint8_t *src = malloc(total), *dst = malloc(total);
	const struct h2_block *b;

	(void)state;
	fill(src, total, 3);
	assert_int_equal(h2_chain_append(&c, &fl, src, 15), 0);
	assert_int_equal(c.head->cap, H2_TINY_BLOCK_SIZE);
	assert_int_equal(h2_chain_append(&c, &fl, src + 15, total - 15), 0);
	assert_int_equal(fl.n_live, 5);
	b = c.head;
	assert_int_equal(b->len, H2_TINY_BLOCK_SIZE);
	b = b->next;
	assert_int_equal(b->cap, H2_SMALL_BLOCK_SIZE);
	assert_int_equal(b->len, H2_SMALL_BLOCK_SIZE);
	b = b->next;
	assert_int_equal(b->cap, H2_BLOCK_SIZE);
	assert_int_equal(b->next->cap, H2_BLOCK_SIZE);
	assert_int_equal(c.tail->cap, H2_BLOCK_SIZE);
	assert_int_equal(c.tail->len, 5);
	h2_chain_copy(&c, 0, dst, total);
	assert_memory_equal(src, dst, total);
	h2_chain_copy(&c, H2_TINY_BLOCK_SIZE - 2, dst, 4);
	assert_memory_equal(src + H2_TINY_BLOCK_SIZE - 2, dst, 4);
	h2_chain_copy(&c, H2_TINY_BLOCK_SIZE + H2_SMALL_BLOCK_SIZE - 2, dst, 4);
	assert_memory_equal(src + H2_TINY_BLOCK_SIZE + H2_SMALL_BLOCK_SIZE - 2, dst, 4);
	h2_chain_clear(&c, &fl);
	assert_int_equal(fl.n_live, 0);
	assert_int_equal(fl.n_free[H2_BLOCK_TINY], 1);
	assert_int_equal(fl.n_free[H2_BLOCK_SMALL], 1);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 3);
	/* Too big for a tiny block from the start: a small one, then big ones. */
	assert_int_equal(h2_chain_append(&c, &fl, src, H2_TINY_BLOCK_SIZE + 1), 0);
	assert_int_equal(c.head->cap, H2_SMALL_BLOCK_SIZE);
	assert_int_equal(h2_chain_append(&c, &fl, src, H2_SMALL_BLOCK_SIZE), 0);
	assert_int_equal(c.tail->cap, H2_BLOCK_SIZE);
	h2_chain_clear(&c, &fl);
	/* Too big for a small block: a big one, taken from the free list. */
	assert_int_equal(h2_chain_append(&c, &fl, src, H2_SMALL_BLOCK_SIZE + 1), 0);
	assert_int_equal(c.head->cap, H2_BLOCK_SIZE);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 2);
	h2_chain_clear(&c, &fl);
	h2_blocks_fini(&fl);
	for (int i = 0; i < H2_BLOCK_CLASSES; i++)
		assert_int_equal(fl.n_free[i], 0);
	free(src);
	free(dst);
}

struct pieces {
	uint8_t out[3 * H2_BLOCK_SIZE];
	size_t len;
	unsigned n;
	const uint8_t *ptr[8];
};

static int take_piece(void *arg, const uint8_t *p, size_t len)
{
	struct pieces *pc = arg;

	memcpy(pc->out + pc->len, p, len);
	pc->len += len;
	pc->ptr[pc->n++] = p;
	return pc->n == 3 ? 7 : 0; /* stops at the third piece */
}

/* The pieces of a range are the chain's own bytes, in order, and a nonzero
 * return stops the walk. */
static void test_pieces(void **state)
{
	struct h2_blocks fl = {0};
	struct h2_chain c = {0};
	size_t total = H2_SMALL_BLOCK_SIZE + 2 * H2_BLOCK_SIZE;
	uint8_t *src = malloc(total);
	static struct pieces pc;

	(void)state;
	fill(src, total, 5);
	assert_int_equal(h2_chain_append(&c, &fl, src, 10), 0);
	assert_int_equal(h2_chain_append(&c, &fl, src + 10, total - 10), 0);
	/* From inside the first (tiny) block, over the small one, to inside the
	 * first big one: 3 pieces. */
	assert_int_equal(
	    h2_chain_pieces(&c, 100, H2_SMALL_BLOCK_SIZE + H2_BLOCK_SIZE, take_piece, &pc), 7);
	assert_int_equal(pc.n, 3);
	assert_int_equal(pc.len, H2_SMALL_BLOCK_SIZE + H2_BLOCK_SIZE);
	assert_memory_equal(pc.out, src + 100, pc.len);
	assert_ptr_equal(pc.ptr[0], c.head->data + 100);
	/* After a partial drop, offsets count from the new head. */
	h2_chain_drop(&c, &fl, 50);
	memset(&pc, 0, sizeof(pc));
	assert_int_equal(h2_chain_pieces(&c, 0, 20, take_piece, &pc), 0);
	assert_int_equal(pc.n, 1);
	assert_memory_equal(pc.out, src + 50, 20);
	h2_chain_clear(&c, &fl);
	h2_blocks_fini(&fl);
	free(src);
}

/* While held, dropped blocks keep their bytes (a write points into them)
 * and are not handed out again; release returns them to the free lists. */
static void test_hold(void **state)
{
	struct h2_blocks fl = {0};
	struct h2_chain c = {0}, d = {0};
	size_t total = 2 * H2_BLOCK_SIZE;
	uint8_t *src = malloc(total), *dst = malloc(total);
	const uint8_t *first;

	(void)state;
	fill(src, total, 9);
	assert_int_equal(h2_chain_append(&c, &fl, src, total), 0);
	first = c.head->data;
	h2_blocks_hold(&fl);
	h2_chain_drop(&c, &fl, H2_BLOCK_SIZE);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 0);
	assert_int_equal(fl.n_live, 1);
	/* A new block meanwhile is a fresh one, not the retired one. */
	assert_int_equal(h2_chain_append(&d, &fl, src, H2_BLOCK_SIZE), 0);
	assert_ptr_not_equal(d.head->data, first);
	assert_memory_equal(first, src, H2_BLOCK_SIZE);
	h2_chain_clear(&c, &fl);
	h2_blocks_release(&fl);
	assert_false(fl.held);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 2);
	assert_int_equal(fl.n_live, 1);
	h2_chain_clear(&d, &fl);
	assert_int_equal(fl.n_free[H2_BLOCK_BIG], 3);
	assert_int_equal(fl.n_live, 0);
	h2_blocks_fini(&fl);
	(void)dst;
	free(src);
	free(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_chain),
	    cmocka_unit_test(test_free_list_cap),
	    cmocka_unit_test(test_first_block_grows),
	    cmocka_unit_test(test_pieces),
	    cmocka_unit_test(test_hold),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
