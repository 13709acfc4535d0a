/* test_wino.c - the Winograd F(2x2,3x3) convolution against the direct
 * reference (nn_conv2d_forward_ref), on every kernel path this CPU runs
 * (its 16 products per tile are GEMMs), and the net's inference plan that
 * uses it.
 *
 * Error bound. An output is
 *   y = A^T [ sum_c (G g_c G^T) . (B^T d_c B) ] A + b
 * (g_c the 3x3 kernel, d_c the 4x4 input tile of channel c). Expanded, it
 * is a signed sum of terms coef * g[j] * d[k]; float evaluation perturbs
 * each term by a factor (1 + t), |t| <= gamma(n) (tol.h), n the roundings
 * on its way: U = G g G^T, computed in double and rounded once (counted
 * 2, the double error included), V = B^T d B (2: one per side, each entry
 * a sum of 2), the product (1), the sum over C channels (C - 1), A^T M A
 * (4: each side sums 3 entries) and the bias (1): n = C + 9. So
 *   |y_computed - y| <= gamma(C + 9) * m,
 *   m = |A^T| [ sum_c (|G| |g_c| |G^T|) . (|B^T| |d_c| |B|) ] |A| + |b|.
 * Per output and channel, sum over the 16 positions of |A| |G| |G| |B| |B|
 * with all 9 kernel and 16 tile entries at their maximum gives the growth
 * factor: in one dimension sum_e |A_ei| (sum_j |G_ej|) (sum_k |B^T_ek|)
 * = 1*2 + 1.5*2 + 1.5*2 = 8 for either output i, so 8 * 8 = 64 in two, and
 *   m <= 64 * sum_c max|g_c| * max|d_c| + |b|.
 * The reference rounds once more (u * |y| <= u * m). The bound is about
 * 4x the direct convolution's for these sizes; a dropped or misplaced
 * product moves an output by about |g| |d|, well above it.
 *
 * F(4x4,3x3) (6x6 tiles; B^T, G, A^T in nn/wino_xf.h and nn/wino.c):
 * the same argument. Roundings: U 2, V 6 (each side at most 3 on a
 * term's way: a scaled entry, a partial sum, the sum), the product 1,
 * the channels C - 1, A^T M A 6 (3 a side) and the bias 1: n = C + 15.
 * Growth per dimension and output i: sum_e |A_ei| (sum_j |G_ej|)
 * (sum_k |B^T_ek|) with row sums of |G| 1/4, 1/2, 1/2, 7/24, 7/24, 1 and
 * of |B^T| 10, 10, 10, 6, 6, 10 gives 16, 17, 24 and 48 for i = 0..3,
 * so 48 * 48 = 2304 in two: 36 times F(2x2)'s, the price of the larger
 * tile's entries (8, 1/6). A dropped product still shows (see
 * test_wino_bound_catches).
 *
 * Stride 2 (k 4 to 6) runs as the stride-1 3x3 convolution of the
 * space-to-depth image z (4C channels, phase (a, b) of the bordered input
 * in channels (2a + b) C ..) with the kernel's taps regrouped by phase
 * (nn/wino.c). Its bound is the one above for that convolution, C -> 4C;
 * the test builds z and the regrouped kernel itself (s2d_image,
 * s2d_kernel), and compares with the reference on x and w as given.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nn/conv.h"
#include "nn/ensemble.h"
#include "nn/gemm.h"
#include "nn/layers.h"
#include "nn/net.h"
#include "nn/rng.h"
#include "nn/wino.h"
#include "tol.h"

#define WINO_GROWTH 64.0
#define WINO4_GROWTH 2304.0

static void fill(float *v, size_t n, uint64_t seed, float scale)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) v[i] = (2.0f * nn_rng_uniform(&r) - 1.0f) * scale;
}

/* The bound above for output (o, oh, ow) of one image x [C,H,W], by
 * F(mt x mt, 3x3): tiles of mt + 2, growth and roundings per mt. */
static double wino_bound_m(const nn_conv_shape *cs, const float *x, const float *w, const float *b,
                           int o, int oh, int ow, int mt)
{
    const int r0 = oh / mt * mt - cs->p, s0 = ow / mt * mt - cs->p;
    double m = 0.0;
    for (int c = 0; c < cs->C; c++) {
        double mg = 0.0, md = 0.0;
        for (int j = 0; j < 9; j++) mg = fmax(mg, fabsf(w[((size_t)o * cs->C + c) * 9 + j]));
        for (int r = r0; r < r0 + mt + 2; r++)
            for (int s = s0; s < s0 + mt + 2; s++)
                if (r >= 0 && r < cs->H && s >= 0 && s < cs->W)
                    md = fmax(md, fabsf(x[((size_t)c * cs->H + r) * cs->W + s]));
        m += mg * md;
    }
    m = (mt == 4 ? WINO4_GROWTH : WINO_GROWTH) * m + (b ? fabsf(b[o]) : 0.0f);
    return (tol_gamma(cs->C + (mt == 4 ? 15.0 : 9.0)) + TOL_U) * m;
}

/* z [4C, OH + 2, OW + 2] of one image x [C,H,W] (stride 2, border p). */
static void s2d_image(float *z, const float *x, const nn_conv_shape *cs)
{
    const int Hz = cs->OH + 2, Wz = cs->OW + 2;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < cs->C; c++)
                for (int i = 0; i < Hz; i++)
                    for (int j = 0; j < Wz; j++) {
                        int h = 2 * i + a - cs->p, w = 2 * j + b - cs->p;
                        z[(((size_t)(2 * a + b) * cs->C + c) * Hz + i) * Wz + j] =
                            h >= 0 && h < cs->H && w >= 0 && w < cs->W
                                ? x[((size_t)c * cs->H + h) * cs->W + w]
                                : 0.0f;
                    }
}

/* w3 [O, 4C, 3, 3]: tap (m, n) of phase (a, b) is w's (2m + a, 2n + b). */
static void s2d_kernel(float *w3, const float *w, const nn_conv_shape *cs)
{
    const int C = cs->C, k = cs->k;
    for (int o = 0; o < cs->O; o++)
        for (int ph = 0; ph < 4; ph++)
            for (int c = 0; c < C; c++)
                for (int m = 0; m < 3; m++)
                    for (int n = 0; n < 3; n++) {
                        int ki = 2 * m + ph / 2, kj = 2 * n + ph % 2;
                        w3[(((size_t)o * 4 * C + ph * C + c) * 3 + m) * 3 + n] =
                            ki < k && kj < k ? w[(((size_t)o * C + c) * k + ki) * k + kj] : 0.0f;
                    }
}

/* One shape (k 3 stride 1, or k 4 to 6 stride 2), g images, with and
 * without bias and ReLU, against the reference image by image; the
 * scratch's end is guarded. */
static void check_shape_ks(int C, int H, int W, int O, int k, int st, int p, int g, int mt)
{
    nn_conv_shape cs = {C, H, W, O, k, st, p, (H + 2 * p - k) / st + 1, (W + 2 * p - k) / st + 1};
    assert_true(nn_wino_fits(&cs));
    /* The convolution the bound is about: cs itself, or z's. */
    nn_conv_shape bs = cs;
    if (st == 2) bs = (nn_conv_shape){4 * C, cs.OH + 2, cs.OW + 2, O, 3, 1, 0, cs.OH, cs.OW};
    float *z = malloc((size_t)bs.C * bs.H * bs.W * 4), *w3 = malloc((size_t)O * bs.C * 9 * 4);
    assert_true(z && w3);
    const size_t nx = (size_t)C * H * W, ny = (size_t)O * cs.OH * cs.OW, nw = (size_t)O * C * k * k;
    const size_t nscr = nn_wino_scratch_size(&cs, g, mt), nu = nn_wino_weights_size(&cs, mt);
    float *x = malloc(g * nx * 4), *w = malloc(nw * 4), *b = malloc(O * 4), *u = malloc(nu * 4),
          *y = malloc(g * ny * 4), *ref = malloc(ny * 4), *scr = malloc((nscr + 1) * 4);
    assert_true(x && w && b && u && y && ref && scr);
    fill(x, g * nx, 100 + C * 7 + H, 1.0f);
    fill(w, nw, 200 + O, 0.3f);
    fill(b, O, 300 + O, 0.5f);
    nn_wino_weights(u, w, &cs, mt);
    if (st == 2)
        s2d_kernel(w3, w, &cs);
    else
        memcpy(w3, w, nw * 4);
    for (int variant = 0; variant < 3; variant++) {
        const float *bias = variant == 1 ? NULL : b;
        const int relu = variant == 2;
        scr[nscr] = 12345.0f;
        nn_wino_forward_n(y, x, u, bias, &cs, g, scr, relu, mt);
        assert_true(scr[nscr] == 12345.0f);
        for (int i = 0; i < g; i++) {
            const float *xi = x + i * nx;
            nn_conv2d_forward_ref(ref, xi, w, bias, &cs);
            if (st == 2)
                s2d_image(z, xi, &cs);
            else
                memcpy(z, xi, nx * 4);
            for (int o = 0; o < O; o++)
                for (int oh = 0; oh < cs.OH; oh++)
                    for (int ow = 0; ow < cs.OW; ow++) {
                        size_t j = ((size_t)o * cs.OH + oh) * cs.OW + ow;
                        double want = relu && ref[j] < 0 ? 0.0 : ref[j];
                        double got = y[i * ny + j];
                        double bound = wino_bound_m(&bs, z, w3, bias, o, oh, ow, mt);
                        if (!(fabs(got - want) <= bound))
                            fail_msg("F%d C%d %dx%d O%d k%d s%d p%d g%d variant %d: image %d "
                                     "y[%d,%d,%d] = %.9g, reference %.9g, bound %.3g",
                                     mt, C, H, W, O, k, st, p, g, variant, i, o, oh, ow, got, want,
                                     bound);
                    }
        }
    }
    free(x);
    free(w);
    free(b);
    free(u);
    free(y);
    free(ref);
    free(scr);
    free(z);
    free(w3);
}

