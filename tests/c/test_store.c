/* test_store.c -- run.db: bad databases, versions, statistics, runs. */
#include "test.h"

#include "cs_analysis.h"
#include "cs_log.h"
#include "cs_store.h"

#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void
def_func(cs_tstate *t, uint32_t id, const char *module, const char *qualname)
{
    th_def_func(t, id, module, qualname, 1);
}

/* 100 calls of a.f with walls 1..100, 10 of b.g with wall 1000, 2 raising. */
static int
make_run(const char *dir)
{
    cs_tstate *t = th_open_log(dir);
    if (t == NULL)
        return -1;
    def_func(t, 1, "a", "f");
    def_func(t, 2, "b", "g");
    uint64_t ts = 1000;
    for (uint64_t i = 1; i <= 100; i++) {
        uint64_t s = cs_log_enter(t, 1, 0, ts);
        cs_log_exit(t, s, CS_STATUS_OK, ts += i);
    }
    for (int i = 0; i < 10; i++) {
        uint64_t s = cs_log_enter(t, 2, 0, ts);
        cs_log_exit(t, s, i < 2 ? CS_STATUS_RAISED : CS_STATUS_OK, ts += 1000);
    }
    return th_close_and_ingest(dir, NULL);
}

void
test_store_ingest_nesting(void)
{
    const char *dir = test_tmpdir();
    ASSERT_OK(make_run(dir));
    char *db = cs__path_join(dir, CS_DB_NAME);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls"), 110);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM call_view WHERE function = 'b.g'"
                              " AND status = 'raised'"),
              2);
    ASSERT_EQ(test_db_int(db, "PRAGMA user_version"), CS_SCHEMA_VERSION);
    cs__free(db);
}

void
test_store_ingest_idempotent(void)
{
    /* A second run into the same directory appends; ids stay unique. */
    const char *dir = test_tmpdir();
    ASSERT_OK(make_run(dir));
    ASSERT_OK(make_run(dir));
    char *db = cs__path_join(dir, CS_DB_NAME);
    ASSERT_EQ(test_db_int(db, "SELECT count(DISTINCT id) FROM calls"), 220);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM functions"), 2);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM processes"), 2);
    cs__free(db);
}

/* Callers end after their callees, so call rows reach the database out of
 * id order. Ids still follow entry order, stay contiguous across two
 * ingests into one table, and every parent link is right. */
static int
make_tree(const char *dir)
{
    cs_tstate *t = th_open_log(dir);
    if (t == NULL)
        return -1;
    def_func(t, 1, "m", "a");
    def_func(t, 2, "m", "b");
    def_func(t, 3, "m", "c");
    uint64_t ts = 1000;
    for (int r = 0; r < 50; r++) {
        uint64_t a = cs_log_enter(t, 1, 0, ts++);
        for (int k = 0; k < 5; k++) {
            uint64_t b = cs_log_enter(t, 2, 0, ts++);
            uint64_t c = cs_log_enter(t, 3, 0, ts++);
            cs_log_exit(t, c, CS_STATUS_OK, ts++);
            cs_log_exit(t, b, CS_STATUS_OK, ts++);
        }
        cs_log_exit(t, a, CS_STATUS_OK, ts++);
    }
    return th_close_and_ingest(dir, NULL);
}

void
test_store_ids_entry_order(void)
{
    const char *dir = test_tmpdir();
    ASSERT_OK(make_tree(dir));
    ASSERT_OK(make_tree(dir));
    char *db = cs__path_join(dir, CS_DB_NAME);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls"), 1100);
    ASSERT_EQ(test_db_int(db, "SELECT max(id) - min(id) + 1 FROM calls"), 1100);
    /* within a thread, id order is start order */
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls x JOIN calls y ON x.thread = y.thread"
                              " AND x.id < y.id AND x.start_ns >= y.start_ns"),
              0);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM call_view c JOIN call_view p"
                              " ON p.id = c.parent WHERE p.id < c.id AND p.start_ns < c.start_ns"
                              " AND p.end_ns > c.end_ns AND ((c.function = 'm.b'"
                              " AND p.function = 'm.a') OR (c.function = 'm.c'"
                              " AND p.function = 'm.b'))"),
              1000);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM call_view WHERE function = 'm.a'"
                              " AND parent IS NULL"),
              100);
    cs__free(db);
}

