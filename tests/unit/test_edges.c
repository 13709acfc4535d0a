/* test_edges.c - nn/ and image/ at their limits and special cases.
 *
 * Every limit is tried exactly at the edge (accepted) and one past it
 * (refused with its own status), and every numeric routine with a special
 * case (overflow, empty input, a zero divisor) meets that case: softmax
 * with logits that overflow expf, the weights loader with one tensor too
 * many, the learning-rate schedules at hand-computed points including the
 * step boundaries, and the PNG decoder's width, height and pixel limits. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "image/image.h"
#include "pipeline/pipeline.h"
#include "nn/net.h"
#include "nn/optim.h"
#include "nn/safetensors.h"

#define TMPDIR_PREFIX "test_edges"
#include "tmpdir.h"

/* A dense-only net on a 1x1x1 input: its logits are exactly its biases
 * (weights zero), so a test can set any logits it wants. */
static nn_net *bias_net(const float *bias, int k)
{
    char arch[128], err[256];
    snprintf(arch, sizeof arch, "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":%d}]", k);
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    if (nn_arch_parse(arch, L, &nl, err, sizeof err)) fail_msg("arch: %s", err);
    nn_net *net = nn_net_create(L, nl, 1, 1, 1, NULL, err, sizeof err);
    if (!net) fail_msg("create: %s", err);
    const nn_layer *d = &net->layers[net->nlayers - 1];
    memset(net->params, 0, sizeof(float) * net->nparams);
    memcpy(net->params + d->b_off, bias, sizeof(float) * k);
    return net;
}

/* ---- softmax ------------------------------------------------------------ */

static void check_probs(const float *p, int k, const float *want)
{
    double s = 0.0;
    for (int j = 0; j < k; j++) {
        if (!isfinite(p[j])) fail_msg("p[%d] = %g is not finite", j, p[j]);
        s += p[j];
        if (fabsf(p[j] - want[j]) > 1e-6f) fail_msg("p[%d] = %.9g, want %.9g", j, p[j], want[j]);
    }
    assert_true(fabs(s - 1.0) < 1e-6);
}

/* Logits far outside expf's range: the softmax subtracts the row maximum,
 * so e^1000 (overflow) and e^-1000 (underflow of every term) both give
 * exact, finite probabilities. */
static void test_softmax_overflow(void **state)
{
    (void)state;
    enum { K = 10 };
    const float cases[][K] = {
        {1000, 0, 0, 0, 0, 0, 0, 0, 0, 0},           /* one huge: [1, 0...]   */
        {-1000, -1000, -1000, -1000, -1000, -1000, -1000, -1000, -1000, -1000},
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 88.8f},          /* just over expf's max  */
        {500, 500, 0, 0, 0, 0, 0, 0, 0, 0},          /* two equal and huge    */
        {-1e30f, 0, 0, 0, 0, 0, 0, 0, 0, 0},         /* one at -1e30          */
    };
    float want[][K] = {
        {1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {.1f, .1f, .1f, .1f, .1f, .1f, .1f, .1f, .1f, .1f},
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
        {.5f, .5f, 0, 0, 0, 0, 0, 0, 0, 0},
        {0, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nn_net *net = bias_net(cases[c], K);
        nn_ws *ws = nn_ws_create(net, 2, 1);
        assert_non_null(ws);
        float x[2] = {0.0f, 0.0f}, p[2 * K], z[2 * K];
        nn_net_forward(net, ws, x, 2, p, z);
        assert_memory_equal(z, cases[c], sizeof cases[c]);   /* logits as set */
        check_probs(p, K, want[c]);
        check_probs(p + K, K, want[c]);
        /* The training forward shares the softmax; its loss stays finite
         * (the clamp at 1e-30 bounds a wrong confident answer). */
        uint8_t y[2] = {0, 1};
        float loss = nn_net_forward_train(net, ws, x, y, 2, 0.0f, 1, 0, p);
        assert_true(isfinite(loss));
        check_probs(p, K, want[c]);
        float *g = calloc(net->nparams, sizeof(float));
        nn_net_backward(net, ws, g);
        for (size_t i = 0; i < net->nparams; i++)
            if (!isfinite(g[i])) fail_msg("case %zu: gradient %zu not finite", c, i);
        free(g);
        nn_ws_free(ws);
        nn_net_free(net);
    }
}

/* ---- weights file: tensor count ----------------------------------------- */

/* Copies src to dst with one more F32 tensor than the architecture has,
 * the checksum recomputed so only the count is wrong. */
static void write_extra_tensor(const char *src, const char *dst, const char *extra_name)
{
    char err[256];
    static const float extra[3] = {1, 2, 3};
    const int64_t shape[1] = {3};
    char cks[64] = "fnv1a64:0000000000000000";
    for (int pass = 0; pass < 2; pass++) {
        st_file *f = st_read(src, err, sizeof err);
        if (!f) fail_msg("%s", err);
        st_writer *w = st_writer_create();
        assert_non_null(w);
        for (int i = 0; i < f->ntensors; i++) {
            const st_tensor *t = &f->tensors[i];
            assert_int_equal(st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
        }
        assert_int_equal(st_writer_add(w, extra_name, ST_F32, 1, shape, extra), 0);
        for (int i = 0; i < f->nmeta; i++)
            assert_int_equal(st_writer_meta(w, f->meta_keys[i],
                                            strcmp(f->meta_keys[i], "checksum") ? f->meta_vals[i] : cks), 0);
        assert_int_equal(st_writer_write(w, dst, err, sizeof err), 0);
        st_writer_free(w);
        st_free(f);
        /* Second pass: the same data block under its real checksum. */
        st_file *g = st_read(dst, err, sizeof err);
        if (!g) fail_msg("%s", err);
        snprintf(cks, sizeof cks, "fnv1a64:%016llx",
                 (unsigned long long)st_fnv1a64(g->data, g->data_len, ST_FNV_INIT));
        st_free(g);
    }
}

static void test_weights_tensor_count(void **state)
{
    (void)state;
    char ok[160], bad[160], err[512] = "";
    const float b[10] = {0};
    nn_net *net = bias_net(b, 10);
    snprintf(ok, sizeof ok, "%s/count.safetensors", tmpdir);
    assert_int_equal(nn_net_save(net, ok, err, sizeof err), 0);
    nn_net *back = nn_net_load(ok, err, sizeof err);   /* exactly as many */
    if (!back) fail_msg("load: %s", err);
    nn_net_free(back);

    const char *names[] = {"zz.extra", "0.weight.extra", "aa"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(bad, sizeof bad, "%s/extra%zu.safetensors", tmpdir, i);
        write_extra_tensor(ok, bad, names[i]);
        err[0] = 0;
        back = nn_net_load(bad, err, sizeof err);
        if (back) { nn_net_free(back); fail_msg("a file with extra tensor '%s' loaded", names[i]); }
        if (!strstr(err, "3 tensors in the file, the architecture has 2"))
            fail_msg("message: %s", err);
    }
    nn_net_free(net);
}

/* ---- learning-rate schedules -------------------------------------------- */

static void lr_is(nn_sched s, double t, int epochs, double want)
{
    float got = nn_sched_lr(&s, t, epochs);
    /* float arithmetic on values near 1: a few ulps */
    if (!(fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want))))
        fail_msg("schedule %d at t=%g of %d: lr %.9g, want %.9g", (int)s.kind, t, epochs, got, want);
}

