/*
 * cs_analysis.h -- the contract of the analysis stage: statistics per
 * function and call listings, computed from run.db. The command-line tool
 * and the Python API both call these, so a number means the same thing in
 * both places.
 */
#ifndef CS_ANALYSIS_H
#define CS_ANALYSIS_H

#include "cs_core.h"
#include "cs_store.h"

/* Statistics of one function over every finished call of the run.
 * Times are nanoseconds. Strings are owned by the array. */
typedef struct cs_fstat {
    int64_t id;
    char *name; /* module.qualname */
    char *kind; /* "function" or "span" */
    char *file;
    int64_t line;
    uint64_t calls;      /* all calls, unfinished included */
    uint64_t prim_calls; /* calls made while no other call of the function was
                            open on the same thread (cProfile's primitive
                            calls); total_ns counts only these */
    uint64_t errors;     /* calls that raised */
    uint64_t unfinished; /* calls that never returned */
    uint64_t total_ns, self_ns, min_ns, max_ns, p50_ns, p95_ns;
    double mean_ns;
    uint64_t cpu_ns;  /* sum over calls that measured CPU (primitive calls) */
    uint64_t cpu_calls;
    int quantiles;    /* min_ns, p50_ns and p95_ns are known (not for
                         functions profiled by the --all tree alone) */
} cs_fstat;

/* Sort keys of cs_stats. */
typedef enum cs_sort {
    CS_SORT_TOTAL = 0,
    CS_SORT_SELF,
    CS_SORT_CALLS,
    CS_SORT_MEAN,
    CS_SORT_MAX,
    CS_SORT_P95,
    CS_SORT_CPU,
    CS_SORT_ERRORS,
    CS_SORT_NAME,
    CS_SORT_IMBALANCE, /* cs_stats_by only; plain stats sort by total */
} cs_sort;

/* Parse a sort key name ("total", "self", ...). CS_EINVAL if unknown. */
CS_EXPORT int cs_sort_parse(const char *name, cs_sort *out /* OUT */);
/* The accepted sort key names, comma-separated. */
CS_EXPORT const char *cs_sort_names(void);

typedef struct cs_stats_query {
    const char *filter; /* glob (fnmatch) or, without wildcards, substring of
                           module.qualname; NULL for all */
    cs_sort sort;
    size_t limit; /* 0 for no limit */
    int64_t pid;  /* 0 for all processes */
    int launcher; /* 1: keep launcher frames (cs_launcher_frame), which are
                     left out by default, with the C functions they call */
} cs_stats_query;

/* Compute statistics. *out is an array of *n entries, sorted; free it with
 * cs_stats_free(). */
CS_EXPORT int cs_stats(cs_store *s, const cs_stats_query *q, cs_fstat **out /* OUT */,
                       size_t *n /* OUT */);
CS_EXPORT void cs_stats_free(cs_fstat *v, size_t n);

/* ---- per rank and per process ------------------------------------------ */

typedef enum cs_group_by { CS_BY_RANK = 1, CS_BY_PROCESS = 2 } cs_group_by;

/* Parse "rank" or "process". CS_EINVAL if unknown. */
CS_EXPORT int cs_group_parse(const char *name, cs_group_by *out /* OUT */);

/* One group: a rank (processes without a rank form group -1), or a
 * process (key = processes.id). `label` is owned by the cs_groups. */
typedef struct cs_group {
    int64_t key;
    char *label; /* "3", or "pid@host" */
} cs_group;

/* One function across the groups of the run. Per-group arrays are indexed
 * like cs_groups.v, with 0 where the function was not called. Times are
 * the wall time of finished calls, in ns. */
typedef struct cs_gstat {
    int64_t id;
    char *name;
    uint64_t calls;
    size_t present; /* groups where it was called */
    double calls_min, calls_mean, calls_max;
    double total_min, total_mean, total_max;
    double imbalance; /* total_max / total_mean: 1 is perfect balance */
    uint64_t *group_calls;
    uint64_t *group_total;
} cs_gstat;

typedef struct cs_groups {
    cs_group *v;
    size_t n;
    cs_gstat *f;
    size_t nf;
} cs_groups;

/* Statistics of every function across ranks or processes: min, mean and
 * max over all groups of the run (a group that never called a function
 * counts as 0), and the imbalance. `q.filter`, `q.limit` and `q.sort`
 * apply (CS_SORT_TOTAL sorts by the summed time). Free with
 * cs_groups_free(). */
