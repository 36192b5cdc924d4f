// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl top --by caller|method and stat --from/--to: who calls whom,
 * read from the daemon's admin API (/calls, the per-caller and per-method
 * series). top compares two samples --interval apart (rates, success, p50 and
 * p99 of that interval); stat prints the totals since the daemon started.
 * Success is grpc-status OK, or a stream that was not gRPC. tap polls /tap
 * with the cursor of its last answer and prints each ended request once.
 */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ctl/ctl.h"

#define MAX_BUCKETS 32
#define TAP_POLL_MS 200 /* well inside the daemon's TAP_LINGER_MS */

/* One series as the admin API gives it, reduced to what the commands print. */
struct calls_row {
	char key[512]; /* "service caller" or "service method" */
	char service[256];
	char who[256]; /* "namespace/workload" or the method */
	uint64_t requests, ok;
	uint64_t buckets[MAX_BUCKETS];
};

struct calls_sample {
	struct calls_row *rows;
	int n;
	double le[MAX_BUCKETS]; /* upper bounds, seconds; the last bucket is +Inf */
	int n_buckets;
};

static void sample_free(struct calls_sample *s)
{
	free(s->rows);
	memset(s, 0, sizeof(*s));
}

static uint64_t ju64(struct json_object *o, const char *key)
{
	int64_t v = ctl_jint(o, key);

	return v > 0 ? (uint64_t)v : 0;
}

static void parse_row(struct json_object *o, bool caller, int n_buckets, struct calls_row *r)
{
	struct json_object *codes = NULL, *b = NULL;

	memset(r, 0, sizeof(*r));
	snprintf(r->service, sizeof(r->service), "%s", ctl_jstr(o, "service"));
	if (caller)
		snprintf(r->who, sizeof(r->who), "%s/%s", ctl_jstr(o, "caller_namespace"),
			 ctl_jstr(o, "caller_workload"));
	else
		snprintf(r->who, sizeof(r->who), "%s", ctl_jstr(o, "method"));
	snprintf(r->key, sizeof(r->key), "%s %s", r->service, r->who);
	r->requests = ju64(o, "requests");
	if (json_object_object_get_ex(o, "grpc_status", &codes))
		r->ok = ju64(codes, "0") + ju64(codes, "none");
	if (json_object_object_get_ex(o, "buckets", &b) && json_object_is_type(b, json_type_array))
		for (int i = 0; i < n_buckets && i < (int)json_object_array_length(b); i++)
			r->buckets[i] = (uint64_t)json_object_get_int64(
			    json_object_array_get_idx(b, (size_t)i));
}

/* GET /calls and keep the |caller| (else method) series. 0 or an exit code. */
static int sample(const struct ctl *c, const char *what, bool caller, struct calls_sample *s)
{
	struct json_object *root, *le = NULL, *arr = NULL;
	int rc = ctl_admin_json(c, what, "/calls", &root);

	memset(s, 0, sizeof(*s));
	if (rc)
		return rc;
	if (json_object_object_get_ex(root, "le_seconds", &le) &&
	    json_object_is_type(le, json_type_array)) {
		s->n_buckets = (int)json_object_array_length(le) + 1;
		if (s->n_buckets > MAX_BUCKETS)
			s->n_buckets = MAX_BUCKETS;
		for (int i = 0; i + 1 < s->n_buckets; i++)
			s->le[i] = json_object_get_double(json_object_array_get_idx(le, (size_t)i));
	}
	json_object_object_get_ex(root, caller ? "callers" : "methods", &arr);
	s->n = arr && json_object_is_type(arr, json_type_array) ? (int)json_object_array_length(arr)
								: 0;
	s->rows = calloc(s->n ? (size_t)s->n : 1, sizeof(*s->rows));
	if (!s->rows) {
		json_object_put(root);
		fprintf(stderr, "h2splitctl %s: out of memory\n", what);
		return EXIT_ERR;
	}
	for (int i = 0; i < s->n; i++)
		parse_row(json_object_array_get_idx(arr, (size_t)i), caller, s->n_buckets,
			  &s->rows[i]);
	json_object_put(root);
	return 0;
}

/* Quantile |q| of |b| in seconds, interpolated inside its bucket (Prometheus'
 * histogram_quantile); -1 without samples. */
static double quantile(const struct calls_sample *s, const uint64_t *b, double q)
{
	uint64_t total = 0, cum = 0;

	for (int i = 0; i < s->n_buckets; i++)
		total += b[i];
	if (!total)
		return -1;
	for (int i = 0; i < s->n_buckets; i++) {
		double lo = i ? s->le[i - 1] : 0, want = q * (double)total;

		if ((double)(cum + b[i]) < want) {
			cum += b[i];
			continue;
		}
		if (i == s->n_buckets - 1) /* +Inf: the highest finite bound */
			return lo;
		return lo + (s->le[i] - lo) * (want - (double)cum) / (double)b[i];
	}
	return s->n_buckets > 1 ? s->le[s->n_buckets - 2] : -1;
}

