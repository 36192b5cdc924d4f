// SPDX-License-Identifier: Apache-2.0
/*
 * Parses h2splitd's flags and their H2SPLIT_* environment twins into a
 * struct config. One table lists every option once: its flag, whether it takes
 * a value, and the setter; the environment pass and the argv pass both walk it,
 * so a new flag can never be missing its environment variable.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"

extern char **environ;

typedef int opt_set_fn(struct config *c, const char *v, char *err, size_t errlen);

struct opt {
	const char *flag; /* without the leading "--" */
	bool has_arg;
	bool repeatable;
	opt_set_fn *set;
};

static int set_str(char *dst, const char *v, const char *flag, char *err, size_t errlen)
{
	if (strlen(v) >= CONFIG_PATH_MAX) {
		snprintf(err, errlen, "--%s: value longer than %d bytes", flag, CONFIG_PATH_MAX - 1);
		return -EINVAL;
	}
	strcpy(dst, v);
	return 0;
}

static int parse_int(const char *v, int min, int max, int *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return -EINVAL;
	*out = (int)n;
	return 0;
}

int config_parse_addr(const char *s, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	size_t hl;
	int port;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - s - 1);
		if (hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hl);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host))
			return -EINVAL;
		hl = (size_t)(colon - s);
		memcpy(host, s, hl);
	}
	host[hl] = 0;
	if (parse_int(colon + 1, 1, 65535, &port))
		return -EINVAL;
	if (s[0] != '[') {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
	}
	return 0;
}

const char *config_addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "none");
	}
	return buf;
}

static const char *const lb_names[] = {
	[LB_DEFAULT] = "default",
	[LB_ROUND_ROBIN] = "round_robin",
	[LB_LEAST_REQUEST] = "least_request",
	[LB_EWMA] = "ewma",
};

int config_parse_duration_ms(const char *s, int max_ms, int *out)
{
	static const struct {
		const char *unit;
		long ms;
	} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}};
	char *end;
	long n;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	n = strtol(s, &end, 10);
	if (errno || n > max_ms)
		return -EINVAL;
	if (!*end && n == 0) {
		*out = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit))
			continue;
		if (n > max_ms / units[i].ms)
			return -EINVAL;
		*out = (int)(n * units[i].ms);
		return 0;
	}
	return -EINVAL;
}

