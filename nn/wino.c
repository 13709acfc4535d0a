/* wino.c - see wino.h: Winograd F(2x2,3x3) and F(4x4,3x3) convolutions.
 *
 * Data flow of one call, for a chunk of images holding T tiles of P
 * element positions (16 for F(2x2), 36 for F(4x4)):
 *
 *   x [n,C,H,W] --border, channels last--> xp [n, Hp, Wp, C]
 *     --input transform (4 or 8 channels a step)--> V [T, P, C]
 *     --P GEMMs with U [P, C, O] (nn_gemm_bpanels)--> M [T, P, O]
 *     --output transform, bias, ReLU (4 or 8 channels a step)--> Yt [n, GH, GW, O]
 *     --transpose, crop--> y [n, O, OH, OW]
 *
 * Channels last makes every transform a run of element-wise vector
 * operations over contiguous channels, with no shuffles; the two
 * transposes move each input and output value once. Tile-major V and M
 * keep the transforms' stores and loads contiguous; GEMM e reads its
 * A = V[., e, .] with row stride P C, which costs nothing, as the GEMM
 * packs A anyway (and writes M[., e, .] with stride P O). The tile grid is
 * TH x TW tiles of m x m outputs (m = 2 or 4), GH = m TH >= OH output rows
 * (likewise columns): the extra rows and columns are computed from zeros
 * and dropped.
 */
#include "nn/wino.h"

#include <string.h>

#include "nn/gemm.h"
#include "nn/simd.h"

#if NN_X86
#include <immintrin.h>
#endif

/* Tiles per chunk: bounds V and M (16 * T * (C + O) floats; 288 KiB each
 * for the big CNN's 24 x 24 layer, T = 144, C = O = 32) so that a chunk
 * stays near L2 however large the batch. */
#define WINO_TILES 256

/* F(4x4,3x3) only from this many tiles per image: with fewer, its GEMMs
 * have too few rows at batch 1 to pay for weights 2.25 times the size. */
#define WINO4_MIN_TILES 4

/* Stride 2 by space-to-depth: phase (a, b) of the zero-bordered input,
 * pixels (2i + a, 2j + b), becomes channels [(2a + b) C, (2a + b + 1) C)
 * of an image z of 4C channels, and kernel tap (ki, kj) = (2m + a, 2n + b)
 * becomes tap (m, n) of those channels (zero where 2m + a or 2n + b >= k).
 * Output (oh, ow) reads z at (oh + m, ow + n): a 3x3 stride-1 convolution
 * of z without border, OH + 2 by OW + 2, which is what F(2x2,3x3) runs.
 * For the big CNN's 5x5 stride-2 layers this is 64 multiplies per 2x2
 * outputs and channel pair (4 phases x 16) instead of 100. */
static int wino_s2d(const nn_conv_shape *cs) { return cs->s == 2; }

/* The stride-1 3x3 convolution the transforms and GEMMs run for cs. */
static nn_conv_shape wino_shape(const nn_conv_shape *cs)
{
    if (!wino_s2d(cs)) return *cs;
    nn_conv_shape e = {4 * cs->C, cs->OH + 2, cs->OW + 2, cs->O, 3, 1, 0, cs->OH, cs->OW};
    return e;
}

int nn_wino_fits(const nn_conv_shape *cs)
{
    if (cs->OH < 1 || cs->OW < 1 || cs->p < 0) return 0;
    if (cs->s == 2) return cs->k >= 4 && cs->k <= 6 && cs->p < cs->k;
    return cs->k == 3 && cs->s == 1 && cs->p <= 2 && cs->C >= 2;
}

/* The forward's U: each of the P planes [C, O] in nn_gemm_bpanels layout
 * (O rounded up to 16), for the GEMMs to stream in order. */
static size_t wino_plane(int C, int O) { return nn_gemm_bpanels_size(C, O); }

size_t nn_wino_weights_size(const nn_conv_shape *cs, int m)
{
    const nn_conv_shape e = wino_shape(cs);
    return (size_t)(m + 2) * (m + 2) * wino_plane(e.C, e.O);
}

/* Output channels a transform block holds: [36][WINO_OB] floats, 9 KiB. */
#define WINO_OB 64

/* The 3x3 kernels of outputs [o0, o0 + nb) and channel c of the
 * convolution Winograd runs into g [9][WINO_OB]: w's own, or for stride
 * 2 the phase's taps (see wino_s2d), tap (m, n) being (2m + a, 2n + b),
 * zero past the kernel (nn_wino_dw_n hands the weight gradient's taps
 * back the same way). With dx, the input gradient's convolution
 * (nn_wino_dx_n): the forward kernel (c, o) flipped, or for stride 2 its
 * phase's taps flipped, tap (m, n) being (2(2 - m) + a, 2(2 - n) + b).
 * Tap by tap over a run of outputs of one phase, where the tap's source
 * (or its zero) is the same: per kernel, the phase's arithmetic and a
 * branch a tap took a third of the stride-2 transforms' time (the 4x4
 * layer's input gradient, 16,384 kernels a step). */
static void wino_kernels(double *g, const float *w, const nn_conv_shape *cs, int o0, int nb, int c,
                         int dx)
{
    const int C = cs->C, k = cs->k, kk = k * k;
    if (!wino_s2d(cs)) {
        for (int j = 0; j < nb; j++) {
            const float *wk =
                dx ? w + ((size_t)c * C + o0 + j) * 9 : w + ((size_t)(o0 + j) * C + c) * 9;
            for (int t = 0; t < 9; t++) g[t * WINO_OB + j] = wk[dx ? 8 - t : t];
        }
        return;
    }
    for (int j0 = 0, j1; j0 < nb; j0 = j1) {
        /* The phase: the forward's channel's, the input gradient's
         * output's; [j0, j1) share it. */
        const int ph = dx ? (o0 + j0) / C : c / C, a = ph >> 1, b = ph & 1;
        j1 = dx && (ph + 1) * C - o0 < nb ? (ph + 1) * C - o0 : nb;
        for (int m = 0; m < 3; m++)
            for (int n = 0; n < 3; n++) {
                const int ki = dx ? 2 * (2 - m) + a : 2 * m + a,
                          kj = dx ? 2 * (2 - n) + b : 2 * n + b;
                double *gt = g + (m * 3 + n) * WINO_OB;
                if (ki >= k || kj >= k) {
                    for (int j = j0; j < j1; j++) gt[j] = 0.0;
                    continue;
                }
                const float *src = dx ? w + ((size_t)c * C + o0 - ph * C) * kk
                                      : w + ((size_t)o0 * C + c - ph * C) * kk;
                const size_t step = dx ? (size_t)kk : (size_t)C * kk;
                for (int j = j0; j < j1; j++) gt[j] = src[j * step + ki * k + kj];
            }
    }
}

/* The kernel transforms' G: F(4x4,3x3)'s below, in double; F(2x2,3x3)'s
 * [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] written out in
 * wino_ggt_block (the same doubles as the matrix products: halving is
 * exact and the zero terms add nothing, at a quarter of the work). The
 * data transforms are in wino_xf.h. */
