// SPDX-License-Identifier: Apache-2.0
/*
 * One adoption pass (see adopt.h): walk the cgroups below the attach point,
 * find each pod's netns through a process of its cgroup, list that netns'
 * established TCP sockets with sock_diag and keep those to an opted-in
 * VIP:port whose owner cgroup (INET_DIAG_CGROUP_ID) is below the attach
 * point and not excluded. Then, every TICK_MS, re-read each pod's sockets and
 * close (SOCK_DESTROY) one that is idle, at most one per pod per POD_GAP_MS
 * and RATE_PER_S node-wide. The daemon's own netns (the node's sockets) and
 * cgroup are never searched.
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

struct cand {
	struct sock_diag_conn c;
	bool seen, done;
	uint64_t in_ms, out_ms; /* when data_segs_in / _out last changed, as seen */
};

struct pod {
	uint64_t ino; /* netns */
	uint64_t cgroup_id;
	int pid;
	struct netns_ref *ns;
	int fd;		    /* sock_diag in the pod's netns; -1 */
	struct cand *cands; /* owned */
	int n, left;
	uint64_t next_ms; /* no close before (POD_GAP_MS) */
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
	if (!(p->n & (p->n - 1)) || !p->cands) {
		struct cand *n = realloc(p->cands, sizeof(*n) * (size_t)(p->n ? 2 * p->n : 4));

		if (!n)
			return -ENOMEM;
		p->cands = n;
	}
	p->cands[p->n++] = (struct cand){.c = *c,
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

static void count(struct scan *s, struct pod *p, struct cand *c, enum adopt_result r)
{
	struct adopt_pass *ps = s->ps;
	char dst[64];

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
	log_info("adopt_connection result=%s cgroup_id=%llu dst=%s:%u sport=%u recv_q=%u send_q=%u "
		 "unacked=%u last_send_ms=%u last_recv_ms=%u",
		 adopter_result_name(r), (unsigned long long)c->c.cgroup_id, dst,
		 ntohs(c->c.id.idiag_dport), ntohs(c->c.id.idiag_sport), c->c.rqueue, c->c.wqueue,
		 c->c.unacked, c->c.last_data_sent_ms, c->c.last_data_recv_ms);
}

static int refresh_cb(void *arg, const struct sock_diag_conn *c)
{
	struct collect *k = arg;

	for (int i = 0; i < k->pod->n; i++) {
		struct cand *x = &k->pod->cands[i];

		if (!x->done && x->c.cookie == c->cookie && x->c.family == c->family) {
			uint64_t now = now_ms();

			if (c->data_segs_in != x->c.data_segs_in)
				x->in_ms = now;
			if (c->data_segs_out != x->c.data_segs_out)
				x->out_ms = now;
			x->c = *c;
			x->seen = true;
		}
	}
	return 0;
}

static bool is_idle(const struct cand *x, uint64_t now)
{
	const struct sock_diag_conn *c = &x->c;
	bool sent_last;

	if (!c->have_info || c->rqueue || c->wqueue || c->unacked)
		return false;
	if (now < x->in_ms + QUIET_MS || now < x->out_ms + QUIET_MS)
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
static bool destroy(struct scan *s, struct pod *p, struct cand *c, enum adopt_result ok)
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
	int err;

	for (int i = 0; i < p->n; i++)
		p->cands[i].seen = false;
	err = dump_pod(s, p, refresh_cb);
	if (err) {
		log_warn("adopt_sock_diag_dump_failed cgroup_id=%llu err=\"%s\"",
			 (unsigned long long)p->cgroup_id, strerror(-err));
		return true; /* the next tick tries again; the deadline ends it */
	}
	for (int i = 0; i < p->n; i++)
		if (!p->cands[i].done && !p->cands[i].seen)
			count(s, p, &p->cands[i], ADOPT_R_GONE);
	for (int i = 0; i < p->n; i++) {
		struct cand *c = &p->cands[i];

		if (!c->done && is_idle(c, now))
			return take_token(s, now) ? destroy(s, p, c, ADOPT_R_IDLE) : true;
	}
	if (now < deadline)
		return true;
	for (int i = 0; i < p->n; i++) {
		struct cand *c = &p->cands[i];

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
