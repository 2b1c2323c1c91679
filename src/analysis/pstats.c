/* pstats.c -- a run as the dict that pstats.Stats loads (marshal), counted
 * and keyed exactly as cProfile counts and keys:
 *
 *   {(file, line, name): (cc, nc, tt, ct, {caller key: (nc, cc, tt, ct)})}
 *
 * nc: calls; cc: primitive calls, those made while no other call of the
 * function was open on the same thread; tt: self time; ct: the total time
 * of the primitive calls (seconds). A caller's entry counts the calls it
 * made the same way, with "primitive" meaning no call of the same
 * (caller, callee) pair was open. Keys: (co_filename, co_firstlineno,
 * co_name) for Python code, ("~", 0, "<built-in method builtins.len>")
 * for C functions, as cProfile labels them. Functions of several
 * processes with the same key are one entry.
 *
 * Counts come from the calling-context tree for --all runs (every node
 * knows its caller and whether its path recurses), and from the call rows
 * otherwise. */
#include "cs_analysis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Python's marshal format ------------------------------------------------ */

static void
m_u32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    fwrite(b, 1, 4, f);
}

static void
m_str(FILE *f, const char *s)
{
    size_t n = strlen(s);
    fputc('u', f); /* TYPE_UNICODE: u32 length, UTF-8 */
    m_u32(f, (uint32_t)n);
    fwrite(s, 1, n, f);
}

static void
m_int(FILE *f, int64_t v)
{
    if (v >= INT32_MIN && v <= INT32_MAX) {
        fputc('i', f); /* TYPE_INT */
        m_u32(f, (uint32_t)(int32_t)v);
        return;
    }
    /* TYPE_LONG: digits of 15 bits, count signed */
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    uint16_t d[5];
    int n = 0;
    while (u) {
        d[n++] = (uint16_t)(u & 0x7fff);
        u >>= 15;
    }
    fputc('l', f);
    m_u32(f, (uint32_t)(v < 0 ? -n : n));
    for (int i = 0; i < n; i++) {
        fputc(d[i] & 0xff, f);
        fputc(d[i] >> 8, f);
    }
}

static void
m_float(FILE *f, double v)
{
    fputc('g', f); /* TYPE_BINARY_FLOAT */
    fwrite(&v, 8, 1, f);
}

static void
m_tuple(FILE *f, unsigned n)
{
    fputc(')', f); /* TYPE_SMALL_TUPLE */
    fputc((int)n, f);
}

static void
m_key(FILE *f, const char *file, int64_t line, const char *name)
{
    m_tuple(f, 3);
    m_str(f, file);
    m_int(f, line);
    m_str(f, name);
}

/* ---- keys, functions and edges ---------------------------------------------- */

typedef struct pkey {
    char *file, *name;
    int64_t line;
    uint64_t nc, cc;
    double tt, ct;
    int per_call; /* counted from call rows: the tree's count would be twice */
} pkey;

typedef struct pedge {
    int32_t caller, callee; /* -1: free slot */
    uint32_t open;          /* calls of the pair open on the current stack */
    uint64_t nc, cc;
    double tt, ct;
} pedge;

typedef struct pstate {
    pkey *k;
    size_t nk;
    int32_t *key_of; /* functions.id -> key */
    int64_t maxid;
    pedge *e;
    size_t ecap, en;
    uint32_t *open; /* per key: its calls open on the current thread's stack */
} pstate;

static size_t
edge_slot(const pedge *e, size_t cap, int32_t caller, int32_t callee)
{
    uint64_t h = ((uint64_t)(uint32_t)caller << 32 | (uint32_t)callee) * 0x9E3779B97F4A7C15ull;
    size_t j = (size_t)(h >> 20) & (cap - 1);
    while (e[j].caller >= 0 && (e[j].caller != caller || e[j].callee != callee))
        j = (j + 1) & (cap - 1);
    return j;
}

/* The entry of the pair, made if new (NULL when out of memory; never
 * for a pair that exists). */
