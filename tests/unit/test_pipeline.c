/* test_pipeline.c - the serving pipeline: the code table, the load-time
 * model check, the default-model rule, and the PNG and tensor entrances
 * agreeing with each other and with the forward pass they wrap. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/pipeline.h"

#define TMPDIR_PREFIX "test_pipeline"
#include "tmpdir.h"

/* A small conv net for inputs [c,h,w], seeded, with the given metadata. */
static nn_net *make_net(int c, int h, int w, const char *dataset, double acc, uint64_t seed)
{
    static const char arch[] =
        "[{\"type\":\"conv2d\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
        "{\"type\":\"maxpool\",\"k\":2},{\"type\":\"flatten\"},"
        "{\"type\":\"dense\",\"out\":10}]";
    nn_layer L[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    if (nn_arch_parse(arch, L, &nl, err, sizeof err)) fail_msg("arch: %s", err);
    nn_meta m = {.nclasses = 10, .input_mean = 0.13f, .input_std = 0.31f, .test_accuracy = acc};
    snprintf(m.dataset, sizeof m.dataset, "%s", dataset);
    for (int i = 0; i < 10; i++) snprintf(m.labels[i], sizeof m.labels[i], "L%d", i);
    nn_net *net = nn_net_create(L, nl, c, h, w, &m, err, sizeof err);
    if (!net) fail_msg("create: %s", err);
    nn_net_init(net, seed);
    return net;
}

static nn_ensemble *make_model(int c, int h, int w, uint64_t seed)
{
    char err[256];
    nn_net *net = make_net(c, h, w, "mnist", 0.9, seed);
    nn_ensemble *e = nn_ensemble_from_nets(&net, 1, err, sizeof err);
    if (!e) fail_msg("ensemble: %s", err);
    return e;
}

/* A digit-like stroke: a bright vertical bar with a foot, ink on dark. */
static void stroke(uint8_t *g, int w, int h)
{
    memset(g, 0, (size_t)w * (size_t)h);
    for (int y = h / 5; y < h - h / 5; y++)
        for (int x = w / 2 - w / 14; x <= w / 2 + w / 14; x++) g[y * w + x] = 255;
    for (int x = w / 3; x < w - w / 3; x++) g[(h - h / 5) * w + x] = 200;
}

static void test_status_table(void **state)
{
    (void)state;
    /* Every code has a distinct name and an HTTP status that fits it. */
    for (int a = 0; a < PIPE_STATUS_COUNT; a++) {
        const char *n = pipe_status_name((pipe_status)a);
        int http = pipe_status_http((pipe_status)a);
        assert_non_null(n);
        assert_true(strlen(n) > 1);
        if (a == PIPE_OK)
            assert_int_equal(http, 200);
        else
            assert_true(http >= 400 && http <= 599);
        for (int b = 0; b < a; b++) assert_string_not_equal(n, pipe_status_name((pipe_status)b));
    }
    assert_string_equal(pipe_status_name(PIPE_INVALID_PNG), "invalid_png");
    assert_string_equal(pipe_status_name(PIPE_IMAGE_TOO_LARGE), "image_too_large");
    assert_int_equal(pipe_status_http(PIPE_IMAGE_TOO_LARGE), 413);
    assert_int_equal(pipe_status_http(PIPE_BLANK_IMAGE), 422);
    assert_int_equal(pipe_status_http(PIPE_NOT_READY), 503);
    assert_string_equal(pipe_status_name((pipe_status)PIPE_STATUS_COUNT), "internal");
    assert_int_equal(pipe_status_http((pipe_status)-1), 500);
    /* image/'s statuses map onto the one set. */
    assert_int_equal(pipe_status_from_img(IMG_OK), PIPE_OK);
    assert_int_equal(pipe_status_from_img(IMG_ERR_NOT_PNG), PIPE_NOT_PNG);
    assert_int_equal(pipe_status_from_img(IMG_ERR_CORRUPT), PIPE_INVALID_PNG);
    assert_int_equal(pipe_status_from_img(IMG_ERR_TOO_LARGE), PIPE_IMAGE_TOO_LARGE);
    assert_int_equal(pipe_status_from_img(IMG_ERR_BLANK), PIPE_BLANK_IMAGE);
    assert_int_equal(pipe_status_from_img(IMG_ERR_NOMEM), PIPE_INTERNAL);
    assert_int_equal(pipe_status_from_img(IMG_ERR_ARG), PIPE_INTERNAL);
}

static void test_model_check(void **state)
{
    (void)state;
    char err[512];
    nn_ensemble *ok = make_model(1, 28, 28, 1);
    assert_int_equal(pipe_model_check(ok, "ok.safetensors", err, sizeof err), 0);
    nn_ensemble_free(ok);

    const int shapes[][3] = {{1, 32, 32}, {3, 28, 28}, {1, 28, 30}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        nn_ensemble *bad = make_model(shapes[i][0], shapes[i][1], shapes[i][2], 2);
        err[0] = 0;
        assert_int_equal(pipe_model_check(bad, "dir/wide.safetensors", err, sizeof err), -1);
        char want[64];
        snprintf(want, sizeof want, "takes %dx%dx%d inputs", shapes[i][0], shapes[i][1],
                 shapes[i][2]);
        assert_non_null(strstr(err, "dir/wide.safetensors"));
        assert_non_null(strstr(err, want));
        nn_ensemble_free(bad);
    }

    /* Loading refuses such a file, naming it. */
    char path[256];
    snprintf(path, sizeof path, "%s/wide.safetensors", tmpdir);
    nn_net *wide = make_net(1, 32, 32, "mnist", 0.9, 3);
    assert_int_equal(nn_net_save(wide, path, err, sizeof err), 0);
    nn_net_free(wide);
    assert_null(pipe_model_load(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "1x32x32"));
}

static void test_default_pick(void **state)
{
    (void)state;
    assert_int_equal(pipe_default_pick(NULL, 0), -1);
    /* The most accurate single digit model; ensembles and other datasets
     * only when nothing else qualifies; ties to the first. */
    pipe_candidate c[] = {
        {.nmembers = 1, .test_accuracy = 0.98, .dataset = "mnist"},
        {.nmembers = 5, .test_accuracy = 0.998, .dataset = "mnist"},
        {.nmembers = 1, .test_accuracy = 0.995, .dataset = "fashion-mnist"},
        {.nmembers = 1, .test_accuracy = 0.99, .dataset = "mnist"},
        {.nmembers = 1, .test_accuracy = 0.99, .dataset = "mnist"},
        {.nmembers = 1, .test_accuracy = -1, .dataset = "mnist"},
    };
    assert_int_equal(pipe_default_pick(c, 6), 3);
    assert_int_equal(pipe_default_pick(c, 3), 0);
    assert_int_equal(pipe_default_pick(c + 1, 2), 1); /* fashion over an ensemble */
    assert_int_equal(pipe_default_pick(c + 1, 1), 0); /* only an ensemble */
}

/* dir/file: a directory when file has no '.', else a saved net with that
 * dataset and accuracy, or (dataset NULL) bytes that are no weights. */
static void put_file(const char *dir, const char *file, const char *dataset, double acc,
                     uint64_t seed)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (!strchr(file, '.')) {
        assert_int_equal(mkdir(path, 0700), 0);
    } else if (dataset) {
        nn_net *n = make_net(1, 28, 28, dataset, acc, seed);
        assert_int_equal(nn_net_save(n, path, err, sizeof err), 0);
        nn_net_free(n);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs("not weights", f);
        fclose(f);
    }
}

