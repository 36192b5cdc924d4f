/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/2 stream splitter of one worker: downstream nghttp2 server
 * sessions, upstream pools, and the per-stream bridge between them. The
 * worker hands it every redirected connection that began with the HTTP/2
 * client preface; everything it creates lives on the worker's loop.
 */
#ifndef H2SPLIT_SPLITTER_H
#define H2SPLIT_SPLITTER_H

#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn_info;

struct splitter *splitter_new(struct worker *w);
void splitter_free(struct splitter *s);
/* Take over downstream |fd| (non-blocking). |pre| holds |n| bytes already read
 * from it (at least the 24-byte preface). Consumes |ci->netns|. Calls
 * worker_conn_closed() when the connection ends. 0 or -errno (then |fd| and
 * the netns ref were released and worker_conn_closed() was called). */
int splitter_conn_start(struct splitter *s, int fd, struct conn_info *ci, const uint8_t *pre,
			size_t n);
/* The worker's snapshot changed: new streams use it; idle upstream
 * connections to endpoints no longer present are closed. */
void splitter_snapshot_changed(struct splitter *s);
/* GOAWAY every downstream session; they close once their streams finish. */
void splitter_drain(struct splitter *s);

#endif
