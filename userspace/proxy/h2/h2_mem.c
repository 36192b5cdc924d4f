// SPDX-License-Identifier: Apache-2.0
/*
 * Size-class free lists behind nghttp2_mem (see h2_mem.h). A chunk is a
 * 16-byte header followed by what nghttp2 asked for; the header says which
 * list it returns to, or how big it is when it came from malloc directly.
 * Built with ASan, nothing is kept, so every free is a real one it checks.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/h2/h2_mem.h"

#define BIG UINT32_MAX

struct h2_mem_chunk {
	union {
		struct h2_mem_chunk *next; /* on a free list */
		size_t size;		   /* a big chunk's size */
	};
	uint32_t cls; /* BIG: from malloc, not pooled */
	uint32_t pad;
	uint8_t data[];
};

#if defined(__SANITIZE_ADDRESS__)
#define POOLED 0
#else
#define POOLED 1
#endif
#define KEEP(cls) (H2_MEM_KEEP_BYTES / (((cls) + 1) * H2_MEM_CLASS_SIZE))

static struct h2_mem_chunk *chunk_of(void *p)
{
	return (struct h2_mem_chunk *)((uint8_t *)p - offsetof(struct h2_mem_chunk, data));
}

static size_t usable(const struct h2_mem_chunk *c)
{
	return c->cls == BIG ? c->size : (size_t)(c->cls + 1) * H2_MEM_CLASS_SIZE;
}

/* A big chunk with a long untouched tail (a session's 16 KiB frame buffer,
 * of which small frames only write the head) ends on a page boundary: glibc
 * reuses what the shrink gives back for the next allocations, and the tail's
 * last page is not shared with them, so it is never made resident. */
static struct h2_mem_chunk *big_chunk(size_t size)
{
	size_t page = H2_MEM_PAGE_SIZE, want, end;
	struct h2_mem_chunk *c, *shrunk;

	if (size < H2_MEM_PAGE_END_MIN || size > SIZE_MAX - sizeof(*c) - page)
		return malloc(sizeof(*c) + size);
	if (!(c = malloc(sizeof(*c) + size + page)))
		return NULL;
	end = ((uintptr_t)c->data + size + page - 1) & ~(uintptr_t)(page - 1);
	want = end - (uintptr_t)c;
	shrunk = realloc(c, want);
	return shrunk ? shrunk : c;
}

static void *mem_malloc(size_t size, void *ud)
{
	struct h2_mem *m = ud;
	uint32_t cls = size ? (uint32_t)((size - 1) / H2_MEM_CLASS_SIZE) : 0;
	struct h2_mem_chunk *c;

	if (size > H2_MEM_CLASSES * H2_MEM_CLASS_SIZE) {
		c = big_chunk(size);
		if (!c)
			return NULL;
		c->size = size;
		c->cls = BIG;
	} else if ((c = m->free[cls])) {
		m->free[cls] = c->next;
		m->n_free[cls]--;
	} else {
		c = malloc(sizeof(*c) + (size_t)(cls + 1) * H2_MEM_CLASS_SIZE);
		if (!c)
			return NULL;
		c->cls = cls;
	}
	m->n_live++;
	return c->data;
}

static void mem_free(void *p, void *ud)
{
	struct h2_mem *m = ud;
	struct h2_mem_chunk *c;

	if (!p)
		return;
	c = chunk_of(p);
	m->n_live--;
	if (!POOLED || c->cls == BIG || m->n_free[c->cls] >= KEEP(c->cls)) {
		free(c);
		return;
	}
	c->next = m->free[c->cls];
	m->free[c->cls] = c;
	m->n_free[c->cls]++;
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = mem_malloc(n * size, ud);
	if (p)
		memset(p, 0, n * size);
	return p;
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
	size_t have;
	void *np;

	if (!p)
		return mem_malloc(size, ud);
	have = usable(chunk_of(p));
	if (size <= have)
		return p;
	np = mem_malloc(size, ud);
	if (!np)
		return NULL;
	memcpy(np, p, have < size ? have : size);
	mem_free(p, ud);
	return np;
}

void h2_mem_init(struct h2_mem *m)
{
	memset(m, 0, sizeof(*m));
	m->mem = (nghttp2_mem){
	    .mem_user_data = m,
	    .malloc = mem_malloc,
	    .free = mem_free,
	    .calloc = mem_calloc,
	    .realloc = mem_realloc,
	};
}

void h2_mem_fini(struct h2_mem *m)
{
	for (int i = 0; i < H2_MEM_CLASSES; i++) {
		while (m->free[i]) {
			struct h2_mem_chunk *c = m->free[i];

			m->free[i] = c->next;
			free(c);
		}
		m->n_free[i] = 0;
	}
}
