/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client stream ids a downstream connection skipped. RFC 9113 5.1.1: a
 * client's new stream id must exceed every id it used before, and the first
 * use of an id closes the lower ones it never opened; a HEADERS frame on one
 * of those is a connection error PROTOCOL_ERROR. nghttp2 1.52 ignores such a
 * frame, since without a record of every id it cannot tell it from a late
 * trailer on a stream that was opened and reset. Clients use ids in order
 * and skip rarely, so the skipped ranges are few: a handful are kept, and an
 * id found in one is surely never opened. Pure bookkeeping, a few integers.
 */
#ifndef H2SPLIT_H2_STREAM_IDS_H
#define H2SPLIT_H2_STREAM_IDS_H

#include <stdint.h>

/* Skipped ranges kept per connection; older ones are forgotten (a HEADERS
 * on an id there is then left to nghttp2, which ignores it). */
#define H2_IDS_GAPS 4

struct h2_stream_ids {
	uint32_t max;		      /* highest odd id a HEADERS came on; 0: none yet */
	uint32_t gap[H2_IDS_GAPS][2]; /* odd ids lo..hi skipped, in order of skipping */
	uint32_t n_gaps;
};

/* A HEADERS frame from the client on stream |id| (reserved bit cleared):
 * -EPROTO when |id| is an odd id below the highest one used and the client
 * skipped it, else 0. Even ids and 0 are nghttp2's to refuse. */
int h2_stream_ids_headers(struct h2_stream_ids *t, uint32_t id);

#endif
