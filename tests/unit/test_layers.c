/* test_layers.c - the element-wise layers' kernels on their own: batch
 * norm's fast (vectorised) pair against its plain reference, inference
 * batch norm against its formula, ReLU and dropout forward/backward.
 * (Every layer's backward is also checked against finite differences
 * through whole nets in test_nn.c.) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/gemm.h"
#include "nn/layers.h"
#include "nn/rng.h"

static void fill(float *v, size_t n, uint64_t seed, float lo, float hi)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * (float)nn_rng_uniform(&r);
}

/* The fast kernels sum in 8 float lanes, the reference in double: over at
 * most n*S/8 + 8 float additions per lane the relative error of a sum is
 * below (n*S/8 + 8) * FLT_EPSILON, here under 80 * 1.2e-7 ~ 1e-5; results
 * are a few such sums multiplied together. */
static void near(float a, float b, double scale, const char *what, size_t i)
{
    double tol = 4e-5 * (1.0 + scale);
    if (!(fabs((double)a - b) <= tol))
        fail_msg("%s[%zu]: %.9g vs %.9g (tolerance %.3g)", what, i, a, b, tol);
}

/* The batch norm's training forward and backward against the double
 * references; shapes include more channels than one block of per-channel
 * sums (300, and 513: two blocks and one channel more). */
static void test_batchnorm_fast_vs_ref(void **s)
{
    (void)s;
    const int shapes[][3] = {{4, 3, 25},  {7, 5, 1},   {2, 8, 13},
                             {16, 2, 49}, {3, 300, 5}, {2, 513, 3}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int n = shapes[k][0], C = shapes[k][1], S = shapes[k][2];
        size_t N = (size_t)n * C * S;
        float *x = malloc(N * 4), *y1 = malloc(N * 4), *y2 = malloc(N * 4), *h1 = malloc(N * 4),
              *h2 = malloc(N * 4), *dy = malloc(N * 4), *dx1 = malloc(N * 4), *dx2 = malloc(N * 4);
        float *pc = calloc(15 * (size_t)C, sizeof(float));
        assert_true(x && y1 && y2 && h1 && h2 && dy && dx1 && dx2 && pc);
        float *gamma = pc, *beta = pc + C, *inv1 = pc + 2 * C, *inv2 = pc + 3 * C,
              *mean1 = pc + 4 * C, *rm = pc + 5 * C, *rv = pc + 6 * C, *dg1 = pc + 7 * C,
              *dg2 = pc + 8 * C, *db1 = pc + 9 * C, *db2 = pc + 10 * C, *dga = pc + 11 * C,
              *dba = pc + 12 * C, *dgb = pc + 13 * C, *dbb = pc + 14 * C;
        fill(x, N, 1 + k, -2.0f, 3.0f);
        /* Channel 0 far from zero against its spread: the variance
         * taken as E x^2 - (E x)^2 about 0 would cancel to a few digits
         * (the forward takes it about the first image's mean). */
        for (int b = 0; b < n; b++)
            for (int q = 0; q < S; q++) x[(size_t)b * C * S + q] += 1000.0f;
        fill(dy, N, 2 + k, -1.0f, 1.0f);
        fill(gamma, C, 3 + k, 0.5f, 1.5f);
        fill(beta, C, 4 + k, -0.5f, 0.5f);
        for (int c = 0; c < C; c++) rv[c] = 1.0f;
        nn_batchnorm_forward_train(y1, mean1, inv1, rm, rv, x, gamma, beta, 1e-5f, 0.1f, n, C, S,
                                   0);
        nn_batchnorm_forward_train_ref(y2, h2, inv2, x, gamma, beta, 1e-5f, n, C, S);
        for (int c = 0; c < C; c++) near(inv1[c], inv2[c], fabs(inv2[c]), "inv", c);
        /* xhat as backward recomputes it from x, the mean and inv. */
        for (size_t i = 0; i < N; i++) {
            const int c = (int)(i / S % C);
            h1[i] = (x[i] - mean1[c]) * inv1[c];
            near(h1[i], h2[i], fabs(h2[i]), "xhat", i);
            near(y1[i], y2[i], fabs(y2[i]), "y", i);
        }
        /* Running statistics moved by momentum toward the batch's. */
        for (int c = 0; c < C; c++) {
            double mean = 0;
            for (int b = 0; b < n; b++)
                for (int q = 0; q < S; q++) mean += x[((size_t)b * C + c) * S + q];
            mean /= (double)n * S;
            near(rm[c], (float)(0.1 * mean), fabs(mean), "running mean", c);
        }
        /* Fused ReLU is ReLU of the output. */
        nn_batchnorm_forward_train(y1, mean1, inv1, NULL, NULL, x, gamma, beta, 1e-5f, 0.1f, n, C,
                                   S, 1);
        for (size_t i = 0; i < N; i++)
            near(y1[i], y2[i] > 0 ? y2[i] : 0.0f, fabs(y2[i]), "relu(y)", i);

        /* The reference on the xhat the fast one recomputes (h1). */
        nn_batchnorm_backward(dx1, dg1, db1, dy, x, mean1, inv1, gamma, beta, n, C, S, 0);
        nn_batchnorm_backward_ref(dx2, dg2, db2, dy, h1, inv1, gamma, n, C, S);
        double sum_abs = (double)n * S; /* |dy| <= 1, |xhat| a few: the sums' scale */
        for (int c = 0; c < C; c++) {
            near(dg1[c], dg2[c], 4 * sum_abs, "dgamma", c);
            near(db1[c], db2[c], sum_abs, "dbeta", c);
        }
        for (size_t i = 0; i < N; i++) near(dx1[i], dx2[i], 8 * fabs(gamma[0]) * inv2[0], "dx", i);
        /* Gradients accumulate (+=), dx may be skipped. */
        nn_batchnorm_backward(NULL, dg1, db1, dy, x, mean1, inv1, gamma, beta, n, C, S, 0);
        for (int c = 0; c < C; c++) near(db1[c], 2 * db2[c], 2 * sum_abs, "dbeta twice", c);
        /* A ReLU after it (y1: the forward's fused output above, about
         * half 0): the same gradients bit for bit as nn_relu_backward on
         * that output and then the batch norm's backward; the mask comes
         * from x, so y1 is overwritten first. */
        float *dym = malloc(N * sizeof *dym);
        assert_non_null(dym);
        nn_relu_backward(dym, dy, y1, N);
        size_t zeros = 0;
        for (size_t i = 0; i < N; i++) zeros += y1[i] <= 0.0f;
        memset(y1, 0x7f, N * sizeof *y1);
        nn_batchnorm_backward(dx1, dga, dba, dym, x, mean1, inv1, gamma, beta, n, C, S, 0);
        nn_batchnorm_backward(dx2, dgb, dbb, dy, x, mean1, inv1, gamma, beta, n, C, S, 1);
        for (size_t i = 0; i < N; i++) assert_memory_equal(&dx1[i], &dx2[i], sizeof(float));
        assert_memory_equal(dga, dgb, sizeof(float) * C);
        assert_memory_equal(dba, dbb, sizeof(float) * C);
        assert_true(zeros > N / 4 && zeros < 3 * N / 4);
        free(dym);
        free(pc);
        free(x);
        free(y1);
        free(y2);
        free(h1);
        free(h2);
        free(dy);
        free(dx1);
        free(dx2);
    }
}

