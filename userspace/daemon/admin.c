// SPDX-License-Identifier: Apache-2.0
/*
 * The admin endpoint (admin.h) on libmicrohttpd's internal polling thread.
 * We bind the listening socket ourselves so a failure names its errno, then
 * hand it to MHD. Requests are served one at a time on that one thread, so a
 * scrape (merging every worker's tables) never runs twice at once. Invariant:
 * nothing here writes to the daemon or blocks a worker.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer/health.h"
#include "base/locality.h"
#include "base/loop.h"
#include "daemon/admin.h"
#include "daemon/admin_int.h"
#include "daemon/coexist.h"
#include "daemon/adopt.h"
#include "daemon/daemon_view.h"
#include "kernel/bpf_maps.h"
#include "telemetry/metrics.h"
#include "telemetry/prom.h"

#define ADMIN_MAX_CONNS 64
#define ADMIN_CONN_TIMEOUT_S 10

#ifndef H2SPLIT_VERSION
#define H2SPLIT_VERSION "unknown"
#endif

static const char text_plain[] = "text/plain; charset=utf-8";
static const char prom_text[] = "text/plain; version=0.0.4; charset=utf-8";
static const char app_json[] = "application/json";

struct admin {
	struct daemon *d;
	struct MHD_Daemon *mhd; /* owned; owns the listening socket once started */
	uint16_t port;
};

static int reply_text(struct reply *r, unsigned int status, const char *text)
{
	r->status = status;
	r->ctype = text_plain;
	r->body = strdup(text);
	r->len = r->body ? strlen(r->body) : 0;
	return r->body ? 0 : -ENOMEM;
}

/* ---- /healthz, /readyz ---- */

static int h_healthz(struct daemon *d, struct reply *r)
{
	(void)d;
	return reply_text(r, MHD_HTTP_OK, "ok\n");
}

/* The generation every worker applied, and the source's version of it:
 * whoever changed the source waits for its version here. */
static void applied_str(struct daemon *d, char *buf, size_t len)
{
	struct snapshot *snap = daemon_snapshot(d);

	snprintf(buf, len, "generation=%llu version=%s",
		 (unsigned long long)(snap ? snap->generation : 0),
		 snap && snap->st->version[0] ? snap->st->version : "-");
	registry_snapshot_unref(snap);
}

static int h_readyz(struct daemon *d, struct reply *r)
{
	char buf[160] = "not ready:", applied[STATE_VERSION_MAX + 48], ok[sizeof(applied) + 2056];
	const char *sep = " ";

	struct daemon_status st;

	daemon_status(d, &st);
	if (st.ready) {
		char warn[2048]; /* other programs that see VIPs first (daemon/coexist.h) */

		applied_str(d, applied, sizeof(applied));
		coexist_readyz(daemon_coexist(d), warn, sizeof(warn));
		snprintf(ok, sizeof(ok), "ready %s\n%s", applied, warn);
		return reply_text(r, MHD_HTTP_OK, ok);
	}
	if (!st.synced) {
		strcat(buf, " discovery not synced");
		sep = ", ";
	}
	if (!st.redirecting) {
		strcat(buf, sep);
		strcat(buf, "not redirecting");
		sep = ", ";
	}
	if (st.draining) {
		strcat(buf, sep);
		strcat(buf, "draining");
	}
	strcat(buf, "\n");
	return reply_text(r, MHD_HTTP_SERVICE_UNAVAILABLE, buf);
}

/* ---- /metrics ---- */

