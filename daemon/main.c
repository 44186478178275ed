/* SPDX-License-Identifier: MIT */
/* moed(8): the daemon's entry point; everything else is in libmoedd so tests link it. */
#include "config.h"

#include "daemon.h"

int main(int argc, char **argv)
{
	struct moed_options opt;
	struct moed_daemon d;

	int r = moed_options_parse(&opt, argc, argv);
	if (r)
		return r > 0 ? 0 : 2;
	r = moed_daemon_start(&d, &opt);
	if (r == 0)
		r = moed_daemon_run(&d);
	moed_daemon_stop(&d);
	return r == 0 ? 0 : 1;
}
