// SPDX-License-Identifier: Apache-2.0
/*
 * The Service side of the object store: cluster IPs, type, ports and their
 * opt-in (appProtocol kubernetes.io/h2c or grpc, or h2split.io/enabled), and
 * the h2split.io annotations (lb-policy, limits, slow start, weights,
 * health checks, topology, retry and hedging), trafficDistribution, internalTrafficPolicy and
 * sessionAffinity. A field of the wrong type rejects the Service; an
 * annotation value h2split cannot use is ignored with a warning.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "discovery/k8s_objects_int.h"
#include "discovery/rpc_policy_json.h"

#define WEIGHTS_MAX 1024 /* entries of h2split.io/weights kept */
#define WEIGHT_MAX 1000	 /* largest weight */

/* Annotation |key| of |meta|, or NULL. */
static int annotation(struct json_object *meta, const char *key, const char **out, const char **err)
{
	struct json_object *ann;

	*out = NULL;
	if (k8s_obj_get_typed(meta, "annotations", json_type_object, &ann))
		BAD("metadata.annotations: expected an object");
	if (ann && k8s_obj_get_str(ann, key, out))
		BAD("metadata.annotations: values must be strings");
	return 0;
}

/* A count annotation |key| into |*out| as state_service keeps it: unset 0
 * (the daemon's flag), "0" -1 (none), else the count. A bad value is warned
 * about and left unset. */
static int count_annotation(struct json_object *meta, const struct obj *ob, const char *key,
			    int32_t *out, const char **err)
{
	const char *v;
	char *end;
	long n;

	*out = 0;
	if (annotation(meta, key, &v, err))
		return -EINVAL;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (!*v || *end || errno || n < 0 || n > 1000000 || *v == '+' || *v == ' ') {
		log_warn("annotation_ignored service=%s/%s key=%s value=\"%s\" "
			 "expected=a count, 0 (no limit) to 1000000",
			 ob->ns, ob->name, key, v);
		return 0;
	}
	*out = n ? (int32_t)n : -1;
	return 0;
}

/* A duration annotation |key| ("10s") into |*out| as count_annotation does. */
static int duration_annotation(struct json_object *meta, const struct obj *ob, const char *key,
			       int32_t *out, const char **err)
{
	const char *v;
	int ms;

	*out = 0;
	if (annotation(meta, key, &v, err))
		return -EINVAL;
	if (!v)
		return 0;
	if (config_parse_duration_ms(v, 3600000, &ms)) {
		log_warn("annotation_ignored service=%s/%s key=%s value=\"%s\" "
			 "expected=a duration such as 500ms, 10s or 2m, at most 1h (0: off)",
			 ob->ns, ob->name, key, v);
		return 0;
	}
	*out = ms ? ms : -1;
	return 0;
}

static int cmp_weight(const void *a, const void *b)
{
	return strcmp(((const struct pod_weight *)a)->pod, ((const struct pod_weight *)b)->pod);
}

/* By pod, then weight: of a pod listed twice, the lowest weight comes first. */
static int cmp_weight_entry(const void *a, const void *b)
{
	const struct pod_weight *x = a, *y = b;
	int c = strcmp(x->pod, y->pod);

	return c ? c : (int)x->weight - (int)y->weight;
}

/* One "pod=N" item of |v| (|len| bytes) into |pw|: 0 or -EINVAL. */
static int parse_weight_item(const char *v, size_t len, struct pod_weight *pw)
{
	const char *eq;
	size_t nl;
	long n = 0;

	while (len && *v == ' ') {
		v++;
		len--;
	}
	while (len && v[len - 1] == ' ')
		len--;
	eq = memchr(v, '=', len);
	if (!eq)
		return -EINVAL;
	nl = (size_t)(eq - v);
	if (!nl || nl >= sizeof(pw->pod) || eq + 1 == v + len)
		return -EINVAL;
	for (const char *d = eq + 1; d < v + len; d++) {
		if (*d < '0' || *d > '9' || (n = n * 10 + (*d - '0')) > WEIGHT_MAX)
			return -EINVAL;
	}
	if (n < 1)
		return -EINVAL;
	memcpy(pw->pod, v, nl);
	pw->pod[nl] = '\0';
	pw->weight = (uint16_t)n;
	return 0;
}

