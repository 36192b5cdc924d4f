// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of the event loop: fd dispatch, removal of an fd by an earlier
 * callback of the same batch, timer order and cancel, posts from another
 * thread, and timers added from a timer callback waiting for the next pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/loop.h"

struct rec {
	int order[16];
	int n;
	struct loop_timer *to_cancel;
	int pipes[2][2];
};

struct tagged {
	struct rec *r;
	int id;
};

static void record_timer(struct loop *l, struct loop_timer *t, void *arg)
{
	struct tagged *tg = arg;

	(void)t;
	tg->r->order[tg->r->n++] = tg->id;
	if (tg->r->n == 3)
		loop_stop(l);
}

static void test_timers_fire_in_order_and_cancel(void **state)
{
	struct loop *l = loop_new();
	struct rec r = {0};
	struct tagged tg[4] = {{&r, 1}, {&r, 2}, {&r, 3}, {&r, 4}};
	struct loop_timer *t;

	(void)state;
	assert_non_null(l);
	assert_non_null(loop_timer_add(l, 20, record_timer, &tg[0]));
	t = loop_timer_add(l, 1, record_timer, &tg[1]);
	assert_non_null(t);
	loop_timer_cancel(l, t);
	assert_non_null(loop_timer_add(l, 0, record_timer, &tg[2]));
	assert_non_null(loop_timer_add(l, 40, record_timer, &tg[3]));
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(r.n, 3); /* the cancelled one never ran */
	assert_int_equal(r.order[0], 3);
	assert_int_equal(r.order[1], 1);
	assert_int_equal(r.order[2], 4);
	loop_free(l);
}

static void test_timer_move(void **state)
{
	struct loop *l = loop_new();
	struct rec r = {0};
	struct tagged tg[3] = {{&r, 1}, {&r, 2}, {&r, 3}};
	struct loop_timer *late, *early;

	(void)state;
	assert_non_null(l);
	late = loop_timer_add(l, 10000, record_timer, &tg[0]);
	assert_non_null(loop_timer_add(l, 30, record_timer, &tg[1]));
	early = loop_timer_add(l, 0, record_timer, &tg[2]);
	assert_non_null(late);
	assert_non_null(early);
	loop_timer_move(l, late, 0);   /* 10 s -> now: runs first (moved before the other 0) */
	loop_timer_move(l, early, 60); /* now -> after the 30 ms one */
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(r.n, 3);
	assert_int_equal(r.order[0], 1);
	assert_int_equal(r.order[1], 2);
	assert_int_equal(r.order[2], 3);
	loop_free(l);
}

static void close_other(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct rec *r = arg;
	int other = fd == r->pipes[0][0] ? r->pipes[1][0] : r->pipes[0][0];

	(void)events;
	r->order[r->n++] = fd;
	/* Both pipes are readable in the same batch: the second must not be dispatched. */
	loop_del_fd(l, other);
	loop_del_fd(l, fd);
	loop_stop(l);
}

static void test_fd_removed_by_earlier_callback_is_skipped(void **state)
{
	struct loop *l = loop_new();
	struct rec r = {0};

	(void)state;
	assert_int_equal(pipe(r.pipes[0]), 0);
	assert_int_equal(pipe(r.pipes[1]), 0);
	assert_int_equal(write(r.pipes[0][1], "x", 1), 1);
	assert_int_equal(write(r.pipes[1][1], "x", 1), 1);
	assert_int_equal(loop_add_fd(l, r.pipes[0][0], EPOLLIN, close_other, &r), 0);
	assert_int_equal(loop_add_fd(l, r.pipes[1][0], EPOLLIN, close_other, &r), 0);
	assert_int_equal(loop_add_fd(l, r.pipes[1][0], EPOLLIN, close_other, &r), -EEXIST);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(r.n, 1);
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 2; j++)
			close(r.pipes[i][j]);
	loop_free(l);
}

static void record_fd_stop(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct tagged *tg = arg;
	char c;

	(void)events;
	assert_int_equal(read(fd, &c, 1), 1);
	tg->r->order[tg->r->n++] = tg->id;
	loop_stop(l);
}

static void test_forgotten_fd_closed_then_reused(void **state)
{
	struct loop *l = loop_new();
	struct rec r = {0};
	struct tagged old = {&r, 1}, fresh = {&r, 2};
	int fd;

	(void)state;
	assert_int_equal(pipe(r.pipes[0]), 0);
	fd = r.pipes[0][0];
	assert_int_equal(write(r.pipes[0][1], "x", 1), 1);
	assert_int_equal(loop_add_fd(l, fd, EPOLLIN, record_fd_stop, &old), 0);
	/* Forgotten and closed with its byte unread: the close alone takes it
	 * out of the epoll set, and the number can be registered again. */
	loop_forget_fd(l, fd);
	close(fd);
	close(r.pipes[0][1]);
	assert_int_equal(pipe(r.pipes[1]), 0);
	assert_int_equal(r.pipes[1][0], fd); /* lowest free number: the same */
	assert_int_equal(loop_add_fd(l, fd, EPOLLIN, record_fd_stop, &fresh), 0);
	assert_int_equal(write(r.pipes[1][1], "y", 1), 1);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.order[0], 2);
	loop_del_fd(l, fd);
	close(r.pipes[1][0]);
	close(r.pipes[1][1]);
	loop_free(l);
}

static void posted(struct loop *l, void *arg)
{
	int *n = arg;

	if (++*n == 100)
		loop_stop(l);
}

