/* conv.c - see conv.h: the plain reference convolution, and the fast one
 * over groups of images (implicit GEMM, shifted rows). */
#include "nn/conv.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn/simd.h"

#if NN_X86
#include <immintrin.h>
#endif

/* ---- reference -------------------------------------------------------------- */

void nn_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                           const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    for (int o = 0; o < cs->O; o++)
        for (int oh = 0; oh < cs->OH; oh++)
            for (int ow = 0; ow < cs->OW; ow++) {
                double acc = b ? b[o] : 0.0;
                for (int c = 0; c < C; c++)
                    for (int ki = 0; ki < k; ki++)
                        for (int kj = 0; kj < k; kj++) {
                            int ih = oh * s - p + ki, iw = ow * s - p + kj;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            acc += (double)w[((o * C + c) * k + ki) * k + kj] *
                                   x[(c * H + ih) * W + iw];
                        }
                y[(o * cs->OH + oh) * cs->OW + ow] = (float)acc;
            }
}

void nn_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    if (dx) memset(dx, 0, sizeof(float) * C * H * W);
    for (int o = 0; o < cs->O; o++)
        for (int oh = 0; oh < cs->OH; oh++)
            for (int ow = 0; ow < cs->OW; ow++) {
                float g = dy[(o * cs->OH + oh) * cs->OW + ow];
                db[o] += g;
                for (int c = 0; c < C; c++)
                    for (int ki = 0; ki < k; ki++)
                        for (int kj = 0; kj < k; kj++) {
                            int ih = oh * s - p + ki, iw = ow * s - p + kj;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            size_t wi = ((size_t)(o * C + c) * k + ki) * k + kj;
                            size_t xi = ((size_t)c * H + ih) * W + iw;
                            dw[wi] += g * x[xi];
                            if (dx) dx[xi] += g * w[wi];
                        }
            }
}

/* ---- groups of images: implicit GEMM ------------------------------------
 * The im2col matrix of a group is never stored: nn_gemm_packed asks for
 * it one L1-sized panel at a time and pack_fwd / pack_dw build that panel
 * straight from the (zero-bordered) images. A profile of the big CNN's
 * training step with a stored im2col matrix had im2col, the GEMM's
 * re-packing of it and col2im at over half the instructions. */

/* x [g,C,H,W] copied with a border of p zeros into dst [g,C,H+2p,W+2p],
 * so the packers need no bounds checks. p == 0 returns x itself. */
static const float *pad_images(float *dst, const float *x, int g, int C, int H, int W, int p)
{
    if (p == 0) return x;
    const int Wp = W + 2 * p;
    float *d = dst;
    for (int i = 0; i < g * C; i++) {
        const float *src = x + (size_t)i * H * W;
        memset(d, 0, sizeof(float) * (size_t)p * Wp);
        d += (size_t)p * Wp;
        for (int h = 0; h < H; h++) {
            for (int j = 0; j < p; j++) d[j] = 0.0f;
            memcpy(d + p, src + (size_t)h * W, sizeof(float) * W);
            for (int j = W + p; j < Wp; j++) d[j] = 0.0f;
            d += Wp;
        }
        memset(d, 0, sizeof(float) * (size_t)p * Wp);
        d += (size_t)p * Wp;
    }
    return dst;
}

/* The virtual im2col matrix of a group: rows (c,ki,kj), columns the output
 * positions of image 0, then image 1, ... over padded images. */
struct conv_src {
    const float *x;     /* padded images, npad floats apart                 */
    size_t npad, plane; /* floats per padded image and per padded channel  */
    int Wp, k, s;       /* padded row length, kernel, stride                */
    int P, OW;          /* output positions per image, output row length    */
};

/* A run of panel columns that are consecutive outputs of one output row:
 * their inputs are s floats apart. */
struct conv_seg {
    size_t off;  /* input offset of the first, for (c,ki,kj) = 0     */
    int at, len; /* first column within the panel, count             */
};

/* Columns [j0, j0+n) as runs; returns the count. */
static int conv_segments(const struct conv_src *cx, int j0, int n, struct conv_seg *seg)
{
    int ns = 0;
    for (int pos = j0, end = j0 + n; pos < end;) {
        int img = pos / cx->P, q = pos - img * cx->P, oh = q / cx->OW, ow = q - oh * cx->OW;
        int len = cx->OW - ow;
        if (len > end - pos) len = end - pos;
        seg[ns].off = (size_t)img * cx->npad + (size_t)oh * cx->s * cx->Wp + (size_t)ow * cx->s;
        seg[ns].at = pos - j0;
        seg[ns].len = len;
        ns++;
        pos += len;
    }
    return ns;
}

/* n floats, 4 at a time: runs are short (at most a panel, 16 or 32), too
 * short for memcpy's call and too irregular for the compiler to vectorise
 * the plain loop (a profile had it at 4 instructions a float). */
#if defined(__GNUC__) && !defined(__clang__)
/* Else GCC turns the 4-float loop back into a memcpy call. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static inline void
copy_run(float *restrict d, const float *restrict src, int n)
{
    int u = 0;
    for (; u + 4 <= n; u += 4) memcpy(d + u, src + u, 16);
    for (; u < n; u++) d[u] = src[u];
}

/* Forward (and stride-1 input gradient) panel: op(B) = im2col. */
static void pack_fwd(void *vctx, int k0, int kc, int j0, int nr, int nrp, float *out)
{
    const struct conv_src *cx = vctx;
    struct conv_seg seg[64];
    const int ns = conv_segments(cx, j0, nr, seg), k = cx->k, s = cx->s;
    int c = k0 / (k * k), r = k0 - c * k * k, ki = r / k, kj = r - ki * k;
    for (int t = 0; t < kc; t++) {
        const float *xk = cx->x + c * cx->plane + (size_t)ki * cx->Wp + kj;
        float *o = out + (size_t)t * nrp;
        for (int q = 0; q < ns; q++) {
            const float *src = xk + seg[q].off;
            float *d = o + seg[q].at;
            const int n = seg[q].len;
            if (s == 1)
                copy_run(d, src, n);
            else
                for (int u = 0; u < n; u++) d[u] = src[u * s];
        }
        for (int j = nr; j < nrp; j++) o[j] = 0.0f;
        if (++kj == k) {
            kj = 0;
            if (++ki == k) {
                ki = 0;
                c++;
            }
        }
    }
}

/* Weight-gradient panel: op(B) = im2col^T, rows output positions, columns
 * (c,ki,kj). */
static void pack_dw(void *vctx, int k0, int kc, int j0, int nr, int nrp, float *out)
{
    const struct conv_src *cx = vctx;
    const int k = cx->k, s = cx->s;
    size_t koff[64];
    for (int j = 0; j < nr; j++) {
        int kk = j0 + j, c = kk / (k * k), r = kk - c * k * k, ki = r / k, kj = r - ki * k;
        koff[j] = c * cx->plane + (size_t)ki * cx->Wp + kj;
    }
    struct conv_seg seg[1];
    for (int pos = k0, end = k0 + kc; pos < end;) {
        conv_segments(cx, pos, 1, seg);
        int img = pos / cx->P, q = pos - img * cx->P, ow = q % cx->OW;
        int len = cx->OW - ow;
        if (len > end - pos) len = end - pos;
        int u = 0;
        if (s <= 2) {
            /* 4 positions x 4 columns: 4 contiguous loads (stride 2: the
             * even lanes of 7 floats), a transpose, 4 stores, instead of
             * 16 scalar gathers (which were most of a big-CNN training
             * step's packing). */
            for (; u + 4 <= len; u += 4) {
                const float *src = cx->x + seg[0].off + (size_t)u * s;
                float *o = out + (size_t)(pos - k0 + u) * nrp;
                int j = 0;
                for (; j + 4 <= nr; j += 4) {
                    if (s == 1) {
                        tr4x4(src + koff[j], src + koff[j + 1], src + koff[j + 2],
                              src + koff[j + 3], o + j, nrp);
                        continue;
                    }
                    float t[4][4];
                    for (int q = 0; q < 4; q++) evens4(src + koff[j + q], t[q]);
                    tr4x4(t[0], t[1], t[2], t[3], o + j, nrp);
                }
                for (; j < nr; j++)
                    for (int v = 0; v < 4; v++) o[(size_t)v * nrp + j] = src[koff[j] + v * s];
                for (; j < nrp; j++)
                    for (int v = 0; v < 4; v++) o[(size_t)v * nrp + j] = 0.0f;
            }
        }
        for (; u < len; u++) {
            const float *src = cx->x + seg[0].off + (size_t)u * s;
            float *o = out + (size_t)(pos - k0 + u) * nrp;
            for (int j = 0; j < nr; j++) o[j] = src[koff[j]];
            for (int j = nr; j < nrp; j++) o[j] = 0.0f;
        }
        pos += len;
    }
}

static void conv_src_init(struct conv_src *cx, const float *xp, int C, int H, int W, int p, int k,
                          int s, int OH, int OW)
{
    (void)C;
    cx->x = xp;
    cx->Wp = W + 2 * p;
    cx->plane = (size_t)(H + 2 * p) * cx->Wp;
    cx->npad = cx->plane * C;
    cx->k = k;
    cx->s = s;
    cx->P = OH * OW;
    cx->OW = OW;
}

static size_t padded_size(int g, int C, int H, int W, int p)
{
    return p ? (size_t)g * C * (H + 2 * p) * (W + 2 * p) : 0;
}

/* Floats from one image to the next in pad_images' output (the images
 * themselves when p = 0, where padded_size is 0: nothing is copied). */
static size_t padded_stride(const nn_conv_shape *cs)
{
    return (size_t)cs->C * (cs->H + 2 * cs->p) * (cs->W + 2 * cs->p);
}

/* The input gradient as a stride-1 convolution of the zero-bordered dy
 * costs C*H*W*O*k*k multiply-adds against O*OH*OW*C*k*k for w^T dy and
 * col2im: only worth it when the border adds little (and with enough input
 * channels to fill the GEMM's rows). */
/* Floats of the input-gradient columns computed at once (256 KiB). */
#define DCOL_FLOATS 65536
/* The gathered input gradient (col2im_gather): widest row, largest kernel,
 * and the floats of slack on either side of its dcol slice. */
#define C2I_MAXW 64
#define C2I_MAXK 8
#define C2I_SLACK 128

/* Images per dcol slice: as many as fit DCOL_FLOATS, at least one, at
 * most the group. */
static int dcol_images(size_t K, size_t P, int g)
{
    size_t per = DCOL_FLOATS / (K * P);
    return per < 1 ? 1 : per > (size_t)g ? g : (int)per;
}

static int dx_as_conv(const nn_conv_shape *cs)
{
    return cs->s == 1 && cs->C >= 4 && (size_t)cs->H * cs->W * 4 <= (size_t)cs->OH * cs->OW * 5;
}

/* That convolution's shape: dy's O channels in, C out, border k-1-p. */
static nn_conv_shape dx_shape(const nn_conv_shape *cs)
{
    nn_conv_shape d = {cs->O, cs->OH, cs->OW, cs->C, cs->k, 1, cs->k - 1 - cs->p, cs->H, cs->W};
    return d;
}

/* ---- shifted rows: nothing packed -----------------------------------------
 * The images, zero-bordered and split into their s x s stride phases
 * (phase (a,b) holds padded pixels (s*i+a, s*j+b)), laid out
 * [phase][channel][image][Hq][Wq], make every im2col row (c,ki,kj) one
 * contiguous run: output (oh,ow) of image n reads phase (ki%s, kj%s) of
 * channel c at image n's plane, position (oh + ki/s, ow + kj/s).
 * Computing a whole plane of Hq x Wq output positions per image instead of
 * OH x OW (the extra ones are garbage, dropped by the epilogue) makes each
 * row a single run at a fixed offset, so nn_gemm_rows reads B in place: no
 * im2col, no panel packing. A profile of batch-1 inference of the big CNN
 * had packing at a third of the time. The price is the garbage columns, so
 * groups use it only where they are few (shifted_pays). */
struct shifted {
    int Hq, Wq;   /* phase plane size                                 */
    size_t plane; /* Hq * Wq                                          */
    size_t nx;    /* floats of the phase buffer, slack included       */
    size_t N;     /* GEMM columns: (g - 1) planes and OH rows of Wq   */
};

static void shifted_geom(struct shifted *sg, const nn_conv_shape *cs, int g)
{
    const int s = cs->s, Hp = cs->H + 2 * cs->p, Wp = cs->W + 2 * cs->p;
    sg->Hq = (Hp + s - 1) / s;
    sg->Wq = (Wp + s - 1) / s;
    sg->plane = (size_t)sg->Hq * sg->Wq;
    sg->N = (size_t)(g - 1) * sg->plane + (size_t)cs->OH * sg->Wq;
    /* Last row's offset plus a panel-rounded run (32 covers every path). */
    size_t kmax = (size_t)(cs->k - 1) / s, cg = (size_t)cs->C * g;
    size_t last = ((size_t)s * s * cg - (size_t)g) * sg->plane + kmax * sg->Wq + kmax;
    size_t need = last + (sg->N + 31) / 32 * 32;
    size_t have = (size_t)s * s * cg * sg->plane;
    sg->nx = need > have ? need : have;
}

/* Few enough garbage columns for the saved packing to win in a group; one
 * image always gains. Packing costs per element of B, which the GEMM's O
 * rows share, so the garbage a layer can afford grows as O shrinks: at
 * most 1 + 25/O times the real outputs (1.39 at O = 64, where the big
 * CNN's measurements put the break-even near 1.4; 2.56 at O = 16, where
 * LeNet's second convolution, at 1.96, measured 1.6-1.9 -> 1.0-1.4 ms
 * forward at batch 64 on shifted rows). */
/* An image's grid positions at most num/den times its real outputs. */
static int extra_at_most(const nn_conv_shape *cs, size_t num, size_t den)
{
    struct shifted sg;
    shifted_geom(&sg, cs, 1);
    return sg.plane * den <= (size_t)cs->OH * cs->OW * num;
}

static int shifted_pays(const nn_conv_shape *cs, int g)
{
    const size_t O = (size_t)cs->O;
    return g == 1 || extra_at_most(cs, O * 10 + 250, O * 10);
}

