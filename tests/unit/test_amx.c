/* test_amx.c - BF16 convolution chains on AMX (nn/amx.h) against the
 * direct reference, and the net's BF16 plan.
 *
 * Error bound. A chain rounds its input and weights to bf16 (8 significant
 * bits), and each layer's output once more before the next layer reads
 * it; a product of two bf16 values is exact in fp32, and the tile unit
 * sums the products in fp32. So each layer is checked on its own: the
 * reference rounds the same inputs and weights to bf16 (its own rounding,
 * not nn/amx.c's) and convolves them in double (nn_conv2d_forward_ref).
 * What remains between the two is the fp32 summation of K = C k k
 * products and the bias: at most gamma(K + 1) * m per output (tol.h, m
 * the same sum over absolute values), plus the reference's own rounding.
 * A layer's input, for the reference, is the output of the chain cut after
 * the layer before: the same fp32 sums the whole chain rounds to bf16 for
 * the next layer. A dropped, doubled or misplaced product (a wrong tap, a
 * wrong row of a tile) moves an output by about one product, |w| |x|:
 * hundreds of times the bound at these depths.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nn/amx.h"
#include "nn/conv.h"
#include "nn/ensemble.h"
#include "nn/gemm.h"
#include "nn/net.h"
#include "nn/rng.h"
#include "tol.h"

#define UB 0x1p-8

static float bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static void fill(float *v, size_t n, nn_rng *r, float scale)
{
    for (size_t i = 0; i < n; i++) v[i] = (nn_rng_uniform(r) * 2.0f - 1.0f) * scale;
}

static nn_conv_shape shape(int C, int H, int W, int O, int k, int s, int p)
{
    nn_conv_shape cs = {.C = C, .H = H, .W = W, .O = O, .k = k, .s = s, .p = p};
    cs.OH = (H + 2 * p - k) / s + 1;
    cs.OW = (W + 2 * p - k) / s + 1;
    return cs;
}

/* Runs every prefix of the chain (layers 0..j) on n images through
 * nn_amx_forward and checks the prefix's last layer against the reference
 * fed with what the longer chain's next layer reads: the prefix's output
 * rounded to bf16 (the same fp32 sums, rounded once). Each layer is so
 * checked on its own, to gamma(K + 1) (see the top). Returns the largest
 * |difference| / bound seen. */
static double check_chain(const nn_amx_layer *L, int nl, int n, const float *x)
{
    char err[256];
    double worst = 0.0;
    const nn_conv_shape *f = &L[0].cs;
    const size_t in0 = (size_t)f->C * f->H * f->W;
    float *prev = NULL; /* layer j - 1's output, n images */
    for (int j = 0; j < nl; j++) {
        const nn_conv_shape *cs = &L[j].cs;
        nn_amx *a = nn_amx_create(L, j + 1, err, sizeof err);
        assert_non_null(a);
        size_t sz = (nn_amx_scratch_size(a) + 63) / 64 * 64;
        void *sc = aligned_alloc(64, sz);
        assert_non_null(sc);
        memset(sc, 0, sz);
        const size_t ni = (size_t)cs->C * cs->H * cs->W, no = (size_t)cs->O * cs->OH * cs->OW;
        const size_t nw = (size_t)cs->O * cs->C * cs->k * cs->k;
        float *y = malloc(sizeof(float) * no * n);
        float *w = malloc(sizeof(float) * nw), *aw = malloc(sizeof(float) * nw);
        float *ab = malloc(sizeof(float) * cs->O), *r = malloc(sizeof(float) * ni);
        float *ar = malloc(sizeof(float) * ni), *yr = malloc(sizeof(float) * no);
        float *m = malloc(sizeof(float) * no);
        assert_true(y && w && aw && ab && r && ar && yr && m);
        nn_amx_forward(a, x, y, n, sc);
        for (size_t i = 0; i < nw; i++) {
            w[i] = bf16_round(L[j].w[i]);
            aw[i] = fabsf(w[i]);
        }
        for (int o = 0; o < cs->O; o++) ab[o] = fabsf(L[j].b[o]);
        const double g = tol_gamma((double)cs->C * cs->k * cs->k + 1) + TOL_U;
        for (int b = 0; b < n; b++) {
            for (size_t i = 0; i < ni; i++) {
                r[i] = bf16_round(j ? prev[b * ni + i] : x[b * in0 + i]);
                ar[i] = fabsf(r[i]);
            }
            nn_conv2d_forward_ref(yr, r, w, L[j].b, cs);
            nn_conv2d_forward_ref(m, ar, aw, ab, cs);
            for (size_t i = 0; i < no; i++) {
                float want = yr[i], got = y[b * no + i];
                if (L[j].relu && !(want > 0.0f)) want = 0.0f;
                double bound = g * m[i] + 0x1p-100, diff = fabs((double)got - want);
                if (diff / bound > worst) worst = diff / bound;
                if (!(diff <= bound))
                    fail_msg("layer %d image %d output %zu: %.9g, reference %.9g, bound %.3g", j, b,
                             i, got, want, bound);
            }
        }
        free(w), free(aw), free(ab), free(r), free(ar), free(yr), free(m);
        free(prev);
        prev = y;
        free(sc);
        nn_amx_free(a);
    }
    free(prev);
    return worst;
}

