// SPDX-License-Identifier: Apache-2.0
/*
 * Kubernetes discovery source: one reflector per resource (Services,
 * EndpointSlices; Namespaces and this node's Pods for opt-outs) lists, then
 * watches from the list's resourceVersion, relists on 410 Gone, and backs
 * off both relists and failures as client-go's reflector does (jittered,
 * doubling, reset only by a watch that stayed up). Everything runs on the
 * main loop (k8s_client.h).
 * Invariant: a state is delivered only once Services and EndpointSlices have
 * both been listed, and then after each burst of changes (coalesced).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "discovery/discovery.h"
#include "discovery/k8s_client.h"
#include "discovery/k8s_objects.h"
#include "discovery/k8s_pods.h"
#include "discovery/k8s_watch.h"

#define DEBOUNCE_MS 100
#define LIST_LIMIT 500
#define LIST_IDLE_MS 60000
#define WATCH_IDLE_DEFAULT_S 300
#define WATCH_TIMEOUT_MIN_S 240 /* the server ends each watch after 4-6 min */
#define WATCH_TIMEOUT_MAX_S 360
/* client-go's reflector: the first retry after [0.8, 1.6) s, doubling to
 * [30, 60) s, and back to the start once nothing failed for 2 minutes. Our
 * draws are [cur/2, cur], so cur runs 1.6 s -> 60 s for the same spans, and
 * the reset is a watch that stayed up 2 minutes (the server ends healthy
 * ones after 4-6). */
#define BACKOFF_MIN_MS 1600
#define BACKOFF_MAX_MS 60000
#define BACKOFF_HEALTHY_MS 120000
#define EXCLUDE_RETRY_MS 2000
#define LIST_MAX_BYTES (1024u << 20)
#define ERROR_BODY_MAX (1u << 20)
#define SHORT_WATCH_MS 1000

/* Opt-outs hold an exclusion origin of their own (a bit per entry), so syncing
 * them never touches --exclude-cgroup's or h2splitctl exclude's, and no other
 * origin can take theirs off: skipping a sync while the set of opted-out
 * cgroups is unchanged leaves the map right. */
#define K8S_EXCLUDE_ORIGIN H2S_EXCLUDE_K8S

enum res { RES_SERVICES = 0, RES_SLICES, RES_NAMESPACES, RES_PODS, RES_COUNT };

static const struct {
	const char *name; /* for logs and RBAC hints */
	const char *path;
	const char *kind; /* list items come without kind; set it */
	bool store;	  /* k8s_store (else k8s_pods) */
} res_info[RES_COUNT] = {
    [RES_SERVICES] = {"services", "/api/v1/services", "Service", true},
    [RES_SLICES] = {"endpointslices", "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice",
		    true},
    [RES_NAMESPACES] = {"namespaces", "/api/v1/namespaces", "Namespace", false},
    [RES_PODS] = {"pods", "/api/v1/pods", "Pod", false},
};

enum phase { PH_OFF = 0, PH_LIST, PH_WATCH, PH_WAIT };

struct discovery_k8s;

struct reflector {
	struct discovery_k8s *dk; /* back pointer */
	enum res res;
	enum phase phase;
	struct k8s_req *req;	    /* owned: the request in flight, NULL none */
	struct loop_timer *restart; /* pending list/watch start, NULL none */
	bool restart_list;	    /* what |restart| starts */
	struct k8s_backoff bo;
	char *rv;	 /* owned: resourceVersion to watch from, NULL none */
	bool listed;	 /* a full list went through at least once */
	bool consistent; /* the next list must be a quorum read (after a 410, a reload) */
	bool gate_open;	 /* listed, or refused for good: no longer holds back sync */
	/* The response being read. */
	int status;
	struct json_tokener *tok; /* owned: list or Status body */
	struct json_object *body; /* owned: the parsed body */
	size_t body_bytes;
	struct k8s_lines lines; /* watch stream */
	bool relist;		/* the watch asked for a relist (410) */
	unsigned long n_events; /* in this watch */
	uint64_t started_ms;
	/* Paged list. */
	struct json_object *staged; /* owned array: items of the pages so far */
	char *cont;		    /* owned: continue token, NULL on the first page */
	struct json_object *keys;   /* owned (store kinds): "ns/name" of objects in the store */
};

