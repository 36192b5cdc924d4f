/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L4 path: a redirected connection that is not HTTP/2 is forwarded byte
 * for byte to the address the app dialled, from a socket opened in the
 * client pod's netns (so the server sees the pod's IP). splice() through a
 * pipe per direction: zero copies, and the pipe is the buffer bound, so a
 * slow reader on either side only stops reading from the other.
 */
#ifndef H2SPLIT_L4_PROXY_H
#define H2SPLIT_L4_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/h2/conn_info.h"

struct loop;
struct netns_cache;
struct worker_stats;

/* What the L4 path needs of its worker; all borrowed, all outlive every
 * connection started with it. */
struct l4_proxy_ctx {
	struct loop *loop;
	struct worker_stats *stats; /* written on the loop's thread only */
	struct netns_cache *netns;  /* where conn_info.netns refs go back */
	struct conn_owner owner;
};

/* Forward downstream |fd| to ci->orig. |pre| holds |n| bytes already read from
 * |fd| (sent first). Consumes |fd| and ci->netns in every case and tells
 * ctx->owner when the connection ends (also on failure). 0 or -errno. */
int l4_proxy_start(const struct l4_proxy_ctx *ctx, int fd, struct conn_info *ci, const uint8_t *pre,
		   size_t n);

#endif
