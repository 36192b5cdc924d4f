// SPDX-License-Identifier: Apache-2.0
/*
 * Retry and hedging policies as data (see rpc_policy.h): which RPCs one
 * covers, the gRPC status names, and the one-line form logs and the admin
 * API print. Pure functions.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/rpc_policy.h"

static const char *const code_names[RPC_POLICY_GRPC_CODES] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rpc_policy_code_name(int code)
{
	return code >= 0 && code < RPC_POLICY_GRPC_CODES ? code_names[code] : NULL;
}

int rpc_policy_code_parse(const char *s)
{
	char *end;
	long n;

	if (!s || !*s)
		return -1;
	if (isdigit((unsigned char)*s)) {
		n = strtol(s, &end, 10);
		return *end || n >= RPC_POLICY_GRPC_CODES ? -1 : (int)n;
	}
	for (int i = 0; i < RPC_POLICY_GRPC_CODES; i++)
		if (!strcasecmp(s, code_names[i]))
			return i;
	return -1;
}

/* A listed "pkg.Svc/" covers every method of pkg.Svc; "pkg.Svc/M" one. */
bool rpc_policy_covers(const struct rpc_policy *p, const uint8_t *path, size_t len)
{
	const char *m = p->methods;

	if (p->kind == RPC_POLICY_NONE)
		return false;
	if (!*m)
		return true;
	if (!path || !len || path[0] != '/')
		return false;
	path++;
	len--;
	while (*m) {
		const char *nl = strchr(m, '\n');
		size_t ml = nl ? (size_t)(nl - m) : strlen(m);

		if (ml && m[ml - 1] == '/') {
			if (len >= ml && !memcmp(path, m, ml) && !memchr(path + ml, '/', len - ml))
				return true;
		} else if (ml == len && !memcmp(path, m, ml)) {
			return true;
		}
		m += ml + (nl != NULL);
	}
	return false;
}

static size_t codes_str(uint32_t codes, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < RPC_POLICY_GRPC_CODES && off < len; i++) {
		int n;

		if (!(codes & (1u << i)))
			continue;
		n = snprintf(buf + off, len - off, "%s%s", off ? "," : "", code_names[i]);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	if (!off)
		snprintf(buf, len, "-");
	return off;
}

static void methods_str(const char *m, char *buf, size_t len)
{
	size_t i = 0;

	if (!*m) {
		snprintf(buf, len, "all");
		return;
	}
	for (; m[i] && i + 1 < len; i++)
		buf[i] = m[i] == '\n' ? ',' : m[i];
	if (i && buf[i - 1] == ',')
		i--;
	buf[i] = '\0';
}

const char *rpc_policy_str(const struct rpc_policy *p, char *buf, size_t len)
{
	char codes[256], methods[RPC_POLICY_METHODS_MAX];

	codes_str(p->codes, codes, sizeof(codes));
	methods_str(p->methods, methods, sizeof(methods));
	if (p->kind == RPC_POLICY_RETRY)
		snprintf(buf, len,
			 "retry attempts=%u backoff=%ums..%ums x%g on=%s budget=%g+%g/s methods=%s",
			 p->max_attempts, p->initial_backoff_ms, p->max_backoff_ms,
			 p->backoff_multiplier, codes, p->budget_ratio, p->budget_min_per_s,
			 methods);
	else if (p->kind == RPC_POLICY_HEDGE)
		snprintf(buf, len, "hedge attempts=%u delay=%ums non_fatal=%s methods=%s",
			 p->max_attempts, p->hedging_delay_ms, codes, methods);
	else
		snprintf(buf, len, "off");
	return buf;
}