static void check_shape(int C, int H, int W, int O, int p, int g, int mt)
{
    check_shape_ks(C, H, W, O, 3, 1, p, g, mt);
}

/* Each case row through check on every kernel path this CPU runs (the
 * Winograd GEMMs run on each), then back to the default path. */
static void on_every_path(void (*check)(const int *row), const int *rows, size_t n, size_t width)
{
    int ran = 0;
    for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
        if (!nn_gemm_path_supported(path)) continue;
        assert_int_equal(nn_gemm_set_path(path), 0);
        print_message("[ PATH     ] %s\n", nn_gemm_path_name(path));
        for (size_t c = 0; c < n; c++) check(rows + c * width);
        ran++;
    }
    assert_true(ran >= 2); /* generic and generic-wide run everywhere */
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* Case rows: C, H, W, O, p, g (3x3 stride 1), or C, H, W, O, k, s, p, g. */
static void check_shape_row(const int *r) { check_shape(r[0], r[1], r[2], r[3], r[4], r[5], 2); }
static void check_shape_ks_row(const int *r)
{
    check_shape_ks(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], 2);
}
static void check_shape4_row(const int *r) { check_shape(r[0], r[1], r[2], r[3], r[4], r[5], 4); }
static void check_shape4_ks_row(const int *r)
{
    check_shape_ks(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], 4);
}

/* Shapes: the big CNN's three (24x24, 10x10 and 8x8 outputs), odd maps
 * (a dropped grid row and column), channel counts off the 4-, 8- and
 * 16-lane vectors,
 * padding 0, 1 and 2, one row or column of outputs, and batches that fill
 * several chunks of tiles (nn_wino_group) with a partial last one. */
static const int s1_cases[][6] = {
    /* C, H, W, O, p, g */
    {32, 26, 26, 32, 0, 1},
    {32, 12, 12, 64, 0, 3},
    {64, 10, 10, 64, 0, 2},
    {3, 9, 11, 5, 1, 2},
    {2, 3, 3, 1, 0, 1},
    {5, 7, 4, 6, 2, 1},
    {4, 3, 8, 4, 0, 3},
    {6, 13, 5, 7, 1, 4},
    {8, 6, 6, 4, 1, 37},
    {7, 5, 5, 9, 0, 70},
    /* Whole 16-lane vectors and a remainder (AVX-512 transforms). */
    {20, 9, 9, 24, 1, 2},
    {40, 6, 7, 18, 0, 1},
    /* Outputs past one weight-transform block (64) with a tail that is
     * not a whole vector of doubles (wino_ggt_block). */
    {3, 6, 6, 70, 1, 2}};

/* Each by F(2x2) and by F(4x4) (for which most maps are not multiples of
 * 4: up to three dropped grid rows and columns). */
static void test_wino_vs_ref(void **s)
{
    (void)s;
    on_every_path(check_shape_row, &s1_cases[0][0], sizeof s1_cases / sizeof s1_cases[0],
                  sizeof s1_cases[0] / sizeof s1_cases[0][0]);
    on_every_path(check_shape4_row, &s1_cases[0][0], sizeof s1_cases / sizeof s1_cases[0],
                  sizeof s1_cases[0] / sizeof s1_cases[0][0]);
}

/* Stride 2 by space-to-depth: the big CNN's two 5x5 layers (24x24 -> 12x12
 * and 8x8 -> 4x4, border 2), kernels 4 and 6, borders 0 to 3, odd and
 * even maps (the last phase row or column partly outside the image), one
 * output, channel counts off the vectors, and batches past a chunk; each
 * by F(2x2) and by F(4x4). */
static const int s2_cases[][8] = {/* C, H, W, O, k, s, p, g */
                                  {32, 24, 24, 32, 5, 2, 2, 1}, {64, 8, 8, 64, 5, 2, 2, 2},
                                  {3, 9, 11, 5, 5, 2, 2, 3},    {5, 7, 6, 6, 5, 2, 0, 1},
                                  {2, 5, 5, 3, 5, 2, 1, 2},     {6, 10, 9, 4, 4, 2, 1, 1},
                                  {4, 12, 12, 7, 6, 2, 3, 2},   {7, 5, 5, 9, 5, 2, 2, 40},
                                  {1, 6, 6, 2, 5, 2, 2, 1},     {8, 11, 13, 8, 4, 2, 0, 70},
                                  {5, 9, 9, 20, 5, 2, 2, 2}};

static void test_wino_s2d_vs_ref(void **s)
{
    (void)s;
    on_every_path(check_shape_ks_row, &s2_cases[0][0], sizeof s2_cases / sizeof s2_cases[0],
                  sizeof s2_cases[0] / sizeof s2_cases[0][0]);
    on_every_path(check_shape4_ks_row, &s2_cases[0][0], sizeof s2_cases / sizeof s2_cases[0],
                  sizeof s2_cases[0] / sizeof s2_cases[0][0]);
}

/* The input gradient (nn_wino_dx_n) against the reference backward's dx.
 * It is a Winograd convolution of dy (bordered by 2 - p, or by 2 for
 * stride 2) with the kernels flipped, in and out channels swapped, and for
 * stride 2 regrouped into 4C outputs, one per stride phase of dx; the
 * bound is the forward's for that convolution, with the test's own
 * kernel wd [C or 4C, O, 3, 3]. */
static int dx_tiles; /* the tiles check_dx saw: 2 | 4 */