static void write_daemon(FILE *f, struct daemon *d, const struct snapshot *snap)
{
	struct daemon_status st;
	uint64_t n_eps = 0;

	daemon_status(d, &st);
	prom_family(f, "h2split_build_info", "gauge", "The running h2splitd's version.");
	prom_u64(f, "h2split_build_info", &(struct prom_label){"version", H2SPLIT_VERSION}, 1, 1);
	prom_gauge(f, "h2split_ready", "1 when synced, redirecting and not draining (as /readyz).",
		   st.ready);
	prom_gauge(f, "h2split_discovery_synced", "1 once discovery delivered a full state.",
		   st.synced);
	prom_gauge(f, "h2split_redirecting", "1 while the listeners are in the BPF liveness map.",
		   st.redirecting);
	prom_gauge(f, "h2split_draining", "1 once shutdown began.", st.draining);
	prom_gauge(f, "h2split_workers", "Worker threads.", (uint64_t)st.n_workers);
	for (int i = 0; snap && i < snap->st->n_svcs; i++)
		n_eps += snap->st->svcs[i].retired_ms ? 0 : (uint64_t)snap->st->svcs[i].n_eps;
	prom_gauge(f, "h2split_state_generation",
		   "Generation of the state in force: every worker routes by it.",
		   snap ? snap->generation : 0);
	prom_gauge(f, "h2split_services", "Opted-in service ports in the state in force.",
		   snap ? (uint64_t)(snap->st->n_svcs - snap->st->n_retired) : 0);
	prom_gauge(f, "h2split_services_retired",
		   "Service ports no longer redirected, still routing their open connections' "
		   "streams.",
		   snap ? (uint64_t)snap->st->n_retired : 0);
	prom_gauge(f, "h2split_endpoints", "Endpoints of those services, in any condition.", n_eps);
	prom_counter(f, "h2split_discovery_errors_total", "Discovery loads that failed.",
		     st.discovery_errors);
	prom_counter(f, "h2split_discovery_relists_total",
		     "Full relists after the source's history expired (Kubernetes: 410 Gone), "
		     "each after a backoff.",
		     st.discovery_relists);
	adopter_write_prometheus(daemon_adopter(d), f);
}

/* Every per-worker counter of stats.h, summed: *_total counters, the rest
 * gauges (no HELP: the names say it). Then one labelled family for every
 * hardening limit a peer ran into. */
static void write_stats(FILE *f, struct daemon *d)
{
	static const char limits[] = "h2split_limit_exceeded_total";
	struct daemon_stats sum;
	char name[96];

	daemon_stats(d, &sum);
	for (int id = 0; id < ST_MAX; id++) {
		size_t len = strlen(stats_names[id]);
		bool counter = len > 6 && !strcmp(stats_names[id] + len - 6, "_total");

		snprintf(name, sizeof(name), "h2split_%s", stats_names[id]);
		prom_family(f, name, counter ? "counter" : "gauge", NULL);
		prom_u64(f, name, NULL, 0, sum.v[id]);
	}
	prom_family(f, limits, "counter", "Times a peer ran into a hardening limit.");
	for (int id = 0; id < LIMIT_MAX; id++)
		prom_u64(f, limits, &(struct prom_label){"limit", limit_names[id]}, 1,
			 sum.limits[id]);
}

/* The kernel side's decisions, summed over CPUs. Nothing without BPF. */
static void write_bpf(FILE *f, struct daemon *d)
{
	uint64_t v[H2S_CNT_MAX];
	char name[96];

	if (daemon_bpf_counters(d, v))
		return;
	for (int c = 0; c < H2S_CNT_MAX; c++) {
		snprintf(name, sizeof(name), "h2split_bpf_%s_total",
			 bpf_maps_counter_name((enum h2s_counter)c));
		prom_counter(f, name, bpf_maps_counter_help((enum h2s_counter)c), v[c]);
	}
}

static int h_metrics(struct daemon *d, struct reply *r)
{
	struct snapshot *snap = daemon_snapshot(d);
	struct metrics_merged *mm = daemon_metrics(d);
	FILE *f = NULL;
	int err = -ENOMEM;

	r->body = NULL;
	if (mm)
		f = open_memstream(&r->body, &r->len);
	if (f) {
		write_daemon(f, d, snap);
		write_stats(f, d);
		write_bpf(f, d);
		coexist_write_metrics(f, daemon_coexist(d));
		err = metrics_write_prometheus(f, mm, snap ? snap->st : NULL, loop_now_ms());
		if (fclose(f) && !err)
			err = -EIO;
	}
	metrics_merged_free(mm);
	registry_snapshot_unref(snap);
	if (err) {
		free(r->body);
		r->body = NULL;
		return err;
	}
	r->status = MHD_HTTP_OK;
	r->ctype = prom_text;
	return 0;
}

/* ---- /services, /endpoints ---- */

