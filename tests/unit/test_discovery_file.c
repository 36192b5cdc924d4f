// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for discovery_file.c on a real event loop and a temp directory:
 * every way a services file gets replaced (in place, rename over it, a
 * ConfigMap's ..data symlink swap) delivers a new state, and a bad file
 * delivers nothing and keeps the last good state. Waits poll a condition
 * with a deadline; nothing sleeps for a fixed time.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"
#include "base/loop.h"
#include "discovery/discovery.h"

#define DEADLINE_MS 5000
#define POLL_MS 5

struct fixture {
	char dir[64];
	char path[128];
	struct loop *loop;
	struct discovery *d;
	struct state *last; /* owned: the latest state delivered */
	int updates;
};

static int on_update(void *arg, struct state *st, const struct discovery_exclusions *ex)
{
	struct fixture *f = arg;

	(void)ex;
	state_free(f->last);
	f->last = st;
	f->updates++;
	return 0;
}

/* ---- waiting on the loop ---- */

struct waiter {
	bool (*cond)(struct fixture *f, int want);
	struct fixture *f;
	int want;
	uint64_t deadline;
	bool met;
};

static void poll_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct waiter *w = arg;

	(void)t;
	w->met = w->cond(w->f, w->want);
	if (w->met || loop_now_ms() >= w->deadline)
		loop_stop(l);
	else
		assert_non_null(loop_timer_add(l, POLL_MS, poll_cb, w));
}

static bool run_until(struct fixture *f, bool (*cond)(struct fixture *, int), int want)
{
	struct waiter w = {
	    .cond = cond, .f = f, .want = want, .deadline = loop_now_ms() + DEADLINE_MS};

	assert_non_null(loop_timer_add(f->loop, 0, poll_cb, &w));
	assert_int_equal(loop_run(f->loop), 0);
	return w.met;
}

static bool updates_reach(struct fixture *f, int want)
{
	return f->updates >= want;
}

static bool errors_reach(struct fixture *f, int want)
{
	return f->d->n_errors >= (unsigned long)want;
}

static void wait_updates(struct fixture *f, int want)
{
	if (!run_until(f, updates_reach, want))
		fail_msg("no update %d within %d ms (got %d)", want, DEADLINE_MS, f->updates);
	assert_int_equal(f->updates, want);
}

/* ---- file contents ---- */

/* A List with one opted-in Service and a slice of |n_eps| ready endpoints. */
static void services_json(char *buf, size_t len, int n_eps)
{
	size_t off = (size_t)snprintf(
	    buf, len,
	    "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"\"},"
	    "\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":"
	    "\"greeter\",\"namespace\":\"default\"},\"spec\":{\"type\":\"ClusterIP\","
	    "\"clusterIP\":\"10.96.0.10\",\"clusterIPs\":[\"10.96.0.10\"],\"ports\":[{"
	    "\"appProtocol\":\"kubernetes.io/h2c\",\"port\":50051,\"protocol\":\"TCP\","
	    "\"targetPort\":8080}]}},{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":"
	    "\"EndpointSlice\",\"metadata\":{\"name\":\"greeter-abcde\",\"namespace\":"
	    "\"default\",\"labels\":{\"kubernetes.io/service-name\":\"greeter\"}},"
	    "\"addressType\":\"IPv4\",\"ports\":[{\"name\":\"\",\"port\":8080,\"protocol\":"
	    "\"TCP\"}],\"endpoints\":[");

	for (int i = 0; i < n_eps; i++)
		off += (size_t)snprintf(buf + off, len - off,
					"%s{\"addresses\":[\"10.244.0.%d\"],\"conditions\":{"
					"\"ready\":true}}",
					i ? "," : "", i + 1);
	snprintf(buf + off, len - off, "]}]}\n");
}

static void write_at(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t n = strlen(content);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	assert_int_equal(close(fd), 0);
}

static void write_services(const char *path, int n_eps)
{
	char buf[8192];

	services_json(buf, sizeof(buf), n_eps);
	write_at(path, buf);
}

static int n_eps(const struct fixture *f)
{
	assert_non_null(f->last);
	assert_int_equal(f->last->n_svcs, 1);
	return f->last->svcs[0].n_eps;
}

/* ---- setup ---- */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/h2split-disc-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/services.json", f->dir);
	f->loop = loop_new();
	assert_non_null(f->loop);
	*state = f;
	return 0;
}

static void start(struct fixture *f)
{
	f->d = discovery_file_new(f->path, NULL, on_update, f);
	assert_non_null(f->d);
	assert_int_equal(f->d->ops->start(f->d, f->loop), 0);
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->d)
		f->d->ops->destroy(f->d);
	loop_free(f->loop);
	state_free(f->last);
	nftw(f->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS); /* our mkdtemp directory */
	free(f);
	return 0;
}

/* ---- tests ---- */

static void test_initial_and_in_place_rewrite(void **state)
{
	struct fixture *f = *state;

	write_services(f->path, 1);
	start(f);
	wait_updates(f, 1);
	assert_true(f->d->synced);
	assert_int_equal(n_eps(f), 1);
	assert_string_equal(f->last->svcs[0].name, "greeter");

	write_services(f->path, 2); /* O_TRUNC over the same inode */
	wait_updates(f, 2);
	assert_int_equal(n_eps(f), 2);
	assert_int_equal(f->d->n_errors, 0);
}

