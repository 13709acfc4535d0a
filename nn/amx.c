/* amx.c - see amx.h: convolution chains in bf16 on AMX tiles.
 *
 * Per layer and image, output positions go 32 at a time (two A tiles of
 * 16) and output channels 32 at a time (two B tiles of 16): four C tiles
 * of 16 x 16 fp32 sums stay in tile registers over the layer's whole
 * depth (k * k taps times C / 32 channel groups), then bias, ReLU and the
 * rounding to bf16 go over them with AVX-512 on the way to the next
 * layer's input. Tile registers: C 0-3, A 4-5, B 6-7.
 */
#include "nn/amx.h"
#include "nn/err.h"
#include "nn/gemm.h"
#include "nn/simd.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if NN_X86 && defined(__linux__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define AMX_BUILD 1
#else
#define AMX_BUILD 0
#endif

#define AMX_MAX_LAYERS 16
#define AMX_FIRST_K_MAX 1024
#define TILE_ELEMS 512 /* bf16 values in one 16 x 64-byte tile */

/* How a layer reads its A rows (the inputs of 16 output positions). */
enum {
    MODE_FIRST,  /* the chain's first layer: an im2col of the bf16 image,
                  * depth in (c, ki, kj) order, padded to 32               */
    MODE_DIRECT, /* tile loads straight from the padded HWC input         */
    MODE_GATHER, /* an im2col of the HWC input, depth in (ki, kj, c) order:
                  * small maps, where DIRECT would compute mostly columns
                  * that are never stored                                 */
    MODE_VEC     /* at most VEC_MAX positions: AVX-512 BF16 dot products, no
                  * tiles (a tile of 16 rows would be nearly all waste)   */
};
#define VEC_MAX 4

struct amx_layer {
    nn_conv_shape cs;
    int relu, mode;
    int K, Kp;      /* depth: C k k, and rounded up to 32                  */
    int Op;         /* O rounded up to 32                                  */
    int nt;         /* 32-deep steps, Kp / 32                              */
    int Wp;         /* padded input width, W + 2p                          */
    int Wd;         /* positions a row of outputs takes (blk_row)          */
    int Q, Qp;      /* output positions computed, OH Wd; rounded up to 32  */
    size_t hwc_off; /* scratch byte offset of the padded HWC bf16 input
                       * (the layer before writes it; not MODE_FIRST)      */
    size_t a_off;   /* MODE_FIRST, MODE_GATHER: the [Qp, Kp] A matrix      */
    size_t a_step;  /* bf16 elements between A rows (the load's stride)    */
    size_t *aoff;   /* MODE_DIRECT, MODE_VEC: step t's offset in elements
                       * from a position's first pixel                     */
    uint16_t *bw;   /* weight tiles [Op / 16][nt][16][32], bf16 pairs       */
    float *bias;    /* [Op], zero past O                                   */
};

struct nn_amx {
    int n;
    struct amx_layer L[AMX_MAX_LAYERS];
    size_t x_off;   /* scratch byte offset of the input image in bf16 */
    size_t scratch; /* bytes in all */
};

/* ---- precision ------------------------------------------------------------- */

static _Atomic int precision = NN_PREC_FP32;

int nn_precision_set(int prec)
{
    if (prec != NN_PREC_FP32 && prec != NN_PREC_BF16) return -1;
    if (prec == NN_PREC_BF16 && !nn_amx_supported()) return -1;
    atomic_store(&precision, prec);
    return 0;
}

int nn_precision_get(void) { return atomic_load(&precision); }

const char *nn_precision_name(int prec) { return prec == NN_PREC_BF16 ? "bf16" : "fp32"; }

int nn_precision_parse(const char *s)
{
    if (s && strcmp(s, "fp32") == 0) return NN_PREC_FP32;
    if (s && strcmp(s, "bf16") == 0) return NN_PREC_BF16;
    return -1;
}

int nn_precision_init_env(char *err, size_t errlen)
{
    const char *v = getenv(NN_PRECISION_ENV);
    if (v == NULL || *v == '\0') v = "fp32";
    int p = nn_precision_parse(v);
    if (p < 0)
        return nn_errf(err, errlen, "%s=%s: unknown precision (use fp32 or bf16)", NN_PRECISION_ENV,
                       v);
    if (nn_precision_set(p))
        return nn_errf(err, errlen,
                       "%s=%s: needs AMX-BF16 (this CPU, its kernel or NN_ISA rules it out)",
                       NN_PRECISION_ENV, v);
    return 0;
}

