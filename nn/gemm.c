/* gemm.c - blocked, packed single-precision GEMM with run-time SIMD choice.
 *
 * Structure (for C[M,N] = alpha op(A) op(B) + beta C, row-major):
 *
 *   for each K block of kc (<= KC) rows of op(B):
 *     for each M block of mc (<= MC) rows of op(A):
 *       pack op(A)[mc, kc] into slivers of MR rows, k-major   (stays in L2)
 *       for each panel of NR columns of op(B):
 *         B panel [kc, NR]: read in place when tb == 0 and the panel is
 *         full, else packed (transposed / zero-padded)        (stays in L1)
 *         for each sliver: micro-kernel, a [mr, NR] tile of C in registers
 *
 * The M block is made large (MC up to 240 rows) because our matrices are
 * skinny: the weights (conv) or the batch (dense) are the M side, and
 * a large MC means B panels are packed at most once or twice.
 *
 * Micro-kernels are one template (a macro) instantiated per instruction set
 * and per tile shape: r rows (1..MR) times v vectors (1..NV). Edge tiles
 * get the kernel of their exact row count, so M = 1 or M = 7 do not pay for
 * a full MR-row tile; columns past N are computed on zero padding and
 * discarded through a scratch tile. Tiles with few accumulators also split
 * the k loop over several accumulator sets so FMA latency stays hidden.
 *
 * The same template instantiated with portable GCC vectors is the generic
 * path; "generic-wide" uses the AVX-512 tile geometry (8 x 32) with portable
 * vectors, so the AVX-512 driver logic is tested on machines without it.
 *
 * Special cases: tiny products use a plain loop (no packing set-up cost);
 * op(B) = B^T with one or two rows of A (batch-1 dense inference, weights
 * stored [out, in]) uses dot products along k, which read B once, in place.
 *
 * Per-thread packing memory is allocated on a thread's first blocked call
 * and freed at thread exit; see gemm_ws(). If that allocation fails the
 * plain loop is used, so nn_gemm never fails.
 */
#include "nn/gemm.h"
#include "nn/err.h"
#include "nn/simd.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if NN_X86
#include <immintrin.h>
#endif

/* Largest blocking parameters over all paths (workspace size). */
#define GEMM_KC_MAX 256
#define GEMM_MC_MAX 240
#define GEMM_NR_MAX 32
/* Rows of the tallest micro-kernel: MR + 1 on the 8-row paths (a sliver
 * of 9 rows where A is read in place; see gemm_blocked). */
#define GEMM_ROWS_MAX 9
/* A kernel's two vectors lie in one nn_gemm_bpanels panel, or one in each
 * of two neighbours (a vector never straddles panels). */
_Static_assert(GEMM_NR_MAX <= 2 * NN_GEMM_BPANEL && NN_GEMM_BPANEL % 16 == 0,
               "kernel width against the B panels");
/* Below this many multiply-adds the plain loop wins over packing. */
#define GEMM_TINY_MNK 2048
/* A read in place, not packed, up to this many columns (gemm_blocked). */
#define GEMM_A_DIRECT_N 64
/* op(B) = B^T with at most this many rows of A: dot-product path. */
#define GEMM_DOT_M_MAX 2

typedef ptrdiff_t idx;

/* One micro-kernel: C[r, nr] (=|+=) alpha * A[r, kc] B[kc, nr] (+ beta C),
 * r fixed by the kernel. a: packed sliver, k-major with the path's MR
 * stride, or with lda_a != 0 A itself, rows lda_a apart; b: rows of the B panel ldb floats apart, or, with ro != NULL, row
 * k at b + ro[k]; a row's v-th vector at b + v*vs (vs = VL, or the
 * distance between two nn_gemm_bpanels panels); nr <= v*VL columns are
 * stored. beta == 0: C is not read. */
typedef void (*gemm_kernel)(int kc, const float *a, idx lda_a, const float *b,
                            idx ldb, idx vs, const idx *ro, float *c, idx ldc,
                            float alpha, float beta, int nr);
/* Dot-product kernel: out[j] = sum_k a[k] * b[j*ldb + k], j < nb <= 4. */
typedef void (*gemm_dot)(int K, const float *a, const float *b, idx ldb,
                         int nb, float *out);
/* C[ra, rb] += A[ra, L] B^T over up to 3 rows of A (lda apart) and 4 rows
 * of B (pointers): see nn_gemm_rows_nt. */
typedef void (*gemm_dotblk)(int L, const float *a, idx lda, int ra,
                            const float *const *b, int rb, float *c, idx ldc);

/* The k loop of a micro-kernel, B row u of the current step at ROWU;
 * STEP advances B past KU rows, STEP1 past one. A's element (row r, step
 * u) is AEL(u, r); ASTEP(n) advances A past n steps. */
#define GEMM_KLOOP(VT, VL, BC, FM, R, V, ROWU, STEP, STEP1, AEL, ASTEP)      \
    {                                                                         \
        for (; k + KU <= kc; k += KU) {                                       \
            _Pragma("GCC unroll 8") for (int u = 0; u < KU; u++) {            \
                VT bv[V];                                                     \
                const float *bu = ROWU;                                       \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)           \
                    memcpy(&bv[v], bu + v * vs, sizeof(VT));                  \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {         \
                    VT ar = BC(AEL(u, r));                                    \
                    _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)       \
                        acc[u][r][v] = FM(ar, bv[v], acc[u][r][v]);           \
                }                                                             \
            }                                                                 \
            ASTEP(KU);                                                        \
            STEP;                                                             \
        }                                                                     \
        for (; k < kc; k++) {                                                 \
            VT bv[V];                                                         \
            const int u = 0;                                                  \
            const float *bu = ROWU;                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)               \
                memcpy(&bv[v], bu + v * vs, sizeof(VT));                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {             \
                VT ar = BC(AEL(0, r));                                        \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)           \
                    acc[0][r][v] = FM(ar, bv[v], acc[0][r][v]);               \
            }                                                                 \
            ASTEP(1);                                                         \
            STEP1;                                                            \
        }                                                                     \
    }

/* A packed in slivers (k-major, stride as_), or read in place (row-major,
 * rows lda_a apart). */
#define GEMM_A_PACKED(u, r) a[(u) * as_ + (r)]
#define GEMM_A_PACKED_STEP(n) (a += (n) * as_)
#define GEMM_A_DIRECT(u, r) a[(r) * lda_a + (u)]
#define GEMM_A_DIRECT_STEP(n) (a += (n))

