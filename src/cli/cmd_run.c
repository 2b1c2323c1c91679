/* cmd_run.c -- `callscope run`: start Python on a script or module inside
 * a new run, wait for it, recover whatever it left, and say where the run
 * is. The child's exit status becomes ours. */
#include "cli.h"
#include "cs_select.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char cs_usage_run[] =
    "usage: callscope run [options] SCRIPT [ARGS...]\n"
    "       callscope run [options] -m MODULE [ARGS...]\n\n"
    "Run a Python program in a new run directory, then recover and summarise it.\n\n"
    "options:\n"
    "  -m MODULE        run a module, like python -m\n"
    "  -d, --dir ROOT   root of the run directories (default $CALLSCOPE_DIR or\n"
    "                   ./callscope-runs)\n"
    "  -n, --name NAME  name of the run (default: the script or module)\n"
    "  --python PATH    the Python to use (default $CALLSCOPE_PYTHON, else the\n"
    "                   python beside this tool, else python3 on PATH)\n"
    "  -t, --trace PAT  record the functions PAT names, in any code: a qualified\n"
    "                   name module.Class.method with globs (mypkg.solver.*), a\n"
    "                   dotted tail (JSONDecoder.raw_decode) or a bare name (step);\n"
    "                   repeat it for more\n"
    "  --module MOD     record every function of MOD and its submodules\n"
    "  --exclude PAT    leave the functions PAT names out\n"
    "  --all            profile every call of the program, like cProfile: Python\n"
    "                   functions, C functions (builtins, methods of C types) and\n"
    "                   generator resumptions, into a call tree per thread (calls,\n"
    "                   total, self and CPU time per call path; see callscope tree)\n"
    "  --no-c-calls     with --all: leave C functions out\n"
    "  --cpu            also record each call's CPU time (with -t/--module or --all)\n"
    "  --memory         with -t/--module: also record memory\n"
    "  --args           with -t/--module: also record the arguments of each call\n"
    "  --result         with -t/--module: also record the value each call returns\n"
    "  --redact PAT     never write arguments (or dict items) whose name matches\n"
    "                   the glob PAT, e.g. 'password' or '*token*' (repeatable)\n"
    "  --max-arg-length N  cut captured strings and reprs to N characters\n"
    "  --c-functions    -t also selects C functions: builtins (sorted), extension\n"
    "                   functions (math.sqrt), methods of built-in types (str.join);\n"
    "                   a callback on every call of the program\n"
    "  --print[=json]   with -t/--module: print each finished call to stderr, as a\n"
    "                   line (with its arguments and result) or as JSON\n"
    "  --capture safe   never run the program's code (__repr__, __reduce__,\n"
    "                   handlers) to keep a value: other objects are kept as\n"
    "                   their type and id (default: full)\n"
    "  --max-bytes N    the most bytes one captured value may take (default 4M,\n"
    "                   at most 512M; suffixes K, M, G)\n"
    "  --share group    make the run readable by the group (directories 0750,\n"
    "                   files 0640); by default it is private to its user\n"
    "                   (0700, 0600), whatever the umask: it holds arguments,\n"
    "                   results and messages\n"
    "  -q, --quiet      print nothing after the run\n"
    "  -h, --help       show this help\n";

/* The signals `callscope run` hands to the program it runs. */
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define N_FORWARDED (sizeof forwarded / sizeof *forwarded)
static volatile sig_atomic_t forward_to; /* the program's pid, while it runs */

static void
forward(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    /* the terminal sends its signals (Ctrl-C, Ctrl-\, a hang-up) to the
     * whole foreground process group, the program included: not twice */
    if (si != NULL && si->si_code == SI_KERNEL)
        return;
    int saved = errno;
    if (forward_to > 0)
        kill((pid_t)forward_to, sig);
    errno = saved;
}

#define LAUNCH_FAILED ".launch-failed" /* the launcher's mark: see _launch.py */

