// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for metrics.c: per-worker tables merged at scrape, histogram
 * bucket edges, label escaping, pruning on snapshot change, table bounds,
 * scrapes racing a writer, and the exact Prometheus text for a known input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "telemetry/chunk_table.h"
#include "telemetry/metrics.h"
#include "telemetry/prom.h"

#define MS 1000000ull
#define SEC 1000000000ull

static struct h2s_ip ip(const char *s)
{
	struct h2s_ip a;

	assert_int_equal(h2s_ip_parse(&a, s), 0);
	return a;
}

/* Write |mm| as Prometheus text at |now_ms| into a malloc'd string. */
static char *render_at(const struct metrics_merged *mm, const struct state *st, uint64_t now_ms)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(metrics_write_prometheus(f, mm, st, now_ms), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static char *render(const struct metrics_merged *mm, const struct state *st)
{
	return render_at(mm, st, 0);
}

static void add_ep(struct state_service *svc, const char *addr, uint16_t port, const char *pod)
{
	struct state_endpoint *ep = &svc->eps[svc->n_eps++];

	memset(ep, 0, sizeof(*ep));
	ep->ip = ip(addr);
	ep->port = port;
	ep->ready = ep->serving = true;
	snprintf(ep->pod, sizeof(ep->pod), "%s", pod);
}

/* default/greeter:50051 with 10.0.0.1:8080 (greeter-a) and [fd00::2]:8080
 * (pod unknown), plus shop/cart:9000 with 10.0.1.1:9000 (cart-0). */
static struct state *make_state(void)
{
	struct state *st = state_new();
	struct state_endpoint eps[2];
	struct state_service s = {.port = 50051, .eps = eps};

	assert_non_null(st);
	strcpy(s.ns, "default");
	strcpy(s.name, "greeter");
	s.vips[s.n_vips++] = ip("10.96.0.10");
	add_ep(&s, "10.0.0.1", 8080, "greeter-a");
	add_ep(&s, "fd00::2", 8080, "");
	assert_int_equal(state_add_service(st, &s), 0);
	memset(&s, 0, sizeof(s));
	s.eps = eps;
	s.port = 9000;
	strcpy(s.ns, "shop");
	strcpy(s.name, "cart");
	add_ep(&s, "10.0.1.1", 9000, "cart-0");
	assert_int_equal(state_add_service(st, &s), 0);
	assert_int_equal(state_finish(st), 0);
	return st;
}

static uint32_t svc_id(const struct state *st, const char *name)
{
	for (int i = 0; i < st->n_svcs; i++)
		if (!strcmp(st->svcs[i].name, name))
			return st->svcs[i].id;
	fail();
	return 0;
}

static void test_merge_across_workers(void **unused)
{
	struct metrics *w[3] = {metrics_new(), NULL, metrics_new()};
	struct h2s_ip a = ip("10.0.0.1"), b = ip("fd00::2");
	struct metrics_endpoint_totals t;
	struct metrics_merged *mm;

	(void)unused;
	assert_non_null(w[0]);
	assert_non_null(w[2]);
	for (int i = 0; i < 3; i++)
		metrics_endpoint_inflight(w[0], 42, &a, 8080, +1);
	metrics_endpoint_inflight(w[0], 42, &a, 8080, -1);
	metrics_stream_done(w[0], 42, &a, 8080, 14, 200, MS, 10, 20); /* UNAVAILABLE: failure */
	metrics_stream_done(w[0], 42, &a, 8080, 0, 200, MS, 10, 20);  /* OK */
	metrics_endpoint_inflight(w[2], 42, &a, 8080, +1);
	metrics_endpoint_inflight(w[2], 42, &b, 8080, +1);
	metrics_stream_done(w[2], 42, &a, 8080, -1, 503, MS, 0, 0); /* 5xx: failure */
	metrics_stream_done(w[2], 42, &b, 8080, 5, 200, MS, 0, 0);  /* NOT_FOUND: no failure */
	metrics_upstream_event(w[2], 42, &a, 8080, METRICS_EV_RETRY);
	metrics_upstream_event(w[0], 42, &a, 8080, METRICS_EV_CONNECT_FAILURE);
	metrics_upstream_event(w[0], 42, &a, 8080, METRICS_EV_CONNECT_FAILURE);
	/* Same address on another service: a separate series. */
	metrics_endpoint_inflight(w[2], 43, &a, 8080, +1);

	mm = metrics_merge(w, 3);
	assert_non_null(mm);
	assert_int_equal(metrics_merged_endpoint(mm, 42, &a, 8080, &t), 0);
	assert_int_equal(t.requests, 4);
	assert_int_equal(t.active, 3);
	assert_int_equal(t.failures, 2);
	assert_int_equal(t.events[METRICS_EV_RETRY], 1);
	assert_int_equal(t.events[METRICS_EV_CONNECT_FAILURE], 2);
	assert_int_equal(t.events[METRICS_EV_RESET_SENT], 0);
	assert_int_equal(metrics_merged_endpoint(mm, 42, &b, 8080, &t), 0);
	assert_int_equal(t.requests, 1);
	assert_int_equal(t.failures, 0);
	assert_int_equal(metrics_merged_endpoint(mm, 43, &a, 8080, &t), 0);
	assert_int_equal(t.requests, 1);
	assert_int_equal(metrics_merged_endpoint(mm, 42, &a, 8081, &t), -ENOENT);
	assert_int_equal(t.requests, 0);
	metrics_merged_free(mm);
	metrics_free(w[0]);
	metrics_free(w[2]);
}

/* Balancer state merges to the worst any worker saw, and the ejected gauge
 * follows the clock it is rendered at. */
static void test_endpoint_health(void **unused)
{
	struct metrics *w[2] = {metrics_new(), metrics_new()};
	struct state *st = make_state();
	uint32_t g = svc_id(st, "greeter");
	struct h2s_ip a = ip("10.0.0.1");
	struct metrics_endpoint_totals t;
	struct metrics_merged *mm;
	static const char gauge[] = "h2split_endpoint_ejected{service=\"default/greeter:50051\","
				    "endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} ";
	char *text, *at;

	(void)unused;
	metrics_endpoint_health(w[0], g, &a, 8080,
				&(struct metrics_endpoint_health){.ejected_until_ms = 5000,
								  .consec_failures = 1,
								  .ejections = 1,
								  .ewma_us = 700,
								  .jitter_us = 40});
	metrics_endpoint_health(w[1], g, &a, 8080,
				&(struct metrics_endpoint_health){.backoff_until_ms = 900,
								  .consec_failures = 4,
								  .ewma_us = 300,
								  .jitter_us = 90});
	mm = metrics_merge(w, 2);
	assert_non_null(mm);
	assert_int_equal(metrics_merged_endpoint(mm, g, &a, 8080, &t), 0);
	assert_int_equal(t.health.ejected_until_ms, 5000);
	assert_int_equal(t.health.backoff_until_ms, 900);
	assert_int_equal(t.health.consec_failures, 4);
	assert_int_equal(t.health.ejections, 1);
	assert_int_equal(t.health.ewma_us, 700);
	assert_int_equal(t.health.jitter_us, 90);
	assert_int_equal(t.requests, 0); /* state alone starts no stream */
	text = render_at(mm, st, 4999);
	at = strstr(text, gauge);
	assert_non_null(at);
	assert_int_equal(at[strlen(gauge)], '1');
	free(text);
	text = render_at(mm, st, 5000);
	at = strstr(text, gauge);
	assert_non_null(at);
	assert_int_equal(at[strlen(gauge)], '0');
	free(text);
	/* A later update replaces the worker's own view (ejection over). */
	metrics_merged_free(mm);
	metrics_endpoint_health(w[0], g, &a, 8080, &(struct metrics_endpoint_health){.ejections = 1});
	mm = metrics_merge(w, 2);
	assert_int_equal(metrics_merged_endpoint(mm, g, &a, 8080, &t), 0);
	assert_int_equal(t.health.ejected_until_ms, 0);
	assert_int_equal(t.health.ewma_us, 300);
	metrics_merged_free(mm);
	metrics_free(w[0]);
	metrics_free(w[1]);
	state_free(st);
}

static void test_histogram_buckets(void **unused)
{
	struct metrics *m = metrics_new();
	struct metrics_merged *mm;
	char *text;

	(void)unused;
	/* le is inclusive: exactly 100us is in le="0.0001", 1ns more is not. */
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 0, 0, 0);
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 100000, 0, 0);
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 100001, 0, 0);
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 1 * SEC, 0, 0);
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 300 * SEC, 0, 0);
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 300 * SEC + 1, 0, 0);
	metrics_stream_done(m, 7, NULL, 0, 0, 200, 86400 * SEC, 0, 0);
	mm = metrics_merge(&m, 1);
	text = render(mm, NULL);
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"0.0001\"} 2\n"));
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"0.00025\"} 3\n"));
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"0.5\"} 3\n"));
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"1\"} 4\n"));
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"60\"} 4\n"));
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"300\"} 5\n"));
	assert_non_null(strstr(text, "_bucket{service=\"id:7\",le=\"+Inf\"} 7\n"));
	assert_non_null(strstr(text, "_count{service=\"id:7\"} 7\n"));
	/* 0 + 100us + 100.001us(->100us) + 1s + 300s + 300s + 86400s */
	assert_non_null(strstr(text, "_sum{service=\"id:7\"} 87001.000200\n"));
	/* No endpoint: only service series. */
	assert_null(strstr(text, "h2split_endpoint_requests_total{"));
	free(text);
	metrics_merged_free(mm);
	metrics_free(m);
}

