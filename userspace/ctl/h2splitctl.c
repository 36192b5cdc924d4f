// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl: the operator's view of a node. Reads the pinned BPF maps and
 * links directly, so status, services, counters, exclude, include and
 * uninstall work while h2splitd is down; endpoints and top ask the daemon's
 * admin API, and services adds the balancing settings from it when it
 * answers. Exit codes are a contract (see usage()).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

enum {
	EXIT_OK = 0,
	EXIT_ERR = 1,
	EXIT_USAGE = 2,
	EXIT_NO_DAEMON = 3,
};

#define DEFAULT_ADMIN "127.0.0.1:9901"
#define ADMIN_TIMEOUT_MS 3000
#define ADMIN_MAX_BODY (16 << 20)

struct ctl {
	const char *bpffs; /* pin root */
	const char *admin; /* ADDR:PORT */
	bool json;
	const char *arg; /* the command's argument, if any */
	int interval_ms;  /* top: refresh period */
	int iterations;   /* top: refreshes before exiting; 0: until interrupted */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: h2splitctl [--bpffs DIR] [--admin ADDR:PORT] [-o json] COMMAND [ARG]\n"
		"\n"
		"Commands (read the pinned BPF state; work while h2splitd is down):\n"
		"  status         what is installed: pins, attached programs, listeners, counters\n"
		"  services       redirected VIP:port -> service id; with a running h2splitd\n"
		"                 also each Service's balancing settings in force\n"
		"  counters       BPF decision counters, summed over CPUs\n"
		"  exclude DIR    never redirect connects from cgroup v2 directory DIR or below\n"
		"  include DIR    undo `exclude DIR` (DIR may be a numeric cgroup id, for a\n"
		"                 cgroup that no longer exists); DIR stays excluded while\n"
		"                 h2splitd or a Kubernetes opt-out excludes it too\n"
		"  uninstall      detach every program and remove every pin\n"
		"Commands that ask a running h2splitd (admin API):\n"
		"  endpoints      endpoints per service, with their state and load\n"
		"  top            live requests/s, in-flight and failures per endpoint,\n"
		"                 refreshing every --interval SEC (default 1) until Ctrl-C,\n"
		"                 or --iterations N times; -o json: one array per refresh\n"
		"\n"
		"Options (each also from the environment):\n"
		"  --bpffs DIR        pin root (H2SPLIT_BPFFS, default " BPF_LOADER_PIN_ROOT ")\n"
		"  --admin ADDR:PORT  h2splitd admin API (H2SPLIT_ADMIN, default " DEFAULT_ADMIN
		")\n"
		"  -o, --output FMT   text (default) or json (H2SPLIT_OUTPUT)\n"
		"  -h, --help         this text\n"
		"  --version          print the version\n"
		"\n"
		"Exit codes: 0 ok; 1 error, or h2split not installed (status); 2 usage;\n"
		"3 h2splitd not reachable (endpoints, top).\n");
}

static void print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
						   JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
}

/* "10.96.0.10:53" or "[fd00::a]:53"; |port| in network order. */
static const char *addr_port_str(const __u8 addr[16], __u16 port, char *buf, size_t len)
{
	const struct h2s_ip *ip = (const struct h2s_ip *)addr;
	char host[INET6_ADDRSTRLEN];

	h2s_ip_str(ip, host, sizeof(host));
	snprintf(buf, len, h2s_ip_is_v4(ip) ? "%s:%u" : "[%s]:%u", host, ntohs(port));
	return buf;
}

static int open_maps(const struct ctl *c, struct bpf_maps *m)
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

/* ---- status ---- */

static int admin_connect(const char *addr, char *err, size_t errlen);
static int admin_get(int fd, const char *path, char **body, int *status);
static const char *jstr(struct json_object *o, const char *key);
static int64_t jint(struct json_object *o, const char *key);

/* What the running daemon has applied, from its admin API. */
struct daemon_view {
	bool reached, ready;
	char detail[160]; /* /readyz's answer, first line */
	uint64_t generation;
	char version[96];
	int services, retired;
};

