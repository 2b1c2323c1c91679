/* compare.c -- comparing runs: the significant digits that captured
 * values keep across repeated runs, and what changed between two runs.
 *
 * Calls are paired across runs by a key (the call's number, its call
 * site and occurrence, or the value of an argument), one function at a
 * time; only keys and call ids are held in memory, the values are read
 * back one aligned call at a time. See docs/compare.md. */
#include "cs_analysis.h"
#include "cs_value.h"

#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_SQL "CASE WHEN f.module = '' THEN f.qualname ELSE f.module || '.' || f.qualname END"
#define ORDER_SQL " ORDER BY p.start_wall_ns + (c.start_ns - p.start_mono_ns), c.id"
#define MAX_MISALIGNED 200

/* ---- one run -------------------------------------------------------------------- */

typedef struct runh {
    const char *dir;
    char *dbpath;
    cs_store *s;
    sqlite3 *db;
    sqlite3_stmt *q_args, *q_res, *q_blob;
    cs_buf args, res; /* the values of the aligned call being compared */
} runh;

static _Thread_local char errbuf[512];

const char *
cs_compare_last_error(void)
{
    return errbuf;
}

static int
fail(int rc, const char *fmt, const char *a, const char *b)
{
    snprintf(errbuf, sizeof errbuf, fmt, a ? a : "", b ? b : "");
    return rc;
}

static int
exec_sql(runh *r, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(r->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fail(CS_EDB, "%s: %s", r->dbpath, msg ? msg : "database error");
        sqlite3_free(msg);
        return CS_EDB;
    }
    return CS_OK;
}

static const void *
blob_of(void *ctx, uint64_t hash, uint64_t size)
{
    runh *r = ctx;
    sqlite3_reset(r->q_blob);
    sqlite3_bind_int64(r->q_blob, 1, (int64_t)hash);
    if (sqlite3_step(r->q_blob) != SQLITE_ROW ||
        (uint64_t)sqlite3_column_int64(r->q_blob, 0) != size ||
        (uint64_t)sqlite3_column_bytes(r->q_blob, 1) != size)
        return NULL;
    return size ? sqlite3_column_blob(r->q_blob, 1) : (const void *)"";
}

static int
run_open(runh *r, const char *dir)
{
    memset(r, 0, sizeof *r);
    r->dir = dir;
    cs_buf_init(&r->args);
    cs_buf_init(&r->res);
    r->dbpath = cs__path_join(dir, "run.db");
    if (r->dbpath == NULL)
        return CS_ENOMEM;
    if (!cs__exists(r->dbpath))
        return fail(CS_ENOENT, "%s: no run.db (not a recorded run?)%s", dir, NULL);
    int rc = cs_store_open(r->dbpath, 0, &r->s);
    if (rc != CS_OK)
        return fail(rc, "%s%s", cs_store_last_error(), NULL);
    r->db = cs_store_db(r->s);
    /* many runs open at once: a small page cache each */
    sqlite3_exec(r->db, "PRAGMA cache_size = -4096", NULL, NULL, NULL);
    if (sqlite3_prepare_v2(r->db, "SELECT data FROM args WHERE call = ?", -1, &r->q_args,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, "SELECT data FROM results WHERE call = ?", -1, &r->q_res,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, "SELECT size, data FROM blobs WHERE id = ?", -1, &r->q_blob,
                           NULL) != SQLITE_OK)
        return fail(CS_ENOTDB, "%s: %s", r->dbpath, sqlite3_errmsg(r->db));
    return CS_OK;
}

static void
run_close(runh *r)
{
    sqlite3_finalize(r->q_args);
    sqlite3_finalize(r->q_res);
    sqlite3_finalize(r->q_blob);
    cs_store_close(r->s);
    cs__free(r->dbpath);
    cs_buf_free(&r->args);
    cs_buf_free(&r->res);
}

/* The value (args or result) of call `id` into `b`; 0 if none. */
static int
fetch_value(sqlite3_stmt *q, int64_t id, cs_buf *b)
{
    b->len = 0;
    b->failed = 0;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, id);
    if (sqlite3_step(q) != SQLITE_ROW || sqlite3_column_type(q, 0) == SQLITE_NULL)
        return 0;
    int n = sqlite3_column_bytes(q, 0);
    cs_buf_append(b, sqlite3_column_blob(q, 0), (size_t)n);
    return !b->failed;
}

/* ---- names ------------------------------------------------------------------------ */

typedef struct names {
    char **v;
    size_t n, cap;
} names;

static int
names_add(names *x, const char *s)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 32;
        char **v = cs__realloc(x->v, cap * sizeof *v);
        if (v == NULL)
            return CS_ENOMEM;
        x->v = v;
        x->cap = cap;
    }
    if ((x->v[x->n] = cs__strdup(s)) == NULL)
        return CS_ENOMEM;
    x->n++;
    return CS_OK;
}

static void
names_free(names *x)
{
    for (size_t i = 0; i < x->n; i++)
        cs__free(x->v[i]);
    cs__free(x->v);
    memset(x, 0, sizeof *x);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
names_has(const names *x, const char *s)
{
    return x->n > 0 && bsearch(&s, x->v, x->n, sizeof *x->v, cmp_str) != NULL;
}

/* The functions of a run that have captured values, sorted. */
static int
captured_functions(runh *r, names *out)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(
        r->db,
        "SELECT DISTINCT " NAME_SQL " FROM functions f WHERE f.id IN"
        " (SELECT c.function FROM calls c WHERE c.id IN (SELECT call FROM args)"
        " OR c.id IN (SELECT call FROM results)) ORDER BY 1",
        -1, &st, NULL);
    if (src != SQLITE_OK)
        return fail(CS_ENOTDB, "%s: %s", r->dbpath, sqlite3_errmsg(r->db));
    int rc = CS_OK;
    while (rc == CS_OK && (src = sqlite3_step(st)) == SQLITE_ROW)
        rc = names_add(out, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc == CS_OK && src != SQLITE_DONE)
        rc = fail(CS_ENOTDB, "%s: %s", r->dbpath, sqlite3_errmsg(r->db));
    if (rc == CS_OK && out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, cmp_str);
    return rc;
}

/* ---- keys ---------------------------------------------------------------------------- */

typedef struct ckey {
    uint64_t key;
    int64_t call;
    uint64_t ordinal; /* the call's number in its run */
} ckey;

typedef struct keys {
    ckey *v;
    size_t n, cap;
} keys;

static int
keys_add(keys *k, uint64_t key, int64_t call, uint64_t ordinal)
{
    {
        ckey *v = cs__grow(k->v, k->n, &k->cap, sizeof *v, 256);
        if (v == NULL)
            return CS_ENOMEM;
        k->v = v;
    }
    k->v[k->n++] = (ckey){key, call, ordinal};
    return CS_OK;
}

static int
cmp_key(const void *a, const void *b)
{
    const ckey *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->ordinal < y->ordinal ? -1 : x->ordinal > y->ordinal;
}

