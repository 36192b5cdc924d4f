// SPDX-License-Identifier: Apache-2.0
/*
 * Connection I/O for both sides (see h2_conn.h): plain or TLS reads through
 * the worker's read buffer into the session, one send() per connection per
 * flush of what was serialized (the rest kept aside), the raw GOAWAY after a
 * fatal receive error, and TLS setup. Side-specific steps go through c->ops.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/stats.h"
#include "proxy/h2/h2_buf.h"
#include "proxy/h2/h2_conn.h"

int h2_conn_io_init(struct h2_conn_io *io, struct loop *loop, struct worker_stats *stats)
{
	*io = (struct h2_conn_io){.loop = loop, .stats = stats};
	io->rbuf = malloc(H2_RBUF_SIZE);
	io->wbuf = malloc(H2_WBUF_SIZE);
	return io->rbuf && io->wbuf ? 0 : -ENOMEM;
}

void h2_conn_io_fini(struct h2_conn_io *io)
{
	free(io->rbuf);
	free(io->wbuf);
	io->rbuf = io->wbuf = NULL;
	io->dirty = NULL;
}

struct h2_conn *h2_conn_next_dirty(struct h2_conn_io *io)
{
	struct h2_conn *c = io->dirty;

	if (!c)
		return NULL;
	io->dirty = c->dirty_next;
	c->dirty = false;
	return c;
}

void h2_conn_dirty(struct h2_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = c->io->dirty;
	c->io->dirty = c;
}

void h2_conn_kill(struct h2_conn *c)
{
	c->dead = true;
	h2_conn_dirty(c);
}

void h2_conn_fini(struct h2_conn *c)
{
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->pend);
	c->pend = NULL;
	c->pend_len = c->pend_off = 0;
}

/* n > 0 bytes read, 0 at EOF, -EAGAIN, or -errno. */
static ssize_t conn_recv(struct h2_conn *c, uint8_t *buf, size_t len)
{
	ssize_t n;
	int e;

	if (!c->ssl) {
		n = recv(c->fd, buf, len, 0);
		if (n < 0)
			return errno == EINTR ? -EAGAIN : -errno;
		return n;
	}
	ERR_clear_error();
	n = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0)
		return n;
	e = SSL_get_error(c->ssl, (int)n);
	if (e == SSL_ERROR_WANT_READ)
		return -EAGAIN;
	if (e == SSL_ERROR_WANT_WRITE) {
		c->want_out = true;
		return -EAGAIN;
	}
	return e == SSL_ERROR_ZERO_RETURN ? 0 : -EPROTO;
}

/* Bytes written (maybe 0 when the socket is full), or -errno. */
static ssize_t conn_send(struct h2_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t n;
	int e;

	if (!c->ssl) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	}
	ERR_clear_error();
	n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0)
		return n;
	e = SSL_get_error(c->ssl, (int)n);
	return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -EPROTO;
}

/* nghttp2 gives up on a session after a fatal receive error (floods, too many
 * CONTINUATIONs) without sending anything: tell the peer why ourselves, best
 * effort, when no partial frame is pending on the socket. */
