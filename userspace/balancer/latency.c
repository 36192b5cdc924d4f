// SPDX-License-Identifier: Apache-2.0
/*
 * The peak-EWMA latency estimator of one endpoint (see latency.h): what an
 * answer, a give-up or a failure does to the estimate and to the jitter.
 * Invariant: the estimate never exceeds BALANCER_EWMA_BAND x the latest
 * answer, since noise only ever slows an answer down.
 */
#include <math.h>

#include "balancer/latency.h"

double lb_latency_estimate(const struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
			   uint32_t default_us)
{
	uint64_t dt = now_ms > l->stamp_ms ? now_ms - l->stamp_ms : 0;

	if (!l->init)
		return default_us;
	return l->ewma_us * exp(-(double)dt / decay_ms);
}

/* Finagle's PeakEwma.observe, fed |rtt_us| (filtered: see sample()): above
 * the (decayed) estimate, it replaces it at once; below, it pulls it down by
 * the weight of the time since the last sample. Then |raw_us|, the answer
 * itself, caps the estimate at the band's edge: a fast answer shows what the
 * pod can do now (after a hiccup, or warmed up). Not lower: the estimate of a
 * pod in use would fall below the older estimates of idle peers by more than
 * the band, and at a low rate they would be shunned. */
static void observe(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms, uint32_t default_us,
		    double rtt_us, double raw_us)
{
	uint64_t dt = l->init && now_ms > l->stamp_ms ? now_ms - l->stamp_ms : 0;
	double w = exp(-(double)dt / decay_ms);
	double est = lb_latency_estimate(l, now_ms, decay_ms, default_us);

	/* The first sample replaces the guess, whatever its side. */
	l->ewma_us = rtt_us > est || !l->init ? rtt_us : est + rtt_us * (1.0 - w);
	if (l->ewma_us > raw_us * BALANCER_EWMA_BAND)
		l->ewma_us = raw_us * BALANCER_EWMA_BAND;
	l->stamp_ms = now_ms;
	l->init = true;
}

/* The sample to feed for the answer |rtt_us|: the lower of it and the median
 * of it and the two answers before. Noise on a shared node makes answers
 * slower, never faster, and comes as single spikes: one slow answer must not
 * count as a slow pod, two in a row do, and a fast one counts at once. */
static double sample(struct lb_latency *l, double rtt_us)
{
	double a = l->prev[0], b = l->prev[1], m;

	if (l->n_prev == 0)
		m = rtt_us;
	else if (l->n_prev == 1)
		m = fmin(rtt_us, a);
	else
		m = fmin(rtt_us, fmax(fmin(a, b), fmin(fmax(a, b), rtt_us)));
	l->prev[1] = a;
	l->prev[0] = rtt_us;
	if (l->n_prev < 2)
		l->n_prev++;
	return m;
}

/* RFC 3550's jitter estimate (the mean change between consecutive answers),
 * with a gain of 1/4 so a quiet spell after noise counts within a few
 * answers. Answers only: a failure's penalty or a deadline is no jitter, and
 * counted as such it would hide a failing or stalled pod in its own noise.
 * The first answer sets no jitter. */
static void note_jitter(struct lb_latency *l, double rtt_us)
{
	if (l->last_us > 0)
		l->jitter_us += (fabs(rtt_us - l->last_us) - l->jitter_us) / 4;
	l->last_us = rtt_us > 0 ? rtt_us : 1;
}

void lb_latency_answered(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
			 uint32_t default_us, double rtt_us, bool probe)
{
	double s;

	note_jitter(l, rtt_us);
	s = sample(l, rtt_us);
	observe(l, now_ms, decay_ms, default_us, s, rtt_us);
	/* A probe's answer is the one fresh measure of a pod shunned on old
	 * ones. Else one normal answer would only cap it at twice its latency,
	 * often still out of the band, and the pod would wait for the next. */
	if (probe)
		l->ewma_us = s;
	l->gave_up = false;
	if (l->answers < BALANCER_EWMA_FIRST_ANSWERS)
		l->answers++;
}

void lb_latency_unanswered(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
			   uint32_t default_us, double rtt_us)
{
	/* Unfiltered: a stream the client gave up on (a deadline, mostly)
	 * waited far longer than noise lasts. */
	if (rtt_us <= lb_latency_estimate(l, now_ms, decay_ms, default_us))
		return;
	l->gave_up = true;
	sample(l, rtt_us);
	observe(l, now_ms, decay_ms, default_us, rtt_us, rtt_us);
}

void lb_latency_failed(struct lb_latency *l, uint64_t now_ms, uint32_t decay_ms,
		       uint32_t default_us, double rtt_us)
{
	if (rtt_us < BALANCER_EWMA_PENALTY_US)
		rtt_us = BALANCER_EWMA_PENALTY_US;
	observe(l, now_ms, decay_ms, default_us, rtt_us, rtt_us);
}