/* Scratch floats: phases, row offsets (ptrdiff_t, rounded to floats, plus
 * alignment slack), output before the epilogue. */
static size_t shifted_scratch(const nn_conv_shape *cs, int g)
{
    struct shifted sg;
    shifted_geom(&sg, cs, g);
    size_t K = (size_t)cs->C * cs->k * cs->k;
    size_t ro = (K * sizeof(ptrdiff_t) + sizeof(ptrdiff_t)) / sizeof(float) + 1;
    return sg.nx + ro + (size_t)cs->O * sg.N;
}

/* The phase buffer xq [sg->nx] of g images x and the K row offsets into it. */
static void shifted_images(float *xq, ptrdiff_t *roff, const float *x, const nn_conv_shape *cs,
                           int g, const struct shifted *sgp)
{
    const struct shifted sg = *sgp;
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    const int Wq = sg.Wq, Hq = sg.Hq;
    const size_t nin = (size_t)C * H * W;
    /* Phases: pixel (s*i+a-p, s*j+bb-p) of x, zero outside. */
    float *d = xq;
    for (int a = 0; a < s; a++)
        for (int bb = 0; bb < s; bb++)
            for (int c = 0; c < C; c++)
                for (int n = 0; n < g; n++) {
                    const float *xc = x + n * nin + (size_t)c * H * W;
                    for (int i = 0; i < Hq; i++, d += Wq) {
                        int h = s * i + a - p;
                        if (h < 0 || h >= H) {
                            memset(d, 0, sizeof(float) * Wq);
                            continue;
                        }
                        const float *xr = xc + (size_t)h * W;
                        if (s == 1) {
                            for (int j = 0; j < p && j < Wq; j++) d[j] = 0.0f;
                            memcpy(d + p, xr, sizeof(float) * W);
                            for (int j = p + W; j < Wq; j++) d[j] = 0.0f;
                            continue;
                        }
                        for (int j = 0; j < Wq; j++) {
                            int ww = s * j + bb - p;
                            d[j] = ww >= 0 && ww < W ? xr[ww] : 0.0f;
                        }
                    }
                }
    memset(d, 0, sizeof(float) * (sg.nx - (size_t)(d - xq)));
    int r = 0;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++)
                roff[r++] = (ptrdiff_t)((((size_t)(ki % s) * s + kj % s) * C + c) * g * sg.plane) +
                            (ptrdiff_t)(ki / s) * Wq + kj / s;
}

/* Where the shifted layout's scratch parts start: [xq | roff | out]. */
static void shifted_parts(float *scratch, const struct shifted *sg, int K, ptrdiff_t **roff,
                          float **out)
{
    uintptr_t ra = (uintptr_t)(scratch + sg->nx);
    ra = (ra + sizeof(ptrdiff_t) - 1) / sizeof(ptrdiff_t) * sizeof(ptrdiff_t);
    *roff = (ptrdiff_t *)ra;
    *out = (float *)(*roff + K) + 1;
}

static void conv_forward_shifted(float *y, const float *x, const float *w, const float *b,
                                 const nn_conv_shape *cs, int g, float *scratch, int relu)
{
    struct shifted sg;
    shifted_geom(&sg, cs, g);
    const int K = cs->C * cs->k * cs->k, OH = cs->OH, OW = cs->OW, Wq = sg.Wq;
    float *xq = scratch, *out;
    ptrdiff_t *roff;
    shifted_parts(scratch, &sg, K, &roff, &out);
    shifted_images(xq, roff, x, cs, g, &sg);
    nn_gemm_rows(cs->O, (int)sg.N, K, 1.0f, w, K, xq, roff, 0.0f, out, (int)sg.N);
    /* Drop the extra columns; bias and ReLU on the way. */
    for (int n = 0; n < g; n++)
        for (int o = 0; o < cs->O; o++) {
            const float bo = b ? b[o] : 0.0f;
            const float *src = out + (size_t)o * sg.N + (size_t)n * sg.plane;
            float *dst = y + ((size_t)n * cs->O + o) * OH * OW;
            for (int oh = 0; oh < OH; oh++)
                bias_act(dst + (size_t)oh * OW, src + (size_t)oh * Wq, OW, bo, relu);
        }
}

/* dw [O,K] += dy im2col^T over shifted rows: dy laid on the same grid of
 * Hq x Wq positions per image as the forward's output (zeros at the extra
 * positions), each dw element a dot product of a dy row with a shifted row
 * of the phase images, read in place. Nothing is packed or transposed. */
static void conv_dw_shifted(float *dw, const float *dy, const float *x, const nn_conv_shape *cs,
                            int g, float *scratch)
{
    struct shifted sg;
    shifted_geom(&sg, cs, g);
    const int K = cs->C * cs->k * cs->k, O = cs->O, OH = cs->OH, OW = cs->OW;
    float *xq = scratch, *dyq;
    ptrdiff_t *roff;
    shifted_parts(scratch, &sg, K, &roff, &dyq);
    shifted_images(xq, roff, x, cs, g, &sg);
    for (int o = 0; o < O; o++) {
        float *d = dyq + (size_t)o * sg.N;
        memset(d, 0, sizeof(float) * sg.N);
        for (int n = 0; n < g; n++)
            for (int oh = 0; oh < OH; oh++)
                memcpy(d + (size_t)n * sg.plane + (size_t)oh * sg.Wq,
                       dy + (((size_t)n * O + o) * OH + oh) * OW, sizeof(float) * OW);
    }
    nn_gemm_rows_nt(O, K, (int)sg.N, dyq, (int)sg.N, xq, roff, dw, K);
}

/* The packed GEMM transposes im2col into panels, a cost per element of B
 * that its rows of A (the O output channels) share. With few outputs that
 * packing dominates (LeNet's first convolution: 6 outputs, 25 kernel
 * taps, pack_dw 10% of its training profile) and the dot products win:
 * train_bench, LeNet batch 16, conv 0 backward 0.31 -> 0.23 ms. With 32
 * or more outputs (the big CNN) they measured no faster or slower. Only
 * where the extra grid positions are few (at most 1.4x). */
static int dw_shifted(const nn_conv_shape *cs) { return cs->O <= 8 && extra_at_most(cs, 14, 10); }

/* ---- one input channel, direct --------------------------------------------
 * A first layer (C = 1: LeNet's 6 5x5 and the big CNN's 32 3x3 filters on
 * the 28x28 image) has K = k k products per output: a GEMM of that depth
 * spends more on its setup and on writing and cropping a padded grid than
 * on the products. Here each output row is two 16-lane vectors across
 * its columns (OW <= 32), four output channels at a time, summed tap by
 * tap from the bias straight out of a zero-bordered copy of the image,
 * the kernel size a constant (3 or 5) so that the taps unroll, the row's
 * end stored masked. Measured alone at batch 1 (best of 3000): the big
 * CNN's first layer 7.0 -> 2.8 us, LeNet's (5x5) 2.4 -> 2.0; the big
 * CNN's whole forward pass 112, 111, 114 -> 107, 110, 108 us (latency,
 * three pairs). On AVX2 (c1_rows8) a row is four 8-lane vectors, three
 * channels at a time, 3x3 kernels only: the big CNN's first layer 11.1
 * -> 7.3 us by the layer timer, its batch-1 pass 143.0-143.9 -> 139.0-
 * 140.6 us (latency, NN_ISA=avx2, three pairs on Zen 5). Other paths,
 * kernel sizes and wider images keep the GEMM. */
#define C1_MAX_OW 32

static int c1_shape(const nn_conv_shape *cs)
{
    return cs->C == 1 && cs->s == 1 && cs->OW >= 1 && cs->OW <= C1_MAX_OW &&
           (cs->k == 3 || cs->k == 5);
}

/* The AVX-512 kernels, forward and weight gradient. */
static int c1_fits(const nn_conv_shape *cs)
{
#if NN_X86
    return nn_gemm_get_path() == NN_GEMM_PATH_AVX512 && c1_shape(cs);
#else
    (void)cs;
    return 0;
#endif
}

/* The forward on AVX2 (c1_avx2_k3): 3x3 kernels, rows of more than 24
 * columns (four 8-lane vectors). LeNet's 5x5 layer (28 columns) measured
 * faster alone (4.9 -> 4.0 us by the layer timer) but its whole batch-1
 * pass slower (12.3 -> 14.0 us, three pairs), as with the earlier
 * two-channel kernel: it keeps the GEMM. */
static int c1_avx2_fits(const nn_conv_shape *cs)
{
#if NN_X86
    return nn_gemm_get_path() == NN_GEMM_PATH_AVX2 && c1_shape(cs) && cs->k == 3 && cs->OW > 24;
#else
    (void)cs;
    return 0;
#endif
}

static int c1_fwd_fits(const nn_conv_shape *cs) { return c1_fits(cs) || c1_avx2_fits(cs); }

/* The bordered image: H + 2p rows of C1_ROW floats, every load of a row's
 * vectors (columns kj .. kj + 31, kj < 5) inside it. */
#define C1_ROW 40
static size_t c1_scratch(const nn_conv_shape *cs) { return (size_t)(cs->H + 2 * cs->p) * C1_ROW; }

#if NN_X86
/* Rows [0, OH) of channels [o0, o0 + nb) from the bordered image xb, two
 * 16-lane vectors a row (m: which lanes of each are stored), accumulators
 * a[nb][2] in registers. k and nb are constants at each call, so the k x k
 * taps and the channel block unroll. */
__attribute__((target("avx512f"), always_inline)) static inline void
c1_rows(float *y, const float *xb, const float *w, const float *b, const nn_conv_shape *cs,
        int relu, const __mmask16 m[2], int o0, const int k, const int nb)
{
    const int OH = cs->OH, OW = cs->OW;
    const __m512 zero = _mm512_setzero_ps();
    for (int oh = 0; oh < OH; oh++) {
        __m512 a[4][2];
        _Pragma("GCC unroll 4") for (int q = 0; q < nb; q++) a[q][0] = a[q][1] =
            _mm512_set1_ps(b ? b[o0 + q] : 0.0f);
        _Pragma("GCC unroll 5") for (int ki = 0; ki < k; ki++)
        {
            const float *xr = xb + (size_t)(oh + ki) * C1_ROW;
            const float *wr = w + (size_t)o0 * k * k + (size_t)ki * k;
            _Pragma("GCC unroll 5") for (int kj = 0; kj < k; kj++)
            {
                const __m512 x0 = _mm512_loadu_ps(xr + kj), x1 = _mm512_loadu_ps(xr + kj + 16);
                _Pragma("GCC unroll 4") for (int q = 0; q < nb; q++)
                {
                    const __m512 wv = _mm512_set1_ps(wr[(size_t)q * k * k + kj]);
                    a[q][0] = _mm512_fmadd_ps(x0, wv, a[q][0]);
                    a[q][1] = _mm512_fmadd_ps(x1, wv, a[q][1]);
                }
            }
        }
        _Pragma("GCC unroll 4") for (int q = 0; q < nb; q++)
        {
            float *yr = y + ((size_t)(o0 + q) * OH + oh) * OW;
            _Pragma("GCC unroll 2") for (int v = 0; v < 2; v++) _mm512_mask_storeu_ps(
                yr + 16 * v, m[v], relu ? _mm512_max_ps(a[q][v], zero) : a[q][v]);
        }
    }
}

/* The lanes of a row's two vectors that hold its OW (<= 32) columns. */
static inline void c1_masks(int OW, __mmask16 m[2])
{
    m[0] = (__mmask16)(OW >= 16 ? 0xffffu : (1u << OW) - 1u);
    m[1] = (__mmask16)(OW >= 32 ? 0xffffu : OW > 16 ? (1u << (OW - 16)) - 1u : 0u);
}

/* One image, channels four at a time, then one at a time; the row's end
 * stored masked. */
__attribute__((target("avx512f"), always_inline)) static inline void
c1_image(float *y, const float *xb, const float *w, const float *b, const nn_conv_shape *cs,
         int relu, const int k)
{
    const int O = cs->O;
    __mmask16 m[2];
    c1_masks(cs->OW, m);
    int o0 = 0;
    for (; o0 + 4 <= O; o0 += 4) c1_rows(y, xb, w, b, cs, relu, m, o0, k, 4);
    for (; o0 < O; o0++) c1_rows(y, xb, w, b, cs, relu, m, o0, k, 1);
}

__attribute__((target("avx512f"))) static void c1_avx512_k3(float *y, const float *xb,
                                                            const float *w, const float *b,
                                                            const nn_conv_shape *cs, int relu)
{
    c1_image(y, xb, w, b, cs, relu, 3);
}
__attribute__((target("avx512f"))) static void c1_avx512_k5(float *y, const float *xb,
                                                            const float *w, const float *b,
                                                            const nn_conv_shape *cs, int relu)
{
    c1_image(y, xb, w, b, cs, relu, 5);
}