/* ---- the micro-kernel template ------------------------------------------
 * VT: vector type of VL floats; BC(x): broadcast; FM(a,b,c): a*b+c (fused
 * where the ISA has it); AS: A sliver stride (the path's MR); R rows; V
 * vectors per row. KU accumulator sets keep at least 8 FMAs in flight. */
#define GEMM_DEFINE_KERNEL(NAME, ATTR, VT, VL, BC, FM, AS, R, V)              \
    ATTR static void NAME(int kc, const float *restrict a, idx lda_a,         \
                          const float *restrict b, idx ldb, idx vs,           \
                          const idx *restrict ro, float *restrict c,          \
                          idx ldc, float alpha, float beta, int nr)           \
    {                                                                         \
        enum { KU = (R) * (V) >= 8 ? 1 : (R) * (V) >= 4 ? 2                   \
                    : (R) * (V) >= 2 ? 4 : 8 };                               \
        VT acc[KU][R][V];                                                     \
        /* C is usually beyond L2: start its lines coming during the k loop \
         * instead of stalling on them after it. */                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                 \
            __builtin_prefetch(c + r * ldc, 1);                               \
            __builtin_prefetch(c + r * ldc + (V) * (VL) - 1, 1);              \
        }                                                                     \
        _Pragma("GCC unroll 8") for (int u = 0; u < KU; u++)                  \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                   \
            acc[u][r][v] = BC(0.0f);                                          \
        int k = 0;                                                            \
        const int as_ = AS;                                                   \
        if (ro && lda_a)                                                      \
            GEMM_KLOOP(VT, VL, BC, FM, R, V, b + ro[u], ro += KU, ro++,       \
                       GEMM_A_DIRECT, GEMM_A_DIRECT_STEP)                     \
        else if (ro)                                                          \
            GEMM_KLOOP(VT, VL, BC, FM, R, V, b + ro[u], ro += KU, ro++,       \
                       GEMM_A_PACKED, GEMM_A_PACKED_STEP)                     \
        else if (lda_a)                                                       \
            GEMM_KLOOP(VT, VL, BC, FM, R, V, b + u * ldb, b += KU * ldb,      \
                       b += ldb, GEMM_A_DIRECT, GEMM_A_DIRECT_STEP)           \
        else                                                                  \
            GEMM_KLOOP(VT, VL, BC, FM, R, V, b + u * ldb, b += KU * ldb,      \
                       b += ldb, GEMM_A_PACKED, GEMM_A_PACKED_STEP)           \
        _Pragma("GCC unroll 8") for (int u = 1; u < KU; u++)                  \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                   \
            acc[0][r][v] += acc[u][r][v];                                     \
        VT va = BC(alpha);                                                    \
        if (nr == (V) * (VL)) {                                               \
            if (beta == 0.0f) {                                               \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)           \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) {         \
                    VT t = acc[0][r][v] * va;                                 \
                    memcpy(c + r * ldc + v * VL, &t, sizeof(VT));             \
                }                                                             \
            } else {                                                          \
                VT vb = BC(beta);                                             \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)           \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) {         \
                    VT t;                                                     \
                    memcpy(&t, c + r * ldc + v * VL, sizeof(VT));             \
                    t = FM(t, vb, acc[0][r][v] * va);                         \
                    memcpy(c + r * ldc + v * VL, &t, sizeof(VT));             \
                }                                                             \
            }                                                                 \
        } else {                                                              \
            /* Edge tile: only nr columns exist in C. */                      \
            float t[(R) * (V) * (VL)];                                        \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)               \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)               \
                memcpy(t + (r * (V) + v) * (VL), &acc[0][r][v], sizeof(VT));  \
            for (int r = 0; r < R; r++) {                                     \
                float *cr = c + r * ldc;                                      \
                const float *tr = t + r * (V) * (VL);                         \
                if (beta == 0.0f)                                             \
                    for (int j = 0; j < nr; j++) cr[j] = alpha * tr[j];       \
                else                                                          \
                    for (int j = 0; j < nr; j++)                              \
                        cr[j] = alpha * tr[j] + beta * cr[j];                 \
            }                                                                 \
        }                                                                     \
    }

/* Dot products of one contiguous row a with up to 4 rows of b (in place),
 * two vectors per row in flight: 8 independent accumulators. */
#define GEMM_DEFINE_DOT(NAME, ATTR, VT, VL, BC, FM)                           \
    ATTR static void NAME(int K, const float *restrict a,                     \
                          const float *restrict b, idx ldb, int nb,           \
                          float *restrict out)                                \
    {                                                                         \
        const float *row[4];                                                  \
        for (int j = 0; j < 4; j++) row[j] = b + (j < nb ? j : 0) * ldb;      \
        VT acc[4][2];                                                         \
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)                   \
            acc[j][0] = acc[j][1] = BC(0.0f);                                 \
        int k = 0;                                                            \
        for (; k + 2 * (VL) <= K; k += 2 * (VL)) {                            \
            VT a0, a1;                                                        \
            memcpy(&a0, a + k, sizeof(VT));                                   \
            memcpy(&a1, a + k + (VL), sizeof(VT));                            \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {             \
                VT b0, b1;                                                    \
                memcpy(&b0, row[j] + k, sizeof(VT));                          \
                memcpy(&b1, row[j] + k + (VL), sizeof(VT));                   \
                acc[j][0] = FM(a0, b0, acc[j][0]);                            \
                acc[j][1] = FM(a1, b1, acc[j][1]);                            \
            }                                                                 \
        }                                                                     \
        /* One more vector: K = 400 or 84 on AVX-512 (LeNet's dense layers) \
         * would otherwise leave 16 or 20 products to the scalar tail. */    \
        if (k + (VL) <= K) {                                                  \
            VT a0;                                                            \
            memcpy(&a0, a + k, sizeof(VT));                                   \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {             \
                VT b0;                                                        \
                memcpy(&b0, row[j] + k, sizeof(VT));                          \
                acc[j][0] = FM(a0, b0, acc[j][0]);                            \
            }                                                                 \
            k += (VL);                                                        \
        }                                                                     \
        /* Lanes summed by halving (a tree 4 adds deep for 16 lanes, not a \
         * chain of 16: the chains were a third of LeNet's dense layers at \
         * batch 1), the four rows side by side. */                         \
        float t[4][VL];                                                       \
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {                 \
            VT s = acc[j][0] + acc[j][1];                                     \
            memcpy(t[j], &s, sizeof(VT));                                     \
        }                                                                     \
        _Pragma("GCC unroll 5") for (int w = (VL) / 2; w >= 1; w /= 2)        \
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)                   \
        _Pragma("GCC unroll 8") for (int l = 0; l < w; l++)                   \
            t[j][l] += t[j][l + w];                                           \
        for (int j = 0; j < nb; j++) {                                        \
            float sum = t[j][0];                                              \
            for (int kk = k; kk < K; kk++) sum += a[kk] * row[j][kk];         \
            out[j] = sum;                                                     \
        }                                                                     \
    }

