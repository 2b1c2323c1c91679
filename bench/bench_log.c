/* bench_log.c -- the engine without Python: the cost of writing a call's
 * records, and ingest throughput into run.db.
 *
 *   build-bench/bench_log [CALLS] [DIR]
 */
#include "cs_log.h"
#include "cs_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    const char *dir = argc > 2 ? argv[2] : "bench-log-run";
    cs_rmtree(dir);
    cs_proc_info info = {.name = "bench", .argv = "bench", .argv_len = 6, .rank = -1};
    if (cs_log_open(dir, &info) != CS_OK) {
        fprintf(stderr, "cannot open a log in %s\n", dir);
        return 1;
    }
    cs_tstate *t = cs_log_tstate_slow("main", 1);
    char body[64];
    uint32_t line = 1, kind = CS_FUNC_FUNCTION;
    memcpy(body, &line, 4);
    memcpy(body + 4, &kind, 4);
    memcpy(body + 8, "bench\0f\0bench.c\0", 16);
    cs_log_put_var(t, CS_VAR_FUNC, 1, body, 24);
    uint64_t t0 = cs_clock_mono_ns();
    for (long i = 0; i < n; i++) {
        uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
    }
    uint64_t t1 = cs_clock_mono_ns();
    char *path = NULL;
    cs_log_close(&path);
    cs_ingest_result r;
    uint64_t t2 = cs_clock_mono_ns();
    int rc = cs_run_ingest_own(dir, path, &r);
    uint64_t t3 = cs_clock_mono_ns();
    cs_log_release();
    if (rc != CS_OK) {
        fprintf(stderr, "ingest failed: %s\n", cs_store_last_error());
        return 1;
    }
    char *db = cs__path_join(dir, CS_DB_NAME);
    printf("calls %ld: write %.1f ns/call (2 clock reads included); ingest %.2f M calls/s"
           " (%.2f s); run.db %.1f B/call\n",
           n, (double)(t1 - t0) / (double)n, (double)r.calls / ((double)(t3 - t2) / 1e9) / 1e6,
           (double)(t3 - t2) / 1e9, (double)cs_du(db) / (double)n);
    cs__free(db);
    cs__free(path);
    cs_rmtree(dir);
    return 0;
}
