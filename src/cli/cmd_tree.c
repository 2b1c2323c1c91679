/* cmd_tree.c -- `callscope tree`: where the time goes, as a call tree. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

const char cs_usage_tree[] =
    "usage: callscope tree [options] [RUN]\n\n"
    "The call tree of RUN (default: latest), hottest paths first: for each\n"
    "call path its share of the run's wall time, total and self time, calls,\n"
    "and the function with file:line. Threads and processes are merged by\n"
    "path. A run profiled with --all has the whole tree; otherwise the tree\n"
    "is made of the recorded calls.\n\n"
    "options:\n"
    "  -D, --depth N       show N levels (default 12, 0 for all)\n"
    "  -m, --min-share P   hide paths under P percent of the run (default 0.5)\n"
    "  -t, --thread T      only thread T (its name, as MainThread, or its tid)\n"
    "  -p, --process PID   only process PID\n"
    "  -L, --launcher      also show launcher frames (runpy, the import system's\n"
    "                      bootstrap, callscope's own code), folded by default\n"
    "  -d, --dir ROOT      root of the run directories\n"
    "  -h, --help          show this help\n";

typedef struct topts {
    const char *root, *run;
    cs_calltree_query q;
    size_t depth;
    double min_share;
} topts;

static int
parse(int argc, char **argv, topts *o)
{
    static const struct option opts[] = {
        {"depth", required_argument, NULL, 'D'},   {"min-share", required_argument, NULL, 'm'},
        {"thread", required_argument, NULL, 't'},  {"process", required_argument, NULL, 'p'},
        {"launcher", no_argument, NULL, 'L'},      {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    size_t v;
    char *end;
    while ((c = getopt_long(argc, argv, ":D:m:t:p:Ld:h", opts, NULL)) != -1) {
        switch (c) {
        case 'D':
            if (cli_parse_size(optarg, &o->depth) != 0)
                return cli_error(CS_EXIT_USAGE, "tree: --depth needs a number, not '%s'", optarg);
            break;
        case 'm':
            o->min_share = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || o->min_share < 0 || o->min_share > 100)
                return cli_error(CS_EXIT_USAGE,
                                 "tree: --min-share needs a percentage from 0 to 100, not '%s'",
                                 optarg);
            break;
        case 't':
            o->q.thread = optarg;
            break;
        case 'p':
            if (cli_parse_size(optarg, &v) != 0 || v == 0)
                return cli_error(CS_EXIT_USAGE, "tree: --process needs a process id, not '%s'",
                                 optarg);
            o->q.pid = (int64_t)v;
            break;
        case 'L':
            o->q.launcher = 1;
            break;
        case 'd':
            o->root = optarg;
            break;
        case 'h':
            fputs(cs_usage_tree, stdout);
            return -1;
        case ':':
            return cli_error(CS_EXIT_USAGE, "tree: option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE, "tree: unknown option '%s' (see callscope tree --help)",
                             argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return cli_error(CS_EXIT_USAGE, "tree: one RUN at most (got %d)", argc - optind);
    o->run = optind < argc ? argv[optind] : NULL;
    return CS_EXIT_OK;
}

typedef struct printer {
    FILE *f;
    size_t budget; /* lines left to print; 0 for no bound */
    const cs_calltree *t;
    const topts *o;
    uint64_t wall;
    char prefix[512]; /* the rails of the levels above */
    size_t shown, hidden;
} printer;

static int
visible(const printer *p, const cs_ctnode *x)
{
    return p->wall == 0 || 100.0 * (double)x->total_ns / (double)p->wall >= p->o->min_share;
}

