/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Client pods' network namespaces, so upstream sockets are opened where the
 * client lives and backends (and NetworkPolicies) see the pod's own IP.
 * One netns fd is cached per client cgroup id; entries are refcounted by the
 * connections using them and closed after they have been idle a while.
 * Thread-safe: looked up only when a connection is set up, never per stream.
 */
#ifndef H2SPLIT_NETNS_H
#define H2SPLIT_NETNS_H

#include <stdint.h>

struct netns_cache;
struct netns_ref;

struct netns_cache *netns_cache_new(void);
void netns_cache_free(struct netns_cache *c);

/* Find (or open) the netns of the process |pid| in cgroup |cgroup_id| (as BPF
 * recorded them for a redirected connect). Falls back to any process of that
 * cgroup when |pid| is gone. 0 with a reference in |*out|, or -errno. */
int netns_cache_get(struct netns_cache *c, uint64_t cgroup_id, uint32_t pid,
		    struct netns_ref **out);
struct netns_ref *netns_ref_get(struct netns_ref *r);
void netns_ref_put(struct netns_cache *c, struct netns_ref *r);
/* A stable id for pooling (the netns inode). */
uint64_t netns_ref_id(const struct netns_ref *r);
/* Close entries unreferenced for more than |idle_ms|. Returns how many. */
int netns_cache_expire(struct netns_cache *c, uint64_t idle_ms);

/* socket(domain, type|SOCK_NONBLOCK|SOCK_CLOEXEC, 0) created inside |r|'s netns
 * (the daemon's own when |r| is NULL). The fd or -errno. */
int netns_socket(const struct netns_ref *r, int domain, int type);
/* The same with |protocol| (a NETLINK_SOCK_DIAG socket answers for its netns). */
int netns_socket_proto(const struct netns_ref *r, int domain, int type, int protocol);

#endif
