// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for the object store (k8s_objects.h: k8s_store.c and its
 * parsers) against kubectl-shaped objects: which Service ports opt in, how
 * EndpointSlice ports map onto them (by name, as kube-proxy does), endpoint
 * conditions, deduplication, watch events, parse errors with line and
 * column, and all-or-nothing loading.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "base/log.h"
#include "discovery/k8s_objects.h"

/* Fixtures live next to this file; make unit runs from the repository root. */
static char *read_fixture(const char *name, size_t *len)
{
	char path[512];
	const char *slash = strrchr(__FILE__, '/');
	FILE *f;
	long n;
	char *buf;

	snprintf(path, sizeof(path), "%.*sdata/%s", slash ? (int)(slash - __FILE__ + 1) : 0,
		 __FILE__, name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open fixture %s (run from the repository root)", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static struct k8s_store *load_fixture(void)
{
	struct k8s_store *s = k8s_store_new();
	char err[256] = "";
	size_t len;
	char *json = read_fixture("cluster.json", &len);

	assert_non_null(s);
	if (k8s_store_load_json(s, json, len, err, sizeof(err)))
		fail_msg("cluster.json: %s", err);
	free(json);
	return s;
}

static const struct state_service *find_svc(const struct state *st, const char *ns,
					    const char *name, const char *port_name)
{
	for (int i = 0; i < st->n_svcs; i++) {
		const struct state_service *s = &st->svcs[i];

		if (!strcmp(s->ns, ns) && !strcmp(s->name, name) &&
		    !strcmp(s->port_name, port_name))
			return s;
	}
	return NULL;
}

static const struct state_endpoint *find_ep(const struct state_service *s, const char *ip,
					    uint16_t port)
{
	struct h2s_ip a;

	assert_int_equal(h2s_ip_parse(&a, ip), 0);
	for (int i = 0; i < s->n_eps; i++) {
		if (!memcmp(&s->eps[i].ip, &a, sizeof(a)) && s->eps[i].port == port)
			return &s->eps[i];
	}
	return NULL;
}

static bool has_vip(const struct state_service *s, const char *ip)
{
	struct h2s_ip a;

	assert_int_equal(h2s_ip_parse(&a, ip), 0);
	for (int i = 0; i < s->n_vips; i++) {
		if (!memcmp(&s->vips[i], &a, sizeof(a)))
			return true;
	}
	return false;
}

static void test_opt_in_rules(void **unused)
{
	struct k8s_store *s = load_fixture();
	struct state *st = k8s_store_build(s);

	(void)unused;
	assert_non_null(st);
	/* greeter (appProtocol kubernetes.io/h2c), mixed's h2c port, checkout's two TCP
	 * ports (annotation). Not: headless, enabled "false", no appProtocol,
	 * ExternalName, appProtocol http, UDP. */
	assert_int_equal(st->n_svcs, 4);
	assert_string_equal(st->svcs[0].name, "greeter");
	assert_string_equal(st->svcs[1].name, "mixed");
	assert_string_equal(st->svcs[1].port_name, "grpc");
	assert_string_equal(st->svcs[2].port_name, "admin");
	assert_string_equal(st->svcs[3].port_name, "grpc");
	assert_null(find_svc(st, "default", "greeter-headless", "grpc"));
	assert_null(find_svc(st, "default", "legacy", ""));
	assert_null(find_svc(st, "default", "web", "http"));
	assert_null(find_svc(st, "default", "upstream-db", ""));
	assert_null(find_svc(st, "default", "mixed", "http"));
	assert_null(find_svc(st, "shop", "checkout", "dns"));
	state_free(st);
	k8s_store_free(s);
}

static void test_unnamed_port_conditions_dedup(void **unused)
{
	struct k8s_store *s = load_fixture();
	struct state *st = k8s_store_build(s);
	const struct state_service *g = find_svc(st, "default", "greeter", "");
	const struct state_endpoint *ep;

	(void)unused;
	assert_non_null(g);
	assert_int_equal(g->port, 50051);
	assert_int_equal(g->n_vips, 1);
	assert_true(has_vip(g, "10.96.0.10"));
	assert_int_equal(g->lb, LB_DEFAULT);
	assert_false(g->upstream_tls);
	/* Two slices, 10.244.1.5 in both, the staging namespace's slice not joined. */
	assert_int_equal(g->n_eps, 4);
	assert_null(find_ep(g, "10.244.9.9", 8080));

	ep = find_ep(g, "10.244.1.5", 8080); /* the ready copy wins over the stale one */
	assert_non_null(ep);
	assert_true(state_endpoint_usable(ep));
	assert_string_equal(ep->pod, "greeter-7d9c5b8f6-abcde");

	ep = find_ep(g, "10.244.2.7", 8080); /* conditions {}: nil ready means ready */
	assert_non_null(ep);
	assert_true(ep->ready && ep->serving && !ep->terminating);
	assert_true(state_endpoint_usable(ep));

	ep = find_ep(g, "10.244.3.9", 8080); /* terminating: no new streams */
	assert_non_null(ep);
	assert_false(state_endpoint_usable(ep));
	assert_true(state_endpoint_fallback(ep));

	ep = find_ep(g, "10.244.4.2", 8080);
	assert_non_null(ep);
	assert_true(state_endpoint_usable(ep));
	state_free(st);
	k8s_store_free(s);
}

static void test_named_ports_dual_stack(void **unused)
{
	struct k8s_store *s = load_fixture();
	struct state *st = k8s_store_build(s);
	const struct state_service *grpc = find_svc(st, "shop", "checkout", "grpc");
	const struct state_service *admin = find_svc(st, "shop", "checkout", "admin");
	const struct state_service *mixed = find_svc(st, "default", "mixed", "grpc");
	struct h2s_ip vip6;

	(void)unused;
	assert_non_null(grpc);
	assert_non_null(admin);
	assert_int_equal(grpc->port, 9000);
	assert_int_equal(admin->port, 9001);
	assert_int_equal(grpc->n_vips, 2);
	assert_true(has_vip(grpc, "10.96.5.5"));
	assert_true(has_vip(grpc, "fd00:10:96::5"));
	assert_int_equal(grpc->lb, LB_ROUND_ROBIN);
	assert_true(grpc->upstream_tls);
	/* Circuit breaking annotations: "0" lifts a cap (-1), counts are kept. */
	assert_int_equal(grpc->max_inflight, -1);
	assert_int_equal(grpc->max_inflight_ep, 8);
	assert_int_equal(grpc->max_pending, 100);
	assert_int_equal(grpc->slow_start_ms, 30000);
	assert_true(grpc->health_check);
	assert_int_equal(grpc->health_interval_ms, 2000);
	assert_string_equal(grpc->health_service, "shop.Checkout");
	assert_true(admin->health_check); /* every port of the Service */
	/* h2split.io/weights by targetRef pod: both families of pod aaaaa weigh 3;
	 * bbbbb, listed twice, its lowest; bad items are skipped. */
	assert_int_equal(find_ep(grpc, "10.244.1.20", 9090)->weight, 3);
	assert_int_equal(find_ep(grpc, "fd00:10:244:1::20", 9090)->weight, 3);
	assert_int_equal(find_ep(grpc, "10.244.2.21", 9090)->weight, 5);
	assert_int_equal(find_ep(admin, "10.244.1.20", 9191)->weight, 3);
	/* Each service port gets the slice port of the same name, IPv4 and IPv6 slices. */
	assert_int_equal(grpc->n_eps, 3);
	assert_non_null(find_ep(grpc, "10.244.1.20", 9090));
	assert_non_null(find_ep(grpc, "10.244.2.21", 9090));
	assert_non_null(find_ep(grpc, "fd00:10:244:1::20", 9090));
	assert_int_equal(admin->n_eps, 3);
	assert_non_null(find_ep(admin, "10.244.1.20", 9191));
	assert_non_null(find_ep(admin, "fd00:10:244:1::20", 9191));
	/* Both VIPs find the service. */
	assert_int_equal(h2s_ip_parse(&vip6, "fd00:10:96::5"), 0);
	assert_ptr_equal(state_find_vip(st, &vip6, 9001), admin);
	/* An unknown lb-policy falls back to the daemon default; null endpoints are none. */
	assert_non_null(mixed);
	assert_int_equal(mixed->lb, LB_DEFAULT);
	assert_int_equal(mixed->n_eps, 0);
	/* Bad counts are ignored (the daemon's flag applies); "0" pending: no queue. */
	assert_int_equal(mixed->max_inflight, 0);
	assert_int_equal(mixed->max_inflight_ep, 0);
	assert_int_equal(mixed->max_pending, -1);
	assert_int_equal(mixed->slow_start_ms, 0);
	assert_false(mixed->health_check); /* only "grpc" */
	assert_int_equal(mixed->health_interval_ms, 0);
	state_free(st);
	k8s_store_free(s);
}

static struct json_object *parse(const char *json)
{
	struct json_object *o = json_tokener_parse(json);

	assert_non_null(o);
	return o;
}

static int apply(struct k8s_store *s, enum k8s_event ev, const char *json, const char **err)
{
	struct json_object *o = parse(json);
	int rc = k8s_store_apply(s, ev, o, err);

	json_object_put(o);
	return rc;
}

static const char slice_9qzv4_modified[] =
    "{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\","
    "\"metadata\":{\"name\":\"greeter-9qzv4\",\"namespace\":\"default\","
    "\"labels\":{\"kubernetes.io/service-name\":\"greeter\"}},"
    "\"addressType\":\"IPv4\",\"ports\":[{\"name\":\"\",\"port\":8080,\"protocol\":\"TCP\"}],"
    "\"endpoints\":[{\"addresses\":[\"10.244.5.5\"],\"conditions\":{\"ready\":true}}]}";

static void test_watch_events(void **unused)
{
	struct k8s_store *s = load_fixture();
	const char *err = NULL;
	struct state *st;
	const struct state_service *g;

	(void)unused;
	/* MODIFIED replaces the whole slice: 10.244.4.2 goes, 10.244.5.5 comes. */
	assert_int_equal(apply(s, K8S_MODIFIED, slice_9qzv4_modified, &err), 0);
	st = k8s_store_build(s);
	g = find_svc(st, "default", "greeter", "");
	assert_int_equal(g->n_eps, 4);
	assert_null(find_ep(g, "10.244.4.2", 8080));
	assert_non_null(find_ep(g, "10.244.5.5", 8080));
	state_free(st);

	/* DELETED needs only the name. */
	assert_int_equal(
	    apply(s, K8S_DELETED,
		  "{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery.k8s.io/v1\","
		  "\"metadata\":{\"name\":\"greeter-x7k2p\",\"namespace\":\"default\"}}",
		  &err),
	    0);
	st = k8s_store_build(s);
	g = find_svc(st, "default", "greeter", "");
	assert_int_equal(g->n_eps, 1);
	assert_non_null(find_ep(g, "10.244.5.5", 8080));
	state_free(st);

	assert_int_equal(apply(s, K8S_DELETED,
			       "{\"kind\":\"Service\",\"apiVersion\":\"v1\","
			       "\"metadata\":{\"name\":\"checkout\",\"namespace\":\"shop\"}}",
			       &err),
			 0);
	/* Deleting what is not there, and kinds the store does not keep, are no-ops. */
	assert_int_equal(
	    apply(s, K8S_DELETED, "{\"kind\":\"Service\",\"metadata\":{\"name\":\"nope\"}}", &err),
	    0);
	assert_int_equal(
	    apply(s, K8S_ADDED, "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}", &err), 0);
	st = k8s_store_build(s);
	assert_int_equal(st->n_svcs, 2);
	assert_null(find_svc(st, "shop", "checkout", "grpc"));
	state_free(st);
	k8s_store_free(s);
}

/* |cached| holds what a build without a cache makes of |s|, endpoint for endpoint. */
static void same_as_uncached(const struct k8s_store *s, const struct state *cached)
{
	struct state *fresh = k8s_store_build(s);

	assert_non_null(fresh);
	assert_int_equal(cached->n_svcs, fresh->n_svcs);
	for (int i = 0; i < fresh->n_svcs; i++) {
		const struct state_service *x = &cached->svcs[i], *y = &fresh->svcs[i];

		assert_string_equal(x->name, y->name);
		assert_string_equal(x->port_name, y->port_name);
		assert_int_equal(x->n_eps, y->n_eps);
		assert_memory_equal(x->eps, y->eps, (size_t)y->n_eps * sizeof(*y->eps));
	}
	state_free(fresh);
}

static void counts_are(const struct k8s_build_cache *c, int reused, int built)
{
	int r, b;

	k8s_build_cache_counts(c, &r, &b);
	assert_int_equal(r, reused);
	assert_int_equal(b, built);
}

/* A build with a cache gathers again only the Services whose object or
 * EndpointSlices changed; the others share their endpoints with the last
 * state, and every build equals one without a cache. */
static void test_build_cache_reuses_unchanged(void **unused)
{
	struct k8s_store *s = load_fixture();
	struct k8s_build_cache *c = k8s_build_cache_new();
	struct state *st1, *st2, *st3, *st4;
	const struct state_service *g;
	const char *err = NULL;

	(void)unused;
	assert_non_null(c);
	st1 = k8s_store_build_cached(s, c);
	assert_non_null(st1);
	counts_are(c, 0, 4);
	same_as_uncached(s, st1);
	k8s_build_cache_commit(c, st1);

	st2 = k8s_store_build_cached(s, c);
	counts_are(c, 4, 0);
	same_as_uncached(s, st2);
	for (int i = 0; i < st2->n_svcs; i++)
		if (st2->svcs[i].n_eps)
			assert_ptr_equal(st2->svcs[i].eps, st1->svcs[i].eps);
	k8s_build_cache_commit(c, st2);
	state_free(st1); /* st2 and the cache still hold the endpoints */

	/* One slice of greeter replaced: greeter alone is gathered again. */
	assert_int_equal(apply(s, K8S_MODIFIED, slice_9qzv4_modified, &err), 0);
	st3 = k8s_store_build_cached(s, c);
	counts_are(c, 3, 1);
	same_as_uncached(s, st3);
	g = find_svc(st3, "default", "greeter", "");
	assert_non_null(find_ep(g, "10.244.5.5", 8080));
	assert_null(find_ep(g, "10.244.4.2", 8080));
	assert_ptr_not_equal(g->eps, find_svc(st2, "default", "greeter", "")->eps);
	assert_ptr_equal(find_svc(st3, "shop", "checkout", "grpc")->eps,
			 find_svc(st2, "shop", "checkout", "grpc")->eps);
	k8s_build_cache_commit(c, st3);
	state_free(st2);

	/* A slice deleted (no revision is newer, one slice fewer). */
	assert_int_equal(
	    apply(s, K8S_DELETED,
		  "{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery.k8s.io/v1\","
		  "\"metadata\":{\"name\":\"greeter-x7k2p\",\"namespace\":\"default\"}}",
		  &err),
	    0);
	/* Without a commit the next build still reuses what is unchanged. */
	st4 = k8s_store_build_cached(s, c);
	state_free(st4);
	st4 = k8s_store_build_cached(s, c);
	counts_are(c, 3, 1);
	same_as_uncached(s, st4);
	assert_int_equal(find_svc(st4, "default", "greeter", "")->n_eps, 1);
	k8s_build_cache_commit(c, st4);
	state_free(st3);
	state_free(st4);
	k8s_build_cache_free(c);
	k8s_store_free(s);
}

/* A state's services as "ns/name:port id=N eps=N" lines, for before/after comparisons. */
static void summarize(const struct state *st, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < st->n_svcs && off < len; i++) {
		const struct state_service *s = &st->svcs[i];

		off += (size_t)snprintf(buf + off, len - off, "%s/%s:%s id=%u eps=%d\n", s->ns,
					s->name, s->port_name, s->id, s->n_eps);
	}
}

static void test_malformed_object_store_unchanged(void **unused)
{
	static const char *const bad[] = {
	    /* port is a string */
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"greeter\",\"namespace\":\"default\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.0.10\",\"ports\":[{\"port\":\"50051\","
	    "\"appProtocol\":\"grpc\"}]}}",
	    /* no metadata */
	    "{\"kind\":\"Service\",\"spec\":{}}",
	    /* clusterIP not an address */
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"greeter\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.0.999\"}}",
	    /* spec is an array */
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"greeter\"},\"spec\":[]}",
	    /* IPv6 address in an IPv4 slice */
	    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"greeter-9qzv4\"},"
	    "\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[\"fd00::1\"]}]}",
	    /* ready is a string */
	    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"greeter-9qzv4\"},"
	    "\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[\"10.0.0.1\"],"
	    "\"conditions\":{\"ready\":\"yes\"}}]}",
	    /* endpoints without addresses */
	    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"greeter-9qzv4\"},"
	    "\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[]}]}",
	    /* port out of range */
	    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"greeter-9qzv4\"},"
	    "\"addressType\":\"IPv4\",\"ports\":[{\"port\":70000}],\"endpoints\":[]}",
	    /* no kind */
	    "{\"metadata\":{\"name\":\"greeter\"}}",
	};
	struct k8s_store *s = load_fixture();
	char before[4096], after[4096];
	struct state *st = k8s_store_build(s);

	(void)unused;
	summarize(st, before, sizeof(before));
	state_free(st);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err = NULL;

		assert_int_equal(apply(s, K8S_MODIFIED, bad[i], &err), -EINVAL);
		assert_non_null(err);
		st = k8s_store_build(s);
		summarize(st, after, sizeof(after));
		state_free(st);
		assert_string_equal(before, after);
	}
	{
		const char *err = NULL;

		assert_int_equal(apply(s, K8S_ADDED, bad[0], &err), -EINVAL);
		assert_string_equal(err, "spec.ports[].port: expected an integer 1-65535");
	}
	k8s_store_free(s);
}