/* The batch norm's AVX2 loops (the AVX2 and AVX-512 kernel paths) give
 * the portable loops' bits: forward (statistics, output with and
 * without the ReLU) and backward (with and without it), on shapes whose
 * planes end mid-vector. Skipped where the CPU has no AVX2 (counted as
 * such). */
static void test_batchnorm_paths_agree(void **s)
{
    (void)s;
    if (!nn_gemm_path_supported(NN_GEMM_PATH_AVX2)) {
        skip();
        return;
    }
    const int shapes[][3] = {{4, 3, 25}, {3, 5, 676}, {2, 7, 13}, {5, 2, 100}};
    const int before = nn_gemm_get_path();
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int n = shapes[k][0], C = shapes[k][1], S = shapes[k][2];
        const size_t N = (size_t)n * C * S;
        float *x = malloc(N * 4), *dy = malloc(N * 4), *y[2], *dx[2], *pc[2];
        float gamma[8], beta[8];
        assert_true(x && dy);
        fill(x, N, 31 + k, -2.0f, 3.0f);
        fill(dy, N, 41 + k, -1.0f, 1.0f);
        fill(gamma, 8, 51 + k, 0.5f, 1.5f);
        fill(beta, 8, 61 + k, -0.5f, 0.5f);
        for (int p = 0; p < 2; p++) {
            assert_int_equal(nn_gemm_set_path(p ? NN_GEMM_PATH_AVX2 : NN_GEMM_PATH_GENERIC), 0);
            y[p] = malloc(N * 4 * 2);
            dx[p] = malloc(N * 4 * 2);
            pc[p] = calloc(8 * 8, 4);
            assert_true(y[p] && dx[p] && pc[p]);
            float *mean = pc[p], *inv = mean + 8, *rm = inv + 8, *rv = rm + 8, *dg = rv + 8,
                  *db = dg + 8;
            for (int r = 0; r < 2; r++) {
                nn_batchnorm_forward_train(y[p] + r * N, mean, inv, rm, rv, x, gamma, beta, 1e-5f,
                                           0.1f, n, C, S, r);
                nn_batchnorm_backward(dx[p] + r * N, dg, db, dy, x, mean, inv, gamma, beta, n, C, S,
                                      r);
            }
        }
        assert_memory_equal(y[0], y[1], N * 4 * 2);
        assert_memory_equal(dx[0], dx[1], N * 4 * 2);
        assert_memory_equal(pc[0], pc[1], 8 * 8 * 4);
        for (int p = 0; p < 2; p++) {
            free(y[p]);
            free(dx[p]);
            free(pc[p]);
        }
        free(x);
        free(dy);
    }
    nn_gemm_set_path(before);
}

