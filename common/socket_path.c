/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socket_path.h"

int moed_default_socket_path(char *buf, size_t len)
{
	const char *env = getenv("MOED_SOCKET");
	const char *dir;
	int n;

	if (env && *env) {
		n = snprintf(buf, len, "%s", env);
	} else if ((dir = getenv("RUNTIME_DIRECTORY")) && *dir) {
		size_t first = strcspn(dir, ":");
		n = snprintf(buf, len, "%.*s/moed.sock", (int)first, dir);
	} else if ((dir = getenv("XDG_RUNTIME_DIR")) && *dir) {
		n = snprintf(buf, len, "%s/moed.sock", dir);
	} else {
		n = snprintf(buf, len, "/run/moed/moed.sock");
	}
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
