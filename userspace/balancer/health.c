// SPDX-License-Identifier: Apache-2.0
/*
 * Active gRPC health checks (see health.h). The table is open addressing
 * over atomic 64-bit slots holding the (odd) hash of an unhealthy endpoint:
 * readers probe with plain atomic loads, the one writer stores whole slots.
 * The checker thread runs a base/loop.c loop of its own with up to
 * HEALTH_PROBES_MAX probes (health_probe.c) at once, each bounded by a
 * HEALTH_TIMEOUT_MS timer: endpoints that black-hole hold a slot for their
 * timeout but never delay the others' probes. Its per-endpoint state and
 * probe slots are private to that thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "balancer/health.h"
#include "balancer/health_probe.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/registry.h"

#define SLOT_EMPTY 0
#define SLOT_TOMB 2 /* even: never a key */
#define TICK_MS 100 /* how often the checker looks for a new snapshot */

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
	struct loop *loop; /* owned: runs on |thread|, the only one touching what follows */
	pthread_t thread;
	uint64_t gen;	   /* of the snapshot |eps| was built from */
	struct hc_ep *eps; /* owned, sorted by (service id, ip, port) */
	size_t n_eps;
	size_t cursor;	      /* where the next look for due endpoints starts */
	uint64_t next_due_ms; /* no endpoint that is not probing is due before */
	struct health_probe probes[HEALTH_PROBES_MAX];
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

static void probe_ready(struct loop *l, int fd, uint32_t events, void *arg);
static void probe_timeout(struct loop *l, struct loop_timer *t, void *arg);

/* Start probing |e| in a free slot, watched on the loop until its deadline;
 * a probe that fails at once is judged. */
static void launch(struct health_checker *hc, struct hc_ep *e, uint64_t now_ms)
{
	struct health_probe *p = hc->probes;
	int err;

	while (p->fd >= 0)
		p++;
	err = health_probe_start(p, e->service_id, &e->ip, e->port, e->service);
	if (!err) {
		p->events = health_probe_events(p);
		err = loop_add_fd(hc->loop, p->fd, p->events, probe_ready, hc);
	}
	if (!err) {
		p->timer = loop_timer_add(hc->loop, HEALTH_TIMEOUT_MS, probe_timeout, hc);
		if (!p->timer) {
			loop_del_fd(hc->loop, p->fd);
			err = -ENOMEM;
		}
	}
	if (err) {
		health_probe_end(p);
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

/* Take |p| off the loop, end it and judge its endpoint, if still listed. */
static void finish(struct health_checker *hc, struct health_probe *p)
{
	struct hc_ep key = {.service_id = p->service_id, .ip = p->ip, .port = p->port}, *e;
	int status = health_probe_result(p);

	loop_del_fd(hc->loop, p->fd);
	loop_timer_cancel(hc->loop, p->timer);
	p->timer = NULL;
	health_probe_end(p);
	hc->n_probes--;
	e = hc->n_eps ? bsearch(&key, hc->eps, hc->n_eps, sizeof(key), cmp_hc) : NULL;
	if (!e || !e->probing)
		return;
	e->probing = false;
	judge(hc, e, status, loop_now_ms());
}

static struct health_probe *probe_of_fd(struct health_checker *hc, int fd)
{
	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++)
		if (hc->probes[i].fd == fd)
			return &hc->probes[i];
	return NULL;
}

/* The loop saw events on a probe's socket: drive it, and finish it once done. */
static void probe_ready(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct health_checker *hc = arg;
	struct health_probe *p = probe_of_fd(hc, fd);

	if (!p)
		return;
	if (health_probe_step(p, events)) {
		finish(hc, p);
		return;
	}
	p->events = health_probe_events(p);
	loop_set_events(l, fd, p->events);
}

/* A probe's deadline passed before it was done: it ends unheard (-ETIMEDOUT). */
static void probe_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct health_checker *hc = arg;

	(void)l;
	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++) {
		struct health_probe *p = &hc->probes[i];

		if (p->fd >= 0 && p->timer == t) {
			p->timer = NULL; /* running: gone once this returns */
			finish(hc, p);
			return;
		}
	}
}

/* Take up the newest snapshot if it changed. */
static void refresh(struct health_checker *hc, uint64_t now_ms)
{
	struct snapshot *snap = hc->get_snapshot(hc->arg);

	if (snap && snap->generation != hc->gen && !rebuild(hc, snap->st, now_ms))
		hc->gen = snap->generation;
	registry_snapshot_unref(snap);
}

/* Every TICK_MS: take up a new snapshot. */
static void tick(struct loop *l, struct loop_timer *t, void *arg)
{
	struct health_checker *hc = arg;

	(void)t;
	refresh(hc, loop_now_ms());
	if (!loop_timer_add(l, TICK_MS, tick, hc))
		log_error("health_checker_stalled err=\"timer: out of memory\"");
}

/* After every pass (a tick, a probe's events, a timeout): start the probes
 * now due in the slots free. */
static void on_pass(struct loop *l, void *arg)
{
	(void)l;
	start_due(arg, loop_now_ms());
}

static void *checker_main(void *arg)
{
	struct health_checker *hc = arg;
	int err;

	refresh(hc, loop_now_ms());
	if (!loop_timer_add(hc->loop, TICK_MS, tick, hc) ||
	    loop_add_pass_hook(hc->loop, on_pass, hc)) {
		log_error("health_checker_stalled err=\"timer: out of memory\"");
		return NULL;
	}
	start_due(hc, loop_now_ms());
	err = loop_run(hc->loop);
	if (err)
		log_error("health_checker_stopped err=\"epoll_wait: %s\"", strerror(-err));
	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++) {
		struct health_probe *p = &hc->probes[i];

		if (p->fd >= 0)
			loop_del_fd(hc->loop, p->fd);
		health_probe_end(p);
	}
	return NULL;
}

struct health_checker *health_checker_start(struct health_table *t,
					    struct snapshot *(*get_snapshot)(void *arg), void *arg)
{
	struct health_checker *hc = calloc(1, sizeof(*hc));
	int err;

	if (!hc)
		return NULL;
	hc->t = t;
	hc->get_snapshot = get_snapshot;
	hc->arg = arg;
	for (size_t i = 0; i < HEALTH_PROBES_MAX; i++)
		hc->probes[i].fd = -1;
	hc->loop = loop_new();
	if (!hc->loop) {
		log_error("health_checker_start_failed err=\"loop: out of memory\"");
		free(hc);
		return NULL;
	}
	err = pthread_create(&hc->thread, NULL, checker_main, hc);
	if (err) {
		log_error("health_checker_start_failed err=\"pthread_create: %s\"", strerror(err));
		loop_free(hc->loop);
		free(hc);
		return NULL;
	}
	return hc;
}

void health_checker_stop(struct health_checker *hc)
{
	if (!hc)
		return;
	loop_stop(hc->loop);
	pthread_join(hc->thread, NULL);
	loop_free(hc->loop);
	free(hc->eps);
	free(hc);
}