struct chain {
    nn_amx_layer L[8];
    float *w[8], *b[8];
    int n;
};

static void chain_add(struct chain *c, nn_conv_shape cs, int relu, nn_rng *r)
{
    size_t nw = (size_t)cs.O * cs.C * cs.k * cs.k;
    float *w = malloc(sizeof(float) * nw), *b = malloc(sizeof(float) * cs.O);
    assert_true(w && b);
    fill(w, nw, r, 1.0f / sqrtf((float)cs.C * cs.k * cs.k));
    fill(b, cs.O, r, 0.1f);
    c->w[c->n] = w;
    c->b[c->n] = b;
    c->L[c->n] = (nn_amx_layer){.cs = cs, .w = w, .b = b, .relu = relu};
    c->n++;
}

static void chain_free(struct chain *c)
{
    for (int i = 0; i < c->n; i++) free(c->w[i]), free(c->b[i]);
    c->n = 0;
}

static int setup(void **state)
{
    (void)state;
    return 0;
}

/* The big CNN's seven convolutions (at its shapes), and two images. */
static void test_amx_cnn_chain(void **state)
{
    (void)state;
    if (!nn_amx_supported()) skip();
    nn_rng r;
    nn_rng_seed(&r, 11);
    struct chain c = {.n = 0};
    chain_add(&c, shape(1, 28, 28, 32, 3, 1, 0), 1, &r);
    chain_add(&c, shape(32, 26, 26, 32, 3, 1, 0), 1, &r);
    chain_add(&c, shape(32, 24, 24, 32, 5, 2, 2), 1, &r);
    chain_add(&c, shape(32, 12, 12, 64, 3, 1, 0), 1, &r);
    chain_add(&c, shape(64, 10, 10, 64, 3, 1, 0), 1, &r);
    chain_add(&c, shape(64, 8, 8, 64, 5, 2, 2), 1, &r);
    chain_add(&c, shape(64, 4, 4, 128, 4, 1, 0), 0, &r);
    float x[2 * 28 * 28];
    fill(x, 2 * 28 * 28, &r, 2.0f);
    check_chain(c.L, c.n, 2, x);
    chain_free(&c);
}

/* Odd shapes: a first layer of 3 channels with padding, output channels
 * not a multiple of 32 at the end, stride 3 (a small map: gathered), a
 * map narrower than a tile, maps of 4 positions or fewer, and no ReLU in
 * the middle (negative values cross). */
