/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared harness of the splitter fuzz targets (fuzz_downstream.c,
 * fuzz_upstream.c): what a worker gives the splitter (loop, stats, metrics,
 * config: struct splitter_ctx) with a splitter built fresh for every input, a downstream connection on a socketpair
 * handed over with splitter_conn_start() exactly as the worker does after
 * sniffing the preface, and one Service whose only endpoint is a listener on
 * 127.0.0.1 that the harness itself serves. The loop is driven one pass at a
 * time (a 0 ms timer stops it), so everything runs on this thread and an
 * input is deterministic up to kernel socket buffering. Only public module
 * interfaces are used: no seam in the daemon was needed.
 */
#ifndef H2SPLIT_FUZZ_SPLITTER_H
#define H2SPLIT_FUZZ_SPLITTER_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"
#include "base/state.h"
#include "proxy/h2/splitter.h"
#include "base/stats.h"
#include "telemetry/metrics.h"

#define FZ_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define FZ_PREFACE_LEN 24
#define FZ_MAX_UPS 8
#define FZ_UP_BUF (256 * 1024)

enum { FZ_DATA = 0, FZ_HEADERS = 1, FZ_RST_STREAM = 3, FZ_SETTINGS = 4, FZ_PING = 6,
       FZ_GOAWAY = 7, FZ_WINDOW_UPDATE = 8, FZ_CONTINUATION = 9 };
#define FZ_END_STREAM 0x1
#define FZ_ACK 0x1
#define FZ_END_HEADERS 0x4

struct fz_env {
	struct config cfg;
	struct loop *loop;
	struct worker_stats stats;
	struct metrics *metrics;
	struct splitter_ctx ctx;
	int n_conns; /* downstream connections handed over and not closed */
	int lfd;        /* the endpoint's listener, 127.0.0.1:lport */
	uint16_t lport;
	struct snapshot *snap;
	uint32_t svc_id;
};

/* An upstream connection the daemon opened to the endpoint; the harness is
 * its server. */
struct fz_up {
	int fd;
	bool preface_seen;
	bool settings_sent; /* the target's business */
	int32_t hdr_sid; /* HEADERS without END_HEADERS seen on this stream */
	int32_t last_sid;
	int answered;
	size_t len;
	uint8_t *buf; /* FZ_UP_BUF bytes received, not yet parsed */
};

struct fz_run {
	struct fz_env *e;
	struct splitter *s;
	int cl; /* the client's end of the downstream socketpair; -1 once closed */
	struct fz_up ups[FZ_MAX_UPS];
	int n_ups;
};

/* ---- bytes on the wire ---- */

static inline size_t fz_frame(uint8_t *p, uint8_t type, uint8_t flags, uint32_t sid,
			      const void *payload, size_t len)
{
	p[0] = (uint8_t)(len >> 16);
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	p[3] = type;
	p[4] = flags;
	p[5] = (uint8_t)(sid >> 24) & 0x7f;
	p[6] = (uint8_t)(sid >> 16);
	p[7] = (uint8_t)(sid >> 8);
	p[8] = (uint8_t)sid;
	if (len)
		memcpy(p + 9, payload, len);
	return 9 + len;
}

static inline size_t fz_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

/* HPACK literal header field without indexing, new name, no Huffman
 * (names and values shorter than 127 bytes). */
static inline size_t fz_lit(uint8_t *p, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value), n = 0;

	p[n++] = 0;
	p[n++] = (uint8_t)nl;
	memcpy(p + n, name, nl);
	n += nl;
	p[n++] = (uint8_t)vl;
	memcpy(p + n, value, vl);
	return n + vl;
}

/* A gRPC request's header block. */
static inline size_t fz_request_block(uint8_t *p, const char *timeout)
{
	size_t n = 0;

	n += fz_lit(p + n, ":method", "POST");
	n += fz_lit(p + n, ":scheme", "http");
	n += fz_lit(p + n, ":path", "/h2split.test.Echo/Unary");
	n += fz_lit(p + n, ":authority", "echo.default.svc");
	n += fz_lit(p + n, "content-type", "application/grpc");
	n += fz_lit(p + n, "te", "trailers");
	if (timeout)
		n += fz_lit(p + n, "grpc-timeout", timeout);
	return n;
}

/* ---- I/O helpers ---- */

