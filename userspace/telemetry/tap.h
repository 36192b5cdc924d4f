/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The live request feed behind /tap and h2splitctl tap: one ring of the last
 * TAP_RING ended streams per worker, written only while someone taps (an
 * admin request armed it less than TAP_LINGER_MS ago), so nobody tapping
 * costs a worker one relaxed load per stream. Workers never wait: a reader
 * that falls a ring behind loses the oldest events and is told how many.
 * Any number of readers, each with its own cursors.
 */
#ifndef H2SPLIT_TAP_H
#define H2SPLIT_TAP_H

#include <stdbool.h>
#include <stdint.h>

#include "base/state.h"
#include "telemetry/call_table.h"

#define TAP_RING 1024	   /* events per worker */
#define TAP_LINGER_MS 3000 /* recording stops this long after the last read */

/* One ended downstream stream. */
struct tap_event {
	uint64_t unix_ms; /* when it ended (CLOCK_REALTIME) */
	uint32_t service_id;
	uint16_t ep_port; /* 0: no endpoint served it */
	struct h2s_ip ep_ip;
	int32_t http_status; /* 0: none received */
	int32_t grpc_status; /* -1: not gRPC */
	uint64_t duration_us, bytes_in, bytes_out;
	char caller[CALL_LABEL_MAX]; /* "namespace/kind/name", "unknown/unknown" */
	char method[CALL_LABEL_MAX]; /* :path without its leading '/', cut to fit */
};

struct tap;

/* |n_rings|: one per worker. NULL on ENOMEM. */
struct tap *tap_new(int n_rings);
void tap_free(struct tap *t);
int tap_rings(const struct tap *t);

/* ---- worker |ring|'s thread ---- */

/* Should a stream ending at CLOCK_MONOTONIC |now_ms| be recorded? */
bool tap_wanted(const struct tap *t, uint64_t now_ms);
void tap_push(struct tap *t, int ring, const struct tap_event *ev);

/* ---- readers (any thread) ---- */

/* Keep recording until |now_ms| + TAP_LINGER_MS. */
void tap_arm(struct tap *t, uint64_t now_ms);
/* The cursors (one per ring) a new reader starts from: now, nothing old. */
void tap_cursors_now(const struct tap *t, uint64_t *cursors);
/* Call |cb| for the events of every ring from |cursors| on (advanced past
 * them), oldest first per ring; events overwritten before they were read are
 * added to |*lost|. Stops early when |cb| returns non-zero. */
void tap_read(const struct tap *t, uint64_t *cursors,
	      int (*cb)(void *arg, const struct tap_event *ev), void *arg, uint64_t *lost);

#endif
