/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON of h2split.io/retry-policy and h2split.io/hedging-policy: one
 * object in the shape of gRPC service config's retryPolicy or hedgingPolicy
 * (gRFC A6: durations "0.01s", status codes by name or number), plus
 * "methods" and "retryBudget". Strict: an unknown field, a wrong type or a
 * value out of range rejects the whole policy, so nothing half-read applies.
 */
#ifndef H2SPLIT_RPC_POLICY_JSON_H
#define H2SPLIT_RPC_POLICY_JSON_H

#include <stddef.h>

#include "base/rpc_policy.h"

/* Parse |json| as a policy of |kind| (RPC_POLICY_RETRY or _HEDGE) into |out|.
 * 0, or -EINVAL with what is wrong in |err| (|out| then kind NONE). */
int rpc_policy_parse(const char *json, enum rpc_policy_kind kind, struct rpc_policy *out, char *err,
		     size_t errlen);

#endif
