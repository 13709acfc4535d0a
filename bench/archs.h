/* archs.h - what the per-layer benchmarks (infer_bench, train_bench)
 * share: building a net from one of the trainer's presets (nn/preset.h,
 * so the benchmarks time what the trainer trains), option parsing, a
 * thread CPU clock and per-layer labels. */
#ifndef BENCH_ARCHS_H
#define BENCH_ARCHS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/net.h"
#include "nn/preset.h"

/* Thread CPU seconds: the machine may be shared. */
static double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The preset's net for 1x28x28 inputs, initialised with seed 1; NULL
 * after a message on stderr. */
static nn_net *bench_net(const char *prog, const char *arch)
{
    const nn_preset *p = nn_arch_preset(arch);
    if (!p) {
        fprintf(stderr, "%s: unknown arch %s (" NN_PRESET_NAMES ")\n", prog, arch);
        return NULL;
    }
    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    nn_net *net = NULL;
    nn_meta meta = {.nclasses = 10, .input_mean = p->input_mean, .input_std = p->input_std,
                    .test_accuracy = -1};
    snprintf(meta.dataset, sizeof meta.dataset, "mnist");
    for (int i = 0; i < 10; i++)
        snprintf(meta.labels[i], sizeof meta.labels[i], "%d", i);
    if (nn_arch_parse(p->arch, layers, &nl, err, sizeof err) == 0)
        net = nn_net_create(layers, nl, 1, 28, 28, &meta, err, sizeof err);
    if (!net) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return NULL;
    }
    nn_net_init(net, 1);
    return net;
}

/* --arch NAME, --peak GFLOPS and the positive integer options names[i]
 * (into vals[i]). 0, or 2 after the usage line on stderr. */
static int bench_args(int argc, char **argv, const char **arch, double *peak,
                      const char *const *names, int *vals, int n, const char *usage)
{
    for (int i = 1; i < argc; i++) {
        int ok = i + 1 < argc, hit = 0;
        if (ok && !strcmp(argv[i], "--arch")) { *arch = argv[++i]; hit = 1; }
        else if (ok && !strcmp(argv[i], "--peak")) { *peak = atof(argv[++i]); hit = 1; }
        for (int k = 0; k < n && !hit && ok; k++)
            if (!strcmp(argv[i], names[k])) {
                vals[k] = atoi(argv[++i]);
                hit = vals[k] > 0;
            }
        if (!hit) {
            fprintf(stderr, "usage: %s %s\n", argv[0], usage);
            return 2;
        }
    }
    return 0;
}

static const char *bench_kind_name(nn_kind k)
{
    static const char *n[NN_LAYER_KINDS] = {"dense", "conv2d", "maxpool", "relu",
                                            "dropout", "flatten", "batchnorm"};
    return k < NN_LAYER_KINDS ? n[k] : "?";
}

/* Multiply-adds of one image through a conv or dense layer (else 0). */
static uint64_t bench_layer_macs(const nn_layer *L)
{
    if (L->kind == NN_DENSE) return (uint64_t)L->in_c * L->out;
    if (L->kind == NN_CONV2D)
        return (uint64_t)L->out_c * L->out_h * L->out_w * L->in_c * L->k * L->k;
    return 0;
}

#endif