struct discovery_k8s {
	struct discovery base;
	const struct config *cfg;	       /* not owned */
	const struct discovery_cgroup_ops *cg; /* not owned; NULL: opt-outs off */
	struct loop *loop;	  /* not owned; set by start() */
	struct k8s_target target;
	struct k8s_store *store; /* owned */
	struct k8s_pods *pods;	 /* owned */
	struct reflector r[RES_COUNT];
	struct loop_timer *deliver; /* owned: debounce, NULL none */
	struct loop_timer *exclude_retry;
	bool dirty_state, dirty_excl;
	uint32_t watch_idle_ms;
	char cgroup_root[CONFIG_PATH_MAX]; /* "": opt-outs off */
	uint64_t *excl_ids;		   /* owned: what was last synced */
	int n_excl;
	bool excl_synced;
};

static void schedule_restart(struct reflector *r, bool list, uint32_t delay_ms);
static void schedule_deliver(struct discovery_k8s *dk);

/* ---- helpers ---- */

static const char *rname(const struct reflector *r)
{
	return res_info[r->res].name;
}

static void set_rv(struct reflector *r, const char *rv)
{
	char *n;

	if (!rv || !*rv || (r->rv && !strcmp(r->rv, rv)))
		return;
	n = strdup(rv);
	if (!n)
		return; /* keep the older one: a later 410 recovers */
	free(r->rv);
	r->rv = n;
}

static void reset_response(struct reflector *r)
{
	if (r->tok)
		json_tokener_free(r->tok);
	r->tok = NULL;
	json_object_put(r->body);
	r->body = NULL;
	r->body_bytes = 0;
	r->status = 0;
	r->relist = false;
	r->n_events = 0;
	k8s_lines_reset(&r->lines);
}

static void reset_paging(struct reflector *r)
{
	json_object_put(r->staged);
	r->staged = NULL;
	free(r->cont);
	r->cont = NULL;
}

/* The hint that goes with an HTTP status, for logs. */
static const char *status_fix(const struct reflector *r, int status)
{
	switch (status) {
	case 401:
		return "the API server rejected the token: check --kube-token-file and that "
		       "the service account token is mounted";
	case 403:
		return "forbidden: the ClusterRole h2split must allow get, list and watch on "
		       "this resource (kubectl apply -k deploy/)";
	case 404:
		return r->res == RES_SLICES ? "discovery.k8s.io/v1 not served: Kubernetes 1.21 or "
					      "newer is needed"
					    : "not found: check --kube-api";
	case 429:
		return "throttled by the API server: retrying";
	default:
		return status >= 500 ? "API server error: retrying" : "retrying";
	}
}

static int key_of(struct json_object *obj, char *buf, size_t len)
{
	struct json_object *meta, *v;
	const char *ns = "", *name = NULL;

	if (!json_object_object_get_ex(obj, "metadata", &meta))
		return -EINVAL;
	if (json_object_object_get_ex(meta, "namespace", &v) &&
	    json_object_is_type(v, json_type_string))
		ns = json_object_get_string(v);
	if (json_object_object_get_ex(meta, "name", &v) && json_object_is_type(v, json_type_string))
		name = json_object_get_string(v);
	if (!name || snprintf(buf, len, "%s/%s", ns, name) >= (int)len)
		return -EINVAL;
	return 0;
}

/* Items of a list (and some fixtures' events) come without kind. */
static void ensure_kind(struct json_object *obj, enum res res)
{
	struct json_object *k;

	if (!json_object_object_get_ex(obj, "kind", &k))
		json_object_object_add(obj, "kind", json_object_new_string(res_info[res].kind));
}

/* ---- applying objects ---- */

/* Remove the object named |key| ("ns/name") of |r|'s kind from the store. */
static void store_delete_key(struct reflector *r, const char *key)
{
	struct json_object *o = json_object_new_object(), *meta = json_object_new_object();
	const char *slash = strchr(key, '/'), *err;

	if (!o || !meta || !slash) {
		json_object_put(o);
		json_object_put(meta);
		return;
	}
	json_object_object_add(o, "kind", json_object_new_string(res_info[r->res].kind));
	json_object_object_add(meta, "namespace",
			       json_object_new_string_len(key, (int)(slash - key)));
	json_object_object_add(meta, "name", json_object_new_string(slash + 1));
	json_object_object_add(o, "metadata", meta);
	k8s_store_apply(r->dk->store, K8S_DELETED, o, &err);
	json_object_put(o);
}

