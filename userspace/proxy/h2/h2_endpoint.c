// SPDX-License-Identifier: Apache-2.0
/*
 * The balancer's endpoints as the splitter shows them (see h2_endpoint.h):
 * names for logs, event counters, and the balancer's state copied into the
 * worker's metrics tables. Reads balancer_endpoint, writes metrics; keeps
 * nothing.
 */
#include <arpa/inet.h>
#include <stdio.h>

#include "proxy/h2/h2_endpoint.h"

const char *h2_endpoint_str(const struct balancer_endpoint *ep, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (!ep) {
		snprintf(buf, len, "-");
		return buf;
	}
	h2s_ip_str(&ep->ip, ip, sizeof(ip));
	snprintf(buf, len, h2s_ip_is_v4(&ep->ip) ? "%s:%u" : "[%s]:%u", ip, ep->port);
	return buf;
}

void h2_endpoint_event(struct metrics *m, const struct balancer_endpoint *ep,
		       enum metrics_upstream_event ev)
{
	if (ep)
		metrics_upstream_event(m, ep->service_id, &ep->ip, ep->port, ev);
}

void h2_endpoint_publish(struct metrics *m, const struct balancer_endpoint *ep)
{
	struct balancer_endpoint_info bi = balancer_endpoint_info(ep);
	struct metrics_endpoint_health h = {
	    .ejected_until_ms = bi.ejected_until_ms,
	    .backoff_until_ms = bi.backoff_until_ms,
	    .consec_failures = bi.consec_failures,
	    .ejections = bi.ejections,
	    .ewma_us = bi.latency_us,
	    .jitter_us = bi.jitter_us,
	    .warm_until_ms = bi.warm_until_ms,
	};

	metrics_endpoint_health(m, ep->service_id, &ep->ip, ep->port, &h);
}
