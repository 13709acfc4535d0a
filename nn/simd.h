/* simd.h - small vector helpers shared by the GEMM and the convolution
 * packing (internal to nn/). GCC vector extensions: portable, and SSE
 * shuffles on x86. */
#ifndef NN_SIMD_H
#define NN_SIMD_H

#include <stddef.h>
#include <string.h>

/* 4 x 4 transpose: 4 floats from each of s0..s3 become the columns of
 * o[0], o[os], o[2 os], o[3 os] (portable vector shuffles, SSE on x86). */
static inline void tr4x4(const float *s0, const float *s1, const float *s2,
                         const float *s3, float *o, size_t os)
{
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    v4f a, b, c, d;
    memcpy(&a, s0, 16);
    memcpy(&b, s1, 16);
    memcpy(&c, s2, 16);
    memcpy(&d, s3, 16);
    v4f ab0 = __builtin_shuffle(a, b, (v4i){0, 4, 1, 5});
    v4f ab1 = __builtin_shuffle(a, b, (v4i){2, 6, 3, 7});
    v4f cd0 = __builtin_shuffle(c, d, (v4i){0, 4, 1, 5});
    v4f cd1 = __builtin_shuffle(c, d, (v4i){2, 6, 3, 7});
    v4f r0 = __builtin_shuffle(ab0, cd0, (v4i){0, 1, 4, 5});
    v4f r1 = __builtin_shuffle(ab0, cd0, (v4i){2, 3, 6, 7});
    v4f r2 = __builtin_shuffle(ab1, cd1, (v4i){0, 1, 4, 5});
    v4f r3 = __builtin_shuffle(ab1, cd1, (v4i){2, 3, 6, 7});
    memcpy(o, &r0, 16);
    memcpy(o + os, &r1, 16);
    memcpy(o + 2 * os, &r2, 16);
    memcpy(o + 3 * os, &r3, 16);
}

#endif
