/* report.c -- `callscope report`: one self-contained HTML file with the
 * views of a run, its SVG drawn here. Nothing loads from elsewhere: the
 * styles and the little script (sorting, filtering, zooming) are inline.
 *
 * One pass over the calls gathers everything. The timeline is drawn at a
 * fixed level of detail -- per thread, per depth, a column of pixels holds
 * the longest call that covers it -- so its size does not grow with the
 * number of calls. Percentiles come from per-function histograms of 4
 * buckets per power of two (as the profile table's). */
#include "cs_analysis.h"
#include "cs_log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLS 1000     /* timeline columns */
#define DEPTHS 8      /* timeline rows per thread; deeper calls share the last */
#define MAX_LANES 64  /* threads drawn; the busiest */
#define TREE_MAX_DEPTH 24

static _Thread_local char errbuf[512];

const char *
cs_report_last_error(void)
{
    return errbuf;
}

/* ---- output helpers ------------------------------------------------------------ */

static void
esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *
fmt_ns(double ns, char *b, size_t n)
{
    return cs_fmt_ns(ns < 0 ? 0 : (uint64_t)ns, b, n);
}

/* A colour per function: a hue from its id. */
static void
colour(FILE *f, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    fprintf(f, "hsl(%u,55%%,%u%%)", (unsigned)(h >> 40) % 360, 45 + (unsigned)(h >> 20) % 20);
}

/* ---- per function ------------------------------------------------------------------- */

typedef struct fn {
    int64_t id;
    char *name;
    int keep;
    uint64_t calls, errors, unfinished, total, self, cpu, cpu_calls, min, max;
    int64_t rss_sum;
    uint64_t rss_calls;
    uint64_t hist[CS_HIST_BUCKETS];
} fn;

/* ---- the call tree --------------------------------------------------------------------- */

typedef struct tnode {
    int64_t func;
    int32_t parent, first_child, next;
    uint64_t calls, total, self;
} tnode;

typedef struct tree {
    tnode *v;
    size_t n, cap;
    int32_t *slots; /* hash (parent, func) -> node */
    size_t scap;
} tree;

static int32_t
tree_node(tree *t, int32_t parent, int64_t func)
{
    if (t->n * 2 >= t->scap) {
        size_t cap = t->scap ? t->scap * 2 : 1024;
        int32_t *s = cs__malloc(cap * sizeof *s);
        if (s == NULL)
            return -1;
        memset(s, 0xff, cap * sizeof *s);
        for (size_t i = 0; i < t->n; i++) {
            uint64_t h = ((uint64_t)(uint32_t)t->v[i].parent * 0x9E3779B97F4A7C15ull) ^
                         ((uint64_t)t->v[i].func * 0xC2B2AE3D27D4EB4Full);
            size_t j = (size_t)(h >> 17) & (cap - 1);
            while (s[j] >= 0)
                j = (j + 1) & (cap - 1);
            s[j] = (int32_t)i;
        }
        cs__free(t->slots);
        t->slots = s;
        t->scap = cap;
    }
    uint64_t h = ((uint64_t)(uint32_t)parent * 0x9E3779B97F4A7C15ull) ^
                 ((uint64_t)func * 0xC2B2AE3D27D4EB4Full);
    size_t j = (size_t)(h >> 17) & (t->scap - 1);
    while (t->slots[j] >= 0) {
        tnode *x = &t->v[t->slots[j]];
        if (x->parent == parent && x->func == func)
            return t->slots[j];
        j = (j + 1) & (t->scap - 1);
    }
    {
        tnode *v = cs__grow(t->v, t->n, &t->cap, sizeof *v, 1024);
        if (v == NULL)
            return -1;
        t->v = v;
    }
    int32_t id = (int32_t)t->n++;
    t->v[id] = (tnode){.func = func, .parent = parent, .first_child = -1, .next = -1};
    t->slots[j] = id;
    if (parent >= 0) {
        t->v[id].next = t->v[parent].first_child;
        t->v[parent].first_child = id;
    }
    return id;
}

/* ---- threads (timeline lanes) ---------------------------------------------------------------- */

typedef struct frame {
    int64_t end;
    int32_t node;
} frame;

typedef struct lane {
    int64_t thread;
    char label[160];
    uint64_t busy; /* time at depth 0 */
    frame *stack;
    size_t depth, cap;
    int32_t cell_fid[DEPTHS][COLS]; /* index into fns, -1 empty */
    int64_t cell_dur[DEPTHS][COLS];
} lane;

typedef struct report {
    cs_store *s;
    sqlite3 *db;
    const cs_report_opts *o;
    fn *fns;
    size_t nfns;
    int64_t maxid;
    int32_t *fidx; /* function id -> index in fns */
    lane **lanes;
    size_t nlanes;
    tree tr;
    int64_t t0, t1; /* the window, wall ns */
    uint64_t calls;
} report;

static lane *
lane_of(report *r, int64_t thread)
{
    for (size_t i = r->nlanes; i-- > 0;)
        if (r->lanes[i]->thread == thread)
            return r->lanes[i];
    lane **v = cs__realloc(r->lanes, (r->nlanes + 1) * sizeof *v);
    if (v == NULL)
        return NULL;
    r->lanes = v;
    lane *l = cs__calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->thread = thread;
    memset(l->cell_fid, 0xff, sizeof l->cell_fid);
    r->lanes[r->nlanes++] = l;
    return l;
}

static void legacy_profile(report *r);

