// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of h2splitd's command line: defaults, every flag's environment
 * twin, flags winning over the environment, repeatable flags, and clear
 * errors for bad values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"

static int parse(struct config *c, char *err, int argc, char **argv)
{
	return config_parse(c, argc, argv, err, 256);
}

static void test_defaults(void **state)
{
	char *argv[] = {"h2splitd", "--services-file", "/x.json"};
	struct config c;
	char err[256], buf[64];

	(void)state;
	assert_int_equal(parse(&c, err, 3, argv), 0);
	assert_string_equal(config_addr_str(&c.listen_v4, buf, sizeof(buf)), "169.254.20.11:15001");
	assert_int_equal(c.listen_v6.ss_family, 0);
	assert_string_equal(config_addr_str(&c.admin, buf, sizeof(buf)), "127.0.0.1:9901");
	assert_string_equal(c.bpffs, "/sys/fs/bpf/h2split");
	assert_true(c.upstream_source_pod);
	assert_int_equal(c.lb_policy, LB_EWMA);
	assert_int_equal(c.lb_ewma_decay_ms, 10000);
	assert_int_equal(c.outlier_failures, 5);
	assert_int_equal(c.outlier_ejection_ms, 30000);
	assert_int_equal(c.outlier_failure_pct, 50);
	assert_int_equal(c.drain_timeout_s, 30);
	assert_int_equal(c.slow_start_ms, 0);
	assert_int_equal(c.max_inflight_per_endpoint, 0);
	assert_int_equal(c.max_inflight_per_service, 0);
	assert_int_equal(c.max_pending, 1024);
	assert_int_equal(c.pending_timeout_ms, 1000);
	assert_string_equal(c.services_file, "/x.json");
}

static void test_flags_and_repeatable(void **state)
{
	char *argv[] = {"h2splitd", "--services-file=/s.json", "--listen", "10.1.2.3:1500",
			"--listen", "[fd00::1]:1501", "--exclude-cgroup", "/a", "--exclude-cgroup=/b",
			"--upstream-source", "node", "--workers", "3", "--lb-policy", "round_robin",
			"--drain-timeout", "5", "--log-level", "debug", "--access-log"};
	struct config c;
	char err[256], buf[64];

	(void)state;
	assert_int_equal(parse(&c, err, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
	assert_string_equal(config_addr_str(&c.listen_v4, buf, sizeof(buf)), "10.1.2.3:1500");
	assert_string_equal(config_addr_str(&c.listen_v6, buf, sizeof(buf)), "[fd00::1]:1501");
	assert_int_equal(c.n_exclude, 2);
	assert_string_equal(c.exclude[1], "/b");
	assert_false(c.upstream_source_pod);
	assert_int_equal(c.workers, 3);
	assert_int_equal(c.lb_policy, LB_ROUND_ROBIN);
	assert_int_equal(c.drain_timeout_s, 5);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_true(c.access_log);
}

static void test_env_and_flag_precedence(void **state)
{
	char *argv[] = {"h2splitd", "--workers", "2"};
	struct config c;
	char err[256];

	(void)state;
	setenv("H2SPLIT_SERVICES_FILE", "/env.json", 1);
	setenv("H2SPLIT_WORKERS", "7", 1);
	setenv("H2SPLIT_EXCLUDE_CGROUP", "/x,/y,/z", 1);
	setenv("H2SPLIT_ACCESS_LOG", "true", 1);
	assert_int_equal(parse(&c, err, 3, argv), 0);
	assert_string_equal(c.services_file, "/env.json");
	assert_int_equal(c.workers, 2); /* the flag wins */
	assert_int_equal(c.n_exclude, 3);
	assert_string_equal(c.exclude[2], "/z");
	assert_true(c.access_log);
	setenv("H2SPLIT_WORKERS", "many", 1);
	assert_int_equal(parse(&c, err, 1, argv), -EINVAL);
	assert_non_null(strstr(err, "H2SPLIT_WORKERS"));
	unsetenv("H2SPLIT_SERVICES_FILE");
	unsetenv("H2SPLIT_WORKERS");
	unsetenv("H2SPLIT_EXCLUDE_CGROUP");
	unsetenv("H2SPLIT_ACCESS_LOG");
}

static void test_errors_name_the_flag(void **state)
{
	struct {
		char *argv[4];
		int argc;
		const char *want;
	} cases[] = {
		{{"h2splitd", "--bogus"}, 2, "unknown flag '--bogus'"},
		{{"h2splitd", "--listen", "nope"}, 3, "--listen nope"},
		{{"h2splitd", "--listen", "1.2.3.4:99999"}, 3, "--listen"},
		{{"h2splitd", "--upstream-source", "moon"}, 3, "--upstream-source moon"},
		{{"h2splitd", "--lb-policy", "random"}, 3, "--lb-policy random"},
		{{"h2splitd", "--lb-ewma-decay", "0"}, 3, "--lb-ewma-decay 0"},
		{{"h2splitd", "--outlier-ejection", "0"}, 3, "--outlier-ejection 0"},
		{{"h2splitd", "--outlier-failure-percent", "101"}, 3, "--outlier-failure-percent 101"},
		{{"h2splitd", "--max-pending", "-1"}, 3, "--max-pending -1"},
		{{"h2splitd", "--pending-timeout", "0"}, 3, "--pending-timeout 0"},
		{{"h2splitd", "--slow-start", "10s"}, 3, "--slow-start 10s"},
		{{"h2splitd", "--workers"}, 2, "--workers needs a value"},
		{{"h2splitd", "stray"}, 2, "unexpected argument"},
		{{"h2splitd"}, 1, "--services-file is required"},
	};
	struct config c;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(&c, err, cases[i].argc, cases[i].argv), -EINVAL);
		assert_non_null(strstr(err, cases[i].want));
	}
}

