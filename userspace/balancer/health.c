// SPDX-License-Identifier: Apache-2.0
/*
 * Active gRPC health checks (see health.h). The table is open addressing
 * over atomic 64-bit slots holding the (odd) hash of an unhealthy endpoint:
 * readers probe with plain atomic loads, the one writer stores whole slots.
 * The checker runs up to HEALTH_PROBES_MAX probes at once, each a fresh,
 * non-blocking HTTP/2 connection from the daemon's netns bounded by
 * HEALTH_TIMEOUT_MS, in one poll loop: endpoints that black-hole hold a slot
 * for their timeout but never delay the others' probes. Its per-endpoint
 * state and probe slots are private to its thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "balancer/health.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"

#define SLOT_EMPTY 0
#define SLOT_TOMB 2 /* even: never a key */
#define TICK_MS 100 /* how often the checker looks for a stop, a new snapshot, due probes */

/* ---- the shared table ---- */

struct health_table {
	_Atomic uint64_t slots[HEALTH_TABLE_SLOTS];
};

struct health_table *health_table_new(void)
{
	return calloc(1, sizeof(struct health_table));
}

void health_table_free(struct health_table *t)
{
	free(t);
}

/* FNV-1a of the endpoint, made odd (never EMPTY nor TOMB). */
static uint64_t ep_key(uint32_t service_id, const struct h2s_ip *ip, uint16_t port)
{
	uint64_t h = 0xcbf29ce484222325ull;
	uint8_t b[sizeof(service_id) + sizeof(ip->b) + sizeof(port)];

	memcpy(b, &service_id, sizeof(service_id));
	memcpy(b + sizeof(service_id), ip->b, sizeof(ip->b));
	memcpy(b + sizeof(service_id) + sizeof(ip->b), &port, sizeof(port));
	for (size_t i = 0; i < sizeof(b); i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h | 1;
}

bool health_table_unhealthy(const struct health_table *t, uint32_t service_id,
			    const struct h2s_ip *ip, uint16_t port)
{
	uint64_t k, v;

	if (!t)
		return false;
	k = ep_key(service_id, ip, port);
	for (size_t i = 0, at = (size_t)(k >> 1); i < HEALTH_TABLE_SLOTS; i++, at++) {
		v = atomic_load_explicit(&t->slots[at % HEALTH_TABLE_SLOTS], memory_order_relaxed);
		if (v == k)
			return true;
		if (v == SLOT_EMPTY)
			return false;
	}
	return false;
}

int health_table_set(struct health_table *t, uint32_t service_id, const struct h2s_ip *ip,
		     uint16_t port, bool unhealthy)
{
	uint64_t k = ep_key(service_id, ip, port);
	_Atomic uint64_t *free_slot = NULL;

	for (size_t i = 0, at = (size_t)(k >> 1); i < HEALTH_TABLE_SLOTS; i++, at++) {
		_Atomic uint64_t *s = &t->slots[at % HEALTH_TABLE_SLOTS];
		uint64_t v = atomic_load_explicit(s, memory_order_relaxed);

		if (v == k) {
			if (!unhealthy)
				atomic_store_explicit(s, SLOT_TOMB, memory_order_relaxed);
			return 0;
		}
		if (v == SLOT_TOMB && !free_slot)
			free_slot = s;
		if (v == SLOT_EMPTY) {
			if (!free_slot)
				free_slot = s;
			break;
		}
	}
	if (!unhealthy)
		return 0;
	if (!free_slot)
		return -ENOSPC;
	atomic_store_explicit(free_slot, k, memory_order_relaxed);
	return 0;
}

/* ---- wire format ---- */

int health_encode_request(const char *service, uint8_t *buf, size_t len)
{
	size_t sl = service ? strlen(service) : 0, n = 0, msg;

	if (sl > 16383) /* two varint bytes */
		return -ENOSPC;
	msg = sl ? 1 + (sl > 127 ? 2 : 1) + sl : 0;
	if (len < 5 + msg)
		return -ENOSPC;
	buf[n++] = 0; /* not compressed */
	buf[n++] = (uint8_t)(msg >> 24);
	buf[n++] = (uint8_t)(msg >> 16);
	buf[n++] = (uint8_t)(msg >> 8);
	buf[n++] = (uint8_t)msg;
	if (!sl)
		return (int)n;
	buf[n++] = 0x0a; /* field 1, length-delimited */
	if (sl > 127) {
		buf[n++] = (uint8_t)(0x80 | (sl & 0x7f));
		buf[n++] = (uint8_t)(sl >> 7);
	} else {
		buf[n++] = (uint8_t)sl;
	}
	memcpy(buf + n, service, sl);
	return (int)(n + sl);
}

/* A varint at |*p| (< |end|): 0, or -EINVAL. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	*out = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -EINVAL;
		*out |= (uint64_t)(**p & 0x7f) << shift;
		if (!(*(*p)++ & 0x80))
			return 0;
	}
	return -EINVAL;
}

int health_parse_response(const uint8_t *buf, size_t len)
{
	const uint8_t *p = buf + 5, *end;
	uint64_t msg, tag, v, status = 0; /* proto3: absent is UNKNOWN (0) */

	if (len < 5 || buf[0] != 0)
		return -EINVAL;
	msg = (uint64_t)buf[1] << 24 | (uint64_t)buf[2] << 16 | (uint64_t)buf[3] << 8 | buf[4];
	if (msg > len - 5)
		return -EINVAL;
	end = p + msg;
	while (p < end) {
		if (varint(&p, end, &tag))
			return -EINVAL;
		switch (tag & 7) {
		case 0: /* varint */
			if (varint(&p, end, &v))
				return -EINVAL;
			if (tag >> 3 == 1)
				status = v;
			break;
		case 1: /* fixed64 */
			if (end - p < 8)
				return -EINVAL;
			p += 8;
			break;
		case 2: /* length-delimited */
			if (varint(&p, end, &v) || v > (uint64_t)(end - p))
				return -EINVAL;
			p += v;
			break;
		case 5: /* fixed32 */
			if (end - p < 4)
				return -EINVAL;
			p += 4;
			break;
		default:
			return -EINVAL;
		}
	}
	return status > 1000 ? -EINVAL : (int)status;
}

