/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to discovery/: the object store's parsed objects (a Service or an
 * EndpointSlice reduced to the fields h2split uses), the JSON field access
 * the parsers share, and the parser of each kind. k8s_objects.h stays the
 * public interface; k8s_store.c owns the table, k8s_service.c and
 * k8s_endpointslice.c parse, k8s_state_build.c joins them into a state.
 */
#ifndef H2SPLIT_K8S_OBJECTS_INT_H
#define H2SPLIT_K8S_OBJECTS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/state.h"
#include "discovery/k8s_objects.h"

#define OBJ_NAME_MAX 254 /* a DNS subdomain (253) and its NUL: EndpointSlice names */

enum obj_kind { OBJ_SERVICE, OBJ_SLICE, OBJ_NODE };

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
	struct rpc_policy retry, hedge; /* as state_service */
	int32_t per_try_timeout_ms;
	struct pod_weight *weights; /* owned, sorted by pod, unique */
	int n_weights;
	struct svc_port *ports; /* owned */
	int n_ports;
	uint8_t topology; /* enum state_topology */
	bool local_only;  /* internalTrafficPolicy: Local */
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
	uint64_t rev;	  /* the store's revision when this object was put */
	struct obj *next; /* hash chain, owned by the store */
	union {
		struct svc svc;
		struct slice slice;
		struct state_node node; /* a Node: its name (cut) and zone label */
	};
};

struct k8s_store {
	struct obj **buckets; /* owned, with every chain; n_buckets is a power of 2 */
	size_t n_buckets;
	size_t n_objs;
	uint64_t rev; /* counts puts; never reset, so an object put later has a higher one */
};

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

/* ---- JSON field access (k8s_store.c): absent and null read as "unset", a wrong type is an error
 * ---- */

struct json_object *k8s_obj_field(struct json_object *o, const char *key);
int k8s_obj_get_typed(struct json_object *o, const char *key, enum json_type t,
		      struct json_object **out);
int k8s_obj_get_str(struct json_object *o, const char *key, const char **out);
/* Tri-state bool: -1 unset, 0 false, 1 true. */
int k8s_obj_get_bool(struct json_object *o, const char *key, int *out);
/* A port number 1-65535; 0 when unset. */
int k8s_obj_get_port(struct json_object *o, const char *key, uint16_t *out);
/* Copy |src| into |dst| of |size| bytes: -EINVAL if it does not fit. */
int k8s_obj_copy_name(char *dst, size_t size, const char *src);
/* metadata.name and .namespace ("default" when empty) of |o| into |ob|, and
 * its hash; |*meta| is the metadata object. */
int k8s_obj_parse_meta(struct json_object *o, struct obj *ob, struct json_object **meta,
		       const char **err);

/* ---- the parsers: fill a zeroed |ob| of their kind; 0 or -EINVAL/-ENOMEM with |*err| ---- */

int k8s_service_parse(struct json_object *o, struct obj *ob, const char **err);
int k8s_slice_parse(struct json_object *o, struct obj *ob, const char **err);
int k8s_node_parse(struct json_object *o, struct obj *ob, const char **err);
/* The weight h2split.io/weights gives |pod|, 0 when it gives none. */
uint16_t k8s_service_weight(const struct svc *svc, const char *pod);

#endif
