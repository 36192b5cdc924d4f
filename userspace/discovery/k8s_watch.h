/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The I/O-free pieces of a Kubernetes list+watch client: the API server URL,
 * HTTP/1.1 response heads, chunked transfer decoding, the split of a watch
 * stream into newline-delimited JSON events, and jittered exponential backoff.
 * Pure functions over caller-owned buffers, so each is unit-tested alone.
 */
#ifndef H2SPLIT_K8S_WATCH_H
#define H2SPLIT_K8S_WATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;

#define K8S_HOST_MAX 256

/* https://HOST[:PORT][/]; HOST is a name, an IPv4 address or [IPv6]. */
struct k8s_url {
	char host[K8S_HOST_MAX]; /* without brackets */
	uint16_t port;		 /* 443 when the URL has none */
	bool host_is_ip;
};

/* 0, or -EINVAL with |*err| set to a static reason (only https is accepted:
 * the API server is always verified against its CA). */
int k8s_url_parse(const char *url, struct k8s_url *u, const char **err);
/* "HOST:PORT" with brackets for IPv6, for the Host header and for logs. */
const char *k8s_url_hostport(const struct k8s_url *u, char *buf, size_t len);

#define K8S_HEAD_MAX 16384 /* a response head longer than this is refused */

struct k8s_http_head {
	int status;		/* 200, 410, ... */
	bool chunked;		/* Transfer-Encoding: chunked */
	int64_t content_length; /* -1: none given (then: chunked, or until close) */
};

/* Parse the head at the start of |buf| (status line and headers through the
 * empty line). The head's length (> 0) when complete, 0 when more bytes are
 * needed, -EINVAL when malformed, -E2BIG past K8S_HEAD_MAX. */
ssize_t k8s_http_head_parse(const char *buf, size_t len, struct k8s_http_head *h);

/* Chunked transfer decoding state; zero it to start. */
struct k8s_chunked {
	int state;
	uint64_t left; /* bytes left in the current chunk (or its size so far) */
	bool digits;   /* the size line has at least one hex digit */
	bool done;     /* the last chunk and the trailers are through */
};

/* Decode |len| bytes of |buf| in place: the payload is moved to the front of
 * |buf| and its length stored in |*out_len| (never more than |len|). Bytes
 * after the end of the body are ignored. 0, or -EINVAL on a framing error. */
int k8s_chunked_decode(struct k8s_chunked *c, char *buf, size_t len, size_t *out_len);

/* Splits a byte stream into lines ('\n', a '\r' before it dropped; empty
 * lines skipped). Bytes of an incomplete line are kept, at most |max|. */
struct k8s_lines {
	char *buf; /* owned: the pending partial line */
	size_t len, cap;
	size_t max; /* longest line accepted; 0 means 16 MiB */
};

/* Called once per complete line; |line| is not NUL-terminated and is valid
 * only during the call. Non-zero stops the feed and is returned by it. */
typedef int k8s_line_cb(void *arg, const char *line, size_t len);

/* 0, the first non-zero callback result, -E2BIG when a line exceeds |max|
 * (the partial line is dropped), or -ENOMEM. */
int k8s_lines_feed(struct k8s_lines *l, const char *data, size_t n, k8s_line_cb *cb, void *arg);
/* Drop any partial line (a new stream starts). */
void k8s_lines_reset(struct k8s_lines *l);
void k8s_lines_free(struct k8s_lines *l);

/* Watch event types as the API server names them. */
enum k8s_watch_type {
	K8S_WATCH_ADDED,
	K8S_WATCH_MODIFIED,
	K8S_WATCH_DELETED,
	K8S_WATCH_BOOKMARK,
	K8S_WATCH_ERROR,
};

/* Parse one event line {"type":..., "object":{...}}. |*obj| is a new
 * reference to the event's object (the caller puts it). 0, or -EINVAL with a
 * static reason in |*err|. */
int k8s_watch_event_parse(const char *line, size_t len, enum k8s_watch_type *type,
			  struct json_object **obj, const char **err);
/* metadata.resourceVersion of |obj|, or NULL. */
const char *k8s_resource_version(struct json_object *obj);
/* A Status object's code and message (ERROR events, non-200 bodies): the
 * code, or 0 when |obj| is no Status; |*msg| is "" when none. */
int k8s_status_code(struct json_object *obj, const char **msg);

/* Percent-encode |s| for a URL query value into |buf|. -ENAMETOOLONG when it
 * does not fit. */
int k8s_query_escape(const char *s, char *buf, size_t len);

/* Jittered exponential backoff: each delay is drawn from [cur/2, cur], then
 * cur doubles up to |max_ms|. So delays stay within [min_ms/2, max_ms] and
 * many nodes restarting at once do not reconnect in lockstep. It starts over
 * only after something stayed up |healthy_ms| (k8s_backoff_up()), not after
 * any success: a list that works and a watch that fails at once is a failure
 * that repeats, and must not be retried at the first delay forever. */
struct k8s_backoff {
	uint32_t min_ms, max_ms;
	uint32_t healthy_ms; /* k8s_backoff_up() this long or more resets */
	uint32_t cur_ms;     /* 0: next delay is drawn around min_ms */
	uint64_t rnd;	     /* xorshift state; any non-zero seed */
};

void k8s_backoff_init(struct k8s_backoff *b, uint32_t min_ms, uint32_t max_ms, uint32_t healthy_ms,
		      uint64_t seed);
uint32_t k8s_backoff_next(struct k8s_backoff *b);
/* What was retried (a watch) stayed up |up_ms| before it ended: from
 * healthy_ms on, the next failure starts again from min_ms. */
void k8s_backoff_up(struct k8s_backoff *b, uint64_t up_ms);
/* Start again from min_ms now (an operator asked for a fresh start). */
void k8s_backoff_reset(struct k8s_backoff *b);
/* A uniform draw from [lo, hi] with |b|'s generator (watch timeouts). */
uint32_t k8s_backoff_rand(struct k8s_backoff *b, uint32_t lo, uint32_t hi);

#endif
