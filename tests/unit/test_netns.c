// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for netns.c: the client netns is the one of a process in the
 * recorded cgroup, never of whatever process the recorded pid names in our
 * PID namespace. Needs root (a test-owned cgroup and a netns); skipped
 * otherwise, except with CI=true, where it must run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernel/cgroup.h"
#include "kernel/netns.h"

struct fx {
	char dir[PATH_MAX + 32]; /* test-owned cgroup */
	uint64_t cg_id;
	pid_t child;	    /* in |dir|, in a netns of its own */
	uint64_t child_ino; /* its netns */
	int hold[2];	    /* the child lives until this pipe closes */
};

static uint64_t ino_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_ino;
}

/* Remove what an earlier run that died left: h2s-unit-netns-PID of a dead PID. */
static void sweep(const char *root)
{
	char path[PATH_MAX + 320];
	struct dirent *e;
	DIR *d = opendir(root);
	int pid;

	while (d && (e = readdir(d))) {
		if (sscanf(e->d_name, "h2s-unit-netns-%d", &pid) != 1 || kill(pid, 0) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s/empty", root, e->d_name);
		rmdir(path);
		snprintf(path, sizeof(path), "%s/%s", root, e->d_name);
		rmdir(path);
	}
	if (d)
		closedir(d);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	char root[PATH_MAX], path[PATH_MAX + 64];
	int ready[2];
	char c;

	if (geteuid() != 0) {
		if (getenv("CI") && !strcmp(getenv("CI"), "true"))
			fail_msg("test_netns needs root (CI=true: it must run)");
		skip();
	}
	assert_non_null(fx);
	assert_int_equal(cgroup_v2_root(root, sizeof(root)), 0);
	sweep(root);
	snprintf(fx->dir, sizeof(fx->dir), "%s/h2s-unit-netns-%d", root, (int)getpid());
	assert_int_equal(mkdir(fx->dir, 0755), 0);
	assert_int_equal(cgroup_id_of(fx->dir, &fx->cg_id), 0);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(fx->hold), 0);
	fx->child = fork();
	assert_true(fx->child >= 0);
	if (fx->child == 0) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/cgroup.procs", fx->dir);
		f = fopen(path, "w");
		if (!f || fprintf(f, "0\n") < 0 || fclose(f) || unshare(CLONE_NEWNET))
			_exit(1);
		close(fx->hold[1]);
		if (write(ready[1], "x", 1) != 1 || read(fx->hold[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(ready[1]);
	close(fx->hold[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)fx->child);
	fx->child_ino = ino_of(path);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char empty[PATH_MAX + 48];

	if (!fx)
		return 0;

	close(fx->hold[1]);
	waitpid(fx->child, NULL, 0);
	snprintf(empty, sizeof(empty), "%s/empty", fx->dir);
	rmdir(empty);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void test_pid_of_another_cgroup_is_not_trusted(void **state)
{
	struct fx *fx = *state;
	struct netns_cache *c = netns_cache_new();
	struct netns_ref *r = NULL;

	assert_non_null(c);
	assert_true(fx->child_ino != ino_of("/proc/self/ns/net"));
	/* The recorded pid names a live process, but not one in the cgroup (as
	 * when the daemon reads /proc of another PID namespace, or the pid was
	 * reused): the cgroup's own process decides. */
	assert_int_equal(netns_cache_get(c, fx->cg_id, (uint32_t)getpid(), &r), 0);
	assert_int_equal(netns_ref_id(r), fx->child_ino);
	netns_ref_put(c, r);
	netns_cache_free(c);
}

static void test_recorded_pid_gone(void **state)
{
	struct fx *fx = *state;
	struct netns_cache *c = netns_cache_new();
	struct netns_ref *r = NULL;

	assert_non_null(c);
	assert_int_equal(netns_cache_get(c, fx->cg_id, 0x3ffffff0u, &r), 0);
	assert_int_equal(netns_ref_id(r), fx->child_ino);
	netns_ref_put(c, r);
	/* The right pid is taken as it is. */
	netns_cache_free(c);
	c = netns_cache_new();
	assert_int_equal(netns_cache_get(c, fx->cg_id, (uint32_t)fx->child, &r), 0);
	assert_int_equal(netns_ref_id(r), fx->child_ino);
	netns_ref_put(c, r);
	netns_cache_free(c);
}

static void test_empty_cgroup_is_refused(void **state)
{
	struct fx *fx = *state;
	struct netns_cache *c = netns_cache_new();
	struct netns_ref *r = NULL;
	char empty[PATH_MAX + 48];
	uint64_t id;

	assert_non_null(c);
	snprintf(empty, sizeof(empty), "%s/empty", fx->dir);
	assert_int_equal(mkdir(empty, 0755), 0);
	assert_int_equal(cgroup_id_of(empty, &id), 0);
	/* Our own pid is not in it and nothing else is: no guess. */
	assert_int_equal(netns_cache_get(c, id, (uint32_t)getpid(), &r), -ESRCH);
	assert_null(r);
	rmdir(empty);
	netns_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_pid_of_another_cgroup_is_not_trusted, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_recorded_pid_gone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_cgroup_is_refused, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
