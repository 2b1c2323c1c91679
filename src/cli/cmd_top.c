/* cmd_top.c -- `callscope top`: one row per function. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

const char cs_usage_top[] =
    "usage: callscope top [options] [RUN]\n\n"
    "One row per function of RUN (default: latest): its share of the run's\n"
    "wall time, total and self time, calls, errors, mean, p50, p95 and max\n"
    "wall time, CPU time, and its name with file:line; and the fewest\n"
    "significant digits its values kept, once `callscope compare` measured them.\n"
    "Calls read N/P when only P of N were primitive (not made inside another\n"
    "call of the same function); total counts those P, as cProfile does.\n\n"
    "options:\n"
    "  -s, --sort KEY      total (default), self, calls, mean, max, p95, cpu,\n"
    "                      errors or name; with --by also imbalance\n"
    "  -n, --limit N       show the first N rows (default 30, 0 for all)\n"
    "  -f, --filter PAT    only functions whose module.qualname matches PAT\n"
    "                      (a glob with * ? [ ], else a substring)\n"
    "  -p, --pid PID       only calls made by process PID\n"
    "  -b, --by rank|process\n"
    "                      one row per function across MPI ranks or processes:\n"
    "                      calls and time per rank (min, mean, max over all of\n"
    "                      them) and the imbalance, max / mean time\n"
    "  -L, --launcher      also show launcher frames (runpy, the import system's\n"
    "                      bootstrap, callscope's own code), hidden by default\n"
    "  -d, --dir ROOT      root of the run directories\n"
    "  -h, --help          show this help\n";

static void
ns_cell(FILE *f, uint64_t ns, int has)
{
    char b[32];
    fprintf(f, " %9s", has ? cs_fmt_ns(ns, b, sizeof b) : "-");
}

static int
print_by(const char *dir, const char *dbp, cs_store *s, const cs_stats_query *q, cs_group_by by)
{
    cs_groups g;
    int src = cs_stats_by(s, q, by, &g);
    if (src != CS_OK)
        return cli_error(CS_EXIT_FAIL, "%s: cannot read calls: %s", dbp,
                         src == CS_ENOTDB ? "database is damaged" : sqlite3_errmsg(cs_store_db(s)));
    const char *unit = by == CS_BY_RANK ? "ranks" : "procs";
    printf("run %s\n", dir);
    printf("%s:", by == CS_BY_RANK ? "ranks" : "processes");
    for (size_t i = 0; i < g.n && i < 16; i++)
        printf(" %s", g.v[i].label);
    printf("%s\n", g.n > 16 ? " ..." : "");
    printf("%-40s %6s %8s %8s %8s %8s %9s %9s %9s %9s\n", "function", unit, "calls", "min",
           "mean", "max", "min time", "mean time", "max time", "imbalance");
    for (size_t i = 0; i < g.nf; i++) {
        const cs_gstat *f = &g.f[i];
        char p[32], a[32], b[32], c[32];
        snprintf(p, sizeof p, "%zu/%zu", f->present, g.n);
        cli_cell(stdout, f->name, 40, 1);
        printf(" %6s %8llu %8.0f %8.1f %8.0f %9s %9s %9s %9.2f\n", p,
               (unsigned long long)f->calls, f->calls_min, f->calls_mean, f->calls_max,
               cs_fmt_ns((uint64_t)f->total_min, a, sizeof a),
               cs_fmt_ns((uint64_t)f->total_mean, b, sizeof b),
               cs_fmt_ns((uint64_t)f->total_max, c, sizeof c), f->imbalance);
    }
    if (g.nf == 0)
        printf("(no functions%s%s)\n", q->filter ? " match " : "", q->filter ? q->filter : "");
    cs_groups_free(&g);
    return CS_EXIT_OK;
}

int
cs_cmd_top(int argc, char **argv)
{
    const char *root = cs_run_root_default();
    cs_stats_query q = {.sort = CS_SORT_TOTAL, .limit = 30};
    static const struct option opts[] = {
        {"sort", required_argument, NULL, 's'}, {"limit", required_argument, NULL, 'n'},
        {"filter", required_argument, NULL, 'f'}, {"pid", required_argument, NULL, 'p'},
        {"dir", required_argument, NULL, 'd'},  {"help", no_argument, NULL, 'h'},
        {"by", required_argument, NULL, 'b'},   {"launcher", no_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    int by_set = 0;
    cs_group_by by = CS_BY_RANK;
    optind = 1;
    opterr = 0;
    int c;
    size_t v;
    while ((c = getopt_long(argc, argv, ":s:n:f:p:d:hb:L", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (cs_group_parse(optarg, &by) != CS_OK)
                return cli_error(CS_EXIT_USAGE, "top: --by takes rank or process, not '%s'",
                                 optarg);
            by_set = 1;
            break;
        case 's':
            if (cs_sort_parse(optarg, &q.sort) != CS_OK)
                return cli_error(CS_EXIT_USAGE, "top: unknown sort key '%s' (use one of: %s)",
                                 optarg, cs_sort_names());
            break;
        case 'n':
            if (cli_parse_size(optarg, &q.limit) != 0)
                return cli_error(CS_EXIT_USAGE, "top: --limit needs a number, not '%s'", optarg);
            break;
        case 'f':
            q.filter = optarg;
            break;
        case 'p':
            if (cli_parse_size(optarg, &v) != 0 || v == 0)
                return cli_error(CS_EXIT_USAGE, "top: --pid needs a process id, not '%s'",
                                 optarg);
            q.pid = (int64_t)v;
            break;
        case 'd':
            root = optarg;
            break;
        case 'L':
            q.launcher = 1;
            break;
        case 'h':
            fputs(cs_usage_top, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "top: option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE, "top: unknown option '%s' (see callscope top --help)",
                             argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return cli_error(CS_EXIT_USAGE, "top: one RUN at most (got %d)", argc - optind);
    if (by_set && q.pid)
        return cli_error(CS_EXIT_USAGE, "top: --pid and --by do not combine");
    char *dir = NULL;
    int rc = cli_open_run(root, optind < argc ? argv[optind] : NULL, &dir);
    if (rc != CS_EXIT_OK)
        return rc;
    char *dbp = cs__path_join(dir, CS_DB_NAME);
    cs_store *s = NULL;
    cs_fstat *st = NULL;
    size_t n = 0;
    int src = dbp ? cs_store_open(dbp, 0, &s) : CS_ENOMEM;
    if (src == CS_ENOENT || src == CS_ENOTRUN) {
        printf("run %s: no calls recorded yet\n", dir);
        rc = CS_EXIT_OK;
        goto out;
    }
    if (src != CS_OK) {
        rc = cli_error(CS_EXIT_FAIL, "%s", cs_store_last_error());
        goto out;
    }
    if (by_set) {
        rc = print_by(dir, dbp, s, &q, by);
        goto out;
    }
    if ((src = cs_stats(s, &q, &st, &n)) != CS_OK) {
        rc = cli_error(CS_EXIT_FAIL, "%s: cannot read calls: %s", dbp,
                       src == CS_ENOTDB ? "database is damaged" : sqlite3_errmsg(cs_store_db(s)));
        goto out;
    }
    /* a digits column when a stability comparison of this run exists */
    int digits = 0;
    double dg;
    for (size_t i = 0; i < n && !digits; i++)
        digits = cs_latest_digits(s, st[i].name, &dg);
    uint64_t wall = cli_run_wall(s, q.pid);
    printf("run %s: %s of wall time%s\n", dir, cs_fmt_ns(wall, (char[32]){0}, 32),
           q.launcher ? "" : " (launcher frames hidden; --launcher shows them)");
    printf("%7s %9s %9s %13s %6s %9s %9s %9s %9s %9s%s  %s\n", "share", "total", "self",
           "calls", "errors", "mean", "p50", "p95", "max", "cpu", digits ? "  digits" : "",
           "function (file:line)");
    for (size_t i = 0; i < n; i++) {
        const cs_fstat *f = &st[i];
        int has = f->calls > f->unfinished;
        if (wall && has)
            printf("%6.1f%%", 100.0 * (double)f->total_ns / (double)wall);
        else
            printf("%7s", "-");
        ns_cell(stdout, f->total_ns, has);
        ns_cell(stdout, f->self_ns, has);
        char calls[48];
        if (f->prim_calls != f->calls && f->prim_calls)
            snprintf(calls, sizeof calls, "%llu/%llu", (unsigned long long)f->calls,
                     (unsigned long long)f->prim_calls);
        else
            snprintf(calls, sizeof calls, "%llu", (unsigned long long)f->calls);
        printf(" %13s %6llu", calls, (unsigned long long)f->errors);
        ns_cell(stdout, (uint64_t)f->mean_ns, has);
        ns_cell(stdout, f->p50_ns, has && f->quantiles);
        ns_cell(stdout, f->p95_ns, has && f->quantiles);
        ns_cell(stdout, f->max_ns, has);
        ns_cell(stdout, f->cpu_ns, f->cpu_calls > 0);
        if (digits) {
            if (cs_latest_digits(s, f->name, &dg))
                printf(" %7.2f", dg);
            else
                printf(" %7s", "-");
        }
        /* the name last and whole: nothing of it is ever cut */
        printf("  %s", f->name);
        if (f->file[0])
            printf("  %s:%lld", f->file, (long long)f->line);
        putchar('\n');
    }
    if (n == 0)
        printf("(no functions%s%s)\n", q.filter ? " match " : "", q.filter ? q.filter : "");
out:
    cs_stats_free(st, n);
    cs_store_close(s);
    cs__free(dbp);
    cs__free(dir);
    return rc;
}
