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

#include <fcntl.h>
#include <unistd.h>

#include "image/image.h"
#include "nn/ensemble.h"
#include "nn/gemm.h"
#include "nn/idx.h"
#include "nn/net.h"
#include "nn/optim.h"
#include "nn/rng.h"
#include "nn/safetensors.h"
#include "pipeline/pipeline.h"

#include "nets.h"

#define TMPDIR_PREFIX "test_edges"
#include "tmpdir.h"

/* A dense-only net on a 1x1x1 input: its logits are exactly its biases
 * (weights zero), so a test can set any logits it wants. */
static nn_net *bias_net(const float *bias, int k)
{
    char arch[128];
    snprintf(arch, sizeof arch, "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":%d}]", k);
    nn_net *net = nets_create(arch, 1, 1, 1);
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
        {1000, 0, 0, 0, 0, 0, 0, 0, 0, 0}, /* one huge: [1, 0...]   */
        {-1000, -1000, -1000, -1000, -1000, -1000, -1000, -1000, -1000, -1000},
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 88.8f},  /* just over expf's max  */
        {500, 500, 0, 0, 0, 0, 0, 0, 0, 0},  /* two equal and huge    */
        {-1e30f, 0, 0, 0, 0, 0, 0, 0, 0, 0}, /* one at -1e30          */
    };
    float want[][K] = {
        {1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {.1f, .1f, .1f, .1f, .1f, .1f, .1f, .1f, .1f, .1f},
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
        {.5f, .5f, 0, 0, 0, 0, 0, 0, 0, 0},
        {0, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f, 1 / 9.0f,
         1 / 9.0f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nn_net *net = bias_net(cases[c], K);
        nn_ws *ws = nn_ws_create(net, 2, 1);
        assert_non_null(ws);
        float x[2] = {0.0f, 0.0f}, p[2 * K], z[2 * K];
        nn_net_forward(net, ws, x, 2, p, z);
        assert_memory_equal(z, cases[c], sizeof cases[c]); /* logits as set */
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
        nn_st_file *f = nn_st_read(src, err, sizeof err);
        if (!f) fail_msg("%s", err);
        nn_st_writer *w = nn_st_writer_create();
        assert_non_null(w);
        for (int i = 0; i < f->ntensors; i++) {
            const nn_st_tensor *t = &f->tensors[i];
            assert_int_equal(nn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data), 0);
        }
        assert_int_equal(nn_st_writer_add(w, extra_name, NN_ST_F32, 1, shape, extra), 0);
        for (int i = 0; i < f->nmeta; i++)
            assert_int_equal(
                nn_st_writer_meta(w, f->meta_keys[i],
                                  strcmp(f->meta_keys[i], "checksum") ? f->meta_vals[i] : cks),
                0);
        assert_int_equal(nn_st_writer_write(w, dst, err, sizeof err), 0);
        nn_st_writer_free(w);
        nn_st_free(f);
        /* Second pass: the same data block under its real checksum. */
        nn_st_file *g = nn_st_read(dst, err, sizeof err);
        if (!g) fail_msg("%s", err);
        snprintf(cks, sizeof cks, "fnv1a64:%016llx",
                 (unsigned long long)nn_st_fnv1a64(g->data, g->data_len, NN_ST_FNV_INIT));
        nn_st_free(g);
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
    nn_net *back = nn_net_load(ok, err, sizeof err); /* exactly as many */
    if (!back) fail_msg("load: %s", err);
    nn_net_free(back);

    const char *names[] = {"zz.extra", "0.weight.extra", "aa"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(bad, sizeof bad, "%s/extra%zu.safetensors", tmpdir, i);
        write_extra_tensor(ok, bad, names[i]);
        err[0] = 0;
        back = nn_net_load(bad, err, sizeof err);
        if (back) {
            nn_net_free(back);
            fail_msg("a file with extra tensor '%s' loaded", names[i]);
        }
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
        fail_msg("schedule %d at t=%g of %d: lr %.9g, want %.9g", (int)s.kind, t, epochs, got,
                 want);
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
    s.step = 0.0f; /* a zero step means 1 epoch */
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
    lr_is(s, 7.0, 5, 0.1); /* past the end: held at final */
    s.warmup = 0.0f;       /* no warm-up: lr at t = 0 */
    lr_is(s, 0.0, 5, 1.0);
    lr_is(s, 2.5, 5, 0.55);
    s.warmup = 5.0f; /* warm-up is the whole run */
    lr_is(s, 4.0, 5, 0.8);
    lr_is(s, 5.0, 5, 0.1); /* zero-length cosine: final */

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
                 lim->max_height, (unsigned long long)lim->max_pixels,
                 pipe_status_name(pipe_status_from_img(st)), err,
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
    expect_decode(40, 30, &lim, IMG_OK);            /* every limit exactly */
    expect_decode(41, 30, &lim, IMG_ERR_TOO_LARGE); /* one column more     */
    expect_decode(40, 31, &lim, IMG_ERR_TOO_LARGE); /* one row more        */
    expect_decode(41, 1, &lim, IMG_ERR_TOO_LARGE);  /* width alone         */
    expect_decode(1, 31, &lim, IMG_ERR_TOO_LARGE);  /* height alone        */
    lim.max_pixels = 40 * 30 - 1;                   /* one pixel fewer     */
    expect_decode(40, 30, &lim, IMG_ERR_TOO_LARGE);
    expect_decode(40, 29, &lim, IMG_OK);
    lim.max_pixels = 600; /* pixels bind first   */
    expect_decode(20, 30, &lim, IMG_OK);
    expect_decode(40, 15, &lim, IMG_OK);
    expect_decode(21, 29, &lim, IMG_ERR_TOO_LARGE); /* 609                 */
    expect_decode(601, 1, &lim, IMG_ERR_TOO_LARGE); /* width, not pixels   */
    lim.max_width = lim.max_height = 1;             /* the smallest image  */
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

/* ---- weights file: metadata ranges, values, running variance ------------ */

/* Copies the weights file src to dst with metadata key set to val (key
 * NULL: none changed) and, when poison_name is given, that tensor's first
 * element set to poison; the checksum is recomputed, so only the named
 * change is wrong. */
static void rewrite(const char *src, const char *dst, const char *key, const char *val,
                    const char *poison_name, float poison)
{
    char err[256], cks[64] = "fnv1a64:0000000000000000";
    for (int pass = 0; pass < 2; pass++) {
        nn_st_file *f = nn_st_read(src, err, sizeof err);
        if (!f) fail_msg("%s", err);
        nn_st_writer *w = nn_st_writer_create();
        assert_non_null(w);
        float *copies[16] = {0};
        for (int i = 0; i < f->ntensors && i < 16; i++) {
            const nn_st_tensor *t = &f->tensors[i];
            const void *data = t->data;
            if (poison_name && !strcmp(t->name, poison_name)) {
                copies[i] = malloc(t->nbytes);
                memcpy(copies[i], t->data, t->nbytes);
                copies[i][0] = poison;
                data = copies[i];
            }
            assert_int_equal(nn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data), 0);
        }
        for (int i = 0; i < f->nmeta; i++) {
            const char *k = f->meta_keys[i], *v = f->meta_vals[i];
            if (key && !strcmp(k, key)) v = val;
            if (!strcmp(k, "checksum")) v = cks;
            assert_int_equal(nn_st_writer_meta(w, k, v), 0);
        }
        assert_int_equal(nn_st_writer_write(w, dst, err, sizeof err), 0);
        nn_st_writer_free(w);
        for (int i = 0; i < 16; i++) free(copies[i]);
        nn_st_free(f);
        nn_st_file *g = nn_st_read(dst, err, sizeof err);
        if (!g) fail_msg("%s", err);
        snprintf(cks, sizeof cks, "fnv1a64:%016llx",
                 (unsigned long long)nn_st_fnv1a64(g->data, g->data_len, NN_ST_FNV_INIT));
        nn_st_free(g);
    }
}

static void loads(const char *path)
{
    char err[512] = "";
    nn_net *n = nn_net_load(path, err, sizeof err);
    if (!n) fail_msg("%s refused: %s", path, err);
    nn_net_free(n);
}

/* A JSON array of n labels "L0", "L1", ..., the first one len bytes long. */
static void labels_json(char *out, size_t outlen, int n, size_t len)
{
    size_t o = (size_t)snprintf(out, outlen, "[\"");
    for (size_t i = 0; i < len; i++) out[o++] = 'x';
    o += (size_t)snprintf(out + o, outlen - o, "\"");
    for (int i = 1; i < n; i++) o += (size_t)snprintf(out + o, outlen - o, ",\"L%d\"", i);
    snprintf(out + o, outlen - o, "]");
}

static void test_weights_metadata_ranges(void **state)
{
    (void)state;
    char ok[160], p[160], err[256], lab[4096];
    float b[NN_MAX_CLASSES] = {0};
    snprintf(ok, sizeof ok, "%s/meta.safetensors", tmpdir);
    snprintf(p, sizeof p, "%s/meta2.safetensors", tmpdir);
    nn_net *net = bias_net(b, 10);
    assert_int_equal(nn_net_save(net, ok, err, sizeof err), 0);
    nn_net_free(net);

    /* format_version: 1 is the only one this build reads. */
    rewrite(ok, p, "format_version", "1.0", NULL, 0);
    loads(p);
    const char *bad_ver[] = {"0", "2", "1.5", "-1", "nan", "", "1x"};
    for (size_t i = 0; i < sizeof bad_ver / sizeof bad_ver[0]; i++) {
        rewrite(ok, p, "format_version", bad_ver[i], NULL, 0);
        nets_refused(p, "format_version");
    }
    /* input_shape must be exactly [C,H,W]. */
    rewrite(ok, p, "input_shape", " [ 1 , 1 , 1 ] ", NULL, 0);
    loads(p);
    const char *bad_shape[] = {"[1,1]", "[1,1,1,1]", "[1,1,1", "[1,1,1]x", "1,1,1", ""};
    for (size_t i = 0; i < sizeof bad_shape / sizeof bad_shape[0]; i++) {
        rewrite(ok, p, "input_shape", bad_shape[i], NULL, 0);
        nets_refused(p, "input_shape");
    }
    /* Labels: one per class, each shorter than NN_LABEL_MAX bytes. */
    labels_json(lab, sizeof lab, 10, NN_LABEL_MAX - 1);
    rewrite(ok, p, "labels", lab, NULL, 0);
    loads(p);
    labels_json(lab, sizeof lab, 10, NN_LABEL_MAX);
    rewrite(ok, p, "labels", lab, NULL, 0);
    nets_refused(p, "label 0 must be a string shorter than 48 bytes");
    rewrite(ok, p, "labels", "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",7]", NULL, 0);
    nets_refused(p, "label 9");
    labels_json(lab, sizeof lab, 9, 1); /* 9 labels, 10 outputs */
    rewrite(ok, p, "labels", lab, NULL, 0);
    nets_refused(p, "9 classes");
    rewrite(ok, p, "labels", "{}", NULL, 0);
    nets_refused(p, "labels");

    /* The class count itself: 2..NN_MAX_CLASSES. */
    int ks[] = {2, NN_MAX_CLASSES};
    for (int i = 0; i < 2; i++) {
        net = bias_net(b, ks[i]);
        assert_int_equal(nn_net_save(net, ok, err, sizeof err), 0);
        nn_net_free(net);
        loads(ok);
        labels_json(lab, sizeof lab, ks[i] == 2 ? 1 : NN_MAX_CLASSES + 1, 1);
        rewrite(ok, p, "labels", lab, NULL, 0);
        nets_refused(p, "metadata \"labels\" must be a JSON array of 2..64 strings");
    }

    /* Tensors must be finite. */
    net = bias_net(b, 10);
    assert_int_equal(nn_net_save(net, ok, err, sizeof err), 0);
    nn_net_free(net);
    rewrite(ok, p, NULL, NULL, "1.bias", 3.4e38f); /* large but finite */
    loads(p);
    const float poison[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        rewrite(ok, p, NULL, NULL, "1.bias", poison[i]);
        nets_refused(p, "holds a NaN or infinity");
        rewrite(ok, p, NULL, NULL, "1.weight", poison[i]);
        nets_refused(p, "holds a NaN or infinity");
    }

    /* Batch norm's running variance: 0 is valid, below 0 is not. */
    net = nets_create("[{\"type\":\"batchnorm\"},{\"type\":\"flatten\"},"
                      "{\"type\":\"dense\",\"out\":2}]",
                      1, 1, 1);
    nn_net_init(net, 1);
    assert_int_equal(nn_net_save(net, ok, err, sizeof err), 0);
    nn_net_free(net);
    rewrite(ok, p, NULL, NULL, "0.running_var", 0.0f);
    loads(p);
    rewrite(ok, p, NULL, NULL, "0.running_var", -1e-30f);
    nets_refused(p, "negative running_var");
    rewrite(ok, p, NULL, NULL, "0.running_var", NAN);
    nets_refused(p, "NaN");
}

/* ---- optimisers: one parameter, hand-computed steps ----------------------- */

/* A 1 -> 2 dense net (weights decayed, biases not), every parameter 1 and
 * every gradient g; *w and *b are the first weight and bias after steps. */
static void opt_steps(const nn_opt_cfg *cfg, float lr, float g, int steps, float *w, float *b)
{
    const float bias[2] = {1, 1};
    nn_net *net = bias_net(bias, 2);
    assert_int_equal(net->nparams, 4);
    const nn_layer *d = &net->layers[1];
    for (size_t i = 0; i < d->nw; i++) net->params[d->w_off + i] = 1.0f;
    nn_opt *o = nn_opt_create(net, cfg);
    assert_non_null(o);
    float grad[4] = {g, g, g, g};
    for (int s = 0; s < steps; s++) {
        nn_opt_advance(o);
        /* disjoint ranges, the last running past the end, one empty */
        nn_opt_update(o, net->params, grad, lr, 0, 1);
        nn_opt_update(o, net->params, grad, lr, 1, 1000);
        nn_opt_update(o, net->params, grad, lr, 4, 4);
    }
    *w = net->params[d->w_off];
    *b = net->params[d->b_off];
    nn_opt_free(o);
    nn_opt_free(NULL);
    nn_net_free(net);
}

static void close_to(float got, double want, const char *what)
{
    if (!(fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want))))
        fail_msg("%s: %.9g, want %.9g", what, got, want);
}

