/* tree.c -- storing the calling-context tree of `--all`.
 *
 * A thread profiled in aggregate leaves its tree in tree regions of its
 * process's log (see cs_log.h and docs/log-format.md): nodes updated in
 * place, one per distinct call path. Storing it makes two tables:
 *
 *   tree     a row per node: its path (parent), function, calls, total,
 *            self, CPU and longest call;
 *   profile  a row per function and thread, what cProfile reports for it:
 *            calls, primitive calls, cumulative (total) and self time.
 *
 * A node whose path already holds a call of its function is recursive
 * (CS_TN_REC_FUNC): its calls are not primitive and its time is already in
 * an outer call's, so the function's total leaves it out, as cProfile's
 * does. A tree its process did not close (killed, crashed) still has its
 * open calls marked on their nodes: each counts as one call, timed to the
 * tree's last update. */
#include "store_int.h"
#include "cs_log.h"

#include <stdlib.h>
#include <string.h>

typedef struct tnode {
    cs_tree_node n;
    uint64_t open_ns;  /* the part of its total a call open at a crash made */
    uint64_t child_open; /* the same of its children */
    int valid;
} tnode;

typedef struct fagg {
    uint64_t calls, prim, total, self, cpu, max;
} fagg;

static int
sqlfail(sqlite3 *db, const char *path, int src)
{
    cs__store_seterr("%s: %s", path, sqlite3_errmsg(db));
    return src == SQLITE_BUSY                              ? CS_EBUSY
           : src == SQLITE_CORRUPT || src == SQLITE_NOTADB ? CS_ENOTDB
                                                           : CS_EDB;
}

/* Lay the regions' nodes out by index. *out has *count entries; slot 0 of
 * each region (its header) and slots past its use are left invalid. */
static int
gather(const cs__tree_part *parts, size_t n, tnode **out, uint32_t *count,
       const cs_tree_header **head)
{
    *out = NULL;
    *count = 0;
    *head = NULL;
    uint32_t slots = 0, nreg = 0;
    for (size_t i = 0; i < n; i++) {
        const cs_tree_header *h = (const cs_tree_header *)parts[i].body;
        if (parts[i].len < sizeof *h)
            continue;
        if (h->index == 0)
            *head = h;
        if (slots == 0)
            slots = h->slots;
        if (h->slots == slots && h->index + 1 > nreg && h->index < (1u << 16))
            nreg = h->index + 1;
    }
    if (slots < 2 || nreg == 0 || (uint64_t)slots * nreg > (1ull << 31))
        return CS_OK;
    uint32_t total = slots * nreg;
    tnode *v = cs__calloc(total, sizeof *v);
    if (v == NULL)
        return CS_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const cs_tree_header *h = (const cs_tree_header *)parts[i].body;
        if (parts[i].len < sizeof *h || h->slots != slots || h->index >= nreg)
            continue;
        size_t used = parts[i].len / CS_TREE_NODE_SIZE;
        if (used > slots)
            used = slots;
        const cs_tree_node *nodes = (const cs_tree_node *)parts[i].body;
        for (size_t k = 1; k < used; k++) {
            tnode *t = &v[(size_t)h->index * slots + k];
            memcpy(&t->n, &nodes[k], sizeof t->n);
            t->valid = 1;
        }
    }
    *out = v;
    *count = total;
    return CS_OK;
}

/* Keep only nodes whose parent came before them and is kept: a node is
 * always made after its parent, so anything else is damage. */
