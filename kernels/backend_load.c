/* SPDX-License-Identifier: MIT */
/*
 * Finding a backend by name. The CPU backend is built in; the GPU backend is a module
 * (moed-hip.so, in MOED_MODULE_DIR or $MOED_MODULE_DIR) opened only when asked for, so
 * that the daemon links no GPU runtime.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

#ifndef MOED_MODULE_DIR
#define MOED_MODULE_DIR "/usr/local/lib/moed"
#endif

static const struct moed_backend_ops *load_module(const char *file, const char *symbol,
						  struct moed_error *err)
{
	const char *dir = getenv("MOED_MODULE_DIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : MOED_MODULE_DIR, file);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		moed_error_set(err, -ENOENT, "cannot load %s: %s", path, dlerror());
		return NULL;
	}
	const struct moed_backend_ops *ops = dlsym(h, symbol);
	if (!ops) {
		moed_error_set(err, -ENOENT, "%s has no %s", path, symbol);
		dlclose(h);
		return NULL;
	}
	return ops; /* stays loaded for the life of the process */
}

const struct moed_backend_ops *moed_backend_find(const char *name, struct moed_error *err)
{
	if (!strcmp(name, "cpu"))
		return &moed_cpu_backend;
	if (!strcmp(name, "hip") || !strcmp(name, "auto")) {
		struct moed_error why = { "" };
		const struct moed_backend_ops *ops = load_module("moed-hip.so", "moed_hip_backend", &why);
		if (ops && ops->probe(&why) == 0)
			return ops;
		if (!strcmp(name, "auto"))
			return &moed_cpu_backend; /* no GPU here: the CPU serves */
		moed_error_set(err, -ENODEV, "GPU backend unavailable: %s", why.msg);
		return NULL;
	}
	moed_error_set(err, -EINVAL, "unknown backend '%s'", name);
	return NULL;
}