static void test_optimiser_steps(void **state)
{
    (void)state;
    float w, b;
    nn_opt_cfg c;
    /* SGD, momentum 0.9: v1 = 0.5, p = 0.95; v2 = 0.95, p = 0.855. */
    nn_opt_cfg_default(&c, NN_OPT_SGD);
    opt_steps(&c, 0.1f, 0.5f, 2, &w, &b);
    close_to(w, 0.855, "sgd weight");
    close_to(b, 0.855, "sgd bias");
    /* Nesterov: p -= lr * (g + mu v): 1 - 0.095 = 0.905, then - 0.1355. */
    c.nesterov = 1;
    opt_steps(&c, 0.1f, 0.5f, 2, &w, &b);
    close_to(w, 0.7695, "nesterov weight");
    /* L2 weight decay 0.1 on weights only: g' = 0.5 + 0.1 * 1 = 0.6. */
    c.nesterov = 0;
    c.weight_decay = 0.1f;
    opt_steps(&c, 0.1f, 0.5f, 1, &w, &b);
    close_to(w, 0.94, "sgd decayed weight");
    close_to(b, 0.95, "sgd bias (never decayed)");
    /* A zero gradient and no decay: nothing moves. */
    c.weight_decay = 0.0f;
    opt_steps(&c, 0.1f, 0.0f, 3, &w, &b);
    close_to(w, 1.0, "sgd zero gradient");

    /* Adam's first step is lr * g / (|g| + eps): 0.1 for any g >> eps. */
    nn_opt_cfg_default(&c, NN_OPT_ADAM);
    opt_steps(&c, 0.1f, 0.5f, 1, &w, &b);
    close_to(w, 1.0 - 0.1 * 0.5 / (0.5 + 1e-7), "adam weight");
    /* Constant gradient: m and v stay at their bias-corrected g, g^2. */
    opt_steps(&c, 0.1f, 0.5f, 3, &w, &b);
    close_to(w, 0.7, "adam 3 steps");
    /* Zero gradient: 0 / (0 + eps) = 0, no NaN. */
    opt_steps(&c, 0.1f, 0.0f, 2, &w, &b);
    close_to(w, 1.0, "adam zero gradient");
    /* AdamW: the weight shrinks by lr * wd first (1 - 0.01), then steps. */
    c.weight_decay = 0.1f;
    opt_steps(&c, 0.1f, 0.5f, 1, &w, &b);
    close_to(w, 0.99 - 0.1 * 0.5 / (0.5 + 1e-7), "adamw weight");
    close_to(b, 1.0 - 0.1 * 0.5 / (0.5 + 1e-7), "adamw bias (never decayed)");
}

