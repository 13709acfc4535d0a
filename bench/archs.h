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

#include "cli/opt.h"
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
    nn_meta meta = {.nclasses = 10,
                    .input_mean = p->input_mean,
                    .input_std = p->input_std,
                    .test_accuracy = -1};
    snprintf(meta.dataset, sizeof meta.dataset, "mnist");
    for (int i = 0; i < 10; i++) snprintf(meta.labels[i], sizeof meta.labels[i], "%d", i);
    if (nn_arch_parse(p->arch, layers, &nl, err, sizeof err) == 0)
        net = nn_net_create(layers, nl, 1, 28, 28, &meta, err, sizeof err);
    if (!net) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return NULL;
    }
    nn_net_init(net, 1);
    return net;
}

/* Parses the options of a per-layer benchmark: the table opts (--arch and
 * --peak are expected among them). 0 to run, 1 after --help, 2 after a
 * one-line error on stderr. */
static int bench_parse(const char *prog, const cli_opt *opts, int n, int argc, char **argv,
                       const char *synopsis)
{
    char err[256];
    const char **ops = calloc((size_t)argc, sizeof *ops);
    int nops = 0;
    if (!ops) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 2;
    }
    cli_action act = cli_parse(opts, n, argc, argv, ops, &nops, err, sizeof err);
    const char *extra = nops ? ops[0] : NULL;
    free(ops);
    switch (act) {
    case CLI_HELP:
    case CLI_VERSION: cli_usage(stdout, synopsis, opts, n); return 1;
    case CLI_ERROR: fprintf(stderr, "%s: %s\n", prog, err); return 2;
    case CLI_RUN: break;
    }
    if (extra) {
        fprintf(stderr, "%s: unexpected argument %s (see --help)\n", prog, extra);
        return 2;
    }
    return 0;
}

static const char *bench_kind_name(nn_kind k)
{
    static const char *n[NN_LAYER_KINDS] = {"dense",   "conv2d",  "maxpool",   "relu",
                                            "dropout", "flatten", "batchnorm", "deskew"};
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
