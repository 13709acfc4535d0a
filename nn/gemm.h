/* gemm.h - single-precision matrix multiply, the hot path of dense and
 * convolution layers (row-major):
 *
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
 *
 * op(X) is X or its transpose (ta, tb nonzero). lda, ldb, ldc are row
 * strides of the matrices as stored. beta == 0 means C is not read (may
 * hold NaN). alpha == 0 or K == 0: C = beta * C, A and B are not read.
 * nn_gemm is the fast path (blocked, packed, SIMD chosen at run
 * time); nn_gemm_ref is the plain triple loop (accumulating in double)
 * kept as the tests' oracle.
 * Both are single-threaded and thread-safe; callers parallelise above.
 */
#ifndef NN_GEMM_H
#define NN_GEMM_H

#include <stddef.h>

void nn_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);
void nn_gemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);

/* B supplied panel by panel instead of as a matrix, for products whose B
 * is never stored whole (a convolution's im2col matrix, built straight
 * from the image into the L1-sized panel the micro-kernel reads).
 * The callback writes op(B)[k0 .. k0+kc, j0 .. j0+nr] into
 * out[k * nrp + j] and zeros columns nr .. nrp (nrp >= nr). It is called
 * once per (K block, M block, panel); with M <= 240 each element of B is
 * packed once. Panels are at most nn_gemm_panel_width() columns wide,
 * aligned to multiples of it (j0 % width == 0); K blocks are at most 256
 * rows. Same contract as nn_gemm otherwise (never fails: without packing
 * memory it falls back to plain loops over small stack panels). */
typedef void (*nn_gemm_pack_fn)(void *ctx, int k0, int kc, int j0, int nr, int nrp, float *out);
void nn_gemm_packed(int ta, int M, int N, int K, float alpha, const float *A, int lda,
                    nn_gemm_pack_fn packb, void *ctx, float beta, float *C, int ldc);
/* B (K x N, not transposed) given row by row: row k starts at B + roff[k],
 * its columns contiguous. Nothing is packed, so B may be a set of shifted
 * views of one buffer: a convolution's im2col rows over a zero-bordered
 * image. Every row must have N rounded up to nn_gemm_panel_width() (32
 * suffices on every path) readable floats: the columns past N are read and
 * never used. Same contract as nn_gemm otherwise. */
void nn_gemm_rows(int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                  const ptrdiff_t *roff, float beta, float *C, int ldc);
/* C[M,N] += A[M,L] B^T where row j of B (L floats, contiguous) starts at
 * B + roff[j]: long dot products, nothing packed. A convolution's weight
 * gradient over shifted rows (dw += dy im2col^T, with L the output
 * positions) reads the image in place this way. */
void nn_gemm_rows_nt(int M, int N, int L, const float *A, int lda, const float *B,
                     const ptrdiff_t *roff, float *C, int ldc);
/* Widest panel nn_gemm_packed asks for on the current path (16 or 32). */
int nn_gemm_panel_width(void);
/* B (K x N, not transposed) stored once in the panels the kernels read:
 * panel j holds columns [16 j, 16 j + 16) of every row, K rows of 16
 * floats one after another (columns past N zero), panel after panel:
 * nn_gemm_bpanels_size(K, N) floats. A weight matrix used by many calls
 * is laid out so once (nn_gemm_bpanels_pack), and every call then streams
 * it in order, with nothing packed and no strided reads: the Winograd
 * layers' transformed weights (nn/wino.h), which at batch 1 are read once
 * per image from beyond L2. Every path reads the same layout (one or two
 * kernels per panel, or half of one). Same contract as nn_gemm
 * otherwise. */
#define NN_GEMM_BPANEL 16
size_t nn_gemm_bpanels_size(int K, int N);
void nn_gemm_bpanels_pack(float *out, const float *B, int ldb, int K, int N);
void nn_gemm_bpanels(int M, int N, int K, float alpha, const float *A, int lda, const float *Bp,
                     float beta, float *C, int ldc);
/* The same over K of the kp rows of such panels (kp >= K), from the row
 * Bp points at: Bp = panels + k0 * NN_GEMM_BPANEL takes rows [k0, k0 +
 * K). A product that skips a block of rows it knows to be zero. */
void nn_gemm_bpanels_rows(int M, int N, int K, float alpha, const float *A, int lda,
                          const float *Bp, int kp, float beta, float *C, int ldc);

/* Kernel paths. The fastest one the CPU supports is chosen on first use;
 * tests and benchmarks may force another. GENERIC_WIDE runs the AVX-512
 * tile geometry with portable vectors: a test aid, never chosen on its own.
 * Fast paths: tb == 0 reads B in place; ta == 0, tb == 1 with M <= 2
 * (batch-1 dense layers) uses dot products over B's rows.
 *
 * The environment variable NN_ISA caps the choice for the whole process:
 * "generic" (portable C only), "avx2", "avx512", or "auto" / unset (the
 * best the CPU runs). Paths above the cap count as unsupported, so
 * nothing (not even nn_gemm_set_path) can pick them. "generic-wide" is
 * accepted too, for tests. */
enum {
    NN_GEMM_PATH_AUTO = -1,
    NN_GEMM_PATH_GENERIC = 0,
    NN_GEMM_PATH_GENERIC_WIDE,
    NN_GEMM_PATH_AVX2,
    NN_GEMM_PATH_AVX512,
    NN_GEMM_PATH_COUNT
};
#define NN_GEMM_ENV "NN_ISA"
/* Reads NN_ISA and applies it: every program calls this once at start-up,
 * before any thread multiplies. Returns 0, or -1 with a one-line message
 * in err when the value is unknown or names a path this CPU (or build)
 * cannot run; nothing changes then. Without this call the first multiply
 * applies a valid NN_ISA and ignores an invalid one. */
int nn_gemm_init_env(char *err, size_t errlen);
/* 1 if path exists in this build, this CPU runs it and NN_ISA allows it,
 * else 0. */
int nn_gemm_path_supported(int path);
/* Select path for all threads (AUTO: the best supported). Returns 0, or -1
 * with nothing changed if the path is unknown or unsupported. Meant for
 * tests and benchmarks; safe to call at any time. */
int nn_gemm_set_path(int path);
/* The path in use (never AUTO). */
int nn_gemm_get_path(void);
/* Name of path ("generic", "generic-wide", "avx2", "avx512"); AUTO gives
 * the one in use. Static string. */
const char *nn_gemm_path_name(int path);
/* The supported paths a user can name in NN_ISA, in rising order and
 * space-separated ("generic avx2 avx512"), into buf (len bytes, always
 * NUL-terminated when len > 0). Returns the full length, as snprintf. */
size_t nn_gemm_paths_list(char *buf, size_t len);

#endif