static int
gather(report *r)
{
    sqlite3 *db = r->db;
    sqlite3_stmt *st = NULL;
    /* functions */
    if (sqlite3_prepare_v2(db,
                           "SELECT id, name FROM function_names ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_ENOTDB;
    while (sqlite3_step(st) == SQLITE_ROW) {
        fn *v = cs__realloc(r->fns, (r->nfns + 1) * sizeof *v);
        if (v == NULL) {
            sqlite3_finalize(st);
            return CS_ENOMEM;
        }
        r->fns = v;
        fn *x = &r->fns[r->nfns++];
        memset(x, 0, sizeof *x);
        x->id = sqlite3_column_int64(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        x->name = cs__strdup(name ? name : "?");
        x->min = UINT64_MAX;
        x->keep = r->o->launcher || !cs_launcher_frame(x->name);
        if (r->o->nfunctions && x->keep) {
            x->keep = 0;
            for (size_t i = 0; i < r->o->nfunctions; i++)
                if (cs_name_matches(r->o->functions[i], x->name))
                    x->keep = 1;
        }
        if (x->id > r->maxid)
            r->maxid = x->id;
    }
    sqlite3_finalize(st);
    r->fidx = cs__malloc((size_t)(r->maxid + 1) * sizeof *r->fidx);
    if (r->fidx == NULL)
        return CS_ENOMEM;
    memset(r->fidx, 0xff, (size_t)(r->maxid + 1) * sizeof *r->fidx);
    for (size_t i = 0; i < r->nfns; i++)
        r->fidx[r->fns[i].id] = (int32_t)i;
    /* the window */
    if (sqlite3_prepare_v2(db,
                           "SELECT min(p.start_wall_ns + (c.start_ns - p.start_mono_ns)),"
                           " max(p.start_wall_ns + (IFNULL(c.end_ns, c.start_ns) -"
                           " p.start_mono_ns)) FROM calls c JOIN threads t ON t.id = c.thread"
                           " JOIN processes p ON p.id = t.process",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_ENOTDB;
    int64_t lo = 0, hi = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        lo = sqlite3_column_int64(st, 0);
        hi = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    r->t0 = lo + (int64_t)(r->o->start * 1e9);
    r->t1 = r->o->end > 0 ? lo + (int64_t)(r->o->end * 1e9) : hi;
    if (r->t1 <= r->t0)
        r->t1 = r->t0 + 1;
    /* every call once, in id order: each thread's calls come in start order */
    if (sqlite3_prepare_v2(db,
                           "SELECT c.function, c.thread, p.start_wall_ns + (c.start_ns -"
                           " p.start_mono_ns), c.wall_ns, c.self_ns, c.cpu_ns, c.rss_delta,"
                           " c.status, c.end_ns IS NULL, c.recursive FROM calls c JOIN threads t"
                           " ON t.id = c.thread JOIN processes p ON p.id = t.process ORDER BY c.id",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_ENOTDB;
    double span = (double)(r->t1 - r->t0);
    int src;
    lane *cur = NULL;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t fid = sqlite3_column_int64(st, 0);
        if (fid < 0 || fid > r->maxid || r->fidx[fid] < 0)
            continue;
        int32_t fi = r->fidx[fid];
        fn *x = &r->fns[fi];
        int64_t thread = sqlite3_column_int64(st, 1);
        int64_t start = sqlite3_column_int64(st, 2);
        int unfinished = sqlite3_column_int(st, 8);
        int64_t wall = unfinished ? r->t1 - start : sqlite3_column_int64(st, 3);
        if (wall < 0)
            wall = 0;
        int64_t end = start + wall;
        if (cur == NULL || cur->thread != thread)
            if ((cur = lane_of(r, thread)) == NULL)
                return CS_ENOMEM;
        /* nesting on this thread: its stack of open calls */
        while (cur->depth > 0 && cur->stack[cur->depth - 1].end <= start)
            cur->depth--;
        int32_t parent = cur->depth ? cur->stack[cur->depth - 1].node : -1;
        size_t depth = cur->depth;
        if (!x->keep || end < r->t0 || start > r->t1)
            goto push; /* outside the window or not chosen: nesting only */
        r->calls++;
        x->calls++;
        if (unfinished) {
            x->unfinished++;
        } else {
            const char *status = (const char *)sqlite3_column_text(st, 7);
            if (status && status[0] == 'r')
                x->errors++;
            uint64_t w = (uint64_t)wall;
            /* as top counts: a recursive call's time is in the outer one's */
            if (!sqlite3_column_int(st, 9))
                x->total += w;
            x->self += (uint64_t)sqlite3_column_int64(st, 4);
            if (w < x->min)
                x->min = w;
            if (w > x->max)
                x->max = w;
            x->hist[cs_hist_bucket(w)]++;
            if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
                x->cpu += (uint64_t)sqlite3_column_int64(st, 5);
                x->cpu_calls++;
            }
            if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
                x->rss_sum += sqlite3_column_int64(st, 6);
                x->rss_calls++;
            }
        }
        if (depth == 0)
            cur->busy += (uint64_t)wall;
        {
            /* the timeline: the longest call per column, per depth */
            size_t d = depth < DEPTHS ? depth : DEPTHS - 1;
            double a = (double)(start - r->t0) / span * COLS, b = (double)(end - r->t0) / span * COLS;
            long c0 = a < 0 ? 0 : (long)a, c1 = b >= COLS ? COLS - 1 : (long)b;
            for (long k = c0; k <= c1; k++) {
                if (wall > cur->cell_dur[d][k]) {
                    cur->cell_dur[d][k] = wall;
                    cur->cell_fid[d][k] = fi;
                }
            }
        }
    push:;
        int32_t node = -1;
        if (x->keep && depth < TREE_MAX_DEPTH) {
            node = tree_node(&r->tr, parent, fi);
            if (node < 0)
                return CS_ENOMEM;
            if (!(end < r->t0 || start > r->t1)) {
                tnode *tn = &r->tr.v[node];
                tn->calls++;
                tn->total += (uint64_t)wall;
                tn->self += unfinished ? 0 : (uint64_t)sqlite3_column_int64(st, 4);
            }
        }
        {
            frame *v = cs__grow(cur->stack, cur->depth, &cur->cap, sizeof *v, 32);
            if (v == NULL)
                return CS_ENOMEM;
            cur->stack = v;
        }
        cur->stack[cur->depth++] = (frame){end, node >= 0 ? node : parent};
    }
    sqlite3_finalize(st);
    if (src != SQLITE_DONE)
        return CS_ENOTDB;
    /* functions profiled in aggregate (--all): their numbers as top gives
     * them (from the tree, launcher frames folded) join the tables and
     * charts; a run.db from before the tree gives its histograms too */
    cs_stats_query q = {.launcher = r->o->launcher};
    cs_fstat *fs = NULL;
    size_t nf = 0;
    if (cs_stats(r->s, &q, &fs, &nf) != CS_OK)
        return CS_OK; /* the per-call views stand alone */
    for (size_t i = 0; i < nf; i++) {
        const cs_fstat *y = &fs[i];
        if (y->quantiles || y->id < 0 || y->id > r->maxid || r->fidx[y->id] < 0)
            continue;
        fn *x = &r->fns[r->fidx[y->id]];
        if (!x->keep)
            continue;
        x->calls += y->calls;
        r->calls += y->calls;
        x->total += y->total_ns;
        x->self += y->self_ns;
        if (y->max_ns > x->max)
            x->max = y->max_ns;
        if (y->cpu_calls) {
            x->cpu += y->cpu_ns;
            x->cpu_calls += y->cpu_calls;
        }
    }
    cs_stats_free(fs, nf);
    legacy_profile(r);
    return CS_OK;
}

/* Histograms of profile rows written before the tree (schema 3). */
static void
legacy_profile(report *r)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT function, calls, total_ns, self_ns, min_ns, max_ns, hist"
                           " FROM profile WHERE hist IS NOT NULL",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t fid = sqlite3_column_int64(st, 0);
        if (fid < 0 || fid > r->maxid || r->fidx[fid] < 0)
            continue;
        fn *x = &r->fns[r->fidx[fid]];
        if (!x->keep)
            continue;
        uint64_t mn = (uint64_t)sqlite3_column_int64(st, 4);
        if (sqlite3_column_int64(st, 1) && mn < x->min)
            x->min = mn;
        const uint32_t *h = sqlite3_column_blob(st, 6);
        int hn = sqlite3_column_bytes(st, 6);
        if (h && hn == (int)(CS_HIST_BUCKETS * sizeof(uint32_t)))
            for (unsigned k = 0; k < CS_HIST_BUCKETS; k++) {
                uint32_t v;
                memcpy(&v, (const char *)h + k * sizeof v, sizeof v);
                x->hist[k] += v;
            }
    }
    sqlite3_finalize(st);
}

/* ---- the views --------------------------------------------------------------------- */

static int
cmp_total(const void *a, const void *b)
{
    const fn *x = *(fn *const *)a, *y = *(fn *const *)b;
    return x->total < y->total ? 1 : x->total > y->total ? -1 : strcmp(x->name, y->name);
}

/* Horizontal bars: one per function, `value` of each, a label after. */
static void
bars(FILE *f, const char *id, fn **v, size_t n, double (*value)(const fn *),
     const char *(*label)(const fn *, char *, size_t), const char *empty)
{
    double maxv = 0;
    size_t shown = 0;
    for (size_t i = 0; i < n; i++) {
        double x = value(v[i]);
        if (x != x)
            continue;
        if (fabs(x) > maxv)
            maxv = fabs(x);
        shown++;
    }
    if (shown == 0) {
        fprintf(f, "<p class=\"empty\" id=\"%s\">%s</p>\n", id, empty);
        return;
    }
    int h = 22, w = 900, lw = 330;
    fprintf(f, "<svg id=\"%s\" class=\"chart\" viewBox=\"0 0 %d %zu\" width=\"%d\" height=\"%zu\""
               " role=\"img\">\n",
            id, w, shown * (size_t)h + 4, w, shown * (size_t)h + 4);
    size_t row = 0;
    for (size_t i = 0; i < n; i++) {
        double x = value(v[i]);
        if (x != x)
            continue;
        double bw = maxv > 0 ? fabs(x) / maxv * (w - lw - 120) : 0;
        int y = (int)row * h + 2;
        fputs("<g class=\"bar\"><title>", f);
        esc(f, v[i]->name);
        char lb[64];
        fprintf(f, ": %s</title><text x=\"%d\" y=\"%d\" text-anchor=\"end\" class=\"lbl\">", label(v[i], lb, sizeof lb), lw - 6, y + 15);
        const char *nm = v[i]->name;
        size_t len = strlen(nm);
        if (len > 46) {
            fputs("~", f);
            esc(f, nm + len - 45);
        } else {
            esc(f, nm);
        }
        fprintf(f, "</text><rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"", lw, y + 2,
                bw < 1 ? 1 : bw, h - 6);
        if (x < 0)
            fputs("#c0504d", f);
        else
            colour(f, v[i]->id);
        fprintf(f, "\"/><text x=\"%.1f\" y=\"%d\" class=\"val\">%s</text></g>\n", lw + bw + 6,
                y + 15, label(v[i], lb, sizeof lb));
        row++;
    }
    fputs("</svg>\n", f);
}

static double v_total(const fn *x) { return (double)x->total; }
static double v_mean(const fn *x) { return x->calls > x->unfinished ? (double)x->total / (double)(x->calls - x->unfinished) : 0; }
static double v_mem(const fn *x) { return x->rss_calls ? (double)x->rss_sum / (double)x->rss_calls : NAN; }

static const char *
l_total(const fn *x, char *b, size_t n)
{
    char t[32];
    snprintf(b, n, "%s in %llu calls", fmt_ns((double)x->total, t, sizeof t), (unsigned long long)x->calls);
    return b;
}

static const char *
l_mean(const fn *x, char *b, size_t n)
{
    char t[32], p[32];
    snprintf(b, n, "mean %s, p95 %s", fmt_ns(v_mean(x), t, sizeof t),
             fmt_ns((double)cs_hist_rank(x->hist, x->calls - x->unfinished, 0.95), p, sizeof p));
    return b;
}

static const char *
l_mem(const fn *x, char *b, size_t n)
{
    char t[32];
    double m = v_mem(x);
    snprintf(b, n, "%s%s per call", m < 0 ? "-" : "+", cs_fmt_bytes((uint64_t)fabs(m), t, sizeof t));
    return b;
}

static void
histograms(FILE *f, fn **v, size_t n)
{
    size_t shown = 0;
    fputs("<div id=\"histograms\" class=\"grid\">\n", f);
    for (size_t i = 0; i < n && shown < 6; i++) {
        const fn *x = v[i];
        if (x->calls <= x->unfinished)
            continue;
        unsigned lo = CS_HIST_BUCKETS, hi = 0;
        uint64_t top = 0;
        for (unsigned b = 0; b < CS_HIST_BUCKETS; b++)
            if (x->hist[b]) {
                if (b < lo)
                    lo = b;
                hi = b;
                if (x->hist[b] > top)
                    top = x->hist[b];
            }
        if (lo > hi)
            continue;
        shown++;
        unsigned nb = hi - lo + 1;
        int w = 420, h = 150, pad = 30;
        double bw = (double)(w - 2 * pad) / nb;
        fputs("<figure><figcaption>", f);
        esc(f, x->name);
        fprintf(f, "</figcaption><svg class=\"hist\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\">", w, h + 20, w, h + 20);
        for (unsigned b = lo; b <= hi; b++) {
            double bh = top ? (double)x->hist[b] / top * (h - 10) : 0;
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"", pad + (b - lo) * bw, h - bh, bw > 1.5 ? bw - 0.5 : bw, bh);
            colour(f, x->id);
            char t[32];
            fprintf(f, "\"><title>%llu calls near %s</title></rect>", (unsigned long long)x->hist[b],
                    fmt_ns((double)cs_hist_mid(b), t, sizeof t));
        }
        char a[32], z[32];
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"lbl\">%s</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\" class=\"lbl\">%s</text></svg></figure>\n",
                pad, h + 15, fmt_ns((double)x->min, a, sizeof a), w - pad, h + 15, fmt_ns((double)x->max, z, sizeof z));
    }
    fputs("</div>\n", f);
    if (shown == 0)
        fputs("<p class=\"empty\">No finished calls.</p>\n", f);
}

