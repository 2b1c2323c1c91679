/* export.c -- a run in the formats other tools read: Chrome trace events
 * (Perfetto, chrome://tracing), speedscope, pstats (pstats.Stats,
 * snakeviz), CSV and JSON Lines. Each streams its rows from run.db. */
#include "cs_analysis.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char errbuf[512];

const char *
cs_export_last_error(void)
{
    return errbuf;
}

void
cs__export_seterr(const char *what, const char *msg)
{
    if (what == NULL)
        errbuf[0] = '\0';
    else
        snprintf(errbuf, sizeof errbuf, "%s: %s", what, msg);
}

static int
efail(int rc, const char *what, sqlite3 *db)
{
    snprintf(errbuf, sizeof errbuf, "%s: %s", what, db ? sqlite3_errmsg(db) : cs_strerror(rc));
    return rc;
}

static const char *const format_names[] = {"chrome", "speedscope", "pstats",
                                            "csv",    "jsonl",      "collapsed"};

int
cs_export_parse(const char *name, cs_export_format *out)
{
    for (int i = 0; i < (int)(sizeof format_names / sizeof *format_names); i++)
        if (strcmp(name, format_names[i]) == 0) {
            *out = (cs_export_format)i;
            return CS_OK;
        }
    return CS_EINVAL;
}

const char *
cs_export_names(void)
{
    return "chrome, speedscope, pstats, csv, jsonl, collapsed";
}

/* ---- rows -------------------------------------------------------------------- */

/* Every call, in start order, with what the formats need. The parent
 * process's name is that of the process with pid = ppid on the same host. */
static const char CALLS_SQL[] =
    "SELECT c.id, c.parent, "
    "CASE WHEN f.module = '' THEN f.qualname ELSE f.module || '.' || f.qualname END,"
    " f.file, f.line, p.pid, p.ppid, p.host, p.rank, p.name,"
    " (SELECT pp.name FROM processes pp WHERE pp.pid = p.ppid AND pp.host = p.host LIMIT 1),"
    " t.tid, t.name, p.start_wall_ns + (c.start_ns - p.start_mono_ns), c.wall_ns, c.self_ns,"
    " c.cpu_ns, c.rss_delta, c.status, e.type, e.message,"
    " COALESCE(e.traceback, (SELECT o.traceback FROM errors o WHERE o.call = e.origin)),"
    " a.text, r.text, c.function, t.id"
    " FROM calls c JOIN functions f ON f.id = c.function"
    " JOIN threads t ON t.id = c.thread JOIN processes p ON p.id = t.process"
    " LEFT JOIN errors e ON e.call = c.id LEFT JOIN args a ON a.call = c.id"
    " LEFT JOIN results r ON r.call = c.id";

enum {
    C_ID, C_PARENT, C_NAME, C_FILE, C_LINE, C_PID, C_PPID, C_HOST, C_RANK, C_PNAME, C_PPNAME,
    C_TID, C_TNAME, C_START, C_WALL, C_SELF, C_CPU, C_RSS, C_STATUS, C_ETYPE, C_EMSG, C_TB,
    C_ARGS, C_RESULT, C_FUNC, C_THREAD
};

static const char *
col_text(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static int
has(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) != SQLITE_NULL;
}

void
cs__json_fputs(FILE *f, const char *s)
{
    cs_buf b;
    cs_buf_init(&b);
    cs__json_str(&b, s, strlen(s));
    fputs(b.data ? b.data : "\"\"", f);
    cs_buf_free(&b);
}

