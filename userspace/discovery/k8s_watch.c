// SPDX-License-Identifier: Apache-2.0
/*
 * I/O-free pieces of the Kubernetes list+watch client (see k8s_watch.h).
 * Parsers are byte-at-a-time state machines or bounded scans over caller
 * buffers: nothing here allocates except the line splitter's pending line,
 * which is capped, so a hostile or broken stream cannot grow memory unbounded.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "discovery/k8s_watch.h"

#define LINE_MAX_DEFAULT (16u << 20)

/* ---- URL ---- */

int k8s_url_parse(const char *url, struct k8s_url *u, const char **err)
{
	const char *p, *end, *colon;
	struct in6_addr a6;
	struct in_addr a4;
	size_t hl;

	memset(u, 0, sizeof(*u));
	if (strncmp(url, "https://", 8)) {
		*err = "expected https://HOST[:PORT] (plain http is not supported)";
		return -EINVAL;
	}
	p = url + 8;
	end = p + strcspn(p, "/");
	if (*end && strcmp(end, "/")) {
		*err = "a path after HOST:PORT is not supported";
		return -EINVAL;
	}
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));

		if (!close) {
			*err = "unterminated [IPv6] address";
			return -EINVAL;
		}
		hl = (size_t)(close - p - 1);
		colon = close + 1 < end ? close + 1 : NULL;
		if (colon && *colon != ':') {
			*err = "expected :PORT after ]";
			return -EINVAL;
		}
		p++;
	} else {
		colon = memchr(p, ':', (size_t)(end - p));
		hl = (size_t)((colon ? colon : end) - p);
	}
	if (hl == 0 || hl >= sizeof(u->host)) {
		*err = hl ? "host name too long" : "empty host";
		return -EINVAL;
	}
	memcpy(u->host, p, hl);
	u->host[hl] = 0;
	u->port = 443;
	if (colon) {
		char *pe;
		long port = strtol(colon + 1, &pe, 10);

		if (pe != end || port < 1 || port > 65535 || colon + 1 == end) {
			*err = "port: expected 1-65535";
			return -EINVAL;
		}
		u->port = (uint16_t)port;
	}
	u->host_is_ip =
	    inet_pton(AF_INET, u->host, &a4) == 1 || inet_pton(AF_INET6, u->host, &a6) == 1;
	if (url[8] == '[' && !strchr(u->host, ':')) {
		*err = "[...] must hold an IPv6 address";
		return -EINVAL;
	}
	return 0;
}

const char *k8s_url_hostport(const struct k8s_url *u, char *buf, size_t len)
{
	if (strchr(u->host, ':'))
		snprintf(buf, len, "[%s]:%u", u->host, u->port);
	else
		snprintf(buf, len, "%s:%u", u->host, u->port);
	return buf;
}

/* ---- response head ---- */

static const char *find_crlfcrlf(const char *buf, size_t len)
{
	for (size_t i = 0; i + 3 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' &&
		    buf[i + 3] == '\n')
			return buf + i;
	return NULL;
}

/* Does the comma-separated header value |v| (|n| bytes) contain token |tok|? */
static bool has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok);

	for (size_t i = 0; i < n;) {
		size_t j = i, k;

		while (j < n && v[j] != ',')
			j++;
		k = j;
		while (i < k && (v[i] == ' ' || v[i] == '\t'))
			i++;
		while (k > i && (v[k - 1] == ' ' || v[k - 1] == '\t'))
			k--;
		if (k - i == tl && !strncasecmp(v + i, tok, tl))
			return true;
		i = j + 1;
	}
	return false;
}

