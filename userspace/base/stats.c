// SPDX-License-Identifier: Apache-2.0
/*
 * Names of the per-worker counters, as the admin endpoint exports them
 * (prefixed h2split_), and of the limits (the label of
 * h2split_limit_exceeded_total). Generated from the lists in stats.h, so each
 * table is indexed by, and as long as, its enum.
 */
#include "base/stats.h"

#define STAT_NAME(id, name) [ST_##id] = name,
const char *const stats_names[ST_MAX] = {STATS_COUNTERS(STAT_NAME)};
#undef STAT_NAME

#define LIMIT_NAME(id, name) [LIMIT_##id] = name,
const char *const limit_names[LIMIT_MAX] = {STATS_LIMITS(LIMIT_NAME)};
#undef LIMIT_NAME
