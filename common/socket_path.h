/* SPDX-License-Identifier: MIT */
#ifndef MOED_COMMON_SOCKET_PATH_H
#define MOED_COMMON_SOCKET_PATH_H

#include <stddef.h>

/*
 * Where the daemon listens unless told otherwise, and where clients look: $MOED_SOCKET,
 * else moed.sock in $RUNTIME_DIRECTORY (systemd's; the first of a colon-separated list),
 * else in $XDG_RUNTIME_DIR, else /run/moed/moed.sock. Returns 0 or -ENAMETOOLONG.
 */
int moed_default_socket_path(char *buf, size_t len);

#endif
