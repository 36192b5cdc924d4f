// SPDX-License-Identifier: Apache-2.0
/*
 * The h2splitctl commands that read or write the pinned BPF state and nothing
 * else: counters, exclude, include, uninstall, and opening the pinned maps
 * with a message that names the fix. They work while h2splitd is down;
 * exclude/include set and clear only the h2splitctl origin bit.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ctype.h>
#include <limits.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

int ctl_open_maps(const struct ctl *c, struct bpf_maps *m)
{
	const char *bad = NULL;
	int err = bpf_maps_open_pinned(c->bpffs, m, &bad);

	if (err == -ENOENT)
		fprintf(stderr,
			"h2split is not installed under %s (no pinned %s): start h2splitd, or "
			"pass the daemon's --bpffs\n",
			c->bpffs, bad ? bad : "maps");
	else if (err == -EPROTO)
		fprintf(stderr,
			"%s/%s has another layout than this h2splitctl (%s) knows: use the "
			"h2splitctl of the h2splitd that pinned it, or start this version's "
			"h2splitd, which upgrades the pins\n",
			c->bpffs, bad ? bad : "a map", H2SPLIT_VERSION);
	else if (err)
		fprintf(stderr, "open pinned maps under %s: %s\n", c->bpffs, strerror(-err));
	return err;
}

/* ---- counters ---- */

int ctl_cmd_counters(const struct ctl *c)
{
	uint64_t v[H2S_CNT_MAX];
	struct json_object *o;
	struct bpf_maps m;
	int err;

	if (ctl_open_maps(c, &m))
		return EXIT_ERR;
	err = bpf_maps_counters_read(&m, v);
	bpf_maps_close(&m);
	if (err) {
		fprintf(stderr, "read h2s_counters: %s\n", strerror(-err));
		return EXIT_ERR;
	}
	if (!c->json) {
		for (int i = 0; i < H2S_CNT_MAX; i++)
			printf("%-24s %20llu  %s\n", bpf_maps_counter_name((enum h2s_counter)i),
			       (unsigned long long)v[i],
			       bpf_maps_counter_help((enum h2s_counter)i));
		return EXIT_OK;
	}
	o = json_object_new_object();
	for (int i = 0; i < H2S_CNT_MAX; i++)
		json_object_object_add(o, bpf_maps_counter_name((enum h2s_counter)i),
				       json_object_new_uint64(v[i]));
	ctl_print_json(o);
	return EXIT_OK;
}

/* ---- exclude, include, uninstall ---- */

int ctl_cmd_exclude(const struct ctl *c)
{
	uint32_t origins = 0, others;
	struct bpf_maps m;
	uint64_t id = 0;
	char by[64];
	int err;

	err = cgroup_check_dir(c->arg);
	if (err) {
		fprintf(stderr,
			"%s is not a cgroup v2 directory (%s): pass a directory under the "
			"cgroup2 mount\n",
			c->arg,
			err == -EMEDIUMTYPE ? "not on a cgroup2 filesystem" : strerror(-err));
		return EXIT_ERR;
	}
	if (ctl_open_maps(c, &m))
		return EXIT_ERR;
	err = bpf_maps_exclude_dir(&m, c->arg, H2S_EXCLUDE_CTL, &id, &origins);
	bpf_maps_close(&m);
	if (err) {
		fprintf(stderr, "exclude %s: %s%s\n", c->arg, strerror(-err),
			err == -E2BIG ? " (the exclusion map is full: include cgroups that are "
					"gone, see h2splitctl status)"
				      : "");
		return EXIT_ERR;
	}
	others = origins & ~H2S_EXCLUDE_BIT(H2S_EXCLUDE_CTL);
	if (c->json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "excluded", json_object_new_string(c->arg));
		json_object_object_add(o, "cgroup_id", json_object_new_uint64(id));
		json_object_object_add(o, "excluded_by", ctl_origins_json(origins));
		ctl_print_json(o);
	} else {
		printf("excluded %s (cgroup id %llu): its connects, and those of cgroups below it, "
		       "go direct%s%s%s\n",
		       c->arg, (unsigned long long)id, others ? " (also excluded by " : "",
		       others ? bpf_maps_origins_str(others, by, sizeof(by)) : "",
		       others ? ")" : "");
	}
	return EXIT_OK;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/* Why an origin other than the operator's excludes a cgroup, and what undoes it. */
