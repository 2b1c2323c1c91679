/* calltree.c -- the calling-context tree of a run, read from run.db.
 *
 * The tree table holds a tree per thread (callscope run --all). Readers
 * want one tree: the threads (and processes) chosen are merged by call
 * path, so `main -> work -> time.sleep` is one node however many threads
 * took that path. Launcher frames (runpy, importlib's bootstrap,
 * callscope's own, and the C functions they call) are folded away unless
 * asked for: their children take their place under their parent. */
#include "cs_analysis.h"

#include <stdlib.h>
#include <string.h>

/* Errors go to the export's error buffer: one per thread is enough, and
 * each costs static TLS in the extension. */
const char *
cs_calltree_last_error(void)
{
    return cs_export_last_error();
}

static int
tfail(int rc, sqlite3 *db)
{
    cs__export_seterr("run.db", db ? sqlite3_errmsg(db) : cs_strerror(rc));
    return rc;
}

int
cs_launcher_frame(const char *name)
{
    static const char *const prefixes[] = {"runpy.", "importlib._bootstrap.",
                                           "importlib._bootstrap_external.",
                                           "_frozen_importlib.", "_frozen_importlib_external.",
                                           "callscope.", "site."};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return strcmp(name, "callscope") == 0;
}

/* The merged tree, built node by node: children found by hashing
 * (parent, function). */
typedef struct builder {
    cs_calltree *t;
    size_t cap;
    int32_t *slots; /* open addressing: node index, -1 empty */
    size_t scap;
} builder;

static uint64_t
hkey(int32_t parent, int64_t func)
{
    uint64_t k = ((uint64_t)(uint32_t)parent << 32) ^ (uint64_t)func;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return k ^ (k >> 33);
}

static int
rehash(builder *b)
{
    size_t cap = b->scap ? b->scap * 2 : 1024;
    int32_t *s = cs__malloc(cap * sizeof *s);
    if (s == NULL)
        return CS_ENOMEM;
    memset(s, 0xff, cap * sizeof *s);
    for (size_t i = 0; i < b->t->n; i++) {
        cs_ctnode *x = &b->t->nodes[i];
        size_t j = hkey(x->parent, x->function) & (cap - 1);
        while (s[j] >= 0)
            j = (j + 1) & (cap - 1);
        s[j] = (int32_t)i;
    }
    cs__free(b->slots);
    b->slots = s;
    b->scap = cap;
    return CS_OK;
}

/* The merged node for `func` under merged node `parent` (-1: the top).
 * Past the node limit (CS_CT_TRUNC in `flags`) a function's recursive and
 * other calls stay apart, as the log keeps them. */
static int32_t
child(builder *b, int32_t parent, int64_t func, uint32_t flags)
{
    uint32_t kf = flags & CS_CT_TRUNC ? flags & (CS_CT_TRUNC | CS_CT_REC_FUNC) : 0;
    if ((b->t->n + 1) * 2 > b->scap && rehash(b) != CS_OK)
        return -2;
    size_t j = hkey(parent, func) & (b->scap - 1);
    for (; b->slots[j] >= 0; j = (j + 1) & (b->scap - 1)) {
        cs_ctnode *x = &b->t->nodes[b->slots[j]];
        if (x->parent == parent && x->function == func &&
            (x->flags & (CS_CT_TRUNC | CS_CT_REC_FUNC)) == (kf ? kf : (x->flags & CS_CT_REC_FUNC)))
            return b->slots[j];
    }
    cs_ctnode *v = cs__grow(b->t->nodes, b->t->n, &b->cap, sizeof *v, 256);
    if (v == NULL)
        return -2;
    b->t->nodes = v;
    int32_t i = (int32_t)b->t->n++;
    v[i] = (cs_ctnode){.function = func, .parent = parent, .child = -1, .sibling = -1,
                       .depth = parent >= 0 ? v[parent].depth + 1 : 1, .flags = kf};
    b->slots[j] = i;
    return i;
}

static int
cmp_total_desc(const void *a, const void *b, void *ctx)
{
    const cs_ctnode *v = ctx;
    uint64_t x = v[*(const int32_t *)a].total_ns, y = v[*(const int32_t *)b].total_ns;
    return (x < y) - (x > y);
}