static void apply_store(struct reflector *r, enum k8s_event ev, struct json_object *obj)
{
	struct discovery_k8s *dk = r->dk;
	char key[512];
	const char *err;
	int rc;

	if (key_of(obj, key, sizeof(key))) {
		log_warn("kube_object_invalid resource=%s error=\"metadata.name missing\"",
			 rname(r));
		dk->base.n_errors++;
		return;
	}
	rc = k8s_store_apply(dk->store, ev, obj, &err);
	if (rc) {
		/* The store still holds the last good version (or nothing, for a
		 * new object): keep routing on it. The API validates what it
		 * stores, so this is a broken or hostile server, not a real change;
		 * the key stays known so a later list or DELETED removes it. */
		log_warn("kube_object_invalid resource=%s object=%s error=\"%s\" "
			 "action=kept_last_good",
			 rname(r), key, err ? err : strerror(-rc));
		dk->base.n_errors++;
		json_object_object_add(r->keys, key, NULL);
		return;
	} else if (ev == K8S_DELETED) {
		json_object_object_del(r->keys, key);
	} else {
		json_object_object_add(r->keys, key, NULL);
	}
	dk->dirty_state = true;
}

static void apply_pods(struct reflector *r, enum k8s_event ev, struct json_object *obj)
{
	const char *err;
	int rc = k8s_pods_apply(r->dk->pods, ev, obj, &err);

	if (rc) {
		log_warn("kube_object_invalid resource=%s error=\"%s\" action=ignored", rname(r),
			 err ? err : strerror(-rc));
		r->dk->base.n_errors++;
	}
	r->dk->dirty_excl = true;
}

static void apply(struct reflector *r, enum k8s_event ev, struct json_object *obj)
{
	ensure_kind(obj, r->res);
	if (res_info[r->res].store)
		apply_store(r, ev, obj);
	else
		apply_pods(r, ev, obj);
}

/* A complete list: it replaces everything of this kind. */
static void commit_list(struct reflector *r)
{
	struct discovery_k8s *dk = r->dk;
	size_t n = json_object_array_length(r->staged);

	if (res_info[r->res].store) {
		struct json_object *fresh = json_object_new_object();
		char key[512];

		for (size_t i = 0; fresh && i < n; i++)
			if (!key_of(json_object_array_get_idx(r->staged, i), key, sizeof(key)))
				json_object_object_add(fresh, key, NULL);
		json_object_object_foreach(r->keys, k, v)
		{
			(void)v;
			if (!fresh || !json_object_object_get_ex(fresh, k, NULL))
				store_delete_key(r, k);
		}
		json_object_put(r->keys);
		r->keys = json_object_new_object();
		json_object_put(fresh);
		dk->dirty_state = true;
	} else {
		k8s_pods_clear(dk->pods, r->res == RES_PODS);
		dk->dirty_excl = true;
	}
	for (size_t i = 0; i < n; i++)
		apply(r, K8S_ADDED, json_object_array_get_idx(r->staged, i));
}

/* ---- requests ---- */

static int on_head(void *arg, int status)
{
	struct reflector *r = arg;

	r->status = status;
	if (status == 200 && r->phase == PH_WATCH)
		return 0;
	r->tok = json_tokener_new_ex(64);
	return r->tok ? 0 : -ENOMEM;
}

/* A list, or any non-200 body (a Status): parse it incrementally. */
static int on_json_body(struct reflector *r, const char *data, size_t len)
{
	size_t max = r->status == 200 ? LIST_MAX_BYTES : ERROR_BODY_MAX;
	enum json_tokener_error e;
	struct json_object *o;

	r->body_bytes += len;
	if (r->body_bytes > max)
		return -EFBIG;
	if (r->body)
		return 0; /* trailing whitespace after the value */
	o = json_tokener_parse_ex(r->tok, data, (int)len);
	e = json_tokener_get_error(r->tok);
	if (o) {
		r->body = o;
		return 0;
	}
	return e == json_tokener_continue ? 0 : -EPROTO;
}