/* The earliest start of the run: times in the trace formats count from it. */
static int64_t
run_start(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t t = 0;
    if (sqlite3_prepare_v2(db, "SELECT min(start_wall_ns) FROM processes", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        t = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return t;
}

/* ---- Chrome trace events -------------------------------------------------------- */

static int
export_chrome(sqlite3 *db, sqlite3_stmt *st, FILE *f, uint64_t *rows)
{
    int64_t t0 = run_start(db);
    fputs("{\"displayTimeUnit\": \"ns\", \"traceEvents\": [\n", f);
    int first = 1;
    /* names of processes and threads */
    sqlite3_stmt *m = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT p.pid, p.name, p.host, p.rank, t.tid, t.name FROM threads t"
                           " JOIN processes p ON p.id = t.process ORDER BY p.id, t.id",
                           -1, &m, NULL) != SQLITE_OK)
        return efail(CS_EDB, "run.db", db);
    int64_t last_pid = -1;
    while (sqlite3_step(m) == SQLITE_ROW) {
        int64_t pid = sqlite3_column_int64(m, 0);
        if (pid != last_pid) {
            char label[256];
            if (has(m, 3))
                snprintf(label, sizeof label, "%s (pid %lld, rank %lld, %s)", col_text(m, 1),
                         (long long)pid, (long long)sqlite3_column_int64(m, 3), col_text(m, 2));
            else
                snprintf(label, sizeof label, "%s (pid %lld, %s)", col_text(m, 1),
                         (long long)pid, col_text(m, 2));
            fprintf(f, "%s{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %lld,"
                       " \"tid\": 0, \"args\": {\"name\": ",
                    first ? "" : ",\n", (long long)pid);
            cs__json_fputs(f, label);
            fputs("}}", f);
            first = 0;
            last_pid = pid;
        }
        fprintf(f, ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": %lld, \"tid\": %lld,"
                   " \"args\": {\"name\": ",
                (long long)pid, (long long)sqlite3_column_int64(m, 4));
        cs__json_fputs(f, col_text(m, 5));
        fputs("}}", f);
    }
    sqlite3_finalize(m);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        double ts = (double)(sqlite3_column_int64(st, C_START) - t0) / 1e3;
        fprintf(f, "%s{\"name\": ", first ? "" : ",\n");
        first = 0;
        cs__json_fputs(f, col_text(st, C_NAME));
        fprintf(f, ", \"cat\": \"function\", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f,"
                   " \"pid\": %lld, \"tid\": %lld, \"args\": {\"call\": %lld, \"status\": ",
                ts, has(st, C_WALL) ? (double)sqlite3_column_int64(st, C_WALL) / 1e3 : 0.0,
                (long long)sqlite3_column_int64(st, C_PID),
                (long long)sqlite3_column_int64(st, C_TID),
                (long long)sqlite3_column_int64(st, C_ID));
        cs__json_fputs(f, col_text(st, C_STATUS));
        if (has(st, C_CPU))
            fprintf(f, ", \"cpu_ns\": %lld", (long long)sqlite3_column_int64(st, C_CPU));
        if (has(st, C_RSS))
            fprintf(f, ", \"rss_delta\": %lld", (long long)sqlite3_column_int64(st, C_RSS));
        if (has(st, C_ARGS)) {
            fputs(", \"args\": ", f);
            cs__json_fputs(f, col_text(st, C_ARGS));
        }
        if (has(st, C_RESULT)) {
            fputs(", \"result\": ", f);
            cs__json_fputs(f, col_text(st, C_RESULT));
        }
        if (has(st, C_ETYPE)) {
            fputs(", \"error\": ", f);
            cs__json_fputs(f, col_text(st, C_ETYPE));
            fputs(", \"message\": ", f);
            cs__json_fputs(f, col_text(st, C_EMSG));
        }
        fputs("}}", f);
        (*rows)++;
    }
    fputs("\n]}\n", f);
    return src == SQLITE_DONE ? CS_OK : efail(CS_EDB, "run.db", db);
}

/* ---- CSV and JSON Lines ------------------------------------------------------------ */

/* `s` as UTF-8, invalid bytes written as U+FFFD. */
static void
utf8_fputs(FILE *f, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = cs_utf8_len(u + i, n - i);
        if (k == 0) {
            fputs("\xef\xbf\xbd", f);
            i++;
        } else {
            if (u[i] == '"')
                fputc('"', f); /* (in a quoted field; see csv_field) */
            fwrite(u + i, 1, k, f);
            i += k;
        }
    }
}

static void
csv_field(FILE *f, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        utf8_fputs(f, s); /* (no quote in it to double) */
        return;
    }
    fputc('"', f);
    utf8_fputs(f, s);
    fputc('"', f);
}

static void
csv_int(FILE *f, sqlite3_stmt *st, int i)
{
    if (has(st, i))
        fprintf(f, "%lld", (long long)sqlite3_column_int64(st, i));
}

