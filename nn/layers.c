/* layers.c - see layers.h. */
#include "nn/layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn/rng.h"
#include "nn/simd.h"

#if NN_X86
#include <immintrin.h>
#endif

/* ---- dense and max-pool ------------------------------------------------------ */

void nn_dense_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                      int out, int relu)
{
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, b, sizeof(float) * out);
    nn_gemm(0, 1, n, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
    if (relu)
        for (size_t i = 0; i < (size_t)n * out; i++)
            y[i] = y[i] > 0.0f ? y[i] : 0.0f; /* branch-free: vectorises */
}

void nn_dense_forward_ref(float *y, const float *x, const float *w, const float *b, int n, int in,
                          int out)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double acc = b[o];
            for (int j = 0; j < in; j++)
                acc += (double)x[(size_t)i * in + j] * w[(size_t)o * in + j];
            y[(size_t)i * out + o] = (float)acc;
        }
}

void nn_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int n, int in, int out)
{
    nn_gemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
    if (dx) nn_gemm(0, 0, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

void nn_dense_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int n, int in, int out)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            float g = dy[(size_t)i * out + o];
            db[o] += g;
            for (int j = 0; j < in; j++) dw[(size_t)o * in + j] += g * x[(size_t)i * in + j];
        }
    if (!dx) return;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < in; j++) {
            double acc = 0.0;
            for (int o = 0; o < out; o++)
                acc += (double)dy[(size_t)i * out + o] * w[(size_t)o * in + j];
            dx[(size_t)i * in + j] = (float)acc;
        }
}

#if NN_X86
enum { POOL2_SCALAR, POOL2_AVX2, POOL2_AVX512 };

/* Which 2x2 kernel runs a pool of window k, stride s over rows of W. */
static int pool2_vec(int k, int s, int W)
{
    const int path = nn_gemm_get_path();
    if (k != 2 || s != 2) return POOL2_SCALAR;
    if (path == NN_GEMM_PATH_AVX512 && W <= 32) return POOL2_AVX512;
    return path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512 ? POOL2_AVX2 : POOL2_SCALAR;
}

/* The 2x2 stride-2 pool on AVX-512, for rows of up to 32 (both of LeNet's
 * pools): a pair of input rows is four vectors, their even and odd
 * columns picked out by permutes, and the scalar loop's three selects
 * (the same comparisons in the same order, so the same maxima, argmaxes
 * and NaN behaviour) are masked moves across up to 16 windows at once.
 *
 * Row r (W floats) as its even and odd columns, lanes [0, W / 2). */
__attribute__((target("avx512f"), always_inline)) static inline void
pool2_split(const float *r, __mmask16 ml, __mmask16 mh, __m512i ev, __m512i od, __m512 *e,
            __m512 *o)
{
    const __m512 a = _mm512_maskz_loadu_ps(ml, r), b = _mm512_maskz_loadu_ps(mh, r + 16);
    *e = _mm512_permutex2var_ps(a, ev, b);
    *o = _mm512_permutex2var_ps(a, od, b);
}

/* The first n lanes of 16 (none if n <= 0). */
static __mmask16 first_lanes16(int n)
{
    return n >= 16 ? 0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

__attribute__((target("avx512f"))) static void pool2_forward(float *y, int32_t *idx, const float *x,
                                                             int C, int H, int W, int OH, int OW)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __mmask16 ml = first_lanes16(W), mh = first_lanes16(W - 16), mo = first_lanes16(OW);
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++) {
            const int row = (c * H + 2 * oh) * W;
            __m512 e0, o0, e1, o1;
            pool2_split(x + row, ml, mh, ev, od, &e0, &o0);
            pool2_split(x + row + W, ml, mh, ev, od, &e1, &o1);
            const __mmask16 k1 = _mm512_cmp_ps_mask(o0, e0, _CMP_GT_OQ);
            __m512 m = _mm512_mask_mov_ps(e0, k1, o0);
            const __mmask16 k2 = _mm512_cmp_ps_mask(e1, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, k2, e1);
            const __mmask16 k3 = _mm512_cmp_ps_mask(o1, m, _CMP_GT_OQ);
            m = _mm512_mask_mov_ps(m, k3, o1);
            const size_t o = ((size_t)c * OH + oh) * OW;
            _mm512_mask_storeu_ps(y + o, mo, m);
            if (!idx) continue;
            const __m512i i = _mm512_add_epi32(_mm512_set1_epi32(row), ev);
            __m512i best = _mm512_mask_add_epi32(i, k1, i, _mm512_set1_epi32(1));
            best = _mm512_mask_add_epi32(best, k2, i, _mm512_set1_epi32(W));
            best = _mm512_mask_add_epi32(best, k3, i, _mm512_set1_epi32(W + 1));
            _mm512_mask_storeu_epi32(idx + o, mo, best);
        }
}

/* Each window's gradient goes to the one of its four inputs idx names
 * (0 + g, as the scatter adds onto +0), the other three get +0, and the
 * two rows are interleaved back and stored whole: every float of the
 * pooled rows written, no zeroing first. Rows and a column the pool
 * does not reach (odd H or W) get +0. */
