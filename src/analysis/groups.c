/* groups.c -- statistics of each function across ranks or processes: how
 * the work of a parallel run is spread, and how unevenly. */
#include "cs_analysis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
cs_group_parse(const char *name, cs_group_by *out)
{
    *out = CS_BY_RANK;
    if (strcmp(name, "rank") == 0)
        return CS_OK;
    if (strcmp(name, "process") == 0) {
        *out = CS_BY_PROCESS;
        return CS_OK;
    }
    return CS_EINVAL;
}

void
cs_groups_free(cs_groups *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->n; i++)
        cs__free(g->v[i].label);
    for (size_t i = 0; i < g->nf; i++) {
        cs__free(g->f[i].name);
        cs__free(g->f[i].group_calls);
        cs__free(g->f[i].group_total);
    }
    cs__free(g->v);
    cs__free(g->f);
    memset(g, 0, sizeof *g);
}

static int
load_groups(sqlite3 *db, cs_group_by by, cs_groups *g)
{
    const char *sql = by == CS_BY_RANK
                          ? "SELECT DISTINCT IFNULL(rank, -1), '' FROM processes ORDER BY 1"
                          : "SELECT id, pid || '@' || host FROM processes ORDER BY start_wall_ns, id";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return CS_EDB;
    size_t cap = 0;
    int rc = CS_OK;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (g->n == cap) {
            cap = cap ? cap * 2 : 16;
            cs_group *v = cs__realloc(g->v, cap * sizeof *v);
            if (v == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            g->v = v;
        }
        cs_group *x = &g->v[g->n];
        x->key = sqlite3_column_int64(st, 0);
        char buf[32];
        const char *label = (const char *)sqlite3_column_text(st, 1);
        if (by == CS_BY_RANK) {
            if (x->key < 0)
                snprintf(buf, sizeof buf, "none");
            else
                snprintf(buf, sizeof buf, "%lld", (long long)x->key);
            label = buf;
        }
        x->label = cs__strdup(label ? label : "");
        if (x->label == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        g->n++;
    }
    sqlite3_finalize(st);
    return rc;
}

static size_t
group_index(const cs_groups *g, int64_t key)
{
    size_t lo = 0, hi = g->n; /* keys are sorted for ranks; linear for processes */
    for (size_t i = lo; i < hi; i++)
        if (g->v[i].key == key)
            return i;
    return (size_t)-1;
}

static int
cmp_gstat(const void *a, const void *b, void *ctx)
{
    const cs_gstat *x = a, *y = b;
    cs_sort sort = *(const cs_sort *)ctx;
    double kx, ky;
    switch (sort) {
    case CS_SORT_NAME:
        return strcmp(x->name, y->name);
    case CS_SORT_CALLS:
        kx = (double)x->calls, ky = (double)y->calls;
        break;
    case CS_SORT_IMBALANCE:
        kx = x->imbalance, ky = y->imbalance;
        break;
    case CS_SORT_MAX:
        kx = x->total_max, ky = y->total_max;
        break;
    default:
        kx = x->total_mean, ky = y->total_mean;
        break;
    }
    if (kx != ky)
        return kx > ky ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void
summarize(cs_gstat *f, size_t n)
{
    f->calls_min = f->total_min = -1;
    double sc = 0, st = 0;
    for (size_t i = 0; i < n; i++) {
        double c = (double)f->group_calls[i], t = (double)f->group_total[i];
        if (f->group_calls[i])
            f->present++;
        sc += c;
        st += t;
        if (f->calls_min < 0 || c < f->calls_min)
            f->calls_min = c;
        if (f->total_min < 0 || t < f->total_min)
            f->total_min = t;
        if (c > f->calls_max)
            f->calls_max = c;
        if (t > f->total_max)
            f->total_max = t;
    }
    f->calls_mean = n ? sc / (double)n : 0;
    f->total_mean = n ? st / (double)n : 0;
    f->imbalance = f->total_mean > 0 ? f->total_max / f->total_mean : 0;
    if (f->calls_min < 0)
        f->calls_min = 0;
    if (f->total_min < 0)
        f->total_min = 0;
}

int
cs_stats_by(cs_store *s, const cs_stats_query *q, cs_group_by by, cs_groups *out)
{
    memset(out, 0, sizeof *out);
    sqlite3 *db = cs_store_db(s);
    int rc = load_groups(db, by, out);
    if (rc != CS_OK)
        goto fail;
    const char *sql =
        by == CS_BY_RANK
            ? "SELECT c.function, IFNULL(p.rank, -1), count(*),"
              " total(CASE WHEN c.status != 'unfinished' THEN c.wall_ns END),"
              " CASE WHEN f.module = '' THEN f.qualname ELSE f.module || '.' || f.qualname END"
              " FROM calls c JOIN threads t ON t.id = c.thread JOIN processes p"
              " ON p.id = t.process JOIN functions f ON f.id = c.function GROUP BY 1, 2"
              " ORDER BY 1"
            : "SELECT c.function, p.id, count(*),"
              " total(CASE WHEN c.status != 'unfinished' THEN c.wall_ns END),"
              " CASE WHEN f.module = '' THEN f.qualname ELSE f.module || '.' || f.qualname END"
              " FROM calls c JOIN threads t ON t.id = c.thread JOIN processes p"
              " ON p.id = t.process JOIN functions f ON f.id = c.function GROUP BY 1, 2"
              " ORDER BY 1";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = CS_EDB;
        goto fail;
    }
    size_t cap = 0;
    int src;
    cs_gstat *cur = NULL;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t func = sqlite3_column_int64(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 4);
        if (name == NULL || !cs_name_matches(q->filter, name))
            continue;
        if (cur == NULL || cur->id != func) {
            if (out->nf == cap) {
                cap = cap ? cap * 2 : 32;
                cs_gstat *v = cs__realloc(out->f, cap * sizeof *v);
                if (v == NULL) {
                    rc = CS_ENOMEM;
                    break;
                }
                out->f = v;
            }
            cur = &out->f[out->nf++];
            memset(cur, 0, sizeof *cur);
            cur->id = func;
            cur->name = cs__strdup(name);
            cur->group_calls = cs__calloc(out->n ? out->n : 1, sizeof *cur->group_calls);
            cur->group_total = cs__calloc(out->n ? out->n : 1, sizeof *cur->group_total);
            if (!cur->name || !cur->group_calls || !cur->group_total) {
                rc = CS_ENOMEM;
                break;
            }
        }
        size_t gi = group_index(out, sqlite3_column_int64(st, 1));
        if (gi == (size_t)-1)
            continue;
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 2);
        cur->calls += n;
        cur->group_calls[gi] += n;
        cur->group_total[gi] += (uint64_t)sqlite3_column_double(st, 3);
    }
    sqlite3_finalize(st);
    if (rc != CS_OK)
        goto fail;
    for (size_t i = 0; i < out->nf; i++)
        summarize(&out->f[i], out->n);
    cs_sort sort = q->sort;
    if (out->nf)
        qsort_r(out->f, out->nf, sizeof *out->f, cmp_gstat, &sort);
    if (q->limit && out->nf > q->limit) {
        for (size_t i = q->limit; i < out->nf; i++) {
            cs__free(out->f[i].name);
            cs__free(out->f[i].group_calls);
            cs__free(out->f[i].group_total);
        }
        out->nf = q->limit;
    }
    return CS_OK;
fail:
    cs_groups_free(out);
    return rc;
}
