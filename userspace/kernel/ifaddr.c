// SPDX-License-Identifier: Apache-2.0
/*
 * Adds and removes the listen address with rtnetlink (ifaddr.h). Each request
 * is acked (NLM_F_ACK) and its error returned; nothing is retried. "Already
 * local" is decided by a bind() probe, so a node IP given as --listen is left
 * exactly as it was.
 */
#include <errno.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "kernel/ifaddr.h"

struct nlreq {
	struct nlmsghdr nh;
	union {
		struct ifinfomsg ifi;
		struct ifaddrmsg ifa;
	};
	char attrs[256];
};

static void add_attr(struct nlreq *r, unsigned short type, const void *data, size_t len)
{
	struct rtattr *rta = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

static struct rtattr *nest_start(struct nlreq *r, unsigned short type)
{
	struct rtattr *rta = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->nh.nlmsg_len));

	add_attr(r, type, NULL, 0);
	return rta;
}

static void nest_end(struct nlreq *r, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)((char *)r + r->nh.nlmsg_len - (char *)nest);
}

/* Send one request and wait for its ack. 0 or the kernel's -errno. */
static int nl_talk(struct nlreq *r)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	char buf[4096];
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	int err = -EIO;
	ssize_t n;

	if (fd < 0)
		return -errno;
	r->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	r->nh.nlmsg_seq = 1;
	if (sendto(fd, r, r->nh.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		goto out;
	}
	n = recv(fd, buf, sizeof(buf), 0);
	if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
		struct nlmsghdr *nh = (struct nlmsghdr *)buf;

		if (nh->nlmsg_type == NLMSG_ERROR)
			err = ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
	}
out:
	close(fd);
	return err;
}

static int create_dummy(void)
{
	struct nlreq r = {0};
	struct rtattr *linkinfo;

	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.nh.nlmsg_type = RTM_NEWLINK;
	r.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	r.ifi.ifi_family = AF_UNSPEC;
	r.ifi.ifi_flags = IFF_UP;
	r.ifi.ifi_change = IFF_UP;
	add_attr(&r, IFLA_IFNAME, IFADDR_DUMMY_NAME, sizeof(IFADDR_DUMMY_NAME));
	linkinfo = nest_start(&r, IFLA_LINKINFO);
	add_attr(&r, IFLA_INFO_KIND, "dummy", sizeof("dummy"));
	nest_end(&r, linkinfo);
	return nl_talk(&r);
}

static int delete_dummy(void)
{
	struct nlreq r = {0};
	unsigned int idx = if_nametoindex(IFADDR_DUMMY_NAME);

	if (!idx)
		return 0;
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.nh.nlmsg_type = RTM_DELLINK;
	r.ifi.ifi_family = AF_UNSPEC;
	r.ifi.ifi_index = (int)idx;
	return nl_talk(&r);
}

static int addr_msg(int type, int flags, unsigned int ifindex, const struct sockaddr_storage *a)
{
	struct nlreq r = {0};
	const void *raw;
	size_t len;

	if (a->ss_family == AF_INET) {
		raw = &((const struct sockaddr_in *)a)->sin_addr;
		len = 4;
	} else {
		raw = &((const struct sockaddr_in6 *)a)->sin6_addr;
		len = 16;
	}
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	r.nh.nlmsg_type = (unsigned short)type;
	r.nh.nlmsg_flags = (unsigned short)flags;
	r.ifa.ifa_family = (unsigned char)a->ss_family;
	r.ifa.ifa_prefixlen = (unsigned char)(len * 8);
	r.ifa.ifa_scope = RT_SCOPE_HOST;
	r.ifa.ifa_index = ifindex;
	add_attr(&r, IFA_LOCAL, raw, len);
	add_attr(&r, IFA_ADDRESS, raw, len);
	if (a->ss_family == AF_INET6) {
		__u32 fl = IFA_F_NODAD;

		r.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
		add_attr(&r, IFA_FLAGS, &fl, sizeof(fl));
	}
	return nl_talk(&r);
}

/* bind() without IP_FREEBIND succeeds only for an address that is local already. */
static bool is_local(const struct sockaddr_storage *a)
{
	struct sockaddr_storage probe = *a;
	socklen_t len = a->ss_family == AF_INET ? sizeof(struct sockaddr_in)
						: sizeof(struct sockaddr_in6);
	int fd = socket(a->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool local;

	if (fd < 0)
		return false;
	if (a->ss_family == AF_INET)
		((struct sockaddr_in *)&probe)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&probe)->sin6_port = 0;
	local = bind(fd, (struct sockaddr *)&probe, len) == 0;
	close(fd);
	return local;
}

int ifaddr_ensure(const struct sockaddr_storage *addr)
{
	unsigned int idx;
	int err;

	if (is_local(addr))
		return 0;
	err = create_dummy();
	if (err && err != -EEXIST)
		log_info("no_dummy_device err=\"%s\" fallback=lo", strerror(-err));
	idx = if_nametoindex(IFADDR_DUMMY_NAME);
	if (!idx)
		idx = if_nametoindex("lo");
	if (!idx)
		return -ENODEV;
	err = addr_msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, idx, addr);
	if (err && err != -EEXIST) {
		log_error("listen_address_add_failed err=\"%s\"", strerror(-err));
		return err;
	}
	return 0;
}

int ifaddr_remove(const struct sockaddr_storage *addr)
{
	unsigned int lo = if_nametoindex("lo");

	if (lo)
		addr_msg(RTM_DELADDR, 0, lo, addr); /* absent is fine: idempotent */
	return delete_dummy();
}