/* nn_opt_update_from (the range's gradient alone, as the trainer passes a
 * reduced slice) gives the same parameters bit for bit as nn_opt_update
 * over the whole gradient: every optimiser, with and without decay, over
 * uneven slices, with gradients that differ per parameter (an indexing
 * slip would read a neighbour's). */
static void test_optimiser_update_from(void **state)
{
    (void)state;
    const char *arch = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    for (int kind = 0; kind < 3; kind++) {
        nn_net *a = nets_make(arch, 1, 6, 6, 3), *b = nets_make(arch, 1, 6, 6, 3);
        const size_t n = a->nparams; /* 370 */
        nn_opt_cfg c;
        nn_opt_cfg_default(&c, kind == 0 ? NN_OPT_SGD : NN_OPT_ADAM);
        c.nesterov = kind == 0;
        c.weight_decay = kind == 2 ? 0.05f : 0.0f;
        nn_opt *oa = nn_opt_create(a, &c), *ob = nn_opt_create(b, &c);
        float *g = malloc(sizeof(float) * n), slice[64];
        assert_true(oa && ob && g);
        nn_rng r;
        nn_rng_seed(&r, 40 + kind);
        for (int step = 0; step < 3; step++) {
            for (size_t i = 0; i < n; i++) g[i] = nn_rng_uniform(&r) - 0.5f;
            nn_opt_advance(oa);
            nn_opt_advance(ob);
            nn_opt_update(oa, a->params, g, 0.01f, 0, n);
            for (size_t lo = 0; lo < n; lo += 37) {
                size_t hi = lo + 37 < n ? lo + 37 : n;
                memcpy(slice, g + lo, sizeof(float) * (hi - lo));
                nn_opt_update_from(ob, b->params, slice, 0.01f, lo, hi);
            }
        }
        assert_memory_equal(a->params, b->params, sizeof(float) * n);
        free(g);
        nn_opt_free(oa);
        nn_opt_free(ob);
        nn_net_free(a);
        nn_net_free(b);
    }
}