/* A 3 x 4 block of long dot products: rows of A against rows of B, both
 * contiguous along L. 12 accumulators, 3 + 4 loads per 12 FMAs; the
 * horizontal sums happen once per call. Missing rows (ra < 3, rb < 4)
 * alias row 0 and are not stored. */
#define GEMM_DEFINE_DOTBLK(NAME, ATTR, VT, VL, BC, FM)                        \
    ATTR static void NAME(int L, const float *restrict a, idx lda, int ra,    \
                          const float *const *b, int rb, float *restrict c,   \
                          idx ldc)                                            \
    {                                                                         \
        const float *ar[3], *br[4];                                           \
        for (int i = 0; i < 3; i++) ar[i] = a + (i < ra ? i : 0) * lda;       \
        for (int j = 0; j < 4; j++) br[j] = b[j < rb ? j : 0];                \
        VT acc[3][4];                                                         \
        _Pragma("GCC unroll 3") for (int i = 0; i < 3; i++)                   \
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++)                   \
            acc[i][j] = BC(0.0f);                                             \
        int l = 0;                                                            \
        for (; l + (VL) <= L; l += (VL)) {                                    \
            VT va[3];                                                         \
            _Pragma("GCC unroll 3") for (int i = 0; i < 3; i++)               \
                memcpy(&va[i], ar[i] + l, sizeof(VT));                        \
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {             \
                VT vb;                                                        \
                memcpy(&vb, br[j] + l, sizeof(VT));                           \
                _Pragma("GCC unroll 3") for (int i = 0; i < 3; i++)           \
                    acc[i][j] = FM(va[i], vb, acc[i][j]);                     \
            }                                                                 \
        }                                                                     \
        for (int i = 0; i < ra; i++)                                          \
            for (int j = 0; j < rb; j++) {                                    \
                float t[VL], sum = 0.0f;                                      \
                memcpy(t, &acc[i][j], sizeof(VT));                            \
                for (int u = 0; u < (VL); u++) sum += t[u];                   \
                for (int kk = l; kk < L; kk++) sum += ar[i][kk] * br[j][kk];  \
                c[i * ldc + j] += sum;                                        \
            }                                                                 \
    }