static bool admin_fetch(const struct ctl *c, const char *path, char **body, int *status)
{
	char err[256];
	int fd = admin_connect(c->admin, err, sizeof(err)), rc;

	if (fd < 0)
		return false;
	rc = admin_get(fd, path, body, status);
	close(fd);
	return rc == 0;
}

static void daemon_collect(const struct ctl *c, struct daemon_view *dv)
{
	struct json_object *root, *a;
	char *body = NULL;
	int status = 0;

	memset(dv, 0, sizeof(*dv));
	if (!admin_fetch(c, "/readyz", &body, &status))
		return;
	dv->reached = true;
	dv->ready = status == 200;
	snprintf(dv->detail, sizeof(dv->detail), "%.*s", (int)strcspn(body, "\n"), body);
	free(body);
	body = NULL;
	if (!admin_fetch(c, "/services", &body, &status) || status != 200) {
		free(body);
		return;
	}
	root = json_tokener_parse(body);
	free(body);
	if (!root)
		return;
	dv->generation = (uint64_t)jint(root, "generation");
	snprintf(dv->version, sizeof(dv->version), "%s", jstr(root, "version"));
	if (json_object_object_get_ex(root, "services", &a))
		dv->services = (int)json_object_array_length(a);
	if (json_object_object_get_ex(root, "retired", &a))
		dv->retired = (int)json_object_array_length(a);
	json_object_put(root);
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
			addr_port_str(cfg.listen_v4, cfg.listen_v4_port, lv[0].addr,
				      sizeof(lv[0].addr));
		if (cfg.listen_v6_port)
			addr_port_str(cfg.listen_v6, cfg.listen_v6_port, lv[1].addr,
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
};

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
	return o;
}

/* ["ctl", "k8s"]: every origin excluding a cgroup. */
static struct json_object *origins_json(uint32_t origins)
{
	struct json_object *a = json_object_new_array();

	for (int o = H2S_EXCLUDE_SELF; o <= H2S_EXCLUDE_ORIGIN_MAX; o++)
		if (origins & H2S_EXCLUDE_BIT(o))
			json_object_array_add(a, json_object_new_string(bpf_maps_origin_name(
						     (enum h2s_exclude_origin)o)));
	return a;
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
		json_object_object_add(e, "origins", origins_json(v->excl[i].origins));
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

static int cmd_status(const struct ctl *c)
{
	struct status_view v;
	int err = status_collect(c, &v);

	if (err)
		return EXIT_ERR;
	if (c->json)
		print_json(status_json(c, &v));
	else
		status_text(c, &v);
	free(v.excl);
	return v.installed ? EXIT_OK : EXIT_ERR;
}

/* ---- counters ---- */

static int cmd_counters(const struct ctl *c)
{
	uint64_t v[H2S_CNT_MAX];
	struct json_object *o;
	struct bpf_maps m;
	int err;

	if (open_maps(c, &m))
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
	print_json(o);
	return EXIT_OK;
}

/* ---- exclude, include, uninstall ---- */

static int cmd_exclude(const struct ctl *c)
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
	if (open_maps(c, &m))
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
		json_object_object_add(o, "excluded_by", origins_json(origins));
		print_json(o);
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

static int cmd_include(const struct ctl *c)
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
	if (open_maps(c, &m))
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
		json_object_object_add(o, "excluded_by", origins_json(left));
		print_json(o);
	} else {
		include_text(c, id, !err, left);
	}
	return EXIT_OK;
}

static int cmd_uninstall(const struct ctl *c)
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
		print_json(o);
	} else {
		printf(any ? "uninstalled: programs detached, pins under %s removed\n"
			   : "nothing installed under %s\n",
		       c->bpffs);
	}
	return EXIT_OK;
}

/* ---- admin API (endpoints, top) ---- */

