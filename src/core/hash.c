/* hash.c -- the fast 64-bit hash of large buffers. */
#include "cs_core.h"

#include <string.h>

static inline uint64_t
rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

uint64_t
cs_hash64(const void *data, size_t n)
{
    const unsigned char *p = data;
    const uint64_t P1 = 0x9e3779b97f4a7c15ull, P2 = 0xc2b2ae3d27d4eb4full;
    uint64_t h[4] = {P1, P2, ~P1, ~P2};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * k, 8);
            h[k] = rotl(h[k] ^ (w * P2), 31) * P1;
        }
    }
    uint64_t r = (uint64_t)n ^ h[0] ^ rotl(h[1], 7) ^ rotl(h[2], 13) ^ rotl(h[3], 29);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        r = rotl(r ^ mix(w), 27) * P1;
    }
    uint64_t tail = 0;
    for (size_t k = 0; i < n; i++, k++)
        tail |= (uint64_t)p[i] << (8 * k);
    return mix(r ^ mix(tail ^ P2));
}

