/* wino.c - see wino.h: Winograd F(2x2,3x3) convolution forward.
 *
 * Data flow of one call, for a chunk of images holding T tiles:
 *
 *   x [n,C,H,W] --border, channels last--> xp [n, Hp, Wp, C]
 *     --input transform (4 or 8 channels a step)--> V [T, 16, C]
 *     --16 GEMMs with U [16, C, O]--> M [T, 16, O]
 *     --output transform, bias, ReLU (4 or 8 channels a step)--> Yt [n, GH, GW, O]
 *     --transpose, crop--> y [n, O, OH, OW]
 *
 * Channels last makes every transform a run of element-wise vector
 * operations over contiguous channels, with no shuffles; the two
 * transposes move each input and output value once. Tile-major V and M
 * keep the transforms' stores and loads contiguous; GEMM e reads its
 * A = V[., e, .] with row stride 16 C, which costs nothing, as the GEMM
 * packs A anyway (and writes M[., e, .] with stride 16 O). The tile grid is
 * TH x TW tiles, GH = 2 TH >= OH output rows (likewise columns): the
 * extra row or column of an odd map is computed from zeros and dropped.
 */
#include "nn/wino.h"

#include <string.h>

#include "nn/gemm.h"
#include "nn/simd.h"

/* Tiles per chunk: bounds V and M (16 * T * (C + O) floats; 288 KiB each
 * for the big CNN's 24 x 24 layer, T = 144, C = O = 32) so that a chunk
 * stays near L2 however large the batch. */
#define WINO_TILES 256

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define WINO_X86 1
#else
#define WINO_X86 0
#endif

int nn_wino_fits(const nn_conv_shape *cs)
{
    return cs->k == 3 && cs->s == 1 && cs->p >= 0 && cs->p <= 2 && cs->C >= 2 && cs->OH >= 1 &&
           cs->OW >= 1;
}

size_t nn_wino_weights_size(const nn_conv_shape *cs) { return (size_t)16 * cs->C * cs->O; }

/* G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1] */
static const double wino_g[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

void nn_wino_weights(float *u, const float *w, const nn_conv_shape *cs)
{
    const int C = cs->C, O = cs->O;
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++) {
            const float *g = w + ((size_t)o * C + c) * 9;
            double t[4][3]; /* G g */
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 3; j++)
                    t[i][j] =
                        wino_g[i][0] * g[j] + wino_g[i][1] * g[3 + j] + wino_g[i][2] * g[6 + j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) {
                    double v =
                        t[i][0] * wino_g[j][0] + t[i][1] * wino_g[j][1] + t[i][2] * wino_g[j][2];
                    u[((size_t)(i * 4 + j) * C + c) * O + o] = (float)v;
                }
        }
}

struct wino_geom {
    int TH, TW;   /* tiles per column and row of an image          */
    int Hp, Wp;   /* bordered input: 2 TH + 2 rows, 2 TW + 2 columns */
    size_t tiles; /* TH * TW                                       */
};

static void wino_geom(struct wino_geom *gm, const nn_conv_shape *cs)
{
    gm->TH = (cs->OH + 1) / 2;
    gm->TW = (cs->OW + 1) / 2;
    gm->Hp = 2 * gm->TH + 2;
    gm->Wp = 2 * gm->TW + 2;
    gm->tiles = (size_t)gm->TH * gm->TW;
}