static void check_dx(int C, int H, int W, int O, int k, int st, int p, int g)
{
    nn_conv_shape cs = {C, H, W, O, k, st, p, (H + 2 * p - k) / st + 1, (W + 2 * p - k) / st + 1};
    assert_true(nn_wino_dx_fits(&cs));
    /* Stride 2: dz's rows and columns from z0 = p / 2 to (H - 1 + p) / 2
     * (at most OH + 1), the ones dx reads. */
    const int z0 = st == 2 ? p / 2 : 0, zh = (H - 1 + p) / 2, zw = (W - 1 + p) / 2;
    nn_conv_shape d = {O, cs.OH, cs.OW, C, 3, 1, 2 - p, H, W};
    if (st == 2)
        d = (nn_conv_shape){O,
                            cs.OH,
                            cs.OW,
                            4 * C,
                            3,
                            1,
                            2 - z0,
                            (zh < cs.OH + 1 ? zh : cs.OH + 1) - z0 + 1,
                            (zw < cs.OW + 1 ? zw : cs.OW + 1) - z0 + 1};
    const int mt = nn_wino_dx_tile(&cs); /* the tile nn/wino.c picks for it */
    dx_tiles |= mt;
    const size_t nx = (size_t)C * H * W, ny = (size_t)O * cs.OH * cs.OW, nw = (size_t)O * C * k * k,
                 nwd = (size_t)d.O * O * 9;
    const size_t nscr = nn_wino_dx_scratch_size(&cs, g);
    float *x = calloc(nx, 4), *dy = malloc(g * ny * 4), *w = malloc(nw * 4), *wd = malloc(nwd * 4),
          *u = malloc(nn_wino_dx_weights_size(&cs) * 4), *dx = malloc(g * nx * 4),
          *ref = malloc(nx * 4), *dw = calloc(nw, 4), *db = calloc(O, 4),
          *scr = malloc((nscr + 1) * 4);
    assert_true(x && dy && w && wd && u && dx && ref && dw && db && scr);
    fill(dy, g * ny, 400 + C + H, 1.0f);
    fill(w, nw, 500 + O + k, 0.3f);
    for (int oc = 0; oc < d.O; oc++)
        for (int o = 0; o < O; o++)
            for (int m = 0; m < 3; m++)
                for (int n = 0; n < 3; n++) {
                    int c = oc, ki = 2 - m, kj = 2 - n;
                    if (st == 2) {
                        c = oc % C;
                        ki = 2 * (2 - m) + oc / C / 2;
                        kj = 2 * (2 - n) + oc / C % 2;
                    }
                    wd[(((size_t)oc * O + o) * 3 + m) * 3 + n] =
                        ki < k && kj < k ? w[(((size_t)o * C + c) * k + ki) * k + kj] : 0.0f;
                }
    nn_wino_dx_weights(u, w, &cs);
    scr[nscr] = 12345.0f;
    nn_wino_dx_n(dx, dy, u, &cs, g, scr);
    assert_true(scr[nscr] == 12345.0f);
    for (int i = 0; i < g; i++) {
        nn_conv2d_backward_ref(ref, dw, db, dy + i * ny, x, w, &cs);
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int v = 0; v < W; v++) {
                    int oc = c, zi = h, zj = v;
                    if (st == 2) {
                        oc = (2 * ((h + p) % 2) + (v + p) % 2) * C + c;
                        zi = (h + p) / 2 - z0;
                        zj = (v + p) / 2 - z0;
                    }
                    size_t j = ((size_t)c * H + h) * W + v;
                    double want = ref[j], got = dx[i * nx + j];
                    double bound = zi < d.OH && zj < d.OW
                                       ? wino_bound_m(&d, dy + i * ny, wd, NULL, oc, zi, zj, mt)
                                       : 0.0;
                    if (!(fabs(got - want) <= bound))
                        fail_msg("dx C%d %dx%d O%d k%d s%d p%d g%d: image %d dx[%d,%d,%d] = %.9g, "
                                 "reference %.9g, bound %.3g",
                                 C, H, W, O, k, st, p, g, i, c, h, v, got, want, bound);
                }
    }
    free(x);
    free(dy);
    free(w);
    free(wd);
    free(u);
    free(dx);
    free(ref);
    free(dw);
    free(db);
    free(scr);
}

static void check_dx_row(const int *r) { check_dx(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]); }

/* Stride 1 with borders 0 to 2, and stride 2 where it takes fewer
 * multiplies than the direct product (the big CNN's 12x12 and 4x4
 * layers; odd maps, a row of the input no output reads, which gets
 * zeros, and dz cropped below, border 0). Each by the tile nn/wino.c
 * picks for its dy (nn_wino_dx_tile), against that tile's bound; both
 * tiles run. */
static void test_wino_dx_vs_ref(void **s)
{
    (void)s;
    static const int cases[][8] = {/* C, H, W, O, k, s, p, g */
                                   {32, 24, 24, 32, 5, 2, 2, 1},
                                   {5, 21, 23, 6, 5, 2, 2, 3},
                                   {3, 26, 22, 4, 5, 2, 1, 2},
                                   {4, 25, 24, 3, 6, 2, 2, 1},
                                   {6, 10, 10, 5, 3, 1, 0, 2},
                                   {7, 9, 11, 4, 3, 1, 1, 3},
                                   {3, 5, 6, 8, 3, 1, 2, 40},
                                   /* 68 outputs of the transform: a block and 4 */
                                   {17, 21, 23, 5, 5, 2, 2, 1},
                                   {64, 8, 8, 64, 5, 2, 2, 3},
                                   {3, 24, 24, 4, 4, 2, 0, 2},
                                   {3, 25, 24, 4, 6, 2, 0, 2}};
    dx_tiles = 0;
    on_every_path(check_dx_row, &cases[0][0], sizeof cases / sizeof cases[0],
                  sizeof cases[0] / sizeof cases[0][0]);
    assert_int_equal(dx_tiles, 2 | 4); /* both F(2x2) and F(4x4) ran */
}

/* The weight gradient by Winograd (nn_wino_dw_n; F(4x4,3x3) where
 * nn_wino_dw_tile picks it, else F(2x2,3x3)), against the direct reference.
 * An entry is a signed sum over the tiles t of terms coef * d[.] * dy[.]:
 * G^T [sum_t (B^T d_t B) . (A dy_t A^T)] G. Roundings on a term's way,
 * F(2x2): V 2, Z 2 (each side sums 2 entries), the product 1, the sum
 * over the T tiles of all images T - 1, G^T dU G in double and its
 * rounding 1, the add into dw 1: n = T + 6. F(4x4): V 6 and Z 6 (at most
 * 3 a side, as the forward's transforms), n = T + 14. Growth per
 * dimension and tap k: sum_e |G_ek| (sum_r |B^T_er|) (sum_a |A_ea|):
 * F(2x2) 6, 4, 6 (A's rows sum to 1, 2, 2, 1 in absolute value, B^T's to
 * 2); F(4x4) 70/3, 85/3, 160/3 (A's rows 1, 4, 4, 15, 15, 1, B^T's 10,
 * 10, 10, 6, 6, 10, G's columns in wino.c), so at most 36 and 2844 in
 * two:
 *   m <= growth(ki) growth(kj) * sum_t max|d_t| * max|dy_t|
 * over tile t's (m + 2) x (m + 2) input window (channel c) and m x m
 * block of dy (output o). Stride 2: the same for the space-to-depth
 * convolution (its channel (2a + b) C + c, tap (m, n) for
 * (2m + a, 2n + b)). */
static double dw_bound(const nn_conv_shape *cs, const float *x, const float *dy, int g, int o,
                       int c, int ki, int kj)
{
    static const double grow2[3] = {6, 4, 6}, grow4[3] = {70.0 / 3, 85.0 / 3, 160.0 / 3};
    const int st2 = cs->s == 2, mt = nn_wino_dw_tile(cs);
    const int TH = (cs->OH + mt - 1) / mt, TW = (cs->OW + mt - 1) / mt;
    const int a = st2 ? ki % 2 : 0, b = st2 ? kj % 2 : 0, ti = st2 ? ki / 2 : ki,
              tj = st2 ? kj / 2 : kj;
    double m = 0.0;
    for (int i = 0; i < g; i++) {
        const float *xi = x + (size_t)i * cs->C * cs->H * cs->W;
        const float *di = dy + ((size_t)i * cs->O + o) * cs->OH * cs->OW;
        for (int th = 0; th < TH; th++)
            for (int tw = 0; tw < TW; tw++) {
                double md = 0.0, mdy = 0.0;
                for (int r = 0; r < mt + 2; r++)
                    for (int q = 0; q < mt + 2; q++) {
                        /* Input pixel of window position (r, q): stride 1
                         * reads x at (m th + r - p), stride 2 z's phase. */
                        int h = mt * th + r, w = mt * tw + q;
                        if (st2) {
                            h = 2 * h + a;
                            w = 2 * w + b;
                        }
                        h -= cs->p;
                        w -= cs->p;
                        if (h >= 0 && h < cs->H && w >= 0 && w < cs->W)
                            md = fmax(md, fabsf(xi[((size_t)c * cs->H + h) * cs->W + w]));
                    }
                for (int r = 0; r < mt; r++)
                    for (int q = 0; q < mt; q++) {
                        int h = mt * th + r, w = mt * tw + q;
                        if (h < cs->OH && w < cs->OW)
                            mdy = fmax(mdy, fabsf(di[(size_t)h * cs->OW + w]));
                    }
                m += md * mdy;
            }
    }
    const double T = (double)g * TH * TW;
    const double grow = mt == 4 ? grow4[ti] * grow4[tj] : grow2[ti] * grow2[tj];
    return (tol_gamma(T + (mt == 4 ? 14.0 : 6.0)) + TOL_U) * grow * m + 0x1p-126;
}

static int dw_tiles; /* the tiles check_dw saw: 2 | 4 */

/* dw and db of g images against the reference; drop: one 2x2 block of
 * dy (output 0, image 0, the second tile) zeroed for nn_wino_dw_n only,
 * returning how many of output 0's dw entries then leave the bound. */
