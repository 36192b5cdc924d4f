/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Kubernetes source's insides, shared by its two files and no one else:
 * discovery_k8s.c (the source: opt-outs, delivering states, start/stop) and
 * k8s_reflector.c (list, watch, relist and back off, one per resource).
 * Everything runs on the main loop.
 */
#ifndef H2SPLIT_K8S_SOURCE_H
#define H2SPLIT_K8S_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include <json-c/json.h>

#include "base/config.h"
#include "discovery/discovery.h"
#include "discovery/k8s_client.h"
#include "discovery/k8s_objects.h"
#include "discovery/k8s_pods.h"
#include "discovery/k8s_watch.h"

/* RES_NODES is this node alone (its zone label, for locality). */
enum res { RES_SERVICES = 0, RES_SLICES, RES_NAMESPACES, RES_PODS, RES_NODES, RES_COUNT };

struct k8s_res_info {
	const char *name; /* for logs and RBAC hints */
	const char *path;
	const char *kind; /* list items come without kind; set it */
	bool store;	  /* k8s_store (else k8s_pods) */
};

extern const struct k8s_res_info k8s_res_info[RES_COUNT];

enum phase { PH_OFF = 0, PH_LIST, PH_WATCH, PH_WAIT };

struct discovery_k8s;

struct reflector {
	struct discovery_k8s *dk; /* back pointer */
	enum res res;
	enum phase phase;
	struct k8s_req *req;	    /* owned: the request in flight, NULL none */
	struct loop_timer *restart; /* pending list/watch start, NULL none */
	bool restart_list;	    /* what |restart| starts */
	struct k8s_backoff bo;
	char *rv;	 /* owned: resourceVersion to watch from, NULL none */
	bool listed;	 /* a full list went through at least once */
	bool consistent; /* the next list must be a quorum read (after a 410, a reload) */
	bool gate_open;	 /* listed, or refused for good: no longer holds back sync */
	/* The response being read. */
	int status;
	struct json_tokener *tok; /* owned: list or Status body */
	struct json_object *body; /* owned: the parsed body */
	size_t body_bytes;
	struct k8s_lines lines; /* watch stream */
	bool relist;		/* the watch asked for a relist (410) */
	unsigned long n_events; /* in this watch */
	uint64_t started_ms;
	/* Paged list. */
	struct json_object *staged; /* owned array: items of the pages so far */
	char *cont;		    /* owned: continue token, NULL on the first page */
	struct json_object *keys;   /* owned (store kinds): "ns/name" of objects in the store */
};

struct discovery_k8s {
	struct discovery base;
	const struct config *cfg;	       /* not owned */
	const struct discovery_cgroup_ops *cg; /* not owned; NULL: opt-outs off */
	struct loop *loop;		       /* not owned; set by start() */
	struct k8s_target target;
	struct k8s_store *store; /* owned */
	struct k8s_build_cache *cache; /* owned: endpoints of unchanged Services */
	struct k8s_pods *pods;	 /* owned */
	struct reflector r[RES_COUNT];
	struct loop_timer *deliver; /* owned: debounce, NULL none */
	uint64_t last_deliver_ms;   /* the last state build began (loop_now_ms()) */
	struct loop_timer *exclude_retry;
	bool dirty_state, dirty_excl;
	uint32_t watch_idle_ms;
	char cgroup_root[CONFIG_PATH_MAX]; /* "": opt-outs off */
	uint64_t *excl_ids;		   /* owned: what was last synced */
	int n_excl;
	bool excl_synced;
};

/* Have a state (or new exclusions) delivered soon: SETTLE_MS after a quiet
 * spell, else DEBOUNCE_MS after the last state, coalescing a burst of
 * changes (discovery_k8s.c). */
void k8s_source_deliver_soon(struct discovery_k8s *dk);

/* Start a list (|list|) or a watch of |r| in |delay_ms| (k8s_reflector.c). */
void k8s_reflector_restart(struct reflector *r, bool list, uint32_t delay_ms);
/* Cancel |r|'s request and restart timer and drop its partial response. */
void k8s_reflector_stop(struct reflector *r);
/* Drop the pages of a list in progress. */
void k8s_reflector_reset_paging(struct reflector *r);

#endif
