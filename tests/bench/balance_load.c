// SPDX-License-Identifier: Apache-2.0
/*
 * balance_load: an open-loop gRPC-shaped load client for the balance
 * benchmark (tests/bench/balance.py). It sends unary RPCs at a fixed rate
 * over a few HTTP/2 connections (nghttp2), whatever the answers do, and
 * writes one line per RPC: "start_us latency_us status pod", start relative
 * to the "start" line it prints, latency from the scheduled send time (so a
 * stalled connection cannot hide its queue), status the grpc-status (4: the
 * client's own deadline passed and it cancelled; -1: reset or connection
 * lost without a status) and pod the x-pod response header ("-": none).
 * Every RPC in flight is on exactly one list, so none is lost or counted twice.
 *
 *   balance_load --target IP:PORT --rate RPS --duration S --out FILE
 *                [--conns 2] [--deadline-ms 1000] [--payload 10] [--path P]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define MAX_PAYLOAD 16000
#define RECONNECT_NS 100000000ull

struct rpc_list {
	struct rpc *head, *tail;
};

struct rpc {
	uint64_t sched_ns;
	int32_t sid;
	int conn;
	int grpc_status; /* -1: none seen */
	int cancelled;	 /* deadline passed, RST_STREAM sent */
	char pod[32];
	struct rpc_list *list; /* g_waiting (oldest first) or g_cancelled */
	struct rpc *prev, *next;
};

struct conn {
	int fd; /* -1: down */
	int want_out;
	nghttp2_session *h2;
	uint64_t retry_ns;
};

static struct {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char authority[80];
	const char *path;
	double rate;
	double duration;
	int nconns;
	uint64_t deadline_ns;
	size_t payload;
	const char *out;
} g_opt = {.path = "/bench.Echo/Unary", .nconns = 2, .deadline_ns = 1000000000ull, .payload = 10};

static struct conn g_conns[MAX_CONNS];
static struct rpc_list g_waiting, g_cancelled;
static uint64_t g_start_ns;
static FILE *g_out;
static int g_epfd;
static uint8_t g_body[MAX_PAYLOAD + 5];
static size_t g_body_len;
static unsigned long g_sent, g_ok, g_failed, g_inflight;
static char g_grpc_timeout[24];
static nghttp2_session_callbacks *g_cbs;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void list_add(struct rpc_list *l, struct rpc *r)
{
	r->list = l;
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static void list_del(struct rpc *r)
{
	struct rpc_list *l = r->list;

	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	r->prev = r->next = NULL;
	r->list = NULL;
}

static void finish(struct rpc *r, int status)
{
	uint64_t now = now_ns();

	fprintf(g_out, "%llu %llu %d %s\n", (unsigned long long)((r->sched_ns - g_start_ns) / 1000),
		(unsigned long long)((now - r->sched_ns) / 1000), status, r->pod[0] ? r->pod : "-");
	if (status == 0)
		g_ok++;
	else
		g_failed++;
	g_inflight--;
	list_del(r);
	free(r);
}

static ssize_t send_cb(nghttp2_session *h2, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct conn *c = ud;
	ssize_t n;

	(void)h2;
	(void)flags;
	n = send(c->fd, data, len, MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return NGHTTP2_ERR_WOULDBLOCK;
	if (n < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return n;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		     const uint8_t *val, size_t vlen, uint8_t flags, void *ud)
{
	struct rpc *r = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);

	(void)flags;
	(void)ud;
	if (!r)
		return 0;
	if (nlen == 11 && !memcmp(name, "grpc-status", 11))
		r->grpc_status = atoi((const char *)val);
	else if (nlen == 5 && !memcmp(name, "x-pod", 5) && vlen < sizeof(r->pod))
		memcpy(r->pod, val, vlen);
	return 0;
}

static int on_close(nghttp2_session *h2, int32_t sid, uint32_t code, void *ud)
{
	struct rpc *r = nghttp2_session_get_stream_user_data(h2, sid);

	(void)code;
	(void)ud;
	if (!r)
		return 0;
	nghttp2_session_set_stream_user_data(h2, sid, NULL);
	finish(r, r->grpc_status >= 0 ? r->grpc_status : r->cancelled ? 4 : -1);
	return 0;
}

/* Every request body is the same small gRPC message, sent in one DATA frame. */
static ssize_t read_body(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	size_t n = g_body_len < len ? g_body_len : len;

	(void)h2;
	(void)sid;
	(void)src;
	(void)ud;
	memcpy(buf, g_body, n);
	*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

static void finish_conn_rpcs(struct rpc_list *l, int i)
{
	struct rpc *r = l->head, *nx;

	for (; r; r = nx) {
		nx = r->next;
		if (r->conn == i)
			finish(r, r->cancelled ? 4 : -1);
	}
}

static void conn_down(int i)
{
	struct conn *c = &g_conns[i];

	/* nghttp2_session_del() calls no close callbacks: record them here. */
	finish_conn_rpcs(&g_waiting, i);
	finish_conn_rpcs(&g_cancelled, i);
	nghttp2_session_del(c->h2);
	c->h2 = NULL;
	if (c->fd >= 0) {
		epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->want_out = 0;
	c->retry_ns = now_ns() + RECONNECT_NS;
}

/* A blocking connect (redirected by h2split's connect4 like any pod's), then
 * non-blocking I/O. 0 or -errno; on failure, retried after RECONNECT_NS. */
static int conn_up(int i)
{
	struct conn *c = &g_conns[i];
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
	nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
	int one = 1, fd, err;

	c->retry_ns = now_ns() + RECONNECT_NS;
	fd = socket(g_opt.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&g_opt.addr, g_opt.addrlen) ||
	    fcntl(fd, F_SETFL, O_NONBLOCK)) {
		err = -errno;
		close(fd);
		return err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nghttp2_session_client_new(&c->h2, g_cbs, c)) {
		close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
	if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev)) {
		err = -errno;
		conn_down(i);
		return err;
	}
	return 0;
}

/* Send what the session has; wait for EPOLLOUT when the socket is full. */
static void conn_flush(int i)
{
	struct conn *c = &g_conns[i];
	int want;

	if (c->fd < 0)
		return;
	if (nghttp2_session_send(c->h2)) {
		conn_down(i);
		return;
	}
	want = nghttp2_session_want_write(c->h2);
	if (want != c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
					 .data.u32 = (uint32_t)i};

		epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = want;
	}
	if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
		conn_down(i);
}

static void conn_read(int i)
{
	struct conn *c = &g_conns[i];
	uint8_t buf[65536];

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0 || nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0) {
			conn_down(i);
			return;
		}
	}
	conn_flush(i);
}

