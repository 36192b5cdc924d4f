/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one writer of Prometheus text (exposition format 0.0.4): family
 * headers, samples with labels, label-value escaping. Both /metrics parts
 * (the daemon's figures in daemon/admin.c, the tables in metrics.c) print
 * through it, so the format lives in one place. Writes go to a stdio stream;
 * the caller checks ferror() once at the end.
 */
#ifndef H2SPLIT_PROM_H
#define H2SPLIT_PROM_H

#include <stdint.h>
#include <stdio.h>

/* One label of a sample; |value| is escaped on output. */
struct prom_label {
	const char *name;
	const char *value;
};

/* "# HELP name help" (skipped when |help| is NULL) and "# TYPE name type". */
void prom_family(FILE *f, const char *name, const char *type, const char *help);

/* A sample "name{l0="v0",...} value" ("name value" when |n| is 0). */
void prom_u64(FILE *f, const char *name, const struct prom_label *l, int n, uint64_t v);
void prom_i64(FILE *f, const char *name, const struct prom_label *l, int n, int64_t v);
/* A sample in seconds with microsecond precision ("1.000250"), from |us|. */
void prom_seconds(FILE *f, const char *name, const struct prom_label *l, int n, uint64_t us);

/* A family of one unlabelled sample. */
void prom_gauge(FILE *f, const char *name, const char *help, uint64_t v);
void prom_counter(FILE *f, const char *name, const char *help, uint64_t v);

/* Write |s| as a label value: backslash, double quote and newline escaped. */
void prom_label_value(FILE *f, const char *s);

#endif