static int parse_header(const char *line, size_t n, struct k8s_http_head *h)
{
	const char *colon = memchr(line, ':', n);
	const char *v;
	size_t nl, vl;

	if (!colon || colon == line)
		return -EINVAL;
	nl = (size_t)(colon - line);
	v = colon + 1;
	vl = n - nl - 1;
	while (vl && (*v == ' ' || *v == '\t')) {
		v++;
		vl--;
	}
	while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
		vl--;
	if (nl == 17 && !strncasecmp(line, "Transfer-Encoding", nl)) {
		h->chunked = has_token(v, vl, "chunked");
	} else if (nl == 14 && !strncasecmp(line, "Content-Length", nl)) {
		int64_t cl = 0;

		if (!vl)
			return -EINVAL;
		for (size_t i = 0; i < vl; i++) {
			if (!isdigit((unsigned char)v[i]) || cl > (INT64_MAX - 9) / 10)
				return -EINVAL;
			cl = cl * 10 + (v[i] - '0');
		}
		if (h->content_length >= 0 && h->content_length != cl)
			return -EINVAL;
		h->content_length = cl;
	}
	return 0;
}

ssize_t k8s_http_head_parse(const char *buf, size_t len, struct k8s_http_head *h)
{
	const char *end = find_crlfcrlf(buf, len < K8S_HEAD_MAX ? len : K8S_HEAD_MAX);
	const char *p, *eol;

	memset(h, 0, sizeof(*h));
	h->content_length = -1;
	if (!end)
		return len >= K8S_HEAD_MAX ? -E2BIG : 0;
	/* "HTTP/1.x SSS reason" */
	if (end - buf < 12 || strncmp(buf, "HTTP/1.", 7) || buf[8] != ' ' ||
	    !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]) ||
	    (end - buf > 12 && buf[12] != ' ' && buf[12] != '\r'))
		return -EINVAL;
	h->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	p = memchr(buf, '\n', (size_t)(end - buf) + 2) + 1;
	while (p < end + 2) {
		eol = memchr(p, '\r', (size_t)(end + 2 - p));
		if (!eol || eol[1] != '\n')
			return -EINVAL;
		if (eol == p)
			break;
		if (parse_header(p, (size_t)(eol - p), h))
			return -EINVAL;
		p = eol + 2;
	}
	/* RFC 9112 6.3: with chunked, Content-Length is ignored. */
	if (h->chunked)
		h->content_length = -1;
	return end + 4 - buf;
}

/* ---- chunked transfer coding ---- */

enum {
	CH_SIZE = 0, /* hex digits of the chunk size */
	CH_EXT,	     /* chunk extension: skipped to the end of the line */
	CH_SIZE_LF,  /* '\n' after the size line's '\r' */
	CH_DATA,     /* |left| payload bytes */
	CH_DATA_CR,  /* '\r' after the payload */
	CH_DATA_LF,  /* '\n' after it */
	CH_TRAILER,  /* start of a trailer line, or the final empty line */
	CH_TRAILER_LINE,
	CH_END_LF, /* '\n' of the final empty line */
	CH_DONE,
};

#define CHUNK_MAX (1ull << 40) /* far beyond any event; stops size overflow */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The size line ended: a payload follows, or the trailers after the last chunk. */
static int size_line_done(struct k8s_chunked *c)
{
	if (!c->digits)
		return -EINVAL;
	c->digits = false;
	c->state = c->left ? CH_DATA : CH_TRAILER;
	return 0;
}

