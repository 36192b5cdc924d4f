// SPDX-License-Identifier: Apache-2.0
/*
 * The EndpointSlice side of the object store: the kubernetes.io/service-name
 * label, addressType, ports, and per endpoint addresses[0], its conditions
 * (missing ready/serving mean true, missing terminating false) and the pod of
 * its targetRef, nodeName, zone and hints. FQDN slices are kept but
 * contribute no endpoints. Also Node objects: their zone label.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "discovery/k8s_objects_int.h"

static int parse_slice_port(struct json_object *p, struct slice_port *sp, const char **err)
{
	const char *name, *proto;

	if (!json_object_is_type(p, json_type_object))
		BAD("ports: expected objects");
	if (k8s_obj_get_str(p, "name", &name) ||
	    k8s_obj_copy_name(sp->name, sizeof(sp->name), name ? name : ""))
		BAD("ports[].name: expected a string of at most 63 characters");
	if (k8s_obj_get_port(p, "port", &sp->port))
		BAD("ports[].port: expected an integer 1-65535");
	if (k8s_obj_get_str(p, "protocol", &proto))
		BAD("ports[].protocol: expected a string");
	sp->tcp = !proto || !strcmp(proto, "TCP");
	return 0;
}

/*
 * Conditions as the discovery.k8s.io/v1 API reference defines them: a nil
 * ready is "true", a nil serving is "true", a nil terminating is "false".
 */
static int parse_conditions(struct json_object *e, struct state_endpoint *ep, const char **err)
{
	struct json_object *c;
	int ready = -1, serving = -1, terminating = -1;

	if (k8s_obj_get_typed(e, "conditions", json_type_object, &c))
		BAD("endpoints[].conditions: expected an object");
	if (c &&
	    (k8s_obj_get_bool(c, "ready", &ready) || k8s_obj_get_bool(c, "serving", &serving) ||
	     k8s_obj_get_bool(c, "terminating", &terminating)))
		BAD("endpoints[].conditions: expected booleans");
	ep->ready = ready != 0;
	ep->serving = serving != 0;
	ep->terminating = terminating == 1;
	return 0;
}

/* hints.forZones[].name or forNodes[].name into |dst| as "a,b,"; names that
 * do not fit leave it "" (no hints: kube-proxy then ignores the Service's). */
static int parse_hint_list(struct json_object *hints, const char *key, char *dst, size_t size,
			   const char **err)
{
	struct json_object *list;
	size_t used = 0;

	dst[0] = '\0';
	if (k8s_obj_get_typed(hints, key, json_type_array, &list))
		BAD("endpoints[].hints: expected arrays");
	for (size_t i = 0; list && i < json_object_array_length(list); i++) {
		struct json_object *h = json_object_array_get_idx(list, i);
		const char *name = NULL;
		int n;

		if (!json_object_is_type(h, json_type_object) || k8s_obj_get_str(h, "name", &name))
			BAD("endpoints[].hints: expected objects with a string name");
		if (!name || !*name)
			continue;
		n = snprintf(dst + used, size - used, "%s,", name);
		if (n < 0 || (size_t)n >= size - used) {
			dst[0] = '\0';
			return 0;
		}
		used += (size_t)n;
	}
	return 0;
}

/* nodeName, zone and hints; names longer than 63 bytes are cut (they only
 * compare with this node's, cut the same way). */
static int parse_locality(struct json_object *e, struct state_endpoint *ep, const char **err)
{
	struct json_object *hints;
	const char *node, *zone;

	if (k8s_obj_get_str(e, "nodeName", &node) || k8s_obj_get_str(e, "zone", &zone))
		BAD("endpoints[].nodeName, zone: expected strings");
	snprintf(ep->node, sizeof(ep->node), "%s", node ? node : "");
	snprintf(ep->zone, sizeof(ep->zone), "%s", zone ? zone : "");
	if (k8s_obj_get_typed(e, "hints", json_type_object, &hints))
		BAD("endpoints[].hints: expected an object");
	if (!hints)
		return 0;
	if (parse_hint_list(hints, "forZones", ep->for_zones, sizeof(ep->for_zones), err) ||
	    parse_hint_list(hints, "forNodes", ep->for_nodes, sizeof(ep->for_nodes), err))
		return -EINVAL;
	return 0;
}

/*
 * Only addresses[0] counts: the API reference says the controller always
 * writes exactly one, that further addresses have no defined meaning, and
 * kube-proxy does not look at them. Counting them would weight a pod twice.
 */
