/* latency.c - batch-1, single-thread inference latency of a model file:
 * the forward pass the server runs per request (normalisation, layers,
 * softmax), on real MNIST test images, one at a time.
 *
 *   build/bench/latency MODEL.safetensors [--runs N] [--seconds S]
 *        [--peak GFLOPS] [--data DIR] [--direct]
 *
 * Prints one JSON line on stdout:
 *   {"model":..,"runs":N,"median_us":..,"p99_us":..,"mean_us":..,
 *    "gflops":..,"peak_pct":..,"macs":..}
 * Each run is timed on its own (monotonic clock); gflops is 2 * MACs over
 * the median, peak_pct that against --peak (one core's FP32 FMA peak from
 * build/bench/peak), omitted without it. Runs continue until both N runs
 * and S seconds are done, whichever comes last. --direct drops the
 * inference plan (nn_ensemble_unplan): every convolution runs directly,
 * without Winograd, for a before/after comparison. NN_ISA and
 * NN_PRECISION apply as in the server ("precision" in the line says
 * whether bf16 ran). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/opt.h"
#include "nn/amx.h"
#include "nn/ensemble.h"
#include "nn/gemm.h"
#include "nn/idx.h"
#include "nn/net.h"

#define LAT_IMAGES 256 /* distinct inputs cycled through            */
#define LAT_MAX_RUNS 2000000

/* Every result is stored here, so no forward pass can be optimised away. */
static volatile float lat_sink;

static double lat_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int lat_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *data = "data/mnist";
    int runs = 5000;
    double seconds = 1.0, peak = 0.0;
    int direct = 0;
    const cli_opt opts[] = {
        {"runs", CLI_INT, &runs, 1, LAT_MAX_RUNS, "N", "at least N timed runs", .def = NULL},
        {"seconds", CLI_DOUBLE, &seconds, 0, 600, "S", "and at least S seconds", .def = NULL},
        {"peak", CLI_DOUBLE, &peak, 0, 1e6, "G", "one core's FP32 peak in GFLOP/s, for peak_pct",
         .def = "none", .lo_open = 1},
        {"data", CLI_STRING, &data, 0, 0, "DIR", "MNIST IDX files", .def = NULL},
        {"direct", CLI_FLAG, &direct, 0, 0, NULL, "no inference plan: convolutions run directly",
         .def = NULL},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    const char **ops = calloc((size_t)argc, sizeof *ops);
    int nops = 0;
    if (!ops) {
        fprintf(stderr, "latency: out of memory\n");
        return 1;
    }
    cli_action act = cli_parse(opts, nopts, argc, argv, ops, &nops, err, sizeof err);
    const char *model = nops == 1 ? ops[0] : NULL;
    free(ops);
    switch (act) {
    case CLI_HELP:
    case CLI_VERSION:
        cli_usage(stdout, "usage: latency MODEL.safetensors [options]", opts, nopts);
        return 0;
    case CLI_ERROR: fprintf(stderr, "latency: %s\n", err); return 2;
    case CLI_RUN: break;
    }
    if (!model) {
        fprintf(stderr, "latency: one MODEL.safetensors wanted (see --help)\n");
        return 2;
    }
    /* NN_ISA and NN_PRECISION as the server reads them. */
    if (nn_gemm_init_env(err, sizeof err) || nn_precision_init_env(err, sizeof err)) {
        fprintf(stderr, "latency: %s\n", err);
        return 2;
    }

    nn_ensemble *e = nn_ensemble_load(model, err, sizeof err);
    if (!e) {
        fprintf(stderr, "latency: %s\n", err);
        return 1;
    }
    if (direct) nn_ensemble_unplan(e);
    const nn_net *net = nn_ensemble_member(e, 0);
    int hw = net->in_c * net->in_h * net->in_w;
    nn_dataset *test = nn_dataset_load_dir(data, 1, 256, err, sizeof err);
    if (!test) {
        fprintf(stderr, "latency: %s (run `make data`)\n", err);
        return 1;
    }
    if (test->rows * test->cols != hw) {
        fprintf(stderr, "latency: the model wants %d inputs, the images have %d pixels\n", hw,
                test->rows * test->cols);
        return 1;
    }
    int nimg = test->n < LAT_IMAGES ? test->n : LAT_IMAGES;
    int ncls = nn_ensemble_classes(e);
    float *x = malloc(sizeof(float) * (size_t)nimg * hw);
    float *probs = malloc(sizeof(float) * (size_t)ncls);
    double *t = malloc(sizeof(double) * LAT_MAX_RUNS);
    nn_ensemble_ws *ws = nn_ensemble_ws_create(e, 1);
    if (!x || !probs || !t || !ws) {
        fprintf(stderr, "latency: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)nimg * hw; i++) x[i] = test->images[i] / 255.0f;

    /* Warm-up: first touches of the workspace and the weights. */
    for (int i = 0; i < 200; i++) {
        nn_ensemble_forward(e, ws, x + (size_t)(i % nimg) * hw, 1, probs);
        lat_sink = probs[0];
    }
    long n = 0;
    double start = lat_now(), sum = 0;
    while (n < LAT_MAX_RUNS && (n < runs || lat_now() - start < seconds)) {
        const float *in = x + (size_t)(n % nimg) * hw;
        double t0 = lat_now();
        nn_ensemble_forward(e, ws, in, 1, probs);
        t[n] = lat_now() - t0;
        sum += t[n];
        lat_sink = probs[0];
        n++;
    }
    qsort(t, (size_t)n, sizeof *t, lat_cmp);
    double med = t[n / 2], p99 = t[(size_t)(0.99 * (double)(n - 1))];
    uint64_t macs = 0;
    for (int m = 0; m < nn_ensemble_size(e); m++) macs += nn_net_macs(nn_ensemble_member(e, m));
    double gflops = 2.0 * (double)macs / med / 1e9;
    printf("{\"model\":\"%s\",\"runs\":%ld,\"median_us\":%.2f,\"p99_us\":%.2f,"
           "\"mean_us\":%.2f,\"gflops\":%.2f,",
           model, n, med * 1e6, p99 * 1e6, sum / n * 1e6, gflops);
    if (peak > 0) printf("\"peak_pct\":%.2f,", 100.0 * gflops / peak);
    printf("\"plan\":%s,\"precision\":\"%s\",\"macs\":%llu}\n", direct ? "false" : "true",
           nn_precision_name(nn_net_plan_bf16_layers(nn_ensemble_member_infer(e, 0))
                                 ? NN_PREC_BF16
                                 : NN_PREC_FP32),
           (unsigned long long)macs);

    nn_ensemble_ws_free(ws);
    nn_ensemble_free(e);
    nn_dataset_free(test);
    free(x);
    free(probs);
    free(t);
    return 0;
}