__attribute__((target("avx512f"))) static void pool2_backward(float *dx, const float *dy,
                                                              const int32_t *idx, int C, int H,
                                                              int W, int OH, int OW,
                                                              const float *relu_y)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    /* Interleaving: lane l of the low half takes even[l / 2] or odd[l / 2]. */
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const __mmask16 ml = first_lanes16(W), mh = first_lanes16(W - 16), mo = first_lanes16(OW);
    const __m512 zero = _mm512_setzero_ps();
    for (int c = 0; c < C; c++) {
        for (int oh = 0; oh < OH; oh++) {
            const int row = (c * H + 2 * oh) * W;
            const size_t o = ((size_t)c * OH + oh) * OW;
            const __m512 g = _mm512_maskz_loadu_ps(mo, dy + o);
            const __m512i at = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mo, idx + o),
                                                _mm512_add_epi32(_mm512_set1_epi32(row), ev));
            __mmask16 p[4] = {_mm512_mask_cmpeq_epi32_mask(mo, at, _mm512_setzero_si512()),
                              _mm512_mask_cmpeq_epi32_mask(mo, at, _mm512_set1_epi32(1)),
                              _mm512_mask_cmpeq_epi32_mask(mo, at, _mm512_set1_epi32(W)),
                              _mm512_mask_cmpeq_epi32_mask(mo, at, _mm512_set1_epi32(W + 1))};
            if (relu_y) {
                __m512 e0, o0, e1, o1;
                pool2_split(relu_y + row, ml, mh, ev, od, &e0, &o0);
                pool2_split(relu_y + row + W, ml, mh, ev, od, &e1, &o1);
                p[0] &= _mm512_cmp_ps_mask(e0, zero, _CMP_GT_OQ);
                p[1] &= _mm512_cmp_ps_mask(o0, zero, _CMP_GT_OQ);
                p[2] &= _mm512_cmp_ps_mask(e1, zero, _CMP_GT_OQ);
                p[3] &= _mm512_cmp_ps_mask(o1, zero, _CMP_GT_OQ);
            }
            for (int r = 0; r < 2; r++) {
                const __m512 e = _mm512_add_ps(zero, _mm512_maskz_mov_ps(p[2 * r], g));
                const __m512 d = _mm512_add_ps(zero, _mm512_maskz_mov_ps(p[2 * r + 1], g));
                float *out = dx + row + r * W;
                _mm512_mask_storeu_ps(out, ml, _mm512_permutex2var_ps(e, lo, d));
                _mm512_mask_storeu_ps(out + 16, mh, _mm512_permutex2var_ps(e, hi, d));
            }
        }
        for (int ih = 2 * OH; ih < H; ih++)
            memset(dx + ((size_t)c * H + ih) * W, 0, sizeof(float) * W);
    }
}

/* The forward on AVX2, eight windows a step (any row length; LeNet's
 * rows of 24 are a step of eight and one of four). Two rows' 16 floats
 * split into even and odd columns by in-lane shuffles, which leave the
 * windows in the order 0 1 4 5 2 3 6 7; the selects run in that order
 * and one cross-lane permute puts the maxima and argmaxes back. The tail
 * of a row is read and written through masks.
 *
 * The first n lanes of 8, as AVX2's load and store masks. */
__attribute__((target("avx2"))) static inline __m256i first_lanes8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__attribute__((target("avx2"), always_inline)) static inline void
pool2_split8(const float *r, __m256i ma, __m256i mb, __m256 *e, __m256 *o)
{
    const __m256 a = _mm256_maskload_ps(r, ma), b = _mm256_maskload_ps(r + 8, mb);
    *e = _mm256_shuffle_ps(a, b, 0x88); /* columns 0 2 8 10 | 4 6 12 14 */
    *o = _mm256_shuffle_ps(a, b, 0xdd); /* columns 1 3 9 11 | 5 7 13 15 */
}

/* Windows 0 1 4 5 2 3 6 7 back to 0..7. */
__attribute__((target("avx2"), always_inline)) static inline __m256 unshuffle8(__m256 v)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xd8));
}

__attribute__((target("avx2"))) static void pool2_forward8(float *y, int32_t *idx, const float *x,
                                                           int C, int H, int W, int OH, int OW)
{
    /* 2 x the window each lane holds after the shuffles. */
    const __m256i two_q = _mm256_setr_epi32(0, 2, 8, 10, 4, 6, 12, 14);
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++) {
            const int row = (c * H + 2 * oh) * W;
            const size_t o = ((size_t)c * OH + oh) * OW;
            for (int ow0 = 0; ow0 < OW; ow0 += 8) {
                const int cols = W - 2 * ow0, n = OW - ow0 < 8 ? OW - ow0 : 8;
                const __m256i ma = first_lanes8(cols), mb = first_lanes8(cols - 8),
                              mo = first_lanes8(n);
                __m256 e0, o0, e1, o1;
                pool2_split8(x + row + 2 * ow0, ma, mb, &e0, &o0);
                pool2_split8(x + row + W + 2 * ow0, ma, mb, &e1, &o1);
                const __m256 k1 = _mm256_cmp_ps(o0, e0, _CMP_GT_OQ);
                __m256 m = _mm256_blendv_ps(e0, o0, k1);
                const __m256 k2 = _mm256_cmp_ps(e1, m, _CMP_GT_OQ);
                m = _mm256_blendv_ps(m, e1, k2);
                const __m256 k3 = _mm256_cmp_ps(o1, m, _CMP_GT_OQ);
                m = _mm256_blendv_ps(m, o1, k3);
                _mm256_maskstore_ps(y + o + ow0, mo, unshuffle8(m));
                if (!idx) continue;
                const __m256i i = _mm256_add_epi32(_mm256_set1_epi32(row + 2 * ow0), two_q);
                __m256i best = i;
                best = _mm256_blendv_epi8(best, _mm256_add_epi32(i, _mm256_set1_epi32(1)),
                                          _mm256_castps_si256(k1));
                best = _mm256_blendv_epi8(best, _mm256_add_epi32(i, _mm256_set1_epi32(W)),
                                          _mm256_castps_si256(k2));
                best = _mm256_blendv_epi8(best, _mm256_add_epi32(i, _mm256_set1_epi32(W + 1)),
                                          _mm256_castps_si256(k3));
                _mm256_maskstore_epi32(idx + o + ow0, mo, _mm256_permute4x64_epi64(best, 0xd8));
            }
        }
}
#endif

