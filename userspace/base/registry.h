/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Immutable, refcounted snapshots of the desired state. The main thread
 * builds one per discovery update and posts it to every worker; a worker
 * swaps its own pointer and drops the old reference. Nothing on the data path
 * takes a lock: a snapshot never changes after registry_snapshot_new().
 */
#ifndef H2SPLIT_REGISTRY_H
#define H2SPLIT_REGISTRY_H

#include <stdatomic.h>
#include <stdint.h>

#include "base/state.h"

struct snapshot {
	atomic_int refs;
	uint64_t generation; /* increases with every update */
	struct state *st;    /* owned */
};

/* Takes ownership of |st|. Returns a snapshot holding one reference, or NULL. */
struct snapshot *registry_snapshot_new(struct state *st, uint64_t generation);
struct snapshot *registry_snapshot_ref(struct snapshot *s);
/* Drops one reference; frees the snapshot and its state with the last one. NULL is a no-op. */
void registry_snapshot_unref(struct snapshot *s);

#endif
