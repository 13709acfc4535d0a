/* conv.h - 2-D convolution: a plain reference, and the fast version the
 * nets run, tested against it (tests/unit/test_nn.c).
 *
 * Shapes: input x [C,H,W], weight w [O,C,k,k], bias b [O], output
 * y [O,OH,OW] with OH = (H + 2p - k)/s + 1 (likewise OW). Outputs come
 * first in the argument list, then inputs, then sizes; backward
 * accumulates the parameter gradients (+=) and overwrites dx.
 *
 * The fast path takes g images at once (x [g,C,H,W] -> y [g,O,OH,OW]) as
 * one GEMM over g*OH*OW columns, which keeps the multiply large when the
 * maps are small. The im2col matrix is never stored: the GEMM packs it
 * panel by panel from the images (implicit GEMM), or, where few outputs
 * share a packing, runs on shifted rows of the images with nothing packed.
 */
#ifndef NN_CONV_H
#define NN_CONV_H

#include <stddef.h>

typedef struct {
    int C, H, W;    /* input */
    int O, k, s, p; /* out channels, kernel, stride, padding */
    int OH, OW;     /* output */
} nn_conv_shape;

/* Reference, one image, plain loops with double accumulators. */
void nn_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                           const nn_conv_shape *cs);
/* Reference backward, one image: dw += , db += , dx = (if dx != NULL). */
void nn_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const nn_conv_shape *cs);

/* Floats of scratch the fast path needs for groups of g images: forward
 * (backward = 0), or backward (1, which covers forward too). */
size_t nn_conv2d_scratch_size(const nn_conv_shape *cs, int g, int backward);
/* g images forward; relu != 0 fuses max(0, .) after the bias. */
void nn_conv2d_forward_n(float *y, const float *x, const float *w, const float *b,
                         const nn_conv_shape *cs, int g, float *scratch, int relu);
/* Weights packed once for nn_conv2d_forward_n's kernels on this kernel
 * path (nn/gemm.h), so a pass at batch 1 does not repack them (a layer
 * whose kernel covers its input, or one with few output positions whose
 * channels fit a 64-bit mask on the AVX-512 path: transposed, [K][O], so
 * that a pass reads only the nonzero inputs' weights; with packed
 * weights those kernels need wt 64-byte aligned to run at speed): the
 * floats they take, 0 when cs runs on w as it is. */
size_t nn_conv2d_packed_size(const nn_conv_shape *cs);
void nn_conv2d_pack_weights(float *wt, const float *w, const nn_conv_shape *cs);
/* nn_conv2d_forward_n with wt from nn_conv2d_pack_weights on the same
 * kernel path (NULL: packed per call, as nn_conv2d_forward_n). */
void nn_conv2d_forward_packed(float *y, const float *x, const float *w, const float *wt,
                              const float *b, const nn_conv_shape *cs, int g, float *scratch,
                              int relu);
/* 1 when nn_conv2d_forward_n runs cs by its direct kernel for few output
 * positions (at most 16 an image, on the AVX-512 path). */
int nn_conv2d_few_outputs(const nn_conv_shape *cs);
/* 1 when nn_conv2d_forward_nhwc runs cs: one input channel, 3x3,
 * stride 1, O a multiple of 16 up to 64, on the AVX-512 path, and on the
 * AVX2 path for rows of 25 to 32 outputs. */
int nn_conv2d_nhwc_fits(const nn_conv_shape *cs);
/* g images' outputs channels last, y [g, OH, OW, O] (the same floats as
 * nn_conv2d_forward_n's [g, O, OH, OW]), for a Winograd layer that reads
 * them so; only where nn_conv2d_nhwc_fits. scratch: as forward_n's. */
void nn_conv2d_forward_nhwc(float *y, const float *x, const float *w, const float *b,
                            const nn_conv_shape *cs, int g, float *scratch, int relu);
/* 1 when that kernel, given packed weights, reads only each image's
 * nonzero inputs (an image's channels fit a 64-bit mask, O a multiple
 * of 16): nn_conv2d_forward_packed then costs with the inputs' density. */
int nn_conv2d_skips_zeros(const nn_conv_shape *cs);
/* g images backward: dw, db accumulate; dx is overwritten (skipped if
 * NULL); dw NULL skips dw and db (the input gradient alone). */
void nn_conv2d_backward_n(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, const nn_conv_shape *cs, int g, float *scratch);

#endif
