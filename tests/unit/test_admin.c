// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for admin.c: a real admin endpoint on 127.0.0.1 (kernel-picked
 * port) over a hand-built daemon (two fake workers with stats and metrics, a
 * hand-built snapshot, no BPF), fetched with plain HTTP/1.0 requests: status
 * codes, readiness flips, metric sums and the JSON views.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/admin.h"
#include "daemon/daemon.h"
#include "telemetry/metrics.h"

struct fixture {
	struct daemon d;
	struct admin *a;
	uint32_t greeter;
};

struct resp {
	int status;
	char *head; /* status line and headers, owned */
	char *body; /* points into head's allocation */
};

static void set_loopback(struct sockaddr_storage *ss, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* One HTTP/1.0 exchange; the server closes when done. */
static struct resp http(uint16_t port, const char *method, const char *path)
{
	struct sockaddr_storage ss;
	struct timeval tv = {.tv_sec = 5};
	struct resp r = {0};
	char req[256], *buf = NULL, *sep;
	size_t len = 0, cap = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t n;

	assert_true(fd >= 0);
	set_loopback(&ss, port);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
	snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	do {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		n = read(fd, buf + len, cap - len);
		assert_true(n >= 0);
		len += (size_t)n;
	} while (n > 0);
	close(fd);
	buf[len] = 0;
	assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r.status), 1);
	sep = strstr(buf, "\r\n\r\n");
	assert_non_null(sep);
	*sep = 0;
	r.head = buf;
	r.body = sep + 4;
	return r;
}

static struct resp get(struct fixture *fx, const char *path)
{
	return http(admin_port(fx->a), "GET", path);
}

static struct state *make_state(void)
{
	struct state *st = state_new();
	struct state_endpoint eps[2] = {{.port = 8080, .ready = true, .serving = true},
					{.port = 8080, .serving = true, .terminating = true}};
	struct state_service s = {.port = 50051, .eps = eps, .n_eps = 2, .n_vips = 1};
	/* Every balancing annotation set; "greeter" runs on the daemon's flags. */
	struct state_endpoint weighted = {.port = 9090, .ready = true, .serving = true, .weight = 3};
	struct state_service tuned = {.ns = "default",
				      .name = "tuned",
				      .port = 9090,
				      .lb = LB_EWMA,
				      .max_inflight_ep = 5,
				      .max_inflight = -1,
				      .max_pending = 7,
				      .slow_start_ms = -1,
				      .health_check = true,
				      .health_interval_ms = 200,
				      .health_service = "my.pkg.Api",
				      .eps = &weighted,
				      .n_eps = 1};

	assert_int_equal(h2s_ip_parse(&eps[0].ip, "10.0.0.1"), 0);
	strcpy(eps[0].pod, "greeter-a");
	assert_int_equal(h2s_ip_parse(&eps[1].ip, "10.0.0.2"), 0);
	strcpy(eps[1].pod, "greeter-b");
	assert_int_equal(h2s_ip_parse(&s.vips[0], "10.96.0.10"), 0);
	strcpy(s.ns, "default");
	strcpy(s.name, "greeter");
	strcpy(s.port_name, "grpc");
	assert_int_equal(state_add_service(st, &s), 0);
	assert_int_equal(state_add_service(st, &tuned), 0);
	assert_int_equal(state_finish(st), 0);
	return st;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	struct daemon *d = &fx->d;
	struct h2s_ip a;

