// SPDX-License-Identifier: Apache-2.0
/*
 * Non-blocking HTTPS GETs to the Kubernetes API server (see k8s_client.h).
 * Each request owns its socket, SSL_CTX and SSL: requests are rare (a list,
 * then one watch per resource every few minutes), so a fresh context per
 * request also picks up a rotated CA file for free. A request moves through
 * START -> CONNECTING -> HANDSHAKE -> SENDING -> HEAD -> BODY and ends in
 * finish(), the one place that calls on_done and frees it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "base/log.h"
#include "discovery/k8s_client.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define CONNECT_TIMEOUT_MS 10000
#define DEFAULT_IDLE_MS 60000
#define TOKEN_MAX 16384
#define READ_CHUNK 16384

#ifndef H2SPLIT_VERSION
#define H2SPLIT_VERSION "dev"
#endif

enum req_state { RS_START, RS_CONNECTING, RS_HANDSHAKE, RS_SENDING, RS_HEAD, RS_BODY };

struct k8s_req {
	struct loop *loop;	    /* not owned */
	const struct k8s_target *t; /* not owned: outlives the request */
	char *path;		    /* owned */
	enum req_state st;
	int fd;		 /* owned, -1 none */
	SSL_CTX *ctx;	 /* owned */
	SSL *ssl;	 /* owned */
	uint32_t events; /* epoll mask currently asked for */
	char *out;	 /* owned: the request bytes (they carry the token) */
	size_t out_len, out_off;
	char head[K8S_HEAD_MAX];
	size_t head_len;
	struct k8s_http_head h;
	struct k8s_chunked ch;
	int64_t body_left;	  /* Content-Length left; -1: chunked or until EOF */
	struct loop_timer *timer; /* start, connect deadline, then idle check */
	uint64_t deadline_ms;
	uint64_t last_rx_ms;
	uint32_t idle_ms;
	const struct k8s_req_cb *cb;
	void *arg;
	char what[1280];
};

/* ---- target ---- */

int k8s_target_init(struct k8s_target *t, const char *api_url, const char *token_file,
		    const char *ca_file, char *err, size_t errlen)
{
	const char *why;

	memset(t, 0, sizeof(*t));
	if (api_url && *api_url) {
		snprintf(t->url_str, sizeof(t->url_str), "%s", api_url);
	} else {
		const char *host = getenv("KUBERNETES_SERVICE_HOST");
		const char *port = getenv("KUBERNETES_SERVICE_PORT");

		if (!host || !*host) {
			snprintf(err, errlen,
				 "not running in a pod (KUBERNETES_SERVICE_HOST unset): "
				 "give --kube-api https://HOST:PORT with --kube-token-file and "
				 "--kube-ca-file");
			return -EINVAL;
		}
		snprintf(t->url_str, sizeof(t->url_str),
			 strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host,
			 port && *port ? port : "443");
	}
	if (k8s_url_parse(t->url_str, &t->url, &why)) {
		snprintf(err, errlen, "--kube-api %s: %s", t->url_str, why);
		return -EINVAL;
	}
	snprintf(t->token_file, sizeof(t->token_file), "%s",
		 token_file && *token_file ? token_file : SA_DIR "/token");
	snprintf(t->ca_file, sizeof(t->ca_file), "%s",
		 ca_file && *ca_file ? ca_file : SA_DIR "/ca.crt");
	return 0;
}

/* ---- helpers ---- */

static void ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (!e) {
		snprintf(buf, len, "%s", errno ? strerror(errno) : "connection closed");
		return;
	}
	ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

static int read_token(const char *path, char **out, char *what, size_t wl)
{
	char *buf = malloc(TOKEN_MAX + 1);
	ssize_t n;
	size_t len = 0;
	int fd, err;

	if (!buf)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		snprintf(what, wl,
			 "kube token file %s: %s (mount the service account token or give "
			 "--kube-token-file)",
			 path, strerror(-err));
		free(buf);
		return err;
	}
	while (len < TOKEN_MAX && (n = read(fd, buf + len, TOKEN_MAX - len)) > 0)
		len += (size_t)n;
	close(fd);
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
		len--;
	buf[len] = 0;
	if (!len || strpbrk(buf, "\r\n")) {
		snprintf(what, wl, "kube token file %s: %s", path,
			 len ? "holds more than one line" : "is empty");
		free(buf);
		return -EINVAL;
	}
	*out = buf;
	return 0;
}

