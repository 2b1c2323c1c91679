/* test_value.c -- the value encoding (validation, previews, the blob
 * hash) and the storing of captured values: args, results, blobs split
 * over records, torn blobs, signatures. */
#include "test.h"

#include "cs_log.h"
#include "cs_store.h"
#include "cs_value.h"

#include <sqlite3.h>
#include <stdlib.h>

/* (7, 2.5, 'a\'b', [None, True], {'k': b'\x01'}, <ndarray <f8 (2, 3)>,
 *  'xyz'...<truncated from 10>, <redacted>, <not captured: 'boom'>,
 *  <mod.T at 0x10>, <mod.P>) */
static void
sample(cs_buf *b)
{
    cs_val_tag(b, CS_V_TUPLE);
    cs_val_u32(b, 11);
    cs_val_tag(b, CS_V_INT);
    cs_val_u64(b, 7);
    double d = 2.5;
    cs_val_tag(b, CS_V_FLOAT);
    cs_buf_append(b, &d, 8);
    cs_val_tag(b, CS_V_STR);
    cs_val_data(b, "a'b", 3);
    cs_val_tag(b, CS_V_LIST);
    cs_val_u32(b, 2);
    cs_val_tag(b, CS_V_NONE);
    cs_val_tag(b, CS_V_TRUE);
    cs_val_tag(b, CS_V_DICT);
    cs_val_u32(b, 1);
    cs_val_tag(b, CS_V_STR);
    cs_val_data(b, "k", 1);
    cs_val_tag(b, CS_V_BYTES);
    cs_val_data(b, "\x01", 1);
    cs_val_tag(b, CS_V_ARRAY);
    cs_val_name(b, "<f8", 3);
    cs_val_u8(b, 2);
    cs_val_u64(b, 2);
    cs_val_u64(b, 3);
    cs_val_u8(b, 'C');
    cs_val_blobref(b, 0x1234, 48);
    cs_val_tag(b, CS_V_TRUNC);
    cs_val_u64(b, 10);
    cs_val_tag(b, CS_V_STR);
    cs_val_data(b, "xyz", 3);
    cs_val_tag(b, CS_V_REDACTED);
    cs_val_tag(b, CS_V_FAILED);
    cs_val_data(b, "boom", 4);
    cs_val_tag(b, CS_V_IDENT);
    cs_val_name(b, "mod.T", 5);
    cs_val_u64(b, 16);
    cs_val_tag(b, CS_V_PICKLE);
    cs_val_name(b, "mod.P", 5);
    cs_val_data(b, "\x80\x04N.", 4);
}

void
test_value_check_and_preview(void)
{
    cs_buf b, out;
    cs_buf_init(&b);
    cs_buf_init(&out);
    sample(&b);
    ASSERT_TRUE(!b.failed);
    ASSERT_OK(cs_value_check(b.data, b.len));
    cs_value_preview(b.data, b.len, &out, 1000);
    ASSERT_STR_EQ(out.data, "(7, 2.5, 'a\\'b', [None, True], {'k': b'\\x01'}, <ndarray <f8 (2, 3)>,"
                            " 'xyz'...<truncated from 10>, <redacted>, <not captured: 'boom'>,"
                            " <mod.T at 0x10>, <mod.P>)");
    /* a short budget cuts the preview, and it stays well-formed */
    out.len = 0;
    cs_value_preview(b.data, b.len, &out, 12);
    ASSERT_TRUE(strstr(out.data, "...") != NULL);
    ASSERT_TRUE(out.len < 60);

    /* every proper prefix is rejected, and previews as damaged */
    for (size_t n = 0; n < b.len; n++) {
        ASSERT_EQ(cs_value_check(b.data, n), CS_EFORMAT);
        out.len = 0;
        cs_value_preview(b.data, n, &out, 1000);
        ASSERT_STR_EQ(out.data, "<damaged>");
    }
    /* trailing bytes too */
    cs_buf_append(&b, "", 1);
    ASSERT_EQ(cs_value_check(b.data, b.len), CS_EFORMAT);

    /* flipped bytes never read out of bounds (the sanitizers watch) */
    srand(7);
    for (int k = 0; k < 2000; k++) {
        char copy[512];
        size_t n = b.len - 1 < sizeof copy ? b.len - 1 : sizeof copy;
        memcpy(copy, b.data, n);
        copy[rand() % n] ^= (char)(1 + rand() % 255);
        (void)cs_value_check(copy, n);
        out.len = 0;
        cs_value_preview(copy, n, &out, 200);
        ASSERT_TRUE(out.len > 0);
    }

    /* nesting deeper than the limit is rejected; a huge count too */
    cs_buf deep;
    cs_buf_init(&deep);
    for (int i = 0; i < CS_VAL_MAX_DEPTH + 2; i++) {
        cs_val_tag(&deep, CS_V_LIST);
        cs_val_u32(&deep, 1);
    }
    cs_val_tag(&deep, CS_V_NONE);
    ASSERT_EQ(cs_value_check(deep.data, deep.len), CS_EFORMAT);
    deep.len = 0;
    cs_val_tag(&deep, CS_V_LIST);
    cs_val_u32(&deep, 0xfffffff0u);
    cs_val_tag(&deep, CS_V_NONE);
    ASSERT_EQ(cs_value_check(deep.data, deep.len), CS_EFORMAT);
    unsigned char unknown = CS_V__MAX;
    ASSERT_EQ(cs_value_check(&unknown, 1), CS_EFORMAT);
    cs_buf_free(&deep);
    cs_buf_free(&b);
    cs_buf_free(&out);
}