static void test_label_escaping(void **unused)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct state *st = state_new();
	struct state_endpoint ep = {.port = 80, .ready = true};
	struct state_service s = {.port = 80, .eps = &ep, .n_eps = 1};
	struct metrics *m = metrics_new();
	struct metrics_merged *mm;
	char *text;

	(void)unused;
	prom_label_value(f, "a\\b\"c\nd");
	fclose(f);
	assert_string_equal(buf, "a\\\\b\\\"c\\nd");
	free(buf);

	ep.ip = ip("10.0.0.9");
	strcpy(ep.pod, "p\"od\\1");
	strcpy(s.ns, "n\ns");
	strcpy(s.name, "svc");
	assert_int_equal(state_add_service(st, &s), 0);
	assert_int_equal(state_finish(st), 0);
	metrics_endpoint_inflight(m, st->svcs[0].id, &ep.ip, 80, +1);
	mm = metrics_merge(&m, 1);
	text = render(mm, st);
	assert_non_null(strstr(text, "h2split_endpoint_requests_total{service=\"n\\ns/svc:80\","
				     "endpoint=\"10.0.0.9:80\",pod=\"p\\\"od\\\\1\"} 1\n"));
	free(text);
	metrics_merged_free(mm);
	metrics_free(m);
	state_free(st);
}

