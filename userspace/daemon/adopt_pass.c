// SPDX-License-Identifier: Apache-2.0
/*
 * One adoption pass (see adopt.h): walk the cgroups below the attach point,
 * find each pod's netns through a process of its cgroup, list that netns'
 * established TCP sockets with sock_diag and keep those to an opted-in
 * VIP:port whose owner cgroup (INET_DIAG_CGROUP_ID) is below the attach
 * point and not excluded (one dump per netns: a dump walks the node's whole
 * TCP table). Then, every TICK_MS, look at each of them again by tuple and
 * cookie (a hash lookup) and close (SOCK_DESTROY) one that is idle, at most
 * one per pod per POD_GAP_MS and RATE_PER_S node-wide. The daemon's own netns
 * (the node's sockets) and cgroup are never searched.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/adopt_int.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"
#include "kernel/netns.h"
#include "kernel/sock_diag.h"

#define TICK_MS 1
/* Idle: nothing queued either way, nothing unacknowledged, and no data
 * segment either way for QUIET_MS, timed by this thread's own looks at the
 * segment counters every TICK_MS (tcp_info's last_data_* count in jiffies,
 * 4 ms steps at HZ=250: too coarse to close right after an answer, before
 * the app's next request). Data sent after the last data received may be a
 * request the server is still working on: that waits for an answer, or for
 * ANSWER_WAIT_MS. */
#define QUIET_MS 1
#define ANSWER_WAIT_MS 1000
/* A look that saw more than BULK_BYTES move is a transfer, not an RPC's
 * request or answer: a flow-controlled upload or a stream pauses whenever
 * the other app is slow to read (with only a WINDOW_UPDATE or PING between),
 * so for BULK_QUIET_MS after such a look the connection is busy. */
#define BULK_BYTES 16384
#define BULK_QUIET_MS 200
/* Before the pass has seen data move on a connection it knows only the
 * kernel's coarse times: closing then could land just before the app's next
 * request. So it waits for an exchange and closes right after it, unless the
 * connection has been quiet for SETTLED_MS (an app that sends less often). */
#define SETTLED_MS 1000
/* ... and it closes early in the quiet gap, within CLOSE_WINDOW_MS of the
 * last data, when the app's next request is furthest away; a look that comes
 * later (this thread was not scheduled in time) waits for the next exchange,
 * or for the connection to settle. */
#define CLOSE_WINDOW_MS 3
/* A look older than this (the thread was preempted) is taken again before a
 * close: the close must follow what it saw by microseconds. */
#define FRESH_US 500
/* Pacing: closes per second node-wide (burst RATE_BURST), and the time a
 * pod's next connection waits after one of its connections was closed, so
 * a pod reconnects one channel at a time. */
#define RATE_PER_S 50
#define RATE_BURST 10
#define POD_GAP_MS 200
#define MAX_CGROUPS 65536
#define MAX_PODS 4096
#define MAX_CONNS_PER_POD 4096
#define WALK_MAX_DEPTH 32

struct cg {
	uint64_t id;
	bool excluded;
};

struct pod {
	uint64_t ino; /* netns */
	uint64_t cgroup_id;
	int pid;
	struct netns_ref *ns;
	int fd;			  /* sock_diag in the pod's netns; -1 */
	struct adopt_cand *cands; /* owned */
	int n, cap, left;
	uint64_t next_ms;   /* no close before (POD_GAP_MS) */
	uint64_t looked_ms; /* the previous look */
};

struct scan {
	struct adopt_pass *ps;
	const struct bpf_maps_excluded *ex;
	int n_ex;
	uint64_t self_cg, self_ino;
	struct cg *cgs;
	int n_cgs;
	struct pod *pods;
	int n_pods;
	bool no_cgroup_attr; /* the kernel did not say a socket's cgroup */
	double tokens;
	uint64_t tokens_ms;
};

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int adopt_key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct adopt_key));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool is_excluded(const struct scan *s, uint64_t id)
{
	return s->ex && bsearch(&id, s->ex, (size_t)s->n_ex, sizeof(*s->ex), cmp_u64);
}

