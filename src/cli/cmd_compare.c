/* cmd_compare.c -- `callscope compare`: the significant digits captured
 * values keep over repeated runs, or what changed between two runs; with
 * --fail-if, a gate for CI. */
#include "cli.h"

#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char cs_usage_compare[] =
    "usage: callscope compare [options] RUN_A RUN_B\n"
    "       callscope compare [options] --runs PATTERN | RUN RUN RUN...\n\n"
    "With two runs: what changed from RUN_A to RUN_B, per function (calls,\n"
    "total, self, mean and p95 time, errors and new error types, changed\n"
    "results), largest change first.\n"
    "With --runs, --stability or three runs and more: how many significant\n"
    "digits every captured value keeps across the runs (record them with\n"
    "--args/--result), per function and value, fewest first.\n\n"
    "options:\n"
    "  -r, --runs PATTERN  every run whose name matches the glob (e.g. 'stab*')\n"
    "  --stability         digits even for two runs\n"
    "  --method M          cnh (default) or general\n"
    "  --confidence C      confidence level, in (0, 1) (default 0.95)\n"
    "  --probability P     probability, in (0, 1) (default 0.99)\n"
    "  --align KEY         how calls are paired: number (the n-th call, default),\n"
    "                      callsite (the n-th call from the same caller), or\n"
    "                      arg:NAME (the n-th call with the same value of NAME)\n"
    "  -f, --filter PAT    only functions whose module.qualname matches PAT\n"
    "  -n, --limit N       show the first N rows (default 30, 0 for all)\n"
    "  --fail-if EXPR      exit 1 when a row meets EXPR, e.g. 'time>+10%',\n"
    "                      'mean>+5ms', 'errors>0', 'changed>0', 'digits<10'\n"
    "                      (repeatable); the failing rows are printed\n"
    "  --json              print JSON instead of a table\n"
    "  --no-store          do not record the comparison in the runs' run.db\n"
    "  -d, --dir ROOT      root of the run directories\n"
    "  -h, --help          show this help\n";

#define MAX_GATES 16

/* The part of a run directory's name after its stamp
 * ("20261122-041641-379-stab" -> "stab"). */
static const char *
run_name_part(const char *base)
{
    const char *p = base;
    for (int dashes = 0; *p && dashes < 3; p++)
        if (*p == '-')
            dashes++;
    return *p ? p : base;
}

