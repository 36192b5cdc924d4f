// SPDX-License-Identifier: Apache-2.0
/*
 * Tests of the Kubernetes discovery source on a real loop against the fake
 * API server (tests/testbed/kube_api.py, HTTPS on 127.0.0.1, driven through
 * its stdin): list then watch, paged lists, a dropped watch, an expired
 * resourceVersion (410), relists backed off when every watch expires, a
 * silent watch, token rotation, an untrusted CA.
 * Waits poll a condition with a deadline; nothing sleeps for a fixed time.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "base/loop.h"
#include "discovery/discovery.h"
#include "kernel/cgroup.h"

#define FIXTURE "tests/testbed/kube_api.py"
/* A deadline, never a duration: retries back off from 0.8-1.6 s up to 30-60 s
 * (as client-go's reflector), and a test may see three backoffs in a row. */
#define DEADLINE_MS 30000
#define POLL_MS 10

struct fixture {
	pid_t pid;
	int to_api, from_api; /* the fixture's stdin and stdout */
	char rbuf[1 << 16];
	size_t rlen;
	char url[256], ca[512], other_ca[512], token[512];
	struct config cfg;
	struct loop *loop;
	struct discovery *d;
	struct state *last; /* owned: the latest state delivered */
	int updates;
};

/* ---- the fake API server process ---- */

static char *read_line(struct fixture *f, int timeout_ms)
{
	static char line[1 << 16];
	uint64_t deadline = loop_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		char *nl = memchr(f->rbuf, '\n', f->rlen);
		struct pollfd p = {.fd = f->from_api, .events = POLLIN};
		ssize_t n;

		if (nl) {
			size_t len = (size_t)(nl - f->rbuf);

			memcpy(line, f->rbuf, len);
			line[len] = 0;
			memmove(f->rbuf, nl + 1, f->rlen - len - 1);
			f->rlen -= len + 1;
			return line;
		}
		if (loop_now_ms() >= deadline || poll(&p, 1, POLL_MS * 10) < 0)
			return NULL;
		if (!(p.revents & (POLLIN | POLLHUP)))
			continue;
		n = read(f->from_api, f->rbuf + f->rlen, sizeof(f->rbuf) - f->rlen);
		if (n <= 0)
			return NULL;
		f->rlen += (size_t)n;
	}
}

/* Send one command; returns its "result" (a new reference, may be NULL). */
static struct json_object *cmd(struct fixture *f, const char *op, const char *args_json)
{
	struct json_object *reply, *ok, *res = NULL;
	char *buf, *line;
	int n = asprintf(&buf, "{\"op\":\"%s\",\"args\":%s}\n", op, args_json ? args_json : "{}");

	assert_true(n > 0);
	for (int off = 0; off < n;) {
		ssize_t w = write(f->to_api, buf + off, (size_t)(n - off));

		assert_true(w > 0);
		off += (int)w;
	}
	free(buf);
	line = read_line(f, 30000);
	if (!line)
		fail_msg("kube_api: no reply to %s", op);
	reply = json_tokener_parse(line);
	assert_non_null(reply);
	assert_true(json_object_object_get_ex(reply, "ok", &ok));
	if (!json_object_get_boolean(ok))
		fail_msg("kube_api %s failed: %s", op, line);
	if (json_object_object_get_ex(reply, "result", &res))
		json_object_get(res);
	json_object_put(reply);
	return res;
}

static void cmd0(struct fixture *f, const char *op, const char *args_json)
{
	json_object_put(cmd(f, op, args_json));
}

static void copy_field(struct json_object *o, const char *key, char *dst, size_t len)
{
	struct json_object *v;

	assert_true(json_object_object_get_ex(o, key, &v));
	snprintf(dst, len, "%s", json_object_get_string(v));
}