static const double wino_G4[6][3] = {{0.25, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};

/* G g G^T of nb kernels at once: g [9][WINO_OB] (tap-major), into
 * blk [P][WINO_OB] as floats. The loops over kernels are innermost, so
 * that they run as vectors (8 doubles a vector on the AVX-512 path, 4 on
 * AVX2's), each lane the same products summed in the same order: the
 * same bits on every path, and as a kernel at a time gave them. A kernel
 * at a time, the per-step weight transform of the default CNN took
 * 1.5 ms of a training step's CPU time. */
__attribute__((always_inline)) static inline void
wino_ggt_block(float *restrict blk, const double *restrict g, int mt, int nb)
{
    enum { B = WINO_OB };
    if (mt == 4) {
        for (int i = 0; i < 6; i++) {
            double t[3][B];
            for (int n = 0; n < 3; n++)
                for (int j = 0; j < nb; j++)
                    t[n][j] = wino_G4[i][0] * g[n * B + j] + wino_G4[i][1] * g[(3 + n) * B + j] +
                              wino_G4[i][2] * g[(6 + n) * B + j];
            for (int q = 0; q < 6; q++)
                for (int j = 0; j < nb; j++)
                    blk[(i * 6 + q) * B + j] =
                        (float)(t[0][j] * wino_G4[q][0] + t[1][j] * wino_G4[q][1] +
                                t[2][j] * wino_G4[q][2]);
        }
        return;
    }
    for (int i = 0; i < 4; i++) {
        double t[3][B];
        for (int n = 0; n < 3; n++)
            for (int j = 0; j < nb; j++) {
                const double a = g[n * B + j], b = g[(3 + n) * B + j], c = g[(6 + n) * B + j];
                t[n][j] = i == 0   ? a
                          : i == 1 ? 0.5 * a + 0.5 * b + 0.5 * c
                          : i == 2 ? 0.5 * a + -0.5 * b + 0.5 * c
                                   : c;
            }
        for (int j = 0; j < nb; j++) {
            blk[(i * 4) * B + j] = (float)t[0][j];
            blk[(i * 4 + 1) * B + j] = (float)(t[0][j] * 0.5 + t[1][j] * 0.5 + t[2][j] * 0.5);
            blk[(i * 4 + 2) * B + j] = (float)(t[0][j] * 0.5 + t[1][j] * -0.5 + t[2][j] * 0.5);
            blk[(i * 4 + 3) * B + j] = (float)t[2][j];
        }
    }
}

/* Copies of an always-inline body f compiled for each kernel path:
 * f_v2 baseline, f_v4 AVX2 and f_v8 AVX-512 (named by the doubles a
 * vector holds); each a plain call of f with the arguments. */
#if NN_X86
#define WINO_COPIES(f, params, args)                                      \
    static void f##_v2 params { f args; }                                 \
    __attribute__((target("avx2"))) static void f##_v4 params { f args; } \
    __attribute__((target("avx512f"))) static void f##_v8 params { f args; }
#else
#define WINO_COPIES(f, params, args) \
    static void f##_v2 params { f args; }
#endif
/* The copy of f (WINO_COPIES) for kernel path path. */
#if NN_X86
#define WINO_PICK(f, path) \
    ((path) == NN_GEMM_PATH_AVX512 ? f##_v8 : (path) == NN_GEMM_PATH_AVX2 ? f##_v4 : f##_v2)
#else
#define WINO_PICK(f, path) ((void)(path), f##_v2)
#endif

WINO_COPIES(wino_ggt_block, (float *restrict blk, const double *restrict g, int mt, int nb),
            (blk, g, mt, nb))

/* u [P, C, O] = G g G^T of the kernel (o, c), for C channels in and O
 * out, each plane [C, O] in nn_gemm_bpanels layout (wino_plane): the
 * forward's kernels (dx 0) or the input gradient's (dx 1), by F(2x2,3x3)
 * (mt 2, P 16) or F(4x4,3x3) (mt 4, P 36). The planes of u lie far
 * apart, often a multiple of 4 KiB: written one value at a time they
 * would share a few L1 sets and evict each other at every store. So a
 * block of output channels is transformed into blk first and copied out
 * a plane row (16 channels) at a time. */
static void wino_transform(float *u, const float *w, const nn_conv_shape *cs, int C, int O, int dx,
                           int mt, int part, int nparts)
{
    const int P = mt == 4 ? 36 : 16;
    float blk[36 * WINO_OB];
    double g[9 * WINO_OB];
    void (*ggt)(float *restrict, const double *restrict, int, int) =
        WINO_PICK(wino_ggt_block, nn_gemm_get_path());
    /* Rows [c0, c1) of every plane: part of nparts. */
    const int c0 = (int)((long long)C * part / nparts),
              c1 = (int)((long long)C * (part + 1) / nparts);
    for (int c = c0; c < c1; c++)
        for (int o0 = 0; o0 < O; o0 += WINO_OB) {
            const int nb = O - o0 < WINO_OB ? O - o0 : WINO_OB;
            wino_kernels(g, w, cs, o0, nb, c, dx);
            /* Up to a whole vector of 8: lanes past O zero, never
             * copied out. */
            const int nv = (nb + 7) & ~7;
            for (int t = 0; t < 9; t++)
                for (int j = nb; j < nv; j++) g[t * WINO_OB + j] = 0.0;
            ggt(blk, g, mt, nv);
            /* Row c of each plane's panels that [o0, o0 + nb) spans,
             * zeros past O. */
            const size_t plane = wino_plane(C, O);
            for (int e = 0; e < P; e++)
                for (int j = 0; j < nb; j += NN_GEMM_BPANEL) {
                    const int o = o0 + j, n = nb - j < NN_GEMM_BPANEL ? nb - j : NN_GEMM_BPANEL;
                    float *dst =
                        u + e * plane + ((size_t)(o / NN_GEMM_BPANEL) * C + c) * NN_GEMM_BPANEL;
                    /* A whole panel row by a copy of constant size:
                     * one of n floats became rep movsq, slow to start,
                     * and half of this function's time. */
                    if (n == NN_GEMM_BPANEL) {
                        memcpy(dst, blk + e * WINO_OB + j, sizeof(float) * NN_GEMM_BPANEL);
                        continue;
                    }
                    for (int z = 0; z < NN_GEMM_BPANEL; z++)
                        dst[z] = z < n ? blk[e * WINO_OB + j + z] : 0.0f;
                }
        }
}

void nn_wino_weights_part(float *u, const float *w, const nn_conv_shape *cs, int m, int part,
                          int nparts)
{
    const nn_conv_shape e = wino_shape(cs);
    wino_transform(u, w, cs, e.C, e.O, 0, m, part, nparts);
}

void nn_wino_weights(float *u, const float *w, const nn_conv_shape *cs, int m)
{
    nn_wino_weights_part(u, w, cs, m, 0, 1);
}

struct wino_geom {
    int m;        /* outputs per tile side: 2 (F(2x2,3x3)) or 4      */
    int P;        /* element positions per tile, (m + 2)^2           */
    int TH, TW;   /* tiles per column and row of an image          */
    int Hp, Wp;   /* bordered input: m TH + 2 rows, m TW + 2 columns */
    size_t tiles; /* TH * TW                                       */
};

static void wino_geom_m(struct wino_geom *gm, const nn_conv_shape *cs, int m)
{
    gm->m = m;
    gm->P = (m + 2) * (m + 2);
    gm->TH = (cs->OH + m - 1) / m;
    gm->TW = (cs->OW + m - 1) / m;
    gm->Hp = m * gm->TH + 2;
    gm->Wp = m * gm->TW + 2;
    gm->tiles = (size_t)gm->TH * gm->TW;
}

/* Images per chunk: about WINO_TILES F(2x2) tiles' worth of positions. */
int nn_wino_group(const nn_conv_shape *cs, int m)
{
    struct wino_geom gm;
    wino_geom_m(&gm, cs, m);
    size_t n = (size_t)WINO_TILES * 16 / gm.P / gm.tiles;
    return n < 1 ? 1 : (int)n;
}

/* Images a chunk of at most step holds when a call has g: step, or g
 * (at least 1) when that is fewer. */
static int wino_chunk(int step, int g) { return g < step ? (g < 1 ? 1 : g) : step; }

/* The second region's offset from the first: a whole number of 4 KiB
 * plus 256 bytes. The transforms and GEMMs read one region and write the
 * other at strides of a pixel or position (C or O floats: 128 bytes to
 * 1 KiB); at an offset that is a multiple of those strides modulo 4 KiB a
 * load matched the low 12 bits of a store just made to the other region,
 * and waited for it (4 KiB aliasing). The space-to-depth layer's input
 * transform (128 channels, 512-byte strides, the regions 98 KiB apart),
 * timed alone, took 35 ns a tile and vector of channels with the regions
 * a multiple of 512 bytes apart modulo 4 KiB, 25 with them 128 or 256
 * bytes off; the batch-1 pass 145.3-147.8 -> 137.7-139.8 us on AVX2,
 * 132.0-133.0 -> 130.3-130.6 on AVX-512 (four interleaved pairs). */
static size_t wino_skewed(size_t floats) { return (floats + 1023) / 1024 * 1024 + 64; }

/* The two scratch regions for gc images: [xp, later M | V, later Yt].
 * For stride 2, xp holds the image z is made of (twice the rows and
 * columns with a quarter of the channels: as many floats). */
static void wino_regions(const nn_conv_shape *cs, int gc, int mt, size_t *ra, size_t *rb)
{
    struct wino_geom gm;
    wino_geom_m(&gm, cs, mt);
    const nn_conv_shape e = wino_shape(cs);
    const size_t T = gm.tiles * gc;
    size_t xp = (size_t)gc * gm.Hp * gm.Wp * e.C, m = gm.P * T * e.O;
    size_t v = gm.P * T * e.C, yt = (size_t)mt * mt * T * e.O;
    *ra = wino_skewed(xp > m ? xp : m);
    *rb = round16(v > yt ? v : yt);
}

size_t nn_wino_scratch_size(const nn_conv_shape *cs, int g, int m)
{
    const int gc = wino_chunk(nn_wino_group(cs, m), g);
    size_t ra, rb;
    wino_regions(cs, gc, m, &ra, &rb);
    return ra + rb;
}

/* One float of channel c through the batch norm bn, if any. */
static inline float bn_y(float x, const nn_bn_in *bn, int c)
{
    return bn ? nn_bn_y1(x, bn->mean[c], bn->inv[c], bn->gamma[c], bn->beta[c], bn->relu) : x;
}

/* Four planes' rows s0, s0 + plane, .. (channels c to c + 3) into the
 * channels-last row r, four columns at a time while whole: returns the
 * columns done. With bn, each float through it: after the transpose, so
 * that a vector holds the four channels (nn_bn_y1's operations, lane by
 * lane). */
__attribute__((always_inline)) static inline int
pack_row4(float *r, const float *s0, size_t plane, int wmax, size_t C, const nn_bn_in *bn, int c)
{
    nn_v4f m = {0}, iv = {0}, ga = {0}, be = {0};
    if (bn) {
        memcpy(&m, bn->mean + c, 16);
        memcpy(&iv, bn->inv + c, 16);
        memcpy(&ga, bn->gamma + c, 16);
        memcpy(&be, bn->beta + c, 16);
    }
    int w = 0;
    for (; w + 4 <= wmax || (w < wmax && wmax >= 4); w += 4) {
        /* The last columns as a block ending at wmax, over some done
         * already (the same floats again): a float at a time, the ReLU's
         * branch mispredicted on about half of them. */
        if (w + 4 > wmax) w = wmax - 4;
        if (!bn) {
            tr4x4(s0 + w, s0 + plane + w, s0 + 2 * plane + w, s0 + 3 * plane + w, r + (size_t)w * C,
                  C);
            continue;
        }
        float t[16];
        tr4x4(s0 + w, s0 + plane + w, s0 + 2 * plane + w, s0 + 3 * plane + w, t, 4);
        for (int q = 0; q < 4; q++) {
            nn_v4f x;
            memcpy(&x, t + 4 * q, 16);
            const nn_v4f h = (x - m) * iv, v = ga * h + be;
            x = bn->relu ? (nn_v4f)((nn_v4i)v & (v > 0.0f)) : v;
            memcpy(r + (size_t)(w + q) * C, &x, 16);
        }
    }
    return w;
}

/* x [n, C, H, W] into xp [n, Hp, Wp, C] at (r + p, s + p), zeros around;
 * 4 x 4 blocks (channels x columns) transposed at once; through the batch
 * norm bn on the way if not NULL. With nhwc, x is [n, H, W, C] already
 * (a previous layer's nn_wino_forward_nl output): each row is one copy. */
static void wino_pack_input(float *xp, const float *x, const nn_conv_shape *cs, int n,
                            const struct wino_geom *gm, int nhwc, const nn_bn_in *bn)
{
    const int C = cs->C, H = cs->H, W = cs->W, p = cs->p, Hp = gm->Hp, Wp = gm->Wp;
    const size_t row = (size_t)Wp * C;
    /* Rows past the tile grid (H + p > Hp) and columns past it are never
     * read: the grid covers every output's inputs. */
    const int below = p + H < Hp ? p + H : Hp, right = p + W < Wp ? p + W : Wp;
    const int hmax = below - p, wmax = right - p;
    for (int i = 0; i < n; i++) {
        float *xi = xp + (size_t)i * Hp * row;
        const float *src = x + (size_t)i * C * H * W;
        /* Border: whole rows above and below, columns left and right. */
        memset(xi, 0, sizeof(float) * row * (size_t)(p < Hp ? p : Hp));
        if (below < Hp) memset(xi + below * row, 0, sizeof(float) * row * (size_t)(Hp - below));
        for (int h = 0; h < hmax; h++) {
            float *r = xi + (size_t)(h + p) * row;
            memset(r, 0, sizeof(float) * (size_t)p * C);
            if (right < Wp) memset(r + (size_t)right * C, 0, sizeof(float) * (Wp - right) * C);
            if (!nhwc) continue;
            const float *sr = src + (size_t)h * W * C;
            if (!bn) memcpy(r + (size_t)p * C, sr, sizeof(float) * wmax * C);
            for (int j = 0; bn && j < wmax * C; j++) r[(size_t)p * C + j] = bn_y(sr[j], bn, j % C);
        }
        if (nhwc) continue;
        /* Four channel planes at a time, each read front to back: a row of
         * every plane at a time kept C / 4 x 4 streams open and took the
         * 26x26 layer's input (32 planes) at 1.0 against 0.5-0.7 ms per
         * 64 images, caches flushed first; in a training step at batch 64
         * all packing 5.7-6.7 -> 4.2-4.6 ms (one thread). */
        const size_t plane = (size_t)H * W;
        int c = 0;
        for (; c + 4 <= C; c += 4) {
            const float *s0 = src + (size_t)c * plane;
            for (int h = 0; h < hmax; h++, s0 += W) {
                float *r = xi + (size_t)(h + p) * row + (size_t)p * C + c;
                int w = 0;
                if (bn)
                    w = pack_row4(r, s0, plane, wmax, (size_t)C, bn, c);
                else
                    w = pack_row4(r, s0, plane, wmax, (size_t)C, NULL, 0);
                for (; w < wmax; w++)
                    for (int j = 0; j < 4; j++)
                        r[(size_t)w * C + j] = bn_y(s0[j * plane + w], bn, c + j);
            }
        }
        for (; c < C; c++)
            for (int h = 0; h < hmax; h++) {
                float *r = xi + (size_t)(h + p) * row + (size_t)p * C + c;
                for (int w = 0; w < wmax; w++)
                    r[(size_t)w * C] = bn_y(src[c * plane + (size_t)h * W + w], bn, c);
            }
    }
}

/* Stride 2: x [n, C, H, W] bordered and channels last into xt
 * [n, 2 Hp, 2 Wp, C], the image whose phases make the space-to-depth
 * image z of wino_s2d (the input transform reads z's pixels in it). */
static void wino_pack_s2d(float *xt, const float *x, const nn_conv_shape *cs, int n,
                          const struct wino_geom *gm, int nhwc, const nn_bn_in *bn)
{
    struct wino_geom g2 = *gm;
    g2.Hp = 2 * gm->Hp;
    g2.Wp = 2 * gm->Wp;
    wino_pack_input(xt, x, cs, n, &g2, nhwc, bn);
}

/* Channel counts the transforms are compiled for as constants
 * (wino_xf.h): the big CNN's 32 and 64 channels, their space-to-depth
 * images' 128 and 256 (the stride-2 layers' inputs) and their input
 * gradients' 128 and 256 outputs. */
#if defined(__OPTIMIZE__)
#define WX_CONSTS(X) X(32) X(64) X(128) X(256)
#else
/* Unoptimised (the coverage build, -O0) nothing would be folded: each
 * copy would keep the tail code its constant never runs, counted again
 * for every copy (nn/'s branch coverage 87.5% -> 82.1% for the same
 * source lines). There the one general body runs every count. */
#define WX_CONSTS(X)
#endif

/* The transforms: 4 lanes (portable, SSE on x86), 8 (AVX2) for the AVX2
 * kernel path and 16 (AVX-512) for the AVX-512 one. They are loads, adds
 * and stores, lane by lane, so every width gives the same bits. On the
 * AMX Xeon 16 lanes against 8 took the default CNN's batch-1 forward
 * from a median of 428 to 400 us (14 of 16 interleaved pairs faster) and
 * its training step at batch 64 from 164, 182, 144 to 149, 165, 145 ms,
 * the loss the same to the last digit. */
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
#define WX_VT v4f
#define WX_VI v4i
#define WX_VL 4
#define WX_FN(x) x##_v4
#define WX_ATTR
#define WX_FMA(a, b, c) ((a) * (b) + (c))
#include "nn/wino_xf.h"
#undef WX_VT
#undef WX_VI
#undef WX_VL
#undef WX_FN
#undef WX_ATTR
#undef WX_FMA

#if NN_X86
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
#define WX_VT v8f
#define WX_VI v8i
#define WX_VL 8
#define WX_FN(x) x##_v8
#define WX_ATTR __attribute__((target("avx2,fma")))
#define WX_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#include "nn/wino_xf.h"
#undef WX_VT
#undef WX_VI
#undef WX_VL
#undef WX_FN
#undef WX_ATTR
#undef WX_FMA
typedef float v16f __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
#define WX_VT v16f
#define WX_VI v16i
#define WX_VL 16
#define WX_FN(x) x##_v16
#define WX_ATTR __attribute__((target("avx512f")))
#define WX_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#include "nn/wino_xf.h"
#undef WX_VT
#undef WX_VI
#undef WX_VL
#undef WX_FN
#undef WX_ATTR
#undef WX_FMA
#endif

/* y [n, O, OH, OW] from Yt [n, GH, GW, O], dropping the grid's extra row
 * and column. */
static void wino_unpack_output(float *y, const float *Yt, const nn_conv_shape *cs, int n,
                               const struct wino_geom *gm)
{
    const int O = cs->O, OH = cs->OH, OW = cs->OW, GW = gm->m * gm->TW;
    const size_t plane = (size_t)OH * OW;
    for (int i = 0; i < n; i++) {
        const float *yi = Yt + (size_t)i * gm->m * gm->TH * GW * O;
        float *dst = y + (size_t)i * O * plane;
        for (int oh = 0; oh < OH; oh++) {
            const float *src = yi + (size_t)oh * GW * O;
            int o = 0;
            for (; o + 4 <= O; o += 4) {
                int ow = 0;
                for (; ow + 4 <= OW; ow += 4) {
                    const float *s0 = src + (size_t)ow * O + o;
                    tr4x4(s0, s0 + O, s0 + 2 * O, s0 + 3 * O,
                          dst + o * plane + (size_t)oh * OW + ow, plane);
                }
                for (; ow < OW; ow++)
                    for (int j = 0; j < 4; j++)
                        dst[(o + j) * plane + (size_t)oh * OW + ow] = src[(size_t)ow * O + o + j];
            }
            for (; o < O; o++)
                for (int ow = 0; ow < OW; ow++)
                    dst[o * plane + (size_t)oh * OW + ow] = src[(size_t)ow * O + o];
        }
    }
}

/* V of n images x: bordered channels last into xp (for stride 2 the
 * image of twice the rows and columns that z is made of: as many
 * floats), then the input transform, 8 lanes on the AVX2 path, 16 on the
 * AVX-512 one; planar as input_transform's. */
static void wino_input(float *V, float *xp, const float *x, const nn_conv_shape *cs, int n,
                       const struct wino_geom *gm, size_t planar, int nhwc, const nn_bn_in *bn)
{
    const nn_conv_shape e = wino_shape(cs);
    const float *src = xp;
    const int s2d = wino_s2d(cs);
    if (s2d)
        wino_pack_s2d(xp, x, cs, n, gm, nhwc, bn);
    else if (nhwc && !bn && cs->p == 0 && gm->Hp == cs->H && gm->Wp == cs->W)
        src = x; /* already [n, Hp, Wp, C]: no border, the grid the map */
    else
        wino_pack_input(xp, x, cs, n, gm, nhwc, bn);
#if NN_X86
    const int path = nn_gemm_get_path();
    if (path == NN_GEMM_PATH_AVX512) {
        input_transform_v16(V, src, &e, n, gm, planar, s2d);
        return;
    }
    if (path == NN_GEMM_PATH_AVX2) {
        input_transform_v8(V, src, &e, n, gm, planar, s2d);
        return;
    }
#endif
    input_transform_v4(V, src, &e, n, gm, planar, s2d);
}

/* y [n, OH, OW, O] from Yt [n, GH, GW, O]: the grid's rows cropped,
 * one copy each. */
static void wino_crop_output(float *y, const float *Yt, const nn_conv_shape *cs, int n,
                             const struct wino_geom *gm)
{
    const int O = cs->O, OH = cs->OH, OW = cs->OW, GW = gm->m * gm->TW, GH = gm->m * gm->TH;
    for (int i = 0; i < n; i++)
        for (int oh = 0; oh < OH; oh++)
            memcpy(y + ((size_t)i * OH + oh) * OW * O, Yt + ((size_t)i * GH + oh) * GW * O,
                   sizeof(float) * (size_t)OW * O);
}

/* Stride 2: the phases (bit 2a + b) whose transformed kernels are not all
 * zero at position q of the (m + 2)^2. G's last row (F(2x2)'s and
 * F(4x4)'s alike) takes a kernel's third row of taps alone, which a phase
 * a with 2 * 2 + a >= k lacks (the 5x5 kernels' odd phases: a 3x3 kernel
 * of z holds taps 2m + a < 5); columns the same. So at the last row and
 * column of positions those phases' channels are zeros: 16% of F(4x4)'s
 * products for a 5x5 kernel, 23% of F(2x2)'s. (The input gradient's
 * flipped kernels have theirs at the first row and column, in the
 * output channels: not used.) */
static unsigned wino_s2d_live(const nn_conv_shape *cs, int m, int q)
{
    const int P1 = m + 2, r = q / P1, c = q % P1;
    unsigned live = 0;
    for (int ph = 0; ph < 4; ph++) {
        const int a = ph >> 1, b = ph & 1;
        if ((r == m + 1 && 4 + a >= cs->k) || (c == m + 1 && 4 + b >= cs->k)) continue;
        live |= 1u << ph;
    }
    return live;
}

/* Mq [T, O] = A [T, 4 Cp] U [4 Cp, O] (U in panels of 4 Cp rows) over
 * the rows of the live phases alone (wino_s2d_live): a product a run of
 * consecutive ones, the first writing Mq, zeros if none. The skipped
 * terms are exact zeros, but each run's sum is added to Mq as a whole:
 * the same sum rounded another way than the whole product's. */
static void wino_gemm_live(int T, int O, int Cp, const float *A, int lda, const float *U, float *Mq,
                           int ldm, unsigned live)
{
    float beta = 0.0f;
    for (int p0 = 0, p1; p0 < 4; p0 = p1) {
        for (p1 = p0; p1 < 4 && (live >> p1 & 1); p1++) continue;
        if (p1 == p0) {
            p1++;
            continue;
        }
        nn_gemm_bpanels_rows(T, O, (p1 - p0) * Cp, 1.0f, A + (size_t)p0 * Cp, lda,
                             U + (size_t)p0 * Cp * NN_GEMM_BPANEL, 4 * Cp, beta, Mq, ldm);
        beta = 1.0f;
    }
    if (beta == 0.0f) nn_gemm_bpanels_rows(T, O, 0, 1.0f, A, lda, U, 4 * Cp, 0.0f, Mq, ldm);
}

void nn_wino_forward_nl(float *y, const float *x, const float *u, const float *b,
                        const nn_conv_shape *cs, int g, float *scratch, int relu, int mt,
                        int layout, const nn_bn_in *bn)
{
    struct wino_geom gm;
    wino_geom_m(&gm, cs, mt);
    const nn_conv_shape e = wino_shape(cs);
    const int C = e.C, O = cs->O, P = gm.P, step = nn_wino_group(cs, mt);
    const size_t nin = (size_t)cs->C * cs->H * cs->W, nout = (size_t)O * cs->OH * cs->OW;
    const int path = nn_gemm_get_path();
    const int wide = path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512;
    (void)wide; /* no 8-lane transforms off x86 */
    for (int i0 = 0; i0 < g; i0 += step) {
        const int n = g - i0 < step ? g - i0 : step;
        size_t ra, rb;
        wino_regions(cs, n, mt, &ra, &rb);
        float *xp = scratch, *M = scratch, *V = scratch + ra, *Yt = scratch + ra;
        const int T = (int)(gm.tiles * n);
        /* Channels last on a grid the outputs fill exactly: the output
         * transform writes y itself. */
        float *Yo = (layout & NN_WINO_OUT_NHWC) && gm.m * gm.TH == cs->OH && gm.m * gm.TW == cs->OW
                        ? y + i0 * nout
                        : Yt;
        wino_input(V, xp, x + i0 * nin, cs, n, &gm, 0, layout & NN_WINO_IN_NHWC, bn);
        for (int q = 0; q < P; q++)
            if (wino_s2d(cs))
                wino_gemm_live(T, O, cs->C, V + (size_t)q * C, P * C, u + q * wino_plane(C, O),
                               M + (size_t)q * O, P * O, wino_s2d_live(cs, mt, q));
            else
                nn_gemm_bpanels(T, O, C, 1.0f, V + (size_t)q * C, P * C, u + q * wino_plane(C, O),
                                0.0f, M + (size_t)q * O, P * O);
#if NN_X86
        if (path == NN_GEMM_PATH_AVX512)
            output_transform_v16(Yo, M, b, relu, cs, n, &gm);
        else if (wide)
            output_transform_v8(Yo, M, b, relu, cs, n, &gm);
        else
#endif
            output_transform_v4(Yo, M, b, relu, cs, n, &gm);
        if (Yo != Yt) continue; /* written in place */
        if (layout & NN_WINO_OUT_NHWC)
            wino_crop_output(y + i0 * nout, Yt, cs, n, &gm);
        else
            wino_unpack_output(y + i0 * nout, Yt, cs, n, &gm);
    }
}

void nn_wino_forward_n(float *y, const float *x, const float *u, const float *b,
                       const nn_conv_shape *cs, int g, float *scratch, int relu, int mt)
{
    nn_wino_forward_nl(y, x, u, b, cs, g, scratch, relu, mt, 0, NULL);
}

int nn_wino_tiles(const nn_conv_shape *cs, int m)
{
    struct wino_geom gm;
    const nn_conv_shape e = wino_shape(cs);
    wino_geom_m(&gm, &e, m);
    return (int)gm.tiles;
}

int nn_wino_tile(const nn_conv_shape *cs)
{
    if (!nn_wino_fits(cs)) return 2;
    struct wino_geom g2, g4;
    const nn_conv_shape e = wino_shape(cs);
    wino_geom_m(&g2, &e, 2);
    wino_geom_m(&g4, &e, 4);
    return g4.tiles >= WINO4_MIN_TILES && 36 * g4.tiles < 16 * g2.tiles ? 4 : 2;
}

/* ---- input gradient ----------------------------------------------------
 * dx of y = conv(x, w) is a full correlation of dy with the flipped
 * kernels, in and out channels swapped. Stride 1: a 3x3 convolution of dy
 * bordered by 2 - p, straight into dx. Stride 2: from the space-to-depth
 * view y = conv3x3(z, w'), dz is the 3x3 convolution of dy bordered by 2
 * with w' flipped (4C outputs), and dx takes each pixel from its phase:
 * dx[c, h, w] = dz[(2a + b) C + c, i, j] where h + p = 2i + a,
 * w + p = 2j + b. No scatter, no col2im. Of dz's OH + 2 rows only those
 * from z0 = p / 2 to (H - 1 + p) / 2 are read (p 2 and 5x5 kernels: 1
 * to OH), so dz is computed on those alone: dy bordered by 2 - z0, the
 * grid cropped below: the big CNN's 12x12 layer 9 F(4x4) tiles an image
 * instead of 16. */
static void wino_dz_rows(const nn_conv_shape *cs, int *z0, int *hz, int *wz)
{
    int zh = (cs->H - 1 + cs->p) >> 1, zw = (cs->W - 1 + cs->p) >> 1;
    if (zh > cs->OH + 1) zh = cs->OH + 1; /* rows no output reaches: zeros */
    if (zw > cs->OW + 1) zw = cs->OW + 1;
    *z0 = cs->p >> 1;
    *hz = zh - *z0 + 1;
    *wz = zw - *z0 + 1;
}

static nn_conv_shape wino_dx_shape(const nn_conv_shape *cs)
{
    if (!wino_s2d(cs)) {
        nn_conv_shape d = {cs->O, cs->OH, cs->OW, cs->C, 3, 1, 2 - cs->p, cs->H, cs->W};
        return d;
    }
    int z0, hz, wz;
    wino_dz_rows(cs, &z0, &hz, &wz);
    nn_conv_shape d = {cs->O, cs->OH, cs->OW, 4 * cs->C, 3, 1, 2 - z0, hz, wz};
    return d;
}

/* The tile for GEMMs over a batch's tiles (the weight and input
 * gradients) of the stride-1 3x3 convolution e: F(4x4) wherever it takes
 * fewer multiplies than F(2x2), however few its tiles an image. */
static int wino_tile_batched(const nn_conv_shape *e)
{
    struct wino_geom g2, g4;
    wino_geom_m(&g2, e, 2);
    wino_geom_m(&g4, e, 4);
    return 36 * g4.tiles < 16 * g2.tiles ? 4 : 2;
}

int nn_wino_dx_tile(const nn_conv_shape *cs)
{
    const nn_conv_shape d = wino_dx_shape(cs);
    return nn_wino_fits(cs) && nn_wino_fits(&d) ? wino_tile_batched(&d) : 2;
}

int nn_wino_dx_fits(const nn_conv_shape *cs)
{
    if (!nn_wino_fits(cs)) return 0;
    nn_conv_shape d = wino_dx_shape(cs);
    if (!nn_wino_fits(&d)) return 0;
    if (!wino_s2d(cs)) return 1;
    /* Stride 2 computes all four phases of dz: only where that is still
     * fewer multiplies than the direct w^T dy, 4 (m + 2)^2 per tile and
     * channel pair against k k per output (the big CNN's 12x12 layer:
     * 1,296 against 3,600; its 4x4 layer 144 against 400). */
    const int m = nn_wino_dx_tile(cs);
    struct wino_geom gm;
    wino_geom_m(&gm, &d, m);
    return (size_t)4 * (m + 2) * (m + 2) * gm.tiles < (size_t)cs->k * cs->k * cs->OH * cs->OW;
}

size_t nn_wino_dx_weights_size(const nn_conv_shape *cs)
{
    nn_conv_shape d = wino_dx_shape(cs);
    return nn_wino_weights_size(&d, nn_wino_dx_tile(cs));
}

void nn_wino_dx_weights_part(float *u, const float *w, const nn_conv_shape *cs, int part,
                             int nparts)
{
    nn_conv_shape d = wino_dx_shape(cs);
    wino_transform(u, w, cs, d.C, d.O, 1, nn_wino_dx_tile(cs), part, nparts);
}

void nn_wino_dx_weights(float *u, const float *w, const nn_conv_shape *cs)
{
    nn_wino_dx_weights_part(u, w, cs, 0, 1);
}

/* Stride 2: images a dz chunk holds (the forward's own chunk). */
static int wino_dx_group(const nn_conv_shape *cs, int g)
{
    nn_conv_shape d = wino_dx_shape(cs);
    return wino_chunk(nn_wino_group(&d, nn_wino_dx_tile(cs)), g);
}

size_t nn_wino_dx_scratch_size(const nn_conv_shape *cs, int g)
{
    nn_conv_shape d = wino_dx_shape(cs);
    const int mt = nn_wino_dx_tile(cs);
    if (!wino_s2d(cs)) return nn_wino_scratch_size(&d, g, mt);
    const int gc = wino_dx_group(cs, g);
    return round16(nn_wino_scratch_size(&d, gc, mt)) + (size_t)gc * d.O * d.OH * d.OW;
}

void nn_wino_dx_n(float *dx, const float *dy, const float *u, const nn_conv_shape *cs, int g,
                  float *scratch)
{
    nn_conv_shape d = wino_dx_shape(cs);
    const int mt = nn_wino_dx_tile(cs);
    if (!wino_s2d(cs)) {
        nn_wino_forward_n(dx, dy, u, NULL, &d, g, scratch, 0, mt);
        return;
    }
    const int C = cs->C, H = cs->H, W = cs->W, p = cs->p, Hz = d.OH, Wz = d.OW, zr = 2 - d.p;
    const int step = wino_dx_group(cs, g);
    const size_t nin = (size_t)C * H * W, ndy = (size_t)cs->O * cs->OH * cs->OW;
    const size_t nz = (size_t)4 * C * Hz * Wz;
    float *dz = scratch + round16(nn_wino_scratch_size(&d, step, mt));
    for (int i0 = 0; i0 < g; i0 += step) {
        const int n = g - i0 < step ? g - i0 : step;
        nn_wino_forward_n(dz, dy + i0 * ndy, u, NULL, &d, n, scratch, 0, mt);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) {
                float *xc = dx + (size_t)(i0 + i) * nin + (size_t)c * H * W;
                for (int h = 0; h < H; h++) {
                    const int a = (h + p) & 1, zi = ((h + p) >> 1) - zr;
                    float *xr = xc + (size_t)h * W;
                    if (zi >= Hz) {
                        memset(xr, 0, sizeof(float) * W);
                        continue;
                    }
                    const float *z0 = dz + i * nz + (size_t)zi * Wz;
                    const float *za = z0 + ((size_t)(2 * a) * C + c) * Hz * Wz;
                    const float *zb = z0 + ((size_t)(2 * a + 1) * C + c) * Hz * Wz;
                    /* Even columns from one phase, odd from the other:
                     * eight at a time as two interleaves of four. */
                    const float *ev = p & 1 ? zb + (p - 1) / 2 - zr : za + p / 2 - zr,
                                *od = p & 1 ? za + (p + 1) / 2 - zr : zb + p / 2 - zr;
                    const int wv = W < 2 * (Wz + zr) - p ? W : 2 * (Wz + zr) - p;
                    int w = 0;
                    for (; w + 8 <= wv; w += 8) {
                        v4f e4, o4;
                        memcpy(&e4, ev + w / 2, 16);
                        memcpy(&o4, od + w / 2, 16);
                        const v4f lo = NN_SHUF4(e4, o4, 0, 4, 1, 5),
                                  hi = NN_SHUF4(e4, o4, 2, 6, 3, 7);
                        memcpy(xr + w, &lo, 16);
                        memcpy(xr + w + 4, &hi, 16);
                    }
                    for (; w < W; w++) {
                        const int j = ((w + p) >> 1) - zr;
                        xr[w] = j >= Wz ? 0.0f : (w + p) & 1 ? zb[j] : za[j];
                    }
                }
            }
    }
}

/* ---- weight gradient ---------------------------------------------------
 * With U = G g G^T, V = B^T d B and y = A^T (U . V) A per F(m x m,3x3)
 * tile, dL/dU = sum over tiles of V . Z, Z = A dy A^T (dy the tile's
 * m x m output gradient), and dL/dg = G^T (dL/dU) G. Per position e of
 * the P that is one product dU_e [O, C] = Z_e [O, T] V_e [T, C] over the
 * T tiles, 2.25 (F(2x2)) or up to 4 (F(4x4)) times fewer multiply-adds
 * than the direct dy im2col^T, with both operands read in place: Z_e
 * with its tiles contiguous, V_e with its channels (the planar input
 * transform). The tile is nn_wino_dw_tile's. F(4x4)'s larger
 * transform entries (8 in A, 1/24 in G) cost rounding:
 * tests/unit/test_wino.c bounds it, and three epochs of the big CNN
 * trained to the same losses (0.8034, 0.1687, 0.1017 against F(2x2)'s
 * 0.8064, 0.1695, 0.0992) and test accuracy (99.42% against 99.37%),
 * while its step at batch 32 took 24.6-24.9 ms against 25.9-26.4 (the
 * four weight gradients 1.9-2.0 -> 1.5, 0.82 -> 0.70, 0.87 -> 0.66 and
 * 2.0 -> 1.4 ms). Stride 2 runs on the space-to-depth image, as the
 * forward does, and hands each phase's taps back to the kernel. */
int nn_wino_dw_fits(const nn_conv_shape *cs)
{
    if (!nn_wino_fits(cs)) return 0;
    if (!wino_s2d(cs)) return 1;
    /* Stride 2 runs on z's 4C channels: per tile and channel pair of cs
     * 4 (m + 2)^2 multiplies against k k per output directly. F(2x2)
     * counted on the grid of OH + 2 by OW + 2 (as nn_wino_dx_fits does),
     * the transforms' share included: the big CNN's 12x12 layer took it
     * (0.67 of the direct time), its 4x4 layer did not (1.08: four tiles
     * an image carry the transforms of 4C channels). F(4x4)
     * (nn_wino_dw_tile) at twice its count, on its own grid: the 4x4
     * layer (one tile an image, 144 multiplies against 400) takes 0.64
     * of the direct time at 32 images (0.90 against 1.41 ms), 0.50 at
     * 64. */
    const size_t direct = (size_t)cs->k * cs->k * cs->OH * cs->OW;
    struct wino_geom gm;
    if (nn_wino_dw_tile(cs) == 4) {
        const nn_conv_shape e = wino_shape(cs);
        wino_geom_m(&gm, &e, 4);
        return 2 * 4 * 36 * gm.tiles < direct;
    }
    const nn_conv_shape d = wino_dx_shape(cs);
    wino_geom_m(&gm, &d, 2);
    return 64 * gm.tiles < direct;
}

int nn_wino_dw_tile(const nn_conv_shape *cs)
{
    if (!nn_wino_fits(cs)) return 2;
    const nn_conv_shape e = wino_shape(cs);
    return wino_tile_batched(&e);
}

/* Images per chunk: the forward's chunk for the tile, at most g. */
static int wino_dw_group(const nn_conv_shape *cs, int g)
{
    return wino_chunk(nn_wino_group(cs, nn_wino_dw_tile(cs)), g);
}

/* Floats between the 16 planes of V, Z or dU holding n floats each: 16
 * more than a multiple of 1024. Planes a multiple of 4 KiB apart put the
 * transforms' 16 store streams (and the final sum's 16 loads) in one L1
 * set, which thrashed: the Z transform took half of the 10x10 layer's
 * weight gradient. */
static size_t wino_dw_plane(size_t n)
{
    n = round16(n);
    return n + (1024 + 16 - n % 1024) % 1024;
}

/* [xp | V | Z | dU] for a chunk of gc images. */
static void wino_dw_regions(const nn_conv_shape *cs, int gc, size_t r[4])
{
    struct wino_geom gm;
    const int mt = nn_wino_dw_tile(cs);
    wino_geom_m(&gm, cs, mt);
    const nn_conv_shape e = wino_shape(cs);
    const size_t T = gm.tiles * gc, xp = (size_t)gc * gm.Hp * gm.Wp * e.C, P = gm.P;
    const size_t v = P * wino_dw_plane(T * e.C);
    /* xp's region later holds the Z transform's rows: F(2x2)'s two
     * copied dy rows, or F(4x4)'s row of zeros (it reads dy in place). */
    const size_t rows = mt == 4 ? (size_t)cs->OW : 2 * (2 * (size_t)gm.TW + 24);
    r[0] = round16(xp > rows ? xp : rows);
    r[1] = round16(v);
    r[2] = P * wino_dw_plane(T * e.O + 16);
    r[3] = P * wino_dw_plane((size_t)e.O * e.C);
}

size_t nn_wino_dw_scratch_size(const nn_conv_shape *cs, int g)
{
    size_t r[4];
    wino_dw_regions(cs, wino_dw_group(cs, g), r);
    return r[0] + r[1] + r[2] + r[3];
}

/* One row of tiles of Z (wino_dw_z): z at its first tile, from the two
 * dy rows r0 and r1 (zeros past OW), four tiles a step: the even and odd
 * columns of the rows, A = [1 0; 1 1; 1 -1; 0 -1] on each side of a
 * tile's 2x2 block (p, q) -> (p, p + q, p - q, -q). Whole vectors: past
 * the row's last tile they land on tiles (or o rows) written later, or
 * past the plane's T O floats (wino_dw_regions leaves 8). */
static void wino_dw_zrow4(float *z, size_t plane, const float *r0, const float *r1, int TW)
{
    typedef float v4f __attribute__((vector_size(16)));
    for (int tj = 0; tj < TW; tj += 4) {
        float a[4][4];
        evens4(r0 + 2 * tj, a[0]);
        evens4(r0 + 2 * tj + 1, a[1]);
        evens4(r1 + 2 * tj, a[2]);
        evens4(r1 + 2 * tj + 1, a[3]);
        v4f p0, q0, p1, q1;
        memcpy(&p0, a[0], 16);
        memcpy(&q0, a[1], 16);
        memcpy(&p1, a[2], 16);
        memcpy(&q1, a[3], 16);
        /* Columns first: row 0 -> (p0, p0+q0, p0-q0, -q0). */
        v4f c0[4] = {p0, p0 + q0, p0 - q0, -q0};
        v4f c1[4] = {p1, p1 + q1, p1 - q1, -q1};
        v4f zr[4][4];
        for (int s = 0; s < 4; s++) {
            zr[0][s] = c0[s];
            zr[1][s] = c0[s] + c1[s];
            zr[2][s] = c0[s] - c1[s];
            zr[3][s] = -c1[s];
        }
        for (int r = 0; r < 4; r++)
            for (int s = 0; s < 4; s++) memcpy(z + (size_t)(r * 4 + s) * plane + tj, &zr[r][s], 16);
    }
}

#if NN_X86
/* wino_dw_zrow4 eight tiles a step (the AVX2 and AVX-512 paths): the even
 * and odd columns of 16 dy floats by one shuffle and one permute each,
 * the same sums lane by lane (the same bits), 32-byte stores. Reads up to
 * 2 TW + 14 floats of each row. */
__attribute__((target("avx2"))) static void wino_dw_zrow8(float *z, size_t plane, const float *r0,
                                                          const float *r1, int TW)
{
    const __m256i pick = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int tj = 0; tj < TW; tj += 8) {
        const __m256 a0 = _mm256_loadu_ps(r0 + 2 * tj), a1 = _mm256_loadu_ps(r0 + 2 * tj + 8),
                     b0 = _mm256_loadu_ps(r1 + 2 * tj), b1 = _mm256_loadu_ps(r1 + 2 * tj + 8);
        const __m256 p0 = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a0, a1, 0x88), pick),
                     q0 = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a0, a1, 0xDD), pick),
                     p1 = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(b0, b1, 0x88), pick),
                     q1 = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(b0, b1, 0xDD), pick);
        const __m256 c0[4] = {p0, _mm256_add_ps(p0, q0), _mm256_sub_ps(p0, q0),
                              _mm256_xor_ps(q0, sign)};
        const __m256 c1[4] = {p1, _mm256_add_ps(p1, q1), _mm256_sub_ps(p1, q1),
                              _mm256_xor_ps(q1, sign)};
        for (int s = 0; s < 4; s++) {
            _mm256_storeu_ps(z + (size_t)s * plane + tj, c0[s]);
            _mm256_storeu_ps(z + (size_t)(4 + s) * plane + tj, _mm256_add_ps(c0[s], c1[s]));
            _mm256_storeu_ps(z + (size_t)(8 + s) * plane + tj, _mm256_sub_ps(c0[s], c1[s]));
            _mm256_storeu_ps(z + (size_t)(12 + s) * plane + tj, _mm256_xor_ps(c1[s], sign));
        }
    }
}
#endif

