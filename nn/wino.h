/* wino.h - 3x3 stride-1 convolutions by Winograd's minimal filtering
 * F(2x2, 3x3), and F(4x4, 3x3) below (Lavin and Gray, "Fast Algorithms
 * for Convolutional Neural Networks", CVPR 2016): in F(2x2, 3x3) every
 * 2x2 block of outputs comes from a 4x4 block
 * (tile) of the zero-bordered input as
 *
 *   Y = A^T [ sum over c of (G g_c G^T) . (B^T d_c B) ] A     (. elementwise)
 *
 * with g_c the 3x3 kernel of input channel c and d_c its 4x4 tile: 16
 * multiplies per (input, output) channel pair and tile instead of 36, 2.25
 * times fewer. U = G g G^T depends on the weights only and is computed once
 * per model (nn_net_plan in net.h); a call transforms the inputs
 * (V = B^T d B), runs the 16 element positions as 16 GEMMs
 * M[e] [T, O] = V[e] [T, C] U[e] [C, O] over T tiles (nn_gemm_bpanels, so every
 * kernel path), and the output transform adds the bias and the ReLU.
 *
 * Stride-2 convolutions with kernels of 4 to 6 run the same way after a
 * space-to-depth step: the input's four stride phases become 4C channels
 * and the kernel's taps regroup into 3x3 kernels over them (wino.c), 64
 * multiplies per 2x2 outputs and channel pair instead of 4 k*k (100 for
 * the big CNN's 5x5 stride-2 layers).
 *
 * Shapes as in conv.h (x [g,C,H,W] -> y [g,O,OH,OW]); padding 0 to 2
 * (stride 1) or 0 to k - 1 (stride 2). A forward convolution: net.c runs
 * inference with it, and in training the forward, the input gradient
 * (nn_wino_dx_n below) and, where the layer takes both of those, the
 * weight gradient (nn_wino_dw_n, on the forward's tile). The results
 * differ from nn_conv2d_forward_ref by rounding, within the bound
 * tests/unit/test_wino.c derives.
 */
#ifndef NN_WINO_H
#define NN_WINO_H

#include <stddef.h>

#include "nn/conv.h"
#include "nn/layers.h"

/* 1 if cs is a convolution F(2x2,3x3) computes and worth it: k 3, stride
 * 1, at least 2 input channels (with one, the GEMMs have depth 1); or k 4
 * to 6, stride 2 (depth 4C). */
int nn_wino_fits(const nn_conv_shape *cs);

/* The tile m of F(m x m, 3x3) for cs (nn_wino_fits): 4 where F(4x4,3x3)
 * pays, else 2. F(4x4) makes every 4x4 block of outputs from a 6x6 tile,
 * 36 multiplies per channel pair and tile instead of 144 (4 times fewer;
 * F(2x2) saves 2.25 times), at the price of larger transforms and
 * rounding errors (their entries reach 8 and 1/6; tests/unit/test_wino.c
 * bounds them). It pays where it takes fewer multiplies than F(2x2) once
 * both tile grids are rounded up to the map, and an image has at least 4
 * of its tiles (fewer leave the 36 GEMMs a row or two each at batch 1,
 * against weights 2.25 times the size). The training forward uses this
 * tile, and so does the inference plan (which may take F(2x2) where it
 * keeps a few-output layer direct: nn_net_plan); the input gradient (below) picks its
 * own the same way, for dy's convolution. The functions below take m
 * (2 or 4); P = (m + 2)^2 is 16 or 36. A shape nn_wino_fits refuses gets
 * 2. */
int nn_wino_tile(const nn_conv_shape *cs);
/* Tiles an image of cs takes by F(mxm,3x3) (m 2 or 4). */
int nn_wino_tiles(const nn_conv_shape *cs, int m);

/* Floats of the transformed weights: P planes of C x O (4C x O for
 * stride 2), O rounded up to a multiple of 16 (nn_gemm_bpanels_size). */
size_t nn_wino_weights_size(const nn_conv_shape *cs, int m);

/* u [P, C, O] = G w[o,c] G^T for every (o, c), each element computed in
 * double and rounded once; each plane laid out for nn_gemm_bpanels (the
 * GEMMs read it in order, nothing packed per call). w [O, C, 3, 3]. */
void nn_wino_weights(float *u, const float *w, const nn_conv_shape *cs, int m);
/* Part part of nparts of the same (a share of every plane's rows): the
 * parts together write all of u; threads may run them at once. */
