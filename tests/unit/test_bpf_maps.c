// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for the pure parts of bpf_maps.c: the tuple key the daemon
 * builds after accept() (it must equal what sockops wrote), the services
 * entries a state wants, the add-before-remove diff, counter and map names,
 * and argument checks that run before any syscall; and the exclusion map's
 * per-origin references on a real BPF map (those skip without CAP_BPF).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>
#include <bpf/bpf.h>

#include <cmocka.h>

#include "kernel/bpf_maps.h"

static struct sockaddr_in sin4(const char *ip, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};

	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

static struct sockaddr_in6 sin6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};

	assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
	return a;
}

static void test_tuple_v4_is_mapped_host_order(void **unused)
{
	struct sockaddr_in peer = sin4("10.244.1.7", 41234), local = sin4("169.254.20.11", 15001);
	static const uint8_t client[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 244, 1, 7};
	static const uint8_t proxy[16] = {0, 0, 0,    0,    0,	 0,   0,  0,
					  0, 0, 0xff, 0xff, 169, 254, 20, 11};
	struct h2s_tuple t;

	(void)unused;
	memset(&t, 0xaa, sizeof(t));
	assert_int_equal(
	    bpf_maps_tuple_from_addrs((struct sockaddr *)&peer, (struct sockaddr *)&local, &t), 0);
	assert_memory_equal(t.client_addr, client, 16);
	assert_memory_equal(t.proxy_addr, proxy, 16);
	/* Host order, as sockops stores local_port and ntohl(remote_port). */
	assert_int_equal(t.client_port, 41234);
	assert_int_equal(t.proxy_port, 15001);
	assert_int_equal(t.pad, 0);
}

