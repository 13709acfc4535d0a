/* layers.h - the layers' kernels, each a forward/backward pair; net.c
 * walks the layer list and calls them. The convolution, whose fast path is
 * a subject of its own, is in conv.h.
 *
 * Conventions: outputs come first in the argument list, then inputs, then
 * sizes. Backward kernels accumulate parameter gradients (+=) and
 * overwrite input gradients unless stated. Where the fast kernel differs
 * from the plain loops (dense: GEMM; batch norm: vectorised sums), a
 * *_ref version is kept as the tests' oracle. Tensors are NCHW; "S" is a
 * channel's plane size H*W (1 after flatten).
 */
#ifndef NN_LAYERS_H
#define NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/conv.h"

/* Batch: x [n,in] -> y [n,out] = x w^T + b, w [out,in]. */
void nn_dense_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                      int out, int relu);
void nn_dense_forward_ref(float *y, const float *x, const float *w, const float *b, int n, int in,
                          int out);
/* dw += dy^T x, db += colsum dy, dx = dy w (if dx != NULL). */
void nn_dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int n, int in, int out);
void nn_dense_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int n, int in, int out);

/* Max-pool over one image [C,H,W] -> [C,OH,OW], window k, stride s, no
 * padding. idx (may be NULL) receives the flat input index of each max. */
void nn_maxpool_forward(float *y, int32_t *idx, const float *x, int C, int H, int W, int k, int s,
                        int OH, int OW);
/* dx [C,H,W] is zeroed, then receives dy at the argmax positions (idx of
 * nn_maxpool_forward with the same window k and stride s). With
 * relu_y (the pool's input when it is a ReLU's output; else NULL) only
 * where relu_y > 0: the ReLU's backward on the way, the same floats as
 * nn_relu_backward after it. */
void nn_maxpool_backward(float *dx, const float *dy, const int32_t *idx, int C, int H, int W, int k,
                         int s, int OH, int OW, const float *relu_y);

/* ReLU over n values: y = max(x, 0) (y may be x). */
void nn_relu_forward(float *y, const float *x, size_t n);
/* dx = dy where the output y > 0, else 0 (dx may be dy). */
void nn_relu_backward(float *dx, const float *dy, const float *y, size_t n);

/* Dropout in training over n values: each kept with probability 1 - p
 * (mask[j] = 1, y = x / (1 - p)), else dropped (mask 0, y = 0); the draw
 * is nn_hash_uniform(seed, j), so it is a pure function of the seed.
 * y may be x. Inference is the identity: nets skip the layer. */
void nn_dropout_forward(float *y, uint8_t *mask, const float *x, size_t n, float p, uint64_t seed);
/* dx = dy / (1 - p) where kept, else 0 (dx may be dy). */
void nn_dropout_backward(float *dx, const float *dy, const uint8_t *mask, size_t n, float p);

/* Batch norm over x [n,C,S], per channel c:
 *   inference  y = gamma[c] (x - mean[c]) / sqrt(var[c] + eps) + beta[c]
 *   training   the same with the batch's mean and (biased) variance;
 *              saves mean [C] and inv [C] (1/sqrt(var + eps)) for
 *              backward, which recomputes the normalised input
 *              xhat = (x - mean) inv from x as the forward did (storing
 *              xhat [n,C,S] was a fifth of the forward's memory traffic,
 *              and its memory); the reference saves xhat itself. When
 *              run_mean is not
 *              NULL moves the running statistics toward the batch's by
 *              momentum (PyTorch's meaning; the unbiased variance).
 * relu != 0 fuses max(0, .) on the output. y may not be x. In
 * training y may be NULL: the statistics alone, the output left to the
 * layer after it (nn_bn_in). */
void nn_batchnorm_forward(float *y, const float *x, const float *gamma, const float *beta,
                          const float *mean, const float *var, float eps, int n, int C, int S,
                          int relu);
void nn_batchnorm_forward_train(float *y, float *mean, float *inv, float *run_mean, float *run_var,
                                const float *x, const float *gamma, const float *beta, float eps,
                                float momentum, int n, int C, int S, int relu);
/* The training forward's output alone, from the mean and inv it saved
 * (the same values bit for bit): the backward recomputes a batch norm's
 * output where it did not keep it. */
void nn_batchnorm_output(float *y, const float *x, const float *mean, const float *inv,
                         const float *gamma, const float *beta, int n, int C, int S, int relu);
/* One float of that output: every copy of the batch norm's output
 * (nn_batchnorm_output's loops, the convolutions that apply it as they
 * read their input: nn_bn_in) runs these operations, and no fused
 * multiply-add, so they give the same bits. */
static inline float nn_bn_y1(float x, float fm, float iv, float gc, float bc, int relu)
{
    const float h = (x - fm) * iv, v = gc * h + bc;
    return relu && !(v > 0.0f) ? 0.0f : v;
}
/* A training batch norm (the mean and inv it saved) and its ReLU, to be
 * applied by the layer after it to its input as that layer reads it:
 * that layer reads the batch norm's input, and the output is never
 * written (nn_wino_forward_nl, nn_wino_dw_n). */
typedef struct nn_bn_in {
    const float *mean, *inv, *gamma, *beta;
    int relu;
} nn_bn_in;
void nn_batchnorm_forward_train_ref(float *y, float *xhat, float *inv, const float *x,
                                    const float *gamma, const float *beta, float eps, int n, int C,
                                    int S);
/* dgamma += sum dy xhat, dbeta += sum dy; dx (skipped if NULL) =
 * gamma inv (dy - mean(dy) - xhat mean(dy xhat)), xhat = (x - mean) inv
 * from the forward's input x and what it saved (the reference takes
 * xhat). relu != 0: a ReLU followed (nn_batchnorm_forward_train's relu)
 * and dy is its output's gradient: the ReLU's backward is done on the
 * way, dy read as 0 where the forward's gamma xhat + beta, recomputed
 * from x the same way, is <= 0: the same results bit for bit as
 * nn_relu_backward on the forward's output first, without its pass over
 * memory, and without reading that output. */
void nn_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *mean, const float *inv, const float *gamma,
                           const float *beta, int n, int C, int S, int relu);
void nn_batchnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *xhat, const float *inv, const float *gamma, int n,
                               int C, int S);

/* Deskew one plane [H,W] (moments deskewing): with ink r = max(x - bg, 0)
 * (bg: the background's value), its centroid (my, mx) and alpha =
 * cov(y,x) / var(y) (clamped to [-1, 1]; 0 for an empty plane), row y is
 * resampled at columns x + alpha (y - my) with linear interpolation and
 * background outside. A slanted stroke comes out upright; the centroid
 * stays where it was. */
float nn_deskew_alpha(const float *x, int H, int W, float bg, float *my);
void nn_deskew_forward(float *y, const float *x, int H, int W, float bg);
/* dx [H,W] = transpose of the resampling applied to dy, with alpha and the
 * centroid taken from x as constants (the gradient through the shear, not
 * through the moments). */
void nn_deskew_backward(float *dx, const float *dy, const float *x, int H, int W, float bg);

/* planes planes of [H,W] each, one after the other. */
void nn_deskew_forward_n(float *y, const float *x, size_t planes, int H, int W, float bg);
void nn_deskew_backward_n(float *dx, const float *dy, const float *x, size_t planes, int H, int W,
                          float bg);

#endif