void nn_wino_weights_part(float *u, const float *w, const nn_conv_shape *cs, int m, int part,
                          int nparts);

/* Images nn_wino_forward_n transforms and multiplies at once (about 256
 * F(2x2) tiles' worth of positions, so its buffers stay in L2); callers
 * may pass any g. */
int nn_wino_group(const nn_conv_shape *cs, int m);

/* Floats of scratch nn_wino_forward_n needs for g images. */
size_t nn_wino_scratch_size(const nn_conv_shape *cs, int g, int m);

/* g images forward with the transformed weights u (nn_wino_weights, same
 * m) and the bias b (may be NULL); relu != 0 applies max(0, .) after the
 * bias. */
void nn_wino_forward_n(float *y, const float *x, const float *u, const float *b,
                       const nn_conv_shape *cs, int g, float *scratch, int relu, int m);
/* The same with the layout of x and y chosen: NN_WINO_IN_NHWC, x is
 * [g, H, W, C]; NN_WINO_OUT_NHWC, y is [g, OH, OW, O] (channels last, the
 * layout the transforms work in: two Winograd layers in a row skip a
 * transpose out and back). 0: both [g, C, H, W], as nn_wino_forward_n.
 * bn (may be NULL): x is a batch norm's input, and the convolution's
 * input its output (nn_bn_in), computed as x is packed. */
#define NN_WINO_IN_NHWC 1
#define NN_WINO_OUT_NHWC 2
void nn_wino_forward_nl(float *y, const float *x, const float *u, const float *b,
                        const nn_conv_shape *cs, int g, float *scratch, int relu, int m, int layout,
                        const nn_bn_in *bn);

/* The input gradient of a convolution nn_wino_fits takes, by Winograd:
 * dx [g,C,H,W] (overwritten) from dy [g,O,OH,OW], with u the transformed
 * weights nn_wino_dx_weights makes from the forward weights w [O,C,k,k].
 * Stride 1 is a 3x3 convolution of dy; stride 2 one of 4C outputs, whose
 * channels are dx's stride phases (wino.c). nn_wino_dx_fits: 1 where that
 * convolution is worth it: at least 2 output channels of the forward, and
 * for stride 2 fewer multiplies than the direct w^T dy. */
int nn_wino_dx_fits(const nn_conv_shape *cs);
/* The tile the input gradient runs on (2 or 4): F(4x4) wherever it takes
 * fewer multiplies than F(2x2) on dy's grid (its GEMMs run over all the
 * images' tiles, as the weight gradient's). */
int nn_wino_dx_tile(const nn_conv_shape *cs);
size_t nn_wino_dx_weights_size(const nn_conv_shape *cs);
void nn_wino_dx_weights(float *u, const float *w, const nn_conv_shape *cs);
void nn_wino_dx_weights_part(float *u, const float *w, const nn_conv_shape *cs, int part,
                             int nparts);
size_t nn_wino_dx_scratch_size(const nn_conv_shape *cs, int g);
void nn_wino_dx_n(float *dx, const float *dy, const float *u, const nn_conv_shape *cs, int g,
                  float *scratch);

/* The weight and bias gradients of g images by Winograd on the tile
 * nn_wino_dw_tile picks: dw [O,C,k,k] += and db [O] += from
 * dy [g,O,OH,OW] and x [g,C,H,W] (wino.c); x through the batch norm bn
 * if not NULL, as nn_wino_forward_nl. nn_wino_dw_fits: 1 where that
 * takes fewer multiplies than the direct product (every 3x3 stride-1
 * shape nn_wino_fits takes; a stride-2 one where its space-to-depth
 * tiles are few enough). nn_wino_dw_tile: F(4x4,3x3) where it takes
 * fewer multiplies than F(2x2,3x3) on the map, else 2: the forward's
 * tile (nn_wino_tile), except where that keeps F(2x2) for its few tiles
 * an image (the weight gradient's GEMMs run over all the images' tiles
 * at once). */
int nn_wino_dw_fits(const nn_conv_shape *cs);
int nn_wino_dw_tile(const nn_conv_shape *cs);
size_t nn_wino_dw_scratch_size(const nn_conv_shape *cs, int g);
void nn_wino_dw_n(float *dw, float *db, const float *dy, const float *x, const nn_bn_in *bn,
                  const nn_conv_shape *cs, int g, float *scratch);

#endif
