/* run.c -- run directories seen from the store: finding a run, bringing
 * its database up to date after a crash, listing and summarising runs. */
#include "store_int.h"
#include "cs_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int
has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* 1 if `dir` holds run.db or at least one log. */
static int
looks_like_run(const char *dir)
{
    char *db = cs__path_join(dir, CS_DB_NAME);
    int yes = db && cs__exists(db);
    cs__free(db);
    if (yes)
        return 1;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (has_suffix(e->d_name, CS_LOG_SUFFIX)) {
            yes = 1;
            break;
        }
    closedir(d);
    return yes;
}

int
cs_run_resolve(const char *root, const char *spec, char **out)
{
    *out = NULL;
    char *cand = NULL;
    if (spec == NULL || *spec == '\0' || strcmp(spec, "latest") == 0) {
        cand = cs__path_join(root, "latest");
    } else if (cs__is_dir(spec)) {
        cand = cs__strdup(spec);
    } else if (has_suffix(spec, "/" CS_DB_NAME) || strcmp(spec, CS_DB_NAME) == 0) {
        const char *slash = strrchr(spec, '/');
        cand = slash ? cs__strndup(spec, (size_t)(slash - spec)) : cs__strdup(".");
    } else {
        cand = cs__path_join(root, spec);
    }
    if (cand == NULL)
        return CS_ENOMEM;
    char real[PATH_MAX];
    if (realpath(cand, real) == NULL || !cs__is_dir(real)) {
        cs__free(cand);
        return CS_ENOENT;
    }
    cs__free(cand);
    if (!looks_like_run(real))
        return CS_ENOTRUN;
    *out = cs__strdup(real);
    return *out ? CS_OK : CS_ENOMEM;
}

typedef int (*log_fn)(void *ctx, const char *path);

static int
each_log(const char *rundir, log_fn fn, void *ctx)
{
    DIR *d = opendir(rundir);
    if (d == NULL)
        return cs_from_errno(errno);
    int rc = CS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && rc == CS_OK) {
        if (!has_suffix(e->d_name, CS_LOG_SUFFIX))
            continue;
        char *p = cs__path_join(rundir, e->d_name);
        if (p == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        rc = fn(ctx, p);
        cs__free(p);
    }
    closedir(d);
    return rc;
}

/* Try to take a log's lock. Returns an fd holding it, -1 if a live
 * process holds it (*busy set), or -1 on another failure. */
static int
lock_log(const char *path, int *busy)
{
    *busy = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        *busy = errno == EWOULDBLOCK;
        close(fd);
        return -1;
    }
    return fd;
}

/* Open (creating if needed) the run.db of `rundir` for writing. */
static int
open_run_db(const char *rundir, cs_store **out)
{
    *out = NULL;
    char *db = cs__path_join(rundir, CS_DB_NAME);
    if (db == NULL)
        return CS_ENOMEM;
    int rc = cs_store_open(db, 1, out);
    cs__free(db);
    return rc;
}

typedef struct sync_ctx {
    const char *rundir;
    cs_store *store;
    cs_sync_result *res;
    int fatal;
} sync_ctx;

static int
open_store(sync_ctx *c)
{
    return c->store ? CS_OK : open_run_db(c->rundir, &c->store);
}

static int
sync_one(void *ctx, const char *path)
{
    sync_ctx *c = ctx;
    int busy;
    int fd = lock_log(path, &busy);
    if (fd < 0) {
        if (busy)
            c->res->running++;
        return CS_OK;
    }
    int rc = open_store(c);
    if (rc != CS_OK) {
        close(fd);
        c->fatal = rc;
        return rc;
    }
    cs_ingest_result r;
    rc = cs_store_ingest(c->store, path, 0, &r);
    close(fd);
    if (rc == CS_OK) {
        c->res->ingested++;
        c->res->bad_records += r.bad_records;
        return CS_OK;
    }
    if (rc == CS_ENOTDB || rc == CS_EDB || rc == CS_ENOMEM) {
        c->fatal = rc; /* the database, not the log, is at fault */
        return rc;
    }
    /* A damaged log is reported and left in place; the rest goes on. */
    c->res->failed++;
    if (c->res->message[0] == '\0')
        snprintf(c->res->message, sizeof c->res->message, "%s", cs_store_last_error());
    return CS_OK;
}

int
cs_run_sync(const char *rundir, cs_sync_result *out)
{
    memset(out, 0, sizeof *out);
    sync_ctx c = {.rundir = rundir, .res = out};
    int rc = each_log(rundir, sync_one, &c);
    cs_store_close(c.store);
    if (c.fatal)
        return c.fatal;
    return rc;
}

