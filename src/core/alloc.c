/* alloc.c -- the one place the library allocates memory.
 *
 * Counting and failure injection are cheap atomics; allocation is never on
 * the per-call hot path (records go to preallocated mapped chunks). */
#include "cs_core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long live_allocs;
static atomic_long fail_after = -1;

static int
should_fail(void)
{
    long n = atomic_load_explicit(&fail_after, memory_order_relaxed);
    if (CS_LIKELY(n < 0))
        return 0;
    if (n == 0)
        return 1;
    atomic_fetch_sub(&fail_after, 1);
    return 0;
}

void *
cs__malloc(size_t n)
{
    if (should_fail())
        return NULL;
    void *p = malloc(n ? n : 1);
    if (p)
        atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
    return p;
}

void *
cs__calloc(size_t count, size_t n)
{
    if (should_fail())
        return NULL;
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p)
        atomic_fetch_add_explicit(&live_allocs, 1, memory_order_relaxed);
    return p;
}

void *
cs__realloc(void *p, size_t n)
{
    if (p == NULL)
        return cs__malloc(n);
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void
cs__free(void *p)
{
    if (p == NULL)
        return;
    atomic_fetch_sub_explicit(&live_allocs, 1, memory_order_relaxed);
    free(p);
}

char *
cs__strndup(const char *s, size_t n)
{
    if (s == NULL)
        return NULL;
    char *d = cs__malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *
cs__strdup(const char *s)
{
    return s ? cs__strndup(s, strlen(s)) : NULL;
}

long
cs_alloc_live(void)
{
    return atomic_load(&live_allocs);
}

void
cs_alloc_fail_after(long n)
{
    atomic_store(&fail_after, n);
}

void *
cs__grow(void *p, size_t n, size_t *cap, size_t size, size_t first)
{
    if (n < *cap)
        return p;
    size_t c = *cap ? *cap * 2 : first;
    void *v = cs__realloc(p, c * size);
    if (v != NULL)
        *cap = c;
    return v;
}
