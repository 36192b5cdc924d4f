// SPDX-License-Identifier: Apache-2.0
/*
 * Block chains and their free lists (see h2_buf.h). Appends fill the tail
 * block first, then take blocks each one size up from the last (see
 * h2_buf.h); drops return emptied blocks to the free list of their size,
 * which keeps at most H2_*BLOCKS_KEEP of them so a burst does not pin memory
 * forever.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/h2/h2_buf.h"

static const uint32_t class_cap[H2_BLOCK_CLASSES] = {
    [H2_BLOCK_TINY] = H2_TINY_BLOCK_SIZE,
    [H2_BLOCK_SMALL] = H2_SMALL_BLOCK_SIZE,
    [H2_BLOCK_BIG] = H2_BLOCK_SIZE,
};
static const size_t class_keep[H2_BLOCK_CLASSES] = {
    [H2_BLOCK_TINY] = H2_TINY_BLOCKS_KEEP,
    [H2_BLOCK_SMALL] = H2_SMALL_BLOCKS_KEEP,
    [H2_BLOCK_BIG] = H2_BLOCKS_KEEP,
};

static int class_of(const struct h2_block *b)
{
	return b->cap == H2_TINY_BLOCK_SIZE    ? H2_BLOCK_TINY
	       : b->cap == H2_SMALL_BLOCK_SIZE ? H2_BLOCK_SMALL
					       : H2_BLOCK_BIG;
}

/* The smallest class that holds |n| bytes. */
static int class_fit(size_t n)
{
	int cls = H2_BLOCK_TINY;

	while (cls < H2_BLOCK_BIG && n > class_cap[cls])
		cls++;
	return cls;
}

static struct h2_block *block_get(struct h2_blocks *fl, int cls)
{
	struct h2_block *b = fl->free[cls];

	if (b) {
		fl->free[cls] = b->next;
		fl->n_free[cls]--;
	} else if (!(b = malloc(sizeof(*b) + class_cap[cls]))) {
		return NULL;
	}
	b->next = NULL;
	b->len = 0;
	b->cap = class_cap[cls];
	fl->n_live++;
	return b;
}

static void block_put(struct h2_blocks *fl, struct h2_block *b)
{
	int cls = class_of(b);

	fl->n_live--;
	if (fl->held) {
		b->next = fl->retired;
		fl->retired = b;
		return;
	}
	if (fl->n_free[cls] >= class_keep[cls]) {
		free(b);
		return;
	}
	b->next = fl->free[cls];
	fl->free[cls] = b;
	fl->n_free[cls]++;
}

void h2_blocks_release(struct h2_blocks *fl)
{
	struct h2_block *b = fl->retired, *next;

	fl->held = false;
	fl->retired = NULL;
	for (; b; b = next) {
		next = b->next;
		fl->n_live++; /* counted out once already by block_put() */
		block_put(fl, b);
	}
}

void h2_blocks_fini(struct h2_blocks *fl)
{
	h2_blocks_release(fl);
	for (int cls = 0; cls < H2_BLOCK_CLASSES; cls++) {
		for (struct h2_block *b = fl->free[cls], *next; b; b = next) {
			next = b->next;
			free(b);
		}
		fl->free[cls] = NULL;
		fl->n_free[cls] = 0;
	}
}

int h2_chain_append(struct h2_chain *c, struct h2_blocks *fl, const uint8_t *p, size_t n)
{
	size_t room = c->tail ? c->tail->cap - c->tail->len : 0;
	int cls = c->tail ? class_of(c->tail) + 1 : class_fit(n);
	struct h2_block *first = NULL, *last = NULL;
	size_t rest = n > room ? n - room : 0;

	/* Get every block first so a failure leaves the chain untouched. */
	while (rest) {
		struct h2_block *b = block_get(fl, cls < H2_BLOCK_BIG ? cls : H2_BLOCK_BIG);

		if (!b) {
			for (; first; first = last) {
				last = first->next;
				block_put(fl, first);
			}
			return -ENOMEM;
		}
		if (last)
			last->next = b;
		else
			first = b;
		last = b;
		rest -= rest > b->cap ? b->cap : rest;
		cls++;
	}
	if (room) {
		size_t k = n < room ? n : room;

		memcpy(c->tail->data + c->tail->len, p, k);
		c->tail->len += (uint32_t)k;
		p += k;
		c->len += k;
		n -= k;
	}
	for (struct h2_block *b = first; b; b = b->next) {
		size_t k = n < b->cap ? n : b->cap;

		memcpy(b->data, p, k);
		b->len = (uint32_t)k;
		p += k;
		n -= k;
		c->len += k;
	}
	if (first) {
		if (c->tail)
			c->tail->next = first;
		else
			c->head = first;
		c->tail = last;
	}
	return 0;
}

int h2_chain_pieces(const struct h2_chain *c, size_t off, size_t n,
		    int (*fn)(void *arg, const uint8_t *p, size_t len), void *arg)
{
	const struct h2_block *b = c->head;

	off += c->head_off;
	while (b && off >= b->len) {
		off -= b->len;
		b = b->next;
	}
	for (; b && n; b = b->next, off = 0) {
		size_t k = b->len - off < n ? b->len - off : n;
		int rv = fn(arg, b->data + off, k);

		if (rv)
			return rv;
		n -= k;
	}
	return 0;
}

static int copy_piece(void *arg, const uint8_t *p, size_t len)
{
	uint8_t **dst = arg;

	memcpy(*dst, p, len);
	*dst += len;
	return 0;
}

void h2_chain_copy(const struct h2_chain *c, size_t off, uint8_t *dst, size_t n)
{
	h2_chain_pieces(c, off, n, copy_piece, &dst);
}

void h2_chain_drop(struct h2_chain *c, struct h2_blocks *fl, size_t n)
{
	c->len -= n;
	while (n && c->head) {
		struct h2_block *b = c->head;
		size_t avail = b->len - c->head_off;

		if (n < avail) {
			c->head_off += n;
			return;
		}
		n -= avail;
		c->head = b->next;
		c->head_off = 0;
		block_put(fl, b);
	}
	if (!c->head) {
		c->tail = NULL;
		c->head_off = 0;
	} else if (!c->len && c->head == c->tail) {
		/* Reuse the one block from its start. */
		c->head_off = 0;
		c->head->len = 0;
	}
}