static int
cmp_busy(const void *a, const void *b)
{
    const lane *x = *(lane *const *)a, *y = *(lane *const *)b;
    return x->busy < y->busy ? 1 : x->busy > y->busy ? -1 : (x->thread > y->thread) - (x->thread < y->thread);
}

static void
timeline(FILE *f, report *r)
{
    if (r->nlanes == 0) {
        fputs("<p class=\"empty\" id=\"timeline\">No calls.</p>\n", f);
        return;
    }
    /* lane labels */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT p.pid, p.host, p.rank, t.name, t.tid FROM threads t JOIN"
                           " processes p ON p.id = t.process WHERE t.id = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        for (size_t i = 0; i < r->nlanes; i++) {
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, r->lanes[i]->thread);
            if (sqlite3_step(st) == SQLITE_ROW) {
                const char *tn = (const char *)sqlite3_column_text(st, 3);
                if (sqlite3_column_type(st, 2) != SQLITE_NULL)
                    snprintf(r->lanes[i]->label, sizeof r->lanes[i]->label, "rank %lld pid %lld %s",
                             (long long)sqlite3_column_int64(st, 2), (long long)sqlite3_column_int64(st, 0), tn ? tn : "");
                else
                    snprintf(r->lanes[i]->label, sizeof r->lanes[i]->label, "pid %lld %s",
                             (long long)sqlite3_column_int64(st, 0), tn ? tn : "");
            }
        }
    }
    sqlite3_finalize(st);
    if (r->nlanes > 1)
        qsort(r->lanes, r->nlanes, sizeof *r->lanes, cmp_busy);
    size_t nl = r->nlanes < MAX_LANES ? r->nlanes : MAX_LANES;
    int rowh = 14, lw = 190, w = lw + COLS;
    /* rows used per lane */
    size_t rows = 0;
    int used[MAX_LANES];
    for (size_t i = 0; i < nl; i++) {
        used[i] = 1;
        for (int d = 0; d < DEPTHS; d++)
            for (int k = 0; k < COLS; k++)
                if (r->lanes[i]->cell_fid[d][k] >= 0 && d + 1 > used[i])
                    used[i] = d + 1;
        rows += (size_t)used[i];
    }
    int height = (int)rows * rowh + (int)nl * 6 + 24;
    char a[32], b[32], col[32];
    fprintf(f, "<p class=\"note\">From %s to %s after the start of the run; each column is %s."
               " Scroll to zoom, drag to move, double-click to reset.%s</p>\n",
            fmt_ns(r->o->start * 1e9, a, sizeof a),
            fmt_ns(r->o->start * 1e9 + (double)(r->t1 - r->t0), b, sizeof b),
            fmt_ns((double)(r->t1 - r->t0) / COLS, col, sizeof col),
            r->nlanes > nl ? " Only the busiest threads are drawn." : "");
    fprintf(f, "<svg id=\"timeline\" class=\"chart zoom\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\">\n",
            w, height, w, height);
    int y = 4;
    for (size_t i = 0; i < nl; i++) {
        lane *l = r->lanes[i];
        fputs("<g class=\"lane\"><text x=\"4\" class=\"lbl\" y=\"", f);
        fprintf(f, "%d\">", y + 11);
        esc(f, l->label);
        fputs("</text>", f);
        for (int d = 0; d < used[i]; d++) {
            int k = 0;
            while (k < COLS) {
                int32_t fi = l->cell_fid[d][k];
                int k2 = k + 1;
                while (k2 < COLS && l->cell_fid[d][k2] == fi)
                    k2++;
                if (fi >= 0) {
                    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"", lw + k, y + d * rowh, k2 - k, rowh - 2);
                    colour(f, r->fns[fi].id);
                    fputs("\"><title>", f);
                    esc(f, r->fns[fi].name);
                    fputs("</title></rect>", f);
                }
                k = k2;
            }
        }
        fputs("</g>\n", f);
        y += used[i] * rowh + 6;
    }
    fputs("</svg>\n", f);
}

