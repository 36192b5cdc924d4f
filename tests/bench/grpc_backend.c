// SPDX-License-Identifier: Apache-2.0
/*
 * grpc_backend: a fast gRPC-shaped h2c server for the benchmarks, so the
 * backend pods are never what is measured. Every POST is answered with
 * :status 200, content-type application/grpc, one gRPC message (5-byte
 * prefix + payload, by default as long as the request's) and trailers
 * grpc-status 0. GET /stats answers "requests N bytes_in N conns N arrived N\n"
 * (totals since start; requests counts answered RPCs, arrived complete ones
 * in, still held by a delay or not; conns counts accepted connections).
 * One epoll loop per thread, each on its own SO_REUSEPORT listener; all
 * frames a pass produces go out in one send() per connection.
 *
 * For the balance benchmark (tests/bench/balance.py) it can also behave
 * badly, switchable at run time: answer after a delay (timers on the same
 * loop, no thread per request), fail a share of RPCs at once with
 * UNAVAILABLE (Trailers-Only), be slower while "cold" after the first RPC,
 * and name its pod in an x-pod response header. GET
 * /control?delay_us=N&fail_pct=N&cold_ms=N&cold_factor=N changes any of
 * them (and restarts the cold period) and answers the current settings
 * (400 and the offending parameter when one is unknown or out of range).
 *
 *   grpc_backend [--port 50051] [--threads 1] [--response-size -1]
 *                [--max-streams 1024] [--window 1048576] [--pod NAME]
 *                [--delay-us 0] [--fail-pct 0] [--cold-ms 0 --cold-factor 1]
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
	const char *pod; /* x-pod response header; NULL: none */
};

static struct opts g_opt = {50051, 1, -1, 1024, 1 << 20, NULL};

/* Behaviour, changed at run time by GET /control. */
static atomic_long g_delay_us;
static atomic_int g_fail_pct;
static atomic_long g_cold_ms;
static atomic_int g_cold_factor = 1;
static atomic_ullong g_cold_start_ns; /* first RPC since the last change; 0: none yet */
static atomic_ulong g_requests;	      /* answered */
static atomic_ulong g_arrived;	      /* complete requests in, answered or still held */
static atomic_ulong g_bytes_in;
static atomic_ulong g_conns;
static uint8_t g_zeros[65536];

/* One request/response. Owned by nghttp2 stream user data; freed on close. */
struct stream {
	int32_t id;
	int is_stats; /* a text answer: /stats or /control */
	int is_control;
	char query[128];
	size_t body_len; /* request body bytes received */
	size_t resp_len; /* bytes of the DATA payload to send (prefix included) */
	size_t resp_off;
	char stats[128];
};

/* A delayed answer: the stream is looked up again when it is due (it may
 * have been reset meanwhile). */
struct pending {
	int32_t sid;
	uint64_t due_ns;
	struct pending *next;
};

struct conn {
	int fd;
	int epfd;
	int want_out; /* EPOLLOUT registered */
	nghttp2_session *h2;
	uint8_t *out;
	size_t out_len, out_off;
	struct pending *pending;  /* owned; unordered */
	struct conn *prev, *next; /* the worker's list of connections */
	struct conn **head;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t rand_pct(void)
{
	static _Thread_local uint64_t x;

	if (!x)
		x = now_ns() | 1;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 33) % 100;
}

/* The delay for an RPC arriving now: the base delay, times a factor that
 * falls linearly from cold_factor to 1 over cold_ms after the first RPC. */
static uint64_t delay_ns(uint64_t now)
{
	uint64_t base = (uint64_t)atomic_load(&g_delay_us) * 1000, start, cold, age;
	unsigned long long zero = 0;
	int factor = atomic_load(&g_cold_factor);

	cold = (uint64_t)atomic_load(&g_cold_ms) * 1000000;
	if (!cold || factor <= 1)
		return base;
	atomic_compare_exchange_strong(&g_cold_start_ns, &zero, now);
	start = atomic_load(&g_cold_start_ns);
	age = now > start ? now - start : 0;
	if (age >= cold)
		return base;
	return base + (uint64_t)((double)base * (factor - 1) * (double)(cold - age) / (double)cold);
}

/* Apply /control's query; NULL, or the first parameter that is unknown or
 * out of range (those before it are applied). */
