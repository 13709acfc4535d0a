/* infer_bench.c - batch-1 inference, one thread, layer by layer.
 *
 *   build/bench/infer_bench [--arch lenet|cnn|mlp] [--iters N] [--peak GFLOPS] [--json]
 *
 * Times nn_net_forward on one image for the net as trained, for its
 * batch-norm-folded copy run directly (no plan), and for that copy with
 * its inference plan (Winograd for the 3x3 stride-1 convolutions: what
 * nn_net_fold_bn returns and the server runs): median of 7 rounds of N
 * calls, in thread CPU time (the machine is shared), the three
 * interleaved round by round, then a per-layer table of the planned net
 * and of the direct one. GFLOP/s count the direct convolution's
 * multiply-adds, so a Winograd layer's figure is its effective rate.
 * --json: one JSON line instead, for bench/run.sh: the three nets'
 * medians and the Winograd layers' time and effective GFLOP/s, planned
 * and direct (their sums over the layers the plan takes). --peak is one
 * core's FP32 peak (build/bench/peak) for the fraction column. */
#include "bench/archs.h"
#include "nn/gemm.h"
#include "nn/rng.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define NETS 3
/* Median seconds per call over 7 rounds of iters calls, for each net,
 * the nets taking turns within each round. */
static void time_nets(double *med, nn_net *const *net, nn_ws *const *ws, const float *x, int iters)
{
    float probs[NN_MAX_CLASSES];
    double r[NETS][7];
    for (int j = 0; j < NETS; j++)
        for (int i = 0; i < iters / 10 + 1; i++) nn_net_forward(net[j], ws[j], x, 1, probs, NULL);
    for (int k = 0; k < 7; k++)
        for (int j = 0; j < NETS; j++) {
            double t0 = bench_cpu_now();
            for (int i = 0; i < iters; i++) nn_net_forward(net[j], ws[j], x, 1, probs, NULL);
            r[j][k] = (bench_cpu_now() - t0) / iters;
        }
    for (int j = 0; j < NETS; j++) {
        qsort(r[j], 7, sizeof r[j][0], cmp_d);
        med[j] = r[j][3];
    }
}

/* Per-layer seconds per call of net into t [2 * NN_MAX_LAYERS] (thread
 * CPU time over iters calls), and the table unless title is NULL. */