static int admin_connect(const char *addr, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct pollfd p;
	socklen_t sl;
	int fd, e = 0;

	if (config_parse_addr(addr, &ss)) {
		snprintf(err, errlen, "bad admin address %s: expected ADDR:PORT", addr);
		return -EINVAL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -errno;
	}
	sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
		e = errno;
	} else {
		p = (struct pollfd){.fd = fd, .events = POLLOUT};
		sl = sizeof(e);
		if (poll(&p, 1, ADMIN_TIMEOUT_MS) != 1)
			e = ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
			e = errno;
	}
	if (e) {
		snprintf(err, errlen, "connect: %s", strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

/* GET |path| from the admin API; the body (malloc'd) and HTTP status. */
static int admin_get(int fd, const char *path, char **body, int *status)
{
	size_t len = 0, cap = 0;
	char req[512], *buf = NULL, *sep;
	int n;

	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.0\r\nHost: h2splitd\r\nConnection: close\r\n\r\n", path);
	if (write(fd, req, (size_t)n) != n)
		return -EIO;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (len + 4096 + 1 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 16384;
			if (cap > ADMIN_MAX_BODY || !(nb = realloc(buf, cap))) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
		}
		if (poll(&p, 1, ADMIN_TIMEOUT_MS) != 1) {
			free(buf);
			return -ETIMEDOUT;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return -errno;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (!buf)
		return -EPROTO;
	buf[len] = '\0';
	sep = strstr(buf, "\r\n\r\n");
	if (!sep || sscanf(buf, "HTTP/%*d.%*d %d", status) != 1) {
		free(buf);
		return -EPROTO;
	}
	memmove(buf, sep + 4, len - (size_t)(sep + 4 - buf) + 1);
	*body = buf;
	return 0;
}

/* GET |path| as JSON. 0 with |*out| owned by the caller, or an exit code
 * after the message. */
static int admin_json(const struct ctl *c, const char *what, const char *path,
		      struct json_object **out)
{
	char err[256], *body = NULL;
	int fd, status = 0, rc;

	fd = admin_connect(c->admin, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "%s needs a running h2splitd (admin API at %s): %s\n", what,
			c->admin, err);
		return fd == -EINVAL ? EXIT_USAGE : EXIT_NO_DAEMON;
	}
	rc = admin_get(fd, path, &body, &status);
	close(fd);
	if (rc) {
		fprintf(stderr, "%s: admin API at %s: GET %s: %s\n", what, c->admin, path,
			strerror(-rc));
		return EXIT_NO_DAEMON;
	}
	if (status != 200) {
		fprintf(stderr, "%s: admin API at %s answered %d to GET %s\n", what, c->admin,
			status, path);
		free(body);
		return EXIT_ERR;
	}
	*out = json_tokener_parse(body);
	free(body);
	if (!*out) {
		fprintf(stderr, "%s: admin API at %s: GET %s: not JSON\n", what, c->admin, path);
		return EXIT_ERR;
	}
	return EXIT_OK;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static const char *ep_state(struct json_object *ep)
{
	struct json_object *v;

	if (jstr(ep, "state")[0])
		return jstr(ep, "state");
	/* An h2splitd older than the "state" field. */
	if (json_object_object_get_ex(ep, "terminating", &v) && json_object_get_boolean(v))
		return "terminating";
	if (json_object_object_get_ex(ep, "ready", &v) && json_object_get_boolean(v))
		return "ready";
	return "not-ready";
}

/* Calls |fn| for every endpoint of every service in an /endpoints answer. */
static void for_each_endpoint(struct json_object *root,
			      void (*fn)(struct json_object *svc, struct json_object *ep, void *arg),
			      void *arg)
{
	struct json_object *svcs, *eps;

	if (!json_object_object_get_ex(root, "services", &svcs))
		return;
	for (size_t i = 0; i < json_object_array_length(svcs); i++) {
		struct json_object *svc = json_object_array_get_idx(svcs, i);

		if (!json_object_object_get_ex(svc, "endpoints", &eps))
			continue;
		for (size_t j = 0; j < json_object_array_length(eps); j++)
			fn(svc, json_object_array_get_idx(eps, j), arg);
	}
}

/* ---- services: the BPF map, joined with the daemon's /services ---- */

/* The /services list of a running h2splitd, or NULL (with a note: the
 * command still works from the BPF map alone). */
static struct json_object *services_in_force(const struct ctl *c)
{
	struct json_object *root, *svcs = NULL;
	char err[256], *body = NULL;
	int fd, status = 0, rc;

	fd = admin_connect(c->admin, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr,
			"services: balancing settings not shown: h2splitd admin API at %s: %s\n",
			c->admin, err);
		return NULL;
	}
	rc = admin_get(fd, "/services", &body, &status);
	close(fd);
	root = !rc && status == 200 ? json_tokener_parse(body) : NULL;
	free(body);
	if (root && json_object_object_get_ex(root, "services", &svcs))
		json_object_get(svcs);
	else
		fprintf(stderr,
			"services: balancing settings not shown: admin API at %s: GET /services: "
			"%s (HTTP %d)\n",
			c->admin, rc ? strerror(-rc) : "no service list", status);
	json_object_put(root);
	return svcs;
}

/* The entry of service |id| in |svcs|, or NULL. */
static struct json_object *service_by_id(struct json_object *svcs, int64_t id)
{
	for (size_t i = 0; svcs && i < json_object_array_length(svcs); i++) {
		struct json_object *s = json_object_array_get_idx(svcs, i);

		if (jint(s, "id") == id)
			return s;
	}
	return NULL;
}

/* "-" for no limit, else the number. */
static const char *limit_str(int64_t v, char *buf, size_t len)
{
	if (!v)
		return "-";
	snprintf(buf, len, "%lld", (long long)v);
	return buf;
}

/* "200ms", "5s". */
static const char *ms_str(int64_t ms, char *buf, size_t len)
{
	if (ms % 1000)
		snprintf(buf, len, "%lldms", (long long)ms);
	else
		snprintf(buf, len, "%llds", (long long)(ms / 1000));
	return buf;
}

/* "namespace/name:port", as /endpoints and the metrics name a service. */
static const char *service_name(struct json_object *svc, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s:%lld", jstr(svc, "namespace"), jstr(svc, "name"),
		 (long long)jint(svc, "port"));
	return buf;
}

#define SERVICES_ROW "%-40s %-10s %-7s %-32s %-13s %6s %7s %7s %10s %-20s %s\n"

/* One VIP:port of the BPF map, with the settings |svc| (NULL: "?": h2splitd
 * is not reachable or does not list the service). */
static void print_service_row(const char *vip, uint32_t id, bool enabled,
			      struct json_object *svc)
{
	char ids[16], name[160], ep[24], all[24], pend[24], slow[24], hc[200], iv[24];
	struct json_object *b;

	snprintf(ids, sizeof(ids), "%u", id);
	if (!svc || !json_object_object_get_ex(svc, "balancing", &b)) {
		printf(SERVICES_ROW, vip, ids, enabled ? "yes" : "no", "?", "?", "?", "?", "?",
		       "?", "?", "?");
		return;
	}
	if (strcmp(jstr(b, "health_check"), "grpc"))
		snprintf(hc, sizeof(hc), "%s", jstr(b, "health_check"));
	else
		snprintf(hc, sizeof(hc), "grpc/%s%s%s",
			 ms_str(jint(b, "health_check_interval_ms"), iv, sizeof(iv)),
			 jstr(b, "health_check_service")[0] ? "/" : "",
			 jstr(b, "health_check_service"));
	printf(SERVICES_ROW, vip, ids, enabled ? "yes" : "no", service_name(svc, name, sizeof(name)),
	       jstr(b, "policy"),
	       limit_str(jint(b, "max_inflight_per_endpoint"), ep, sizeof(ep)),
	       limit_str(jint(b, "max_inflight_per_service"), all, sizeof(all)),
	       limit_str(jint(b, "max_pending"), pend, sizeof(pend)),
	       jint(b, "slow_start_ms") ? ms_str(jint(b, "slow_start_ms"), slow, sizeof(slow))
					: "off",
	       hc, json_object_get_boolean(json_object_object_get(b, "weights")) ? "yes" : "no");
}

static int cmd_services(const struct ctl *c)
{
	struct bpf_maps_svc_entry *e;
	struct json_object *arr = NULL, *svcs;
	struct bpf_maps m;
	char buf[INET6_ADDRSTRLEN + 8];
	int n, err;

	if (open_maps(c, &m))
		return EXIT_ERR;
	err = bpf_maps_services_read(&m, &e, &n);
	bpf_maps_close(&m);
	if (err) {
		fprintf(stderr, "read h2s_services: %s\n", strerror(-err));
		return EXIT_ERR;
	}
	svcs = services_in_force(c);
	if (c->json)
		arr = json_object_new_array();
	else
		printf(SERVICES_ROW, "VIP:PORT", "SERVICE", "ENABLED", "NAME", "POLICY", "MAX/EP",
		       "MAX/SVC", "PENDING", "SLOW-START", "HEALTH-CHECK", "WEIGHTS");
	for (int i = 0; i < n; i++) {
		const struct h2s_ip *ip = (const struct h2s_ip *)e[i].key.addr;
		bool enabled = e[i].value.flags & H2S_SVC_F_ENABLED;
		struct json_object *o, *svc = service_by_id(svcs, e[i].value.service_id), *b;

		if (!c->json) {
			print_service_row(addr_port_str(e[i].key.addr, e[i].key.port, buf,
							sizeof(buf)),
					  e[i].value.service_id, enabled, svc);
			continue;
		}
		o = json_object_new_object();
		json_object_object_add(o, "vip",
				       json_object_new_string(h2s_ip_str(ip, buf, sizeof(buf))));
		json_object_object_add(o, "port", json_object_new_int(ntohs(e[i].key.port)));
		json_object_object_add(o, "service_id",
				       json_object_new_int64(e[i].value.service_id));
		json_object_object_add(o, "enabled", json_object_new_boolean(enabled));
		if (svc && json_object_object_get_ex(svc, "balancing", &b)) {
			char name[160];

			json_object_object_add(
			    o, "service",
			    json_object_new_string(service_name(svc, name, sizeof(name))));
			json_object_object_add(o, "balancing", json_object_get(b));
		}
		json_object_array_add(arr, o);
	}
	if (arr)
		print_json(arr);
	json_object_put(svcs);
	free(e);
	return EXIT_OK;
}

static void ep_addr(struct json_object *ep, char *buf, size_t len)
{
	const char *ip = jstr(ep, "ip");

	snprintf(buf, len, strchr(ip, ':') ? "[%s]:%lld" : "%s:%lld", ip,
		 (long long)jint(ep, "port"));
}

static void print_endpoint_row(struct json_object *svc, struct json_object *ep, void *arg)
{
	char addr[64];

	(void)arg;
	ep_addr(ep, addr, sizeof(addr));
	printf("%-32s %-24s %-20s %-11s %8lld %12lld %9lld\n", jstr(svc, "service"), addr,
	       jstr(ep, "pod")[0] ? jstr(ep, "pod") : "-", ep_state(ep),
	       (long long)jint(ep, "active"), (long long)jint(ep, "requests"),
	       (long long)jint(ep, "failures"));
}

static int cmd_endpoints(const struct ctl *c)
{
	struct json_object *root;
	int rc = admin_json(c, "endpoints", "/endpoints", &root);

	if (rc)
		return rc;
	if (c->json) {
		puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
	} else {
		printf("%-32s %-24s %-20s %-11s %8s %12s %9s\n", "SERVICE", "ENDPOINT", "POD", "STATE",
		       "ACTIVE", "REQUESTS", "FAILURES");
		for_each_endpoint(root, print_endpoint_row, NULL);
	}
	json_object_put(root);
	return EXIT_OK;
}

/* top: two /endpoints samples |interval| apart give requests per second. */
struct top_row {
	char key[160];
	int64_t requests;
};

struct top_sample {
	struct top_row *rows;
	size_t n;
	size_t cap;
};

static void ep_key(struct json_object *svc, struct json_object *ep, char *buf, size_t len)
{
	char addr[64];

	ep_addr(ep, addr, sizeof(addr));
	snprintf(buf, len, "%s %s", jstr(svc, "service"), addr);
}

static void collect_row(struct json_object *svc, struct json_object *ep, void *arg)
{
	struct top_sample *s = arg;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct top_row *r = realloc(s->rows, cap * sizeof(*r));

		if (!r)
			return;
		s->rows = r;
		s->cap = cap;
	}
	ep_key(svc, ep, s->rows[s->n].key, sizeof(s->rows[s->n].key));
	s->rows[s->n++].requests = jint(ep, "requests");
}