static pedge *
edge(pstate *p, int32_t caller, int32_t callee)
{
    if (p->ecap) {
        size_t j = edge_slot(p->e, p->ecap, caller, callee);
        if (p->e[j].caller >= 0)
            return &p->e[j];
    }
    if (p->en * 2 >= p->ecap) {
        size_t cap = p->ecap ? p->ecap * 2 : 1024;
        pedge *v = cs__malloc(cap * sizeof *v);
        if (v == NULL)
            return NULL;
        for (size_t i = 0; i < cap; i++)
            v[i].caller = -1;
        for (size_t i = 0; i < p->ecap; i++)
            if (p->e[i].caller >= 0)
                v[edge_slot(v, cap, p->e[i].caller, p->e[i].callee)] = p->e[i];
        cs__free(p->e);
        p->e = v;
        p->ecap = cap;
    }
    size_t j = edge_slot(p->e, p->ecap, caller, callee);
    if (p->e[j].caller < 0) {
        p->e[j] = (pedge){.caller = caller, .callee = callee};
        p->en++;
    }
    return &p->e[j];
}

/* Count `n` calls (`prim` of them primitive) with self time `tt` and
 * total `ct` (primitive calls only) into `x`. */
#define ADD(x, n, prim, self, total)                                                             \
    do {                                                                                         \
        (x)->nc += (n);                                                                          \
        (x)->cc += (prim);                                                                       \
        (x)->tt += (self);                                                                       \
        (x)->ct += (total);                                                                      \
    } while (0)

static int
cmp_edge(const void *a, const void *b)
{
    const pedge *x = a, *y = b;
    return x->callee != y->callee ? (x->callee > y->callee) - (x->callee < y->callee)
                                  : (x->caller > y->caller) - (x->caller < y->caller);
}

typedef struct fkey {
    int64_t id;
    char *file, *name;
    int64_t line;
} fkey;

static int
cmp_fkey(const void *a, const void *b)
{
    const fkey *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    if (c)
        return c;
    if (x->line != y->line)
        return (x->line > y->line) - (x->line < y->line);
    return strcmp(x->name, y->name);
}

/* cProfile's key of a function: see the top of this file. */
static int
make_key(fkey *k, const char *kind, const char *qualname, const char *file, int64_t line,
         const char *label)
{
    if (strcmp(kind, "builtin") == 0) {
        k->file = cs__strdup("~");
        k->line = 0;
        k->name = cs__strdup(*label ? label : qualname);
    } else {
        const char *dot = strcmp(kind, "function") == 0 ? strrchr(qualname, '.') : NULL;
        k->file = cs__strdup(file);
        k->line = line;
        k->name = cs__strdup(dot ? dot + 1 : qualname);
    }
    return k->file && k->name ? CS_OK : CS_ENOMEM;
}

