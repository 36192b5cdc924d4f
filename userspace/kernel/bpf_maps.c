// SPDX-License-Identifier: Apache-2.0
/*
 * h2split's BPF maps from userspace (see bpf_maps.h). Syncs read the map,
 * diff it against the wanted entries and apply only the difference, adds
 * before removes. Nothing here holds state besides the fds in struct
 * bpf_maps, so every call is safe from any thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "base/log.h"
#include "kernel/bpf_maps.h"
#include "kernel/bpf_maps_int.h"

static const char *const map_names[BPF_MAPS_COUNT] = {
    [BPF_MAPS_SERVICES] = "h2s_services",	  [BPF_MAPS_EXCLUDED] = "h2s_excluded_cgroups",
    [BPF_MAPS_LISTENERS] = "h2s_listeners",	  [BPF_MAPS_WORKERS] = "h2s_workers",
    [BPF_MAPS_CONFIG] = "h2s_config",
    [BPF_MAPS_SOCK_ORIGDST] = "h2s_sock_origdst", [BPF_MAPS_CONN_ORIGDST] = "h2s_conn_origdst",
    [BPF_MAPS_COUNTERS] = "h2s_counters",
};

/* Key and value sizes this build reads and writes, to refuse pins of another layout. */
static const struct {
	__u32 key, value;
} map_sizes[BPF_MAPS_COUNT] = {
    [BPF_MAPS_SERVICES] = {sizeof(struct h2s_svc_key), sizeof(struct h2s_svc_value)},
    [BPF_MAPS_EXCLUDED] = {sizeof(__u64), sizeof(struct h2s_exclude_value)},
    [BPF_MAPS_LISTENERS] = {sizeof(__u32), sizeof(__u64)},
    [BPF_MAPS_WORKERS] = {sizeof(__u32), sizeof(__u64)},
    [BPF_MAPS_CONFIG] = {sizeof(__u32), sizeof(struct h2s_config)},
    [BPF_MAPS_SOCK_ORIGDST] = {sizeof(__u64), sizeof(struct h2s_origdst)},
    [BPF_MAPS_CONN_ORIGDST] = {sizeof(struct h2s_tuple), sizeof(struct h2s_origdst)},
    [BPF_MAPS_COUNTERS] = {sizeof(__u32), sizeof(__u64)},
};

/* Generated from H2S_COUNTERS, the one list (include/h2split_bpf.h). */
#define COUNTER_ENTRY(id, cname, chelp) [H2S_CNT_##id] = {cname, chelp},
static const struct {
	const char *name;
	const char *help;
} counters[H2S_CNT_MAX] = {H2S_COUNTERS(COUNTER_ENTRY)};
#undef COUNTER_ENTRY

const char *bpf_maps_name(enum bpf_maps_id id)
{
	return (unsigned)id < BPF_MAPS_COUNT ? map_names[id] : NULL;
}

void bpf_maps_probe(struct bpf_maps *m)
{
	struct h2s_tuple t = {};
	struct h2s_origdst od;
	int err;

	/* An all-zero tuple is never recorded: -ENOENT proves the command works. */
	err = bpf_map_lookup_and_delete_elem(m->fd[BPF_MAPS_CONN_ORIGDST], &t, &od);
	m->lookup_and_delete = err == 0 || err == -ENOENT;
}

/* A map of another build's layout would be read and written with the wrong
 * sizes (the kernel copies value_size bytes whatever the buffer). */
static bool sizes_match(int fd, enum bpf_maps_id id)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.key_size == map_sizes[id].key &&
	       info.value_size == map_sizes[id].value;
}