/* ---- the verdict ---- */

enum health_change health_verdict(bool *unhealthy, uint32_t *oks, int status)
{
	if (status == 1 && !*unhealthy)
		return HEALTH_SAME;
	if (status == 1 && ++*oks < HEALTH_OK_THRESHOLD)
		return HEALTH_SAME;
	*oks = 0;
	if (status == 1) {
		*unhealthy = false;
		return HEALTH_TURNED_HEALTHY;
	}
	if (*unhealthy)
		return HEALTH_SAME;
	*unhealthy = true;
	return HEALTH_TURNED_UNHEALTHY;
}

/* ---- one probe ---- */

/* A probe in flight: one slot of the checker's fixed array (fd < 0: free).
 * The endpoint is named by key, not pointer: the checker's list may be
 * rebuilt while the probe runs. */
struct probe {
	int fd;
	bool connected;
	uint64_t deadline_ms;
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

static ssize_t p_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct probe *p = ud;
	ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL);

	(void)s;
	(void)flags;
	if (n >= 0)
		return n;
	return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static ssize_t p_recv(nghttp2_session *s, uint8_t *buf, size_t len, int flags, void *ud)
{
	struct probe *p = ud;
	ssize_t n = recv(p->fd, buf, len, 0);

	(void)s;
	(void)flags;
	if (n > 0)
		return n;
	if (n == 0)
		return NGHTTP2_ERR_EOF;
	return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int p_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		    const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	struct probe *p = ud;
	char v[16];

	(void)s;
	(void)f;
	(void)flags;
	if (vl >= sizeof(v))
		return 0;
	memcpy(v, value, vl);
	v[vl] = 0;
	if (nl == 7 && !memcmp(name, ":status", 7))
		p->http_status = atoi(v);
	else if (nl == 11 && !memcmp(name, "grpc-status", 11))
		p->grpc_status = atoi(v);
	return 0;
}