static int64_t prev_requests(const struct top_sample *s, const char *key, int64_t now)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->rows[i].key, key) == 0)
			return s->rows[i].requests;
	return now; /* new endpoint: no rate yet */
}

struct top_print {
	const struct top_sample *prev;
	double interval;
	struct json_object *out; /* -o json */
};

static void print_top_row(struct json_object *svc, struct json_object *ep, void *arg)
{
	struct top_print *tp = arg;
	char key[160], addr[64];
	int64_t req = jint(ep, "requests");
	double rps = (double)(req - prev_requests(tp->prev, (ep_key(svc, ep, key, sizeof(key)), key),
					  req)) / tp->interval;

	ep_addr(ep, addr, sizeof(addr));
	if (tp->out) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "service", json_object_new_string(jstr(svc, "service")));
		json_object_object_add(o, "endpoint", json_object_new_string(addr));
		json_object_object_add(o, "pod", json_object_new_string(jstr(ep, "pod")));
		json_object_object_add(o, "state", json_object_new_string(ep_state(ep)));
		json_object_object_add(o, "rps", json_object_new_double(rps));
		json_object_object_add(o, "active", json_object_new_int64(jint(ep, "active")));
		json_object_object_add(o, "requests", json_object_new_int64(req));
		json_object_object_add(o, "failures", json_object_new_int64(jint(ep, "failures")));
		json_object_array_add(tp->out, o);
		return;
	}
	printf("%-32s %-24s %-20s %-11s %9.1f %8lld %12lld %9lld\n", jstr(svc, "service"), addr,
	       jstr(ep, "pod")[0] ? jstr(ep, "pod") : "-", ep_state(ep), rps,
	       (long long)jint(ep, "active"), (long long)req, (long long)jint(ep, "failures"));
}

