// SPDX-License-Identifier: Apache-2.0
/*
 * Prometheus text output (prom.h). Stateless: every call appends to the
 * stream it is given. Label values are escaped here and nowhere else.
 */
#include <inttypes.h>

#include "telemetry/prom.h"

void prom_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '"')
			fputs("\\\"", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
	if (help)
		fprintf(f, "# HELP %s %s\n", name, help);
	fprintf(f, "# TYPE %s %s\n", name, type);
}

/* "name{...} " or "name ", up to the value. */
static void sample_start(FILE *f, const char *name, const struct prom_label *l, int n)
{
	fputs(name, f);
	for (int i = 0; i < n; i++) {
		fprintf(f, "%c%s=\"", i ? ',' : '{', l[i].name);
		prom_label_value(f, l[i].value);
		fputc('"', f);
	}
	fputs(n ? "} " : " ", f);
}

void prom_u64(FILE *f, const char *name, const struct prom_label *l, int n, uint64_t v)
{
	sample_start(f, name, l, n);
	fprintf(f, "%" PRIu64 "\n", v);
}

void prom_i64(FILE *f, const char *name, const struct prom_label *l, int n, int64_t v)
{
	sample_start(f, name, l, n);
	fprintf(f, "%" PRId64 "\n", v);
}

void prom_seconds(FILE *f, const char *name, const struct prom_label *l, int n, uint64_t us)
{
	sample_start(f, name, l, n);
	fprintf(f, "%" PRIu64 ".%06" PRIu64 "\n", us / 1000000, us % 1000000);
}

void prom_gauge(FILE *f, const char *name, const char *help, uint64_t v)
{
	prom_family(f, name, "gauge", help);
	prom_u64(f, name, NULL, 0, v);
}

void prom_counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	prom_family(f, name, "counter", help);
	prom_u64(f, name, NULL, 0, v);
}