/* ---- support --------------------------------------------------------------- */

#if AMX_BUILD
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_cpu;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
    const int avx512 = (b >> 16) & (b >> 30) & (b >> 31) & 1; /* F, BW, VL */
    unsigned a1 = 0, b1, c1, d1;
    if (a >= 1) __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    const int avx512bf16 = (a1 >> 5) & 1;
    if (!(tile && bf16 && avx512 && avx512bf16)) return;
    /* Linux hands out the 8 KiB tile state only to processes that ask. */
    amx_cpu = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int nn_amx_supported(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_cpu && nn_gemm_path_supported(NN_GEMM_PATH_AVX512);
}
#else
int nn_amx_supported(void) { return 0; }
#endif

/* ---- plan ------------------------------------------------------------------ */

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                    /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static size_t up(size_t v, size_t m) { return (v + m - 1) / m * m; }

int nn_amx_first_fits(const nn_conv_shape *cs)
{
    return cs->C >= 1 && cs->k >= 1 && cs->s >= 1 &&
           (size_t)cs->C * cs->k * cs->k <= AMX_FIRST_K_MAX && cs->OH >= 1 && cs->OW >= 1 &&
           cs->O >= 1;
}

int nn_amx_next_fits(const nn_conv_shape *cs)
{
    return cs->C % 32 == 0 && cs->C > 0 && cs->k >= 1 && cs->s >= 1 && cs->OH >= 1 && cs->OW >= 1 &&
           cs->O >= 1;
}

void nn_amx_free(nn_amx *a)
{
    if (!a) return;
    for (int i = 0; i < a->n; i++) {
        free(a->L[i].aoff);
        free(a->L[i].bw);
        free(a->L[i].bias);
    }
    free(a);
}

/* B tile (og, t): row r holds the pairs (depth 2r, 2r + 1 of step t) of
 * the 16 output channels og * 16 + n, as bf16 [n][2]; depth past K and
 * channels past O stay zero. Depth order: (c, ki, kj) for MODE_FIRST,
 * else (ki, kj, c), the order of the HWC input's pixels. */
static void pack_weights(struct amx_layer *l, const float *w)
{
    const nn_conv_shape *cs = &l->cs;
    const int kk = cs->k * cs->k;
    for (int og = 0; og < l->Op / 16; og++)
        for (int t = 0; t < l->nt; t++) {
            uint16_t *tile = l->bw + ((size_t)og * l->nt + t) * TILE_ELEMS;
            for (int d = 0; d < 32; d++) {
                const int kx = t * 32 + d;
                if (kx >= l->K) break;
                const int c = l->mode == MODE_FIRST ? kx / kk : kx % cs->C;
                const int tap = l->mode == MODE_FIRST ? kx % kk : kx / cs->C;
                for (int n = 0; n < 16 && og * 16 + n < cs->O; n++) {
                    float v = w[((size_t)(og * 16 + n) * cs->C + c) * kk + tap];
                    tile[(d / 2) * 32 + n * 2 + (d & 1)] = to_bf16(v);
                }
            }
        }
}

/* Output positions are numbered q = oh Wd + ow; a tile takes 16 in a row
 * of q, its A rows a_step elements apart. MODE_DIRECT, stride 1: Wd is the
 * padded input's width, so position q reads pixel q (offset by the tap)
 * and a tile may run on into the next row; the columns past OW are
 * computed and never stored. Stride s > 1: (oh, ow) reads pixel
 * s (oh Wp + ow), which no single step gives across rows, so each row of
 * outputs takes Wd = OW rounded up to 16 positions and a tile stays in its
 * row. The explicit A matrices have a row per position (Wd = OW).
 * Returns position q's A row (MODE_DIRECT: its pixel). */
static size_t blk_row(const struct amx_layer *l, int q)
{
    if (l->mode != MODE_DIRECT || l->cs.s == 1) return (size_t)q;
    const int oh = q / l->Wd, ow = q - oh * l->Wd;
    return (size_t)l->cs.s * ((size_t)oh * l->Wp + ow);
}