/* Adam and AdamW run by a kernel of their own on the AVX-512 path: every
 * kernel path the CPU has gives the generic path's parameters bit for
 * bit after a few steps (sizes that leave tails of every length). */
static void adam_on_path(int path, float wd, float *out, size_t *n_out)
{
    const char *arch = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]";
    assert_int_equal(nn_gemm_set_path(path), 0);
    nn_net *net = nets_make(arch, 1, 6, 6, 3);
    const size_t n = net->nparams; /* 370: 23 vectors of 16 and 2 more */
    nn_opt_cfg c;
    nn_opt_cfg_default(&c, NN_OPT_ADAM);
    c.weight_decay = wd;
    nn_opt *o = nn_opt_create(net, &c);
    float *g = malloc(sizeof(float) * n);
    assert_true(o && g);
    nn_rng r;
    nn_rng_seed(&r, 77);
    for (int step = 0; step < 4; step++) {
        for (size_t i = 0; i < n; i++) g[i] = (nn_rng_uniform(&r) - 0.5f) * (step ? 1.0f : 1e-6f);
        nn_opt_advance(o);
        for (size_t lo = 0; lo < n; lo += 53)
            nn_opt_update(o, net->params, g, 0.01f, lo, lo + 53 < n ? lo + 53 : n);
    }
    memcpy(out, net->params, sizeof(float) * n);
    *n_out = n;
    free(g);
    nn_opt_free(o);
    nn_net_free(net);
}

static void test_adam_paths(void **state)
{
    (void)state;
    float want[512], got[512];
    size_t n = 0, m = 0;
    int ran = 0;
    for (int decay = 0; decay < 2; decay++) {
        const float wd = decay ? 0.05f : 0.0f;
        adam_on_path(NN_GEMM_PATH_GENERIC, wd, want, &n);
        for (int path = 0; path < NN_GEMM_PATH_COUNT; path++) {
            if (!nn_gemm_path_supported(path)) continue;
            adam_on_path(path, wd, got, &m);
            assert_int_equal(m, n);
            assert_memory_equal(got, want, sizeof(float) * n);
            ran++;
        }
    }
    assert_int_equal(nn_gemm_set_path(NN_GEMM_PATH_AUTO), 0);
    assert_true(ran >= 4);
}

/* ---- ensembles: member count and path lengths ----------------------------- */

static void test_ensemble_limits(void **state)
{
    (void)state;
    char err[512], f[160];
    const float b[10] = {0, 1};
    nn_net *one = bias_net(b, 10);
    snprintf(f, sizeof f, "%s/e.safetensors", tmpdir);
    assert_int_equal(nn_net_save(one, f, err, sizeof err), 0);
    nn_net_free(one);

    /* NN_MAX_MEMBERS members load, one more is refused. */
    char list[8 * 200] = "";
    for (int i = 0; i < NN_MAX_MEMBERS; i++) {
        if (i) strcat(list, ",");
        strcat(list, f);
    }
    nn_ensemble *e = nn_ensemble_load(list, err, sizeof err);
    if (!e) fail_msg("%d members: %s", NN_MAX_MEMBERS, err);
    assert_int_equal(nn_ensemble_size(e), NN_MAX_MEMBERS);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 1);
    assert_non_null(ws);
    float x[1] = {0}, p[10];
    nn_ensemble_forward(e, ws, x, 1, p);
    double s = 0;
    for (int j = 0; j < 10; j++) s += p[j];
    assert_true(fabs(s - 1) < 1e-6 && p[1] > p[0]);
    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
    strcat(list, ",");
    strcat(list, f);
    assert_null(nn_ensemble_load(list, err, sizeof err));
    assert_non_null(strstr(err, "more than 8 members"));

    /* Empty members, a trailing comma, nothing at all. */
    snprintf(list, sizeof list, "%s,,%s", f, f);
    assert_null(nn_ensemble_load(list, err, sizeof err));
    assert_non_null(strstr(err, "empty or too long path"));
    snprintf(list, sizeof list, "%s,", f);
    assert_null(nn_ensemble_load(list, err, sizeof err));
    assert_non_null(strstr(err, "trailing comma"));
    assert_null(nn_ensemble_load("", err, sizeof err));
    assert_non_null(strstr(err, "no model path"));

    /* A member path of 511 bytes fits, 512 does not (extra slashes name
     * the same file). */
    char longp[600];
    size_t pre = strlen(tmpdir), suf = strlen("/e.safetensors");
    memcpy(longp, tmpdir, pre);
    memset(longp + pre, '/', 511 - pre - suf);
    strcpy(longp + 511 - suf, "/e.safetensors");
    assert_int_equal(strlen(longp), 511);
    e = nn_ensemble_load(longp, err, sizeof err);
    if (!e) fail_msg("511-byte path: %s", err);
    nn_ensemble_free(e);
    memmove(longp + 1, longp, 512);
    assert_int_equal(strlen(longp), 512);
    assert_null(nn_ensemble_load(longp, err, sizeof err));
    assert_non_null(strstr(err, "too long path"));

    /* nn_ensemble_from_nets: 1..NN_MAX_MEMBERS nets of the same shape. */
    assert_null(nn_ensemble_from_nets(NULL, 0, err, sizeof err));
    assert_non_null(strstr(err, "0 members"));
    nn_net *nets[NN_MAX_MEMBERS + 1];
    for (int i = 0; i <= NN_MAX_MEMBERS; i++) nets[i] = bias_net(b, 10);
    assert_null(nn_ensemble_from_nets(nets, NN_MAX_MEMBERS + 1, err, sizeof err)); /* frees them */
    assert_non_null(strstr(err, "9 members"));
    nets[0] = bias_net(b, 10);
    nets[1] = bias_net(b, 2);
    assert_null(nn_ensemble_from_nets(nets, 2, err, sizeof err));
    assert_non_null(strstr(err, "member 1 has input [1,1,1] and 2 classes"));

    /* A list file's test_accuracy is a fraction in 0..1. */
    char lf[160], paths[4096];
    double acc;
    snprintf(lf, sizeof lf, "%s/l.ensemble", tmpdir);
    const char *vals[] = {"0", "1", "0.5"}, *bad[] = {"1.0001", "-0.1", "nan", "0.5x", ""};
    for (size_t i = 0; i < 3 + 5; i++) {
        const char *v = i < 3 ? vals[i] : bad[i - 3];
        FILE *fp = fopen(lf, "w");
        assert_non_null(fp);
        fprintf(fp, "# members\ne.safetensors\ntest_accuracy=%s\n", v);
        fclose(fp);
        int rc = nn_ensemble_list_read(lf, paths, sizeof paths, &acc, err, sizeof err);
        if (i < 3) {
            if (rc) fail_msg("test_accuracy=%s refused: %s", v, err);
            assert_true(acc == strtod(v, NULL));
        } else {
            if (!rc) fail_msg("test_accuracy=%s accepted", v);
            assert_non_null(strstr(err, "test_accuracy must be 0..1"));
        }
    }
    /* The joined member list must fit pathslen: exactly, then one short. */
    FILE *fp = fopen(lf, "w");
    assert_non_null(fp);
    fprintf(fp, "/a\n/b\n");
    fclose(fp);
    assert_int_equal(nn_ensemble_list_read(lf, paths, 6, &acc, err, sizeof err), 0);
    assert_string_equal(paths, "/a,/b");
    assert_int_equal(acc, -1);
    assert_int_equal(nn_ensemble_list_read(lf, paths, 5, &acc, err, sizeof err), -1);
    assert_non_null(strstr(err, "member list too long"));
}