	pthread_mutex_init(&d->snap_lock, NULL);
	set_loopback(&d->cfg.admin, 0);
	d->cfg.lb_policy = LB_LEAST_REQUEST;
	d->cfg.max_inflight_per_endpoint = 100;
	d->cfg.max_inflight_per_service = 50;
	d->cfg.max_pending = 10;
	d->cfg.slow_start_ms = 30000;
	d->snap = registry_snapshot_new(make_state(), 5);
	fx->greeter = d->snap->st->svcs[0].id;
	d->n_workers = 2;
	d->workers = calloc(2, sizeof(*d->workers));
	for (int i = 0; i < 2; i++) {
		d->workers[i].metrics = metrics_new();
		stats_add(&d->workers[i].stats, ST_DOWNSTREAM_CONNS_TOTAL, 3 + (uint64_t)i);
		stats_add(&d->workers[i].stats, ST_DOWNSTREAM_CONNS_ACTIVE, 1);
	}
	h2s_ip_parse(&a, "10.0.0.1");
	metrics_endpoint_inflight(d->workers[0].metrics, fx->greeter, &a, 8080, +1);
	metrics_endpoint_inflight(d->workers[1].metrics, fx->greeter, &a, 8080, +1);
	metrics_endpoint_inflight(d->workers[1].metrics, fx->greeter, &a, 8080, -1);
	metrics_stream_done(d->workers[1].metrics, fx->greeter, &a, 8080, 13, 200, 1000000, 5, 6);
	/* Worker 1 ejected greeter-a for a minute; worker 0 saw it fail 3 times. */
	metrics_endpoint_health(d->workers[0].metrics, fx->greeter, &a, 8080,
				&(struct metrics_endpoint_health){.consec_failures = 3, .ewma_us = 900});
	metrics_endpoint_health(d->workers[1].metrics, fx->greeter, &a, 8080,
				&(struct metrics_endpoint_health){.ejected_until_ms = loop_now_ms() + 60000,
								  .ejections = 2,
								  .ewma_us = 250000,
								  .jitter_us = 1500});
	fx->a = admin_start(d);
	if (!fx->a)
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	admin_stop(fx->a);
	for (int i = 0; i < fx->d.n_workers; i++)
		metrics_free(fx->d.workers[i].metrics);
	free(fx->d.workers);
	registry_snapshot_unref(fx->d.snap);
	pthread_mutex_destroy(&fx->d.snap_lock);
	free(fx);
	return 0;
}

static void test_healthz(void **state)
{
	struct resp r = get(*state, "/healthz");

	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok\n");
	free(r.head);
}

static void test_readyz_flips(void **state)
{
	struct fixture *fx = *state;
	struct resp r = get(fx, "/readyz");

	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "not ready: discovery not synced, not redirecting\n");
	free(r.head);

	atomic_store(&fx->d.synced, true);
	r = get(fx, "/readyz");
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "not ready: not redirecting\n");
	free(r.head);

	atomic_store(&fx->d.redirecting, true);
	r = get(fx, "/readyz");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ready generation=5 version=-\n");
	free(r.head);

	/* The source's version of the applied state, for whoever changed it. */
	snprintf(fx->d.snap->st->version, sizeof(fx->d.snap->st->version), "sha256:0123abcd");
	r = get(fx, "/readyz");
	assert_string_equal(r.body, "ready generation=5 version=sha256:0123abcd\n");
	free(r.head);
	fx->d.snap->st->version[0] = '\0';

	atomic_store(&fx->d.draining, true);
	r = get(fx, "/readyz");
	assert_int_equal(r.status, 503);
	assert_string_equal(r.body, "not ready: draining\n");
	free(r.head);
	atomic_store(&fx->d.draining, false);
	atomic_store(&fx->d.synced, false);
	atomic_store(&fx->d.redirecting, false);
}

