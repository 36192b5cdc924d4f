// SPDX-License-Identifier: Apache-2.0
/*
 * Store of Kubernetes Services and EndpointSlices (see k8s_objects.h). Each
 * object is validated and reduced to the few fields h2split uses when it is
 * applied, so a malformed object is rejected up front with the store
 * unchanged and k8s_store_build() can only fail on ENOMEM. Objects live in a
 * chained hash table keyed by (kind, namespace, name).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "discovery/k8s_objects.h"

#define OBJ_NAME_MAX 254  /* a DNS subdomain (253) and its NUL: EndpointSlice names */
#define JSON_MAX_DEPTH 64 /* managedFields nest deeper than json-c's default 32 */

enum obj_kind { OBJ_SERVICE, OBJ_SLICE };

struct svc_port {
	char name[STATE_NAME_MAX]; /* "" for an unnamed single port */
	uint16_t port;
	bool opted; /* TCP and opted in by appProtocol or annotation */
};

/* One entry of h2split.io/weights. */
struct pod_weight {
	char pod[STATE_NAME_MAX];
	uint16_t weight;
};

#define WEIGHTS_MAX 1024 /* entries of h2split.io/weights kept */
#define WEIGHT_MAX 1000	 /* largest weight */

struct svc {
	bool routable; /* ClusterIP/NodePort/LoadBalancer with a cluster IP */
	struct h2s_ip vips[STATE_MAX_VIPS];
	int n_vips;
	enum lb_policy lb;
	bool upstream_tls;
	int32_t max_inflight_ep, max_inflight, max_pending; /* as state_service */
	int32_t slow_start_ms;				    /* as state_service */
	bool health_check;				    /* as state_service */
	int32_t health_interval_ms;
	char health_service[STATE_HEALTH_SERVICE_MAX];
	struct pod_weight *weights; /* owned, sorted by pod, unique */
	int n_weights;
	struct svc_port *ports; /* owned */
	int n_ports;
};

struct slice_port {
	char name[STATE_NAME_MAX];
	uint16_t port; /* 0: unset, which the API calls "all ports"; never matched */
	bool tcp;
};

struct slice {
	char service[STATE_NAME_MAX]; /* label kubernetes.io/service-name, "" none */
	bool ip;		      /* addressType IPv4 or IPv6; FQDN slices are ignored */
	struct slice_port *ports;     /* owned */
	int n_ports;
	struct state_endpoint *eps; /* owned; port 0 until mapped by build */
	int n_eps;
};

struct obj {
	enum obj_kind kind;
	char ns[STATE_NAME_MAX];
	char name[OBJ_NAME_MAX];
	uint32_t hash;
	struct obj *next; /* hash chain, owned by the store */
	union {
		struct svc svc;
		struct slice slice;
	};
};

struct k8s_store {
	struct obj **buckets; /* owned, with every chain; n_buckets is a power of 2 */
	size_t n_buckets;
	size_t n_objs;
};

static void obj_free(struct obj *o)
{
	if (!o)
		return;
	if (o->kind == OBJ_SERVICE) {
		free(o->svc.ports);
		free(o->svc.weights);
	} else {
		free(o->slice.ports);
		free(o->slice.eps);
	}
	free(o);
}

/* ---- hash table ---- */

static uint32_t obj_hash(enum obj_kind kind, const char *ns, const char *name)
{
	uint32_t h = 2166136261u ^ (uint32_t)kind;
	const char *parts[] = {ns, "/", name};

	for (int i = 0; i < 3; i++) {
		for (const char *p = parts[i]; *p; p++) {
			h ^= (uint8_t)*p;
			h *= 16777619u;
		}
	}
	return h;
}

static struct obj **find_slot(const struct k8s_store *s, enum obj_kind kind, const char *ns,
			      const char *name, uint32_t hash)
{
	struct obj **pp = &s->buckets[hash & (s->n_buckets - 1)];

	for (; *pp; pp = &(*pp)->next) {
		const struct obj *o = *pp;

		if (o->hash == hash && o->kind == kind && !strcmp(o->ns, ns) &&
		    !strcmp(o->name, name))
			return pp;
	}
	return pp;
}