static int on_event(void *arg, const char *line, size_t len)
{
	static const enum k8s_event ev_of[] = {
	    [K8S_WATCH_ADDED] = K8S_ADDED,
	    [K8S_WATCH_MODIFIED] = K8S_MODIFIED,
	    [K8S_WATCH_DELETED] = K8S_DELETED,
	};
	struct reflector *r = arg;
	enum k8s_watch_type type;
	struct json_object *obj;
	const char *err, *msg;
	int code;

	if (k8s_watch_event_parse(line, len, &type, &obj, &err)) {
		log_warn("kube_watch_bad_event resource=%s error=\"%s\" action=rewatch", rname(r),
			 err);
		r->dk->base.n_errors++;
		return -EPROTO;
	}
	r->n_events++;
	if (type == K8S_WATCH_ERROR) {
		code = k8s_status_code(obj, &msg);
		json_object_put(obj);
		if (code == 410) {
			r->relist = true; /* on_watch_done() relists */
			return -ESTALE;
		}
		log_warn("kube_watch_error resource=%s code=%d message=\"%s\" action=rewatch",
			 rname(r), code, msg);
		r->dk->base.n_errors++;
		return -EPROTO;
	}
	set_rv(r, k8s_resource_version(obj));
	if (type != K8S_WATCH_BOOKMARK) {
		apply(r, ev_of[type], obj);
		schedule_deliver(r->dk);
	}
	json_object_put(obj);
	return 0;
}

static int on_body(void *arg, const char *data, size_t len)
{
	struct reflector *r = arg;

	if (r->status == 200 && r->phase == PH_WATCH)
		return k8s_lines_feed(&r->lines, data, len, on_event, r);
	return on_json_body(r, data, len);
}

static void start_list(struct reflector *r);

/* One page of a list arrived whole: stage its items; commit after the last. */
static int list_page(struct reflector *r)
{
	struct json_object *items, *meta, *v;
	const char *cont = NULL;
	size_t n;

	if (!json_object_is_type(r->body, json_type_object))
		return -EPROTO;
	if (!json_object_object_get_ex(r->body, "items", &items) ||
	    json_object_is_type(items, json_type_null))
		items = NULL;
	else if (!json_object_is_type(items, json_type_array))
		return -EPROTO;
	if (!r->staged && !(r->staged = json_object_new_array()))
		return -ENOMEM;
	n = items ? json_object_array_length(items) : 0;
	for (size_t i = 0; i < n; i++)
		json_object_array_add(r->staged,
				      json_object_get(json_object_array_get_idx(items, i)));
	if (json_object_object_get_ex(r->body, "metadata", &meta)) {
		if (json_object_object_get_ex(meta, "continue", &v) &&
		    json_object_is_type(v, json_type_string))
			cont = json_object_get_string(v);
		set_rv(r, k8s_resource_version(r->body));
	}
	free(r->cont);
	r->cont = cont && *cont ? strdup(cont) : NULL;
	return cont && *cont && !r->cont ? -ENOMEM : 0;
}

static void list_done(struct reflector *r)
{
	struct discovery_k8s *dk = r->dk;
	size_t n = json_object_array_length(r->staged);

	commit_list(r);
	reset_paging(r);
	log_info("kube_list_done resource=%s items=%zu resourceVersion=%s", rname(r), n,
		 r->rv ? r->rv : "");
	r->listed = r->gate_open = true;
	r->consistent = false;
	schedule_deliver(dk);
	schedule_restart(r, false, 0);
}

static void fail(struct reflector *r, bool list, const char *what)
{
	uint32_t delay = k8s_backoff_next(&r->bo);

	log_warn("kube_%s_failed resource=%s error=\"%s\" retry_ms=%u", list ? "list" : "watch",
		 rname(r), what, delay);
	r->dk->base.n_errors++;
	schedule_restart(r, list, delay);
}

/*
 * 410 Gone: the resourceVersion left the server's window, only a list can
 * catch up. Backed off like a failure (so does client-go): when the window
 * is shorter than a list takes, every watch from a fresh list gets 410 at
 * once, and relisting at once would have every node list in a loop.
 */
static void relist(struct reflector *r, const char *what)
{
	uint32_t delay = k8s_backoff_next(&r->bo);

	log_info("kube_%s_expired resource=%s resourceVersion=%s action=relist retry_ms=%u", what,
		 rname(r), r->rv ? r->rv : "", delay);
	r->dk->base.n_relists++;
	r->consistent = true;
	reset_paging(r);
	schedule_restart(r, true, delay);
}

