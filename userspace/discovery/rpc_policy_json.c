// SPDX-License-Identifier: Apache-2.0
/*
 * Reads a retry or hedging policy from its annotation's JSON (see
 * rpc_policy_json.h). Every field is checked as gRFC A6 does when it
 * validates a service config, and our limits on top: maxAttempts at most 5,
 * durations at most an hour, the methods list within RPC_POLICY_METHODS_MAX.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "discovery/rpc_policy_json.h"

#define DURATION_MAX_MS 3600000u
#define BUDGET_RATIO_MAX 10.0
#define BUDGET_MIN_PER_S_MAX 100000.0

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A google.protobuf.Duration in JSON: "1s", "0.010s" (at most 9 fraction
 * digits), rounded up to whole ms so that a nonzero one stays nonzero. */
static int parse_duration(const char *s, uint32_t *ms)
{
	uint64_t sec = 0, frac_ns = 0, scale = 100000000;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		sec = sec * 10 + (uint64_t)(*p - '0');
		if (sec > DURATION_MAX_MS / 1000)
			return -EINVAL;
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (!scale)
				return -EINVAL;
			frac_ns += (uint64_t)(*p - '0') * scale;
			scale /= 10;
		}
	}
	if (strcmp(p, "s"))
		return -EINVAL;
	*ms = (uint32_t)(sec * 1000 + frac_ns / 1000000 + (frac_ns % 1000000 != 0));
	return *ms > DURATION_MAX_MS ? -EINVAL : 0;
}

static int get_duration(struct json_object *v, const char *key, uint32_t *ms, char *err,
			size_t errlen)
{
	if (!json_object_is_type(v, json_type_string) ||
	    parse_duration(json_object_get_string(v), ms))
		return fail(err, errlen, "%s: expected a duration such as \"0.1s\", at most 3600s",
			    key);
	return 0;
}

static int get_number(struct json_object *v, const char *key, double lo, double hi, double *out,
		      char *err, size_t errlen)
{
	if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
		return fail(err, errlen, "%s: expected a number", key);
	*out = json_object_get_double(v);
	if (!isfinite(*out) || *out < lo || *out > hi)
		return fail(err, errlen, "%s: expected a number from %g to %g", key, lo, hi);
	return 0;
}

static int get_codes(struct json_object *v, const char *key, uint32_t *codes, char *err,
		     size_t errlen)
{
	if (!json_object_is_type(v, json_type_array))
		return fail(err, errlen, "%s: expected a list of status codes", key);
	*codes = 0;
	for (size_t i = 0; i < json_object_array_length(v); i++) {
		struct json_object *c = json_object_array_get_idx(v, i);
		int code = -1;

		if (json_object_is_type(c, json_type_string))
			code = rpc_policy_code_parse(json_object_get_string(c));
		else if (json_object_is_type(c, json_type_int))
			code = json_object_get_int64(c) >= 0 &&
				       json_object_get_int64(c) < RPC_POLICY_GRPC_CODES
				   ? (int)json_object_get_int64(c)
				   : -1;
		if (code < 0)
			return fail(err, errlen,
				    "%s: item %zu is not a gRPC status code (a name such as "
				    "\"UNAVAILABLE\", or 0-16)",
				    key, i);
		*codes |= 1u << code;
	}
	return 0;
}

