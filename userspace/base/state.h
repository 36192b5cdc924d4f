/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The desired state every discovery source produces: opted-in services
 * (VIPs, port, options) and their endpoints. Plain data, built once, then
 * read-only: the registry publishes it to workers as an immutable, refcounted
 * snapshot, so nothing here is ever mutated after state_finish().
 */
#ifndef H2SPLIT_STATE_H
#define H2SPLIT_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <netinet/in.h>

#include "base/rpc_policy.h"

#define STATE_NAME_MAX 64
#define STATE_HEALTH_SERVICE_MAX 128 /* h2split.io/health-check-service */
#define STATE_MAX_VIPS 2 /* one IPv4 and one IPv6 ClusterIP (dual-stack) */

/* An IP address, IPv4 stored IPv4-mapped like the BPF maps do. */
struct h2s_ip {
	uint8_t b[16];
};

enum lb_policy {
	LB_DEFAULT = 0, /* the daemon-wide --lb-policy */
	LB_ROUND_ROBIN,
	LB_LEAST_REQUEST,
	LB_EWMA, /* peak-EWMA latency x in flight, P2C */
};

/* Where an endpoint runs, seen from this node (base/locality.c). */
enum state_locality {
	STATE_LOC_UNKNOWN = 0, /* no nodeName nor zone to compare, or this node's unknown */
	STATE_LOC_OTHER,       /* another node, another zone */
	STATE_LOC_ZONE,	       /* another node of this node's zone */
	STATE_LOC_NODE,	       /* this node */
};

/* What a Service asks of locality: spec.trafficDistribution, overridden by
 * the annotation h2split.io/topology (off | zone | node). */
enum state_topology {
	STATE_TOPO_DEFAULT = 0, /* neither said: hints alone decide, as for kube-proxy */
	STATE_TOPO_OFF,		/* h2split.io/topology: off (hints ignored too) */
	STATE_TOPO_ZONE,	/* PreferClose, PreferSameZone, or "zone" */
	STATE_TOPO_NODE,	/* PreferSameNode, or "node" */
};

/* An endpoint's routing tier (locality_resolve): a pick prefers tier NODE,
 * then ZONE, then the rest (balancer.c). */
enum state_tier {
	STATE_TIER_NODE = 0,
	STATE_TIER_ZONE,
	STATE_TIER_REST,
};

#define STATE_HINTS_MAX 128 /* hints.forZones / forNodes names, comma-joined */

struct state_endpoint {
	struct h2s_ip ip;
	uint16_t port; /* host byte order: the resolved target port */
	bool ready;
	bool serving;
	bool terminating;
	uint16_t weight;	  /* h2split.io/weights for its pod; 0: unset (1) */
	char pod[STATE_NAME_MAX]; /* targetRef name (cut to 63 bytes), "" when unknown */
	char node[STATE_NAME_MAX]; /* nodeName (cut to 63 bytes), "" when unknown */
	char zone[STATE_NAME_MAX]; /* zone, "" when unknown */
	/* hints.forZones / hints.forNodes names, each followed by ','; "" none
	 * (names that do not fit are dropped: the endpoint then has no hints). */
	char for_zones[STATE_HINTS_MAX], for_nodes[STATE_HINTS_MAX];
	/* Set by locality_resolve() from the above and this node. */
	uint8_t locality; /* enum state_locality */
	uint8_t tier;	  /* enum state_tier */
};

/* A Node object the source saw (Kubernetes: this node only). */
struct state_node {
	char name[STATE_NAME_MAX]; /* cut to 63 bytes */
	char zone[STATE_NAME_MAX]; /* label topology.kubernetes.io/zone, "" none */
};

struct state_service {
	uint32_t id; /* stable for (namespace, name, port name) across reloads */
	char ns[STATE_NAME_MAX];
	char name[STATE_NAME_MAX];
	char port_name[STATE_NAME_MAX]; /* "" for an unnamed single port */
	uint16_t port;                  /* the ClusterIP port, host byte order */
	struct h2s_ip vips[STATE_MAX_VIPS];
	int n_vips;
	enum lb_policy lb;
	bool upstream_tls; /* h2split.io/upstream-tls: "true" */
	/* Circuit breaking (h2split.io/max-*): 0: the daemon's flag; -1: none. */
	int32_t max_inflight_ep, max_inflight, max_pending;
	int32_t slow_start_ms; /* h2split.io/slow-start: 0: the daemon's flag; -1: off */
	bool health_check;     /* h2split.io/health-check: "grpc" */
	int32_t health_interval_ms; /* h2split.io/health-check-interval; 0: the default */
	char health_service[STATE_HEALTH_SERVICE_MAX]; /* h2split.io/health-check-service */
	/* h2split.io/retry-policy, h2split.io/hedging-policy (kind NONE: none). */
	struct rpc_policy retry, hedge;
	int32_t per_try_timeout_ms; /* h2split.io/per-try-timeout; 0: none */
	uint8_t topology;  /* enum state_topology, as the Service says */
	bool local_only;   /* internalTrafficPolicy: Local: this node's endpoints only */
	/* Set by locality_resolve(): the tiers in force (STATE_TOPO_OFF: none,
	 * every endpoint is STATE_TIER_REST, routing as without locality). */
	uint8_t topology_in_force;
	struct state_endpoint *eps; /* a reference: shared by states while unchanged */
	int n_eps;
	/* 0: desired (redirected). Else the loop_now_ms() at which it left the
	 * desired state: kept, with its id and last known endpoints, only so
	 * that connections already redirected to it can finish their streams
	 * (state_carry_retired). A retired service has no VIP lookup. */
	uint64_t retired_ms;
};

