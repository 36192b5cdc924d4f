// SPDX-License-Identifier: Apache-2.0
/*
 * Skipped client stream ids (see h2_stream_ids.h): the highest id used and
 * the last H2_IDS_GAPS ranges of ids passed over. Invariant: every id in a
 * kept range is odd, below |max|, and never carried a HEADERS frame.
 */
#include <errno.h>
#include <string.h>

#include "proxy/h2/h2_stream_ids.h"

static void add_gap(struct h2_stream_ids *t, uint32_t lo, uint32_t hi)
{
	if (t->n_gaps == H2_IDS_GAPS) {
		memmove(t->gap[0], t->gap[1], sizeof(t->gap[0]) * (H2_IDS_GAPS - 1));
		t->n_gaps--;
	}
	t->gap[t->n_gaps][0] = lo;
	t->gap[t->n_gaps][1] = hi;
	t->n_gaps++;
}

int h2_stream_ids_headers(struct h2_stream_ids *t, uint32_t id)
{
	if (!(id & 1))
		return 0;
	if (id > t->max) {
		uint32_t next = t->max ? t->max + 2 : 1;

		if (id > next)
			add_gap(t, next, id - 2);
		t->max = id;
		return 0;
	}
	for (uint32_t i = 0; i < t->n_gaps; i++)
		if (id >= t->gap[i][0] && id <= t->gap[i][1])
			return -EPROTO;
	return 0; /* used before: trailers, or late on a stream we reset */
}