/* Count the logs of a run whose writer is gone. */
static int
free_log_cb(void *ctx, const char *path)
{
    int busy;
    int fd = lock_log(path, &busy);
    if (fd >= 0) {
        close(fd);
        ++*(int *)ctx;
    }
    return CS_OK;
}

/* One round of a merge: store every free log, then set meta "python"
 * (once: *python is cleared). Adds to `out`; `failed` gets the round's
 * count of logs that could not be read. */
static int
merge_round(const char *rundir, const char **python, cs_sync_result *out, int *failed)
{
    cs_sync_result r;
    int rc = cs_run_sync(rundir, &r);
    out->ingested += r.ingested;
    out->failed += r.failed;
    out->bad_records += r.bad_records;
    if (out->message[0] == '\0')
        memcpy(out->message, r.message, sizeof out->message);
    *failed = r.failed;
    if (rc == CS_OK && *python) {
        rc = cs_run_set_meta(rundir, "python", *python, 0);
        *python = NULL;
    }
    return rc;
}

int
cs_run_finish(const char *rundir, const char *python, cs_sync_result *out)
{
    memset(out, 0, sizeof *out);
    char *lockpath = cs__path_join(rundir, CS_MERGE_LOCK);
    if (lockpath == NULL)
        return CS_ENOMEM;
    int fd = cs_create_file(lockpath, O_RDWR | O_CLOEXEC);
    cs__free(lockpath);
    int failed;
    if (fd < 0) /* no lock file (read-only directory?): merge anyway, waiting */
        return merge_round(rundir, &python, out, &failed);
    int rc = CS_OK;
    /* Without the lock another process is merging, and takes our log. */
    while (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        rc = merge_round(rundir, &python, out, &failed);
        flock(fd, LOCK_UN);
        if (rc != CS_OK)
            break;
        /* A process that found the lock taken while we held it left its
         * log to us, after closing it: look once more, now that the lock
         * is free again, so that no log is left behind. Damaged logs stay
         * where they are; only a log beyond those starts another round. */
        int left = 0;
        if (each_log(rundir, free_log_cb, &left) != CS_OK || left <= failed)
            break;
    }
    close(fd);
    return rc;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int
cs_run_list(const char *root, char ***dirs, size_t *n)
{
    *dirs = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (d == NULL)
        return errno == ENOENT ? CS_OK : cs_from_errno(errno);
    size_t cap = 0;
    int rc = CS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "latest") == 0)
            continue;
        char *p = cs__path_join(root, e->d_name);
        if (p == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISDIR(st.st_mode) || !looks_like_run(p)) {
            cs__free(p);
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **v = cs__realloc(*dirs, cap * sizeof *v);
            if (v == NULL) {
                cs__free(p);
                rc = CS_ENOMEM;
                break;
            }
            *dirs = v;
        }
        (*dirs)[(*n)++] = p;
    }
    closedir(d);
    if (rc != CS_OK) {
        cs_run_list_free(*dirs, *n);
        *dirs = NULL;
        *n = 0;
        return rc;
    }
    if (*n)
        qsort(*dirs, *n, sizeof **dirs, cmp_str);
    return CS_OK;
}

void
cs_run_list_free(char **dirs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cs__free(dirs[i]);
    cs__free(dirs);
}

const char *
cs_run_state_name(cs_run_state s)
{
    switch (s) {
    case CS_RUN_RUNNING:
        return "running";
    case CS_RUN_COMPLETE:
        return "complete";
    case CS_RUN_RECOVERED:
        return "recovered";
    default:
        return "empty";
    }
}

static int
count_live(void *ctx, const char *path)
{
    int busy;
    int fd = lock_log(path, &busy);
    if (fd >= 0)
        close(fd);
    else if (busy)
        (*(int *)ctx)++;
    return CS_OK;
}

