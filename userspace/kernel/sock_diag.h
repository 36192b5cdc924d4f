/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP sockets of one network namespace through NETLINK_SOCK_DIAG: list the
 * established ones with their owner cgroup and tcp_info, and destroy one
 * (SOCK_DESTROY, what `ss -K` does: the app sees ECONNABORTED, the peer a
 * RST). Used to adopt connections opened before h2splitd. A handle is bound
 * to the netns it was opened in; one thread at a time. 0 or -errno.
 */
#ifndef H2SPLIT_SOCK_DIAG_H
#define H2SPLIT_SOCK_DIAG_H

#include <stdbool.h>
#include <stdint.h>
#include <linux/inet_diag.h>

struct netns_ref;

/* One established TCP socket as sock_diag reports it. */
struct sock_diag_conn {
	uint8_t family;		    /* AF_INET or AF_INET6 */
	struct inet_diag_sockid id; /* ports in network order, cookie: the socket */
	uint64_t cookie;
	uint64_t cgroup_id;	 /* the cgroup that created it; 0: the kernel did not say */
	uint32_t rqueue, wqueue; /* bytes not read by the app / not acked by the peer */
	bool have_info;		 /* the tcp_info fields below are set */
	uint32_t unacked;	 /* segments */
	uint32_t last_data_sent_ms, last_data_recv_ms; /* ago, in jiffies (1-10 ms steps) */
	uint32_t data_segs_in, data_segs_out;	       /* segments carrying data, so far */
	uint64_t bytes_acked, bytes_received;	       /* so far */
};

/* A sock_diag socket in |ns|'s netns (the daemon's own for NULL): the fd, or
 * -errno. Close it with close(2). */
int sock_diag_open(const struct netns_ref *ns);
/* Every established TCP socket of |family| (AF_INET, AF_INET6) in the fd's
 * netns, in the order the kernel lists them; |cb| returning non-zero stops
 * the walk and is returned. */
int sock_diag_dump(int fd, int family, int (*cb)(void *arg, const struct sock_diag_conn *c),
		   void *arg);
/* Socket |c| (found by tuple and cookie, a hash lookup: cheap, unlike a
 * dump, which walks the node's whole TCP table) as it is now, in |*out|.
 * -ENOENT when it is gone. */
int sock_diag_get(int fd, const struct sock_diag_conn *c, struct sock_diag_conn *out);
/* Destroy socket |c| (found by tuple and cookie). -ENOENT when it is gone,
 * -EOPNOTSUPP when the kernel lacks CONFIG_INET_DIAG_DESTROY, -EPERM without
 * CAP_NET_ADMIN in the netns. */
int sock_diag_destroy(int fd, const struct sock_diag_conn *c);

#endif