int bpf_maps_open_pinned(const char *pin_root, struct bpf_maps *m, const char **bad)
{
	char path[PATH_MAX];
	int err;

	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		m->fd[i] = -1;
	m->lock_fd = -1;
	for (int i = 0; i < BPF_MAPS_COUNT; i++) {
		if (snprintf(path, sizeof(path), "%s/%s", pin_root, map_names[i]) >=
		    (int)sizeof(path)) {
			err = -ENAMETOOLONG;
			goto fail;
		}
		m->fd[i] = bpf_obj_get(path);
		err = m->fd[i] < 0 ? m->fd[i] : sizes_match(m->fd[i], i) ? 0 : -EPROTO;
		if (err) {
			if (bad)
				*bad = map_names[i];
			goto fail;
		}
	}
	m->lock_fd = open(pin_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (m->lock_fd < 0) {
		err = -errno;
		goto fail;
	}
	bpf_maps_probe(m);
	return 0;
fail:
	bpf_maps_close(m);
	return err;
}

void bpf_maps_close(struct bpf_maps *m)
{
	for (int i = 0; i < BPF_MAPS_COUNT; i++) {
		if (m->fd[i] >= 0)
			close(m->fd[i]);
		m->fd[i] = -1;
	}
	if (m->lock_fd >= 0)
		close(m->lock_fd);
	m->lock_fd = -1;
}

/* The slow way to read a hash map, one key at a time, for kernels that refuse batches. */
static int iterate_all(int fd, size_t ksz, size_t vsz, char *keys, char *vals, __u32 cap, int *n)
{
	char *prev = NULL;
	int err;

	*n = 0;
	while ((__u32)*n < cap) {
		char *k = keys + (size_t)*n * ksz;

		err = bpf_map_get_next_key(fd, prev, k);
		if (err == -ENOENT)
			return 0;
		if (err)
			return err;
		err = bpf_map_lookup_elem(fd, k, vals + (size_t)*n * vsz);
		if (err == -ENOENT)
			continue; /* deleted meanwhile: the key still serves as cursor */
		if (err)
			return err;
		prev = k;
		(*n)++;
	}
	return 0;
}

/*
 * Every key and value of a hash map, in one batch syscall per bucket run
 * rather than two per entry; falls back to get_next_key where batches are
 * refused. |*keys_out| and |*vals_out| are malloc'd (NULL when empty).
 */
int bpf_maps_dump(int fd, size_t ksz, size_t vsz, void **keys_out, void **vals_out, int *n_out)
{
	struct bpf_map_info info = {};
	__u32 info_len = sizeof(info), cap;
	__u64 in_batch, out_batch; /* an opaque cursor; a bucket index for hash maps */
	char *keys, *vals;
	int err, n = 0;

	err = bpf_obj_get_info_by_fd(fd, &info, &info_len);
	if (err)
		return err;
	cap = info.max_entries;
	keys = calloc(cap ? cap : 1, ksz);
	vals = calloc(cap ? cap : 1, vsz);
	if (!keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		__u32 count = cap - (__u32)n;

		if (count == 0)
			break;
		err = bpf_map_lookup_batch(fd, n ? &in_batch : NULL, &out_batch,
					   keys + (size_t)n * ksz, vals + (size_t)n * vsz, &count,
					   NULL);
		n += (int)count;
		if (err == -ENOENT) {
			err = 0;
			break;
		}
		if (err == -EINVAL || err == -ENOTSUP || err == -EOPNOTSUPP) {
			err = iterate_all(fd, ksz, vsz, keys, vals, cap, &n);
			break;
		}
		if (err)
			break;
		in_batch = out_batch;
	}
out:
	if (err || n == 0) {
		free(keys);
		free(vals);
		keys = vals = NULL;
		n = err ? 0 : n;
	}
	*keys_out = keys;
	*vals_out = vals;
	*n_out = n;
	return err;
}

static int cmp_svc_key(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct h2s_svc_key));
}

/* By key, then by service id: the lower id wins a duplicate VIP:port. */
static int cmp_svc_entry(const void *a, const void *b)
{
	const struct bpf_maps_svc_entry *x = a, *y = b;
	int c = cmp_svc_key(&x->key, &y->key);

	if (c)
		return c;
	return (x->value.service_id > y->value.service_id) -
	       (x->value.service_id < y->value.service_id);
}

