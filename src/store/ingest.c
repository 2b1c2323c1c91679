/* ingest.c -- turning one process's event log into rows of run.db.
 *
 * Two passes over the log. The first reads only variable records: the
 * process, its threads and its functions, which become rows first. The
 * second walks each thread's stream in order, matching exits to entries
 * by sequence number, and writes a call row when a call ends. Memory is
 * bounded by the calls open at one time, not by the size of the log.
 *
 * Call ids are unique within the run: the ingest holds SQLite's write
 * lock and numbers calls from MAX(id)+1 in entry order. */
#include "store_int.h"
#include "cs_log.h"
#include "rowpipe.h"
#include "cs_value.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- open calls: a linear-probing map keyed by stream << 40 | seq ------ */

typedef struct ocall {
    uint64_t key; /* 0 marks an empty slot */
    uint64_t parent_key;
    int64_t id;
    int64_t parent_id;
    int64_t thread_id;
    int64_t func_id;
    uint32_t flags;
    int running; /* on its thread's stack (not suspended or paused) */
    uint64_t start, mark, active, paused, child;
    uint64_t cpu_mark, cpu_acc;
    uint64_t rss_start;
    int has_cpu, has_mem;
    int raised_err; /* an ERROR record was seen */
    int recursive;  /* a call of its function was open on its thread */
} ocall;

typedef struct omap {
    ocall *slots;
    size_t cap, n;
} omap;

static uint64_t
mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static ocall *
omap_find(omap *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = mix(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key)
            return &m->slots[i];
        if (m->slots[i].key == 0)
            return NULL;
    }
}

/* Both maps of this file probe linearly, with a uint64_t key first in each
 * slot (0: empty). The table of `cap` slots of `size` bytes, rehashed into
 * one twice as large (256 slots at first); NULL when out of memory. */
static void *
table_grow(const void *slots, size_t cap, size_t size)
{
    size_t ncap = cap ? cap * 2 : 256;
    char *s = cs__calloc(ncap, size);
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < cap; i++) {
        const char *from = (const char *)slots + i * size;
        uint64_t key, taken;
        memcpy(&key, from, sizeof key);
        if (key == 0)
            continue;
        size_t j = mix(key) & (ncap - 1);
        for (;; j = (j + 1) & (ncap - 1)) {
            memcpy(&taken, s + j * size, sizeof taken);
            if (taken == 0)
                break;
        }
        memcpy(s + j * size, from, size);
    }
    return s;
}

static int
omap_grow(omap *m)
{
    ocall *s = table_grow(m->slots, m->cap, sizeof *s);
    if (s == NULL)
        return CS_ENOMEM;
    cs__free(m->slots);
    m->slots = s;
    m->cap = m->cap ? m->cap * 2 : 256;
    return CS_OK;
}

static ocall *
omap_insert(omap *m, uint64_t key)
{
    if ((m->n + 1) * 2 > m->cap && omap_grow(m) != CS_OK)
        return NULL;
    size_t i = mix(key) & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == 0)
        m->n++;
    memset(&m->slots[i], 0, sizeof m->slots[i]);
    m->slots[i].key = key;
    return &m->slots[i];
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void
omap_remove(omap *m, ocall *c)
{
    size_t i = (size_t)(c - m->slots);
    size_t mask = m->cap - 1;
    m->slots[i].key = 0;
    m->n--;
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = mix(m->slots[j].key) & mask;
        /* move j back to i if its home is not in (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = 0;
            i = j;
        }
    }
}

/* ---- open calls per (stream, function): recursion ------------------------
 * A call is recursive when a call of the same function is open on its
 * thread as it starts; its time is then already in the outer call's. */

typedef struct nslot {
    uint64_t key; /* stream << 32 | local function id; 0 marks empty */
    uint64_t open;
} nslot;

typedef struct nmap {
    nslot *slots;
    size_t cap, n;
} nmap;

static nslot *
nmap_get(nmap *m, uint64_t key)
{
    if ((m->n + 1) * 2 > m->cap) {
        nslot *s = table_grow(m->slots, m->cap, sizeof *s);
        if (s == NULL)
            return NULL;
        cs__free(m->slots);
        m->slots = s;
        m->cap = m->cap ? m->cap * 2 : 256;
    }
    size_t i = mix(key) & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == 0) {
        m->slots[i].key = key;
        m->n++;
    }
    return &m->slots[i];
}

static inline uint64_t
nest_key(uint64_t call_key, int64_t func)
{
    return (call_key >> CS_SEQ_BITS) << 32 | (uint64_t)(uint32_t)func;
}

/* ---- ingest state -------------------------------------------------------- */

typedef struct pending_var {
    unsigned kind;
    uint64_t aux;
    char *body;
    size_t len;
} pending_var;

/* An error row, kept until the call rows are written: the writer thread
 * owns the connection meanwhile. Strings are owned. */
typedef struct err_row {
    int64_t call, origin;
    char *type, *message, *traceback; /* traceback NULL when origin != 0 */
} err_row;

/* An event aimed at a call of another thread, applied after every stream
 * is read, in time order (ties in reading order). */
struct deferred {
    cs_event ev; /* ev.body is owned */
    uint64_t order;
};

/* A captured value (arguments or result) of a call, kept until the call
 * rows are written: this header, then `len` bytes padded to 8, one after
 * the other in one buffer. */
typedef struct val_row {
    int64_t call;
    uint32_t kind; /* CS_VAR_ARGS or CS_VAR_RESULT */
    uint32_t len;
} val_row;

typedef struct ing {
    cs_store *s;
    cs_buf vals; /* val_row headers and their bytes */
    int logfd; /* the log, for the bytes of its blob regions */
    cs__rowpipe *pipe;
    err_row *errs;
    size_t en, ecap;
    int64_t process_id;
    int64_t pid;    /* of the process whose log this is */
    char host[64];
    int64_t next_id;
    int64_t top_id; /* highest id in the calls table (the writer's) */
    int64_t *func_map; /* local function id -> functions.id */
    size_t func_cap;
    int64_t *thread_map; /* stream -> threads.id */
    size_t thread_cap;
    omap open;
    nmap nest; /* open calls per (stream, function) */
    sqlite3_stmt *fn_stmt[2]; /* function_row's select and insert */
    uint64_t *stack; /* keys of running calls of the current stream */
    size_t sn, scap;
    uint32_t cur_stream;
    int64_t last_err_id; /* call whose traceback this stream recorded last */
    struct deferred *deferred; /* events aimed at another thread's calls */
    size_t dn, dcap;
    uint64_t cur_ts; /* time of the current stream's latest event */
    pending_var *vars; /* pass 1 */
    size_t vn, vcap;
    cs_ingest_result *res;
} ing;

