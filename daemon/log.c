/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static int max_level = MOED_LOG_INFO;

void moed_log_set_level(int level)
{
	max_level = level;
}

int moed_log_level_from_name(const char *name)
{
	static const struct {
		const char *name;
		int level;
	} names[] = { { "error", MOED_LOG_ERR }, { "warning", MOED_LOG_WARN },
		      { "info", MOED_LOG_INFO }, { "debug", MOED_LOG_DEBUG } };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i].name))
			return names[i].level;
	return -1;
}

void moed_log(int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* Under systemd (JOURNAL_STREAM set) a "<N>" prefix carries the priority. */
	if (getenv("JOURNAL_STREAM"))
		fprintf(stderr, "<%d>%s\n", level, line);
	else
		fprintf(stderr, "moed: %s\n", line);
}
