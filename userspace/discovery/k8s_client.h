/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One HTTPS GET to the Kubernetes API server, driven by a loop: non-blocking
 * connect, OpenSSL handshake verifying the server against the CA file (peer
 * certificate and host name or IP; there is no insecure mode), the request
 * with a bearer token read from its file right before sending (tokens rotate),
 * then the response body handed over as it arrives, chunked or not.
 * Invariant: on_done runs exactly once per request unless k8s_req_cancel().
 */
#ifndef H2SPLIT_K8S_CLIENT_H
#define H2SPLIT_K8S_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/loop.h"
#include "discovery/k8s_watch.h"

#define K8S_PATH_MAX 512

/* Where the API server is and how to trust and authenticate to it. */
struct k8s_target {
	struct k8s_url url;
	char url_str[K8S_PATH_MAX];
	char ca_file[K8S_PATH_MAX];
	char token_file[K8S_PATH_MAX];
};

/* Fill |t| from |api_url| ("": in-cluster, from KUBERNETES_SERVICE_HOST and
 * _PORT), |token_file| and |ca_file| ("": the service account's). 0, or
 * -EINVAL with a message naming the setting and the fix in |err|. */
int k8s_target_init(struct k8s_target *t, const char *api_url, const char *token_file,
		    const char *ca_file, char *err, size_t errlen);

struct k8s_req;

struct k8s_req_cb {
	/* The response head is in: |status| is the HTTP status. 0 to go on, or a
	 * negative errno to end the request (on_done gets it). */
	int (*on_head)(void *arg, int status);
	/* Body bytes (de-chunked), in order. 0, or a negative errno to end it. */
	int (*on_body)(void *arg, const char *data, size_t len);
	/* The end: 0 when the whole body arrived, else the negative errno and
	 * |what| saying what failed ("connect 10.96.0.1:443: Connection refused").
	 * The request is freed right after this returns. */
	void (*on_done)(void *arg, int err, const char *what);
};

/* GET |path| (with its query) on |t|. |idle_ms| ends the request with
 * -ETIMEDOUT when no byte arrives for that long (0: 60 s); connecting and the
 * TLS handshake get 10 s. Failures to start (token or CA unreadable, socket)
 * are reported through on_done from the loop, never from inside this call,
 * so the caller's state is always consistent. 0 or -ENOMEM. */
int k8s_req_start(struct loop *l, const struct k8s_target *t, const char *path, uint32_t idle_ms,
		  const struct k8s_req_cb *cb, void *arg, struct k8s_req **out);
/* Abort without calling on_done. Not from |r|'s own callbacks (return an
 * error from them instead). NULL is a no-op. */
void k8s_req_cancel(struct k8s_req *r);

#endif