typedef float wz_v4f __attribute__((vector_size(16)));
typedef int wz_v4i __attribute__((vector_size(16)));

/* Four floats of row r from column col, zeros from column OW on: past
 * the row's end (OW >= 4), the row's last four floats moved down into
 * place, so that nothing is read outside the row and the load is one
 * vector (building it a float at a time and loading it back waited for
 * the stores). */
__attribute__((always_inline)) static inline wz_v4f wz_cols4(const float *r, int col, int OW)
{
    typedef wz_v4i v4i;
    wz_v4f v = {0}, zero = {0};
    if (col + 4 <= OW) {
        memcpy(&v, r + col, 16);
        return v;
    }
    if (col >= OW) return v;
    if (OW < 4) {
        for (int j = 0; col + j < OW; j++) v[j] = r[col + j];
        return v;
    }
    memcpy(&v, r + OW - 4, 16);
    switch (col + 4 - OW) {
    case 1: return NN_SHUF4(v, zero, 1, 2, 3, 4);
    case 2: return NN_SHUF4(v, zero, 2, 3, 4, 5);
    default: return NN_SHUF4(v, zero, 3, 4, 5, 6);
    }
}

/* One row of F(4x4) tiles of Z: z at its first tile, from the four dy
 * rows r[0..3] of OW floats each (zeros past OW: wz_cols4), four tiles a
 * step: A = A^T's transpose (wino_xf.h) on each side of a tile's 4x4
 * block, a column (p0..p3) -> (p0, p0+p1+p2+p3, p0-p1+p2-p3,
 * p0+2p1+4p2+8p3, p0-2p1+4p2-8p3, p3), down the columns first, then
 * along the rows after a 4x4 transpose (the four tiles' column j into
 * one vector). The rows are read in place: copied into a zero-padded
 * buffer first, each load waited for the copy's stores. Whole vectors:
 * past the row's last tile they land on tiles (or o rows) written later,
 * or past the plane's T O floats (wino_dw_regions leaves 16). */