static int64_t
scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int
cs_run_summarize(const char *rundir, cs_run_summary *out)
{
    memset(out, 0, sizeof *out);
    out->dir = cs__strdup(rundir);
    if (out->dir == NULL)
        return CS_ENOMEM;
    out->disk_bytes = cs_du(rundir);
    int live = 0;
    each_log(rundir, count_live, &live);
    char *dbp = cs__path_join(rundir, CS_DB_NAME);
    if (dbp == NULL)
        return CS_ENOMEM;
    int rc = CS_OK;
    if (cs__exists(dbp)) {
        cs_store *s = NULL;
        rc = cs_store_open(dbp, 0, &s);
        if (rc == CS_OK) {
            sqlite3 *db = cs_store_db(s);
            out->processes = (uint64_t)scalar(db, "SELECT count(*) FROM processes");
            out->threads = (uint64_t)scalar(db, "SELECT count(*) FROM threads");
            out->calls = (uint64_t)scalar(db, "SELECT count(*) FROM calls") +
                         (uint64_t)scalar(db, "SELECT IFNULL(sum(calls), 0) FROM profile");
            out->errors =
                (uint64_t)scalar(db, "SELECT count(*) FROM calls WHERE status = 'raised'");
            out->functions = (uint64_t)scalar(db, "SELECT count(*) FROM functions");
            out->start_wall_ns = (uint64_t)scalar(db, "SELECT min(start_wall_ns) FROM processes");
            uint64_t end = (uint64_t)scalar(
                db, "SELECT max(start_wall_ns + end_mono_ns - start_mono_ns) FROM processes");
            out->duration_ns = end > out->start_wall_ns ? end - out->start_wall_ns : 0;
            int recovered =
                scalar(db, "SELECT count(*) FROM processes WHERE state = 'killed'") > 0;
            if (out->start_wall_ns == 0)
                out->start_wall_ns = (uint64_t)scalar(db, "SELECT created_ns FROM runs");
            out->state = out->processes == 0 ? CS_RUN_EMPTY
                         : recovered         ? CS_RUN_RECOVERED
                                             : CS_RUN_COMPLETE;
            sqlite3_stmt *st = NULL;
            if (sqlite3_prepare_v2(db, "SELECT command FROM runs LIMIT 1", -1, &st, NULL) ==
                    SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                out->command = cs__strdup((const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
        } else if (rc == CS_ENOTRUN) {
            rc = CS_OK; /* created, nothing ingested yet */
        }
        cs_store_close(s);
    }
    cs__free(dbp);
    if (live)
        out->state = CS_RUN_RUNNING;
    return rc;
}

void
cs_run_summary_free(cs_run_summary *s)
{
    if (s == NULL)
        return;
    cs__free(s->dir);
    cs__free(s->command);
    memset(s, 0, sizeof *s);
}

/* Open run.db of `rundir` (creating it if needed), write to it with
 * `put(db, arg)`, which returns SQLITE_DONE on success, and close it. */
static int
write_run_db(const char *rundir, int (*put)(sqlite3 *, const void *), const void *arg)
{
    cs_store *s = NULL;
    int rc = open_run_db(rundir, &s);
    if (rc != CS_OK)
        return rc;
    /* a row describing the run, written as a program starts or ends: not
     * worth a disk flush (the next ingest's commit flushes the file) */
    sqlite3_exec(s->db, "PRAGMA synchronous = OFF", NULL, NULL, NULL);
    if (put(s->db, arg) != SQLITE_DONE) {
        cs__store_seterr("%s: %s", rundir, sqlite3_errmsg(s->db));
        rc = CS_EDB;
    }
    cs_store_close(s);
    return rc;
}

struct describe {
    const char *name, *command, *cwd;
};

static int
put_describe(sqlite3 *db, const void *arg)
{
    const struct describe *d = arg;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db,
                                 "INSERT OR IGNORE INTO runs(id, name, created_ns, command, cwd,"
                                 " launcher) VALUES(1, ?, ?, ?, ?, 'cli')",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(st, 1, d->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, (int64_t)cs_clock_wall_ns());
        sqlite3_bind_text(st, 3, d->command, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, d->cwd ? d->cwd : "", -1, SQLITE_TRANSIENT);
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return src;
}

int
cs_run_describe(const char *rundir, const char *command, const char *cwd)
{
    const char *leaf = strrchr(rundir, '/');
    struct describe d = {leaf ? leaf + 1 : rundir, command, cwd};
    return write_run_db(rundir, put_describe, &d);
}

struct meta {
    const char *key, *value;
    int replace;
};

static int
put_meta(sqlite3 *db, const void *arg)
{
    const struct meta *m = arg;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db,
                                 m->replace
                                     ? "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)"
                                     : "INSERT OR IGNORE INTO meta(key, value) VALUES(?, ?)",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(st, 1, m->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, m->value, -1, SQLITE_STATIC);
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return src;
}

int
cs_run_set_meta(const char *rundir, const char *key, const char *value, int replace)
{
    struct meta m = {key, value, replace};
    return write_run_db(rundir, put_meta, &m);
}

int
cs__store_put_exit(sqlite3 *db, const char *host, int64_t ppid, int64_t pid, int64_t code)
{
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db,
                                 "INSERT OR REPLACE INTO exits(host, ppid, pid, exit_code, signal)"
                                 " VALUES(?,?,?,?,?)",
                                 -1, &st, NULL);
    if (src == SQLITE_OK) {
        sqlite3_bind_text(st, 1, host, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, ppid);
        sqlite3_bind_int64(st, 3, pid);
        if (code >= 0) {
            sqlite3_bind_int64(st, 4, code);
            sqlite3_bind_null(st, 5);
        } else {
            sqlite3_bind_null(st, 4);
            sqlite3_bind_int64(st, 5, -code);
        }
        src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return src;
}

struct exit_row {
    char host[64];
    int64_t pid, code;
};

static int
put_exit(sqlite3 *db, const void *arg)
{
    const struct exit_row *e = arg;
    return cs__store_put_exit(db, e->host, (int64_t)getpid(), e->pid, e->code);
}

int
cs_run_record_exit(const char *rundir, int64_t pid, int64_t code)
{
    struct exit_row e = {.pid = pid, .code = code};
    cs_hostname(e.host, sizeof e.host);
    return write_run_db(rundir, put_exit, &e);
}

int
cs_run_expand(const char *rundir)
{
    char *db = cs__path_join(rundir, CS_DB_NAME);
    if (db == NULL)
        return CS_ENOMEM;
    cs_store *s = NULL;
    int rc = cs__exists(db) ? cs_store_open(db, 0, &s) : CS_OK;
    if (rc == CS_OK && s)
        rc = cs_store_expand_trees(s);
    cs_store_close(s);
    cs__free(db);
    return rc;
}

/* 1 if `name` is a file callscope makes in a run directory. */
static int
our_file(const char *name)
{
    static const char *const exact[] = {CS_DB_NAME,    CS_DB_NAME "-journal", CS_DB_NAME "-wal",
                                        CS_DB_NAME "-shm", CS_MERGE_LOCK,      "report.html",
                                        ".launch-failed"};
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (strcmp(name, exact[i]) == 0)
            return 1;
    return has_suffix(name, CS_LOG_SUFFIX) || has_suffix(name, CS_LOG_SUFFIX ".new") ||
           strncmp(name, "export.", 7) == 0;
}

/* 1 if the log at `path` starts with callscope's magic. */
static int
our_log(const char *path)
{
    char magic[sizeof CS_LOG_MAGIC - 1];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    int ok = read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
             memcmp(magic, CS_LOG_MAGIC, sizeof magic) == 0;
    close(fd);
    return ok;
}

int
cs_run_is_ours(const char *dir)
{
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return 0; /* a symbolic link, even to a run, is not one */
    char *db = cs__path_join(dir, CS_DB_NAME);
    if (db == NULL)
        return 0;
    int ours = 0;
    if (lstat(db, &st) == 0) {
        /* a run.db that opens as callscope's schema, read only */
        sqlite3 *h = NULL;
        sqlite3_stmt *q = NULL;
        if (S_ISREG(st.st_mode) &&
            sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) ==
                SQLITE_OK &&
            sqlite3_prepare_v2(h, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &q,
                               NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            ours = sqlite3_column_int(q, 0) >= 1;
        sqlite3_finalize(q);
        sqlite3_close(h);
    } else {
        /* no run.db yet: callscope's logs */
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && !ours && (e = readdir(d)) != NULL) {
            if (!has_suffix(e->d_name, CS_LOG_SUFFIX))
                continue;
            char *p = cs__path_join(dir, e->d_name);
            ours = p && our_log(p);
            cs__free(p);
        }
        if (d)
            closedir(d);
    }
    cs__free(db);
    return ours;
}

int
cs_run_remove(const char *dir, int *kept)
{
    *kept = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return cs_from_errno(errno);
    int rc = CS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = cs__path_join(dir, e->d_name);
        if (p == NULL) {
            rc = CS_ENOMEM;
            break;
        }
        struct stat st;
        /* only regular files of the names callscope gives; a link is never
         * followed, and anything else stays */
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) && our_file(e->d_name)) {
            if (unlink(p) != 0 && errno != ENOENT)
                rc = cs_from_errno(errno);
        } else {
            *kept = 1;
        }
        cs__free(p);
    }
    closedir(d);
    if (rc == CS_OK && !*kept && rmdir(dir) != 0)
        rc = cs_from_errno(errno);
    return rc;
}