static void
tree_html(FILE *f, report *r, int32_t node, uint64_t all, int depth)
{
    /* children by total time */
    int32_t kids[256];
    size_t nk = 0;
    for (int32_t c = node < 0 ? -1 : r->tr.v[node].first_child; c >= 0 && nk < 256; c = r->tr.v[c].next)
        kids[nk++] = c;
    if (node < 0)
        for (size_t i = 0; i < r->tr.n && nk < 256; i++)
            if (r->tr.v[i].parent < 0)
                kids[nk++] = (int32_t)i;
    for (size_t i = 1; i < nk; i++)
        for (size_t j = i; j > 0 && r->tr.v[kids[j]].total > r->tr.v[kids[j - 1]].total; j--) {
            int32_t t = kids[j];
            kids[j] = kids[j - 1];
            kids[j - 1] = t;
        }
    for (size_t i = 0; i < nk; i++) {
        tnode *x = &r->tr.v[kids[i]];
        if (x->calls == 0 || (all && (double)x->total < 0.002 * (double)all && depth > 0))
            continue;
        char t[32], s[32];
        fputs(x->first_child >= 0 && depth < TREE_MAX_DEPTH - 1 ? "<li><details" : "<li><span", f);
        if (x->first_child >= 0 && depth < 2)
            fputs(" open", f);
        fputs(x->first_child >= 0 ? "><summary>" : ">", f);
        esc(f, r->fns[x->func].name);
        fprintf(f, " <small>%llu calls, total %s (%.1f%%), self %s</small>", (unsigned long long)x->calls,
                fmt_ns((double)x->total, t, sizeof t), all ? 100.0 * (double)x->total / (double)all : 0,
                fmt_ns((double)x->self, s, sizeof s));
        if (x->first_child >= 0) {
            fputs("</summary><ul>", f);
            tree_html(f, r, kids[i], all, depth + 1);
            fputs("</ul></details></li>\n", f);
        } else {
            fputs("</span></li>\n", f);
        }
    }
}

