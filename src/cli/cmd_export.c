/* cmd_export.c -- `callscope export`: a run in the formats other tools
 * read. Parquet goes through Python (pyarrow); the rest is written here. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char cs_usage_export[] =
    "usage: callscope export [options] [RUN] --format F -o PATH\n\n"
    "Write RUN (default: latest) in a format other tools read:\n"
    "  chrome      Chrome trace events: open in Perfetto (ui.perfetto.dev) or\n"
    "              chrome://tracing; a process and thread for each, calls with\n"
    "              their captured arguments and results (a run profiled with\n"
    "              --all alone: its call tree as a flame chart)\n"
    "  speedscope  speedscope's JSON (www.speedscope.app), a profile per thread\n"
    "              (--all alone: the call tree as a sampled profile)\n"
    "  pstats      Python's profile statistics: pstats.Stats(PATH), snakeviz PATH\n"
    "  csv         one row per call (id, function, time, cpu, memory, pid, ppid,\n"
    "              process and parent process names, broken, error, traceback, ...)\n"
    "  jsonl       one JSON object per call\n"
    "  collapsed   folded stacks, a line per call path with its self time in\n"
    "              microseconds: flamegraph.pl, speedscope, inferno\n"
    "  parquet     one row per call, with pyarrow (pip install pyarrow)\n\n"
    "options:\n"
    "  -F, --format F   the format (required)\n"
    "  -o, --output P   the file to write; - for standard output (default: RUN's\n"
    "                   directory, export.<ext>)\n"
    "  --python PATH    the Python for parquet (default $CALLSCOPE_PYTHON, else the\n"
    "                   python3 beside this command)\n"
    "  -d, --dir ROOT   root of the run directories\n"
    "  -h, --help       show this help\n";

static const char *
extension(const char *format)
{
    if (strcmp(format, "chrome") == 0)
        return "trace.json";
    if (strcmp(format, "speedscope") == 0)
        return "speedscope.json";
    if (strcmp(format, "pstats") == 0)
        return "pstats";
    if (strcmp(format, "collapsed") == 0)
        return "collapsed.txt";
    return format;
}

/* Parquet: `python -m callscope._export RUNDIR PATH`. */
static int
export_parquet(const char *python, const char *dir, const char *out)
{
    char *py = cli_find_python(python);
    if (py == NULL)
        return cli_error(CS_EXIT_FAIL, "out of memory");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execlp(py, py, "-m", "callscope._export", dir, out, (char *)NULL);
        fprintf(stderr, "callscope: error: export: cannot run %s: %s\n", py, strerror(errno));
        _exit(127);
    }
    cs__free(py);
    if (pid < 0)
        return cli_error(CS_EXIT_FAIL, "export: cannot start Python: %s", strerror(errno));
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? CS_EXIT_OK : CS_EXIT_FAIL;
}

int
cs_cmd_export(int argc, char **argv)
{
    const char *root = cs_run_root_default(), *format = NULL, *out = NULL, *python = NULL;
    static const struct option opts[] = {
        {"format", required_argument, NULL, 'F'}, {"output", required_argument, NULL, 'o'},
        {"dir", required_argument, NULL, 'd'},    {"python", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":F:o:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'F':
            format = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'd':
            root = optarg;
            break;
        case 'P':
            python = optarg;
            break;
        case 'h':
            fputs(cs_usage_export, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "export: option '%s' needs a value",
                             argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE, "export: unknown option '%s' (see --help)",
                             argv[optind - 1]);
        }
    }
    if (format == NULL)
        return cli_error(CS_EXIT_USAGE, "export: give --format (%s, parquet)", cs_export_names());
    cs_export_format fmt = CS_EXPORT_CSV;
    int parquet = strcmp(format, "parquet") == 0;
    if (!parquet && cs_export_parse(format, &fmt) != CS_OK)
        return cli_error(CS_EXIT_USAGE, "export: unknown format '%s' (%s, parquet)", format,
                         cs_export_names());
    if (optind + 1 < argc)
        return cli_error(CS_EXIT_USAGE, "export: one run at a time");
    char *dir = NULL;
    int status = cli_open_run(root, optind < argc ? argv[optind] : NULL, &dir);
    if (status != CS_EXIT_OK)
        return status;
    char *path = NULL;
    if (out == NULL) {
        char name[64];
        snprintf(name, sizeof name, "export.%s", extension(format));
        path = cs__path_join(dir, name);
        out = path;
    }
    if (parquet) {
        if (strcmp(out, "-") == 0)
            status = cli_error(CS_EXIT_USAGE, "export: parquet needs a file (-o PATH)");
        else
            status = export_parquet(python, dir, out);
        if (status == CS_EXIT_OK)
            fprintf(stderr, "callscope: wrote %s\n", out);
        cs__free(path);
        cs__free(dir);
        return status;
    }
    char *dbp = cs__path_join(dir, "run.db");
    cs_store *s = NULL;
    int rc = dbp ? cs_store_open(dbp, 0, &s) : CS_ENOMEM;
    if (rc != CS_OK) {
        status = rc == CS_ENOENT ? cli_error(CS_EXIT_FAIL, "%s: no calls recorded yet", dir)
                                 : cli_error(CS_EXIT_FAIL, "%s", cs_store_last_error());
        goto out;
    }
    int to_stdout = strcmp(out, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(out, fmt == CS_EXPORT_PSTATS ? "wb" : "w");
    if (f == NULL) {
        status = cli_error(CS_EXIT_FAIL, "export: cannot write %s: %s", out, strerror(errno));
        goto out;
    }
    uint64_t rows = 0;
    rc = cs_export(s, fmt, f, &rows);
    int werr = ferror(f);
    if (!to_stdout && fclose(f) != 0)
        werr = 1;
    if (rc != CS_OK) {
        status = cli_error(CS_EXIT_FAIL, "export: %s", cs_export_last_error());
        if (!to_stdout)
            unlink(out);
    } else if (werr) {
        status = cli_error(CS_EXIT_FAIL, "export: writing %s failed (disk full?)", out);
        if (!to_stdout)
            unlink(out);
    } else if (rows == 0) {
        /* a file with nothing in it would pass for an answer */
        status = cli_error(CS_EXIT_FAIL, "export: run %s has nothing to write as %s (no %s)",
                           dir, format,
                           fmt == CS_EXPORT_PSTATS ? "functions recorded" : "calls recorded");
        if (!to_stdout)
            unlink(out);
    } else if (!to_stdout) {
        fprintf(stderr, "callscope: wrote %s (%llu %s)\n", out, (unsigned long long)rows,
                fmt == CS_EXPORT_PSTATS                                        ? "functions"
                : fmt == CS_EXPORT_COLLAPSED || fmt == CS_EXPORT_SPEEDSCOPE ? "rows"
                                                                               : "calls");
    }
out:
    cs_store_close(s);
    cs__free(dbp);
    cs__free(path);
    cs__free(dir);
    return status;
}