static void test_lr_schedules(void **state)
{
    (void)state;
    nn_sched s = {.kind = NN_SCHED_CONST, .lr = 0.01f};
    lr_is(s, 0, 10, 0.01f);
    lr_is(s, 9.99, 10, 0.01f);

    /* step: lr * gamma^floor(t / step); the decay happens at t = step
     * exactly, not before. */
    s = (nn_sched){.kind = NN_SCHED_STEP, .lr = 1.0f, .gamma = 0.5f, .step = 2.0f};
    lr_is(s, 0.0, 10, 1.0);
    lr_is(s, 0.25, 10, 1.0);
    lr_is(s, 1.0, 10, 1.0);
    lr_is(s, 1.999, 10, 1.0);
    lr_is(s, 2.0, 10, 0.5);
    lr_is(s, 3.5, 10, 0.5);
    lr_is(s, 4.0, 10, 0.25);
    lr_is(s, 9.9, 10, 0.0625);
    s.step = 0.0f;                              /* a zero step means 1 epoch */
    lr_is(s, 0.5, 10, 1.0);
    lr_is(s, 1.0, 10, 0.5);
    lr_is(s, 3.5, 10, 0.125);

    /* exp: lr * gamma^t, continuous */
    s = (nn_sched){.kind = NN_SCHED_EXP, .lr = 2.0f, .gamma = 0.5f};
    lr_is(s, 0.0, 10, 2.0);
    lr_is(s, 1.0, 10, 1.0);
    lr_is(s, 1.5, 10, 2.0 * pow(0.5, 1.5));
    lr_is(s, 3.0, 10, 0.25);

    /* cosine: linear warm-up from 0 over 1 epoch, then cosine from lr to
     * lr * final over the remaining 4. */
    s = (nn_sched){.kind = NN_SCHED_COSINE, .lr = 1.0f, .warmup = 1.0f, .final = 0.1f};
    lr_is(s, 0.0, 5, 0.0);
    lr_is(s, 0.5, 5, 0.5);
    lr_is(s, 1.0, 5, 1.0);
    lr_is(s, 2.0, 5, 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * 0.25)));
    lr_is(s, 3.0, 5, 0.55);
    lr_is(s, 5.0, 5, 0.1);
    lr_is(s, 7.0, 5, 0.1);                      /* past the end: held at final */
    s.warmup = 0.0f;                            /* no warm-up: lr at t = 0 */
    lr_is(s, 0.0, 5, 1.0);
    lr_is(s, 2.5, 5, 0.55);
    s.warmup = 5.0f;                            /* warm-up is the whole run */
    lr_is(s, 4.0, 5, 0.8);
    lr_is(s, 5.0, 5, 0.1);                      /* zero-length cosine: final */

    /* onecycle: warm-up starts at lr/25 */
    s = (nn_sched){.kind = NN_SCHED_ONECYCLE, .lr = 1.0f, .warmup = 2.0f, .final = 0.0f};
    lr_is(s, 0.0, 6, 0.04);
    lr_is(s, 1.0, 6, 0.52);
    lr_is(s, 2.0, 6, 1.0);
    lr_is(s, 4.0, 6, 0.5);
    lr_is(s, 6.0, 6, 0.0);

    nn_sched_kind k;
    const char *names[] = {"const", "step", "exp", "cosine", "onecycle"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(nn_sched_parse(names[i], &k), 0);
        assert_int_equal(k, i);
    }
    assert_int_equal(nn_sched_parse("Step", &k), -1);
    assert_int_equal(nn_sched_parse("", &k), -1);
    assert_int_equal(nn_sched_parse("cosine2", &k), -1);
}

