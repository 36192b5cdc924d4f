// SPDX-License-Identifier: Apache-2.0
/*
 * grpc_backend: a fast gRPC-shaped h2c server for the benchmarks, so the
 * backend pods are never what is measured. Every POST is answered with
 * :status 200, content-type application/grpc, one gRPC message (5-byte
 * prefix + payload, by default as long as the request's) and trailers
 * grpc-status 0. GET /stats answers "requests N bytes_in N conns N\n" (totals
 * since start; conns counts accepted connections).
 * One epoll loop per thread, each on its own SO_REUSEPORT listener; all
 * frames a pass produces go out in one send() per connection.
 * --delay-ms holds every gRPC answer that long (FIFO per connection), so a
 * benchmark can keep many streams open through a proxy at once.
 *
 *   grpc_backend [--port 50051] [--threads 1] [--response-size -1]
 *                [--max-streams 1024] [--window 1048576] [--delay-ms 0]
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
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OUT_CAP (256 * 1024)
#define OUT_HIGH (64 * 1024)
#define IN_CHUNK (64 * 1024)
#define MAX_MSG (16 * 1024 * 1024)

struct opts {
	int port;
	int threads;
	long response_size; /* < 0: echo the request message's length */
	uint32_t max_streams;
	uint32_t window;
	long delay_ms;
};

static struct opts g_opt = {50051, 1, -1, 1024, 1 << 20, 0};
static atomic_ulong g_requests;
static atomic_ulong g_bytes_in;
static atomic_ulong g_conns;
static uint8_t g_zeros[65536];

/* One request/response. Owned by nghttp2 stream user data; freed on close. */
struct stream {
	int32_t id;
	int is_stats;
	size_t body_len;  /* request body bytes received */
	size_t resp_len;  /* bytes of the DATA payload to send (prefix included) */
	size_t resp_off;
	char stats[96];
	uint64_t due_ms;      /* --delay-ms: answer at this time */
	struct stream *qnext; /* on its connection's delay queue */
	int queued, gone;     /* gone: closed while queued; the queue frees it */
};

struct conn {
	int fd;
	int epfd;
	int want_out; /* EPOLLOUT registered */
	nghttp2_session *h2;
	uint8_t *out;
	size_t out_len, out_off;
	struct stream *qhead, *qtail; /* answers held by --delay-ms, oldest first */
	struct conn *dnext, *dprev;   /* on the thread's list of conns with a queue */
	int on_dlist;
};

/* This thread's connections with held answers. */
static __thread struct conn *t_dlist;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
	fprintf(stderr, "grpc_backend: %s: %s\n", what, strerror(errno));
	exit(1);
}

