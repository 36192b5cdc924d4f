// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitd: load and attach the BPF programs, keep the services map in step
 * with discovery, run the workers that split HTTP/2 streams, and on SIGTERM
 * stop redirecting first, then drain. Redirection starts only after the first
 * full discovery sync, and is switched on by putting worker 0's listeners in
 * the liveness SOCKMAP: the kernel drops them the moment this process dies.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/locality.h"
#include "base/log.h"
#include "daemon/admin.h"
#include "daemon/coexist.h"
#include "daemon/adopt.h"
#include "daemon/daemon.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"
#include "kernel/ifaddr.h"
#include "kernel/netns.h"
#include "proxy/conn_limit.h"
#include "telemetry/metrics.h"
#include "telemetry/tap.h"

#define DRAIN_POLL_MS 100
#define NETNS_IDLE_MS 60000
/* How long a Service that left the desired state still routes the streams
 * of connections redirected to it before: they were sent GOAWAY at once, so
 * only streams already on the wire, queued or being retried need it. */
#define RETIRED_KEEP_MS 30000

static const struct sockaddr_storage *listen_addr(const struct config *c, int slot)
{
	return slot == H2S_LISTENER_V4 ? &c->listen_v4 : &c->listen_v6;
}

/* During a rolling update the new daemon puts its own listener in the slot;
 * the old one must not empty it on its way out. */
static bool slot_is_ours(struct daemon *d, int slot, int fd)
{
	uint64_t ours = 0, in_map = 0;
	socklen_t len = sizeof(ours);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &ours, &len) ||
	    bpf_maps_listener_cookie(bpf_loader_maps(d->bpf), slot, &in_map))
		return true; /* unknown: removing is the fail-safe choice */
	return ours == in_map;
}

/* Which of the group's listeners get new connects (h2s_workers): ours from
 * before we take the liveness slot, until we leave it. Without the kernel's
 * sk_reuseport support the map is unused and the kernel spreads by hash. */
static void set_workers(struct daemon *d, int slot, bool on)
{
	const struct bpf_maps *m = bpf_loader_maps(d->bpf);
	int fds[H2S_WORKER_KEYS], n = 0, err;

	if (bpf_loader_migrate_fd(d->bpf) < 0)
		return;
	for (int i = 0; i < d->n_workers && n < H2S_WORKER_KEYS; i++)
		if (d->workers[i].listen_fds[slot] >= 0)
			fds[n++] = d->workers[i].listen_fds[slot];
	if (!n)
		return;
	err = on ? bpf_maps_set_workers(m, slot, fds, n) : bpf_maps_clear_workers(m, slot, fds, n);
	if (err)
		log_error("workers_map_update_failed slot=%d on=%d err=\"%s\"", slot, on,
			  strerror(-err));
}

static void set_redirecting(struct daemon *d, bool on)
{
	if (atomic_load(&d->redirecting) == on)
		return;
	for (int slot = 0; slot < H2S_LISTENER_SLOTS; slot++) {
		int fd = d->workers[0].listen_fds[slot];
		int err;

		if (fd < 0)
			continue;
		if (on) {
			set_workers(d, slot, true);
			err = bpf_loader_add_listener(d->bpf, slot, fd);
		} else if (slot_is_ours(d, slot, fd)) {
			err = bpf_loader_del_listener(d->bpf, slot);
			set_workers(d, slot, false);
		} else {
			continue; /* a newer daemon took the slot over (rolling update) */
		}
		if (err)
			log_error("liveness_map_update_failed slot=%d on=%d err=\"%s\"", slot, on,
				  strerror(-err));
	}
	atomic_store(&d->redirecting, on);
	log_info("%s", on ? "redirecting" : "redirection_stopped");
}

/* Main thread: a worker ran out of fds, or recovered. While any worker is
 * out, the liveness slot is empty (only if it holds our listener): new
 * connects go direct instead of to a daemon that cannot take them. */
static void do_fd_pause(struct loop *l, void *arg)
{
	struct daemon *d = arg;

	(void)l;
	if (d->fd_paused++ == 0) {
		log_warn("redirection_paused reason=fd_exhaustion");
		set_redirecting(d, false);
	}
}

static void do_fd_resume(struct loop *l, void *arg)
{
	struct daemon *d = arg;

	(void)l;
	if (--d->fd_paused == 0 && atomic_load(&d->synced) && !atomic_load(&d->draining)) {
		log_info("redirection_resumed reason=fds_available");
		set_redirecting(d, true);
	}
}