/* The layer's geometry and mode; its scratch buffers are placed from
 * *off on, which moves past them. */
static void layer_plan(struct amx_layer *l, int first, size_t *off)
{
    const nn_conv_shape *cs = &l->cs;
    const int s = cs->s, k = cs->k;
    l->Op = (int)up((size_t)cs->O, 32);
    l->K = cs->C * k * k;
    l->Kp = (int)up((size_t)l->K, 32);
    l->nt = l->Kp / 32;
    l->Wp = cs->W + 2 * cs->p;
    const int valid = cs->OH * cs->OW;
    if (first) {
        l->mode = MODE_FIRST;
    } else if (valid <= VEC_MAX) {
        l->mode = MODE_VEC;
    } else {
        /* Gather where direct tiles would be mostly never-stored columns. */
        const int wd = s == 1 ? l->Wp : (int)up((size_t)cs->OW, 16);
        l->mode = 2 * (size_t)valid < up((size_t)cs->OH * wd, 32) ? MODE_GATHER : MODE_DIRECT;
    }
    l->Wd = l->mode != MODE_DIRECT ? cs->OW : s == 1 ? l->Wp : (int)up((size_t)cs->OW, 16);
    l->Q = cs->OH * l->Wd;
    l->Qp = (int)up((size_t)l->Q, 32);
    if (!first) {
        /* The padded input; direct tiles also read past the map, up to the
         * last blocks' last rows. */
        size_t px = (size_t)(cs->H + 2 * cs->p) * l->Wp;
        if (l->mode == MODE_DIRECT)
            for (int q = l->Qp - 32; q < l->Qp; q += 16) {
                size_t last = blk_row(l, q) + (size_t)15 * s + (size_t)(k - 1) * l->Wp + k;
                if (last > px) px = last;
            }
        l->hwc_off = *off;
        *off = up(*off + px * cs->C * 2, 64);
    }
    if (l->mode == MODE_FIRST || l->mode == MODE_GATHER) {
        l->a_off = *off;
        l->a_step = (size_t)l->Kp;
        *off = up(*off + (size_t)l->Qp * l->Kp * 2, 64);
    } else {
        l->a_step = (size_t)s * cs->C;
    }
}

nn_amx *nn_amx_create(const nn_amx_layer *layers, int n, char *err, size_t errlen)
{
    if (n < 1 || n > AMX_MAX_LAYERS) {
        nn_errf(err, errlen, "amx: %d layers (1 to %d)", n, AMX_MAX_LAYERS);
        return NULL;
    }
    nn_amx *a = calloc(1, sizeof *a);
    if (!a) {
        nn_errf(err, errlen, "amx: out of memory");
        return NULL;
    }
    size_t off = 32 * 32 * sizeof(float); /* the C tiles' fp32 landing area */
    for (int i = 0; i < n; i++) {
        struct amx_layer *l = &a->L[i];
        const nn_conv_shape *cs = &layers[i].cs;
        const nn_conv_shape *pv = i ? &layers[i - 1].cs : NULL;
        if (i == 0
                ? !nn_amx_first_fits(cs)
                : !nn_amx_next_fits(cs) || cs->C != pv->O || cs->H != pv->OH || cs->W != pv->OW) {
            nn_errf(err, errlen, "amx: layer %d does not fit the chain", i);
            nn_amx_free(a);
            return NULL;
        }
        a->n = i + 1;
        l->cs = *cs;
        l->relu = layers[i].relu != 0;
        layer_plan(l, i == 0, &off);
        if (i == 0) {
            /* The image in bf16, rounded up to whole vectors. */
            a->x_off = off;
            off = up(off + up((size_t)cs->C * cs->H * cs->W, 16) * 2, 64);
        } else {
            if (!(l->aoff = malloc(sizeof(size_t) * l->nt))) goto oom;
            const int cg = cs->C / 32;
            for (int t = 0; t < l->nt; t++) {
                const int tap = t / cg, ki = tap / cs->k, kj = tap % cs->k;
                l->aoff[t] = ((size_t)ki * l->Wp + kj) * cs->C + (size_t)(t % cg) * 32;
            }
        }
        const size_t wbytes = (size_t)l->Op / 16 * l->nt * TILE_ELEMS * 2;
        l->bw = aligned_alloc(64, wbytes);
        l->bias = calloc((size_t)l->Op, sizeof(float));
        if (!l->bw || !l->bias) goto oom;
        memset(l->bw, 0, wbytes);
        pack_weights(l, layers[i].w);
        if (layers[i].b) memcpy(l->bias, layers[i].b, sizeof(float) * cs->O);
    }
    a->scratch = off;
    return a;
oom:
    nn_errf(err, errlen, "amx: out of memory");
    nn_amx_free(a);
    return NULL;
}

