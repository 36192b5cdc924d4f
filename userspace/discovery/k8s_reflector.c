// SPDX-License-Identifier: Apache-2.0
/*
 * A Kubernetes reflector, client-go style: list a resource (paged), then
 * watch from the list's resourceVersion, relist on 410 Gone, and back off
 * both relists and failures (jittered, doubling, reset only by a watch that
 * stayed up). Objects go to the source's store (Services, EndpointSlices) or
 * pod table (Namespaces, Pods), which it marks dirty for the next delivery.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "discovery/k8s_source.h"

#define LIST_LIMIT 500
#define LIST_IDLE_MS 60000
#define WATCH_TIMEOUT_MIN_S 240 /* the server ends each watch after 4-6 min */
#define WATCH_TIMEOUT_MAX_S 360
#define LIST_MAX_BYTES (1024u << 20)
#define ERROR_BODY_MAX (1u << 20)
#define SHORT_WATCH_MS 1000

const struct k8s_res_info k8s_res_info[RES_COUNT] = {
    [RES_SERVICES] = {"services", "/api/v1/services", "Service", true},
    [RES_SLICES] = {"endpointslices", "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice",
		    true},
    [RES_NAMESPACES] = {"namespaces", "/api/v1/namespaces", "Namespace", false},
    [RES_PODS] = {"pods", "/api/v1/pods", "Pod", false},
    [RES_NODES] = {"nodes", "/api/v1/nodes", "Node", true},
};

/* ---- helpers ---- */

static const char *rname(const struct reflector *r)
{
	return k8s_res_info[r->res].name;
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

void k8s_reflector_reset_paging(struct reflector *r)
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
		json_object_object_add(obj, "kind", json_object_new_string(k8s_res_info[res].kind));
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
	json_object_object_add(o, "kind", json_object_new_string(k8s_res_info[r->res].kind));
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
	r->dk->dirty_state = true; /* the callers (state.h) come from the pods */
}

static void apply(struct reflector *r, enum k8s_event ev, struct json_object *obj)
{
	ensure_kind(obj, r->res);
	if (k8s_res_info[r->res].store)
		apply_store(r, ev, obj);
	else
		apply_pods(r, ev, obj);
}

/* A complete list: it replaces everything of this kind. */
static void commit_list(struct reflector *r)
{
	struct discovery_k8s *dk = r->dk;
	size_t n = json_object_array_length(r->staged);

	if (k8s_res_info[r->res].store) {
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
		k8s_source_deliver_soon(r->dk);
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
	k8s_reflector_reset_paging(r);
	log_info("kube_list_done resource=%s items=%zu resourceVersion=%s", rname(r), n,
		 r->rv ? r->rv : "");
	r->listed = r->gate_open = true;
	r->consistent = false;
	k8s_source_deliver_soon(dk);
	k8s_reflector_restart(r, false, 0);
}

static void fail(struct reflector *r, bool list, const char *what)
{
	uint32_t delay = k8s_backoff_next(&r->bo);

	log_warn("kube_%s_failed resource=%s error=\"%s\" retry_ms=%u", list ? "list" : "watch",
		 rname(r), what, delay);
	r->dk->base.n_errors++;
	k8s_reflector_restart(r, list, delay);
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
	k8s_reflector_reset_paging(r);
	k8s_reflector_restart(r, true, delay);
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
	/* Opt-outs or this Node refused for good (RBAC, old API) must not hold
	 * back services: without the Node, locality lacks only the zone. */
	if ((r->status == 403 || r->status == 404) &&
	    (!k8s_res_info[r->res].store || r->res == RES_NODES) && !r->gate_open) {
		r->gate_open = true;
		k8s_source_deliver_soon(r->dk);
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
		k8s_reflector_reset_paging(r);
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
		k8s_reflector_restart(r, false, 0);
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

	if (r->res != RES_PODS && r->res != RES_NODES)
		return snprintf(buf, len, "%s?", k8s_res_info[r->res].path) >= (int)len
			   ? -ENAMETOOLONG
			   : 0;
	if (k8s_query_escape(r->dk->cfg->node_name, node, sizeof(node)))
		return -ENAMETOOLONG;
	n = snprintf(buf, len, "%s?fieldSelector=%s%%3D%s&", k8s_res_info[r->res].path,
		     r->res == RES_PODS ? "spec.nodeName" : "metadata.name", node);
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
		k8s_reflector_reset_paging(r);
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
		k8s_reflector_reset_paging(r);
		start_list(r);
	} else {
		start_watch(r);
	}
}

void k8s_reflector_restart(struct reflector *r, bool list, uint32_t delay_ms)
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

void k8s_reflector_stop(struct reflector *r)
{
	k8s_req_cancel(r->req);
	r->req = NULL;
	if (r->restart)
		loop_timer_cancel(r->dk->loop, r->restart);
	r->restart = NULL;
	reset_response(r);
	k8s_reflector_reset_paging(r);
}
