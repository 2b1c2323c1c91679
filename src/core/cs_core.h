/*
 * cs_core.h -- the contract of callscope's core: error codes, allocation,
 * the clock, and small filesystem helpers shared by every stage.
 *
 * Nothing here includes Python.h. Every function returns an int error code
 * (CS_OK or a negative CS_E* value) unless its comment says otherwise, and
 * none of them calls exit() or abort().
 */
#ifndef CS_CORE_H
#define CS_CORE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CS_EXPORT __attribute__((visibility("default")))
#define CS_LIKELY(x) __builtin_expect(!!(x), 1)
#define CS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CS_EXPORT
#define CS_LIKELY(x) (x)
#define CS_UNLIKELY(x) (x)
#define CS_PRINTF(a, b)
#endif

/* ---- errors -------------------------------------------------------------
 * One list of error codes. CS_OK is 0; failures are negative. */
#define CS_ERRNO_MAP(X)                                                      \
    X(NOMEM, -1, "out of memory")                                            \
    X(IO, -2, "input/output error")                                          \
    X(INVAL, -3, "invalid argument")                                         \
    X(NOENT, -4, "no such file or directory")                                \
    X(EXIST, -5, "already exists")                                           \
    X(FORMAT, -6, "malformed data")                                          \
    X(VERSION, -7, "unsupported format version")                             \
    X(DB, -8, "database error")                                              \
    X(NOTRUN, -9, "not a callscope run")                                     \
    X(BUSY, -10, "in use by a running process")                              \
    X(FULL, -11, "buffer full")                                              \
    X(NOTDB, -12, "not a callscope database")                                \
    X(RANGE, -13, "value out of range")                                      \
    X(ACCES, -14, "permission denied")                                       \
    X(ROFS, -15, "read-only file system")                                    \
    X(NOSPC, -16, "no space left on device")                                 \
    X(DQUOT, -17, "disk quota exceeded")                                     \
    X(NAMETOOLONG, -18, "file name too long")                                \
    X(NOTDIR, -19, "not a directory")

enum {
    CS_OK = 0,
#define CS__ENUM(name, val, msg) CS_E##name = (val),
    CS_ERRNO_MAP(CS__ENUM)
#undef CS__ENUM
};

/* Return a static, human-readable description of the code `err`. */
CS_EXPORT const char *cs_strerror(int err);

/* Map an errno value to the closest CS_E* code. */
CS_EXPORT int cs_from_errno(int e);

/* ---- allocation ----------------------------------------------------------
 * Every allocation of the library goes through these, so tests can count
 * bytes and inject failures. cs__free(NULL) is a no-op. */
void *cs__malloc(size_t n);
void *cs__calloc(size_t count, size_t n);
void *cs__realloc(void *p, size_t n);
void cs__free(void *p);
/* The array `p` of `n` used elements of `size` bytes, with room for one
 * more: `p` itself while n < *cap, else reallocated to twice *cap (or
 * `first` elements) with *cap updated. NULL when memory runs out, with `p`
 * and *cap unchanged. */
void *cs__grow(void *p, size_t n, size_t *cap, size_t size, size_t first);
/* Duplicate `s` (NULL gives NULL). Caller frees with cs__free(). */
char *cs__strdup(const char *s);
/* Duplicate the `n` bytes at `s` and add a NUL. Caller frees with cs__free(). */
char *cs__strndup(const char *s, size_t n);

/* Test hooks: the number of live allocations made through cs__malloc and
 * friends, and a countdown after which allocations fail (-1 disables). */
CS_EXPORT long cs_alloc_live(void);
CS_EXPORT void cs_alloc_fail_after(long n);

/* ---- hashing --------------------------------------------------------------
 * A 64-bit hash of `n` bytes, fast on large buffers (32 bytes per step, in
 * four lanes): checksums of log bodies and the names of stored blobs. Not
 * cryptographic. */
CS_EXPORT uint64_t cs_hash64(const void *p, size_t n);

/* ---- growable byte buffer ------------------------------------------------ */
typedef struct cs_buf {
    char *data; /* NUL-terminated when len > 0; owned */
    size_t len;
    size_t cap;
    int failed; /* sticky: an append ran out of memory */
} cs_buf;

void cs_buf_init(cs_buf *b);
void cs_buf_free(cs_buf *b);
/* The length (1 to 4) of the valid UTF-8 sequence at `s` (`n` bytes
 * left), or 0 if the bytes there are not one: a stray continuation byte,
 * an overlong form, a surrogate (a lone one captured from Python), or
 * past U+10FFFF. Writers of text formats replace those with U+FFFD, so
 * their output stays valid UTF-8 whatever was captured. */
