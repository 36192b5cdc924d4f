// SPDX-License-Identifier: Apache-2.0
/*
 * Locality of endpoints (see locality.h). Tiers follow kube-proxy: hints, when
 * every ready endpoint of a Service has them and some name this node (zone),
 * decide the set; else nodeName and zone do. Unlike kube-proxy's filter, a
 * tier is only a preference: the balancer falls over to the next one.
 */
#include <stdio.h>
#include <string.h>

#include "base/locality.h"

bool locality_list_has(const char *list, const char *name)
{
	size_t n = strlen(name);

	if (!n)
		return false;
	for (const char *p = list; *p;) {
		const char *end = strchr(p, ',');

		if (!end)
			return false;
		if ((size_t)(end - p) == n && !memcmp(p, name, n))
			return true;
		p = end + 1;
	}
	return false;
}

const char *locality_name(enum state_locality l)
{
	static const char *const names[] = {"unknown", "other", "zone", "node"};

	return l <= STATE_LOC_NODE ? names[l] : "unknown";
}

static enum state_locality where(const struct state_endpoint *ep, const struct state *st)
{
	if (st->node_name[0] && ep->node[0] && !strcmp(ep->node, st->node_name))
		return STATE_LOC_NODE;
	if (st->node_zone[0] && ep->zone[0])
		return strcmp(ep->zone, st->node_zone) ? STATE_LOC_OTHER : STATE_LOC_ZONE;
	if (st->node_name[0] && ep->node[0])
		return STATE_LOC_OTHER;
	return STATE_LOC_UNKNOWN;
}

/* kube-proxy's topologyModeFromHints(), one kind of hint: the hint names set
 * |name|'s tier when every ready endpoint has one and some name |name|. */
static bool hints_decide(const struct state_service *svc, bool zones, const char *name)
{
	bool all = true, here = false;

	for (int i = 0; i < svc->n_eps; i++) {
		const struct state_endpoint *ep = &svc->eps[i];
		const char *h = zones ? ep->for_zones : ep->for_nodes;

		if (!ep->ready)
			continue;
		all &= h[0] != '\0';
		here |= locality_list_has(h, name);
	}
	return all && here;
}

static void resolve_service(struct state_service *svc, const struct state *st)
{
	bool zone_hints = st->node_zone[0] && hints_decide(svc, true, st->node_zone);
	bool node_hints = st->node_name[0] && hints_decide(svc, false, st->node_name);
	uint8_t t = svc->topology;

	if (t == STATE_TOPO_DEFAULT)
		t = node_hints ? STATE_TOPO_NODE : zone_hints ? STATE_TOPO_ZONE : STATE_TOPO_OFF;
	svc->topology_in_force = t;
	for (int i = 0; i < svc->n_eps; i++) {
		struct state_endpoint *ep = &svc->eps[i];
		bool on_node = node_hints ? locality_list_has(ep->for_nodes, st->node_name)
					  : ep->locality == STATE_LOC_NODE;
		/* Zone tiers need this node's zone: without it only the node tier is. */
		bool in_zone = zone_hints ? locality_list_has(ep->for_zones, st->node_zone)
					  : st->node_zone[0] && ep->locality >= STATE_LOC_ZONE;

		ep->tier = STATE_TIER_REST;
		if (t == STATE_TOPO_NODE && on_node)
			ep->tier = STATE_TIER_NODE;
		else if ((t == STATE_TOPO_NODE || t == STATE_TOPO_ZONE) && in_zone)
			ep->tier = STATE_TIER_ZONE;
	}
}

void locality_resolve(struct state *st, const char *node, const char *zone)
{
	snprintf(st->node_name, sizeof(st->node_name), "%s", node ? node : "");
	st->node_zone[0] = '\0';
	if (zone && zone[0])
		snprintf(st->node_zone, sizeof(st->node_zone), "%s", zone);
	for (int i = 0; !st->node_zone[0] && st->node_name[0] && i < st->n_nodes; i++)
		if (!strcmp(st->nodes[i].name, st->node_name))
			memcpy(st->node_zone, st->nodes[i].zone, sizeof(st->node_zone));
	for (int i = 0; i < st->n_svcs; i++) {
		struct state_service *svc = &st->svcs[i];

		for (int j = 0; j < svc->n_eps; j++)
			svc->eps[j].locality = (uint8_t)where(&svc->eps[j], st);
		resolve_service(svc, st);
	}
}
