/* test_nn.c - layers, net, weights file, optimiser and training.
 *
 * Gradient checks compare every layer's backward pass with central finite
 * differences of the loss; fast kernels are compared with the reference
 * ones; the weights file round-trips and every corruption is refused with
 * its own message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "nn/augment.h"
#include "nn/ensemble.h"
#include "nn/eval.h"
#include "nn/gemm.h"
#include "nn/idx.h"
#include "nn/layers.h"
#include "nn/net.h"
#include "nn/ood.h"
#include "nn/preset.h"
#include "nn/rng.h"
#include "nn/safetensors.h"
#include "nn/train.h"
#include "nets.h"
#include "tol.h"

/* Finite-difference check of d loss / d params and d loss / d input for a
 * net in training mode; the last m of the n images are outliers (loss
 * weight oe_weight) when m > 0, with the energy-margin loss when margins
 * (m_in, m_out) is not NULL. */
static void grad_check_loss(const char *arch, int c, int h, int w, int n, float tol, int m,
                            float oe_weight, const float *margins)
{
    nn_net *net = nets_make(arch, c, h, w, 7);
    int hw = c * h * w, k = nn_net_outputs(net);
    nn_ws *ws = nn_ws_create(net, n, 1);
    assert_non_null(ws);
    nn_ws_set_outlier_weight(ws, oe_weight);
    if (margins) nn_ws_set_energy_margins(ws, 1, margins[0], margins[1]);
    float *x = malloc(sizeof(float) * n * hw), *g = calloc(net->nparams, sizeof(float));
    float *g0 = calloc(net->nparams, sizeof(float));
    uint8_t *y = malloc(n);
    nets_fill(x, (size_t)n * hw, 3, 1.0f);
    for (int i = 0; i < n; i++) {
        x[i] = fabsf(x[i]);
        y[i] = i >= n - m ? NN_LABEL_OUTLIER : (uint8_t)(i * 7 % k);
    }
    const uint64_t seed = 99;
    const float ls = 0.1f;
    /* Training's backward skips the input gradient and the layers below
     * the first with parameters; the parameter gradients are the same bits. */
    nn_net_forward_train(net, ws, x, y, n, ls, seed, 0, NULL);
    nn_net_backward(net, ws, g0);
    assert_null(nn_ws_input_grad(ws));
    nn_ws_want_input_grad(ws, 1);
    nn_net_forward_train(net, ws, x, y, n, ls, seed, 0, NULL);
    nn_net_backward(net, ws, g);
    assert_memory_equal(g0, g, sizeof(float) * net->nparams);
    free(g0);
    float *dx = malloc(sizeof(float) * n * hw);
    memcpy(dx, nn_ws_input_grad(ws), sizeof(float) * n * hw);
    const float eps = 2e-3f;
    int checked = 0, bad = 0;
    for (size_t p = 0; p < net->nparams; p += 1 + net->nparams / 300) {
        float old = net->params[p];
        double num = 0.0, an = g[p], err = 1e9;
        /* A ReLU kink closer than eps makes the central difference wrong
         * while the gradient is right; a real error survives a smaller
         * step (seen on a batch-norm beta, kink within 2e-3). */
        for (float e = eps; e >= eps / 4 && err > tol; e /= 4) {
            net->params[p] = old + e;
            double lp = nn_net_forward_train(net, ws, x, y, n, ls, seed, 0, NULL);
            net->params[p] = old - e;
            double lm = nn_net_forward_train(net, ws, x, y, n, ls, seed, 0, NULL);
            net->params[p] = old;
            num = (lp - lm) / (2 * e);
            err = fabs(num - an) / fmax(1e-2, fabs(num) + fabs(an));
        }
        checked++;
        if (err > tol) {
            if (bad++ < 5)
                print_message("%s: param %zu analytic %.6g numeric %.6g\n", arch, p, an, num);
        }
    }
    /* Input gradient (normalised input space; the default std is 1). */
    for (int i = 0; i < n * hw; i += 1 + n * hw / 100) {
        float old = x[i];
        x[i] = old + eps;
        double lp = nn_net_forward_train(net, ws, x, y, n, ls, seed, 0, NULL);
        x[i] = old - eps;
        double lm = nn_net_forward_train(net, ws, x, y, n, ls, seed, 0, NULL);
        x[i] = old;
        double num = (lp - lm) / (2 * eps), an = dx[i];
        double err = fabs(num - an) / fmax(1e-2, fabs(num) + fabs(an));
        checked++;
        if (err > tol) {
            if (bad++ < 10)
                print_message("%s: input %d analytic %.6g numeric %.6g\n", arch, i, an, num);
        }
    }
    assert_true(checked > 20);
    assert_int_equal(bad, 0);
    free(x);
    free(g);
    free(y);
    free(dx);
    nn_ws_free(ws);
    nn_net_free(net);
}

static void grad_check(const char *arch, int c, int h, int w, int n, float tol)
{
    grad_check_loss(arch, c, h, w, n, tol, 0, 1.0f, NULL);
}

static void test_grad_dense(void **s)
{
    (void)s;
    grad_check("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":7},{\"type\":\"relu\"},"
               "{\"type\":\"dense\",\"out\":5}]",
               1, 4, 5, 3, 2e-2f);
}

static void test_grad_conv(void **s)
{
    (void)s;
    grad_check("[{\"type\":\"conv2d\",\"out\":3,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
               "{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"stride\":2,\"pad\":1},"
               "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]",
               2, 7, 7, 2, 2e-2f);
}

static void test_grad_conv_1x1(void **s)
{
    (void)s;
    grad_check("[{\"type\":\"conv2d\",\"out\":3,\"k\":1},{\"type\":\"flatten\"},"
               "{\"type\":\"dense\",\"out\":3}]",
               2, 3, 3, 2, 2e-2f);
}

static void test_grad_maxpool(void **s)
{
    (void)s;
    grad_check("[{\"type\":\"conv2d\",\"out\":2,\"k\":3},{\"type\":\"maxpool\",\"k\":2},"
               "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":3}]",
               1, 8, 8, 2, 2e-2f);
}

/* Batch norm as the first layer with parameters: it skips its input
 * gradient in training, and its own gradients must not change. */
static void test_grad_first_batchnorm(void **s)
{
    (void)s;
    grad_check("[{\"type\":\"flatten\"},{\"type\":\"batchnorm\"},{\"type\":\"dense\",\"out\":4}]",
               1, 4, 4, 4, 2e-2f);
}

static void test_grad_batchnorm(void **s)
{
    (void)s;
    grad_check(
        "[{\"type\":\"conv2d\",\"out\":3,\"k\":3},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":6},{\"type\":\"batchnorm\"},"
        "{\"type\":\"dense\",\"out\":4}]",
        1, 5, 5, 4, 3e-2f);
}

static void test_grad_dropout(void **s)
{
    (void)s;
    /* The mask is a function of the seed, so the loss is smooth in the weights. */
    grad_check(
        "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":12},{\"type\":\"dropout\",\"p\":0.4},"
        "{\"type\":\"dense\",\"out\":4}]",
        1, 3, 3, 3, 2e-2f);
}

/* Batch norms whose outputs training does not keep (recomputed for the
 * next layer's weight gradient), through a ReLU and a dropout into a
 * convolution, and through flatten and a dropout into a dense layer. */
static void test_grad_batchnorm_dropout(void **s)
{
    (void)s;
    grad_check(
        "[{\"type\":\"conv2d\",\"out\":3,\"k\":3},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"dropout\",\"p\":0.4},{\"type\":\"conv2d\",\"out\":4,\"k\":3},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"flatten\"},"
        "{\"type\":\"dropout\",\"p\":0.3},{\"type\":\"dense\",\"out\":4}]",
        1, 7, 7, 4, 3e-2f);
}

/* Outlier exposure's loss has the right gradient: some outliers in the
 * batch, and a batch of outliers only. */
static void test_grad_outliers(void **s)
{
    (void)s;
    const char *arch = "[{\"type\":\"conv2d\",\"out\":3,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":5}]";
    grad_check_loss(arch, 1, 6, 6, 5, 2e-2f, 2, 0.5f, NULL);
    grad_check_loss(arch, 1, 6, 6, 3, 2e-2f, 3, 0.5f, NULL);
}

/* The energy-margin loss's gradient: the small net's energies sit near
 * -log 5, so margins (-3, 0) put every digit and outlier on its hinge,
 * and (-1.7, -1.5) some on it and some off; digits only, outliers only. */
static void test_grad_energy_margins(void **s)
{
    (void)s;
    const char *arch = "[{\"type\":\"conv2d\",\"out\":3,\"k\":3},{\"type\":\"relu\"},"
                       "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":5}]";
    const float wide[2] = {-3.0f, 0.0f}, tight[2] = {-1.7f, -1.5f};
    grad_check_loss(arch, 1, 6, 6, 5, 2e-2f, 2, 0.5f, wide);
    grad_check_loss(arch, 1, 6, 6, 6, 2e-2f, 3, 2.0f, tight);
    grad_check_loss(arch, 1, 6, 6, 4, 2e-2f, 0, 0.5f, wide);
    grad_check_loss(arch, 1, 6, 6, 3, 2e-2f, 3, 0.5f, wide);
}

/* The energy-margin loss's value by hand (double precision from the
 * logits): digits' cross-entropy plus weight * (E - m_in)^2 above m_in,
 * weight * the outliers' mean (m_out - E)^2 below m_out; off, the
 * uniform target's loss comes back. */
static void test_energy_margin_loss(void **s)
{
    (void)s;
    nn_net *net = nets_make("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]", 1, 2, 2, 5);
    nn_ws *ws = nn_ws_create(net, 4, 1);
    const float lw = 0.3f, m_in = -1.8f, m_out = 1.0f;
    nn_ws_set_outlier_weight(ws, lw);
    float x[16] = {0.1f, 0.9f, 0.3f, 0.4f, 0.5f, 0.2f, 0.7f, 0.8f,
                   0.6f, 0.0f, 1.0f, 0.3f, 0.2f, 0.2f, 0.9f, 0.1f};
    float z[16], p[16];
    uint8_t y[4] = {2, NN_LABEL_OUTLIER, 0, NN_LABEL_OUTLIER};
    nn_ws *inf = nn_ws_create(net, 4, 0);
    nn_net_forward(net, inf, x, 4, NULL, z);
    nn_ws_free(inf);
    float uniform = nn_net_forward_train(net, ws, x, y, 4, 0.0f, 1, 0, NULL);
    nn_ws_set_energy_margins(ws, 1, m_in, m_out);
    float l = nn_net_forward_train(net, ws, x, y, 4, 0.0f, 1, 0, p);
    double want_in = 0.0, want_out = 0.0;
    int on_in = 0, on_out = 0;
    for (int i = 0; i < 4; i++) {
        double mx = z[i * 4], sum = 0.0;
        for (int j = 1; j < 4; j++) mx = fmax(mx, z[i * 4 + j]);
        for (int j = 0; j < 4; j++) sum += exp(z[i * 4 + j] - mx);
        double e = -(mx + log(sum));
        if (y[i] == NN_LABEL_OUTLIER) {
            double hh = fmax(0.0, m_out - e);
            want_out += hh * hh / 2;
            on_out += hh > 0;
        } else {
            double hh = fmax(0.0, e - m_in);
            want_in += (-log(p[i * 4 + y[i]]) + lw * hh * hh) / 2;
            on_in += hh > 0;
        }
    }
    /* The digits' energies are about -1.85 and -1.72: one on its hinge, one off. */
    assert_int_equal(on_in, 1);
    assert_int_equal(on_out, 2);
    assert_float_equal(l, want_in + lw * want_out, 1e-5);
    assert_true(fabsf(l - uniform) > 1e-3f);
    nn_ws_set_energy_margins(ws, 0, m_in, m_out);
    assert_float_equal(nn_net_forward_train(net, ws, x, y, 4, 0.0f, 1, 0, NULL), uniform, 0);
    nn_ws_free(ws);
    nn_net_free(net);
}

/* The outlier loss's value by hand: mean cross-entropy of the digits plus
 * weight times the outliers' mean cross-entropy to the uniform target. */
static void test_outlier_loss(void **s)
{
    (void)s;
    nn_net *net = nets_make("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]", 1, 2, 2, 5);
    nn_ws *ws = nn_ws_create(net, 3, 1);
    nn_ws_set_outlier_weight(ws, 0.25f);
    float x[12] = {0.1f, 0.9f, 0.3f, 0.4f, 0.5f, 0.2f, 0.7f, 0.8f, 0.6f, 0.0f, 1.0f, 0.3f}, p[12];
    uint8_t y[3] = {2, NN_LABEL_OUTLIER, 0};
    float l = nn_net_forward_train(net, ws, x, y, 3, 0.0f, 1, 0, p);
    double want_in = -0.5 * (log(p[0 * 4 + 2]) + log(p[2 * 4 + 0])), want_out = 0.0;
    for (int j = 0; j < 4; j++) want_out -= 0.25 * log(p[1 * 4 + j]);
    assert_float_equal(l, want_in + 0.25 * want_out, 1e-5);
    /* The target of an outlier is uniform: uniform probabilities cost log(k),
     * the least an outlier can cost. */
    memset(net->params, 0, sizeof(float) * net->nparams);
    y[0] = y[2] = NN_LABEL_OUTLIER;
    l = nn_net_forward_train(net, ws, x, y, 3, 0.0f, 1, 0, NULL);
    assert_float_equal(l, logf(4.0f), 1e-6);
    nn_ws_free(ws);
    nn_net_free(net);
}

static void test_loss_values(void **s)
{
    (void)s;
    /* Zero weights give uniform probabilities: loss = log(k) for any smoothing. */
    nn_net *net = nets_make("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]", 1, 2, 2, 1);
    memset(net->params, 0, sizeof(float) * net->nparams);
    nn_ws *ws = nn_ws_create(net, 2, 1);
    float x[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f}, p[8];
    uint8_t y[2] = {1, 3};
    float l = nn_net_forward_train(net, ws, x, y, 2, 0.0f, 1, 0, p);
    assert_float_equal(l, logf(4.0f), 1e-6);
    for (int i = 0; i < 8; i++) assert_float_equal(p[i], 0.25f, 1e-7);
    /* A confident right answer: loss -> small; label smoothing raises it. */
    net->params[net->layers[1].b_off + 1] = 10.0f;
    y[0] = y[1] = 1;
    float l0 = nn_net_forward_train(net, ws, x, y, 2, 0.0f, 1, 0, NULL);
    float l1 = nn_net_forward_train(net, ws, x, y, 2, 0.1f, 1, 0, NULL);
    assert_true(l0 < 1e-3f);
    assert_true(l1 > l0 + 0.1f);
    nn_ws_free(ws);
    nn_net_free(net);
}

/* The magnitudes a convolution's results are bounded by (tol.h): the
 * reference run on |x|, |w|, |b|, |dy|, image by image (g images). */
