/* store_int.h -- private to the store. */
#ifndef CS_STORE_INT_H
#define CS_STORE_INT_H

#include "cs_store.h"

struct cs_store {
    sqlite3 *db;
    char *path;
};

void cs__store_seterr(const char *fmt, const char *a, const char *b);
int cs__store_exec(cs_store *s, const char *sql);
/* Insert or replace the exits row of child `pid` of (`host`, `ppid`):
 * `code` >= 0 is an exit code, < 0 minus a signal. Returns an SQLite code. */
int cs__store_put_exit(sqlite3 *db, const char *host, int64_t ppid, int64_t pid, int64_t code);

/* One tree region of a thread's calling-context tree, as the log reader
 * gives it (a CS_EV_TREE body: its header, then its used node slots). */
typedef struct cs__tree_part {
    const char *body;
    size_t len;
} cs__tree_part;

/* Store the calling-context tree of one thread (`thread`, a threads.id of
 * `process`) from its `n` regions, in any order: rows of the tree table,
 * and a profile row per function. `func_of(ctx, local)` maps the log's
 * function ids to functions.id (0: unknown). *unfinished counts the calls
 * found open in a tree its process did not close. */
int cs__store_tree(cs_store *s, int64_t process, int64_t thread, const cs__tree_part *parts,
                   size_t n, int64_t (*func_of)(void *, uint32_t), void *ctx,
                   uint64_t *unfinished /* OUT */);

#endif