/* h2split.io/weights: "pod-a=3,pod-b=1" (by the pod of each endpoint's
 * targetRef; pods not listed weigh 1). A bad item is warned about and
 * skipped, the rest apply; a pod listed twice gets its lowest weight. */
static int parse_weights(struct json_object *meta, struct obj *ob, const char **err)
{
	struct pod_weight *w;
	const char *v, *p;
	int n = 0, out = 0;

	if (annotation(meta, "h2split.io/weights", &v, err))
		return -EINVAL;
	if (!v || !*v)
		return 0;
	for (p = v; *p; p++)
		n += *p == ',';
	n = n + 1 < WEIGHTS_MAX ? n + 1 : WEIGHTS_MAX;
	w = calloc((size_t)n, sizeof(*w));
	if (!w)
		NOMEM();
	for (p = v; *p && out < n;) {
		size_t len = strcspn(p, ",");

		if (parse_weight_item(p, len, &w[out]))
			log_warn(
			    "annotation_ignored service=%s/%s key=h2split.io/weights item=\"%.*s\" "
			    "expected=POD=WEIGHT, WEIGHT 1 to %d, items separated by commas",
			    ob->ns, ob->name, (int)(len > 80 ? 80 : len), p, WEIGHT_MAX);
		else
			out++;
		p += len + (p[len] == ',');
	}
	if (*p)
		log_warn("annotation_truncated service=%s/%s key=h2split.io/weights kept=%d",
			 ob->ns, ob->name, WEIGHTS_MAX);
	qsort(w, (size_t)out, sizeof(*w), cmp_weight_entry);
	ob->svc.n_weights = 0;
	for (int i = 0; i < out; i++)
		if (!ob->svc.n_weights || strcmp(w[ob->svc.n_weights - 1].pod, w[i].pod))
			w[ob->svc.n_weights++] = w[i];
	ob->svc.weights = w;
	return 0;
}

/* The weight h2split.io/weights gives |pod|, 0 when it gives none. */
uint16_t k8s_service_weight(const struct svc *svc, const char *pod)
{
	struct pod_weight key, *hit;

	if (!svc->n_weights || !*pod)
		return 0;
	snprintf(key.pod, sizeof(key.pod), "%s", pod);
	hit = bsearch(&key, svc->weights, (size_t)svc->n_weights, sizeof(key), cmp_weight);
	return hit ? hit->weight : 0;
}

/* h2split.io/health-check ("grpc"), -service and -interval. */
static int parse_health(struct json_object *meta, struct obj *ob, const char **err)
{
	const char *v;
	int ms;

	if (annotation(meta, "h2split.io/health-check", &v, err))
		return -EINVAL;
	ob->svc.health_check = v && !strcmp(v, "grpc");
	if (v && !ob->svc.health_check)
		log_warn(
		    "annotation_ignored service=%s/%s key=h2split.io/health-check value=\"%s\" "
		    "expected=grpc",
		    ob->ns, ob->name, v);
	if (annotation(meta, "h2split.io/health-check-service", &v, err))
		return -EINVAL;
	if (v && strlen(v) >= sizeof(ob->svc.health_service))
		log_warn("annotation_ignored service=%s/%s key=h2split.io/health-check-service "
			 "expected=at most %zu characters",
			 ob->ns, ob->name, sizeof(ob->svc.health_service) - 1);
	else if (v)
		strcpy(ob->svc.health_service, v);
	if (annotation(meta, "h2split.io/health-check-interval", &v, err))
		return -EINVAL;
	ob->svc.health_interval_ms = 0;
	if (v && (config_parse_duration_ms(v, 3600000, &ms) || ms < 100))
		log_warn("annotation_ignored service=%s/%s key=h2split.io/health-check-interval "
			 "value=\"%s\" expected=a duration from 100ms to 1h",
			 ob->ns, ob->name, v);
	else if (v)
		ob->svc.health_interval_ms = ms;
	return 0;
}