int admin_reply_json(struct reply *r, struct json_object *root)
{
	const char *s = root ? json_object_to_json_string_ext(
				   root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
			     : NULL;

	r->body = s ? malloc(strlen(s) + 2) : NULL;
	if (r->body) {
		r->len = (size_t)sprintf(r->body, "%s\n", s);
		r->status = MHD_HTTP_OK;
		r->ctype = app_json;
	}
	json_object_put(root);
	return r->body ? 0 : -ENOMEM;
}

static struct json_object *json_root(const struct snapshot *snap, struct json_object **arr)
{
	struct json_object *root = json_object_new_object();

	*arr = json_object_new_array();
	if (!root || !*arr) {
		json_object_put(root);
		json_object_put(*arr);
		return NULL;
	}
	json_object_object_add(root, "generation",
			       json_object_new_uint64(snap ? snap->generation : 0));
	json_object_object_add(root, "version",
			       json_object_new_string(snap ? snap->st->version : ""));
	json_object_object_add(root, "services", *arr);
	return root;
}

void admin_add_str(struct json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

void admin_add_u64(struct json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

/* A Service's limit in force: its annotation (-1: none, shown as 0) or else
 * the daemon's flag, as state.h defines it and balancer.c's cap() applies. */
static uint64_t in_force(int32_t svc_value, int flag)
{
	if (svc_value < 0)
		return 0;
	return (uint64_t)(svc_value ? svc_value : flag);
}

/* The balancing settings in force for |svc|: its annotations over the
 * daemon's flags. 0 for a limit or slow start: none / off. */
static struct json_object *balancing_json(const struct config *cfg,
					  const struct state_service *svc)
{
	struct json_object *o = json_object_new_object();
	bool checked = svc->health_check && !svc->upstream_tls; /* TLS: not probed */
	bool weights = false;

	if (!o)
		return NULL;
	for (int i = 0; i < svc->n_eps; i++)
		weights |= svc->eps[i].weight != 0;
	admin_add_str(o, "policy",
		config_lb_policy_name(svc->lb == LB_DEFAULT ? cfg->lb_policy : svc->lb));
	admin_add_str(o, "policy_source", svc->lb == LB_DEFAULT ? "default" : "annotation");
	admin_add_u64(o, "max_inflight_per_endpoint",
		in_force(svc->max_inflight_ep, cfg->max_inflight_per_endpoint));
	admin_add_u64(o, "max_inflight_per_service",
		in_force(svc->max_inflight, cfg->max_inflight_per_service));
	admin_add_u64(o, "max_pending", in_force(svc->max_pending, cfg->max_pending));
	admin_add_u64(o, "slow_start_ms", in_force(svc->slow_start_ms, cfg->slow_start_ms));
	admin_add_str(o, "health_check", checked ? "grpc" : "off");
	if (checked) {
		admin_add_str(o, "health_check_service", svc->health_service);
		admin_add_u64(o, "health_check_interval_ms",
			svc->health_interval_ms > 0 ? (uint64_t)svc->health_interval_ms
						    : HEALTH_INTERVAL_MS);
	}
	json_object_object_add(o, "weights", json_object_new_boolean(weights));
	return o;
}

/* One policy as its annotation said it, NULL when there is none. */
static struct json_object *policy_json(const struct rpc_policy *p)
{
	struct json_object *o, *codes, *methods;

	if (p->kind == RPC_POLICY_NONE)
		return NULL;
	o = json_object_new_object();
	codes = json_object_new_array();
	methods = json_object_new_array();
	if (!o || !codes || !methods) {
		json_object_put(o);
		json_object_put(codes);
		json_object_put(methods);
		return NULL;
	}
	admin_add_u64(o, "max_attempts", p->max_attempts);
	if (p->kind == RPC_POLICY_RETRY) {
		admin_add_u64(o, "initial_backoff_ms", p->initial_backoff_ms);
		admin_add_u64(o, "max_backoff_ms", p->max_backoff_ms);
		json_object_object_add(o, "backoff_multiplier",
				       json_object_new_double(p->backoff_multiplier));
	} else {
		admin_add_u64(o, "hedging_delay_ms", p->hedging_delay_ms);
	}
	for (int i = 0; i < RPC_POLICY_GRPC_CODES; i++)
		if (p->codes & 1u << i)
			json_object_array_add(codes,
					      json_object_new_string(rpc_policy_code_name(i)));
	json_object_object_add(
	    o, p->kind == RPC_POLICY_RETRY ? "retryable_status_codes" : "non_fatal_status_codes",
	    codes);
	for (const char *m = p->methods; *m;) {
		size_t l = strcspn(m, "\n");

		json_object_array_add(methods, json_object_new_string_len(m, (int)l));
		m += l + (m[l] == '\n');
	}
	json_object_object_add(o, "methods", methods); /* []: every method */
	json_object_object_add(o, "budget_ratio", json_object_new_double(p->budget_ratio));
	json_object_object_add(o, "budget_min_per_second",
			       json_object_new_double(p->budget_min_per_s));
	return o;
}

/* The retry and hedging policies in force (annotations; none by default),
 * and "short", the column h2splitctl services prints. */
static struct json_object *retries_json(const struct state_service *svc)
{
	struct json_object *o = json_object_new_object();
	char shrt[96] = "", part[48];

	if (!o)
		return NULL;
	json_object_object_add(o, "retry", policy_json(&svc->retry));
	json_object_object_add(o, "hedging", policy_json(&svc->hedge));
	admin_add_u64(o, "per_try_timeout_ms",
		      svc->per_try_timeout_ms > 0 ? (uint64_t)svc->per_try_timeout_ms : 0);
	if (svc->retry.kind) {
		snprintf(part, sizeof(part), "retry/%u", svc->retry.max_attempts);
		strcat(shrt, part);
	}
	if (svc->hedge.kind) {
		snprintf(part, sizeof(part), "%shedge/%u/%ums", *shrt ? "+" : "",
			 svc->hedge.max_attempts, svc->hedge.hedging_delay_ms);
		strcat(shrt, part);
	}
	if (svc->per_try_timeout_ms > 0) {
		snprintf(part, sizeof(part), "%stry/%dms", *shrt ? "+" : "",
			 svc->per_try_timeout_ms);
		strcat(shrt, part);
	}
	admin_add_str(o, "short", *shrt ? shrt : "off");
	return o;
}

static struct json_object *service_json(struct daemon *d, const struct state_service *svc)
{
	struct json_object *o = json_object_new_object(), *vips = json_object_new_array();
	const struct config *cfg = daemon_config(d);
	enum lb_policy lb = svc->lb == LB_DEFAULT ? cfg->lb_policy : svc->lb;
	uint64_t usable = 0;
	char ip[INET6_ADDRSTRLEN];

	if (!o || !vips) {
		json_object_put(o);
		json_object_put(vips);
		return NULL;
	}
	for (int i = 0; i < svc->n_vips; i++)
		json_object_array_add(
		    vips, json_object_new_string(h2s_ip_str(&svc->vips[i], ip, sizeof(ip))));
	for (int i = 0; i < svc->n_eps; i++)
		usable += state_endpoint_usable(&svc->eps[i]);
	admin_add_u64(o, "id", svc->id);
	admin_add_str(o, "namespace", svc->ns);
	admin_add_str(o, "name", svc->name);
	admin_add_str(o, "port_name", svc->port_name);
	admin_add_u64(o, "port", svc->port);
	json_object_object_add(o, "vips", vips);
	admin_add_str(o, "lb_policy", config_lb_policy_name(lb));
	json_object_object_add(o, "upstream_tls", json_object_new_boolean(svc->upstream_tls));
	admin_add_u64(o, "endpoints", (uint64_t)svc->n_eps);
	admin_add_u64(o, "endpoints_usable", usable);
	json_object_object_add(o, "balancing", balancing_json(cfg, svc));
	json_object_object_add(o, "retries", retries_json(svc));
	return o;
}

static struct json_object *retired_json(const struct state_service *svc, uint64_t now_ms)
{
	struct json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	admin_add_u64(o, "id", svc->id);
	admin_add_str(o, "namespace", svc->ns);
	admin_add_str(o, "name", svc->name);
	admin_add_str(o, "port_name", svc->port_name);
	admin_add_u64(o, "port", svc->port);
	admin_add_u64(o, "retired_ms_ago", now_ms - svc->retired_ms);
	return o;
}

/* Desired services; those that left the desired state but still route the
 * streams of connections opened before are listed apart, as "retired". */
static int h_services(struct daemon *d, struct reply *r)
{
	struct snapshot *snap = daemon_snapshot(d);
	struct json_object *arr, *root = json_root(snap, &arr), *retired = NULL;
	uint64_t now = loop_now_ms();

	if (root && (retired = json_object_new_array()))
		json_object_object_add(root, "retired", retired);
	for (int i = 0; root && snap && i < snap->st->n_svcs; i++) {
		const struct state_service *svc = &snap->st->svcs[i];

		if (!svc->retired_ms)
			json_object_array_add(arr, service_json(d, svc));
		else if (retired)
			json_object_array_add(retired, retired_json(svc, now));
	}
	registry_snapshot_unref(snap);
	return admin_reply_json(r, root);
}

/* Why an endpoint takes new streams or not, most decisive first: what
 * discovery says, then what the balancer learnt (on any worker). */
static const char *endpoint_state(const struct state_service *svc, const struct state_endpoint *ep,
				  const struct metrics_endpoint_health *h, uint64_t now_ms,
				  const struct health_table *health)
{
	if (ep->terminating)
		return "terminating";
	if (!ep->ready ||
	    (svc->health_check && health_table_unhealthy(health, svc->id, &ep->ip, ep->port)))
		return "unhealthy";
	if (h->ejected_until_ms > now_ms)
		return "ejected";
	if (h->backoff_until_ms > now_ms)
		return "backoff";
	if (h->warm_until_ms > now_ms)
		return "warming";
	return "usable";
}

static const char *const tier_names[] = {"node", "zone", "rest"};
static const char *const topology_names[] = {"default", "off", "zone", "node"};

static struct json_object *endpoint_json(const struct state_service *svc,
					 const struct state_endpoint *ep,
					 const struct metrics_merged *mm, uint64_t now_ms,
					 const struct health_table *health)
{
	struct json_object *o = json_object_new_object();
	const struct metrics_endpoint_health *h;
	struct metrics_endpoint_totals t;
	char ip[INET6_ADDRSTRLEN];
	uint64_t ej_ms;

	if (!o)
		return NULL;
	metrics_merged_endpoint(mm, svc->id, &ep->ip, ep->port, &t);
	h = &t.health;
	ej_ms = h->ejected_until_ms > now_ms ? h->ejected_until_ms - now_ms : 0;
	admin_add_str(o, "ip", h2s_ip_str(&ep->ip, ip, sizeof(ip)));
	admin_add_u64(o, "port", ep->port);
	admin_add_str(o, "pod", ep->pod);
	json_object_object_add(o, "ready", json_object_new_boolean(ep->ready));
	json_object_object_add(o, "serving", json_object_new_boolean(ep->serving));
	json_object_object_add(o, "terminating", json_object_new_boolean(ep->terminating));
	json_object_object_add(o, "active", json_object_new_int64(t.active));
	admin_add_u64(o, "requests", t.requests);
	admin_add_u64(o, "failures", t.failures);
	admin_add_u64(o, "retries", t.events[METRICS_EV_RETRY]);
	admin_add_u64(o, "resets_sent", t.events[METRICS_EV_RESET_SENT]);
	admin_add_u64(o, "resets_received", t.events[METRICS_EV_RESET_RECEIVED]);
	admin_add_u64(o, "connect_failures", t.events[METRICS_EV_CONNECT_FAILURE]);
	admin_add_str(o, "state", endpoint_state(svc, ep, h, now_ms, health));
	admin_add_str(o, "node", ep->node);
	admin_add_str(o, "zone", ep->zone);
	admin_add_str(o, "locality", locality_name(ep->locality));
	admin_add_str(o, "tier", svc->topology_in_force == STATE_TOPO_ZONE ||
				   svc->topology_in_force == STATE_TOPO_NODE
			       ? tier_names[ep->tier <= STATE_TIER_REST ? ep->tier : STATE_TIER_REST]
			       : "-");
	json_object_object_add(o, "ejected_until", json_object_new_double((double)ej_ms / 1000.0));
	admin_add_u64(o, "consecutive_failures", h->consec_failures);
	admin_add_u64(o, "ejections", h->ejections);
	admin_add_u64(o, "ewma_latency_us", h->ewma_us);
	admin_add_u64(o, "ewma_jitter_us", h->jitter_us);
	return o;
}

static struct json_object *service_endpoints_json(const struct state_service *svc,
						  const struct metrics_merged *mm, uint64_t now_ms,
						  const struct health_table *health)
{
	struct json_object *o = json_object_new_object(), *eps = json_object_new_array();
	char label[STATE_NAME_MAX * 2 + 16];

	if (!o || !eps) {
		json_object_put(o);
		json_object_put(eps);
		return NULL;
	}
	snprintf(label, sizeof(label), "%s/%s:%u", svc->ns, svc->name, svc->port);
	admin_add_u64(o, "id", svc->id);
	admin_add_str(o, "service", label);
	/* Locality in force: "off" unless tiers apply (base/locality.c). */
	admin_add_str(o, "topology", topology_names[svc->topology_in_force <= STATE_TOPO_NODE &&
						      svc->topology_in_force != STATE_TOPO_DEFAULT
					      ? svc->topology_in_force
					      : STATE_TOPO_OFF]);
	json_object_object_add(o, "local_only", json_object_new_boolean(svc->local_only));
	for (int i = 0; i < svc->n_eps; i++)
		json_object_array_add(eps, endpoint_json(svc, &svc->eps[i], mm, now_ms, health));
	json_object_object_add(o, "endpoints", eps);
	return o;
}

static int h_endpoints(struct daemon *d, struct reply *r)
{
	struct snapshot *snap = daemon_snapshot(d);
	struct metrics_merged *mm = daemon_metrics(d);
	struct json_object *arr, *root = mm ? json_root(snap, &arr) : NULL;
	uint64_t now_ms = loop_now_ms();

	for (int i = 0; root && snap && i < snap->st->n_svcs; i++)
		json_object_array_add(
		    arr, service_endpoints_json(&snap->st->svcs[i], mm, now_ms, daemon_health(d)));
	metrics_merged_free(mm);
	registry_snapshot_unref(snap);
	return admin_reply_json(r, root);
}

/* ---- dispatch ---- */

static const struct route {
	const char *path;
	int (*handler)(struct daemon *d, struct reply *r);
} routes[] = {
    {"/healthz", h_healthz},   {"/readyz", h_readyz},	    {"/metrics", h_metrics},
    {"/services", h_services}, {"/endpoints", h_endpoints}, {"/calls", admin_calls},
    {"/tap", admin_tap},
    {"/adopt", admin_adopt},
};

static enum MHD_Result send_reply(struct MHD_Connection *c, struct reply *r)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!resp) {
		free(r->body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
	if (r->status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* MHD's access handler: one call per request (GET bodies are ignored). */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **req_cls)
{
	struct admin *a = cls;
	struct reply r = {.req = c};
	int err = 0;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)req_cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
		err = reply_text(&r, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	} else {
		size_t i;

		for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
			if (!strcmp(url, routes[i].path))
				break;
		if (i < sizeof(routes) / sizeof(routes[0]))
			err = routes[i].handler(a->d, &r);
		else
			err = reply_text(&r, MHD_HTTP_NOT_FOUND, "not found\n");
	}
	if (err && reply_text(&r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n"))
		return MHD_NO;
	return send_reply(c, &r);
}

/* ---- start, stop ---- */

static int open_listener(const struct sockaddr_storage *ss, uint16_t *port)
{
	socklen_t len =
	    ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	struct sockaddr_storage bound;
	int one = 1, fd, err;

	if (ss->ss_family != AF_INET && ss->ss_family != AF_INET6)
		return -EAFNOSUPPORT;
	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* SO_REUSEPORT: during a rolling update (maxSurge) the new daemon binds
	 * beside the old one; either may answer a probe until the old one exits. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
	    bind(fd, (const struct sockaddr *)ss, len) || listen(fd, ADMIN_MAX_CONNS) ||
	    getsockname(fd, (struct sockaddr *)&bound, &len)) {
		err = -errno;
		close(fd);
		return err;
	}
	*port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
						  : ((struct sockaddr_in *)&bound)->sin_port);
	return fd;
}

struct admin *admin_start(struct daemon *d)
{
	struct admin *a = calloc(1, sizeof(*a));
	char addr[80];
	unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD;
	const struct config *cfg = daemon_config(d);
	int fd;

	config_addr_str(&cfg->admin, addr, sizeof(addr));
	if (!a) {
		fprintf(stderr, "h2splitd: admin: cannot listen on %s: %s\n", addr,
			strerror(ENOMEM));
		return NULL;
	}
	a->d = d;
	fd = open_listener(&cfg->admin, &a->port);
	if (fd < 0) {
		fprintf(stderr, "h2splitd: admin: cannot listen on %s: %s\n", addr, strerror(-fd));
		free(a);
		return NULL;
	}
	if (cfg->admin.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	a->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ADMIN_MAX_CONNS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ADMIN_CONN_TIMEOUT_S,
				  MHD_OPTION_END);
	if (!a->mhd) {
		fprintf(stderr,
			"h2splitd: admin: cannot listen on %s: libmicrohttpd did not start\n",
			addr);
		close(fd);
		free(a);
		return NULL;
	}
	return a;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->mhd); /* joins its thread and closes the listening socket */
	free(a);
}

uint16_t admin_port(const struct admin *a)
{
	return a->port;
}