/* AVX2: a row of 25 to 32 columns is four 8-lane vectors, the last one
 * starting at OW - 8 (it overlaps the third and stores the same sums
 * there: no masks), three channels at a time: twelve accumulators, more
 * independent sums than the two FMA units' latency needs (two channels,
 * eight, measured 7.9 us for the big CNN's first layer in an earlier
 * version, against 9.1 for the GEMM then). Same order of sums as the
 * AVX-512 kernel: the two paths give the same bits. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
c1_rows8(float *y, const float *xb, const float *w, const float *b, const nn_conv_shape *cs,
         int relu, int o0, const int k, const int nb)
{
    const int OH = cs->OH, OW = cs->OW;
    const int col[4] = {0, 8, 16, OW - 8};
    const __m256 zero = _mm256_setzero_ps();
    const float *wo = w + (size_t)o0 * k * k;
    for (int oh = 0; oh < OH; oh++) {
        /* The taps at constant offsets from one register: without the
         * empty asm GCC hoists a pointer per tap out of the row loop and
         * spills them, a reload before every broadcast. */
        const float *wp = wo;
        __asm__("" : "+r"(wp));
        __m256 a[3][4];
        _Pragma("GCC unroll 3") for (int q = 0; q < nb; q++)
        {
            const __m256 bv = _mm256_set1_ps(b ? b[o0 + q] : 0.0f);
            a[q][0] = a[q][1] = a[q][2] = a[q][3] = bv;
        }
        _Pragma("GCC unroll 5") for (int ki = 0; ki < k; ki++)
        {
            const float *xr = xb + (size_t)(oh + ki) * C1_ROW;
            _Pragma("GCC unroll 5") for (int kj = 0; kj < k; kj++)
            {
                __m256 x[4];
                _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) x[v] =
                    _mm256_loadu_ps(xr + col[v] + kj);
                _Pragma("GCC unroll 3") for (int q = 0; q < nb; q++)
                {
                    const __m256 wv = _mm256_broadcast_ss(wp + (q * k + ki) * k + kj);
                    _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) a[q][v] =
                        _mm256_fmadd_ps(x[v], wv, a[q][v]);
                }
            }
        }
        _Pragma("GCC unroll 3") for (int q = 0; q < nb; q++)
        {
            float *yr = y + ((size_t)(o0 + q) * OH + oh) * OW;
            _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)
                _mm256_storeu_ps(yr + col[v], relu ? _mm256_max_ps(a[q][v], zero) : a[q][v]);
        }
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
c1_image8(float *y, const float *xb, const float *w, const float *b, const nn_conv_shape *cs,
          int relu, const int k)
{
    const int O = cs->O;
    int o0 = 0;
    for (; o0 + 3 <= O; o0 += 3) c1_rows8(y, xb, w, b, cs, relu, o0, k, 3);
    if (O - o0 == 2) c1_rows8(y, xb, w, b, cs, relu, o0, k, 2);
    if (O - o0 == 1) c1_rows8(y, xb, w, b, cs, relu, o0, k, 1);
}

__attribute__((target("avx2,fma"))) static void c1_avx2_k3(float *y, const float *xb,
                                                           const float *w, const float *b,
                                                           const nn_conv_shape *cs, int relu)
{
    c1_image8(y, xb, w, b, cs, relu, 3);
}
#endif

/* The weight gradient of such a layer, also direct: dw[o, ki, kj] is the
 * sum over the group's images and output positions of dy[o, oh, ow] times
 * the bordered image at (oh + ki, ow + kj). A row's two dy vectors are
 * multiplied into one 16-lane accumulator per tap (k x k of them, for one
 * channel at k = 5 and two at k = 3, in registers), the x vectors loaded
 * straight from the bordered row, and the lanes summed once at the end.
 * dy's lanes past OW load as 0, so what the x vectors hold there does not
 * count. The dot products over shifted rows (conv_dw_shifted) did the same
 * products from a grid of padded positions, with dy copied onto it first,
 * at a quarter of the rate: LeNet's first layer was 18% of its training
 * step (train_bench, batch 16). */
#define C1DW_TAPS 25

#if NN_X86
__attribute__((target("avx512f"), always_inline)) static inline void
c1dw_block(float *dw, const float *dy, const float *xb, const nn_conv_shape *cs, int g,
           const __mmask16 m[2], int o0, const int k, const int nb)
{
    const int O = cs->O, OH = cs->OH, OW = cs->OW, T = k * k;
    const size_t plane = c1_scratch(cs);
    __m512 a[2][C1DW_TAPS];
    _Pragma("GCC unroll 2") for (int q = 0; q < nb; q++)
        _Pragma("GCC unroll 25") for (int t = 0; t < T; t++) a[q][t] = _mm512_setzero_ps();
    for (int i = 0; i < g; i++) {
        const float *xi = xb + (size_t)i * plane;
        for (int oh = 0; oh < OH; oh++) {
            __m512 d[2][2];
            _Pragma("GCC unroll 2") for (int q = 0; q < nb; q++)
            {
                const float *dr = dy + (((size_t)i * O + o0 + q) * OH + oh) * OW;
                d[q][0] = _mm512_maskz_loadu_ps(m[0], dr);
                d[q][1] = _mm512_maskz_loadu_ps(m[1], dr + 16);
            }
            _Pragma("GCC unroll 5") for (int ki = 0; ki < k; ki++)
            {
                const float *xr = xi + (size_t)(oh + ki) * C1_ROW;
                _Pragma("GCC unroll 5") for (int kj = 0; kj < k; kj++)
                {
                    const __m512 x0 = _mm512_loadu_ps(xr + kj), x1 = _mm512_loadu_ps(xr + kj + 16);
                    _Pragma("GCC unroll 2") for (int q = 0; q < nb; q++)
                    {
                        __m512 *t = &a[q][ki * k + kj];
                        *t = _mm512_fmadd_ps(d[q][0], x0, *t);
                        *t = _mm512_fmadd_ps(d[q][1], x1, *t);
                    }
                }
            }
        }
    }
    _Pragma("GCC unroll 2") for (int q = 0; q < nb; q++) for (int t = 0; t < T; t++)
        dw[(size_t)(o0 + q) * T + t] += _mm512_reduce_add_ps(a[q][t]);
}

__attribute__((target("avx512f"))) static void c1dw_avx512_k3(float *dw, const float *dy,
                                                              const float *xb,
                                                              const nn_conv_shape *cs, int g,
                                                              const __mmask16 m[2])
{
    int o0 = 0;
    for (; o0 + 2 <= cs->O; o0 += 2) c1dw_block(dw, dy, xb, cs, g, m, o0, 3, 2);
    for (; o0 < cs->O; o0++) c1dw_block(dw, dy, xb, cs, g, m, o0, 3, 1);
}
__attribute__((target("avx512f"))) static void c1dw_avx512_k5(float *dw, const float *dy,
                                                              const float *xb,
                                                              const nn_conv_shape *cs, int g,
                                                              const __mmask16 m[2])
{
    for (int o0 = 0; o0 < cs->O; o0++) c1dw_block(dw, dy, xb, cs, g, m, o0, 5, 1);
}
#endif

/* One image [H, W] into the inside of a bordered plane xb (c1_scratch
 * floats, its border zeroed by the caller). */
static void c1_copy_image(float *xb, const float *x, const nn_conv_shape *cs)
{
    for (int h = 0; h < cs->H; h++)
        memcpy(xb + (size_t)(h + cs->p) * C1_ROW + cs->p, x + (size_t)h * cs->W,
               sizeof(float) * cs->W);
}

/* The bordered images of a group, one after another (c1_scratch floats
 * each). */
static void c1_border(float *xb, const float *x, const nn_conv_shape *cs, int g)
{
    const size_t plane = c1_scratch(cs);
    memset(xb, 0, sizeof(float) * plane * g);
    for (int i = 0; i < g; i++) c1_copy_image(xb + i * plane, x + (size_t)i * cs->H * cs->W, cs);
}

/* dw [O, k k] += the group's weight gradient (c1_fits); scratch: g
 * c1_scratch floats. */
static void conv_dw_c1(float *dw, const float *dy, const float *x, const nn_conv_shape *cs, int g,
                       float *scratch)
{
#if NN_X86
    __mmask16 m[2];
    c1_masks(cs->OW, m);
    c1_border(scratch, x, cs, g);
    if (cs->k == 5)
        c1dw_avx512_k5(dw, dy, scratch, cs, g, m);
    else
        c1dw_avx512_k3(dw, dy, scratch, cs, g, m);
#else
    (void)dw, (void)dy, (void)x, (void)cs, (void)g, (void)scratch;
#endif
}

/* ---- sixteen output channels a vector, direct -----------------------------
 * A middle layer with few output channels and a short reduction (LeNet's
 * second convolution: 6 x 14 x 14 -> 16 x 10 x 10, K = 150) is too small
 * for the GEMM's blocking to pay: on shifted rows half the columns it
 * computes are thrown away (1.96 times the real positions), with im2col
 * the packing costs more than the products. Here the 16 lanes of a vector
 * are 16 output channels of one position: the weights repacked once per
 * call to [K][16], each tap is one weight vector times the input float at
 * that tap broadcast, for up to two output rows of up to OC_MAX_NB
 * positions at a time (up to 24 accumulators in registers), the input
 * read in place from the (bordered) image. The sums run tap by tap from
 * the bias; a position's 16 channels go out by a scatter, OH OW floats
 * apart. AVX-512 (16 lanes) and AVX2 (8, oc8_*): stride 1, O a multiple
 * of the lanes, two or more input channels, rows of 8 or more. */
#define OC_MAX_NB 12

/* Output channels a vector on this path (16, or 8 on AVX2), 0 if none. */
static int oc_lanes(void)
{
#if NN_X86
    const int path = nn_gemm_get_path();
    return path == NN_GEMM_PATH_AVX512 ? 16 : path == NN_GEMM_PATH_AVX2 ? 8 : 0;
#else
    return 0;
#endif
}

static int oc_fits(const nn_conv_shape *cs)
{
#if NN_X86
    const int v = oc_lanes();
    return v && cs->s == 1 && cs->O % v == 0 && cs->C >= 2 && cs->OW >= 8 && cs->OH >= 2;
#else
    (void)cs;
    return 0;
#endif
}

/* Repacked weights, then the bordered images. */
static size_t oc_scratch(const nn_conv_shape *cs, int g)
{
    if (!oc_fits(cs)) return 0;
    return (size_t)cs->O * cs->C * cs->k * cs->k + padded_size(g, cs->C, cs->H, cs->W, cs->p);
}

#if NN_X86
/* nr (1 or 2) output rows from oh, nb positions from ow0 (both constants
 * at each call), channels [o0, o0 + 16) of one image. */
__attribute__((target("avx512f"), always_inline)) static inline void
oc_block(float *y, const float *xp, const float *wt, __m512 bias, const nn_conv_shape *cs, int relu,
         int o0, int oh, int ow0, const int nr, const int nb)
{
    const int k = cs->k, C = cs->C, Wp = cs->W + 2 * cs->p, Hp = cs->H + 2 * cs->p;
    const int P = cs->OH * cs->OW;
    __m512 a[2][OC_MAX_NB];
    _Pragma("GCC unroll 2") for (int r = 0; r < nr; r++)
        _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++) a[r][j] = bias;
    const float *wv = wt;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < k; ki++) {
            const float *x0 = xp + ((size_t)c * Hp + oh + ki) * Wp + ow0, *x1 = x0 + Wp;
            for (int kj = 0; kj < k; kj++, wv += 16) {
                const __m512 w = _mm512_loadu_ps(wv);
                /* Opaque to the compiler: it would keep the floats shared
                 * by neighbouring taps in registers (x0[kj + j] is
                 * x0[(kj + 1) + (j - 1)]), spilling accumulators, where a
                 * broadcast from memory is one fused load. */
                const float *u0 = x0 + kj, *u1 = x1 + kj;
                __asm__("" : "+r"(u0), "+r"(u1));
                _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++) a[0][j] =
                    _mm512_fmadd_ps(_mm512_set1_ps(u0[j]), w, a[0][j]);
                if (nr == 2)
                    _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++) a[1][j] =
                        _mm512_fmadd_ps(_mm512_set1_ps(u1[j]), w, a[1][j]);
            }
        }
    const __m512i vi =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(P));
    const __m512 zero = _mm512_setzero_ps();
    _Pragma("GCC unroll 2") for (int r = 0; r < nr; r++)
        _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++)
    {
        float *yo = y + (size_t)o0 * P + (size_t)(oh + r) * cs->OW + ow0 + j;
        _mm512_i32scatter_ps(yo, vi, relu ? _mm512_max_ps(a[r][j], zero) : a[r][j], 4);
    }
}

/* A switch case per row width 1 .. OC_MAX_NB, so that nb is a constant
 * in each inlined block: X(n) is the case for width n. */
#define OC_WIDTHS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12)
#define OC_CASE2(n)                                             \
    case n:                                                     \
        oc_block(y, xp, wt, bias, cs, relu, o0, oh, ow0, 2, n); \
        break;
#define OC_CASE1(n) \
    case n: oc_block(y, xp, wt, bias, cs, relu, o0, oh, ow0, 1, n); break;

/* One image [C, Hp, Wp] (bordered) -> y [O, OH, OW]; wt: [O/16][K][16]. */
__attribute__((target("avx512f"))) static void oc_image(float *y, const float *xp, const float *w16,
                                                        const float *b, const nn_conv_shape *cs,
                                                        int relu)
{
    const int OH = cs->OH, OW = cs->OW;
    const size_t K = (size_t)cs->C * cs->k * cs->k;
    for (int o0 = 0; o0 < cs->O; o0 += 16) {
        const float *wt = w16 + (size_t)o0 * K;
        const __m512 bias = b ? _mm512_loadu_ps(b + o0) : _mm512_setzero_ps();
        for (int oh = 0; oh < OH; oh += 2)
            for (int ow0 = 0; ow0 < OW; ow0 += OC_MAX_NB) {
                const int n = OW - ow0 < OC_MAX_NB ? OW - ow0 : OC_MAX_NB;
                if (oh + 1 < OH) {
                    switch (n) {
                        OC_WIDTHS(OC_CASE2)
                    }
                } else {
                    switch (n) {
                        OC_WIDTHS(OC_CASE1)
                    }
                }
            }
    }
}

