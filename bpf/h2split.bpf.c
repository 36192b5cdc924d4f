// SPDX-License-Identifier: GPL-2.0
/*
 * h2split's kernel side: cgroup connect hooks send a pod's TCP connect to an
 * opted-in Service (VIP:port) to the node-local splitter instead, sockops
 * hands the original destination to the splitter by connection tuple, and
 * getpeername hooks keep the app's view unchanged. Invariant: a connect hook
 * always returns 1; anything unexpected leaves the connect as the app made it
 * and bumps a reason counter (fail-open).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <asm/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "h2split_bpf.h"

/* From the socket headers, which UAPI does not export to BPF (values are the
 * generic ones; SOCK_STREAM is 2 on MIPS, which h2split does not support). */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1

/* (VIP, port) -> service; written by the daemon, read by connect4/6. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, H2S_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct h2s_svc_key);
	__type(value, struct h2s_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_services SEC(".maps");

/* cgroup id -> the origins excluding it; written by h2splitd and h2splitctl,
 * read (presence only) by connect4/6. An entry covers the cgroup and
 * everything below it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, H2S_MAX_EXCLUDED);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct h2s_exclude_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_excluded_cgroups SEC(".maps");

/* enum h2s_listener_slot -> the daemon's listening socket; the daemon inserts,
 * the kernel removes the entry when the socket closes; connect4/6 read it as
 * the splitter's liveness. Userspace lookups return the socket cookie. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, H2S_LISTENER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_listeners SEC(".maps");

/* slot * H2S_WORKER_KEYS + k -> a listening socket of the daemon that owns
 * the liveness slot (see H2S_WORKER_KEYS); written by that daemon when it
 * starts redirecting, read by h2s_migrate. The kernel removes closed sockets. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, H2S_LISTENER_SLOTS * H2S_WORKER_KEYS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_workers SEC(".maps");

/* Single slot: the listen addresses; written by the daemon, read by connect4/6. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2s_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_config SEC(".maps");

/* Socket cookie -> original destination of a redirected connect; written by
 * connect4/6, read by sockops and getpeername4/6, deleted by sock_release. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, H2S_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, struct h2s_origdst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_sock_origdst SEC(".maps");

/* Connection tuple -> original destination; written by sockops when the SYN
 * is about to leave, looked up and deleted by the daemon after accept(). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, H2S_MAX_PENDING);
	__type(key, struct h2s_tuple);
	__type(value, struct h2s_origdst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_conn_origdst SEC(".maps");

/* enum h2s_counter -> per-CPU count; bumped here, summed by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, H2S_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} h2s_counters SEC(".maps");

static __always_inline void count(enum h2s_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&h2s_counters, &key);

	/* Atomic even per CPU: programs run preemptible (migration disabled
	 * only), so two tasks on one CPU can interleave a plain increment. */
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void count_update_error(long err)
{
	/* An LRU map evicts instead of filling up, but can still fail to find a
	 * free node with every CPU inserting at once (-ENOMEM). */
	count(err == -ENOMEM || err == -E2BIG ? H2S_CNT_MAP_FULL : H2S_CNT_MAP_ERROR);
}

static __always_inline void addr_from_v4(__u8 addr[16], __u32 ip4)
{
	__u32 w[4] = {0, 0, bpf_htonl(0xffff), ip4};

	__builtin_memcpy(addr, w, 16);
}

/*
 * Context words are read one by one through volatile: clang otherwise merges
 * two adjacent 4-byte ctx reads into one 8-byte load, which the verifier
 * refuses for bpf_sock_ops ("invalid bpf_context access off=48 size=8").
 */
static __always_inline void addr_from_ctx6(__u8 addr[16], const __u32 *ctx_words)
{
	__u32 w[4];

	w[0] = *(const volatile __u32 *)&ctx_words[0];
	w[1] = *(const volatile __u32 *)&ctx_words[1];
	w[2] = *(const volatile __u32 *)&ctx_words[2];
	w[3] = *(const volatile __u32 *)&ctx_words[3];
	__builtin_memcpy(addr, w, 16);
}