/* One policy annotation |key| of |kind| into |*out|; a bad one is warned
 * about and not applied at all. */
static int policy_annotation(struct json_object *meta, const struct obj *ob, const char *key,
			     enum rpc_policy_kind kind, struct rpc_policy *out, const char **err)
{
	char why[160];
	const char *v;

	memset(out, 0, sizeof(*out));
	if (annotation(meta, key, &v, err))
		return -EINVAL;
	if (v && rpc_policy_parse(v, kind, out, why, sizeof(why)))
		log_warn("annotation_ignored service=%s/%s key=%s value=\"%.200s\" error=\"%s\" "
			 "expected=a JSON %s as in gRPC service config (README \"Retries and "
			 "hedging\")",
			 ob->ns, ob->name, key, v, why,
			 kind == RPC_POLICY_RETRY ? "retryPolicy" : "hedgingPolicy");
	return 0;
}

/* h2split.io/retry-policy, h2split.io/hedging-policy, h2split.io/per-try-timeout. */
static int parse_rpc_policies(struct json_object *meta, struct obj *ob, const char **err)
{
	const char *v;
	int ms;

	if (policy_annotation(meta, ob, "h2split.io/retry-policy", RPC_POLICY_RETRY, &ob->svc.retry,
			      err) ||
	    policy_annotation(meta, ob, "h2split.io/hedging-policy", RPC_POLICY_HEDGE,
			      &ob->svc.hedge, err) ||
	    annotation(meta, "h2split.io/per-try-timeout", &v, err))
		return -EINVAL;
	ob->svc.per_try_timeout_ms = 0;
	if (v && (config_parse_duration_ms(v, 3600000, &ms) || !ms))
		log_warn("annotation_ignored service=%s/%s key=h2split.io/per-try-timeout "
			 "value=\"%s\" expected=a duration from 1ms to 1h, such as 500ms or 2s",
			 ob->ns, ob->name, v);
	else if (v)
		ob->svc.per_try_timeout_ms = ms;
	return 0;
}

/* spec.trafficDistribution, overridden by h2split.io/topology. */
static int parse_topology(struct json_object *meta, struct json_object *spec, struct obj *ob,
			  const char **err)
{
	const char *td, *v;

	if (k8s_obj_get_str(spec, "trafficDistribution", &td))
		BAD("spec.trafficDistribution: expected a string");
	ob->svc.topology = STATE_TOPO_DEFAULT;
	if (td && !strcmp(td, "PreferSameNode"))
		ob->svc.topology = STATE_TOPO_NODE;
	else if (td && (!strcmp(td, "PreferClose") || !strcmp(td, "PreferSameZone")))
		ob->svc.topology = STATE_TOPO_ZONE;
	if (annotation(meta, "h2split.io/topology", &v, err))
		return -EINVAL;
	if (!v)
		return 0;
	if (!strcmp(v, "off"))
		ob->svc.topology = STATE_TOPO_OFF;
	else if (!strcmp(v, "zone"))
		ob->svc.topology = STATE_TOPO_ZONE;
	else if (!strcmp(v, "node"))
		ob->svc.topology = STATE_TOPO_NODE;
	else
		log_warn("annotation_ignored service=%s/%s key=h2split.io/topology value=\"%s\" "
			 "expected=off|zone|node",
			 ob->ns, ob->name, v);
	return 0;
}