static void start_fixture(struct fixture *f, const char *cert_ip)
{
	int in[2], out[2];
	struct json_object *ready;
	char *line;

	if (access(FIXTURE, R_OK))
		fail_msg("%s not found: run the unit tests from the repository root (make unit)",
			 FIXTURE);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl("/usr/bin/python3", "python3", FIXTURE, "--bookmark-interval", "0.2",
		      "--cert-ip", cert_ip, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	f->to_api = in[1];
	f->from_api = out[0];
	line = read_line(f, 30000);
	if (!line)
		fail_msg("kube_api did not start (python3, openssl CLI needed: make deps)");
	ready = json_tokener_parse(line);
	assert_non_null(ready);
	copy_field(ready, "url", f->url, sizeof(f->url));
	copy_field(ready, "ca_file", f->ca, sizeof(f->ca));
	copy_field(ready, "other_ca_file", f->other_ca, sizeof(f->other_ca));
	copy_field(ready, "token_file", f->token, sizeof(f->token));
	json_object_put(ready);
}

static void stop_fixture(struct fixture *f)
{
	int st;

	close(f->to_api); /* EOF on stdin: the fixture stops */
	for (int i = 0; i < 500; i++) {
		if (waitpid(f->pid, &st, WNOHANG) == f->pid)
			break;
		if (i == 499) {
			kill(f->pid, SIGKILL);
			waitpid(f->pid, &st, 0);
		}
		usleep(10000);
	}
	close(f->from_api);
}

/* ---- objects ---- */

static void add_service(struct fixture *f, const char *name, const char *vip, int n_eps)
{
	char args[4096];
	int off;

	snprintf(
	    args, sizeof(args),
	    "{\"kind\":\"services\",\"obj\":{\"metadata\":{\"name\":\"%s\",\"namespace\":"
	    "\"default\"},\"spec\":{\"type\":\"ClusterIP\",\"clusterIP\":\"%s\","
	    "\"clusterIPs\":[\"%s\"],\"ports\":[{\"name\":\"grpc\",\"port\":50051,"
	    "\"protocol\":\"TCP\",\"appProtocol\":\"kubernetes.io/h2c\",\"targetPort\":8080}]}}}",
	    name, vip, vip);
	cmd0(f, "apply", args);
	off = snprintf(
	    args, sizeof(args),
	    "{\"kind\":\"endpointslices\",\"obj\":{\"metadata\":{\"name\":\"%s-x1\","
	    "\"namespace\":\"default\",\"labels\":{\"kubernetes.io/service-name\":"
	    "\"%s\"}},\"addressType\":\"IPv4\",\"ports\":[{\"name\":\"grpc\",\"port\":8080,"
	    "\"protocol\":\"TCP\"}],\"endpoints\":[",
	    name, name);
	for (int i = 0; i < n_eps; i++)
		off +=
		    snprintf(args + off, sizeof(args) - (size_t)off,
			     "%s{\"addresses\":[\"10.244.0.%d\"],\"conditions\":{\"ready\":true}}",
			     i ? "," : "", i + 1);
	snprintf(args + off, sizeof(args) - (size_t)off, "]}}");
	cmd0(f, "apply", args);
}

static void delete_service(struct fixture *f, const char *name)
{
	char args[512];

	snprintf(args, sizeof(args), "{\"kind\":\"services\",\"ns\":\"default\",\"name\":\"%s\"}",
		 name);
	cmd0(f, "delete", args);
}

/* ---- the source on a loop ---- */

static const struct discovery_cgroup_ops cgroup_ops = {.root = cgroup_v2_root,
						       .id_of = cgroup_id_of};

static int on_update(void *arg, struct state *st, const struct discovery_exclusions *ex)
{
	struct fixture *f = arg;

	(void)ex;
	if (!st)
		return 0;
	state_free(f->last);
	f->last = st;
	f->updates++;
	return 0;
}

typedef bool cond_fn(struct fixture *f, const void *arg);

struct waiter {
	cond_fn *cond;
	struct fixture *f;
	const void *arg;
	uint64_t deadline;
	bool met;
};

static void poll_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct waiter *w = arg;

	(void)t;
	w->met = w->cond(w->f, w->arg);
	if (w->met || loop_now_ms() >= w->deadline)
		loop_stop(l);
	else
		assert_non_null(loop_timer_add(l, POLL_MS, poll_cb, w));
}

static bool run_until(struct fixture *f, cond_fn *cond, const void *arg, int ms)
{
	struct waiter w = {cond, f, arg, loop_now_ms() + (uint64_t)ms, false};

	assert_non_null(loop_timer_add(f->loop, 0, poll_cb, &w));
	assert_int_equal(loop_run(f->loop), 0);
	return w.met;
}