static __always_inline __u32 addr_word(const __u8 addr[16], int i)
{
	__u32 w;

	__builtin_memcpy(&w, addr + 4 * i, 4);
	return w;
}

static __always_inline int addr_is_v4mapped(const __u8 addr[16])
{
	return addr_word(addr, 0) == 0 && addr_word(addr, 1) == 0 &&
	       addr_word(addr, 2) == bpf_htonl(0xffff);
}

static __always_inline int addr_is_zero(const __u8 addr[16])
{
	return (addr_word(addr, 0) | addr_word(addr, 1) | addr_word(addr, 2) |
		addr_word(addr, 3)) == 0;
}

/* True when the caller's cgroup, or any cgroup above it, is excluded. */
static __always_inline int cgroup_excluded(__u64 cgroup_id)
{
	if (bpf_map_lookup_elem(&h2s_excluded_cgroups, &cgroup_id))
		return 1;
	/* Level 0 is the hierarchy root; past the caller's own level the helper
	 * returns 0. Ancestry, not the socket's cgroup: a pod's containers sit
	 * a few levels below the pod cgroup an operator would name. */
	for (int level = 0; level < H2S_MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);

		if (id == 0 || id == cgroup_id)
			break;
		if (bpf_map_lookup_elem(&h2s_excluded_cgroups, &id))
			return 1;
	}
	return 0;
}

/* The daemon's listener in |slot| is open, listening, and on |port| (network
 * order). A lookup from BPF takes a socket reference: release it on every path. */
static __always_inline int listener_alive(__u32 slot, __u16 port)
{
	struct bpf_sock *sk = bpf_map_lookup_elem(&h2s_listeners, &slot);
	int alive;

	if (!sk)
		return 0;
	alive = sk->state == BPF_TCP_LISTEN && sk->src_port == bpf_ntohs(port);
	bpf_sk_release(sk);
	return alive;
}

/*
 * A socket that was redirected once, failed to connect (say the splitter died
 * between our check and its accept), and is connect()ed again by the app now
 * goes direct: drop its old record, or getpeername and sockops would still
 * act on the first attempt.
 */
static __always_inline void forget_origdst(void *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	bpf_map_delete_elem(&h2s_sock_origdst, &cookie);
}

/* Where a connect to |svc_key| goes instead: the listener's address in
 * |to| and port (network order) in |*to_port|. 0 or -errno, counted. */
static __always_inline int pick_listener(const struct h2s_svc_key *svc_key, __u8 to[16],
					 __u16 *to_port)
{
	__u32 zero = 0;
	struct h2s_config *cfg = bpf_map_lookup_elem(&h2s_config, &zero);
	__u32 slot;

	if (!cfg) {
		count(H2S_CNT_MAP_ERROR);
		return -ENOENT;
	}
	if (addr_is_v4mapped(svc_key->addr)) {
		slot = H2S_LISTENER_V4;
		__builtin_memcpy(to, cfg->listen_v4, 16);
		*to_port = cfg->listen_v4_port;
	} else {
		slot = H2S_LISTENER_V6;
		__builtin_memcpy(to, cfg->listen_v6, 16);
		*to_port = cfg->listen_v6_port;
	}
	if (*to_port == 0 || addr_is_zero(to)) {
		count(H2S_CNT_NO_LISTEN_ADDR);
		return -EDESTADDRREQ;
	}
	if (!listener_alive(slot, *to_port)) {
		count(H2S_CNT_BYPASS_NO_LISTENER);
		return -ECONNREFUSED;
	}
	return 0;
}

/*
 * The connect decision, shared by connect4 and connect6. |key| is the
 * destination as the app gave it (IPv4 already mapped). On 0 the caller
 * rewrites the destination to |to|:|to_port|; any -errno is counted here and
 * the connect proceeds untouched.
 */
