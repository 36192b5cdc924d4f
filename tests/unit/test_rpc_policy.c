// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests for retry and hedging policies: the annotation JSON parser
 * (discovery/rpc_policy_json.c: gRFC A6 shapes, durations, status codes by
 * name and number, methods, retryBudget, and bad inputs rejected whole),
 * which RPCs a policy covers (base/rpc_policy.c), and the retry budget's
 * token bucket (balancer/retry_budget.c: the ratio, the floor, the cap).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "balancer/retry_budget.h"
#include "base/rpc_policy.h"
#include "discovery/rpc_policy_json.h"

static const char good_retry[] =
    "{\"maxAttempts\":3,\"initialBackoff\":\"0.01s\",\"maxBackoff\":\"0.1s\","
    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\"]}";

static int parse(const char *json, enum rpc_policy_kind kind, struct rpc_policy *p)
{
	char err[160] = "";
	int rc = rpc_policy_parse(json, kind, p, err, sizeof(err));

	if (rc) {
		assert_true(err[0]); /* says what is wrong */
		assert_int_equal(p->kind, RPC_POLICY_NONE);
	}
	return rc;
}

static void test_retry_policy(void **unused)
{
	struct rpc_policy p;

	(void)unused;
	assert_int_equal(parse(good_retry, RPC_POLICY_RETRY, &p), 0);
	assert_int_equal(p.kind, RPC_POLICY_RETRY);
	assert_int_equal(p.max_attempts, 3);
	assert_int_equal(p.initial_backoff_ms, 10);
	assert_int_equal(p.max_backoff_ms, 100);
	assert_true(p.backoff_multiplier == 2);
	assert_int_equal(p.codes, 1u << 14);
	assert_true(p.budget_ratio == 0.2 && p.budget_min_per_s == 10); /* the defaults */
	assert_string_equal(p.methods, "");
	/* Codes by name in any case and by number; sub-ms durations round up;
	 * maxBackoff below initialBackoff is raised to it; trailing blanks. */
	assert_int_equal(parse("{\"maxAttempts\":5,\"initialBackoff\":\"0.0001s\","
			       "\"maxBackoff\":\"0s\",\"backoffMultiplier\":1.5,"
			       "\"retryableStatusCodes\":[\"resource_exhausted\",14,\"2\"],"
			       "\"retryBudget\":{\"ratio\":0.5,\"minPerSecond\":3}} \n",
			       RPC_POLICY_RETRY, &p),
			 -EINVAL); /* maxBackoff 0s: required above 0 */
	assert_int_equal(parse("{\"maxAttempts\":5,\"initialBackoff\":\"0.0001s\","
			       "\"maxBackoff\":\"0.000000001s\",\"backoffMultiplier\":1.5,"
			       "\"retryableStatusCodes\":[\"resource_exhausted\",14,\"2\"],"
			       "\"retryBudget\":{\"ratio\":0.5,\"minPerSecond\":3}} \n",
			       RPC_POLICY_RETRY, &p),
			 0);
	assert_int_equal(p.initial_backoff_ms, 1);
	assert_int_equal(p.max_backoff_ms, 1);
	assert_int_equal(p.codes, 1u << 8 | 1u << 14 | 1u << 2);
	assert_true(p.budget_ratio == 0.5 && p.budget_min_per_s == 3);
}