/* A non-200 answer: log it with its fix; 410 means start over with a list. */
static void http_error(struct reflector *r, bool list)
{
	const char *msg = "";
	char what[768], clean[512];
	size_t i;

	if (r->body)
		k8s_status_code(r->body, &msg);
	/* The API's message goes inside a quoted log value. */
	for (i = 0; msg[i] && i + 1 < sizeof(clean); i++)
		clean[i] = msg[i] == '"' ? '\'' : msg[i];
	clean[i] = 0;
	if (r->status == 410) {
		relist(r, list ? "list" : "watch");
		return;
	}
	/* Opt-outs refused for good (RBAC, old API) must not hold back services. */
	if ((r->status == 403 || r->status == 404) && !res_info[r->res].store && !r->gate_open) {
		r->gate_open = true;
		schedule_deliver(r->dk);
	}
	snprintf(what, sizeof(what), "HTTP %d %s (%s)", r->status, clean, status_fix(r, r->status));
	fail(r, list, what);
}

static void on_list_done(void *arg, int err, const char *what)
{
	struct reflector *r = arg;

	r->req = NULL;
	if (!err && r->status != 200) {
		http_error(r, true);
	} else if (err || !r->body || list_page(r)) {
		fail(r, true, err ? what : "the response is not a Kubernetes list");
		reset_paging(r);
	} else if (r->cont) {
		reset_response(r);
		start_list(r);
		return;
	} else {
		list_done(r);
	}
	reset_response(r);
}

static void on_watch_done(void *arg, int err, const char *what)
{
	struct reflector *r = arg;
	uint64_t lasted = loop_now_ms() - r->started_ms;

	r->req = NULL;
	k8s_backoff_up(&r->bo, lasted);
	if (r->relist) {
		relist(r, "watch");
	} else if (!err && r->status != 200) {
		http_error(r, false);
	} else if (err) {
		fail(r, false, what);
	} else if (!r->n_events && lasted < SHORT_WATCH_MS) {
		/* A server that ends watches at once must not make us spin. */
		fail(r, false, "watch ended at once without events");
	} else {
		log_debug("kube_watch_ended resource=%s events=%lu action=rewatch", rname(r),
			  r->n_events);
		schedule_restart(r, false, 0);
	}
	reset_response(r);
}

static const struct k8s_req_cb list_cb = {on_head, on_body, on_list_done};
static const struct k8s_req_cb watch_cb = {on_head, on_body, on_watch_done};

/* Base path with the query every request of |r| shares. */
static int base_query(struct reflector *r, char *buf, size_t len)
{
	char node[3 * 256 + 1];
	int n;

	if (r->res != RES_PODS)
		return snprintf(buf, len, "%s?", res_info[r->res].path) >= (int)len ? -ENAMETOOLONG
										    : 0;
	if (k8s_query_escape(r->dk->cfg->node_name, node, sizeof(node)))
		return -ENAMETOOLONG;
	n = snprintf(buf, len, "%s?fieldSelector=spec.nodeName%%3D%s&", res_info[r->res].path,
		     node);
	return n >= (int)len ? -ENAMETOOLONG : 0;
}

static void begin(struct reflector *r, enum phase ph, const char *path, const struct k8s_req_cb *cb,
		  uint32_t idle_ms)
{
	int err;

	reset_response(r);
	r->phase = ph;
	r->started_ms = loop_now_ms();
	err = k8s_req_start(r->dk->loop, &r->dk->target, path, idle_ms, cb, r, &r->req);
	if (err)
		fail(r, ph == PH_LIST, strerror(-err));
}

static void start_list(struct reflector *r)
{
	char base[1024], cont[4096], path[6144];

	if (base_query(r, base, sizeof(base)) ||
	    (r->cont && k8s_query_escape(r->cont, cont, sizeof(cont)))) {
		reset_paging(r);
		fail(r, true, "list URL too long");
		return;
	}
	/* Like client-go's reflector: resourceVersion=0 lets the API server answer
	 * from its watch cache (a DaemonSet lists on every node at once); after a
	 * 410 or a reload, a quorum read. A continue token carries its own. */
	snprintf(path, sizeof(path), "%slimit=%d%s%s", base, LIST_LIMIT,
		 r->cont ? "&continue=" : (r->consistent ? "" : "&resourceVersion=0"),
		 r->cont ? cont : "");
	begin(r, PH_LIST, path, &list_cb, LIST_IDLE_MS);
}

