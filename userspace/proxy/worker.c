// SPDX-License-Identifier: Apache-2.0
/*
 * Worker threads (worker.h): accept on the worker's own SO_REUSEPORT
 * listeners, find each connection's original destination in the BPF tuple
 * map, sniff the first bytes, and hand the connection to the HTTP/2 splitter
 * (client preface) or the L4 path (anything else). A connection stays on the
 * worker that accepted it until it closes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "kernel/bpf_maps.h"
#include "kernel/netns.h"
#include "proxy/conn_limit.h"
#include "proxy/h2/splitter.h"
#include "proxy/l4_proxy.h"
#include "proxy/orig_dst.h"
#include "proxy/worker.h"
#include "telemetry/metrics.h"

static const uint8_t h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)
/* A client that says nothing for this long is not speaking HTTP/2 first
 * (a server-speaks-first protocol): hand it to the L4 path. */
#define SNIFF_TIMEOUT_MS 1000
#define SNIFF_BUF 4096
#define ACCEPT_BATCH 64
/* Out of fds: how often to look again, and how many connections at most to
 * reset from an accept queue per look. */
#define FD_CHECK_MS 200
#define FD_REFUSE_BATCH 4096
/* Fds kept free for the admin endpoint, upstream sockets and netns handles:
 * an eighth of RLIMIT_NOFILE, within these bounds. */
#define FD_RESERVE_MIN 32
#define FD_RESERVE_MAX 1024

/* A connection ended (the drain completes when n_conns reaches 0) and its
 * client's count (|pod_key|, from its conn_info; 0: none) goes down. Worker
 * thread only; the splitter and the L4 path call it through conn_owner. */
static void conn_closed(void *arg, uint64_t pod_key)
{
	struct worker *w = arg;

	if (pod_key)
		conn_limit_put(w->sh->pod_conns, pod_key);
	w->n_conns--;
	stats_dec(&w->stats, ST_DOWNSTREAM_CONNS_ACTIVE);
}

/* An accepted connection whose first bytes are not known yet. */
struct sniff {
	struct worker *w;
	int fd;
	struct conn_info ci;
	struct loop_timer *timer;
	size_t n;
	uint8_t buf[SNIFF_BUF];
};

static void sniff_free(struct sniff *s)
{
	loop_timer_cancel(s->w->loop, s->timer);
	free(s);
}

static void sniff_to_l4(struct sniff *s)
{
	struct worker *w = s->w;

	loop_del_fd(w->loop, s->fd);
	l4_proxy_start(&w->l4, s->fd, &s->ci, s->buf, s->n);
	sniff_free(s);
}

static void sniff_to_h2(struct sniff *s)
{
	struct worker *w = s->w;

	loop_del_fd(w->loop, s->fd);
	stats_inc(&w->stats, ST_DOWNSTREAM_H2_CONNS_TOTAL);
	splitter_conn_start(w->splitter, s->fd, &s->ci, s->buf, s->n);
	sniff_free(s);
}

static void sniff_abort(struct sniff *s)
{
	loop_del_fd(s->w->loop, s->fd);
	close(s->fd);
	netns_ref_put(s->w->sh->netns, s->ci.netns);
	conn_closed(s->w, s->ci.pod_key);
	sniff_free(s);
}

/* Read what arrived and decide if it is enough. True: |s| is handed on (or
 * closed) and freed; false: still waiting for bytes. */
static bool sniff_step(struct sniff *s)
{
	ssize_t n = recv(s->fd, s->buf + s->n, sizeof(s->buf) - s->n, 0);
	size_t cmp;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0) {
		if (s->n) /* said something, then closed: deliver it as it was */
			sniff_to_l4(s);
		else
			sniff_abort(s);
		return true;
	}
	s->n += (size_t)n;
	cmp = s->n < H2_PREFACE_LEN ? s->n : H2_PREFACE_LEN;
	if (memcmp(s->buf, h2_preface, cmp) != 0)
		sniff_to_l4(s);
	else if (s->n >= H2_PREFACE_LEN)
		sniff_to_h2(s);
	else
		return false;
	return true;
}