static __always_inline int decide(struct bpf_sock_addr *ctx, const struct h2s_svc_key *key,
				  __u16 family, __u8 to[16], __u16 *to_port)
{
	struct h2s_svc_value *svc;
	struct h2s_origdst od = {};
	__u64 cookie;
	long err;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP) {
		count(H2S_CNT_NOT_TCP);
		return -EPROTONOSUPPORT;
	}
	svc = bpf_map_lookup_elem(&h2s_services, key);
	if (!svc) {
		count(H2S_CNT_NOT_A_SERVICE);
		return -ENOENT;
	}
	od.cgroup_id = bpf_get_current_cgroup_id();
	if (!(svc->flags & H2S_SVC_F_ENABLED)) {
		count(H2S_CNT_SERVICE_DISABLED);
		err = -EPERM;
	} else if (cgroup_excluded(od.cgroup_id)) {
		count(H2S_CNT_BYPASS_EXCLUDED);
		err = -EPERM;
	} else {
		err = pick_listener(key, to, to_port);
	}
	if (err) {
		forget_origdst(ctx);
		return err;
	}

	__builtin_memcpy(od.addr, key->addr, 16);
	od.port = key->port;
	od.family = family;
	od.service_id = svc->service_id;
	od.pid = bpf_get_current_pid_tgid() >> 32;
	cookie = bpf_get_socket_cookie(ctx);
	err = bpf_map_update_elem(&h2s_sock_origdst, &cookie, &od, BPF_ANY);
	if (err) {
		count_update_error(err);
		return err;
	}
	count(H2S_CNT_REDIRECTED);
	return 0;
}

static __always_inline int connect4(struct bpf_sock_addr *ctx)
{
	struct h2s_svc_key key = {};
	__u8 to[16];
	__u16 to_port;
	int err;

	addr_from_v4(key.addr, ctx->user_ip4);
	key.port = (__u16)ctx->user_port;
	err = decide(ctx, &key, AF_INET, to, &to_port);
	if (err)
		return err;
	ctx->user_ip4 = addr_word(to, 3);
	ctx->user_port = to_port;
	return 0;
}

/*
 * An AF_INET6 socket may dial an IPv4 service as ::ffff:a.b.c.d (Java and Go
 * do for dual-stack sockets): the key is already mapped, so it matches the
 * IPv4 entry, and it is sent to the IPv4 listener as ::ffff:listener. A
 * V6ONLY socket fails such a connect with ENETUNREACH either way.
 */
static __always_inline int connect6(struct bpf_sock_addr *ctx)
{
	struct h2s_svc_key key = {};
	__u8 to[16];
	__u16 to_port;
	int err;

	addr_from_ctx6(key.addr, ctx->user_ip6);
	key.port = (__u16)ctx->user_port;
	err = decide(ctx, &key, AF_INET6, to, &to_port);
	if (err)
		return err;
	ctx->user_ip6[0] = addr_word(to, 0);
	ctx->user_ip6[1] = addr_word(to, 1);
	ctx->user_ip6[2] = addr_word(to, 2);
	ctx->user_ip6[3] = addr_word(to, 3);
	ctx->user_port = to_port;
	return 0;
}

/*
 * At TCP_CONNECT_CB the source address and ephemeral port are chosen and the
 * SYN is not sent yet, so the tuple entry exists before the daemon can
 * accept(). Only redirected sockets have a cookie entry; for the rest this is
 * one failed lookup.
 */
static __always_inline int record_tuple(struct bpf_sock_ops *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct h2s_origdst *od = bpf_map_lookup_elem(&h2s_sock_origdst, &cookie);
	struct h2s_tuple t = {};
	long err;

	if (!od)
		return -ENOENT;
	if (ctx->family == AF_INET) {
		addr_from_v4(t.client_addr, ctx->local_ip4);
		addr_from_v4(t.proxy_addr, ctx->remote_ip4);
	} else {
		/* IPv4-mapped connects keep AF_INET6 and mapped addresses here. */
		addr_from_ctx6(t.client_addr, ctx->local_ip6);
		addr_from_ctx6(t.proxy_addr, ctx->remote_ip6);
	}
	/* local_port is host order; remote_port is the network-order port in
	 * the upper half of the word (on little endian), so ntohl, not ntohs. */
	t.client_port = (__u16)ctx->local_port;
	t.proxy_port = (__u16)bpf_ntohl(ctx->remote_port);
	err = bpf_map_update_elem(&h2s_conn_origdst, &t, od, BPF_ANY);
	if (err) {
		/* Redirected already: h2splitd will find nothing for it. */
		count_update_error(err);
		count(H2S_CNT_ORIGINAL_DST_MISSING);
		return err;
	}
	count(H2S_CNT_TUPLE_RECORDED);
	return 0;
}

