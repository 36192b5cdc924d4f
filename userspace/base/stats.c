// SPDX-License-Identifier: Apache-2.0
/*
 * Names of the per-worker counters, as the admin endpoint exports them
 * (prefixed h2split_), and of the limits (the label of
 * h2split_limit_exceeded_total). Indexed by their enums; the static asserts
 * keep each table and its enum the same length.
 */
#include "base/stats.h"

const char *const stats_names[ST_MAX] = {
	[ST_DOWNSTREAM_CONNS_TOTAL] = "downstream_connections_total",
	[ST_DOWNSTREAM_CONNS_ACTIVE] = "downstream_connections_active",
	[ST_DOWNSTREAM_H2_CONNS_TOTAL] = "downstream_h2_connections_total",
	[ST_L4_CONNS_TOTAL] = "l4_connections_total",
	[ST_L4_CONNS_ACTIVE] = "l4_connections_active",
	[ST_L4_CONNECT_FAILURES] = "l4_connect_failures_total",
	[ST_L4_BYTES_UP] = "l4_bytes_upstream_total",
	[ST_L4_BYTES_DOWN] = "l4_bytes_downstream_total",
	[ST_ORIGINAL_DST_MISSING] = "original_dst_missing_total",
	[ST_ORIGINAL_DST_RECOVERED] = "original_dst_recovered_total",
	[ST_NETNS_FAILURES] = "netns_failures_total",
	[ST_ACCEPT_ERRORS] = "accept_errors_total",
	[ST_STREAMS_TOTAL] = "downstream_streams_total",
	[ST_STREAMS_ACTIVE] = "downstream_streams_active",
	[ST_UPSTREAM_CONNS_TOTAL] = "upstream_connections_total",
	[ST_UPSTREAM_CONNS_ACTIVE] = "upstream_connections_active",
	[ST_UPSTREAM_CONNECT_FAILURES] = "upstream_connect_failures_total",
	[ST_UPSTREAM_RETRIES] = "upstream_retries_total",
	[ST_RESETS_SENT] = "resets_sent_total",
	[ST_RESETS_RECEIVED] = "resets_received_total",
	[ST_GOAWAY_SENT] = "goaway_sent_total",
	[ST_GOAWAY_RECEIVED] = "goaway_received_total",
	[ST_BYTES_IN] = "bytes_received_total",
	[ST_BYTES_OUT] = "bytes_sent_total",
	[ST_NO_ENDPOINT] = "no_endpoint_total",
	[ST_DEADLINE_EXCEEDED] = "deadline_exceeded_total",
	[ST_EJECTIONS] = "outlier_ejections_total",
	[ST_FD_PAUSES] = "fd_exhaustion_pauses_total",
	[ST_FD_REFUSED] = "fd_exhaustion_refused_total",
	[ST_UPSTREAM_PING_TIMEOUTS] = "upstream_keepalive_timeouts_total",
	[ST_DOWNSTREAM_RETIRED] = "downstream_retired_total",
	[ST_STREAMS_REFUSED_UNKNOWN] = "streams_refused_unknown_service_total",
	[ST_UNEXPECTED] = "splitter_unexpected_total",
};

_Static_assert(sizeof(stats_names) / sizeof(stats_names[0]) == ST_MAX, "stats_names");

const char *const limit_names[LIMIT_MAX] = {
	[LIMIT_HEADER_LIST_SIZE] = "header_list_size",
	[LIMIT_HEADERS] = "headers",
	[LIMIT_CONTINUATIONS] = "continuations",
	[LIMIT_CONCURRENT_STREAMS] = "concurrent_streams",
	[LIMIT_CONTROL_FRAME_RATE] = "control_frame_rate",
	[LIMIT_RESET_RATE] = "reset_rate",
	[LIMIT_OUTBOUND_CONTROL_FRAMES] = "outbound_control_frames",
	[LIMIT_PENDING_BYTES] = "pending_bytes",
	[LIMIT_CONNECTIONS_PER_POD] = "connections_per_pod",
	[LIMIT_IDLE_TIMEOUT] = "idle_timeout",
	[LIMIT_HEADER_TIMEOUT] = "header_timeout",
	[LIMIT_INFLIGHT_PER_ENDPOINT] = "inflight_per_endpoint",
	[LIMIT_INFLIGHT_PER_SERVICE] = "inflight_per_service",
	[LIMIT_PENDING] = "pending",
	[LIMIT_PENDING_TIMEOUT] = "pending_timeout",
	[LIMIT_UPSTREAM_KEEPALIVE_TIMEOUT] = "upstream_keepalive_timeout",
};

_Static_assert(sizeof(limit_names) / sizeof(limit_names[0]) == LIMIT_MAX, "limit_names");