/* Runs under `root` whose name (with or without its stamp) matches. */
static int
match_runs(const char *root, const char *pattern, char ***out, size_t *n)
{
    char **dirs = NULL;
    size_t nd = 0;
    *out = NULL;
    *n = 0;
    if (cs_run_list(root, &dirs, &nd) != CS_OK)
        return cli_error(CS_EXIT_FAIL, "compare: cannot list the runs in %s", root);
    char **v = cs__calloc(nd ? nd : 1, sizeof *v);
    if (v == NULL) {
        cs_run_list_free(dirs, nd);
        return cli_error(CS_EXIT_FAIL, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < nd; i++) {
        const char *base = strrchr(dirs[i], '/');
        base = base ? base + 1 : dirs[i];
        if (fnmatch(pattern, base, 0) == 0 || fnmatch(pattern, run_name_part(base), 0) == 0) {
            char abs[PATH_MAX]; /* absolute, as runs named one by one are */
            v[k++] = cs__strdup(realpath(dirs[i], abs) ? abs : dirs[i]);
        }
    }
    cs_run_list_free(dirs, nd);
    *out = v;
    *n = k;
    return CS_EXIT_OK;
}

static void
json_str(const char *s)
{
    cs_buf b;
    cs_buf_init(&b);
    cs__json_str(&b, s ? s : "", s ? strlen(s) : 0);
    fputs(b.data ? b.data : "\"\"", stdout);
    cs_buf_free(&b);
}

static void
json_num(double v)
{
    if (isfinite(v))
        printf("%.10g", v);
    else
        fputs("null", stdout);
}

static int
stability(char **dirs, size_t n, const cs_compare_opts *o, size_t limit, int json,
          const cs_gate *gates, size_t ng)
{
    cs_compare_result r;
    int rc = cs_compare((const char *const *)dirs, n, o, &r);
    if (rc != CS_OK)
        return cli_error(rc == CS_EINVAL ? CS_EXIT_USAGE : CS_EXIT_FAIL, "compare: %s",
                         cs_compare_last_error());
    size_t failing = 0;
    for (size_t i = 0; i < r.nrows; i++)
        for (size_t g = 0; g < ng; g++)
            if (cs_gate_fails_digits(&gates[g], &r.rows[i])) {
                failing++;
                break;
            }
    const char *method = o->method == CS_DIGITS_CNH ? "cnh" : "general";
    if (json) {
        printf("{\"kind\": \"stability\", \"runs\": [");
        for (size_t i = 0; i < n; i++) {
            if (i)
                fputs(", ", stdout);
            json_str(dirs[i]);
        }
        printf("], \"method\": \"%s\", \"confidence\": ", method);
        json_num(o->confidence);
        fputs(", \"probability\": ", stdout);
        json_num(o->probability);
        if (o->method == CS_DIGITS_GENERAL) {
            fputs(", \"probability_shown\": ", stdout);
            json_num(r.digits.general_probability);
            printf(", \"runs_needed\": %zu", r.digits.general_runs_needed);
        }
        printf(", \"comparison\": %lld, \"rows\": [", (long long)r.comparison);
        for (size_t i = 0; i < r.nrows; i++) {
            const cs_digit_row *x = &r.rows[i];
            fputs(i ? ",\n  {" : "\n  {", stdout);
            fputs("\"function\": ", stdout);
            json_str(x->function);
            fputs(", \"value\": ", stdout);
            json_str(x->value);
            printf(", \"calls\": %llu, \"elements\": %llu, \"min\": ",
                   (unsigned long long)x->calls, (unsigned long long)x->elements);
            json_num(x->min);
            fputs(", \"median\": ", stdout);
            json_num(x->median);
            fputs(", \"max\": ", stdout);
            json_num(x->max);
            printf(", \"worst_call\": %llu, \"worst_element\": %llu, \"unequal\": %llu}",
                   (unsigned long long)x->worst_call, (unsigned long long)x->worst_element,
                   (unsigned long long)x->unequal);
        }
        printf("%s], \"misaligned\": [", r.nrows ? "\n" : "");
        for (size_t i = 0; i < r.nmis; i++) {
            fputs(i ? ", {\"function\": " : "{\"function\": ", stdout);
            json_str(r.mis[i].function);
            fputs(", \"what\": ", stdout);
            json_str(r.mis[i].what);
            fputs("}", stdout);
        }
        printf("], \"misaligned_total\": %zu, \"failing\": %zu}\n", r.mis_total, failing);
    } else {
        printf("%zu runs, method %s, confidence %g, probability %g", n, method, o->confidence,
               o->probability);
        if (o->method == CS_DIGITS_GENERAL)
            printf(" (%zu runs show probability %.3f; %zu are needed for %g)", n,
                   r.digits.general_probability, r.digits.general_runs_needed, o->probability);
        printf("\n%-40s %-16s %7s %7s %7s %7s %10s %8s\n", "function", "value", "calls", "min",
               "median", "max", "worst call", "element");
        for (size_t i = 0; i < r.nrows && (limit == 0 || i < limit); i++) {
            const cs_digit_row *x = &r.rows[i];
            cli_cell(stdout, x->function, 40, 1);
            fputc(' ', stdout);
            cli_cell(stdout, x->value, 16, 0);
            printf(" %7llu %7.2f %7.2f %7.2f %10llu %8llu%s\n", (unsigned long long)x->calls,
                   x->min, x->median, x->max, (unsigned long long)x->worst_call,
                   (unsigned long long)x->worst_element, x->unequal ? "  ints differ" : "");
        }
        if (limit && r.nrows > limit)
            printf("... %zu more rows (--limit 0 shows all)\n", r.nrows - limit);
        if (r.mis_total) {
            printf("misaligned: %zu\n", r.mis_total);
            for (size_t i = 0; i < r.nmis && i < 20; i++)
                printf("  %s: %s\n", r.mis[i].function, r.mis[i].what);
            if (r.mis_total > 20)
                printf("  ... %zu more\n", r.mis_total - 20);
        }
        if (failing) {
            printf("FAILED: %zu row(s) meet a --fail-if condition:\n", failing);
            for (size_t i = 0; i < r.nrows; i++)
                for (size_t g = 0; g < ng; g++)
                    if (cs_gate_fails_digits(&gates[g], &r.rows[i])) {
                        printf("  %s %s: min %.2f digits (%s)\n", r.rows[i].function,
                               r.rows[i].value, r.rows[i].min, gates[g].text);
                        break;
                    }
        }
    }
    cs_compare_free(&r);
    return failing ? CS_EXIT_FAIL : CS_EXIT_OK;
}

static const char *
change(char *b, size_t n, double a, double v)
{
    if (a == 0)
        snprintf(b, n, v == 0 ? "=" : "new");
    else
        snprintf(b, n, "%+.0f%%", (v - a) / a * 100);
    return b;
}

static int
diff(const char *a, const char *b, const char *filter, size_t limit, int json,
     const cs_gate *gates, size_t ng)
{
    cs_diff_result r;
    int rc = cs_diff(a, b, filter, &r);
    if (rc != CS_OK)
        return cli_error(CS_EXIT_FAIL, "compare: %s", cs_compare_last_error());
    size_t failing = 0;
    for (size_t i = 0; i < r.n; i++)
        for (size_t g = 0; g < ng; g++)
            if (cs_gate_fails(&gates[g], &r.rows[i])) {
                failing++;
                break;
            }
    if (json) {
        printf("{\"kind\": \"diff\", \"a\": ");
        json_str(a);
        fputs(", \"b\": ", stdout);
        json_str(b);
        fputs(", \"rows\": [", stdout);
        for (size_t i = 0; i < r.n; i++) {
            const cs_diff_row *x = &r.rows[i];
            fputs(i ? ",\n  {\"function\": " : "\n  {\"function\": ", stdout);
            json_str(x->function);
            printf(", \"in_a\": %s, \"in_b\": %s", x->in_a ? "true" : "false",
                   x->in_b ? "true" : "false");
            printf(", \"calls\": [%llu, %llu], \"errors\": [%llu, %llu]",
                   (unsigned long long)x->calls[0], (unsigned long long)x->calls[1],
                   (unsigned long long)x->errors[0], (unsigned long long)x->errors[1]);
            printf(", \"total_ns\": [%llu, %llu], \"self_ns\": [%llu, %llu]",
                   (unsigned long long)x->total[0], (unsigned long long)x->total[1],
                   (unsigned long long)x->self[0], (unsigned long long)x->self[1]);
            printf(", \"mean_ns\": [%.0f, %.0f], \"p95_ns\": [%llu, %llu]", x->mean[0],
                   x->mean[1], (unsigned long long)x->p95[0], (unsigned long long)x->p95[1]);
            fputs(", \"new_errors\": ", stdout);
            if (x->new_errors)
                json_str(x->new_errors);
            else
                fputs("null", stdout);
            printf(", \"results_compared\": %llu, \"results_changed\": %llu",
                   (unsigned long long)x->results_compared,
                   (unsigned long long)x->results_changed);
            printf(", \"first_changed\": %llu, \"digits\": ",
                   (unsigned long long)x->first_changed);
            if (x->digits == -1)
                fputs("null", stdout);
            else if (x->digits == -2)
                fputs("\"all\"", stdout);
            else
                json_num(x->digits);
            fputs(", \"failing\": ", stdout);
            int f = 0;
            for (size_t g = 0; g < ng && !f; g++)
                f = cs_gate_fails(&gates[g], x);
            printf("%s}", f ? "true" : "false");
        }
        printf("%s], \"failing\": %zu}\n", r.n ? "\n" : "", failing);
    } else {
        printf("A %s\nB %s\n", a, b);
        printf("%-40s %13s %17s %9s %9s %9s %11s %s\n", "function", "calls A>B", "total A>B",
               "total", "mean", "p95", "errors A>B", "results");
        for (size_t i = 0; i < r.n && (limit == 0 || i < limit); i++) {
            const cs_diff_row *x = &r.rows[i];
            char c1[32], c2[32], c3[32], t1[32], t2[32], calls[40], tot[48], err[40], res[96];
            snprintf(calls, sizeof calls, "%llu>%llu", (unsigned long long)x->calls[0],
                     (unsigned long long)x->calls[1]);
            snprintf(tot, sizeof tot, "%s>%s", cs_fmt_ns(x->total[0], t1, sizeof t1),
                     cs_fmt_ns(x->total[1], t2, sizeof t2));
            snprintf(err, sizeof err, "%llu>%llu", (unsigned long long)x->errors[0],
                     (unsigned long long)x->errors[1]);
            if (!x->in_a || !x->in_b)
                snprintf(res, sizeof res, "only in %s", x->in_a ? "A" : "B");
            else if (x->results_compared == 0)
                snprintf(res, sizeof res, "-");
            else if (x->results_changed == 0)
                snprintf(res, sizeof res, "%llu equal", (unsigned long long)x->results_compared);
            else
                snprintf(res, sizeof res, "%llu of %llu changed (first: call %llu, %.1f digits)",
                         (unsigned long long)x->results_changed,
                         (unsigned long long)x->results_compared,
                         (unsigned long long)x->first_changed, x->digits < 0 ? 0 : x->digits);
            cli_cell(stdout, x->function, 40, 1);
            printf(" %13s %17s %9s %9s %9s %11s %s%s%s\n", calls, tot,
                   change(c1, sizeof c1, (double)x->total[0], (double)x->total[1]),
                   change(c2, sizeof c2, x->mean[0], x->mean[1]),
                   change(c3, sizeof c3, (double)x->p95[0], (double)x->p95[1]), err, res,
                   x->new_errors ? "; new errors: " : "", x->new_errors ? x->new_errors : "");
        }
        if (limit && r.n > limit)
            printf("... %zu more rows (--limit 0 shows all)\n", r.n - limit);
        if (failing) {
            printf("FAILED: %zu function(s) meet a --fail-if condition:\n", failing);
            for (size_t i = 0; i < r.n; i++)
                for (size_t g = 0; g < ng; g++)
                    if (cs_gate_fails(&gates[g], &r.rows[i])) {
                        char t1[32], t2[32];
                        printf("  %s: %s (total %s > %s, errors %llu > %llu, %llu results"
                               " changed)\n",
                               r.rows[i].function, gates[g].text,
                               cs_fmt_ns(r.rows[i].total[0], t1, sizeof t1),
                               cs_fmt_ns(r.rows[i].total[1], t2, sizeof t2),
                               (unsigned long long)r.rows[i].errors[0],
                               (unsigned long long)r.rows[i].errors[1],
                               (unsigned long long)r.rows[i].results_changed);
                        break;
                    }
        }
    }
    cs_diff_free(&r);
    return failing ? CS_EXIT_FAIL : CS_EXIT_OK;
}

static int
parse_unit(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0 && v < 1))
        return -1;
    *out = v;
    return 0;
}

