// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for the pure pieces of the Kubernetes source: API URLs, HTTP
 * response heads, chunked decoding (split at every byte), watch event lines,
 * Status objects, backoff bounds (k8s_watch.c), and pod cgroup paths for
 * both cgroup drivers plus the opt-out bookkeeping (k8s_pods.c).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "discovery/k8s_pods.h"
#include "discovery/k8s_watch.h"

/* ---- URL ---- */

static void test_url_forms(void **state)
{
	struct k8s_url u;
	const char *err;
	char hp[300];

	(void)state;
	assert_int_equal(k8s_url_parse("https://10.96.0.1:443", &u, &err), 0);
	assert_string_equal(u.host, "10.96.0.1");
	assert_int_equal(u.port, 443);
	assert_true(u.host_is_ip);
	assert_int_equal(k8s_url_parse("https://[fd00::1]:6443/", &u, &err), 0);
	assert_string_equal(u.host, "fd00::1");
	assert_int_equal(u.port, 6443);
	assert_true(u.host_is_ip);
	assert_string_equal(k8s_url_hostport(&u, hp, sizeof(hp)), "[fd00::1]:6443");
	assert_int_equal(k8s_url_parse("https://kubernetes.default.svc", &u, &err), 0);
	assert_string_equal(u.host, "kubernetes.default.svc");
	assert_int_equal(u.port, 443);
	assert_false(u.host_is_ip);
}

static void test_url_rejects(void **state)
{
	static const char *const bad[] = {
	    "http://10.0.0.1:80", "10.0.0.1:443",      "https://",	   "https://:443",
	    "https://h:0",	  "https://h:70000",   "https://h:12x",	   "https://[::1",
	    "https://[::1]x",	  "https://h:443/api", "https://[host]:1",
	};
	struct k8s_url u;
	const char *err;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		assert_int_equal(k8s_url_parse(bad[i], &u, &err), -EINVAL);
		assert_non_null(err);
	}
}

/* ---- response head ---- */

static void test_head_chunked(void **state)
{
	const char *r = "HTTP/1.1 200 OK\r\n"
			"Content-Type: application/json\r\n"
			"Transfer-Encoding: gzip, Chunked\r\n"
			"\r\n"
			"5\r\nhello";
	struct k8s_http_head h;
	ssize_t n;

	(void)state;
	n = k8s_http_head_parse(r, strlen(r), &h);
	assert_int_equal(n, strstr(r, "5\r\n") - r);
	assert_int_equal(h.status, 200);
	assert_true(h.chunked);
	assert_int_equal(h.content_length, -1);
	/* Incomplete heads need more bytes, at every cut. */
	for (size_t i = 0; i < (size_t)n; i++)
		assert_int_equal(k8s_http_head_parse(r, i, &h), 0);
}

static void test_head_length_and_errors(void **state)
{
	const char *gone = "HTTP/1.1 410 Gone\r\ncontent-length:  42 \r\n\r\n";
	const char *nolen = "HTTP/1.0 500\r\n\r\n";
	struct k8s_http_head h;
	char big[K8S_HEAD_MAX + 8];

	(void)state;
	assert_int_equal(k8s_http_head_parse(gone, strlen(gone), &h), (ssize_t)strlen(gone));
	assert_int_equal(h.status, 410);
	assert_false(h.chunked);
	assert_int_equal(h.content_length, 42);
	assert_int_equal(k8s_http_head_parse(nolen, strlen(nolen), &h), (ssize_t)strlen(nolen));
	assert_int_equal(h.status, 500);
	assert_int_equal(h.content_length, -1);
	assert_int_equal(k8s_http_head_parse("HTTP/2 200\r\n\r\n", 14, &h), -EINVAL);
	assert_int_equal(k8s_http_head_parse("HTTP/1.1 20x OK\r\n\r\n", 19, &h), -EINVAL);
	assert_int_equal(k8s_http_head_parse("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", 28, &h),
			 -EINVAL);
	assert_int_equal(
	    k8s_http_head_parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 39, &h), -EINVAL);
	memset(big, 'a', sizeof(big));
	assert_int_equal(k8s_http_head_parse(big, sizeof(big), &h), -E2BIG);
}

/* ---- chunked ---- */

