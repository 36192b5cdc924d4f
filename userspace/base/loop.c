// SPDX-License-Identifier: Apache-2.0
/*
 * epoll event loop: fd table indexed by fd, a min-heap of monotonic timers
 * and an eventfd-backed post queue for other threads. Each epoll event
 * carries the fd's registration generation, so an event for an fd that an
 * earlier callback in the same batch closed (and maybe reused) is dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "base/loop.h"

struct fd_entry {
	loop_fd_cb *cb;
	void *arg;
	uint32_t events;
	uint32_t gen; /* 0: not registered */
};

struct loop_timer {
	uint64_t when_ms;
	uint64_t seq;
	loop_timer_cb *cb;
	void *arg;
	size_t heap_idx;
};

struct post {
	loop_post_cb *cb;
	void *arg;
	struct post *next;
};

struct loop {
	int epfd;
	int wakefd;
	atomic_bool stop;
	struct fd_entry *fds; /* owned, indexed by fd */
	int n_fds;
	uint32_t next_gen;
	struct loop_timer **heap; /* owned array; the timers too */
	size_t heap_len, heap_cap;
	uint64_t timer_seq;
	pthread_mutex_t post_lock;
	struct post *posts; /* owned, LIFO; reversed when drained */
	struct {
		loop_post_cb *cb;
		void *arg;
	} hooks[LOOP_MAX_PASS_HOOKS]; /* end-of-pass hooks; cb NULL: free slot */
};

uint64_t loop_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t loop_now_ms(void)
{
	return loop_now_ns() / 1000000ull;
}

static void wake_cb(struct loop *l, int fd, uint32_t events, void *arg);

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	int err;

	if (!l)
		return NULL;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&l->post_lock, NULL);
	err = l->epfd < 0 || l->wakefd < 0 ? errno : -loop_add_fd(l, l->wakefd, EPOLLIN, wake_cb, NULL);
	if (err) {
		loop_free(l);
		errno = err;
		return NULL;
	}
	return l;
}

void loop_free(struct loop *l)
{
	struct post *p, *next;

	if (!l)
		return;
	if (l->epfd >= 0)
		close(l->epfd);
	if (l->wakefd >= 0)
		close(l->wakefd);
	for (size_t i = 0; i < l->heap_len; i++)
		free(l->heap[i]);
	for (p = l->posts; p; p = next) {
		next = p->next;
		free(p);
	}
	pthread_mutex_destroy(&l->post_lock);
	free(l->heap);
	free(l->fds);
	free(l);
}

