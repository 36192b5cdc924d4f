// SPDX-License-Identifier: Apache-2.0
/*
 * Cache of client pods' network namespaces (see netns.h). An entry is found
 * by the client's cgroup id, opened from the recorded pid's /proc/PID/ns/net
 * (or from any process still in that cgroup), and keeps its fd until idle.
 * A pid is used only once it is shown to be in that cgroup: the recorded one
 * is the kernel's (root PID namespace) and may name another process in ours,
 * or a process that reused the pid; a wrong netns would mean a wrong source
 * IP past every NetworkPolicy, so none is better than a guess.
 * Sockets are made with setns() on the calling thread and setns() back: a
 * network namespace switch is per thread, so other workers are unaffected.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "kernel/cgroup.h"
#include "kernel/netns.h"

struct netns_ref {
	uint64_t cgroup_id;
	uint64_t ino;      /* netns inode: the pool key */
	int fd;            /* owned */
	int refs;          /* under the cache lock */
	uint64_t idle_since_ms;
	struct netns_cache *cache; /* back pointer, for the daemon's own netns */
	struct netns_ref *next;
};

struct netns_cache {
	pthread_mutex_t lock;
	struct netns_ref *head; /* owned list */
	int self_fd;            /* the daemon's own netns, to switch back to */
	uint64_t self_ino;
	char cg_root[PATH_MAX]; /* the cgroup2 mount, to check pids against */
};

struct netns_cache *netns_cache_new(void)
{
	struct netns_cache *c = calloc(1, sizeof(*c));
	struct stat st;

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	c->self_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (c->self_fd < 0 || fstat(c->self_fd, &st)) {
		log_error("netns_open_self_failed err=\"%m\"");
		netns_cache_free(c);
		return NULL;
	}
	c->self_ino = st.st_ino;
	if (cgroup_v2_root(c->cg_root, sizeof(c->cg_root)))
		c->cg_root[0] = '\0'; /* no pid passes the check: every lookup fails */
	return c;
}

void netns_cache_free(struct netns_cache *c)
{
	struct netns_ref *r, *next;

	if (!c)
		return;
	for (r = c->head; r; r = next) {
		next = r->next;
		close(r->fd);
		free(r);
	}
	if (c->self_fd >= 0)
		close(c->self_fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* The netns of |pid| if that process is in cgroup |cgroup_id| (or below). */
static int open_pid_netns(const struct netns_cache *c, uint32_t pid, uint64_t cgroup_id)
{
	char path[64];
	int dfd, fd;

	snprintf(path, sizeof(path), "/proc/%u", pid);
	dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (!c->cg_root[0] || !cgroup_proc_in(c->cg_root, dfd, cgroup_id)) {
		close(dfd);
		return -ESRCH;
	}
	fd = openat(dfd, "ns/net", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fd = -errno;
	close(dfd);
	return fd;
}

/* The recorded pid may be gone (a short-lived client) or not ours to read
 * (another PID namespace): then any process of the cgroup, as listed in our
 * own PID namespace, will do. */
static int open_netns(const struct netns_cache *c, uint64_t cgroup_id, uint32_t pid)
{
	int fd = pid ? open_pid_netns(c, pid, cgroup_id) : -ESRCH;
	int other;

	if (fd >= 0)
		return fd;
	if (fd == -ESRCH && pid)
		log_debug("netns_pid_not_in_cgroup pid=%u cgroup_id=%llu", pid,
			  (unsigned long long)cgroup_id);
	other = cgroup_find_pid_at(c->cg_root, cgroup_id);
	if (other <= 0)
		return other < 0 ? other : -ESRCH;
	return open_pid_netns(c, (uint32_t)other, cgroup_id);
}

int netns_cache_get(struct netns_cache *c, uint64_t cgroup_id, uint32_t pid,
		    struct netns_ref **out)
{
	struct netns_ref *r;
	struct stat st;
	int fd;

	pthread_mutex_lock(&c->lock);
	for (r = c->head; r; r = r->next) {
		if (r->cgroup_id == cgroup_id) {
			__atomic_fetch_add(&r->refs, 1, __ATOMIC_SEQ_CST);
			pthread_mutex_unlock(&c->lock);
			*out = r;
			return 0;
		}
	}
	pthread_mutex_unlock(&c->lock);

	fd = open_netns(c, cgroup_id, pid);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st)) {
		close(fd);
		return -errno;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		close(fd);
		return -ENOMEM;
	}
	*r = (struct netns_ref){.cgroup_id = cgroup_id, .ino = st.st_ino, .fd = fd, .refs = 1, .cache = c};
	pthread_mutex_lock(&c->lock);
	r->next = c->head;
	c->head = r;
	pthread_mutex_unlock(&c->lock);
	log_debug("netns_opened cgroup_id=%llu pid=%u ino=%llu", (unsigned long long)cgroup_id,
		  pid, (unsigned long long)r->ino);
	*out = r;
	return 0;
}

struct netns_ref *netns_ref_get(struct netns_ref *r)
{
	/* The caller holds a reference already, so the entry cannot expire meanwhile. */
	__atomic_fetch_add(&r->refs, 1, __ATOMIC_SEQ_CST);
	return r;
}

void netns_ref_put(struct netns_cache *c, struct netns_ref *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&c->lock);
	if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_SEQ_CST) == 0)
		r->idle_since_ms = loop_now_ms();
	pthread_mutex_unlock(&c->lock);
}

uint64_t netns_ref_id(const struct netns_ref *r)
{
	return r ? r->ino : 0;
}

int netns_cache_expire(struct netns_cache *c, uint64_t idle_ms)
{
	struct netns_ref **pp, *r;
	uint64_t now = loop_now_ms();
	int n = 0;

	pthread_mutex_lock(&c->lock);
	for (pp = &c->head; (r = *pp);) {
		if (__atomic_load_n(&r->refs, __ATOMIC_SEQ_CST) == 0 &&
		    now - r->idle_since_ms > idle_ms) {
			*pp = r->next;
			close(r->fd);
			free(r);
			n++;
		} else {
			pp = &r->next;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return n;
}

int netns_socket(const struct netns_ref *r, int domain, int type)
{
	return netns_socket_proto(r, domain, type, 0);
}

int netns_socket_proto(const struct netns_ref *r, int domain, int type, int protocol)
{
	int fd, err = 0;

	type |= SOCK_NONBLOCK | SOCK_CLOEXEC;
	if (!r || r->ino == r->cache->self_ino) {
		fd = socket(domain, type, protocol);
		return fd < 0 ? -errno : fd;
	}
	if (setns(r->fd, CLONE_NEWNET))
		return -errno;
	fd = socket(domain, type, protocol);
	if (fd < 0)
		err = -errno;
	if (setns(r->cache->self_fd, CLONE_NEWNET)) {
		/* This thread would keep serving from a pod's netns: never continue. */
		log_error("netns_restore_failed err=\"%m\"");
		abort();
	}
	return fd < 0 ? err : fd;
}