__attribute__((always_inline)) static inline void
wino_dw_zrow6(float *z, size_t plane, const float *const *r, int OW, int TW)
{
    typedef wz_v4f v4f;
    typedef wz_v4i v4i;
    const v4f two = {2, 2, 2, 2}, four = {4, 4, 4, 4}, eight = {8, 8, 8, 8};
    for (int tj = 0; tj < TW; tj += 4) {
        v4f e[6][4];
        for (int k = 0; k < 4; k++) {
            const int col = 4 * (tj + k);
            const v4f p0 = wz_cols4(r[0], col, OW), p1 = wz_cols4(r[1], col, OW),
                      p2 = wz_cols4(r[2], col, OW), p3 = wz_cols4(r[3], col, OW);
            const v4f s02 = p0 + p2, s13 = p1 + p3, pa = p0 + four * p2, pb = two * p1 + eight * p3;
            e[0][k] = p0;
            e[1][k] = s02 + s13;
            e[2][k] = s02 - s13;
            e[3][k] = pa + pb;
            e[4][k] = pa - pb;
            e[5][k] = p3;
        }
        for (int q = 0; q < 6; q++) {
            const v4f ab0 = NN_SHUF4(e[q][0], e[q][1], 0, 4, 1, 5),
                      ab1 = NN_SHUF4(e[q][0], e[q][1], 2, 6, 3, 7),
                      cd0 = NN_SHUF4(e[q][2], e[q][3], 0, 4, 1, 5),
                      cd1 = NN_SHUF4(e[q][2], e[q][3], 2, 6, 3, 7);
            const v4f c0 = NN_SHUF4(ab0, cd0, 0, 1, 4, 5), c1 = NN_SHUF4(ab0, cd0, 2, 3, 6, 7),
                      c2 = NN_SHUF4(ab1, cd1, 0, 1, 4, 5), c3 = NN_SHUF4(ab1, cd1, 2, 3, 6, 7);
            const v4f s02 = c0 + c2, s13 = c1 + c3, pa = c0 + four * c2, pb = two * c1 + eight * c3;
            float *zq = z + (size_t)(q * 6) * plane + tj;
            const v4f z1 = s02 + s13, z2 = s02 - s13, z3 = pa + pb, z4 = pa - pb;
            memcpy(zq, &c0, 16);
            memcpy(zq + plane, &z1, 16);
            memcpy(zq + 2 * plane, &z2, 16);
            memcpy(zq + 3 * plane, &z3, 16);
            memcpy(zq + 4 * plane, &z4, 16);
            memcpy(zq + 5 * plane, &c3, 16);
        }
    }
}