/* ---- the flame graph: an icicle of the call tree ------------------------------- */

#define FLAME_W 1200.0
#define FLAME_ROW 18
#define FLAME_ROWS 48

typedef struct flamer {
    FILE *f;
    const cs_calltree *t;
    double scale; /* px per ns */
    uint64_t all;
    size_t rects;
    uint32_t rows;
} flamer;

static void
flame_node(flamer *fl, int32_t i, double x, uint32_t row)
{
    const cs_ctnode *n = &fl->t->nodes[i];
    double w = (double)n->total_ns * fl->scale;
    if (w < 0.5 || row >= FLAME_ROWS)
        return;
    const char *name = cs_calltree_name(fl->t, n);
    char tt[32], ts[32];
    fprintf(fl->f, "<g><rect x=\"%.2f\" y=\"%u\" width=\"%.2f\" height=\"%d\" fill=\"", x,
            row * FLAME_ROW, w, FLAME_ROW - 1);
    colour(fl->f, n->function);
    fputs("\"><title>", fl->f);
    esc(fl->f, name);
    fprintf(fl->f, " (%.1f%%): total %s, self %s, %llu calls</title></rect>",
            fl->all ? 100.0 * (double)n->total_ns / (double)fl->all : 0.0,
            fmt_ns((double)n->total_ns, tt, sizeof tt), fmt_ns((double)n->self_ns, ts, sizeof ts),
            (unsigned long long)n->calls);
    size_t fit = (size_t)(w / 7.0);
    if (fit >= 4) {
        fprintf(fl->f, "<text x=\"%.2f\" y=\"%u\">", x + 3, row * FLAME_ROW + 13);
        size_t len = strlen(name);
        if (len <= fit) {
            esc(fl->f, name);
        } else { /* the end of a qualified name says most */
            fputs("..", fl->f);
            esc(fl->f, name + len - (fit - 2));
        }
        fputs("</text>", fl->f);
    }
    fputs("</g>\n", fl->f);
    fl->rects++;
    if (row + 1 > fl->rows)
        fl->rows = row + 1;
    for (int32_t c = n->child; c >= 0; c = fl->t->nodes[c].sibling) {
        flame_node(fl, c, x, row + 1);
        x += (double)fl->t->nodes[c].total_ns * fl->scale;
    }
}

/* An icicle: the top-level calls in the first row, each call path under
 * its caller, as wide as its total time. Hover for numbers. */
static void
flame(FILE *f, report *r)
{
    cs_calltree_query q = {.calls = 1, .launcher = r->o->launcher};
    cs_calltree *t = NULL;
    if (cs_calltree_load(r->s, &q, &t) != CS_OK || t->n == 0 || t->total_ns == 0) {
        fputs("<p id=\"flame\">No call tree: nothing was recorded.</p>\n", f);
        cs_calltree_free(t);
        return;
    }
    /* draw into a buffer first: the height is known at the end */
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (m == NULL) {
        cs_calltree_free(t);
        return;
    }
    flamer fl = {.f = m, .t = t, .scale = FLAME_W / (double)t->total_ns, .all = t->total_ns};
    double x = 0;
    for (int32_t i = t->top; i >= 0; i = t->nodes[i].sibling) {
        flame_node(&fl, i, x, 0);
        x += (double)t->nodes[i].total_ns * fl.scale;
    }
    fclose(m);
    fprintf(f, "<p class=\"sub\">%s; each box is a call path, as wide as its total time, under"
               " its caller. Hover for its numbers; the whole run, whatever the window.</p>\n",
            t->from_calls ? "The recorded calls (callscope run --all records every call)"
                          : "Every call of the program");
    fprintf(f, "<svg id=\"flame\" class=\"flame\" viewBox=\"0 0 %.0f %u\" width=\"100%%\""
               " role=\"img\" aria-label=\"flame graph\">\n",
            FLAME_W, fl.rows * FLAME_ROW);
    if (buf)
        fwrite(buf, 1, len, f);
    fputs("</svg>\n", f);
    free(buf);
    cs_calltree_free(t);
}