/* The AVX2 version: 8 channels a vector, one output row of up to
 * OC_MAX_NB positions (12 accumulators of 16 registers), the broadcasts
 * separate loads (AVX2 has no broadcast operand), the results written
 * through a small buffer (no scatter). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
oc8_block(float *y, const float *xp, const float *wt, __m256 bias, const nn_conv_shape *cs,
          int relu, int o0, int oh, int ow0, const int nb)
{
    const int k = cs->k, C = cs->C, Wp = cs->W + 2 * cs->p, Hp = cs->H + 2 * cs->p;
    const int P = cs->OH * cs->OW;
    __m256 a[OC_MAX_NB];
    _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++) a[j] = bias;
    const float *wv = wt;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < k; ki++) {
            const float *x0 = xp + ((size_t)c * Hp + oh + ki) * Wp + ow0;
            for (int kj = 0; kj < k; kj++, wv += 8) {
                const __m256 w = _mm256_loadu_ps(wv);
                const float *u0 = x0 + kj;
                __asm__("" : "+r"(u0));
                _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++) a[j] =
                    _mm256_fmadd_ps(_mm256_broadcast_ss(u0 + j), w, a[j]);
            }
        }
    const __m256 zero = _mm256_setzero_ps();
    float t[OC_MAX_NB][8];
    _Pragma("GCC unroll 12") for (int j = 0; j < nb; j++)
        _mm256_storeu_ps(t[j], relu ? _mm256_max_ps(a[j], zero) : a[j]);
    for (int l = 0; l < 8; l++) {
        float *yo = y + (size_t)(o0 + l) * P + (size_t)oh * cs->OW + ow0;
        for (int j = 0; j < nb; j++) yo[j] = t[j][l];
    }
}

#define OC8_CASE(n) \
    case n: oc8_block(y, xp, wt, bias, cs, relu, o0, oh, ow0, n); break;

__attribute__((target("avx2,fma"))) static void oc8_image(float *y, const float *xp,
                                                          const float *w8, const float *b,
                                                          const nn_conv_shape *cs, int relu)
{
    const int OH = cs->OH, OW = cs->OW;
    const size_t K = (size_t)cs->C * cs->k * cs->k;
    for (int o0 = 0; o0 < cs->O; o0 += 8) {
        const float *wt = w8 + (size_t)o0 * K;
        const __m256 bias = b ? _mm256_loadu_ps(b + o0) : _mm256_setzero_ps();
        for (int oh = 0; oh < OH; oh++)
            for (int ow0 = 0; ow0 < OW; ow0 += OC_MAX_NB) {
                const int n = OW - ow0 < OC_MAX_NB ? OW - ow0 : OC_MAX_NB;
                switch (n) {
                    OC_WIDTHS(OC8_CASE)
                }
            }
    }
}
#endif

/* The weight gradient the same way round: lanes are 16 output channels,
 * one accumulator per tap of one input channel (k x k, k = 3 or 5, in
 * registers), and each output position adds its 16 channels of dy (dy
 * laid out [position][16] first) times the input float at each tap,
 * broadcast. The packed GEMM spent more on transposing im2col into
 * panels (pack_dw) than on its products for LeNet's second layer. */
static int ocdw_fits(const nn_conv_shape *cs) { return oc_fits(cs) && (cs->k == 3 || cs->k == 5); }

/* Floats ocdw needs (in the input gradient's region, free by then). */
static size_t ocdw_scratch(const nn_conv_shape *cs, int g)
{
    return ocdw_fits(cs) ? (size_t)g * cs->O * cs->OH * cs->OW : 0;
}

#if NN_X86
__attribute__((target("avx512f"), always_inline)) static inline void
ocdw_channel(float *dw, const float *d16, const float *xp, const nn_conv_shape *cs, int g,
             size_t npad, int o0, int c, const int k)
{
    const int Wp = cs->W + 2 * cs->p, Hp = cs->H + 2 * cs->p, OH = cs->OH, OW = cs->OW;
    const size_t K = (size_t)cs->C * k * k;
    __m512 a[25];
    _Pragma("GCC unroll 25") for (int t = 0; t < k * k; t++) a[t] = _mm512_setzero_ps();
    for (int i = 0; i < g; i++) {
        const float *xc = xp + i * npad + (size_t)c * Hp * Wp;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++, d16 += 16) {
                const __m512 d = _mm512_loadu_ps(d16);
                const float *u = xc + (size_t)oh * Wp + ow;
                __asm__("" : "+r"(u)); /* as in oc_block: broadcasts from memory */
                _Pragma("GCC unroll 5") for (int ki = 0; ki < k; ki++)
                    _Pragma("GCC unroll 5") for (int kj = 0; kj < k; kj++) a[ki * k + kj] =
                        _mm512_fmadd_ps(_mm512_set1_ps(u[(size_t)ki * Wp + kj]), d, a[ki * k + kj]);
            }
    }
    float t16[16];
    for (int t = 0; t < k * k; t++) {
        _mm512_storeu_ps(t16, a[t]);
        for (int l = 0; l < 16; l++) dw[(o0 + l) * K + (size_t)c * k * k + t] += t16[l];
    }
}

__attribute__((target("avx512f"))) static void ocdw_k3(float *dw, const float *d16, const float *xp,
                                                       const nn_conv_shape *cs, int g, size_t npad,
                                                       int o0, int c)
{
    ocdw_channel(dw, d16, xp, cs, g, npad, o0, c, 3);
}
__attribute__((target("avx512f"))) static void ocdw_k5(float *dw, const float *d16, const float *xp,
                                                       const nn_conv_shape *cs, int g, size_t npad,
                                                       int o0, int c)
{
    ocdw_channel(dw, d16, xp, cs, g, npad, o0, c, 5);
}

/* AVX2: 8 channels a vector, the taps of one input channel in passes of
 * nki kernel rows (10 accumulators at k = 5, 9 at k = 3: 16 registers),
 * dy's vector loaded once a position and pass. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
ocdw8_rows(float *dw, const float *d8, const float *xp, const nn_conv_shape *cs, int g, size_t npad,
           int o0, int c, int ki0, const int k, const int nki)
{
    const int Wp = cs->W + 2 * cs->p, Hp = cs->H + 2 * cs->p, OH = cs->OH, OW = cs->OW;
    const size_t K = (size_t)cs->C * k * k;
    __m256 a[3][5];
    _Pragma("GCC unroll 3") for (int r = 0; r < nki; r++)
        _Pragma("GCC unroll 5") for (int kj = 0; kj < k; kj++) a[r][kj] = _mm256_setzero_ps();
    for (int i = 0; i < g; i++) {
        const float *xc = xp + i * npad + ((size_t)c * Hp + ki0) * Wp;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++, d8 += 8) {
                const __m256 d = _mm256_loadu_ps(d8);
                const float *u = xc + (size_t)oh * Wp + ow;
                __asm__("" : "+r"(u));
                _Pragma("GCC unroll 3") for (int r = 0; r < nki; r++)
                    _Pragma("GCC unroll 5") for (int kj = 0; kj < k; kj++) a[r][kj] =
                        _mm256_fmadd_ps(_mm256_broadcast_ss(u + (size_t)r * Wp + kj), d, a[r][kj]);
            }
    }
    float t8[8];
    for (int r = 0; r < nki; r++)
        for (int kj = 0; kj < k; kj++) {
            _mm256_storeu_ps(t8, a[r][kj]);
            for (int l = 0; l < 8; l++)
                dw[(o0 + l) * K + ((size_t)c * k + ki0 + r) * k + kj] += t8[l];
        }
}

__attribute__((target("avx2,fma"))) static void ocdw8(float *dw, const float *d8, const float *xp,
                                                      const nn_conv_shape *cs, int g, size_t npad,
                                                      int o0, int c)
{
    if (cs->k == 5) {
        ocdw8_rows(dw, d8, xp, cs, g, npad, o0, c, 0, 5, 2);
        ocdw8_rows(dw, d8, xp, cs, g, npad, o0, c, 2, 5, 2);
        ocdw8_rows(dw, d8, xp, cs, g, npad, o0, c, 4, 5, 1);
    } else {
        ocdw8_rows(dw, d8, xp, cs, g, npad, o0, c, 0, 3, 3);
    }
}
#endif

/* dw [O, K] += the group's weight gradient (ocdw_fits): dy [g, O, P]
 * regrouped into d16 [O/v][g P][v] (v = oc_lanes()), the bordered images
 * in xs. */
static void conv_dw_oc(float *dw, const float *dy, const float *x, const nn_conv_shape *cs, int g,
                       float *xs, float *d16)
{
#if NN_X86
    const size_t P = (size_t)cs->OH * cs->OW, gp = (size_t)g * P;
    const size_t npad = padded_stride(cs);
    const int v = oc_lanes();
    for (int o0 = 0; o0 < cs->O; o0 += v)
        for (int i = 0; i < g; i++)
            for (int l = 0; l < v; l++) {
                const float *src = dy + ((size_t)i * cs->O + o0 + l) * P;
                float *dst = d16 + (size_t)o0 * gp + (size_t)i * P * v + l;
                for (size_t q = 0; q < P; q++) dst[q * v] = src[q];
            }
    const float *xp = pad_images(xs, x, g, cs->C, cs->H, cs->W, cs->p);
    for (int o0 = 0; o0 < cs->O; o0 += v)
        for (int c = 0; c < cs->C; c++)
            (v == 8       ? ocdw8
             : cs->k == 5 ? ocdw_k5
                          : ocdw_k3)(dw, d16 + (size_t)o0 * gp, xp, cs, g, npad, o0, c);
#else
    (void)dw, (void)dy, (void)x, (void)cs, (void)g, (void)xs, (void)d16;
#endif
}

/* w [O, K] as [O / v][K][v]: v output channels a tap, side by side. */
static void oc_pack(float *wt, const float *w, const nn_conv_shape *cs, int v)
{
    const size_t K = (size_t)cs->C * cs->k * cs->k;
    for (int o0 = 0; o0 < cs->O; o0 += v)
        for (size_t t = 0; t < K; t++)
            for (int l = 0; l < v; l++) wt[((size_t)o0 * K) + t * v + l] = w[(o0 + l) * K + t];
}

/* y [g, O, OH, OW] of x [g, C, H, W] (oc_fits); scratch: oc_scratch. The
 * weights are packed into scratch unless wt brings them packed. */
static void conv_forward_oc(float *y, const float *x, const float *w, const float *wt,
                            const float *b, const nn_conv_shape *cs, int g, float *scratch,
                            int relu)
{
#if NN_X86
    const size_t K = (size_t)cs->C * cs->k * cs->k, nout = (size_t)cs->O * cs->OH * cs->OW;
    const size_t npad = padded_stride(cs);
    const int v = oc_lanes();
    float *xs = scratch + (size_t)cs->O * K;
    if (!wt) {
        oc_pack(scratch, w, cs, v);
        wt = scratch;
    }
    const float *xp = pad_images(xs, x, g, cs->C, cs->H, cs->W, cs->p);
    for (int i = 0; i < g; i++)
        (v == 16 ? oc_image : oc8_image)(y + i * nout, xp + i * npad, wt, b, cs, relu);
#else
    (void)y, (void)x, (void)w, (void)wt, (void)b, (void)cs, (void)g, (void)scratch, (void)relu;
#endif
}

#if NN_X86
/* One image's outputs from its bordered copy. */
typedef void (*c1_fn)(float *, const float *, const float *, const float *, const nn_conv_shape *,
                      int);

/* g images by f, each bordered in scratch (c1_scratch floats) first. */
static void c1_images(float *y, const float *x, const float *w, const float *b,
                      const nn_conv_shape *cs, int g, float *scratch, int relu, c1_fn f)
{
    const size_t nout = (size_t)cs->O * cs->OH * cs->OW;
    memset(scratch, 0, sizeof(float) * c1_scratch(cs)); /* the border stays zero */
    for (int i = 0; i < g; i++) {
        c1_copy_image(scratch, x + (size_t)i * cs->H * cs->W, cs);
        f(y + i * nout, scratch, w, b, cs, relu);
    }
}
#endif

/* y [g, O, OH, OW] of x [g, 1, H, W]; scratch: c1_scratch floats. */
static void conv_forward_c1(float *y, const float *x, const float *w, const float *b,
                            const nn_conv_shape *cs, int g, float *scratch, int relu)
{
#if NN_X86
    c1_images(y, x, w, b, cs, g, scratch, relu,
              !c1_fits(cs) ? c1_avx2_k3 /* c1_avx2_fits */
              : cs->k == 5 ? c1_avx512_k5
                           : c1_avx512_k3);
#else
    (void)y, (void)x, (void)w, (void)b, (void)cs, (void)g, (void)scratch, (void)relu;
#endif
}

/* ---- one input channel, channels last ------------------------------------
 * Where a Winograd layer follows, it wants its input channels last
 * ([H, W, C]) and c1's rows ([O, H, W]) cost it a transpose of every
 * value (the big CNN's 26 x 26 x 32). Without it, and with that layer's
 * input read in place (its tile grid is the map), the batch-1 pass of
 * the big CNN went from 92.6 to 89.7 us (medians of 20 alternating runs
 * of 3 x 1000 test images, faster in 15; Zen 5). Here the
 * lanes are output channels instead: each 3x3 tap is one weight vector
 * (all 9 x 2 of 32 channels in registers) times the input pixel
 * broadcast, four output positions of a row at a time (eight chains).
 * Each output is its bias plus the taps in the order of c1_rows: the
 * same floats, only stored channels last. AVX-512, 3x3, O a multiple of
 * 16 up to C1N_MAX_O; on AVX2 the same where c1_rows8 runs the rows (c1n8_image,
 * eight channels a vector): the AVX2 batch-1 pass of the big CNN went
 * from 158.1 to 150.8 us (medians of 100 alternating rounds of 200 test
 * images in one process, faster in 93; Zen 4). */
#define C1N_MAX_O 64

int nn_conv2d_nhwc_fits(const nn_conv_shape *cs)
{
    return (c1_fits(cs) || c1_avx2_fits(cs)) && cs->k == 3 && cs->O % 16 == 0 && cs->O <= C1N_MAX_O;
}

#if NN_X86
/* Positions [ow, ow + np) of row oh, channels [o0, o0 + 16 nv) from the
 * weight vectors wv[9][nv]. */
