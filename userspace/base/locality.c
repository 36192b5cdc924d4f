// SPDX-License-Identifier: Apache-2.0
/*
 * Locality of endpoints (see locality.h). Tiers follow kube-proxy: hints, when
 * every ready endpoint of a Service has them and some name this node (zone),
 * decide the set; else nodeName and zone do. Unlike kube-proxy's filter, a
 * tier is only a preference: the balancer falls over to the next one.
 */
#include <errno.h>
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

/* Where |ep| runs, and its tier for a service whose tiers in force are |t|. */
static void resolve_ep(const struct state_endpoint *ep, const struct state *st, uint8_t t,
		       bool node_hints, bool zone_hints, uint8_t *loc, uint8_t *tier)
{
	enum state_locality l = where(ep, st);
	bool on_node =
	    node_hints ? locality_list_has(ep->for_nodes, st->node_name) : l == STATE_LOC_NODE;
	/* Zone tiers need this node's zone: without it only the node tier is. */
	bool in_zone = zone_hints ? locality_list_has(ep->for_zones, st->node_zone)
				  : st->node_zone[0] && l >= STATE_LOC_ZONE;

	*loc = (uint8_t)l;
	*tier = STATE_TIER_REST;
	if (t == STATE_TOPO_NODE && on_node)
		*tier = STATE_TIER_NODE;
	else if ((t == STATE_TOPO_NODE || t == STATE_TOPO_ZONE) && in_zone)
		*tier = STATE_TIER_ZONE;
}

/* Endpoints shared with a published state (state.h) are written only when
 * something changed, and then as a copy of their own. */
static int resolve_service(struct state_service *svc, const struct state *st)
{
	bool zone_hints = st->node_zone[0] && hints_decide(svc, true, st->node_zone);
	bool node_hints = st->node_name[0] && hints_decide(svc, false, st->node_name);
	uint8_t t = svc->topology, loc, tier;
	struct state_endpoint *eps;
	int i;

	if (t == STATE_TOPO_DEFAULT)
		t = node_hints ? STATE_TOPO_NODE : zone_hints ? STATE_TOPO_ZONE : STATE_TOPO_OFF;
	svc->topology_in_force = t;
	for (i = 0; i < svc->n_eps; i++) {
		resolve_ep(&svc->eps[i], st, t, node_hints, zone_hints, &loc, &tier);
		if (loc != svc->eps[i].locality || tier != svc->eps[i].tier)
			break;
	}
	if (i == svc->n_eps)
		return 0;
	eps = state_service_eps_own(svc);
	if (!eps)
		return -ENOMEM;
	for (; i < svc->n_eps; i++)
		resolve_ep(&eps[i], st, t, node_hints, zone_hints, &eps[i].locality, &eps[i].tier);
	return 0;
}

int locality_resolve(struct state *st, const char *node, const char *zone)
{
	char name[sizeof(st->node_name)], node_zone[sizeof(st->node_zone)] = "";
	int err = 0;

	snprintf(name, sizeof(name), "%s", node ? node : "");
	if (zone && zone[0])
		snprintf(node_zone, sizeof(node_zone), "%s", zone);
	for (int i = 0; !node_zone[0] && name[0] && i < st->n_nodes; i++)
		if (!strcmp(st->nodes[i].name, name))
			memcpy(node_zone, st->nodes[i].zone, sizeof(node_zone));
	/* A source may resolve a state before the daemon does, alike. */
	if (st->locality_resolved && !strcmp(name, st->node_name) &&
	    !strcmp(node_zone, st->node_zone))
		return 0;
	memcpy(st->node_name, name, sizeof(name));
	memcpy(st->node_zone, node_zone, sizeof(node_zone));
	for (int i = 0; i < st->n_svcs; i++)
		if (resolve_service(&st->svcs[i], st))
			err = -ENOMEM;
	st->locality_resolved = !err;
	return err;
}