static void
table(FILE *f, fn **v, size_t n)
{
    fputs("<input id=\"filter\" type=\"search\" placeholder=\"filter functions\" aria-label=\"filter\">\n"
          "<table id=\"functions\" class=\"sortable\"><thead><tr>"
          "<th data-type=\"text\">function</th><th>calls</th><th>errors</th><th>total</th>"
          "<th>self</th><th>mean</th><th>p50</th><th>p95</th><th>max</th><th>cpu</th>"
          "<th>memory</th></tr></thead><tbody>\n", f);
    for (size_t i = 0; i < n; i++) {
        const fn *x = v[i];
        uint64_t done = x->calls - x->unfinished;
        double mean = v_mean(x);
        uint64_t p50 = cs_hist_rank(x->hist, done, 0.5), p95 = cs_hist_rank(x->hist, done, 0.95);
        char b[6][32];
        fputs("<tr><td>", f);
        esc(f, x->name);
        fprintf(f, "</td><td data-v=\"%llu\">%llu</td><td data-v=\"%llu\">%llu</td>",
                (unsigned long long)x->calls, (unsigned long long)x->calls,
                (unsigned long long)x->errors, (unsigned long long)x->errors);
        fprintf(f, "<td data-v=\"%llu\">%s</td><td data-v=\"%llu\">%s</td><td data-v=\"%.0f\">%s</td>",
                (unsigned long long)x->total, fmt_ns((double)x->total, b[0], 32),
                (unsigned long long)x->self, fmt_ns((double)x->self, b[1], 32), mean,
                fmt_ns(mean, b[2], 32));
        fprintf(f, "<td data-v=\"%llu\">%s</td><td data-v=\"%llu\">%s</td><td data-v=\"%llu\">%s</td>",
                (unsigned long long)p50, fmt_ns((double)p50, b[3], 32), (unsigned long long)p95,
                fmt_ns((double)p95, b[4], 32), (unsigned long long)(done ? x->max : 0),
                fmt_ns((double)(done ? x->max : 0), b[5], 32));
        if (x->cpu_calls)
            fprintf(f, "<td data-v=\"%llu\">%s</td>", (unsigned long long)x->cpu, fmt_ns((double)x->cpu, b[0], 32));
        else
            fputs("<td data-v=\"-1\">-</td>", f);
        if (x->rss_calls) {
            char lb[64];
            fprintf(f, "<td data-v=\"%.0f\">%s</td>", v_mem(x), l_mem(x, lb, sizeof lb));
        } else {
            fputs("<td data-v=\"-1e300\">-</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}

static void
errors(FILE *f, sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT e.type, CASE WHEN f.module = '' THEN f.qualname ELSE f.module"
                           " || '.' || f.qualname END, count(*), min(e.message),"
                           " (SELECT COALESCE(x.traceback, (SELECT o.traceback FROM errors o"
                           " WHERE o.call = x.origin)) FROM errors x JOIN calls y ON y.id ="
                           " x.call WHERE x.type = e.type AND y.function = c.function LIMIT 1)"
                           " FROM errors e JOIN calls c ON c.id = e.call JOIN functions f ON"
                           " f.id = c.function GROUP BY e.type, c.function ORDER BY 3 DESC",
                           -1, &st, NULL) != SQLITE_OK) {
        fputs("<p class=\"empty\">Errors cannot be read.</p>\n", f);
        return;
    }
    int any = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (!any)
            fputs("<div id=\"errors\">\n", f);
        any = 1;
        fputs("<details class=\"error\"><summary><b>", f);
        esc(f, (const char *)sqlite3_column_text(st, 0));
        fputs("</b> in <code>", f);
        esc(f, (const char *)sqlite3_column_text(st, 1));
        fprintf(f, "</code>: %lld call(s), e.g. ", (long long)sqlite3_column_int64(st, 2));
        esc(f, (const char *)sqlite3_column_text(st, 3));
        fputs("</summary><pre>", f);
        esc(f, (const char *)sqlite3_column_text(st, 4));
        fputs("</pre></details>\n", f);
    }
    sqlite3_finalize(st);
    fputs(any ? "</div>\n" : "<p class=\"empty\" id=\"errors\">No call raised.</p>\n", f);
}

static void
processes(FILE *f, sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT p.pid, p.ppid, p.host, p.rank, p.name, p.state,"
                           " (SELECT count(*) FROM threads t WHERE t.process = p.id),"
                           " (SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread"
                           " WHERE t.process = p.id), p.command FROM processes p ORDER BY"
                           " p.start_wall_ns",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    fputs("<table id=\"processes\"><thead><tr><th>pid</th><th>ppid</th><th>host</th><th>rank</th>"
          "<th>name</th><th>state</th><th>threads</th><th>calls</th><th>command</th></tr></thead><tbody>\n", f);
    while (sqlite3_step(st) == SQLITE_ROW) {
        fprintf(f, "<tr><td>%lld</td><td>%lld</td><td>", (long long)sqlite3_column_int64(st, 0),
                (long long)sqlite3_column_int64(st, 1));
        esc(f, (const char *)sqlite3_column_text(st, 2));
        fputs("</td><td>", f);
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            fprintf(f, "%lld", (long long)sqlite3_column_int64(st, 3));
        fputs("</td><td>", f);
        esc(f, (const char *)sqlite3_column_text(st, 4));
        fputs("</td><td>", f);
        esc(f, (const char *)sqlite3_column_text(st, 5));
        fprintf(f, "</td><td>%lld</td><td>%lld</td><td><code>", (long long)sqlite3_column_int64(st, 6),
                (long long)sqlite3_column_int64(st, 7));
        esc(f, (const char *)sqlite3_column_text(st, 8));
        fputs("</code></td></tr>\n", f);
    }
    sqlite3_finalize(st);
    fputs("</tbody></table>\n", f);
}

/* The stability view, when `callscope compare` stored digits here. */
static void
stability(FILE *f, sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT d.function, d.value, d.calls, d.min, d.median, d.max,"
                           " d.worst_call, d.comparison FROM digits d WHERE d.comparison ="
                           " (SELECT max(id) FROM comparisons WHERE kind = 'stability')"
                           " ORDER BY d.min LIMIT 20",
                           -1, &st, NULL) != SQLITE_OK)
        return; /* no comparison tables */
    sqlite3_stmt *pc = NULL;
    sqlite3_prepare_v2(db, "SELECT call, digits FROM digits_calls WHERE comparison = ? AND"
                           " function = ? AND value = ? ORDER BY call", -1, &pc, NULL);
    int any = 0, plots = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (!any)
            fputs("<h2 id=\"stability-view\">Numerical stability</h2>\n<p class=\"note\">Significant"
                  " digits each value kept across the compared runs (callscope compare), fewest"
                  " first.</p>\n<table id=\"stability\"><thead><tr><th>function</th><th>value</th>"
                  "<th>calls</th><th>min</th><th>median</th><th>max</th><th>worst call</th>"
                  "</tr></thead><tbody>\n", f);
        any = 1;
        fputs("<tr><td>", f);
        esc(f, (const char *)sqlite3_column_text(st, 0));
        fputs("</td><td>", f);
        esc(f, (const char *)sqlite3_column_text(st, 1));
        fprintf(f, "</td><td>%lld</td><td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%lld</td></tr>\n",
                (long long)sqlite3_column_int64(st, 2), sqlite3_column_double(st, 3),
                sqlite3_column_double(st, 4), sqlite3_column_double(st, 5),
                (long long)sqlite3_column_int64(st, 6));
    }
    if (any)
        fputs("</tbody></table>\n<div class=\"grid\">\n", f);
    /* digits over the calls of the worst values */
    sqlite3_reset(st);
    while (any && pc && plots < 4 && sqlite3_step(st) == SQLITE_ROW) {
        sqlite3_reset(pc);
        sqlite3_bind_int64(pc, 1, sqlite3_column_int64(st, 7));
        sqlite3_bind_text(pc, 2, (const char *)sqlite3_column_text(st, 0), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(pc, 3, (const char *)sqlite3_column_text(st, 1), -1, SQLITE_TRANSIENT);
        int w = 420, h = 150;
        long long n = sqlite3_column_int64(st, 2);
        fputs("<figure><figcaption>", f);
        esc(f, (const char *)sqlite3_column_text(st, 0));
        fputs(" ", f);
        esc(f, (const char *)sqlite3_column_text(st, 1));
        fprintf(f, ": digits per call</figcaption><svg class=\"digits\" viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\"><polyline fill=\"none\" stroke=\"#3465a4\" points=\"", w, h + 4, w, h + 4);
        long long i = 0;
        while (sqlite3_step(pc) == SQLITE_ROW) {
            double d = sqlite3_column_double(pc, 1);
            fprintf(f, "%.1f,%.1f ", n > 1 ? (double)i * (w - 10) / (double)(n - 1) + 5 : w / 2.0,
                    h - (d < 0 ? 0 : d > 16 ? 16 : d) / 16.0 * (h - 10));
            i++;
        }
        fputs("\"/></svg></figure>\n", f);
        plots++;
    }
    if (any)
        fputs("</div>\n", f);
    sqlite3_finalize(pc);
    sqlite3_finalize(st);
}