static int check_dw(int C, int H, int W, int O, int k, int st, int p, int g, int drop)
{
    nn_conv_shape cs = {C, H, W, O, k, st, p, (H + 2 * p - k) / st + 1, (W + 2 * p - k) / st + 1};
    assert_true(nn_wino_dw_fits(&cs));
    dw_tiles |= nn_wino_dw_tile(&cs);
    const size_t nx = (size_t)C * H * W, ny = (size_t)O * cs.OH * cs.OW, nw = (size_t)O * C * k * k;
    const size_t nscr = nn_wino_dw_scratch_size(&cs, g);
    float *x = malloc(g * nx * 4), *dy = malloc(g * ny * 4), *dy2 = malloc(g * ny * 4),
          *w = calloc(nw, 4), *dw = calloc(nw, 4), *db = calloc(O, 4), *ref = calloc(nw, 4),
          *rdb = calloc(O, 4), *dx = malloc(nx * 4), *scr = malloc((nscr + 1) * 4);
    assert_true(x && dy && dy2 && w && dw && db && ref && rdb && dx && scr);
    fill(x, g * nx, 600 + C + H, 1.0f);
    fill(dy, g * ny, 700 + O + W, 1.0f);
    memcpy(dy2, dy, g * ny * 4);
    if (drop)
        for (int r = 0; r < 2; r++)
            for (int q = 2; q < 4; q++) dy2[(size_t)r * cs.OW + q] = 0.0f;
    for (int i = 0; i < g; i++)
        nn_conv2d_backward_ref(dx, ref, rdb, dy + i * ny, x + i * nx, w, &cs);
    scr[nscr] = 12345.0f;
    nn_wino_dw_n(dw, db, dy2, x, NULL, &cs, g, scr);
    assert_true(scr[nscr] == 12345.0f);
    int outside = 0;
    for (int o = 0; o < (drop ? 1 : O); o++) {
        for (int c = 0; c < C; c++)
            for (int ki = 0; ki < k; ki++)
                for (int kj = 0; kj < k; kj++) {
                    size_t j = (((size_t)o * C + c) * k + ki) * k + kj;
                    double bd = dw_bound(&cs, x, dy, g, o, c, ki, kj);
                    if (drop)
                        outside += fabs(dw[j] - ref[j]) > bd;
                    else if (!(fabs(dw[j] - ref[j]) <= bd))
                        fail_msg("dw[%d,%d,%d,%d] = %.9g, reference %.9g, bound %.3g (%s)", o, c,
                                 ki, kj, dw[j], ref[j], bd, nn_gemm_path_name(NN_GEMM_PATH_AUTO));
                }
        if (!drop) {
            /* db: a sum of g OH OW floats, read straight from dy. */
            double mb = 0.0;
            for (int i = 0; i < g; i++)
                for (size_t j = 0; j < (size_t)cs.OH * cs.OW; j++)
                    mb += fabsf(dy[i * ny + (size_t)o * cs.OH * cs.OW + j]);
            assert_true(tol_ok(db[o], rdb[o], (double)g * cs.OH * cs.OW + 1, (float)mb));
        }
    }
    free(x);
    free(dy);
    free(dy2);
    free(w);
    free(dw);
    free(db);
    free(ref);
    free(rdb);
    free(dx);
    free(scr);
    return outside;
}

static void check_dw_row(const int *r)
{
    check_dw(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], 0);
}

/* Stride 1 with borders 0 to 2 and odd maps (a tile row and column past
 * the outputs, from zeros), chunks of several images and a group that
 * ends mid-chunk; stride 2 on the big CNN's 24x24 -> 12x12 layer and odd
 * ones, k 5 and 6; channel counts off the vector width. The bound catches
 * one 2x2 block of dy left out. */
static void test_wino_dw_vs_ref(void **s)
{
    (void)s;
    static const int cases[][8] = {
        /* C, H, W, O, k, s, p, g */
        {32, 26, 26, 32, 3, 1, 0, 2}, {6, 10, 10, 5, 3, 1, 0, 3},   {7, 9, 11, 4, 3, 1, 1, 2},
        {3, 5, 6, 9, 3, 1, 2, 40},    {64, 10, 10, 64, 3, 1, 0, 1}, {32, 24, 24, 32, 5, 2, 2, 1},
        {5, 21, 23, 6, 5, 2, 2, 3},   {3, 26, 22, 4, 5, 2, 1, 2},   {4, 25, 24, 3, 6, 2, 2, 1},
        {2, 27, 25, 3, 6, 2, 3, 2},   {4, 8, 8, 3, 3, 1, 0, 2},     {2, 7, 7, 3, 3, 1, 0, 5},
        {64, 8, 8, 64, 5, 2, 2, 3},   {5, 8, 8, 6, 5, 2, 2, 2}};
    /* The last two: the big CNN's 4x4 layer (one F(4x4) tile an image,
     * where the forward keeps F(2x2)), and 4C off the fold's 8 kernels. */
    nn_conv_shape small = {64, 8, 8, 64, 5, 2, 2, 4, 4}, k4 = {8, 24, 24, 8, 4, 2, 1, 12, 12};
    assert_int_equal(nn_wino_tile(&small), 2);
    assert_int_equal(nn_wino_dw_tile(&small), 4);
    /* Left direct: k 4 (16 multiplies an output either way). */
    assert_false(nn_wino_dw_fits(&k4));
    dw_tiles = 0;
    on_every_path(check_dw_row, &cases[0][0], sizeof cases / sizeof cases[0],
                  sizeof cases[0] / sizeof cases[0][0]);
    assert_int_equal(dw_tiles, 2 | 4); /* both F(2x2) and F(4x4) ran */
    int out1 = check_dw(16, 10, 10, 8, 3, 1, 1, 2, 1), out2 = check_dw(8, 24, 24, 8, 5, 2, 2, 2, 1);
    print_message("dy block dropped: %d of 144 and %d of 200 entries outside the bound\n", out1,
                  out2);
    assert_true(out1 > 72);
    assert_true(out2 > 50);
}

/* The bound is not loose enough to hide a wrong result: one product
 * dropped (a kernel entry zeroed in the transformed weights only) fails
 * it somewhere. */
static void test_wino_bound_catches(void **s)
{
    (void)s;
    nn_conv_shape cs = {16, 10, 10, 8, 3, 1, 1, 10, 10};
    const size_t nx = 1600, nw = 8 * 16 * 9, ny = 800;
    float *x = malloc(nx * 4), *w = malloc(nw * 4), *w2 = malloc(nw * 4),
          *u = malloc(nn_wino_weights_size(&cs, 4) * 4), *y = malloc(ny * 4), *ref = malloc(ny * 4),
          *scr = malloc(nn_wino_scratch_size(&cs, 1, 4) * 4 + nn_wino_scratch_size(&cs, 1, 2) * 4);
    assert_true(x && w && w2 && u && y && ref && scr);
    fill(x, nx, 5, 1.0f);
    fill(w, nw, 6, 0.3f);
    memcpy(w2, w, nw * 4);
    w2[(3 * 16 + 5) * 9 + 4] = 0.0f; /* output 3, channel 5, centre tap */
    nn_conv2d_forward_ref(ref, x, w, NULL, &cs);
    for (int mt = 2; mt <= 4; mt += 2) {
        nn_wino_weights(u, w2, &cs, mt);
        nn_wino_forward_n(y, x, u, NULL, &cs, 1, scr, 0, mt);
        int outside = 0;
        for (int oh = 0; oh < 10; oh++)
            for (int ow = 0; ow < 10; ow++) {
                size_t j = (3 * 10 + oh) * 10 + ow;
                outside += fabs(y[j] - ref[j]) > wino_bound_m(&cs, x, w, NULL, 3, oh, ow, mt);
            }
        print_message("F(%dx%d): %d of 100 outputs outside the bound\n", mt, mt, outside);
        assert_true(outside > 50);
    }
    free(x);
    free(w);
    free(w2);
    free(u);
    free(y);
    free(ref);
    free(scr);
}

static nn_net *make_net(const char *arch, int c, int h, int w, uint64_t seed)
{
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    if (nn_arch_parse(arch, L, &nl, err, sizeof err)) fail_msg("arch: %s", err);
    nn_net *net = nn_net_create(L, nl, c, h, w, NULL, err, sizeof err);
    if (!net) fail_msg("create: %s", err);
    nn_net_init(net, seed);
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i].nb)
            fill(net->params + net->layers[i].b_off, net->layers[i].nb, seed + i, 0.1f);
    return net;
}

/* The plan: which layers it takes, the same probabilities as the direct
 * net, and a workspace made before it (or after nn_net_unplan) runs the
 * net directly. */
