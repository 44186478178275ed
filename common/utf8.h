/* SPDX-License-Identifier: MIT */
#ifndef MOED_COMMON_UTF8_H
#define MOED_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
 * NUL bytes are rejected too: keys and strings travel with explicit lengths and are
 * handed on as C strings.
 */
bool moed_utf8_valid(const char *s, size_t len);

#endif
