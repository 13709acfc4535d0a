/* infer_bench.c - batch-1 inference, one thread, layer by layer.
 *
 *   build/bench/infer_bench [--arch lenet|cnn|mlp] [--iters N] [--peak GFLOPS]
 *
 * Times nn_net_forward on one image for the net as trained and for its
 * batch-norm-folded copy (nn_net_fold_bn, what the server runs): median
 * of 7 rounds of N calls, in thread CPU time (the machine is shared), then
 * a per-layer table of the folded net. --peak is one core's FP32 peak
 * (build/bench/peak) for the fraction column. */
#include "bench/archs.h"
#include "nn/rng.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds per call over 7 rounds of iters calls. */
static double time_net(const nn_net *net, nn_ws *ws, const float *x, int iters)
{
    float probs[NN_MAX_CLASSES];
    double r[7];
    for (int i = 0; i < iters / 10 + 1; i++) nn_net_forward(net, ws, x, 1, probs, NULL);
    for (int k = 0; k < 7; k++) {
        double t0 = bench_cpu_now();
        for (int i = 0; i < iters; i++) nn_net_forward(net, ws, x, 1, probs, NULL);
        r[k] = (bench_cpu_now() - t0) / iters;
    }
    qsort(r, 7, sizeof r[0], cmp_d);
    return r[3];
}

int main(int argc, char **argv)
{
    const char *arch = "lenet";
    double peak = 0.0;
    int iters = 2000;
    const cli_opt opts[] = {
        {"arch", CLI_STRING, &arch, 0, 0, "NAME", NN_PRESET_NAMES, .def = NULL},
        {"iters", CLI_INT, &iters, 1, 100000000, "N", "forward passes per measurement",
         .def = NULL},
        {"peak", CLI_DOUBLE, &peak, 0, 1e6, "GFLOPS", "one core's FP32 peak, for a percentage",
         .def = "none", .lo_open = 1},
    };
    int rc = bench_parse("infer_bench", opts, 3, argc, argv, "usage: infer_bench [options]");
    if (rc) return rc == 1 ? 0 : rc;
    nn_net *net = bench_net("infer_bench", arch);
    if (!net) return 1;
    char err[256];
    nn_net *f = nn_net_fold_bn(net, err, sizeof err);
    if (!f) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    nn_ws *ws = nn_ws_create(net, 1, 0), *wf = nn_ws_create(f, 1, 0);
    if (!ws || !wf) {
        fprintf(stderr, "infer_bench: out of memory\n");
        return 1;
    }
    float x[784];
    nn_rng r;
    nn_rng_seed(&r, 3);
    for (int i = 0; i < 784; i++) x[i] = (float)nn_rng_uniform(&r);

    double flops = 2.0 * (double)nn_net_macs(net);
    double t_plain = time_net(net, ws, x, iters), t_fold = time_net(f, wf, x, iters);
    printf("infer_bench: %s, batch 1, one thread, %.2f MFLOP/image\n", arch, flops * 1e-6);
    printf("  as trained: %8.2f us  %6.1f GFLOP/s\n", t_plain * 1e6, flops / t_plain * 1e-9);
    printf("  bn folded:  %8.2f us  %6.1f GFLOP/s", t_fold * 1e6, flops / t_fold * 1e-9);
    if (peak > 0) printf("  (%.0f%% of one core's peak)", 100 * flops / t_fold * 1e-9 / peak);
    printf("\n");

    static double t[2 * NN_MAX_LAYERS];
    float probs[NN_MAX_CLASSES];
    nn_ws_set_timer(wf, t);
    for (int i = 0; i < iters; i++) nn_net_forward(f, wf, x, 1, probs, NULL);
    nn_ws_set_timer(wf, NULL);
    printf("%3s %-10s %14s %9s %9s\n", "i", "layer", "out", "us", "GFLOP/s");
    for (int i = 0; i < f->nlayers; i++) {
        const nn_layer *L = &f->layers[i];
        double us = t[i] / iters * 1e6, m = (double)bench_layer_macs(L);
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", L->out_c, L->out_h, L->out_w);
        printf("%3d %-10s %14s %9.2f", i, bench_kind_name(L->kind), shape, us);
        if (m > 0) printf(" %9.1f", 2 * m / (us * 1e-6) * 1e-9);
        printf("\n");
    }
    nn_ws_free(ws);
    nn_ws_free(wf);
    nn_net_free(f);
    nn_net_free(net);
    return 0;
}