int bpf_maps_services_from_state(const struct state *st, struct bpf_maps_svc_entry **out, int *n,
				 int *dups)
{
	struct bpf_maps_svc_entry *e;
	int total = 0, w = 0, d = 0;

	*out = NULL;
	*n = 0;
	if (dups)
		*dups = 0;
	for (int i = 0; i < st->n_svcs; i++)
		total += st->svcs[i].retired_ms ? 0 : st->svcs[i].n_vips;
	if (total == 0)
		return 0;
	e = calloc((size_t)total, sizeof(*e));
	if (!e)
		return -ENOMEM;
	for (int i = 0; i < st->n_svcs; i++) {
		const struct state_service *svc = &st->svcs[i];

		for (int v = 0; !svc->retired_ms && v < svc->n_vips && v < STATE_MAX_VIPS;
		     v++, w++) {
			memcpy(e[w].key.addr, svc->vips[v].b, 16);
			e[w].key.port = htons(svc->port);
			e[w].value.service_id = svc->id;
			e[w].value.flags = H2S_SVC_F_ENABLED;
		}
	}
	qsort(e, (size_t)w, sizeof(*e), cmp_svc_entry);
	total = w;
	w = 0;
	for (int r = 0; r < total; r++) {
		if (w > 0 && cmp_svc_key(&e[w - 1].key, &e[r].key) == 0) {
			d++;
			continue;
		}
		e[w++] = e[r];
	}
	*out = e;
	*n = w;
	if (dups)
		*dups = d;
	return 0;
}

int bpf_maps_services_diff(const struct bpf_maps_svc_entry *want, int n_want,
			   struct bpf_maps_svc_entry *cur, int n_cur, struct bpf_maps_svc_op **ops,
			   int *n_ops)
{
	struct bpf_maps_svc_op *o;
	int i = 0, j = 0, w = 0, n_rm = 0;

	*ops = NULL;
	*n_ops = 0;
	if (n_want + n_cur == 0)
		return 0;
	o = calloc((size_t)(n_want + n_cur), sizeof(*o));
	if (!o)
		return -ENOMEM;
	if (n_cur)
		qsort(cur, (size_t)n_cur, sizeof(*cur), cmp_svc_entry);
	/* Adds and changes fill |o| from the front, removes from the back. */
	while (i < n_want || j < n_cur) {
		int c = i == n_want ? 1 : j == n_cur ? -1 : cmp_svc_key(&want[i].key, &cur[j].key);

		if (c < 0) {
			o[w++] = (struct bpf_maps_svc_op){BPF_MAPS_OP_ADD, want[i++]};
		} else if (c > 0) {
			o[n_want + n_cur - ++n_rm] =
			    (struct bpf_maps_svc_op){BPF_MAPS_OP_REMOVE, cur[j++]};
		} else {
			if (memcmp(&want[i].value, &cur[j].value, sizeof(want[i].value)) != 0)
				o[w++] = (struct bpf_maps_svc_op){BPF_MAPS_OP_CHANGE, want[i]};
			i++;
			j++;
		}
	}
	memmove(o + w, o + n_want + n_cur - n_rm, (size_t)n_rm * sizeof(*o));
	*ops = o;
	*n_ops = w + n_rm;
	return 0;
}

int bpf_maps_services_read(const struct bpf_maps *m, struct bpf_maps_svc_entry **out, int *n)
{
	void *keys, *vals;
	struct bpf_maps_svc_entry *e;
	int err;

	*out = NULL;
	err = bpf_maps_dump(m->fd[BPF_MAPS_SERVICES], sizeof(struct h2s_svc_key),
		       sizeof(struct h2s_svc_value), &keys, &vals, n);
	if (err || *n == 0)
		return err;
	e = calloc((size_t)*n, sizeof(*e));
	if (e) {
		for (int i = 0; i < *n; i++) {
			memcpy(&e[i].key, (char *)keys + i * sizeof(e->key), sizeof(e->key));
			memcpy(&e[i].value, (char *)vals + i * sizeof(e->value), sizeof(e->value));
		}
		qsort(e, (size_t)*n, sizeof(*e), cmp_svc_entry);
	}
	free(keys);
	free(vals);
	if (!e) {
		*n = 0;
		return -ENOMEM;
	}
	*out = e;
	return 0;
}

static int apply_svc_op(int fd, const struct bpf_maps_svc_op *op)
{
	char ip[INET6_ADDRSTRLEN];
	int err;

	if (op->kind == BPF_MAPS_OP_REMOVE) {
		err = bpf_map_delete_elem(fd, &op->e.key);
		if (err == -ENOENT)
			err = 0;
	} else {
		err = bpf_map_update_elem(fd, &op->e.key, &op->e.value, BPF_ANY);
	}
	if (err)
		log_error("bpf services update failed vip=%s port=%u op=%s err=%s",
			  h2s_ip_str((const struct h2s_ip *)op->e.key.addr, ip, sizeof(ip)),
			  ntohs(op->e.key.port), op->kind == BPF_MAPS_OP_REMOVE ? "remove" : "set",
			  strerror(-err));
	return err;
}