__attribute__((target("avx512f"), always_inline)) static inline void
c1n_run(float *y, const float *xb, const __m512 wv[9][2], const __m512 bv[2], int oh, int ow, int O,
        int OW, int o0, int relu, const int np, const int nv)
{
    __m512 a[4][2];
    _Pragma("GCC unroll 4") for (int j = 0; j < np; j++)
    {
        a[j][0] = bv[0];
        a[j][1] = bv[1];
    }
    _Pragma("GCC unroll 3") for (int ki = 0; ki < 3; ki++)
    {
        const float *xr = xb + (size_t)(oh + ki) * C1_ROW + ow;
        _Pragma("GCC unroll 3") for (int kj = 0; kj < 3; kj++)
        {
            _Pragma("GCC unroll 4") for (int j = 0; j < np; j++)
            {
                const __m512 x = _mm512_set1_ps(xr[j + kj]);
                _Pragma("GCC unroll 2") for (int v = 0; v < nv; v++) a[j][v] =
                    _mm512_fmadd_ps(x, wv[ki * 3 + kj][v], a[j][v]);
            }
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    _Pragma("GCC unroll 4") for (int j = 0; j < np; j++)
    {
        float *yp = y + ((size_t)oh * OW + ow + j) * O + o0;
        _Pragma("GCC unroll 2") for (int v = 0; v < nv; v++)
            _mm512_storeu_ps(yp + 16 * v, relu ? _mm512_max_ps(a[j][v], zero) : a[j][v]);
    }
}

__attribute__((target("avx512f"), always_inline)) static inline void
c1n_block(float *y, const float *xb, const float *wt, const float *b, const nn_conv_shape *cs,
          int relu, int o0, const int nv)
{
    const int O = cs->O, OW = cs->OW;
    __m512 wv[9][2], bv[2];
    for (int v = 0; v < 2; v++) {
        bv[v] = v < nv && b ? _mm512_loadu_ps(b + o0 + 16 * v) : _mm512_setzero_ps();
        for (int t = 0; t < 9; t++)
            wv[t][v] =
                v < nv ? _mm512_loadu_ps(wt + (size_t)t * O + o0 + 16 * v) : _mm512_setzero_ps();
    }
    for (int oh = 0; oh < cs->OH; oh++) {
        int ow = 0;
        for (; ow + 4 <= OW; ow += 4) c1n_run(y, xb, wv, bv, oh, ow, O, OW, o0, relu, 4, nv);
        for (; ow < OW; ow++) c1n_run(y, xb, wv, bv, oh, ow, O, OW, o0, relu, 1, nv);
    }
}

/* The same on AVX2 (where c1_avx2_k3 runs the rows, rows of more than
 * 24 columns): 8 channels a block, their 9 weight vectors in registers,
 * four positions of a row at a time (four chains), each output its bias
 * plus the taps in c1_rows8's order. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
c1n8_run(float *y, const float *xb, const __m256 wv[9], __m256 bv, int oh, int ow, int O, int OW,
         int o0, int relu, const int np)
{
    __m256 a[4];
    _Pragma("GCC unroll 4") for (int j = 0; j < np; j++) a[j] = bv;
    _Pragma("GCC unroll 3") for (int ki = 0; ki < 3; ki++)
    {
        const float *xr = xb + (size_t)(oh + ki) * C1_ROW + ow;
        _Pragma("GCC unroll 3") for (int kj = 0; kj < 3; kj++)
        {
            _Pragma("GCC unroll 4") for (int j = 0; j < np; j++) a[j] =
                _mm256_fmadd_ps(_mm256_broadcast_ss(xr + j + kj), wv[ki * 3 + kj], a[j]);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    _Pragma("GCC unroll 4") for (int j = 0; j < np; j++) _mm256_storeu_ps(
        y + ((size_t)oh * OW + ow + j) * O + o0, relu ? _mm256_max_ps(a[j], zero) : a[j]);
}

/* One image from its bordered copy xb; wt [9][O]. */
__attribute__((target("avx2,fma"))) static void c1n8_image(float *y, const float *xb,
                                                           const float *wt, const float *b,
                                                           const nn_conv_shape *cs, int relu)
{
    const int O = cs->O, OW = cs->OW;
    for (int o0 = 0; o0 < O; o0 += 8) {
        __m256 wv[9];
        const __m256 bv = b ? _mm256_loadu_ps(b + o0) : _mm256_setzero_ps();
        for (int t = 0; t < 9; t++) wv[t] = _mm256_loadu_ps(wt + (size_t)t * O + o0);
        for (int oh = 0; oh < cs->OH; oh++) {
            int ow = 0;
            for (; ow + 4 <= OW; ow += 4) c1n8_run(y, xb, wv, bv, oh, ow, O, OW, o0, relu, 4);
            for (; ow < OW; ow++) c1n8_run(y, xb, wv, bv, oh, ow, O, OW, o0, relu, 1);
        }
    }
}

/* One image from its bordered copy xb; wt [9][O]. */
__attribute__((target("avx512f"))) static void c1n_image(float *y, const float *xb, const float *wt,
                                                         const float *b, const nn_conv_shape *cs,
                                                         int relu)
{
    int o0 = 0;
    for (; o0 + 32 <= cs->O; o0 += 32) c1n_block(y, xb, wt, b, cs, relu, o0, 2);
    if (o0 < cs->O) c1n_block(y, xb, wt, b, cs, relu, o0, 1);
}
#endif

void nn_conv2d_forward_nhwc(float *y, const float *x, const float *w, const float *b,
                            const nn_conv_shape *cs, int g, float *scratch, int relu)
{
#if NN_X86
    float wt[9 * C1N_MAX_O];
    for (int o = 0; o < cs->O; o++)
        for (int t = 0; t < 9; t++) wt[t * cs->O + o] = w[(size_t)o * 9 + t];
    c1_images(y, x, wt, b, cs, g, scratch, relu, c1_fits(cs) ? c1n_image : c1n8_image);
#else
    (void)y, (void)x, (void)w, (void)b, (void)cs, (void)g, (void)scratch, (void)relu;
#endif
}

/* The kernel covers the whole input: the convolution is a dense layer. */
static int is_dense_shape(const nn_conv_shape *cs)
{
    return cs->OH == 1 && cs->OW == 1 && cs->p == 0 && cs->k == cs->H && cs->k == cs->W;
}

/* ---- a dense layer at batch 1, zero inputs skipped -------------------------
 * At batch 1 such a layer is a matrix-vector product: the big CNN's 64x4x4
 * -> 128 reads its 512 KB of weights from L3 for 131k multiply-adds, and
 * after the ReLU before it about 70% of its 1024 inputs are zero (the MNIST
 * test images). With the weights transposed once in the plan ([K][O]: an
 * input's O weights contiguous), the rows of zero inputs are not read at
 * all: a list of the nonzero inputs, then per block of outputs (8 vectors
 * in registers) one multiply-add per nonzero input. Each output is its
 * bias plus the nonzero products in input order (fused on AVX2 and
 * AVX-512, which agree to the bit; the GEMM's dot products split the sum
 * four ways, so rounding differs from the unplanned pass). O a multiple
 * of 16 and K at most D1_MAX_K (the list is on the stack); else the
 * GEMM. */
#define D1_MAX_K 8192
/* Rows prefetched this many nonzero inputs ahead (no stride for the
 * hardware to follow): the layer 7.7-8.6 -> 6.2-6.3 us on AVX-512 by the
 * layer timer, 16 against 8 and 4. */
#define D1_PF 16

static int d1_fits(const nn_conv_shape *cs)
{
    const size_t K = (size_t)cs->C * cs->k * cs->k;
    return is_dense_shape(cs) && cs->O % 16 == 0 && K <= D1_MAX_K;
}

/* wt [K][O] = w [O][K] transposed. */
static void d1_pack(float *wt, const float *w, const nn_conv_shape *cs)
{
    const size_t K = (size_t)cs->C * cs->k * cs->k, O = (size_t)cs->O;
    for (size_t o = 0; o < O; o++)
        for (size_t k = 0; k < K; k++) wt[k * O + o] = w[o * K + k];
}

#if NN_X86
/* y[o0, o0 + NV VL) from the nnz inputs listed in nz. */
#define D1_BLOCK(NAME, ATTR, VT, VL, SET1, LOAD, FMA, STORE)                                      \
    ATTR static inline __attribute__((always_inline)) void NAME(                                  \
        float *y, const float *x, const float *wt, const float *b, const int *nz, int nnz, int O, \
        int o0, const int NV)                                                                     \
    {                                                                                             \
        VT a[8];                                                                                  \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) a[v] =                               \
            b ? LOAD(b + o0 + v * VL) : SET1(0.0f);                                               \
        for (int j = 0; j < nnz; j++) {                                                           \
            const float *wr = wt + (size_t)nz[j] * O + o0;                                        \
            {                                                                                     \
                const float *wp = wt + (size_t)nz[j + D1_PF < nnz ? j + D1_PF : j] * O + o0;      \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; v += 64 / (VL * 4))               \
                    __builtin_prefetch(wp + v * VL);                                              \
            }                                                                                     \
            const VT xv = SET1(x[nz[j]]);                                                         \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) a[v] =                           \
                FMA(xv, LOAD(wr + v * VL), a[v]);                                                 \
        }                                                                                         \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) STORE(y + o0 + v * VL, a[v]);        \
    }
D1_BLOCK(d1_block16, __attribute__((target("avx512f"))), __m512, 16, _mm512_set1_ps,
         _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_storeu_ps)
D1_BLOCK(d1_block8, __attribute__((target("avx2,fma"))), __m256, 8, _mm256_set1_ps, _mm256_loadu_ps,
         _mm256_fmadd_ps, _mm256_storeu_ps)

__attribute__((target("avx512f"))) static void
d1_avx512(float *y, const float *x, const float *wt, const float *b, const int *nz, int nnz, int O)
{
    int o0 = 0;
    for (; o0 + 128 <= O; o0 += 128) d1_block16(y, x, wt, b, nz, nnz, O, o0, 8);
    for (; o0 < O; o0 += 16) d1_block16(y, x, wt, b, nz, nnz, O, o0, 1);
}

__attribute__((target("avx2,fma"))) static void
d1_avx2(float *y, const float *x, const float *wt, const float *b, const int *nz, int nnz, int O)
{
    int o0 = 0;
    for (; o0 + 64 <= O; o0 += 64) d1_block8(y, x, wt, b, nz, nnz, O, o0, 8);
    for (; o0 < O; o0 += 8) d1_block8(y, x, wt, b, nz, nnz, O, o0, 1);
}
#endif

/* y [O] of one image x [K]; relu != 0: max(0, .) after. */
static void conv_forward_d1(float *y, const float *x, const float *wt, const float *b,
                            const nn_conv_shape *cs, int relu)
{
    const int K = cs->C * cs->k * cs->k, O = cs->O;
    int nz[D1_MAX_K], nnz = 0;
    for (int k = 0; k < K; k++) {
        nz[nnz] = k;
        nnz += x[k] != 0.0f;
    }
    const int path = nn_gemm_get_path();
#if NN_X86
    if (path == NN_GEMM_PATH_AVX512)
        d1_avx512(y, x, wt, b, nz, nnz, O);
    else if (path == NN_GEMM_PATH_AVX2)
        d1_avx2(y, x, wt, b, nz, nnz, O);
    else
#endif
    {
        (void)path;
        for (int o = 0; o < O; o++) y[o] = b ? b[o] : 0.0f;
        for (int j = 0; j < nnz; j++) {
            const float xk = x[nz[j]], *wr = wt + (size_t)nz[j] * O;
            for (int o = 0; o < O; o++) y[o] = xk * wr[o] + y[o];
        }
    }
    if (relu)
        for (int o = 0; o < O; o++) y[o] = y[o] > 0.0f ? y[o] : 0.0f;
}

/* ---- few output positions, direct ----------------------------------------
 * A late layer of a small image has a handful of output positions and a
 * deep reduction: the big CNN's 5x5 stride-2 layer maps 64 channels of
 * 8 x 8 to 64 of 4 x 4, K = 1600 products for each of P = 16 positions.
 * Its im2col panels are one column wide per position, so the GEMM spends
 * on packing what it saves in the multiply, and Winograd (by space-to-
 * depth) reads 2.5 times the weights (1 MiB) for 4 tiles. Here an
 * image's P <= 16 positions are the lanes of one vector: its im2col
 * matrix [K, 16] is built once (sp_rows_phased for 4 x 4 outputs, else
 * sp_rows_gather), then each output channel is a sum over K of a
 * broadcast weight times a row, sixteen channels at a time in registers
 * (then eight, then one at a time: sp_width), the weights read once in
 * order and the rows once per block. AVX-512 only, like the first
 * layer's direct kernel; the inference plan keeps such layers direct
 * (nn_net_plan, which says why). */
#define SP_MAX_P 16
#define SP_BLOCK 16        /* channels a block, at most (then 8, then 1) */
#define SP_PHASES_MAX 1024 /* floats: one channel's column phases */

/* Channels in the block that starts with `left` channels to go: 16, then
 * 8, then one at a time. sp_image's blocks and sp_pack's layout both. */
static int sp_width(int left) { return left >= 16 ? 16 : left >= 8 ? 8 : 1; }

static int sp_fits(const nn_conv_shape *cs)
{
#if NN_X86
    return nn_gemm_get_path() == NN_GEMM_PATH_AVX512 && cs->OH * cs->OW <= SP_MAX_P;
#else
    (void)cs;
    return 0;
#endif
}

int nn_conv2d_few_outputs(const nn_conv_shape *cs) { return sp_fits(cs); }

/* The padded image, then the gathered rows [K, 16]. */
static size_t sp_scratch(const nn_conv_shape *cs)
{
    if (cs->OH * cs->OW > SP_MAX_P) return 0;
    size_t K = (size_t)cs->C * cs->k * cs->k;
    return padded_size(1, cs->C, cs->H, cs->W, cs->p) + K * SP_MAX_P;
}

#if NN_X86
/* Channels [o0, o0 + nb) of one image: a[q] accumulates channel o0 + q
 * over the K rows of col; nb is a constant at each call. The weights are
 * w [O, K] as stored, or (packed) sp_pack's blocks [K][nb], read in one
 * stream. */
__attribute__((target("avx512f"), always_inline)) static inline void
sp_block(float *y, const float *col, const float *w, const float *b, int K, int P, int relu,
         __mmask16 m, int o0, const int nb, const int packed)
{
    __m512 a[SP_BLOCK];
    const float *wo = w + (size_t)o0 * K;
    _Pragma("GCC unroll 16") for (int q = 0; q < nb; q++) a[q] =
        _mm512_set1_ps(b ? b[o0 + q] : 0.0f);
    for (int k = 0; k < K; k++) {
        const __m512 c = _mm512_loadu_ps(col + (size_t)k * SP_MAX_P);
        _Pragma("GCC unroll 16") for (int q = 0; q < nb; q++) a[q] = _mm512_fmadd_ps(
            _mm512_set1_ps(packed ? wo[(size_t)k * nb + q] : wo[(size_t)q * K + k]), c, a[q]);
    }
    const __m512 zero = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int q = 0; q < nb; q++)
        _mm512_mask_storeu_ps(y + (size_t)(o0 + q) * P, m, relu ? _mm512_max_ps(a[q], zero) : a[q]);
}