size_t nn_amx_scratch_size(const nn_amx *a) { return a ? a->scratch : 0; }

/* ---- forward --------------------------------------------------------------- */

#if AMX_BUILD
#define AMX_ATTR __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bf16,avx512bw,avx512vl")))

struct tilecfg {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* The image in bf16: whole vectors, then a masked tail. */
AMX_ATTR static void image_bf16(uint16_t *d, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((void *)(d + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
        _mm256_mask_storeu_epi16(d + i, m, (__m256i)h);
    }
}

/* MODE_FIRST's A from the bf16 image xb: row q (output position) holds
 * the C k k inputs in (c, ki, kj) order; the rest of the row and the rows
 * past Q stay zero from the scratch's first zeroing. */
static void first_im2col(const struct amx_layer *l, const uint16_t *xb, uint16_t *A)
{
    const nn_conv_shape *cs = &l->cs;
    const int k = cs->k, kk = k * k;
    for (int oh = 0; oh < cs->OH; oh++)
        for (int ow = 0; ow < cs->OW; ow++) {
            uint16_t *row = A + ((size_t)oh * cs->OW + ow) * l->Kp;
            const int iw0 = ow * cs->s - cs->p;
            for (int c = 0; c < cs->C; c++)
                for (int ki = 0; ki < k; ki++) {
                    const int ih = oh * cs->s - cs->p + ki;
                    uint16_t *d = row + c * kk + ki * k;
                    if (ih < 0 || ih >= cs->H) {
                        memset(d, 0, sizeof(uint16_t) * k);
                        continue;
                    }
                    const uint16_t *src = xb + ((size_t)c * cs->H + ih) * cs->W;
                    if (iw0 >= 0 && iw0 + k <= cs->W) {
                        /* A few values: a call to memcpy costs more. */
                        for (int kj = 0; kj < k; kj++) d[kj] = src[iw0 + kj];
                        continue;
                    }
                    for (int kj = 0; kj < k; kj++) {
                        const int iw = iw0 + kj;
                        d[kj] = iw >= 0 && iw < cs->W ? src[iw] : 0;
                    }
                }
        }
}

/* MODE_GATHER's A from the padded HWC input: row q = (oh, ow) holds, tap
 * by tap, the C channels of the pixel the tap reads (one copy each). */
static void gather_im2col(const struct amx_layer *l, const uint16_t *in, uint16_t *A)
{
    const nn_conv_shape *cs = &l->cs;
    const size_t C = (size_t)cs->C;
    for (int oh = 0; oh < cs->OH; oh++)
        for (int ow = 0; ow < cs->OW; ow++) {
            uint16_t *row = A + ((size_t)oh * cs->OW + ow) * l->Kp;
            const uint16_t *px = in + ((size_t)oh * cs->s * l->Wp + (size_t)ow * cs->s) * C;
            for (int ki = 0; ki < cs->k; ki++)
                for (int kj = 0; kj < cs->k; kj++, row += C)
                    memcpy(row, px + ((size_t)ki * l->Wp + kj) * C, C * 2);
        }
}

/* Bias and ReLU over rows (16 or 32) x 32 channels of sums (tmp, rows 32
 * floats apart) from positions q0.. and channels o0..: into the next
 * layer's bf16 input (nx, with its border), or into the chain's fp32
 * output. */
AMX_ATTR static void epilogue(const struct amx_layer *l, const struct amx_layer *nx, uint8_t *sc,
                              const float *tmp, int q0, int o0, float *y, int rows)
{
    const nn_conv_shape *cs = &l->cs;
    const __m512 b0 = _mm512_loadu_ps(l->bias + o0), b1 = _mm512_loadu_ps(l->bias + o0 + 16);
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < rows; r++) {
        const int q = q0 + r;
        if (q >= l->Q) break;
        const int oh = q / l->Wd, ow = q - oh * l->Wd;
        if (ow >= cs->OW) continue;
        __m512 v0 = _mm512_add_ps(_mm512_loadu_ps(tmp + r * 32), b0);
        __m512 v1 = _mm512_add_ps(_mm512_loadu_ps(tmp + r * 32 + 16), b1);
        if (l->relu) {
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        if (nx) {
            /* nx->cs.C == O, a multiple of 32: whole vectors. */
            const int p = nx->cs.p;
            uint16_t *d = (uint16_t *)(sc + nx->hwc_off) +
                          ((size_t)(oh + p) * nx->Wp + ow + p) * nx->cs.C + o0;
            __m512bh h = _mm512_cvtne2ps_pbh(v1, v0);
            _mm512_storeu_si512((void *)d, (__m512i)h);
        } else {
            float t[32];
            _mm512_storeu_ps(t, v0);
            _mm512_storeu_ps(t + 16, v1);
            const size_t P = (size_t)cs->OH * cs->OW;
            for (int j = 0; j < 32 && o0 + j < cs->O; j++)
                y[(size_t)(o0 + j) * P + (size_t)oh * cs->OW + ow] = t[j];
        }
    }
}

/* MODE_VEC: each position's row of depth against 32 output channels at a
 * time, a broadcast pair of inputs times a B tile row per instruction
 * (the B tiles' pair layout is what VDPBF16PS reads), two sums per
 * 16 channels so the adds' latency overlaps. */
AMX_ATTR static void layer_vec(const struct amx_layer *l, const struct amx_layer *nx, uint8_t *sc,
                               float *y)
{
    const nn_conv_shape *cs = &l->cs;
    const uint16_t *in = (const uint16_t *)(sc + l->hwc_off);
    float *tmp = (float *)sc;
    const int valid = cs->OH * cs->OW;
    for (int og = 0; og < l->Op / 16; og += 2) {
        const uint16_t *b0 = l->bw + (size_t)og * l->nt * TILE_ELEMS;
        const uint16_t *b1 = b0 + (size_t)l->nt * TILE_ELEMS;
        for (int q = 0; q < valid; q++) {
            const int oh = q / cs->OW, ow = q - oh * cs->OW;
            const uint16_t *px = in + ((size_t)oh * cs->s * l->Wp + (size_t)ow * cs->s) * cs->C;
            __m512 s00 = _mm512_setzero_ps(), s01 = s00, s10 = s00, s11 = s00;
            for (int t = 0; t < l->nt; t++) {
                const uint16_t *a = px + l->aoff[t];
                const uint16_t *t0 = b0 + (size_t)t * TILE_ELEMS, *t1 = b1 + (size_t)t * TILE_ELEMS;
                for (int r = 0; r < 16; r += 2) {
                    uint32_t p0, p1;
                    memcpy(&p0, a + 2 * r, 4);
                    memcpy(&p1, a + 2 * r + 2, 4);
                    const __m512bh a0 = (__m512bh)_mm512_set1_epi32((int)p0);
                    const __m512bh a1 = (__m512bh)_mm512_set1_epi32((int)p1);
                    s00 = _mm512_dpbf16_ps(s00, a0, (__m512bh)_mm512_loadu_si512(t0 + r * 32));
                    s10 = _mm512_dpbf16_ps(s10, a0, (__m512bh)_mm512_loadu_si512(t1 + r * 32));
                    s01 = _mm512_dpbf16_ps(s01, a1, (__m512bh)_mm512_loadu_si512(t0 + r * 32 + 32));
                    s11 = _mm512_dpbf16_ps(s11, a1, (__m512bh)_mm512_loadu_si512(t1 + r * 32 + 32));
                }
            }
            _mm512_storeu_ps(tmp + q * 32, _mm512_add_ps(s00, s01));
            _mm512_storeu_ps(tmp + q * 32 + 16, _mm512_add_ps(s10, s11));
        }
        epilogue(l, nx, sc, tmp, 0, og * 16, y, valid);
    }
}

AMX_ATTR static void layer_run(const struct amx_layer *l, const struct amx_layer *nx, uint8_t *sc,
                               float *y)
{
    if (l->mode == MODE_VEC) {
        layer_vec(l, nx, sc, y);
        return;
    }
    const int explicit_a = l->mode != MODE_DIRECT;
    const uint16_t *in = (const uint16_t *)(sc + (explicit_a ? l->a_off : l->hwc_off));
    if (l->mode == MODE_GATHER)
        gather_im2col(l, (const uint16_t *)(sc + l->hwc_off), (uint16_t *)(sc + l->a_off));
    float *tmp = (float *)sc;
    /* Elements per A row index (blk_row), and bytes between a tile's rows. */
    const size_t astep = explicit_a ? l->a_step : (size_t)l->cs.C, stride = l->a_step * 2;
    for (int q0 = 0; q0 < l->Qp; q0 += 32) {
        /* A rows of positions q0.. and q0 + 16.. (blk_row). */
        const uint16_t *a = in + blk_row(l, q0) * astep;
        const uint16_t *a16 = in + blk_row(l, q0 + 16) * astep;
        for (int og = 0; og < l->Op / 16; og += 2) {
            const uint16_t *b0 = l->bw + (size_t)og * l->nt * TILE_ELEMS;
            const uint16_t *b1 = b0 + (size_t)l->nt * TILE_ELEMS;
            if (q0 + 16 >= l->Q) {
                /* The last block's second half holds no position: half
                 * the loads and multiplies (a map of 16 or fewer). */
                _tile_zero(0);
                _tile_zero(1);
                for (int t = 0; t < l->nt; t++) {
                    _tile_loadd(4, a + (explicit_a ? (size_t)t * 32 : l->aoff[t]), stride);
                    _tile_loadd(6, b0 + (size_t)t * TILE_ELEMS, 64);
                    _tile_loadd(7, b1 + (size_t)t * TILE_ELEMS, 64);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                }
                _tile_stored(0, tmp, 128);
                _tile_stored(1, tmp + 16, 128);
                epilogue(l, nx, sc, tmp, q0, og * 16, y, 16);
                continue;
            }
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int t = 0; t < l->nt; t++) {
                const size_t to = explicit_a ? (size_t)t * 32 : l->aoff[t];
                _tile_loadd(4, a + to, stride);
                _tile_loadd(5, a16 + to, stride);
                _tile_loadd(6, b0 + (size_t)t * TILE_ELEMS, 64);
                _tile_loadd(7, b1 + (size_t)t * TILE_ELEMS, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _tile_stored(0, tmp, 128);
            _tile_stored(1, tmp + 16, 128);
            _tile_stored(2, tmp + 16 * 32, 128);
            _tile_stored(3, tmp + 16 * 32 + 16, 128);
            epilogue(l, nx, sc, tmp, q0, og * 16, y, 32);
        }
    }
}

AMX_ATTR static void chain_run(const nn_amx *a, const float *x, float *y, int n, uint8_t *sc)
{
    struct tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
    const nn_conv_shape *f = &a->L[0].cs, *e = &a->L[a->n - 1].cs;
    const size_t in = (size_t)f->C * f->H * f->W, out = (size_t)e->O * e->OH * e->OW;
    for (int b = 0; b < n; b++) {
        uint16_t *xb = (uint16_t *)(sc + a->x_off);
        image_bf16(xb, x + b * in, in);
        first_im2col(&a->L[0], xb, (uint16_t *)(sc + a->L[0].a_off));
        for (int i = 0; i < a->n; i++)
            layer_run(&a->L[i], i + 1 < a->n ? &a->L[i + 1] : NULL, sc, y + b * out);
    }
    _tile_release();
}

void nn_amx_forward(const nn_amx *a, const float *x, float *y, int n, void *scratch)
{
    chain_run(a, x, y, n, scratch);
}
#else
void nn_amx_forward(const nn_amx *a, const float *x, float *y, int n, void *scratch)
{
    (void)a, (void)x, (void)y, (void)n, (void)scratch;
}
#endif