static void test_rename_over(void **state)
{
	struct fixture *f = *state;
	char tmp[160];

	write_services(f->path, 1);
	start(f);
	wait_updates(f, 1);

	snprintf(tmp, sizeof(tmp), "%s/.services.json.tmp", f->dir);
	write_services(tmp, 3);
	assert_int_equal(rename(tmp, f->path), 0);
	wait_updates(f, 2);
	assert_int_equal(n_eps(f), 3);
}

/* What the kubelet's AtomicWriter does for a ConfigMap volume: files in a
 * timestamped directory, "..data" -> it, swapped by renaming a new symlink over
 * "..data"; the user-visible name is a symlink to "..data/<key>". */
static void configmap_publish(struct fixture *f, int version, int eps, bool first, bool remove_prev)
{
	char ts[160], file[200], tmp_link[160], data[160], target[64];

	snprintf(target, sizeof(target), "..2026_01_12_09_14_%02d.%d", version, 1000 + version);
	snprintf(ts, sizeof(ts), "%s/%s", f->dir, target);
	assert_int_equal(mkdir(ts, 0755), 0);
	snprintf(file, sizeof(file), "%s/services.json", ts);
	write_services(file, eps);
	snprintf(tmp_link, sizeof(tmp_link), "%s/..data_tmp", f->dir);
	snprintf(data, sizeof(data), "%s/..data", f->dir);
	assert_int_equal(symlink(target, tmp_link), 0);
	assert_int_equal(rename(tmp_link, data), 0);
	if (first)
		assert_int_equal(symlink("..data/services.json", f->path), 0);
	if (remove_prev) { /* the old payload goes away, as the kubelet removes it */
		char old[160], old_file[200];

		snprintf(old, sizeof(old), "%s/..2026_01_12_09_14_%02d.%d", f->dir, version - 1,
			 1000 + version - 1);
		snprintf(old_file, sizeof(old_file), "%s/services.json", old);
		assert_int_equal(unlink(old_file), 0);
		assert_int_equal(rmdir(old), 0);
	}
}

static void test_configmap_symlink_swap(void **state)
{
	struct fixture *f = *state;

	configmap_publish(f, 1, 1, true, false);
	start(f);
	wait_updates(f, 1);
	assert_int_equal(n_eps(f), 1);

	/* Old payload kept: only the "..data" rename in the directory shows the change. */
	configmap_publish(f, 2, 2, false, false);
	wait_updates(f, 2);
	assert_int_equal(n_eps(f), 2);

	configmap_publish(f, 3, 4, false, true);
	wait_updates(f, 3);
	assert_int_equal(n_eps(f), 4);
}

static void test_malformed_keeps_last_state(void **state)
{
	struct fixture *f = *state;
	const struct state *before;

	write_services(f->path, 2);
	start(f);
	wait_updates(f, 1);
	before = f->last;

	write_at(f->path, "{\n  \"kind\": \"List\",\n  \"items\": [\n");
	if (!run_until(f, errors_reach, 1))
		fail_msg("malformed file not reported within %d ms", DEADLINE_MS);
	assert_int_equal(f->updates, 1);
	assert_ptr_equal(f->last, before);
	assert_int_equal(n_eps(f), 2);

	/* A well-formed file with a bad object is rejected the same way. */
	write_at(f->path, "{\"kind\":\"Service\",\"metadata\":{\"name\":\"x\"},\"spec\":[]}");
	if (!run_until(f, errors_reach, 2))
		fail_msg("invalid object not reported within %d ms", DEADLINE_MS);
	assert_int_equal(f->updates, 1);

	write_services(f->path, 3);
	wait_updates(f, 2);
	assert_int_equal(n_eps(f), 3);
	assert_int_equal(f->d->n_errors, 2);
}

static void test_missing_file_then_created(void **state)
{
	struct fixture *f = *state;

	start(f);
	if (!run_until(f, errors_reach, 1))
		fail_msg("missing file not reported within %d ms", DEADLINE_MS);
	assert_int_equal(f->updates, 0);
	assert_false(f->d->synced);

	write_services(f->path, 1);
	wait_updates(f, 1);
	assert_int_equal(n_eps(f), 1);
	assert_true(f->d->synced);
}

static void test_reload_rereads_now(void **state)
{
	struct fixture *f = *state;

	write_services(f->path, 1);
	start(f);
	wait_updates(f, 1);
	/* reload() is synchronous and delivers even when nothing changed (SIGHUP). */
	f->d->ops->reload(f->d);
	assert_int_equal(f->updates, 2);
	assert_int_equal(n_eps(f), 1);
}

static void test_missing_directory_fails_start(void **state)
{
	struct fixture *f = *state;
	char path[160];

	snprintf(path, sizeof(path), "%s/no-such-dir/services.json", f->dir);
	f->d = discovery_file_new(path, NULL, on_update, f);
	assert_non_null(f->d);
	assert_int_equal(f->d->ops->start(f->d, f->loop), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_initial_and_in_place_rewrite, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rename_over, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_configmap_symlink_swap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_keeps_last_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_file_then_created, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reload_rereads_now, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_directory_fails_start, setup, teardown),
	};

	log_set_level(LOG_ERROR); /* the bad-file tests still show their error lines */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
