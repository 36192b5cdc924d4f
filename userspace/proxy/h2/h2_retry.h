/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Retries a Service asks for (h2split.io/retry-policy, per-try-timeout): a
 * stream copies the policy covering its method at its first routing; a
 * Trailers-Only answer with a retryable grpc-status, a reset or lost
 * connection before any response, or a per-try timeout sends it to another
 * endpoint after a jittered backoff (gRFC A6), while attempts, the replay
 * buffer, the deadline, server pushback and the Service's retry budget allow.
 * Invariant: nothing is retried once response headers went to the client.
 */
#ifndef H2SPLIT_H2_RETRY_H
#define H2SPLIT_H2_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "base/registry.h"
#include "proxy/h2/grpc.h"
#include "telemetry/metrics.h"

struct h2_stream;
struct loop_timer;

/* What a stream keeps of its policy, embedded in it (zeroed with it). */
struct h2_retry {
	uint8_t kind;	      /* enum rpc_policy_kind; NONE: only unprocessed retries */
	uint8_t max_attempts; /* of the policy, the first included */
	uint8_t attempts;     /* submitted so far */
	uint8_t tried_base;   /* st->n_tried when the current attempt began */
	bool resolved;	      /* the policy was looked up */
	bool new_attempt;     /* the next submit starts an attempt */
	bool stopped;	      /* the server's pushback said: no more */
	int32_t pushback_ms;  /* grpc-retry-pushback-ms of this attempt; -1: none */
	uint32_t service_id;
	uint32_t codes; /* retryable grpc-status bits */
	uint32_t backoff_ms, initial_backoff_ms, max_backoff_ms;
	double multiplier, budget_ratio, budget_min_per_s;
	uint32_t per_try_ms;		  /* 0: none */
	struct loop_timer *backoff_timer; /* owned: the wait before the next attempt */
	struct loop_timer *try_timer;	  /* owned: per-try timeout of this attempt */
	uint32_t hedging_delay_ms;	  /* hedge: between attempts */
	bool committed;			  /* hedge: an attempt's answer goes to the client */
	uint8_t n_hedges;		  /* hedge: attempts in flight besides the stream's own */
	struct h2_stream *hedges[RPC_POLICY_MAX_ATTEMPTS]; /* owned: those attempts */
	struct loop_timer *hedge_timer;			   /* owned: the next hedge */
};

/* Look up |svc|'s policy for |st|'s method (once per stream). */
void h2_retry_resolve(struct h2_stream *st, const struct state_service *svc);
/* Append grpc-previous-rpc-attempts to |nv| (|n| entries, room for one more)
 * when this submit is a retry; |buf| (12 bytes) holds its value. New count. */
size_t h2_retry_add_header(const struct h2_stream *st, nghttp2_nv *nv, size_t n, char *buf);
/* |st| was submitted upstream: count the attempt, arm its per-try timeout. */
void h2_retry_submitted(struct h2_stream *st);
/* grpc-retry-pushback-ms |v| came with the answer of this attempt. */
void h2_retry_pushback(struct h2_stream *st, const uint8_t *v, size_t len);
/* A Trailers-Only answer arrived (not yet forwarded): true when |st| is
 * retried instead of answered. */
bool h2_retry_on_answer(struct h2_stream *st);
/* The attempt failed before any response (reset: the client would see
 * |status|; a lost connection: UNAVAILABLE): true when |st| is retried. */
bool h2_retry_on_failure(struct h2_stream *st, enum grpc_status status);
/* Response headers go to the client: no retry from now on. */
void h2_retry_answered(struct h2_stream *st);
/* End the attempt in progress but keep the request for another one: the
 * upstream stream is cancelled (unless closed both ways) and forgotten, its
 * endpoint gets its verdict, its answer is dropped; leg NONE. */
void h2_retry_end_attempt(struct h2_stream *st);
/* |st| waits for nothing more (answered, let go, freed): stop the timers,
 * cancel its hedged attempts. */
void h2_retry_cancel(struct h2_stream *st);

#endif
