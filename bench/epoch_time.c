/* epoch_time.c - our training throughput: a fixed number of steps of one
 * architecture at one batch size and thread count, timed, extrapolated to a
 * 60,000-image MNIST epoch.
 *
 *   build/bench/epoch_time --arch mlp|lenet|cnn|FILE [--batch B]
 *        [--steps N] [--warmup W] [--threads T] [--data DIR]
 *        [--save FILE] [--print-arch] [--direct]
 *
 * Prints one JSON line on stdout:
 *   {"arch":..,"batch":B,"threads":T,"steps":N,"s_per_step":..,
 *    "images_per_s":..,"epoch_s":..,"gflops":..,"macs":..}
 * gflops counts 6 flops per multiply-add of the forward pass per image
 * (forward 2, backward 4: the input gradient and the weight gradient), the
 * usual convention for training. epoch_s is s_per_step times the number
 * of steps in 60,000 images (ceil(60000/B)).
 *
 * The step is what mnist-train runs (nn_trainer_epoch: uint8 -> float
 * conversion, forward, backward, gradient reduction, Adam), without
 * augmentation or weight averaging, which the peer does not do either.
 * --print-arch prints the architecture JSON and exits, so the PyTorch peer
 * builds the very same layers. --save writes the net after the timed steps
 * (a model file of the preset's shape for the latency and server runs when
 * no trained one is shipped). --direct runs every convolution directly
 * (no Winograd for the 3x3 stride-1 ones), for a before/after comparison.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/opt.h"
#include "nn/idx.h"
#include "nn/net.h"
#include "nn/preset.h"
#include "nn/train.h"

#define ET_EPOCH_IMAGES 60000

static double et_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *arch_name = NULL, *data = "data/mnist", *save = NULL;
    int batch = 32, steps = 100, warm = 5, threads = 2, print_arch = 0, direct = 0;
    const cli_opt opts[] = {
        {"arch", CLI_STRING, &arch_name, 0, 0, "NAME|FILE",
         NN_PRESET_NAMES " or a JSON file (required)", .def = ""},
        {"batch", CLI_INT, &batch, 1, 4096, "B", "images per step", .def = NULL},
        {"steps", CLI_INT, &steps, 1, 1000000, "N", "timed steps", .def = NULL},
        {"warmup", CLI_INT, &warm, 0, 1000000, "W", "untimed steps first", .def = NULL},
        {"threads", CLI_INT, &threads, 1, 256, "T", "training threads", .def = NULL},
        {"data", CLI_STRING, &data, 0, 0, "DIR", "MNIST IDX files", .def = NULL},
        {"save", CLI_STRING, &save, 0, 0, "FILE", "write the net after the timed steps", .def = ""},
        {"direct", CLI_FLAG, &direct, 0, 0, NULL, "no Winograd: every convolution direct",
         .def = NULL},
        {"print-arch", CLI_FLAG, &print_arch, 0, 0, NULL, "print the architecture JSON and exit",
         .def = NULL},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    const char **ops = calloc((size_t)argc, sizeof *ops);
    int nops = 0;
    if (!ops) {
        fprintf(stderr, "epoch_time: out of memory\n");
        return 1;
    }
    cli_action act = cli_parse(opts, nopts, argc, argv, ops, &nops, err, sizeof err);
    const char *extra = nops ? ops[0] : NULL;
    free(ops);
    switch (act) {
    case CLI_HELP:
    case CLI_VERSION:
        cli_usage(stdout, "usage: epoch_time --arch mlp|lenet|cnn|FILE [options]", opts, nopts);
        return 0;
    case CLI_ERROR: fprintf(stderr, "epoch_time: %s\n", err); return 2;
    case CLI_RUN: break;
    }
    if (extra) {
        fprintf(stderr, "epoch_time: unexpected argument %s (see --help)\n", extra);
        return 2;
    }
    if (!arch_name) {
        fprintf(stderr, "epoch_time: --arch is required (see --help)\n");
        return 2;
    }
    const nn_preset *preset;
    char *arch_json = nn_arch_text(arch_name, &preset, err, sizeof err);
    if (!arch_json) {
        fprintf(stderr, "epoch_time: --arch %s\n", err);
        return 2;
    }
    if (print_arch) {
        printf("%s\n", arch_json);
        free(arch_json);
        return 0;
    }

    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    int bad_arch = nn_arch_parse(arch_json, layers, &nl, err, sizeof err);
    free(arch_json);
    if (bad_arch) {
        fprintf(stderr, "epoch_time: %s\n", err);
        return 2;
    }
    nn_dataset *train = nn_dataset_load_dir(data, 0, 10, err, sizeof err);
    if (!train) {
        fprintf(stderr, "epoch_time: %s (run `make data`)\n", err);
        return 1;
    }
    /* More steps than one pass over the data holds would wrap; the timed
     * work is the same, so cap the images and say so. */
    long need = (long)steps * batch, wneed = (long)warm * batch;
    if (need > train->n || wneed > train->n) {
        fprintf(stderr, "epoch_time: steps*batch and warmup*batch must be <= %d images\n",
                train->n);
        return 2;
    }

    nn_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.nclasses = 10;
    snprintf(meta.dataset, sizeof meta.dataset, "mnist");
    for (int i = 0; i < 10; i++) snprintf(meta.labels[i], NN_LABEL_MAX, "%d", i);
    /* The preset's normalisation (the cost is the same either way). */
    meta.input_mean = preset->input_mean;
    meta.input_std = preset->input_std;
    meta.test_accuracy = -1.0;
    meta.seed = 1;
    meta.epochs = 1;
    snprintf(meta.name, sizeof meta.name, "bench-%s", arch_name);
    nn_net *net = nn_net_create(layers, nl, 1, train->rows, train->cols, &meta, err, sizeof err);
    if (!net) {
        fprintf(stderr, "epoch_time: %s\n", err);
        return 2;
    }
    nn_net_init(net, 1);

    nn_train_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    nn_opt_cfg_default(&cfg.opt, NN_OPT_ADAM);
    cfg.sched.kind = NN_SCHED_CONST;
    cfg.sched.lr = 1e-3f;
    cfg.sched.gamma = 1.0f;
    cfg.batch = batch;
    cfg.threads = threads;
    cfg.direct_conv = direct;
    cfg.epochs = 2;
    cfg.seed = 1;
    nn_trainer *tr = nn_trainer_create(net, &cfg, err, sizeof err);
    if (!tr) {
        fprintf(stderr, "epoch_time: %s\n", err);
        return 1;
    }

    double loss = 0, acc = 0;
    /* Warm-up: page in the workspaces, settle the clocks and the caches. */
    if (warm > 0)
        nn_trainer_epoch(tr, train->images, train->labels, (int)wneed, 0, NULL, NULL, NULL, &loss,
                         &acc);
    double t0 = et_now();
    nn_trainer_epoch(tr, train->images, train->labels, (int)need, 1, NULL, NULL, NULL, &loss, &acc);
    double secs = et_now() - t0;

    if (!(loss == loss)) {
        fprintf(stderr, "epoch_time: training diverged (loss is NaN)\n");
        return 1;
    }
    double per_step = secs / steps;
    int epoch_steps = (ET_EPOCH_IMAGES + batch - 1) / batch;
    uint64_t macs = nn_net_macs(net);
    printf("{\"arch\":\"%s\",\"batch\":%d,\"threads\":%d,\"steps\":%d,"
           "\"s_per_step\":%.6g,\"images_per_s\":%.1f,\"epoch_s\":%.4f,"
           "\"gflops\":%.2f,\"macs\":%llu,\"params\":%zu,\"loss\":%.4f}\n",
           arch_name, batch, threads, steps, per_step, need / secs, per_step * epoch_steps,
           6.0 * (double)macs * need / secs / 1e9, (unsigned long long)macs, net->nparams, loss);

    int rc = 0;
    /* No weight averaging: the trained net is what the trainer evaluates. */
    if (save) {
        if (nn_net_save(net, save, err, sizeof err)) {
            fprintf(stderr, "epoch_time: %s\n", err);
            rc = 1;
        }
    }
    nn_trainer_free(tr);
    nn_net_free(net);
    nn_dataset_free(train);
    return rc;
}
