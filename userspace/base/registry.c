// SPDX-License-Identifier: Apache-2.0
/*
 * Refcounted desired-state snapshots (see registry.h). The reference count is
 * the only shared mutable word; the state behind it is read-only.
 */
#include <stdlib.h>

#include "base/registry.h"

struct snapshot *registry_snapshot_new(struct state *st, uint64_t generation)
{
	struct snapshot *s = malloc(sizeof(*s));

	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	s->generation = generation;
	s->st = st;
	return s;
}

struct snapshot *registry_snapshot_ref(struct snapshot *s)
{
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void registry_snapshot_unref(struct snapshot *s)
{
	if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	state_free(s->st);
	free(s);
}