void nn_maxpool_forward(float *y, int32_t *idx, const float *x, int C, int H, int W, int k, int s,
                        int OH, int OW)
{
#if NN_X86
    switch (pool2_vec(k, s, W)) {
    case POOL2_AVX512: pool2_forward(y, idx, x, C, H, W, OH, OW); return;
    case POOL2_AVX2: /* inference keeps the selects below (SSE, as fast) */
        if (!idx) break;
        pool2_forward8(y, idx, x, C, H, W, OH, OW);
        return;
    default: break;
    }
#endif
    if (!idx && k == 2 && s == 2) {
        /* Inference, the common 2x2 pool: the same comparisons in the same
         * order as below, as selects the compiler vectorises (a profile of
         * the LeNet server had the branchy loop first, at 13%). */
        for (int c = 0; c < C; c++)
            for (int oh = 0; oh < OH; oh++) {
                const float *r0 = x + ((size_t)c * H + 2 * oh) * W, *r1 = r0 + W;
                float *yo = y + ((size_t)c * OH + oh) * OW;
                for (int ow = 0; ow < OW; ow++) {
                    float m = r0[2 * ow], v = r0[2 * ow + 1];
                    m = v > m ? v : m;
                    v = r1[2 * ow];
                    m = v > m ? v : m;
                    v = r1[2 * ow + 1];
                    yo[ow] = v > m ? v : m;
                }
            }
        return;
    }
    if (k == 2 && s == 2) {
        /* Training's 2x2 pool, with the argmax: the general loop's
         * comparisons in its order, unrolled into selects (it was 6% of
         * LeNet's training profile). */
        for (int c = 0; c < C; c++)
            for (int oh = 0; oh < OH; oh++) {
                const int row = (c * H + 2 * oh) * W;
                const float *r0 = x + row, *r1 = r0 + W;
                float *yo = y + ((size_t)c * OH + oh) * OW;
                int32_t *io = idx + ((size_t)c * OH + oh) * OW;
                for (int ow = 0; ow < OW; ow++) {
                    int i = row + 2 * ow, best = i;
                    float m = r0[2 * ow], v = r0[2 * ow + 1];
                    best = v > m ? i + 1 : best;
                    m = v > m ? v : m;
                    v = r1[2 * ow];
                    best = v > m ? i + W : best;
                    m = v > m ? v : m;
                    v = r1[2 * ow + 1];
                    best = v > m ? i + W + 1 : best;
                    yo[ow] = v > m ? v : m;
                    io[ow] = best;
                }
            }
        return;
    }
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int best = (c * H + oh * s) * W + ow * s;
                float m = x[best];
                for (int ki = 0; ki < k; ki++)
                    for (int kj = 0; kj < k; kj++) {
                        int i = (c * H + oh * s + ki) * W + ow * s + kj;
                        /* Selects, not a branch: maxima are unpredictable. */
                        best = x[i] > m ? i : best;
                        m = x[i] > m ? x[i] : m;
                    }
                int o = (c * OH + oh) * OW + ow;
                y[o] = m;
                if (idx) idx[o] = best;
            }
}

void nn_maxpool_backward(float *dx, const float *dy, const int32_t *idx, int C, int H, int W, int k,
                         int s, int OH, int OW, const float *relu_y)
{
#if NN_X86
    /* AVX2 keeps the scatter below: eight windows' compares, masks and
     * interleaving cost more than scattering the one gradient in four
     * (LeNet's step, perf: 5.5% against 3.9% and the memset). */
    if (pool2_vec(k, s, W) == POOL2_AVX512) {
        pool2_backward(dx, dy, idx, C, H, W, OH, OW, relu_y);
        return;
    }
#else
    (void)k, (void)s;
#endif
    memset(dx, 0, sizeof(float) * C * H * W);
    if (!relu_y) {
        for (int o = 0; o < C * OH * OW; o++) dx[idx[o]] += dy[o];
        return;
    }
    /* A select, not a branch: whether the ReLU passed is a coin toss per
     * window, and the mispredicted branch made this loop 8% of LeNet's
     * training step. Adding 0 where it did not pass leaves the same bits
     * (dx starts at +0 and never holds -0). */
    for (int o = 0; o < C * OH * OW; o++) {
        const int32_t j = idx[o];
        uint32_t g;
        memcpy(&g, dy + o, sizeof g);
        g &= -(uint32_t)(relu_y[j] > 0.0f); /* dy or +0 */
        float v;
        memcpy(&v, &g, sizeof v);
        dx[j] += v;
    }
}

/* ---- ReLU and dropout ----------------------------------------------------------- */

void nn_relu_forward(float *y, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++) y[j] = x[j] > 0.0f ? x[j] : 0.0f; /* branch-free: vectorises */
}

/* 4-lane vectors: SSE on x86 without -mavx. GCC splits wider generic
 * vectors into scalar compares and moves (nn_relu_backward was a comiss
 * and a cmova per float) and keeps their accumulators in memory, a
 * store-to-load chain per step (the batch norm's sums). */
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));

