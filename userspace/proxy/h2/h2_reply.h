/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replies the splitter makes itself, and the grpc-timeout deadline. gRPC
 * clients get Trailers-Only with a grpc-status (UNAVAILABLE, DEADLINE_...);
 * others an HTTP status with a one-line text body.
 */
#ifndef H2SPLIT_H2_REPLY_H
#define H2SPLIT_H2_REPLY_H

#include "proxy/h2/grpc.h"

struct h2_stream;

/* Answer |st| ourselves: Trailers-Only |grpc_status| for gRPC, HTTP
 * |http_status| with |msg| otherwise; trailers or a reset when headers
 * already went out. |st| waits for nothing more afterwards. */
void h2_reply_error(struct h2_stream *st, enum grpc_status grpc_status, int http_status,
		    const char *msg);
/* Arm the deadline its grpc-timeout request header asks for, if any. */
void h2_reply_start_deadline(struct h2_stream *st);

#endif