static void on_fd_pressure(void *arg, bool paused)
{
	struct daemon *d = arg;

	if (loop_post(d->loop, paused ? do_fd_pause : do_fd_resume, d))
		log_error("fd_pressure_lost paused=%d", paused);
}

/* A full load (the services file, a Kubernetes list) peaks far above what it
 * keeps: the JSON tree of every Service and EndpointSlice of the cluster.
 * Give those pages back, or RSS stays at that peak. Only then: the state
 * built at every change reuses the last one's freed memory, and trimming it
 * each time would make every change fault its pages in afresh (at 5,000
 * Services x 10 endpoints, before states shared unchanged endpoints, a third
 * of a change's CPU). Free chunks count as free (mallinfo2) even once
 * trimmed, so what decides is how much of RSS is not in use. */
#define TRIM_FREE_BYTES (32u << 20)

static size_t resident_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "re");

	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void trim_heap(void)
{
	struct mallinfo2 mi = mallinfo2();
	size_t rss = resident_bytes();
	size_t idle = rss > mi.uordblks ? rss - mi.uordblks : 0;

	if (mi.fordblks > TRIM_FREE_BYTES && (!rss || idle > TRIM_FREE_BYTES))
		malloc_trim(0);
}

/* Main thread, once every worker routes by the newest snapshot: the BPF
 * services map may now send new connects to every Service in it. Only then
 * is the generation applied, which /readyz, /services and h2splitctl report. */
static void apply_posted(struct daemon *d)
{
	struct bpf_maps_sync_stats sync = {0};
	struct snapshot *snap = d->posted;
	int err;

	if (snap == d->snap)
		return; /* applied already: a later worker's ack came in the same pass */
	for (int i = 0; i < d->n_workers; i++)
		if (atomic_load(&d->workers[i].applied_gen) != snap->generation)
			return;
	err = bpf_maps_sync_services(bpf_loader_maps(d->bpf), snap->st, false, &sync);
	if (err)
		log_error("services_map_sync_failed err=\"%s\"", strerror(-err));
	else if (sync.added || sync.changed)
		log_info("services_map_synced added=%d changed=%d", sync.added, sync.changed);
	pthread_mutex_lock(&d->snap_lock);
	registry_snapshot_unref(d->snap);
	d->snap = registry_snapshot_ref(snap);
	pthread_mutex_unlock(&d->snap_lock);
	log_info("state_applied generation=%llu version=%s services=%d retired=%d",
		 (unsigned long long)snap->generation, snap->st->version[0] ? snap->st->version : "-",
		 snap->st->n_svcs - snap->st->n_retired, snap->st->n_retired);
	if (!atomic_load(&d->synced)) {
		atomic_store(&d->synced, true);
		if (!atomic_load(&d->draining) && !d->fd_paused)
			set_redirecting(d, true);
	}
	/* Connections opened before now to what this state opts in: the app
	 * reconnects through us once they close (daemon/adopt.h). */
	adopter_on_applied(d->adopter, snap->st);
	trim_heap();
}

static void do_worker_applied(struct loop *l, void *arg)
{
	(void)l;
	apply_posted(arg);
}

/* Worker thread: it routes by a new snapshot. */
static void on_worker_applied(void *arg, uint64_t generation)
{
	struct daemon *d = arg;

	(void)generation;
	if (loop_post(d->loop, do_worker_applied, d))
		log_error("state_ack_lost generation=%llu", (unsigned long long)generation);
}

static void on_retired_expiry(struct loop *l, struct loop_timer *t, void *arg);

/* Post a new snapshot of |st| (owned) to every worker; what left the
 * desired state stays in it, retired, for RETIRED_KEEP_MS. */
static void post_state(struct daemon *d, struct state *st)
{
	const struct state *prev = d->posted ? d->posted->st : NULL;
	struct snapshot *snap;
	uint64_t oldest;
	int n;

	n = state_carry_retired(st, prev, loop_now_ms(), RETIRED_KEEP_MS);
	if (n < 0)
		log_error("retired_services_lost err=\"%s\"", strerror(-n));
	snap = registry_snapshot_new(st, ++d->generation);
	if (!snap) {
		state_free(st);
		return;
	}
	registry_snapshot_unref(d->posted);
	d->posted = snap;
	for (int i = 0; i < d->n_workers; i++)
		if (worker_post_snapshot(&d->workers[i], registry_snapshot_ref(snap)))
			log_error("state_post_failed worker=%d generation=%llu err=\"out of memory\"",
				  i, (unsigned long long)snap->generation);
	loop_timer_cancel(d->loop, d->retired_timer);
	d->retired_timer = NULL;
	oldest = state_oldest_retired(st);
	if (oldest) {
		uint64_t now = loop_now_ms(), due = oldest + RETIRED_KEEP_MS;

		d->retired_timer = loop_timer_add(d->loop, due > now ? due - now : 0,
						  on_retired_expiry, d);
	}
}