static int p_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		  void *ud)
{
	struct probe *p = ud;

	(void)s;
	(void)flags;
	(void)id;
	if (len > sizeof(p->resp) - p->resp_len) {
		p->resp_overflow = true;
		return 0;
	}
	memcpy(p->resp + p->resp_len, data, len);
	p->resp_len += len;
	return 0;
}

static int p_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
	struct probe *p = ud;

	(void)s;
	(void)id;
	(void)code;
	p->closed = true;
	return 0;
}

static ssize_t p_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
		      nghttp2_data_source *src, void *ud)
{
	struct probe *p = ud;
	size_t n = p->req_len - p->req_off;

	(void)s;
	(void)id;
	(void)src;
	if (n > len)
		n = len;
	memcpy(buf, p->req + p->req_off, n);
	p->req_off += n;
	if (p->req_off == p->req_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static int64_t remaining(uint64_t deadline_ms)
{
	uint64_t now = loop_now_ms();

	return now < deadline_ms ? (int64_t)(deadline_ms - now) : 0;
}

/* A non-blocking socket connecting to |ip|:|port|: the fd, or -errno. */
static int probe_socket(const struct h2s_ip *ip, uint16_t port)
{
	struct sockaddr_storage ss = {0};
	int fd, err;

	if (h2s_ip_is_v4(ip)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, ip->b + 12, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, ip->b, 16);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, sizeof(ss)) && errno != EINPROGRESS) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static nghttp2_session *probe_session(struct probe *p)
{
	nghttp2_session_callbacks *cb;
	nghttp2_session *s = NULL;

	if (nghttp2_session_callbacks_new(&cb))
		return NULL;
	nghttp2_session_callbacks_set_send_callback(cb, p_send);
	nghttp2_session_callbacks_set_recv_callback(cb, p_recv);
	nghttp2_session_callbacks_set_on_header_callback(cb, p_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, p_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, p_close);
	if (nghttp2_session_client_new(&s, cb, p))
		s = NULL;
	nghttp2_session_callbacks_del(cb);
	return s;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

/* Start asking |ip|:|port| for the health of gRPC service |service| in the
 * free slot |p|: 0 (in flight until |deadline_ms|), or -errno at once. */
static int probe_start(struct probe *p, uint32_t service_id, const struct h2s_ip *ip,
		       uint16_t port, const char *service, uint64_t deadline_ms)
{
	nghttp2_data_provider body = {.read_callback = p_body};
	char authority[INET6_ADDRSTRLEN + 10], ipbuf[INET6_ADDRSTRLEN];
	int n;

	*p = (struct probe){.fd = -1, .deadline_ms = deadline_ms, .service_id = service_id,
			    .ip = *ip, .port = port, .grpc_status = -1, .err = -ETIMEDOUT};
	n = health_encode_request(service, p->req, sizeof(p->req));
	if (n < 0)
		return n;
	p->req_len = (size_t)n;
	h2s_ip_str(ip, ipbuf, sizeof(ipbuf));
	snprintf(authority, sizeof(authority), h2s_ip_is_v4(ip) ? "%s:%u" : "[%s]:%u", ipbuf, port);
	p->s = probe_session(p);
	if (!p->s)
		return -ENOMEM;
	{
		const nghttp2_nv nv[] = {
		    NV(":method", "POST"),
		    NV(":scheme", "http"),
		    NV(":path", "/grpc.health.v1.Health/Check"),
		    NV(":authority", authority),
		    NV("content-type", "application/grpc"),
		    NV("te", "trailers"),
		};

		if (nghttp2_submit_settings(p->s, NGHTTP2_FLAG_NONE, NULL, 0) ||
		    nghttp2_submit_request(p->s, NULL, nv, sizeof(nv) / sizeof(nv[0]), &body,
					   NULL) < 0)
			return -ENOMEM;
	}
	p->fd = probe_socket(ip, port);
	return p->fd < 0 ? p->fd : 0;
}

/* The events |p| waits for. */
static short probe_events(const struct probe *p)
{
	if (!p->connected)
		return POLLOUT;
	return POLLIN | (nghttp2_session_want_write(p->s) ? POLLOUT : 0);
}

/* Drive |p| on |revents| from poll: true once it is done. */
static bool probe_step(struct probe *p, short revents)
{
	socklen_t sl = sizeof(int);
	int err = 0;

	if (!p->connected) {
		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &sl))
			err = errno;
		if (!err && (revents & (POLLERR | POLLHUP)))
			err = ECONNRESET;
		if (err) {
			p->err = -err;
			return true;
		}
		if (!(revents & POLLOUT))
			return false;
		p->connected = true;
	}
	if (nghttp2_session_send(p->s) || nghttp2_session_recv(p->s)) {
		p->err = -ECONNRESET;
		return true;
	}
	return p->closed;
}

