// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl adopt [--service NS/NAME]: ask the running h2splitd for an
 * adoption pass (close connections opened before it to opted-in Services
 * while idle, so apps reconnect through it), wait for that pass to end and
 * print what became of each connection it found. The pass runs in the
 * daemon (admin API /adopt); this only queues and watches it.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <json-c/json.h>

#include "ctl/ctl.h"

#define POLL_MS 100
#define EXTRA_WAIT_MS 60000 /* beyond --adopt-max-wait: pacing, a pass queued first */

static bool name_ok(const char *s)
{
	int slashes = 0;

	if (!s[0] || s[0] == '/' || strlen(s) > 200)
		return false;
	for (; *s; s++) {
		if (*s == '/')
			slashes++;
		else if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-' &&
			 *s != '.')
			return false;
	}
	return slashes == 1 && s[-1] != '/';
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t result(struct json_object *pass, const char *name)
{
	struct json_object *r;

	return json_object_object_get_ex(pass, "results", &r) ? ctl_jint(r, name) : 0;
}

void ctl_adopt_print_pass(struct json_object *p)
{
	printf("pass %lld (%s): %lld connection(s) to %lld Service port(s) in %lld pod(s), "
	       "%lld ms: %lld closed idle, %lld closed busy, %lld never idle (left alone), "
	       "%lld gone, %lld failed, %lld unsupported\n",
	       (long long)ctl_jint(p, "id"), ctl_jstr(p, "trigger"),
	       (long long)ctl_jint(p, "connections"), (long long)ctl_jint(p, "service_ports"),
	       (long long)ctl_jint(p, "pods"), (long long)ctl_jint(p, "ms"),
	       (long long)result(p, "idle"), (long long)result(p, "forced"),
	       (long long)result(p, "not_idle"), (long long)result(p, "gone"),
	       (long long)result(p, "failed"), (long long)result(p, "unsupported"));
}

/* Poll /adopt until pass |id| is done; its status object, or NULL (message). */
static struct json_object *wait_pass(const struct ctl *c, int64_t id, int64_t max_wait_ms)
{
	uint64_t deadline = mono_ms() + (uint64_t)max_wait_ms * 2 + EXTRA_WAIT_MS;

	for (;;) {
		struct json_object *st = NULL, *last;
		struct timespec ts = {.tv_nsec = POLL_MS * 1000000L};

		if (ctl_admin_json(c, "adopt", "/adopt", &st))
			return NULL;
		if (ctl_jint(st, "passes_done") >= id) {
			if (json_object_object_get_ex(st, "last", &last) &&
			    ctl_jint(last, "id") == id)
				return st;
			fprintf(stderr,
				"adopt: pass %lld done; a later one ran since: see "
				"h2splitctl status\n",
				(long long)id);
			return st;
		}
		json_object_put(st);
		if (mono_ms() > deadline) {
			fprintf(stderr,
				"adopt: pass %lld not done in time: see h2splitctl status\n",
				(long long)id);
			return NULL;
		}
		nanosleep(&ts, NULL);
	}
}

int ctl_cmd_adopt(const struct ctl *c)
{
	struct json_object *q, *st, *last;
	char path[256], *body = NULL;
	int status = 0;
	int64_t id, max_wait;

	if (c->service && !name_ok(c->service)) {
		fprintf(stderr, "adopt: --service %s: expected NAMESPACE/NAME\n", c->service);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/adopt?run=1%s%s", c->service ? "&service=" : "",
		 c->service ? c->service : "");
	if (!ctl_admin_fetch(c, path, &body, &status)) {
		fprintf(stderr, "adopt needs a running h2splitd (admin API at %s)\n", c->admin);
		return EXIT_NO_DAEMON;
	}
	if (status != 200) {
		fprintf(stderr, "adopt: h2splitd answered %d: %s%s", status,
			c->service ? c->service : "", body ? body : "\n");
		free(body);
		return EXIT_ERR;
	}
	q = json_tokener_parse(body);
	free(body);
	id = ctl_jint(q, "pass");
	max_wait = ctl_jint(q, "max_wait_ms");
	json_object_put(q);
	if (id <= 0) {
		fprintf(stderr, "adopt: h2splitd did not queue a pass\n");
		return EXIT_ERR;
	}
	st = wait_pass(c, id, max_wait);
	if (!st)
		return EXIT_ERR;
	if (c->json) {
		ctl_print_json(st);
		return EXIT_OK;
	}
	if (json_object_object_get_ex(st, "last", &last))
		ctl_adopt_print_pass(last);
	json_object_put(st);
	return EXIT_OK;
}
