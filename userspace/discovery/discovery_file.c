// SPDX-License-Identifier: Apache-2.0
/*
 * File discovery source: a kubectl-shaped JSON List re-read on change. It
 * watches the file's directory, not the file, so an in-place write, a rename
 * over it and a ConfigMap's "..data" symlink swap are all seen; a burst of
 * events is coalesced by a short timer. Invariant: only a file that reads and
 * parses completely replaces the state; anything else is logged and the last
 * good state stays in force.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/sha.h>

#include "base/log.h"
#include "discovery/discovery.h"
#include "discovery/k8s_objects.h"
#include "discovery/k8s_pods.h"

#define DEBOUNCE_MS 100
#define RETRY_MS 1000 /* after a read failed for want of fds or memory */
#define MAX_FILE_BYTES (256u << 20) /* far above any cluster's Services + EndpointSlices */
#define WATCH_MASK                                                                                 \
	(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |        \
	 IN_DELETE_SELF | IN_MOVE_SELF)

struct discovery_file {
	struct discovery base;
	char *path;		  /* owned, as given */
	char *dir;		  /* owned, directory of path */
	char *name;		  /* owned, last component of path */
	char *target_dir;	  /* owned, directory of realpath(path); NULL if unresolved */
	char *target_name;	  /* owned, last component of realpath(path) */
	struct loop *loop;	  /* not owned; set by start() */
	int ifd;		  /* inotify fd, -1 before start() */
	int wd_dir;		  /* watch on dir, -1 none */
	int wd_target;		  /* watch on target_dir when it is another directory, -1 none */
	struct loop_timer *timer; /* pending (debounced) load, NULL none */
	char last_hash[STATE_VERSION_MAX]; /* "sha256:<hex>" of the file in force */
	bool have_last;
	bool failing; /* the latest load failed */
	const struct discovery_cgroup_ops *cg; /* not owned; NULL: callers unknown */
};

/* The file's version as /readyz reports it: what `sha256sum` prints, so
 * whoever wrote the file can tell when h2splitd has applied it. */
static void hash_bytes(const char *p, size_t n, char out[STATE_VERSION_MAX])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	int w = snprintf(out, STATE_VERSION_MAX, "sha256:");

	SHA256((const unsigned char *)p, n, md);
	for (size_t i = 0; i < sizeof(md); i++)
		w += snprintf(out + w, STATE_VERSION_MAX - (size_t)w, "%02x", md[i]);
}

/* Read |fd| to EOF into a NUL-terminated malloc'd buffer. 0 or -errno. */
static int read_all(int fd, size_t hint, char **out, size_t *len, const char **what)
{
	size_t cap = hint + 4096, n = 0;
	char *buf = malloc(cap), *nb;

	*what = "read";
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t r;

		if (n + 1 == cap) { /* the file grew while we read it */
			if (cap > MAX_FILE_BYTES) {
				*what = "file larger than 256 MiB";
				free(buf);
				return -EFBIG;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return -errno;
		}
		n += (size_t)r;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

/* The whole file at |path|. 0 or -errno, with the failing step in |what|. */
static int read_file(const char *path, char **out, size_t *len, const char **what)
{
	struct stat sb;
	int fd, err;

	*what = "open";
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb)) {
		*what = "fstat";
		err = -errno;
	} else if (!S_ISREG(sb.st_mode)) {
		*what = "not a regular file";
		err = -EINVAL;
	} else if ((uint64_t)sb.st_size > MAX_FILE_BYTES) {
		*what = "file larger than 256 MiB";
		err = -EFBIG;
	} else {
		err = read_all(fd, (size_t)sb.st_size, out, len, what);
	}
	close(fd);
	return err;
}

static int count_endpoints(const struct state *st)
{
	int n = 0;

	for (int i = 0; i < st->n_svcs; i++)
		n += st->svcs[i].n_eps;
	return n;
}

static void load_failed(struct discovery_file *df)
{
	df->base.n_errors++;
	df->failing = true;
}

static int split_path(const char *path, char **dir, char **name)
{
	char *a = strdup(path), *b = strdup(path);

	*dir = *name = NULL;
	if (!a || !b) {
		free(a);
		free(b);
		return -ENOMEM;
	}
	*dir = strdup(dirname(a));
	*name = strdup(basename(b));
	free(a);
	free(b);
	if (!*dir || !*name) {
		free(*dir);
		free(*name);
		*dir = *name = NULL;
		return -ENOMEM;
	}
	return 0;
}

/*
 * Follow symlinks to the file's real directory and watch that one too, so a
 * file symlinked from elsewhere is seen when its target changes. A ConfigMap's
 * target directory is replaced on every update: re-resolved after each load.
 */