static int build_request(struct k8s_req *r)
{
	char hp[K8S_HOST_MAX + 16];
	char *token = NULL;
	int n, err;

	err = read_token(r->t->token_file, &token, r->what, sizeof(r->what));
	if (err)
		return err;
	n = asprintf(&r->out,
		     "GET %s HTTP/1.1\r\n"
		     "Host: %s\r\n"
		     "Authorization: Bearer %s\r\n"
		     "Accept: application/json\r\n"
		     "User-Agent: h2splitd/%s\r\n"
		     "Connection: close\r\n"
		     "\r\n",
		     r->path, k8s_url_hostport(&r->t->url, hp, sizeof(hp)), token, H2SPLIT_VERSION);
	explicit_bzero(token, strlen(token));
	free(token);
	if (n < 0) {
		r->out = NULL;
		return -ENOMEM;
	}
	r->out_len = (size_t)n;
	return 0;
}

static int make_ctx(struct k8s_req *r)
{
	static const unsigned char alpn[] = "\x08http/1.1";

	r->ctx = SSL_CTX_new(TLS_client_method());
	if (!r->ctx)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(r->ctx, TLS1_2_VERSION);
	/* Framing (chunked / Content-Length) tells a complete body from a cut one. */
	SSL_CTX_set_options(r->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(r->ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_load_verify_locations(r->ctx, r->t->ca_file, NULL) != 1) {
		char why[200];

		ssl_reason(why, sizeof(why));
		snprintf(r->what, sizeof(r->what),
			 "kube CA file %s: %s (mount the service account's ca.crt or give "
			 "--kube-ca-file)",
			 r->t->ca_file, why);
		return -EINVAL;
	}
	SSL_CTX_set_alpn_protos(r->ctx, alpn, sizeof(alpn) - 1);
	return 0;
}

static int resolve(const struct k8s_url *u, struct sockaddr_storage *ss, socklen_t *sl, char *what,
		   size_t wl)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	char port[8];
	int rc;

	/* IP literals never block; a name (rare: in-cluster config gives an IP)
	 * goes through getaddrinfo, which may block the main loop briefly. */
	if (u->host_is_ip)
		hints.ai_flags |= AI_NUMERICHOST;
	snprintf(port, sizeof(port), "%u", u->port);
	rc = getaddrinfo(u->host, port, &hints, &res);
	if (rc) {
		snprintf(what, wl, "resolve %s: %s", u->host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* ---- the state machine ---- */

static void io_cb(struct loop *l, int fd, uint32_t events, void *arg);
static void timer_cb(struct loop *l, struct loop_timer *t, void *arg);

static void release(struct k8s_req *r)
{
	if (r->timer)
		loop_timer_cancel(r->loop, r->timer);
	if (r->fd >= 0) {
		loop_del_fd(r->loop, r->fd);
		close(r->fd);
	}
	SSL_free(r->ssl);
	SSL_CTX_free(r->ctx);
	if (r->out)
		explicit_bzero(r->out, r->out_len);
	free(r->out);
	free(r->path);
	free(r);
}

/* The one exit: tell the owner, then free. Nothing may touch |r| afterwards. */
static void finish(struct k8s_req *r, int err)
{
	const struct k8s_req_cb *cb = r->cb;
	void *arg = r->arg;
	char what[sizeof(r->what)];

	memcpy(what, r->what, sizeof(what));
	r->cb = NULL;
	release(r);
	cb->on_done(arg, err, err ? what : "");
}

static int want(struct k8s_req *r, uint32_t ev)
{
	if (ev == r->events)
		return 0;
	r->events = ev;
	return loop_set_events(r->loop, r->fd, ev);
}

static void arm(struct k8s_req *r, uint64_t ms)
{
	r->timer = loop_timer_add(r->loop, ms, timer_cb, r);
}

static int start_connect(struct k8s_req *r)
{
	struct sockaddr_storage ss;
	char hp[K8S_HOST_MAX + 16];
	socklen_t sl;
	int one = 1, err;

	err = build_request(r);
	if (!err)
		err = make_ctx(r);
	if (!err)
		err = resolve(&r->t->url, &ss, &sl, r->what, sizeof(r->what));
	if (err)
		return err;
	k8s_url_hostport(&r->t->url, hp, sizeof(hp));
	r->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->fd < 0) {
		err = -errno;
		snprintf(r->what, sizeof(r->what), "socket: %s", strerror(-err));
		return err;
	}
	setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(r->fd, (struct sockaddr *)&ss, sl) && errno != EINPROGRESS) {
		err = -errno;
		snprintf(r->what, sizeof(r->what), "connect %s: %s", hp, strerror(-err));
		return err;
	}
	r->events = EPOLLOUT;
	err = loop_add_fd(r->loop, r->fd, EPOLLOUT, io_cb, r);
	if (err) {
		close(r->fd);
		r->fd = -1;
		snprintf(r->what, sizeof(r->what), "epoll: %s", strerror(-err));
		return err;
	}
	r->st = RS_CONNECTING;
	r->deadline_ms = loop_now_ms() + CONNECT_TIMEOUT_MS;
	snprintf(r->what, sizeof(r->what), "connect %s: timed out", hp);
	arm(r, CONNECT_TIMEOUT_MS);
	return 0;
}

static int connected(struct k8s_req *r)
{
	char hp[K8S_HOST_MAX + 16];
	socklen_t sl = sizeof(int);
	int so = 0;

	k8s_url_hostport(&r->t->url, hp, sizeof(hp));
	if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &so, &sl))
		so = errno;
	if (so) {
		snprintf(r->what, sizeof(r->what), "connect %s: %s", hp, strerror(so));
		return -so;
	}
	r->ssl = SSL_new(r->ctx);
	if (!r->ssl || SSL_set_fd(r->ssl, r->fd) != 1)
		return -ENOMEM;
	if (r->t->url.host_is_ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), r->t->url.host) != 1)
			return -ENOMEM;
	} else {
		if (X509_VERIFY_PARAM_set1_host(SSL_get0_param(r->ssl), r->t->url.host, 0) != 1 ||
		    SSL_set_tlsext_host_name(r->ssl, r->t->url.host) != 1)
			return -ENOMEM;
	}
	SSL_set_connect_state(r->ssl);
	r->st = RS_HANDSHAKE;
	snprintf(r->what, sizeof(r->what), "TLS handshake with %s: timed out", hp);
	return 0;
}