/* 1 if the launcher marked the run as never started. */
static int
launch_failed(const char *rundir)
{
    char *p = cs__path_join(rundir, LAUNCH_FAILED);
    int yes = p && access(p, F_OK) == 0;
    if (yes)
        unlink(p);
    cs__free(p);
    return yes;
}

/* Delete the run in `rundir` (its own files only) and point `latest` at
 * the newest run left, if it pointed at this one. */
static void
discard_run(const char *root, const char *rundir)
{
    int kept = 0;
    if (cs_run_remove(rundir, &kept) != CS_OK || kept)
        return;
    char *latest = cs__path_join(root, "latest");
    char target[512];
    ssize_t n = latest ? readlink(latest, target, sizeof target - 1) : -1;
    const char *leaf = strrchr(rundir, '/');
    leaf = leaf ? leaf + 1 : rundir;
    if (n > 0) {
        target[n] = '\0';
        if (strcmp(target, leaf) == 0) {
            unlink(latest);
            char **dirs = NULL;
            size_t nd = 0;
            if (cs_run_list(root, &dirs, &nd) == CS_OK && nd)
                cs_run_point_latest(dirs[nd - 1]);
            cs_run_list_free(dirs, nd);
        }
    }
    cs__free(latest);
}

/* Warn about each -t or --module of `spec` (the $CALLSCOPE_TRACE lines
 * the command line gave) that no function of the run matched: a typo
 * should not pass for a program that never called it. */
static void
warn_unmatched(const char *rundir, const char *spec)
{
    char *dbp = cs__path_join(rundir, CS_DB_NAME);
    cs_store *s = NULL;
    if (dbp == NULL || !spec || !*spec || cs_store_open(dbp, 0, &s) != CS_OK) {
        cs__free(dbp);
        return;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(cs_store_db(s), "SELECT module, qualname FROM functions", -1, &st,
                           NULL) != SQLITE_OK)
        goto out;
    for (const char *line = spec; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > 2 && (line[0] == 't' || line[0] == 'm') && line[1] == ':') {
            char pat[512];
            snprintf(pat, sizeof pat, "%.*s", (int)(len - 2), line + 2);
            cs_select *one = NULL;
            char why[128];
            int hit = 0;
            if (cs_select_new(&one) == CS_OK &&
                cs_select_add(one, line[0] == 't' ? CS_SEL_TRACE : CS_SEL_MODULE, pat, why) ==
                    CS_OK) {
                sqlite3_reset(st);
                while (!hit && sqlite3_step(st) == SQLITE_ROW) {
                    const char *m = (const char *)sqlite3_column_text(st, 0);
                    const char *q = (const char *)sqlite3_column_text(st, 1);
                    hit = m && q && cs_select_match(one, m, q);
                }
                if (!hit)
                    cli_warn("%s %s matched no function", line[0] == 't' ? "-t" : "--module",
                             pat);
            }
            cs_select_free(one);
        }
        line += len + (end != NULL);
    }
out:
    sqlite3_finalize(st);
    cs_store_close(s);
    cs__free(dbp);
}

static const char *
base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* A positive integer, with a K, M or G suffix when `suffixes`. */
static int
parse_size(const char *s, int suffixes, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return -1;
    if (suffixes && *end) {
        unsigned shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                         : *end == 'G' || *end == 'g'                         ? 30
                                                                              : 64;
        if (shift == 64 || end[1] || v > (1ull << 34))
            return -1;
        v <<= shift;
        end++;
    }
    if (*end)
        return -1;
    *out = v;
    return 0;
}