static void watch_target(struct discovery_file *df)
{
	char real[PATH_MAX], *dir, *name;

	if (!realpath(df->path, real) || split_path(real, &dir, &name))
		return;
	if (df->target_dir && !strcmp(dir, df->target_dir) && df->wd_target >= 0) {
		free(dir);
		free(name);
		return;
	}
	if (df->wd_target >= 0 && df->wd_target != df->wd_dir)
		inotify_rm_watch(df->ifd, df->wd_target);
	df->wd_target = -1;
	free(df->target_dir);
	free(df->target_name);
	df->target_dir = dir;
	df->target_name = name;
	if (strcmp(dir, df->dir)) {
		df->wd_target = inotify_add_watch(df->ifd, dir, WATCH_MASK);
		if (df->wd_target == df->wd_dir)
			df->wd_target = -1; /* the same directory by another path */
	}
}

static void timer_cb(struct loop *l, struct loop_timer *t, void *arg);

/* The callers of |st|: the List's Pods whose cgroups exist (k8s_pods.h).
 * A List without Pods, or a daemon without cgroup access, leaves every
 * caller "unknown": the services still load. */
static void add_callers(const struct discovery_file *df, const char *buf, size_t len,
			struct state *st)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *list = NULL, *items = NULL;
	struct k8s_pods *pods = k8s_pods_new();
	struct state_caller *c = NULL;
	char root[4096];
	int n = 0;

	if (!df->cg || !tok || !pods || df->cg->root(root, sizeof(root)))
		goto out;
	list = json_tokener_parse_ex(tok, buf, (int)len);
	if (!list || !json_object_object_get_ex(list, "items", &items) ||
	    !json_object_is_type(items, json_type_array))
		goto out;
	for (size_t i = 0; i < json_object_array_length(items); i++) {
		const char *err;

		if (k8s_pods_apply(pods, K8S_ADDED, json_object_array_get_idx(items, i), &err))
			log_warn("services_file_pod_invalid index=%zu error=\"%s\" action=ignored",
				 i, err ? err : "out of memory");
	}
	if (!k8s_pods_callers(pods, root, df->cg->id_of, &c, &n))
		state_set_callers(st, c, n);
out:
	json_object_put(list);
	if (tok)
		json_tokener_free(tok);
	k8s_pods_free(pods);
}

/* Read, parse and build; deliver the new state unless it is unchanged and not |force|d. */
static void load(struct discovery_file *df, bool force)
{
	char *buf = NULL, err[512];
	struct k8s_store *store;
	struct state *st = NULL;
	char h[STATE_VERSION_MAX];
	const char *what;
	size_t len = 0;
	int rc;

	if (df->ifd >= 0)
		watch_target(df);
	rc = read_file(df->path, &buf, &len, &what);
	if (rc) {
		bool transient = rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM || rc == -EAGAIN;

		log_error(
		    "services_file_unreadable path=%s error=\"%s: %s\" action=keeping_last_state%s",
		    df->path, what, strerror(-rc), transient ? " retry_ms=1000" : "");
		load_failed(df);
		/* No inotify event will come for these: the file is fine, we are not. */
		if (transient && !df->timer)
			df->timer = loop_timer_add(df->loop, RETRY_MS, timer_cb, df);
		return;
	}
	hash_bytes(buf, len, h);
	if (!force && df->have_last && !strcmp(h, df->last_hash)) {
		if (df->failing)
			log_info("services_file_ok path=%s changed=false", df->path);
		df->failing = false;
		free(buf);
		return;
	}
	store = k8s_store_new();
	rc = store ? k8s_store_load_json(store, buf, len, err, sizeof(err)) : -ENOMEM;
	if (rc == -ENOMEM)
		snprintf(err, sizeof(err), "out of memory");
	if (!rc) {
		st = k8s_store_build(store);
		if (!st)
			snprintf(err, sizeof(err), "out of memory");
	}
	k8s_store_free(store);
	if (st)
		add_callers(df, buf, len, st);
	free(buf);
	if (!st) {
		log_error("services_file_invalid path=%s error=\"%s\" action=keeping_last_state",
			  df->path, err);
		load_failed(df);
		return;
	}
	memcpy(df->last_hash, h, sizeof(h));
	memcpy(st->version, h, sizeof(h));
	df->have_last = true;
	df->failing = false;
	log_info("services_reloaded path=%s services=%d endpoints=%d callers=%d", df->path,
		 st->n_svcs, count_endpoints(st), st->n_callers);
	df->base.synced = true;
	df->base.on_update(df->base.arg, st, NULL);
}

