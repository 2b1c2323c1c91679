/* clock.c -- the clocks that are not on the per-call path (the monotonic
 * one is inline in cs_core.h). Nanoseconds everywhere; units only at
 * report time. */
#include "cs_core.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

cs_fastclock cs__fastclock;

static inline uint64_t
read_clock(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
cs_clock_wall_ns(void)
{
    return read_clock(CLOCK_REALTIME);
}

uint64_t
cs_clock_thread_cpu_ns(void)
{
    return read_clock(CLOCK_THREAD_CPUTIME_ID);
}

#if defined(__x86_64__)
/* 1 if /proc/cpuinfo names both flags of an invariant counter. */
static int
invariant_tsc(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int ok = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        ok = strstr(line, " constant_tsc") && strstr(line, " nonstop_tsc");
        break;
    }
    fclose(f);
    return ok;
}
#endif

void
cs_clock_fast_init(void)
{
#if defined(__x86_64__)
    if (cs__fastclock.tsc || !invariant_tsc())
        return;
    /* two readings of both clocks a millisecond apart; each pair read
     * back to back, keeping the tightest of a few tries */
    uint64_t t[2], n[2];
    for (int k = 0; k < 2; k++) {
        uint64_t best = UINT64_MAX;
        for (int i = 0; i < 5; i++) {
            uint64_t a = __rdtsc(), m = cs_clock_mono_ns(), b = __rdtsc();
            if (b - a < best) {
                best = b - a;
                t[k] = a + (b - a) / 2;
                n[k] = m;
            }
        }
        if (k == 0)
            while (cs_clock_mono_ns() - n[0] < 1000000)
                ;
    }
    if (t[1] <= t[0] || n[1] <= n[0])
        return;
    cs__fastclock.mult = (uint64_t)(((unsigned __int128)(n[1] - n[0]) << 32) / (t[1] - t[0]));
    cs__fastclock.t0 = t[1];
    cs__fastclock.n0 = n[1];
    cs__fastclock.tsc = cs__fastclock.mult != 0;
#endif
}