/* One framing byte (not payload): advance the state machine. */
static int chunk_ctl(struct k8s_chunked *c, char ch)
{
	int v;

	switch (c->state) {
	case CH_SIZE:
		v = hexval(ch);
		if (v >= 0) {
			if (c->left >= CHUNK_MAX)
				return -EINVAL;
			c->left = c->left * 16 + (uint64_t)v;
			c->digits = true;
			return 0;
		}
		if (ch == ';' || ch == ' ' || ch == '\t') {
			c->state = CH_EXT;
			return 0;
		}
		if (ch == '\r') {
			c->state = CH_SIZE_LF;
			return 0;
		}
		return ch == '\n' ? size_line_done(c) : -EINVAL;
	case CH_EXT:
		if (ch == '\n')
			return size_line_done(c);
		return 0;
	case CH_SIZE_LF:
		return ch == '\n' ? size_line_done(c) : -EINVAL;
	case CH_DATA_CR:
		if (ch == '\n') {
			c->state = CH_SIZE;
			return 0;
		}
		c->state = CH_DATA_LF;
		return ch == '\r' ? 0 : -EINVAL;
	case CH_DATA_LF:
		c->state = CH_SIZE;
		return ch == '\n' ? 0 : -EINVAL;
	case CH_TRAILER:
		if (ch == '\r')
			c->state = CH_END_LF;
		else if (ch == '\n')
			c->state = CH_DONE;
		else
			c->state = CH_TRAILER_LINE;
		break;
	case CH_TRAILER_LINE:
		if (ch == '\n')
			c->state = CH_TRAILER;
		break;
	case CH_END_LF:
		if (ch != '\n')
			return -EINVAL;
		c->state = CH_DONE;
		break;
	}
	c->done = c->state == CH_DONE;
	return 0;
}

int k8s_chunked_decode(struct k8s_chunked *c, char *buf, size_t len, size_t *out_len)
{
	size_t in = 0, out = 0;

	while (in < len && c->state != CH_DONE) {
		if (c->state == CH_DATA) {
			size_t n = len - in;

			if (n > c->left)
				n = (size_t)c->left;
			memmove(buf + out, buf + in, n);
			in += n;
			out += n;
			c->left -= n;
			if (!c->left)
				c->state = CH_DATA_CR;
			continue;
		}
		if (chunk_ctl(c, buf[in++])) {
			*out_len = out;
			return -EINVAL;
		}
	}
	*out_len = out;
	return 0;
}

/* ---- event lines ---- */

static int lines_append(struct k8s_lines *l, const char *data, size_t n)
{
	size_t max = l->max ? l->max : LINE_MAX_DEFAULT;
	size_t cap;
	char *nb;

	if (l->len + n > max) {
		l->len = 0;
		return -E2BIG;
	}
	if (l->len + n <= l->cap) {
		memcpy(l->buf + l->len, data, n);
		l->len += n;
		return 0;
	}
	cap = l->cap ? l->cap : 4096;
	while (cap < l->len + n)
		cap *= 2;
	if (cap > max)
		cap = max;
	nb = realloc(l->buf, cap);
	if (!nb)
		return -ENOMEM;
	l->buf = nb;
	l->cap = cap;
	memcpy(l->buf + l->len, data, n);
	l->len += n;
	return 0;
}

static int emit(const char *line, size_t len, k8s_line_cb *cb, void *arg)
{
	if (len && line[len - 1] == '\r')
		len--;
	return len ? cb(arg, line, len) : 0;
}

int k8s_lines_feed(struct k8s_lines *l, const char *data, size_t n, k8s_line_cb *cb, void *arg)
{
	size_t max = l->max ? l->max : LINE_MAX_DEFAULT;

	while (n) {
		const char *nl = memchr(data, '\n', n);
		size_t take = nl ? (size_t)(nl - data) : n;
		int rc;

		if (!nl)
			return lines_append(l, data, take);
		if (l->len) {
			/* Complete the pending line; the common case (no partial) copies nothing.
			 */
			size_t total;

			rc = lines_append(l, data, take);
			if (rc)
				return rc;
			total = l->len;
			l->len = 0;
			rc = emit(l->buf, total, cb, arg);
		} else if (take > max) {
			rc = -E2BIG;
		} else {
			rc = emit(data, take, cb, arg);
		}
		if (rc)
			return rc;
		data += take + 1;
		n -= take + 1;
	}
	return 0;
}

void k8s_lines_reset(struct k8s_lines *l)
{
	l->len = 0;
}

void k8s_lines_free(struct k8s_lines *l)
{
	free(l->buf);
	l->buf = NULL;
	l->len = l->cap = 0;
}

/* ---- watch events and Status objects ---- */