/* Map an SSL result to "wait for this" (1), or a failure (< 0, |what| set). */
static int ssl_wait(struct k8s_req *r, int rc, const char *step)
{
	char hp[K8S_HOST_MAX + 16], why[256];
	int e = SSL_get_error(r->ssl, rc);
	long vr;

	if (e == SSL_ERROR_WANT_READ)
		return want(r, EPOLLIN) ? -EIO : 1;
	if (e == SSL_ERROR_WANT_WRITE)
		return want(r, EPOLLOUT) ? -EIO : 1;
	k8s_url_hostport(&r->t->url, hp, sizeof(hp));
	vr = SSL_get_verify_result(r->ssl);
	if (r->st == RS_HANDSHAKE && vr != X509_V_OK) {
		snprintf(r->what, sizeof(r->what),
			 "TLS handshake with %s: server certificate not trusted: %s "
			 "(check --kube-ca-file %s and that the certificate names %s)",
			 hp, X509_verify_cert_error_string(vr), r->t->ca_file, r->t->url.host);
		ERR_clear_error();
		return -EPROTO;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		snprintf(r->what, sizeof(r->what), "%s %s: connection closed", step, hp);
		return -ECONNRESET;
	}
	ssl_reason(why, sizeof(why));
	snprintf(r->what, sizeof(r->what), "%s %s: %s", step, hp, why);
	return e == SSL_ERROR_SYSCALL ? -ECONNRESET : -EPROTO;
}

static int handshake(struct k8s_req *r)
{
	int rc;

	ERR_clear_error();
	rc = SSL_do_handshake(r->ssl);
	if (rc != 1)
		return ssl_wait(r, rc, "TLS handshake with");
	r->st = RS_SENDING;
	return 0;
}

static int send_request(struct k8s_req *r)
{
	while (r->out_off < r->out_len) {
		int rc;

		ERR_clear_error();
		rc = SSL_write(r->ssl, r->out + r->out_off, (int)(r->out_len - r->out_off));
		if (rc <= 0)
			return ssl_wait(r, rc, "send to");
		r->out_off += (size_t)rc;
	}
	explicit_bzero(r->out, r->out_len);
	r->st = RS_HEAD;
	snprintf(r->what, sizeof(r->what), "no response for %u ms", r->idle_ms);
	return want(r, EPOLLIN) ? -EIO : 0;
}

/* Body bytes: hand them over; 1 when the body is complete. */
static int body(struct k8s_req *r, char *data, size_t len)
{
	size_t n = len;
	int err;

	if (r->h.chunked) {
		if (k8s_chunked_decode(&r->ch, data, len, &n)) {
			snprintf(r->what, sizeof(r->what), "malformed chunked response body");
			return -EPROTO;
		}
	} else if (r->body_left >= 0 && (int64_t)n > r->body_left) {
		n = (size_t)r->body_left;
	}
	if (n && (err = r->cb->on_body(r->arg, data, n))) {
		snprintf(r->what, sizeof(r->what), "stopped by the reader");
		return err;
	}
	if (r->body_left >= 0)
		r->body_left -= (int64_t)n;
	return (r->h.chunked && r->ch.done) || r->body_left == 0;
}

