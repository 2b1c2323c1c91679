/* test.h -- the C test runner's assertions. Each prints file:line and both
 * values, and fails the current test. */
#ifndef CS_TEST_H
#define CS_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern int cs_test_failed;

#define ASSERT_TRUE(c)                                                                      \
    do {                                                                                    \
        if (!(c)) {                                                                         \
            fprintf(stderr, "%s:%d: ASSERT_TRUE(%s) failed\n", __FILE__, __LINE__, #c);     \
            cs_test_failed = 1;                                                             \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define ASSERT_EQ(a, b)                                                                     \
    do {                                                                                    \
        long long va_ = (long long)(a), vb_ = (long long)(b);                               \
        if (va_ != vb_) {                                                                   \
            fprintf(stderr, "%s:%d: ASSERT_EQ(%s, %s) failed: %lld != %lld\n", __FILE__,    \
                    __LINE__, #a, #b, va_, vb_);                                            \
            cs_test_failed = 1;                                                             \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                 \
    do {                                                                                    \
        const char *sa_ = (a), *sb_ = (b);                                                  \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                          \
            fprintf(stderr, "%s:%d: ASSERT_STR_EQ(%s, %s) failed: \"%s\" != \"%s\"\n",      \
                    __FILE__, __LINE__, #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)"); \
            cs_test_failed = 1;                                                             \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define ASSERT_OK(e) ASSERT_EQ((e), 0)

/* A fresh temporary directory for the test; removed by the runner. */
const char *test_tmpdir(void);
/* helpers.c: open a log in `dir` as the extension does (NULL on failure);
 * write a function definition; close the log and ingest it into run.db. */
struct cs_tstate;
struct cs_ingest_result;
struct cs_tstate *th_open_log(const char *dir);
void th_def_func(struct cs_tstate *t, uint32_t id, const char *module, const char *qualname,
                 uint32_t line);
int th_close_and_ingest(const char *dir, struct cs_ingest_result *r);
/* The first log in `dir` whose name starts with `prefix` ("" for any), or
 * NULL. Caller frees with cs__free(). */
char *th_find_log(const char *dir, const char *prefix);

/* Query one integer from an SQLite database file. */
long long test_db_int(const char *dbpath, const char *sql);

#define TEST_LIST(X)                                                                        \
    X(core_errors)                                                                          \
    X(core_alloc_fail)                                                                      \
    X(core_buf)                                                                             \
    X(core_clock)                                                                           \
    X(core_fast_clock)                                                                      \
    X(core_utf8)                                                                            \
    X(core_fmt)                                                                             \
    X(log_roundtrip)                                                                        \
    X(log_threads_exact)                                                                    \
    X(log_torn_tail)                                                                        \
    X(log_corrupt_record)                                                                   \
    X(log_bad_header)                                                                       \
    X(log_var_records)                                                                      \
    X(log_fork_child_own_log)                                                               \
    X(log_named_only_when_locked)                                                           \
    X(log_crash_kill9)                                                                      \
    X(log_async_suspend)                                                                    \
    X(log_random_damage)                                                                    \
    X(store_ingest_nesting)                                                                 \
    X(store_ingest_idempotent)                                                              \
    X(store_not_a_db)                                                                       \
    X(store_newer_schema)                                                                   \
    X(store_stats)                                                                          \
    X(store_stats_percentiles)                                                              \
    X(store_ids_entry_order)                                                                \
    X(store_tree)                                                                           \
    X(store_tree_killed)                                                                    \
    X(store_same_pid_two_hosts)                                                             \
    X(run_create_unique)                                                                    \
    X(select_patterns)                                                                      \
    X(select_bad_patterns)                                                                  \
    X(run_resolve)                                                                          \
    X(value_check_and_preview)                                                              \
    X(value_hash)                                                                           \
    X(store_values)                                                                         \
    X(digits_quantiles)                                                                     \
    X(digits_estimators)                                                                    \
    X(value_numbers)                                                                        \
    X(compare_gates)

#define DECLARE(name) void test_##name(void);
TEST_LIST(DECLARE)
#undef DECLARE

#endif
