// SPDX-License-Identifier: Apache-2.0
/*
 * conn_rate: new HTTP/2 connections per second through a proxy, for the
 * new-connection benchmark. Keeps K connections in progress (epoll,
 * nonblocking); each one connects, sends the client preface + SETTINGS and
 * one gRPC unary request (nghttp2 client session), reads until the
 * response's END_STREAM (:status 200, grpc-status 0), closes, and a new one
 * starts in its place. Prints one JSON line: completed, failed (by reason),
 * conns/s and percentiles of the connect-to-close time.
 *
 *   conn_rate [-c K] [-D SECONDS] [-w WARMUP] [-n COUNT] [-b PAYLOAD] [-t TIMEOUT] [-L] URL
 *
 * -n starts COUNT connections in all and ends when the last is over (or at
 * -D): a fixed workload for profiles, all of it counted (no warm-up).
 * -L closes with SO_LINGER 0 (a reset, no TIME_WAIT on the client side).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum fail_reason { F_CONNECT, F_IO, F_H2, F_STATUS, F_GRPC, F_TIMEOUT, F_MAX };
static const char *const fail_names[F_MAX] = {"connect", "io",		"h2",
					      "status",	 "grpc_status", "timeout"};

struct conn {
	int fd;
	bool connected, done, ok, want_in_only;
	uint8_t *out; /* owned: bytes the socket has not taken yet */
	size_t out_len, out_off, out_cap;
	int status, grpc_status;
	int32_t stream_id;
	size_t body_off;
	uint64_t start_ns;
	nghttp2_session *session;
	struct conn *prev, *next; /* in-progress list, oldest first (timeouts) */
};

static struct {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char authority[300], path[512];
	uint8_t *body;
	size_t body_len;
	bool linger0;
	uint64_t timeout_ns;
	int epfd;
	nghttp2_session_callbacks *cbs;
	struct conn *head, *tail;
	long active;
	uint64_t *lat; /* connect-to-close ns of every counted connection */
	long n_lat, cap_lat;
	long failed[F_MAX];
	long all_completed;  /* warm-up and the window: what the proxy's CPU time covers */
	long started, limit; /* connections opened; -n (0: no limit) */
	bool counting;
} g;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "conn_rate: %s\n", what);
	exit(2);
}