static void on_sniff_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct sniff *s = arg;

	(void)l;
	(void)t;
	s->timer = NULL;
	/* Timers run after the pass's I/O callbacks: when that pass was long (a
	 * burst of thousands of connections), the preface may be sitting in the
	 * socket unread. Look once more before calling the client silent. */
	if (!sniff_step(s))
		sniff_to_l4(s);
}

static void on_sniff_readable(struct loop *l, int fd, uint32_t events, void *arg)
{
	(void)l;
	(void)fd;
	(void)events;
	sniff_step(arg);
}

/* Not enough bytes yet to tell HTTP/2 from anything else: wait for more
 * (the |n| already read come along), at most SNIFF_TIMEOUT_MS. */
static void sniff_wait(struct worker *w, int fd, struct conn_info *ci, const uint8_t *buf, size_t n)
{
	struct sniff *s = malloc(sizeof(*s));

	if (!s)
		goto fail;
	s->w = w;
	s->fd = fd;
	s->ci = *ci;
	memcpy(s->buf, buf, n);
	s->n = n;
	s->timer = loop_timer_add(w->loop, SNIFF_TIMEOUT_MS, on_sniff_timeout, s);
	if (!s->timer || loop_add_fd(w->loop, fd, EPOLLIN, on_sniff_readable, s)) {
		loop_timer_cancel(w->loop, s->timer);
		free(s);
		goto fail;
	}
	return;
fail:
	close(fd);
	netns_ref_put(w->sh->netns, ci->netns);
	conn_closed(w, ci->pod_key);
}

/*
 * The first look at a new connection, straight after accept: a client that
 * speaks first has usually sent its preface (and SETTINGS, often a whole
 * first request) by the time we accept, so it goes to the splitter (or the
 * L4 path) at once, without a sniff buffer, timer or epoll registration of
 * its own. Only a connection that has sent nothing or a partial preface
 * waits in sniff_wait().
 */
static void start_sniff(struct worker *w, int fd, struct conn_info *ci)
{
	uint8_t buf[SNIFF_BUF];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	size_t cmp;

	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		sniff_wait(w, fd, ci, buf, 0);
		return;
	}
	if (n <= 0) { /* closed (or reset) before a byte */
		close(fd);
		netns_ref_put(w->sh->netns, ci->netns);
		conn_closed(w, ci->pod_key);
		return;
	}
	cmp = (size_t)n < H2_PREFACE_LEN ? (size_t)n : H2_PREFACE_LEN;
	if (memcmp(buf, h2_preface, cmp) != 0) {
		l4_proxy_start(&w->l4, fd, ci, buf, (size_t)n);
	} else if ((size_t)n >= H2_PREFACE_LEN) {
		stats_inc(&w->stats, ST_DOWNSTREAM_H2_CONNS_TOTAL);
		splitter_conn_start(w->splitter, fd, ci, buf, (size_t)n);
	} else {
		sniff_wait(w, fd, ci, buf, (size_t)n);
	}
}

/* --max-connections-per-pod: count the connection against its client (the
 * cgroup BPF saw connect, i.e. the container); one over the limit is
 * refused before a byte is read: reset (SO_LINGER 0), so the client fails
 * at once with ECONNRESET and its gRPC channel reconnects with backoff.
 * True: refused and closed. */
static bool pod_limit_refuses(struct worker *w, int fd, struct conn_info *ci)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	uint64_t now;
	int err;

	if (!w->sh->pod_conns || !ci->od.cgroup_id)
		return false;
	err = conn_limit_take(w->sh->pod_conns, ci->od.cgroup_id);
	if (!err)
		ci->pod_key = ci->od.cgroup_id;
	if (err != -EBUSY)
		return false;
	stats_limit_inc(&w->stats, LIMIT_CONNECTIONS_PER_POD);
	now = loop_now_ms();
	if (now - w->pod_limit_log_ms >= 1000) { /* a refused client retries: log 1/s */
		char a[64];

		w->pod_limit_log_ms = now;
		log_warn("limit_exceeded limit=connections_per_pod client=%s cgroup_id=%llu max=%d",
			 config_addr_str(&ci->client, a, sizeof(a)),
			 (unsigned long long)ci->od.cgroup_id, w->sh->cfg->max_connections_per_pod);
	}
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	conn_closed(w, 0);
	return true;
}

