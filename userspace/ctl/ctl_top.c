// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl endpoints and top: the commands that read only the daemon's
 * admin API (/endpoints). top samples it every --interval and prints
 * requests/s, in flight and failures per endpoint.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

static void ep_addr(struct json_object *ep, char *buf, size_t len)
{
	const char *ip = ctl_jstr(ep, "ip");

	snprintf(buf, len, strchr(ip, ':') ? "[%s]:%lld" : "%s:%lld", ip,
		 (long long)ctl_jint(ep, "port"));
}

static void print_endpoint_row(struct json_object *svc, struct json_object *ep, void *arg)
{
	char addr[64];

	(void)arg;
	ep_addr(ep, addr, sizeof(addr));
	printf("%-32s %-24s %-20s %-11s %8lld %12lld %9lld %-16s %-12s %s\n",
	       ctl_jstr(svc, "service"), addr, ctl_jstr(ep, "pod")[0] ? ctl_jstr(ep, "pod") : "-",
	       ctl_ep_state(ep), (long long)ctl_jint(ep, "active"),
	       (long long)ctl_jint(ep, "requests"), (long long)ctl_jint(ep, "failures"),
	       ctl_jstr(ep, "node")[0] ? ctl_jstr(ep, "node") : "-",
	       ctl_jstr(ep, "zone")[0] ? ctl_jstr(ep, "zone") : "-", ctl_jstr(ep, "locality"));
}

int ctl_cmd_endpoints(const struct ctl *c)
{
	struct json_object *root;
	int rc = ctl_admin_json(c, "endpoints", "/endpoints", &root);

	if (rc)
		return rc;
	if (c->json) {
		puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
	} else {
		printf("%-32s %-24s %-20s %-11s %8s %12s %9s %-16s %-12s %s\n", "SERVICE",
		       "ENDPOINT", "POD", "STATE", "ACTIVE", "REQUESTS", "FAILURES", "NODE", "ZONE",
		       "LOCALITY");
		ctl_for_each_endpoint(root, print_endpoint_row, NULL);
	}
	json_object_put(root);
	return EXIT_OK;
}

/* top: two /endpoints samples |interval| apart give requests per second. */
struct top_row {
	char key[160];
	int64_t requests;
};

struct top_sample {
	struct top_row *rows;
	size_t n;
	size_t cap;
};

static void ep_key(struct json_object *svc, struct json_object *ep, char *buf, size_t len)
{
	char addr[64];

	ep_addr(ep, addr, sizeof(addr));
	snprintf(buf, len, "%s %s", ctl_jstr(svc, "service"), addr);
}

static void collect_row(struct json_object *svc, struct json_object *ep, void *arg)
{
	struct top_sample *s = arg;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct top_row *r = realloc(s->rows, cap * sizeof(*r));

		if (!r)
			return;
		s->rows = r;
		s->cap = cap;
	}
	ep_key(svc, ep, s->rows[s->n].key, sizeof(s->rows[s->n].key));
	s->rows[s->n++].requests = ctl_jint(ep, "requests");
}

static int64_t prev_requests(const struct top_sample *s, const char *key, int64_t now)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->rows[i].key, key) == 0)
			return s->rows[i].requests;
	return now; /* new endpoint: no rate yet */
}

struct top_print {
	const struct top_sample *prev;
	double interval;
	struct json_object *out; /* -o json */
};

static void print_top_row(struct json_object *svc, struct json_object *ep, void *arg)
{
	struct top_print *tp = arg;
	char key[160], addr[64];
	int64_t req = ctl_jint(ep, "requests");
	double rps =
	    (double)(req - prev_requests(tp->prev, (ep_key(svc, ep, key, sizeof(key)), key), req)) /
	    tp->interval;

	ep_addr(ep, addr, sizeof(addr));
	if (tp->out) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "service",
				       json_object_new_string(ctl_jstr(svc, "service")));
		json_object_object_add(o, "endpoint", json_object_new_string(addr));
		json_object_object_add(o, "pod", json_object_new_string(ctl_jstr(ep, "pod")));
		json_object_object_add(o, "state", json_object_new_string(ctl_ep_state(ep)));
		json_object_object_add(o, "rps", json_object_new_double(rps));
		json_object_object_add(o, "active", json_object_new_int64(ctl_jint(ep, "active")));
		json_object_object_add(o, "requests", json_object_new_int64(req));
		json_object_object_add(o, "failures",
				       json_object_new_int64(ctl_jint(ep, "failures")));
		json_object_array_add(tp->out, o);
		return;
	}
	printf("%-32s %-24s %-20s %-11s %9.1f %8lld %12lld %9lld\n", ctl_jstr(svc, "service"), addr,
	       ctl_jstr(ep, "pod")[0] ? ctl_jstr(ep, "pod") : "-", ctl_ep_state(ep), rps,
	       (long long)ctl_jint(ep, "active"), (long long)req,
	       (long long)ctl_jint(ep, "failures"));
}

/* Refreshes every |c->interval_ms| until interrupted, or |c->iterations| times.
 * With -o json: one array per refresh, one line each. */
int ctl_cmd_top(const struct ctl *c)
{
	struct top_sample prev = {0};
	struct json_object *root;
	bool tty = isatty(STDOUT_FILENO);
	int rc;

	if (c->by)
		return ctl_calls_top(c, !strcmp(c->by, "caller"));
	rc = ctl_admin_json(c, "top", "/endpoints", &root);
	if (rc)
		return rc;
	ctl_for_each_endpoint(root, collect_row, &prev);
	json_object_put(root);
	for (int it = 0; c->iterations <= 0 || it < c->iterations; it++) {
		struct top_sample cur = {0};
		struct top_print tp = {.prev = &prev, .interval = c->interval_ms / 1000.0};

		poll(NULL, 0, c->interval_ms);
		rc = ctl_admin_json(c, "top", "/endpoints", &root);
		if (rc) {
			free(prev.rows);
			return rc;
		}
		if (c->json) {
			tp.out = json_object_new_array();
		} else {
			if (tty)
				fputs("\033[H\033[2J", stdout);
			printf(
			    "h2splitctl top (admin %s, every %.1fs)\n%-32s %-24s %-20s %-11s %9s "
			    "%8s %12s %9s\n",
			    c->admin, tp.interval, "SERVICE", "ENDPOINT", "POD", "STATE", "RPS",
			    "ACTIVE", "REQUESTS", "FAILURES");
		}
		ctl_for_each_endpoint(root, print_top_row, &tp);
		if (tp.out) {
			puts(json_object_to_json_string_ext(tp.out, JSON_C_TO_STRING_PLAIN));
			json_object_put(tp.out);
		}
		fflush(stdout);
		ctl_for_each_endpoint(root, collect_row, &cur);
		json_object_put(root);
		free(prev.rows);
		prev = cur;
	}
	free(prev.rows);
	return EXIT_OK;
}
