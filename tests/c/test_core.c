/* test_core.c -- errors, allocation, buffers, the clock, formatting. */
#include "test.h"

#include "cs_core.h"

#include <errno.h>

void
test_core_errors(void)
{
    ASSERT_STR_EQ(cs_strerror(CS_OK), "success");
    ASSERT_STR_EQ(cs_strerror(CS_ENOMEM), "out of memory");
    ASSERT_STR_EQ(cs_strerror(-999), "unknown error");
    ASSERT_EQ(cs_from_errno(ENOENT), CS_ENOENT);
    /* the real cause, named (a full disk is not a full buffer) */
    ASSERT_EQ(cs_from_errno(ENOSPC), CS_ENOSPC);
    ASSERT_STR_EQ(cs_strerror(cs_from_errno(ENOSPC)), "no space left on device");
    ASSERT_STR_EQ(cs_strerror(cs_from_errno(EROFS)), "read-only file system");
    ASSERT_STR_EQ(cs_strerror(cs_from_errno(EACCES)), "permission denied");
    ASSERT_STR_EQ(cs_strerror(cs_from_errno(EDQUOT)), "disk quota exceeded");
    ASSERT_STR_EQ(cs_strerror(cs_from_errno(ENAMETOOLONG)), "file name too long");
    ASSERT_STR_EQ(cs_strerror(cs_from_errno(ENOTDIR)), "not a directory");
}

void
test_core_alloc_fail(void)
{
    cs_alloc_fail_after(1);
    void *a = cs__malloc(10);
    void *b = cs__malloc(10);
    cs_alloc_fail_after(-1);
    ASSERT_TRUE(a != NULL);
    ASSERT_TRUE(b == NULL);
    cs__free(a);
    cs__free(NULL); /* a no-op */
    cs_buf buf;
    cs_buf_init(&buf);
    cs_alloc_fail_after(0);
    cs_buf_puts(&buf, "x");
    cs_alloc_fail_after(-1);
    ASSERT_TRUE(buf.failed);
    cs_buf_puts(&buf, "y"); /* sticky: still failed, nothing appended */
    ASSERT_EQ(buf.len, 0);
    cs_buf_free(&buf);
}

void
test_core_buf(void)
{
    cs_buf b;
    cs_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        cs_buf_printf(&b, "%d,", i);
    ASSERT_TRUE(!b.failed);
    ASSERT_EQ(b.len, 3890);
    ASSERT_TRUE(strncmp(b.data, "0,1,2,", 6) == 0);
    cs_buf_free(&b);
    ASSERT_TRUE(b.data == NULL);
}

void
test_core_clock(void)
{
    uint64_t a = cs_clock_mono_ns(), b = cs_clock_mono_ns();
    ASSERT_TRUE(b >= a);
    ASSERT_TRUE(cs_clock_wall_ns() > 1600000000ull * 1000000000ull);
    volatile uint64_t x = 0;
    uint64_t c0 = cs_clock_thread_cpu_ns();
    for (int i = 0; i < 1000000; i++)
        x += (uint64_t)i;
    ASSERT_TRUE(cs_clock_thread_cpu_ns() > c0);
    uint64_t rss = 0, peak = 0;
    ASSERT_OK(cs_mem_rss(&rss, &peak));
    ASSERT_TRUE(rss > 0 && peak >= rss / 2);
}

void
test_core_fmt(void)
{
    char b[32];
    ASSERT_STR_EQ(cs_fmt_ns(512, b, sizeof b), "512ns");
    ASSERT_STR_EQ(cs_fmt_ns(1500, b, sizeof b), "1.50us");
    ASSERT_STR_EQ(cs_fmt_ns(2500000, b, sizeof b), "2.50ms");
    ASSERT_STR_EQ(cs_fmt_ns(3000000000ull, b, sizeof b), "3.000s");
    ASSERT_STR_EQ(cs_fmt_bytes(2048, b, sizeof b), "2.0KiB");
}

/* The fast clock agrees with CLOCK_MONOTONIC: never backwards, and a
 * 20 ms interval measured by both differs by less than 0.1% (plus the
 * reads' own length). */
void
test_core_fast_clock(void)
{
    cs_clock_fast_init();
    cs_clock_fast_init(); /* once */
    uint64_t f0 = cs_clock_fast_ns(), m0 = cs_clock_mono_ns(), last = f0;
    while (cs_clock_mono_ns() - m0 < 20000000) {
        uint64_t f = cs_clock_fast_ns();
        ASSERT_TRUE(f >= last);
        last = f;
    }
    uint64_t f1 = cs_clock_fast_ns(), m1 = cs_clock_mono_ns();
    int64_t df = (int64_t)(f1 - f0), dm = (int64_t)(m1 - m0);
    int64_t diff = df > dm ? df - dm : dm - df;
    ASSERT_TRUE(diff < dm / 1000 + 20000);
    /* and it tells the same time as the monotonic clock, near enough */
    int64_t off = (int64_t)(cs_clock_fast_ns() - cs_clock_mono_ns());
    ASSERT_TRUE(off < 1000000 && off > -1000000);
}

void
test_core_utf8(void)
{
    const unsigned char ok[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    ASSERT_EQ(cs_utf8_len(ok, 1), 1);
    ASSERT_EQ(cs_utf8_len(ok + 1, 2), 2);     /* é */
    ASSERT_EQ(cs_utf8_len(ok + 3, 3), 3);     /* € */
    ASSERT_EQ(cs_utf8_len(ok + 6, 4), 4);     /* 😀 */
    ASSERT_EQ(cs_utf8_len(ok + 6, 3), 0);     /* cut short */
    const unsigned char surrogate[] = "\xed\xb3\xbf"; /* U+DCFF, lone */
    ASSERT_EQ(cs_utf8_len(surrogate, 3), 0);
    const unsigned char overlong[] = "\xc0\xaf\xe0\x80\xaf";
    ASSERT_EQ(cs_utf8_len(overlong, 2), 0);
    ASSERT_EQ(cs_utf8_len(overlong + 2, 3), 0);
    const unsigned char stray[] = "\x80\xff\xf5\x80\x80\x80";
    ASSERT_EQ(cs_utf8_len(stray, 1), 0);
    ASSERT_EQ(cs_utf8_len(stray + 1, 1), 0);
    ASSERT_EQ(cs_utf8_len(stray + 2, 4), 0); /* past U+10FFFF */
}