static void start_watch(struct reflector *r)
{
	char base[1024], rv[512], path[2048];
	uint32_t timeout = k8s_backoff_rand(&r->bo, WATCH_TIMEOUT_MIN_S, WATCH_TIMEOUT_MAX_S);

	if (!r->rv) {
		start_list(r);
		return;
	}
	if (base_query(r, base, sizeof(base)) || k8s_query_escape(r->rv, rv, sizeof(rv))) {
		fail(r, true, "watch URL too long");
		return;
	}
	snprintf(path, sizeof(path),
		 "%swatch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u", base,
		 rv, timeout);
	begin(r, PH_WATCH, path, &watch_cb, r->dk->watch_idle_ms);
}

static void restart_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct reflector *r = arg;

	(void)l;
	(void)t;
	r->restart = NULL;
	if (r->restart_list) {
		reset_paging(r);
		start_list(r);
	} else {
		start_watch(r);
	}
}

static void schedule_restart(struct reflector *r, bool list, uint32_t delay_ms)
{
	if (r->restart)
		loop_timer_cancel(r->dk->loop, r->restart);
	r->phase = PH_WAIT;
	r->restart_list = list;
	r->restart = loop_timer_add(r->dk->loop, delay_ms, restart_cb, r);
	if (!r->restart)
		log_error("kube_reflector_stalled resource=%s error=\"timer: out of memory\"",
			  rname(r));
}

/* ---- opt-outs ---- */

struct excl_scan {
	struct discovery_k8s *dk;
	uint64_t *ids;
	int n, cap;
	int pending; /* opted-out pods whose cgroup is not there (yet) */
};

static int collect_pod(void *arg, const struct k8s_pod_ref *pod)
{
	struct excl_scan *sc = arg;
	char dir[CONFIG_PATH_MAX * 2];
	uint64_t id;
	uint64_t *n;

	if (k8s_pod_cgroup_find(sc->dk->cgroup_root, pod->qos, pod->cgroup_uid, dir, sizeof(dir)) ||
	    sc->dk->cg->id_of(dir, &id)) {
		log_debug("kube_opt_out_pending pod=%s/%s uid=%s reason=\"no cgroup yet\"", pod->ns,
			  pod->name, pod->cgroup_uid);
		sc->pending++;
		return 0;
	}
	if (sc->n == sc->cap) {
		int cap = sc->cap ? sc->cap * 2 : 16;

		n = realloc(sc->ids, (size_t)cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		sc->ids = n;
		sc->cap = cap;
	}
	sc->ids[sc->n++] = id;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void exclude_retry_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct discovery_k8s *dk = arg;

	(void)l;
	(void)t;
	dk->exclude_retry = NULL;
	dk->dirty_excl = true;
	schedule_deliver(dk);
}

/* Have the daemon make the BPF exclusion map hold exactly the opted-out pods' cgroups. */
static void sync_exclusions(struct discovery_k8s *dk)
{
	struct excl_scan sc = {.dk = dk};
	struct discovery_exclusions ex = {.origin = K8S_EXCLUDE_ORIGIN};
	int err, n_pods, n_ns;

	dk->dirty_excl = false;
	if (!dk->cgroup_root[0])
		return;
	err = k8s_pods_foreach_excluded(dk->pods, collect_pod, &sc);
	if (err) {
		free(sc.ids);
		return;
	}
	if (sc.n)
		qsort(sc.ids, (size_t)sc.n, sizeof(*sc.ids), cmp_u64);
	if (dk->excl_synced && sc.n == dk->n_excl &&
	    (!sc.n || !memcmp(sc.ids, dk->excl_ids, (size_t)sc.n * sizeof(*sc.ids)))) {
		free(sc.ids);
	} else {
		ex.ids = sc.ids;
		ex.n = sc.n;
		err = dk->base.on_update(dk->base.arg, NULL, &ex);
		k8s_pods_counts(dk->pods, &n_pods, &n_ns);
		if (err) {
			log_error("kube_opt_outs_sync_failed error=\"%s\"", strerror(-err));
			dk->base.n_errors++;
			free(sc.ids);
		} else {
			log_info("kube_opt_outs_synced excluded_pods=%d pending=%d pods=%d "
				 "opted_out_namespaces=%d",
				 sc.n, sc.pending, n_pods, n_ns);
			free(dk->excl_ids);
			dk->excl_ids = sc.ids;
			dk->n_excl = sc.n;
			dk->excl_synced = true;
		}
	}
	if (sc.pending && !dk->exclude_retry)
		dk->exclude_retry =
		    loop_timer_add(dk->loop, EXCLUDE_RETRY_MS, exclude_retry_cb, dk);
}

/* ---- delivering states ---- */

static bool gates_open(const struct discovery_k8s *dk)
{
	for (int i = 0; i < RES_COUNT; i++)
		if (dk->r[i].phase != PH_OFF && !dk->r[i].gate_open)
			return false;
	return true;
}

/* The state's version: the newer resourceVersion of the Services and
 * EndpointSlices it was built from. resourceVersions are opaque, but the API
 * server's are etcd revisions, so the larger number is the later change;
 * one that is not a number is reported as it is. */
static void state_version(const struct discovery_k8s *dk, char *out, size_t len)
{
	const char *best = NULL;
	unsigned long long best_n = 0;

	for (int i = RES_SERVICES; i <= RES_SLICES; i++) {
		const char *rv = dk->r[i].rv;
		char *end;
		unsigned long long n;

		if (!rv)
			continue;
		errno = 0;
		n = strtoull(rv, &end, 10);
		if (errno || *end || end == rv) {
			best = rv;
			break;
		}
		if (!best || n > best_n) {
			best = rv;
			best_n = n;
		}
	}
	snprintf(out, len, "%s", best ? best : "");
}

static void deliver_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct discovery_k8s *dk = arg;
	struct state *st;
	int n_eps = 0;

	(void)l;
	(void)t;
	dk->deliver = NULL;
	if (!gates_open(dk))
		return; /* list_done() of the last kind schedules us again */
	if (dk->dirty_excl)
		sync_exclusions(dk);
	if (!dk->dirty_state)
		return;
	st = k8s_store_build(dk->store);
	if (!st) {
		log_error("kube_state_build_failed error=\"out of memory\" action=retry");
		schedule_deliver(dk);
		return;
	}
	dk->dirty_state = false;
	state_version(dk, st->version, sizeof(st->version));
	for (int i = 0; i < st->n_svcs; i++)
		n_eps += st->svcs[i].n_eps;
	log_info("kube_state services=%d endpoints=%d first=%s", st->n_svcs, n_eps,
		 dk->base.synced ? "false" : "true");
	dk->base.synced = true;
	dk->base.on_update(dk->base.arg, st, NULL);
}

