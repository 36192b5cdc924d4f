/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L4 path: a redirected connection that is not HTTP/2 is forwarded byte
 * for byte to the address the app dialled, from a socket opened in the
 * client pod's netns (so the server sees the pod's IP). splice() through a
 * pipe per direction: zero copies, and the pipe is the buffer bound, so a
 * slow reader on either side only stops reading from the other.
 */
#ifndef H2SPLIT_L4_PROXY_H
#define H2SPLIT_L4_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn_info;

/* Forward downstream |fd| to ci->orig. |pre| holds |n| bytes already read from
 * |fd| (sent first). Consumes |fd| and ci->netns in every case and calls
 * worker_conn_closed() when the connection ends (also on failure). 0 or -errno. */
int l4_proxy_start(struct worker *w, int fd, struct conn_info *ci, const uint8_t *pre, size_t n);

#endif
