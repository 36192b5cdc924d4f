// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of adoption's pieces that need no test bed: when a connection
 * counts as idle (adopt_is_idle), the --adopt-* flags, and sock_diag on
 * real loopback sockets in the test's own netns (dump with tcp_info and
 * owner cgroup, SOCK_DESTROY aborting the app's socket; needs root, skipped
 * otherwise and failed with CI=true).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/config.h"
#include "daemon/adopt_int.h"
#include "kernel/sock_diag.h"

static struct adopt_cand quiet_answered(void)
{
	struct adopt_cand x = {.moved = true, .in_ms = 1000, .out_ms = 999, .moved_ms = 999};

	x.c.have_info = true;
	return x;
}

static void test_idle_after_an_answer(void **state)
{
	struct adopt_cand x = quiet_answered();

	(void)state;
	assert_false(adopt_is_idle(&x, 1000)); /* the answer just came */
	assert_true(adopt_is_idle(&x, 1001));
	assert_true(adopt_is_idle(&x, 1002));
	/* Late in the gap the app's next request may be near: wait for the next
	 * exchange, or for the connection to settle. */
	assert_false(adopt_is_idle(&x, 1003));
	assert_false(adopt_is_idle(&x, 1999));
	assert_true(adopt_is_idle(&x, 2000));
	x.moved_ms = 990; /* this thread looked late: the answer may be 10 ms old */
	assert_false(adopt_is_idle(&x, 1002));
	x.moved_ms = 999;
	assert_true(adopt_is_idle(&x, 1002));
	x.c.rqueue = 1; /* the app has not read it all */
	assert_false(adopt_is_idle(&x, 1002));
	x.c.rqueue = 0;
	x.c.wqueue = 10; /* bytes the peer has not acked */
	assert_false(adopt_is_idle(&x, 1002));
	x.c.wqueue = 0;
	x.c.unacked = 1;
	assert_false(adopt_is_idle(&x, 1002));
	x.c.unacked = 0;
	x.c.have_info = false; /* no tcp_info: never */
	assert_false(adopt_is_idle(&x, 1002));
}

static void test_request_without_answer_waits(void **state)
{
	struct adopt_cand x = quiet_answered();

	(void)state;
	x.out_ms = x.moved_ms = 1005; /* a request after the last answer: the server may be on it */
	assert_false(adopt_is_idle(&x, 1007));
	assert_false(adopt_is_idle(&x, 1900));
	assert_true(adopt_is_idle(&x, 2005)); /* no answer in a second: quiet */
	/* Both in one look: the kernel's clock orders them. */
	x.in_ms = x.out_ms = 1005;
	x.c.last_data_sent_ms = 0, x.c.last_data_recv_ms = 4; /* sent later */
	assert_false(adopt_is_idle(&x, 1007));
	x.c.last_data_sent_ms = 4, x.c.last_data_recv_ms = 4;
	assert_true(adopt_is_idle(&x, 1007));
}

static void test_bulk_transfer_needs_a_longer_quiet(void **state)
{
	struct adopt_cand x = quiet_answered();

	(void)state;
	x.bulk_ms = 1000; /* a look saw a window's worth move */
	assert_false(adopt_is_idle(&x, 1002));
	x.in_ms = x.moved_ms = 1100; /* then only a PING or WINDOW_UPDATE */
	assert_false(adopt_is_idle(&x, 1150));
	assert_false(adopt_is_idle(&x, 1199));
	assert_true(adopt_is_idle(&x, 1200));
}

static void test_unseen_exchange_needs_a_settled_connection(void **state)
{
	struct adopt_cand x = quiet_answered();

	(void)state;
	x.moved = false; /* only the kernel's coarse times are known */
	x.c.last_data_sent_ms = x.c.last_data_recv_ms = 996;
	assert_false(adopt_is_idle(&x, 5000));
	x.c.last_data_sent_ms = x.c.last_data_recv_ms = 1000;
	assert_true(adopt_is_idle(&x, 5000));
}

