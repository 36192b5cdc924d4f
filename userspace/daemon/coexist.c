// SPDX-License-Identifier: Apache-2.0
/*
 * Watches the other programs on h2split's cgroup hooks (see coexist.h). The
 * main loop scans and logs; the admin thread reads the newest scan, copied
 * under |lock|. A program that sees the ClusterIP first breaks nothing (the
 * connect goes where it sends it), so this only says so, loudly and once per
 * change.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/coexist.h"
#include "daemon/daemon.h"
#include "telemetry/prom.h"

struct coexist {
	struct daemon *d;     /* borrowed */
	pthread_mutex_t lock; /* guards |rep| */
	struct bpf_coexist_report rep;
	bool scanned; /* main thread: one scan succeeded, |last_err| logged once */
	int last_err;
};

static const char *note(const struct bpf_coexist_prog *p)
{
	if (p->pos == COEXIST_OVERRIDDEN)
		return "attached without BPF_F_ALLOW_MULTI above h2split's cgroup: h2split's "
		       "attachment keeps it from running for pods below --cgroup";
	if (p->hook > COEXIST_CONNECT6)
		return p->pos == COEXIST_BEFORE ? "runs before h2split's (no effect on redirection)"
						: "runs after h2split's";
	return p->pos == COEXIST_BEFORE
		   ? "sees the address before h2split: a connect it rewrites (a ClusterIP to a "
		     "pod) is not redirected"
		   : "sees the address after h2split: redirected connects reach it as the listen "
		     "address, the others as the app dialled them";
}

static void log_report(const struct bpf_coexist_report *r)
{
	int before = 0, after = 0, over = 0;

	for (int i = 0; i < r->n; i++) {
		const struct bpf_coexist_prog *p = &r->progs[i];
		bool bad = p->pos == COEXIST_OVERRIDDEN ||
			   (p->pos == COEXIST_BEFORE && p->hook <= COEXIST_CONNECT6);

		log_msg(bad ? LOG_WARN : LOG_INFO,
			"foreign_socket_program hook=%s id=%u name=%s cgroup=%s position=%s "
			"note=\"%s\"",
			bpf_coexist_hook_name(p->hook), p->id, p->name,
			p->cgroup[0] ? p->cgroup : "?", bpf_coexist_pos_name(p->pos), note(p));
	}
	for (int h = 0; h < COEXIST_HOOKS; h++) {
		before += r->count[h][COEXIST_BEFORE];
		after += r->count[h][COEXIST_AFTER];
		over += r->count[h][COEXIST_OVERRIDDEN];
	}
	log_msg(r->n_first || over ? LOG_WARN : LOG_INFO,
		"foreign_socket_programs before=%d after=%d overridden=%d connect_first=%s%s",
		before, after, over, r->n_first ? "other" : "h2split",
		r->truncated ? " truncated=1" : "");
}

static void scan(struct coexist *c)
{
	struct bpf_coexist_report r;
	const struct config *cfg = &c->d->cfg;
	bool changed;
	int err = bpf_coexist_scan(cfg->bpffs, cfg->cgroup_dir, &r);

	if (err) {
		if (err != c->last_err)
			log_warn("foreign_socket_programs_scan_failed cgroup=%s err=%s",
				 cfg->cgroup_dir[0] ? cfg->cgroup_dir : "(cgroup2 root)",
				 strerror(-err));
		c->last_err = err;
		return;
	}
	c->last_err = 0;
	pthread_mutex_lock(&c->lock);
	changed = !c->scanned || !bpf_coexist_same(&c->rep, &r);
	c->rep = r;
	pthread_mutex_unlock(&c->lock);
	if (changed)
		log_report(&r);
	c->scanned = true;
}

static void on_scan(struct loop *l, struct loop_timer *t, void *arg)
{
	struct coexist *c = arg;

	(void)t;
	scan(c);
	loop_timer_add(l, COEXIST_SCAN_MS, on_scan, c);
}

struct coexist *coexist_start(struct daemon *d)
{
	struct coexist *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->d = d;
	pthread_mutex_init(&c->lock, NULL);
	scan(c);
	if (!loop_timer_add(d->loop, COEXIST_SCAN_MS, on_scan, c)) {
		coexist_free(c);
		return NULL;
	}
	return c;
}

void coexist_free(struct coexist *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void coexist_report(struct coexist *c, struct bpf_coexist_report *out)
{
	if (!c) {
		memset(out, 0, sizeof(*out));
		return;
	}
	pthread_mutex_lock(&c->lock);
	*out = c->rep;
	pthread_mutex_unlock(&c->lock);
}

void coexist_readyz(struct coexist *c, char *buf, size_t len)
{
	struct bpf_coexist_report r;

	coexist_report(c, &r);
	bpf_coexist_warnings(&r, buf, len);
}

void coexist_write_metrics(FILE *f, struct coexist *c)
{
	static const char name[] = "h2split_foreign_socket_programs";
	struct bpf_coexist_report r;

	coexist_report(c, &r);
	prom_family(f, name, "gauge",
		    "Other programs on h2split's cgroup hooks (its cgroup, above and below it), by "
		    "hook and by whether they run before or after h2split's, or are overridden by "
		    "it.");
	for (int h = 0; h < COEXIST_HOOKS; h++)
		for (int p = 0; p < COEXIST_POSITIONS; p++) {
			struct prom_label l[2] = {
			    {"hook", bpf_coexist_hook_name((enum bpf_coexist_hook)h)},
			    {"position", bpf_coexist_pos_name((enum bpf_coexist_pos)p)}};

			prom_u64(f, name, l, 2, (uint64_t)r.count[h][p]);
		}
}
