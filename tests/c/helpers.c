/* helpers.c -- what the C tests share: a log opened the way the extension
 * opens one, function definitions, and close-then-ingest. */
#include "test.h"

#include "cs_log.h"
#include "cs_store.h"

#include <dirent.h>

static const char proc_argv[] = "prog\0--flag";

cs_tstate *
th_open_log(const char *dir)
{
    cs_proc_info info = {.name = "test", .argv = proc_argv, .argv_len = sizeof proc_argv,
                         .cwd = "/", .rank = -1};
    if (cs_log_open(dir, &info) != CS_OK)
        return NULL;
    cs_tstate *t = cs_log_tstate_slow("MainThread", 1);
    if (t)
        cs_log_put_proc(t, &info);
    return t;
}

void
th_def_func(cs_tstate *t, uint32_t id, const char *module, const char *qualname, uint32_t line)
{
    char body[256];
    uint32_t kind = CS_FUNC_FUNCTION;
    memcpy(body, &line, 4);
    memcpy(body + 4, &kind, 4);
    int n = snprintf(body + 8, sizeof body - 8, "%s%c%s%cfile.py", module, 0, qualname, 0);
    cs_log_put_var(t, CS_VAR_FUNC, id, body, 8 + (size_t)n + 1);
}

int
th_close_and_ingest(const char *dir, cs_ingest_result *r)
{
    cs_ingest_result ignored;
    char *path = NULL;
    int rc = cs_log_close(&path);
    cs_store *s = NULL;
    char *db = cs__path_join(dir, CS_DB_NAME);
    if (rc == CS_OK)
        rc = db ? cs_store_open(db, 1, &s) : CS_ENOMEM;
    /* with the log's lock still held, as cs_store_ingest asks */
    if (rc == CS_OK)
        rc = cs_store_ingest(s, path, 0, r ? r : &ignored);
    cs_store_close(s);
    cs__free(db);
    cs_log_release();
    cs_log_forget();
    cs__free(path);
    return rc;
}

char *
th_find_log(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return NULL;
    char *found = NULL;
    struct dirent *e;
    size_t np = strlen(prefix), ns = strlen(CS_LOG_SUFFIX);
    while (found == NULL && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > ns && strncmp(e->d_name, prefix, np) == 0 &&
            strcmp(e->d_name + n - ns, CS_LOG_SUFFIX) == 0)
            found = cs__path_join(dir, e->d_name);
    }
    closedir(d);
    return found;
}