#define MAX_LOCAL_ID (1u << 24)

static int
sqlerr(ing *g, int rc)
{
    cs__store_seterr("%s: %s", g->s->path, sqlite3_errmsg(g->s->db));
    return rc == SQLITE_BUSY ? CS_EBUSY : rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB ? CS_ENOTDB
                                                                                      : CS_EDB;
}

static int
grow_map(int64_t **map, size_t *cap, size_t need)
{
    if (need < *cap)
        return CS_OK;
    if (need >= MAX_LOCAL_ID)
        return CS_ERANGE;
    size_t n = *cap ? *cap : 64;
    while (n <= need)
        n *= 2;
    int64_t *p = cs__realloc(*map, n * sizeof *p);
    if (p == NULL)
        return CS_ENOMEM;
    memset(p + *cap, 0, (n - *cap) * sizeof *p);
    *map = p;
    *cap = n;
    return CS_OK;
}

/* ---- blobs: large captured data, stored once per run --------------------
 * A BLOB record names a blob region of the log: its bytes are read from
 * there and checked against the hash that names them. A blob already in
 * run.db (another process stored it) is not stored again. A blob whose
 * bytes do not match (the process died while writing them) is left out,
 * so a value that names it reads as missing, never as wrong data. */

static int
blob_record(ing *g, const cs_event *ev)
{
    if (ev->body_len < 16)
        return CS_OK;
    uint64_t size, off;
    memcpy(&size, ev->body, 8);
    memcpy(&off, ev->body + 8, 8);
    if (size >= 1000000000u) { /* SQLite's largest value */
        g->res->torn_blobs++;
        return CS_OK;
    }
    sqlite3 *db = g->s->db;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db, "SELECT 1 FROM blobs WHERE id = ?", -1, &st, NULL);
    if (src != SQLITE_OK)
        return sqlerr(g, src);
    sqlite3_bind_int64(st, 1, (int64_t)ev->aux);
    src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src == SQLITE_ROW)
        return CS_OK;
    if (src != SQLITE_DONE)
        return sqlerr(g, src);
    if (g->logfd < 0)
        return CS_OK;
    char *buf = cs__malloc(size ? size : 1);
    if (buf == NULL)
        return CS_ENOMEM;
    cs_blob_header h;
    size_t got = 0;
    int ok = pread(g->logfd, &h, sizeof h, (off_t)off) == (ssize_t)sizeof h &&
             h.magic == CS_LOG_BLOB_MAGIC && h.size == size && h.hash == ev->aux;
    while (ok && got < size) {
        ssize_t k = pread(g->logfd, buf + got, size - got, (off_t)(off + sizeof h + got));
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    if (ok && got == size && cs_hash64(buf, size) == ev->aux) {
        src = sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO blobs(id, size, data) VALUES(?,?,?)",
                                 -1, &st, NULL);
        if (src == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, (int64_t)ev->aux);
            sqlite3_bind_int64(st, 2, (int64_t)size);
            sqlite3_bind_blob(st, 3, buf, (int)size, SQLITE_STATIC);
            src = sqlite3_step(st);
            sqlite3_finalize(st);
            src = src == SQLITE_DONE ? SQLITE_OK : src;
        }
    } else {
        g->res->torn_blobs++;
        src = SQLITE_OK;
    }
    cs__free(buf);
    return src == SQLITE_OK ? CS_OK : sqlerr(g, src);
}

/* The pending kind of a tree region (aux: its stream). */
#define TREE_PART 0x100u

static int keep_var(ing *g, const cs_event *ev, unsigned kind);

static int
collect_var(void *ctx, const cs_event *ev)
{
    ing *g = ctx;
    if (ev->kind == CS_EV_TREE)
        return keep_var(g, ev, TREE_PART);
    if (ev->var_kind == CS_VAR_BLOB)
        return blob_record(g, ev);
    if (ev->var_kind != CS_VAR_PROC && ev->var_kind != CS_VAR_THREAD &&
        ev->var_kind != CS_VAR_FUNC && ev->var_kind != CS_VAR_CHILD &&
        ev->var_kind != CS_VAR_PROFILE && ev->var_kind != CS_VAR_SIG)
        return CS_OK;
    return keep_var(g, ev, ev->var_kind);
}

static int
keep_var(ing *g, const cs_event *ev, unsigned kind)
{
    {
        pending_var *v = cs__grow(g->vars, g->vn, &g->vcap, sizeof *v, 64);
        if (v == NULL)
            return CS_ENOMEM;
        g->vars = v;
    }
    pending_var *v = &g->vars[g->vn];
    v->body = cs__malloc(ev->body_len + 1);
    if (v->body == NULL)
        return CS_ENOMEM;
    memcpy(v->body, ev->body, ev->body_len);
    v->body[ev->body_len] = '\0';
    v->len = ev->body_len;
    v->kind = kind;
    v->aux = kind == TREE_PART ? ev->stream : ev->aux;
    g->vn++;
    return CS_OK;
}

/* Split a body into NUL-terminated strings: returns the next one and
 * advances *pos, or "" past the end. */
static const char *
next_str(const char *body, size_t len, size_t *pos)
{
    if (*pos >= len)
        return "";
    const char *s = body + *pos;
    size_t n = strnlen(s, len - *pos);
    *pos += n + 1;
    return s;
}

static int
bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

