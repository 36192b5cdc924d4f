/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Routing a stream: which Service, which endpoint (the balancer), which
 * upstream connection; retries, the wait for room (--pending-timeout) and
 * for capacity (SETTINGS_MAX_CONCURRENT_STREAMS 0). Streams are routed in
 * the splitter's flush, woken waiters first, then route_q in order, so a
 * stream reset in the same read never costs an upstream stream.
 */
#ifndef H2SPLIT_H2_ROUTE_H
#define H2SPLIT_H2_ROUTE_H

#include <stdbool.h>

#include "base/registry.h"
#include "proxy/h2/splitter_int.h"

struct h2_stream;

/* The Service a connection's streams go to: the one its recorded id names
 * if that is still the VIP:port the app dialled, else the desired one at
 * that VIP:port now (an id taken over, a port renamed), else NULL. A retired
 * one is found by id only. */
const struct state_service *h2_route_service_of(const struct snapshot *snap,
						const struct h2s_origdst *od);
/* Route one stream: a woken waiter, else the head of route_q. False when
 * there was none (the flush's loop). */
bool h2_route_step(struct splitter *s);
/* Route |st| in the next flush, behind the streams queued already. */
void h2_route_queue(struct h2_stream *st);
/* Send |st| elsewhere: it was surely not processed where it went. */
void h2_route_retry(struct h2_stream *st, const char *why);
/* Send hedged attempt |h| (h2_stream_hedge_new()) to an endpoint, one not
 * in |avoid| where one exists; it never waits for room. 0 or -errno (not
 * sent: the caller frees it). */
int h2_route_hedge(struct h2_stream *h, struct balancer_endpoint *const *avoid, size_t n_avoid);
/* Take |st| off the route queue and the balancer's wait lists. */
void h2_route_forget(struct h2_stream *st);
/* The attempt on st->ep is over (retry or end of stream): its verdict goes
 * to the balancer, its in-flight count away. */
void h2_route_attempt_done(struct h2_stream *st);
/* An upstream connection's peer allows streams again after 0: the streams
 * waiting for that are routed again now rather than at their timeout. */
void h2_route_capacity_raised(struct splitter *s);

#endif
