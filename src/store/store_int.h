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

#endif