static void expect_load_error(const char *json, const char *want)
{
	struct k8s_store *s = load_fixture();
	char err[256] = "", before[4096], after[4096];
	struct state *st = k8s_store_build(s);

	summarize(st, before, sizeof(before));
	state_free(st);
	assert_int_equal(k8s_store_load_json(s, json, strlen(json), err, sizeof(err)), -EINVAL);
	assert_string_equal(err, want);
	st = k8s_store_build(s);
	summarize(st, after, sizeof(after));
	state_free(st);
	assert_string_equal(before, after);
	k8s_store_free(s);
}

static void test_json_errors_have_position(void **unused)
{
	(void)unused;
	expect_load_error("{\n  \"kind\": \"List\",\n  \"items\": [,]\n}",
			  "line 3 column 13: unexpected character");
	expect_load_error("{\n  \"kind\": \"List\",\n  \"items\": [\n",
			  "line 4 column 1: unexpected end of input");
	expect_load_error("{\"kind\": \"List\", \"items\": [],}",
			  "line 1 column 30: unexpected character");
	expect_load_error("", "line 1 column 1: unexpected end of input");
	expect_load_error("[1, 2]", "expected a JSON object (a List or a single object)");
	expect_load_error("{\"kind\":\"List\",\"items\":{}}", "List items: expected an array");
}