static void test_plan(void **s)
{
    (void)s;
    /* 3x3 stride 1 with 1 input channel (no), with 4 (yes), stride 2 (no),
     * 3x3 padded (yes), 5x5 (no). */
    const char *arch = "[{\"type\":\"conv2d\",\"out\":4,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":6,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":6,\"k\":3,\"stride\":2},"
                       "{\"type\":\"conv2d\",\"out\":5,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":8,\"k\":5},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    nn_net *net = make_net(arch, 1, 20, 20, 3);
    char err[256];
    assert_int_equal(nn_net_plan_wino_layers(net), 0);
    const int n = 5;
    float x[5 * 400], p1[50], p2[50], z1[50], z2[50];
    fill(x, 5 * 400, 9, 1.0f);
    for (int i = 0; i < 5 * 400; i++) x[i] = x[i] * 0.5f + 0.5f;
    nn_ws *direct = nn_ws_create(net, n, 0);
    assert_non_null(direct);
    nn_net_forward(net, direct, x, n, p1, z1);
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0);
    assert_int_equal(nn_net_plan_wino_layers(net), 2);
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0); /* replaces, no leak */
    nn_ws *planned = nn_ws_create(net, n, 0);
    assert_non_null(planned);
    nn_net_forward(net, planned, x, n, p2, z2);
    /* Rounding only: logits of order 1 agree to far better than 1e-4. */
    for (int i = 0; i < 50; i++) {
        assert_float_equal(z1[i], z2[i], 1e-4);
        assert_float_equal(p1[i], p2[i], 1e-5);
    }
    /* A workspace made before the plan never overruns its scratch. */
    nn_net_forward(net, direct, x, n, p2, NULL);
    for (int i = 0; i < 50; i++) assert_float_equal(p1[i], p2[i], 1e-6);
    nn_net_unplan(net);
    nn_net_unplan(net);
    assert_int_equal(nn_net_plan_wino_layers(net), 0);
    nn_net_forward(net, planned, x, n, p2, NULL);
    for (int i = 0; i < 50; i++) assert_float_equal(p1[i], p2[i], 1e-6);
    nn_ws_free(direct);
    nn_ws_free(planned);
    nn_net_free(net);
}

/* [g, C, P] <-> [g, P, C]: to channels last (back = 0) or from it. */
static void to_nhwc(float *dst, const float *src, int g, int C, int P, int back)
{
    for (int i = 0; i < g; i++)
        for (int c = 0; c < C; c++)
            for (int q = 0; q < P; q++) {
                size_t a = ((size_t)i * C + c) * P + q, b = ((size_t)i * P + q) * C + c;
                if (back)
                    dst[a] = src[b];
                else
                    dst[b] = src[a];
            }
}

/* Channels last in, out or both (nn_wino_forward_nl): the same floats as
 * [C, H, W] in and out, bit for bit (only copies differ), on every kernel
 * path (each transform width writes y in place), by F(2x2) and
 * F(4x4): grids the outputs fill exactly (the output transform writes y
 * in place) or not (cropped), stride 2, odd channel counts, and batches
 * past a chunk of tiles; stride 2 from channels last with odd borders
 * and widths and channel counts of 4k as well. */