/* Z of n images' dy for F(4x4) (as wino_dw_z), a row of tiles at a time
 * (wino_dw_zrow6), rows past OH from zeros (OW floats at rows);
 * compiled for each path (the same operations: the same bits). */
__attribute__((always_inline)) static inline void
wino_dw_z4(float *Z, size_t plane, const float *dy, const nn_conv_shape *cs, int n,
           const struct wino_geom *gm, float *rows)
{
    const int O = cs->O, OH = cs->OH, OW = cs->OW, TH = gm->TH, TW = gm->TW;
    const size_t T = gm->tiles * n;
    memset(rows, 0, sizeof(float) * OW);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < n; i++) {
            const float *d = dy + ((size_t)i * O + o) * OH * OW;
            for (int ti = 0; ti < TH; ti++) {
                const float *r[4];
                for (int a = 0; a < 4; a++)
                    r[a] = 4 * ti + a < OH ? d + (size_t)(4 * ti + a) * OW : rows;
                wino_dw_zrow6(Z + (size_t)o * T + ((size_t)i * TH + ti) * TW, plane, r, OW, TW);
            }
        }
}

WINO_COPIES(wino_dw_z4,
            (float *Z, size_t plane, const float *dy, const nn_conv_shape *cs, int n,
             const struct wino_geom *gm, float *rows),
            (Z, plane, dy, cs, n, gm, rows))