/* An occurrence counter per sub-key (a small open hash map). */
typedef struct occ {
    uint64_t *k, *n;
    size_t cap, used;
} occ;

static uint64_t
occ_next(occ *o, uint64_t key)
{
    if (o->used * 2 >= o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        uint64_t *k = cs__calloc(cap, sizeof *k), *n = cs__calloc(cap, sizeof *n);
        if (k == NULL || n == NULL) {
            cs__free(k);
            cs__free(n);
            return 0;
        }
        for (size_t i = 0; i < o->cap; i++) {
            if (o->n[i] == 0)
                continue;
            size_t j = (size_t)(o->k[i] * 0x9E3779B97F4A7C15ull) & (cap - 1);
            while (n[j])
                j = (j + 1) & (cap - 1);
            k[j] = o->k[i];
            n[j] = o->n[i];
        }
        cs__free(o->k);
        cs__free(o->n);
        o->k = k;
        o->n = n;
        o->cap = cap;
    }
    size_t j = (size_t)(key * 0x9E3779B97F4A7C15ull) & (o->cap - 1);
    while (o->n[j] && o->k[j] != key)
        j = (j + 1) & (o->cap - 1);
    if (o->n[j] == 0) {
        o->k[j] = key;
        o->used++;
    }
    return ++o->n[j];
}

static void
occ_free(occ *o)
{
    cs__free(o->k);
    cs__free(o->n);
    memset(o, 0, sizeof *o);
}

static uint64_t
mix_key(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    return x ^ (x >> 29);
}

/* The positional parameter names of function `name` in `r`, from its
 * recorded signature: kinds 0 and 1 in order, then the *args name. */
static int
positional_names(runh *r, const char *name, names *out, char **star)
{
    *star = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT f.signature FROM functions f WHERE " NAME_SQL " = ?"
                           " AND f.signature IS NOT NULL LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return CS_OK;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        cs_vreader v;
        cs_vr_init(&v, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        if (cs_vr_u8(&v) == CS_V_TUPLE) {
            uint32_t n = cs_vr_u32(&v);
            for (uint32_t i = 0; i < n && !v.bad; i++) {
                unsigned tag = cs_vr_u8(&v);
                uint32_t k = cs_vr_u32(&v);
                if (tag != CS_V_TUPLE || k < 2 || cs_vr_u8(&v) != CS_V_STR)
                    break;
                const char *s;
                int blob;
                uint64_t h, len = cs_vr_data(&v, &s, &blob, &h);
                char pname[256];
                snprintf(pname, sizeof pname, "%.*s", s ? (int)len : 0, s ? s : "");
                int64_t kind = -1;
                if (cs_vr_u8(&v) == CS_V_INT)
                    kind = (int64_t)cs_vr_u64(&v);
                for (uint32_t j = 2; j < k; j++)
                    cs_value_skip(&v);
                if (kind == 0 || kind == 1)
                    names_add(out, pname);
                else if (kind == 2 && *star == NULL)
                    *star = cs__strdup(pname);
            }
        }
    }
    sqlite3_finalize(st);
    return CS_OK;
}

/* One top-level value of a call: an argument (by name) or the result. */
typedef struct slot {
    char name[256];
    const unsigned char *p;
    size_t n;
} slot;

typedef struct slots {
    slot *v;
    size_t n, cap;
} slots;