/* "pkg.Service/Method" or "pkg.Service/": one '/', a service before it. */
static bool method_ok(const char *m)
{
	const char *slash = strchr(m, '/');

	if (!slash || slash == m || strchr(slash + 1, '/'))
		return false;
	for (const char *p = m; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return false;
	return true;
}

static int get_methods(struct json_object *v, struct rpc_policy *p, char *err, size_t errlen)
{
	size_t off = 0;

	if (!json_object_is_type(v, json_type_array) || !json_object_array_length(v))
		return fail(err, errlen,
			    "methods: expected a non-empty list of \"pkg.Service/Method\" or "
			    "\"pkg.Service/\"");
	for (size_t i = 0; i < json_object_array_length(v); i++) {
		struct json_object *m = json_object_array_get_idx(v, i);
		const char *s =
		    json_object_is_type(m, json_type_string) ? json_object_get_string(m) : NULL;
		size_t len = s ? strlen(s) : 0;

		if (!s || !method_ok(s))
			return fail(err, errlen,
				    "methods: item %zu: expected \"pkg.Service/Method\" or "
				    "\"pkg.Service/\"",
				    i);
		if (off + len + 2 > sizeof(p->methods))
			return fail(err, errlen, "methods: longer than %zu bytes in all",
				    sizeof(p->methods) - 1);
		memcpy(p->methods + off, s, len);
		off += len;
		p->methods[off++] = '\n';
		p->methods[off] = '\0';
	}
	return 0;
}

static int get_budget(struct json_object *v, struct rpc_policy *p, char *err, size_t errlen)
{
	if (!json_object_is_type(v, json_type_object))
		return fail(err, errlen, "retryBudget: expected an object");
	json_object_object_foreach(v, key, val)
	{
		if (!strcmp(key, "ratio")) {
			if (get_number(val, "retryBudget.ratio", 0, BUDGET_RATIO_MAX,
				       &p->budget_ratio, err, errlen))
				return -EINVAL;
		} else if (!strcmp(key, "minPerSecond")) {
			if (get_number(val, "retryBudget.minPerSecond", 0, BUDGET_MIN_PER_S_MAX,
				       &p->budget_min_per_s, err, errlen))
				return -EINVAL;
		} else {
			return fail(err, errlen,
				    "retryBudget: unknown field \"%.40s\" (ratio, minPerSecond)",
				    key);
		}
	}
	return 0;
}

static int get_attempts(struct json_object *v, struct rpc_policy *p, char *err, size_t errlen)
{
	int64_t n;

	if (!json_object_is_type(v, json_type_int))
		return fail(err, errlen, "maxAttempts: expected an integer from 2 to %d",
			    RPC_POLICY_MAX_ATTEMPTS);
	n = json_object_get_int64(v);
	if (n < 2 || n > RPC_POLICY_MAX_ATTEMPTS)
		return fail(err, errlen, "maxAttempts: expected an integer from 2 to %d",
			    RPC_POLICY_MAX_ATTEMPTS);
	p->max_attempts = (uint8_t)n;
	return 0;
}

/* One field of a retryPolicy; 1 when |key| is not one of its own. */
static int retry_field(const char *key, struct json_object *v, struct rpc_policy *p, char *err,
		       size_t errlen)
{
	if (!strcmp(key, "initialBackoff"))
		return get_duration(v, key, &p->initial_backoff_ms, err, errlen);
	if (!strcmp(key, "maxBackoff"))
		return get_duration(v, key, &p->max_backoff_ms, err, errlen);
	if (!strcmp(key, "backoffMultiplier"))
		return get_number(v, key, 1e-6, 1000, &p->backoff_multiplier, err, errlen);
	if (!strcmp(key, "retryableStatusCodes"))
		return get_codes(v, key, &p->codes, err, errlen);
	return 1;
}

/* One field of a hedgingPolicy; 1 when |key| is not one of its own. */
static int hedge_field(const char *key, struct json_object *v, struct rpc_policy *p, char *err,
		       size_t errlen)
{
	if (!strcmp(key, "hedgingDelay"))
		return get_duration(v, key, &p->hedging_delay_ms, err, errlen);
	if (!strcmp(key, "nonFatalStatusCodes"))
		return get_codes(v, key, &p->codes, err, errlen);
	return 1;
}

static int parse_fields(struct json_object *o, enum rpc_policy_kind kind, struct rpc_policy *p,
			char *err, size_t errlen)
{
	bool attempts = false;

	json_object_object_foreach(o, key, v)
	{
		int rc;

		if (!strcmp(key, "maxAttempts")) {
			rc = get_attempts(v, p, err, errlen);
			attempts = true;
		} else if (!strcmp(key, "methods")) {
			rc = get_methods(v, p, err, errlen);
		} else if (!strcmp(key, "retryBudget")) {
			rc = get_budget(v, p, err, errlen);
		} else {
			rc = kind == RPC_POLICY_RETRY ? retry_field(key, v, p, err, errlen)
						      : hedge_field(key, v, p, err, errlen);
			if (rc > 0)
				return fail(err, errlen, "unknown field \"%.40s\"", key);
		}
		if (rc)
			return -EINVAL;
	}
	if (!attempts)
		return fail(err, errlen, "maxAttempts: required");
	return 0;
}

/* What gRFC A6 requires of a retryPolicy beyond each field's own form. */
static int check_retry(struct rpc_policy *p, char *err, size_t errlen)
{
	if (!p->initial_backoff_ms)
		return fail(err, errlen, "initialBackoff: required, above 0");
	if (!p->max_backoff_ms)
		return fail(err, errlen, "maxBackoff: required, above 0");
	if (p->backoff_multiplier <= 0)
		return fail(err, errlen, "backoffMultiplier: required, above 0");
	if (!p->codes)
		return fail(err, errlen, "retryableStatusCodes: required, not empty");
	if (p->codes & 1u)
		return fail(err, errlen, "retryableStatusCodes: OK is not a failure");
	return 0;
}

int rpc_policy_parse(const char *json, enum rpc_policy_kind kind, struct rpc_policy *out, char *err,
		     size_t errlen)
{
	struct json_tokener *tok;
	struct json_object *o;
	size_t len = strlen(json);
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	out->budget_ratio = RPC_BUDGET_RATIO_DEFAULT;
	out->budget_min_per_s = RPC_BUDGET_MIN_PER_S_DEFAULT;
	tok = json_tokener_new_ex(8);
	if (!tok)
		return fail(err, errlen, "out of memory");
	if (len > INT32_MAX)
		len = INT32_MAX;
	o = json_tokener_parse_ex(tok, json, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json[json_tokener_get_parse_end(tok) +
		 strspn(json + json_tokener_get_parse_end(tok), " \t\r\n")])
		fail(err, errlen, "not one JSON object");
	else if (!json_object_is_type(o, json_type_object))
		fail(err, errlen, "expected a JSON object");
	else
		rc = parse_fields(o, kind, out, err, errlen);
	if (!rc && kind == RPC_POLICY_RETRY)
		rc = check_retry(out, err, errlen);
	json_object_put(o);
	json_tokener_free(tok);
	if (rc) {
		memset(out, 0, sizeof(*out));
		return rc;
	}
	if (out->max_backoff_ms < out->initial_backoff_ms && kind == RPC_POLICY_RETRY)
		out->max_backoff_ms = out->initial_backoff_ms;
	out->kind = (uint8_t)kind;
	return 0;
}
