/* SPDX-License-Identifier: MIT */
#ifndef MOED_LIBCLIENT_EXPORT_H
#define MOED_LIBCLIENT_EXPORT_H

/* Built with -fvisibility=hidden; libmoed.map names the same symbols. */
#define MOED_EXPORT __attribute__((visibility("default")))

#endif
