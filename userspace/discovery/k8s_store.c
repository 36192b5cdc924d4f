// SPDX-License-Identifier: Apache-2.0
/*
 * Store of Kubernetes Services and EndpointSlices (see k8s_objects.h). Each
 * object is validated and reduced to the few fields h2split uses when it is
 * applied (k8s_service.c, k8s_endpointslice.c), so a malformed object is
 * rejected up front with the store unchanged and k8s_store_build()
 * (k8s_state_build.c) can only fail on ENOMEM. Objects live in a chained hash
 * table keyed by (kind, namespace, name); a List is loaded all or nothing.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "discovery/k8s_objects_int.h"

#define JSON_MAX_DEPTH 64 /* managedFields nest deeper than json-c's default 32 */

static void obj_free(struct obj *o)
{
	if (!o)
		return;
	if (o->kind == OBJ_SERVICE) {
		free(o->svc.ports);
		free(o->svc.weights);
	} else if (o->kind == OBJ_SLICE) {
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

	o->rev = ++s->rev;
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

struct json_object *k8s_obj_field(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	json_object_object_get_ex(o, key, &v);
	return v;
}

int k8s_obj_get_typed(struct json_object *o, const char *key, enum json_type t,
		      struct json_object **out)
{
	struct json_object *v = k8s_obj_field(o, key);

	*out = NULL;
	if (!v)
		return 0;
	if (!json_object_is_type(v, t))
		return -EINVAL;
	*out = v;
	return 0;
}

int k8s_obj_get_str(struct json_object *o, const char *key, const char **out)
{
	struct json_object *v;

	*out = NULL;
	if (k8s_obj_get_typed(o, key, json_type_string, &v))
		return -EINVAL;
	if (v)
		*out = json_object_get_string(v);
	return 0;
}

/* Tri-state bool: -1 unset, 0 false, 1 true. */
int k8s_obj_get_bool(struct json_object *o, const char *key, int *out)
{
	struct json_object *v;

	*out = -1;
	if (k8s_obj_get_typed(o, key, json_type_boolean, &v))
		return -EINVAL;
	if (v)
		*out = json_object_get_boolean(v);
	return 0;
}

/* A port number 1-65535; 0 when unset. */
int k8s_obj_get_port(struct json_object *o, const char *key, uint16_t *out)
{
	struct json_object *v;
	int64_t n;

	*out = 0;
	if (k8s_obj_get_typed(o, key, json_type_int, &v))
		return -EINVAL;
	if (!v)
		return 0;
	n = json_object_get_int64(v);
	if (n < 1 || n > 65535)
		return -EINVAL;
	*out = (uint16_t)n;
	return 0;
}

int k8s_obj_copy_name(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size)
		return -EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

/* ---- object parsing ---- */

int k8s_obj_parse_meta(struct json_object *o, struct obj *ob, struct json_object **meta,
		       const char **err)
{
	const char *name, *ns;

	if (k8s_obj_get_typed(o, "metadata", json_type_object, meta) || !*meta)
		BAD("metadata: expected an object");
	if (k8s_obj_get_str(*meta, "name", &name) || !name || !*name)
		BAD("metadata.name: expected a non-empty string");
	if (k8s_obj_copy_name(ob->name, sizeof(ob->name), name))
		BAD("metadata.name: longer than 253 characters");
	if (k8s_obj_get_str(*meta, "namespace", &ns))
		BAD("metadata.namespace: expected a string");
	if (k8s_obj_copy_name(ob->ns, sizeof(ob->ns), ns && *ns ? ns : "default"))
		BAD("metadata.namespace: longer than 63 characters");
	ob->hash = obj_hash(ob->kind, ob->ns, ob->name);
	return 0;
}

/*
 * Turn |o| into a new object of |kind_name| ("Service", "EndpointSlice", "Node"). *out
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
	if (strcmp(kind_name, "Service") && strcmp(kind_name, "EndpointSlice") &&
	    strcmp(kind_name, "Node"))
		return 0;
	ob = calloc(1, sizeof(*ob));
	if (!ob)
		NOMEM();
	ob->kind = !strcmp(kind_name, "Service") ? OBJ_SERVICE
		   : !strcmp(kind_name, "Node")	  ? OBJ_NODE
						  : OBJ_SLICE;
	if (meta_only)
		rc = k8s_obj_parse_meta(o, ob, &meta, err);
	else if (ob->kind == OBJ_SERVICE)
		rc = k8s_service_parse(o, ob, err);
	else if (ob->kind == OBJ_NODE)
		rc = k8s_node_parse(o, ob, err);
	else
		rc = k8s_slice_parse(o, ob, err);
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

	return k8s_obj_get_str(o, "kind", &k) ? NULL : k;
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
	if (k8s_obj_get_typed(root, "items", json_type_array, items)) {
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
	struct json_object *meta = k8s_obj_field(item, "metadata");
	const char *ns = NULL, *name = NULL;
	char where[32] = "";

	if (meta && json_object_is_type(meta, json_type_object)) {
		k8s_obj_get_str(meta, "namespace", &ns);
		k8s_obj_get_str(meta, "name", &name);
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