static void test_default_in_dir(void **state)
{
    (void)state;
    char dir[256], path[512], out[1024], err[512];
    snprintf(dir, sizeof dir, "%s/models", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(pipe_default_in_dir(dir, out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "no loadable"));
    const struct {
        const char *file, *dataset;
        double acc;
    } files[] = {{"b.safetensors", "mnist", 0.97},
                 {"a.safetensors", "mnist", 0.97},
                 {"f.safetensors", "fashion-mnist", 0.99},
                 {"c.safetensors", "mnist", 0.96}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        put_file(dir, files[i].file, files[i].dataset, files[i].acc, 10 + i);
    put_file(dir, "z.safetensors", NULL, 0, 0); /* unloadable: skipped */
    assert_int_equal(pipe_default_in_dir(dir, out, sizeof out, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    assert_string_equal(out, path);

    /* Versioned directories (models/NAME/N.safetensors): only the highest
     * version serves, whatever an older one scored; a failing highest
     * version leaves its name out; NAME/ replaces a flat NAME file. */
    const struct {
        const char *file, *dataset;
        double acc;
    } versioned[] = {{"v", NULL, 0},
                     {"v/1.safetensors", "mnist", 0.999},
                     {"v/2.safetensors", "mnist", 0.975},
                     {"v/notes.txt", NULL, 0}, /* not a version: ignored */
                     {"w", NULL, 0},
                     {"w/1.safetensors", "mnist", 0.999},
                     {"w/3.safetensors", NULL, 0}, /* unloadable */
                     {"a", NULL, 0},
                     {"a/1.safetensors", "mnist", 0.5}};
    for (size_t i = 0; i < sizeof versioned / sizeof versioned[0]; i++)
        put_file(dir, versioned[i].file, versioned[i].dataset, versioned[i].acc, 20 + i);
    assert_int_equal(pipe_default_in_dir(dir, out, sizeof out, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/v/2.safetensors", dir);
    assert_string_equal(out, path);
    /* Without v/, the flat b (0.97) wins: a/ (0.5) has replaced flat a. */
    snprintf(path, sizeof path, "%s/v/2.safetensors", dir);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/v/1.safetensors", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(pipe_default_in_dir(dir, out, sizeof out, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    assert_string_equal(out, path);
    assert_int_equal(pipe_default_in_dir("/nonexistent/dir", out, sizeof out, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/dir"));
}

/* Tensors skip decode and preprocessing: uint8 is scaled by 1/255, floats
 * are taken as they are, and the answers are the forward pass's. */
static void test_tensors(void **state)
{
    (void)state;
    nn_ensemble *e = make_model(1, 28, 28, 7);
    enum { N = 5 };
    uint8_t u8[N * PIPE_PIXELS];
    float f32[N * PIPE_PIXELS];
    for (int i = 0; i < N; i++) {
        stroke(u8 + i * PIPE_PIXELS, 28, 28);
        u8[i * PIPE_PIXELS + 30 * i + 100] = (uint8_t)(40 * i); /* images differ */
    }
    for (int q = 0; q < N * PIPE_PIXELS; q++) f32[q] = u8[q] / 255.0f;

    /* The reference: the model's forward pass, one image at a time. */
    nn_ensemble_ws *ews = nn_ensemble_ws_create(e, 1);
    assert_non_null(ews);
    float ref[N][10];
    for (int i = 0; i < N; i++) nn_ensemble_forward(e, ews, f32 + i * PIPE_PIXELS, 1, ref[i]);
    nn_ensemble_ws_free(ews);

    pipe_ws *one = pipe_ws_create(e, 1), *two = pipe_ws_create(e, 2);
    assert_non_null(one);
    assert_non_null(two);
    assert_null(pipe_ws_create(e, 0));
    pipe_result ru[N], rf[N], rb[N];
    pipe_run_tensors(e, one, PIPE_U8, u8, N, ru);
    pipe_run_tensors(e, one, PIPE_F32, f32, N, rf);
    pipe_run_tensors(e, two, PIPE_F32, f32, N, rb); /* batches of 2, 2, 1 */
    for (int i = 0; i < N; i++) {
        assert_int_equal(ru[i].status, PIPE_OK);
        assert_int_equal(rf[i].status, PIPE_OK);
        assert_int_equal(rb[i].status, PIPE_OK);
        assert_int_equal(ru[i].nclasses, 10);
        assert_int_equal(ru[i].decode_us, 0);
        float best = -1;
        for (int c = 0; c < 10; c++) {
            /* Same inputs, same one-image forward: identical. */
            assert_true(ru[i].probs[c] == ref[i][c]);
            assert_true(rf[i].probs[c] == ref[i][c]);
            /* A batch of 2 may sum in another order: float rounding only. */
            assert_true(fabsf(rb[i].probs[c] - ref[i][c]) <= 1e-5f);
            if (ref[i][c] > best) best = ref[i][c];
        }
        assert_true(ru[i].probs[ru[i].prediction] == best);
        char want[8];
        snprintf(want, sizeof want, "L%d", ru[i].prediction);
        assert_string_equal(ru[i].label, want);
    }

    /* A float outside 0..1 or NaN spoils only its own image. */
    f32[1 * PIPE_PIXELS + 5] = 1.5f;
    f32[3 * PIPE_PIXELS + 700] = NAN;
    pipe_run_tensors(e, two, PIPE_F32, f32, N, rb);
    for (int i = 0; i < N; i++) {
        if (i == 1 || i == 3) {
            assert_int_equal(rb[i].status, PIPE_INVALID_TENSOR);
            assert_int_equal(rb[i].nclasses, 0);
            assert_non_null(strstr(rb[i].msg, i == 1 ? "pixel 5 " : "pixel 700 "));
        } else {
            assert_int_equal(rb[i].status, PIPE_OK);
            for (int c = 0; c < 10; c++) assert_true(fabsf(rb[i].probs[c] - ref[i][c]) <= 1e-5f);
        }
    }
    pipe_ws_free(one);
    pipe_ws_free(two);
    pipe_ws_free(NULL);
    nn_ensemble_free(e);
}

/* PNG bytes: decode, the model's preprocessing, forward; the prepared
 * input comes back and, as a float tensor, gives the same answer. */
static void test_png(void **state)
{
    (void)state;
    nn_ensemble *e = make_model(1, 28, 28, 9);
    pipe_ws *ws = pipe_ws_create(e, 1);
    assert_non_null(ws);
    enum { W = 64, H = 80 };
    uint8_t g[W * H];
    uint16_t samples[W * H];
    stroke(g, W, H);
    for (int q = 0; q < W * H; q++) samples[q] = (uint16_t)(255 - g[q]); /* dark on white */
    img_png_spec spec = {
        .width = W, .height = H, .color_type = 0, .bit_depth = 8, .samples = samples};
    uint8_t *png = NULL;
    size_t len = 0;
    char err[256];
    assert_int_equal(img_png_encode(&spec, &png, &len, err, sizeof err), IMG_OK);

    pipe_result r, t;
    float prepared[PIPE_PIXELS], want[PIPE_PIXELS];
    pipe_run_png(e, ws, png, len, NULL, prepared, &r);
    assert_int_equal(r.status, PIPE_OK);
    assert_int_equal(r.nclasses, 10);
    /* The prepared image is what image/ makes of the picture. */
    uint8_t inv[W * H];
    for (int q = 0; q < W * H; q++) inv[q] = (uint8_t)samples[q];
    assert_int_equal(img_prep_mnist(inv, W, H, want, err, sizeof err), IMG_OK);
    assert_memory_equal(prepared, want, sizeof want);
    pipe_run_tensors(e, ws, PIPE_F32, prepared, 1, &t);
    assert_int_equal(t.status, PIPE_OK);
    assert_memory_equal(r.probs, t.probs, sizeof r.probs);
    assert_int_equal(r.prediction, t.prediction);

    /* The limits given are the ones applied. */
    img_limits lim;
    img_limits_default(&lim);
    lim.max_pixels = W * H - 1;
    pipe_run_png(e, ws, png, len, &lim, NULL, &r);
    assert_int_equal(r.status, PIPE_IMAGE_TOO_LARGE);
    assert_true(r.msg[0] != '\0');

    /* Errors: each its code, a message, and no answer. */
    pipe_run_png(e, ws, png, 0, NULL, NULL, &r);
    assert_int_equal(r.status, PIPE_EMPTY_BODY);
    pipe_run_png(e, ws, (const uint8_t *)"GIF89a", 6, NULL, NULL, &r);
    assert_int_equal(r.status, PIPE_NOT_PNG);
    pipe_run_png(e, ws, png, len / 2, NULL, NULL, &r);
    assert_int_equal(r.status, PIPE_INVALID_PNG);
    assert_int_equal(r.nclasses, 0);
    assert_true(r.msg[0] != '\0');
    free(png);
    for (int q = 0; q < W * H; q++) samples[q] = 255;
    assert_int_equal(img_png_encode(&spec, &png, &len, err, sizeof err), IMG_OK);
    pipe_run_png(e, ws, png, len, NULL, NULL, &r);
    assert_int_equal(r.status, PIPE_BLANK_IMAGE);
    free(png);
    pipe_ws_free(ws);
    nn_ensemble_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_table), cmocka_unit_test(test_model_check),
        cmocka_unit_test(test_default_pick), cmocka_unit_test(test_default_in_dir),
        cmocka_unit_test(test_tensors),      cmocka_unit_test(test_png),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
