/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opt-outs from the Kubernetes source: this node's pods annotated
 * h2split.io/enabled: "false", pods with an Istio or Linkerd proxy beside the
 * app (unless annotated "true"), and every pod of a namespace labelled
 * h2split.io/enabled: "false". Keeps
 * just what that needs (pod uid, QoS class, namespace; opted-out namespace
 * names) and finds a pod's cgroup v2 directory the way the kubelet lays it
 * out with either cgroup driver, so the daemon can exclude it in BPF.
 */
#ifndef H2SPLIT_K8S_PODS_H
#define H2SPLIT_K8S_PODS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "discovery/k8s_objects.h"

struct json_object;

enum k8s_qos { K8S_QOS_GUARANTEED = 0, K8S_QOS_BURSTABLE, K8S_QOS_BESTEFFORT, K8S_QOS_UNKNOWN };
enum k8s_cgroup_driver { K8S_CGROUP_SYSTEMD = 0, K8S_CGROUP_CGROUPFS };

/* A pod's cgroup directory relative to the cgroup2 root, as the kubelet
 * names it (|qos| known):
 *   systemd:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, '-' -> '_'>.slice
 *             (Guaranteed pods sit directly in kubepods.slice)
 *   cgroupfs: kubepods/burstable/pod<uid>  (Guaranteed: kubepods/pod<uid>)
 * -EINVAL when |uid| is not a plain uid (hex and '-' only), -ENAMETOOLONG. */
int k8s_pod_cgroup_path(enum k8s_cgroup_driver drv, enum k8s_qos qos, const char *uid, char *buf,
			size_t len);
/* The existing cgroup directory of pod |uid| under |root|: the kubelet's
 * layouts for |qos| (every class when K8S_QOS_UNKNOWN) with both drivers, then
 * a short walk for a "pod<uid>" directory anywhere (a non-default
 * --cgroup-root, kind's nested kubelet). -ENOENT when none exists (yet). */
int k8s_pod_cgroup_find(const char *root, enum k8s_qos qos, const char *uid, char *buf, size_t len);
/* "Guaranteed" | "Burstable" | "BestEffort" (status.qosClass); else UNKNOWN. */
enum k8s_qos k8s_qos_parse(const char *s);

struct k8s_pods;

/* One opted-out pod, as k8s_pods_foreach_excluded() reports it. */
struct k8s_pod_ref {
	const char *ns, *name;
	const char *cgroup_uid; /* the uid the kubelet names the cgroup after */
	enum k8s_qos qos;
};

typedef int k8s_pod_cb(void *arg, const struct k8s_pod_ref *pod);

struct k8s_pods *k8s_pods_new(void);
void k8s_pods_free(struct k8s_pods *p);
/* Forget all Pods (|pods|) or all Namespaces (!|pods|): a relist follows. */
void k8s_pods_clear(struct k8s_pods *p, bool pods);
/* Apply one Pod or Namespace (other kinds: ignored, 0). Finished pods
 * (Succeeded, Failed) count as deleted. 0, -EINVAL with |*err| set when the
 * object lacks what is needed, or -ENOMEM. */
int k8s_pods_apply(struct k8s_pods *p, enum k8s_event ev, struct json_object *obj,
		   const char **err);
/* Call |cb| for every pod that is opted out, by its own annotation or its
 * namespace's label; stops at and returns the first non-zero result. */
int k8s_pods_foreach_excluded(const struct k8s_pods *p, k8s_pod_cb *cb, void *arg);
/* The callers (state.h) this node's pods make: each pod whose cgroup
 * directory exists under |root| (k8s_pod_cgroup_find()), with that cgroup's
 * id and those of the directories right below it (containers), through
 * |id_of|. |*out| is malloc'd (NULL when |*n_out| is 0). 0 or -ENOMEM. */
int k8s_pods_callers(const struct k8s_pods *p, const char *root,
		     int (*id_of)(const char *dir, uint64_t *id), struct state_caller **out,
		     int *n_out);
/* A pod's workload as "kind/name" from its controller owner (|owner_kind|,
 * |owner_name|; NULL: none) and its pod-template-hash label (may be NULL): a
 * ReplicaSet named <name>-<hash> is "deployment/<name>", other owners
 * "<kind lowercased>/<owner name>" (statefulset, daemonset, job, replicaset),
 * no owner "pod/<pod_name>". 0 or -ENAMETOOLONG. */
int k8s_workload(const char *owner_kind, const char *owner_name, const char *template_hash,
		 const char *pod_name, char *buf, size_t len);
/* Numbers for logs: pods tracked, opted-out namespaces. */
void k8s_pods_counts(const struct k8s_pods *p, int *n_pods, int *n_ns_out);

#endif