/* Z [P][O, T] (planes plane floats apart) of n images' dy [n, O, OH, OW]
 * (zeros past OH and OW). F(4x4): wino_dw_z4's copy for the path. F(2x2):
 * a row of tiles at a time from two dy rows copied into rows
 * (2 (2 TW + 24) floats, zero past OW), eight tiles a step on the AVX2
 * and AVX-512 paths (wide8), four otherwise. */
static void wino_dw_z(float *Z, size_t plane, const float *dy, const nn_conv_shape *cs, int n,
                      const struct wino_geom *gm, float *rows, int wide8)
{
    if (gm->m == 4) {
        WINO_PICK(wino_dw_z4, nn_gemm_get_path())(Z, plane, dy, cs, n, gm, rows);
        return;
    }
    const int O = cs->O, OH = cs->OH, OW = cs->OW, TH = gm->TH, TW = gm->TW;
    const size_t T = gm->tiles * n, len = 2 * (size_t)TW + 24;
    float *r0 = rows, *r1 = rows + len;
    void (*zrow)(float *, size_t, const float *, const float *, int) = wino_dw_zrow4;
#if NN_X86
    if (wide8) zrow = wino_dw_zrow8;
#else
    (void)wide8;
#endif
    memset(rows, 0, sizeof(float) * 2 * len);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < n; i++) {
            const float *d = dy + ((size_t)i * O + o) * OH * OW;
            for (int ti = 0; ti < TH; ti++) {
                const int h = 2 * ti;
                memcpy(r0, d + (size_t)h * OW, sizeof(float) * OW);
                if (h + 1 < OH)
                    memcpy(r1, d + (size_t)(h + 1) * OW, sizeof(float) * OW);
                else
                    memset(r1, 0, sizeof(float) * OW);
                zrow(Z + (size_t)o * T + ((size_t)i * TH + ti) * TW, plane, r0, r1, TW);
            }
        }
}

