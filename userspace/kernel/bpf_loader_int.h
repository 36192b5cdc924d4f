/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to kernel/: what bpf_loader.c shares with bpf_preflight.c.
 */
#ifndef H2SPLIT_BPF_LOADER_INT_H
#define H2SPLIT_BPF_LOADER_INT_H

/* |pin_root|, or BPF_LOADER_PIN_ROOT when it is NULL or empty. */
const char *bpf_loader_root(const char *pin_root);

#endif
