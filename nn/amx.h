/* amx.h - BF16 inference of a chain of convolutions on Intel AMX
 * (Advanced Matrix Extensions, Sapphire Rapids and later).
 *
 * An AMX tile multiply takes 16 rows of 32 bf16 values (A) against 32 x 16
 * bf16 values (B) into 16 x 16 fp32 sums (C): 8,192 multiply-adds an
 * instruction, where an AVX-512 FMA does 16. The inputs are rounded to
 * bf16 (8 significant bits), the sums stay fp32; so results differ from
 * the fp32 path by about 2^-9 relative per input, accumulated: an opt-in
 * precision (nn_precision_set), never chosen on its own.
 *
 * The chain runs image by image, activations kept channels-last (HWC) in
 * bf16 with their zero border, so a convolution needs no im2col: for a
 * kernel tap (ki, kj) and 32 input channels, the A tile of 16 output
 * positions is 16 pixel vectors the tile load reads straight from the
 * input, a fixed stride apart (stride 1: along the padded input, rows
 * running on into the next, whose last columns are computed and never
 * stored; stride s: 16 positions of one output row, s pixels apart). The
 * chain's first convolution reads the fp32 [C,H,W] input through a small
 * im2col of its own (any C: one input channel, k*k taps, padded to 32).
 * Weights are rearranged once (nn_amx_create) into the tiles the loads
 * read.
 */
#ifndef NN_AMX_H
#define NN_AMX_H

#include <stddef.h>

#include "nn/conv.h"

/* 1 if this build, the CPU and the kernel run AMX-BF16 and NN_ISA does not
 * cap the kernels below avx512; else 0. The first call asks the kernel
 * for the tile state (arch_prctl); later calls are cheap. */
int nn_amx_supported(void);

/* One convolution of a chain: shape, weights [O,C,k,k] and bias [O]
 * (borrowed: copied by nn_amx_create), and whether a ReLU follows. Layer
 * j + 1's input is layer j's output (C, H, W = O, OH, OW). */
typedef struct {
    nn_conv_shape cs;
    const float *w, *b;
    int relu;
} nn_amx_layer;

typedef struct nn_amx nn_amx;

/* 1 if a chain may start with cs (any C; k * k * C at most 1024), 0 if not;
 * nn_amx_next_fits: 1 if cs may follow in a chain (C a multiple of 32). */
int nn_amx_first_fits(const nn_conv_shape *cs);
int nn_amx_next_fits(const nn_conv_shape *cs);

/* The weights laid out as tiles, and the buffers' geometry. NULL with err
 * when out of memory or a layer does not fit. */
nn_amx *nn_amx_create(const nn_amx_layer *layers, int n, char *err, size_t errlen);
void nn_amx_free(nn_amx *a);

/* Bytes of scratch nn_amx_forward needs (one image's activations and
 * tiles); the caller zeroes it once (borders are never written) and keeps
 * it for this chain only. */
size_t nn_amx_scratch_size(const nn_amx *a);

/* x [n, C, H, W] fp32 (the first layer's input) -> y [n, O, OH, OW] fp32
 * (the last layer's output), image by image. scratch: nn_amx_scratch_size
 * bytes, 64-byte aligned, zeroed before the first call. Only where
 * nn_amx_supported() is 1: elsewhere the instructions fault (a build for
 * another architecture has no body here). */
void nn_amx_forward(const nn_amx *a, const float *x, float *y, int n, void *scratch);

/* The precision nn_net_plan gives inference: NN_PREC_FP32 (the default),
 * or NN_PREC_BF16 (convolution chains on AMX, where nn_amx_supported).
 * Process-wide; plans made before a change keep theirs. */
enum { NN_PREC_FP32 = 0, NN_PREC_BF16 = 1 };
/* Returns 0, or -1 (nothing changed) for BF16 where nn_amx_supported is 0
 * or for an unknown value. */
int nn_precision_set(int prec);
int nn_precision_get(void);
/* "fp32" or "bf16". */
const char *nn_precision_name(int prec);
/* "fp32" -> NN_PREC_FP32, "bf16" -> NN_PREC_BF16, else -1. */
int nn_precision_parse(const char *s);
/* Reads NN_PRECISION ("fp32", the default when unset or empty, or
 * "bf16") and applies it: programs call this once at start-up, after
 * nn_gemm_init_env (NN_ISA below avx512 rules AMX out) and before loading
 * models. Returns 0, or -1 with a one-line message in err for an unknown
 * value or bf16 on a machine without AMX-BF16. */
#define NN_PRECISION_ENV "NN_PRECISION"
int nn_precision_init_env(char *err, size_t errlen);

#endif
