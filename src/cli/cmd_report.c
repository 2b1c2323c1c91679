/* cmd_report.c -- `callscope report`: one self-contained HTML file. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cs_usage_report[] =
    "usage: callscope report [options] [RUN]\n\n"
    "Write one HTML file with the views of RUN (default: latest): execution time\n"
    "per function, the timeline by process and thread (zoomable), memory per\n"
    "function, the top 10 by total time, histograms of execution time, a sortable\n"
    "table, the call tree, errors, processes, and the run's facts. It works\n"
    "offline: everything is inside the file.\n\n"
    "options:\n"
    "  -o, --output PATH   the file (default: RUN's directory, report.html)\n"
    "  --title TEXT        the title (default 'callscope report')\n"
    "  --subtitle TEXT     a line under the title\n"
    "  --tag TEXT          a label shown under the title (repeatable)\n"
    "  --start SECONDS     only calls after this time from the run's start\n"
    "  --end SECONDS       only calls before this time from the run's start\n"
    "  -f, --functions PAT only these functions (a glob, or a substring of\n"
    "                      module.qualname; repeatable)\n"
    "  -d, --dir ROOT      root of the run directories\n"
    "  --launcher          also show launcher frames (runpy, the import system's\n"
    "                      bootstrap, callscope's own code), hidden by default\n"
    "  -h, --help          show this help\n";

#define MAX_LIST 32

static int
parse_secs(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 1e9)
        return -1;
    *out = v;
    return 0;
}

int
cs_cmd_report(int argc, char **argv)
{
    const char *root = cs_run_root_default(), *out = NULL;
    const char *tags[MAX_LIST], *funcs[MAX_LIST];
    cs_report_opts o = {.tags = tags, .functions = funcs};
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"title", required_argument, NULL, 'T'},
        {"subtitle", required_argument, NULL, 'S'}, {"tag", required_argument, NULL, 'g'},
        {"start", required_argument, NULL, 's'},  {"end", required_argument, NULL, 'e'},
        {"functions", required_argument, NULL, 'f'}, {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},         {"launcher", no_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:f:d:hL", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'T':
            o.title = optarg;
            break;
        case 'S':
            o.subtitle = optarg;
            break;
        case 'g':
        case 'f':
            if ((c == 'g' ? o.ntags : o.nfunctions) == MAX_LIST)
                return cli_error(CS_EXIT_USAGE, "report: at most %d of --%s", MAX_LIST,
                                 c == 'g' ? "tag" : "functions");
            if (c == 'g')
                tags[o.ntags++] = optarg;
            else
                funcs[o.nfunctions++] = optarg;
            break;
        case 's':
        case 'e':
            if (parse_secs(optarg, c == 's' ? &o.start : &o.end) != 0)
                return cli_error(CS_EXIT_USAGE, "report: --%s: '%s' is not a number of seconds",
                                 c == 's' ? "start" : "end", optarg);
            break;
        case 'd':
            root = optarg;
            break;
        case 'L':
            o.launcher = 1;
            break;
        case 'h':
            fputs(cs_usage_report, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "report: option '%s' needs a value",
                             argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE, "report: unknown option '%s' (see --help)",
                             argv[optind - 1]);
        }
    }
    if (o.end > 0 && o.end <= o.start)
        return cli_error(CS_EXIT_USAGE, "report: --end must come after --start");
    if (optind + 1 < argc)
        return cli_error(CS_EXIT_USAGE, "report: one run at a time");
    char *dir = NULL;
    int status = cli_open_run(root, optind < argc ? argv[optind] : NULL, &dir);
    if (status != CS_EXIT_OK)
        return status;
    char *path = out ? NULL : cs__path_join(dir, "report.html");
    if (!out)
        out = path;
    char *dbp = cs__path_join(dir, "run.db");
    cs_store *s = NULL;
    int rc = dbp ? cs_store_open(dbp, 0, &s) : CS_ENOMEM;
    FILE *f = NULL;
    if (rc != CS_OK) {
        status = rc == CS_ENOENT ? cli_error(CS_EXIT_FAIL, "%s: no calls recorded yet", dir)
                                 : cli_error(CS_EXIT_FAIL, "%s", cs_store_last_error());
        goto done;
    }
    /* written beside, then renamed: a reader never sees half a report */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", out, (int)getpid());
    if ((f = fopen(tmp, "w")) == NULL) {
        status = cli_error(CS_EXIT_FAIL, "report: cannot write %s: %s", out, strerror(errno));
        goto done;
    }
    rc = cs_report(s, dir, &o, f);
    int werr = ferror(f);
    if (fclose(f) != 0)
        werr = 1;
    if (rc != CS_OK || werr) {
        unlink(tmp);
        status = rc != CS_OK ? cli_error(CS_EXIT_FAIL, "report: %s", cs_report_last_error())
                             : cli_error(CS_EXIT_FAIL, "report: writing %s failed (disk full?)",
                                         out);
        goto done;
    }
    if (rename(tmp, out) != 0) {
        unlink(tmp);
        status = cli_error(CS_EXIT_FAIL, "report: cannot write %s: %s", out, strerror(errno));
        goto done;
    }
    printf("%s\n", out);
done:
    cs_store_close(s);
    cs__free(dbp);
    cs__free(path);
    cs__free(dir);
    return status;
}
