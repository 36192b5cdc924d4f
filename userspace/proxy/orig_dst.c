// SPDX-License-Identifier: Apache-2.0
/*
 * Where an accepted connection was going. The answer is normally the record
 * BPF made at connect (h2s_conn_origdst, taken once); for a connection some
 * other NAT in the node's netns sent to the listener, conntrack's original
 * destination, but only when that is an opted-in Service, so the daemon is
 * never an open proxy.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "base/state.h"
#include "kernel/bpf_maps.h"
#include "proxy/orig_dst.h"

/* The VIP:port the app dialled, as a sockaddr in the family it used. */
static int origdst_sockaddr(const struct h2s_origdst *od, struct sockaddr_storage *ss)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(ss, 0, sizeof(*ss));
	if (!memcmp(od->addr, v4mapped, sizeof(v4mapped))) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, od->addr + 12, 4);
		sin->sin_port = od->port;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, od->addr, 16);
		sin6->sin6_port = od->port;
	}
	return od->port ? 0 : -EINVAL;
}

int orig_dst_take(const struct bpf_maps *maps, const struct sockaddr_storage *peer,
		  const struct sockaddr_storage *local, struct conn_info *ci)
{
	if (bpf_maps_take_origdst(maps, (const struct sockaddr *)peer,
				  (const struct sockaddr *)local, &ci->od))
		return -ENOENT;
	return origdst_sockaddr(&ci->od, &ci->orig);
}

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif

/* The destination a NAT in this netns rewrote to our listener (conntrack's
 * original tuple), when it was not our own address. */
static int nat_original_dst(int fd, const struct sockaddr_storage *local,
			    struct sockaddr_storage *orig)
{
	socklen_t len = sizeof(*orig);
	bool v4 = local->ss_family == AF_INET;

	memset(orig, 0, sizeof(*orig));
	if (getsockopt(fd, v4 ? SOL_IP : SOL_IPV6, v4 ? SO_ORIGINAL_DST : IP6T_SO_ORIGINAL_DST,
		       orig, &len))
		return -errno;
	if (orig->ss_family != local->ss_family ||
	    !memcmp(orig, local, v4 ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)))
		return -ENOENT; /* not NATed: someone dialled the listen address itself */
	return 0;
}

/*
 * A connection without a BPF record that a NAT in the node's netns sent here
 * (an iptables DNAT/REDIRECT to the listen address, not ours): conntrack
 * still knows where the app aimed. If that is an opted-in Service, serve it
 * as if BPF had redirected it, but from the daemon's own netns (the client's
 * cgroup, hence its netns, is unknown), rather than closing it; anything else
 * stays closed, so the daemon is never an open proxy.
 */
int orig_dst_recover(const struct state *st, int fd, const struct sockaddr_storage *local,
		     struct conn_info *ci)
{
	const struct state_service *svc;
	struct h2s_ip vip;
	uint16_t port;
	int err;

	memset(&ci->od, 0, sizeof(ci->od));
	err = nat_original_dst(fd, local, &ci->orig);

	if (err)
		return err;
	if (ci->orig.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ci->orig;

		h2s_ip_from_v4(&vip, a->sin_addr);
		port = ntohs(a->sin_port);
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ci->orig;

		memcpy(vip.b, &a->sin6_addr, 16);
		port = ntohs(a->sin6_port);
	}
	svc = st ? state_find_vip(st, &vip, port) : NULL;
	if (!svc)
		return -ENOENT;
	memcpy(ci->od.addr, vip.b, 16);
	ci->od.port = htons(port);
	ci->od.family = ci->orig.ss_family;
	ci->od.service_id = svc->id;
	return 0;
}
