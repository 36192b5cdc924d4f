/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Locality: where each endpoint runs seen from this node, and which tier a
 * pick prefers it in, decided once per desired state from the Service's
 * trafficDistribution, h2split.io/topology and the EndpointSlice hints, the
 * way kube-proxy reads them (pkg/proxy/topology.go).
 */
#ifndef H2SPLIT_LOCALITY_H
#define H2SPLIT_LOCALITY_H

#include "base/state.h"

/* Set st->node_name, st->node_zone (|zone| when not "", else the zone label
 * of the Node named |node| among st->nodes) and every endpoint's locality and
 * tier, and every service's topology_in_force. Without a zone, zone tiers are
 * empty (the Service routes as without locality unless it prefers the node).
 * Endpoints shared with another state are copied before they are written.
 * 0, or -ENOMEM: the services whose endpoints could not be copied keep the
 * locality they had. */
int locality_resolve(struct state *st, const char *node, const char *zone);
/* True when |name| is one of the comma-terminated names in |list|. */
bool locality_list_has(const char *list, const char *name);
/* "node", "zone", "other" or "unknown". */
const char *locality_name(enum state_locality l);

#endif