struct state_index;

#define STATE_VERSION_MAX 80
/* "namespace/kind/name" of a caller's workload (k8s_pods.h: k8s_workload). */
#define STATE_CALLER_MAX 192

/* A pod on this node that may call Services: the cgroup its processes
 * connect from, and who it is. Several cgroups (the pod's, its containers')
 * may name one pod. */
struct state_caller {
	uint64_t cgroup_id;
	char ns[STATE_NAME_MAX];
	char workload[STATE_CALLER_MAX]; /* "kind/name": "deployment/web", "pod/debug" */
};

struct state {
	struct state_service *svcs; /* owned, sorted by (ns, name, port_name) */
	int n_svcs;		    /* retired ones included */
	int n_alloc;
	int n_retired;
	struct state_index *idx; /* owned, lookup tables built by state_finish() */
	/* What the source says this state was built from ("sha256:<hex>" of
	 * the services file, the Kubernetes resourceVersion); "" unknown. */
	char version[STATE_VERSION_MAX];
	struct state_node *nodes; /* owned: Node objects the source saw */
	int n_nodes;
	/* Set by locality_resolve(): this node's name and zone ("" unknown). */
	char node_name[STATE_NAME_MAX];
	char node_zone[STATE_NAME_MAX];
	bool locality_resolved;	      /* for node_name and node_zone, every service */
	struct state_caller *callers; /* owned, sorted by cgroup_id, unique */
	int n_callers;
};

struct state *state_new(void);
void state_free(struct state *st);
/* Append a service (deep copy of |svc|, endpoints included). 0 or -ENOMEM. */
int state_add_service(struct state *st, const struct state_service *svc);
/* Append a service whose endpoints (|svc->eps|) are those of a service of a
 * finished state, or held by state_eps_ref(): shared (a reference), not
 * copied. 0 or -ENOMEM. */
int state_add_service_shared(struct state *st, const struct state_service *svc);
/* A reference to the endpoints of a service of a state (for a source's cache
 * of unchanged services), and its release. NULL is a no-op. Endpoints that
 * are shared are never written. */
void state_eps_ref(struct state_endpoint *eps);
void state_eps_unref(struct state_endpoint *eps);
/* Make |svc|'s endpoints its own (a copy when shared), to write them before
 * |svc|'s state is published. The endpoints, or NULL on ENOMEM (or none). */
struct state_endpoint *state_service_eps_own(struct state_service *svc);
/* Record Node |n| (a copy). 0 or -ENOMEM. */
int state_add_node(struct state *st, const struct state_node *n);
/* Sort services (and each one's endpoints by address, port), assign ids
 * (FNV-1a of "ns/name:port_name", never 0, collisions probed upwards in sorted
 * order; retired services keep theirs and take no part) and build the lookup
 * tables. 0 or -ENOMEM (the state is then still sorted and freeable, but the
 * lookups find nothing). */
int state_finish(struct state *st);
/* After state_finish(|st|): add, as retired, every service of |prev| whose id
 * |st| lacks and which either was desired in |prev| (it retires at |now_ms|)
 * or retired less than |keep_ms| before |now_ms|. An id that a desired
 * service of |st| holds is never carried. Finishes |st| again. The number
 * carried, or -ENOMEM (|st| is then as state_finish() left it). */
int state_carry_retired(struct state *st, const struct state *prev, uint64_t now_ms,
			uint64_t keep_ms);
/* The earliest retired_ms in |st|, or 0 when nothing is retired. */
uint64_t state_oldest_retired(const struct state *st);
/* Lookups, valid after state_finish(), O(log n). Find the desired service
 * with |vip|:|port| (host byte order), or NULL; should two claim the same
 * VIP:port, the first in sorted order. state_find_id() finds retired ones too. */
const struct state_service *state_find_vip(const struct state *st, const struct h2s_ip *vip,
					   uint16_t port);
const struct state_service *state_find_id(const struct state *st, uint32_t id);
/* Replace |st|'s callers with |c| (|n| entries, ownership taken; NULL when
 * |n| is 0): sorted; of a cgroup id listed twice one is kept, id 0 none. */
void state_set_callers(struct state *st, struct state_caller *c, int n);
/* Give |dst| a copy of |src|'s callers. 0 or -ENOMEM (|dst| unchanged). */
int state_copy_callers(struct state *dst, const struct state *src);
/* The caller connecting from cgroup |cgroup_id|, or NULL. O(log n). */
const struct state_caller *state_find_caller(const struct state *st, uint64_t cgroup_id);
/* True when an endpoint may take new streams: ready and not terminating. */
bool state_endpoint_usable(const struct state_endpoint *ep);
/* True for a terminating endpoint that still serves: kube-proxy sends new
 * connections to these only when a service has no usable endpoint at all. */
bool state_endpoint_fallback(const struct state_endpoint *ep);

/* Address helpers. */
bool h2s_ip_is_v4(const struct h2s_ip *ip);
void h2s_ip_from_v4(struct h2s_ip *ip, struct in_addr a);
/* Parse "10.0.0.1" or "fd00::1"; 0 or -EINVAL. */
int h2s_ip_parse(struct h2s_ip *ip, const char *s);
/* Format into |buf| (at least INET6_ADDRSTRLEN); IPv4-mapped prints dotted. */
const char *h2s_ip_str(const struct h2s_ip *ip, char *buf, size_t len);

#endif
