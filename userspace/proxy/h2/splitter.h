/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/2 stream splitter of one worker: downstream nghttp2 server
 * sessions, upstream pools, and the per-stream bridge between them. The
 * worker hands it every redirected connection that began with the HTTP/2
 * client preface; everything it creates lives on ctx->loop. It knows its
 * owner only through struct splitter_ctx.
 */
#ifndef H2SPLIT_SPLITTER_H
#define H2SPLIT_SPLITTER_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/h2/conn_info.h"

struct config;
struct health_table;
struct loop;
struct metrics;
struct netns_cache;
struct snapshot;
struct splitter;
struct worker_stats;

/* What the splitter needs of its owner. Everything is borrowed and outlives
 * the splitter; the splitter uses it on ctx->loop's thread only. */
struct splitter_ctx {
	int worker_id;			   /* for logs and the balancer's seed */
	struct loop *loop;		   /* required */
	const struct config *cfg;	   /* required: the limits come from it */
	struct worker_stats *stats;	   /* required; written by this thread only */
	struct metrics *metrics;	   /* required; written by this thread only */
	struct netns_cache *netns;	   /* where conn_info.netns refs go back; NULL: none
					    * are ever handed over */
	const struct health_table *health; /* active health verdicts; NULL: none */
	struct conn_owner owner;	   /* told when a downstream connection ends */
};

/* NULL when out of memory or a required field of |ctx| is missing. */
struct splitter *splitter_new(const struct splitter_ctx *ctx);
void splitter_free(struct splitter *s);
/* Take over downstream |fd| (non-blocking). |pre| holds |n| bytes already read
 * from it (at least the 24-byte preface). Consumes |ci->netns|. Tells the
 * owner when the connection ends. 0 or -errno (then |fd| and the netns ref
 * were released and the owner was told). */
int splitter_conn_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n);
/* The owner's snapshot is now |snap| (NULL: none yet): new streams use it;
 * idle upstream connections to endpoints no longer present are closed. The
 * owner keeps its reference to |snap| until the next call (or
 * splitter_free()): the splitter borrows it. */
void splitter_snapshot_changed(struct splitter *s, const struct snapshot *snap);
/* GOAWAY every downstream session; they close once their streams finish. */
void splitter_drain(struct splitter *s);

#endif