static void test_batchnorm_inference(void **s)
{
    (void)s;
    enum { n = 3, C = 2, S = 5 };
    float x[n * C * S], y[n * C * S];
    const float gamma[C] = {2.0f, 0.5f}, beta[C] = {1.0f, -1.0f}, mean[C] = {0.5f, -2.0f},
                var[C] = {4.0f, 0.25f};
    fill(x, n * C * S, 9, -3.0f, 3.0f);
    nn_batchnorm_forward(y, x, gamma, beta, mean, var, 0.0f, n, C, S, 0);
    for (int b = 0; b < n; b++)
        for (int c = 0; c < C; c++)
            for (int q = 0; q < S; q++) {
                size_t i = ((size_t)b * C + c) * S + q;
                float want = gamma[c] * (x[i] - mean[c]) / sqrtf(var[c]) + beta[c];
                near(y[i], want, fabs(want), "bn inference", i);
            }
}

static void test_relu_dropout(void **s)
{
    (void)s;
    enum { N = 4096 };
    float *x = malloc(N * 4), *y = malloc(N * 4), *dy = malloc(N * 4), *dx = malloc(N * 4);
    uint8_t *mask = malloc(N);
    assert_true(x && y && dy && dx && mask);
    fill(x, N, 11, -1.0f, 1.0f);
    fill(dy, N, 12, -1.0f, 1.0f);
    nn_relu_forward(y, x, N);
    nn_relu_backward(dx, dy, y, N);
    for (size_t i = 0; i < N; i++) {
        assert_true(y[i] == (x[i] > 0 ? x[i] : 0.0f));
        assert_true(dx[i] == (x[i] > 0 ? dy[i] : 0.0f));
    }
    /* In place, as nets run it. */
    memcpy(y, x, N * 4);
    nn_relu_forward(y, y, N);
    for (size_t i = 0; i < N; i++) assert_true(y[i] == (x[i] > 0 ? x[i] : 0.0f));

    const float p = 0.25f;
    nn_dropout_forward(y, mask, x, N, p, 77);
    int kept = 0;
    for (size_t i = 0; i < N; i++) {
        kept += mask[i];
        assert_true(y[i] == (mask[i] ? x[i] * (1.0f / (1.0f - p)) : 0.0f));
    }
    /* Binomial(4096, 0.75): mean 3072, sd 27.7; 6 sd either side. */
    assert_in_range(kept, 3072 - 166, 3072 + 166);
    nn_dropout_backward(dx, dy, mask, N, p);
    for (size_t i = 0; i < N; i++)
        assert_true(dx[i] == (mask[i] ? dy[i] * (1.0f / (1.0f - p)) : 0.0f));
    /* The mask is the documented draw, nn_hash_uniform(seed, i) < keep,
     * whatever the rate (the kernel compares integers), and a dropped
     * element is +0.0 even where x is negative. */
    const float rates[] = {0.05f, 0.25f, 0.4f, 0.5f, 0.9f, 0.95f, 1.0f / 3.0f};
    for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
        nn_dropout_forward(y, mask, x, N, rates[r], 1000 + r);
        for (size_t i = 0; i < N; i++) {
            assert_int_equal(mask[i], nn_hash_uniform(1000 + r, i) < 1.0f - rates[r]);
            if (!mask[i]) assert_true(y[i] == 0.0f && !signbit(y[i]));
        }
    }
    /* Draws exactly on the keep rate are dropped, one float step under it
     * kept: the integer bound is the float test at its edge. */
    int edges = 0;
    for (uint64_t i = 0; i < N && edges < 20; i++) {
        const float u = nn_hash_uniform(5, i), above = nextafterf(u, 1.0f);
        if (u < 0.05f || 1.0f - (1.0f - u) != u || 1.0f - (1.0f - above) != above) continue;
        nn_dropout_forward(y, mask, x, i + 1, 1.0f - u, 5);
        assert_int_equal(mask[i], 0);
        nn_dropout_forward(y, mask, x, i + 1, 1.0f - above, 5);
        assert_int_equal(mask[i], 1);
        edges++;
    }
    assert_int_equal(edges, 20);
    nn_dropout_forward(y, mask, x, N, p, 77);
    /* The same seed draws the same mask; another seed another. */
    uint8_t *m2 = malloc(N);
    assert_non_null(m2);
    nn_dropout_forward(y, m2, x, N, p, 77);
    assert_memory_equal(mask, m2, N);
    nn_dropout_forward(y, m2, x, N, p, 78);
    assert_memory_not_equal(mask, m2, N);
    free(m2);
    free(x);
    free(y);
    free(dy);
    free(dx);
    free(mask);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batchnorm_fast_vs_ref),
        cmocka_unit_test(test_batchnorm_paths_agree),
        cmocka_unit_test(test_batchnorm_inference),
        cmocka_unit_test(test_relu_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
