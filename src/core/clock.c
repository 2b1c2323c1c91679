/* clock.c -- the clocks that are not on the per-call path (the monotonic
 * one is inline in cs_core.h). Nanoseconds everywhere; units only at
 * report time. */
#include "cs_core.h"

#include <time.h>

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