static void test_tuple_dual_stack_listener_same_key(void **unused)
{
	struct sockaddr_in p4 = sin4("10.244.1.7", 41234), l4 = sin4("169.254.20.11", 15001);
	struct sockaddr_in6 p6 = sin6("::ffff:10.244.1.7", 41234);
	struct sockaddr_in6 l6 = sin6("::ffff:169.254.20.11", 15001);
	struct h2s_tuple a, b;

	(void)unused;
	assert_int_equal(
	    bpf_maps_tuple_from_addrs((struct sockaddr *)&p4, (struct sockaddr *)&l4, &a), 0);
	assert_int_equal(
	    bpf_maps_tuple_from_addrs((struct sockaddr *)&p6, (struct sockaddr *)&l6, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
}

static void test_tuple_v6_and_bad_family(void **unused)
{
	struct sockaddr_in6 p = sin6("fd00:10:244::7", 5000), l = sin6("fd00::11", 15001);
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	struct h2s_tuple t;

	(void)unused;
	assert_int_equal(
	    bpf_maps_tuple_from_addrs((struct sockaddr *)&p, (struct sockaddr *)&l, &t), 0);
	assert_memory_equal(t.client_addr, &p.sin6_addr, 16);
	assert_memory_equal(t.proxy_addr, &l.sin6_addr, 16);
	assert_int_equal(t.client_port, 5000);
	assert_int_equal(
	    bpf_maps_tuple_from_addrs((struct sockaddr *)&un, (struct sockaddr *)&l, &t),
	    -EAFNOSUPPORT);
	assert_int_equal(
	    bpf_maps_tuple_from_addrs((struct sockaddr *)&p, (struct sockaddr *)&un, &t),
	    -EAFNOSUPPORT);
}

static void add_svc(struct state *st, const char *name, uint16_t port, const char *vip4,
		    const char *vip6)
{
	struct state_service s = {.port = port};

	snprintf(s.ns, sizeof(s.ns), "default");
	snprintf(s.name, sizeof(s.name), "%s", name);
	if (vip4)
		assert_int_equal(h2s_ip_parse(&s.vips[s.n_vips++], vip4), 0);
	if (vip6)
		assert_int_equal(h2s_ip_parse(&s.vips[s.n_vips++], vip6), 0);
	assert_int_equal(state_add_service(st, &s), 0);
}

static const struct state_service *svc_named(const struct state *st, const char *name)
{
	for (int i = 0; i < st->n_svcs; i++)
		if (strcmp(st->svcs[i].name, name) == 0)
			return &st->svcs[i];
	fail_msg("no service %s", name);
	return NULL;
}

static void test_services_from_state(void **unused)
{
	struct state *st = state_new();
	struct bpf_maps_svc_entry *e;
	struct h2s_ip ip;
	int n, dups;

	(void)unused;
	add_svc(st, "echo", 50051, "10.96.77.10", "fd00::77:10");
	add_svc(st, "web", 80, "10.96.0.99", NULL);
	assert_int_equal(state_finish(st), 0);
	assert_int_equal(bpf_maps_services_from_state(st, &e, &n, &dups), 0);
	assert_int_equal(n, 3);
	assert_int_equal(dups, 0);
	for (int i = 1; i < n; i++) /* sorted by key */
		assert_true(memcmp(&e[i - 1].key, &e[i].key, sizeof(e->key)) < 0);
	/* Sorted by raw key: ::ffff:10.96.0.99 < ::ffff:10.96.77.10 < fd00:: */
	assert_int_equal(h2s_ip_parse(&ip, "10.96.0.99"), 0);
	assert_memory_equal(e[0].key.addr, ip.b, 16);
	assert_int_equal(e[0].key.port, htons(80));
	assert_int_equal(e[0].value.service_id, svc_named(st, "web")->id);
	assert_int_equal(e[0].value.flags, H2S_SVC_F_ENABLED);
	assert_int_equal(h2s_ip_parse(&ip, "fd00::77:10"), 0);
	assert_memory_equal(e[2].key.addr, ip.b, 16);
	assert_int_equal(e[2].key.port, htons(50051));
	assert_int_equal(e[2].value.service_id, svc_named(st, "echo")->id);
	assert_int_equal(e[2].key.pad, 0);
	free(e);
	state_free(st);
}

static void test_services_duplicate_vip_lower_id_wins(void **unused)
{
	struct state *st = state_new();
	struct bpf_maps_svc_entry *e;
	uint32_t lower;
	int n, dups;

	(void)unused;
	add_svc(st, "a", 443, "10.96.1.1", NULL);
	add_svc(st, "b", 443, "10.96.1.1", NULL);
	assert_int_equal(state_finish(st), 0);
	lower = svc_named(st, "a")->id < svc_named(st, "b")->id ? svc_named(st, "a")->id
								: svc_named(st, "b")->id;
	assert_int_equal(bpf_maps_services_from_state(st, &e, &n, &dups), 0);
	assert_int_equal(n, 1);
	assert_int_equal(dups, 1);
	assert_int_equal(e[0].value.service_id, lower);
	free(e);
	state_free(st);
}

static void test_services_empty_state(void **unused)
{
	struct state *st = state_new();
	struct bpf_maps_svc_entry *e = (void *)1;
	int n = -1;

	(void)unused;
	assert_int_equal(state_finish(st), 0);
	assert_int_equal(bpf_maps_services_from_state(st, &e, &n, NULL), 0);
	assert_int_equal(n, 0);
	assert_null(e);
	state_free(st);
}

static struct bpf_maps_svc_entry entry(uint8_t last, uint16_t port, uint32_t id)
{
	struct bpf_maps_svc_entry e = {.value = {.service_id = id, .flags = H2S_SVC_F_ENABLED}};

	e.key.addr[10] = e.key.addr[11] = 0xff;
	e.key.addr[12] = 10;
	e.key.addr[15] = last;
	e.key.port = htons(port);
	return e;
}

static void test_diff_adds_changes_before_removes(void **unused)
{
	struct bpf_maps_svc_entry want[] = {entry(1, 80, 1), entry(2, 80, 2), entry(4, 80, 4)};
	/* Current, unsorted: 4 unchanged, 2 changes id, 3 and 5 go, 1 is new. */
	struct bpf_maps_svc_entry cur[] = {entry(5, 80, 5), entry(4, 80, 4), entry(3, 80, 3),
					   entry(2, 80, 9)};
	struct bpf_maps_svc_op *ops;
	int n, seen_remove = 0, adds = 0, changes = 0, removes = 0;

	(void)unused;
	assert_int_equal(bpf_maps_services_diff(want, 3, cur, 4, &ops, &n), 0);
	assert_int_equal(n, 4);
	for (int i = 0; i < n; i++) {
		switch (ops[i].kind) {
		case BPF_MAPS_OP_ADD:
			assert_false(seen_remove);
			assert_int_equal(ops[i].e.key.addr[15], 1);
			adds++;
			break;
		case BPF_MAPS_OP_CHANGE:
			assert_false(seen_remove);
			assert_int_equal(ops[i].e.key.addr[15], 2);
			assert_int_equal(ops[i].e.value.service_id, 2); /* the wanted value */
			changes++;
			break;
		case BPF_MAPS_OP_REMOVE:
			seen_remove = 1;
			assert_true(ops[i].e.key.addr[15] == 3 || ops[i].e.key.addr[15] == 5);
			removes++;
			break;
		}
	}
	assert_int_equal(adds, 1);
	assert_int_equal(changes, 1);
	assert_int_equal(removes, 2);
	free(ops);
}

static void test_diff_same_port_differs(void **unused)
{
	struct bpf_maps_svc_entry want[] = {entry(1, 80, 1)};
	struct bpf_maps_svc_entry cur[] = {entry(1, 8080, 1)};
	struct bpf_maps_svc_op *ops;
	int n;

	(void)unused;
	assert_int_equal(bpf_maps_services_diff(want, 1, cur, 1, &ops, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ops[0].kind, BPF_MAPS_OP_ADD);
	assert_int_equal(ops[1].kind, BPF_MAPS_OP_REMOVE);
	assert_int_equal(ops[1].e.key.port, htons(8080));
	free(ops);
}

static void test_diff_nothing_and_everything(void **unused)
{
	struct bpf_maps_svc_entry want[] = {entry(1, 80, 1), entry(2, 80, 2)};
	struct bpf_maps_svc_entry cur[] = {entry(2, 80, 2), entry(1, 80, 1)};
	struct bpf_maps_svc_op *ops;
	int n;

	(void)unused;
	assert_int_equal(bpf_maps_services_diff(want, 2, cur, 2, &ops, &n), 0);
	assert_int_equal(n, 0);
	free(ops);
	assert_int_equal(bpf_maps_services_diff(NULL, 0, cur, 2, &ops, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(ops[0].kind, BPF_MAPS_OP_REMOVE);
	assert_int_equal(ops[1].kind, BPF_MAPS_OP_REMOVE);
	free(ops);
	assert_int_equal(bpf_maps_services_diff(NULL, 0, NULL, 0, &ops, &n), 0);
	assert_int_equal(n, 0);
	assert_null(ops);
}

static void test_counter_names(void **unused)
{
	(void)unused;
	for (int i = 0; i < H2S_CNT_MAX; i++) {
		const char *name = bpf_maps_counter_name((enum h2s_counter)i);

		assert_non_null(name);
		assert_non_null(bpf_maps_counter_help((enum h2s_counter)i));
		assert_true(name[0] != '\0');
		for (const char *p = name; *p; p++) /* metric-safe */
			assert_true(islower((unsigned char)*p) || *p == '_');
		for (int j = 0; j < i; j++)
			assert_string_not_equal(name, bpf_maps_counter_name((enum h2s_counter)j));
	}
	assert_string_equal(bpf_maps_counter_name(H2S_CNT_REDIRECTED), "redirected");
	assert_null(bpf_maps_counter_name(H2S_CNT_MAX));
	assert_null(bpf_maps_counter_help((enum h2s_counter) - 1));
}

static void test_map_and_origin_names(void **unused)
{
	(void)unused;
	for (int i = 0; i < BPF_MAPS_COUNT; i++) {
		const char *name = bpf_maps_name((enum bpf_maps_id)i);

		assert_non_null(name);
		assert_int_equal(strncmp(name, "h2s_", 4), 0);
	}
	assert_string_equal(bpf_maps_name(BPF_MAPS_SERVICES), "h2s_services");
	assert_null(bpf_maps_name(BPF_MAPS_COUNT));
	assert_string_equal(bpf_maps_origin_name(H2S_EXCLUDE_SELF), "self");
	assert_string_equal(bpf_maps_origin_name(H2S_EXCLUDE_FLAG), "flag");
	assert_string_equal(bpf_maps_origin_name(H2S_EXCLUDE_CTL), "ctl");
	assert_string_equal(bpf_maps_origin_name(H2S_EXCLUDE_K8S), "k8s");
	assert_string_equal(bpf_maps_origin_name((enum h2s_exclude_origin)0), "unknown");
}

static void test_origins_str(void **unused)
{
	char buf[64], small[5];

	(void)unused;
	/* The bits README.md documents for reading bpftool's "origins". */
	assert_int_equal(H2S_EXCLUDE_BIT(H2S_EXCLUDE_SELF), 1);
	assert_int_equal(H2S_EXCLUDE_BIT(H2S_EXCLUDE_FLAG), 2);
	assert_int_equal(H2S_EXCLUDE_BIT(H2S_EXCLUDE_CTL), 4);
	assert_int_equal(H2S_EXCLUDE_BIT(H2S_EXCLUDE_K8S), 8);
	assert_string_equal(bpf_maps_origins_str(0, buf, sizeof(buf)), "");
	assert_string_equal(bpf_maps_origins_str(4 | 8, buf, sizeof(buf)), "ctl,k8s");
	assert_string_equal(bpf_maps_origins_str(0xf, buf, sizeof(buf)), "self,flag,ctl,k8s");
	assert_string_equal(bpf_maps_origins_str(1 << 20, buf, sizeof(buf)), "");
	/* Truncated, never overrun. */
	assert_string_equal(bpf_maps_origins_str(0xf, small, sizeof(small)), "self");
}

static void test_set_listen_rejects_non_targets(void **unused)
{
	struct bpf_maps m = {.fd = {-1, -1, -1, -1, -1, -1, -1}, .lock_fd = -1};
	struct sockaddr_storage a = {0};

	(void)unused;
	*(struct sockaddr_in *)&a = sin4("0.0.0.0", 15001);
	assert_int_equal(bpf_maps_set_listen(&m, &a, NULL), -EINVAL);
	*(struct sockaddr_in *)&a = sin4("169.254.20.11", 0);
	assert_int_equal(bpf_maps_set_listen(&m, &a, NULL), -EINVAL);
	*(struct sockaddr_in6 *)&a = sin6("::ffff:169.254.20.11", 15001);
	assert_int_equal(bpf_maps_set_listen(&m, NULL, &a), -EINVAL);
	assert_int_equal(bpf_maps_set_listen(&m, &a, NULL), -EINVAL); /* v6 in the v4 slot */
	*(struct sockaddr_in6 *)&a = sin6("::", 15001);
	assert_int_equal(bpf_maps_set_listen(&m, NULL, &a), -EINVAL);
	assert_int_equal(bpf_maps_add_listener(&m, H2S_LISTENER_SLOTS, 3), -EINVAL);
	assert_int_equal(bpf_maps_add_listener(&m, H2S_LISTENER_V4, -1), -EINVAL);
}

static void test_open_pinned_missing(void **unused)
{
	struct bpf_maps m;
	const char *missing = NULL;

	(void)unused;
	assert_int_equal(bpf_maps_open_pinned("/nonexistent/h2split", &m, &missing), -ENOENT);
	assert_string_equal(missing, "h2s_services");
	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		assert_int_equal(m.fd[i], -1);
	bpf_maps_close(&m); /* safe after a failed open */
}

/* ---- h2s_excluded_cgroups on a real map (needs CAP_BPF) ---- */

/* A map shaped like the BPF object's h2s_excluded_cgroups in |m|, other fds
 * -1; skips when BPF maps cannot be created here (not root), except in CI. */
static void excl_map(struct bpf_maps *m, __u32 value_size)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
	char dir[] = "/tmp/h2s-excl-lock-XXXXXX";
	int fd;

	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		m->fd[i] = -1;
	/* The lock is a directory as the pin root is; removed at once, the fd still locks. */
	assert_non_null(mkdtemp(dir));
	m->lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(m->lock_fd >= 0);
	rmdir(dir);
	fd = bpf_map_create(BPF_MAP_TYPE_HASH, "h2s_excluded_c", sizeof(__u64), value_size,
			    H2S_MAX_EXCLUDED, &opts);
	if (fd < 0) {
		const char *ci = getenv("CI");

		if (ci && !strcmp(ci, "true"))
			fail_msg("bpf_map_create: %s (CI=true: these tests must run as root)",
				 strerror(-fd));
		fprintf(stderr, "skipped: bpf_map_create: %s (run as root)\n", strerror(-fd));
		close(m->lock_fd);
		skip();
	}
	m->fd[BPF_MAPS_EXCLUDED] = fd;
}

static void excl_done(struct bpf_maps *m)
{
	close(m->fd[BPF_MAPS_EXCLUDED]);
	close(m->lock_fd);
}

/* The origins of |id| as the map holds them; 0 when it has no entry. */
static uint32_t origins_of(const struct bpf_maps *m, uint64_t id)
{
	struct h2s_exclude_value v;
	__u64 key = id;

	if (bpf_map_lookup_elem(m->fd[BPF_MAPS_EXCLUDED], &key, &v) == -ENOENT)
		return 0;
	assert_int_not_equal(v.origins, 0); /* an entry always names an origin */
	return v.origins;
}

#define SELF H2S_EXCLUDE_BIT(H2S_EXCLUDE_SELF)
#define FLAG H2S_EXCLUDE_BIT(H2S_EXCLUDE_FLAG)
#define CTL H2S_EXCLUDE_BIT(H2S_EXCLUDE_CTL)
#define K8S H2S_EXCLUDE_BIT(H2S_EXCLUDE_K8S)

/* A cgroup excluded by a pod's opt-out and by --exclude-cgroup stays excluded
 * until both let go, whichever came first and whichever goes first. */
static void test_excluded_two_origins_each_hold_a_reference(void **unused)
{
	const uint64_t pod = 4242, other = 77;
	struct bpf_maps m;

	(void)unused;
	excl_map(&m, sizeof(struct h2s_exclude_value));
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, (uint64_t[]){pod, other}, 2),
			 0);
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_FLAG, &pod, 1), 0);
	assert_int_equal(origins_of(&m, pod), FLAG | K8S);
	assert_int_equal(origins_of(&m, other), K8S);
	/* The pod loses its annotation: the flag still excludes it. */
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, &other, 1), 0);
	assert_int_equal(origins_of(&m, pod), FLAG);
	/* The flag goes too: redirected again. */
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_FLAG, NULL, 0), 0);
	assert_int_equal(origins_of(&m, pod), 0);
	assert_int_equal(origins_of(&m, other), K8S);

	/* The flag first this time, and it goes first: the opt-out stays. */
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_FLAG, &pod, 1), 0);
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, (uint64_t[]){pod, other}, 2),
			 0);
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_FLAG, NULL, 0), 0);
	assert_int_equal(origins_of(&m, pod), K8S);
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, NULL, 0), 0);
	assert_int_equal(origins_of(&m, pod), 0);
	assert_int_equal(origins_of(&m, other), 0);
	excl_done(&m);
}