static void
csv_secs(FILE *f, sqlite3_stmt *st, int i)
{
    if (has(st, i))
        fprintf(f, "%.9f", (double)sqlite3_column_int64(st, i) / 1e9);
}

/* The CSV columns: the seed tool's first, then the rest of the call. */
enum { K_INT, K_SECS, K_TEXT, K_BROKEN };
static const struct {
    const char *name;
    int col, kind;
} csv_cols[] = {
    {"id", C_ID, K_INT},
    {"function", C_NAME, K_TEXT},
    {"time", C_WALL, K_SECS},
    {"cpu", C_CPU, K_SECS},
    {"memory", C_RSS, K_INT},
    {"pid", C_PID, K_INT},
    {"ppid", C_PPID, K_INT},
    {"process_name", C_PNAME, K_TEXT},
    {"parent_process_name", C_PPNAME, K_TEXT},
    {"broken", C_STATUS, K_BROKEN},
    {"error_type", C_ETYPE, K_TEXT},
    {"error_value", C_EMSG, K_TEXT},
    {"traceback", C_TB, K_TEXT},
    {"parent", C_PARENT, K_INT},
    {"start", C_START, K_SECS},
    {"self", C_SELF, K_SECS},
    {"status", C_STATUS, K_TEXT},
    {"thread", C_TID, K_INT},
    {"thread_name", C_TNAME, K_TEXT},
    {"host", C_HOST, K_TEXT},
    {"rank", C_RANK, K_INT},
    {"args", C_ARGS, K_TEXT},
    {"result", C_RESULT, K_TEXT},
};

static int
export_csv(sqlite3 *db, sqlite3_stmt *st, FILE *f, uint64_t *rows)
{
    size_t n = sizeof csv_cols / sizeof *csv_cols;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%s", i ? "," : "", csv_cols[i].name);
    fputs("\r\n", f);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        for (size_t i = 0; i < n; i++) {
            int c = csv_cols[i].col;
            if (i)
                fputc(',', f);
            switch (csv_cols[i].kind) {
            case K_INT:
                csv_int(f, st, c);
                break;
            case K_SECS:
                csv_secs(f, st, c);
                break;
            case K_TEXT:
                csv_field(f, col_text(st, c));
                break;
            default: /* broken: anything but a call that returned */
                fputs(strcmp(col_text(st, c), "ok") == 0 ? "False" : "True", f);
            }
        }
        fputs("\r\n", f);
        (*rows)++;
    }
    return src == SQLITE_DONE ? CS_OK : efail(CS_EDB, "run.db", db);
}

static void
json_int_or_null(FILE *f, sqlite3_stmt *st, int i)
{
    if (has(st, i))
        fprintf(f, "%lld", (long long)sqlite3_column_int64(st, i));
    else
        fputs("null", f);
}

static void
json_text_or_null(FILE *f, sqlite3_stmt *st, int i)
{
    if (has(st, i))
        cs__json_fputs(f, col_text(st, i));
    else
        fputs("null", f);
}

static int
export_jsonl(sqlite3 *db, sqlite3_stmt *st, FILE *f, uint64_t *rows)
{
    static const struct {
        const char *key;
        int col, text;
    } cols[] = {
        {"id", C_ID, 0},           {"parent", C_PARENT, 0},
        {"function", C_NAME, 1},   {"file", C_FILE, 1},
        {"line", C_LINE, 0},       {"pid", C_PID, 0},
        {"ppid", C_PPID, 0},       {"host", C_HOST, 1},
        {"rank", C_RANK, 0},       {"process_name", C_PNAME, 1},
        {"parent_process_name", C_PPNAME, 1},
        {"tid", C_TID, 0},         {"thread_name", C_TNAME, 1},
        {"start_wall_ns", C_START, 0},
        {"wall_ns", C_WALL, 0},    {"self_ns", C_SELF, 0},
        {"cpu_ns", C_CPU, 0},      {"rss_delta", C_RSS, 0},
        {"status", C_STATUS, 1},   {"error_type", C_ETYPE, 1},
        {"error_message", C_EMSG, 1},
        {"traceback", C_TB, 1},    {"args", C_ARGS, 1},
        {"result", C_RESULT, 1},
    };
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) {
            fprintf(f, "%s\"%s\": ", i ? ", " : "{", cols[i].key);
            if (cols[i].text)
                json_text_or_null(f, st, cols[i].col);
            else
                json_int_or_null(f, st, cols[i].col);
        }
        fputs("}\n", f);
        (*rows)++;
    }
    return src == SQLITE_DONE ? CS_OK : efail(CS_EDB, "run.db", db);
}

