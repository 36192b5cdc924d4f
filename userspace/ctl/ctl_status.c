// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl status: what is installed, from the pins (maps, attached links,
 * listener slots, exclusions, counters), joined with what a running h2splitd
 * reports it has applied. Works while the daemon is down; exits 1 when
 * h2split is not installed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_coexist.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

/* What the running daemon has applied, from its admin API. */
struct daemon_view {
	bool reached, ready;
	char detail[160]; /* /readyz's answer, first line */
	uint64_t generation;
	char version[96];
	int services, retired;
	struct json_object *adopt; /* owned: /adopt, NULL when not answered */
};

static void daemon_collect(const struct ctl *c, struct daemon_view *dv)
{
	struct json_object *root, *a;
	char *body = NULL;
	int status = 0;

	memset(dv, 0, sizeof(*dv));
	if (!ctl_admin_fetch(c, "/readyz", &body, &status))
		return;
	dv->reached = true;
	dv->ready = status == 200;
	snprintf(dv->detail, sizeof(dv->detail), "%.*s", (int)strcspn(body, "\n"), body);
	free(body);
	body = NULL;
	if (!ctl_admin_fetch(c, "/services", &body, &status) || status != 200) {
		free(body);
		return;
	}
	root = json_tokener_parse(body);
	free(body);
	if (!root)
		return;
	dv->generation = (uint64_t)ctl_jint(root, "generation");
	snprintf(dv->version, sizeof(dv->version), "%s", ctl_jstr(root, "version"));
	if (json_object_object_get_ex(root, "services", &a))
		dv->services = (int)json_object_array_length(a);
	if (json_object_object_get_ex(root, "retired", &a))
		dv->retired = (int)json_object_array_length(a);
	json_object_put(root);
	body = NULL;
	if (ctl_admin_fetch(c, "/adopt", &body, &status) && status == 200)
		dv->adopt = json_tokener_parse(body);
	free(body);
}

/* "adoption" line: the mode, the totals and the last pass (h2splitctl adopt). */
static void adopt_text(struct json_object *a)
{
	struct json_object *t = NULL, *last, *cur;

	if (!a)
		return;
	json_object_object_get_ex(a, "total", &t);
	printf("adoption     %s, max wait %lld s%s; %lld pass(es); connections closed idle %lld, "
	       "busy %lld, left alone (never idle) %lld, gone %lld, failed %lld\n",
	       ctl_jstr(a, "mode"), (long long)ctl_jint(a, "max_wait_ms") / 1000,
	       json_object_get_boolean(json_object_object_get(a, "supported"))
		   ? ""
		   : " (kernel cannot destroy sockets: CONFIG_INET_DIAG_DESTROY)",
	       (long long)ctl_jint(a, "passes_done"), (long long)ctl_jint(t, "idle"),
	       (long long)ctl_jint(t, "forced"), (long long)ctl_jint(t, "not_idle"),
	       (long long)ctl_jint(t, "gone"), (long long)ctl_jint(t, "failed"));
	if (json_object_object_get_ex(a, "current", &cur)) {
		printf("  running    ");
		ctl_adopt_print_pass(cur);
	}
	if (json_object_object_get_ex(a, "last", &last)) {
		printf("  last       ");
		ctl_adopt_print_pass(last);
	}
}

struct listener_view {
	char addr[INET6_ADDRSTRLEN + 8]; /* "" when no address is configured */
	bool alive;
	uint64_t cookie;
};

static void read_listeners(const struct bpf_maps *m, struct listener_view lv[H2S_LISTENER_SLOTS])
{
	struct h2s_config cfg = {};

	memset(lv, 0, sizeof(*lv) * H2S_LISTENER_SLOTS);
	if (bpf_maps_get_config(m, &cfg) == 0) {
		if (cfg.listen_v4_port)
			ctl_addr_port_str(cfg.listen_v4, cfg.listen_v4_port, lv[0].addr,
					  sizeof(lv[0].addr));
		if (cfg.listen_v6_port)
			ctl_addr_port_str(cfg.listen_v6, cfg.listen_v6_port, lv[1].addr,
					  sizeof(lv[1].addr));
	}
	for (int s = 0; s < H2S_LISTENER_SLOTS; s++)
		lv[s].alive =
		    bpf_maps_listener_cookie(m, (enum h2s_listener_slot)s, &lv[s].cookie) == 0;
}

static const char *cgroup_path_or(const char *cg_root, uint64_t id, char *buf, size_t len,
				  const char *fallback)
{
	if (!cg_root[0] || cgroup_path_of_id(cg_root, id, buf, len) != 0)
		snprintf(buf, len, "%s", fallback);
	return buf;
}

