// SPDX-License-Identifier: Apache-2.0
/*
 * The admin API's views of the caller and method series: /calls (merged
 * tables, for h2splitctl top and stat) and /tap (the live feed of ended
 * streams, for h2splitctl tap). Same thread and invariant as admin.c: it
 * reads the daemon through daemon_view.h, writes nothing, blocks no worker.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/loop.h"
#include "base/registry.h"
#include "base/state.h"
#include "daemon/admin_int.h"
#include "daemon/daemon_view.h"
#include "telemetry/call_table.h"
#include "telemetry/metrics.h"
#include "telemetry/tap.h"

/* ---- /calls: the caller and method series, for h2splitctl top and stat ---- */

static struct json_object *call_row_json(const struct call_row *r, const struct state *st,
					 bool caller)
{
	const struct state_service *svc = st ? state_find_id(st, r->svc) : NULL;
	struct json_object *o = json_object_new_object(), *codes = json_object_new_object();
	struct json_object *buckets = json_object_new_array();
	char name[STATE_NAME_MAX * 3 + 16], ns[STATE_NAME_MAX];
	const char *slash = caller && !r->other ? strchr(r->label, '/') : NULL;

	if (svc)
		snprintf(name, sizeof(name), "%s/%s:%u", svc->ns, svc->name, svc->port);
	else
		snprintf(name, sizeof(name), "id:%" PRIu32, r->svc);
	admin_add_str(o, "service", name);
	if (caller) {
		snprintf(ns, sizeof(ns), "%.*s", slash ? (int)(slash - r->label) : 5,
			 slash ? r->label : "other");
		admin_add_str(o, "caller_namespace", ns);
		admin_add_str(o, "caller_workload", slash ? slash + 1 : "other");
	} else {
		admin_add_str(o, "method", r->other ? "other" : r->label);
	}
	admin_add_u64(o, "requests", call_row_count(r));
	for (int g = 0; g < METRICS_GRPC_CODES + 2; g++) {
		char code[16];

		if (!r->c[CT_GRPC + g])
			continue;
		if (g < METRICS_GRPC_CODES)
			snprintf(code, sizeof(code), "%d", g);
		else
			snprintf(code, sizeof(code), g == METRICS_GRPC_CODES ? "other" : "none");
		admin_add_u64(codes, code, r->c[CT_GRPC + g]);
	}
	json_object_object_add(o, "grpc_status", codes);
	for (int b = 0; b <= METRICS_N_BUCKETS; b++)
		json_object_array_add(buckets, json_object_new_uint64(r->c[CT_BUCKETS + b]));
	json_object_object_add(o, "buckets", buckets);
	admin_add_u64(o, "duration_sum_us", r->c[CT_SUM_US]);
	return o;
}

static struct json_object *call_rows_json(const struct call_rows *rows, const struct state *st,
					  bool caller)
{
	struct json_object *arr = json_object_new_array();

	for (int i = 0; rows && i < rows->n; i++)
		json_object_array_add(arr, call_row_json(&rows->rows[i], st, caller));
	return arr;
}

/* Per-bucket counts (not cumulative) with the bucket bounds in "le_seconds",
 * +Inf last; "callers" / "methods" are empty when their family is off. */
int admin_calls(struct daemon *d, struct reply *r)
{
	struct snapshot *snap = daemon_snapshot(d);
	struct metrics_merged *mm = daemon_metrics(d);
	const struct state *st = snap ? snap->st : NULL;
	struct json_object *root = mm ? json_object_new_object() : NULL, *le;

	if (root) {
		le = json_object_new_array();
		for (int b = 0; b < METRICS_N_BUCKETS; b++)
			json_object_array_add(
			    le, json_object_new_double((double)metrics_buckets_ns(b) / 1e9));
		json_object_object_add(root, "le_seconds", le);
		json_object_object_add(root, "callers",
				       call_rows_json(metrics_merged_calls(mm, true), st, true));
		json_object_object_add(root, "methods",
				       call_rows_json(metrics_merged_calls(mm, false), st, false));
	}
	metrics_merged_free(mm);
	registry_snapshot_unref(snap);
	return admin_reply_json(r, root);
}

/* ---- /tap: the live request feed (h2splitctl tap) ---- */

#define TAP_MAX_EVENTS 4096 /* per answer; the rest waits for the next poll */

struct tap_reply {
	const struct state *st;
	const char *service, *caller, *method; /* filters, NULL: any */
	struct json_object *events;
	int n;
};

/* |label| "a/b/c" is |want| whole, or its last one or two parts. */
static bool label_is(const char *label, const char *want)
{
	const char *p = strchr(label, '/'), *q = p ? strchr(p + 1, '/') : NULL;

	return !strcmp(label, want) || (p && !strcmp(p + 1, want)) || (q && !strcmp(q + 1, want));
}

/* "ns/name:port" is |want| whole, or without ":port", or name alone. */
static bool service_matches(const char *svc, const char *want)
{
	size_t n = strlen(want);
	const char *slash = strchr(svc, '/');

	if (!strcmp(svc, want) || (!strncmp(svc, want, n) && svc[n] == ':'))
		return true;
	return slash && !strncmp(slash + 1, want, n) && slash[1 + n] == ':';
}

