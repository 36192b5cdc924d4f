// SPDX-License-Identifier: Apache-2.0
/*
 * Pod and namespace opt-outs (see k8s_pods.h). A node runs at most a few
 * hundred pods and few namespaces opt out, so plain arrays with linear search
 * are enough. Invariant: a uid that reaches a path passed the hex-and-dash
 * check, so an API object can never steer a path outside the cgroup tree.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "discovery/k8s_pods.h"

#define UID_MAX 64
#define NAME_MAX_K8S 254
#define WALK_DEPTH 4

struct pod {
	char uid[UID_MAX];	  /* metadata.uid: the key */
	char cgroup_uid[UID_MAX]; /* kubelet's: the mirror pod's config hash, else uid */
	char ns[NAME_MAX_K8S];
	char name[NAME_MAX_K8S];
	char workload[STATE_CALLER_MAX]; /* k8s_workload() */
	enum k8s_qos qos;
	bool opted_out; /* h2split.io/enabled: "false", or a mesh proxy beside it */
};

struct k8s_pods {
	struct pod *pods; /* owned array */
	int n_pods, cap_pods;
	char (*ns_out)[NAME_MAX_K8S]; /* owned: namespaces labelled h2split.io/enabled: "false" */
	int n_ns, cap_ns;
};

static bool plain_uid(const char *uid)
{
	size_t n = strlen(uid);

	if (n == 0 || n >= UID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = uid[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
		      c == '-'))
			return false;
	}
	return true;
}

enum k8s_qos k8s_qos_parse(const char *s)
{
	if (!s)
		return K8S_QOS_UNKNOWN;
	if (!strcmp(s, "Guaranteed"))
		return K8S_QOS_GUARANTEED;
	if (!strcmp(s, "Burstable"))
		return K8S_QOS_BURSTABLE;
	if (!strcmp(s, "BestEffort"))
		return K8S_QOS_BESTEFFORT;
	return K8S_QOS_UNKNOWN;
}

int k8s_pod_cgroup_path(enum k8s_cgroup_driver drv, enum k8s_qos qos, const char *uid, char *buf,
			size_t len)
{
	static const char *const qos_name[] = {"", "burstable", "besteffort"};
	char u[UID_MAX];
	int n;

	if (!plain_uid(uid) || qos > K8S_QOS_BESTEFFORT)
		return -EINVAL;
	if (drv == K8S_CGROUP_CGROUPFS) {
		n = qos == K8S_QOS_GUARANTEED
			? snprintf(buf, len, "kubepods/pod%s", uid)
			: snprintf(buf, len, "kubepods/%s/pod%s", qos_name[qos], uid);
		return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
	}
	/* systemd escapes '-' in unit names; the kubelet uses '_' instead. */
	for (size_t i = 0; i <= strlen(uid); i++)
		u[i] = uid[i] == '-' ? '_' : uid[i];
	if (qos == K8S_QOS_GUARANTEED)
		n = snprintf(buf, len, "kubepods.slice/kubepods-pod%s.slice", u);
	else
		n = snprintf(buf, len, "kubepods.slice/kubepods-%s.slice/kubepods-%s-pod%s.slice",
			     qos_name[qos], qos_name[qos], u);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Does directory name |d| name the cgroup of pod |uid| (|u|: '-' as '_')? */
static bool pod_dir_name(const char *d, const char *uid, const char *u)
{
	size_t ul = strlen(uid), dl;
	const char *p = d;

	/* "pod" at the start or after a '-' ("kubepods" itself does not count). */
	while ((p = strstr(p, "pod")) && p != d && p[-1] != '-')
		p += 3;
	if (!p)
		return false;
	p += 3;
	dl = strlen(p);
	if (dl == ul && !strcmp(p, uid))
		return true; /* cgroupfs: pod<uid> */
	return dl == ul + 6 && !strncmp(p, u, ul) && !strcmp(p + ul, ".slice");
}

static int walk(const char *dir, int depth, const char *uid, const char *u, char *buf, size_t len)
{
	struct dirent *de;
	DIR *d;
	int rc = -ENOENT;

	if (depth > WALK_DEPTH || !(d = opendir(dir)))
		return -ENOENT;
	while (rc == -ENOENT && (de = readdir(d))) {
		char path[4096];
		int n;

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(path))
			continue;
		if (pod_dir_name(de->d_name, uid, u)) {
			rc = (size_t)n < len ? 0 : -ENAMETOOLONG;
			if (!rc)
				memcpy(buf, path, (size_t)n + 1);
		} else {
			rc = walk(path, depth + 1, uid, u, buf, len);
		}
	}
	closedir(d);
	return rc;
}