static void test_flags(void **state)
{
#define F "h2splitd", "--services-file", "/x.json"
	char *def[] = {F};
	char *all[] = {F, "--adopt-existing", "all", "--adopt-max-wait", "2"};
	char *off[] = {F, "--adopt-existing=off"};
	char *bad[] = {F, "--adopt-existing", "some"};
	char *neg[] = {F, "--adopt-max-wait", "-1"};
#undef F
	struct config c;
	char err[256];

	(void)state;
	assert_int_equal(config_parse(&c, 3, def, err, sizeof(err)), 0);
	assert_int_equal(c.adopt_existing, ADOPT_IDLE);
	assert_int_equal(c.adopt_max_wait_s, 30);
	assert_int_equal(config_parse(&c, 7, all, err, sizeof(err)), 0);
	assert_int_equal(c.adopt_existing, ADOPT_ALL);
	assert_int_equal(c.adopt_max_wait_s, 2);
	assert_int_equal(config_parse(&c, 4, off, err, sizeof(err)), 0);
	assert_int_equal(c.adopt_existing, ADOPT_OFF);
	assert_int_equal(config_parse(&c, 5, bad, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--adopt-existing some: expected off, idle or all"));
	assert_int_equal(config_parse(&c, 5, neg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--adopt-max-wait"));
}

struct find {
	uint16_t port; /* the client's, network order */
	struct sock_diag_conn c;
	int n;
};

static int find_cb(void *arg, const struct sock_diag_conn *c)
{
	struct find *f = arg;

	if (c->id.idiag_sport == f->port) {
		f->c = *c;
		f->n++;
	}
	return 0;
}

static void test_sock_diag_dump_and_destroy(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	struct find f = {0};
	int lfd, cfd, sfd, dfd, err = 0;
	char buf[8];

	(void)state;
	if (geteuid() != 0) {
		if (getenv("CI") && !strcmp(getenv("CI"), "true"))
			fail_msg("sock_diag destroy needs root (CI=true: it must run)");
		skip();
	}
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&a, sizeof(a)), 0);
	sfd = accept(lfd, NULL, NULL);
	assert_true(sfd >= 0);
	assert_int_equal(write(cfd, "hi", 2), 2);
	assert_int_equal(read(sfd, buf, sizeof(buf)), 2);
	len = sizeof(a);
	assert_int_equal(getsockname(cfd, (struct sockaddr *)&a, &len), 0);
	f.port = a.sin_port;

	dfd = sock_diag_open(NULL);
	assert_true(dfd >= 0);
	assert_int_equal(sock_diag_dump(dfd, AF_INET, find_cb, &f), 0);
	assert_int_equal(f.n, 1);
	assert_true(f.c.have_info);
	assert_true(f.c.cgroup_id != 0);
	assert_true(f.c.data_segs_out >= 1);
	assert_int_equal(f.c.rqueue, 0);
	assert_int_equal(f.c.wqueue, 0);

	err = sock_diag_destroy(dfd, &f.c);
	if (err == -EOPNOTSUPP) {
		print_message("kernel without CONFIG_INET_DIAG_DESTROY: destroy not checked\n");
	} else {
		assert_int_equal(err, 0);
		assert_int_equal(read(cfd, buf, sizeof(buf)), -1);
		assert_int_equal(errno, ECONNABORTED);
		/* Gone now: a second destroy of the same socket finds nothing. */
		assert_int_equal(sock_diag_destroy(dfd, &f.c), -ENOENT);
	}
	close(dfd);
	close(sfd);
	close(cfd);
	close(lfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_idle_after_an_answer),
	    cmocka_unit_test(test_request_without_answer_waits),
	    cmocka_unit_test(test_bulk_transfer_needs_a_longer_quiet),
	    cmocka_unit_test(test_unseen_exchange_needs_a_settled_connection),
	    cmocka_unit_test(test_flags),
	    cmocka_unit_test(test_sock_diag_dump_and_destroy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