static void test_load_all_or_nothing(void **unused)
{
	(void)unused;
	/* The good Service before the bad one must not be applied either. */
	expect_load_error(
	    "{\"kind\":\"List\",\"items\":["
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"extra\",\"namespace\":\"default\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.0.77\",\"ports\":[{\"port\":80,"
	    "\"appProtocol\":\"grpc\"}]}},"
	    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"extra-1\",\"namespace\":"
	    "\"default\"},"
	    "\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[\"10.0.0.300\"]}]}]}",
	    "items[1] EndpointSlice default/extra-1: endpoints[].addresses: expected IP addresses");
}

static void test_typed_list_and_single_object(void **unused)
{
	static const char svc_list[] =
	    "{\"kind\":\"ServiceList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":"
	    "\"9\"},"
	    "\"items\":[{\"metadata\":{\"name\":\"a\",\"namespace\":\"x\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.1.1\",\"ports\":[{\"port\":80,"
	    "\"appProtocol\":\"grpc\"}]}}]}";
	static const char one_slice[] =
	    "{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery.k8s.io/v1\","
	    "\"metadata\":{\"name\":\"a-1\",\"namespace\":\"x\","
	    "\"labels\":{\"kubernetes.io/service-name\":\"a\"}},\"addressType\":\"IPv4\","
	    "\"ports\":[{\"port\":8080}],"
	    "\"endpoints\":[{\"addresses\":[\"10.1.1.1\"]},{\"addresses\":[\"10.1.1.2\"],"
	    "\"conditions\":{\"ready\":false}}]}";
	struct k8s_store *s = k8s_store_new();
	char err[256] = "";
	struct state *st;

	(void)unused;
	assert_int_equal(k8s_store_load_json(s, svc_list, strlen(svc_list), err, sizeof(err)), 0);
	assert_int_equal(k8s_store_load_json(s, one_slice, strlen(one_slice), err, sizeof(err)), 0);
	st = k8s_store_build(s);
	assert_int_equal(st->n_svcs, 1);
	assert_int_equal(st->svcs[0].n_eps, 2);
	assert_non_null(find_ep(&st->svcs[0], "10.1.1.1", 8080));
	assert_false(find_ep(&st->svcs[0], "10.1.1.2", 8080)->ready);
	state_free(st);
	k8s_store_free(s);
}