CS_EXPORT int cs_stats_by(cs_store *s, const cs_stats_query *q, cs_group_by by,
                          cs_groups *out /* OUT */);
CS_EXPORT void cs_groups_free(cs_groups *g);

/* The p-quantile (nearest rank) of `n` durations counted in histogram `h`
 * (CS_HIST_BUCKETS buckets, cs_hist_bucket), as its bucket's middle. */
CS_EXPORT uint64_t cs_hist_rank(const uint64_t *h, uint64_t n, double p);

/* 1 if `name` matches `filter` in the sense of cs_stats_query.filter. */
CS_EXPORT int cs_name_matches(const char *filter, const char *name);

/* ---- the calling-context tree (calltree.c) -------------------------------- */

/* A function as the tree shows it. Strings owned by the tree. */
typedef struct cs_ctfunc {
    char *name; /* module.qualname (the function_names view) */
    char *file;
    int64_t line;
    int builtin;  /* a C function */
    int launcher; /* a launcher frame (cs_launcher_frame) */
} cs_ctfunc;

/* Node flags, as the log's CS_TN_* (cs_log.h). */
#define CS_CT_REC_FUNC 0x1u /* its function is already on its path */
#define CS_CT_REC_EDGE 0x2u /* so is the pair (caller, callee) */
#define CS_CT_TRUNC 0x8u    /* past the node limit: by function, not path */

/* One node of the merged tree: a distinct call path. Times in ns, over
 * every thread and process merged into it. */
typedef struct cs_ctnode {
    int64_t function; /* functions.id; 0 for the head of truncated paths */
    int32_t parent;   /* index of its parent node, -1 at the top */
    int32_t child;    /* its first child (largest total first), -1 if none */
    int32_t sibling;  /* the next child of its parent, -1 if none */
    uint32_t depth;   /* 1 at the top */
    uint32_t flags;   /* CS_CT_* of any node merged into it */
    uint64_t calls, total_ns, self_ns, cpu_ns, max_ns;
    uint64_t child_ns; /* the total of its children */
} cs_ctnode;

typedef struct cs_calltree {
    cs_ctnode *nodes;
    size_t n;
    int32_t top;       /* the first top-level node (largest first), -1 if empty */
    uint64_t total_ns; /* the sum of the top-level nodes' totals */
    uint64_t folded;   /* nodes folded away as launcher frames */
    cs_ctfunc *funcs;  /* indexed by functions.id */
    size_t nfuncs;
    int from_calls;    /* built from recorded calls: no --all tree */
} cs_calltree;

typedef struct cs_calltree_query {
    int64_t pid;        /* 0 for every process */
    const char *thread; /* a thread's name or tid; NULL for every thread */
    int launcher;       /* 1: keep launcher frames */
    int calls;          /* 1: without an --all tree, build the tree from the
                           recorded calls' parent links */
} cs_calltree_query;

/* Load the merged tree of the run in `s` (NULL query: every process and
 * thread, launcher frames folded, recorded calls used when there is no
 * --all tree). Free with cs_calltree_free(). */
CS_EXPORT int cs_calltree_load(cs_store *s, const cs_calltree_query *q,
                               cs_calltree **out /* OUT */);
CS_EXPORT void cs_calltree_free(cs_calltree *t);
/* The display name of node `x`'s function (borrowed). */
CS_EXPORT const char *cs_calltree_name(const cs_calltree *t, const cs_ctnode *x);
/* 1 if the function named `name` is a launcher frame: runpy, the import
 * system's bootstrap, or callscope's own code. */
CS_EXPORT int cs_launcher_frame(const char *name);
/* What went wrong in the last cs_calltree_load of this thread. */
CS_EXPORT const char *cs_calltree_last_error(void);

/* ---- significant digits (digits.c) --------------------------------------- */

enum cs_digits_method { CS_DIGITS_CNH = 1, CS_DIGITS_GENERAL = 2 };

/* An estimator, prepared for samples of `n` runs. */
typedef struct cs_digits_ctx {
    int method;
    double confidence, probability;
    size_t n;
    double cnh_delta;           /* digits CNH subtracts for n, c and p */
    double general_probability; /* what n agreeing samples show, with c */
    size_t general_runs_needed; /* runs for `probability` with c */
} cs_digits_ctx;

