/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One active health probe: a fresh non-blocking TCP connection from the
 * daemon's netns carrying one grpc.health.v1.Health/Check over an nghttp2
 * client session. The caller (health.c) owns the slot and drives it from its
 * event loop: watch health_probe_events(), call health_probe_step() on events, and
 * health_probe_end() when done or past its deadline.
 */
#ifndef H2SPLIT_HEALTH_PROBE_H
#define H2SPLIT_HEALTH_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

#include "base/loop.h"
#include "base/state.h"

/* A probe in flight: one slot of the checker's fixed array (fd < 0: free).
 * The endpoint is named by key, not pointer: the checker's list may be
 * rebuilt while the probe runs. */
struct health_probe {
	int fd;
	bool connected;
	uint32_t events;	  /* the mask the loop watches |fd| for */
	struct loop_timer *timer; /* the checker's: ends the probe at its deadline */
	uint32_t service_id;
	struct h2s_ip ip;
	uint16_t port;
	nghttp2_session *s; /* owned */
	uint8_t req[5 + 3 + STATE_HEALTH_SERVICE_MAX];
	size_t req_len, req_off;
	uint8_t resp[64]; /* a HealthCheckResponse is a few bytes */
	size_t resp_len;
	bool resp_overflow;
	int http_status, grpc_status;
	bool closed; /* the stream ended */
	int err;     /* why it did not, once done: -ETIMEDOUT until known */
};

/* Start asking |ip|:|port| for the health of gRPC service |service| in the
 * free slot |p|: 0 (connecting), or -errno at once (then health_probe_end() it). */
int health_probe_start(struct health_probe *p, uint32_t service_id, const struct h2s_ip *ip,
		       uint16_t port, const char *service);
/* The EPOLLIN/EPOLLOUT mask |p| waits for. */
uint32_t health_probe_events(const struct health_probe *p);
/* Drive |p| on |events| from the loop: true once it is done. */
bool health_probe_step(struct health_probe *p, uint32_t events);
/* The HealthCheckResponse status of a finished |p| (1: SERVING), or -errno
 * (-ETIMEDOUT when it never finished). */
int health_probe_result(const struct health_probe *p);
/* Close and free the slot (safe on a slot health_health_probe_start() left half set up);
 * the caller has taken |fd| off its loop. */
void health_probe_end(struct health_probe *p);

#endif