void nn_relu_backward(float *dx, const float *dy, const float *y, size_t n)
{
    /* The output decides: y > 0 iff x > 0, and y is what in-place nets
     * keep. dy is read whether or not it passes and masked (dx may be dy):
     * written as a conditional read, GCC kept a scalar loop with a branch,
     * an eighth of the big CNN's training step in a profile. */
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        v4f g, v;
        memcpy(&g, dy + j, sizeof g);
        memcpy(&v, y + j, sizeof v);
        g = (v4f)((v4i)g & (v > 0.0f));
        memcpy(dx + j, &g, sizeof g);
    }
    for (; j < n; j++) {
        const float g = dy[j];
        dx[j] = y[j] > 0.0f ? g : 0.0f;
    }
}

/* Dropout without branches: a random mask mispredicts every other element
 * (the branchy loops took 9 and 4 ns an element). The kept test compares
 * the hash's 24 bits with an integer bound, the same test as
 * nn_hash_uniform(...) < keep: u * 2^-24 < keep exactly when
 * u < ceil(keep * 2^24). A dropped element is +0.0, by masking the
 * product's bits. */
static inline float keep_or_zero(float v, uint8_t m)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= 0u - (uint32_t)m;
    memcpy(&v, &b, sizeof v);
    return v;
}

#if NN_X86
/* nn_dropout_forward's first n - n % 8 elements, eight hashes a step with
 * AVX-512's 64-bit multiplies (DQ): nn_hash64's operations lane by lane,
 * the same masks and values. One hash at a time, the dropout after the
 * 12x12 layer took 0.43 ms of a training step at batch 64. Returns the
 * elements done. */
__attribute__((target("avx512f,avx512dq,avx512vl"))) static size_t
dropout_forward8(float *y, uint8_t *mask, const float *x, size_t n, float sc, uint32_t bound,
                 uint64_t seed)
{
    const __m512i k = _mm512_set1_epi64((long long)NN_HASH_MUL),
                  m1 = _mm512_set1_epi64((long long)NN_SPLITMIX_M1),
                  m2 = _mm512_set1_epi64((long long)NN_SPLITMIX_M2),
                  add = _mm512_set1_epi64((long long)(2 * NN_SPLITMIX_GAMMA)),
                  sv = _mm512_set1_epi64((long long)seed), bv = _mm512_set1_epi64(bound),
                  step = _mm512_set1_epi64(8), one = _mm512_set1_epi64(1);
    const __m256 scv = _mm256_set1_ps(sc);
    __m512i c = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    size_t j = 0;
    for (; j + 8 <= n; j += 8, c = _mm512_add_epi64(c, step)) {
        __m512i z = _mm512_add_epi64(_mm512_xor_si512(sv, _mm512_mullo_epi64(c, k)), add);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), m1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), m2);
        /* The finaliser's last z ^ z >> 31 leaves the top 24 bits, all
         * the mask reads, as they are: not computed. */
        const __mmask8 kp = _mm512_cmplt_epu64_mask(_mm512_srli_epi64(z, 40), bv);
        _mm_storel_epi64((__m128i *)(mask + j),
                         _mm512_cvtepi64_epi8(_mm512_maskz_mov_epi64(kp, one)));
        /* A dropped value's bits cleared: +0, as keep_or_zero gives. */
        _mm256_storeu_ps(y + j, _mm256_maskz_mul_ps(kp, _mm256_loadu_ps(x + j), scv));
    }
    return j;
}
#endif

void nn_dropout_forward(float *y, uint8_t *mask, const float *x, size_t n, float p, uint64_t seed)
{
    const float keep = 1.0f - p, sc = 1.0f / keep;
    const uint32_t bound = (uint32_t)ceilf(keep * 16777216.0f);
    size_t j0 = 0;
#if NN_X86
    if (nn_gemm_get_path() == NN_GEMM_PATH_AVX512 && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        j0 = dropout_forward8(y, mask, x, n, sc, bound, seed);
#endif
    for (size_t j = j0; j < n; j++) {
        uint8_t m = (uint32_t)(nn_hash64(seed, j) >> 40) < bound;
        mask[j] = m;
        y[j] = keep_or_zero(x[j] * sc, m);
    }
}

void nn_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t n, float p)
{
    const float sc = 1.0f / (1.0f - p);
    for (size_t j = 0; j < n; j++) dx[j] = keep_or_zero(dy[j] * sc, mask[j]);
}

/* ---- batch norm ------------------------------------------------------------------ */

/* Sums over one channel row: 8 float accumulators (lanes 0-3 in lo, 4-7 in
 * hi) in a fixed order, so the loop vectorises (the double scalar loop did
 * not) and stays deterministic. */
static double lanes8(v4f lo, v4f hi)
{
    double s = 0.0;
    for (int j = 0; j < 4; j++) s += lo[j];
    for (int j = 0; j < 4; j++) s += hi[j];
    return s;
}

static double sum_f(const float *x, int n)
{
    v4f lo = {0}, hi = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f u, v;
        memcpy(&u, x + i, sizeof u);
        memcpy(&v, x + i + 4, sizeof v);
        lo += u;
        hi += v;
    }
    double s = lanes8(lo, hi);
    for (; i < n; i++) s += x[i];
    return s;
}

