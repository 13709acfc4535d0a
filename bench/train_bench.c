/* train_bench.c - one thread's training step, layer by layer.
 *
 *   build/bench/train_bench [--arch lenet|cnn|mlp] [--batch N] [--steps S]
 *                           [--peak GFLOPS] [--direct]
 *
 * Runs S forward+backward steps of one shard (batch N, one workspace, one
 * thread: the trainer gives each thread such a shard) on fixed random
 * images, then prints per layer the thread CPU milliseconds per step of
 * forward and backward, and for conv/dense layers the GFLOP/s reached
 * (forward 2 flops per multiply-add, backward 4: dW and dX). --peak is one
 * core's FP32 peak (build/bench/peak) for the fraction column. The first
 * step is a warm-up and not counted. --direct runs every convolution
 * directly (no Winograd for the 3x3 stride-1 ones); GFLOP/s count the
 * direct convolution's multiply-adds either way. */
#include "bench/archs.h"
#include "nn/rng.h"

int main(int argc, char **argv)
{
    const char *arch = "cnn";
    double peak = 0.0;
    int batch = 32, steps = 10, direct = 0;
    const cli_opt opts[] = {
        {"arch", CLI_STRING, &arch, 0, 0, "NAME", NN_PRESET_NAMES, .def = NULL},
        {"batch", CLI_INT, &batch, 1, 4096, "N", "images per step", .def = NULL},
        {"steps", CLI_INT, &steps, 1, 1000000, "S", "timed steps", .def = NULL},
        {"peak", CLI_DOUBLE, &peak, 0, 1e6, "GFLOPS", "one core's FP32 peak, for a percentage",
         .def = "none", .lo_open = 1},
        {"direct", CLI_FLAG, &direct, 0, 0, NULL, "no Winograd: every convolution direct",
         .def = NULL},
    };
    int rc = bench_parse("train_bench", opts, 5, argc, argv, "usage: train_bench [options]");
    if (rc) return rc == 1 ? 0 : rc;
    nn_net *net = bench_net("train_bench", arch);
    if (!net) return 1;
    nn_ws *ws = nn_ws_create(net, batch, 1);
    if (ws && direct) nn_ws_use_wino(ws, 0);
    float *x = malloc(sizeof(float) * batch * 784), *grad = calloc(net->nparams, sizeof(float));
    uint8_t *y = malloc(batch);
    if (!ws || !x || !grad || !y) {
        fprintf(stderr, "train_bench: out of memory\n");
        return 1;
    }
    nn_rng r;
    nn_rng_seed(&r, 5);
    for (int i = 0; i < batch * 784; i++) x[i] = (float)nn_rng_uniform(&r);
    for (int i = 0; i < batch; i++) y[i] = (uint8_t)(i % 10);

    static double t[2 * NN_MAX_LAYERS];
    nn_net_forward_train(net, ws, x, y, batch, 0.0f, 1, 1, NULL); /* warm-up */
    nn_net_backward(net, ws, grad);
    nn_ws_set_timer(ws, t);
    double t0 = bench_cpu_now();
    for (int s = 0; s < steps; s++) {
        nn_net_forward_train(net, ws, x, y, batch, 0.0f, (uint64_t)s, 1, NULL);
        nn_net_backward(net, ws, grad);
    }
    double total = bench_cpu_now() - t0;
    nn_ws_set_timer(ws, NULL);

    double macs = (double)nn_net_macs(net) * batch * 3.0; /* fwd + dW + dX */
    printf("train_bench: %s, batch %d, %d steps, one thread\n", arch, batch, steps);
    printf("%3s %-10s %14s %9s %9s %9s %9s%s\n", "i", "layer", "out", "fwd ms", "bwd ms",
           "fwd GF/s", "bwd GF/s", peak > 0 ? "  fwd/peak bwd/peak" : "");
    for (int i = 0; i < net->nlayers; i++) {
        const nn_layer *L = &net->layers[i];
        double f = t[i] / steps, b = t[NN_MAX_LAYERS + i] / steps;
        double m = (double)bench_layer_macs(L) * batch;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", L->out_c, L->out_h, L->out_w);
        printf("%3d %-10s %14s %9.3f %9.3f", i, bench_kind_name(L->kind), shape, f * 1e3, b * 1e3);
        if (m > 0) {
            double gf = 2 * m / f * 1e-9, gb = 4 * m / b * 1e-9;
            printf(" %9.1f %9.1f", gf, gb);
            if (peak > 0) printf("  %7.0f%% %7.0f%%", 100 * gf / peak, 100 * gb / peak);
        }
        printf("\n");
    }
    double per = total / steps;
    printf("step: %.3f ms (%.3f ms/image), %.1f GFLOP/s", per * 1e3, per * 1e3 / batch,
           2 * macs / per * 1e-9);
    if (peak > 0) printf(" = %.0f%% of one core's peak", 100 * 2 * macs / per * 1e-9 / peak);
    printf("\n");
    free(x);
    free(grad);
    free(y);
    nn_ws_free(ws);
    nn_net_free(net);
    return 0;
}