/* The HealthCheckResponse status of a finished |p| (1: SERVING), or -errno. */
static int probe_result(const struct probe *p)
{
	if (!p->closed)
		return p->err;
	if (p->http_status != 200 || p->grpc_status != 0 || p->resp_overflow)
		return -EPROTO;
	return health_parse_response(p->resp, p->resp_len);
}

/* Free the slot (safe on a slot probe_start() left half set up). */
static void probe_end(struct probe *p)
{
	nghttp2_session_del(p->s);
	p->s = NULL;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

/* ---- the checker thread ---- */

struct hc_ep {
	uint32_t service_id;
	struct h2s_ip ip;
	uint16_t port;
	uint32_t interval_ms;
	char service[STATE_HEALTH_SERVICE_MAX]; /* the gRPC service asked about */
	char pod[STATE_NAME_MAX];
	uint64_t due_ms;
	uint32_t oks; /* successes in a row while unhealthy */
	bool unhealthy;
	bool probing; /* a probe of it is in flight */
};

struct health_checker {
	struct health_table *t; /* borrowed */
	struct snapshot *(*get_snapshot)(void *arg);
	void *arg;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool stop;	     /* under |lock| */
	uint64_t gen;	     /* of the snapshot |eps| was built from */
	struct hc_ep *eps;   /* owned, sorted by (service id, ip, port) */
	size_t n_eps;
	size_t cursor;	      /* where the next look for due endpoints starts */
	uint64_t next_due_ms; /* no endpoint that is not probing is due before */
	struct probe probes[HEALTH_PROBES_MAX];
	unsigned int n_probes; /* slots in use */
};

static int cmp_hc(const void *a, const void *b)
{
	const struct hc_ep *x = a, *y = b;
	int c;

	if (x->service_id != y->service_id)
		return x->service_id < y->service_id ? -1 : 1;
	c = memcmp(&x->ip, &y->ip, sizeof(x->ip));
	return c ? c : (int)x->port - (int)y->port;
}

static size_t count_checked(const struct state *st)
{
	size_t n = 0;

	for (int i = 0; i < st->n_svcs; i++)
		if (st->svcs[i].health_check && !st->svcs[i].upstream_tls)
			n += (size_t)st->svcs[i].n_eps;
	return n;
}

/* Rebuild the endpoint list from |st|, keeping what is known of endpoints
 * still there (probes in flight included) and clearing the verdicts of those
 * gone; a probe of one gone ends unheard. */
static int rebuild(struct health_checker *hc, const struct state *st, uint64_t now_ms)
{
	size_t n = count_checked(st), k = 0;
	struct hc_ep *v = calloc(n ? n : 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (int i = 0; i < st->n_svcs; i++) {
		const struct state_service *svc = &st->svcs[i];

		if (!svc->health_check || svc->upstream_tls)
			continue;
		for (int j = 0; j < svc->n_eps; j++) {
			struct hc_ep *e = &v[k++], *old;

			e->service_id = svc->id;
			e->ip = svc->eps[j].ip;
			e->port = svc->eps[j].port;
			e->interval_ms = svc->health_interval_ms > 0
					     ? (uint32_t)svc->health_interval_ms
					     : HEALTH_INTERVAL_MS;
			memcpy(e->service, svc->health_service, sizeof(e->service));
			memcpy(e->pod, svc->eps[j].pod, sizeof(e->pod));
			old = hc->n_eps ? bsearch(e, hc->eps, hc->n_eps, sizeof(*e), cmp_hc) : NULL;
			e->due_ms = old ? old->due_ms : now_ms;
			e->oks = old ? old->oks : 0;
			e->unhealthy = old && old->unhealthy;
			e->probing = old && old->probing;
			if (old)
				old->service_id = 0; /* kept: not to be cleared below */
		}
	}
	for (size_t i = 0; i < hc->n_eps; i++)
		if (hc->eps[i].service_id && hc->eps[i].unhealthy)
			health_table_set(hc->t, hc->eps[i].service_id, &hc->eps[i].ip,
					 hc->eps[i].port, false);
	free(hc->eps);
	qsort(v, n, sizeof(*v), cmp_hc);
	hc->eps = v;
	hc->n_eps = n;
	hc->cursor = 0;
	hc->next_due_ms = 0;
	return 0;
}

/* Publish what a probe of |e| answering |status| means, and when it is due next. */
static void judge(struct health_checker *hc, struct hc_ep *e, int status, uint64_t now_ms)
{
	char ip[INET6_ADDRSTRLEN];

	e->due_ms = now_ms + e->interval_ms;
	if (e->due_ms < hc->next_due_ms)
		hc->next_due_ms = e->due_ms;
	switch (health_verdict(&e->unhealthy, &e->oks, status)) {
	case HEALTH_SAME:
		return;
	case HEALTH_TURNED_HEALTHY:
		health_table_set(hc->t, e->service_id, &e->ip, e->port, false);
		log_info("endpoint_healthy endpoint=%s:%u pod=%s",
			 h2s_ip_str(&e->ip, ip, sizeof(ip)), e->port, e->pod);
		return;
	case HEALTH_TURNED_UNHEALTHY:
		if (health_table_set(hc->t, e->service_id, &e->ip, e->port, true))
			log_warn("health_table_full endpoint=%s:%u: it stays in rotation",
				 h2s_ip_str(&e->ip, ip, sizeof(ip)), e->port);
		log_warn("endpoint_unhealthy endpoint=%s:%u pod=%s status=%d (1 is SERVING, <0 "
			 "-errno)",
			 h2s_ip_str(&e->ip, ip, sizeof(ip)), e->port, e->pod, status);
		return;
	}
}

/* Start probing |e| in a free slot; a probe that fails at once is judged. */
static void launch(struct health_checker *hc, struct hc_ep *e, uint64_t now_ms)
{
	struct probe *p = hc->probes;
	int err;

	while (p->fd >= 0)
		p++;
	err = probe_start(p, e->service_id, &e->ip, e->port, e->service,
			  now_ms + HEALTH_TIMEOUT_MS);
	if (err) {
		probe_end(p);
		judge(hc, e, err, now_ms);
		return;
	}
	e->probing = true;
	hc->n_probes++;
}

/* Start the due endpoints' probes while slots are free, round robin from the
 * cursor: when more are due than slots, the next look goes on where this
 * one stopped, so no endpoint waits for a whole list of black holes. */
static void start_due(struct health_checker *hc, uint64_t now_ms)
{
	size_t i;

	if (now_ms < hc->next_due_ms || !hc->n_eps)
		return;
	hc->next_due_ms = UINT64_MAX;
	for (i = 0; i < hc->n_eps && hc->n_probes < HEALTH_PROBES_MAX; i++) {
		struct hc_ep *e = &hc->eps[(hc->cursor + i) % hc->n_eps];

		if (e->probing)
			continue;
		if (now_ms < e->due_ms) {
			if (e->due_ms < hc->next_due_ms)
				hc->next_due_ms = e->due_ms;
			continue;
		}
		launch(hc, e, now_ms);
	}
	hc->cursor = (hc->cursor + i) % hc->n_eps;
	if (i < hc->n_eps)
		hc->next_due_ms = 0; /* out of slots: look again when one is free */
}

/* End the probe in slot |p| and judge its endpoint, if still listed. */
static void finish(struct health_checker *hc, struct probe *p, uint64_t now_ms)
{
	struct hc_ep key = {.service_id = p->service_id, .ip = p->ip, .port = p->port}, *e;
	int status = probe_result(p);

	probe_end(p);
	hc->n_probes--;
	e = hc->n_eps ? bsearch(&key, hc->eps, hc->n_eps, sizeof(key), cmp_hc) : NULL;
	if (!e || !e->probing)
		return;
	e->probing = false;
	judge(hc, e, status, now_ms);
}

/* Wait up to |wait_ms| on the probes in flight, drive those with events and
 * finish those done or past their deadline. */
static void run_probes(struct health_checker *hc, int64_t wait_ms)
{
	struct pollfd pfd[HEALTH_PROBES_MAX];
	struct probe *in[HEALTH_PROBES_MAX];
	uint64_t now;
	int n = 0;

	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++) {
		struct probe *p = &hc->probes[i];

		if (p->fd < 0)
			continue;
		if (remaining(p->deadline_ms) < wait_ms)
			wait_ms = remaining(p->deadline_ms);
		pfd[n] = (struct pollfd){.fd = p->fd, .events = probe_events(p)};
		in[n++] = p;
	}
	if (poll(pfd, (nfds_t)n, (int)wait_ms) < 0 && errno != EINTR)
		log_warn("health_poll_failed err=\"poll: %s\"", strerror(errno));
	now = loop_now_ms();
	for (int i = 0; i < n; i++) {
		bool done = pfd[i].revents && probe_step(in[i], pfd[i].revents);

		if (done || now >= in[i]->deadline_ms)
			finish(hc, in[i], now);
	}
}

static bool stopping(struct health_checker *hc, uint64_t wait_ms)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(wait_ms / 1000);
	ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&hc->lock);
	if (!hc->stop && wait_ms)
		pthread_cond_timedwait(&hc->cond, &hc->lock, &ts);
	stop = hc->stop;
	pthread_mutex_unlock(&hc->lock);
	return stop;
}