/* Make room for |extra| more objects so that inserting them cannot fail. */
static int reserve(struct k8s_store *s, size_t extra)
{
	size_t n = s->n_buckets;
	struct obj **b;

	while (n < s->n_objs + extra)
		n *= 2;
	if (n == s->n_buckets)
		return 0;
	b = calloc(n, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_buckets; i++) {
		struct obj *o, *next;

		for (o = s->buckets[i]; o; o = next) {
			next = o->next;
			o->next = b[o->hash & (n - 1)];
			b[o->hash & (n - 1)] = o;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->n_buckets = n;
	return 0;
}

/* Insert or replace; room must have been reserved. */
static void put(struct k8s_store *s, struct obj *o)
{
	struct obj **pp = find_slot(s, o->kind, o->ns, o->name, o->hash);
	struct obj *old = *pp;

	if (old) {
		o->next = old->next;
		obj_free(old);
	} else {
		o->next = NULL;
		s->n_objs++;
	}
	*pp = o;
}

static void del(struct k8s_store *s, enum obj_kind kind, const char *ns, const char *name)
{
	struct obj **pp = find_slot(s, kind, ns, name, obj_hash(kind, ns, name));
	struct obj *o = *pp;

	if (!o)
		return;
	*pp = o->next;
	obj_free(o);
	s->n_objs--;
}

struct k8s_store *k8s_store_new(void)
{
	struct k8s_store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->n_buckets = 64;
	s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
	if (!s->buckets) {
		free(s);
		return NULL;
	}
	return s;
}

void k8s_store_clear(struct k8s_store *s)
{
	for (size_t i = 0; i < s->n_buckets; i++) {
		struct obj *o, *next;

		for (o = s->buckets[i]; o; o = next) {
			next = o->next;
			obj_free(o);
		}
		s->buckets[i] = NULL;
	}
	s->n_objs = 0;
}

void k8s_store_free(struct k8s_store *s)
{
	if (!s)
		return;
	k8s_store_clear(s);
	free(s->buckets);
	free(s);
}

/* ---- JSON field access: absent and null read as "unset", a wrong type is an error ---- */

static struct json_object *field(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

static int get_typed(struct json_object *o, const char *key, enum json_type t,
		     struct json_object **out)
{
	struct json_object *v = field(o, key);

	*out = NULL;
	if (!v)
		return 0;
	if (!json_object_is_type(v, t))
		return -EINVAL;
	*out = v;
	return 0;
}

static int get_str(struct json_object *o, const char *key, const char **out)
{
	struct json_object *v;

	*out = NULL;
	if (get_typed(o, key, json_type_string, &v))
		return -EINVAL;
	if (v)
		*out = json_object_get_string(v);
	return 0;
}

/* Tri-state bool: -1 unset, 0 false, 1 true. */
static int get_bool(struct json_object *o, const char *key, int *out)
{
	struct json_object *v;

	*out = -1;
	if (get_typed(o, key, json_type_boolean, &v))
		return -EINVAL;
	if (v)
		*out = json_object_get_boolean(v);
	return 0;
}

/* A port number 1-65535; 0 when unset. */
static int get_port(struct json_object *o, const char *key, uint16_t *out)
{
	struct json_object *v;
	int64_t n;

	*out = 0;
	if (get_typed(o, key, json_type_int, &v))
		return -EINVAL;
	if (!v)
		return 0;
	n = json_object_get_int64(v);
	if (n < 1 || n > 65535)
		return -EINVAL;
	*out = (uint16_t)n;
	return 0;
}

static int copy_name(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size)
		return -EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

/* Reject with a static description; the caller returns -EINVAL. */
#define BAD(msg)                                                                                   \
	do {                                                                                       \
		*err = (msg);                                                                      \
		return -EINVAL;                                                                    \
	} while (0)

#define NOMEM()                                                                                    \
	do {                                                                                       \
		*err = "out of memory";                                                            \
		return -ENOMEM;                                                                    \
	} while (0)

/* ---- object parsing ---- */

static int parse_meta(struct json_object *o, struct obj *ob, struct json_object **meta,
		      const char **err)
{
	const char *name, *ns;

	if (get_typed(o, "metadata", json_type_object, meta) || !*meta)
		BAD("metadata: expected an object");
	if (get_str(*meta, "name", &name) || !name || !*name)
		BAD("metadata.name: expected a non-empty string");
	if (copy_name(ob->name, sizeof(ob->name), name))
		BAD("metadata.name: longer than 253 characters");
	if (get_str(*meta, "namespace", &ns))
		BAD("metadata.namespace: expected a string");
	if (copy_name(ob->ns, sizeof(ob->ns), ns && *ns ? ns : "default"))
		BAD("metadata.namespace: longer than 63 characters");
	ob->hash = obj_hash(ob->kind, ob->ns, ob->name);
	return 0;
}

/* Annotation |key| of |meta|, or NULL. */
static int annotation(struct json_object *meta, const char *key, const char **out, const char **err)
{
	struct json_object *ann;

	*out = NULL;
	if (get_typed(meta, "annotations", json_type_object, &ann))
		BAD("metadata.annotations: expected an object");
	if (ann && get_str(ann, key, out))
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
static uint16_t pod_weight(const struct svc *svc, const char *pod)
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
	    parse_weights(meta, ob, err) || parse_health(meta, ob, err))
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

	if (get_typed(spec, "clusterIPs", json_type_array, &ips))
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
	if (get_str(spec, "clusterIP", &ip))
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
	if (get_str(p, "name", &name) || copy_name(sp->name, sizeof(sp->name), name ? name : ""))
		BAD("spec.ports[].name: expected a string of at most 63 characters");
	if (get_port(p, "port", &sp->port) || !sp->port)
		BAD("spec.ports[].port: expected an integer 1-65535");
	if (get_str(p, "protocol", &proto))
		BAD("spec.ports[].protocol: expected a string");
	if (get_str(p, "appProtocol", &app))
		BAD("spec.ports[].appProtocol: expected a string");
	/* The annotation wins both ways; without it appProtocol decides per port. */
	sp->opted = (!proto || !strcmp(proto, "TCP")) &&
		    (enabled == 1 || (enabled == -1 && app_protocol_h2(app)));
	return 0;
}

static int parse_service(struct json_object *o, struct obj *ob, const char **err)
{
	struct json_object *meta, *spec, *ports;
	const char *type;
	int enabled;
	size_t n;

	if (parse_meta(o, ob, &meta, err))
		return -EINVAL;
	if (strlen(ob->name) >= STATE_NAME_MAX)
		BAD("metadata.name: longer than 63 characters");
	if (parse_svc_annotations(meta, ob, &enabled, err))
		return -EINVAL;
	if (get_typed(o, "spec", json_type_object, &spec) || !spec)
		BAD("spec: expected an object");
	if (get_str(spec, "type", &type))
		BAD("spec.type: expected a string");
	if (parse_vips(spec, &ob->svc, err))
		return -EINVAL;
	/* ExternalName (and any type we do not know) has no cluster IP to intercept. */
	ob->svc.routable =
	    ob->svc.n_vips > 0 && (!type || !strcmp(type, "ClusterIP") ||
				   !strcmp(type, "NodePort") || !strcmp(type, "LoadBalancer"));
	if (get_typed(spec, "ports", json_type_array, &ports))
		BAD("spec.ports: expected an array");
	n = ports ? json_object_array_length(ports) : 0;
	if (n == 0)
		return 0;
	ob->svc.ports = calloc(n, sizeof(*ob->svc.ports));
	if (!ob->svc.ports)
		NOMEM();
	for (size_t i = 0; i < n; i++) {
		if (parse_svc_port(json_object_array_get_idx(ports, i), &ob->svc.ports[i], enabled,
				   err))
			return -EINVAL;
		ob->svc.n_ports++;
	}
	return 0;
}

static int parse_slice_port(struct json_object *p, struct slice_port *sp, const char **err)
{
	const char *name, *proto;

	if (!json_object_is_type(p, json_type_object))
		BAD("ports: expected objects");
	if (get_str(p, "name", &name) || copy_name(sp->name, sizeof(sp->name), name ? name : ""))
		BAD("ports[].name: expected a string of at most 63 characters");
	if (get_port(p, "port", &sp->port))
		BAD("ports[].port: expected an integer 1-65535");
	if (get_str(p, "protocol", &proto))
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

	if (get_typed(e, "conditions", json_type_object, &c))
		BAD("endpoints[].conditions: expected an object");
	if (c && (get_bool(c, "ready", &ready) || get_bool(c, "serving", &serving) ||
		  get_bool(c, "terminating", &terminating)))
		BAD("endpoints[].conditions: expected booleans");
	ep->ready = ready != 0;
	ep->serving = serving != 0;
	ep->terminating = terminating == 1;
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
	if (get_typed(e, "addresses", json_type_array, &addrs) || !addrs ||
	    json_object_array_length(addrs) == 0)
		BAD("endpoints[].addresses: expected a non-empty array");
	a = json_object_array_get_idx(addrs, 0);
	if (!json_object_is_type(a, json_type_string) ||
	    h2s_ip_parse(&ep->ip, json_object_get_string(a)))
		BAD("endpoints[].addresses: expected IP addresses");
	if (h2s_ip_is_v4(&ep->ip) != v4)
		BAD("endpoints[].addresses: address family differs from addressType");
	if (parse_conditions(e, ep, err))
		return -EINVAL;
	if (get_typed(e, "targetRef", json_type_object, &ref) ||
	    (ref && get_str(ref, "name", &pod)))
		BAD("endpoints[].targetRef: expected an object with a string name");
	/* Pod names may exceed STATE_NAME_MAX; the name only labels logs and metrics. */
	if (ref && pod)
		snprintf(ep->pod, sizeof(ep->pod), "%s", pod);
	return 0;
}

static int parse_slice_labels(struct json_object *meta, struct slice *sl, const char **err)
{
	struct json_object *labels;
	const char *svc = NULL;

	if (get_typed(meta, "labels", json_type_object, &labels))
		BAD("metadata.labels: expected an object");
	if (labels && get_str(labels, "kubernetes.io/service-name", &svc))
		BAD("metadata.labels: values must be strings");
	if (copy_name(sl->service, sizeof(sl->service), svc ? svc : ""))
		BAD("metadata.labels: kubernetes.io/service-name longer than 63 characters");
	return 0;
}

static int parse_slice_ports(struct json_object *o, struct slice *sl, const char **err)
{
	struct json_object *ports;
	size_t n;

	if (get_typed(o, "ports", json_type_array, &ports))
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

static int parse_slice(struct json_object *o, struct obj *ob, const char **err)
{
	struct json_object *meta, *eps;
	struct slice *sl = &ob->slice;
	const char *type;
	size_t n;

	if (parse_meta(o, ob, &meta, err) || parse_slice_labels(meta, sl, err))
		return -EINVAL;
	if (get_str(o, "addressType", &type) || !type)
		BAD("addressType: expected a string");
	/* FQDN slices have no defined semantics and kube-proxy ignores them too. */
	sl->ip = !strcmp(type, "IPv4") || !strcmp(type, "IPv6");
	if (parse_slice_ports(o, sl, err))
		return -EINVAL;
	/* Go prints an empty endpoints list as null. */
	if (get_typed(o, "endpoints", json_type_array, &eps))
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

/*
 * Turn |o| into a new object of |kind_name| ("Service", "EndpointSlice"). *out
 * stays NULL for kinds the store ignores. With |meta_only| (a deletion) just
 * the name is read.
 */
static int parse_obj(struct json_object *o, const char *kind_name, bool meta_only, struct obj **out,
		     const char **err)
{
	struct json_object *meta;
	struct obj *ob;
	int rc;

	*out = NULL;
	if (!json_object_is_type(o, json_type_object))
		BAD("expected an object");
	if (!kind_name)
		BAD("kind: expected a string");
	if (strcmp(kind_name, "Service") && strcmp(kind_name, "EndpointSlice"))
		return 0;
	ob = calloc(1, sizeof(*ob));
	if (!ob)
		NOMEM();
	ob->kind = strcmp(kind_name, "Service") ? OBJ_SLICE : OBJ_SERVICE;
	if (meta_only)
		rc = parse_meta(o, ob, &meta, err);
	else if (ob->kind == OBJ_SERVICE)
		rc = parse_service(o, ob, err);
	else
		rc = parse_slice(o, ob, err);
	if (rc) {
		obj_free(ob);
		return rc;
	}
	*out = ob;
	return 0;
}

static const char *kind_of(struct json_object *o)
{
	const char *k = NULL;

	return get_str(o, "kind", &k) ? NULL : k;
}

int k8s_store_apply(struct k8s_store *s, enum k8s_event ev, struct json_object *obj,
		    const char **err)
{
	struct obj *ob;
	int rc;

	*err = NULL;
	if (!json_object_is_type(obj, json_type_object))
		BAD("expected an object");
	rc = parse_obj(obj, kind_of(obj), ev == K8S_DELETED, &ob, err);
	if (rc || !ob)
		return rc;
	if (ev == K8S_DELETED) {
		del(s, ob->kind, ob->ns, ob->name);
		obj_free(ob);
		return 0;
	}
	if (reserve(s, 1)) {
		obj_free(ob);
		NOMEM();
	}
	put(s, ob);
	return 0;
}

/* ---- loading a List ---- */

static void offset_to_pos(const char *json, size_t off, size_t *line, size_t *col)
{
	size_t bol = 0;

	*line = 1;
	for (size_t i = 0; i < off; i++) {
		if (json[i] == '\n') {
			(*line)++;
			bol = i + 1;
		}
	}
	*col = off - bol + 1;
}

static struct json_object *parse_json(const char *json, size_t len, char *err, size_t errlen)
{
	struct json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
	enum json_tokener_error e;
	struct json_object *root;
	size_t line, col, off;
	const char *desc;

	if (len > INT_MAX) { /* json-c takes an int length */
		snprintf(err, errlen, "document larger than 2 GiB");
		json_tokener_free(tok);
		return NULL;
	}
	if (!tok) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* Strict: no trailing commas, NaN or text after the value. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, json, (int)len);
	e = json_tokener_get_error(tok);
	off = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (root && e == json_tokener_success)
		return root;
	json_object_put(root);
	desc = e == json_tokener_continue ? "unexpected end of input" : json_tokener_error_desc(e);
	offset_to_pos(json, off > len ? len : off, &line, &col);
	snprintf(err, errlen, "line %zu column %zu: %s", line, col, desc);
	return NULL;
}

/*
 * Is |root| a List ("List", "ServiceList", ...)? Then |*items| is its items
 * array (NULL when empty) and |kind| the kind its items default to: a typed
 * list's items carry no kind of their own.
 */
static int list_items(struct json_object *root, bool *is_list, struct json_object **items,
		      char *kind, size_t kindlen, char *err, size_t errlen)
{
	const char *k = kind_of(root);
	size_t n;

	*items = NULL;
	*is_list = false;
	kind[0] = '\0';
	if (!json_object_is_type(root, json_type_object)) {
		snprintf(err, errlen, "expected a JSON object (a List or a single object)");
		return -EINVAL;
	}
	n = k ? strlen(k) : 0;
	if (n < 4 || strcmp(k + n - 4, "List"))
		return 0;
	*is_list = true;
	if (get_typed(root, "items", json_type_array, items)) {
		snprintf(err, errlen, "%s items: expected an array", k);
		return -EINVAL;
	}
	if (n > 4 && n - 4 < kindlen)
		snprintf(kind, kindlen, "%.*s", (int)(n - 4), k);
	return 0;
}

static void describe(char *err, size_t errlen, struct json_object *item, long idx, const char *kind,
		     const char *what)
{
	struct json_object *meta = field(item, "metadata");
	const char *ns = NULL, *name = NULL;
	char where[32] = "";

	if (meta && json_object_is_type(meta, json_type_object)) {
		get_str(meta, "namespace", &ns);
		get_str(meta, "name", &name);
	}
	if (idx >= 0)
		snprintf(where, sizeof(where), "items[%ld] ", idx);
	snprintf(err, errlen, "%s%s %s/%s: %s", where, kind ? kind : "object", ns ? ns : "default",
		 name ? name : "?", what);
}

int k8s_store_load_json(struct k8s_store *s, const char *json, size_t len, char *err, size_t errlen)
{
	struct json_object *root, *items;
	struct obj **staged = NULL;
	char list_kind[64];
	size_t n, n_staged = 0;
	bool is_list;
	int rc = -EINVAL;

	root = parse_json(json, len, err, errlen);
	if (!root)
		return -EINVAL;
	if (list_items(root, &is_list, &items, list_kind, sizeof(list_kind), err, errlen))
		goto out;
	n = !is_list ? 1 : items ? json_object_array_length(items) : 0;
	staged = calloc(n ? n : 1, sizeof(*staged));
	if (!staged) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	/* Validate everything first: the store changes only if every item is good. */
	for (size_t i = 0; i < n; i++) {
		struct json_object *item = is_list ? json_object_array_get_idx(items, i) : root;
		const char *kind = kind_of(item), *what = NULL;
		struct obj *ob;

		if (!kind && list_kind[0])
			kind = list_kind;
		rc = parse_obj(item, kind, false, &ob, &what);
		if (rc) {
			describe(err, errlen, item, is_list ? (long)i : -1, kind, what);
			goto out;
		}
		if (ob)
			staged[n_staged++] = ob;
	}
	if (reserve(s, n_staged)) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_staged; i++)
		put(s, staged[i]);
	n_staged = 0;
	rc = 0;
out:
	for (size_t i = 0; i < n_staged; i++)
		obj_free(staged[i]);
	free(staged);
	json_object_put(root);
	return rc;
}

/* ---- building the desired state ---- */

static int cmp_slice(const void *a, const void *b)
{
	const struct obj *x = *(const struct obj *const *)a, *y = *(const struct obj *const *)b;
	int c = strcmp(x->ns, y->ns);

	if (!c)
		c = strcmp(x->slice.service, y->slice.service);
	return c ? c : strcmp(x->name, y->name);
}

/* Endpoints of one service port before deduplication. */
struct cand {
	struct state_endpoint ep;
	int rank; /* 0 usable, 1 fallback, 2 neither: the best copy of a duplicate wins */
	int seq;  /* then the first in slice-name order */
};

struct scratch {
	struct cand *c; /* owned */
	int n, cap;
	struct state_endpoint *eps; /* owned */
	int eps_cap;
};

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int c = memcmp(&x->ep.ip, &y->ep.ip, sizeof(x->ep.ip));

	if (!c)
		c = (int)x->ep.port - (int)y->ep.port;
	if (!c)
		c = x->rank - y->rank;
	return c ? c : x->seq - y->seq;
}

static int push_cand(struct scratch *sc, const struct state_endpoint *ep, uint16_t port)
{
	struct cand *c;

	if (sc->n == sc->cap) {
		int cap = sc->cap ? sc->cap * 2 : 64;

		c = realloc(sc->c, (size_t)cap * sizeof(*c));
		if (!c)
			return -ENOMEM;
		sc->c = c;
		sc->cap = cap;
	}
	c = &sc->c[sc->n];
	c->ep = *ep;
	c->ep.port = port;
	c->rank = state_endpoint_usable(ep) ? 0 : state_endpoint_fallback(ep) ? 1 : 2;
	c->seq = sc->n++;
	return 0;
}

/* Kube-proxy's mapping: the slice port whose name equals the service port's. */
static uint16_t slice_port_for(const struct slice *sl, const char *port_name)
{
	for (int i = 0; i < sl->n_ports; i++) {
		if (sl->ports[i].tcp && sl->ports[i].port && !strcmp(sl->ports[i].name, port_name))
			return sl->ports[i].port;
	}
	return 0;
}

/* Fill svc->eps from the slices [first, last) of its service, deduplicated. */
static int gather_endpoints(struct scratch *sc, struct obj *const *first, struct obj *const *last,
			    struct state_service *svc)
{
	sc->n = 0;
	for (struct obj *const *p = first; p < last; p++) {
		const struct slice *sl = &(*p)->slice;
		uint16_t port = slice_port_for(sl, svc->port_name);

		for (int i = 0; port && i < sl->n_eps; i++) {
			if (push_cand(sc, &sl->eps[i], port))
				return -ENOMEM;
		}
	}
	if (sc->n == 0) {
		svc->eps = NULL;
		svc->n_eps = 0;
		return 0;
	}
	qsort(sc->c, (size_t)sc->n, sizeof(*sc->c), cmp_cand);
	if (sc->n > sc->eps_cap) {
		struct state_endpoint *e = realloc(sc->eps, (size_t)sc->n * sizeof(*e));

		if (!e)
			return -ENOMEM;
		sc->eps = e;
		sc->eps_cap = sc->n;
	}
	svc->eps = sc->eps;
	svc->n_eps = 0;
	for (int i = 0; i < sc->n; i++) {
		const struct state_endpoint *prev = svc->n_eps ? &sc->eps[svc->n_eps - 1] : NULL;

		if (prev && !memcmp(&prev->ip, &sc->c[i].ep.ip, sizeof(prev->ip)) &&
		    prev->port == sc->c[i].ep.port)
			continue;
		sc->eps[svc->n_eps++] = sc->c[i].ep;
	}
	return 0;
}

/* First slice of (ns, service) in the sorted array, and one past its last. */
static void slice_range(struct obj **slices, size_t n, const struct obj *svc, struct obj ***first,
			struct obj ***last)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(slices[mid]->ns, svc->ns);

		if (!c)
			c = strcmp(slices[mid]->slice.service, svc->name);
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = slices + lo;
	while (lo < n && !strcmp(slices[lo]->ns, svc->ns) &&
	       !strcmp(slices[lo]->slice.service, svc->name))
		lo++;
	*last = slices + lo;
}