static const char *str_field(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

int k8s_watch_event_parse(const char *line, size_t len, enum k8s_watch_type *type,
			  struct json_object **obj, const char **err)
{
	static const char *const names[] = {
	    [K8S_WATCH_ADDED] = "ADDED",     [K8S_WATCH_MODIFIED] = "MODIFIED",
	    [K8S_WATCH_DELETED] = "DELETED", [K8S_WATCH_BOOKMARK] = "BOOKMARK",
	    [K8S_WATCH_ERROR] = "ERROR",
	};
	struct json_tokener *tok = json_tokener_new();
	struct json_object *ev, *o;
	const char *t;
	int rc = -EINVAL;

	*obj = NULL;
	*err = "out of memory";
	if (!tok)
		return -ENOMEM;
	ev = json_tokener_parse_ex(tok, line, (int)len);
	if (!ev || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len) {
		*err = "event is not one complete JSON value";
		goto out;
	}
	t = str_field(ev, "type");
	if (!t || !json_object_object_get_ex(ev, "object", &o) ||
	    !json_object_is_type(o, json_type_object)) {
		*err = "event needs a string \"type\" and an \"object\"";
		goto out;
	}
	*err = "unknown event type";
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(t, names[i])) {
			*type = (enum k8s_watch_type)i;
			*obj = json_object_get(o);
			*err = NULL;
			rc = 0;
			break;
		}
	}
out:
	json_object_put(ev);
	json_tokener_free(tok);
	return rc;
}

const char *k8s_resource_version(struct json_object *obj)
{
	struct json_object *meta;

	if (!obj || !json_object_object_get_ex(obj, "metadata", &meta))
		return NULL;
	return str_field(meta, "resourceVersion");
}

int k8s_status_code(struct json_object *obj, const char **msg)
{
	const char *kind = str_field(obj, "kind"), *m;
	struct json_object *code;

	*msg = "";
	if (!kind || strcmp(kind, "Status"))
		return 0;
	m = str_field(obj, "message");
	if (m)
		*msg = m;
	if (!json_object_object_get_ex(obj, "code", &code) ||
	    !json_object_is_type(code, json_type_int))
		return 0;
	return json_object_get_int(code);
}

int k8s_query_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
			if (o + 1 >= len)
				return -ENAMETOOLONG;
			buf[o++] = (char)c;
			continue;
		}
		if (o + 3 >= len)
			return -ENAMETOOLONG;
		buf[o++] = '%';
		buf[o++] = hex[c >> 4];
		buf[o++] = hex[c & 15];
	}
	if (o >= len)
		return -ENAMETOOLONG;
	buf[o] = 0;
	return 0;
}

/* ---- backoff ---- */

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

void k8s_backoff_init(struct k8s_backoff *b, uint32_t min_ms, uint32_t max_ms, uint32_t healthy_ms,
		      uint64_t seed)
{
	b->min_ms = min_ms ? min_ms : 1;
	b->max_ms = max_ms < b->min_ms ? b->min_ms : max_ms;
	b->healthy_ms = healthy_ms;
	b->cur_ms = 0;
	b->rnd = seed ? seed : 0x9e3779b97f4a7c15ull;
}

uint32_t k8s_backoff_rand(struct k8s_backoff *b, uint32_t lo, uint32_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + (uint32_t)(xorshift(&b->rnd) % ((uint64_t)hi - lo + 1));
}

uint32_t k8s_backoff_next(struct k8s_backoff *b)
{
	uint32_t cur = b->cur_ms ? b->cur_ms : b->min_ms;
	uint32_t d = k8s_backoff_rand(b, cur / 2, cur);

	b->cur_ms = cur > b->max_ms / 2 ? b->max_ms : cur * 2;
	return d;
}

void k8s_backoff_up(struct k8s_backoff *b, uint64_t up_ms)
{
	if (up_ms >= b->healthy_ms)
		b->cur_ms = 0;
}

void k8s_backoff_reset(struct k8s_backoff *b)
{
	b->cur_ms = 0;
}