/* The latest state's services are exactly |names| ("a b c", sorted). */
static bool services_are(struct fixture *f, const void *arg)
{
	char have[4096] = "";

	if (!f->last)
		return false;
	for (int i = 0; i < f->last->n_svcs; i++) {
		if (i)
			strcat(have, " ");
		strncat(have, f->last->svcs[i].name, sizeof(have) - strlen(have) - 2);
	}
	return !strcmp(have, arg);
}

static bool n_services(struct fixture *f, const void *arg)
{
	return f->last && f->last->n_svcs == *(const int *)arg;
}

static bool never(struct fixture *f, const void *arg)
{
	(void)f;
	(void)arg;
	return false;
}

static void expect_services(struct fixture *f, const char *names)
{
	if (!run_until(f, services_are, names, DEADLINE_MS)) {
		char have[256] = "";

		for (int i = 0; f->last && i < f->last->n_svcs && i < 8; i++) {
			strcat(have, f->last->svcs[i].name);
			strcat(have, " ");
		}
		fail_msg("services never became \"%s\" (updates=%d, last: %s)", names, f->updates,
			 f->last ? have : "no state");
	}
}

static void start_source(struct fixture *f, const char *ca)
{
	snprintf(f->cfg.kube_api, sizeof(f->cfg.kube_api), "%s", f->url);
	snprintf(f->cfg.kube_token_file, sizeof(f->cfg.kube_token_file), "%s", f->token);
	snprintf(f->cfg.kube_ca_file, sizeof(f->cfg.kube_ca_file), "%s", ca);
	f->d = discovery_kubernetes_new(&f->cfg, &cgroup_ops, on_update, f);
	assert_non_null(f->d);
	assert_int_equal(f->d->ops->start(f->d, f->loop), 0);
}

static int setup_cert_for(void **state, const char *cert_ip)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	log_set_level(getenv("H2S_TEST_DEBUG") ? LOG_DEBUG : LOG_ERROR);
	setenv("H2SPLIT_KUBE_WATCH_IDLE", "2", 1);
	start_fixture(f, cert_ip);
	f->loop = loop_new();
	assert_non_null(f->loop);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_cert_for(state, "127.0.0.1");
}

/* The server's certificate names another address than the one dialled. */
static int setup_wrong_name(void **state)
{
	return setup_cert_for(state, "127.0.0.2");
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->d)
		f->d->ops->destroy(f->d);
	loop_free(f->loop);
	state_free(f->last);
	stop_fixture(f);
	free(f);
	return 0;
}

/* ---- tests ---- */

static void test_list_then_watch(void **state)
{
	struct fixture *f = *state;

	add_service(f, "alpha", "10.96.0.10", 2);
	start_source(f, f->ca);
	expect_services(f, "alpha");
	assert_true(f->d->synced);
	assert_int_equal(f->last->svcs[0].n_eps, 2);
	assert_int_equal(f->last->svcs[0].eps[0].port, 8080);
	add_service(f, "beta", "10.96.0.11", 1);
	expect_services(f, "alpha beta");
	delete_service(f, "alpha");
	expect_services(f, "beta");
}

static void test_empty_cluster_still_syncs(void **state)
{
	struct fixture *f = *state;
	int zero = 0;

	start_source(f, f->ca);
	assert_true(run_until(f, n_services, &zero, DEADLINE_MS));
	assert_true(f->d->synced);
	assert_int_equal(f->updates, 1);
}

static void test_paged_list(void **state)
{
	struct fixture *f = *state;
	size_t cap = 1200 * 400, off = 0;
	char *args = malloc(cap);
	struct json_object *lists;
	int want = 1200;

	assert_non_null(args);
	off += (size_t)snprintf(args, cap, "{\"kind\":\"services\",\"objs\":[");
	for (int i = 0; i < want; i++)
		off += (size_t)snprintf(
		    args + off, cap - off,
		    "%s{\"metadata\":{\"name\":\"svc-%04d\",\"namespace\":\"default\"},\"spec\":{"
		    "\"clusterIP\":\"10.96.%d.%d\",\"ports\":[{\"port\":50051,\"appProtocol\":"
		    "\"grpc\"}]}}",
		    i ? "," : "", i, 1 + i / 250, 1 + i % 250);
	snprintf(args + off, cap - off, "]}");
	cmd0(f, "set_objects", args);
	free(args);
	start_source(f, f->ca);
	assert_true(run_until(f, n_services, &want, DEADLINE_MS));
	assert_int_equal(f->updates, 1);
	/* 1200 services came in pages of at most 500: three list requests. */
	lists = cmd(f, "count_requests", "{\"resource\":\"services\",\"watch\":false}");
	assert_int_equal(json_object_get_int(lists), 3);
	json_object_put(lists);
}

