/* cmd_info.c -- `callscope info`: one row per run. */
#include "cli.h"

#include <getopt.h>
#include <string.h>
#include <time.h>

const char cs_usage_info[] =
    "usage: callscope info [options] [RUN...]\n\n"
    "One row per run (default: every run under the root): start time,\n"
    "duration, processes, threads, calls, errors, size on disk, state\n"
    "(complete, recovered after a crash, or running) and command line.\n"
    "Runs whose processes died are recovered first.\n\n"
    "options:\n"
    "  -d, --dir ROOT   root of the run directories\n"
    "  -h, --help       show this help\n";

static int
show(const char *dir, int *header)
{
    cs_run_summary s;
    int rc = cs_run_summarize(dir, &s);
    if (rc != CS_OK) {
        cs_run_summary_free(&s);
        return cli_error(CS_EXIT_FAIL, "%s", cs_store_last_error());
    }
    if (!*header) {
        printf("%-36s %-19s %9s %5s %7s %10s %6s %9s %-9s %s\n", "run", "started", "duration",
               "procs", "threads", "calls", "errors", "size", "state", "command");
        *header = 1;
    }
    char started[32] = "-";
    if (s.start_wall_ns) {
        time_t t = (time_t)(s.start_wall_ns / 1000000000u);
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(started, sizeof started, "%Y-%m-%d %H:%M:%S", &tm);
    }
    char dur[32], size[32];
    const char *leaf = strrchr(s.dir, '/');
    cli_cell(stdout, leaf ? leaf + 1 : s.dir, 36, 1);
    printf(" %-19s %9s %5llu %7llu %10llu %6llu %9s %-9s %s\n", started,
           s.start_wall_ns ? cs_fmt_ns(s.duration_ns, dur, sizeof dur) : "-",
           (unsigned long long)s.processes, (unsigned long long)s.threads,
           (unsigned long long)s.calls, (unsigned long long)s.errors,
           cs_fmt_bytes(s.disk_bytes, size, sizeof size), cs_run_state_name(s.state),
           s.command ? s.command : "");
    cs_run_summary_free(&s);
    return CS_EXIT_OK;
}

int
cs_cmd_info(int argc, char **argv)
{
    const char *root = cs_run_root_default();
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            root = optarg;
            break;
        case 'h':
            fputs(cs_usage_info, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "info: option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE,
                             "info: unknown option '%s' (see callscope info --help)",
                             argv[optind - 1]);
        }
    }
    int header = 0, status = CS_EXIT_OK;
    if (optind < argc) {
        for (int i = optind; i < argc; i++) {
            char *dir = NULL;
            int rc = cli_open_run(root, argv[i], &dir);
            if (rc == CS_EXIT_OK)
                rc = show(dir, &header);
            if (rc != CS_EXIT_OK)
                status = rc;
            cs__free(dir);
        }
        return status;
    }
    char **dirs = NULL;
    size_t n = 0;
    int rc = cs_run_list(root, &dirs, &n);
    if (rc != CS_OK)
        return cli_error(CS_EXIT_FAIL, "%s: %s", root, cs_strerror(rc));
    if (n == 0)
        printf("no runs in %s\n", root);
    for (size_t i = 0; i < n; i++) {
        cs_sync_result sr;
        if (cs_run_sync(dirs[i], &sr) != CS_OK) {
            status = cli_error(CS_EXIT_FAIL, "%s", cs_store_last_error());
            continue;
        }
        if (sr.failed)
            cli_warn("%s: %d log(s) could not be read: %s", dirs[i], sr.failed, sr.message);
        if (show(dirs[i], &header) != CS_EXIT_OK)
            status = CS_EXIT_FAIL;
    }
    cs_run_list_free(dirs, n);
    return status;
}