/* CS_EINVAL for an unknown method, a confidence or probability outside
 * (0, 1), or fewer than 2 samples. */
CS_EXPORT int cs_digits_prepare(cs_digits_ctx *c, int method, double confidence,
                                double probability, size_t n);

/* The significant digits of one value over the c->n runs: samples at
 * re[i * stride] (and im[i * stride] for a complex value, else im NULL),
 * relative to their mean. Identical samples give `max_digits` (the
 * precision of the type); samples that differ around a zero mean, or any
 * NaN, give 0. Clamped to [0, max_digits]. */
CS_EXPORT double cs_digits_of(const cs_digits_ctx *c, const double *re, const double *im,
                              size_t stride, double max_digits);

/* The standard normal quantile, and the chi-square quantile. */
CS_EXPORT double cs_norm_quantile(double p);
CS_EXPORT double cs_chi2_quantile(double p, double dof);

/* ---- comparing runs (compare.c) -------------------------------------------- */

/* How calls of different runs are paired. */
typedef enum cs_align {
    CS_ALIGN_NUMBER = 0,   /* the n-th call of the function in each run */
    CS_ALIGN_CALLSITE = 1, /* the n-th call from the same calling function */
    CS_ALIGN_ARG = 2,      /* the n-th call with the same value of an argument */
} cs_align;

typedef struct cs_compare_opts {
    int method;            /* CS_DIGITS_* */
    double confidence, probability;
    cs_align align;
    const char *align_arg; /* CS_ALIGN_ARG: the parameter's name */
    const char *filter;    /* functions, as cs_stats_query.filter */
    int store;             /* write the results into each run's run.db */
} cs_compare_opts;

/* One function and one of its values (a parameter's name, or "result"):
 * the digits of each aligned call are those of its worst element; these
 * are their min, median and max over the calls. */
typedef struct cs_digit_row {
    char *function;
    char *value;
    uint64_t calls;      /* aligned calls compared */
    uint64_t elements;   /* numbers in the value (of the worst call) */
    double min, median, max;
    uint64_t worst_call; /* the call (its number in the first run) of min */
    uint64_t worst_element; /* index of the worst number within the value,
                               in traversal order (arrays: flat, C order) */
    uint64_t unequal;    /* calls whose ints or bools differ across runs */
    double *per_call;    /* digits of each aligned call, in call order */
    uint64_t *call_no;   /* and its number in the first run */
} cs_digit_row;

/* A call or value that could not be paired across the runs. */
typedef struct cs_misaligned {
    char *function;
    char *what; /* e.g. "call 7: missing in run 3 (b/...)" */
} cs_misaligned;

typedef struct cs_compare_result {
    size_t nruns;
    cs_digits_ctx digits;
    cs_digit_row *rows;
    size_t nrows;
    cs_misaligned *mis;
    size_t nmis, mis_total; /* kept, and found (only the first are kept) */
    uint64_t values_compared;
    int64_t comparison; /* its id in the first run's run.db, when stored */
} cs_compare_result;

/* Compare the captured values of the runs in `dirs` (each a run
 * directory): per function and value, the significant digits kept across
 * the runs. Rows are sorted by min digits, fewest first. Errors name the
 * run at fault in cs_compare_last_error(): CS_EINVAL for a run without
 * captured values or runs of different programs (no function in common),
 * CS_ENOTDB for a damaged run.db. */
CS_EXPORT int cs_compare(const char *const *dirs, size_t n, const cs_compare_opts *o,
                         cs_compare_result *out /* OUT */);
CS_EXPORT void cs_compare_free(cs_compare_result *r);
/* The fewest digits function `name` kept in the latest stability
 * comparison stored in run.db of `s`. 1 and *out set if there is one. */
CS_EXPORT int cs_latest_digits(cs_store *s, const char *name, double *out /* OUT */);

/* What went wrong in the last cs_compare or cs_diff of this thread. */
CS_EXPORT const char *cs_compare_last_error(void);

/* ---- two runs: what changed (compare.c) ------------------------------------ */

typedef struct cs_diff_row {
    char *function;
    int in_a, in_b;             /* present in each run */
    uint64_t calls[2], errors[2];
    uint64_t total[2], self[2], p95[2];
    double mean[2];
    char *new_errors;           /* error types of B not seen in A, comma-separated */
    uint64_t results_compared, results_changed;
    uint64_t first_changed;     /* call number of the first changed result */
    double digits;              /* min digits of its results over both runs; -1 if none */
    double score;               /* the size of the change, for sorting */
} cs_diff_row;

