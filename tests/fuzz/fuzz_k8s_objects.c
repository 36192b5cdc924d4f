// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target: the Kubernetes object parser both discovery sources share.
 * The input is a JSON document as `kubectl get svc,endpointslices -o json` or
 * the API server would print it. It is loaded as a List (k8s_store_load_json),
 * then every item is applied again as a watch event (ADDED/MODIFIED/DELETED,
 * chosen by the first byte), and the desired state is built and looked up.
 */
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/state.h"
#include "discovery/k8s_objects.h"

static void build_and_look_up(const struct k8s_store *s)
{
	struct state *st = k8s_store_build(s);

	if (!st)
		return;
	for (int i = 0; i < st->n_svcs; i++) {
		const struct state_service *svc = &st->svcs[i];

		for (int j = 0; j < svc->n_vips; j++)
			(void)state_find_vip(st, &svc->vips[j], svc->port);
		(void)state_find_id(st, svc->id);
		for (int j = 0; j < svc->n_eps; j++) {
			(void)state_endpoint_usable(&svc->eps[j]);
			(void)state_endpoint_fallback(&svc->eps[j]);
		}
	}
	state_free(st);
}

/* Replay the items of |root| as watch events on |s|. */
static void apply_events(struct k8s_store *s, struct json_object *root, uint8_t seed)
{
	struct json_object *items;
	const char *err;
	size_t n;

	if (!json_object_is_type(root, json_type_object) ||
	    !json_object_object_get_ex(root, "items", &items) ||
	    !json_object_is_type(items, json_type_array)) {
		(void)k8s_store_apply(s, (enum k8s_event)(seed % 3), root, &err);
		return;
	}
	n = json_object_array_length(items);
	for (size_t i = 0; i < n && i < 256; i++) {
		struct json_object *item = json_object_array_get_idx(items, i);

		(void)k8s_store_apply(s, (enum k8s_event)((seed + i) % 3), item, &err);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct k8s_store *s = k8s_store_new();
	struct json_tokener *tok;
	struct json_object *root;
	char err[256];

	if (!s)
		return 0;
	if (k8s_store_load_json(s, (const char *)data, size, err, sizeof(err)) == 0)
		build_and_look_up(s);
	tok = json_tokener_new();
	if (tok) {
		root = json_tokener_parse_ex(tok, (const char *)data, (int)(size > 1 << 20 ? 1 << 20 : size));
		if (root) {
			apply_events(s, root, size ? data[0] : 0);
			build_and_look_up(s);
			json_object_put(root);
		}
		json_tokener_free(tok);
	}
	k8s_store_clear(s);
	build_and_look_up(s);
	k8s_store_free(s);
	return 0;
}
