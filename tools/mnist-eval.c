/* mnist-eval - test-set accuracy of a model (or an ensemble: several model
 * files averaged), per-class accuracy, confusion matrix and throughput. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/opt.h"
#include "nn/ensemble.h"
#include "nn/eval.h"
#include "nn/gemm.h"
#include "nn/idx.h"
#include "nn/pool.h"

#define VERSION "1.0.0"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int json = 0, threads = 0, limit = 0, list_kernels = 0;
    const char *data = NULL, *shift = NULL;
    double rotate = 0, scale = 1;
    int rotate_set = 0, scale_set = 0;
    const cli_opt opts[] = {
        {"json", CLI_FLAG, &json, 0, 0, NULL, "print one JSON object", .def = NULL},
        {"list-kernels", CLI_FLAG, &list_kernels, 0, 0, NULL,
         "print the kernel paths this CPU runs (values for NN_ISA) and exit", .def = NULL},
        {"data", CLI_STRING, &data, 0, 0, "DIR", "IDX files, .gz accepted",
         .def = "by the model's dataset, data/mnist or /usr/share/datasets/fashion-mnist"},
        {"threads", CLI_INT, &threads, 0, 1024, "N", "threads (0 = all CPUs)",
         .def = "0, all CPUs"},
        {"limit", CLI_INT, &limit, 0, 100000000, "N", "first N test images only (0 = all)",
         .def = NULL},
        {"shift", CLI_STRING, &shift, 0, 0, "DX,DY", "shift every test image by DX,DY pixels first",
         .def = "0,0"},
        {"rotate", CLI_DOUBLE, &rotate, -360, 360, "DEG",
         "rotate every test image (counter-clockwise)", .seen = &rotate_set},
        {"scale", CLI_DOUBLE, &scale, 0.05, 20, "S", "scale every test image about its centre",
         .lo_open = 1, .hi_open = 1, .seen = &scale_set},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    char err[512];
    const char **models = calloc((size_t)argc, sizeof *models);
    int nmodels = 0;
    if (!models) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        return 1;
    }
    switch (cli_parse(opts, nopts, argc, argv, models, &nmodels, err, sizeof err)) {
    case CLI_HELP:
        cli_usage(stdout,
                  "usage: mnist-eval [options] MODEL [MODEL...]\n"
                  "Evaluates MODEL on the test set; several models (or MODEL as a\n"
                  "comma-separated list, or a NAME.ensemble list file) are evaluated as one\n"
                  "ensemble (mean probabilities). NN_ISA=generic|avx2|avx512 caps the\n"
                  "kernel path (default: the best this CPU runs).",
                  opts, nopts);
        free(models);
        return 0;
    case CLI_VERSION:
        printf("mnist-eval %s\n", VERSION);
        free(models);
        return 0;
    case CLI_ERROR:
        fprintf(stderr, "mnist-eval: %s\n", err);
        free(models);
        return 2;
    case CLI_RUN: break;
    }
    if (nn_gemm_init_env(err, sizeof err)) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        free(models);
        return 2;
    }
    if (list_kernels) {
        char list[128];
        nn_gemm_paths_list(list, sizeof list);
        printf("%s\n", list);
        free(models);
        return 0;
    }
    nn_affine tf;
    nn_affine_identity(&tf);
    int use_tf = rotate_set || scale_set;
    tf.rot_deg = (float)rotate;
    tf.scale = (float)scale;
    if (shift) {
        float d[2];
        if (cli_floats(shift, d, 2) || !(fabsf(d[0]) <= 28 && fabsf(d[1]) <= 28)) {
            fprintf(stderr, "mnist-eval: --shift wants DX,DY, pixels from -28 to 28 each\n");
            free(models);
            return 2;
        }
        tf.dx = d[0];
        tf.dy = d[1];
        use_tf = 1;
    }
    char paths[4096] = "";
    size_t used = 0;
    for (int i = 0; i < nmodels; i++) {
        int k = snprintf(paths + used, sizeof paths - used, "%s%s", used ? "," : "", models[i]);
        if (k < 0 || (size_t)k >= sizeof paths - used) {
            fprintf(stderr, "mnist-eval: too many model paths\n");
            free(models);
            return 2;
        }
        used += (size_t)k;
    }
    free(models);
    if (!used) {
        fprintf(stderr, "mnist-eval: no MODEL given (see --help)\n");
        return 2;
    }
    nn_ensemble *e = nn_ensemble_load(paths, err, sizeof err);
    if (!e) {
        fprintf(stderr, "mnist-eval: %s\n", err);
        return 1;
    }
    /* From here every exit goes through done: nothing leaks on an error
     * (the sanitizer build runs these paths). */
    int rc = 1, k = nn_ensemble_classes(e);
    float *probs = NULL;
    int *conf = NULL;
    if (!data)
        data = !strcmp(nn_ensemble_meta(e)->dataset, "fashion-mnist")
                   ? "/usr/share/datasets/fashion-mnist"
                   : "data/mnist";
    nn_dataset *test = nn_dataset_load_dir(data, 1, k, err, sizeof err);
    if (!test) {
        fprintf(stderr, "mnist-eval: %s (run `make data`)\n", err);
        goto done;
    }
    const nn_net *n0 = nn_ensemble_member(e, 0);
    if (test->rows != n0->in_h || test->cols != n0->in_w || n0->in_c != 1) {
        fprintf(stderr, "mnist-eval: the model wants %dx%dx%d inputs, the data is %dx%d\n",
                n0->in_c, n0->in_h, n0->in_w, test->rows, test->cols);
        goto done;
    }
    int n = test->n;
    if (limit > 0 && limit < n) n = limit;
    probs = malloc(sizeof(float) * (size_t)n * k);
    conf = malloc(sizeof(int) * k * k);
    if (!probs || !conf) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    double t0 = now_s();
    if (nn_eval_probs(e, test->images, n, use_tf ? &tf : NULL, threads, probs)) {
        fprintf(stderr, "mnist-eval: out of memory\n");
        goto done;
    }
    double secs = now_s() - t0;
    double acc = nn_accuracy(probs, test->labels, n, k, conf);
    int nt = threads > 0 ? threads : nn_cpu_count();
    const nn_meta *m = nn_ensemble_meta(e);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON *models = cJSON_AddArrayToObject(o, "models");
        for (int i = 0; i < nn_ensemble_size(e); i++)
            cJSON_AddItemToArray(models, cJSON_CreateString(nn_ensemble_path(e, i)));
        cJSON_AddStringToObject(o, "dataset", m->dataset);
        cJSON_AddNumberToObject(o, "accuracy", acc);
        cJSON_AddNumberToObject(o, "n", n);
        cJSON_AddNumberToObject(o, "errors", (int)((1.0 - acc) * n + 0.5));
        cJSON_AddNumberToObject(o, "borderline", nn_borderline(probs, n, k, NN_BORDERLINE_MARGIN));
        cJSON_AddStringToObject(o, "kernels", nn_gemm_path_name(NN_GEMM_PATH_AUTO));
        cJSON *pc = cJSON_AddArrayToObject(o, "per_class");
        cJSON *cf = cJSON_AddArrayToObject(o, "confusion");
        for (int i = 0; i < k; i++) {
            int tot = 0;
            cJSON *row = cJSON_CreateArray();
            for (int j = 0; j < k; j++) {
                tot += conf[i * k + j];
                cJSON_AddItemToArray(row, cJSON_CreateNumber(conf[i * k + j]));
            }
            cJSON_AddItemToArray(cf, row);
            cJSON_AddItemToArray(pc, cJSON_CreateNumber(tot ? (double)conf[i * k + i] / tot : 0.0));
        }
        cJSON *lab = cJSON_AddArrayToObject(o, "labels");
        for (int i = 0; i < k; i++) cJSON_AddItemToArray(lab, cJSON_CreateString(m->labels[i]));
        cJSON_AddNumberToObject(o, "params", (double)nn_ensemble_params(e));
        cJSON_AddNumberToObject(o, "images_per_second", n / secs);
        cJSON_AddNumberToObject(o, "threads", nt);
        if (use_tf) {
            cJSON *t = cJSON_AddObjectToObject(o, "transform");
            cJSON_AddNumberToObject(t, "dx", tf.dx);
            cJSON_AddNumberToObject(t, "dy", tf.dy);
            cJSON_AddNumberToObject(t, "rotate", tf.rot_deg);
            cJSON_AddNumberToObject(t, "scale", tf.scale);
        }
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s) {
            fprintf(stderr, "mnist-eval: out of memory\n");
            goto done;
        }
        printf("%s\n", s);
        free(s);
    } else {
        printf("model: %s (%d member%s, %zu parameters)\n", paths, nn_ensemble_size(e),
               nn_ensemble_size(e) > 1 ? "s" : "", nn_ensemble_params(e));
        if (use_tf)
            printf("transform: shift %g,%g  rotate %g  scale %g\n", tf.dx, tf.dy, tf.rot_deg,
                   tf.scale);
        printf("test accuracy: %.4f (%d/%d, %d errors)\n\n", acc, (int)(acc * n + 0.5), n,
               n - (int)(acc * n + 0.5));
        printf("%-12s %8s\n", "class", "accuracy");
        for (int i = 0; i < k; i++) {
            int tot = 0;
            for (int j = 0; j < k; j++) tot += conf[i * k + j];
            printf("%-12s %8.4f\n", m->labels[i], tot ? (double)conf[i * k + i] / tot : 0.0);
        }
        printf("\nconfusion (rows: true, columns: predicted)\n     ");
        for (int j = 0; j < k; j++) printf("%6d", j);
        printf("\n");
        for (int i = 0; i < k; i++) {
            printf("%4d ", i);
            for (int j = 0; j < k; j++) printf("%6d", conf[i * k + j]);
            printf("\n");
        }
        printf("\n%.0f images/s (%d threads, batch 128, %s kernels)\n", n / secs, nt,
               nn_gemm_path_name(NN_GEMM_PATH_AUTO));
    }
    rc = 0;
done:
    free(probs);
    free(conf);
    nn_dataset_free(test);
    nn_ensemble_free(e);
    return rc;
}