typedef struct cs_diff_result {
    cs_diff_row *rows;
    size_t n;
} cs_diff_result;

/* What changed from run `a` to run `b`, per function, largest change
 * first. */
CS_EXPORT int cs_diff(const char *a, const char *b, const char *filter,
                      cs_diff_result *out /* OUT */);
CS_EXPORT void cs_diff_free(cs_diff_result *r);

/* A --fail-if condition: "METRIC OP VALUE", e.g. "time>+10%",
 * "digits<10", "errors>0". Metrics: time (total), self, mean, p95,
 * calls, errors, changed (changed results), digits. A value with % is a
 * relative change from A to B; with a leading + or - an absolute change;
 * else the value in B (digits: the min digits). */
typedef struct cs_gate {
    int metric, op, relative, delta;
    double value;
    const char *text;
} cs_gate;

/* Parse `text` (kept by reference). CS_EINVAL with a reason in `why`
 * (at least 128 bytes). */
CS_EXPORT int cs_gate_parse(const char *text, cs_gate *out /* OUT */, char *why);
/* 1 if row `r` fails the gate. */
CS_EXPORT int cs_gate_fails(const cs_gate *g, const cs_diff_row *r);
/* 1 if the stability row `r` fails the gate (only "digits" applies). */
CS_EXPORT int cs_gate_fails_digits(const cs_gate *g, const cs_digit_row *r);

/* ---- exports (export.c) ---------------------------------------------------- */

#include <stdio.h>

typedef enum cs_export_format {
    CS_EXPORT_CHROME = 0,     /* Chrome trace events: Perfetto, chrome://tracing */
    CS_EXPORT_SPEEDSCOPE = 1, /* speedscope's file format, evented profiles */
    CS_EXPORT_PSTATS = 2,     /* a marshal'd dict that pstats.Stats loads */
    CS_EXPORT_CSV = 3,        /* one row per call */
    CS_EXPORT_JSONL = 4,      /* one object per call */
    CS_EXPORT_COLLAPSED = 5,  /* folded stacks: "a;b;c self_us" per call path */
} cs_export_format;

/* Parse a format name; CS_EINVAL if unknown. */
CS_EXPORT int cs_export_parse(const char *name, cs_export_format *out /* OUT */);
/* The format names, comma-separated. */
CS_EXPORT const char *cs_export_names(void);
/* Write the run of `s` to `f` in `fmt`. *rows: calls (or, for pstats,
 * functions) written. */
CS_EXPORT int cs_export(cs_store *s, cs_export_format fmt, FILE *f, uint64_t *rows /* OUT */);
/* Write `s` as a JSON string to `f`. */
void cs__json_fputs(FILE *f, const char *s);
/* Set this thread's export error to "what: msg" (NULL what: clear it). */
void cs__export_seterr(const char *what, const char *msg);
/* The pstats export (pstats.c), and those made from the call tree
 * (export_tree.c), for cs_export. */
int cs__export_pstats(sqlite3 *db, FILE *f, uint64_t *rows);
int cs__export_collapsed(cs_store *s, FILE *f, uint64_t *rows);
int cs__export_speedscope_tree(cs_store *s, FILE *f, uint64_t *rows);
int cs__export_chrome_tree(cs_store *s, FILE *f, uint64_t *rows);
/* What went wrong in the last cs_export of this thread. */
CS_EXPORT const char *cs_export_last_error(void);

/* ---- the HTML report (report.c) ---------------------------------------------- */

typedef struct cs_report_opts {
    const char *title, *subtitle;
    const char *const *tags;
    size_t ntags;
    double start, end; /* the window, seconds after the run's start; end 0: the end */
    const char *const *functions; /* patterns (cs_name_matches); none: all */
    size_t nfunctions;
    int launcher; /* 1: keep launcher frames (cs_launcher_frame) */
} cs_report_opts;

/* Write the report of the run in `dir` (its store `s`) to `f`: one HTML
 * file with inline SVG, styles and script, nothing loaded from elsewhere. */
CS_EXPORT int cs_report(cs_store *s, const char *dir, const cs_report_opts *o, FILE *f);
/* What went wrong in the last cs_report of this thread. */
CS_EXPORT const char *cs_report_last_error(void);

#endif /* CS_ANALYSIS_H */
