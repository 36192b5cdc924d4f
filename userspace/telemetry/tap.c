// SPDX-License-Identifier: Apache-2.0
/*
 * The tap's rings (tap.h). Each slot carries a sequence number under a
 * seqlock: the worker (the ring's one writer) makes it odd, writes the event
 * as words, and makes it even again; a reader copies the words and keeps the
 * copy only if the sequence is the one it expected before and after.
 * Invariant: slot i of a ring holds event number n with n % TAP_RING == i,
 * its sequence 2n + 2 once complete.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/tap.h"

#define EV_WORDS ((sizeof(struct tap_event) + 7) / 8)

struct slot {
	_Atomic uint64_t seq;
	_Atomic uint64_t w[EV_WORDS];
};

struct ring {
	_Atomic uint64_t head; /* events pushed so far */
	struct slot slots[TAP_RING];
};

struct tap {
	_Atomic uint64_t until_ms; /* record while CLOCK_MONOTONIC ms is below */
	int n;
	struct ring *rings; /* owned, n */
};

struct tap *tap_new(int n_rings)
{
	struct tap *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->n = n_rings;
	t->rings = calloc(n_rings > 0 ? (size_t)n_rings : 1, sizeof(*t->rings));
	if (!t->rings) {
		free(t);
		return NULL;
	}
	return t;
}

void tap_free(struct tap *t)
{
	if (!t)
		return;
	free(t->rings);
	free(t);
}

int tap_rings(const struct tap *t)
{
	return t->n;
}

bool tap_wanted(const struct tap *t, uint64_t now_ms)
{
	return atomic_load_explicit(&((struct tap *)t)->until_ms, memory_order_relaxed) > now_ms;
}

void tap_push(struct tap *t, int ring, const struct tap_event *ev)
{
	struct ring *r = &t->rings[ring];
	uint64_t n = atomic_load_explicit(&r->head, memory_order_relaxed), words[EV_WORDS] = {0};
	struct slot *s = &r->slots[n % TAP_RING];

	memcpy(words, ev, sizeof(*ev));
	atomic_store_explicit(&s->seq, 2 * n + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (size_t i = 0; i < EV_WORDS; i++)
		atomic_store_explicit(&s->w[i], words[i], memory_order_relaxed);
	atomic_store_explicit(&s->seq, 2 * n + 2, memory_order_release);
	atomic_store_explicit(&r->head, n + 1, memory_order_release);
}

void tap_arm(struct tap *t, uint64_t now_ms)
{
	atomic_store_explicit(&t->until_ms, now_ms + TAP_LINGER_MS, memory_order_relaxed);
}

void tap_cursors_now(const struct tap *t, uint64_t *cursors)
{
	for (int i = 0; i < t->n; i++)
		cursors[i] = atomic_load_explicit(&t->rings[i].head, memory_order_acquire);
}

/* Copy event |n| of |r| into |ev|: false when it was overwritten meanwhile. */
static bool read_slot(struct ring *r, uint64_t n, struct tap_event *ev)
{
	struct slot *s = &r->slots[n % TAP_RING];
	uint64_t words[EV_WORDS];

	if (atomic_load_explicit(&s->seq, memory_order_acquire) != 2 * n + 2)
		return false;
	for (size_t i = 0; i < EV_WORDS; i++)
		words[i] = atomic_load_explicit(&s->w[i], memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&s->seq, memory_order_relaxed) != 2 * n + 2)
		return false;
	memcpy(ev, words, sizeof(*ev));
	ev->caller[sizeof(ev->caller) - 1] = 0;
	ev->method[sizeof(ev->method) - 1] = 0;
	return true;
}

void tap_read(const struct tap *t, uint64_t *cursors,
	      int (*cb)(void *arg, const struct tap_event *ev), void *arg, uint64_t *lost)
{
	for (int i = 0; i < t->n; i++) {
		struct ring *r = &t->rings[i];
		uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);

		if (cursors[i] > head) /* not from this tap: start over */
			cursors[i] = head;
		if (head - cursors[i] > TAP_RING) {
			*lost += head - cursors[i] - TAP_RING;
			cursors[i] = head - TAP_RING;
		}
		for (; cursors[i] < head; cursors[i]++) {
			struct tap_event ev;

			if (!read_slot(r, cursors[i], &ev)) {
				(*lost)++;
				continue;
			}
			if (cb(arg, &ev)) {
				cursors[i]++;
				return;
			}
		}
	}
}