struct status_view {
	struct bpf_loader_status st;
	bool maps_open;
	const char *other_layout; /* static: a pinned map this build cannot read, or NULL */
	struct listener_view lv[H2S_LISTENER_SLOTS];
	int n_services;
	struct bpf_maps_excluded *excl; /* owned */
	int n_excl;
	uint64_t counters[H2S_CNT_MAX];
	bool installed, attached, redirecting;
	char cg_root[PATH_MAX];
	struct daemon_view dv;
	bool scanned; /* |foreign| holds a scan of the attach cgroup */
	struct bpf_coexist_report foreign;
};

/* Other programs on the hooks, at the cgroup the connect4 link attaches to
 * and above it (kernel/bpf_coexist.h). */
static void foreign_collect(const struct ctl *c, struct status_view *v)
{
	const struct bpf_loader_link_status *ls = &v->st.links[BPF_LOADER_CONNECT4];
	char dir[PATH_MAX];

	if (!ls->attached || !v->cg_root[0] ||
	    cgroup_path_of_id(v->cg_root, ls->cgroup_id, dir, sizeof(dir)))
		return;
	v->scanned = bpf_coexist_scan(c->bpffs, dir, &v->foreign) == 0;
}

static int status_collect(const struct ctl *c, struct status_view *v)
{
	const char *bad = NULL;
	struct bpf_maps m;
	struct bpf_maps_svc_entry *svcs = NULL;
	int err;

	memset(v, 0, sizeof(*v));
	if (cgroup_v2_root(v->cg_root, sizeof(v->cg_root)))
		v->cg_root[0] = '\0';
	err = bpf_loader_status(c->bpffs, &v->st);
	if (err) {
		fprintf(stderr, "read pins under %s: %s\n", c->bpffs, strerror(-err));
		return err;
	}
	foreign_collect(c, v);
	v->installed = v->attached = true;
	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		v->installed &= v->st.map_pinned[i];
	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		v->installed &= v->st.links[i].pinned;
		v->attached &= v->st.links[i].attached;
	}
	if (!v->st.map_pinned[BPF_MAPS_SERVICES])
		return 0;
	err = bpf_maps_open_pinned(c->bpffs, &m, &bad);
	if (err == -EPROTO)
		v->other_layout = bad;
	if (err)
		return 0;
	v->maps_open = true;
	read_listeners(&m, v->lv);
	if (bpf_maps_services_read(&m, &svcs, &v->n_services) != 0)
		v->n_services = -1;
	free(svcs);
	if (bpf_maps_excluded_read(&m, &v->excl, &v->n_excl) != 0)
		v->n_excl = -1;
	bpf_maps_counters_read(&m, v->counters);
	bpf_maps_close(&m);
	for (int s = 0; s < H2S_LISTENER_SLOTS; s++)
		v->redirecting |= v->attached && v->lv[s].alive && v->lv[s].addr[0];
	daemon_collect(c, &v->dv);
	return 0;
}

static struct json_object *daemon_json(const struct ctl *c, const struct daemon_view *dv)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "admin", json_object_new_string(c->admin));
	json_object_object_add(o, "reached", json_object_new_boolean(dv->reached));
	if (!dv->reached)
		return o;
	json_object_object_add(o, "ready", json_object_new_boolean(dv->ready));
	json_object_object_add(o, "readyz", json_object_new_string(dv->detail));
	json_object_object_add(o, "generation", json_object_new_uint64(dv->generation));
	json_object_object_add(o, "version", json_object_new_string(dv->version));
	json_object_object_add(o, "services", json_object_new_int(dv->services));
	json_object_object_add(o, "retired_services", json_object_new_int(dv->retired));
	if (dv->adopt)
		json_object_object_add(o, "adoption", json_object_get(dv->adopt));
	return o;
}

static struct json_object *status_json(const struct ctl *c, const struct status_view *v)
{
	struct json_object *o = json_object_new_object(), *maps = json_object_new_object();
	struct json_object *links = json_object_new_array();
	char buf[PATH_MAX];

	json_object_object_add(o, "pin_root", json_object_new_string(c->bpffs));
	json_object_object_add(o, "installed", json_object_new_boolean(v->installed));
	json_object_object_add(o, "attached", json_object_new_boolean(v->attached));
	json_object_object_add(o, "redirecting", json_object_new_boolean(v->redirecting));
	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		json_object_object_add(maps, bpf_maps_name((enum bpf_maps_id)i),
				       json_object_new_boolean(v->st.map_pinned[i]));
	json_object_object_add(o, "maps", maps);
	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		const struct bpf_loader_link_status *ls = &v->st.links[i];
		struct json_object *l = json_object_new_object();

