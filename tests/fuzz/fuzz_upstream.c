// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target: the upstream response path. A well-behaved client sends
 * three gRPC requests (streams 1, 3, 5; grpc-timeout 2S on 1, 1n on 3) and
 * the daemon routes them to the harness's endpoint, whose answer is the
 * input: every byte after the first is what the backend sends on the
 * daemon's upstream connection (stream ids 1, 3, 5 there too). The first byte:
 *   bit 0     the request on stream 5 keeps streaming (no END_STREAM)
 *   bit 1     a valid empty SETTINGS frame goes first (the fuzzer then
 *             need not find one to get past the connection preface)
 *   bit 2     the answer arrives in 256-byte pieces, one loop pass each
 *   bit 3     the client never grants window (SETTINGS_INITIAL_WINDOW_SIZE 0)
 * The client end is drained and discarded; what counts is that the daemon
 * neither crashes nor leaks whatever the backend says.
 */
#include "fuzz_splitter.h"

static size_t client_bytes(uint8_t *p, uint8_t mode)
{
	uint8_t blk[512], set[6] = {0, 4, 0, 0x10, 0, 0}, msg[] = {0, 0, 0, 0, 3, '{', '}', '\n'};
	size_t n = 0, b;

	if (mode & 8)
		set[3] = 0; /* INITIAL_WINDOW_SIZE 0 */
	memcpy(p, FZ_PREFACE, FZ_PREFACE_LEN);
	n += FZ_PREFACE_LEN;
	n += fz_frame(p + n, FZ_SETTINGS, 0, 0, set, sizeof(set));
	for (uint32_t sid = 1; sid <= 5; sid += 2) {
		bool open = sid == 5 && (mode & 1);

		b = fz_request_block(blk, sid == 1 ? "2S" : sid == 3 ? "1n" : NULL);
		n += fz_frame(p + n, FZ_HEADERS, FZ_END_HEADERS, sid, blk, b);
		n += fz_frame(p + n, FZ_DATA, open ? 0 : FZ_END_STREAM, sid, msg, sizeof(msg));
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t pre[2048], settings[9];
	struct fz_run r;
	struct fz_up *u = NULL;
	uint8_t mode;

	if (size < 1 || size > 64 * 1024)
		return 0;
	mode = data[0];
	data++;
	size--;
	fz_run_start(&r, pre, client_bytes(pre, mode));
	for (int i = 0; i < 10 && !r.n_ups; i++)
		fz_pump(&r, 1, NULL);
	if (r.n_ups)
		u = &r.ups[0];
	fz_pump(&r, 2, NULL); /* the daemon's preface, SETTINGS and requests */
	if (u && (mode & 2))
		fz_write(u->fd, settings, fz_frame(settings, FZ_SETTINGS, 0, 0, NULL, 0));
	for (size_t off = 0; u && off < size;) {
		size_t n = (mode & 4) ? (size - off < 256 ? size - off : 256) : size - off;

		fz_write(u->fd, data + off, n);
		off += n;
		fz_pump(&r, (mode & 4) ? 1 : 2, NULL);
	}
	fz_pump(&r, 6, NULL);
	fz_run_end(&r, NULL);
	return 0;
}
