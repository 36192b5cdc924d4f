/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The splitter's link-local listen address on the node, as NodeLocal
 * DNSCache does it: on a dummy device "h2split0" where the kernel has the
 * dummy link type, else on "lo" (local delivery is the same). Plain rtnetlink,
 * no iproute2 needed in the image.
 */
#ifndef H2SPLIT_IFADDR_H
#define H2SPLIT_IFADDR_H

#include <sys/socket.h>

#define IFADDR_DUMMY_NAME "h2split0"

/* Make |addr| local unless it already is (a node IP). 0 or -errno. */
int ifaddr_ensure(const struct sockaddr_storage *addr);
/* Remove |addr| from h2split0 and lo, and delete h2split0. Idempotent. */
int ifaddr_remove(const struct sockaddr_storage *addr);

#endif
