/* simd.h - small vector helpers shared by the GEMM and the convolution
 * packing (internal to nn/). GCC vector extensions: portable, and SSE
 * shuffles on x86. */
#ifndef NN_SIMD_H
#define NN_SIMD_H

#include <stddef.h>
#include <string.h>

/* GCC-compatible compilers on x86: the AVX2 and AVX-512 code (target
 * attributes, <immintrin.h>) is built there, and only there. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NN_X86 1
#else
#define NN_X86 0
#endif

/* n floats rounded up to whole 64-byte lines (16 floats): the sizes of
 * blocks that start on a line (scratch regions, the plan's weights). */
static inline size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* A shuffle of two 4-lane vectors by constant lane indices (0..7).
 * clang has only __builtin_shufflevector; GCC's __builtin_shuffle takes
 * the indices as a vector of the callers' local v4i type. Same
 * instructions either way; clang builds the fuzzing harnesses. */
#if defined(__clang__)
#define NN_SHUF4(a, b, i0, i1, i2, i3) \
    ((void)sizeof(v4i), __builtin_shufflevector(a, b, i0, i1, i2, i3))
#else
#define NN_SHUF4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (v4i){i0, i1, i2, i3})
#endif

/* Four floats, four ints: the 4-lane vectors of the packing code. */
typedef float nn_v4f __attribute__((vector_size(16)));
typedef int nn_v4i __attribute__((vector_size(16)));

/* 4 x 4 transpose: 4 floats from each of s0..s3 become the columns of
 * o[0], o[os], o[2 os], o[3 os] (portable vector shuffles, SSE on x86). */
static inline void tr4x4(const float *s0, const float *s1, const float *s2, const float *s3,
                         float *o, size_t os)
{
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    v4f a, b, c, d;
    memcpy(&a, s0, 16);
    memcpy(&b, s1, 16);
    memcpy(&c, s2, 16);
    memcpy(&d, s3, 16);
    v4f ab0 = NN_SHUF4(a, b, 0, 4, 1, 5);
    v4f ab1 = NN_SHUF4(a, b, 2, 6, 3, 7);
    v4f cd0 = NN_SHUF4(c, d, 0, 4, 1, 5);
    v4f cd1 = NN_SHUF4(c, d, 2, 6, 3, 7);
    v4f r0 = NN_SHUF4(ab0, cd0, 0, 1, 4, 5);
    v4f r1 = NN_SHUF4(ab0, cd0, 2, 3, 6, 7);
    v4f r2 = NN_SHUF4(ab1, cd1, 0, 1, 4, 5);
    v4f r3 = NN_SHUF4(ab1, cd1, 2, 3, 6, 7);
    memcpy(o, &r0, 16);
    memcpy(o + os, &r1, 16);
    memcpy(o + 2 * os, &r2, 16);
    memcpy(o + 3 * os, &r3, 16);
}

/* out[0..3] = p[0], p[2], p[4], p[6] (reads p[0..6] only). */
static inline void evens4(const float *p, float out[4])
{
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    v4f a, b;
    memcpy(&a, p, 16);
    memcpy(&b, p + 3, 16);
    v4f e = NN_SHUF4(a, b, 0, 2, 5, 7);
    memcpy(out, &e, 16);
}

/* d[i] = s[i] + bias, then max(., 0) if relu (NaN becomes 0, as in the
 * scalar v > 0 ? v : 0): 4 floats a step; GCC -O2 leaves the plain loop
 * scalar, and it was a sixth of batch-1 CNN inference. d may equal s. */
static inline void bias_act(float *d, const float *s, size_t n, float bias, int relu)
{
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    const v4f vb = {bias, bias, bias, bias}, zero = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, s + i, 16);
        v += vb;
        if (relu) v = (v4f)((v4i)v & (v > zero));
        memcpy(d + i, &v, 16);
    }
    for (; i < n; i++) {
        float v = s[i] + bias;
        d[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

/* Sum of n floats in 8 float lanes (a fixed order: deterministic), then
 * across the lanes; the plain loop is a serial chain of adds that -O2
 * cannot reorder (a conv layer's bias gradient spent a third of its
 * non-GEMM time in it). */
static inline float sum8(const float *x, size_t n)
{
    /* Two 4-lane halves: a 32-byte generic vector without -mavx is kept in
     * memory, a store-to-load chain per step. */
    typedef float v4f __attribute__((vector_size(16)));
    v4f lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f u, v;
        memcpy(&u, x + i, 16);
        memcpy(&v, x + i + 4, 16);
        lo += u;
        hi += v;
    }
    float s = 0.0f;
    for (int j = 0; j < 4; j++) s += lo[j];
    for (int j = 0; j < 4; j++) s += hi[j];
    for (; i < n; i++) s += x[i];
    return s;
}

/* d[i] += s[i]: the compiler vectorises this once it knows they do not
 * overlap. */
static inline void add_to(float *restrict d, const float *restrict s, int n)
{
    for (int i = 0; i < n; i++) d[i] += s[i];
}

#endif