static int parse_endpoint(struct json_object *e, bool v4, struct state_endpoint *ep,
			  const char **err)
{
	struct json_object *addrs, *a, *ref;
	const char *pod;

	if (!json_object_is_type(e, json_type_object))
		BAD("endpoints: expected objects");
	if (k8s_obj_get_typed(e, "addresses", json_type_array, &addrs) || !addrs ||
	    json_object_array_length(addrs) == 0)
		BAD("endpoints[].addresses: expected a non-empty array");
	a = json_object_array_get_idx(addrs, 0);
	if (!json_object_is_type(a, json_type_string) ||
	    h2s_ip_parse(&ep->ip, json_object_get_string(a)))
		BAD("endpoints[].addresses: expected IP addresses");
	if (h2s_ip_is_v4(&ep->ip) != v4)
		BAD("endpoints[].addresses: address family differs from addressType");
	if (parse_conditions(e, ep, err) || parse_locality(e, ep, err))
		return -EINVAL;
	if (k8s_obj_get_typed(e, "targetRef", json_type_object, &ref) ||
	    (ref && k8s_obj_get_str(ref, "name", &pod)))
		BAD("endpoints[].targetRef: expected an object with a string name");
	/* Pod names may exceed STATE_NAME_MAX; the name only labels logs and metrics. */
	if (ref && pod)
		snprintf(ep->pod, sizeof(ep->pod), "%s", pod);
	return 0;
}

int k8s_node_parse(struct json_object *o, struct obj *ob, const char **err)
{
	struct json_object *meta, *labels;
	const char *zone = NULL;

	if (k8s_obj_parse_meta(o, ob, &meta, err))
		return -EINVAL;
	if (k8s_obj_get_typed(meta, "labels", json_type_object, &labels))
		BAD("metadata.labels: expected an object");
	if (labels && k8s_obj_get_str(labels, "topology.kubernetes.io/zone", &zone))
		BAD("metadata.labels: values must be strings");
	memcpy(ob->node.name, ob->name, sizeof(ob->node.name) - 1); /* cut to 63 */
	snprintf(ob->node.zone, sizeof(ob->node.zone), "%s", zone ? zone : "");
	return 0;
}

static int parse_slice_labels(struct json_object *meta, struct slice *sl, const char **err)
{
	struct json_object *labels;
	const char *svc = NULL;

	if (k8s_obj_get_typed(meta, "labels", json_type_object, &labels))
		BAD("metadata.labels: expected an object");
	if (labels && k8s_obj_get_str(labels, "kubernetes.io/service-name", &svc))
		BAD("metadata.labels: values must be strings");
	if (k8s_obj_copy_name(sl->service, sizeof(sl->service), svc ? svc : ""))
		BAD("metadata.labels: kubernetes.io/service-name longer than 63 characters");
	return 0;
}

static int parse_slice_ports(struct json_object *o, struct slice *sl, const char **err)
{
	struct json_object *ports;
	size_t n;

	if (k8s_obj_get_typed(o, "ports", json_type_array, &ports))
		BAD("ports: expected an array");
	n = ports ? json_object_array_length(ports) : 0;
	if (n == 0)
		return 0;
	sl->ports = calloc(n, sizeof(*sl->ports));
	if (!sl->ports)
		NOMEM();
	for (size_t i = 0; i < n; i++) {
		if (parse_slice_port(json_object_array_get_idx(ports, i), &sl->ports[i], err))
			return -EINVAL;
		sl->n_ports++;
	}
	return 0;
}

int k8s_slice_parse(struct json_object *o, struct obj *ob, const char **err)
{
	struct json_object *meta, *eps;
	struct slice *sl = &ob->slice;
	const char *type;
	size_t n;

	if (k8s_obj_parse_meta(o, ob, &meta, err) || parse_slice_labels(meta, sl, err))
		return -EINVAL;
	if (k8s_obj_get_str(o, "addressType", &type) || !type)
		BAD("addressType: expected a string");
	/* FQDN slices have no defined semantics and kube-proxy ignores them too. */
	sl->ip = !strcmp(type, "IPv4") || !strcmp(type, "IPv6");
	if (parse_slice_ports(o, sl, err))
		return -EINVAL;
	/* Go prints an empty endpoints list as null. */
	if (k8s_obj_get_typed(o, "endpoints", json_type_array, &eps))
		BAD("endpoints: expected an array");
	n = eps ? json_object_array_length(eps) : 0;
	if (!sl->ip || n == 0)
		return 0;
	sl->eps = calloc(n, sizeof(*sl->eps));
	if (!sl->eps)
		NOMEM();
	for (size_t i = 0; i < n; i++) {
		if (parse_endpoint(json_object_array_get_idx(eps, i), !strcmp(type, "IPv4"),
				   &sl->eps[i], err))
			return -EINVAL;
		sl->n_eps++;
	}
	return 0;
}
