/* SPDX-License-Identifier: Apache-2.0 */
/*
 * h2splitd's command line: flags, each also read from an environment variable
 * (H2SPLIT_ + the flag name upper-cased, '-' -> '_'; repeatable flags take a
 * comma-separated list there), so a DaemonSet can set them from a ConfigMap.
 * Flags win over the environment. The parsed config is immutable afterwards.
 */
#ifndef H2SPLIT_CONFIG_H
#define H2SPLIT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "base/log.h"
#include "base/state.h"

#define CONFIG_MAX_EXCLUDE 64
#define CONFIG_PATH_MAX 512

enum discovery_kind { DISCOVERY_FILE = 0, DISCOVERY_KUBERNETES };
/* --adopt-existing: what happens to connections opened before h2splitd. */
enum adopt_mode { ADOPT_OFF = 0, ADOPT_IDLE, ADOPT_ALL };

struct config {
	enum discovery_kind discovery;
	char services_file[CONFIG_PATH_MAX];
	char cgroup_dir[CONFIG_PATH_MAX]; /* "": the cgroup2 mount root */
	char bpffs[CONFIG_PATH_MAX];
	struct sockaddr_storage listen_v4; /* ss_family 0: none */
	struct sockaddr_storage listen_v6; /* ss_family 0: none */
	struct sockaddr_storage admin;
	char exclude[CONFIG_MAX_EXCLUDE][CONFIG_PATH_MAX];
	int n_exclude;
	bool upstream_source_pod; /* --upstream-source pod (default) | node */
	int workers;              /* 0: one per CPU */
	enum lb_policy lb_policy;
	int lb_ewma_decay_ms; /* ewma: time constant of the latency average */
	int outlier_failures;	 /* consecutive failures that eject; 0: off */
	int outlier_ejection_ms; /* first ejection, x the number of ejections */
	int outlier_failure_pct; /* failures among the last 20 verdicts that eject; 0: off */
	int slow_start_ms; /* joining endpoints' ramp; 0: off */
	/* Circuit breaking, per worker (Service annotations override): */
	int max_inflight_per_endpoint; /* 0: no limit */
	int max_inflight_per_service;  /* 0: no limit */
	int max_pending;	       /* waiting streams per service; 0: fail at once */
	int pending_timeout_ms;	       /* longest wait in the pending queue */
	/* Caller and method series (telemetry/metrics.h); 0: that family off. */
	int max_callers_per_service;
	int max_methods_per_service;
	int drain_timeout_s;
	enum adopt_mode adopt_existing; /* default ADOPT_IDLE */
	int adopt_max_wait_s;		/* longest wait for a connection to go idle */
	enum log_level log_level;
	bool access_log;
	char upstream_ca_file[CONFIG_PATH_MAX]; /* CA bundle for TLS upstreams */
	char kube_api[CONFIG_PATH_MAX];         /* https://host:port; "": in-cluster */
	char kube_token_file[CONFIG_PATH_MAX];
	char kube_ca_file[CONFIG_PATH_MAX];
	char node_name[256]; /* this node (Kubernetes source: pods of this node) */
	char zone[64];	     /* this node's zone (--zone); "": the Node's label */
	/* Hardening limits (docs/security.md); each hit counts in
	 * h2split_limit_exceeded_total{limit=...}. Timeouts 0: off. */
	int max_header_list_size;	 /* bytes of one header block (RFC 9113 size) */
	int max_headers;		 /* fields in one header block */
	int max_continuations;		 /* CONTINUATION frames after one HEADERS */
	int max_concurrent_streams;	 /* per downstream connection */
	int max_control_frame_rate;	 /* control frames/s per connection (burst: 1 s) */
	int max_outbound_control_frames; /* queued SETTINGS/PING ACKs, RST_STREAMs */
	int max_pending_bytes;		 /* per stream and direction: the stream window */
	int retry_buffer_bytes;		 /* request bytes held per stream for a retry */
	int max_connections_per_pod;	 /* 0: off */
	int idle_timeout_s;		 /* downstream connection without streams */
	int header_timeout_s;		 /* preface and each header block, once begun */
	/* Upstream liveness: PING a connection with streams silent this long
	 * (0: off); no ACK within the timeout: it is dead. Also the sockets'
	 * TCP keepalive and TCP_USER_TIMEOUT. */
	int upstream_keepalive_time_s;
	int upstream_keepalive_timeout_s;
	/* Redirected sockets the BPF maps track (h2s_sock_origdst); a quarter of
	 * it for connects not yet accepted (h2s_conn_origdst). A change is a map
	 * layout change: the maps are replaced at the next start. */
	int max_redirected_sockets;
	bool uninstall;
	bool version;
	bool help;
};

/* Fill |c| from the environment |envp| (NULL: environ) then |argv|.
 * 0, or -EINVAL with a message naming the bad flag and the fix in |err|. */
int config_parse(struct config *c, int argc, char **argv, char *err, size_t errlen);
/* Parse "1.2.3.4:80" or "[fd00::1]:80" into |ss|. 0 or -EINVAL. */
int config_parse_addr(const char *s, struct sockaddr_storage *ss);
/* Format |ss| as ADDR:PORT (brackets for IPv6) into |buf|. */
const char *config_addr_str(const struct sockaddr_storage *ss, char *buf, size_t len);
/* A duration "250ms", "10s", "2m" or "0" into |*out| milliseconds, at most
 * |max_ms|: 0, or -EINVAL. */
int config_parse_duration_ms(const char *s, int max_ms, int *out);
/* "round_robin" | "least_request" | "ewma": 0, or -EINVAL. */
int config_parse_lb_policy(const char *s, enum lb_policy *out);
const char *config_lb_policy_name(enum lb_policy p);
void config_usage(FILE *f);

#endif
