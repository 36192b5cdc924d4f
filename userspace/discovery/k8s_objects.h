/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kubernetes Service and EndpointSlice objects (discovery.k8s.io/v1) as the
 * API and `kubectl get svc,endpointslices -o json` print them, turned into the
 * desired state (state.h). One object store serves both discovery sources:
 * the file source fills it from a List, the Kubernetes source from list+watch
 * events, and both build their state with k8s_store_build().
 * Opt-in per Service port: appProtocol kubernetes.io/h2c or grpc, or the
 * annotation h2split.io/enabled: "true"; opt-out per namespace/pod is the
 * Kubernetes source's business (exclusion map), not the store's.
 */
#ifndef H2SPLIT_K8S_OBJECTS_H
#define H2SPLIT_K8S_OBJECTS_H

#include <stddef.h>

#include "base/state.h"

struct k8s_store;
struct json_object;

enum k8s_event { K8S_ADDED, K8S_MODIFIED, K8S_DELETED };

struct k8s_store *k8s_store_new(void);
void k8s_store_free(struct k8s_store *s);
/* Forget every object (a relist starts from scratch). */
void k8s_store_clear(struct k8s_store *s);

/* Apply one Service or EndpointSlice (other kinds are ignored and return 0;
 * an object without "kind" is malformed). |obj| stays the caller's: the store
 * keeps only the fields it uses. K8S_DELETED reads only metadata. 0, or
 * -EINVAL (-ENOMEM) with |*err| set to a static description such as
 * "spec.ports[].port: expected an integer 1-65535"; the store is then unchanged. */
int k8s_store_apply(struct k8s_store *s, enum k8s_event ev, struct json_object *obj,
		    const char **err);

/* Parse |len| bytes of JSON holding a List (or a single object) and apply
 * every item to |s| as K8S_ADDED; items of a typed list ("ServiceList", as the
 * API server returns them) without a kind take the list's. All or nothing: on
 * error returns -EINVAL (-ENOMEM), |s| is unchanged and |err| says
 * "line L column C: reason" for bad JSON (1-based, columns in bytes) or
 * "items[I] Kind ns/name: problem" for a bad object. */
int k8s_store_load_json(struct k8s_store *s, const char *json, size_t len, char *err,
			size_t errlen);

/* Build the desired state from everything in the store: opted-in TCP ports of
 * ClusterIP/NodePort/LoadBalancer services that have a cluster IP, each with
 * the endpoints of the EndpointSlices labelled kubernetes.io/service-name in
 * its namespace, mapped by port name as kube-proxy does, deduplicated by
 * address and port. Finished (state_finish()). NULL on ENOMEM. */
struct state *k8s_store_build(const struct k8s_store *s);

/* What k8s_store_build_cached() reuses: the endpoints of each service port as
 * last built, with the revisions of the Service and EndpointSlices they came
 * from. Holds references to state endpoints (state.h). */
struct k8s_build_cache;
struct k8s_build_cache *k8s_build_cache_new(void);
void k8s_build_cache_free(struct k8s_build_cache *c);
/* As k8s_store_build(), but a service port whose Service and EndpointSlices
 * are those of |c|'s last commit shares its endpoints (state.h) instead of
 * gathering them again. Then, once the state's endpoints are final (after
 * locality_resolve()), k8s_build_cache_commit(|c|, state) keeps them for the
 * next build; without a commit the next build reuses nothing. */
struct state *k8s_store_build_cached(const struct k8s_store *s, struct k8s_build_cache *c);
void k8s_build_cache_commit(struct k8s_build_cache *c, const struct state *st);
/* Service ports the last build took from |c|, and those it gathered afresh. */
void k8s_build_cache_counts(const struct k8s_build_cache *c, int *reused, int *built);

#endif
