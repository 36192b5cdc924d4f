// SPDX-License-Identifier: Apache-2.0
/*
 * GET /adopt: the adoption status (mode, the pass running, the last one,
 * totals per result), for h2splitctl status and adopt. With ?run=1 (and
 * &service=NS/NAME) it also queues a pass and answers its id: h2splitctl
 * adopt then polls /adopt until that pass is done. The pass runs on the
 * adopter's own thread; this handler only queues it.
 */
#include <errno.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "daemon/admin_int.h"
#include "daemon/adopt.h"
#include "daemon/daemon_view.h"

static struct json_object *pass_json(const struct adopt_pass_info *p)
{
	struct json_object *o = json_object_new_object(), *r = json_object_new_object();

	admin_add_u64(o, "id", p->id);
	admin_add_str(o, "trigger", p->trigger);
	admin_add_u64(o, "service_ports", (uint64_t)p->targets);
	admin_add_u64(o, "pods", (uint64_t)p->pods);
	admin_add_u64(o, "connections", (uint64_t)p->found);
	for (int i = 0; i < ADOPT_R_COUNT; i++)
		admin_add_u64(r, adopter_result_name(i), p->results[i]);
	json_object_object_add(o, "results", r);
	admin_add_u64(o, "ms", p->ms);
	return o;
}

static int reply_status(struct daemon *d, struct reply *r, uint64_t queued_pass)
{
	struct json_object *o = json_object_new_object(), *t = json_object_new_object();
	struct adopt_status st;

	adopter_status(daemon_adopter(d), &st);
	admin_add_str(o, "mode", adopter_mode_name(st.mode));
	admin_add_u64(o, "max_wait_ms", (uint64_t)st.max_wait_ms);
	json_object_object_add(o, "supported", json_object_new_boolean(!st.unsupported));
	json_object_object_add(o, "running", json_object_new_boolean(st.running));
	admin_add_u64(o, "passes_done", st.passes_done);
	admin_add_u64(o, "queued", st.queued);
	if (queued_pass)
		admin_add_u64(o, "pass", queued_pass);
	if (st.running)
		json_object_object_add(o, "current", pass_json(&st.cur));
	if (st.last.id)
		json_object_object_add(o, "last", pass_json(&st.last));
	for (int i = 0; i < ADOPT_R_COUNT; i++)
		admin_add_u64(t, adopter_result_name(i), st.total[i]);
	json_object_object_add(o, "total", t);
	return admin_reply_json(r, o);
}

static int reply_err(struct reply *r, unsigned int status, const char *msg)
{
	char *body = strdup(msg);

	if (!body)
		return -ENOMEM;
	r->body = body;
	r->len = strlen(body);
	r->status = status;
	r->ctype = "text/plain; charset=utf-8";
	return 0;
}

int admin_adopt(struct daemon *d, struct reply *r)
{
	const char *run = MHD_lookup_connection_value(r->req, MHD_GET_ARGUMENT_KIND, "run");
	const char *svc = MHD_lookup_connection_value(r->req, MHD_GET_ARGUMENT_KIND, "service");
	uint64_t pass = 0;
	int err;

	if (!run || strcmp(run, "1"))
		return reply_status(d, r, 0);
	err = adopter_request(daemon_adopter(d), svc && svc[0] ? svc : NULL, &pass);
	if (err == -EINVAL)
		return reply_err(r, MHD_HTTP_BAD_REQUEST, "service: expected NAMESPACE/NAME\n");
	if (err == -ENOENT)
		return reply_err(r, MHD_HTTP_NOT_FOUND, "no opted-in Service of that name\n");
	return err ? err : reply_status(d, r, pass);
}
