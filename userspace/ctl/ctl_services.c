// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl services: the redirected VIP:ports from the pinned services
 * map, joined with the balancing settings in force from a running h2splitd's
 * /services (left out when it does not answer).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

/* ---- services: the BPF map, joined with the daemon's /services ---- */

/* The /services list of a running h2splitd, or NULL (with a note: the
 * command still works from the BPF map alone). */
static struct json_object *services_in_force(const struct ctl *c)
{
	struct json_object *root, *svcs = NULL;
	char err[256], *body = NULL;
	int fd, status = 0, rc;

	fd = ctl_admin_connect(c->admin, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr,
			"services: balancing settings not shown: h2splitd admin API at %s: %s\n",
			c->admin, err);
		return NULL;
	}
	rc = ctl_admin_get(fd, "/services", &body, &status);
	close(fd);
	root = !rc && status == 200 ? json_tokener_parse(body) : NULL;
	free(body);
	if (root && json_object_object_get_ex(root, "services", &svcs))
		json_object_get(svcs);
	else
		fprintf(stderr,
			"services: balancing settings not shown: admin API at %s: GET /services: "
			"%s (HTTP %d)\n",
			c->admin, rc ? strerror(-rc) : "no service list", status);
	json_object_put(root);
	return svcs;
}

/* The entry of service |id| in |svcs|, or NULL. */
static struct json_object *service_by_id(struct json_object *svcs, int64_t id)
{
	for (size_t i = 0; svcs && i < json_object_array_length(svcs); i++) {
		struct json_object *s = json_object_array_get_idx(svcs, i);

		if (ctl_jint(s, "id") == id)
			return s;
	}
	return NULL;
}

/* "-" for no limit, else the number. */
static const char *limit_str(int64_t v, char *buf, size_t len)
{
	if (!v)
		return "-";
	snprintf(buf, len, "%lld", (long long)v);
	return buf;
}

/* "200ms", "5s". */
static const char *ms_str(int64_t ms, char *buf, size_t len)
{
	if (ms % 1000)
		snprintf(buf, len, "%lldms", (long long)ms);
	else
		snprintf(buf, len, "%llds", (long long)(ms / 1000));
	return buf;
}

/* "namespace/name:port", as /endpoints and the metrics name a service. */
static const char *service_name(struct json_object *svc, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s:%lld", ctl_jstr(svc, "namespace"), ctl_jstr(svc, "name"),
		 (long long)ctl_jint(svc, "port"));
	return buf;
}

#define SERVICES_ROW "%-40s %-10s %-7s %-32s %-13s %6s %7s %7s %10s %-20s %-7s %s\n"

/* One VIP:port of the BPF map, with the settings |svc| (NULL: "?": h2splitd
 * is not reachable or does not list the service). */
static void print_service_row(const char *vip, uint32_t id, bool enabled, struct json_object *svc)
{
	char ids[16], name[160], ep[24], all[24], pend[24], slow[24], hc[200], iv[24];
	struct json_object *b, *r = NULL;

	snprintf(ids, sizeof(ids), "%u", id);
	if (!svc || !json_object_object_get_ex(svc, "balancing", &b)) {
		printf(SERVICES_ROW, vip, ids, enabled ? "yes" : "no", "?", "?", "?", "?", "?", "?",
		       "?", "?", "?");
		return;
	}
	json_object_object_get_ex(svc, "retries", &r);
	if (strcmp(ctl_jstr(b, "health_check"), "grpc"))
		snprintf(hc, sizeof(hc), "%s", ctl_jstr(b, "health_check"));
	else
		snprintf(hc, sizeof(hc), "grpc/%s%s%s",
			 ms_str(ctl_jint(b, "health_check_interval_ms"), iv, sizeof(iv)),
			 ctl_jstr(b, "health_check_service")[0] ? "/" : "",
			 ctl_jstr(b, "health_check_service"));
	printf(SERVICES_ROW, vip, ids, enabled ? "yes" : "no",
	       service_name(svc, name, sizeof(name)), ctl_jstr(b, "policy"),
	       limit_str(ctl_jint(b, "max_inflight_per_endpoint"), ep, sizeof(ep)),
	       limit_str(ctl_jint(b, "max_inflight_per_service"), all, sizeof(all)),
	       limit_str(ctl_jint(b, "max_pending"), pend, sizeof(pend)),
	       ctl_jint(b, "slow_start_ms")
		   ? ms_str(ctl_jint(b, "slow_start_ms"), slow, sizeof(slow))
		   : "off",
	       hc, json_object_get_boolean(json_object_object_get(b, "weights")) ? "yes" : "no",
	       r ? ctl_jstr(r, "short") : "?");
}

int ctl_cmd_services(const struct ctl *c)
{
	struct bpf_maps_svc_entry *e;
	struct json_object *arr = NULL, *svcs;
	struct bpf_maps m;
	char buf[INET6_ADDRSTRLEN + 8];
	int n, err;

	if (ctl_open_maps(c, &m))
		return EXIT_ERR;
	err = bpf_maps_services_read(&m, &e, &n);
	bpf_maps_close(&m);
	if (err) {
		fprintf(stderr, "read h2s_services: %s\n", strerror(-err));
		return EXIT_ERR;
	}
	svcs = services_in_force(c);
	if (c->json)
		arr = json_object_new_array();
	else
		printf(SERVICES_ROW, "VIP:PORT", "SERVICE", "ENABLED", "NAME", "POLICY", "MAX/EP",
		       "MAX/SVC", "PENDING", "SLOW-START", "HEALTH-CHECK", "WEIGHTS", "RETRIES");
	for (int i = 0; i < n; i++) {
		const struct h2s_ip *ip = (const struct h2s_ip *)e[i].key.addr;
		bool enabled = e[i].value.flags & H2S_SVC_F_ENABLED;
		struct json_object *o, *svc = service_by_id(svcs, e[i].value.service_id), *b;

		if (!c->json) {
			print_service_row(
			    ctl_addr_port_str(e[i].key.addr, e[i].key.port, buf, sizeof(buf)),
			    e[i].value.service_id, enabled, svc);
			continue;
		}
		o = json_object_new_object();
		json_object_object_add(o, "vip",
				       json_object_new_string(h2s_ip_str(ip, buf, sizeof(buf))));
		json_object_object_add(o, "port", json_object_new_int(ntohs(e[i].key.port)));
		json_object_object_add(o, "service_id",
				       json_object_new_int64(e[i].value.service_id));
		json_object_object_add(o, "enabled", json_object_new_boolean(enabled));
		if (svc && json_object_object_get_ex(svc, "balancing", &b)) {
			char name[160];

			json_object_object_add(
			    o, "service",
			    json_object_new_string(service_name(svc, name, sizeof(name))));
			json_object_object_add(o, "balancing", json_object_get(b));
			if (json_object_object_get_ex(svc, "retries", &b))
				json_object_object_add(o, "retries", json_object_get(b));
		}
		json_object_array_add(arr, o);
	}
	if (arr)
		ctl_print_json(arr);
	json_object_put(svcs);
	free(e);
	return EXIT_OK;
}