/* One RPC scheduled at |sched| on connection |i| (or recorded as failed
 * when that connection is down). */
static void submit(int i, uint64_t sched)
{
	struct conn *c = &g_conns[i];
	nghttp2_nv hdrs[] = {
#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, vl, NGHTTP2_NV_FLAG_NONE}
	    NV(":method", "POST", 4),
	    NV(":scheme", "http", 4),
	    NV(":path", g_opt.path, strlen(g_opt.path)),
	    NV(":authority", g_opt.authority, strlen(g_opt.authority)),
	    NV("content-type", "application/grpc", 16),
	    NV("te", "trailers", 8),
	    NV("grpc-timeout", g_grpc_timeout, strlen(g_grpc_timeout)),
#undef NV
	};
	nghttp2_data_provider dp = {.read_callback = read_body};
	struct rpc *r = calloc(1, sizeof(*r));
	int32_t sid;

	if (!r) {
		fprintf(stderr, "balance_load: out of memory\n");
		exit(1);
	}
	r->sched_ns = sched;
	r->conn = i;
	r->grpc_status = -1;
	g_sent++;
	g_inflight++;
	list_add(&g_waiting, r);
	if (c->fd < 0) {
		finish(r, -1);
		return;
	}
	sid = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &dp, r);
	if (sid < 0)
		finish(r, -1);
	else
		r->sid = sid;
}

/* Cancel what is past its deadline: RST_STREAM CANCEL, recorded when the
 * stream closes (status 4). The waiting list is in schedule order. */
static void expire(uint64_t now)
{
	while (g_waiting.head && g_waiting.head->sched_ns + g_opt.deadline_ns <= now) {
		struct rpc *r = g_waiting.head;
		int i = r->conn;

		list_del(r);
		list_add(&g_cancelled, r);
		r->cancelled = 1;
		nghttp2_submit_rst_stream(g_conns[i].h2, NGHTTP2_FLAG_NONE, r->sid, NGHTTP2_CANCEL);
		conn_flush(i);
	}
}

static void finish_all(struct rpc_list *l)
{
	while (l->head) {
		struct rpc *r = l->head;

		if (g_conns[r->conn].h2)
			nghttp2_session_set_stream_user_data(g_conns[r->conn].h2, r->sid, NULL);
		finish(r, r->cancelled ? 4 : -1);
	}
}

static int parse_target(const char *t)
{
	char host[64];
	const char *colon = strrchr(t, ':');
	struct sockaddr_in *a4 = (struct sockaddr_in *)&g_opt.addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&g_opt.addr;
	int port;

	if (!colon || (size_t)(colon - t) >= sizeof(host))
		return -EINVAL;
	memcpy(host, t, (size_t)(colon - t));
	host[colon - t] = 0;
	port = atoi(colon + 1);
	if (port < 1 || port > 65535)
		return -EINVAL;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = 0;
	}
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		g_opt.addrlen = sizeof(*a4);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		g_opt.addrlen = sizeof(*a6);
	} else {
		return -EINVAL;
	}
	snprintf(g_opt.authority, sizeof(g_opt.authority), "%s", t);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: balance_load --target IP:PORT --rate RPS --duration S --out FILE"
		" [--conns 1-%d] [--deadline-ms MS] [--payload 0-%d] [--path PATH]\n",
		MAX_CONNS, MAX_PAYLOAD);
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	int have_target = 0;

	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		if (!strcmp(a, "--target")) {
			if (parse_target(v))
				usage();
			have_target = 1;
		} else if (!strcmp(a, "--rate")) {
			g_opt.rate = atof(v);
		} else if (!strcmp(a, "--duration")) {
			g_opt.duration = atof(v);
		} else if (!strcmp(a, "--out")) {
			g_opt.out = v;
		} else if (!strcmp(a, "--conns")) {
			g_opt.nconns = atoi(v);
		} else if (!strcmp(a, "--deadline-ms")) {
			g_opt.deadline_ns = (uint64_t)atol(v) * 1000000ull;
		} else if (!strcmp(a, "--payload")) {
			g_opt.payload = (size_t)atol(v);
		} else if (!strcmp(a, "--path")) {
			g_opt.path = v;
		} else {
			usage();
		}
	}
	if (!have_target || !g_opt.out || g_opt.rate <= 0 || g_opt.rate > 1e6 ||
	    g_opt.duration <= 0 || g_opt.nconns < 1 || g_opt.nconns > MAX_CONNS ||
	    !g_opt.deadline_ns || g_opt.payload > MAX_PAYLOAD)
		usage();
}

