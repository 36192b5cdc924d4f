// SPDX-License-Identifier: Apache-2.0
/*
 * Circuit breaking: the in-flight caps per endpoint and per service, and the
 * bounded FIFO of streams waiting for room (HAProxy's queue.c, apart from the
 * picking). A waiter is on at most one list (its service's queue or the set's
 * woken list); first come, first served: a new stream never overtakes one
 * already queued.
 */
#include <errno.h>

#include "balancer/balancer_int.h"

static void push(struct balancer_waitq *q, struct balancer_waiter *w, bool front)
{
	w->q = q;
	if (front) {
		w->prev = NULL;
		w->next = q->head;
		if (q->head)
			q->head->prev = w;
		else
			q->tail = w;
		q->head = w;
	} else {
		w->next = NULL;
		w->prev = q->tail;
		if (q->tail)
			q->tail->next = w;
		else
			q->head = w;
		q->tail = w;
	}
	q->n++;
}

bool balancer_unwait(struct balancer_waiter *w)
{
	struct balancer_waitq *q = w->q;

	if (!q)
		return false;
	if (w->prev)
		w->prev->next = w->next;
	else
		q->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		q->tail = w->prev;
	q->n--;
	w->next = w->prev = NULL;
	w->q = NULL;
	return true;
}

/* Move the first waiter of |ls| to the woken list. */
static void wake_one(struct balancer_set *bs, struct lb_service *ls)
{
	struct balancer_waiter *w = ls->waiting.head;

	if (!w)
		return;
	balancer_unwait(w);
	push(&bs->woken, w, false);
}

void lb_wake_all(struct balancer_set *bs, struct lb_service *ls)
{
	while (ls->waiting.head) /* they learn that the service is gone */
		wake_one(bs, ls);
}

/* The woken stream picks again and, should it find no room after all, goes
 * back to the front. */
void lb_maybe_wake(struct balancer_set *bs, struct lb_service *ls)
{
	size_t n;
	struct balancer_candidate *const *list = lb_candidates(ls, &n);
	bool room = !ls->max_ep;

	if (!ls->waiting.n || (ls->max_svc && ls->inflight >= ls->max_svc))
		return;
	for (size_t i = 0; !room && i < n; i++) /* only with waiters: rare */
		room = !lb_at_cap(ls, list[i]);
	if (room)
		wake_one(bs, ls);
}

bool lb_must_wait(struct lb_service *ls, struct balancer_pick *p)
{
	if (ls->max_svc && ls->inflight >= ls->max_svc) {
		ls->full = BALANCER_CAP_SERVICE;
		p->saturated = true;
		return true;
	}
	/* A new stream queues behind waiting ones, for the cap they wait for
	 * (ls->full stays). */
	if (ls->waiting.n && !p->waited) {
		p->saturated = true;
		return true;
	}
	return false;
}

bool lb_any_at_cap(const struct lb_service *ls, struct balancer_candidate *const *c, size_t n,
		   int family)
{
	for (size_t i = 0; ls->max_ep && i < n; i++)
		if (!lb_wrong_family(lb_ep_of(c[i]), family) && lb_at_cap(ls, c[i]))
			return true;
	return false;
}

struct balancer_waiter *balancer_woken(struct balancer_set *bs)
{
	struct balancer_waiter *w = bs->woken.head;

	if (w)
		balancer_unwait(w);
	return w;
}

int balancer_wait(struct balancer_set *bs, uint32_t service_id, struct balancer_waiter *w,
		  bool front)
{
	struct lb_service *ls = *lb_service_slot(bs, service_id);

	if (!ls)
		return -ENOENT;
	if (!front && ls->waiting.n >= ls->max_pending)
		return -ENOSPC;
	push(&ls->waiting, w, front);
	return 0;
}

size_t balancer_waiting(struct balancer_set *bs, uint32_t service_id)
{
	struct lb_service *ls = *lb_service_slot(bs, service_id);

	return ls ? ls->waiting.n : 0;
}

enum balancer_cap balancer_full_cap(struct balancer_set *bs, uint32_t service_id)
{
	struct lb_service *ls = *lb_service_slot(bs, service_id);

	return ls ? ls->full : BALANCER_CAP_NONE;
}