/* Coalesce: the first change of a burst arms the timer, the rest ride along. */
static void schedule_deliver(struct discovery_k8s *dk)
{
	if (dk->deliver || !dk->loop)
		return;
	dk->deliver = loop_timer_add(dk->loop, DEBOUNCE_MS, deliver_cb, dk);
}

/* ---- the source ---- */

static uint32_t watch_idle_ms(void)
{
	const char *v = getenv("H2SPLIT_KUBE_WATCH_IDLE");
	char *end;
	long s;

	if (!v || !*v)
		return WATCH_IDLE_DEFAULT_S * 1000;
	s = strtol(v, &end, 10);
	if (*end || s < 1 || s > 3600) {
		log_warn("setting_ignored name=H2SPLIT_KUBE_WATCH_IDLE value=\"%s\" "
			 "expected=\"seconds, 1-3600\"",
			 v);
		return WATCH_IDLE_DEFAULT_S * 1000;
	}
	return (uint32_t)s * 1000;
}

static void setup_opt_outs(struct discovery_k8s *dk)
{
	int err;

	if (!dk->cg) {
		log_warn("kube_opt_outs_disabled reason=\"no cgroup access\"");
		return;
	}
	if (!dk->cfg->node_name[0]) {
		log_warn("kube_opt_outs_disabled reason=\"no node name\" "
			 "fix=\"set H2SPLIT_NODE_NAME from spec.nodeName (or --node-name)\"");
		return;
	}
	err = dk->cg->root(dk->cgroup_root, sizeof(dk->cgroup_root));
	if (err) {
		dk->cgroup_root[0] = 0;
		log_warn("kube_opt_outs_disabled reason=\"cgroup v2 root not found: %s\" "
			 "fix=\"mount the host's cgroup2 at /sys/fs/cgroup\"",
			 strerror(-err));
		return;
	}
	dk->r[RES_NAMESPACES].phase = PH_WAIT;
	dk->r[RES_PODS].phase = PH_WAIT;
}