/* sum of x[i] - k and of its square in one pass, in sum_f's lanes. */
static void sums_shift(const float *x, int n, float k, double *s1, double *s2)
{
    v4f alo = {0}, ahi = {0}, blo = {0}, bhi = {0};
    const v4f kv = {k, k, k, k};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f u, v;
        memcpy(&u, x + i, sizeof u);
        memcpy(&v, x + i + 4, sizeof v);
        u -= kv;
        v -= kv;
        alo += u;
        ahi += v;
        blo += u * u;
        bhi += v * v;
    }
    double a = lanes8(alo, ahi), b = lanes8(blo, bhi);
    for (; i < n; i++) {
        const float u = x[i] - k;
        a += u;
        b += (double)u * u;
    }
    *s1 = a;
    *s2 = b;
}

/* xhat = (x - m) iv, 4 lanes, as the forward computes it (no fused
 * multiply-add: -std=c11 keeps contraction off). */
static inline v4f xhat4(const float *x, v4f mv, v4f iv)
{
    v4f v;
    memcpy(&v, x, sizeof v);
    return (v - mv) * iv;
}

/* sum of a[i] xhat[i], xhat recomputed from x, in sum_f's lanes. */
static double dot_xhat(const float *a, const float *x, float m, float iv, int n)
{
    v4f lo = {0}, hi = {0};
    const v4f mv = {m, m, m, m}, ivv = {iv, iv, iv, iv};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f u0, u1;
        memcpy(&u0, a + i, sizeof u0);
        memcpy(&u1, a + i + 4, sizeof u1);
        lo += u0 * xhat4(x + i, mv, ivv);
        hi += u1 * xhat4(x + i + 4, mv, ivv);
    }
    double s = lanes8(lo, hi);
    for (; i < n; i++) s += (double)a[i] * ((x[i] - m) * iv);
    return s;
}

/* dy masked where the forward's output, gamma xhat + beta recomputed from
 * x as nn_batchnorm_forward_train computes it, is <= 0 (a ReLU's
 * backward on the way), lane by lane as nn_relu_backward writes it: a
 * masked lane is +0. h: xhat. */
static inline v4f relu_masked4(const float *d, v4f h, v4f gv, v4f bv)
{
    v4f v;
    memcpy(&v, d, sizeof v);
    return (v4f)((v4i)v & (gv * h + bv > 0.0f));
}

/* The scalar of that: d, or +0 where gamma xhat + beta <= 0. */
static inline float relu_masked1(float d, float h, float gc, float bc)
{
    return gc * h + bc > 0.0f ? d : 0.0f;
}

/* sum_f(d') and dot_xhat(d', x) of d' = d masked (relu_masked4), in the
 * same lanes and order as those two: the same sums as masking d first. */
static void sums_masked(const float *d, const float *x, float m, float iv, float gc, float bc,
                        int n, double *sd, double *sdh)
{
    v4f a1lo = {0}, a1hi = {0}, a2lo = {0}, a2hi = {0};
    const v4f mv = {m, m, m, m}, ivv = {iv, iv, iv, iv}, gv = {gc, gc, gc, gc},
              bv = {bc, bc, bc, bc};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const v4f h0 = xhat4(x + i, mv, ivv), h1 = xhat4(x + i + 4, mv, ivv);
        const v4f v0 = relu_masked4(d + i, h0, gv, bv), v1 = relu_masked4(d + i + 4, h1, gv, bv);
        a1lo += v0;
        a1hi += v1;
        a2lo += v0 * h0;
        a2hi += v1 * h1;
    }
    double s1 = lanes8(a1lo, a1hi), s2 = lanes8(a2lo, a2hi);
    for (int j = i; j < n; j++) {
        const float h = (x[j] - m) * iv, v = relu_masked1(d[j], h, gc, bc);
        s1 += v;
        s2 += (double)v * h;
    }
    *sd = s1;
    *sdh = s2;
}

#if NN_X86
/* The AVX2 copies of the batch norm's loops (the AVX2 and AVX-512
 * kernel paths): one 8-lane vector where the portable code keeps two
 * 4-lane halves, lane j summing the same elements in the same order, and
 * the same operations (no fused multiply-add), so the same bits. The
 * portable loops ran 4 lanes a step, and the normalising one a float a
 * step (GCC -O2 leaves it scalar): the batch norms were 9% of a big-CNN
 * training step. */
__attribute__((target("avx2"))) static double lanes8_256(__m256 v)
{
    float f[8];
    _mm256_storeu_ps(f, v);
    double s = 0.0;
    for (int j = 0; j < 8; j++) s += f[j];
    return s;
}

/* sums_shift, 8 lanes. */
__attribute__((target("avx2"))) static void sums_shift8(const float *x, int n, float k, double *s1,
                                                        double *s2)
{
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    const __m256 kv = _mm256_set1_ps(k);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 u = _mm256_sub_ps(_mm256_loadu_ps(x + i), kv);
        a = _mm256_add_ps(a, u);
        b = _mm256_add_ps(b, _mm256_mul_ps(u, u));
    }
    double sa = lanes8_256(a), sb = lanes8_256(b);
    for (; i < n; i++) {
        const float u = x[i] - k;
        sa += u;
        sb += (double)u * u;
    }
    *s1 = sa;
    *s2 = sb;
}

/* xhat of 8 floats, as xhat4. */
__attribute__((target("avx2"))) static inline __m256 xhat8(const float *x, __m256 mv, __m256 iv)
{
    return _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x), mv), iv);
}