static void layer_table(double *t, const char *title, const nn_net *f, nn_ws *wf, const float *x,
                        int iters)
{
    float probs[NN_MAX_CLASSES];
    memset(t, 0, sizeof(double) * 2 * NN_MAX_LAYERS);
    nn_ws_set_timer(wf, t);
    for (int i = 0; i < iters; i++) nn_net_forward(f, wf, x, 1, probs, NULL);
    nn_ws_set_timer(wf, NULL);
    for (int i = 0; i < f->nlayers; i++) t[i] /= iters;
    if (!title) return;
    printf("%s\n%3s %-10s %14s %9s %9s\n", title, "i", "layer", "out", "us", "GFLOP/s");
    for (int i = 0; i < f->nlayers; i++) {
        const nn_layer *L = &f->layers[i];
        double us = t[i] * 1e6, m = (double)bench_layer_macs(L);
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", L->out_c, L->out_h, L->out_w);
        printf("%3d %-10s %14s %9.2f", i, bench_kind_name(L->kind), shape, us);
        if (m > 0) printf(" %9.1f", 2 * m / (us * 1e-6) * 1e-9);
        if (nn_net_plan_wino(f, i))
            printf("  F(%dx%d,3x3)", nn_net_plan_wino(f, i), nn_net_plan_wino(f, i));
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    const char *arch = "lenet";
    double peak = 0.0;
    int iters = 2000, json = 0;
    const cli_opt opts[] = {
        {"arch", CLI_STRING, &arch, 0, 0, "NAME", NN_PRESET_NAMES, .def = NULL},
        {"iters", CLI_INT, &iters, 1, 100000000, "N", "forward passes per measurement",
         .def = NULL},
        {"peak", CLI_DOUBLE, &peak, 0, 1e6, "GFLOPS", "one core's FP32 peak, for a percentage",
         .def = "none", .lo_open = 1},
        {"json", CLI_FLAG, &json, 0, 0, NULL, "one JSON line (bench/run.sh)", .def = NULL},
    };
    int rc = bench_parse("infer_bench", opts, 4, argc, argv, "usage: infer_bench [options]");
    if (rc) return rc == 1 ? 0 : rc;
    nn_net *net = bench_net("infer_bench", arch);
    if (!net) return 1;
    char err[256];
    nn_net *f = nn_net_fold_bn(net, err, sizeof err);
    if (!f) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    nn_net *d = nn_net_fold_bn(net, err, sizeof err);
    if (!d) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    nn_net_unplan(d);
    nn_ws *ws = nn_ws_create(net, 1, 0), *wf = nn_ws_create(f, 1, 0), *wd = nn_ws_create(d, 1, 0);
    if (!ws || !wf || !wd) {
        fprintf(stderr, "infer_bench: out of memory\n");
        return 1;
    }
    float x[784];
    nn_rng r;
    nn_rng_seed(&r, 3);
    for (int i = 0; i < 784; i++) x[i] = (float)nn_rng_uniform(&r);

    double flops = 2.0 * (double)nn_net_macs(net), t[NETS];
    nn_net *nets[NETS] = {net, d, f};
    nn_ws *wss[NETS] = {ws, wd, wf};
    time_nets(t, nets, wss, x, iters);
    const char *names[NETS] = {"as trained:", "bn folded, direct:", "bn folded, planned:"};
    static double tp[2 * NN_MAX_LAYERS], td[2 * NN_MAX_LAYERS];
    const char *tf = json ? NULL : "planned (what the server runs):",
               *tdn = json ? NULL : "direct:";
    if (!json) {
        printf("infer_bench: %s, batch 1, one thread, %.2f MFLOP/image, kernels %s\n", arch,
               flops * 1e-6, nn_gemm_path_name(NN_GEMM_PATH_AUTO));
        for (int j = 0; j < NETS; j++) {
            printf("  %-20s %8.2f us  %6.1f GFLOP/s", names[j], t[j] * 1e6, flops / t[j] * 1e-9);
            if (peak > 0) printf("  (%.0f%% of one core's peak)", 100 * flops / t[j] * 1e-9 / peak);
            printf("\n");
        }
        int w4 = 0;
        for (int i = 0; i < f->nlayers; i++) w4 += nn_net_plan_wino(f, i) == 4;
        printf("  plan: %d convolution(s) by Winograd, %d of them F(4x4,3x3), the others "
               "F(2x2,3x3)\n",
               nn_net_plan_wino_layers(f), w4);
    }
    layer_table(tp, tf, f, wf, x, iters);
    layer_table(td, tdn, d, wd, x, iters);
    /* The Winograd layers (the folded nets have the same layers). */
    double wm = 0, wt = 0, dt = 0;
    for (int i = 0; i < f->nlayers; i++)
        if (nn_net_plan_wino(f, i)) {
            wm += (double)bench_layer_macs(&f->layers[i]);
            wt += tp[i];
            dt += td[i];
        }
    if (json)
        printf("{\"arch\":\"%s\",\"kernels\":\"%s\",\"trained_us\":%.2f,\"direct_us\":%.2f,"
               "\"planned_us\":%.2f,\"wino_layers\":%d,\"wino_macs\":%.0f,\"wino_layers_us\":%.2f,"
               "\"direct_layers_us\":%.2f,\"wino_gflops\":%.2f,\"direct_gflops\":%.2f}\n",
               arch, nn_gemm_path_name(NN_GEMM_PATH_AUTO), t[0] * 1e6, t[1] * 1e6, t[2] * 1e6,
               nn_net_plan_wino_layers(f), wm, wt * 1e6, dt * 1e6,
               wt > 0 ? 2 * wm / wt * 1e-9 : 0.0, dt > 0 ? 2 * wm / dt * 1e-9 : 0.0);
    else if (wm > 0)
        printf("Winograd layers: %.1f us planned, %.1f us direct; effective %.1f GFLOP/s against "
               "%.1f (direct multiply-adds counted)\n",
               wt * 1e6, dt * 1e6, 2 * wm / wt * 1e-9, 2 * wm / dt * 1e-9);
    nn_ws_free(ws);
    nn_ws_free(wf);
    nn_ws_free(wd);
    nn_net_free(f);
    nn_net_free(d);
    nn_net_free(net);
    return 0;
}
