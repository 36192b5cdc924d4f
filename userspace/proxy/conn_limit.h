/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Open downstream connections per client (--max-connections-per-pod), shared
 * by every worker: a count per key (the client's cgroup id) in one fixed
 * open-addressing table under a mutex, touched once when a connection is
 * accepted and once when it closes, never per stream. A key's entry exists
 * exactly while it has connections.
 */
#ifndef H2SPLIT_CONN_LIMIT_H
#define H2SPLIT_CONN_LIMIT_H

#include <stdint.h>

/* Distinct clients tracked at once; past that, new clients are not limited
 * (fail open) and conn_limit_take() says so. */
#define CONN_LIMIT_SLOTS 16384

struct conn_limit;

/* At most |max| connections per key (max >= 1). NULL on ENOMEM. */
struct conn_limit *conn_limit_new(uint32_t max);
void conn_limit_free(struct conn_limit *cl);
/* Count one more connection of |key| (non-zero). 0: counted, release it with
 * conn_limit_put(); -EBUSY: |key| is at its limit (nothing counted);
 * -ENOSPC: the table is full (nothing counted: let it through). */
int conn_limit_take(struct conn_limit *cl, uint64_t key);
/* One connection of |key| (counted by conn_limit_take()) ended. */
void conn_limit_put(struct conn_limit *cl, uint64_t key);
/* Connections counted for |key| now (tests, /metrics). */
uint32_t conn_limit_count(struct conn_limit *cl, uint64_t key);

#endif