static int add_service_ports(struct state *st, struct scratch *sc, const struct obj *o,
			     struct obj **slices, size_t n_slices)
{
	struct obj **first, **last;

	slice_range(slices, n_slices, o, &first, &last);
	for (int i = 0; i < o->svc.n_ports; i++) {
		const struct svc_port *sp = &o->svc.ports[i];
		struct state_service svc = {
		    .port = sp->port,
		    .n_vips = o->svc.n_vips,
		    .lb = o->svc.lb,
		    .upstream_tls = o->svc.upstream_tls,
		    .max_inflight_ep = o->svc.max_inflight_ep,
		    .max_inflight = o->svc.max_inflight,
		    .max_pending = o->svc.max_pending,
		    .slow_start_ms = o->svc.slow_start_ms,
		    .health_check = o->svc.health_check,
		    .health_interval_ms = o->svc.health_interval_ms,
		};

		if (!sp->opted)
			continue;
		/* Names were length-checked when the objects were applied. */
		memcpy(svc.ns, o->ns, sizeof(svc.ns));
		memcpy(svc.name, o->name, sizeof(svc.name));
		memcpy(svc.port_name, sp->name, sizeof(svc.port_name));
		memcpy(svc.vips, o->svc.vips, sizeof(svc.vips));
		memcpy(svc.health_service, o->svc.health_service, sizeof(svc.health_service));
		if (gather_endpoints(sc, first, last, &svc))
			return -ENOMEM;
		for (int j = 0; j < svc.n_eps; j++)
			svc.eps[j].weight = pod_weight(&o->svc, svc.eps[j].pod);
		if (state_add_service(st, &svc))
			return -ENOMEM;
	}
	return 0;
}