/* h2splitctl include takes off the operator's exclusion only, and says what is left. */
static void test_include_removes_only_its_origin(void **unused)
{
	const uint64_t pod = 4242;
	uint32_t now = 0, left = 99;
	struct bpf_maps m;

	(void)unused;
	excl_map(&m, sizeof(struct h2s_exclude_value));
	assert_int_equal(bpf_maps_include(&m, pod, H2S_EXCLUDE_CTL, &left), -ENOENT);
	assert_int_equal(left, 0);
	assert_int_equal(bpf_maps_exclude(&m, pod, H2S_EXCLUDE_CTL, &now), 0);
	assert_int_equal(now, CTL);
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, &pod, 1), 0);
	assert_int_equal(bpf_maps_exclude(&m, pod, H2S_EXCLUDE_CTL, &now), 0); /* again: no-op */
	assert_int_equal(now, CTL | K8S);
	assert_int_equal(bpf_maps_include(&m, pod, H2S_EXCLUDE_CTL, &left), 0);
	assert_int_equal(left, K8S);
	assert_int_equal(origins_of(&m, pod), K8S);
	/* Not the operator's any more: nothing to undo, the opt-out stays. */
	assert_int_equal(bpf_maps_include(&m, pod, H2S_EXCLUDE_CTL, &left), -ENOENT);
	assert_int_equal(left, K8S);
	/* The Kubernetes source still sees its own id set unchanged, and it is right. */
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, NULL, 0), 0);
	assert_int_equal(origins_of(&m, pod), 0);
	assert_int_equal(bpf_maps_exclude(&m, pod, (enum h2s_exclude_origin)0, NULL), -EINVAL);
	assert_int_equal(bpf_maps_include(&m, pod, (enum h2s_exclude_origin)9, NULL), -EINVAL);
	excl_done(&m);
}

