// SPDX-License-Identifier: Apache-2.0
/*
 * The desired state (see state.h): services with their endpoints, appended by
 * a discovery source, then sorted, numbered and indexed once by
 * state_finish(). Invariant: after state_finish() nothing changes, so any
 * number of threads may read the state and its lookup tables without locks.
 * A service's endpoints are a refcounted block that consecutive states (and
 * a source's cache) share while they are unchanged; a shared block is never
 * written.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/state.h"

/* One (VIP, port) of a service; a dual-stack service has two. */
struct vip_ref {
	struct h2s_ip ip;
	uint16_t port;
	int svc; /* index into state.svcs */
};

struct id_ref {
	uint32_t id;
	int svc; /* index into state.svcs */
};

struct state_index {
	struct id_ref *by_id;	/* owned, sorted by id */
	struct vip_ref *by_vip; /* owned, sorted by (ip, port) */
	int n_ids;		/* st->n_svcs when built: services added since are not in it */
	int n_vips;
};

/* The endpoints of a service: |eps| is what state_service.eps points at. */
struct eps_block {
	atomic_int refs;
	int n;
	struct state_endpoint eps[];
};

static struct eps_block *block_of(struct state_endpoint *eps)
{
	return (struct eps_block *)((char *)eps - offsetof(struct eps_block, eps));
}

static struct state_endpoint *eps_copy(const struct state_endpoint *eps, int n)
{
	struct eps_block *b;

	if (n <= 0)
		return NULL;
	b = malloc(sizeof(*b) + (size_t)n * sizeof(*eps));
	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->n = n;
	memcpy(b->eps, eps, (size_t)n * sizeof(*eps));
	return b->eps;
}

void state_eps_ref(struct state_endpoint *eps)
{
	if (eps)
		atomic_fetch_add_explicit(&block_of(eps)->refs, 1, memory_order_relaxed);
}

void state_eps_unref(struct state_endpoint *eps)
{
	struct eps_block *b;

	if (!eps)
		return;
	b = block_of(eps);
	if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		free(b);
}

static bool eps_shared(struct state_endpoint *eps)
{
	return eps && atomic_load_explicit(&block_of(eps)->refs, memory_order_acquire) > 1;
}

struct state_endpoint *state_service_eps_own(struct state_service *svc)
{
	struct state_endpoint *eps;

	if (!eps_shared(svc->eps))
		return svc->eps;
	eps = eps_copy(svc->eps, svc->n_eps);
	if (!eps)
		return NULL;
	state_eps_unref(svc->eps);
	svc->eps = eps;
	return eps;
}

struct state *state_new(void)
{
	return calloc(1, sizeof(struct state));
}

static void free_index(struct state_index *idx)
{
	if (!idx)
		return;
	free(idx->by_id);
	free(idx->by_vip);
	free(idx);
}

void state_free(struct state *st)
{
	if (!st)
		return;
	for (int i = 0; i < st->n_svcs; i++)
		state_eps_unref(st->svcs[i].eps);
	free(st->svcs);
	free(st->nodes);
	free(st->callers);
	free_index(st->idx);
	free(st);
}