static const struct cg *find_cg(const struct scan *s, uint64_t id)
{
	return bsearch(&id, s->cgs, (size_t)s->n_cgs, sizeof(*s->cgs), cmp_u64);
}

static uint64_t netns_ino_of(int pid)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	return stat(path, &st) ? 0 : (uint64_t)st.st_ino;
}

static int first_pid(const char *dir)
{
	char path[PATH_MAX];
	int pid = 0;
	FILE *f;

	if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
		return 0;
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid;
}

/* A pod: the first cgroup seen in a netns that is not the node's. */
static void note_netns(struct scan *s, uint64_t cg_id, const char *dir)
{
	int pid = first_pid(dir);
	uint64_t ino = pid > 0 ? netns_ino_of(pid) : 0;

	if (!ino || ino == s->self_ino || s->n_pods >= MAX_PODS)
		return;
	for (int i = 0; i < s->n_pods; i++)
		if (s->pods[i].ino == ino)
			return;
	s->pods[s->n_pods++] = (struct pod){.ino = ino, .cgroup_id = cg_id, .pid = pid, .fd = -1};
}

static void walk(struct scan *s, char *path, size_t len, bool excluded, int depth)
{
	size_t base = strlen(path);
	struct dirent *de;
	struct stat st;
	DIR *d;

	if (s->n_cgs >= MAX_CGROUPS || depth > WALK_MAX_DEPTH || stat(path, &st))
		return;
	excluded = excluded || is_excluded(s, st.st_ino) || st.st_ino == s->self_cg;
	s->cgs[s->n_cgs++] = (struct cg){.id = st.st_ino, .excluded = excluded};
	if (!excluded)
		note_netns(s, st.st_ino, path);
	d = opendir(path);
	if (!d)
		return; /* removed while we walked */
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		if (snprintf(path + base, len - base, "/%s", de->d_name) < (int)(len - base))
			walk(s, path, len, excluded, depth + 1);
		path[base] = '\0';
	}
	closedir(d);
}

static bool key_of(const struct sock_diag_conn *c, struct adopt_key *k)
{
	memset(k, 0, sizeof(*k));
	k->port = ntohs(c->id.idiag_dport);
	if (c->family == AF_INET) {
		k->addr[10] = k->addr[11] = 0xff;
		memcpy(k->addr + 12, c->id.idiag_dst, 4);
	} else {
		memcpy(k->addr, c->id.idiag_dst, 16);
	}
	return true;
}

static bool wanted(struct scan *s, const struct sock_diag_conn *c)
{
	struct adopt_key k;
	const struct cg *cg;

	key_of(c, &k);
	if (!bsearch(&k, s->ps->keys, (size_t)s->ps->n_keys, sizeof(k), adopt_key_cmp))
		return false;
	if (!c->cgroup_id) {
		s->no_cgroup_attr = true; /* whose socket it is is unknown: never touched */
		return false;
	}
	cg = find_cg(s, c->cgroup_id);
	return cg && !cg->excluded && c->cgroup_id != s->self_cg;
}

struct collect {
	struct scan *s;
	struct pod *pod;
};

static int collect_cb(void *arg, const struct sock_diag_conn *c)
{
	struct collect *k = arg;
	struct pod *p = k->pod;

	if (!wanted(k->s, c) || p->n >= MAX_CONNS_PER_POD)
		return 0;
	if (p->n == p->cap) {
		int cap = p->cap ? 2 * p->cap : 4;
		struct adopt_cand *n = realloc(p->cands, sizeof(*n) * (size_t)cap);

		if (!n)
			return -ENOMEM;
		p->cands = n;
		p->cap = cap;
	}
	p->cands[p->n++] = (struct adopt_cand){.c = *c,
					       .in_ms = now_ms() - c->last_data_recv_ms,
					       .out_ms = now_ms() - c->last_data_sent_ms};
	return 0;
}