static const char chunked_body[] = "7\r\n{\"a\":1}\r\n"
				   "1;ext=1\r\n\n\r\n"
				   "A\r\n{\"b\":\"xy\"}\r\n"
				   "0\r\n"
				   "X-Trailer: t\r\n"
				   "\r\n"
				   "garbage after the end";
static const char chunked_payload[] = "{\"a\":1}\n{\"b\":\"xy\"}";

/* Decode |body| fed in pieces of |step| bytes; the payload goes to |out|. */
static int decode_in_steps(const char *body, size_t len, size_t step, char *out, size_t *out_len,
			   bool *done)
{
	struct k8s_chunked c = {0};
	char piece[64];

	*out_len = 0;
	for (size_t off = 0; off < len; off += step) {
		size_t n = len - off < step ? len - off : step, got;
		int rc;

		memcpy(piece, body + off, n);
		rc = k8s_chunked_decode(&c, piece, n, &got);
		if (rc)
			return rc;
		memcpy(out + *out_len, piece, got);
		*out_len += got;
	}
	*done = c.done;
	return 0;
}

static void test_chunked_every_split(void **state)
{
	char out[sizeof(chunked_body)];
	size_t n;
	bool done;

	(void)state;
	for (size_t step = 1; step <= sizeof(chunked_body); step++) {
		assert_int_equal(decode_in_steps(chunked_body, sizeof(chunked_body) - 1,
						 step < 64 ? step : 63, out, &n, &done),
				 0);
		assert_true(done);
		assert_int_equal(n, strlen(chunked_payload));
		assert_memory_equal(out, chunked_payload, n);
	}
}

static void test_chunked_errors(void **state)
{
	static const char *const bad[] = {
	    "x\r\n",		      /* not hex */
	    "\r\n",		      /* no digits */
	    "3\r\nabcX",	      /* no CRLF after the payload */
	    "3\r\nabc\rX",	      /* CR without LF */
	    "0\r\n\rX",		      /* bad final line */
	    "FFFFFFFFFFFFFFFFFF\r\n", /* size overflow */
	};
	struct k8s_chunked c;
	char buf[64];
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&c, 0, sizeof(c));
		strcpy(buf, bad[i]);
		assert_int_equal(k8s_chunked_decode(&c, buf, strlen(buf), &n), -EINVAL);
	}
	/* A stream that is not done yet is not an error. */
	memset(&c, 0, sizeof(c));
	strcpy(buf, "5\r\nab");
	assert_int_equal(k8s_chunked_decode(&c, buf, strlen(buf), &n), 0);
	assert_int_equal(n, 2);
	assert_false(c.done);
}

/* ---- event lines ---- */

struct lines_seen {
	char all[512];
	int n;
	int stop_at; /* return 1 from this line on (0: never) */
};

static int collect_line(void *arg, const char *line, size_t len)
{
	struct lines_seen *s = arg;

	s->n++;
	strncat(s->all, line, len);
	strcat(s->all, "|");
	return s->stop_at && s->n >= s->stop_at ? 1 : 0;
}

static void test_lines_split_anywhere(void **state)
{
	const char *stream = "{\"type\":\"ADDED\"}\r\n\n{\"type\":\"BOOKMARK\"}\n{\"tail\":";
	size_t len = strlen(stream);

	(void)state;
	for (size_t step = 1; step <= len; step++) {
		struct k8s_lines l = {.max = 64};
		struct lines_seen s = {0};

		for (size_t off = 0; off < len; off += step)
			assert_int_equal(k8s_lines_feed(&l, stream + off,
							len - off < step ? len - off : step,
							collect_line, &s),
					 0);
		assert_int_equal(s.n, 2);
		assert_string_equal(s.all, "{\"type\":\"ADDED\"}|{\"type\":\"BOOKMARK\"}|");
		assert_int_equal(l.len, strlen("{\"tail\":"));
		k8s_lines_free(&l);
	}
}

static void test_lines_limits_and_stop(void **state)
{
	struct k8s_lines l = {.max = 8};
	struct lines_seen s = {0};

	(void)state;
	assert_int_equal(k8s_lines_feed(&l, "12345", 5, collect_line, &s), 0);
	assert_int_equal(k8s_lines_feed(&l, "6789\n", 5, collect_line, &s), -E2BIG);
	assert_int_equal(k8s_lines_feed(&l, "123456789\n", 10, collect_line, &s), -E2BIG);
	k8s_lines_reset(&l);
	assert_int_equal(k8s_lines_feed(&l, "ok\n", 3, collect_line, &s), 0);
	assert_string_equal(s.all, "ok|");
	s.stop_at = 2;
	assert_int_equal(k8s_lines_feed(&l, "a\nb\nc\n", 6, collect_line, &s), 1);
	assert_string_equal(s.all, "ok|a|");
	k8s_lines_free(&l);
}

