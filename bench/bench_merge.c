/* bench_merge.c -- many processes into one run: N real processes each
 * write M calls into their own log of one run directory, concurrently;
 * then every log is ingested into run.db (as `callscope` does on first
 * read) and the per-function table is computed (as `callscope top`).
 *
 *   build-bench/bench_merge [PROCS] [CALLS] [DIR] [write-only]
 *
 * With "write-only", the logs are left in DIR for a merge to be timed or
 * profiled by itself (`callscope info DIR`).
 */
#include "cs_analysis.h"
#include "cs_log.h"
#include "cs_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void
child(const char *dir, long calls)
{
    cs_proc_info info = {.name = "bench", .argv = "bench", .argv_len = 6, .rank = -1};
    if (cs_log_open(dir, &info) != CS_OK)
        _exit(2);
    cs_tstate *t = cs_log_tstate_slow("main", 1);
    char body[64];
    uint32_t line = 1, kind = CS_FUNC_FUNCTION;
    memcpy(body, &line, 4);
    memcpy(body + 4, &kind, 4);
    memcpy(body + 8, "bench\0work\0bench.c\0", 19);
    cs_log_put_var(t, CS_VAR_FUNC, 1, body, 27);
    for (long i = 0; i < calls; i++) {
        uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
    }
    /* leave the log for the merge, as a process that ended without
     * ingesting (killed, or left through os._exit) does */
    _exit(0);
}

int
main(int argc, char **argv)
{
    int procs = argc > 1 ? atoi(argv[1]) : 64;
    long calls = argc > 2 ? atol(argv[2]) : 100000;
    const char *dir = argc > 3 ? argv[3] : "bench-merge-run";
    cs_rmtree(dir);
    if (cs_mkdirs(dir) != CS_OK)
        return 1;
    uint64_t t0 = cs_clock_mono_ns();
    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid == 0)
            child(dir, calls);
        if (pid < 0)
            return 1;
    }
    int status;
    while (wait(&status) > 0)
        ;
    uint64_t t1 = cs_clock_mono_ns();
    if (argc > 4 && strcmp(argv[4], "write-only") == 0) {
        printf("%d logs of %ld calls written in %.2f s, left in %s\n", procs, calls,
               (double)(t1 - t0) / 1e9, dir);
        return 0;
    }
    cs_sync_result sr;
    int rc = cs_run_sync(dir, &sr);
    uint64_t t2 = cs_clock_mono_ns();
    if (rc != CS_OK || sr.ingested != procs) {
        fprintf(stderr, "merge failed: %s (%d of %d logs)\n", cs_store_last_error(), sr.ingested,
                procs);
        return 1;
    }
    char *db = cs__path_join(dir, CS_DB_NAME);
    cs_store *s = NULL;
    cs_fstat *st = NULL;
    size_t n = 0;
    cs_stats_query q = {.sort = CS_SORT_TOTAL, .limit = 30};
    uint64_t t3 = cs_clock_mono_ns();
    if (cs_store_open(db, 0, &s) != CS_OK || cs_stats(s, &q, &st, &n) != CS_OK)
        return 1;
    uint64_t t4 = cs_clock_mono_ns();
    double total = (double)procs * (double)calls;
    printf("%d processes x %ld calls = %.1fM calls\n", procs, calls, total / 1e6);
    printf("  writing (all processes, wall)   %.2f s\n", (double)(t1 - t0) / 1e9);
    printf("  ingest and merge of %d logs     %.2f s  (%.2f M calls/s; %.2fx the writing time)\n",
           procs, (double)(t2 - t1) / 1e9, total / ((double)(t2 - t1) / 1e9) / 1e6,
           (double)(t2 - t1) / (double)(t1 - t0));
    printf("  per-function table (top)        %.2f s  (%zu function, %llu calls)\n",
           (double)(t4 - t3) / 1e9, n, n ? (unsigned long long)st[0].calls : 0ull);
    cs_stats_free(st, n);
    cs_store_close(s);
    cs__free(db);
    cs_rmtree(dir);
    return 0;
}