static void goaway_raw(struct h2_conn *c, int err)
{
	uint32_t code = c->fatal_code ? c->fatal_code
			: err == NGHTTP2_ERR_FLOODED || err == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
			    ? NGHTTP2_ENHANCE_YOUR_CALM
			    : NGHTTP2_PROTOCOL_ERROR;
	int32_t last = nghttp2_session_get_last_proc_stream_id(c->session);
	uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};

	if (c->ssl || c->pend_len || err == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
		return;
	f[9] = (uint8_t)((uint32_t)last >> 24 & 0x7f);
	f[10] = (uint8_t)(last >> 16);
	f[11] = (uint8_t)(last >> 8);
	f[12] = (uint8_t)last;
	f[13] = (uint8_t)(code >> 24);
	f[14] = (uint8_t)(code >> 16);
	f[15] = (uint8_t)(code >> 8);
	f[16] = (uint8_t)code;
	if (send(c->fd, f, sizeof(f), MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof(f))
		stats_inc(c->io->stats, ST_GOAWAY_SENT);
}

int h2_conn_recv(struct h2_conn *c, const uint8_t *buf, size_t len)
{
	ssize_t rv = nghttp2_session_mem_recv(c->session, buf, len);

	if (rv >= 0)
		return 0;
	log_info("h2_protocol_error side=%s err=\"%s\"", c->ops->side, nghttp2_strerror((int)rv));
	if (c->ops->recv_failed)
		c->ops->recv_failed(c, (int)rv);
	goaway_raw(c, (int)rv);
	return -EPROTO;
}

int h2_conn_read(struct h2_conn *c)
{
	struct h2_conn_io *io = c->io;

	c->want_out = false;
	for (int i = 0; (c->ssl || i < H2_READS_PER_EVENT) && !c->dead; i++) {
		ssize_t n = conn_recv(c, io->rbuf, H2_RBUF_SIZE);
		int rv;

		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return n ? (int)n : -EPIPE;
		if (c->ops->counts_bytes)
			stats_add(io->stats, ST_BYTES_IN, (uint64_t)n);
		rv = h2_conn_recv(c, io->rbuf, (size_t)n);
		if (rv)
			return rv;
		/* A short plain read drained the socket; TLS may hold more records. */
		if (!c->ssl && (size_t)n < H2_RBUF_SIZE)
			return 0;
	}
	return 0;
}

ssize_t h2_conn_send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
			void *user_data)
{
	struct h2_conn *c = user_data;
	struct h2_conn_io *io = c->io;
	size_t room = H2_WBUF_SIZE - io->wlen;

	(void)session;
	(void)flags;
	if (room > H2_OUT_MAX - io->out)
		room = H2_OUT_MAX - io->out;
	if (!room)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (len > room)
		len = room;
	memcpy(io->wbuf + io->wlen, data, len);
	io->wlen += len;
	io->out += len;
	return (ssize_t)len;
}

/* Close the open wbuf piece [wmark, wlen) into iov. */
static void seal(struct h2_conn_io *io)
{
	if (io->wlen > io->wmark) {
		io->iov[io->niov++] = (struct iovec){io->wbuf + io->wmark, io->wlen - io->wmark};
		io->wmark = io->wlen;
	}
}

void h2_conn_ref(struct h2_conn_io *io, const uint8_t *p, size_t len)
{
	seal(io);
	io->iov[io->niov++] = (struct iovec){(void *)p, len};
	io->out += len;
}

/* Write the assembled output; keep (copy) what the socket does not take.
 * 1: all written, 0: some is pending now, -errno. */
static int write_or_keep(struct h2_conn *c)
{
	struct h2_conn_io *io = c->io;
	size_t done, at = 0;
	ssize_t n;

	seal(io);
	if (io->niov == 1) {
		n = conn_send(c, io->iov[0].iov_base, io->iov[0].iov_len);
	} else {
		struct msghdr mh = {.msg_iov = io->iov, .msg_iovlen = io->niov};

		/* Only plain connections get pieces in place (h2_conn_ref_room()). */
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (n < 0)
			n = errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	}
	if (n < 0)
		return (int)n;
	if (c->ops->counts_bytes)
		stats_add(io->stats, ST_BYTES_OUT, (uint64_t)n);
	if ((size_t)n == io->out)
		return 1;
	c->pend = malloc(io->out - (size_t)n);
	if (!c->pend)
		return -ENOMEM;
	done = (size_t)n;
	for (unsigned i = 0; i < io->niov; i++) {
		const uint8_t *p = io->iov[i].iov_base;
		size_t len = io->iov[i].iov_len;

		if (done >= len) {
			done -= len;
			continue;
		}
		memcpy(c->pend + at, p + done, len - done);
		at += len - done;
		done = 0;
	}
	c->pend_len = at;
	c->pend_off = 0;
	return 0;
}