static void test_dropped_watch_recovers(void **state)
{
	struct fixture *f = *state;

	add_service(f, "alpha", "10.96.0.10", 1);
	start_source(f, f->ca);
	expect_services(f, "alpha");
	cmd0(f, "drop_watches", NULL);
	add_service(f, "beta", "10.96.0.11", 1);
	expect_services(f, "alpha beta");
	cmd0(f, "drop_watches", NULL);
	delete_service(f, "beta");
	expect_services(f, "alpha");
}

static void test_expired_resource_version_relists(void **state)
{
	struct fixture *f = *state;

	add_service(f, "alpha", "10.96.0.10", 1);
	add_service(f, "beta", "10.96.0.11", 1);
	start_source(f, f->ca);
	expect_services(f, "alpha beta");
	/* Changes the watches never see, then history is compacted: only a relist
	 * can find out that alpha is gone and gamma exists. */
	cmd0(f, "stall_watches", NULL);
	delete_service(f, "alpha");
	add_service(f, "gamma", "10.96.0.12", 1);
	cmd0(f, "expire_resource_versions", "{\"how\":\"event\"}");
	expect_services(f, "beta gamma");
	/* Again, with the watches cut: the rewatch from an old version gets 410. */
	cmd0(f, "stall_watches", NULL);
	delete_service(f, "beta");
	cmd0(f, "expire_resource_versions", "{\"how\":\"drop\"}");
	expect_services(f, "gamma");
}

static int services_lists(struct fixture *f)
{
	struct json_object *n =
	    cmd(f, "count_requests", "{\"resource\":\"services\",\"watch\":false}");
	int v = json_object_get_int(n);

	json_object_put(n);
	return v;
}

static bool services_lists_reach(struct fixture *f, const void *arg)
{
	return services_lists(f) >= *(const int *)arg;
}

/* Every watch answers 410 at once, even from the resourceVersion a list just
 * gave (a watch cache window shorter than a list takes). The source relists
 * each time, but backs off: the server sees the lists at least the backoff's
 * growing floors apart (1.6 s, then 3.2 s), never back to back. */
static void test_relists_back_off_when_every_watch_expires(void **state)
{
	struct fixture *f = *state;
	struct json_object *times;
	int base, want;
	double t[3];

	add_service(f, "alpha", "10.96.0.10", 1);
	start_source(f, f->ca);
	expect_services(f, "alpha");
	base = services_lists(f);
	want = base + 3;
	cmd0(f, "always_expire", "{\"kind\":\"services\"}");
	assert_true(run_until(f, services_lists_reach, &want, DEADLINE_MS));
	times = cmd(f, "request_times", "{\"resource\":\"services\",\"watch\":false}");
	for (int i = 0; i < 3; i++)
		t[i] = json_object_get_double(json_object_array_get_idx(times, (size_t)(base + i)));
	json_object_put(times);
	/* The 2nd and 3rd delays are drawn from [1.6, 3.2] and [3.2, 6.4] s. */
	if (t[1] - t[0] < 1.58 || t[2] - t[1] < 3.18)
		fail_msg("relists not backed off: lists %.3f s and %.3f s apart", t[1] - t[0],
			 t[2] - t[1]);
	assert_true(f->d->n_relists >= 3);
	assert_true(services_are(f, "alpha"));
}

static void test_silent_watch_is_restarted(void **state)
{
	struct fixture *f = *state;

	add_service(f, "alpha", "10.96.0.10", 1);
	start_source(f, f->ca);
	expect_services(f, "alpha");
	/* No bookmark, no event, no end: after H2SPLIT_KUBE_WATCH_IDLE (2 s) the
	 * source must give up on the watch and start another. */
	cmd0(f, "stall_watches", NULL);
	add_service(f, "beta", "10.96.0.11", 1);
	expect_services(f, "alpha beta");
}

