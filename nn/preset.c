/* preset.c - see preset.h. */
#include "nn/preset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/err.h"

/* conv2d + batch norm + ReLU: inference folds the batch norm into the
 * convolution before it. */
#define CBR(out, k, s, p)                                                                   \
    "{\"type\":\"conv2d\",\"out\":" #out ",\"k\":" #k ",\"stride\":" #s ",\"pad\":" #p "}," \
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"

static const nn_preset presets[] = {
    {.name = "mlp",
     .arch = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":128},{\"type\":\"relu\"},"
             "{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"dense\",\"out\":10}]",
     .epochs = 20,
     .batch = 32,
     .sched = {.kind = NN_SCHED_EXP, .lr = 1e-3f, .gamma = 0.85f},
     /* raw pixels: the MLP was trained without normalisation */
     .input_mean = 0.0f,
     .input_std = 1.0f},
    {.name = "lenet",
     .arch = "[{\"type\":\"conv2d\",\"out\":6,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
             "{\"type\":\"maxpool\",\"k\":2},"
             "{\"type\":\"conv2d\",\"out\":16,\"k\":5},{\"type\":\"relu\"},"
             "{\"type\":\"maxpool\",\"k\":2},"
             "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":120},{\"type\":\"relu\"},"
             "{\"type\":\"dense\",\"out\":84},{\"type\":\"relu\"},{\"type\":\"dense\",\"out\":10}]",
     .epochs = 20,
     .batch = 32,
     .sched = {.kind = NN_SCHED_EXP, .lr = 1e-3f, .gamma = 0.85f},
     /* Mild augmentation: LeNet is small, heavier distortion underfits. */
     .aug = {.max_rot = 8.0f, .max_zoom = 0.08f, .max_shift = 0.08f},
     .input_mean = NN_MNIST_MEAN,
     .input_std = NN_MNIST_STD},
    /* 32C3-32C3-32C5S2-DO, 64C3-64C3-64C5S2-DO, 128C4, DO, 10 */
    {.name = "cnn",
     .arch = "[" CBR(32, 3, 1, 0) CBR(32, 3, 1, 0)
         CBR(32, 5, 2, 2) "{\"type\":\"dropout\",\"p\":0.4}," CBR(64, 3, 1, 0) CBR(64, 3, 1, 0)
             CBR(64, 5, 2, 2) "{\"type\":\"dropout\",\"p\":0.4}," CBR(
                 128, 4, 1, 0) "{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.4},"
                               "{\"type\":\"dense\",\"out\":10}]",
     .epochs = 30,
     .batch = 64,
     .sched =
         {.kind = NN_SCHED_ONECYCLE, .lr = 3e-3f, .gamma = 1.0f, .warmup = 2.0f, .final = 0.001f},
     .aug = {.max_rot = 12.0f, .max_zoom = 0.12f, .max_shift = 0.1f},
     .ema = 0.999f,
     .input_mean = NN_MNIST_MEAN,
     .input_std = NN_MNIST_STD},
};

static const nn_preset file_preset = {
    .name = "file",
    .epochs = 5,
    .batch = 32,
    .sched = {.kind = NN_SCHED_CONST, .lr = 1e-3f, .gamma = 1.0f},
    .input_mean = NN_MNIST_MEAN,
    .input_std = NN_MNIST_STD,
};

const nn_preset *nn_arch_preset(const char *name)
{
    for (size_t i = 0; name && i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) return &presets[i];
    return NULL;
}

const nn_preset *nn_arch_preset_file(void) { return &file_preset; }

void nn_preset_train_cfg(const nn_preset *p, nn_train_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    nn_opt_cfg_default(&cfg->opt, NN_OPT_ADAM);
    cfg->sched = p->sched;
    cfg->aug = p->aug;
    cfg->ema = p->ema;
    cfg->epochs = p->epochs;
    cfg->batch = p->batch;
    cfg->seed = 1;
}

char *nn_arch_text(const char *arg, const nn_preset **preset, char *err, size_t errlen)
{
    enum { MAX_TEXT = 1 << 20 };
    const nn_preset *p = nn_arch_preset(arg);
    if (p) {
        *preset = p;
        char *t = strdup(p->arch);
        if (!t) nn_errf(err, errlen, "out of memory");
        return t;
    }
    *preset = nn_arch_preset_file();
    FILE *f = fopen(arg, "rb");
    if (!f) {
        nn_errf(err, errlen, "%s: not a preset (" NN_PRESET_NAMES ") and not a readable file: %s",
                arg, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_TEXT + 1);
    size_t n = buf ? fread(buf, 1, MAX_TEXT + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad || n > MAX_TEXT) {
        nn_errf(err, errlen, "%s: %s", arg,
                !buf  ? "out of memory"
                : bad ? "read error"
                      : "architecture file over 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}