/* Main thread: retired services whose connections had their time are
 * forgotten; a stream that still names one is refused (REFUSED_STREAM). */
static void on_retired_expiry(struct loop *l, struct loop_timer *t, void *arg)
{
	struct daemon *d = arg;
	const struct state *cur = d->posted->st;
	struct state *st = state_new();

	(void)l;
	(void)t;
	d->retired_timer = NULL;
	for (int i = 0; st && i < cur->n_svcs; i++)
		if (!cur->svcs[i].retired_ms && state_add_service_shared(st, &cur->svcs[i])) {
			state_free(st);
			st = NULL;
		}
	if (!st || state_finish(st) || state_copy_callers(st, cur)) {
		log_error("retired_expiry_failed err=\"out of memory\" action=retry");
		state_free(st);
		d->retired_timer = loop_timer_add(d->loop, RETIRED_KEEP_MS, on_retired_expiry, d);
		return;
	}
	memcpy(st->version, cur->version, sizeof(st->version));
	memcpy(st->node_name, cur->node_name, sizeof(st->node_name));
	memcpy(st->node_zone, cur->node_zone, sizeof(st->node_zone));
	post_state(d, st);
}

/* Decide locality (base/locality.c) and say once what this node's zone is,
 * or that none is known (zone preferences then change nothing). */
static void resolve_locality(struct daemon *d, struct state *st)
{
	if (locality_resolve(st, d->cfg.node_name, d->cfg.zone))
		log_error("locality_resolve_failed err=\"out of memory\" "
			  "action=\"some endpoints keep their last tiers\"");
	if (d->zone_logged && !strcmp(d->zone, st->node_zone))
		return;
	d->zone_logged = true;
	memcpy(d->zone, st->node_zone, sizeof(d->zone));
	if (st->node_zone[0])
		log_info("locality_zone node=%s zone=%s from=%s", st->node_name[0] ? st->node_name : "-",
			 st->node_zone, d->cfg.zone[0] ? "--zone" : "Node label");
	else
		log_info("locality_zone_unknown node=%s effect=\"zone preferences and zone hints "
			 "are ignored: routing as without them\" fix=\"label the Node "
			 "topology.kubernetes.io/zone or pass --zone\"",
			 st->node_name[0] ? st->node_name : "-");
}

/* Discovery has new exclusions and/or a new desired state. Excluded cgroups
 * (a source's opted-out pods) are written first, so a pod opting out stops
 * being redirected no later than the state that drops its Service arrives.
 * Then opt-outs leave the BPF services map (new connects go where the app
 * aimed), and every worker gets the snapshot; opt-ins enter the map only
 * once every worker has it (apply_posted), so no connection is ever
 * redirected to a worker that cannot route it. */
static int on_state(void *arg, struct state *st, const struct discovery_exclusions *ex)
{
	struct daemon *d = arg;
	struct bpf_maps_sync_stats sync = {0};
	int err, ex_err = 0;

	if (ex)
		ex_err = bpf_maps_excluded_sync(bpf_loader_maps(d->bpf), ex->origin, ex->ids, ex->n);
	if (!st)
		return ex_err;
	resolve_locality(d, st);
	err = bpf_maps_sync_services(bpf_loader_maps(d->bpf), st, true, &sync);
	if (err)
		log_error("services_map_sync_failed err=\"%s\"", strerror(-err));
	else if (sync.removed)
		log_info("services_map_synced removed=%d", sync.removed);
	post_state(d, st);
	return ex_err;
}

static uint64_t active_conns(const struct daemon *d)
{
	uint64_t n = 0;

	for (int i = 0; i < d->n_workers; i++)
		n += stats_get(&d->workers[i].stats, ST_DOWNSTREAM_CONNS_ACTIVE);
	return n;
}