static void test_prune(void **unused)
{
	struct state *st = make_state();
	uint32_t greeter = svc_id(st, "greeter");
	struct metrics *m = metrics_new();
	struct h2s_ip a = ip("10.0.0.1"), gone = ip("10.0.0.77"), busy = ip("10.0.0.78");
	struct metrics_endpoint_totals t;
	struct metrics_merged *mm;

	(void)unused;
	metrics_endpoint_inflight(m, greeter, &a, 8080, +1);
	metrics_endpoint_inflight(m, greeter, &a, 8080, -1);
	metrics_endpoint_inflight(m, greeter, &gone, 8080, +1);
	metrics_endpoint_inflight(m, greeter, &gone, 8080, -1);
	metrics_endpoint_inflight(m, greeter, &busy, 8080, +1); /* still in flight */
	metrics_stream_done(m, greeter, NULL, 0, 0, 200, MS, 1, 1);
	metrics_stream_done(m, 999, NULL, 0, 0, 200, MS, 1, 1); /* a removed service */
	metrics_prune(m, st);

	mm = metrics_merge(&m, 1);
	assert_int_equal(metrics_merged_endpoint(mm, greeter, &a, 8080, &t), 0);
	assert_int_equal(t.requests, 1);
	assert_int_equal(metrics_merged_endpoint(mm, greeter, &gone, 8080, &t), -ENOENT);
	assert_int_equal(metrics_merged_endpoint(mm, greeter, &busy, 8080, &t), 0);
	assert_int_equal(t.active, 1);
	{
		char *text = render(mm, st);

		assert_null(strstr(text, "id:999"));
		assert_non_null(strstr(text, "_count{service=\"default/greeter:50051\"} 1\n"));
		free(text);
	}
	metrics_merged_free(mm);

	/* Once idle it goes too, and a returning endpoint starts from zero. */
	metrics_endpoint_inflight(m, greeter, &busy, 8080, -1);
	metrics_prune(m, st);
	metrics_endpoint_inflight(m, greeter, &gone, 8080, +1);
	mm = metrics_merge(&m, 1);
	assert_int_equal(metrics_merged_endpoint(mm, greeter, &busy, 8080, &t), -ENOENT);
	assert_int_equal(metrics_merged_endpoint(mm, greeter, &gone, 8080, &t), 0);
	assert_int_equal(t.requests, 1);
	assert_int_equal(t.failures, 0);
	metrics_merged_free(mm);
	metrics_free(m);
	state_free(st);
}

