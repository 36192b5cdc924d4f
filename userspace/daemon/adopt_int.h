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
#include "kernel/sock_diag.h"

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

/* A connection a pass found, as its looks saw it. */
struct adopt_cand {
	struct sock_diag_conn c; /* the newest look */
	bool done;
	bool moved;		/* data_segs_in or _out changed while the pass looked */
	uint64_t in_ms, out_ms; /* when data_segs_in / _out last changed, as seen */
	uint64_t moved_ms;	/* the last change came after this (the look before) */
	uint64_t burst;		/* bytes that moved either way between those two looks */
	uint64_t bulk_ms;	/* the last look that saw more than BULK_BYTES move */
};

int adopt_key_cmp(const void *a, const void *b);
/* Whether |x| may be closed now (|now| in CLOCK_MONOTONIC ms): nothing queued
 * or unacknowledged, quiet, and its last data an answer (adopt_pass.c). */
bool adopt_is_idle(const struct adopt_cand *x, uint64_t now);
/* Run one pass to its end (or |stop|). 0 or -errno (logged). */
int adopt_pass_run(struct adopt_pass *ps);

#endif