static const char *control(struct stream *st)
{
	char *save = NULL, *kv, *end;
	long v;

	atomic_store(&g_cold_start_ns, 0);
	for (kv = strtok_r(st->query, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');

		if (!eq)
			return kv;
		*eq = 0;
		errno = 0;
		v = strtol(eq + 1, &end, 10);
		if (errno || *end || end == eq + 1 || v < 0)
			return kv;
		if (!strcmp(kv, "delay_us") && v <= 10000000)
			atomic_store(&g_delay_us, v);
		else if (!strcmp(kv, "fail_pct") && v <= 100)
			atomic_store(&g_fail_pct, (int)v);
		else if (!strcmp(kv, "cold_ms") && v <= 3600000)
			atomic_store(&g_cold_ms, v);
		else if (!strcmp(kv, "cold_factor") && v >= 1 && v <= 1000)
			atomic_store(&g_cold_factor, (int)v);
		else
			return kv;
	}
	return NULL;
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
			static const nghttp2_nv tr[] = {{(uint8_t *)"grpc-status", (uint8_t *)"0",
							 11, 1, NGHTTP2_NV_FLAG_NONE}};
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			nghttp2_submit_trailer(h2, st->id, tr, 1);
		}
	}
	return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE \
	}

/* Response headers: |hdrs| plus x-pod when --pod is set; the count. */
static size_t with_pod(nghttp2_nv *out, const nghttp2_nv *hdrs, size_t n)
{
	memcpy(out, hdrs, n * sizeof(*hdrs));
	if (!g_opt.pod)
		return n;
	out[n] = (nghttp2_nv){(uint8_t *)"x-pod", (uint8_t *)g_opt.pod, 5, strlen(g_opt.pod),
			      NGHTTP2_NV_FLAG_NONE};
	return n + 1;
}