static void wino_layouts_on_path(void)
{
    static const int cases[][8] = {
        /* C, H, W, O, k, s, p, g */
        {32, 26, 26, 32, 3, 1, 0, 2}, {32, 12, 12, 64, 3, 1, 0, 3}, {7, 9, 11, 5, 3, 1, 1, 2},
        {32, 24, 24, 32, 5, 2, 2, 1}, {5, 9, 9, 20, 5, 2, 2, 2},    {8, 6, 6, 4, 3, 1, 1, 37},
        {6, 10, 9, 4, 4, 2, 1, 40},   {8, 11, 9, 6, 4, 2, 1, 3},    {12, 7, 10, 8, 5, 2, 2, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int mt = 2; mt <= 4; mt += 2) {
            const int *r = cases[c];
            nn_conv_shape cs = {r[0], r[1], r[2], r[3], r[4], r[5], r[6], 0, 0};
            cs.OH = (cs.H + 2 * cs.p - cs.k) / cs.s + 1;
            cs.OW = (cs.W + 2 * cs.p - cs.k) / cs.s + 1;
            const int g = r[7];
            const size_t nx = (size_t)cs.C * cs.H * cs.W, ny = (size_t)cs.O * cs.OH * cs.OW;
            const size_t nw = (size_t)cs.O * cs.C * cs.k * cs.k, nu = nn_wino_weights_size(&cs, mt);
            const size_t nscr = nn_wino_scratch_size(&cs, g, mt);
            float *x = malloc(g * nx * 4), *xl = malloc(g * nx * 4), *w = malloc(nw * 4),
                  *b = malloc(cs.O * 4), *u = malloc(nu * 4), *y = malloc(g * ny * 4),
                  *yl = malloc(g * ny * 4), *yb = malloc(g * ny * 4), *scr = malloc((nscr + 1) * 4);
            assert_true(x && xl && w && b && u && y && yl && yb && scr);
            fill(x, g * nx, 500 + c, 1.0f);
            fill(w, nw, 600 + c, 0.3f);
            fill(b, cs.O, 700 + c, 0.5f);
            nn_wino_weights(u, w, &cs, mt);
            to_nhwc(xl, x, g, cs.C, cs.H * cs.W, 0);
            nn_wino_forward_n(y, x, u, b, &cs, g, scr, 1, mt);
            for (int lay = 1; lay <= 3; lay++) {
                scr[nscr] = 12345.0f;
                nn_wino_forward_nl(yl, lay & NN_WINO_IN_NHWC ? xl : x, u, b, &cs, g, scr, 1, mt,
                                   lay, NULL);
                assert_true(scr[nscr] == 12345.0f);
                if (lay & NN_WINO_OUT_NHWC)
                    to_nhwc(yb, yl, g, cs.O, cs.OH * cs.OW, 1);
                else
                    memcpy(yb, yl, g * ny * 4);
                if (memcmp(yb, y, g * ny * 4) != 0)
                    fail_msg("F%d case %zu layout %d: not the [C, H, W] result", mt, c, lay);
            }
            free(x);
            free(xl);
            free(w);
            free(b);
            free(u);
            free(y);
            free(yl);
            free(yb);
            free(scr);
        }
}

static void test_wino_layouts(void **s)
{
    (void)s;
    for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
        if (!nn_gemm_path_supported(path)) continue;
        assert_int_equal(nn_gemm_set_path(path), 0);
        wino_layouts_on_path();
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* A batch norm applied as the input is packed (nn_bn_in): the forward
 * and the weight gradient on x through it give the same floats as on the
 * batch norm's output written first (nn_batchnorm_output), on every path:
 * four channels a block with the columns past the last whole four (26
 * and 10 wide), fewer than four columns, channels left over from the
 * blocks, stride 2 (the 4x4 layer's weight gradient on F(4x4)),
 * channels-last input; with and without the ReLU. */
static void check_bn_input(const int *r)
{
    for (int relu = 0; relu < 2; relu++) {
        const int C = r[0], g = r[7];
        const size_t c = (size_t)C + (size_t)r[1]; /* the data's seeds */
        nn_conv_shape cs = {C,
                            r[1],
                            r[2],
                            r[3],
                            r[4],
                            r[5],
                            r[6],
                            (r[1] + 2 * r[6] - r[4]) / r[5] + 1,
                            (r[2] + 2 * r[6] - r[4]) / r[5] + 1};
        const int mt = nn_wino_tile(&cs), HW = cs.H * cs.W;
        const size_t nx = (size_t)g * C * HW, ny = (size_t)g * cs.O * cs.OH * cs.OW,
                     nw = (size_t)cs.O * C * cs.k * cs.k;
        size_t nscr = nn_wino_scratch_size(&cs, g, mt);
        if (nn_wino_dw_fits(&cs) && nn_wino_dw_scratch_size(&cs, g) > nscr)
            nscr = nn_wino_dw_scratch_size(&cs, g);
        float *x = malloc(nx * 4), *xb = malloc(nx * 4), *xl = malloc(nx * 4), *w = malloc(nw * 4),
              *b = malloc(cs.O * 4), *dy = malloc(ny * 4),
              *u = malloc(nn_wino_weights_size(&cs, mt) * 4), *y1 = malloc(ny * 4),
              *y2 = malloc(ny * 4), *dw1 = calloc(nw, 4), *dw2 = calloc(nw, 4),
              *db1 = calloc(cs.O, 4), *db2 = calloc(cs.O, 4), *scr = malloc(nscr * 4),
              *par = malloc(4 * C * 4);
        assert_true(x && xb && xl && w && b && dy && u && y1 && y2 && dw1 && dw2 && db1 && db2 &&
                    scr && par);
        fill(x, nx, 40 + c, 2.0f);
        fill(w, nw, 50 + c, 0.3f);
        fill(b, cs.O, 60 + c, 0.5f);
        fill(dy, ny, 70 + c, 1.0f);
        fill(par, 4 * (size_t)C, 80 + c, 0.5f);
        for (int q = 0; q < C; q++) {
            par[C + q] += 1.0f;     /* inv > 0 */
            par[2 * C + q] += 0.5f; /* gamma */
        }
        const nn_bn_in bn = {par, par + C, par + 2 * C, par + 3 * C, relu};
        nn_batchnorm_output(xb, x, bn.mean, bn.inv, bn.gamma, bn.beta, g, C, HW, relu);
        nn_wino_weights(u, w, &cs, mt);
        nn_wino_forward_nl(y1, xb, u, b, &cs, g, scr, 1, mt, 0, NULL);
        nn_wino_forward_nl(y2, x, u, b, &cs, g, scr, 1, mt, 0, &bn);
        if (memcmp(y1, y2, ny * 4) != 0)
            fail_msg("C%d %dx%d relu %d: forward", C, r[1], r[2], relu);
        to_nhwc(xl, x, g, C, HW, 0);
        memset(y2, 0, ny * 4);
        nn_wino_forward_nl(y2, xl, u, b, &cs, g, scr, 1, mt, NN_WINO_IN_NHWC, &bn);
        if (memcmp(y1, y2, ny * 4) != 0)
            fail_msg("C%d %dx%d relu %d: channels last", C, r[1], r[2], relu);
        if (nn_wino_dw_fits(&cs)) {
            nn_wino_dw_n(dw1, db1, dy, xb, NULL, &cs, g, scr);
            nn_wino_dw_n(dw2, db2, dy, x, &bn, &cs, g, scr);
            if (memcmp(dw1, dw2, nw * 4) != 0 || memcmp(db1, db2, cs.O * 4) != 0)
                fail_msg("C%d %dx%d relu %d: weight gradient", C, r[1], r[2], relu);
        }
        free(x);
        free(xb);
        free(xl);
        free(w);
        free(b);
        free(dy);
        free(u);
        free(y1);
        free(y2);
        free(dw1);
        free(dw2);
        free(db1);
        free(db2);
        free(scr);
        free(par);
    }
}

static void test_wino_bn_input(void **s)
{
    (void)s;
    static const int cases[][8] = {/* C, H, W, O, k, s, p, g */
                                   {32, 26, 26, 8, 3, 1, 0, 2},
                                   {6, 10, 10, 5, 3, 1, 1, 3},
                                   {5, 3, 3, 4, 3, 1, 1, 2},
                                   {7, 24, 24, 6, 5, 2, 2, 2},
                                   {64, 8, 8, 16, 5, 2, 2, 3}};
    on_every_path(check_bn_input, &cases[0][0], sizeof cases / sizeof cases[0],
                  sizeof cases[0] / sizeof cases[0][0]);
}

/* Plans net and checks its forward on n images x (10 classes, n <= 4)
 * against the direct net's: logits within 1e-4, probabilities within
 * 1e-5 (rounding only, as test_plan). Leaves net planned, for the caller
 * to check the plan's choices. */
static void plan_matches_direct(nn_net *net, const float *x, int n)
{
    char err[256];
    float p1[40], p2[40], z1[40], z2[40];
    assert_in_range(n, 1, 4);
    nn_ws *direct = nn_ws_create(net, n, 0);
    assert_non_null(direct);
    nn_net_forward(net, direct, x, n, p1, z1);
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0);
    nn_ws *planned = nn_ws_create(net, n, 0);
    assert_non_null(planned);
    nn_net_forward(net, planned, x, n, p2, z2);
    for (int i = 0; i < 10 * n; i++) {
        assert_float_equal(z1[i], z2[i], 1e-4);
        assert_float_equal(p1[i], p2[i], 1e-5);
    }
    nn_ws_free(direct);
    nn_ws_free(planned);
}

/* A first layer of 16 3x3 filters before a Winograd layer writes its
 * outputs channels last on AVX-512, and on AVX2 for rows of more than
 * 24 (nn_conv2d_nhwc_fits), and the Winograd layer reads them so:
 * straight from the map where its tile grid is the map (16x16 images:
 * 14x14 in, 12x12 out, three F(4x4) tiles a side; 28x28: 26x26 in, six
 * tiles), copied row by row where it needs a border (14x14: 12x12 in, a
 * grid of 14). The same probabilities as the direct net on every path. */
static void test_plan_first_nhwc(void **s)
{
    (void)s;
    const char *arch = "[{\"type\":\"conv2d\",\"out\":16,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":16,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    float x[2 * 784];
    for (int hw = 14; hw <= 28; hw += hw == 16 ? 12 : 2) {
        fill(x, 2 * (size_t)hw * hw, 29 + hw, 1.0f);
        for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
            if (!nn_gemm_path_supported(path)) continue;
            assert_int_equal(nn_gemm_set_path(path), 0);
            nn_net *net = make_net(arch, 1, hw, hw, 8);
            const nn_conv_shape first = {1, hw, hw, 16, 3, 1, 0, hw - 2, hw - 2};
            assert_int_equal(nn_conv2d_nhwc_fits(&first),
                             path == NN_GEMM_PATH_AVX512 ||
                                 (path == NN_GEMM_PATH_AVX2 && hw - 2 > 24));
            plan_matches_direct(net, x, 1);
            plan_matches_direct(net, x, 2);
            assert_int_equal(nn_net_plan_wino(net, 0), 0);
            assert_int_equal(nn_net_plan_wino(net, 2), 4);
            nn_net_free(net);
        }
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* A planned net whose Winograd layers follow each other (through a ReLU,
 * a dropout, a stride-2 layer and a padded one) hands channels last from
 * one to the next: the same probabilities as the direct net, to
 * rounding (plan_matches_direct). */
static void test_plan_chain(void **s)
{
    (void)s;
    const char *arch =
        "[{\"type\":\"conv2d\",\"out\":8,\"k\":3},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":8,\"k\":3},{\"type\":\"relu\"},"
        "{\"type\":\"dropout\",\"p\":0.3},"
        "{\"type\":\"conv2d\",\"out\":12,\"k\":5,\"stride\":2,\"pad\":2},"
        "{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":6,\"k\":3,\"pad\":1},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    nn_net *net = make_net(arch, 1, 20, 20, 5);
    float x[3 * 400];
    fill(x, 3 * 400, 13, 1.0f);
    for (int i = 0; i < 3 * 400; i++) x[i] = x[i] * 0.5f + 0.5f;
    plan_matches_direct(net, x, 3);
    assert_int_equal(nn_net_plan_wino_layers(net), 3);
    nn_net_free(net);
}

/* Where the direct kernel for few outputs runs a layer (the AVX-512
 * path), the plan keeps that layer direct and, on a CPU with 2 MiB of L2
 * or more, takes F(2x2) for layers of fewer than 5 F(4x4) tiles (F(4x4)
 * with less L2); on every other path both stay Winograd, the 3x3 one
 * F(4x4). The probabilities agree with the direct net's either way. */
static void plan_few_outputs_at(size_t l2)
{
    const char *arch = "[{\"type\":\"conv2d\",\"out\":8,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":8,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":28,\"k\":5,\"stride\":2,\"pad\":2},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    float x[2 * 144];
    fill(x, 2 * 144, 17, 1.0f);
    nn_net_plan_set_l2(l2);
    int ran = 0;
    for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
        if (!nn_gemm_path_supported(path)) continue;
        assert_int_equal(nn_gemm_set_path(path), 0);
        nn_net *net = make_net(arch, 1, 12, 12, 6); /* 10x10, 8x8, 4x4 outputs */
        plan_matches_direct(net, x, 2);
        /* The direct layer's weights packed (blocks of 16 and 8, 4 more). */
        assert_int_equal(nn_net_plan_packed_layers(net), path == NN_GEMM_PATH_AVX512);
        if (path == NN_GEMM_PATH_AVX512) {
            assert_int_equal(nn_net_plan_wino_layers(net), 1);
            assert_int_equal(nn_net_plan_wino(net, 2), l2 >= ((size_t)2 << 20) ? 2 : 4);
            assert_int_equal(nn_net_plan_wino(net, 4), 0);
        } else {
            assert_int_equal(nn_net_plan_wino_layers(net), 2);
            assert_int_equal(nn_net_plan_wino(net, 2), 4);
            assert_int_equal(nn_net_plan_wino(net, 4), 2);
        }
        nn_net_free(net);
        ran++;
    }
    assert_true(ran >= 2); /* generic and generic-wide run everywhere */
    nn_net_plan_set_l2(0);
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

static void test_plan_few_outputs(void **s)
{
    (void)s;
    plan_few_outputs_at((size_t)2 << 20); /* the AMX Xeon's */
    plan_few_outputs_at((size_t)1 << 20); /* Zen 4 and 5 EPYC's */
    plan_few_outputs_at((size_t)3 << 20);
}

/* A folded copy comes planned; training ignores a plan. */
static void test_fold_plans(void **s)
{
    (void)s;
    const char *arch =
        "[{\"type\":\"conv2d\",\"out\":4,\"k\":3},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":8,\"k\":3},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    /* 10x10: the second layer's 6x6 outputs are too many for the direct
     * kernel for few outputs, which the plan would keep. */
    nn_net *net = make_net(arch, 1, 10, 10, 4);
    char err[256];
    nn_net *f = nn_net_fold_bn(net, err, sizeof err);
    assert_non_null(f);
    assert_int_equal(nn_net_plan_wino_layers(f), 1);
    /* Training on a planned net: the plan's stale weights are not used. */
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0);
    nn_ws *ws = nn_ws_create(net, 2, 1);
    assert_non_null(ws);
    float x[200], p1[20], p2[20];
    uint8_t lab[2] = {1, 7};
    fill(x, 200, 11, 1.0f);
    nn_net_forward_train(net, ws, x, lab, 2, 0.0f, 1, 0, p1);
    const nn_layer *L = &net->layers[2]; /* new weights (not a scaling: batch norm follows) */
    fill(net->params + L->w_off, L->nw, 99, 0.5f);
    nn_net_forward_train(net, ws, x, lab, 2, 0.0f, 1, 0, p2);
    int differ = 0;
    for (int i = 0; i < 20; i++) differ |= p1[i] != p2[i];
    assert_true(differ);
    nn_ws_free(ws);
    nn_net_free(f);
    nn_net_free(net);
}

/* Training: the forward and the input gradient by Winograd against the
 * direct convolutions (nn_ws_use_wino), through a whole net: loss,
 * probabilities, every parameter gradient and the input gradient. The
 * differences are roundings passed through a few layers: relative to
 * the gradient's size, 1e-4 is hundreds of times what they reach, while a
 * wrong flip or a dropped term changes it by order 1. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        m += (double)b[i] * b[i];
    }
    return sqrt(d / (m > 0 ? m : 1));
}

/* One training step of arch on n = 3 images [C, H, W] by Winograd and
 * by the direct kernels: loss, probabilities and gradients (parameters
 * and input) agree to rounding. */
static void train_wino_vs_direct(const char *arch, int C, int H, int W)
{
    const int n = 3;
    nn_net *net = make_net(arch, C, H, W, 21);
    const size_t np = net->nparams, nx = (size_t)n * C * H * W;
    float *x = malloc(nx * 4), *g[2], *dx[2], p[2][30];
    float loss[2];
    uint8_t lab[3] = {2, 5, 9};
    fill(x, nx, 22, 1.0f);
    for (int run = 0; run < 2; run++) {
        nn_ws *ws = nn_ws_create(net, n, 1);
        assert_non_null(ws);
        nn_ws_use_wino(ws, run == 0);
        nn_ws_want_input_grad(ws, 1);
        g[run] = calloc(np, 4);
        dx[run] = malloc(nx * 4);
        loss[run] = nn_net_forward_train(net, ws, x, lab, n, 0.0f, 7, 0, p[run]);
        nn_net_backward(net, ws, g[run]);
        memcpy(dx[run], nn_ws_input_grad(ws), nx * 4);
        nn_ws_free(ws);
    }
    assert_float_equal(loss[0], loss[1], 1e-5);
    for (int i = 0; i < 30; i++) assert_float_equal(p[0][i], p[1][i], 1e-5);
    double eg = rel_diff(g[0], g[1], np), ex = rel_diff(dx[0], dx[1], nx);
    print_message("training by Winograd: gradients differ by %.2g (parameters), %.2g (input)\n", eg,
                  ex);
    assert_true(eg < 1e-4);
    assert_true(ex < 1e-4);
    for (int run = 0; run < 2; run++) {
        free(g[run]);
        free(dx[run]);
    }
    free(x);
    nn_net_free(net);
}

static void test_training_wino(void **s)
{
    (void)s;
    train_wino_vs_direct(
        "[{\"type\":\"conv2d\",\"out\":5,\"k\":3},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":6,\"k\":3,\"pad\":1},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":7,\"k\":3,\"pad\":2},"
        "{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":4,\"k\":5,\"stride\":2,"
        "\"pad\":2},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":4,\"k\":5,\"stride\":2,\"pad\":2},"
        "{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"stride\":2},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]",
        2, 21, 19);
    /* The big CNN's 4x4 layer after a batch norm: its forward skips
     * zeros (on AVX-512), its weight and input gradients run by Winograd
     * on one F(4x4) tile an image, the batch norm applied in the weight
     * gradient's packing. */
    const nn_conv_shape c16 = {64, 8, 8, 64, 5, 2, 2, 4, 4};
    assert_true(nn_wino_dw_fits(&c16) && nn_wino_dx_fits(&c16));
    assert_int_equal(nn_wino_dx_tile(&c16), 4);
    train_wino_vs_direct("[{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
                         "{\"type\":\"conv2d\",\"out\":64,\"k\":5,\"stride\":2,\"pad\":2},"
                         "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]",
                         64, 8, 8);
}

/* Workspaces sharing one set of transformed weights (nn_ws_wino_share)
 * train exactly as one that transforms its own, once every part of
 * nn_ws_wino_weights has run (in any order); with a part missing after
 * the weights changed, they do not. */
static void run_step(nn_net *net, nn_ws *ws, const float *x, const uint8_t *lab, int n, float *g)
{
    memset(g, 0, net->nparams * 4);
    float p[20];
    nn_net_forward_train(net, ws, x, lab, n, 0.0f, 7, 0, p);
    nn_net_backward(net, ws, g);
}

static void test_training_wino_shared(void **s)
{
    (void)s;
    const char *arch = "[{\"type\":\"conv2d\",\"out\":6,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":5,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":4,\"k\":5,\"stride\":2,\"pad\":2},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    const int n = 2, C = 3, H = 17, W = 15;
    nn_net *net = make_net(arch, C, H, W, 31);
    const size_t np = net->nparams, nx = (size_t)n * C * H * W;
    float *x = malloc(nx * 4), *ref = malloc(np * 4), *got = malloc(np * 4);
    uint8_t lab[2] = {4, 7};
    fill(x, nx, 32, 1.0f);
    nn_ws *own = nn_ws_create(net, n, 1), *from = nn_ws_create(net, n, 1),
          *shared = nn_ws_create(net, n, 1);
    assert_true(x && ref && got && own && from && shared);
    nn_ws_wino_share(shared, from);
    run_step(net, own, x, lab, n, ref);
    for (int part = 2; part >= 0; part--) nn_ws_wino_weights(net, from, part, 3);
    run_step(net, shared, x, lab, n, got);
    assert_memory_equal(ref, got, np * 4);
    /* New weights in the second convolution; one of three parts redone. */
    const nn_layer *L = &net->layers[2];
    for (size_t j = 0; j < L->nw; j++) net->params[L->w_off + j] *= 1.5f;
    run_step(net, own, x, lab, n, ref);
    nn_ws_wino_weights(net, from, 0, 3);
    nn_ws_wino_weights(net, from, 2, 3);
    run_step(net, shared, x, lab, n, got);
    assert_memory_not_equal(ref, got, np * 4);
    nn_ws_wino_weights(net, from, 1, 3);
    run_step(net, shared, x, lab, n, got);
    assert_memory_equal(ref, got, np * 4);
    nn_ws_free(own);
    nn_ws_free(from);
    nn_ws_free(shared);
    free(x);
    free(ref);
    free(got);
    nn_net_free(net);
}

/* A convolution whose forward skips zero inputs (nn_conv2d_skips_zeros:
 * few outputs, on AVX-512) trains its forward by that kernel, on the
 * step's packed weights: its training probabilities are then the
 * inference pass's to the bit (the same kernel; Winograd's would differ
 * by rounding), with weights changed between steps, also from a shared
 * set of weights packed by one part of three; against the direct
 * convolutions (Winograd off) the loss, probabilities and gradients
 * agree to rounding on every path. */
static void test_training_skips_zeros(void **s)
{
    (void)s;
    const char *arch =
        "[{\"type\":\"conv2d\",\"out\":32,\"k\":5,\"stride\":2,\"pad\":2},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    const int n = 3, C = 6, H = 8, W = 8;
    const size_t nx = (size_t)n * C * H * W;
    float *x = malloc(nx * 4);
    uint8_t lab[3] = {1, 6, 8};
    assert_non_null(x);
    fill(x, nx, 41, 1.0f);
    for (size_t i = 0; i < nx; i++) /* about 70% zeros, as after a ReLU */
        if ((i * 7919) % 10 < 7) x[i] = 0.0f;
    int ran = 0, skipped = 0;
    for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
        if (!nn_gemm_path_supported(path)) continue;
        assert_int_equal(nn_gemm_set_path(path), 0);
        nn_net *net = make_net(arch, C, H, W, 42);
        nn_conv_shape cs = {C, H, W, 32, 5, 2, 2, 4, 4};
        const int sk = nn_conv2d_skips_zeros(&cs);
        assert_int_equal(sk, path == NN_GEMM_PATH_AVX512);
        const size_t np = net->nparams;
        float *g[2], pt[2][30], pi[30];
        nn_ws *ws[2], *inf = nn_ws_create(net, n, 0), *from = nn_ws_create(net, n, 1),
                      *shared = nn_ws_create(net, n, 1);
        assert_true(inf && from && shared);
        nn_ws_wino_share(shared, from);
        for (int step = 0; step < 2; step++) {
            if (step) /* new weights: the packed copy must follow */
                for (size_t j = 0; j < net->layers[0].nw; j++)
                    net->params[net->layers[0].w_off + j] *= -1.25f;
            float loss[2];
            for (int run = 0; run < 2; run++) {
                ws[run] = nn_ws_create(net, n, 1);
                assert_non_null(ws[run]);
                nn_ws_use_wino(ws[run], run == 0);
                g[run] = calloc(np, 4);
                loss[run] = nn_net_forward_train(net, ws[run], x, lab, n, 0.0f, 7, 0, pt[run]);
                nn_net_backward(net, ws[run], g[run]);
            }
            nn_net_forward(net, inf, x, n, pi, NULL);
            if (sk) {
                assert_memory_equal(pt[0], pi, sizeof pi);
                skipped++;
            }
            assert_float_equal(loss[0], loss[1], 1e-5);
            for (int i = 0; i < 30; i++) assert_float_equal(pt[0][i], pt[1][i], 1e-5);
            assert_true(rel_diff(g[0], g[1], np) < 1e-4);
            /* Shared: one part of three packs it (here the last to run). */
            float ps[30];
            for (int part = 2; part >= 0; part--) nn_ws_wino_weights(net, from, part, 3);
            nn_net_forward_train(net, shared, x, lab, n, 0.0f, 7, 0, ps);
            assert_memory_equal(ps, pt[0], sizeof ps);
            for (int run = 0; run < 2; run++) {
                nn_ws_free(ws[run]);
                free(g[run]);
            }
        }
        nn_ws_free(inf);
        nn_ws_free(from);
        nn_ws_free(shared);
        nn_net_free(net);
        ran++;
    }
    assert_true(ran >= 2);
    if (nn_gemm_path_supported(NN_GEMM_PATH_AVX512)) assert_int_equal(skipped, 2);
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
    free(x);
}

/* An ensemble runs its members' planned copies; nn_ensemble_unplan makes
 * them direct, with the same answers up to rounding. */
static void test_ensemble_unplan(void **s)
{
    (void)s;
    const char *arch =
        "[{\"type\":\"conv2d\",\"out\":4,\"k\":3},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":8,\"k\":3,\"pad\":1},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    nn_net *net = make_net(arch, 1, 9, 9, 8);
    char err[256];
    nn_ensemble *e = nn_ensemble_from_nets(&net, 1, err, sizeof err);
    assert_non_null(e);
    assert_int_equal(nn_net_plan_wino_layers(nn_ensemble_member_infer(e, 0)), 1);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 3);
    assert_non_null(ws);
    float x[3 * 81], p1[30], p2[30];
    fill(x, 3 * 81, 12, 1.0f);
    nn_ensemble_forward(e, ws, x, 3, p1);
    nn_ensemble_unplan(e);
    assert_int_equal(nn_net_plan_wino_layers(nn_ensemble_member_infer(e, 0)), 0);
    nn_ensemble_forward(e, ws, x, 3, p2);
    for (int i = 0; i < 30; i++) assert_float_equal(p1[i], p2[i], 1e-5);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
}