static int head(struct k8s_req *r, char *data, size_t len)
{
	size_t take = sizeof(r->head) - r->head_len;
	ssize_t hl;
	size_t old = r->head_len;
	int err;

	if (take > len)
		take = len;
	memcpy(r->head + r->head_len, data, take);
	r->head_len += take;
	hl = k8s_http_head_parse(r->head, r->head_len, &r->h);
	if (hl == 0)
		return 0;
	if (hl < 0) {
		snprintf(r->what, sizeof(r->what), "malformed HTTP response head");
		return -EPROTO;
	}
	r->st = RS_BODY;
	r->body_left = r->h.chunked ? -1 : r->h.content_length;
	snprintf(r->what, sizeof(r->what), "HTTP %d", r->h.status);
	err = r->cb->on_head(r->arg, r->h.status);
	if (err)
		return err;
	if (r->body_left == 0)
		return 1;
	/* Bytes after the head, in this read, are body. */
	return body(r, data + ((size_t)hl - old), len - ((size_t)hl - old));
}

/* Read until the socket has nothing more: 1 when the response is complete. */
static int receive(struct k8s_req *r)
{
	char buf[READ_CHUNK];

	for (;;) {
		int rc, done;

		ERR_clear_error();
		rc = SSL_read(r->ssl, buf, sizeof(buf));
		if (rc <= 0) {
			int e = SSL_get_error(r->ssl, rc);

			if (e == SSL_ERROR_ZERO_RETURN && r->st == RS_BODY && !r->h.chunked &&
			    r->body_left < 0)
				return 1; /* no framing: the body ends with the connection */
			if (e == SSL_ERROR_ZERO_RETURN) {
				snprintf(r->what, sizeof(r->what),
					 "connection closed before the end of the response");
				return -ECONNRESET;
			}
			return ssl_wait(r, rc, "read from") > 0 ? 0 : -ECONNRESET;
		}
		r->last_rx_ms = loop_now_ms();
		done = r->st == RS_HEAD ? head(r, buf, (size_t)rc) : body(r, buf, (size_t)rc);
		if (done)
			return done;
	}
}

/* Advance as far as the socket allows: 1 done, 0 waiting, < 0 failed. */
static int step(struct k8s_req *r)
{
	int rc = 0;

	if (r->st == RS_CONNECTING && (rc = connected(r)))
		return rc;
	if (r->st == RS_HANDSHAKE && (rc = handshake(r)))
		return rc > 0 ? 0 : rc;
	if (r->st == RS_SENDING) {
		rc = send_request(r);
		if (rc)
			return rc > 0 ? 0 : rc;
		/* Past the handshake: from now on the idle check governs. */
		r->last_rx_ms = loop_now_ms();
		if (r->timer)
			loop_timer_cancel(r->loop, r->timer);
		arm(r, r->idle_ms);
	}
	return receive(r);
}

static void io_cb(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct k8s_req *r = arg;
	int rc;

	(void)l;
	(void)fd;
	(void)events;
	rc = step(r);
	if (rc)
		finish(r, rc > 0 ? 0 : rc);
}

static void timer_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct k8s_req *r = arg;
	uint64_t now = loop_now_ms();
	int rc;

	(void)l;
	(void)t;
	r->timer = NULL;
	if (r->st == RS_START) {
		rc = start_connect(r);
		if (rc)
			finish(r, rc);
		return;
	}
	if (r->st < RS_HEAD) {
		finish(r, -ETIMEDOUT);
		return;
	}
	if (now - r->last_rx_ms >= r->idle_ms) {
		snprintf(r->what, sizeof(r->what), "no data from the API server for %u ms",
			 r->idle_ms);
		finish(r, -ETIMEDOUT);
		return;
	}
	arm(r, r->idle_ms - (now - r->last_rx_ms));
}

int k8s_req_start(struct loop *l, const struct k8s_target *t, const char *path, uint32_t idle_ms,
		  const struct k8s_req_cb *cb, void *arg, struct k8s_req **out)
{
	struct k8s_req *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (!r)
		return -ENOMEM;
	r->loop = l;
	r->t = t;
	r->fd = -1;
	r->cb = cb;
	r->arg = arg;
	r->idle_ms = idle_ms ? idle_ms : DEFAULT_IDLE_MS;
	r->path = strdup(path);
	/* Connecting starts from the loop, so every failure arrives via on_done. */
	if (r->path)
		arm(r, 0);
	if (!r->path || !r->timer) {
		free(r->path);
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void k8s_req_cancel(struct k8s_req *r)
{
	if (r)
		release(r);
}