static void timer_cb(struct loop *l, struct loop_timer *t, void *arg)
{
	struct discovery_file *df = arg;

	(void)l;
	(void)t;
	df->timer = NULL;
	load(df, false);
}

/* Coalesce: the first event of a burst arms the timer, the rest ride along. */
static void schedule(struct discovery_file *df)
{
	if (df->timer)
		return;
	df->timer = loop_timer_add(df->loop, DEBOUNCE_MS, timer_cb, df);
	if (!df->timer)
		log_error("services_file_watch path=%s error=\"timer: out of memory\"", df->path);
}

static bool relevant(const struct discovery_file *df, const struct inotify_event *ev)
{
	if (ev->mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
		return true;
	if (!ev->len)
		return false;
	/* "..data", "..2026_..." : the kubelet's atomic ConfigMap update. */
	return !strcmp(ev->name, df->name) || !strncmp(ev->name, "..", 2) ||
	       (df->target_name && !strcmp(ev->name, df->target_name));
}

static void forget_watch(struct discovery_file *df, int wd)
{
	if (wd == df->wd_dir) {
		df->wd_dir = -1;
		log_error("services_dir_gone dir=%s fix=\"recreate it, then send SIGHUP\"",
			  df->dir);
	}
	if (wd == df->wd_target)
		df->wd_target = -1;
}

static void inotify_cb(struct loop *l, int fd, uint32_t events, void *arg)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct discovery_file *df = arg;
	bool hit = false;
	ssize_t n;

	(void)l;
	(void)events;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			if (ev->mask & IN_IGNORED)
				forget_watch(df, ev->wd);
			hit = hit || relevant(df, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
	if (hit)
		schedule(df);
}

static int add_dir_watch(struct discovery_file *df)
{
	df->wd_dir = inotify_add_watch(df->ifd, df->dir, WATCH_MASK);
	if (df->wd_dir < 0) {
		int err = -errno;

		log_error("services_dir_unwatchable dir=%s error=\"inotify_add_watch: %s\" "
			  "fix=\"create the directory of --services-file\"",
			  df->dir, strerror(-err));
		return err;
	}
	return 0;
}

static int file_start(struct discovery *d, struct loop *l)
{
	struct discovery_file *df = (struct discovery_file *)d;
	int err;

	df->loop = l;
	df->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (df->ifd < 0) {
		err = -errno;
		log_error("services_file_watch error=\"inotify_init1: %s\"", strerror(-err));
		return err;
	}
	err = add_dir_watch(df);
	if (!err)
		err = loop_add_fd(l, df->ifd, EPOLLIN, inotify_cb, df);
	if (err)
		goto fail;
	/* The first load runs on the loop, like every later one. */
	df->timer = loop_timer_add(l, 0, timer_cb, df);
	if (!df->timer) {
		loop_del_fd(l, df->ifd);
		err = -ENOMEM;
		goto fail;
	}
	return 0;
fail:
	close(df->ifd);
	df->ifd = -1;
	df->wd_dir = -1;
	return err;
}

static void file_reload(struct discovery *d)
{
	struct discovery_file *df = (struct discovery_file *)d;

	if (df->ifd >= 0 && df->wd_dir < 0 && add_dir_watch(df) == 0)
		log_info("services_dir_watched dir=%s", df->dir);
	load(df, true);
}

static void file_destroy(struct discovery *d)
{
	struct discovery_file *df = (struct discovery_file *)d;

	if (!df)
		return;
	if (df->loop) {
		loop_timer_cancel(df->loop, df->timer);
		if (df->ifd >= 0)
			loop_del_fd(df->loop, df->ifd);
	}
	if (df->ifd >= 0)
		close(df->ifd);
	free(df->path);
	free(df->dir);
	free(df->name);
	free(df->target_dir);
	free(df->target_name);
	free(df);
}

static const struct discovery_ops file_ops = {
    .name = "file",
    .start = file_start,
    .reload = file_reload,
    .destroy = file_destroy,
};

struct discovery *discovery_file_new(const char *path, const struct discovery_cgroup_ops *cg,
				     discovery_update_cb *cb, void *arg)
{
	struct discovery_file *df = calloc(1, sizeof(*df));

	if (!df)
		return NULL;
	df->base = (struct discovery){.ops = &file_ops, .on_update = cb, .arg = arg};
	df->ifd = df->wd_dir = df->wd_target = -1;
	df->cg = cg;
	df->path = strdup(path);
	if (!df->path || split_path(path, &df->dir, &df->name)) {
		file_destroy(&df->base);
		return NULL;
	}
	return &df->base;
}