static int
insert_process(ing *g, const cs_scan_info *info, const char *logname, const char *rundir_name,
               int recovered)
{
    const pending_var *proc = NULL;
    for (size_t i = 0; i < g->vn; i++)
        if (g->vars[i].kind == CS_VAR_PROC) {
            proc = &g->vars[i];
            break;
        }
    const cs_log_header *h = &info->header;
    int64_t rank = -1, size = 0;
    const char *host = h->host, *name = "", *cwd = "";
    cs_buf argv, cmd;
    cs_buf_init(&argv);
    cs_buf_init(&cmd);
    cs_buf_puts(&argv, "[");
    if (proc && proc->len >= 32) {
        memcpy(&rank, proc->body + 16, 8);
        memcpy(&size, proc->body + 24, 8);
        size_t pos = 32;
        host = next_str(proc->body, proc->len, &pos);
        name = next_str(proc->body, proc->len, &pos);
        cwd = next_str(proc->body, proc->len, &pos);
        int first = 1;
        while (pos < proc->len) {
            const char *a = next_str(proc->body, proc->len, &pos);
            if (!first) {
                cs_buf_puts(&argv, ",");
                cs_buf_puts(&cmd, " ");
            }
            cs__json_str(&argv, a, strlen(a));
            cs_buf_puts(&cmd, a);
            first = 0;
        }
    }
    cs_buf_puts(&argv, "]");
    int rc = CS_OK;
    sqlite3_stmt *st = NULL;
    const char *sql = "INSERT INTO processes(pid, ppid, host, rank, name, argv, cwd,"
                      " start_wall_ns, start_mono_ns, end_mono_ns, state, log, records,"
                      " bad_records, command, size) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    int src = sqlite3_prepare_v2(g->s->db, sql, -1, &st, NULL);
    if (src != SQLITE_OK || argv.failed || cmd.failed) {
        rc = src != SQLITE_OK ? sqlerr(g, src) : CS_ENOMEM;
        goto out;
    }
    sqlite3_bind_int64(st, 1, (int64_t)h->pid);
    sqlite3_bind_int64(st, 2, (int64_t)h->ppid);
    bind_text(st, 3, host);
    if (rank >= 0)
        sqlite3_bind_int64(st, 4, rank);
    bind_text(st, 5, name);
    bind_text(st, 6, argv.data);
    bind_text(st, 7, cwd);
    sqlite3_bind_int64(st, 8, (int64_t)h->start_wall_ns);
    sqlite3_bind_int64(st, 9, (int64_t)h->start_mono_ns);
    sqlite3_bind_int64(st, 10, (int64_t)(info->last_ts ? info->last_ts : h->start_mono_ns));
    /* a log its writer did not close: killed, crashed, or os._exit */
    bind_text(st, 11, recovered || !info->clean_end ? "killed" : "complete");
    bind_text(st, 12, logname);
    sqlite3_bind_int64(st, 13, (int64_t)info->records);
    sqlite3_bind_int64(st, 14, (int64_t)info->bad_records);
    bind_text(st, 15, cmd.data ? cmd.data : "");
    if (size > 0)
        sqlite3_bind_int64(st, 16, size);
    if ((src = sqlite3_step(st)) != SQLITE_DONE) {
        rc = sqlerr(g, src);
        goto out;
    }
    g->process_id = sqlite3_last_insert_rowid(g->s->db);
    g->pid = (int64_t)h->pid;
    snprintf(g->host, sizeof g->host, "%s", host);
    /* The run is described by its first process: the one that started
     * first among those stored, unless `callscope run` described it. */
    sqlite3_finalize(st);
    st = NULL;
    src = sqlite3_prepare_v2(g->s->db,
                             "INSERT INTO runs(id, name, created_ns, command, cwd, launcher)"
                             " VALUES(1, ?, ?, ?, ?, 'python') ON CONFLICT(id) DO UPDATE SET"
                             " created_ns = excluded.created_ns, command = excluded.command,"
                             " cwd = excluded.cwd WHERE launcher = 'python'"
                             " AND excluded.created_ns < created_ns",
                             -1, &st, NULL);
    if (src != SQLITE_OK) {
        rc = sqlerr(g, src);
        goto out;
    }
    bind_text(st, 1, rundir_name);
    sqlite3_bind_int64(st, 2, (int64_t)h->start_wall_ns);
    bind_text(st, 3, cmd.data ? cmd.data : "");
    bind_text(st, 4, cwd);
    if ((src = sqlite3_step(st)) != SQLITE_DONE)
        rc = sqlerr(g, src);
out:
    sqlite3_finalize(st);
    cs_buf_free(&argv);
    cs_buf_free(&cmd);
    return rc;
}

static int
function_row(ing *g, const char *kind, const char *module, const char *qualname,
             const char *file, int64_t line, int64_t *id)
{
    static const char *sel = "SELECT id FROM functions WHERE kind=? AND module=? AND"
                             " qualname=? AND file=? AND line=?";
    static const char *ins =
        "INSERT INTO functions(kind, module, qualname, file, line) VALUES(?,?,?,?,?)";
    *id = 0;
    for (int pass = 0; pass < 2 && *id == 0; pass++) {
        /* prepared once per ingest: a process defines hundreds */
        sqlite3_stmt *st = g->fn_stmt[pass];
        if (st == NULL) {
            int src = sqlite3_prepare_v2(g->s->db, pass ? ins : sel, -1, &st, NULL);
            if (src != SQLITE_OK)
                return sqlerr(g, src);
            g->fn_stmt[pass] = st;
        }
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        bind_text(st, 1, kind);
        bind_text(st, 2, module);
        bind_text(st, 3, qualname);
        bind_text(st, 4, file);
        sqlite3_bind_int64(st, 5, line);
        int src = sqlite3_step(st);
        if (pass == 0 && src == SQLITE_ROW)
            *id = sqlite3_column_int64(st, 0);
        else if (pass == 1 && src == SQLITE_DONE)
            *id = sqlite3_last_insert_rowid(g->s->db);
        else if (src != SQLITE_DONE) {
            int rc = sqlerr(g, src);
            sqlite3_reset(st);
            return rc;
        }
        sqlite3_reset(st);
    }
    return CS_OK;
}

/* A child's end as its parent saw it; the exits table is keyed by the
 * parent, so the row does not depend on the child's own log. */