static int parse_url(const char *url)
{
	const char *p = url, *hostport, *slash;
	char host[256], port[16];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
	size_t hl;

	if (strncmp(p, "http://", 7))
		return -1;
	hostport = p + 7;
	slash = strchr(hostport, '/');
	snprintf(g.path, sizeof(g.path), "%s", slash ? slash : "/");
	hl = slash ? (size_t)(slash - hostport) : strlen(hostport);
	if (hl == 0 || hl >= sizeof(g.authority))
		return -1;
	memcpy(g.authority, hostport, hl);
	g.authority[hl] = 0;
	if (g.authority[0] == '[') {
		const char *e = strchr(g.authority, ']');

		if (!e || e[1] != ':')
			return -1;
		snprintf(host, sizeof(host), "%.*s", (int)(e - g.authority - 1), g.authority + 1);
		snprintf(port, sizeof(port), "%s", e + 2);
	} else {
		const char *c = strrchr(g.authority, ':');

		if (!c)
			return -1;
		snprintf(host, sizeof(host), "%.*s", (int)(c - g.authority), g.authority);
		snprintf(port, sizeof(port), "%s", c + 1);
	}
	if (getaddrinfo(host, port, &hints, &ai))
		return -1;
	memcpy(&g.addr, ai->ai_addr, ai->ai_addrlen);
	g.addr_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static void record(uint64_t ns)
{
	if (g.n_lat == g.cap_lat) {
		g.cap_lat = g.cap_lat ? g.cap_lat * 2 : 1 << 16;
		g.lat = realloc(g.lat, (size_t)g.cap_lat * sizeof(*g.lat));
		if (!g.lat)
			die("out of memory");
	}
	g.lat[g.n_lat++] = ns;
}

/* Close |c| and count it: |reason| < 0 is a success. Only connections that
 * end inside the measured window count. */
static void finish(struct conn *c, int reason)
{
	uint64_t now = now_ns();

	if (g.linger0) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(c->fd);
	nghttp2_session_del(c->session);
	free(c->out);
	if (reason < 0)
		g.all_completed++;
	if (g.counting) {
		if (reason < 0)
			record(now - c->start_ns);
		else
			g.failed[reason]++;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		g.head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		g.tail = c->prev;
	g.active--;
	free(c);
}

/* Everything the session has to send, in one send() (the preface, SETTINGS,
 * HEADERS and DATA of a new connection go out together, as gRPC clients
 * write them); what the socket does not take waits in c->out for EPOLLOUT.
 * 0, or -1 on a failed session or socket. */
static int flush_out(struct conn *c)
{
	const uint8_t *data;
	ssize_t n;

	for (;;) {
		n = nghttp2_session_mem_send(c->session, &data);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		if (c->out_len + (size_t)n > c->out_cap) {
			size_t cap = (c->out_len + (size_t)n) * 2;
			uint8_t *p = realloc(c->out, cap);

			if (!p)
				die("out of memory");
			c->out = p;
			c->out_cap = cap;
		}
		memcpy(c->out + c->out_len, data, (size_t)n);
		c->out_len += (size_t)n;
	}
	while (c->out_off < c->out_len) {
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct conn *c = ud;
	char v[16];

	(void)s;
	(void)flags;
	if (f->hd.stream_id != c->stream_id || valuelen >= sizeof(v))
		return 0;
	memcpy(v, value, valuelen);
	v[valuelen] = 0;
	if (namelen == 7 && !memcmp(name, ":status", 7))
		c->status = atoi(v);
	else if (namelen == 11 && !memcmp(name, "grpc-status", 11))
		c->grpc_status = atoi(v);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
	struct conn *c = ud;

	(void)s;
	if (id == c->stream_id) {
		c->done = true;
		c->ok = code == NGHTTP2_NO_ERROR;
	}
	return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
			 nghttp2_data_source *src, void *ud)
{
	struct conn *c = ud;
	size_t n = g.body_len - c->body_off;

	(void)s;
	(void)id;
	(void)src;
	if (n > len)
		n = len;
	memcpy(buf, g.body + c->body_off, n);
	c->body_off += n;
	if (c->body_off == g.body_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

#define HDR(n, v)                                                                                  \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

static int start_session(struct conn *c)
{
	nghttp2_nv hdrs[] = {
	    HDR(":method", "POST"),
	    HDR(":scheme", "http"),
	    HDR(":path", g.path),
	    HDR(":authority", g.authority),
	    HDR("content-type", "application/grpc"),
	    HDR("te", "trailers"),
	};
	nghttp2_data_provider dp = {.read_callback = body_read};

	if (nghttp2_session_client_new(&c->session, g.cbs, c))
		return -1;
	if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, NULL, 0))
		return -1;
	c->stream_id = nghttp2_submit_request(c->session, NULL, hdrs,
					      sizeof(hdrs) / sizeof(hdrs[0]), &dp, NULL);
	return c->stream_id > 0 ? 0 : -1;
}

static int open_one(void)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT};
	int one = 1;

	if (!c)
		die("out of memory");
	g.started++;
	c->start_ns = now_ns();
	c->status = c->grpc_status = -1;
	c->fd = socket(g.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die("socket failed (out of fds?)");
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->prev = g.tail;
	if (g.tail)
		g.tail->next = c;
	else
		g.head = c;
	g.tail = c;
	g.active++;
	if (start_session(c))
		die("nghttp2 session setup failed");
	if (connect(c->fd, (struct sockaddr *)&g.addr, g.addr_len) && errno != EINPROGRESS) {
		finish(c, F_CONNECT);
		return -1;
	}
	ev.data.ptr = c;
	if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev))
		die("epoll_ctl failed");
	return 0;
}

