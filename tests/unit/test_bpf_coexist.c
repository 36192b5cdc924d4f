// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for the parts of bpf_coexist.c that need no kernel: the /readyz
 * warning lines (which programs get one, whole lines only when the buffer is
 * short) and the comparison that decides whether h2splitd logs a new picture.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kernel/bpf_coexist.h"

static void add(struct bpf_coexist_report *r, enum bpf_coexist_hook h, enum bpf_coexist_pos pos,
		uint32_t id, const char *name, const char *cgroup)
{
	struct bpf_coexist_prog *p = &r->progs[r->n++];

	*p = (struct bpf_coexist_prog){.hook = h, .pos = pos, .id = id};
	strcpy(p->name, name);
	strcpy(p->cgroup, cgroup);
	r->count[h][pos]++;
}

static void sample(struct bpf_coexist_report *r)
{
	memset(r, 0, sizeof(*r));
	add(r, COEXIST_CONNECT4, COEXIST_BEFORE, 7, "cil_sock4_conne", "/cg");
	add(r, COEXIST_CONNECT6, COEXIST_AFTER, 8, "cil_sock6_conne", "/cg");
	add(r, COEXIST_GETPEER4, COEXIST_BEFORE, 9, "cil_sock4_getpe", "/cg");
	add(r, COEXIST_SOCKOPS, COEXIST_OVERRIDDEN, 10, "old", "/cg/a");
}

static void test_warnings_only_for_connect_before_and_overridden(void **unused)
{
	struct bpf_coexist_report r;
	char buf[1024];

	(void)unused;
	sample(&r);
	assert_int_equal(bpf_coexist_warnings(&r, buf, sizeof(buf)), 2);
	assert_string_equal(buf,
			    "warning: connect4 program 7 (cil_sock4_conne, at /cg) runs before "
			    "h2split: connects it rewrites are not redirected\n"
			    "warning: sock_ops program 10 (old, at /cg/a) is overridden: "
			    "h2split's attachment keeps it from running for pods below its "
			    "cgroup\n");
}

static void test_warnings_whole_lines_only(void **unused)
{
	struct bpf_coexist_report r;
	char buf[120];

	(void)unused;
	sample(&r);
	assert_int_equal(bpf_coexist_warnings(&r, buf, sizeof(buf)), 1);
	assert_non_null(strstr(buf, "connect4 program 7"));
	assert_null(strstr(buf, "sock_ops"));
	assert_int_equal(buf[strlen(buf) - 1], '\n');
	assert_int_equal(bpf_coexist_warnings(&r, buf, 10), 0);
	assert_string_equal(buf, "");
}

static void test_no_warnings_when_h2split_is_first(void **unused)
{
	struct bpf_coexist_report r = {0};
	char buf[256] = "stale";

	(void)unused;
	add(&r, COEXIST_CONNECT4, COEXIST_AFTER, 7, "x", "/");
	assert_int_equal(bpf_coexist_warnings(&r, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
}

static void test_same(void **unused)
{
	struct bpf_coexist_report a, b;

	(void)unused;
	sample(&a);
	sample(&b);
	assert_true(bpf_coexist_same(&a, &b));
	b.progs[1].pos = COEXIST_BEFORE; /* moved in front */
	assert_false(bpf_coexist_same(&a, &b));
	sample(&b);
	strcpy(b.progs[3].cgroup, "/cg/b"); /* attached elsewhere */
	assert_false(bpf_coexist_same(&a, &b));
	sample(&b);
	b.n--; /* one gone */
	assert_false(bpf_coexist_same(&a, &b));
}

static void test_names(void **unused)
{
	(void)unused;
	assert_string_equal(bpf_coexist_hook_name(COEXIST_GETPEER6), "getpeername6");
	assert_string_equal(bpf_coexist_hook_name(COEXIST_HOOKS), "?");
	assert_string_equal(bpf_coexist_pos_name(COEXIST_OVERRIDDEN), "overridden");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_warnings_only_for_connect_before_and_overridden),
	    cmocka_unit_test(test_warnings_whole_lines_only),
	    cmocka_unit_test(test_no_warnings_when_h2split_is_first),
	    cmocka_unit_test(test_same),
	    cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