struct conv_mag {
    float *y, *dx, *dw, *db;
};
static struct conv_mag conv_mag_make(const nn_conv_shape *cs, const float *x, const float *w,
                                     const float *b, const float *dy, int g)
{
    size_t nx = (size_t)cs->C * cs->H * cs->W, nw = (size_t)cs->O * cs->C * cs->k * cs->k;
    size_t ny = (size_t)cs->O * cs->OH * cs->OW;
    float *ax = tol_absdup(x, g * nx), *aw = tol_absdup(w, nw), *ab = tol_absdup(b, cs->O),
          *ady = tol_absdup(dy, g * ny);
    struct conv_mag m = {malloc(g * ny * 4), malloc(g * nx * 4), calloc(nw, 4), calloc(cs->O, 4)};
    assert_true(ax && aw && ab && ady && m.y && m.dx && m.dw && m.db);
    for (int i = 0; i < g; i++) {
        nn_conv2d_forward_ref(m.y + i * ny, ax + i * nx, aw, ab, cs);
        nn_conv2d_backward_ref(m.dx + i * nx, m.dw, m.db, ady + i * ny, ax + i * nx, aw, cs);
    }
    free(ax);
    free(aw);
    free(ab);
    free(ady);
    return m;
}
static void conv_mag_free(struct conv_mag *m)
{
    free(m->y);
    free(m->dx);
    free(m->dw);
    free(m->db);
}

/* The grouped implicit-GEMM convolution against the reference, image by
 * image, for every stride/padding kind and group sizes that straddle GEMM
 * panels (odd P, g not a divisor of anything). */
/* A convolution covering its whole input (a dense layer: the big CNN's
 * 64x4x4 -> 128) at batch 1 with the plan's packed weights: transposed,
 * zero inputs skipped. Against the reference on inputs 70% zero, and all
 * zero (each output then exactly its bias, ReLU'd); on AVX2 and AVX-512
 * the same bits (both fuse, same order). Output counts in whole blocks,
 * with tails (144 = 128 + 16, 16, 80 = 64 + 16 on AVX2), and one that
 * does not fit (24: the GEMM, nothing packed). */
static void test_conv_dense_packed(void **s)
{
    (void)s;
    const int cases[][4] = {/* C, H (= W = k), O, packed */
                            {64, 4, 128, 1},
                            {2, 3, 144, 1},
                            {3, 5, 16, 1},
                            {5, 2, 80, 1},
                            {4, 2, 24, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int k = cases[c][1];
        nn_conv_shape cs = {cases[c][0], k, k, cases[c][2], k, 1, 0, 1, 1};
        const size_t K = (size_t)cs.C * k * k, O = (size_t)cs.O;
        size_t nscr = nn_conv2d_scratch_size(&cs, 1, 0), npk = nn_conv2d_packed_size(&cs);
        assert_int_equal(npk, cases[c][3] ? K * O : 0);
        float *x = malloc(K * 4), *w = malloc(K * O * 4), *b = malloc(O * 4),
              *wt = malloc((npk + 1) * 4), *y = malloc(O * 4), *ref = malloc(O * 4),
              *yx = malloc(O * 4), *scr = malloc((nscr + 1) * 4);
        assert_true(x && w && b && wt && y && ref && yx && scr);
        nets_fill(x, K, 31 + c, 1.0f);
        nets_fill(w, K * O, 32 + c, 0.3f);
        nets_fill(b, O, 33 + c, 0.5f);
        for (size_t i = 0; i < K; i++) /* about 70% zeros, as after a ReLU */
            if ((i * 7919) % 10 < 7) x[i] = 0.0f;
        int runs = 0;
        for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
            if (!nn_gemm_path_supported(path)) continue;
            assert_int_equal(nn_gemm_set_path(path), 0);
            nn_conv2d_pack_weights(wt, w, &cs);
            /* dy: any O floats (only the forward magnitudes are used). */
            struct conv_mag m = conv_mag_make(&cs, x, w, b, b, 1);
            for (int relu = 0; relu < 2; relu++) {
                nn_conv2d_forward_packed(y, x, w, npk ? wt : NULL, b, &cs, 1, scr, relu);
                nn_conv2d_forward_ref(ref, x, w, b, &cs);
                for (size_t o = 0; o < O; o++) {
                    if (relu) ref[o] = ref[o] > 0.0f ? ref[o] : 0.0f;
                    assert_tol("dense y", y, ref, o, (double)K + 1, m.y);
                }
            }
            conv_mag_free(&m);
            if (path == NN_GEMM_PATH_AVX2) memcpy(yx, y, O * 4);
            if (path == NN_GEMM_PATH_AVX512 && nn_gemm_path_supported(NN_GEMM_PATH_AVX2) && npk)
                assert_memory_equal(y, yx, O * 4);
            /* No input nonzero: the bias alone, exactly. */
            float *z = calloc(K, 4);
            assert_non_null(z);
            nn_conv2d_forward_packed(y, z, w, npk ? wt : NULL, b, &cs, 1, scr, 1);
            for (size_t o = 0; o < O; o++) assert_true(y[o] == (b[o] > 0.0f ? b[o] : 0.0f));
            free(z);
            runs++;
        }
        assert_true(runs >= 2);
        assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
        free(x), free(w), free(b), free(wt), free(y), free(ref), free(yx), free(scr);
    }
}

/* A first layer written channels last (nn_conv2d_forward_nhwc, for the
 * Winograd layer after it): for 3x3 kernels and 16 to 64 output
 * channels, on AVX-512 and on AVX2 for rows of more than 24 outputs, the
 * same floats as nn_conv2d_forward_n's [O, H, W], only transposed, with
 * and without bias, ReLU and border, rows whose length is not a multiple
 * of 4, two images; elsewhere it does not claim the shape. */
static void test_conv_first_nhwc(void **s)
{
    (void)s;
    const int cases[][4] = {/* H, W, O, pad */
                            {28, 28, 32, 0}, {9, 14, 16, 1}, {7, 5, 48, 0},
                            {12, 12, 64, 1}, {6, 29, 48, 1}, {5, 27, 16, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int H = cases[c][0], W = cases[c][1], O = cases[c][2], pd = cases[c][3], g = 2;
        nn_conv_shape cs = {1, H, W, O, 3, 1, pd, H + 2 * pd - 2, W + 2 * pd - 2};
        const size_t P = (size_t)cs.OH * cs.OW, nx = (size_t)H * W, ny = (size_t)O * P;
        const size_t nscr = nn_conv2d_scratch_size(&cs, g, 0);
        float *x = malloc(g * nx * 4), *w = malloc(9 * (size_t)O * 4), *b = malloc(O * 4),
              *y = malloc(g * ny * 4), *yn = malloc(g * ny * 4), *scr = malloc((nscr + 1) * 4);
        assert_true(x && w && b && y && yn && scr);
        nets_fill(x, g * nx, 61 + c, 1.0f);
        nets_fill(w, 9 * (size_t)O, 62 + c, 0.5f);
        nets_fill(b, O, 63 + c, 0.5f);
        int ran = 0;
        for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
            if (!nn_gemm_path_supported(path)) continue;
            assert_int_equal(nn_gemm_set_path(path), 0);
            const int fits =
                path == NN_GEMM_PATH_AVX512 || (path == NN_GEMM_PATH_AVX2 && cs.OW > 24);
            assert_int_equal(nn_conv2d_nhwc_fits(&cs), fits);
            if (!fits) continue;
            for (int v = 0; v < 4; v++) {
                const int relu = v & 1;
                const float *bias = v & 2 ? NULL : b;
                nn_conv2d_forward_n(y, x, w, bias, &cs, g, scr, relu);
                nn_conv2d_forward_nhwc(yn, x, w, bias, &cs, g, scr, relu);
                size_t diff = 0, neg = 0;
                for (int i = 0; i < g; i++)
                    for (int o = 0; o < O; o++)
                        for (size_t q = 0; q < P; q++) {
                            const float a = y[(size_t)i * ny + o * P + q];
                            const float n = yn[(size_t)i * ny + q * O + o];
                            diff += memcmp(&a, &n, sizeof a) != 0;
                            neg += a < 0.0f;
                        }
                assert_int_equal(diff, 0);
                assert_true(relu ? neg == 0 : neg > 0); /* the cases see both signs */
            }
            ran = 1;
        }
        if (nn_gemm_path_supported(NN_GEMM_PATH_AVX512) ||
            (nn_gemm_path_supported(NN_GEMM_PATH_AVX2) && cs.OW > 24))
            assert_true(ran);
        /* Shapes it leaves to others: 5x5, 8 or 80 channels, 2 inputs. */
        const nn_conv_shape no[] = {{1, H, W, O, 5, 1, 2, H, W},
                                    {1, H, W, 8, 3, 1, pd, cs.OH, cs.OW},
                                    {1, H, W, 80, 3, 1, pd, cs.OH, cs.OW},
                                    {2, H, W, O, 3, 1, pd, cs.OH, cs.OW}};
        for (size_t k = 0; k < sizeof no / sizeof no[0]; k++)
            assert_int_equal(nn_conv2d_nhwc_fits(&no[k]), 0);
        free(x), free(w), free(b), free(y), free(yn), free(scr);
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
}

/* The direct kernel for few output positions (at most 16 an image, the
 * big CNN's 64 x 8 x 8 -> 64 x 4 x 4) with the plan's packed weights:
 * on the AVX-512 path, where an image's channel fits a 64-bit mask and
 * the outputs fill whole vectors, it reads only the nonzero inputs
 * (nn_conv2d_pack_weights transposes them); its results are the dense
 * kernel's (weights as stored) to the bit, for inputs 70% zero with
 * negative values and -0, both images of two, with and without bias and
 * ReLU. Shapes: several channel groups with a short last one (64
 * channels), two passes of output channels (128), three vectors (48) and
 * an odd number of positions (3 x 3), one vector (16) at stride 3, a
 * channel of 49 pixels (a partial last vector), and 81 pixels (no mask:
 * the dense kernel, packed in blocks). Every path against the
 * reference. */
static void test_conv_few_sparse(void **s)
{
    (void)s;
    const int cases[][7] = {/* C, H (= W), O, k, stride, pad, sparse */
                            {64, 8, 64, 5, 2, 2, 1},
                            {5, 7, 128, 3, 2, 1, 1},
                            {40, 6, 48, 3, 2, 1, 1},
                            {3, 8, 16, 3, 3, 0, 1},
                            {6, 9, 32, 3, 3, 0, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int H = cases[c][1], k = cases[c][3], st = cases[c][4], pd = cases[c][5], g = 2;
        const int OH = (H + 2 * pd - k) / st + 1;
        nn_conv_shape cs = {cases[c][0], H, H, cases[c][2], k, st, pd, OH, OH};
        const size_t K = (size_t)cs.C * k * k, O = (size_t)cs.O, P = (size_t)OH * OH;
        const size_t nx = (size_t)cs.C * H * H, ny = O * P;
        size_t nscr = nn_conv2d_scratch_size(&cs, g, 0);
        float *x = malloc(g * nx * 4), *w = malloc(K * O * 4), *b = malloc(O * 4),
              *wt = malloc(K * O * 4), *y = malloc(g * ny * 4), *yd = malloc(g * ny * 4),
              *ref = malloc(ny * 4), *dy = calloc(g * ny, 4), *scr = malloc((nscr + 1) * 4);
        assert_true(x && w && b && wt && y && yd && ref && dy && scr);
        nets_fill(x, g * nx, 41 + c, 1.0f);
        nets_fill(w, K * O, 42 + c, 0.3f);
        nets_fill(b, O, 43 + c, 0.5f);
        for (size_t i = 0; i < g * nx; i++) /* about 70% zeros, some -0 */
            if ((i * 7919) % 10 < 7) x[i] = (i * 31) % 9 ? 0.0f : -0.0f;
        struct conv_mag m = conv_mag_make(&cs, x, w, b, dy, g);
        int runs = 0, sparse = 0;
        for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
            if (!nn_gemm_path_supported(path)) continue;
            assert_int_equal(nn_gemm_set_path(path), 0);
            const int avx512 = path == NN_GEMM_PATH_AVX512;
            assert_int_equal(nn_conv2d_few_outputs(&cs), avx512);
            assert_int_equal(nn_conv2d_packed_size(&cs), avx512 ? K * O : 0);
            if (avx512) nn_conv2d_pack_weights(wt, w, &cs);
            for (int v = 0; v < 4; v++) {
                const int relu = v & 1;
                const float *bias = v & 2 ? NULL : b;
                nn_conv2d_forward_packed(y, x, w, avx512 ? wt : NULL, bias, &cs, g, scr, relu);
                if (avx512) {
                    /* Sparse: transposed, not the dense kernel's blocks. */
                    assert_int_equal(wt[O] == w[1], cases[c][6]);
                    nn_conv2d_forward_packed(yd, x, w, NULL, bias, &cs, g, scr, relu);
                    for (size_t i = 0; i < g * ny; i++) assert_true(y[i] == yd[i]);
                    sparse += cases[c][6];
                }
                for (int i = 0; i < g; i++) {
                    nn_conv2d_forward_ref(ref, x + i * nx, w, bias, &cs);
                    for (size_t j = 0; j < ny; j++) {
                        if (relu) ref[j] = ref[j] > 0.0f ? ref[j] : 0.0f;
                        assert_tol("few y", y + i * ny, ref, j, (double)K + 1, m.y + i * ny);
                    }
                }
            }
            runs++;
        }
        assert_true(runs >= 2);
        if (nn_gemm_path_supported(NN_GEMM_PATH_AVX512)) assert_int_equal(sparse, 4 * cases[c][6]);
        assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
        conv_mag_free(&m);
        free(x), free(w), free(b), free(wt), free(y), free(yd), free(ref), free(dy), free(scr);
    }
}

static void test_conv_group_vs_ref(void **s)
{
    (void)s;
    const int cases[][8] = {/* C, H, W, O, k, stride, pad, g */
                            {1, 28, 28, 32, 3, 1, 0, 5},
                            {3, 9, 11, 5, 3, 2, 1, 3},
                            {32, 12, 12, 32, 5, 2, 2, 2},
                            {4, 7, 7, 8, 1, 1, 0, 7},
                            {2, 10, 10, 3, 4, 3, 1, 4},
                            {6, 14, 14, 16, 5, 1, 2, 1},
                            {5, 4, 4, 7, 4, 1, 0, 33},
                            {2, 6, 5, 3, 3, 1, 1, 2},
                            {3, 8, 8, 4, 5, 2, 2, 1},
                            {6, 4, 4, 9, 4, 1, 0, 1},
                            /* One image (the shifted-rows path): every stride phase layout. */
                            {1, 28, 28, 32, 3, 1, 0, 1},
                            {32, 12, 12, 32, 5, 2, 2, 1},
                            {2, 10, 10, 3, 4, 3, 1, 1},
                            {5, 9, 7, 6, 3, 2, 0, 1},
                            {4, 11, 13, 70, 2, 2, 1, 1},
                            {3, 7, 9, 5, 5, 3, 2, 1},
                            /* Groups on shifted rows, forward and input gradient. */
                            {32, 26, 26, 32, 3, 1, 0, 3},
                            {8, 12, 12, 6, 3, 1, 1, 4},
                            {1, 28, 28, 6, 5, 1, 2, 16},
                            /* Stride-1 input gradient scattered (rows over 64, a kernel
         * over 8: the gathered col2im does not take them). */
                            {2, 5, 70, 3, 3, 1, 1, 2},
                            {1, 12, 12, 2, 9, 1, 4, 1},
                            /* Input gradient through col2im in slices of one image, and of 3. */
                            {32, 24, 24, 32, 5, 2, 2, 3},
                            {16, 13, 13, 8, 5, 2, 2, 7},
                            /* Weight gradient by dot products over shifted rows (few outputs):
         * strides 1, 2, 3, odd groups, row and column counts off the
         * kernel's 3 x 4 block. */
                            {1, 28, 28, 6, 5, 1, 2, 3},
                            {4, 23, 23, 8, 3, 2, 1, 5},
                            {2, 31, 31, 7, 3, 3, 0, 2},
                            /* LeNet's second convolution in a group: shifted rows although
         * nearly half the positions are extra (few outputs). */
                            {6, 14, 14, 16, 5, 1, 0, 16},
                            /* One input channel, direct on AVX-512 (3x3 and 5x5
         * kernels): rows of 5, 16, 17, 24 and 32 columns (ends stored
         * masked, one or two vectors), channel counts off the
         * block of 4; then 7x7 and 33 columns (the GEMM again). */
                            {1, 5, 7, 7, 3, 1, 0, 2},
                            {1, 16, 16, 5, 3, 1, 1, 1},
                            {1, 19, 19, 3, 3, 1, 0, 3},
                            {1, 20, 24, 9, 5, 1, 2, 2},
                            {1, 32, 32, 6, 3, 1, 1, 2},
                            {1, 20, 20, 5, 7, 1, 3, 1},
                            {1, 35, 35, 6, 3, 1, 0, 1},
                            /* On AVX2, 3x3 rows of 25 to 32 columns (four vectors,
         * the last overlapping the third), channels in blocks of 3 and
         * a tail of 1 or 2. */
                            {1, 27, 27, 7, 3, 1, 0, 2},
                            {1, 29, 30, 5, 3, 1, 1, 1},
                            /* At most 16 outputs an image, direct on AVX-512 (one
         * vector of positions): the big CNN's 8x8 -> 4x4 stride-2 layer
         * alone and in a group, 9, 4 and 1 positions with and without
         * padding, channel counts off the block of 8. */
                            {64, 8, 8, 64, 5, 2, 2, 1},
                            {64, 8, 8, 64, 5, 2, 2, 3},
                            {7, 5, 5, 13, 3, 1, 0, 2},
                            {3, 4, 4, 9, 3, 2, 1, 1},
                            {5, 3, 3, 11, 3, 1, 1, 2},
                            {4, 2, 2, 10, 3, 1, 1, 1},
                            {6, 3, 3, 5, 3, 1, 0, 2},
                            /* 4 x 4 outputs: col's rows built from column phases
         * (strides 1, 2 and 3; 16 + 8 + 5 channels), and by the gather
         * where one channel's phases outgrow the buffer (stride 8). */
                            {3, 6, 6, 20, 3, 1, 0, 1},
                            {5, 10, 10, 29, 4, 3, 2, 2},
                            {9, 7, 7, 24, 3, 2, 2, 1},
                            {2, 33, 33, 17, 9, 8, 0, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nn_conv_shape cs = {cases[c][0], cases[c][1], cases[c][2],
                            cases[c][3], cases[c][4], cases[c][5],
                            cases[c][6], 0,           0};
        int g = cases[c][7];
        cs.OH = (cs.H + 2 * cs.p - cs.k) / cs.s + 1;
        cs.OW = (cs.W + 2 * cs.p - cs.k) / cs.s + 1;
        size_t nx = (size_t)cs.C * cs.H * cs.W, nw = (size_t)cs.O * cs.C * cs.k * cs.k;
        size_t ny = (size_t)cs.O * cs.OH * cs.OW;
        size_t nscr = nn_conv2d_scratch_size(&cs, g, 1);
        assert_true(nscr >= nn_conv2d_scratch_size(&cs, g, 0));
        float *x = malloc(g * nx * 4), *w = malloc(nw * 4), *b = malloc(cs.O * 4),
              *y1 = malloc(g * ny * 4), *y2 = malloc(ny * 4), *scr = malloc((nscr + 1) * 4),
              *dy = malloc(g * ny * 4), *dx1 = malloc(g * nx * 4), *dx2 = malloc(nx * 4),
              *dw1 = calloc(nw, 4), *dw2 = calloc(nw, 4), *db1 = calloc(cs.O, 4),
              *db2 = calloc(cs.O, 4);
        nets_fill(x, g * nx, 21 + c, 1.0f);
        nets_fill(w, nw, 22 + c, 0.3f);
        nets_fill(b, cs.O, 23 + c, 0.5f);
        nets_fill(dy, g * ny, 24 + c, 1.0f);
        scr[nscr] = 12345.0f; /* guard: the scratch size must be enough */
        /* Reduction lengths: forward C k k products and the bias; dx at most
         * O k k; dw and db over the OH OW positions of g images (the
         * reference adds the g per-image sums in float: g more roundings,
         * covered by the g extra terms). */
        const double nf = (double)cs.C * cs.k * cs.k + 1, nd = (double)cs.O * cs.k * cs.k,
                     np = (double)g * (cs.OH * cs.OW + 1);
        struct conv_mag m = conv_mag_make(&cs, x, w, b, dy, g);
        nn_conv2d_forward_n(y1, x, w, b, &cs, g, scr, 0);
        for (int i = 0; i < g; i++) {
            nn_conv2d_forward_ref(y2, x + i * nx, w, b, &cs);
            for (size_t j = 0; j < ny; j++)
                assert_tol("conv_n y", y1 + i * ny, y2, j, nf, m.y + i * ny);
        }
        nn_conv2d_forward_n(y1, x, w, b, &cs, g, scr, 1);
        for (size_t j = 0; j < ny; j++) y2[j] = y2[j] > 0 ? y2[j] : 0.0f;
        for (size_t j = 0; j < ny; j++)
            assert_tol("conv_n relu(y)", y1 + (g - 1) * ny, y2, j, nf, m.y + (g - 1) * ny);
        nn_conv2d_backward_n(dx1, dw1, db1, dy, x, w, &cs, g, scr);
        for (int i = 0; i < g; i++) {
            nn_conv2d_backward_ref(dx2, dw2, db2, dy + i * ny, x + i * nx, w, &cs);
            for (size_t j = 0; j < nx; j++)
                assert_tol("conv_n dx", dx1 + i * nx, dx2, j, nd, m.dx + i * nx);
        }
        for (size_t i = 0; i < nw; i++) assert_tol("conv_n dw", dw1, dw2, i, np, m.dw);
        for (int i = 0; i < cs.O; i++) assert_tol("conv_n db", db1, db2, i, np, m.db);
        /* The input gradient alone (dw NULL): the same floats, db left. */
        float *dx3 = malloc(g * nx * 4);
        for (int i = 0; i < cs.O; i++) db2[i] = 7.0f;
        nn_conv2d_backward_n(dx3, NULL, db2, dy, x, w, &cs, g, scr);
        assert_memory_equal(dx3, dx1, g * nx * 4);
        for (int i = 0; i < cs.O; i++) assert_true(db2[i] == 7.0f);
        free(dx3);
        conv_mag_free(&m);
        assert_true(scr[nscr] == 12345.0f);
        free(x);
        free(w);
        free(b);
        free(y1);
        free(y2);
        free(scr);
        free(dy);
        free(dx1);
        free(dx2);
        free(dw1);
        free(dw2);
        free(db1);
        free(db2);
    }
}

/* Random running statistics and affine parameters for every batch norm. */
static void randomise_bn(nn_net *net, uint64_t seed)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        if (L->kind != NN_BATCHNORM) continue;
        for (int c = 0; c < L->out_c; c++) {
            net->params[L->w_off + c] = 0.5f + (float)nn_rng_uniform(&r);
            net->params[L->b_off + c] = (float)nn_rng_uniform(&r) - 0.5f;
            net->stats[L->s_off + c] = 0.4f * ((float)nn_rng_uniform(&r) - 0.5f);
            net->stats[L->s_off + L->out_c + c] = 0.2f + 2.0f * (float)nn_rng_uniform(&r);
        }
    }
}

