/* test_log.c -- the writer and the reader, through real files: threads,
 * torn and corrupted logs, fork, and a real SIGKILL. */
#include "test.h"

#include "cs_log.h"
#include "cs_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define open_log th_open_log
#define close_and_ingest th_close_and_ingest

static void
def_func(cs_tstate *t, uint32_t id, const char *qualname)
{
    th_def_func(t, id, "mod", qualname, 10 + id);
}

static char *
db_of(const char *dir)
{
    return cs__path_join(dir, CS_DB_NAME);
}

void
test_log_roundtrip(void)
{
    const char *dir = test_tmpdir();
    cs_tstate *t = open_log(dir);
    ASSERT_TRUE(t != NULL);
    def_func(t, 1, "outer");
    def_func(t, 2, "inner");
    uint64_t ts = cs_clock_mono_ns();
    for (int i = 0; i < 100; i++) {
        uint64_t a = cs_log_enter(t, 1, 0, ts++);
        uint64_t b = cs_log_enter(t, 2, 0, ts++);
        cs_log_exit(t, b, CS_STATUS_OK, ts += 10);
        cs_log_exit(t, a, CS_STATUS_OK, ts += 5);
    }
    cs_ingest_result r;
    ASSERT_OK(close_and_ingest(dir, &r));
    ASSERT_EQ(r.calls, 200);
    ASSERT_EQ(r.unfinished, 0);
    ASSERT_EQ(r.bad_records, 0);
    ASSERT_TRUE(r.clean);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls"), 200);
    /* every inner call's parent is an outer call */
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls c JOIN calls p ON p.id = c.parent"
                              " JOIN functions f ON f.id = p.function"
                              " WHERE f.qualname = 'outer'"),
              100);
    ASSERT_EQ(test_db_int(db, "SELECT min(wall_ns) FROM calls c JOIN functions f"
                              " ON f.id = c.function WHERE qualname = 'inner'"),
              11);
    ASSERT_EQ(test_db_int(db, "SELECT max(self_ns) FROM calls c JOIN functions f"
                              " ON f.id = c.function WHERE qualname = 'outer'"),
              6);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM processes WHERE state = 'complete'"
                              " AND argv = '[\"prog\",\"--flag\"]'"),
              1);
    /* the log is gone once ingested */
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM threads WHERE name = 'MainThread'"), 1);
    cs__free(db);
}

#define NTHREADS 8
#define NCALLS 50000

static void *
thread_body(void *arg)
{
    char name[16];
    snprintf(name, sizeof name, "worker-%d", (int)(intptr_t)arg);
    cs_tstate *t = cs_log_tstate_slow(name, (uint64_t)(intptr_t)arg + 100);
    if (t == NULL)
        return (void *)1;
    for (int i = 0; i < NCALLS; i++) {
        uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
    }
    return NULL;
}

void
test_log_threads_exact(void)
{
    const char *dir = test_tmpdir();
    setenv("CALLSCOPE_CHUNK_SIZE", "8192", 1); /* many chunk switches */
    cs_tstate *t = open_log(dir);
    unsetenv("CALLSCOPE_CHUNK_SIZE");
    ASSERT_TRUE(t != NULL);
    def_func(t, 1, "work");
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        ASSERT_OK(pthread_create(&th[i], NULL, thread_body, (void *)(intptr_t)i));
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        ASSERT_TRUE(ret == NULL);
    }
    cs_ingest_result r;
    ASSERT_OK(close_and_ingest(dir, &r));
    ASSERT_EQ(r.calls, NTHREADS * NCALLS);
    ASSERT_EQ(r.bad_records, 0);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls"), NTHREADS * NCALLS);
    ASSERT_EQ(test_db_int(db, "SELECT count(DISTINCT id) FROM calls"), NTHREADS * NCALLS);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM (SELECT thread, count(*) n FROM calls"
                              " GROUP BY thread HAVING n = 50000)"),
              NTHREADS);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread"
                              " WHERE t.name LIKE 'worker-%'"),
              NTHREADS * NCALLS);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE parent IS NOT NULL"), 0);
    cs__free(db);
}

/* Write `n` finished calls and one open call, then die by SIGKILL, in a
 * child process. Returns the child's log path through the run dir. */
static void
crash_child(const char *dir, int n)
{
    pid_t pid = fork();
    if (pid == 0) {
        cs_tstate *t = open_log(dir);
        if (t == NULL)
            _exit(3);
        def_func(t, 1, "step");
        for (int i = 0; i < n; i++) {
            uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
            cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
        }
        cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        raise(SIGKILL);
        _exit(4);
    }
    int status;
    waitpid(pid, &status, 0);
}

