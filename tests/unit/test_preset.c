/* test_preset.c - the presets: each one builds a net for MNIST images with
 * the recipe the trainer documents, and --arch resolves names and files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/preset.h"

#define TMPDIR_PREFIX "test_preset"
#include "tmpdir.h"

static void test_presets_build(void **state)
{
    (void)state;
    const char *names[] = {"mlp", "lenet", "cnn"};
    const size_t params[] = {101770, 61706, 326410}; /* as the model card states */
    for (int i = 0; i < 3; i++) {
        const nn_preset *p = nn_arch_preset(names[i]);
        assert_non_null(p);
        assert_string_equal(p->name, names[i]);
        assert_non_null(strstr(NN_PRESET_NAMES, names[i]));
        nn_layer L[NN_MAX_LAYERS];
        int nl = 0;
        char err[256];
        assert_int_equal(nn_arch_parse(p->arch, L, &nl, err, sizeof err), 0);
        nn_net *net = nn_net_create(L, nl, 1, 28, 28, NULL, err, sizeof err);
        assert_non_null(net);
        assert_int_equal(nn_net_outputs(net), 10);
        assert_int_equal(net->nparams, params[i]);
        nn_net_free(net);
        assert_true(p->epochs > 0 && p->batch > 0 && p->sched.lr > 0);
        nn_train_cfg cfg;
        nn_preset_train_cfg(p, &cfg);
        assert_int_equal(cfg.epochs, p->epochs);
        assert_int_equal(cfg.batch, p->batch);
        assert_int_equal(cfg.sched.kind, p->sched.kind);
        assert_int_equal(cfg.opt.kind, NN_OPT_ADAM);
        assert_int_equal(cfg.seed, 1);
    }
    /* The recipes the model card describes. */
    assert_true(nn_arch_preset("mlp")->input_std == 1.0f);
    assert_true(nn_arch_preset("lenet")->input_mean == NN_MNIST_MEAN);
    assert_true(nn_arch_preset("cnn")->input_std == NN_MNIST_STD);
    assert_int_equal(nn_arch_preset("cnn")->sched.kind, NN_SCHED_ONECYCLE);
    assert_true(nn_arch_preset("cnn")->ema == 0.999f);
    assert_null(nn_arch_preset("resnet"));
    assert_null(nn_arch_preset(NULL));
}

/* The presets are the architectures of the shipped models (the test runs
 * from the repository root, as make unit does). */
static void test_presets_match_shipped_models(void **state)
{
    (void)state;
    const char *names[] = {"mlp", "lenet", "cnn"};
    for (int i = 0; i < 3; i++) {
        char path[64], err[512];
        snprintf(path, sizeof path, "models/%s.safetensors", names[i]);
        nn_net *net = nn_net_load(path, err, sizeof err);
        if (!net) fail_msg("%s", err);
        const nn_preset *p = nn_arch_preset(names[i]);
        nn_layer L[NN_MAX_LAYERS];
        int nl = 0;
        assert_int_equal(nn_arch_parse(p->arch, L, &nl, err, sizeof err), 0);
        char *want = nn_arch_to_json(L, nl), *have = nn_arch_to_json(net->layers, net->nlayers);
        assert_non_null(want);
        assert_non_null(have);
        assert_string_equal(have, want);
        assert_true(net->meta.input_mean == p->input_mean);
        assert_true(net->meta.input_std == p->input_std);
        free(want);
        free(have);
        nn_net_free(net);
    }
}

static void test_arch_text(void **state)
{
    (void)state;
    const nn_preset *p = NULL;
    char err[512];
    char *t = nn_arch_text("lenet", &p, err, sizeof err);
    assert_non_null(t);
    assert_ptr_equal(p, nn_arch_preset("lenet"));
    assert_string_equal(t, p->arch);
    free(t);

    char path[256];
    snprintf(path, sizeof path, "%s/a.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":10}]", f);
    fclose(f);
    t = nn_arch_text(path, &p, err, sizeof err);
    assert_non_null(t);
    assert_ptr_equal(p, nn_arch_preset_file());
    assert_null(p->arch);
    assert_non_null(strstr(t, "flatten"));
    free(t);

    snprintf(path, sizeof path, "%s/none.json", tmpdir);
    assert_null(nn_arch_text(path, &p, err, sizeof err));
    assert_non_null(strstr(err, "not a preset (mlp, lenet, cnn)"));
    assert_non_null(strstr(err, path));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_build),
        cmocka_unit_test(test_presets_match_shipped_models),
        cmocka_unit_test(test_arch_text),
    };
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