/* Instantiate every tile shape r x v of a path (v = 1, 2). */
#define GEMM_DEFINE_ROW(P, ATTR, VT, VL, BC, FM, AS, R)                       \
    GEMM_DEFINE_KERNEL(P##_##R##x1, ATTR, VT, VL, BC, FM, AS, R, 1)           \
    GEMM_DEFINE_KERNEL(P##_##R##x2, ATTR, VT, VL, BC, FM, AS, R, 2)
#define GEMM_ROW_PTRS(P, R) { P##_##R##x1, P##_##R##x2 }

/* ---- portable paths (GCC vector extensions) ----------------------------- */
typedef float v4f __attribute__((vector_size(16)));
typedef float v16f __attribute__((vector_size(64)));

/* Macros, not functions: a function taking or returning a 64-byte vector
 * has a different ABI with and without AVX-512 (and GCC warns). */
#define bc4(x) ((v4f){(x), (x), (x), (x)})
#define fm4(a, b, c) ((a) * (b) + (c))
#define bc16(x)                                                               \
    ((v16f){(x), (x), (x), (x), (x), (x), (x), (x),                           \
            (x), (x), (x), (x), (x), (x), (x), (x)})
#define fm16(a, b, c) ((a) * (b) + (c))

#define GEN_ROW(R) GEMM_DEFINE_ROW(gen, , v4f, 4, bc4, fm4, 6, R)
GEN_ROW(1) GEN_ROW(2) GEN_ROW(3) GEN_ROW(4) GEN_ROW(5) GEN_ROW(6)
GEMM_DEFINE_DOT(gen_dot, , v4f, 4, bc4, fm4)
GEMM_DEFINE_DOTBLK(gen_dotblk, , v4f, 4, bc4, fm4)
static const gemm_kernel gen_kernels[GEMM_ROWS_MAX][2] = {
    GEMM_ROW_PTRS(gen, 1), GEMM_ROW_PTRS(gen, 2), GEMM_ROW_PTRS(gen, 3),
    GEMM_ROW_PTRS(gen, 4), GEMM_ROW_PTRS(gen, 5), GEMM_ROW_PTRS(gen, 6),
};

#define GENW_ROW(R) GEMM_DEFINE_ROW(genw, , v16f, 16, bc16, fm16, 8, R)
GENW_ROW(1) GENW_ROW(2) GENW_ROW(3) GENW_ROW(4)
GENW_ROW(5) GENW_ROW(6) GENW_ROW(7) GENW_ROW(8) GENW_ROW(9)
GEMM_DEFINE_DOT(genw_dot, , v16f, 16, bc16, fm16)
GEMM_DEFINE_DOTBLK(genw_dotblk, , v16f, 16, bc16, fm16)
static const gemm_kernel genw_kernels[GEMM_ROWS_MAX][2] = {
    GEMM_ROW_PTRS(genw, 1), GEMM_ROW_PTRS(genw, 2), GEMM_ROW_PTRS(genw, 3),
    GEMM_ROW_PTRS(genw, 4), GEMM_ROW_PTRS(genw, 5), GEMM_ROW_PTRS(genw, 6),
    GEMM_ROW_PTRS(genw, 7), GEMM_ROW_PTRS(genw, 8), GEMM_ROW_PTRS(genw, 9),
};

/* ---- x86 paths ------------------------------------------------------------ */
#if NN_X86
#define AVX2_ATTR __attribute__((target("avx2,fma")))
#define AVX512_ATTR __attribute__((target("avx512f,avx2,fma")))
#define AVX2_ROW(R)                                                           \
    GEMM_DEFINE_ROW(avx2, AVX2_ATTR, __m256, 8, _mm256_set1_ps,               \
                    _mm256_fmadd_ps, 6, R)
AVX2_ROW(1) AVX2_ROW(2) AVX2_ROW(3) AVX2_ROW(4) AVX2_ROW(5) AVX2_ROW(6)
GEMM_DEFINE_DOT(avx2_dot, AVX2_ATTR, __m256, 8, _mm256_set1_ps,
                _mm256_fmadd_ps)
GEMM_DEFINE_DOTBLK(avx2_dotblk, AVX2_ATTR, __m256, 8, _mm256_set1_ps,
                   _mm256_fmadd_ps)
static const gemm_kernel avx2_kernels[GEMM_ROWS_MAX][2] = {
    GEMM_ROW_PTRS(avx2, 1), GEMM_ROW_PTRS(avx2, 2), GEMM_ROW_PTRS(avx2, 3),
    GEMM_ROW_PTRS(avx2, 4), GEMM_ROW_PTRS(avx2, 5), GEMM_ROW_PTRS(avx2, 6),
};

#define AVX512_ROW(R)                                                         \
    GEMM_DEFINE_ROW(avx512, AVX512_ATTR, __m512, 16, _mm512_set1_ps,          \
                    _mm512_fmadd_ps, 8, R)
AVX512_ROW(1) AVX512_ROW(2) AVX512_ROW(3) AVX512_ROW(4)
AVX512_ROW(5) AVX512_ROW(6) AVX512_ROW(7) AVX512_ROW(8) AVX512_ROW(9)
GEMM_DEFINE_DOT(avx512_dot, AVX512_ATTR, __m512, 16, _mm512_set1_ps,
                _mm512_fmadd_ps)
GEMM_DEFINE_DOTBLK(avx512_dotblk, AVX512_ATTR, __m512, 16, _mm512_set1_ps,
                   _mm512_fmadd_ps)
static const gemm_kernel avx512_kernels[GEMM_ROWS_MAX][2] = {
    GEMM_ROW_PTRS(avx512, 1), GEMM_ROW_PTRS(avx512, 2),
    GEMM_ROW_PTRS(avx512, 3), GEMM_ROW_PTRS(avx512, 4),
    GEMM_ROW_PTRS(avx512, 5), GEMM_ROW_PTRS(avx512, 6),
    GEMM_ROW_PTRS(avx512, 7), GEMM_ROW_PTRS(avx512, 8),
    GEMM_ROW_PTRS(avx512, 9),
};

static int have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int have_avx512(void)
{
    __builtin_cpu_init();
    return have_avx2() && __builtin_cpu_supports("avx512f");
}
#endif

static int always(void) { return 1; }

/* ---- paths and dispatch ---------------------------------------------------- */
struct gemm_path {
    const char *name;
    int (*supported)(void);
    const gemm_kernel (*kernels)[2]; /* [rows - 1][vectors - 1], rows up to
                                        mr, or mr + 1 where not NULL */
    gemm_dot dot;
    gemm_dotblk dotblk;
    int mr, vl, kc, mc;              /* NR = 2 * vl */
};

static const struct gemm_path paths[NN_GEMM_PATH_COUNT] = {
    [NN_GEMM_PATH_GENERIC] = {"generic", always, gen_kernels, gen_dot, gen_dotblk,
                              6, 4, 256, 240},
    [NN_GEMM_PATH_GENERIC_WIDE] = {"generic-wide", always, genw_kernels,
                                   genw_dot, genw_dotblk, 8, 16, 192, 240},
#if NN_X86
    [NN_GEMM_PATH_AVX2] = {"avx2", have_avx2, avx2_kernels, avx2_dot, avx2_dotblk,
                           6, 8, 256, 240},
    [NN_GEMM_PATH_AVX512] = {"avx512", have_avx512, avx512_kernels,
                             avx512_dot, avx512_dotblk, 8, 16, 192, 240},
#endif
};

/* The cap NN_ISA sets (nn_gemm_init_env): the most capable rank a path
 * may have. Ranks: the portable paths 0, AVX2 1, AVX-512 2. */
static int path_rank(int path)
{
    switch (path) {
    case NN_GEMM_PATH_AVX2: return 1;
    case NN_GEMM_PATH_AVX512: return 2;
    default: return 0;
    }
}
#define GEMM_CAP_NONE 99

/* -1 until first use; then the chosen path. Relaxed atomics: the values
 * are plain indices, no other memory is published through them. */
static _Atomic int gemm_current = -1;
static _Atomic int gemm_cap = -1; /* -1: NN_ISA not read yet */

static int cpu_runs(int path)
{
    if (path < 0 || path >= NN_GEMM_PATH_COUNT) return 0;
    const struct gemm_path *p = &paths[path];
    return p->name != NULL && p->supported();
}

/* Parses NN_ISA's value: the cap's rank, or -1 (unknown) / -2 (the CPU or
 * this build lacks it). NULL or "" or "auto" mean no cap. */
static int cap_parse(const char *v, int *path)
{
    *path = NN_GEMM_PATH_AUTO;
    if (v == NULL || *v == '\0' || strcmp(v, "auto") == 0) return GEMM_CAP_NONE;
    for (int p = 0; p < NN_GEMM_PATH_COUNT; p++) {
        if (paths[p].name == NULL || strcmp(v, paths[p].name) != 0) continue;
        *path = p;
        return cpu_runs(p) ? path_rank(p) : -2;
    }
    return -1;
}

static int cap_get(void)
{
    int c = atomic_load_explicit(&gemm_cap, memory_order_relaxed);
    if (c >= 0) return c;
    /* First use without nn_gemm_init_env: honour a valid NN_ISA, ignore a
     * bad one (programs call nn_gemm_init_env first and report it). */
    int p;
    c = cap_parse(getenv(NN_GEMM_ENV), &p);
    if (c < 0) c = GEMM_CAP_NONE;
    atomic_store_explicit(&gemm_cap, c, memory_order_relaxed);
    return c;
}

static int best_path(void)
{
    static const int order[] = {NN_GEMM_PATH_AVX512, NN_GEMM_PATH_AVX2,
                                NN_GEMM_PATH_GENERIC};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (nn_gemm_path_supported(order[i])) return order[i];
    return NN_GEMM_PATH_GENERIC;
}

int nn_gemm_path_supported(int path)
{
    return cpu_runs(path) && path_rank(path) <= cap_get();
}

int nn_gemm_init_env(char *err, size_t errlen)
{
    const char *v = getenv(NN_GEMM_ENV);
    int p, c = cap_parse(v, &p);
    if (c == -1)
        return nn_errf(err, errlen,
                       "%s=%s: unknown kernel path (use auto, generic, avx2 "
                       "or avx512)", NN_GEMM_ENV, v);
    if (c == -2)
        return nn_errf(err, errlen, "%s=%s: this CPU cannot run the %s kernels",
                       NN_GEMM_ENV, v, v);
    atomic_store_explicit(&gemm_cap, c, memory_order_relaxed);
    /* The cap's own path when it names one (generic-wide is never chosen
     * on its own otherwise), else the best under the cap. */
    int pick = p != NN_GEMM_PATH_AUTO ? p : best_path();
    atomic_store_explicit(&gemm_current, pick, memory_order_relaxed);
    return 0;
}

int nn_gemm_set_path(int path)
{
    if (path == NN_GEMM_PATH_AUTO) path = best_path();
    if (!nn_gemm_path_supported(path)) return -1;
    atomic_store_explicit(&gemm_current, path, memory_order_relaxed);
    return 0;
}

int nn_gemm_get_path(void)
{
    int p = atomic_load_explicit(&gemm_current, memory_order_relaxed);
    if (p < 0) {
        p = best_path();
        atomic_store_explicit(&gemm_current, p, memory_order_relaxed);
    }
    return p;
}

const char *nn_gemm_path_name(int path)
{
    if (path == NN_GEMM_PATH_AUTO) path = nn_gemm_get_path();
    if (path < 0 || path >= NN_GEMM_PATH_COUNT || paths[path].name == NULL)
        return "unknown";
    return paths[path].name;
}

size_t nn_gemm_paths_list(char *buf, size_t len)
{
    static const int order[] = {NN_GEMM_PATH_GENERIC, NN_GEMM_PATH_AVX2,
                                NN_GEMM_PATH_AVX512};
    size_t n = 0;
    if (len) buf[0] = '\0';
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (!nn_gemm_path_supported(order[i])) continue;
        int w = snprintf(buf + (n < len ? n : len), n < len ? len - n : 0,
                         "%s%s", n ? " " : "", paths[order[i]].name);
        if (w > 0) n += (size_t)w;
    }
    return n;
}

/* ---- per-thread workspace ---------------------------------------------------
 * Heap, not a _Thread_local array: static TLS is allocated and zeroed in
 * every thread of the process (server threads that never multiply too) and
 * is carved out of each thread's stack. Here only threads that run the
 * blocked path pay, once, and the key's destructor frees it at exit. */
#define GEMM_WS_FLOATS                                                        \
    (GEMM_MC_MAX * GEMM_KC_MAX + GEMM_KC_MAX * GEMM_NR_MAX)

static pthread_key_t gemm_ws_key;
static pthread_once_t gemm_ws_once = PTHREAD_ONCE_INIT;
static int gemm_ws_key_ok;
static _Thread_local float *gemm_ws_tl;

static void gemm_ws_key_init(void)
{
    gemm_ws_key_ok = pthread_key_create(&gemm_ws_key, free) == 0;
}

static float *gemm_ws(void)
{
    if (gemm_ws_tl) return gemm_ws_tl;
    if (pthread_once(&gemm_ws_once, gemm_ws_key_init) != 0 || !gemm_ws_key_ok)
        return NULL;
    float *w = aligned_alloc(64, GEMM_WS_FLOATS * sizeof(float));
    if (!w) return NULL;
    if (pthread_setspecific(gemm_ws_key, w) != 0) {
        free(w);
        return NULL;
    }
    gemm_ws_tl = w;
    return w;
}

/* ---- reference and simple loops ------------------------------------------- */
static inline float opa(int ta, const float *A, idx lda, int i, int k)
{
    return ta ? A[(idx)k * lda + i] : A[(idx)i * lda + k];
}
static inline float opb(int tb, const float *B, idx ldb, int k, int j)
{
    return tb ? B[(idx)j * ldb + k] : B[(idx)k * ldb + j];
}

void nn_gemm_ref(int ta, int tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc)
{
    /* Double accumulation: the oracle should be more accurate than what it
     * checks, so test tolerances measure the fast path's error alone. */
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += (double)opa(ta, A, lda, i, k) * opb(tb, B, ldb, k, j);
            float *c = &C[(idx)i * ldc + j];
            *c = beta == 0.0f ? (float)(alpha * s)
                              : (float)(alpha * s + (double)beta * *c);
        }
}

