/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Header blocks the splitter holds while bridging: a request's headers (kept
 * until the request can no longer be retried), trailers, and a response's
 * headers until they are submitted on the other side. A block owns one
 * arena of name/value bytes; its size is capped so a peer cannot make it grow
 * past H2_HDRS_MAX_BYTES (RFC 9113 header list size accounting).
 */
#ifndef H2SPLIT_H2_HEADERS_H
#define H2SPLIT_H2_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#define H2_HDRS_MAX_FIELDS 256
#define H2_HDRS_MAX_BYTES (64 * 1024)
#define H2_HDRS_KEEP_FIELDS 32
#define H2_HDRS_KEEP_BYTES 1024

struct h2_hdr_ent {
	uint32_t name_off, value_off; /* into h2_hdrs.buf */
	uint32_t name_len, value_len;
	uint8_t flags; /* NGHTTP2_NV_FLAG_NO_INDEX is kept across the bridge */
};

struct h2_hdrs {
	struct h2_hdr_ent *ents; /* owned */
	char *buf;		 /* owned arena */
	uint32_t n, n_alloc;
	uint32_t len, alloc;
	uint32_t list_size; /* sum of name + value + 32 per field */
};

/* Connection-specific fields HTTP/2 forbids or a proxy must not forward:
 * connection, keep-alive, proxy-connection, transfer-encoding, upgrade, and
 * te unless its value is exactly "trailers". True: drop it. |name| is
 * lower-case as HTTP/2 requires. */
bool h2_header_is_hop_by_hop(const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);

void h2_hdrs_init(struct h2_hdrs *h);
/* Frees the arena; |h| is empty and reusable afterwards. */
void h2_hdrs_clear(struct h2_hdrs *h);
/* Empties |h| but keeps an arena no bigger than a typical request's
 * (H2_HDRS_KEEP_*), so the next block in it costs no allocation. */
void h2_hdrs_reset(struct h2_hdrs *h);
/* Copy one field in. 0, -E2BIG past the field or byte limits, -ENOMEM. */
int h2_hdrs_add(struct h2_hdrs *h, const uint8_t *name, size_t nlen, const uint8_t *value,
		size_t vlen, uint8_t flags);
/* Point |nv| (room for |cap| entries) at the fields; valid until |h| changes.
 * Returns the count, or 0 if |cap| is too small. */
size_t h2_hdrs_to_nv(const struct h2_hdrs *h, nghttp2_nv *nv, size_t cap);
/* The value of the first field called |name|, or NULL (|*vlen| set). */
const uint8_t *h2_hdrs_get(const struct h2_hdrs *h, const char *name, size_t *vlen);

#endif