static char *
find_log(const char *dir)
{
    return th_find_log(dir, "");
}

/* A log shows under its name only once its writer holds its lock, and
 * the hidden file it is made under is gone by then; such a file left by a
 * writer that died while making it is no log to a reader. */
void
test_log_named_only_when_locked(void)
{
    const char *dir = test_tmpdir();
    cs_tstate *t = th_open_log(dir);
    ASSERT_TRUE(t != NULL);
    char *log = find_log(dir);
    ASSERT_TRUE(log != NULL);
    int fd = open(log, O_RDONLY);
    ASSERT_TRUE(fd >= 0);
    ASSERT_TRUE(flock(fd, LOCK_EX | LOCK_NB) != 0); /* the writer holds it */
    close(fd);
    char *hidden = th_find_log(dir, "."); /* no ".<name>.cslog" file */
    ASSERT_TRUE(hidden == NULL);
    DIR *d = opendir(dir);
    struct dirent *e;
    int names = 0;
    while ((e = readdir(d)) != NULL)
        names += e->d_name[0] != '.';
    closedir(d);
    ASSERT_EQ(names, 1); /* the log alone: the ".new" name is removed */
    cs__free(log);
    ASSERT_OK(th_close_and_ingest(dir, NULL));

    /* what a writer killed between making and naming its log leaves */
    char *left = cs__path_join(dir, ".vm-7-1f.cslog.new");
    FILE *f = fopen(left, "w");
    ASSERT_TRUE(f != NULL);
    fputs("CSLOG, cut short", f);
    fclose(f);
    crash_child(dir, 10);
    cs_sync_result sr;
    ASSERT_OK(cs_run_sync(dir, &sr));
    ASSERT_EQ(sr.ingested, 1);
    ASSERT_EQ(sr.failed, 0);
    ASSERT_EQ(sr.running, 0);
    ASSERT_TRUE(access(left, F_OK) == 0); /* left alone */
    cs__free(left);
}

void
test_log_crash_kill9(void)
{
    const char *dir = test_tmpdir();
    crash_child(dir, 1000);
    char *log = find_log(dir);
    ASSERT_TRUE(log != NULL);
    cs__free(log);
    cs_sync_result sr;
    ASSERT_OK(cs_run_sync(dir, &sr));
    ASSERT_EQ(sr.ingested, 1);
    ASSERT_EQ(sr.running, 0);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'ok'"), 1000);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'unfinished'"), 1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'unfinished'"
                              " AND end_ns IS NULL"),
              1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM processes WHERE state = 'killed'"), 1);
    cs__free(db);
    log = find_log(dir);
    ASSERT_TRUE(log == NULL); /* ingested logs are removed */
}

void
test_log_torn_tail(void)
{
    const char *dir = test_tmpdir();
    crash_child(dir, 100);
    char *log = find_log(dir);
    ASSERT_TRUE(log != NULL);
    /* Find the last written record (the open call's 8-byte ENTER) by
     * scanning the first chunk backwards, then cut inside the record 59
     * before it: that is the EXIT of call 71, so calls 71..100 lose their
     * exits or both records, and call 71 stays open. */
    struct stat st;
    ASSERT_OK(stat(log, &st));
    int fd = open(log, O_RDWR);
    ASSERT_TRUE(fd >= 0);
    uint64_t w = 0;
    off_t last = 0;
    for (off_t off = CS_LOG_HEADER_SIZE + CS_LOG_DEFAULT_CHUNK - 8;
         off >= (off_t)(CS_LOG_HEADER_SIZE + CS_LOG_CHUNK_HEADER); off -= 8) {
        ASSERT_EQ(pread(fd, &w, 8, off), 8);
        if (w != 0) {
            last = off;
            break;
        }
    }
    ASSERT_TRUE(last > 0);
    ASSERT_EQ(w & 0xf, CS_REC_ENTER);
    ASSERT_OK(ftruncate(fd, last - 59 * 8 + 3));
    close(fd);
    cs_sync_result sr;
    ASSERT_OK(cs_run_sync(dir, &sr));
    ASSERT_EQ(sr.ingested, 1);
    char *db = db_of(dir);
    long long ok = test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'ok'");
    long long unf = test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'unfinished'");
    ASSERT_EQ(ok, 70);
    ASSERT_EQ(unf, 1);
    cs__free(db);
    cs__free(log);
}