/* 4 x 4 outputs whose column phases fit the buffer: sp_image builds its
 * rows from the unpadded image (sp_rows_phased), else from the padded
 * one by gathers. */
static int sp_phased(const nn_conv_shape *cs)
{
    const int s = cs->s, Hp = cs->H + 2 * cs->p, Wq = (cs->W + 2 * cs->p + s - 1) / s;
    return cs->OH == 4 && cs->OW == 4 && s * Hp * Wq <= SP_PHASES_MAX;
}

/* col [K, 16] of one unpadded image x [C, H, W], for 4 x 4 outputs
 * (sp_phased). Row (c, ki, kj) is four runs of four floats: row
 * ki + oh s of the padded channel at columns kj + ow s, i.e. a run of
 * its column phase kj % s from kj / s. Each channel is written into its
 * s phases (the border is the same zeros for every channel: cleared
 * once), then a row is four 16-byte loads - not a 16-lane gather (a
 * quarter of the layer's time on Zen 5), and no padded copy of the image
 * (its clearing and row copies were 3% of the CNN's batch-1 pass). */
__attribute__((target("avx512f"))) static void sp_rows_phased(float *col, const float *x,
                                                              const nn_conv_shape *cs)
{
    const int k = cs->k, s = cs->s, p = cs->p, H = cs->H, W = cs->W;
    const int Hp = H + 2 * p, Wq = (W + 2 * p + s - 1) / s;
    const size_t d = (size_t)s * Wq; /* from one output row to the next */
    float ph[SP_PHASES_MAX];         /* [s][Hp][Wq] */
    memset(ph, 0, sizeof(float) * (size_t)s * Hp * Wq);
    for (int c = 0; c < cs->C; c++) {
        const float *xc = x + (size_t)c * H * W;
        for (int h = 0; h < H; h++)
            for (int w = 0, f = p % s, q = p / s; w < W; w++) { /* column w + p */
                ph[(f * Hp + h + p) * Wq + q] = xc[h * W + w];
                if (++f == s) f = 0, q++;
            }
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *src = ph + ((kj % s) * Hp + ki) * Wq + kj / s;
                __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(src));
                v = _mm512_insertf32x4(v, _mm_loadu_ps(src + d), 1);
                v = _mm512_insertf32x4(v, _mm_loadu_ps(src + 2 * d), 2);
                v = _mm512_insertf32x4(v, _mm_loadu_ps(src + 3 * d), 3);
                _mm512_storeu_ps(col + ((size_t)(c * k + ki) * k + kj) * SP_MAX_P, v);
            }
    }
}

/* col [K, 16] of one padded image xp [C, H + 2p, W + 2p]: row (c, ki,
 * kj) gathered at a fixed index vector from offset (c, ki, kj). */
__attribute__((target("avx512f"))) static void sp_rows_gather(float *col, const float *xp,
                                                              const nn_conv_shape *cs)
{
    const int k = cs->k, s = cs->s, OW = cs->OW, P = cs->OH * cs->OW;
    const int Hp = cs->H + 2 * cs->p, Wp = cs->W + 2 * cs->p;
    const __mmask16 m = (__mmask16)((1u << P) - 1u);
    int idx[SP_MAX_P] = {0};
    for (int q = 0; q < P; q++) idx[q] = (q / OW) * s * Wp + (q % OW) * s;
    const __m512i vi = _mm512_loadu_si512(idx);
    for (int c = 0; c < cs->C; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *base = xp + ((size_t)c * Hp + ki) * Wp + kj;
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, vi, base, 4);
                _mm512_storeu_ps(col + ((size_t)(c * k + ki) * k + kj) * SP_MAX_P, v);
            }
}

/* Every block of y [O, P] (sp_width); packed is a constant at each call,
 * so each block width is its own unrolled loop. A block of one reads the
 * same floats either way ([K][1] is a row as stored). */
__attribute__((target("avx512f"), always_inline)) static inline void
sp_blocks(float *y, const float *col, const float *w, const float *b, int K, int P, int O, int relu,
          __mmask16 m, const int packed)
{
    for (int o0 = 0, nb; o0 < O; o0 += nb) {
        nb = sp_width(O - o0);
        if (nb == 16)
            sp_block(y, col, w, b, K, P, relu, m, o0, 16, packed);
        else if (nb == 8)
            sp_block(y, col, w, b, K, P, relu, m, o0, 8, packed);
        else
            sp_block(y, col, w, b, K, P, relu, m, o0, 1, 0);
    }
}

/* y [O, OH, OW] of one image from its rows col [K, 16]. */
__attribute__((target("avx512f"))) static void sp_image(float *y, const float *col, const float *w,
                                                        int packed, const float *b,
                                                        const nn_conv_shape *cs, int relu)
{
    const int P = cs->OH * cs->OW, K = cs->C * cs->k * cs->k;
    const __mmask16 m = (__mmask16)((1u << P) - 1u);
    if (packed)
        sp_blocks(y, col, w, b, K, P, cs->O, relu, m, 1);
    else
        sp_blocks(y, col, w, b, K, P, cs->O, relu, m, 0);
}
#endif

/* Channels [o0, o0 + nb) of w [O, K] as one block [K][nb]. */
static void sp_pack_block(float *wt, const float *w, size_t K, int o0, int nb)
{
    for (size_t t = 0; t < K; t++)
        for (int q = 0; q < nb; q++) wt[(size_t)o0 * K + t * nb + q] = w[(size_t)(o0 + q) * K + t];
}

/* w [O, K] in sp_image's blocks (sp_width): each whole 16 channels as
 * [K][16], then 8 more (if as many are left) as [K][8]; the last O % 8
 * channels stay [K] each (a block of one). */
static void sp_pack(float *wt, const float *w, const nn_conv_shape *cs)
{
    const size_t K = (size_t)cs->C * cs->k * cs->k;
    for (int o0 = 0, nb; o0 < cs->O; o0 += nb) {
        nb = sp_width(cs->O - o0);
        sp_pack_block(wt, w, K, o0, nb);
    }
}

/* ---- few output positions, zero inputs skipped ---------------------------
 * After the ReLU before it, about 69% of the CNN's 8 x 8 -> 4 x 4 layer's
 * inputs are zero (the MNIST test images), but only 9% of its im2col rows
 * and 1% of its channels are, so the dense kernel above cannot skip them.
 * Here each output position keeps a list of its nonzero inputs (value and
 * weight row), and the multiply-adds run the other way round: a vector of
 * output channels gets one input's value times its weight row ([K][O],
 * transposed in the plan), so a zero input costs nothing. A channel's
 * nonzero pixels are compressed once into a list (values, weight rows)
 * with a 64-bit mask of where they are (H W <= 64); a position takes its
 * share of that list by one more compress, its window's bits picked by
 * pext (no branch per pixel). The input channels go in groups whose weights
 * (SZ_L1_FLOATS) stay in L1 while all positions read them; positions
 * run in pairs of near-equal list lengths (eight chains of fused
 * multiply-adds while both last). Each output is its
 * bias plus its nonzero products in the order of k, as in sp_block: the
 * same floats (a skipped product is a zero). */
#define SZ_MAX_HW 64
#define SZ_L1_FLOATS 8192 /* weights a group of input channels reads: 32 KB */
#define SZ_OB 64          /* output channels a pass over the lists: 4 vectors */

static int sz_fits(const nn_conv_shape *cs)
{
#if NN_X86
    const size_t K = (size_t)cs->C * cs->k * cs->k;
    return sp_fits(cs) && cs->H * cs->W <= SZ_MAX_HW && cs->O % 16 == 0 &&
           K * (size_t)cs->O < (size_t)INT32_MAX && __builtin_cpu_supports("bmi2");
#else
    (void)cs;
    return 0;
#endif
}

int nn_conv2d_skips_zeros(const nn_conv_shape *cs) { return sz_fits(cs); }

/* Input channels a group: their weights for one pass (SZ_OB channels)
 * within SZ_L1_FLOATS; at least one. */
static int sz_group(const nn_conv_shape *cs)
{
    const int ob = cs->O < SZ_OB ? cs->O : SZ_OB;
    int G = SZ_L1_FLOATS / (cs->k * cs->k * ob);
    return G < 1 ? 1 : G > cs->C ? cs->C : G;
}

/* A position's list holds up to a group's taps, and a whole vector more
 * (compressed stores write all 16 lanes). */
static size_t sz_list(const nn_conv_shape *cs) { return (size_t)sz_group(cs) * cs->k * cs->k + 16; }

/* The sums [P, O], then each position's values and weight offsets. */
static size_t sz_scratch(const nn_conv_shape *cs)
{
    if (!sz_fits(cs)) return 0;
    const size_t P = (size_t)cs->OH * cs->OW;
    return P * cs->O + 2 * P * sz_list(cs);
}

#if NN_X86
/* Two positions' sums ya, yb [nv 16] (yb NULL: one) plus their lists
 * (values v, weight offsets i, counts n) times w's rows. */
__attribute__((target("avx512f"), always_inline)) static inline void
sz_run(float *ya, const float *va, const int32_t *ia, int na, float *yb, const float *vb,
       const int32_t *ib, int nb, const float *w, const int nv)
{
    __m512 a[4], c[4];
    _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++)
    {
        a[v] = _mm512_loadu_ps(ya + 16 * v);
        c[v] = yb ? _mm512_loadu_ps(yb + 16 * v) : _mm512_setzero_ps();
    }
    int j = 0;
    if (yb)
        for (const int n = na < nb ? na : nb; j < n; j++) {
            const __m512 xa = _mm512_set1_ps(va[j]), xb = _mm512_set1_ps(vb[j]);
            const float *wa = w + ia[j], *wb = w + ib[j];
            _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++)
            {
                a[v] = _mm512_fmadd_ps(xa, _mm512_loadu_ps(wa + 16 * v), a[v]);
                c[v] = _mm512_fmadd_ps(xb, _mm512_loadu_ps(wb + 16 * v), c[v]);
            }
        }
    for (int ja = j; ja < na; ja++) {
        const __m512 xa = _mm512_set1_ps(va[ja]);
        const float *wa = w + ia[ja];
        _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) a[v] =
            _mm512_fmadd_ps(xa, _mm512_loadu_ps(wa + 16 * v), a[v]);
    }
    if (yb)
        for (int jb = j; jb < nb; jb++) {
            const __m512 xb = _mm512_set1_ps(vb[jb]);
            const float *wb = w + ib[jb];
            _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++) c[v] =
                _mm512_fmadd_ps(xb, _mm512_loadu_ps(wb + 16 * v), c[v]);
        }
    _Pragma("GCC unroll 4") for (int v = 0; v < nv; v++)
    {
        _mm512_storeu_ps(ya + 16 * v, a[v]);
        if (yb) _mm512_storeu_ps(yb + 16 * v, c[v]);
    }
}

/* Every position's sums [P, O] (at ys, row stride O) over its lists;
 * nv vectors of output channels from w (offset to the pass's first). */
__attribute__((target("avx512f"), always_inline)) static inline void
sz_pass(float *ys, const float *vals, const int32_t *idx, const int *n, size_t list, int P, int O,
        const float *w, const int nv)
{
    /* Positions in order of their list's length, paired neighbours:
     * the pair's common part runs eight chains, the rest only four. */
    int ord[SP_MAX_P], np[SP_MAX_P];
    for (int q = 0; q < SP_MAX_P; q++) np[q] = q < P ? n[q] : INT32_MAX;
    const __m512i nn = _mm512_loadu_si512(np);
    for (int q = 0; q < P; q++) { /* its rank: shorter lists, then equal ones before it */
        const __m512i nq = _mm512_set1_epi32(np[q]);
        ord[__builtin_popcount(_mm512_cmplt_epi32_mask(nn, nq)) +
            __builtin_popcount(_mm512_cmpeq_epi32_mask(nn, nq) & ((1u << q) - 1u))] = q;
    }
    int t = 0;
    for (; t + 1 < P; t += 2) {
        const int a = ord[t], c = ord[t + 1];
        sz_run(ys + (size_t)a * O, vals + a * list, idx + a * list, n[a], ys + (size_t)c * O,
               vals + c * list, idx + c * list, n[c], w, nv);
    }
    if (t < P) {
        const int a = ord[t];
        sz_run(ys + (size_t)a * O, vals + a * list, idx + a * list, n[a], NULL, NULL, NULL, 0, w,
               nv);
    }
}

/* y [g, O, OH, OW] of x [g, C, H, W] with wt [K][O] (d1_pack); scratch:
 * sz_scratch floats. */
