// SPDX-License-Identifier: Apache-2.0
/*
 * connect_loop: what one connect() costs, for the redirect data plane
 * benchmark. "run" times COUNT blocking connect()+close() pairs to HOST:PORT
 * (after WARMUP untimed ones) with CLOCK_MONOTONIC around each call and
 * prints one JSON line of means and percentiles. "serve" is the far end:
 * accept, wait for the peer's FIN, close (so the client side closes first,
 * as an app dropping a connection does).
 *
 *   connect_loop run HOST PORT COUNT [WARMUP]
 *   connect_loop serve PORT
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(const uint64_t *sorted, long n, double p)
{
	long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)sorted[i];
}

static double mean(const uint64_t *v, long n)
{
	double s = 0;
	for (long i = 0; i < n; i++)
		s += (double)v[i];
	return s / (double)n;
}

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
		return 0;
	}
	return -1;
}

/* One connect()+close(); returns 0 and the two durations, or -errno. */
static int one(const struct sockaddr_storage *ss, socklen_t len, uint64_t *t_conn,
	       uint64_t *t_close)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), err = 0;
	uint64_t t0, t1, t2;

	if (fd < 0)
		return -errno;
	t0 = now_ns();
	if (connect(fd, (const struct sockaddr *)ss, len))
		err = -errno;
	t1 = now_ns();
	close(fd);
	t2 = now_ns();
	*t_conn = t1 - t0;
	*t_close = t2 - t1;
	return err;
}

static int run(const char *host, int port, long count, long warmup)
{
	struct sockaddr_storage ss;
	socklen_t len;
	uint64_t *conn = calloc((size_t)count, sizeof(*conn));
	uint64_t *clos = calloc((size_t)count, sizeof(*clos));
	uint64_t *both = calloc((size_t)count, sizeof(*both));
	uint64_t tc, tx, start, wall;
	long fails = 0, n = 0;
	int last_err = 0;

	if (!conn || !clos || !both || count < 1 || parse_addr(host, port, &ss, &len)) {
		fprintf(stderr, "connect_loop: bad arguments or out of memory\n");
		return 2;
	}
	for (long i = 0; i < warmup; i++)
		if (one(&ss, len, &tc, &tx))
			fails++;
	if (fails) {
		fprintf(stderr, "connect_loop: %ld of %ld warm-up connects to %s:%d failed\n",
			fails, warmup, host, port);
		return 1;
	}
	start = now_ns();
	for (long i = 0; i < count; i++) {
		int e = one(&ss, len, &tc, &tx);
		if (e) {
			fails++;
			last_err = -e;
			continue;
		}
		conn[n] = tc;
		clos[n] = tx;
		both[n] = tc + tx;
		n++;
	}
	wall = now_ns() - start;
	if (!n) {
		fprintf(stderr, "connect_loop: every connect to %s:%d failed: %s\n", host, port,
			strerror(last_err));
		return 1;
	}
	qsort(conn, (size_t)n, sizeof(*conn), cmp_u64);
	qsort(clos, (size_t)n, sizeof(*clos), cmp_u64);
	qsort(both, (size_t)n, sizeof(*both), cmp_u64);
	printf("{\"count\": %ld, \"failed\": %ld, \"wall_ns\": %llu, "
	       "\"connect_mean_ns\": %.0f, \"connect_p50_ns\": %.0f, \"connect_p90_ns\": %.0f, "
	       "\"connect_p99_ns\": %.0f, \"close_mean_ns\": %.0f, \"close_p50_ns\": %.0f, "
	       "\"total_mean_ns\": %.0f, \"total_p50_ns\": %.0f, \"total_p99_ns\": %.0f}\n",
	       n, fails, (unsigned long long)wall, mean(conn, n), pct(conn, n, 50),
	       pct(conn, n, 90), pct(conn, n, 99), mean(clos, n), pct(clos, n, 50),
	       mean(both, n), pct(both, n, 50), pct(both, n, 99));
	free(conn);
	free(clos);
	free(both);
	return fails ? 1 : 0;
}

static int serve(int port)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
				 .sin6_addr = IN6ADDR_ANY_INIT};
	int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int ep = epoll_create1(EPOLL_CLOEXEC), one_ = 1, zero = 0;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[128];
	char buf[4096];

	if (lfd < 0 || ep < 0)
		return perror("socket/epoll_create1"), 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one_, sizeof(one_));
	setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 4096) ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev))
		return perror("bind/listen"), 1;
	printf("ready port=%d\n", port);
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 128, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return perror("epoll_wait"), 1;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c;
				while ((c = accept4(lfd, NULL, NULL,
						    SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev))
						close(c);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r > 0 || (r < 0 && errno == EAGAIN))
				continue;
			close(fd); /* EOF or error: the epoll entry goes with the fd */
		}
	}
}

int main(int argc, char **argv)
{
	struct rlimit rl;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (argc >= 5 && !strcmp(argv[1], "run"))
		return run(argv[2], atoi(argv[3]), atol(argv[4]), argc > 5 ? atol(argv[5]) : 200);
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]));
	fprintf(stderr, "usage: connect_loop run HOST PORT COUNT [WARMUP] | serve PORT\n");
	return 2;
}