/* Locality fields: nodeName, zone, hints; trafficDistribution,
 * h2split.io/topology, internalTrafficPolicy; sessionAffinity: ClientIP left
 * to kube-proxy; Node objects' zone label. */
static void test_locality_fields(void **unused)
{
	static const char list[] =
	    "{\"kind\":\"List\",\"items\":["
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\",\"namespace\":\"x\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.1.1\",\"trafficDistribution\":\"PreferClose\","
	    "\"internalTrafficPolicy\":\"Local\",\"ports\":[{\"port\":80,\"appProtocol\":"
	    "\"grpc\"}]}},"
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"b\",\"namespace\":\"x\","
	    "\"annotations\":{\"h2split.io/topology\":\"node\"}},"
	    "\"spec\":{\"clusterIP\":\"10.96.1.2\",\"trafficDistribution\":\"PreferSameZone\","
	    "\"ports\":[{\"port\":80,\"appProtocol\":\"grpc\"}]}},"
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"c\",\"namespace\":\"x\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.1.3\",\"sessionAffinity\":\"ClientIP\","
	    "\"ports\":[{\"port\":80,\"appProtocol\":\"grpc\"}]}},"
	    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"a-1\",\"namespace\":\"x\","
	    "\"labels\":{\"kubernetes.io/service-name\":\"a\"}},\"addressType\":\"IPv4\","
	    "\"ports\":[{\"port\":8080}],"
	    "\"endpoints\":[{\"addresses\":[\"10.1.1.1\"],\"nodeName\":\"n1\",\"zone\":\"z1\","
	    "\"hints\":{\"forZones\":[{\"name\":\"z1\"},{\"name\":\"z2\"}],"
	    "\"forNodes\":[{\"name\":\"n1\"}]}},{\"addresses\":[\"10.1.1.2\"]}]},"
	    "{\"kind\":\"Node\",\"metadata\":{\"name\":\"n1\",\"labels\":"
	    "{\"topology.kubernetes.io/zone\":\"z1\"}}},"
	    "{\"kind\":\"Node\",\"metadata\":{\"name\":\"n2\"}}]}";
	struct k8s_store *s = k8s_store_new();
	const struct state_endpoint *ep;
	char err[256] = "";
	struct state *st;

	(void)unused;
	if (k8s_store_load_json(s, list, strlen(list), err, sizeof(err)))
		fail_msg("%s", err);
	st = k8s_store_build(s);
	assert_int_equal(st->n_svcs, 2); /* c: sessionAffinity ClientIP, left to kube-proxy */
	assert_null(find_svc(st, "x", "c", ""));
	assert_int_equal(find_svc(st, "x", "a", "")->topology, STATE_TOPO_ZONE);
	assert_true(find_svc(st, "x", "a", "")->local_only);
	assert_int_equal(find_svc(st, "x", "b", "")->topology, STATE_TOPO_NODE);
	assert_false(find_svc(st, "x", "b", "")->local_only);
	ep = find_ep(find_svc(st, "x", "a", ""), "10.1.1.1", 8080);
	assert_string_equal(ep->node, "n1");
	assert_string_equal(ep->zone, "z1");
	assert_string_equal(ep->for_zones, "z1,z2,");
	assert_string_equal(ep->for_nodes, "n1,");
	ep = find_ep(find_svc(st, "x", "a", ""), "10.1.1.2", 8080);
	assert_string_equal(ep->node, "");
	assert_string_equal(ep->for_zones, "");
	assert_int_equal(st->n_nodes, 2);
	for (int i = 0; i < st->n_nodes; i++)
		assert_string_equal(st->nodes[i].zone, strcmp(st->nodes[i].name, "n1") ? "" : "z1");
	state_free(st);
	k8s_store_free(s);
}