static int respond(nghttp2_session *h2, struct stream *st)
{
	static const nghttp2_nv grpc_hdrs[] = {NV(":status", "200"),
					       NV("content-type", "application/grpc")};
	static const nghttp2_nv fail_hdrs[] = {
	    NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", "14"),
	    NV("grpc-message", "grpc_backend: failing on purpose")};
	static const nghttp2_nv text_hdrs[] = {NV(":status", "200"),
					       NV("content-type", "text/plain")};
	static const nghttp2_nv bad_hdrs[] = {NV(":status", "400"),
					      NV("content-type", "text/plain")};
	nghttp2_data_provider dp = {.source.ptr = st, .read_callback = read_body};
	const char *bad;
	nghttp2_nv nv[5];
	size_t n;

	if (st->is_stats) {
		if (st->is_control && (bad = control(st))) {
			n = (size_t)snprintf(st->stats, sizeof(st->stats),
					     "bad control parameter: %.64s\n", bad);
			st->resp_len = n < sizeof(st->stats) ? n : sizeof(st->stats) - 1;
			return nghttp2_submit_response(h2, st->id, bad_hdrs, 2, &dp);
		}
		if (st->is_control) {
			n = (size_t)snprintf(
			    st->stats, sizeof(st->stats),
			    "delay_us %ld fail_pct %d cold_ms %ld cold_factor %d\n",
			    atomic_load(&g_delay_us), atomic_load(&g_fail_pct),
			    atomic_load(&g_cold_ms), atomic_load(&g_cold_factor));
		} else {
			n = (size_t)snprintf(st->stats, sizeof(st->stats),
					     "requests %lu bytes_in %lu conns %lu arrived %lu\n",
					     atomic_load(&g_requests), atomic_load(&g_bytes_in),
					     atomic_load(&g_conns), atomic_load(&g_arrived));
		}
		st->resp_len = n;
		return nghttp2_submit_response(h2, st->id, text_hdrs, 2, &dp);
	}
	atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&g_bytes_in, st->body_len, memory_order_relaxed);
	if (st->resp_len == SIZE_MAX) { /* failing: Trailers-Only, no body */
		n = with_pod(nv, fail_hdrs, 4);
		return nghttp2_submit_response(h2, st->id, nv, n, NULL);
	}
	if (g_opt.response_size >= 0)
		st->resp_len = (size_t)g_opt.response_size + 5;
	else
		st->resp_len = st->body_len >= 5 ? st->body_len : 5;
	n = with_pod(nv, grpc_hdrs, 2);
	return nghttp2_submit_response(h2, st->id, nv, n, &dp);
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

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		     const uint8_t *val, size_t vlen, uint8_t flags, void *ud)
{
	struct stream *st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	(void)flags;
	(void)ud;
	if (!st || nlen != 5 || memcmp(name, ":path", 5))
		return 0;
	if (vlen == 6 && !memcmp(val, "/stats", 6))
		st->is_stats = 1;
	if (vlen > 9 && vlen - 9 < sizeof(st->query) && !memcmp(val, "/control?", 9)) {
		st->is_stats = st->is_control = 1;
		memcpy(st->query, val + 9, vlen - 9);
	}
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

/* Answer |st| once its delay has passed: queue it on its connection. */
static int defer(struct conn *c, struct stream *st, uint64_t due)
{
	struct pending *p = malloc(sizeof(*p));

	if (!p)
		return -1;
	p->sid = st->id;
	p->due_ns = due;
	p->next = c->pending;
	c->pending = p;
	return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
	struct conn *c = ud;
	struct stream *st;
	uint64_t now, d;

	if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	if (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS)
		return 0;
	st = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (!st)
		return 0;
	if (!st->is_stats) {
		int pct = atomic_load(&g_fail_pct);

		atomic_fetch_add_explicit(&g_arrived, 1, memory_order_relaxed);
		if (pct && rand_pct() < (uint32_t)pct) {
			st->resp_len = SIZE_MAX; /* fail fast: no delay */
		} else {
			now = now_ns();
			d = delay_ns(now);
			if (d && !defer(c, st, now + d))
				return 0;
		}
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
		free(st);
	}
	return 0;
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_h2opt;

static void conn_free(struct conn *c)
{
	while (c->pending) {
		struct pending *p = c->pending;

		c->pending = p->next;
		free(p);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		*c->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
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
			ssize_t w =
			    send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
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

static void conn_new(int epfd, int fd, struct conn **head)
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
	c->head = head;
	c->next = *head;
	if (*head)
		(*head)->prev = c;
	*head = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) || conn_flush(c))
		conn_free(c);
}

static int open_listener(void)
{
	struct sockaddr_in6 a = {
	    .sin6_family = AF_INET6, .sin6_port = htons(g_opt.port), .sin6_addr = IN6ADDR_ANY_INIT};
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

/* Answer what is due on |c|; the earliest due time still pending (or
 * UINT64_MAX). 0, or -1 when the connection is to be closed. */
static int conn_due(struct conn *c, uint64_t now, uint64_t *next)
{
	struct pending **pp = &c->pending, *p;
	int answered = 0;

	while ((p = *pp)) {
		struct stream *st;

		if (p->due_ns > now) {
			if (p->due_ns < *next)
				*next = p->due_ns;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		st = nghttp2_session_get_stream_user_data(c->h2, p->sid);
		if (st && respond(c->h2, st))
			nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id,
						  NGHTTP2_INTERNAL_ERROR);
		answered = 1;
		free(p);
	}
	return answered ? conn_flush(c) : 0;
}

/* Run every connection's due answers; the epoll timeout until the next one. */
static struct timespec *run_timers(struct conn **head, struct timespec *ts)
{
	uint64_t now = now_ns(), next = UINT64_MAX;
	struct conn *c = *head, *nx;

	for (; c; c = nx) {
		nx = c->next;
		if (c->pending && conn_due(c, now, &next))
			conn_free(c);
	}
	if (next == UINT64_MAX)
		return NULL;
	now = now_ns();
	next = next > now ? next - now : 0;
	ts->tv_sec = (time_t)(next / 1000000000ull);
	ts->tv_nsec = (long)(next % 1000000000ull);
	return ts;
}

static void *worker(void *arg)
{
	int lfd = (int)(intptr_t)arg, epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
	uint8_t *buf = malloc(IN_CHUNK);
	struct conn *conns = NULL;
	struct timespec ts;

	if (epfd < 0 || !buf)
		die("epoll_create1");
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev))
		die("epoll_ctl listener");
	for (;;) {
		int n = epoll_pwait2(epfd, evs, 256, run_timers(&conns, &ts), NULL);
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
					conn_new(epfd, fd, &conns);
				continue;
			}
			if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) &&
			    conn_read(c, buf)) {
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
			" [--max-streams N] [--window BYTES] [--pod NAME] [--delay-us US]"
			" [--fail-pct 0-100] [--cold-ms MS] [--cold-factor 1-1000]\n");
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
		else if (!strcmp(a, "--pod"))
			g_opt.pod = v;
		else if (!strcmp(a, "--delay-us"))
			atomic_store(&g_delay_us, atol(v));
		else if (!strcmp(a, "--fail-pct"))
			atomic_store(&g_fail_pct, atoi(v));
		else if (!strcmp(a, "--cold-ms"))
			atomic_store(&g_cold_ms, atol(v));
		else if (!strcmp(a, "--cold-factor"))
			atomic_store(&g_cold_factor, atoi(v));
		else
			usage();
		i++;
	}
	if (g_opt.threads < 1 || g_opt.port < 1 || g_opt.response_size > MAX_MSG ||
	    atomic_load(&g_delay_us) < 0 || atomic_load(&g_fail_pct) < 0 ||
	    atomic_load(&g_fail_pct) > 100 || atomic_load(&g_cold_ms) < 0 ||
	    atomic_load(&g_cold_factor) < 1 || atomic_load(&g_cold_factor) > 1000)
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