static struct obj **collect_slices(const struct k8s_store *s, size_t *n)
{
	struct obj **v = malloc((s->n_objs ? s->n_objs : 1) * sizeof(*v));

	*n = 0;
	if (!v)
		return NULL;
	for (size_t b = 0; b < s->n_buckets; b++) {
		for (struct obj *o = s->buckets[b]; o; o = o->next) {
			if (o->kind == OBJ_SLICE && o->slice.ip && o->slice.service[0])
				v[(*n)++] = o;
		}
	}
	qsort(v, *n, sizeof(*v), cmp_slice);
	return v;
}

struct state *k8s_store_build(const struct k8s_store *s)
{
	struct scratch sc = {0};
	struct state *st = state_new();
	struct obj **slices = NULL;
	size_t n_slices;
	int rc = -ENOMEM;

	if (!st || !(slices = collect_slices(s, &n_slices)))
		goto out;
	for (size_t b = 0; b < s->n_buckets; b++) {
		for (struct obj *o = s->buckets[b]; o; o = o->next) {
			if (o->kind != OBJ_SERVICE || !o->svc.routable)
				continue;
			if (add_service_ports(st, &sc, o, slices, n_slices))
				goto out;
		}
	}
	rc = state_finish(st);
out:
	free(slices);
	free(sc.c);
	free(sc.eps);
	if (rc) {
		state_free(st);
		return NULL;
	}
	return st;
}