static void test_ewma_policy(void **state)
{
	char *argv[] = {"h2splitd", "--services-file=/s.json", "--lb-policy", "ewma",
			"--lb-ewma-decay", "2500", "--outlier-failures", "0",
			"--outlier-ejection", "1000", "--outlier-failure-percent", "0"};
	enum lb_policy p;
	struct config c;
	char err[256];

	(void)state;
	assert_int_equal(parse(&c, err, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
	assert_int_equal(c.lb_policy, LB_EWMA);
	assert_int_equal(c.lb_ewma_decay_ms, 2500);
	assert_int_equal(c.outlier_failures, 0);
	assert_int_equal(c.outlier_ejection_ms, 1000);
	assert_int_equal(c.outlier_failure_pct, 0);
	assert_string_equal(config_lb_policy_name(LB_EWMA), "ewma");
	/* The h2split.io/lb-policy annotation parses with the same function. */
	assert_int_equal(config_parse_lb_policy("ewma", &p), 0);
	assert_int_equal(p, LB_EWMA);
}

static void test_limits(void **state)
{
	char *dflt[] = {"h2splitd", "--services-file=/s.json"};
	char *argv[] = {"h2splitd", "--services-file=/s.json", "--max-header-list-size", "4096",
			"--max-headers", "16", "--max-continuations=2", "--max-concurrent-streams",
			"5", "--max-control-frame-rate", "50", "--max-outbound-control-frames", "20",
			"--max-pending-bytes", "65535", "--max-connections-per-pod", "0",
			"--idle-timeout", "0", "--header-timeout", "1",
			"--upstream-keepalive-time", "0", "--upstream-keepalive-timeout", "2"};
	struct {
		const char *flag, *value, *want;
	} bad[] = {
		{"--max-header-list-size", "65537", "--max-header-list-size 65537: expected bytes, 1024 to 65536"},
		{"--max-headers", "257", "--max-headers 257"},
		{"--max-headers", "7", "--max-headers 7"},
		{"--max-continuations", "0", "--max-continuations 0"},
		{"--max-concurrent-streams", "0", "--max-concurrent-streams 0"},
		{"--max-control-frame-rate", "9", "--max-control-frame-rate 9"},
		{"--max-outbound-control-frames", "x", "--max-outbound-control-frames x"},
		{"--max-pending-bytes", "65534", "--max-pending-bytes 65534"},
		{"--max-pending-bytes", "16777217", "--max-pending-bytes 16777217"},
		{"--retry-buffer-bytes", "-1", "--retry-buffer-bytes -1"},
		{"--retry-buffer-bytes", "262144", "--retry-buffer-bytes 262144: must be below "
						   "--max-pending-bytes (262144)"},
		{"--max-connections-per-pod", "-1", "--max-connections-per-pod -1"},
		{"--idle-timeout", "1s", "--idle-timeout 1s"},
		{"--header-timeout", "3601", "--header-timeout 3601"},
		{"--upstream-keepalive-time", "-1", "--upstream-keepalive-time -1"},
		{"--upstream-keepalive-timeout", "0", "--upstream-keepalive-timeout 0: expected seconds, 1 to 3600"},
	};
	struct config c;
	char err[256];

	(void)state;
	assert_int_equal(parse(&c, err, 2, dflt), 0);
	assert_int_equal(c.max_header_list_size, 65536);
	assert_int_equal(c.max_headers, 256);
	assert_int_equal(c.max_continuations, 8);
	assert_int_equal(c.max_concurrent_streams, 1000);
	assert_int_equal(c.max_control_frame_rate, 10000);
	assert_int_equal(c.max_outbound_control_frames, 1000);
	assert_int_equal(c.max_pending_bytes, 256 * 1024);
	assert_int_equal(c.retry_buffer_bytes, 64 * 1024);
	assert_int_equal(c.max_connections_per_pod, 1024);
	assert_int_equal(c.idle_timeout_s, 3600);
	assert_int_equal(c.header_timeout_s, 30);
	assert_int_equal(c.upstream_keepalive_time_s, 10);
	assert_int_equal(c.upstream_keepalive_timeout_s, 5);
	assert_int_equal(parse(&c, err, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
	assert_int_equal(c.max_header_list_size, 4096);
	assert_int_equal(c.max_headers, 16);
	assert_int_equal(c.max_continuations, 2);
	assert_int_equal(c.max_concurrent_streams, 5);
	assert_int_equal(c.max_control_frame_rate, 50);
	assert_int_equal(c.max_outbound_control_frames, 20);
	assert_int_equal(c.max_pending_bytes, 65535);
	assert_int_equal(c.retry_buffer_bytes, 65535 / 2); /* half a smaller window */
	assert_int_equal(c.max_connections_per_pod, 0);
	assert_int_equal(c.idle_timeout_s, 0);
	assert_int_equal(c.header_timeout_s, 1);
	assert_int_equal(c.upstream_keepalive_time_s, 0);
	assert_int_equal(c.upstream_keepalive_timeout_s, 2);
	/* The environment twins, and the flag winning over them. */
	setenv("H2SPLIT_MAX_HEADERS", "32", 1);
	setenv("H2SPLIT_IDLE_TIMEOUT", "7", 1);
	setenv("H2SPLIT_MAX_CONNECTIONS_PER_POD", "9", 1);
	assert_int_equal(parse(&c, err, 2, dflt), 0);
	assert_int_equal(c.max_headers, 32);
	assert_int_equal(c.idle_timeout_s, 7);
	assert_int_equal(c.max_connections_per_pod, 9);
	assert_int_equal(parse(&c, err, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
	assert_int_equal(c.max_headers, 16);
	setenv("H2SPLIT_MAX_HEADERS", "lots", 1);
	assert_int_equal(parse(&c, err, 2, dflt), -EINVAL);
	assert_non_null(strstr(err, "H2SPLIT_MAX_HEADERS"));
	unsetenv("H2SPLIT_MAX_HEADERS");
	unsetenv("H2SPLIT_IDLE_TIMEOUT");
	unsetenv("H2SPLIT_MAX_CONNECTIONS_PER_POD");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *a[] = {"h2splitd", "--services-file=/s.json", (char *)bad[i].flag,
			     (char *)bad[i].value};

		assert_int_equal(parse(&c, err, 4, a), -EINVAL);
		assert_non_null(strstr(err, bad[i].want));
	}
}

static void test_balancing_flags_and_durations(void **state)
{
	char *argv[] = {"h2splitd", "--services-file=/s.json", "--slow-start", "5000",
			"--max-inflight-per-endpoint", "8", "--max-inflight-per-service", "100",
			"--max-pending", "0", "--pending-timeout", "250"};
	static const struct {
		const char *s;
		int rc, ms;
	} d[] = {{"0", 0, 0},	   {"250ms", 0, 250}, {"10s", 0, 10000}, {"2m", 0, 120000},
		 {"60m", 0, 3600000}, {"61m", -EINVAL, 0}, {"10", -EINVAL, 0}, {"s", -EINVAL, 0},
		 {"-1s", -EINVAL, 0}, {"1h", -EINVAL, 0},    {"", -EINVAL, 0},	 {"1.5s", -EINVAL, 0}};
	struct config c;
	char err[256];

	(void)state;
	assert_int_equal(parse(&c, err, (int)(sizeof(argv) / sizeof(argv[0])), argv), 0);
	assert_int_equal(c.slow_start_ms, 5000);
	assert_int_equal(c.max_inflight_per_endpoint, 8);
	assert_int_equal(c.max_inflight_per_service, 100);
	assert_int_equal(c.max_pending, 0);
	assert_int_equal(c.pending_timeout_ms, 250);
	/* --max-pending and main's --max-pending-bytes are two flags. */
	assert_int_equal(c.max_pending_bytes, 256 * 1024);
	/* Annotation durations (h2split.io/slow-start, ...). */
	for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
		int ms = -7;

		assert_int_equal(config_parse_duration_ms(d[i].s, 3600000, &ms), d[i].rc);
		if (!d[i].rc)
			assert_int_equal(ms, d[i].ms);
	}
}

static void test_parse_addr(void **state)
{
	struct sockaddr_storage ss;

	(void)state;
	assert_int_equal(config_parse_addr("127.0.0.1:80", &ss), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(config_parse_addr("[::1]:443", &ss), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(config_parse_addr("::1:443", &ss), -EINVAL);
	assert_int_equal(config_parse_addr("[::1]443", &ss), -EINVAL);
	assert_int_equal(config_parse_addr("1.2.3.4:0", &ss), -EINVAL);
	assert_int_equal(config_parse_addr(":80", &ss), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_flags_and_repeatable),
		cmocka_unit_test(test_env_and_flag_precedence),
		cmocka_unit_test(test_errors_name_the_flag),
		cmocka_unit_test(test_ewma_policy),
		cmocka_unit_test(test_balancing_flags_and_durations),
		cmocka_unit_test(test_parse_addr),
		cmocka_unit_test(test_limits),
	};

	unsetenv("H2SPLIT_LISTEN");
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
