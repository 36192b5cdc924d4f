// SPDX-License-Identifier: GPL-2.0
/*
 * A stand-in for a socket load balancer (Cilium's socket-LB, Calico's
 * connect-time load balancer): at connect4, and at connect6 for IPv4-mapped
 * addresses (grpcio dials from an AF_INET6 socket), it rewrites a
 * ClusterIP:port found in socklb_services to one backend pod's address, as
 * those do, and counts each rewrite in the entry. No getpeername4 reverse translation: a test
 * sees its rewrite in getpeername(). Built and loaded by tests/integration/
 * socklb.py for test_coexist.py.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct socklb_key {
	__u32 vip;  /* network order */
	__u16 port; /* network order */
	__u16 pad;
};

struct socklb_backend {
	__u32 ip;   /* network order */
	__u16 port; /* network order */
	__u16 pad;
	__u64 hits; /* connects rewritten */
};

/* ClusterIP:port -> the one pod it sends every connect to; the test writes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct socklb_key);
	__type(value, struct socklb_backend);
} socklb_services SEC(".maps");

static __always_inline struct socklb_backend *lookup(__u32 vip, __u32 port)
{
	struct socklb_key k = {.vip = vip, .port = (__u16)port};
	struct socklb_backend *b = bpf_map_lookup_elem(&socklb_services, &k);

	if (b)
		__sync_fetch_and_add(&b->hits, 1);
	return b;
}

SEC("cgroup/connect4")
int socklb_connect4(struct bpf_sock_addr *ctx)
{
	struct socklb_backend *b;

	if (ctx->type != 1 /* SOCK_STREAM */)
		return 1;
	b = lookup(ctx->user_ip4, ctx->user_port);
	if (b) {
		ctx->user_ip4 = b->ip;
		ctx->user_port = b->port;
	}
	return 1;
}

SEC("cgroup/connect6")
int socklb_connect6(struct bpf_sock_addr *ctx)
{
	struct socklb_backend *b;

	if (ctx->type != 1 || ctx->user_ip6[0] || ctx->user_ip6[1] ||
	    ctx->user_ip6[2] != __builtin_bswap32(0xffff))
		return 1;
	b = lookup(ctx->user_ip6[3], ctx->user_port);
	if (b) {
		ctx->user_ip6[3] = b->ip;
		ctx->user_port = b->port;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