int
cs_cmd_run(int argc, char **argv)
{
    const char *root = cs_run_root_default(), *name = NULL, *module = NULL, *python = NULL;
    int quiet = 0, all = 0, cpu = 0, no_c_calls = 0;
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},    {"name", required_argument, NULL, 'n'},
        {"python", required_argument, NULL, 'P'}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},         {"trace", required_argument, NULL, 't'},
        {"module", required_argument, NULL, 'M'}, {"exclude", required_argument, NULL, 'X'},
        {"cpu", no_argument, NULL, 'C'},          {"memory", no_argument, NULL, 'R'},
        {"all", no_argument, NULL, 'A'},          {"args", no_argument, NULL, 'a'},
        {"result", no_argument, NULL, 'r'},       {"redact", required_argument, NULL, 'D'},
        {"max-arg-length", required_argument, NULL, 'L'},
        {"max-bytes", required_argument, NULL, 'B'},
        {"print", optional_argument, NULL, 'p'},
        {"c-functions", no_argument, NULL, 'c'},
        {"no-c-calls", no_argument, NULL, 'N'},
        {"share", required_argument, NULL, 'G'},
        {"capture", required_argument, NULL, 'K'},
        {NULL, 0, NULL, 0},
    };
    /* the selection, passed to every Python process as $CALLSCOPE_TRACE */
    cs_buf sel;
    cs_buf_init(&sel);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+:m:d:n:qht:", opts, NULL)) != -1) {
        switch (c) {
        case 't':
        case 'M':
        case 'X': {
            char why[128];
            cs_select *check = NULL;
            int kind = c == 't' ? CS_SEL_TRACE : c == 'M' ? CS_SEL_MODULE : CS_SEL_EXCLUDE;
            int bad = cs_select_new(&check) != CS_OK ||
                      cs_select_add(check, kind, optarg, why) != CS_OK;
            cs_select_free(check);
            if (bad) {
                cs_buf_free(&sel);
                return cli_error(CS_EXIT_USAGE, "run: %s: %s",
                                 c == 't' ? "--trace" : c == 'M' ? "--module" : "--exclude", why);
            }
            cs_buf_printf(&sel, "%s%c:%s", sel.len ? "\n" : "",
                          c == 't' ? 't' : c == 'M' ? 'm' : 'x', optarg);
            break;
        }
        case 'A':
            all = 1;
            break;
        case 'N':
            no_c_calls = 1;
            break;
        case 'K':
            if (strcmp(optarg, "safe") != 0 && strcmp(optarg, "full") != 0) {
                cs_buf_free(&sel);
                return cli_error(CS_EXIT_USAGE, "run: --capture takes full or safe, not '%s'",
                                 optarg);
            }
            if (strcmp(optarg, "safe") == 0)
                cs_buf_printf(&sel, "%so:safe", sel.len ? "\n" : "");
            break;
        case 'G':
            if (strcmp(optarg, "group") != 0 && strcmp(optarg, "user") != 0) {
                cs_buf_free(&sel);
                return cli_error(CS_EXIT_USAGE, "run: --share takes group or user, not '%s'",
                                 optarg);
            }
            /* for this process's run directory and every process of the run */
            if (strcmp(optarg, "group") == 0)
                setenv("CALLSCOPE_SHARE", "group", 1);
            else
                unsetenv("CALLSCOPE_SHARE");
            break;
        case 'C':
            cpu = 1;
            /* fall through */
        case 'R':
        case 'a':
        case 'r':
        case 'c':
            cs_buf_printf(&sel, "%so:%s", sel.len ? "\n" : "",
                          c == 'C'   ? "cpu"
                          : c == 'R' ? "memory"
                          : c == 'a' ? "args"
                          : c == 'r' ? "result"
                                     : "c_functions");
            break;
        case 'p':
            if (optarg && strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
                cs_buf_free(&sel);
                return cli_error(CS_EXIT_USAGE, "run: --print=%s: use --print or --print=json",
                                 optarg);
            }
            cs_buf_printf(&sel, "%so:%s", sel.len ? "\n" : "",
                          optarg && strcmp(optarg, "json") == 0 ? "printjson" : "print");
            break;
        case 'D':
            if (!*optarg || strchr(optarg, '\n')) {
                cs_buf_free(&sel);
                return cli_error(CS_EXIT_USAGE, "run: --redact: give a name pattern");
            }
            cs_buf_printf(&sel, "%sr:%s", sel.len ? "\n" : "", optarg);
            break;
        case 'L':
        case 'B': {
            uint64_t v;
            if (parse_size(optarg, c == 'B', &v) != 0 || v == 0 ||
                v > (c == 'B' ? (1u << 29) : 0x7fffffffu)) {
                cs_buf_free(&sel);
                return cli_error(CS_EXIT_USAGE, "run: %s: '%s' is not a valid %s",
                                 c == 'L' ? "--max-arg-length" : "--max-bytes", optarg,
                                 c == 'L' ? "length (a positive integer)"
                                          : "size (1 to 512M, e.g. 4M)");
            }
            cs_buf_printf(&sel, "%s%c:%llu", sel.len ? "\n" : "", c == 'L' ? 'l' : 'b',
                          (unsigned long long)v);
            break;
        }
        case 'm':
            module = optarg;
            break;
        case 'd':
            root = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'P':
            python = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(cs_usage_run, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "run: option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE, "run: unknown option '%s' (see callscope run --help)",
                             argv[optind - 1]);
        }
        if (module)
            break; /* everything after -m MODULE belongs to the module */
    }
    if (!module && optind >= argc)
        return cli_error(CS_EXIT_USAGE, "run: nothing to run (give SCRIPT or -m MODULE)");
    const char *target = module ? module : argv[optind];
    if (!module && access(target, R_OK) != 0)
        return cli_error(CS_EXIT_USAGE, "run: cannot read script '%s': %s", target,
                         strerror(errno));
    if (name == NULL) {
        static char stem[128];
        snprintf(stem, sizeof stem, "%s", base_name(target));
        char *dot = strrchr(stem, '.');
        if (dot && !module && strcmp(dot, ".py") == 0)
            *dot = '\0';
        name = stem;
    }
    char *rundir = NULL, job[128];
    /* under mpirun or srun, every rank's callscope run joins one run */
    int in_job = cs_run_job_id(job, sizeof job);
    int rc = in_job ? cs_run_create_job(root, name, job, &rundir)
                    : cs_run_create(root, name, &rundir);
    if (rc == CS_ENOTRUN)
        return cli_error(CS_EXIT_FAIL,
                         "run: %s/.job-* of this job does not name a run directory in %s"
                         " (a path or a link out of it is never followed); remove it",
                         root, root);
    if (rc != CS_OK)
        return cli_error(CS_EXIT_FAIL, "run: cannot create a run under %s: %s", root,
                         cs_strerror(rc));
    /* Describe the run now: it exists, with its command, even if the
     * program records nothing or fails to start. */
    cs_buf cmd;
    cs_buf_init(&cmd);
    if (module)
        cs_buf_printf(&cmd, "-m %s", module);
    for (int i = optind; i < argc; i++)
        cs_buf_printf(&cmd, "%s%s", cmd.len ? " " : "", argv[i]);
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) == NULL)
        cwd[0] = '\0';
    if (!cmd.failed && cs_run_describe(rundir, cmd.data ? cmd.data : "", cwd) != CS_OK)
        cli_warn("run: cannot write %s/run.db: %s", rundir, cs_store_last_error());
    cs_buf_free(&cmd);
    /* the options callscope ran with, for the report */
    cs_buf o;
    cs_buf_init(&o);
    for (int i = 1; i < optind && i < argc; i++)
        cs_buf_printf(&o, "%s%s", o.len ? " " : "", argv[i]);
    if (o.len && !o.failed)
        (void)cs_run_set_meta(rundir, "options", o.data, 1);
    cs_buf_free(&o);
    char *py = cli_find_python(python);
    int nargs = argc - optind;
    char **cargv = cs__calloc((size_t)nargs + 8, sizeof *cargv);
    if (py == NULL || cargv == NULL) {
        cs__free(py);
        cs__free(rundir);
        return cli_error(CS_EXIT_FAIL, "out of memory");
    }
    int k = 0;
    cargv[k++] = py;
    cargv[k++] = "-m";
    cargv[k++] = "callscope._launch";
    if (module) {
        cargv[k++] = "-m";
        cargv[k++] = (char *)module;
    } else {
        cargv[k++] = "--";
    }
    for (int i = optind; i < argc; i++)
        cargv[k++] = argv[i];
    cargv[k] = NULL;

    setenv("CALLSCOPE_RUN_DIR", rundir, 1);
    if (sel.len)
        setenv("CALLSCOPE_TRACE", sel.data, 1);
    else
        unsetenv("CALLSCOPE_TRACE");
    if (all)
        setenv("CALLSCOPE_PROFILE_ALL", cpu ? "cpu" : "1", 1);
    else
        unsetenv("CALLSCOPE_PROFILE_ALL");
    if (no_c_calls)
        setenv("CALLSCOPE_C_CALLS", "0", 1);
    else
        unsetenv("CALLSCOPE_C_CALLS");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        rc = cli_error(CS_EXIT_FAIL, "run: fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        /* the launcher starts --all itself, just before the program: its
         * own start-up is not the program's */
        char me[32];
        snprintf(me, sizeof me, "%ld", (long)getpid());
        setenv("CALLSCOPE_LAUNCH_PID", me, 1);
        execvp(py, cargv);
        fprintf(stderr, "callscope: error: run: cannot start %s: %s\n", py, strerror(errno));
        _exit(127);
    }
    /* Signals sent to callscope go to the program, which decides; we wait
     * for it, finish the run, and exit as it did. */
    forward_to = pid;
    struct sigaction fwd = {.sa_sigaction = forward, .sa_flags = SA_SIGINFO | SA_RESTART},
                     old[N_FORWARDED];
    sigemptyset(&fwd.sa_mask);
    /* a signal callscope was started ignoring (nohup, a background job)
     * stays ignored, as the program inherited it: nothing to forward */
    int caught[N_FORWARDED] = {0};
    for (size_t i = 0; i < N_FORWARDED; i++)
        if (sigaction(forwarded[i], NULL, &old[i]) == 0 && old[i].sa_handler != SIG_IGN)
            caught[i] = sigaction(forwarded[i], &fwd, NULL) == 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    for (size_t i = 0; i < N_FORWARDED; i++)
        if (caught[i])
            sigaction(forwarded[i], &old[i], NULL);
    forward_to = 0;
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (launch_failed(rundir)) {
        /* the launcher refused (bad configuration, said on stderr) before
         * the program ran: the run it was given is not left behind */
        discard_run(root, rundir);
        goto out;
    }
    if (cs_run_record_exit(rundir, pid,
                           WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status)) != CS_OK)
        cli_warn("run: cannot record the exit status: %s", cs_store_last_error());

    cs_sync_result sr;
    int src = cs_run_sync(rundir, &sr);
    if (src != CS_OK)
        cli_warn("run: could not recover %s: %s", rundir, cs_store_last_error());
    else if (sr.failed)
        cli_warn("run: %d log(s) could not be read: %s", sr.failed, sr.message);
    if (src == CS_OK)
        warn_unmatched(rundir, sel.data);
    if (!quiet) {
        cs_run_summary s;
        if (cs_run_summarize(rundir, &s) == CS_OK) {
            char d[32];
            /* the first answer needs no second command: the hottest paths
             * (from the recorded calls only when they are few enough to
             * read at once) */
            if (s.calls && (all || s.calls <= 200000)) {
                fflush(stdout);
                cli_tree_summary(rundir, stderr, 20);
            }
            fprintf(stderr,
                    "callscope: run %s: %llu calls in %llu process(es), %s, %s; "
                    "see: callscope top %s\n",
                    s.dir, (unsigned long long)s.calls, (unsigned long long)s.processes,
                    cs_fmt_ns(s.duration_ns, d, sizeof d), cs_run_state_name(s.state),
                    base_name(s.dir));
        }
        cs_run_summary_free(&s);
    }
out:
    cs_buf_free(&sel);
    cs__free(cargv);
    cs__free(py);
    cs__free(rundir);
    return rc;
}