/* sessionAffinity: ClientIP is left to kube-proxy: no port is opted in. */
static int parse_affinity(struct json_object *spec, struct obj *ob, const char **err)
{
	const char *aff, *itp;
	bool any = false;

	if (k8s_obj_get_str(spec, "internalTrafficPolicy", &itp))
		BAD("spec.internalTrafficPolicy: expected a string");
	ob->svc.local_only = itp && !strcmp(itp, "Local");
	if (k8s_obj_get_str(spec, "sessionAffinity", &aff))
		BAD("spec.sessionAffinity: expected a string");
	if (!aff || strcmp(aff, "ClientIP"))
		return 0;
	for (int i = 0; i < ob->svc.n_ports; i++) {
		any |= ob->svc.ports[i].opted;
		ob->svc.ports[i].opted = false;
	}
	if (any)
		log_info("service_left_to_kube_proxy service=%s/%s reason=\"sessionAffinity: "
			 "ClientIP pins a client to one pod; h2split would spread its RPCs\"",
			 ob->ns, ob->name);
	return 0;
}

/* |*enabled| is h2split.io/enabled: -1 unset, 0 "false", 1 "true". */
static int parse_svc_annotations(struct json_object *meta, struct obj *ob, int *enabled,
				 const char **err)
{
	const char *v;

	if (annotation(meta, "h2split.io/enabled", &v, err))
		return -EINVAL;
	*enabled = -1;
	if (v && !strcmp(v, "true"))
		*enabled = 1;
	else if (v && !strcmp(v, "false"))
		*enabled = 0;
	else if (v)
		log_warn("annotation_ignored service=%s/%s key=h2split.io/enabled value=\"%s\" "
			 "expected=true|false",
			 ob->ns, ob->name, v);

	if (annotation(meta, "h2split.io/lb-policy", &v, err))
		return -EINVAL;
	ob->svc.lb = LB_DEFAULT;
	if (v && config_parse_lb_policy(v, &ob->svc.lb)) {
		log_warn("annotation_ignored service=%s/%s key=h2split.io/lb-policy value=\"%s\" "
			 "expected=least_request|round_robin|ewma",
			 ob->ns, ob->name, v);
		ob->svc.lb = LB_DEFAULT;
	}

	if (annotation(meta, "h2split.io/upstream-tls", &v, err))
		return -EINVAL;
	ob->svc.upstream_tls = v && !strcmp(v, "true");
	if (count_annotation(meta, ob, "h2split.io/max-inflight-per-endpoint",
			     &ob->svc.max_inflight_ep, err) ||
	    count_annotation(meta, ob, "h2split.io/max-inflight", &ob->svc.max_inflight, err) ||
	    count_annotation(meta, ob, "h2split.io/max-pending", &ob->svc.max_pending, err) ||
	    duration_annotation(meta, ob, "h2split.io/slow-start", &ob->svc.slow_start_ms, err) ||
	    parse_weights(meta, ob, err) || parse_health(meta, ob, err) ||
	    parse_rpc_policies(meta, ob, err))
		return -EINVAL;
	return 0;
}

/* Add one cluster IP; "None" (headless) and "" (not allocated) add nothing. */
static int add_vip(struct svc *svc, const char *s, const char **err)
{
	struct h2s_ip ip;

	if (!*s || !strcmp(s, "None"))
		return 0;
	if (h2s_ip_parse(&ip, s))
		BAD("spec.clusterIPs: expected IP addresses");
	for (int i = 0; i < svc->n_vips; i++) {
		if (h2s_ip_is_v4(&svc->vips[i]) == h2s_ip_is_v4(&ip))
			return 0; /* at most one per family; the first is the primary */
	}
	if (svc->n_vips < STATE_MAX_VIPS)
		svc->vips[svc->n_vips++] = ip;
	return 0;
}