static void gemm_scale(int M, int N, float beta, float *C, idx ldc)
{
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

/* Empty products: nothing to do, or C = beta * C (A and B unread). 1 if
 * handled. */
static int gemm_trivial(int M, int N, int K, float alpha, float beta, float *C,
                        idx ldc)
{
    if (M <= 0 || N <= 0) return 1;
    if (K > 0 && alpha != 0.0f) return 0;
    gemm_scale(M, N, beta, C, ldc);
    return 1;
}

/* Plain loop for tiny products (and the no-memory fallback): row of C
 * accumulated in a small stack buffer so op(B) rows are read in order. */
static void gemm_simple(int ta, int tb, int M, int N, int K, float alpha,
                        const float *A, idx lda, const float *B, idx ldb,
                        float beta, float *C, idx ldc)
{
    enum { CH = 256 };
    float acc[CH];
    for (int i = 0; i < M; i++)
        for (int j0 = 0; j0 < N; j0 += CH) {
            int nj = N - j0 < CH ? N - j0 : CH;
            if (tb) {
                /* Rows of B are contiguous in k: dot products. */
                for (int j = 0; j < nj; j++) {
                    const float *b = B + (idx)(j0 + j) * ldb;
                    float s = 0.0f;
                    for (int k = 0; k < K; k++)
                        s += opa(ta, A, lda, i, k) * b[k];
                    acc[j] = s;
                }
            } else {
                for (int j = 0; j < nj; j++) acc[j] = 0.0f;
                for (int k = 0; k < K; k++) {
                    float a = opa(ta, A, lda, i, k);
                    const float *b = B + (idx)k * ldb + j0;
                    for (int j = 0; j < nj; j++) acc[j] += a * b[j];
                }
            }
            float *c = C + i * ldc + j0;
            for (int j = 0; j < nj; j++)
                c[j] = beta == 0.0f ? alpha * acc[j]
                                    : alpha * acc[j] + beta * c[j];
        }
}

/* ---- packing ------------------------------------------------------------ */
/* Rows src[0..3] (row stride ls, kc floats each) interleaved into
 * o[k*os + 0..3]: the transposing core of both packers. */
static void pack_4rows(const float *src, idx ls, int kc, float *o, idx os)
{
    const float *s0 = src, *s1 = src + ls, *s2 = s1 + ls, *s3 = s2 + ls;
    int k = 0;
    for (; k + 4 <= kc; k += 4)
        tr4x4(s0 + k, s1 + k, s2 + k, s3 + k, o + k * os, os);
    for (; k < kc; k++) {
        float *ok = o + k * os;
        ok[0] = s0[k];
        ok[1] = s1[k];
        ok[2] = s2[k];
        ok[3] = s3[k];
    }
}

/* The same for 2 rows (the last two of a 6-row sliver). */
static void pack_2rows(const float *src, idx ls, int kc, float *o, idx os)
{
    typedef int v4i __attribute__((vector_size(16)));
    const float *s0 = src, *s1 = src + ls;
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
        v4f a, b;
        memcpy(&a, s0 + k, 16);
        memcpy(&b, s1 + k, 16);
        v4f lo = NN_SHUF4(a, b, 0, 4, 1, 5);
        v4f hi = NN_SHUF4(a, b, 2, 6, 3, 7);
        float *ok = o + k * os;
        memcpy(ok, &lo, 8);
        memcpy(ok + os, (const char *)&lo + 8, 8);
        memcpy(ok + 2 * os, &hi, 8);
        memcpy(ok + 3 * os, (const char *)&hi + 8, 8);
    }
    for (; k < kc; k++) {
        o[k * os] = s0[k];
        o[k * os + 1] = s1[k];
    }
}