static void test_metrics(void **state)
{
	struct fixture *fx = *state;
	struct resp r;

	atomic_store(&fx->d.synced, true);
	r = get(fx, "/metrics");
	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.head, "Content-Type: text/plain; version=0.0.4"));
	assert_non_null(strstr(r.body, "\nh2split_build_info{version=\""));
	assert_non_null(strstr(r.body, "\nh2split_ready 0\n"));
	assert_non_null(strstr(r.body, "\nh2split_discovery_synced 1\n"));
	assert_non_null(strstr(r.body, "\nh2split_redirecting 0\n"));
	assert_non_null(strstr(r.body, "\nh2split_workers 2\n"));
	assert_non_null(strstr(r.body, "\nh2split_state_generation 5\n"));
	assert_non_null(strstr(r.body, "\nh2split_services 2\n"));
	assert_non_null(strstr(r.body, "\nh2split_endpoints 3\n"));
	/* Per-worker counters, summed over the two workers. */
	assert_non_null(strstr(r.body, "# TYPE h2split_downstream_connections_total counter\n"
				       "h2split_downstream_connections_total 7\n"));
	assert_non_null(strstr(r.body, "# TYPE h2split_downstream_connections_active gauge\n"
				       "h2split_downstream_connections_active 2\n"));
	/* Per-endpoint and per-service series, merged, labelled from the snapshot. */
	assert_non_null(
	    strstr(r.body, "\nh2split_endpoint_requests_total{service=\"default/"
			   "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 2\n"));
	assert_non_null(
	    strstr(r.body, "\nh2split_endpoint_requests_active{service=\"default/"
			   "greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 1\n"));
	assert_non_null(
	    strstr(r.body, "# TYPE h2split_endpoint_ejected gauge\nh2split_endpoint_ejected{service="
			   "\"default/greeter:50051\",endpoint=\"10.0.0.1:8080\",pod=\"greeter-a\"} 1\n"));
	assert_non_null(strstr(r.body, "\nh2split_service_grpc_responses_total{service=\"default/"
				       "greeter:50051\",grpc_status=\"13\"} 1\n"));
	assert_non_null(strstr(r.body, "\nh2split_service_endpoints_usable{service=\"default/"
				       "greeter:50051\"} 1\n"));
	/* No BPF loaded: no kernel-side counters. */
	assert_null(strstr(r.body, "h2split_bpf_"));
	atomic_store(&fx->d.synced, false);
	free(r.head);
}

static struct json_object *get_json(struct fixture *fx, const char *path)
{
	struct resp r = get(fx, path);
	struct json_object *o;

	assert_int_equal(r.status, 200);
	assert_non_null(strcasestr(r.head, "Content-Type: application/json"));
	o = json_tokener_parse(r.body);
	assert_non_null(o);
	free(r.head);
	return o;
}

static struct json_object *field(struct json_object *o, const char *k)
{
	struct json_object *v = NULL;

	assert_true(json_object_object_get_ex(o, k, &v));
	return v;
}