/* d masked, as relu_masked4 (relu != 0; else d as it is). */
__attribute__((target("avx2"))) static inline __m256 masked8(const float *d, __m256 h, __m256 gv,
                                                             __m256 bv, int relu)
{
    const __m256 v = _mm256_loadu_ps(d);
    if (!relu) return v;
    const __m256 y = _mm256_add_ps(_mm256_mul_ps(gv, h), bv);
    return _mm256_and_ps(v, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
}

/* sum_f and dot_xhat of d (masked when relu != 0), as sums_masked and
 * the unmasked pair compute them. */
__attribute__((target("avx2"))) static void sums8(const float *d, const float *x, float m, float iv,
                                                  float gc, float bc, int relu, int n, double *sd,
                                                  double *sdh)
{
    __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
    const __m256 mv = _mm256_set1_ps(m), ivv = _mm256_set1_ps(iv), gv = _mm256_set1_ps(gc),
                 bv = _mm256_set1_ps(bc);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 h = xhat8(x + i, mv, ivv), v = masked8(d + i, h, gv, bv, relu);
        a1 = _mm256_add_ps(a1, v);
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(v, h));
    }
    double s1 = lanes8_256(a1), s2 = lanes8_256(a2);
    for (int j = i; j < n; j++) {
        const float h = (x[j] - m) * iv, v = relu ? relu_masked1(d[j], h, gc, bc) : d[j];
        s1 += v;
        s2 += (double)v * h;
    }
    *sd = s1;
    *sdh = s2;
}

/* One plane of the forward's output, as nn_batchnorm_forward_train's
 * loop: y = gamma (x - mean) inv + beta, then the ReLU. */