/* ---- events and Status ---- */

static void test_event_parse(void **state)
{
	const char *add = "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Service\","
			  "\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"17\"}}}";
	const char *gone = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":"
			   "\"v1\",\"status\":\"Failure\",\"message\":\"too old resource "
			   "version: 1 (5)\",\"reason\":\"Expired\",\"code\":410}}";
	enum k8s_watch_type t;
	struct json_object *o;
	const char *err, *msg;

	(void)state;
	assert_int_equal(k8s_watch_event_parse(add, strlen(add), &t, &o, &err), 0);
	assert_int_equal(t, K8S_WATCH_ADDED);
	assert_string_equal(k8s_resource_version(o), "17");
	assert_int_equal(k8s_status_code(o, &msg), 0);
	json_object_put(o);
	assert_int_equal(k8s_watch_event_parse(gone, strlen(gone), &t, &o, &err), 0);
	assert_int_equal(t, K8S_WATCH_ERROR);
	assert_int_equal(k8s_status_code(o, &msg), 410);
	assert_string_equal(msg, "too old resource version: 1 (5)");
	json_object_put(o);

	assert_int_equal(k8s_watch_event_parse("{\"type\":\"ADDED\"}", 16, &t, &o, &err), -EINVAL);
	assert_null(o);
	assert_int_equal(
	    k8s_watch_event_parse("{\"type\":\"NOPE\",\"object\":{}}", 27, &t, &o, &err), -EINVAL);
	assert_int_equal(
	    k8s_watch_event_parse("{\"type\":\"ADDED\",\"object\":{}} {}", 31, &t, &o, &err),
	    -EINVAL);
	assert_int_equal(k8s_watch_event_parse("{\"type\":", 8, &t, &o, &err), -EINVAL);
}

