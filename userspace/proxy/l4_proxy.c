// SPDX-License-Identifier: Apache-2.0
/*
 * Byte-for-byte forwarding of non-HTTP/2 redirected connections (l4_proxy.h).
 * Each direction owns a pipe; data moves socket -> pipe -> socket by splice().
 * Invariant: a socket is read only while its direction's pipe has room, and
 * a direction half-closes its destination (SHUT_WR) only once its source hit
 * EOF and its pipe is empty. The connection is freed when both are shut.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/stats.h"
#include "kernel/netns.h"
#include "proxy/l4_proxy.h"

#define L4_PIPE_SIZE (64 * 1024)
#define L4_CONNECT_TIMEOUT_MS 10000

enum { DOWN = 0, UP = 1 }; /* fd index: downstream (client pod) and upstream */

struct l4_dir {
	int pipe[2];   /* owned */
	size_t queued; /* bytes in the pipe */
	bool src_eof;
	bool shut;     /* destination half-closed */
};

struct l4_conn {
	const struct l4_proxy_ctx *ctx; /* borrowed */
	int fd[2];              /* owned */
	uint64_t pod_key;       /* conn_info.pod_key */
	struct l4_dir dir[2];   /* dir[DOWN]: client -> upstream, dir[UP]: upstream -> client */
	bool connecting;
	bool hup[2];        /* EPOLLHUP seen: the peer finished and we shut our side */
	bool registered[2]; /* in the loop (a hung-up socket is parked while it cannot read) */
	struct loop_timer *connect_timer;
	struct netns_ref *netns; /* owned ref */
};

static void on_io(struct loop *l, int fd, uint32_t events, void *arg);

static void l4_free(struct l4_conn *c, bool reset)
{
	struct loop *l = c->ctx->loop;

	loop_timer_cancel(l, c->connect_timer);
	for (int i = 0; i < 2; i++) {
		if (c->fd[i] >= 0) {
			if (c->registered[i])
				loop_del_fd(l, c->fd[i]);
			if (reset) {
				struct linger lg = {.l_onoff = 1, .l_linger = 0};

				setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			}
			close(c->fd[i]);
		}
		for (int j = 0; j < 2; j++)
			if (c->dir[i].pipe[j] >= 0)
				close(c->dir[i].pipe[j]);
	}
	netns_ref_put(c->ctx->netns, c->netns);
	stats_dec(c->ctx->stats, ST_L4_CONNS_ACTIVE);
	conn_owner_closed(&c->ctx->owner, c->pod_key);
	free(c);
}

/* Interest for socket |i|: read while its outgoing pipe has room, write while
 * its incoming pipe holds data. */
static uint32_t wanted(const struct l4_conn *c, int i)
{
	const struct l4_dir *out = &c->dir[i], *in = &c->dir[!i];
	uint32_t ev = 0;

	if (i == UP && c->connecting)
		return EPOLLOUT;
	if (!out->src_eof && out->queued < L4_PIPE_SIZE)
		ev |= EPOLLIN;
	if (in->queued)
		ev |= EPOLLOUT;
	return ev;
}

/* Move what can move in direction |d| without blocking. -errno on a dead socket. */
static int pump(struct l4_conn *c, int d)
{
	struct l4_dir *dir = &c->dir[d];
	int src = c->fd[d], dst = c->fd[!d];
	bool progress = true;

	while (progress) {
		ssize_t n;

		progress = false;
		if (dir->queued) {
			n = splice(dir->pipe[0], NULL, dst, NULL, dir->queued,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				dir->queued -= (size_t)n;
				stats_add(c->ctx->stats, d == DOWN ? ST_L4_BYTES_UP : ST_L4_BYTES_DOWN,
					  (uint64_t)n);
				progress = true;
			} else if (n < 0 && errno != EAGAIN) {
				return -errno;
			}
		}
		if (!dir->src_eof && dir->queued < L4_PIPE_SIZE) {
			n = splice(src, NULL, dir->pipe[1], NULL, L4_PIPE_SIZE - dir->queued,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				dir->queued += (size_t)n;
				progress = true;
			} else if (n == 0) {
				dir->src_eof = true;
			} else if (errno != EAGAIN) {
				return -errno;
			}
		}
	}
	if (dir->src_eof && !dir->queued && !dir->shut) {
		shutdown(dst, SHUT_WR);
		dir->shut = true;
	}
	return 0;
}

static void l4_update(struct l4_conn *c)
{
	if (c->dir[DOWN].shut && c->dir[UP].shut) {
		l4_free(c, false);
		return;
	}
	for (int i = 0; i < 2; i++) {
		uint32_t ev = wanted(c, i);

		/* A hung-up socket reports EPOLLHUP whatever the mask: park it while
		 * it has nothing we can take, or the loop would spin on it. */
		if (c->hup[i] && !(ev & EPOLLIN)) {
			if (c->registered[i])
				loop_del_fd(c->ctx->loop, c->fd[i]);
			c->registered[i] = false;
		} else if (!c->registered[i]) {
			c->registered[i] = loop_add_fd(c->ctx->loop, c->fd[i], ev, on_io, c) == 0;
		} else {
			loop_set_events(c->ctx->loop, c->fd[i], ev);
		}
	}
}

