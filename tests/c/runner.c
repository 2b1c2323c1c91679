/* runner.c -- runs the C tests: all, or those named on the command line. */
#include "test.h"

#include "cs_core.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

int cs_test_failed;
static char tmpdir[256];

const char *
test_tmpdir(void)
{
    return tmpdir;
}

long long
test_db_int(const char *dbpath, const char *sql)
{
    sqlite3 *db = NULL;
    long long v = -1;
    if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        else
            fprintf(stderr, "query failed: %s: %s\n", sql, sqlite3_errmsg(db));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
#define ENTRY(name) {#name, test_##name},
    TEST_LIST(ENTRY)
#undef ENTRY
};

int
main(int argc, char **argv)
{
    int failed = 0, ran = 0;
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int want = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strcmp(argv[a], tests[i].name) == 0)
                want = 1;
        if (!want)
            continue;
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/cs_test_%s_XXXXXX", base && *base ? base : "/tmp",
                 tests[i].name);
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            return 1;
        }
        cs_test_failed = 0;
        long live = cs_alloc_live();
        tests[i].fn();
        if (!cs_test_failed && cs_alloc_live() != live) {
            fprintf(stderr, "%s: %ld allocation(s) leaked\n", tests[i].name,
                    cs_alloc_live() - live);
            cs_test_failed = 1;
        }
        cs_rmtree(tmpdir);
        printf("%s %s\n", cs_test_failed ? "FAIL" : "ok  ", tests[i].name);
        fflush(stdout);
        failed += cs_test_failed;
        ran++;
    }
    printf("%d test(s), %d failed\n", ran, failed);
    return failed ? 1 : 0;
}