/* Run |fn(arg)| with stderr going to a buffer; the buffer, malloc'd. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
	FILE *tmp = tmpfile();
	int saved = dup(2);
	char *buf;
	long len;

	assert_non_null(tmp);
	assert_true(saved >= 0);
	fflush(stderr);
	dup2(fileno(tmp), 2);
	fn(arg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	len = ftell(tmp);
	assert_true(len >= 0);
	buf = calloc(1, (size_t)len + 1);
	assert_non_null(buf);
	rewind(tmp);
	assert_int_equal(fread(buf, 1, (size_t)len, tmp), (size_t)len);
	fclose(tmp);
	return buf;
}

#define MANY_EPS 60000
#define MANY_SVCS 5000

/* Every port of 10.0.0.1 for service 1, and a stream of every service: far
 * past the 4,096 endpoints and 1,024 services the tables once stopped at. */
static void overfill(void *arg)
{
	struct metrics *m = arg;
	struct h2s_ip a = ip("10.0.0.1");

	for (int i = 0; i < MANY_EPS; i++)
		metrics_endpoint_inflight(m, 1, &a, (uint16_t)(i + 1), +1);
	for (int i = 0; i < MANY_SVCS; i++)
		metrics_stream_done(m, (uint32_t)i + 1, NULL, 0, 0, 200, MS, 0, 0);
}

/* The tables grow: a node of a large cluster gets a series for every service
 * and endpoint, and no update is dropped. */
static void test_tables_grow(void **unused)
{
	struct metrics *m = metrics_new();
	struct h2s_ip a = ip("10.0.0.1");
	struct metrics_endpoint_totals t;
	struct metrics_merged *mm;
	char *text, *log;

	(void)unused;
	log = capture_stderr(overfill, m);
	assert_string_equal(log, "");
	free(log);
	/* A -1 never drives a gauge below zero, nor makes an entry. */
	metrics_endpoint_inflight(m, 1, &a, 1, -1);
	metrics_endpoint_inflight(m, 1, &a, 1, -1);
	metrics_endpoint_inflight(m, 1, &a, (uint16_t)(MANY_EPS + 2), -1);
	mm = metrics_merge(&m, 1);
	for (int i = 0; i < MANY_EPS; i++) {
		assert_int_equal(metrics_merged_endpoint(mm, 1, &a, (uint16_t)(i + 1), &t), 0);
		assert_int_equal(t.requests, 1);
		assert_int_equal(t.active, i ? 1 : 0);
	}
	assert_int_equal(metrics_merged_endpoint(mm, 1, &a, MANY_EPS + 2, &t), -ENOENT);
	text = render(mm, NULL);
	assert_non_null(strstr(text, "h2split_metrics_overflow_total{table=\"endpoints\"} 0\n"));
	assert_non_null(strstr(text, "h2split_metrics_overflow_total{table=\"services\"} 0\n"));
	assert_non_null(strstr(
	    text, "h2split_service_request_duration_seconds_count{service=\"id:5000\"} 1\n"));
	free(text);
	metrics_merged_free(mm);
	metrics_free(m);
}

/* The shared table itself: growth across chunks of doubling size, the cap
 * (-ENOSPC: metrics count it as overflow), reuse of pruned entries. */
static bool drop_odd(void *e, void *arg)
{
	uint32_t *v = e;

	(void)arg;
	return *v & 1;
}

static void test_chunk_table(void **unused)
{
	struct chunk_table t;

	(void)unused;
	assert_int_equal(chunk_table_init(&t, sizeof(uint32_t), 4, 100), 0);
	assert_int_equal(chunk_table_readable(&t), 0);
	for (uint32_t i = 0; i < 100; i++) {
		int32_t k = chunk_table_insert(&t, i * 2654435761u);

		assert_true(k >= 0);
		*(uint32_t *)chunk_table_at(&t, (uint32_t)k) = i;
	}
	assert_int_equal(chunk_table_insert(&t, 7), -ENOSPC);
	assert_true(chunk_table_readable(&t) >= 100);
	for (uint32_t i = 0; i < 100; i++) { /* every key still found by its hash */
		uint32_t h = i * 2654435761u;
		bool found = false;

		for (int32_t k = chunk_table_first(&t, h); k >= 0; k = chunk_table_next(&t, k))
			found |= chunk_table_hash(&t, k) == h &&
				 *(uint32_t *)chunk_table_at(&t, (uint32_t)k) == i;
		assert_true(found);
	}
	chunk_table_prune(&t, drop_odd, NULL);
	assert_int_equal(t.n_used, 50);
	for (int i = 0; i < 50; i++)
		assert_true(chunk_table_insert(&t, (uint32_t)i) >= 0);
	assert_int_equal(chunk_table_insert(&t, 7), -ENOSPC);
	chunk_table_destroy(&t);
}

/* A writer that keeps inserting, bumping and pruning while we scrape: every
 * entry a scrape sees must have a consistent key (port == last IP byte). */
struct race {
	struct metrics *m;
	atomic_bool stop;
};