int bpf_maps_sync_services(const struct bpf_maps *m, const struct state *st,
			   bool removals_only, struct bpf_maps_sync_stats *stats)
{
	struct bpf_maps_svc_entry *want = NULL, *cur = NULL;
	struct bpf_maps_svc_op *ops = NULL;
	struct bpf_maps_sync_stats s = {};
	int n_want, n_cur, n_ops, err;

	err = bpf_maps_services_from_state(st, &want, &n_want, &s.duplicates);
	if (!err)
		err = bpf_maps_services_read(m, &cur, &n_cur);
	if (!err)
		err = bpf_maps_services_diff(want, n_want, cur, n_cur, &ops, &n_ops);
	for (int i = 0; !err && i < n_ops; i++) {
		if (removals_only && ops[i].kind != BPF_MAPS_OP_REMOVE)
			continue;
		err = apply_svc_op(m->fd[BPF_MAPS_SERVICES], &ops[i]);
		if (err)
			break;
		s.added += ops[i].kind == BPF_MAPS_OP_ADD;
		s.changed += ops[i].kind == BPF_MAPS_OP_CHANGE;
		s.removed += ops[i].kind == BPF_MAPS_OP_REMOVE;
	}
	s.unchanged = err || removals_only ? 0 : n_want - s.added - s.changed;
	if (stats)
		*stats = s;
	free(want);
	free(cur);
	free(ops);
	return err;
}

int bpf_maps_set_listen(const struct bpf_maps *m, const struct sockaddr_storage *v4,
			const struct sockaddr_storage *v6)
{
	struct h2s_config cfg = {};
	__u32 zero = 0;

	if (v4 && v4->ss_family != 0) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)v4;
		struct h2s_ip ip;

		if (a->sin_family != AF_INET || a->sin_addr.s_addr == INADDR_ANY || !a->sin_port)
			return -EINVAL;
		h2s_ip_from_v4(&ip, a->sin_addr);
		memcpy(cfg.listen_v4, ip.b, 16);
		cfg.listen_v4_port = a->sin_port;
	}
	if (v6 && v6->ss_family != 0) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)v6;

		if (a->sin6_family != AF_INET6 || IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
		    IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) || !a->sin6_port)
			return -EINVAL;
		memcpy(cfg.listen_v6, &a->sin6_addr, 16);
		cfg.listen_v6_port = a->sin6_port;
	}
	return bpf_map_update_elem(m->fd[BPF_MAPS_CONFIG], &zero, &cfg, BPF_ANY);
}

int bpf_maps_get_config(const struct bpf_maps *m, struct h2s_config *out)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(m->fd[BPF_MAPS_CONFIG], &zero, out);
}

int bpf_maps_add_listener(const struct bpf_maps *m, enum h2s_listener_slot slot, int fd)
{
	__u32 key = slot;
	__u64 val = (__u64)fd;

	if ((unsigned)slot >= H2S_LISTENER_SLOTS || fd < 0)
		return -EINVAL;
	return bpf_map_update_elem(m->fd[BPF_MAPS_LISTENERS], &key, &val, BPF_ANY);
}

int bpf_maps_del_listener(const struct bpf_maps *m, enum h2s_listener_slot slot)
{
	__u32 key = slot;
	int err;

	if ((unsigned)slot >= H2S_LISTENER_SLOTS)
		return -EINVAL;
	/* SOCKMAP answers -EINVAL for an empty slot. */
	err = bpf_map_delete_elem(m->fd[BPF_MAPS_LISTENERS], &key);
	return err == -EINVAL || err == -ENOENT ? 0 : err;
}

int bpf_maps_listener_cookie(const struct bpf_maps *m, enum h2s_listener_slot slot,
			     uint64_t *cookie)
{
	__u32 key = slot;
	__u64 val;
	int err;

	if ((unsigned)slot >= H2S_LISTENER_SLOTS)
		return -EINVAL;
	err = bpf_map_lookup_elem(m->fd[BPF_MAPS_LISTENERS], &key, &val);
	if (!err)
		*cookie = val;
	return err;
}

