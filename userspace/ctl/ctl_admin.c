// SPDX-License-Identifier: Apache-2.0
/*
 * h2splitctl's client of the daemon's admin API (127.0.0.1:9901 by default):
 * a blocking HTTP/1.0 GET with a deadline (ADMIN_TIMEOUT_MS) and a bounded
 * body (ADMIN_MAX_BODY), the JSON it answers, and accessors for the
 * /endpoints document. Only endpoints, top, and status/services when the
 * daemon answers, use it: everything else reads the pins.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/socket.h>
#include <json-c/json.h>

#include "base/config.h"
#include "base/log.h"
#include "ctl/ctl.h"
#include "kernel/bpf_loader.h"
#include "kernel/bpf_maps.h"
#include "kernel/cgroup.h"

bool ctl_admin_fetch(const struct ctl *c, const char *path, char **body, int *status)
{
	char err[256];
	int fd = ctl_admin_connect(c->admin, err, sizeof(err)), rc;

	if (fd < 0)
		return false;
	rc = ctl_admin_get(fd, path, body, status);
	close(fd);
	return rc == 0;
}

int ctl_admin_connect(const char *addr, char *err, size_t errlen)
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
int ctl_admin_get(int fd, const char *path, char **body, int *status)
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
int ctl_admin_json(const struct ctl *c, const char *what, const char *path,
		   struct json_object **out)
{
	char err[256], *body = NULL;
	int fd, status = 0, rc;

	fd = ctl_admin_connect(c->admin, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "%s needs a running h2splitd (admin API at %s): %s\n", what,
			c->admin, err);
		return fd == -EINVAL ? EXIT_USAGE : EXIT_NO_DAEMON;
	}
	rc = ctl_admin_get(fd, path, &body, &status);
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

const char *ctl_jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

int64_t ctl_jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

const char *ctl_ep_state(struct json_object *ep)
{
	struct json_object *v;

	if (ctl_jstr(ep, "state")[0])
		return ctl_jstr(ep, "state");
	/* An h2splitd older than the "state" field. */
	if (json_object_object_get_ex(ep, "terminating", &v) && json_object_get_boolean(v))
		return "terminating";
	if (json_object_object_get_ex(ep, "ready", &v) && json_object_get_boolean(v))
		return "ready";
	return "not-ready";
}

/* Calls |fn| for every endpoint of every service in an /endpoints answer. */
void ctl_for_each_endpoint(struct json_object *root,
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