static ssize_t read_body(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct stream *st = src->ptr;
	size_t left = st->resp_len - st->resp_off, n = left < len ? left : len;
	(void)h2;
	(void)sid;
	(void)ud;
	if (st->is_stats) {
		memcpy(buf, st->stats + st->resp_off, n);
	} else {
		size_t done = 0;
		while (done < n) {
			size_t k = n - done < sizeof(g_zeros) ? n - done : sizeof(g_zeros);
			memcpy(buf + done, g_zeros, k);
			done += k;
		}
		/* The gRPC prefix: not compressed, big-endian message length. */
		for (size_t i = st->resp_off; i < 5 && i < st->resp_off + n; i++) {
			uint32_t mlen = (uint32_t)(st->resp_len - 5);
			uint8_t pfx[5] = {0, mlen >> 24, mlen >> 16, mlen >> 8, mlen};
			buf[i - st->resp_off] = pfx[i];
		}
	}
	st->resp_off += n;
	if (st->resp_off == st->resp_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (!st->is_stats) {
			static const nghttp2_nv tr[] = {
				{(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1,
				 NGHTTP2_NV_FLAG_NONE}};
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			nghttp2_submit_trailer(h2, st->id, tr, 1);
		}
	}
	return (ssize_t)n;
}

static int respond(nghttp2_session *h2, struct stream *st)
{
	static const nghttp2_nv grpc_hdrs[] = {
		{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
		 NGHTTP2_NV_FLAG_NONE}};
	static const nghttp2_nv text_hdrs[] = {
		{(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
		{(uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10,
		 NGHTTP2_NV_FLAG_NONE}};
	nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};

	if (st->is_stats) {
		int n = snprintf(st->stats, sizeof(st->stats),
				 "requests %lu bytes_in %lu conns %lu\n", atomic_load(&g_requests),
				 atomic_load(&g_bytes_in), atomic_load(&g_conns));
		st->resp_len = (size_t)n;
		return nghttp2_submit_response(h2, st->id, text_hdrs, 2, &dp);
	}
	atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&g_bytes_in, st->body_len, memory_order_relaxed);
	if (g_opt.response_size >= 0)
		st->resp_len = (size_t)g_opt.response_size + 5;
	else
		st->resp_len = st->body_len >= 5 ? st->body_len : 5;
	return nghttp2_submit_response(h2, st->id, grpc_hdrs, 2, &dp);
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
	struct stream *st;
	(void)ud;
	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = calloc(1, sizeof(*st));
	if (!st)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	st->id = f->hd.stream_id;
	nghttp2_session_set_stream_user_data(h2, st->id, st);
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t nlen, const uint8_t *val, size_t vlen, uint8_t flags, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	(void)flags;
	(void)ud;
	if (st && nlen == 5 && !memcmp(name, ":path", 5) && vlen == 6 && !memcmp(val, "/stats", 6))
		st->is_stats = 1;
	return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data,
			 size_t len, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(h2, sid);
	(void)flags;
	(void)data;
	(void)ud;
	if (st && st->body_len + len <= MAX_MSG)
		st->body_len += len;
	return 0;
}

static void dlist_del(struct conn *c)
{
	if (!c->on_dlist)
		return;
	if (c->dprev)
		c->dprev->dnext = c->dnext;
	else
		t_dlist = c->dnext;
	if (c->dnext)
		c->dnext->dprev = c->dprev;
	c->dnext = c->dprev = NULL;
	c->on_dlist = 0;
}

/* Answer |st| in --delay-ms. */
static void hold(struct conn *c, struct stream *st)
{
	st->due_ms = now_ms() + (uint64_t)g_opt.delay_ms;
	st->queued = 1;
	if (c->qtail)
		c->qtail->qnext = st;
	else
		c->qhead = st;
	c->qtail = st;
	if (!c->on_dlist) {
		c->dnext = t_dlist;
		if (t_dlist)
			t_dlist->dprev = c;
		t_dlist = c;
		c->on_dlist = 1;
	}
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
	struct stream *st;
	if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	if (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS)
		return 0;
	st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (!st)
		return 0;
	if (g_opt.delay_ms > 0 && !st->is_stats) {
		hold(ud, st);
		return 0;
	}
	if (respond(h2, st))
		nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t sid, uint32_t code, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(h2, sid);
	(void)code;
	(void)ud;
	if (st) {
		nghttp2_session_set_stream_user_data(h2, sid, NULL);
		if (st->queued)
			st->gone = 1;
		else
			free(st);
	}
	return 0;
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_h2opt;

static void conn_free(struct conn *c)
{
	dlist_del(c);
	while (c->qhead) {
		struct stream *st = c->qhead;

		c->qhead = st->qnext;
		free(st);
	}
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	nghttp2_session_del(c->h2);
	free(c->out);
	free(c);
}

/* Serialize pending frames into the out buffer and send; 0, or -1 to close. */
static int conn_flush(struct conn *c)
{
	for (;;) {
		while (c->out_len < OUT_HIGH) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->h2, &data);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
			if (c->out_len + (size_t)n > OUT_CAP) {
				uint8_t *nb = realloc(c->out, c->out_len + (size_t)n);
				if (!nb)
					return -1;
				c->out = nb;
			}
			memcpy(c->out + c->out_len, data, (size_t)n);
			c->out_len += (size_t)n;
		}
		if (c->out_off == c->out_len)
			break;
		while (c->out_off < c->out_len) {
			ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
					 MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				goto blocked;
			if (w < 0)
				return -1;
			c->out_off += (size_t)w;
		}
		c->out_off = c->out_len = 0;
		if (!nghttp2_session_want_write(c->h2))
			break;
	}
	if (c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = 0;
	}
	if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
		return -1;
	return 0;
blocked:
	if (!c->want_out) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
		epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = 1;
	}
	return 0;
}

