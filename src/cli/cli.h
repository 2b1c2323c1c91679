/* cli.h -- shared by the subcommands of the callscope tool. Each command
 * is `int cs_cmd_<name>(int argc, char **argv)` and returns the process
 * exit status: 0 success, 1 failure, 2 bad usage. */
#ifndef CS_CLI_H
#define CS_CLI_H

#include "cs_analysis.h"
#include "cs_core.h"
#include "cs_log.h"
#include "cs_store.h"

#include <stdio.h>

#define CS_EXIT_OK 0
#define CS_EXIT_FAIL 1
#define CS_EXIT_USAGE 2

typedef struct cs_command {
    const char *name;
    const char *summary;
    int (*fn)(int argc, char **argv);
    const char *usage;
} cs_command;

int cs_cmd_run(int argc, char **argv);
int cs_cmd_top(int argc, char **argv);
int cs_cmd_tree(int argc, char **argv);
int cs_cmd_info(int argc, char **argv);
int cs_cmd_clean(int argc, char **argv);
int cs_cmd_compare(int argc, char **argv);
int cs_cmd_export(int argc, char **argv);
int cs_cmd_report(int argc, char **argv);

extern const char cs_usage_run[];
extern const char cs_usage_top[];
extern const char cs_usage_tree[];
extern const char cs_usage_info[];
extern const char cs_usage_clean[];
extern const char cs_usage_compare[];
extern const char cs_usage_export[];
extern const char cs_usage_report[];

/* Print "callscope: error: ..." to stderr; returns `code` for chaining. */
int cli_error(int code, const char *fmt, ...) CS_PRINTF(2, 3);
void cli_warn(const char *fmt, ...) CS_PRINTF(1, 2);

/* Resolve RUN (NULL for latest) under `root`, recover it (ingest logs of
 * dead writers) and report problems. On success *dir is the run
 * directory (caller frees). Returns an exit status. */
int cli_open_run(const char *root, const char *spec, char **dir /* OUT */);

/* The Python to start: `opt`, else $CALLSCOPE_PYTHON, else the python3
 * beside this executable (a virtual environment's bin/), else "python3".
 * Caller frees. */
char *cli_find_python(const char *opt);

/* Parse a non-negative integer option value; returns 0 or -1. */
int cli_parse_size(const char *s, size_t *out /* OUT */);

/* The wall time of a run (of process `pid` if not 0): the sum of its
 * processes' lifetimes, what shares of the run are shares of. */
uint64_t cli_run_wall(cs_store *s, int64_t pid);

/* Print `s` left-aligned in `width` columns. A longer string is cut and
 * marked with '~', keeping its end when `keep_tail` (qualified names end
 * with what matters), else its start. */
void cli_cell(FILE *f, const char *s, int width, int keep_tail);

/* Print the hottest paths of the run in `dir` to `f`, at most `lines`
 * lines of tree (callscope run's closing summary). */
int cli_tree_summary(const char *dir, FILE *f, size_t lines);

#endif