static void
slots_add(slots *s, const char *name, const unsigned char *p, size_t n)
{
    {
        slot *v = cs__grow(s->v, s->n, &s->cap, sizeof *v, 8);
        if (v == NULL)
            return;
        s->v = v;
    }
    slot *x = &s->v[s->n++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->p = p;
    x->n = n;
}

/* The arguments of an ARGS value, as slots named by parameter: positional
 * names from the signature, "args[i]" beyond them (or "<star>[i]"), then
 * the keywords. A whole value held in a blob is read from `r` into `hold`. */
static int
split_args(runh *r, const unsigned char *p, size_t n, const names *pos, const char *star,
           slots *out, cs_buf *hold)
{
    out->n = 0;
    cs_vreader v;
    cs_vr_init(&v, p, n);
    if (n > 0 && p[0] == CS_V_REF) {
        cs_vr_u8(&v);
        uint64_t h = cs_vr_u64(&v), size = cs_vr_u64(&v);
        const void *b = v.bad ? NULL : blob_of(r, h, size);
        if (b == NULL)
            return CS_EFORMAT;
        hold->len = 0;
        cs_buf_append(hold, b, size);
        if (hold->failed)
            return CS_ENOMEM;
        cs_vr_init(&v, hold->data, hold->len);
    }
    if (cs_vr_u8(&v) != CS_V_TUPLE || cs_vr_u32(&v) != 2 || cs_vr_u8(&v) != CS_V_TUPLE)
        return CS_EFORMAT;
    uint32_t np = cs_vr_u32(&v);
    for (uint32_t i = 0; i < np && !v.bad; i++) {
        const unsigned char *start = v.p;
        if (!cs_value_skip(&v))
            return CS_EFORMAT;
        char name[200];
        if (i < pos->n)
            snprintf(name, sizeof name, "%s", pos->v[i]);
        else
            snprintf(name, sizeof name, "%s[%zu]", star ? star : "args", (size_t)i - pos->n);
        slots_add(out, name, start, (size_t)(v.p - start));
    }
    if (cs_vr_u8(&v) != CS_V_DICT)
        return CS_EFORMAT;
    uint32_t nk = cs_vr_u32(&v);
    for (uint32_t i = 0; i < nk && !v.bad; i++) {
        if (cs_vr_u8(&v) != CS_V_STR)
            return CS_EFORMAT;
        const char *s;
        int blob;
        uint64_t h, len = cs_vr_data(&v, &s, &blob, &h);
        if (s == NULL)
            return CS_EFORMAT;
        char name[200];
        snprintf(name, sizeof name, "%.*s", (int)(len < 190 ? len : 190), s);
        const unsigned char *start = v.p;
        if (!cs_value_skip(&v))
            return CS_EFORMAT;
        slots_add(out, name, start, (size_t)(v.p - start));
    }
    return v.bad || v.p != v.end ? CS_EFORMAT : CS_OK;
}

/* The keys of the calls of function `name` in run `r`, sorted by key. */
static int
load_keys(runh *r, const char *name, const cs_compare_opts *o, keys *out, uint64_t *with_arg)
{
    out->n = 0;
    *with_arg = 0;
    const char *sql =
        o->align == CS_ALIGN_CALLSITE
            ? "SELECT c.id, IFNULL((SELECT " NAME_SQL " FROM calls pc JOIN functions f ON"
              " f.id = pc.function WHERE pc.id = c.parent), '')"
              " FROM calls c JOIN threads t ON t.id = c.thread JOIN processes p ON"
              " p.id = t.process WHERE c.function IN (SELECT f.id FROM functions f WHERE " NAME_SQL
              " = ?)" ORDER_SQL
        : o->align == CS_ALIGN_ARG
            ? "SELECT c.id, a.data FROM calls c JOIN threads t ON t.id = c.thread"
              " JOIN processes p ON p.id = t.process LEFT JOIN args a ON a.call = c.id"
              " WHERE c.function IN (SELECT f.id FROM functions f WHERE " NAME_SQL " = ?)" ORDER_SQL
            : "SELECT c.id FROM calls c JOIN threads t ON t.id = c.thread"
              " JOIN processes p ON p.id = t.process"
              " WHERE c.function IN (SELECT f.id FROM functions f WHERE " NAME_SQL " = ?)" ORDER_SQL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK)
        return fail(CS_ENOTDB, "%s: %s", r->dbpath, sqlite3_errmsg(r->db));
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    names pos = {0};
    char *star = NULL;
    if (o->align == CS_ALIGN_ARG)
        positional_names(r, name, &pos, &star);
    occ oc = {0};
    slots sl = {0};
    cs_buf hold;
    cs_buf_init(&hold);
    int rc = CS_OK, src;
    uint64_t ordinal = 0;
    while (rc == CS_OK && (src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        ordinal++;
        uint64_t key = ordinal;
        if (o->align == CS_ALIGN_CALLSITE) {
            const char *parent = (const char *)sqlite3_column_text(st, 1);
            uint64_t sub = cs_hash64(parent ? parent : "", parent ? strlen(parent) : 0);
            key = mix_key(sub, occ_next(&oc, sub));
        } else if (o->align == CS_ALIGN_ARG) {
            int found = 0;
            uint64_t sub = 0;
            const unsigned char *p = sqlite3_column_blob(st, 1);
            size_t n = (size_t)sqlite3_column_bytes(st, 1);
            if (p && split_args(r, p, n, &pos, star, &sl, &hold) == CS_OK) {
                for (size_t i = 0; i < sl.n && !found; i++)
                    if (strcmp(sl.v[i].name, o->align_arg) == 0) {
                        sub = cs_hash64(sl.v[i].p, sl.v[i].n);
                        found = 1;
                    }
            }
            if (found) {
                key = mix_key(sub, occ_next(&oc, sub));
                *with_arg += 1;
            } else {
                /* a call without the argument pairs with no other */
                key = mix_key(cs_hash64(r->dir, strlen(r->dir)), ordinal);
            }
        }
        rc = keys_add(out, key, id, ordinal);
    }
    sqlite3_finalize(st);
    occ_free(&oc);
    cs__free(sl.v);
    cs_buf_free(&hold);
    names_free(&pos);
    cs__free(star);
    if (rc == CS_OK && o->align != CS_ALIGN_NUMBER && out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, cmp_key);
    return rc;
}

static int
cmp_ordinal(const void *a, const void *b)
{
    const ckey *x = a, *y = b;
    return x->ordinal < y->ordinal ? -1 : x->ordinal > y->ordinal;
}

static const ckey *
find_key(const keys *k, uint64_t key)
{
    ckey probe = {.key = key, .ordinal = 0};
    size_t lo = 0, hi = k->n;
    while (lo < hi) { /* the first entry with this key */
        size_t mid = (lo + hi) / 2;
        if (cmp_key(&k->v[mid], &probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < k->n && k->v[lo].key == key ? &k->v[lo] : NULL;
}

/* ---- results ------------------------------------------------------------------------- */

typedef struct acc_row {
    cs_digit_row row;
    size_t cap;
} acc_row;

typedef struct cmp_state {
    const cs_compare_opts *o;
    cs_compare_result *res;
    runh *runs;
    size_t n;
    acc_row *rows;
    size_t nrows, caprows;
    cs_buf *nums; /* per run: the cs_num of the value at hand */
    double *re, *im;
} cmp_state;

static int
misaligned(cmp_state *c, const char *function, const char *fmt, ...) CS_PRINTF(3, 4);

static int
misaligned(cmp_state *c, const char *function, const char *fmt, ...)
{
    cs_compare_result *r = c->res;
    r->mis_total++;
    if (r->nmis >= MAX_MISALIGNED)
        return CS_OK;
    cs_misaligned *v = cs__realloc(r->mis, (r->nmis + 1) * sizeof *v);
    if (v == NULL)
        return CS_ENOMEM;
    r->mis = v;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    v[r->nmis].function = cs__strdup(function);
    v[r->nmis].what = cs__strdup(what);
    r->nmis++;
    return v[r->nmis - 1].function && v[r->nmis - 1].what ? CS_OK : CS_ENOMEM;
}

static acc_row *
row_for(cmp_state *c, const char *function, const char *value)
{
    for (size_t i = c->nrows; i-- > 0;)
        if (strcmp(c->rows[i].row.function, function) == 0 &&
            strcmp(c->rows[i].row.value, value) == 0)
            return &c->rows[i];
    {
        acc_row *v = cs__grow(c->rows, c->nrows, &c->caprows, sizeof *v, 16);
        if (v == NULL)
            return NULL;
        c->rows = v;
    }
    acc_row *a = &c->rows[c->nrows];
    memset(a, 0, sizeof *a);
    a->row.function = cs__strdup(function);
    a->row.value = cs__strdup(value);
    a->row.min = INFINITY;
    if (a->row.function == NULL || a->row.value == NULL)
        return NULL;
    c->nrows++;
    return a;
}

/* Compare one value (slot `name`) of one aligned call across the runs,
 * whose bytes are at p[i], n[i]. */
static int
compare_value(cmp_state *c, const char *function, const char *value, uint64_t call_no,
              const unsigned char *const *p, const size_t *n)
{
    size_t N = c->n;
    for (size_t i = 0; i < N; i++) {
        c->nums[i].len = 0;
        c->nums[i].failed = 0;
        if (cs_value_numbers(p[i], n[i], blob_of, &c->runs[i], &c->nums[i]) != CS_OK)
            return misaligned(c, function,
                              "call %llu: %s cannot be read in run %zu (%s): damaged or missing"
                              " data",
                              (unsigned long long)call_no, value, i + 1, c->runs[i].dir);
    }
    size_t count = c->nums[0].len / sizeof(cs_num);
    if (count == 0)
        return CS_OK; /* no numbers: nothing to compare */
    for (size_t i = 1; i < N; i++) {
        size_t k = c->nums[i].len / sizeof(cs_num);
        if (k != count)
            return misaligned(c, function,
                              "call %llu: %s holds %zu numbers in run 1 but %zu in run %zu (%s)",
                              (unsigned long long)call_no, value, count, k, i + 1,
                              c->runs[i].dir);
    }
    double worst = INFINITY;
    uint64_t worst_i = 0;
    int unequal = 0;
    for (size_t e = 0; e < count; e++) {
        const cs_num *first = (const cs_num *)c->nums[0].data + e;
        double d;
        int all_exact = 1;
        for (size_t i = 0; i < N && all_exact; i++)
            all_exact = ((const cs_num *)c->nums[i].data + e)->kind == CS_NUM_EXACT;
        if (all_exact) {
            d = first->max_digits;
            for (size_t i = 1; i < N; i++) {
                const cs_num *x = (const cs_num *)c->nums[i].data + e;
                if (x->kind != CS_NUM_EXACT || x->exact != first->exact) {
                    d = 0;
                    unequal = 1;
                }
            }
        } else {
            /* floats, or ints in some runs and floats in others: numbers */
            int complex = 0;
            double maxd = first->max_digits;
            for (size_t i = 0; i < N; i++) {
                const cs_num *x = (const cs_num *)c->nums[i].data + e;
                c->re[i] = x->kind == CS_NUM_EXACT ? (double)x->exact : x->re;
                c->im[i] = x->kind == CS_NUM_EXACT ? 0 : x->im;
                complex |= x->kind == CS_NUM_COMPLEX;
                if (x->kind != CS_NUM_EXACT && x->max_digits < maxd)
                    maxd = x->max_digits;
            }
            d = cs_digits_of(&c->res->digits, c->re, complex ? c->im : NULL, 1, maxd);
        }
        if (d < worst) {
            worst = d;
            worst_i = e;
        }
    }
    acc_row *a = row_for(c, function, value);
    if (a == NULL)
        return CS_ENOMEM;
    cs_digit_row *r = &a->row;
    if (r->calls == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        double *pc = cs__realloc(r->per_call, cap * sizeof *pc);
        if (pc == NULL)
            return CS_ENOMEM;
        r->per_call = pc;
        uint64_t *cn = cs__realloc(r->call_no, cap * sizeof *cn);
        if (cn == NULL)
            return CS_ENOMEM;
        r->call_no = cn;
        a->cap = cap;
    }
    r->per_call[r->calls] = worst;
    r->call_no[r->calls] = call_no;
    r->calls++;
    r->unequal += (uint64_t)unequal;
    if (worst < r->min) {
        r->min = worst;
        r->worst_call = call_no;
        r->worst_element = worst_i;
        r->elements = count;
    }
    c->res->values_compared++;
    return CS_OK;
}

/* Compare one aligned call (the entries e[i] of each run). */
static int
compare_call(cmp_state *c, const char *function, const ckey *const *e, const names *pos,
             const char *star)
{
    size_t N = c->n;
    uint64_t call_no = e[0]->ordinal;
    int rc = CS_OK;
    const unsigned char **p = cs__calloc(N, sizeof *p);
    size_t *len = cs__calloc(N, sizeof *len);
    slots *sl = cs__calloc(N, sizeof *sl);
    cs_buf *hold = cs__calloc(N, sizeof *hold);
    if (!p || !len || !sl || !hold) {
        rc = CS_ENOMEM;
        goto out;
    }
    /* the result */
    size_t have_n = 0, missing_at = 0;
    for (size_t i = 0; i < N; i++) {
        if (fetch_value(c->runs[i].q_res, e[i]->call, &c->runs[i].res))
            have_n++;
        else if (missing_at == 0)
            missing_at = i + 1;
    }
    int have = have_n == N;
    if (have_n > 0 && !have) {
        rc = misaligned(c, function, "call %llu: no result in run %zu (%s): it raised there,"
                                     " or was not captured",
                        (unsigned long long)call_no, missing_at, c->runs[missing_at - 1].dir);
        if (rc != CS_OK)
            goto out;
    }
    if (have) {
        for (size_t i = 0; i < N; i++) {
            p[i] = (const unsigned char *)c->runs[i].res.data;
            len[i] = c->runs[i].res.len;
        }
        if ((rc = compare_value(c, function, "result", call_no, p, len)) != CS_OK)
            goto out;
    }
    /* the arguments, by name */
    have = 1;
    for (size_t i = 0; i < N && have; i++)
        have = fetch_value(c->runs[i].q_args, e[i]->call, &c->runs[i].args);
    if (!have)
        goto out;
    for (size_t i = 0; i < N; i++) {
        cs_buf_init(&hold[i]);
        if (split_args(&c->runs[i], (const unsigned char *)c->runs[i].args.data,
                       c->runs[i].args.len, pos, star, &sl[i], &hold[i]) != CS_OK) {
            rc = misaligned(c, function, "call %llu: the arguments in run %zu (%s) are damaged",
                            (unsigned long long)call_no, i + 1, c->runs[i].dir);
            goto out;
        }
    }
    for (size_t k = 0; k < sl[0].n && rc == CS_OK; k++) {
        const char *name = sl[0].v[k].name;
        int all = 1;
        for (size_t i = 0; i < N; i++) {
            size_t j = 0;
            while (j < sl[i].n && strcmp(sl[i].v[j].name, name) != 0)
                j++;
            if (j == sl[i].n) {
                rc = misaligned(c, function, "call %llu: argument %s missing in run %zu (%s)",
                                (unsigned long long)call_no, name, i + 1, c->runs[i].dir);
                all = 0;
                break;
            }
            p[i] = sl[i].v[j].p;
            len[i] = sl[i].v[j].n;
        }
        if (all)
            rc = compare_value(c, function, name, call_no, p, len);
    }
    /* arguments passed in other runs but not in the first */
    for (size_t i = 1; i < N && rc == CS_OK; i++)
        for (size_t j = 0; j < sl[i].n && rc == CS_OK; j++) {
            size_t k = 0;
            while (k < sl[0].n && strcmp(sl[0].v[k].name, sl[i].v[j].name) != 0)
                k++;
            if (k == sl[0].n)
                rc = misaligned(c, function, "call %llu: argument %s only in run %zu (%s)",
                                (unsigned long long)call_no, sl[i].v[j].name, i + 1,
                                c->runs[i].dir);
        }
out:
    if (sl)
        for (size_t i = 0; i < N; i++)
            cs__free(sl[i].v);
    if (hold)
        for (size_t i = 0; i < N; i++)
            cs_buf_free(&hold[i]);
    cs__free(p);
    cs__free(len);
    cs__free(sl);
    cs__free(hold);
    return rc;
}

static int
compare_function(cmp_state *c, const char *name)
{
    size_t N = c->n;
    keys *k = cs__calloc(N, sizeof *k);
    const ckey **e = cs__calloc(N, sizeof *e);
    names pos = {0};
    char *star = NULL;
    int rc = k && e ? CS_OK : CS_ENOMEM;
    uint64_t with_arg = 0;
    for (size_t i = 0; i < N && rc == CS_OK; i++) {
        uint64_t w;
        rc = load_keys(&c->runs[i], name, c->o, &k[i], &w);
        with_arg += w;
    }
    if (rc == CS_OK && c->o->align == CS_ALIGN_ARG && with_arg == 0) {
        rc = misaligned(c, name, "no call has an argument %s to pair the runs by",
                        c->o->align_arg);
        goto done;
    }
    if (rc == CS_OK)
        rc = positional_names(&c->runs[0], name, &pos, &star);
    /* walk the first run's calls in their order */
    keys order = {0};
    if (rc == CS_OK) {
        order.v = cs__malloc((k[0].n ? k[0].n : 1) * sizeof *order.v);
        if (order.v == NULL)
            rc = CS_ENOMEM;
        else {
            memcpy(order.v, k[0].v, k[0].n * sizeof *order.v);
            order.n = k[0].n;
        }
    }
    if (rc == CS_OK && c->o->align != CS_ALIGN_NUMBER)
        qsort(order.v, order.n, sizeof *order.v, cmp_ordinal); /* back to call order */
    for (size_t x = 0; x < order.n && rc == CS_OK; x++) {
        e[0] = &order.v[x];
        int all = 1;
        for (size_t i = 1; i < N; i++) {
            e[i] = c->o->align == CS_ALIGN_NUMBER
                       ? (order.v[x].ordinal <= k[i].n ? &k[i].v[order.v[x].ordinal - 1] : NULL)
                       : find_key(&k[i], order.v[x].key);
            if (e[i] == NULL) {
                rc = misaligned(c, name, "call %llu: missing in run %zu (%s)",
                                (unsigned long long)order.v[x].ordinal, i + 1, c->runs[i].dir);
                all = 0;
            }
        }
        if (all && rc == CS_OK)
            rc = compare_call(c, name, e, &pos, star);
    }
    /* calls of the other runs with no partner in the first */
    for (size_t i = 1; i < N && rc == CS_OK; i++) {
        uint64_t extra = 0, first = 0;
        for (size_t j = 0; j < k[i].n; j++) {
            int paired = c->o->align == CS_ALIGN_NUMBER ? k[i].v[j].ordinal <= k[0].n
                                                        : find_key(&k[0], k[i].v[j].key) != NULL;
            if (!paired && extra++ == 0)
                first = k[i].v[j].ordinal;
        }
        if (extra)
            rc = misaligned(c, name, "%llu extra call(s) in run %zu (%s), the first is call %llu",
                            (unsigned long long)extra, i + 1, c->runs[i].dir,
                            (unsigned long long)first);
    }
    cs__free(order.v);
done:
    if (k)
        for (size_t i = 0; i < N; i++)
            cs__free(k[i].v);
    cs__free(k);
    cs__free(e);
    names_free(&pos);
    cs__free(star);
    return rc;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int
cmp_row(const void *a, const void *b)
{
    const cs_digit_row *x = a, *y = b;
    if (x->min != y->min)
        return x->min < y->min ? -1 : 1;
    int r = strcmp(x->function, y->function);
    return r ? r : strcmp(x->value, y->value);
}

/* ---- storing ------------------------------------------------------------------------- */

static const char *const method_names[] = {"", "cnh", "general"};
static const char *const align_names[] = {"number", "callsite", "arg"};

static int
store_one(runh *r, const cs_compare_result *res, const cs_compare_opts *o, const char *runs_json,
          int per_call, int64_t *id)
{
    sqlite3 *db = r->db;
    int rc = exec_sql(r, "BEGIN IMMEDIATE");
    if (rc != CS_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    char align[200];
    snprintf(align, sizeof align, "%s%s%s", align_names[o->align],
             o->align == CS_ALIGN_ARG ? ":" : "", o->align == CS_ALIGN_ARG ? o->align_arg : "");
    int src = sqlite3_prepare_v2(db,
                                 "INSERT INTO comparisons(created_ns, kind, runs, method,"
                                 " confidence, probability, align) VALUES(?, 'stability', ?, ?,"
                                 " ?, ?, ?)",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (int64_t)cs_clock_wall_ns());
        sqlite3_bind_text(st, 2, runs_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, method_names[o->method], -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 4, o->confidence);
        sqlite3_bind_double(st, 5, o->probability);
        sqlite3_bind_text(st, 6, align, -1, SQLITE_STATIC);
        src = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    st = NULL;
    *id = sqlite3_last_insert_rowid(db);
    if (src == SQLITE_OK)
        src = sqlite3_prepare_v2(db,
                                 "INSERT INTO digits(comparison, function, value, calls,"
                                 " elements, min, median, max, worst_call, worst_element,"
                                 " unequal) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                                 -1, &st, NULL);
    for (size_t i = 0; i < res->nrows && src == SQLITE_OK; i++) {
        const cs_digit_row *x = &res->rows[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, *id);
        sqlite3_bind_text(st, 2, x->function, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, x->value, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (int64_t)x->calls);
        sqlite3_bind_int64(st, 5, (int64_t)x->elements);
        sqlite3_bind_double(st, 6, x->min);
        sqlite3_bind_double(st, 7, x->median);
        sqlite3_bind_double(st, 8, x->max);
        sqlite3_bind_int64(st, 9, (int64_t)x->worst_call);
        sqlite3_bind_int64(st, 10, (int64_t)x->worst_element);
        sqlite3_bind_int64(st, 11, (int64_t)x->unequal);
        src = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (per_call && src == SQLITE_OK)
        src = sqlite3_prepare_v2(db,
                                 "INSERT INTO digits_calls(comparison, function, value, call,"
                                 " digits) VALUES(?,?,?,?,?)",
                                 -1, &st, NULL);
    for (size_t i = 0; per_call && i < res->nrows && src == SQLITE_OK; i++) {
        const cs_digit_row *x = &res->rows[i];
        for (uint64_t j = 0; j < x->calls && src == SQLITE_OK; j++) {
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, *id);
            sqlite3_bind_text(st, 2, x->function, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, x->value, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, (int64_t)x->call_no[j]);
            sqlite3_bind_double(st, 5, x->per_call[j]);
            src = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        }
    }
    sqlite3_finalize(st);
    if (src != SQLITE_OK) {
        fail(CS_EDB, "%s: %s", r->dbpath, sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return CS_EDB;
    }
    return exec_sql(r, "COMMIT");
}

/* ---- the comparison ---------------------------------------------------------------- */

int
cs_compare(const char *const *dirs, size_t n, const cs_compare_opts *o, cs_compare_result *out)
{
    memset(out, 0, sizeof *out);
    out->nruns = n;
    if (n < 2)
        return fail(CS_EINVAL, "compare needs at least 2 runs%s%s", NULL, NULL);
    if (o->align == CS_ALIGN_ARG && (o->align_arg == NULL || !*o->align_arg))
        return fail(CS_EINVAL, "align by argument: name the argument%s%s", NULL, NULL);
    if (cs_digits_prepare(&out->digits, o->method, o->confidence, o->probability, n) != CS_OK)
        return fail(CS_EINVAL,
                    "bad method, confidence or probability (they must be in (0, 1))%s%s", NULL,
                    NULL);
    cmp_state c = {.o = o, .res = out, .n = n};
    c.runs = cs__calloc(n, sizeof *c.runs);
    c.nums = cs__calloc(n, sizeof *c.nums);
    c.re = cs__calloc(n, sizeof *c.re);
    c.im = cs__calloc(n, sizeof *c.im);
    names *fn = cs__calloc(n, sizeof *fn);
    int rc = c.runs && c.nums && c.re && c.im && fn ? CS_OK : CS_ENOMEM;
    size_t opened = 0;
    for (size_t i = 0; i < n && rc == CS_OK; i++, opened++) {
        rc = run_open(&c.runs[i], dirs[i]);
        cs_buf_init(&c.nums[i]);
        if (rc == CS_OK)
            rc = captured_functions(&c.runs[i], &fn[i]);
        if (rc == CS_OK && fn[i].n == 0)
            rc = fail(CS_ENOENT,
                      "%s: no captured values in this run (record with --args/--result, or"
                      " @callscope.monitor(args=True, result=True))%s",
                      dirs[i], NULL);
    }
    if (rc != CS_OK)
        goto out;
    /* the functions of every run; those missing somewhere are reported */
    names all = {0}, common = {0};
    for (size_t i = 0; i < n && rc == CS_OK; i++)
        for (size_t j = 0; j < fn[i].n && rc == CS_OK; j++)
            if (!names_has(&all, fn[i].v[j])) {
                rc = names_add(&all, fn[i].v[j]);
                qsort(all.v, all.n, sizeof *all.v, cmp_str);
            }
    for (size_t j = 0; j < all.n && rc == CS_OK; j++) {
        if (!cs_name_matches(o->filter, all.v[j]))
            continue;
        size_t missing = 0;
        for (size_t i = 0; i < n && rc == CS_OK; i++)
            if (!names_has(&fn[i], all.v[j])) {
                missing++;
                rc = misaligned(&c, all.v[j], "no captured calls in run %zu (%s)", i + 1,
                                dirs[i]);
            }
        if (missing == 0 && rc == CS_OK)
            rc = names_add(&common, all.v[j]);
    }
    if (rc == CS_OK && common.n == 0)
        rc = fail(CS_ENOENT,
                  "the runs have no function with captured values in common%s%s (are they runs"
                  " of the same program?)",
                  o->filter ? " matching " : "", o->filter ? o->filter : "");
    for (size_t j = 0; j < common.n && rc == CS_OK; j++)
        rc = compare_function(&c, common.v[j]);
    names_free(&all);
    names_free(&common);
    if (rc != CS_OK)
        goto out;
    /* rows: min, median, max */
    out->rows = cs__calloc(c.nrows ? c.nrows : 1, sizeof *out->rows);
    if (out->rows == NULL) {
        rc = CS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < c.nrows; i++) {
        cs_digit_row *r = &c.rows[i].row;
        double *tmp = cs__malloc((r->calls ? r->calls : 1) * sizeof *tmp);
        if (tmp == NULL) {
            rc = CS_ENOMEM;
            goto out;
        }
        memcpy(tmp, r->per_call, r->calls * sizeof *tmp);
        qsort(tmp, r->calls, sizeof *tmp, cmp_double);
        r->max = r->calls ? tmp[r->calls - 1] : 0;
        r->median = r->calls == 0 ? 0
                    : r->calls % 2 ? tmp[r->calls / 2]
                                   : 0.5 * (tmp[r->calls / 2 - 1] + tmp[r->calls / 2]);
        if (r->calls == 0)
            r->min = 0;
        cs__free(tmp);
        out->rows[out->nrows++] = *r;
        memset(r, 0, sizeof *r);
    }
    qsort(out->rows, out->nrows, sizeof *out->rows, cmp_row);
    if (o->store) {
        cs_buf runs;
        cs_buf_init(&runs);
        cs_buf_append(&runs, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                cs_buf_append(&runs, ",", 1);
            cs__json_str(&runs, dirs[i], strlen(dirs[i]));
        }
        cs_buf_append(&runs, "]", 1);
        for (size_t i = 0; i < n && rc == CS_OK; i++) {
            int64_t id = 0;
            rc = store_one(&c.runs[i], out, o, runs.failed ? "[]" : runs.data, i == 0, &id);
            if (i == 0)
                out->comparison = id;
        }
        cs_buf_free(&runs);
    }
out:
    for (size_t i = 0; c.rows && i < c.nrows; i++) {
        cs__free(c.rows[i].row.function);
        cs__free(c.rows[i].row.value);
        cs__free(c.rows[i].row.per_call);
        cs__free(c.rows[i].row.call_no);
    }
    cs__free(c.rows);
    for (size_t i = 0; i < opened; i++) {
        run_close(&c.runs[i]);
        cs_buf_free(&c.nums[i]);
        names_free(&fn[i]);
    }
    cs__free(c.runs);
    cs__free(c.nums);
    cs__free(c.re);
    cs__free(c.im);
    cs__free(fn);
    if (rc != CS_OK)
        cs_compare_free(out);
    return rc;
}

void
cs_compare_free(cs_compare_result *r)
{
    for (size_t i = 0; i < r->nrows; i++) {
        cs__free(r->rows[i].function);
        cs__free(r->rows[i].value);
        cs__free(r->rows[i].per_call);
        cs__free(r->rows[i].call_no);
    }
    cs__free(r->rows);
    for (size_t i = 0; i < r->nmis; i++) {
        cs__free(r->mis[i].function);
        cs__free(r->mis[i].what);
    }
    cs__free(r->mis);
    r->rows = NULL;
    r->mis = NULL;
    r->nrows = r->nmis = 0;
}

/* ---- two runs: what changed ---------------------------------------------------------- */

typedef struct dstate {
    runh r[2];
    cs_diff_row *rows;
    size_t n, cap;
} dstate;

static cs_diff_row *
diff_row(dstate *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->rows[i].function, name) == 0)
            return &d->rows[i];
    {
        cs_diff_row *v = cs__grow(d->rows, d->n, &d->cap, sizeof *v, 32);
        if (v == NULL)
            return NULL;
        d->rows = v;
    }
    cs_diff_row *x = &d->rows[d->n];
    memset(x, 0, sizeof *x);
    x->digits = -1;
    if ((x->function = cs__strdup(name)) == NULL)
        return NULL;
    d->n++;
    return x;
}

/* Error types of B that A does not have, per function. */
static int
diff_errors(dstate *d, const char *filter)
{
    const char *sql = "SELECT DISTINCT " NAME_SQL ", e.type FROM errors e JOIN calls c ON"
                      " c.id = e.call JOIN functions f ON f.id = c.function";
    sqlite3_stmt *st = NULL;
    names seen = {0}; /* "function\x1ftype" of A */
    int rc = CS_OK;
    for (int k = 0; k < 2 && rc == CS_OK; k++) {
        if (sqlite3_prepare_v2(d->r[k].db, sql, -1, &st, NULL) != SQLITE_OK) {
            rc = fail(CS_ENOTDB, "%s: %s", d->r[k].dbpath, sqlite3_errmsg(d->r[k].db));
            break;
        }
        while (rc == CS_OK && sqlite3_step(st) == SQLITE_ROW) {
            const char *fn = (const char *)sqlite3_column_text(st, 0);
            const char *ty = (const char *)sqlite3_column_text(st, 1);
            if (!fn || !ty || !cs_name_matches(filter, fn))
                continue;
            char key[600];
            snprintf(key, sizeof key, "%s\x1f%s", fn, ty);
            if (k == 0) {
                rc = names_add(&seen, key);
                continue;
            }
            int old = 0;
            for (size_t i = 0; i < seen.n && !old; i++)
                old = strcmp(seen.v[i], key) == 0;
            if (old)
                continue;
            cs_diff_row *x = diff_row(d, fn);
            if (x == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            size_t have = x->new_errors ? strlen(x->new_errors) : 0;
            char *s = cs__realloc(x->new_errors, have + strlen(ty) + 3);
            if (s == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            if (have)
                strcpy(s + have, ", ");
            else
                s[0] = '\0';
            strcat(s, ty);
            x->new_errors = s;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    names_free(&seen);
    return rc;
}

/* The results of function `name`, call by call in both runs: how many
 * changed, the first that did, and the fewest digits two results share. */
static int
diff_results(dstate *d, cs_diff_row *x)
{
    /* every call, so the n-th call of one run meets the n-th of the other
     * even when some calls raised (and have no result) */
    const char *sql = "SELECT r.data, r.call IS NOT NULL FROM calls c JOIN threads t"
                      " ON t.id = c.thread JOIN processes p ON p.id = t.process"
                      " LEFT JOIN results r ON r.call = c.id"
                      " WHERE c.function IN (SELECT f.id FROM functions f WHERE " NAME_SQL
                      " = ?)" ORDER_SQL;
    sqlite3_stmt *st[2] = {NULL, NULL};
    cs_buf nums[2];
    cs_buf_init(&nums[0]);
    cs_buf_init(&nums[1]);
    int rc = CS_OK;
    for (int k = 0; k < 2; k++) {
        if (sqlite3_prepare_v2(d->r[k].db, sql, -1, &st[k], NULL) != SQLITE_OK) {
            rc = fail(CS_ENOTDB, "%s: %s", d->r[k].dbpath, sqlite3_errmsg(d->r[k].db));
            goto out;
        }
        sqlite3_bind_text(st[k], 1, x->function, -1, SQLITE_STATIC);
    }
    cs_digits_ctx dc;
    cs_digits_prepare(&dc, CS_DIGITS_GENERAL, 0.95, 0.95, 2);
    for (uint64_t no = 1;; no++) {
        if (sqlite3_step(st[0]) != SQLITE_ROW || sqlite3_step(st[1]) != SQLITE_ROW)
            break;
        if (!sqlite3_column_int(st[0], 1) || !sqlite3_column_int(st[1], 1))
            continue; /* no result in one of them: raised, or not captured */
        const void *pa = sqlite3_column_blob(st[0], 0), *pb = sqlite3_column_blob(st[1], 0);
        int na = sqlite3_column_bytes(st[0], 0), nb = sqlite3_column_bytes(st[1], 0);
        x->results_compared++;
        if (na == nb && (na == 0 || memcmp(pa, pb, (size_t)na) == 0)) {
            if (x->digits < 0)
                x->digits = 99; /* lowered below by what differs */
            continue;
        }
        if (x->results_changed++ == 0)
            x->first_changed = no;
        nums[0].len = nums[1].len = 0;
        if (cs_value_numbers(pa, (size_t)na, blob_of, &d->r[0], &nums[0]) != CS_OK ||
            cs_value_numbers(pb, (size_t)nb, blob_of, &d->r[1], &nums[1]) != CS_OK ||
            nums[0].len != nums[1].len) {
            x->digits = 0;
            continue;
        }
        size_t count = nums[0].len / sizeof(cs_num);
        for (size_t e = 0; e < count; e++) {
            const cs_num *a = (const cs_num *)nums[0].data + e, *b = (const cs_num *)nums[1].data + e;
            double dg;
            if (a->kind == CS_NUM_EXACT || b->kind == CS_NUM_EXACT) {
                dg = a->kind == b->kind && a->exact == b->exact ? a->max_digits : 0;
            } else {
                double re[2] = {a->re, b->re}, im[2] = {a->im, b->im};
                dg = cs_digits_of(&dc, re, a->kind == CS_NUM_COMPLEX ? im : NULL, 1,
                                  a->max_digits);
            }
            if (x->digits < 0 || dg < x->digits)
                x->digits = dg;
        }
        if (count == 0)
            x->digits = 0; /* it changed, and has no numbers to measure */
    }
    if (x->digits == 99)
        x->digits = -2; /* every result equal: all digits */
out:
    sqlite3_finalize(st[0]);
    sqlite3_finalize(st[1]);
    cs_buf_free(&nums[0]);
    cs_buf_free(&nums[1]);
    return rc;
}

static int
cmp_diff(const void *a, const void *b)
{
    const cs_diff_row *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return strcmp(x->function, y->function);
}

int
cs_diff(const char *a, const char *b, const char *filter, cs_diff_result *out)
{
    memset(out, 0, sizeof *out);
    dstate d;
    memset(&d, 0, sizeof d);
    int rc = run_open(&d.r[0], a);
    int opened = 1; /* run_close undoes a run_open that failed half-way too */
    if (rc == CS_OK) {
        rc = run_open(&d.r[1], b);
        opened = 2;
    }
    cs_fstat *st[2] = {NULL, NULL};
    size_t ns[2] = {0, 0};
    for (int k = 0; k < 2 && rc == CS_OK; k++) {
        cs_stats_query q = {.filter = filter, .sort = CS_SORT_NAME};
        if ((rc = cs_stats(d.r[k].s, &q, &st[k], &ns[k])) != CS_OK)
            fail(rc, "%s: cannot read calls (%s)", d.r[k].dbpath,
                 rc == CS_ENOTDB ? "database is damaged" : sqlite3_errmsg(d.r[k].db));
    }
    for (int k = 0; k < 2 && rc == CS_OK; k++) {
        for (size_t i = 0; i < ns[k] && rc == CS_OK; i++) {
            cs_diff_row *x = diff_row(&d, st[k][i].name);
            if (x == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            const cs_fstat *f = &st[k][i];
            if (k == 0)
                x->in_a = 1;
            else
                x->in_b = 1;
            x->calls[k] = f->calls;
            x->errors[k] = f->errors;
            x->total[k] = f->total_ns;
            x->self[k] = f->self_ns;
            x->p95[k] = f->p95_ns;
            x->mean[k] = f->mean_ns;
        }
    }
    if (rc == CS_OK)
        rc = diff_errors(&d, filter);
    for (size_t i = 0; i < d.n && rc == CS_OK; i++)
        if (d.rows[i].in_a && d.rows[i].in_b)
            rc = diff_results(&d, &d.rows[i]);
    for (size_t i = 0; i < d.n; i++) {
        cs_diff_row *x = &d.rows[i];
        double ta = (double)x->total[0], tb = (double)x->total[1];
        x->score = fabs(log2((tb + 1000.0) / (ta + 1000.0))) +
                   (x->errors[0] != x->errors[1] ? 1 : 0) + (x->new_errors ? 1 : 0) +
                   (x->results_changed ? 1 : 0) + (x->in_a != x->in_b ? 2 : 0) +
                   (x->calls[0] != x->calls[1] ? 0.5 : 0);
    }
    if (d.n > 1)
        qsort(d.rows, d.n, sizeof *d.rows, cmp_diff);
    cs_stats_free(st[0], ns[0]);
    cs_stats_free(st[1], ns[1]);
    for (int k = 0; k < opened; k++)
        run_close(&d.r[k]);
    out->rows = d.rows;
    out->n = d.n;
    if (rc != CS_OK)
        cs_diff_free(out);
    return rc;
}

void
cs_diff_free(cs_diff_result *r)
{
    for (size_t i = 0; i < r->n; i++) {
        cs__free(r->rows[i].function);
        cs__free(r->rows[i].new_errors);
    }
    cs__free(r->rows);
    r->rows = NULL;
    r->n = 0;
}

/* ---- --fail-if --------------------------------------------------------------------- */

enum { G_TIME, G_SELF, G_MEAN, G_P95, G_CALLS, G_ERRORS, G_CHANGED, G_DIGITS };
enum { OP_GT, OP_LT, OP_GE, OP_LE, OP_EQ, OP_NE };
static const char *const gate_metrics[] = {"time",  "self",   "mean",    "p95",
                                           "calls", "errors", "changed", "digits"};

int
cs_gate_parse(const char *text, cs_gate *g, char *why)
{
    memset(g, 0, sizeof *g);
    g->text = text;
    const char *p = text;
    while (*p == ' ')
        p++;
    size_t m = 0;
    while (p[m] && ((p[m] >= 'a' && p[m] <= 'z') || (p[m] >= '0' && p[m] <= '9')))
        m++;
    g->metric = -1;
    for (int i = 0; i < (int)(sizeof gate_metrics / sizeof *gate_metrics); i++)
        if (strlen(gate_metrics[i]) == m && strncmp(p, gate_metrics[i], m) == 0)
            g->metric = i;
    if (g->metric < 0) {
        snprintf(why, 128, "'%s': unknown metric (time, self, mean, p95, calls, errors, changed,"
                           " digits)", text);
        return CS_EINVAL;
    }
    p += m;
    while (*p == ' ')
        p++;
    if (p[0] == '>' && p[1] == '=') g->op = OP_GE, p += 2;
    else if (p[0] == '<' && p[1] == '=') g->op = OP_LE, p += 2;
    else if (p[0] == '!' && p[1] == '=') g->op = OP_NE, p += 2;
    else if (p[0] == '=' && p[1] == '=') g->op = OP_EQ, p += 2;
    else if (p[0] == '=') g->op = OP_EQ, p += 1;
    else if (p[0] == '>') g->op = OP_GT, p += 1;
    else if (p[0] == '<') g->op = OP_LT, p += 1;
    else {
        snprintf(why, 128, "'%s': expected an operator (> < >= <= = !=) after the metric", text);
        return CS_EINVAL;
    }
    while (*p == ' ')
        p++;
    int sign = *p == '+' || *p == '-';
    char *end;
    double v = strtod(p, &end);
    if (end == p || v != v) {
        snprintf(why, 128, "'%s': expected a number after the operator", text);
        return CS_EINVAL;
    }
    int time_metric = g->metric <= G_P95;
    double unit = 1;
    if ((g->metric == G_DIGITS || g->metric == G_CHANGED) && (sign || *end == '%')) {
        snprintf(why, 128, "'%s': %s takes a plain number (e.g. %s)", text,
                 gate_metrics[g->metric], g->metric == G_DIGITS ? "digits<10" : "changed>0");
        return CS_EINVAL;
    }
    if (*end == '%') {
        g->relative = 1;
        end++;
    } else if (time_metric && *end) {
        while (*end == ' ')
            end++;
        if (strncmp(end, "ns", 2) == 0) unit = 1, end += 2;
        else if (strncmp(end, "us", 2) == 0) unit = 1e3, end += 2;
        else if (strncmp(end, "ms", 2) == 0) unit = 1e6, end += 2;
        else if (*end == 's') unit = 1e9, end += 1;
        else if (*end == '\0') unit = 1e9;
    } else if (time_metric) {
        unit = 1e9; /* a bare time is in seconds */
    }
    while (*end == ' ')
        end++;
    if (*end) {
        snprintf(why, 128, "'%s': unexpected '%s' (units: %%, or ns us ms s for times)", text,
                 end);
        return CS_EINVAL;
    }
    g->delta = sign && !g->relative;
    g->value = v * unit;
    return CS_OK;
}

static int
op_holds(int op, double x, double v)
{
    switch (op) {
    case OP_GT: return x > v;
    case OP_LT: return x < v;
    case OP_GE: return x >= v;
    case OP_LE: return x <= v;
    case OP_EQ: return x == v;
    default: return x != v;
    }
}

int
cs_gate_fails(const cs_gate *g, const cs_diff_row *r)
{
    double a, b;
    switch (g->metric) {
    case G_TIME: a = (double)r->total[0], b = (double)r->total[1]; break;
    case G_SELF: a = (double)r->self[0], b = (double)r->self[1]; break;
    case G_MEAN: a = r->mean[0], b = r->mean[1]; break;
    case G_P95: a = (double)r->p95[0], b = (double)r->p95[1]; break;
    case G_CALLS: a = (double)r->calls[0], b = (double)r->calls[1]; break;
    case G_ERRORS: a = (double)r->errors[0], b = (double)r->errors[1]; break;
    case G_CHANGED: a = 0, b = (double)r->results_changed; break;
    default:
        if (r->digits == -1)
            return 0; /* no captured results */
        a = b = r->digits == -2 ? INFINITY : r->digits;
    }
    if (g->metric <= G_P95 && !(r->in_a && r->in_b))
        return 0; /* a time change needs the function in both runs */
    double x;
    if (g->relative)
        x = a > 0 ? (b - a) / a * 100 : (b > 0 ? INFINITY : 0);
    else if (g->delta)
        x = b - a;
    else
        x = b;
    return op_holds(g->op, x, g->value);
}

int
cs_gate_fails_digits(const cs_gate *g, const cs_digit_row *r)
{
    if (g->metric != G_DIGITS)
        return 0;
    return op_holds(g->op, r->min, g->value);
}

int
cs_latest_digits(cs_store *s, const char *name, double *out)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (sqlite3_prepare_v2(cs_store_db(s),
                           "SELECT min(min) FROM digits WHERE function = ? AND comparison ="
                           " (SELECT max(id) FROM comparisons WHERE kind = 'stability')",
                           -1, &st, NULL) != SQLITE_OK)
        return 0; /* an older run.db: no comparisons */
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *out = sqlite3_column_double(st, 0);
        found = 1;
    }
    sqlite3_finalize(st);
    return found;
}