static inline void fz_write(int fd, const uint8_t *p, size_t n)
{
	while (fd >= 0 && n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w <= 0)
			return; /* full or closed: the rest is dropped, as a peer's would be */
		p += w;
		n -= (size_t)w;
	}
}

static inline void fz_drain(int fd)
{
	uint8_t buf[16384];

	while (fd >= 0 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

static void fz_stop(struct loop *l, struct loop_timer *t, void *arg)
{
	(void)t;
	(void)arg;
	loop_stop(l);
}

/* One pass of the worker's loop: ready fds, due timers, pass hooks. */
static inline void fz_pass(struct fz_env *e)
{
	if (loop_timer_add(e->loop, 0, fz_stop, NULL))
		loop_run(e->loop);
}

/* ---- the environment (once per process) ---- */

static int fz_listener(struct fz_env *e)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);

	e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (e->lfd < 0 || bind(e->lfd, (struct sockaddr *)&sin, sizeof(sin)) ||
	    listen(e->lfd, 64) || getsockname(e->lfd, (struct sockaddr *)&sin, &sl))
		return -1;
	e->lport = ntohs(sin.sin_port);
	return 0;
}

static int fz_state(struct fz_env *e)
{
	struct state *st = state_new();
	struct state_endpoint ep = {.port = e->lport, .ready = true, .serving = true};
	struct state_service svc = {.port = 50051, .n_vips = 1, .eps = &ep, .n_eps = 1};
	struct in_addr a;

	if (!st)
		return -1;
	strcpy(svc.ns, "default");
	strcpy(svc.name, "echo");
	strcpy(svc.port_name, "grpc");
	strcpy(ep.pod, "echo-0");
	/* A retry policy: Trailers-Only UNAVAILABLE/INTERNAL answers and resets
	 * before any response are retried (h2_retry.c) on what the upstream sends. */
	svc.retry = (struct rpc_policy){.kind = RPC_POLICY_RETRY,
					.max_attempts = 3,
					.initial_backoff_ms = 1,
					.max_backoff_ms = 2,
					.backoff_multiplier = 2,
					.codes = 1u << 14 | 1u << 13,
					.budget_ratio = 1,
					.budget_min_per_s = 100};
	inet_pton(AF_INET, "10.96.0.10", &a);
	h2s_ip_from_v4(&svc.vips[0], a);
	inet_pton(AF_INET, "127.0.0.1", &a);
	h2s_ip_from_v4(&ep.ip, a);
	if (state_add_service(st, &svc) || state_finish(st)) {
		state_free(st);
		return -1;
	}
	e->svc_id = st->svcs[0].id;
	e->snap = registry_snapshot_new(st, 1);
	return e->snap ? 0 : -1;
}

static void fz_conn_closed(void *arg, uint64_t pod_key)
{
	struct fz_env *e = arg;

	(void)pod_key;
	e->n_conns--;
	stats_dec(&e->stats, ST_DOWNSTREAM_CONNS_ACTIVE);
}

static struct fz_env *fz_env(void)
{
	static struct fz_env env;
	static bool ready;
	char *argv[] = {"h2splitd", "--services-file", "/dev/null", "--access-log", NULL};
	char err[256];

	if (ready)
		return &env;
	signal(SIGPIPE, SIG_IGN);
	log_set_level(getenv("FUZZ_LOG") ? LOG_DEBUG : LOG_ERROR + 1);
	if (config_parse(&env.cfg, 4, argv, err, sizeof(err)))
		abort();
	env.loop = loop_new();
	env.metrics = metrics_new();
	if (!env.loop || !env.metrics || fz_listener(&env) || fz_state(&env))
		abort();
	env.ctx = (struct splitter_ctx){
	    .loop = env.loop,
	    .cfg = &env.cfg,
	    .stats = &env.stats,
	    .metrics = env.metrics,
	    .owner = {.closed = fz_conn_closed, .arg = &env},
	};
	ready = true;
	return &env;
}

/* ---- one input ---- */

/* Start a run: a fresh splitter and a downstream connection that has already
 * sent |pre| (which starts with the preface, as the worker guarantees). */