static void *race_writer(void *arg)
{
	struct race *r = arg;
	struct state *empty = state_new();

	state_finish(empty);
	for (unsigned n = 0; !atomic_load(&r->stop); n++) {
		struct h2s_ip a = ip("10.0.0.0");
		uint8_t x = (uint8_t)(n % 251);

		a.b[15] = x;
		metrics_endpoint_inflight(r->m, 5, &a, x, +1);
		metrics_endpoint_inflight(r->m, 5, &a, x, -1);
		if (n % 1000 == 999)
			metrics_prune(r->m, empty);
	}
	state_free(empty);
	return NULL;
}

static void test_scrape_races_writer(void **unused)
{
	struct race r = {.m = metrics_new()};
	pthread_t th;

	(void)unused;
	assert_int_equal(pthread_create(&th, NULL, race_writer, &r), 0);
	for (int i = 0; i < 2000; i++) {
		struct metrics_merged *mm = metrics_merge(&r.m, 1);
		char *text = render(mm, NULL), *p = text;

		while (
		    (p = strstr(
			 p,
			 "h2split_endpoint_requests_active{service=\"id:5\",endpoint=\"10.0.0."))) {
			unsigned byte, port;

			p += strlen(
			    "h2split_endpoint_requests_active{service=\"id:5\",endpoint=\"10.0.0.");
			assert_int_equal(sscanf(p, "%u:%u", &byte, &port), 2);
			assert_int_equal(byte, port);
		}
		free(text);
		metrics_merged_free(mm);
	}
	atomic_store(&r.stop, true);
	pthread_join(th, NULL);
	metrics_free(r.m);
}