/* ---- file size limits of the readers ---------------------------------------- */

/* A sparse file of exactly n bytes (no disk space used). */
static void sparse(const char *path, off_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, n), 0);
    close(fd);
}

static void test_reader_size_limits(void **state)
{
    (void)state;
    char p[160], lp[160], err[512];
    snprintf(p, sizeof p, "%s/big.idx", tmpdir);
    snprintf(lp, sizeof lp, "%s/labels.idx", tmpdir);
    static const uint8_t labels[9] = {0, 0, 8, 1, 0, 0, 0, 1, 3};
    FILE *f = fopen(lp, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(labels, 1, 9, f), 9);
    fclose(f);
    /* IDX files: 256 MiB is read (and then judged by content), one byte
     * more is refused before reading. */
    sparse(p, (off_t)256 << 20);
    assert_null(nn_dataset_load(p, lp, 10, err, sizeof err));
    assert_null(strstr(err, "limit"));
    assert_non_null(strstr(err, "magic"));
    sparse(p, ((off_t)256 << 20) + 1);
    assert_null(nn_dataset_load(p, lp, 10, err, sizeof err));
    assert_non_null(strstr(err, "more than the 268435456-byte limit"));
    /* max_label is 1..256. */
    assert_null(nn_dataset_load(p, lp, 0, err, sizeof err));
    assert_non_null(strstr(err, "bad arguments"));
    assert_null(nn_dataset_load(p, lp, 257, err, sizeof err));
    assert_non_null(strstr(err, "bad arguments"));

    /* Weights files: over 1 GiB is refused unread (reading a whole
     * 1 GiB file to test the exact edge would cost more than it shows). */
    snprintf(p, sizeof p, "%s/big.safetensors", tmpdir);
    sparse(p, ((off_t)1 << 30) + 1);
    assert_null(nn_st_read(p, err, sizeof err));
    assert_non_null(strstr(err, "larger than the 1073741824-byte limit"));
    sparse(p, 0);
    assert_null(nn_st_read(p, err, sizeof err));
    assert_true(strlen(err) > 0);
    /* Writing where no directory exists fails cleanly. */
    nn_st_writer *w = nn_st_writer_create();
    assert_non_null(w);
    assert_int_equal(nn_st_writer_meta(w, "k", "v"), 0);
    snprintf(p, sizeof p, "%s/no/such/dir/x.safetensors", tmpdir);
    assert_int_equal(nn_st_writer_write(w, p, err, sizeof err), -1);
    assert_true(strlen(err) > 0);
    assert_int_equal(nn_st_writer_write(w, NULL, err, sizeof err), -1);
    nn_st_writer_free(w);
    nn_st_writer_free(NULL);
}

/* ---- random numbers ------------------------------------------------------------ */

/* ---- PNG encoder: which specs it accepts ----------------------------------- */

static img_status enc(img_png_spec sp)
{
    uint8_t *png = (uint8_t *)1;
    size_t len = 7;
    char err[200] = "";
    img_status st = img_png_encode(&sp, &png, &len, err, sizeof err);
    if (st == IMG_OK) {
        /* what it writes decodes back to the same size */
        uint8_t *g = NULL;
        uint32_t w, h;
        img_status d = img_png_decode(png, len, NULL, &g, &w, &h, err, sizeof err);
        if (d != IMG_OK) fail_msg("re-decode: %s", err);
        assert_int_equal(w, sp.width);
        assert_int_equal(h, sp.height);
        free(g);
        free(png);
    } else {
        assert_null(png);
        assert_int_equal(len, 0);
        assert_non_null(strstr(err, "invalid PNG spec"));
    }
    return st;
}