/* Refreshes every |c->interval_ms| until interrupted, or |c->iterations| times.
 * With -o json: one array per refresh, one line each. */
static int cmd_top(const struct ctl *c)
{
	struct top_sample prev = {0};
	struct json_object *root;
	bool tty = isatty(STDOUT_FILENO);
	int rc;

	rc = admin_json(c, "top", "/endpoints", &root);
	if (rc)
		return rc;
	for_each_endpoint(root, collect_row, &prev);
	json_object_put(root);
	for (int it = 0; c->iterations <= 0 || it < c->iterations; it++) {
		struct top_sample cur = {0};
		struct top_print tp = {.prev = &prev, .interval = c->interval_ms / 1000.0};

		poll(NULL, 0, c->interval_ms);
		rc = admin_json(c, "top", "/endpoints", &root);
		if (rc) {
			free(prev.rows);
			return rc;
		}
		if (c->json) {
			tp.out = json_object_new_array();
		} else {
			if (tty)
				fputs("\033[H\033[2J", stdout);
			printf("h2splitctl top (admin %s, every %.1fs)\n%-32s %-24s %-20s %-11s %9s "
			       "%8s %12s %9s\n",
			       c->admin, tp.interval, "SERVICE", "ENDPOINT", "POD", "STATE", "RPS",
			       "ACTIVE", "REQUESTS", "FAILURES");
		}
		for_each_endpoint(root, print_top_row, &tp);
		if (tp.out) {
			puts(json_object_to_json_string_ext(tp.out, JSON_C_TO_STRING_PLAIN));
			json_object_put(tp.out);
		}
		fflush(stdout);
		for_each_endpoint(root, collect_row, &cur);
		json_object_put(root);
		free(prev.rows);
		prev = cur;
	}
	free(prev.rows);
	return EXIT_OK;
}

