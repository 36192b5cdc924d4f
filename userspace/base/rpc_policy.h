/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A Service's retry or hedging policy (the annotations h2split.io/retry-policy
 * and h2split.io/hedging-policy, in the shape of gRPC service config's
 * retryPolicy / hedgingPolicy, gRFC A6): plain data kept in the state, so it
 * is copied with it and never points anywhere. Discovery parses it; the
 * splitter applies it. Also the gRPC status names both of them use.
 */
#ifndef H2SPLIT_RPC_POLICY_H
#define H2SPLIT_RPC_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RPC_POLICY_MAX_ATTEMPTS 5    /* gRFC A6's ceiling */
#define RPC_POLICY_METHODS_MAX 256   /* bytes of the "methods" list, '\n'-joined */
#define RPC_POLICY_GRPC_CODES 17     /* grpc-status 0..16 */
#define RPC_BUDGET_RATIO_DEFAULT 0.2 /* retries per request, as Linkerd's default */
#define RPC_BUDGET_MIN_PER_S_DEFAULT 10

enum rpc_policy_kind {
	RPC_POLICY_NONE = 0,
	RPC_POLICY_RETRY, /* retryPolicy */
	RPC_POLICY_HEDGE, /* hedgingPolicy */
};

struct rpc_policy {
	uint8_t kind;	      /* enum rpc_policy_kind; NONE: no policy */
	uint8_t max_attempts; /* 2..RPC_POLICY_MAX_ATTEMPTS, the first attempt included */
	uint32_t initial_backoff_ms, max_backoff_ms; /* retry: > 0 */
	double backoff_multiplier;		     /* retry: > 0 */
	uint32_t hedging_delay_ms;		     /* hedge: 0: all attempts at once */
	uint32_t codes;		 /* bit per grpc-status: retryable (retry) or non-fatal (hedge) */
	double budget_ratio;	 /* retries per request (retryBudget.ratio) */
	double budget_min_per_s; /* ... plus this many per second (minPerSecond) */
	char methods[RPC_POLICY_METHODS_MAX]; /* "pkg.Svc/Method" or "pkg.Svc/", each
					       * followed by '\n'; "": every method */
};

/* Whether |p| covers the request with :path |path| (|len| bytes, "/pkg.Svc/M"). */
bool rpc_policy_covers(const struct rpc_policy *p, const uint8_t *path, size_t len);
/* "UNAVAILABLE" for 14, NULL past 16. */
const char *rpc_policy_code_name(int code);
/* A status code by name ("UNAVAILABLE", any case) or number ("14"): 0..16, or -1. */
int rpc_policy_code_parse(const char *s);
/* One line for logs and h2splitctl: "retry attempts=3 backoff=10ms..100ms x2
 * on=UNAVAILABLE budget=0.2+10/s methods=all". Returns |buf|. */
const char *rpc_policy_str(const struct rpc_policy *p, char *buf, size_t len);

#endif