int
cs_cmd_compare(int argc, char **argv)
{
    const char *root = cs_run_root_default(), *pattern = NULL;
    cs_compare_opts o = {.method = CS_DIGITS_CNH, .confidence = 0.95, .probability = 0.99,
                         .align = CS_ALIGN_NUMBER, .store = 1};
    size_t limit = 30, ng = 0;
    int json = 0, force_stability = 0;
    cs_gate gates[MAX_GATES];
    static const struct option opts[] = {
        {"runs", required_argument, NULL, 'r'},      {"method", required_argument, NULL, 'M'},
        {"confidence", required_argument, NULL, 'C'},
        {"probability", required_argument, NULL, 'P'},
        {"align", required_argument, NULL, 'A'},     {"filter", required_argument, NULL, 'f'},
        {"limit", required_argument, NULL, 'n'},     {"fail-if", required_argument, NULL, 'F'},
        {"json", no_argument, NULL, 'j'},            {"no-store", no_argument, NULL, 'S'},
        {"stability", no_argument, NULL, 's'},       {"dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":r:f:n:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            pattern = optarg;
            break;
        case 'M':
            if (strcmp(optarg, "cnh") == 0)
                o.method = CS_DIGITS_CNH;
            else if (strcmp(optarg, "general") == 0)
                o.method = CS_DIGITS_GENERAL;
            else
                return cli_error(CS_EXIT_USAGE, "compare: --method: '%s' (use cnh or general)",
                                 optarg);
            break;
        case 'C':
        case 'P':
            if (parse_unit(optarg, c == 'C' ? &o.confidence : &o.probability) != 0)
                return cli_error(CS_EXIT_USAGE, "compare: --%s: '%s' must be a number in (0, 1)",
                                 c == 'C' ? "confidence" : "probability", optarg);
            break;
        case 'A':
            if (strcmp(optarg, "number") == 0)
                o.align = CS_ALIGN_NUMBER;
            else if (strcmp(optarg, "callsite") == 0)
                o.align = CS_ALIGN_CALLSITE;
            else if (strncmp(optarg, "arg:", 4) == 0 && optarg[4]) {
                o.align = CS_ALIGN_ARG;
                o.align_arg = optarg + 4;
            } else
                return cli_error(CS_EXIT_USAGE,
                                 "compare: --align: '%s' (use number, callsite or arg:NAME)",
                                 optarg);
            break;
        case 'f':
            o.filter = optarg;
            break;
        case 'n':
            if (cli_parse_size(optarg, &limit) != 0)
                return cli_error(CS_EXIT_USAGE, "compare: --limit: '%s' is not a number", optarg);
            break;
        case 'F': {
            char why[128];
            if (ng == MAX_GATES)
                return cli_error(CS_EXIT_USAGE, "compare: at most %d --fail-if", MAX_GATES);
            if (cs_gate_parse(optarg, &gates[ng], why) != CS_OK)
                return cli_error(CS_EXIT_USAGE, "compare: --fail-if %s", why);
            ng++;
            break;
        }
        case 'j':
            json = 1;
            break;
        case 'S':
            o.store = 0;
            break;
        case 's':
            force_stability = 1;
            break;
        case 'd':
            root = optarg;
            break;
        case 'h':
            fputs(cs_usage_compare, stdout);
            return CS_EXIT_OK;
        case ':':
            return cli_error(CS_EXIT_USAGE, "compare: option '%s' needs a value",
                             argv[optind - 1]);
        default:
            return cli_error(CS_EXIT_USAGE, "compare: unknown option '%s' (see --help)",
                             argv[optind - 1]);
        }
    }
    char **dirs = NULL;
    size_t n = 0;
    int status;
    if (pattern) {
        if (optind < argc)
            return cli_error(CS_EXIT_USAGE, "compare: give --runs or run names, not both");
        if ((status = match_runs(root, pattern, &dirs, &n)) != CS_EXIT_OK)
            return status;
        if (n < 2) {
            for (size_t i = 0; i < n; i++)
                cs__free(dirs[i]);
            cs__free(dirs);
            return cli_error(CS_EXIT_USAGE, "compare: --runs %s: %zu run(s) match under %s;"
                                            " at least 2 are needed",
                             pattern, n, root);
        }
    } else {
        n = (size_t)(argc - optind);
        if (n < 2)
            return cli_error(CS_EXIT_USAGE,
                             "compare: give two runs (RUN_A RUN_B), or --runs PATTERN");
        dirs = cs__calloc(n, sizeof *dirs);
        if (dirs == NULL)
            return cli_error(CS_EXIT_FAIL, "out of memory");
        for (size_t i = 0; i < n; i++) {
            if ((status = cli_open_run(root, argv[optind + (int)i], &dirs[i])) != CS_EXIT_OK) {
                for (size_t j = 0; j < i; j++)
                    cs__free(dirs[j]);
                cs__free(dirs);
                return status;
            }
        }
    }
    if (pattern) {
        /* bring each matched run up to date, as cli_open_run does */
        for (size_t i = 0; i < n; i++) {
            cs_sync_result sr;
            if (cs_run_sync(dirs[i], &sr) != CS_OK)
                cli_warn("%s: %s", dirs[i], cs_store_last_error());
            else if (sr.failed)
                cli_warn("%s: %d log(s) could not be read: %s", dirs[i], sr.failed, sr.message);
        }
    }
    int digits_mode = pattern || force_stability || n > 2;
    for (size_t g = 0; digits_mode && g < ng; g++)
        if (gates[g].metric != 7) {
            status = cli_error(CS_EXIT_USAGE,
                               "compare: --fail-if %s: only digits applies when comparing"
                               " stability",
                               gates[g].text);
            goto out;
        }
    status = digits_mode ? stability(dirs, n, &o, limit, json, gates, ng)
                         : diff(dirs[0], dirs[1], o.filter, limit, json, gates, ng);
out:
    for (size_t i = 0; i < n; i++)
        cs__free(dirs[i]);
    cs__free(dirs);
    return status;
}
