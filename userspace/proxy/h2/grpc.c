// SPDX-License-Identifier: Apache-2.0
/*
 * gRPC protocol helpers (see grpc.h): timeout values, content types, status
 * mappings from gRPC's PROTOCOL-HTTP2.md and made-up Trailers-Only responses.
 * No state, no allocation: everything writes into caller-owned storage.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proxy/h2/grpc.h"

#define NV(n, v, vl)                                                                               \
	((nghttp2_nv){.name = (uint8_t *)(n),                                                      \
		      .value = (uint8_t *)(v),                                                     \
		      .namelen = sizeof(n) - 1,                                                    \
		      .valuelen = (vl),                                                            \
		      .flags = NGHTTP2_NV_FLAG_NONE})

static uint64_t unit_ns(uint8_t u)
{
	switch (u) {
	case 'H':
		return 3600ull * 1000000000ull;
	case 'M':
		return 60ull * 1000000000ull;
	case 'S':
		return 1000000000ull;
	case 'm':
		return 1000000ull;
	case 'u':
		return 1000ull;
	case 'n':
		return 1ull;
	default:
		return 0;
	}
}

int grpc_timeout_parse(const uint8_t *v, size_t len, uint64_t *ns, const char **err_desc)
{
	uint64_t n = 0, mul;

	if (len < 2 || len > 9) {
		*err_desc = "grpc-timeout: want 1-8 digits and a unit";
		return -EINVAL;
	}
	mul = unit_ns(v[len - 1]);
	if (!mul) {
		*err_desc = "grpc-timeout: unit is not one of H M S m u n";
		return -EINVAL;
	}
	for (size_t i = 0; i < len - 1; i++) {
		if (v[i] < '0' || v[i] > '9') {
			*err_desc = "grpc-timeout: not a decimal number";
			return -EINVAL;
		}
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	/* 8 digits of hours is 3.6e20 ns: saturate rather than wrap. */
	*ns = n > UINT64_MAX / mul ? UINT64_MAX : n * mul;
	return 0;
}

size_t grpc_timeout_format(uint64_t ns, char *buf, size_t len)
{
	static const char units[] = {'n', 'u', 'm', 'S', 'M', 'H'};
	static const uint64_t div[] = {1, 1000, 1000, 1000, 60, 60};
	uint64_t v = ns;
	size_t i = 0;
	int n;

	/* Walk up the units while the value has too many digits, rounding up
	 * so a forwarded deadline never gets shorter than its origin's. */
	while (v > 99999999ull && i + 1 < sizeof(units)) {
		i++;
		v = v / div[i] + (v % div[i] != 0);
	}
	if (v > 99999999ull)
		v = 99999999ull;
	n = snprintf(buf, len, "%llu%c", (unsigned long long)v, units[i]);
	return n < 0 ? 0 : ((size_t)n >= len ? len - 1 : (size_t)n);
}

bool grpc_is_content_type(const uint8_t *v, size_t len)
{
	static const char ct[] = "application/grpc";
	const size_t n = sizeof(ct) - 1;

	if (len < n || strncasecmp((const char *)v, ct, n))
		return false;
	return len == n || v[n] == '+' || v[n] == ';';
}

enum grpc_status grpc_status_from_rst(uint32_t h2_error)
{
	switch (h2_error) {
	case NGHTTP2_REFUSED_STREAM:
		return GRPC_UNAVAILABLE;
	case NGHTTP2_CANCEL:
		return GRPC_CANCELLED;
	case NGHTTP2_ENHANCE_YOUR_CALM:
		return GRPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY:
		return GRPC_PERMISSION_DENIED;
	default: /* NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, ... */
		return GRPC_INTERNAL;
	}
}

enum grpc_status grpc_status_from_http(int http_status)
{
	switch (http_status) {
	case 200:
		return GRPC_OK; /* only if grpc-status is present at all */
	case 400:
		return GRPC_INTERNAL;
	case 401:
		return GRPC_UNAUTHENTICATED;
	case 403:
		return GRPC_PERMISSION_DENIED;
	case 404:
		return GRPC_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504:
		return GRPC_UNAVAILABLE;
	default:
		return GRPC_UNKNOWN;
	}
}

size_t grpc_message_encode(const char *msg, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (!len)
		return 0;
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++) {
		bool plain = *p >= 0x20 && *p <= 0x7e && *p != '%';

		if (o + (plain ? 1 : 3) >= len)
			break;
		if (plain) {
			buf[o++] = (char)*p;
			continue;
		}
		buf[o++] = '%';
		buf[o++] = hex[*p >> 4];
		buf[o++] = hex[*p & 15];
	}
	buf[o] = '\0';
	return o;
}

size_t grpc_trailers_only_build(struct grpc_trailers_only *t, enum grpc_status status,
				const char *msg)
{
	static const char ct[] = "application/grpc";
	int sl = snprintf(t->status, sizeof(t->status), "%d", (int)status);
	size_t ml = grpc_message_encode(msg ? msg : "", t->message, sizeof(t->message));

	t->nv[0] = NV(":status", "200", 3);
	t->nv[1] = NV("content-type", ct, sizeof(ct) - 1);
	t->nv[2] = NV("grpc-status", t->status, (size_t)sl);
	t->nv[3] = NV("grpc-message", t->message, ml);
	return 4;
}
