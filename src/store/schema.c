/* schema.c -- opening run.db, installing and migrating the schema.
 *
 * Migrations are a list indexed by the version they produce. A database
 * at version v is brought to CS_SCHEMA_VERSION by applying v+1.. in order,
 * inside one transaction. */
#include "store_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <string.h>

static _Thread_local char last_error[512];

const char *
cs_store_last_error(void)
{
    return last_error[0] ? last_error : "no error";
}

void
cs__store_seterr(const char *fmt, const char *a, const char *b)
{
    snprintf(last_error, sizeof last_error, fmt, a ? a : "", b ? b : "");
}

static const char *const migrations[] = {
    NULL,
    /* 1: the first schema */
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY, name TEXT, created_ns INTEGER,"
    " command TEXT, cwd TEXT, launcher TEXT);"
    "CREATE TABLE processes(id INTEGER PRIMARY KEY, pid INTEGER, ppid INTEGER,"
    " host TEXT, rank INTEGER, size INTEGER, name TEXT, argv TEXT, command TEXT, cwd TEXT,"
    " start_wall_ns INTEGER, start_mono_ns INTEGER, end_mono_ns INTEGER,"
    " state TEXT, log TEXT UNIQUE, records INTEGER, bad_records INTEGER);"
    "CREATE TABLE exits(host TEXT, ppid INTEGER, pid INTEGER, exit_code INTEGER,"
    " signal INTEGER, PRIMARY KEY(host, ppid, pid)) WITHOUT ROWID;"
    "CREATE TABLE threads(id INTEGER PRIMARY KEY,"
    " process INTEGER REFERENCES processes(id), stream INTEGER, tid INTEGER,"
    " ident INTEGER, name TEXT);"
    "CREATE TABLE functions(id INTEGER PRIMARY KEY, kind TEXT, module TEXT,"
    " qualname TEXT, file TEXT, line INTEGER, args TEXT, locals TEXT,"
    " UNIQUE(kind, module, qualname, file, line));"
    "CREATE TABLE calls(id INTEGER PRIMARY KEY, parent INTEGER,"
    " function INTEGER REFERENCES functions(id),"
    " thread INTEGER REFERENCES threads(id), start_ns INTEGER, end_ns INTEGER,"
    " wall_ns INTEGER, self_ns INTEGER, cpu_ns INTEGER, rss_delta INTEGER,"
    " peak_rss INTEGER, status TEXT);"
    "CREATE TABLE profile(function INTEGER REFERENCES functions(id),"
    " process INTEGER REFERENCES processes(id), calls INTEGER, total_ns INTEGER,"
    " self_ns INTEGER, min_ns INTEGER, max_ns INTEGER, hist BLOB);"
    "CREATE TABLE errors(call INTEGER PRIMARY KEY REFERENCES calls(id),"
    " type TEXT, message TEXT, traceback TEXT,"
    " origin INTEGER REFERENCES calls(id));"
    "CREATE VIEW call_view AS SELECT c.id, c.parent,"
    " CASE WHEN f.module = '' THEN f.qualname ELSE f.module || '.' || f.qualname END"
    " AS function, f.kind, p.pid, p.ppid, p.host,"
    " p.rank, t.tid, t.name AS thread_name, c.start_ns, c.end_ns,"
    " p.start_wall_ns + (c.start_ns - p.start_mono_ns) AS start_wall_ns,"
    " c.wall_ns, c.self_ns, c.cpu_ns, c.rss_delta, c.peak_rss, c.status,"
    " e.type AS error_type, e.message AS error_message"
    " FROM calls c JOIN functions f ON f.id = c.function"
    " JOIN threads t ON t.id = c.thread JOIN processes p ON p.id = t.process"
    " LEFT JOIN errors e ON e.call = c.id;",
    /* 2: captured arguments and results, blobs stored once, signatures */
    "CREATE TABLE args(call INTEGER PRIMARY KEY REFERENCES calls(id), data BLOB, text TEXT);"
    "CREATE TABLE results(call INTEGER PRIMARY KEY REFERENCES calls(id), data BLOB,"
    " text TEXT);"
    "CREATE TABLE blobs(id INTEGER PRIMARY KEY, size INTEGER, data BLOB);"
    "ALTER TABLE functions ADD COLUMN signature BLOB;",
    /* 3: comparisons of runs and the significant digits they found */
    "CREATE TABLE comparisons(id INTEGER PRIMARY KEY, created_ns INTEGER, kind TEXT,"
    " runs TEXT, method TEXT, confidence REAL, probability REAL, align TEXT);"
    "CREATE TABLE digits(comparison INTEGER REFERENCES comparisons(id), function TEXT,"
    " value TEXT, calls INTEGER, elements INTEGER, min REAL, median REAL, max REAL,"
    " worst_call INTEGER, worst_element INTEGER, unequal INTEGER);"
    "CREATE TABLE digits_calls(comparison INTEGER REFERENCES comparisons(id),"
    " function TEXT, value TEXT, call INTEGER, digits REAL);",
    /* 4: one call model. C functions (kind 'builtin') with cProfile's
     * label; the calling-context tree of --all; primitive (non-recursive)
     * calls and CPU time in the profile; calls flagged recursive; one
     * definition of a function's display name. */
    "ALTER TABLE functions ADD COLUMN label TEXT;"
    "ALTER TABLE profile ADD COLUMN prim_calls INTEGER;"
    "ALTER TABLE profile ADD COLUMN cpu_ns INTEGER;"
    "ALTER TABLE profile ADD COLUMN thread INTEGER REFERENCES threads(id);"
    "ALTER TABLE calls ADD COLUMN recursive INTEGER;"
    "CREATE TABLE tree(id INTEGER PRIMARY KEY, parent INTEGER,"
    " thread INTEGER REFERENCES threads(id), node INTEGER,"
    " function INTEGER REFERENCES functions(id), depth INTEGER, flags INTEGER,"
    " calls INTEGER, total_ns INTEGER, self_ns INTEGER, cpu_ns INTEGER, max_ns INTEGER);"
    "CREATE TABLE tree_pending(thread INTEGER REFERENCES threads(id), nodes BLOB);"
    "CREATE VIEW function_names AS SELECT id,"
    " CASE WHEN module = '' THEN qualname ELSE module || '.' || qualname END AS name"
    " FROM functions;",
};

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]) - 1)