static void test_png_encode_specs(void **state)
{
    (void)state;
    static uint16_t px[4 * 3 * 4];
    static uint8_t pal[256 * 3], trns[256];
    for (int i = 0; i < 256 * 3; i++) pal[i] = (uint8_t)i;
    img_png_spec sp = {.width = 3, .height = 4, .color_type = 0, .bit_depth = 8, .samples = px};
    /* Every depth PNG allows per colour type, and the first it does not. */
    const struct {
        int ctype;
        int ok[5];
        int bad[4];
    } t[] = {
        {0, {1, 2, 4, 8, 16}, {0, 3, 12, 32}}, {2, {8, 16, 0, 0, 0}, {1, 4, 0, 32}},
        {3, {1, 2, 4, 8, 0}, {16, 3, 0, 0}},   {4, {8, 16, 0, 0, 0}, {4, 2, 0, 0}},
        {6, {8, 16, 0, 0, 0}, {4, 1, 0, 0}},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        sp.color_type = t[i].ctype;
        sp.palette = t[i].ctype == 3 ? pal : NULL;
        sp.palette_len = t[i].ctype == 3 ? 2 : 0;
        for (int j = 0; j < 5 && t[i].ok[j]; j++) {
            sp.bit_depth = t[i].ok[j];
            if (enc(sp) != IMG_OK)
                fail_msg("type %d depth %d refused", sp.color_type, sp.bit_depth);
        }
        for (int j = 0; j < 4; j++) {
            sp.bit_depth = t[i].bad[j];
            if (enc(sp) != IMG_ERR_CORRUPT)
                fail_msg("type %d depth %d accepted", sp.color_type, sp.bit_depth);
        }
    }
    const int bad_types[] = {1, 5, 7, -1};
    for (int i = 0; i < 4; i++) {
        img_png_spec b = sp;
        b.color_type = bad_types[i];
        b.bit_depth = 8;
        assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    }
    /* Sizes, samples, palette length 1..256, tRNS at most one per entry. */
    img_png_spec g = {.width = 3, .height = 4, .color_type = 0, .bit_depth = 8, .samples = px};
    img_png_spec b = g;
    b.width = 0;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    b = g;
    b.height = 0;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    b = g;
    b.samples = NULL;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    img_png_spec p = {.width = 3,
                      .height = 4,
                      .color_type = 3,
                      .bit_depth = 8,
                      .samples = px,
                      .palette = pal,
                      .palette_len = 256,
                      .trns = trns,
                      .trns_len = 256};
    assert_int_equal(enc(p), IMG_OK);
    b = p;
    b.palette_len = 257;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    b = p;
    b.palette_len = 1;
    b.trns_len = 1;
    assert_int_equal(enc(b), IMG_OK);
    b.trns_len = 2;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    b = p;
    b.palette_len = 0;
    b.trns_len = 0;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    b = p;
    b.palette = NULL;
    assert_int_equal(enc(b), IMG_ERR_CORRUPT);
    /* A text chunk, plain and compressed, and interlacing. */
    b = g;
    b.text_key = "Comment";
    b.text = "hello";
    assert_int_equal(enc(b), IMG_OK);
    b.text_compressed = 1;
    b.interlace = 1;
    assert_int_equal(enc(b), IMG_OK);
}

/* ---- preprocessing: the contrast threshold and degenerate sizes -------------- */

static void test_prep_contrast_edge(void **state)
{
    (void)state;
    /* 28x28 background 100 with a 10x14 block of ink at 100 + d (or
     * 100 - d): 8 gray levels of contrast is ink, 7 is blank. */
    uint8_t g[28 * 28];
    float out[784];
    char err[200];
    const char *modes[] = {"mnist", "fit"};
    for (int m = 0; m < 2; m++)
        for (int sign = -1; sign <= 1; sign += 2)
            for (int d = 7; d <= 8; d++) {
                memset(g, 100, sizeof g);
                for (int y = 7; y < 21; y++)
                    for (int x = 9; x < 19; x++) g[y * 28 + x] = (uint8_t)(100 + sign * d);
                img_status st = img_prep_by_name(modes[m], g, 28, 28, out, err, sizeof err);
                img_status want = d >= 8 ? IMG_OK : IMG_ERR_BLANK;
                if (st != want)
                    fail_msg("%s, contrast %+d: status %d (%s)", modes[m], sign * d, (int)st, err);
                if (st == IMG_OK) {
                    float mx = 0;
                    for (int i = 0; i < 784; i++) mx = out[i] > mx ? out[i] : mx;
                    assert_true(mx > 0.0f);
                }
            }
    /* Empty and one-pixel images: blank, never a crash. */
    assert_int_equal(img_prep_mnist(g, 0, 5, out, err, sizeof err), IMG_ERR_BLANK);
    assert_int_equal(img_prep_mnist(NULL, 5, 5, out, err, sizeof err), IMG_ERR_BLANK);
    assert_int_equal(img_prep_fit(g, 5, 0, out, err, sizeof err), IMG_ERR_BLANK);
    assert_int_equal(img_prep_mnist(g, 1, 1, out, err, sizeof err), IMG_ERR_BLANK);
    /* A 1x2 image with full contrast: the border is the whole image, its
     * median decides the polarity, and the result is finite. */
    uint8_t two[2] = {0, 255};
    img_status st = img_prep_mnist(two, 1, 2, out, err, sizeof err);
    assert_true(st == IMG_OK || st == IMG_ERR_BLANK);
    for (int i = 0; i < 784; i++) assert_true(isfinite(out[i]) && out[i] >= 0 && out[i] <= 1);
    /* Unknown mode names are the caller's mistake. */
    assert_int_equal(img_prep_by_name("Mnist", g, 28, 28, out, err, sizeof err), IMG_ERR_ARG);
    assert_int_equal(img_prep_by_name(NULL, g, 28, 28, out, err, sizeof err), IMG_ERR_ARG);
}

/* ---- architecture: every bounded field, layer count, shape fitting ------- */

static int arch_ok(const char *layer_json)
{
    char json[512], err[256];
    snprintf(json, sizeof json, "[%s]", layer_json);
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    return nn_arch_parse(json, L, &nl, err, sizeof err) == 0;
}

/* nn_net_create over [C,H,W] for arch; returns 1 when created. */
static int net_ok(const char *arch, int c, int h, int w, const char *needle)
{
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256] = "";
    if (nn_arch_parse(arch, L, &nl, err, sizeof err)) fail_msg("%s: %s", arch, err);
    nn_net *net = nn_net_create(L, nl, c, h, w, NULL, err, sizeof err);
    if (net) {
        nn_net_free(net);
        return 1;
    }
    if (needle && !strstr(err, needle)) fail_msg("%s: message '%s' lacks '%s'", arch, err, needle);
    return 0;
}