void
test_log_corrupt_record(void)
{
    const char *dir = test_tmpdir();
    crash_child(dir, 100);
    char *log = find_log(dir);
    ASSERT_TRUE(log != NULL);
    int fd = open(log, O_RDWR);
    ASSERT_TRUE(fd >= 0);
    /* find the 50th ENTER record and flip a bit of its time delta */
    uint64_t w;
    int enters = 0;
    off_t off = CS_LOG_HEADER_SIZE + CS_LOG_CHUNK_HEADER;
    for (;;) {
        ASSERT_EQ(pread(fd, &w, 8, off), 8);
        unsigned kind = (unsigned)(w & 0xf);
        ASSERT_TRUE(kind != CS_REC_NONE);
        if (kind == CS_REC_ENTER && ++enters == 50)
            break;
        off += cs_rec_size(kind);
        if (kind == CS_REC_VAR)
            off += (off_t)((((w >> 20) & 0xffffff) + 7) & ~(uint64_t)7);
    }
    w ^= 1ull << 40;
    ASSERT_EQ(pwrite(fd, &w, 8, off), 8);
    close(fd);
    cs_sync_result sr;
    ASSERT_OK(cs_run_sync(dir, &sr));
    ASSERT_EQ(sr.ingested, 1);
    ASSERT_TRUE(sr.bad_records >= 1);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'ok'"), 49);
    ASSERT_EQ(test_db_int(db, "SELECT bad_records FROM processes"), 1);
    cs__free(db);
    cs__free(log);
}

void
test_log_bad_header(void)
{
    const char *dir = test_tmpdir();
    char *path = cs__path_join(dir, "junk" CS_LOG_SUFFIX);
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("this is not a log at all, just some text that is long enough", f);
    fclose(f);
    cs_scan_info info;
    ASSERT_EQ(cs_log_scan(path, 0, NULL, NULL, &info), CS_EFORMAT);
    cs_log_header h;
    ASSERT_EQ(cs_log_read_header(path, &h), CS_EFORMAT);
    cs_sync_result sr;
    ASSERT_OK(cs_run_sync(dir, &sr));
    ASSERT_EQ(sr.failed, 1);
    ASSERT_TRUE(strstr(sr.message, "not a callscope log") != NULL);
    ASSERT_TRUE(cs__exists(path)); /* left in place, never deleted */
    cs__free(path);
}

void
test_log_var_records(void)
{
    const char *dir = test_tmpdir();
    cs_tstate *t = open_log(dir);
    ASSERT_TRUE(t != NULL);
    def_func(t, 7, "fails");
    uint64_t s = cs_log_enter(t, 7, 0, cs_clock_mono_ns());
    static const char err[] = "ValueError\0bad value\0Traceback (most recent call last):\n";
    cs_log_put_var(t, CS_VAR_ERROR, s, err, sizeof err);
    cs_log_exit(t, s, CS_STATUS_RAISED, cs_clock_mono_ns());
    /* a huge body is cut to what a chunk holds, not dropped */
    size_t big = 3u << 20;
    char *huge = cs__malloc(big);
    ASSERT_TRUE(huge != NULL);
    memset(huge, 'x', big);
    memcpy(huge, "Big\0", 4);
    uint64_t s2 = cs_log_enter(t, 7, 0, cs_clock_mono_ns());
    cs_log_put_var(t, CS_VAR_ERROR, s2, huge, big);
    cs_log_exit(t, s2, CS_STATUS_RAISED, cs_clock_mono_ns());
    cs__free(huge);
    cs_ingest_result r;
    ASSERT_OK(close_and_ingest(dir, &r));
    ASSERT_EQ(r.errors, 2);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM errors WHERE type = 'ValueError' AND"
                              " message = 'bad value' AND traceback LIKE 'Traceback%'"),
              1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM errors WHERE type = 'Big'"), 1);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE status = 'raised'"), 2);
    ASSERT_EQ(test_db_int(db, "SELECT line FROM functions WHERE qualname = 'fails'"), 17);
    cs__free(db);
}

