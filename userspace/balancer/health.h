/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Active gRPC health checks (Service annotation h2split.io/health-check:
 * "grpc"). One checker thread probes every endpoint of such services with
 * grpc.health.v1.Health/Check, many at once, and publishes the verdicts in a
 * health_table that the workers read on every pick without a lock: one probe
 * per endpoint per interval whatever the number of workers, and one verdict
 * for all of them. Invariant: only the checker thread writes the table.
 */
#ifndef H2SPLIT_HEALTH_H
#define H2SPLIT_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/state.h"

/* Probes in a row that flip an endpoint: a failure or NOT_SERVING marks it
 * unhealthy at once (the pod said so, or cannot answer), successes bring it
 * back only after this many, so a flapping pod stays out. */
#define HEALTH_OK_THRESHOLD 2
#define HEALTH_INTERVAL_MS 5000 /* h2split.io/health-check-interval default */
#define HEALTH_TIMEOUT_MS 1000	/* one probe: connect, ask, answer */
/* Probes in flight at once; more due endpoints wait for a free slot. */
#define HEALTH_PROBES_MAX 64
/* Unhealthy endpoints the table can hold; past that, more stay usable. */
#define HEALTH_TABLE_SLOTS 8192

struct health_table;

/* NULL on ENOMEM. */
struct health_table *health_table_new(void);
void health_table_free(struct health_table *t);
/* Any thread: does the checker hold endpoint |ip|:|port| of |service_id|
 * unhealthy? NULL |t|: no. */
bool health_table_unhealthy(const struct health_table *t, uint32_t service_id,
			    const struct h2s_ip *ip, uint16_t port);
/* Checker side: mark or clear. 0, or -ENOSPC when the table is full. */
int health_table_set(struct health_table *t, uint32_t service_id, const struct h2s_ip *ip,
		     uint16_t port, bool unhealthy);

/* The wire format, hand-encoded (no protobuf library for two fields). */
/* A gRPC-framed HealthCheckRequest{service = |service|} into |buf|: its
 * length, or -ENOSPC when |len| is too small. */
int health_encode_request(const char *service, uint8_t *buf, size_t len);
/* The status (SERVING = 1, NOT_SERVING = 2, ...) of a gRPC-framed
 * HealthCheckResponse in |buf|, or -EINVAL when it is not one. */
int health_parse_response(const uint8_t *buf, size_t len);

enum health_change {
	HEALTH_SAME,
	HEALTH_TURNED_UNHEALTHY,
	HEALTH_TURNED_HEALTHY,
};

/* What a probe answering |status| (1: SERVING; any other status or -errno:
 * failed) does to an endpoint that is |*unhealthy|, with |*oks| successes in
 * a row since; both are updated. */
enum health_change health_verdict(bool *unhealthy, uint32_t *oks, int status);

struct snapshot;
struct health_checker;

/* Start the checker thread. |get_snapshot| returns the newest snapshot with
 * a reference the checker drops (NULL: none yet). NULL on failure. */
struct health_checker *health_checker_start(struct health_table *t,
					    struct snapshot *(*get_snapshot)(void *arg), void *arg);
/* Stop and join the thread (NULL-safe). */
void health_checker_stop(struct health_checker *hc);

#endif
