// SPDX-License-Identifier: Apache-2.0
/*
 * One gRPC health probe over its own HTTP/2 connection (health_probe.h): the
 * nghttp2 client callbacks, the socket, and the verdict of what came back.
 * Nothing here blocks or keeps state outside the probe slot, so the checker
 * can run HEALTH_PROBES_MAX of them at once on one loop.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer/health.h"
#include "balancer/health_probe.h"

static ssize_t p_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
	struct health_probe *p = ud;
	ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL);

	(void)s;
	(void)flags;
	if (n >= 0)
		return n;
	return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static ssize_t p_recv(nghttp2_session *s, uint8_t *buf, size_t len, int flags, void *ud)
{
	struct health_probe *p = ud;
	ssize_t n = recv(p->fd, buf, len, 0);

	(void)s;
	(void)flags;
	if (n > 0)
		return n;
	if (n == 0)
		return NGHTTP2_ERR_EOF;
	return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int p_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		    const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	struct health_probe *p = ud;
	char v[16];

	(void)s;
	(void)f;
	(void)flags;
	if (vl >= sizeof(v))
		return 0;
	memcpy(v, value, vl);
	v[vl] = 0;
	if (nl == 7 && !memcmp(name, ":status", 7))
		p->http_status = atoi(v);
	else if (nl == 11 && !memcmp(name, "grpc-status", 11))
		p->grpc_status = atoi(v);
	return 0;
}

static int p_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
		  void *ud)
{
	struct health_probe *p = ud;

	(void)s;
	(void)flags;
	(void)id;
	if (len > sizeof(p->resp) - p->resp_len) {
		p->resp_overflow = true;
		return 0;
	}
	memcpy(p->resp + p->resp_len, data, len);
	p->resp_len += len;
	return 0;
}

static int p_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
	struct health_probe *p = ud;

	(void)s;
	(void)id;
	(void)code;
	p->closed = true;
	return 0;
}

static ssize_t p_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
		      nghttp2_data_source *src, void *ud)
{
	struct health_probe *p = ud;
	size_t n = p->req_len - p->req_off;

	(void)s;
	(void)id;
	(void)src;
	if (n > len)
		n = len;
	memcpy(buf, p->req + p->req_off, n);
	p->req_off += n;
	if (p->req_off == p->req_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* A non-blocking socket connecting to |ip|:|port|: the fd, or -errno. */
static int probe_socket(const struct h2s_ip *ip, uint16_t port)
{
	struct sockaddr_storage ss = {0};
	int fd, err;

	if (h2s_ip_is_v4(ip)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, ip->b + 12, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, ip->b, 16);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, sizeof(ss)) && errno != EINPROGRESS) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static nghttp2_session *probe_session(struct health_probe *p)
{
	nghttp2_session_callbacks *cb;
	nghttp2_session *s = NULL;

	if (nghttp2_session_callbacks_new(&cb))
		return NULL;
	nghttp2_session_callbacks_set_send_callback(cb, p_send);
	nghttp2_session_callbacks_set_recv_callback(cb, p_recv);
	nghttp2_session_callbacks_set_on_header_callback(cb, p_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, p_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, p_close);
	if (nghttp2_session_client_new(&s, cb, p))
		s = NULL;
	nghttp2_session_callbacks_del(cb);
	return s;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

int health_probe_start(struct health_probe *p, uint32_t service_id, const struct h2s_ip *ip,
		       uint16_t port, const char *service)
{
	nghttp2_data_provider body = {.read_callback = p_body};
	char authority[INET6_ADDRSTRLEN + 10], ipbuf[INET6_ADDRSTRLEN];
	int n;

	*p = (struct health_probe){.fd = -1,
				   .service_id = service_id,
				   .ip = *ip,
				   .port = port,
				   .grpc_status = -1,
				   .err = -ETIMEDOUT};
	n = health_encode_request(service, p->req, sizeof(p->req));
	if (n < 0)
		return n;
	p->req_len = (size_t)n;
	h2s_ip_str(ip, ipbuf, sizeof(ipbuf));
	snprintf(authority, sizeof(authority), h2s_ip_is_v4(ip) ? "%s:%u" : "[%s]:%u", ipbuf, port);
	p->s = probe_session(p);
	if (!p->s)
		return -ENOMEM;
	{
		const nghttp2_nv nv[] = {
		    NV(":method", "POST"),
		    NV(":scheme", "http"),
		    NV(":path", "/grpc.health.v1.Health/Check"),
		    NV(":authority", authority),
		    NV("content-type", "application/grpc"),
		    NV("te", "trailers"),
		};

		if (nghttp2_submit_settings(p->s, NGHTTP2_FLAG_NONE, NULL, 0) ||
		    nghttp2_submit_request(p->s, NULL, nv, sizeof(nv) / sizeof(nv[0]), &body,
					   NULL) < 0)
			return -ENOMEM;
	}
	p->fd = probe_socket(ip, port);
	return p->fd < 0 ? p->fd : 0;
}

uint32_t health_probe_events(const struct health_probe *p)
{
	if (!p->connected)
		return EPOLLOUT;
	return EPOLLIN | (nghttp2_session_want_write(p->s) ? EPOLLOUT : 0);
}

bool health_probe_step(struct health_probe *p, uint32_t revents)
{
	socklen_t sl = sizeof(int);
	int err = 0;

	if (!p->connected) {
		if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &sl))
			err = errno;
		if (!err && (revents & (EPOLLERR | EPOLLHUP)))
			err = ECONNRESET;
		if (err) {
			p->err = -err;
			return true;
		}
		if (!(revents & EPOLLOUT))
			return false;
		p->connected = true;
	}
	if (nghttp2_session_send(p->s) || nghttp2_session_recv(p->s)) {
		p->err = -ECONNRESET;
		return true;
	}
	return p->closed;
}

int health_probe_result(const struct health_probe *p)
{
	if (!p->closed)
		return p->err;
	if (p->http_status != 200 || p->grpc_status != 0 || p->resp_overflow)
		return -EPROTO;
	return health_parse_response(p->resp, p->resp_len);
}

void health_probe_end(struct health_probe *p)
{
	nghttp2_session_del(p->s);
	p->s = NULL;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}