/* g [9][8] = G^T dU G of nb (at most 8) kernels with F(4x4)'s G
 * (wino_G4), in double, the kernels innermost: u at the first kernel's
 * entry of dU's position 0, the 36 positions ps floats apart. Compiled
 * for each path as wino_ggt_block is (the same bits on every one). */
#define WINO_FB 8
__attribute__((always_inline)) static inline void
wino_fold4(double *restrict g, const float *restrict u, size_t ps, int nb)
{
    enum { B = WINO_FB };
    /* G4's columns, sharing the sums: (d0/4 - (d1 + d2)/6 + (d3 + d4)/24,
     * (d2 - d1)/6 + (d3 - d4)/12, (d3 + d4 - d1 - d2)/6 + d5). */
    const double q = 0.25, s6 = 1.0 / 6, s12 = 1.0 / 12, s24 = 1.0 / 24;
    double t[6][3][B];
    for (int a = 0; a < 6; a++) {
        double d[6][B];
        for (int b = 0; b < 6; b++) {
            float f[B] = {0};
            if (nb == B)
                memcpy(f, u + (a * 6 + b) * ps, sizeof f);
            else
                memcpy(f, u + (a * 6 + b) * ps, sizeof(float) * nb);
            for (int j = 0; j < B; j++) d[b][j] = f[j];
        }
        for (int j = 0; j < B; j++) {
            const double p12 = d[1][j] + d[2][j], m12 = d[2][j] - d[1][j];
            const double p34 = d[3][j] + d[4][j], m34 = d[3][j] - d[4][j];
            t[a][0][j] = d[0][j] * q - p12 * s6 + p34 * s24;
            t[a][1][j] = m12 * s6 + m34 * s12;
            t[a][2][j] = (p34 - p12) * s6 + d[5][j];
        }
    }
    for (int l = 0; l < 3; l++)
        for (int j = 0; j < B; j++) {
            const double p12 = t[1][l][j] + t[2][l][j], m12 = t[2][l][j] - t[1][l][j];
            const double p34 = t[3][l][j] + t[4][l][j], m34 = t[3][l][j] - t[4][l][j];
            g[l * B + j] = t[0][l][j] * q - p12 * s6 + p34 * s24;
            g[(3 + l) * B + j] = m12 * s6 + m34 * s12;
            g[(6 + l) * B + j] = (p34 - p12) * s6 + t[5][l][j];
        }
}