void
test_log_fork_child_own_log(void)
{
    const char *dir = test_tmpdir();
    cs_tstate *t = open_log(dir);
    ASSERT_TRUE(t != NULL);
    def_func(t, 1, "f");
    uint64_t outer = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
    for (int i = 0; i < 10; i++) {
        uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* the parent's mapping is gone; the child opens its own log */
        if (cs_log_tstate() != NULL || cs_log_is_open())
            _exit(10);
        const char *inherited = cs_log_inherited_rundir();
        if (inherited == NULL || strcmp(inherited, dir) != 0)
            _exit(11);
        cs_tstate *c = open_log(inherited);
        if (c == NULL)
            _exit(12);
        def_func(c, 1, "f");
        for (int i = 0; i < 5; i++) {
            uint64_t s = cs_log_enter(c, 1, 0, cs_clock_mono_ns());
            cs_log_exit(c, s, CS_STATUS_OK, cs_clock_mono_ns());
        }
        /* an exit of the call entered before fork names a seq that the
         * child's stream never entered: it is an orphan, not a match */
        cs_log_mark(c, CS_MARK_EXIT, outer, c->stream, CS_STATUS_OK, cs_clock_mono_ns());
        cs_ingest_result r;
        if (close_and_ingest(inherited, &r) != CS_OK || r.calls != 5 || r.orphans != 1)
            _exit(13);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    for (int i = 0; i < 3; i++) {
        uint64_t s = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        cs_log_exit(t, s, CS_STATUS_OK, cs_clock_mono_ns());
    }
    cs_log_exit(t, outer, CS_STATUS_OK, cs_clock_mono_ns());
    cs_ingest_result r;
    ASSERT_OK(close_and_ingest(dir, &r));
    ASSERT_EQ(r.calls, 14);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM processes"), 2);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread JOIN processes p"
             " ON p.id = t.process WHERE p.pid = %d AND p.ppid = %d",
             (int)pid, (int)getpid());
    ASSERT_EQ(test_db_int(db, sql), 5);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM calls c JOIN threads t ON t.id = c.thread JOIN processes p"
             " ON p.id = t.process WHERE p.pid = %d",
             (int)getpid());
    ASSERT_EQ(test_db_int(db, sql), 14);
    ASSERT_EQ(test_db_int(db, "SELECT count(DISTINCT id) FROM calls"), 19);
    cs__free(db);
}

void
test_log_async_suspend(void)
{
    const char *dir = test_tmpdir();
    cs_tstate *t = open_log(dir);
    ASSERT_TRUE(t != NULL);
    def_func(t, 1, "main");
    def_func(t, 2, "gen");
    def_func(t, 3, "other");
    uint64_t ts = 1000;
    uint64_t m = cs_log_enter(t, 1, 0, ts);
    uint64_t g = cs_log_enter(t, 2, CS_FLAG_ASYNC, ts += 10); /* created, suspended */
    cs_log_mark(t, CS_MARK_RESUME, g, t->stream, 0, ts += 10);
    cs_log_mark(t, CS_MARK_SUSPEND, g, t->stream, 0, ts += 100); /* ran 100 */
    uint64_t o = cs_log_enter(t, 3, 0, ts += 10);     /* called by main, not by gen */
    cs_log_exit(t, o, CS_STATUS_OK, ts += 50);
    cs_log_mark(t, CS_MARK_RESUME, g, t->stream, 0, ts += 10);
    cs_log_mark(t, CS_MARK_EXIT, g, t->stream, CS_STATUS_OK, ts += 20); /* ran 20 more */
    cs_log_exit(t, m, CS_STATUS_OK, ts += 10);
    /* a span paused for 1000 */
    uint64_t sp = cs_log_enter(t, 3, CS_FLAG_SPAN, ts += 10);
    cs_log_mark(t, CS_MARK_SUSPEND, sp, t->stream, 0, ts += 40);
    cs_log_mark(t, CS_MARK_RESUME, sp, t->stream, 0, ts += 1000);
    cs_log_mark(t, CS_MARK_EXIT, sp, t->stream, CS_STATUS_OK, ts += 60);
    cs_ingest_result r;
    ASSERT_OK(close_and_ingest(dir, &r));
    ASSERT_EQ(r.calls, 4);
    char *db = db_of(dir);
    ASSERT_EQ(test_db_int(db, "SELECT p.function FROM calls c JOIN calls p ON p.id = c.parent"
                              " WHERE c.function = (SELECT id FROM functions WHERE"
                              " qualname = 'other') AND c.parent IS NOT NULL"),
              test_db_int(db, "SELECT id FROM functions WHERE qualname = 'main'"));
    /* the generator lives from creation to exhaustion; it ran 120 */
    ASSERT_EQ(test_db_int(db, "SELECT wall_ns FROM calls WHERE function ="
                              " (SELECT id FROM functions WHERE qualname = 'gen')"),
              200);
    ASSERT_EQ(test_db_int(db, "SELECT self_ns FROM calls WHERE function ="
                              " (SELECT id FROM functions WHERE qualname = 'gen')"),
              120);
    /* main: 220 wall, minus 120 of gen and 50 of other */
    ASSERT_EQ(test_db_int(db, "SELECT self_ns FROM calls WHERE function ="
                              " (SELECT id FROM functions WHERE qualname = 'main')"),
              50);
    /* paused time is not counted in the span's wall time */
    ASSERT_EQ(test_db_int(db, "SELECT wall_ns FROM calls WHERE parent IS NULL AND function ="
                              " (SELECT id FROM functions WHERE qualname = 'other')"),
              100);
    cs__free(db);
}

