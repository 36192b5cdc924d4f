// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for who calls whom (issue #23): the bounded per-service label
 * tables (call_table.c: limits, `other`, overflow, merge across workers,
 * pruning), the caller lookup by cgroup id (state.c), the workload a pod's
 * owner gives (k8s_pods.c), the Prometheus families (metrics.c), and the
 * tap's rings (tap.c).
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
#include <sys/stat.h>
#include <unistd.h>

#include "discovery/k8s_pods.h"
#include "telemetry/call_table.h"
#include "telemetry/metrics.h"
#include "telemetry/tap.h"

#define MS 1000000ull

/* A stream of |svc| from cgroup |cg| to :path |p| (|n| bytes) that took |ns|. */
static struct metrics_call call(uint64_t cg, uint32_t svc, const uint8_t *p, size_t n, int grpc,
				uint64_t ns)
{
	return (struct metrics_call){.cgroup_id = cg,
				     .service_id = svc,
				     .path = p,
				     .path_len = n,
				     .grpc_status = grpc,
				     .http_status = 200,
				     .start_ns = 1000 * MS,
				     .end_ns = 1000 * MS + ns};
}

static void rec(struct call_table *t, uint32_t svc, const char *label, int grpc)
{
	call_table_record(t, svc, label, strlen(label), grpc, 2 * MS);
}

static const struct call_row *row(const struct call_rows *r, uint32_t svc, const char *label)
{
	for (int i = 0; i < r->n; i++)
		if (r->rows[i].svc == svc &&
		    (label ? !r->rows[i].other && !strcmp(r->rows[i].label, label)
			   : r->rows[i].other))
			return &r->rows[i];
	return NULL;
}

static void test_labels_beyond_the_limit_share_other(void **unused)
{
	struct call_table *t = call_table_new("methods", 64, 3);
	struct call_rows r;
	char name[32];

	(void)unused;
	assert_non_null(t);
	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "pkg.S/M%d", i);
		for (int k = 0; k <= i; k++)
			rec(t, 7, name, 0);
	}
	rec(t, 7, "pkg.S/M0", 5); /* an existing series stays its own */
	rec(t, 8, "pkg.S/M9", 0); /* another service has its own limit */
	assert_int_equal(call_table_merge(&t, 1, 3, &r), 0);
	assert_int_equal(r.n, 5); /* svc 7: M0 M1 M2 other; svc 8: M9 */
	assert_int_equal(call_row_count(row(&r, 7, "pkg.S/M0")), 2);
	assert_int_equal(row(&r, 7, "pkg.S/M0")->c[CT_GRPC + 5], 1);
	assert_int_equal(call_row_count(row(&r, 7, "pkg.S/M2")), 3);
	assert_null(row(&r, 7, "pkg.S/M3"));
	/* M3..M9: 4 + 5 + ... + 10 streams. */
	assert_int_equal(call_row_count(row(&r, 7, NULL)), 49);
	assert_int_equal(r.overflow, 49);
	assert_int_equal(call_row_count(row(&r, 8, "pkg.S/M9")), 1);
	assert_null(row(&r, 8, NULL));
	call_rows_free(&r);
	call_table_free(t);
}

static void test_status_and_histogram(void **unused)
{
	struct call_table *t = call_table_new("callers", 16, 10);
	struct call_rows r;
	const struct call_row *x;

	(void)unused;
	call_table_record(t, 1, "a/pod/x", 7, 0, 100 * 1000);	     /* le=0.0001 */
	call_table_record(t, 1, "a/pod/x", 7, 99, 2500 * MS);	     /* other code, le=2.5 */
	call_table_record(t, 1, "a/pod/x", 7, -1, 1000 * 1000 * MS); /* not gRPC, +Inf */
	assert_int_equal(call_table_merge(&t, 1, 10, &r), 0);
	x = row(&r, 1, "a/pod/x");
	assert_non_null(x);
	assert_int_equal(x->c[CT_GRPC + 0], 1);
	assert_int_equal(x->c[CT_GRPC + METRICS_GRPC_CODES], 1);
	assert_int_equal(x->c[CT_GRPC + METRICS_GRPC_CODES + 1], 1);
	assert_int_equal(x->c[CT_BUCKETS + 0], 1);
	assert_int_equal(x->c[CT_BUCKETS + 13], 1); /* "2.5" */
	assert_int_equal(x->c[CT_BUCKETS + METRICS_N_BUCKETS], 1);
	assert_int_equal(x->c[CT_SUM_US], 100 + 2500000 + 1000000000ull);
	call_rows_free(&r);
	call_table_free(t);
}