/* getpeername on a redirected socket reports the VIP the app dialled. */
static __always_inline struct h2s_origdst *origdst_of(struct bpf_sock_addr *ctx, __u16 family)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct h2s_origdst *od = bpf_map_lookup_elem(&h2s_sock_origdst, &cookie);

	if (!od || od->family != family)
		return 0;
	return od;
}

static __always_inline int getpeer4(struct bpf_sock_addr *ctx)
{
	struct h2s_origdst *od = origdst_of(ctx, AF_INET);

	if (!od)
		return -ENOENT;
	ctx->user_ip4 = addr_word(od->addr, 3);
	ctx->user_port = od->port;
	count(H2S_CNT_GETPEERNAME_REWRITTEN);
	return 0;
}

static __always_inline int getpeer6(struct bpf_sock_addr *ctx)
{
	struct h2s_origdst *od = origdst_of(ctx, AF_INET6);

	if (!od)
		return -ENOENT;
	ctx->user_ip6[0] = addr_word(od->addr, 0);
	ctx->user_ip6[1] = addr_word(od->addr, 1);
	ctx->user_ip6[2] = addr_word(od->addr, 2);
	ctx->user_ip6[3] = addr_word(od->addr, 3);
	ctx->user_port = od->port;
	count(H2S_CNT_GETPEERNAME_REWRITTEN);
	return 0;
}

/* Returning 0 from a connect hook fails the app's connect with EPERM: never. */
SEC("cgroup/connect4")
int h2s_connect4(struct bpf_sock_addr *ctx)
{
	connect4(ctx);
	return 1;
}

SEC("cgroup/connect6")
int h2s_connect6(struct bpf_sock_addr *ctx)
{
	connect6(ctx);
	return 1;
}

SEC("sockops")
int h2s_sockops(struct bpf_sock_ops *ctx)
{
	if (ctx->op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		record_tuple(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int h2s_getpeer4(struct bpf_sock_addr *ctx)
{
	getpeer4(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int h2s_getpeer6(struct bpf_sock_addr *ctx)
{
	getpeer6(ctx);
	return 1;
}

/* The cookie entry lives as long as the socket: the app may call getpeername
 * at any time. The LRU only catches what a missed release leaves behind. */
SEC("cgroup/sock_release")
int h2s_release(struct bpf_sock *ctx)
{
	__u64 cookie;

	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	bpf_map_delete_elem(&h2s_sock_origdst, &cookie);
	return 1;
}

/*
 * Attached to the daemons' listeners (SO_ATTACH_REUSEPORT_EBPF), not to a
 * cgroup: while two daemons listen on the same address (a rolling update),
 * the kernel asks this program which listener gets each new connection, and
 * where a closing listener's queued connections and pending handshakes go.
 *
 * The answer is the daemon that owns the liveness slot, the newest ready one,
 * through h2s_workers. An older daemon takes nothing new, which matters when
 * the two do not share their maps (an upgrade that changed a map's layout:
 * the old one could not find the new programs' tuple records). No entry, or a
 * socket of the other family's group: SK_PASS without choosing, and the
 * kernel picks a listener by hash as it would without a program. Without this
 * program (before Linux 5.14) a closing daemon accepts until its queue is
 * empty before it closes, which leaves only a short window.
 */
SEC("sk_reuseport/migrate")
int h2s_migrate(struct sk_reuseport_md *ctx)
{
	__u32 key = ctx->hash % H2S_WORKER_KEYS;

	if (bpf_sk_select_reuseport(ctx, &h2s_workers, &key, 0) == 0)
		return SK_PASS;
	key += H2S_LISTENER_V6 * H2S_WORKER_KEYS;
	bpf_sk_select_reuseport(ctx, &h2s_workers, &key, 0);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