/* h2split.io/retry-policy, hedging-policy and per-try-timeout reach the
 * state; a bad value (a typo in the JSON, an unknown field) applies nothing
 * and leaves the Service routed. */
static void test_retry_annotations(void **unused)
{
	static const char list[] =
	    "{\"kind\":\"List\",\"items\":["
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\",\"namespace\":\"x\","
	    "\"annotations\":{\"h2split.io/retry-policy\":\"{\\\"maxAttempts\\\":4,"
	    "\\\"initialBackoff\\\":\\\"0.02s\\\",\\\"maxBackoff\\\":\\\"1s\\\","
	    "\\\"backoffMultiplier\\\":3,\\\"retryableStatusCodes\\\":[\\\"UNAVAILABLE\\\"],"
	    "\\\"methods\\\":[\\\"p.S/\\\"]}\","
	    "\"h2split.io/hedging-policy\":\"{\\\"maxAttempts\\\":2,"
	    "\\\"hedgingDelay\\\":\\\"0.01s\\\"}\","
	    "\"h2split.io/per-try-timeout\":\"250ms\"}},"
	    "\"spec\":{\"clusterIP\":\"10.96.1.1\",\"ports\":[{\"port\":80,\"appProtocol\":"
	    "\"grpc\"}]}},"
	    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"b\",\"namespace\":\"x\","
	    "\"annotations\":{\"h2split.io/retry-policy\":\"{\\\"maxAttempts\\\":3,"
	    "\\\"initalBackoff\\\":\\\"0.02s\\\"}\","
	    "\"h2split.io/hedging-policy\":\"{maxAttempts: 2}\","
	    "\"h2split.io/per-try-timeout\":\"0\"}},"
	    "\"spec\":{\"clusterIP\":\"10.96.1.2\",\"ports\":[{\"port\":80,\"appProtocol\":"
	    "\"grpc\"}]}}]}";
	struct k8s_store *s = k8s_store_new();
	const struct state_service *a, *b;
	char err[256] = "";
	struct state *st;

	(void)unused;
	if (k8s_store_load_json(s, list, strlen(list), err, sizeof(err)))
		fail_msg("%s", err);
	st = k8s_store_build(s);
	assert_int_equal(st->n_svcs, 2);
	a = find_svc(st, "x", "a", "");
	assert_int_equal(a->retry.kind, RPC_POLICY_RETRY);
	assert_int_equal(a->retry.max_attempts, 4);
	assert_int_equal(a->retry.initial_backoff_ms, 20);
	assert_string_equal(a->retry.methods, "p.S/\n");
	assert_int_equal(a->hedge.kind, RPC_POLICY_HEDGE);
	assert_int_equal(a->hedge.hedging_delay_ms, 10);
	assert_int_equal(a->per_try_timeout_ms, 250);
	b = find_svc(st, "x", "b", "");
	assert_int_equal(b->retry.kind, RPC_POLICY_NONE);
	assert_int_equal(b->hedge.kind, RPC_POLICY_NONE);
	assert_int_equal(b->per_try_timeout_ms, 0);
	state_free(st);
	k8s_store_free(s);
}