static int
record_exit(ing *g, uint64_t pid, const char *body)
{
    int64_t code;
    memcpy(&code, body, 8);
    int src = cs__store_put_exit(g->s->db, g->host, g->pid, (int64_t)pid, code);
    return src == SQLITE_DONE ? CS_OK : sqlerr(g, src);
}

static const char *
kind_name(unsigned kind)
{
    return kind == CS_FUNC_SPAN ? "span" : kind == CS_FUNC_BUILTIN ? "builtin" : "function";
}

/* The argument and local names of a function, and the label cProfile
 * gives a C function, kept once per function. */
static int
function_names(ing *g, int64_t id, const char *args, const char *locals, const char *label)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db,
                                 "UPDATE functions SET args = ?, locals = ?,"
                                 " label = IFNULL(label, NULLIF(?, '')) WHERE id = ?"
                                 " AND args IS NULL",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        bind_text(st, 1, args);
        bind_text(st, 2, locals);
        bind_text(st, 3, label);
        sqlite3_bind_int64(st, 4, id);
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? CS_OK : sqlerr(g, src);
}

/* The aggregates of a profiled function (callscope run --all). */
static int
insert_profile(ing *g, const pending_var *v)
{
    if (v->len < 40 || v->aux >= g->func_cap || g->func_map[v->aux] == 0)
        return CS_OK;
    uint64_t h[5];
    memcpy(h, v->body, sizeof h);
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db,
                                 "INSERT INTO profile(function, process, calls, total_ns, self_ns,"
                                 " min_ns, max_ns, hist) VALUES(?,?,?,?,?,?,?,?)",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, g->func_map[v->aux]);
        sqlite3_bind_int64(st, 2, g->process_id);
        for (int i = 0; i < 5; i++)
            sqlite3_bind_int64(st, 3 + i, (int64_t)h[i]);
        sqlite3_bind_blob(st, 8, v->body + 40, (int)(v->len - 40), SQLITE_TRANSIENT);
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? CS_OK : sqlerr(g, src);
}

/* The signature of a function, as its first capture saw it. */
static int
insert_signature(ing *g, const pending_var *v)
{
    if (v->aux >= g->func_cap || g->func_map[v->aux] == 0 ||
        cs_value_check(v->body, v->len) != CS_OK)
        return CS_OK;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db,
                                 "UPDATE functions SET signature = ?"
                                 " WHERE id = ? AND signature IS NULL",
                                 -1, &st, NULL);
    if (src != SQLITE_OK)
        return sqlerr(g, src);
    sqlite3_bind_blob(st, 1, v->body, (int)v->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, g->func_map[v->aux]);
    src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? CS_OK : sqlerr(g, src);
}

static int64_t func_of(ing *g, uint32_t local);

static int64_t
tree_func(void *ctx, uint32_t local)
{
    return func_of(ctx, local);
}

/* The calling-context tree of each thread profiled with --all: its
 * regions, gathered by stream. */
static int
insert_trees(ing *g)
{
    int rc = CS_OK;
    cs__tree_part *parts = NULL;
    size_t cap = 0;
    for (size_t i = 0; i < g->vn && rc == CS_OK; i++) {
        if (g->vars[i].kind != TREE_PART || g->vars[i].body == NULL)
            continue;
        uint64_t stream = g->vars[i].aux;
        size_t n = 0;
        for (size_t k = i; k < g->vn; k++) {
            pending_var *v = &g->vars[k];
            if (v->kind != TREE_PART || v->aux != stream || v->body == NULL)
                continue;
            cs__tree_part *p = cs__grow(parts, n, &cap, sizeof *p, 8);
            if (p == NULL) {
                rc = CS_ENOMEM;
                break;
            }
            parts = p;
            parts[n++] = (cs__tree_part){v->body, v->len};
        }
        int64_t thread = stream < g->thread_cap ? g->thread_map[stream] : 0;
        uint64_t open = 0;
        if (rc == CS_OK && thread)
            rc = cs__store_tree(g->s, g->process_id, thread, parts, n, tree_func, g, &open);
        g->res->unfinished += open;
        for (size_t k = i; k < g->vn; k++) /* done with this stream */
            if (g->vars[k].kind == TREE_PART && g->vars[k].aux == stream)
                g->vars[k].kind = 0;
    }
    cs__free(parts);
    return rc;
}

static int
insert_defs(ing *g)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db,
                                 "INSERT INTO threads(process, stream, tid, ident, name)"
                                 " VALUES(?,?,?,?,?)",
                                 -1, &st, NULL);
    if (src != SQLITE_OK)
        return sqlerr(g, src);
    int rc = CS_OK;
    for (size_t i = 0; i < g->vn && rc == CS_OK; i++) {
        pending_var *v = &g->vars[i];
        if (v->kind == CS_VAR_THREAD && v->len >= 24) {
            if ((rc = grow_map(&g->thread_map, &g->thread_cap, v->aux)) != CS_OK)
                break;
            uint64_t tid, ident;
            memcpy(&tid, v->body, 8);
            memcpy(&ident, v->body + 8, 8);
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, g->process_id);
            sqlite3_bind_int64(st, 2, (int64_t)v->aux);
            sqlite3_bind_int64(st, 3, (int64_t)tid);
            sqlite3_bind_int64(st, 4, (int64_t)ident);
            sqlite3_bind_text(st, 5, v->body + 24, (int)(v->len - 24), SQLITE_TRANSIENT);
            if ((src = sqlite3_step(st)) != SQLITE_DONE)
                rc = sqlerr(g, src);
            else
                g->thread_map[v->aux] = sqlite3_last_insert_rowid(g->s->db);
        } else if (v->kind == CS_VAR_CHILD && v->len >= 8) {
            rc = record_exit(g, v->aux, v->body);
        } else if (v->kind == CS_VAR_FUNC && v->len >= 8 && v->aux > 0) {
            if (v->aux < g->func_cap && g->func_map[v->aux])
                continue; /* defined twice (two threads raced); same facts */
            if ((rc = grow_map(&g->func_map, &g->func_cap, v->aux)) != CS_OK)
                break;
            uint32_t line, kind;
            memcpy(&line, v->body, 4);
            memcpy(&kind, v->body + 4, 4);
            size_t pos = 8;
            const char *module = next_str(v->body, v->len, &pos);
            const char *qualname = next_str(v->body, v->len, &pos);
            const char *file = next_str(v->body, v->len, &pos);
            const char *args = next_str(v->body, v->len, &pos);
            const char *locals = next_str(v->body, v->len, &pos);
            const char *label = next_str(v->body, v->len, &pos);
            rc = function_row(g, kind_name(kind), module, qualname, file, line,
                              &g->func_map[v->aux]);
            if (rc == CS_OK && (*args || *locals || *label))
                rc = function_names(g, g->func_map[v->aux], args, locals, label);
        }
    }
    sqlite3_finalize(st);
    /* aggregates and signatures after every definition, wherever their
     * records were */
    for (size_t i = 0; i < g->vn && rc == CS_OK; i++) {
        if (g->vars[i].kind == CS_VAR_PROFILE)
            rc = insert_profile(g, &g->vars[i]);
        else if (g->vars[i].kind == CS_VAR_SIG)
            rc = insert_signature(g, &g->vars[i]);
    }
    if (rc == CS_OK)
        rc = insert_trees(g);
    return rc;
}

