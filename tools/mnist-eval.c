/* mnist-eval - test-set accuracy of a model (or an ensemble: several model
 * files averaged), per-class accuracy, confusion matrix and throughput. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/ensemble.h"
#include "nn/eval.h"
#include "nn/idx.h"
#include "nn/pool.h"

#define VERSION "1.0.0"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mnist-eval [options] MODEL [MODEL...]\n"
        "Evaluates MODEL on the test set; several models (or MODEL as a\n"
        "comma-separated list, or a NAME.ensemble list file) are evaluated as one\n"
        "ensemble (mean probabilities).\n"
        "  --json            print one JSON object\n"
        "  --data DIR        IDX files, .gz accepted (default: by the model's dataset,\n"
        "                    data/mnist or /usr/share/datasets/fashion-mnist)\n"
        "  --threads N       threads (default: all CPUs)\n"
        "  --limit N         first N test images only\n"
        "  --shift DX,DY     shift every test image by DX,DY pixels first\n"
        "  --rotate DEG      rotate every test image (counter-clockwise)\n"
        "  --scale S         scale every test image about its centre\n"
        "  --help, --version\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int json = 0, threads = 0, limit = 0;
    const char *data = NULL;
    nn_affine tf;
    nn_affine_identity(&tf);
    int use_tf = 0;
    char paths[4096] = "";
    size_t used = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--version")) { printf("mnist-eval %s\n", VERSION); return 0; }
        if (!strcmp(a, "--json")) { json = 1; continue; }
        int takes = !strcmp(a, "--data") || !strcmp(a, "--threads") || !strcmp(a, "--limit") ||
                    !strcmp(a, "--shift") || !strcmp(a, "--rotate") || !strcmp(a, "--scale");
        if (takes && !v) { fprintf(stderr, "mnist-eval: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--data")) data = argv[++i];
        else if (!strcmp(a, "--threads")) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--limit")) limit = atoi(argv[++i]);
        else if (!strcmp(a, "--shift")) {
            if (sscanf(argv[++i], "%f,%f", &tf.dx, &tf.dy) != 2) { fprintf(stderr, "mnist-eval: --shift wants DX,DY\n"); return 2; }
            use_tf = 1;
        } else if (!strcmp(a, "--rotate")) { tf.rot_deg = (float)atof(argv[++i]); use_tf = 1; }
        else if (!strcmp(a, "--scale")) {
            tf.scale = (float)atof(argv[++i]);
            if (!(tf.scale > 0.05f && tf.scale < 20.0f)) { fprintf(stderr, "mnist-eval: --scale must be in (0.05, 20)\n"); return 2; }
            use_tf = 1;
        } else if (a[0] == '-' && a[1]) { fprintf(stderr, "mnist-eval: unknown option %s (see --help)\n", a); return 2; }
        else {
            int k = snprintf(paths + used, sizeof paths - used, "%s%s", used ? "," : "", a);
            if (k < 0 || (size_t)k >= sizeof paths - used) { fprintf(stderr, "mnist-eval: too many model paths\n"); return 2; }
            used += (size_t)k;
        }
    }
    if (!used) { usage(stderr); return 2; }
    char err[512];
    nn_ensemble *e = nn_ensemble_load(paths, err, sizeof err);
    if (!e) { fprintf(stderr, "mnist-eval: %s\n", err); return 1; }
    /* From here every exit goes through done: nothing leaks on an error
     * (the sanitizer build runs these paths). */
    int rc = 1, k = nn_ensemble_classes(e);
    float *probs = NULL;
    int *conf = NULL;
    if (!data)
        data = !strcmp(nn_ensemble_meta(e)->dataset, "fashion-mnist") ? "/usr/share/datasets/fashion-mnist"
                                                                      : "data/mnist";
    nn_dataset *test = nn_dataset_load_dir(data, 1, k, err, sizeof err);
    if (!test) { fprintf(stderr, "mnist-eval: %s (run `make data`)\n", err); goto done; }
    const nn_net *n0 = e->nets[0];
    if (test->rows != n0->in_h || test->cols != n0->in_w || n0->in_c != 1) {
        fprintf(stderr, "mnist-eval: the model wants %dx%dx%d inputs, the data is %dx%d\n", n0->in_c, n0->in_h,
                n0->in_w, test->rows, test->cols);
        goto done;
    }
    int n = test->n;
    if (limit > 0 && limit < n) n = limit;
    probs = malloc(sizeof(float) * (size_t)n * k);
    conf = malloc(sizeof(int) * k * k);
    if (!probs || !conf) { fprintf(stderr, "mnist-eval: out of memory\n"); goto done; }
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
        for (int i = 0; i < e->n; i++) cJSON_AddItemToArray(models, cJSON_CreateString(e->paths[i]));
        cJSON_AddStringToObject(o, "dataset", m->dataset);
        cJSON_AddNumberToObject(o, "accuracy", acc);
        cJSON_AddNumberToObject(o, "n", n);
        cJSON_AddNumberToObject(o, "errors", (int)((1.0 - acc) * n + 0.5));
        cJSON *pc = cJSON_AddArrayToObject(o, "per_class");
        cJSON *cf = cJSON_AddArrayToObject(o, "confusion");
        for (int i = 0; i < k; i++) {
            int tot = 0;
            cJSON *row = cJSON_CreateArray();
            for (int j = 0; j < k; j++) { tot += conf[i * k + j]; cJSON_AddItemToArray(row, cJSON_CreateNumber(conf[i * k + j])); }
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
        if (!s) { fprintf(stderr, "mnist-eval: out of memory\n"); goto done; }
        printf("%s\n", s);
        free(s);
    } else {
        printf("model: %s (%d member%s, %zu parameters)\n", paths, e->n, e->n > 1 ? "s" : "",
               nn_ensemble_params(e));
        if (use_tf) printf("transform: shift %g,%g  rotate %g  scale %g\n", tf.dx, tf.dy, tf.rot_deg, tf.scale);
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
        printf("\n%.0f images/s (%d threads, batch 128)\n", n / secs, nt);
    }
    rc = 0;
done:
    free(probs);
    free(conf);
    nn_dataset_free(test);
    nn_ensemble_free(e);
    return rc;
}