/* Damage a real log in many random ways: the reader and the ingest must
 * never crash, never loop, and either store a valid prefix or fail with a
 * clear error. Runs under AddressSanitizer+UBSan in `make test`. */
void
test_log_random_damage(void)
{
    const char *dir = test_tmpdir();
    char *src = cs__path_join(dir, "src");
    ASSERT_TRUE(src != NULL);
    setenv("CALLSCOPE_CHUNK_SIZE", "4096", 1); /* many chunks */
    cs_tstate *t = open_log(src);
    unsetenv("CALLSCOPE_CHUNK_SIZE");
    ASSERT_TRUE(t != NULL);
    def_func(t, 1, "f");
    def_func(t, 2, "g");
    for (int i = 0; i < 3000; i++) {
        uint64_t a = cs_log_enter(t, 1, 0, cs_clock_mono_ns());
        uint64_t b = cs_log_enter(t, 2, i % 7 ? 0 : CS_FLAG_SPAN, cs_clock_mono_ns());
        if (i % 7 == 0) {
            cs_log_mark(t, CS_MARK_SUSPEND, b, t->stream, 0, cs_clock_mono_ns());
            cs_log_mark(t, CS_MARK_RESUME, b, t->stream, 0, cs_clock_mono_ns());
            cs_log_mark(t, CS_MARK_EXIT, b, t->stream, 0, cs_clock_mono_ns());
        } else {
            cs_log_cpu(t, (uint64_t)i);
            cs_log_exit(t, b, CS_STATUS_OK, cs_clock_mono_ns());
        }
        if (i % 100 == 0)
            cs_log_put_var(t, CS_VAR_ERROR, a, "E\0m\0tb", 7);
        cs_log_exit(t, a, i % 100 == 0, cs_clock_mono_ns());
    }
    char *path = NULL;
    ASSERT_OK(cs_log_close(&path));
    cs_log_release();
    cs_log_forget();
    FILE *f = fopen(path, "rb");
    ASSERT_TRUE(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *orig = cs__malloc((size_t)size);
    ASSERT_TRUE(orig != NULL);
    ASSERT_EQ(fread(orig, 1, (size_t)size, f), size);
    fclose(f);
    unsigned seed = 12345;
    int stored = 0, refused = 0;
    for (int round = 0; round < 150; round++) {
        char *copy = cs__malloc((size_t)size);
        ASSERT_TRUE(copy != NULL);
        memcpy(copy, orig, (size_t)size);
        long len = size;
        int flips = 1 + (int)(rand_r(&seed) % 8);
        for (int k = 0; k < flips; k++) {
            long at = (long)(rand_r(&seed) % (unsigned)size);
            if (round % 5 == 0)
                at = (long)(rand_r(&seed) % 4096); /* the file header */
            copy[at] ^= (char)(1 + rand_r(&seed) % 255);
        }
        if (round % 3 == 0)
            len = (long)(rand_r(&seed) % (unsigned)size);
        char rdir[512], lpath[600];
        snprintf(rdir, sizeof rdir, "%s/r%d", dir, round);
        ASSERT_OK(cs_mkdirs(rdir));
        snprintf(lpath, sizeof lpath, "%s/x%s", rdir, CS_LOG_SUFFIX);
        FILE *o = fopen(lpath, "wb");
        ASSERT_TRUE(o != NULL);
        ASSERT_EQ(fwrite(copy, 1, (size_t)len, o), len);
        fclose(o);
        cs__free(copy);
        cs_sync_result sr;
        ASSERT_OK(cs_run_sync(rdir, &sr));
        ASSERT_EQ(sr.ingested + sr.failed, 1);
        if (sr.ingested) {
            stored++;
            char *db = cs__path_join(rdir, CS_DB_NAME);
            long long n = test_db_int(db, "SELECT count(*) FROM calls");
            ASSERT_TRUE(n >= 0 && n <= 6000);
            /* every stored finished call has end >= start */
            ASSERT_EQ(test_db_int(db, "SELECT count(*) FROM calls WHERE end_ns < start_ns"), 0);
            cs__free(db);
        } else {
            refused++;
            ASSERT_TRUE(sr.message[0] != '\0');
        }
        cs_rmtree(rdir);
    }
    ASSERT_TRUE(stored > 50 && refused > 5);
    cs__free(orig);
    cs__free(path);
    cs__free(src);
}