static void test_amx_odd_shapes(void **state)
{
    (void)state;
    if (!nn_amx_supported()) skip();
    nn_rng r;
    nn_rng_seed(&r, 12);
    struct chain c = {.n = 0};
    chain_add(&c, shape(3, 13, 11, 32, 3, 1, 1), 0, &r);
    chain_add(&c, shape(32, 13, 11, 64, 2, 3, 1), 1, &r);
    chain_add(&c, shape(64, 5, 4, 32, 3, 1, 2), 1, &r);
    chain_add(&c, shape(32, 7, 6, 10, 1, 1, 0), 0, &r);
    float x[3 * 3 * 13 * 11];
    fill(x, 3 * 3 * 13 * 11, &r, 1.0f);
    check_chain(c.L, c.n, 3, x);
    chain_free(&c);
    /* Maps of 4 positions and fewer (dot products, not tiles), one in
     * the middle of the chain. */
    chain_add(&c, shape(1, 9, 9, 32, 3, 1, 0), 1, &r);
    chain_add(&c, shape(32, 7, 7, 64, 3, 2, 0), 0, &r);
    chain_add(&c, shape(64, 3, 3, 32, 2, 1, 0), 1, &r);
    chain_add(&c, shape(32, 2, 2, 48, 2, 1, 0), 0, &r);
    check_chain(c.L, c.n, 2, x);
    chain_free(&c);
    /* Stride 2 over an odd map (26 + 4 = 30 wide, 13 out). */
    chain_add(&c, shape(1, 28, 28, 32, 3, 1, 0), 1, &r);
    chain_add(&c, shape(32, 26, 26, 32, 5, 2, 2), 1, &r);
    chain_add(&c, shape(32, 13, 13, 64, 3, 1, 0), 1, &r);
    check_chain(c.L, c.n, 1, x);
    chain_free(&c);
}

/* The bound has teeth: one weight changed by one product's size shows. */
static void test_amx_bound_catches(void **state)
{
    (void)state;
    if (!nn_amx_supported()) skip();
    nn_rng r;
    nn_rng_seed(&r, 13);
    struct chain c = {.n = 0};
    chain_add(&c, shape(1, 12, 12, 32, 3, 1, 0), 1, &r);
    chain_add(&c, shape(32, 10, 10, 32, 3, 1, 0), 0, &r);
    float x[12 * 12];
    fill(x, 12 * 12, &r, 1.0f);
    assert_true(check_chain(c.L, c.n, 1, x) <= 1.0);
    /* The reference sees the true weights; the chain one tap moved. */
    float *w2 = malloc(sizeof(float) * 32 * 32 * 9);
    assert_non_null(w2);
    memcpy(w2, c.w[1], sizeof(float) * 32 * 32 * 9);
    w2[5 * 32 * 9 + 7 * 9 + 4] += 1.0f / sqrtf(32 * 9);
    nn_amx_layer moved[2] = {c.L[0], c.L[1]};
    moved[1].w = w2;
    char err[256];
    nn_amx *a = nn_amx_create(moved, 2, err, sizeof err);
    assert_non_null(a);
    size_t sz = (nn_amx_scratch_size(a) + 63) / 64 * 64;
    void *sc = aligned_alloc(64, sz);
    assert_non_null(sc);
    memset(sc, 0, sz);
    float y1[32 * 8 * 8], y2[32 * 8 * 8];
    nn_amx_forward(a, x, y2, 1, sc);
    nn_amx_free(a);
    a = nn_amx_create(c.L, 2, err, sizeof err);
    memset(sc, 0, sz);
    nn_amx_forward(a, x, y1, 1, sc);
    nn_amx_free(a);
    free(sc);
    /* Output channel 5 changes, by about |x| / sqrt(288) at each position. */
    double most = 0.0;
    for (int i = 0; i < 64; i++) most = fmax(most, fabs((double)y1[5 * 64 + i] - y2[5 * 64 + i]));
    assert_true(most > 0.01);
    for (int o = 0; o < 32; o++)
        if (o != 5)
            for (int i = 0; i < 64; i++) assert_true(y1[o * 64 + i] == y2[o * 64 + i]);
    free(w2);
    chain_free(&c);
}

static void test_amx_refuses(void **state)
{
    (void)state;
    char err[256] = "";
    nn_rng r;
    nn_rng_seed(&r, 14);
    struct chain c = {.n = 0};
    chain_add(&c, shape(1, 12, 12, 16, 3, 1, 0), 1, &r);
    chain_add(&c, shape(16, 10, 10, 32, 3, 1, 0), 0, &r); /* C not a multiple of 32 */
    assert_null(nn_amx_create(c.L, 2, err, sizeof err));
    assert_non_null(strstr(err, "layer 1"));
    assert_null(nn_amx_create(c.L, 0, err, sizeof err));
    nn_conv_shape wide = shape(64, 12, 12, 32, 5, 1, 0); /* 1600 > 1024 deep */
    assert_false(nn_amx_first_fits(&wide));
    chain_free(&c);
}