/* op(A)[i0 .. i0+mc, k0 .. k0+kc] into slivers of mr rows: sliver s holds
 * element (r, k) at out[s*kc + k*mr + r]. A short last sliver keeps the
 * mr stride (its kernel reads only its rows). */
static void pack_a(int ta, const float *A, idx lda, int i0, int k0, int mc,
                   int kc, int mr, float *restrict out)
{
    for (int s = 0; s < mc; s += mr) {
        int rows = mc - s < mr ? mc - s : mr;
        float *o = out + (idx)s * kc;
        if (ta) {
            /* Copies of a constant size for whole slivers (the paths'
             * 8 or 6 rows): memcpy of a run-time size, a libc call per k
             * for 32 bytes, was 3% of the CNN's training step. */
            const float *a = A + (idx)k0 * lda + i0 + s;
            if (rows == 8)
                for (int k = 0; k < kc; k++)
                    memcpy(o + k * mr, a + (idx)k * lda, 8 * sizeof(float));
            else if (rows == 6)
                for (int k = 0; k < kc; k++)
                    memcpy(o + k * mr, a + (idx)k * lda, 6 * sizeof(float));
            else
                for (int k = 0; k < kc; k++)
                    for (int r = 0; r < rows; r++) o[k * mr + r] = a[(idx)k * lda + r];
            continue;
        }
        const float *src = A + (idx)(i0 + s) * lda + k0;
        int r = 0;
        for (; r + 4 <= rows; r += 4)
            pack_4rows(src + r * lda, lda, kc, o + r, mr);
        if (r + 2 <= rows) {
            pack_2rows(src + r * lda, lda, kc, o + r, mr);
            r += 2;
        }
        for (; r < rows; r++)
            for (int k = 0; k < kc; k++) o[k * mr + r] = src[r * lda + k];
    }
}

/* op(B)[k0 .. k0+kc, j0 .. j0+nr] into out[k*nrp + j], zero-padded to nrp
 * columns. */
static void pack_b(int tb, const float *B, idx ldb, int k0, int j0, int kc,
                   int nr, int nrp, float *restrict out)
{
    if (!tb) {
        for (int k = 0; k < kc; k++) {
            const float *src = B + (idx)(k0 + k) * ldb + j0;
            float *o = out + (idx)k * nrp;
            memcpy(o, src, (size_t)nr * sizeof(float));
            for (int j = nr; j < nrp; j++) o[j] = 0.0f;
        }
        return;
    }
    const float *src = B + (idx)j0 * ldb + k0;
    int j = 0;
    for (; j + 4 <= nr; j += 4) pack_4rows(src + j * ldb, ldb, kc, out + j, nrp);
    for (; j < nr; j++)
        for (int k = 0; k < kc; k++) out[(idx)k * nrp + j] = src[j * ldb + k];
    if (nr < nrp)
        for (int k = 0; k < kc; k++)
            for (int jj = nr; jj < nrp; jj++) out[(idx)k * nrp + jj] = 0.0f;
}

/* Reading a B panel in place saves packing it, which is what small M
 * needs (few slivers share each panel). With many slivers a packed
 * contiguous panel wins, and a row stride that is a multiple of 1 KiB maps
 * the panel's rows onto a few L1 sets, which thrash. */
static int b_in_place(idx ldb, int mc, int mr)
{
    if (mc > 12 * mr) return 0;
    return (ldb * (idx)sizeof(float)) % 1024 != 0;
}

/* ---- drivers ------------------------------------------------------------ */
/* packb != NULL: B is not a matrix but a callback that packs each panel
 * (nn_gemm_packed); B, ldb and tb are then unused. roff != NULL: row k of
 * B is at B + roff[k], read in place (nn_gemm_rows); ldb and tb unused.
 * bpan != NULL: B is given in nn_gemm_bpanels' layout (B and tb unused;
 * ldb the panels' rows, K or more: B's rows from bpan's on), read in
 * place a kernel's width at a time (at most a panel). */
