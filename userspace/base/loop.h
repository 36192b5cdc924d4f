/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One epoll event loop per thread: fd callbacks, monotonic timers and a
 * wakeup other threads may post closures to. Only the owning thread touches a
 * loop, except loop_post() and loop_stop(), which are safe from any thread.
 * An fd's interest mask is cached, so loop_set_events() with an unchanged
 * mask costs no syscall.
 */
#ifndef H2SPLIT_LOOP_H
#define H2SPLIT_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_timer;

/* |events| is the EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP set that fired. */
typedef void loop_fd_cb(struct loop *l, int fd, uint32_t events, void *arg);
typedef void loop_timer_cb(struct loop *l, struct loop_timer *t, void *arg);
typedef void loop_post_cb(struct loop *l, void *arg);

/* NULL with errno set (ENOMEM, or EMFILE/ENFILE when out of fds). */
struct loop *loop_new(void);
/* Frees the loop; registered fds are not closed, pending timers are dropped. */
void loop_free(struct loop *l);

/* Watch |fd| for |events| (EPOLLIN|EPOLLOUT...). 0 or -errno. */
int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_cb *cb, void *arg);
/* Change the mask; no syscall when it is unchanged. 0 or -errno. */
int loop_set_events(struct loop *l, int fd, uint32_t events);
/* Stop watching |fd| (call before close()). Safe from inside its own callback. */
void loop_del_fd(struct loop *l, int fd);
/* loop_del_fd() for a caller that closes |fd| next and holds the only
 * reference to its file (never dup'd or passed on): the close takes it out
 * of the epoll set, so no EPOLL_CTL_DEL syscall. */
void loop_forget_fd(struct loop *l, int fd);

/* One-shot timer |ms| from now (CLOCK_MONOTONIC). NULL on ENOMEM. */
struct loop_timer *loop_timer_add(struct loop *l, uint64_t ms, loop_timer_cb *cb, void *arg);
/* Make pending timer |t| fire |ms| from now instead (no allocation), as if
 * just added. */
void loop_timer_move(struct loop *l, struct loop_timer *t, uint64_t ms);
/* Cancel a pending timer; |t| must not be used afterwards. NULL is a no-op.
 * Must not be called on a timer whose callback is running (it is already gone). */
void loop_timer_cancel(struct loop *l, struct loop_timer *t);

/* Run |cb(arg)| once per pass, after the pass's fd callbacks and timers and
 * before the loop waits again: work that callbacks only mark (flushing
 * output) is then done once per pass, not once per event. Owning thread
 * only; at most LOOP_MAX_PASS_HOOKS. 0 or -ENOSPC. */
#define LOOP_MAX_PASS_HOOKS 4
int loop_add_pass_hook(struct loop *l, loop_post_cb *cb, void *arg);
void loop_del_pass_hook(struct loop *l, loop_post_cb *cb, void *arg);

/* Run |cb(arg)| on the loop's thread soon. Any thread. 0 or -ENOMEM. */
int loop_post(struct loop *l, loop_post_cb *cb, void *arg);

/* Dispatch until loop_stop(). 0, or -errno if epoll_wait fails. */
int loop_run(struct loop *l);
/* Make loop_run() return after the current pass; called before it runs,
 * the next loop_run() returns at once. Any thread. */
void loop_stop(struct loop *l);

/* CLOCK_MONOTONIC in milliseconds and nanoseconds. */
uint64_t loop_now_ms(void);
uint64_t loop_now_ns(void);

#endif
