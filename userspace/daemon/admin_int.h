/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What admin.c shares with the files of its endpoints (admin_calls.c):
 * the reply a handler fills and the JSON helpers. Private to daemon/.
 */
#ifndef H2SPLIT_ADMIN_INT_H
#define H2SPLIT_ADMIN_INT_H

#include <stddef.h>
#include <stdint.h>

struct daemon;
struct json_object;
struct MHD_Connection;

/* A response body: malloc'd, handed to MHD which frees it. */
struct reply {
	struct MHD_Connection *req; /* the request, for its query arguments */
	unsigned int status;
	const char *ctype;
	char *body;
	size_t len;
};

/* |root| as the JSON body of |r| (200); takes |root|. -ENOMEM. */
int admin_reply_json(struct reply *r, struct json_object *root);
void admin_add_str(struct json_object *o, const char *k, const char *v);
void admin_add_u64(struct json_object *o, const char *k, uint64_t v);

/* GET /calls and GET /tap (admin_calls.c). */
int admin_calls(struct daemon *d, struct reply *r);
int admin_tap(struct daemon *d, struct reply *r);
/* GET /adopt: adoption status; ?run=1[&service=NS/NAME] queues a pass (admin_adopt.c). */
int admin_adopt(struct daemon *d, struct reply *r);

#endif