static void check_fold(const char *arch, int c, int h, int w, int want_layers)
{
    nn_net *net = nets_make(arch, c, h, w, 11);
    randomise_bn(net, 12);
    char err[256];
    nn_net *f = nn_net_fold_bn(net, err, sizeof err);
    assert_non_null(f);
    assert_int_equal(f->nlayers, want_layers);
    assert_true(f->nparams < net->nparams);
    const int n = 5, hw = c * h * w, k = nn_net_outputs(net);
    float *x = malloc(sizeof(float) * n * hw), p1[5 * 64], p2[5 * 64], z1[5 * 64], z2[5 * 64];
    nets_fill(x, (size_t)n * hw, 13, 1.0f);
    for (int i = 0; i < n * hw; i++) x[i] = fabsf(x[i]);
    nn_ws *w1 = nn_ws_create(net, n, 0), *w2 = nn_ws_create(f, n, 0);
    assert_non_null(w1);
    assert_non_null(w2);
    nn_net_forward(net, w1, x, n, p1, z1);
    nn_net_forward(f, w2, x, n, p2, z2);
    double zmax = 0.0;
    for (int i = 0; i < n * k; i++) {
        assert_float_equal(p1[i], p2[i], 1e-5);
        zmax = fmax(zmax, fabs(z1[i]));
        assert_float_equal(z1[i], z2[i], 1e-5 * fmax(1.0, fabs(z1[i])));
    }
    assert_true(zmax > 0.1); /* the comparison saw real logits */
    nn_ws_free(w1);
    nn_ws_free(w2);
    nn_net_free(f);
    nn_net_free(net);
    free(x);
}

static void test_fold_bn(void **s)
{
    (void)s;
    /* conv-bn-relu twice, a batch norm after a pool (stays), dense-bn. */
    check_fold("[{\"type\":\"conv2d\",\"out\":8,\"k\":3,\"pad\":1},{\"type\":\"batchnorm\"},{"
               "\"type\":\"relu\"},"
               "{\"type\":\"conv2d\",\"out\":6,\"k\":5,\"stride\":2,\"pad\":2},{\"type\":"
               "\"batchnorm\"},{\"type\":\"relu\"},"
               "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"batchnorm\"},"
               "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":12},{\"type\":\"batchnorm\"},{"
               "\"type\":\"relu\"},"
               "{\"type\":\"dense\",\"out\":10}]",
               1, 12, 12, 10);
    /* The big CNN's shape of block on an MNIST-sized input. */
    check_fold(
        "[{\"type\":\"conv2d\",\"out\":16,\"k\":3},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"out\":16,\"k\":5,\"stride\":2,\"pad\":2},{\"type\":\"batchnorm\"},{"
        "\"type\":\"relu\"},"
        "{\"type\":\"dropout\",\"p\":0.4},{\"type\":\"conv2d\",\"out\":32,\"k\":13},{\"type\":"
        "\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]",
        1, 28, 28, 9);
    /* Nothing to fold: same layers, same outputs (a copy). */
    nn_net *net = nets_make(
        "[{\"type\":\"flatten\"},{\"type\":\"batchnorm\"},{\"type\":\"dense\",\"out\":3}]", 1, 2, 2,
        3);
    char err[256];
    nn_net *f = nn_net_fold_bn(net, err, sizeof err);
    assert_non_null(f);
    assert_int_equal(f->nlayers, 3);
    assert_int_equal(f->nparams, net->nparams);
    nn_net_free(f);
    nn_net_free(net);
}

/* An ensemble runs the folded net but reports the member as trained. */
static void test_ensemble_folds(void **s)
{
    (void)s;
    const char *arch =
        "[{\"type\":\"conv2d\",\"out\":4,\"k\":3},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    nn_net *net = nets_make(arch, 1, 6, 6, 5), *ref = nets_make(arch, 1, 6, 6, 5);
    randomise_bn(net, 6);
    randomise_bn(ref, 6);
    char err[256];
    nn_ensemble *e = nn_ensemble_from_nets(&net, 1, err, sizeof err);
    assert_non_null(e);
    assert_int_equal(nn_ensemble_member(e, 0)->nlayers, 5);
    assert_int_equal(nn_ensemble_member_infer(e, 0)->nlayers, 4);
    assert_int_equal(nn_ensemble_params(e), ref->nparams);
    float x[2 * 36], p1[20], p2[20];
    nets_fill(x, 72, 8, 1.0f);
    nn_ensemble_ws *ew = nn_ensemble_ws_create(e, 2);
    nn_ws *ws = nn_ws_create(ref, 2, 0);
    nn_ensemble_forward(e, ew, x, 2, p1);
    nn_net_forward(ref, ws, x, 2, p2, NULL);
    for (int i = 0; i < 20; i++) assert_float_equal(p1[i], p2[i], 1e-5);
    nn_ensemble_ws_free(ew);
    nn_ws_free(ws);
    nn_ensemble_free(e);
    nn_net_free(ref);
}