static void log_recovered(struct worker *w, const struct conn_info *ci)
{
	uint64_t now = loop_now_ms();
	char a[64], b[64];

	if (now - w->recovered_log_ms < 1000) /* a NAT rule sends many: log 1/s */
		return;
	w->recovered_log_ms = now;
	log_warn("original_dst_recovered client=%s orig=%s note=\"a NAT sent it to the listener, "
		 "bypassing BPF: served from the node's netns, so the backend sees the node's IP\"",
		 config_addr_str(&ci->client, a, sizeof(a)),
		 config_addr_str(&ci->orig, b, sizeof(b)));
}

/* A connection accepted on a listener bound to |bound| (NULL: a wildcard
 * address, so the local address is asked of the socket). TCP_NODELAY comes
 * from the listener (accepted sockets inherit it). */
static void conn_accepted(struct worker *w, int fd, const struct sockaddr_storage *peer,
			  const struct sockaddr_storage *bound)
{
	struct conn_info ci = {.client = *peer};
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	int err;

	w->n_conns++;
	stats_inc(&w->stats, ST_DOWNSTREAM_CONNS_TOTAL);
	stats_inc(&w->stats, ST_DOWNSTREAM_CONNS_ACTIVE);
	if (bound) {
		local = *bound;
	} else if (getsockname(fd, (struct sockaddr *)&local, &len)) {
		stats_inc(&w->stats, ST_ACCEPT_ERRORS);
		goto drop;
	}
	if (orig_dst_take(w->sh->maps, peer, &local, &ci)) {
		if (orig_dst_recover(w->snap ? w->snap->st : NULL, fd, &local, &ci)) {
			/* Not redirected by us (someone dialled the listen address
			 * itself), or the entry was evicted: nowhere to forward it. */
			char a[64];

			stats_inc(&w->stats, ST_ORIGINAL_DST_MISSING);
			log_debug("original_dst_missing client=%s",
				  config_addr_str(peer, a, sizeof(a)));
			goto drop;
		}
		stats_inc(&w->stats, ST_ORIGINAL_DST_RECOVERED);
		log_recovered(w, &ci);
		start_sniff(w, fd, &ci);
		return;
	}
	if (log_get_level() <= LOG_DEBUG) {
		char a[64], b[64];

		log_debug(
		    "accepted client=%s orig=%s service_id=%u cgroup_id=%llu pid=%u worker=%d",
		    config_addr_str(peer, a, sizeof(a)), config_addr_str(&ci.orig, b, sizeof(b)),
		    ci.od.service_id, (unsigned long long)ci.od.cgroup_id, ci.od.pid, w->id);
	}
	if (pod_limit_refuses(w, fd, &ci))
		return;
	if (w->sh->cfg->upstream_source_pod) {
		err = netns_cache_get(w->sh->netns, ci.od.cgroup_id, ci.od.pid, &ci.netns);
		if (err) {
			stats_inc(&w->stats, ST_NETNS_FAILURES);
			log_warn("client_netns_not_found cgroup_id=%llu pid=%u err=\"%s\"",
				 (unsigned long long)ci.od.cgroup_id, ci.od.pid, strerror(-err));
			goto drop;
		}
	}
	start_sniff(w, fd, &ci);
	return;
drop:
	close(fd);
	conn_closed(w, ci.pod_key);
}

static void set_accepting(struct worker *w, bool on)
{
	for (int i = 0; i < 2; i++)
		if (w->listen_fds[i] >= 0 &&
		    loop_set_events(w->loop, w->listen_fds[i], on ? EPOLLIN : 0))
			stats_inc(&w->stats, ST_UNEXPECTED);
}