void
test_store_not_a_db(void)
{
    const char *dir = test_tmpdir();
    char *db = cs__path_join(dir, CS_DB_NAME);
    FILE *f = fopen(db, "w");
    ASSERT_TRUE(f != NULL);
    for (int i = 0; i < 200; i++)
        fputs("garbage garbage garbage ", f);
    fclose(f);
    cs_store *s = NULL;
    ASSERT_EQ(cs_store_open(db, 0, &s), CS_ENOTDB);
    ASSERT_TRUE(s == NULL);
    ASSERT_TRUE(strstr(cs_store_last_error(), "run.db") != NULL);
    ASSERT_EQ(cs_store_open(db, 1, &s), CS_ENOTDB);
    /* an SQLite file of another program is not ours either */
    unlink(db);
    sqlite3 *h;
    ASSERT_EQ(sqlite3_open(db, &h), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(h, "CREATE TABLE x(a)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    ASSERT_EQ(cs_store_open(db, 1, &s), CS_ENOTDB);
    ASSERT_EQ(cs_store_open(db, 0, &s), CS_ENOTDB);
    cs_store_close(NULL); /* a no-op */
    cs__free(db);
}

void
test_store_newer_schema(void)
{
    const char *dir = test_tmpdir();
    char *db = cs__path_join(dir, CS_DB_NAME);
    sqlite3 *h;
    ASSERT_EQ(sqlite3_open(db, &h), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(h, "CREATE TABLE calls(a); PRAGMA user_version = 99", NULL, NULL,
                           NULL),
              SQLITE_OK);
    sqlite3_close(h);
    cs_store *s = NULL;
    ASSERT_EQ(cs_store_open(db, 1, &s), CS_EVERSION);
    ASSERT_TRUE(strstr(cs_store_last_error(), "99") != NULL);
    cs__free(db);
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* p50 and p95 are exact nearest ranks, whatever the order of the calls:
 * random, sorted, reversed, all equal, few distinct values, organ pipe. */
void
test_store_stats_percentiles(void)
{
    const char *dir = test_tmpdir();
    char *db = cs__path_join(dir, CS_DB_NAME);
    enum { N = 20011 };
    static int64_t w[N], sorted[N];
    for (int shape = 0; shape < 6; shape++) {
        unlink(db);
        cs_store *s = NULL;
        ASSERT_OK(cs_store_open(db, 1, &s));
        sqlite3 *h = cs_store_db(s);
        ASSERT_EQ(sqlite3_exec(h, "BEGIN; INSERT INTO functions(id, kind, module, qualname)"
                                  " VALUES(1, 'function', 'm', 'f')",
                               NULL, NULL, NULL),
                  SQLITE_OK);
        sqlite3_stmt *st;
        ASSERT_EQ(sqlite3_prepare_v2(h, "INSERT INTO calls(function, wall_ns, self_ns, status)"
                                        " VALUES(1, ?, ?, 'ok')",
                                     -1, &st, NULL),
                  SQLITE_OK);
        uint64_t x = 88172645463325252ull;
        for (int i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            w[i] = shape == 0   ? (int64_t)(x % 1000000) + 1
                   : shape == 1 ? i + 1
                   : shape == 2 ? N - i
                   : shape == 3 ? 7
                   : shape == 4 ? (int64_t)(x % 3) + 1
                                : (i < N / 2 ? i : N - i) + 1;
            sqlite3_bind_int64(st, 1, w[i]);
            sqlite3_bind_int64(st, 2, w[i]);
            ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
        ASSERT_EQ(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        memcpy(sorted, w, sizeof w);
        qsort(sorted, N, sizeof *sorted, cmp_i64);
        cs_stats_query q = {.sort = CS_SORT_TOTAL};
        cs_fstat *v = NULL;
        size_t n = 0;
        ASSERT_OK(cs_stats(s, &q, &v, &n));
        ASSERT_EQ(n, 1);
        ASSERT_EQ(v[0].calls, N);
        ASSERT_EQ(v[0].min_ns, sorted[0]);
        ASSERT_EQ(v[0].max_ns, sorted[N - 1]);
        ASSERT_EQ(v[0].p50_ns, sorted[(N + 1) / 2 - 1]); /* rank ceil(0.5 N) */
        ASSERT_EQ(v[0].p95_ns, sorted[(95 * N + 99) / 100 - 1]);
        cs_stats_free(v, n);
        cs_store_close(s);
    }
    cs__free(db);
}

void
test_store_stats(void)
{
    const char *dir = test_tmpdir();
    ASSERT_OK(make_run(dir));
    char *db = cs__path_join(dir, CS_DB_NAME);
    cs_store *s = NULL;
    ASSERT_OK(cs_store_open(db, 0, &s));
    cs_stats_query q = {.sort = CS_SORT_TOTAL};
    cs_fstat *v = NULL;
    size_t n = 0;
    ASSERT_OK(cs_stats(s, &q, &v, &n));
    ASSERT_EQ(n, 2);
    ASSERT_STR_EQ(v[0].name, "b.g"); /* 10000 total beats 5050 */
    ASSERT_EQ(v[0].errors, 2);
    ASSERT_EQ(v[1].calls, 100);
    ASSERT_EQ(v[1].total_ns, 5050);
    ASSERT_EQ(v[1].min_ns, 1);
    ASSERT_EQ(v[1].max_ns, 100);
    ASSERT_EQ(v[1].p50_ns, 50);
    ASSERT_EQ(v[1].p95_ns, 95);
    ASSERT_EQ((long long)(v[1].mean_ns * 10), 505);
    cs_stats_free(v, n);
    q.sort = CS_SORT_CALLS;
    q.limit = 1;
    ASSERT_OK(cs_stats(s, &q, &v, &n));
    ASSERT_EQ(n, 1);
    ASSERT_STR_EQ(v[0].name, "a.f");
    cs_stats_free(v, n);
    q.limit = 0;
    q.filter = "b.*";
    ASSERT_OK(cs_stats(s, &q, &v, &n));
    ASSERT_EQ(n, 1);
    ASSERT_STR_EQ(v[0].name, "b.g");
    cs_stats_free(v, n);
    cs_sort k;
    ASSERT_EQ(cs_sort_parse("bogus", &k), CS_EINVAL);
    ASSERT_OK(cs_sort_parse("p95", &k));
    ASSERT_EQ(k, CS_SORT_P95);
    cs_store_close(s);
    cs__free(db);
}

void
test_run_create_unique(void)
{
    const char *root = test_tmpdir();
    char *a = NULL, *b = NULL;
    ASSERT_OK(cs_run_create(root, "my app", &a));
    ASSERT_OK(cs_run_create(root, "my app", &b));
    ASSERT_TRUE(strcmp(a, b) != 0);
    ASSERT_TRUE(strstr(a, "my_app") != NULL);
    char *latest = cs__path_join(root, "latest");
    char target[512];
    ssize_t n = readlink(latest, target, sizeof target - 1);
    ASSERT_TRUE(n > 0);
    target[n] = '\0';
    ASSERT_TRUE(strstr(b, target) != NULL);
    cs__free(latest);
    cs__free(a);
    cs__free(b);
}

void
test_run_resolve(void)
{
    const char *root = test_tmpdir();
    char *out = NULL;
    ASSERT_EQ(cs_run_resolve(root, NULL, &out), CS_ENOENT);
    ASSERT_EQ(cs_run_resolve(root, "nope", &out), CS_ENOENT);
    char *dir = NULL;
    ASSERT_OK(cs_run_create(root, "r", &dir));
    ASSERT_EQ(cs_run_resolve(root, "latest", &out), CS_ENOTRUN); /* empty */
    ASSERT_OK(make_run(dir));
    ASSERT_OK(cs_run_resolve(root, "latest", &out));
    ASSERT_TRUE(out != NULL);
    cs__free(out);
    const char *leaf = strrchr(dir, '/') + 1;
    ASSERT_OK(cs_run_resolve(root, leaf, &out));
    cs__free(out);
    char **dirs;
    size_t nd;
    ASSERT_OK(cs_run_list(root, &dirs, &nd));
    ASSERT_EQ(nd, 1);
    cs_run_list_free(dirs, nd);
    cs_run_summary s;
    ASSERT_OK(cs_run_summarize(dir, &s));
    ASSERT_EQ(s.calls, 110);
    ASSERT_EQ(s.errors, 2);
    ASSERT_EQ(s.state, CS_RUN_COMPLETE);
    cs_run_summary_free(&s);
    cs__free(dir);
}

/* Write a log of `n` calls as host `host` in a child process; return its
 * path (caller frees). */
static char *
log_as_host(const char *dir, const char *host, int n)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("CALLSCOPE_HOSTNAME", host, 1);
        cs_tstate *t = th_open_log(dir);
        if (t == NULL)
            _exit(2);
        def_func(t, 1, "m", host);
        for (int i = 0; i < n; i++) {
            uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
            cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
        }
        char *path = NULL;
        cs_log_close(&path); /* closed, not ingested: left for the merge */
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s-", host);
    return th_find_log(dir, prefix);
}

void
test_store_same_pid_two_hosts(void)
{
    const char *dir = test_tmpdir();
    char *a = log_as_host(dir, "node1", 3);
    char *b = log_as_host(dir, "node2", 5);
    ASSERT_TRUE(a != NULL && b != NULL);
    /* give the second log the first one's pid, as on another host */
    cs_log_header ha, hb;
    ASSERT_OK(cs_log_read_header(a, &ha));
    ASSERT_OK(cs_log_read_header(b, &hb));
    hb.pid = ha.pid;
    hb.check = cs_log_hash64(&hb, offsetof(cs_log_header, check));
    FILE *f = fopen(b, "r+b");
    ASSERT_TRUE(f != NULL);
    ASSERT_EQ(fwrite(&hb, 1, offsetof(cs_log_header, end_mono_ns), f),
              offsetof(cs_log_header, end_mono_ns));
    fclose(f);
    cs_sync_result sr;
    ASSERT_OK(cs_run_sync(dir, &sr));
    ASSERT_EQ(sr.ingested, 2);
    char *db = cs__path_join(dir, CS_DB_NAME);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM processes WHERE pid = %llu",
             (unsigned long long)ha.pid);
    ASSERT_EQ(test_db_int(db, sql), 2);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread"
                              " JOIN processes p ON p.id = t.process WHERE p.host = 'node1'"),
              3);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread"
                              " JOIN processes p ON p.id = t.process WHERE p.host = 'node2'"),
              5);
    cs__free(db);
    cs__free(a);
    cs__free(b);
}