/* ---- main ---- */

static const struct {
	const char *name;
	bool takes_arg;
	int (*fn)(const struct ctl *c);
} commands[] = {
    {"status", false, cmd_status},
    {"services", false, cmd_services},
    {"endpoints", false, cmd_endpoints},
    {"counters", false, cmd_counters},
    {"top", false, cmd_top},
    {"exclude", true, cmd_exclude},
    {"include", true, cmd_include},
    {"uninstall", false, cmd_uninstall},
};

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && v[0] ? v : def;
}

static int set_output(struct ctl *c, const char *fmt)
{
	if (strcmp(fmt, "json") == 0)
		c->json = true;
	else if (strcmp(fmt, "text") == 0)
		c->json = false;
	else
		return -EINVAL;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"bpffs", required_argument, NULL, 'b'},  {"admin", required_argument, NULL, 'a'},
	    {"output", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},      {"interval", required_argument, NULL, 'd'},
	    {"iterations", required_argument, NULL, 'n'}, {NULL, 0, NULL, 0},
	};
	struct ctl c = {
	    .bpffs = env_or("H2SPLIT_BPFFS", BPF_LOADER_PIN_ROOT),
	    .admin = env_or("H2SPLIT_ADMIN", DEFAULT_ADMIN),
	    .interval_ms = 1000,
	};
	char *end;
	int opt;

	log_set_level(LOG_WARN);
	if (set_output(&c, env_or("H2SPLIT_OUTPUT", "text"))) {
		fprintf(stderr, "H2SPLIT_OUTPUT: expected text or json\n");
		return EXIT_USAGE;
	}
	while ((opt = getopt_long(argc, argv, "o:hd:n:", opts, NULL)) != -1) {
		switch (opt) {
		case 'd': {
			double sec = strtod(optarg, &end);

			if (*end || sec < 0.1 || sec > 3600) {
				fprintf(stderr, "--interval %s: expected seconds, 0.1 to 3600\n", optarg);
				return EXIT_USAGE;
			}
			c.interval_ms = (int)(sec * 1000);
			break;
		}
		case 'n':
			c.iterations = (int)strtol(optarg, &end, 10);
			if (*end || c.iterations < 1) {
				fprintf(stderr, "--iterations %s: expected a count >= 1\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			c.bpffs = optarg;
			break;
		case 'a':
			c.admin = optarg;
			break;
		case 'o':
			if (set_output(&c, optarg)) {
				fprintf(stderr, "-o %s: expected text or json\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'V':
			printf("h2splitctl %s\n", H2SPLIT_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		int want = commands[i].takes_arg ? 2 : 1;

		if (strcmp(argv[optind], commands[i].name) != 0)
			continue;
		if (argc - optind != want) {
			fprintf(stderr, "h2splitctl %s: %s\n", commands[i].name,
				commands[i].takes_arg ? "expects one argument (DIR)"
						      : "takes no argument");
			return EXIT_USAGE;
		}
		c.arg = commands[i].takes_arg ? argv[optind + 1] : NULL;
		return commands[i].fn(&c);
	}
	fprintf(stderr, "h2splitctl: unknown command %s (see --help)\n", argv[optind]);
	return EXIT_USAGE;
}