__attribute__((target("avx2"))) static void bn_norm8(float *y, const float *x, int S, float fm,
                                                     float iv, float gc, float bc, int relu)
{
    const __m256 mv = _mm256_set1_ps(fm), ivv = _mm256_set1_ps(iv), gv = _mm256_set1_ps(gc),
                 bv = _mm256_set1_ps(bc), zero = _mm256_setzero_ps();
    int s = 0;
    for (; s + 8 <= S; s += 8) {
        __m256 v = _mm256_add_ps(_mm256_mul_ps(gv, xhat8(x + s, mv, ivv)), bv);
        if (relu) v = _mm256_and_ps(v, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
        _mm256_storeu_ps(y + s, v);
    }
    for (; s < S; s++) y[s] = nn_bn_y1(x[s], fm, iv, gc, bc, relu);
}

/* bn_dx_plane, 8 lanes. */
__attribute__((target("avx2"))) static void bn_dx_plane8(float *o, const float *d, const float *xr,
                                                         int relu, int S, float fm, float iv,
                                                         float gc, float bc, float g, float m1,
                                                         float m2)
{
    const __m256 mv = _mm256_set1_ps(fm), ivv = _mm256_set1_ps(iv), gcv = _mm256_set1_ps(gc),
                 bcv = _mm256_set1_ps(bc), gv = _mm256_set1_ps(g), m1v = _mm256_set1_ps(m1),
                 m2v = _mm256_set1_ps(m2);
    int s = 0;
    for (; s + 8 <= S; s += 8) {
        const __m256 h = xhat8(xr + s, mv, ivv), v = masked8(d + s, h, gcv, bcv, relu);
        _mm256_storeu_ps(
            o + s, _mm256_mul_ps(gv, _mm256_sub_ps(_mm256_sub_ps(v, m1v), _mm256_mul_ps(h, m2v))));
    }
    for (; s < S; s++) {
        const float h = (xr[s] - fm) * iv, dv = relu ? relu_masked1(d[s], h, gc, bc) : d[s];
        o[s] = g * (dv - m1 - h * m2);
    }
}
#endif

/* 1 where the batch norm runs its AVX2 copies: on those paths, for
 * planes of at least a vector (on 1x1 planes the calls cost more than
 * the portable loops' scalar tails). */
static int bn_wide(int S)
{
#if NN_X86
    const int path = nn_gemm_get_path();
    return S >= 8 && (path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512);
#else
    (void)S;
    return 0;
#endif
}

void nn_batchnorm_forward(float *y, const float *x, const float *gamma, const float *beta,
                          const float *mean, const float *var, float eps, int n, int C, int S,
                          int relu)
{
    for (int b = 0; b < n; b++)
        for (int c = 0; c < C; c++) {
            float g = gamma[c] / sqrtf(var[c] + eps), o = beta[c] - g * mean[c];
            const float *xi = x + ((size_t)b * C + c) * S;
            float *yi = y + ((size_t)b * C + c) * S;
            for (int s = 0; s < S; s++) yi[s] = g * xi[s] + o;
            if (relu)
                for (int s = 0; s < S; s++) yi[s] = yi[s] > 0.0f ? yi[s] : 0.0f;
        }
}

/* A batch's arrays are several MB: the batch norms below go image by
 * image, each plane in memory order (one stream an array, where channel
 * by channel read n planes C S floats apart, twice as slow on the big
 * CNN's 26x26 planes), for up to BN_BLOCK channels at a time whose
 * per-channel sums (double) accumulate in the order of images. */
#define BN_BLOCK 256

void nn_batchnorm_forward_train(float *y, float *mean_out, float *inv, float *run_mean,
                                float *run_var, const float *x, const float *gamma,
                                const float *beta, float eps, float momentum, int n, int C, int S,
                                int relu)
{
    const double cnt = (double)n * S;
    void (*sums)(const float *, int, float, double *, double *) = sums_shift;
#if NN_X86
    if (bn_wide(S)) sums = sums_shift8;
#endif
    for (int c0 = 0; c0 < C; c0 += BN_BLOCK) {
        const int c1 = C - c0 < BN_BLOCK ? C : c0 + BN_BLOCK;
        /* One pass over the batch for both moments, about a shift k near
         * the mean (the first image's mean), so that the variance,
         * E(x - k)^2 - (E(x - k))^2, cancels little: the batch is
         * several MB, and a pass for the mean and another for the
         * squares about it read it twice (a third of the forward's
         * traffic). Float partial sums per plane (vectorised), double
         * across. */
        double s1[BN_BLOCK] = {0}, s2[BN_BLOCK] = {0};
        float k[BN_BLOCK];
        for (int c = c0; c < c1; c++) k[c - c0] = (float)(sum_f(x + (size_t)c * S, S) / S);
        for (int b = 0; b < n; b++)
            for (int c = c0; c < c1; c++) {
                double a, q;
                sums(x + ((size_t)b * C + c) * S, S, k[c - c0], &a, &q);
                s1[c - c0] += a;
                s2[c - c0] += q;
            }
        for (int c = c0; c < c1; c++) {
            const double d = s1[c - c0] / cnt, mean = k[c - c0] + d, v = s2[c - c0] / cnt - d * d,
                         var = v > 0.0 ? v : 0.0;
            mean_out[c] = (float)mean;
            inv[c] = (float)(1.0 / sqrt(var + eps));
            if (run_mean) {
                float m = momentum;
                double unb = cnt > 1 ? var * cnt / (cnt - 1) : var;
                run_mean[c] = (1.0f - m) * run_mean[c] + m * (float)mean;
                run_var[c] = (1.0f - m) * run_var[c] + m * (float)unb;
            }
        }
    }
    if (y) nn_batchnorm_output(y, x, mean_out, inv, gamma, beta, n, C, S, relu);
}

void nn_batchnorm_output(float *y, const float *x, const float *mean, const float *inv,
                         const float *gamma, const float *beta, int n, int C, int S, int relu)
{
    for (int b = 0; b < n; b++)
        for (int c = 0; c < C; c++) {
            const float *xi = x + ((size_t)b * C + c) * S;
            float *yi = y + ((size_t)b * C + c) * S;
            const float fm = mean[c], iv = inv[c], gc = gamma[c], bc = beta[c];
#if NN_X86
            if (bn_wide(S)) {
                bn_norm8(yi, xi, S, fm, iv, gc, bc, relu);
                continue;
            }
#endif
            for (int s = 0; s < S; s++) yi[s] = nn_bn_y1(xi[s], fm, iv, gc, bc, relu);
        }
}

void nn_batchnorm_forward_train_ref(float *y, float *xhat, float *inv, const float *x,
                                    const float *gamma, const float *beta, float eps, int n, int C,
                                    int S)
{
    for (int c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0, cnt = (double)n * S;
        for (int b = 0; b < n; b++)
            for (int s = 0; s < S; s++) sum += x[((size_t)b * C + c) * S + s];
        double mean = sum / cnt;
        for (int b = 0; b < n; b++)
            for (int s = 0; s < S; s++) {
                double d = x[((size_t)b * C + c) * S + s] - mean;
                sq += d * d;
            }
        double iv = 1.0 / sqrt(sq / cnt + eps);
        inv[c] = (float)iv;
        for (int b = 0; b < n; b++)
            for (int s = 0; s < S; s++) {
                size_t i = ((size_t)b * C + c) * S + s;
                double h = (x[i] - mean) * iv;
                xhat[i] = (float)h;
                y[i] = (float)(gamma[c] * h + beta[c]);
            }
    }
}

/* One plane of dx from dy (masked where the ReLU followed: relu_masked4),
 * x and its channel's mean, inverse deviation, gamma and beta (for the
 * mask), gamma inv and the two means of the sums. */
static void bn_dx_plane(float *o, const float *d, const float *xr, int relu, int S, float fm,
                        float iv, float gc, float bc, float g, float m1, float m2)
{
    const v4f mv = {fm, fm, fm, fm}, ivv = {iv, iv, iv, iv}, gcv = {gc, gc, gc, gc},
              bcv = {bc, bc, bc, bc};
    const v4f gv = {g, g, g, g}, m1v = {m1, m1, m1, m1}, m2v = {m2, m2, m2, m2};
    int s = 0;
    for (; s + 4 <= S; s += 4) {
        const v4f h = xhat4(xr + s, mv, ivv);
        v4f v;
        if (relu)
            v = relu_masked4(d + s, h, gcv, bcv);
        else
            memcpy(&v, d + s, sizeof v);
        v = gv * (v - m1v - h * m2v);
        memcpy(o + s, &v, sizeof v);
    }
    for (; s < S; s++) {
        const float h = (xr[s] - fm) * iv, dv = relu ? relu_masked1(d[s], h, gc, bc) : d[s];
        o[s] = g * (dv - m1 - h * m2);
    }
}

void nn_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *mean, const float *inv, const float *gamma,
                           const float *beta, int n, int C, int S, int relu)
{
    const double cnt = (double)n * S;
    const int wide = bn_wide(S);
    for (int c0 = 0; c0 < C; c0 += BN_BLOCK) {
        const int c1 = C - c0 < BN_BLOCK ? C : c0 + BN_BLOCK;
        double sdy[BN_BLOCK] = {0}, sdyx[BN_BLOCK] = {0};
        for (int b = 0; b < n; b++)
            for (int c = c0; c < c1; c++) {
                const size_t at = ((size_t)b * C + c) * S;
                double s1 = 0.0, s2 = 0.0;
                if (wide) {
#if NN_X86
                    sums8(dy + at, x + at, mean[c], inv[c], gamma[c], beta[c], relu, S, &s1, &s2);
#endif
                } else if (relu) {
                    sums_masked(dy + at, x + at, mean[c], inv[c], gamma[c], beta[c], S, &s1, &s2);
                } else {
                    s1 = sum_f(dy + at, S);
                    s2 = dot_xhat(dy + at, x + at, mean[c], inv[c], S);
                }
                sdy[c - c0] += s1;
                sdyx[c - c0] += s2;
            }
        for (int c = c0; c < c1; c++) {
            dgamma[c] += (float)sdyx[c - c0];
            dbeta[c] += (float)sdy[c - c0];
        }
        if (!dx) continue;
        void (*plane)(float *, const float *, const float *, int, int, float, float, float, float,
                      float, float, float) = bn_dx_plane;
#if NN_X86
        if (wide) plane = bn_dx_plane8;
#endif
        for (int b = 0; b < n; b++)
            for (int c = c0; c < c1; c++) {
                const size_t at = ((size_t)b * C + c) * S;
                plane(dx + at, dy + at, x + at, relu, S, mean[c], inv[c], gamma[c], beta[c],
                      gamma[c] * inv[c], (float)(sdy[c - c0] / cnt), (float)(sdyx[c - c0] / cnt));
            }
    }
}