/* A hand-made call tree: main (100 ns, self 10) -> fib (90, self 30) ->
 * fib x2 (recursive, 60, self 60). `closed` 0 leaves fib's outer call
 * open, as a killed process does. */
static int
make_tree_run(const char *dir, int closed)
{
    cs_tstate *t = th_open_log(dir);
    if (t == NULL)
        return -1;
    def_func(t, 1, "m", "main");
    def_func(t, 2, "m", "fib");
    cs_tree_header *h = cs_log_map_tree(t, 0, 64, 0);
    if (h == NULL)
        return -1;
    cs_tree_node *n = (cs_tree_node *)h;
    n[2] = (cs_tree_node){.parent = 1, .func = 1, .depth = 1, .calls = 1, .total_ns = 100,
                          .self_ns = 10, .max_ns = 100};
    n[3] = (cs_tree_node){.parent = 2, .func = 2, .depth = 2, .calls = 1, .total_ns = 90,
                          .self_ns = 30, .max_ns = 90};
    n[4] = (cs_tree_node){.parent = 3, .func = 2, .depth = 3, .calls = 2, .total_ns = 60,
                          .self_ns = 60, .max_ns = 40,
                          .flags = CS_TN_REC_FUNC | CS_TN_REC_EDGE};
    /* a node whose parent comes after it is damage: left out */
    n[5] = (cs_tree_node){.parent = 6, .func = 1, .calls = 7, .total_ns = 7};
    n[1].child = 2;
    if (!closed) {
        n[3].open_ns = 1000; /* a third fib call open since t=1000 ... */
        h->alive_ns = 1500;  /* ... when the tree was last updated */
    }
    h->used = 6;
    h->closed = (uint64_t)closed;
    return th_close_and_ingest(dir, NULL);
}

