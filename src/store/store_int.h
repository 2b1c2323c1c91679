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

#endif
