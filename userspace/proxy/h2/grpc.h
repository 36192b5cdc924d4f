/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bits of gRPC-over-HTTP/2 the splitter must understand without parsing
 * messages: grpc-timeout values, content-type detection, the RST_STREAM to
 * status mapping of gRPC's PROTOCOL-HTTP2.md, and the headers of the
 * Trailers-Only responses the splitter sends itself. Pure functions.
 */
#ifndef H2SPLIT_GRPC_H
#define H2SPLIT_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>

/* Status codes we name (see grpc/status.h). */
enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16,
};

/* Parse a grpc-timeout value ("1-8 digits" then one of H M S m u n) into
 * nanoseconds (saturating at UINT64_MAX). 0, or -EINVAL with |*err_desc|. */
int grpc_timeout_parse(const uint8_t *v, size_t len, uint64_t *ns, const char **err_desc);
/* Format |ns| as the shortest exact-or-rounded-up grpc-timeout value (at most
 * 8 digits) into |buf| (at least 10 bytes). Returns the length. */
size_t grpc_timeout_format(uint64_t ns, char *buf, size_t len);

/* True for "application/grpc", "application/grpc+proto", "application/grpc;..." */
bool grpc_is_content_type(const uint8_t *v, size_t len);

/* The status a gRPC client derives from RST_STREAM |h2_error|. */
enum grpc_status grpc_status_from_rst(uint32_t h2_error);
/* The status a gRPC client derives from a non-200 HTTP |status| without grpc-status. */
enum grpc_status grpc_status_from_http(int http_status);

/* Percent-encode |msg| as grpc-message wants it (bytes outside 0x20-0x7e and
 * '%') into |buf|, truncating cleanly. Returns the encoded length. */
size_t grpc_message_encode(const char *msg, char *buf, size_t len);

/* Storage for a Trailers-Only response the splitter makes up. */
struct grpc_trailers_only {
	nghttp2_nv nv[4];
	char status[12];
	char message[512];
};

/* Fill |t| with :status 200, content-type application/grpc, grpc-status
 * |status| and grpc-message |msg| (encoded). Returns the nv count. The last
 * two entries alone (GRPC_TRAILERS(t)) are the trailers of a response whose
 * headers were already sent. */
size_t grpc_trailers_only_build(struct grpc_trailers_only *t, enum grpc_status status,
				const char *msg);
#define GRPC_TRAILERS(t) (&(t)->nv[2])
#define GRPC_TRAILERS_LEN 2

#endif