static void on_drain_tick(struct loop *l, struct loop_timer *t, void *arg)
{
	struct daemon *d = arg;
	uint64_t left = active_conns(d);

	(void)t;
	if (left && loop_now_ms() < d->drain_deadline_ms) {
		loop_timer_add(l, DRAIN_POLL_MS, on_drain_tick, d);
		return;
	}
	if (left)
		log_warn("drain_timeout connections_left=%llu", (unsigned long long)left);
	else
		log_info("drained");
	loop_stop(l);
}

static void start_drain(struct daemon *d)
{
	if (atomic_exchange(&d->draining, true))
		return;
	log_info("draining timeout_s=%d", d->cfg.drain_timeout_s);
	/* Stop redirecting first: from here on new connects go where the app aimed. */
	set_redirecting(d, false);
	for (int i = 0; i < d->n_workers; i++)
		worker_post_drain(&d->workers[i]);
	d->drain_deadline_ms = loop_now_ms() + (uint64_t)d->cfg.drain_timeout_s * 1000;
	loop_timer_add(d->loop, DRAIN_POLL_MS, on_drain_tick, d);
}

static void on_signal(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct daemon *d = arg;
	struct signalfd_siginfo si;

	(void)l;
	(void)events;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			log_info("reload_requested");
			if (d->disc && d->disc->ops->reload)
				d->disc->ops->reload(d->disc);
		} else if (atomic_load(&d->draining)) {
			log_warn("second_signal_exiting_now");
			loop_stop(d->loop);
		} else {
			start_drain(d);
		}
	}
}

static void on_housekeeping(struct loop *l, struct loop_timer *t, void *arg)
{
	struct daemon *d = arg;

	(void)t;
	netns_cache_expire(d->netns, NETNS_IDLE_MS);
	loop_timer_add(l, 10000, on_housekeeping, d);
}

static int setup_signals(struct daemon *d)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	/* Blocked before any thread starts, so workers inherit the mask. */
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		return -errno;
	d->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (d->sig_fd < 0)
		return -errno;
	return loop_add_fd(d->loop, d->sig_fd, EPOLLIN, on_signal, d);
}

/* The daemon's own sockets (its L4 path dials VIPs) must never be redirected.
 * Each origin's set is replaced whole, so a flag dropped since the last run
 * stops excluding while `h2splitctl exclude` entries and pod opt-outs of the
 * same cgroups stay. */
static int exclude_cgroups(struct daemon *d)
{
	const struct bpf_maps *maps = bpf_loader_maps(d->bpf);
	uint64_t ids[CONFIG_MAX_EXCLUDE], self_id;
	char self[CONFIG_PATH_MAX] = "";
	int err, n = 0;

	if (cgroup_self_dir(self, sizeof(self)) == 0 && !cgroup_is_root(self) &&
	    cgroup_id_of(self, &self_id) == 0) {
		err = bpf_maps_excluded_sync(maps, H2S_EXCLUDE_SELF, &self_id, 1);
		if (err)
			log_warn("exclude_own_cgroup_failed path=%s err=\"%s\"", self, strerror(-err));
	} else {
		log_warn("own_cgroup_unknown path=%s: the daemon must run outside --cgroup "
			 "or in a cgroup given to --exclude-cgroup", self);
	}
	for (int i = 0; i < d->cfg.n_exclude; i++) {
		err = cgroup_id_of(d->cfg.exclude[i], &ids[n]);
		if (err) {
			fprintf(stderr, "h2splitd: --exclude-cgroup %s: %s (give a cgroup v2 directory)\n",
				d->cfg.exclude[i], strerror(-err));
			return err;
		}
		n++;
	}
	return bpf_maps_excluded_sync(maps, H2S_EXCLUDE_FLAG, ids, n);
}

static int start_workers(struct daemon *d)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int err;

	d->n_workers = d->cfg.workers ? d->cfg.workers : (ncpu > 0 ? (int)ncpu : 1);
	d->workers = calloc((size_t)d->n_workers, sizeof(*d->workers));
	d->tap = tap_new(d->n_workers);
	if (!d->workers || !d->tap)
		return -ENOMEM;
	for (int i = 0; i < d->n_workers; i++) {
		err = worker_init(&d->workers[i], i, &d->sh);
		if (err) {
			d->n_workers = i + 1; /* shutdown_daemon() undoes only what was made */
			return err;
		}
		metrics_set_tap(d->workers[i].metrics, d->tap, i);
	}
	for (int i = 0; i < d->n_workers; i++) {
		err = worker_start(&d->workers[i]);
		if (err)
			return err;
	}
	return 0;
}