WINO_COPIES(wino_fold4, (double *restrict g, const float *restrict u, size_t ps, int nb),
            (g, u, ps, nb))

void nn_wino_dw_n(float *dw, float *db, const float *dy, const float *x, const nn_bn_in *bn,
                  const nn_conv_shape *cs, int g, float *scratch)
{
    struct wino_geom gm;
    const int mt = nn_wino_dw_tile(cs);
    wino_geom_m(&gm, cs, mt);
    const nn_conv_shape e = wino_shape(cs);
    const int C = e.C, O = cs->O, step = wino_dw_group(cs, g), NP = gm.P;
    const size_t nin = (size_t)cs->C * cs->H * cs->W, nout = (size_t)O * cs->OH * cs->OW;
    const size_t P = (size_t)cs->OH * cs->OW;
    size_t r[4];
    wino_dw_regions(cs, step, r);
    float *xp = scratch, *V = xp + r[0], *Z = V + r[1], *dU = Z + r[2];
    const size_t Ds = r[3] / NP;
    const int path = nn_gemm_get_path(),
              wide8 = NN_X86 && (path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512);
    for (int i0 = 0; i0 < g; i0 += step) {
        const int n = g - i0 < step ? g - i0 : step;
        const size_t T = gm.tiles * n, Vs = wino_dw_plane(T * C), Zs = wino_dw_plane(T * O + 16);
        wino_input(V, xp, x + i0 * nin, cs, n, &gm, Vs, 0, bn);
        /* xp is dead: its region holds the rows of dy. */
        wino_dw_z(Z, Zs, dy + i0 * nout, cs, n, &gm, xp, wide8);
        /* The first chunk writes dU, the others add to it (no pass to
         * zero it first: 2.4 MB for the 4x4 layer). */
        for (int q = 0; q < NP; q++)
            nn_gemm(0, 0, O, C, (int)T, 1.0f, Z + q * Zs, (int)T, V + q * Vs, C, i0 ? 1.0f : 0.0f,
                    dU + q * Ds, C);
        for (int i = 0; i < n; i++)
            for (int o = 0; o < O; o++) db[o] += sum8(dy + (i0 + i) * nout + (size_t)o * P, P);
    }
    /* dw += G^T dU G, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], in
     * double, each side as (u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 +
     * u3), each tap to where wino_kernel reads it. */
    const int k = cs->k, Cx = cs->C;
    if (mt == 4) {
        /* Eight kernels a fold; on stride 2 the four phases of the same
         * eight channels one after another, so that each channel's k x k
         * taps are added at once, in memory order. Phase by phase, the
         * 4x4 layer's dw (400 KB) came through L2 four times, from L3,
         * while its dU (2.4 MB) streamed past: 0.35 of 1.13 ms (32
         * images). */
        void (*fold)(double *restrict, const float *restrict, size_t, int) =
            WINO_PICK(wino_fold4, path);
        const int nph = wino_s2d(cs) ? 4 : 1;
        double g4[4][9 * WINO_FB];
        for (int o = 0; o < O; o++)
            for (int c0 = 0; c0 < Cx; c0 += WINO_FB) {
                const int nb = Cx - c0 < WINO_FB ? Cx - c0 : WINO_FB;
                for (int ph = 0; ph < nph; ph++)
                    fold(g4[ph], dU + (size_t)o * C + (size_t)ph * Cx + c0, Ds, nb);
                for (int q = 0; q < nb; q++) {
                    float *d = dw + ((size_t)o * Cx + c0 + q) * k * k;
                    if (nph == 1) {
                        for (int j = 0; j < 9; j++) d[j] += (float)g4[0][j * WINO_FB + q];
                        continue;
                    }
                    /* Tap (ki, kj) is phase (ki % 2, kj % 2)'s (ki / 2, kj / 2). */
                    for (int ki = 0; ki < k; ki++)
                        for (int kj = 0; kj < k; kj++)
                            d[ki * k + kj] += (float)g4[(ki & 1) * 2 + (kj & 1)]
                                                       [((ki >> 1) * 3 + (kj >> 1)) * WINO_FB + q];
                }
            }
        return;
    }
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++) {
            double t[4][3], gw[3][3];
            const float *u = dU + (size_t)o * C + c;
            {
                for (int a = 0; a < 4; a++) {
                    const double u0 = u[(a * 4) * Ds], u1 = u[(a * 4 + 1) * Ds];
                    const double u2 = u[(a * 4 + 2) * Ds], u3 = u[(a * 4 + 3) * Ds];
                    const double h = 0.5 * (u1 + u2);
                    t[a][0] = u0 + h;
                    t[a][1] = 0.5 * (u1 - u2);
                    t[a][2] = h + u3;
                }
                for (int l = 0; l < 3; l++) {
                    const double h = 0.5 * (t[1][l] + t[2][l]);
                    gw[0][l] = t[0][l] + h;
                    gw[1][l] = 0.5 * (t[1][l] - t[2][l]);
                    gw[2][l] = h + t[3][l];
                }
            }
            if (!wino_s2d(cs)) {
                float *d = dw + ((size_t)o * Cx + c) * 9;
                for (int j = 0; j < 9; j++) d[j] += (float)gw[j / 3][j % 3];
                continue;
            }
            const int ph = c / Cx, cc = c % Cx, pa = ph >> 1, pb = ph & 1;
            for (int m = 0; m < 3; m++)
                for (int l = 0; l < 3; l++) {
                    const int ki = 2 * m + pa, kj = 2 * l + pb;
                    if (ki < k && kj < k)
                        dw[(((size_t)o * Cx + cc) * k + ki) * k + kj] += (float)gw[m][l];
                }
        }
}
