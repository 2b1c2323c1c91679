/*
 * cs_store.h -- the contract of the store: the SQLite run database
 * (run.db), ingest of event logs into it, recovery of runs whose writers
 * died, and the run-level questions (where is a run, what state is it in).
 *
 * The schema is documented in docs/schema.md. It is versioned with
 * PRAGMA user_version; older databases are migrated when opened (if the
 * file is writable), never rejected. A database newer than this library is refused
 * with CS_EVERSION.
 */
#ifndef CS_STORE_H
#define CS_STORE_H

#include "cs_core.h"

#include <sqlite3.h>

#define CS_SCHEMA_VERSION 4
#define CS_DB_NAME "run.db"

typedef struct cs_store cs_store;

/* Open the database at `path`. With `create`, a missing file is created
 * and the schema installed or migrated; without it, a missing file is
 * CS_ENOENT and the file is only read. A file that is not a callscope
 * database gives CS_ENOTDB. *out is NULL on failure; the message of the
 * last failure of this thread is in cs_store_last_error(). */
CS_EXPORT int cs_store_open(const char *path, int create, cs_store **out /* OUT */);

/* Close and free. cs_store_close(NULL) is a no-op. */
CS_EXPORT void cs_store_close(cs_store *s);

/* The underlying SQLite handle. Borrowed. */
CS_EXPORT sqlite3 *cs_store_db(cs_store *s);

/* Create the index of calls by function, for lookups of one function's
 * calls. Ingest does not maintain it until it exists. */
CS_EXPORT int cs_store_index(cs_store *s);

/* A description of the last store failure in this thread (never NULL). */
CS_EXPORT const char *cs_store_last_error(void);

/* What one ingest did. */
typedef struct cs_ingest_result {
    uint64_t calls;       /* call rows written (unfinished included) */
    uint64_t unfinished;  /* calls still open when the log ended */
    uint64_t errors;      /* calls that raised */
    uint64_t records;     /* valid records read */
    uint64_t bad_records; /* streams cut short at a damaged record; the
                             valid prefix of each was kept */
    uint64_t orphans;     /* exits with no matching entry (e.g. across fork) */
    uint64_t torn_blobs;  /* blobs whose bytes did not match their hash (the
                             process died writing them): left out */
    int skipped;          /* the log had been ingested before */
    int clean;            /* the writer closed the log itself */
} cs_ingest_result;

/* Ingest the log at `logpath` into `s` in one transaction, then delete the
 * log. A log already recorded in the processes table is only deleted.
 * `recovered` marks the process as recovered after a crash. The caller
 * must own the log's lock (see cs_run_sync). */
CS_EXPORT int cs_store_ingest(cs_store *s, const char *logpath, int recovered,
                              cs_ingest_result *out /* OUT */);

/* Write the rows of the `tree` table that ingest left pending (a
 * process's call tree is kept as one blob while it exits, and becomes rows
 * for the first reader). Does nothing when none are pending; CS_EDB and
 * the like when run.db cannot be written. */
CS_EXPORT int cs_store_expand_trees(cs_store *s);

/* ---- runs --------------------------------------------------------------- */

/* Resolve a run named by the user: NULL or "latest" means `<root>/latest`;
 * an existing directory, or a run.db file inside one, is taken as is;
 * otherwise `<root>/<spec>`. *out receives the directory; caller frees
 * with cs__free(). CS_ENOENT when nothing matches, CS_ENOTRUN when the
 * directory holds neither run.db nor logs. */
CS_EXPORT int cs_run_resolve(const char *root, const char *spec, char **out /* OUT */);

/* 1 if `dir` is a run callscope made: a directory (not a link) whose
 * run.db opens as callscope's schema, or, before it has one, that holds a
 * log with callscope's magic. What `callscope clean` may delete. */
CS_EXPORT int cs_run_is_ours(const char *dir);
/* Delete the run `dir`: the files callscope makes there (run.db and its
 * journals, logs, the lock, exports and the report), then the directory.
 * Anything else (a file of the user's, a link) stays, and so does the
 * directory: *kept says so. */
