/* layers.h - the kernels of each layer, one image or one batch at a time.
 *
 * Each kernel comes as a forward/backward pair; outputs come first in the
 * argument list, then inputs, then sizes. Backward kernels accumulate
 * parameter gradients (+=) and overwrite input gradients unless stated.
 * The fast versions go through nn_gemm; the *_ref versions are plain loops
 * kept as the tests' oracle.
 *
 * Shapes: conv input x [C,H,W], weight w [O,C,k,k], bias b [O], output
 * y [O,OH,OW] with OH = (H + 2p - k)/s + 1. col is scratch of
 * nn_conv2d_col_size() floats.
 */
#ifndef NN_LAYERS_H
#define NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int C, H, W;   /* input                */
    int O, k, s, p;/* out channels, kernel, stride, padding */
    int OH, OW;    /* output               */
} nn_conv_shape;

size_t nn_conv2d_col_size(const nn_conv_shape *cs);

/* col [C*k*k, OH*OW] from x [C,H,W] (zero padding). */
void nn_im2col(float *col, const float *x, const nn_conv_shape *cs);
/* dx [C,H,W] += scatter of dcol [C*k*k, OH*OW]. */
void nn_col2im_add(float *dx, const float *dcol, const nn_conv_shape *cs);

/* One image. relu != 0 fuses max(0, .) after the bias (inference). */
void nn_conv2d_forward(float *y, const float *x, const float *w,
                       const float *b, const nn_conv_shape *cs, float *col,
                       int relu);
void nn_conv2d_forward_ref(float *y, const float *x, const float *w,
                           const float *b, const nn_conv_shape *cs);
/* One image: dw += , db += , dx = (if dx != NULL). col and dcol scratch. */
void nn_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                        const float *x, const float *w,
                        const nn_conv_shape *cs, float *col, float *dcol);
void nn_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy,
                            const float *x, const float *w,
                            const nn_conv_shape *cs);

/* g images at once (x [g,C,H,W] -> y [g,O,OH,OW]) as one GEMM over g*OH*OW
 * columns, which keeps the multiply large when the maps are small. The
 * im2col matrix is never stored: the GEMM packs it panel by panel from the
 * images (implicit GEMM). scratch holds nn_conv2d_scratch_size(cs, g, 0)
 * floats for forward, (cs, g, 1) for backward (which covers forward).
 * Backward: dw, db accumulate; dx is overwritten (skipped if NULL). */
size_t nn_conv2d_scratch_size(const nn_conv_shape *cs, int g, int backward);
void nn_conv2d_forward_n(float *y, const float *x, const float *w,
                         const float *b, const nn_conv_shape *cs, int g,
                         float *scratch, int relu);
void nn_conv2d_backward_n(float *dx, float *dw, float *db, const float *dy,
                          const float *x, const float *w,
                          const nn_conv_shape *cs, int g, float *scratch);

/* Batch: x [n,in] -> y [n,out] = x w^T + b, w [out,in]. */
void nn_dense_forward(float *y, const float *x, const float *w, const float *b,
                      int n, int in, int out, int relu);
void nn_dense_forward_ref(float *y, const float *x, const float *w,
                          const float *b, int n, int in, int out);
/* dw += dy^T x, db += colsum dy, dx = dy w (if dx != NULL). */
void nn_dense_backward(float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, int n, int in, int out);
void nn_dense_backward_ref(float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int n, int in,
                           int out);

/* Max-pool over one image [C,H,W] -> [C,OH,OW], window k, stride s, no
 * padding. idx (may be NULL) receives the flat input index of each max. */
void nn_maxpool_forward(float *y, int32_t *idx, const float *x, int C, int H,
                        int W, int k, int s, int OH, int OW);
/* dx [C,H,W] is zeroed, then receives dy at the argmax positions. */
void nn_maxpool_backward(float *dx, const float *dy, const int32_t *idx,
                         int C, int H, int W, int OH, int OW);

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
void nn_deskew_backward(float *dx, const float *dy, const float *x, int H,
                        int W, float bg);

#endif