static int dump_pod(struct scan *s, struct pod *p, int (*cb)(void *, const struct sock_diag_conn *))
{
	struct collect k = {s, p};
	int err = sock_diag_dump(p->fd, AF_INET, cb, &k);

	return err ? err : sock_diag_dump(p->fd, AF_INET6, cb, &k);
}

static void open_pod(struct scan *s, struct pod *p)
{
	int err = netns_cache_get(s->ps->p->netns, p->cgroup_id, (uint32_t)p->pid, &p->ns);

	if (err) {
		log_debug("adopt_netns_skipped cgroup_id=%llu err=\"%s\"",
			  (unsigned long long)p->cgroup_id, strerror(-err));
		return;
	}
	p->fd = sock_diag_open(p->ns);
	if (p->fd < 0) {
		log_warn("adopt_sock_diag_failed cgroup_id=%llu err=\"%s\"",
			 (unsigned long long)p->cgroup_id, strerror(-p->fd));
		return;
	}
	err = dump_pod(s, p, collect_cb);
	if (err)
		log_warn("adopt_sock_diag_dump_failed cgroup_id=%llu err=\"%s\"",
			 (unsigned long long)p->cgroup_id, strerror(-err));
	p->left = p->n;
}

static void count(struct scan *s, struct pod *p, struct adopt_cand *c, enum adopt_result r)
{
	struct adopt_pass *ps = s->ps;
	char dst[64];
	uint64_t now;

	c->done = true;
	p->left--;
	pthread_mutex_lock(ps->lock);
	ps->info->results[r]++;
	ps->total[r]++;
	pthread_mutex_unlock(ps->lock);
	if (c->c.family == AF_INET)
		inet_ntop(AF_INET, c->c.id.idiag_dst, dst, sizeof(dst));
	else
		inet_ntop(AF_INET6, c->c.id.idiag_dst, dst, sizeof(dst));
	now = now_ms();
	log_info("adopt_connection result=%s cgroup_id=%llu dst=%s:%u sport=%u recv_q=%u send_q=%u "
		 "unacked=%u last_send_ms=%u last_recv_ms=%u seen_send_ms=%lld seen_recv_ms=%lld "
		 "burst=%llu",
		 adopter_result_name(r), (unsigned long long)c->c.cgroup_id, dst,
		 ntohs(c->c.id.idiag_dport), ntohs(c->c.id.idiag_sport), c->c.rqueue, c->c.wqueue,
		 c->c.unacked, c->c.last_data_sent_ms, c->c.last_data_recv_ms,
		 (long long)(now - c->out_ms), (long long)(now - c->in_ms),
		 (unsigned long long)c->burst);
}

/* A fresh look at |x|: when its data counters moved, as this thread saw. */
static void update(struct pod *p, struct adopt_cand *x, const struct sock_diag_conn *c)
{
	uint64_t now = now_ms();
	bool in = c->data_segs_in != x->c.data_segs_in;
	bool out = c->data_segs_out != x->c.data_segs_out;

	if (in)
		x->in_ms = now;
	if (out)
		x->out_ms = now;
	/* It moved after the previous look: the earliest it may have. */
	if (in || out) {
		x->moved_ms = p->looked_ms;
		x->burst =
		    (c->bytes_acked - x->c.bytes_acked) + (c->bytes_received - x->c.bytes_received);
		if (x->burst > BULK_BYTES)
			x->bulk_ms = now;
	}
	x->moved |= in || out;
	x->c = *c;
}

bool adopt_is_idle(const struct adopt_cand *x, uint64_t now)
{
	const struct sock_diag_conn *c = &x->c;
	uint64_t last = x->in_ms > x->out_ms ? x->in_ms : x->out_ms;
	bool sent_last;

	if (!c->have_info || c->rqueue || c->wqueue || c->unacked)
		return false;
	if (!x->moved)
		return c->last_data_sent_ms >= SETTLED_MS && c->last_data_recv_ms >= SETTLED_MS;
	if (now < last + QUIET_MS || (x->bulk_ms && now < x->bulk_ms + BULK_QUIET_MS))
		return false;
	/* Late in the gap (this thread may have looked late: the change is
	 * placed at the look before the one that saw it): wait for the next. */
	if (!x->bulk_ms && now < last + SETTLED_MS && now > x->moved_ms + CLOSE_WINDOW_MS)
		return false;
	/* Which came last; seen in the same look, the kernel's coarser clock says. */
	sent_last = x->out_ms != x->in_ms ? x->out_ms > x->in_ms
					  : c->last_data_sent_ms < c->last_data_recv_ms;
	return !sent_last || now >= x->out_ms + ANSWER_WAIT_MS;
}