static int conn_read(struct conn *c, uint8_t *buf)
{
	for (;;) {
		ssize_t n = recv(c->fd, buf, IN_CHUNK, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -1;
		if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0)
			return -1;
		if (n < IN_CHUNK)
			return 0;
	}
}

static void conn_new(int epfd, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, g_opt.max_streams},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, g_opt.window},
	};
	struct epoll_event ev = {.events = EPOLLIN};
	int one = 1;

	if (!c || !(c->out = malloc(OUT_CAP))) {
		free(c);
		close(fd);
		return;
	}
	atomic_fetch_add_explicit(&g_conns, 1, memory_order_relaxed);
	c->fd = fd;
	c->epfd = epfd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nghttp2_session_server_new2(&c->h2, g_cbs, c, g_h2opt)) {
		free(c->out);
		free(c);
		close(fd);
		return;
	}
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2);
	nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) || conn_flush(c))
		conn_free(c);
}

static int open_listener(void)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(g_opt.port),
				 .sin6_addr = IN6ADDR_ANY_INIT};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1, zero = 0;

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
		die("bind");
	if (listen(fd, 4096))
		die("listen");
	return fd;
}

/* Submit the held answers that are due; the epoll timeout until the next. */
static int run_due(void)
{
	uint64_t now = now_ms(), next = UINT64_MAX;
	struct conn *c, *cnext;

	for (c = t_dlist; c; c = cnext) {
		int sent = 0;

		cnext = c->dnext;
		while (c->qhead && c->qhead->due_ms <= now) {
			struct stream *st = c->qhead;

			c->qhead = st->qnext;
			if (!c->qhead)
				c->qtail = NULL;
			st->queued = 0;
			if (st->gone) {
				free(st);
				continue;
			}
			if (respond(c->h2, st))
				nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id,
							  NGHTTP2_INTERNAL_ERROR);
			sent = 1;
		}
		if (c->qhead && c->qhead->due_ms < next)
			next = c->qhead->due_ms;
		if (!c->qhead)
			dlist_del(c);
		if (sent && conn_flush(c))
			conn_free(c);
	}
	return next == UINT64_MAX ? -1 : (int)(next - now);
}

static void *worker(void *arg)
{
	int lfd = (int)(intptr_t)arg, epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
	uint8_t *buf = malloc(IN_CHUNK);

	if (epfd < 0 || !buf)
		die("epoll_create1");
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev))
		die("epoll_ctl listener");
	for (;;) {
		int n = epoll_wait(epfd, evs, 256, run_due());
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				int fd;
				while ((fd = accept4(lfd, NULL, NULL,
						     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
					conn_new(epfd, fd);
				continue;
			}
			if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && conn_read(c, buf)) {
				conn_free(c);
				continue;
			}
			if (conn_flush(c))
				conn_free(c);
		}
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: grpc_backend [--port P] [--threads N] [--response-size BYTES]"
			" [--max-streams N] [--window BYTES] [--delay-ms MS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	pthread_t t;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		if (!strcmp(a, "--port"))
			g_opt.port = atoi(v);
		else if (!strcmp(a, "--threads"))
			g_opt.threads = atoi(v);
		else if (!strcmp(a, "--response-size"))
			g_opt.response_size = atol(v);
		else if (!strcmp(a, "--max-streams"))
			g_opt.max_streams = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--window"))
			g_opt.window = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--delay-ms"))
			g_opt.delay_ms = atol(v);
		else
			usage();
		i++;
	}
	if (g_opt.threads < 1 || g_opt.port < 1 || g_opt.response_size > MAX_MSG ||
	    g_opt.delay_ms < 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	nghttp2_session_callbacks_new(&g_cbs);
	nghttp2_session_callbacks_set_on_begin_headers_callback(g_cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_stream_close);
	nghttp2_option_new(&g_h2opt);
	nghttp2_option_set_no_http_messaging(g_h2opt, 0);
	for (int i = 1; i < g_opt.threads; i++)
		if (pthread_create(&t, NULL, worker, (void *)(intptr_t)open_listener()))
			die("pthread_create");
	printf("ready port=%d threads=%d\n", g_opt.port, g_opt.threads);
	fflush(stdout);
	worker((void *)(intptr_t)open_listener());
	return 0;
}
