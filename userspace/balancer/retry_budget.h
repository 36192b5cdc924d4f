/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A retry budget as Linkerd and Finagle keep one: retries may add |ratio| of
 * the requests seen lately plus |min_per_s| a second, so a failing Service
 * gets at most that much extra load however many RPCs fail. A token bucket:
 * each request deposits |ratio|, time deposits |min_per_s|, each retry takes
 * one; what it holds is capped at one second of the floor plus |ratio| of the
 * requests of the last 10 s, so quiet times are not saved up for a storm.
 * Over any run of T seconds with N requests: retries <= ratio*N + min_per_s*(T+1).
 */
#ifndef H2SPLIT_RETRY_BUDGET_H
#define H2SPLIT_RETRY_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#define RETRY_BUDGET_WINDOW_MS 5000 /* two of them: the last 10 s of requests */

struct retry_budget {
	double tokens;
	uint64_t last_ms;	    /* of the last time deposit */
	uint64_t win_start_ms;	    /* the current window began */
	uint32_t win_cur, win_prev; /* requests in it and in the one before */
	bool started;
};

/* A request that may be retried starts. */
void retry_budget_deposit(struct retry_budget *b, uint64_t now_ms, double ratio, double min_per_s);
/* Take one retry from the budget: false when it is exhausted. */
bool retry_budget_withdraw(struct retry_budget *b, uint64_t now_ms, double ratio, double min_per_s);

#endif