static const struct calls_row *find_row(const struct calls_sample *s, const char *key)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->rows[i].key, key))
			return &s->rows[i];
	return NULL;
}

static void fmt_ms(double sec, char *buf, size_t len)
{
	if (sec < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.2fms", sec * 1000);
}

/* |d| = |cur| - |prev| (|prev| NULL: |cur|). */
static void delta(const struct calls_row *cur, const struct calls_row *prev, struct calls_row *d)
{
	*d = *cur;
	if (!prev)
		return;
	d->requests -= prev->requests;
	d->ok -= prev->ok;
	for (int i = 0; i < MAX_BUCKETS; i++)
		d->buckets[i] -= prev->buckets[i];
}

static void print_row(const struct calls_sample *s, const struct calls_row *d, double rps,
		      const char *who_key, struct json_object *out)
{
	double p50 = quantile(s, d->buckets, 0.5), p99 = quantile(s, d->buckets, 0.99);
	double success = d->requests ? 100.0 * (double)d->ok / (double)d->requests : -1;
	char a[32], b[32], sr[16];

	if (out) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "service", json_object_new_string(d->service));
		json_object_object_add(o, who_key, json_object_new_string(d->who));
		if (rps >= 0)
			json_object_object_add(o, "rps", json_object_new_double(rps));
		json_object_object_add(o, "requests", json_object_new_uint64(d->requests));
		json_object_object_add(o, "success", json_object_new_uint64(d->ok));
		if (p50 >= 0) {
			json_object_object_add(o, "p50_seconds", json_object_new_double(p50));
			json_object_object_add(o, "p99_seconds", json_object_new_double(p99));
		}
		json_object_array_add(out, o);
		return;
	}
	fmt_ms(p50, a, sizeof(a));
	fmt_ms(p99, b, sizeof(b));
	if (success < 0)
		snprintf(sr, sizeof(sr), "-");
	else
		snprintf(sr, sizeof(sr), "%.1f%%", success);
	if (rps >= 0)
		printf("%-36s %-40s %9.1f %8s %10s %10s %10llu\n", d->service, d->who, rps, sr, a,
		       b, (unsigned long long)d->requests);
	else
		printf("%-36s %-40s %10llu %8s %10s %10s\n", d->service, d->who,
		       (unsigned long long)d->requests, sr, a, b);
}

int ctl_calls_top(const struct ctl *c, bool caller)
{
	const char *col = caller ? "CALLER" : "METHOD", *key = caller ? "caller" : "method";
	struct calls_sample prev, cur;
	bool tty = isatty(STDOUT_FILENO);
	int rc = sample(c, "top", caller, &prev);

	if (rc)
		return rc;
	for (int it = 0; c->iterations <= 0 || it < c->iterations; it++) {
		double interval = c->interval_ms / 1000.0;
		struct json_object *out = NULL;

		poll(NULL, 0, c->interval_ms);
		rc = sample(c, "top", caller, &cur);
		if (rc) {
			sample_free(&prev);
			return rc;
		}
		if (c->json) {
			out = json_object_new_array();
		} else {
			if (tty)
				fputs("\033[H\033[2J", stdout);
			printf("h2splitctl top --by %s (admin %s, every %.1fs)\n%-36s %-40s %9s "
			       "%8s %10s %10s %10s\n",
			       key, c->admin, interval, "SERVICE", col, "RPS", "SUCCESS", "P50",
			       "P99", "REQUESTS");
		}
		for (int i = 0; i < cur.n; i++) {
			struct calls_row d;

			delta(&cur.rows[i], find_row(&prev, cur.rows[i].key), &d);
			print_row(&cur, &d, (double)d.requests / interval, key, out);
		}
		if (out) {
			puts(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
			json_object_put(out);
		}
		fflush(stdout);
		sample_free(&prev);
		prev = cur;
	}
	sample_free(&prev);
	return EXIT_OK;
}

/* Does "namespace/kind/name" match |want|: the whole of it, "kind/name", or name? */
static bool workload_is(const char *who, const char *want)
{
	const char *kind = strchr(who, '/'), *name = kind ? strchr(kind + 1, '/') : NULL;

	return !strcmp(who, want) || (kind && !strcmp(kind + 1, want)) ||
	       (name && !strcmp(name + 1, want));
}

/* Does "namespace/name:port" match |want|: the whole, "namespace/name" or name? */
static bool service_is(const char *svc, const char *want)
{
	size_t n = strlen(want);
	const char *slash = strchr(svc, '/');

	if (!strcmp(svc, want) || (!strncmp(svc, want, n) && svc[n] == ':'))
		return true;
	return slash && !strncmp(slash + 1, want, n) && slash[1 + n] == ':';
}

int ctl_cmd_stat(const struct ctl *c)
{
	struct calls_sample s;
	struct json_object *out = NULL;
	int rc;

	if (!c->from && !c->to) {
		fprintf(stderr, "h2splitctl stat: give --from WORKLOAD and/or --to SERVICE\n");
		return EXIT_USAGE;
	}
	rc = sample(c, "stat", true, &s);
	if (rc)
		return rc;
	if (c->json)
		out = json_object_new_array();
	else
		printf("%-36s %-40s %10s %8s %10s %10s\n", "SERVICE", "CALLER", "REQUESTS",
		       "SUCCESS", "P50", "P99");
	for (int i = 0; i < s.n; i++) {
		const struct calls_row *r = &s.rows[i];

		if ((c->from && !workload_is(r->who, c->from)) ||
		    (c->to && !service_is(r->service, c->to)))
			continue;
		print_row(&s, r, -1, "caller", out);
	}
	if (out) {
		puts(json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY));
		json_object_put(out);
	}
	sample_free(&s);
	return EXIT_OK;
}

