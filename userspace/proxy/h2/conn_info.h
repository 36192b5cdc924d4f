/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A redirected connection as the worker accepted it, and how its owner hears
 * that it ended. Below both the splitter and the L4 path, so neither needs
 * the worker: whoever takes a connection tells conn_owner.closed exactly
 * once, on the worker thread, when it ends (also when taking it failed).
 */
#ifndef H2SPLIT_CONN_INFO_H
#define H2SPLIT_CONN_INFO_H

#include <stdint.h>
#include <sys/socket.h>

#include "h2split_bpf.h"

struct netns_ref;

struct conn_info {
	struct sockaddr_storage client; /* the pod's address as accepted */
	struct sockaddr_storage orig;	/* the VIP:port the app dialled */
	struct h2s_origdst od;		/* what BPF recorded */
	struct netns_ref *netns;	/* owned ref; NULL: daemon's netns */
	uint64_t pod_key;		/* counted against the pod's limit; 0: not counted */
};

/* The owner of accepted connections (the worker). */
struct conn_owner {
	/* A connection ended; |pod_key| is its conn_info.pod_key. Required. */
	void (*closed)(void *arg, uint64_t pod_key);
	void *arg;
};

static inline void conn_owner_closed(const struct conn_owner *o, uint64_t pod_key)
{
	o->closed(o->arg, pod_key);
}

#endif