static void spare_open(struct worker *w)
{
	if (w->spare_fd < 0)
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void spare_close(struct worker *w)
{
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	w->spare_fd = -1;
}

/* Redirected connects that queued before the liveness slot emptied: with the
 * spare fd given up, accept each and reset it at once, so the client fails
 * fast and its retry goes direct, rather than hanging in the queue. */
static void refuse_queued(struct worker *w)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	spare_close(w);
	for (int i = 0; i < 2; i++) {
		for (int n = 0; n < FD_REFUSE_BATCH && w->listen_fds[i] >= 0; n++) {
			int fd = accept4(w->listen_fds[i], NULL, NULL, SOCK_CLOEXEC);

			if (fd < 0)
				break;
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(fd);
			stats_inc(&w->stats, ST_FD_REFUSED);
		}
	}
	spare_open(w);
}

/* Open fds of the process, with the spare given up for the directory fd.
 * -errno when they cannot be counted (still out of fds). */
static int count_fds(struct worker *w)
{
	struct dirent *e;
	DIR *dir;
	int n = 0;

	spare_close(w);
	dir = opendir("/proc/self/fd");
	if (!dir) {
		n = -errno;
		spare_open(w);
		return n;
	}
	while ((e = readdir(dir)))
		n += e->d_name[0] != '.';
	closedir(dir);
	spare_open(w);
	return n - 1; /* the directory's own fd */
}

static void on_fd_check(struct loop *l, struct loop_timer *t, void *arg);

static uint64_t fd_reserve(const struct worker *w)
{
	uint64_t r = w->fd_limit / 8;

	return r < FD_RESERVE_MIN ? FD_RESERVE_MIN : r > FD_RESERVE_MAX ? FD_RESERVE_MAX : r;
}

static void fd_limit_refresh(struct worker *w)
{
	struct rlimit rl;

	if (!getrlimit(RLIMIT_NOFILE, &rl))
		w->fd_limit = rl.rlim_cur;
}

/* Fds run short: accepted fd |fd| is within the reserve (fds are allocated
 * lowest first, so at least fd + 1 are open), or accept() said EMFILE/ENFILE
 * (|fd| -1). Level-triggered listeners would wake us again at once, forever:
 * take them out of epoll, have the daemon empty the liveness slot (new
 * connects go direct: fail open), reset what is queued, and look again every
 * FD_CHECK_MS until the fds are below the low-water mark. */
static void fd_exhausted(struct worker *w, int fd)
{
	if (!w->accept_paused) {
		w->accept_paused = true;
		stats_inc(&w->stats, ST_FD_PAUSES);
		log_warn(
		    "accept_paused reason=fd_exhaustion worker=%d fd=%d limit=%llu reserve=%llu "
		    "fix=\"raise the daemon's RLIMIT_NOFILE\"",
		    w->id, fd, (unsigned long long)w->fd_limit, (unsigned long long)fd_reserve(w));
		set_accepting(w, false);
		if (w->sh->fd_pressure)
			w->sh->fd_pressure(w->sh->fd_pressure_arg, true);
		w->fd_timer = loop_timer_add(w->loop, FD_CHECK_MS, on_fd_check, w);
	}
	refuse_queued(w);
}

/* Resume once twice the reserve is free again (hysteresis). */
static bool fds_below_low_water(struct worker *w)
{
	int n = count_fds(w);

	fd_limit_refresh(w);
	return n >= 0 && (uint64_t)n + 2 * fd_reserve(w) <= w->fd_limit;
}

static void on_fd_check(struct loop *l, struct loop_timer *t, void *arg)
{
	struct worker *w = arg;

	(void)t;
	w->fd_timer = NULL;
	if (w->draining)
		return;
	if (!fds_below_low_water(w)) {
		refuse_queued(w);
		w->fd_timer = loop_timer_add(l, FD_CHECK_MS, on_fd_check, w);
		return;
	}
	w->accept_paused = false;
	set_accepting(w, true);
	if (w->sh->fd_pressure)
		w->sh->fd_pressure(w->sh->fd_pressure_arg, false);
	log_info("accept_resumed worker=%d", w->id);
}

