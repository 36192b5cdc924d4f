// SPDX-License-Identifier: Apache-2.0
/*
 * Block chains and their free list (see h2_buf.h). Appends fill the tail
 * block first; drops return emptied blocks to the free list, which keeps at
 * most H2_BLOCKS_KEEP of them so a burst does not pin memory forever.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "h2_buf.h"

static struct h2_block *block_get(struct h2_blocks *fl)
{
	struct h2_block *b = fl->free;

	if (b) {
		fl->free = b->next;
		fl->n_free--;
	} else if (!(b = malloc(sizeof(*b)))) {
		return NULL;
	}
	b->next = NULL;
	b->len = 0;
	fl->n_live++;
	return b;
}

static void block_put(struct h2_blocks *fl, struct h2_block *b)
{
	fl->n_live--;
	if (fl->n_free >= H2_BLOCKS_KEEP) {
		free(b);
		return;
	}
	b->next = fl->free;
	fl->free = b;
	fl->n_free++;
}

void h2_blocks_fini(struct h2_blocks *fl)
{
	for (struct h2_block *b = fl->free, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	fl->free = NULL;
	fl->n_free = 0;
}

int h2_chain_append(struct h2_chain *c, struct h2_blocks *fl, const uint8_t *p, size_t n)
{
	size_t room = c->tail ? H2_BLOCK_SIZE - c->tail->len : 0;
	struct h2_block *first = NULL, *last = NULL;
	size_t rest = n > room ? n - room : 0;

	/* Get every block first so a failure leaves the chain untouched. */
	while (rest) {
		struct h2_block *b = block_get(fl);

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
		rest -= rest > H2_BLOCK_SIZE ? H2_BLOCK_SIZE : rest;
	}
	if (room) {
		size_t k = n < room ? n : room;

		memcpy(c->tail->data + c->tail->len, p, k);
		c->tail->len += k;
		p += k;
		c->len += k;
		n -= k;
	}
	for (struct h2_block *b = first; b; b = b->next) {
		size_t k = n < H2_BLOCK_SIZE ? n : H2_BLOCK_SIZE;

		memcpy(b->data, p, k);
		b->len = k;
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

void h2_chain_copy(const struct h2_chain *c, size_t off, uint8_t *dst, size_t n)
{
	const struct h2_block *b = c->head;

	off += c->head_off;
	while (b && off >= b->len) {
		off -= b->len;
		b = b->next;
	}
	for (; b && n; b = b->next, off = 0) {
		size_t k = b->len - off < n ? b->len - off : n;

		memcpy(dst, b->data + off, k);
		dst += k;
		n -= k;
	}
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