static bool take_token(struct scan *s, uint64_t now)
{
	s->tokens += (double)(now - s->tokens_ms) * RATE_PER_S / 1000.0;
	if (s->tokens > RATE_BURST)
		s->tokens = RATE_BURST;
	s->tokens_ms = now;
	if (s->tokens < 1.0)
		return false;
	s->tokens -= 1.0;
	return true;
}

/* Close |c|; false when the whole pass must end (the kernel cannot). */
static bool destroy(struct scan *s, struct pod *p, struct adopt_cand *c, enum adopt_result ok)
{
	int err = sock_diag_destroy(p->fd, &c->c);

	if (err == -EOPNOTSUPP) {
		if (!*s->ps->unsupported)
			log_error(
			    "adopt_unsupported mechanism=sock_diag_destroy err=\"%s\" "
			    "effect=\"connections opened before h2splitd stay on the pod they "
			    "reached until the app reconnects\" fix=\"a kernel built with "
			    "CONFIG_INET_DIAG_DESTROY=y (Debian's 5.10, 6.1, 6.12 are)\"",
			    strerror(-err));
		*s->ps->unsupported = true;
		return false;
	}
	if (err && err != -ENOENT)
		log_warn("adopt_destroy_failed cgroup_id=%llu err=\"%s\"",
			 (unsigned long long)c->c.cgroup_id, strerror(-err));
	count(s, p, c, !err ? ok : err == -ENOENT ? ADOPT_R_GONE : ADOPT_R_FAILED);
	p->next_ms = now_ms() + POD_GAP_MS;
	return true;
}

/* One look at pod |p|: its connections' fresh tcp_info; close one idle one,
 * or, past the deadline, a busy one (all) or give up on them (idle). */
static bool step_pod(struct scan *s, struct pod *p, uint64_t now, uint64_t deadline)
{
	enum adopt_mode mode = s->ps->p->mode;
	uint64_t looked_us;
	int err;

	s->ps->info->looks++; /* this thread's own counter: read when the pass is done */
	for (int i = 0; i < p->n; i++) {
		struct adopt_cand *x = &p->cands[i];
		struct sock_diag_conn now_c;

		if (x->done)
			continue;
		err = sock_diag_get(p->fd, &x->c, &now_c);
		if (err == -ENOENT) {
			count(s, p, x, ADOPT_R_GONE);
		} else if (err) {
			log_warn("adopt_sock_diag_failed cgroup_id=%llu err=\"%s\"",
				 (unsigned long long)p->cgroup_id, strerror(-err));
			return true; /* the next tick tries again; the deadline ends it */
		} else {
			update(p, x, &now_c);
		}
	}
	looked_us = now_us();
	p->looked_ms = looked_us / 1000;
	for (int i = 0; i < p->n; i++) {
		struct adopt_cand *c = &p->cands[i];

		if (c->done || !adopt_is_idle(c, now))
			continue;
		if (now_us() - looked_us > FRESH_US || !take_token(s, now))
			return true; /* look again at the next tick */
		return destroy(s, p, c, ADOPT_R_IDLE);
	}
	if (now < deadline)
		return true;
	for (int i = 0; i < p->n; i++) {
		struct adopt_cand *c = &p->cands[i];

		if (c->done)
			continue;
		if (mode != ADOPT_ALL) {
			count(s, p, c, ADOPT_R_NOT_IDLE);
			continue;
		}
		return take_token(s, now) ? destroy(s, p, c, ADOPT_R_FORCED) : true;
	}
	return true;
}