static int64_t
func_of(ing *g, uint32_t local)
{
    if (local < g->func_cap && g->func_map[local])
        return g->func_map[local];
    /* The definition was lost with a damaged tail: keep the call anyway. */
    char name[32];
    snprintf(name, sizeof name, "<unknown #%u>", local);
    int64_t id = 0;
    if (function_row(g, "function", "?", name, "", 0, &id) != CS_OK)
        return 0;
    if (grow_map(&g->func_map, &g->func_cap, local) == CS_OK)
        g->func_map[local] = id;
    return id;
}

/* rowpipe's mapping of local function ids; runs in the writer thread. */
static int64_t
map_func(void *ctx, uint32_t local)
{
    return func_of(ctx, local);
}

static int64_t
thread_of(ing *g, uint32_t stream)
{
    return stream < g->thread_cap ? g->thread_map[stream] : 0;
}

/* ---- pass 2 -------------------------------------------------------------- */

static int
stack_push(ing *g, uint64_t key)
{
    {
        uint64_t *s = cs__grow(g->stack, g->sn, &g->scap, sizeof *s, 64);
        if (s == NULL)
            return CS_ENOMEM;
        g->stack = s;
    }
    g->stack[g->sn++] = key;
    return CS_OK;
}

static void
stack_remove(ing *g, uint64_t key)
{
    for (size_t i = g->sn; i-- > 0;) {
        if (g->stack[i] == key) {
            memmove(&g->stack[i], &g->stack[i + 1], (g->sn - i - 1) * sizeof *g->stack);
            g->sn--;
            return;
        }
    }
}

/* Stop the clocks of a running call at `ts` (suspend, pause or exit). */
static void
stop_running(ocall *c, const cs_event *ev)
{
    if (!c->running)
        return;
    c->active += ev->ts - c->mark;
    if (c->has_cpu && ev->has_cpu && ev->cpu_ns >= c->cpu_mark)
        c->cpu_acc += ev->cpu_ns - c->cpu_mark;
    c->running = 0;
}

static int
finish(ing *g, ocall *c, const cs_event *ev)
{
    int finished = ev != NULL;
    uint64_t end = 0, wall = 0, self = 0;
    if (finished) {
        stop_running(c, ev);
        end = ev->ts;
        wall = end - c->start;
        if (c->flags & CS_FLAG_SPAN)
            wall = c->active; /* paused time is not counted */
        self = c->active > c->child ? c->active - c->child : 0;
        /* the CPU clock is read inside the wall clock's reads at entry and
         * outside them at exit (their cost is not the call's): the two
         * reads' length is all CPU may exceed its running time by */
        if (c->cpu_acc > c->active)
            c->cpu_acc = c->active;
        /* credit the parent with this call's running time */
        ocall *p = c->parent_key ? omap_find(&g->open, c->parent_key) : NULL;
        if (p && p->id == c->parent_id)
            p->child += c->active;
    }
    cs__row r;
    int mem = finished && c->has_mem && ev->has_mem;
    int64_t v[CS_ROW_COLS - 1] = {c->id,
                                  c->parent_id,
                                  c->func_id, /* local: the writer maps it */
                                  c->thread_id,
                                  (int64_t)c->start,
                                  (int64_t)end,
                                  (int64_t)wall,
                                  (int64_t)self,
                                  (int64_t)c->cpu_acc,
                                  mem ? (int64_t)ev->rss - (int64_t)c->rss_start : 0,
                                  mem ? (int64_t)ev->peak_rss : 0,
                                  c->recursive};
    memcpy(r.v, v, sizeof v);
    r.null = (c->parent_id == 0 ? 1u << 1 : 0) | (c->func_id == 0 ? 1u << 2 : 0) |
             (c->thread_id == 0 ? 1u << 3 : 0) | (!finished ? 7u << 5 : 0) |
             (!(finished && c->has_cpu && ev->has_cpu) ? 1u << 8 : 0) | (!mem ? 3u << 9 : 0);
    r.status = !finished ? "unfinished" : (ev->status == CS_STATUS_RAISED) ? "raised" : "ok";
    int rc = cs__rowpipe_push(g->pipe, &r);
    if (rc != CS_OK)
        return rc;
    nslot *ns = nmap_get(&g->nest, nest_key(c->key, c->func_id));
    if (ns && ns->open)
        ns->open--;
    g->res->calls++;
    if (!finished)
        g->res->unfinished++;
    else if (ev->status == CS_STATUS_RAISED)
        g->res->errors++;
    omap_remove(&g->open, c);
    return CS_OK;
}

