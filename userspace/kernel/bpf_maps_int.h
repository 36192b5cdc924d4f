/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to kernel/: what bpf_maps.c shares with bpf_maps_excluded.c, the
 * one way to read a whole hash map.
 */
#ifndef H2SPLIT_BPF_MAPS_INT_H
#define H2SPLIT_BPF_MAPS_INT_H

#include <stddef.h>

/*
 * Every key and value of a hash map, in one batch syscall per bucket run
 * rather than two per entry; falls back to get_next_key where batches are
 * refused. |*keys_out| and |*vals_out| are malloc'd (NULL when empty).
 */
int bpf_maps_dump(int fd, size_t ksz, size_t vsz, void **keys_out, void **vals_out, int *n_out);

#endif