CS_EXPORT int cs_run_remove(const char *dir, int *kept /* OUT */);

/* cs_store_expand_trees on the run.db of `rundir`, if it has one: what
 * readers do after cs_run_sync (a process's exit does not). */
CS_EXPORT int cs_run_expand(const char *rundir);

/* What cs_run_sync found. */
typedef struct cs_sync_result {
    int running;   /* logs still held by a live process */
    int ingested;  /* logs ingested now */
    int failed;    /* logs that could not be read at all */
    uint64_t bad_records;
    char message[256]; /* the first failure, if any */
} cs_sync_result;

/* Bring run.db of `rundir` up to date: every log whose writer is gone
 * (its lock is free) is ingested as recovered. Logs of live processes are
 * left alone and counted. A damaged log is reported in `out`, not fatal. */
CS_EXPORT int cs_run_sync(const char *rundir, cs_sync_result *out /* OUT */);

/* Create run.db in `rundir` before anything runs, describing the run by
 * the `command` the user gave (as `callscope run` does). A run that then
 * records nothing is still a valid, empty run. The first description
 * stays (the ranks of a job all describe their shared run). */
CS_EXPORT int cs_run_describe(const char *rundir, const char *command, const char *cwd);

/* Set meta row `key` of run.db in `rundir` (kept if it exists, unless
 * `replace`): "python" (the version), "options" (of callscope run). */
CS_EXPORT int cs_run_set_meta(const char *rundir, const char *key, const char *value,
                              int replace);

/* Record in run.db of `rundir` that child `pid` of this process ended
 * with exit code `code` (>= 0) or by signal -`code`. */
CS_EXPORT int cs_run_record_exit(const char *rundir, int64_t pid, int64_t code);

/* The hidden file in a run directory whose lock marks the one process
 * merging logs into run.db at a time (see cs_run_finish). */
#define CS_MERGE_LOCK ".merge.lock"

/* At the end of a process: its log is closed and its lock released. If no
 * other process is merging logs into the run's run.db, become the merger:
 * ingest every log whose writer is gone, this process's own included, and
 * set meta "python" to `python` unless set (NULL: leave it). If another
 * process is merging, return at once: that one takes this log too, for a
 * merger looks again after it lets go of the lock. So the processes of a
 * job never queue for run.db at exit, and the last one out leaves the run
 * complete. `out` sums what this process merged. */
CS_EXPORT int cs_run_finish(const char *rundir, const char *python,
                            cs_sync_result *out /* OUT */);

/* The run directories below `root`, oldest first. *dirs is an array of
 * paths; free it with cs_run_list_free(). */
CS_EXPORT int cs_run_list(const char *root, char ***dirs /* OUT */, size_t *n /* OUT */);
CS_EXPORT void cs_run_list_free(char **dirs, size_t n);

typedef enum cs_run_state {
    CS_RUN_EMPTY = 0,     /* nothing recorded yet */
    CS_RUN_RUNNING = 1,   /* a writer is alive */
    CS_RUN_COMPLETE = 2,  /* every process closed its log */
    CS_RUN_RECOVERED = 3, /* some process died and its log was recovered */
} cs_run_state;

CS_EXPORT const char *cs_run_state_name(cs_run_state s);

/* One row of `callscope info`. Strings are owned; free with
 * cs_run_summary_free(). */
typedef struct cs_run_summary {
    char *dir;
    char *command;
    uint64_t start_wall_ns; /* 0 when unknown */
    uint64_t duration_ns;
    uint64_t processes, threads, calls, errors, functions;
    uint64_t disk_bytes;
    cs_run_state state;
} cs_run_summary;

/* Summarise the run in `rundir`. Does not ingest; call cs_run_sync first. */
CS_EXPORT int cs_run_summarize(const char *rundir, cs_run_summary *out /* OUT */);
CS_EXPORT void cs_run_summary_free(cs_run_summary *s);

/* Append `s` to `b` as a JSON string literal. */
void cs__json_str(cs_buf *b, const char *s, size_t n);

#endif /* CS_STORE_H */