/* The plan packs the weights of the layers a direct kernel would pack on
 * every call (LeNet's second convolution, on the AVX2 and AVX-512
 * paths), and an ensemble plans a member with nothing to fold in place.
 * Packed once or per call, the kernel and its order are the same: the
 * same bits. Planned on one path and run on another (whose kernel packs
 * another width), the plan's packed weights are left alone: again the
 * bits of packing per call on that path. */
static int ensemble_run(const nn_ensemble *e, nn_ensemble_ws *ws, const float *x, float *p,
                        int path)
{
    if (nn_gemm_set_path(path)) return -1;
    nn_ensemble_forward(e, ws, x, 2, p);
    return 0;
}

static void test_plan_packed(void **s)
{
    (void)s;
    const char *arch =
        "[{\"type\":\"conv2d\",\"out\":6,\"k\":5},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"conv2d\",\"out\":16,\"k\":5},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    float x[2 * 784];
    fill(x, 2 * 784, 23, 1.0f);
    for (int i = 0; i < 2 * 784; i++) x[i] = x[i] * 0.5f + 0.5f;
    int packed_on = 0;
    for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
        if (!nn_gemm_path_supported(path)) continue;
        /* The other x86 path, where the kernel's width differs. */
        const int other = path == NN_GEMM_PATH_AVX512 ? NN_GEMM_PATH_AVX2
                          : path == NN_GEMM_PATH_AVX2 && nn_gemm_path_supported(NN_GEMM_PATH_AVX512)
                              ? NN_GEMM_PATH_AVX512
                              : NN_GEMM_PATH_GENERIC;
        assert_int_equal(nn_gemm_set_path(path), 0);
        nn_net *net = make_net(arch, 1, 28, 28, 21);
        char err[256];
        nn_ensemble *e = nn_ensemble_from_nets(&net, 1, err, sizeof err);
        assert_non_null(e);
        const int lanes = path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512;
        assert_int_equal(nn_net_plan_packed_layers(nn_ensemble_member_infer(e, 0)), lanes);
        packed_on += lanes;
        nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 2);
        assert_non_null(ws);
        float p1[20], p2[20], q1[20], q2[20];
        assert_int_equal(ensemble_run(e, ws, x, p1, path), 0);
        assert_int_equal(ensemble_run(e, ws, x, q1, other), 0);
        nn_ensemble_unplan(e);
        assert_int_equal(nn_net_plan_packed_layers(nn_ensemble_member_infer(e, 0)), 0);
        assert_int_equal(ensemble_run(e, ws, x, p2, path), 0);
        assert_int_equal(ensemble_run(e, ws, x, q2, other), 0);
        assert_memory_equal(p1, p2, sizeof p1);
        assert_memory_equal(q1, q2, sizeof q1);
        nn_ensemble_ws_free(ws);
        nn_ensemble_free(e);
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
#if defined(__x86_64__)
    if (nn_gemm_path_supported(NN_GEMM_PATH_AVX2)) assert_true(packed_on >= 1);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wino_vs_ref),          cmocka_unit_test(test_wino_s2d_vs_ref),
        cmocka_unit_test(test_wino_dx_vs_ref),       cmocka_unit_test(test_wino_dw_vs_ref),
        cmocka_unit_test(test_wino_bound_catches),   cmocka_unit_test(test_plan),
        cmocka_unit_test(test_wino_layouts),         cmocka_unit_test(test_wino_bn_input),
        cmocka_unit_test(test_plan_chain),           cmocka_unit_test(test_plan_first_nhwc),
        cmocka_unit_test(test_plan_few_outputs),     cmocka_unit_test(test_fold_plans),
        cmocka_unit_test(test_ensemble_unplan),      cmocka_unit_test(test_training_wino),
        cmocka_unit_test(test_training_wino_shared), cmocka_unit_test(test_training_skips_zeros),
        cmocka_unit_test(test_plan_packed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