/* Reading gives every origin of every entry, sorted by id. */
static void test_excluded_read_lists_all_origins(void **unused)
{
	struct bpf_maps_excluded *e;
	struct bpf_maps m;
	int n;

	(void)unused;
	excl_map(&m, sizeof(struct h2s_exclude_value));
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_SELF, (uint64_t[]){30}, 1), 0);
	assert_int_equal(bpf_maps_exclude(&m, 10, H2S_EXCLUDE_CTL, NULL), 0);
	assert_int_equal(bpf_maps_excluded_sync(&m, H2S_EXCLUDE_K8S, (uint64_t[]){10, 20}, 2), 0);
	assert_int_equal(bpf_maps_excluded_read(&m, &e, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].cgroup_id, 10);
	assert_int_equal(e[0].origins, CTL | K8S);
	assert_int_equal(e[1].cgroup_id, 20);
	assert_int_equal(e[1].origins, K8S);
	assert_int_equal(e[2].cgroup_id, 30);
	assert_int_equal(e[2].origins, SELF);
	free(e);
	excl_done(&m);
}

/* A pin of the earlier layout (one origin byte) converts to bits, and its
 * entries merge into the new map without dropping what is there. */
static void test_excluded_v1_carry_over(void **unused)
{
	struct bpf_maps old, m;
	struct bpf_maps_excluded *e;
	__u8 v;
	int n;

	(void)unused;
	excl_map(&old, sizeof(__u8));
	excl_map(&m, sizeof(struct h2s_exclude_value));
	for (__u64 id = 1; id <= 5; id++) {
		v = (__u8)(id == 5 ? 200 : id); /* 1 self, 2 flag, 3 ctl, 4 k8s, 200 by hand */
		assert_int_equal(bpf_map_update_elem(old.fd[BPF_MAPS_EXCLUDED], &id, &v, BPF_ANY),
				 0);
	}
	assert_int_equal(bpf_maps_excluded_read_v1(m.fd[BPF_MAPS_EXCLUDED], &e, &n), -EINVAL);
	assert_int_equal(bpf_maps_excluded_read_v1(old.fd[BPF_MAPS_EXCLUDED], &e, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(e[0].origins, SELF);
	assert_int_equal(e[1].origins, FLAG);
	assert_int_equal(e[2].origins, CTL);
	assert_int_equal(e[3].origins, K8S);
	assert_int_equal(e[4].origins, CTL); /* unknown: kept as the operator's */
	assert_int_equal(bpf_maps_exclude(&m, 3, H2S_EXCLUDE_K8S, NULL), 0);
	assert_int_equal(bpf_maps_excluded_merge(&m, e, n), 0);
	assert_int_equal(origins_of(&m, 3), CTL | K8S);
	assert_int_equal(origins_of(&m, 4), K8S);
	free(e);
	excl_done(&old);
	excl_done(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tuple_v4_is_mapped_host_order),
	    cmocka_unit_test(test_tuple_dual_stack_listener_same_key),
	    cmocka_unit_test(test_tuple_v6_and_bad_family),
	    cmocka_unit_test(test_services_from_state),
	    cmocka_unit_test(test_services_duplicate_vip_lower_id_wins),
	    cmocka_unit_test(test_services_empty_state),
	    cmocka_unit_test(test_diff_adds_changes_before_removes),
	    cmocka_unit_test(test_diff_same_port_differs),
	    cmocka_unit_test(test_diff_nothing_and_everything),
	    cmocka_unit_test(test_counter_names),
	    cmocka_unit_test(test_map_and_origin_names),
	    cmocka_unit_test(test_origins_str),
	    cmocka_unit_test(test_excluded_two_origins_each_hold_a_reference),
	    cmocka_unit_test(test_include_removes_only_its_origin),
	    cmocka_unit_test(test_excluded_read_lists_all_origins),
	    cmocka_unit_test(test_excluded_v1_carry_over),
	    cmocka_unit_test(test_set_listen_rejects_non_targets),
	    cmocka_unit_test(test_open_pinned_missing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
