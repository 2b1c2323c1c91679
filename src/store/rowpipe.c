/* rowpipe.c -- call rows handed to a writer thread (see rowpipe.h). */
#include "rowpipe.h"

#include "cs_core.h"
#include "store_int.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define STMT_ROWS 128   /* rows per INSERT statement */
#define BATCH 1024      /* rows handed over at a time */
#define NBATCH 4        /* batches in flight */

struct cs__rowpipe {
    sqlite3 *db;
    sqlite3_stmt *one, *many;
    int64_t (*map)(void *, uint32_t);
    void *ctx;
    int64_t *top; /* the highest id in the calls table */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cs__row *bufs[NBATCH];
    int fill[NBATCH];
    int head, ready; /* writer side: next batch to write, batches queued */
    int cur, n;      /* ingest side: batch being filled, rows in it */
    int done, err;
    char msg[256];
};

/* A row whose id is one past the highest in the table gets a NULL id:
 * SQLite then appends it with that same id, without the lookup that an
 * explicit id costs (a quarter of the insert). Rows come in the order
 * calls end, so most do: only a caller comes after its callees. */
static void
bind_row(sqlite3_stmt *st, int base, const cs__row *r, int64_t *top)
{
    if (r->v[0] == *top + 1) {
        sqlite3_bind_null(st, base + 1);
        *top = r->v[0];
    } else {
        sqlite3_bind_int64(st, base + 1, r->v[0]);
        if (r->v[0] > *top)
            *top = r->v[0];
    }
    for (int i = 1; i < CS_ROW_COLS - 1; i++) {
        if (r->null & (1u << i))
            sqlite3_bind_null(st, base + i + 1);
        else
            sqlite3_bind_int64(st, base + i + 1, r->v[i]);
    }
    sqlite3_bind_text(st, base + CS_ROW_COLS, r->status, -1, SQLITE_STATIC);
}

static int
write_batch(cs__rowpipe *p, cs__row *rows, int n)
{
    for (int i = 0; i < n; i++) {
        if (rows[i].null & (1u << 2))
            continue;
        int64_t f = p->map(p->ctx, (uint32_t)rows[i].v[2]);
        rows[i].v[2] = f;
        if (f == 0)
            rows[i].null |= 1u << 2;
    }
    int at = 0;
    while (at < n) {
        int per = n - at >= STMT_ROWS ? STMT_ROWS : 1;
        sqlite3_stmt *st = per == STMT_ROWS ? p->many : p->one;
        sqlite3_reset(st);
        for (int k = 0; k < per; k++)
            bind_row(st, k * CS_ROW_COLS, &rows[at + k], p->top);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) {
            snprintf(p->msg, sizeof p->msg, "%s", sqlite3_errmsg(p->db));
            return rc == SQLITE_BUSY ? CS_EBUSY : CS_EDB;
        }
        at += per;
    }
    return CS_OK;
}

static void *
writer(void *arg)
{
    cs__rowpipe *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->ready == 0 && !p->done)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->ready == 0)
            break;
        int idx = p->head;
        pthread_mutex_unlock(&p->mu);
        int rc = p->err ? p->err : write_batch(p, p->bufs[idx], p->fill[idx]);
        pthread_mutex_lock(&p->mu);
        if (rc != CS_OK && !p->err)
            p->err = rc;
        p->head = (p->head + 1) % NBATCH;
        p->ready--;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void
destroy(cs__rowpipe *p)
{
    sqlite3_finalize(p->one);
    sqlite3_finalize(p->many);
    for (int i = 0; i < NBATCH; i++)
        cs__free(p->bufs[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    cs__free(p);
}

int
cs__rowpipe_start(cs__rowpipe **out, sqlite3 *db, int64_t (*map_func)(void *, uint32_t),
                  void *ctx, int64_t *top)
{
    *out = NULL;
    cs__rowpipe *p = cs__calloc(1, sizeof *p);
    if (p == NULL)
        return CS_ENOMEM;
    p->db = db;
    p->map = map_func;
    p->ctx = ctx;
    p->top = top;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int rc = CS_OK;
    for (int i = 0; i < NBATCH; i++)
        if ((p->bufs[i] = cs__malloc(BATCH * sizeof(cs__row))) == NULL)
            rc = CS_ENOMEM;
    static const char head[] = "INSERT INTO calls(id, parent, function, thread, start_ns, end_ns,"
                               " wall_ns, self_ns, cpu_ns, rss_delta, peak_rss, recursive, status)"
                               " VALUES";
    static const char one[] = "(?,?,?,?,?,?,?,?,?,?,?,?,?)";
    cs_buf sql;
    cs_buf_init(&sql);
    cs_buf_puts(&sql, head);
    for (int i = 0; i < STMT_ROWS; i++)
        cs_buf_printf(&sql, "%s%s", i ? "," : "", one);
    if (rc == CS_OK && sql.failed)
        rc = CS_ENOMEM;
    if (rc == CS_OK && (sqlite3_prepare_v2(db, sql.data, -1, &p->many, NULL) != SQLITE_OK ||
                        sqlite3_prepare_v2(db, sql.data, (int)(sizeof head - 1 + sizeof one - 1),
                                           &p->one, NULL) != SQLITE_OK))
        rc = CS_EDB;
    cs_buf_free(&sql);
    if (rc == CS_OK && pthread_create(&p->thread, NULL, writer, p) != 0)
        rc = CS_ENOMEM;
    if (rc != CS_OK) {
        if (rc == CS_EDB)
            cs__store_seterr("%s: %s", "run.db", sqlite3_errmsg(db));
        destroy(p);
        return rc;
    }
    *out = p;
    return CS_OK;
}

/* Hand the batch being filled to the writer; wait for a free one. */
static int
publish(cs__rowpipe *p)
{
    pthread_mutex_lock(&p->mu);
    p->fill[p->cur] = p->n;
    p->ready++;
    pthread_cond_broadcast(&p->cv);
    while (p->ready == NBATCH && !p->err)
        pthread_cond_wait(&p->cv, &p->mu);
    int err = p->err;
    pthread_mutex_unlock(&p->mu);
    p->cur = (p->cur + 1) % NBATCH;
    p->n = 0;
    return err;
}

int
cs__rowpipe_push(cs__rowpipe *p, const cs__row *r)
{
    p->bufs[p->cur][p->n++] = *r;
    return p->n == BATCH ? publish(p) : CS_OK;
}

int
cs__rowpipe_finish(cs__rowpipe *p, const char *dbpath)
{
    if (p == NULL)
        return CS_OK;
    if (p->n > 0)
        publish(p);
    pthread_mutex_lock(&p->mu);
    p->done = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    int rc = p->err;
    if (rc != CS_OK)
        cs__store_seterr("%s: %s", dbpath, p->msg);
    destroy(p);
    return rc;
}
