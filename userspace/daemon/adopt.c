// SPDX-License-Identifier: Apache-2.0
/*
 * The adoption thread (see adopt.h): requests from the main thread (a state
 * applied: h2splitd started, a Service opted in) and the admin API
 * (h2splitctl adopt) are merged into the one pending pass, which this thread
 * runs with adopt_pass.c. The worker loops never wait on it; a pass blocks
 * only this thread. Its status is copied out under |lock|.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "daemon/adopt_int.h"
#include "telemetry/prom.h"

#define MAX_PENDING_SERVICES 64
/* The thread's nice value: a pass sleeps 1 ms between looks and must look
 * again in time to close a connection early in its quiet gap; on a busy node
 * a default-priority thread wakes too late (README: what an adopted channel
 * loses). It runs for microseconds per look, so this takes little from anyone. */
#define ADOPT_NICE (-10)

struct adopter {
	struct adopt_params p;
	pthread_t thread;
	bool started;
	atomic_bool stop;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* Under |lock|: */
	struct adopt_key *known; /* owned: VIP:ports of the last applied state, sorted */
	int n_known;
	bool applied_once;
	bool pend;		     /* a pass is queued */
	bool pend_all;		     /* ... over every opted-in Service */
	struct adopt_key *pend_keys; /* owned: ... over these VIP:ports */
	int n_pend_keys;
	uint32_t pend_ids[MAX_PENDING_SERVICES]; /* ... over these Service ids */
	int n_pend_ids;
	bool pend_ctl; /* asked on demand: runs as idle even with off */
	char pend_trigger[ADOPT_TRIGGER_MAX];
	bool running;
	bool unsupported;
	uint64_t passes_started, passes_done;
	struct adopt_pass_info cur, last;
	uint64_t total[ADOPT_R_COUNT];
};

static const char *result_names[ADOPT_R_COUNT] = {"idle", "forced", "not_idle",
						  "gone", "failed", "unsupported"};

const char *adopter_result_name(enum adopt_result r)
{
	return r < ADOPT_R_COUNT ? result_names[r] : "unknown";
}

const char *adopter_mode_name(enum adopt_mode m)
{
	return m == ADOPT_OFF ? "off" : m == ADOPT_ALL ? "all" : "idle";
}

static void key_of_vip(const struct h2s_ip *ip, uint16_t port, struct adopt_key *k)
{
	memset(k, 0, sizeof(*k));
	memcpy(k->addr, ip->b, sizeof(k->addr));
	k->port = port;
}

/* Every VIP:port of |st|'s desired services that |want| accepts, sorted. */
static int state_keys(const struct state *st, bool (*want)(void *, const struct state_service *),
		      void *arg, struct adopt_key **out, int *n)
{
	struct adopt_key *k = NULL;
	int m = 0;

	*out = NULL;
	*n = 0;
	if (!st || !st->n_svcs)
		return 0;
	k = calloc((size_t)st->n_svcs * STATE_MAX_VIPS, sizeof(*k));
	if (!k)
		return -ENOMEM;
	for (int i = 0; i < st->n_svcs; i++) {
		const struct state_service *svc = &st->svcs[i];

		if (svc->retired_ms || (want && !want(arg, svc)))
			continue;
		for (int v = 0; v < svc->n_vips; v++)
			key_of_vip(&svc->vips[v], svc->port, &k[m++]);
	}
	qsort(k, (size_t)m, sizeof(*k), adopt_key_cmp);
	*out = k;
	*n = m;
	return 0;
}

static void add_trigger(struct adopter *a, const char *t)
{
	size_t len = strlen(a->pend_trigger);

	if (strstr(a->pend_trigger, t))
		return;
	snprintf(a->pend_trigger + len, sizeof(a->pend_trigger) - len, "%s%s", len ? "," : "", t);
}

/* Under |lock|: the pass that will take what is queued now. */
static uint64_t queue(struct adopter *a, const char *trigger)
{
	add_trigger(a, trigger);
	a->pend = true;
	pthread_cond_signal(&a->wake);
	return a->passes_started + 1;
}

void adopter_on_applied(struct adopter *a, const struct state *st)
{
	struct adopt_key *keys, *add;
	int n, n_add = 0;

	if (!a || state_keys(st, NULL, NULL, &keys, &n)) {
		if (a)
			log_error("adopt_state_lost err=\"out of memory\"");
		return;
	}
	add = calloc((size_t)n + 1, sizeof(*add));
	pthread_mutex_lock(&a->lock);
	for (int i = 0; add && i < n; i++)
		if (!a->n_known ||
		    !bsearch(&keys[i], a->known, (size_t)a->n_known, sizeof(*keys), adopt_key_cmp))
			add[n_add++] = keys[i];
	free(a->known);
	a->known = keys;
	a->n_known = n;
	if (n_add && a->p.mode != ADOPT_OFF) {
		struct adopt_key *pk =
		    realloc(a->pend_keys, sizeof(*pk) * (size_t)(a->n_pend_keys + n_add));

		if (pk) {
			memcpy(pk + a->n_pend_keys, add, sizeof(*pk) * (size_t)n_add);
			a->pend_keys = pk;
			a->n_pend_keys += n_add;
			queue(a, a->applied_once ? "opt_in" : "start");
		}
	}
	a->applied_once = true;
	pthread_mutex_unlock(&a->lock);
	free(add);
}