CS_EXPORT size_t cs_utf8_len(const unsigned char *s, size_t n);
void cs_buf_append(cs_buf *b, const void *p, size_t n);
void cs_buf_puts(cs_buf *b, const char *s);
void cs_buf_printf(cs_buf *b, const char *fmt, ...) CS_PRINTF(2, 3);

/* ---- clock ---------------------------------------------------------------
 * Timestamps are monotonic nanoseconds (CLOCK_MONOTONIC). They are turned
 * into units only when reported. The monotonic clock is read inline: it is
 * on the per-call path, and clock_gettime goes through the vDSO. */
#include <time.h>
static inline uint64_t
cs_clock_mono_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The fast clock: CLOCK_MONOTONIC nanoseconds, read from the CPU's
 * time-stamp counter where the CPU says it is invariant (x86-64 with
 * constant_tsc and nonstop_tsc): about 10 ns a read against 25 for the
 * vDSO. The counter is calibrated against CLOCK_MONOTONIC once
 * (cs_clock_fast_init, about a millisecond); reads before that, and on
 * other machines, are cs_clock_mono_ns(). Durations agree with the
 * monotonic clock to the calibration's precision (a few ppm); times drift
 * from it as slowly. For the per-call path of --all. */
typedef struct cs_fastclock {
    int tsc;       /* the counter is used */
    uint64_t t0;   /* counter at calibration */
    uint64_t n0;   /* CLOCK_MONOTONIC ns then */
    uint64_t mult; /* ns per tick, 32.32 fixed point */
} cs_fastclock;
extern cs_fastclock cs__fastclock;
/* Calibrate the fast clock (once; later calls do nothing). */
CS_EXPORT void cs_clock_fast_init(void);
#if defined(__x86_64__)
#include <x86intrin.h>
#endif
static inline uint64_t
cs_clock_fast_ns(void)
{
#if defined(__x86_64__)
    if (__builtin_expect(cs__fastclock.tsc, 1)) {
        uint64_t d = __rdtsc() - cs__fastclock.t0;
        return cs__fastclock.n0 + (uint64_t)(((unsigned __int128)d * cs__fastclock.mult) >> 32);
    }
#endif
    return cs_clock_mono_ns();
}

/* Wall-clock (CLOCK_REALTIME) nanoseconds since the Unix epoch. */
CS_EXPORT uint64_t cs_clock_wall_ns(void);
/* CPU time consumed by the calling thread, in nanoseconds. */
CS_EXPORT uint64_t cs_clock_thread_cpu_ns(void);

/* ---- memory of the process ---------------------------------------------- */
/* Current resident set size and its peak, in bytes. Either pointer may be
 * NULL. On failure both outputs are 0. */
CS_EXPORT int cs_mem_rss(uint64_t *rss /* OUT */, uint64_t *peak /* OUT */);

/* ---- host ---------------------------------------------------------------- */
/* The name of this host, as runs record it: $CALLSCOPE_HOSTNAME if set
 * (containers whose hostnames repeat, tests), else gethostname(). */
CS_EXPORT void cs_hostname(char *out, size_t n);

/* ---- files -------------------------------------------------------------- */
/* Create `path` and its missing parents with mode 0777 & ~umask. */
CS_EXPORT int cs_mkdirs(const char *path);
/* The mode of what callscope creates: private to its user (0700 for a
 * directory, 0600 for a file), or readable by the group (0750, 0640)
 * when $CALLSCOPE_SHARE is "group" (callscope run --share group). Runs
 * hold arguments, results and messages. */
CS_EXPORT unsigned cs_file_mode(int dir);
/* Open-and-create a file of callscope's with that mode, whatever the
 * umask; as open(2). */
CS_EXPORT int cs_create_file(const char *path, int flags);
/* Remove `path` recursively. A missing path is not an error. */
CS_EXPORT int cs_rmtree(const char *path);
/* Total bytes allocated on disk below `path` (follows no symlinks). */
CS_EXPORT uint64_t cs_du(const char *path);
/* Join two path parts with one '/'. Caller frees with cs__free(). */
char *cs__path_join(const char *a, const char *b);
/* 1 if `path` is a directory, 0 otherwise. */
int cs__is_dir(const char *path);
/* 1 if `path` exists, 0 otherwise. */
int cs__exists(const char *path);

/* Human-readable renderings for reports. Write into `out` (at least 32
 * bytes) and return it. */
CS_EXPORT const char *cs_fmt_ns(uint64_t ns, char *out, size_t n);
CS_EXPORT const char *cs_fmt_bytes(uint64_t bytes, char *out, size_t n);

#endif /* CS_CORE_H */
