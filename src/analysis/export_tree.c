/* export_tree.c -- the call tree in the formats flame graph tools read:
 * collapsed stacks (Brendan Gregg's flamegraph.pl, speedscope, inferno),
 * and, for runs profiled with --all (which keep no per-call timeline),
 * speedscope's sampled profile and Chrome trace events laid out as a flame
 * chart. The tree is cs_calltree_load's: threads and processes merged by
 * path, launcher frames folded. */
#include "cs_analysis.h"

#include <stdlib.h>
#include <string.h>

/* The path of node `i`, root first, into `path` (at most `cap`); its
 * length. */
static size_t
path_of(const cs_calltree *t, int32_t i, int32_t *path, size_t cap)
{
    size_t n = 0;
    for (int32_t k = i; k >= 0 && n < cap; k = t->nodes[k].parent)
        path[n++] = k;
    for (size_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
        int32_t x = path[a];
        path[a] = path[b];
        path[b] = x;
    }
    return n;
}

#define MAX_DEPTH 4096

static int
load(cs_store *s, cs_calltree **t)
{
    cs_calltree_query q = {.calls = 1};
    int rc = cs_calltree_load(s, &q, t);
    if (rc != CS_OK)
        cs__export_seterr("run.db", cs_calltree_last_error());
    return rc;
}

/* One line per path with self time: "a;b;c N", N its self time in
 * microseconds (rounded; paths under half a microsecond are left out). A
 * ';' inside a name would split it, so it is written as ':'. */
int
cs__export_collapsed(cs_store *s, FILE *f, uint64_t *rows)
{
    cs_calltree *t = NULL;
    int rc = load(s, &t);
    if (rc != CS_OK)
        return rc;
    int32_t *path = cs__malloc(MAX_DEPTH * sizeof *path);
    if (path == NULL) {
        cs_calltree_free(t);
        return CS_ENOMEM;
    }
    for (size_t i = 0; i < t->n; i++) {
        uint64_t us = (t->nodes[i].self_ns + 500) / 1000;
        if (us == 0)
            continue;
        size_t n = path_of(t, (int32_t)i, path, MAX_DEPTH);
        for (size_t k = 0; k < n; k++) {
            if (k)
                fputc(';', f);
            for (const char *c = cs_calltree_name(t, &t->nodes[path[k]]); *c; c++)
                fputc(*c == ';' ? ':' : *c == '\n' ? ' ' : *c, f);
        }
        fprintf(f, " %llu\n", (unsigned long long)us);
        (*rows)++;
    }
    cs__free(path);
    cs_calltree_free(t);
    return CS_OK;
}

/* speedscope's sampled profile: one sample per path with self time,
 * weighted by it in nanoseconds. */
int
cs__export_speedscope_tree(cs_store *s, FILE *f, uint64_t *rows)
{
    cs_calltree *t = NULL;
    int rc = load(s, &t);
    if (rc != CS_OK)
        return rc;
    int32_t *path = cs__malloc(MAX_DEPTH * sizeof *path);
    int64_t *frame = cs__calloc(t->nfuncs ? t->nfuncs : 1, sizeof *frame);
    if (path == NULL || frame == NULL) {
        cs__free(path);
        cs__free(frame);
        cs_calltree_free(t);
        return CS_ENOMEM;
    }
    fputs("{\"$schema\": \"https://www.speedscope.app/file-format-schema.json\","
          " \"exporter\": \"callscope\", \"name\": \"call tree\", \"shared\": {\"frames\": [",
          f);
    int64_t nframes = 0;
    for (size_t i = 0; i < t->n; i++) {
        int64_t fn = t->nodes[i].function;
        if (fn <= 0 || (size_t)fn >= t->nfuncs || frame[fn])
            continue;
        frame[fn] = ++nframes; /* 1-based here; written 0-based */
        fputs(nframes > 1 ? ", {\"name\": " : "{\"name\": ", f);
        cs__json_fputs(f, cs_calltree_name(t, &t->nodes[i]));
        if (t->funcs[fn].file && t->funcs[fn].file[0]) {
            fputs(", \"file\": ", f);
            cs__json_fputs(f, t->funcs[fn].file);
            fprintf(f, ", \"line\": %lld", (long long)t->funcs[fn].line);
        }
        fputc('}', f);
    }
    fprintf(f, "]}, \"profiles\": [{\"type\": \"sampled\", \"name\": \"call tree\","
               " \"unit\": \"nanoseconds\", \"startValue\": 0, \"endValue\": %llu,"
               " \"samples\": [",
            (unsigned long long)t->total_ns);
    int first = 1;
    for (size_t i = 0; i < t->n; i++) {
        if (t->nodes[i].self_ns == 0)
            continue;
        size_t n = path_of(t, (int32_t)i, path, MAX_DEPTH);
        fputs(first ? "[" : ", [", f);
        first = 0;
        int firstf = 1;
        for (size_t k = 0; k < n; k++) {
            int64_t fn = t->nodes[path[k]].function;
            if (fn <= 0 || (size_t)fn >= t->nfuncs)
                continue;
            fprintf(f, firstf ? "%lld" : ", %lld", (long long)(frame[fn] - 1));
            firstf = 0;
        }
        fputc(']', f);
        (*rows)++;
    }
    fputs("], \"weights\": [", f);
    first = 1;
    for (size_t i = 0; i < t->n; i++) {
        if (t->nodes[i].self_ns == 0)
            continue;
        fprintf(f, first ? "%llu" : ", %llu", (unsigned long long)t->nodes[i].self_ns);
        first = 0;
    }
    fputs("]}]}\n", f);
    cs__free(path);
    cs__free(frame);
    cs_calltree_free(t);
    return CS_OK;
}

/* Chrome trace events of the tree: a flame chart, each path as long as
 * its total time, its children side by side inside it, largest first. A
 * tree has no timeline: times are offsets into the chart, not moments. */
static void
chart(const cs_calltree *t, int32_t i, double at, FILE *f, int *first, uint64_t *rows)
{
    const cs_ctnode *x = &t->nodes[i];
    fputs(*first ? "" : ",\n", f);
    *first = 0;
    fputs("{\"name\": ", f);
    cs__json_fputs(f, cs_calltree_name(t, x));
    fprintf(f, ", \"cat\": \"call tree\", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f,"
               " \"pid\": 1, \"tid\": 1, \"args\": {\"calls\": %llu, \"self_ns\": %llu}}",
            at, (double)x->total_ns / 1e3, (unsigned long long)x->calls,
            (unsigned long long)x->self_ns);
    (*rows)++;
    for (int32_t c = x->child; c >= 0; c = t->nodes[c].sibling) {
        chart(t, c, at, f, first, rows);
        at += (double)t->nodes[c].total_ns / 1e3;
    }
}

int
cs__export_chrome_tree(cs_store *s, FILE *f, uint64_t *rows)
{
    cs_calltree *t = NULL;
    int rc = load(s, &t);
    if (rc != CS_OK)
        return rc;
    fputs("{\"displayTimeUnit\": \"ns\", \"traceEvents\": [\n"
          "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": 0,"
          " \"args\": {\"name\": \"call tree (every thread and process, merged by path)\"}}",
          f);
    int first = 0;
    double at = 0;
    for (int32_t i = t->top; i >= 0; i = t->nodes[i].sibling) {
        chart(t, i, at, f, &first, rows);
        at += (double)t->nodes[i].total_ns / 1e3;
    }
    fputs("\n]}\n", f);
    cs_calltree_free(t);
    return CS_OK;
}