static void test_too_long_label_is_other(void **unused)
{
	struct call_table *t = call_table_new("methods", 16, 10);
	char long_name[CALL_LABEL_MAX + 10];
	struct call_rows r;

	(void)unused;
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	rec(t, 1, long_name, 0);
	long_name[CALL_LABEL_MAX - 1] = 0; /* the longest that fits */
	rec(t, 1, long_name, 0);
	assert_int_equal(call_table_merge(&t, 1, 10, &r), 0);
	assert_int_equal(r.n, 2);
	assert_int_equal(call_row_count(row(&r, 1, long_name)), 1);
	assert_int_equal(call_row_count(row(&r, 1, NULL)), 1);
	call_rows_free(&r);
	call_table_free(t);
}

/* Two workers each give their first labels series: the scrape keeps the
 * busiest |max| of the union, sums equal labels, and folds the rest. */
static void test_merge_sums_and_caps_the_union(void **unused)
{
	struct call_table *w[3] = {call_table_new("m", 64, 2), NULL, call_table_new("m", 64, 2)};
	struct call_rows r;

	(void)unused;
	rec(w[0], 1, "A", 0);
	rec(w[0], 1, "B", 0);
	rec(w[0], 1, "C", 0); /* other on worker 0 */
	rec(w[2], 1, "B", 0);
	rec(w[2], 1, "B", 0);
	rec(w[2], 1, "D", 0);
	rec(w[2], 1, "D", 0);
	rec(w[2], 1, "D", 0);
	assert_int_equal(call_table_merge(w, 3, 2, &r), 0);
	assert_int_equal(r.n, 3);
	assert_int_equal(call_row_count(row(&r, 1, "D")), 3);
	assert_int_equal(call_row_count(row(&r, 1, "B")), 3);
	assert_null(row(&r, 1, "A"));
	assert_int_equal(call_row_count(row(&r, 1, NULL)), 2); /* A and C */
	assert_int_equal(r.overflow, 2);
	/* Sorted: labels by name, then other. */
	assert_string_equal(r.rows[0].label, "B");
	assert_string_equal(r.rows[1].label, "D");
	assert_true(r.rows[2].other);
	call_rows_free(&r);
	call_table_free(w[0]);
	call_table_free(w[2]);
}

static void test_full_table_and_prune(void **unused)
{
	struct call_table *t = call_table_new("m", 16, 100);
	struct state *st = state_new();
	struct state_service s = {.port = 80};
	struct call_rows r;
	char name[16];
	uint32_t id;

	(void)unused;
	strcpy(s.ns, "default");
	strcpy(s.name, "web");
	assert_int_equal(state_add_service(st, &s), 0);
	assert_int_equal(state_finish(st), 0);
	id = st->svcs[0].id;
	/* 16 entries: other + 15 labels; the rest go to other. */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "L%02d", i);
		rec(t, id, name, 0);
	}
	assert_int_equal(call_table_merge(&t, 1, 100, &r), 0);
	assert_int_equal(r.n, 16);
	assert_int_equal(call_row_count(row(&r, id, NULL)), 5);
	call_rows_free(&r);
	/* Full: a new service gets no series at all (not even other). */
	rec(t, id + 1, "new", 0);
	call_table_prune(t, st);
	assert_int_equal(call_table_merge(&t, 1, 100, &r), 0);
	assert_int_equal(r.n, 16);
	assert_null(row(&r, id + 1, NULL));
	call_rows_free(&r);
	/* A service that left the state loses its series, and the room is reused. */
	state_free(st);
	st = state_new();
	assert_int_equal(state_finish(st), 0);
	call_table_prune(t, st);
	rec(t, id + 1, "new", 0);
	assert_int_equal(call_table_merge(&t, 1, 100, &r), 0);
	assert_int_equal(r.n, 1); /* its `other` is idle: no series */
	assert_int_equal(call_row_count(row(&r, id + 1, "new")), 1);
	call_rows_free(&r);
	call_table_free(t);
	state_free(st);
}