int h2_conn_write(struct h2_conn *c)
{
	struct h2_conn_io *io = c->io;
	int rv;

	if (!c->io_ready)
		return 0;
	if (c->pend_len) {
		ssize_t n = conn_send(c, c->pend + c->pend_off, c->pend_len);

		if (n < 0)
			return (int)n;
		if (c->ops->counts_bytes)
			stats_add(io->stats, ST_BYTES_OUT, (uint64_t)n);
		c->pend_off += (size_t)n;
		c->pend_len -= (size_t)n;
		if (c->pend_len)
			return 0; /* still full: nothing new is serialized */
		free(c->pend);
		c->pend = NULL;
		c->pend_off = 0;
	}
	for (;;) {
		io->wlen = io->wmark = io->out = 0;
		io->niov = 0;
		if (io->blocks)
			h2_blocks_hold(io->blocks);
		rv = nghttp2_session_send(c->session);
		if (rv) {
			log_info("h2_send_error side=%s err=\"%s\"", c->ops->side,
				 nghttp2_strerror(rv));
			rv = -EPROTO;
		} else {
			rv = io->out ? write_or_keep(c) : 0;
		}
		io->wlen = io->wmark = io->out = 0;
		io->niov = 0;
		if (io->blocks)
			h2_blocks_release(io->blocks);
		if (rv <= 0)
			return rv;
	}
}

void h2_conn_flush(struct h2_conn *c)
{
	int err;

	if (c->dead) {
		c->ops->destroy(c);
		return;
	}
	if (c->ops->hold && c->ops->hold(c))
		return;
	err = h2_conn_write(c);
	if (err) {
		log_debug("h2_write_failed side=%s err=%d", c->ops->side, err);
		c->ops->end(c, "write failed", err);
		return;
	}
	if (!c->io_ready)
		return;
	if (!c->pend_len && !nghttp2_session_want_read(c->session) &&
	    !nghttp2_session_want_write(c->session)) {
		/* Both sides are done: GOAWAY and no streams left, or nghttp2
		 * ended the session after a connection error of the peer's. */
		c->ops->end(c, "connection closed", 0);
		return;
	}
	if (loop_set_events(c->io->loop, c->fd,
			    EPOLLIN | (c->pend_len || c->want_out ? EPOLLOUT : 0)) == 0)
		c->events = EPOLLIN | (c->pend_len || c->want_out ? EPOLLOUT : 0);
	if (c->ops->flushed)
		c->ops->flushed(c);
}

SSL_CTX *h2_conn_tls_ctx_new(const char *ca_file)
{
	static const unsigned char alpn[] = "\x02h2";
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) ||
	    !(ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
		      : SSL_CTX_set_default_verify_paths(ctx))) {
		log_error("upstream_tls_setup_failed ca=%s err=\"%s\": check --upstream-ca-file",
			  ca_file ? ca_file : "(system)", ERR_reason_error_string(ERR_get_error()));
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

int h2_conn_tls_start(struct h2_conn *c, SSL_CTX *ctx, const char *host)
{
	c->ssl = SSL_new(ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_tlsext_host_name(c->ssl, host) ||
	    !SSL_set1_host(c->ssl, host))
		return -ENOMEM;
	SSL_set_connect_state(c->ssl);
	return 0;
}

int h2_conn_tls_handshake(struct h2_conn *c, const char *name, const char **why)
{
	const unsigned char *proto = NULL;
	unsigned int plen = 0;
	int rv = SSL_do_handshake(c->ssl), e;

	if (rv == 1) {
		SSL_get0_alpn_selected(c->ssl, &proto, &plen);
		if (plen != 2 || memcmp(proto, "h2", 2)) {
			*why = "TLS peer did not select h2 (ALPN)";
			return -EPROTO;
		}
		return 1;
	}
	e = SSL_get_error(c->ssl, rv);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		loop_set_events(c->io->loop, c->fd,
				EPOLLIN | (e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0));
		c->events = EPOLLIN | (e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0);
		return 0;
	}
	if (SSL_get_verify_result(c->ssl) != X509_V_OK)
		log_warn("upstream_tls_verify_failed endpoint=%s err=\"%s\"", name,
			 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
	*why = "TLS handshake failed";
	return -EPROTO;
}