int k8s_pod_cgroup_find(const char *root, enum k8s_qos qos, const char *uid, char *buf, size_t len)
{
	char rel[512], u[UID_MAX];

	if (!plain_uid(uid))
		return -EINVAL;
	for (int q = K8S_QOS_GUARANTEED; q <= K8S_QOS_BESTEFFORT; q++) {
		if (qos != K8S_QOS_UNKNOWN && q != (int)qos)
			continue;
		for (int drv = K8S_CGROUP_SYSTEMD; drv <= K8S_CGROUP_CGROUPFS; drv++) {
			int n;

			if (k8s_pod_cgroup_path(drv, q, uid, rel, sizeof(rel)))
				continue;
			n = snprintf(buf, len, "%s/%s", root, rel);
			if (n > 0 && (size_t)n < len && is_dir(buf))
				return 0;
		}
	}
	for (size_t i = 0; i <= strlen(uid); i++)
		u[i] = uid[i] == '-' ? '_' : uid[i];
	return walk(root, 0, uid, u, buf, len);
}

/* ---- the store ---- */

struct k8s_pods *k8s_pods_new(void)
{
	return calloc(1, sizeof(struct k8s_pods));
}

void k8s_pods_free(struct k8s_pods *p)
{
	if (!p)
		return;
	free(p->pods);
	free(p->ns_out);
	free(p);
}

void k8s_pods_clear(struct k8s_pods *p, bool pods)
{
	if (pods)
		p->n_pods = 0;
	else
		p->n_ns = 0;
}

static struct json_object *get(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key);

	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static bool flag_is(struct json_object *map, const char *want)
{
	const char *v = get_str(map, "h2split.io/enabled");

	return v && !strcmp(v, want);
}

/* A service-mesh proxy beside the app: Istio's and Linkerd's injectors
 * annotate the pods they inject, and their proxies have well-known container
 * names (native sidecars are init containers). Such a proxy already balances
 * per request, and it re-dials the address connect4 rewrote from its own
 * socket, so h2splitd would get a connection with no original destination. */
static bool has_mesh_proxy(struct json_object *spec, struct json_object *ann)
{
	static const char *const lists[] = {"containers", "initContainers"};

	if (get(ann, "sidecar.istio.io/status") || get(ann, "linkerd.io/proxy-version"))
		return true;
	for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		struct json_object *cs = get(spec, lists[l]);

		for (size_t i = 0; cs && json_object_is_type(cs, json_type_array) &&
				   i < json_object_array_length(cs);
		     i++) {
			const char *name = get_str(json_object_array_get_idx(cs, i), "name");

			if (name && (!strcmp(name, "istio-proxy") || !strcmp(name, "linkerd-proxy")))
				return true;
		}
	}
	return false;
}

static int copy(char *dst, size_t size, const char *src)
{
	if (!src || strlen(src) >= size)
		return -EINVAL;
	strcpy(dst, src);
	return 0;
}

static int find_pod(const struct k8s_pods *p, const char *uid)
{
	for (int i = 0; i < p->n_pods; i++)
		if (!strcmp(p->pods[i].uid, uid))
			return i;
	return -1;
}

static int find_ns(const struct k8s_pods *p, const char *name)
{
	for (int i = 0; i < p->n_ns; i++)
		if (!strcmp(p->ns_out[i], name))
			return i;
	return -1;
}

static int grow(void **arr, int *cap, int n, size_t elem)
{
	void *na;
	int nc;

	if (n < *cap)
		return 0;
	nc = *cap ? *cap * 2 : 16;
	na = realloc(*arr, (size_t)nc * elem);
	if (!na)
		return -ENOMEM;
	*arr = na;
	*cap = nc;
	return 0;
}