static void test_arch_limits(void **state)
{
    (void)state;
    const struct {
        const char *ok, *bad;
    } edges[] = {
        {"{\"type\":\"dense\",\"out\":1}", "{\"type\":\"dense\",\"out\":0}"},
        {"{\"type\":\"dense\",\"out\":1048576}", "{\"type\":\"dense\",\"out\":1048577}"},
        {"{\"type\":\"dense\",\"out\":3.0}", "{\"type\":\"dense\",\"out\":3.5}"},
        {"{\"type\":\"dense\",\"out\":3}", "{\"type\":\"dense\"}"},
        {"{\"type\":\"dense\",\"out\":3}", "{\"type\":\"dense\",\"out\":\"3\"}"},
        {"{\"type\":\"conv2d\",\"out\":65536,\"k\":1}",
         "{\"type\":\"conv2d\",\"out\":65537,\"k\":1}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":64}", "{\"type\":\"conv2d\",\"out\":1,\"k\":65}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":1}", "{\"type\":\"conv2d\",\"out\":1,\"k\":0}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"stride\":64}",
         "{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"stride\":65}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"stride\":1}",
         "{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"stride\":0}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"pad\":64}",
         "{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"pad\":65}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"pad\":0}",
         "{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"pad\":-1}"},
        {"{\"type\":\"conv2d\",\"out\":1,\"k\":3}", "{\"type\":\"conv2d\",\"k\":3}"},
        {"{\"type\":\"maxpool\",\"k\":64}", "{\"type\":\"maxpool\",\"k\":65}"},
        {"{\"type\":\"maxpool\",\"k\":1}", "{\"type\":\"maxpool\",\"k\":0}"},
        {"{\"type\":\"maxpool\",\"k\":2,\"stride\":64}",
         "{\"type\":\"maxpool\",\"k\":2,\"stride\":65}"},
        {"{\"type\":\"maxpool\",\"k\":2}", "{\"type\":\"maxpool\"}"},
        {"{\"type\":\"dropout\",\"p\":0}", "{\"type\":\"dropout\",\"p\":-0.0001}"},
        {"{\"type\":\"dropout\",\"p\":0.95}", "{\"type\":\"dropout\",\"p\":0.9501}"},
        {"{\"type\":\"batchnorm\",\"eps\":1e-12}", "{\"type\":\"batchnorm\",\"eps\":9e-13}"},
        {"{\"type\":\"batchnorm\",\"eps\":1}", "{\"type\":\"batchnorm\",\"eps\":1.001}"},
        {"{\"type\":\"batchnorm\",\"momentum\":0}", "{\"type\":\"batchnorm\",\"momentum\":-0.001}"},
        {"{\"type\":\"batchnorm\",\"momentum\":1}", "{\"type\":\"batchnorm\",\"momentum\":1.001}"},
        {"{\"type\":\"relu\"}", "{\"type\":\"Relu\"}"},
        {"{\"type\":\"flatten\"}", "{\"kind\":\"flatten\"}"},
        {"{\"type\":\"deskew\"}", "[\"deskew\"]"},
    };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        if (!arch_ok(edges[i].ok)) fail_msg("refused: %s", edges[i].ok);
        if (arch_ok(edges[i].bad)) fail_msg("accepted: %s", edges[i].bad);
    }

    /* 1..NN_MAX_LAYERS layers. */
    char json[64 * 20 + 8];
    size_t o = (size_t)snprintf(json, sizeof json, "[");
    for (int i = 0; i < NN_MAX_LAYERS; i++)
        o += (size_t)snprintf(json + o, sizeof json - o, "%s{\"type\":\"relu\"}", i ? "," : "");
    snprintf(json + o, sizeof json - o, "]");
    nn_layer L[NN_MAX_LAYERS + 1];
    int nl = 0;
    char err[256];
    assert_int_equal(nn_arch_parse(json, L, &nl, err, sizeof err), 0);
    assert_int_equal(nl, NN_MAX_LAYERS);
    json[o] = 0;
    snprintf(json + o, sizeof json - o, ",{\"type\":\"relu\"}]");
    assert_int_equal(nn_arch_parse(json, L, &nl, err, sizeof err), -1);
    assert_non_null(strstr(err, "65 layers (must be 1..64)"));
    assert_int_equal(nn_arch_parse("[]", L, &nl, err, sizeof err), -1);
    assert_non_null(strstr(err, "0 layers"));
    assert_int_equal(nn_arch_parse("{}", L, &nl, err, sizeof err), -1);
    assert_int_equal(nn_arch_parse("", L, &nl, err, sizeof err), -1);

    /* Shapes: a kernel exactly as large as the padded input fits, one
     * more does not; padding must stay below the kernel; a pool may be as
     * large as its input. */
    const char *F = "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":2}]";
    char a[256];
    snprintf(a, sizeof a, "[{\"type\":\"conv2d\",\"out\":1,\"k\":5},%s", F);
    assert_true(net_ok(a, 1, 5, 5, NULL));
    assert_false(net_ok(a, 1, 4, 5, "does not fit"));
    snprintf(a, sizeof a, "[{\"type\":\"conv2d\",\"out\":1,\"k\":5,\"pad\":1},%s", F);
    assert_true(net_ok(a, 1, 3, 3, NULL));
    assert_false(net_ok(a, 1, 2, 3, "does not fit"));
    snprintf(a, sizeof a, "[{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"pad\":2},%s", F);
    assert_true(net_ok(a, 1, 4, 4, NULL));
    snprintf(a, sizeof a, "[{\"type\":\"conv2d\",\"out\":1,\"k\":3,\"pad\":3},%s", F);
    assert_false(net_ok(a, 1, 4, 4, "pad=3"));
    snprintf(a, sizeof a, "[{\"type\":\"maxpool\",\"k\":4},%s", F);
    assert_true(net_ok(a, 1, 4, 4, NULL));
    assert_false(net_ok(a, 1, 3, 4, "larger than"));
    /* The last layer gives 2..NN_MAX_CLASSES scores, on a 1x1 map. */
    assert_true(net_ok("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":64}]", 1, 2, 2, NULL));
    assert_false(net_ok("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":65}]", 1, 2, 2,
                        "2..64 class scores"));
    assert_false(net_ok("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":1}]", 1, 2, 2,
                        "2..64 class scores"));
    assert_true(net_ok("[{\"type\":\"relu\"}]", 2, 1, 1, NULL));
    assert_false(net_ok("[{\"type\":\"relu\"}]", 2, 2, 1, "class scores"));
    /* Input shape and deskew's place. */
    assert_false(net_ok("[{\"type\":\"relu\"}]", 0, 1, 1, "bad input shape"));
    assert_false(net_ok("[{\"type\":\"relu\"}]", 2, 0, 1, "bad input shape"));
    assert_false(net_ok("[{\"type\":\"relu\"},{\"type\":\"deskew\"}]", 2, 1, 1, "first layer"));
    /* Activations up to 64 Mi values per image. */
    assert_false(net_ok("[{\"type\":\"conv2d\",\"out\":65536,\"k\":1},{\"type\":\"flatten\"},"
                        "{\"type\":\"dense\",\"out\":2}]",
                        1, 32, 33, "activation too large"));

    /* Meta: input_std must be > 0, the class count must match. */
    assert_int_equal(nn_arch_parse("[{\"type\":\"relu\"}]", L, &nl, err, sizeof err), 0);
    nn_meta m;
    memset(&m, 0, sizeof m);
    m.nclasses = 2;
    m.input_std = 0.0f;
    assert_null(nn_net_create(L, nl, 2, 1, 1, &m, err, sizeof err));
    assert_non_null(strstr(err, "input_std"));
    m.input_std = 1e-30f;
    nn_net *net = nn_net_create(L, nl, 2, 1, 1, &m, err, sizeof err);
    if (!net) fail_msg("%s", err);
    nn_net_free(net);
    nn_net_free(NULL);
    m.nclasses = 3;
    assert_null(nn_net_create(L, nl, 2, 1, 1, &m, err, sizeof err));
    assert_non_null(strstr(err, "3 classes"));
}