/* ---- PNG decode limits --------------------------------------------------- */

/* A w x h 8-bit gray PNG with a dark stroke on white. */
static uint8_t *gray_png(uint32_t w, uint32_t h, size_t *len)
{
    uint16_t *s = malloc(sizeof(uint16_t) * w * h);
    assert_non_null(s);
    for (uint32_t i = 0; i < w * h; i++) s[i] = (i % 7 == 0) ? 0 : 255;
    img_png_spec spec = {.width = w, .height = h, .color_type = 0, .bit_depth = 8, .samples = s};
    uint8_t *png = NULL;
    char err[200];
    if (img_png_encode(&spec, &png, len, err, sizeof err) != IMG_OK) fail_msg("encode: %s", err);
    free(s);
    return png;
}

static void expect_decode(uint32_t w, uint32_t h, const img_limits *lim, img_status want)
{
    size_t len;
    uint8_t *png = gray_png(w, h, &len);
    uint8_t *g = NULL;
    uint32_t ow = 0, oh = 0;
    char err[200] = "";
    img_status st = img_png_decode(png, len, lim, &g, &ow, &oh, err, sizeof err);
    if (st != want)
        fail_msg("%ux%u (limits %ux%u, %llu px): %s (%s), want %s", w, h, lim->max_width,
                 lim->max_height, (unsigned long long)lim->max_pixels, pipe_status_name(pipe_status_from_img(st)), err,
                 pipe_status_name(pipe_status_from_img(want)));
    if (st == IMG_OK) {
        assert_int_equal(ow, w);
        assert_int_equal(oh, h);
        assert_int_equal(g[0], 0);
        if (w * h > 1) assert_int_equal(g[1], 255);
    } else {
        assert_null(g);
        assert_non_null(strstr(err, "limit"));
    }
    free(g);
    free(png);
}

static void test_png_limits_at_the_edge(void **state)
{
    (void)state;
    img_limits lim;
    img_limits_default(&lim);
    lim.max_width = 40;
    lim.max_height = 30;
    lim.max_pixels = 40 * 30;
    expect_decode(40, 30, &lim, IMG_OK);               /* every limit exactly */
    expect_decode(41, 30, &lim, IMG_ERR_TOO_LARGE);    /* one column more     */
    expect_decode(40, 31, &lim, IMG_ERR_TOO_LARGE);    /* one row more        */
    expect_decode(41, 1, &lim, IMG_ERR_TOO_LARGE);     /* width alone         */
    expect_decode(1, 31, &lim, IMG_ERR_TOO_LARGE);     /* height alone        */
    lim.max_pixels = 40 * 30 - 1;                      /* one pixel fewer     */
    expect_decode(40, 30, &lim, IMG_ERR_TOO_LARGE);
    expect_decode(40, 29, &lim, IMG_OK);
    lim.max_pixels = 600;                              /* pixels bind first   */
    expect_decode(20, 30, &lim, IMG_OK);
    expect_decode(40, 15, &lim, IMG_OK);
    expect_decode(21, 29, &lim, IMG_ERR_TOO_LARGE);    /* 609                 */
    expect_decode(601, 1, &lim, IMG_ERR_TOO_LARGE);    /* width, not pixels   */
    lim.max_width = lim.max_height = 1;                /* the smallest image  */
    lim.max_pixels = 1;
    expect_decode(1, 1, &lim, IMG_OK);
    expect_decode(2, 1, &lim, IMG_ERR_TOO_LARGE);
    expect_decode(1, 2, &lim, IMG_ERR_TOO_LARGE);

    /* The defaults: 8192 wide or high, 4096^2 pixels. */
    img_limits_default(&lim);
    assert_int_equal(lim.max_width, 8192);
    assert_int_equal(lim.max_height, 8192);
    assert_int_equal(lim.max_pixels, 4096ull * 4096);
    expect_decode(8192, 1, &lim, IMG_OK);
    expect_decode(8193, 1, &lim, IMG_ERR_TOO_LARGE);
    expect_decode(1, 8192, &lim, IMG_OK);
    expect_decode(1, 8193, &lim, IMG_ERR_TOO_LARGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_overflow),
        cmocka_unit_test(test_weights_tensor_count),
        cmocka_unit_test(test_lr_schedules),
        cmocka_unit_test(test_png_limits_at_the_edge),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
