// SPDX-License-Identifier: Apache-2.0
/*
 * sock_diag over netlink (see sock_diag.h): dump established TCP sockets with
 * INET_DIAG_INFO (tcp_info) and INET_DIAG_CGROUP_ID (Linux 5.7+), and
 * SOCK_DESTROY one of them by its tuple and cookie. The socket is opened in
 * the target netns, so every request is answered from there. Replies are
 * read with a 1 s deadline: a kernel that never answers cannot hang a pass.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>

#include "kernel/netns.h"
#include "kernel/sock_diag.h"

#define RECV_BUF 32768
#define TCPF_ESTABLISHED (1U << 1) /* 1 << TCP_ESTABLISHED */

struct diag_req {
	struct nlmsghdr nlh;
	struct inet_diag_req_v2 r;
};

int sock_diag_open(const struct netns_ref *ns)
{
	struct timeval tv = {.tv_sec = 1};
	int fd = netns_socket_proto(ns, AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG);
	int fl;

	if (fd < 0)
		return fd;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int send_req(int fd, uint16_t type, uint16_t flags, uint8_t family,
		    const struct inet_diag_sockid *id, uint32_t states)
{
	struct diag_req q = {
	    .nlh = {.nlmsg_len = sizeof(q),
		    .nlmsg_type = type,
		    .nlmsg_flags = NLM_F_REQUEST | flags},
	    .r = {.sdiag_family = family, .sdiag_protocol = IPPROTO_TCP, .idiag_states = states}};
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};

	if (id)
		q.r.id = *id;
	if (type == SOCK_DIAG_BY_FAMILY)
		q.r.idiag_ext = 1 << (INET_DIAG_INFO - 1);
	if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	return 0;
}

static void parse_attrs(const struct inet_diag_msg *m, int len, struct sock_diag_conn *c)
{
	const struct rtattr *a = (const struct rtattr *)(m + 1);
	int left = len - NLMSG_ALIGN(sizeof(*m));

	for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
		size_t n = RTA_PAYLOAD(a);

		if (a->rta_type == INET_DIAG_CGROUP_ID && n >= sizeof(uint64_t)) {
			memcpy(&c->cgroup_id, RTA_DATA(a), sizeof(uint64_t));
		} else if (a->rta_type == INET_DIAG_INFO) {
			struct tcp_info ti = {0};

			/* An older kernel's tcp_info is shorter: what it lacks stays 0. */
			memcpy(&ti, RTA_DATA(a), n < sizeof(ti) ? n : sizeof(ti));
			c->have_info = n >= offsetof(struct tcp_info, tcpi_data_segs_out) +
						sizeof(ti.tcpi_data_segs_out);
			c->unacked = ti.tcpi_unacked;
			c->last_data_sent_ms = ti.tcpi_last_data_sent;
			c->last_data_recv_ms = ti.tcpi_last_data_recv;
			c->data_segs_in = ti.tcpi_data_segs_in;
			c->data_segs_out = ti.tcpi_data_segs_out;
			c->bytes_acked = ti.tcpi_bytes_acked;
			c->bytes_received = ti.tcpi_bytes_received;
		}
	}
}

static void to_conn(const struct inet_diag_msg *m, int len, struct sock_diag_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->family = m->idiag_family;
	c->id = m->id;
	c->cookie = (uint64_t)m->id.idiag_cookie[0] | ((uint64_t)m->id.idiag_cookie[1] << 32);
	c->rqueue = m->idiag_rqueue;
	c->wqueue = m->idiag_wqueue;
	parse_attrs(m, len, c);
}

/* Read replies until NLMSG_DONE (a dump) or the ack/error (a request). */
static int read_replies(int fd, int (*cb)(void *arg, const struct sock_diag_conn *c), void *arg)
{
	static __thread char buf[RECV_BUF] __attribute__((aligned(NLMSG_ALIGNTO)));
	int stop = 0;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		struct nlmsghdr *h;
		int left;

		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		left = (int)n;
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned int)left);
		     h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return stop;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				return e->error ? e->error : stop;
			}
			if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && cb && !stop) {
				struct sock_diag_conn c;

				to_conn(NLMSG_DATA(h), (int)NLMSG_PAYLOAD(h, 0), &c);
				stop = cb(arg, &c);
			}
		}
	}
}

int sock_diag_dump(int fd, int family, int (*cb)(void *arg, const struct sock_diag_conn *c),
		   void *arg)
{
	int err =
	    send_req(fd, SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, (uint8_t)family, NULL, TCPF_ESTABLISHED);

	return err ? err : read_replies(fd, cb, arg);
}

static int keep_one(void *arg, const struct sock_diag_conn *c)
{
	*(struct sock_diag_conn *)arg = *c;
	return 1;
}

int sock_diag_get(int fd, const struct sock_diag_conn *c, struct sock_diag_conn *out)
{
	/* The ack after the one answer ends the read. */
	int err = send_req(fd, SOCK_DIAG_BY_FAMILY, NLM_F_ACK, c->family, &c->id, ~0U);

	if (err)
		return err;
	out->family = 0;
	err = read_replies(fd, keep_one, out);
	if (err < 0)
		return err;
	return out->family ? 0 : -ENOENT;
}

int sock_diag_destroy(int fd, const struct sock_diag_conn *c)
{
	int err = send_req(fd, SOCK_DESTROY, NLM_F_ACK, c->family, &c->id, ~0U);

	return err ? err : read_replies(fd, NULL, NULL);
}
