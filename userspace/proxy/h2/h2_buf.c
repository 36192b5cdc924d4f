// SPDX-License-Identifier: Apache-2.0
/*
 * Block chains and their free lists (see h2_buf.h). Appends fill the tail
 * block first; drops return emptied blocks to the free list of their size,
 * which keeps at most H2_BLOCKS_KEEP (H2_SMALL_BLOCKS_KEEP) of them so a
 * burst does not pin memory forever.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/h2/h2_buf.h"

static struct h2_block *block_get(struct h2_blocks *fl, bool small)
{
	struct h2_block **head = small ? &fl->free_small : &fl->free;
	size_t *n_free = small ? &fl->n_free_small : &fl->n_free;
	uint32_t cap = small ? H2_SMALL_BLOCK_SIZE : H2_BLOCK_SIZE;
	struct h2_block *b = *head;

	if (b) {
		*head = b->next;
		(*n_free)--;
	} else if (!(b = malloc(sizeof(*b) + cap))) {
		return NULL;
	}
	b->next = NULL;
	b->len = 0;
	b->cap = cap;
	fl->n_live++;
	return b;
}

static void block_put(struct h2_blocks *fl, struct h2_block *b)
{
	bool small = b->cap == H2_SMALL_BLOCK_SIZE;
	struct h2_block **head = small ? &fl->free_small : &fl->free;
	size_t *n_free = small ? &fl->n_free_small : &fl->n_free;

	fl->n_live--;
	if (fl->held) {
		b->next = fl->retired;
		fl->retired = b;
		return;
	}
	if (*n_free >= (small ? H2_SMALL_BLOCKS_KEEP : H2_BLOCKS_KEEP)) {
		free(b);
		return;
	}
	b->next = *head;
	*head = b;
	(*n_free)++;
}

static void free_list(struct h2_block **head, size_t *n)
{
	for (struct h2_block *b = *head, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	*head = NULL;
	*n = 0;
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
	free_list(&fl->free, &fl->n_free);
	free_list(&fl->free_small, &fl->n_free_small);
}

int h2_chain_append(struct h2_chain *c, struct h2_blocks *fl, const uint8_t *p, size_t n)
{
	size_t room = c->tail ? c->tail->cap - c->tail->len : 0;
	bool small = !c->tail && n <= H2_SMALL_BLOCK_SIZE;
	struct h2_block *first = NULL, *last = NULL;
	size_t rest = n > room ? n - room : 0;

	/* Get every block first so a failure leaves the chain untouched. */
	while (rest) {
		struct h2_block *b = block_get(fl, small);

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
