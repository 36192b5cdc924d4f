// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of upstream connections inside a real splitter, driven with the
 * fuzz harness (tests/fuzz/fuzz_splitter.h: a worker loop run one pass at a
 * time, a downstream socketpair, the test as the backend on 127.0.0.1).
 * - A connection killed in a flush (write error, or nghttp2 done with the
 *   session) stays in its pool until the splitter's flush destroys it; streams
 *   routed meanwhile must never be given to it, or each burns one of its
 *   H2_MAX_ATTEMPTS there and the last one fails UNAVAILABLE.
 * - A backend that allows no streams (SETTINGS_MAX_CONCURRENT_STREAMS 0)
 *   gets no connection per stream: streams wait --pending-timeout once for
 *   it to raise its limit, then fail UNAVAILABLE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>

#include "../fuzz/fuzz_splitter.h"

#define CL_BUF (256 * 1024)
#define MAX_SID 16

/* The client's view of the daemon: response header blocks, decoded. */
struct client {
	uint8_t buf[CL_BUF];
	size_t len;
	nghttp2_hd_inflater *inf;
	int grpc_status[MAX_SID]; /* by stream id; -1: none yet */
};

/* How the backend answers. Connection 0 holds requests when |hold_first|
 * (the test answers there itself); otherwise requests get a complete gRPC
 * OK, unless the backend advertised SETTINGS_MAX_CONCURRENT_STREAMS 0
 * (|mcs|; -1: not advertised), when they are refused (RFC 9113 5.1.2). */
static struct {
	bool hold_first;
	int mcs;
} be;

static size_t settings_mcs(uint8_t *p, uint32_t mcs)
{
	uint8_t iv[6] = {0, 3}; /* SETTINGS_MAX_CONCURRENT_STREAMS */

	fz_u32(iv + 2, mcs);
	return fz_frame(p, FZ_SETTINGS, 0, 0, iv, sizeof(iv));
}

static void backend(struct fz_run *r, struct fz_up *u, uint8_t type, uint8_t flags, int32_t sid,
		    const uint8_t *payload, size_t len)
{
	uint8_t out[512], blk[256], msg[10] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
	size_t n = 0, b;

	(void)payload;
	(void)len;
	if (type == FZ_SETTINGS && !(flags & FZ_ACK)) {
		if (!u->settings_sent)
			n += be.mcs < 0 ? fz_frame(out + n, FZ_SETTINGS, 0, 0, NULL, 0)
					: settings_mcs(out + n, (uint32_t)be.mcs);
		u->settings_sent = true;
		n += fz_frame(out + n, FZ_SETTINGS, FZ_ACK, 0, NULL, 0);
	} else if (type == FZ_HEADERS && sid > u->last_sid) {
		u->last_sid = sid;
		if (be.hold_first && u == &r->ups[0])
			return;
		if (be.mcs == 0) {
			fz_u32(blk, 7); /* REFUSED_STREAM */
			n += fz_frame(out + n, FZ_RST_STREAM, 0, (uint32_t)sid, blk, 4);
		} else {
			b = fz_lit(blk, ":status", "200");
			b += fz_lit(blk + b, "content-type", "application/grpc");
			n += fz_frame(out + n, FZ_HEADERS, FZ_END_HEADERS, (uint32_t)sid, blk, b);
			n += fz_frame(out + n, FZ_DATA, 0, (uint32_t)sid, msg, sizeof(msg));
			b = fz_lit(blk, "grpc-status", "0");
			n += fz_frame(out + n, FZ_HEADERS, FZ_END_HEADERS | FZ_END_STREAM,
				      (uint32_t)sid, blk, b);
		}
	}
	fz_write(u->fd, out, n);
}

static void client_headers(struct client *c, int32_t sid, const uint8_t *p, size_t len)
{
	nghttp2_nv nv;
	int fl;

	for (;;) {
		ssize_t rv = nghttp2_hd_inflate_hd2(c->inf, &nv, &fl, p, len, 1);

		assert_true(rv >= 0);
		p += rv;
		len -= (size_t)rv;
		if (fl & NGHTTP2_HD_INFLATE_EMIT && sid < MAX_SID && nv.namelen == 11 &&
		    !memcmp(nv.name, "grpc-status", 11))
			c->grpc_status[sid] = atoi((const char *)nv.value);
		if (fl & NGHTTP2_HD_INFLATE_FINAL) {
			nghttp2_hd_inflate_end_headers(c->inf);
			return;
		}
		if (!rv && !len)
			return;
	}
}