/* One readiness event on |c|; finishes it when its RPC is over or failed. */
static void on_event(struct conn *c, uint32_t events)
{
	uint8_t buf[16384];

	if (!c->connected) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) || err) {
			finish(c, F_CONNECT);
			return;
		}
		c->connected = true;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

			if (n < 0 && errno == EAGAIN)
				break;
			if (n <= 0) {
				finish(c, F_IO);
				return;
			}
			if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) {
				finish(c, F_H2);
				return;
			}
			if (c->done)
				break;
		}
	}
	if (c->done) {
		finish(c, !c->ok	     ? F_H2
			  : c->status != 200 ? F_STATUS
			  : c->grpc_status   ? F_GRPC
					     : -1);
		return;
	}
	if (flush_out(c)) {
		finish(c, F_IO);
		return;
	}
	if ((c->out_len == 0) != c->want_in_only) { /* EPOLLOUT only while bytes wait */
		struct epoll_event ev = {.events = c->out_len ? EPOLLIN | EPOLLOUT : EPOLLIN,
					 .data.ptr = c};

		c->want_in_only = c->out_len == 0;
		epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(double p)
{
	long i;

	if (!g.n_lat)
		return 0;
	i = (long)(p / 100.0 * (double)(g.n_lat - 1) + 0.5);
	return (double)g.lat[i] / 1e3;
}

static void usage(void)
{
	fprintf(stderr, "usage: conn_rate [-c K] [-D SECONDS] [-w WARMUP] [-b PAYLOAD] "
			"[-n COUNT] [-t TIMEOUT] [-L] http://HOST:PORT/PATH\n");
	exit(2);
}

int main(int argc, char **argv)
{
	double dur = 5, warm = 0.5, tmo = 10;
	long k = 16, payload = 10, total_failed = 0;
	struct epoll_event evs[256];
	struct rlimit rl;
	uint64_t t0, t_count, t_end;
	int opt;

	while ((opt = getopt(argc, argv, "c:D:w:n:b:t:L")) != -1) {
		switch (opt) {
		case 'c':
			k = atol(optarg);
			break;
		case 'D':
			dur = atof(optarg);
			break;
		case 'w':
			warm = atof(optarg);
			break;
		case 'n':
			g.limit = atol(optarg);
			break;
		case 'b':
			payload = atol(optarg);
			break;
		case 't':
			tmo = atof(optarg);
			break;
		case 'L':
			g.linger0 = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1 || k < 1 || k > 100000 || dur <= 0 || warm < 0 || payload < 0 ||
	    payload > (1 << 24) || tmo <= 0 || g.limit < 0)
		usage();
	if (parse_url(argv[optind]))
		die("bad URL: want http://HOST:PORT/PATH with a numeric or resolvable host");
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	g.body_len = 5 + (size_t)payload;
	g.body = malloc(g.body_len);
	if (!g.body)
		die("out of memory");
	g.body[0] = 0;
	g.body[1] = (uint8_t)(payload >> 24);
	g.body[2] = (uint8_t)(payload >> 16);
	g.body[3] = (uint8_t)(payload >> 8);
	g.body[4] = (uint8_t)payload;
	memset(g.body + 5, 'x', (size_t)payload);
	g.timeout_ns = (uint64_t)(tmo * 1e9);
	if (g.limit)
		warm = 0;
	g.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (g.epfd < 0 || nghttp2_session_callbacks_new(&g.cbs))
		die("setup failed");
	nghttp2_session_callbacks_set_on_header_callback(g.cbs, on_header);
	nghttp2_session_callbacks_set_on_stream_close_callback(g.cbs, on_stream_close);

	t0 = now_ns();
	t_count = t0 + (uint64_t)(warm * 1e9);
	t_end = t_count + (uint64_t)(dur * 1e9);
	for (;;) {
		uint64_t now = now_ns();
		int n;

		if (now >= t_end || (g.limit && g.started == g.limit && !g.active))
			break;
		if (!g.counting && now >= t_count)
			g.counting = true;
		while (g.active < k && (!g.limit || g.started < g.limit))
			open_one();
		while (g.head && now > g.head->start_ns + g.timeout_ns)
			finish(g.head, F_TIMEOUT);
		n = epoll_wait(g.epfd, evs, 256, 50);
		for (int i = 0; i < n; i++)
			on_event(evs[i].data.ptr, evs[i].events);
	}
	while (g.head) { /* cut off by the end of the window: not counted */
		g.counting = false;
		finish(g.head, F_IO);
	}
	qsort(g.lat, (size_t)g.n_lat, sizeof(*g.lat), cmp_u64);
	if (g.limit) /* the run ended with its last connection, not at -D */
		dur = (double)(now_ns() - t_count) / 1e9;
	printf("{\"concurrency\": %ld, \"duration_s\": %.3f, \"payload\": %ld, \"completed\": %ld, "
	       "\"conns_s\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
	       "\"max_us\": %.1f, \"failed_by\": {",
	       k, dur, payload, g.n_lat, (double)g.n_lat / dur, pct_us(50), pct_us(90), pct_us(99),
	       pct_us(100));
	for (int r = 0; r < F_MAX; r++) {
		total_failed += g.failed[r];
		printf("%s\"%s\": %ld", r ? ", " : "", fail_names[r], g.failed[r]);
	}
	printf("}, \"failed\": %ld, \"all_completed\": %ld}\n", total_failed, g.all_completed);
	return 0;
}
