// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl's output helpers shared by the commands: JSON printed pretty
 * (each command builds one object for -o json) and VIP:port text for both
 * address families, and the origins of an exclusion as a JSON array.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

void ctl_print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						   JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* "10.96.0.10:53" or "[fd00::a]:53"; |port| in network order. */
const char *ctl_addr_port_str(const __u8 addr[16], __u16 port, char *buf, size_t len)
{
	const struct h2s_ip *ip = (const struct h2s_ip *)addr;
	char host[INET6_ADDRSTRLEN];

	h2s_ip_str(ip, host, sizeof(host));
	snprintf(buf, len, h2s_ip_is_v4(ip) ? "%s:%u" : "[%s]:%u", host, ntohs(port));
	return buf;
}

/* ["ctl", "k8s"]: every origin excluding a cgroup. */
struct json_object *ctl_origins_json(uint32_t origins)
{
	struct json_object *a = json_object_new_array();

	for (int o = H2S_EXCLUDE_SELF; o <= H2S_EXCLUDE_ORIGIN_MAX; o++)
		if (origins & H2S_EXCLUDE_BIT(o))
			json_object_array_add(a, json_object_new_string(bpf_maps_origin_name(
						     (enum h2s_exclude_origin)o)));
	return a;
}