/* "pkg.Service/Method" is |want| whole, or its Service or Method part. */
static bool method_matches(const char *m, const char *want)
{
	const char *slash = strchr(m, '/');
	size_t n = strlen(want);

	if (!strcmp(m, want) || (slash && !strcmp(slash + 1, want)))
		return true;
	return slash && (size_t)(slash - m) == n && !strncmp(m, want, n);
}

static int tap_event_cb(void *arg, const struct tap_event *ev)
{
	struct tap_reply *tr = arg;
	const struct state_service *svc = tr->st ? state_find_id(tr->st, ev->service_id) : NULL;
	char service[STATE_NAME_MAX * 3 + 16], ep[INET6_ADDRSTRLEN + 10], ip[INET6_ADDRSTRLEN];
	struct json_object *o;

	if (svc)
		snprintf(service, sizeof(service), "%s/%s:%u", svc->ns, svc->name, svc->port);
	else
		snprintf(service, sizeof(service), "id:%" PRIu32, ev->service_id);
	if ((tr->service && !service_matches(service, tr->service)) ||
	    (tr->caller && !label_is(ev->caller, tr->caller)) ||
	    (tr->method && !method_matches(ev->method, tr->method)))
		return 0;
	ep[0] = 0;
	if (ev->ep_port) {
		h2s_ip_str(&ev->ep_ip, ip, sizeof(ip));
		snprintf(ep, sizeof(ep), h2s_ip_is_v4(&ev->ep_ip) ? "%s:%u" : "[%s]:%u", ip,
			 ev->ep_port);
	}
	o = json_object_new_object();
	admin_add_u64(o, "time_unix_ms", ev->unix_ms);
	admin_add_str(o, "service", service);
	admin_add_str(o, "caller", ev->caller);
	admin_add_str(o, "method", ev->method);
	admin_add_str(o, "endpoint", ep);
	json_object_object_add(o, "http_status", json_object_new_int(ev->http_status));
	json_object_object_add(o, "grpc_status",
			       ev->grpc_status >= 0 ? json_object_new_int(ev->grpc_status) : NULL);
	admin_add_u64(o, "duration_us", ev->duration_us);
	admin_add_u64(o, "bytes_in", ev->bytes_in);
	admin_add_u64(o, "bytes_out", ev->bytes_out);
	json_object_array_add(tr->events, o);
	return ++tr->n >= TAP_MAX_EVENTS;
}

/* |s|: "c0.c1..." as /tap answered it; false when it is not one for |n| rings. */
static bool parse_cursor(const char *s, uint64_t *c, int n)
{
	for (int i = 0; i < n; i++) {
		char *end;

		if (!s || *s < '0' || *s > '9')
			return false;
		c[i] = strtoull(s, &end, 10);
		s = *end == '.' ? end + 1 : (*end ? NULL : end);
		if (i + 1 < n && (!s || !*s))
			return false;
	}
	return s && !*s;
}

/* Every poll keeps the tap recording (TAP_LINGER_MS); the first one, without
 * ?cursor=, only starts it: events are those that end after it. Filters:
 * service, caller, method (as h2splitctl tap takes them). */
int admin_tap(struct daemon *d, struct reply *r)
{
	struct tap *t = daemon_tap(d);
	int n = tap_rings(t);
	uint64_t *cur = calloc((size_t)n + 1, sizeof(*cur)), lost = 0;
	struct snapshot *snap = daemon_snapshot(d);
	struct tap_reply tr = {
	    .st = snap ? snap->st : NULL,
	    .service = MHD_lookup_connection_value(r->req, MHD_GET_ARGUMENT_KIND, "service"),
	    .caller = MHD_lookup_connection_value(r->req, MHD_GET_ARGUMENT_KIND, "caller"),
	    .method = MHD_lookup_connection_value(r->req, MHD_GET_ARGUMENT_KIND, "method"),
	    .events = json_object_new_array(),
	};
	struct json_object *root = json_object_new_object();
	char *cs = NULL;
	size_t cl = 0;
	FILE *f;

	if (!cur || !root || !tr.events) {
		free(cur);
		json_object_put(root);
		json_object_put(tr.events);
		registry_snapshot_unref(snap);
		return -ENOMEM;
	}
	tap_arm(t, loop_now_ms());
	if (parse_cursor(MHD_lookup_connection_value(r->req, MHD_GET_ARGUMENT_KIND, "cursor"), cur,
			 n))
		tap_read(t, cur, tap_event_cb, &tr, &lost);
	else
		tap_cursors_now(t, cur);
	f = open_memstream(&cs, &cl);
	for (int i = 0; f && i < n; i++)
		fprintf(f, i ? ".%" PRIu64 : "%" PRIu64, cur[i]);
	if (f)
		fclose(f);
	admin_add_str(root, "cursor", cs ? cs : "");
	admin_add_u64(root, "lost", lost);
	json_object_object_add(root, "events", tr.events);
	free(cs);
	free(cur);
	registry_snapshot_unref(snap);
	return admin_reply_json(r, root);
}
