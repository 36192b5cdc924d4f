/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Byte chains for DATA in transit between the two sessions of a stream:
 * blocks of three sizes from per-worker free lists, so buffering a frame costs
 * no allocation in the steady state. A chain only ever holds what the
 * receiving session's flow-control window let in, which is what bounds it.
 */
#ifndef H2SPLIT_H2_BUF_H
#define H2SPLIT_H2_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Block sizes (the h2_block header included): a chain's first block is the
 * smallest that holds its first append, and each block after it is of the
 * next size up, so a small unary message in flight costs 256 bytes and a
 * stream of big frames soon moves in 16 KiB blocks. */
enum h2_block_class { H2_BLOCK_TINY, H2_BLOCK_SMALL, H2_BLOCK_BIG, H2_BLOCK_CLASSES };
#define H2_BLOCK_SIZE (16384 - 2 * sizeof(void *))
#define H2_SMALL_BLOCK_SIZE (2048 - 2 * sizeof(void *))
#define H2_TINY_BLOCK_SIZE (256 - 2 * sizeof(void *))
/* Free blocks a worker keeps around: 4 MiB of big ones, 4 MiB of small ones,
 * 2 MiB of tiny ones. */
#define H2_BLOCKS_KEEP 256
#define H2_SMALL_BLOCKS_KEEP 2048
#define H2_TINY_BLOCKS_KEEP 8192

struct h2_block {
	struct h2_block *next;
	uint32_t len; /* bytes used from data[0] */
	uint32_t cap; /* H2_BLOCK_SIZE, H2_SMALL_BLOCK_SIZE or H2_TINY_BLOCK_SIZE */
	uint8_t data[];
};

/* The free lists, one per enum h2_block_class; own their blocks. While
 * |held|, a returned block goes to |retired| instead, untouched: a write in
 * progress may still point into it (see h2_blocks_hold()). */
struct h2_blocks {
	struct h2_block *free[H2_BLOCK_CLASSES];
	size_t n_free[H2_BLOCK_CLASSES];
	size_t n_live; /* blocks handed out and not returned */
	struct h2_block *retired;
	bool held;
};

/* Bytes [head_off, ...) of the blocks head..tail; owns its blocks. */
struct h2_chain {
	struct h2_block *head, *tail;
	size_t head_off;
	size_t len;
};

void h2_blocks_fini(struct h2_blocks *fl);
/* From now until h2_blocks_release(), blocks dropped from any chain keep
 * their bytes: an iovec of a write being assembled may point into them. */
static inline void h2_blocks_hold(struct h2_blocks *fl)
{
	fl->held = true;
}
/* The write is done: blocks dropped since h2_blocks_hold() go back. */
void h2_blocks_release(struct h2_blocks *fl);
/* Append |n| bytes. 0 or -ENOMEM (then nothing was appended). */
int h2_chain_append(struct h2_chain *c, struct h2_blocks *fl, const uint8_t *p, size_t n);
/* Copy |n| bytes starting |off| bytes into the chain to |dst|; the caller
 * checks off + n <= len. */
/* Call |fn| on each contiguous piece of the |n| bytes starting |off| bytes
 * into the chain (off + n <= len, checked by the caller), in order; stops at
 * the first nonzero return and returns it. */
int h2_chain_pieces(const struct h2_chain *c, size_t off, size_t n,
		    int (*fn)(void *arg, const uint8_t *p, size_t len), void *arg);
void h2_chain_copy(const struct h2_chain *c, size_t off, uint8_t *dst, size_t n);
/* Drop the first |n| (<= len) bytes. */
void h2_chain_drop(struct h2_chain *c, struct h2_blocks *fl, size_t n);
static inline void h2_chain_clear(struct h2_chain *c, struct h2_blocks *fl)
{
	h2_chain_drop(c, fl, c->len);
}

#endif
