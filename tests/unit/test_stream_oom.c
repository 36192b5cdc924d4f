// SPDX-License-Identifier: Apache-2.0
/*
 * Fault injection: the splitter under memory pressure. The test binary is
 * linked with -Wl,--wrap=malloc, so it decides which allocations of the
 * daemon's modules fail; here, the request body blocks (h2_buf.c). A request
 * whose body cannot be held is answered at once, whatever routing state it
 * is in, and leaves the routing queue then: it is never routed afterwards,
 * nor touched once freed (the ASan build of this test would catch that).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "../fuzz/fuzz_splitter.h"
#include "proxy/h2/h2_buf.h"

void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);

static bool fail_blocks;

void *__wrap_malloc(size_t size)
{
	if (fail_blocks && (size == sizeof(struct h2_block) + H2_BLOCK_SIZE ||
			    size == sizeof(struct h2_block) + H2_SMALL_BLOCK_SIZE ||
			    size == sizeof(struct h2_block) + H2_TINY_BLOCK_SIZE))
		return NULL;
	return __real_malloc(size);
}

static int upstream_requests;

static void on_frame(struct fz_run *r, struct fz_up *u, uint8_t type, uint8_t flags, int32_t sid,
		     const uint8_t *payload, size_t len)
{
	uint8_t out[32];
	size_t n = 0;

	(void)r;
	(void)payload;
	(void)len;
	(void)sid;
	if (type == FZ_SETTINGS && !(flags & FZ_ACK)) {
		n += fz_frame(out + n, FZ_SETTINGS, 0, 0, NULL, 0);
		n += fz_frame(out + n, FZ_SETTINGS, FZ_ACK, 0, NULL, 0);
	}
	if (type == FZ_HEADERS)
		upstream_requests++;
	fz_write(u->fd, out, n);
}

/* Everything the client sent in one read: SETTINGS, a request's HEADERS
 * (queued for routing at the end of the pass) and its DATA, whose block
 * cannot be allocated. */
static size_t request_with_body(uint8_t *p)
{
	uint8_t blk[256], msg[10] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
	size_t n = 0;

	memcpy(p, FZ_PREFACE, FZ_PREFACE_LEN);
	n += FZ_PREFACE_LEN;
	n += fz_frame(p + n, FZ_SETTINGS, 0, 0, NULL, 0);
	n += fz_frame(p + n, FZ_HEADERS, FZ_END_HEADERS, 1, blk, fz_request_block(blk, NULL));
	n += fz_frame(p + n, FZ_DATA, FZ_END_STREAM, 1, msg, sizeof(msg));
	return n;
}

static uint8_t client_buf[65536];
static size_t client_len;

/* fz_pump(), keeping what the daemon sent the client. */
static void pump(struct fz_run *r, int passes)
{
	ssize_t got;

	for (int i = 0; i < passes; i++) {
		fz_pass(r->e);
		fz_accept(r);
		for (int k = 0; k < r->n_ups; k++)
			fz_serve(r, &r->ups[k], on_frame);
		while (client_len < sizeof(client_buf) &&
		       (got = recv(r->cl, client_buf + client_len, sizeof(client_buf) - client_len,
				   MSG_DONTWAIT)) > 0)
			client_len += (size_t)got;
	}
}

/* Count the frames of |type| on |sid| the daemon sent to the client. */
static int client_frames(uint8_t type, int32_t sid)
{
	const uint8_t *buf = client_buf;
	size_t off = 0, len = client_len;
	int n = 0;

	while (len - off >= 9) {
		const uint8_t *p = buf + off;
		size_t flen = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
		int32_t fsid = (int32_t)(((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 |
					  (uint32_t)p[7] << 8 | p[8]) &
					 0x7fffffff);

		if (len - off < 9 + flen)
			break;
		n += p[3] == type && fsid == sid;
		off += 9 + flen;
	}
	return n;
}

static void test_body_oom_while_queued(void **unused)
{
	struct fz_run r;
	uint8_t in[1024];
	size_t n = request_with_body(in);

	(void)unused;
	upstream_requests = 0;
	client_len = 0;
	fz_run_start(&r, in, FZ_PREFACE_LEN);
	pump(&r, 2);
	fail_blocks = true; /* from here on: the splitter's buffers exist already */
	fz_write(r.cl, in + FZ_PREFACE_LEN, n - FZ_PREFACE_LEN);
	pump(&r, 8);
	fail_blocks = false;
	pump(&r, 8);
	/* Answered (a Trailers-Only HEADERS with END_STREAM), once. */
	assert_int_equal(client_frames(FZ_HEADERS, 1), 1);
	/* ...and never routed: no upstream connection was even opened for it. */
	assert_int_equal(upstream_requests, 0);
	assert_int_equal(r.n_ups, 0);
	assert_int_equal(stats_get(&r.e->stats, ST_UPSTREAM_CONNS_TOTAL), 0);
	fz_run_end(&r, on_frame);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_body_oom_while_queued),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