void
test_store_tree(void)
{
    const char *dir = test_tmpdir();
    ASSERT_OK(make_tree_run(dir, 1));
    char *db = cs__path_join(dir, CS_DB_NAME);
    /* a process's exit keeps the tree as one pending blob; the first
     * reader writes its rows, once */
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree"), 0);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree_pending"), 1);
    ASSERT_OK(cs_run_expand(dir));
    ASSERT_OK(cs_run_expand(dir));
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree_pending"), 0);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree"), 3);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree t JOIN tree p ON p.id = t.parent"), 2);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree WHERE parent IS NULL"), 1);
    /* cProfile's numbers: fib 3 calls, 1 primitive, cumulative 90, self 90 */
    ASSERT_EQ(test_db_int(db, "SELECT calls FROM profile p JOIN function_names n"
                              " ON n.id = p.function WHERE n.name = 'm.fib'"),
              3);
    ASSERT_EQ(test_db_int(db, "SELECT prim_calls FROM profile p JOIN function_names n"
                              " ON n.id = p.function WHERE n.name = 'm.fib'"),
              1);
    ASSERT_EQ(test_db_int(db, "SELECT total_ns FROM profile p JOIN function_names n"
                              " ON n.id = p.function WHERE n.name = 'm.fib'"),
              90);
    ASSERT_EQ(test_db_int(db, "SELECT self_ns FROM profile p JOIN function_names n"
                              " ON n.id = p.function WHERE n.name = 'm.fib'"),
              90);
    cs_store *s = NULL;
    ASSERT_OK(cs_store_open(db, 0, &s));
    /* the same through statistics and the merged tree */
    cs_stats_query q = {.filter = "m.fib", .launcher = 1};
    cs_fstat *st = NULL;
    size_t nst = 0;
    ASSERT_OK(cs_stats(s, &q, &st, &nst));
    ASSERT_EQ(nst, 1);
    ASSERT_EQ(st[0].calls, 3);
    ASSERT_EQ(st[0].prim_calls, 1);
    ASSERT_EQ(st[0].total_ns, 90);
    ASSERT_EQ(st[0].quantiles, 0);
    cs_stats_free(st, nst);
    cs_calltree *t = NULL;
    ASSERT_OK(cs_calltree_load(s, NULL, &t));
    ASSERT_EQ(t->n, 3);
    ASSERT_EQ(t->total_ns, 100);
    ASSERT_STR_EQ(cs_calltree_name(t, &t->nodes[t->top]), "m.main");
    int32_t fib = t->nodes[t->top].child;
    ASSERT_EQ(t->nodes[fib].self_ns, 30);
    ASSERT_EQ(t->nodes[t->nodes[fib].child].flags & CS_CT_REC_FUNC, CS_CT_REC_FUNC);
    cs_calltree_free(t);
    /* pstats: two functions, fib's callers main and fib */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    uint64_t rows = 0;
    ASSERT_OK(cs_export(s, CS_EXPORT_PSTATS, f, &rows));
    fclose(f);
    ASSERT_EQ(rows, 2);
    free(buf);
    cs_store_close(s);
    cs__free(db);
}

void
test_store_tree_killed(void)
{
    /* the open call counts once, timed to the tree's last update */
    const char *dir = test_tmpdir();
    ASSERT_OK(make_tree_run(dir, 0));
    ASSERT_OK(cs_run_expand(dir));
    char *db = cs__path_join(dir, CS_DB_NAME);
    ASSERT_EQ(test_db_int(db, "SELECT calls FROM tree WHERE node = 3"), 2);
    ASSERT_EQ(test_db_int(db, "SELECT total_ns FROM tree WHERE node = 3"), 90 + 500);
    ASSERT_EQ(test_db_int(db, "SELECT self_ns FROM tree WHERE node = 3"), 30 + 500);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM tree"), 3);
    cs__free(db);
}