/* ---- speedscope ------------------------------------------------------------------------ */

/* Calls of one thread, for the evented profile: [start, end) with their
 * frame. Calls that do not nest inside the open ones (a generator resumed
 * elsewhere) are left out: an evented profile is a stack. */
typedef struct span {
    int64_t start, end;
    int64_t frame;
} span;

static int
export_speedscope(sqlite3 *db, FILE *f, uint64_t *rows)
{
    int64_t t0 = run_start(db);
    sqlite3_stmt *st = NULL;
    fputs("{\"$schema\": \"https://www.speedscope.app/file-format-schema.json\","
          " \"exporter\": \"callscope\", \"shared\": {\"frames\": [",
          f);
    if (sqlite3_prepare_v2(db,
                           "SELECT id, CASE WHEN module = '' THEN qualname ELSE module || '.' ||"
                           " qualname END, file, line FROM functions ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return efail(CS_EDB, "run.db", db);
    int64_t maxid = 0;
    int first = 1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        /* frame index = position; functions.id ascending */
        maxid++;
        fputs(first ? "{\"name\": " : ", {\"name\": ", f);
        first = 0;
        cs__json_fputs(f, col_text(st, 1));
        fputs(", \"file\": ", f);
        cs__json_fputs(f, col_text(st, 2));
        fprintf(f, ", \"line\": %lld}", (long long)sqlite3_column_int64(st, 3));
    }
    sqlite3_finalize(st);
    fputs("]}, \"profiles\": [", f);
    /* frame index of a function id */
    int64_t *index = NULL;
    size_t ncap = 0;
    if (sqlite3_prepare_v2(db, "SELECT id FROM functions ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK)
        return efail(CS_EDB, "run.db", db);
    int64_t pos = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if ((size_t)id >= ncap) {
            size_t cap = ncap ? ncap : 64;
            while (cap <= (size_t)id)
                cap *= 2;
            int64_t *v = cs__realloc(index, cap * sizeof *v);
            if (v == NULL) {
                sqlite3_finalize(st);
                cs__free(index);
                return efail(CS_ENOMEM, "export", NULL);
            }
            memset(v + ncap, 0, (cap - ncap) * sizeof *v);
            index = v;
            ncap = cap;
        }
        index[id] = pos++;
    }
    sqlite3_finalize(st);
    (void)maxid;
    sqlite3_stmt *th = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT t.id, p.pid, t.tid, t.name, p.name FROM threads t JOIN"
                           " processes p ON p.id = t.process ORDER BY p.id, t.id",
                           -1, &th, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT p.start_wall_ns + (c.start_ns - p.start_mono_ns), c.wall_ns,"
                           " c.function FROM calls c JOIN threads t ON t.id = c.thread"
                           " JOIN processes p ON p.id = t.process WHERE c.thread = ?"
                           " AND c.wall_ns IS NOT NULL ORDER BY 1, c.wall_ns DESC, c.id",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(th);
        cs__free(index);
        return efail(CS_EDB, "run.db", db);
    }
    int rc = CS_OK;
    span *stack = NULL;
    size_t scap = 0;
    int pfirst = 1;
    while (rc == CS_OK && sqlite3_step(th) == SQLITE_ROW) {
        char name[256];
        snprintf(name, sizeof name, "%s pid %lld, %s (tid %lld)", col_text(th, 4),
                 (long long)sqlite3_column_int64(th, 1), col_text(th, 3),
                 (long long)sqlite3_column_int64(th, 2));
        fputs(pfirst ? "\n{\"type\": \"evented\", \"name\": " : ",\n{\"type\": \"evented\", \"name\": ",
              f);
        pfirst = 0;
        cs__json_fputs(f, name);
        fputs(", \"unit\": \"nanoseconds\", \"startValue\": 0, \"events\": [", f);
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, sqlite3_column_int64(th, 0));
        size_t depth = 0;
        int efirst = 1;
        int64_t last = 0;
        int src;
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t s0 = sqlite3_column_int64(st, 0) - t0;
            int64_t e0 = s0 + sqlite3_column_int64(st, 1);
            int64_t fid = sqlite3_column_int64(st, 2);
            /* close what ended before this call starts */
            while (depth > 0 && stack[depth - 1].end <= s0) {
                depth--;
                fprintf(f, "%s{\"type\": \"C\", \"frame\": %lld, \"at\": %lld}",
                        efirst ? "" : ", ", (long long)stack[depth].frame,
                        (long long)stack[depth].end);
                efirst = 0;
                last = stack[depth].end;
            }
            if (depth > 0 && e0 > stack[depth - 1].end)
                continue; /* does not nest: left out */
            if (depth == scap) {
                size_t cap = scap ? scap * 2 : 64;
                span *v = cs__realloc(stack, cap * sizeof *v);
                if (v == NULL) {
                    rc = efail(CS_ENOMEM, "export", NULL);
                    break;
                }
                stack = v;
                scap = cap;
            }
            int64_t frame = (size_t)fid < ncap ? index[fid] : 0;
            stack[depth++] = (span){s0, e0, frame};
            fprintf(f, "%s{\"type\": \"O\", \"frame\": %lld, \"at\": %lld}", efirst ? "" : ", ",
                    (long long)frame, (long long)s0);
            efirst = 0;
            last = s0 > last ? s0 : last;
            (*rows)++;
        }
        while (depth > 0) {
            depth--;
            fprintf(f, "%s{\"type\": \"C\", \"frame\": %lld, \"at\": %lld}", efirst ? "" : ", ",
                    (long long)stack[depth].frame, (long long)stack[depth].end);
            efirst = 0;
            last = stack[depth].end > last ? stack[depth].end : last;
        }
        fprintf(f, "], \"endValue\": %lld}", (long long)last);
        if (src != SQLITE_DONE && rc == CS_OK)
            rc = efail(CS_EDB, "run.db", db);
    }
    fputs("\n]}\n", f);
    cs__free(stack);
    cs__free(index);
    sqlite3_finalize(st);
    sqlite3_finalize(th);
    return rc;
}