static const char CSS[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:0 2em 3em;color:#222;max-width:1300px}"
    "h1{margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ccc}"
    ".sub{color:#555;margin-top:.2em}.tag{background:#eef;border-radius:3px;padding:0 .4em;margin-right:.3em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}"
    "td:first-child,th:first-child{text-align:left;font-family:monospace}th{cursor:pointer;background:#f6f6f6}"
    "th.asc:after{content:' \\25B2'}th.desc:after{content:' \\25BC'}"
    ".chart text,.hist text{font-size:11px;font-family:monospace}.lbl{fill:#333}.val{fill:#555}"
    ".grid{display:flex;flex-wrap:wrap;gap:1em}.flame text{font:11px monospace;pointer-events:none}.flame rect:hover{stroke:#000}figure{margin:0}figcaption{font-family:monospace;font-size:12px}"
    ".empty,.note{color:#666;font-style:italic}pre{background:#f7f7f7;padding:.5em;overflow:auto}"
    "svg.zoom{cursor:grab;border:1px solid #ddd;max-width:100%;height:auto}dl.meta dt{float:left;clear:left;width:9em;color:#555}"
    "dl.meta dd{margin-left:10em}ul.tree{list-style:none;padding-left:1em}ul.tree ul{list-style:none;padding-left:1.2em}"
    "#filter{margin:.5em 0;padding:.2em .4em;width:20em}";

static const char JS[] =
    "(function(){'use strict';"
    "function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent:parseFloat(v);}"
    "function sortBy(th){var t=th.closest('table'),b=t.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th);"
    "var asc=!th.classList.contains('asc');Array.prototype.forEach.call(th.parentNode.children,function(h){h.classList.remove('asc','desc');});"
    "th.classList.add(asc?'asc':'desc');var rows=Array.prototype.slice.call(b.rows);"
    "rows.sort(function(x,y){var a=key(x.cells[i]),c=key(y.cells[i]);var r=(typeof a==='number'&&typeof c==='number')?a-c:String(a).localeCompare(String(c));return asc?r:-r;});"
    "rows.forEach(function(r){b.appendChild(r);});}"
    "document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});"
    "var flt=document.getElementById('filter');if(flt){flt.addEventListener('input',function(){var q=flt.value.toLowerCase();"
    "document.querySelectorAll('#functions tbody tr').forEach(function(r){r.style.display=r.cells[0].textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}"
    "document.querySelectorAll('svg.zoom').forEach(function(s){var vb=s.viewBox.baseVal,orig=[vb.x,vb.y,vb.width,vb.height],drag=null;"
    "s.addEventListener('wheel',function(e){e.preventDefault();var r=s.getBoundingClientRect(),fx=(e.clientX-r.left)/r.width,k=e.deltaY<0?0.8:1.25;"
    "var nw=Math.min(orig[2],Math.max(orig[2]/200,vb.width*k));vb.x=Math.max(orig[0],Math.min(orig[0]+orig[2]-nw,vb.x+(vb.width-nw)*fx));vb.width=nw;},{passive:false});"
    "s.addEventListener('mousedown',function(e){drag=[e.clientX,vb.x];});window.addEventListener('mouseup',function(){drag=null;});"
    "s.addEventListener('mousemove',function(e){if(!drag)return;var r=s.getBoundingClientRect();vb.x=Math.max(orig[0],Math.min(orig[0]+orig[2]-vb.width,drag[1]-(e.clientX-drag[0])*vb.width/r.width));});"
    "s.addEventListener('dblclick',function(){vb.x=orig[0];vb.y=orig[1];vb.width=orig[2];vb.height=orig[3];});});"
    /* a self-test for headless browsers: #selftest sorts the table by calls */
    "if(location.hash==='#selftest'){var th=document.querySelectorAll('#functions th')[1];if(th){sortBy(th);sortBy(th);}"
    "var c=Array.prototype.map.call(document.querySelectorAll('#functions tbody tr'),function(r){return r.cells[1].getAttribute('data-v');});"
    "document.body.setAttribute('data-selftest',JSON.stringify({sorted:c,views:['times','timeline','memory','top10','histograms','flame'].map(function(id){var e=document.getElementById(id);return e?e.querySelectorAll('rect,p').length:0;})}));}"
    "})();";

static void
meta(FILE *f, report *r, const char *dir)
{
    sqlite3_stmt *st = NULL;
    fputs("<dl class=\"meta\" id=\"meta\">", f);
    fputs("<dt>run</dt><dd><code>", f);
    esc(f, dir);
    fputs("</code></dd>", f);
    if (sqlite3_prepare_v2(r->db, "SELECT command, cwd, created_ns FROM runs LIMIT 1", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        fputs("<dt>command</dt><dd><code>", f);
        esc(f, (const char *)sqlite3_column_text(st, 0));
        fputs("</code></dd><dt>directory</dt><dd><code>", f);
        esc(f, (const char *)sqlite3_column_text(st, 1));
        fputs("</code></dd>", f);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(r->db,
                           "SELECT min(start_wall_ns), count(*), group_concat(DISTINCT host),"
                           " max(start_wall_ns + (IFNULL(end_mono_ns, start_mono_ns) -"
                           " start_mono_ns)) - min(start_wall_ns), (SELECT argv FROM processes"
                           " ORDER BY start_wall_ns LIMIT 1) FROM processes",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        time_t secs = (time_t)(sqlite3_column_int64(st, 0) / 1000000000);
        struct tm tm;
        char when[64] = "?";
        if (gmtime_r(&secs, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        char d[32];
        fprintf(f, "<dt>start</dt><dd>%s</dd><dt>duration</dt><dd>%s</dd><dt>processes</dt><dd>%lld</dd><dt>hosts</dt><dd>",
                when, fmt_ns((double)sqlite3_column_int64(st, 3), d, sizeof d),
                (long long)sqlite3_column_int64(st, 1));
        esc(f, (const char *)sqlite3_column_text(st, 2));
        fputs("</dd><dt>program</dt><dd><code>", f);
        esc(f, (const char *)sqlite3_column_text(st, 4));
        fputs("</code></dd>", f);
    }
    sqlite3_finalize(st);
    static const char *const keys[][2] = {{"python", "Python"}, {"options", "options"}};
    for (size_t i = 0; i < 2; i++) {
        if (sqlite3_prepare_v2(r->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) ==
            SQLITE_OK) {
            sqlite3_bind_text(st, 1, keys[i][0], -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                fprintf(f, "<dt>%s</dt><dd><code>", keys[i][1]);
                esc(f, (const char *)sqlite3_column_text(st, 0));
                fputs("</code></dd>", f);
            }
        }
        sqlite3_finalize(st);
    }
    fprintf(f, "<dt>calls</dt><dd>%llu in the report</dd>", (unsigned long long)r->calls);
    if (r->o->start > 0 || r->o->end > 0) {
        char e[32];
        if (r->o->end > 0)
            snprintf(e, sizeof e, "%.3f s", r->o->end);
        else
            snprintf(e, sizeof e, "the end");
        fprintf(f, "<dt>window</dt><dd>from %.3f s to %s after the start</dd>", r->o->start, e);
    }
    fputs("</dl>\n", f);
}

int
cs_report(cs_store *s, const char *dir, const cs_report_opts *o, FILE *f)
{
    errbuf[0] = '\0';
    report r;
    memset(&r, 0, sizeof r);
    r.s = s;
    r.db = cs_store_db(s);
    r.o = o;
    int rc = gather(&r);
    if (rc != CS_OK) {
        snprintf(errbuf, sizeof errbuf, "%s: %s", dir, rc == CS_ENOMEM ? "out of memory" : sqlite3_errmsg(r.db));
        goto out;
    }
    fn **v = cs__calloc(r.nfns ? r.nfns : 1, sizeof *v);
    if (v == NULL) {
        rc = CS_ENOMEM;
        goto out;
    }
    size_t n = 0;
    uint64_t all = 0;
    for (size_t i = 0; i < r.nfns; i++)
        if (r.fns[i].keep && r.fns[i].calls) {
            v[n++] = &r.fns[i];
        }
    qsort(v, n, sizeof *v, cmp_total);
    for (size_t i = 0; i < r.tr.n; i++)
        if (r.tr.v[i].parent < 0)
            all += r.tr.v[i].total;
    const char *title = o->title ? o->title : "callscope report";
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src"
          " 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
          "<meta name=\"viewport\" content=\"width=device-width\"><title>", f);
    esc(f, title);
    fprintf(f, "</title><style>%s</style></head><body>\n<h1>", CSS);
    esc(f, title);
    fputs("</h1>\n", f);
    if (o->subtitle) {
        fputs("<p class=\"sub\">", f);
        esc(f, o->subtitle);
        fputs("</p>\n", f);
    }
    if (o->ntags) {
        fputs("<p>", f);
        for (size_t i = 0; i < o->ntags; i++) {
            fputs("<span class=\"tag\">", f);
            esc(f, o->tags[i]);
            fputs("</span>", f);
        }
        fputs("</p>\n", f);
    }
    meta(f, &r, dir);
    fn *top[30];
    size_t nt = n < 30 ? n : 30;
    for (size_t i = 0; i < nt; i++)
        top[i] = v[i];
    fputs("<h2>Execution time per function</h2>\n", f);
    bars(f, "times", top, nt, v_mean, l_mean, "No finished calls.");
    fputs("<h2>Timeline</h2>\n", f);
    timeline(f, &r);
    fputs("<h2>Memory per function</h2>\n", f);
    bars(f, "memory", top, nt, v_mem, l_mem,
         "No memory was recorded: use @callscope.monitor(memory=True) or callscope run --memory.");
    fputs("<h2>Top 10 functions by total time</h2>\n", f);
    bars(f, "top10", v, n < 10 ? n : 10, v_total, l_total, "No calls.");
    fputs("<h2>Execution time histograms</h2>\n", f);
    histograms(f, v, n);
    fputs("<h2>Functions</h2>\n", f);
    table(f, v, n);
    fputs("<h2>Flame graph</h2>\n", f);
    flame(f, &r);
    fputs("<h2>Call tree</h2>\n<ul class=\"tree\" id=\"tree\">\n", f);
    tree_html(f, &r, -1, all, 0);
    fputs("</ul>\n<h2>Errors</h2>\n", f);
    errors(f, r.db);
    fputs("<h2>Processes and threads</h2>\n", f);
    processes(f, r.db);
    stability(f, r.db);
    fprintf(f, "<script>%s</script>\n</body></html>\n", JS);
    cs__free(v);
out:
    for (size_t i = 0; i < r.nfns; i++)
        cs__free(r.fns[i].name);
    cs__free(r.fns);
    cs__free(r.fidx);
    for (size_t i = 0; i < r.nlanes; i++) {
        cs__free(r.lanes[i]->stack);
        cs__free(r.lanes[i]);
    }
    cs__free(r.lanes);
    cs__free(r.tr.v);
    cs__free(r.tr.slots);
    return rc;
}