static void test_services(void **state)
{
	struct fixture *fx = *state;
	struct json_object *root = get_json(fx, "/services"), *svcs, *s, *b;

	assert_int_equal(json_object_get_int64(field(root, "generation")), 5);
	svcs = field(root, "services");
	assert_int_equal(json_object_array_length(svcs), 2);
	s = json_object_array_get_idx(svcs, 0);
	assert_int_equal(json_object_get_int64(field(s, "id")), fx->greeter);
	assert_string_equal(json_object_get_string(field(s, "namespace")), "default");
	assert_string_equal(json_object_get_string(field(s, "name")), "greeter");
	assert_string_equal(json_object_get_string(field(s, "port_name")), "grpc");
	assert_int_equal(json_object_get_int(field(s, "port")), 50051);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(field(s, "vips"), 0)),
			    "10.96.0.10");
	assert_string_equal(json_object_get_string(field(s, "lb_policy")), "least_request");
	assert_false(json_object_get_boolean(field(s, "upstream_tls")));
	assert_int_equal(json_object_get_int(field(s, "endpoints")), 2);
	assert_int_equal(json_object_get_int(field(s, "endpoints_usable")), 1);
	/* No annotations: the daemon's flags. */
	b = field(s, "balancing");
	assert_string_equal(json_object_get_string(field(b, "policy")), "least_request");
	assert_string_equal(json_object_get_string(field(b, "policy_source")), "default");
	assert_int_equal(json_object_get_int(field(b, "max_inflight_per_endpoint")), 100);
	assert_int_equal(json_object_get_int(field(b, "max_inflight_per_service")), 50);
	assert_int_equal(json_object_get_int(field(b, "max_pending")), 10);
	assert_int_equal(json_object_get_int(field(b, "slow_start_ms")), 30000);
	assert_string_equal(json_object_get_string(field(b, "health_check")), "off");
	assert_false(json_object_object_get_ex(b, "health_check_interval_ms", NULL));
	assert_false(json_object_get_boolean(field(b, "weights")));

	/* Every annotation set: they win, -1 turns a limit or slow start off. */
	s = json_object_array_get_idx(svcs, 1);
	assert_string_equal(json_object_get_string(field(s, "name")), "tuned");
	assert_string_equal(json_object_get_string(field(s, "lb_policy")), "ewma");
	b = field(s, "balancing");
	assert_string_equal(json_object_get_string(field(b, "policy")), "ewma");
	assert_string_equal(json_object_get_string(field(b, "policy_source")), "annotation");
	assert_int_equal(json_object_get_int(field(b, "max_inflight_per_endpoint")), 5);
	assert_int_equal(json_object_get_int(field(b, "max_inflight_per_service")), 0);
	assert_int_equal(json_object_get_int(field(b, "max_pending")), 7);
	assert_int_equal(json_object_get_int(field(b, "slow_start_ms")), 0);
	assert_string_equal(json_object_get_string(field(b, "health_check")), "grpc");
	assert_string_equal(json_object_get_string(field(b, "health_check_service")),
			    "my.pkg.Api");
	assert_int_equal(json_object_get_int(field(b, "health_check_interval_ms")), 200);
	assert_true(json_object_get_boolean(field(b, "weights")));
	json_object_put(root);
}

static void test_endpoints(void **state)
{
	struct fixture *fx = *state;
	struct json_object *root = get_json(fx, "/endpoints"), *s, *eps, *a, *b;

	s = json_object_array_get_idx(field(root, "services"), 0);
	assert_string_equal(json_object_get_string(field(s, "service")), "default/greeter:50051");
	eps = field(s, "endpoints");
	assert_int_equal(json_object_array_length(eps), 2);
	a = json_object_array_get_idx(eps, 0);
	assert_string_equal(json_object_get_string(field(a, "ip")), "10.0.0.1");
	assert_int_equal(json_object_get_int(field(a, "port")), 8080);
	assert_string_equal(json_object_get_string(field(a, "pod")), "greeter-a");
	assert_true(json_object_get_boolean(field(a, "ready")));
	assert_false(json_object_get_boolean(field(a, "terminating")));
	assert_int_equal(json_object_get_int(field(a, "active")), 1);
	assert_int_equal(json_object_get_int(field(a, "requests")), 2);
	assert_int_equal(json_object_get_int(field(a, "failures")), 1); /* INTERNAL */
	/* The balancer's view, merged across workers: ejected by one is ejected. */
	assert_string_equal(json_object_get_string(field(a, "state")), "ejected");
	assert_true(json_object_get_double(field(a, "ejected_until")) > 1.0);
	assert_true(json_object_get_double(field(a, "ejected_until")) <= 60.0);
	assert_int_equal(json_object_get_int(field(a, "consecutive_failures")), 3);
	assert_int_equal(json_object_get_int(field(a, "ejections")), 2);
	assert_int_equal(json_object_get_int(field(a, "ewma_latency_us")), 250000);
	assert_int_equal(json_object_get_int(field(a, "ewma_jitter_us")), 1500);
	b = json_object_array_get_idx(eps, 1);
	assert_string_equal(json_object_get_string(field(b, "pod")), "greeter-b");
	assert_true(json_object_get_boolean(field(b, "terminating")));
	assert_int_equal(json_object_get_int(field(b, "requests")), 0);
	assert_string_equal(json_object_get_string(field(b, "state")), "terminating");
	assert_int_equal(json_object_get_double(field(b, "ejected_until")), 0);
	json_object_put(root);
}