/* ---- tap ---- */

/* Append |v| to |q| as a query argument, percent-encoded. */
static void query_arg(char *q, size_t len, const char *name, const char *v)
{
	size_t n = strlen(q);

	if (!v)
		return;
	n += (size_t)snprintf(q + n, n < len ? len - n : 0, "%s%s=", strchr(q, '?') ? "&" : "?",
			      name);
	for (; *v && n + 4 < len; v++) {
		unsigned char ch = (unsigned char)*v;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || strchr("-._~/:", ch))
			q[n++] = (char)ch;
		else
			n += (size_t)snprintf(q + n, len - n, "%%%02X", ch);
	}
	q[n < len ? n : len - 1] = 0;
}

static void print_event(struct json_object *ev, bool json)
{
	struct json_object *g = NULL;
	char when[32], status[16];
	time_t sec;
	struct tm tm;
	int64_t ms = ctl_jint(ev, "time_unix_ms");

	if (json) {
		puts(json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN |
							    JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	sec = (time_t)(ms / 1000);
	gmtime_r(&sec, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	if (json_object_object_get_ex(ev, "grpc_status", &g) && g)
		snprintf(status, sizeof(status), "%d", json_object_get_int(g));
	else
		snprintf(status, sizeof(status), "-");
	printf("%s.%03d %s -> %s %s endpoint=%s :status=%lld grpc-status=%s %.3fms in=%lld "
	       "out=%lld\n",
	       when, (int)(ms % 1000), ctl_jstr(ev, "caller"), ctl_jstr(ev, "service"),
	       ctl_jstr(ev, "method"), ctl_jstr(ev, "endpoint")[0] ? ctl_jstr(ev, "endpoint") : "-",
	       (long long)ctl_jint(ev, "http_status"), status,
	       (double)ctl_jint(ev, "duration_us") / 1000.0, (long long)ctl_jint(ev, "bytes_in"),
	       (long long)ctl_jint(ev, "bytes_out"));
}

int ctl_cmd_tap(const struct ctl *c)
{
	char base[1024] = "/tap", path[1400];
	char cursor[512] = "";
	long printed = 0;

	query_arg(base, sizeof(base), "service", c->service);
	query_arg(base, sizeof(base), "caller", c->caller);
	query_arg(base, sizeof(base), "method", c->method);
	for (;;) {
		struct json_object *root, *events = NULL;
		int rc;

		snprintf(path, sizeof(path), "%s", base);
		if (cursor[0])
			query_arg(path, sizeof(path), "cursor", cursor);
		rc = ctl_admin_json(c, "tap", path, &root);
		if (rc)
			return rc;
		if (!cursor[0])
			fprintf(stderr, "h2splitctl tap: attached to %s; requests as they end\n",
				c->admin);
		snprintf(cursor, sizeof(cursor), "%s", ctl_jstr(root, "cursor"));
		if (ctl_jint(root, "lost") > 0)
			fprintf(stderr,
				"h2splitctl tap: %lld requests not shown (the feed outran us)\n",
				(long long)ctl_jint(root, "lost"));
		json_object_object_get_ex(root, "events", &events);
		for (size_t i = 0;
		     events && json_object_is_type(events, json_type_array) &&
		     i < json_object_array_length(events) && (c->max <= 0 || printed < c->max);
		     i++, printed++)
			print_event(json_object_array_get_idx(events, i), c->json);
		fflush(stdout);
		json_object_put(root);
		if (c->max > 0 && printed >= c->max)
			return EXIT_OK;
		poll(NULL, 0, TAP_POLL_MS);
	}
}
