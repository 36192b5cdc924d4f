/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nghttp2's allocator for one worker's sessions: free lists of small chunks
 * in 64-byte size classes, so the stream objects, outbound items and header
 * copies nghttp2 makes for every stream come back from a list instead of
 * malloc. One worker thread only. Each list keeps at most H2_MEM_KEEP_BYTES;
 * bigger allocations go straight to malloc. Every chunk carries a 16-byte
 * header with its class (or its size, when it is a big one). A big chunk
 * with a long tail nothing writes (nghttp2's 16 KiB frame buffer per session)
 * ends on a page boundary, so that tail costs no RSS.
 */
#ifndef H2SPLIT_H2_MEM_H
#define H2SPLIT_H2_MEM_H

#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#define H2_MEM_CLASS_SIZE 64
#define H2_MEM_CLASSES 16 /* up to 1 KiB */
#define H2_MEM_KEEP_BYTES (256 * 1024)
/* Big chunks from this size on end on a page boundary (see h2_mem.c). */
#define H2_MEM_PAGE_END_MIN (8 * 1024)
#define H2_MEM_PAGE_SIZE 4096

struct h2_mem_chunk;

struct h2_mem {
	nghttp2_mem mem; /* for nghttp2_session_*_new3(); mem_user_data is this */
	struct h2_mem_chunk *free[H2_MEM_CLASSES]; /* owned */
	uint32_t n_free[H2_MEM_CLASSES];
	uint64_t n_live; /* chunks handed out and not returned, both kinds */
};

void h2_mem_init(struct h2_mem *m);
/* Free the lists; every session using |m| must be gone. */
void h2_mem_fini(struct h2_mem *m);

#endif