/* Take up the newest snapshot if it changed. */
static void refresh(struct health_checker *hc, uint64_t now_ms)
{
	struct snapshot *snap = hc->get_snapshot(hc->arg);

	if (snap && snap->generation != hc->gen && !rebuild(hc, snap->st, now_ms))
		hc->gen = snap->generation;
	registry_snapshot_unref(snap);
}

/* Every TICK_MS: look for a stop and a new snapshot. In between: start due
 * probes in free slots and wait on those in flight (or on the condition
 * variable when there are none). */
static void *checker_main(void *arg)
{
	struct health_checker *hc = arg;
	uint64_t tick = 0, now;

	for (;;) {
		now = loop_now_ms();
		if (now >= tick) {
			if (stopping(hc, 0))
				break;
			refresh(hc, now);
			tick = now + TICK_MS;
		}
		start_due(hc, now);
		if (hc->n_probes)
			run_probes(hc, remaining(tick));
		else if (stopping(hc, (uint64_t)remaining(tick)))
			break;
	}
	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++)
		probe_end(&hc->probes[i]);
	return NULL;
}

struct health_checker *health_checker_start(struct health_table *t,
					    struct snapshot *(*get_snapshot)(void *arg), void *arg)
{
	struct health_checker *hc = calloc(1, sizeof(*hc));
	pthread_condattr_t ca;
	int err;

	if (!hc)
		return NULL;
	hc->t = t;
	hc->get_snapshot = get_snapshot;
	hc->arg = arg;
	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++)
		hc->probes[i].fd = -1;
	pthread_mutex_init(&hc->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&hc->cond, &ca);
	pthread_condattr_destroy(&ca);
	err = pthread_create(&hc->thread, NULL, checker_main, hc);
	if (err) {
		log_error("health_checker_start_failed err=\"pthread_create: %s\"", strerror(err));
		pthread_cond_destroy(&hc->cond);
		pthread_mutex_destroy(&hc->lock);
		free(hc);
		return NULL;
	}
	return hc;
}

void health_checker_stop(struct health_checker *hc)
{
	if (!hc)
		return;
	pthread_mutex_lock(&hc->lock);
	hc->stop = true;
	pthread_cond_signal(&hc->cond);
	pthread_mutex_unlock(&hc->lock);
	pthread_join(hc->thread, NULL);
	pthread_cond_destroy(&hc->cond);
	pthread_mutex_destroy(&hc->lock);
	free(hc->eps);
	free(hc);
}