int bpf_maps_set_workers(const struct bpf_maps *m, enum h2s_listener_slot slot, const int *fds,
			 int n)
{
	if ((unsigned)slot >= H2S_LISTENER_SLOTS || n <= 0 || n > H2S_WORKER_KEYS)
		return -EINVAL;
	for (__u32 k = 0; k < H2S_WORKER_KEYS; k++) {
		__u32 key = slot * H2S_WORKER_KEYS + k;
		__u64 val = (__u64)fds[k % (__u32)n];
		int err = bpf_map_update_elem(m->fd[BPF_MAPS_WORKERS], &key, &val, BPF_ANY);

		if (err)
			return err;
	}
	return 0;
}

static bool cookie_in(uint64_t cookie, const uint64_t *cookies, int n)
{
	for (int i = 0; i < n; i++)
		if (cookies[i] == cookie)
			return true;
	return false;
}

int bpf_maps_clear_workers(const struct bpf_maps *m, enum h2s_listener_slot slot, const int *fds,
			   int n)
{
	uint64_t cookies[H2S_WORKER_KEYS];
	socklen_t len = sizeof(cookies[0]);

	if ((unsigned)slot >= H2S_LISTENER_SLOTS || n <= 0 || n > H2S_WORKER_KEYS)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		if (getsockopt(fds[i], SOL_SOCKET, SO_COOKIE, &cookies[i], &len))
			return -errno;
	for (__u32 k = 0; k < H2S_WORKER_KEYS; k++) {
		__u32 key = slot * H2S_WORKER_KEYS + k;
		__u64 val;
		int err;

		if (bpf_map_lookup_elem(m->fd[BPF_MAPS_WORKERS], &key, &val) ||
		    !cookie_in(val, cookies, n))
			continue; /* empty, or another daemon's */
		err = bpf_map_delete_elem(m->fd[BPF_MAPS_WORKERS], &key);
		if (err && err != -EINVAL && err != -ENOENT) /* closed meanwhile */
			return err;
	}
	return 0;
}

static int addr_port_of(const struct sockaddr *sa, __u8 addr[16], __u16 *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		struct h2s_ip ip;

		h2s_ip_from_v4(&ip, a->sin_addr);
		memcpy(addr, ip.b, 16);
		*port = ntohs(a->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		memcpy(addr, &a->sin6_addr, 16);
		*port = ntohs(a->sin6_port);
		return 0;
	}
	return -EAFNOSUPPORT;
}

int bpf_maps_tuple_from_addrs(const struct sockaddr *peer, const struct sockaddr *local,
			      struct h2s_tuple *t)
{
	int err;

	memset(t, 0, sizeof(*t));
	err = addr_port_of(peer, t->client_addr, &t->client_port);
	if (!err)
		err = addr_port_of(local, t->proxy_addr, &t->proxy_port);
	return err;
}

int bpf_maps_take_origdst(const struct bpf_maps *m, const struct sockaddr *peer,
			  const struct sockaddr *local, struct h2s_origdst *out)
{
	int fd = m->fd[BPF_MAPS_CONN_ORIGDST];
	struct h2s_tuple t;
	int err;

	err = bpf_maps_tuple_from_addrs(peer, local, &t);
	if (err)
		return err;
	if (m->lookup_and_delete)
		return bpf_map_lookup_and_delete_elem(fd, &t, out);
	err = bpf_map_lookup_elem(fd, &t, out);
	if (!err)
		bpf_map_delete_elem(fd, &t); /* -ENOENT: the LRU got there first, fine */
	return err;
}

const char *bpf_maps_counter_name(enum h2s_counter c)
{
	return (unsigned)c < H2S_CNT_MAX ? counters[c].name : NULL;
}

const char *bpf_maps_counter_help(enum h2s_counter c)
{
	return (unsigned)c < H2S_CNT_MAX ? counters[c].help : NULL;
}

int bpf_maps_counters_read(const struct bpf_maps *m, uint64_t out[H2S_CNT_MAX])
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *vals;
	int err = 0;

	if (ncpu <= 0)
		return ncpu < 0 ? ncpu : -EINVAL;
	vals = calloc((size_t)ncpu, sizeof(*vals));
	if (!vals)
		return -ENOMEM;
	for (__u32 c = 0; c < H2S_CNT_MAX && !err; c++) {
		err = bpf_map_lookup_elem(m->fd[BPF_MAPS_COUNTERS], &c, vals);
		out[c] = 0;
		for (int i = 0; !err && i < ncpu; i++)
			out[c] += vals[i];
	}
	free(vals);
	return err;
}
