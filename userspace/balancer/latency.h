/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An endpoint's answer latency as this worker measured it: a peak-EWMA
 * estimate (Finagle, Linkerd) fed through a median-of-three filter, plus the
 * jitter between consecutive answers. Every policy keeps it current (the
 * metrics show it); only ewma picks by it. Private to balancer/.
 */
#ifndef H2SPLIT_BALANCER_LATENCY_H
#define H2SPLIT_BALANCER_LATENCY_H

#include <stdbool.h>
#include <stdint.h>

/* Latency fed for a failed stream, unless it took longer: a pod failing fast
 * must not look fast. Decays below healthy peers in about a minute (10 s). */
#define BALANCER_EWMA_PENALTY_US 250000
/* Latency estimates within this ratio of each other are the same to ewma:
 * noise on equal pods, so the in-flight count decides, as for least_request.
 * An answer caps the estimate at this multiple of itself at once: one spike
 * does not shut a pod out for the time constant. */
#define BALANCER_EWMA_BAND 2.0
/* Streams an endpoint answers on this worker before its latency counts (see
 * ewma.c): its default latency is a guess, and a server's first answers on a
 * new connection are often several times slower than the rest. */
#define BALANCER_EWMA_FIRST_ANSWERS 4

struct lb_latency {
	double ewma_us; /* peak-EWMA latency as of stamp_ms */
	uint64_t stamp_ms;
	bool init;	  /* ewma_us holds a value (else: the default) */
	double prev[2];	  /* the last two latency samples, newest first */
	uint32_t n_prev;  /* ... how many of those hold one */
	double last_us;	  /* the last answer's time (0: none yet) ... */
	double jitter_us; /* ... and the smoothed change between answers */
	bool gave_up;	  /* its last stream was abandoned unanswered, past the estimate */
	uint32_t answers; /* streams answered, up to BALANCER_EWMA_FIRST_ANSWERS */
};

/* The estimate at |now_ms| in microseconds: |default_us| before any sample,
 * then decaying toward zero (time constant |decay_ms|) while nothing is
 * observed, so a shunned endpoint is tried again. */
double lb_latency_estimate(const struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
			   uint32_t default_us);
/* An answer after |rtt_us|; |probe|: to a probe (ewma.c), whose answer
 * replaces the estimate outright. */
void lb_latency_answered(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
			 uint32_t default_us, double rtt_us, bool probe);
/* No answer after |rtt_us| (cancelled, refused, timed out): a lower bound,
 * fed unfiltered only when above the estimate. */
void lb_latency_unanswered(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
			   uint32_t default_us, double rtt_us);
/* A failure or overload after |rtt_us|: fed as BALANCER_EWMA_PENALTY_US at least. */
void lb_latency_failed(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
		       uint32_t default_us, double rtt_us);

#endif