static void test_ids_stable_across_reloads(void **unused)
{
	struct k8s_store *s1 = load_fixture(), *s2 = load_fixture();
	struct state *a, *b;
	const char *err;

	(void)unused;
	/* A new service elsewhere must not move anyone else's id. */
	assert_int_equal(apply(s2, K8S_ADDED,
			       "{\"kind\":\"Service\",\"metadata\":{\"name\":\"aaa\",\"namespace\":"
			       "\"default\"},\"spec\":{\"clusterIP\":\"10.96.0.2\",\"ports\":[{"
			       "\"port\":1,\"appProtocol\":\"grpc\"}]}}",
			       &err),
			 0);
	a = k8s_store_build(s1);
	b = k8s_store_build(s2);
	assert_int_equal(b->n_svcs, a->n_svcs + 1);
	for (int i = 0; i < a->n_svcs; i++) {
		const struct state_service *x = &a->svcs[i];
		const struct state_service *y = find_svc(b, x->ns, x->name, x->port_name);

		assert_non_null(y);
		assert_int_equal(x->id, y->id);
		assert_ptr_equal(state_find_id(b, x->id), y);
	}
	state_free(a);
	state_free(b);
	k8s_store_free(s1);
	k8s_store_free(s2);
}

/* Thousands of services and slices: the store and build must not be quadratic. */
static void test_many_objects(void **unused)
{
	enum { N = 5000 };
	struct k8s_store *s = k8s_store_new();
	char json[1024];
	const char *err;
	struct state *st;
	struct h2s_ip vip;

	(void)unused;
	for (int i = 0; i < N; i++) {
		snprintf(json, sizeof(json),
			 "{\"kind\":\"Service\",\"metadata\":{\"name\":\"svc-%d\",\"namespace\":"
			 "\"ns-%d\"},\"spec\":{\"clusterIP\":\"10.%d.%d.1\",\"ports\":[{\"name\":"
			 "\"grpc\",\"port\":50051,\"appProtocol\":\"grpc\"}]}}",
			 i, i % 50, 100 + i / 256, i % 256);
		assert_int_equal(apply(s, K8S_ADDED, json, &err), 0);
		snprintf(json, sizeof(json),
			 "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"svc-%d-abc\","
			 "\"namespace\":\"ns-%d\",\"labels\":{\"kubernetes.io/service-name\":"
			 "\"svc-%d\"}},\"addressType\":\"IPv4\",\"ports\":[{\"name\":\"grpc\","
			 "\"port\":8080}],\"endpoints\":[{\"addresses\":[\"10.244.%d.%d\"]},"
			 "{\"addresses\":[\"10.245.%d.%d\"]}]}",
			 i, i % 50, i, i / 256, i % 256, i / 256, i % 256);
		assert_int_equal(apply(s, K8S_ADDED, json, &err), 0);
	}
	st = k8s_store_build(s);
	assert_int_equal(st->n_svcs, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(st->svcs[i].n_eps, 2);
	assert_int_equal(h2s_ip_parse(&vip, "10.110.123.1"), 0); /* i = 10*256 + 123 */
	assert_string_equal(state_find_vip(st, &vip, 50051)->name, "svc-2683");
	state_free(st);
	k8s_store_clear(s);
	st = k8s_store_build(s);
	assert_int_equal(st->n_svcs, 0);
	state_free(st);
	k8s_store_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_opt_in_rules),
	    cmocka_unit_test(test_unnamed_port_conditions_dedup),
	    cmocka_unit_test(test_named_ports_dual_stack),
	    cmocka_unit_test(test_watch_events),
	    cmocka_unit_test(test_malformed_object_store_unchanged),
	    cmocka_unit_test(test_json_errors_have_position),
	    cmocka_unit_test(test_load_all_or_nothing),
	    cmocka_unit_test(test_typed_list_and_single_object),
	    cmocka_unit_test(test_locality_fields),
	    cmocka_unit_test(test_retry_annotations),
	    cmocka_unit_test(test_ids_stable_across_reloads),
	    cmocka_unit_test(test_many_objects),
	    cmocka_unit_test(test_build_cache_reuses_unchanged),
	};

	log_set_level(LOG_ERROR); /* the fixture's bad annotations warn on every load */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