struct svc_name {
	char ns[STATE_NAME_MAX], name[STATE_NAME_MAX];
};

static bool same_name(void *arg, const struct state_service *svc)
{
	const struct svc_name *sn = arg;

	return !strcmp(svc->ns, sn->ns) && !strcmp(svc->name, sn->name);
}

int adopter_request(struct adopter *a, const char *service, uint64_t *pass)
{
	struct svc_name sn = {0};
	struct snapshot *snap = NULL;
	int matched = 0;
	const char *slash = service ? strchr(service, '/') : NULL;

	if (service) {
		if (!slash || slash == service || !slash[1] || strchr(slash + 1, '/') ||
		    (size_t)(slash - service) >= sizeof(sn.ns) ||
		    strlen(slash + 1) >= sizeof(sn.name))
			return -EINVAL;
		memcpy(sn.ns, service, (size_t)(slash - service));
		snprintf(sn.name, sizeof(sn.name), "%s", slash + 1);
		snap = a->p.snapshot(a->p.snapshot_arg);
	}
	pthread_mutex_lock(&a->lock);
	for (int i = 0; snap && i < snap->st->n_svcs; i++) {
		const struct state_service *svc = &snap->st->svcs[i];

		if (svc->retired_ms || !same_name(&sn, svc))
			continue;
		matched++;
		if (a->n_pend_ids < MAX_PENDING_SERVICES)
			a->pend_ids[a->n_pend_ids++] = svc->id;
		else
			a->pend_all = true; /* more than a pass can list: all of them */
	}
	if (service && !matched) {
		pthread_mutex_unlock(&a->lock);
		registry_snapshot_unref(snap);
		return -ENOENT;
	}
	if (!service)
		a->pend_all = true;
	a->pend_ctl = true;
	*pass = queue(a, "ctl");
	pthread_mutex_unlock(&a->lock);
	registry_snapshot_unref(snap);
	return 0;
}

struct pending {
	bool all;
	struct adopt_key *keys;
	int n_keys;
	uint32_t ids[MAX_PENDING_SERVICES];
	int n_ids;
};

static bool pending_wants(void *arg, const struct state_service *svc)
{
	const struct pending *pd = arg;
	struct adopt_key k;

	if (pd->all)
		return true;
	for (int i = 0; i < pd->n_ids; i++)
		if (pd->ids[i] == svc->id)
			return true;
	for (int v = 0; v < svc->n_vips; v++) {
		key_of_vip(&svc->vips[v], svc->port, &k);
		for (int i = 0; i < pd->n_keys; i++)
			if (!adopt_key_cmp(&k, &pd->keys[i]))
				return true;
	}
	return false;
}

/* The pass: the queued VIP:ports that the newest applied state still opts in. */
static void run_one(struct adopter *a, struct pending *pd, enum adopt_mode mode)
{
	struct adopt_params p = a->p;
	struct snapshot *snap = p.snapshot(p.snapshot_arg);
	struct adopt_pass ps = {.p = &p,
				.stop = &a->stop,
				.lock = &a->lock,
				.info = &a->cur,
				.total = a->total,
				.unsupported = &a->unsupported};
	struct adopt_key *keys = NULL;
	int n = 0;

	p.mode = mode;
	if (snap && state_keys(snap->st, pending_wants, pd, &keys, &n))
		log_error("adopt_pass_failed step=targets err=\"out of memory\"");
	registry_snapshot_unref(snap);
	pthread_mutex_lock(&a->lock);
	a->cur.targets = n;
	pthread_mutex_unlock(&a->lock);
	if (!atomic_load(p.redirecting))
		log_warn("adopt_pass_skipped pass=%llu reason=not_redirecting",
			 (unsigned long long)a->cur.id);
	else if (n) {
		ps.keys = keys;
		ps.n_keys = n;
		adopt_pass_run(&ps);
	}
	free(keys);
}