static void test_state_finds_callers_by_cgroup(void **unused)
{
	struct state *st = state_new(), *copy = state_new();
	struct state_caller *c = calloc(3, sizeof(*c));

	(void)unused;
	c[0] = (struct state_caller){.cgroup_id = 30, .ns = "a", .workload = "pod/x"};
	c[1] = (struct state_caller){.cgroup_id = 10, .ns = "b", .workload = "deployment/y"};
	c[2] = (struct state_caller){.cgroup_id = 30, .ns = "a", .workload = "pod/x"};
	state_set_callers(st, c, 3);
	assert_int_equal(st->n_callers, 2);
	assert_string_equal(state_find_caller(st, 10)->workload, "deployment/y");
	assert_string_equal(state_find_caller(st, 30)->ns, "a");
	assert_null(state_find_caller(st, 20));
	assert_null(state_find_caller(st, 0));
	assert_int_equal(state_copy_callers(copy, st), 0);
	assert_string_equal(state_find_caller(copy, 10)->ns, "b");
	state_free(st);
	state_free(copy);
}

static void check_workload(const char *kind, const char *owner, const char *hash, const char *pod,
			   const char *want)
{
	char buf[STATE_CALLER_MAX];

	assert_int_equal(k8s_workload(kind, owner, hash, pod, buf, sizeof(buf)), 0);
	assert_string_equal(buf, want);
}

static void test_workload_from_owner(void **unused)
{
	char small[8];

	(void)unused;
	check_workload("ReplicaSet", "web-5d8f9c", "5d8f9c", "web-5d8f9c-x2k4q", "deployment/web");
	check_workload("ReplicaSet", "my-app-v2-6b7c", "6b7c", "p", "deployment/my-app-v2");
	/* A bare ReplicaSet (no Deployment's hash in its name) is one. */
	check_workload("ReplicaSet", "web", "5d8f9c", "p", "replicaset/web");
	check_workload("ReplicaSet", "web-abc", NULL, "p", "replicaset/web-abc");
	check_workload("ReplicaSet", "5d8f9c", "5d8f9c", "p", "replicaset/5d8f9c");
	check_workload("StatefulSet", "db", NULL, "db-0", "statefulset/db");
	check_workload("DaemonSet", "agent", "x", "agent-abcde", "daemonset/agent");
	check_workload("Job", "migrate-28391", NULL, "migrate-28391-q", "job/migrate-28391");
	check_workload(NULL, NULL, NULL, "debug", "pod/debug");
	check_workload("StatefulSet", "", NULL, "debug", "pod/debug");
	assert_int_equal(k8s_workload("StatefulSet", "database", NULL, "p", small, sizeof(small)),
			 -ENAMETOOLONG);
}

/* A cgroup's "id" in the test: its path's length and last character. */
static int fake_id_of(const char *dir, uint64_t *id)
{
	struct stat sb;

	if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
		return -ENOENT;
	*id = (uint64_t)strlen(dir) << 8 | (unsigned char)dir[strlen(dir) - 1];
	return 0;
}

static void apply_pod(struct k8s_pods *p, const char *json)
{
	struct json_object *o = json_tokener_parse(json);
	const char *err = NULL;

	assert_non_null(o);
	assert_int_equal(k8s_pods_apply(p, K8S_ADDED, o, &err), 0);
	json_object_put(o);
}

/* Pods whose cgroup exists become callers, with their containers' cgroups;
 * a Pod without a cgroup (not started here yet) names none. */
