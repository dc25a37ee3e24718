/* The CPU's ceiling for the 8-bit dot product the VNNI prompt tiles use (`vpdpbusd`):
 * twelve independent accumulators kept in registers, 256-bit vectors by default, 512-bit
 * with -DWIDE. Prints billions of multiply-adds per second on one core.
 *
 *   gcc -O2 -mavx512f -mavx512vl -mavx512vnni scripts/vnni-ceiling.c -o /tmp/vnni-256
 *   gcc -O2 -mavx512f -mavx512vl -mavx512vnni -DWIDE scripts/vnni-ceiling.c -o /tmp/vnni-512
 *   /tmp/vnni-256; /tmp/vnni-512
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#ifdef WIDE
typedef __m512i vec;
#define DOT _mm512_dpbusd_epi32
#define BYTES _mm512_set1_epi8
#define WORDS _mm512_set1_epi32
#define LANES 64
#else
typedef __m256i vec;
#define DOT _mm256_dpbusd_epi32
#define BYTES _mm256_set1_epi8
#define WORDS _mm256_set1_epi32
#define LANES 32
#endif

int main(void) {
    vec a0 = WORDS(0), a1 = WORDS(1), a2 = WORDS(2), a3 = WORDS(3), a4 = WORDS(4), a5 = WORDS(5);
    vec a6 = WORDS(6), a7 = WORDS(7), a8 = WORDS(8), a9 = WORDS(9), a10 = WORDS(10), a11 = WORDS(11);
    vec w = BYTES(3), x = BYTES(5);
    const long n = 200000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        a0 = DOT(a0, w, x); a1 = DOT(a1, w, x); a2 = DOT(a2, w, x); a3 = DOT(a3, w, x);
        a4 = DOT(a4, w, x); a5 = DOT(a5, w, x); a6 = DOT(a6, w, x); a7 = DOT(a7, w, x);
        a8 = DOT(a8, w, x); a9 = DOT(a9, w, x); a10 = DOT(a10, w, x); a11 = DOT(a11, w, x);
        /* Keeps the operands opaque, so the loop is not folded away. */
        __asm__ volatile("" : "+v"(w), "+v"(x));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    vec r = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7 ^ a8 ^ a9 ^ a10 ^ a11;
    printf("%d-bit vpdpbusd: %.1f billion multiply-adds/s on one core (%.2f billion instructions/s; check %d)\n",
           LANES * 8, n * 12.0 * LANES / s / 1e9, n * 12.0 / s / 1e9, ((int *)&r)[0]);
    return 0;
}