static void
print_node(printer *p, int32_t i, size_t level, int last)
{
    const cs_ctnode *x = &p->t->nodes[i];
    char a[32], b[32], calls[48];
    if (p->budget && p->shown >= p->budget) {
        p->hidden++;
        return;
    }
    const cs_ctfunc *f = x->function > 0 && (size_t)x->function < p->t->nfuncs
                             ? &p->t->funcs[x->function]
                             : NULL;
    if (p->wall)
        fprintf(p->f, "%6.1f%%", 100.0 * (double)x->total_ns / (double)p->wall);
    else
        fprintf(p->f, "%7s", "-");
    snprintf(calls, sizeof calls, "%llu", (unsigned long long)x->calls);
    fprintf(p->f, " %9s %9s %10s  %s%s%s", cs_fmt_ns(x->total_ns, a, sizeof a),
           cs_fmt_ns(x->self_ns, b, sizeof b), calls, p->prefix,
           level == 0 ? "" : last ? "└─ " : "├─ ", cs_calltree_name(p->t, x));
    if (f && f->file && f->file[0])
        fprintf(p->f, "  %s:%lld", f->file, (long long)f->line);
    fputc('\n', p->f);
    p->shown++;
    if (p->o->depth && level + 1 >= p->o->depth) {
        for (int32_t c = x->child; c >= 0; c = p->t->nodes[c].sibling)
            p->hidden++;
        return;
    }
    size_t len = strlen(p->prefix);
    if (level > 0 && len + 8 < sizeof p->prefix)
        strcat(p->prefix, last ? "   " : "│  ");
    int32_t kids[2] = {-1, -1}; /* the last visible child is drawn with └ */
    for (int32_t c = x->child; c >= 0; c = p->t->nodes[c].sibling) {
        if (!visible(p, &p->t->nodes[c])) {
            p->hidden++;
            continue;
        }
        if (kids[0] >= 0)
            print_node(p, kids[0], level + 1, 0);
        kids[0] = c;
    }
    if (kids[0] >= 0)
        print_node(p, kids[0], level + 1, 1);
    p->prefix[len] = '\0';
}

/* The tree `t` of the run in `dir`, at most `budget` lines of it (0: no
 * bound), to `f`. */
static void
print_tree(FILE *f, size_t budget, cs_store *s, const cs_calltree *t, const topts *o,
           const char *dir)
{
    printer p = {.f = f, .budget = budget, .t = t, .o = o, .wall = cli_run_wall(s, o->q.pid)};
    char w[32];
    fprintf(f, "run %s: %s of wall time%s%s\n", dir, cs_fmt_ns(p.wall, w, sizeof w),
            t->from_calls ? ", recorded calls only (--all records every call)" : "",
            o->q.launcher ? "" : "; launcher frames folded");
    fprintf(f, "%7s %9s %9s %10s  %s\n", "share", "total", "self", "calls",
            "call path (file:line)");
    for (int32_t i = t->top; i >= 0; i = t->nodes[i].sibling) {
        if (visible(&p, &t->nodes[i]))
            print_node(&p, i, 0, 1);
        else
            p.hidden++;
    }
    if (p.hidden)
        fprintf(f, "(%zu smaller path(s) not shown: callscope tree --min-share 0 --depth 0 shows"
                   " all)\n",
                p.hidden);
}

int
cli_tree_summary(const char *dir, FILE *f, size_t lines)
{
    topts o = {.depth = 10, .min_share = 1.0};
    o.q.calls = 1;
    char *dbp = cs__path_join(dir, CS_DB_NAME);
    cs_store *s = NULL;
    cs_calltree *t = NULL;
    int rc = dbp ? cs_store_open(dbp, 0, &s) : CS_ENOMEM;
    if (rc == CS_OK)
        rc = cs_calltree_load(s, &o.q, &t);
    if (rc == CS_OK && t->n)
        print_tree(f, lines, s, t, &o, dir);
    cs_calltree_free(t);
    cs_store_close(s);
    cs__free(dbp);
    return rc;
}

int
cs_cmd_tree(int argc, char **argv)
{
    topts o = {.root = cs_run_root_default(), .depth = 12, .min_share = 0.5};
    o.q.calls = 1;
    int rc = parse(argc, argv, &o);
    if (rc != CS_EXIT_OK)
        return rc < 0 ? CS_EXIT_OK : rc;
    char *dir = NULL;
    if ((rc = cli_open_run(o.root, o.run, &dir)) != CS_EXIT_OK)
        return rc;
    char *dbp = cs__path_join(dir, CS_DB_NAME);
    cs_store *s = NULL;
    cs_calltree *t = NULL;
    int src = dbp ? cs_store_open(dbp, 0, &s) : CS_ENOMEM;
    if (src != CS_OK) {
        rc = cli_error(CS_EXIT_FAIL, "%s", src == CS_ENOENT ? "no calls recorded yet"
                                                          : cs_store_last_error());
        goto out;
    }
    if ((src = cs_calltree_load(s, &o.q, &t)) != CS_OK) {
        rc = cli_error(CS_EXIT_FAIL, "%s", cs_calltree_last_error());
        goto out;
    }
    if (t->n == 0) {
        rc = cli_error(CS_EXIT_FAIL, "run %s: no calls%s%s to make a tree of", dir,
                       o.q.thread || o.q.pid ? " in the chosen thread or process" : "",
                       t->folded ? " outside launcher frames (--launcher shows them)" : "");
        goto out;
    }
    print_tree(stdout, 0, s, t, &o, dir);
out:
    cs_calltree_free(t);
    cs_store_close(s);
    cs__free(dbp);
    cs__free(dir);
    return rc;
}