static int
on_enter(ing *g, const cs_event *ev)
{
    uint64_t key = ((uint64_t)ev->stream << CS_SEQ_BITS) | ev->seq;
    uint64_t parent_key = g->sn ? g->stack[g->sn - 1] : 0;
    ocall *p = parent_key ? omap_find(&g->open, parent_key) : NULL;
    int64_t parent_id = p ? p->id : 0;
    ocall *c = omap_insert(&g->open, key);
    if (c == NULL)
        return CS_ENOMEM;
    c->id = g->next_id++;
    c->parent_key = parent_key;
    c->parent_id = parent_id;
    c->thread_id = thread_of(g, ev->stream);
    c->func_id = ev->func; /* local id, mapped by the writer thread */
    c->flags = ev->flags;
    nslot *ns = nmap_get(&g->nest, nest_key(key, ev->func));
    if (ns == NULL)
        return CS_ENOMEM;
    c->recursive = ns->open > 0;
    ns->open++;
    c->start = c->mark = ev->ts;
    c->has_cpu = ev->has_cpu;
    c->cpu_mark = ev->cpu_ns;
    c->has_mem = ev->has_mem;
    c->rss_start = ev->rss;
    /* async calls start suspended; their first RESUME runs them */
    c->running = !(ev->flags & CS_FLAG_ASYNC);
    if (c->running)
        return stack_push(g, key);
    return CS_OK;
}

/* The call an implicit EXIT closes: the innermost open plain call of the
 * stream whose seq has the record's low bits. 0 if none. */
static uint64_t
implicit_key(ing *g, const cs_event *ev)
{
    for (size_t i = g->sn; i-- > 0;) {
        uint64_t key = g->stack[i];
        if ((key & CS_SEQLO_MASK) != ev->seq)
            continue;
        ocall *c = omap_find(&g->open, key);
        if (c && !(c->flags & (CS_FLAG_SPAN | CS_FLAG_ASYNC)))
            return key;
    }
    return 0;
}

static int
apply(ing *g, const cs_event *ev, int same_stream)
{
    uint64_t key = ev->implicit ? implicit_key(g, ev)
                                : ((uint64_t)ev->target << CS_SEQ_BITS) | ev->seq;
    ocall *c = key ? omap_find(&g->open, key) : NULL;
    if (c == NULL) {
        g->res->orphans++;
        return CS_OK;
    }
    switch (ev->kind) {
    case CS_EV_EXIT:
        if (same_stream)
            stack_remove(g, key);
        return finish(g, c, ev);
    case CS_EV_SUSPEND:
        if (same_stream)
            stack_remove(g, key);
        stop_running(c, ev);
        return CS_OK;
    case CS_EV_RESUME:
        if (c->running)
            return CS_OK;
        c->running = 1;
        c->mark = ev->ts;
        if (ev->has_cpu)
            c->cpu_mark = ev->cpu_ns;
        return same_stream ? stack_push(g, key) : CS_OK;
    default:
        return CS_OK;
    }
}

/* The length of the string at `s` inside a body ending at `end`. */
static size_t
body_strlen(const char *s, const char *end)
{
    return s >= end ? 0 : strnlen(s, (size_t)(end - s));
}

static int
on_error_var(ing *g, const cs_event *ev)
{
    uint64_t key = ((uint64_t)ev->target << CS_SEQ_BITS) | ev->seq;
    ocall *c = omap_find(&g->open, key);
    if (c == NULL || c->raised_err)
        return CS_OK;
    c->raised_err = 1;
    const char *end = ev->body + ev->body_len;
    const char *type = ev->body;
    const char *msg = type + body_strlen(type, end) + 1;
    const char *tb = msg + body_strlen(msg, end) + 1;
    const char *ref = tb + body_strlen(tb, end) + 1;
    /* "^": the same exception propagating from this thread's previous
     * error; its traceback is stored there (see errors.origin). */
    int same = ref < end && body_strlen(ref, end) == 1 && ref[0] == '^' && g->last_err_id != 0;
    {
        err_row *e = cs__grow(g->errs, g->en, &g->ecap, sizeof *e, 16);
        if (e == NULL)
            return CS_ENOMEM;
        g->errs = e;
    }
    err_row *e = &g->errs[g->en];
    e->call = c->id;
    e->origin = same ? g->last_err_id : 0;
    e->type = cs__strndup(type, body_strlen(type, end));
    e->message = cs__strndup(msg, body_strlen(msg, end));
    e->traceback = same ? NULL : cs__strndup(tb, body_strlen(tb, end));
    g->en++;
    if (!e->type || !e->message || (!same && !e->traceback))
        return CS_ENOMEM;
    if (!same)
        g->last_err_id = c->id;
    return CS_OK;
}

/* Values kept before they are written: memory stays bounded by this, not
 * by the size of the log. */
#define VALS_FLUSH (16u << 20)

static int flush_values(ing *g);

/* A captured value of an open call: kept, written after the calls. */
static int
on_value_var(ing *g, const cs_event *ev)
{
    uint64_t key = ((uint64_t)ev->target << CS_SEQ_BITS) | ev->seq;
    ocall *c = omap_find(&g->open, key);
    if (c == NULL)
        return CS_OK;
    val_row h = {.call = c->id, .kind = ev->var_kind, .len = (uint32_t)ev->body_len};
    static const char pad[8];
    cs_buf_append(&g->vals, &h, sizeof h);
    cs_buf_append(&g->vals, ev->body, ev->body_len);
    cs_buf_append(&g->vals, pad, (8 - ev->body_len % 8) % 8);
    if (g->vals.failed)
        return CS_ENOMEM;
    return g->vals.len >= VALS_FLUSH ? flush_values(g) : CS_OK;
}

#define VAL_ROWS 32 /* rows per INSERT statement */

/* "INSERT INTO <table>(call, data, text) VALUES(?,?,?),..." with `n` rows. */
static int
prepare_values(ing *g, const char *table, int n, sqlite3_stmt **st)
{
    cs_buf q;
    cs_buf_init(&q);
    cs_buf_printf(&q, "INSERT OR REPLACE INTO %s(call, data, text) VALUES", table);
    for (int i = 0; i < n; i++)
        cs_buf_puts(&q, i ? ",(?,?,?)" : "(?,?,?)");
    int src = q.failed ? SQLITE_NOMEM : sqlite3_prepare_v2(g->s->db, q.data, -1, st, NULL);
    cs_buf_free(&q);
    return src == SQLITE_OK ? CS_OK : sqlerr(g, src);
}

/* Rows of args (kind CS_VAR_ARGS) or results, each with a short readable
 * preview, VAL_ROWS per statement. A value that does not read back whole
 * is stored as it is (the reader reports it), previewed as "<damaged>". */