static int k8s_start(struct discovery *d, struct loop *l)
{
	struct discovery_k8s *dk = (struct discovery_k8s *)d;
	char err[1024];
	int rc;

	rc = k8s_target_init(&dk->target, dk->cfg->kube_api, dk->cfg->kube_token_file,
			     dk->cfg->kube_ca_file, err, sizeof(err));
	if (rc) {
		log_error("kube_config_invalid error=\"%s\"", err);
		return rc;
	}
	dk->loop = l;
	dk->watch_idle_ms = watch_idle_ms();
	dk->r[RES_SERVICES].phase = PH_WAIT;
	dk->r[RES_SLICES].phase = PH_WAIT;
	setup_opt_outs(dk);
	log_info("kube_source_starting api=%s node=%s token_file=%s ca_file=%s watch_idle_s=%u",
		 dk->target.url_str, dk->cfg->node_name[0] ? dk->cfg->node_name : "-",
		 dk->target.token_file, dk->target.ca_file, dk->watch_idle_ms / 1000);
	for (int i = 0; i < RES_COUNT; i++)
		if (dk->r[i].phase != PH_OFF)
			schedule_restart(&dk->r[i], true, 0);
	return 0;
}

static void stop_reflector(struct reflector *r)
{
	k8s_req_cancel(r->req);
	r->req = NULL;
	if (r->restart)
		loop_timer_cancel(r->dk->loop, r->restart);
	r->restart = NULL;
	reset_response(r);
	reset_paging(r);
}

static void k8s_reload(struct discovery *d)
{
	struct discovery_k8s *dk = (struct discovery_k8s *)d;

	log_info("kube_relist reason=reload");
	for (int i = 0; i < RES_COUNT; i++) {
		struct reflector *r = &dk->r[i];

		if (r->phase == PH_OFF)
			continue;
		stop_reflector(r);
		k8s_backoff_reset(&r->bo);
		r->consistent = true;
		schedule_restart(r, true, 0);
	}
}

static void k8s_destroy(struct discovery *d)
{
	struct discovery_k8s *dk = (struct discovery_k8s *)d;

	if (!dk)
		return;
	for (int i = 0; i < RES_COUNT; i++) {
		struct reflector *r = &dk->r[i];

		if (dk->loop)
			stop_reflector(r);
		else
			reset_paging(r);
		free(r->rv);
		json_object_put(r->keys);
		k8s_lines_free(&r->lines);
	}
	if (dk->loop) {
		loop_timer_cancel(dk->loop, dk->deliver);
		loop_timer_cancel(dk->loop, dk->exclude_retry);
	}
	k8s_store_free(dk->store);
	k8s_pods_free(dk->pods);
	free(dk->excl_ids);
	free(dk);
}

static const struct discovery_ops k8s_ops = {
    .name = "kubernetes",
    .start = k8s_start,
    .reload = k8s_reload,
    .destroy = k8s_destroy,
};

struct discovery *discovery_kubernetes_new(const struct config *cfg,
					   const struct discovery_cgroup_ops *cg,
					   discovery_update_cb *cb, void *arg)
{
	struct discovery_k8s *dk = calloc(1, sizeof(*dk));
	uint64_t seed = loop_now_ns() ^ ((uint64_t)getpid() << 32);

	if (!dk)
		return NULL;
	dk->base = (struct discovery){.ops = &k8s_ops, .on_update = cb, .arg = arg};
	dk->cfg = cfg;
	dk->cg = cg;
	dk->dirty_state = true; /* the first state goes out even when empty */
	dk->store = k8s_store_new();
	dk->pods = k8s_pods_new();
	for (int i = 0; i < RES_COUNT; i++) {
		struct reflector *r = &dk->r[i];

		r->dk = dk;
		r->res = (enum res)i;
		r->lines.max = 64u << 20; /* one event: a big EndpointSlice is well below */
		k8s_backoff_init(&r->bo, BACKOFF_MIN_MS, BACKOFF_MAX_MS, BACKOFF_HEALTHY_MS,
				 seed + (uint64_t)i * 7919);
		if (res_info[i].store && !(r->keys = json_object_new_object()))
			goto fail;
	}
	if (!dk->store || !dk->pods)
		goto fail;
	return &dk->base;
fail:
	k8s_destroy(&dk->base);
	return NULL;
}
