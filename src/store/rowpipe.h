/* rowpipe.h -- private to the store: call rows handed to a writer thread.
 *
 * Ingest is bound by SQLite. Decoding the log and matching calls run in
 * the ingesting thread while a second thread, the only user of the
 * database connection until cs__rowpipe_finish(), inserts the rows, 32
 * per INSERT statement. */
#ifndef CS_ROWPIPE_H
#define CS_ROWPIPE_H

#include <sqlite3.h>
#include <stdint.h>

#define CS_ROW_COLS 13

/* One row of the calls table. Column 3 (function) holds the log's local
 * function id; the writer maps it with `map_func`. */
typedef struct cs__row {
    int64_t v[CS_ROW_COLS - 1]; /* id .. peak_rss, recursive */
    unsigned null;              /* bit i: column i+1 is NULL */
    const char *status;         /* static string */
} cs__row;

typedef struct cs__rowpipe cs__rowpipe;

/* Start the writer thread on `db`. `map_func(ctx, local)` gives the
 * functions.id of a local function id (0 for none); it runs in the writer
 * thread and may use `db`. `*top` is the highest id in the calls table
 * (0 when empty); the writer keeps it so until cs__rowpipe_finish(), and
 * nothing else may insert calls meanwhile. Every row must carry an id. */
int cs__rowpipe_start(cs__rowpipe **out, sqlite3 *db, int64_t (*map_func)(void *, uint32_t),
                      void *ctx, int64_t *top);

/* Queue one row (copied). Returns CS_OK, or the writer's error. */
int cs__rowpipe_push(cs__rowpipe *p, const cs__row *r);

/* Write what is queued, stop the thread and free the pipe (NULL is a
 * no-op). Returns the writer's first error; its message goes to the
 * store's last error of the calling thread. */
int cs__rowpipe_finish(cs__rowpipe *p, const char *dbpath);

#endif