static void
validate(tnode *v, uint32_t count, uint64_t alive, int closed, uint64_t *unfinished)
{
    for (uint32_t i = 0; i < count; i++) {
        tnode *t = &v[i];
        if (!t->valid)
            continue;
        if (i == CS_TREE_ROOT) {
            t->n.parent = 0;
            continue;
        }
        if (t->n.parent == 0 || t->n.parent >= i || !v[t->n.parent].valid) {
            t->valid = 0;
            continue;
        }
        if (!closed && t->n.open_ns && alive >= t->n.open_ns) {
            /* a call open when the process died: one call, timed to the
             * tree's last sign of life */
            uint64_t d = alive - t->n.open_ns;
            t->n.calls++;
            t->n.total_ns += d;
            t->open_ns = d;
            if (d > t->n.max_ns)
                t->n.max_ns = d;
            (*unfinished)++;
        }
        if (t->n.cpu_ns > t->n.total_ns)
            t->n.cpu_ns = t->n.total_ns;
    }
    /* an open call's self time: its part less its open callees' parts
     * (children before parents: indices only grow down the tree; a node
     * past the limit is not nested in the head it hangs from) */
    for (uint32_t i = count; i-- > CS_TREE_ROOT + 1;)
        if (v[i].valid && !(v[i].n.flags & CS_TN_TRUNC))
            v[v[i].n.parent].child_open += v[i].open_ns;
    for (uint32_t i = CS_TREE_ROOT + 1; i < count; i++)
        if (v[i].valid && v[i].open_ns > v[i].child_open)
            v[i].n.self_ns += v[i].open_ns - v[i].child_open;
}

#define TREE_COLS 12
#define TREE_ROWS 64 /* rows per INSERT statement */

/* "INSERT ... VALUES(...),..." with `n` rows. */
static int
prepare_rows(sqlite3 *db, int n, sqlite3_stmt **st)
{
    cs_buf q;
    cs_buf_init(&q);
    cs_buf_puts(&q, "INSERT INTO tree(id, thread, node, parent, function, depth, flags,"
                    " calls, total_ns, self_ns, cpu_ns, max_ns) VALUES");
    for (int i = 0; i < n; i++)
        cs_buf_puts(&q, i ? ",(?,?,?,?,?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?,?,?,?,?)");
    int src = q.failed ? SQLITE_NOMEM : sqlite3_prepare_v2(db, q.data, -1, st, NULL);
    cs_buf_free(&q);
    return src;
}

/* A node's row: its id is `first` + its number in the log, so that ids
 * follow the log's order (a parent before its children) and rows are
 * appended to the table. */
struct prow;
static void
bind_node(sqlite3_stmt *st, int base, int64_t first, int64_t thread, const struct prow *r);

