/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin HTTP endpoint (cfg.admin, default 127.0.0.1:9901), served by
 * libmicrohttpd on its own thread: health, readiness, Prometheus metrics and
 * JSON views of what the daemon routes. It only reads the daemon, through
 * daemon_view.h (flags, merged worker figures, a referenced snapshot), never
 * struct worker. At most 64 connections, each idle at most 10 s.
 */
#ifndef H2SPLIT_ADMIN_H
#define H2SPLIT_ADMIN_H

#include <stdint.h>

/* The routes, a contract for h2splitctl and the integration tests:
 *   GET /healthz    200 "ok\n"
 *   GET /readyz     200 "ready\n" when synced, redirecting and not draining;
 *                   else 503 "not ready: discovery not synced, not redirecting,
 *                   draining\n" (only the reasons that apply)
 *   GET /metrics    text/plain; version=0.0.4 (names: see admin.c, metrics.h)
 *   GET /services   {"generation":N,"services":[{"id","namespace","name",
 *                   "port_name","port","vips":["ip"],"lb_policy","upstream_tls",
 *                   "endpoints":N,"endpoints_usable":N,"balancing":{"policy",
 *                   "policy_source":"annotation"|"default",
 *                   "max_inflight_per_endpoint","max_inflight_per_service",
 *                   "max_pending","slow_start_ms" (0: none/off),
 *                   "health_check":"grpc"|"off", with grpc also
 *                   "health_check_service","health_check_interval_ms";
 *                   "weights":bool}}]}
 *   GET /endpoints  {"generation":N,"services":[{"id","service":"ns/name:port",
 *                   "endpoints":[{"ip","port","pod","ready","serving",
 *                   "terminating","active","requests","failures","retries",
 *                   "resets_sent","resets_received","connect_failures"}]}]}
 *   other paths 404; methods other than GET and HEAD 405.
 */

struct daemon;
struct admin;

/* Listen on d->cfg.admin and serve until admin_stop(). NULL on failure, after
 * printing "h2splitd: admin: cannot listen on ADDR: reason" to stderr. |d|
 * must outlive the endpoint, and d->workers[0..n_workers) must stay valid
 * until admin_stop() returns. */
struct admin *admin_start(struct daemon *d);
/* Stop serving (waits for a request in progress) and free. NULL-safe. */
void admin_stop(struct admin *a);
/* The port actually bound (the kernel's pick when cfg.admin said port 0). */
uint16_t admin_port(const struct admin *a);

#endif