static const char expected_text[] =
    "# HELP h2split_endpoint_requests_total Stream attempts sent to the endpoint, retries "
    "included.\n"
    "# TYPE h2split_endpoint_requests_total counter\n"
    "h2split_endpoint_requests_total{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 2\n"
    "h2split_endpoint_requests_total{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 1\n"
    "# HELP h2split_endpoint_requests_active Stream attempts in flight on the endpoint.\n"
    "# TYPE h2split_endpoint_requests_active gauge\n"
    "h2split_endpoint_requests_active{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 1\n"
    "h2split_endpoint_requests_active{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 0\n"
    "# HELP h2split_endpoint_failures_total Streams that failed on the endpoint: no response, "
    "HTTP 5xx, or grpc-status UNKNOWN, INTERNAL, UNAVAILABLE or DATA_LOSS.\n"
    "# TYPE h2split_endpoint_failures_total counter\n"
    "h2split_endpoint_failures_total{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0\n"
    "h2split_endpoint_failures_total{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 1\n"
    "# HELP h2split_endpoint_retries_total Stream attempts on the endpoint retried on another "
    "one.\n"
    "# TYPE h2split_endpoint_retries_total counter\n"
    "h2split_endpoint_retries_total{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0\n"
    "h2split_endpoint_retries_total{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 1\n"
    "# HELP h2split_endpoint_resets_sent_total RST_STREAM frames sent to the endpoint.\n"
    "# TYPE h2split_endpoint_resets_sent_total counter\n"
    "h2split_endpoint_resets_sent_total{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0\n"
    "h2split_endpoint_resets_sent_total{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 0\n"
    "# HELP h2split_endpoint_resets_received_total RST_STREAM frames received from the "
    "endpoint.\n"
    "# TYPE h2split_endpoint_resets_received_total counter\n"
    "h2split_endpoint_resets_received_total{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0\n"
    "h2split_endpoint_resets_received_total{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 1\n"
    "# HELP h2split_endpoint_connect_failures_total Failed connection attempts to the "
    "endpoint.\n"
    "# TYPE h2split_endpoint_connect_failures_total counter\n"
    "h2split_endpoint_connect_failures_total{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0\n"
    "h2split_endpoint_connect_failures_total{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 0\n"
    "# HELP h2split_endpoint_ejected 1 while outlier detection keeps new streams off the "
    "endpoint (on any worker).\n"
    "# TYPE h2split_endpoint_ejected gauge\n"
    "h2split_endpoint_ejected{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0\n"
    "h2split_endpoint_ejected{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 0\n"
    "# HELP h2split_endpoint_latency_ewma_seconds The balancer's peak-EWMA latency estimate "
    "of the endpoint (the highest of any worker), as of its last answer; 0 before one.\n"
    "# TYPE h2split_endpoint_latency_ewma_seconds gauge\n"
    "h2split_endpoint_latency_ewma_seconds{service=\"default/"
    "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 0.000000\n"
    "h2split_endpoint_latency_ewma_seconds{service=\"default/"
    "greeter:50051\",endpoint=\"[fd00::2]:8080\",pod=\"\"} 0.000000\n"
    "# HELP h2split_service_request_duration_seconds Duration of downstream streams, from "
    "first headers to close.\n"
    "# TYPE h2split_service_request_duration_seconds histogram\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.0001\"} 0\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.00025\"} 0\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.0005\"} 0\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.001\"} 0\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.0025\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.005\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.01\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.025\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.05\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"0.1\"} "
    "1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"0.25\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"0.5\"} "
    "1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"1\"} "
    "1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"2.5\"} "
    "2\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"5\"} "
    "2\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"10\"} "
    "2\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"30\"} "
    "2\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"60\"} "
    "2\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/greeter:50051\",le=\"300\"} "
    "2\n"
    "h2split_service_request_duration_seconds_bucket{service=\"default/"
    "greeter:50051\",le=\"+Inf\"} 3\n"
    "h2split_service_request_duration_seconds_sum{service=\"default/greeter:50051\"} 3602.501500\n"
    "h2split_service_request_duration_seconds_count{service=\"default/greeter:50051\"} 3\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.0001\"} 0\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.00025\"} 0\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.0005\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.001\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.0025\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.005\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.01\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.025\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.05\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.1\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.25\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"0.5\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"1\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"2.5\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"5\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"10\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"30\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"60\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"300\"} 1\n"
    "h2split_service_request_duration_seconds_bucket{service=\"shop/cart:9000\",le=\"+Inf\"} 1\n"
    "h2split_service_request_duration_seconds_sum{service=\"shop/cart:9000\"} 0.000300\n"
    "h2split_service_request_duration_seconds_count{service=\"shop/cart:9000\"} 1\n"
    "# HELP h2split_service_grpc_responses_total gRPC streams by the grpc-status the client "
    "got.\n"
    "# TYPE h2split_service_grpc_responses_total counter\n"
    "h2split_service_grpc_responses_total{service=\"default/greeter:50051\",grpc_status=\"0\"} 1\n"
    "h2split_service_grpc_responses_total{service=\"default/greeter:50051\",grpc_status=\"14\"} 1\n"
    "h2split_service_grpc_responses_total{service=\"default/greeter:50051\",grpc_status=\"other\"} "
    "1\n"
    "# HELP h2split_service_http_responses_total Streams by the class of the HTTP status the "
    "client got.\n"
    "# TYPE h2split_service_http_responses_total counter\n"
    "h2split_service_http_responses_total{service=\"default/greeter:50051\",code_class=\"none\"} "
    "1\n"
    "h2split_service_http_responses_total{service=\"default/greeter:50051\",code_class=\"2xx\"} 2\n"
    "h2split_service_http_responses_total{service=\"shop/cart:9000\",code_class=\"4xx\"} 1\n"
    "# HELP h2split_service_requests_total Stream attempts by where their endpoint runs: this "
    "node, this node's zone, or other (unknown: no nodeName or zone to tell).\n"
    "# TYPE h2split_service_requests_total counter\n"
    "h2split_service_requests_total{service=\"default/greeter:50051\",locality=\"node\"} 0\n"
    "h2split_service_requests_total{service=\"default/greeter:50051\",locality=\"zone\"} 2\n"
    "h2split_service_requests_total{service=\"default/greeter:50051\",locality=\"other\"} 1\n"
    "h2split_service_requests_total{service=\"shop/cart:9000\",locality=\"node\"} 0\n"
    "h2split_service_requests_total{service=\"shop/cart:9000\",locality=\"zone\"} 0\n"
    "h2split_service_requests_total{service=\"shop/cart:9000\",locality=\"other\"} 0\n"
    "# HELP h2split_locality_failovers_total Streams that passed over a nearer locality tier: it "
    "had no usable endpoint, was full, was far busier than the rest, or was ramping back.\n"
    "# TYPE h2split_locality_failovers_total counter\n"
    "h2split_locality_failovers_total{service=\"default/greeter:50051\",reason=\"unavailable\"} "
    "1\n"
    "h2split_locality_failovers_total{service=\"default/greeter:50051\",reason=\"full\"} 0\n"
    "h2split_locality_failovers_total{service=\"default/greeter:50051\",reason=\"load\"} 0\n"
    "h2split_locality_failovers_total{service=\"default/greeter:50051\",reason=\"ramp\"} 0\n"
    "h2split_locality_failovers_total{service=\"shop/cart:9000\",reason=\"unavailable\"} 0\n"
    "h2split_locality_failovers_total{service=\"shop/cart:9000\",reason=\"full\"} 0\n"
    "h2split_locality_failovers_total{service=\"shop/cart:9000\",reason=\"load\"} 0\n"
    "h2split_locality_failovers_total{service=\"shop/cart:9000\",reason=\"ramp\"} 0\n"
    "# HELP h2split_service_retries_total Streams sent to another attempt: surely not processed "
    "(unprocessed), a retryable grpc-status (status), a reset before any response (reset), "
    "h2split.io/per-try-timeout (per_try_timeout).\n"
    "# TYPE h2split_service_retries_total counter\n"
    "h2split_service_retries_total{service=\"default/greeter:50051\",reason=\"unprocessed\"} 1\n"
    "h2split_service_retries_total{service=\"default/greeter:50051\",reason=\"status\"} 2\n"
    "h2split_service_retries_total{service=\"default/greeter:50051\",reason=\"reset\"} 0\n"
    "h2split_service_retries_total{service=\"default/greeter:50051\",reason=\"per_try_timeout\"} "
    "0\n"
    "h2split_service_retries_total{service=\"shop/cart:9000\",reason=\"unprocessed\"} 0\n"
    "h2split_service_retries_total{service=\"shop/cart:9000\",reason=\"status\"} 0\n"
    "h2split_service_retries_total{service=\"shop/cart:9000\",reason=\"reset\"} 0\n"
    "h2split_service_retries_total{service=\"shop/cart:9000\",reason=\"per_try_timeout\"} 0\n"
    "# HELP h2split_service_hedges_total Hedged attempts sent (h2split.io/hedging-policy).\n"
    "# TYPE h2split_service_hedges_total counter\n"
    "h2split_service_hedges_total{service=\"default/greeter:50051\"} 1\n"
    "h2split_service_hedges_total{service=\"shop/cart:9000\"} 0\n"
    "# HELP h2split_service_retry_budget_exhausted_total Retries and hedges not made: the "
    "Service's retry budget was spent, so the failure went to the client.\n"
    "# TYPE h2split_service_retry_budget_exhausted_total counter\n"
    "h2split_service_retry_budget_exhausted_total{service=\"default/greeter:50051\"} 0\n"
    "h2split_service_retry_budget_exhausted_total{service=\"shop/cart:9000\"} 1\n"
    "# HELP h2split_service_request_bytes_total Request body bytes received from clients.\n"
    "# TYPE h2split_service_request_bytes_total counter\n"
    "h2split_service_request_bytes_total{service=\"default/greeter:50051\"} 300\n"
    "h2split_service_request_bytes_total{service=\"shop/cart:9000\"} 7\n"
    "# HELP h2split_service_response_bytes_total Response body bytes sent to clients.\n"
    "# TYPE h2split_service_response_bytes_total counter\n"
    "h2split_service_response_bytes_total{service=\"default/greeter:50051\"} 3000\n"
    "h2split_service_response_bytes_total{service=\"shop/cart:9000\"} 0\n"
    "# HELP h2split_service_pending Streams waiting for room under the service's in-flight "
    "caps.\n"
    "# TYPE h2split_service_pending gauge\n"
    "h2split_service_pending{service=\"default/greeter:50051\"} 1\n"
    "h2split_service_pending{service=\"shop/cart:9000\"} 0\n"
    "# HELP h2split_circuit_breaker_rejections_total Streams failed fast by circuit breaking: "
    "the pending queue was full, or the wait timed out.\n"
    "# TYPE h2split_circuit_breaker_rejections_total counter\n"
    "h2split_circuit_breaker_rejections_total{service=\"default/greeter:50051\","
    "reason=\"queue_full\"} 0\n"
    "h2split_circuit_breaker_rejections_total{service=\"default/greeter:50051\","
    "reason=\"timeout\"} 0\n"
    "h2split_circuit_breaker_rejections_total{service=\"shop/cart:9000\",reason=\"queue_full\"} 0\n"
    "h2split_circuit_breaker_rejections_total{service=\"shop/cart:9000\",reason=\"timeout\"} 1\n"
    "# HELP h2split_service_endpoints Endpoints of the service in the state in force.\n"
    "# TYPE h2split_service_endpoints gauge\n"
    "h2split_service_endpoints{service=\"default/greeter:50051\"} 2\n"
    "h2split_service_endpoints{service=\"shop/cart:9000\"} 1\n"
    "# HELP h2split_service_endpoints_usable Endpoints that may take new streams (ready, not "
    "terminating).\n"
    "# TYPE h2split_service_endpoints_usable gauge\n"
    "h2split_service_endpoints_usable{service=\"default/greeter:50051\"} 2\n"
    "h2split_service_endpoints_usable{service=\"shop/cart:9000\"} 1\n"
    "# HELP h2split_metrics_overflow_total Metric updates dropped because a worker's table "
    "was full.\n"
    "# TYPE h2split_metrics_overflow_total counter\n"
    "h2split_metrics_overflow_total{table=\"endpoints\"} 0\n"
    "h2split_metrics_overflow_total{table=\"services\"} 0\n";

