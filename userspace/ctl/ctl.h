/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to ctl/: what h2splitctl's files share. struct ctl (the options a
 * command runs with), the exit codes that are the CLI's contract, the
 * commands main() dispatches to, the admin API client and the output
 * helpers. Commands print their own messages and return an exit code.
 */
#ifndef H2SPLIT_CTL_H
#define H2SPLIT_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "kernel/bpf_maps.h"

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
	int interval_ms; /* top: refresh period */
	int iterations;	 /* top: refreshes before exiting; 0: until interrupted */
	const char *by;	 /* top --by: endpoint (NULL), caller or method */
	const char *from; /* stat --from WORKLOAD */
	const char *to;	  /* stat --to SERVICE */
	const char *service, *caller, *method; /* tap filters; NULL: any */
	long max;			       /* tap: requests to show; 0: until interrupted */
};

/* ---- the commands (each returns an exit code) ---- */

int ctl_cmd_status(const struct ctl *c);    /* ctl_status.c */
int ctl_cmd_services(const struct ctl *c);  /* ctl_services.c */
int ctl_cmd_counters(const struct ctl *c);  /* ctl_pins.c */
int ctl_cmd_exclude(const struct ctl *c);   /* ctl_pins.c */
int ctl_cmd_include(const struct ctl *c);   /* ctl_pins.c */
int ctl_cmd_uninstall(const struct ctl *c); /* ctl_pins.c */
int ctl_cmd_endpoints(const struct ctl *c); /* ctl_top.c */
int ctl_cmd_top(const struct ctl *c);	    /* ctl_top.c */
int ctl_cmd_stat(const struct ctl *c);	    /* ctl_calls.c */
int ctl_cmd_tap(const struct ctl *c);	    /* ctl_calls.c */
int ctl_cmd_adopt(const struct ctl *c);	    /* ctl_adopt.c */
/* One adoption pass of /adopt as a line of text (ctl_adopt.c). */
void ctl_adopt_print_pass(struct json_object *pass);
/* top --by caller (|caller|) or method (ctl_calls.c). */
int ctl_calls_top(const struct ctl *c, bool caller);

/* Open the pinned maps under c->bpffs; on failure prints what to do and
 * returns the negative errno (ctl_pins.c). */
int ctl_open_maps(const struct ctl *c, struct bpf_maps *m);

/* ---- the admin API client (ctl_admin.c) ---- */

/* A connected socket to |addr| (ADDR:PORT), or -errno with |err| set. */
int ctl_admin_connect(const char *addr, char *err, size_t errlen);
/* GET |path| from the admin API; the body (malloc'd) and HTTP status. */
int ctl_admin_get(int fd, const char *path, char **body, int *status);
/* GET |path| quietly: false when the daemon cannot be reached. */
bool ctl_admin_fetch(const struct ctl *c, const char *path, char **body, int *status);
/* GET |path| as JSON. 0 with |*out| owned by the caller, or an exit code
 * after the message. */
int ctl_admin_json(const struct ctl *c, const char *what, const char *path,
		   struct json_object **out);
/* Member |key| of |o| as a string ("" when absent) or an integer (0). */
const char *ctl_jstr(struct json_object *o, const char *key);
int64_t ctl_jint(struct json_object *o, const char *key);
/* An /endpoints endpoint's state: ready, not-ready, terminating, ... */
const char *ctl_ep_state(struct json_object *ep);
/* Calls |fn| for every endpoint of every service in an /endpoints answer. */
void ctl_for_each_endpoint(struct json_object *root,
			   void (*fn)(struct json_object *svc, struct json_object *ep, void *arg),
			   void *arg);

/* ---- output (ctl_output.c) ---- */

/* Print |o| pretty on stdout and drop the reference. */
void ctl_print_json(struct json_object *o);
/* "10.96.0.10:53" or "[fd00::a]:53"; |port| in network order. */
const char *ctl_addr_port_str(const __u8 addr[16], __u16 port, char *buf, size_t len);
/* ["ctl", "k8s"]: every origin excluding a cgroup. */
struct json_object *ctl_origins_json(uint32_t origins);

#endif
