/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How the splitter shows a balancer endpoint to others: its name in logs and
 * messages, its events and what the balancer thinks of it (ejection,
 * backoff, ewma) in the worker's metrics tables, which /endpoints and
 * /metrics merge on scrape. The one place balancer fields are copied into
 * telemetry: balancer/ and telemetry/ know nothing of each other.
 */
#ifndef H2SPLIT_H2_ENDPOINT_H
#define H2SPLIT_H2_ENDPOINT_H

#include <stddef.h>

#include "balancer/balancer.h"
#include "telemetry/metrics.h"

/* "ip:port" or "[ip]:port" into |buf| (of |len|); "-" for NULL. Returns |buf|. */
const char *h2_endpoint_str(const struct balancer_endpoint *ep, char *buf, size_t len);
/* Count |ev| against |ep| (NULL: nothing). */
void h2_endpoint_event(struct metrics *m, const struct balancer_endpoint *ep,
		       enum metrics_upstream_event ev);
/* Publish the balancer's view of |ep| after it changed (a report, a connect
 * failure). */
void h2_endpoint_publish(struct metrics *m, const struct balancer_endpoint *ep);

#endif
