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
    uint64_t errors;     /* calls that raised */
    uint64_t unfinished; /* calls that never returned */
    uint64_t total_ns, self_ns, min_ns, max_ns, p50_ns, p95_ns;
    double mean_ns;
    uint64_t cpu_ns;  /* sum over calls that measured CPU */
    uint64_t cpu_calls;
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

/* 1 if `name` matches `filter` in the sense of cs_stats_query.filter. */
CS_EXPORT int cs_name_matches(const char *filter, const char *name);

#endif /* CS_ANALYSIS_H */