void
test_value_hash(void)
{
    unsigned char a[100], c[100];
    for (int i = 0; i < 100; i++)
        a[i] = c[i] = (unsigned char)(i * 7);
    for (size_t n = 0; n <= 100; n++) {
        ASSERT_EQ(cs_hash64(a, n), cs_hash64(c, n));
        if (n > 0) {
            /* a change in any byte, at any alignment, changes the hash */
            for (size_t i = 0; i < n; i++) {
                c[i] ^= 1;
                ASSERT_TRUE(cs_hash64(a, n) != cs_hash64(c, n));
                c[i] ^= 1;
            }
            ASSERT_TRUE(cs_hash64(a, n) != cs_hash64(a, n - 1));
        }
    }
    ASSERT_EQ(cs_value_hash(a, 50), cs_hash64(a, 50));
}

/* An encoded value: a tuple of one int. */
static size_t
small_value(char *out, int64_t v)
{
    cs_buf b;
    cs_buf_init(&b);
    cs_val_tag(&b, CS_V_TUPLE);
    cs_val_u32(&b, 1);
    cs_val_tag(&b, CS_V_INT);
    cs_val_u64(&b, (uint64_t)v);
    memcpy(out, b.data, b.len);
    size_t n = b.len;
    cs_buf_free(&b);
    return n;
}

void
test_store_values(void)
{
    const char *dir = test_tmpdir();
    cs_tstate *t = th_open_log(dir);
    ASSERT_TRUE(t != NULL);
    th_def_func(t, 1, "m", "f", 3);
    char sig[64];
    size_t sn = small_value(sig, 0);
    cs_log_put_var(t, CS_VAR_SIG, 1, sig, sn);

    /* call 1: a 3 MiB blob: more than a chunk, in a region of its own */
    size_t big = 3u << 20;
    unsigned char *data = malloc(big);
    ASSERT_TRUE(data != NULL);
    for (size_t i = 0; i < big; i++)
        data[i] = (unsigned char)(i * 31 + (i >> 12));
    uint64_t h = cs_hash64(data, big);
    ASSERT_TRUE(cs_log_put_blob(t, h, data, big));
    cs_buf v;
    cs_buf_init(&v);
    cs_val_tag(&v, CS_V_BYTES);
    cs_val_blobref(&v, h, big);
    uint64_t s1 = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
    cs_log_put_var(t, CS_VAR_ARGS, s1 | ((uint64_t)t->stream << CS_SEQ_BITS), v.data, v.len);
    char res[64];
    size_t rn = small_value(res, 42);
    cs_log_put_var(t, CS_VAR_RESULT, s1 | ((uint64_t)t->stream << CS_SEQ_BITS), res, rn);
    cs_log_exit(t, s1, CS_STATUS_OK, cs_clock_mono_ns());

    /* call 2: a blob whose bytes do not match its hash (as when the
     * writer died before all of them were written) */
    ASSERT_TRUE(cs_log_put_blob(t, h ^ 1, data, 4096));
    uint64_t s2 = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
    char av[64];
    size_t an = small_value(av, -5);
    cs_log_put_var(t, CS_VAR_ARGS, s2 | ((uint64_t)t->stream << CS_SEQ_BITS), av, an);
    cs_log_exit(t, s2, CS_STATUS_OK, cs_clock_mono_ns());
    /* call 3: a damaged value is stored as it is, previewed as damaged */
    uint64_t s3 = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
    cs_log_put_var(t, CS_VAR_RESULT, s3 | ((uint64_t)t->stream << CS_SEQ_BITS), "\x09\xff", 2);
    cs_log_exit(t, s3, CS_STATUS_OK, cs_clock_mono_ns());
    cs_buf_free(&v);

    cs_ingest_result r;
    int irc = th_close_and_ingest(dir, &r);
    if (irc != CS_OK)
        fprintf(stderr, "ingest: %s\n", cs_store_last_error());
    ASSERT_OK(irc);
    ASSERT_EQ(r.torn_blobs, 1);
    ASSERT_EQ(r.bad_records, 0);
    ASSERT_EQ(r.calls, 3);
    char *db = cs__path_join(dir, "run.db");
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls"), 3);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM args"), 2);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM results"), 2);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM blobs"), 1); /* the torn one is gone */
    ASSERT_EQ(test_db_int(db, "SELECT size FROM blobs"), (long long)big);
    ASSERT_EQ(test_db_int(db, "SELECT length(data) FROM blobs"), (long long)big);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM functions WHERE signature IS NOT NULL"), 1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM results WHERE text = '<damaged>'"), 1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM results WHERE text = '(42,)'"), 1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM args WHERE text = '(-5,)'"), 1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM args"
                              " WHERE text = '<bytes of 3145728 bytes>'"),
              1);

    /* the blob's bytes are the ones written */
    sqlite3 *con = NULL;
    ASSERT_EQ(sqlite3_open_v2(db, &con, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    ASSERT_EQ(sqlite3_prepare_v2(con, "SELECT id, data FROM blobs", -1, &st, NULL), SQLITE_OK);
    ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_EQ(sqlite3_column_int64(st, 0), (long long)h);
    ASSERT_EQ(sqlite3_column_bytes(st, 1), (long long)big);
    ASSERT_TRUE(memcmp(sqlite3_column_blob(st, 1), data, big) == 0);
    sqlite3_finalize(st);
    sqlite3_close(con);
    free(data);
    cs__free(db);
}