static int
exec(cs_store *s, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        cs__store_seterr("%s: %s", s->path, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) ? CS_ENOTDB
               : rc == SQLITE_BUSY                          ? CS_EBUSY
                                                            : CS_EDB;
    }
    return CS_OK;
}

int
cs__store_exec(cs_store *s, const char *sql)
{
    return exec(s, sql);
}

static int
user_version(cs_store *s, int *v)
{
    *v = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *v = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        cs__store_seterr("%s: %s", s->path, sqlite3_errmsg(s->db));
        return (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) ? CS_ENOTDB : CS_EDB;
    }
    return CS_OK;
}

/* A database with tables but user_version 0 was not made by callscope. */
static int
has_foreign_tables(cs_store *s)
{
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n > 0;
}

static int
migrate(cs_store *s, int from)
{
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc != CS_OK)
        return rc;
    int v;
    /* re-read under the write lock: another process may have migrated */
    if ((rc = user_version(s, &v)) != CS_OK)
        goto fail;
    (void)from;
    if (v == 0 && has_foreign_tables(s)) {
        cs__store_seterr("%s: %s", s->path, "not a callscope database");
        rc = CS_ENOTDB;
        goto fail;
    }
    for (int i = v + 1; i <= N_MIGRATIONS; i++) {
        if ((rc = exec(s, migrations[i])) != CS_OK)
            goto fail;
    }
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", CS_SCHEMA_VERSION);
    if ((rc = exec(s, sql)) != CS_OK)
        goto fail;
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('schema_version', '%d')",
             CS_SCHEMA_VERSION);
    if ((rc = exec(s, sql)) != CS_OK)
        goto fail;
    return exec(s, "COMMIT");
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int
cs_store_open(const char *path, int create, cs_store **out)
{
    *out = NULL;
    last_error[0] = '\0';
    if (!create && !cs__exists(path)) {
        cs__store_seterr("%s: %s", path, "no such file");
        return CS_ENOENT;
    }
    cs_store *s = cs__calloc(1, sizeof *s);
    if (s == NULL)
        return CS_ENOMEM;
    s->path = cs__strdup(path);
    if (s->path == NULL) {
        cs__free(s);
        return CS_ENOMEM;
    }
    if (create && !cs__exists(path)) {
        /* made here, private (SQLite would make it 0644 less the umask);
         * its journal takes the same mode */
        int fd = cs_create_file(path, O_RDWR | O_EXCL | O_CLOEXEC);
        if (fd >= 0)
            close(fd);
    }
    /* A handle is used by one thread at a time: no per-call mutex. */
    int flags = SQLITE_OPEN_NOMUTEX |
                (create ? (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) : SQLITE_OPEN_READWRITE);
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK && !create) {
        /* read-only media or permissions: reading still works */
        sqlite3_close(s->db);
        s->db = NULL;
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    }
    if (rc != SQLITE_OK) {
        cs__store_seterr("%s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        cs_store_close(s);
        return CS_EDB;
    }
    sqlite3_busy_timeout(s->db, 60000);
    /* Bulk writes: a 64 MiB page cache, temporary data in memory. */
    sqlite3_exec(s->db, "PRAGMA page_size = 16384; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY", NULL, NULL,
                 NULL);
    int v;
    if ((rc = user_version(s, &v)) != CS_OK)
        goto fail;
    if (v > CS_SCHEMA_VERSION) {
        char msg[64];
        snprintf(msg, sizeof msg, "%d (this callscope reads up to %d)", v, CS_SCHEMA_VERSION);
        cs__store_seterr("%s: database schema version %s", path, msg);
        rc = CS_EVERSION;
        goto fail;
    }
    int fresh = v == 0 && create && !has_foreign_tables(s);
    if (fresh)
        /* a new, empty file: nothing in it to protect while the schema is
         * made (the first ingest's commit flushes the file) */
        sqlite3_exec(s->db, "PRAGMA synchronous = OFF", NULL, NULL, NULL);
    if (v < CS_SCHEMA_VERSION) {
        if (v == 0 && !create) {
            int foreign = has_foreign_tables(s);
            cs__store_seterr("%s: %s", path,
                             foreign ? "not a callscope database" : "empty database");
            rc = foreign ? CS_ENOTDB : CS_ENOTRUN;
            goto fail;
        }
        if ((rc = migrate(s, v)) != CS_OK)
            goto fail;
    }
    if (fresh)
        sqlite3_exec(s->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    *out = s;
    return CS_OK;
fail:
    cs_store_close(s);
    return rc;
}

void
cs_store_close(cs_store *s)
{
    if (s == NULL)
        return;
    sqlite3_close(s->db);
    cs__free(s->path);
    cs__free(s);
}

sqlite3 *
cs_store_db(cs_store *s)
{
    return s->db;
}

void
cs__json_str(cs_buf *b, const char *s, size_t n)
{
    cs_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            cs_buf_puts(b, "\\\"");
            break;
        case '\\':
            cs_buf_puts(b, "\\\\");
            break;
        case '\n':
            cs_buf_puts(b, "\\n");
            break;
        case '\t':
            cs_buf_puts(b, "\\t");
            break;
        case '\r':
            cs_buf_puts(b, "\\r");
            break;
        default:
            if (c < 0x20) {
                cs_buf_printf(b, "\\u%04x", c);
            } else if (c < 0x80) {
                cs_buf_append(b, &s[i], 1);
            } else {
                /* whole UTF-8 sequences; anything else becomes U+FFFD */
                size_t k = cs_utf8_len((const unsigned char *)s + i, n - i);
                if (k == 0) {
                    cs_buf_puts(b, "\\ufffd");
                } else {
                    cs_buf_append(b, &s[i], k);
                    i += k - 1;
                }
            }
        }
    }
    cs_buf_append(b, "\"", 1);
}

int
cs_store_index(cs_store *s)
{
    /* Built on first need rather than kept up to date during ingest, which
     * it would slow down by a third (bench/bench_log.c). */
    return exec(s, "CREATE INDEX IF NOT EXISTS calls_function ON calls(function)");
}