static bool on_connected(struct l4_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd[UP], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
		c->connecting = false;
		loop_timer_cancel(c->ctx->loop, c->connect_timer);
		c->connect_timer = NULL;
		return true;
	}
	stats_inc(c->ctx->stats, ST_L4_CONNECT_FAILURES);
	log_debug("l4_connect_failed err=\"%s\"", strerror(err ? err : errno));
	/* The app's connect already succeeded (to us): a reset is the honest answer. */
	l4_free(c, true);
	return false;
}

static void on_io(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct l4_conn *c = arg;
	int err;

	(void)l;
	if (fd == c->fd[UP] && c->connecting && !on_connected(c))
		return;
	if (events & EPOLLERR) {
		l4_free(c, true); /* reset by the peer: pass the reset on */
		return;
	}
	if (events & EPOLLHUP)
		c->hup[fd == c->fd[UP]] = true;
	err = pump(c, DOWN);
	if (!err)
		err = pump(c, UP);
	if (err) {
		log_debug("l4_closed_with_error err=\"%s\"", strerror(-err));
		l4_free(c, true);
		return;
	}
	l4_update(c);
}

static void on_connect_timeout(struct loop *l, struct loop_timer *t, void *arg)
{
	struct l4_conn *c = arg;

	(void)l;
	(void)t;
	c->connect_timer = NULL;
	stats_inc(c->ctx->stats, ST_L4_CONNECT_FAILURES);
	log_debug("l4_connect_timeout");
	l4_free(c, true);
}

static int open_pipe(struct l4_dir *dir)
{
	if (pipe2(dir->pipe, O_NONBLOCK | O_CLOEXEC))
		return -errno;
	fcntl(dir->pipe[1], F_SETPIPE_SZ, L4_PIPE_SIZE);
	return 0;
}

static int l4_setup(struct l4_conn *c, const struct conn_info *ci, const uint8_t *pre, size_t n)
{
	socklen_t alen = ci->orig.ss_family == AF_INET ? sizeof(struct sockaddr_in)
						       : sizeof(struct sockaddr_in6);
	int one = 1, err;

	if ((err = open_pipe(&c->dir[DOWN])) || (err = open_pipe(&c->dir[UP])))
		return err;
	if (n && write(c->dir[DOWN].pipe[1], pre, n) != (ssize_t)n)
		return -EIO;
	c->dir[DOWN].queued = n;
	c->fd[UP] = netns_socket(c->netns, ci->orig.ss_family, SOCK_STREAM);
	if (c->fd[UP] < 0)
		return c->fd[UP];
	setsockopt(c->fd[UP], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd[UP], (const struct sockaddr *)&ci->orig, alen) && errno != EINPROGRESS)
		return -errno;
	c->connecting = true;
	c->connect_timer =
		loop_timer_add(c->ctx->loop, L4_CONNECT_TIMEOUT_MS, on_connect_timeout, c);
	if (!c->connect_timer)
		return -ENOMEM;
	if ((err = loop_add_fd(c->ctx->loop, c->fd[DOWN], 0, on_io, c)))
		return err;
	c->registered[DOWN] = true;
	if ((err = loop_add_fd(c->ctx->loop, c->fd[UP], EPOLLOUT, on_io, c)))
		return err;
	c->registered[UP] = true;
	return 0;
}

int l4_proxy_start(const struct l4_proxy_ctx *ctx, int fd, struct conn_info *ci,
		   const uint8_t *pre, size_t n)
{
	struct l4_conn *c = calloc(1, sizeof(*c));
	int err;

	if (!c) {
		close(fd);
		netns_ref_put(ctx->netns, ci->netns);
		conn_owner_closed(&ctx->owner, ci->pod_key);
		return -ENOMEM;
	}
	*c = (struct l4_conn){.ctx = ctx, .fd = {fd, -1}, .netns = ci->netns, .pod_key = ci->pod_key};
	for (int i = 0; i < 2; i++)
		c->dir[i].pipe[0] = c->dir[i].pipe[1] = -1;
	ci->netns = NULL;
	stats_inc(ctx->stats, ST_L4_CONNS_TOTAL);
	stats_inc(ctx->stats, ST_L4_CONNS_ACTIVE);
	err = l4_setup(c, ci, pre, n);
	if (err) {
		char addr[64];

		stats_inc(ctx->stats, ST_L4_CONNECT_FAILURES);
		log_warn("l4_start_failed dst=%s err=\"%s\"", config_addr_str(&ci->orig, addr, sizeof(addr)),
			 strerror(-err));
		l4_free(c, true);
		return err;
	}
	return 0;
}