static void test_hedging_policy(void **unused)
{
	struct rpc_policy p;

	(void)unused;
	assert_int_equal(parse("{\"maxAttempts\":2,\"hedgingDelay\":\"0.010s\","
			       "\"nonFatalStatusCodes\":[\"UNAVAILABLE\"]}",
			       RPC_POLICY_HEDGE, &p),
			 0);
	assert_int_equal(p.kind, RPC_POLICY_HEDGE);
	assert_int_equal(p.hedging_delay_ms, 10);
	assert_int_equal(p.codes, 1u << 14);
	/* hedgingDelay and nonFatalStatusCodes are optional. */
	assert_int_equal(parse("{\"maxAttempts\":4}", RPC_POLICY_HEDGE, &p), 0);
	assert_int_equal(p.hedging_delay_ms, 0);
	/* A retryPolicy field in a hedgingPolicy and the other way round. */
	assert_int_equal(
	    parse("{\"maxAttempts\":2,\"initialBackoff\":\"1s\"}", RPC_POLICY_HEDGE, &p), -EINVAL);
	assert_int_equal(parse("{\"maxAttempts\":2,\"hedgingDelay\":\"1s\",\"initialBackoff\":"
			       "\"1s\",\"maxBackoff\":\"1s\",\"backoffMultiplier\":2,"
			       "\"retryableStatusCodes\":[14]}",
			       RPC_POLICY_RETRY, &p),
			 -EINVAL);
}

static void test_bad_inputs(void **unused)
{
	static const char *const bad[] = {
	    "",
	    "not json",
	    "[]",
	    "3",
	    "{}",					       /* maxAttempts */
	    "{\"maxAttempts\":1}",			       /* A6: > 1 */
	    "{\"maxAttempts\":6}",			       /* <= 5 */
	    "{\"maxAttempts\":\"3\"}",			       /* a string */
	    "{\"maxAttempts\":2.5}",			       /* not an integer */
	    "{\"maxAttempts\":3,\"initialBackoff\":\"10ms\"}", /* "s" only */
	    "{\"maxAttempts\":3,\"initialBackoff\":\".5s\"}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"1.s\"}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"-1s\"}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.0000000001s\"}",		/* 10 digits */
	    "{\"maxAttempts\":3,\"initialBackoff\":\"99999999999999999999s\"}", /* overflow */
	    "{\"maxAttempts\":3,\"initialBackoff\":\"3601s\"}",			/* > 1 h */
	    "{\"maxAttempts\":3,\"initialBackoff\":1}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":0,\"retryableStatusCodes\":[14]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLEX\"]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[17]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[\"OK\"]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":\"UNAVAILABLE\"}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"methods\":[]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"methods\":[\"/a.B/C\"]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"methods\":[\"a.B\"]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"methods\":[\"a.B/C/D\"]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"methods\":[\"a B/C\"]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"retryBudget\":{\"ratio\":-1}}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"retryBudget\":{\"ttl\":1}}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"retryBudget\":[]}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14],\"typo\":1}",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
	    "\"backoffMultiplier\":2,\"retryableStatusCodes\":[14]} trailing",
	    "{\"maxAttempts\":3,\"initialBackoff\":\"0.1s\"", /* cut short */
	};
	struct rpc_policy p;
	char methods[600];

	(void)unused;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		print_message("bad[%zu]: %s\n", i, bad[i]);
		assert_int_equal(parse(bad[i], RPC_POLICY_RETRY, &p), -EINVAL);
	}
	/* A methods list that does not fit. */
	strcpy(methods, "{\"maxAttempts\":2,\"methods\":[");
	for (int i = 0; i < 20; i++)
		strcat(methods, i ? ",\"pkg.Service/Method\"" : "\"pkg.Service/Method\"");
	strcat(methods, "]}");
	assert_int_equal(parse(methods, RPC_POLICY_HEDGE, &p), -EINVAL);
}

static bool covers(const struct rpc_policy *p, const char *path)
{
	return rpc_policy_covers(p, (const uint8_t *)path, strlen(path));
}