/* The id the thread's node 0 would have: one past the table's highest. */
static int64_t
first_id(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t id = 1;
    if (sqlite3_prepare_v2(db, "SELECT IFNULL(max(id), 0) + 1 FROM tree", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

/* A node as kept until its row is written: its number in the log and
 * the node, its function already a functions.id (0 for none) and its
 * self time final. The pending blob of a thread is an array of these. */
typedef struct prow {
    uint32_t node;
    uint32_t pad;
    cs_tree_node n;
} prow;

static void
bind_node(sqlite3_stmt *st, int base, int64_t first, int64_t thread, const prow *r)
{
    const cs_tree_node *n = &r->n;
    sqlite3_bind_int64(st, base + 1, first + r->node);
    sqlite3_bind_int64(st, base + 2, thread);
    sqlite3_bind_int64(st, base + 3, r->node);
    if (n->parent > CS_TREE_ROOT)
        sqlite3_bind_int64(st, base + 4, first + n->parent);
    else
        sqlite3_bind_null(st, base + 4);
    if (n->func)
        sqlite3_bind_int64(st, base + 5, n->func);
    else
        sqlite3_bind_null(st, base + 5);
    sqlite3_bind_int64(st, base + 6, n->depth);
    sqlite3_bind_int64(st, base + 7, n->flags);
    sqlite3_bind_int64(st, base + 8, (int64_t)n->calls);
    sqlite3_bind_int64(st, base + 9, (int64_t)n->total_ns);
    sqlite3_bind_int64(st, base + 10, (int64_t)n->self_ns);
    sqlite3_bind_int64(st, base + 11, (int64_t)n->cpu_ns);
    sqlite3_bind_int64(st, base + 12, (int64_t)n->max_ns);
}

/* Sum each function's numbers (what cProfile reports) over the nodes. */
static void
aggregate(const tnode *v, uint32_t count, fagg *agg, uint32_t nfunc)
{
    for (uint32_t i = CS_TREE_ROOT + 1; i < count; i++) {
        const tnode *t = &v[i];
        if (!t->valid || t->n.func == 0 || t->n.func >= nfunc)
            continue;
        uint64_t self = t->n.self_ns < t->n.total_ns ? t->n.self_ns : t->n.total_ns;
        fagg *a = &agg[t->n.func];
        a->calls += t->n.calls;
        a->self += self;
        if (t->n.max_ns > a->max)
            a->max = t->n.max_ns;
        if (!(t->n.flags & CS_TN_REC_FUNC)) {
            a->prim += t->n.calls;
            a->total += t->n.total_ns;
            a->cpu += t->n.cpu_ns;
        }
    }
}

/* Write the rows of `n` pending nodes of `thread`. */
static int
insert_rows(sqlite3 *db, const char *path, const prow *rows, size_t n, int64_t thread)
{
    sqlite3_stmt *many = NULL, *one = NULL;
    int src = prepare_rows(db, TREE_ROWS, &many);
    if (src == SQLITE_OK)
        src = prepare_rows(db, 1, &one);
    int rc = src == SQLITE_OK ? CS_OK : sqlfail(db, path, src);
    int64_t first = first_id(db);
    size_t at = 0;
    for (; rc == CS_OK && n - at >= TREE_ROWS; at += TREE_ROWS) {
        for (int k = 0; k < TREE_ROWS; k++)
            bind_node(many, k * TREE_COLS, first, thread, &rows[at + k]);
        if ((src = sqlite3_step(many)) != SQLITE_DONE)
            rc = sqlfail(db, path, src);
        sqlite3_reset(many);
    }
    for (; rc == CS_OK && at < n; at++) {
        sqlite3_reset(one);
        bind_node(one, 0, first, thread, &rows[at]);
        if ((src = sqlite3_step(one)) != SQLITE_DONE)
            rc = sqlfail(db, path, src);
    }
    sqlite3_finalize(many);
    sqlite3_finalize(one);
    return rc;
}

static int
insert_profile_rows(sqlite3 *db, const char *path, const fagg *agg, uint32_t nfunc,
                    int64_t process, int64_t thread, int cpu,
                    int64_t (*func_of)(void *, uint32_t), void *ctx)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db,
                                 "INSERT INTO profile(function, process, thread, calls,"
                                 " prim_calls, total_ns, self_ns, cpu_ns, max_ns)"
                                 " VALUES(?,?,?,?,?,?,?,?,?)",
                                 -1, &st, NULL);
    if (src != SQLITE_OK)
        return sqlfail(db, path, src);
    int rc = CS_OK;
    for (uint32_t f = 1; f < nfunc && rc == CS_OK; f++) {
        const fagg *a = &agg[f];
        if (a->calls == 0)
            continue;
        int64_t id = func_of(ctx, f);
        if (id == 0)
            continue;
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, process);
        sqlite3_bind_int64(st, 3, thread);
        sqlite3_bind_int64(st, 4, (int64_t)a->calls);
        sqlite3_bind_int64(st, 5, (int64_t)a->prim);
        sqlite3_bind_int64(st, 6, (int64_t)a->total);
        sqlite3_bind_int64(st, 7, (int64_t)a->self);
        if (cpu)
            sqlite3_bind_int64(st, 8, (int64_t)a->cpu);
        else
            sqlite3_bind_null(st, 8);
        sqlite3_bind_int64(st, 9, (int64_t)a->max);
        if ((src = sqlite3_step(st)) != SQLITE_DONE)
            rc = sqlfail(db, path, src);
    }
    sqlite3_finalize(st);
    return rc;
}

static int keep_pending(cs_store *s, int64_t thread, const tnode *v, uint32_t count,
                        int64_t (*func_of)(void *, uint32_t), void *ctx);

