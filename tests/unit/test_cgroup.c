// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for cgroup.c and the read-only parts of bpf_loader.c: finding
 * the cgroup2 mount in mounts(5) text (hybrid and unified hosts, escaped
 * paths), directory checks, id <-> path on the live hierarchy when there is
 * one, and that status/uninstall of an empty pin root change nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernel/bpf_loader.h"
#include "kernel/cgroup.h"

static int root_from(const char *text, char *buf, size_t len)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	int err;

	assert_non_null(f);
	err = cgroup_v2_root_from(f, buf, len);
	fclose(f);
	return err;
}

static void test_root_hybrid(void **unused)
{
	char buf[PATH_MAX];

	(void)unused;
	assert_int_equal(root_from("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
				   "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
				   "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
				   buf, sizeof(buf)),
			 0);
	assert_string_equal(buf, "/sys/fs/cgroup/unified");
}

static void test_root_prefers_sys_fs_cgroup(void **unused)
{
	char buf[PATH_MAX];

	(void)unused;
	assert_int_equal(root_from("cgroup2 /run/other cgroup2 rw 0 0\n"
				   "proc /proc proc rw 0 0\n"
				   "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n",
				   buf, sizeof(buf)),
			 0);
	assert_string_equal(buf, "/sys/fs/cgroup");
	assert_int_equal(root_from("cgroup2 /run/other cgroup2 rw 0 0\n", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/run/other");
}

static void test_root_missing_escaped_and_short(void **unused)
{
	char buf[PATH_MAX], small[8];

	(void)unused;
	assert_int_equal(root_from("proc /proc proc rw 0 0\n", buf, sizeof(buf)), -ENOENT);
	assert_int_equal(root_from("", buf, sizeof(buf)), -ENOENT);
	assert_int_equal(root_from("none /mnt/my\\040cgroups cgroup2 rw 0 0\n", buf, sizeof(buf)),
			 0);
	assert_string_equal(buf, "/mnt/my cgroups");
	assert_int_equal(
	    root_from("cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n", small, sizeof(small)),
	    -ENAMETOOLONG);
}

static void test_check_dir(void **unused)
{
	char tmpl[] = "/tmp/h2s-cgtest-XXXXXX";

	(void)unused;
	assert_int_equal(cgroup_check_dir("/nonexistent/dir"), -ENOENT);
	assert_int_equal(cgroup_check_dir("/proc/self/status"), -ENOTDIR);
	assert_non_null(mkdtemp(tmpl));
	assert_int_equal(cgroup_check_dir(tmpl), -EMEDIUMTYPE);
	assert_int_equal(cgroup_id_of(tmpl, &(uint64_t){0}), -EMEDIUMTYPE);
	rmdir(tmpl);
}

/* On the live hierarchy (read-only): a cgroup's id is its inode number. */
static void test_live_hierarchy(void **unused)
{
	char root[PATH_MAX], self[PATH_MAX], path[PATH_MAX];
	struct stat st;
	uint64_t id;

	(void)unused;
	if (cgroup_v2_root(root, sizeof(root)) != 0)
		skip();
	assert_int_equal(cgroup_id_of(root, &id), 0);
	assert_int_equal(stat(root, &st), 0);
	assert_int_equal(id, (uint64_t)st.st_ino);
	assert_int_equal(cgroup_path_of_id(root, id, path, sizeof(path)), 0);
	assert_string_equal(path, root);
	assert_int_equal(cgroup_self_dir(self, sizeof(self)), 0);
	assert_int_equal(strncmp(self, root, strlen(root)), 0);
	assert_int_equal(cgroup_id_of(self, &id), 0);
	assert_int_equal(cgroup_path_of_id(root, id, path, sizeof(path)), 0);
	assert_string_equal(path, self);
	assert_int_equal(cgroup_path_of_id(root, UINT64_MAX - 1, path, sizeof(path)), -ENOENT);
	assert_true(cgroup_is_root(root));
	strcat(root, "/."); /* the same directory, spelled differently */
	assert_true(cgroup_is_root(root));
	assert_false(cgroup_is_root("/tmp"));
	assert_false(cgroup_is_root("/nonexistent/cgroup"));
}

static void test_loader_names(void **unused)
{
	(void)unused;
	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		assert_non_null(bpf_loader_prog_name((enum bpf_loader_prog)i));
		assert_non_null(bpf_loader_prog_hook((enum bpf_loader_prog)i));
		/* The kernel keeps 15 characters of a program name. */
		assert_true(strlen(bpf_loader_prog_name((enum bpf_loader_prog)i)) <= 15);
	}
	assert_null(bpf_loader_prog_name(BPF_LOADER_PROGS));
}

static void test_loader_empty_pin_root(void **unused)
{
	char tmpl[] = "/tmp/h2s-pintest-XXXXXX";
	struct bpf_loader_status st;

	(void)unused;
	assert_non_null(mkdtemp(tmpl));
	assert_int_equal(bpf_loader_status(tmpl, &st), 0);
	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		assert_false(st.map_pinned[i]);
	for (int i = 0; i < BPF_LOADER_PROGS; i++)
		assert_false(st.links[i].pinned);
	/* Uninstall is idempotent and removes the (now empty) root. */
	assert_int_equal(bpf_loader_uninstall(tmpl), 0);
	assert_int_equal(access(tmpl, F_OK), -1);
	assert_int_equal(bpf_loader_uninstall(tmpl), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_root_hybrid),
	    cmocka_unit_test(test_root_prefers_sys_fs_cgroup),
	    cmocka_unit_test(test_root_missing_escaped_and_short),
	    cmocka_unit_test(test_check_dir),
	    cmocka_unit_test(test_live_hierarchy),
	    cmocka_unit_test(test_loader_names),
	    cmocka_unit_test(test_loader_empty_pin_root),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