__attribute__((target("avx512f,bmi2"))) static void conv_forward_sz(float *y, const float *x,
                                                                    const float *wt, const float *b,
                                                                    const nn_conv_shape *cs, int g,
                                                                    float *scratch, int relu)
{
    const int C = cs->C, k = cs->k, kk = k * k, O = cs->O, HW = cs->H * cs->W;
    const int P = cs->OH * cs->OW, nvec = (HW + 15) / 16, G = sz_group(cs);
    const size_t list = sz_list(cs);
    float *ys = scratch, *vals = ys + (size_t)P * O;
    int32_t *idx = (int32_t *)(vals + (size_t)P * list);
    /* A pixel's weight row for channel 0 at the tap (0, 0) of a window
     * at its place, (h k + w) O; a position's window: its pixels (one
     * bit each) and how far its tap (0, 0) is from there. */
    __m512i base[4];
    uint64_t win[SP_MAX_P];
    int32_t shift[SP_MAX_P];
    {
        int32_t bs[64];
        for (int i = 0; i < 64; i++) bs[i] = i < HW ? (i / cs->W * k + i % cs->W) * O : 0;
        for (int i = 0; i < 4; i++) base[i] = _mm512_loadu_si512(bs + 16 * i);
        for (int q = 0; q < P; q++) {
            const int h0 = (q / cs->OW) * cs->s - cs->p, w0 = (q % cs->OW) * cs->s - cs->p;
            win[q] = 0;
            for (int h = h0 < 0 ? 0 : h0; h < h0 + k && h < cs->H; h++)
                for (int w = w0 < 0 ? 0 : w0; w < w0 + k && w < cs->W; w++)
                    win[q] |= (uint64_t)1 << (h * cs->W + w);
            shift[q] = (h0 * k + w0) * O;
        }
    }
    const __mmask16 tail = HW % 16 ? (__mmask16)((1u << (HW % 16)) - 1u) : (__mmask16)0xffff;
    for (int img = 0; img < g; img++) {
        const float *xi = x + (size_t)img * C * HW;
        for (int q = 0; q < P; q++)
            for (int o = 0; o < O; o++) ys[(size_t)q * O + o] = b ? b[o] : 0.0f;
        for (int c0 = 0; c0 < C; c0 += G) {
            const int c1 = c0 + G < C ? c0 + G : C;
            int n[SP_MAX_P] = {0};
            for (int c = c0; c < c1; c++) {
                /* The channel's nonzero pixels in order: values, weight
                 * rows (for the tap (0, 0) window at the pixel). */
                float lv[SZ_MAX_HW + 16];
                int32_t lo[SZ_MAX_HW + 16];
                uint64_t nzm = 0;
                int nc = 0;
                const __m512i coff = _mm512_set1_epi32(c * kk * O);
                for (int i = 0; i < nvec; i++) {
                    const __m512 v = _mm512_maskz_loadu_ps(i == nvec - 1 ? tail : 0xffff,
                                                           xi + (size_t)c * HW + 16 * i);
                    const __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
                    _mm512_storeu_ps(lv + nc, _mm512_maskz_compress_ps(m, v));
                    _mm512_storeu_si512(
                        lo + nc, _mm512_maskz_compress_epi32(m, _mm512_add_epi32(base[i], coff)));
                    nc += __builtin_popcount(m);
                    nzm |= (uint64_t)m << (16 * i);
                }
                /* Position q's share: bit j of pext(win, nzm) says whether
                 * the j-th nonzero pixel is in its window. */
                for (int j = 0; j < nc; j += 16) {
                    const __m512 cv = _mm512_loadu_ps(lv + j);
                    const __m512i co = _mm512_loadu_si512(lo + j);
                    for (int q = 0; q < P; q++) {
                        const __mmask16 m = (__mmask16)(_pext_u64(win[q], nzm) >> j);
                        _mm512_storeu_ps(vals + q * list + n[q], _mm512_maskz_compress_ps(m, cv));
                        _mm512_storeu_si512(
                            idx + q * list + n[q],
                            _mm512_maskz_compress_epi32(
                                m, _mm512_sub_epi32(co, _mm512_set1_epi32(shift[q]))));
                        n[q] += __builtin_popcount(m);
                    }
                }
            }
            for (int ob = 0; ob < O; ob += SZ_OB) {
                const int nv = (O - ob) / 16 < 4 ? (O - ob) / 16 : 4;
                if (nv == 4)
                    sz_pass(ys + ob, vals, idx, n, list, P, O, wt + ob, 4);
                else if (nv == 3)
                    sz_pass(ys + ob, vals, idx, n, list, P, O, wt + ob, 3);
                else if (nv == 2)
                    sz_pass(ys + ob, vals, idx, n, list, P, O, wt + ob, 2);
                else
                    sz_pass(ys + ob, vals, idx, n, list, P, O, wt + ob, 1);
            }
        }
        float *yi = y + (size_t)img * O * P;
        for (int o = 0; o < O; o++)
            for (int q = 0; q < P; q++) {
                const float v = ys[(size_t)q * O + o];
                yi[(size_t)o * P + q] = relu && !(v > 0.0f) ? 0.0f : v;
            }
    }
}
#endif

/* y [g, O, OH, OW] of x [g, C, H, W], one image at a time; scratch:
 * sp_scratch floats. wt: the weights from sp_pack, or NULL (w as stored:
 * packing them per call would cost more than it saves at batch 1). */
static void conv_forward_sp(float *y, const float *x, const float *w, const float *wt,
                            const float *b, const nn_conv_shape *cs, int g, float *scratch,
                            int relu)
{
#if NN_X86
    if (wt && sz_fits(cs)) {
        conv_forward_sz(y, x, wt, b, cs, g, scratch, relu);
        return;
    }
    const size_t nx = (size_t)cs->C * cs->H * cs->W, nout = (size_t)cs->O * cs->OH * cs->OW;
    float *col = scratch + padded_size(1, cs->C, cs->H, cs->W, cs->p);
    const int phased = sp_phased(cs);
    for (int i = 0; i < g; i++) {
        if (phased)
            sp_rows_phased(col, x + i * nx, cs);
        else
            sp_rows_gather(col, pad_images(scratch, x + i * nx, 1, cs->C, cs->H, cs->W, cs->p), cs);
        sp_image(y + i * nout, col, wt ? wt : w, wt != NULL, b, cs, relu);
    }
#else
    (void)y, (void)x, (void)w, (void)wt, (void)b, (void)cs, (void)g, (void)scratch, (void)relu;
#endif
}

/* The forward's kernel for cs, in order of preference, up to those that
 * depend on the group (shifted rows or the packed GEMM: FWD_GEMM). Only
 * the few-outputs and lanes kernels take packed weights. */
enum fwd_kind { FWD_DENSE, FWD_C1, FWD_FEW, FWD_LANES, FWD_GEMM };

static enum fwd_kind fwd_kind(const nn_conv_shape *cs)
{
    return is_dense_shape(cs) ? FWD_DENSE
           : c1_fwd_fits(cs)  ? FWD_C1
           : sp_fits(cs)      ? FWD_FEW
           : oc_fits(cs)      ? FWD_LANES
                              : FWD_GEMM;
}

size_t nn_conv2d_packed_size(const nn_conv_shape *cs)
{
    const enum fwd_kind fk = fwd_kind(cs);
    return fk == FWD_FEW || fk == FWD_LANES || (fk == FWD_DENSE && d1_fits(cs))
               ? (size_t)cs->O * cs->C * cs->k * cs->k
               : 0;
}

void nn_conv2d_pack_weights(float *wt, const float *w, const nn_conv_shape *cs)
{
    switch (fwd_kind(cs)) {
    case FWD_FEW:
        if (sz_fits(cs))
            d1_pack(wt, w, cs);
        else
            sp_pack(wt, w, cs);
        break;
    case FWD_LANES: oc_pack(wt, w, cs, oc_lanes()); break;
    case FWD_DENSE:
        if (d1_fits(cs)) d1_pack(wt, w, cs);
        break;
    default: break;
    }
}

size_t nn_conv2d_scratch_size(const nn_conv_shape *cs, int g, int backward)
{
    const size_t P = (size_t)cs->OH * cs->OW, K = (size_t)cs->C * cs->k * cs->k;
    size_t fwd = padded_size(g, cs->C, cs->H, cs->W, cs->p) + (size_t)g * cs->O * P;
    /* A group may end in a single image, which takes the shifted path. */
    size_t sh = shifted_scratch(cs, 1), shg = shifted_scratch(cs, g);
    if (shifted_pays(cs, g) && shg > sh) sh = shg;
    if (sh > fwd) fwd = sh;
    if (c1_scratch(cs) > fwd) fwd = c1_scratch(cs);
    if (sp_scratch(cs) > fwd) fwd = sp_scratch(cs);
    if (sz_scratch(cs) > fwd) fwd = sz_scratch(cs);
    if (oc_scratch(cs, g) > fwd) fwd = oc_scratch(cs, g);
    if (!backward) return fwd;
    size_t xps = padded_size(g, cs->C, cs->H, cs->W, cs->p), dxs;
    /* The first layer's direct weight gradient borders the images in the
     * same place; it is done before the input gradient's region is used. */
    if (c1_fits(cs) && (size_t)g * c1_scratch(cs) > xps) xps = (size_t)g * c1_scratch(cs);
    size_t bwd = (size_t)g * cs->O * P + xps;
    if (dx_as_conv(cs)) {
        int q = cs->k - 1 - cs->p;
        dxs = padded_size(g, cs->O, cs->OH, cs->OW, q) + (size_t)cs->O * K +
              (size_t)g * cs->C * cs->H * cs->W;
        nn_conv_shape dcs = dx_shape(cs);
        size_t alt = (size_t)cs->O * K + shifted_scratch(&dcs, g);
        if (shifted_pays(&dcs, g) && alt > dxs) dxs = alt;
    } else {
        dxs = K * P * (size_t)dcol_images(K, P, g) + 2 * C2I_SLACK;
    }
    if (ocdw_scratch(cs, g) > dxs) dxs = ocdw_scratch(cs, g);
    if (dw_shifted(cs)) {
        /* Its region starts where the padded images would, and is dead
         * before the input gradient starts. */
        size_t dws = (size_t)g * cs->O * P + shifted_scratch(cs, g);
        if (dws > bwd + dxs) bwd = dws, dxs = 0;
    }
    /* The forward part is not live during backward: take the larger. */
    return fwd > bwd + dxs ? fwd : bwd + dxs;
}

/* [g, O, P] <-> [O, g*P] */
static void to_channel_major(float *dst, const float *src, int g, int O, size_t P)
{
    for (int i = 0; i < g; i++)
        for (int o = 0; o < O; o++)
            memcpy(dst + ((size_t)o * g + i) * P, src + ((size_t)i * O + o) * P, sizeof(float) * P);
}

void nn_conv2d_forward_n(float *y, const float *x, const float *w, const float *b,
                         const nn_conv_shape *cs, int g, float *scratch, int relu)
{
    nn_conv2d_forward_packed(y, x, w, NULL, b, cs, g, scratch, relu);
}

void nn_conv2d_forward_packed(float *y, const float *x, const float *w, const float *wt,
                              const float *b, const nn_conv_shape *cs, int g, float *scratch,
                              int relu)
{
    const size_t P = (size_t)cs->OH * cs->OW, K = (size_t)cs->C * cs->k * cs->k;
    const size_t nout = (size_t)cs->O * P, ld = P * g;
    switch (fwd_kind(cs)) {
    case FWD_DENSE:
        /* The kernel covers the whole input: a dense layer, y [g,O] = x [g,K] w^T
         * (batch 1 with the plan's transposed weights: zero inputs skipped;
         * else the GEMM, whose batch 1 takes its dot-product path). */
        if (g == 1 && wt) {
            conv_forward_d1(y, x, wt, b, cs, relu);
            return;
        }
        for (int i = 0; i < g; i++)
            for (int o = 0; o < cs->O; o++) y[(size_t)i * cs->O + o] = b ? b[o] : 0.0f;
        nn_gemm(0, 1, g, cs->O, (int)K, 1.0f, x, (int)K, w, (int)K, 1.0f, y, cs->O);
        if (relu)
            for (size_t i = 0; i < (size_t)g * cs->O; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
        return;
    case FWD_C1: conv_forward_c1(y, x, w, b, cs, g, scratch, relu); return;
    case FWD_FEW: conv_forward_sp(y, x, w, wt, b, cs, g, scratch, relu); return;
    case FWD_LANES: conv_forward_oc(y, x, w, wt, b, cs, g, scratch, relu); return;
    case FWD_GEMM: break;
    }
    if (shifted_pays(cs, g)) {
        conv_forward_shifted(y, x, w, b, cs, g, scratch, relu);
        return;
    }
    float *xp = scratch, *tmp = scratch + padded_size(g, cs->C, cs->H, cs->W, cs->p);
    struct conv_src cx;
    conv_src_init(&cx, pad_images(xp, x, g, cs->C, cs->H, cs->W, cs->p), cs->C, cs->H, cs->W, cs->p,
                  cs->k, cs->s, cs->OH, cs->OW);
    nn_gemm_packed(0, cs->O, (int)ld, (int)K, 1.0f, w, (int)K, pack_fwd, &cx, 0.0f, tmp, (int)ld);
    /* [O, g*P] -> [g, O, P] with the bias (and ReLU). */
    for (int i = 0; i < g; i++)
        for (int o = 0; o < cs->O; o++) {
            const float *src = tmp + (size_t)o * ld + i * P;
            float *dst = y + i * nout + (size_t)o * P, bo = b ? b[o] : 0.0f;
            bias_act(dst, src, P, bo, relu);
        }
}

/* Stride 1, rows up to C2I_MAXW wide, kernels up to C2I_MAXK: dx [C,H,W]
 * = dcol [K, P] (rows ld apart) gathered, each dx row computed once in
 * registers from the k x k dcol rows that land on it. Scattering row by
 * row instead added kj's shifted run onto the floats kj - 1 had just
 * stored one lane off, a store the load could not take from the store
 * buffer: that stall made the scatter 14-16% of LeNet's training step.
 * Here lane iw of a 4-lane chunk reads dcol at iw - (kj - p), every chunk
 * aligned to dx, and lanes outside dcol's row are masked to +0. The reads
 * may fall outside the slice, at most k - 1 floats before a row and
 * p + W + 15 - OW after it: the caller's scratch has C2I_SLACK floats on
 * either side. The terms are added in the scatter's order, ki then kj,
 * onto +0, so dx gets the same bits; adding a masked +0 to a sum that
 * started at +0 changes nothing. */
static int col2im_gathers(const nn_conv_shape *cs)
{
    return cs->s == 1 && cs->W <= C2I_MAXW && cs->k <= C2I_MAXK && cs->p < cs->k;
}

#if NN_X86
/* Stride 2, rows of up to 8 (the big CNN's 8x8 -> 4x4 layer), on the
 * AVX2 and AVX-512 paths. The scatter (col2im_rows) ran a loop of about
 * four strided scalar adds per kernel tap, output row and channel: 2.5%
 * of a training step. Here each dx row is one vector summed in registers:
 * for each kernel row ki whose output row oh lands on it, and each kernel
 * column kj, lane iw takes dcol's (oh, (iw + p - kj) / 2) by a permute,
 * lanes of the other parity or outside the map masked to +0. The terms
 * are added in the scatter's order (ki, then kj) onto +0, so dx gets the
 * same bits (see col2im_gathers). Reads up to 7 floats past a dcol row's
 * output row: within C2I_SLACK. */
static int col2im_gathers_s2(const nn_conv_shape *cs)
{
    const int path = nn_gemm_get_path();
    return (path == NN_GEMM_PATH_AVX2 || path == NN_GEMM_PATH_AVX512) && cs->s == 2 && cs->W <= 8 &&
           cs->OW <= 8 && cs->k <= C2I_MAXK && cs->p < cs->k;
}

__attribute__((target("avx2"))) static void col2im_gather_s2(float *dx, const float *dcol,
                                                             size_t ld, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, p = cs->p;
    const int OH = cs->OH, OW = cs->OW;
    __m256i idx[C2I_MAXK];
    __m256 msk[C2I_MAXK];
    for (int kj = 0; kj < k; kj++) {
        int32_t ii[8], mm[8];
        for (int l = 0; l < 8; l++) {
            const int j = l + p - kj, ok = l < W && j >= 0 && j % 2 == 0 && j / 2 < OW;
            ii[l] = ok ? j / 2 : 0;
            mm[l] = ok ? -1 : 0;
        }
        idx[kj] = _mm256_loadu_si256((const __m256i *)ii);
        msk[kj] = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)mm));
    }
    const __m256i wm =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(W), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int c = 0; c < C; c++)
        for (int ih = 0; ih < H; ih++) {
            __m256 acc = _mm256_setzero_ps();
            for (int ki = 0; ki < k; ki++) {
                const int t = ih + p - ki;
                if (t < 0 || t % 2 || t / 2 >= OH) continue;
                const float *r = dcol + ((size_t)(c * k + ki) * k) * ld + (size_t)(t / 2) * OW;
                for (int kj = 0; kj < k; kj++)
                    acc = _mm256_add_ps(
                        acc, _mm256_and_ps(_mm256_permutevar8x32_ps(
                                               _mm256_loadu_ps(r + (size_t)kj * ld), idx[kj]),
                                           msk[kj]));
            }
            _mm256_maskstore_ps(dx + ((size_t)c * H + ih) * W, wm, acc);
        }
}
#endif