static inline void fz_run_start(struct fz_run *r, const uint8_t *pre, size_t n)
{
	struct conn_info ci;
	struct sockaddr_in *cli = (struct sockaddr_in *)&ci.client;
	int sv[2];

	memset(r, 0, sizeof(*r));
	r->e = fz_env();
	r->cl = -1;
	r->s = splitter_new(&r->e->ctx);
	if (!r->s)
		abort();
	splitter_snapshot_changed(r->s, r->e->snap); /* the harness's ref, kept for the process */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		abort();
	r->cl = sv[1];
	memset(&ci, 0, sizeof(ci));
	cli->sin_family = AF_INET;
	cli->sin_port = htons(40000);
	inet_pton(AF_INET, "10.244.0.9", &cli->sin_addr);
	ci.od.service_id = r->e->svc_id;
	/* What BPF records: the VIP:port the app dialled (v4-mapped, port in
	 * network order), which the Service's id must still stand for. */
	memcpy(ci.od.addr, r->e->snap->st->svcs[0].vips[0].b, sizeof(ci.od.addr));
	ci.od.port = htons(r->e->snap->st->svcs[0].port);
	ci.od.family = AF_INET;
	r->e->n_conns++; /* as the worker's conn_accepted() does */
	stats_inc(&r->e->stats, ST_DOWNSTREAM_CONNS_ACTIVE);
	splitter_conn_start(r->s, sv[0], &ci, pre, n);
}

static inline void fz_accept(struct fz_run *r)
{
	for (;;) {
		int fd = accept4(r->e->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct fz_up *u;

		if (fd < 0)
			return;
		if (r->n_ups == FZ_MAX_UPS) {
			close(fd);
			continue;
		}
		u = &r->ups[r->n_ups++];
		memset(u, 0, sizeof(*u));
		u->fd = fd;
		u->buf = malloc(FZ_UP_BUF);
		if (!u->buf)
			abort();
	}
}

/* Serve |u| however the target wants: called with each complete frame the
 * daemon sent on it (after its preface). */
typedef void fz_frame_cb(struct fz_run *r, struct fz_up *u, uint8_t type, uint8_t flags,
			 int32_t sid, const uint8_t *payload, size_t len);

static inline void fz_serve(struct fz_run *r, struct fz_up *u, fz_frame_cb *cb)
{
	size_t off = 0;
	ssize_t n;

	if (u->fd < 0)
		return;
	while (u->len < FZ_UP_BUF &&
	       (n = recv(u->fd, u->buf + u->len, FZ_UP_BUF - u->len, MSG_DONTWAIT)) > 0)
		u->len += (size_t)n;
	if (!u->preface_seen) {
		if (u->len < FZ_PREFACE_LEN)
			return;
		u->preface_seen = true;
		off = FZ_PREFACE_LEN;
	}
	while (u->len - off >= 9) {
		const uint8_t *p = u->buf + off;
		size_t flen = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
		int32_t sid = (int32_t)(((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 |
					 (uint32_t)p[7] << 8 | p[8]) & 0x7fffffff);

		if (u->len - off < 9 + flen)
			break;
		if (cb && u->fd >= 0)
			cb(r, u, p[3], p[4], sid, p + 9, flen);
		off += 9 + flen;
	}
	memmove(u->buf, u->buf + off, u->len - off);
	u->len -= off;
	if (u->len == FZ_UP_BUF) /* a frame larger than we keep: give up on it */
		u->len = 0;
}

static inline void fz_up_close(struct fz_up *u)
{
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
}

/* Run up to |passes| loop passes, serving upstreams and draining the client. */
static inline void fz_pump(struct fz_run *r, int passes, fz_frame_cb *cb)
{
	for (int i = 0; i < passes; i++) {
		fz_pass(r->e);
		fz_accept(r);
		for (int k = 0; k < r->n_ups; k++)
			fz_serve(r, &r->ups[k], cb);
		fz_drain(r->cl);
	}
}

/* End a run: the client leaves, the upstreams hang up, the splitter goes. */
static inline void fz_run_end(struct fz_run *r, fz_frame_cb *cb)
{
	fz_pump(r, 4, cb);
	if (r->cl >= 0)
		close(r->cl);
	r->cl = -1;
	fz_pump(r, 3, cb);
	for (int k = 0; k < r->n_ups; k++)
		fz_up_close(&r->ups[k]);
	fz_pump(r, 2, NULL);
	splitter_free(r->s);
	for (int k = 0; k < r->n_ups; k++)
		free(r->ups[k].buf);
	/* Connections the splitter never took (a refused accept) must not linger. */
	for (int fd; (fd = accept4(r->e->lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
		close(fd);
}

#endif