static void mark_rest(struct scan *s, enum adopt_result r)
{
	for (int i = 0; i < s->n_pods; i++)
		for (int j = 0; j < s->pods[i].n; j++)
			if (!s->pods[i].cands[j].done)
				count(s, &s->pods[i], &s->pods[i].cands[j], r);
}

static void run_closes(struct scan *s)
{
	uint64_t deadline = now_ms() + (uint64_t)s->ps->p->max_wait_ms;
	struct timespec tick = {.tv_nsec = TICK_MS * 1000000L};

	s->tokens = RATE_BURST;
	s->tokens_ms = now_ms();
	for (;;) {
		uint64_t now = now_ms();
		int left = 0;

		if (atomic_load(s->ps->stop))
			return;
		for (int i = 0; i < s->n_pods; i++) {
			struct pod *p = &s->pods[i];

			if (p->left <= 0 || now < p->next_ms)
				continue;
			if (!step_pod(s, p, now, deadline)) {
				mark_rest(s, ADOPT_R_UNSUPPORTED);
				return;
			}
		}
		for (int i = 0; i < s->n_pods; i++)
			left += s->pods[i].left > 0;
		if (!left)
			return;
		nanosleep(&tick, NULL);
	}
}

static void scan_free(struct scan *s)
{
	for (int i = 0; i < s->n_pods; i++) {
		if (s->pods[i].fd >= 0)
			close(s->pods[i].fd);
		netns_ref_put(s->ps->p->netns, s->pods[i].ns);
		free(s->pods[i].cands);
	}
	free(s->pods);
	free(s->cgs);
	free((void *)s->ex);
}

static int scan_init(struct scan *s)
{
	char root[PATH_MAX], self[PATH_MAX];
	struct bpf_maps_excluded *ex = NULL;
	int err;

	if (s->ps->p->cgroup_dir && s->ps->p->cgroup_dir[0])
		snprintf(root, sizeof(root), "%s", s->ps->p->cgroup_dir);
	else if ((err = cgroup_v2_root(root, sizeof(root))))
		return err;
	if (cgroup_self_dir(self, sizeof(self)) || cgroup_id_of(self, &s->self_cg))
		s->self_cg = 0;
	s->self_ino = netns_ino_of(getpid());
	err = bpf_maps_excluded_read(s->ps->p->maps, &ex, &s->n_ex);
	if (err)
		return err; /* exclusions unknown: touch nothing */
	s->ex = ex;
	s->cgs = calloc(MAX_CGROUPS, sizeof(*s->cgs));
	s->pods = calloc(MAX_PODS, sizeof(*s->pods));
	if (!s->cgs || !s->pods || !s->self_ino)
		return -ENOMEM;
	walk(s, root, sizeof(root), false, 0);
	qsort(s->cgs, (size_t)s->n_cgs, sizeof(*s->cgs), cmp_u64);
	return 0;
}

int adopt_pass_run(struct adopt_pass *ps)
{
	struct scan s = {.ps = ps};
	int found = 0, err;

	err = scan_init(&s);
	if (err) {
		log_error("adopt_pass_failed step=scan err=\"%s\"", strerror(-err));
		scan_free(&s);
		return err;
	}
	for (int i = 0; i < s.n_pods; i++) {
		open_pod(&s, &s.pods[i]);
		found += s.pods[i].n;
	}
	if (s.no_cgroup_attr)
		log_warn(
		    "adopt_socket_cgroup_unknown effect=\"connections whose cgroup the kernel "
		    "does not report are left alone\" fix=\"Linux 5.7+ (INET_DIAG_CGROUP_ID)\"");
	pthread_mutex_lock(ps->lock);
	ps->info->pods = s.n_pods;
	ps->info->found = found;
	pthread_mutex_unlock(ps->lock);
	if (found && *ps->unsupported)
		mark_rest(&s, ADOPT_R_UNSUPPORTED);
	else if (found)
		run_closes(&s);
	scan_free(&s);
	return 0;
}