int config_parse_lb_policy(const char *s, enum lb_policy *out)
{
	for (int i = LB_ROUND_ROBIN; i <= LB_EWMA; i++) {
		if (strcmp(s, lb_names[i]) == 0) {
			*out = (enum lb_policy)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *config_lb_policy_name(enum lb_policy p)
{
	return (unsigned)p <= LB_EWMA ? lb_names[p] : "unknown";
}

static int opt_discovery(struct config *c, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "file") == 0)
		c->discovery = DISCOVERY_FILE;
	else if (strcmp(v, "kubernetes") == 0)
		c->discovery = DISCOVERY_KUBERNETES;
	else {
		snprintf(err, errlen, "--discovery %s: expected file or kubernetes", v);
		return -EINVAL;
	}
	return 0;
}

#define STR_OPT(fn, field, flag)                                                                   \
	static int fn(struct config *c, const char *v, char *err, size_t errlen)                   \
	{                                                                                          \
		return set_str(c->field, v, flag, err, errlen);                                    \
	}
STR_OPT(opt_services_file, services_file, "services-file")
STR_OPT(opt_cgroup, cgroup_dir, "cgroup")
STR_OPT(opt_bpffs, bpffs, "bpffs")
STR_OPT(opt_upstream_ca, upstream_ca_file, "upstream-ca-file")
STR_OPT(opt_kube_api, kube_api, "kube-api")
STR_OPT(opt_kube_token, kube_token_file, "kube-token-file")
STR_OPT(opt_kube_ca, kube_ca_file, "kube-ca-file")
#undef STR_OPT

static int opt_node_name(struct config *c, const char *v, char *err, size_t errlen)
{
	if (strlen(v) >= sizeof(c->node_name)) {
		snprintf(err, errlen, "--node-name: longer than %zu bytes", sizeof(c->node_name) - 1);
		return -EINVAL;
	}
	strcpy(c->node_name, v);
	return 0;
}

static int opt_zone(struct config *c, const char *v, char *err, size_t errlen)
{
	if (strlen(v) >= sizeof(c->zone)) {
		snprintf(err, errlen, "--zone: longer than %zu bytes", sizeof(c->zone) - 1);
		return -EINVAL;
	}
	strcpy(c->zone, v);
	return 0;
}

static int opt_listen(struct config *c, const char *v, char *err, size_t errlen)
{
	struct sockaddr_storage ss;

	if (config_parse_addr(v, &ss)) {
		snprintf(err, errlen, "--listen %s: expected ADDR:PORT or [ADDR6]:PORT", v);
		return -EINVAL;
	}
	if (ss.ss_family == AF_INET)
		c->listen_v4 = ss;
	else
		c->listen_v6 = ss;
	return 0;
}

static int opt_admin(struct config *c, const char *v, char *err, size_t errlen)
{
	if (config_parse_addr(v, &c->admin)) {
		snprintf(err, errlen, "--admin %s: expected ADDR:PORT or [ADDR6]:PORT", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_exclude(struct config *c, const char *v, char *err, size_t errlen)
{
	if (c->n_exclude == CONFIG_MAX_EXCLUDE) {
		snprintf(err, errlen, "--exclude-cgroup: at most %d", CONFIG_MAX_EXCLUDE);
		return -EINVAL;
	}
	return set_str(c->exclude[c->n_exclude++], v, "exclude-cgroup", err, errlen);
}

static int opt_adopt(struct config *c, const char *v, char *err, size_t errlen)
{
	if (!strcmp(v, "off")) {
		c->adopt_existing = ADOPT_OFF;
	} else if (!strcmp(v, "idle")) {
		c->adopt_existing = ADOPT_IDLE;
	} else if (!strcmp(v, "all")) {
		c->adopt_existing = ADOPT_ALL;
	} else {
		snprintf(err, errlen, "--adopt-existing %s: expected off, idle or all", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_upstream_source(struct config *c, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "pod") == 0)
		c->upstream_source_pod = true;
	else if (strcmp(v, "node") == 0)
		c->upstream_source_pod = false;
	else {
		snprintf(err, errlen, "--upstream-source %s: expected pod or node", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_workers(struct config *c, const char *v, char *err, size_t errlen)
{
	if (parse_int(v, 0, 256, &c->workers)) {
		snprintf(err, errlen, "--workers %s: expected 0 (one per CPU) to 256", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_lb(struct config *c, const char *v, char *err, size_t errlen)
{
	if (config_parse_lb_policy(v, &c->lb_policy)) {
		snprintf(err, errlen, "--lb-policy %s: expected least_request, round_robin or ewma", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_ewma_decay(struct config *c, const char *v, char *err, size_t errlen)
{
	if (parse_int(v, 1, 3600000, &c->lb_ewma_decay_ms)) {
		snprintf(err, errlen, "--lb-ewma-decay %s: expected milliseconds, 1 to 3600000", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_outlier_failures(struct config *c, const char *v, char *err, size_t errlen)
{
	if (parse_int(v, 0, 1000000, &c->outlier_failures)) {
		snprintf(err, errlen, "--outlier-failures %s: expected a count, 0 (off) to 1000000",
			 v);
		return -EINVAL;
	}
	return 0;
}

static int opt_outlier_failure_pct(struct config *c, const char *v, char *err, size_t errlen)
{
	if (parse_int(v, 0, 100, &c->outlier_failure_pct)) {
		snprintf(err, errlen, "--outlier-failure-percent %s: expected a percentage, 0 (off) to 100",
			 v);
		return -EINVAL;
	}
	return 0;
}

static int opt_outlier_ejection(struct config *c, const char *v, char *err, size_t errlen)
{
	if (parse_int(v, 1, 3600000, &c->outlier_ejection_ms)) {
		snprintf(err, errlen, "--outlier-ejection %s: expected milliseconds, 1 to 3600000",
			 v);
		return -EINVAL;
	}
	return 0;
}

static int opt_drain(struct config *c, const char *v, char *err, size_t errlen)
{
	if (parse_int(v, 0, 86400, &c->drain_timeout_s)) {
		snprintf(err, errlen, "--drain-timeout %s: expected seconds, 0 to 86400", v);
		return -EINVAL;
	}
	return 0;
}

static int opt_log_level(struct config *c, const char *v, char *err, size_t errlen)
{
	if (log_parse_level(v, &c->log_level)) {
		snprintf(err, errlen, "--log-level %s: expected debug, info, warn or error", v);
		return -EINVAL;
	}
	return 0;
}

/* An integer flag with its range; the message names the unit and range. */
#define INT_OPT(fn, field, flag, min, max, what)                                                   \
	static int fn(struct config *c, const char *v, char *err, size_t errlen)                   \
	{                                                                                          \
		if (parse_int(v, min, max, &c->field)) {                                           \
			snprintf(err, errlen, "--%s %s: expected %s, %d to %d", flag, v, what,     \
				 min, max);                                                        \
			return -EINVAL;                                                            \
		}                                                                                  \
		return 0;                                                                          \
	}
INT_OPT(opt_max_hdr_list, max_header_list_size, "max-header-list-size", 1024, 65536, "bytes")
INT_OPT(opt_max_headers, max_headers, "max-headers", 8, 256, "a count")
INT_OPT(opt_max_cont, max_continuations, "max-continuations", 1, 10000, "a count")
INT_OPT(opt_max_streams, max_concurrent_streams, "max-concurrent-streams", 1, 1000000, "a count")
INT_OPT(opt_max_ctrl_rate, max_control_frame_rate, "max-control-frame-rate", 10, 10000000,
	"frames per second")
INT_OPT(opt_max_out_ctrl, max_outbound_control_frames, "max-outbound-control-frames", 10,
	1000000, "a count")
INT_OPT(opt_max_pending, max_pending_bytes, "max-pending-bytes", 65535, 16777216, "bytes")
INT_OPT(opt_retry_buffer, retry_buffer_bytes, "retry-buffer-bytes", 0, 8388608, "bytes")
INT_OPT(opt_max_conns_pod, max_connections_per_pod, "max-connections-per-pod", 0, 1000000,
	"a count (0: off)")
INT_OPT(opt_adopt_max_wait, adopt_max_wait_s, "adopt-max-wait", 0, 86400, "seconds")
INT_OPT(opt_idle_timeout, idle_timeout_s, "idle-timeout", 0, 86400, "seconds (0: off)")
INT_OPT(opt_header_timeout, header_timeout_s, "header-timeout", 0, 3600, "seconds (0: off)")
INT_OPT(opt_us_ka_time, upstream_keepalive_time_s, "upstream-keepalive-time", 0, 3600,
	"seconds (0: off)")
INT_OPT(opt_us_ka_timeout, upstream_keepalive_timeout_s, "upstream-keepalive-timeout", 1, 3600,
	"seconds")
INT_OPT(opt_max_redirected, max_redirected_sockets, "max-redirected-sockets", 4096, 16777216,
	"a count")
INT_OPT(opt_slow_start, slow_start_ms, "slow-start", 0, 3600000, "milliseconds (0: off)")
INT_OPT(opt_cb_max_ep, max_inflight_per_endpoint, "max-inflight-per-endpoint", 0, 1000000,
	"a count (0: no limit)")
INT_OPT(opt_cb_max_svc, max_inflight_per_service, "max-inflight-per-service", 0, 1000000,
	"a count (0: no limit)")
INT_OPT(opt_max_callers, max_callers_per_service, "max-callers-per-service", 0, 10000,
	"a count (0: no caller series)")
INT_OPT(opt_max_methods, max_methods_per_service, "max-methods-per-service", 0, 10000,
	"a count (0: no method series)")
INT_OPT(opt_cb_max_pending, max_pending, "max-pending", 0, 1000000, "a count (0: no queue)")
INT_OPT(opt_cb_pending_timeout, pending_timeout_ms, "pending-timeout", 1, 3600000,
	"milliseconds")
#undef INT_OPT

static int parse_bool(const char *v, bool *out)
{
	if (!v || !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
		*out = true;
	else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

#define BOOL_OPT(fn, field, flag)                                                                  \
	static int fn(struct config *c, const char *v, char *err, size_t errlen)                   \
	{                                                                                          \
		if (parse_bool(v, &c->field)) {                                                    \
			snprintf(err, errlen, "%s=%s: expected true or false", flag, v);           \
			return -EINVAL;                                                            \
		}                                                                                  \
		return 0;                                                                          \
	}
BOOL_OPT(opt_access_log, access_log, "access-log")
BOOL_OPT(opt_uninstall, uninstall, "uninstall")
BOOL_OPT(opt_version, version, "version")
BOOL_OPT(opt_help, help, "help")
#undef BOOL_OPT

static const struct opt opts[] = {
	{"discovery", true, false, opt_discovery},
	{"services-file", true, false, opt_services_file},
	{"cgroup", true, false, opt_cgroup},
	{"bpffs", true, false, opt_bpffs},
	{"listen", true, true, opt_listen},
	{"admin", true, false, opt_admin},
	{"exclude-cgroup", true, true, opt_exclude},
	{"upstream-source", true, false, opt_upstream_source},
	{"upstream-ca-file", true, false, opt_upstream_ca},
	{"workers", true, false, opt_workers},
	{"lb-policy", true, false, opt_lb},
	{"lb-ewma-decay", true, false, opt_ewma_decay},
	{"outlier-failures", true, false, opt_outlier_failures},
	{"outlier-failure-percent", true, false, opt_outlier_failure_pct},
	{"outlier-ejection", true, false, opt_outlier_ejection},
	{"slow-start", true, false, opt_slow_start},
	{"max-inflight-per-endpoint", true, false, opt_cb_max_ep},
	{"max-inflight-per-service", true, false, opt_cb_max_svc},
	{"max-pending", true, false, opt_cb_max_pending},
	{"max-callers-per-service", true, false, opt_max_callers},
	{"max-methods-per-service", true, false, opt_max_methods},
	{"pending-timeout", true, false, opt_cb_pending_timeout},
	{"drain-timeout", true, false, opt_drain},
	{"adopt-existing", true, false, opt_adopt},
	{"adopt-max-wait", true, false, opt_adopt_max_wait},
	{"log-level", true, false, opt_log_level},
	{"access-log", false, false, opt_access_log},
	{"kube-api", true, false, opt_kube_api},
	{"kube-token-file", true, false, opt_kube_token},
	{"kube-ca-file", true, false, opt_kube_ca},
	{"node-name", true, false, opt_node_name},
	{"zone", true, false, opt_zone},
	{"max-header-list-size", true, false, opt_max_hdr_list},
	{"max-headers", true, false, opt_max_headers},
	{"max-continuations", true, false, opt_max_cont},
	{"max-concurrent-streams", true, false, opt_max_streams},
	{"max-control-frame-rate", true, false, opt_max_ctrl_rate},
	{"max-outbound-control-frames", true, false, opt_max_out_ctrl},
	{"max-pending-bytes", true, false, opt_max_pending},
	{"retry-buffer-bytes", true, false, opt_retry_buffer},
	{"max-connections-per-pod", true, false, opt_max_conns_pod},
	{"idle-timeout", true, false, opt_idle_timeout},
	{"header-timeout", true, false, opt_header_timeout},
	{"upstream-keepalive-time", true, false, opt_us_ka_time},
	{"upstream-keepalive-timeout", true, false, opt_us_ka_timeout},
	{"max-redirected-sockets", true, false, opt_max_redirected},
	{"uninstall", false, false, opt_uninstall},
	{"version", false, false, opt_version},
	{"help", false, false, opt_help},
};

void config_usage(FILE *f)
{
	fprintf(f,
		"usage: h2splitd [options]\n"
		"  --discovery file|kubernetes   where services come from (default file)\n"
		"  --services-file FILE          kubectl get svc,endpointslices -o json output\n"
		"  --cgroup DIR                  cgroup v2 dir to attach to (default: cgroup2 root)\n"
		"  --bpffs DIR                   pin root (default /sys/fs/bpf/h2split)\n"
		"  --listen ADDR:PORT            default 169.254.20.11:15001 (repeatable: one v4, one v6)\n"
		"  --admin ADDR:PORT             default 127.0.0.1:9901\n"
		"  --exclude-cgroup DIR          never redirect this cgroup or below (repeatable)\n"
		"  --upstream-source pod|node    open upstream sockets in the client pod's netns (default pod)\n"
		"  --upstream-ca-file FILE       CA bundle for TLS upstreams (h2split.io/upstream-tls)\n"
		"  --upstream-keepalive-time SEC PING an upstream connection with streams in flight\n"
		"                                after this long without a frame (default 10, 0: off)\n"
		"  --upstream-keepalive-timeout SEC  no PING ACK in time: close it, its streams fail\n"
		"                                UNAVAILABLE (default 5)\n"
		"  --workers N                   worker threads (default: one per CPU)\n"
		"  --lb-policy NAME              ewma (default) | least_request | round_robin\n"
		"  --lb-ewma-decay MS            ewma: latency average time constant (default 10000)\n"
		"  --outlier-failures N          eject an endpoint after N failures in a row\n"
		"                                (UNAVAILABLE, reset, lost connection; a failed TCP\n"
		"                                connect only with --upstream-source node; default 5,\n"
		"                                0: off)\n"
		"  --outlier-failure-percent P   ... or when P%% of its last 20 verdicts failed\n"
		"                                (default 50, 0: off)\n"
		"  --outlier-ejection MS         first ejection; x the number of ejections, at most\n"
		"                                5 min (default 30000)\n"
		"  --slow-start MS               ramp a joining endpoint's share up over MS\n"
		"                                (default 0: off; h2split.io/slow-start)\n"
		"  --max-inflight-per-endpoint N streams in flight per endpoint and worker (default 0:\n"
		"                                no limit; h2split.io/max-inflight-per-endpoint)\n"
		"  --max-inflight-per-service N  ... per service and worker (default 0; h2split.io/max-inflight)\n"
		"  --max-pending N               streams waiting for room, per service and worker\n"
		"                                (default 1024, 0: fail at once; h2split.io/max-pending)\n"
		"  --pending-timeout MS          longest wait for room, then UNAVAILABLE (default 1000)\n"
		"  --max-callers-per-service N   caller workloads with series of their own per\n"
		"                                service (default 100; the rest: \"other\"; 0: off)\n"
		"  --max-methods-per-service N   gRPC methods with series of their own per service\n"
		"                                (default 50; the rest: \"other\"; 0: off)\n"
		"  --drain-timeout SEC           drain on SIGTERM (default 30)\n"
		"  --adopt-existing off|idle|all connections opened before h2splitd (or before a\n"
		"                                Service opted in): close them while idle so apps\n"
		"                                reconnect through h2splitd (default idle); all:\n"
		"                                also busy ones once --adopt-max-wait is over\n"
		"  --adopt-max-wait SEC          longest wait for a connection to go idle (default 30)\n"
		"  --max-redirected-sockets N    redirected sockets the BPF maps track (default\n"
		"                                262144; a quarter of it for connects not yet\n"
		"                                accepted); a change replaces the maps at start\n"
		"  --log-level LEVEL             debug|info|warn|error (default info)\n"
		"  --access-log                  one log line per stream\n"
		"  --kube-api URL --kube-token-file F --kube-ca-file F --node-name NAME\n"
		"                                Kubernetes source off-cluster (default: in-cluster)\n"
		"  --zone ZONE                   this node's zone (default: the Node's label\n"
		"                                topology.kubernetes.io/zone), for locality\n"
		"Limits per downstream connection (docs/security.md; each hit is counted in\n"
		"h2split_limit_exceeded_total{limit=...}):\n"
		"  --max-header-list-size BYTES  one header block (default 65536, at most 65536)\n"
		"  --max-headers N               fields in one header block (default 256, at most 256)\n"
		"  --max-continuations N         CONTINUATION frames per header block (default 8)\n"
		"  --max-concurrent-streams N    open streams (default 1000)\n"
		"  --max-control-frame-rate N    SETTINGS/PING/RST_STREAM/PRIORITY/WINDOW_UPDATE\n"
		"                                frames per second, burst of one second (default 10000)\n"
		"  --max-outbound-control-frames N  ACKs and resets queued for a peer that does\n"
		"                                not read (default 1000)\n"
		"  --max-pending-bytes BYTES     per stream and direction (the HTTP/2 stream window;\n"
		"                                default 262144)\n"
		"  --retry-buffer-bytes BYTES    request bytes held per stream so it can be sent\n"
		"                                again (default 65536, below --max-pending-bytes);\n"
		"                                a larger request is not retried\n"
		"  --max-connections-per-pod N   open connections from one client pod (default 1024,\n"
		"                                0: off); more are refused\n"
		"  --idle-timeout SEC            close a connection without streams (default 3600, 0: off)\n"
		"  --header-timeout SEC          the preface and each header block, once begun, must\n"
		"                                complete in time (default 30, 0: off)\n"
		"  --uninstall                   detach programs, remove pins and the listen address, exit\n"
		"  --version  --help\n"
		"Every flag also reads H2SPLIT_<FLAG> from the environment (e.g. H2SPLIT_LISTEN);\n"
		"repeatable flags take a comma-separated list there.\n");
}

static void env_name(const char *flag, char *buf, size_t len)
{
	size_t i = (size_t)snprintf(buf, len, "H2SPLIT_");

	for (; *flag && i + 1 < len; flag++)
		buf[i++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
	buf[i] = 0;
}

static int apply_env(struct config *c, const struct opt *o, const char *v, char *err,
		     size_t errlen)
{
	char item[CONFIG_PATH_MAX];
	const char *p = v;

	if (!o->repeatable)
		return o->set(c, v, err, errlen);
	while (*p) {
		size_t n = strcspn(p, ",");

		if (n >= sizeof(item)) {
			snprintf(err, errlen, "--%s: list item too long", o->flag);
			return -EINVAL;
		}
		memcpy(item, p, n);
		item[n] = 0;
		if (n && o->set(c, item, err, errlen))
			return -EINVAL;
		p += n + (p[n] == ',');
	}
	return 0;
}

static void set_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->bpffs, "/sys/fs/bpf/h2split");
	config_parse_addr("169.254.20.11:15001", &c->listen_v4);
	config_parse_addr("127.0.0.1:9901", &c->admin);
	c->upstream_source_pod = true;
	c->lb_policy = LB_EWMA; /* it wins make bench-balance: docs/balancing.md */
	c->lb_ewma_decay_ms = 10000;
	c->outlier_failures = 5;
	c->outlier_ejection_ms = 30000;
	c->outlier_failure_pct = 50;
	c->max_pending = 1024;
	c->max_callers_per_service = 100;
	c->max_methods_per_service = 50;
	c->pending_timeout_ms = 1000;
	c->drain_timeout_s = 30;
	c->adopt_existing = ADOPT_IDLE;
	c->adopt_max_wait_s = 30;
	c->log_level = LOG_INFO;
	c->max_header_list_size = 65536;
	c->max_headers = 256;
	c->max_continuations = 8;
	c->max_concurrent_streams = 1000;
	c->max_control_frame_rate = 10000;
	c->max_outbound_control_frames = 1000;
	c->max_pending_bytes = 256 * 1024;
	c->retry_buffer_bytes = -1; /* 64 KiB, or half a smaller window */
	c->max_connections_per_pod = 1024;
	c->idle_timeout_s = 3600;
	c->header_timeout_s = 30;
	c->upstream_keepalive_time_s = 10;
	c->upstream_keepalive_timeout_s = 5;
	c->max_redirected_sockets = 262144;
}

int config_parse(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
	const size_t n_opts = sizeof(opts) / sizeof(opts[0]);
	bool listen_env = false, listen_argv = false;

	set_defaults(c);
	for (size_t i = 0; i < n_opts; i++) {
		char name[64];
		const char *v;

		env_name(opts[i].flag, name, sizeof(name));
		v = getenv(name);
		if (!v || !*v)
			continue;
		if (!strcmp(opts[i].flag, "listen") && !listen_env) {
			memset(&c->listen_v4, 0, sizeof(c->listen_v4));
			listen_env = true;
		}
		if (apply_env(c, &opts[i], v, err, errlen)) {
			size_t l = strlen(err);

			snprintf(err + l, errlen - l, " (from %s)", name);
			return -EINVAL;
		}
	}
	for (int a = 1; a < argc; a++) {
		const char *arg = argv[a], *val = NULL, *eq;
		const struct opt *o = NULL;
		size_t nl;

		if (strncmp(arg, "--", 2) != 0) {
			snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
			return -EINVAL;
		}
		arg += 2;
		eq = strchr(arg, '=');
		nl = eq ? (size_t)(eq - arg) : strlen(arg);
		for (size_t i = 0; i < n_opts; i++)
			if (strlen(opts[i].flag) == nl && !strncmp(opts[i].flag, arg, nl))
				o = &opts[i];
		if (!o) {
			snprintf(err, errlen, "unknown flag '--%.*s' (see --help)", (int)nl, arg);
			return -EINVAL;
		}
		if (eq)
			val = eq + 1;
		else if (o->has_arg) {
			if (a + 1 >= argc) {
				snprintf(err, errlen, "--%s needs a value (see --help)", o->flag);
				return -EINVAL;
			}
			val = argv[++a];
		}
		/* The first --listen on the command line replaces the default/env ones. */
		if (!strcmp(o->flag, "listen") && !listen_argv) {
			memset(&c->listen_v4, 0, sizeof(c->listen_v4));
			memset(&c->listen_v6, 0, sizeof(c->listen_v6));
			listen_argv = true;
		}
		if (o->set(c, val, err, errlen))
			return -EINVAL;
	}
	if (!c->uninstall && !c->version && !c->help && c->discovery == DISCOVERY_FILE &&
	    !c->services_file[0]) {
		snprintf(err, errlen,
			 "--services-file is required with --discovery file (or use --discovery kubernetes)");
		return -EINVAL;
	}
	/* Held bytes are not given back to the client's window: a buffer as big
	 * as the window would stall a request that outgrows it. */
	if (c->retry_buffer_bytes < 0)
		c->retry_buffer_bytes =
		    c->max_pending_bytes > 128 * 1024 ? 64 * 1024 : c->max_pending_bytes / 2;
	if (c->retry_buffer_bytes >= c->max_pending_bytes) {
		snprintf(err, errlen,
			 "--retry-buffer-bytes %d: must be below --max-pending-bytes (%d): the held "
			 "bytes count against the stream window",
			 c->retry_buffer_bytes, c->max_pending_bytes);
		return -EINVAL;
	}
	if (!c->listen_v4.ss_family && !c->listen_v6.ss_family) {
		snprintf(err, errlen, "no --listen address left: give at least one ADDR:PORT");
		return -EINVAL;
	}
	return 0;
}