/* The epoll timeout: until the next send or the oldest deadline. */
static struct timespec *timeout(uint64_t now, uint64_t next, struct timespec *ts)
{
	uint64_t t = next;

	if (g_waiting.head && g_waiting.head->sched_ns + g_opt.deadline_ns < t)
		t = g_waiting.head->sched_ns + g_opt.deadline_ns;
	for (int i = 0; i < g_opt.nconns; i++)
		if (g_conns[i].fd < 0 && g_conns[i].retry_ns < t)
			t = g_conns[i].retry_ns;
	if (t == UINT64_MAX)
		return NULL;
	t = t > now ? t - now : 0;
	ts->tv_sec = (time_t)(t / 1000000000ull);
	ts->tv_nsec = (long)(t % 1000000000ull);
	return ts;
}

int main(int argc, char **argv)
{
	uint64_t interval, next, end, drain_end, now;
	struct epoll_event evs[MAX_CONNS];
	struct timespec ts;
	int rr = 0, err;

	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	g_out = fopen(g_opt.out, "w");
	if (!g_out) {
		fprintf(stderr, "balance_load: %s: %s\n", g_opt.out, strerror(errno));
		return 1;
	}
	setvbuf(g_out, NULL, _IOFBF, 1 << 20);
	g_body_len = g_opt.payload + 5;
	g_body[1] = (uint8_t)(g_opt.payload >> 24);
	g_body[2] = (uint8_t)(g_opt.payload >> 16);
	g_body[3] = (uint8_t)(g_opt.payload >> 8);
	g_body[4] = (uint8_t)g_opt.payload;
	snprintf(g_grpc_timeout, sizeof(g_grpc_timeout), "%lum",
		 (unsigned long)(g_opt.deadline_ns / 1000000));
	nghttp2_session_callbacks_new(&g_cbs);
	nghttp2_session_callbacks_set_send_callback(g_cbs, send_cb);
	nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_close);
	g_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (g_epfd < 0)
		return 1;
	for (int i = 0; i < g_opt.nconns; i++) {
		g_conns[i].fd = -1;
		err = conn_up(i);
		if (err) {
			fprintf(stderr, "balance_load: connect %s: %s\n", g_opt.authority,
				strerror(-err));
			return 1;
		}
		conn_flush(i);
	}
	interval = (uint64_t)(1e9 / g_opt.rate);
	g_start_ns = next = now_ns();
	end = g_start_ns + (uint64_t)(g_opt.duration * 1e9);
	drain_end = end + g_opt.deadline_ns + 1000000000ull;
	printf("start %llu\n", (unsigned long long)g_start_ns);
	fflush(stdout);
	for (;;) {
		int n;

		now = now_ns();
		while (next <= now && next < end) {
			int i = rr++ % g_opt.nconns;

			submit(i, next);
			conn_flush(i);
			next += interval;
		}
		if (next >= end)
			next = UINT64_MAX;
		expire(now);
		for (int i = 0; i < g_opt.nconns; i++)
			if (g_conns[i].fd < 0 && g_conns[i].retry_ns <= now && next != UINT64_MAX &&
			    !conn_up(i))
				conn_flush(i);
		if (next == UINT64_MAX && (!g_inflight || now >= drain_end))
			break;
		n = epoll_pwait2(g_epfd, evs, MAX_CONNS,
				 timeout(now, next == UINT64_MAX ? drain_end : next, &ts), NULL);
		if (n < 0 && errno != EINTR) {
			perror("balance_load: epoll_pwait2");
			return 1;
		}
		for (int k = 0; k < n; k++) {
			int i = (int)evs[k].data.u32;

			if (g_conns[i].fd < 0)
				continue;
			if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_read(i);
			else
				conn_flush(i);
		}
	}
	finish_all(&g_waiting);
	finish_all(&g_cancelled);
	if (fclose(g_out)) {
		fprintf(stderr, "balance_load: %s: %s\n", g_opt.out, strerror(errno));
		return 1;
	}
	printf("done sent %lu ok %lu failed %lu\n", g_sent, g_ok, g_failed);
	return 0;
}