/* A watch of Services and of EndpointSlices reached the server. */
static bool watches_up(struct fixture *f, const void *arg)
{
	static const char *const q[] = {
	    "{\"status\":200,\"resource\":\"services\",\"watch\":true}",
	    "{\"status\":200,\"resource\":\"endpointslices\",\"watch\":true}"};
	bool yes = true;

	(void)arg;
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		struct json_object *n = cmd(f, "count_requests", q[i]);

		yes &= json_object_get_int(n) >= 1;
		json_object_put(n);
	}
	return yes;
}

static void test_token_rotation(void **state)
{
	struct fixture *f = *state;
	struct json_object *n401;

	add_service(f, "alpha", "10.96.0.10", 1);
	start_source(f, f->ca);
	expect_services(f, "alpha");
	/* A request reads the token before its TLS handshake: one on its way when
	 * the token changes is refused for a reason of the test's making. The
	 * first state goes out 20 ms after the lists, maybe before the watches
	 * that follow them are up: wait for them. */
	assert_true(run_until(f, watches_up, NULL, DEADLINE_MS));
	cmd0(f, "rotate_token", NULL);
	cmd0(f, "drop_watches", NULL);
	add_service(f, "beta", "10.96.0.11", 1);
	expect_services(f, "alpha beta");
	/* The token was re-read before reconnecting: never refused. */
	n401 = cmd(f, "count_requests", "{\"status\":401}");
	assert_int_equal(json_object_get_int(n401), 0);
	json_object_put(n401);
}

static void test_untrusted_server_is_refused(void **state)
{
	struct fixture *f = *state;

	add_service(f, "alpha", "10.96.0.10", 1);
	start_source(f, f->other_ca);
	assert_false(run_until(f, never, NULL, 1500));
	assert_int_equal(f->updates, 0);
	assert_false(f->d->synced);
	assert_true(f->d->n_errors >= 2); /* both kinds failed, and are retried */
}

static void test_certificate_for_another_address_is_refused(void **state)
{
	struct fixture *f = *state;

	add_service(f, "alpha", "10.96.0.10", 1);
	start_source(f, f->ca);
	assert_false(run_until(f, never, NULL, 1500));
	assert_int_equal(f->updates, 0);
	assert_true(f->d->n_errors >= 2);
}

static bool pods_listed(struct fixture *f, const void *arg)
{
	struct json_object *n =
	    cmd(f, "count_requests", "{\"status\":200,\"resource\":\"pods\",\"watch\":false}");
	bool yes = json_object_get_int(n) >= 1;

	(void)arg;
	json_object_put(n);
	return yes;
}

static void test_forbidden_opt_outs_do_not_block_services(void **state)
{
	struct fixture *f = *state;
	struct json_object *n403;

	/* RBAC without pods: opt-outs are off, services still sync. */
	cmd0(f, "forbid", "{\"kind\":\"pods\"}");
	add_service(f, "alpha", "10.96.0.10", 1);
	snprintf(f->cfg.node_name, sizeof(f->cfg.node_name), "test-node");
	start_source(f, f->ca);
	expect_services(f, "alpha");
	n403 = cmd(f, "count_requests", "{\"status\":403,\"resource\":\"pods\"}");
	assert_true(json_object_get_int(n403) >= 1);
	json_object_put(n403);
	/* Granted later: the retries pick pods up without a restart. */
	cmd0(f, "forbid", "{\"kind\":\"pods\",\"forbidden\":false}");
	assert_true(run_until(f, pods_listed, NULL, DEADLINE_MS));
	add_service(f, "beta", "10.96.0.11", 1);
	expect_services(f, "alpha beta");
}

static void test_bad_settings_fail_start(void **state)
{
	struct fixture *f = *state;

	snprintf(f->cfg.kube_api, sizeof(f->cfg.kube_api), "http://127.0.0.1:1");
	f->d = discovery_kubernetes_new(&f->cfg, &cgroup_ops, on_update, f);
	assert_non_null(f->d);
	assert_int_equal(f->d->ops->start(f->d, f->loop), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_list_then_watch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_cluster_still_syncs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paged_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dropped_watch_recovers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expired_resource_version_relists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_relists_back_off_when_every_watch_expires, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_silent_watch_is_restarted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_untrusted_server_is_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_certificate_for_another_address_is_refused,
					    setup_wrong_name, teardown),
	    cmocka_unit_test_setup_teardown(test_forbidden_opt_outs_do_not_block_services, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_bad_settings_fail_start, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