/* What the daemon sent the client so far: frames parsed, header blocks decoded. */
static void client_read(struct fz_run *r, struct client *c)
{
	size_t off = 0;
	ssize_t n;

	while (c->len < CL_BUF &&
	       (n = recv(r->cl, c->buf + c->len, CL_BUF - c->len, MSG_DONTWAIT)) > 0)
		c->len += (size_t)n;
	while (c->len - off >= 9) {
		const uint8_t *p = c->buf + off;
		size_t flen = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
		int32_t sid = (int32_t)(((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 |
					 (uint32_t)p[7] << 8 | p[8]) &
					0x7fffffff);

		if (c->len - off < 9 + flen)
			break;
		if (p[3] == FZ_HEADERS) /* the daemon pads nothing and sends no priority */
			client_headers(c, sid, p + 9, flen);
		off += 9 + flen;
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
}

static void pump(struct fz_run *r, struct client *c, int passes)
{
	for (int i = 0; i < passes; i++) {
		fz_pass(r->e);
		fz_accept(r);
		for (int k = 0; k < r->n_ups; k++)
			fz_serve(r, &r->ups[k], backend);
		client_read(r, c);
	}
}

/* Pump until the client has the end of stream |sid|, for at most 10 s: the
 * splitter's timers (--pending-timeout) run on the real clock. */
static void pump_until_answered(struct fz_run *r, struct client *c, int32_t sid)
{
	uint64_t until = loop_now_ms() + 10000;

	while (c->grpc_status[sid] < 0 && loop_now_ms() < until) {
		pump(r, c, 1);
		usleep(1000);
	}
}

static struct client *client_new(void)
{
	struct client *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	assert_int_equal(nghttp2_hd_inflate_new(&c->inf), 0);
	memset(c->grpc_status, 0xff, sizeof(c->grpc_status));
	return c;
}

static void client_free(struct client *c)
{
	nghttp2_hd_inflate_del(c->inf);
	free(c);
}

static size_t request(uint8_t *p, uint32_t sid)
{
	uint8_t blk[512], msg[] = {0, 0, 0, 0, 3, '{', '}', '\n'};
	size_t n = fz_frame(p, FZ_HEADERS, FZ_END_HEADERS, sid, blk, fz_request_block(blk, NULL));

	return n + fz_frame(p + n, FZ_DATA, FZ_END_STREAM, sid, msg, sizeof(msg));
}

/* Reset the backend's end of connection 0 (RST, not FIN): a timer of the
 * same loop pass, after the daemon read what came before and before its
 * flush writes to the connection. */
static void reset_backend(struct loop *l, struct loop_timer *t, void *arg)
{
	struct fz_up *u = arg;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	(void)l;
	(void)t;
	setsockopt(u->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	fz_up_close(u);
}

/*
 * Stream 1 goes out on connection 0; then, in one read, the backend refuses
 * it (REFUSED_STREAM: retried) and commits a connection error (WINDOW_UPDATE
 * 0 on stream 0), so nghttp2 ends the session: it writes GOAWAY and refuses
 * the retry's HEADERS itself (a third attempt queued), and the flush kills
 * the connection, either because nghttp2 wants neither to read nor write any
 * more or (|write_fails|) because the socket was reset. The third attempt
 * must go to a new connection and succeed, not to the killed one.
 */
static void killed_in_flush(bool write_fails)
{
	uint8_t pre[2048], bad[32], z[4] = {0}, code[4];
	struct client *c = client_new();
	struct fz_run r;
	size_t n = 0;

	be.hold_first = true;
	be.mcs = -1;
	memcpy(pre, FZ_PREFACE, FZ_PREFACE_LEN);
	n = FZ_PREFACE_LEN + fz_frame(pre + FZ_PREFACE_LEN, FZ_SETTINGS, 0, 0, NULL, 0);
	n += request(pre + n, 1);
	fz_run_start(&r, pre, n);
	for (int i = 0; i < 20 && !(r.n_ups && r.ups[0].last_sid == 1); i++)
		pump(&r, c, 1);
	assert_int_equal(r.n_ups, 1);
	assert_int_equal(r.ups[0].last_sid, 1);

	fz_u32(code, 7); /* REFUSED_STREAM */
	n = fz_frame(bad, FZ_RST_STREAM, 0, 1, code, 4);
	n += fz_frame(bad + n, FZ_WINDOW_UPDATE, 0, 0, z, 4);
	fz_write(r.ups[0].fd, bad, n);
	if (write_fails)
		assert_non_null(loop_timer_add(r.e->loop, 0, reset_backend, &r.ups[0]));
	for (int i = 0; i < 20 && c->grpc_status[1] < 0; i++)
		pump(&r, c, 1);
	assert_int_equal(c->grpc_status[1], 0);
	assert_int_equal(r.n_ups, 2); /* answered on a new connection */
	assert_int_equal(stats_get(&r.e->stats, ST_UNEXPECTED), 0);

	fz_run_end(&r, backend);
	client_free(c);
}

static void test_session_ended_takes_no_stream(void **state)
{
	(void)state;
	killed_in_flush(false);
}

static void test_write_failed_takes_no_stream(void **state)
{
	(void)state;
	killed_in_flush(true);
}

/* A backend that says SETTINGS_MAX_CONCURRENT_STREAMS 0 and refuses stream 1
 * (sent before its SETTINGS came). Stream 1's retry and stream 3 find it
 * allowing none: no other connection is opened, they wait. If |raise|, the
 * backend then allows 100 and both are served on that same connection at
 * once (a --pending-timeout of 60 s, so no timer is what routed them); else
 * both fail UNAVAILABLE once a --pending-timeout of 100 ms is over. */
static void no_capacity(bool raise)
{
	uint32_t wait_ms = raise ? 60000 : 100;
	uint8_t pre[2048], out[512];
	struct client *c = client_new();
	uint64_t t0 = loop_now_ms();
	struct fz_run r;
	size_t n;

	be.hold_first = false;
	be.mcs = 0;
	fz_env()->cfg.pending_timeout_ms = (int)wait_ms;
	memcpy(pre, FZ_PREFACE, FZ_PREFACE_LEN);
	n = FZ_PREFACE_LEN + fz_frame(pre + FZ_PREFACE_LEN, FZ_SETTINGS, 0, 0, NULL, 0);
	n += request(pre + n, 1);
	fz_run_start(&r, pre, n);
	pump(&r, c, 10);
	fz_write(r.cl, out, request(out, 3));
	pump(&r, c, 10);
	assert_int_equal(r.n_ups, 1);
	assert_int_equal(r.ups[0].last_sid, 1); /* nothing more was sent */
	if (raise) {
		assert_int_equal(c->grpc_status[1], -1);
		assert_int_equal(c->grpc_status[3], -1);
		be.mcs = 100;
		fz_write(r.ups[0].fd, out, settings_mcs(out, 100));
	}
	pump_until_answered(&r, c, 1);
	pump_until_answered(&r, c, 3);
	assert_int_equal(c->grpc_status[1], raise ? 0 : 14);
	assert_int_equal(c->grpc_status[3], raise ? 0 : 14);
	if (raise)
		assert_true(loop_now_ms() - t0 < wait_ms);
	else
		assert_true(loop_now_ms() - t0 >= wait_ms);
	assert_int_equal(r.n_ups, 1);
	assert_int_equal(stats_get(&r.e->stats, ST_UNEXPECTED), 0);

	fz_run_end(&r, backend);
	fz_env()->cfg.pending_timeout_ms = 1000;
	client_free(c);
}

static void test_no_capacity_waits_for_a_raised_limit(void **state)
{
	(void)state;
	no_capacity(true);
}

static void test_no_capacity_fails_after_one_wait(void **state)
{
	(void)state;
	no_capacity(false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_session_ended_takes_no_stream),
	    cmocka_unit_test(test_write_failed_takes_no_stream),
	    cmocka_unit_test(test_no_capacity_waits_for_a_raised_limit),
	    cmocka_unit_test(test_no_capacity_fails_after_one_wait),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
