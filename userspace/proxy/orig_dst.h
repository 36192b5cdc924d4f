/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where an accepted connection was going (see orig_dst.c). Both fill
 * ci->od and ci->orig, and return 0 or -errno.
 */
#ifndef H2SPLIT_ORIG_DST_H
#define H2SPLIT_ORIG_DST_H

#include <sys/socket.h>

#include "proxy/h2/conn_info.h"

struct bpf_maps;
struct state;

/* The BPF record of the connection accepted from |peer| on |local| (taken:
 * a second call finds nothing); -ENOENT when there is none. */
int orig_dst_take(const struct bpf_maps *maps, const struct sockaddr_storage *peer,
		  const struct sockaddr_storage *local, struct conn_info *ci);
/* No record: the destination a NAT in this netns rewrote to the listener, if
 * it is the VIP:port of a Service of |st| (ci->od gets that Service's id, no
 * cgroup, no pid); -ENOENT otherwise (not NATed, or not an opted-in Service). */
int orig_dst_recover(const struct state *st, int fd, const struct sockaddr_storage *local,
		     struct conn_info *ci);

#endif