/* The address listener |lfd| is bound to, when that is the local address
 * of every connection it accepts (not a wildcard); else NULL. */
static const struct sockaddr_storage *bound_addr(const struct worker *w, int lfd)
{
	static const uint8_t any6[16];
	const struct sockaddr_storage *a;

	if (lfd == w->listen_fds[0]) {
		a = &w->sh->cfg->listen_v4;
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr != htonl(INADDR_ANY) ? a
											     : NULL;
	}
	a = &w->sh->cfg->listen_v6;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, any6, 16) ? a : NULL;
}

/* Accept up to |max| connections; false once the queue is empty. */
static bool accept_some(struct worker *w, int lfd, int max)
{
	const struct sockaddr_storage *bound = bound_addr(w, lfd);

	for (int i = 0; i < max; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				stats_inc(&w->stats, ST_ACCEPT_ERRORS);
				fd_exhausted(w, -1);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				stats_inc(&w->stats, ST_ACCEPT_ERRORS);
				log_warn("accept_failed err=\"%m\"");
			}
			return false;
		}
		if ((uint64_t)fd + fd_reserve(w) >= w->fd_limit) {
			struct linger lg = {.l_onoff = 1, .l_linger = 0};

			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(fd);
			stats_inc(&w->stats, ST_FD_REFUSED);
			fd_exhausted(w, fd);
			return false;
		}
		conn_accepted(w, fd, &peer, bound);
	}
	return true;
}

static void on_accept(struct loop *l, int lfd, uint32_t events, void *arg)
{
	(void)l;
	(void)events;
	accept_some(arg, lfd, ACCEPT_BATCH);
}

static int open_listener(const struct sockaddr_storage *addr)
{
	socklen_t alen =
	    addr->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1, err;

	if (fd < 0)
		return -errno;
	/* TCP_NODELAY here: every accepted socket inherits it (one setsockopt
	 * fewer per connection). */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    (addr->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one))) ||
	    bind(fd, (const struct sockaddr *)addr, alen)) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int worker_init(struct worker *w, int id, const struct worker_shared *sh)
{
	const struct sockaddr_storage *addrs[2] = {&sh->cfg->listen_v4, &sh->cfg->listen_v6};

	memset(w, 0, sizeof(*w));
	w->id = id;
	w->sh = sh;
	w->listen_fds[0] = w->listen_fds[1] = -1;
	w->spare_fd = -1;
	spare_open(w);
	fd_limit_refresh(w);
	w->loop = loop_new();
	if (!w->loop)
		return errno ? -errno : -ENOMEM;
	w->metrics = metrics_new();
	if (!w->metrics || metrics_set_call_limits(w->metrics, sh->cfg->max_callers_per_service,
						   sh->cfg->max_methods_per_service))
		return -ENOMEM;
	w->l4 = (struct l4_proxy_ctx){
	    .loop = w->loop,
	    .stats = &w->stats,
	    .netns = sh->netns,
	    .owner = {.closed = conn_closed, .arg = w},
	};
	w->splitter = splitter_new(&(struct splitter_ctx){
	    .worker_id = id,
	    .loop = w->loop,
	    .cfg = sh->cfg,
	    .stats = &w->stats,
	    .metrics = w->metrics,
	    .netns = sh->netns,
	    .health = sh->health,
	    .owner = {.closed = conn_closed, .arg = w},
	});
	if (!w->splitter)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		char buf[64];
		int fd;

		if (!addrs[i]->ss_family)
			continue;
		fd = open_listener(addrs[i]);
		if (fd < 0) {
			log_error("listen_failed addr=%s err=\"%s\"",
				  config_addr_str(addrs[i], buf, sizeof(buf)), strerror(-fd));
			return fd;
		}
		w->listen_fds[i] = fd;
	}
	return 0;
}