static int
insert_value_rows(ing *g, unsigned kind, const char *table)
{
    sqlite3_stmt *many = NULL, *one = NULL;
    int rc = prepare_values(g, table, VAL_ROWS, &many);
    if (rc == CS_OK)
        rc = prepare_values(g, table, 1, &one);
    struct { int64_t call; const char *data; uint32_t len; size_t text; } rows[VAL_ROWS];
    cs_buf text;
    cs_buf_init(&text);
    int n = 0;
    for (size_t at = 0; rc == CS_OK && (at < g->vals.len || n > 0);) {
        if (at < g->vals.len) {
            val_row h;
            memcpy(&h, g->vals.data + at, sizeof h);
            const char *data = g->vals.data + at + sizeof h;
            at += sizeof h + h.len + (8 - h.len % 8) % 8;
            if (h.kind != kind)
                continue;
            rows[n].call = h.call;
            rows[n].data = data;
            rows[n].len = h.len;
            rows[n].text = text.len;
            cs_value_preview(data, h.len, &text, 200);
            cs_buf_append(&text, "", 1);
            if (++n < VAL_ROWS)
                continue;
        }
        if (text.failed) {
            rc = CS_ENOMEM;
            break;
        }
        /* a full batch, or the last rows one by one */
        for (int i = 0; i < n && rc == CS_OK;) {
            int per = n - i >= VAL_ROWS ? VAL_ROWS : 1;
            sqlite3_stmt *q = per == VAL_ROWS ? many : one;
            sqlite3_reset(q);
            for (int k = 0; k < per; k++, i++) {
                sqlite3_bind_int64(q, 3 * k + 1, rows[i].call);
                sqlite3_bind_blob(q, 3 * k + 2, rows[i].data, (int)rows[i].len, SQLITE_STATIC);
                sqlite3_bind_text(q, 3 * k + 3, text.data + rows[i].text, -1, SQLITE_STATIC);
            }
            int src = sqlite3_step(q);
            if (src != SQLITE_DONE)
                rc = sqlerr(g, src);
        }
        n = 0;
        text.len = 0;
    }
    cs_buf_free(&text);
    sqlite3_finalize(many);
    sqlite3_finalize(one);
    return rc;
}

static int
insert_values(ing *g)
{
    if (g->vals.len == 0)
        return CS_OK;
    int rc = insert_value_rows(g, CS_VAR_ARGS, "args");
    return rc == CS_OK ? insert_value_rows(g, CS_VAR_RESULT, "results") : rc;
}

/* Write the values kept so far. The writer thread owns the connection
 * meanwhile: it is stopped (its rows written) and started again. */
static int
flush_values(ing *g)
{
    int rc = cs__rowpipe_finish(g->pipe, g->s->path);
    g->pipe = NULL;
    if (rc == CS_OK)
        rc = insert_values(g);
    g->vals.len = 0;
    if (g->vals.cap > 2 * VALS_FLUSH) {
        cs_buf_free(&g->vals);
        cs_buf_init(&g->vals);
    }
    if (rc == CS_OK)
        rc = cs__rowpipe_start(&g->pipe, g->s->db, map_func, g, &g->top_id);
    return rc;
}

static int
insert_errors(ing *g)
{
    if (g->en == 0)
        return CS_OK;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db,
                                 "INSERT OR REPLACE INTO errors(call, type, message, traceback,"
                                 " origin) VALUES(?,?,?,?,?)",
                                 -1, &st, NULL);
    if (src != SQLITE_OK)
        return sqlerr(g, src);
    int rc = CS_OK;
    for (size_t i = 0; i < g->en && rc == CS_OK; i++) {
        const err_row *e = &g->errs[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, e->call);
        sqlite3_bind_text(st, 2, e->type, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, e->message, -1, SQLITE_STATIC);
        if (e->traceback)
            sqlite3_bind_text(st, 4, e->traceback, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 4);
        if (e->origin)
            sqlite3_bind_int64(st, 5, e->origin);
        else
            sqlite3_bind_null(st, 5);
        if ((src = sqlite3_step(st)) != SQLITE_DONE)
            rc = sqlerr(g, src);
    }
    sqlite3_finalize(st);
    return rc;
}

static int
defer(ing *g, const cs_event *ev)
{
    {
        struct deferred *d = cs__grow(g->deferred, g->dn, &g->dcap, sizeof *d, 16);
        if (d == NULL)
            return CS_ENOMEM;
        g->deferred = d;
    }
    struct deferred *d = &g->deferred[g->dn];
    d->ev = *ev;
    d->order = g->dn;
    if (ev->kind == CS_EV_VAR) {
        d->ev.ts = g->cur_ts; /* a variable record is timed by its stream */
        char *body = cs__malloc(ev->body_len + 1);
        if (body == NULL)
            return CS_ENOMEM;
        memcpy(body, ev->body, ev->body_len);
        body[ev->body_len] = '\0';
        d->ev.body = body;
    } else {
        d->ev.body = NULL;
    }
    g->dn++;
    return CS_OK;
}

static int
visit_event(void *ctx, const cs_event *ev)
{
    ing *g = ctx;
    if (ev->stream != g->cur_stream) {
        g->cur_stream = ev->stream;
        g->sn = 0; /* a new thread: its own stack */
        g->last_err_id = 0;
        g->cur_ts = 0;
    }
    if (ev->kind != CS_EV_VAR)
        g->cur_ts = ev->ts;
    switch (ev->kind) {
    case CS_EV_ENTER:
        return on_enter(g, ev);
    case CS_EV_EXIT:
    case CS_EV_SUSPEND:
    case CS_EV_RESUME:
        if (ev->target != ev->stream)
            return defer(g, ev);
        return apply(g, ev, 1);
    case CS_EV_VAR:
        if (ev->var_kind != CS_VAR_ERROR && ev->var_kind != CS_VAR_ARGS &&
            ev->var_kind != CS_VAR_RESULT)
            return CS_OK;
        if (ev->target != ev->stream)
            return defer(g, ev);
        return ev->var_kind == CS_VAR_ERROR ? on_error_var(g, ev) : on_value_var(g, ev);
    default:
        return CS_OK;
    }
}