int state_add_node(struct state *st, const struct state_node *n)
{
	struct state_node *v = realloc(st->nodes, (size_t)(st->n_nodes + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	st->nodes = v;
	st->nodes[st->n_nodes++] = *n;
	return 0;
}

static int cmp_caller(const void *a, const void *b)
{
	uint64_t x = ((const struct state_caller *)a)->cgroup_id;
	uint64_t y = ((const struct state_caller *)b)->cgroup_id;

	return x < y ? -1 : x > y;
}

void state_set_callers(struct state *st, struct state_caller *c, int n)
{
	int out = 0;

	free(st->callers);
	st->callers = n > 0 ? c : NULL;
	st->n_callers = 0;
	if (n <= 0) {
		free(c);
		return;
	}
	qsort(c, (size_t)n, sizeof(*c), cmp_caller);
	for (int i = 0; i < n; i++)
		if (c[i].cgroup_id && (!out || c[out - 1].cgroup_id != c[i].cgroup_id))
			c[out++] = c[i];
	st->n_callers = out;
}

int state_copy_callers(struct state *dst, const struct state *src)
{
	struct state_caller *c = NULL;

	if (src->n_callers) {
		c = malloc((size_t)src->n_callers * sizeof(*c));
		if (!c)
			return -ENOMEM;
		memcpy(c, src->callers, (size_t)src->n_callers * sizeof(*c));
	}
	state_set_callers(dst, c, src->n_callers);
	return 0;
}

const struct state_caller *state_find_caller(const struct state *st, uint64_t cgroup_id)
{
	struct state_caller key = {.cgroup_id = cgroup_id};

	if (!st || !st->n_callers || !cgroup_id)
		return NULL;
	return bsearch(&key, st->callers, (size_t)st->n_callers, sizeof(key), cmp_caller);
}

static int add_service(struct state *st, const struct state_service *svc, bool share)
{
	struct state_service *dst;
	struct state_endpoint *eps = NULL;

	if (st->n_svcs == st->n_alloc) {
		int n = st->n_alloc ? st->n_alloc * 2 : 16;
		struct state_service *s = realloc(st->svcs, (size_t)n * sizeof(*s));

		if (!s)
			return -ENOMEM;
		st->svcs = s;
		st->n_alloc = n;
	}
	if (svc->n_eps > 0 && share) {
		eps = svc->eps;
		state_eps_ref(eps);
	} else if (svc->n_eps > 0) {
		eps = eps_copy(svc->eps, svc->n_eps);
		if (!eps)
			return -ENOMEM;
	}
	dst = &st->svcs[st->n_svcs++];
	*dst = *svc;
	dst->eps = eps;
	dst->n_eps = eps ? svc->n_eps : 0;
	return 0;
}

int state_add_service(struct state *st, const struct state_service *svc)
{
	return add_service(st, svc, false);
}

int state_add_service_shared(struct state *st, const struct state_service *svc)
{
	return add_service(st, svc, true);
}

static int cmp_service(const void *a, const void *b)
{
	const struct state_service *x = a, *y = b;
	int c = strcmp(x->ns, y->ns);

	if (!c)
		c = strcmp(x->name, y->name);
	if (!c)
		c = strcmp(x->port_name, y->port_name);
	if (!c)
		c = (int)x->port - (int)y->port;
	return c;
}

static int cmp_endpoint(const void *a, const void *b)
{
	const struct state_endpoint *x = a, *y = b;
	int c = memcmp(&x->ip, &y->ip, sizeof(x->ip));

	return c ? c : (int)x->port - (int)y->port;
}

static uint32_t fnv1a(const char *s, uint32_t h)
{
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

static uint32_t service_hash(const struct state_service *svc)
{
	uint32_t h = 2166136261u;

	h = fnv1a(svc->ns, h);
	h = fnv1a("/", h);
	h = fnv1a(svc->name, h);
	h = fnv1a(":", h);
	h = fnv1a(svc->port_name, h);
	return h;
}

/* Open-addressing set of the ids handed out so far, to probe past collisions. */
static bool id_taken(const uint32_t *set, uint32_t mask, uint32_t id)
{
	for (uint32_t i = id & mask; set[i]; i = (i + 1) & mask) {
		if (set[i] == id)
			return true;
	}
	return false;
}

static void id_insert(uint32_t *set, uint32_t mask, uint32_t id)
{
	uint32_t i = id & mask;

	while (set[i])
		i = (i + 1) & mask;
	set[i] = id;
}

static int assign_ids(struct state *st)
{
	uint32_t size = 16, mask, *set;

	while (size < 2u * (uint32_t)st->n_svcs)
		size *= 2;
	mask = size - 1;
	set = calloc(size, sizeof(*set));
	if (!set)
		return -ENOMEM;
	for (int i = 0; i < st->n_svcs; i++) {
		uint32_t id = service_hash(&st->svcs[i]);

		if (st->svcs[i].retired_ms)
			continue; /* keeps the id its connections carry */
		while (id == 0 || id_taken(set, mask, id))
			id++;
		id_insert(set, mask, id);
		st->svcs[i].id = id;
	}
	free(set);
	return 0;
}

static int cmp_id_ref(const void *a, const void *b)
{
	uint32_t x = ((const struct id_ref *)a)->id, y = ((const struct id_ref *)b)->id;

	return x < y ? -1 : x > y;
}

static int cmp_vip(const struct h2s_ip *ip, uint16_t port, const struct vip_ref *r)
{
	int c = memcmp(ip, &r->ip, sizeof(*ip));

	return c ? c : (int)port - (int)r->port;
}

static int cmp_vip_ref(const void *a, const void *b)
{
	const struct vip_ref *x = a, *y = b;
	int c = cmp_vip(&x->ip, x->port, y);

	/* Two services claiming one VIP:port: the first in sorted order wins. */
	return c ? c : x->svc - y->svc;
}

static int build_index(struct state *st)
{
	struct state_index *idx = calloc(1, sizeof(*idx));
	int n = st->n_svcs;

	if (!idx)
		return -ENOMEM;
	idx->by_id = malloc((size_t)(n ? n : 1) * sizeof(struct id_ref));
	idx->by_vip = malloc((size_t)(n ? n : 1) * STATE_MAX_VIPS * sizeof(struct vip_ref));
	if (!idx->by_id || !idx->by_vip) {
		free_index(idx);
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++) {
		const struct state_service *svc = &st->svcs[i];

		idx->by_id[i] = (struct id_ref){.id = svc->id, .svc = i};
		for (int v = 0; !svc->retired_ms && v < svc->n_vips && v < STATE_MAX_VIPS; v++)
			idx->by_vip[idx->n_vips++] =
			    (struct vip_ref){.ip = svc->vips[v], .port = svc->port, .svc = i};
	}
	idx->n_ids = n;
	qsort(idx->by_id, (size_t)n, sizeof(struct id_ref), cmp_id_ref);
	qsort(idx->by_vip, (size_t)idx->n_vips, sizeof(struct vip_ref), cmp_vip_ref);
	st->idx = idx;
	return 0;
}

int state_finish(struct state *st)
{
	int err;

	if (st->n_svcs > 1)
		qsort(st->svcs, (size_t)st->n_svcs, sizeof(*st->svcs), cmp_service);
	for (int i = 0; i < st->n_svcs; i++) {
		/* A shared block comes from a finished state: sorted, and read by others. */
		if (st->svcs[i].n_eps > 1 && !eps_shared(st->svcs[i].eps))
			qsort(st->svcs[i].eps, (size_t)st->svcs[i].n_eps,
			      sizeof(struct state_endpoint), cmp_endpoint);
	}
	free_index(st->idx);
	st->idx = NULL;
	st->n_retired = 0;
	for (int i = 0; i < st->n_svcs; i++)
		st->n_retired += st->svcs[i].retired_ms != 0;
	err = assign_ids(st);
	if (err)
		return err;
	return build_index(st);
}

static bool keep_retired(const struct state_service *svc, uint64_t now_ms, uint64_t keep_ms)
{
	return !svc->retired_ms || now_ms - svc->retired_ms < keep_ms;
}

int state_carry_retired(struct state *st, const struct state *prev, uint64_t now_ms,
			uint64_t keep_ms)
{
	int n = 0, err;

	for (int i = 0; prev && i < prev->n_svcs; i++) {
		struct state_service svc = prev->svcs[i];

		if (state_find_id(st, svc.id) || !keep_retired(&svc, now_ms, keep_ms))
			continue;
		if (!svc.retired_ms)
			svc.retired_ms = now_ms ? now_ms : 1;
		err = state_add_service_shared(st, &svc);
		if (err)
			return err;
		n++;
	}
	if (!n)
		return 0;
	err = state_finish(st);
	return err ? err : n;
}

uint64_t state_oldest_retired(const struct state *st)
{
	uint64_t oldest = 0;

	for (int i = 0; st && i < st->n_svcs; i++) {
		uint64_t r = st->svcs[i].retired_ms;

		if (r && (!oldest || r < oldest))
			oldest = r;
	}
	return oldest;
}

const struct state_service *state_find_vip(const struct state *st, const struct h2s_ip *vip,
					   uint16_t port)
{
	int lo = 0, hi;

	if (!st->idx)
		return NULL;
	/* Lower bound, so a duplicate VIP:port resolves to its first service. */
	hi = st->idx->n_vips;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;

		if (cmp_vip(vip, port, &st->idx->by_vip[mid]) > 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < st->idx->n_vips && cmp_vip(vip, port, &st->idx->by_vip[lo]) == 0)
		return &st->svcs[st->idx->by_vip[lo].svc];
	return NULL;
}

const struct state_service *state_find_id(const struct state *st, uint32_t id)
{
	int lo = 0, hi;

	if (!st->idx)
		return NULL;
	/* Not st->n_svcs: state_carry_retired() adds services, then looks up more
	 * ids, before it finishes the state again. */
	hi = st->idx->n_ids - 1;
	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;
		const struct id_ref *r = &st->idx->by_id[mid];

		if (r->id == id)
			return &st->svcs[r->svc];
		if (r->id < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

bool state_endpoint_usable(const struct state_endpoint *ep)
{
	return ep->ready && !ep->terminating;
}

bool state_endpoint_fallback(const struct state_endpoint *ep)
{
	return ep->serving && ep->terminating;
}

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool h2s_ip_is_v4(const struct h2s_ip *ip)
{
	return memcmp(ip->b, v4_prefix, sizeof(v4_prefix)) == 0;
}

void h2s_ip_from_v4(struct h2s_ip *ip, struct in_addr a)
{
	memcpy(ip->b, v4_prefix, sizeof(v4_prefix));
	memcpy(ip->b + 12, &a, 4);
}

int h2s_ip_parse(struct h2s_ip *ip, const char *s)
{
	struct in_addr a4;

	if (inet_pton(AF_INET, s, &a4) == 1) {
		h2s_ip_from_v4(ip, a4);
		return 0;
	}
	if (inet_pton(AF_INET6, s, ip->b) == 1)
		return 0;
	return -EINVAL;
}

const char *h2s_ip_str(const struct h2s_ip *ip, char *buf, size_t len)
{
	const char *r;

	if (h2s_ip_is_v4(ip))
		r = inet_ntop(AF_INET, ip->b + 12, buf, (socklen_t)len);
	else
		r = inet_ntop(AF_INET6, ip->b, buf, (socklen_t)len);
	if (!r && len)
		snprintf(buf, len, "?");
	return buf;
}