static int setup_listen(struct daemon *d)
{
	for (int slot = 0; slot < H2S_LISTENER_SLOTS; slot++) {
		const struct sockaddr_storage *a = listen_addr(&d->cfg, slot);
		char buf[64];
		int err;

		if (!a->ss_family)
			continue;
		err = ifaddr_ensure(a);
		if (err) {
			fprintf(stderr, "h2splitd: cannot add listen address %s: %s\n",
				config_addr_str(a, buf, sizeof(buf)), strerror(-err));
			return err;
		}
	}
	return bpf_loader_set_listen(d->bpf, &d->cfg.listen_v4, &d->cfg.listen_v6);
}

static int uninstall(const struct config *c)
{
	int err = bpf_loader_uninstall(c->bpffs);

	for (int slot = 0; slot < H2S_LISTENER_SLOTS; slot++)
		if (listen_addr(c, slot)->ss_family)
			ifaddr_remove(listen_addr(c, slot));
	if (err) {
		fprintf(stderr, "h2splitd: uninstall: %s\n", strerror(-err));
		return 1;
	}
	printf("h2split uninstalled: programs detached, pins under %s removed\n", c->bpffs);
	return 0;
}

/* The Kubernetes source finds opted-out pods' cgroups through these. */
static const struct discovery_cgroup_ops cgroup_ops = {.root = cgroup_v2_root,
						       .id_of = cgroup_id_of};

static struct discovery *make_discovery(struct daemon *d)
{
	if (d->cfg.discovery == DISCOVERY_FILE)
		return discovery_file_new(d->cfg.services_file, &cgroup_ops, on_state, d);
	return discovery_kubernetes_new(&d->cfg, &cgroup_ops, on_state, d);
}

/* The newest snapshot, referenced, for the health checker thread. */
static struct snapshot *current_snapshot(void *arg)
{
	struct daemon *d = arg;
	struct snapshot *s;

	pthread_mutex_lock(&d->snap_lock);
	s = d->snap ? registry_snapshot_ref(d->snap) : NULL;
	pthread_mutex_unlock(&d->snap_lock);
	return s;
}

static int run(struct daemon *d)
{
	char err_msg[512] = "";
	int err;

	err = bpf_loader_preflight(d->cfg.bpffs, err_msg, sizeof(err_msg));
	if (err) {
		fprintf(stderr, "h2splitd: %s\n", err_msg);
		return err;
	}
	d->loop = loop_new();
	d->netns = netns_cache_new();
	d->health = health_table_new();
	if (!d->loop || !d->netns || !d->health)
		return -ENOMEM;
	err = bpf_loader_open(d->cfg.bpffs, d->cfg.cgroup_dir[0] ? d->cfg.cgroup_dir : NULL,
			      d->cfg.max_redirected_sockets, &d->bpf);
	if (err) {
		fprintf(stderr, "h2splitd: loading BPF programs failed: %s\n", strerror(-err));
		return err;
	}
	d->coexist = coexist_start(d);
	if (!d->coexist)
		return -ENOMEM;
	d->sh = (struct worker_shared){
		.cfg = &d->cfg,
		.maps = bpf_loader_maps(d->bpf),
		.netns = d->netns,
		.health = d->health,
		.fd_pressure = on_fd_pressure,
		.fd_pressure_arg = d,
		.applied = on_worker_applied,
		.applied_arg = d,
		.migrate_prog_fd = bpf_loader_migrate_fd(d->bpf)};
	if (d->cfg.max_connections_per_pod &&
	    !(d->sh.pod_conns = conn_limit_new((uint32_t)d->cfg.max_connections_per_pod)))
		return -ENOMEM;
	if ((err = exclude_cgroups(d)) || (err = setup_listen(d)) || (err = setup_signals(d)))
		return err;
	if ((err = start_workers(d))) {
		fprintf(stderr, "h2splitd: starting workers failed: %s\n", strerror(-err));
		return err;
	}
	d->admin = admin_start(d);
	if (!d->admin)
		return -EADDRINUSE;
	d->checker = health_checker_start(d->health, current_snapshot, d);
	if (!d->checker)
		return -ENOMEM;
	d->adopter = adopter_start(&(struct adopt_params){.mode = d->cfg.adopt_existing,
							  .max_wait_ms = d->cfg.adopt_max_wait_s * 1000,
							  .cgroup_dir = d->cfg.cgroup_dir,
							  .netns = d->netns,
							  .maps = bpf_loader_maps(d->bpf),
							  .snapshot = current_snapshot,
							  .snapshot_arg = d,
							  .redirecting = &d->redirecting});
	if (!d->adopter)
		return -ENOMEM;
	d->disc = make_discovery(d);
	if (!d->disc || (err = d->disc->ops->start(d->disc, d->loop))) {
		fprintf(stderr, "h2splitd: starting %s discovery failed\n",
			d->cfg.discovery == DISCOVERY_FILE ? "file" : "kubernetes");
		return err ? err : -ENOMEM;
	}
	loop_timer_add(d->loop, 10000, on_housekeeping, d);
	log_info("started version=%s workers=%d bpffs=%s", H2SPLIT_VERSION, d->n_workers,
		 d->cfg.bpffs);
	return loop_run(d->loop);
}

