// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl: the operator's view of a node. Reads the pinned BPF maps and
 * links directly, so status, services, counters, exclude, include and
 * uninstall work while h2splitd is down; endpoints and top ask the daemon's
 * admin API. Exit codes are a contract (see usage()).
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

#include "bpf_loader.h"
#include "bpf_maps.h"
#include "cgroup.h"
#include "config.h"
#include "log.h"

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
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: h2splitctl [--bpffs DIR] [--admin ADDR:PORT] [-o json] COMMAND [ARG]\n"
		"\n"
		"Commands (read the pinned BPF state; work while h2splitd is down):\n"
		"  status         what is installed: pins, attached programs, listeners, counters\n"
		"  services       redirected VIP:port -> service id\n"
		"  counters       BPF decision counters, summed over CPUs\n"
		"  exclude DIR    never redirect connects from cgroup v2 directory DIR or below\n"
		"  include DIR    redirect DIR again (DIR may be a numeric cgroup id, for a\n"
		"                 cgroup that no longer exists)\n"
		"  uninstall      detach every program and remove every pin\n"
		"Commands that ask a running h2splitd (admin API):\n"
		"  endpoints      endpoints per service, with their state and load\n"
		"  top            per-service traffic\n"
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
	const char *missing = NULL;
	int err = bpf_maps_open_pinned(c->bpffs, m, &missing);

	if (err == -ENOENT)
		fprintf(stderr,
			"h2split is not installed under %s (no pinned %s): start h2splitd, or "
			"pass the daemon's --bpffs\n",
			c->bpffs, missing ? missing : "maps");
	else if (err)
		fprintf(stderr, "open pinned maps under %s: %s\n", c->bpffs, strerror(-err));
	return err;
}

/* ---- status ---- */

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
	struct listener_view lv[H2S_LISTENER_SLOTS];
	int n_services;
	struct bpf_maps_excluded *excl; /* owned */
	int n_excl;
	uint64_t counters[H2S_CNT_MAX];
	bool installed, attached, redirecting;
	char cg_root[PATH_MAX];
};

static int status_collect(const struct ctl *c, struct status_view *v)
{
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
	if (!v->st.map_pinned[BPF_MAPS_SERVICES] || bpf_maps_open_pinned(c->bpffs, &m, NULL) != 0)
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
	return 0;
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
		json_object_object_add(
		    e, "origin", json_object_new_string(bpf_maps_origin_name(v->excl[i].origin)));
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
	if (!v->maps_open)
		return;
	printf("listeners\n");
	for (int s = 0; s < H2S_LISTENER_SLOTS; s++)
		printf("  %s  %-24s %s\n", s == H2S_LISTENER_V4 ? "v4" : "v6",
		       v->lv[s].addr[0] ? v->lv[s].addr : "-",
		       v->lv[s].alive ? "alive" : "none (connects go direct)");
	printf("redirecting  %s\n", v->redirecting ? "yes" : "no");
	printf("services     %d VIP:port entries\n", v->n_services);
	printf("excluded     %d cgroup(s)\n", v->n_excl);
	for (int i = 0; i < v->n_excl; i++)
		printf("  %-8s %s (id %llu)\n", bpf_maps_origin_name(v->excl[i].origin),
		       cgroup_path_or(v->cg_root, v->excl[i].cgroup_id, buf, sizeof(buf),
				      "(cgroup gone)"),
		       (unsigned long long)v->excl[i].cgroup_id);
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

/* ---- services, counters ---- */

static int cmd_services(const struct ctl *c)
{
	struct bpf_maps_svc_entry *e;
	struct json_object *arr = NULL;
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
	if (c->json)
		arr = json_object_new_array();
	else
		printf("%-40s %-10s %s\n", "VIP:PORT", "SERVICE", "ENABLED");
	for (int i = 0; i < n; i++) {
		const struct h2s_ip *ip = (const struct h2s_ip *)e[i].key.addr;
		bool enabled = e[i].value.flags & H2S_SVC_F_ENABLED;
		struct json_object *o;

		if (!c->json) {
			printf("%-40s %-10u %s\n",
			       addr_port_str(e[i].key.addr, e[i].key.port, buf, sizeof(buf)),
			       e[i].value.service_id, enabled ? "yes" : "no");
			continue;
		}
		o = json_object_new_object();
		json_object_object_add(o, "vip",
				       json_object_new_string(h2s_ip_str(ip, buf, sizeof(buf))));
		json_object_object_add(o, "port", json_object_new_int(ntohs(e[i].key.port)));
		json_object_object_add(o, "service_id",
				       json_object_new_int64(e[i].value.service_id));
		json_object_object_add(o, "enabled", json_object_new_boolean(enabled));
		json_object_array_add(arr, o);
	}
	if (arr)
		print_json(arr);
	free(e);
	return EXIT_OK;
}

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
	struct bpf_maps m;
	uint64_t id = 0;
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
	err = bpf_maps_exclude_dir(&m, c->arg, H2S_EXCLUDE_CTL, &id);
	bpf_maps_close(&m);
	if (err) {
		fprintf(stderr, "exclude %s: %s\n", c->arg, strerror(-err));
		return EXIT_ERR;
	}
	if (c->json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "excluded", json_object_new_string(c->arg));
		json_object_object_add(o, "cgroup_id", json_object_new_uint64(id));
		print_json(o);
	} else {
		printf("excluded %s (cgroup id %llu): its connects, and those of cgroups below it, "
		       "go direct\n",
		       c->arg, (unsigned long long)id);
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

static int cmd_include(const struct ctl *c)
{
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
	err = bpf_maps_include(&m, id);
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
		print_json(o);
	} else {
		printf("%s (cgroup id %llu) %s\n", c->arg, (unsigned long long)id,
		       err ? "was not excluded: nothing to do" : "is redirected again");
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

static int cmd_admin(const struct ctl *c, const char *what, const char *path)
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
	fputs(body, stdout);
	if (body[0] && body[strlen(body) - 1] != '\n')
		putchar('\n');
	free(body);
	return EXIT_OK;
}

static int cmd_endpoints(const struct ctl *c)
{
	return cmd_admin(c, "endpoints", c->json ? "/endpoints?format=json" : "/endpoints");
}

static int cmd_top(const struct ctl *c)
{
	return cmd_admin(c, "top", c->json ? "/top?format=json" : "/top");
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
	    {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
	};
	struct ctl c = {
	    .bpffs = env_or("H2SPLIT_BPFFS", BPF_LOADER_PIN_ROOT),
	    .admin = env_or("H2SPLIT_ADMIN", DEFAULT_ADMIN),
	};
	int opt;

	log_set_level(LOG_WARN);
	if (set_output(&c, env_or("H2SPLIT_OUTPUT", "text"))) {
		fprintf(stderr, "H2SPLIT_OUTPUT: expected text or json\n");
		return EXIT_USAGE;
	}
	while ((opt = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
		switch (opt) {
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