static void test_prometheus_text(void **unused)
{
	struct state *st = make_state();
	uint32_t greeter = svc_id(st, "greeter"), cart = svc_id(st, "cart");
	struct metrics *w[2] = {metrics_new(), metrics_new()};
	struct h2s_ip a = ip("10.0.0.1"), b = ip("fd00::2");
	struct metrics_merged *mm;
	char *text;

	(void)unused;
	/* The caller and method families have their own test (test_callers.c). */
	assert_int_equal(metrics_set_call_limits(w[0], 0, 0), 0);
	assert_int_equal(metrics_set_call_limits(w[1], 0, 0), 0);
	/* Worker 0: a finished OK stream on a, one still in flight on a. */
	metrics_endpoint_inflight(w[0], greeter, &a, 8080, +1);
	metrics_stream_done(w[0], greeter, &a, 8080, 0, 200, 1500 * 1000, 100, 1000);
	metrics_endpoint_inflight(w[0], greeter, &a, 8080, -1);
	metrics_endpoint_inflight(w[0], greeter, &a, 8080, +1);
	/* Worker 1: b reset the stream, it was retried, and failed without a status. */
	metrics_endpoint_inflight(w[1], greeter, &b, 8080, +1);
	metrics_upstream_event(w[1], greeter, &b, 8080, METRICS_EV_RESET_RECEIVED);
	metrics_upstream_event(w[1], greeter, &b, 8080, METRICS_EV_RETRY);
	metrics_endpoint_inflight(w[1], greeter, &b, 8080, -1);
	metrics_stream_done(w[1], greeter, &b, 8080, 14, 0, 3600 * SEC, 200, 0);
	/* Worker 1: a grpc-status beyond 16 from a 200, 2.5 s: le="2.5" (inclusive). */
	metrics_stream_done(w[1], greeter, NULL, 0, 99, 200, 2500 * MS, 0, 2000);
	/* Worker 0: a plain HTTP 404 on cart. */
	metrics_stream_done(w[0], cart, NULL, 0, -1, 404, 300 * 1000, 7, 0);
	/* Circuit breaking: two greeter streams waited on two workers, one still
	 * does; a cart stream waited too long. */
	metrics_service_pending(w[0], greeter, +1);
	metrics_service_pending(w[1], greeter, +1);
	metrics_service_pending(w[1], greeter, -1);
	metrics_circuit_breaker_rejection(w[0], cart, METRICS_CB_TIMEOUT);
	/* Locality: two greeter attempts in this zone, one elsewhere after its
	 * zone had nothing usable (failover 1: balancer.h's "unavailable"). */
	metrics_service_routed(w[0], greeter, STATE_LOC_ZONE, 0);
	metrics_service_routed(w[1], greeter, STATE_LOC_ZONE, 0);
	metrics_service_routed(w[1], greeter, STATE_LOC_OTHER, 1);
	/* Retries on both workers (merged), a hedge, a budget exhausted on cart;
	 * an unknown reason is dropped. */
	metrics_service_retry(w[0], greeter, METRICS_RETRY_STATUS);
	metrics_service_retry(w[1], greeter, METRICS_RETRY_STATUS);
	metrics_service_retry(w[1], greeter, METRICS_RETRY_UNPROCESSED);
	metrics_service_retry(w[1], greeter, METRICS_RETRY_MAX);
	metrics_service_hedge(w[0], greeter);
	metrics_service_retry_budget_exhausted(w[0], cart);

	mm = metrics_merge(w, 2);
	text = render(mm, st);
	if (strcmp(text, expected_text))
		fprintf(stderr, "---- got:\n%s", text);
	assert_string_equal(text, expected_text);
	free(text);
	metrics_merged_free(mm);
	metrics_free(w[0]);
	metrics_free(w[1]);
	state_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_merge_across_workers),
	    cmocka_unit_test(test_endpoint_health),
	    cmocka_unit_test(test_histogram_buckets),
	    cmocka_unit_test(test_label_escaping),
	    cmocka_unit_test(test_prune),
	    cmocka_unit_test(test_tables_grow),
	    cmocka_unit_test(test_chunk_table),
	    cmocka_unit_test(test_scrape_races_writer),
	    cmocka_unit_test(test_prometheus_text),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