/* Link each node's children, largest total first. */
static int
link_children(cs_calltree *t)
{
    int32_t *order = cs__malloc((t->n ? t->n : 1) * sizeof *order);
    if (order == NULL)
        return CS_ENOMEM;
    for (size_t i = 0; i < t->n; i++)
        order[i] = (int32_t)i;
    qsort_r(order, t->n, sizeof *order, cmp_total_desc, t->nodes);
    t->top = -1;
    /* walk from the smallest so each prepend leaves the largest first */
    int32_t last_top = -1;
    for (size_t k = t->n; k-- > 0;) {
        cs_ctnode *x = &t->nodes[order[k]];
        if (x->parent >= 0) {
            x->sibling = t->nodes[x->parent].child;
            t->nodes[x->parent].child = order[k];
        } else {
            x->sibling = last_top;
            last_top = order[k];
        }
    }
    t->top = last_top;
    cs__free(order);
    return CS_OK;
}

static int
load_names(sqlite3 *db, cs_calltree *t)
{
    sqlite3_stmt *st = NULL;
    int rc = CS_OK;
    if (sqlite3_prepare_v2(db, "SELECT IFNULL(max(id), 0) FROM functions", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return tfail(CS_ENOTDB, db);
    }
    t->nfuncs = (size_t)sqlite3_column_int64(st, 0) + 1;
    sqlite3_finalize(st);
    t->funcs = cs__calloc(t->nfuncs, sizeof *t->funcs);
    if (t->funcs == NULL)
        return CS_ENOMEM;
    if (sqlite3_prepare_v2(db,
                           "SELECT f.id, n.name, f.kind, f.file, f.line FROM functions f"
                           " JOIN function_names n ON n.id = f.id",
                           -1, &st, NULL) != SQLITE_OK)
        return tfail(CS_ENOTDB, db);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if (id <= 0 || (size_t)id >= t->nfuncs)
            continue;
        cs_ctfunc *f = &t->funcs[id];
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *kind = (const char *)sqlite3_column_text(st, 2);
        const char *file = (const char *)sqlite3_column_text(st, 3);
        f->name = cs__strdup(name ? name : "?");
        f->file = cs__strdup(file ? file : "");
        f->line = sqlite3_column_int64(st, 4);
        f->builtin = kind && strcmp(kind, "builtin") == 0;
        f->launcher = cs_launcher_frame(f->name ? f->name : "");
        if (f->name == NULL || f->file == NULL) {
            rc = CS_ENOMEM;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* 1 for the body of a module other than the program's own (__main__). */
static int
module_body(const char *name)
{
    size_t n = strlen(name);
    return n > 9 && strcmp(name + n - 9, ".<module>") == 0 && strncmp(name, "__main__.", 9) != 0;
}

/* Nodes of the chosen threads in (thread, node) order: a parent always
 * comes before its children. */
static int
merge_nodes(sqlite3 *db, const cs_calltree_query *q, builder *b)
{
    cs_calltree *t = b->t;
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT tr.thread, tr.id, tr.parent, IFNULL(tr.function, 0), tr.flags, tr.calls,"
        " tr.total_ns, tr.self_ns, tr.cpu_ns, tr.max_ns FROM tree tr"
        " JOIN threads th ON th.id = tr.thread JOIN processes p ON p.id = th.process"
        " WHERE (?1 = 0 OR p.pid = ?1) AND (?2 IS NULL OR th.name = ?2"
        " OR CAST(th.tid AS TEXT) = ?2) ORDER BY tr.id";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return tfail(CS_ENOTDB, db);
    sqlite3_bind_int64(st, 1, q ? q->pid : 0);
    if (q && q->thread)
        sqlite3_bind_text(st, 2, q->thread, -1, SQLITE_STATIC);
    /* tree.id -> merged node (-1: the top), and whether the node was
     * folded away */
    int32_t *map = NULL;
    unsigned char *hid = NULL;
    size_t mcap = 0;
    int rc = CS_OK, src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t th = sqlite3_column_int64(st, 0);
        int64_t node = sqlite3_column_int64(st, 1);
        int64_t parent = sqlite3_column_type(st, 2) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 2);
        int64_t func = sqlite3_column_int64(st, 3);
        if (node <= 0 || node >= (1ll << 31) || parent < 0 || parent >= node)
            continue;
        (void)th; /* ids are unique across threads: one map for all */
        if ((size_t)node >= mcap) {
            size_t cap = mcap ? mcap : 1024;
            while (cap <= (size_t)node)
                cap *= 2;
            int32_t *v = cs__realloc(map, cap * sizeof *v);
            unsigned char *h = v ? cs__realloc(hid, cap) : NULL;
            if (v)
                map = v;
            if (h == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            hid = h;
            memset(map + mcap, 0xff, (cap - mcap) * sizeof *map);
            memset(hid + mcap, 0, cap - mcap);
            mcap = cap;
        }
        int32_t up = parent > 0 ? map[parent] : -1;
        if (func < 0 || (size_t)func >= t->nfuncs)
            func = 0;
        const cs_ctfunc *f = &t->funcs[func];
        /* folded: a launcher frame, or a C function called at the top or
         * by a folded frame (exec, compile, the import system's stat).
         * Dropped with all below it: what the launcher's own imports ran
         * (a module's body reached from folded frames alone), and
         * anything under a dropped node. */
        if (!q->launcher && parent > 0 && hid[parent] == 2) {
            hid[node] = 2;
            continue;
        }
        if (!q->launcher && func && parent > 0 && hid[parent] == 3) {
            /* under callscope's own code: its own work, but for the
             * program it launches */
            if (f->builtin || f->launcher) {
                map[node] = up;
                hid[node] = 3;
                t->folded++;
                continue;
            }
            if (strncmp(f->name, "__main__.", 9) != 0) {
                hid[node] = 2;
                t->folded++;
                continue;
            }
        }
        if (!q->launcher && func && up < 0 && parent > 0 && hid[parent] && !f->builtin &&
            module_body(f->name)) {
            hid[node] = 2;
            t->folded++;
            continue;
        }
        if (!q->launcher && func && (f->launcher || (f->builtin && (parent == 0 || hid[parent])))) {
            map[node] = up;
            hid[node] = strncmp(f->name, "callscope.", 10) == 0 ? 3 : 1;
            t->folded++;
            continue;
        }
        int32_t m = child(b, up, func, (uint32_t)sqlite3_column_int64(st, 4));
        if (m < 0) {
            rc = CS_ENOMEM;
            break;
        }
        map[node] = m;
        cs_ctnode *x = &t->nodes[m];
        x->calls += (uint64_t)sqlite3_column_int64(st, 5);
        x->total_ns += (uint64_t)sqlite3_column_int64(st, 6);
        x->self_ns += (uint64_t)sqlite3_column_int64(st, 7);
        x->cpu_ns += (uint64_t)sqlite3_column_int64(st, 8);
        uint64_t mx = (uint64_t)sqlite3_column_int64(st, 9);
        if (mx > x->max_ns)
            x->max_ns = mx;
        x->flags |= (uint32_t)sqlite3_column_int64(st, 4);
    }
    if (rc == CS_OK && src != SQLITE_DONE)
        rc = tfail(CS_ENOTDB, db);
    sqlite3_finalize(st);
    cs__free(map);
    cs__free(hid);
    return rc;
}

/* A run recorded call by call (-t, the decorator, spans): the same tree
 * from the calls' parent links. Ids follow entry order, so a parent
 * comes before its children. */
static int
merge_calls(sqlite3 *db, const cs_calltree_query *q, builder *b)
{
    cs_calltree *t = b->t;
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT c.id, IFNULL(c.parent, 0), c.function, IFNULL(c.wall_ns, 0),"
        " IFNULL(c.cpu_ns, 0), IFNULL(c.recursive, 0) FROM calls c"
        " JOIN threads th ON th.id = c.thread JOIN processes p ON p.id = th.process"
        " WHERE (?1 = 0 OR p.pid = ?1) AND (?2 IS NULL OR th.name = ?2"
        " OR CAST(th.tid AS TEXT) = ?2) ORDER BY c.id";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return tfail(CS_ENOTDB, db);
    sqlite3_bind_int64(st, 1, q->pid);
    if (q->thread)
        sqlite3_bind_text(st, 2, q->thread, -1, SQLITE_STATIC);
    /* call id -> merged node, by open addressing on the id */
    struct cslot {
        int64_t id;
        int32_t node;
    } *map = NULL;
    size_t cap = 0, used = 0;
    int rc = CS_OK, src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0), parent = sqlite3_column_int64(st, 1);
        int64_t func = sqlite3_column_int64(st, 2);
        if (func <= 0 || (size_t)func >= t->nfuncs)
            continue;
        int32_t up = -1;
        if (parent && cap) {
            for (size_t j = (size_t)hkey(0, parent) & (cap - 1); map[j].id;
                 j = (j + 1) & (cap - 1))
                if (map[j].id == parent) {
                    up = map[j].node;
                    break;
                }
        }
        int32_t m = child(b, up, func, 0);
        if (m < 0) {
            rc = CS_ENOMEM;
            break;
        }
        cs_ctnode *x = &t->nodes[m];
        uint64_t wall = (uint64_t)sqlite3_column_int64(st, 3);
        x->calls++;
        x->total_ns += wall;
        x->cpu_ns += (uint64_t)sqlite3_column_int64(st, 4);
        if (wall > x->max_ns)
            x->max_ns = wall;
        if (sqlite3_column_int(st, 5))
            x->flags |= CS_CT_REC_FUNC;
        if ((used + 1) * 2 > cap) {
            size_t nc = cap ? cap * 2 : 4096;
            struct cslot *v = cs__calloc(nc, sizeof *v);
            if (v == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            for (size_t i = 0; i < cap; i++) {
                if (map[i].id == 0)
                    continue;
                size_t j = (size_t)hkey(0, map[i].id) & (nc - 1);
                while (v[j].id)
                    j = (j + 1) & (nc - 1);
                v[j] = map[i];
            }
            cs__free(map);
            map = v;
            cap = nc;
        }
        size_t j = (size_t)hkey(0, id) & (cap - 1);
        while (map[j].id)
            j = (j + 1) & (cap - 1);
        map[j] = (struct cslot){id, m};
        used++;
    }
    if (rc == CS_OK && src != SQLITE_DONE)
        rc = tfail(CS_ENOTDB, db);
    sqlite3_finalize(st);
    cs__free(map);
    return rc;
}

int
cs_calltree_load(cs_store *s, const cs_calltree_query *q, cs_calltree **out)
{
    *out = NULL;
    cs__export_seterr(NULL, NULL);
    (void)cs_store_expand_trees(s); /* rows a process's exit left pending */
    sqlite3 *db = cs_store_db(s);
    cs_calltree *t = cs__calloc(1, sizeof *t);
    if (t == NULL)
        return CS_ENOMEM;
    cs_calltree_query none = {0};
    builder b = {.t = t};
    int rc = load_names(db, t);
    if (rc == CS_OK)
        rc = merge_nodes(db, q ? q : &none, &b);
    if (rc == CS_OK && t->n == 0 && (q == NULL || q->calls)) {
        rc = merge_calls(db, q ? q : &none, &b);
        t->from_calls = t->n > 0;
    }
    cs__free(b.slots);
    if (rc == CS_OK) {
        for (size_t i = 0; i < t->n; i++) {
            cs_ctnode *x = &t->nodes[i];
            if (x->flags & CS_CT_TRUNC)
                continue; /* not nested in the head it hangs from */
            if (x->parent >= 0)
                t->nodes[x->parent].child_ns += x->total_ns;
            else
                t->total_ns += x->total_ns;
        }
        /* the tree's self times were measured call by call; recorded
         * calls' are the difference */
        for (size_t i = 0; i < t->n && t->from_calls; i++) {
            cs_ctnode *x = &t->nodes[i];
            x->self_ns = x->total_ns > x->child_ns ? x->total_ns - x->child_ns : 0;
        }
        rc = link_children(t);
    }
    if (rc != CS_OK) {
        if (!cs_export_last_error()[0])
            tfail(rc, NULL);
        cs_calltree_free(t);
        return rc;
    }
    *out = t;
    return CS_OK;
}

void
cs_calltree_free(cs_calltree *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nfuncs; i++) {
        cs__free(t->funcs[i].name);
        cs__free(t->funcs[i].file);
    }
    cs__free(t->funcs);
    cs__free(t->nodes);
    cs__free(t);
}

const char *
cs_calltree_name(const cs_calltree *t, const cs_ctnode *x)
{
    if (x->function <= 0 || (size_t)x->function >= t->nfuncs || !t->funcs[x->function].name)
        return x->flags & CS_CT_TRUNC ? "<paths past the node limit>" : "<unknown>";
    return t->funcs[x->function].name;
}