static void test_query_escape(void **state)
{
	char buf[64];

	(void)state;
	assert_int_equal(k8s_query_escape("node-1.example", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "node-1.example");
	assert_int_equal(k8s_query_escape("a=b&c/d+e", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "a%3Db%26c%2Fd%2Be");
	assert_int_equal(k8s_query_escape("abc", buf, 3), -ENAMETOOLONG);
	assert_int_equal(k8s_query_escape("=", buf, 3), -ENAMETOOLONG);
}

/* ---- backoff ---- */

static void test_backoff_bounds(void **state)
{
	struct k8s_backoff b;
	uint32_t prev_cap = 0;

	(void)state;
	k8s_backoff_init(&b, 500, 30000, 120000, 42);
	for (int i = 0; i < 200; i++) {
		uint32_t cap = b.cur_ms ? b.cur_ms : 500;
		uint32_t d = k8s_backoff_next(&b);

		assert_true(d >= cap / 2 && d <= cap);
		assert_true(d >= 250 && d <= 30000);
		assert_true(cap >= prev_cap);
		prev_cap = cap;
	}
	assert_int_equal(b.cur_ms, 30000);
	k8s_backoff_reset(&b);
	assert_true(k8s_backoff_next(&b) <= 500);
	/* Draws spread out (jitter), they are not all the same. */
	{
		uint32_t first = k8s_backoff_rand(&b, 0, 1000000);
		bool differs = false;

		for (int i = 0; i < 10; i++)
			differs |= k8s_backoff_rand(&b, 0, 1000000) != first;
		assert_true(differs);
	}
	assert_int_equal(k8s_backoff_rand(&b, 7, 7), 7);
}

/* A list that works and a watch that ends at once (410 from a watch cache
 * window shorter than the list) repeat forever: the delays keep doubling to
 * the cap, and only something that stayed up healthy_ms starts them over. */
static void test_backoff_resets_only_after_a_healthy_stretch(void **state)
{
	struct k8s_backoff b;
	uint32_t prev = 0;

	(void)state;
	k8s_backoff_init(&b, 1600, 60000, 120000, 7);
	for (int i = 0; i < 12; i++) {
		uint32_t d;

		k8s_backoff_up(&b, 50); /* the watch failed at once */
		d = k8s_backoff_next(&b);
		if (i < 5) /* 0.8-1.6 s, 1.6-3.2 s, ... 12.8-25.6 s: never shorter than before */
			assert_true(d >= prev);
		assert_true(d >= 800 && d <= 60000);
		prev = d;
	}
	assert_int_equal(b.cur_ms, 60000);
	assert_true(prev >= 30000); /* client-go's steady state: [30, 60] s */
	k8s_backoff_up(&b, 119999);
	assert_int_equal(b.cur_ms, 60000);
	assert_true(k8s_backoff_next(&b) >= 30000);
	k8s_backoff_up(&b, 120000); /* a watch up 2 minutes: healthy again */
	assert_true(k8s_backoff_next(&b) <= 1600);
}

/* ---- pod cgroups ---- */

#define UID "0f9a3c52-1b2e-4d6a-9c1f-3e5b7a9d2c41"
#define UID_ "0f9a3c52_1b2e_4d6a_9c1f_3e5b7a9d2c41"

static void test_pod_cgroup_paths(void **state)
{
	char buf[256];

	(void)state;
	assert_int_equal(
	    k8s_pod_cgroup_path(K8S_CGROUP_SYSTEMD, K8S_QOS_BURSTABLE, UID, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "kubepods.slice/kubepods-burstable.slice/"
				 "kubepods-burstable-pod" UID_ ".slice");
	assert_int_equal(
	    k8s_pod_cgroup_path(K8S_CGROUP_SYSTEMD, K8S_QOS_BESTEFFORT, UID, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "kubepods.slice/kubepods-besteffort.slice/"
				 "kubepods-besteffort-pod" UID_ ".slice");
	assert_int_equal(
	    k8s_pod_cgroup_path(K8S_CGROUP_SYSTEMD, K8S_QOS_GUARANTEED, UID, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "kubepods.slice/kubepods-pod" UID_ ".slice");
	assert_int_equal(
	    k8s_pod_cgroup_path(K8S_CGROUP_CGROUPFS, K8S_QOS_BURSTABLE, UID, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "kubepods/burstable/pod" UID);
	assert_int_equal(
	    k8s_pod_cgroup_path(K8S_CGROUP_CGROUPFS, K8S_QOS_GUARANTEED, UID, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "kubepods/pod" UID);
	/* Anything but hex and '-' never becomes a path. */
	assert_int_equal(k8s_pod_cgroup_path(K8S_CGROUP_CGROUPFS, K8S_QOS_BURSTABLE, "../../x", buf,
					     sizeof(buf)),
			 -EINVAL);
	assert_int_equal(
	    k8s_pod_cgroup_path(K8S_CGROUP_CGROUPFS, K8S_QOS_UNKNOWN, UID, buf, sizeof(buf)),
	    -EINVAL);
	assert_int_equal(k8s_pod_cgroup_path(K8S_CGROUP_SYSTEMD, K8S_QOS_BURSTABLE, UID, buf, 20),
			 -ENAMETOOLONG);
	assert_int_equal(k8s_qos_parse("BestEffort"), K8S_QOS_BESTEFFORT);
	assert_int_equal(k8s_qos_parse("bestEffort"), K8S_QOS_UNKNOWN);
}

static void mkdirs(const char *root, const char *rel)
{
	char path[512], *p;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	for (p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		mkdir(path, 0755);
		*p = '/';
	}
	assert_int_equal(mkdir(path, 0755), 0);
}

static void rmtree(const char *dir)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_pod_cgroup_find(void **state)
{
	char root[] = "/tmp/h2s-k8s-cg-XXXXXX", buf[512], want[512];

	(void)state;
	assert_non_null(mkdtemp(root));
	assert_int_equal(k8s_pod_cgroup_find(root, K8S_QOS_UNKNOWN, UID, buf, sizeof(buf)),
			 -ENOENT);
	/* systemd driver, QoS unknown: every class is tried. */
	mkdirs(root,
	       "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UID_ ".slice");
	assert_int_equal(k8s_pod_cgroup_find(root, K8S_QOS_UNKNOWN, UID, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want),
		 "%s/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UID_
		 ".slice",
		 root);
	assert_string_equal(buf, want);
	rmtree(root);
	/* cgroupfs driver. */
	assert_int_equal(mkdir(root, 0755), 0);
	mkdirs(root, "kubepods/burstable/pod" UID);
	assert_int_equal(k8s_pod_cgroup_find(root, K8S_QOS_BURSTABLE, UID, buf, sizeof(buf)), 0);
	snprintf(want, sizeof(want), "%s/kubepods/burstable/pod" UID, root);
	assert_string_equal(buf, want);
	rmtree(root);
	/* A nested kubelet (kind): found by the walk. */
	assert_int_equal(mkdir(root, 0755), 0);
	mkdirs(root, "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
		     "kubelet-kubepods-burstable-pod" UID_ ".slice");
	assert_int_equal(k8s_pod_cgroup_find(root, K8S_QOS_BURSTABLE, UID, buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "kubelet-kubepods-burstable-pod" UID_ ".slice"));
	rmtree(root);
}

/* ---- opt-out bookkeeping ---- */

static struct json_object *pod_obj(const char *ns, const char *name, const char *uid,
				   const char *enabled, const char *phase)
{
	char js[1024];

	snprintf(js, sizeof(js),
		 "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\","
		 "\"uid\":\"%s\"%s%s%s},\"status\":{\"phase\":\"%s\",\"qosClass\":\"Burstable\"}}",
		 name, ns, uid, enabled ? ",\"annotations\":{\"h2split.io/enabled\":\"" : "",
		 enabled ? enabled : "", enabled ? "\"}" : "", phase);
	return json_tokener_parse(js);
}

/* A pod with a mesh proxy: |how| "istio-annotation", "linkerd-container" or
 * "istio-native-sidecar"; |enabled| its h2split.io/enabled annotation. */
static struct json_object *meshed_pod(const char *name, const char *uid, const char *how,
				      const char *enabled)
{
	char js[1024], ann[256] = "";

	if (!strcmp(how, "istio-annotation"))
		snprintf(ann, sizeof(ann), "\"sidecar.istio.io/status\":\"{}\"%s",
			 enabled ? "," : "");
	if (enabled)
		snprintf(ann + strlen(ann), sizeof(ann) - strlen(ann),
			 "\"h2split.io/enabled\":\"%s\"", enabled);
	snprintf(js, sizeof(js),
		 "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"m\","
		 "\"uid\":\"%s\",\"annotations\":{%s}},\"spec\":{\"%s\":[{\"name\":\"app\"},"
		 "{\"name\":\"%s\"}]},\"status\":{\"phase\":\"Running\",\"qosClass\":"
		 "\"Burstable\"}}",
		 name, uid, ann, strstr(how, "native") ? "initContainers" : "containers",
		 strstr(how, "linkerd") ? "linkerd-proxy" : "istio-proxy");
	return json_tokener_parse(js);
}

static struct json_object *ns_obj(const char *name, const char *enabled)
{
	char js[512];

	snprintf(js, sizeof(js), "{\"kind\":\"Namespace\",\"metadata\":{\"name\":\"%s\"%s%s%s}}",
		 name, enabled ? ",\"labels\":{\"h2split.io/enabled\":\"" : "",
		 enabled ? enabled : "", enabled ? "\"}" : "");
	return json_tokener_parse(js);
}

static int add_name(void *arg, const struct k8s_pod_ref *pod)
{
	char *names = arg;

	assert_int_equal(pod->qos, K8S_QOS_BURSTABLE);
	strcat(names, pod->name);
	strcat(names, " ");
	return 0;
}

static void apply_put(struct k8s_pods *p, enum k8s_event ev, struct json_object *o)
{
	const char *err;

	assert_non_null(o);
	assert_int_equal(k8s_pods_apply(p, ev, o, &err), 0);
	json_object_put(o);
}

static void excluded(struct k8s_pods *p, char *names)
{
	names[0] = 0;
	assert_int_equal(k8s_pods_foreach_excluded(p, add_name, names), 0);
}

static void test_opt_outs(void **state)
{
	struct k8s_pods *p = k8s_pods_new();
	struct json_object *bad;
	const char *err;
	char names[256];

	(void)state;
	apply_put(p, K8S_ADDED,
		  pod_obj("a", "plain", "00000000-0000-0000-0000-000000000001", NULL, "Running"));
	apply_put(p, K8S_ADDED,
		  pod_obj("a", "out", "00000000-0000-0000-0000-000000000002", "false", "Running"));
	apply_put(p, K8S_ADDED,
		  pod_obj("b", "inb", "00000000-0000-0000-0000-000000000003", "true", "Pending"));
	excluded(p, names);
	assert_string_equal(names, "out ");
	/* A namespace label opts out all its pods, whatever their annotation. */
	apply_put(p, K8S_ADDED, ns_obj("b", "false"));
	excluded(p, names);
	assert_string_equal(names, "out inb ");
	apply_put(p, K8S_MODIFIED, ns_obj("b", NULL));
	excluded(p, names);
	assert_string_equal(names, "out ");
	/* Finished or deleted pods leave. */
	apply_put(
	    p, K8S_MODIFIED,
	    pod_obj("a", "out", "00000000-0000-0000-0000-000000000002", "false", "Succeeded"));
	excluded(p, names);
	assert_string_equal(names, "");
	apply_put(
	    p, K8S_MODIFIED,
	    pod_obj("a", "plain", "00000000-0000-0000-0000-000000000001", "false", "Running"));
	excluded(p, names);
	assert_string_equal(names, "plain ");
	apply_put(
	    p, K8S_DELETED,
	    pod_obj("a", "plain", "00000000-0000-0000-0000-000000000001", "false", "Running"));
	excluded(p, names);
	assert_string_equal(names, "");
	/* Pods with a mesh proxy are left to the mesh, unless they opt in. */
	apply_put(p, K8S_ADDED,
		  meshed_pod("ist", "00000000-0000-0000-0000-000000000011", "istio-annotation", NULL));
	apply_put(p, K8S_ADDED,
		  meshed_pod("lnk", "00000000-0000-0000-0000-000000000012", "linkerd-container", NULL));
	apply_put(p, K8S_ADDED,
		  meshed_pod("nat", "00000000-0000-0000-0000-000000000013", "istio-native-sidecar",
			     NULL));
	apply_put(p, K8S_ADDED,
		  meshed_pod("in", "00000000-0000-0000-0000-000000000014", "istio-annotation",
			     "true"));
	excluded(p, names);
	assert_string_equal(names, "ist lnk nat ");
	apply_put(p, K8S_DELETED,
		  meshed_pod("ist", "00000000-0000-0000-0000-000000000011", "istio-annotation", NULL));
	apply_put(p, K8S_DELETED,
		  meshed_pod("lnk", "00000000-0000-0000-0000-000000000012", "linkerd-container", NULL));
	apply_put(p, K8S_DELETED,
		  meshed_pod("nat", "00000000-0000-0000-0000-000000000013", "istio-native-sidecar",
			     NULL));
	excluded(p, names);
	assert_string_equal(names, "");
	/* A uid that could escape the cgroup tree is refused. */
	bad = pod_obj("a", "evil", "../../etc", "false", "Running");
	assert_int_equal(k8s_pods_apply(p, K8S_ADDED, bad, &err), -EINVAL);
	assert_non_null(err);
	json_object_put(bad);
	/* Other kinds are ignored. */
	bad = json_tokener_parse("{\"kind\":\"Service\",\"metadata\":{\"name\":\"x\"}}");
	assert_int_equal(k8s_pods_apply(p, K8S_ADDED, bad, &err), 0);
	json_object_put(bad);
	k8s_pods_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_url_forms),
	    cmocka_unit_test(test_url_rejects),
	    cmocka_unit_test(test_head_chunked),
	    cmocka_unit_test(test_head_length_and_errors),
	    cmocka_unit_test(test_chunked_every_split),
	    cmocka_unit_test(test_chunked_errors),
	    cmocka_unit_test(test_lines_split_anywhere),
	    cmocka_unit_test(test_lines_limits_and_stop),
	    cmocka_unit_test(test_event_parse),
	    cmocka_unit_test(test_query_escape),
	    cmocka_unit_test(test_backoff_bounds),
	    cmocka_unit_test(test_backoff_resets_only_after_a_healthy_stretch),
	    cmocka_unit_test(test_pod_cgroup_paths),
	    cmocka_unit_test(test_pod_cgroup_find),
	    cmocka_unit_test(test_opt_outs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