static void test_methods(void **unused)
{
	struct rpc_policy p;

	(void)unused;
	assert_int_equal(parse("{\"maxAttempts\":2,\"methods\":[\"pkg.Svc/Get\",\"other.Api/\"]}",
			       RPC_POLICY_HEDGE, &p),
			 0);
	assert_true(covers(&p, "/pkg.Svc/Get"));
	assert_false(covers(&p, "/pkg.Svc/Put"));
	assert_false(covers(&p, "/pkg.Svc/GetMore"));
	assert_false(covers(&p, "/pkg.Sv/Get"));
	assert_true(covers(&p, "/other.Api/Anything"));
	assert_false(covers(&p, "/other.Api/a/b"));
	assert_false(covers(&p, "/other.Apix/A"));
	assert_false(covers(&p, "pkg.Svc/Get")); /* :path starts with '/' */
	assert_false(covers(&p, ""));
	/* No list: every method, even without a :path. */
	assert_int_equal(parse(good_retry, RPC_POLICY_RETRY, &p), 0);
	assert_true(covers(&p, "/x.Y/Z"));
	assert_true(rpc_policy_covers(&p, NULL, 0));
	/* No policy covers nothing. */
	memset(&p, 0, sizeof(p));
	assert_false(covers(&p, "/x.Y/Z"));
}

static void test_code_names(void **unused)
{
	char buf[256];
	struct rpc_policy p;

	(void)unused;
	assert_string_equal(rpc_policy_code_name(14), "UNAVAILABLE");
	assert_null(rpc_policy_code_name(17));
	assert_null(rpc_policy_code_name(-1));
	assert_int_equal(rpc_policy_code_parse("Deadline_Exceeded"), 4);
	assert_int_equal(rpc_policy_code_parse("16"), 16);
	assert_int_equal(rpc_policy_code_parse("17"), -1);
	assert_int_equal(rpc_policy_code_parse("1x"), -1);
	assert_int_equal(rpc_policy_code_parse(""), -1);
	assert_int_equal(parse(good_retry, RPC_POLICY_RETRY, &p), 0);
	assert_string_equal(
	    rpc_policy_str(&p, buf, sizeof(buf)),
	    "retry attempts=3 backoff=10ms..100ms x2 on=UNAVAILABLE budget=0.2+10/s "
	    "methods=all");
}

/* Retries a run of |secs| s with |per_s| requests a second, each failing,
 * gets from the budget (each request asks for up to |asks| retries). */
static unsigned storm(struct retry_budget *b, double ratio, double floor, int secs, int per_s,
		      int asks, uint64_t *now)
{
	unsigned got = 0;

	for (int s = 0; s < secs; s++) {
		for (int r = 0; r < per_s; r++) {
			*now += 1000 / (uint64_t)per_s;
			retry_budget_deposit(b, *now, ratio, floor);
			for (int a = 0; a < asks; a++)
				got += retry_budget_withdraw(b, *now, ratio, floor);
		}
	}
	return got;
}

static void test_budget(void **unused)
{
	struct retry_budget b = {0};
	uint64_t now = 1000000;
	unsigned got;

	(void)unused;
	/* Everything fails: at most ratio x requests + floor x (T + 1). */
	got = storm(&b, 0.2, 10, 10, 100, 4, &now);
	assert_true(got <= 0.2 * 1000 + 10 * 11);
	assert_true(got >= 0.2 * 1000 + 10 * 9); /* and it does give them */
	/* A quiet hour saves up no more than the cap: a second of the floor plus
	 * the ratio of the last 10 s of requests (none). */
	now += 3600 * 1000;
	got = 0;
	for (int i = 0; i < 100; i++)
		got += retry_budget_withdraw(&b, now, 0.2, 10);
	assert_int_equal(got, 10);
	/* No floor, ratio 0.5: one retry per two requests. */
	memset(&b, 0, sizeof(b));
	got = storm(&b, 0.5, 0, 1, 100, 1, &now);
	assert_true(got >= 49 && got <= 50);
	/* No budget at all: nothing. */
	memset(&b, 0, sizeof(b));
	assert_int_equal(storm(&b, 0, 0, 2, 50, 1, &now), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_retry_policy), cmocka_unit_test(test_hedging_policy),
	    cmocka_unit_test(test_bad_inputs),	 cmocka_unit_test(test_methods),
	    cmocka_unit_test(test_code_names),	 cmocka_unit_test(test_budget),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