static int
cmp_deferred(const void *a, const void *b)
{
    const struct deferred *x = a, *y = b;
    if (x->ev.ts != y->ev.ts)
        return x->ev.ts < y->ev.ts ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int
next_call_id(ing *g)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db, "SELECT IFNULL(MAX(id), 0) + 1 FROM calls", -1, &st,
                                 NULL);
    if (src != SQLITE_OK)
        return sqlerr(g, src);
    if ((src = sqlite3_step(st)) == SQLITE_ROW)
        g->next_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return src == SQLITE_ROW ? CS_OK : sqlerr(g, src);
}

static int
already_ingested(ing *g, const char *logname, int *yes)
{
    *yes = 0;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(g->s->db, "SELECT 1 FROM processes WHERE log = ?", -1, &st,
                                 NULL);
    if (src != SQLITE_OK)
        return sqlerr(g, src);
    bind_text(st, 1, logname);
    src = sqlite3_step(st);
    *yes = src == SQLITE_ROW;
    sqlite3_finalize(st);
    return (src == SQLITE_ROW || src == SQLITE_DONE) ? CS_OK : sqlerr(g, src);
}

static void
ing_free(ing *g)
{
    cs__rowpipe_finish(g->pipe, g->s->path); /* only on failure paths */
    g->pipe = NULL;
    for (size_t i = 0; i < g->en; i++) {
        cs__free(g->errs[i].type);
        cs__free(g->errs[i].message);
        cs__free(g->errs[i].traceback);
    }
    cs__free(g->errs);
    cs_buf_free(&g->vals);
    if (g->logfd >= 0)
        close(g->logfd);
    g->logfd = -1;
    cs__free(g->func_map);
    cs__free(g->thread_map);
    cs__free(g->open.slots);
    cs__free(g->stack);
    cs__free(g->nest.slots);
    sqlite3_finalize(g->fn_stmt[0]);
    sqlite3_finalize(g->fn_stmt[1]);
    g->fn_stmt[0] = g->fn_stmt[1] = NULL;
    for (size_t i = 0; i < g->dn; i++)
        cs__free((char *)g->deferred[i].ev.body);
    cs__free(g->deferred);
    for (size_t i = 0; i < g->vn; i++)
        cs__free(g->vars[i].body);
    cs__free(g->vars);
}

int
cs_store_ingest(cs_store *s, const char *logpath, int recovered, cs_ingest_result *out)
{
    memset(out, 0, sizeof *out);
    ing g;
    memset(&g, 0, sizeof g);
    g.s = s;
    g.res = out;
    g.logfd = open(logpath, O_RDONLY | O_CLOEXEC);
    const char *logname = strrchr(logpath, '/');
    logname = logname ? logname + 1 : logpath;
    /* the run is named after its directory, the one holding the log */
    char rundir_name[256] = "";
    if (logname != logpath) {
        size_t n = (size_t)(logname - 1 - logpath);
        const char *start = logpath;
        for (size_t i = 0; i < n; i++)
            if (logpath[i] == '/')
                start = logpath + i + 1;
        snprintf(rundir_name, sizeof rundir_name, "%.*s", (int)(logpath + n - start), start);
    }

    int rc = cs__store_exec(s, "BEGIN IMMEDIATE");
    if (rc != CS_OK)
        return rc;
    int done;
    if ((rc = already_ingested(&g, logname, &done)) != CS_OK)
        goto fail;
    if (done) {
        out->skipped = 1;
        cs__store_exec(s, "COMMIT");
        unlink(logpath);
        ing_free(&g);
        return CS_OK;
    }
    cs_scan_info info;
    if ((rc = cs_log_scan(logpath, 1, collect_var, &g, &info)) != CS_OK) {
        if (rc == CS_EFORMAT || rc == CS_EVERSION)
            cs__store_seterr("%s: %s", logpath,
                             rc == CS_EFORMAT ? "not a callscope log (bad header)"
                                              : "log format version not supported");
        else
            cs__store_seterr("%s: %s", logpath, cs_strerror(rc));
        goto fail;
    }
    out->records = info.records;
    out->bad_records = info.bad_records;
    out->clean = info.clean_end && !recovered;
    if ((rc = insert_process(&g, &info, logname, rundir_name, recovered)) != CS_OK)
        goto fail;
    if ((rc = insert_defs(&g)) != CS_OK)
        goto fail;
    if ((rc = next_call_id(&g)) != CS_OK)
        goto fail;

    g.top_id = g.next_id - 1;
    if ((rc = cs__rowpipe_start(&g.pipe, s->db, map_func, &g, &g.top_id)) != CS_OK)
        goto fail;
    cs_scan_info info2;
    if ((rc = cs_log_scan(logpath, 0, visit_event, &g, &info2)) != CS_OK)
        goto fail;
    if (g.dn)
        qsort(g.deferred, g.dn, sizeof *g.deferred, cmp_deferred);
    g.last_err_id = 0;
    for (size_t i = 0; i < g.dn; i++) {
        const cs_event *ev = &g.deferred[i].ev;
        if (ev->kind != CS_EV_VAR)
            rc = apply(&g, ev, 0);
        else
            rc = ev->var_kind == CS_VAR_ERROR ? on_error_var(&g, ev) : on_value_var(&g, ev);
        if (rc != CS_OK)
            goto fail;
    }
    /* What is still open never returned: the process ended first. */
    for (size_t i = 0; i < g.open.cap; i++) {
        while (g.open.slots[i].key != 0) {
            if ((rc = finish(&g, &g.open.slots[i], NULL)) != CS_OK)
                goto fail;
        }
    }
    /* The writer thread hands the connection back. */
    rc = cs__rowpipe_finish(g.pipe, s->path);
    g.pipe = NULL;
    if (rc != CS_OK)
        goto fail;
    if ((rc = insert_errors(&g)) != CS_OK)
        goto fail;
    if ((rc = insert_values(&g)) != CS_OK)
        goto fail;

    if ((rc = cs__store_exec(s, "COMMIT")) != CS_OK)
        goto fail;
    ing_free(&g);
    unlink(logpath);
    return CS_OK;
fail:
    ing_free(&g); /* stops the writer thread before the rollback */
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