		json_object_object_add(
		    l, "program",
		    json_object_new_string(bpf_loader_prog_name((enum bpf_loader_prog)i)));
		json_object_object_add(
		    l, "hook",
		    json_object_new_string(bpf_loader_prog_hook((enum bpf_loader_prog)i)));
		json_object_object_add(l, "pinned", json_object_new_boolean(ls->pinned));
		json_object_object_add(l, "attached", json_object_new_boolean(ls->attached));
		json_object_object_add(l, "prog_id", json_object_new_int64(ls->prog_id));
		json_object_object_add(l, "cgroup_id", json_object_new_uint64(ls->cgroup_id));
		json_object_object_add(l, "cgroup",
				       ls->attached
					   ? json_object_new_string(cgroup_path_or(
						 v->cg_root, ls->cgroup_id, buf, sizeof(buf), ""))
					   : NULL);
		json_object_array_add(links, l);
	}
	json_object_object_add(o, "programs", links);
	if (v->scanned) {
		struct json_object *fa = json_object_new_array();

		for (int i = 0; i < v->foreign.n; i++) {
			const struct bpf_coexist_prog *p = &v->foreign.progs[i];
			struct json_object *e = json_object_new_object();

			json_object_object_add(
			    e, "hook", json_object_new_string(bpf_coexist_hook_name(p->hook)));
			json_object_object_add(e, "id", json_object_new_int64(p->id));
			json_object_object_add(e, "name", json_object_new_string(p->name));
			json_object_object_add(e, "cgroup", json_object_new_string(p->cgroup));
			json_object_object_add(
			    e, "position", json_object_new_string(bpf_coexist_pos_name(p->pos)));
			json_object_array_add(fa, e);
		}
		json_object_object_add(o, "foreign_programs", fa);
		json_object_object_add(
		    o, "connect_first",
		    json_object_new_string(v->foreign.n_first ? "other" : "h2split"));
	}
	json_object_object_add(o, "daemon", daemon_json(c, &v->dv));
	if (v->other_layout)
		json_object_object_add(o, "map_of_another_layout",
				       json_object_new_string(v->other_layout));
	if (!v->maps_open)
		return o;

	struct json_object *lis = json_object_new_object();

	for (int s = 0; s < H2S_LISTENER_SLOTS; s++) {
		struct json_object *l = json_object_new_object();

		json_object_object_add(
		    l, "address", v->lv[s].addr[0] ? json_object_new_string(v->lv[s].addr) : NULL);
		json_object_object_add(l, "alive", json_object_new_boolean(v->lv[s].alive));
		json_object_object_add(l, "socket_cookie",
				       v->lv[s].alive ? json_object_new_uint64(v->lv[s].cookie)
						      : NULL);
		json_object_object_add(lis, s == H2S_LISTENER_V4 ? "v4" : "v6", l);
	}
	json_object_object_add(o, "listeners", lis);
	json_object_object_add(o, "services", json_object_new_int(v->n_services));

	struct json_object *ex = json_object_new_array();

	for (int i = 0; i < v->n_excl; i++) {
		struct json_object *e = json_object_new_object();

		json_object_object_add(e, "cgroup_id",
				       json_object_new_uint64(v->excl[i].cgroup_id));
		json_object_object_add(e, "origins", ctl_origins_json(v->excl[i].origins));
		cgroup_path_or(v->cg_root, v->excl[i].cgroup_id, buf, sizeof(buf), "");
		json_object_object_add(e, "path", buf[0] ? json_object_new_string(buf) : NULL);
		json_object_array_add(ex, e);
	}
	json_object_object_add(o, "excluded_cgroups", ex);

	struct json_object *cnt = json_object_new_object();

	for (int i = 0; i < H2S_CNT_MAX; i++)
		json_object_object_add(cnt, bpf_maps_counter_name((enum h2s_counter)i),
				       json_object_new_uint64(v->counters[i]));
	json_object_object_add(o, "counters", cnt);
	return o;
}