static void test_dense_fast_vs_ref(void **s)
{
    (void)s;
    const int cases[][3] = {{1, 784, 128}, {32, 784, 128}, {7, 13, 5}, {64, 400, 120}, {3, 1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = cases[c][0], in = cases[c][1], out = cases[c][2];
        float *x = malloc(sizeof(float) * n * in), *w = malloc(sizeof(float) * in * out),
              *b = malloc(sizeof(float) * out), *y1 = malloc(sizeof(float) * n * out),
              *y2 = malloc(sizeof(float) * n * out), *dy = malloc(sizeof(float) * n * out),
              *dx1 = malloc(sizeof(float) * n * in), *dx2 = malloc(sizeof(float) * n * in),
              *dw1 = calloc((size_t)in * out, 4), *dw2 = calloc((size_t)in * out, 4),
              *db1 = calloc(out, 4), *db2 = calloc(out, 4);
        nets_fill(x, (size_t)n * in, 10 + c, 1.0f);
        nets_fill(w, (size_t)in * out, 11 + c, 0.1f);
        nets_fill(b, out, 12 + c, 0.5f);
        nets_fill(dy, (size_t)n * out, 13 + c, 1.0f);
        /* Magnitudes: the reference on absolute values. Reduction lengths:
         * y over in products and the bias, dx over out, dw and db over n. */
        float *ax = tol_absdup(x, (size_t)n * in), *aw = tol_absdup(w, (size_t)in * out),
              *ab = tol_absdup(b, out), *ady = tol_absdup(dy, (size_t)n * out),
              *my = malloc(sizeof(float) * n * out), *mdx = malloc(sizeof(float) * n * in),
              *mdw = calloc((size_t)in * out, 4), *mdb = calloc(out, 4);
        assert_true(ax && aw && ab && ady && my && mdx && mdw && mdb);
        nn_dense_forward_ref(my, ax, aw, ab, n, in, out);
        nn_dense_backward_ref(mdx, mdw, mdb, ady, ax, aw, n, in, out);
        nn_dense_forward(y1, x, w, b, n, in, out, 0);
        nn_dense_forward_ref(y2, x, w, b, n, in, out);
        for (int i = 0; i < n * out; i++) assert_tol("dense y", y1, y2, i, in + 1.0, my);
        nn_dense_backward(dx1, dw1, db1, dy, x, w, n, in, out);
        nn_dense_backward_ref(dx2, dw2, db2, dy, x, w, n, in, out);
        for (int i = 0; i < n * in; i++) assert_tol("dense dx", dx1, dx2, i, out, mdx);
        for (int i = 0; i < in * out; i++) assert_tol("dense dw", dw1, dw2, i, n, mdw);
        for (int i = 0; i < out; i++) assert_tol("dense db", db1, db2, i, n, mdb);
        free(ax);
        free(aw);
        free(ab);
        free(ady);
        free(my);
        free(mdx);
        free(mdw);
        free(mdb);
        free(x);
        free(w);
        free(b);
        free(y1);
        free(y2);
        free(dy);
        free(dx1);
        free(dx2);
        free(dw1);
        free(dw2);
        free(db1);
        free(db2);
    }
}

static void test_maxpool(void **s)
{
    (void)s;
    float x[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, y[4], dx[16];
    int32_t idx[4];
    nn_maxpool_forward(y, idx, x, 1, 4, 4, 2, 2, 2, 2);
    assert_float_equal(y[0], 6, 0);
    assert_float_equal(y[1], 8, 0);
    assert_float_equal(y[2], 14, 0);
    assert_float_equal(y[3], 16, 0);
    float dy[4] = {1, 2, 3, 4};
    nn_maxpool_backward(dx, dy, idx, 1, 4, 4, 2, 2, 2, 2, NULL);
    assert_float_equal(dx[5], 1, 0);
    assert_float_equal(dx[7], 2, 0);
    assert_float_equal(dx[13], 3, 0);
    assert_float_equal(dx[15], 4, 0);
    assert_float_equal(dx[0], 0, 0);
    /* The inference path (no indices, 2x2 fast path) equals the training
     * path on random data, odd sizes dropping the last row and column. */
    float xr[3 * 9 * 7], y1[3 * 4 * 3], y2[3 * 4 * 3];
    int32_t id2[3 * 4 * 3];
    nets_fill(xr, 3 * 9 * 7, 5, 1.0f);
    nn_maxpool_forward(y1, NULL, xr, 3, 9, 7, 2, 2, 4, 3);
    nn_maxpool_forward(y2, id2, xr, 3, 9, 7, 2, 2, 4, 3);
    for (int i = 0; i < 3 * 4 * 3; i++) {
        assert_float_equal(y1[i], y2[i], 0);
        assert_float_equal(y1[i], xr[id2[i]], 0);
    }
    /* The argmax on data full of ties (values 0..2) is the first maximum
     * in row-major window order, as the backward pass expects. */
    for (int i = 0; i < 3 * 9 * 7; i++) xr[i] = (float)((i * 7 + i / 5) % 3);
    nn_maxpool_forward(y2, id2, xr, 3, 9, 7, 2, 2, 4, 3);
    for (int c = 0; c < 3; c++)
        for (int oh = 0; oh < 4; oh++)
            for (int ow = 0; ow < 3; ow++) {
                int o = (c * 4 + oh) * 3 + ow, want = -1;
                for (int ki = 0; ki < 2; ki++)
                    for (int kj = 0; kj < 2; kj++) {
                        int at = (c * 9 + 2 * oh + ki) * 7 + 2 * ow + kj;
                        if (want < 0 || xr[at] > xr[want]) want = at;
                    }
                assert_int_equal(id2[o], want);
                assert_float_equal(y2[o], xr[want], 0);
            }
    /* The backward with a ReLU's output (relu_y) equals the plain backward
     * then nn_relu_backward, bit for bit: ReLU outputs with zeros (about
     * 60% of them), overlapping 3x3 windows of stride 2 (positions that get
     * several gradients), and a -0 gradient. */
    enum { C3 = 3, H3 = 9, W3 = 7, OH3 = 4, OW3 = 3 };
    float r[C3 * H3 * W3], yp[C3 * OH3 * OW3], g[C3 * OH3 * OW3];
    float d1[C3 * H3 * W3], d2[C3 * H3 * W3];
    int32_t ip[C3 * OH3 * OW3];
    nets_fill(r, C3 * H3 * W3, 9, 1.0f);
    for (int i = 0; i < C3 * H3 * W3; i++) r[i] = r[i] > 0.2f ? r[i] : 0.0f;
    for (int y = 0; y < 3; y++) /* the first window all zeros: its argmax is not > 0 */
        for (int x = 0; x < 3; x++) r[y * W3 + x] = 0.0f;
    nn_maxpool_forward(yp, ip, r, C3, H3, W3, 3, 2, OH3, OW3);
    nets_fill(g, C3 * OH3 * OW3, 10, 1.0f);
    g[5] = -0.0f;
    nn_maxpool_backward(d1, g, ip, C3, H3, W3, 3, 2, OH3, OW3, NULL);
    nn_relu_backward(d1, d1, r, C3 * H3 * W3);
    nn_maxpool_backward(d2, g, ip, C3, H3, W3, 3, 2, OH3, OW3, r);
    assert_memory_equal(d1, d2, sizeof d1);
    int zeroed = 0;
    for (int o = 0; o < C3 * OH3 * OW3; o++) zeroed += !(r[ip[o]] > 0.0f) && g[o] != 0.0f;
    assert_true(zeroed > 0); /* the mask took something away */
}

/* The 2x2 stride-2 pool (LeNet's two pools) against its definition:
 * forward maxima and argmaxes (first maximum in window order, on data
 * full of ties and a negative value) and the backward pass, bit for bit,
 * against the scatter written out here, with and without a ReLU's
 * output, with -0 gradients, every float of dx written (the row and
 * column an odd size leaves out get +0). Shapes: even sizes, odd ones,
 * rows of 32 (the widest the AVX-512 kernel takes: 16 windows) and of 34
 * and 33 (past it: the AVX2 forward and the scalar backward), 17 (AVX2's
 * 8 windows and the column after them). */
static void maxpool2_case(int C, int H, int W)
{
    const int OH = H / 2, OW = W / 2, NI = C * H * W, NO = C * OH * OW;
    float *x = malloc(sizeof(float) * NI), *y = malloc(sizeof(float) * NO);
    float *g = malloc(sizeof(float) * NO), *dx = malloc(sizeof(float) * NI);
    float *want = malloc(sizeof(float) * NI), *r = malloc(sizeof(float) * NI);
    int32_t *idx = malloc(sizeof(int32_t) * NO);
    assert_true(x && y && g && dx && want && r && idx);
    /* 0..2 at random: ties between every pair of a window's inputs. */
    for (int i = 0; i < NI; i++) x[i] = (float)(((uint32_t)i * 2654435761u >> 13) % 3);
    x[3] = -1.0f;
    nn_maxpool_forward(y, idx, x, C, H, W, 2, 2, OH, OW);
    for (int c = 0; c < C; c++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int o = (c * OH + oh) * OW + ow, best = -1;
                for (int ki = 0; ki < 2; ki++)
                    for (int kj = 0; kj < 2; kj++) {
                        int at = (c * H + 2 * oh + ki) * W + 2 * ow + kj;
                        if (best < 0 || x[at] > x[best]) best = at;
                    }
                assert_int_equal(idx[o], best);
                assert_memory_equal(&y[o], &x[best], sizeof(float));
            }
    nets_fill(g, NO, 11, 1.0f);
    g[1] = g[OW - 1] = -0.0f;
    nets_fill(r, NI, 12, 1.0f);
    for (int i = 0; i < NI; i++) r[i] = r[i] > 0.1f ? r[i] : 0.0f;
    for (int pass = 0; pass < 2; pass++) {
        const float *ry = pass ? r : NULL;
        memset(want, 0, sizeof(float) * NI);
        for (int o = 0; o < NO; o++) want[idx[o]] += ry && !(ry[idx[o]] > 0.0f) ? 0.0f : g[o];
        for (int i = 0; i < NI; i++) dx[i] = NAN; /* every float must be written */
        nn_maxpool_backward(dx, g, idx, C, H, W, 2, 2, OH, OW, ry);
        assert_memory_equal(dx, want, sizeof(float) * NI);
    }
    free(x), free(y), free(g), free(dx), free(want), free(r), free(idx);
}

static void test_maxpool2_tiled(void **s)
{
    (void)s;
    maxpool2_case(2, 6, 12);
    maxpool2_case(3, 7, 13);
    maxpool2_case(2, 4, 32);
    maxpool2_case(1, 5, 31);
    maxpool2_case(2, 4, 34);
    maxpool2_case(2, 5, 17); /* AVX2: a full step of 8, a column past it */
    maxpool2_case(1, 3, 33);
}

static const char *ARCH_SMALL =
    "[{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"batchnorm\"},{\"type\":"
    "\"relu\"},"
    "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.3},"
    "{\"type\":\"dense\",\"out\":10}]";

#define TMPDIR_PREFIX "test_nn"
#include "tmpdir.h"

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n);
    assert_int_equal(fread(b, 1, n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void test_weights_round_trip(void **s)
{
    (void)s;
    nn_net *a = nets_make(ARCH_SMALL, 1, 8, 8, 5);
    nets_fill(a->stats, a->nstats, 6, 0.5f);
    for (size_t i = 0; i < a->nstats; i++) a->stats[i] = fabsf(a->stats[i]);
    a->bn_batches = 1234;
    a->meta.test_accuracy = 0.5;
    snprintf(a->meta.labels[3], NN_LABEL_MAX, "three");
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/a.safetensors", tmpdir);
    assert_int_equal(nn_net_save(a, path, err, sizeof err), 0);
    nn_net *b = nn_net_load(path, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_int_equal(b->nparams, a->nparams);
    assert_memory_equal(b->params, a->params, sizeof(float) * a->nparams);
    assert_memory_equal(b->stats, a->stats, sizeof(float) * a->nstats);
    assert_int_equal(b->bn_batches, 1234);
    assert_string_equal(b->meta.labels[3], "three");
    assert_float_equal(b->meta.test_accuracy, 0.5, 1e-9);
    /* No ECE stated: none read back. Stated: to the 6 decimals written. */
    assert_true(b->meta.test_ece <= 0);
    b->meta.test_ece = 0.0016151947;
    assert_int_equal(nn_net_save(b, path, err, sizeof err), 0);
    nn_net *c = nn_net_load(path, err, sizeof err);
    if (!c) fail_msg("load: %s", err);
    assert_float_equal(c->meta.test_ece, 0.001615, 1e-12);
    assert_memory_equal(c->params, a->params, sizeof(float) * a->nparams);
    nn_net_free(c);
    /* Same outputs. */
    nn_ws *wa = nn_ws_create(a, 3, 0), *wb = nn_ws_create(b, 3, 0);
    float x[3 * 64], pa[30], pb[30];
    nets_fill(x, 3 * 64, 9, 1.0f);
    nn_net_forward(a, wa, x, 3, pa, NULL);
    nn_net_forward(b, wb, x, 3, pb, NULL);
    assert_memory_equal(pa, pb, sizeof pa);
    nn_ws_free(wa);
    nn_ws_free(wb);
    nn_net_free(b);
    nn_net_free(a);
}

static void write_variant(const char *path, nn_net *net, int skip_tensor, const char *rename_from,
                          const char *rename_to, int shape_bump, int dtype_i64, const char *fmt,
                          int bad_checksum)
{
    /* Build the file the way nn_net_save does, with one deliberate fault. */
    char err[256];
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.ok", path);
    assert_int_equal(nn_net_save(net, tmp, err, sizeof err), 0);
    nn_st_file *f = nn_st_read(tmp, err, sizeof err);
    assert_non_null(f);
    nn_st_writer *w = nn_st_writer_create();
    uint64_t h = NN_ST_FNV_INIT;
    for (int i = 0; i < f->ntensors; i++) {
        const nn_st_tensor *t = &f->tensors[i];
        if (i == skip_tensor) continue;
        const char *name = (rename_from && !strcmp(t->name, rename_from)) ? rename_to : t->name;
        int64_t shape[NN_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        const void *data = t->data;
        int ndim = t->ndim;
        nn_st_dtype dt = t->dtype;
        static int64_t big[4096];
        if (i == 0 && shape_bump) {
            /* Same bytes, different shape: [a,b,...] -> [a*b...] flattened. */
            int64_t tot = 1;
            for (int d = 0; d < ndim; d++) tot *= shape[d];
            shape[0] = tot;
            ndim = 1;
        }
        if (i == 0 && dtype_i64) {
            /* Reinterpret as I64 with half the elements. */
            int64_t tot = 1;
            for (int d = 0; d < ndim; d++) tot *= shape[d];
            assert_true(tot % 2 == 0 && tot / 2 <= 4096);
            memcpy(big, data, tot * 4);
            shape[0] = tot / 2;
            ndim = 1;
            dt = NN_ST_I64;
            data = big;
        }
        assert_int_equal(nn_st_writer_add(w, name, dt, ndim, shape, data), 0);
        h = nn_st_fnv1a64(t->data, t->nbytes, h);
    }
    for (int i = 0; i < f->nmeta; i++) {
        const char *k = f->meta_keys[i], *v = f->meta_vals[i];
        char buf[64];
        if (!strcmp(k, "format") && fmt) v = fmt;
        if (!strcmp(k, "checksum")) {
            snprintf(buf, sizeof buf, "fnv1a64:%016llx",
                     (unsigned long long)(bad_checksum ? h ^ 1 : h));
            v = buf;
        }
        assert_int_equal(nn_st_writer_meta(w, k, v), 0);
    }
    assert_int_equal(nn_st_writer_write(w, path, err, sizeof err), 0);
    nn_st_writer_free(w);
    nn_st_free(f);
}

static void test_weights_corruption(void **s)
{
    (void)s;
    nn_net *net = nets_make(ARCH_SMALL, 1, 8, 8, 5);
    char path[160], ok[160], err[256];
    snprintf(ok, sizeof ok, "%s/ok.safetensors", tmpdir);
    assert_int_equal(nn_net_save(net, ok, err, sizeof err), 0);
    size_t len;
    uint8_t *buf = slurp(ok, &len);

    /* Truncated anywhere: refused, never crashes. */
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 37)) {
        char e2[256] = "";
        nn_net *n = nn_net_load_mem(buf, cut, e2, sizeof e2);
        if (n) fail_msg("truncated at %zu loaded", cut);
        assert_true(strlen(e2) > 0);
    }
    /* Header length larger than the file. */
    uint8_t *b2 = malloc(len);
    memcpy(b2, buf, len);
    b2[0] = 0xff;
    b2[1] = 0xff;
    b2[2] = 0xff;
    char e2[256] = "";
    assert_null(nn_net_load_mem(b2, len, e2, sizeof e2));
    assert_non_null(strstr(e2, "header length"));
    /* Bad JSON: break the opening brace. */
    memcpy(b2, buf, len);
    b2[8] = '[';
    assert_null(nn_net_load_mem(b2, len, e2, sizeof e2));
    assert_true(strstr(e2, "JSON") || strstr(e2, "json"));
    /* A flipped bit in the data: checksum. */
    memcpy(b2, buf, len);
    b2[len - 5] ^= 0x10;
    assert_null(nn_net_load_mem(b2, len, e2, sizeof e2));
    assert_non_null(strstr(e2, "checksum"));
    free(b2);

    snprintf(path, sizeof path, "%s/shape.safetensors", tmpdir);
    write_variant(path, net, -1, NULL, NULL, 1, 0, NULL, 0);
    nets_refused(path, "shape");
    snprintf(path, sizeof path, "%s/dtype.safetensors", tmpdir);
    write_variant(path, net, -1, NULL, NULL, 0, 1, NULL, 0);
    nets_refused(path, "dtype");
    snprintf(path, sizeof path, "%s/missing.safetensors", tmpdir);
    write_variant(path, net, 1, NULL, NULL, 0, 0, NULL, 0);
    nets_refused(path, "missing tensor");
    snprintf(path, sizeof path, "%s/renamed.safetensors", tmpdir);
    write_variant(path, net, -1, "0.bias", "0.biass", 0, 0, NULL, 0);
    nets_refused(path, "missing tensor \"0.bias\"");
    snprintf(path, sizeof path, "%s/format.safetensors", tmpdir);
    write_variant(path, net, -1, NULL, NULL, 0, 0, "something-else", 0);
    nets_refused(path, "not a mnist-c-nn weights file");
    snprintf(path, sizeof path, "%s/checksum.safetensors", tmpdir);
    write_variant(path, net, -1, NULL, NULL, 0, 0, NULL, 1);
    nets_refused(path, "checksum mismatch");
    snprintf(path, sizeof path, "%s/none.safetensors", tmpdir);
    nets_refused(path, "cannot open");
    free(buf);
    nn_net_free(net);
}

/* Copies the weights file src to dst with metadata key `key` set to val
 * (NULL: dropped, as in files written before the key existed). */
static void rewrite_meta(const char *src, const char *dst, const char *key, const char *val)
{
    char err[256];
    nn_st_file *f = nn_st_read(src, err, sizeof err);
    if (!f) fail_msg("%s", err);
    nn_st_writer *w = nn_st_writer_create();
    assert_non_null(w);
    for (int i = 0; i < f->ntensors; i++) {
        const nn_st_tensor *t = &f->tensors[i];
        assert_int_equal(nn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
    }
    for (int i = 0; i < f->nmeta; i++) {
        const char *k = f->meta_keys[i], *v = f->meta_vals[i];
        if (!strcmp(k, key)) {
            if (!val) continue;
            v = val;
        }
        assert_int_equal(nn_st_writer_meta(w, k, v), 0);
    }
    assert_int_equal(nn_st_writer_write(w, dst, err, sizeof err), 0);
    nn_st_writer_free(w);
    nn_st_free(f);
}

static void test_weights_preprocess(void **s)
{
    (void)s;
    char path[160], p2[160], err[512];
    nn_net *a = nets_make(ARCH_SMALL, 1, 8, 8, 5);
    assert_string_equal(a->meta.preprocess, "mnist"); /* default meta */
    snprintf(a->meta.preprocess, sizeof a->meta.preprocess, "fit");
    snprintf(path, sizeof path, "%s/fit.safetensors", tmpdir);
    assert_int_equal(nn_net_save(a, path, err, sizeof err), 0);
    nn_net *b = nn_net_load(path, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_string_equal(b->meta.preprocess, "fit");
    nn_net_free(b);

    /* An older file without the key: derived from the dataset. */
    snprintf(p2, sizeof p2, "%s/old.safetensors", tmpdir);
    rewrite_meta(path, p2, "preprocess", NULL);
    b = nn_net_load(p2, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_string_equal(b->meta.preprocess, "mnist"); /* dataset mnist */
    nn_net_free(b);
    char p3[160];
    snprintf(p3, sizeof p3, "%s/oldf.safetensors", tmpdir);
    rewrite_meta(p2, p3, "dataset", "fashion-mnist");
    b = nn_net_load(p3, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_string_equal(b->meta.preprocess, "fit");
    nn_net_free(b);

    /* An unknown or over-long value is refused, not guessed. */
    rewrite_meta(path, p2, "preprocess", "digits");
    nets_refused(p2, "preprocess");
    rewrite_meta(path, p2, "preprocess", "");
    nets_refused(p2, "preprocess");
    rewrite_meta(path, p2, "preprocess", "fitfitfitfitfitfitfit");
    nets_refused(p2, "preprocess");

    /* nn_net_create checks it too; an empty one follows the dataset. */
    nn_meta m = a->meta;
    snprintf(m.preprocess, sizeof m.preprocess, "bogus");
    assert_null(nn_net_create(a->layers, a->nlayers, 1, 8, 8, &m, err, sizeof err));
    assert_non_null(strstr(err, "preprocess"));
    m.preprocess[0] = 0;
    snprintf(m.dataset, sizeof m.dataset, "fashion-mnist");
    b = nn_net_create(a->layers, a->nlayers, 1, 8, 8, &m, err, sizeof err);
    if (!b) fail_msg("create: %s", err);
    assert_string_equal(b->meta.preprocess, "fit");
    assert_string_equal(nn_preprocess_default("fashion-mnist"), "fit");
    assert_string_equal(nn_preprocess_default("mnist"), "mnist");
    assert_string_equal(nn_preprocess_default(NULL), "mnist");

    /* An ensemble feeds one image to every member: framings must agree. */
    nn_net *c = nets_make(ARCH_SMALL, 1, 8, 8, 6); /* "mnist" */
    nn_net *nets[2] = {b, c};
    assert_null(nn_ensemble_from_nets(nets, 2, err, sizeof err));
    assert_non_null(strstr(err, "preprocess")); /* b and c are freed by it */
    nn_net_free(a);
}

static int argmax_d(const double *v, int k)
{
    int b = 0;
    for (int i = 1; i < k; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* softmax(z / t) of one row, in double: the reference. */
static void softmax_t_ref(double *q, const float *z, int k, double t)
{
    double m = z[0], s = 0;
    for (int j = 1; j < k; j++) m = fmax(m, z[j]);
    for (int j = 0; j < k; j++) s += q[j] = exp((z[j] - m) / t);
    for (int j = 0; j < k; j++) q[j] /= s;
}

/* A float softmax of arguments a_j = (z_j - m) / t carries per term the
 * rounding of the difference and the division (2u relative on a_j, so
 * 2u|a_j| absolute) and of expf (a few ulps), and the sum's k terms plus
 * the final division: within (2 max|a| + k + 8) u relative of the exact
 * value. */
static double softmax_rel_bound(const double *q, int k)
{
    double amax = 0;
    for (int j = 0; j < k; j++)
        if (q[j] > 0) amax = fmax(amax, -log(q[j]) + log(q[argmax_d(q, k)]));
    return (2 * amax + k + 8) * 0x1p-24;
}

static void test_temperature_forward(void **s)
{
    (void)s;
    enum { N = 6, K = 10 };
    nn_net *a = nets_make(ARCH_SMALL, 1, 8, 8, 5);
    assert_true(a->meta.temperature == 1.0); /* default meta */
    float x[N * 64], z1[N * K], zt[N * K], p[N * K];
    nets_fill(x, N * 64, 21, 1.0f);
    nn_ws *ws = nn_ws_create(a, N, 0);
    assert_non_null(ws);
    nn_net_forward(a, ws, x, N, p, z1);
    /* At T = 1 the probabilities are the plain softmax. */
    for (int i = 0; i < N; i++) {
        double q[K];
        softmax_t_ref(q, z1 + i * K, K, 1.0);
        double rel = softmax_rel_bound(q, K);
        for (int j = 0; j < K; j++) assert_true(fabs(p[i * K + j] - q[j]) <= rel * q[j] + 1e-30);
    }
    const double temps[] = {2.5, 0.4, 1e-6, 1e6};
    for (int t = 0; t < 4; t++) {
        a->meta.temperature = temps[t];
        nn_net_forward(a, ws, x, N, p, zt);
        /* The logits are the raw ones, the probabilities softmax(z / T). */
        assert_memory_equal(zt, z1, sizeof z1);
        for (int i = 0; i < N; i++) {
            double q[K], sum = 0;
            softmax_t_ref(q, z1 + i * K, K, temps[t]);
            double rel = softmax_rel_bound(q, K);
            for (int j = 0; j < K; j++) {
                assert_true(isfinite(p[i * K + j]));
                /* Extreme temperatures: arguments so large that only the
                 * exact 0 of the top class and exp underflow remain. */
                double bound = temps[t] < 1e-3 ? 1e-30 : rel * q[j] + 1e-30;
                if (temps[t] > 1e3) bound = 1e-5;
                assert_true(fabs(p[i * K + j] - q[j]) <= bound);
                sum += p[i * K + j];
            }
            assert_true(fabs(sum - 1) < 1e-5);
            /* The argmax is kept. */
            if (temps[t] < 1e3) assert_int_equal(nn_argmax(p + i * K, K), nn_argmax(z1 + i * K, K));
        }
    }
    /* The serving path (folded copy, ensemble) divides by the same T. */
    a->meta.temperature = 2.5;
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/t.safetensors", tmpdir);
    assert_int_equal(nn_net_save(a, path, err, sizeof err), 0);
    nn_ensemble *e = nn_ensemble_load(path, err, sizeof err);
    if (!e) fail_msg("%s", err);
    assert_true(nn_ensemble_member_infer(e, 0)->meta.temperature == 2.5);
    nn_ensemble_ws *ew = nn_ensemble_ws_create(e, N);
    float pe[N * K];
    nn_ensemble_forward(e, ew, x, N, pe);
    for (int i = 0; i < N; i++) {
        double q[K];
        softmax_t_ref(q, z1 + i * K, K, 2.5);
        for (int j = 0; j < K; j++) assert_true(fabs(pe[i * K + j] - q[j]) < 1e-5);
    }
    nn_ensemble_ws_free(ew);
    nn_ensemble_free(e);
    /* Training ignores it: the loss is that of the raw logits. */
    nn_ws *tw = nn_ws_create(a, N, 1);
    assert_non_null(tw);
    const uint8_t y[N] = {0, 1, 2, 3, 4, 5};
    float l25 = nn_net_forward_train(a, tw, x, y, N, 0, 7, 0, NULL);
    a->meta.temperature = 1.0;
    float l1 = nn_net_forward_train(a, tw, x, y, N, 0, 7, 0, NULL);
    assert_true(l25 == l1);
    nn_ws_free(tw);
    nn_ws_free(ws);
    nn_net_free(a);
}

/* Rows whose labels follow softmax(z / T0) exactly: for probabilities
 * c_j / M (integers c_j summing to M), z_j = T0 log(c_j / M) and M copies
 * of the row, c_j of them labelled j. The NLL's derivative in 1/T is then
 * zero at T0 exactly (label frequencies = model probabilities), so the
 * fit must return T0, to the search's precision and the rounding of z
 * to float. */
static void test_temperature_fit(void **s)
{
    (void)s;
    enum { K = 4, M = 20, ROWS = 3 };
    static const int counts[ROWS][K] = {{14, 3, 2, 1}, {5, 5, 9, 1}, {1, 2, 3, 14}};
    float z[ROWS * M * K];
    uint8_t y[ROWS * M];
    const double temps[] = {2.0, 0.5, 1.0, 7.3};
    for (int t = 0; t < 4; t++) {
        int n = 0;
        for (int r = 0; r < ROWS; r++)
            for (int c = 0; c < K; c++)
                for (int i = 0; i < counts[r][c]; i++, n++) {
                    for (int j = 0; j < K; j++)
                        z[n * K + j] = (float)(temps[t] * log(counts[r][j] / (double)M));
                    y[n] = (uint8_t)c;
                }
        assert_int_equal(n, ROWS * M);
        double nll, got = nn_temperature_fit(z, y, n, K, &nll);
        assert_true(fabs(got / temps[t] - 1) < 1e-6);
        /* The NLL there is the labels' entropy, by hand: mean over rows of
         * -sum_j c_j/M log(c_j/M). */
        double h = 0;
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < K; j++)
                h -= counts[r][j] / (double)M * log(counts[r][j] / (double)M);
        assert_true(fabs(nll - h / ROWS) < 1e-6);
        assert_true(nn_temperature_nll(z, y, n, K, got * 1.1) > nll);
        assert_true(nn_temperature_nll(z, y, n, K, got / 1.1) > nll);
    }
    /* Every row right with a margin: sharper is always better, so the
     * search ends at its lower bound; all wrong: at its upper bound. */
    const float sep[] = {3, 0, 0, 0, 2, 1};
    const uint8_t right[] = {0, 1}, wrong[] = {1, 0};
    assert_true(fabs(nn_temperature_fit(sep, right, 2, 3, NULL) - NN_TFIT_MIN) < 1e-6);
    assert_true(fabs(nn_temperature_fit(sep, wrong, 2, 3, NULL) - NN_TFIT_MAX) < 1e-4);
    /* Bad input. */
    assert_true(nn_temperature_fit(sep, right, 0, 3, NULL) < 0);
    assert_true(nn_temperature_fit(sep, right, 2, 1, NULL) < 0);
    const uint8_t far[] = {0, 3};
    assert_true(nn_temperature_fit(sep, far, 2, 3, NULL) < 0);
}

static void test_weights_temperature(void **s)
{
    (void)s;
    char path[160], p2[160], err[512];
    nn_net *a = nets_make(ARCH_SMALL, 1, 8, 8, 5);
    /* T = 1 writes no key: uncalibrated files are as before. */
    snprintf(path, sizeof path, "%s/t1.safetensors", tmpdir);
    assert_int_equal(nn_net_save(a, path, err, sizeof err), 0);
    nn_st_file *f = nn_st_read(path, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_null(nn_st_meta(f, "temperature"));
    nn_st_free(f);
    /* A calibrated one reads back as the same float the forward divides by. */
    a->meta.temperature = 1.1602612345;
    assert_int_equal(nn_net_save(a, path, err, sizeof err), 0);
    nn_net *b = nn_net_load(path, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_true((float)b->meta.temperature == (float)a->meta.temperature);
    assert_memory_equal(b->params, a->params, sizeof(float) * a->nparams);
    nn_net_free(b);
    /* Absent: 1. */
    snprintf(p2, sizeof p2, "%s/t2.safetensors", tmpdir);
    rewrite_meta(path, p2, "temperature", NULL);
    b = nn_net_load(p2, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_true(b->meta.temperature == 1.0);
    nn_net_free(b);
    /* A value that cannot be used is refused with its name. */
    const char *bad[] = {"0", "-1", "nan", "inf", "-inf", "abc", "", "1e7", "1e-7", "2x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rewrite_meta(path, p2, "temperature", bad[i]);
        nets_refused(p2, "temperature");
    }
    rewrite_meta(path, p2, "temperature", "0.25");
    b = nn_net_load(p2, err, sizeof err);
    if (!b) fail_msg("load: %s", err);
    assert_true(b->meta.temperature == 0.25);
    nn_net_free(b);
    /* nn_net_create: 0 (a zeroed meta) is 1; outside the range an error. */
    nn_meta m = a->meta;
    m.temperature = 0;
    b = nn_net_create(a->layers, a->nlayers, 1, 8, 8, &m, err, sizeof err);
    if (!b) fail_msg("create: %s", err);
    assert_true(b->meta.temperature == 1.0);
    nn_net_free(b);
    const double worse[] = {-1, NAN, INFINITY, 1e-9, 1e9};
    for (int i = 0; i < 5; i++) {
        m.temperature = worse[i];
        assert_null(nn_net_create(a->layers, a->nlayers, 1, 8, 8, &m, err, sizeof err));
        assert_non_null(strstr(err, "temperature"));
    }
    nn_net_free(a);
}

static void test_arch_errors(void **s)
{
    (void)s;
    nn_layer L[NN_MAX_LAYERS];
    int nl;
    char err[256];
    assert_int_equal(nn_arch_parse("{", L, &nl, err, sizeof err), -1);
    assert_non_null(strstr(err, "JSON"));
    assert_int_equal(nn_arch_parse("[{\"type\":\"bogus\"}]", L, &nl, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown type"));
    assert_int_equal(
        nn_arch_parse("[{\"type\":\"conv2d\",\"out\":2.5,\"k\":3}]", L, &nl, err, sizeof err), -1);
    assert_int_equal(nn_arch_parse("[{\"type\":\"dense\",\"out\":10}]", L, &nl, err, sizeof err),
                     0);
    /* Dense on a 2-D map without flatten. */
    assert_null(nn_net_create(L, nl, 1, 28, 28, NULL, err, sizeof err));
    assert_non_null(strstr(err, "flatten"));
    /* Round trip through JSON text. */
    assert_int_equal(nn_arch_parse(ARCH_SMALL, L, &nl, err, sizeof err), 0);
    char *j = nn_arch_to_json(L, nl);
    nn_layer L2[NN_MAX_LAYERS];
    int nl2;
    assert_int_equal(nn_arch_parse(j, L2, &nl2, err, sizeof err), 0);
    assert_int_equal(nl, nl2);
    for (int i = 0; i < nl; i++) {
        assert_int_equal(L[i].kind, L2[i].kind);
        assert_int_equal(L[i].out, L2[i].out);
        assert_int_equal(L[i].k, L2[i].k);
    }
    free(j);
}

/* Deskewing: a slanted bar comes out upright with its centroid and ink kept,
 * an upright one is untouched, backward is the resampling's transpose, and
 * the layer works in a net (first layer only) on normalised input. */
static void test_deskew(void **s)
{
    (void)s;
    enum { H = 28, W = 28 };
    float x[H * W], y[H * W], bg = -0.5f;
    /* A bar 3 px wide along x = 14 + 0.4 (i - 13.5), on background bg,
     * drawn as three unit tents so each row's centroid is exactly on it. */
    for (int i = 0; i < H; i++)
        for (int j = 0; j < W; j++) {
            float c = 14.0f + 0.4f * ((float)i - 13.5f), v = 0.0f;
            for (int o = -1; o <= 1; o++) v += fmaxf(0.0f, 1.0f - fabsf((float)j - c - (float)o));
            x[i * W + j] = bg + v;
        }
    float my, a = nn_deskew_alpha(x, H, W, bg, &my);
    assert_float_equal(a, 0.4f, 1e-4f);
    assert_float_equal(my, 13.5f, 1e-4f);
    nn_deskew_forward(y, x, H, W, bg);
    double ink_x = 0, ink_y = 0;
    for (int i = 0; i < H; i++) {
        double rs = 0, rc = 0;
        for (int j = 0; j < W; j++) {
            assert_true(y[i * W + j] >= bg - 1e-6f && y[i * W + j] <= bg + 1.0f + 1e-6f);
            rs += y[i * W + j] - bg;
            rc += (y[i * W + j] - bg) * j;
            ink_x += x[i * W + j] - bg;
            ink_y += y[i * W + j] - bg;
        }
        /* Every row's ink sits over the same column: the bar stands upright
         * where the slanted one's centroid was. */
        assert_true(rs > 2.0);
        assert_float_equal(rc / rs, 14.0, 1e-3);
    }
    assert_float_equal(ink_y, ink_x, 1e-3 * ink_x);
    assert_float_equal(nn_deskew_alpha(y, H, W, bg, &my), 0.0f, 1e-4f);
    /* An upright, mirror-symmetric shape has alpha 0: output == input. */
    for (int i = 0; i < H * W; i++) x[i] = bg;
    for (int i = 6; i < 22; i++) x[i * W + 13] = x[i * W + 14] = bg + 1.0f;
    nn_deskew_forward(y, x, H, W, bg);
    assert_memory_equal(y, x, sizeof x);
    /* An empty plane passes through. */
    for (int i = 0; i < H * W; i++) x[i] = bg;
    nn_deskew_forward(y, x, H, W, bg);
    assert_memory_equal(y, x, sizeof x);
    /* Backward is the transpose of the (linear, for fixed moments)
     * resampling: <dy, y - bg> == <dx, x - bg> for random x and dy. */
    float dy[H * W], dx[H * W];
    nets_fill(x, H * W, 11, 1.0f);
    for (int i = 0; i < H * W; i++) x[i] = x[i] > 0.3f ? x[i] : bg;
    nets_fill(dy, H * W, 12, 1.0f);
    nn_deskew_forward(y, x, H, W, bg);
    nn_deskew_backward(dx, dy, x, H, W, bg);
    double l = 0, r = 0;
    for (int i = 0; i < H * W; i++) {
        l += dy[i] * (y[i] - bg);
        r += dx[i] * (x[i] - bg);
    }
    assert_true(fabs(nn_deskew_alpha(x, H, W, bg, &my)) > 0.01f);
    assert_float_equal(l, r, 1e-4 * (fabs(l) + 1.0));
    /* In a net: only as the first layer; it round-trips through JSON and
     * measures ink in pixel units (input 0 is background whatever the
     * normalisation), so the net's output does not depend on it. */
    nn_layer L[NN_MAX_LAYERS];
    int nl;
    char err[256];
    assert_int_equal(nn_arch_parse("[{\"type\":\"flatten\"},{\"type\":\"deskew\"},"
                                   "{\"type\":\"dense\",\"out\":10}]",
                                   L, &nl, err, sizeof err),
                     0);
    assert_null(nn_net_create(L, nl, 1, H, W, NULL, err, sizeof err));
    assert_non_null(strstr(err, "deskew must be the first layer"));
    const char *arch =
        "[{\"type\":\"deskew\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    assert_int_equal(nn_arch_parse(arch, L, &nl, err, sizeof err), 0);
    char *j = nn_arch_to_json(L, nl);
    assert_non_null(strstr(j, "\"deskew\""));
    free(j);
    nn_meta m0, m1;
    memset(&m0, 0, sizeof m0);
    m0.nclasses = 10;
    m0.input_mean = 0.0f;
    m0.input_std = 1.0f;
    for (int k = 0; k < 10; k++) snprintf(m0.labels[k], NN_LABEL_MAX, "%d", k);
    m1 = m0;
    m1.input_mean = 0.25f;
    m1.input_std = 0.5f;
    nn_net *n0 = nn_net_create(L, nl, 1, H, W, &m0, err, sizeof err);
    nn_net *n1 = nn_net_create(L, nl, 1, H, W, &m1, err, sizeof err);
    assert_non_null(n0);
    assert_non_null(n1);
    nn_ws *w0 = nn_ws_create(n0, 1, 0), *w1 = nn_ws_create(n1, 1, 0);
    for (int i = 0; i < H * W; i++) x[i] = 0.0f;
    for (int i = 4; i < 24; i++) x[i * W + 8 + i / 2] = 1.0f;
    /* Dense weights summing columns 14 and 15 (class k weighted k + 1);
     * n1's weights undo its normalisation, so both nets compute the same. */
    const nn_layer *D = &n0->layers[2];
    for (size_t k = 0; k < D->nw; k++) {
        size_t col = (k % (H * W)) % W;
        n0->params[D->w_off + k] = (float)(col == 14 || col == 15) * (float)(k / (H * W) + 1);
    }
    for (size_t k = 0; k < D->nw; k++) n1->params[D->w_off + k] = n0->params[D->w_off + k] * 0.5f;
    for (size_t k = 0; k < D->nb; k++) {
        double sw = 0;
        for (int q = 0; q < H * W; q++) sw += n0->params[D->w_off + k * H * W + q];
        n1->params[D->b_off + k] = (float)(0.25 * sw);
    }
    float l0[10], l1[10];
    nn_net_forward(n0, w0, x, 1, NULL, l0);
    nn_net_forward(n1, w1, x, 1, NULL, l1);
    for (int k = 0; k < 10; k++) assert_float_equal(l0[k], l1[k], 1e-3f * (1.0f + fabsf(l0[k])));
    /* The stroke (20 px, columns 10..19, centroid 14.5) now stands on
     * columns 14 and 15: class 9 scores 10 x the ink there, and most of
     * the ink is there (before deskewing only 4 of its pixels were). */
    assert_true(l0[9] > 10.0f * 16.0f);
    nn_ws_free(w0);
    nn_ws_free(w1);
    nn_net_free(n0);
    nn_net_free(n1);
}

/* The ensemble's answer is the mean of its members' probabilities, bit for
 * bit: members without batch norm run as they are (nothing folded), on the
 * same kernel path with the same batch as the members' own forward here,
 * so the only arithmetic the ensemble adds is (pa + pb) * 0.5f, which the
 * test repeats exactly. (Folded members are compared within a bound in
 * test_ensemble_folds and check_fold.) */
static void test_ensemble_mean(void **s)
{
    (void)s;
    static const char *arch =
        "[{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    nn_net *a = nets_make(arch, 1, 8, 8, 1), *b = nets_make(arch, 1, 8, 8, 2);
    float x[2 * 64], pa[20], pb[20], pe[20];
    nets_fill(x, 128, 4, 1.0f);
    nn_ws *wa = nn_ws_create(a, 2, 0), *wb = nn_ws_create(b, 2, 0);
    nn_net_forward(a, wa, x, 2, pa, NULL);
    nn_net_forward(b, wb, x, 2, pb, NULL);
    nn_ws_free(wa);
    nn_ws_free(wb);
    nn_net *nets[2] = {a, b};
    char err[128];
    nn_ensemble *e = nn_ensemble_from_nets(nets, 2, err, sizeof err);
    assert_non_null(e);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 2);
    nn_ensemble_forward(e, ws, x, 2, pe);
    double sum = 0;
    for (int i = 0; i < 20; i++) {
        assert_true(pe[i] == 0.5f * (pa[i] + pb[i]));
        sum += pe[i];
    }
    assert_float_equal(sum, 2.0, 1e-5);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
}

/* The members' disagreement by hand. Two members sure of different
 * classes: mean (.5, .5), H = log 2, each H = 0, so MI = log 2. Members
 * that agree, however unsure: 0. Two of (.8, .2) and (.2, .8):
 * H(.5,.5) - H(.8,.2) = log 2 + .8 log .8 + .2 log .2. Three members of
 * three classes, each sure of another: log 3, the largest there is. One
 * member: 0. The mean KL to the mean gives the same (the identity the
 * header states): checked on a mixed case. */
static void test_disagreement(void **s)
{
    (void)s;
    const float sure[] = {1, 0, 0, 1};
    assert_true(fabs(nn_disagreement(sure, 2, 2) - log(2.0)) < 1e-6);
    const float same[] = {.3f, .7f, .3f, .7f, .3f, .7f};
    assert_true(nn_disagreement(same, 3, 2) == 0.0f);
    const float soft[] = {.8f, .2f, .2f, .8f};
    double want = log(2.0) + .8 * log(.8) + .2 * log(.2);
    assert_true(fabs(nn_disagreement(soft, 2, 2) - want) < 1e-6);
    const float three[] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    assert_true(fabs(nn_disagreement(three, 3, 3) - log(3.0)) < 1e-6);
    assert_true(nn_disagreement(soft, 1, 2) == 0.0f);
    const float mix[] = {.6f, .3f, .1f, .2f, .5f, .3f, .05f, .15f, .8f};
    double q[3] = {0}, kl = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) q[j] += mix[i * 3 + j] / 3.0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) kl += mix[i * 3 + j] * log(mix[i * 3 + j] / q[j]) / 3.0;
    assert_true(fabs(nn_disagreement(mix, 3, 3) - kl) < 1e-6);

    /* Through the one forward pass: each image's score is that of the
     * members' own probabilities; an ensemble of one scores 0. */
    static const char *arch =
        "[{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    enum { N = 3, K = 10 };
    nn_net *nets[3];
    float x[N * 64], pm[3][N * K], pe[N * K], pe2[N * K], d[N], energy[N];
    nets_fill(x, N * 64, 4, 1.0f);
    for (int i = 0; i < 3; i++) {
        nets[i] = nets_make(arch, 1, 8, 8, 11 + i);
        nn_ws *w = nn_ws_create(nets[i], N, 0);
        nn_net_forward(nets[i], w, x, N, pm[i], NULL);
        nn_ws_free(w);
    }
    char err[128];
    nn_ensemble *e = nn_ensemble_from_nets(nets, 3, err, sizeof err);
    if (!e) fail_msg("%s", err);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, N);
    nn_ensemble_forward_disagree(e, ws, x, N, pe, energy, NULL, d);
    nn_ensemble_forward(e, ws, x, N, pe2);
    assert_memory_equal(pe, pe2, sizeof pe); /* the mean is unchanged */
    for (int r = 0; r < N; r++) {
        float rows[3 * K];
        for (int i = 0; i < 3; i++) memcpy(rows + i * K, pm[i] + r * K, sizeof(float) * K);
        assert_true(fabs(d[r] - nn_disagreement(rows, 3, K)) < 1e-6);
        assert_true(d[r] > 1e-4); /* three random nets do disagree */
    }
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
    nn_net *one[1] = {nets_make(arch, 1, 8, 8, 11)};
    e = nn_ensemble_from_nets(one, 1, err, sizeof err);
    if (!e) fail_msg("%s", err);
    ws = nn_ensemble_ws_create(e, N);
    d[0] = d[1] = d[2] = -1;
    nn_ensemble_forward_disagree(e, ws, x, N, pe, NULL, NULL, d);
    assert_true(d[0] == 0 && d[1] == 0 && d[2] == 0);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* NAME.ensemble lists: members relative to the list's directory, comments,
 * blank lines, spaces, the stated accuracy; loading one loads its members;
 * every malformed list is refused with a message. */
static void test_model_stem(void **s)
{
    (void)s;
    int list = -1;
    assert_int_equal(nn_model_stem("cnn.safetensors", &list), 3);
    assert_int_equal(list, 0);
    assert_int_equal(nn_model_stem("cnn-ensemble.ensemble", &list), 12);
    assert_int_equal(list, 1);
    assert_int_equal(nn_model_stem("a.ensemble.safetensors", &list), 10);
    assert_int_equal(list, 0);
    /* No stem, another suffix, a suffix inside the name: not a model. */
    assert_int_equal(nn_model_stem(".safetensors", NULL), 0);
    assert_int_equal(nn_model_stem("cnn.safetensors.bak", NULL), 0);
    assert_int_equal(nn_model_stem("notes.txt", &list), 0);
    assert_int_equal(list, 0);
}

static void test_ensemble_list(void **s)
{
    (void)s;
    char dir[128], path[256], list[2048], err[512];
    snprintf(dir, sizeof dir, "%s/ens", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(path, sizeof path, "%s/sub", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    const char *names[2] = {"a.safetensors", "sub/b.safetensors"};
    for (int i = 0; i < 2; i++) {
        nn_net *n = nets_make(ARCH_SMALL, 1, 8, 8, (uint64_t)i + 1);
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        assert_int_equal(nn_net_save(n, path, err, sizeof err), 0);
        nn_net_free(n);
    }
    snprintf(path, sizeof path, "%s/duo.ensemble", dir);
    write_text(
        path,
        "# two members\n\n  a.safetensors  \nsub/b.safetensors # second\r\ntest_accuracy=0.9876\n");
    double acc = 0;
    assert_int_equal(nn_ensemble_list_read(path, list, sizeof list, &acc, err, sizeof err), 0);
    char want[512];
    snprintf(want, sizeof want, "%s/a.safetensors,%s/sub/b.safetensors", dir, dir);
    assert_string_equal(list, want);
    assert_true(acc == 0.9876);
    nn_ensemble *e = nn_ensemble_load(path, err, sizeof err);
    if (!e) fail_msg("%s", err);
    assert_int_equal(nn_ensemble_size(e), 2);
    nn_ensemble_free(e);

    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"# nothing\n\n", "no member"},
        {"a.safetensors\ntest_accuracy=1.5\n", "test_accuracy"},
        {"a.safetensors\ntest_accuracy=x\n", "test_accuracy"},
        {"a.safetensors,sub/b.safetensors\n", "','"},
        {"missing.safetensors\n", "missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i].text);
        err[0] = 0;
        assert_null(nn_ensemble_load(path, err, sizeof err));
        if (!strstr(err, bad[i].msg))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err, bad[i].msg);
    }
    snprintf(path, sizeof path, "%s/none.ensemble", dir);
    assert_null(nn_ensemble_load(path, err, sizeof err));
    assert_non_null(strstr(err, "none.ensemble"));
}

static void test_augment(void **s)
{
    (void)s;
    uint8_t img[28 * 28];
    for (int i = 0; i < 784; i++) img[i] = (uint8_t)(i * 37 % 256);
    float a[784], b[784], scratch[3 * 784];
    nn_aug_cfg zero = {0};
    nn_augment(a, img, 28, 28, &zero, 1, 5, scratch);
    for (int i = 0; i < 784; i++) assert_float_equal(a[i], img[i] / 255.0f, 0);
    nn_aug_cfg cfg = {.max_rot = 15.0f,
                      .max_zoom = 0.15f,
                      .max_shift = 0.1f,
                      .elastic_alpha = 30.0f,
                      .elastic_sigma = 4.0f};
    nn_augment(a, img, 28, 28, &cfg, 7, 42, scratch);
    nn_augment(b, img, 28, 28, &cfg, 7, 42, scratch);
    assert_memory_equal(a, b, sizeof a);
    nn_augment(b, img, 28, 28, &cfg, 7, 43, scratch);
    assert_true(memcmp(a, b, sizeof a) != 0);
    /* A shift by an integer moves pixels exactly. */
    nn_affine t;
    nn_affine_identity(&t);
    t.dx = 2;
    t.dy = -1;
    nn_affine_apply(a, img, 28, 28, &t);
    assert_float_equal(a[10 * 28 + 12], img[11 * 28 + 10] / 255.0f, 1e-6);
    assert_float_equal(a[27 * 28 + 0], 0.0f, 0);

    /* A displacement field moves the affine map's sampling points, so the
     * image is resampled once: half a pixel of shift undone by half a
     * pixel of displacement gives the image back exactly (resampling the
     * shifted image again would average neighbours). */
    float fx[784], fy[784];
    for (int i = 0; i < 784; i++) fx[i] = 0.5f, fy[i] = -0.25f;
    nn_affine_identity(&t);
    t.dx = 0.5f;
    t.dy = -0.25f;
    nn_warp(a, img, 28, 28, &t, fx, fy);
    for (int i = 0; i < 784; i++) assert_float_equal(a[i], img[i] / 255.0f, 1e-6);
    /* Without a field nn_warp is nn_affine_apply. */
    t.rot_deg = 9.0f;
    t.scale = 1.1f;
    nn_warp(a, img, 28, 28, &t, NULL, NULL);
    nn_affine_apply(b, img, 28, 28, &t);
    assert_memory_equal(a, b, sizeof a);

    /* Pen width: each image lies between its 1-pixel grey erosion and
     * dilation (cross-shaped, zero outside), and both thicker and thinner
     * strokes are drawn. A bar 3 px wide in the middle of the image. */
    uint8_t bar[784] = {0};
    float lo[784], hi[784];
    for (int y = 4; y < 24; y++)
        for (int x = 12; x < 15; x++) bar[y * 28 + x] = 200;
    for (int i = 0; i < 784; i++) {
        int y = i / 28, x = i % 28, any = 0, all = 1;
        const int nb[5][2] = {{0, 0}, {0, 1}, {0, -1}, {1, 0}, {-1, 0}};
        for (int k = 0; k < 5; k++) {
            int yy = y + nb[k][0], xx = x + nb[k][1];
            int on = yy >= 0 && yy < 28 && xx >= 0 && xx < 28 && bar[yy * 28 + xx];
            any |= on, all &= on;
        }
        lo[i] = all ? 200 / 255.0f : 0.0f;
        hi[i] = any ? 200 / 255.0f : 0.0f;
    }
    nn_aug_cfg pen = {0};
    pen.max_stroke = 0.8f;
    assert_false(nn_aug_is_identity(&pen));
    float ink0 = 20 * 3 * 200 / 255.0f;
    int thicker = 0, thinner = 0;
    for (uint64_t c = 0; c < 200; c++) {
        nn_augment(a, bar, 28, 28, &pen, 11, c, scratch);
        float ink = 0;
        for (int i = 0; i < 784; i++) {
            assert_true(a[i] >= lo[i] - 1e-6f && a[i] <= hi[i] + 1e-6f);
            ink += a[i];
        }
        thicker += ink > ink0 + 1.0f;
        thinner += ink < ink0 - 1.0f;
    }
    assert_in_range(thicker, 50, 150);
    assert_in_range(thinner, 50, 150);
    /* Blur keeps the ink of an image away from the border and softens the
     * bar's edge: the column beside it gets over 0.01 of ink once sigma
     * passes about 0.4, i.e. on about 60% of images (sigma uniform in
     * [0, 1]). */
    nn_aug_cfg soft = {0};
    soft.max_blur = 1.0f;
    assert_false(nn_aug_is_identity(&soft));
    int softened = 0;
    for (uint64_t c = 0; c < 100; c++) {
        nn_augment(a, bar, 28, 28, &soft, 5, c, scratch);
        float ink = 0;
        for (int i = 0; i < 784; i++) ink += a[i];
        assert_float_equal(ink, ink0, 1e-3 * ink0);
        softened += a[14 * 28 + 11] > 0.01f;
    }
    assert_in_range(softened, 45, 75);

    /* Flip probability 1 mirrors every image exactly and nothing else. */
    nn_aug_cfg fl = {0};
    fl.flip_prob = 1.0f;
    assert_false(nn_aug_is_identity(&fl));
    nn_augment(a, img, 28, 28, &fl, 7, 42, scratch);
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++)
            assert_float_equal(a[y * 28 + x], img[y * 28 + 27 - x] / 255.0f, 0);
    /* A flip combined with a shift: mirror of the shifted image. */
    nn_affine_identity(&t);
    t.dx = 3;
    nn_affine_apply(b, img, 28, 28, &t);
    t.flip = 1;
    nn_affine_apply(a, img, 28, 28, &t);
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) assert_float_equal(a[y * 28 + x], b[y * 28 + 27 - x], 0);
    /* Adding flips leaves the other draws unchanged (old runs reproduce),
     * and p = 0.5 flips about half the images. */
    int flips = 0;
    nn_aug_cfg half = cfg;
    half.flip_prob = 0.5f;
    for (uint64_t c = 0; c < 2000; c++) {
        nn_affine p0, p1;
        nn_aug_sample(&p0, &cfg, 28, 28, 9, c);
        nn_aug_sample(&p1, &half, 28, 28, 9, c);
        assert_int_equal(p0.flip, 0);
        assert_float_equal(p0.rot_deg, p1.rot_deg, 0);
        assert_float_equal(p0.scale, p1.scale, 0);
        assert_float_equal(p0.dx, p1.dx, 0);
        assert_float_equal(p0.dy, p1.dy, 0);
        flips += p1.flip;
    }
    assert_in_range(flips, 900, 1100);
    /* Shifts are fractions of each side: on a 20-row, 40-column image a
     * 10% shift reaches 4 px across and 2 px down, no further. */
    nn_aug_cfg sh = {.max_shift = 0.1f};
    float mx = 0.0f, my = 0.0f;
    for (uint64_t c = 0; c < 2000; c++) {
        nn_affine p;
        nn_aug_sample(&p, &sh, 20, 40, 9, c);
        mx = fmaxf(mx, fabsf(p.dx));
        my = fmaxf(my, fabsf(p.dy));
    }
    assert_float_equal(mx, 4.0f, 0.05f);
    assert_float_equal(my, 2.0f, 0.05f);
}

/* Short training: a few thousand images, one epoch, well above chance;
 * and the same seed gives the same weights. */
/* ECE against a computation by hand: five rows of three classes, 15 bins.
 *   row  probabilities      label  confidence  bin (c*15)   correct
 *   0    .90 .05 .05        0      .90         13 (13.5)    1
 *   1    .05 .91 .04        0      .91         13 (13.65)   0
 *   2    .50 .30 .20        0      .50          7 (7.5)     1
 *   3    .42 .33 .25        2      .42          6 (6.3)     0
 *   4    .62 .20 .18        0      .62          9 (9.3)     1
 * |correct - confidence sum| per bin: 13: |1 - 1.81| = .81, 7: .5,
 * 6: .42, 9: .38; ECE = 2.11 / 5 = .422. */
static void test_ece(void **s)
{
    (void)s;
    const float p[] = {.90f, .05f, .05f, .05f, .91f, .04f, .50f, .30f,
                       .20f, .42f, .33f, .25f, .62f, .20f, .18f};
    const uint8_t y[] = {0, 0, 0, 2, 0};
    assert_true(fabs(nn_ece(p, y, 5, 3, NN_ECE_BINS) - 0.422) < 1e-6);
    /* Four rows of confidence .75 in one bin, three right: |3 - 4 * .75|
     * = 0, perfectly calibrated. */
    const float q[] = {.75f, .25f, .75f, .25f, .25f, .75f, .75f, .25f};
    const uint8_t z[] = {0, 0, 1, 1};
    assert_true(fabs(nn_ece(q, z, 4, 2, NN_ECE_BINS)) < 1e-7);
    /* One bin: |accuracy - mean confidence| = |3/5 - 3.35/5| = .07. */
    assert_true(fabs(nn_ece(p, y, 5, 3, 1) - 0.07) < 1e-6);
    /* A confidence of exactly 1 is in the last bin, not past it. */
    const float one[] = {1.0f, 0.0f};
    const uint8_t l1[] = {1};
    assert_true(fabs(nn_ece(one, l1, 1, 2, NN_ECE_BINS) - 1.0) < 1e-12);
    assert_true(nn_ece(p, y, 0, 3, NN_ECE_BINS) == 0.0);
    assert_true(nn_ece(p, y, 5, 3, 0) < 0);
    assert_true(nn_ece(p, y, 5, 3, NN_ECE_MAX_BINS + 1) < 0);
    /* Edges: .6 = 9/15 is within 1e-4 of one; none of the five rows is. */
    assert_int_equal(nn_ece_edge(p, 5, 3, NN_ECE_BINS, 1e-4f), 0);
    const float e[] = {.6f, .4f, .60005f, .39995f, .6002f, .3998f, 1.0f, 0.0f};
    assert_int_equal(nn_ece_edge(e, 4, 2, NN_ECE_BINS, 1e-4f), 2);
}

/* The calibrated model's ECE, by hand. Two rows of confidence .5 in one
 * bin: right answers 0, 1 or 2 with probability 1/4, 1/2, 1/4, so
 * E|right - 1| = 1/2 and the floor is 1/2 / 2 = .25. Rows .6 and .9 in
 * one bin: P(0) = .4 * .1 = .04, P(1) = .6 * .1 + .4 * .9 = .42,
 * P(2) = .54, sum 1.5, E|right - 1.5| = .06 + .21 + .27 = .54, floor .27;
 * with 15 bins each is alone in its bin, where E|right - c| =
 * 2c(1 - c): (.48 + .18) / 2 = .33. */
static void test_ece_floor(void **s)
{
    (void)s;
    double sd;
    const float half[] = {.5f, .5f, .5f, .5f};
    assert_true(fabs(nn_ece_floor(half, 2, 2, NN_ECE_BINS, &sd) - 0.25) < 1e-12);
    assert_true(fabs(sd - 0.25) < 1e-12); /* |right - 1| is 1, 0, 1: variance 1/4, / 2 */
    const float two[] = {.6f, .4f, .1f, .9f};
    assert_true(fabs(nn_ece_floor(two, 2, 2, 1, NULL) - 0.27) < 1e-6);
    assert_true(fabs(nn_ece_floor(two, 2, 2, NN_ECE_BINS, &sd) - 0.33) < 1e-6);
    /* Alone in its bin, |right - c| is 1 - c or c: variance
     * c(1 - c) - (2c(1 - c))^2, .0096 for .6 and .0576 for .9; the sum
     * .0672 over n = 2 gives sqrt(.0672) / 2. */
    assert_true(fabs(sd - sqrt(0.0672) / 2) < 1e-6);
    /* Sure answers can only be right: no floor, no spread. */
    const float sure[] = {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f};
    assert_true(nn_ece_floor(sure, 3, 2, NN_ECE_BINS, &sd) == 0.0 && sd == 0.0);
    /* Many rows: for m rows of one confidence c the floor tends to
     * sqrt(2 c (1 - c) / (pi m)) (a normal count); at m = 4000, c = .9
     * that is .003785, and the exact value is within 1% of it. */
    enum { M = 4000 };
    float *many = malloc(sizeof(float) * 2 * M);
    assert_non_null(many);
    for (int i = 0; i < M; i++) many[2 * i] = .9f, many[2 * i + 1] = .1f;
    double want = sqrt(2 * .9 * .1 / (acos(-1.0) * M));
    assert_true(fabs(nn_ece_floor(many, M, 2, NN_ECE_BINS, NULL) / want - 1) < 0.01);
    free(many);
    assert_true(nn_ece_floor(half, 0, 2, NN_ECE_BINS, NULL) == 0.0);
    assert_true(nn_ece_floor(half, 2, 2, 0, NULL) == -1.0);
}

/* MNIST's training (which 0) or test (1) set from MNIST_DIR or data/mnist. */
static nn_dataset *load_mnist(int which)
{
    const char *dir = getenv("MNIST_DIR") ? getenv("MNIST_DIR") : "data/mnist";
    char err[512];
    nn_dataset *d = nn_dataset_load_dir(dir, which, 10, err, sizeof err);
    if (!d) fail_msg("%s (run `make data`)", err);
    return d;
}

/* The training tests' recipe: Adam at a constant 2e-3, batch 32, two
 * threads, one epoch, seed 3. */
static void small_cfg(nn_train_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->batch = 32;
    cfg->threads = 2;
    cfg->epochs = 1;
    cfg->seed = 3;
    nn_opt_cfg_default(&cfg->opt, NN_OPT_ADAM);
    cfg->sched.kind = NN_SCHED_CONST;
    cfg->sched.lr = 2e-3f;
}

static void test_training_smoke(void **s)
{
    (void)s;
    char err[512];
    nn_dataset *tr = load_mnist(0), *te = load_mnist(1);
    const char *arch = "[{\"type\":\"conv2d\",\"out\":8,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
                       "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"flatten\"},"
                       "{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"dense\",\"out\":10}]";
    float *params[2];
    /* The two shards on two threads, then in order on this one: the same
     * weights to the bit. */
    for (int run = 0; run < 2; run++) {
        nn_net *net = nets_make(arch, 1, 28, 28, 11);
        nn_train_cfg cfg;
        small_cfg(&cfg);
        cfg.aug.max_rot = 5;
        cfg.shards = run == 0 ? NN_SHARDS_THREADS : NN_SHARDS_SERIAL;
        nn_trainer *t = nn_trainer_create(net, &cfg, err, sizeof err);
        assert_non_null(t);
        double loss, acc;
        assert_int_equal(
            nn_trainer_epoch(t, tr->images, tr->labels, 4000, 0, NULL, NULL, NULL, &loss, &acc), 0);
        assert_true(loss < 1.0);
        nn_ensemble *e = nn_ensemble_view(net);
        assert_non_null(e);
        float *p = malloc(sizeof(float) * 10 * 2000);
        assert_int_equal(nn_eval_probs(e, te->images, 2000, NULL, 2, p), 0);
        nn_ensemble_free(e);
        double ta = nn_accuracy(p, te->labels, 2000, 10, NULL);
        print_message("smoke: 4000 images, 1 epoch: loss %.3f, test accuracy %.3f\n", loss, ta);
        assert_true(ta > 0.85);
        free(p);
        params[run] = malloc(sizeof(float) * net->nparams);
        memcpy(params[run], net->params, sizeof(float) * net->nparams);
        if (run == 1) assert_memory_equal(params[0], params[1], sizeof(float) * net->nparams);
        nn_trainer_free(t);
        nn_net_free(net);
    }
    free(params[0]);
    free(params[1]);
    nn_dataset_free(tr);
    nn_dataset_free(te);

    /* Settings out of range: no trainer, a message. */
    nn_net *net = nets_make(arch, 1, 28, 28, 11);
    nn_train_cfg cfg;
    small_cfg(&cfg);
    cfg.shards = 3;
    assert_null(nn_trainer_create(net, &cfg, err, sizeof err));
    assert_non_null(strstr(err, "shards mode 3"));
    small_cfg(&cfg);
    cfg.batch = 0;
    assert_null(nn_trainer_create(net, &cfg, err, sizeof err));
    assert_non_null(strstr(err, "batch 0"));
    nn_net_free(net);
}

/* Outlier exposure does what it is for: trained with boxes and noise as
 * outliers, a small net is less sure of unseen boxes and noise than of
 * digits, and still reads the digits. */
static void make_junk(uint8_t *img, int n, uint64_t seed)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        uint8_t *q = img + (size_t)i * 784;
        if (i % 2) { /* noise */
            for (int p = 0; p < 784; p++) q[p] = (uint8_t)nn_rng_below(&r, 256);
        } else { /* a filled box */
            int x0 = 2 + (int)nn_rng_below(&r, 10), y0 = 2 + (int)nn_rng_below(&r, 10);
            int x1 = x0 + 8 + (int)nn_rng_below(&r, 8), y1 = y0 + 8 + (int)nn_rng_below(&r, 8);
            memset(q, 0, 784);
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++) q[y * 28 + x] = 255;
        }
    }
}

static double mean_top(const float *p, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += p[i * 10 + nn_argmax(p + i * 10, 10)];
    return s / n;
}

static double mean_of(const float *v, int n)
{
    double s = 0.0;
    for (int i = 0; i < n; i++) s += v[i];
    return s / n;
}

static void test_training_outliers(void **s)
{
    (void)s;
    char err[512];
    nn_dataset *tr = load_mnist(0), *te = load_mnist(1);
    const char *arch = "[{\"type\":\"conv2d\",\"out\":8,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
                       "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"flatten\"},"
                       "{\"type\":\"dense\",\"out\":10}]";
    uint8_t *junk = malloc(784 * 600);
    make_junk(junk, 400, 1);             /* for training */
    make_junk(junk + 784 * 400, 200, 2); /* unseen */
    /* 0: no outliers, 1: the uniform target, 2: energy margins. */
    double top_junk[3], top_digits[3], acc[3], e_junk[3], e_digits[3];
    for (int oe = 0; oe < 3; oe++) {
        nn_net *net = nets_make(arch, 1, 28, 28, 11);
        nn_train_cfg cfg;
        small_cfg(&cfg);
        cfg.oe_batch = oe ? 16 : 0;
        cfg.oe_weight = oe == 2 ? 0.1f : 0.5f;
        cfg.oe_energy = oe == 2;
        cfg.m_in = -8.0f;
        cfg.m_out = -3.0f;
        nn_trainer *t = nn_trainer_create(net, &cfg, err, sizeof err);
        assert_non_null(t);
        if (oe) nn_trainer_set_outliers(t, junk, 400);
        double loss, a;
        assert_int_equal(
            nn_trainer_epoch(t, tr->images, tr->labels, 4000, 0, NULL, NULL, NULL, &loss, &a), 0);
        nn_ensemble *e = nn_ensemble_view(net);
        float *p = malloc(sizeof(float) * 10 * 1000), *pj = malloc(sizeof(float) * 10 * 200);
        float *en = malloc(sizeof(float) * 1000), *enj = malloc(sizeof(float) * 200);
        assert_int_equal(nn_eval_scores(e, te->images, 1000, NULL, 2, p, en, NULL, NULL), 0);
        assert_int_equal(nn_eval_scores(e, junk + 784 * 400, 200, NULL, 2, pj, enj, NULL, NULL), 0);
        acc[oe] = nn_accuracy(p, te->labels, 1000, 10, NULL);
        top_digits[oe] = mean_top(p, 1000);
        top_junk[oe] = mean_top(pj, 200);
        e_digits[oe] = mean_of(en, 1000);
        e_junk[oe] = mean_of(enj, 200);
        print_message("outliers %d: accuracy %.3f, mean top probability digits %.3f, junk %.3f, "
                      "mean energy digits %.2f, junk %.2f\n",
                      oe, acc[oe], top_digits[oe], top_junk[oe], e_digits[oe], e_junk[oe]);
        free(p);
        free(pj);
        free(en);
        free(enj);
        nn_ensemble_free(e);
        nn_trainer_free(t);
        nn_net_free(net);
    }
    assert_true(acc[1] > 0.85);
    /* Uniform over 10 classes is 0.1: junk must come out far less sure
     * than digits, and less sure than without outlier exposure. */
    assert_true(top_junk[1] < 0.5 * top_digits[1]);
    assert_true(top_junk[1] < top_junk[0]);
    /* Energy margins (-8, -3): digits pulled below, unseen junk above. */
    assert_true(acc[2] > 0.85);
    assert_true(e_digits[2] < -6.0 && e_junk[2] > -4.0);
    assert_true(e_junk[2] - e_digits[2] > e_junk[0] - e_digits[0] + 2.0);
    free(junk);
    nn_dataset_free(tr);
    nn_dataset_free(te);
}

/* Inference of a batch runs the big CNN's first layers depth-first
 * (nn_ws_depth_first): the answers of a batch, of the same batch layer by
 * layer, and of each image alone agree within the reordering bound
 * test_batch.c derives (1e-4 on a probability), while the images' own
 * answers differ by far more, so an image answered from another's
 * activations fails. LeNet and the MLP have no layer with inputs that
 * large: no prefix. */
#define DF_TOL_PROB 1e-4
static void test_depth_first(void **s)
{
    (void)s;
    char err[256];
    const char *none[] = {"lenet", "mlp"};
    for (int a = 0; a < 2; a++) {
        nn_net *net = nets_make(nn_arch_preset(none[a])->arch, 1, 28, 28, 5);
        nn_ws *ws = nn_ws_create(net, 8, 0);
        assert_non_null(ws);
        assert_int_equal(nn_ws_depth_first(ws, NULL), 0);
        nn_ws_free(ws);
        nn_net_free(net);
    }
    nn_net *net = nets_make(nn_arch_preset("cnn")->arch, 1, 28, 28, 5);
    nn_net *f = nn_net_fold_bn(net, err, sizeof err);
    assert_non_null(f);
    enum { N = 13, K = 10 };
    nn_ws *ws = nn_ws_create(f, N, 0);
    assert_non_null(ws);
    int sub = 0, split = nn_ws_depth_first(ws, &sub);
    /* The prefix takes the 26x26, 24x24 and 12x12 (stride 2) convolutions
     * (inputs of 86 and 74 KiB per image), not the whole net. */
    int convs = 0;
    for (int i = 0; i < split; i++) convs += f->layers[i].kind == NN_CONV2D;
    assert_int_equal(convs, 3);
    assert_true(split < f->nlayers);
    assert_true(sub >= 1 && sub < N);
    static float x[N * 784];
    nets_fill(x, N * 784, 77, 1.0f);
    for (int i = 0; i < N * 784; i++) x[i] = fabsf(x[i]);
    float pdf[N * K], pbl[N * K], p1[N * K];
    nn_net_forward(f, ws, x, N, pdf, NULL);
    nn_ws_set_depth_first(ws, 0);
    nn_net_forward(f, ws, x, N, pbl, NULL);
    nn_ws_set_depth_first(ws, 1);
    for (int i = 0; i < N; i++) nn_net_forward(f, ws, x + i * 784, 1, p1 + i * K, NULL);
    double far = 0.0;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < K; c++) {
            assert_true(fabs((double)pdf[i * K + c] - pbl[i * K + c]) <= DF_TOL_PROB);
            assert_true(fabs((double)pdf[i * K + c] - p1[i * K + c]) <= DF_TOL_PROB);
            if (i > 0) {
                double d = fabs((double)pdf[i * K + c] - pdf[c]);
                if (d > far) far = d;
            }
        }
    assert_true(far > 100 * DF_TOL_PROB);
    nn_ws_free(ws);
    nn_net_free(f);
    nn_net_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_dense),
        cmocka_unit_test(test_grad_conv),
        cmocka_unit_test(test_grad_conv_1x1),
        cmocka_unit_test(test_grad_maxpool),
        cmocka_unit_test(test_grad_batchnorm),
        cmocka_unit_test(test_grad_first_batchnorm),
        cmocka_unit_test(test_grad_dropout),
        cmocka_unit_test(test_grad_batchnorm_dropout),
        cmocka_unit_test(test_loss_values),
        cmocka_unit_test(test_outlier_loss),
        cmocka_unit_test(test_grad_outliers),
        cmocka_unit_test(test_grad_energy_margins),
        cmocka_unit_test(test_energy_margin_loss),
        cmocka_unit_test(test_training_outliers),
        cmocka_unit_test(test_conv_group_vs_ref),
        cmocka_unit_test(test_conv_dense_packed),
        cmocka_unit_test(test_conv_first_nhwc),
        cmocka_unit_test(test_conv_few_sparse),
        cmocka_unit_test(test_fold_bn),
        cmocka_unit_test(test_ensemble_folds),
        cmocka_unit_test(test_dense_fast_vs_ref),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_maxpool2_tiled),
        cmocka_unit_test(test_deskew),
        cmocka_unit_test(test_arch_errors),
        cmocka_unit_test(test_weights_round_trip),
        cmocka_unit_test(test_weights_corruption),
        cmocka_unit_test(test_weights_preprocess),
        cmocka_unit_test(test_weights_temperature),
        cmocka_unit_test(test_temperature_forward),
        cmocka_unit_test(test_temperature_fit),
        cmocka_unit_test(test_depth_first),
        cmocka_unit_test(test_ensemble_mean),
        cmocka_unit_test(test_disagreement),
        cmocka_unit_test(test_ensemble_list),
        cmocka_unit_test(test_model_stem),
        cmocka_unit_test(test_augment),
        cmocka_unit_test(test_ece),
        cmocka_unit_test(test_ece_floor),
        cmocka_unit_test(test_training_smoke),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