static void gemm_blocked(const struct gemm_path *p, float *ws, int ta, int tb,
                         int M, int N, int K, float alpha, const float *A,
                         idx lda, const float *B, idx ldb, const idx *roff,
                         float beta, float *C, idx ldc, nn_gemm_pack_fn packb,
                         void *ctx, const float *bpan)
{
    const int mr = p->mr, vl = p->vl, nrf = 2 * vl;
    float *apack = ws;
    float *bpack = ws + GEMM_MC_MAX * GEMM_KC_MAX;
    /* Equal K blocks (e.g. 400 -> 2 x 200, not 256 + 144). One block
     * and one M block need no division: a batch-1 Winograd layer makes 36
     * small calls, where the divisions were a visible share. */
    int kcb = K;
    if (K > p->kc) {
        int nkb = (K + p->kc - 1) / p->kc;
        kcb = (K + nkb - 1) / nkb;
    }
    /* Few panels share each packed sliver of A when N is small (a
     * convolution's last layers at batch 1): packing A would cost as much
     * as the products, so the kernels read it in place. Up to 64 columns
     * on either path: AVX2's four 16-wide panels at N = 64 (the big CNN's
     * 64-channel Winograd layers at batch 1) measured its pass 140-144 ->
     * 137-138 us with A in place; training the same. */
    const int a_direct = !ta && N <= GEMM_A_DIRECT_N;
    int mcb = M;
    if (M > p->mc) {
        int nmb = (M + p->mc - 1) / p->mc;
        mcb = (M + nmb - 1) / nmb;
        mcb = (mcb + mr - 1) / mr * mr;
        if (mcb > p->mc) mcb = p->mc;
    }

    for (int k0 = 0; k0 < K; k0 += kcb) {
        int kc = K - k0 < kcb ? K - k0 : kcb;
        float bet = k0 == 0 ? beta : 1.0f;
        for (int i0 = 0; i0 < M; i0 += mcb) {
            int mc = M - i0 < mcb ? M - i0 : mcb;
            if (!a_direct) pack_a(ta, A, lda, i0, k0, mc, kc, mr, apack);
            int direct_b = !packb && b_in_place(ldb, mc, mr);
            /* Where A is read in place and the path has an (mr + 1)-row
             * kernel, one or two rows left over go one each into the
             * first slivers: 9 rows (the 12x12 and 10x10 batch-1
             * Winograd layers' tiles) run as one sliver, not 8 + a
             * 1-row tail whose kernel does two products per B row it
             * reads (those layers 11-13% faster). A tail of 3 or more
             * rows keeps its own kernel (36 rows as 4 x 9 measured no
             * faster than 4 x 8 + 4). */
            int wide = a_direct && mr < GEMM_ROWS_MAX && p->kernels[mr][0] ? mc % mr : 0;
            if (wide > 2 || wide > mc / mr) wide = 0;
            /* A tail of 1 to 3 rows after whole slivers that no wider
             * kernel took (AVX2's 6-row kernel and 9 rows: the big CNN's
             * 12x12 and 10x10 batch-1 Winograd layers) runs with the
             * last sliver as two blocks of nearly equal rows (5 + 4): a
             * 3-row block reads 5 vectors for every 6 multiply-adds (B's
             * two, A's three), a 5-row one 7 for 10. The 10x10 layer on
             * AVX2 22.6 -> 20.8 us, the pass 147.8 -> 146.3 (four
             * pairs). Kernels of under 4 rows keep two or more partial
             * sums a column (KU), the others one: those rows round
             * another way. Read in place only (a packed A is laid out in
             * slivers of mr). */
            const int split = a_direct && !wide;
            for (int j0 = 0; j0 < N; j0 += nrf) {
                int nr = N - j0 < nrf ? N - j0 : nrf;
                int nv = nr > vl ? 2 : 1;
                const float *bp;
                const idx *ro = NULL;
                idx bs, vs = vl;
                if (bpan) {
                    /* A kernel wider than a panel (AVX-512: two vectors
                     * of 16) takes its second vector from the next one. */
                    bp = bpan + (idx)(j0 / NN_GEMM_BPANEL) * ldb * NN_GEMM_BPANEL +
                         (idx)k0 * NN_GEMM_BPANEL + j0 % NN_GEMM_BPANEL;
                    bs = NN_GEMM_BPANEL;
                    if (nrf > NN_GEMM_BPANEL) vs = ldb * NN_GEMM_BPANEL;
                } else if (roff) {
                    bp = B + j0;
                    ro = roff + k0;
                    bs = 0;
                } else if (packb) {
                    packb(ctx, k0, kc, j0, nr, nv * vl, bpack);
                    bp = bpack;
                    bs = nv * vl;
                } else if (!tb && nr == nrf && direct_b) {
                    bp = B + (idx)k0 * ldb + j0;
                    bs = ldb;
                } else {
                    pack_b(tb, B, ldb, k0, j0, kc, nr, nv * vl, bpack);
                    bp = bpack;
                    bs = nv * vl;
                }
                for (int s = 0, rows; s < mc; s += rows) {
                    rows = s < wide * (mr + 1) ? mr + 1 : mc - s < mr ? mc - s : mr;
                    if (split && mc - s > mr && mc - s < mr + 4) rows = (mc - s + 1) / 2;
                    const float *ap = a_direct ? A + (idx)(i0 + s) * lda + k0
                                               : apack + (idx)s * kc;
                    p->kernels[rows - 1][nv - 1](
                        kc, ap, a_direct ? lda : 0, bp, bs, vs, ro,
                        C + (idx)(i0 + s) * ldc + j0, ldc, alpha, bet, nr);
                }
            }
        }
    }
}

static void gemm_dot_rows(const struct gemm_path *p, int M, int N, int K,
                          float alpha, const float *A, idx lda,
                          const float *B, idx ldb, float beta, float *C,
                          idx ldc)
{
    for (int i = 0; i < M; i++) {
        const float *a = A + i * lda;
        float *c = C + i * ldc;
        for (int j = 0; j < N; j += 4) {
            int nb = N - j < 4 ? N - j : 4;
            float s[4];
            p->dot(K, a, B + (idx)j * ldb, ldb, nb, s);
            for (int t = 0; t < nb; t++)
                c[j + t] = beta == 0.0f ? alpha * s[t]
                                        : alpha * s[t] + beta * c[j + t];
        }
    }
}