static void *adopter_main(void *arg)
{
	struct adopter *a = arg;

	/* Linux: a thread's own nice value (setpriority on its tid). */
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), ADOPT_NICE))
		log_warn("adopt_priority_unchanged nice=%d err=\"%m\" effect=\"on a busy node "
			 "fewer connections are found idle in time\"",
			 ADOPT_NICE);
	pthread_mutex_lock(&a->lock);
	while (!atomic_load(&a->stop)) {
		struct pending pd = {0};
		enum adopt_mode mode = a->p.mode;
		struct adopt_pass_info *c = &a->cur;

		if (!a->pend) {
			pthread_cond_wait(&a->wake, &a->lock);
			continue;
		}
		pd = (struct pending){.all = a->pend_all,
				      .keys = a->pend_keys,
				      .n_keys = a->n_pend_keys,
				      .n_ids = a->n_pend_ids};
		memcpy(pd.ids, a->pend_ids, sizeof(pd.ids));
		if (a->pend_ctl && mode == ADOPT_OFF)
			mode = ADOPT_IDLE;
		*c = (struct adopt_pass_info){.id = ++a->passes_started,
					      .started_ms = loop_now_ms()};
		memcpy(c->trigger, a->pend_trigger, sizeof(c->trigger));
		a->pend = a->pend_all = a->pend_ctl = false;
		a->pend_keys = NULL;
		a->n_pend_keys = a->n_pend_ids = 0;
		a->pend_trigger[0] = '\0';
		a->running = true;
		pthread_mutex_unlock(&a->lock);

		log_info("adopt_pass_started pass=%llu trigger=%s mode=%s max_wait_ms=%d",
			 (unsigned long long)c->id, c->trigger, adopter_mode_name(mode),
			 a->p.max_wait_ms);
		run_one(a, &pd, mode);
		free(pd.keys);

		pthread_mutex_lock(&a->lock);
		c->ms = loop_now_ms() - c->started_ms;
		a->last = *c;
		a->running = false;
		a->passes_done = c->id;
		log_info(
		    "adopt_pass pass=%llu trigger=%s services_ports=%d pods=%d connections=%d "
		    "idle=%llu forced=%llu not_idle=%llu gone=%llu failed=%llu unsupported=%llu "
		    "looks=%llu ms=%llu",
		    (unsigned long long)c->id, c->trigger, c->targets, c->pods, c->found,
		    (unsigned long long)c->results[ADOPT_R_IDLE],
		    (unsigned long long)c->results[ADOPT_R_FORCED],
		    (unsigned long long)c->results[ADOPT_R_NOT_IDLE],
		    (unsigned long long)c->results[ADOPT_R_GONE],
		    (unsigned long long)c->results[ADOPT_R_FAILED],
		    (unsigned long long)c->results[ADOPT_R_UNSUPPORTED],
		    (unsigned long long)c->looks, (unsigned long long)c->ms);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

struct adopter *adopter_start(const struct adopt_params *p)
{
	struct adopter *a = calloc(1, sizeof(*a));
	int err;

	if (!a)
		return NULL;
	a->p = *p;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->wake, NULL);
	err = pthread_create(&a->thread, NULL, adopter_main, a);
	if (err) {
		log_error("adopt_thread_failed err=\"%s\"", strerror(err));
		adopter_stop(a);
		return NULL;
	}
	a->started = true;
	return a;
}

void adopter_stop(struct adopter *a)
{
	if (!a)
		return;
	if (a->started) {
		pthread_mutex_lock(&a->lock);
		atomic_store(&a->stop, true);
		pthread_cond_signal(&a->wake);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->thread, NULL);
	}
	free(a->known);
	free(a->pend_keys);
	pthread_cond_destroy(&a->wake);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

void adopter_status(struct adopter *a, struct adopt_status *out)
{
	memset(out, 0, sizeof(*out));
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	out->mode = a->p.mode;
	out->max_wait_ms = a->p.max_wait_ms;
	out->unsupported = a->unsupported;
	out->running = a->running;
	out->passes_done = a->passes_done;
	out->queued = a->pend ? a->passes_started + 1 : 0;
	out->cur = a->cur;
	if (a->running)
		out->cur.ms = loop_now_ms() - a->cur.started_ms;
	out->last = a->last;
	memcpy(out->total, a->total, sizeof(out->total));
	pthread_mutex_unlock(&a->lock);
}

void adopter_write_prometheus(struct adopter *a, FILE *f)
{
	struct adopt_status st;
	const char *name = "h2split_adopted_connections_total";

	adopter_status(a, &st);
	prom_family(f, name, "counter",
		    "Connections opened before h2splitd (or before their Service opted in) that "
		    "an adoption pass found, by what became of them.");
	for (int r = 0; r < ADOPT_R_COUNT; r++)
		prom_u64(f, name, &(struct prom_label){"result", result_names[r]}, 1, st.total[r]);
	prom_counter(f, "h2split_adopt_passes_total", "Adoption passes finished.", st.passes_done);
	prom_gauge(f, "h2split_adopt_running", "1 while an adoption pass runs.", st.running);
}