#if NN_X86
/* col2im_gather for rows of up to 16 (LeNet's second layer: 14): a row is
 * one vector, each term one masked load (the lanes outside dcol's row
 * are +0 and not read), a quarter of the 4-lane chunks' operations. The
 * same terms in the same order: the same bits. */
__attribute__((target("avx512f"))) static void col2im_gather16(float *dx, const float *dcol,
                                                               size_t ld, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, p = cs->p;
    const int OH = cs->OH, OW = cs->OW;
    __mmask16 mask[C2I_MAXK];
    for (int kj = 0; kj < k; kj++) {
        unsigned m = 0;
        for (int l = 0; l < W; l++) {
            const int j = l - (kj - p);
            if (j >= 0 && j < OW) m |= 1u << l;
        }
        mask[kj] = (__mmask16)m;
    }
    const __mmask16 wm = (__mmask16)((1u << W) - 1u);
    /* Four rows at a time: four chains of adds, not one. A row with no
     * dcol row at this ki (outside [0, OH)) reads zeros, staying put. */
    static const float zeros[16] __attribute__((aligned(64)));
    for (int c = 0; c < C; c++)
        for (int ih0 = 0; ih0 < H; ih0 += 4) {
            __m512 a[4];
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) a[r] = _mm512_setzero_ps();
            for (int ki = 0; ki < k; ki++) {
                const float *sr[4];
                ptrdiff_t step[4];
                _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
                {
                    const int oh = ih0 + r + p - ki, in = ih0 + r < H && oh >= 0 && oh < OH;
                    sr[r] = in ? dcol + ((size_t)(c * k + ki) * k) * ld + (ptrdiff_t)oh * OW + p
                               : zeros;
                    step[r] = in ? (ptrdiff_t)ld - 1 : 0;
                }
                for (int kj = 0; kj < k; kj++) {
                    const __mmask16 m = mask[kj];
                    _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
                    {
                        a[r] = _mm512_add_ps(a[r], _mm512_maskz_loadu_ps(m, sr[r]));
                        sr[r] += step[r];
                    }
                }
            }
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) if (ih0 + r < H)
                _mm512_mask_storeu_ps(dx + ((size_t)c * H + ih0 + r) * W, wm, a[r]);
        }
}
#endif

static void col2im_gather(float *dx, const float *dcol, size_t ld, const nn_conv_shape *cs)
{
#if NN_X86
    if (nn_gemm_get_path() == NN_GEMM_PATH_AVX512 && cs->W <= 16) {
        col2im_gather16(dx, dcol, ld, cs);
        return;
    }
#endif
    typedef float v4f __attribute__((vector_size(16)));
    typedef int v4i __attribute__((vector_size(16)));
    enum { NQ = C2I_MAXW / 4 };
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, p = cs->p;
    const int OH = cs->OH, OW = cs->OW, nq = (W + 3) / 4;
    const int nq4 = (nq + 3) / 4 * 4; /* chunks a row computes; the extra ones masked */
    v4i mask[C2I_MAXK][NQ];
    for (int kj = 0; kj < k; kj++)
        for (int q = 0; q < nq4; q++)
            for (int l = 0; l < 4; l++) {
                int j = 4 * q + l - (kj - p);
                mask[kj][q][l] = 4 * q + l < W && j >= 0 && j < OW ? -1 : 0;
            }
    for (int c = 0; c < C; c++)
        for (int ih = 0; ih < H; ih++) {
            float *xr = dx + ((size_t)c * H + ih) * W;
            /* Four chunks at a time, in registers: four chains of adds. */
            for (int q0 = 0; q0 < nq4; q0 += 4) {
                v4f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                for (int ki = 0; ki < k; ki++) {
                    const int oh = ih + p - ki;
                    if (oh < 0 || oh >= OH) continue;
                    for (int kj = 0; kj < k; kj++) {
                        const float *sr = dcol + ((size_t)(c * k + ki) * k + kj) * ld +
                                          (ptrdiff_t)oh * OW - (kj - p) + 4 * q0;
                        const v4i *m = mask[kj] + q0;
                        v4f v0, v1, v2, v3;
                        memcpy(&v0, sr, 16);
                        memcpy(&v1, sr + 4, 16);
                        memcpy(&v2, sr + 8, 16);
                        memcpy(&v3, sr + 12, 16);
                        a0 += (v4f)((v4i)v0 & m[0]);
                        a1 += (v4f)((v4i)v1 & m[1]);
                        a2 += (v4f)((v4i)v2 & m[2]);
                        a3 += (v4f)((v4i)v3 & m[3]);
                    }
                }
                const v4f a[4] = {a0, a1, a2, a3};
                for (int b = 0; b < 4; b++) {
                    int iw = 4 * (q0 + b), n = W - iw < 4 ? W - iw : 4;
                    if (n == 4)
                        memcpy(xr + iw, &a[b], 16);
                    else
                        for (int l = 0; l < n; l++) xr[iw + l] = a[b][l];
                }
            }
        }
}

/* dx [C,H,W] += scatter of dcol [K, P] (rows ld apart), without per-element
 * bounds checks: the valid output columns of each kernel column are a range. */
static void col2im_rows(float *dx, const float *dcol, size_t ld, const nn_conv_shape *cs)
{
    const int C = cs->C, H = cs->H, W = cs->W, k = cs->k, s = cs->s, p = cs->p;
    const int OH = cs->OH, OW = cs->OW;
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                int lo = p - kj > 0 ? (p - kj + s - 1) / s : 0;
                int hi = (W - 1 + p - kj) >= 0 ? (W - 1 + p - kj) / s + 1 : 0;
                if (hi > OW) hi = OW;
                const float *src = dcol + ((size_t)(c * k + ki) * k + kj) * ld;
                float *xc = dx + (size_t)c * H * W;
                const int off = kj - p;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= H) continue;
                    const float *sr = src + (size_t)oh * OW;
                    float *xr = xc + (size_t)ih * W;
                    if (s == 1)
                        add_to(xr + off + lo, sr + lo, hi - lo);
                    else
                        for (int ow = lo; ow < hi; ow++) xr[ow * s + off] += sr[ow];
                }
            }
}

/* The weight gradient's kernel for cs, in order of preference: the first
 * layer's direct one, output channels as lanes, shifted rows, or the
 * GEMM over packed im2col panels (the only one that reads dy transposed);
 * DW_NONE where the caller wants none. */
enum dw_kind { DW_NONE, DW_C1, DW_LANES, DW_SHIFTED, DW_PACKED };

static enum dw_kind dw_kind(const nn_conv_shape *cs)
{
    return c1_fits(cs) ? DW_C1 : ocdw_fits(cs) ? DW_LANES : dw_shifted(cs) ? DW_SHIFTED : DW_PACKED;
}

void nn_conv2d_backward_n(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, const nn_conv_shape *cs, int g, float *scratch)
{
    const size_t P = (size_t)cs->OH * cs->OW, K = (size_t)cs->C * cs->k * cs->k;
    const size_t nin = (size_t)cs->C * cs->H * cs->W, ld = P * g;
    const int O = cs->O, C = cs->C, k = cs->k;
    float *dyt = scratch, *xp = dyt + (size_t)O * ld;
    float *rest = xp + padded_size(g, C, cs->H, cs->W, cs->p);
    /* The bias gradient, image by image from dy as it is (the same bits
     * whether or not the input gradient is wanted). dy [g, O, P] -> dyt
     * [O, g*P] only for the products that read dy channel by channel
     * across the group (the packed weight gradient, the input gradient by
     * w^T dy): the direct weight gradients read dy in place, so a first
     * layer skips the copy. */
    for (int o = 0; dw && o < O; o++) {
        float sum = 0.0f;
        for (int i = 0; i < g; i++) sum += sum8(dy + ((size_t)i * O + o) * P, P);
        db[o] += sum;
    }
    const enum dw_kind dk = dw ? dw_kind(cs) : DW_NONE;
    if (dk == DW_PACKED || (dx && !dx_as_conv(cs))) to_channel_major(dyt, dy, g, O, P);
    switch (dk) {
    case DW_NONE: break;
    case DW_C1: conv_dw_c1(dw, dy, x, cs, g, xp); break;
    case DW_LANES: conv_dw_oc(dw, dy, x, cs, g, xp, rest); break;
    case DW_SHIFTED: conv_dw_shifted(dw, dy, x, cs, g, xp); break;
    case DW_PACKED: {
        struct conv_src cx;
        conv_src_init(&cx, pad_images(xp, x, g, C, cs->H, cs->W, cs->p), C, cs->H, cs->W, cs->p, k,
                      cs->s, cs->OH, cs->OW);
        /* dw[O,K] += dyt[O, gP] im2col^T[gP, K] */
        nn_gemm_packed(0, O, (int)K, (int)ld, 1.0f, dyt, (int)ld, pack_dw, &cx, 1.0f, dw, (int)K);
        break;
    }
    }
    if (!dx) return;
    if (dx_as_conv(cs)) {
        /* Stride 1: dx is the convolution of dy, zero-bordered by k-1-p,
         * with the kernels flipped and in/out channels swapped. */
        const int q = k - 1 - cs->p, HW = cs->H * cs->W;
        nn_conv_shape dcs = dx_shape(cs);
        const int shifted = shifted_pays(&dcs, g);
        /* Shifted: [wf | its scratch]; else [dy bordered | wf | out]. */
        float *dyp = rest, *wf = shifted ? rest : dyp + padded_size(g, O, cs->OH, cs->OW, q),
              *out = wf + (size_t)O * K;
        for (int o = 0; o < O; o++)
            for (int c = 0; c < C; c++)
                for (int ki = 0; ki < k; ki++)
                    for (int kj = 0; kj < k; kj++)
                        wf[(((size_t)c * O + o) * k + ki) * k + kj] =
                            w[(((size_t)o * C + c) * k + k - 1 - ki) * k + k - 1 - kj];
        if (shifted) {
            conv_forward_shifted(dx, dy, wf, NULL, &dcs, g, out, 0);
            return;
        }
        struct conv_src cd;
        conv_src_init(&cd, pad_images(dyp, dy, g, O, cs->OH, cs->OW, q), O, cs->OH, cs->OW, q, k, 1,
                      cs->H, cs->W);
        /* Only groups get here (one image is always shifted): [C, g*HW]
         * back to [g, C, HW]. */
        const size_t ldx = (size_t)g * HW;
        nn_gemm_packed(0, C, (int)ldx, O * k * k, 1.0f, wf, O * k * k, pack_fwd, &cd, 0.0f, out,
                       (int)ldx);
        for (int i = 0; i < g; i++)
            for (int c = 0; c < C; c++)
                memcpy(dx + i * nin + (size_t)c * HW, out + (size_t)c * ldx + (size_t)i * HW,
                       sizeof(float) * HW);
        return;
    }
    /* Otherwise dcol[K, gP] = w^T dyt, scattered back onto the images, a
     * few images at a time: the whole group's dcol (13 MB for the big
     * CNN's 5x5 stride-2 layer) would be written to memory and read back;
     * a slice of DCOL_FLOATS stays in L2. */
    float *dcol = rest + C2I_SLACK;
    const int gather = col2im_gathers(cs);
#if NN_X86
    const int gather_s2 = !gather && col2im_gathers_s2(cs);
#else
    const int gather_s2 = 0;
#endif
    if (!gather && !gather_s2) memset(dx, 0, sizeof(float) * nin * g);
    const int step = dcol_images(K, P, g);
    for (int i0 = 0; i0 < g; i0 += step) {
        int n = g - i0 < step ? g - i0 : step;
        size_t ls = (size_t)n * P;
        nn_gemm(1, 0, (int)K, (int)ls, O, 1.0f, w, (int)K, dyt + (size_t)i0 * P, (int)ld, 0.0f,
                dcol, (int)ls);
        for (int i = 0; i < n; i++)
            if (gather) col2im_gather(dx + (i0 + i) * nin, dcol + i * P, ls, cs);
#if NN_X86
            else if (gather_s2)
                col2im_gather_s2(dx + (i0 + i) * nin, dcol + i * P, ls, cs);
#endif
            else
                col2im_rows(dx + (i0 + i) * nin, dcol + i * P, ls, cs);
    }
}
