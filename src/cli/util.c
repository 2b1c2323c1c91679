/* util.c -- helpers shared by the CLI commands. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
cli_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("callscope: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

void
cli_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("callscope: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int
cli_parse_size(const char *s, size_t *out)
{
    *out = 0;
    if (s == NULL || *s == '\0' || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0')
        return -1;
    *out = (size_t)v;
    return 0;
}

void
cli_cell(FILE *f, const char *s, int width, int keep_tail)
{
    int len = (int)strlen(s);
    if (len > width && width > 1) {
        if (keep_tail)
            fprintf(f, "~%s", s + len - (width - 1));
        else
            fprintf(f, "%.*s~", width - 1, s);
        return;
    }
    fprintf(f, "%-*s", width, s);
}

int
cli_open_run(const char *root, const char *spec, char **dir)
{
    *dir = NULL;
    int rc = cs_run_resolve(root, spec, dir);
    if (rc == CS_ENOENT) {
        if (spec == NULL || strcmp(spec, "latest") == 0)
            return cli_error(CS_EXIT_FAIL, "no runs in %s (set CALLSCOPE_DIR or use --dir)",
                             root);
        return cli_error(CS_EXIT_FAIL, "run not found: %s", spec);
    }
    if (rc == CS_ENOTRUN)
        return cli_error(CS_EXIT_FAIL, "%s: not a callscope run (no run.db, no logs)",
                         spec ? spec : "latest");
    if (rc != CS_OK)
        return cli_error(CS_EXIT_FAIL, "%s: %s", spec ? spec : root, cs_strerror(rc));
    cs_sync_result sr;
    rc = cs_run_sync(*dir, &sr);
    if (rc != CS_OK) {
        cli_error(CS_EXIT_FAIL, "%s", cs_store_last_error());
        cs__free(*dir);
        *dir = NULL;
        return CS_EXIT_FAIL;
    }
    /* the call tree's rows, left pending by the processes' exits; a run.db
     * that cannot take them is reported by what reads it */
    (void)cs_run_expand(*dir);
    if (sr.failed)
        cli_warn("%d log(s) could not be read and were left in place: %s", sr.failed,
                 sr.message);
    if (sr.bad_records)
        cli_warn("%llu thread log(s) ended at a damaged record; the valid part was kept",
                 (unsigned long long)sr.bad_records);
    if (sr.running)
        cli_warn("%d process(es) still running: their calls appear when they exit",
                 sr.running);
    return CS_EXIT_OK;
}

/* The Python beside this executable (a virtual environment's bin/), if any. */
char *
cli_find_python(const char *opt)
{
    if (opt)
        return cs__strdup(opt);
    const char *env = getenv("CALLSCOPE_PYTHON");
    if (env && *env)
        return cs__strdup(env);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            static const char *const names[] = {"python3", "python"};
            for (size_t i = 0; i < 2; i++) {
                char *p = cs__path_join(self, names[i]);
                if (p && access(p, X_OK) == 0)
                    return p;
                cs__free(p);
            }
        }
    }
    return cs__strdup("python3");
}


uint64_t
cli_run_wall(cs_store *s, int64_t pid)
{
    sqlite3_stmt *st = NULL;
    uint64_t w = 0;
    if (sqlite3_prepare_v2(cs_store_db(s),
                           "SELECT IFNULL(sum(end_mono_ns - start_mono_ns), 0) FROM processes"
                           " WHERE ?1 = 0 OR pid = ?1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, pid);
        if (sqlite3_step(st) == SQLITE_ROW)
            w = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return w;
}
