// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl: the operator's view of a node. Reads the pinned BPF maps and
 * links directly, so status, services, counters, exclude, include and
 * uninstall work while h2splitd is down; endpoints and top ask the daemon's
 * admin API, and services adds the balancing settings from it when it
 * answers. Exit codes are a contract (see usage()). This file: options,
 * usage and the command table; each command lives in its ctl_*.c file.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <getopt.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

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
		"                 or --iterations N times; -o json: one array per refresh;\n"
		"                 --by caller|method: per calling workload or gRPC method\n"
		"                 (requests/s, success, p50/p99 over the interval)\n"
		"  stat           totals since h2splitd started per caller and Service:\n"
		"                 --from WORKLOAD (ns/kind/name, kind/name or name) and/or\n"
		"                 --to SERVICE (ns/name:port, ns/name or name)\n"
		"  tap            live feed of requests as they end (time, caller, method,\n"
		"                 endpoint, statuses, duration, bytes): --service S, --caller W,\n"
		"                 --method M (pkg.Service/Method, Method or pkg.Service) filter;\n"
		"                 --max N stops after N; -o json: one object per line\n"
		"  adopt          close connections opened before h2splitd to opted-in Services\n"
		"                 while idle, so apps reconnect through it (--service NS/NAME:\n"
		"                 that Service only); waits for the pass and prints its result\n"
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
		"3 h2splitd not reachable (endpoints, top, stat, tap, adopt).\n");
}

/* ---- main ---- */

static const struct {
	const char *name;
	bool takes_arg;
	int (*fn)(const struct ctl *c);
} commands[] = {
    {"status", false, ctl_cmd_status},
    {"services", false, ctl_cmd_services},
    {"endpoints", false, ctl_cmd_endpoints},
    {"counters", false, ctl_cmd_counters},
    {"top", false, ctl_cmd_top},
    {"stat", false, ctl_cmd_stat},
    {"tap", false, ctl_cmd_tap},
    {"adopt", false, ctl_cmd_adopt},
    {"exclude", true, ctl_cmd_exclude},
    {"include", true, ctl_cmd_include},
    {"uninstall", false, ctl_cmd_uninstall},
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
	    {"bpffs", required_argument, NULL, 'b'},
	    {"admin", required_argument, NULL, 'a'},
	    {"output", required_argument, NULL, 'o'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {"interval", required_argument, NULL, 'd'},
	    {"iterations", required_argument, NULL, 'n'},
	    {"by", required_argument, NULL, 'B'},
	    {"from", required_argument, NULL, 'F'},
	    {"to", required_argument, NULL, 'T'},
	    {"service", required_argument, NULL, 'S'},
	    {"caller", required_argument, NULL, 'C'},
	    {"method", required_argument, NULL, 'M'},
	    {"max", required_argument, NULL, 'X'},
	    {NULL, 0, NULL, 0},
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
				fprintf(stderr, "--interval %s: expected seconds, 0.1 to 3600\n",
					optarg);
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
		case 'B':
			if (strcmp(optarg, "caller") && strcmp(optarg, "method") &&
			    strcmp(optarg, "endpoint")) {
				fprintf(stderr, "--by %s: expected caller, method or endpoint\n",
					optarg);
				return EXIT_USAGE;
			}
			c.by = strcmp(optarg, "endpoint") ? optarg : NULL;
			break;
		case 'F':
			c.from = optarg;
			break;
		case 'T':
			c.to = optarg;
			break;
		case 'S':
			c.service = optarg;
			break;
		case 'C':
			c.caller = optarg;
			break;
		case 'M':
			c.method = optarg;
			break;
		case 'X':
			c.max = strtol(optarg, &end, 10);
			if (*end || c.max < 1) {
				fprintf(stderr, "--max %s: expected a count >= 1\n", optarg);
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