/* Precision: names round-trip, bf16 only where AMX runs, and a net's plan
 * takes the chain only under bf16; its answers stay within the chain's
 * bound of fp32 and argmax agrees on these images. */
static void test_precision_plan(void **state)
{
    (void)state;
    assert_int_equal(nn_precision_parse("fp32"), NN_PREC_FP32);
    assert_int_equal(nn_precision_parse("bf16"), NN_PREC_BF16);
    assert_int_equal(nn_precision_parse("fp16"), -1);
    assert_int_equal(nn_precision_parse(NULL), -1);
    assert_string_equal(nn_precision_name(NN_PREC_BF16), "bf16");
    assert_int_equal(nn_precision_set(7), -1);
    assert_int_equal(nn_precision_get(), NN_PREC_FP32);
    if (!nn_amx_supported()) {
        assert_int_equal(nn_precision_set(NN_PREC_BF16), -1);
        assert_int_equal(nn_precision_get(), NN_PREC_FP32);
        skip();
    }
    char err[256];
    const char *arch = "[{\"type\":\"conv2d\",\"out\":32,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"conv2d\",\"out\":32,\"k\":5,\"stride\":2,\"pad\":2},"
                       "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.4},"
                       "{\"type\":\"conv2d\",\"out\":64,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    nn_layer layers[NN_MAX_LAYERS];
    int nl;
    assert_int_equal(nn_arch_parse(arch, layers, &nl, err, sizeof err), 0);
    nn_net *net = nn_net_create(layers, nl, 1, 28, 28, NULL, err, sizeof err);
    assert_non_null(net);
    nn_net_init(net, 5);
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0);
    assert_int_equal(nn_net_plan_bf16_layers(net), 0);
    enum { N = 5 };
    float x[N * 28 * 28], p32[N * 10], p16[N * 10];
    nn_rng r;
    nn_rng_seed(&r, 15);
    for (int i = 0; i < N * 28 * 28; i++) x[i] = nn_rng_uniform(&r);
    nn_ws *ws = nn_ws_create(net, N, 0);
    assert_non_null(ws);
    nn_net_forward(net, ws, x, N, p32, NULL);
    nn_ws_free(ws);
    assert_int_equal(nn_precision_set(NN_PREC_BF16), 0);
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0);
    assert_int_equal(nn_net_plan_bf16_layers(net), 3);
    ws = nn_ws_create(net, N, 0);
    assert_non_null(ws);
    nn_net_forward(net, ws, x, N, p16, NULL);
    /* One image at a time answers as the batch (the chain goes image by
     * image; the dense layer after it sums in another order at batch 1). */
    float one[10];
    for (int b = 0; b < N; b++) {
        nn_net_forward(net, ws, x + b * 28 * 28, 1, one, NULL);
        for (int j = 0; j < 10; j++) assert_true(fabsf(one[j] - p16[b * 10 + j]) < 1e-6f);
    }
    nn_ws_free(ws);
    double most = 0.0;
    for (int i = 0; i < N * 10; i++) most = fmax(most, fabs((double)p16[i] - p32[i]));
    /* Not equal (bf16 did run), and close (it ran the same net). */
    assert_true(most > 0.0);
    assert_true(most < 0.05);
    assert_int_equal(nn_precision_set(NN_PREC_FP32), 0);
    assert_int_equal(nn_net_plan(net, err, sizeof err), 0);
    assert_int_equal(nn_net_plan_bf16_layers(net), 0);
    nn_net_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amx_cnn_chain),     cmocka_unit_test(test_amx_odd_shapes),
        cmocka_unit_test(test_amx_bound_catches), cmocka_unit_test(test_amx_refuses),
        cmocka_unit_test(test_precision_plan),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