static int
pstats_keys(sqlite3 *db, pstate *p)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT IFNULL(max(id), 0) FROM functions", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return CS_EDB;
    }
    p->maxid = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    p->key_of = cs__malloc((size_t)(p->maxid + 1) * sizeof *p->key_of);
    if (p->key_of == NULL)
        return CS_ENOMEM;
    memset(p->key_of, 0xff, (size_t)(p->maxid + 1) * sizeof *p->key_of);
    if (sqlite3_prepare_v2(db,
                           "SELECT id, IFNULL(kind, ''), IFNULL(qualname, ''), IFNULL(file, ''),"
                           " line, IFNULL(label, '') FROM functions",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_EDB;
    fkey *fk = NULL;
    size_t n = 0, cap = 0;
    int rc = CS_OK;
    while (rc == CS_OK && sqlite3_step(st) == SQLITE_ROW) {
        fkey *v = cs__grow(fk, n, &cap, sizeof *v, 256);
        if (v == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        fk = v;
        fk[n].id = sqlite3_column_int64(st, 0);
        rc = make_key(&fk[n++], (const char *)sqlite3_column_text(st, 1),
                      (const char *)sqlite3_column_text(st, 2),
                      (const char *)sqlite3_column_text(st, 3), sqlite3_column_int64(st, 4),
                      (const char *)sqlite3_column_text(st, 5));
    }
    sqlite3_finalize(st);
    if (rc == CS_OK && n)
        qsort(fk, n, sizeof *fk, cmp_fkey);
    for (size_t i = 0; i < n && rc == CS_OK; i++) {
        /* sorted by key: equal keys are neighbours */
        const pkey *last = p->nk ? &p->k[p->nk - 1] : NULL;
        if (last == NULL || last->line != fk[i].line || strcmp(last->file, fk[i].file) != 0 ||
            strcmp(last->name, fk[i].name) != 0) {
            pkey *v = cs__realloc(p->k, (p->nk + 1) * sizeof *v);
            if (v == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            p->k = v;
            p->k[p->nk++] = (pkey){.file = fk[i].file, .name = fk[i].name, .line = fk[i].line};
            fk[i].file = fk[i].name = NULL;
        }
        if (fk[i].id >= 0 && fk[i].id <= p->maxid)
            p->key_of[fk[i].id] = (int32_t)(p->nk - 1);
    }
    for (size_t i = 0; i < n; i++) {
        cs__free(fk[i].file);
        cs__free(fk[i].name);
    }
    cs__free(fk);
    if (rc != CS_OK)
        return rc;
    p->open = cs__calloc(p->nk ? p->nk : 1, sizeof *p->open);
    return p->open ? CS_OK : CS_ENOMEM;
}

static int32_t
key_of(const pstate *p, int64_t fid)
{
    return fid >= 0 && fid <= p->maxid ? p->key_of[fid] : -1;
}

/* ---- counting from call rows --------------------------------------------------- */

/* Every call once, by id: each thread's calls come in start order, so the
 * calls open around one are those on a stack of ends. */
static int
count_calls(sqlite3 *db, pstate *p)
{
    typedef struct pframe {
        int64_t end;
        int32_t key, caller;
    } pframe;
    pframe *stack = NULL;
    size_t depth = 0, cap = 0;
    int64_t thread = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT c.function, c.thread, c.start_ns, c.wall_ns, c.self_ns"
                           " FROM calls c WHERE c.wall_ns IS NOT NULL ORDER BY c.id",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_EDB;
    int rc = CS_OK, src;
#define POP()                                                                                    \
    do {                                                                                         \
        pframe *fr = &stack[--depth];                                                            \
        p->open[fr->key]--;                                                                      \
        if (fr->caller >= 0)                                                                     \
            edge(p, fr->caller, fr->key)->open--; /* exists: no allocation */                    \
    } while (0)
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int32_t k = key_of(p, sqlite3_column_int64(st, 0));
        if (k < 0)
            continue;
        int64_t th = sqlite3_column_int64(st, 1), start = sqlite3_column_int64(st, 2);
        int64_t wall = sqlite3_column_int64(st, 3);
        double self = (double)sqlite3_column_int64(st, 4) / 1e9, total = (double)wall / 1e9;
        if (th != thread) {
            while (depth > 0)
                POP();
            thread = th;
        }
        while (depth > 0 && stack[depth - 1].end <= start)
            POP();
        int outer = p->open[k] == 0;
        ADD(&p->k[k], 1, (uint64_t)outer, self, outer ? total : 0);
        p->k[k].per_call = 1;
        int32_t caller = depth > 0 ? stack[depth - 1].key : -1;
        if (caller >= 0) {
            pedge *e = edge(p, caller, k);
            if (e == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            int pair_outer = e->open == 0;
            ADD(e, 1, (uint64_t)pair_outer, self, pair_outer ? total : 0);
            e->open++;
        }
        pframe *v = cs__grow(stack, depth, &cap, sizeof *v, 64);
        if (v == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        stack = v;
        stack[depth++] = (pframe){start + wall, k, caller};
        p->open[k]++;
    }
#undef POP
    if (rc == CS_OK && src != SQLITE_DONE)
        rc = CS_EDB;
    sqlite3_finalize(st);
    cs__free(stack);
    return rc;
}

/* ---- counting from the calling-context tree ------------------------------------ */

static int
count_tree(sqlite3 *db, pstate *p)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT thread, id, IFNULL(parent, 0), IFNULL(function, 0), flags,"
                           " calls, total_ns, self_ns FROM tree ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_OK; /* a database from before the tree: nothing to count */
    int32_t *kmap = NULL; /* tree.id -> its function's key */
    size_t mcap = 0;
    int rc = CS_OK, src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t th = sqlite3_column_int64(st, 0), node = sqlite3_column_int64(st, 1);
        int64_t parent = sqlite3_column_int64(st, 2);
        if (node <= 0 || node >= (1ll << 31) || parent < 0 || parent >= node)
            continue;
        (void)th; /* ids are unique across threads */
        if ((size_t)node >= mcap) {
            size_t cap = mcap ? mcap : 1024;
            while (cap <= (size_t)node)
                cap *= 2;
            int32_t *v = cs__realloc(kmap, cap * sizeof *v);
            if (v == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            memset(v + mcap, 0xff, (cap - mcap) * sizeof *v);
            kmap = v;
            mcap = cap;
        }
        int32_t k = key_of(p, sqlite3_column_int64(st, 3));
        kmap[node] = k;
        if (k < 0)
            continue;
        if (p->k[k].per_call)
            continue; /* (its callers too: the call rows have them) */
        uint32_t flags = (uint32_t)sqlite3_column_int64(st, 4);
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 5);
        double total = (double)sqlite3_column_int64(st, 6) / 1e9;
        double self = (double)sqlite3_column_int64(st, 7) / 1e9;
        int prim = !(flags & CS_CT_REC_FUNC), pair_prim = !(flags & CS_CT_REC_EDGE);
        ADD(&p->k[k], n, prim ? n : 0, self, prim ? total : 0);
        int32_t caller = parent > 0 ? kmap[parent] : -1;
        if (caller >= 0 && !(flags & CS_CT_TRUNC)) {
            pedge *e = edge(p, caller, k);
            if (e == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            ADD(e, n, pair_prim ? n : 0, self, pair_prim ? total : 0);
        }
    }
    if (rc == CS_OK && src != SQLITE_DONE)
        rc = CS_EDB;
    sqlite3_finalize(st);
    cs__free(kmap);
    return rc;
}

/* Profile rows from before the tree (schema 3): functions only. */
static void
count_legacy_profile(sqlite3 *db, pstate *p)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT function, sum(calls), sum(self_ns), sum(total_ns) FROM"
                           " profile WHERE thread IS NULL GROUP BY function",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int32_t k = key_of(p, sqlite3_column_int64(st, 0));
        if (k < 0)
            continue;
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 1);
        ADD(&p->k[k], n, n, (double)sqlite3_column_int64(st, 2) / 1e9,
            (double)sqlite3_column_int64(st, 3) / 1e9);
    }
    sqlite3_finalize(st);
}