static void test_pods_become_callers(void **unused)
{
	char root[] = "/tmp/h2split-callers-XXXXXX", dir[512];
	const char *uid = "0c1d2e3f-0000-4000-8000-000000000001";
	struct k8s_pods *p = k8s_pods_new();
	struct state *st = state_new();
	struct state_caller *c = NULL;
	uint64_t id;
	int n = -1;

	(void)unused;
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/kubepods", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/kubepods/besteffort", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/kubepods/besteffort/pod%s", root, uid);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/kubepods/besteffort/pod%s/ctr-a", root, uid);
	assert_int_equal(mkdir(dir, 0700), 0);
	apply_pod(p, "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web-5d8f-x\",\"namespace\":"
		     "\"shop\",\"uid\":\"0c1d2e3f-0000-4000-8000-000000000001\",\"labels\":{"
		     "\"pod-template-hash\":\"5d8f\"},\"ownerReferences\":[{\"kind\":"
		     "\"ReplicaSet\",\"name\":\"web-5d8f\",\"controller\":true}]},\"status\":{"
		     "\"phase\":\"Running\",\"qosClass\":\"BestEffort\"}}");
	apply_pod(p, "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"later\",\"namespace\":"
		     "\"shop\",\"uid\":\"0c1d2e3f-0000-4000-8000-000000000002\"},\"status\":{"
		     "\"phase\":\"Pending\"}}");
	assert_int_equal(k8s_pods_callers(p, root, fake_id_of, &c, &n), 0);
	assert_int_equal(n, 2); /* the pod's cgroup and its container's */
	state_set_callers(st, c, n);
	assert_int_equal(fake_id_of(dir, &id), 0);
	assert_string_equal(state_find_caller(st, id)->ns, "shop");
	assert_string_equal(state_find_caller(st, id)->workload, "deployment/web");
	rmdir(dir);
	snprintf(dir, sizeof(dir), "%s/kubepods/besteffort/pod%s", root, uid);
	assert_int_equal(fake_id_of(dir, &id), 0);
	assert_string_equal(state_find_caller(st, id)->workload, "deployment/web");
	rmdir(dir);
	snprintf(dir, sizeof(dir), "%s/kubepods/besteffort", root);
	rmdir(dir);
	snprintf(dir, sizeof(dir), "%s/kubepods", root);
	rmdir(dir);
	rmdir(root);
	state_free(st);
	k8s_pods_free(p);
}