int nn_wino_group(const nn_conv_shape *cs)
{
    struct wino_geom gm;
    wino_geom(&gm, cs);
    size_t n = WINO_TILES / gm.tiles;
    return n < 1 ? 1 : (int)n;
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* The two scratch regions for gc images: [xp, later M | V, later Yt]. */
static void wino_regions(const nn_conv_shape *cs, int gc, size_t *ra, size_t *rb)
{
    struct wino_geom gm;
    wino_geom(&gm, cs);
    const size_t T = gm.tiles * gc;
    size_t xp = (size_t)gc * gm.Hp * gm.Wp * cs->C, m = 16 * T * cs->O;
    size_t v = 16 * T * cs->C, yt = 4 * T * cs->O;
    *ra = round16(xp > m ? xp : m);
    *rb = round16(v > yt ? v : yt);
}

size_t nn_wino_scratch_size(const nn_conv_shape *cs, int g)
{
    int gc = nn_wino_group(cs);
    if (g < gc) gc = g < 1 ? 1 : g;
    size_t ra, rb;
    wino_regions(cs, gc, &ra, &rb);
    return ra + rb;
}

/* x [n, C, H, W] into xp [n, Hp, Wp, C] at (r + p, s + p), zeros around;
 * 4 x 4 blocks (channels x columns) transposed at once. */
static void wino_pack_input(float *xp, const float *x, const nn_conv_shape *cs, int n,
                            const struct wino_geom *gm)
{
    const int C = cs->C, H = cs->H, W = cs->W, p = cs->p, Hp = gm->Hp, Wp = gm->Wp;
    const size_t row = (size_t)Wp * C;
    for (int i = 0; i < n; i++) {
        float *xi = xp + (size_t)i * Hp * row;
        const float *src = x + (size_t)i * C * H * W;
        /* Border: whole rows above and below, columns left and right. */
        int below = p + H < Hp ? p + H : Hp;
        memset(xi, 0, sizeof(float) * row * (size_t)(p < Hp ? p : Hp));
        if (below < Hp) memset(xi + below * row, 0, sizeof(float) * row * (size_t)(Hp - below));
        int right = p + W < Wp ? p + W : Wp;
        for (int h = 0; h < H && h + p < Hp; h++) {
            float *r = xi + (size_t)(h + p) * row;
            memset(r, 0, sizeof(float) * (size_t)p * C);
            if (right < Wp) memset(r + (size_t)right * C, 0, sizeof(float) * (Wp - right) * C);
            /* Rows past the tile grid (H + p > Hp) and columns past it are
             * never read: the grid covers every output's inputs. */
            const int wmax = right - p;
            int c = 0;
            for (; c + 4 <= C; c += 4) {
                const float *s0 = src + ((size_t)c * H + h) * W;
                const size_t cs_ = (size_t)H * W;
                int w = 0;
                for (; w + 4 <= wmax; w += 4)
                    tr4x4(s0 + w, s0 + cs_ + w, s0 + 2 * cs_ + w, s0 + 3 * cs_ + w,
                          r + (size_t)(w + p) * C + c, (size_t)C);
                for (; w < wmax; w++)
                    for (int j = 0; j < 4; j++) r[(size_t)(w + p) * C + c + j] = s0[j * cs_ + w];
            }
            for (; c < C; c++)
                for (int w = 0; w < wmax; w++)
                    r[(size_t)(w + p) * C + c] = src[((size_t)c * H + h) * W + w];
        }
    }
}

/* The transforms: 4 lanes (portable, SSE on x86), and 8 (AVX2) for the
 * AVX2 and AVX-512 kernel paths, which only run where the CPU has AVX2
 * (the transforms are loads, adds and stores: wider than 8 gains little
 * on maps this small). */
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));
#define WX_VT v4f
#define WX_VI v4i
#define WX_VL 4
#define WX_FN(x) x##_v4
#define WX_ATTR
#include "nn/wino_xf.h"
#undef WX_VT
#undef WX_VI
#undef WX_VL
#undef WX_FN
#undef WX_ATTR

#if WINO_X86
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
#define WX_VT v8f
#define WX_VI v8i
#define WX_VL 8
#define WX_FN(x) x##_v8
#define WX_ATTR __attribute__((target("avx2")))
#include "nn/wino_xf.h"
#undef WX_VT
#undef WX_VI
#undef WX_VL
#undef WX_FN
#undef WX_ATTR
#endif

/* y [n, O, OH, OW] from Yt [n, GH, GW, O], dropping the grid's extra row
 * and column. */
static void wino_unpack_output(float *y, const float *Yt, const nn_conv_shape *cs, int n,
                               const struct wino_geom *gm)
{
    const int O = cs->O, OH = cs->OH, OW = cs->OW, GW = 2 * gm->TW;
    const size_t plane = (size_t)OH * OW;
    for (int i = 0; i < n; i++) {
        const float *yi = Yt + (size_t)i * 2 * gm->TH * GW * O;
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

void nn_wino_forward_n(float *y, const float *x, const float *u, const float *b,
                       const nn_conv_shape *cs, int g, float *scratch, int relu)
{
    struct wino_geom gm;
    wino_geom(&gm, cs);
    const int C = cs->C, O = cs->O, step = nn_wino_group(cs);
    const size_t nin = (size_t)C * cs->H * cs->W, nout = (size_t)O * cs->OH * cs->OW;
    const int path = nn_gemm_get_path();
    const int wide = path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512;
    (void)wide; /* no 8-lane transforms off x86 */
    for (int i0 = 0; i0 < g; i0 += step) {
        const int n = g - i0 < step ? g - i0 : step;
        size_t ra, rb;
        wino_regions(cs, n, &ra, &rb);
        float *xp = scratch, *M = scratch, *V = scratch + ra, *Yt = scratch + ra;
        const int T = (int)(gm.tiles * n);
        wino_pack_input(xp, x + i0 * nin, cs, n, &gm);
#if WINO_X86
        if (wide)
            input_transform_v8(V, xp, cs, n, &gm);
        else
#endif
            input_transform_v4(V, xp, cs, n, &gm);
        for (int e = 0; e < 16; e++)
            nn_gemm(0, 0, T, O, C, 1.0f, V + (size_t)e * C, 16 * C, u + (size_t)e * C * O, O, 0.0f,
                    M + (size_t)e * O, 16 * O);
#if WINO_X86
        if (wide)
            output_transform_v8(Yt, M, b, relu, cs, n, &gm);
        else
#endif
            output_transform_v4(Yt, M, b, relu, cs, n, &gm);
        wino_unpack_output(y + i0 * nout, Yt, cs, n, &gm);
    }
}