static const char *origin_fix(uint32_t origins)
{
	if (origins & H2S_EXCLUDE_BIT(H2S_EXCLUDE_K8S))
		return "the pod or its namespace has h2split.io/enabled: \"false\"; remove that "
		       "to have it redirected";
	if (origins & H2S_EXCLUDE_BIT(H2S_EXCLUDE_FLAG))
		return "h2splitd --exclude-cgroup names it";
	return "it is h2splitd's own cgroup";
}

static void include_text(const struct ctl *c, uint64_t id, bool by_ctl, uint32_t left)
{
	char by[64];

	if (!by_ctl && !left)
		printf("%s (cgroup id %llu) was not excluded: nothing to do\n", c->arg,
		       (unsigned long long)id);
	else if (!left)
		printf("%s (cgroup id %llu) is redirected again\n", c->arg, (unsigned long long)id);
	else
		printf("%s (cgroup id %llu) %s, but stays excluded by %s: its connects still go "
		       "direct (%s)\n",
		       c->arg, (unsigned long long)id,
		       by_ctl ? "is no longer excluded by h2splitctl"
			      : "was not excluded by h2splitctl (nothing to undo)",
		       bpf_maps_origins_str(left, by, sizeof(by)), origin_fix(left));
}

int ctl_cmd_include(const struct ctl *c)
{
	uint32_t left = 0;
	struct bpf_maps m;
	uint64_t id;
	int err;

	err = cgroup_id_of(c->arg, &id);
	if (err == -ENOENT && all_digits(c->arg)) {
		id = strtoull(c->arg, NULL, 10);
		err = 0;
	}
	if (err) {
		fprintf(stderr,
			"%s: %s: pass a cgroup v2 directory or a cgroup id from "
			"`h2splitctl status`\n",
			c->arg, strerror(-err));
		return EXIT_ERR;
	}
	if (ctl_open_maps(c, &m))
		return EXIT_ERR;
	/* Only the operator's own exclusion: the daemon's and a pod's opt-out are
	 * kept by their origins, which would not notice one gone (the Kubernetes
	 * source writes the map only when its set of pods changes). */
	err = bpf_maps_include(&m, id, H2S_EXCLUDE_CTL, &left);
	bpf_maps_close(&m);
	if (err && err != -ENOENT) {
		fprintf(stderr, "include %s: %s\n", c->arg, strerror(-err));
		return EXIT_ERR;
	}
	if (c->json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "included", json_object_new_string(c->arg));
		json_object_object_add(o, "cgroup_id", json_object_new_uint64(id));
		json_object_object_add(o, "was_excluded", json_object_new_boolean(!err));
		json_object_object_add(o, "excluded_by", ctl_origins_json(left));
		ctl_print_json(o);
	} else {
		include_text(c, id, !err, left);
	}
	return EXIT_OK;
}

int ctl_cmd_uninstall(const struct ctl *c)
{
	struct bpf_loader_status st;
	bool any = false;
	int err;

	if (bpf_loader_status(c->bpffs, &st) == 0) {
		for (int i = 0; i < BPF_MAPS_COUNT; i++)
			any |= st.map_pinned[i];
		for (int i = 0; i < BPF_LOADER_PROGS; i++)
			any |= st.links[i].pinned;
	}
	err = bpf_loader_uninstall(c->bpffs);
	if (err) {
		fprintf(stderr, "uninstall under %s: %s (see the log above)\n", c->bpffs,
			strerror(-err));
		return EXIT_ERR;
	}
	if (c->json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "pin_root", json_object_new_string(c->bpffs));
		json_object_object_add(o, "removed", json_object_new_boolean(any));
		ctl_print_json(o);
	} else {
		printf(any ? "uninstalled: programs detached, pins under %s removed\n"
			   : "nothing installed under %s\n",
		       c->bpffs);
	}
	return EXIT_OK;
}