static void *poster(void *arg)
{
	struct loop *l = ((void **)arg)[0];
	int *n = ((void **)arg)[1];

	for (int i = 0; i < 100; i++)
		assert_int_equal(loop_post(l, posted, n), 0);
	return NULL;
}

static void test_post_from_other_thread(void **state)
{
	struct loop *l = loop_new();
	int n = 0;
	void *args[2] = {l, &n};
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, poster, args), 0);
	assert_int_equal(loop_run(l), 0);
	pthread_join(th, NULL);
	assert_int_equal(n, 100);
	loop_free(l);
}

static void rearm(struct loop *l, struct loop_timer *t, void *arg)
{
	int *n = arg;

	(void)t;
	/* A 0 ms timer added here must wait for the next pass, never run in this one. */
	if (++*n < 50)
		assert_non_null(loop_timer_add(l, 0, rearm, n));
	else
		loop_stop(l);
}

static void test_timer_added_in_callback_runs_next_pass(void **state)
{
	struct loop *l = loop_new();
	int n = 0;

	(void)state;
	assert_non_null(loop_timer_add(l, 0, rearm, &n));
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(n, 50);
	loop_free(l);
}

struct hooked {
	int fd_calls;
	int hook_calls;
	int fd_calls_seen_by_hook;
	int pipe[2];
};

static void hooked_fd(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct hooked *h = arg;
	char c;

	(void)l;
	(void)events;
	if (read(fd, &c, 1) == 1)
		h->fd_calls++;
}

static void pass_hook(struct loop *l, void *arg)
{
	struct hooked *h = arg;

	h->hook_calls++;
	h->fd_calls_seen_by_hook = h->fd_calls;
	if (h->fd_calls == 2) {
		loop_del_pass_hook(l, pass_hook, h);
		loop_stop(l);
	} else if (write(h->pipe[1], "y", 1) != 1) {
		fail();
	}
}

/* A pass hook runs after the pass's fd callbacks, once per pass, until removed. */
static void test_pass_hook_runs_after_callbacks(void **state)
{
	struct loop *l = loop_new();
	struct hooked h = {0};

	(void)state;
	assert_int_equal(pipe(h.pipe), 0);
	assert_int_equal(write(h.pipe[1], "x", 1), 1);
	assert_int_equal(loop_add_fd(l, h.pipe[0], EPOLLIN, hooked_fd, &h), 0);
	assert_int_equal(loop_add_pass_hook(l, pass_hook, &h), 0);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(h.fd_calls, 2);
	assert_int_equal(h.fd_calls_seen_by_hook, 2);
	assert_int_equal(h.hook_calls, 2);
	for (int i = 0; i < LOOP_MAX_PASS_HOOKS; i++)
		assert_int_equal(loop_add_pass_hook(l, pass_hook, &h), 0);
	assert_int_equal(loop_add_pass_hook(l, pass_hook, &h), -ENOSPC);
	close(h.pipe[0]);
	close(h.pipe[1]);
	loop_free(l);
}

static void stop_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	(void)t;
	(void)arg;
	loop_stop(l);
}

static void *run_loop(void *arg)
{
	return (void *)(intptr_t)loop_run(arg);
}

/* A worker told to stop before its thread reached loop_run() must still stop:
 * the daemon joins it right after. The join is bounded by an alarm, so a lost
 * stop fails the test instead of hanging it. */
static void test_stop_before_run_is_kept(void **state)
{
	struct loop *l = loop_new();
	pthread_t t;
	void *rc;

	(void)state;
	assert_non_null(l);
	loop_stop(l);
	alarm(10);
	assert_int_equal(pthread_create(&t, NULL, run_loop, l), 0);
	assert_int_equal(pthread_join(t, &rc), 0);
	alarm(0);
	assert_int_equal((intptr_t)rc, 0);
	/* Consumed on the way out: the loop runs again until the next stop. */
	assert_non_null(loop_timer_add(l, 1, stop_cb, l));
	assert_int_equal(loop_run(l), 0);
	loop_free(l);
}

static void test_set_events_unregistered(void **state)
{
	struct loop *l = loop_new();

	(void)state;
	assert_int_equal(loop_set_events(l, 1000, EPOLLIN), -ENOENT);
	assert_int_equal(loop_add_fd(l, -1, EPOLLIN, close_other, NULL), -EBADF);
	loop_del_fd(l, 1000); /* no-op */
	loop_free(l);
}

/* Out of fds, loop_new() says so (EMFILE), not "out of memory". */
static void test_new_out_of_fds_says_emfile(void **state)
{
	struct rlimit old, low;
	struct loop *l;
	int fd, err;

	(void)state;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free number */
	assert_true(fd >= 0);
	close(fd);
	low = old;
	low.rlim_cur = (rlim_t)fd; /* every number from fd up is over the limit */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	errno = 0;
	l = loop_new();
	err = errno;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_null(l);
	assert_int_equal(err, EMFILE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_fire_in_order_and_cancel),
		cmocka_unit_test(test_timer_move),
		cmocka_unit_test(test_fd_removed_by_earlier_callback_is_skipped),
		cmocka_unit_test(test_forgotten_fd_closed_then_reused),
		cmocka_unit_test(test_post_from_other_thread),
		cmocka_unit_test(test_timer_added_in_callback_runs_next_pass),
		cmocka_unit_test(test_pass_hook_runs_after_callbacks),
		cmocka_unit_test(test_set_events_unregistered),
		cmocka_unit_test(test_stop_before_run_is_kept),
		cmocka_unit_test(test_new_out_of_fds_says_emfile),
	};

	return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