static void status_text(const struct ctl *c, const struct status_view *v)
{
	char buf[PATH_MAX];

	bool any = false;

	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		any |= v->st.map_pinned[i];
	for (int i = 0; i < BPF_LOADER_PROGS; i++)
		any |= v->st.links[i].pinned;
	if (!any) {
		printf("h2split is not installed under %s (no pins): start h2splitd, or pass the "
		       "daemon's --bpffs\n",
		       c->bpffs);
		return;
	}
	printf("pin root     %s: %s\n", c->bpffs,
	       v->installed ? "installed" : "partly installed (see below)");
	for (int i = 0; i < BPF_MAPS_COUNT; i++)
		if (!v->st.map_pinned[i])
			printf("  missing map  %s\n", bpf_maps_name((enum bpf_maps_id)i));
	printf("programs\n");
	for (int i = 0; i < BPF_LOADER_PROGS; i++) {
		const struct bpf_loader_link_status *ls = &v->st.links[i];

		printf("  %-13s %-14s ", bpf_loader_prog_hook((enum bpf_loader_prog)i),
		       bpf_loader_prog_name((enum bpf_loader_prog)i));
		if (!ls->pinned)
			printf("not pinned\n");
		else if (!ls->attached)
			printf("pinned, detached (its cgroup is gone?)\n");
		else
			printf("attached to %s (cgroup id %llu, prog id %u)\n",
			       cgroup_path_or(v->cg_root, ls->cgroup_id, buf, sizeof(buf), "?"),
			       (unsigned long long)ls->cgroup_id, ls->prog_id);
	}
	if (v->scanned) {
		printf("other progs  %d on h2split's hooks at its cgroup, above and below; "
		       "connect4/6 see the address first: %s\n",
		       v->foreign.n,
		       v->foreign.n_first ? "ANOTHER PROGRAM (see below)" : "h2split");
		for (int i = 0; i < v->foreign.n; i++) {
			const struct bpf_coexist_prog *p = &v->foreign.progs[i];

			printf("  %-13s id %-6u %-16s %-10s at %s%s\n",
			       bpf_coexist_hook_name(p->hook), p->id, p->name,
			       bpf_coexist_pos_name(p->pos), p->cgroup[0] ? p->cgroup : "?",
			       p->pos == COEXIST_OVERRIDDEN
				   ? ": overridden by h2split's attachment below it"
			       : p->pos == COEXIST_BEFORE && p->hook <= COEXIST_CONNECT6
				   ? ": sees the ClusterIP first, connects it rewrites are not "
				     "redirected"
				   : "");
		}
	}
	if (v->other_layout)
		printf("maps         %s has another layout than this h2splitctl (%s) reads: start "
		       "this version's h2splitd (it converts the pins), or use the running one's "
		       "h2splitctl\n",
		       v->other_layout, H2SPLIT_VERSION);
	if (!v->maps_open)
		return;
	printf("listeners\n");
	for (int s = 0; s < H2S_LISTENER_SLOTS; s++)
		printf("  %s  %-24s %s\n", s == H2S_LISTENER_V4 ? "v4" : "v6",
		       v->lv[s].addr[0] ? v->lv[s].addr : "-",
		       v->lv[s].alive ? "alive" : "none (connects go direct)");
	printf("redirecting  %s\n", v->redirecting ? "yes" : "no");
	if (!v->dv.reached)
		printf("daemon       no admin API at %s\n", c->admin);
	else
		printf("daemon       %s; applied generation %llu, version %s (%d services, "
		       "%d retired)\n",
		       v->dv.ready ? "ready" : v->dv.detail, (unsigned long long)v->dv.generation,
		       v->dv.version[0] ? v->dv.version : "-", v->dv.services, v->dv.retired);
	adopt_text(v->dv.adopt);
	printf("services     %d VIP:port entries\n", v->n_services);
	printf("excluded     %d cgroup(s), by: self (h2splitd's own), flag (--exclude-cgroup), "
	       "ctl (h2splitctl exclude), k8s (opted-out pod or namespace)\n",
	       v->n_excl);
	for (int i = 0; i < v->n_excl; i++) {
		char by[64];

		printf("  %-18s %s (id %llu)\n",
		       bpf_maps_origins_str(v->excl[i].origins, by, sizeof(by)),
		       cgroup_path_or(v->cg_root, v->excl[i].cgroup_id, buf, sizeof(buf),
				      "(cgroup gone)"),
		       (unsigned long long)v->excl[i].cgroup_id);
	}
	printf("counters    ");
	for (int i = 0; i < H2S_CNT_MAX; i++)
		if (v->counters[i])
			printf(" %s=%llu", bpf_maps_counter_name((enum h2s_counter)i),
			       (unsigned long long)v->counters[i]);
	printf("\n");
}

int ctl_cmd_status(const struct ctl *c)
{
	struct status_view v;
	int err = status_collect(c, &v);

	if (err)
		return EXIT_ERR;
	if (c->json)
		ctl_print_json(status_json(c, &v));
	else
		status_text(c, &v);
	free(v.excl);
	json_object_put(v.dv.adopt);
	return v.installed ? EXIT_OK : EXIT_ERR;
}
