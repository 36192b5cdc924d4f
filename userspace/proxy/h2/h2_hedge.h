/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hedging (h2split.io/hedging-policy, gRFC A6): while no answer came, every
 * hedgingDelay another attempt of the RPC goes to another endpoint, up to
 * maxAttempts in all. The first response headers win: a hedged attempt that
 * wins is adopted by the RPC's stream and the others get RST_STREAM(CANCEL).
 * A Trailers-Only answer with a status in nonFatalStatusCodes, or a reset,
 * only ends its own attempt while others are in flight or still to come.
 * Hedges take from the Service's retry budget like retries.
 */
#ifndef H2SPLIT_H2_HEDGE_H
#define H2SPLIT_H2_HEDGE_H

#include <stdbool.h>

struct h2_stream;

/* |st|'s first attempt went out under a hedging policy: arm the next one. */
void h2_hedge_start(struct h2_stream *st);
/* Final response headers came for |st| (a stream, or one of its hedged
 * attempts) and are not yet forwarded. True: the caller stops there (the
 * answer was dropped, or adopted and forwarded by the RPC's stream). */
bool h2_hedge_on_headers(struct h2_stream *st, bool end_stream);
/* |st|'s attempt was reset or lost before any response. True: handled here
 * (other attempts go on, or the failure was answered). */
bool h2_hedge_on_failure(struct h2_stream *st);
/* Cancel every hedged attempt of |st| and the next hedge's timer. */
void h2_hedge_cancel(struct h2_stream *st);

#endif
