/* archs.h - what the per-layer benchmarks (infer_bench, train_bench)
 * share: the presets of tools/mnist-train.c (kept in step by hand: the
 * benchmarks must time what the trainer trains), building a net from one,
 * option parsing, a thread CPU clock and per-layer labels. */
#ifndef BENCH_ARCHS_H
#define BENCH_ARCHS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/net.h"

#define BENCH_CBR(out, k, s, p)                                                             \
    "{\"type\":\"conv2d\",\"out\":" #out ",\"k\":" #k ",\"stride\":" #s ",\"pad\":" #p "}," \
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"

static const char *bench_arch(const char *name)
{
    if (!strcmp(name, "mlp"))
        return "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":128},{\"type\":\"relu\"},"
               "{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"dense\",\"out\":10}]";
    if (!strcmp(name, "lenet"))
        return "[{\"type\":\"conv2d\",\"out\":6,\"k\":5,\"pad\":2},{\"type\":\"relu\"},"
               "{\"type\":\"maxpool\",\"k\":2},"
               "{\"type\":\"conv2d\",\"out\":16,\"k\":5},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"k\":2},"
               "{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":120},{\"type\":\"relu\"},"
               "{\"type\":\"dense\",\"out\":84},{\"type\":\"relu\"},{\"type\":\"dense\",\"out\":10}]";
    if (!strcmp(name, "cnn"))
        return "[" BENCH_CBR(32, 3, 1, 0) BENCH_CBR(32, 3, 1, 0) BENCH_CBR(32, 5, 2, 2)
               "{\"type\":\"dropout\",\"p\":0.4},"
               BENCH_CBR(64, 3, 1, 0) BENCH_CBR(64, 3, 1, 0) BENCH_CBR(64, 5, 2, 2)
               "{\"type\":\"dropout\",\"p\":0.4},"
               BENCH_CBR(128, 4, 1, 0) "{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.4},"
               "{\"type\":\"dense\",\"out\":10}]";
    return NULL;
}

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
    const char *json = bench_arch(arch);
    if (!json) {
        fprintf(stderr, "%s: unknown arch %s (lenet, cnn, mlp)\n", prog, arch);
        return NULL;
    }
    nn_layer layers[NN_MAX_LAYERS];
    int nl = 0;
    char err[256];
    nn_net *net = NULL;
    if (nn_arch_parse(json, layers, &nl, err, sizeof err) == 0)
        net = nn_net_create(layers, nl, 1, 28, 28, NULL, err, sizeof err);
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