void nn_gemm(int ta, int tb, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta,
             float *C, int ldc)
{
    if (gemm_trivial(M, N, K, alpha, beta, C, ldc)) return;
    const struct gemm_path *p = &paths[nn_gemm_get_path()];
    if (tb && !ta && M <= GEMM_DOT_M_MAX) {
        gemm_dot_rows(p, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if ((double)M * N * K <= GEMM_TINY_MNK) {
        gemm_simple(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    float *ws = gemm_ws();
    if (!ws) {
        gemm_simple(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    gemm_blocked(p, ws, ta, tb, M, N, K, alpha, A, lda, B, ldb, NULL, beta, C,
                 ldc, NULL, NULL, NULL);
}

/* No packing memory: panels of at most PK rows packed on the stack, then
 * plain loops. Slow but never fails. */
static void gemm_packed_simple(int ta, int M, int N, int K, float alpha,
                               const float *A, idx lda, nn_gemm_pack_fn packb,
                               void *ctx, float beta, float *C, idx ldc)
{
    enum { PK = 32 };
    float panel[PK * GEMM_NR_MAX];
    const int w = nn_gemm_panel_width();
    gemm_scale(M, N, beta, C, ldc);
    for (int j0 = 0; j0 < N; j0 += w) {
        int nr = N - j0 < w ? N - j0 : w;
        for (int k0 = 0; k0 < K; k0 += PK) {
            int kc = K - k0 < PK ? K - k0 : PK;
            packb(ctx, k0, kc, j0, nr, w, panel);
            for (int i = 0; i < M; i++) {
                float *c = C + i * ldc + j0;
                for (int k = 0; k < kc; k++) {
                    float a = alpha * opa(ta, A, lda, i, k0 + k);
                    for (int j = 0; j < nr; j++) c[j] += a * panel[k * w + j];
                }
            }
        }
    }
}

void nn_gemm_packed(int ta, int M, int N, int K, float alpha, const float *A,
                    int lda, nn_gemm_pack_fn packb, void *ctx, float beta,
                    float *C, int ldc)
{
    if (gemm_trivial(M, N, K, alpha, beta, C, ldc)) return;
    float *ws = gemm_ws();
    if (!ws) {
        gemm_packed_simple(ta, M, N, K, alpha, A, lda, packb, ctx, beta, C, ldc);
        return;
    }
    gemm_blocked(&paths[nn_gemm_get_path()], ws, ta, 0, M, N, K, alpha, A, lda,
                 NULL, 0, NULL, beta, C, ldc, packb, ctx, NULL);
}

/* C += alpha A B in plain loops, row k of B at B + roff[k] (roff given)
 * or at B + k ldb: the fallback of the in-place variants when there is no
 * packing memory (A's slivers live there). */
static void gemm_rows_plain(int M, int N, int K, float alpha, const float *A,
                            idx lda, const float *B, idx ldb,
                            const ptrdiff_t *roff, float *C, idx ldc)
{
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            const float a = alpha * A[(idx)i * lda + k];
            const float *b = B + (roff ? roff[k] : k * ldb);
            float *c = C + (idx)i * ldc;
            for (int j = 0; j < N; j++) c[j] += a * b[j];
        }
}

void nn_gemm_rows(int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, const ptrdiff_t *roff, float beta, float *C,
                  int ldc)
{
    if (gemm_trivial(M, N, K, alpha, beta, C, ldc)) return;
    float *ws = gemm_ws();
    if (!ws) {
        gemm_scale(M, N, beta, C, ldc);
        gemm_rows_plain(M, N, K, alpha, A, lda, B, 0, roff, C, ldc);
        return;
    }
    gemm_blocked(&paths[nn_gemm_get_path()], ws, 0, 0, M, N, K, alpha, A, lda,
                 B, 0, roff, beta, C, ldc, NULL, NULL, NULL);
}

/* L in slices of GEMM_NT_SLICE floats, so that the A rows and the B rows
 * of a slice (which overlap when B is a set of shifts of one image) stay in
 * L1 while every block of C passes over them. */
#define GEMM_NT_SLICE 1024

void nn_gemm_rows_nt(int M, int N, int L, const float *A, int lda,
                     const float *B, const ptrdiff_t *roff, float *C, int ldc)
{
    if (M <= 0 || N <= 0 || L <= 0) return;
    const struct gemm_path *p = &paths[nn_gemm_get_path()];
    for (int l0 = 0; l0 < L; l0 += GEMM_NT_SLICE) {
        const int len = L - l0 < GEMM_NT_SLICE ? L - l0 : GEMM_NT_SLICE;
        for (int j0 = 0; j0 < N; j0 += 4) {
            const int rb = N - j0 < 4 ? N - j0 : 4;
            const float *br[4];
            for (int j = 0; j < rb; j++) br[j] = B + roff[j0 + j] + l0;
            for (int i0 = 0; i0 < M; i0 += 3) {
                const int ra = M - i0 < 3 ? M - i0 : 3;
                p->dotblk(len, A + (idx)i0 * lda + l0, lda, ra, br, rb,
                          C + (idx)i0 * ldc + j0, ldc);
            }
        }
    }
}

size_t nn_gemm_bpanels_size(int K, int N)
{
    const size_t k = K > 0 ? (size_t)K : 0, n = N > 0 ? (size_t)N : 0;
    return k * ((n + NN_GEMM_BPANEL - 1) / NN_GEMM_BPANEL * NN_GEMM_BPANEL);
}

void nn_gemm_bpanels_pack(float *out, const float *B, int ldb, int K, int N)
{
    for (int j0 = 0; j0 < N; j0 += NN_GEMM_BPANEL) {
        const int nr = N - j0 < NN_GEMM_BPANEL ? N - j0 : NN_GEMM_BPANEL;
        float *o = out + (idx)(j0 / NN_GEMM_BPANEL) * K * NN_GEMM_BPANEL;
        for (int k = 0; k < K; k++, o += NN_GEMM_BPANEL) {
            memcpy(o, B + (idx)k * ldb + j0, sizeof(float) * (size_t)nr);
            for (int j = nr; j < NN_GEMM_BPANEL; j++) o[j] = 0.0f;
        }
    }
}

void nn_gemm_bpanels_rows(int M, int N, int K, float alpha, const float *A,
                          int lda, const float *Bp, int kp, float beta,
                          float *C, int ldc)
{
    if (gemm_trivial(M, N, K, alpha, beta, C, ldc)) return;
    float *ws = gemm_ws();
    if (!ws) {
        gemm_scale(M, N, beta, C, ldc);
        for (int j0 = 0; j0 < N; j0 += NN_GEMM_BPANEL)
            gemm_rows_plain(M, N - j0 < NN_GEMM_BPANEL ? N - j0 : NN_GEMM_BPANEL,
                            K, alpha, A, lda, Bp + (idx)j0 * kp, NN_GEMM_BPANEL,
                            NULL, C + j0, ldc);
        return;
    }
    gemm_blocked(&paths[nn_gemm_get_path()], ws, 0, 0, M, N, K, alpha, A, lda,
                 NULL, kp, NULL, beta, C, ldc, NULL, NULL, Bp);
}

void nn_gemm_bpanels(int M, int N, int K, float alpha, const float *A,
                     int lda, const float *Bp, float beta, float *C, int ldc)
{
    nn_gemm_bpanels_rows(M, N, K, alpha, A, lda, Bp, K, beta, C, ldc);
}

int nn_gemm_panel_width(void)
{
    return 2 * paths[nn_gemm_get_path()].vl;
}
