/* gemm.h - single-precision matrix multiply, the hot path of dense and
 * convolution layers (row-major):
 *
 *   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
 *
 * op(X) is X or its transpose (ta, tb nonzero). lda, ldb, ldc are row
 * strides of the matrices as stored. beta == 0 means C is not read (may
 * hold NaN). nn_gemm is the fast path (blocked, packed, SIMD chosen at run
 * time); nn_gemm_ref is the plain triple loop kept as the tests' oracle.
 * Both are single-threaded and thread-safe; callers parallelise above.
 */
#ifndef NN_GEMM_H
#define NN_GEMM_H

void nn_gemm(int ta, int tb, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc);
void nn_gemm_ref(int ta, int tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc);

#endif