static int parse_vips(struct json_object *spec, struct svc *svc, const char **err)
{
	struct json_object *ips;
	const char *ip;

	if (k8s_obj_get_typed(spec, "clusterIPs", json_type_array, &ips))
		BAD("spec.clusterIPs: expected an array");
	if (ips && json_object_array_length(ips) > 0) {
		for (size_t i = 0; i < json_object_array_length(ips); i++) {
			struct json_object *v = json_object_array_get_idx(ips, i);

			if (!json_object_is_type(v, json_type_string))
				BAD("spec.clusterIPs: expected strings");
			if (add_vip(svc, json_object_get_string(v), err))
				return -EINVAL;
		}
		return 0;
	}
	if (k8s_obj_get_str(spec, "clusterIP", &ip))
		BAD("spec.clusterIP: expected a string");
	return ip ? add_vip(svc, ip, err) : 0;
}

static bool app_protocol_h2(const char *p)
{
	return p && (!strcmp(p, "kubernetes.io/h2c") || !strcmp(p, "grpc") || !strcmp(p, "h2c"));
}

static int parse_svc_port(struct json_object *p, struct svc_port *sp, int enabled, const char **err)
{
	const char *name, *proto, *app;

	if (!json_object_is_type(p, json_type_object))
		BAD("spec.ports: expected objects");
	if (k8s_obj_get_str(p, "name", &name) ||
	    k8s_obj_copy_name(sp->name, sizeof(sp->name), name ? name : ""))
		BAD("spec.ports[].name: expected a string of at most 63 characters");
	if (k8s_obj_get_port(p, "port", &sp->port) || !sp->port)
		BAD("spec.ports[].port: expected an integer 1-65535");
	if (k8s_obj_get_str(p, "protocol", &proto))
		BAD("spec.ports[].protocol: expected a string");
	if (k8s_obj_get_str(p, "appProtocol", &app))
		BAD("spec.ports[].appProtocol: expected a string");
	/* The annotation wins both ways; without it appProtocol decides per port. */
	sp->opted = (!proto || !strcmp(proto, "TCP")) &&
		    (enabled == 1 || (enabled == -1 && app_protocol_h2(app)));
	return 0;
}

int k8s_service_parse(struct json_object *o, struct obj *ob, const char **err)
{
	struct json_object *meta, *spec, *ports;
	const char *type;
	int enabled;
	size_t n;

	if (k8s_obj_parse_meta(o, ob, &meta, err))
		return -EINVAL;
	if (strlen(ob->name) >= STATE_NAME_MAX)
		BAD("metadata.name: longer than 63 characters");
	if (parse_svc_annotations(meta, ob, &enabled, err))
		return -EINVAL;
	if (k8s_obj_get_typed(o, "spec", json_type_object, &spec) || !spec)
		BAD("spec: expected an object");
	if (k8s_obj_get_str(spec, "type", &type))
		BAD("spec.type: expected a string");
	if (parse_vips(spec, &ob->svc, err))
		return -EINVAL;
	/* ExternalName (and any type we do not know) has no cluster IP to intercept. */
	ob->svc.routable =
	    ob->svc.n_vips > 0 && (!type || !strcmp(type, "ClusterIP") ||
				   !strcmp(type, "NodePort") || !strcmp(type, "LoadBalancer"));
	if (parse_topology(meta, spec, ob, err))
		return -EINVAL;
	if (k8s_obj_get_typed(spec, "ports", json_type_array, &ports))
		BAD("spec.ports: expected an array");
	n = ports ? json_object_array_length(ports) : 0;
	if (n == 0)
		return parse_affinity(spec, ob, err);
	ob->svc.ports = calloc(n, sizeof(*ob->svc.ports));
	if (!ob->svc.ports)
		NOMEM();
	for (size_t i = 0; i < n; i++) {
		if (parse_svc_port(json_object_array_get_idx(ports, i), &ob->svc.ports[i], enabled,
				   err))
			return -EINVAL;
		ob->svc.n_ports++;
	}
	return parse_affinity(spec, ob, err);
}
