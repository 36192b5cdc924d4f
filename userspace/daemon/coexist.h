/* SPDX-License-Identifier: Apache-2.0 */
/*
 * h2splitd's watch on other programs on its cgroup hooks (kernel/bpf_coexist.h):
 * a scan at start and every COEXIST_SCAN_MS on the main loop, a log line per
 * program whenever the picture changes, and the latest picture for the admin
 * API (/readyz warnings, h2split_foreign_socket_programs).
 */
#ifndef H2SPLIT_COEXIST_H
#define H2SPLIT_COEXIST_H

#include <stddef.h>
#include <stdio.h>

#include "kernel/bpf_coexist.h"

#define COEXIST_SCAN_MS 5000

struct daemon;
struct coexist;

/* Scan now and then every COEXIST_SCAN_MS on |d|'s loop; NULL on ENOMEM. */
struct coexist *coexist_start(struct daemon *d);
/* After the loop and the admin thread stopped. NULL is fine. */
void coexist_free(struct coexist *c);
/* The newest scan (any thread). */
void coexist_report(struct coexist *c, struct bpf_coexist_report *out);
/* One "warning: ..." line per connect4/6 program that sees the address before
 * h2split, and per program h2split's attachment overrides, into |buf|
 * ("" when none). Any thread. */
void coexist_readyz(struct coexist *c, char *buf, size_t len);
/* The h2split_foreign_socket_programs{hook,position} family. Any thread. */
void coexist_write_metrics(FILE *f, struct coexist *c);

#endif
