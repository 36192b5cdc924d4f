// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target: h2splitd's command line and environment (config_parse).
 * The input is split at NUL and newline bytes into words: words of the form
 * H2SPLIT_NAME=value become environment variables (at most 4, removed again
 * afterwards), the rest are argv[1..]. A parsed config is then formatted back
 * the way the daemon logs it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"

#define MAX_ARGS 64
#define MAX_ENV 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), *argv[MAX_ARGS + 2], *env[MAX_ENV];
	int argc = 0, n_env = 0;
	struct config *c;
	char err[512], addr[64];
	size_t i = 0;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	argv[argc++] = "h2splitd";
	while (i < size && argc < MAX_ARGS + 1) {
		char *w = buf + i, *eq;

		while (i < size && buf[i] && buf[i] != '\n')
			i++;
		buf[i++] = 0;
		eq = strchr(w, '=');
		if (!strncmp(w, "H2SPLIT_", 8) && eq && n_env < MAX_ENV) {
			*eq = 0;
			if (!setenv(w, eq + 1, 1))
				env[n_env++] = w;
			continue;
		}
		argv[argc++] = w;
	}
	argv[argc] = NULL;
	c = malloc(sizeof(*c));
	if (c && config_parse(c, argc, argv, err, sizeof(err)) == 0) {
		config_addr_str(&c->listen_v4, addr, sizeof(addr));
		config_addr_str(&c->listen_v6, addr, sizeof(addr));
		config_addr_str(&c->admin, addr, sizeof(addr));
		(void)config_lb_policy_name(c->lb_policy);
	}
	for (int k = 0; k < n_env; k++)
		unsetenv(env[k]);
	free(c);
	free(buf);
	return 0;
}