static int grow_fds(struct loop *l, int fd)
{
	int n = l->n_fds ? l->n_fds : 64;
	struct fd_entry *fds;

	while (n <= fd)
		n *= 2;
	fds = realloc(l->fds, (size_t)n * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	memset(fds + l->n_fds, 0, (size_t)(n - l->n_fds) * sizeof(*fds));
	l->fds = fds;
	l->n_fds = n;
	return 0;
}

static int ctl(struct loop *l, int op, int fd, const struct fd_entry *e)
{
	struct epoll_event ev = {
		.events = e->events,
		.data.u64 = ((uint64_t)e->gen << 32) | (uint32_t)fd,
	};

	return epoll_ctl(l->epfd, op, fd, &ev) ? -errno : 0;
}

int loop_add_fd(struct loop *l, int fd, uint32_t events, loop_fd_cb *cb, void *arg)
{
	struct fd_entry *e;
	int err;

	if (fd < 0)
		return -EBADF;
	if (fd >= l->n_fds && (err = grow_fds(l, fd)))
		return err;
	e = &l->fds[fd];
	if (e->gen)
		return -EEXIST;
	if (++l->next_gen == 0)
		l->next_gen = 1;
	*e = (struct fd_entry){.cb = cb, .arg = arg, .events = events, .gen = l->next_gen};
	err = ctl(l, EPOLL_CTL_ADD, fd, e);
	if (err)
		e->gen = 0;
	return err;
}

int loop_set_events(struct loop *l, int fd, uint32_t events)
{
	struct fd_entry *e;

	if (fd < 0 || fd >= l->n_fds || !l->fds[fd].gen)
		return -ENOENT;
	e = &l->fds[fd];
	if (e->events == events)
		return 0;
	e->events = events;
	return ctl(l, EPOLL_CTL_MOD, fd, e);
}

void loop_del_fd(struct loop *l, int fd)
{
	if (fd < 0 || fd >= l->n_fds || !l->fds[fd].gen)
		return;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	l->fds[fd].gen = 0;
}

void loop_forget_fd(struct loop *l, int fd)
{
	if (fd >= 0 && fd < l->n_fds)
		l->fds[fd].gen = 0;
}

/* Timer heap, ordered by (when_ms, seq). */
static bool timer_before(const struct loop_timer *a, const struct loop_timer *b)
{
	return a->when_ms < b->when_ms || (a->when_ms == b->when_ms && a->seq < b->seq);
}

static void heap_set(struct loop *l, size_t i, struct loop_timer *t)
{
	l->heap[i] = t;
	t->heap_idx = i;
}

static void heap_up(struct loop *l, size_t i)
{
	struct loop_timer *t = l->heap[i];

	while (i > 0 && timer_before(t, l->heap[(i - 1) / 2])) {
		heap_set(l, i, l->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(l, i, t);
}

static void heap_down(struct loop *l, size_t i)
{
	struct loop_timer *t = l->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= l->heap_len)
			break;
		if (c + 1 < l->heap_len && timer_before(l->heap[c + 1], l->heap[c]))
			c++;
		if (!timer_before(l->heap[c], t))
			break;
		heap_set(l, i, l->heap[c]);
		i = c;
	}
	heap_set(l, i, t);
}

static void heap_remove(struct loop *l, struct loop_timer *t)
{
	size_t i = t->heap_idx;
	struct loop_timer *last = l->heap[--l->heap_len];

	if (last == t)
		return;
	heap_set(l, i, last);
	heap_down(l, i);
	heap_up(l, last->heap_idx);
}

struct loop_timer *loop_timer_add(struct loop *l, uint64_t ms, loop_timer_cb *cb, void *arg)
{
	struct loop_timer *t;

	if (l->heap_len == l->heap_cap) {
		size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
		struct loop_timer **h = realloc(l->heap, cap * sizeof(*h));

		if (!h)
			return NULL;
		l->heap = h;
		l->heap_cap = cap;
	}
	t = malloc(sizeof(*t));
	if (!t)
		return NULL;
	*t = (struct loop_timer){.when_ms = loop_now_ms() + ms, .seq = ++l->timer_seq, .cb = cb, .arg = arg};
	heap_set(l, l->heap_len++, t);
	heap_up(l, t->heap_idx);
	return t;
}

void loop_timer_move(struct loop *l, struct loop_timer *t, uint64_t ms)
{
	heap_remove(l, t);
	t->when_ms = loop_now_ms() + ms;
	t->seq = ++l->timer_seq; /* as if added now: not run in a pass already going */
	heap_set(l, l->heap_len++, t);
	heap_up(l, t->heap_idx);
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	if (!t)
		return;
	heap_remove(l, t);
	free(t);
}

/* Run due timers; timers added by these callbacks wait for the next pass. */
static void run_timers(struct loop *l)
{
	uint64_t now = loop_now_ms(), last_seq = l->timer_seq;

	while (l->heap_len) {
		struct loop_timer *t = l->heap[0];

		if (t->when_ms > now || t->seq > last_seq)
			break;
		heap_remove(l, t);
		t->cb(l, t, t->arg);
		free(t);
	}
}

static int next_timeout(struct loop *l)
{
	uint64_t now;

	if (!l->heap_len)
		return -1;
	now = loop_now_ms();
	if (l->heap[0]->when_ms <= now)
		return 0;
	return (int)(l->heap[0]->when_ms - now > 60000 ? 60000 : l->heap[0]->when_ms - now);
}

int loop_post(struct loop *l, loop_post_cb *cb, void *arg)
{
	struct post *p = malloc(sizeof(*p));
	uint64_t one = 1;

	if (!p)
		return -ENOMEM;
	p->cb = cb;
	p->arg = arg;
	pthread_mutex_lock(&l->post_lock);
	p->next = l->posts;
	l->posts = p;
	pthread_mutex_unlock(&l->post_lock);
	if (write(l->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

static void wake_cb(struct loop *l, int fd, uint32_t events, void *arg)
{
	struct post *p, *rev = NULL, *next;
	uint64_t v;

	(void)events;
	(void)arg;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&l->post_lock);
	p = l->posts;
	l->posts = NULL;
	pthread_mutex_unlock(&l->post_lock);
	for (; p; p = next) { /* restore posting order */
		next = p->next;
		p->next = rev;
		rev = p;
	}
	for (p = rev; p; p = next) {
		next = p->next;
		p->cb(l, p->arg);
		free(p);
	}
}

int loop_add_pass_hook(struct loop *l, loop_post_cb *cb, void *arg)
{
	for (int i = 0; i < LOOP_MAX_PASS_HOOKS; i++) {
		if (!l->hooks[i].cb) {
			l->hooks[i].cb = cb;
			l->hooks[i].arg = arg;
			return 0;
		}
	}
	return -ENOSPC;
}

void loop_del_pass_hook(struct loop *l, loop_post_cb *cb, void *arg)
{
	for (int i = 0; i < LOOP_MAX_PASS_HOOKS; i++)
		if (l->hooks[i].cb == cb && l->hooks[i].arg == arg)
			l->hooks[i].cb = NULL;
}

static void run_pass_hooks(struct loop *l)
{
	for (int i = 0; i < LOOP_MAX_PASS_HOOKS; i++)
		if (l->hooks[i].cb)
			l->hooks[i].cb(l, l->hooks[i].arg);
}

void loop_stop(struct loop *l)
{
	uint64_t one = 1;

	atomic_store(&l->stop, true);
	if (write(l->wakefd, &one, sizeof(one)) < 0)
		return; /* the counter is saturated: a wakeup is pending anyway */
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[256];

	/* A loop_stop() before the thread got here counts: the flag is consumed
	 * on the way out, never cleared on the way in. */
	while (!atomic_load(&l->stop)) {
		int n = epoll_wait(l->epfd, evs, 256, next_timeout(l));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			int fd = (int)(uint32_t)evs[i].data.u64;
			uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
			struct fd_entry *e;

			/* An earlier callback of this batch may have removed or reused it. */
			if (fd >= l->n_fds || l->fds[fd].gen != gen)
				continue;
			e = &l->fds[fd];
			e->cb(l, fd, evs[i].events, e->arg);
		}
		run_timers(l);
		run_pass_hooks(l);
	}
	atomic_store(&l->stop, false);
	return 0;
}