static void shutdown_daemon(struct daemon *d)
{
	if (d->workers && atomic_load(&d->redirecting))
		set_redirecting(d, false);
	admin_stop(d->admin);
	adopter_stop(d->adopter);
	health_checker_stop(d->checker);
	for (int i = 0; d->workers && i < d->n_workers; i++)
		if (d->workers[i].loop)
			worker_stop(&d->workers[i]);
	for (int i = 0; d->workers && i < d->n_workers; i++)
		if (d->workers[i].thread)
			worker_join(&d->workers[i]);
	for (int i = 0; d->workers && i < d->n_workers; i++)
		worker_destroy(&d->workers[i]);
	free(d->workers);
	tap_free(d->tap);
	if (d->disc)
		d->disc->ops->destroy(d->disc);
	registry_snapshot_unref(d->snap);
	registry_snapshot_unref(d->posted);
	bpf_loader_close(d->bpf); /* pins stay: redirection resumes with the next daemon */
	netns_cache_free(d->netns);
	health_table_free(d->health);
	conn_limit_free(d->sh.pod_conns);
	if (d->sig_fd > 0)
		close(d->sig_fd);
	loop_free(d->loop);
	coexist_free(d->coexist); /* after the admin thread and the loop: both read it */
	pthread_mutex_destroy(&d->snap_lock);
}

/* In a container with its own cgroup namespace /proc/self/cgroup says "/",
 * which would hide the daemon's real cgroup (and excluding "/" would turn
 * redirection off for the whole node). With hostPID, join the host's cgroup
 * namespace so the path is the real one. */
static void join_host_cgroupns(void)
{
	struct stat self, host;
	int fd;

	if (stat("/proc/self/ns/cgroup", &self) || stat("/proc/1/ns/cgroup", &host) ||
	    self.st_ino == host.st_ino)
		return;
	fd = open("/proc/1/ns/cgroup", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWCGROUP))
		log_warn("host_cgroupns_join_failed err=\"%m\" (run with hostPID)");
	if (fd >= 0)
		close(fd);
}

/* Every downstream connection costs an fd and so does each upstream one: the
 * usual soft limit of 1024 would cap the daemon at a few hundred clients.
 * Take the hard limit the container (or systemd) granted. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl)) {
		log_warn("getrlimit_nofile_failed err=\"%m\"");
		return;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl)) {
			log_warn("setrlimit_nofile_failed soft=%llu hard=%llu err=\"%m\"",
				 (unsigned long long)was, (unsigned long long)rl.rlim_max);
			return;
		}
	}
	log_info("fd_limit soft=%llu hard=%llu", (unsigned long long)rl.rlim_cur,
		 (unsigned long long)rl.rlim_max);
}

int main(int argc, char **argv)
{
	static struct daemon d;
	char err[512];
	int rc;

	if (config_parse(&d.cfg, argc, argv, err, sizeof(err))) {
		fprintf(stderr, "h2splitd: %s\n", err);
		return 2;
	}
	if (d.cfg.help) {
		config_usage(stdout);
		return 0;
	}
	if (d.cfg.version) {
		printf("h2splitd %s\n", H2SPLIT_VERSION);
		return 0;
	}
	log_set_level(d.cfg.log_level);
	if (d.cfg.uninstall)
		return uninstall(&d.cfg);
	join_host_cgroupns();
	raise_nofile();
	pthread_mutex_init(&d.snap_lock, NULL);
	d.sig_fd = -1;
	rc = run(&d);
	if (rc)
		log_error("exiting err=\"%s\"", strerror(-rc));
	shutdown_daemon(&d);
	log_info("stopped");
	return rc ? 1 : 0;
}
