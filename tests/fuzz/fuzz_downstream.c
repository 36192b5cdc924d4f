// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target: the downstream session, bytes in -> frames out. The input
 * is what a client pod sends after the 24-byte preface (the worker only hands
 * over connections that start with it). Its first byte picks how the fake
 * backend answers each request and how the bytes are delivered:
 *   bits 0-1  0 full gRPC response, 1 headers + data and no end, 2 RST_STREAM
 *             REFUSED_STREAM (the daemon retries), 3 no answer at all
 *   bit 2     everything arrives with the preface (else in 512-byte pieces,
 *             one loop pass each)
 *   bit 3     GOAWAY after the first answer; bit 4: close after it
 * Requests travel through the real bridge to the backend and back, so this
 * covers header forwarding, flow control, resets, retries and deadlines too.
 */
#include "fuzz_splitter.h"

static uint8_t mode;

static void answer(struct fz_run *r, struct fz_up *u, int32_t sid)
{
	uint8_t out[512], blk[256], msg[16] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
	size_t n = 0, b;

	if (u->answered && (mode & 0x10))
		return;
	switch (mode & 3) {
	case 0:
	case 1:
		b = fz_lit(blk, ":status", "200");
		b += fz_lit(blk + b, "content-type", "application/grpc");
		n += fz_frame(out + n, FZ_HEADERS, FZ_END_HEADERS, (uint32_t)sid, blk, b);
		n += fz_frame(out + n, FZ_DATA, 0, (uint32_t)sid, msg, 10);
		if ((mode & 3) == 0) {
			b = fz_lit(blk, "grpc-status", "0");
			n += fz_frame(out + n, FZ_HEADERS, FZ_END_HEADERS | FZ_END_STREAM,
				      (uint32_t)sid, blk, b);
		}
		break;
	case 2:
		fz_u32(blk, 7); /* REFUSED_STREAM */
		n += fz_frame(out + n, FZ_RST_STREAM, 0, (uint32_t)sid, blk, 4);
		break;
	default:
		return;
	}
	if (mode & 0x08) {
		fz_u32(blk, (uint32_t)sid);
		fz_u32(blk + 4, 0);
		n += fz_frame(out + n, FZ_GOAWAY, 0, 0, blk, 8);
	}
	fz_write(u->fd, out, n);
	u->answered++;
	if (mode & 0x10)
		fz_up_close(u);
	(void)r;
}

static void on_frame(struct fz_run *r, struct fz_up *u, uint8_t type, uint8_t flags, int32_t sid,
		     const uint8_t *payload, size_t len)
{
	uint8_t out[64], v[8];
	size_t n = 0;

	(void)payload;
	switch (type) {
	case FZ_SETTINGS:
		if (!u->settings_sent) { /* our connection preface */
			u->settings_sent = true;
			n += fz_frame(out + n, FZ_SETTINGS, 0, 0, NULL, 0);
		}
		if (!(flags & FZ_ACK))
			n += fz_frame(out + n, FZ_SETTINGS, FZ_ACK, 0, NULL, 0);
		break;
	case FZ_PING:
		if (!(flags & FZ_ACK) && len == 8)
			n += fz_frame(out, FZ_PING, FZ_ACK, 0, payload, 8);
		break;
	case FZ_DATA: /* keep request bodies flowing */
		if (len) {
			fz_u32(v, (uint32_t)len);
			n += fz_frame(out + n, FZ_WINDOW_UPDATE, 0, 0, v, 4);
			n += fz_frame(out + n, FZ_WINDOW_UPDATE, 0, (uint32_t)sid, v, 4);
		}
		break;
	case FZ_HEADERS:
		if (sid <= u->last_sid)
			break; /* trailers */
		u->last_sid = sid;
		if (flags & FZ_END_HEADERS)
			answer(r, u, sid);
		else
			u->hdr_sid = sid;
		break;
	case FZ_CONTINUATION:
		if ((flags & FZ_END_HEADERS) && sid == u->hdr_sid) {
			u->hdr_sid = 0;
			answer(r, u, sid);
		}
		break;
	default:
		break;
	}
	fz_write(u->fd, out, n);
}

static void pump(struct fz_run *r, int passes)
{
	fz_pump(r, passes, on_frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_run r;
	uint8_t *pre;
	size_t first;

	if (size < 1 || size > 64 * 1024)
		return 0;
	mode = data[0];
	data++;
	size--;
	first = (mode & 4) ? size : (size < 512 ? size : 512);
	pre = malloc(FZ_PREFACE_LEN + first);
	if (!pre)
		return 0;
	memcpy(pre, FZ_PREFACE, FZ_PREFACE_LEN);
	memcpy(pre + FZ_PREFACE_LEN, data, first);
	fz_run_start(&r, pre, FZ_PREFACE_LEN + first);
	free(pre);
	pump(&r, 3);
	for (size_t off = first; off < size; off += 512) {
		size_t n = size - off < 512 ? size - off : 512;

		fz_write(r.cl, data + off, n);
		pump(&r, 2);
	}
	pump(&r, 8);
	fz_run_end(&r, on_frame);
	return 0;
}
