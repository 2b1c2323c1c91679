/*
 * cs_select.h -- the contract of selection: which functions to record when
 * no decorator says so. Patterns name functions by their qualified name,
 * module.Class.method, with glob syntax (* ? [...]); whole modules can be
 * included, and patterns excluded.
 *
 *   "mypkg.solver.*"        every function under mypkg.solver
 *   "JSONDecoder.raw_decode" a dotted tail: matches any module's
 *   "foo"                   a bare name: the function foo in any module
 *   module "mypkg"          mypkg and its submodules
 *   exclude "mypkg.vendor.*"
 *
 * A function is selected when a pattern or a module includes it and no
 * exclusion matches it. Nothing here includes Python.h.
 */
#ifndef CS_SELECT_H
#define CS_SELECT_H

#include "cs_core.h"

typedef struct cs_select cs_select;

enum cs_sel_kind { CS_SEL_TRACE = 0, CS_SEL_MODULE = 1, CS_SEL_EXCLUDE = 2 };

/* A new, empty selection. Free with cs_select_free() (NULL is a no-op). */
CS_EXPORT int cs_select_new(cs_select **out /* OUT */);
CS_EXPORT void cs_select_free(cs_select *s);

/* Add a pattern of `kind`. A bad pattern is CS_EINVAL, with the reason
 * written into `why` (at least 128 bytes) and nothing added. */
CS_EXPORT int cs_select_add(cs_select *s, int kind, const char *pattern, char *why);

/* 1 if the function `qualname` of `module` is selected. `module` may be
 * "" (then the qualified name is the qualname alone). */
CS_EXPORT int cs_select_match(const cs_select *s, const char *module, const char *qualname);

/* Number of inclusions (patterns and modules): 0 selects nothing. */
CS_EXPORT size_t cs_select_count(const cs_select *s);

#endif