static char *render(const struct metrics_merged *mm, const struct state *st)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(metrics_write_prometheus(f, mm, st, 0), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static void test_prometheus_families(void **unused)
{
	struct metrics *w[2] = {metrics_new(), metrics_new()};
	struct state *st = state_new();
	struct state_service s = {.port = 50051};
	struct state_caller *c = calloc(1, sizeof(*c));
	const uint8_t path[] = "/pkg.Greeter/Say\"Hi\"";
	struct metrics_merged *mm;
	uint32_t id;
	char *text;

	(void)unused;
	strcpy(s.ns, "default");
	strcpy(s.name, "greeter");
	assert_int_equal(state_add_service(st, &s), 0);
	assert_int_equal(state_finish(st), 0);
	*c = (struct state_caller){.cgroup_id = 42, .ns = "team-a", .workload = "deployment/web"};
	state_set_callers(st, c, 1);
	id = st->svcs[0].id;
	assert_int_equal(metrics_set_call_limits(w[1], 5, 1), 0);
	struct metrics_call c1 = call(42, id, path, sizeof(path) - 1, 0, 1500 * 1000);
	struct metrics_call c2 = call(42, id, path, sizeof(path) - 1, 14, 3 * MS);
	struct metrics_call c3 = call(99, id, NULL, 0, -1, 3 * MS);

	metrics_call_done(w[0], st, &c1);
	metrics_call_done(w[1], st, &c2);
	metrics_call_done(w[1], st, &c3);
	mm = metrics_merge(w, 2);
	assert_non_null(mm);
	text = render(mm, st);
	assert_non_null(strstr(text,
			       "# TYPE h2split_caller_requests_total counter\n"
			       "h2split_caller_requests_total{caller_namespace=\"team-a\","
			       "caller_workload=\"deployment/web\",service=\"default/greeter:"
			       "50051\",grpc_status=\"0\"} 1\n"
			       "h2split_caller_requests_total{caller_namespace=\"team-a\","
			       "caller_workload=\"deployment/web\",service=\"default/greeter:"
			       "50051\",grpc_status=\"14\"} 1\n"
			       "h2split_caller_requests_total{caller_namespace=\"unknown\","
			       "caller_workload=\"unknown\",service=\"default/greeter:50051\","
			       "grpc_status=\"none\"} 1\n"));
	assert_non_null(strstr(text,
			       "h2split_caller_request_duration_seconds_bucket{"
			       "caller_namespace=\"team-a\",caller_workload=\"deployment/web\","
			       "service=\"default/greeter:50051\",le=\"0.0025\"} 1\n"));
	assert_non_null(strstr(text,
			       "h2split_caller_request_duration_seconds_count{"
			       "caller_namespace=\"team-a\",caller_workload=\"deployment/web\","
			       "service=\"default/greeter:50051\"} 2\n"));
	/* The last worker's limit (1) caps the merge: "unknown" (1 stream) joins other. */
	assert_non_null(strstr(text,
			       "h2split_method_requests_total{service=\"default/greeter:"
			       "50051\",method=\"pkg.Greeter/Say\\\"Hi\\\"\",grpc_status=\"0\"} "
			       "1\n"));
	assert_non_null(strstr(text, "h2split_method_requests_total{service=\"default/greeter:"
				     "50051\",method=\"other\",grpc_status=\"none\"} 1\n"));
	assert_non_null(strstr(text, "h2split_method_request_duration_seconds_sum{service="
				     "\"default/greeter:50051\",method=\"other\"} 0.003000\n"));
	assert_non_null(strstr(text, "h2split_series_overflow_total{table=\"methods\"} 1\n"));
	assert_non_null(strstr(text, "h2split_series_overflow_total{table=\"callers\"} 0\n"));
	free(text);
	metrics_merged_free(mm);
	metrics_free(w[0]);
	metrics_free(w[1]);
	state_free(st);
}

struct seen {
	int n;
	uint64_t first, last; /* bytes_in of the first and last event */
};

static int count_ev(void *arg, const struct tap_event *ev)
{
	struct seen *s = arg;

	if (!s->n++)
		s->first = ev->bytes_in;
	s->last = ev->bytes_in;
	return 0;
}

static void test_tap_ring(void **unused)
{
	struct tap *t = tap_new(2);
	struct tap_event ev = {.service_id = 1};
	uint64_t r1[2], r2[2], lost = 0;
	struct seen s = {0};

	(void)unused;
	assert_false(tap_wanted(t, 0)); /* nobody tapping: nothing recorded */
	tap_arm(t, 1000);
	assert_true(tap_wanted(t, 1000 + TAP_LINGER_MS - 1));
	assert_false(tap_wanted(t, 1000 + TAP_LINGER_MS));
	ev.bytes_in = 1;
	tap_push(t, 0, &ev); /* before the reader's cursors: not shown */
	tap_cursors_now(t, r1);
	for (uint64_t i = 2; i < 2 + 10; i++) {
		ev.bytes_in = i;
		strcpy(ev.method, "pkg.S/M");
		tap_push(t, (int)(i % 2), &ev);
	}
	memcpy(r2, r1, sizeof(r2));
	tap_read(t, r1, count_ev, &s, &lost);
	assert_int_equal(s.n, 10);
	assert_int_equal(lost, 0);
	/* A second reader has cursors of its own; a caught-up one sees nothing new. */
	s = (struct seen){0};
	tap_read(t, r2, count_ev, &s, &lost);
	assert_int_equal(s.n, 10);
	s = (struct seen){0};
	tap_read(t, r1, count_ev, &s, &lost);
	assert_int_equal(s.n, 0);
	/* A reader a ring and more behind loses the oldest, and is told. */
	for (uint64_t i = 0; i < TAP_RING + 5; i++) {
		ev.bytes_in = 100 + i;
		tap_push(t, 0, &ev);
	}
	s = (struct seen){0};
	tap_read(t, r1, count_ev, &s, &lost);
	assert_int_equal(s.n, TAP_RING);
	assert_int_equal(lost, 5);
	assert_int_equal(s.first, 105);
	assert_int_equal(s.last, 100 + TAP_RING + 4);
	tap_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_labels_beyond_the_limit_share_other),
	    cmocka_unit_test(test_status_and_histogram),
	    cmocka_unit_test(test_too_long_label_is_other),
	    cmocka_unit_test(test_merge_sums_and_caps_the_union),
	    cmocka_unit_test(test_full_table_and_prune),
	    cmocka_unit_test(test_state_finds_callers_by_cgroup),
	    cmocka_unit_test(test_workload_from_owner),
	    cmocka_unit_test(test_pods_become_callers),
	    cmocka_unit_test(test_prometheus_families),
	    cmocka_unit_test(test_tap_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
