/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What adopt.c (the thread, requests, status) shares with adopt_pass.c (one
 * pass: find the connections, wait for idle, close). Private to daemon/.
 */
#ifndef H2SPLIT_ADOPT_INT_H
#define H2SPLIT_ADOPT_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "daemon/adopt.h"

/* An opted-in VIP:port, IPv4 stored IPv4-mapped (a dual-stack socket's peer
 * ::ffff:a.b.c.d then matches the IPv4 ClusterIP). */
struct adopt_key {
	uint8_t addr[16];
	uint16_t port; /* host order */
};

struct adopt_pass {
	const struct adopt_params *p;
	const struct adopt_key *keys; /* sorted (adopt_key_cmp) */
	int n_keys;
	const atomic_bool *stop;
	pthread_mutex_t *lock;	      /* guards |info| and |total| */
	struct adopt_pass_info *info; /* pods, found, results */
	uint64_t *total;	      /* [ADOPT_R_COUNT] */
	bool *unsupported;	      /* set once SOCK_DESTROY says EOPNOTSUPP */
};

int adopt_key_cmp(const void *a, const void *b);
/* Run one pass to its end (or |stop|). 0 or -errno (logged). */
int adopt_pass_run(struct adopt_pass *ps);

#endif
