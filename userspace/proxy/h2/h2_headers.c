// SPDX-License-Identifier: Apache-2.0
/*
 * Header blocks (see h2_headers.h): an entry array plus one byte arena per
 * block, both grown geometrically, so a typical gRPC request costs two
 * allocations however many fields it has. Limits are checked before growth.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/h2/h2_headers.h"

static bool eq(const uint8_t *a, size_t alen, const char *lit)
{
	size_t n = strlen(lit);

	return alen == n && !memcmp(a, lit, n);
}

bool h2_header_is_hop_by_hop(const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
	switch (nlen) {
	case 2:
		return eq(name, nlen, "te") && !eq(value, vlen, "trailers");
	case 7:
		return eq(name, nlen, "upgrade");
	case 10:
		return eq(name, nlen, "connection") || eq(name, nlen, "keep-alive");
	case 16:
		return eq(name, nlen, "proxy-connection");
	case 17:
		return eq(name, nlen, "transfer-encoding");
	default:
		return false;
	}
}

void h2_hdrs_init(struct h2_hdrs *h)
{
	memset(h, 0, sizeof(*h));
}

void h2_hdrs_clear(struct h2_hdrs *h)
{
	free(h->ents);
	free(h->buf);
	h2_hdrs_init(h);
}

void h2_hdrs_reset(struct h2_hdrs *h)
{
	if (h->n_alloc > H2_HDRS_KEEP_FIELDS || h->alloc > H2_HDRS_KEEP_BYTES) {
		h2_hdrs_clear(h);
		return;
	}
	h->n = 0;
	h->len = 0;
	h->list_size = 0;
}

static int grow(void **p, uint32_t *alloc, uint32_t need, size_t elem, uint32_t first)
{
	uint32_t n = *alloc ? *alloc : first;
	void *np;

	if (need <= *alloc)
		return 0;
	while (n < need)
		n *= 2;
	np = realloc(*p, (size_t)n * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*alloc = n;
	return 0;
}

int h2_hdrs_add(struct h2_hdrs *h, const uint8_t *name, size_t nlen, const uint8_t *value,
		size_t vlen, uint8_t flags)
{
	struct h2_hdr_ent *e;
	size_t size = nlen + vlen + 32;

	if (h->n >= H2_HDRS_MAX_FIELDS || size > H2_HDRS_MAX_BYTES ||
	    h->list_size + size > H2_HDRS_MAX_BYTES)
		return -E2BIG;
	if (grow((void **)&h->ents, &h->n_alloc, h->n + 1, sizeof(*h->ents), 16) ||
	    grow((void **)&h->buf, &h->alloc, h->len + (uint32_t)(nlen + vlen), 1, 512))
		return -ENOMEM;
	e = &h->ents[h->n++];
	e->name_off = h->len;
	e->name_len = (uint32_t)nlen;
	memcpy(h->buf + h->len, name, nlen);
	h->len += (uint32_t)nlen;
	e->value_off = h->len;
	e->value_len = (uint32_t)vlen;
	if (vlen)
		memcpy(h->buf + h->len, value, vlen);
	h->len += (uint32_t)vlen;
	e->flags = flags & NGHTTP2_NV_FLAG_NO_INDEX;
	h->list_size += (uint32_t)size;
	return 0;
}

size_t h2_hdrs_to_nv(const struct h2_hdrs *h, nghttp2_nv *nv, size_t cap)
{
	if (h->n > cap)
		return 0;
	for (uint32_t i = 0; i < h->n; i++) {
		const struct h2_hdr_ent *e = &h->ents[i];

		nv[i] = (nghttp2_nv){
		    .name = (uint8_t *)h->buf + e->name_off,
		    .value = (uint8_t *)h->buf + e->value_off,
		    .namelen = e->name_len,
		    .valuelen = e->value_len,
		    .flags = e->flags,
		};
	}
	return h->n;
}

const uint8_t *h2_hdrs_get(const struct h2_hdrs *h, const char *name, size_t *vlen)
{
	size_t n = strlen(name);

	for (uint32_t i = 0; i < h->n; i++) {
		const struct h2_hdr_ent *e = &h->ents[i];

		if (e->name_len == n && !memcmp(h->buf + e->name_off, name, n)) {
			*vlen = e->value_len;
			return (const uint8_t *)h->buf + e->value_off;
		}
	}
	*vlen = 0;
	return NULL;
}