/* ---- writing ----------------------------------------------------------------------- */

static int
write_dict(pstate *p, FILE *f, uint64_t *rows)
{
    /* the edges by callee, to write each function's callers together */
    pedge *byc = NULL;
    size_t ne = 0;
    if (p->en) {
        byc = cs__malloc(p->en * sizeof *byc);
        if (byc == NULL)
            return CS_ENOMEM;
        for (size_t j = 0; j < p->ecap; j++)
            if (p->e[j].caller >= 0)
                byc[ne++] = p->e[j];
        qsort(byc, ne, sizeof *byc, cmp_edge);
    }
    fputc('{', f); /* TYPE_DICT */
    size_t at = 0;
    for (size_t i = 0; i < p->nk; i++) {
        pkey *x = &p->k[i];
        while (at < ne && byc[at].callee < (int32_t)i)
            at++;
        if (x->nc == 0)
            continue;
        m_key(f, x->file, x->line, x->name);
        m_tuple(f, 5);
        m_int(f, (int64_t)x->cc);
        m_int(f, (int64_t)x->nc);
        m_float(f, x->tt);
        m_float(f, x->ct);
        fputc('{', f);
        for (; at < ne && byc[at].callee == (int32_t)i; at++) {
            pedge *e = &byc[at];
            pkey *c = &p->k[e->caller];
            m_key(f, c->file, c->line, c->name);
            m_tuple(f, 4); /* a caller's entry: (nc, cc, tt, ct), as cProfile's */
            m_int(f, (int64_t)e->nc);
            m_int(f, (int64_t)e->cc);
            m_float(f, e->tt);
            m_float(f, e->ct);
        }
        fputc('0', f); /* TYPE_NULL: the end of the callers */
        (*rows)++;
    }
    fputc('0', f);
    cs__free(byc);
    return CS_OK;
}

int
cs__export_pstats(sqlite3 *db, FILE *f, uint64_t *rows)
{
    pstate p;
    memset(&p, 0, sizeof p);
    int rc = pstats_keys(db, &p);
    if (rc == CS_OK)
        rc = count_calls(db, &p);
    if (rc == CS_OK)
        rc = count_tree(db, &p);
    if (rc == CS_OK) {
        count_legacy_profile(db, &p);
        rc = write_dict(&p, f, rows);
    }
    for (size_t i = 0; i < p.nk; i++) {
        cs__free(p.k[i].file);
        cs__free(p.k[i].name);
    }
    cs__free(p.k);
    cs__free(p.key_of);
    cs__free(p.e);
    cs__free(p.open);
    return rc;
}