int
cs__store_tree(cs_store *s, int64_t process, int64_t thread, const cs__tree_part *parts,
               size_t n, int64_t (*func_of)(void *, uint32_t), void *ctx,
               uint64_t *unfinished /* OUT */)
{
    *unfinished = 0;
    tnode *v = NULL;
    uint32_t count = 0;
    const cs_tree_header *head = NULL;
    int rc = gather(parts, n, &v, &count, &head);
    if (rc != CS_OK || v == NULL || head == NULL || count <= CS_TREE_ROOT + 1 ||
        !v[CS_TREE_ROOT].valid) {
        cs__free(v);
        return rc;
    }
    validate(v, count, head->alive_ns, head->closed != 0, unfinished);
    uint32_t nfunc = 1;
    for (uint32_t i = 0; i < count; i++)
        if (v[i].valid && v[i].n.func + 1 > nfunc && v[i].n.func < (1u << 24))
            nfunc = v[i].n.func + 1;
    fagg *agg = cs__calloc(nfunc, sizeof *agg);
    if (agg == NULL) {
        cs__free(v);
        return CS_ENOMEM;
    }
    aggregate(v, count, agg, nfunc);
    rc = insert_profile_rows(s->db, s->path, agg, nfunc, process, thread,
                             (head->flags & CS_TREE_CPU) != 0, func_of, ctx);
    cs__free(agg);
    if (rc == CS_OK)
        rc = keep_pending(s, thread, v, count, func_of, ctx);
    cs__free(v);
    return rc;
}

/* The nodes, as one blob of prow records: their rows are written by the
 * first reader (cs_store_expand_trees), not while a process exits. */
static int
keep_pending(cs_store *s, int64_t thread, const tnode *v, uint32_t count,
             int64_t (*func_of)(void *, uint32_t), void *ctx)
{
    size_t n = 0;
    for (uint32_t i = CS_TREE_ROOT + 1; i < count; i++)
        n += v[i].valid;
    prow *rows = cs__malloc((n ? n : 1) * sizeof *rows);
    if (rows == NULL)
        return CS_ENOMEM;
    size_t k = 0;
    for (uint32_t i = CS_TREE_ROOT + 1; i < count; i++) {
        if (!v[i].valid)
            continue;
        prow *r = &rows[k++];
        r->node = i;
        r->pad = 0;
        r->n = v[i].n;
        int64_t f = v[i].n.func ? func_of(ctx, v[i].n.func) : 0;
        r->n.func = f > 0 && f < (int64_t)UINT32_MAX ? (uint32_t)f : 0;
        if (r->n.self_ns > r->n.total_ns)
            r->n.self_ns = r->n.total_ns;
    }
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(s->db, "INSERT INTO tree_pending(thread, nodes) VALUES(?, ?)",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, thread);
        sqlite3_bind_blob64(st, 2, rows, (sqlite3_uint64)(n * sizeof *rows), SQLITE_STATIC);
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    cs__free(rows);
    return src == SQLITE_DONE ? CS_OK : sqlfail(s->db, s->path, src);
}

int
cs_store_expand_trees(cs_store *s)
{
    sqlite3 *db = s->db;
    sqlite3_stmt *st = NULL;
    int pending = sqlite3_prepare_v2(db, "SELECT EXISTS(SELECT 1 FROM tree_pending)", -1, &st,
                                     NULL) == SQLITE_OK &&
                  sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!pending)
        return CS_OK;
    int rc = cs__store_exec(s, "BEGIN IMMEDIATE");
    if (rc != CS_OK)
        return rc;
    int src = sqlite3_prepare_v2(db, "SELECT rowid, thread, nodes FROM tree_pending ORDER BY rowid",
                                 -1, &st, NULL);
    if (src != SQLITE_OK)
        rc = sqlfail(db, s->path, src);
    while (rc == CS_OK && (src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t thread = sqlite3_column_int64(st, 1);
        const void *blob = sqlite3_column_blob(st, 2);
        size_t n = (size_t)sqlite3_column_bytes(st, 2) / sizeof(prow);
        prow *rows = cs__malloc((n ? n : 1) * sizeof *rows);
        if (rows == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        if (n)
            memcpy(rows, blob, n * sizeof *rows); /* (the statement moves on) */
        rc = insert_rows(db, s->path, rows, n, thread);
        cs__free(rows);
    }
    if (rc == CS_OK && src != SQLITE_DONE)
        rc = sqlfail(db, s->path, src);
    sqlite3_finalize(st);
    if (rc == CS_OK)
        rc = cs__store_exec(s, "DELETE FROM tree_pending");
    if (rc == CS_OK)
        return cs__store_exec(s, "COMMIT");
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
