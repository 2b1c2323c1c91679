/* stats.c -- statistics per function.
 *
 * One pass over the calls table. Sums are kept per function; wall times
 * are collected per function so percentiles are exact (nearest-rank). */
#include "cs_analysis.h"
#include "cs_log.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

static const char *const sort_names[] = {"total", "self",   "calls", "mean",     "max",
                                         "p95",   "cpu",    "errors", "name", "imbalance"};

int
cs_sort_parse(const char *name, cs_sort *out)
{
    *out = CS_SORT_TOTAL;
    for (size_t i = 0; i < sizeof sort_names / sizeof *sort_names; i++)
        if (strcmp(name, sort_names[i]) == 0) {
            *out = (cs_sort)i;
            return CS_OK;
        }
    return CS_EINVAL;
}

const char *
cs_sort_names(void)
{
    return "total, self, calls, mean, max, p95, cpu, errors, name, imbalance";
}

int
cs_name_matches(const char *filter, const char *name)
{
    if (filter == NULL || *filter == '\0')
        return 1;
    if (strpbrk(filter, "*?[") != NULL)
        return fnmatch(filter, name, 0) == 0;
    return strstr(name, filter) != NULL;
}

#define HIST CS_HIST_BUCKETS /* the profile table's histograms (cs_log.h) */

typedef struct acc {
    cs_fstat st;
    uint64_t *walls;
    size_t nw, cw;
    int keep;
    uint64_t *hist; /* set when the function was profiled in aggregate */
    int tree_only;  /* counted by the --all tree: no distribution */
    int cpu_known;  /* the tree measured CPU time */
    uint64_t all_ns; /* the wall time of every call, nested ones too (tree) */
} acc;

uint64_t
cs_hist_rank(const uint64_t *h, uint64_t n, double p)
{
    uint64_t k = (uint64_t)(p * (double)n + 0.999999), seen = 0;
    if (k < 1)
        k = 1;
    for (unsigned b = 0; b < HIST; b++) {
        seen += h[b];
        if (seen >= k)
            return cs_hist_mid(b);
    }
    return 0;
}

/* Merge the aggregates of the profile table (callscope run --all): rows
 * of the tree (with primitive calls, no histogram) and, from databases
 * made before it, rows with a histogram. */