/* ---- pipeline: tensor value range and batch chunking ----------------------- */

static void test_pipeline_tensor_edges(void **state)
{
    (void)state;
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    assert_int_equal(nn_arch_parse("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]", L,
                                   &nl, err, sizeof err),
                     0);
    nn_net *net = nn_net_create(L, nl, 1, 28, 28, NULL, err, sizeof err);
    if (!net) fail_msg("%s", err);
    nn_net_init(net, 3);
    nn_ensemble *e = nn_ensemble_from_nets(&net, 1, err, sizeof err);
    if (!e) fail_msg("%s", err);
    assert_int_equal(pipe_model_check(e, "test", err, sizeof err), 0);
    assert_null(pipe_ws_create(e, 0)); /* max_batch >= 1 */
    pipe_ws *ws = pipe_ws_create(e, 2);
    assert_non_null(ws);

    /* Values 0 and 1 (and -0) are inside, the next floats out are not. */
    enum { N = 7 };
    static float x[N * PIPE_PIXELS];
    for (int i = 0; i < N * PIPE_PIXELS; i++) x[i] = (float)((i * 37) % 101) / 100.0f;
    const float edge[N] = {0.0f, 1.0f,    -0.0f, nextafterf(1.0f, 2.0f), -nextafterf(0.0f, 1.0f),
                           NAN,  INFINITY};
    const pipe_status want[N] = {PIPE_OK,
                                 PIPE_OK,
                                 PIPE_OK,
                                 PIPE_INVALID_TENSOR,
                                 PIPE_INVALID_TENSOR,
                                 PIPE_INVALID_TENSOR,
                                 PIPE_INVALID_TENSOR};
    for (int i = 0; i < N; i++) x[i * PIPE_PIXELS + 400] = edge[i];
    pipe_result res[N], one;
    /* Seven images through a workspace of two: chunks of 2, 2, 2, 1. */
    pipe_run_tensors(e, ws, PIPE_F32, x, N, res);
    for (int i = 0; i < N; i++) {
        if (res[i].status != want[i])
            fail_msg("image %d (pixel %g): %s, want %s", i, (double)edge[i],
                     pipe_status_name(res[i].status), pipe_status_name(want[i]));
        if (want[i] != PIPE_OK) {
            assert_non_null(strstr(res[i].msg, "pixel 400 (row 14, column 8)"));
            continue;
        }
        /* the same answer as the image alone */
        pipe_run_tensors(e, ws, PIPE_F32, x + (size_t)i * PIPE_PIXELS, 1, &one);
        assert_int_equal(one.status, PIPE_OK);
        assert_int_equal(one.prediction, res[i].prediction);
        assert_memory_equal(one.probs, res[i].probs, sizeof(float) * 10);
        double sum = 0;
        for (int c = 0; c < 10; c++) sum += res[i].probs[c];
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    /* Exactly max_batch images, and none. */
    pipe_run_tensors(e, ws, PIPE_F32, x, 2, res);
    assert_int_equal(res[0].status, PIPE_OK);
    assert_int_equal(res[1].status, PIPE_OK);
    pipe_run_tensors(e, ws, PIPE_F32, x, 0, res);
    /* uint8: 0..255 all valid, 255 is 1.0. */
    static uint8_t u[2 * PIPE_PIXELS];
    for (int i = 0; i < PIPE_PIXELS; i++) {
        u[i] = 255;
        u[PIPE_PIXELS + i] = 0;
    }
    static float f[2 * PIPE_PIXELS];
    for (int i = 0; i < PIPE_PIXELS; i++) {
        f[i] = 1.0f;
        f[PIPE_PIXELS + i] = 0.0f;
    }
    pipe_result ru[2], rf[2];
    pipe_run_tensors(e, ws, PIPE_U8, u, 2, ru);
    pipe_run_tensors(e, ws, PIPE_F32, f, 2, rf);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ru[i].status, PIPE_OK);
        assert_memory_equal(ru[i].probs, rf[i].probs, sizeof(float) * 10);
    }
    /* An empty PNG body and an unknown status. */
    pipe_run_png(e, ws, (const uint8_t *)"", 0, NULL, NULL, &one);
    assert_int_equal(one.status, PIPE_EMPTY_BODY);
    assert_non_null(pipe_status_name(PIPE_STATUS_COUNT));
    pipe_ws_free(ws);
    pipe_ws_free(NULL);
    nn_ensemble_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_overflow),
        cmocka_unit_test(test_weights_tensor_count),
        cmocka_unit_test(test_lr_schedules),
        cmocka_unit_test(test_png_limits_at_the_edge),
        cmocka_unit_test(test_weights_metadata_ranges),
        cmocka_unit_test(test_optimiser_steps),
        cmocka_unit_test(test_optimiser_update_from),
        cmocka_unit_test(test_adam_paths),
        cmocka_unit_test(test_ensemble_limits),
        cmocka_unit_test(test_reader_size_limits),
        cmocka_unit_test(test_png_encode_specs),
        cmocka_unit_test(test_prep_contrast_edge),
        cmocka_unit_test(test_arch_limits),
        cmocka_unit_test(test_pipeline_tensor_edges),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
