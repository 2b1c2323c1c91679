/* select.c -- matching qualified names against patterns (cs_select.h). */
#include "cs_select.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

typedef struct pat {
    int kind;
    char *text;
    int dotted; /* has a dot: matched on the qualified name or its tail */
} pat;

struct cs_select {
    pat *v;
    size_t n, cap;
    size_t includes;
};

int
cs_select_new(cs_select **out)
{
    *out = cs__calloc(1, sizeof **out);
    return *out ? CS_OK : CS_ENOMEM;
}

void
cs_select_free(cs_select *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        cs__free(s->v[i].text);
    cs__free(s->v);
    cs__free(s);
}

size_t
cs_select_count(const cs_select *s)
{
    return s ? s->includes : 0;
}

static int
check(int kind, const char *p, char *why)
{
    size_t n = strlen(p);
    if (n == 0) {
        snprintf(why, 128, "an empty pattern selects nothing");
        return CS_EINVAL;
    }
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= ' ' || c == 0x7f) {
            snprintf(why, 128, "'%s': no spaces or control characters in a pattern", p);
            return CS_EINVAL;
        }
        if (c == '[')
            depth++;
        else if (c == ']' && depth > 0)
            depth--;
    }
    if (depth) {
        snprintf(why, 128, "'%s': unclosed '[' in the pattern", p);
        return CS_EINVAL;
    }
    if (p[0] == '.' || p[n - 1] == '.' || strstr(p, "..")) {
        snprintf(why, 128, "'%s': a qualified name has no empty part", p);
        return CS_EINVAL;
    }
    if (kind == CS_SEL_MODULE && strpbrk(p, "*?[")) {
        snprintf(why, 128, "'%s': a module is named exactly (use a pattern for globs)", p);
        return CS_EINVAL;
    }
    return CS_OK;
}

int
cs_select_add(cs_select *s, int kind, const char *pattern, char *why)
{
    why[0] = '\0';
    if (kind < CS_SEL_TRACE || kind > CS_SEL_EXCLUDE) {
        snprintf(why, 128, "unknown kind of pattern %d", kind);
        return CS_EINVAL;
    }
    int rc = check(kind, pattern, why);
    if (rc != CS_OK)
        return rc;
    {
        pat *v = cs__grow(s->v, s->n, &s->cap, sizeof *v, 8);
        if (v == NULL)
            return CS_ENOMEM;
        s->v = v;
    }
    pat *p = &s->v[s->n];
    p->kind = kind;
    p->text = cs__strdup(pattern);
    if (p->text == NULL)
        return CS_ENOMEM;
    p->dotted = strchr(pattern, '.') != NULL;
    s->n++;
    if (kind != CS_SEL_EXCLUDE)
        s->includes++;
    return CS_OK;
}

/* A pattern against a function: a bare name matches the last part of
 * the qualname; a dotted one the whole qualified name, or its tail after
 * a dot. */
static int
pattern_matches(const pat *p, const char *full, const char *qualname)
{
    if (!p->dotted) {
        const char *last = strrchr(qualname, '.');
        return fnmatch(p->text, last ? last + 1 : qualname, 0) == 0;
    }
    if (fnmatch(p->text, full, 0) == 0)
        return 1;
    for (const char *d = strchr(full, '.'); d; d = strchr(d + 1, '.'))
        if (fnmatch(p->text, d + 1, 0) == 0)
            return 1;
    return 0;
}

static int
module_matches(const pat *p, const char *module)
{
    size_t n = strlen(p->text);
    return strncmp(module, p->text, n) == 0 && (module[n] == '\0' || module[n] == '.');
}

int
cs_select_match(const cs_select *s, const char *module, const char *qualname)
{
    if (s == NULL || s->includes == 0)
        return 0;
    char buf[512];
    const char *full = qualname;
    if (module && *module) {
        snprintf(buf, sizeof buf, "%s.%s", module, qualname);
        full = buf;
    }
    int in = 0;
    for (size_t i = 0; i < s->n && !in; i++) {
        const pat *p = &s->v[i];
        if (p->kind == CS_SEL_TRACE)
            in = pattern_matches(p, full, qualname);
        else if (p->kind == CS_SEL_MODULE)
            in = module_matches(p, module ? module : "");
    }
    if (!in)
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        const pat *p = &s->v[i];
        if (p->kind == CS_SEL_EXCLUDE &&
            (pattern_matches(p, full, qualname) || module_matches(p, module ? module : "")))
            return 0;
    }
    return 1;
}