/* Worker thread, first snapshot: join the SO_REUSEPORT group. Until now the
 * sockets were only bound, and the kernel hands connections only to
 * listening members, so during a rolling update every connect still goes to
 * the old daemon, which can route it. */
static void start_listening(struct worker *w)
{
	for (int i = 0; i < 2; i++) {
		int fd = w->listen_fds[i], err;

		if (fd < 0)
			continue;
		err = listen(fd, 4096) ? -errno : loop_add_fd(w->loop, fd, EPOLLIN, on_accept, w);
		if (err) {
			log_error("listen_failed worker=%d err=\"%s\"", w->id, strerror(-err));
			stats_inc(&w->stats, ST_UNEXPECTED);
		}
		if (w->sh->migrate_prog_fd >= 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &w->sh->migrate_prog_fd,
			       sizeof(w->sh->migrate_prog_fd)))
			log_warn("reuseport_migration_off worker=%d err=\"%m\"", w->id);
	}
	w->listening = true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[16];
	int err;

	snprintf(name, sizeof(name), "h2s-worker-%d", w->id);
	pthread_setname_np(pthread_self(), name);
	err = loop_run(w->loop);
	if (err)
		log_error("worker_loop_failed worker=%d err=\"%s\"", w->id, strerror(-err));
	return NULL;
}

int worker_start(struct worker *w)
{
	return -pthread_create(&w->thread, NULL, worker_main, w);
}

static void do_snapshot(struct loop *l, void *arg)
{
	struct worker *w = NULL;
	struct snapshot **msg = arg;
	struct snapshot *old;

	(void)l;
	w = (struct worker *)msg[0];
	old = w->snap;
	w->snap = msg[1];
	free(msg);
	metrics_prune(w->metrics, w->snap ? w->snap->st : NULL);
	splitter_snapshot_changed(w->splitter, w->snap);
	registry_snapshot_unref(old); /* the splitter borrowed it until now */
	if (!w->listening && !w->draining)
		start_listening(w);
	if (w->snap) {
		atomic_store(&w->applied_gen, w->snap->generation);
		if (w->sh->applied)
			w->sh->applied(w->sh->applied_arg, w->snap->generation);
	}
}

int worker_post_snapshot(struct worker *w, struct snapshot *s)
{
	void **msg = malloc(2 * sizeof(void *));
	int err;

	if (!msg) {
		registry_snapshot_unref(s);
		return -ENOMEM;
	}
	msg[0] = w;
	msg[1] = s;
	err = loop_post(w->loop, do_snapshot, msg);
	if (err) {
		free(msg);
		registry_snapshot_unref(s);
	}
	return err;
}

static void close_listeners(struct worker *w)
{
	for (int i = 0; i < 2; i++) {
		if (w->listen_fds[i] < 0)
			continue;
		loop_del_fd(w->loop, w->listen_fds[i]);
		close(w->listen_fds[i]);
		w->listen_fds[i] = -1;
	}
}

static void do_drain(struct loop *l, void *arg)
{
	struct worker *w = arg;

	(void)l;
	w->draining = true;
	/* Connects redirected just before the liveness slot emptied wait in the
	 * accept queue: take them (they get a GOAWAY) rather than reset them. */
	for (int i = 0; w->listening && i < 2; i++)
		for (int batch = 0; batch < 64 && w->listen_fds[i] >= 0; batch++)
			if (!accept_some(w, w->listen_fds[i], ACCEPT_BATCH))
				break;
	close_listeners(w);
	splitter_drain(w->splitter);
}

int worker_post_drain(struct worker *w)
{
	return loop_post(w->loop, do_drain, w);
}

void worker_stop(struct worker *w)
{
	loop_stop(w->loop);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

void worker_destroy(struct worker *w)
{
	if (w->splitter)
		splitter_free(w->splitter);
	metrics_free(w->metrics);
	close_listeners(w);
	loop_timer_cancel(w->loop, w->fd_timer);
	spare_close(w);
	registry_snapshot_unref(w->snap);
	loop_free(w->loop);
}