static int
merge_profile(sqlite3 *db, const cs_stats_query *q, acc *a, int64_t maxid)
{
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT pr.function, pr.calls, pr.total_ns, pr.self_ns, pr.min_ns, pr.max_ns, pr.hist,"
        " IFNULL(pr.prim_calls, pr.calls), pr.cpu_ns FROM profile pr JOIN processes p"
        " ON p.id = pr.process WHERE ?1 = 0 OR p.pid = ?1";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return CS_OK; /* a database without the table: nothing profiled */
    sqlite3_bind_int64(st, 1, q->pid);
    int rc = CS_OK;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t f = sqlite3_column_int64(st, 0);
        if (f < 0 || f > maxid || !a[f].keep)
            continue;
        acc *x = &a[f];
        if (x->nw && !x->tree_only)
            continue; /* recorded call by call too (-t with --all): those count */
        x->st.calls += (uint64_t)sqlite3_column_int64(st, 1);
        x->st.prim_calls += (uint64_t)sqlite3_column_int64(st, 7);
        x->st.total_ns += (uint64_t)sqlite3_column_int64(st, 2);
        x->st.self_ns += (uint64_t)sqlite3_column_int64(st, 3);
        if (sqlite3_column_type(st, 8) != SQLITE_NULL) {
            x->st.cpu_ns += (uint64_t)sqlite3_column_int64(st, 8);
            x->st.cpu_calls += (uint64_t)sqlite3_column_int64(st, 7);
        }
        uint64_t mx = (uint64_t)sqlite3_column_int64(st, 5);
        if (mx > x->st.max_ns)
            x->st.max_ns = mx;
        if (sqlite3_column_type(st, 6) == SQLITE_NULL) {
            x->tree_only = 1;
            continue;
        }
        if (x->hist == NULL && (x->hist = cs__calloc(HIST, sizeof *x->hist)) == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        uint64_t mn = (uint64_t)sqlite3_column_int64(st, 4);
        if (mn < x->st.min_ns)
            x->st.min_ns = mn;
        const uint32_t *h = sqlite3_column_blob(st, 6);
        int bytes = sqlite3_column_bytes(st, 6);
        for (int b = 0; h && b < HIST && (size_t)(b + 1) * 4 <= (size_t)bytes; b++) {
            uint32_t v;
            memcpy(&v, (const char *)h + b * 4, 4);
            x->hist[b] += v;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* The numbers of functions counted by the --all tree, from the merged
 * tree. Launcher frames are left out unless asked for, folded in the
 * tree, so a C function that only the launcher called (exec, compile)
 * goes too. */
static int
fold_launcher(cs_store *s, const cs_stats_query *q, acc *a, int64_t maxid)
{
    for (int64_t f = 0; f <= maxid && !q->launcher; f++)
        if (a[f].keep && cs_launcher_frame(a[f].st.name))
            a[f].keep = 0;
    cs_calltree_query tq = {.pid = q->pid, .launcher = q->launcher};
    cs_calltree *t = NULL;
    int rc = cs_calltree_load(s, &tq, &t);
    if (rc != CS_OK)
        return rc;
    if (t->n == 0) {
        cs_calltree_free(t);
        return CS_OK;
    }
    for (int64_t f = 0; f <= maxid; f++) {
        acc *x = &a[f];
        if (!x->keep || !x->tree_only)
            continue;
        x->cpu_known = x->st.cpu_calls > 0;
        x->st.calls = x->st.prim_calls = x->st.total_ns = x->st.self_ns = 0;
        x->st.cpu_ns = x->st.cpu_calls = x->st.max_ns = 0;
    }
    for (size_t i = 0; i < t->n; i++) {
        const cs_ctnode *n = &t->nodes[i];
        if (n->function <= 0 || n->function > maxid)
            continue;
        acc *x = &a[n->function];
        if (!x->keep || !x->tree_only)
            continue;
        int prim = !(n->flags & CS_CT_REC_FUNC);
        x->st.calls += n->calls;
        x->st.self_ns += n->self_ns;
        x->all_ns += n->total_ns;
        if (n->max_ns > x->st.max_ns)
            x->st.max_ns = n->max_ns;
        if (prim) {
            x->st.prim_calls += n->calls;
            x->st.total_ns += n->total_ns;
            x->st.cpu_ns += n->cpu_ns;
            x->st.cpu_calls += x->cpu_known ? n->calls : 0;
        }
    }
    cs_calltree_free(t);
    return CS_OK;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int
key_cmp(const void *a, const void *b, void *ctx)
{
    const cs_fstat *x = a, *y = b;
    double kx = 0, ky = 0;
    switch (*(const cs_sort *)ctx) {
    case CS_SORT_NAME:
        return strcmp(x->name, y->name);
    case CS_SORT_TOTAL:
        kx = (double)x->total_ns, ky = (double)y->total_ns;
        break;
    case CS_SORT_SELF:
        kx = (double)x->self_ns, ky = (double)y->self_ns;
        break;
    case CS_SORT_CALLS:
        kx = (double)x->calls, ky = (double)y->calls;
        break;
    case CS_SORT_MEAN:
        kx = x->mean_ns, ky = y->mean_ns;
        break;
    case CS_SORT_MAX:
        kx = (double)x->max_ns, ky = (double)y->max_ns;
        break;
    case CS_SORT_P95:
        kx = (double)x->p95_ns, ky = (double)y->p95_ns;
        break;
    case CS_SORT_CPU:
        kx = (double)x->cpu_ns, ky = (double)y->cpu_ns;
        break;
    case CS_SORT_ERRORS:
        kx = (double)x->errors, ky = (double)y->errors;
        break;
    case CS_SORT_IMBALANCE:
        kx = (double)x->total_ns, ky = (double)y->total_ns;
        break;
    }
    if (kx != ky)
        return kx > ky ? -1 : 1; /* largest first */
    return strcmp(x->name, y->name);
}

/* The 0-based index of the nearest-rank p-quantile of n values. */
static size_t
nearest_rank(size_t n, double p)
{
    size_t k = (size_t)(p * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return k - 1;
}

static void
swap_u64(uint64_t *a, uint64_t *b)
{
    uint64_t t = *a;
    *a = *b;
    *b = t;
}

/* Put the k-th smallest of v[lo, hi) at v[k], the smaller ones before it
 * and the larger ones after (quickselect, median-of-three pivot). Linear
 * on average; after too many rounds the rest is sorted, so it stays
 * O(n log n) on inputs made to defeat the pivot. */
static void
select_k(uint64_t *v, size_t lo, size_t hi, size_t k)
{
    unsigned rounds = 0, limit = 64;
    while (hi - lo > 16) {
        if (++rounds > limit) {
            qsort(v + lo, hi - lo, sizeof *v, cmp_u64);
            return;
        }
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo])
            swap_u64(&v[mid], &v[lo]);
        if (v[hi - 1] < v[lo])
            swap_u64(&v[hi - 1], &v[lo]);
        if (v[hi - 1] < v[mid])
            swap_u64(&v[hi - 1], &v[mid]);
        uint64_t pivot = v[mid];
        /* Hoare partition: v[lo, j] <= pivot <= v[j+1, hi) */
        size_t i = lo - 1, j = hi;
        for (;;) {
            do
                i++;
            while (v[i] < pivot);
            do
                j--;
            while (v[j] > pivot);
            if (i >= j)
                break;
            swap_u64(&v[i], &v[j]);
        }
        if (k <= j)
            hi = j + 1;
        else
            lo = j + 1;
    }
    /* a short range: insertion sort */
    for (size_t i = lo + 1; i < hi; i++)
        for (size_t j = i; j > lo && v[j - 1] > v[j]; j--)
            swap_u64(&v[j - 1], &v[j]);
}

static void
free_accs(acc *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cs__free(a[i].walls);
        cs__free(a[i].hist);
        cs__free(a[i].st.name);
        cs__free(a[i].st.kind);
        cs__free(a[i].st.file);
    }
    cs__free(a);
}

int
cs_stats(cs_store *s, const cs_stats_query *q, cs_fstat **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3 *db = cs_store_db(s);
    sqlite3_stmt *st = NULL;
    acc *a = NULL;
    size_t na = 0;
    int rc = CS_OK;
    int64_t maxid = 0;
    /* functions: dense ids, so an array indexed by id */
    if (sqlite3_prepare_v2(db, "SELECT IFNULL(MAX(id), 0) FROM functions", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        rc = CS_EDB;
        goto out;
    }
    maxid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    na = (size_t)maxid + 1;
    a = cs__calloc(na, sizeof *a);
    if (a == NULL) {
        rc = CS_ENOMEM;
        goto out;
    }
    if (sqlite3_prepare_v2(db,
                           "SELECT f.id, n.name, f.kind, f.file, f.line"
                           " FROM functions f JOIN function_names n ON n.id = f.id",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = CS_EDB;
        goto out;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if (id < 0 || id > maxid)
            continue;
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (name == NULL || !cs_name_matches(q->filter, name))
            continue;
        acc *x = &a[id];
        x->keep = 1;
        x->st.id = id;
        x->st.name = cs__strdup(name);
        /* NULL text (a database not written by an ingest) reads as "" */
        const char *kind = (const char *)sqlite3_column_text(st, 2);
        const char *file = (const char *)sqlite3_column_text(st, 3);
        x->st.kind = cs__strdup(kind ? kind : "");
        x->st.file = cs__strdup(file ? file : "");
        x->st.line = sqlite3_column_int64(st, 4);
        x->st.min_ns = UINT64_MAX;
        if (!x->st.name || !x->st.kind || !x->st.file) {
            rc = CS_ENOMEM;
            goto out;
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    const char *sql = q->pid ? "SELECT c.function, c.wall_ns, c.self_ns, c.cpu_ns, c.status,"
                               " c.recursive FROM calls c JOIN threads t ON t.id = c.thread"
                               " JOIN processes p ON p.id = t.process WHERE p.pid = ?"
                             : "SELECT function, wall_ns, self_ns, cpu_ns, status, recursive"
                               " FROM calls";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = CS_EDB;
        goto out;
    }
    if (q->pid)
        sqlite3_bind_int64(st, 1, q->pid);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t f = sqlite3_column_int64(st, 0);
        if (f < 0 || f > maxid || !a[f].keep)
            continue;
        acc *x = &a[f];
        x->st.calls++;
        const unsigned char *status = sqlite3_column_text(st, 4);
        if (status && status[0] == 'u') {
            x->st.unfinished++;
            continue;
        }
        if (status && status[0] == 'r')
            x->st.errors++;
        uint64_t wall = (uint64_t)sqlite3_column_int64(st, 1);
        /* a recursive call's time is in its outermost call's already */
        int prim = sqlite3_column_int(st, 5) == 0;
        x->st.prim_calls += (uint64_t)prim;
        if (prim)
            x->st.total_ns += wall;
        x->st.self_ns += (uint64_t)sqlite3_column_int64(st, 2);
        if (prim && sqlite3_column_type(st, 3) != SQLITE_NULL) {
            x->st.cpu_ns += (uint64_t)sqlite3_column_int64(st, 3);
            x->st.cpu_calls++;
        }
        uint64_t *w = cs__grow(x->walls, x->nw, &x->cw, sizeof *w, 16);
        if (w == NULL) {
            rc = CS_ENOMEM;
            goto out;
        }
        x->walls = w;
        x->walls[x->nw++] = wall;
    }
    if (src != SQLITE_DONE) {
        rc = src == SQLITE_CORRUPT || src == SQLITE_NOTADB ? CS_ENOTDB : CS_EDB;
        goto out;
    }
    if ((rc = merge_profile(db, q, a, maxid)) != CS_OK)
        goto out;
    if ((rc = fold_launcher(s, q, a, maxid)) != CS_OK)
        goto out;
    size_t kept = 0;
    for (size_t i = 0; i < na; i++)
        if (a[i].keep && a[i].st.calls > 0)
            kept++;
    cs_fstat *v = cs__calloc(kept ? kept : 1, sizeof *v);
    if (v == NULL) {
        rc = CS_ENOMEM;
        goto out;
    }
    size_t j = 0;
    for (size_t i = 0; i < na; i++) {
        acc *x = &a[i];
        if (!x->keep || x->st.calls == 0)
            continue;
        for (size_t k = 0; k < x->nw; k++) {
            if (x->walls[k] < x->st.min_ns)
                x->st.min_ns = x->walls[k];
            if (x->walls[k] > x->st.max_ns)
                x->st.max_ns = x->walls[k];
        }
        if (x->hist) {
            /* profiled in aggregate: percentiles from the histogram, to a
             * quarter of a power of two */
            uint64_t count = 0;
            for (size_t k = 0; k < x->nw; k++)
                x->hist[cs_hist_bucket(x->walls[k])]++;
            for (unsigned b = 0; b < HIST; b++)
                count += x->hist[b];
            x->st.p50_ns = cs_hist_rank(x->hist, count, 0.50);
            x->st.p95_ns = cs_hist_rank(x->hist, count, 0.95);
            /* a bucket's middle may lie outside what was seen */
            if (x->st.min_ns != UINT64_MAX) {
                uint64_t *ps[2] = {&x->st.p50_ns, &x->st.p95_ns};
                for (int k = 0; k < 2; k++) {
                    if (*ps[k] < x->st.min_ns)
                        *ps[k] = x->st.min_ns;
                    if (*ps[k] > x->st.max_ns)
                        *ps[k] = x->st.max_ns;
                }
            }
            x->st.mean_ns = count ? (double)x->st.total_ns / (double)count : 0;
        } else if (x->nw) {
            /* exact percentiles by selection, not by sorting every call */
            size_t k50 = nearest_rank(x->nw, 0.50), k95 = nearest_rank(x->nw, 0.95);
            select_k(x->walls, 0, x->nw, k50);
            select_k(x->walls, k50, x->nw, k95);
            x->st.p50_ns = x->walls[k50];
            x->st.p95_ns = x->walls[k95];
            double sum = 0; /* every call's own wall time, nested ones too */
            for (size_t k = 0; k < x->nw; k++)
                sum += (double)x->walls[k];
            x->st.mean_ns = sum / (double)x->nw;
        }
        if (x->st.min_ns == UINT64_MAX)
            x->st.min_ns = 0;
        x->st.quantiles = !x->tree_only || x->hist || x->nw;
        if (x->tree_only && !x->hist && !x->nw) {
            x->st.p50_ns = x->st.p95_ns = 0;
            x->st.mean_ns = x->st.calls ? (double)x->all_ns / (double)x->st.calls : 0;
        }
        v[j++] = x->st;
        memset(&x->st, 0, sizeof x->st); /* strings moved */
    }
    cs_sort sort = q->sort;
    qsort_r(v, kept, sizeof *v, key_cmp, &sort);
    if (q->limit && kept > q->limit) {
        for (size_t i = q->limit; i < kept; i++) {
            cs__free(v[i].name);
            cs__free(v[i].kind);
            cs__free(v[i].file);
        }
        kept = q->limit;
    }
    *out = v;
    *n = kept;
out:
    sqlite3_finalize(st);
    free_accs(a, na);
    return rc;
}

void
cs_stats_free(cs_fstat *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        cs__free(v[i].name);
        cs__free(v[i].kind);
        cs__free(v[i].file);
    }
    cs__free(v);
}