static int
exists(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int r = sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return r;
}

static int
has_calls(sqlite3 *db)
{
    return exists(db, "SELECT EXISTS(SELECT 1 FROM calls)");
}

static int
has_tree(sqlite3 *db)
{
    return exists(db, "SELECT EXISTS(SELECT 1 FROM tree)");
}

/* ---- the entry point ------------------------------------------------------------------- */

int
cs_export(cs_store *s, cs_export_format fmt, FILE *f, uint64_t *rows)
{
    *rows = 0;
    errbuf[0] = '\0';
    (void)cs_store_expand_trees(s); /* rows a process's exit left pending */
    sqlite3 *db = cs_store_db(s);
    if (fmt == CS_EXPORT_COLLAPSED)
        return cs__export_collapsed(s, f, rows);
    /* a run profiled with --all alone has a tree and no timeline */
    if ((fmt == CS_EXPORT_SPEEDSCOPE || fmt == CS_EXPORT_CHROME) && !has_calls(db) &&
        has_tree(db))
        return fmt == CS_EXPORT_CHROME ? cs__export_chrome_tree(s, f, rows)
                                       : cs__export_speedscope_tree(s, f, rows);
    if (fmt == CS_EXPORT_SPEEDSCOPE)
        return export_speedscope(db, f, rows);
    if (fmt == CS_EXPORT_PSTATS) {
        int rc = cs__export_pstats(db, f, rows);
        return rc == CS_OK ? rc : efail(rc, "run.db", rc == CS_ENOMEM ? NULL : db);
    }
    sqlite3_stmt *st = NULL;
    char sql[sizeof CALLS_SQL + 128];
    snprintf(sql, sizeof sql, "%s ORDER BY 14, c.id", CALLS_SQL);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return efail(CS_ENOTDB, "run.db", db);
    int rc = fmt == CS_EXPORT_CHROME ? export_chrome(db, st, f, rows)
             : fmt == CS_EXPORT_CSV  ? export_csv(db, st, f, rows)
                                     : export_jsonl(db, st, f, rows);
    sqlite3_finalize(st);
    return rc;
}