void nn_batchnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *xhat, const float *inv, const float *gamma, int n,
                               int C, int S)
{
    double cnt = (double)n * S;
    for (int c = 0; c < C; c++) {
        double sdy = 0.0, sdyx = 0.0;
        for (int b = 0; b < n; b++)
            for (int s = 0; s < S; s++) {
                size_t i = ((size_t)b * C + c) * S + s;
                sdy += dy[i];
                sdyx += (double)dy[i] * xhat[i];
            }
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        if (!dx) continue;
        for (int b = 0; b < n; b++)
            for (int s = 0; s < S; s++) {
                size_t i = ((size_t)b * C + c) * S + s;
                dx[i] = (float)((double)gamma[c] * inv[c] *
                                (dy[i] - sdy / cnt - (double)xhat[i] * (sdyx / cnt)));
            }
    }
}

/* ---- deskew -------------------------------------------------------------- */

float nn_deskew_alpha(const float *x, int H, int W, float bg, float *my)
{
    double t = 0.0, sy = 0.0, sx = 0.0;
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) {
            double r = x[i * W + j] - bg;
            if (r <= 0.0) continue;
            t += r;
            sy += r * i;
            sx += r * j;
        }
    *my = (float)(H - 1) / 2.0f;
    if (!(t > 1e-6)) return 0.0f;
    double cy = sy / t, cx = sx / t, vyy = 0.0, cxy = 0.0;
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) {
            double r = x[i * W + j] - bg;
            if (r <= 0.0) continue;
            vyy += r * (i - cy) * (i - cy);
            cxy += r * (i - cy) * (j - cx);
        }
    *my = (float)cy;
    if (!(vyy > 1e-6 * t)) return 0.0f;
    double a = cxy / vyy;
    return (float)(a > 1.0 ? 1.0 : a < -1.0 ? -1.0 : a);
}

/* Row i of a deskewed plane samples the input at columns j + k + f:
 * returns f in [0, 1) and sets k, the whole part of a (i - my). */
static float row_shift(float a, int i, float my, int *k)
{
    float s = a * ((float)i - my);
    *k = (int)floorf(s);
    return s - (float)*k;
}

void nn_deskew_forward(float *y, const float *x, int H, int W, float bg)
{
    float my, a = nn_deskew_alpha(x, H, W, bg, &my);
    for (int i = 0; i < H; i++) {
        const float *xr = x + (size_t)i * W;
        float *yr = y + (size_t)i * W;
        int k;
        float f = row_shift(a, i, my, &k);
        for (int j = 0; j < W; j++) {
            int j0 = j + k, j1 = j0 + 1;
            float v0 = j0 >= 0 && j0 < W ? xr[j0] - bg : 0.0f;
            float v1 = j1 >= 0 && j1 < W ? xr[j1] - bg : 0.0f;
            yr[j] = bg + (1.0f - f) * v0 + f * v1;
        }
    }
}

void nn_deskew_backward(float *dx, const float *dy, const float *x, int H, int W, float bg)
{
    float my, a = nn_deskew_alpha(x, H, W, bg, &my);
    memset(dx, 0, sizeof(float) * (size_t)H * W);
    for (int i = 0; i < H; i++) {
        const float *dr = dy + (size_t)i * W;
        float *xr = dx + (size_t)i * W;
        int k;
        float f = row_shift(a, i, my, &k);
        for (int j = 0; j < W; j++) {
            int j0 = j + k, j1 = j0 + 1;
            if (j0 >= 0 && j0 < W) xr[j0] += (1.0f - f) * dr[j];
            if (j1 >= 0 && j1 < W) xr[j1] += f * dr[j];
        }
    }
}

void nn_deskew_forward_n(float *y, const float *x, size_t planes, int H, int W, float bg)
{
    size_t S = (size_t)H * W;
    for (size_t p = 0; p < planes; p++) nn_deskew_forward(y + p * S, x + p * S, H, W, bg);
}

void nn_deskew_backward_n(float *dx, const float *dy, const float *x, size_t planes, int H, int W,
                          float bg)
{
    size_t S = (size_t)H * W;
    for (size_t p = 0; p < planes; p++)
        nn_deskew_backward(dx + p * S, dy + p * S, x + p * S, H, W, bg);
}