static int apply_ns(struct k8s_pods *p, enum k8s_event ev, struct json_object *meta,
		    const char **err)
{
	const char *name = get_str(meta, "name");
	int i;

	if (!name || strlen(name) >= NAME_MAX_K8S) {
		*err = "Namespace metadata.name: expected a name";
		return -EINVAL;
	}
	i = find_ns(p, name);
	if (ev != K8S_DELETED && flag_is(get(meta, "labels"), "false")) {
		if (i >= 0)
			return 0;
		if (grow((void **)&p->ns_out, &p->cap_ns, p->n_ns, sizeof(*p->ns_out)))
			return -ENOMEM;
		strcpy(p->ns_out[p->n_ns++], name);
	} else if (i >= 0) {
		memcpy(p->ns_out[i], p->ns_out[--p->n_ns], sizeof(p->ns_out[i]));
	}
	return 0;
}

int k8s_workload(const char *owner_kind, const char *owner_name, const char *template_hash,
		 const char *pod_name, char *buf, size_t len)
{
	size_t on = owner_name ? strlen(owner_name) : 0,
	       hl = template_hash ? strlen(template_hash) : 0;
	int n;

	if (!owner_kind || !on) {
		n = snprintf(buf, len, "pod/%s", pod_name ? pod_name : "");
	} else if (!strcmp(owner_kind, "ReplicaSet") && hl && on > hl + 1 &&
		   owner_name[on - hl - 1] == '-' && !strcmp(owner_name + on - hl, template_hash)) {
		/* A Deployment names its ReplicaSets <deployment>-<pod-template-hash>. */
		n = snprintf(buf, len, "deployment/%.*s", (int)(on - hl - 1), owner_name);
	} else {
		char kind[32];
		size_t i;

		for (i = 0; owner_kind[i] && i + 1 < sizeof(kind); i++)
			kind[i] = (char)(owner_kind[i] >= 'A' && owner_kind[i] <= 'Z'
					     ? owner_kind[i] - 'A' + 'a'
					     : owner_kind[i]);
		kind[i] = 0;
		n = snprintf(buf, len, "%s/%s", kind, owner_name);
	}
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* The controller among metadata.ownerReferences (else the first one). */
static struct json_object *pod_owner(struct json_object *meta)
{
	struct json_object *refs = get(meta, "ownerReferences"), *first = NULL;

	for (size_t i = 0; refs && json_object_is_type(refs, json_type_array) &&
			   i < json_object_array_length(refs);
	     i++) {
		struct json_object *r = json_object_array_get_idx(refs, i),
				   *c = get(r, "controller");

		if (!first)
			first = r;
		if (c && json_object_get_boolean(c))
			return r;
	}
	return first;
}

static int parse_pod(struct json_object *o, struct json_object *meta, struct pod *pod,
		     bool *finished, const char **err)
{
	struct json_object *status = get(o, "status"), *ann = get(meta, "annotations");
	const char *phase = get_str(status, "phase");
	const char *mirror = get_str(ann, "kubernetes.io/config.mirror");

	*err = "Pod metadata: expected name, namespace and a hex uid";
	memset(pod, 0, sizeof(*pod));
	if (copy(pod->uid, sizeof(pod->uid), get_str(meta, "uid")) || !plain_uid(pod->uid) ||
	    copy(pod->name, sizeof(pod->name), get_str(meta, "name")) ||
	    copy(pod->ns, sizeof(pod->ns), get_str(meta, "namespace")))
		return -EINVAL;
	/* A static pod's cgroup is named after the kubelet's config hash, which the
	 * API shows on its mirror pod. */
	if (mirror && plain_uid(mirror) && strlen(mirror) < sizeof(pod->cgroup_uid))
		strcpy(pod->cgroup_uid, mirror);
	else
		strcpy(pod->cgroup_uid, pod->uid);
	pod->qos = k8s_qos_parse(get_str(status, "qosClass"));
	if (k8s_workload(get_str(pod_owner(meta), "kind"), get_str(pod_owner(meta), "name"),
			 get_str(get(meta, "labels"), "pod-template-hash"), pod->name,
			 pod->workload, sizeof(pod->workload)))
		snprintf(pod->workload, sizeof(pod->workload), "pod/%.*s",
			 (int)sizeof(pod->workload) - 8, pod->name);
	/* A meshed pod is left to its mesh unless it opts in explicitly. */
	pod->opted_out = flag_is(ann, "false") ||
			 (!flag_is(ann, "true") && has_mesh_proxy(get(o, "spec"), ann));
	*finished = phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed"));
	*err = NULL;
	return 0;
}

static int apply_pod(struct k8s_pods *p, enum k8s_event ev, struct json_object *o,
		     struct json_object *meta, const char **err)
{
	bool finished = false;
	struct pod pod;
	int i;

	if (parse_pod(o, meta, &pod, &finished, err))
		return -EINVAL;
	i = find_pod(p, pod.uid);
	if (ev == K8S_DELETED || finished) {
		if (i >= 0)
			p->pods[i] = p->pods[--p->n_pods];
		return 0;
	}
	if (i >= 0) {
		p->pods[i] = pod;
		return 0;
	}
	if (grow((void **)&p->pods, &p->cap_pods, p->n_pods, sizeof(*p->pods)))
		return -ENOMEM;
	p->pods[p->n_pods++] = pod;
	return 0;
}

int k8s_pods_apply(struct k8s_pods *p, enum k8s_event ev, struct json_object *obj, const char **err)
{
	const char *kind = get_str(obj, "kind");
	struct json_object *meta = get(obj, "metadata");

	*err = NULL;
	if (!kind || (strcmp(kind, "Pod") && strcmp(kind, "Namespace")))
		return 0;
	if (!meta || !json_object_is_type(meta, json_type_object)) {
		*err = "metadata: expected an object";
		return -EINVAL;
	}
	if (!strcmp(kind, "Namespace"))
		return apply_ns(p, ev, meta, err);
	return apply_pod(p, ev, obj, meta, err);
}

int k8s_pods_foreach_excluded(const struct k8s_pods *p, k8s_pod_cb *cb, void *arg)
{
	for (int i = 0; i < p->n_pods; i++) {
		const struct pod *pod = &p->pods[i];
		struct k8s_pod_ref ref = {pod->ns, pod->name, pod->cgroup_uid, pod->qos};
		int rc;

		if (!pod->opted_out && find_ns(p, pod->ns) < 0)
			continue;
		rc = cb(arg, &ref);
		if (rc)
			return rc;
	}
	return 0;
}

struct caller_scan {
	struct state_caller *c;
	int n, cap;
};

static int add_caller(struct caller_scan *sc, const struct pod *pod, uint64_t id)
{
	if (sc->n == sc->cap && grow((void **)&sc->c, &sc->cap, sc->n, sizeof(*sc->c)))
		return -ENOMEM;
	memset(&sc->c[sc->n], 0, sizeof(sc->c[sc->n]));
	sc->c[sc->n].cgroup_id = id;
	snprintf(sc->c[sc->n].ns, sizeof(sc->c[sc->n].ns), "%.*s", STATE_NAME_MAX - 1, pod->ns);
	snprintf(sc->c[sc->n].workload, sizeof(sc->c[sc->n].workload), "%s", pod->workload);
	sc->n++;
	return 0;
}

/* The pod's cgroup and the ones right below it (its containers': a process
 * connects from its container's cgroup under the kubelet). */
static int pod_callers(struct caller_scan *sc, const struct pod *pod, const char *dir,
		       int (*id_of)(const char *dir, uint64_t *id))
{
	struct dirent *de;
	uint64_t id;
	DIR *d;
	int rc = 0;

	if (!id_of(dir, &id) && (rc = add_caller(sc, pod, id)))
		return rc;
	if (!(d = opendir(dir)))
		return 0;
	while (!rc && (de = readdir(d))) {
		char path[4096];
		int n;

		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (n > 0 && (size_t)n < sizeof(path) && !id_of(path, &id))
			rc = add_caller(sc, pod, id);
	}
	closedir(d);
	return rc;
}

int k8s_pods_callers(const struct k8s_pods *p, const char *root,
		     int (*id_of)(const char *dir, uint64_t *id), struct state_caller **out,
		     int *n_out)
{
	struct caller_scan sc = {0};
	int rc = 0;

	for (int i = 0; !rc && i < p->n_pods; i++) {
		char dir[4096];

		if (!k8s_pod_cgroup_find(root, p->pods[i].qos, p->pods[i].cgroup_uid, dir,
					 sizeof(dir)))
			rc = pod_callers(&sc, &p->pods[i], dir, id_of);
	}
	if (rc) {
		free(sc.c);
		return rc;
	}
	*out = sc.c;
	*n_out = sc.n;
	return 0;
}

void k8s_pods_counts(const struct k8s_pods *p, int *n_pods, int *n_ns_out)
{
	*n_pods = p->n_pods;
	*n_ns_out = p->n_ns;
}