static void test_not_found_and_method(void **state)
{
	struct fixture *fx = *state;
	struct resp r = get(fx, "/nope");

	assert_int_equal(r.status, 404);
	free(r.head);
	r = http(admin_port(fx->a), "POST", "/healthz");
	assert_int_equal(r.status, 405);
	assert_non_null(strcasestr(r.head, "Allow: GET, HEAD"));
	free(r.head);
	r = http(admin_port(fx->a), "HEAD", "/healthz");
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "");
	free(r.head);
}

/* A busy address: NULL, and the message names the address and the errno. */
static void test_listen_failure(void **state)
{
	struct daemon d2 = {0};
	struct sockaddr_storage held;
	socklen_t len = sizeof(held);
	char msg[256] = "", port[16];
	FILE *tmp = tmpfile();
	int saved = dup(2);
	/* A port held WITHOUT SO_REUSEPORT (the admin socket sets it, so that a
	 * surge daemon can bind beside an old one). */
	int busy = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t busy_port;

	(void)state;
	set_loopback(&held, 0);
	assert_int_equal(bind(busy, (struct sockaddr *)&held, sizeof(struct sockaddr_in)), 0);
	assert_int_equal(listen(busy, 1), 0);
	assert_int_equal(getsockname(busy, (struct sockaddr *)&held, &len), 0);
	busy_port = ntohs(((struct sockaddr_in *)&held)->sin_port);
	pthread_mutex_init(&d2.snap_lock, NULL);
	set_loopback(&d2.cfg.admin, busy_port);
	fflush(stderr);
	dup2(fileno(tmp), 2);
	assert_null(admin_start(&d2));
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	assert_non_null(fgets(msg, sizeof(msg), tmp));
	fclose(tmp);
	close(busy);
	snprintf(port, sizeof(port), ":%u: ", busy_port);
	assert_non_null(strstr(msg, "h2splitd: admin: cannot listen on 127.0.0.1:"));
	assert_non_null(strstr(msg, port));
	assert_non_null(strstr(msg, strerror(EADDRINUSE)));
	pthread_mutex_destroy(&d2.snap_lock);
	admin_stop(NULL);
}

/* A rolling update's surge daemon binds the same admin port beside the old one. */
static void test_surge_daemon_binds_beside(void **state)
{
	struct fixture *fx = *state;
	struct daemon d2 = {0};
	struct admin *a2;

	pthread_mutex_init(&d2.snap_lock, NULL);
	set_loopback(&d2.cfg.admin, admin_port(fx->a));
	a2 = admin_start(&d2);
	assert_non_null(a2);
	assert_int_equal(admin_port(a2), admin_port(fx->a));
	admin_stop(a2);
	pthread_mutex_destroy(&d2.snap_lock);
}

/* Stopping closes the listening socket: the port can be bound again at once. */
static void test_stop_releases_port(void **state)
{
	struct daemon d2 = {0};
	struct sockaddr_storage ss;
	struct admin *a;
	uint16_t port;
	int fd;

	(void)state;
	pthread_mutex_init(&d2.snap_lock, NULL);
	set_loopback(&d2.cfg.admin, 0);
	a = admin_start(&d2);
	assert_non_null(a);
	port = admin_port(a);
	assert_int_not_equal(port, 0);
	admin_stop(a);
	set_loopback(&ss, port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_in)), 0);
	close(fd);
	pthread_mutex_destroy(&d2.snap_lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_healthz),	   cmocka_unit_test(test_readyz_flips),
	    cmocka_unit_test(test_metrics),	   cmocka_unit_test(test_services),
	    cmocka_unit_test(test_endpoints),	   cmocka_unit_test(test_not_found_and_method),
	    cmocka_unit_test(test_listen_failure), cmocka_unit_test(test_surge_daemon_binds_beside),
	    cmocka_unit_test(test_stop_releases_port),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
